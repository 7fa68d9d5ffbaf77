"""/dev/shm: how large it may grow, and the shared memory that GPU stacks leave in it.

POSIX shared memory (shm_open(3)) is files in /dev/shm, normally a tmpfs of its own. Its size
is the tmpfs ``size=`` cap. The kernel writes ``size=NNNk`` into the superblock options of
mountinfo only when the cap differs from the default (mm/shmem.c, shmem_show_options:
``if (sbinfo->max_blocks != shmem_default_max_blocks()) seq_printf(seq, ",size=%luk", ...)``),
and the default is half of RAM (Documentation/filesystems/tmpfs.rst; tmpfs(5): "The default,
when neither size nor nr_blocks is specified, is size=50%"), which MemTotal stands for. A
``size=0`` cap means no limit ("The limit is removed if the size is 0"). Docker mounts 64 MiB
(``size=65536k``) unless told otherwise. Where /dev/shm is no mount of its own it is a folder of
the filesystem that holds it, and that filesystem's cap (a tmpfs /dev, say) is its size.

Segments: the names NCCL (``/dev/shm/nccl-XXXXXX``, the mkstemp template of its shared memory
transport and proxy buffers), PyTorch (``torch_PID_RANDOM``, the file_system sharing strategy's
handles, torch/csrc/StorageSharing.cpp) and Python's multiprocessing.shared_memory (``psm_``,
Lib/multiprocessing/shared_memory.py; vLLM's ShmRingBuffer, vllm/distributed/
device_communicators/shm_broadcast.py, creates its buffers with it) give their segments. A
crashed run leaves them behind, and their pages stay in memory (and count against the memory
limit of the cgroup that wrote them) until they are removed. /dev/shm is listed, nothing in it
is opened or stat'ed, and only the first few matching names are kept.
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact
from ai_doctor.record import Record
from ai_doctor.units import gib

SHM = "/dev/shm"
FSTAB = "/etc/fstab"
# Name prefix, and whose segments they are.
PREFIXES = (
    ("nccl-", "NCCL"),
    ("torch_", "PyTorch"),
    ("psm_", "Python shared_memory (vLLM's shm broadcast among others)"),
)
# Segments named; the rest are only counted. Sizes are not read: a snapshot keeps names, not
# sizes, and a replay must find what the run found.
NAME_CAP = 32
_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


class Segment(Record):
    """A shared memory file a GPU stack leaves: its name and whose it is."""

    __slots__ = ("name", "owner")


class FstabLine(Record):
    """An /etc/fstab line that mounts /dev/shm: its number and text."""

    __slots__ = ("line", "text")


class Shm(Record):
    """What /dev/shm is here.

    ``mount``: the mount that holds /dev/shm (its own, or the filesystem it is a folder of: see
    ``own``); ``size``: its cap in bytes, None when it has none (``size=0``, or a filesystem that
    is not a tmpfs); ``size_from``: where the size comes from, in words. ``segments``: the
    segments of known GPU stacks, at most :data:`NAME_CAP` of them; ``matched``: how many there
    are; ``names``: how many names /dev/shm holds (None: not listed). ``fstab``:
    the /etc/fstab line that mounts /dev/shm (None: none, or no fstab). ``notes``: what could not
    be read.
    """

    __slots__ = ("mount", "own", "size", "size_from", "segments", "matched", "names", "fstab", "notes", "owners")
    _defaults = {"segments": (), "matched": 0, "names": None, "fstab": None, "notes": (), "owners": ()}


def parse_tmpfs_size(value: str, mem_total):
    """A tmpfs ``size=`` value in bytes (memparse suffixes k/m/g…, or % of RAM); 0 means no
    limit; None for a value not understood or a % without MemTotal."""
    value = value.strip().lower()
    if not value:
        return None
    if value.endswith("%"):
        number = value[:-1]
        if not number.isdigit() or not mem_total:
            return None
        return mem_total * int(number) // 100
    scale = _SUFFIXES.get(value[-1], 1)
    number = value[:-1] if value[-1] in _SUFFIXES else value
    if not number.isdigit():
        return None
    return int(number) * scale


def _option(options, name: str):
    prefix = name + "="
    for option in options:
        if option.startswith(prefix):
            return option[len(prefix) :]
    return None


def _fstab_line(host):
    """The last uncommented /etc/fstab line whose mount point is /dev/shm, or None."""
    got = host.read_text(FSTAB, cap=65536)
    if not got.ok:
        return None
    found = None
    for number, line in enumerate(got.data.splitlines(), 1):
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and fields[1].rstrip("/") == SHM:
            found = FstabLine(number, line.strip())
    return found


@fact("shm")
def shm(host, facts):
    if not facts.get("running"):
        return Unavailable("an image, not a running system: /dev/shm is sized where it runs (the container's --shm-size, the host's mount)")
    mounts = facts.get("mounts")
    if not mounts:
        return Unavailable("cannot tell how /dev/shm is mounted: " + mounts.reason)
    mem = facts.get("meminfo")
    mem_total = mem.get("MemTotal") if mem else None
    own = mounts.at(SHM)
    mount = own or mounts.covering(SHM)
    if mount is None:
        return Unavailable("no mount in %s holds %s" % (mounts.source, SHM))
    notes = []
    size, size_from = None, None
    if mount.fstype == "tmpfs":
        option = _option(mount.super_options, "size")
        if option is None:
            if mem_total:
                size = mem_total // 2
                size_from = "no size= option: the tmpfs default, half of RAM (MemTotal %s)" % gib(mem_total)
            else:
                size_from = "no size= option: the tmpfs default, half of RAM (MemTotal unreadable)"
                notes.append("MemTotal could not be read: the default size is not known")
        else:
            size = parse_tmpfs_size(option, mem_total)
            if size is None:
                size_from = "size=%s, not understood" % option
                notes.append("size=%s not understood" % option)
            elif size == 0:
                size, size_from = None, "size=0: no limit"
            else:
                size_from = "size=%s" % option
    else:
        size_from = "a %s filesystem, not a tmpfs: as large as that filesystem" % mount.fstype
    listed = host.listdir(SHM)
    segments, matched, names, owners = [], 0, None, []
    if listed.ok:
        names = len(listed.data)
        for name in listed.data:
            owner = next((who for prefix, who in PREFIXES if name.startswith(prefix)), None)
            if owner is None:
                continue
            matched += 1
            if owner not in owners:
                owners.append(owner)
            if len(segments) < NAME_CAP:
                segments.append(Segment(name, owner))
    elif listed.missing and own is None:
        # No mount and no folder: nothing to judge the size of (a tree that did not record it).
        return Unavailable(
            "%s does not exist here: no mount of its own in %s and no folder under %s" % (SHM, mounts.source, mount.mountpoint)
        )
    elif not listed.missing:
        notes.append("%s could not be listed (%s)" % (SHM, listed.describe()))
    container = facts.get("container")
    fstab = None if container and container.detected else _fstab_line(host)
    return Shm(mount, own is not None, size, size_from, tuple(segments), matched, names, fstab, tuple(notes), tuple(owners))
