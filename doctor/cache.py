"""What is kept between runs in the user's cache folder (``$XDG_CACHE_HOME/aidoctor`` or
``~/.cache/aidoctor``), private to the user; any failure to read or write there only means the
work is done again. ``AIDOCTOR_NO_CACHE=1`` turns it off.

- ``derived/``: what was found inside large files (a compressed module's .modinfo, a kernel
  image's config): decompressing a 100 MB nvidia.ko.xz takes seconds, and the answer only
  changes when the file does. An entry is keyed by the kind of extraction and the file's
  device, inode, size and change times, so a replaced or rewritten file is read again.
- ``templates/``: compiled HTML templates (reports.html names each by a digest of what its code
  depends on). An entry is code this process will run, so it is taken only from a regular file
  (not through a link) that this user owns and nobody else can write, and only whole: its own
  name and its payload's digest are checked first.

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


def enabled() -> bool:
    return not os.environ.get("AIDOCTOR_NO_CACHE")


def _base() -> str:
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def _folder():
    return os.path.join(_base(), "aidoctor", "derived") if enabled() else None


def _entry(kind: str, info):
    # Files of every size: even a small module would cost the import of pyelftools.
    folder = _folder()
    if folder is None:
        return None
    # Numbers and a word only: a safe file name as it is (no hash module to import).
    return os.path.join(folder, "%s-%d-%d-%d-%d-%d" % (kind, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))


def lookup(kind: str, info):
    """The text kept for this file, or None."""
    path = _entry(kind, info)
    if path is None:
        return None
    try:
        # Never through a link: the entry is only ever a file this module wrote.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        # newline="": the text as extracted; CR LF read back as LF would be another file's answer.
        with os.fdopen(fd, encoding="utf-8", newline="") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            _used(fd, info)
            return handle.read()
    except (OSError, ValueError):
        return None


def store(kind: str, info, text: str) -> None:
    path = _entry(kind, info)
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temporary = "%s.%d.tmp" % (path, os.getpid())
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError:
        return
    # The entries of the same file's earlier versions: "KIND-DEV-INO-" (no kind ends in "-N").
    _prune(os.path.dirname(path), os.path.basename(path), "%s-%d-%d-" % (kind, info.st_dev, info.st_ino))


def _used(fd: int, info) -> None:
    """Mark the entry open at ``fd`` as used now, if that was not already said today."""
    if info.st_mtime < time.time() - DAY:
        try:
            os.utime(fd)
        except OSError:
            pass  # not this user's entry to mark: it only ages out sooner


def _prune(folder: str, kept: str, superseded=None) -> None:
    """Delete the entries in ``folder`` that were not used for UNUSED_FOR and, with
    ``superseded``, those whose names start with it, but never ``kept`` (just written)."""
    old = time.time() - UNUSED_FOR
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name == kept:
            continue
        path = os.path.join(folder, name)
        try:
            # Another run's temporary file is its own until it is a day old (then it was left
            # by a run that died).
            if name.endswith(".tmp"):
                if os.lstat(path).st_mtime < time.time() - DAY:
                    os.unlink(path)
            elif (superseded is not None and name.startswith(superseded)) or os.lstat(path).st_mtime < old:
                os.unlink(path)
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

    if not enabled():
        return None
    try:
        # Never through a link, never blocking on a FIFO put in its place.
        fd = os.open(os.path.join(_base(), "aidoctor", "templates", name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
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
    import tempfile

    if not enabled():
        return
    base = _base()
    folder = os.path.join(base, "aidoctor", "templates")
    try:
        # Only in a cache folder of this user's: never create or write in another's (root run
        # with a user's HOME), where the entries would be that user's to replace.
        if os.path.exists(base) and os.stat(base).st_uid != os.geteuid():
            return
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return
        payload = marshal.dumps(code)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=name + ".", suffix=".tmp")  # O_EXCL, mode 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_header(name) + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            os.replace(temporary, os.path.join(folder, name))
        except BaseException:
            os.unlink(temporary)
            raise
    except (OSError, ValueError):
        return
    _prune(folder, name)


def _header(name: str) -> bytes:
    return _MAGIC + name.encode("ascii") + b"\n"
