"""Mounts as this process sees them: /proc/self/mountinfo (proc(5)), else /proc/mounts."""

from __future__ import annotations

import re

from ai_doctor.facts import fact, unreadable
from ai_doctor.record import Record

MOUNTINFO = "/proc/self/mountinfo"
MOUNTS = "/proc/mounts"


class Mount(Record):
    """One mount: the mounted subtree (``root``), where, what and with which options."""

    __slots__ = ("root", "mountpoint", "fstype", "source", "options", "super_options")

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes.
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str):
    mounts = []
    notes = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            dash = fields.index("-", 6)
            root, mountpoint, options = fields[3], fields[4], fields[5]
            fstype, source = fields[dash + 1], fields[dash + 2]
            super_options = fields[dash + 3] if len(fields) > dash + 3 else ""
        except (ValueError, IndexError):
            notes.append("line %d not understood: %r" % (number, line[:80]))
            continue
        mounts.append(
            Mount(
                _unescape(root),
                _unescape(mountpoint),
                fstype,
                _unescape(source),
                frozenset(options.split(",")),
                frozenset(super_options.split(",")),
            )
        )
    return mounts, notes


def parse_mounts(text: str):
    """/proc/mounts (fstab format): no mount roots, so ``root`` is always ``/``."""
    mounts = []
    notes = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4:
            notes.append("line %d not understood: %r" % (number, line[:80]))
            continue
        options = frozenset(fields[3].split(","))
        mounts.append(Mount("/", _unescape(fields[1]), fields[2], _unescape(fields[0]), options, options))
    return mounts, notes


class Mounts(Record):
    """The mount table, in kernel order (later mounts stack over earlier ones)."""

    __slots__ = ("mounts", "source", "notes")

    def at(self, mountpoint: str):
        """The mount visible at exactly ``mountpoint`` (the last one stacked there), or None."""
        found = None
        for mount in self.mounts:
            if mount.mountpoint == mountpoint:
                found = mount
        return found

    def covering(self, path: str):
        """The mount that holds ``path``: the longest mount point that is a prefix of it."""
        best = None
        for mount in self.mounts:
            point = mount.mountpoint.rstrip("/") + "/"
            if (path + "/").startswith(point) and (best is None or len(mount.mountpoint) >= len(best.mountpoint)):
                best = mount
        return best


@fact("mounts")
def mounts(host, facts):
    got = host.read_text(MOUNTINFO)
    if got.ok:
        parsed, notes = parse_mountinfo(got.data)
        return Mounts(tuple(parsed), MOUNTINFO, tuple(notes))
    fallback = host.read_text(MOUNTS)
    if fallback.ok:
        parsed, notes = parse_mounts(fallback.data)
        return Mounts(tuple(parsed), MOUNTS, tuple(notes))
    return unreadable(host, got, "cannot read")
