"""Storage that models load from: NVMe I/O schedulers."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.udev import name_after
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip

UDEV_RULE = 'ACTION=="add|change", SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", KERNEL=="nvme[0-9]*n[0-9]*", ATTR{queue/scheduler}="none"'
# udev gets no event from a hidden multipath path: block/genhd.c keeps its uevents suppressed
# (commit 9ec491447b90, Linux 5.12, also in the stable kernels), so the paths are written when
# a namespace, their head among them, is added or changed. Kept on one line: two lines would
# need a newline inside one shell word of the printed command.
UDEV_PATHS = ", RUN+=\"/bin/sh -c 'echo none | tee /sys/block/nvme*c*n*/queue/scheduler >/dev/null'\""
RULES_FILE = "aidoctor-nvme-scheduler.rules"


@rule(
    "storage.scheduler",
    "NVMe namespace with an I/O scheduler",
    Severity.MEDIUM,
    needs=("block_devices",),
    uses=("udev_scheduler_rules", "sysfs_conf", "fixes"),
)
def scheduler(f):
    """An NVMe namespace uses an I/O scheduler other than `none`.

    NVMe drives have many hardware queues and do their own scheduling; a multiqueue kernel
    scheduler (mq-deadline, kyber, bfq) in front of them adds per-request CPU cost and lock
    contention and lowers the throughput of the large sequential reads that load a model.
    The kernel picks `none` for a device with several hardware queues but `mq-deadline` for one
    with a single hardware queue (some virtual and fabrics NVMe controllers), and keeps it
    until told otherwise; any other choice was set by a udev rule, tuned profile or hand.

    With native NVMe multipath, /dev/nvme0n1 is a bio-based head without a scheduler of its own
    (its queue/scheduler reads a bare `none`); requests are queued on its hidden path devices
    nvme0c0n1, nvme0c1n1…, whose schedulers are the ones judged.

    Fix: write `none` to /sys/block/DEV/queue/scheduler now, and install a udev rule so every
    NVMe namespace gets it at boot and hot-plug (an /etc/rc.local line runs only where
    rc-local.service runs and the file is executable). The kernel sends udev no events for
    hidden path devices, so where there are paths the rule also writes theirs whenever an NVMe
    namespace, such as their head, is added or changed (a path added later to a head that is
    already there waits for the next such event). udev runs rules files in file-name order
    and the last assignment wins, so the rule is named to sort after every rules file that
    sets another scheduler, and those are named in the finding. Debian's sysfsutils writes
    /etc/sysfs.conf's `block/DEV/queue/scheduler` lines after udev has set the disks up (its
    unit's After=udev.service), so such a line overrides any rule: it is commented out.

    Reference: Documentation/block/switching-sched.rst; Documentation/ABI/stable/sysfs-block
    (queue/scheduler, hidden); block/elevator.c (elevator_get_default: mq-deadline only when
    nr_hw_queues == 1 or the tags are shared; elv_iosched_show: a bare `none` for a queue that
    is not blk-mq); drivers/nvme/host/multipath.c (nvme_mpath_alloc_disk: the head is
    blk_alloc_disk with a submit_bio that remaps to a path) and core.c (nvme_alloc_ns: paths are
    nvme%dc%dn%d with GENHD_FL_HIDDEN); block/genhd.c (device_add_disk: no uevents for hidden
    disks); udev(7) (rules files and their order).
    """
    nvme = [d for d in f.block_devices if d.is_nvme]
    heads = {d.head for d in nvme if d.hidden and d.head}
    judged = [d for d in nvme if _judged(d, heads)]
    if not judged:
        return Skip("no NVMe namespaces on this host")
    unknown = [_label(d) for d in judged if d.scheduler is None]
    if len(unknown) == len(judged):
        return Skip("the scheduler of %s could not be read" % ", ".join(unknown))
    wrong = [d for d in judged if d.scheduler is not None and d.scheduler != "none"]
    if not wrong:
        paths = sum(1 for d in judged if d.hidden and d.scheduler is not None)
        count = len(judged) - len(unknown) - paths
        note = "%d NVMe namespace%s" % (count, "" if count == 1 else "s")
        if paths:
            note += " and %d multipath path%s of %s" % (paths, "" if paths == 1 else "s", ", ".join(sorted(heads)))
        note += " on none"
        return Pass(note + ("; not readable: %s" % ", ".join(unknown) if unknown else ""))
    names = ", ".join("%s (%s%s)" % (d.name, "path of %s, " % d.head if d.hidden else "", d.scheduler) for d in wrong)
    message = "%s use%s a kernel I/O scheduler; NVMe does its own queueing, and `none` gives model loads the most throughput." % (
        names,
        "s" if len(wrong) == 1 else "",
    )
    evidence = [Evidence(d.scheduler_path, " ".join("[%s]" % c if c == d.scheduler else c for c in d.schedulers)) for d in wrong]
    wrong_heads = sorted({d.head for d in wrong if d.hidden})
    if wrong_heads:
        one = len(wrong_heads) == 1
        message += " %s %s native NVMe multipath: the multipath device has no scheduler of its own and queues requests on %s paths." % (
            ", ".join(wrong_heads),
            "is" if one else "are",
            "its" if one else "their",
        )
    single = [d for d in wrong if d.hw_queues == 1 and d.scheduler == "mq-deadline"]
    if single:
        message += " %s ha%s a single hardware queue, for which mq-deadline is the kernel's own default." % (
            ", ".join(d.name for d in single),
            "s" if len(single) == 1 else "ve",
        )
        evidence += [Evidence("/sys/block/%s/mq" % d.name, "1 hardware queue") for d in single]
    setters = [r for r in f.udev_scheduler_rules if r.value != "none" and any(r.may_match(d.name) for d in wrong)]
    if setters:
        message += " udev rules set a scheduler at boot: %s." % ", ".join("%s:%d (%s)" % (r.path, r.line, r.value) for r in setters)
        evidence += [Evidence(r.path, r.text, r.line) for r in setters]
    written = _sysfs_schedulers(f, wrong, lambda value: value != "none")
    if written:
        message += " Debian's sysfsutils writes a scheduler after boot, after any udev rule: %s." % ", ".join(
            "%s (%s)" % (s.where, s.value) for s in written
        )
        evidence += [Evidence(s.path, s.raw.strip(), s.line) for s in written]
    fixes = f.fixes
    steps = fixes.sysfs([d.scheduler_path for d in wrong], "none", "Switch to none")
    steps += fixes.comment_out_sysfs(written, "Comment out %(lines)s of %(path)s, which sysfsutils writes at every boot")
    # Rules run in file-name order and the last assignment wins: ours must sort after every
    # file that sets another scheduler (files setting none, ours included, cannot undo it).
    others = [r.name for r in f.udev_scheduler_rules if r.value != "none"]
    name = name_after(others, RULES_FILE)
    if name is None:
        message += " No ASCII file name sorts after %s, so no udev rule is offered." % max(others)
    else:
        text = UDEV_RULE + (UDEV_PATHS if heads else "")
        purpose = "Keep none for every NVMe namespace" + (" and multipath path" if heads else "")
        steps.append(fixes.udev_rule(name, text, purpose))
    return Issue(message, evidence, steps, impact=len(wrong))


def _sysfs_schedulers(f, devices, wanted):
    """The sysfs.conf lines sysfsutils writes last to one of ``devices``' schedulers at boot,
    where ``wanted(value)`` (doctor/facts/sysfsconf.py)."""
    conf = f.sysfs_conf
    found = []
    for device in devices:
        setting = conf.last("/sys/block/%s/queue/scheduler" % device.name) if conf else None
        if setting is not None and wanted(setting.value) and setting not in found:
            found.append(setting)
    return found


def _judged(device, heads) -> bool:
    if device.hidden:
        # A multipath path; any other hidden namespace takes no block I/O (a format the kernel
        # cannot use, reachable only through its character device).
        return device.head is not None
    # A multipath head without a scheduler choice is the bio-based node: its paths are judged.
    return not (device.name in heads and len(device.schedulers) <= 1)


def _label(device) -> str:
    return "%s (path of %s)" % (device.name, device.head) if device.hidden else device.name


@rule(
    "storage.scheduler-not-persistent",
    "NVMe scheduler set by hand, lost at reboot",
    Severity.LOW,
    needs=("block_devices",),
    uses=("udev_scheduler_rules", "running", "sysfs_conf", "fixes"),
    host_only="the udev rules and boot settings that choose schedulers at boot",
)
def scheduler_not_persistent(f):
    """An NVMe namespace runs on `none` only because someone set it: the kernel would pick
    mq-deadline for it at boot, and no udev rule sets it.

    For a device with a single hardware queue the kernel's default is mq-deadline
    (block/elevator.c, elevator_get_default); `none` there was written by hand, a script or a
    tool, and the next boot or hot-plug brings mq-deadline back (storage.scheduler then fires).
    A udev rule that assigns the scheduler for the device makes it last, as does a sysfsutils
    line writing `none` at boot. (Devices with several hardware queues get `none` from the
    kernel itself: nothing to keep.)

    Fix: install the udev rule storage.scheduler would print.

    Reference: Documentation/block/switching-sched.rst; block/elevator.c; udev(7).
    """
    if not f.running:
        return Skip("an image, not a running system: no running scheduler to keep")
    nvme = [d for d in f.block_devices if d.is_nvme and not d.hidden]
    if not nvme:
        return Skip("no NVMe namespaces on this host")
    rules = f.udev_scheduler_rules
    by_hand = [
        d
        for d in nvme
        if d.scheduler == "none"
        and d.hw_queues == 1
        and not any(r.value == "none" and r.may_match(d.name) for r in rules)
        and not _sysfs_schedulers(f, [d], lambda value: value == "none")
    ]
    if not by_hand:
        return Pass("no NVMe scheduler depends on a setting that boot would lose")
    names = ", ".join(d.name for d in by_hand)
    message = (
        "%s run%s on none, but with a single hardware queue the kernel picks mq-deadline at boot, and no udev rule sets "
        "none: the setting was made by hand (or a script) and the next reboot or hot-plug loses it."
        % (names, "s" if len(by_hand) == 1 else "")
    )
    evidence = [Evidence("/sys/block/%s/mq" % d.name, "1 hardware queue") for d in by_hand]
    evidence += [Evidence(d.scheduler_path, " ".join("[%s]" % c if c == d.scheduler else c for c in d.schedulers)) for d in by_hand]
    others = [r.name for r in rules if r.value != "none"]
    name = name_after(others, RULES_FILE)
    steps = [f.fixes.udev_rule(name, UDEV_RULE, "Keep none for every NVMe namespace")] if name else []
    return Issue(message, evidence, steps, impact=len(by_hand))
