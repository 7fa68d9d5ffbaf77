"""Where actions are applied: a tree (a mounted image, an unpacked snapshot, a copy of a
fixture) or the live host.

Every path an action names is a target path (``/etc/sysctl.d/…``), resolved inside the root as
chroot(2) would (the Host's own resolver), so a link in a tree can never make a write land
outside it. Writes replace a file whole (a temporary file beside it, renamed over it, keeping
its mode and owner), never through a device, FIFO or directory; every file changed or removed
is copied first to the backup folder, and every change is recorded in words.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from ai_doctor.host import READ_CAP, Host, _normal
from ai_doctor.remedy.actions import NotApplicable

# A tree keeps its backups beside its manifest, which the Host never shows to the checks.
TREE_BACKUPS = "/.aidoctor/backup"
LIVE_BACKUPS = "/var/lib/aidoctor/backup"


class ApplyError(Exception):
    """An action that was tried and failed (the message names it)."""


class Target:
    """Applies file changes under ``root``; see the module docstring."""

    live = False

    def __init__(self, root: str, backup_root=None):
        self.host = Host(root)
        self.root = self.host.root
        now = time.time()
        stamp = "%s.%06d" % (time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)), int(now % 1 * 1e6))
        # The root is the user's choice; below it everything is the tree's and is checked.
        self._backup_start, below = (self.root, TREE_BACKUPS) if backup_root is None else ("/", backup_root)
        self._backup_below = "%s/%s" % (below.strip("/"), stamp)
        self.backups = os.path.join(self._backup_start, self._backup_below)
        self.saved = set()
        self.changed = []  # target paths written or removed, in order
        self.created = []  # target paths that did not exist before

    # -- paths ---------------------------------------------------------------------------

    def locate(self, path: str) -> str:
        """The path on this machine that holds target ``path``, links resolved inside the root."""
        if "\x00" in path or not path.startswith("/"):
            raise NotApplicable("not a usable path: %r" % path[:120])
        normal = _normal(path)
        if normal.split("/")[1:2] in (["proc"], ["sys"], ["dev"]) and not self.live:
            raise NotApplicable("%s is a kernel or device file, not configuration" % normal)
        try:
            return self.host.locate(normal)
        except OSError as exc:
            raise NotApplicable("%s: %s" % (normal, exc.strerror or exc)) from None

    def read(self, path: str):
        """A file's text (bytes that are not UTF-8 kept as they are), or None where it is absent."""
        real = self.locate(path)
        try:
            info = os.stat(real)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise ApplyError("%s: %s" % (path, exc.strerror or exc)) from None
        if not stat.S_ISREG(info.st_mode):
            raise NotApplicable("%s is not a regular file" % path)
        if info.st_size > READ_CAP:
            raise NotApplicable("%s is larger than %d MiB" % (path, READ_CAP >> 20))
        with open(real, "rb") as stream:
            return stream.read(READ_CAP + 1).decode("utf-8", "surrogateescape")

    # -- changes ---------------------------------------------------------------------------

    def _backup(self, path: str, real: str) -> None:
        if path in self.saved:
            return
        self.saved.add(path)
        folder = "%s/%s" % (self._backup_below, os.path.dirname(path.lstrip("/")))
        copy = _safe_folders(self._backup_start, folder) + "/" + os.path.basename(path)
        info = os.lstat(real)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(real), copy)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(real, "rb") as source, os.fdopen(os.open(copy, flags, 0o600), "wb") as kept:
            kept.write(source.read())
        os.chmod(copy, stat.S_IMODE(info.st_mode))

    def write(self, path: str, text: str, parents: bool = False) -> str:
        real = self.locate(path)
        folder = os.path.dirname(real)
        if not os.path.isdir(folder):
            if not parents:
                raise NotApplicable("%s: its folder does not exist" % path)
            os.makedirs(folder, exist_ok=True)
        existing = None
        try:
            existing = os.lstat(real)
        except FileNotFoundError:
            pass
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            raise NotApplicable("%s is not a regular file" % path)
        data = text.encode("utf-8", "surrogateescape")
        if existing is not None:
            with open(real, "rb") as stream:
                if stream.read(READ_CAP + 1) == data:
                    return "%s already says this" % path
            self._backup(path, real)
        else:
            self.created.append(path)
        _replace_whole(real, data, existing)
        self.changed.append(path)
        return "wrote %s" % path

    def make_folder(self, path: str) -> str:
        real = self.locate(path)
        if os.path.isdir(real):
            return "%s was there" % path
        if os.path.lexists(real):
            raise NotApplicable("%s is there and is not a folder" % path)
        os.makedirs(real)
        self.changed.append(path)
        self.created.append(path)
        return "made the folder %s" % path

    def remove(self, path: str) -> str:
        real = self.locate(path)
        try:
            info = os.lstat(real)
        except FileNotFoundError:
            return "%s was already absent" % path
        if stat.S_ISDIR(info.st_mode):
            raise NotApplicable("%s is a folder" % path)
        self._backup(path, real)
        os.unlink(real)
        self.changed.append(path)
        return "removed %s" % path

    def chmod_executable(self, path: str) -> str:
        real = self.locate(path)
        info = os.stat(real)
        mask = os.umask(0)
        os.umask(mask)
        mode = stat.S_IMODE(info.st_mode) | (0o111 & ~mask)
        if mode == stat.S_IMODE(info.st_mode):
            return "%s was already executable" % path
        self._backup(path, real)
        os.chmod(real, mode)
        self.changed.append(path)
        return "made %s executable" % path

    def link(self, path: str, points_to: str) -> str:
        real = self.locate(path)
        if os.path.lexists(real):
            if os.path.islink(real) and os.readlink(real) == points_to:
                return "%s already points to %s" % (path, points_to)
            self._backup(path, real)
            os.unlink(real)
        os.symlink(points_to, real)
        self.changed.append(path)
        return "linked %s to %s" % (path, points_to)

    def disable_unit(self, unit: str):
        """What ``systemctl disable`` does to the files: the unit's links in the .wants and
        .requires folders of /etc/systemd/system go."""
        done = []
        top = self.host.listdir("/etc/systemd/system")
        for folder in top.data if top.ok else ():
            if folder.endswith((".wants", ".requires")):
                path = "/etc/systemd/system/%s/%s" % (folder, unit)
                if os.path.islink(self.locate(path)):
                    done.append(self.remove(path))
        return done or ["%s was not enabled" % unit]

    def write_kernel(self, path: str, value: str, glob: bool = False) -> str:
        raise NotApplicable("changes the running kernel, and a tree is not running")

    def run(self, argv) -> str:
        raise NotApplicable("runs %s on the host itself" % argv[0])

    # -- the record ------------------------------------------------------------------------

    def finish(self):
        """Where the backups and the list of changes are kept, or None when nothing changed."""
        if not self.changed:
            return None
        import json

        record = {"changed": self.changed, "created": self.created, "root": self.root}
        folder = _safe_folders(self._backup_start, self._backup_below)
        with open(os.path.join(folder, "changes.json"), "w", encoding="utf-8") as stream:
            json.dump(record, stream, indent=2)
        return self.backups


class LiveTarget(Target):
    """The host aidoctor runs on: files as above, and the running kernel and programs too."""

    live = True

    def __init__(self):
        super().__init__("/", LIVE_BACKUPS)

    def write_kernel(self, path: str, value: str, glob: bool = False) -> str:
        import glob as globbing

        if not path.startswith(("/proc/sys/", "/sys/")):
            raise NotApplicable("%s is not a kernel setting" % path)
        paths = sorted(globbing.glob(path)) if glob else [path]
        if not paths:
            raise ApplyError("%s: no such file" % path)
        for one in paths:
            try:
                with open(one, "w") as stream:
                    stream.write(value + "\n")
            except OSError as exc:
                raise ApplyError("writing %s to %s: %s" % (value, one, exc.strerror or exc)) from None
        return "wrote %s to %s" % (value, path)

    def run(self, argv) -> str:
        import subprocess

        try:
            done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        except OSError as exc:
            raise ApplyError("%s: %s" % (argv[0], exc.strerror or exc)) from None
        if done.returncode != 0:
            tail = done.stdout.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise ApplyError("`%s` failed (exit %d)%s" % (" ".join(argv), done.returncode, ": " + " / ".join(tail) if tail else ""))
        return "ran %s" % " ".join(argv)


def _safe_folders(start: str, relative: str) -> str:
    """``start``/``relative`` made folder by folder below ``start``, refusing any part that is a
    link (a tree's own /.aidoctor could point anywhere); returns the path."""
    path = start.rstrip("/")
    for part in [p for p in relative.split("/") if p and p not in (".", "..")]:
        path += "/" + part
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise ApplyError("%s: not a folder (a link?); the backup is not written through it" % path)
    return path or "/"


def _replace_whole(real: str, data: bytes, existing) -> None:
    """A temporary file beside ``real``, created exclusively, renamed over it; an existing
    file's mode and owner are kept."""
    import tempfile

    handle, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(real), suffix=".aidoctor-tmp", dir=os.path.dirname(real))
    try:
        if existing is not None:
            os.fchmod(handle, stat.S_IMODE(existing.st_mode))
            try:
                os.fchown(handle, existing.st_uid, existing.st_gid)
            except OSError:
                pass
        else:
            os.fchmod(handle, 0o644)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, real)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
