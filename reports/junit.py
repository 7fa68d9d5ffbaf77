"""The report as JUnit XML, for CI viewers: one testcase per check.

A finding at or above --fail-on is a failure; one below it passes with its message in
system-out; a skipped check is skipped with its reason; a rule that failed to run is an error.
The shape is the common testsuites/testsuite/testcase/failure/skipped one that Jenkins, GitLab
and GitHub test reporters read. Characters XML 1.0 cannot carry are replaced.
"""

from __future__ import annotations

import re

from ai_doctor.model import Status, reaching

# XML 1.0 allows tab, newline, carriage return and everything from U+0020 but surrogates,
# U+FFFE and U+FFFF.
_NOT_XML = "[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


def _clean(value) -> str:
    return re.sub(_NOT_XML, "\ufffd", str(value))


def render(report) -> str:
    import xml.etree.ElementTree as ET  # only for this format

    failing = {id(finding) for finding in reaching(report.findings, report.fail_on)}
    by_rule = {}
    for finding in report.findings:
        by_rule.setdefault(finding.rule, []).append(finding)
    counts = report.status_counts()
    failures = sum(1 for check in report.checks if any(id(f) in failing for f in by_rule.get(check.rule, ())))
    root = ET.Element("testsuites", name="aidoctor", tests=str(len(report.checks)), failures=str(failures), errors=str(counts["error"]))
    suite = ET.SubElement(
        root,
        "testsuite",
        name="aidoctor %s" % _clean(report.host.hostname or "host"),
        tests=str(len(report.checks)),
        failures=str(failures),
        errors=str(counts["error"]),
        skipped=str(counts["skip"]),
        hostname=_clean(report.host.hostname or ""),
    )
    if report.finished:
        import datetime

        stamp = datetime.datetime.fromtimestamp(report.finished, datetime.timezone.utc)
        suite.set("timestamp", stamp.strftime("%Y-%m-%dT%H:%M:%S"))
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("aidoctor.version", report.tool_version),
        ("kernel", report.host.kernel or ""),
        ("source", report.host.source),
        ("fail_on", report.fail_on),
        ("model", report.request.described if report.request and report.request.described else ""),
    ):
        ET.SubElement(properties, "property", name=name, value=_clean(value))
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", classname="aidoctor.%s" % check.rule.split(".", 1)[0], name=check.rule)
        findings = by_rule.get(check.rule, [])
        if check.status is Status.SKIP:
            ET.SubElement(case, "skipped", message=_clean(check.reason))
        elif check.status is Status.ERROR:
            ET.SubElement(case, "error", message=_clean(check.reason), type="rule-error")
        elif any(id(f) in failing for f in findings):
            worst = findings[0]
            failure = ET.SubElement(
                case, "failure", message=_clean("%s: %s" % (worst.severity.value, worst.title)), type=worst.severity.value
            )
            failure.text = _clean("\n\n".join(_details(f) for f in findings))
        elif findings:
            out = ET.SubElement(case, "system-out")
            out.text = _clean("\n\n".join(_details(f) for f in findings))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _details(finding) -> str:
    lines = ["[%s] %s" % (finding.severity.value, finding.message)]
    for item in finding.evidence:
        lines.append("  evidence: %s%s: %s" % (item.path, ":%d" % item.line if item.line else "", item.value))
    for number, step in enumerate(finding.remediation, 1):
        lines.append("  fix %d. %s" % (number, step.summary))
        lines.extend("      $ %s" % command for command in step.commands)
    return "\n".join(lines)
