"""The report as a Prometheus textfile, for node_exporter's textfile collector.

Gauges: findings by severity, one series per check and status (1 for the status it has, 0 for
the others, so an alert can watch one rule), the run's exit code, when it finished, and the
tool's version. Label values are escaped per the exposition format (backslash, double quote,
newline). The CLI writes the file whole (a temporary file renamed over it), so the collector
never reads half of it.
"""

from __future__ import annotations

from ai_doctor.model import Severity, Status


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(name: str, labels: dict, value) -> str:
    inner = ",".join('%s="%s"' % (key, _label(val)) for key, val in labels.items())
    return "%s{%s} %s" % (name, inner, value) if inner else "%s %s" % (name, value)


def _gauge(name: str, help_text: str) -> list:
    return ["# HELP %s %s" % (name, help_text), "# TYPE %s gauge" % name]


def render(report) -> str:
    host = {"hostname": report.host.hostname or ""}
    lines = _gauge("aidoctor_info", "aidoctor version and the host it examined (always 1).")
    lines.append(
        _series(
            "aidoctor_info",
            dict(host, version=report.tool_version, kernel=report.host.kernel or "", source=report.host.source),
            1,
        )
    )
    lines += _gauge("aidoctor_findings", "Findings of the last run, by severity.")
    counts = report.counts()
    lines += [_series("aidoctor_findings", dict(host, severity=s.value), counts[s.value]) for s in Severity]
    lines += _gauge("aidoctor_findings_failing", "Findings at or above the --fail-on threshold.")
    lines.append(_series("aidoctor_findings_failing", dict(host, fail_on=report.fail_on), report.failing()))
    lines += _gauge("aidoctor_check_status", "1 for the status each check ended in, 0 for the others.")
    for check in report.checks:
        for status in Status:
            lines.append(_series("aidoctor_check_status", dict(host, rule=check.rule, status=status.value), int(check.status is status)))
    lines += _gauge("aidoctor_exit_code", "The exit code of the last run (0 ok, 1 findings at or above --fail-on, 3 failed).")
    lines.append(_series("aidoctor_exit_code", host, report.exit_code))
    if report.finished:
        lines += _gauge("aidoctor_last_run_timestamp_seconds", "When the last run finished, in seconds since the epoch.")
        lines.append(_series("aidoctor_last_run_timestamp_seconds", host, "%.3f" % report.finished))
    return "\n".join(lines) + "\n"
