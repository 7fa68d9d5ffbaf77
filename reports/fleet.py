"""The fleet view of many hosts' reports (``aidoctor merge``): a hosts × rules matrix with the
worst severity per cell, hosts ranked by their worst finding, each with when its report was made
(stale past --max-age) and with what, as text, Markdown, JSON or one self-contained HTML page
whose cells link to the findings.

The fleet carries the merge's clock (``fleet.now``) and every judgement (stale, the cell
marks); these functions only put them into words."""

from __future__ import annotations

import json

from ai_doctor.reports.markdown import cell_code as md_cell
from ai_doctor.reports.markdown import text as md_text
from ai_doctor.reports.words import visible

_SHORT = {
    "critical": "C", "high": "H", "medium": "M", "low": "L", "info": "I", "unknown": "?", "pass": ".", "skip": "-", "not-run": "_",
}  # fmt: skip
_LEGEND = "C critical, H high, M medium, L low, I info, ? failed to run, . pass, - skipped, _ not run (not in that host's report)"
# Markdown and HTML: what a cell says where there is no finding to link to.
_WORDS = {"pass": "pass", "skip": "skipped", "not-run": "not run", "unknown": "unknown"}
# HTML cells: symbol and what it means (the legend and each cell's tooltip).
_MARKS = {
    "unknown": ("?", "the check failed to run"),
    "pass": ("✓", "pass: the check ran and found nothing"),
    "skip": ("–", "skipped: the check's inputs were absent on that host"),
    "not-run": ("·", "not run: the rule is not in that host's report (--only/--skip, or an older aidoctor)"),
}


def duration(seconds) -> str:
    """``7d``, ``36h``, ``90m`` or ``45s``: an age limit in the largest whole unit."""
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def age_words(host, stale: bool = True) -> str:
    """``3d old``, ``13d old, stale`` (``stale``: say so), ``time unknown``."""
    if host.age is None:
        return "time unknown"
    seconds = int(host.age)
    if seconds < -300:  # a clock ahead of the merging one's, by more than drift
        words = "%s ahead of this clock" % _amount(-seconds)
    else:
        words = "%s old" % _amount(max(seconds, 0))
    return words + ", stale" if stale and host.stale else words


def _amount(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def when(seconds) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def report_time(host) -> str:
    """The report's time as it gave it, and the snapshot's for a snapshot."""
    words = host.created or "not given"
    return words + " (snapshot %s)" % host.captured if host.captured else words


def as_dict(fleet) -> dict:
    return {
        "schema": "aidoctor.fleet/1",
        "now": when(fleet.now) if fleet.now is not None else None,
        "max_age_seconds": fleet.max_age,
        "fail_on": fleet.fail_on,
        "hosts_failing": len(fleet.failing()),
        "hosts_stale": fleet.stale(),
        "hosts_time_unknown": fleet.time_unknown(),
        "hosts_by_worst": fleet.counts(),
        "rules": list(fleet.rules),
        "hosts": [
            {
                "host": host.name,
                "label": host.label,
                "report": host.path,
                "kernel": host.kernel,
                "created": host.created,
                "captured": host.captured,
                "age_seconds": None if host.age is None else int(host.age),
                "stale": host.stale,
                "time_unknown": host.time_unknown,
                "model_size": host.model_size,
                "fail_on": host.fail_on,
                "aidoctor_version": host.version,
                "worst": host.worst.value if host.worst else None,
                "verdict": host.verdict,
                "exit_code": host.exit_code,
                "checks_failed": [{"rule": rule, "reason": reason} for rule, reason in host.failed],
                # Severities and failed checks only; "marks" has every column, pass/skip/not-run too.
                "cells": {rule: mark for rule, mark in zip(fleet.rules, host.marks) if mark not in ("pass", "skip", "not-run")},
                "marks": dict(zip(fleet.rules, host.marks)),
                "findings": [{"rank": f.rank, "rule": f.rule, "severity": f.severity.value, "title": f.title} for f in host.findings],
            }
            for host in fleet.hosts
        ],
    }


def render_json(fleet) -> str:
    return json.dumps(as_dict(fleet), indent=2, ensure_ascii=False) + "\n"


def _summary(fleet) -> str:
    counts = fleet.counts()
    parts = ["%d %s" % (counts[key], key) for key in ("critical", "high", "medium", "low", "info", "unknown", "ok") if counts[key]]
    return "%d host%s, by worst finding: %s" % (len(fleet.hosts), "" if len(fleet.hosts) == 1 else "s", ", ".join(parts) or "none")


def _freshness(fleet) -> str:
    """``merged 2026-12-03T05:30:00Z; 2 stale (older than 7d); 1 time unknown; --fail-on high: 3 hosts at or above``."""
    parts = ["merged %s" % when(fleet.now) if fleet.now is not None else "merged at a time not given"]
    parts.append("%d stale (older than %s)" % (fleet.stale(), duration(fleet.max_age)))
    if fleet.time_unknown():
        parts.append("%d time unknown (a report without its time)" % fleet.time_unknown())
    if fleet.fail_on != "never":
        failing = len(fleet.failing())
        parts.append("--fail-on %s: %d host%s at or above" % (fleet.fail_on, failing, "" if failing == 1 else "s"))
    return "; ".join(parts)


def _about(host) -> list:
    """The report's own settings, as words: model size, --fail-on, aidoctor version."""
    return [host.model_size or "none", host.fail_on or "unknown", host.version or "unknown"]


def render_text(fleet) -> str:
    columns = ", ".join("%d=%s" % (i, visible(r)) for i, r in enumerate(fleet.rules, 1))
    lines = ["aidoctor fleet: " + _summary(fleet), _freshness(fleet), "Columns: " + columns, ""]
    width = max([len(visible(host.label)) for host in fleet.hosts] + [4])
    lines.append("%-*s  %-8s  %s" % (width, "host", "worst", " ".join("%2d" % i for i in range(1, len(fleet.rules) + 1))))
    for host in fleet.hosts:
        cells = " ".join("%2s" % _SHORT[mark] for mark in host.marks)
        failed = "  (failed to run: %s)" % ", ".join(visible(rule) for rule, _ in host.failed) if host.failed else ""
        lines.append("%-*s  %-8s  %s%s" % (width, visible(host.label), host.verdict, cells, failed))
    lines += ["", _LEGEND, ""]
    rows = [["host", "report time", "age", "model size", "--fail-on", "aidoctor"]]
    rows += [[host.label, report_time(host), age_words(host)] + _about(host) for host in fleet.hosts]
    rows = [[visible(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(fleet) -> str:
    out = ["# aidoctor fleet", "", md_text(_summary(fleet), line_start=True), "", md_text(_freshness(fleet), line_start=True), ""]
    fixed = ("host", "worst", "report time", "age", "model size", "`--fail-on`", "aidoctor")
    out.append("| %s | " % " | ".join(fixed) + " | ".join(md_cell(rule) for rule in fleet.rules) + " |")
    out.append("| %s | " % " | ".join("---" for _ in fixed) + " | ".join("---" for _ in fleet.rules) + " |")
    for number, host in enumerate(fleet.hosts, 1):
        cells = [_md_cell(host, number, rule, mark) for rule, mark in zip(fleet.rules, host.marks)]
        age = _md_age(host)
        row = [
            "[%s](#host-%d)" % (md_text(host.label), number),
            host.verdict,
            md_text(report_time(host)),
            age,
        ] + [md_text(word) for word in _about(host)]
        out.append("| %s | %s |" % (" | ".join(row), " | ".join(cells)))
    out += ["", "Cells: a severity links to the finding; unknown: the check failed to run; pass: it ran and found nothing; "
            "skipped: its inputs were absent; not run: the rule is not in that host's report.", ""]  # fmt: skip
    for number, host in enumerate(fleet.hosts, 1):
        out += ['<a id="host-%d"></a>' % number, "", "## %d. %s: %s" % (number, md_text(host.label), host.verdict), ""]
        model, fail_on, version = (md_text(word) for word in _about(host))
        out += [
            "Report %s, %s; model size %s, `--fail-on` %s, aidoctor %s."
            % (md_text(report_time(host)), _md_age(host), model, fail_on, version),
            "",
        ]
        for rule, reason in host.failed:
            out.append("- **failed to run** %s: %s" % (md_cell(rule), md_text(reason)))
        for finding in host.findings:
            out.append(
                '- <a id="host-%d-f%d"></a>**%s** %s: %s'
                % (number, finding.rank, finding.severity.value, md_cell(finding.rule), md_text(finding.title))
            )
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _md_age(host) -> str:
    return md_text(age_words(host, False)) + (", **stale**" if host.stale else "")


def _md_cell(host, number: int, rule: str, mark: str) -> str:
    if rule in host.cells:
        return "[%s](#host-%d-f%d)" % (mark, number, host.targets[rule])
    if mark == "unknown":
        return "[unknown](#host-%d)" % number
    return _WORDS[mark]


def render_html(fleet) -> str:
    from ai_doctor.reports.html import environment

    return (
        environment()
        .get_template("fleet.html.j2")
        .render(
            fleet=fleet,
            summary=_summary(fleet),
            freshness=_freshness(fleet),
            short=_SHORT,
            marks=_MARKS,
            max_age=duration(fleet.max_age),
            age_words=age_words,
            report_time=report_time,
            cells=_html_cells(fleet),
        )
    )


def _html_cells(fleet) -> list:
    """Each host's row of matrix cells as markup: 10,000 hosts × 40 rules are too many cells to
    fill one by one in the template. A cell with a finding links to it and says the severity and
    the rule's title; a check that failed to run links to the host; a pass, skip or not-run cell
    is the same markup in every row. The host text in them (rule titles) recurs on every row: it
    is made visible and escaped once per column."""
    from markupsafe import Markup, escape

    def text(value):
        return escape(visible(value))

    plain = {}
    for mark, (symbol, meaning) in _MARKS.items():
        plain[mark] = '<td class="%s" title="%s">%s</td>' % (text(mark), text(meaning), text(symbol))
    # Around the link's host and finding numbers: by column, and by column and severity.
    failed = [
        ('<td class="cell unknown"><a href="#host-', '" title="failed to run: %s">?</a></td>' % text(fleet.titles[rule]))
        for rule in fleet.rules
    ]
    linked = {}
    rows = []
    for number, host in enumerate(fleet.hosts, 1):
        cells = []
        for column, (rule, mark) in enumerate(zip(fleet.rules, host.marks)):
            if rule in host.cells:
                around = linked.get((column, mark))
                if around is None:
                    around = linked[column, mark] = (
                        '<td class="cell %s"><a href="#host-' % text(mark),
                        '" title="%s: %s">%s</a></td>' % (text(mark), text(fleet.titles[rule]), text(_SHORT[mark])),
                    )
                cells.append("%s%d-f%d%s" % (around[0], number, host.targets[rule], around[1]))
            elif mark == "unknown":
                cells.append("%s%d%s" % (failed[column][0], number, failed[column][1]))
            else:
                cells.append(plain[mark])
        rows.append(Markup("".join(cells)))
    return rows
