"""What was found inside large files (a compressed module's .modinfo, a kernel image's config),
kept between runs: decompressing a 100 MB nvidia.ko.xz takes seconds, and the answer only
changes when the file does.

An entry is keyed by the kind of extraction and the file's device, inode, size and change
times, so a replaced or rewritten file is read again. Entries live in the user's cache folder
(``$XDG_CACHE_HOME/aidoctor`` or ``~/.cache/aidoctor``), private to the user; any failure to
read or write there only means the file is read again. ``AIDOCTOR_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import os
import stat


def _folder():
    if os.environ.get("AIDOCTOR_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "aidoctor", "derived")


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
        with os.fdopen(fd, encoding="utf-8") as handle:
            return handle.read() if stat.S_ISREG(os.fstat(fd).st_mode) else None
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
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError:
        pass
