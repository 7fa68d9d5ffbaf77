"""GPU device nodes as this process sees them, and what the kernel says they should be.

The NVIDIA driver registers character-device majors in /proc/devices: 195 for the GPUs and
/dev/nvidiactl (named ``nvidia-frontend`` before driver 550.40, ``nvidia`` since), and dynamic
majors for ``nvidia-uvm``, ``nvidia-caps``, ``nvidia-nvlink``/``nvidia-nvswitch``
(nvidia-container-toolkit internal/info/proc/devices). The nodes themselves are not made by
devtmpfs: nvidia-modprobe (setuid root, run by libcuda), a udev rule or nvidia-persistenced
makes them with mknod, so a node can outlive its module and keep an old major. Each node is
looked at with ``Host.node`` (never opened). ROCm opens /dev/kfd and /dev/dri/renderD*, whose
group and mode decide who may use them.

Also read here: whether the host suspended since boot (/sys/power/suspend_stats/success,
Documentation/ABI/testing/sysfs-power, Linux 5.4+), the running driver's parameters
(/proc/driver/nvidia/params), the modules modules-load.d(5) loads at boot, NVIDIA's suspend units
(their unit files, and whether a sleep service requires or wants them), the udev rules that make
NVIDIA nodes when the driver binds or a module loads, and this process's user and groups
(/proc/self/status, proc(5)).

In the simulated next boot (``aidoctor --next-boot``, the fix proof) the nodes such udev rules
make are there, with the numbers the driver registers; the nodes present now are taken as made
again by whatever made them.
"""

from __future__ import annotations

import re

from ai_doctor.facts import Unavailable, fact
from ai_doctor.facts.dropins import dropin_files
from ai_doctor.host import Node
from ai_doctor.record import Record

PROC_DEVICES = "/proc/devices"
PARAMS = "/proc/driver/nvidia/params"
SUSPENDS = "/sys/power/suspend_stats/success"
SELF_STATUS = "/proc/self/status"
# The GPU Operator's driver container makes the nodes under its own root, shared here.
OPERATOR_DEV = "/run/nvidia/driver/dev"
MODPROBE_HELPER = ("/usr/bin/nvidia-modprobe", "/usr/sbin/nvidia-modprobe", "/usr/local/bin/nvidia-modprobe")
MODULES_LOAD_DIRS = (
    "/etc/modules-load.d",
    "/run/modules-load.d",
    "/usr/local/lib/modules-load.d",
    "/usr/lib/modules-load.d",
    "/lib/modules-load.d",
)
# Debian's /etc/modules (read by kmod's modules-load too, through a link or its own service).
ETC_MODULES = "/etc/modules"
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d", "/lib/modprobe.d")
# NVIDIA's power management units (driver README, "Configuring Power Management Support"): they
# install as RequiredBy= (NVIDIA's) or WantedBy= (some distributions) the sleep services below.
SUSPEND_UNITS = ("nvidia-suspend.service", "nvidia-resume.service", "nvidia-hibernate.service")
SLEEP_SERVICES = (
    "systemd-suspend.service",
    "systemd-hibernate.service",
    "systemd-suspend-then-hibernate.service",
    "systemd-hybrid-sleep.service",
)
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
# What `systemctl mask` on a machine that must never sleep covers (systemd.special(7)).
SLEEP_TARGETS = ("sleep.target", "suspend.target", "hibernate.target", "hybrid-sleep.target")
# Names in /dev the NVIDIA driver's nodes have (the control nodes, then the numbered GPUs).
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# At most this many nodes of a kind are looked at (a host has at most a few dozen).
NODE_LIMIT = 256
# The GPUs the driver lists, each with its "Device Minor:" (/dev/nvidiaN).
DRIVER_GPUS = "/proc/driver/nvidia/gpus"
# udev RUN+= values (any RUN{type}); a rules line continues after a trailing backslash.
_RUN = r'RUN(?:\{[a-z]+\})?\s*\+?=\s*"([^"]*)"'


class DevNode(Record):
    """One device file: its path and the Node read (None: absent, with ``outcome`` saying how)."""

    __slots__ = ("path", "node", "outcome")


class Process(Record):
    """This process's effective user and group and its supplementary groups (proc(5))."""

    __slots__ = ("uid", "gid", "groups", "source")

    def may_use(self, node) -> bool:
        """Whether read and write on ``node`` are allowed by its mode bits (root always is)."""
        if self.uid == 0:
            return True
        if node.uid == self.uid:
            return node.mode & 0o600 == 0o600
        if node.gid == self.gid or node.gid in self.groups:
            return node.mode & 0o060 == 0o060
        return node.mode & 0o006 == 0o006


class NodeMaker(Record):
    """A udev rules line that makes NVIDIA nodes: its file and line, the names it makes under
    /dev (``nvidia-uvm``, ``nvidiactl``, ``nvidia0`` …) and whether it loads nvidia-uvm too
    (``nvidia-modprobe -u``)."""

    __slots__ = ("path", "line", "makes", "loads_uvm")


class GpuDevices(Record):
    """The device nodes and what the kernel registered for them.

    ``dev``: where the NVIDIA nodes were found (/dev, or the GPU Operator's driver root);
    ``majors``: /proc/devices character majors by name (None: unreadable); ``nvidia``:
    DevNode of each NVIDIA node present or expected (the control nodes, /dev/nvidiaN, the
    nvidia-caps ones); ``kfd``/``render``: AMD's; ``uvm_loaded``: nvidia_uvm in /proc/modules
    (None: cannot tell); ``helper``: a setuid-root nvidia-modprobe (path) that CUDA runs to load
    nvidia-uvm and make the nodes for any user; ``tool``: an nvidia-modprobe at all (path, None);
    ``minors``: the minor numbers of the GPUs the driver lists, read only where fewer
    /dev/nvidiaN exist than it lists GPUs (else ()); ``makers``: NodeMaker of each udev rule
    that makes NVIDIA nodes; ``params``: the running driver's parameters; ``suspends``:
    successful suspends since boot (None: not known); ``boot_modules``: (path, line, name) of
    modules-load.d lines; ``preserve``: (path, line, value, text) of the last modprobe.d
    ``NVreg_PreserveVideoMemoryAllocations`` option; ``units``: NVIDIA's suspend units →
    the path of their unit file (None: none; masked ones count as none); ``enabled_units``:
    those a sleep service requires or wants; ``process``: Process or None; ``char_links``:
    ``MAJ:MIN`` → whether /dev/char holds that link, for each NVIDIA character node present;
    ``sleep_masked``: every sleep target (sleep, suspend, hibernate, hybrid-sleep) is masked."""

    __slots__ = (
        "dev",
        "majors",
        "nvidia",
        "kfd",
        "render",
        "uvm_loaded",
        "helper",
        "params",
        "suspends",
        "boot_modules",
        "preserve",
        "units",
        "enabled_units",
        "process",
        "char_links",
        "sleep_masked",
        "tool",
        "minors",
        "makers",
    )
    _defaults = {"units": {}, "enabled_units": (), "tool": None, "minors": (), "makers": ()}

    def node(self, name: str):
        """The DevNode of /dev/NAME (under ``dev``), or None when it was not looked at."""
        path = "%s/%s" % (self.dev, name)
        return next((item for item in self.nvidia if item.path == path), None)

    def absent(self, name: str) -> bool:
        """Whether /dev/NAME was looked at and is not there."""
        item = self.node(name)
        return item is not None and item.node is None

    @property
    def gpus(self):
        """DevNode of each /dev/nvidiaN present."""
        return tuple(item for item in self.nvidia if item.node is not None and _numbered(item.path.rsplit("/", 1)[1], "nvidia"))

    def nvidia_major(self):
        """The GPUs' and nvidiactl's major: ``nvidia`` (550.40+) or ``nvidia-frontend``."""
        if not self.majors:
            return None
        return self.majors.get("nvidia", self.majors.get("nvidia-frontend"))

    def loads_at_boot(self, module: str) -> bool:
        wanted = module.replace("-", "_")
        return any(name.replace("-", "_") == wanted for _path, _line, name in self.boot_modules)

    def made_by(self, name: str):
        """The first udev rule that makes /dev/NAME, or None."""
        return next((maker for maker in self.makers if name in maker.makes), None)

    def file_mode(self):
        """(mode, uid, gid) the driver gives /dev/nvidiactl and /dev/nvidiaN (its DeviceFileMode,
        DeviceFileUID and DeviceFileGID parameters, decimal; 0666 root's by default)."""
        values = []
        for key, default in (("DeviceFileMode", 0o666), ("DeviceFileUID", 0), ("DeviceFileGID", 0)):
            text = self.params.get(key, "")
            values.append(int(text) if text.isdigit() and len(text) < 10 else default)
        return values[0] & 0o777, values[1], values[2]


def _numbered(name: str, prefix: str) -> bool:
    return name.startswith(prefix) and name[len(prefix) :].isdigit()


def parse_proc_devices(text: str) -> dict:
    """Character-device ``name → major`` from /proc/devices (fs/proc/devices.c): the lines
    between ``Character devices:`` and ``Block devices:``; the first major of a name wins."""
    majors = {}
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith("devices:"):
            section = stripped
            continue
        if section != "Character devices:":
            continue
        number, _, name = stripped.partition(" ")
        if number.isdigit() and len(number) < 8 and name:
            majors.setdefault(name.strip(), int(number))
    return majors


def parse_params(text: str) -> dict:
    """``Key: value`` lines of /proc/driver/nvidia/params."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            found[key.strip()] = value.strip()
    return found


def parse_status(text: str, source: str):
    """Process from /proc/PID/status (effective ids: the second field of Uid: and Gid:)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in ("Uid", "Gid", "Groups"):
            fields[key] = value.split()
    try:
        uid, gid = int(fields["Uid"][1]), int(fields["Gid"][1])
        groups = frozenset(int(g) for g in fields.get("Groups", ()) if g.isdigit())
    except (KeyError, IndexError, ValueError):
        return None
    return Process(uid, gid, groups, source)


def _modules_load(host):
    """(path, line, module) of every modules-load.d(5) line, and of Debian's /etc/modules."""
    found = []
    files = [path for _name, path in dropin_files(host, MODULES_LOAD_DIRS)] + [ETC_MODULES]
    for path in files:
        got = host.read_text(path, cap=1 << 20)
        for number, raw in enumerate(got.data.splitlines() if got.ok else (), 1):
            words = raw.split()
            # modules-load.d: "#" and ";" start comments; Debian's /etc/modules allows arguments.
            if words and not words[0].startswith(("#", ";")):
                found.append((path, number, words[0]))
    return tuple(found)


def _preserve_option(host):
    """The last ``options nvidia … NVreg_PreserveVideoMemoryAllocations=N`` of modprobe.d(5),
    in its reading order (later options override earlier ones): (path, line, value, the line
    as written) or None."""
    last = None
    for _name, path in dropin_files(host, MODPROBE_DIRS):
        got = host.read_text(path, cap=1 << 20)
        for number, raw in enumerate(got.data.splitlines() if got.ok else (), 1):
            words = raw.split("#", 1)[0].split()
            if words[:2] != ["options", "nvidia"]:
                continue
            for word in words[2:]:
                key, sep, value = word.partition("=")
                if sep and key == "NVreg_PreserveVideoMemoryAllocations":
                    last = (path, number, value, raw)
    return last


def _look(host, path: str) -> DevNode:
    got = host.node(path)
    return DevNode(path, got.data if got.ok else None, got.describe())


def _units(host):
    """NVIDIA's suspend units → their unit file (None where there is none, or it is masked), and
    the ones a sleep service requires or wants (its .requires/.wants folder links them)."""
    from ai_doctor.facts.system import masked

    files = {}
    for unit in SUSPEND_UNITS:
        found = None
        if not masked(host, unit):
            found = next((path for path in ("%s/%s" % (folder, unit) for folder in UNIT_DIRS) if host.exists(path)), None)
        files[unit] = found
    enabled = set()
    top = host.listdir("/etc/systemd/system")
    for name in top.data if top.ok else ():
        service, _dot, kind = name.rpartition(".")
        if service in SLEEP_SERVICES and kind in ("requires", "wants"):
            listing = host.listdir("/etc/systemd/system/" + name)
            enabled.update(unit for unit in (listing.data if listing.ok else ()) if unit in SUSPEND_UNITS)
    return files, tuple(unit for unit in SUSPEND_UNITS if unit in enabled)


def _minors(host):
    """The "Device Minor:" of each GPU the driver lists (/proc/driver/nvidia/gpus/*/information)."""
    listing = host.listdir(DRIVER_GPUS)
    found = []
    for name in (listing.data if listing.ok else ())[:NODE_LIMIT]:
        got = host.read_text("%s/%s/information" % (DRIVER_GPUS, name), cap=65536)
        for line in got.data.splitlines() if got.ok else ():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "Device Minor" and value.strip().isdigit() and int(value) < 255:
                found.append(int(value))
                break
    return tuple(sorted(set(found)))


def modprobe_flags(words):
    """(uvm, minors, modeset) from nvidia-modprobe's arguments: ``-u``/``--unified-memory``,
    each ``-c N``/``-c=N``/``-cN``/``--create-nvidia-device-file=N`` (nvgetopt), ``-m``."""
    uvm = modeset = False
    minors = []
    at = 0
    while at < len(words):
        word = words[at]
        value = None
        if word in ("-u", "--unified-memory"):
            uvm = True
        elif word in ("-m", "--modeset"):
            modeset = True
        elif word in ("-c", "--create-nvidia-device-file") and at + 1 < len(words):
            at += 1
            value = words[at]
        elif word.startswith(("-c=", "--create-nvidia-device-file=")):
            value = word.split("=", 1)[1]
        elif word.startswith("-c") and word[2:].isdigit():
            value = word[2:]
        if value is not None and value.isdigit() and len(value) < 4:
            minors.append(int(value))
        at += 1
    return uvm, minors, modeset


def _made_by_command(host, command: str):
    """(names under /dev, loads nvidia-uvm) a udev RUN command makes; None when it makes none
    or its program is not there. nvidia-modprobe ``-u -c=0`` makes the nvidia-uvm nodes (with
    ``-u`` the minors are the nvidia-uvm device's: nvidia-modprobe.c, nvidia_uvm_mknod), without
    ``-u`` ``-c=N`` makes /dev/nvidiaN (255: /dev/nvidiactl), ``-m`` /dev/nvidia-modeset; a
    script that runs mknod on /dev/nvidia-uvm (Ubuntu's create-uvm-dev-node) makes that."""
    words = command.split()
    if not words:
        return None
    program = words[0]
    if program.startswith("/"):
        if not host.exists(program):
            return None
    elif not any(host.exists("%s/%s" % (folder, program)) for folder in ("/usr/lib/udev", "/lib/udev")):
        return None
    base = program.rsplit("/", 1)[-1]
    if base == "nvidia-modprobe":
        uvm, minors, modeset = modprobe_flags(words[1:])
        if uvm:
            return (("nvidia-uvm", "nvidia-uvm-tools") if 0 in minors else ()), True
        made = tuple("nvidiactl" if minor == 255 else "nvidia%d" % minor for minor in minors)
        return made + (("nvidia-modeset",) if modeset else ()), False
    if base == "create-uvm-dev-node" or ("mknod" in command and "/dev/nvidia-uvm" in command):
        return ("nvidia-uvm",) + (("nvidia-uvm-tools",) if "nvidia-uvm-tools" in command or base == "create-uvm-dev-node" else ()), False
    return None


def _node_makers(host):
    """NodeMaker of each udev rules line (in files whose name holds "nvidia") that makes NVIDIA
    nodes. Which event it waits for is not judged: the driver binds and its modules load at
    every boot."""
    from ai_doctor.facts.udev import RULES_DIRS

    found = []
    for file_name, path in dropin_files(host, RULES_DIRS, ".rules"):
        if "nvidia" not in file_name:
            continue
        got = host.read_text(path, cap=1 << 20)
        number = 0
        # A line ending in a backslash goes on on the next: joined, each join marked by a NUL.
        for raw in (got.data.replace("\\\n", " \x00").splitlines() if got.ok else ())[:4096]:
            start = number + 1
            number += 1 + raw.count("\x00")
            line = raw.replace("\x00", "")
            if line.lstrip().startswith("#"):
                continue
            makes, loads = [], False
            for command in re.findall(_RUN, line):
                made = _made_by_command(host, command.replace("$$", "$"))
                if made is not None:
                    makes += [node for node in made[0] if node not in makes]
                    loads = loads or made[1]
            if makes or loads:
                found.append(NodeMaker(path, start, tuple(makes), loads))
    return tuple(found)


def _dynamic_major(majors) -> int:
    """The character major the kernel would give a module that asks for a dynamic one
    (fs/char_dev.c find_dynamic_major: 254 down to 234, then 511 down to 384)."""
    used = set(majors.values())
    return next((major for major in list(range(254, 233, -1)) + list(range(511, 383, -1)) if major not in used), 0)


def _at_boot(devices, makers_loaded):
    """``devices`` as the next boot makes them: the nodes the udev rules make are there, with
    the numbers the driver registers (nvidia-uvm's, if not registered now, the one the kernel's
    dynamic allocation would give), and nvidia-uvm is loaded where a rule loads it."""
    uvm_loaded = devices.uvm_loaded or makers_loaded
    majors = dict(devices.majors or {})
    if uvm_loaded and "nvidia-uvm" not in majors and devices.majors is not None:
        majors["nvidia-uvm"] = _dynamic_major(majors)
    mode, uid, gid = devices.file_mode()
    gpu = majors.get("nvidia", majors.get("nvidia-frontend"))
    nvidia = list(devices.nvidia)
    for maker in devices.makers:
        for name in maker.makes:
            path = "%s/%s" % (devices.dev, name)
            if any(item.path == path and item.node is not None for item in nvidia):
                continue
            if name.startswith("nvidia-uvm"):
                if not uvm_loaded or "nvidia-uvm" not in majors:
                    continue
                node = Node("c", majors["nvidia-uvm"], 0 if name == "nvidia-uvm" else 1, 0o666, 0, 0, 0)
            elif gpu is None:
                continue
            else:
                minor = 255 if name == "nvidiactl" else 254 if name == "nvidia-modeset" else int(name[6:])
                node = Node("c", gpu, minor, mode, uid, gid, 0)
            made = DevNode(path, node, "made at boot by %s:%d" % (maker.path, maker.line))
            nvidia = [made if item.path == path else item for item in nvidia]
            if made not in nvidia:
                nvidia.append(made)
    return devices._replace(nvidia=tuple(nvidia), uvm_loaded=uvm_loaded, majors=majors if devices.majors is not None else None)


@fact("gpu_devices")
def gpu_devices(host, facts):
    """Device nodes and their context; Unavailable where /dev was not captured (a tree without
    a /dev folder says nothing about the nodes) or the target is not running."""
    if not facts.get("running"):
        return Unavailable("device nodes exist only on a running system (an image has none)")
    listing = host.listdir("/dev")
    if not listing.ok:
        return Unavailable("/dev was not captured (%s): the device nodes are not known" % listing.describe())
    names = listing.data
    dev = "/dev"
    if "nvidiactl" not in names:
        operator = host.listdir(OPERATOR_DEV)
        if operator.ok and "nvidiactl" in operator.data:
            dev, names = OPERATOR_DEV, operator.data
    proc = host.read_text(PROC_DEVICES, cap=65536)
    majors = parse_proc_devices(proc.data) if proc.ok else None
    wanted = [name for name in CONTROL_NODES]
    numbered = sorted((name for name in names if _numbered(name, "nvidia")), key=lambda n: int(n[6:]))[:NODE_LIMIT]
    wanted += numbered
    nvidia = [
        _look(host, "%s/%s" % (dev, name)) if name in names else DevNode("%s/%s" % (dev, name), None, "not present") for name in wanted
    ]
    if "nvidia-caps" in names:
        caps = host.listdir(dev + "/nvidia-caps")
        nvidia += [_look(host, "%s/nvidia-caps/%s" % (dev, name)) for name in (caps.data if caps.ok else ())[:NODE_LIMIT]]
    kfd = render = None
    if "kfd" in listing.data:
        kfd = _look(host, "/dev/kfd")
        dri = host.listdir("/dev/dri")
        render = tuple(_look(host, "/dev/dri/" + name) for name in (dri.data if dri.ok else ()) if _numbered(name, "renderD"))[:NODE_LIMIT]
    loaded = facts.get("loaded_modules")
    uvm_loaded = None if loaded is None else "nvidia_uvm" in loaded
    # What only an NVIDIA host needs is not read elsewhere (a host without GPUs pays a listing).
    nvidia_here = bool(loaded and "nvidia" in loaded) or any(item.node is not None for item in nvidia)
    helper = tool = None
    for path in MODPROBE_HELPER if nvidia_here else ():
        got, info = host.stat(path)
        if got.ok and info.is_file and info.mode & 0o111:
            tool = tool or path
            if info.uid == 0 and info.mode & 0o4000:
                helper = path
                break
    minors = ()
    if nvidia_here:
        gpus = facts.get("gpus")
        if gpus and len(gpus.driver_listed) > len(numbered):
            minors = _minors(host)
    params = host.read_text(PARAMS, cap=65536) if nvidia_here else None
    suspends = host.read_text(SUSPENDS, cap=64) if nvidia_here else None
    count = suspends.data.strip() if suspends is not None and suspends.ok else ""
    status = host.read_text(SELF_STATUS, cap=65536) if kfd is not None else None
    process = parse_status(status.data, SELF_STATUS) if status is not None and status.ok else None
    units, enabled = _units(host) if nvidia_here else ({}, ())
    links = {}
    for item in nvidia:
        if item.node is not None and item.node.is_char:
            key = "%d:%d" % (item.node.major, item.node.minor)
            links[key] = host.readlink("/dev/char/" + key).ok
    from ai_doctor.facts.system import masked

    sleep_masked = nvidia_here and all(masked(host, unit_name) for unit_name in SLEEP_TARGETS)
    makers = _node_makers(host) if nvidia_here else ()
    devices = GpuDevices(
        dev,
        majors,
        tuple(nvidia),
        kfd,
        render or (),
        uvm_loaded,
        helper,
        parse_params(params.data) if params is not None and params.ok else {},
        int(count) if count.isdigit() and len(count) < 19 else None,
        _modules_load(host) if nvidia_here else (),
        _preserve_option(host) if nvidia_here else None,
        units,
        enabled,
        process,
        links,
        sleep_masked,
        tool,
        minors,
        makers,
    )
    if makers and host.next_boot:
        devices = _at_boot(devices, any(maker.loads_uvm for maker in makers))
    return devices


def group_name(host, gid: int):
    """The name of group ``gid`` in /etc/group (None where it has none)."""
    return _name_of(host, "/etc/group", gid)


def user_name(host, uid: int):
    return _name_of(host, "/etc/passwd", uid)


def _name_of(host, path: str, number: int):
    got = host.read_text(path, cap=1 << 20)
    for line in got.data.splitlines() if got.ok else ():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(number) and fields[0]:
            return fields[0]
    return None


class Names(Record):
    """Names of this process's user and of the groups of the AMD nodes, from /etc/passwd and
    /etc/group: ``user`` (None), ``groups`` gid → name."""

    __slots__ = ("user", "groups")


@fact("gpu_device_names")
def gpu_device_names(host, facts):
    devices = facts.get("gpu_devices")
    if not devices or devices.process is None:
        return Names(None, {})
    gids = {item.node.gid for item in (devices.kfd,) + tuple(devices.render) if item is not None and item.node is not None}
    return Names(user_name(host, devices.process.uid), {gid: group_name(host, gid) for gid in sorted(gids)})


class BootDevices(Record):
    """What the next boot changes among the things gpu_devices reads (doctor/nextboot.py):
    ``modules``, nvidia modules modules-load.d loads; ``preserve``, the
    NVreg_PreserveVideoMemoryAllocations value the nvidia module loads with (None: unchanged);
    ``links``: /dev/char/MAJ:MIN → target that a udev rule running ``nvidia-ctk system
    create-dev-char-symlinks`` makes when the driver binds."""

    __slots__ = ("modules", "preserve", "links")


DEV_CHAR_COMMAND = "create-dev-char-symlinks"


@fact("gpu_devices_at_boot")
def gpu_devices_at_boot(host, facts):
    devices = facts.get("gpu_devices")
    if not devices:
        return Unavailable(devices.reason)
    modules = tuple(
        sorted({name.replace("-", "_") for _p, _l, name in devices.boot_modules if name.replace("-", "_").startswith("nvidia")})
    )
    preserve = devices.preserve[2] if devices.preserve else None
    links = {}
    if _dev_char_rule(host):
        for item in devices.nvidia:
            if item.node is not None and item.node.is_char and item.path.startswith("/dev/"):
                links["/dev/char/%d:%d" % (item.node.major, item.node.minor)] = ".." + item.path[len("/dev") :]
    return BootDevices(modules, preserve, links)


def _dev_char_rule(host) -> bool:
    """Whether a udev rules file runs nvidia-ctk's create-dev-char-symlinks (NVIDIA's NOTICE,
    NVIDIA/nvidia-container-toolkit#48)."""
    from ai_doctor.facts.udev import RULES_DIRS

    for _name, path in dropin_files(host, RULES_DIRS, ".rules"):
        if "nvidia" not in path:
            continue
        got = host.read_text(path, cap=1 << 20)
        if got.ok and any(DEV_CHAR_COMMAND in line and not line.lstrip().startswith("#") for line in got.data.splitlines()):
            return True
    return False
