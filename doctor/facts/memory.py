"""Memory facts: /proc/meminfo, the huge page pools and the pools asked for.

References: Documentation/filesystems/proc.rst (meminfo fields),
Documentation/admin-guide/mm/hugetlbpage.rst (pools and their sysfs files). The mode choice
parser is shared with the THP facts (doctor/facts/thp.py) and the block device schedulers.
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.facts.system import kernel_version
from ai_doctor.record import Record

MEMINFO = "/proc/meminfo"
HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"


class MemInfo(Record):
    """meminfo fields: sizes in bytes (the kernel writes kB, meaning KiB), HugePages_* as counts."""

    __slots__ = ("values", "notes", "path")

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def __contains__(self, key) -> bool:
        return key in self.values


def parse_meminfo(text: str) -> MemInfo:
    values = {}
    notes = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or not key.strip() or not fields or len(fields) > 2:
            notes.append("line %d not understood: %r" % (number, line[:80]))
            continue
        try:
            value = int(fields[0])
        except ValueError:
            notes.append("line %d has no number: %r" % (number, line[:80]))
            continue
        if len(fields) == 2:
            if fields[1].lower() != "kb":
                notes.append("line %d has an unknown unit: %r" % (number, line[:80]))
                continue
            value *= 1024
        values[key.strip()] = value
    return MemInfo(values, tuple(notes), MEMINFO)


@fact("meminfo")
def meminfo(host, facts):
    got = host.read_text(MEMINFO)
    if not got.ok:
        return unreadable(host, got, "cannot read")
    parsed = parse_meminfo(got.data)
    if "MemTotal" not in parsed:
        return Unavailable("%s has no MemTotal line (%d lines read)" % (MEMINFO, len(parsed.values)))
    return parsed


class Pool(Record):
    """One huge page pool (one page size): counts of pages, and where they were read."""

    __slots__ = ("page_size", "total", "free", "reserved", "surplus", "source")

    @property
    def bytes_total(self) -> int:
        return self.total * self.page_size

    @property
    def persistent(self) -> int:
        """Pages of the pool proper: surplus pages (nr_overcommit_hugepages) come and go."""
        return self.total - self.surplus

    @property
    def idle(self) -> bool:
        """Reserved, and not one page used, promised (reserved for a mapping) or surplus."""
        return self.total > 0 and self.free == self.total and self.reserved == 0 and self.surplus == 0


class HugePages(Record):
    """The huge page pools by page size, and the default size (meminfo's Hugepagesize).

    ``supported`` is False when the kernel shows no trace of hugetlb support, None when that
    could not be seen (no /proc in an image).
    """

    __slots__ = ("supported", "default_size", "pools", "evidence")

    def pool(self, page_size=None):
        size = page_size or self.default_size
        return self.pools.get(size)


def _pool_counts(host, directory: str):
    counts = {}
    for name in ("nr_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages"):
        got = host.read_text("%s/%s" % (directory, name))
        if got.ok:
            try:
                counts[name] = int(got.data.strip())
            except ValueError:
                pass
    return counts


@fact("hugepages")
def hugepages(host, facts):
    mem = facts.get("meminfo")
    pools = {}
    listing = host.listdir(HUGEPAGES_DIR)
    if listing.ok:
        for name in listing.data:
            # hugepages-2048kB: the page size in kB
            if not (name.startswith("hugepages-") and name.endswith("kB")):
                continue
            try:
                size = int(name[len("hugepages-") : -2]) * 1024
            except ValueError:
                continue
            directory = "%s/%s" % (HUGEPAGES_DIR, name)
            counts = _pool_counts(host, directory)
            if "nr_hugepages" not in counts:
                continue
            pools[size] = Pool(
                size,
                counts["nr_hugepages"],
                counts.get("free_hugepages", 0),
                counts.get("resv_hugepages", 0),
                counts.get("surplus_hugepages", 0),
                directory + "/nr_hugepages",
            )
    default_size = mem.get("Hugepagesize") if mem else None
    if mem and default_size and default_size not in pools and "HugePages_Total" in mem:
        # Kernels and containers without the sysfs directory still show the default pool here.
        pools[default_size] = Pool(
            default_size,
            mem.get("HugePages_Total", 0),
            mem.get("HugePages_Free", 0),
            mem.get("HugePages_Rsvd", 0),
            mem.get("HugePages_Surp", 0),
            MEMINFO,
        )
    nr_hugepages = host.read_text("/proc/sys/vm/nr_hugepages")
    if pools or default_size or nr_hugepages.ok:
        supported = True
    elif mem and nr_hugepages.missing:
        supported = False  # meminfo was read and shows no trace of hugetlb
    else:
        supported = None  # nothing to judge by: an image, or /proc unreadable
    evidence = (
        ("/proc/sys/vm/nr_hugepages", nr_hugepages.describe() if not nr_hugepages.ok else nr_hugepages.data.strip()),
        (MEMINFO + " Hugepagesize", str(default_size // 1024) + " kB" if default_size else "absent"),
    )
    return HugePages(supported, default_size, pools, evidence)


def parse_choice(text: str):
    """``always [madvise] never`` → (``madvise``, (``always``, ``madvise``, ``never``))."""
    words = text.split()
    active = None
    choices = []
    for word in words:
        if word.startswith("[") and word.endswith("]") and len(word) > 2:
            word = word[1:-1]
            active = word
        choices.append(word)
    if active is None and len(choices) == 1:
        active = choices[0]
    return active, tuple(choices)


class PoolRequest(Record):
    """A huge page pool someone asked for: size, pages, where (``--hugepages``, a sysctl file
    and line, the kernel command line), and the sysctl assignment behind it if any.

    For ``--hugepages``, ``configured`` is what the host's own configuration asks for (another
    PoolRequest, or None when nothing does). ``replaces`` is the request this one overrides at
    boot (a sysctl file resizing a pool the kernel command line reserved). ``per_node``: the
    pages a per-node ``hugepages=`` names where the kernel (before 5.16) reads it as ``count``.
    """

    __slots__ = ("page_size", "count", "source", "path", "line", "assignment", "configured", "replaces", "per_node", "script")
    _defaults = {"configured": None, "replaces": None, "per_node": None, "script": None}

    def chain(self):
        """This request and every one it overrides, latest first."""
        found, seen = [], self
        while seen is not None:
            found.append(seen)
            seen = seen.configured if seen.from_user else seen.replaces
        return found

    @property
    def from_user(self) -> bool:
        return self.path == FROM_USER

    @property
    def on_cmdline(self) -> bool:
        """Asked for on the kernel command line (the running one, or an image's boot line)."""
        return self.assignment is None and self.script is None and not self.from_user

    @property
    def where(self) -> str:
        return "%s:%d" % (self.path, self.line) if self.line else self.path


FROM_USER = "aidoctor's command line"


@fact("hugepage_requests")
def hugepage_requests(host, facts):
    """The pool each page size should have, by what is applied last.

    Boot applies the kernel command line first and then the sysctl files, which resize the
    default pool; ``--hugepages`` states what the user wants now and overrides both.
    """
    pools = facts.get("hugepages")
    default_size = (pools.default_size if pools else None) or 2 << 20
    requests = {}
    cmdline = facts.get("cmdline")
    if cmdline:
        release = facts.get("release")
        for item in cmdline.hugepage_requests(default_size, kernel_version(release) if release else None):
            if item.page_size:
                path, line = cmdline.origin(item.index) if item.index is not None else (cmdline.source, None)
                requests[item.page_size] = PoolRequest(item.page_size, item.count, item.text, path, line, None, per_node=item.per_node)
    config = facts.get("sysctl_config")
    applier = facts.get("sysctl_applier")
    # Files nothing applies at boot ask for nothing (persist.sysctl-not-applied says so).
    if config and (not applier or applier.applies):
        assignment = config.effective("vm.nr_hugepages")
        if assignment is not None:
            try:
                count = int(assignment.value)
            except ValueError:
                count = None
            if count is not None:
                requests[default_size] = PoolRequest(
                    default_size,
                    count,
                    "vm.nr_hugepages = %d" % count,
                    assignment.path,
                    assignment.line,
                    assignment,
                    replaces=requests.get(default_size),
                )
    late = rc_local_pool(facts.get("rc_local"))
    if late is not None:
        # rc-local.service runs after systemd-sysctl: its write resizes the pool last.
        count, number, text = late
        rc = facts.get("rc_local")
        requests[default_size] = PoolRequest(
            default_size, count, "`%s`" % text, rc.path, number, None, replaces=requests.get(default_size), script=rc.path
        )
    wanted = facts.request.hugepages if facts.request is not None else None
    if wanted is not None:
        configured = requests.get(default_size)
        requests[default_size] = PoolRequest(default_size, wanted, "--hugepages %d" % wanted, FROM_USER, None, None, configured)
    return tuple(requests[size] for size in sorted(requests))


def rc_local_pool(rc):
    """(pages, line number, text) of the last rc.local line that boot runs and that sets
    vm.nr_hugepages (``sysctl -w``, ``echo N > /proc/sys/vm/nr_hugepages``, ``| tee``), or None."""
    from ai_doctor.facts.sysctl import sysctl_int, sysctl_writes

    found = None
    for number, raw in enumerate(rc.lines if rc else (), 1):
        if "nr_hugepages" not in raw or not rc.runs(number):
            continue
        for key, value in sysctl_writes(raw.strip()) or ():
            count = sysctl_int(value)
            if key == "vm.nr_hugepages" and count is not None and count >= 0:
                found = (count, number, raw.strip())
    return found


class UnusedPool(Record):
    """An idle pool and the pages of it still wanted (``keep``: what ``--hugepages`` declares,
    else 0); ``spare`` bytes are the rest."""

    __slots__ = ("pool", "keep")

    @property
    def spare(self) -> int:
        return (self.pool.total - self.keep) * self.pool.page_size


@fact("unused_pools")
def unused_pools(host, facts):
    """Pools reserved with every page free, beyond what anything claims: ``--hugepages N``
    keeps N of them (0 keeps none), and a pool short of what a request asks is a shortfall's
    to judge. One answer for every rule that speaks of memory an unused pool holds."""
    pools = facts.get("hugepages")
    if not pools:
        return ()
    requests = {r.page_size: r for r in facts.get("hugepage_requests") or ()}
    # A pool the simulated next boot grows: nothing has had a chance to use its new pages.
    grown = facts.get("grown_pools")
    found = []
    for pool in pools.pools.values():
        request = requests.get(pool.page_size)
        if not pool.idle or pool.page_size in grown:
            continue
        if request is not None and request.from_user:
            if request.count < pool.total:
                found.append(UnusedPool(pool, request.count))
        elif request is None or request.count <= pool.persistent:
            found.append(UnusedPool(pool, 0))
    return tuple(sorted(found, key=lambda u: u.pool.page_size))


@fact("releasable_pools")
def releasable_pools(host, facts):
    """Huge pages held in pools nothing needs: the unused pools, and the free pages of a pool
    whose request is larger than the host's memory (it can never be met, so what it holds is
    there by mistake, e.g. a vm.nr_hugepages that default_hugepagesz= turned into gigantic
    pages). The pages in use stay."""
    found = list(facts.get("unused_pools") or ())
    pools, mem = facts.get("hugepages"), facts.get("meminfo")
    if not pools or not mem:
        return tuple(found)
    requests = {r.page_size: r for r in facts.get("hugepage_requests") or ()}
    for pool in pools.pools.values():
        request = requests.get(pool.page_size)
        if any(u.pool.page_size == pool.page_size for u in found) or request is None or request.from_user:
            continue
        free = pool.free - pool.reserved
        if request.count * pool.page_size > mem.get("MemTotal", 0) and free > 0:
            found.append(UnusedPool(pool, pool.total - free))
    return tuple(sorted(found, key=lambda u: u.pool.page_size))


@fact("grown_pools")
def grown_pools(host, facts):
    """Page sizes whose pool the simulated next boot (aidoctor --next-boot) makes larger than
    it runs now: nothing has used the new pages yet. Empty for a host as it runs."""
    return frozenset(getattr(host, "grown_pools", ()))
