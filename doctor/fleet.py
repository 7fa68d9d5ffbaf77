"""Many hosts' JSON reports (``aidoctor --format json``) read into one fleet model: a hosts ×
rules matrix with the worst severity per cell, hosts ranked by their worst finding, each host
with when its report was made and with what (model size, --fail-on, aidoctor version), judged
stale against a maximum age.

Input that is not an aidoctor report of this schema is refused with the file named
(:class:`FleetError`), never half-read. The merger asks the clock once (``now``); the fleet
carries it, so renderers never do.
"""

from __future__ import annotations

import json
import os
import re

from ai_doctor.model import Severity
from ai_doctor.record import Record

SCHEMA = "aidoctor.report/1"
# A report is a few KiB; a file far larger is not one.
MAX_REPORT = 64 << 20
# Words a report gives about itself (a version, a model size as typed) are short; longer is cut.
MAX_WORD = 40
DEFAULT_MAX_AGE = 7 * 86400
# What a matrix cell can say beside a severity: the check failed to run (``unknown``), ran and
# found nothing (``pass``), was skipped for want of its inputs (``skip``), or is not in that
# host's report at all (``not-run``: --only/--skip, or an aidoctor that lacks the rule).
MARKS = ("unknown", "pass", "skip", "not-run")

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# ASCII digits only: ``\d`` would take any script's.
_AGE = r"([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*([smhdw]?)"
_ISO = r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"


class FleetError(Exception):
    """An input file that cannot be merged: the message names it."""


class FleetFinding(Record):
    """One finding of one host, as its report gave it."""

    __slots__ = ("rank", "rule", "severity", "title", "message", "commands")


class FleetHost(Record):
    """One report: who, from which file, its findings and the worst severity per rule.

    ``created``: when the report was made (UTC ISO 8601 as the report gave it, None for an older
    aidoctor); ``captured``: when the snapshot it analysed was taken (None for a live host or a
    tree); ``as_of``: when the host was read, seconds since the epoch (the snapshot's time for a
    snapshot, else the report's; None when unknown); ``age``: seconds from ``as_of`` to the
    merge's now; ``stale``: older than the merge's --max-age (False when the time is unknown);
    ``model_size``, ``fail_on``, ``version``: what the report ran with, as short text or None;
    ``statuses``: rule → the status its check reported; ``marks``: what each of the fleet's
    columns shows for this host (a severity value or one of :data:`MARKS`).
    """

    __slots__ = (
        "name", "path", "kernel", "source", "exit_code", "findings", "cells", "worst", "counts", "failed", "targets", "label",
        "created", "captured", "as_of", "age", "stale", "model_size", "fail_on", "version", "statuses", "marks",
    )  # fmt: skip
    _defaults = {
        "label": None, "created": None, "captured": None, "as_of": None, "age": None, "stale": False,
        "model_size": None, "fail_on": None, "version": None, "statuses": None, "marks": (),
    }  # fmt: skip

    @property
    def worst_rank(self) -> int:
        return self.worst.rank if self.worst is not None else len(Severity)

    @property
    def errors(self) -> int:
        return len(self.failed)

    @property
    def time_unknown(self) -> bool:
        return self.as_of is None

    def marks_for(self, rules) -> tuple:
        """What the matrix shows for each of ``rules``: its worst severity's value, or one of :data:`MARKS`."""
        failed = {name for name, _ in self.failed}
        statuses = self.statuses or {}
        marks = []
        for rule in rules:
            severity = self.cells.get(rule)
            if severity is not None:
                marks.append(severity.value)
            elif rule in failed:
                marks.append("unknown")
            else:
                status = statuses.get(rule)
                # A check that says "finding" with no finding listed contradicts itself: not known.
                marks.append("not-run" if status is None else status if status in ("pass", "skip") else "unknown")
        return tuple(marks)

    @property
    def verdict(self) -> str:
        """The worst severity; ``unknown`` where nothing was found but checks failed to run."""
        if self.worst is not None:
            return self.worst.value
        return "unknown" if self.errors else "ok"

    def reaches(self, fail_on: str) -> bool:
        """A finding at or above ``fail_on`` (never for ``never``)."""
        return fail_on != "never" and self.worst is not None and self.worst.at_least(Severity.parse(fail_on))


class Fleet(Record):
    """Hosts ranked worst first, and the rules that appear in any report, in first-seen order.

    ``now``: when the merge ran (seconds since the epoch), the time ages are measured to;
    ``max_age``: seconds after which a report is stale; ``fail_on``: the merge's threshold.
    """

    __slots__ = ("hosts", "rules", "titles", "now", "max_age", "fail_on")
    _defaults = {"now": None, "max_age": DEFAULT_MAX_AGE, "fail_on": "never"}

    def counts(self) -> dict:
        """Hosts by their worst severity (``ok`` for none)."""
        counts = {severity.value: 0 for severity in Severity}
        counts.update(unknown=0, ok=0)
        for host in self.hosts:
            counts[host.verdict] += 1
        return counts

    def stale(self) -> int:
        return sum(1 for host in self.hosts if host.stale)

    def time_unknown(self) -> int:
        return sum(1 for host in self.hosts if host.time_unknown)

    def failing(self) -> list:
        """The hosts with a finding at or above the merge's --fail-on."""
        return [host for host in self.hosts if host.reaches(self.fail_on)]


def parse_age(text: str) -> int:
    """``7d``, ``36h``, ``90m``, ``45s`` or plain seconds (``w`` for weeks) → seconds, positive.
    Raises ValueError with the words to show."""
    match = re.fullmatch(_AGE, str(text).strip().lower())
    if match is None:
        raise ValueError("not an age (give e.g. 7d, 36h, 90m, or seconds)")
    seconds = round(float(match.group(1)) * _UNITS[match.group(2)])
    if seconds <= 0:
        raise ValueError("an age must be at least one second (give e.g. 7d, 36h, 90m, or seconds)")
    return seconds


def parse_time(text):
    """A UTC ISO 8601 time such as ``2026-12-03T05:22:54Z`` → seconds since the epoch, or None
    where it is not one."""
    if not isinstance(text, str) or len(text) > MAX_WORD:
        return None
    match = re.fullmatch(_ISO, text)
    if match is None:
        return None
    import datetime

    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    zone = match.group(7)
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 60 + int(zone[4:6])) * (1 if zone[0] == "+" else -1)
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.timezone.utc)
    except ValueError:  # 2026-02-31, 25:00
        return None
    return moment.timestamp() - offset * 60


def expand(paths) -> list:
    """The report files named: a folder stands for the ``*.json`` files directly in it, sorted
    (a folder without any is refused, never merged as nothing)."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        try:
            names = sorted(name for name in os.listdir(path) if name.endswith(".json"))
        except OSError as exc:
            raise FleetError("%s: %s" % (path, exc.strerror or exc)) from None
        if not names:
            raise FleetError("%s: a folder without *.json reports" % path)
        files.extend(os.path.join(path, name) for name in names)
    return files


def load(paths, now=None, max_age: int = DEFAULT_MAX_AGE, fail_on: str = "never") -> Fleet:
    """The fleet of the reports at ``paths`` (files, or folders of ``*.json``), ages measured to
    ``now`` (seconds since the epoch; None: no report is judged stale)."""
    hosts = []
    rules = {}
    given = set()
    for path in expand(paths):
        report = _read(path, given)
        host, titles = _host(path, report)
        hosts.append(host)
        for rule, title in titles.items():
            rules.setdefault(rule, title)
    from ai_doctor import catalogue

    # Columns in catalogue order; rules this aidoctor does not know (a newer one's) at the end.
    known = {rule.id: order for order, rule in enumerate(catalogue.listed())}
    columns = tuple(sorted(rules, key=lambda rule: (known.get(rule, len(known)), rule)))
    # Two reports of one host name (re-runs, clones) stay apart: named with their file.
    names = {}
    for host in hosts:
        names[host.name] = names.get(host.name, 0) + 1
    hosts = [_finish(host, names[host.name] == 1, columns, now, max_age) for host in hosts]
    # Worst first; among equals, more findings at that severity first; then by name, for one order.
    # A host whose checks failed to run ranks above the clean ones: unknown is not fine.
    hosts.sort(key=lambda h: (h.worst_rank, -(h.counts.get(h.worst.value, 0) if h.worst else 0), not h.errors, h.name, h.path))
    return Fleet(tuple(hosts), columns, rules, now, max_age, fail_on)


def _finish(host: FleetHost, unique: bool, columns, now, max_age: int) -> FleetHost:
    age = None if host.as_of is None or now is None else now - host.as_of
    return host._replace(
        label=host.name if unique else "%s (%s)" % (host.name, host.path),
        age=age,
        stale=age is not None and age > max_age,
        marks=host.marks_for(columns),
    )


def _read(path: str, given: set) -> dict:
    """The report at ``path``, refused if its file is among ``given`` (the files read so far, by
    device and inode: another name, a link or a folder's entry for the same file), which it joins."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if (info.st_dev, info.st_ino) in given:
                raise FleetError("%s: given twice" % path)
            given.add((info.st_dev, info.st_ino))
            # Sized to the file, one byte more to see its end: read(MAX_REPORT + 1) would ask
            # for 64 MiB every time. A pipe (size 0) or a file that grew reads on to the limit.
            size = min(info.st_size, MAX_REPORT) + 1
            data = handle.read(size)
            if len(data) == size:
                data += handle.read(MAX_REPORT + 1 - size)
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


def _word(value):
    """Short text a report gives about itself: None stays None, a number is written out, a
    string longer than :data:`MAX_WORD` is cut; anything else is malformed (TypeError)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError("not a word")
    text = str(value)
    return text if len(text) <= MAX_WORD else text[: MAX_WORD - 1] + "…"


def _about(path: str, report: dict, host: dict):
    """When and with what the report was made: (created, captured, as_of, model size, fail-on, version)."""
    created = report.get("created")
    if created is not None and parse_time(created) is None:
        raise FleetError("%s: created %r is not a UTC time like 2026-12-03T05:22:54Z" % (path, str(created)[:MAX_WORD]))
    # A snapshot's manifest is written by whoever made the archive: an odd time there is shown,
    # not trusted, and leaves the host's age unknown.
    captured = _word(host.get("captured"))
    as_of = parse_time(captured) if captured is not None else parse_time(created)
    tool = report.get("tool") or {}
    options = report.get("options") or {}
    size = options.get("model_size")
    if isinstance(size, dict):
        size = _word(size.get("as_read")) or ("%d bytes" % size["bytes"] if isinstance(size.get("bytes"), int) else None)
        if size is None:
            raise TypeError("a model size without as_read or bytes")
    elif size is not None:
        raise TypeError("model_size is not an object")
    return created, captured, as_of, size, _word(options.get("fail_on")), _word(tool.get("version"))


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
        statuses = {}
        failed = []  # checks that failed to run: (rule, reason); their cells read "unknown", not "nothing"
        for check in report.get("checks", ()):
            rule, status = str(check["rule"]), check.get("status")
            statuses.setdefault(rule, str(status)[:MAX_WORD])
            if status in ("finding", "error"):
                titles.setdefault(rule, str(check.get("title") or check["rule"]))
            if status == "error":
                failed.append((rule, str(check.get("reason") or "")))
        worst = min((f.severity for f in findings), key=lambda s: s.rank, default=None)
        exit_code = int(report["summary"]["exit_code"])
        about = _about(path, report, host)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        raise FleetError("%s: an aidoctor report with missing or malformed fields" % path) from None
    created, captured, as_of, model_size, fail_on, version = about
    fleet_host = FleetHost(
        name, path, host.get("kernel"), host.get("source"), exit_code, tuple(findings), cells, worst, counts, tuple(failed), targets,
        created=created, captured=captured, as_of=as_of, model_size=model_size, fail_on=fail_on, version=version, statuses=statuses,
    )  # fmt: skip
    return fleet_host, titles
