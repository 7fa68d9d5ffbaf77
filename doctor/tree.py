"""What a Host reads a tree through: this machine's file system, or a snapshot archive's members
held in memory.

Both answer the few questions a Host asks about a path: ``lstat``, ``stat``, ``readlink``,
``listdir``, ``read`` (a regular file's first bytes) and ``open`` (a regular file as a stream).
Errors are OSError with the errno the kernel would give (ENOENT, ENOTDIR, EINVAL for a
``readlink`` of what is not a link, ELOOP), and :class:`NotRegular` for a device, FIFO, socket or
folder where a file was asked for, so the Host turns both into one set of outcomes.

:class:`Members` is the archive as unpacking it would have left it on disk, so a replay from
memory reads what a replay of the unpacked tree reads: the folders its members' paths imply,
tarfile's ``data`` filter's modes (see ``ai_doctor.archive``), this user as every file's owner.
"""

from __future__ import annotations

import errno
import os
import stat

# Linux gives up after 40 links in one lookup (MAXSYMLINKS); so do the re-rooted resolvers.
MAX_LINKS = 40


class NotRegular(Exception):
    """A device, FIFO, socket or folder where a file was expected: never opened."""


def read_at_most(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from ``fd``, read in chunks (a file may be larger than it says).

    The first chunk is small and each next one twice the last: os.read allocates the whole
    chunk before the kernel fills it, and a MiB (an mmap and munmap of its own) for the few
    bytes of a /proc or /sys file doubled the cost of every read of a check."""
    chunks, left, chunk_size = [], size, 16 << 10
    while left > 0:
        chunk = os.read(fd, min(left, chunk_size))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
        chunk_size = min(chunk_size * 2, 1 << 20)
    return b"".join(chunks)


def open_regular(real: str, nofollow: bool) -> int:
    """Open a regular file for reading. Anything else is refused before it is opened: opening
    a device node planted in a tree (``dev/watchdog``) can act on this machine's hardware."""
    info = os.lstat(real) if nofollow else os.stat(real)
    if not stat.S_ISREG(info.st_mode):
        if nofollow and stat.S_ISLNK(info.st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        raise NotRegular()
    # O_NONBLOCK: should a FIFO take the file's place after the check, the open must not hang.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_NOFOLLOW if nofollow else 0)
    fd = os.open(real, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegular()
    return fd


class Disk:
    """This machine's file system; paths are this machine's."""

    lstat = staticmethod(os.lstat)
    stat = staticmethod(os.stat)
    readlink = staticmethod(os.readlink)
    listdir = staticmethod(os.listdir)

    @staticmethod
    def read(real: str, size: int, nofollow: bool) -> bytes:
        fd = open_regular(real, nofollow)
        try:
            return read_at_most(fd, size)
        finally:
            os.close(fd)

    @staticmethod
    def open(real: str, nofollow: bool):
        """(binary stream, stat of it): the stat keys what the derived-read cache keeps."""
        fd = open_regular(real, nofollow)
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb"), info


DISK = Disk()


class Folder(Disk):
    """A tree in a folder of this machine (a snapshot archive too large to hold in memory,
    unpacked): paths are the tree's own, below ``path``. A Host resolves every link on the way
    before it asks, as it does for a root on disk."""

    def __init__(self, path: str):
        self.path = path

    def lstat(self, real: str):
        return os.lstat(self.path + real)

    def stat(self, real: str):
        return os.stat(self.path + real)

    def readlink(self, real: str) -> str:
        return os.readlink(self.path + real)

    def listdir(self, real: str) -> list:
        return os.listdir(self.path + real)

    def read(self, real: str, size: int, nofollow: bool) -> bytes:
        return Disk.read(self.path + real, size, nofollow)

    def open(self, real: str, nofollow: bool):
        """(binary stream, None): the folder goes at the end of the run; nothing read from it
        is kept for the next."""
        stream, _info = Disk.open(self.path + real, nofollow)
        return stream, None


def _error(code: int) -> OSError:
    # OSError picks the subclass for the code (FileNotFoundError for ENOENT), as the kernel's would.
    return OSError(code, os.strerror(code))


class Entry:
    """One name in a tree held in memory, with the parts of stat(2) a Host uses: a folder holds
    ``names``, a file ``data``, a symbolic link its ``target``."""

    __slots__ = ("st_mode", "st_size", "st_mtime", "data", "target", "names")
    st_rdev = 0

    # Whoever unpacks an archive owns what it writes (the data filter drops the archive's owners).
    @property
    def st_uid(self) -> int:
        return os.geteuid()

    @property
    def st_gid(self) -> int:
        return os.getegid()

    def __init__(self, mode: int, mtime, data=None, target=None):
        self.st_mode = mode
        self.st_mtime = mtime
        self.data = data
        self.target = target
        self.names = [] if stat.S_ISDIR(mode) else None
        if data is not None:
            self.st_size = len(data)
        elif target is not None:
            self.st_size = len(os.fsencode(target))
        else:
            self.st_size = 4096  # a folder's on ext4 (tmpfs counts its names); no check reads it


class Members:
    """A tree held in memory: absolute, normal paths (``/etc/hostname``) to :class:`Entry`.

    Lookups walk the way the kernel does (path_resolution(7)): every folder on the way followed
    if it is a link, the last part only for ``stat``, ``..`` after the link it follows, at most
    40 links in one lookup; an absolute target restarts at the tree's root and ``..`` stops there,
    as a chroot's would, so nothing leads out of it.
    """

    def __init__(self, entries: dict):
        self.entries = entries

    def _lookup(self, real: str, follow: bool) -> Entry:
        entries = self.entries
        entry = entries.get(real)
        if entry is not None:
            if entry.target is None or not follow:
                return entry
        else:
            # Most lookups are of a name a folder does not hold (a Host resolves the way first).
            folder, _, name = real.rpartition("/")
            above = entries.get(folder or "/")
            if above is not None and above.names is not None and name not in ("", ".", ".."):
                raise _error(errno.ENOENT)
        return self._walk(real, follow)

    def _walk(self, real: str, follow: bool) -> Entry:
        entries = self.entries
        pending = [part for part in real.split("/") if part][::-1]
        done = []
        followed = 0
        while pending:
            here = "/" + "/".join(done)
            if entries[here].names is None:
                raise _error(errno.ENOTDIR)
            name = pending.pop()
            if name == ".":
                continue
            if name == "..":
                if done:
                    done.pop()
                continue
            entry = entries.get(here.rstrip("/") + "/" + name)
            if entry is None:
                raise _error(errno.ENOENT)
            if entry.target is not None and (pending or follow):
                followed += 1
                if followed > MAX_LINKS:
                    raise _error(errno.ELOOP)
                if entry.target.startswith("/"):
                    done = []
                pending.extend(part for part in reversed(entry.target.split("/")) if part)
                continue
            done.append(name)
        return entries["/" + "/".join(done)]

    def lstat(self, real: str) -> Entry:
        return self._lookup(real, False)

    def stat(self, real: str) -> Entry:
        return self._lookup(real, True)

    def readlink(self, real: str) -> str:
        entry = self._lookup(real, False)
        if entry.target is None:
            raise _error(errno.EINVAL)
        return entry.target

    def listdir(self, real: str) -> list:
        entry = self._lookup(real, True)
        if entry.names is None:
            raise _error(errno.ENOTDIR)
        return list(entry.names)

    def _regular(self, real: str, nofollow: bool) -> Entry:
        entry = self._lookup(real, not nofollow)
        if entry.data is None:
            if entry.target is not None:
                raise _error(errno.ELOOP)
            raise NotRegular()
        return entry

    def read(self, real: str, size: int, nofollow: bool) -> bytes:
        return self._regular(real, nofollow).data[:size]

    def open(self, real: str, nofollow: bool):
        """(binary stream, None): nothing read from memory is worth the derived-read cache."""
        import io

        return io.BytesIO(self._regular(real, nofollow).data), None

    def place(self, path: str, entry: Entry, folder_mode: int, mtime) -> None:
        """Put ``entry`` at normal ``path``, making the folders above it that are not there yet
        (``folder_mode``, ``mtime``), as unpacking does; a folder already there stays."""
        entries = self.entries
        if path in entries:
            if entries[path].names is None or entry.names is None:
                raise ValueError("%r twice" % path)
            return
        made = []
        parent = path
        while True:
            parent = parent.rpartition("/")[0] or "/"
            above = entries.get(parent)
            if above is not None:
                break
            made.append(parent)
        if above.names is None:
            raise ValueError("%r lies below a file or link" % path)
        made.reverse()
        for folder in made + [path]:
            above.names.append(folder.rpartition("/")[2])
            above = entries[folder] = entry if folder == path else Entry(folder_mode, mtime)


def umask() -> int:
    """This process's umask, which can only be read by setting it (and back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
