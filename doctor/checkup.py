"""One checkup: Host → facts → rules → the finished, ranked Report (no printing, no exiting)."""

from __future__ import annotations

import time

from ai_doctor import __version__, engine
from ai_doctor.exitcodes import EXIT_FINDINGS, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE  # noqa: F401 (named here too)
from ai_doctor.facts import Facts
from ai_doctor.model import HostSummary, Report, Status, reaching
from ai_doctor.overview import overview
from ai_doctor.remedy.actions import IMAGE_UNNAMED


def checkup(host, request, rules=None, fail_on="high", strict=False, verbose=False) -> Report:
    """Run ``rules`` (default: all, see engine.select) over ``host``."""
    if rules is None:
        rules = engine.select()
    facts = Facts(host, request)
    checks, findings = engine.run(facts, rules)
    summary = host_summary(host, facts)
    code = exit_code(checks, findings, fail_on, strict)
    # After the checks, so it reuses the facts they computed.
    view = overview(facts)
    return Report(__version__, summary, request, checks, findings, fail_on, code, verbose, time.time(), tuple(rules), view)


def exit_code(checks, findings, fail_on: str, strict: bool) -> int:
    """DESIGN.md's exit codes: 3 for a rule error under --strict, 1 at or above the threshold."""
    if strict and any(check.status is Status.ERROR for check in checks):
        return EXIT_INTERNAL
    return EXIT_FINDINGS if reaching(findings, fail_on) else EXIT_OK


def _image_words(host, facts) -> str:
    default = facts.get("default_boot")
    return "image at %s (default kernel: %s)" % (host.root, default.how) if default else "image at %s" % host.root


def host_summary(host, facts) -> HostSummary:
    def text(name):
        value = facts.get(name)
        return value if isinstance(value, str) else None

    container = facts.get("container")
    distro = facts.get("os_release")
    notes = getattr(host, "notes", None)
    image = None if host.live or facts.get("running") else facts.get("fixes").image
    if host.live:
        source = "live system"
    elif host.origin and image is None:
        source = "snapshot %s" % host.origin
    elif host.origin:
        # An image's snapshot: its fixes change the image, wherever it was taken.
        if image == IMAGE_UNNAMED:
            where = "of an image whose folder it does not record (its fixes name it $IMAGE, for you to set)"
        else:
            where = "of the image at %s" % image
        source = "snapshot %s %s" % (host.origin, where)
    else:
        source = "snapshot or tree at %s" % host.root if facts.get("running") else _image_words(host, facts)
    summary = HostSummary(
        hostname=text("hostname"),
        kernel=text("release"),
        source=source,
        image=None if image == IMAGE_UNNAMED else image,
        image_variable=IMAGE_UNNAMED[1:] if image == IMAGE_UNNAMED else None,
        nodename=facts.get("nodename"),
        root=host.origin or host.root,
        live=host.live,
        uid=host.euid,
        container=(container.runtime or "yes") if container and container.detected else None,
        distro=distro.pretty if distro else None,
        captured=_manifest_word(host, "created", 32),
        captured_by=_manifest_word(host, "aidoctor", 40),
    )
    if notes is not None:
        summary = summary._replace(source=summary.source + ", as it will boot (simulated)", next_boot=tuple(notes))
    return summary


def _manifest_word(host, key: str, longest: int):
    """A short printable string the snapshot's manifest holds under ``key`` (hostile: anything
    else is not shown)."""
    value = (getattr(host, "manifest", None) or {}).get(key)
    if isinstance(value, str) and 0 < len(value) <= longest and value.isprintable() and value.isascii():
        return value
    return None
