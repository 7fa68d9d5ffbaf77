"""Storage that models load from: NVMe I/O schedulers."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip

UDEV_RULE = 'ACTION=="add|change", SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", KERNEL=="nvme[0-9]*n[0-9]*", ATTR{queue/scheduler}="none"'


@rule(
    "storage.scheduler",
    "NVMe namespace with an I/O scheduler",
    Severity.MEDIUM,
    needs=("block_devices",),
    uses=("udev_scheduler_rules", "fixes"),
)
def scheduler(f):
    """An NVMe namespace uses an I/O scheduler other than `none`.

    NVMe drives have many hardware queues and do their own scheduling; a multiqueue kernel
    scheduler (mq-deadline, kyber, bfq) in front of them adds per-request CPU cost and lock
    contention and lowers the throughput of the large sequential reads that load a model.
    The kernel picks `none` for such devices unless told otherwise, so another value was
    usually set by a udev rule, tuned profile or hand.

    Fix: write `none` to /sys/block/DEV/queue/scheduler now, and install a udev rule so every
    NVMe namespace gets it at boot and hot-plug (an /etc/rc.local line runs only where
    rc-local.service runs and the file is executable). udev runs rules files in file-name
    order and the last assignment wins, so the rule is named to sort after every rules file
    that sets a scheduler, and those are named in the finding.

    Reference: Documentation/block/switching-sched.rst; Documentation/ABI/stable/sysfs-block
    (queue/scheduler); block/elevator.c (elevator_get_default); udev(7) (rules files and their order).
    """
    nvme = [d for d in f.block_devices if d.is_nvme and not d.hidden]
    if not nvme:
        return Skip("no NVMe namespaces on this host")
    unknown = [d.name for d in nvme if d.scheduler is None]
    if len(unknown) == len(nvme):
        return Skip("the scheduler of %s could not be read" % ", ".join(unknown))
    wrong = [d for d in nvme if d.scheduler is not None and d.scheduler != "none"]
    if not wrong:
        note = "%d NVMe namespace(s) on none" % (len(nvme) - len(unknown))
        return Pass(note + ("; not readable: %s" % ", ".join(unknown) if unknown else ""))
    names = ", ".join("%s (%s)" % (d.name, d.scheduler) for d in wrong)
    message = "%s use%s a kernel I/O scheduler; NVMe does its own queueing, and `none` gives model loads the most throughput." % (
        names,
        "s" if len(wrong) == 1 else "",
    )
    evidence = [Evidence(d.scheduler_path, " ".join("[%s]" % c if c == d.scheduler else c for c in d.schedulers)) for d in wrong]
    setters = [r for r in f.udev_scheduler_rules if r.value != "none" and any(r.may_match(d.name) for d in wrong)]
    if setters:
        message += " udev rules set a scheduler at boot: %s." % ", ".join("%s:%d (%s)" % (r.path, r.line, r.value) for r in setters)
        evidence += [Evidence(r.path, r.text, r.line) for r in setters]
    # Rules run in file-name order and the last assignment wins: ours must sort after theirs.
    name = "60-aidoctor-nvme-scheduler.rules"
    if any(r.name >= name for r in f.udev_scheduler_rules):
        name = "99-zz-aidoctor-nvme-scheduler.rules"
    fixes = f.fixes
    steps = fixes.sysfs([d.scheduler_path for d in wrong], "none", "Switch to none")
    steps.append(fixes.udev_rule(name, UDEV_RULE, "Keep none for every NVMe namespace"))
    return Issue(message, evidence, steps, impact=len(wrong))
