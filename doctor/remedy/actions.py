"""The actions a remediation step is made of.

Each action is data with two faces: ``sh(shell)``, the POSIX sh lines the report prints and
``aidoctor fix`` writes, and ``apply(target)``, the same change made in Python through a
:class:`~ai_doctor.remedy.target.Target` (a tree, contained in its root, or the live host).
``phase`` says what kind of change it is:

- ``now``: the running kernel (sysctl -w, a sysfs write); lost at reboot, never applied to a tree;
- ``file``: persistent files (a drop-in, a commented line, the boot loader's configuration);
- ``run``: a program that changes the system (a DKMS build, a package, a cgroup property), run
  on the live host only;
- ``show``: a command that only shows something; never run by ``--apply``;
- ``reboot`` and ``manual`` (an editor, by hand): said, never done.
"""

from __future__ import annotations

import functools
import re

from ai_doctor.record import Record
from ai_doctor.shell import join, quote

NOW, FILE, RUN, SHOW, REBOOT, MANUAL = "now", "file", "run", "show", "reboot", "manual"


# The chroot of an image whose folder no one recorded (a snapshot archive that does not say
# where it was taken): commands name it by the shell variable IMAGE, which the reader sets.
IMAGE_UNNAMED = "$IMAGE"
# As a word of a command: a command pasted with IMAGE unset stops, rather than naming this
# machine's own /etc/default/grub.
_IMAGE_WORD = '"${IMAGE:?}"'


class Shell(Record):
    """How commands are written for one target: ``sudo`` in front of what needs root (the
    reader is not root), ``chroot`` for an image changed from outside (its path, or
    IMAGE_UNNAMED)."""

    __slots__ = ("sudo", "chroot")
    _defaults = {"sudo": False, "chroot": None}

    def root(self, command: str) -> str:
        if self.chroot:
            command = "chroot %s %s" % (self.image(), command)
        return "sudo " + command if self.sudo else command

    def image(self) -> str:
        """The image's folder as a word of a command."""
        return _IMAGE_WORD if self.chroot == IMAGE_UNNAMED else quote(self.chroot)

    def outside(self, path: str) -> str:
        """A path of the target as a command run outside a chroot names it."""
        if self.chroot == IMAGE_UNNAMED:
            return _IMAGE_WORD + quote(path)
        return quote(self.chroot.rstrip("/") + path if self.chroot else path)


PLAIN = Shell()


class NotApplicable(Exception):
    """An action that cannot be applied where it was asked to be (the reason in words)."""


class Action(Record):
    """One change (or one look); see the module docstring for ``phase``."""

    __slots__ = ()
    kind = "action"
    phase = FILE
    needs_root = True
    # Changes a boot-time setting that only a reboot brings into force.
    reboot = False

    def sh(self, shell):
        raise NotImplementedError

    def apply(self, target):
        raise NotApplicable("%s actions are not applied by aidoctor" % self.kind)

    @property
    def writes(self):
        """The kernel files (/proc/sys, /sys) this action writes now."""
        return ()

    def as_dict(self) -> dict:
        fields = {"kind": self.kind, "phase": self.phase}
        for name in self.__slots__:
            value = getattr(self, name)
            fields[name] = list(value) if isinstance(value, tuple) else value
        return fields


def _key_path(key: str) -> str:
    from ai_doctor.facts.sysctl import key_path

    return key_path(key)


class SetSysctl(Action):
    """``sysctl -w key=value …``: the running kernel, now."""

    __slots__ = ("settings",)
    kind, phase = "sysctl", NOW

    def sh(self, shell):
        return (shell.root("sysctl -w %s" % " ".join(quote("%s=%s" % item) for item in self.settings)),)

    @property
    def writes(self):
        return tuple(_key_path(key) for key, _ in self.settings)

    def apply(self, target):
        return [target.write_kernel(_key_path(key), value) for key, value in self.settings]


class WriteKernel(Action):
    """``echo VALUE | tee FILE…``: a sysfs, /proc/sys or cgroup file, now. ``glob`` marks paths
    aidoctor wrote as a pattern for the shell (``policy*/scaling_governor``)."""

    __slots__ = ("paths", "value", "glob")
    _defaults = {"glob": False}
    kind, phase = "write-kernel", NOW

    def sh(self, shell):
        paths = " ".join(self.paths if self.glob else (quote(p) for p in self.paths))
        return ("echo %s | %s" % (quote(self.value), shell.root("tee %s >/dev/null" % paths)),)

    @property
    def writes(self):
        return tuple(self.paths)

    def apply(self, target):
        return [target.write_kernel(path, self.value, glob=self.glob) for path in self.paths]


class WriteFile(Action):
    """A file written whole (re-running leaves one copy): its lines, and whether its folder
    may have to be made first."""

    __slots__ = ("path", "lines", "parents")
    _defaults = {"parents": False}
    kind = "write-file"

    def sh(self, shell):
        lines = []
        if self.parents:
            lines.append(shell.root("mkdir -p %s" % quote(self.path.rsplit("/", 1)[0] or "/")))
        words = " ".join(quote(line) for line in self.lines)
        lines.append("printf '%%s\\n' %s | %s" % (words, shell.root("tee %s >/dev/null" % quote(self.path))))
        return tuple(lines)

    def apply(self, target):
        return [target.write(self.path, "".join(line + "\n" for line in self.lines), parents=self.parents)]


class MakeFolder(Action):
    __slots__ = ("path",)
    kind = "make-folder"

    def sh(self, shell):
        return (shell.root("mkdir -p %s" % quote(self.path)),)

    def apply(self, target):
        return [target.make_folder(self.path)]


class RemoveFile(Action):
    __slots__ = ("path",)
    kind = "remove-file"

    def sh(self, shell):
        return (shell.root("rm -f %s" % quote(self.path)),)

    def apply(self, target):
        return [target.remove(self.path)]


_BRE_SPECIAL = frozenset("\\.*[]^$")
# Delimiters for an s command, none special in a basic regular expression; "/" last, escaped
# where the text holds one of each.
_DELIMITERS = "|@%,:!/"


def bre(text: str, delimiter: str = "/", quotes: bool = False) -> str:
    """``text`` as a GNU sed basic regular expression matching exactly it, between
    ``delimiter``s; control characters as ``\\xHH``, so the script stays printable, and with
    ``quotes`` the shell's quote characters too (a script that is shell text, not a word)."""
    out = []
    for char in text:
        if char in _BRE_SPECIAL or char == delimiter:
            out.append("\\" + char)
        elif quotes and char in "'\"":
            out.append("\\x%02x" % ord(char))
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif not char.isprintable():
            out.append("".join("\\x%02x" % byte for byte in char.encode("utf-8", "surrogateescape")))
        else:
            out.append(char)
    return "".join(out)


# A line is recognised by all of its text, unless it holds a byte that is not UTF-8 (read as
# U+FFFD, which the file does not hold) or is very long (a sed argument has a size limit): then
# by the text before that, up to this many characters; or, where the line starts with such a
# byte, by the longest text between them that it holds, and by not being a comment yet.
_GUARD_CAP = 256
# Lines commented out with ``-e`` arguments, far below the kernel's limits on them; more are
# commented out by scripts sed reads from here-documents (_many_lines).
_SED_CHUNK = 100
# Commands per innermost block of such a script, and lines kept by a regular expression of
# their own per sed pass (each costs sed tens of kilobytes).
_SED_LEAF = 16
_SED_GUARDED = 500
WHOLE, PREFIX, CONTAINS = "whole", "prefix", "contains"


def _guard(text: str):
    """(the text a line is recognised by, and how: WHOLE, PREFIX or CONTAINS)."""
    cut = text.find("\ufffd")
    if cut < 0 and len(text) <= _GUARD_CAP:
        return text, WHOLE
    if cut != 0:
        return text[: min(_GUARD_CAP, cut if cut >= 0 else len(text))], PREFIX
    return max(text.split("\ufffd"), key=len)[:_GUARD_CAP], CONTAINS


def comment_script(number: int, text: str, quotes: bool = False) -> str:
    """A sed command turning line ``number`` into a comment only while it still reads
    ``text``: a second run, or a file that changed since, leaves it alone. ``quotes``: see bre."""
    known, how = _guard(text)
    delimiter = next((d for d in _DELIMITERS if d not in known), "/")
    if how == CONTAINS:
        address = "\\%s%s%s" % (delimiter, bre(known, delimiter, quotes), delimiter) if known else ""
        return "%d{%s%s/^# /!s/^/# /;%s}" % (number, address, "{" if known else "", "}" if known else "")
    return "%ds%s^%s%s%s# &%s" % (number, delimiter, bre(known, delimiter, quotes), "$" if how == WHOLE else "", delimiter, delimiter)


def _sed_arguments(lines):
    """``-e SCRIPT`` arguments commenting out ``lines`` (at most _SED_CHUNK of them)."""
    return " ".join("-e %s" % quote(comment_script(n, text)) for n, text in dict.fromkeys((n, text) for n, text in lines))


def _tree(leaves):
    """Sed script lines for ``leaves`` [(first line, last line, command)], sorted, in nested
    blocks of line ranges that halve at each level: sed tries every command of a script on
    every line, so a flat list of 100,000 would make 10^10 tries; this way a line passes about
    2·log2(N) range addresses and _SED_LEAF commands."""
    out = []

    def block(first, end):
        if end - first <= _SED_LEAF:
            out.extend(command for _first, _last, command in leaves[first:end])
            return
        middle = (first + end) // 2
        for part_first, part_end in ((first, middle), (middle, end)):
            out.append("%d,%d{" % (leaves[part_first][0], leaves[part_end - 1][1]))
            block(part_first, part_end)  # depth log2(N / _SED_LEAF)
            out.append("}")

    block(0, len(leaves))
    return out


def _runs(numbers, label: str):
    """Leaves branching to ``label`` on ``numbers`` (sorted, unique), a run of consecutive
    line numbers as one range."""
    runs = []
    for number in numbers:
        if runs and runs[-1][1] == number - 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return [(first, last, ("%d,%d" % (first, last) if last > first else "%d" % first) + "b" + label) for first, last in runs]


def _many_lines(lines):
    """_scripts(lines), remembered for the last few: a report renders a step's commands more
    than once."""
    try:
        return _scripts(tuple(lines))
    except TypeError:  # lines as lists (unhashable)
        return _scripts.__wrapped__(lines)


@functools.lru_cache(maxsize=8)
def _scripts(lines):
    """(check script, the SHA-256 sums its output may have, edit scripts) commenting out more
    lines than -e arguments should carry, linear in them in time and memory.

    sed compiles a regular expression per command, at tens of kilobytes each, so a line whose
    text is known is not matched by one: a branch on its number (a run of numbers, on their
    range) leads to one shared command. Their text is checked first, all lines at once: the
    check script prints them (a leading ``# `` taken off: a line already commented out reads
    as it did) and the SHA-256 of that must be the texts expected, so a file that changed since
    is not edited, as --apply refuses it. A line holding a byte that is not UTF-8 (U+FFFD here),
    a text that is a comment already, or a second text for one line keeps comment_script's own
    guard: those come after, _SED_GUARDED to a pass, so sed's memory stays bounded."""
    import hashlib

    branched, texts, guarded = [], [], []
    for number, text in sorted(dict.fromkeys((n, t) for n, t in lines), key=lambda pair: pair[0]):
        if "\ufffd" in text or text.startswith("# ") or (branched and branched[-1] == number):
            guarded.append((number, number, comment_script(number, text, quotes=True)))
        else:
            branched.append(number)
            texts.append(text)
    expected = "\n".join(texts).encode("utf-8", "surrogateescape")
    # sed leaves a last line without its newline as it was.
    sums = tuple(hashlib.sha256(data).hexdigest() for data in (expected + b"\n", expected)) if texts else ()
    check = _tree(_runs(branched, "v")) + ["b", ":v", "s/^# //", "p"] if texts else None
    edits = [_tree(_runs(branched, "c")) + ["b", ":c", "/^# /!s/^/# /"]] if texts else []
    edits += [_tree(guarded[i : i + _SED_GUARDED]) for i in range(0, len(guarded), _SED_GUARDED)]
    return check, sums, edits


def _checked_edit(check: str, edit: str, again: str, lines, path: str) -> str:
    """One command commenting out ``lines``: ``check`` (reading its script with -f -) prints the
    lines known by their text, and where they read as expected ``edit`` comments lines out,
    ``again`` (both -f - too) the rest; else a word on stderr."""
    check_script, sums, edits = _many_lines(lines)
    passes = "\n".join(
        "%s <<'AIDOCTOR_SED'\n%s\nAIDOCTOR_SED" % (edit if number == 0 else again, "\n".join(script)) for number, script in enumerate(edits)
    )
    if check_script is None:
        return passes
    refused = quote("aidoctor: %s no longer reads as it did when checked: not edited" % path)
    return "case \"$(%s <<'AIDOCTOR_CHECK' | sha256sum\n%s\nAIDOCTOR_CHECK\n)\" in\n%s)\n%s\n;;\n*) echo %s >&2 ;;\nesac" % (
        check,
        "\n".join(check_script),
        " | ".join('"%s  -"' % value for value in sums),
        passes,
        refused,
    )


def _reads(row: str, text: str) -> bool:
    known, how = _guard(text)
    if how == WHOLE:
        return row == text
    if how == PREFIX:
        return row.startswith(known)
    return known in row and not row.startswith("# ")


def comment_out(text: str, lines, path: str) -> str:
    """``text`` with ``lines`` [(number, expected text)] commented out as the sed script does;
    a line that reads otherwise (already commented, or changed) raises NotApplicable, except
    one already commented out by us."""
    rows = text.split("\n")
    for number, expected in dict.fromkeys((n, t) for n, t in lines):  # a line named twice is commented out once
        index = number - 1
        if index < len(rows) and _reads(rows[index], expected):
            rows[index] = "# " + rows[index]
        elif index < len(rows) and rows[index].startswith("# ") and _reads(rows[index][2:], expected):
            continue
        else:
            raise NotApplicable("line %d of %s no longer reads %r" % (number, path, expected[:80]))
    return "\n".join(rows)


def _present(target, path: str) -> str:
    """The text of ``path`` in ``target``; NotApplicable where it is gone."""
    text = target.read(path)
    if text is None:
        raise NotApplicable("%s is not there" % path)
    return text


class CommentLines(Action):
    """Lines of a file turned into comments, each only while it reads as expected. A link is
    kept and the file it points to edited (``--follow-symlinks``), as --apply does."""

    __slots__ = ("path", "lines")
    kind = "comment-lines"

    def sh(self, shell):
        path = quote(self.path)
        if len(self.lines) <= _SED_CHUNK:
            return (shell.root("sed -i --follow-symlinks %s %s" % (_sed_arguments(self.lines), path)),)
        check = shell.root("sed -n -f - %s" % path)
        edit = shell.root("sed -i --follow-symlinks -f - %s" % path)
        return (_checked_edit(check, edit, edit, self.lines, self.path),)

    def apply(self, target):
        text = _present(target, self.path)
        return [target.write(self.path, comment_out(text, self.lines, self.path))]


class OverrideCopy(Action):
    """A package's file (in /usr/lib/sysctl.d …) hidden by a copy of the same name in /etc with
    ``lines`` commented out: the package's file itself is never edited. Where the copy is there
    already (another fix made it), the lines are commented out in it, so neither fix undoes the
    other."""

    __slots__ = ("source", "path", "lines")
    kind = "override-copy"

    def sh(self, shell):
        few = len(self.lines) <= _SED_CHUNK
        # A few lines as -e arguments; more from a here-document both branches read.
        script = _sed_arguments(self.lines) if few else "-f -"
        path = quote(self.path)
        copy = "%s | %s" % (shell.root("sed %s %s" % (script, quote(self.source))), shell.root("tee %s >/dev/null" % path))
        edit = shell.root("sed -i --follow-symlinks %s %s" % (script, path))
        # An image is asked from inside, where its own links resolve.
        there = shell.root("test -e %s" % path) if shell.chroot else "[ -e %s ]" % path
        command = "if %s; then %s; else %s; fi" % (there, edit, copy)
        if few:
            return (command,)
        reads = (shell.root("sed -n -f - %s" % word) for word in (path, quote(self.source)))
        check = "if %s; then %s; else %s; fi" % ((there,) + tuple(reads))
        again = shell.root("sed -i --follow-symlinks -f - %s" % path)  # the copy is there by then
        return (_checked_edit(check, command, again, self.lines, self.path),)

    def apply(self, target):
        existing = target.read(self.path)
        text = existing if existing is not None else target.read(self.source)
        if text is None:
            raise NotApplicable("%s is not there" % self.source)
        return [target.write(self.path, comment_out(text, self.lines, self.source))]


class AddInterpreter(Action):
    """``#!/bin/sh`` as the first line, unless the file has an interpreter line already."""

    __slots__ = ("path",)
    kind = "add-interpreter"

    def sh(self, shell):
        path = quote(self.path)
        return (
            "%s | grep -q '^#!' || %s"
            % (shell.root("head -n 1 %s" % path), shell.root("sed -i --follow-symlinks '1i #!/bin/sh' %s" % path)),
        )

    def apply(self, target):
        text = _present(target, self.path)
        if text.startswith("#!"):
            return []
        return [target.write(self.path, "#!/bin/sh\n" + text)]


class StripCarriageReturns(Action):
    """CRLF line ends (a file edited on Windows) made LF."""

    __slots__ = ("path",)
    kind = "strip-cr"

    def sh(self, shell):
        return (shell.root("sed -i --follow-symlinks 's/\\r$//' %s" % quote(self.path)),)

    def apply(self, target):
        text = _present(target, self.path)
        fixed = "\n".join(row[:-1] if row.endswith("\r") else row for row in text.split("\n"))
        return [target.write(self.path, fixed)] if fixed != text else []


class MoveLineToEnd(Action):
    """Line ``number`` of a file, while it reads ``text``, moved to its end: an rc.local's
    ``exit 0`` put after the lines appended below it. A second run changes nothing."""

    __slots__ = ("path", "number", "text")
    kind = "move-to-end"

    def sh(self, shell):
        delimiter = next((d for d in _DELIMITERS if d not in self.text), "/")
        pattern = "%s^%s$%s" % ("\\" + delimiter if delimiter != "/" else "/", bre(self.text, delimiter), delimiter)
        # Held and deleted where it is; at the last line, printed after it (nothing held: nothing).
        script = "-e %s -e %s" % (quote("%d{%s{h;d;};}" % (self.number, pattern)), quote("${p;x;/^$/d;}"))
        return (shell.root("sed -i --follow-symlinks %s %s" % (script, quote(self.path))),)

    def apply(self, target):
        text = _present(target, self.path)
        rows = text.split("\n")
        if rows and rows[-1] == "":
            rows.pop()
        index = self.number - 1
        if index < len(rows) and rows[index] == self.text:
            if index == len(rows) - 1:
                return []
            del rows[index]
            rows.append(self.text)
        elif not rows or rows[-1] != self.text:
            raise NotApplicable("line %d of %s no longer reads %r" % (self.number, self.path, self.text[:80]))
        else:
            return []
        # sed ends the moved line with a newline, the file's last line had one or not.
        return [target.write(self.path, "\n".join(rows) + "\n")]


class MakeExecutable(Action):
    __slots__ = ("path",)
    kind = "chmod"

    def sh(self, shell):
        return (shell.root("chmod +x %s" % quote(self.path)),)

    def apply(self, target):
        return [target.chmod_executable(self.path)]


# GRUB_CMDLINE_LINUX* assignment lines, and a parameter on them: what follows a quote, a blank,
# ``=`` or ``}`` up to the next of those. Blanks are ASCII space and tab, spelled the same for
# sed and Python ([[:space:]] would also match Unicode spaces in a UTF-8 locale).
_BLANK = " \t"
GRUB_LINE_ERE = "^[ \\t]*(export[ \\t]+)?GRUB_CMDLINE_LINUX(_DEFAULT)?="
_GRUB_LINE = r"^[ \t]*(export[ \t]+)?GRUB_CMDLINE_LINUX(_DEFAULT)?="
# A line with shell quoting or a command a cut could break (half of an escaped quote, a
# command substitution) is left alone; the fix then says to edit it by hand.
_UNCUTTABLE_ERE = "\\\\|`|\\$\\("


def cuttable_grub_line(row: str) -> bool:
    """Whether a cut leaves the shell syntax of the line whole: no backslash, backquote or
    ``$(`` on it (``${VAR:+$VAR }``, Ubuntu's append idiom, is cut as well)."""
    return "\\" not in row and "`" not in row and "$(" not in row


def grub_lines_needing_hand(text: str, names) -> bool:
    """Whether a GRUB_CMDLINE_LINUX* assignment of ``text`` (with the lines a trailing
    backslash continues it on) that ``grub_cut`` would leave alone, or that holds a byte that is
    not UTF-8 (read as U+FFFD), names one of ``names``."""
    wanted = tuple(name + "=" for name in names)
    rows = text.split("\n")
    # From the last row back: whether a row and the rows its trailing backslashes continue it
    # on name one of ``names`` or hold U+FFFD (one pass; a chain per row would be quadratic).
    named = odd = False
    for index in range(len(rows) - 1, -1, -1):
        row = rows[index]
        continued = row.endswith("\\") and index + 1 < len(rows)
        named = any(w in row for w in wanted) or (continued and named)
        odd = "\ufffd" in row or (continued and odd)
        if named and re.match(_GRUB_LINE, row) and (odd or not cuttable_grub_line(row)):
            return True
    return False


def _ere(text: str) -> str:
    return "".join("\\" + c if c in "\\.[]()*+?{}|^$/" else c for c in text)


def grub_cut_script(names) -> str:
    """Two sed commands on the GRUB_CMDLINE_LINUX* lines: a parameter goes with the blanks
    before it, or, right after a quote, ``=`` or ``}``, with the blanks after it, so what is cut
    and added again leaves the line as it was (byte for byte, run after run)."""
    pattern = "|".join(_ere(name) for name in names)
    value = "=[^\"' \\t}]*"
    return "/%s/ { /%s/! { s/[ \\t]+(%s)%s//g; s/([\"'=}])(%s)%s[ \\t]*/\\1/g; }; }" % (
        GRUB_LINE_ERE,
        _UNCUTTABLE_ERE,
        pattern,
        value,
        pattern,
        value,
    )


def grub_cut(text: str, names) -> str:
    """What ``sed -E grub_cut_script(names)`` makes of ``text``."""
    names = "|".join(re.escape(n) for n in names)
    value = "=[^\"'%s}]*" % _BLANK
    # Tried at the first blank of a run only: from each blank of a long run it would scan the
    # rest of the run again (quadratic). A match from inside a run is one from its start.
    after_blank = re.compile(r"(?<![%s])[%s]+(%s)%s" % (_BLANK, _BLANK, names, value))
    after_mark = re.compile(r"([\"'=}])(%s)%s[%s]*" % (names, value, _BLANK))

    def cut(row):
        return after_mark.sub(r"\1", after_blank.sub("", row))

    return "\n".join(cut(row) if re.match(_GRUB_LINE, row) and cuttable_grub_line(row) else row for row in text.split("\n"))


class CutGrubParams(Action):
    """Parameters cut out of the GRUB_CMDLINE_LINUX* lines of a GRUB defaults file."""

    __slots__ = ("path", "names")
    kind = "grub-cut"

    def sh(self, shell):
        return (shell.root("sed -i --follow-symlinks -E %s %s" % (quote(grub_cut_script(self.names)), quote(self.path))),)

    def apply(self, target):
        text = _present(target, self.path)
        cut = grub_cut(text, self.names)
        return [target.write(self.path, cut)] if cut != text else []


_APPEND_LINE = r'^GRUB_CMDLINE_LINUX="[^"$`\\]*"$'


def grub_append_script(add) -> str:
    return 's/^(GRUB_CMDLINE_LINUX="[^"$`\\\\]*)"$/\\1 %s"/' % _sed_replacement(" ".join(add))


def _sed_replacement(text: str) -> str:
    return "".join("\\" + c if c in "\\&/" else c for c in text)


def grub_append(text: str, add) -> str:
    rows = text.split("\n")
    for index, row in enumerate(rows):
        if re.match(_APPEND_LINE, row):
            rows[index] = row[:-1] + " " + " ".join(add) + '"'
    return "\n".join(rows)


def appendable_grub_line(text: str) -> bool:
    """Whether ``text`` has exactly one GRUB_CMDLINE_LINUX assignment, written as a plain
    double-quoted value that ``grub_append`` can extend."""
    assigned = [row for row in text.split("\n") if re.match(_GRUB_LINE, row) and "_DEFAULT=" not in row.split("#", 1)[0]]
    return len(assigned) == 1 and bool(re.match(_APPEND_LINE, assigned[0])) and "\ufffd" not in assigned[0]


class AppendGrubParams(Action):
    """Parameters added to the one plain ``GRUB_CMDLINE_LINUX="…"`` line of /etc/default/grub,
    where the distribution's grub-mkconfig sources no drop-in folder."""

    __slots__ = ("path", "params")
    kind = "grub-append"

    def sh(self, shell):
        return (shell.root("sed -i --follow-symlinks -E %s %s" % (quote(grub_append_script(self.params)), quote(self.path))),)

    def apply(self, target):
        text = target.read(self.path)
        if text is None or not appendable_grub_line(text):
            raise NotApplicable('%s has no single plain GRUB_CMDLINE_LINUX="…" line to extend' % self.path)
        return [target.write(self.path, grub_append(text, self.params))]


class BootEntries(Action):
    """The boot loader's entries rebuilt from its configuration: ``update-grub``,
    ``grub2-mkconfig``, ``grubby`` or ``kernel-install``. A tree gets what the tool would
    write: ``add``/``remove`` made on every entry's command line (BLS entries, grubenv's
    kernelopts, grub.cfg's ``linux`` lines). ``argv`` None: an image's grub.cfg, which
    grub-mkconfig must rebuild where the image's disk is attached (nothing to print; the
    step says so). ``default_only``: added words that grub-mkconfig puts on normal entries only
    (GRUB_CMDLINE_LINUX_DEFAULT), not on recovery ones."""

    __slots__ = ("argv", "add", "remove", "releases", "default_only")
    _defaults = {"releases": None, "default_only": ()}
    kind = "boot-entries"
    reboot = True

    def sh(self, shell):
        if self.argv is None:
            return ()
        if self.argv[0] == "kernel-install":
            # kernel-install names a release; None: the running one, asked when it runs.
            releases = [quote(r) for r in self.releases] if self.releases else ['"$(uname -r)"']
            return tuple(shell.root("kernel-install add %s /usr/lib/modules/%s/vmlinuz" % (r, r)) for r in releases)
        # grubby's options are written --name='value', as its manual shows them.
        return (shell.root(" ".join(_option(word) for word in self.argv)),)

    def apply(self, target):
        if target.live:
            if self.argv is None:
                raise NotApplicable("an image's grub.cfg is rebuilt where its disk is attached")
            if self.argv[0] == "kernel-install":
                import os

                releases = self.releases or (os.uname().release,)
                return [target.run(("kernel-install", "add", r, "/usr/lib/modules/%s/vmlinuz" % r)) for r in releases]
            return [target.run(self.argv)]
        from ai_doctor.remedy.bootedit import edit_entries

        bls = self.argv is not None and self.argv[0] in ("grubby", "kernel-install")
        return edit_entries(target, self.add, self.remove, bls=bls, default_only=self.default_only)


def _option(word: str) -> str:
    name, sep, value = word.partition("=")
    if sep and name.startswith("--") and name.replace("-", "").isalnum():
        return name + "=" + quote(value)
    return quote(word)


class SystemdUnit(Action):
    """``systemctl disable|mask [--now] UNIT``; in a tree, the links systemctl would remove
    or make."""

    __slots__ = ("verb", "unit", "now")
    _defaults = {"now": False}
    kind = "systemd-unit"

    def sh(self, shell):
        return (shell.root("systemctl %s%s %s" % (self.verb, " --now" if self.now else "", quote(self.unit))),)

    def apply(self, target):
        if target.live:
            return [target.run(("systemctl", self.verb) + (("--now",) if self.now else ()) + (self.unit,))]
        if self.verb == "disable":
            return target.disable_unit(self.unit)
        if self.verb == "mask":
            return [target.link("/etc/systemd/system/" + self.unit, "/dev/null")]
        raise NotApplicable("systemctl %s is not applied to a tree" % self.verb)


TUNED_ACTIVE = "/etc/tuned/active_profile"
# The blanks the profile list is split at, each made a newline (tr's escapes): ASCII, as in
# --apply.
_TR_BLANKS = "' \\t\\r\\v\\f' '\\n\\n\\n\\n\\n'"
TUNED_MODE = "/etc/tuned/profile_mode"


class TunedActivate(Action):
    """Profile ``name`` applied after the active ones (tuned-adm merges them in order, the last
    winning); in an image, written where tuned reads it at boot.

    ``base``: tuned was in automatic mode, where it loads the profile its recommender picks
    (daemon.py _get_startup_profile), not the names in active_profile: these are kept before
    ``name`` unless profile_mode says ``manual`` by the time this runs (another fix ran first)."""

    __slots__ = ("name", "running", "base")
    _defaults = {"base": None}
    kind = "tuned-activate"

    def sh(self, shell):
        name = quote(self.name)
        # No 2>/dev/null in an image: it seldom has a /dev, and a failed redirection would skip
        # the read and drop the active profiles.
        quiet = " 2>/dev/null" if self.running else ""
        others = "$(tr -s %s%s <%s | grep -vx %s)" % (_TR_BLANKS, quiet, TUNED_ACTIVE, name)
        pick = ""
        if self.base is not None:
            # tuned's own test: manual, or no mode and names, keeps the list; else its pick.
            base = " ".join(quote(p) for p in self.base)
            pick = '; case $(tr -d %s%s <%s) in manual) ;; "") [ -n "$p" ] || p=%s;; *) p=%s;; esac' % (
                quote(" \\t\\r\\v\\f\\n"),
                quiet,
                TUNED_MODE,
                quote(base),
                quote(base),
            )
        if self.running:
            # set -f: a `*` in the file stays a word, as --apply passes it.
            if not pick:
                return (shell.root("sh -c %s" % quote("set -f; tuned-adm profile %s %s" % (others, name))),)
            return (shell.root("sh -c %s" % quote("set -f; p=%s%s; tuned-adm profile $p %s" % (others, pick, name))),)
        # No daemon to ask. Unquoted $p splits the names on blanks; set -f keeps a `*` in the file
        # a word, and printf, unlike echo, gives a backslash no meaning.
        script = "set -f; p=%s%s; { for w in $p; do printf '%%s ' \"$w\"; done; printf '%%s\\n' %s; } >%s && echo manual >%s" % (
            others,
            pick,
            name,
            TUNED_ACTIVE,
            TUNED_MODE,
        )
        return (shell.root("sh -c %s" % quote(script)),)

    def apply(self, target):
        current = [word for word in re.split("[ \t\n\r\v\f]", target.read(TUNED_ACTIVE) or "") if word]
        others = [p for p in current if p != self.name]
        if self.base is not None:
            mode = "".join((target.read(TUNED_MODE) or "").split())
            if mode != "manual" and (mode != "" or not others):
                others = [p for p in self.base if p != self.name]
        profiles = others + [self.name]
        if target.live and self.running:
            return [target.run(("tuned-adm", "profile") + tuple(profiles))]
        return [target.write(TUNED_ACTIVE, " ".join(profiles) + "\n"), target.write(TUNED_MODE, "manual\n")]


class Run(Action):
    """A program run on the host itself (``phase`` ``run`` or ``now``); never run in a tree,
    whose programs are not this machine's to execute. ``proc``: the program needs /proc, as a
    DKMS build does (dkms reads /dev/fd, a link into it) and a package install that runs one:
    in an image, chroot runs it in a mount namespace of its own with /proc mounted there,
    which goes away with it."""

    __slots__ = ("argv", "phase", "needs_root", "proc")
    _defaults = {"phase": RUN, "needs_root": True, "proc": False}
    kind = "run"

    def sh(self, shell):
        command = join(self.argv)
        if self.proc and shell.chroot:
            return (_with_proc(shell, command),)
        return (shell.root(command) if self.needs_root else command,)

    def apply(self, target):
        if not target.live:
            raise NotApplicable("runs a program (%s) on the host itself" % self.argv[0])
        return [target.run(self.argv)]

    def as_dict(self):
        fields = {"kind": self.kind, "phase": self.phase, "argv": list(self.argv), "needs_root": self.needs_root}
        if self.proc:
            fields["proc"] = True
        return fields


class Swapfile(Action):
    """A swap file made and switched on now (lost at reboot: no /etc/fstab line)."""

    __slots__ = ("path", "gib", "no_cow")
    kind, phase = "swapfile", NOW

    def sh(self, shell):
        path = quote(self.path)
        # Each line is skipped once the file is in use as swap, so a second run changes nothing.
        guard = "swapon --show=NAME --noheadings | grep -qxF %s || " % path
        commands = []
        if self.no_cow:
            # btrfs swaps only to a file without copy-on-write, set while it is still empty.
            commands += ["truncate -s 0 %s" % path, "chattr +C %s" % path]
        commands += ["fallocate -l %dG %s" % (self.gib, path), "chmod 600 %s" % path, "mkswap %s" % path, "swapon %s" % path]
        return tuple(guard + shell.root(command) for command in commands)

    def apply(self, target):
        if not target.live:
            raise NotApplicable("swap is switched on in a running system")
        swaps = target.read("/proc/swaps") or ""
        if any(line.split()[:1] == [self.path] for line in swaps.splitlines()):
            return ["%s is already in use as swap" % self.path]
        steps = []
        if self.no_cow:
            steps += [("truncate", "-s", "0", self.path), ("chattr", "+C", self.path)]
        steps += [
            ("fallocate", "-l", "%dG" % self.gib, self.path),
            ("chmod", "600", self.path),
            ("mkswap", self.path),
            ("swapon", self.path),
        ]
        return [target.run(argv) for argv in steps]


def _with_proc(shell, command: str) -> str:
    """``command`` run in the image's chroot with /proc mounted in a mount namespace of its own,
    which goes away with it (dkms reads /dev/fd, a link into /proc)."""
    # The folder reaches the inner shell as its $1, never spliced into its script: no quoting
    # within quoting, and $IMAGE need not be exported.
    inner = 'mount -t proc proc "$1"/proc && exec chroot "$1" %s' % command
    command = "unshare --mount --fork sh -c %s sh %s" % (quote(inner), shell.image())
    return "sudo " + command if shell.sudo else command


class Show(Action):
    """A command that only shows something (it may hold a pipe); never run by --apply.
    ``proc``: as for Run, the program needs /proc (``dkms status``)."""

    __slots__ = ("text", "needs_root", "proc")
    _defaults = {"needs_root": False, "proc": False}
    kind, phase = "show", SHOW

    def sh(self, shell):
        if self.proc and shell.chroot:
            return (_with_proc(shell, self.text),)
        return (shell.root(self.text) if self.needs_root else self.text,)

    def as_dict(self):
        return {"kind": self.kind, "phase": self.phase, "command": self.text}


class Reboot(Action):
    __slots__ = ()
    kind, phase = "reboot", REBOOT
    reboot = True

    def sh(self, shell):
        return (shell.root("reboot"),)


class EditByHand(Action):
    """A file to edit by hand (what to change is in the step's words). ``resolved``: in an
    image, the path with the image's own links resolved inside it, since the editor runs
    outside the chroot, where an absolute link would lead to this machine's files."""

    __slots__ = ("path", "resolved")
    _defaults = {"resolved": None}
    kind, phase = "edit", MANUAL

    def sh(self, shell):
        path = shell.outside(self.resolved or self.path)
        return ("sudoedit %s" % path if shell.sudo else "${EDITOR:-vi} %s" % path,)
