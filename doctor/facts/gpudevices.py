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
(/proc/driver/nvidia/params), the modules modules-load.d(5) loads at boot, and this process's
user and groups (/proc/self/status, proc(5)).
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact
from ai_doctor.facts.dropins import dropin_files
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
# The nvidia-suspend/-hibernate/-resume units install as RequiredBy= (NVIDIA's) or WantedBy=
# (some distributions) systemd-suspend.service and systemd-hibernate.service.
SUSPEND_LINKS = tuple(
    "/etc/systemd/system/%s.%s/nvidia-suspend.service" % (unit, kind)
    for unit in ("systemd-suspend.service",)
    for kind in ("requires", "wants")
)
# What `systemctl mask` on a machine that must never sleep covers (systemd.special(7)).
SLEEP_TARGETS = ("sleep.target", "suspend.target", "hibernate.target", "hybrid-sleep.target")
# Names in /dev the NVIDIA driver's nodes have (the control nodes, then the numbered GPUs).
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# At most this many nodes of a kind are looked at (a host has at most a few dozen).
NODE_LIMIT = 256


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


class GpuDevices(Record):
    """The device nodes and what the kernel registered for them.

    ``dev``: where the NVIDIA nodes were found (/dev, or the GPU Operator's driver root);
    ``majors``: /proc/devices character majors by name (None: unreadable); ``nvidia``:
    DevNode of each NVIDIA node present or expected (the control nodes, /dev/nvidiaN, the
    nvidia-caps ones); ``kfd``/``render``: AMD's; ``uvm_loaded``: nvidia_uvm in /proc/modules
    (None: cannot tell); ``helper``: a setuid-root nvidia-modprobe (path) that CUDA runs to load
    nvidia-uvm and make the nodes for any user; ``params``: the running driver's parameters;
    ``suspends``: successful suspends since boot (None: not known); ``boot_modules``:
    (path, line, name) of modules-load.d lines; ``preserve``: (path, line, value) of the last
    modprobe.d ``NVreg_PreserveVideoMemoryAllocations`` option; ``suspend_unit``: the link that
    enables nvidia-suspend.service (None); ``process``: Process or None; ``char_links``:
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
        "suspend_unit",
        "process",
        "char_links",
        "sleep_masked",
    )

    def node(self, name: str):
        """The DevNode of /dev/NAME (under ``dev``), or None when it was not looked at."""
        path = "%s/%s" % (self.dev, name)
        return next((item for item in self.nvidia if item.path == path), None)

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
    wanted += sorted((name for name in names if _numbered(name, "nvidia")), key=lambda n: int(n[6:]))[:NODE_LIMIT]
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
    helper = None
    for path in MODPROBE_HELPER if nvidia_here else ():
        got, info = host.stat(path)
        if got.ok and info.is_file and info.uid == 0 and info.mode & 0o4000:
            helper = path
            break
    params = host.read_text(PARAMS, cap=65536) if nvidia_here else None
    suspends = host.read_text(SUSPENDS, cap=64) if nvidia_here else None
    count = suspends.data.strip() if suspends is not None and suspends.ok else ""
    status = host.read_text(SELF_STATUS, cap=65536) if kfd is not None else None
    process = parse_status(status.data, SELF_STATUS) if status is not None and status.ok else None
    unit = next((path for path in SUSPEND_LINKS if host.readlink(path).ok), None) if nvidia_here else None
    links = {}
    for item in nvidia:
        if item.node is not None and item.node.is_char:
            key = "%d:%d" % (item.node.major, item.node.minor)
            links[key] = host.readlink("/dev/char/" + key).ok
    from ai_doctor.facts.system import masked

    sleep_masked = nvidia_here and all(masked(host, unit_name) for unit_name in SLEEP_TARGETS)
    return GpuDevices(
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
        unit,
        process,
        links,
        sleep_masked,
    )


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
