"""Static huge pages (hugetlbfs): support, pools that fell short, pools nobody uses."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.sysctl import commit_change, commit_room
from ai_doctor.facts.system import kernel_version
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step
from ai_doctor.remedy.actions import CommentLines, Show, WriteKernel
from ai_doctor.units import gib, kernel_size
from ai_doctor.units import page_size as _size


def _pool_evidence(pool):
    return Evidence(
        pool.source,
        "%d pages of %s (free %d, reserved %d, surplus %d)" % (pool.total, _size(pool.page_size), pool.free, pool.reserved, pool.surplus),
    )


def _request_evidence(request):
    return Evidence(request.path, request.source, request.line)


@rule(
    "hugepages.unsupported",
    "Kernel without huge page support",
    Severity.INFO,
    uses=("hugepages", "kernel_config", "hugepage_requests", "fixes"),
)
def unsupported(f):
    """The kernel has no hugetlb support, so no static huge page pool can exist.

    Support shows as CONFIG_HUGETLBFS=y and CONFIG_HUGETLB_PAGE=y in the kernel config, and at
    runtime as /proc/sys/vm/nr_hugepages and a Hugepagesize line in /proc/meminfo. Some VPS and
    minimal kernels are built without it. (The tuning guide's `grep -i humongous
    /boot/config-*` finds nothing on any kernel: no option has that name.)

    Ordinary model loaders (safetensors mmap, torch.load) do not use hugetlbfs, so a kernel
    without it is only a problem when something asks for a pool: then the severity is high,
    because `sysctl vm.nr_hugepages=…` fails and the pool the deployment expects never exists.
    Fix: boot a kernel built with CONFIG_HUGETLBFS=y (every mainstream distribution kernel
    is), or drop the requests. Transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE) are a
    separate feature and may still be available.

    Reference: Documentation/admin-guide/mm/hugetlbpage.rst.
    """
    pools = f.hugepages
    if pools and pools.supported:
        return Pass("hugetlb is supported (the running kernel has huge page pools)")
    config, requests = f.kernel_config, f.hugepage_requests
    evidence = []
    unsupported_by = []
    if config:
        for option in ("HUGETLBFS", "HUGETLB_PAGE"):
            if config.enabled(option) is False:
                unsupported_by.append("CONFIG_%s is not set" % option)
                evidence.append(Evidence(config.source, "CONFIG_%s is not set" % option))
    if pools and pools.supported is False:
        unsupported_by.append("/proc/sys/vm/nr_hugepages and meminfo's Hugepagesize are absent")
        evidence.extend(Evidence(path, value) for path, value in pools.evidence)
    if not unsupported_by:
        if config and config.enabled("HUGETLBFS"):
            return Pass("CONFIG_HUGETLBFS=%s in %s" % (config.get("HUGETLBFS"), config.source))
        return Skip("cannot tell: no running kernel to ask (/proc) and no kernel config that mentions CONFIG_HUGETLBFS")
    # Every request counts here, the overridden ones too: each of them fails on this kernel.
    active = [r for request in requests for r in request.chain() if r.count > 0 and not r.from_user] + [
        r for r in requests if r.from_user and r.count > 0
    ]
    evidence.extend(_request_evidence(r) for r in active)
    message = "This kernel has no hugetlb support (%s)." % "; ".join(unsupported_by)
    if not active:
        message += " Nothing here asks for a static huge page pool, and model loaders do not need one."
        return Issue(message, evidence)
    message += " Yet %s asks for a pool: it can never be allocated, and whatever expects it will fail." % ", ".join(
        "%s (%s)" % (r.source, r.where) for r in active
    )
    return Issue(message, evidence, remediation=_unsupported_steps(f, active), severity=Severity.HIGH)


def _unsupported_steps(f, active):
    fixes = f.fixes
    steps = [
        Step(
            "Boot a kernel built with CONFIG_HUGETLBFS=y and CONFIG_HUGETLB_PAGE=y (every mainstream distribution "
            "kernel is; VPS and minimal kernels sometimes are not), if the pool is needed",
            (),
            True,
            True,
        )
    ]
    # Every request goes in one way: dropping one while another stays clears nothing.
    assignments = [r.assignment for r in active if r.assignment is not None]
    on_cmdline = any(r.on_cmdline for r in active)
    if assignments:
        both = " (and, below, the boot-time one)" if on_cmdline else ""
        steps.append(fixes.comment_out(assignments, "Otherwise drop the sysctl that asks for a pool%s" % both))
    if on_cmdline:
        purpose = "Then drop the boot-time request" if assignments else "Otherwise drop the boot-time request"
        steps.append(fixes.kernel_args([], ["hugepages", "hugepagesz"], purpose))
    return steps


@rule(
    "hugepages.shortfall",
    "Huge page pool smaller than requested",
    Severity.HIGH,
    needs=("hugepages",),
    uses=(
        "hugepage_requests",
        "meminfo",
        "cmdline",
        "boot_line",
        "release",
        "model",
        "unused_pools",
        "container",
        "sysctl",
        "pools_at_boot",
        "rc_local",
        "fixes",
        "running",
    ),
)
def shortfall(f):
    """A huge page pool was requested but the kernel allocated fewer pages.

    Requests come from the persistent sysctl `vm.nr_hugepages` (applied at boot by
    systemd-sysctl), an rc.local line that boot runs (`sysctl -w vm.nr_hugepages=N`, `echo N >
    /proc/sys/vm/nr_hugepages`; rc-local.service starts after systemd-sysctl, so it wins), the
    kernel command line (`hugepages=`, `hugepagesz=`) or `aidoctor --hugepages N`; the pool is HugePages_Total (and
    /sys/kernel/mm/hugepages/hugepages-SIZEkB/nr_hugepages for other sizes).

    Writing nr_hugepages does not fail when the kernel finds too few free, physically
    contiguous blocks: it keeps what it got and the value reads back smaller. The failure
    shows later, as "Cannot allocate memory" from the mmap(MAP_HUGETLB) or shmget(SHM_HUGETLB)
    of the program that expected the pool. The cause is fragmentation or too little free
    memory when the pool was set, not "huge pages already in use" — writing 0 does not free
    pages that are in use (they become surplus), it only releases free ones. An empty pool
    with a sysctl file asking for one may also mean the file was never applied (added after
    boot without `sysctl --system`).

    Fix: compact memory and ask again, and for a pool that must exist reserve it on the
    kernel command line, where it is allocated before memory fragments, leaving enough memory
    for the kernel and the model server. (Dropping caches also frees blocks, but vm.rst
    discourages it outside testing, and compaction alone is the targeted step.) When nothing
    on the host maps hugetlbfs — model loaders do not — dropping the request is a fix too.

    Reference: Documentation/admin-guide/mm/hugetlbpage.rst; Documentation/admin-guide/sysctl/vm.rst
    (nr_hugepages, compact_memory, drop_caches).
    """
    pools = f.hugepages
    if pools.supported is False:
        return Skip("the kernel has no hugetlb support (hugepages.unsupported)")
    issues = [_per_node_issue(f, r) for r in f.hugepage_requests if r.per_node and r.on_cmdline]
    if not pools.pools:
        return issues or _no_pools(f)
    if not any(r.count > 0 for r in f.hugepage_requests):
        return issues or Pass("no huge page pool is requested")
    mem = f.meminfo
    next_boot = _next_boot_pools(f)
    for request, pool, impossible in _short_requests(f):
        have = pool.persistent if pool is not None else 0
        missing = request.count - have
        wanted_bytes = request.count * request.page_size
        message = "%s (%s) asks for %d huge pages of %s (%s), but the pool holds %d%s: %d pages (%s) short." % (
            request.source,
            request.where,
            request.count,
            _size(request.page_size),
            gib(wanted_bytes),
            have,
            " besides %d surplus" % pool.surplus if pool is not None and pool.surplus else "",
            missing,
            gib(missing * request.page_size),
        )
        configured = request.configured
        booked = (next_boot or {}).get(request.page_size, 0)
        # A sysctl asking for fewer would shrink the boot pool again right after boot.
        shrunk_after_boot = any(r.assignment is not None and r.count < request.count for r in request.chain())
        pending = pool is not None and not impossible and not request.on_cmdline and booked >= request.count
        # Only a reservation this boot did not make is pending: one the running line already
        # asked for fell short at this boot and would again.
        booked_now = next((item.count for item in _cmdline_pools(f) if item.page_size == request.page_size), 0)
        pending = pending and not shrunk_after_boot and booked_now < booked
        if pending:
            cause = "The boot loader files reserve %d of them at the next boot: a reboot is pending." % booked
        elif pool is None:
            cause = "The kernel has no pool of %s pages at all (the CPU or kernel does not offer that size)." % _size(request.page_size)
        elif impossible:
            cause = "That is more than all of this host's memory (%s): it can never succeed." % gib(mem.get("MemTotal", 0))
        elif request.from_user and configured is None and f.container and f.container.detected:
            # The host's sysctl files are not visible from a container.
            cause = "The pool is the container host's to set (vm.nr_hugepages there); nothing visible here asks for it."
        elif request.from_user and configured is None:
            cause = (
                "Nothing configures a pool of that size: no vm.nr_hugepages in the sysctl files, no hugepages= on the kernel command line."
            )
        elif request.from_user and configured.count < request.count:
            cause = "The host's configuration asks for only %d (%s at %s)." % (configured.count, configured.source, configured.where)
        elif request.on_cmdline and _unsized_before_5_7(f, request):
            cause = (
                "Before Linux 5.7 a count given before any hugepagesz= fills only the default pool, and never a "
                "gigantic (1 GiB) one at boot: the line must name the size with hugepagesz= before the count."
            )
        elif request.on_cmdline:
            cause = (
                "Either the kernel could not reserve that much at boot (other reservations, or more than the NUMA nodes "
                "hold), or the pool was shrunk after boot (a release not yet made persistent)."
            )
        elif have == 0 and request.assignment is not None:
            cause = (
                "An empty pool: either the setting was never applied (the file came after boot and `sysctl --system` was "
                "not run), or the kernel found no free contiguous block at all."
            )
        elif request.script is not None:
            cause = (
                "The kernel found too few free contiguous blocks when %s set the pool at boot (memory fragmented or in use), "
                "or the line was added after boot and has not run since." % request.script
            )
        else:
            cause = (
                "The kernel found too few free contiguous blocks when the pool was set (memory fragmented or in use), "
                "or the setting has not been applied since it changed (`sysctl --system`)."
            )
        model = f.model
        competes = False
        if model and mem and "MemAvailable" in mem and pool is not None and not impossible:
            available = mem.get("MemAvailable")
            taken = missing * request.page_size
            # Fixing the pool would break (or worsen) the model's fit: say so before anyone does it.
            if available - taken < model.size <= available:
                competes = True
                cause += (
                    " Growing the pool takes %s out of MemAvailable (%s now): the model (%s) would then no longer fit "
                    "(memory.headroom); settle which of the two this host is for." % (gib(taken), gib(available), gib(model.size))
                )
            elif model.size > available:
                competes = True
                cause += (
                    " Growing the pool takes %s more out of MemAvailable, which is already short of the model (%s of %s; "
                    "memory.headroom)." % (gib(taken), gib(available), gib(model.size))
                )
            committable = commit_room(f.sysctl, mem)
            if committable is not None and not competes:
                after = committable - commit_change(f.sysctl, taken)
                if after < model.size <= committable:
                    # Strict overcommit: the pool leaves RAM before the ratio applies.
                    competes = True
                    cause += (
                        " Under strict overcommit growing the pool lowers what a loader may commit from %s to %s: the "
                        "model (%s) would then be refused (overcommit.strict-headroom)." % (gib(committable), gib(after), gib(model.size))
                    )
        if pool is not None and pool.idle:
            cause += (
                " None of the %d pages it does hold is in use: unless a hugetlbfs user (DPDK, a database with huge pages "
                "on) is meant to run here, the request itself can go (model loaders do not use these pools)." % pool.total
            )
        evidence = [_request_evidence(request)]
        if configured is not None:
            evidence.append(_request_evidence(configured))
        if pool is not None:
            evidence.append(_pool_evidence(pool))
        base = _grown_by_default_size(f, request)
        if base is not None and pool is not None:
            as_base = request.count * base
            cause = (
                "vm.nr_hugepages counts pages of the default huge page size, which `default_hugepagesz=%s` on the kernel "
                "command line makes %s: %d of them are %s (as pages of %s, which the line was likely written for, %s)%s. "
                "The kernel took what it could: %d pages, %d of them free."
                % (
                    kernel_size(pool.page_size),
                    _size(pool.page_size),
                    request.count,
                    gib(request.count * request.page_size),
                    _size(base),
                    gib(as_base),
                    ", more than this host's memory" if impossible else "",
                    pool.total,
                    pool.free - pool.reserved,
                )
            )
            steps = _grown_steps(f, request, pool, base)
        elif pending:
            steps = [Step("Reboot to take the boot-time reservation", (), True, True)]
        else:
            steps = _shortfall_steps(f, request, pool, impossible)
        if competes and not pending:
            steps += _keep_pool_steps(f, request, pool)
        issues.append(Issue(message + " " + cause, evidence, steps, impact=missing * request.page_size))
    short_now = {request.page_size for request, _pool, _impossible in _short_requests(f)}
    issues += [issue for issue in (_pending_issue(f, pool) for pool in _too_big_at_boot(f, short_now)) if issue is not None]
    return issues or Pass("every requested pool is complete")


def _too_big_at_boot(f, reported):
    """Pools the next boot asks for and cannot hold (ai_doctor.facts.boot), not reported now."""
    boot = f.pools_at_boot
    if not f.running or not boot:
        return []
    return [pool for size, pool in sorted(boot.pools.items()) if pool.asked > pool.total and size not in reported]


def _pending_issue(f, pool):
    """A pool the next boot asks for that does not fit in this host's memory: most often a
    vm.nr_hugepages written for 2 MiB pages under a default_hugepagesz= added since."""
    from ai_doctor.facts.boot import arch_default_size

    mem = f.meminfo
    total = mem.get("MemTotal", 0) if mem else 0
    base = arch_default_size(f.hugepages, f.cmdline if f.cmdline else None)
    default = f.pools_at_boot.default_size
    message = (
        "At the next boot %s asks for %d huge pages of %s (%s), more than this host can hold (MemTotal %s): the kernel will "
        "take what it can, about %d pages (%s), and leave little to everything else."
        % (
            pool.source,
            pool.asked,
            _size(pool.page_size),
            gib(pool.asked * pool.page_size),
            gib(total),
            pool.total,
            gib(pool.total * pool.page_size),
        )
    )
    steps = []
    fixes = f.fixes
    grown = pool.page_size == default and default > base and pool.source.startswith("vm.nr_hugepages")
    if grown:
        meant = -(-pool.asked * base // pool.page_size)
        message += (
            " vm.nr_hugepages counts pages of the default size, and `default_hugepagesz=%s` on the next boot's line makes it %s: "
            "as pages of %s, which the line was likely written for, %d of them are %s."
            % (
                kernel_size(default),
                _size(default),
                _size(base),
                pool.asked,
                gib(pool.asked * base),
            )
        )
        steps += fixes.sysctl(
            [("vm.nr_hugepages", str(meant))],
            "hugepages",
            "Ask for the same memory in pages of %s at boot (%d × %s)" % (_size(default), meant, _size(default)),
            reload=False,
            now=False,
        )
        steps.append(
            fixes.kernel_args(
                [], ["default_hugepagesz"], "Or keep %s pages as the default: take `default_hugepagesz=` off the boot line" % _size(base)
            )
        )
    else:
        steps.append(Step("Ask for a pool the host can hold: fewer pages, or a smaller page size", (), False, None))
    evidence = [Evidence(*pool.origin)] if pool.origin else []
    return Issue(
        message,
        evidence,
        steps,
        severity=Severity.HIGH,
        impact=(pool.asked - pool.total) * pool.page_size,
        title="Huge page pool the next boot cannot hold",
    )


def _per_node_issue(f, request):
    """A per-node ``hugepages=`` on a kernel that reads only its leading number (before 5.16:
    mm/hugetlb.c hugepages_setup() takes ``sscanf("%lu")`` of ``0:32,1:32``, which is 0, and
    says nothing; the node form came with commit b5389086ad7b, Linux 5.16)."""
    release = f.release or "this kernel"
    nodes = ", ".join("node %s: %s" % tuple(part.split(":", 1)) for part in request.source.split("=", 1)[1].split(","))
    message = (
        "%s (%s) asks for huge pages of %s per NUMA node (%s; %d in all, %s), but %s reads per-node counts only from "
        "Linux 5.16 on: it takes the leading number, %d, and reserves %s at boot without a word. The pool this line was "
        "written for never exists. The plain form this kernel reads is `hugepages=%d` (spread over the nodes)."
        % (
            request.source,
            request.where,
            _size(request.page_size),
            nodes,
            request.per_node,
            gib(request.per_node * request.page_size),
            "the running kernel %s" % release if f.running else "the kernel %s, which the image boots," % release,
            request.count,
            "nothing" if request.count == 0 else "%d page%s" % (request.count, "" if request.count == 1 else "s"),
            request.per_node,
        )
    )
    step = _boot_pools(f, request.page_size, request.per_node, "Write the count in the form this kernel reads")
    return Issue(message, [_request_evidence(request)], [step], impact=request.per_node * request.page_size)


def _grown_by_default_size(f, request):
    """The architecture's base huge page size, where ``request`` is a vm.nr_hugepages that
    ``default_hugepagesz=`` turned into pages of a larger size (hugetlbpage.rst: nr_hugepages
    is the default size's pool); else None."""
    from ai_doctor.facts.boot import arch_default_size

    pools = f.hugepages
    if request.assignment is None or request.page_size != pools.default_size:
        return None
    base = arch_default_size(pools, f.cmdline if f.cmdline else None)
    return base if base < request.page_size else None


def _grown_steps(f, request, pool, base):
    """Give the free pages back now and ask for what is in use; or, for the memory the line was
    written for, the same bytes in pages of the new size."""
    fixes = f.fixes
    used = pool.total - (pool.free - pool.reserved)
    steps = fixes.sysctl(
        [("vm.nr_hugepages", str(used))],
        "hugepages",
        "Release the %d free pages (%s): keep the %d in use"
        % (pool.free - pool.reserved, gib((pool.free - pool.reserved) * pool.page_size), used),
    )
    meant = max(-(-request.count * base // pool.page_size), used)
    if meant != used:
        steps += fixes.sysctl(
            [("vm.nr_hugepages", str(meant))],
            "hugepages",
            "Or, for the memory the line was written for (%d pages of %s), ask for %d pages of %s"
            % (request.count, _size(base), meant, _size(pool.page_size)),
            replaces_ours=True,
        )
    return steps


def _shortfall_steps(f, request, pool, impossible):
    fixes = f.fixes
    if impossible or pool is None:
        return [Step("Ask for a pool the host can hold: fewer pages, or a page size the kernel offers", (), False, None)]
    steps = []
    unconfigured = request.from_user and (request.configured is None or request.configured.count < request.count)
    if unconfigured and request.page_size == f.hugepages.default_size:
        # Nothing asks for this pool yet: ask for it, now and at boot.
        steps = fixes.sysctl([("vm.nr_hugepages", str(request.count))], "hugepages", "Reserve the pool") + [
            _boot_reservation(f, request, "Or, for a pool that must survive fragmentation, reserve it at boot instead")
        ]
        configured = request.configured
        if configured is not None and configured.assignment is not None:
            # Else systemd-sysctl shrinks the boot pool back to the configured count.
            steps.append(
                fixes.comment_out(
                    [configured.assignment],
                    "With the boot reservation, drop the sysctl that resizes the pool after boot (%s)" % configured.where,
                )
            )
        return steps
    count_path = pool.source if pool.source.endswith("nr_hugepages") else "/proc/sys/vm/nr_hugepages"
    steps += fixes.runtime(
        "Compact memory, then ask again and check what the kernel allocated",
        [
            WriteKernel(("/proc/sys/vm/compact_memory",), "1"),
            WriteKernel((count_path,), str(request.count)),
            Show("cat %s" % count_path),
        ],
    )
    if request.on_cmdline and _unsized_before_5_7(f, request):
        steps.append(_boot_reservation(f, request, "Name the size before the count on the kernel command line"))
    elif request.on_cmdline and _boot_release_covers(f, request, pool):
        steps.append(
            _boot_pools(
                f,
                request.page_size,
                request.count,
                "Keep asking for %d pages at boot: releasing the unused pool there (hugepages.unused) frees %s, more than "
                "the %s missing" % (request.count, gib(_boot_freed(f)), gib((request.count - pool.persistent) * request.page_size)),
            )
        )
    elif request.on_cmdline:
        # Reserved at boot and still short: the memory was not there to take. Asking for what
        # the kernel could reserve makes the line say what the host has.
        steps.append(
            _boot_pools(
                f,
                request.page_size,
                pool.persistent,
                "Ask the kernel command line for no more than the pool holds, %d pages (%s now): what the kernel could "
                "reserve, or what it was shrunk to on purpose" % (pool.persistent, request.source),
            )
        )
    else:
        steps.append(_boot_reservation(f, request, "Reserve the pool at boot"))
        if request.assignment is not None:
            steps.append(
                fixes.comment_out(
                    [request.assignment],
                    "Then drop the sysctl that resizes the pool after boot (%s), so boot-time reservation is the one source"
                    % request.where,
                )
            )
    if pool.idle:
        steps += _drop_request_steps(f, request, "Or, if nothing here maps hugetlbfs, drop the request")
    return steps


def _keep_pool_steps(f, request, pool):
    """The other choice where the pool competes with the model: ask for what it holds."""
    purpose = "Or keep the pool as it is, for the model's sake: ask for the %d pages it holds" % pool.persistent
    if request.from_user:
        return [Step("%s (--hugepages %d)" % (purpose, pool.persistent), (), False, None)]
    if request.on_cmdline:
        return [_boot_pools(f, request.page_size, pool.persistent, purpose)]
    if request.assignment is not None:
        return f.fixes.sysctl([("vm.nr_hugepages", str(pool.persistent))], "hugepages", purpose)
    return []


def _drop_request_steps(f, request, purpose):
    """Steps that stop asking for ``request``'s pool, in the configuration it came from."""
    fixes = f.fixes
    if request.assignment is not None:
        return [fixes.comment_out([request.assignment], purpose)]
    rc = f.rc_local
    if request.script is not None and rc is not None:
        first, last = rc.command_at(request.line)
        lines = tuple((n, rc.lines[n - 1]) for n in range(first, last + 1) if rc.lines[n - 1].strip()[:1] not in ("", "#"))
        return [fixes.step("%s: comment out line %d of %s" % (purpose, request.line, rc.path), [CommentLines(rc.path, lines)], True, False)]
    if request.on_cmdline:
        return [_boot_pools(f, request.page_size, 0, purpose)]
    return []


# Memory a boot-time reservation must leave to the kernel and the programs that run beside it.
def _boot_margin(mem_total: int) -> int:
    return max(2 << 30, mem_total // 10)


def _boot_reservation(f, request, purpose):
    """A kernel command line step reserving ``request`` at boot, keeping other sizes' pools."""
    return _boot_pools(f, request.page_size, request.count, purpose)


def _boot_pools(f, size, count, purpose):
    """A kernel command line step that sets the boot-time pool of ``size`` to ``count`` pages
    (0: drop it) and writes every other size's pool as the huge page findings together want
    it, since the boot loader tools remove every ``hugepagesz=``/``hugepages=`` pair at once:
    each step then prints the same final line, whichever is run last."""
    plan, why = _boot_plan(f)
    plan[size] = count
    args = []
    carried = []
    for other in sorted(plan):
        if plan[other]:
            args += ["hugepagesz=%s" % kernel_size(other), "hugepages=%d" % plan[other]]
        if other != size and other in why:
            carried.append("%s pages → %d, %s" % (_size(other), plan[other], why[other]))
    if carried:
        purpose += " (with the other pool changes on the same line: %s)" % "; ".join(carried)
    remove = ["hugepagesz", "hugepages"]
    default = _default_size_param(f)
    if default is not None:
        remove.insert(0, "default_hugepagesz")
        if plan.get(default):
            args = ["default_hugepagesz=%s" % kernel_size(default)] + args
        else:
            # With no pool of that size left, a vm.nr_hugepages written later would count pages
            # of it (hugetlbpage.rst): the default goes back to the base size with the pool.
            purpose += "; `default_hugepagesz=%s` goes with the last pool of that size" % kernel_size(default)
    mem = f.meminfo
    # Boot-time gigantic pages are given back to MemTotal (gather_bootmem_prealloc), so it is
    # all of RAM either way.
    total = mem.get("MemTotal", 0) if mem else 0
    reserved = sum(size * pages for size, pages in plan.items())
    if total and reserved > total - _boot_margin(total):
        # Boot reservations are taken before anything else runs: too large and the host boots starved or not at all.
        purpose += "; the line reserves %s of %s and leaves %s to everything else: ask for fewer pages unless that is truly enough" % (
            gib(reserved),
            gib(total),
            gib(max(total - reserved, 0)),
        )
    return f.fixes.kernel_args(args, remove, purpose)


def _default_size_param(f):
    """The size ``default_hugepagesz=`` names on the line the next boot gets (else the running
    one), or None."""
    from ai_doctor.facts.cmdline import memparse

    for line in (f.boot_line, f.cmdline):
        if line:
            chosen = line.first("default_hugepagesz")
            return memparse(chosen.value) if chosen is not None and chosen.value else None
    return None


# Pages of this size or larger are gigantic (above the buddy allocator's largest block with
# 4 KiB base pages): before 5.7 they come only from counts parsed after their hugepagesz=.
_GIGANTIC = 8 << 20


def _boot_freed(f) -> int:
    """Bytes the boot plan frees by no longer reserving unused pools at boot."""
    reserved = _boot_pool_sizes(f)
    return sum(u.spare for u in f.unused_pools if u.pool.page_size in reserved)


def _boot_release_covers(f, request, pool) -> bool:
    """Whether releasing unused boot pools frees at least what ``request`` lacks at boot."""
    return _boot_freed(f) >= (request.count - pool.persistent) * request.page_size


def _unsized_before_5_7(f, request) -> bool:
    """Whether a pre-5.7 kernel took ``request``'s count from the slot before any hugepagesz=,
    which it never allocates for a gigantic default size."""
    if not request.on_cmdline or request.page_size < _GIGANTIC:
        return False
    return any(item.leading and item.page_size == request.page_size for item in _cmdline_pools(f))


def _short_requests(f):
    """(request, pool or None, impossible) for every requested pool the kernel holds less of."""
    pools, mem = f.hugepages, f.meminfo
    next_boot = _next_boot_pools(f)
    found = []
    for request in f.hugepage_requests:
        if request.count <= 0:
            continue
        pool = pools.pool(request.page_size)
        # Surplus pages (nr_overcommit_hugepages) are lent for now, not the pool asked for.
        if pool is not None and pool.persistent >= request.count:
            continue
        if request.on_cmdline and next_boot is not None and pool is not None:
            # The boot loader no longer asks for it (a pool released, a reboot pending): what
            # the running line asked for is history.
            if pool.persistent >= next_boot.get(request.page_size, 0):
                continue
        impossible = bool(mem) and request.count * request.page_size > mem.get("MemTotal", 0)
        found.append((request, pool, impossible))
    return found


def _boot_plan(f):
    """The boot-time pools once every huge page finding's boot step is taken: (pages by size,
    the rule behind each change)."""
    plan = {}
    why = {}
    for item in _cmdline_pools(f):
        if item.page_size:
            plan[item.page_size] = item.per_node or item.count
            if item.per_node:
                why[item.page_size] = "hugepages.shortfall: the per-node form this kernel cannot read, written plain"
    for request, pool, impossible in _short_requests(f):
        if pool is None or impossible:
            continue
        if request.on_cmdline and not _unsized_before_5_7(f, request) and not _boot_release_covers(f, request, pool):
            plan[request.page_size] = pool.persistent  # what the kernel could reserve
        else:
            plan[request.page_size] = request.count
        why[request.page_size] = "hugepages.shortfall"
    for unused in f.unused_pools:
        size = unused.pool.page_size
        if plan.get(size, 0) > unused.keep:
            plan[size] = unused.keep
            why[size] = "hugepages.unused"
    return plan, why


def _boot_pool_sizes(f):
    """Page sizes the kernel command line reserves a pool of."""
    return {item.page_size for item in _cmdline_pools(f) if item.page_size and item.count}


def _next_boot_pools(f):
    """Pages by size that the boot loader gives the default kernel at the next boot, or None
    where that is not known (no boot loader configuration here)."""
    line = f.boot_line
    if not line:
        return None
    version = kernel_version(f.release) if f.release else None
    return {item.page_size: item.count for item in line.hugepage_requests(f.hugepages.default_size, version) if item.page_size}


def _cmdline_pools(f):
    """The pools the running kernel's command line asks for, read by that kernel's rules."""
    cmdline = f.cmdline
    if not cmdline:
        return []
    return cmdline.hugepage_requests(f.hugepages.default_size, kernel_version(f.release) if f.release else None)


@rule(
    "hugepages.unused",
    "Static huge page pool reserved but unused",
    Severity.MEDIUM,
    needs=("hugepages",),
    uses=("model", "meminfo", "hugepage_requests", "cmdline", "boot_line", "release", "unused_pools", "grown_pools", "fixes", "running"),
)
def unused(f):
    """A static huge page pool is reserved and every page of it is free.

    Pool pages are taken out of ordinary memory when the pool is set: they are not in
    MemAvailable, the page cache cannot use them, ordinary allocations cannot use them, and
    under vm.overcommit_memory=2 they are subtracted before CommitLimit is computed. Only
    hugetlbfs users (mmap with MAP_HUGETLB, SHM_HUGETLB, files on a hugetlbfs mount, e.g.
    DPDK or a database configured for huge pages) consume them; model loaders such as
    safetensors (mmap) and torch.load do not. A pool with HugePages_Free == HugePages_Total
    and no reservations is memory the model cannot use.

    Severity is medium, high when releasing the pool is what would let the model fit
    (model size > MemAvailable + free swap, but not by more than the pool).

    Reference: Documentation/admin-guide/mm/hugetlbpage.rst; Documentation/filesystems/proc.rst
    (MemAvailable, CommitLimit).
    """
    pools = f.hugepages
    if pools.supported is None and not pools.pools:
        return _no_pools(f)
    requests = {r.page_size: r for r in f.hugepage_requests}
    # A pool declared with --hugepages is wanted here, used or not; a short one is
    # hugepages.shortfall's to judge, which also offers dropping an idle request.
    declared = [p for p in pools.pools.values() if p.total > 0 and getattr(requests.get(p.page_size), "from_user", False)]
    idle = f.unused_pools
    if not idle:
        if declared:
            return Pass("the pool of %s pages is declared as needed (--hugepages)" % ", ".join(_size(p.page_size) for p in declared))
        grown = f.grown_pools
        short = [p for p in pools.pools.values() if p.idle and p.page_size not in grown]
        if short:
            return Pass(
                "the idle pool of %s pages falls short of its request: hugepages.shortfall covers it"
                % ", ".join(_size(p.page_size) for p in short)
            )
        busy = [p for p in pools.pools.values() if p.total > 0]
        if busy and all(p.idle for p in busy):
            return Pass(
                "the pool of %s pages is new at this boot: whether anything uses it shows once the host runs"
                % ", ".join(_size(p.page_size) for p in busy)
            )
        return Pass("pools in use" if busy else "no static huge page pool is reserved")
    idle_bytes = sum(u.spare for u in idle)
    model, mem = f.model, f.meminfo
    severity = None
    pushes = ""
    if model and mem and "MemAvailable" in mem:
        room = mem.get("MemAvailable") + mem.get("SwapFree", 0)
        if room < model.size <= room + idle_bytes:
            severity = Severity.HIGH
            pushes = " The model (%s) does not fit in what is available (%s) but would with the pool released." % (
                gib(model.size),
                gib(room),
            )
    issues = []
    for unused in idle:
        pool = unused.pool
        message = (
            "%d huge pages of %s (%s) are reserved and none is used: that memory is out of MemAvailable and unusable "
            "for the page cache and for ordinary allocations." % (pool.total, _size(pool.page_size), gib(pool.bytes_total))
        )
        if unused.keep:
            message += " --hugepages declares %d of them needed; the other %d (%s) only cost memory." % (
                unused.keep,
                pool.total - unused.keep,
                gib(unused.spare),
            )
        else:
            message += (
                " Model loaders (safetensors mmap, torch.load) do not use hugetlbfs, so unless a hugetlbfs user (DPDK, "
                "a database with huge pages on) is meant to run here, the pool only costs memory."
            )
        evidence = [_pool_evidence(pool)]
        request = requests.get(pool.page_size)
        if request is not None:
            evidence.append(_request_evidence(request))
        steps = _release_steps(f, pool, request, unused.keep)
        issues.append(Issue(message + pushes, evidence, steps, severity=severity, impact=unused.spare))
    return issues


def _no_pools(f):
    if f.running:
        return Skip("no huge page pool could be read (no /proc/meminfo pool lines, no /sys/kernel/mm/hugepages)")
    if not f.cmdline:
        return Skip("an image whose kernel command line is not known (%s): the pools it reserves at boot cannot be told" % f.cmdline.reason)
    asked = [r for r in f.hugepage_requests if r.count > 0]
    said = "; ".join("%d × %s: %s at %s" % (r.count, _size(r.page_size), r.source, r.where) for r in asked) or "none"
    return Skip(
        "an image: its pools are allocated when it boots, and whether they can be, and are used, shows on the running "
        "host (pools asked for: %s)" % said
    )


def _release_steps(f, pool, request, keep=0):
    fixes = f.fixes
    what = "Shrink the pool to the %d pages declared" % keep if keep else "Release the pool"
    if pool.page_size == f.hugepages.default_size:
        steps = fixes.sysctl([("vm.nr_hugepages", str(keep))], "hugepages", what)
    else:
        steps = fixes.sysfs([pool.source], str(keep), what)
    next_boot = _next_boot_pools(f)
    if pool.page_size in _boot_pool_sizes(f) and (next_boot is None or next_boot.get(pool.page_size, 0) > keep):
        # Otherwise the next boot reserves it again, before any sysctl file is read (unless
        # the boot loader already stopped asking).
        steps.append(_boot_pools(f, pool.page_size, keep, "Reserve only those at boot" if keep else "Stop reserving it at boot"))
    return steps
