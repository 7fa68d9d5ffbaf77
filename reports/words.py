"""Words every renderer shares, so no two of them disagree: the outcome, what a step needs,
and host text made visible."""

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


def checked_words(report):
    """``2026-12-03 05:30 UTC``: when the run ended (None when the report does not say)."""
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.finished)) if report.finished else None


def captured_words(host):
    """``snapshot taken 2026-12-01T10:00:00Z by aidoctor 0.1.0``, or None for no snapshot."""
    if host.captured is None and host.captured_by is None:
        return None
    words = "snapshot taken %s" % (host.captured or "at a time it does not say")
    return words + (" by aidoctor %s" % host.captured_by if host.captured_by else "")


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


def _controls() -> dict:
    # C0 and C1 controls and DEL (terminal escapes), and the bidirectional overrides that can
    # make text read as something else: shown as \xNN / \uNNNN.
    table = {code: "\\x%02x" % code for code in list(range(0x20)) + list(range(0x7F, 0xA0))}
    table.update({code: "\\u%04x" % code for code in list(range(0x202A, 0x202F)) + list(range(0x2066, 0x206A))})
    # Bytes of a file name that were not UTF-8 (surrogateescape): the byte, not a lone surrogate
    # that no UTF-8 output can hold.
    table.update({code: "\\x%02x" % (code - 0xDC00) for code in range(0xDC80, 0xDD00)})
    return table


CONTROLS = _controls()


def visible(text) -> str:
    """Host text with every control character shown as an escape instead of acting."""
    return str(text).translate(CONTROLS)


def visible_lines(text) -> str:
    """visible(), keeping line breaks: a command of several lines (a here-document) copies whole."""
    return "\n".join(visible(line) for line in str(text).split("\n"))


def command_line(report) -> str:
    """The command line that made the report, quoted so it can be pasted and run again."""
    from ai_doctor.shell import join

    return join(report.request.argv) if report.request and report.request.argv else "aidoctor"
