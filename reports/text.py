"""The terminal report, in the spirit of `flutter doctor`: one mark per finding, then its fix.

Host text goes in as rich ``Text`` (never markup), commands are printed whole on their own
lines so they copy cleanly, and without colour there are no escape codes at all.
"""

from __future__ import annotations

import io
import re

from ai_doctor.model import Severity, Status
from ai_doctor.overview import rows
from ai_doctor.reports.words import CONTROLS, captured_words, checked_words, found_words, step_flags, threshold_words

# Severity → (mark, ASCII mark, style)
_MARKS = {
    Severity.CRITICAL: ("✗", "x", "bold red"),
    Severity.HIGH: ("✗", "x", "red"),
    Severity.MEDIUM: ("!", "!", "yellow"),
    Severity.LOW: ("!", "!", "cyan"),
    Severity.INFO: ("i", "i", "blue"),
}
_PASS = ("✓", "+", "green")
_ERROR = ("?", "?", "magenta")
_SKIP = ("-", "-", "dim")
# Separators, in Unicode and in ASCII for terminals that cannot show them.
_GLYPHS = {True: (" · ", " — ", "→"), False: (" - ", " - ", "->")}
PLAIN_WIDTH = 100


_VISIBLE = CONTROLS
# For terminals that cannot show them, the report's own typography in ASCII.
_ASCII = dict(_VISIBLE)
_ASCII.update((ord(k), v) for k, v in {"≈": "~", "−": "-", "×": "x", "…": "...", "—": "-", "→": "->", "·": "-", "✓": "+", "✗": "x"}.items())


def render(report, color: bool = False, width=None, unicode: bool = True, quiet: bool = False) -> str:
    """The report as terminal text: with ANSI styles through rich when ``color``, plain
    otherwise (pipes, files, NO_COLOR), where rich's import would be most of the run's cost.
    ``quiet``: the header, the closing list of findings and the result line only."""
    out = _RichOut(width or PLAIN_WIDTH) if color else _PlainOut(width or PLAIN_WIDTH)
    _Writer(out, unicode).report(report, quiet)
    return out.getvalue()


def _pieces(text: str, width: int, indent: int, hang: int):
    """(first character, end) of each line ``text`` wraps into, breaking only at spaces and
    never between a number and its unit (``64.0 GiB``, ``uid 1000``)."""
    import textwrap

    glued = re.sub(_GLUE, "\ue000", text)
    lines = textwrap.wrap(
        glued,
        width=max(width, indent + hang + 20),
        initial_indent=" " * indent,
        subsequent_indent=" " * (indent + hang),
        break_long_words=False,
        break_on_hyphens=False,
    )
    position = 0
    for line in lines:
        content = line.lstrip(" ")
        start = glued.find(content, position)
        position = start + len(content)
        yield start, position


_GLUE = r"(?<=\d) (?=(?:B|KiB|MiB|GiB|TiB|kB|MB|GB|TB)\b)|(?<=\buid) (?=\d)"


class _PlainOut:
    """Plain text, wrapped at spaces; styles are dropped."""

    def __init__(self, width: int):
        self.width = width
        self.lines = []

    def line(self, parts, indent: int, hang: int, wrap: bool):
        text = "".join(part[0] if isinstance(part, tuple) else part for part in parts)
        if not wrap:
            self.lines.append(" " * indent + text)
            return
        spans = list(_pieces(text, self.width, indent, hang)) or [(0, 0)]
        for number, (start, end) in enumerate(spans):
            self.lines.append(" " * (indent + (hang if number else 0)) + text[start:end])

    def block(self, texts, style):
        """Lines printed as they are, from the margin, in one style."""
        self.lines.extend(texts)

    def blank(self):
        self.lines.append("")

    def getvalue(self) -> str:
        return "\n".join(self.lines) + "\n"


class _RichOut:
    """ANSI-styled text through rich, for colour terminals; wrapped like the plain text."""

    def __init__(self, width: int):
        from rich.console import Console
        from rich.text import Text

        self.Text = Text
        self.width = width
        self.buffer = io.StringIO()
        self.console = Console(
            file=self.buffer,
            force_terminal=True,
            color_system="standard",
            width=width,
            markup=False,
            emoji=False,
            highlight=False,
        )

    def line(self, parts, indent: int, hang: int, wrap: bool):
        styled = [part if isinstance(part, tuple) else (part, None) for part in parts]
        if not wrap:
            self.console.print(self._text(" " * indent, styled), soft_wrap=True)
            return
        plain = "".join(piece for piece, _style in styled)
        spans = list(_pieces(plain, self.width, indent, hang)) or [(0, 0)]
        # Each wrapped line made from the parts it covers, walking them once: slicing one rich
        # Text per line copies all of it each time (quadratic in a long message).
        index, offset = 0, 0  # the part holding ``start``, and where that part begins
        for number, (start, end) in enumerate(spans):
            while index < len(styled) - 1 and offset + len(styled[index][0]) <= start:
                offset += len(styled[index][0])
                index += 1
            pieces, at, where = [], index, offset
            while at < len(styled) and where < end:
                piece, style = styled[at]
                pieces.append((piece[max(start - where, 0) : end - where], style))
                where += len(piece)
                at += 1
            self.console.print(self._text(" " * (indent + (hang if number else 0)), pieces), soft_wrap=True)

    def _text(self, lead: str, pieces):
        text = self.Text(lead)
        for piece, style in pieces:
            if piece:
                text.append(piece, style=style)
        return text

    def block(self, texts, style):
        """Lines printed as they are, from the margin, in one style: written with the style's
        codes directly (rich's print costs tens of microseconds a line, and a here-document
        may have 100,000)."""
        from rich.color import ColorSystem
        from rich.style import Style

        style = Style.parse(style)
        self.buffer.write("".join(style.render(text, color_system=ColorSystem.STANDARD) + "\n" for text in texts))

    def blank(self):
        self.console.print()

    def getvalue(self) -> str:
        return self.buffer.getvalue()


class _Writer:
    def __init__(self, out, unicode: bool):
        self.out = out
        self.unicode = unicode
        self.dot, self.dash, self.arrow = _GLYPHS[unicode]

    def mark(self, triple):
        return ("[%s]" % (triple[0] if self.unicode else triple[1]), triple[2])

    def line(self, *parts, indent: int = 0, hang: int = 0, wrap: bool = True):
        """One logical line of ``parts`` (strings, or (string, style) pairs).

        Wrapped continuation lines are indented ``hang`` more; ``wrap=False`` (commands,
        paths) never breaks, so a command copies whole. Control characters from the host's
        files are shown escaped, never sent to the terminal.
        """
        table = _VISIBLE if self.unicode else _ASCII
        cleaned = tuple((p[0].translate(table), p[1]) if isinstance(p, tuple) else p.translate(table) for p in parts)
        self.out.line(cleaned, indent, hang, wrap)

    def report(self, report, quiet: bool = False):
        self.header(report)
        if not quiet:
            for finding in report.findings:
                self.finding(finding, report.verbose)
            self.checks(report)
        self.summary(report, quiet)
        self.verdict(report)

    def summary(self, report, quiet: bool):
        """One line per finding in rank order, where the end of a long report is what a
        terminal still shows."""
        if not report.findings:
            return
        if not quiet:
            self.out.blank()
        self.line(("Findings, most important first:", "bold"))
        for number, finding in enumerate(report.findings, 1):
            mark = _MARKS[finding.severity]
            steps = len(finding.remediation)
            fixes = " (%d fix step%s)" % (steps, "" if steps == 1 else "s") if steps else ""
            self.line(
                "%2d. " % number,
                ("%-8s" % finding.severity.value, mark[2]),
                " ",
                (finding.rule, "bold"),
                self.dash,
                finding.title,
                (fixes, "dim"),
                indent=2,
                hang=4 + 9,
            )

    def header(self, report):
        host = report.host
        about = [host.hostname or "unknown host"]
        if host.distro:
            about.append(host.distro)
        about.append("kernel %s" % (host.kernel or "unknown"))
        about.append(host.source)
        if host.uid is not None:
            about.append("uid %d" % host.uid)
        if host.container:
            about.append("container (%s)" % host.container)
        checked = checked_words(report)
        if checked:
            about.append(checked)
        self.line(("aidoctor %s" % report.tool_version, "bold"), self.dot + self.dot.join(about))
        captured = captured_words(host)
        if captured:
            self.line(("Snapshot: ", "bold"), captured[len("snapshot ") :])
        if host.next_boot is not None:
            how = "" if report.verbose else " (-v shows how)"
            self.line(("Next boot: ", "bold"), "simulated from the persistent configuration" + how)
            if report.verbose:
                for note in host.next_boot:
                    self.line("- " + note, indent=4, hang=2)
        request = report.request
        if request is not None and request.described:
            self.line(("Model: ", "bold"), request.described)
        else:
            self.line(
                ("Model: ", "bold"), "no size given (--model PATH, --model-size 140G, or --params 70B): the memory checks are skipped"
            )
        if report.verbose:
            self.overview(report)
        self.out.blank()

    def overview(self, report):
        """The host at a glance, one aligned line per fact (ai_doctor.overview)."""
        lines = rows(report.overview)
        if not lines:
            return
        self.line(("Host:", "bold"))
        width = max(len(label) for label, _ in lines) + 2
        for label, words in lines:
            self.line(("%-*s" % (width, label), "dim"), words, indent=2, hang=width)

    def finding(self, finding, verbose: bool):
        mark = _MARKS[finding.severity]
        self.line(
            self.mark(mark),
            " ",
            ("%-8s" % finding.severity.value, mark[2]),
            " ",
            (finding.rule, "bold"),
            self.dash,
            finding.title,
            hang=4 + 9,  # a wrapped title stays under the rule id, past "[x] severity "
        )
        self.line(finding.message, indent=4)
        if verbose and finding.evidence:
            self.line(("Evidence:", "bold"), indent=4)
            for item in finding.evidence:
                where = item.path if item.line is None else "%s:%d" % (item.path, item.line)
                self.line((where, "dim"), "  ", item.value, indent=6, wrap=False)
        if finding.remediation:
            self.line(("Fix:", "bold"), indent=4)
            for number, step in enumerate(finding.remediation, 1):
                self.line("%d. " % number, step.summary, (_flags(step), "dim"), indent=6, hang=3)
                for command in step.commands:
                    first, _, rest = command.partition("\n")
                    self.line((first, "bold cyan"), indent=9, wrap=False)
                    if rest:
                        # A command of several lines (a here-document): the others from the
                        # margin, where its end marker must be to copy it whole.
                        table = _VISIBLE if self.unicode else _ASCII
                        self.out.block([more.translate(table) for more in rest.split("\n")], "bold cyan")
        self.out.blank()

    def checks(self, report):
        passed = report.by_status(Status.PASS)
        skipped = report.by_status(Status.SKIP)
        errors = report.by_status(Status.ERROR)
        parts = ["%d check%s passed" % (len(passed), "" if len(passed) == 1 else "s")] if passed else []
        if skipped:
            parts.append("%d skipped%s" % (len(skipped), "" if report.verbose else " (-v shows why)"))
        if errors:
            parts.append("%d failed to run" % len(errors))
        if parts:
            self.line(self.mark(_PASS if passed else _SKIP), " ", self.dot.join(parts))
        for check in errors:
            self.line(self.mark(_ERROR), " ", (check.rule, "bold"), ": ", check.reason, indent=4, hang=4)
        if report.verbose:
            for check in passed:
                self.line(self.mark(_PASS), " ", (check.rule, "bold"), ": " + check.reason if check.reason else "", indent=4, hang=4)
            for check in skipped:
                self.line(self.mark(_SKIP), " ", (check.rule, "bold"), ": ", check.reason, indent=4, hang=4)

    def verdict(self, report):
        self.line(("Result: ", "bold"), "%s; %s %s exit %d" % (found_words(report), threshold_words(report), self.arrow, report.exit_code))


def _flags(step) -> str:
    """`` [root, persistent, on the host]``: what a step needs and whether it lasts."""
    flags = step_flags(step)
    return " [%s]" % ", ".join(flags) if flags else ""
