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
                if member.issym() and member.linkname.startswith("/"):
                    # Inside a tree "/x" means the tree's /x: say so relative to the link.
                    here = os.path.dirname("/" + member.name)
                    member.linkname = os.path.relpath(member.linkname, here)
                if member.isreg():
                    with open(path, "rb") as handle:
                        out.addfile(member, handle)
                else:
                    out.addfile(member)
                count += 1
    return count


def unpack(archive: str, destination: str) -> int:
    """Check every member of ``archive``, then extract it into ``destination`` (an empty
    directory); returns the member count. Raises ArchiveError naming what was refused."""
    try:
        size = os.stat(archive).st_size
    except OSError as exc:
        raise ArchiveError("%s: %s" % (archive, exc.strerror or exc)) from None
    if size > MAX_ARCHIVE:
        raise ArchiveError("%s: %d MiB, more than the %d MiB a snapshot can be" % (archive, size >> 20, MAX_ARCHIVE >> 20))
    try:
        with tarfile.open(archive, "r:*") as source:
            members = _checked(source)
            if hasattr(tarfile, "data_filter"):
                source.extractall(destination, members=members, filter="data")
            else:
                _extract(source, members, destination)
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        # tarfile.FilterError is a TarError: the data filter refused something the checks let by.
        raise ArchiveError("%s: not a readable snapshot archive (%s)" % (archive, exc)) from None
    return len(members)


def _checked(source) -> list:
    members = []
    total = 0
    links = set()
    for member in source:
        if len(members) >= MAX_MEMBERS:
            raise ArchiveError("more than %d members: not a snapshot" % MAX_MEMBERS)
        name = member.name
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if name.startswith("/") or not parts:
            raise ArchiveError("member %r: an absolute or empty name" % name)
        if ".." in parts:
            raise ArchiveError("member %r: climbs out of the tree with '..'" % name)
        path = "/".join(parts)
        if any("/".join(parts[:depth]) in links for depth in range(1, len(parts))):
            raise ArchiveError("member %r: lies below a symbolic link, and would be written through it" % name)
        if member.islnk():
            raise ArchiveError("member %r: a hard link (snapshots hold none)" % name)
        if member.issym():
            target = member.linkname
            if target.startswith("/") or _climbs(parts[:-1], target):
                raise ArchiveError("member %r: a symbolic link leaving the tree (-> %s)" % (name, target))
            links.add(path)
        elif not (member.isreg() or member.isdir()):
            raise ArchiveError("member %r: a device, FIFO or other special file" % name)
        total += member.size
        if total > MAX_UNPACKED:
            raise ArchiveError("more than %d MiB unpacked: not a snapshot" % (MAX_UNPACKED >> 20))
        members.append(member)
    return members


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
    created exclusively and never through a link, modes limited to the owner's plus read."""
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
            handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(handle, "wb") as out, source.extractfile(member) as data:
                while True:
                    chunk = data.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
