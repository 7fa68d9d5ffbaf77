"""Which processes run: a systemd unit's, from its cgroup (cgroup.procs), and, on a host or
container with few processes, every process by command name (/proc/PID/comm, proc(5)).

Reading every comm costs ~30 µs a process, and a big GPU server lists thousands (kernel
threads included), so the scan runs only where the list is short (limits: a container's own
PID namespace); services are found by their unit's cgroup instead, which is what
systemd itself counts as the unit's processes.
"""

from __future__ import annotations

from ai_doctor.facts import fact, unreadable
from ai_doctor.record import Record

# Past this many processes the comm scan is not run (see above).
SCAN_LIMIT = 512
# Where a unit's processes are listed: cgroup v2 (unified, alone or beside v1), the v1
# systemd named hierarchy, and v1's pids controller.
UNIT_CGROUPS = (
    "/sys/fs/cgroup/system.slice/%s/cgroup.procs",
    "/sys/fs/cgroup/unified/system.slice/%s/cgroup.procs",
    "/sys/fs/cgroup/systemd/system.slice/%s/cgroup.procs",
    "/sys/fs/cgroup/pids/system.slice/%s/cgroup.procs",
)


class Processes(Record):
    """``names``: pid → command name (comm, up to 15 characters) of every process, or None
    when the list was too long to scan (``count`` processes were listed); ``hidden``: pids
    whose comm could not be read; ``own``: this process's pid as the target sees it (None
    for a tree)."""

    __slots__ = ("names", "count", "hidden", "own")

    @property
    def scanned(self) -> bool:
        return self.names is not None

    def pids(self, *comms):
        """Pids running any of ``comms``, in pid order (empty when not scanned)."""
        wanted = set(comms)
        return tuple(pid for pid, name in (self.names or {}).items() if name in wanted)


@fact("processes")
def processes(host, facts):
    listing = host.listdir("/proc")
    if not listing.ok:
        return unreadable(host, listing, "the process list")
    pids = sorted(int(name) for name in listing.data if name.isdigit() and len(name) < 10)
    own = None
    if host.live:
        import os

        own = os.getpid()
    if len(pids) > SCAN_LIMIT:
        return Processes(None, len(pids), (), own)
    names = {}
    hidden = []
    for pid in pids:
        got = host.read_text("/proc/%d/comm" % pid, cap=256)
        if got.ok:
            names[pid] = got.data.rstrip("\n")
        elif not got.missing:  # a process that ended between listing and reading is just gone
            hidden.append(pid)
    return Processes(names, len(pids), tuple(hidden), own)


def unit_pids(host, unit: str):
    """(pids, path) of a systemd unit's processes (``nvidia-fabricmanager.service``) from its
    cgroup: an empty tuple when the unit's cgroup lists none or does not exist (not running),
    None when no cgroup hierarchy that would list it could be read (cannot tell)."""
    for pattern in UNIT_CGROUPS:
        path = pattern % unit
        got = host.read_text(path, cap=1 << 20)
        if got.ok:
            return tuple(int(word) for word in got.data.split() if word.isdigit()), path
        if got.missing and host.exists(path.rsplit("/", 2)[0]):
            # The slice is there and the unit's folder is not: systemd runs nothing for it.
            return (), path
    return None, UNIT_CGROUPS[0] % unit
