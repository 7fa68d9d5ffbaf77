"""Will the model fit in memory: RAM, what is available now, swap, the cgroup limit."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.cgroup import HIGH, MAX
from ai_doctor.facts.sysctl import commit_change, commit_room
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step
from ai_doctor.record import Record
from ai_doctor.remedy.actions import NOW, EditByHand, Run, Show, WriteKernel
from ai_doctor.units import gib, quantized_sizes


class _Problem(Record):
    """One way the model does not fit: how bad, in words, the bytes it has to fit in, and the
    cgroup limits behind it, worst first (none: the host's own memory)."""

    __slots__ = ("severity", "sentence", "capacity", "levels")
    _defaults = {"levels": ()}


@rule(
    "memory.headroom",
    "Not enough memory for the model",
    Severity.HIGH,
    needs=("model", "meminfo"),
    uses=("cgroup_memory", "releasable_pools", "sysctl", "container", "hostname", "fixes"),
)
def headroom(f):
    """The model is larger than the memory it can get.

    Critical when it exceeds all RAM (MemTotal) or a hard memory limit of a cgroup on the path
    from aidoctor's own cgroup to the root (memory.max in cgroup v2, memory.limit_in_bytes or
    memory.stat hierarchical_memory_limit in v1): it cannot be held in memory. At the limit the
    kernel reclaims the cgroup's page cache and swaps its anonymous memory out (as far as swap
    and memory.swap.max allow); when that frees too little, the OOM killer ends the loader.
    High when it exceeds MemAvailable plus free swap, or what a hard limit leaves: each limit
    is judged against the usage of the cgroup that carries it, which counts all its
    descendants, less its page cache (memory.stat active_file + inactive_file), which reclaim
    frees before the OOM killer acts, as MemAvailable counts the machine's; tmpfs and shared
    memory (/dev/shm) pages are not counted as reclaimable: memory.stat ``file`` includes them,
    but they can only go to swap and sit on the anon lists. The tightest limit binds. Medium
    when it only fits by using swap: it loads, slowly, and pages during inference.

    memory.high is a throttle, not a limit the OOM killer enforces: above it the cgroup is
    throttled and put under heavy reclaim. A model larger than memory.high is high (it is paged
    out while it serves); one larger than what memory.high leaves is medium (the load crawls).
    Limits at or above MemTotal are left to the RAM checks.

    The cgroup judged is the one aidoctor itself runs in (/proc/self/cgroup): inside the
    model server's container, pod or service unit that is the server's; from an ssh session it
    is the session's, and the server's own unit may be limited differently. When the cgroup
    cannot be read, the message says the limits went unchecked.

    A cgroup that has already OOM-killed processes says so: the oom_kill count of memory.events
    (v2) or memory.oom_control (v1) of aidoctor's own cgroup, else of the nearest cgroup above
    it that carries a memory limit. When the model does not fit (or fits tightly) the count and
    its file are added to the finding. When it fits, a count above zero is still a medium
    finding ("Memory cgroup has already OOM-killed processes"): the model was judged against
    what is in use now, and a cgroup that has run out of memory before shows a peak above
    that (a load in which each tensor-parallel rank reads whole shards, a second model, KV
    cache kept in host memory), which a look at one moment cannot see. The counter only grows,
    for as long as the cgroup lives: a kill from long ago still counts, which is why it is
    medium, not high.

    MemAvailable is the kernel's estimate of memory available without swapping; it excludes
    static huge page pools. Under strict overcommit (vm.overcommit_memory = 2) the model must
    also fit in CommitLimit − Committed_AS, or the allocation is refused at once: that is
    overcommit.strict-headroom's finding, and it is named here (never a bare "fits") without
    being counted twice. When the model does not fit, the message gives the sizes of
    quantized variants (int8, int4) and whether each fits without swap, strict overcommit
    included.

    References: Documentation/filesystems/proc.rst (MemAvailable); Documentation/admin-guide/
    cgroup-v2.rst, Memory Interface Files (memory.current: "the cgroup and its descendants";
    memory.high: "throttled and put under heavy reclaim pressure", "never invokes the OOM
    killer"; memory.max: the OOM killer "is invoked in the cgroup"; memory.stat file: "including
    tmpfs and shared memory", inactive_file/active_file: on "the internal memory management
    lists used by the page reclaim algorithm", "shmem pages are on anon memory management
    lists"; memory.events oom_kill: "processes belonging to this cgroup killed by any kind of
    OOM killer"); Documentation/admin-guide/cgroup-v1/memory.rst, 5.2 (hierarchical_memory_limit,
    total_<counter>, memory.oom_control) and 6 (hierarchical accounting). Page cache counted
    as used misled Ollama's own check (ollama/ollama#15474, #11497); OOM kills while loading:
    vllm-project/vllm#28923, ollama/ollama#11231.
    """
    model, mem = f.model, f.meminfo
    size = model.size
    total = mem.get("MemTotal", 0)
    available = mem.get("MemAvailable")
    estimated = available is None
    if estimated:  # kernels before 3.14 have no MemAvailable
        available = mem.get("MemFree", 0) + mem.get("Cached", 0)
    swap_free = mem.get("SwapFree", 0)
    cgroup = f.cgroup_memory
    # A limit at or above all RAM never binds before RAM does (and is how 32-bit kernels
    # spell "unlimited"): the MemTotal and MemAvailable checks cover it.
    levels = [level for level in cgroup.limits if not total or level.limit < total] if cgroup else []
    kills = cgroup.killed({level.cgroup for level in cgroup.limits}) if cgroup else None
    hard = [level for level in levels if level.kind == MAX]
    soft = [level for level in levels if level.kind == HIGH]

    problems = []
    if size > total:
        problems.append(_Problem(Severity.CRITICAL, "more than all of this host's RAM (MemTotal %s)" % gib(total), total))
    # Both kinds can bind at once: a hard limit the model overflows and a throttle below it.
    cgroup_problems = [p for p in (_over_limit(cgroup, hard, size, MAX), _over_limit(cgroup, soft, size, HIGH)) if p]
    problems += cgroup_problems
    if available + swap_free < size:
        problems.append(
            _Problem(
                Severity.HIGH,
                "more than is available now (%s %s%s)"
                % (
                    "MemFree + Cached" if estimated else "MemAvailable",
                    gib(available),
                    " + free swap %s" % gib(swap_free) if swap_free else ", no swap free",
                ),
                available + swap_free,
            )
        )
    if not problems and available < size:
        problems.append(
            _Problem(
                Severity.MEDIUM,
                "more than MemAvailable (%s): it only fits by using swap, and will page" % gib(available),
                available + swap_free,
            )
        )
    tightest = _tightest(hard)
    notes = " Could not read %s." % "; ".join(cgroup.notes) if cgroup and cgroup.notes else ""
    committable = commit_room(f.sysctl, mem)
    if committable is not None and size > committable:
        # Strict accounting refuses the allocation before any of this memory is touched; that
        # finding is overcommit.strict-headroom's, so it is said here, not counted twice.
        notes += (
            " Strict overcommit lets a loader commit only %s (CommitLimit − Committed_AS, less the admin and user "
            "reserves), so loading it into "
            "process memory fails with ENOMEM before then (overcommit.strict-headroom)." % gib(max(committable, 0))
        )
    if not cgroup:
        notes += " Cgroup memory limits were not checked: %s." % cgroup.reason
    elif cgroup.limits and not (f.container and f.container.detected):
        notes += (
            " These are the limits of the cgroup aidoctor ran in (%s); run it inside the model server's service or "
            "container to judge that one's." % cgroup.path
        )
    if not problems:
        blocked = committable is not None and size > committable
        # What the model is judged against: MemAvailable, or a cgroup limit's room where tighter.
        judged, judged_words = available, "MemFree + Cached" if estimated else "MemAvailable"
        if tightest is not None and _room(tightest) < judged:
            judged, judged_words = _room(tightest), "what the memory limit of %s leaves" % tightest.path
        margin = model.margin if model.margin is not None else max(judged // 20, 2 << 30)
        if not blocked and judged - size < margin:
            tight = _tight(f, model, judged, judged_words, margin, evidence_for(mem, cgroup, tightest))
            if kills is None:
                return tight
            return tight._replace(
                message=tight.message + " " + _killed_sentence(cgroup, kills),
                evidence=tuple(tight.evidence) + (_killed_evidence(kills),),
            )
        if blocked:
            pattern = "there is memory for the model (%s): %s %s of MemTotal %s"
        else:
            pattern = "the model (%s) fits: %s %s of MemTotal %s"
        note = pattern % (
            gib(size),
            "MemFree + Cached (no MemAvailable line)" if estimated else "MemAvailable",
            gib(available),
            gib(total),
        )
        if tightest is not None:
            note += "; the tightest cgroup limit (%s in %s) leaves %s" % (
                gib(tightest.limit),
                tightest.path,
                gib(tightest.headroom) if tightest.headroom is not None else "an unknown amount (usage unreadable)",
            )
        if kills is not None:
            return _killed_before(f, cgroup, kills, note)
        return Pass(note + ("." + notes if notes else ""))

    severity = min((p.severity for p in problems), key=lambda s: s.rank)
    # How far the model is over what it can get, for ranking.
    capacity = min([p.capacity for p in problems] + [_room(level) for level in hard])
    # "Fits" for a smaller variant means without swap or throttling: in what is available
    # now and under every limit; an unused pool's memory counts once it is released.
    rooms = [_room(level) for level in hard + soft]
    fit = min([available, total] + rooms)
    message = "The model needs %s: %s." % (model.described, "; ".join(p.sentence for p in problems))
    idle = sum(u.spare for u in f.releasable_pools)
    releases = bool(idle) and not cgroup_problems and size <= min(total, available + swap_free + idle)
    if idle:
        message += " Free huge pages that nothing needs hold %s out of MemAvailable (hugepages.unused, hugepages.shortfall)%s." % (
            gib(idle),
            ": released, they make room for the model" if releases else "",
        )
    commit = (committable, committable + commit_change(f.sysctl, idle)) if committable is not None else None
    quantized, fits = _quantized(model, fit, min([available + idle, total] + rooms), commit)
    if quantized:
        message += " " + quantized
    message += notes
    if kills is not None:
        message += " " + _killed_sentence(cgroup, kills)
    evidence = [Evidence(mem.path, "%s: %s" % (key, gib(mem.get(key)))) for key in ("MemTotal", "MemAvailable", "SwapFree") if key in mem]
    shown = [level for p in cgroup_problems for level in p.levels] or ([tightest] if tightest else [])
    for level in shown:
        evidence += _level_evidence(cgroup, level)
    if kills is not None:
        evidence.append(_killed_evidence(kills))
    steps = _steps(f, cgroup, size, problems, fits)
    if releases:
        steps.insert(
            0,
            Step(
                "Release the free huge pages nothing needs (%s): take the fix of hugepages.unused or hugepages.shortfall, "
                "and the model fits" % gib(idle),
                (),
                True,
                None,
            ),
        )
        steps[1] = steps[1]._replace(summary="Or " + steps[1].summary[0].lower() + steps[1].summary[1:])
    return Issue(message, evidence, steps, severity=severity, impact=size - capacity)


def evidence_for(mem, cgroup, level):
    evidence = [Evidence(mem.path, "%s: %s" % (key, gib(mem.get(key)))) for key in ("MemTotal", "MemAvailable", "SwapFree") if key in mem]
    return evidence + (_level_evidence(cgroup, level) if level is not None else [])


def _killed_sentence(cgroup, kills) -> str:
    """That the OOM killer has already acted in ``kills``' cgroup, in words."""
    own = kills.cgroup == (cgroup.path.rstrip("/") or "/")
    where = "this cgroup (%s)" % kills.cgroup if own else "cgroup %s, whose memory limit binds this one too" % kills.cgroup
    return "The OOM killer has already ended %d process%s in %s (%s: oom_kill %d, counted since the cgroup was made)." % (
        kills.count,
        "" if kills.count == 1 else "es",
        where,
        kills.path,
        kills.count,
    )


def _killed_evidence(kills):
    return Evidence(kills.path, "oom_kill %d" % kills.count)


def _killed_before(f, cgroup, kills, note):
    """The model fits now, in a cgroup that has already run out of memory."""
    message = (
        "%s, judged against the memory in use now. %s Memory ran out here before: a load's peak (each tensor-parallel rank "
        "reading whole shards, a second model, KV cache kept in host memory) can be well above what is in use at one "
        "moment, and the next one may be killed the same way." % (note[0].upper() + note[1:], _killed_sentence(cgroup, kills))
    )
    steps = [
        f.fixes.step(
            "See which processes the OOM killer ended, and when",
            [Show("dmesg -T | grep -i -e 'out of memory' -e 'oom-kill' -e 'killed process'", needs_root=True)],
            None,
            host_wide=True,
        ),
        Step(
            "Give the cgroup room for the load's peak (raise its memory limit), or load less at once (a quantized variant, "
            "pre-sharded weights, a smaller KV cache in host memory)",
            (),
            False,
            None,
        ),
    ]
    return Issue(
        message,
        [_killed_evidence(kills)],
        steps,
        severity=Severity.MEDIUM,
        impact=kills.count,
        title="Memory cgroup has already OOM-killed processes",
    )


def _tight(f, model, judged, words, margin, evidence):
    """The model fits, with less than the margin left beside it."""
    left = judged - model.size
    message = (
        "The model (%s) fits, but leaves %s of %s (%s): less than %s, which %s. The page cache, the serving runtime, "
        "KV cache kept in host memory and the CUDA context all need memory beside the weights: a load that fits on paper "
        "pages, throttles or is OOM-killed once it serves."
        % (
            gib(model.size),
            gib(max(left, 0)),
            gib(judged),
            words,
            gib(margin),
            "--margin sets" if model.margin is not None else "is the margin kept (5% of it, at least 2 GiB; --margin sets another)",
        )
    )
    steps = [
        Step("Load a quantized variant, or a smaller model, to leave room beside the weights", (), False, None),
        f.fixes.step(
            "Or free memory before loading: stop other large processes",
            [Show("ps -eo pid,rss,comm --sort=-rss | head"), Show("free -h")],
            None,
            host_wide=False,
            needs_root=False,
        ),
    ]
    return Issue(message, evidence, steps, severity=Severity.MEDIUM, impact=margin - left, title="Model fits with little memory to spare")


def _room(level) -> int:
    """What ``level`` leaves; all of its limit when the usage under it is unknown."""
    return level.limit if level.headroom is None else level.headroom


def _tightest(levels):
    """The limit that leaves least: the one that binds."""
    return min(levels, key=lambda level: (_room(level), level.limit)) if levels else None


def _who(cgroup, level) -> str:
    if level.cgroup is None:
        return "an ancestor cgroup not visible here (hierarchical_memory_limit)"
    if level.cgroup == cgroup.path:
        return "its cgroup"
    return "cgroup %s" % level.cgroup


def _in_use(level) -> str:
    """What the cgroup carrying ``level`` holds now, in words, with the numbers behind it."""
    what = level.usage_path.rsplit("/", 1)[-1]
    held = ""
    if level.cgroup is None:  # the ancestor's own usage is not visible; this cgroup's is part of it
        what, held = "this cgroup's " + what, "at least "
    if level.reclaimable is None:
        return "%s%s in use (%s; page cache counted as used, memory.stat unreadable)" % (held, gib(level.usage), what)
    return "%s%s in use (%s %s less %s of page cache, which the kernel reclaims before the OOM killer acts)" % (
        held,
        gib(level.working_set),
        what,
        gib(level.usage),
        gib(level.reclaimable),
    )


def _over_limit(cgroup, levels, size, kind):
    """The problem the limits of ``kind`` make for a model of ``size``, or None.

    Every limit that leaves less than the model blocks it; the worst one leads the sentence:
    a limit below the model itself, else the one that leaves least.
    """
    blocking = sorted((level for level in levels if size > _room(level)), key=lambda level: (size <= level.limit, _room(level)))
    if not blocking:
        return None
    level, others = blocking[0], blocking[1:]
    who, where = _who(cgroup, level), "%s in %s" % (gib(level.limit), level.path)
    if size > level.limit:
        if kind == MAX:
            severity, sentence = Severity.CRITICAL, "more than the memory limit of %s (%s)" % (who, where)
        else:
            severity, sentence = (
                Severity.HIGH,
                "more than the memory.high of %s (%s): above it the kernel throttles the cgroup and reclaims its memory "
                "hard (it never OOM-kills for it), so the model is paged in and out while it serves" % (who, where),
            )
    elif kind == MAX:
        severity, sentence = Severity.HIGH, "more than the memory limit of %s leaves (%s, %s)" % (who, where, _in_use(level))
    else:
        severity, sentence = (
            Severity.MEDIUM,
            "more than the memory.high of %s leaves before throttling (%s, %s): the load crawls under reclaim"
            % (who, where, _in_use(level)),
        )
    if others:
        sentence += " (also too small: %s)" % ", ".join(
            "%s, %s in %s leaving %s" % (_who(cgroup, other), gib(other.limit), other.path, gib(_room(other))) for other in others
        )
    return _Problem(severity, sentence, _room(level), tuple(blocking))


def _level_evidence(cgroup, level):
    evidence = [Evidence(level.path, str(level.limit))]
    if level.cgroup is None:
        evidence = [Evidence(level.path, "hierarchical_memory_limit %d" % level.limit)]
    if level.usage is not None:
        evidence.append(Evidence(level.usage_path, str(level.usage)))
    if level.reclaimable is not None:
        evidence.append(Evidence(level.stat_path, ", ".join("%s %d" % part for part in level.reclaim_parts)))
    return evidence


def _quantized(model, fit, with_pool, commit):
    """What the same model needs at smaller formats and whether each fits in ``fit`` bytes (or
    in ``with_pool`` once an unused huge page pool is released), within strict overcommit's
    ``commit`` room (now, after the release) where it applies; in words, and whether any
    does (None: there is no smaller format)."""
    base, sizes = quantized_sizes(model.size, model.params, model.dtype)
    if not sizes:
        return "", None
    now, later = commit if commit is not None else (None, None)

    def verdict(value):
        if value <= fit and (now is None or value <= now):
            return "fits"
        if value <= with_pool and (later is None or value <= later):
            return "fits once the free huge pages are released"
        if value <= fit:
            return "fits in memory once the strict commit limit is raised: overcommit.strict-headroom"
        return "does not fit"

    verdicts = [(dtype, value, verdict(value)) for dtype, value in sizes]
    parts = ["%s ≈ %s (%s)" % (dtype, gib(value), said) for dtype, value, said in verdicts]
    return "As %s, quantized it would need %s." % (base, ", ".join(parts)), any(v != "does not fit" for _, _, v in verdicts)


def _steps(f, cgroup, size, problems, fits):
    steps = []
    if fits:
        steps.append(
            Step("Load a quantized variant that fits (sizes above; int4 formats need a little more for their scales)", (), False, None)
        )
    elif fits is False:
        steps.append(Step("Not even int4 fits here: use a smaller model, or a host (or limit) with more memory", (), False, None))
    else:
        steps.append(Step("The weights are int4 already: use a smaller model, or a host (or limit) with more memory", (), False, None))
    for level in (level for p in problems for level in p.levels):
        step = _cgroup_step(f, cgroup, level, size)
        if step not in steps:  # e.g. one pod spec sets the limits of several levels
            steps.append(step)
    if not any(p.severity is Severity.CRITICAL for p in problems) and any(not p.levels for p in problems):
        steps.append(
            f.fixes.step(
                "Free memory before loading: stop other large processes%s; page cache needs nothing, as MemAvailable "
                "already counts what can be reclaimed"
                % (" and release the free huge pages nothing needs (hugepages.unused, hugepages.shortfall)" if f.releasable_pools else ""),
                [Show("ps -eo pid,rss,comm --sort=-rss | head"), Show("free -h")],
                None,
                host_wide=False,
                needs_root=False,
            )
        )
    return steps


def _cgroup_step(f, cgroup, level, size):
    """How to raise ``level``: through whoever owns the cgroup that carries it."""
    # What the cgroup already holds, the model, and an eighth more for the loader and runtime;
    # never past all RAM, where a limit stops binding anyway.
    want_bytes = (level.working_set or 0) + size + size // 8
    mem = f.meminfo
    if mem and mem.get("MemTotal"):
        want_bytes = min(want_bytes, mem.get("MemTotal"))
    want = "%dG" % -(-want_bytes // (1 << 30))
    knob, prop = ("memory limit", "MemoryMax") if level.kind == MAX else ("memory.high", "MemoryHigh")
    where = "cgroup %s" % level.cgroup if level.cgroup else "the cgroup above the mount that sets %s" % level.path
    unit, user = _unit_of(level.cgroup) if level.cgroup else (None, False)
    systemctl = None
    if unit:
        systemctl = Run(
            ("systemctl",) + (("--user",) if user else ()) + ("set-property", unit, "%s=%s" % (prop, want)), needs_root=not user
        )
    fixes = f.fixes
    container = f.container
    if container and container.detected:
        if container.runtime == "kubernetes":
            why = " (with the MemoryQoS feature the kubelet derives memory.high from it)" if level.kind == HIGH else ""
            # Kubernetes quantities: G is 10^9 bytes, Gi 2^30 (a "103G" limit is below 96Gi).
            return Step(
                "Raise the pod's memory limit: set resources.limits.memory to at least %si in its spec%s (on the cluster, not here)"
                % (want, why),
                (),
                False,
                True,
                True,
            )
        if level.cgroup != cgroup.path:
            # An ancestor of the container's cgroup: the container's own limit cannot lift it.
            return Step(
                "On the container's host, raise the %s of %s to at least %s (the container's own --memory does not lift it)"
                % (knob, where, want),
                (systemctl,) if systemctl else (),
                True,
                bool(systemctl),
                True,
                fixes.shell,
            )
        if level.kind == HIGH:
            return Step(
                "On the container's host, raise memory.high of the container's cgroup to at least %s, or to max "
                "(the runtime option or cgroup manager that set it must change for it to last)" % want,
                (),
                True,
                False,
                True,
            )
        hostname = f.hostname
        # Docker names a container's host after its short id unless told otherwise.
        guessed = hostname if isinstance(hostname, str) and len(hostname) == 12 and all(c in "0123456789abcdef" for c in hostname) else None
        ident = _container_id(cgroup.path) or guessed
        # docker's and podman's sizes are binary: 103G is 103 GiB.
        argv = ("docker", "update", "--memory", want, "--memory-swap", want, ident or "CONTAINER")
        if container.runtime == "podman":
            argv = ("podman", "update", "--memory", want, ident or "CONTAINER")
        return Step(
            "Raise the container's memory limit on its host (or recreate it with --memory %s)" % want,
            (Run(argv, needs_root=False),),
            True,
            True,
            True,
            fixes.shell,
        )
    if systemctl:
        # systemd's sizes are binary too (systemd.resource-control(5)).
        return Step(
            "Raise the %s of %s to at least %s (set-property persists as a systemd drop-in)" % (knob, unit, want),
            (systemctl,),
            not user,
            True,
            False,
            fixes.shell,
        )
    if level.cgroup:
        return fixes.step(
            "Raise the %s of cgroup %s to at least %s (lost when the cgroup is recreated: change whatever creates it to keep it)"
            % (knob, level.cgroup, want),
            [WriteKernel((level.path,), want)],
            False,
            host_wide=False,
        )
    return Step("Raise the %s of %s to at least %s" % (knob, where, want), (), True, False)


def _unit_of(path: str):
    """The systemd unit whose cgroup ``path`` is, and whether a user's manager (user@UID.service)
    runs it; (None, False) for a cgroup that is no unit's."""
    parts = [part for part in path.split("/") if part]
    last = parts[-1] if parts else ""
    if not last.endswith((".service", ".scope", ".slice")) or last == "-.slice":
        return None, False
    return last, any(part.startswith("user@") and part.endswith(".service") for part in parts[:-1])


def _container_id(path: str):
    last = path.rstrip("/").rsplit("/", 1)[-1]
    for prefix in ("docker-", "libpod-"):
        if last.startswith(prefix):
            last = last[len(prefix) :]
    last = last.split(".", 1)[0]
    return last[:12] if len(last) == 64 and all(c in "0123456789abcdef" for c in last) else None


SHM_HIGH_GPUS, SHM_HIGH_BELOW = 4, 256 << 20
SHM_MEDIUM_GPUS, SHM_MEDIUM_BELOW = 2, 1 << 30
SHM_WANT = 16 << 30


@rule(
    "memory.shm-size",
    "/dev/shm too small for the GPUs here",
    Severity.HIGH,
    needs=("shm", "gpus"),
    uses=("mounts", "container", "cgroup_memory", "fixes"),
)
def shm_size(f):
    """/dev/shm is smaller than the GPUs here need.

    NCCL's shared memory transport between GPUs of one host, vLLM's shm broadcast between its
    workers (Python shared_memory segments), Ray's object store and PyTorch DataLoader workers
    all allocate in /dev/shm. Too small, they fail with "NCCL WARN Error while creating shared
    memory segment /dev/shm/nccl-… (size …)" or "Call to posix_fallocate failed: No space left
    on device" (NVIDIA/nccl#342, #290, #983; vllm-project/vllm#1710), "No available block found
    in 60 second in shm" (vLLM), "DataLoader worker (pid N) is killed by signal: Bus error"
    (pytorch/pytorch#5040), or the server hangs. Docker gives a container 64 MiB unless told
    otherwise, and so do Kubernetes pods without a memory-backed emptyDir at /dev/shm; NVIDIA's
    NGC containers print "The SHMEM allocation limit is set to the default of 64MB" and
    recommend --shm-size=1g.

    High with 4 or more GPUs and under 256 MiB: the reported failures are at the 64 MiB default
    with 4 to 8 GPUs (tensor parallelism over 4 or 8 ranks). Medium with 2 or more GPUs and
    under 1 GiB, NGC's recommendation (so 512 MiB with 4 GPUs is medium). Info with one GPU and
    under 1 GiB: a single-GPU server (llama.cpp, Ollama, vLLM without tensor parallelism) barely
    uses it, but DataLoader workers and multi-process front ends still do. The GPUs are the
    ones this process can use: inside a container, the device nodes it was given.

    Not a finding: a host's own /dev/shm at the tmpfs default, half of RAM; a cap of size=0 (no
    limit); /dev/shm as a folder of a filesystem that is not a tmpfs. A tmpfs size is a cap, not
    a reservation: a large one costs nothing until it is written. But what is written there is
    memory: it counts against the memory limit of the container's cgroup (memory.stat shmem)
    and only swap can take it, so the size asked for inside a container is kept below that
    limit (16 GiB, or a quarter of a smaller hard limit, at least 1 GiB). Segments that NCCL
    (nccl-*), PyTorch (torch_*) and Python shared_memory (psm_*) left in /dev/shm are named (the
    first few; /dev/shm is only listed): with no job running, they are left over from crashed
    runs and hold memory.

    Fix, in a container (on its host: the size is set when the container is made): Docker or
    Podman `--shm-size=16g` (Compose `shm_size: 16gb`); vLLM's docs use `--ipc=host`, which
    shares the host's /dev/shm but also its IPC namespace, so the size is offered first;
    Kubernetes: an `emptyDir: {medium: Memory, sizeLimit: 16Gi}` volume mounted at /dev/shm
    (it counts against the pod's memory limit). On a host: `mount -o remount,size=16G /dev/shm`
    now, and the size in /etc/fstab's /dev/shm line (`tmpfs /dev/shm tmpfs defaults,size=16G 0
    0`), which systemd-remount-fs.service applies at boot to the /dev/shm systemd mounts.
    NCCL_SHM_DISABLE=1 is a workaround that avoids NCCL's use of it at a cost in speed.

    References: Documentation/filesystems/tmpfs.rst and tmpfs(5) (size=, "size=50%" default,
    size=0); mm/shmem.c shmem_show_options (size= shown only when not the default);
    Documentation/filesystems/proc.rst (mountinfo); systemd-remount-fs.service(8); NCCL
    environment variables (NCCL_SHM_DISABLE); vLLM docs, "Using Docker" (--ipc=host or
    --shm-size); Docker run reference (--shm-size, default 64m); Kubernetes volumes (emptyDir
    medium: Memory); vllm-project/production-stack#276; sgl-project/sglang PR#1986.
    """
    shm, gpus = f.shm, f.gpus
    count = gpus.count
    if count == 0:
        return Skip("no GPU here (%s): /dev/shm is judged against the GPUs that share it" % gpus.source)
    where = "%s (its own mount)" % shm.mount.mountpoint if shm.own else "a folder of %s (%s)" % (shm.mount.mountpoint, shm.mount.fstype)
    if shm.size is None:
        if shm.notes:
            return Skip("the size of /dev/shm could not be told: %s" % "; ".join(shm.notes))
        return Pass("/dev/shm is %s: %s" % (where, shm.size_from) + _segments_note(shm))
    if count >= SHM_HIGH_GPUS and shm.size < SHM_HIGH_BELOW:
        severity = Severity.HIGH
    elif count >= SHM_MEDIUM_GPUS and shm.size < SHM_MEDIUM_BELOW:
        severity = Severity.MEDIUM
    elif count == 1 and shm.size < SHM_MEDIUM_BELOW:
        severity = Severity.INFO
    else:
        plural = "" if count == 1 else "s"
        return Pass("/dev/shm holds up to %s (%s) for %d GPU%s" % (gib(shm.size), shm.size_from, count, plural) + _segments_note(shm))
    container = f.container
    in_container = bool(container and container.detected)
    cgroup = f.cgroup_memory
    hard = cgroup.hard if cgroup and in_container else None
    want = _shm_want(hard.limit if hard else None)
    gpu_words = "%d GPU%s" % (count, "" if count == 1 else "s")
    source = shm.size_from
    if in_container and shm.size == 64 << 20:
        source += ", the 64 MiB Docker and Kubernetes give a container unless told otherwise"
    message = "/dev/shm here is %s capped at %s (%s)%s, with %s. " % (
        "a tmpfs" if shm.mount.fstype == "tmpfs" else shm.mount.fstype,
        gib(shm.size),
        source,
        "" if shm.own else ", as a folder of %s" % shm.mount.mountpoint,
        gpu_words,
    )
    if severity is Severity.INFO:
        message += (
            "A single-GPU server barely uses it, but PyTorch DataLoader workers and multi-process servers put their "
            'shared memory there, and fail with "Bus error" or "No space left on device" once it is full.'
        )
    else:
        message += (
            "NCCL's shared memory transport between the GPUs, vLLM's shm broadcast between its workers and PyTorch "
            'DataLoader workers allocate there; at this size they fail with "NCCL WARN Error while creating shared memory '
            'segment /dev/shm/nccl-…" or "posix_fallocate failed: No space left on device", "Bus error", or hang. '
            "NCCL_SHM_DISABLE=1 only works around it, slower."
        )
    if shm.matched:
        message += " " + _segments_sentence(shm)
    if hard is not None:
        message += " What is written there counts against the container's memory limit (%s in %s): the size asked for is kept below it." % (
            gib(hard.limit),
            hard.path,
        )
    evidence = [Evidence(f.mounts.source, "%s %s %s" % (shm.mount.mountpoint, shm.mount.fstype, ",".join(sorted(shm.mount.super_options))))]
    evidence.append(Evidence(gpus.source if not in_container else "/dev", "%s usable here" % gpu_words))
    evidence += [Evidence("/dev/shm/" + s.name, s.owner) for s in shm.segments[:8]]
    steps = _shm_steps(f, shm, container if in_container else None, want)
    return Issue(message, evidence, steps, severity=severity, impact=max(SHM_MEDIUM_BELOW - shm.size, 0))


def _shm_want(limit):
    """The /dev/shm size to ask for: 16 GiB, or a quarter of a smaller hard memory limit, at
    least 1 GiB, in whole GiB."""
    want = SHM_WANT if limit is None else min(SHM_WANT, limit // 4)
    return max(want >> 30, 1)


def _segments_sentence(shm) -> str:
    shown = ", ".join(s.name for s in shm.segments[:5])
    more = shm.matched - min(len(shm.segments), 5)
    owners = [owner.split(" (", 1)[0] for owner in shm.owners]
    owners = ", ".join(owners[:-1]) + " and " + owners[-1] if len(owners) > 1 else "".join(owners)
    return (
        "It holds %d segment%s of %s (%s%s): with no job running they are left over from crashed runs, and the memory "
        "they hold is only given back when they are removed."
        % (
            shm.matched,
            "" if shm.matched == 1 else "s",
            owners,
            shown,
            " and %d more" % more if more > 0 else "",
        )
    )


def _segments_note(shm) -> str:
    return ("; " + _segments_sentence(shm)) if shm.matched else ""


def _shm_steps(f, shm, container, want):
    fixes = f.fixes
    steps = []
    if container is not None:
        if container.runtime == "kubernetes":
            steps.append(
                fixes.advice(
                    "Mount a memory-backed emptyDir at /dev/shm in the pod spec: volumes: [{name: dshm, emptyDir: {medium: Memory, "
                    "sizeLimit: %dGi}}] and, in the container, volumeMounts: [{name: dshm, mountPath: /dev/shm}] (its pages count "
                    "against the pod's memory limit)" % want,
                    needs_root=False,
                    host_wide=True,
                )
            )
        else:
            tool = "podman" if container.runtime == "podman" else "docker"
            steps.append(
                fixes.advice(
                    "Recreate the container with a larger /dev/shm: %s run --shm-size=%dg … (Compose: shm_size: %dgb); a running "
                    "container's cannot be resized. --ipc=host, as vLLM's docs show, also works but gives the container the "
                    "host's IPC namespace" % (tool, want, want),
                    needs_root=False,
                    host_wide=True,
                )
            )
    else:
        size = "%dG" % want
        steps += fixes.runtime(
            "Resize /dev/shm now (a tmpfs keeps its files when resized)",
            [Run(("mount", "-o", "remount,size=%s" % size, "/dev/shm"), NOW)],
            host_wide=False,
        )
        if shm.fstab is not None:
            summary = "Set size=%s in /etc/fstab's /dev/shm line (line %d: %s), which boot applies" % (size, shm.fstab.line, shm.fstab.text)
        else:
            summary = "Add the line `tmpfs /dev/shm tmpfs defaults,size=%s 0 0` to /etc/fstab, which boot applies" % size
        steps.append(fixes.step(summary, [EditByHand("/etc/fstab")], True, host_wide=False))
    if shm.matched:
        steps.append(
            fixes.step(
                "With no GPU job running, remove the segments crashed runs left",
                [Show("rm -f /dev/shm/nccl-* /dev/shm/torch_* /dev/shm/psm_*", needs_root=True)],
                None,
                host_wide=False,
            )
        )
    return steps
