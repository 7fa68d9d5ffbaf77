"""The values of one-line shell assignments, as sh would leave them, without running anything.

/etc/default/grub and its drop-ins are shell files that grub-mkconfig sources. Their
GRUB_CMDLINE_* lines use quoting and expansions such as
``"${GRUB_CMDLINE_LINUX_DEFAULT:+$GRUB_CMDLINE_LINUX_DEFAULT }foo"``. This evaluates quotes,
backslashes, ``$NAME``, ``${NAME}`` and ``${NAME:+w}``, ``${NAME:-w}``, ``${NAME+w}``,
``${NAME-w}``; anything else (command substitution, other expansions, an unterminated quote)
is reported as not evaluable rather than guessed.
"""

from __future__ import annotations

import re

# Compiled on first use (re caches them): most runs evaluate no shell file. Anchored, and no
# two quantifiers that can take the same characters: linear on any line.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ASSIGNMENT = r"\s*(?:(?:export|readonly)\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)"
UNKNOWN = object()  # a variable whose value could not be evaluated
# The longest value evaluated: far more than any kernel command line (2 KiB on x86), and a bound
# on what ``A="$A$A"`` repeated can build (each line would double it).
MAX_VALUE = 16384


OPENERS = {"if": "fi", "case": "esac", "for": "done", "while": "done", "until": "done", "select": "done", "{": "}", "(": ")"}
_TOKENS = r"&&|\|\||;;|[;&|()]|[^\s;&|()]+"


def shell_commands(line: str):
    """The commands on one shell line as (what precedes them, their words): ``start``, ``;``,
    ``&&``, ``||``, ``|``, ``&``, or ``(`` and ``)`` themselves as commands of their own.
    Quoted text and comments are set aside; ``then``, ``do``, ``else`` and ``!`` pass through
    to the command after them."""
    code = _without_comment(_without_quotes(line))
    found = []
    separator = "start"
    words = []
    for token in re.findall(_TOKENS, code):
        if token in ("&&", "||", ";", ";;", "|", "&", "(", ")"):
            if words:
                found.append((separator, words))
                words = []
            if token in ("(", ")"):
                found.append((separator, [token]))
            separator = ";" if token in (";;", "(", ")") else token
            continue
        if not words and token in ("then", "do", "else", "!"):
            continue
        words.append(token)
    if words:
        found.append((separator, words))
    return found


def _without_quotes(line: str) -> str:
    """``line`` with each '…' and "…" (backslash escapes inside) made ``''``, scanning left to
    right as a regex substitution would, an unterminated quote left as it is; in one pass: a
    quote that finds no end tells where every later one of its kind fails too."""
    if "'" not in line and '"' not in line:
        return line
    out = []
    n = len(line)
    i = start = 0
    single_open = True  # whether a ' may still find a closing one
    double_fails_until = -1  # a " before this index (inside a failed scan) finds no end either
    while i < n:
        char = line[i]
        if char == "'" and single_open:
            end = line.find("'", i + 1)
            if end < 0:
                single_open = False
                i += 1
                continue
            out.append(line[start:i])
            out.append("''")
            i = start = end + 1
        elif char == '"' and i >= double_fails_until:
            j = i + 1
            while j < n:
                c = line[j]
                if c == '"':
                    break
                if c == "\\":
                    if j + 1 < n and line[j + 1] != "\n":
                        j += 2
                        continue
                    # ``\\.``: the escaped character may be anything but a newline.
                    j = j + 1 if j + 1 < n else n
                    break
                j += 1
            if j < n and line[j] == '"':
                out.append(line[start:i])
                out.append("''")
                i = start = j + 1
            else:
                # Every " up to where this scan failed was an escaped one: it fails alike.
                double_fails_until = j
                i += 1
        else:
            i += 1
    out.append(line[start:])
    return "".join(out)


def _without_comment(code: str) -> str:
    """``code`` less its comment: from the first ``#`` at its start or after a blank (with
    that blank) to its end; a ``#`` with a newline after it (other than a last one) starts
    none, as ``(^|\\s)#.*$`` would have it."""
    at = code.find("#")
    if at < 0:
        return code
    body = code[:-1] if code.endswith("\n") else code
    # A comment runs to the end of the text: none starts before its last newline.
    floor = body.rfind("\n") + 1
    at = code.find("#", max(at, floor))
    while 0 <= at < len(body):
        if at == 0:
            return code[len(body) :]
        if code[at - 1].isspace():
            return code[: at - 1] + code[len(body) :]
        at = code.find("#", at + 1)
    return code


def ends_script(separator: str, words) -> bool:
    """``exit`` (any status) or ``exec COMMAND`` run unconditionally in the script's own shell."""
    if separator not in ("start", ";"):
        return False  # after && or ||: conditional; in a pipeline or background: a subshell
    if words[0] == "exit":
        return True
    return words[0] == "exec" and any(not w.lstrip("0123456789").startswith(("<", ">")) for w in words[1:])


class NotEvaluable(ValueError):
    """A construct this evaluator does not run (it would need a shell)."""


def assignments(text: str):
    """(line number, name, right-hand side, why not) for each assignment of a shell file, as
    sh would make them in order. ``unset NAME`` gives a right-hand side of None. An assignment
    sh may or may not make (inside if, case, a loop or a function, after && or ||, one of
    several commands on a line) comes with the reason it cannot be evaluated."""
    stack = []
    lines = text.splitlines()
    skip_to = 0
    assignment, named_word = re.compile(_ASSIGNMENT, re.S), re.compile(_NAME + "=")
    for number, line in enumerate(lines, 1):
        if number <= skip_to:
            continue
        head = line.lstrip()
        if not head or head[0] == "#":
            continue  # blank, or a comment: no command (most of a long file, often)
        match = assignment.match(line)
        state = _quote_state(line, _CLOSED) if match else _CLOSED
        if state[0] is not None:
            # A quoted value that goes on over the next lines: sh reads it as one. Each line is
            # scanned once, from the state the lines before it left.
            end = number
            pieces = [line]
            while end < len(lines) and end - number < 64 and state[0] is not None:
                pieces.append(lines[end])
                state = _quote_state("\n" + lines[end], state)
                end += 1
            line = "\n".join(pieces)
            skip_to = end
        conditional = bool(stack)
        commands = shell_commands(line)
        for _separator, words in commands:
            if words[0] in OPENERS:
                stack.append(words[0])
            elif stack and words[0] == OPENERS[stack[-1]]:
                stack.pop()
        match = assignment.match(line)
        if match and len(commands) == 1 and not conditional:
            yield number, match.group(1), match.group(2), None
            continue
        for separator, words in commands:
            first = 1 if words[0] in ("export", "readonly") else 0
            named = [w.split("=", 1)[0] for w in words[first:] if named_word.match(w)]
            if words[0] == "unset" and not conditional and separator in ("start", ";") and len(commands) == 1:
                for name in words[1:]:
                    yield number, name, None, None
            for name in named if (conditional or len(commands) > 1 or not match) else ():
                yield number, name, None, "assigned inside if, case, a loop or a function, or beside other commands"


# (the quote open, or None; whether a backslash escapes the next character; whether a comment
# ended the scan) at the start of a text.
_CLOSED = (None, False, False)


def _quote_state(text: str, state):
    """The state after ``text`` read from ``state``: a quote is still open at its end when the
    first item is not None. A ``#`` outside quotes ends the reading (a comment)."""
    quote, escaped, stopped = state
    if stopped:
        return state
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        elif quote is None and char == "#":
            return None, False, True
    return quote, escaped, False


def evaluate(text: str, env: dict) -> str:
    """The value sh assigns from ``text`` (what follows ``NAME=``), with ``env`` holding the
    variables set so far (a value of UNKNOWN makes any use of it not evaluable)."""
    value, end = _word(text, 0, env, _PLAIN, 0)
    rest = text[end:].strip()
    if rest and not rest.startswith("#"):
        # ``A=b c`` runs command c with A set: not an assignment grub-mkconfig keeps.
        raise NotEvaluable("a command after the assignment")
    return value


# Where a word is read: bare (ends at a blank), inside "…" (ends at "), or as the word of a
# ${NAME:+word} (ends at the closing brace; quotes in it group, blanks are kept).
_PLAIN, _QUOTED, _BRACED, _BRACED_IN_QUOTES = range(4)
# A run of characters special in no mode (no quote, backslash, `$`, backquote, `}` or blank).
_ORDINARY = r"[^'\"\\`$}\s]+"
_MAX_NESTING = 32


def _word(text: str, i: int, env: dict, mode: int, depth: int):
    """Evaluate from ``i`` to the end of the word ``mode`` reads; returns (value, index after)."""
    if depth > _MAX_NESTING:
        raise NotEvaluable("expansions nested more than %d deep" % _MAX_NESTING)
    quoted = mode in (_QUOTED, _BRACED_IN_QUOTES)
    out = []
    size = 0
    n = len(text)
    ordinary = re.compile(_ORDINARY)
    while i < n:
        if size > MAX_VALUE:
            raise NotEvaluable("a value longer than %d characters" % MAX_VALUE)
        run = ordinary.match(text, i)
        if run:
            # Characters that mean nothing in any mode, taken at once.
            out.append(run.group(0))
            size += run.end() - i
            i = run.end()
            continue
        c = text[i]
        if mode in (_BRACED, _BRACED_IN_QUOTES) and c == "}":
            return "".join(out), i
        if mode == _QUOTED and c == '"':
            return "".join(out), i
        if mode == _PLAIN and c.isspace():
            return "".join(out), i
        if c == "'" and not quoted:
            end = text.find("'", i + 1)
            if end < 0:
                raise NotEvaluable("an unterminated ' quote")
            out.append(text[i + 1 : end])
            size += end - i
            i = end + 1
        elif c == '"' and mode != _QUOTED:
            value, end = _word(text, i + 1, env, _QUOTED, depth + 1)
            if end >= n:
                raise NotEvaluable('an unterminated " quote')
            out.append(value)
            size += len(value)
            i = end + 1
        elif c == "\\":
            if i + 1 >= n:
                raise NotEvaluable("a line continued with \\")
            nxt = text[i + 1]
            out.append(nxt if not quoted or nxt in '$`"\\}' else "\\" + nxt)
            size += 2
            i += 2
        elif c == "`":
            raise NotEvaluable("command substitution (`…`)")
        elif c == "$":
            value, i = _expansion(text, i, env, quoted, depth)
            out.append(value)
            size += len(value)
        else:
            out.append(c)
            size += 1
            i += 1
    if size > MAX_VALUE:
        raise NotEvaluable("a value longer than %d characters" % MAX_VALUE)
    if mode == _PLAIN:
        return "".join(out), i
    return "".join(out), n


def _expansion(text: str, i: int, env: dict, quoted: bool, depth: int):
    """``$NAME`` or ``${…}`` at ``i``; returns (value, index after)."""
    nxt = text[i + 1 : i + 2]
    if nxt == "(":
        raise NotEvaluable("command substitution ($(…))")
    if nxt != "{":
        match = re.compile(_NAME).match(text, i + 1)
        if not match:
            return "$", i + 1
        return _lookup(env, match.group(0)) or "", match.end()
    match = re.compile(_NAME).match(text, i + 2)
    if not match:
        raise NotEvaluable("an expansion ${%s" % text[i + 2 : i + 12])
    name, j = match.group(0), match.end()
    if text[j : j + 1] == "}":
        return _lookup(env, name) or "", j + 1
    op = text[j : j + 2] if text[j : j + 2] in (":+", ":-") else text[j : j + 1]
    if op not in (":+", ":-", "+", "-"):
        raise NotEvaluable("the expansion ${%s%s…}" % (name, text[j : j + 2]))
    word, end = _word(text, j + len(op), env, _BRACED_IN_QUOTES if quoted else _BRACED, depth + 1)
    if text[end : end + 1] != "}":
        raise NotEvaluable("an unterminated ${%s" % name)
    value = _lookup(env, name)
    if op == ":+":
        result = word if value else ""
    elif op == ":-":
        result = value if value else word
    elif op == "+":
        result = word if value is not None else ""
    else:
        result = value if value is not None else word
    return result, end + 1


def _lookup(env: dict, name: str):
    value = env.get(name)
    if value is UNKNOWN:
        raise NotEvaluable("$%s, which could not be evaluated" % name)
    return value
