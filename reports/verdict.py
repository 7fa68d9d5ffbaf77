"""The words every renderer uses for a run's outcome, so no two of them disagree."""

from __future__ import annotations

from ai_doctor.model import Severity


def found_words(report) -> str:
    """``1 critical, 2 medium`` or ``no findings``."""
    counts = report.counts()
    return ", ".join("%d %s" % (counts[s.value], s.value) for s in Severity if counts[s.value]) or "no findings"


def threshold_words(report) -> str:
    """``2 at or above high``, or ``--fail-on never``."""
    if report.fail_on == "never":
        return "--fail-on never"
    return "%d at or above %s" % (report.failing(), report.fail_on)


def step_flags(step) -> list:
    """What a remediation step needs and whether it lasts: root, persistent / until reboot,
    on the host. Only steps with commands need root or last."""
    flags = []
    if step.commands and step.needs_root:
        flags.append("root")
    if step.commands and step.persistent is not None:
        flags.append("persistent" if step.persistent else "until reboot")
    if step.on_host:
        flags.append("on the host")
    return flags
