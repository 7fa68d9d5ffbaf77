"""Where actions are applied: a tree (a mounted image, an unpacked snapshot, a copy of a
fixture) or the live host.

Every path an action names is a target path (``/etc/sysctl.d/…``), resolved inside the root as
chroot(2) would (the Host's own resolver). The folders of the result are then opened one by one
from the root, never following a link (``O_NOFOLLOW``), and every change is made relative to the
folder opened (``openat``, ``renameat``, ``unlinkat``): a tree that swaps a folder for a link
while it is being changed (a running container's root file system) gets a refusal, not a write
outside it. Files are replaced whole (a temporary file beside them, renamed over them, keeping
their mode and owner), never written through a device, FIFO or folder, and read only when they
are regular files of at most READ_CAP bytes. Every file changed or removed is copied first to
the backup folder, which is made before the first change, and every change is recorded.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from ai_doctor.host import READ_CAP, Host, _normal, read_at_most
from ai_doctor.remedy.actions import NotApplicable

# A tree keeps its backups beside its manifest, which the Host never shows to the checks.
TREE_BACKUPS = ".aidoctor/backup"
LIVE_BACKUPS = "/var/lib/aidoctor/backup"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class ApplyError(Exception):
    """An action that was tried and failed (the message names it)."""


class Target:
    """Applies file changes under ``root``; see the module docstring."""

    live = False

    def __init__(self, root: str, backup_root=None):
        real = os.path.realpath(root)
        self.host = Host(real)
        self.root = self.host.root
        now = time.time()
        self._stamp = "%s.%06d" % (time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)), int(now % 1 * 1e6))
        self._live_backups = backup_root
        self.backups = (backup_root if backup_root else os.path.join(self.root, TREE_BACKUPS)) + "/" + self._stamp
        self._backup_fd = None
        self.saved = set()
        self.changed = []  # target paths written or removed, in order
        self.created = []  # target paths that did not exist before

    # -- paths ---------------------------------------------------------------------------

    def _check(self, path: str) -> str:
        if "\x00" in path or not path.startswith("/"):
            raise NotApplicable("not a usable path: %r" % path[:120])
        normal = _normal(path)
        if normal.split("/")[1:2] in (["proc"], ["sys"], ["dev"]) and not self.live:
            raise NotApplicable("%s is a kernel or device file, not configuration" % normal)
        return normal

    def _resolved(self, path: str) -> str:
        """``path`` with every link resolved inside the root (root-relative)."""
        try:
            return self.host.resolve(self._check(path))
        except OSError as exc:
            raise NotApplicable("%s: %s" % (path, exc.strerror or exc)) from None

    def _folder(self, relative: str, create: bool = False) -> int:
        """A descriptor of the folder at root-relative ``relative``, opened component by
        component without following a link (made where missing, with ``create``)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in [p for p in relative.split("/") if p]:
                try:
                    child = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise NotApplicable("%s: its folder does not exist" % relative) from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, _DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise NotApplicable("%s: a part of it is not a folder (or became a link while it was changed)" % relative) from None
                    raise
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _place(self, path: str, follow: bool = True, create: bool = False):
        """(folder descriptor, name) of target ``path``: its final link followed (as tee and
        sed --follow-symlinks do) unless ``follow`` is False (rm, ln)."""
        normal = self._check(path)
        if follow:
            resolved = self._resolved(normal)
        else:
            parent, name = normal.rsplit("/", 1)
            resolved = self._resolved(parent or "/").rstrip("/") + "/" + name
        parent, name = resolved.rsplit("/", 1)
        if not name:
            raise NotApplicable("%s names the root" % path)
        return self._folder(parent, create), name

    # -- reading ---------------------------------------------------------------------------

    def read(self, path: str):
        """A file's text (bytes that are not UTF-8 kept as they are), or None where it is absent."""
        try:
            folder, name = self._place(path)
        except NotApplicable as exc:
            if "does not exist" in str(exc):
                return None
            raise
        try:
            data = _read_regular(folder, name, path)
        finally:
            os.close(folder)
        return None if data is None else data.decode("utf-8", "surrogateescape")

    # -- changes ---------------------------------------------------------------------------

    def _backups(self) -> int:
        """The backup folder, made before the first change (a change is never made without
        it); its descriptor."""
        if self._backup_fd is None:
            try:
                if self._live_backups:
                    os.makedirs(self._live_backups, mode=0o700, exist_ok=True)
                    base = os.open(self._live_backups, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                else:
                    base = self._folder(TREE_BACKUPS, create=True)
                os.mkdir(self._stamp, 0o700, dir_fd=base)
                self._backup_fd = os.open(self._stamp, _DIR, dir_fd=base)
                os.close(base)
            except (OSError, NotApplicable) as exc:
                raise ApplyError("the backup folder %s cannot be made (%s): nothing is changed without it" % (self.backups, exc)) from None
        return self._backup_fd

    def _backup(self, path: str, folder: int, name: str, info) -> None:
        backups = self._backups()
        if path in self.saved:
            return
        self.saved.add(path)
        parent, _, base = path.strip("/").rpartition("/")
        into = _subfolder(backups, parent)
        try:
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(name, dir_fd=folder), base, dir_fd=into)
            elif stat.S_ISREG(info.st_mode):
                data = _read_regular(folder, name, path) or b""
                _create(into, base, data, stat.S_IMODE(info.st_mode))
        finally:
            os.close(into)

    def write(self, path: str, text: str, parents: bool = False) -> str:
        data = text.encode("utf-8", "surrogateescape")
        if parents:
            self._backups()  # folders may be made on the way
        folder, name = self._place(path, create=parents)
        try:
            existing = _lstat(folder, name)
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                raise NotApplicable("%s is not a regular file" % path)
            if existing is not None:
                if _read_regular(folder, name, path) == data:
                    return "%s already says this" % path
                self._backup(path, folder, name, existing)
            else:
                self._backups()
                self.created.append(path)
            _replace(folder, name, data, existing)
        finally:
            os.close(folder)
        self.changed.append(path)
        return "wrote %s" % path

    def make_folder(self, path: str) -> str:
        relative = self._resolved(path)
        try:
            os.close(self._folder(relative))
            return "%s was there" % path
        except NotApplicable as exc:
            if "does not exist" not in str(exc):
                raise
        self._backups()
        os.close(self._folder(relative, create=True))
        self.changed.append(path)
        self.created.append(path)
        return "made the folder %s" % path

    def remove(self, path: str) -> str:
        """The name itself goes (a link, not what it points to), as rm -f does."""
        folder, name = self._place(path, follow=False)
        try:
            info = _lstat(folder, name)
            if info is None:
                return "%s was already absent" % path
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                raise NotApplicable("%s is not a regular file or a link" % path)
            self._backup(path, folder, name, info)
            os.unlink(name, dir_fd=folder)
        finally:
            os.close(folder)
        self.changed.append(path)
        return "removed %s" % path

    def chmod_executable(self, path: str) -> str:
        folder, name = self._place(path)
        try:
            fd = _open_regular_at(folder, name, path)
            if fd is None:
                raise NotApplicable("%s is not there" % path)
            try:
                info = os.fstat(fd)
                if info.st_nlink > 1:
                    # Its mode is every name's: one of them may lie outside the tree.
                    raise NotApplicable("%s has other names (hard links): make it executable by hand" % path)
                mask = os.umask(0)
                os.umask(mask)
                mode = stat.S_IMODE(info.st_mode) | (0o111 & ~mask)
                if mode == stat.S_IMODE(info.st_mode):
                    return "%s was already executable" % path
                self._backup(path, folder, name, info)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        finally:
            os.close(folder)
        self.changed.append(path)
        return "made %s executable" % path

    def link(self, path: str, points_to: str) -> str:
        folder, name = self._place(path, follow=False)
        try:
            info = _lstat(folder, name)
            if info is not None:
                if stat.S_ISLNK(info.st_mode) and os.readlink(name, dir_fd=folder) == points_to:
                    return "%s already points to %s" % (path, points_to)
                if stat.S_ISDIR(info.st_mode):
                    raise NotApplicable("%s is a folder" % path)
                self._backup(path, folder, name, info)
                os.unlink(name, dir_fd=folder)
            self._backups()
            os.symlink(points_to, name, dir_fd=folder)
        finally:
            os.close(folder)
        self.changed.append(path)
        return "linked %s to %s" % (path, points_to)

    def disable_unit(self, unit: str):
        """What ``systemctl disable`` does to the files: the unit's links in the .wants and
        .requires folders of /etc/systemd/system go (the links, not the unit file)."""
        if "/" in unit or unit in ("", ".", ".."):
            raise NotApplicable("not a unit name: %r" % unit[:80])
        done = []
        top = self.host.listdir("/etc/systemd/system")
        for folder_name in top.data if top.ok else ():
            if not folder_name.endswith((".wants", ".requires")):
                continue
            path = "/etc/systemd/system/%s/%s" % (folder_name, unit)
            try:
                folder, name = self._place(path, follow=False)
            except NotApplicable:
                continue
            try:
                info = _lstat(folder, name)
            finally:
                os.close(folder)
            if info is not None and stat.S_ISLNK(info.st_mode):
                done.append(self.remove(path))
        return done or ["%s was not enabled" % unit]

    def write_kernel(self, path: str, value: str, glob: bool = False) -> str:
        raise NotApplicable("changes the running kernel, and a tree is not running")

    def run(self, argv) -> str:
        raise NotApplicable("runs %s on the host itself" % argv[0])

    # -- the record ------------------------------------------------------------------------

    def finish(self):
        """Where the backups and the list of changes are kept, or None when nothing changed."""
        if self._backup_fd is None:
            return None
        import json

        try:
            if self.changed:
                record = {"changed": self.changed, "created": self.created, "root": self.root}
                _create(self._backup_fd, "changes.json", json.dumps(record, indent=2).encode("utf-8"), 0o600)
        except OSError as exc:
            raise ApplyError("the list of changes could not be written to %s: %s" % (self.backups, exc.strerror or exc)) from None
        finally:
            os.close(self._backup_fd)
            self._backup_fd = None
        return self.backups if self.changed else None


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


def _lstat(folder: int, name: str):
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_regular_at(folder: int, name: str, path: str):
    """A read descriptor of the regular file ``name`` in ``folder`` (None where absent). What
    is there is looked at through an O_PATH descriptor first, which opens nothing: a device
    node is never opened (opening some acts on hardware, a watchdog or a tape), nor a FIFO
    (it would block). The file is then opened through that very descriptor, not its name, so
    nothing swapped in meanwhile is opened instead."""
    try:
        handle = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except FileNotFoundError:
        return None
    try:
        mode = os.fstat(handle).st_mode
        if stat.S_ISLNK(mode):
            raise NotApplicable("%s became a link while it was changed" % path)
        if not stat.S_ISREG(mode):
            raise NotApplicable("%s is not a regular file" % path)
        try:
            return os.open("/proc/self/fd/%d" % handle, _FILE & ~os.O_NOFOLLOW)
        except FileNotFoundError:
            # No /proc here: by name, checked again once open.
            fd = os.open(name, _FILE, dir_fd=folder)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise NotApplicable("%s is not a regular file" % path) from None
            return fd
    finally:
        os.close(handle)


def _read_regular(folder: int, name: str, path: str):
    """A regular file's bytes (None where absent); anything else, or more than READ_CAP, is
    refused before it is read or opened (_open_regular_at)."""
    fd = _open_regular_at(folder, name, path)
    if fd is None:
        return None
    try:
        info = os.fstat(fd)
        if info.st_size > READ_CAP:
            raise NotApplicable("%s is larger than %d MiB" % (path, READ_CAP >> 20))
        data = read_at_most(fd, READ_CAP + 1)
        if len(data) > READ_CAP:
            raise NotApplicable("%s is larger than %d MiB" % (path, READ_CAP >> 20))
        return data
    finally:
        os.close(fd)


def _subfolder(base: int, relative: str) -> int:
    """A descriptor of ``relative`` below the folder ``base``, made as needed, never through a link."""
    fd = os.dup(base)
    for part in [p for p in relative.split("/") if p not in ("", ".", "..")]:
        try:
            child = os.open(part, _DIR, dir_fd=fd)
        except FileNotFoundError:
            os.mkdir(part, 0o700, dir_fd=fd)
            child = os.open(part, _DIR, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def _create(folder: int, name: str, data: bytes, mode: int) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
        os.fchmod(stream.fileno(), mode)


def _replace(folder: int, name: str, data: bytes, existing) -> None:
    """A temporary file beside ``name``, created exclusively, renamed over it; an existing
    file's mode and owner are kept."""
    import secrets

    from ai_doctor import wholefile

    def settle(fd: int) -> None:
        if existing is None:
            os.fchmod(fd, 0o644)
            return
        os.fchmod(fd, stat.S_IMODE(existing.st_mode))
        try:
            os.fchown(fd, existing.st_uid, existing.st_gid)
        except OSError:
            pass

    wholefile.replace(folder, name, data, ".%s.%s.aidoctor-tmp" % (name[:100], secrets.token_hex(6)), settle)
