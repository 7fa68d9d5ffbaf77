"""CPU frequency policies (Documentation/admin-guide/pm/cpufreq.rst).

One directory /sys/devices/system/cpu/cpufreq/policyN per group of CPUs that share a frequency
interface; ``affected_cpus`` lists its online CPUs. Kernels before the policy directories
expose /sys/devices/system/cpu/cpuN/cpufreq instead, which is read when there are no policies.
No policies at all means the kernel offers no frequency scaling here (a VM, or firmware-fixed
clocks): governor tuning does not apply.
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.record import Record
from ai_doctor.units import parse_cpu_list, whole_number

CPU_DIR = "/sys/devices/system/cpu"
CPUFREQ_DIR = CPU_DIR + "/cpufreq"


class Policy(Record):
    """One frequency policy: its directory, CPUs, governor, driver and available governors."""

    __slots__ = ("name", "path", "cpus", "governor", "driver", "available", "min_khz", "max_khz")
    _defaults = {"min_khz": None, "max_khz": None}

    @property
    def governor_path(self) -> str:
        return self.path + "/scaling_governor"


class CpuFreq(Record):
    """The policies found (``layout`` is ``policy``, ``per-cpu`` or ``none``).

    ``unread`` lists policy directories whose governor could not be read, with the outcome.
    """

    __slots__ = ("policies", "layout", "unread")


def _first_line(host, path: str):
    got = host.read_text(path, cap=65536)
    return got.data.strip() if got.ok else None, got


def _policy(host, name: str, path: str, number, per_cpu: bool, first):
    governor, got = _first_line(host, path + "/scaling_governor")
    if governor is None:
        return None, got
    if per_cpu:
        # Each cpuN/cpufreq speaks for CPU N; its related_cpus would count siblings twice.
        cpus = (number,)
    else:
        cpus_text = _first_line(host, path + "/affected_cpus")[0]
        if cpus_text is None:
            cpus_text = _first_line(host, path + "/related_cpus")[0]
        cpus = parse_cpu_list(cpus_text) if cpus_text else ()
        if not cpus and number is not None:
            cpus = (number,)
    if first is None:
        driver = _first_line(host, path + "/scaling_driver")[0]
        available = tuple((_first_line(host, path + "/scaling_available_governors")[0] or "").split())
        # The limits the governors work within (kHz); the first policy speaks for the others.
        low = _khz(_first_line(host, path + "/scaling_min_freq")[0])
        high = _khz(_first_line(host, path + "/scaling_max_freq")[0])
    else:
        # One cpufreq driver serves the whole system; hundreds of per-CPU policies need not
        # be asked again.
        driver, available, low, high = first.driver, first.available, first.min_khz, first.max_khz
    return Policy(name, path, cpus, governor, driver, available, low, high), got


def _khz(text):
    return whole_number(text) if text and text == text.strip() else None


def _number(name: str, prefix: str):
    digits = name[len(prefix) :]
    return whole_number(digits) if name.startswith(prefix) and digits == digits.strip() else None


@fact("cpufreq")
def cpufreq(host, facts):
    cpu_listing = host.listdir(CPU_DIR)
    if not cpu_listing.ok:
        return unreadable(host, cpu_listing, "cannot list")
    policies = []
    unread = []
    listing = host.listdir(CPUFREQ_DIR)
    names = [n for n in (listing.data if listing.ok else ()) if _number(n, "policy") is not None]
    layout = "policy"
    first = None
    if not names:
        # Older kernels: per-CPU cpufreq directories only.
        layout = "per-cpu"
        names = [n for n in cpu_listing.data if _number(n, "cpu") is not None]
    for name in sorted(names, key=lambda n: _number(n, "policy" if layout == "policy" else "cpu")):
        if layout == "policy":
            path = "%s/%s" % (CPUFREQ_DIR, name)
            policy, got = _policy(host, name, path, _number(name, "policy"), False, first)
        else:
            path = "%s/%s/cpufreq" % (CPU_DIR, name)
            policy, got = _policy(host, name, path, _number(name, "cpu"), True, first)
        if policy is not None:
            policies.append(policy)
            first = first or policy
        elif not got.missing:
            unread.append((got.path, got.describe()))
    if not policies and not unread:
        layout = "none"
    if not policies and unread:
        return Unavailable("no CPU frequency policy could be read: %s %s" % unread[0], tuple(unread))
    return CpuFreq(tuple(policies), layout, tuple(unread))


# DMI names hypervisors give their machines (systemd's detect-virt keeps a longer list).
_VM_VENDORS = ("QEMU", "KVM", "VMware", "VirtualBox", "innotek", "Xen", "Amazon EC2", "Google", "Parallels", "Bochs", "BHYVE", "OpenStack")
CPUINFO = "/proc/cpuinfo"
DMI_DIR = "/sys/class/dmi/id"


class Machine(Record):
    """Whether the target runs under a hypervisor: True, False, or None (cannot tell), and
    the sign that said so (a path and what it showed)."""

    __slots__ = ("virtual", "path", "sign")


@fact("machine")
def machine(host, facts):
    """Virtual or bare metal, from cheap signs: a Xen /sys/hypervisor/type, DMI vendor names,
    and the x86 ``hypervisor`` CPU flag (set for guests, Documentation/arch/x86/cpuinfo.rst)."""
    xen = host.read_text("/sys/hypervisor/type", cap=256)
    if xen.ok and xen.data.strip():
        # Xen's control domain (dom0) shows the same file but drives the hardware itself.
        capabilities = host.read_text("/proc/xen/capabilities", cap=256)
        if capabilities.ok and "control_d" in capabilities.data:
            return Machine(None, capabilities.path, "Xen dom0 (frequency is Xen's: xenpm)")
        return Machine(True, xen.path, xen.data.strip())
    product = host.read_text(DMI_DIR + "/product_name", cap=256)
    if product.ok and ".metal" in product.data:  # c7i.metal, m7i.metal-24xl
        # EC2 bare-metal instances keep the "Amazon EC2" vendor name.
        return Machine(False, product.path, product.data.strip())
    for name in ("sys_vendor", "product_name"):
        got = product if name == "product_name" else host.read_text("%s/%s" % (DMI_DIR, name), cap=256)
        value = got.data.strip() if got.ok else ""
        if any(vendor.lower() in value.lower() for vendor in _VM_VENDORS) or value == "Virtual Machine":
            return Machine(True, got.path, value)
    # The first CPU's flags are enough, and sit in the first few KiB.
    got = host.read_text(CPUINFO, cap=65536)
    if not got.ok:
        return Machine(None, CPUINFO, got.describe())
    for line in got.data.splitlines():
        if line.startswith("flags"):
            virtual = "hypervisor" in line.split(":", 1)[-1].split()
            return Machine(virtual, CPUINFO, "flags %s hypervisor" % ("include" if virtual else "lack"))
    return Machine(None, CPUINFO, "no x86 flags line")
