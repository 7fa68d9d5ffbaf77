"""What this run could not see or change: refused reads, read-only /proc/sys."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.bootloader import BLS_DIRS, GRUB_CFG_PATHS, GRUB_DEFAULTS, GRUB_DROP_INS, GRUBENV_PATHS
from ai_doctor.model import RECORDED, Evidence, Issue, Pass, Severity, Skip, Status, Step
from ai_doctor.remedy.actions import Show
from ai_doctor.shell import quote


@rule(
    "access.permission-denied",
    "Checks ran on partial data",
    Severity.MEDIUM,
    uses=("identity", "request"),
    review=True,
)
def permission_denied(f):
    """Files the checks need could not be read as this user.

    A check whose input was refused either skipped or judged from what it could read, and
    its verdict may be wrong in either direction. Most of /proc and /sys is world-readable,
    but some files are not (0400 sysfs attributes, /boot on some distributions, sysctl files
    with tight modes, paths masked inside containers). The finding names the checks that ran
    on partial data and the files they missed; rerunning as root (or taking the snapshot as
    root) gives them everything.

    Some refused files decide what the other checks judge: grubenv (RHEL keeps it 0600) holds
    GRUB's saved_entry, so which kernel boots, and with it which config, modules and boot
    line are judged, is a guess without it; so are grub.cfg, the boot entries and the GRUB
    defaults. Where such a file was refused, the finding rises to the highest default
    severity of the checks that read it (critical for the GPU driver checks), so a gate at
    `--fail-on high` cannot pass on a guess.
    """
    affected = [entry for entry in f.audit if any(got.denied for got in entry.failed_reads)]
    if not affected:
        return Pass("every file the checks needed was readable")
    denied = []
    recorded = False
    for entry in affected:
        for got in entry.failed_reads:
            if got.denied and got.path not in denied:
                denied.append(got.path)
                recorded = recorded or got.detail == RECORDED
    names = ", ".join("%s (%s)" % (entry.rule, "skipped" if entry.status is Status.SKIP else "partial data") for entry in affected)
    identity = f.identity
    if recorded:
        who = "uid %d where the snapshot was taken" % identity.euid if identity.euid is not None else "the user that took the snapshot"
    else:
        who = "uid %d" % identity.reader
    message = "%d file%s could not be read as %s, so these checks ran blind or on partial data: %s." % (
        len(denied),
        "" if len(denied) == 1 else "s",
        who,
        names,
    )
    evidence = [Evidence(path, "permission denied") for path in denied[:12]]
    if len(denied) > 12:
        evidence.append(Evidence("…", "%d more" % (len(denied) - 12)))
    if recorded:
        # The files were refused where the snapshot was taken: take it again there, as root.
        steps = [
            Step(
                "On the host the tree came from, take the snapshot again as root",
                # sudo's secure_path rarely holds a venv: keep the user's PATH.
                (Show('sudo env "PATH=$PATH" aidoctor snapshot -o snapshot-as-root'),),
                True,
                None,
            )
        ]
    elif identity.reader == 0:
        message += " This run was already root: the files are masked (a container's masked paths, or a security module)."
        steps = [Step("Run aidoctor on the container's host, or with the paths unmasked, to see them", (), True, None)]
    else:
        request = f.request
        # sudo's secure_path rarely holds a venv: name the program by where it is.
        program = request.program if request else ("aidoctor",)
        argv = list(request.argv[1:]) if request else []
        command = "sudo " + " ".join(quote(word) for word in list(program) + argv)
        steps = [Step("Rerun as root to see everything", (Show(command),), True, None)]
    severity, deciding = _hidden_severity(affected)
    if deciding:
        message += (
            " %s decide%s which kernel, boot line or configuration the other checks judge: they judged a guess, so this "
            "finding takes the severity of the most severe of them." % (", ".join(deciding), "s" if len(deciding) == 1 else "")
        )
    return Issue(message, evidence, steps, impact=len(denied), severity=severity)


# Files whose content chooses what the other checks judge: the kernel that boots (and so its
# config, modules and boot line).
_DECIDING = GRUBENV_PATHS + GRUB_CFG_PATHS + (GRUB_DEFAULTS,)
_DECIDING_FOLDERS = tuple(folder + "/" for folder in BLS_DIRS + (GRUB_DROP_INS,))


def _hidden_severity(affected):
    """(the severity the finding takes, the refused deciding files): medium, or the highest
    default severity of the checks that read a refused deciding file."""
    deciding, severities = [], []
    for entry in affected:
        hit = [got.path for got in entry.failed_reads if got.denied and (got.path in _DECIDING or got.path.startswith(_DECIDING_FOLDERS))]
        # Only checks that judged (a skip judged nothing, whatever it read).
        if hit and entry.severity is not None and entry.status in (Status.PASS, Status.FINDING):
            severities.append(entry.severity)
            deciding += [path for path in hit if path not in deciding]
    if not severities:
        return None, []
    worst = min(severities + [Severity.MEDIUM], key=lambda s: s.rank)
    return worst, deciding


@rule(
    "access.readonly-sysctl",
    "/proc/sys is read-only",
    Severity.INFO,
    needs=("mounts",),
    uses=("container", "running"),
    review=True,
)
def readonly_sysctl(f):
    """/proc/sys is mounted read-only, as container runtimes do by default.

    `sysctl -w` then fails with "Read-only file system" and sysctl.d files are not applied.
    The vm.* settings (huge pages, overcommit) are not namespaced: they can only be changed
    on the host, and apply to every container there. Namespaced ones (net.*, kernel.shm*,
    kernel.msg*, kernel.sem, fs.mqueue.*) are set through the runtime: `docker run --sysctl`,
    or a Kubernetes pod's securityContext.sysctls.

    Severity is info, raised to that of the most severe finding whose fix writes /proc/sys.

    Reference: Documentation/admin-guide/sysctl/index.rst; the OCI runtime spec's
    readonlyPaths; runc's sysctl validation (only namespaced keys are accepted).
    """
    if not f.running:
        return Skip("an image, not a running system")
    mounts = f.mounts
    proc_sys = mounts.at("/proc/sys")
    proc = mounts.covering("/proc/sys")
    mount = proc_sys if proc_sys is not None else proc
    if mount is None or not mount.read_only:
        return Pass("/proc/sys is writable (for root)")
    blocked = [finding for finding in f.findings if any(w.startswith("/proc/sys/") for step in finding.remediation for w in step.writes)]
    severity = min((x.severity for x in blocked), key=lambda s: s.rank) if blocked else None
    message = '/proc/sys is mounted read-only here, so `sysctl -w` fails with "Read-only file system".'
    if blocked:
        message += " The fixes for %s change /proc/sys: make them on %s." % (
            ", ".join(sorted({x.rule for x in blocked})),
            f.container.where if f.container and f.container.detected else "the host",
        )
    message += (
        " vm.* settings are host-wide (not namespaced); only namespaced ones (net.*, "
        "kernel.shm*, …) can be set per container, through the runtime."
    )
    steps = [
        Step(
            "Set host-wide sysctls (vm.*) on the host; pass namespaced ones when the container starts "
            "(`docker run --sysctl KEY=VALUE`, or securityContext.sysctls in a pod spec)",
            (),
            True,
            True,
            True,
        )
    ]
    return Issue(message, [Evidence(mounts.source, "%s mounted %s (ro)" % (mount.mountpoint, mount.fstype))], steps, severity=severity)
