"""The Host reader: every byte a check sees comes through here.

A Host has a root (``/`` for the live machine, or a directory holding a mounted image, an
unpacked snapshot or a fixture), or reads a tree held in memory (a snapshot archive's members,
ai_doctor.tree.Members) the way it reads one on disk. Paths are always written as on the target
(``/proc/meminfo``) and re-rooted inside. Each read returns a :class:`Read` outcome instead of
raising, and is logged, so a run can say what it could not see and a snapshot can replay it.

Under any root but the live one, symbolic links resolve *inside* the root as chroot(2) would:
absolute targets restart at the root, ``..`` stops at the root, and more than 40 links in one
lookup stop with ELOOP like the kernel's own limit. Nothing outside the root is ever opened.
"""

from __future__ import annotations

import errno
import os
import stat

from ai_doctor.model import RECORDED
from ai_doctor.record import Record
from ai_doctor.tree import DISK, MAX_LINKS, NotRegular
from ai_doctor.tree import read_at_most as read_at_most  # the remedy target reads as the Host does

OK = "ok"
MISSING = "missing"
DENIED = "denied"
ERROR = "error"

# /proc and /sys report size 0 or 4096 whatever they hold, so reads are capped instead of sized.
READ_CAP = 8 << 20
# Where a tree keeps facts about itself that files cannot carry (DESIGN.md, Snapshots).
MANIFEST_DIR = "/.aidoctor"
MANIFEST = MANIFEST_DIR + "/manifest.json"

_MISSING_ERRNOS = (errno.ENOENT, errno.ENOTDIR)
NOT_UNDERSTOOD = "\x00not understood: "
# What an extraction found in the first part of a file too large to read whole: a record or a
# cache entry holds the number of the file's bytes it was taken from on this line, then the text.
READ_IN_PART = "\x00read in part: "
# An extraction's text at most (its record is read back whole).
DERIVED_CAP = 64 << 20
NOT_REGULAR = "not a regular file"
_DENIED_ERRNOS = (errno.EACCES, errno.EPERM)


class Read(Record):
    """The outcome of one read.

    ``status`` is ok, missing, denied or error; ``data`` is the text, bytes, names (a tuple) or
    link target when ok; ``detail`` names the error (``EIO: Input/output error``), or for what
    a derivation found in part (``truncated``), how many bytes of the file it read (digits).
    """

    __slots__ = ("path", "status", "data", "detail", "truncated")

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def missing(self) -> bool:
        return self.status == MISSING

    @property
    def denied(self) -> bool:
        return self.status == DENIED

    @property
    def failed(self) -> bool:
        """Present but not readable: denied or an error (a missing file is an answer)."""
        return self.status in (DENIED, ERROR)

    def describe(self) -> str:
        """The outcome in words, for evidence and skip reasons."""
        if self.status == OK:
            return "read" + (" (truncated)" if self.truncated else "")
        if self.status == MISSING:
            return "not present"
        if self.status == DENIED:
            # A denial a snapshot's manifest replays happened where the tree was taken.
            return "permission denied where the tree was taken" if self.detail == RECORDED else "permission denied"
        return self.detail or "error"


class Stat(Record):
    """The parts of stat(2) that checks use."""

    __slots__ = ("mode", "size", "uid")

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)


_NODE_KINDS = {stat.S_IFCHR: "c", stat.S_IFBLK: "b", stat.S_IFDIR: "d", stat.S_IFREG: "-", stat.S_IFIFO: "p", stat.S_IFSOCK: "s"}


class Node(Record):
    """stat(2) of a path without opening it: ``kind`` (``c`` character device, ``b`` block
    device, ``d`` folder, ``-`` regular file, ``p`` FIFO, ``s`` socket), device ``major`` and
    ``minor`` (0 unless a device), permission bits, owner, group and mtime in whole seconds."""

    __slots__ = ("kind", "major", "minor", "mode", "uid", "gid", "mtime")

    @classmethod
    def of(cls, st):
        kind = _NODE_KINDS.get(stat.S_IFMT(st.st_mode), "?")
        device = kind in ("c", "b")
        return cls(
            kind,
            os.major(st.st_rdev) if device else 0,
            os.minor(st.st_rdev) if device else 0,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            int(st.st_mtime),
        )

    @property
    def text(self) -> str:
        return "%s %d %d %04o %d %d %d\n" % (self.kind, self.major, self.minor, self.mode, self.uid, self.gid, self.mtime)

    @classmethod
    def parse(cls, text: str):
        """The record ``text`` wrote; None for anything else (a tree is hostile input)."""
        fields = text.split()
        if len(fields) != 7 or fields[0] not in ("c", "b", "d", "-", "p", "s", "?"):
            return None
        try:
            major, minor, mode, uid, gid, mtime = (int(fields[i], 8 if i == 3 else 10) for i in range(1, 7))
        except ValueError:
            return None
        if min(major, minor, mode, uid, gid) < 0 or max(major, minor, uid, gid) >= 1 << 32 or mode > 0o7777 or abs(mtime) >= 1 << 40:
            return None
        return cls(fields[0], major, minor, mode, uid, gid, mtime)

    @property
    def is_char(self) -> bool:
        return self.kind == "c"


def _failed(path: str, exc: OSError) -> Read:
    code = exc.errno
    if code in _MISSING_ERRNOS:
        return Read(path, MISSING, None, None, False)
    if code in _DENIED_ERRNOS:
        return Read(path, DENIED, None, None, False)
    name = errno.errorcode.get(code, "E?") if code else "E?"
    return Read(path, ERROR, None, "%s: %s" % (name, exc.strerror or exc), False)


class Refused(Exception):
    """A lookup that the re-rooted resolver stops (a link loop)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.error = OSError(code, os.strerror(code))


class Host:
    """Reads a target system under ``root``; see the module docstring for the contract."""

    # True for the simulated next boot (ai_doctor.nextboot): services start again from their
    # configuration then, and counters (cgroup events, suspend statistics) start at zero.
    next_boot = False

    def __init__(self, root: str = "/", trace_links: bool = False, origin=None, image: bool = False, tree=None):
        if tree is None or tree is DISK:
            # abspath keeps POSIX's leading "//"; "//" is still this machine's root.
            self.root = "/" + os.path.abspath(root).lstrip("/")
            self.live = self.root == "/"
            self.tree = DISK
        else:
            # A tree held in memory (ai_doctor.tree.Members: a snapshot archive's members);
            # ``root`` only names it.
            self.root = root
            self.live = False
            self.tree = tree
        # What the tree was read from (a snapshot archive), for messages; None: the tree.
        self.origin = origin
        # Judged as an image even if it holds /proc and /sys (a chroot, a container's rootfs):
        # those are hidden, so only what boot will do is checked.
        self.image = image
        # Snapshots need every link a lookup passed through, so the tree can be rebuilt; the
        # live fast path lets the kernel resolve them unseen.
        self.trace_links = trace_links
        # What turns a root-relative path into the tree's own: the root's path on this machine,
        # nothing for the live host or a tree in memory.
        self._prefix = "" if self.live or self.tree is not DISK else self.root
        # Every access in order: (kind, path, Read). Facts attribute failures with it and
        # snapshots are written from it.
        self.log = []
        self._links = {}
        # Whole paths already resolved: a snapshot or a replay resolves most paths several times.
        self._resolved = {}
        self._overrides = {}
        self._cut = set()
        self.manifest = {}
        if not self.live:
            self._load_manifest()

    # -- public reads -------------------------------------------------------------------

    def read_bytes(self, path: str, cap: int = READ_CAP) -> Read:
        return self._note("file", self._read(path, cap))

    def read_text(self, path: str, cap: int = READ_CAP) -> Read:
        """Read a file as text; bytes that are not UTF-8 are replaced, never fatal. A file cut
        at ``cap`` ends at its last whole line: a parser never sees half a line
        (``vm.nr_hugepages = 40`` of ``4096``); ``truncated`` says that more was there."""
        got = self._read(path, cap)
        if not got.ok:
            return self._note("file", got)
        data = got.data
        if got.truncated:
            data = data[: data.rfind(b"\n") + 1]
        # The log keeps the bytes: a snapshot writes them as they were, not re-encoded (each
        # invalid byte would come back as three).
        self._note("file", Read(got.path, OK, data, None, got.truncated))
        return Read(got.path, OK, data.decode("utf-8", "replace"), None, got.truncated)

    def derive(self, path: str, kind: str, extract) -> Read:
        """What ``extract(stream)`` finds in the file at ``path`` (a module's .modinfo, a kernel
        image's embedded config): text, read from a seekable binary stream so a large file is
        never loaded whole. ``extract`` raises ValueError for a file it does not understand.

        A snapshot keeps the result (``/.aidoctor/derived/KIND/PATH``), not the file, so a tree
        replays it without the module or kernel image itself.
        """
        path = _normal(path)
        got = self._override(path) if path.split("/")[1:2] != [MANIFEST_DIR[1:]] else None
        if got is None and not self.live:
            got = self._recorded_derivation(path, kind)
        if got is None:
            got = self._derive(path, kind, extract)
        return self._note("derived:" + kind, got)

    def listdir(self, path: str) -> Read:
        """Names in a directory, sorted, so every run and replay sees one order."""
        path = _normal(path)
        got = self._override(path)
        if got is None:
            try:
                real = self._real(path)
                got = Read(path, OK, tuple(sorted(self.tree.listdir(real))), None, False)
            except Refused as refused:
                got = _failed(path, refused.error)
            except OSError as exc:
                got = _failed(path, exc)
            if got.ok and path == "/" and not self.live:
                names = tuple(n for n in got.data if n != MANIFEST_DIR[1:])
                got = got._replace(data=names)
        return self._note("dir", got)

    def readlink(self, path: str) -> Read:
        """The target of a link as stored (not resolved), e.g. ``../devices/pci…``; ok with
        ``data`` None when the path exists but is not a link."""
        path = _normal(path)
        got = self._override(path)
        if got is None:
            try:
                parent, name = path.rsplit("/", 1)
                real = self._real(parent or "/").rstrip("/") + "/" + name
                got = Read(path, OK, self.tree.readlink(real), None, False)
            except Refused as refused:
                got = _failed(path, refused.error)
            except OSError as exc:
                # EINVAL: it exists and is not a link, which is an answer, not an error.
                got = Read(path, OK, None, None, False) if exc.errno == errno.EINVAL else _failed(path, exc)
        return self._note("link", got)

    def stat(self, path: str):
        """(Read, Stat or None) for a path, following links inside the root.

        The Read's ``data`` is the Stat too, so a snapshot can recreate what was seen.
        """
        path = _normal(path)
        got = self._override(path)
        if got is None:
            try:
                st = self.tree.stat(self._real(path))
                got = Read(path, OK, Stat(st.st_mode, st.st_size, st.st_uid), None, False)
            except Refused as refused:
                got = _failed(path, refused.error)
            except OSError as exc:
                got = _failed(path, exc)
        self._note("stat", got)
        return got, got.data if got.ok else None

    def node(self, path: str) -> Read:
        """What kind of file ``path`` is (links followed inside the root), with its device
        numbers, permission bits, owner, group and modification time: ``data`` is a
        :class:`Node`. Never opened, so a device node is only looked at.

        A snapshot keeps it as a derived record (``/.aidoctor/derived/node/PATH``), so device
        nodes and times replay where a tree holds neither."""
        path = _normal(path)
        got = self._override(path) if path.split("/")[1:2] != [MANIFEST_DIR[1:]] else None
        if got is None and not self.live:
            got = self._recorded_derivation(path, "node")
            if got is not None and got.ok:
                node = Node.parse(got.data)
                got = got._replace(data=node) if node else Read(path, ERROR, None, "not understood: %r" % got.data[:60], False)
        if got is None:
            try:
                st = self.tree.stat(self._real(path))
                got = Read(path, OK, Node.of(st), None, False)
            except Refused as refused:
                got = _failed(path, refused.error)
            except OSError as exc:
                got = _failed(path, exc)
        # Logged as text, the form a snapshot writes and a replay reads back.
        self._note("derived:node", got._replace(data=got.data.text) if got.ok else got)
        return got

    def exists(self, path: str) -> bool:
        return self.stat(path)[0].ok

    def entry_kind(self, path: str):
        """(``dir``/``link``/``file``/``denied``/None, link target) of a directory entry, not followed and
        not logged: for snapshots recreating names that were listed but never read."""
        parent, _, name = _normal(path).rpartition("/")
        try:
            real = self._real(parent or "/").rstrip("/") + "/" + name
            info = self.tree.lstat(real)
            if stat.S_ISLNK(info.st_mode):
                return "link", self.tree.readlink(real)
        except OSError as exc:
            # A folder that can be listed but not searched (mode 0444): the name is there,
            # what it is cannot be seen.
            return (DENIED if exc.errno in _DENIED_ERRNOS else None), None
        except Refused:
            return None, None
        return ("dir" if stat.S_ISDIR(info.st_mode) else "file"), None

    def resolve(self, path: str, fresh: bool = True) -> str:
        """Target ``path`` with every link resolved inside the root; root-relative. ``fresh``:
        looked up again, not from the links seen before (a tree being changed may have new
        ones). OSError (ELOOP) for a loop."""
        if fresh:
            self._links.clear()
            self._resolved.clear()
        try:
            return self._resolve(_normal(path))
        except Refused as refused:
            raise refused.error from None

    @property
    def euid(self):
        """The user the reads ran as; for a tree, the one its manifest records (or None)."""
        if self.live:
            return os.geteuid()
        uid = self.manifest.get("uid")
        return uid if isinstance(uid, int) and not isinstance(uid, bool) and uid >= 0 else None

    @property
    def reader_uid(self) -> int:
        """The user this process reads as, whatever the target (its refusals are real ones)."""
        return os.geteuid()

    def display(self, path: str) -> str:
        """Where a target path lies on this machine, for messages about a tree."""
        if self.origin is not None:
            return "%s:%s" % (self.origin, path)
        return path if self.live else self.root + path

    # -- internals ----------------------------------------------------------------------

    def _note(self, kind: str, got: Read) -> Read:
        self.log.append((kind, got.path, got))
        return got

    def _read(self, path: str, cap: int) -> Read:
        path = _normal(path)
        got = self._override(path)
        if got is not None:
            return got
        try:
            real = self._real(path)
        except Refused as refused:
            return _failed(path, refused.error)
        got = self._read_file(path, real, cap, nofollow=not self.live or self.trace_links)
        if got.ok and path in self._cut:
            # A snapshot holds the part that was read of a file larger than the cap.
            got = got._replace(truncated=True)
        return got

    def _recorded_derivation(self, path: str, kind: str):
        try:
            real = self._prefix + self._resolve(derived_record(kind, path))
        except Refused:
            return None
        got = self._read_file(path, real, DERIVED_CAP + 64, nofollow=True)
        if not got.ok:
            return None
        text = got.data.decode("utf-8", "replace")
        # A record longer than any aidoctor writes is judged on its first part, and says so
        # (in its text: a snapshot of this replay keeps saying so).
        return derived_read(path, within_cap(text) if got.truncated else text)

    def _read_file(self, path: str, real: str, cap: int, nofollow: bool) -> Read:
        """Read the regular file at ``real`` (the tree's path for target ``path``), at most
        ``cap`` bytes."""
        try:
            data = self.tree.read(real, cap + 1, nofollow)
        except NotRegular:
            return Read(path, ERROR, None, NOT_REGULAR, False)
        except OSError as exc:
            return _failed(path, exc)
        truncated = len(data) > cap
        return Read(path, OK, data[:cap] if truncated else data, None, truncated)

    def _derive(self, path: str, kind: str, extract) -> Read:
        try:
            stream, info = self.tree.open(self._real(path), nofollow=not self.live or self.trace_links)
        except Refused as refused:
            return _failed(path, refused.error)
        except NotRegular:
            return Read(path, ERROR, None, NOT_REGULAR, False)
        except OSError as exc:
            return _failed(path, exc)
        from ai_doctor import cache

        # A file held in memory has no identity to keep its answer under between runs.
        keep = info is not None
        with stream:
            try:
                kept = cache.lookup(kind, info) if keep else None
                if kept is not None:
                    # A file that was not understood is kept too, marked: reading it again
                    # would only fail again, slowly.
                    return derived_read(path, kept)
                try:
                    text = extract(stream)
                except (ValueError, EOFError) as exc:
                    detail = str(exc) or type(exc).__name__
                    if keep:
                        cache.store(kind, info, NOT_UNDERSTOOD + detail)
                    return Read(path, ERROR, None, detail, False)
                if path in self._cut and not text.startswith(READ_IN_PART):
                    # A tree holding the part of the file a snapshot read (an older one, that
                    # kept files rather than what was found in them).
                    text = in_part(stream.tell(), text)
                text = within_cap(text)
                if keep:
                    cache.store(kind, info, text)
                return derived_read(path, text)
            except OSError as exc:
                return _failed(path, exc)

    def _override(self, path: str):
        """A recorded outcome (permission denied, EIO …) that a tree's manifest declares, or
        the refusal of a path no filesystem can hold."""
        if "\x00" in path:
            return Read(path, ERROR, None, "EINVAL: the path holds a NUL byte", False)
        if self.live:
            return None
        if in_metadata(path):
            return Read(path, MISSING, None, None, False)
        if self.image and path.split("/")[1:2] in (["proc"], ["sys"]):
            return Read(path, MISSING, None, None, False)
        probe = path
        while probe:
            status = self._overrides.get(probe)
            # An outcome covers what lies below (a folder that could not be searched), except a
            # file-kind one: a FIFO read as a file says nothing of other paths.
            if status is not None and (probe == path or status != NOT_REGULAR):
                if status == DENIED:
                    return Read(path, DENIED, None, RECORDED, False)
                if status == MISSING:
                    return Read(path, MISSING, None, None, False)
                return Read(path, ERROR, None, status, False)
            probe = probe.rpartition("/")[0]
        return None

    def _load_manifest(self) -> None:
        import json

        # Named in messages as the tree's path (a tree in memory: as in the tree).
        folder, real = self._prefix + MANIFEST_DIR, self._prefix + MANIFEST
        try:
            # The manifest is tree content too: a link or a FIFO there must not reach outside.
            if not stat.S_ISDIR(self.tree.lstat(folder).st_mode):
                raise BadTree("%s: not a directory" % folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BadTree("%s: unreadable (%s)" % (folder, exc.strerror or exc)) from None
        try:
            link = stat.S_ISLNK(self.tree.lstat(real).st_mode)
        except OSError:
            link = False
        if link:
            raise BadTree("%s: the manifest is a symbolic link" % real)
        got = self._read_file(MANIFEST, real, READ_CAP, nofollow=True)
        if got.missing:
            return
        if not got.ok or got.truncated:
            why = got.describe() if not got.ok else "larger than %d MiB" % (READ_CAP >> 20)
            raise BadTree("%s: unreadable manifest (%s)" % (real, why))
        try:
            manifest = json.loads(got.data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            # Nesting deeper than the parser recurses is a broken manifest, not an internal error.
            raise BadTree("%s: unreadable manifest (%s)" % (real, str(exc)[:200] or type(exc).__name__)) from None
        if not isinstance(manifest, dict):
            raise BadTree("%s: the manifest is not a JSON object" % real)
        outcomes = manifest.get("outcomes", {})
        if not isinstance(outcomes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in outcomes.items()):
            raise BadTree('%s: "outcomes" must map paths to outcome strings' % real)
        cut = manifest.get("truncated", [])
        if not isinstance(cut, list) or not all(isinstance(path, str) for path in cut):
            raise BadTree('%s: "truncated" must list paths' % real)
        self._overrides = {_normal(k): v for k, v in outcomes.items()}
        self._cut = {_normal(path) for path in cut}
        self.manifest = manifest

    def _real(self, path: str) -> str:
        """The path on this machine that holds the target's ``path``."""
        if self.live and not self.trace_links:
            return path
        resolved = self._resolve(path)
        if not self.live and in_metadata(resolved):
            # The tree's own metadata is not host content, whichever link leads there.
            raise Refused(errno.ENOENT)
        return self._prefix + resolved

    def _resolve(self, path: str) -> str:
        """Resolve every link in ``path`` inside the root; returns a root-relative path."""
        resolved = self._resolved.get(path)
        if resolved is None:
            resolved = self._resolved[path] = resolve_inside(path, self._link_at)
        return resolved

    def _link_at(self, here: str) -> str:
        """The target of the link at root-relative ``here``; "" where there is none."""
        target = self._links.get(here)
        if target is None:
            try:
                target = self.tree.readlink(self._prefix + here)
            except OSError:
                # EINVAL: not a link; anything else, the lookup that follows reports it.
                target = ""
            self._links[here] = target
            if target and self.trace_links:
                self._note("link", Read(here, OK, target, None, False))
        return target


def resolve_inside(path: str, link_at, follow_last: bool = True) -> str:
    """``path`` resolved as chroot(2) would: each component looked up with ``link_at(here)``
    (a link's target, or ""), absolute targets restarting at the root and ``..`` stopping
    there, applied after the link it follows (path_resolution(7)). The result is normal:
    absolute, no ``.``, ``..`` or empty parts. Refused (ELOOP) past MAX_LINKS links."""
    pending = [part for part in path.split("/") if part][::-1]
    # done[i] is the resolved path of the first i + 1 parts: each step appends to the last.
    done = []
    followed = 0
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        here = (done[-1] if done else "") + "/" + name
        target = link_at(here) if pending or follow_last else ""
        if not target:
            done.append(here)
            continue
        followed += 1
        if followed > MAX_LINKS:
            raise Refused(errno.ELOOP)
        if target.startswith("/"):
            done = []
        pending.extend(part for part in reversed(target.split("/")) if part)
    return done[-1] if done else "/"


class BadTree(Exception):
    """A --root tree whose own metadata cannot be used."""


def join_link(path: str, target: str) -> str:
    """Where the link at ``path`` points, as a normal target path (no filesystem access)."""
    return lexical(target if target.startswith("/") else path.rsplit("/", 1)[0] + "/" + target)


def in_metadata(path: str) -> bool:
    """Whether normal target ``path`` lies in a tree's own metadata folder (not host content)."""
    return path == MANIFEST_DIR or path.startswith(MANIFEST_DIR + "/")


def in_part(size: int, text: str) -> str:
    """What an extraction returns for ``text`` found in the first ``size`` bytes of its file,
    where the file went on."""
    return "%s%d\n%s" % (READ_IN_PART, size, text)


def within_cap(text: str) -> str:
    """A derivation's ``text`` as kept: whole when a record of it can be read back whole
    (DERIVED_CAP bytes), else its whole lines up to that, marked as read in part."""
    if len(text) <= DERIVED_CAP // 4 or len(text.encode("utf-8", "replace")) <= DERIVED_CAP:
        return text
    got = derived_read("", text)
    if not got.ok:
        return text[: DERIVED_CAP // 4]  # why a file was not understood: never this long
    # Room for the mark: the record stays within what is read back of it.
    read = got.data.encode("utf-8", "replace")[: DERIVED_CAP - 64]
    # The file's bytes it came from, when the extraction said; else how much of the text was.
    return in_part(int(got.detail) if got.truncated else len(read), read[: read.rfind(b"\n") + 1].decode("utf-8", "ignore"))


def derived_read(path: str, text: str) -> Read:
    """The outcome that a derivation's text (as an extraction returns it, a record or a cache
    entry holds it) stands for."""
    if text.startswith(NOT_UNDERSTOOD):
        return Read(path, ERROR, None, text[len(NOT_UNDERSTOOD) :], False)
    if text.startswith(READ_IN_PART):
        size, _, rest = text[len(READ_IN_PART) :].partition("\n")
        if size.isdigit() and size.isascii() and len(size) <= 20:
            return Read(path, OK, rest, size, True)
    return Read(path, OK, text, None, False)


def derived_text(got: Read) -> str:
    """The text a record keeps for the outcome ``got`` of a derivation: derived_read's inverse."""
    if not got.ok:
        return NOT_UNDERSTOOD + (got.detail or "")
    return in_part(int(got.detail), got.data) if got.truncated and got.detail else got.data


def derived_record(kind: str, path: str) -> str:
    """Where a tree keeps what ``kind`` found in the file at ``path`` (Host.derive)."""
    return "%s/derived/%s%s" % (MANIFEST_DIR, kind, lexical(path))


def lexical(path: str) -> str:
    """``path`` normal by its letters alone: ``..`` removes the part before it and stops at the
    root. Keys things kept about a path (derived records) so no spelling climbs out."""
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def _normal(path: str) -> str:
    """A target path in one spelling: absolute, no doubled or trailing slashes."""
    if path[:1] == "/" and "//" not in path and "/./" not in path and not path.endswith(("/", "/.")):
        return path  # already so: most paths are written that way
    parts = [part for part in path.split("/") if part and part != "."]
    return "/" + "/".join(parts)
