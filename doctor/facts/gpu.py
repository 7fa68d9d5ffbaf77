"""GPU driver state: the NVIDIA driver's user-space part and kernel module, the loaded driver,
and whether nouveau is loaded or kept out (the CUDA that programs run: ai_doctor.facts.cuda).

The user-space libraries carry the driver version in their file names
(libnvidia-ml.so.550.127.05, libcuda.so.550.127.05), as the driver packages and the .run
installer lay them out; the loaded kernel module reports its own (/sys/module/nvidia/version,
/proc/driver/nvidia/version). Programs load the ``.so.1`` name, whose link chain (Debian's
goes through update-alternatives: /etc/alternatives/nvidia--libcuda.so.1-x86_64-linux-gnu →
…/nvidia/current/libcuda.so.1 → libcuda.so.535.216.03) ends at the versioned file.
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
# Debian installs each driver flavour in its own folder and links the names programs load to
# the selected one through update-alternatives (nvidia-alternative's postinst): nvidia/current,
# nvidia/tesla, nvidia/tesla-535, nvidia/legacy-390xx under the multiarch library folder.
ALTERNATIVE_DIRS = ("/usr/lib/x86_64-linux-gnu/nvidia", "/usr/lib/aarch64-linux-gnu/nvidia")
SMI_PATHS = ("/usr/bin/nvidia-smi", "/usr/local/bin/nvidia-smi")
DKMS_TREE = "/var/lib/dkms"
MODULE_VERSION = "/sys/module/nvidia/version"
PROC_VERSION = "/proc/driver/nvidia/version"
PROC_MODULES = "/proc/modules"
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d", "/lib/modprobe.d")
_DRIVER_VERSION = r"\d{3,4}\.\d+(?:\.\d+)?"
# Modules that hold nvidia, unloaded before it (GPUDirect RDMA and Storage, UVM, DRM, KMS).
UNLOAD_ORDER = ("nvidia_peermem", "nvidia_fs", "nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia")
# Services that keep the GPU devices open (NVIDIA's driver container stops these to reload).
HOLDING_SERVICES = ("nvidia-persistenced", "nvidia-fabricmanager", "nvidia-dcgm", "dcgm")


class Library(Record):
    """A driver library: ``path`` as found, its driver ``version``, and ``target``, the file its
    link chain ends at when that is another one (None: ``path`` is the file)."""

    __slots__ = ("path", "version", "target")
    _defaults = {"target": None}

    @property
    def shown(self) -> str:
        """The version, and where the links lead: evidence for the name programs load."""
        return "%s (%s)" % (self.version, self.target) if self.target else self.version


class DkmsSource(Record):
    """A driver source registered with DKMS: its module name and version (``nvidia/550.127.05``),
    ``failed_log`` (build/make.log, which only a failed build leaves; None: not there) and
    ``logs``, (kernel release, make.log) of each build that finished (DKMS moves the log to
    RELEASE/ARCH/log/ then)."""

    __slots__ = ("module", "version", "failed_log", "logs")
    _defaults = {"failed_log": None, "logs": ()}

    @property
    def ref(self) -> str:
        return "%s/%s" % (self.module, self.version)

    @property
    def path(self) -> str:
        return "%s/%s/%s" % (DKMS_TREE, self.module, self.version)

    def log_for(self, release: str):
        """The make.log of the finished build for ``release``; None where there is none."""
        return next((path for built, path in self.logs if built == release), None)


_DKMS_DRIVER_NAMES = ("nvidia-open", "nvidia-current", "nvidia-tesla", "nvidia-legacy")


class Nvidia(Record):
    """The NVIDIA driver's user space here: ``libraries`` (each versioned file, selected or
    not: where the ``.so.1`` names lead, and Debian's alternative folders), ``links`` (the
    ``.so.1`` names programs load, with the version and file their link chain ends at),
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


def _dkms_source(host, module: str, version: str) -> DkmsSource:
    """A DKMS source with the make.log files its builds left (dkms(8): a failed build keeps
    build/make.log; a finished one moves it to RELEASE/ARCH/log/make.log)."""
    from ai_doctor.facts.system import version_key

    source = DkmsSource(module, version)
    failed = source.path + "/build/make.log"
    logs = []
    listing = host.listdir(source.path)
    for release in sorted((n for n in (listing.data if listing.ok else ()) if n[:1].isdigit()), key=version_key):
        arches = host.listdir("%s/%s" % (source.path, release))
        for arch in arches.data if arches.ok else ():
            log = "%s/%s/%s/log/make.log" % (source.path, release, arch)
            if host.exists(log):
                logs.append((release, log))
                break
    return DkmsSource(module, version, failed if host.exists(failed) else None, tuple(logs))


def _version_suffix(name: str, prefix: str):
    rest = name[len(prefix) :]
    return rest if re.fullmatch(_DRIVER_VERSION, rest) else None


def _resolved(host, path: str, prefix: str):
    """(file, version) where the link chain at ``path`` ends inside the root, the version from
    that file's name (None when it carries none); None when no file is there."""
    got, info = host.stat(path)
    if not got.ok or not info.is_file:
        return None
    try:
        # The stat just looked each link up (and logged it for a snapshot): reuse them.
        final = host.resolve(path, fresh=False)
    except OSError:
        return None
    return final, _version_suffix(final.rsplit("/", 1)[-1], prefix)


def _listed(host, folder: str):
    """The versioned libraries in ``folder``, by name: for a ``.so.1`` that is itself the file."""
    listing = host.listdir(folder)
    found = []
    for name in listing.data if listing.ok else ():
        for prefix in LIBRARIES:
            version = _version_suffix(name, prefix) if name.startswith(prefix) else None
            if version:
                found.append(Library("%s/%s" % (folder, name), version))
    return found


def alternative_folder(name: str) -> bool:
    """Whether ``name`` is one of Debian's driver flavour folders (nvidia/NAME)."""
    return name in ("current", "tesla") or name.startswith(("tesla-", "legacy-"))


@fact("nvidia")
def nvidia(host, facts):
    libraries = []
    links = []
    # Listing a library folder holding thousands of names costs more than asking for the two
    # names programs load: each is followed to its file, whose name says the version.
    for folder in LIB_DIRS:
        listed = False
        for prefix in LIBRARIES:
            path = "%s/%s1" % (folder, prefix)
            found = _resolved(host, path, prefix)
            if found is None:
                continue
            final, version = found
            if version:
                links.append(Library(path, version, final if final != path else None))
                libraries.append(Library(final, version))
            elif not listed:
                listed = True
                libraries += _listed(host, folder)
    # Debian's flavours that are installed, selected or not; each folder's own .so.1 names its file.
    for parent in ALTERNATIVE_DIRS:
        listing = host.listdir(parent)
        for name in listing.data if listing.ok else ():
            if not alternative_folder(name):
                continue
            for prefix in LIBRARIES:
                found = _resolved(host, "%s/%s/%s1" % (parent, name, prefix), prefix)
                if found is not None and found[1]:
                    libraries.append(Library(found[0], found[1]))
    seen = set()
    libraries = [lib for lib in libraries if not (lib.path in seen or seen.add(lib.path))]
    smi = next((path for path in SMI_PATHS if host.exists(path)), None)
    dkms = []
    tree = host.listdir(DKMS_TREE)
    for module in tree.data if tree.ok else ():
        # nvidia (NVIDIA's and Ubuntu's), nvidia-open (RHEL, Arch), nvidia-current,
        # nvidia-current-open and nvidia-tesla-* (Debian); nvidia-fs and nvidia-peermem are
        # other modules.
        if module == "nvidia" or module.startswith(_DKMS_DRIVER_NAMES):
            listing = host.listdir("%s/%s" % (DKMS_TREE, module))
            for name in listing.data if listing.ok else ():
                if re.fullmatch(_DRIVER_VERSION, name):
                    dkms.append(_dkms_source(host, module, name))
    dkms = tuple(dkms)
    loaded = loaded_from = None
    if facts.get("running"):
        got = host.read_text(MODULE_VERSION, cap=4096)
        if got.ok and got.data.strip():
            loaded, loaded_from = got.data.strip(), MODULE_VERSION
        else:
            got = host.read_text(PROC_VERSION, cap=65536)
            match = re.search(_DRIVER_VERSION, got.data.split("Kernel Module", 1)[-1]) if got.ok else None
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


APT_SOURCES = "/etc/apt/sources.list"
APT_SOURCE_PARTS = "/etc/apt/sources.list.d"
APT_LISTS = "/var/lib/apt/lists"


class Apt(Record):
    """apt's sources and package lists, for the fixes that install a package: ``suites`` maps
    each suite a ``deb`` source names to (file, URI) of the first that does; ``lists`` says
    whether /var/lib/apt/lists holds a package list (``*_Packages``, compressed or not; images
    often have them removed, and apt then knows no package until `apt-get update`; None: the
    folder could not be read), ``listed`` holds the suites those lists are of."""

    __slots__ = ("suites", "lists", "listed")


def parse_sources_list(text: str):
    """(URI, suite) of each ``deb`` line of a one-line-style file (sources.list(5)):
    ``deb [ options ] URI SUITE [COMPONENT …]``."""
    found = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        rest = words[1:]
        if rest and rest[0].startswith("["):
            end = next((i for i, word in enumerate(rest) if word.endswith("]")), None)
            rest = rest[end + 1 :] if end is not None else []
        if len(rest) >= 2:
            found.append((rest[0], rest[1]))
    return found


def parse_deb822_sources(text: str):
    """(URI, suite) of each enabled ``Types: deb`` stanza of a deb822-style .sources file
    (sources.list(5)): every URI with every suite."""
    found = []
    stanzas, fields, key = [], {}, None
    for raw in text.splitlines() + [""]:
        if not raw.strip():
            if fields:
                stanzas.append({name: " ".join(parts) for name, parts in fields.items()})
            fields, key = {}, None
        elif raw.startswith("#"):
            continue
        elif raw[0] in " \t":
            # A continuation line; parts are joined once, so a long field stays linear.
            if key is not None:
                fields[key].append(raw.strip())
        else:
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = [value.strip()]
    for fields in stanzas:
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        found += [(uri, suite) for uri in fields.get("uris", "").split() for suite in fields.get("suites", "").split()]
    return found


DPKG_INFO = "/var/lib/dpkg/info"


def gsp_firmware_package(flavour: str) -> str:
    """Debian's GSP firmware package a flavour's DKMS package depends on at its own version:
    current → firmware-nvidia-gsp, tesla-535 → firmware-nvidia-tesla-535-gsp."""
    return "firmware-nvidia-gsp" if flavour == "current" else "firmware-nvidia-%s-gsp" % flavour


@fact("gsp_firmware")
def gsp_firmware(host, facts):
    """The GSP firmware packages installed (dpkg's .list file) for the Debian driver flavours
    the libraries lead to: a held one blocks the DKMS package of another version."""
    nv = facts.get("nvidia")
    flavours = set()
    for lib in nv.links if nv else ():
        parts = (lib.target or lib.path).split("/")
        if len(parts) > 3 and parts[-3] == "nvidia" and alternative_folder(parts[-2]):
            flavours.add(parts[-2])
    names = sorted(gsp_firmware_package(flavour) for flavour in flavours)
    return tuple(name for name in names if host.exists("%s/%s.list" % (DPKG_INFO, name)))


@fact("apt")
def apt(host, facts):
    files = [(APT_SOURCES, parse_sources_list)]
    for suffix, parse in ((".list", parse_sources_list), (".sources", parse_deb822_sources)):
        files += [(path, parse) for _name, path in dropin_files(host, (APT_SOURCE_PARTS,), suffix)]
    suites = {}
    for path, parse in files:
        got = host.read_text(path, cap=1 << 20)
        for uri, suite in parse(got.data) if got.ok else ():
            suites.setdefault(suite, (path, uri))
    listing = host.listdir(APT_LISTS)
    # deb.debian.org_debian_dists_bookworm-backports_main_binary-amd64_Packages(.lz4)
    names = [name for name in (listing.data if listing.ok else ()) if name.endswith("_Packages") or "_Packages." in name]
    listed = {name.split("_dists_", 1)[1].split("_", 1)[0] for name in names if "_dists_" in name}
    # A folder that could not be read says nothing either way.
    return Apt(suites, bool(names) if listing.ok or listing.missing else None, frozenset(listed))


@fact("loaded_modules")
def loaded_modules(host, facts):
    """Names of the modules loaded now (/proc/modules), or None where that cannot be read
    (not a running system, or no module support)."""
    if not facts.get("running"):
        return None
    got = host.read_text(PROC_MODULES, cap=4 << 20)
    return frozenset(line.split(" ", 1)[0] for line in got.data.splitlines()) if got.ok else None


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
