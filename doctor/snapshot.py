"""Snapshots: what the checks read on a host, written as a tree that replays identically.

The tree has the target's files at their paths, links as links, and ``/.aidoctor/manifest.json``
for what files cannot carry: who took it, and the outcomes (permission denied, I/O errors)
of reads that failed. ``aidoctor --root TREE`` analyses it; fixtures use the same layout. The
tree is laid out in memory from the Host's log first (:class:`_Layout`), then written as a
folder or straight into an archive (``aidoctor --snapshot FILE`` reads it back from memory).
"""

from __future__ import annotations

import json
import os
import stat
import time

from ai_doctor import __version__
from ai_doctor.host import (
    DENIED,
    ERROR,
    MANIFEST,
    MANIFEST_DIR,
    NOT_REGULAR,
    Host,
    Refused,
    derived_record,
    derived_text,
    in_metadata,
    resolve_inside,
)

FORMAT = 1


def capture(root: str = "/", argv=(), env=None):
    """Read everything any check could read; returns the Host holding the log. ``env``: the
    environment that says where model caches live (Request.env), for a live host."""
    from ai_doctor.model import Request
    from ai_doctor.nextboot import simulate

    host = Host(root, trace_links=True)
    # A size larger than any host makes every memory check read all it can.
    request = Request(
        model_size=1 << 60, size_text="1E", size_source="snapshot", described="snapshot", argv=tuple(argv), env=dict(env or {})
    )
    _read_everything(host, request)
    # And what --next-boot reads beyond that (the boot entry's kernel, files the simulated boot
    # leaves as they are), so a replay with it judges what the host would.
    booted = simulate(host, request)
    if booted is not host:
        _read_everything(booted, request)
        # The files the simulation wrote itself are not the host's.
        host.log.extend(entry for entry in booted.log if entry[1] not in booted.files)
    return host


def _read_everything(host, request) -> None:
    """Every fact, then every check, on ``host``: all it logs is what a run can read."""
    from ai_doctor import engine
    from ai_doctor.facts import PROVIDERS, Facts

    facts = Facts(host, request)
    for name in sorted(PROVIDERS):
        facts.get(name)
    engine.run(facts, engine.select())


def manifest_for(host, argv=()) -> dict:
    from ai_doctor.facts import Facts

    facts = Facts(host)
    hostname, release = facts.get("hostname"), facts.get("release")
    return {
        "format": FORMAT,
        "aidoctor": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": hostname if isinstance(hostname, str) else None,
        "kernel": release if isinstance(release, str) else None,
        "uid": host.euid,
        # Where the tree was read: what an image's fixes name when replayed from the archive.
        "root": host.root,
        "argv": list(argv),
        "outcomes": {},
    }


def write_tree(host, destination: str, manifest: dict) -> int:
    """Write what ``host`` logged under ``destination`` (which must not exist, in a directory
    that does); returns the number of entries written.

    Paths come from the tree (a modules.dep entry, a boot entry's version), so each is resolved
    as the Host resolved it, with ``..`` stopping at the root, and placed in a tree held in
    memory that nothing can be placed through (:class:`_Layout`); that is written through folder
    descriptors that never follow a link: nothing lands outside ``destination``. A path that
    cannot be placed is recorded in the manifest as such, so a replay says it was not kept.
    """
    layout, written = _laid_out(host, manifest)
    out = _Writer(destination)
    try:
        out.write(layout)
    finally:
        out.close()
    return written


def write_archive(host, destination: str, manifest: dict) -> int:
    """Write what ``host`` logged as a snapshot archive at ``destination`` (.tar.gz), straight
    from memory: member for member what :func:`write_tree` and ``archive.pack`` of that folder
    write. Returns the member count."""
    from ai_doctor import archive
    from ai_doctor.tree import umask

    layout, _written = _laid_out(host, manifest)
    mask = umask()
    # The modes the files and folders written would have: what a new one gets, less the umask.
    modes = {bytes: 0o644 & ~mask, str: 0o777, type(None): 0o755 & ~mask}
    members = ((path[1:], modes[type(content)] if mode is None else mode, content) for path, content, mode in layout.ordered())
    return archive.write(members, destination)


def _laid_out(host, manifest: dict):
    """The snapshot tree of what ``host`` logged, in memory, and the number of entries its
    reads and listings made (the manifest and the folders on the way not counted)."""
    links = {}
    for kind, path, got in host.log:
        if kind == "link" and got.data:
            links[path] = got.data
    out = _Layout()
    outcomes = {}
    cut = set()  # files larger than the read cap: the snapshot holds the part read
    contents = {}  # target → (bytes, truncated, path as read)
    listed = []
    stats = []
    written = 0
    for kind, path, got in host.log:
        if "\x00" in path:
            # No file system holds such a name; the Host refused it, and so does a replay.
            continue
        if kind.startswith("derived:"):
            written += _derived(out, kind.split(":", 1)[1], path, got, outcomes)
            continue
        if got.failed and got.detail == NOT_REGULAR and host.entry_kind(path)[0] == "dir":
            # A folder read as a file: the folder replays it, an outcome would cover it whole.
            written += _folder_for(out, path, links, outcomes)
            continue
        if got.failed:
            outcomes[path] = got.status if got.denied else (got.detail or got.status)
            continue
        if not got.ok or path == "/":
            continue
        # A link itself sits at its own path; what was read through one lives at its target.
        target = _through(path, links, follow_last=kind != "link")
        try:
            if target is None or in_metadata(target):
                raise _Unplaceable()
            if kind == "file":
                # A file read twice with different caps is kept as its longest read.
                data = got.data.encode("utf-8") if isinstance(got.data, str) else got.data
                if target not in contents or len(data) > len(contents[target][0]):
                    contents[target] = (data, got.truncated, path)
            elif kind == "link" and got.data:
                written += out.link(target, got.data)
            elif kind == "dir":
                written += out.folder(target)
                listed.extend((path.rstrip("/") + "/" + name, target.rstrip("/") + "/" + name) for name in got.data)
            elif kind == "stat":
                stats.append((target, got.data))
        except _Unplaceable:
            outcomes[path] = NOT_KEPT
    for target, (data, truncated, path) in contents.items():
        try:
            written += out.file(target, data)
        except _Unplaceable:
            outcomes[path] = NOT_KEPT
        if truncated:
            cut.add(path)
    # After the reads: a stat must not leave an empty stand-in where a file's content belongs,
    # and the mode it saw (rc.local's executable bit) goes onto the file written.
    for target, info in stats:
        try:
            written += out.folder(target) if info.is_dir else out.file(target, b"")
            if not info.is_dir:
                out.chmod(target, stat.S_IMODE(info.mode))
        except _Unplaceable:
            pass  # its folder holds something else: what was read there wins
    # Names that were listed but never read get an empty stand-in of their kind, last, so a
    # stand-in never takes the place of a file that was read. A name already placed needs no
    # look at what it is (the folders it was read through could be searched).
    for path, entry in listed:
        if in_metadata(entry) or entry in out.kinds:
            continue
        try:
            written += _placeholder(out, host, path, entry, outcomes)
        except _Unplaceable:
            pass
    manifest = dict(manifest, outcomes=dict(sorted(outcomes.items())))
    if cut:
        manifest["truncated"] = sorted(cut)
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    out.folder(MANIFEST_DIR)
    out.file(MANIFEST, text.encode("utf-8"), replace=True)
    return out, written


# What a replay reads for a path the snapshot could not place (a link loop recorded twice
# differently, a name the tree's own folders cannot hold).
NOT_KEPT = "ENOENT: not kept in the snapshot (its path could not be placed inside it)"


def _derived(out, kind: str, path: str, got, outcomes: dict) -> int:
    """What was found in a file is kept, not the file. One that was there but not understood
    (not ELF, a FIFO in its place) replays as that, not as absent."""
    if got.denied:
        outcomes[path] = got.status
        return 0
    if not (got.ok or got.status == ERROR):
        return 0
    text = derived_text(got)
    try:
        return out.file(derived_record(kind, path), text.encode("utf-8"))
    except _Unplaceable:
        outcomes[path] = NOT_KEPT
        return 0


def _folder_for(out, path: str, links: dict, outcomes: dict) -> int:
    target = _through(path, links)
    try:
        if target is None or in_metadata(target):
            raise _Unplaceable()
        return out.folder(target)
    except _Unplaceable:
        outcomes[path] = NOT_KEPT
        return 0


def _through(path: str, links: dict, follow_last: bool = True):
    """``path`` with the recorded links along it resolved, as the Host resolved it (the tree
    holds their targets); None for a loop."""
    try:
        return resolve_inside(path, lambda here: links.get(here, ""), follow_last)
    except Refused:
        return None


def _placeholder(out, host, path: str, entry: str, outcomes: dict) -> int:
    """A listed name that nothing read: recreate its kind (empty), so listings replay the same."""
    kind, target = host.entry_kind(path)
    if kind == DENIED:
        # Listed, but its folder could not be searched: the name replays, and so does the refusal.
        outcomes.setdefault(path, DENIED)
        return out.file(entry, b"")
    if kind == "dir":
        return out.folder(entry)
    if kind == "link":
        return out.link(entry, target)
    if kind == "file":
        return out.file(entry, b"")
    return 0


class _Unplaceable(Exception):
    """A path the snapshot cannot hold: not normal, or through something that is not a folder."""


_ABSENT = object()
# The longest name of one file or folder (NAME_MAX), in bytes; UTF-8 takes at most 4 a character.
_NAME_MAX = 255


class _Layout:
    """The snapshot tree in memory, placed as on disk: a place already taken is left alone (0
    written); a path that is not normal, holds a name no file system can (NUL, or longer than
    NAME_MAX), or would pass through a link or a file raises _Unplaceable. ``kinds``: path → None
    for a folder, the bytes of a file, or the target (str) of a link; ``modes``: the mode a stat
    saw, for a file that has one."""

    def __init__(self):
        self.kinds = {"/": None}
        self.names = {"/": []}
        self.modes = {}

    def _parent(self, path: str) -> None:
        """Make the folders above ``path`` as needed."""
        parts = path.split("/")[1:]
        if not path.startswith("/") or not all(parts) or any(p in (".", "..") or "\x00" in p for p in parts):
            raise _Unplaceable()
        try:
            if any(len(part) > _NAME_MAX // 4 and len(os.fsencode(part)) > _NAME_MAX for part in parts):
                raise _Unplaceable()
        except UnicodeError:
            raise _Unplaceable() from None
        here = ""
        for part in parts[:-1]:
            here += "/" + part
            kind = self.kinds.get(here, _ABSENT)
            if kind is _ABSENT:
                self._add(here, None)
            elif kind is not None:
                # A link or a file where a folder would go: this tree's reads disagreed.
                raise _Unplaceable()

    def _add(self, path: str, content) -> int:
        folder, _, name = path.rpartition("/")
        self.names[folder or "/"].append(name)
        self.kinds[path] = content
        if content is None:
            self.names[path] = []
        return 1

    def file(self, path: str, data: bytes, replace: bool = False) -> int:
        self._parent(path)
        if path not in self.kinds:
            return self._add(path, data)
        if not replace:
            return 0
        if self.kinds[path] is None:
            raise IsADirectoryError(21, os.strerror(21), path)
        self.kinds[path] = data
        self.modes.pop(path, None)
        return 1

    def link(self, path: str, target: str) -> int:
        if "\x00" in target:
            raise _Unplaceable()
        self._parent(path)
        return 0 if path in self.kinds else self._add(path, target)

    def folder(self, path: str) -> int:
        if path == "/":
            return 0
        self._parent(path)
        return 0 if path in self.kinds else self._add(path, None)

    def chmod(self, path: str, mode: int) -> None:
        """The mode a stat saw, onto a file placed here (never a link or a folder)."""
        self._parent(path)
        if isinstance(self.kinds.get(path), bytes):
            self.modes[path] = mode

    def folders(self):
        """(folder, [(name, content, mode or None) of what it holds]) in the order archive.pack
        writes a folder: a folder's folders, then its other names, each sorted, then each of
        those folders' own in turn, depth first."""
        kinds, pending = self.kinds, ["/"]
        while pending:
            folder = pending.pop()
            prefix = folder.rstrip("/") + "/"
            names = self.names[folder]
            folders = sorted(name for name in names if kinds[prefix + name] is None)
            others = sorted(name for name in names if kinds[prefix + name] is not None)
            yield folder, [(name, kinds[prefix + name], self.modes.get(prefix + name)) for name in folders + others]
            pending.extend(prefix + name for name in reversed(folders))

    def ordered(self):
        """(path, content, mode or None) of every entry but the root, in :meth:`folders`' order."""
        for folder, entries in self.folders():
            prefix = folder.rstrip("/") + "/"
            for name, content, mode in entries:
                yield prefix + name, content, mode


class _Writer:
    """Writes a :class:`_Layout` under a new folder through descriptors: each folder opened from
    the top, name by name with O_NOFOLLOW, and what it holds made there exclusively, so nothing
    is written through a link, whether the snapshot holds it or it was planted meanwhile (that
    stops the writing with an error) and nothing lands outside the folder."""

    _DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    _FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(self, destination: str):
        os.mkdir(destination)
        self.fd = os.open(destination, self._DIR)

    def close(self) -> None:
        os.close(self.fd)

    def _opened(self, folder: str) -> int:
        fd = os.dup(self.fd)
        for part in folder.split("/")[1:] if folder != "/" else ():
            try:
                child = os.open(part, self._DIR, dir_fd=fd)
            finally:
                os.close(fd)
            fd = child
        return fd

    def write(self, layout) -> None:
        """Every entry of ``layout``, folder by folder (each opened once)."""
        for folder, entries in layout.folders():
            fd = self._opened(folder)
            try:
                for name, content, mode in entries:
                    if content is None:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    elif isinstance(content, str):
                        os.symlink(content, name, dir_fd=fd)
                    else:
                        with os.fdopen(os.open(name, self._FILE, 0o644, dir_fd=fd), "wb") as stream:
                            stream.write(content)
                            if mode is not None:
                                # The mode a stat saw, as it was (no umask).
                                os.fchmod(stream.fileno(), mode)
            finally:
                os.close(fd)
