"""Storage that models load from: NVMe I/O schedulers, network and FUSE filesystems."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.mounts import network_kind
from ai_doctor.facts.udev import name_after
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip
from ai_doctor.remedy.actions import NOW, Run, WriteFile

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


NFS_READ_AHEAD_KB = 15360  # 15 MiB: NFS's own default before Linux 5.4 with rsize=1M (15 × rsize)
NFS_READ_AHEAD_LOW_KB = 1024
NFS_RULES_FILE = "aidoctor-nfs-readahead.rules"
# amazon-ec2-utils' and Azure's rule: only the bdi of an NFS mount (/proc/fs/nfsfs/volumes, column DEV).
NFS_UDEV_RULE = (
    'SUBSYSTEM=="bdi", ACTION=="add", PROGRAM="/usr/bin/awk -v bdi=$kernel \'BEGIN{ret=1} {if ($4 == bdi) {ret=0}} END{exit ret}\' '
    '/proc/fs/nfsfs/volumes", ATTR{read_ahead_kb}="%d"' % NFS_READ_AHEAD_KB
)


@rule(
    "storage.model-network",
    "Models load from network storage",
    Severity.MEDIUM,
    needs=("model_storage",),
    uses=("mounts", "fixes"),
)
def model_network(f):
    """The model path, or a model cache, is on network or FUSE storage.

    Looked at: `--model PATH` when given; else the Hugging Face cache ($HF_HUB_CACHE, else
    $HF_HOME/hub, else ~/.cache/huggingface/hub), Ollama's models ($OLLAMA_MODELS, else
    ~/.ollama/models) and the Ollama Linux service's /usr/share/ollama/.ollama/models, those of
    them that exist (the environment is read on a live check only). Links are followed first
    (a cache folder linked onto an NFS share is on NFS); the mount that holds the path is the
    longest mount point above it in /proc/self/mountinfo.

    Network storage: NFS, SMB/CIFS, Lustre, CephFS, GPFS, WEKA, BeeGFS, GlusterFS, AFS, 9p and
    virtiofs (a VM's or WSL's shared folders) and FUSE filesystems other than the local ones
    (lxcfs, fuse-overlayfs, snapfuse/squashfuse, bindfs, mergerfs, the desktop portals).
    Safetensors and llama.cpp load by mmap by default, and each page fault there is a small
    synchronous read over the network: loads 3 to 50 times slower than reading the files whole
    (huggingface/safetensors#562, where the maintainer names network disks and 4 KiB page reads;
    llama.cpp PR#14396; vLLM PR#24469 and PR#36012, SGLang PR#7469 measure the difference). A
    second load can look fast: the page cache keeps what the first one read, and the next load
    after a reboot or eviction pays again. Medium: it costs minutes at start, not correctness.

    NFS read-ahead: since Linux 5.4 (commit c128e575514c, "NFS: Optimise the default readahead
    size") an NFS mount's backing device reads ahead 128 KiB (VM_READAHEAD_PAGES), where it was
    15 × rsize (15 MiB with rsize=1M) before; below 1 MiB the finding says so and gives the
    fix: write /sys/class/bdi/MAJ:MIN/read_ahead_kb now (MAJ:MIN is the mount's device number,
    mountinfo's third field, Documentation/ABI/testing/sysfs-class-bdi), and install the udev
    rule amazon-ec2-utils and Azure use, which sets it for every NFS backing device as it
    appears (matched against /proc/fs/nfsfs/volumes), named to run after nfs-utils'
    99-nfs.rules; where nfs-utils ships nfsrahead(5) its [nfsrahead] section of /etc/nfs.conf
    is the other way, and the finding names it.

    Locks, where the Hugging Face cache lives there: huggingface_hub locks each download with
    flock() on a file under .locks. NFS mounted with `nolock` or `local_lock=flock|all` keeps
    those locks on this machine only, so two hosts filling one shared cache can write the same
    file at once; Lustre without `flock` (or `localflock`) in its mount options (llite's
    ll_show_options writes them when set, lustre/llite/llite_lib.c) refuses flock()
    with ENOSYS, which huggingface_hub before 0.24 turned into "OSError: [Errno 38] Function
    not implemented" (huggingface/huggingface_hub#2399, fixed by falling back to lock files in
    PR#2402); an NFS server without a reachable lock manager gives "[Errno 37] No locks
    available" (huggingface/datasets#2618).

    Fix (advice: the storage is chosen by whoever set the host up): copy the model to local
    NVMe, or load without mmap: vLLM `--safetensors-load-strategy eager` (or `prefetch`),
    SGLang `--weight-loader-disable-mmap`, llama.cpp `--no-mmap`. Local NVMe read-ahead and
    schedulers are storage.scheduler's. Inside a container the mounts and backing devices are
    visible and judged; the read-ahead is the host's to change. In an image nothing is mounted:
    skipped.

    References: Documentation/filesystems/proc.rst and proc_pid_mountinfo(5) (field 3,
    major:minor, st_dev); Documentation/ABI/testing/sysfs-class-bdi (read_ahead_kb, "value of
    st_dev on non-block filesystems which provide their own BDI, such as NFS and FUSE"); kernel
    commit c128e575514c (v5.4); nfsrahead(5); nfs(5) (nolock, local_lock); Azure/AgentBaker
    PR#3963; vLLM LoadConfig (safetensors_load_strategy).
    """
    storage = f.model_storage
    if not storage.places:
        looked = ", ".join("%s (%s)" % (path, why) for path, why in storage.absent)
        return Skip("no model path here: %s" % (looked + " not found" if looked else "none looked for"))
    remote = [(place, network_kind(place.mount)) for place in storage.places]
    remote = [(place, kind) for place, kind in remote if kind]
    if not remote:
        return Pass(
            "models load from local storage: %s"
            % "; ".join("%s on %s (%s)" % (p.path, p.mount.mountpoint, p.mount.fstype) for p in storage.places)
        )
    fixes = f.fixes
    message = []
    evidence = []
    steps = []
    slow_ra = []
    for place, kind in remote:
        mount = place.mount
        where = place.path if place.resolved in (None, place.path) else "%s (-> %s)" % (place.path, place.resolved)
        message.append(
            "%s, %s, is on %s: %s from %s mounted at %s." % (where, place.why, kind, mount.fstype, mount.source, mount.mountpoint)
        )
        if place.note:
            message.append("Its path %s." % place.note)
        evidence.append(
            Evidence(
                f.mounts.source,
                "%s %s %s %s" % (mount.mountpoint, mount.fstype, mount.source, ",".join(sorted(mount.super_options | mount.options))),
            )
        )
        if mount.fstype in ("nfs", "nfs4") and place.read_ahead_kb is not None and place.read_ahead_kb < NFS_READ_AHEAD_LOW_KB:
            slow_ra.append(place)
            message.append(
                "Its read-ahead is %d KiB (%s): since Linux 5.4 NFS reads ahead 128 KiB by default, where it read 15 × rsize before."
                % (place.read_ahead_kb, place.read_ahead_path)
            )
            evidence.append(Evidence(place.read_ahead_path, str(place.read_ahead_kb)))
        if place.hf_cache:
            lock = _lock_problem(mount)
            if lock:
                message.append(lock)
    message.append(
        "Safetensors and llama.cpp load by mmap by default, and each page fault there is a small synchronous read over the "
        "network: loads run several times slower than reading the files whole. A second load can look fast only because "
        "the page cache kept the first one's reads."
    )
    if slow_ra:
        paths = sorted({p.read_ahead_path for p in slow_ra})
        steps += fixes.sysfs(paths, str(NFS_READ_AHEAD_KB), "Read ahead %d MiB on the NFS mount" % (NFS_READ_AHEAD_KB // 1024))
        name = _nfs_rules_name(f)
        steps.append(
            fixes.step(
                "Read ahead %d MiB on every NFS mount as it is mounted, with a udev rule" % (NFS_READ_AHEAD_KB // 1024),
                [WriteFile("/etc/udev/rules.d/%s" % name, (NFS_UDEV_RULE,), True), Run(("udevadm", "control", "--reload"), NOW)],
                True,
            )
        )
        if f.model_storage.nfsrahead:
            message.append(
                "nfs-utils' nfsrahead is installed: its [nfsrahead] section in /etc/nfs.conf (nfs=%d, nfs4=%d) sets the same at mount time."
                % (NFS_READ_AHEAD_KB, NFS_READ_AHEAD_KB)
            )
    steps.append(
        fixes.advice(
            "Load without mmap, or from local disk: copy the model to local NVMe, or use vLLM --safetensors-load-strategy eager "
            "(or prefetch), SGLang --weight-loader-disable-mmap, llama.cpp --no-mmap (in the server's launch options, so it lasts)",
            needs_root=False,
            persistent=True,
        )
    )
    return Issue(" ".join(message), evidence, steps, impact=len(remote))


def _lock_problem(mount):
    """How file locks fail for huggingface_hub on ``mount``, in words, or None."""
    options = mount.options | mount.super_options
    if mount.fstype in ("nfs", "nfs4"):
        local = next((o for o in ("nolock", "local_lock=all", "local_lock=flock") if o in options), None)
        if local:
            return (
                "It is mounted with %s: huggingface_hub's download locks (flock on files under .locks) only exclude "
                "processes on this machine, so two hosts filling this shared cache can write the same file at once." % local
            )
        return None
    if mount.fstype == "lustre" and not ({"flock", "localflock"} & options):
        return (
            "Lustre is mounted without flock: flock() fails with ENOSYS, which huggingface_hub before 0.24 reports as "
            '"OSError: [Errno 38] Function not implemented" when it locks a download (huggingface/huggingface_hub#2399).'
        )
    return None


def _nfs_rules_name(f) -> str:
    """A rules file name that sorts after nfs-utils' 99-nfs.rules (its nfsrahead sets the
    read-ahead too, and the last rule to write it wins)."""
    return name_after(["99-nfs.rules"], NFS_RULES_FILE) or "99-zz-" + NFS_RULES_FILE
