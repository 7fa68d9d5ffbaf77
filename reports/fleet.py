"""The fleet view of many hosts' reports (``aidoctor merge``): a hosts × rules matrix with the
worst severity per cell, hosts ranked by their worst finding, as text, Markdown, JSON or one
self-contained HTML page whose cells link to the findings."""

from __future__ import annotations

import json

from ai_doctor.reports.markdown import code as md_code
from ai_doctor.reports.markdown import text as md_text
from ai_doctor.reports.words import visible

_SHORT = {"critical": "C", "high": "H", "medium": "M", "low": "L", "info": "I"}


def as_dict(fleet) -> dict:
    return {
        "schema": "aidoctor.fleet/1",
        "hosts_by_worst": fleet.counts(),
        "rules": list(fleet.rules),
        "hosts": [
            {
                "host": host.name,
                "report": host.path,
                "kernel": host.kernel,
                "worst": host.worst.value if host.worst else None,
                "exit_code": host.exit_code,
                "checks_failed": host.errors,
                "cells": {rule: host.cells[rule].value for rule in fleet.rules if rule in host.cells},
                "findings": [{"rank": f.rank, "rule": f.rule, "severity": f.severity.value, "title": f.title} for f in host.findings],
            }
            for host in fleet.hosts
        ],
    }


def render_json(fleet) -> str:
    return json.dumps(as_dict(fleet), indent=2, ensure_ascii=False) + "\n"


def _summary(fleet) -> str:
    counts = fleet.counts()
    parts = ["%d %s" % (counts[key], key) for key in ("critical", "high", "medium", "low", "info", "ok") if counts[key]]
    return "%d host%s, by worst finding: %s" % (len(fleet.hosts), "" if len(fleet.hosts) == 1 else "s", ", ".join(parts) or "none")


def render_text(fleet) -> str:
    lines = ["aidoctor fleet: " + _summary(fleet), "Columns: " + ", ".join("%d=%s" % (i, r) for i, r in enumerate(fleet.rules, 1)), ""]
    width = max([len(visible(host.name)) for host in fleet.hosts] + [4])
    lines.append("%-*s  %-8s  %s" % (width, "host", "worst", " ".join("%2d" % i for i in range(1, len(fleet.rules) + 1))))
    for host in fleet.hosts:
        cells = " ".join("%2s" % (_SHORT[host.cells[rule].value] if rule in host.cells else ".") for rule in fleet.rules)
        lines.append("%-*s  %-8s  %s" % (width, visible(host.name), host.worst.value if host.worst else "ok", cells))
    lines += ["", "C critical, H high, M medium, L low, I info, . nothing"]
    return "\n".join(lines) + "\n"


def render_markdown(fleet) -> str:
    out = ["# aidoctor fleet", "", md_text(_summary(fleet)), ""]
    out.append("| host | worst | " + " | ".join(md_code(rule) for rule in fleet.rules) + " |")
    out.append("| --- | --- | " + " | ".join("---" for _ in fleet.rules) + " |")
    for host in fleet.hosts:
        cells = [host.cells[rule].value if rule in host.cells else "" for rule in fleet.rules]
        out.append("| %s | %s | %s |" % (md_text(host.name), host.worst.value if host.worst else "ok", " | ".join(cells)))
    return "\n".join(out) + "\n"


def render_html(fleet) -> str:
    import jinja2  # only for this format

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ai_doctor.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["visible"] = visible
    return env.get_template("fleet.html.j2").render(fleet=fleet, summary=_summary(fleet), short=_SHORT)
