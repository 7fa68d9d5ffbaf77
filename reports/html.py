"""The report as one self-contained HTML file, for a support ticket.

Everything is inline (CSS, a few lines of JS for the copy buttons): no request leaves the page,
and it opens offline from a file:// URL. The template is autoescaped, and host text also has
its control characters shown as escapes, so a hostname such as ``<script>alert(1)</script>``
reads as text. Without JS the page is whole. Printed, a finding keeps to one page and the
passed and skipped checks print only when opened.

Commands wrap, on screen and on paper, only at spaces and after ``/``, ``=`` and ``,``:
:func:`breakable` marks those places with ``<wbr>`` and keeps each word on one line (browsers
would also break after ``-``, or before ``(``); neither adds text, so the copy button copies the
command as printed. Evidence gets the same ``<wbr>``, and may also wrap after a hyphen.
"""

from __future__ import annotations

import os
import re

from ai_doctor.model import Status
from ai_doctor.overview import rows
from ai_doctor.reports.words import captured_words, command_line, found_words, step_flags, threshold_words, visible, visible_lines

_ORDER = ("critical", "high", "medium", "low", "info")

# Where text may wrap besides its spaces: after a run of separators that stands between
# two other characters (``/etc/`` and ``rc.local``, ``--args=`` and ``value``), never after a
# path's leading ``/`` nor before a space.
_BREAK = re.compile(r"(?<=[^\s/=,])[/=,]+(?=[^\s/=,])")
# Browsers also wrap where Unicode's line breaking (UAX #14) allows: after ``-`` and ``?``,
# before ``(`` or ``[`` that follows punctuation. A command's word with more than letters,
# digits, ``_`` and ``.`` is kept on one line, so ``--follow-symlinks`` never ends a line at ``--``.
_PLAIN = re.compile(r"[A-Za-z0-9_.]*")
_SPACES = re.compile(r"(\s+)")


def breakable(text, command: bool = False):
    """Host text (a path, a value, a command) as markup: made visible and escaped first, then
    ``<wbr>`` where it may wrap; its text is what visible() makes of it. A ``command`` keeps its
    line breaks (a here-document) and its words whole: a browser would break after ``-``, which
    is fine in a file name but not in ``--follow-symlinks``."""
    from markupsafe import Markup, escape

    text = visible_lines(text) if command else visible(text)
    cuts = [0] + [match.end() for match in _BREAK.finditer(text)] + [len(text)]
    pieces = []
    for start, end in zip(cuts, cuts[1:]):
        words = []
        for word in _SPACES.split(text[start:end]):
            if command and not word.isspace() and not _PLAIN.fullmatch(word):
                words.append(Markup('<span class="nb">%s</span>') % word)
            else:
                words.append(escape(word))
        pieces.append(Markup("").join(words))
    return Markup("<wbr>").join(pieces)


def environment():
    """The templates under reports/templates, autoescaped, with host text made visible; each
    template compiled once, then read from this user's cache (see below)."""
    import jinja2  # only for the HTML formats

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ai_doctor.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=_compiled(jinja2),
    )
    env.filters["visible"] = visible
    env.filters["visible_lines"] = visible_lines
    env.filters["breakable"] = breakable
    return env


# -- compiled templates, kept between runs ---------------------------------------------------------
#
# Compiling a template (jinja2 lexes, parses and generates Python, Python compiles that) costs
# more than rendering a report with it. The code is kept in the user's cache folder
# (``$XDG_CACHE_HOME/aidoctor/templates`` or ``~/.cache/aidoctor/templates``; never beside the
# package, which may be read-only or inside a zip), one file per template, named by a digest of
# everything the code depends on: the template's text, the options that change what it compiles
# to, and the aidoctor, jinja2 and Python versions. An entry is code this process will run, so it
# is taken only from a regular file (not through a link) that this user owns and nobody else can
# write, and only whole: its own digest and its payload's are checked first. Anything else, or any
# failure to read or write, only means compiling again. ``AIDOCTOR_NO_CACHE=1`` turns it off.

_MAGIC = b"aidoctor compiled template\n"
# An entry is some tens of KiB of code; a file far larger is not one.
_MAX_ENTRY = 4 << 20
# Environment options that change the code a template compiles to.
_OPTIONS = (
    "block_start_string", "block_end_string", "variable_start_string", "variable_end_string", "comment_start_string",
    "comment_end_string", "line_statement_prefix", "line_comment_prefix", "trim_blocks", "lstrip_blocks", "newline_sequence",
    "keep_trailing_newline", "autoescape", "optimized",
)  # fmt: skip


def _compiled(jinja2):
    """A :class:`jinja2.BytecodeCache` over the user's cache folder, or None where it is off."""
    if os.environ.get("AIDOCTOR_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "aidoctor", "templates")

    class Compiled(jinja2.BytecodeCache):
        def load_bytecode(self, bucket):
            bucket.code = _load(folder, _entry_name(jinja2, bucket))

        def dump_bytecode(self, bucket):
            _store(base, folder, _entry_name(jinja2, bucket), bucket.code)

    return Compiled()


def _entry_name(jinja2, bucket) -> str:
    """The entry's name: a digest of the template (its name, file and text: jinja2's key and
    checksum), the options it was compiled with and the versions that read and made the code."""
    import hashlib
    import sys

    from ai_doctor import __version__

    env = bucket.environment
    options = [repr(getattr(env, name, None)) for name in _OPTIONS] + list(env.extensions)
    words = [__version__, jinja2.__version__, sys.version, bucket.key, bucket.checksum] + options
    return hashlib.sha256("\0".join(words).encode("utf-8", "surrogatepass")).hexdigest()


def _load(folder: str, name: str):
    """The code kept under ``name``, or None: missing, not this user's alone, torn or corrupt."""
    import hashlib
    import marshal
    import stat
    import types

    try:
        # Never through a link, never blocking on a FIFO put in its place.
        fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            # Written by this user and writable by nobody else: any other could have put code there.
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022 or info.st_size > _MAX_ENTRY:
                return None
            data = handle.read(info.st_size + 1)  # more than that: changed while read, and its digest says so
    except OSError:
        return None
    # The header names the entry: another template's code under this name (a renamed file) is refused.
    header = _header(name)
    digest, payload = data[len(header) : len(header) + 65], data[len(header) + 65 :]
    if not data.startswith(header) or digest != hashlib.sha256(payload).hexdigest().encode() + b"\n":
        return None
    try:
        code = marshal.loads(payload)
    except Exception:  # EOFError, ValueError or TypeError, by Python version, on a bad stream
        return None
    return code if isinstance(code, types.CodeType) else None


def _store(base: str, folder: str, name: str, code) -> None:
    import hashlib
    import marshal
    import stat
    import tempfile

    try:
        # Only in a cache folder of this user's: never create or write in another's (root run
        # with a user's HOME), where the entries would be that user's to replace.
        if os.path.exists(base) and os.stat(base).st_uid != os.geteuid():
            return
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return
        payload = marshal.dumps(code)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=name + ".", suffix=".tmp")  # O_EXCL, mode 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_header(name) + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            os.replace(temporary, os.path.join(folder, name))
        except BaseException:
            os.unlink(temporary)
            raise
    except (OSError, ValueError):
        pass


def _header(name: str) -> bytes:
    return _MAGIC + name.encode("ascii") + b"\n"


def render(report) -> str:
    template = environment().get_template("report.html.j2")
    counts = report.counts()
    worst = next((severity for severity in _ORDER if counts[severity]), None)
    finished = None
    if report.finished:
        import datetime

        finished = datetime.datetime.fromtimestamp(report.finished, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return template.render(
        report=report,
        host=report.host,
        request=report.request,
        counts=[(severity, counts[severity]) for severity in _ORDER],
        worst=worst,
        found=found_words(report),
        threshold=threshold_words(report),
        failing=report.failing(),
        flags=step_flags,
        others=[check for check in report.checks if check.status in (Status.PASS, Status.SKIP)],
        failed=[check for check in report.checks if check.status is Status.ERROR],
        finished=finished,
        captured=(captured_words(report.host) or "")[len("snapshot ") :],
        argv=command_line(report),
        overview=rows(report.overview),
    )
