"""The report model: severities, findings with evidence and remediation, check results.

Immutable named tuples rather than dataclasses: ``import dataclasses`` pulls in ``inspect`` and
costs about as much as starting Python, and the whole check is budgeted at a few times that.
"""

from __future__ import annotations

import enum

from ai_doctor.record import Record

# The detail of a read outcome that a tree's manifest recorded (a snapshot taken elsewhere),
# rather than this machine's own answer.
RECORDED = "recorded in the tree's manifest"


class Severity(enum.Enum):
    """How bad a finding is; ``rank`` orders them, critical first."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    def at_least(self, other: Severity) -> bool:
        return self.rank <= other.rank

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls(text.lower())
        except ValueError:
            raise ValueError("unknown severity %r (one of %s)" % (text, ", ".join(s.value for s in cls))) from None


_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(Severity)}


class Status(enum.Enum):
    """What became of one check in one run."""

    PASS = "pass"
    FINDING = "finding"
    SKIP = "skip"
    ERROR = "error"


class Evidence(Record):
    """The file (as on the target), the value read there, and for configuration its line."""

    __slots__ = ("path", "value", "line")
    _defaults = {"line": None}


class Step(Record):
    """One remediation step: what it does in words and the actions that do it.

    ``actions`` (ai_doctor.remedy.actions) are the step as data; ``commands``, the exact shell
    lines the report prints, are rendered from them with ``shell`` (sudo, chroot), so what is
    printed is what ``aidoctor fix`` applies. ``persistent`` says whether the change survives a
    reboot (None: the step changes nothing, e.g. a command that shows what uses memory);
    ``on_host`` marks a step that must run on the container's host, not in it. A step without
    actions is advice in words.
    """

    __slots__ = ("summary", "actions", "needs_root", "persistent", "on_host", "shell")
    _defaults = {"actions": (), "needs_root": False, "persistent": None, "on_host": False, "shell": None}

    @property
    def commands(self):
        from ai_doctor.remedy.actions import PLAIN

        shell = self.shell or PLAIN
        return tuple(line for action in self.actions for line in action.sh(shell))

    @property
    def writes(self):
        """The kernel files (/proc/sys, /sys) the step changes now, which tells whether a
        read-only /proc/sys stands in its way."""
        return tuple(path for action in self.actions for path in action.writes)

    @property
    def reboot(self) -> bool:
        """Whether the step only takes effect at the next boot (or is a reboot)."""
        return any(action.reboot for action in self.actions)


def alternatives(steps):
    """The steps grouped into alternatives: a step whose summary begins with "Or" or
    "Otherwise" starts another way of fixing the same thing (README, JSON output)."""
    groups = []
    for step in steps:
        if not groups or step.summary.startswith(("Or ", "Or,", "Otherwise")):
            groups.append([])
        groups[-1].append(step)
    return groups


class Issue(Record):
    """What a rule reports; the engine turns it into a :class:`Finding`.

    ``severity`` and ``title`` default to the rule's; ``impact`` is the measured size of the
    problem (bytes short, CPUs affected) and ranks findings of one severity.
    """

    __slots__ = ("message", "evidence", "remediation", "severity", "impact", "title")
    _defaults = {"evidence": (), "remediation": (), "severity": None, "impact": 0, "title": None}


class Finding(Record):
    """A ranked problem: rule id, severity, plain message, evidence, ordered remediation."""

    __slots__ = ("rule", "severity", "title", "message", "evidence", "remediation", "impact", "order")

    @property
    def sort_key(self):
        return (self.severity.rank, -self.impact, self.order)

    @property
    def needs_root(self) -> bool:
        return any(step.needs_root for step in self.remediation)


class Skip(Record):
    """Returned by a rule whose inputs are absent, with the reason in words."""

    __slots__ = ("reason",)


class Pass(Record):
    """Returned by a rule that looked and found nothing wrong; ``note`` says what it saw."""

    __slots__ = ("note",)
    _defaults = {"note": ""}


class CheckResult(Record):
    """One rule's outcome in a run: pass, finding, skip (with reason) or error (with reason)."""

    __slots__ = ("rule", "title", "status", "reason", "findings")


class Request(Record):
    """What the user asked for: the model size in bytes (None when not given), the text it was
    read from and how (``140G = 140.0 GiB = 150.3 GB``), and a ``--hugepages`` pool size.
    ``program`` is how to start this aidoctor again (its script's path, or python -m).
    ``model_path`` is ``--model PATH`` as on the target (None when not given); ``env`` holds
    the environment variables that say where model caches live (HF_HOME, HF_HUB_CACHE,
    OLLAMA_MODELS, HOME), taken from this process for a live check only (empty otherwise)."""

    __slots__ = (
        "model_size",
        "size_text",
        "size_source",
        "described",
        "dtype",
        "params",
        "hugepages",
        "argv",
        "program",
        "margin",
        "model_path",
        "env",
    )
    _defaults = {
        "model_path": None,
        "env": {},
        "margin": None,
        "program": ("aidoctor",),
        "model_size": None,
        "size_text": None,
        "size_source": None,
        "described": None,
        "dtype": None,
        "params": None,
        "hugepages": None,
        "argv": (),
    }


class HostSummary(Record):
    """Who the report is about, for headers; ``next_boot`` holds what a --next-boot run
    simulated and assumed (None: the host as it runs); ``captured`` and ``captured_by``: when a
    snapshot was taken (UTC, ISO 8601) and by which aidoctor version (None: not a snapshot, or
    its manifest does not say); ``image``: for an image, the folder its fixes change (None: a
    running system, or a snapshot that does not say where its image was, whose fixes name the
    folder by the shell variable ``image_variable``); ``nodename``: a running system's kernel
    host name (``uname -n``), which a fix script for it checks."""

    __slots__ = (
        "hostname",
        "kernel",
        "source",
        "root",
        "live",
        "uid",
        "container",
        "distro",
        "next_boot",
        "captured",
        "captured_by",
        "image",
        "image_variable",
        "nodename",
    )
    _defaults = {"next_boot": None, "captured": None, "captured_by": None, "image": None, "image_variable": None, "nodename": None}


class Report(Record):
    """A finished run: findings ranked once here, so every renderer shows the same order."""

    __slots__ = (
        "tool_version",
        "host",
        "request",
        "checks",
        "findings",
        "fail_on",
        "exit_code",
        "verbose",
        "finished",
        "rules",
        "overview",
    )
    # ``finished``: when the run ended, seconds since the epoch (renderers never ask the clock);
    # ``rules``: the rules that ran, in catalogue order (id, title, severity, docs), for the
    # formats that carry a rules table; ``overview``: the host at a glance
    # (ai_doctor.overview.Overview; None for a report built without one).
    _defaults = {"finished": None, "rules": (), "overview": None}

    def counts(self) -> dict:
        """Findings by severity value, every severity present."""
        counts = {severity.value: 0 for severity in Severity}
        for finding in self.findings:
            counts[finding.severity.value] += 1
        return counts

    def status_counts(self) -> dict:
        """Checks by status value, every status present."""
        counts = {status.value: 0 for status in Status}
        for check in self.checks:
            counts[check.status.value] += 1
        return counts

    def by_status(self, status: Status):
        return [check for check in self.checks if check.status is status]

    def failing(self) -> int:
        """How many findings reach the --fail-on threshold."""
        return len(reaching(self.findings, self.fail_on))

    # The formats the command writes, for code that embeds the check (ai_doctor.check): each
    # is the renderer's, imported when asked for.

    def to_json(self) -> str:
        """The report as ``--format json`` writes it (schema aidoctor.report/1)."""
        from ai_doctor.reports.json import render

        return render(self)

    def to_html(self) -> str:
        """The report as ``--html FILE`` writes it: one self-contained page."""
        from ai_doctor.reports.html import render

        return render(self)

    def to_text(self, color: bool = False, width=None) -> str:
        """The report as ``aidoctor`` prints it to a pipe (``color`` for a terminal's escapes)."""
        from ai_doctor.reports.text import render

        return render(self, color=color, width=width)


def reaching(findings, fail_on: str):
    """The findings at or above a --fail-on threshold (none for ``never``)."""
    if fail_on == "never":
        return []
    threshold = Severity.parse(fail_on)
    return [finding for finding in findings if finding.severity.at_least(threshold)]
