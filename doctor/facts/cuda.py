"""CUDA that programs here run, whose release the NVIDIA driver must reach: toolkits under
/usr/local, and the CUDA runtime that pip installs into a Python environment.

A toolkit says its release in version.json (11.1 on: ``{"cuda": {"version": "12.4.1"}}``) or
version.txt (``CUDA Version 10.2.89``). PyTorch, JAX, TensorFlow and the like take CUDA from pip
instead: the runtime is the wheel nvidia-cuda-runtime-cu12 (cu11 for 11.x; from 13.0 on
nvidia-cuda-runtime, which the cuda-toolkit[cudart] meta-package pulls), whose library carries
the major release only (site-packages/nvidia/cuda_runtime/lib/libcudart.so.12, 13.x:
nvidia/cu13/lib/libcudart.so.13) and whose release is in its metadata
(nvidia_cuda_runtime_cu12-12.4.127.dist-info/METADATA: ``Version: 12.4.127``). A PyTorch that
carries its CUDA inside (no runtime wheel beside it) says the release in torch/version.py
(``cuda: Optional[str] = '12.1'``).

Where Pythons keep packages, each folder listed once, never walked: the system Pythons'
site-packages and dist-packages (/usr/lib, /usr/lib64, /usr/local/lib, /usr/local/lib64:
python3 and python3.X), /opt/conda and /opt/venv, pip's user folder under HOME, and the
environments VIRTUAL_ENV and CONDA_PREFIX name where the request carries them. A
/usr/local/cuda without a version file is a toolkit assembled from wheels, or a trimmed one: its
release is read from the wheels' dist-info it keeps (in the folder, or in its dist-info folder:
dist-info/nvidia_cuda_runtime-13.0.96.dist-info beside lib/libcudart.so.13), else from where
it, or the libcudart in its lib64 or lib, leads: into a site-packages, to a
libcudart.so.X.Y.Z, or only to a libcudart.so.X copied from a wheel (the major release alone).
"""

from __future__ import annotations

import re

from ai_doctor.facts import fact
from ai_doctor.record import Record

LOCAL = "/usr/local"
# Folders whose python3* entries hold the system Pythons' packages: Fedora and RHEL put pure
# packages under lib and compiled ones (torch) under lib64; Debian's apt uses
# /usr/lib/python3/dist-packages and its pip /usr/local/lib/python3.X/dist-packages; python.org
# builds (the Docker python images) /usr/local/lib/python3.X/site-packages.
PYTHON_LIB_DIRS = ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/local/lib64")
# Environments at fixed places: conda's in containers (pytorch/pytorch images), and the usual
# virtual environment of a Dockerfile.
PREFIXES = ("/opt/conda", "/opt/venv")
# Variables naming the environment a program runs in, where the request carries them.
ENV_PREFIXES = ("VIRTUAL_ENV", "CONDA_PREFIX")
PACKAGE_FOLDERS = ("site-packages", "dist-packages")
# nvidia_cuda_runtime_cu12-12.4.127.dist-info, nvidia_cuda_runtime-13.0.96.dist-info; pip
# writes the name as the wheel has it, other installers may keep dashes or dots.
_RUNTIME_DIST = r"(?i)nvidia[-_.]cuda[-_.]runtime(?:[-_.]cu(\d+))?-([^-]+)\.dist-info$"
_TORCH_DIST = r"(?i)torch-([^-]+)\.dist-info$"
# torch/version.py: ``cuda: Optional[str] = '12.4'`` (``cuda = '10.2'`` before 1.8); None
# for CPU and ROCm builds.
_TORCH_CUDA = r"(?m)^cuda\s*(?::[^=\n]*)?=\s*['\"](\d+\.\d+(?:\.\d+)*)['\"]"
_RELEASE = r"\d+\.\d+(?:\.\d+)*"
# libcudart.so.12.4.127 (a toolkit's file: the release), libcudart.so.12 (the name a wheel
# ships, the major release only), libcudart.so.11.0 (11.x's name).
_CUDART = r"libcudart\.so\.(\d+)((?:\.\d+)*)$"
_METADATA_CAP = 1 << 16


class CudaToolkit(Record):
    """CUDA that programs here run: ``path`` (a toolkit's folder under /usr/local, or the
    site-packages folder holding a wheel), ``version`` (None: not known), ``source`` (the file
    that says it), ``kind`` (``toolkit``; ``wheel``: pip's CUDA runtime, ``package`` its
    name; ``torch``: a PyTorch build with its CUDA inside, ``package`` torch's version),
    ``major`` (the major release where only that is known), and ``via`` (the /usr/local
    folder that leads to a wheel)."""

    __slots__ = ("path", "version", "source", "kind", "package", "major", "via")
    _defaults = {"kind": "toolkit", "package": None, "major": None, "via": None}

    @property
    def where(self) -> str:
        """What it is, in words: /usr/local/cuda-12.4; pip's nvidia-cuda-runtime-cu12; the file
        that says the release (``source``) names the environment."""
        if self.kind == "wheel":
            text = "pip's " + self.package
            return "%s, from %s" % (self.via, text) if self.via else text
        if self.kind == "torch":
            return "PyTorch %s with its CUDA inside" % self.package
        return self.path


class SitePackages(Record):
    """A Python environment's package folder (site-packages, or Debian's dist-packages) and
    the names in it."""

    __slots__ = ("path", "names")


@fact("site_packages")
def site_packages(host, facts):
    """The package folders of the Pythons at fixed places (see the module's docstring), each
    once: a folder reached again through a link (/usr/lib64 → /usr/lib) is not repeated."""
    env = getattr(facts.request, "env", None) or {}
    libs = list(PYTHON_LIB_DIRS) + [prefix + "/lib" for prefix in PREFIXES]
    for name in ENV_PREFIXES:
        value = env.get(name)
        if isinstance(value, str) and value.startswith("/"):
            libs.append(value.rstrip("/") + "/lib")
    home = env.get("HOME")
    if isinstance(home, str) and home.startswith("/"):
        libs.append(home.rstrip("/") + "/.local/lib")
    found = []
    seen = set()
    for lib in dict.fromkeys(libs):
        listing = host.listdir(lib)
        for name in listing.data if listing.ok else ():
            if not _python_dir(name):
                continue
            for leaf in PACKAGE_FOLDERS:
                folder = "%s/%s/%s" % (lib, name, leaf)
                got = host.listdir(folder)
                if not got.ok:
                    continue
                real = _resolved(host, folder)
                if real not in seen:
                    seen.add(real)
                    found.append(SitePackages(folder, got.data))
    return tuple(found)


@fact("cuda_toolkits")
def cuda_toolkits(host, facts):
    """CUDA toolkits in /usr/local/cuda-X.Y (and /usr/local/cuda), from version.json (11.1+)
    or version.txt, else from where their libcudart leads; then the CUDA runtimes of pip's
    wheels (and PyTorch builds with CUDA inside) in the Python environments."""
    sites = facts.get("site_packages") or ()
    listing = host.listdir(LOCAL)
    found = {}
    unknown = {}
    for name in listing.data if listing.ok else ():
        if not (name == "cuda" or name.startswith("cuda-")):
            continue
        folder = "%s/%s" % (LOCAL, name)
        kit = _toolkit(host, folder) or _assembled(host, folder, sites)
        if kit is None:
            continue
        if kit.version is None and kit.major is None:
            # Nothing says its release: named once, by the folder the names lead to.
            real = _resolved(host, folder)
            unknown.setdefault(real, kit._replace(path=real))
            continue
        # /usr/local/cuda is usually a link to one of the others: one entry per version, named
        # by the folder itself rather than a link to it.
        key = kit.version or "%d" % kit.major
        held = found[key].via or found[key].path if key in found else None
        if held is None or (_resolved(host, folder) == folder and _resolved(host, held) != held):
            found[key] = kit
    kits = sorted(found.values(), key=lambda t: t.path) + sorted(unknown.values(), key=lambda t: t.path)
    sources = {kit.source for kit in kits}
    for site in sites:
        for kit in _wheels(host, site.path, site.names):
            if kit.source not in sources:
                sources.add(kit.source)
                kits.append(kit)
    return tuple(kits)


def _toolkit(host, folder):
    """The toolkit in ``folder`` as its version.json or version.txt says; None without either."""
    got = host.read_text(folder + "/version.json", cap=1 << 20)
    if got.ok:
        import json

        try:
            version = str(json.loads(got.data)["cuda"]["version"])
        except (ValueError, KeyError, TypeError, RecursionError):
            version = None
        if version and re.fullmatch(_RELEASE, version):
            return CudaToolkit(folder, version, folder + "/version.json")
    got = host.read_text(folder + "/version.txt", cap=65536)
    match = re.search(r"CUDA Version\s+(\d+\.\d+(?:\.\d+)?)", got.data) if got.ok else None
    if match:
        return CudaToolkit(folder, match.group(1), folder + "/version.txt")
    return None


def _assembled(host, folder, sites):
    """A /usr/local/cuda* without a version file: a link into a site-packages (the wheel's own
    folder), the wheels' dist-info kept in the folder, or a lib64 / lib whose libcudart says the
    release, leads into a site-packages, or names the major release only. A folder with nothing
    to say has version None; None when the folder is not there at all (a link left behind)."""
    real = _resolved(host, folder)
    site = _site_of(real)
    if site:
        kit = _wheel_at(host, site, real, sites, folder)
        if kit is not None:
            return kit
    listing = host.listdir(folder)
    if not listing.ok:
        return None
    # The wheels' metadata kept beside the files: in the folder (pip install --target) or in
    # its dist-info folder (what a build that moves the wheels' lib and include up leaves).
    for base, names in ((folder, listing.data), ("%s/dist-info" % folder, None)):
        if names is None:
            if "dist-info" not in listing.data:
                continue
            inner = host.listdir(base)
            names = inner.data if inner.ok else ()
        kits = [kit for kit in _wheels(host, base, names) if kit.kind == "wheel"]
        if kits:
            return max(kits, key=lambda kit: _numbers(kit.version))._replace(via=folder)
    for sub in ("lib64", "lib"):
        listing = host.listdir("%s/%s" % (folder, sub))
        names = [name for name in (listing.data if listing.ok else ()) if re.match(_CUDART, name)]
        # The file with the full release first (libcudart.so.12.4.127), then the others.
        names.sort(key=lambda name: (-len(re.match(_CUDART, name).group(2).split(".")), name))
        for name in names:
            path = "%s/%s/%s" % (folder, sub, name)
            major, rest = re.match(_CUDART, name).groups()
            if len(rest.split(".")) >= 3:  # ".4.127": major.minor.patch
                return CudaToolkit(folder, major + rest, path)
            target = _resolved(host, path)
            site = _site_of(target)
            kit = _wheel_at(host, site, target, sites, folder) if site else None
            if kit is not None:
                return kit
            if rest in ("", ".0"):
                return CudaToolkit(folder, None, path, major=int(major))
    return CudaToolkit(folder, None, None)


def _wheel_at(host, site, target, sites, via):
    """The runtime wheel in the site-packages ``site`` that ``target`` (a path inside it)
    belongs to, as reached from ``via``; None when none is there."""
    listed = next((s.names for s in sites if _resolved(host, s.path) == site), None)
    if listed is None:
        listing = host.listdir(site)
        listed = listing.data if listing.ok else ()
    kits = [kit for kit in _wheels(host, site, listed) if kit.kind == "wheel"]
    # nvidia/cu13/… is 13.x's (nvidia-cuda-runtime); nvidia/cuda_runtime/… 11.x's and 12.x's.
    inside = target[len(site) :].split("/")
    cu = re.fullmatch(r"cu(\d+)", inside[2]) if len(inside) > 2 and inside[1] == "nvidia" else None
    named = re.match(_CUDART, inside[-1])
    if named:  # libcudart.so.12: the family is in the name
        kits = [kit for kit in kits if kit.version.split(".")[0] == named.group(1)] or kits
    elif cu:
        kits = [kit for kit in kits if kit.version.split(".")[0] == cu.group(1)] or kits
    else:
        kits = [kit for kit in kits if int(kit.version.split(".")[0]) < 13] or kits
    return max(kits, key=lambda kit: _numbers(kit.version))._replace(via=via) if kits else None


def _wheels(host, site, names):
    """pip's CUDA runtimes in the package folder ``site`` (listed: ``names``); where there is
    none, a PyTorch build's own CUDA."""
    kits = []
    for name in names:
        match = _runtime_dist(name)
        if not match:
            continue
        family, version = match.groups()
        package = "nvidia-cuda-runtime" + ("-cu" + family if family else "")
        source = "%s/%s/METADATA" % (site, name)
        got = host.read_text(source, cap=_METADATA_CAP)
        said = _metadata(got.data) if got.ok else {}
        if said.get("name"):
            package = said["name"]
        if said.get("version"):
            version = said["version"]
        else:
            source = "%s/%s" % (site, name)  # the folder's name is all there is
        release = re.match(_RELEASE, version)
        if not release:
            continue
        version = release.group(0)
        major = int(version.split(".")[0])
        # nvidia-cuda-runtime-cu13 0.0.1 is a placeholder that installs nothing; a cuNN
        # package's release is of its family.
        if (family and int(family) != major) or major < 11:
            continue
        kits.append(CudaToolkit(site, version, source, "wheel", package))
    if kits:
        return kits
    for name in names:
        match = _torch_dist(name)
        if match:
            source = site + "/torch/version.py"
            got = host.read_text(source, cap=1 << 16)
            cuda = re.search(_TORCH_CUDA, got.data) if got.ok else None
            if cuda:
                kits.append(CudaToolkit(site, cuda.group(1), source, "torch", match.group(1)))
            break
    return kits


def _metadata(text: str) -> dict:
    """``Name`` and ``Version`` from a wheel's METADATA headers (RFC 822, up to the first
    blank line), lower-cased keys."""
    said = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, colon, value = line.partition(":")
        key = key.strip().lower()
        if colon and key in ("name", "version") and key not in said:
            said[key] = value.strip()
    return said


# Most names in a site-packages are neither dist: the expressions are compiled and tried only
# for names holding letters of theirs that no other letter matches, ignoring case (as ı matches
# i and ſ matches s).
def _runtime_dist(name: str):
    return re.match(_RUNTIME_DIST, name) if "cuda" in name.lower() else None


def _torch_dist(name: str):
    return re.match(_TORCH_DIST, name) if name[:5].lower() == "torch" else None


def _python_dir(name: str) -> bool:
    """python3 or python3.X, X one or two digits: a folder of a Python's packages."""
    minor = name[len("python3.") :]
    return name == "python3" or (name.startswith("python3.") and 0 < len(minor) <= 2 and minor.isdigit() and minor.isascii())


def _numbers(version: str) -> tuple:
    return tuple(int(part) for part in re.match(_RELEASE, version).group(0).split("."))


def _site_of(path: str):
    """The site-packages (or dist-packages) folder ``path`` lies in; None outside one."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part in PACKAGE_FOLDERS and index > 0:
            return "/".join(parts[: index + 1])
    return None


def _resolved(host, path: str) -> str:
    try:
        return host.resolve(path, fresh=False)
    except OSError:
        return path
