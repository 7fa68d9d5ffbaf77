"""Resource limits of the serving process: open files, locked memory, processes and threads.

Each check judges the process that serves (doctor/facts/limits.py says how it is chosen) and
says which one it judged; aidoctor's own limits only where no server was found.
"""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.limits import (
    CAP_IPC_LOCK,
    CAP_SYS_ADMIN,
    CAP_SYS_RESOURCE,
    KERNEL_HARD_NOFILE,
    MEMLOCK,
    NOFILE,
    NPROC,
    SERVING_UNITS,
    SYSTEMD_HARD_NOFILE,
    SYSTEMD_HARD_NOFILE_SINCE,
    name_after,
    pam_source,
)
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip
from ai_doctor.remedy.actions import Run, WriteFile
from ai_doctor.units import page_size

# vLLM's and SGLang's set_ulimit() raise the soft open-files limit to this, up to the hard one.
NOFILE_WANTED = 65535
# What the fixes set: the kernel's default fs.nr_open, above which setrlimit fails.
NOFILE_FIX = 1048576
# Below this many tasks a multi-GPU server runs short of threads (vllm#6295: 4096).
TASKS_WANTED = 8192
NPROC_FIX = 65536
DROP_IN = "/etc/systemd/system/%s.d/%s"
PAM_DIR = "/etc/security/limits.d"


def _amount(value, item: str) -> str:
    if value is None:
        return "unlimited"
    return page_size(value) if item == MEMLOCK else str(value)


def _who(process, container, start: bool = False) -> str:
    """The judged process in words; ``start``: for the start of a sentence."""
    if process.kind != "self":
        return process.label
    if container:
        text = "this container (read from this process, whose limits a server started here inherits)"
    else:
        text = "this process (aidoctor's own session: no serving unit or server process was found)"
    return text[0].upper() + text[1:] if start else text


def _self_note(process, container, row: str) -> str:
    """For this process on a host: that it stands in for a server not found, and what to check."""
    if process.kind != "self" or container:
        return ""
    return "; only a server started from this session inherits it: check the server's own with `grep '%s' /proc/PID/limits`" % row


def _row(process, item: str):
    return Evidence(process.path, process.rows.get(item, ""))


def _configured(f, process, item: str):
    """Evidence of the configuration that gives ``process`` its limit: its unit's LimitXXX=, or
    systemd's DefaultLimitXXX=, or the limits.conf lines for a login session."""
    config = f.limits_config
    if not config:
        return []
    if process.unit is not None:
        setting = config.units.get(process.unit, {}).get(item) or config.defaults.get(item)
        return [Evidence(setting.path, setting.text, setting.line)] if setting else []
    if process.kind == "self":
        lines = [line for line in config.pam if line.item == item]
        if process.uid is not None:
            lines = [line for line in lines if pam_source(line.domain, process.uid, process.user) is not None]
        return [Evidence(line.path, line.text, line.line) for line in lines][:6]
    return []


def _unread(processes) -> str:
    return "; ".join("%s at %s: %s" % (p.label, p.path, p.problem) for p in processes.unread)


def _judged(f, what: str):
    """The serving processes whose limits were read, or the Skip that says why none were."""
    processes = f.process_limits
    if not processes:
        return Skip(processes.reason)
    if not processes.judged:
        return Skip(
            "could not read the limits of %s (%s), so %s is not judged"
            % (", ".join(p.label for p in processes.unread), _unread(processes), what)
        )
    return processes


def _pass(processes, said: str):
    note = said
    if processes.unread:
        note += "; not read: " + _unread(processes)
    return Pass(note)


# -- fixes ----------------------------------------------------------------------------


def _unit_steps(f, unit: str, topic: str, key: str, value: str, runtime: bool):
    config = f.limits_config
    name = config.dropin_name(unit, topic) if config else "90-aidoctor-%s.conf" % topic
    path = DROP_IN % (unit, name)
    actions = [WriteFile(path, ("[Service]", "%s=%s" % (key, value)), True)]
    if f.running:
        actions += [Run(("systemctl", "daemon-reload")), Run(("systemctl", "restart", unit))]
    summary = "Set %s=%s for %s in a systemd drop-in (%s)" % (key, value, unit, path)
    if f.running:
        summary += ", then reload systemd and restart %s" % unit
        if runtime:
            summary += ": containers started after that inherit the new limit, running ones keep theirs"
    return [f.fixes.step(summary, actions, True, host_wide=False)]


def _pam_lines(f, item: str):
    """What a limits.d file for one user sets, as ((type, value) …) and in words: for nofile
    only the hard limit, which vLLM and SGLang raise their soft one to."""
    if item == NOFILE:
        fix = _nofile_fix(f)
        return (("hard", str(fix)),), "a hard open-files limit of %d" % fix
    if item == MEMLOCK:
        return (("soft", "unlimited"), ("hard", "unlimited")), "an unlimited locked-memory limit"
    return (("soft", str(NPROC_FIX)), ("hard", str(NPROC_FIX))), "a process limit of %d" % NPROC_FIX


def _session_steps(f, process, item: str, key: str, value: str):
    """The fix for this process on a host: a limits.d file for the one user it runs as (never
    ``*``, every account), where a PAM service loads pam_limits; else advice."""
    unit = f.fixes.advice(
        "Or, for a server run as a systemd service, which takes %s= from its unit and not from limits.conf: add `[Service]` "
        "`%s=%s` in a drop-in (`systemctl edit UNIT`) and restart it" % (key, key, value)
    )
    pairs, what = _pam_lines(f, item)
    stacks = f.pam_limits_stacks
    user = process.user
    if user is None or not _plain_name(user):
        # A domain of pam_limits that is not a plain name is more than one user: `*` every
        # account, `@name` and `%name` a group. Such a line is never written.
        why = "which has no name in /etc/passwd" if user is None else "whose name in /etc/passwd is not a plain user name"
        lines = ", ".join("`NAME %s %s %s`" % (kind, item, amount) for kind, amount in pairs)
        return [
            f.fixes.advice(
                "Give %s only to the user that runs the server (aidoctor runs as uid %s, %s): %s "
                "in a file under %s, with NAME that user's name; not `*`, which would give it to every account"
                % (what, process.uid if process.uid is not None else "unknown", why, lines, PAM_DIR)
            ),
            unit,
        ]
    if isinstance(stacks, tuple) and not stacks:
        return [
            f.fixes.advice(
                "No PAM service here loads pam_limits (no session line in /etc/pam.d names pam_limits.so), so no limits.conf "
                "file reaches a session: give the server %s where it is started (the program that starts it, as root: "
                "`prlimit` or `ulimit` before it drops to its user)" % what
            ),
            unit,
        ]
    config = f.limits_config
    # pam_limits reads limits.d in name order; a later line for the same user and item wins.
    # One file per user, so a fix run as another user never replaces this one's line.
    path = "%s/%s" % (PAM_DIR, name_after("aidoctor-%s-%s" % (item, user), config.pam_names if config else ()))
    lines = tuple("%s  %s  %s  %s" % (user, kind, item, amount) for kind, amount in pairs)
    if stacks:
        names = ", ".join(name.rsplit("/", 1)[-1] for name in stacks[:4]) + (" …" if len(stacks) > 4 else "")
        through = "pam_limits reads it when a session of %s starts through %s" % (user, names)
    else:
        through = "pam_limits reads it when a session of %s starts through a PAM service that loads it" % user
    summary = (
        "Set %s for %s alone, the user aidoctor runs as (a server run by another user needs that user's name), in %s: %s, "
        "so it reaches sessions started after it, not a running one or a server started otherwise" % (what, user, path, through)
    )
    return [f.fixes.step(summary, [WriteFile(path, lines, True)], True, host_wide=False), unit]


def _plain_name(user: str) -> bool:
    """Letters, digits and . _ - only: one user to pam_limits, and a safe part of a file name."""
    return 0 < len(user) <= 32 and user.isascii() and user.replace("_", "a").replace("-", "a").replace(".", "a").isalnum()


def _steps(f, process, item: str):
    """The fix for ``process``'s limit of ``item``, right for where it runs."""
    key, value, docker = {
        NOFILE: ("LimitNOFILE", str(_nofile_fix(f)), "--ulimit nofile=%d:%d" % (_nofile_fix(f), _nofile_fix(f))),
        MEMLOCK: ("LimitMEMLOCK", "infinity", "--ulimit memlock=-1"),
        NPROC: ("LimitNPROC", "infinity", "--ulimit nproc=%d:%d" % (NPROC_FIX, NPROC_FIX)),
    }[item]
    container = f.container
    in_container = bool(container and container.detected)
    if process.unit is not None:
        steps = _unit_steps(f, process.unit, item, key, value, process.kind == "runtime")
        if process.kind == "runtime":
            steps.append(
                f.fixes.advice("Or start each container that needs it with `%s` (docker run, podman run)" % docker, needs_root=False)
            )
        return steps
    if in_container:
        return [
            f.fixes.advice(
                "Start the container with `%s` (docker run, podman run; or default-ulimits in /etc/docker/daemon.json). "
                "Kubernetes has no per-pod limit of this kind: set %s=%s in a drop-in for containerd.service on the node "
                "and restart containerd" % (docker, key, value),
                host_wide=True,
            )
        ]
    if process.kind == "server":
        return [
            f.fixes.advice(
                "Raise it where %s is started: %s=%s in its systemd unit, or `%s` for its container" % (process.label, key, value, docker)
            )
        ]
    return _session_steps(f, process, item, key, value)


def _mlock_advice(f, process, in_container: bool):
    """Words only, for a finite locked-memory limit without RDMA: nothing needs more unless a
    model is locked in RAM, and then only the server does."""
    lead = "Only if a model is to be locked in RAM (llama.cpp --mlock, Ollama use_mlock): "
    if process.unit is not None and process.kind == "runtime":
        text = "start the container that locks it with `--ulimit memlock=-1`, or set LimitMEMLOCK=infinity in a drop-in for %s" % (
            process.unit
        )
    elif process.unit is not None:
        text = "raise it for %s alone with `[Service]` `LimitMEMLOCK=infinity` in a drop-in (`systemctl edit %s`), then restart it" % (
            process.unit,
            process.unit,
        )
    elif in_container:
        text = "start the container with `--ulimit memlock=-1` (docker run, podman run)"
    elif process.kind == "server":
        text = "raise it where %s is started: LimitMEMLOCK=infinity in its systemd unit, or `--ulimit memlock=-1` for its container" % (
            process.label
        )
    else:
        name = process.user or "NAME"
        text = (
            "raise it only for the user that runs the server: `%s soft memlock unlimited` and `%s hard memlock unlimited` in a "
            "file under %s (read by pam_limits when a session of that user starts), or LimitMEMLOCK=infinity in the server's "
            "systemd unit" % (name, name, PAM_DIR)
        )
    text += ". Never for every account (`*` in limits.conf): any local user could then pin all of memory"
    return [f.fixes.advice(lead + text, host_wide=in_container)]


def _nofile_fix(f) -> int:
    config = f.limits_config
    nr_open = config.nr_open if config else None
    return min(NOFILE_FIX, nr_open) if nr_open else NOFILE_FIX


# -- limits.nofile --------------------------------------------------------------------


@rule(
    "limits.nofile",
    "Open-files hard limit below 65535",
    Severity.MEDIUM,
    needs=("running",),
    uses=("process_limits", "limits_config", "pam_limits_stacks", "container", "fixes"),
)
def nofile(f):
    """The hard open-files limit (RLIMIT_NOFILE) of the serving process is below 65535.

    vLLM and SGLang call `set_ulimit(65535)` at start, which raises the *soft* limit to 65535
    but passes the current hard limit unchanged (`resource.setrlimit(RLIMIT_NOFILE,
    (target_soft_limit, current_hard))`: vllm-project/vllm vllm/utils/system_utils.py, adapted
    from sgl-project/sglang python/sglang/srt/utils.py), so a hard limit below it fails with
    "Found ulimit of … and failed to automatically increase" and, under load, `OSError: [Errno
    24] Too many open files` (vllm#7920 with ZMQ at 800 streams; verl#2047 with Ray's log
    files; pytorch#137695). Medium: the server starts, then drops requests or workers.

    Which process: a running serving unit (ollama, vllm, sglang, tritonserver .service), the
    container runtime (containerd.service, else docker.service: containers inherit its limits
    unless started with `--ulimit`), a server process found by name (ollama, llama-server,
    tritonserver, raylet) inside a container, and only otherwise this process, which the
    message says (a server started by hand from a shell has that shell's limits, so the server's
    own are worth a look). A unit whose limits cannot be read is named, never passed. Traps:
    systemd 240 and later give services 1024:524288 (soft:hard, PR #10244): the hard limit is
    fine and the soft one is what vLLM raises; `ulimit -n` in a shell does not reach services
    or Ray workers started elsewhere (vllm#878); /etc/security/limits.conf applies to login
    sessions only, through a PAM service that loads pam_limits.so (pam_limits(8)): not to a
    session an agent or init started without PAM.

    In an image the configuration is judged: each installed serving unit's LimitNOFILE=, else
    DefaultLimitNOFILE= in /etc/systemd/system.conf and its drop-ins, else systemd's own
    default when its version can be told from libsystemd-shared-NNN.so (524288 since 240,
    the kernel's 4096 before); otherwise the check skips.

    Fix: a systemd drop-in with `LimitNOFILE=1048576` (fs.nr_open's default, the most
    setrlimit accepts) for the unit and a restart; for containers `--ulimit
    nofile=1048576:1048576`; for this process a limits.d line for the one user it runs as
    (`NAME hard nofile 1048576`, never `*`, every account), offered only where a PAM service
    loads pam_limits.so (else words: nothing applies limits.conf to a session there).
    """
    if not f.running:
        return _image_nofile(f)
    processes = _judged(f, "the open-files limit")
    if isinstance(processes, Skip):
        return processes
    in_container = bool(f.container and f.container.detected)
    issues, fine = [], []
    for process in processes.judged:
        limit = process.limits.get(NOFILE)
        if limit is None:
            continue
        if limit.hard is None or limit.hard >= NOFILE_WANTED:
            fine.append("%s: hard %s" % (process.label, _amount(limit.hard, NOFILE)))
            continue
        message = (
            "%s has a hard open-files limit of %d (soft %s). vLLM and SGLang raise their soft limit to %d at start, but "
            'only up to the hard limit: they log "Found ulimit of … failed to automatically increase" and fail under load '
            'with "OSError: [Errno 24] Too many open files" (sockets, ZMQ queues, Ray workers\' logs)'
            % (_who(process, in_container, True), limit.hard, _amount(limit.soft, NOFILE), NOFILE_WANTED)
        )
        message += _self_note(process, in_container, "Max open files")
        if process.kind == "runtime":
            message += "; containers it starts inherit this limit unless given --ulimit nofile (or daemon.json default-ulimits)"
        issues.append(
            Issue(
                message + ".",
                [_row(process, NOFILE)] + _configured(f, process, NOFILE),
                _steps(f, process, NOFILE),
                impact=NOFILE_WANTED - limit.hard,
            )
        )
    if issues:
        return issues
    if not fine:
        return Skip('no "Max open files" row in the limits read (%s)' % ", ".join(p.path for p in processes.judged))
    return _pass(processes, "judged %s" % "; ".join(fine))


def _image_nofile(f):
    config = f.limits_config
    version = config.systemd_version
    default = config.defaults.get(NOFILE)
    issues, fine = [], []
    for unit in SERVING_UNITS:
        if unit not in config.units:
            continue
        setting = config.units[unit].get(NOFILE) or default
        if setting is not None:
            hard, evidence = setting.limit.hard, [Evidence(setting.path, setting.text, setting.line)]
            source = "%s= in %s" % (setting.key, setting.path)
        elif version is not None:
            hard = SYSTEMD_HARD_NOFILE if version >= SYSTEMD_HARD_NOFILE_SINCE else KERNEL_HARD_NOFILE
            evidence, source = [], "systemd %d's default" % version
        else:
            continue
        if hard is not None and hard < NOFILE_WANTED:
            message = (
                "%s will start with a hard open-files limit of %d (%s). vLLM and SGLang raise their soft limit to %d only "
                'up to the hard limit, and fail under load with "OSError: [Errno 24] Too many open files".'
                % (unit, hard, source, NOFILE_WANTED)
            )
            steps = _unit_steps(f, unit, NOFILE, "LimitNOFILE", str(NOFILE_FIX), False)
            issues.append(Issue(message, evidence, steps, impact=NOFILE_WANTED - hard))
        else:
            fine.append("%s: hard %s (%s)" % (unit, _amount(hard, NOFILE), source))
    if issues:
        return issues
    if fine:
        return Pass("in the image, " + "; ".join(fine))
    if default is not None:
        hard = default.limit.hard
        if hard is not None and hard < NOFILE_WANTED:
            message = (
                "Services in this image will start with a hard open-files limit of %d (%s= in %s), below the %d that "
                "vLLM and SGLang raise their soft limit to." % (hard, default.key, default.path, NOFILE_WANTED)
            )
            step = f.fixes.advice(
                "Raise %s in %s to %d, or set LimitNOFILE=%d in the serving unit" % (default.key, default.path, NOFILE_FIX, NOFILE_FIX)
            )
            return Issue(message, [Evidence(default.path, default.text, default.line)], [step], impact=NOFILE_WANTED - hard)
        return Pass(
            "services in the image get a hard open-files limit of %s (%s= in %s)" % (_amount(hard, NOFILE), default.key, default.path)
        )
    if version is not None and version >= SYSTEMD_HARD_NOFILE_SINCE:
        return Pass("services in the image get systemd %d's hard open-files limit of %d" % (version, SYSTEMD_HARD_NOFILE))
    return Skip(
        "an image: no serving unit or DefaultLimitNOFILE= is configured and systemd's version is not known, "
        "so the limit services get cannot be told"
    )


# -- limits.memlock -------------------------------------------------------------------


@rule(
    "limits.memlock",
    "Locked-memory limit too low for RDMA memory registration",
    Severity.HIGH,
    needs=("running",),
    uses=("process_limits", "rdma_devices", "limits_config", "pam_limits_stacks", "container", "fixes"),
)
def memlock(f):
    """RDMA devices exist (/sys/class/infiniband) and the serving process's locked-memory
    limit (RLIMIT_MEMLOCK) is not unlimited, while CAP_IPC_LOCK is not effective for it.

    Every RDMA memory registration (ibv_reg_mr: NCCL's InfiniBand/RoCE transport, UCX,
    GPUDirect RDMA) pins pages counted against RLIMIT_MEMLOCK unless the process has
    CAP_IPC_LOCK (drivers/infiniband/core/umem.c, ib_umem_get: `new_pinned > lock_limit &&
    !capable(CAP_IPC_LOCK)` → -ENOMEM). It fails with "Cannot allocate memory" ("NCCL WARN Call
    to ibv_reg_mr … failed", UCX: "Please set max locked memory (ulimit -l) to 'unlimited'";
    NVIDIA/nccl-tests#206 with `ulimit -l` 8192, vllm PR#42075). High for a serving unit or
    server on an RDMA host: multi-node and disaggregated serving fail or fall back to TCP
    sockets. Medium when the process judged only stands in for the server: the container
    runtime (containers started with `--ulimit memlock=-1`, as NVIDIA's NGC containers are told
    to be, do not inherit it), or this process where no server was found (the message says to
    check the server's own limit: a shell's limit is not the server's, and a ConnectX card with
    mlx5_ib is listed in /sys/class/infiniband even when it carries only Ethernet). Info for a
    finite limit without RDMA: llama.cpp's `--mlock` and Ollama's `use_mlock` cannot lock a
    model larger than it ("failed to mlock … Try increasing RLIMIT_MEMLOCK"); its fix is advice
    in words only, for the server alone.

    Traps: the kernel's default is 8 MiB since Linux 5.16 (commit 9dcc38e2813e, "Increase
    default MLOCK_LIMIT to 8 MiB", include/uapi/linux/resource.h MLOCK_LIMIT; 64 KiB before),
    not zero; CAP_IPC_LOCK counts only when effective (bit 14 of CapEff in /proc/PID/status):
    granting it to a non-root user in a pod does nothing (NVIDIA/nvcf PR#1354); the soft limit
    is the one enforced. An image skips: RDMA devices and effective limits are runtime facts.

    Fix: `LimitMEMLOCK=infinity` in a drop-in for the serving unit (or for containerd.service,
    whose limits containers inherit: Kubernetes has no per-pod ulimit), `--ulimit memlock=-1`
    for a container, or for this process a limits.d file for the one user it runs as (`NAME
    soft/hard memlock unlimited`, where a PAM service loads pam_limits.so). Never `*`: every
    local account could then pin all of memory. Granting CAP_IPC_LOCK instead is a security
    judgement left to the administrator.
    """
    if not f.running:
        return Skip("an image, not a running system: RDMA devices and the limits of running processes are known on the running host")
    processes = _judged(f, "the locked-memory limit")
    if isinstance(processes, Skip):
        return processes
    rdma = f.rdma_devices
    if not isinstance(rdma, tuple):
        return Skip(rdma.reason)
    in_container = bool(f.container and f.container.detected)
    issues, fine = [], []
    for process in processes.judged:
        limit = process.limits.get(MEMLOCK)
        if limit is None:
            continue
        if limit.soft is None:
            fine.append("%s: unlimited" % process.label)
            continue
        if process.capable(CAP_IPC_LOCK):
            fine.append("%s: %s, but CAP_IPC_LOCK is effective, which exempts it" % (process.label, _amount(limit.soft, MEMLOCK)))
            continue
        amount = "%s (hard %s)" % (_amount(limit.soft, MEMLOCK), _amount(limit.hard, MEMLOCK))
        evidence = [_row(process, MEMLOCK)] + _configured(f, process, MEMLOCK)
        if process.status_path:
            evidence.append(
                Evidence(process.status_path, "CapEff without CAP_IPC_LOCK (bit 14)" if process.cap_eff is not None else "CapEff not read")
            )
        if rdma:
            evidence.insert(0, Evidence("/sys/class/infiniband", " ".join(rdma[:8])))
            message = (
                "RDMA devices are present (%s) and %s has a locked-memory limit of %s without CAP_IPC_LOCK. Every RDMA "
                "memory registration (NCCL over InfiniBand/RoCE, UCX, GPUDirect RDMA) pins pages counted against it, and "
                'fails with "Cannot allocate memory" once they pass it (NCCL: "Call to ibv_reg_mr … failed"; UCX asks for '
                "'ulimit -l unlimited')" % (", ".join(rdma[:4]) + (" …" if len(rdma) > 4 else ""), _who(process, in_container), amount)
            )
            severity = Severity.HIGH
            if process.kind == "runtime":
                message += "; containers it starts inherit this limit unless given --ulimit memlock=-1"
                severity = Severity.MEDIUM
            elif process.kind == "self" and in_container:
                message += "; no server process was found in this container: a server started in it gets this limit"
                severity = Severity.MEDIUM
            elif process.kind == "self":
                message += _self_note(process, in_container, "Max locked memory") + (
                    ", and whether RDMA is used at all: a ConnectX card with mlx5_ib is listed in /sys/class/infiniband even "
                    "when it carries only Ethernet"
                )
                severity = Severity.MEDIUM
            issues.append(Issue(message + ".", evidence, _steps(f, process, MEMLOCK), severity=severity, impact=1))
        else:
            message = (
                "%s has a locked-memory limit of %s. No RDMA device is present, so nothing here needs more unless a model "
                "is locked in RAM: llama.cpp's --mlock and Ollama's use_mlock cannot lock more than that (\"failed to mlock "
                '… Try increasing RLIMIT_MEMLOCK").' % (_who(process, in_container, True), amount)
            )
            title = "Locked-memory limit caps mlock of a model"
            issues.append(Issue(message, evidence, _mlock_advice(f, process, in_container), severity=Severity.INFO, title=title))
    if issues:
        return issues
    if not fine:
        return Skip('no "Max locked memory" row in the limits read (%s)' % ", ".join(p.path for p in processes.judged))
    return _pass(processes, "judged %s" % "; ".join(fine))


# -- limits.pids ----------------------------------------------------------------------


@rule(
    "limits.pids",
    "Process and thread limits hit, or too low for multi-GPU serving",
    Severity.HIGH,
    needs=("running",),
    uses=("process_limits", "pids_limits", "limits_config", "pam_limits_stacks", "gpus", "container", "fixes"),
)
def pids(f):
    """The pids cgroup of the serving process already refused a fork or thread (`pids.events`
    `max` above 0), or, on a host with two or more GPUs, its pids.max or RLIMIT_NPROC is
    below 8192.

    pids.events' `max` counts the times a fork/clone was refused at pids.max
    (Documentation/admin-guide/cgroup-v2.rst, "PID"; cgroup-v1/pids.rst): threads already
    failed to start ("pthread_create failed: Resource temporarily unavailable", Python's
    "can't start new thread"), high. Each level from the process's cgroup up to the top of the
    mount is read (a limit on a parent applies too); without the cgroup2 mount option
    pids_localevents a parent's count covers every refusal in its subtree. Tensor-parallel serving starts several processes per GPU, each
    with dozens of threads (OpenMP, NCCL, tokenizers): a limit of 4096 broke vLLM (vllm#6295),
    so below 8192 on a multi-GPU host is medium. RLIMIT_NPROC ("Max processes") counts every
    thread of the user, host-wide, and is not enforced for root or a process with
    CAP_SYS_ADMIN or CAP_SYS_RESOURCE (kernel/fork.c, copy_process), which is not judged.
    Trap: "can't start new thread" in old Docker with a new glibc is a seccomp refusal of
    clone3 (LlamaFactory#3859), not a limit.

    Which process: as limits.nofile; inside a container its own cgroup (cgroup namespace). An
    image skips: cgroups exist on the running system.

    Fix: for a service whose own cgroup holds the limit, `TasksMax=infinity` in a drop-in,
    applied to the running unit with `systemctl set-property --runtime` (no restart); for
    another systemd slice, `systemctl set-property NAME TasksMax=infinity` (kept under
    /etc/systemd/system.control, applied now); `--pids-limit -1`
    (or a larger number) for a container, the kubelet's podPidsLimit in Kubernetes;
    `LimitNPROC=infinity` for a unit, or for this process a limits.d file for the one user it
    runs as (never `*`), where a PAM service loads pam_limits.so.
    """
    if not f.running:
        return Skip("an image, not a running system: cgroups and the limits of running processes exist on the running host")
    processes = _judged(f, "the process limit")
    if isinstance(processes, Skip):
        return processes
    paths = f.pids_limits
    paths = paths if isinstance(paths, tuple) else ()
    gpus = f.gpus
    count = gpus.count if gpus else None
    multi = count is not None and count >= 2
    in_container = bool(f.container and f.container.detected)
    issues, fine = [], []
    for path in paths:
        who = _who(path.process, in_container)
        hit = [level for level in path.levels if level.events]
        tightest = path.tightest
        if hit:
            level = max(hit, key=lambda item: item.events)
            limit = next((item for item in path.levels if item.max is not None and item.directory == level.directory), tightest)
            message = (
                "pids.events of cgroup %s counts %d fork or clone call%s refused at the limit: %s already failed to start "
                'a process or thread ("pthread_create failed: Resource temporarily unavailable", "can\'t start new thread")'
                % (level.cgroup, level.events, "" if level.events == 1 else "s", who)
            )
            if limit is not None:
                message += "; the limit is pids.max %d at %s%s" % (
                    limit.max,
                    limit.cgroup,
                    ", %d tasks now" % limit.current if limit.current is not None else "",
                )
            evidence = [Evidence(level.events_path, "max %d" % level.events)]
            if limit is not None:
                evidence.append(Evidence(limit.max_path, str(limit.max)))
            issues.append(
                Issue(message + ".", evidence, _pids_steps(f, limit or level, in_container), severity=Severity.HIGH, impact=level.events)
            )
        elif multi and tightest is not None and tightest.max < TASKS_WANTED:
            message = (
                "%s runs in cgroup %s whose pids.max is %d%s, on a host with %d GPUs: tensor-parallel serving starts several "
                'processes per GPU with dozens of threads each, and a limit of 4096 already broke vLLM ("pthread_create '
                'failed: Resource temporarily unavailable")'
                % (
                    _who(path.process, in_container, True),
                    tightest.cgroup,
                    tightest.max,
                    " (%d tasks now)" % tightest.current if tightest.current is not None else "",
                    count,
                )
            )
            issues.append(
                Issue(
                    message + ".",
                    [Evidence(tightest.max_path, str(tightest.max))],
                    _pids_steps(f, tightest, in_container),
                    severity=Severity.MEDIUM,
                    impact=TASKS_WANTED - tightest.max,
                )
            )
        else:
            if not path.levels:
                fine.append("%s: no pids.max or pids.events in its cgroups" % path.process.label)
            else:
                limit_words = "pids.max %d at %s" % (tightest.max, tightest.cgroup) if tightest else "no pids.max"
                fine.append("%s: %s, no refused forks" % (path.process.label, limit_words))
    for process in processes.judged:
        limit = process.limits.get(NPROC)
        if limit is None or limit.soft is None or limit.soft >= TASKS_WANTED or not multi:
            continue
        if process.uid == 0 or process.capable(CAP_SYS_ADMIN) or process.capable(CAP_SYS_RESOURCE):
            fine.append("%s: RLIMIT_NPROC %d, not enforced for it (root or CAP_SYS_ADMIN/CAP_SYS_RESOURCE)" % (process.label, limit.soft))
            continue
        message = (
            "%s has a process limit (RLIMIT_NPROC) of %d (hard %s) on a host with %d GPUs. It counts every thread of its user "
            "host-wide, and tensor-parallel serving starts several processes per GPU with dozens of threads each: threads "
            'fail to start ("pthread_create failed: Resource temporarily unavailable")'
            % (_who(process, in_container, True), limit.soft, _amount(limit.hard, NPROC), count)
        )
        message += _self_note(process, in_container, "Max processes")
        issues.append(
            Issue(
                message + ".",
                [_row(process, NPROC)] + _configured(f, process, NPROC),
                _steps(f, process, NPROC),
                severity=Severity.MEDIUM,
                impact=TASKS_WANTED - limit.soft,
            )
        )
    if issues:
        return issues
    if not paths and not any(NPROC in p.limits for p in processes.judged):
        return Skip("neither a pids cgroup nor a process limit could be read for %s" % ", ".join(p.label for p in processes.judged))
    if not multi:
        fine.append("GPU count %s: the 8192 floor applies to multi-GPU hosts" % (count if count is not None else "unknown"))
    return _pass(processes, "; ".join(fine))


def _pids_steps(f, level, in_container: bool):
    name = level.cgroup.rstrip("/").rsplit("/", 1)[-1]
    if in_container:
        return [
            f.fixes.advice(
                "Start the container with a larger limit: `--pids-limit -1` (no limit) or a number well above the threads it "
                "runs (docker run, podman run; podman's containers.conf pids_limit); in Kubernetes the kubelet's podPidsLimit",
                host_wide=True,
            )
        ]
    if name.endswith(".service") and level.cgroup == "/system.slice/" + name:
        config = f.limits_config
        path = DROP_IN % (name, config.dropin_name(name, "tasks") if config else "90-aidoctor-tasks.conf")
        actions = [WriteFile(path, ("[Service]", "TasksMax=infinity"), True)]
        summary = "Lift the task limit of %s: TasksMax=infinity in a systemd drop-in (%s)" % (name, path)
        if f.running:
            # set-property --runtime applies it to the running unit without a restart.
            actions += [Run(("systemctl", "daemon-reload")), Run(("systemctl", "set-property", "--runtime", name, "TasksMax=infinity"))]
            summary += ", then reload systemd and apply it to the running unit (set-property --runtime, no restart)"
        return [f.fixes.step(summary, actions, True, host_wide=False)]
    if name.endswith((".service", ".slice")) and level.cgroup.startswith(("/system.slice", "/user.slice", "/machine.slice")):
        return [
            f.fixes.step(
                "Lift the task limit of %s: systemctl set-property applies it now and keeps it under /etc/systemd/system.control" % name,
                [Run(("systemctl", "set-property", name, "TasksMax=infinity"))],
                True,
                host_wide=False,
            )
        ]
    return [f.fixes.advice("Raise pids.max of cgroup %s where whatever created it sets it (%s)" % (level.cgroup, level.max_path))]
