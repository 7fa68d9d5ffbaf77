"""The report as SARIF 2.1.0, for code-scanning views (GitHub, GitLab, IDEs).

The rules table comes from the rules that ran (id, title, summary, full documentation, default
level); each finding is a result. A finding whose evidence points at a configuration file and
line carries it as a physicalLocation relative to the host's root (the ``HOSTROOT`` base), so a
viewer can open the file at the line. Fingerprints are stable across runs: the rule, the host
and the files the finding rests on, not its numbers, which change.
"""

from __future__ import annotations

import hashlib
import json

from ai_doctor.reports.words import command_line

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
# critical and high break a deployment or make it run badly: errors; the rest warn or inform.
_LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}


def render(report) -> str:
    return json.dumps(as_dict(report), indent=2, ensure_ascii=False) + "\n"


def as_dict(report) -> dict:
    index = {rule.id: number for number, rule in enumerate(report.rules)}
    root = report.host.root.rstrip("/") + "/"
    run = {
        "tool": {
            "driver": {
                "name": "aidoctor",
                "version": report.tool_version,
                "semanticVersion": report.tool_version,
                "rules": [_rule(rule) for rule in report.rules],
            }
        },
        "originalUriBaseIds": {"HOSTROOT": {"uri": "file://" + _uri(root)}},
        "invocations": [
            {
                "executionSuccessful": not any(check.status.value == "error" for check in report.checks),
                "commandLine": command_line(report),
                "exitCode": report.exit_code,
                # Which rules failed to run, and why: their results are missing, not clean.
                "toolExecutionNotifications": [
                    {"level": "error", "message": {"text": check.reason or "failed"}, "descriptor": {"id": check.rule}}
                    for check in report.checks
                    if check.status.value == "error"
                ],
            }
        ],
        "results": [_result(finding, index, report) for finding in report.findings],
        "properties": {
            "hostname": report.host.hostname,
            "kernel": report.host.kernel,
            "source": report.host.source,
            "failOn": report.fail_on,
        },
    }
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def _rule(rule) -> dict:
    return {
        "id": rule.id,
        "name": "".join(part.capitalize() for part in rule.id.replace("-", ".").split(".")),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.summary},
        "help": {"text": rule.docs},
        "defaultConfiguration": {"level": _LEVELS[rule.severity.value]},
        "properties": {"tags": [rule.area], "severity": rule.severity.value},
    }


def _result(finding, index, report) -> dict:
    result = {
        "ruleId": finding.rule,
        "level": _LEVELS[finding.severity.value],
        "message": {"text": finding.message},
        "partialFingerprints": {"aidoctor/v1": _fingerprint(finding, report)},
        "properties": {
            "severity": finding.severity.value,
            "evidence": [{"path": item.path, "value": item.value, "line": item.line} for item in finding.evidence],
            "remediation": [{"summary": step.summary, "commands": list(step.commands)} for step in finding.remediation],
        },
    }
    if finding.rule in index:
        result["ruleIndex"] = index[finding.rule]
    located = [item for item in finding.evidence if item.line is not None and item.path.startswith("/")]
    if located:
        result["locations"] = [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": _uri(item.path.lstrip("/")), "uriBaseId": "HOSTROOT"},
                    "region": {"startLine": item.line},
                }
            }
            for item in located
        ]
    return result


def _uri(path: str) -> str:
    """A path as a URI reference: its bytes percent-encoded (a name that was not UTF-8 too)."""
    from urllib.parse import quote

    return quote(path.encode("utf-8", "surrogateescape"))


def _fingerprint(finding, report) -> str:
    # Evidence comes in a fixed order per finding: its files, once each, in that order.
    basis = "\n".join([finding.rule, report.host.hostname or ""] + list(dict.fromkeys(item.path for item in finding.evidence)))
    return hashlib.sha256(basis.encode("utf-8", "surrogateescape")).hexdigest()[:32]
