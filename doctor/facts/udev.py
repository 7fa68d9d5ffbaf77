"""udev rules that set a block device's I/O scheduler (udev(7)).

Rules files (``*.rules``) come from /etc/udev/rules.d, /run/udev/rules.d,
/usr/local/lib/udev/rules.d, /usr/lib/udev/rules.d and /lib/udev/rules.d; a name in an earlier
directory hides the same name in later ones, and all files run in lexicographic (byte) order of
their names, so for one device the last matching rule's ``ATTR{queue/scheduler}="…"`` wins. A
symbolic link is ordered by its own name, not its target's; names starting with a dot are ignored.
"""

from __future__ import annotations

import re

from ai_doctor.facts import fact
from ai_doctor.record import Record

RULES_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d", "/usr/local/lib/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d")
# An assignment (=, :=), not a match (==, !=).
_SCHEDULER = r'ATTR\{queue/scheduler\}\s*:?=\s*"([^"]*)"'
_KERNEL = r'KERNEL\s*==\s*"([^"]*)"'
# RUN+="… echo VALUE | tee /sys/block/PATTERN/queue/scheduler …" (the rule storage.scheduler writes).
_RUN_WRITE = r"echo ([a-z][a-z0-9_-]*) \| tee /sys/block/([^/\s'\"]+)/queue/scheduler"


class SchedulerRule(Record):
    """A rules line that sets queue/scheduler: where, the value, the line as written.
    ``pattern``: a RUN+= that writes the value to /sys/block/PATTERN/queue/scheduler itself
    (for devices that get no events of their own, such as hidden NVMe multipath paths)."""

    __slots__ = ("path", "line", "value", "text", "pattern")
    _defaults = {"pattern": None}

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def may_match(self, device: str) -> bool:
        """Whether the rule's KERNEL== patterns (fnmatch, ``|`` alternatives) admit ``device``;
        a rule without one may match any device."""
        import fnmatch

        if self.pattern is not None:
            return fnmatch.fnmatchcase(device, self.pattern)
        patterns = re.findall(_KERNEL, self.text)
        return not patterns or any(fnmatch.fnmatchcase(device, alt) for pattern in patterns for alt in pattern.split("|"))


# Characters a file name may keep unquoted in a shell command; "~" is the highest in ASCII.
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+,=@%~-")
_PREFIXES = ("60-", "99-", "99-zz-", "zz-")


def name_after(names, base: str):
    """A rules file name ending in ``base`` (``x.rules``) that sorts strictly after every name in
    ``names``, so udev runs it last; only shell-safe characters. None when no ASCII name can."""
    names = list(names)
    for prefix in _PREFIXES:
        if all(name < prefix + base for name in names):
            return prefix + base
    top = max(names)
    stem = top[: -len(".rules")] if top.endswith(".rules") else top
    plain = 0
    while plain < len(stem) and stem[plain] in _PLAIN:
        plain += 1
    # Put "~" at the last place where the top name has a lower character: greater from there on.
    for index in range(plain, -1, -1):
        if index < len(top) and top[index] < "~":
            return top[:index] + "~" + base
    return None


@fact("udev_scheduler_rules")
def udev_scheduler_rules(host, facts):
    chosen = {}
    for directory in RULES_DIRS:
        listing = host.listdir(directory)
        if listing.ok:
            for name in listing.data:
                if name.endswith(".rules") and not name.startswith(".") and name not in chosen:
                    chosen[name] = "%s/%s" % (directory, name)
    found = []
    for name in sorted(chosen):
        got = host.read_text(chosen[name], cap=1 << 20)
        if not got.ok or "queue/scheduler" not in got.data:
            continue
        for number, line in enumerate(got.data.splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            match = re.search(_SCHEDULER, line)
            if match:
                found.append(SchedulerRule(chosen[name], number, match.group(1), line.strip()))
            run = re.search(_RUN_WRITE, line) if "RUN" in line else None
            if run:
                found.append(SchedulerRule(chosen[name], number, run.group(1), line.strip(), run.group(2)))
    return tuple(found)
