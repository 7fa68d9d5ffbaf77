"""``aidoctor --next-boot``: the host as it will be after a reboot, as a Host.

The files the checks read about the running kernel are answered from the next-boot facts
(ai_doctor.facts.boot) instead of from /proc and /sys: the command line, the kernel release,
sysctls after the boot's applier, meminfo and the huge page pools, THP modes, governors, I/O
schedulers and the loaded GPU modules. Everything else (the configuration itself) is read as it
is, so the rules run unchanged over it; ``notes`` say what was simulated and what assumed.
"""

from __future__ import annotations

from ai_doctor.facts import Facts
from ai_doctor.facts.sysctl import commit_limit, key_path, sysctl_int
from ai_doctor.host import MISSING, OK, Host, Read, _normal

OSRELEASE = "/proc/sys/kernel/osrelease"
MEMINFO = "/proc/meminfo"
HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"


class NextBootHost(Host):
    """A Host whose files about the running kernel are the next boot's (``files``: path → text,
    None for a file the next boot does not have)."""

    next_boot = True

    def __init__(self, base, files, notes, grown=(), links=None):
        self.__dict__.update(base.__dict__)
        self.log = []
        self._links = dict(base._links)
        self.files = files
        # Links the next boot makes that are not there now (/dev/char for NVIDIA nodes).
        self.made_links = dict(links or {})
        self.notes = tuple(notes)
        # Page sizes whose pool the next boot makes larger than it is now: what uses the new
        # pages has never been seen.
        self.grown_pools = frozenset(grown)

    def _read(self, path, cap):
        path = _normal(path)
        if path in self.files and self.files[path] is not None:
            data = self.files[path].encode("utf-8", "surrogateescape")
            return Read(path, OK, data[:cap], None, len(data) > cap)
        return Host._read(self, path, cap)

    def readlink(self, path):
        path = _normal(path)
        if path in self.made_links:
            return self._note("link", Read(path, OK, self.made_links[path], None, False))
        return Host.readlink(self, path)

    def _override(self, path):
        if path in self.files and self.files[path] is None:
            return Read(path, MISSING, None, None, False)
        return Host._override(self, path)


def simulate(host, request=None):
    """The Host of ``host``'s next boot; an image is returned as it is (it is judged as it
    boots already)."""
    facts = Facts(host, request)
    if not facts.get("running"):
        return host
    files, notes = {}, []
    _cmdline(facts, files, notes)
    _sysctls(facts, files, notes)
    _memory(facts, files, notes)
    grown = _grown(facts)
    _thp(facts, files, notes)
    governors = facts.get("governors_at_boot")
    if governors:
        notes.extend(governors.notes)
        for path, value in governors.governors.items():
            files[path] = value + "\n"
    _schedulers(facts, files)
    _gpu(facts, files)
    links = _gpu_devices(facts, files, notes)
    notes.append("memory in use now (processes, pages of a pool in use) is taken as in use after the reboot too")
    return NextBootHost(host, files, notes, grown, links)


def _grown(facts):
    pools, boot = facts.get("hugepages"), facts.get("pools_at_boot")
    if not pools or not boot:
        return ()
    return tuple(size for size, pool in boot.pools.items() if pool.total > (pools.pools[size].total if size in pools.pools else 0))


def _cmdline(facts, files, notes):
    boot = facts.get("boot_cmdline")
    if boot:
        files["/proc/cmdline"] = boot.line.raw + "\n"
        notes.append("kernel command line: %s" % boot.how)
    else:
        notes.append("kernel command line: %s; the running one is kept" % boot.reason)
    release, running = facts.get("boot_release"), facts.get("release")
    if release and running and release != running:
        files[OSRELEASE] = release + "\n"
        default = facts.get("default_boot")
        notes.append("kernel: %s (%s)" % (release, default.how if default else "the boot loader's default"))


def _sysctls(facts, files, notes):
    after = facts.get("sysctl_at_boot")
    if not after:
        return
    applier = after.applier
    if applier.applies:
        notes.append("sysctl files: applied by %s (%s)" % (applier.name, applier.how))
    else:
        notes.append("sysctl files: not applied (%s)" % applier.how)
    host = facts.host
    for key, value in after.values.items():
        path = key_path(key)
        # Only keys this kernel has; the pool is written from what the kernel allocates.
        if key != "vm.nr_hugepages" and host.read_text(path, cap=4096).ok:
            files[path] = value.value + "\n"


def _memory(facts, files, notes):
    mem = facts.get("meminfo")
    got = facts.host.read_text(MEMINFO)
    if not mem or not got.ok:
        return
    pools = facts.get("hugepages")
    boot = facts.get("pools_at_boot")
    changes = {}
    held_now = sum(p.total * p.page_size for p in pools.pools.values()) if pools else 0
    held_next = held_now
    if boot:
        notes.extend("huge pages: %s" % note for note in boot.notes)
        held_next = sum(p.total * p.page_size for p in boot.pools.values())
        for size, pool in boot.pools.items():
            folder = "%s/hugepages-%dkB" % (HUGEPAGES_DIR, size // 1024)
            if facts.host.read_text(folder + "/nr_hugepages", cap=64).ok:
                for name, value in (
                    ("nr_hugepages", pool.total),
                    ("free_hugepages", pool.free),
                    ("resv_hugepages", pool.reserved),
                    ("surplus_hugepages", 0),
                ):
                    files["%s/%s" % (folder, name)] = "%d\n" % value
        default = boot.pool(boot.default_size)
        if default is not None:
            files[key_path("vm.nr_hugepages")] = "%d\n" % default.total
            changes.update(
                HugePages_Total=default.total,
                HugePages_Free=default.free,
                HugePages_Rsvd=default.reserved,
                HugePages_Surp=0,
                Hugepagesize=boot.default_size // 1024,
            )
        changes["Hugetlb"] = held_next // 1024
    freed = held_now - held_next  # pages leaving the pools come back as ordinary memory
    for key in ("MemAvailable", "MemFree"):
        if key in mem:
            changes[key] = max(mem.get(key) + freed, 0) // 1024
    limit = _boot_commit_limit(facts, mem, held_next)
    if limit is not None:
        changes["CommitLimit"] = limit // 1024
    files[MEMINFO] = _rewrite_meminfo(got.data, changes)


def _boot_commit_limit(facts, mem, pool_bytes):
    """CommitLimit after boot (mm/util.c vm_commit_limit): kbytes, else (RAM − huge pages) ×
    ratio / 100, plus swap."""
    after = facts.get("sysctl_at_boot")
    runtime = facts.get("sysctl")

    def value(key):
        found = after.get(key) if after else None
        if found is None and runtime:
            found = runtime.get(key)
        return sysctl_int(found)

    kbytes, ratio = value("vm.overcommit_kbytes"), value("vm.overcommit_ratio")
    if kbytes is None or ratio is None:
        return None
    return commit_limit(mem, pool_bytes, ratio, kbytes)


def _rewrite_meminfo(text: str, changes) -> str:
    """meminfo with the values of ``changes`` (kB, or counts for HugePages_*) replaced, in the
    kernel's own layout."""
    lines = []
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        name = key.strip()
        if sep and name in changes:
            unit = " kB" if rest.rstrip().endswith(" kB") else ""
            body = rest.rstrip()[: len(rest.rstrip()) - len(unit)]
            number = str(changes[name])
            line = "%s:%s%s" % (key, number.rjust(max(len(body), len(number) + 1)), unit)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _thp(facts, files, notes):
    thp, boot = facts.get("thp"), facts.get("thp_at_boot")
    if not thp or not boot:
        return
    notes.extend(boot.notes)
    if boot.top is not None:
        files[thp.top.path] = _choices(thp.top.choices, boot.top)
    for size, control in thp.sizes.items():
        mode = boot.sizes.get(size)
        if mode is not None:
            files[control.path] = _choices(control.choices, mode)


def _choices(choices, mode) -> str:
    return " ".join("[%s]" % c if c == mode else c for c in choices) + "\n"


def _schedulers(facts, files):
    devices = {d.scheduler_path: d for d in facts.get("block_devices") or ()}
    for path, value in (facts.get("schedulers_at_boot") or {}).items():
        files[path] = _choices(devices[path].schedulers, value)


def _gpu(facts, files):
    boot = facts.get("gpu_at_boot")
    if not boot:
        return
    host = facts.host
    if boot.nvidia is None:
        files["/sys/module/nvidia/version"] = None
        files["/proc/driver/nvidia/version"] = None
    else:
        files["/sys/module/nvidia/version"] = boot.nvidia + "\n"
        got = host.read_text("/proc/driver/nvidia/version", cap=65536)
        if got.ok:
            old = facts.get("nvidia").loaded
            files["/proc/driver/nvidia/version"] = got.data.replace(old, boot.nvidia) if old else got.data
    modules = host.read_text("/proc/modules", cap=4 << 20)
    if modules.ok:
        kept = []
        for line in modules.data.splitlines():
            name = line.split(" ", 1)[0]
            if (name == "nouveau" and not boot.nouveau) or (name.startswith("nvidia") and boot.nvidia is None):
                continue
            kept.append(line)
        files["/proc/modules"] = "".join(line + "\n" for line in kept)


def _gpu_devices(facts, files, notes):
    """What the next boot does to the GPU device plumbing (doctor/facts/gpudevices.py): the
    nvidia modules modules-load.d loads, the NVreg_PreserveVideoMemoryAllocations value the
    driver loads with, and the /dev/char links a udev rule makes when the driver binds.
    Returns those links."""
    boot = facts.get("gpu_devices_at_boot")
    gpu = facts.get("gpu_at_boot")
    if not boot or not gpu or gpu.nvidia is None:
        return {}
    host = facts.host
    modules = files.get("/proc/modules")
    if modules is None:
        got = host.read_text("/proc/modules", cap=4 << 20)
        modules = got.data if got.ok else None
    if modules is not None:
        present = {line.split(" ", 1)[0] for line in modules.splitlines()}
        added = [name for name in boot.modules if name not in present]
        if added:
            files["/proc/modules"] = modules + "".join("%s 0 0 - Live 0x0000000000000000 (POE)\n" % name for name in added)
            notes.append("modules-load.d loads %s" % ", ".join(added))
    if boot.preserve is not None:
        got = host.read_text("/proc/driver/nvidia/params", cap=65536)
        if got.ok:
            lines = [
                "PreserveVideoMemoryAllocations: %s" % boot.preserve if line.startswith("PreserveVideoMemoryAllocations:") else line
                for line in got.data.splitlines()
            ]
            files["/proc/driver/nvidia/params"] = "".join(line + "\n" for line in lines)
    if boot.links:
        notes.append("a udev rule makes /dev/char links for the NVIDIA device nodes")
    return boot.links
