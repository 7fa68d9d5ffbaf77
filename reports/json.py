"""The JSON report (schema ``aidoctor.report/1``, documented in the README)."""

from __future__ import annotations

import json

SCHEMA = "aidoctor.report/1"


def render(report) -> str:
    return json.dumps(as_dict(report), indent=2, ensure_ascii=False) + "\n"


def as_dict(report) -> dict:
    request = report.request
    host = report.host
    return {
        "schema": SCHEMA,
        "created": created(report),
        "tool": {"name": "aidoctor", "version": report.tool_version},
        "host": {
            "hostname": host.hostname,
            "kernel": host.kernel,
            "distro": host.distro,
            "source": host.source,
            "root": host.root,
            "image": host.image,
            "image_variable": host.image_variable,
            "live": host.live,
            "uid": host.uid,
            "container": host.container,
            "next_boot": list(host.next_boot) if host.next_boot is not None else None,
            "captured": host.captured,
            "captured_by": host.captured_by,
        },
        "facts": overview_dict(report.overview),
        "options": {
            "model_size": None
            if request is None or request.model_size is None
            else {
                "bytes": request.model_size,
                "as_read": request.size_text,
                "from": request.size_source,
                "dtype": request.dtype,
                "params": request.params,
            },
            "hugepages": request.hugepages if request else None,
            "fail_on": report.fail_on,
            "argv": list(request.argv) if request else [],
        },
        "summary": {
            "findings": report.counts(),
            "checks": report.status_counts(),
            "exit_code": report.exit_code,
        },
        "findings": [_finding(rank, finding) for rank, finding in enumerate(report.findings, 1)],
        "checks": [
            {"rule": check.rule, "title": check.title, "status": check.status.value, "reason": check.reason} for check in report.checks
        ],
    }


def overview_dict(view):
    """The host overview (ai_doctor.overview) as JSON values: null where a value is unknown,
    with the reason under its key in ``unknown``."""
    if view is None:
        return None
    out = {name: _plain(getattr(view, name)) for name in view.__slots__ if name != "unknown"}
    out["unknown"] = dict(view.unknown)
    return out


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if hasattr(value, "_asdict"):
        return {name: _plain(item) for name, item in value._asdict().items()}
    return value


def created(report):
    """When the run ended, UTC, ISO 8601 (None when the report does not say)."""
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.finished)) if report.finished else None


def _finding(rank: int, finding) -> dict:
    return {
        "rank": rank,
        "rule": finding.rule,
        "severity": finding.severity.value,
        "title": finding.title,
        "message": finding.message,
        "evidence": [_evidence(item) for item in finding.evidence],
        "remediation": [
            {
                "summary": step.summary,
                "commands": list(step.commands),
                "needs_root": step.needs_root,
                "persistent": step.persistent,
                "on_host": step.on_host,
                "actions": [action.as_dict() for action in step.actions],
            }
            for step in finding.remediation
        ],
    }


def _evidence(item) -> dict:
    entry = {"path": item.path, "value": item.value}
    if item.line is not None:
        entry["line"] = item.line
    return entry
