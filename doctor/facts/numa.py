"""NUMA: the memory nodes this machine has, and automatic NUMA balancing.

Documentation/admin-guide/sysctl/kernel.rst (numa_balancing): 0 off, 1 normal balancing, 2
memory tiering (the values OR together); the file exists only when the kernel is built with
CONFIG_NUMA_BALANCING.
"""

from __future__ import annotations

from ai_doctor.facts import fact, unreadable
from ai_doctor.facts.sysctl import sysctl_int
from ai_doctor.record import Record
from ai_doctor.units import parse_cpu_list

NODES_ONLINE = "/sys/devices/system/node/online"
NUMA_BALANCING = "/proc/sys/kernel/numa_balancing"


class Numa(Record):
    """Online memory nodes (a tuple of numbers), and kernel.numa_balancing (None: the kernel
    has no such setting) with the file it was read from."""

    __slots__ = ("nodes", "balancing", "path")


@fact("numa")
def numa(host, facts):
    got = host.read_text(NODES_ONLINE, cap=4096)
    if not got.ok:
        return unreadable(host, got, "cannot read")
    nodes = parse_cpu_list(got.data)
    balancing = host.read_text(NUMA_BALANCING, cap=4096)
    if balancing.missing:
        return Numa(nodes, None, NUMA_BALANCING)
    if not balancing.ok:
        return unreadable(host, balancing, "cannot read")
    return Numa(nodes, sysctl_int(balancing.data), NUMA_BALANCING)
