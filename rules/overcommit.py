"""Virtual memory overcommit (vm.overcommit_memory and friends) against the model size.

The kernel's accounting (Documentation/mm/overcommit-accounting.rst, mm/util.c
__vm_enough_memory): private writable mappings — anonymous memory, which torch.load and
readers into fresh buffers use — are charged; a read-only mmap of a weights file is not.
"""

from __future__ import annotations

import math

from ai_doctor.engine import rule
from ai_doctor.facts.sysctl import governing, loader_reserves, sysctl_int
from ai_doctor.facts.system import kernel_version
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step
from ai_doctor.remedy.actions import SetSysctl, Swapfile
from ai_doctor.units import gib, quantized_sizes

SWAPFILE = "/swapfile.aidoctor"
MODE_NAMES = {0: "0 (heuristic)", 1: "1 (always allow)", 2: "2 (strict accounting)"}


def _mode(f):
    """vm.overcommit_memory as it governs now; the configuration only counts (and is only read)
    where the running kernel cannot be asked."""
    runtime = f.sysctl
    if runtime and runtime.get("vm.overcommit_memory") is not None:
        setting = governing(None, runtime, "vm.overcommit_memory")
    else:
        setting = governing(f.sysctl_config, None, "vm.overcommit_memory")
    return setting, setting.int


def _unknown_mode(setting):
    """A Skip for a value no kernel takes (the sysctl accepts 0, 1 and 2 only), else None."""
    if setting.int in MODE_NAMES:
        return None
    where = setting.path + (":%d" % setting.line if setting.line else "")
    return Skip("vm.overcommit_memory reads %r at %s, which is not a mode (0, 1 or 2)" % (setting.value, where))


def _mem_evidence(mem, *keys):
    return [Evidence(mem.path, "%s: %s" % (key, gib(mem.get(key, 0)))) for key in keys if key in mem]


@rule(
    "overcommit.strict-headroom",
    "Strict overcommit leaves no room for the model",
    Severity.CRITICAL,
    needs=("model", "meminfo"),
    uses=("sysctl", "sysctl_config", "sysctl_at_boot", "hugepages", "hugepage_requests", "release", "fixes"),
)
def strict_headroom(f):
    """Under vm.overcommit_memory=2 the model does not fit in CommitLimit − Committed_AS.

    In strict mode every private writable allocation is charged against CommitLimit
    ((MemTotal − huge page pool) × overcommit_ratio / 100 + swap, or overcommit_kbytes + swap);
    an allocation that would take Committed_AS over it fails at once with ENOMEM, however
    much memory is actually free. Loading weights into anonymous memory (torch.load, readers
    into fresh buffers) is charged in full. Two reserves are closed to the loader as well
    (mm/util.c __vm_enough_memory): admin_reserve_kbytes for a process without CAP_SYS_ADMIN,
    and user_reserve_kbytes (capped at 1/32 of the process's own size) for any process; both
    are counted, since a model server rarely runs with CAP_SYS_ADMIN.

    Fix: raise vm.overcommit_ratio (or overcommit_kbytes) to cover the model, release an
    unused huge page pool (its pages are taken out of RAM before the ratio applies, so
    releasing P bytes raises CommitLimit by P × ratio / 100), add swap, or return to the
    heuristic mode 0. The ratio has no upper bound: above 100 the commit limit exceeds RAM
    and strict mode stops promising that committed memory exists.

    Reference: Documentation/mm/overcommit-accounting.rst; Documentation/admin-guide/sysctl/vm.rst;
    Documentation/filesystems/proc.rst (CommitLimit, Committed_AS).
    """
    mode_setting, mode = _mode(f)
    unknown = _unknown_mode(mode_setting)
    if unknown:
        return unknown
    if mode != 2:
        return Pass("vm.overcommit_memory is %s, not strict" % mode_setting.value)
    model, mem = f.model, f.meminfo
    if "CommitLimit" not in mem or "Committed_AS" not in mem:
        return Skip("%s has no CommitLimit/Committed_AS lines" % mem.path)
    limit, committed = mem.get("CommitLimit"), mem.get("Committed_AS")
    headroom = limit - committed
    reserves = loader_reserves(f.sysctl)
    if model.size + reserves <= headroom:
        return Pass(
            "CommitLimit − Committed_AS = %s covers the model (%s) and the reserves closed to it (%s)"
            % (gib(headroom), gib(model.size), gib(reserves))
        )
    message = "vm.overcommit_memory = 2 (strict): CommitLimit − Committed_AS = %s − %s = %s; the model needs %s" % (
        gib(limit),
        gib(committed),
        gib(max(headroom, 0)),
        gib(model.size),
    )
    if model.size <= headroom:
        message += ", and the admin and user reserves (%s) are closed to it" % gib(reserves)
    message += '. Loading it into process memory will fail with ENOMEM ("Cannot allocate memory"), even with RAM free.'
    evidence = [mode_setting.evidence()] + _mem_evidence(mem, "CommitLimit", "Committed_AS", "MemTotal", "SwapTotal")
    physical = mem.get("MemTotal", 0) + mem.get("SwapTotal", 0)
    if model.size > physical:
        # No commit limit fixes that: raising it only moves the failure to the OOM killer.
        steps = [
            Step(
                "No commit limit makes it fit: the model is larger than RAM + swap (%s), so it must get smaller or the "
                "host larger (memory.headroom gives quantized sizes)" % gib(physical),
                (),
                False,
                None,
            )
        ]
    else:
        steps = _strict_steps(f, mem, committed + reserves, model.size)
    return Issue(message, evidence, steps, impact=model.size + reserves - headroom)


def _strict_steps(f, mem, committed, model_size):
    fixes = f.fixes
    runtime = f.sysctl
    config = f.sysctl_config
    kbytes = governing(config, runtime, "vm.overcommit_kbytes").int or 0
    swap = mem.get("SwapTotal", 0)
    pools = f.hugepages
    # The pools as they will be once the requested ones are complete: each leaves RAM before
    # the ratio applies, so a ratio for today's pool falls short after hugepages.shortfall's fix.
    wanted = {r.page_size: r.count for r in f.hugepage_requests or ()}
    pool_bytes = sum(max(p.total, wanted.get(p.page_size, 0)) * p.page_size for p in pools.pools.values()) if pools else 0
    ram = mem.get("MemTotal", 0) - pool_bytes
    # The loader and its runtime commit memory of their own beside the weights: leave 5 %, at
    # least 1 GiB (``committed`` already holds the reserves).
    needed_limit = committed + model_size + max(1 << 30, model_size // 20)
    steps = []
    # Where boot does not make the kernel strict, a ratio kept for boot would be ignored there
    # (overcommit.ratio-ignored): the limit is raised now only.
    at_boot = f.sysctl_at_boot
    boot_mode = sysctl_int(at_boot.get("vm.overcommit_memory")) if at_boot and at_boot.applier.applies else None
    only_now = (
        "at boot vm.overcommit_memory is %d, which ignores the limit: nothing to keep for boot" % boot_mode
        if boot_mode not in (None, 2)
        else None
    )
    if kbytes:
        value = int(math.ceil(max(needed_limit - swap, 0) / 1024))
        steps += fixes.sysctl(
            [("vm.overcommit_kbytes", str(value))],
            "overcommit",
            "Raise the commit limit to cover the model",
            displaces=("vm.overcommit_ratio",),
            only_now=only_now,
        )
    elif ram > 0:
        ratio = int(math.ceil(max(needed_limit - swap, 0) * 100 / ram))
        if ratio > 100:
            # The kernel takes any ratio; past 100 the limit promises memory the host lacks.
            steps.append(
                Step(
                    "A ratio of %d%% sets a commit limit larger than RAM, so strict mode no longer guarantees that "
                    "committed memory exists; adding swap or memory is the sound fix" % ratio,
                    (),
                    False,
                    None,
                )
            )
        steps += fixes.sysctl(
            [("vm.overcommit_ratio", str(ratio))],
            "overcommit",
            "Raise vm.overcommit_ratio to %d%% so CommitLimit covers the model" % ratio,
            displaces=("vm.overcommit_kbytes",),
            only_now=only_now,
        )
    release = f.release
    if release and kernel_version(release) < (5, 2):
        heuristic = "which refuses an allocation larger than free memory, page cache and free swap together"
        room = mem.get("MemAvailable", mem.get("MemFree", 0)) + mem.get("SwapFree", 0)
    else:
        heuristic = "which only refuses a single allocation larger than RAM + swap"
        room = mem.get("MemTotal", 0) + swap
    if model_size <= room:  # else the heuristic refuses it too (overcommit.heuristic-oversize)
        # The ratio and kbytes mean nothing outside mode 2: they go too (overcommit.ratio-ignored).
        steps += fixes.sysctl(
            [("vm.overcommit_memory", "0"), ("vm.overcommit_ratio", "50")],
            "overcommit",
            "Or return to the heuristic mode, " + heuristic,
            displaces=("vm.overcommit_kbytes",),
            replaces_ours=True,
        )
    return steps


@rule(
    "overcommit.heuristic-oversize",
    "Model larger than RAM + swap under heuristic overcommit",
    Severity.CRITICAL,
    needs=("model", "meminfo"),
    uses=("sysctl", "sysctl_config", "release", "mounts", "fixes"),
)
def heuristic_oversize(f):
    """Under vm.overcommit_memory=0 the kernel refuses one allocation larger than RAM + swap.

    Since Linux 5.2 (commit 8c7829b04c52) the heuristic mode refuses a single request larger
    than total RAM plus total swap, and nothing else; before 5.2 it compared against free
    memory, page cache, reclaimable slab and free swap, which is roughly MemAvailable +
    SwapFree. The test is per allocation: a model read into one anonymous buffer larger than
    that fails with ENOMEM at once; a loader that allocates tensor by tensor is not refused,
    but a model larger than RAM + swap cannot be held, so it ends in the OOM killer instead.
    An mmap of the weights file (read-only, not charged) is not refused but then pages from
    disk on every pass.

    A model this large is also more than memory.headroom allows (RAM + swap is more than what
    is available), so both fire for one shortage: this finding says so and leaves the sizes
    that fit, and the advice, to memory.headroom rather than repeat them.

    Fix: a smaller (quantized) model or more memory. Swap is offered only where it can help
    (kernels before 5.2, a small deficit, a model within RAM): past RAM it would hold the model
    itself. Mode 1 ("always") would accept the allocation and hand the problem to the OOM
    killer; it is not a fix.

    Reference: Documentation/mm/overcommit-accounting.rst; mm/util.c (__vm_enough_memory).
    """
    mode_setting, mode = _mode(f)
    unknown = _unknown_mode(mode_setting)
    if unknown:
        return unknown
    if mode != 0:
        return Pass("vm.overcommit_memory is %s, not heuristic" % mode_setting.value)
    model, mem = f.model, f.meminfo
    release = f.release
    old_kernel = bool(release) and kernel_version(release) < (5, 2)
    if old_kernel:
        limit = mem.get("MemAvailable", mem.get("MemFree", 0)) + mem.get("SwapFree", 0)
        basis = "MemAvailable + SwapFree = %s (kernels before 5.2 judge by free memory)" % gib(limit)
        keys = ("MemAvailable", "SwapFree")
    else:
        limit = mem.get("MemTotal", 0) + mem.get("SwapTotal", 0)
        basis = "MemTotal + SwapTotal = %s + %s = %s" % (gib(mem.get("MemTotal", 0)), gib(mem.get("SwapTotal", 0)), gib(limit))
        keys = ("MemTotal", "SwapTotal")
    if model.size <= limit:
        return Pass("the model (%s) is within %s" % (gib(model.size), basis))
    message = (
        "vm.overcommit_memory = 0 (heuristic) refuses any single allocation larger than %s; the model needs %s. "
        "A loader that reads it into one buffer fails at once with ENOMEM; one that allocates tensor by tensor passes "
        "that check but cannot hold the model (%s); memory-mapping the weights file "
        "is not refused but cannot keep them resident."
        % (basis, gib(model.size), "it swaps, then the OOM killer ends it" if mem.get("SwapTotal", 0) else "the OOM killer ends it")
    )
    evidence = [mode_setting.evidence()] + _mem_evidence(mem, *keys)
    deficit = model.size - limit
    fixes = f.fixes
    _, smaller = quantized_sizes(model.size, model.params, model.dtype)
    # Larger than RAM + swap is larger than what memory.headroom judges too: one shortage, told
    # there with the sizes that fit; this finding adds what the heuristic does with it.
    message = "The shortage memory.headroom reports, seen by the overcommit heuristic: " + message[0].lower() + message[1:]
    if any(value <= limit for _, value in smaller):
        steps = [Step("The fix is memory.headroom's: a model that fits (it names the quantized sizes that do)", (), False, None)]
    else:
        steps = [Step("The fix is memory.headroom's: a smaller model or a larger host", (), False, None)]
    if model.size <= mem.get("MemTotal", 0) and deficit <= mem.get("MemTotal", 0) // 4:
        swap_gib = int(math.ceil(deficit / (1 << 30))) + 1
        mounts = f.mounts
        under = mounts.covering(SWAPFILE) if mounts else None
        # btrfs swaps only to a file without copy-on-write, set while it is still empty (btrfs(5), SWAPFILE SUPPORT).
        no_cow = under is not None and under.fstype == "btrfs"
        steps += fixes.runtime(
            "Or add at least %d GiB of swap so the heuristic accepts the allocation (the load then pages to disk)" % swap_gib,
            [Swapfile(SWAPFILE, swap_gib, no_cow)],
        )
    elif model.size <= mem.get("MemTotal", 0):
        steps.append(
            Step("Swap cannot make up %s in practice: the model must get smaller or the host larger" % gib(deficit), (), False, None)
        )
    return Issue(message, evidence, steps, impact=deficit)


@rule(
    "overcommit.ratio-ignored",
    "Overcommit ratio set but ignored",
    Severity.LOW,
    uses=("sysctl", "sysctl_config", "fixes"),
)
def ratio_ignored(f):
    """vm.overcommit_ratio or vm.overcommit_kbytes is set while vm.overcommit_memory is not 2.

    Both only set CommitLimit, which the kernel enforces in mode 2 (strict accounting) alone.
    In mode 0 and mode 1 they do nothing. The tuning guide's claim that
    "overcommit_ratio=95 caps the overcommit at 95% of RAM" with overcommit_memory=1 is false:
    mode 1 never refuses an allocation, and the ratio caps nothing.

    Fix: remove the setting so the configuration says what the kernel does, or, if a cap was
    the intent, switch to mode 2 knowingly (see overcommit.strict-headroom).

    Reference: Documentation/admin-guide/sysctl/vm.rst (overcommit_ratio, overcommit_kbytes);
    Documentation/mm/overcommit-accounting.rst.
    """
    runtime, config = f.sysctl, f.sysctl_config
    if not runtime and not config:
        return Skip("neither /proc/sys nor the sysctl configuration could be read")
    ratio_keys = ("vm.overcommit_ratio", "vm.overcommit_kbytes")
    # The running kernel is judged by its own mode, the configuration by the mode it sets at
    # boot: a ratio that waits for a mode 2 still to come is not ignored.
    boot = governing(config, None, "vm.overcommit_memory")
    unknown = _unknown_mode(boot) or (
        runtime and runtime.get("vm.overcommit_memory") is not None and _unknown_mode(governing(None, runtime, "vm.overcommit_memory"))
    )
    if unknown:
        return unknown
    evidence = []
    settings = []
    ignored_lines = []
    if config and boot.int != 2:
        for key in ratio_keys:
            items = config.all(key)
            if not items:
                continue
            ignored_lines.extend(items)
            evidence.extend(Evidence(item.path, "%s = %s" % (key, item.value), item.line) for item in items)
            repeated = " (set %d times; the last wins)" % len(items) if len(items) > 1 else ""
            settings.append("%s = %s at %s%s" % (key, items[-1].value, items[-1].where, repeated))
        if ignored_lines:
            evidence.insert(0, boot.evidence())
    now = governing(None, runtime, "vm.overcommit_memory") if runtime else None
    configured = {item.key for item in config.assignments if item.key in ratio_keys} if config else set()
    if now is not None and now.int != 2 and not (boot.int == 2 and configured):
        ratio, kbytes = runtime.int("vm.overcommit_ratio"), runtime.int("vm.overcommit_kbytes")
        # Writing one of the pair zeroes the other, so ratio 0 with kbytes set is not a ratio.
        if kbytes:
            settings.append("vm.overcommit_kbytes = %d in the running kernel" % kbytes)
            evidence += [now.evidence(), Evidence("/proc/sys/vm/overcommit_kbytes", str(kbytes))]
        elif ratio is not None and ratio != 50:
            settings.append("vm.overcommit_ratio = %d in the running kernel (default 50)" % ratio)
            evidence += [now.evidence(), Evidence("/proc/sys/vm/overcommit_ratio", str(ratio))]
    if not settings:
        return Pass("no overcommit ratio or kbytes is set where vm.overcommit_memory is not 2")
    judged_now = now is not None and any("running kernel" in text for text in settings)
    if ignored_lines and judged_now and boot.int == now.int:
        modes = "vm.overcommit_memory is %s, at boot and now" % MODE_NAMES.get(now.int, now.value)
    else:
        parts = []
        if ignored_lines:
            parts.append("the configuration boots with vm.overcommit_memory = %s" % MODE_NAMES.get(boot.int, boot.value))
        if judged_now:
            parts.append("the running kernel has vm.overcommit_memory = %s" % MODE_NAMES.get(now.int, now.value))
        modes = " and ".join(parts)
    message = (
        "These settings do nothing: %s. The ratio and kbytes only set CommitLimit, which the kernel enforces in mode 2 alone, "
        "and %s." % ("; ".join(settings), modes)
    )
    if 1 in (boot.int if ignored_lines else None, now.int if now is not None else None):
        message += " Mode 1 never refuses an allocation: the ratio does not cap overcommit."
    steps = []
    if ignored_lines:
        steps.append(
            f.fixes.comment_out(ignored_lines, "Remove the ineffective setting from the configuration, so it says what the kernel does")
        )
    if judged_now:
        # sysctl --system leaves a key no file sets as it is; writing the ratio zeroes kbytes too.
        steps += f.fixes.runtime(
            "Put the running kernel back on the default ratio (50), which also clears overcommit_kbytes",
            [SetSysctl((("vm.overcommit_ratio", "50"),))],
        )
    return Issue(message, evidence, steps)
