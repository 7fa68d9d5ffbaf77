"""Kernel modules installed for a kernel release, and what their .modinfo says.

modprobe finds a module through /lib/modules/REL/modules.dep (written by depmod), whatever
folder it sits in: kernel/ for the distribution's, updates/ and extra/ for DKMS and vendor
packages, weak-updates/ for RHEL's kABI links. Only the modules asked for are opened, and
only their .modinfo section is read.
"""

from __future__ import annotations

from ai_doctor.facts import fact
from ai_doctor.record import Record

MODULE_ROOTS = ("/lib/modules", "/usr/lib/modules")
# Where modules.dep is missing (depmod never ran in an image build): the folders drivers
# outside the kernel package go to, and the GPU drivers' own.
_FALLBACK_DIRS = (
    "updates",
    "updates/dkms",
    "extra",
    "extra/nvidia",
    "weak-updates",
    "kernel/drivers/video",
    "kernel/drivers/gpu/drm/amd/amdgpu",
    "kernel/drivers/gpu/drm/nouveau",
)
GPU_MODULES = ("nvidia", "amdgpu", "nouveau")


class ModuleInfo(Record):
    """A module file for a kernel release: its path, and its .modinfo fields (key → [values],
    empty when unreadable, with ``problem`` saying why); ``partial``: the .modinfo was read
    only in part, so a field missing from ``fields`` may be in the rest."""

    __slots__ = ("name", "release", "path", "fields", "problem", "partial")
    _defaults = {"fields": None, "problem": None, "partial": False}

    def field(self, key: str):
        values = (self.fields or {}).get(key)
        return values[0] if values else None

    @property
    def vermagic_release(self):
        """The release the module was built for: vermagic's first word."""
        magic = self.field("vermagic")
        return magic.split()[0] if magic and magic.split() else None


class KernelModules(Record):
    """The modules that matter here, for one kernel release: name → ModuleInfo (absent names
    are not installed); ``base`` is the modules folder (None: none for this release);
    ``reference`` is one of the kernel's own modules, whose vermagic is the kernel's;
    ``index`` says how modules were found (modules.dep, or a look in the usual folders);
    ``stale`` holds (name, path) the index names but the folder no longer has."""

    __slots__ = ("release", "base", "found", "reference", "index", "stale")
    _defaults = {"stale": ()}


def module_name(file_name: str):
    from ai_doctor.elf import module_name as name

    return name(file_name)


# Debian ships the NVIDIA module under other file names (nvidia-current.ko, nvidia-tesla-535.ko,
# nvidia-legacy-390xx.ko) whose .modinfo name is still nvidia.
_RENAMED_NVIDIA = r"nvidia_(?:current(?:_open)?|tesla(?:_\d+)?|legacy_\d+xx)"


def is_module(wanted: str, name: str) -> bool:
    """Whether a module file named ``name`` (normalised) is the module ``wanted``."""
    import re

    return name == wanted or (wanted == "nvidia" and re.fullmatch(_RENAMED_NVIDIA, name or "") is not None)


def parse_modules_dep(text: str, wanted) -> dict:
    """modules.dep lines (``kernel/drivers/…/x.ko.zst: dep.ko …``) → {name: path} for the
    ``wanted`` names; a later line for a name does not replace the first (modprobe's order).
    A distribution kernel lists 6,000 modules: the names are searched for, not every line
    split."""
    found = {}
    for name in wanted:
        first = None
        for spelling in {name, name.replace("_", "-")}:
            start = 0
            while True:
                at = text.find(spelling, start)
                if at < 0:
                    break
                # One look per line: later matches on it name the same module (linear in a
                # crafted line holding the name a million times).
                end = text.find("\n", at)
                start = len(text) if end < 0 else end + 1
                line_start = text.rfind("\n", 0, at) + 1
                colon = text.find(":", line_start)
                # The line's own module is before its colon; a match after it is a dependency.
                path = text[line_start : colon if colon >= 0 else len(text)].strip()
                if is_module(name, module_name(path.rsplit("/", 1)[-1])) and (first is None or line_start < first[0]):
                    first = (line_start, path)
        if first is not None:
            found[name] = first[1]
    return found


def _reference_path(text: str):
    """A module of the kernel's own build (under kernel/), to learn the kernel's vermagic."""
    at = 0 if text.startswith("kernel/") else text.find("\nkernel/") + 1
    if at <= 0 and not text.startswith("kernel/"):
        return None
    path = text[at : text.find(":", at)].strip()
    return path if module_name(path.rsplit("/", 1)[-1]) else None


def modules_for(host, release: str, names=GPU_MODULES, read=("nvidia", "amdgpu")) -> KernelModules:
    """The modules ``names`` installed for ``release``; .modinfo is read for those in ``read``."""
    base = None
    for root in MODULE_ROOTS:
        candidate = "%s/%s" % (root, release)
        if host.stat(candidate)[0].ok:
            base = candidate
            break
    if base is None:
        return KernelModules(release, None, {}, None, "no modules folder")
    dep = host.read_text(base + "/modules.dep", cap=32 << 20)
    if dep.ok and not dep.truncated:
        paths = parse_modules_dep(dep.data, names)
        reference = _reference_path(dep.data)
        index = base + "/modules.dep"
    else:
        paths, reference, index = _look_around(host, base, names), None, "the usual module folders (no modules.dep)"
    found = {}
    stale = []
    for name, relative in paths.items():
        path = relative if relative.startswith("/") else "%s/%s" % (base, relative)
        info = _with_modinfo(host, name, release, path) if name in read else ModuleInfo(name, release, path)
        # A stale index names a file that is gone: modprobe cannot load it either.
        if info.problem == "not present" or (name not in read and host.stat(path)[0].missing):
            stale.append((name, path))
            continue
        found[name] = info
    reference_info = _with_modinfo(host, "reference", release, "%s/%s" % (base, reference)) if reference and found else None
    return KernelModules(release, base, found, reference_info, index, tuple(stale))


def _with_modinfo(host, name: str, release: str, path: str) -> ModuleInfo:
    from ai_doctor.elf import modinfo, parse_modinfo

    got = host.derive(path, "modinfo", modinfo)
    if not got.ok:
        return ModuleInfo(name, release, path, {}, got.describe())
    fields = parse_modinfo(got.data)
    if got.truncated and "vermagic" not in fields:
        # Absent from the part read is not absent: what the kernel would say cannot be told.
        return ModuleInfo(name, release, path, fields, "its .modinfo was read only in part, and vermagic is not in that part", True)
    return ModuleInfo(name, release, path, fields, partial=got.truncated)


def _look_around(host, base: str, names) -> dict:
    found = {}
    folders = list(_FALLBACK_DIRS)
    kernel = host.listdir(base + "/kernel")
    # Ubuntu's prebuilt NVIDIA modules: kernel/nvidia-550srv/.
    folders += ["kernel/" + n for n in (kernel.data if kernel.ok else ()) if n.startswith("nvidia")]
    for folder in folders:
        listing = host.listdir("%s/%s" % (base, folder))
        for file_name in listing.data if listing.ok else ():
            for name in names:
                if name not in found and is_module(name, module_name(file_name)):
                    found[name] = "%s/%s" % (folder, file_name)
    return found


@fact("gpu_modules")
def gpu_modules(host, facts):
    """GPU driver modules of the kernel that runs (in an image: boots by default) and, on a
    running system, of the kernel the next boot starts when that is another one."""
    release = facts.get("release")
    if not release:
        return ()
    found = [modules_for(host, release)]
    default = facts.get("default_boot")
    if facts.get("running") and default and default.release and default.release != release:
        found.append(modules_for(host, default.release))
    return tuple(found)
