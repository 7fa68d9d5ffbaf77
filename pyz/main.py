"""aidoctor in one file: ``python3 aidoctor.pyz --model-size 140G`` (Python 3.9 or newer).

Python compiles every module it imports from a zip on every start, as it cannot keep their
bytecode there: a second or more per run. So the first run unpacks the code, once, into this
user's cache (``$XDG_CACHE_HOME/aidoctor/pyz/DIGEST``, ``~/.cache/...`` without it, or the
folder ``AIDOCTOR_PYZ_CACHE`` names), and every run imports from there as an installed copy
does. DIGEST is the archive's own, so a new build unpacks anew beside the old. The code is
imported from the zip itself where nothing may be written (``AIDOCTOR_NO_CACHE=1``), nothing can
be, or the folder is not this user's alone: code others can change is never run.

Written into the archive as ``__main__.py`` by pyz/build.py, which fills in DIGEST.
"""

import os
import stat
import sys

DIGEST = "@DIGEST@"
CODE = "lib/"
DAY = 86400
# A copy unused this long is another build's, deleted when a new build unpacks (as
# ai_doctor.cache prunes its entries).
UNUSED = 30 * DAY


def main():
    if sys.version_info < (3, 9):
        sys.stderr.write("aidoctor: error: needs Python 3.9 or newer; this is %d.%d\n" % sys.version_info[:2])
        return 2
    archive = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, _unpacked(archive) or os.path.join(archive, CODE))
    from ai_doctor.cli import main as command

    return command()


def _cache():
    named = os.environ.get("AIDOCTOR_PYZ_CACHE")
    if named:
        return named, (named,), None
    # A relative XDG_CACHE_HOME is to be ignored (XDG Base Directory specification).
    base = os.environ.get("XDG_CACHE_HOME", "")
    base = base if base.startswith("/") else os.path.join(os.path.expanduser("~"), ".cache")
    mine = os.path.join(base, "aidoctor")
    return os.path.join(mine, "pyz"), (mine, os.path.join(mine, "pyz")), base


def _private(path):
    """A real folder (not a link) of this user's that no one else can write."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def _only_ours_above(path):
    """Whether only this user and root can change where ``path`` leads: every folder above it,
    as written and as its links resolve, is theirs, and nobody else can rename what it holds
    (writable by no one else, or sticky as /tmp is). Code is imported from below it by path
    for the whole run, so a folder another user could swap in the meantime (a root run with
    that user's HOME) rules the cache out. The same test as ai_doctor.cache's, written here
    again because this runs before any of the package may be imported (tests/test_pyz.py
    checks the two agree)."""
    euid = os.geteuid()
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


def _unpacked(archive):
    """The folder the code is unpacked in, unpacking it first if need be; None where it cannot
    be used."""
    if os.environ.get("AIDOCTOR_NO_CACHE"):
        return None
    folder, chain, base = _cache()
    unpacked = os.path.join(folder, DIGEST)
    try:
        if not _only_ours_above(base or chain[0]):
            return None
        if base is not None:
            # The cache folder may be a link (a home on another disk); it must be this user's.
            if not os.path.isdir(base):
                os.mkdir(base, 0o700)
            info = os.stat(base)
            if info.st_uid != os.geteuid() or info.st_mode & 0o022:
                return None
        if not os.path.exists(os.path.join(unpacked, ".complete")):
            # Each folder made only inside one already found to be this user's alone.
            for path in chain:
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)
                if not _private(path):
                    return None
            _unpack(archive, folder, unpacked)
            _prune(folder)
    except (OSError, ValueError):
        return None
    if not all(_private(path) for path in chain + (unpacked,)):
        return None
    _mark_used(unpacked)
    return unpacked


def _now():
    import time

    return time.time()


def _mark_used(unpacked):
    """Marks the copy used, at most once a day, so most runs write nothing; a cache that cannot
    be written (read-only) serves as well unmarked. .complete is marked too: a build before
    .used judged copies by it."""
    used = os.path.join(unpacked, ".used")
    try:
        if abs(_now() - os.stat(used).st_mtime) > DAY:
            os.utime(used)
            os.utime(os.path.join(unpacked, ".complete"))
    except FileNotFoundError:
        try:
            os.close(os.open(used, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        except OSError:
            pass
    except OSError:
        pass


def _prune(folder):
    """Deletes what builds left here that no run needs: a copy no run has marked used for
    UNUSED, and an unpacking a run abandoned a day ago. Nothing else: AIDOCTOR_PYZ_CACHE may
    name a folder that holds more, a copy of a build from before copies were marked is left
    to the user, and so is one dated ahead (a cache shared by machines whose clocks differ)."""
    import shutil
    import tempfile

    now = _now()
    for name in os.listdir(folder):
        digest, dot, suffix = name.partition(".")
        if len(digest) != 32 or digest.strip("0123456789abcdef") or name == DIGEST:
            continue
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            if dot:
                # mkdtemp's name: the digest, then eight of a-z, 0-9 and _.
                if len(suffix) != 8 or suffix.strip("abcdefghijklmnopqrstuvwxyz0123456789_"):
                    continue
                when, limit = info.st_mtime, DAY
            else:
                marks = [os.lstat(os.path.join(path, mark)) for mark in (".complete", ".used")]
                if not all(stat.S_ISREG(mark.st_mode) for mark in marks) or not os.path.isdir(os.path.join(path, "ai_doctor")):
                    continue
                when, limit = marks[1].st_mtime, UNUSED
            if now - when > limit:
                if not dot:
                    # Out of its build's way first: deleted half, it would keep that build
                    # from unpacking again; left half, it is an abandoned temporary.
                    aside = tempfile.mkdtemp(prefix=digest + ".", dir=folder)
                    os.rename(path, os.path.join(aside, "copy"))
                    path = aside
                shutil.rmtree(path, ignore_errors=True)  # by descriptor: a link in it is removed, not followed
        except OSError:
            continue


def _unpack(archive, folder, unpacked):
    import shutil
    import tempfile
    import zipfile

    temporary = tempfile.mkdtemp(prefix=DIGEST + ".", dir=folder)
    try:
        with zipfile.ZipFile(archive) as source:
            for member in source.infolist():
                name = member.filename
                if not name.startswith(CODE) or name.endswith("/"):
                    continue
                parts = name[len(CODE) :].split("/")
                if any(part in ("", ".", "..") for part in parts):
                    raise ValueError("%s: a name that is not the build's: %r" % (archive, name))
                target = os.path.join(temporary, *parts)
                os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
                handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(handle, "wb") as out:
                    out.write(source.read(member))
        for mark in (".used", ".complete"):
            os.close(os.open(os.path.join(temporary, mark), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            os.rename(temporary, unpacked)
        except OSError:
            # Another run unpacked the same archive first: its copy is as good.
            if not os.path.exists(os.path.join(unpacked, ".complete")):
                raise
    finally:
        if os.path.exists(temporary):
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
