"""The report as GitHub-flavoured Markdown, for pasting into a ticket or a pull request.

Host text (hostnames, paths, file contents) is escaped twice over: HTML-escaped, since GitHub
renders raw HTML in Markdown, and with Markdown's punctuation backslash-escaped, so a value can
neither inject a tag nor turn into emphasis, a link or a table cell border. Commands go in fenced
blocks longer than any backtick run they hold.
"""

from __future__ import annotations

import html
import re

from ai_doctor.model import Status
from ai_doctor.overview import rows
from ai_doctor.reports.words import CONTROLS, captured_words, checked_words, command_line, found_words, step_flags, threshold_words

_MARKS = {"critical": "🔴", "high": "🟠", "medium": "🟡", "low": "🔵", "info": "⚪"}
# Characters that start emphasis, code, links, cell borders or strikethrough anywhere …
_PUNCTUATION = r"([\\`*_\[\]|~])"
# … and those that start a heading, list or quote at the start of a line.
_LEADING = r"^(\s*)([#>+-]|\d+[.)])"


def text(value, line_start=False) -> str:
    """Host text as inert Markdown on one line; ``line_start`` where it begins a line, which
    makes a leading ``#``, ``-`` or ``1.`` a heading or a list."""
    value = str(value).replace("\r", " ").replace("\n", " ").translate(CONTROLS)
    value = re.sub(_PUNCTUATION, r"\\\1", html.escape(value, quote=False))
    if not line_start:
        return value
    return re.sub(_LEADING, lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], value)


def code(value) -> str:
    """Inline code that no backtick inside can end early."""
    value = str(value).replace("\n", " ").translate(CONTROLS)
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return "%s%s%s%s%s" % (fence, pad, value, pad, fence)


def cell_code(value) -> str:
    # GFM splits table cells at a pipe even inside a code span, unless it is escaped.
    return code(value).replace("|", "\\|")


def _block(commands) -> list:
    # A command of several lines (a here-document) keeps them: its newlines are not host text.
    body = [line.translate(CONTROLS) for command in commands for line in command.split("\n")]
    longest = max((len(run) for line in body for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "sh"] + body + [fence]


def render(report) -> str:
    host = report.host
    request = report.request
    out = ["# aidoctor report: %s" % text(host.hostname or "unknown host"), ""]
    facts = [
        ("Kernel", host.kernel or "unknown"),
        ("System", host.distro or "unknown"),
        ("Source", host.source),
    ]
    if captured_words(host):
        facts.append(("Snapshot", captured_words(host)[len("snapshot ") :]))
    if checked_words(report):
        facts.append(("Checked", checked_words(report)))
    if host.next_boot is not None:
        facts.append(("Next boot", "; ".join(host.next_boot)))
    if host.container:
        facts.append(("Container", host.container))
    facts.append(("Model", request.described if request and request.described else "no size given: memory checks skipped"))
    out += ["- **%s:** %s" % (name, text(value)) for name, value in facts]
    failed = [check for check in report.checks if check.status is Status.ERROR]
    if failed:
        listed = ", ".join("%s (%s)" % (code(check.rule), text(check.reason or "")) for check in failed)
        out.append("- **Failed to run** (unknown, not fine): %s" % listed)
    out += [
        "- **Result:** %s; %s → exit %d" % (found_words(report), text(threshold_words(report)), report.exit_code),
        "- **Produced by:** aidoctor %s: %s" % (text(report.tool_version), code(command_line(report))),
        "",
    ]
    overview = rows(report.overview)
    if overview:
        out += ["## Host", ""] + ["- **%s:** %s" % (label, text(words)) for label, words in overview] + [""]
    if report.findings:
        out += ["## Findings", ""]
        for rank, finding in enumerate(report.findings, 1):
            out += _finding(rank, finding)
    else:
        out += ["No findings.", ""]
    out += _checks(report)
    return "\n".join(out).rstrip("\n") + "\n"


def _finding(rank, finding) -> list:
    severity = finding.severity.value
    out = [
        "### %d. %s %s · %s: %s" % (rank, _MARKS[severity], severity, code(finding.rule), text(finding.title)),
        "",
        text(finding.message, line_start=True),
        "",
    ]
    if finding.evidence:
        out += ["<details><summary>Evidence</summary>", "", "| file | line | value |", "| --- | --- | --- |"]
        for item in finding.evidence:
            out.append("| %s | %s | %s |" % (cell_code(item.path), "" if item.line is None else item.line, text(item.value)))
        out += ["", "</details>", ""]
    if finding.remediation:
        out += ["**Fix**", ""]
        for number, step in enumerate(finding.remediation, 1):
            flags = step_flags(step)
            out.append("%d. %s%s" % (number, text(step.summary), " _(%s)_" % ", ".join(flags) if flags else ""))
            if step.commands:
                out += [""] + ["   " + line for line in _block(step.commands)] + [""]
        out.append("")
    return out


def _checks(report) -> list:
    shown = [check for check in report.checks if check.status in (Status.PASS, Status.SKIP)]
    if not shown:
        return []
    out = ["<details><summary>Passed and skipped checks</summary>", "", "| check | status | reason |", "| --- | --- | --- |"]
    for check in shown:
        out.append("| %s | %s | %s |" % (cell_code(check.rule), check.status.value, text(check.reason or "")))
    return out + ["", "</details>", ""]
