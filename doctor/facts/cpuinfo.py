"""The CPUs: how many are online and which model they are, for the host overview.

/sys/devices/system/cpu/online lists the online CPUs in the kernel's list format
(Documentation/ABI/testing/sysfs-devices-system-cpu). /proc/cpuinfo names the model in each
CPU's block: ``model name`` on x86, ``cpu`` on POWER, ``uarch`` on RISC-V; arm64 gives only
ids (``CPU implementer``, ``CPU part``), shown as read rather than looked up. Only the first
block is needed, so the read stops early: the kernel formats /proc/cpuinfo as it is read, and
on x86 each CPU's block asks that CPU for its clock.
"""

from __future__ import annotations

from ai_doctor.facts import fact, unreadable
from ai_doctor.record import Record
from ai_doctor.units import whole_number

ONLINE = "/sys/devices/system/cpu/online"
CPUINFO = "/proc/cpuinfo"
# The first CPU's block, however many flags it lists, is well inside this.
CPUINFO_CAP = 16384
# The line that names the model, by architecture, in the order tried.
_MODEL_KEYS = ("model name", "cpu", "uarch", "cpu model")


class Cpus(Record):
    """``count``: online CPUs (None: not known, ``count_reason`` says why); ``model``: the
    first CPU's model as /proc/cpuinfo writes it (None: ``model_reason`` says why)."""

    __slots__ = ("count", "count_reason", "model", "model_reason")


def count_cpus(text: str) -> int:
    """How many CPUs a kernel CPU list (``0-3,8``) names, each once; bad parts are dropped.
    Counted from the ranges, never expanded: a hostile list cannot make it large."""
    ranges = []
    for part in text.strip().split(","):
        low, _, high = part.strip().partition("-")
        first = whole_number(low)
        last = whole_number(high) if high else first
        if first is not None and last is not None and first <= last:
            ranges.append((first, last))
    count, reached = 0, -1
    for first, last in sorted(ranges):
        if last > reached:
            count += last - max(first, reached + 1) + 1
            reached = last
    return count


def parse_model(text: str):
    """The model named in the first CPU's block of /proc/cpuinfo, or None."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    for key in _MODEL_KEYS:
        if fields.get(key):
            return fields[key]
    implementer, part = fields.get("cpu implementer"), fields.get("cpu part")
    if implementer and part:
        return "CPU implementer %s, part %s" % (implementer, part)
    return None


@fact("cpus")
def cpus(host, facts):
    got = host.read_text(ONLINE, cap=4096)
    count, count_reason = None, None
    if got.ok:
        count = count_cpus(got.data) or None
        if not count:
            text = got.data.strip()
            count_reason = "%s lists no CPU: %r" % (ONLINE, text[:40]) if text else "%s is empty" % ONLINE
    else:
        count_reason = unreadable(host, got, "cannot read").reason
    got = host.read_text(CPUINFO, cap=CPUINFO_CAP)
    model, model_reason = None, None
    if got.ok:
        model = parse_model(got.data)
        model_reason = None if model else "%s names no model" % CPUINFO
    else:
        model_reason = unreadable(host, got, "cannot read").reason
    return Cpus(count, count_reason, model, model_reason)
