"""The memory limits on the cgroup path of this process (cgroup v2, or v1's memory controller).

Every cgroup from this process's own up to the top of the mount can carry a limit, and each is
judged against the usage of the cgroup that carries it: memory.current "the total amount of
memory currently being used by the cgroup and its descendants" (Documentation/admin-guide/
cgroup-v2.rst), memory.usage_in_bytes with hierarchical accounting in v1 (cgroup-v1/memory.rst,
section 6). That usage includes page cache, which reclaim drops (clean) or writes back (dirty)
before the OOM killer acts: the file pages on the reclaim lists, memory.stat ``active_file`` +
``inactive_file`` in v2, whose memory.stat counts descendants too (``total_active_file`` +
``total_inactive_file``, "hierarchical version of <counter>", in v1). Not memory.stat ``file``:
it counts "tmpfs and shared memory" as well ("file ... including tmpfs and shared memory"), and
those pages are swap-backed: they sit on the anon lists ("shmem pages are on anon memory
management lists, inactive_foo + active_foo may not be equal to the value for the foo counter")
and only swap can take them, so the list counters are the page cache reclaim can free. It is
how MemAvailable counts the page cache of the whole machine (Documentation/filesystems/proc.rst).

Limits: v2 memory.max (hard: the OOM killer acts at it) and memory.high (throttle: "Going over
the high limit never invokes the OOM killer"), both "max" when unset; v1 memory.limit_in_bytes,
which reads back PAGE_COUNTER_MAX pages when unset (9223372036854771712 with 4 KiB pages,
another number with 16 or 64 KiB pages), and memory.stat ``hierarchical_memory_limit``, "memory
limit with regard to hierarchy": the effective limit, including ancestors above the mount.

OOM kills already seen: v2 memory.events ``oom_kill``, "the number of processes belonging to
this cgroup killed by any kind of OOM killer" (since Linux 4.13; since 5.2 it counts the
cgroup's descendants too, commit 9852ae3fe529, memory.events.local being the cgroup's own), and
v1 memory.oom_control's ``oom_kill`` line (4.13; a non-root cgroup's counts its descendants,
commit 04fd61a4e010). Read for every cgroup on the path, this process's first.
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.host import MISSING, OK
from ai_doctor.record import Record

SELF_CGROUP = "/proc/self/cgroup"
# Anything this large is "no limit" whatever the page size (PAGE_COUNTER_MAX × page size).
UNLIMITED_FROM = 1 << 62

MAX = "max"  # a hard limit: memory.max, memory.limit_in_bytes, hierarchical_memory_limit
HIGH = "high"  # v2 memory.high: throttling and reclaim above it, never the OOM killer
_UNSEEN = "a limit set there is not seen"
# The file pages on the reclaim lists (never tmpfs or shared memory, which sit on the anon lists).
V2_FILE_KEYS = ("inactive_file", "active_file")
V1_FILE_KEYS = ("total_inactive_file", "total_active_file")
# Where each version counts OOM kills.
OOM_FILES = {"v2": "memory.events", "v1": "memory.oom_control"}


class CgroupLimit(Record):
    """One limit on the path, with the usage of the cgroup that carries it.

    ``kind`` is :data:`MAX` or :data:`HIGH`; ``cgroup`` the cgroup's path as /proc/self/cgroup
    writes it (None for a v1 ``hierarchical_memory_limit`` set above what the mount shows);
    ``limit`` in bytes, read at ``path``; ``usage`` that cgroup's memory.current (v2) or
    memory.usage_in_bytes (v1), read at ``usage_path`` (for a limit above the mount: this
    process's cgroup's, a lower bound); ``reclaimable`` its page cache from memory.stat at
    ``stat_path``, the sum of ``reclaim_parts`` ((key, bytes) as read there). None where a file
    could not be read (the fact's ``notes`` say why).
    """

    __slots__ = ("kind", "cgroup", "limit", "path", "usage", "usage_path", "reclaimable", "stat_path", "reclaim_parts")
    _defaults = {"reclaim_parts": ()}

    @property
    def working_set(self):
        """Usage less the page cache reclaim frees before the OOM killer acts (file pages on
        the reclaim lists, never tmpfs or shared memory); all of the usage when memory.stat was
        unreadable."""
        if self.usage is None:
            return None
        return max(self.usage - (self.reclaimable or 0), 0)

    @property
    def headroom(self):
        """What the limit leaves for a new allocation; None when the usage is unknown."""
        used = self.working_set
        return None if used is None else self.limit - used


class OomKills(Record):
    """How many processes the OOM killer has ended in ``cgroup`` (and, on kernels that count
    them there, its descendants) since it was made: ``count``, read at ``path``."""

    __slots__ = ("cgroup", "count", "path")


class CgroupMemory(Record):
    """The memory limits that apply to this process.

    ``limits``: every limit on the path as :class:`CgroupLimit`, this process's cgroup first,
    each with the usage of the cgroup that carries it. ``oom_kills``: :class:`OomKills` for each
    cgroup on the path whose counter could be read, this process's first. ``notes``: files that
    could not be read or understood, as "path (outcome: what that costs)".
    """

    __slots__ = ("version", "path", "directory", "limits", "notes", "oom_kills")
    _defaults = {"limits": (), "notes": (), "oom_kills": ()}

    def killed(self, limited=()):
        """The OOM kills that concern this process: its own cgroup's if any, else those of the
        nearest cgroup above it that carries a limit (``limited``: their paths); None if none."""
        own = self.path.rstrip("/") or "/"
        for kills in self.oom_kills:
            if kills.count and (kills.cgroup == own or kills.cgroup in limited):
                return kills
        return None

    @property
    def hard(self):
        """The smallest hard limit (memory.max, memory.limit_in_bytes), or None."""
        return _smallest(self.limits, MAX)

    @property
    def limit(self):
        return self.hard.limit if self.hard else None

    @property
    def limit_path(self):
        return self.hard.path if self.hard else None


def parse_proc_cgroup(text: str):
    """/proc/PID/cgroup as (hierarchy id, controllers, path) triples; odd lines dropped."""
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        entries.append((parts[0], tuple(c for c in parts[1].split(",") if c), parts[2]))
    return entries


def parse_memory_stat(text: str):
    """A flat-keyed memory.stat as {key: int}; lines without a number are left out."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return values


def _limit_value(value: int):
    return None if value >= UNLIMITED_FROM else value


class _Reader:
    """Reads through the Host once per file, and notes each file it could not use and what
    that costs the judgement."""

    def __init__(self, host):
        self.host = host
        self._reads = {}
        self._notes = {}  # path -> [outcome, consequences]

    def note(self, path: str, outcome: str, why: str) -> None:
        entry = self._notes.setdefault(path, [outcome, []])
        if why not in entry[1]:
            entry[1].append(why)

    @property
    def notes(self):
        return tuple("%s (%s: %s)" % (path, outcome, ", and ".join(whys)) for path, (outcome, whys) in self._notes.items())

    def _read(self, path: str, cap: int, why, missing_matters: bool):
        got = self._reads.get(path)
        if got is None:
            got = self._reads[path] = self.host.read_text(path, cap=cap)
        if why and got.status != OK and (got.status != MISSING or missing_matters):
            self.note(got.path, got.describe(), why)
        return got

    def number(self, path: str, why=None, missing_matters: bool = False):
        """A single-number file as (bytes, or None for no limit or no value; its read)."""
        got = self._read(path, 4096, why, missing_matters)
        if not got.ok:
            return None, got
        text = got.data.strip()
        if text == "max":
            return None, got
        try:
            return _limit_value(int(text.split()[0])), got
        except (ValueError, IndexError):
            if why:
                self.note(path, "not a number: %r" % text[:40], why)
            return None, got

    def stat(self, directory: str, why: str):
        """memory.stat of one cgroup as ({key: int} or None, its path)."""
        got = self._read(directory + "/memory.stat", 65536, why, True)
        return (parse_memory_stat(got.data) if got.ok else None), got.path

    def usage(self, directory: str, usage_file: str, file_keys):
        """(usage, its path, page cache, memory.stat path, the (key, bytes) it is the sum of) of
        a cgroup that has a limit; ``file_keys`` names the inactive and active file counters."""
        usage, got = self.number(directory + "/" + usage_file, "what its limit leaves is not known", True)
        why = "its page cache is counted as in use"
        stat, stat_path = self.stat(directory, why)
        if stat is None:
            return usage, got.path, None, stat_path, ()
        parts = tuple((key, stat[key]) for key in file_keys if key in stat)
        if not parts:
            self.note(stat_path, "no %s" % " or ".join(file_keys), why)
            return usage, got.path, None, stat_path, ()
        return usage, got.path, sum(value for _, value in parts), stat_path, parts

    def oom_kills(self, path: str):
        """The ``oom_kill`` count in a flat-keyed file (memory.events, memory.oom_control), or
        None where it cannot be read or has no such line (kernels before 4.13)."""
        got = self._read(path, 4096, None, False)
        if not got.ok:
            return None
        return parse_memory_stat(got.data).get("oom_kill")


def _smallest(levels, kind: str):
    found = [level for level in levels if level.kind == kind]
    return min(found, key=lambda level: level.limit) if found else None


def _directory(mount, cgroup_path: str) -> str:
    """Where ``cgroup_path`` lies under ``mount``; the mount root is the path it shows."""
    root = mount.root.rstrip("/")
    if cgroup_path == root or cgroup_path.startswith(root + "/"):
        rel = cgroup_path[len(root) :]
    else:
        # A cgroup namespace or a bind-mounted subtree: the mount point is this cgroup.
        rel = ""
    rel = rel.rstrip("/")
    return mount.mountpoint.rstrip("/") + rel if rel else mount.mountpoint


def _path_up(mount, cgroup_path: str, directory: str):
    """(directory, cgroup path) from this process's cgroup up to the mount point."""
    top = mount.mountpoint.rstrip("/")
    current, cgroup = directory.rstrip("/"), cgroup_path.rstrip("/") or "/"
    while True:
        yield current or "/", cgroup
        if current == top or not current:
            return
        current = current.rsplit("/", 1)[0]
        cgroup = cgroup.rsplit("/", 1)[0] or "/"


def _limits_v2(reader, mount, cgroup_path: str, directory: str):
    levels = []
    for current, cgroup in _path_up(mount, cgroup_path, directory):
        for kind, name in ((MAX, "memory.max"), (HIGH, "memory.high")):
            # Absent limit files mean no limit there (the root cgroup has none).
            value, got = reader.number(current + "/" + name, _UNSEEN)
            if value is not None:
                usage, usage_path, reclaimable, stat_path, parts = reader.usage(current, "memory.current", V2_FILE_KEYS)
                levels.append(CgroupLimit(kind, cgroup, value, got.path, usage, usage_path, reclaimable, stat_path, parts))
    return levels


def _limits_v1(reader, mount, cgroup_path: str, directory: str):
    levels = []
    for current, cgroup in _path_up(mount, cgroup_path, directory):
        value, got = reader.number(current + "/memory.limit_in_bytes", _UNSEEN)
        if value is not None:
            usage, usage_path, reclaimable, stat_path, parts = reader.usage(current, "memory.usage_in_bytes", V1_FILE_KEYS)
            levels.append(CgroupLimit(MAX, cgroup, value, got.path, usage, usage_path, reclaimable, stat_path, parts))
    # A limit tighter than every visible one belongs to an ancestor above the mount (a container
    # sees only its own cgroup); its usage is not visible, so this cgroup's stands in for it.
    stat, stat_path = reader.stat(directory, "a limit set above the mount is not seen")
    hierarchical = _limit_value(stat["hierarchical_memory_limit"]) if stat and "hierarchical_memory_limit" in stat else None
    if hierarchical is not None and all(hierarchical < level.limit for level in levels):
        usage, usage_path, reclaimable, _, parts = reader.usage(directory, "memory.usage_in_bytes", V1_FILE_KEYS)
        levels.append(CgroupLimit(MAX, None, hierarchical, stat_path, usage, usage_path, reclaimable, stat_path, parts))
    return levels


@fact("cgroup_memory")
def cgroup_memory(host, facts):
    got = host.read_text(SELF_CGROUP, cap=65536)
    if not got.ok:
        return unreadable(host, got, "cannot read")
    entries = parse_proc_cgroup(got.data)
    mounts = facts.get("mounts")
    if not mounts:
        return Unavailable("cannot find cgroup mounts: " + mounts.reason)
    reader = _Reader(host)
    outside = next((e[2] for e in entries if any(part in (".", "..") for part in e[2].split("/"))), None)
    if outside is not None:
        # A cgroup namespace shows cgroups outside its own root as /../…: not visible from here.
        return Unavailable("%s places this process at %s, outside the cgroups this namespace can see" % (SELF_CGROUP, outside))
    v1 = [e for e in entries if "memory" in e[1]]
    if v1:
        version, cgroup_path = "v1", v1[0][2]
        mount = next((m for m in mounts.mounts if m.fstype == "cgroup" and "memory" in m.super_options), None)
        if mount is None:
            return Unavailable("the memory controller (cgroup v1, %s) is not mounted" % cgroup_path)
        directory = _directory(mount, cgroup_path)
        levels = _limits_v1(reader, mount, cgroup_path, directory)
    else:
        unified = [e for e in entries if e[0] == "0" and not e[1]]
        if not unified:
            return Unavailable("%s names no memory cgroup" % SELF_CGROUP)
        version, cgroup_path = "v2", unified[0][2]
        mount = next((m for m in mounts.mounts if m.fstype == "cgroup2"), None)
        if mount is None:
            return Unavailable("cgroup v2 is not mounted (path %s)" % cgroup_path)
        directory = _directory(mount, cgroup_path)
        levels = _limits_v2(reader, mount, cgroup_path, directory)
    return CgroupMemory(
        version,
        cgroup_path,
        directory,
        tuple(levels),
        reader.notes,
        _oom_kills(reader, mount, cgroup_path, directory, version),
    )


def _oom_kills(reader, mount, cgroup_path: str, directory: str, version: str):
    """The OOM kill counters on the path, this process's cgroup first (the root cgroup has no
    memory.events; a missing counter is left out)."""
    found = []
    for current, cgroup in _path_up(mount, cgroup_path, directory):
        path = current.rstrip("/") + "/" + OOM_FILES[version]
        count = reader.oom_kills(path)
        if count is not None:
            found.append(OomKills(cgroup, count, path))
    return tuple(found)
