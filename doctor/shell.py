"""Shell words for the commands aidoctor prints: what is shown is what runs."""

from __future__ import annotations


def quote(word: str) -> str:
    """``word`` as one shell word. Host text with unprintable characters (a newline or an
    escape in a file name) is written as bash's $'…' with \\xHH byte escapes, so the command
    shown is the command that runs, and a terminal shows it as text."""
    if not word.isprintable():
        return "$'%s'" % "".join(_ansi_c(c) for c in word)
    import shlex  # only when a fix is printed

    return shlex.quote(word)


def _ansi_c(char: str) -> str:
    if char in "\\'":
        return "\\" + char
    if char.isprintable():
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): the byte itself
        return "\\x%02x" % (code - 0xDC00)
    # Byte escapes, not \\u: bash turns \\u into UTF-8 only in a UTF-8 locale.
    return "".join("\\x%02x" % byte for byte in char.encode("utf-8"))


def join(words) -> str:
    """A command line from words, each quoted as needed."""
    return " ".join(quote(str(word)) for word in words)
