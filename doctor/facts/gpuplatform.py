"""What the GPU platform around the driver looks like: NVSwitches and Fabric Manager, the loaded
NVIDIA module's flavour against each GPU's generation, and the IOMMU and PCIe ACS between GPUs.

- NVSwitches: the nvidia driver claims every NVIDIA PCI function of class 0x0680 (bridge,
  other) as an NVSwitch (nvswitch_pci_table in open-gpu-kernel-modules'
  kernel-open/nvidia/linux_nvswitch.c) and lists each one it drives under
  /proc/driver/nvidia-nvswitch/devices (procfs_nvswitch.c; NVIDIA's gpu-driver-container
  starts Fabric Manager only where that folder is not empty).
- Fabric Manager: the nvidia-fabricmanager.service unit running nv-fabricmanager (NVIDIA Fabric
  Manager User Guide); its processes from the unit's cgroup, its version from dpkg's database.
- Module flavour: /proc/driver/nvidia/version reads "NVIDIA UNIX Open Kernel Module for x86_64"
  for the open flavour and "NVIDIA UNIX x86_64 Kernel Module" for the proprietary one; the
  kernel marks a module of a license that is not GPL-compatible with taint ``P``
  (/sys/module/nvidia/taint; Documentation/admin-guide/tainted-kernels.rst), and the module
  file's .modinfo says ``license=NVIDIA`` or ``license=Dual MIT/GPL``.
- GPU generation: the chip name pci.ids gives the device id (GP102, TU104, GH100, GB202).
- IOMMU: /sys/kernel/iommu_groups/N/type (Documentation/ABI/testing/sysfs-kernel-iommu_groups:
  DMA and DMA-FQ are translated, identity is not); ACS from the PCI Express extended
  capability 0x000D (include/uapi/linux/pci_regs.h) of the switch ports between GPUs that
  share a PCIe switch, found by comparing the GPUs' folders under /sys/devices; config space
  past the first 64 bytes only root can read (drivers/pci/pci-sysfs.c, pci_read_config).
- PCIe links: each PCI Express function's current_link_width (the Negotiated Link Width of its
  Link Status register) and max_link_width (the Maximum Link Width of its Link Capabilities,
  255 where that reads 0), current_link_width_show() and max_link_width_show() in
  drivers/pci/pci-sysfs.c, Linux 4.13 and later, shown for PCI Express functions only.
"""

from __future__ import annotations

import re

from ai_doctor.facts import Unavailable, fact
from ai_doctor.host import DERIVED_CAP, in_part
from ai_doctor.record import Record

NVSWITCH_PROC = "/proc/driver/nvidia-nvswitch/devices"
NVSWITCH_CTL = "/dev/nvidia-nvswitchctl"
FM_UNIT = "nvidia-fabricmanager.service"
FM_BINARY = "/usr/bin/nv-fabricmanager"
FM_UNIT_FILES = ("/etc/systemd/system/%s" % FM_UNIT, "/usr/lib/systemd/system/%s" % FM_UNIT, "/lib/systemd/system/%s" % FM_UNIT)
FM_WANTS = "/etc/systemd/system/multi-user.target.wants/%s" % FM_UNIT
FM_LOG = "/var/log/fabricmanager.log"
DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_STATUS_CAP = DERIVED_CAP
PCI_IDS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids")
PROC_VERSION = "/proc/driver/nvidia/version"
MODULE_TAINT = "/sys/module/nvidia/taint"
IOMMU_GROUPS = "/sys/kernel/iommu_groups"
CPUS_POSSIBLE = "/sys/devices/system/cpu/possible"
SYS_PCI = "/sys/bus/pci/devices"
# The widths a PCIe link can have: the Maximum Link Width encodings of Link Capabilities
# (PCI_EXP_LNKCAP_MLW in include/uapi/linux/pci_regs.h; enum pcie_link_width in pci.h).
PCIE_WIDTHS = (1, 2, 4, 8, 12, 16, 32)

# Packages whose paragraphs of dpkg's status are parsed: Fabric Manager (NVIDIA's repository and
# Ubuntu's: nvidia-fabricmanager-550, cuda-drivers-fabricmanager-550) and the driver's own.
PACKAGE_PREFIXES = (
    "nvidia-fabricmanager",
    "cuda-drivers",
    "fabricmanager",
    "nvidia-driver",
    "nvidia-dkms-",
    "nvidia-open",
    "nvidia-kernel-dkms",
    "nvidia-kernel-open-dkms",
)
_VERSION = r"\d{3,4}\.\d+(?:\.\d+)?"
_ADDRESS = r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"


class NvSwitches(Record):
    """Whether NVSwitches are here: ``present`` True/False, or None where neither the driver's
    list nor the PCI bus could be read (an image); ``listed``: the switches the driver lists
    (None: no such folder), ``on_bus``: NVIDIA class-0x0680 PCI functions, ``ctl``: whether
    /dev/nvidia-nvswitchctl exists (it does on some VMs without any switch)."""

    __slots__ = ("present", "listed", "on_bus", "ctl")

    @property
    def count(self) -> int:
        return max(len(self.listed or ()), len(self.on_bus))


@fact("nvswitch")
def nvswitch(host, facts):
    listing = host.listdir(NVSWITCH_PROC)
    # One folder per switch, named by its PCI address (procfs_nvswitch.c); nothing else counts.
    listed = tuple(name for name in listing.data if re.fullmatch(_ADDRESS, name)) if listing.ok else None
    gpus = facts.get("gpus")
    on_bus = tuple(d.address for d in gpus.nvswitches) if gpus else ()
    ctl = host.node(NVSWITCH_CTL).ok
    if listed is None and not gpus:
        if facts.get("running"):
            return NvSwitches(None, None, (), ctl)
        return Unavailable("no PCI bus or /proc/driver/nvidia-nvswitch: an image, not a running system")
    return NvSwitches(bool(listed) or bool(on_bus), listed, on_bus, ctl)


class Package(Record):
    """An installed package: its name and version (``550.127.05-1``)."""

    __slots__ = ("name", "version")

    @property
    def upstream(self) -> str:
        """The version without the Debian epoch and revision: 1:550.127.05-0ubuntu1 → 550.127.05."""
        version = self.version.split(":", 1)[-1]
        return version.rsplit("-", 1)[0] if "-" in version else version


# The Package-line starts searched for: every prefix above begins with one of them.
_SEARCHED = ("nvidia-", "cuda-drivers", "fabricmanager")


def _paragraphs(text: str):
    """(start, end, paragraph) of each package paragraph of dpkg's status file (deb-status(5)) whose
    name starts with one of ``_SEARCHED``, found by searching for their Package lines, so a
    status file of thousands of packages costs three searches."""
    for start_of_name in _SEARCHED:
        needle = "\nPackage: " + start_of_name
        start = 0 if text.startswith(needle[1:]) else text.find(needle)
        while start != -1:
            begin = start + 1 if text[start] == "\n" else start
            end = text.find("\n\n", begin)
            stop = end if end != -1 else len(text)
            yield begin, stop, text[begin:stop]
            if end == -1:
                break
            start = text.find(needle, end)


def parse_dpkg_status(text: str, prefixes=PACKAGE_PREFIXES):
    """Installed packages whose names start with one of ``prefixes``, from dpkg's status file
    (or the paragraphs of it that :func:`nvidia_paragraphs` keeps); only those paragraphs are
    parsed."""
    found = []
    for _start, _end, paragraph in _paragraphs(text):
        fields = {}
        for line in paragraph.split("\n"):
            key, sep, value = line.partition(":")
            if sep and key in ("Package", "Status", "Version"):
                fields[key] = value.strip()
        name = fields.get("Package", "")
        status = fields.get("Status", "").split()
        if name.startswith(prefixes) and fields.get("Version") and status[-1:] == ["installed"]:
            found.append(Package(name, fields["Version"]))
    return tuple(sorted(found, key=lambda p: p.name))


def nvidia_paragraphs(stream) -> str:
    """From dpkg's status file: the paragraphs of the driver's and Fabric Manager's packages, in
    the file's order, each once, blank-line separated. A snapshot keeps this, not the database
    of every package the host has (megabytes on a server, and none of ours to ship)."""
    data = stream.read(DPKG_STATUS_CAP + 1)
    whole = len(data) <= DPKG_STATUS_CAP
    if not whole:
        data = data[: data.rfind(b"\n", 0, DPKG_STATUS_CAP) + 1]  # whole lines, as any read past the cap
    kept, reached, size = [], 0, 0
    # A paragraph found again by a second Package line in it is already held whole.
    for start, end, paragraph in sorted(_paragraphs(data.decode("utf-8", "replace"))):
        if start >= reached:
            # Bytes not UTF-8 come back three times as long: the text stays within what a
            # record holds, and says so where it stops short.
            size += len(paragraph.encode("utf-8")) + 2
            if size > DERIVED_CAP:
                whole = False
                break
            kept.append(paragraph + "\n\n")
            reached = end
    return "".join(kept) if whole else in_part(len(data), "".join(kept))


@fact("nvidia_packages")
def nvidia_packages(host, facts):
    """The driver's and Fabric Manager's packages dpkg has installed (None: no dpkg database;
    an rpm database is not a file this reads)."""
    got = host.derive(DPKG_STATUS, "dpkg-nvidia", nvidia_paragraphs)
    if not got.ok:
        return None
    return parse_dpkg_status(got.data)


class FabricManager(Record):
    """Fabric Manager here: ``binary`` and ``unit`` (paths or None), ``enabled`` (the
    multi-user.target.wants link), ``masked``, ``pids`` (its processes: a tuple, empty when not
    running, None when that cannot be told) read at ``pids_from``, and ``packages`` (dpkg's)."""

    __slots__ = ("binary", "unit", "enabled", "masked", "pids", "pids_from", "packages")

    @property
    def installed(self) -> bool:
        return bool(self.binary or self.unit or self.packages)

    @property
    def package(self):
        """The service package (nvidia-fabricmanager-550), not the -dev ones or the meta-package."""
        own = [p for p in self.packages if p.name.startswith(("nvidia-fabricmanager", "fabricmanager")) and "-dev" not in p.name]
        return (own or list(self.packages) or [None])[0]


@fact("fabric_manager")
def fabric_manager(host, facts):
    from ai_doctor.facts.processes import unit_pids
    from ai_doctor.facts.system import masked

    binary = FM_BINARY if host.exists(FM_BINARY) else None
    unit = next((path for path in FM_UNIT_FILES if host.exists(path)), None)
    enabled = host.readlink(FM_WANTS).ok and host.exists(FM_WANTS)
    pids, where = (None, None)
    if facts.get("running"):
        pids, where = unit_pids(host, FM_UNIT)
    packages = facts.get("nvidia_packages") or ()
    fm = tuple(p for p in packages if "fabricmanager" in p.name)
    return FabricManager(binary, unit, enabled, masked(host, FM_UNIT), pids, where, fm)


class LogMismatch(Record):
    """Fabric Manager's own complaint that it does not match the driver: the line, its number,
    and the two versions it names."""

    __slots__ = ("path", "line", "text", "fm_version", "driver_version")


@fact("fabric_manager_log")
def fabric_manager_log(host, facts):
    """The last "don't match with driver version" line of /var/log/fabricmanager.log (within
    its first MiB), or None."""
    got = host.read_text(FM_LOG, cap=1 << 20)
    if not got.ok:
        return None
    return parse_fm_log(got.data)


def parse_fm_log(text: str):
    """The last version-mismatch line: 'fabric manager NVIDIA GPU driver interface version
    530.30.02 don't match with driver version 530.41.03. Please update with matching NVIDIA
    driver package.'"""
    at = text.rfind("don't match with driver version")
    if at == -1:
        return None
    begin = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    line = text[begin : end if end != -1 else len(text)]
    number = text.count("\n", 0, begin) + 1
    before, _, after = line.partition("don't match with driver version")
    fm = re.findall(_VERSION, before)
    driver = re.search(_VERSION, after)
    return LogMismatch(FM_LOG, number, line.strip()[:300], fm[-1] if fm else None, driver.group(0) if driver else None)


# -- the module's flavour and the GPUs' generations ------------------------------------------


class Flavour(Record):
    """The nvidia module's flavour, ``open`` or ``proprietary``, where it was read (``path``
    and the ``sign`` there), and whether it is the ``loaded`` module or the installed file."""

    __slots__ = ("name", "path", "sign", "loaded")


@fact("nvidia_flavour")
def nvidia_flavour(host, facts):
    if facts.get("running"):
        got = host.read_text(PROC_VERSION, cap=65536)
        first = got.data.split("\n", 1)[0] if got.ok else ""
        if "Open Kernel Module" in first:
            return Flavour("open", PROC_VERSION, first.strip()[:200], True)
        if "Kernel Module" in first:
            return Flavour("proprietary", PROC_VERSION, first.strip()[:200], True)
        taint = host.read_text(MODULE_TAINT, cap=256)
        if taint.ok:
            flags = taint.data.strip()
            # P: a module whose license is not GPL-compatible (NVIDIA's); the open one is Dual MIT/GPL.
            return Flavour("proprietary" if "P" in flags else "open", MODULE_TAINT, flags or "(none)", True)
    modules = facts.get("gpu_modules") or ()
    module = modules[0].found.get("nvidia") if modules else None
    license_ = module.field("license") if module is not None else None
    if license_:
        name = "proprietary" if license_ == "NVIDIA" else "open" if "GPL" in license_ else None
        if name:
            return Flavour(name, module.path, "license=%s" % license_, False)
    if module is not None and not license_ and module.partial:
        return Unavailable("no nvidia module is loaded, and the .modinfo of %s was read only in part, without its license" % module.path)
    return Unavailable("no nvidia module is loaded, and none with a license field is installed for the kernel")


# Chip-name prefixes in pci.ids, by what they need: the open module cannot drive GPUs before Turing
# (it needs the GSP, first in Turing); Blackwell and later run on the open module only.
PRE_TURING = ("NV", "G", "GT", "GF", "GK", "GM", "GP", "GV", "C", "MCP", "NF", "CK")
TURING_ON = ("TU", "GA", "AD", "GH")
BLACKWELL_ON = ("GB", "GR")
GENERATION_WORDS = {"pre-turing": "before Turing", "turing": "Turing to Hopper", "blackwell": "Blackwell or later"}


class GpuModel(Record):
    """A GPU on the bus: its PCI ``address`` and ``ids``, the pci.ids ``name`` (None: not in
    pci.ids) and the ``generation`` that name says (``pre-turing``, ``turing``, ``blackwell``;
    None: not known from the name)."""

    __slots__ = ("address", "ids", "name", "generation")


class GpuModels(Record):
    """The NVIDIA GPUs with their generation, the pci.ids file and its version line."""

    __slots__ = ("gpus", "source", "version")


def generation(name: str):
    """The generation of a pci.ids NVIDIA device name (``GB202GL [RTX PRO 6000 …]``); None for
    a name without a known chip code (Jetson and Tegra parts run their own driver)."""
    if not name or "Jetson" in name or "Tegra" in name:
        return None
    chip = name.split(None, 1)[0]
    letters = ""
    for char in chip:
        if not ("A" <= char <= "Z"):
            break
        letters += char
    if not letters or len(letters) == len(chip):
        return None
    if letters in BLACKWELL_ON:
        return "blackwell"
    if letters in TURING_ON:
        return "turing"
    if letters in PRE_TURING:
        return "pre-turing"
    return None


def nvidia_device_lines(stream) -> str:
    """From a pci.ids stream: its version line and the device lines of vendor 10de
    (``\\tDDDD  NAME``, no subsystem lines), as ``version: …`` then ``dddd NAME`` lines."""
    data = stream.read(32 << 20)
    head = data[:4096].decode("utf-8", "replace")
    version = ""
    for line in head.splitlines():
        if line.startswith("#") and "Version:" in line:
            version = line.split("Version:", 1)[1].strip()
            break
    start = data.find(b"\n10de  ")
    if start == -1:
        raise ValueError("no NVIDIA vendor section (10de) in pci.ids")
    match = re.compile(rb"\n[0-9a-fA-F]{4}  ").search(data, start + 1)
    section = data[start + 1 : match.start() if match else len(data)].decode("utf-8", "replace")
    lines = ["version: " + version]
    for line in section.split("\n"):
        if line.startswith("\t") and not line.startswith("\t\t") and len(line) > 7:
            lines.append("%s %s" % (line[1:5].lower(), line[7:].strip()))
    return "\n".join(lines) + "\n"


@fact("gpu_models")
def gpu_models(host, facts):
    gpus = facts.get("gpus")
    if not gpus:
        return Unavailable(gpus.reason if gpus is not None else "no PCI bus")
    wanted = gpus.nvidia
    got = None
    for path in PCI_IDS:
        got = host.derive(path, "pciids-nvidia", nvidia_device_lines)
        if got.ok:
            break
    if got is None or not got.ok:
        return Unavailable("no readable pci.ids (%s): the GPUs' generation comes from it (install pciutils or hwdata)" % ", ".join(PCI_IDS))
    names = {}
    version = ""
    for line in got.data.split("\n"):
        if line.startswith("version: "):
            version = line[9:]
        elif len(line) > 5:
            names[line[:4]] = line[5:]
    models = []
    for device in wanted:
        name = names.get("%04x" % device.device)
        models.append(GpuModel(device.address, device.ids, name, generation(name) if name else None))
    return GpuModels(tuple(models), got.path, version)


# -- IOMMU and ACS between GPUs --------------------------------------------------------------

ACS_CAP = 0x000D
ACS_SV, ACS_TB, ACS_RR, ACS_CR, ACS_UF, ACS_EC, ACS_DT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40
ACS_BITS = (
    ("SrcValid", ACS_SV),
    ("TransBlk", ACS_TB),
    ("ReqRedir", ACS_RR),
    ("CmpltRedir", ACS_CR),
    ("UpstreamFwd", ACS_UF),
    ("EgressCtrl", ACS_EC),
    ("DirectTrans", ACS_DT),
)
ACS_REDIRECT = ACS_RR | ACS_CR
# What the kernel sets on every port able to, once an IOMMU driver asked for ACS with
# pci_request_acs() (AMD's detect_ivrs(), Intel's detect_intel_iommu()), iommu=pt or not:
# pci_std_enable_acs() in drivers/pci/pci.c. And what pci=disable_acs_redir= then clears
# (pci_enable_acs(): PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_EC).
KERNEL_ACS = ACS_SV | ACS_RR | ACS_CR | ACS_UF
DISABLE_ACS_REDIR = ACS_RR | ACS_CR | ACS_EC


def acs_registers(config: bytes):
    """(Capability, Control) of the ACS extended capability in a function's config space,
    walking the extended capabilities from 0x100 (PCIe r6.0 §7.7.8: header = id [15:0], version
    [19:16], next [31:20]; capability at +4, control at +6); None where the space ends before
    0x104 or there is no ACS."""
    offset, seen = 0x100, 0
    while 0x100 <= offset and offset + 8 <= len(config) and seen < 256:
        header = int.from_bytes(config[offset : offset + 4], "little")
        if header in (0, 0xFFFFFFFF):
            return None
        if header & 0xFFFF == ACS_CAP:
            return int.from_bytes(config[offset + 4 : offset + 6], "little"), int.from_bytes(config[offset + 6 : offset + 8], "little")
        offset = (header >> 20) & 0xFFC
        seen += 1
    return None


def acs_control(config: bytes):
    """The ACS Control register (see :func:`acs_registers`), or None."""
    registers = acs_registers(config)
    return registers[1] if registers else None


def acs_words(control: int) -> str:
    return " ".join(name + ("+" if control & bit else "-") for name, bit in ACS_BITS)


class Bridge(Record):
    """A port on the way between GPUs that share a PCIe switch: the port right below the lowest
    bridge they have in common (``switch``, the switch's upstream port), with ``gpu`` below it.
    ``control`` and ``capability`` are its ACS registers (None: not seen; ``seen`` says why: no
    ACS capability, or only part of the config space could be read)."""

    __slots__ = ("address", "path", "gpu", "switch", "control", "capability", "seen")


class GpuPath(Record):
    """A GPU and what lies between it and the others: its IOMMU ``group`` and that group's
    ``type`` (None: no group, the IOMMU does not translate for it), and its ``upstream`` bridges
    as (address, sysfs folder) from the root port down (None: its place in the PCI tree was
    not read)."""

    __slots__ = ("address", "group", "type", "type_path", "upstream")

    @property
    def translated(self) -> bool:
        return self.type in ("DMA", "DMA-FQ")


class IommuPaths(Record):
    """Each NVIDIA GPU's IOMMU group and upstream bridges; ``ports``: the bridges whose ACS
    decides the path between GPUs that share a PCIe switch (empty where no two share one);
    ``cpus``: the possible CPUs; ``passthrough``: the command line asks for iommu=pt."""

    __slots__ = ("gpus", "cpus", "passthrough", "ports")

    @property
    def located(self) -> bool:
        """Whether every GPU's place in the PCI tree was read (its /sys/bus/pci link)."""
        return all(p.upstream is not None for p in self.gpus)


def device_folder(host, address: str):
    """The device's folder under /sys/devices (its bus link followed), and (address, folder)
    of each upstream port on the way there, nearest to the root complex first (None: the bus
    link could not be read)."""
    link = host.readlink("%s/%s" % (SYS_PCI, address))
    target = link.data if link.ok and link.data else None
    if not target:
        return "%s/%s" % (SYS_PCI, address), None
    parts = []
    for part in ("%s/%s" % (SYS_PCI, target) if not target.startswith("/") else target).split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    if parts[:2] != ["sys", "devices"] or not any(part.startswith("pci") for part in parts[2:-1]):
        # Not below a host bridge in /sys/devices: a link that leads elsewhere places nothing.
        return "%s/%s" % (SYS_PCI, address), None
    upstream = tuple((part, "/" + "/".join(parts[: index + 1])) for index, part in enumerate(parts[:-1]) if re.fullmatch(_ADDRESS, part))
    return "/" + "/".join(parts), upstream


def shared_ports(chains):
    """The ports whose ACS decides the path between GPUs behind one PCIe switch.

    ``chains``: (GPU address, its upstream bridges as (address, folder) from the root port
    down). For each two GPUs with a bridge in common, the lowest such bridge is the switch where
    their peer traffic turns; the port right below it on each side is where ACS P2P Request
    and Completion Redirect would send that traffic up to the root complex instead. GPUs with no
    bridge in common (each below its own root port, or its own host bridge) meet in the root
    complex whatever ACS says: none of their bridges is returned. Returns (address, folder, GPU,
    switch address) per port, each port once, in folder order."""
    found = {}
    located = [(gpu, chain) for gpu, chain in chains if chain]
    for index, (first, first_chain) in enumerate(located):
        for second, second_chain in located[index + 1 :]:
            common = 0
            # A folder names its whole path from the host bridge: equal folders, same bridge.
            while common < min(len(first_chain), len(second_chain)) and first_chain[common][1] == second_chain[common][1]:
                common += 1
            if not common:
                continue
            switch = first_chain[common - 1][0]
            for gpu, chain in ((first, first_chain), (second, second_chain)):
                if common < len(chain):
                    address, folder = chain[common]
                    found.setdefault(folder, (address, folder, gpu, switch))
    return [found[folder] for folder in sorted(found)]


def _pci_address(text: str):
    """``[domain:]bus:device.function`` in hex (pci_dev_str_match_path() in drivers/pci/pci.c)
    as sysfs writes it (``0000:42:00.0``); None for anything else (the path and id forms)."""
    match = re.fullmatch(r"(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])", text.strip())
    if not match:
        return None
    domain, bus, slot, function = match.groups()
    return "%04x:%02x:%02x.%s" % (int(domain or "0", 16), int(bus, 16), int(slot, 16), function)


def disable_acs_redir(cmdline):
    """The ports ``pci=disable_acs_redir=`` names by address, as a set (empty: none).

    pci_setup() splits each pci= value at commas and keeps one disable_acs_redir string, so the
    last one given wins; its devices are separated by ``;`` (Documentation/admin-guide/
    kernel-parameters.txt). Devices named by path (``/``) or by id (``pci:``) are not matched."""
    value = None
    for param in cmdline.params if cmdline else ():
        if param.name == "pci" and param.value:
            for option in param.value.split(","):
                if option.startswith("disable_acs_redir="):
                    value = option[len("disable_acs_redir=") :]
    if not value:
        return frozenset()
    return frozenset(address for address in map(_pci_address, value.split(";")) if address)


def _passthrough(cmdline) -> bool:
    """Whether the kernel command line asks the IOMMU to pass DMA through: ``iommu=pt`` or
    ``iommu.passthrough=1`` (Documentation/admin-guide/kernel-parameters.txt; the last one
    given wins)."""
    if not cmdline:
        return False
    answer = False
    for param in cmdline.params:
        if param.name == "iommu" and param.value:
            words = param.value.split(",")
            answer = True if "pt" in words else False if "nopt" in words else answer
        elif param.name == "iommu.passthrough" and param.value is not None:
            answer = param.value.strip().lower() in ("1", "y", "yes", "on", "true")
    return answer


def _port(host, address, folder, gpu, switch):
    config = host.read_bytes(folder + "/config", cap=4096)
    if not config.ok:
        return Bridge(address, folder, gpu, switch, None, None, "config %s" % config.describe())
    if len(config.data) <= 0x100:
        return Bridge(address, folder, gpu, switch, None, None, "only the first %d bytes of config space are readable" % len(config.data))
    registers = acs_registers(config.data)
    if registers is None:
        return Bridge(address, folder, gpu, switch, None, None, "no ACS capability")
    return Bridge(address, folder, gpu, switch, registers[1], registers[0], "read")


def at_next_boot(port, iommu: bool, cleared) -> Bridge:
    """``port``'s ACS Control as the next boot leaves it: where an IOMMU driver runs, the kernel
    sets SrcValid, ReqRedir, CmpltRedir and UpstreamFwd on every port able to (a value cleared
    by hand now comes back), then clears ReqRedir, CmpltRedir and EgressCtrl on the ports
    ``cleared`` names (pci=disable_acs_redir=; pci_enable_acs() in drivers/pci/pci.c)."""
    if port.control is None:
        return port
    control = port.control
    if iommu and port.capability is not None:
        control |= port.capability & KERNEL_ACS
    if port.address in cleared:
        control &= ~DISABLE_ACS_REDIR
    return port._replace(control=control)


@fact("iommu_paths")
def iommu_paths(host, facts):
    gpus = facts.get("gpus")
    if not gpus:
        return Unavailable(gpus.reason if gpus is not None else "no PCI bus")
    found = []
    for device in gpus.nvidia:
        folder, upstream = device_folder(host, device.address)
        link = host.readlink(folder + "/iommu_group")
        group = link.data.rstrip("/").rsplit("/", 1)[-1] if link.ok and link.data else None
        kind = type_path = None
        if group is not None:
            type_path = "%s/%s/type" % (IOMMU_GROUPS, group)
            got = host.read_text(type_path, cap=256)
            kind = got.data.strip() if got.ok else None
        found.append(GpuPath(device.address, group, kind, type_path, upstream))
    # Only the ports between GPUs that share a switch are read: their config space is all that
    # decides whether peer traffic turns in the switch or goes up to the root complex.
    ports = [_port(host, *where) for where in shared_ports([(p.address, p.upstream) for p in found])]
    cmdline = facts.get("cmdline")
    if host.next_boot:
        if _passthrough(cmdline):
            # The next boot's command line asks for passthrough: the groups of host-owned
            # devices start as identity (iommu_def_domain_type, drivers/iommu/iommu.c).
            found = [p._replace(type="identity") if p.translated else p for p in found]
        # An IOMMU group means an IOMMU driver runs, and asks the PCI core for ACS at boot.
        iommu = any(p.group is not None for p in found)
        cleared = disable_acs_redir(cmdline)
        ports = [at_next_boot(port, iommu, cleared) for port in ports]
    possible = host.read_text(CPUS_POSSIBLE, cap=4096)
    from ai_doctor.units import parse_cpu_list

    cpus = len(parse_cpu_list(possible.data)) if possible.ok else None
    return IommuPaths(tuple(found), cpus, _passthrough(cmdline), tuple(ports))


class LinkEnd(Record):
    """One end of a PCIe link: the function's ``address`` and sysfs ``folder``, the width its
    link trained to (``width``, current_link_width) and the most lanes it supports
    (``max_width``, max_link_width), as the numbers the files hold; None where not read."""

    __slots__ = ("address", "folder", "width", "max_width")


class GpuLink(Record):
    """A PCIe link on the way from GPUs to the root complex: ``lower``, the end below (a GPU,
    or a PCIe switch's upstream port), ``upper``, the port above it (a root port, or a
    switch's downstream port), and ``gpus``, the addresses of the GPUs whose path crosses it."""

    __slots__ = ("gpus", "lower", "upper")

    @property
    def own(self) -> bool:
        """Whether the lower end is the GPU itself (not a switch above it)."""
        return self.lower.address in self.gpus

    @property
    def capable(self):
        """The most lanes both ends support; None where either is not a link width."""
        if self.lower.max_width not in PCIE_WIDTHS or self.upper.max_width not in PCIE_WIDTHS:
            return None
        return min(self.lower.max_width, self.upper.max_width)

    @property
    def unjudged(self):
        """Why the link cannot be judged, as a clause; None where it can: both ends read one
        width, as the two ends of one link do, and every number is a link width."""
        lower, upper = self.lower, self.upper
        if upper.width is None:
            return "the width of %s was not read" % upper.address
        for end in (lower, upper):
            if end.width not in PCIE_WIDTHS:
                meaning = {0: " (a link that is down)", 63: " (a device that does not answer)"}.get(end.width, "")
                return "%s reads width %s, which no trained link has%s" % (end.address, end.width, meaning)
        if upper.width != lower.width:
            return "its two ends read x%d and x%d" % (lower.width, upper.width)
        unread = [end.address for end in (lower, upper) if end.max_width not in PCIE_WIDTHS]
        if unread:
            return "the most lanes %s %s is not known" % (" and ".join(unread), "supports" if len(unread) == 1 else "support")
        return None

    @property
    def narrowed(self) -> bool:
        """Trained to fewer lanes than both ends support."""
        return self.unjudged is None and self.lower.width < self.capable


class GpuLinks(Record):
    """The PCIe links between the GPUs and the root complex, each once, nearest the GPUs
    first; ``unplaced``: the GPUs whose place in the PCI tree was not read; ``unlinked``: those
    with no link to judge (no port above them, as below a virtual machine's host bridge, or no
    link width to read: conventional PCI, a kernel before 4.13); ``stopped``: (GPU, address)
    where the climb toward the root complex stopped at a function with no width to read."""

    __slots__ = ("links", "unplaced", "unlinked", "stopped")


def _link_end(host, address: str, folder: str) -> LinkEnd:
    widths = []
    for name in ("current_link_width", "max_link_width"):
        got = host.read_text("%s/%s" % (folder, name), cap=64)
        text = got.data.strip() if got.ok else ""
        widths.append(int(text) if text.isascii() and text.isdigit() and len(text) <= 3 else None)
    return LinkEnd(address, folder, *widths)


@fact("gpu_links")
def gpu_links(host, facts):
    """Each NVIDIA and AMD GPU's links up to the root complex.

    The folders from the root port down alternate between the two ends of each link: a root
    port (or a switch's downstream port) above, the device it leads to below; inside a PCIe
    switch its upstream port and its downstream ports share an internal bus and no link. So,
    from the GPU up, the folders pair off two by two: (GPU, port above it), (switch upstream
    port, port above that), and so on. A link several GPUs share (a switch's uplink) is listed
    once. A virtual function is skipped: its link is its physical function's."""
    gpus = facts.get("gpus")
    if not gpus:
        return Unavailable(gpus.reason if gpus is not None else "no PCI bus")
    ends, crossing, order = {}, {}, []
    unplaced, unlinked, stopped = [], [], []

    def end(address, folder):
        if folder not in ends:
            ends[folder] = _link_end(host, address, folder)
        return ends[folder]

    for device in gpus.nvidia + gpus.amd:
        folder, upstream = device_folder(host, device.address)
        if upstream is None:
            unplaced.append(device.address)
            continue
        if host.readlink(folder + "/physfn").ok:
            continue
        chain = [(device.address, folder)] + list(reversed(upstream))
        reached = 0
        for index in range(0, len(chain) - 1, 2):
            lower = end(*chain[index])
            if lower.width is None:
                if index:
                    stopped.append((device.address, lower.address))
                break
            key = (chain[index][1], chain[index + 1][1])
            if key not in crossing:
                crossing[key] = []
                order.append((key, lower, end(*chain[index + 1])))
            crossing[key].append(device.address)
            reached += 1
        if not reached:
            unlinked.append(device.address)
    links = tuple(GpuLink(tuple(crossing[key]), lower, upper) for key, lower, upper in order)
    return GpuLinks(links, tuple(unplaced), tuple(unlinked), tuple(stopped))
