"""GPU driver state: the NVIDIA driver's user-space part and kernel module, the loaded driver,
CUDA toolkits, and whether nouveau is loaded or kept out.

The user-space libraries carry the driver version in their file names
(libnvidia-ml.so.550.127.05, libcuda.so.550.127.05), as the driver packages and the .run
installer lay them out; the loaded kernel module reports its own (/sys/module/nvidia/version,
/proc/driver/nvidia/version).
"""

from __future__ import annotations

import re

from ai_doctor.facts import fact
from ai_doctor.facts.dropins import dropin_files
from ai_doctor.record import Record

LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/nvidia/lib64",
)
LIBRARIES = ("libnvidia-ml.so.", "libcuda.so.")
SMI_PATHS = ("/usr/bin/nvidia-smi", "/usr/local/bin/nvidia-smi")
DKMS_TREE = "/var/lib/dkms"
MODULE_VERSION = "/sys/module/nvidia/version"
PROC_VERSION = "/proc/driver/nvidia/version"
PROC_MODULES = "/proc/modules"
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d", "/lib/modprobe.d")
_DRIVER_VERSION = re.compile(r"\d{3,4}\.\d+(?:\.\d+)?")
# Modules that hold nvidia, unloaded before it (GPUDirect RDMA and Storage, UVM, DRM, KMS).
UNLOAD_ORDER = ("nvidia_peermem", "nvidia_fs", "nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia")
# Services that keep the GPU devices open (NVIDIA's driver container stops these to reload).
HOLDING_SERVICES = ("nvidia-persistenced", "nvidia-fabricmanager", "nvidia-dcgm", "dcgm")


class Library(Record):
    __slots__ = ("path", "version")


class DkmsSource(Record):
    """A driver source registered with DKMS: its module name and version (``nvidia/550.127.05``)."""

    __slots__ = ("module", "version")

    @property
    def ref(self) -> str:
        return "%s/%s" % (self.module, self.version)

    @property
    def path(self) -> str:
        return "%s/%s/%s" % (DKMS_TREE, self.module, self.version)


_DKMS_DRIVER_NAMES = ("nvidia-open", "nvidia-current", "nvidia-tesla", "nvidia-legacy")


class Nvidia(Record):
    """The NVIDIA driver's user space here: ``libraries`` (path, version from the file name),
    ``links`` (the ``.so.1`` names programs load, with the version they point to),
    ``smi`` (nvidia-smi's path or None), ``dkms`` (DkmsSource of each driver source tree) and the
    loaded module's ``loaded`` version with where it was read (None: not loaded, or not a
    running system)."""

    __slots__ = ("libraries", "links", "smi", "dkms", "loaded", "loaded_from", "modules_loaded", "services")
    _defaults = {"modules_loaded": (), "services": ()}

    @property
    def installed(self) -> bool:
        return bool(self.libraries or self.smi or self.dkms)

    @property
    def dkms_source(self):
        """The DKMS source to build: the one of the libraries' version, else the newest."""
        from ai_doctor.facts.system import version_key

        matching = [source for source in self.dkms if source.version in self.library_versions]
        ordered = sorted(matching or self.dkms, key=lambda source: version_key(source.version))
        return ordered[-1] if ordered else None

    @property
    def library_versions(self):
        """The versions programs get: where the ``.so.1`` links say, else every file's."""
        return sorted({lib.version for lib in (self.links or self.libraries)})


def _version_suffix(name: str, prefix: str):
    rest = name[len(prefix) :]
    return rest if _DRIVER_VERSION.fullmatch(rest) else None


@fact("nvidia")
def nvidia(host, facts):
    libraries = []
    # Listing a library folder holding thousands of names costs more than asking for the two
    # links the driver's packages (through ldconfig) always leave: list only where one is.
    present = [folder for folder in LIB_DIRS if any(not host.stat("%s/%s1" % (folder, p))[0].missing for p in LIBRARIES)]
    for folder in present:
        listing = host.listdir(folder)
        for name in listing.data if listing.ok else ():
            for prefix in LIBRARIES:
                if name.startswith(prefix):
                    version = _version_suffix(name, prefix)
                    if version:
                        libraries.append(Library("%s/%s" % (folder, name), version))
    links = []
    for folder in sorted({lib.path.rsplit("/", 1)[0] for lib in libraries}):
        for prefix in LIBRARIES:
            got = host.readlink("%s/%s1" % (folder, prefix))
            version = _version_suffix(got.data.rsplit("/", 1)[-1], prefix) if got.ok and got.data else None
            if version:
                links.append(Library("%s/%s1" % (folder, prefix), version))
    smi = next((path for path in SMI_PATHS if host.exists(path)), None)
    dkms = []
    tree = host.listdir(DKMS_TREE)
    for module in tree.data if tree.ok else ():
        # nvidia (NVIDIA's and Ubuntu's), nvidia-open (RHEL, Arch), nvidia-current and
        # nvidia-tesla-* (Debian); nvidia-fs and nvidia-peermem are other modules.
        if module == "nvidia" or module.startswith(_DKMS_DRIVER_NAMES):
            listing = host.listdir("%s/%s" % (DKMS_TREE, module))
            dkms += [DkmsSource(module, name) for name in (listing.data if listing.ok else ()) if _DRIVER_VERSION.fullmatch(name)]
    dkms = tuple(dkms)
    loaded = loaded_from = None
    if facts.get("running"):
        got = host.read_text(MODULE_VERSION, cap=4096)
        if got.ok and got.data.strip():
            loaded, loaded_from = got.data.strip(), MODULE_VERSION
        else:
            got = host.read_text(PROC_VERSION, cap=65536)
            match = _DRIVER_VERSION.search(got.data.split("Kernel Module", 1)[-1]) if got.ok else None
            if match:
                loaded, loaded_from = match.group(0), PROC_VERSION
    modules_loaded = ()
    services = ()
    if loaded:
        names = facts.get("loaded_modules") or frozenset()
        modules_loaded = tuple(name for name in UNLOAD_ORDER if name in names)
        # Enabled ones only: starting fabric manager where it never ran fails without NVSwitch.
        services = tuple(unit for unit in HOLDING_SERVICES if host.exists("/etc/systemd/system/multi-user.target.wants/%s.service" % unit))
    return Nvidia(tuple(libraries), tuple(links), smi, dkms, loaded, loaded_from, modules_loaded, services)


@fact("loaded_modules")
def loaded_modules(host, facts):
    """Names of the modules loaded now (/proc/modules), or None where that cannot be read
    (not a running system, or no module support)."""
    if not facts.get("running"):
        return None
    got = host.read_text(PROC_MODULES, cap=4 << 20)
    return frozenset(line.split(" ", 1)[0] for line in got.data.splitlines()) if got.ok else None


class CudaToolkit(Record):
    """A CUDA toolkit under /usr/local: its folder, version and the file that says it."""

    __slots__ = ("path", "version", "source")


@fact("cuda_toolkits")
def cuda_toolkits(host, facts):
    """CUDA toolkits in /usr/local/cuda-X.Y (and /usr/local/cuda), from version.json (11.1+)
    or version.txt."""
    listing = host.listdir("/usr/local")
    found = {}
    for name in listing.data if listing.ok else ():
        if not (name == "cuda" or name.startswith("cuda-")):
            continue
        folder = "/usr/local/" + name
        version = source = None
        got = host.read_text(folder + "/version.json", cap=1 << 20)
        if got.ok:
            import json

            try:
                version = str(json.loads(got.data)["cuda"]["version"])
                source = folder + "/version.json"
            except (ValueError, KeyError, TypeError, RecursionError):
                version = None
        if version is None:
            got = host.read_text(folder + "/version.txt", cap=65536)
            match = re.search(r"CUDA Version\s+(\d+\.\d+(?:\.\d+)?)", got.data) if got.ok else None
            if match:
                version, source = match.group(1), folder + "/version.txt"
        if version and re.fullmatch(r"\d+\.\d+(?:\.\d+)*", version):
            # /usr/local/cuda is usually a link to one of the others: one entry per version.
            found.setdefault(version, CudaToolkit(folder, version, source))
    return tuple(sorted(found.values(), key=lambda t: t.path))


class Nouveau(Record):
    """Whether nouveau is loaded (None: not a running system), and the lines that keep it out
    or from binding a GPU: ``blacklist nouveau``, ``install nouveau /bin/false`` or ``options
    nouveau modeset=0`` in modprobe.d, ``modprobe.blacklist=nouveau``, ``nouveau.modeset=0`` or
    ``nomodeset`` on the kernel command line, each as (path, line, text)."""

    __slots__ = ("loaded", "loaded_from", "blocked_by", "initramfs_only")
    _defaults = {"initramfs_only": ()}


@fact("nouveau")
def nouveau(host, facts):
    loaded = loaded_from = None
    if facts.get("running"):
        names = facts.get("loaded_modules")
        if names is not None:
            loaded, loaded_from = "nouveau" in names, PROC_MODULES
        else:
            loaded = host.exists("/sys/module/nouveau")
            loaded_from = "/sys/module/nouveau"
    blocked = []
    for _name, path in dropin_files(host, MODPROBE_DIRS):
        got = host.read_text(path, cap=1 << 20)
        for number, raw in enumerate(got.data.splitlines() if got.ok else (), 1):
            words = raw.split("#", 1)[0].split()
            # ``blacklist`` stops loading by alias (udev); ``install nouveau /bin/false``
            # stops every load.
            refused = words[:2] == ["install", "nouveau"] and len(words) > 2 and words[2].rsplit("/", 1)[-1] in ("false", "true")
            # modeset=0: nouveau_drm_init() returns before registering the PCI driver.
            no_modeset = words[:2] == ["options", "nouveau"] and "modeset=0" in words[2:]
            if words[:2] == ["blacklist", "nouveau"] or refused or no_modeset:
                blocked.append((path, number, raw.strip()))
    cmdline = facts.get("cmdline")
    initramfs_only = []
    for index, param in enumerate(cmdline.params if cmdline else ()):
        # rd.driver.blacklist= covers only the initramfs, not the loads after it.
        listed = param.name in ("modprobe.blacklist", "module_blacklist") and "nouveau" in (param.value or "").split(",")
        path, line = cmdline.origin(index)
        if listed or param.text in ("nouveau.modeset=0", "nomodeset"):
            blocked.append((path, line, param.text))
        elif param.name == "rd.driver.blacklist" and "nouveau" in (param.value or "").split(","):
            initramfs_only.append((path, line, param.text))
    return Nouveau(loaded, loaded_from, tuple(blocked), tuple(initramfs_only))
