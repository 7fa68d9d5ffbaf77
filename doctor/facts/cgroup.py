"""The memory limit of the cgroup this process runs in (cgroup v2, or v1's memory controller).

The effective limit is the smallest along the path to the hierarchy's root
(Documentation/admin-guide/cgroup-v2.rst: memory.max, "max" when unset;
cgroup-v1/memory.rst: memory.limit_in_bytes, which reads back PAGE_COUNTER_MAX pages when
unset — 9223372036854771712 with 4 KiB pages, another number with 16 or 64 KiB pages).
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.record import Record

SELF_CGROUP = "/proc/self/cgroup"
# Anything this large is "no limit" whatever the page size (PAGE_COUNTER_MAX × page size).
UNLIMITED_FROM = 1 << 62


class CgroupMemory(Record):
    """The memory limit that applies to this process.

    ``limit`` is the smallest hard limit on the path in bytes (None: no limit), read at
    ``limit_path``; ``high`` the v2 throttle limit; ``usage`` the cgroup's current usage.
    """

    __slots__ = ("version", "path", "directory", "limit", "limit_path", "high", "high_path", "usage", "usage_path")


def parse_proc_cgroup(text: str):
    """/proc/PID/cgroup as (hierarchy id, controllers, path) triples; odd lines dropped."""
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        entries.append((parts[0], tuple(c for c in parts[1].split(",") if c), parts[2]))
    return entries


def _number(host, path: str):
    got = host.read_text(path, cap=4096)
    if not got.ok:
        return got, None
    text = got.data.strip()
    if text == "max":
        return got, None
    try:
        value = int(text.split()[0])
    except (ValueError, IndexError):
        return got, None
    return got, (None if value >= UNLIMITED_FROM else value)


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


def _walk(host, mountpoint: str, directory: str, filename: str):
    """The smallest limit from ``directory`` up to the mount point, and the file that set it."""
    best = None
    best_path = None
    current = directory
    while True:
        path = current.rstrip("/") + "/" + filename
        _got, value = _number(host, path)
        if value is not None and (best is None or value < best):
            best, best_path = value, path
        if current.rstrip("/") == mountpoint.rstrip("/") or current in ("/", ""):
            break
        current = current.rsplit("/", 1)[0] or "/"
    return best, best_path


@fact("cgroup_memory")
def cgroup_memory(host, facts):
    got = host.read_text(SELF_CGROUP, cap=65536)
    if not got.ok:
        return unreadable(host, got, "cannot read")
    entries = parse_proc_cgroup(got.data)
    mounts = facts.get("mounts")
    if not mounts:
        return Unavailable("cannot find cgroup mounts: " + mounts.reason)
    v1 = [e for e in entries if "memory" in e[1]]
    if v1:
        cgroup_path = v1[0][2]
        mount = next((m for m in mounts.mounts if m.fstype == "cgroup" and "memory" in m.super_options), None)
        if mount is None:
            return Unavailable("the memory controller (cgroup v1, %s) is not mounted" % cgroup_path)
        directory = _directory(mount, cgroup_path)
        limit, limit_path = _walk(host, mount.mountpoint, directory, "memory.limit_in_bytes")
        usage_path = directory + "/memory.usage_in_bytes"
        usage = _number(host, usage_path)[1]
        return CgroupMemory("v1", cgroup_path, directory, limit, limit_path, None, None, usage, usage_path)
    unified = [e for e in entries if e[0] == "0" and not e[1]]
    if not unified:
        return Unavailable("%s names no memory cgroup" % SELF_CGROUP)
    cgroup_path = unified[0][2]
    mount = next((m for m in mounts.mounts if m.fstype == "cgroup2"), None)
    if mount is None:
        return Unavailable("cgroup v2 is not mounted (path %s)" % cgroup_path)
    directory = _directory(mount, cgroup_path)
    limit, limit_path = _walk(host, mount.mountpoint, directory, "memory.max")
    high, high_path = _walk(host, mount.mountpoint, directory, "memory.high")
    usage_path = directory + "/memory.current"
    usage = _number(host, usage_path)[1]
    return CgroupMemory("v2", cgroup_path, directory, limit, limit_path, high, high_path, usage, usage_path)
