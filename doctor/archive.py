"""Snapshot archives (``host.tar.gz``): packing a snapshot tree, and unpacking one safely.

An archive comes from someone else's machine, so unpacking trusts nothing in it. Before any
byte is written, every member is checked: a name that is absolute or climbs with ``..``, a
hard link, a device or FIFO, a symbolic link whose target leaves the tree, a member below a
symbolic link (which would write through it), too many members, or more bytes than the limit
(the sizes in the headers are what extraction writes, so a compression bomb is refused before
it inflates). Then tarfile's ``data`` filter extracts, where this Python has it (3.12, and the
security releases 3.8.17, 3.9.17, 3.10.12, 3.11.4 on); elsewhere the same checks guard a
member-by-member extraction that never follows a link.

Packing writes absolute link targets as relative ones: inside a tree they mean the same (the
Host re-roots them), and the data filter accepts them.
"""

from __future__ import annotations

import os
import stat
import tarfile

# A snapshot is a few hundred KiB; these leave room for big hosts and refuse bombs.
MAX_ARCHIVE = 256 << 20
MAX_UNPACKED = 1 << 30
MAX_MEMBERS = 200_000
# tarfile reads a PAX or GNU long-name header in one read; member data it copies in small
# chunks. A single read larger than this is a header built to exhaust memory.
MAX_SINGLE_READ = 16 << 20
MAX_NAME = 4096
MAX_DEPTH = 256
SUFFIXES = (".tar.gz", ".tgz")


class ArchiveError(Exception):
    """An archive that will not be unpacked: the message says why, naming the member."""


def is_archive(path: str) -> bool:
    return path.endswith(SUFFIXES)


def pack(tree: str, archive: str) -> int:
    """Write the snapshot ``tree`` as a gzip'd tar at ``archive``; returns the member count."""
    count = 0
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as out:
        for folder, dirs, files in os.walk(tree):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(folder, name)
                member = out.gettarinfo(path, arcname=os.path.relpath(path, tree))
                member.uid = member.gid = 0
                member.uname = member.gname = ""
                if member.issym():
                    # Inside a tree "/x" means the tree's /x, and ".." stops at its root (as the
                    # Host resolves them): written relative and inside, so unpacking takes them.
                    here = os.path.dirname("/" + member.name)
                    member.linkname = os.path.relpath(_inside(here, member.linkname), here)
                if member.isreg():
                    with open(path, "rb") as handle:
                        out.addfile(member, handle)
                else:
                    out.addfile(member)
                count += 1
    return count


class _Bounded:
    """The decompressed stream, refusing a single read (a header) or a total beyond the limits,
    so a crafted archive is stopped before it inflates in memory or on disk."""

    def __init__(self, stream):
        self.stream = stream
        self.total = 0

    def read(self, size=-1):
        if size is None or size < 0 or size > MAX_SINGLE_READ:
            raise ArchiveError("a header or read of more than %d MiB: not a snapshot" % (MAX_SINGLE_READ >> 20))
        data = self.stream.read(size)
        self.total += len(data)
        if self.total > MAX_UNPACKED + (64 << 20):
            raise ArchiveError("more than %d MiB unpacked: not a snapshot" % (MAX_UNPACKED >> 20))
        return data

    def seek(self, offset, whence=0):
        return self.stream.seek(offset, whence)

    def tell(self):
        return self.stream.tell()


def _open_stream(raw):
    import bz2
    import gzip
    import lzma

    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ"):
        return lzma.LZMAFile(raw)
    return raw


def unpack(archive: str, destination: str) -> int:
    """Check every member of ``archive``, then extract it into ``destination`` (an empty
    directory); returns the member count. Raises ArchiveError naming what was refused."""
    try:
        info = os.stat(archive)
    except OSError as exc:
        raise ArchiveError("%s: %s" % (archive, exc.strerror or exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise ArchiveError("%s: not a regular file" % archive)
    if info.st_size > MAX_ARCHIVE:
        raise ArchiveError("%s: %d MiB, more than the %d MiB a snapshot can be" % (archive, info.st_size >> 20, MAX_ARCHIVE >> 20))
    try:
        with open(archive, "rb") as raw, _open_stream(raw) as stream:
            with tarfile.open(fileobj=_Bounded(stream), mode="r:") as source:
                members = _checked(source)
                if hasattr(tarfile, "data_filter"):
                    source.extractall(destination, members=members, filter="data")
                else:
                    _extract(source, members, destination)
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, RecursionError, MemoryError, LookupError) as exc:
        # tarfile.FilterError is a TarError: the data filter refused something the checks let by.
        detail = " ".join(str(exc).replace(destination, "").split())
        raise ArchiveError("%s: not a readable snapshot archive (%s)" % (archive, detail)) from None
    return len(members)


def _checked(source) -> list:
    members = []
    total = 0
    links = set()
    seen = {}
    for member in source:
        if len(members) >= MAX_MEMBERS:
            raise ArchiveError("more than %d members: not a snapshot" % MAX_MEMBERS)
        name = member.name
        if len(name) > MAX_NAME or name.count("/") > MAX_DEPTH or "\x00" in name:
            raise ArchiveError("member %r: a name longer or deeper than any file system path" % name[:80])
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if name.startswith("/") or not parts:
            raise ArchiveError("member %r: an absolute or empty name" % name)
        if ".." in parts:
            raise ArchiveError("member %r: climbs out of the tree with '..'" % name)
        path = "/".join(parts)
        prefix = ""
        for part in parts[:-1]:
            prefix = prefix + "/" + part if prefix else part
            if prefix in links:
                raise ArchiveError("member %r: lies below a symbolic link, and would be written through it" % name)
        # One name, one entry: a second (a file over a link, a link over a file) would be
        # written through the first or depend on the Python's extraction order.
        if path in seen and not (member.isdir() and seen[path]):
            raise ArchiveError("member %r: the same name twice" % name)
        seen[path] = member.isdir()
        if member.islnk():
            raise ArchiveError("member %r: a hard link (snapshots hold none)" % name)
        if member.issym():
            target = member.linkname
            if target.startswith("/") or _climbs(parts[:-1], target):
                raise ArchiveError("member %r: a symbolic link leaving the tree (-> %r)" % (name, target))
            links.add(path)
        elif not (member.isreg() or member.isdir()):
            raise ArchiveError("member %r: a device, FIFO or other special file" % name)
        total += member.size
        if total > MAX_UNPACKED:
            raise ArchiveError("more than %d MiB unpacked: not a snapshot" % (MAX_UNPACKED >> 20))
        members.append(member)
    return members


def _inside(folder: str, target: str) -> str:
    """Where ``target`` of a link in ``folder`` leads inside a tree: absolute targets restart
    at its root and ``..`` stops there."""
    parts = [] if target.startswith("/") else [p for p in folder.split("/") if p]
    for part in target.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def _climbs(folder_parts, target: str) -> bool:
    """Whether a relative link target, followed from ``folder_parts``, goes above the root."""
    depth = len(folder_parts)
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _extract(source, members, destination: str) -> None:
    """Extraction without tarfile's filter (older Pythons): members already checked, files
    created exclusively and never through a link, with the filter's modes."""
    root = os.path.realpath(destination)
    for member in members:
        target = os.path.join(root, *[p for p in member.name.split("/") if p not in ("", ".")])
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        if stat.S_ISLNK(os.lstat(parent).st_mode) or not os.path.realpath(parent).startswith(root):
            raise ArchiveError("member %r: its folder is not inside the tree" % member.name)
        if member.isdir():
            if not os.path.isdir(target):
                os.mkdir(target, 0o755)
        elif member.issym():
            os.symlink(member.linkname, target)
        else:
            # As the data filter does: the member's permission bits, owner read and write kept.
            mode = (member.mode & 0o755) | 0o600
            handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(handle, "wb") as out, source.extractfile(member) as data:
                while True:
                    chunk = data.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
