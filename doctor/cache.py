"""What is kept between runs in the user's cache folder (``$XDG_CACHE_HOME/aidoctor`` or
``~/.cache/aidoctor``), private to the user; any failure to read or write there only means the
work is done again. ``AIDOCTOR_NO_CACHE=1`` turns it off.

- ``derived/``: what was found inside large files (a compressed module's .modinfo, a kernel
  image's config): decompressing a 100 MB nvidia.ko.xz takes seconds, and the answer only
  changes when the file does. An entry is keyed by the kind of extraction and the file's
  device, inode, size and change times, so a replaced or rewritten file is read again.
- ``templates/``: compiled HTML templates (reports.html names each by a digest of what its code
  depends on). An entry is code this process will run, so it is taken only from a regular file
  that this user owns and nobody else can write, and only whole: its own name and its
  payload's digest are checked first.

Both folders are used only where they are this user's own: every folder above the cache
folder belongs to this user or root and nobody else can rename what it holds, the cache folder
belongs to this user, and ``aidoctor`` and the folder below it are real folders (never a link)
that this user owns and nobody else can write; everything in them is reached through the
folder opened so.
A root run with another user's HOME, or a link planted where a folder should be, means no
cache: nothing is read, written or deleted anywhere else.

Neither grows without end: an entry not used for :data:`UNUSED_FOR` is deleted when the next
one is stored in its folder, and a derived entry is deleted as soon as one for a newer version
of the same file (the same device and inode: a folder, a file rewritten in place) takes its
place. A use refreshes an entry's time at most once a day, so using one costs no write.
"""

from __future__ import annotations

import os
import stat
import time

DAY = 86400
# Long enough that a host checked monthly keeps its entries; an entry gone is only work again.
UNUSED_FOR = 30 * DAY
# A derived entry is a derivation's text (host.DERIVED_CAP at most) and its mark: a larger file
# is not one, and is never read whole.
_MAX_TEXT = (64 << 20) + 4096
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_ENTRY_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def enabled() -> bool:
    return not os.environ.get("AIDOCTOR_NO_CACHE")


def _base() -> str:
    # A relative XDG_CACHE_HOME is to be ignored (XDG Base Directory specification).
    named = os.environ.get("XDG_CACHE_HOME", "")
    return named if named.startswith("/") else os.path.join(os.path.expanduser("~"), ".cache")


# Each folder as this process opened it: name → (its path, its descriptor, or None where the
# cache is not this user's alone).
_opened = {}


def _folder(name: str, create: bool):
    """A descriptor of the cache's folder ``name`` (``derived``, ``templates``) when it is this
    user's own (see the module docstring), made if ``create``; else None."""
    if not enabled():
        return None
    base = _base()
    path = os.path.join(base, "aidoctor", name)
    known = _opened.get(name)
    if known is not None and known[0] == path:
        return known[1]
    euid = os.geteuid()
    try:
        if not _only_ours_above(base, euid):
            _remember(name, path, None)
            return None
        # Made only in a folder of this user's: a root run with a user's HOME must not leave
        # a ~/.cache of root's there.
        if create and not os.path.isdir(base) and os.stat(os.path.dirname(base.rstrip("/")) or "/").st_uid == euid:
            os.mkdir(base, 0o700)
        # The cache folder may be a link (a home on another disk); it must be this user's.
        fd = os.open(base, _FOLDER_FLAGS)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != euid:
            return _refused(fd, name, path)
        for part in ("aidoctor", name):
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            below = os.open(part, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = below
            info = os.fstat(fd)
            if info.st_uid != euid or info.st_mode & 0o022:
                return _refused(fd, name, path)
    except FileNotFoundError:
        os.close(fd)  # not made yet: a run that stores will make it
        return None
    except OSError:
        return _refused(fd, name, path)
    _remember(name, path, fd)
    return fd


def _only_ours_above(path: str, euid: int) -> bool:
    """Whether only this user and root can change where ``path`` leads: every folder above it,
    as written and as its links resolve, is theirs, and nobody else can rename what it holds
    (writable by no one else, or sticky as /tmp is). A root run with a user's HOME is not:
    that user could swap the folders it reads code and answers from."""
    for leading in (path, os.path.realpath(path)):
        folder = os.path.dirname(leading.rstrip("/")) or "/"
        while True:
            info = os.stat(folder)
            if info.st_uid not in (euid, 0) or (info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX):
                return False
            if folder == "/":
                break
            folder = os.path.dirname(folder)
    return True


def _refused(fd: int, name: str, path: str):
    """No cache for this run: ``path`` is not this user's alone (found once, not per use)."""
    os.close(fd)
    _remember(name, path, None)


def _remember(name: str, path: str, fd) -> None:
    earlier = _opened.get(name)
    if earlier is not None and earlier[1] is not None:
        os.close(earlier[1])
    _opened[name] = (path, fd)


def _entry_name(kind: str, info) -> str:
    # Numbers and a word only: a safe file name as it is (no hash module to import).
    return "%s-%d-%d-%d-%d-%d" % (kind, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def lookup(kind: str, info):
    """The text kept for this file, or None."""
    folder = _folder("derived", create=False)
    if folder is None:
        return None
    try:
        # Never through a link: the entry is only ever a file this module wrote.
        fd = os.open(_entry_name(kind, info), _ENTRY_FLAGS, dir_fd=folder)
        # newline="": the text as extracted; CR LF read back as LF would be another file's answer.
        with os.fdopen(fd, encoding="utf-8", newline="") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_TEXT:
                return None
            text = handle.read(_MAX_TEXT + 1)
            if len(text) > _MAX_TEXT:
                return None  # grew while read
            _used(fd, info)
            return text
    except (OSError, ValueError):
        return None


def store(kind: str, info, text: str) -> None:
    folder = _folder("derived", create=True)
    if folder is None:
        return
    name = _entry_name(kind, info)
    try:
        _write(folder, name, text.encode("utf-8"))
    except (OSError, UnicodeError):
        return
    # The entries of the same file's earlier versions: "KIND-DEV-INO-" (no kind ends in "-N").
    _prune(folder, name, "%s-%d-%d-" % (kind, info.st_dev, info.st_ino))


def _write(folder: int, name: str, data: bytes) -> None:
    """``data`` as the entry ``name`` of ``folder``, whole or not at all; mode 0600."""
    from ai_doctor import wholefile

    wholefile.replace(folder, name, data, "%s.%d.tmp" % (name, os.getpid()))


def _used(fd: int, info) -> None:
    """Mark the entry open at ``fd`` as used now, if that was not already said today."""
    if info.st_mtime < time.time() - DAY:
        try:
            os.utime(fd)
        except OSError:
            pass  # a read-only cache: the entry only ages out sooner


def _prune(folder: int, kept: str, superseded=None) -> None:
    """Delete the files in ``folder`` that were not used for UNUSED_FOR and, with
    ``superseded``, those whose names start with it, but never ``kept`` (just written)."""
    now = time.time()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name == kept:
            continue
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                continue  # nothing this module writes
            # Another run's temporary file is its own until it is a day old (then it was left
            # by a run that died).
            if info.st_mtime > now + DAY:
                gone = True  # a time to come says nothing of when it was used
            elif name.endswith(".tmp"):
                gone = info.st_mtime < now - DAY
            else:
                gone = (superseded is not None and name.startswith(superseded)) or info.st_mtime < now - UNUSED_FOR
            if gone:
                os.unlink(name, dir_fd=folder)
        except OSError:
            continue


# -- compiled code --------------------------------------------------------------------------------

_MAGIC = b"aidoctor compiled template\n"
# An entry is some tens of KiB of code; a file far larger is not one.
_MAX_CODE = 4 << 20


def load_code(name: str):
    """The code object kept under ``name`` (a hex digest), or None: missing, not this user's
    alone, torn or corrupt."""
    import hashlib
    import marshal
    import types

    folder = _folder("templates", create=False)
    if folder is None:
        return None
    try:
        # Never through a link, never blocking on a FIFO put in its place.
        fd = os.open(name, _ENTRY_FLAGS, dir_fd=folder)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            # Written by this user and writable by nobody else: any other could have put code there.
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022 or info.st_size > _MAX_CODE:
                return None
            data = handle.read(info.st_size + 1)  # more than that: changed while read, and its digest says so
            _used(fd, info)
    except OSError:
        return None
    # The header names the entry: another template's code under this name (a renamed file) is refused.
    header = _header(name)
    digest, payload = data[len(header) : len(header) + 65], data[len(header) + 65 :]
    if not data.startswith(header) or digest != hashlib.sha256(payload).hexdigest().encode() + b"\n":
        return None
    try:
        code = marshal.loads(payload)
    except Exception:  # EOFError, ValueError or TypeError, by Python version, on a bad stream
        return None
    return code if isinstance(code, types.CodeType) else None


def store_code(name: str, code) -> None:
    import hashlib
    import marshal

    folder = _folder("templates", create=True)
    if folder is None:
        return
    try:
        payload = marshal.dumps(code)
        _write(folder, name, _header(name) + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    except (OSError, ValueError):
        return
    _prune(folder, name)


def _header(name: str) -> bytes:
    return _MAGIC + name.encode("ascii") + b"\n"
