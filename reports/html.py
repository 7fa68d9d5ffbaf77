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

import re

from ai_doctor.model import Status
from ai_doctor.overview import rows
from ai_doctor.reports.words import captured_words, command_line, found_words, step_flags, threshold_words, visible, visible_lines

_ORDER = ("critical", "high", "medium", "low", "info")

# Where text may wrap besides its spaces: after a run of separators that stands between
# two other characters (``/etc/`` and ``rc.local``, ``--args=`` and ``value``), never after a
# path's leading ``/`` nor before a space.
_BREAK = r"(?<=[^\s/=,])[/=,]+(?=[^\s/=,])"
# Browsers also wrap where Unicode's line breaking (UAX #14) allows: after ``-`` and ``?``,
# before ``(`` or ``[`` that follows punctuation. A command's word with more than letters,
# digits, ``_`` and ``.`` is kept on one line, so ``--follow-symlinks`` never ends a line at ``--``.
_PLAIN = r"[A-Za-z0-9_.]*"
_SPACES = r"(\s+)"


def breakable(text, command: bool = False):
    """Host text (a path, a value, a command) as markup: made visible and escaped first, then
    ``<wbr>`` where it may wrap; its text is what visible() makes of it. A ``command`` keeps its
    line breaks (a here-document) and its words whole: a browser would break after ``-``, which
    is fine in a file name but not in ``--follow-symlinks``."""
    from markupsafe import Markup, escape

    text = visible_lines(text) if command else visible(text)
    cuts = [0] + [match.end() for match in re.finditer(_BREAK, text)] + [len(text)]
    pieces = []
    for start, end in zip(cuts, cuts[1:]):
        words = []
        for word in re.split(_SPACES, text[start:end]):
            if command and not word.isspace() and not re.fullmatch(_PLAIN, word):
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
# more than rendering a report with it. The code is kept in the user's cache (ai_doctor.cache:
# private entries, checked whole before use), one entry per template, named by a digest of
# everything the code depends on: the template's text, the options that change what it compiles
# to, and the aidoctor, jinja2 and Python versions. ``AIDOCTOR_NO_CACHE=1`` turns it off.

# Environment options that change the code a template compiles to.
_OPTIONS = (
    "block_start_string", "block_end_string", "variable_start_string", "variable_end_string", "comment_start_string",
    "comment_end_string", "line_statement_prefix", "line_comment_prefix", "trim_blocks", "lstrip_blocks", "newline_sequence",
    "keep_trailing_newline", "autoescape", "optimized",
)  # fmt: skip


def _compiled(jinja2):
    """A :class:`jinja2.BytecodeCache` over the user's cache, or None where it is off."""
    from ai_doctor import cache

    if not cache.enabled():
        return None

    class Compiled(jinja2.BytecodeCache):
        def load_bytecode(self, bucket):
            bucket.code = cache.load_code(_entry_name(jinja2, bucket))

        def dump_bytecode(self, bucket):
            cache.store_code(_entry_name(jinja2, bucket), bucket.code)

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
