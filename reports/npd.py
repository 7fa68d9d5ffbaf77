"""node-problem-detector custom plugin output: one line of at most 80 bytes naming the top
finding. The exit status is the plugin's verdict (0 OK, 1 problem, 2 unknown), set by the CLI
from ``status``."""

from __future__ import annotations

from ai_doctor.model import Status, reaching

LIMIT = 80  # bytes; npd's default max_output_length


def status(report) -> int:
    """0 when nothing reaches --fail-on, 1 when something does, 2 when a check that could
    have decided failed to run."""
    if reaching(report.findings, report.fail_on):
        return 1
    if any(check.status is Status.ERROR for check in report.checks):
        return 2
    return 0


def render(report) -> str:
    failing = reaching(report.findings, report.fail_on)
    if failing:
        top = failing[0]
        more = " (+%d more)" % (len(failing) - 1) if len(failing) > 1 else ""
        line = "%s %s: %s%s" % (top.severity.value, top.rule, top.title, more)
    elif status(report) == 2:
        errors = [check.rule for check in report.checks if check.status is Status.ERROR]
        line = "unknown: %d check(s) failed to run: %s" % (len(errors), ", ".join(errors))
    else:
        line = "ok: nothing at or above %s" % report.fail_on
    return fit(line) + "\n"


def fit(line: str) -> str:
    """At most LIMIT bytes of UTF-8, cut at a character boundary, with one line only."""
    line = " ".join(line.split())
    data = line.encode("utf-8")
    if len(data) <= LIMIT:
        return line
    return data[: LIMIT - 3].decode("utf-8", "ignore") + "..."
