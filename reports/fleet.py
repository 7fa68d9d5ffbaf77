"""The fleet view of many hosts' reports (``aidoctor merge``): a hosts × rules matrix with the
worst severity per cell, hosts ranked by their worst finding, as text, Markdown, JSON or one
self-contained HTML page whose cells link to the findings."""

from __future__ import annotations

import json

from ai_doctor.reports.markdown import cell_code as md_cell
from ai_doctor.reports.markdown import text as md_text
from ai_doctor.reports.words import visible

_SHORT = {"critical": "C", "high": "H", "medium": "M", "low": "L", "info": "I", "unknown": "?"}


def as_dict(fleet) -> dict:
    return {
        "schema": "aidoctor.fleet/1",
        "hosts_by_worst": fleet.counts(),
        "rules": list(fleet.rules),
        "hosts": [
            {
                "host": host.name,
                "label": host.label,
                "report": host.path,
                "kernel": host.kernel,
                "worst": host.worst.value if host.worst else None,
                "verdict": host.verdict,
                "exit_code": host.exit_code,
                "checks_failed": [{"rule": rule, "reason": reason} for rule, reason in host.failed],
                "cells": {rule: host.cell(rule) for rule in fleet.rules if host.cell(rule)},
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


def render_text(fleet) -> str:
    columns = ", ".join("%d=%s" % (i, visible(r)) for i, r in enumerate(fleet.rules, 1))
    lines = ["aidoctor fleet: " + _summary(fleet), "Columns: " + columns, ""]
    width = max([len(visible(host.label)) for host in fleet.hosts] + [4])
    lines.append("%-*s  %-8s  %s" % (width, "host", "worst", " ".join("%2d" % i for i in range(1, len(fleet.rules) + 1))))
    for host in fleet.hosts:
        cells = " ".join("%2s" % (_SHORT[host.cell(rule)] if host.cell(rule) else ".") for rule in fleet.rules)
        failed = "  (failed to run: %s)" % ", ".join(visible(rule) for rule, _ in host.failed) if host.failed else ""
        lines.append("%-*s  %-8s  %s%s" % (width, visible(host.label), host.verdict, cells, failed))
    lines += ["", "C critical, H high, M medium, L low, I info, ? failed to run, . nothing"]
    return "\n".join(lines) + "\n"


def render_markdown(fleet) -> str:
    out = ["# aidoctor fleet", "", md_text(_summary(fleet), line_start=True), ""]
    out.append("| host | worst | " + " | ".join(md_cell(rule) for rule in fleet.rules) + " |")
    out.append("| --- | --- | " + " | ".join("---" for _ in fleet.rules) + " |")
    for number, host in enumerate(fleet.hosts, 1):
        cells = [_md_cell(host, number, rule) for rule in fleet.rules]
        out.append("| [%s](#host-%d) | %s | %s |" % (md_text(host.label), number, host.verdict, " | ".join(cells)))
    out.append("")
    for number, host in enumerate(fleet.hosts, 1):
        out += ['<a id="host-%d"></a>' % number, "", "## %d. %s: %s" % (number, md_text(host.label), host.verdict), ""]
        for rule, reason in host.failed:
            out.append("- **failed to run** %s: %s" % (md_cell(rule), md_text(reason)))
        for finding in host.findings:
            out.append(
                '- <a id="host-%d-f%d"></a>**%s** %s: %s'
                % (number, finding.rank, finding.severity.value, md_cell(finding.rule), md_text(finding.title))
            )
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _md_cell(host, number: int, rule: str) -> str:
    if rule in host.cells:
        return "[%s](#host-%d-f%d)" % (host.cells[rule].value, number, host.targets[rule])
    return "[unknown](#host-%d)" % number if host.cell(rule) else ""


def render_html(fleet) -> str:
    from ai_doctor.reports.html import environment

    return environment().get_template("fleet.html.j2").render(fleet=fleet, summary=_summary(fleet), short=_SHORT)
