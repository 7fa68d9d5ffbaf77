"""udev rules that set a block device's I/O scheduler (udev(7)).

Rules files (``*.rules``) come from /etc/udev/rules.d, /run/udev/rules.d,
/usr/local/lib/udev/rules.d, /usr/lib/udev/rules.d and /lib/udev/rules.d; a name in an earlier
directory hides the same name in later ones, and all files run in lexicographic order of their
names, so for one device the last matching rule's ``ATTR{queue/scheduler}="…"`` wins.
"""

from __future__ import annotations

import re

from ai_doctor.facts import fact
from ai_doctor.record import Record

RULES_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d", "/usr/local/lib/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d")
# An assignment (=, :=), not a match (==, !=).
_SCHEDULER = re.compile(r'ATTR\{queue/scheduler\}\s*:?=\s*"([^"]*)"')
_KERNEL = re.compile(r'KERNEL\s*==\s*"([^"]*)"')


class SchedulerRule(Record):
    """A rules line that sets queue/scheduler: where, the value, the line as written."""

    __slots__ = ("path", "line", "value", "text")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def may_match(self, device: str) -> bool:
        """Whether the rule's KERNEL== patterns (fnmatch, ``|`` alternatives) admit ``device``;
        a rule without one may match any device."""
        import fnmatch

        patterns = _KERNEL.findall(self.text)
        return not patterns or any(fnmatch.fnmatchcase(device, alt) for pattern in patterns for alt in pattern.split("|"))


@fact("udev_scheduler_rules")
def udev_scheduler_rules(host, facts):
    chosen = {}
    for directory in RULES_DIRS:
        listing = host.listdir(directory)
        if listing.ok:
            for name in listing.data:
                if name.endswith(".rules") and name not in chosen:
                    chosen[name] = "%s/%s" % (directory, name)
    found = []
    for name in sorted(chosen):
        got = host.read_text(chosen[name], cap=1 << 20)
        if not got.ok or "queue/scheduler" not in got.data:
            continue
        for number, line in enumerate(got.data.splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            match = _SCHEDULER.search(line)
            if match:
                found.append(SchedulerRule(chosen[name], number, match.group(1), line.strip()))
    return tuple(found)
