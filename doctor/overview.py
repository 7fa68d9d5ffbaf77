"""The host at a glance: what a support engineer asks for first, for every report format.

Built once, after the checks, from the run's facts (most are already computed by then; the
rest read through the same Host, so a snapshot replays the overview too). A value that could
not be read is None here, with the reason under its key in ``unknown``; nothing is guessed.
:func:`rows` words it for the text, HTML and Markdown reports; JSON writes the values.
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable
from ai_doctor.record import Record
from ai_doctor.units import gib, page_size

# A kernel command line is at most a few KiB (COMMAND_LINE_SIZE); an image's boot line is host
# text and may be anything. The words show this much of it; JSON keeps all of it.
SHOWN_CMDLINE = 4096
OVERCOMMIT_WORDS = {0: "heuristic", 1: "always", 2: "strict"}
_VENDORS = {"nvidia": "NVIDIA", "amd": "AMD"}


class Cpu(Record):
    """Online CPUs, the first CPU's model, and NUMA memory nodes online (None: unknown)."""

    __slots__ = ("model", "count", "numa_nodes")


class Memory(Record):
    """/proc/meminfo's MemTotal, MemAvailable, SwapTotal and SwapFree, in bytes."""

    __slots__ = ("total", "available", "swap_total", "swap_free")


class HugePool(Record):
    """One huge page pool: page size in bytes, pages in it and pages free."""

    __slots__ = ("page_size", "total", "free")


class HugePages(Record):
    """Whether the kernel has hugetlb support, its default page size, and every pool."""

    __slots__ = ("supported", "default_size", "pools")


class Overcommit(Record):
    """vm.overcommit_memory, vm.overcommit_ratio and vm.overcommit_kbytes as numbers."""

    __slots__ = ("mode", "ratio", "kbytes")


class CgroupMemory(Record):
    """The cgroup version, this process's cgroup, and the smallest hard memory limit on its
    path with the file it was read from (``limit`` None: no limit)."""

    __slots__ = ("version", "cgroup", "limit", "path")


class Virtualization(Record):
    """Container: detected and its runtime. VM: True, False or None (not known), and the
    sign that said so (path and what it showed)."""

    __slots__ = ("container", "runtime", "vm", "vm_sign")


class Gpu(Record):
    """A GPU on the PCI bus: address, vendor (``nvidia``, ``amd``), ids, pci.ids name (None:
    not known) and bound driver (None: none)."""

    __slots__ = ("address", "vendor", "ids", "name", "driver")


class Gpus(Record):
    """The GPUs on the bus, and how many this process can use (in a container, its device
    nodes; else those on the bus or in the driver's list)."""

    __slots__ = ("devices", "usable")


class Driver(Record):
    """The loaded NVIDIA module's version (None: not loaded) and the versions of the
    user-space libraries programs load."""

    __slots__ = ("loaded", "libraries")


class Cuda(Record):
    """A CUDA release here (None where only ``major`` is known) and where it is."""

    __slots__ = ("version", "major", "where")


class Disk(Record):
    """A disk (loop, RAM, device-mapper and other virtual devices left out), its active I/O
    scheduler (None: not read), and for a hidden NVMe multipath path the namespace it serves."""

    __slots__ = ("name", "scheduler", "path_of")


class Cmdline(Record):
    """The kernel command line and where it was read (an image: its boot loader's files)."""

    __slots__ = ("text", "source")


class Overview(Record):
    """The host at a glance; ``unknown`` holds (key, reason) for each value not known."""

    __slots__ = (
        "cpu",
        "memory",
        "hugepages",
        "thp",
        "overcommit",
        "cgroup_memory",
        "virtualization",
        "gpus",
        "nvidia_driver",
        "cuda",
        "disks",
        "cmdline",
        "unknown",
    )

    def reason(self, key: str):
        return next((why for name, why in self.unknown if name == key), None)


class _Facts:
    """Facts for the overview: a provider that fails is an unknown value with its error, not
    a failed run (a rule that needs it has already reported the error)."""

    def __init__(self, facts):
        self.facts = facts
        self.unknown = []

    def get(self, name: str):
        try:
            return self.facts.get(name)
        except Exception as exc:  # noqa: BLE001 - the overview never stops a report
            return Unavailable("reading %s failed: %s: %s" % (name, type(exc).__name__, exc))

    def missing(self, key: str, reason) -> None:
        self.unknown.append((key, str(reason)))


def overview(facts) -> Overview:
    """The overview of the host ``facts`` read."""
    f = _Facts(facts)
    return Overview(
        cpu=_cpu(f),
        memory=_memory(f),
        hugepages=_hugepages(f),
        thp=_thp(f),
        overcommit=_overcommit(f),
        cgroup_memory=_cgroup(f),
        virtualization=_virtualization(f),
        gpus=_gpus(f),
        nvidia_driver=_driver(f),
        cuda=_cuda(f),
        disks=_disks(f),
        cmdline=_cmdline(f),
        unknown=tuple(f.unknown),
    )


def _cpu(f):
    cpus = f.get("cpus")
    if not cpus:
        f.missing("cpu", cpus.reason)
        return Cpu(None, None, None)
    if cpus.model_reason:
        f.missing("cpu.model", cpus.model_reason)
    if cpus.count_reason:
        f.missing("cpu.count", cpus.count_reason)
    numa = f.get("numa")
    if not numa:
        f.missing("cpu.numa_nodes", numa.reason)
    return Cpu(cpus.model, cpus.count, len(numa.nodes) if numa else None)


def _memory(f):
    mem = f.get("meminfo")
    if not mem:
        f.missing("memory", mem.reason)
        return None
    values = Memory(mem.get("MemTotal"), mem.get("MemAvailable"), mem.get("SwapTotal"), mem.get("SwapFree"))
    for key, field in (("MemAvailable", "available"), ("SwapTotal", "swap_total"), ("SwapFree", "swap_free")):
        if getattr(values, field) is None:
            # MemAvailable came in Linux 3.14; the others are always there on a real kernel.
            f.missing("memory." + field, "%s has no %s line" % (mem.path, key))
    return values


def _hugepages(f):
    pages = f.get("hugepages")
    if not pages:
        f.missing("hugepages", getattr(pages, "reason", "not read"))
        return None
    if pages.supported is None:
        mem = f.get("meminfo")
        f.missing("hugepages", mem.reason if not mem else "%s: %s" % pages.evidence[0])
        return None
    pools = tuple(HugePool(size, pages.pools[size].total, pages.pools[size].free) for size in sorted(pages.pools))
    return HugePages(pages.supported, pages.default_size, pools)


def _thp(f):
    thp = f.get("thp")
    if not thp:
        f.missing("thp", thp.reason)
        return None
    return thp.top.mode


def _overcommit(f):
    sysctl = f.get("sysctl")
    mode = sysctl.int("vm.overcommit_memory") if sysctl else None
    if mode is None:
        f.missing("overcommit", sysctl.reason if not sysctl else "vm.overcommit_memory is %r" % sysctl.get("vm.overcommit_memory"))
        return None
    return Overcommit(mode, sysctl.int("vm.overcommit_ratio"), sysctl.int("vm.overcommit_kbytes"))


def _cgroup(f):
    cgroup = f.get("cgroup_memory")
    if not cgroup:
        f.missing("cgroup_memory", cgroup.reason)
        return None
    return CgroupMemory(cgroup.version, cgroup.path, cgroup.limit, cgroup.limit_path)


def _virtualization(f):
    container = f.get("container")
    machine = f.get("machine")
    detected = bool(container.detected) if container else None
    if container is not None and not container:
        f.missing("virtualization.container", container.reason)
    vm = sign = None
    if machine:
        vm, sign = machine.virtual, "%s: %s" % (machine.path, machine.sign)
        if vm is None:
            f.missing("virtualization.vm", sign)
    else:
        f.missing("virtualization.vm", machine.reason)
    return Virtualization(detected, container.runtime if container else None, vm, sign)


def _gpus(f):
    gpus = f.get("gpus")
    if not gpus:
        f.missing("gpus", gpus.reason)
        return None
    names = {}
    if gpus.nvidia:
        # pci.ids is read only where there is an NVIDIA GPU to name (and kept in the cache).
        models = f.get("gpu_models")
        if models:
            names = {model.address: model.name for model in models.gpus}
        else:
            f.missing("gpus.name", models.reason)
    devices = tuple(Gpu(d.address, "nvidia", d.ids, names.get(d.address), d.driver) for d in gpus.nvidia)
    devices += tuple(Gpu(d.address, "amd", d.ids, None, d.driver) for d in gpus.amd)
    return Gpus(devices, gpus.count)


def _driver(f):
    nvidia = f.get("nvidia")
    if not nvidia:
        f.missing("nvidia_driver", nvidia.reason)
        return None
    return Driver(nvidia.loaded, tuple(nvidia.library_versions))


def _cuda(f):
    kits = f.get("cuda_toolkits")
    if not isinstance(kits, tuple):
        f.missing("cuda", getattr(kits, "reason", "not read"))
        return None
    return tuple(Cuda(kit.version, kit.major, kit.where) for kit in kits)


def _disks(f):
    devices = f.get("block_devices")
    if not devices:
        if isinstance(devices, Unavailable):
            f.missing("disks", devices.reason)
            return None
        return ()
    return tuple(Disk(d.name, d.scheduler, d.head if d.hidden else None) for d in devices if not d.is_virtual)


def _cmdline(f):
    line = f.get("cmdline")
    if not line:
        f.missing("cmdline", getattr(line, "reason", "no boot entry gives one"))
        return None
    return Cmdline(line.raw, line.source)


# -- in words ---------------------------------------------------------------------------------


def rows(view):
    """(label, words) for each line of the overview, for the text, HTML and Markdown reports;
    an unknown value reads ``unknown (why)``."""
    if view is None:
        return ()
    out = [("CPU", _cpu_words(view)), ("Memory", _memory_words(view)), ("Huge pages", _hugepage_words(view))]
    out.append(("THP", view.thp if view.thp else _unknown(view, "thp")))
    out.append(("Overcommit", _overcommit_words(view.overcommit) if view.overcommit else _unknown(view, "overcommit")))
    out.append(("Cgroup memory", _cgroup_words(view)))
    out.append(("Virtualization", _virtualization_words(view.virtualization, view)))
    out.append(("GPUs", _gpu_words(view)))
    nvidia_gpus = bool(view.gpus and any(gpu.vendor == "nvidia" for gpu in view.gpus.devices))
    driver = view.nvidia_driver
    if driver is None and view.reason("nvidia_driver"):
        out.append(("NVIDIA driver", _unknown(view, "nvidia_driver")))
    elif driver is not None and (driver.loaded or driver.libraries or nvidia_gpus):
        loaded = "%s loaded" % driver.loaded if driver.loaded else "module not loaded"
        libraries = "libraries %s" % ", ".join(driver.libraries) if driver.libraries else "no libraries"
        out.append(("NVIDIA driver", "%s; %s" % (loaded, libraries)))
    if view.cuda is None:
        out.append(("CUDA", _unknown(view, "cuda")))
    elif view.cuda or nvidia_gpus:
        out.append(("CUDA", ", ".join(_cuda_words(kit) for kit in view.cuda) or "none found"))
    out.append(("Disks", _disk_words(view.disks) if view.disks is not None else _unknown(view, "disks")))
    out.append(("Kernel cmdline", _cmdline_words(view.cmdline) if view.cmdline else _unknown(view, "cmdline")))
    return tuple(out)


def _unknown(view, key: str) -> str:
    why = view.reason(key)
    return "unknown (%s)" % why if why else "unknown"


def _cpu_words(view) -> str:
    cpu = view.cpu
    if cpu.count is None and cpu.model is None and view.reason("cpu"):
        return _unknown(view, "cpu")
    parts = ["%d CPUs" % cpu.count if cpu.count is not None else "CPU count " + _unknown(view, "cpu.count")]
    parts.append(cpu.model if cpu.model else "model " + _unknown(view, "cpu.model"))
    if cpu.numa_nodes is not None:
        parts.append("%d NUMA node%s" % (cpu.numa_nodes, "" if cpu.numa_nodes == 1 else "s"))
    return ", ".join(parts)


def _size(value) -> str:
    return gib(value) if value is not None else "unknown"


def _memory_words(view) -> str:
    mem = view.memory
    if mem is None:
        return _unknown(view, "memory")
    words = "%s total, %s available" % (_size(mem.total), _size(mem.available))
    if mem.swap_total == 0:
        return words + "; no swap"
    return words + "; swap %s (%s free)" % (_size(mem.swap_total), _size(mem.swap_free))


def _hugepage_words(view) -> str:
    pages = view.hugepages
    if pages is None:
        return _unknown(view, "hugepages")
    if not pages.supported:
        return "not supported by this kernel"
    marked = len(pages.pools) > 1
    words = []
    for pool in pages.pools:
        size = page_size(pool.page_size) + (" (default)" if marked and pool.page_size == pages.default_size else "")
        words.append("%s: %d page%s, %d free" % (size, pool.total, "" if pool.total == 1 else "s", pool.free))
    return "; ".join(words) or "no pools"


def _overcommit_words(over) -> str:
    words = "%d (%s" % (over.mode, OVERCOMMIT_WORDS.get(over.mode, "not a mode the kernel knows"))
    if over.mode == 2:
        # vm.rst: overcommit_kbytes, when set, takes the place of overcommit_ratio.
        if over.kbytes:
            words += ", overcommit_kbytes %d" % over.kbytes
        elif over.ratio is not None:
            words += ", overcommit_ratio %d" % over.ratio
    return words + ")"


def _cgroup_words(view) -> str:
    cgroup = view.cgroup_memory
    if cgroup is None:
        return _unknown(view, "cgroup_memory")
    if cgroup.limit is None:
        return "no limit (cgroup %s %s)" % (cgroup.version, cgroup.cgroup)
    return "%s (%s, cgroup %s %s)" % (gib(cgroup.limit), cgroup.path, cgroup.version, cgroup.cgroup)


def _virtualization_words(virt, view) -> str:
    if virt.container is None:
        container = "container " + _unknown(view, "virtualization.container")
    elif virt.container:
        container = "container (%s)" % virt.runtime if virt.runtime else "container"
    else:
        container = "no container"
    if virt.vm is None:
        vm = "VM " + _unknown(view, "virtualization.vm")
    else:
        vm = ("virtual machine (%s)" if virt.vm else "bare metal (%s)") % virt.vm_sign
    return "%s; %s" % (container, vm)


def _gpu_words(view) -> str:
    gpus = view.gpus
    if gpus is None:
        return _unknown(view, "gpus")
    if not gpus.devices:
        return "none on the PCI bus"
    groups = {}
    for gpu in gpus.devices:
        groups.setdefault((gpu.vendor, gpu.ids, gpu.name, gpu.driver), []).append(gpu)
    parts = []
    for (vendor, ids, name, driver), members in groups.items():
        what = "%s %s" % (_VENDORS.get(vendor, vendor), name or ids)
        extra = [ids] if name else []
        extra.append("driver %s" % driver if driver else "no driver bound")
        parts.append("%d × %s (%s)" % (len(members), what, ", ".join(extra)))
    words = ", ".join(parts)
    if gpus.usable != len(gpus.devices):
        words += "; %d usable here" % gpus.usable
    return words


def _cuda_words(kit) -> str:
    version = kit.version or ("%d.x" % kit.major if kit.major is not None else "unknown release")
    return "%s (%s)" % (version, kit.where)


def _disk_words(disks) -> str:
    if not disks:
        return "none found"
    groups = {}
    for disk in disks:
        name = "%s (path of %s)" % (disk.name, disk.path_of) if disk.path_of else disk.name
        groups.setdefault(disk.scheduler or "scheduler unknown", []).append(name)
    return "; ".join("%s: %s" % (", ".join(names), scheduler) for scheduler, names in groups.items())


def _cmdline_words(cmdline) -> str:
    text = cmdline.text
    if len(text) > SHOWN_CMDLINE:
        text = "%s… (%d more characters)" % (text[:SHOWN_CMDLINE], len(text) - SHOWN_CMDLINE)
    if cmdline.source != "/proc/cmdline":
        text += " (from %s)" % cmdline.source
    return text
