"""PCI functions and the accelerators among them.

/proc/bus/pci/devices names every function's vendor, device and bound driver in one read
(drivers/pci/proc.c, show_device); sysfs (Documentation/ABI/testing/sysfs-bus-pci) gives the
class, read only for NVIDIA and AMD functions, so a host with hundreds of functions costs a
listing and one file.
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.record import Record

PROC_PCI = "/proc/bus/pci/devices"
SYS_PCI = "/sys/bus/pci/devices"
NVIDIA_GPUS = "/proc/driver/nvidia/gpus"
NVIDIA, AMD = 0x10DE, 0x1002
# PCI class codes (base class, subclass): VGA, 3D controller, other display, processing accelerator.
GPU_CLASSES = (0x0300, 0x0302, 0x0380, 0x1200)
# NVSwitch functions are bridges of class "other" (0x0680).
BRIDGE_OTHER = 0x0680


class PciDevice(Record):
    """One PCI function: ``address`` (``0000:17:00.0``), vendor and device ids, ``pci_class``
    (the 16-bit base class and subclass; None when not read) and the bound driver (None)."""

    __slots__ = ("address", "vendor", "device", "pci_class", "driver")

    @property
    def ids(self) -> str:
        return "%04x:%04x" % (self.vendor, self.device)

    @property
    def sysfs(self) -> str:
        return "%s/%s" % (SYS_PCI, self.address)


class PciDevices(Record):
    """Every function found, in address order, and where the ids came from."""

    __slots__ = ("devices", "source")


def _address_key(address: str):
    """(bus, devfn) of ``DDDD:BB:DD.F``; None for a name that is not an address."""
    try:
        _domain, bus, rest = address.split(":")
        slot, function = rest.split(".")
        return int(bus, 16), (int(slot, 16) << 3) | int(function, 16)
    except ValueError:
        return None


def parse_proc_pci(text: str) -> dict:
    """(bus, devfn) → (vendor, device, driver or None) from /proc/bus/pci/devices."""
    found = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or len(fields[0]) != 4 or len(fields[1]) != 8:
            continue
        try:
            where, ids = int(fields[0], 16), int(fields[1], 16)
        except ValueError:
            continue
        driver = fields[-1].strip() if len(fields) > 17 else ""
        found[(where >> 8, where & 0xFF)] = (ids >> 16, ids & 0xFFFF, driver or None)
    return found


def _hex_file(host, path: str):
    got = host.read_text(path, cap=64)
    if not got.ok:
        return None
    try:
        return int(got.data.strip(), 16)
    except ValueError:
        return None


@fact("pci_devices")
def pci_devices(host, facts):
    listing = host.listdir(SYS_PCI)
    if not listing.ok:
        return unreadable(host, listing, "PCI devices")
    addresses = [name for name in listing.data if _address_key(name) is not None]
    proc = host.read_text(PROC_PCI, cap=1 << 20)
    table = parse_proc_pci(proc.data) if proc.ok else {}
    # /proc/bus/pci/devices leaves the domain out: with several domains its rows can collide.
    one_domain = len({name.split(":", 1)[0] for name in addresses}) <= 1
    devices = []
    for address in addresses:
        row = table.get(_address_key(address)) if one_domain else None
        if row is None:
            vendor = _hex_file(host, "%s/%s/vendor" % (SYS_PCI, address))
            device = _hex_file(host, "%s/%s/device" % (SYS_PCI, address))
            if vendor is None or device is None:
                continue
            row = (vendor, device, None)
        vendor, device, driver = row
        pci_class = None
        if vendor in (NVIDIA, AMD):
            value = _hex_file(host, "%s/%s/class" % (SYS_PCI, address))
            pci_class = value >> 8 if value is not None else None
            if driver is None:
                link = host.readlink("%s/%s/driver" % (SYS_PCI, address))
                driver = link.data.rstrip("/").rpartition("/")[2] if link.ok and link.data else None
        devices.append(PciDevice(address, vendor, device, pci_class, driver))
    return PciDevices(tuple(devices), PROC_PCI if table and one_domain else SYS_PCI)


class Gpus(Record):
    """The accelerators here: NVIDIA and AMD GPU functions and NVSwitches on the PCI bus,
    the NVIDIA GPUs the driver lists (/proc/driver/nvidia/gpus, PCI addresses), and the
    device nodes this process was given (``nodes``: /dev/nvidiaN, and /dev/dri/renderD*
    when /dev/kfd exists). Inside a container the nodes are what it can use; the bus and
    the driver's list show the whole host."""

    __slots__ = ("nvidia", "amd", "nvswitches", "driver_listed", "nodes", "in_container", "source")

    @property
    def count(self) -> int:
        """How many GPUs this process can use: its device nodes in a container, else the
        GPUs on the bus (or the driver's list where the bus cannot be read)."""
        if self.in_container:
            return len(self.nodes)
        return max(len(self.nvidia) + len(self.amd), len(self.driver_listed))


def _numbered(name: str, prefix: str) -> bool:
    return name.startswith(prefix) and name[len(prefix) :].isdigit()


@fact("gpus")
def gpus(host, facts):
    pci = facts.get("pci_devices")
    devices = pci.devices if pci else ()
    nvidia = tuple(d for d in devices if d.vendor == NVIDIA and d.pci_class in GPU_CLASSES)
    amd = tuple(d for d in devices if d.vendor == AMD and d.pci_class in GPU_CLASSES)
    nvswitches = tuple(d for d in devices if d.vendor == NVIDIA and d.pci_class == BRIDGE_OTHER)
    listed = host.listdir(NVIDIA_GPUS)
    driver_listed = tuple(listed.data) if listed.ok else ()
    dev = host.listdir("/dev")
    names = dev.data if dev.ok else ()
    nodes = ["/dev/" + name for name in names if _numbered(name, "nvidia")]
    if "kfd" in names:
        dri = host.listdir("/dev/dri")
        nodes += ["/dev/dri/" + name for name in (dri.data if dri.ok else ()) if _numbered(name, "renderD")]
    container = facts.get("container")
    in_container = bool(container and container.detected)
    if not (pci or listed.ok or dev.ok):
        return Unavailable(pci.reason)
    source = pci.source if pci else (NVIDIA_GPUS if listed.ok else "/dev")
    return Gpus(nvidia, amd, nvswitches, driver_listed, tuple(nodes), in_container, source)
