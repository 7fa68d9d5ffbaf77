"""Many hosts' JSON reports (``aidoctor --format json``) read into one fleet model: a hosts ×
rules matrix with the worst severity per cell, hosts ranked by their worst finding.

Input that is not an aidoctor report of this schema is refused with the file named
(:class:`FleetError`), never half-read.
"""

from __future__ import annotations

import json
import os

from ai_doctor.model import Severity
from ai_doctor.record import Record

SCHEMA = "aidoctor.report/1"
# A report is a few KiB; a file far larger is not one.
MAX_REPORT = 64 << 20


class FleetError(Exception):
    """An input file that cannot be merged: the message names it."""


class FleetFinding(Record):
    """One finding of one host, as its report gave it."""

    __slots__ = ("rank", "rule", "severity", "title", "message", "commands")


class FleetHost(Record):
    """One report: who, from which file, its findings and the worst severity per rule."""

    __slots__ = ("name", "path", "kernel", "source", "exit_code", "findings", "cells", "worst", "counts", "failed", "targets", "label")
    _defaults = {"label": None}

    @property
    def worst_rank(self) -> int:
        return self.worst.rank if self.worst is not None else len(Severity)

    @property
    def errors(self) -> int:
        return len(self.failed)

    def cell(self, rule: str):
        """What the matrix shows for ``rule``: its worst severity's value, ``unknown`` where
        the check failed to run, or None for nothing found."""
        if rule in self.cells:
            return self.cells[rule].value
        return "unknown" if any(name == rule for name, _ in self.failed) else None

    @property
    def verdict(self) -> str:
        """The worst severity; ``unknown`` where nothing was found but checks failed to run."""
        if self.worst is not None:
            return self.worst.value
        return "unknown" if self.errors else "ok"


class Fleet(Record):
    """Hosts ranked worst first, and the rules that appear in any report, in first-seen order."""

    __slots__ = ("hosts", "rules", "titles")

    def counts(self) -> dict:
        """Hosts by their worst severity (``ok`` for none)."""
        counts = {severity.value: 0 for severity in Severity}
        counts.update(unknown=0, ok=0)
        for host in self.hosts:
            counts[host.verdict] += 1
        return counts


def load(paths) -> Fleet:
    hosts = []
    rules = {}
    given = set()
    for path in paths:
        if os.path.realpath(path) in given:
            raise FleetError("%s: given twice" % path)
        given.add(os.path.realpath(path))
        report = _read(path)
        host, titles = _host(path, report)
        hosts.append(host)
        for rule, title in titles.items():
            rules.setdefault(rule, title)
    # Worst first; among equals, more findings at that severity first; then by name, for one order.
    # Two reports of one host name (re-runs, clones) stay apart: named with their file.
    names = {}
    for host in hosts:
        names[host.name] = names.get(host.name, 0) + 1
    hosts = [host._replace(label=host.name if names[host.name] == 1 else "%s (%s)" % (host.name, host.path)) for host in hosts]
    # A host whose checks failed to run ranks above the clean ones: unknown is not fine.
    hosts.sort(key=lambda h: (h.worst_rank, -(h.counts.get(h.worst.value, 0) if h.worst else 0), not h.errors, h.name, h.path))
    from ai_doctor import engine

    # Columns in catalogue order; rules this aidoctor does not know (a newer one's) at the end.
    known = {rule.id: rule.order for rule in engine.load_rules().values()}
    columns = sorted(rules, key=lambda rule: (known.get(rule, len(known)), rule))
    return Fleet(tuple(hosts), tuple(columns), rules)


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_REPORT + 1)
    except OSError as exc:
        raise FleetError("%s: %s" % (path, exc.strerror or exc)) from None
    if len(data) > MAX_REPORT:
        raise FleetError("%s: larger than %d MiB, not an aidoctor report" % (path, MAX_REPORT >> 20))
    try:
        # utf-8-sig: a report saved through PowerShell carries a byte-order mark.
        report = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FleetError("%s: not JSON (make reports with `aidoctor --format json`)" % path) from None
    if not isinstance(report, dict) or "schema" not in report:
        raise FleetError("%s: not an aidoctor report (no schema field)" % path)
    if report["schema"] != SCHEMA:
        raise FleetError("%s: report schema %r, this aidoctor merges %s" % (path, str(report["schema"])[:40], SCHEMA))
    return report


def _host(path: str, report: dict):
    try:
        host = report["host"]
        name = str(host.get("hostname") or path)
        findings = []
        cells = {}
        targets = {}  # rule → rank of its worst finding, the one a matrix cell links to
        titles = {}
        counts = {}
        for item in report["findings"]:
            severity = Severity(item["severity"])
            rule = str(item["rule"])
            commands = tuple(str(c) for step in item.get("remediation", ()) for c in step.get("commands", ()))
            findings.append(FleetFinding(int(item["rank"]), rule, severity, str(item["title"]), str(item["message"]), commands))
            titles.setdefault(rule, str(item["title"]))
            if rule not in cells or severity.rank < cells[rule].rank:
                cells[rule] = severity
                targets[rule] = findings[-1].rank
            counts[severity.value] = counts.get(severity.value, 0) + 1
        for check in report.get("checks", ()):
            if check.get("status") in ("finding", "error"):
                titles.setdefault(str(check["rule"]), str(check.get("title") or check["rule"]))
        # Checks that failed to run: (rule, reason); their cells read "unknown", not "nothing".
        failed = tuple((str(c["rule"]), str(c.get("reason") or "")) for c in report.get("checks", ()) if c.get("status") == "error")
        worst = min((f.severity for f in findings), key=lambda s: s.rank, default=None)
        exit_code = int(report["summary"]["exit_code"])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        raise FleetError("%s: an aidoctor report with missing or malformed fields" % path) from None
    fleet_host = FleetHost(
        name, path, host.get("kernel"), host.get("source"), exit_code, tuple(findings), cells, worst, counts, failed, targets
    )
    return fleet_host, titles
