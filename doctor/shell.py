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


def posix_words(line: str, name: str):
    """``line`` without bash's $'…' words, for a POSIX sh script: (assignments, line). Each
    such word becomes ``"$NAMEn"``, a variable that printf %b fills byte for byte (its octal
    escapes are POSIX; a trailing X keeps trailing newlines from the command substitution). Quotes
    are followed, so a ``$'`` inside other quotes is left as it is."""
    out, assignments = [], []
    index, size = 0, len(line)
    while index < size:
        char = line[index]
        if char == "'":
            end = line.index("'", index + 1)
            out.append(line[index : end + 1])
            index = end + 1
        elif char == '"':
            end = index + 1
            while line[end] != '"':
                end += 2 if line[end] == "\\" else 1
            out.append(line[index : end + 1])
            index = end + 1
        elif char == "\\":
            out.append(line[index : index + 2])
            index += 2
        elif line.startswith("$'", index):
            escaped, index = _printf_escapes(line, index + 2)
            variable = "%s%d" % (name, len(assignments) + 1)
            assignments.append("%s=$(printf '%%bX' '%s'); %s=${%s%%X}" % (variable, escaped, variable, variable))
            out.append('"$%s"' % variable)
        else:
            out.append(char)
            index += 1
    return assignments, "".join(out)


def _printf_escapes(line: str, index: int):
    """printf %b's argument for the $'…' word that starts at ``index`` (after ``$'``): bytes
    as octal escapes (``\\0ddd``, POSIX), and where the word ends."""
    pieces = []
    while line[index] != "'":
        if line.startswith("\\x", index):
            pieces.append("\\0%03o" % int(line[index + 2 : index + 4], 16))
            index += 4
            continue
        char = line[index + 1] if line[index] == "\\" else line[index]
        index += 2 if line[index] == "\\" else 1
        pieces.append("\\0%03o" % ord(char) if char in "\\'" else char)
    return "".join(pieces), index + 1
