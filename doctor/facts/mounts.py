"""Mounts as this process sees them: /proc/self/mountinfo (proc(5)), else /proc/mounts.

mountinfo's third field is the filesystem's device number, MAJOR:MINOR, "the value of st_dev
for files on this filesystem" (proc_pid_mountinfo(5); Documentation/filesystems/proc.rst 3.5):
the name of a network or FUSE filesystem's own backing device under /sys/class/bdi
(Documentation/ABI/testing/sysfs-class-bdi, "value of st_dev on non-block filesystems which
provide their own BDI, such as NFS and FUSE"). /proc/mounts has no such field.
"""

from __future__ import annotations

import re

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.record import Record

MOUNTINFO = "/proc/self/mountinfo"
MOUNTS = "/proc/mounts"


class Mount(Record):
    """One mount: the mounted subtree (``root``), where, what and with which options;
    ``device`` is the filesystem's st_dev as ``MAJOR:MINOR`` (None from /proc/mounts)."""

    __slots__ = ("root", "mountpoint", "fstype", "source", "options", "super_options", "device")
    _defaults = {"device": None}

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes.
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _is_device(field: str) -> bool:
    major, colon, minor = field.partition(":")
    return bool(colon) and major.isdigit() and minor.isdigit()


def parse_mountinfo(text: str):
    mounts = []
    notes = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            dash = fields.index("-", 6)
            device, root, mountpoint, options = fields[2], fields[3], fields[4], fields[5]
            fstype, source = fields[dash + 1], fields[dash + 2]
            super_options = fields[dash + 3] if len(fields) > dash + 3 else ""
        except (ValueError, IndexError):
            notes.append("line %d not understood: %r" % (number, line[:80]))
            continue
        mounts.append(
            Mount(
                _unescape(root),
                _unescape(mountpoint),
                fstype,
                _unescape(source),
                frozenset(options.split(",")),
                frozenset(super_options.split(",")),
                device if _is_device(device) else None,
            )
        )
    return mounts, notes


def parse_mounts(text: str):
    """/proc/mounts (fstab format): no mount roots, so ``root`` is always ``/``."""
    mounts = []
    notes = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4:
            notes.append("line %d not understood: %r" % (number, line[:80]))
            continue
        options = frozenset(fields[3].split(","))
        mounts.append(Mount("/", _unescape(fields[1]), fields[2], _unescape(fields[0]), options, options))
    return mounts, notes


class Mounts(Record):
    """The mount table, in kernel order (later mounts stack over earlier ones)."""

    __slots__ = ("mounts", "source", "notes")

    def at(self, mountpoint: str):
        """The mount visible at exactly ``mountpoint`` (the last one stacked there), or None."""
        found = None
        for mount in self.mounts:
            if mount.mountpoint == mountpoint:
                found = mount
        return found

    def covering(self, path: str):
        """The mount that holds ``path``: the longest mount point that is a prefix of it."""
        best = None
        for mount in self.mounts:
            point = mount.mountpoint.rstrip("/") + "/"
            if (path + "/").startswith(point) and (best is None or len(mount.mountpoint) >= len(best.mountpoint)):
                best = mount
        return best


@fact("mounts")
def mounts(host, facts):
    got = host.read_text(MOUNTINFO)
    if got.ok:
        parsed, notes = parse_mountinfo(got.data)
        return Mounts(tuple(parsed), MOUNTINFO, tuple(notes))
    fallback = host.read_text(MOUNTS)
    if fallback.ok:
        parsed, notes = parse_mounts(fallback.data)
        return Mounts(tuple(parsed), MOUNTS, tuple(notes))
    return unreadable(host, got, "cannot read")


# Filesystems whose reads cross a network or a VM boundary (fstype as mountinfo writes it).
NETWORK_FSTYPES = {
    "nfs": "NFS",
    "nfs4": "NFS",
    "cifs": "SMB/CIFS",
    "smb3": "SMB/CIFS",
    "smbfs": "SMB/CIFS",
    "lustre": "Lustre",
    "ceph": "CephFS",
    "gpfs": "IBM Storage Scale (GPFS)",
    "wekafs": "WEKA",
    "beegfs": "BeeGFS",
    "glusterfs": "GlusterFS",
    "afs": "AFS",
    "9p": "9p (a VM's or WSL's shared folder)",
    "virtiofs": "virtiofs (a VM's shared folder)",
}
# FUSE filesystems that read local storage (or serve /proc files): not network storage. A FUSE
# type not named here is taken as remote (sshfs, s3fs, rclone, gcsfuse, blobfuse2, juicefs …).
LOCAL_FUSE = frozenset(
    (
        "lxcfs",
        "fuse-overlayfs",
        "overlayfs",
        "snapfuse",
        "squashfuse",
        "squashfuse_ll",
        "bindfs",
        "mergerfs",
        "gvfsd-fuse",
        "portal",
        "xdg-document-portal",
        "appimage",
        # Encrypted folders and archives on local disks.
        "gocryptfs",
        "encfs",
        "cryfs",
        "securefs",
        "dwarfs",
        "archivemount",
        "fuse-zip",
        "ntfs-3g",
    )
)
OLLAMA_SERVICE_MODELS = "/usr/share/ollama/.ollama/models"
NFSRAHEAD = ("/usr/libexec/nfsrahead", "/usr/sbin/nfsrahead", "/sbin/nfsrahead")


def network_kind(mount):
    """What remote storage ``mount`` is, in words, or None for a local filesystem."""
    fstype = mount.fstype
    if fstype in NETWORK_FSTYPES:
        return NETWORK_FSTYPES[fstype]
    if fstype.startswith("fuse."):
        sub = fstype[len("fuse.") :]
        return None if sub in LOCAL_FUSE else "FUSE (%s)" % sub
    if fstype == "fuse":
        return "FUSE (%s)" % mount.source
    return None


class ModelPlace(Record):
    """A folder or file models load from: ``path`` as given, ``why`` it is looked at (``--model``,
    ``the Hugging Face cache ($HF_HOME)``…), ``hf_cache`` whether huggingface_hub locks files
    there, ``resolved`` with every link followed (None: could not be, ``note`` says why),
    ``mount`` the mount that holds it, ``read_ahead_kb`` the backing device's read-ahead window
    read at ``read_ahead_path`` (None: not read)."""

    __slots__ = ("path", "why", "hf_cache", "resolved", "note", "mount", "read_ahead_kb", "read_ahead_path")
    _defaults = {"note": None, "read_ahead_kb": None, "read_ahead_path": None}


class ModelStorage(Record):
    """Where models load from here: each place that exists (``places``), the ones looked for
    but absent (``absent``: (path, why)), whether ``--model`` named the path, and whether
    nfs-utils' nfsrahead(5) is installed (looked for only when a place is on NFS)."""

    __slots__ = ("places", "absent", "from_request", "nfsrahead")
    _defaults = {"nfsrahead": False}


def _candidates(request):
    """(path, why, hf_cache) to look at: ``--model PATH`` alone when given, else the caches."""
    if request is not None and getattr(request, "model_path", None):
        # A path inside a Hugging Face cache (hub/models--ORG--NAME) is locked as one.
        return [(request.model_path, "--model", "/models--" in request.model_path)]
    env = dict(getattr(request, "env", None) or {}) if request is not None else {}
    found = []
    home = env.get("HOME")
    # huggingface_hub: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
    if env.get("HF_HUB_CACHE"):
        found.append((env["HF_HUB_CACHE"], "the Hugging Face cache ($HF_HUB_CACHE)", True))
    elif env.get("HF_HOME"):
        found.append((env["HF_HOME"].rstrip("/") + "/hub", "the Hugging Face cache ($HF_HOME/hub)", True))
    elif home:
        found.append((home.rstrip("/") + "/.cache/huggingface/hub", "the Hugging Face cache (~/.cache/huggingface/hub)", True))
    if env.get("OLLAMA_MODELS"):
        found.append((env["OLLAMA_MODELS"], "Ollama's models ($OLLAMA_MODELS)", False))
    else:
        if home:
            found.append((home.rstrip("/") + "/.ollama/models", "Ollama's models (~/.ollama/models)", False))
        # The Linux install script runs the service as user ollama, home /usr/share/ollama.
        found.append((OLLAMA_SERVICE_MODELS, "Ollama's models (the Linux service's default)", False))
    return found


@fact("model_storage")
def model_storage(host, facts):
    if not facts.get("running"):
        return Unavailable("an image, not a running system: the storage models load from is mounted where it runs")
    mounts = facts.get("mounts")
    if not mounts:
        return Unavailable("cannot tell where models are stored: " + mounts.reason)
    request = facts.request
    places, absent, seen = [], [], set()
    for path, why, hf_cache in _candidates(request):
        path = "/" + path.strip("/") if path.startswith("/") else path
        if not path.startswith("/") or path in seen:
            continue
        seen.add(path)
        if not host.stat(path)[0].ok:
            absent.append((path, why))
            continue
        note = None
        try:
            resolved = host.resolve(path)
        except OSError as exc:
            resolved, note = None, "its links could not be followed (%s): judged where it is named" % (exc.strerror or exc)
        mount = mounts.covering(resolved or path)
        if mount is None:
            continue
        read_ahead, read_ahead_path = None, None
        if mount.device and network_kind(mount):
            read_ahead_path = "/sys/class/bdi/%s/read_ahead_kb" % mount.device
            got = host.read_text(read_ahead_path, cap=64)
            if got.ok and got.data.strip().isdigit():
                read_ahead = int(got.data.strip())
        places.append(ModelPlace(path, why, hf_cache, resolved, note, mount, read_ahead, read_ahead_path))
    nfsrahead = any(p.mount.fstype in ("nfs", "nfs4") for p in places) and any(host.exists(path) for path in NFSRAHEAD)
    return ModelStorage(tuple(places), tuple(absent), bool(request is not None and getattr(request, "model_path", None)), nfsrahead)
