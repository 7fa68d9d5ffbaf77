"""sysfsutils: the /sys attributes Debian's sysfsutils writes at every boot.

update-sysfs (Debian's sysfsutils, /etc/init.d/sysfsutils before 2.1.1-7) reads /etc/sysfs.conf,
then /etc/sysfs.d/*.conf in name order; each ``attribute = value`` line writes ``value`` to
every path ``/sys/attribute`` globs to, a later line winning; ``mode attribute = …`` and
``owner attribute = …`` change permissions only; ``#`` starts a comment (sysfs.conf(5)).

What runs it at boot: from 2.1.1-7 (Debian 13) a native sysfsutils.service, wanted by
multi-user.target and started only where /etc/sysfs.conf exists (ConditionPathExists); before
(Debian 12) the init script, which systemd-sysv-generator turns into a unit where
``update-rc.d`` left its /etc/rc[2-5].d/S* links, and sysvinit runs directly.
"""

from __future__ import annotations

import fnmatch

from ai_doctor.facts import fact
from ai_doctor.facts.system import masked
from ai_doctor.record import Record

SYSFS_CONF = "/etc/sysfs.conf"
SYSFS_DIR = "/etc/sysfs.d"
INIT_SCRIPT = "/etc/init.d/sysfsutils"
UPDATE_SYSFS = "/usr/sbin/update-sysfs"
UNIT = "sysfsutils.service"
UNIT_FILES = (
    "/etc/systemd/system/sysfsutils.service",
    "/usr/lib/systemd/system/sysfsutils.service",
    "/lib/systemd/system/sysfsutils.service",
)
WANTED = "/etc/systemd/system/multi-user.target.wants/sysfsutils.service"
_RUNLEVELS = ("/etc/rc2.d", "/etc/rc3.d", "/etc/rc4.d", "/etc/rc5.d")
# An attribute path longer than this, or with more parts, is no sysfs attribute worth matching.
_MAX_ATTR = 512


class SysfsSetting(Record):
    """One ``attribute = value`` line: the file and line, the attribute (a glob under /sys, as
    written), the value, and the line exactly as the file has it."""

    __slots__ = ("path", "line", "attr", "value", "raw")

    @property
    def where(self) -> str:
        return "%s:%d" % (self.path, self.line)

    def matches(self, sys_path: str) -> bool:
        """Whether the glob names ``sys_path`` (/sys/…): part by part, as glob(7) never lets
        ``*`` cross a slash."""
        if not sys_path.startswith("/sys/"):
            return False
        # /sys/kernel//mm names what /sys/kernel/mm does.
        wanted = [part for part in self.attr.split("/") if part]
        parts = [part for part in sys_path[len("/sys/") :].split("/") if part]
        return len(wanted) == len(parts) and all(fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, wanted))


class SysfsConf(Record):
    """The settings, in the order update-sysfs writes them, and whether boot runs it
    (``applies``) with words saying how that was told."""

    __slots__ = ("settings", "applies", "how")

    def last(self, *sys_paths: str):
        """The setting written last at boot to any of ``sys_paths`` (names of one attribute, such
        as a policy's scaling_governor and its CPUs' cpuN/cpufreq links), or None (nothing
        writes it, or sysfsutils does not run)."""
        found = None
        for setting in self.settings if self.applies else ():
            if any(setting.matches(path) for path in sys_paths):
                found = setting
        return found


def parse_sysfs_conf(text: str, path: str, shell: bool = False):
    """(the ``attribute = value`` lines of one file, and the number of a line that stops
    update-sysfs, or None). Permission lines are skipped. Both readers exit at a line that is
    no assignment, leaving every later line and file unwritten. ``shell``: sysfsutils before
    2.1.1-7, whose init script reads lines with sh: a value with a blank is such a line, and a
    CR before the newline stays in the value, which the kernel then refuses."""
    blanks = " \t\f\v" if shell else None
    found = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.split("#", 1)[0].strip(blanks)
        if not line:
            continue
        attr, sep, value = line.partition("=")
        words, value = attr.split(), value.strip(blanks)
        if not sep or not words or not value:
            return found, number
        if words[0] in ("mode", "owner"):
            continue
        if len(words) > 1 or (shell and (" " in value or "\t" in value)):
            return found, number
        if len(words[0]) <= _MAX_ATTR:
            found.append(SysfsSetting(path, number, words[0], value, raw))
    return found, None


@fact("sysfs_conf")
def sysfs_conf(host, facts):
    files = []
    conf = host.read_text(SYSFS_CONF, cap=1 << 20)
    if conf.ok:
        files.append((SYSFS_CONF, conf.data))
    listing = host.listdir(SYSFS_DIR)
    for name in listing.data if listing.ok else ():
        if name.endswith(".conf"):
            got = host.read_text("%s/%s" % (SYSFS_DIR, name), cap=1 << 20)
            if got.ok:
                files.append(("%s/%s" % (SYSFS_DIR, name), got.data))
    if not files:
        return SysfsConf((), False, "no sysfs.conf setting")
    # 2.1.1-7 reads the files with its Perl update-sysfs; before, the init script read them with sh.
    shell = not host.exists(UPDATE_SYSFS)
    settings, stopped = [], None
    for path, text in files:
        found, line = parse_sysfs_conf(text, path, shell)
        settings += found
        if line is not None:
            stopped = "%s:%d" % (path, line)
            break
    applies, how = _runs_at_boot(host, conf.ok)
    if stopped and applies:
        how += "; it stops at %s, which is no assignment, and writes nothing after it" % stopped
    return SysfsConf(tuple(settings), applies and bool(settings), how)


def _runs_at_boot(host, has_conf: bool):
    """(whether sysfsutils writes the settings at boot, how that was told)."""
    if masked(host, UNIT):
        return False, "sysfsutils.service is masked"
    unit = next((path for path in UNIT_FILES if host.exists(path)), None)
    if unit is not None:
        if not host.exists(WANTED):
            return False, "%s is not enabled (no %s)" % (UNIT, WANTED)
        if not has_conf:
            return False, "%s starts only where %s exists (ConditionPathExists), and it does not" % (UNIT, SYSFS_CONF)
        return True, "%s is enabled (%s)" % (UNIT, WANTED)
    if host.exists(INIT_SCRIPT):
        for folder in _RUNLEVELS:
            listing = host.listdir(folder)
            for name in listing.data if listing.ok else ():
                if name.startswith("S") and name.endswith("sysfsutils"):
                    return True, "%s runs at boot (%s/%s)" % (INIT_SCRIPT, folder, name)
        return False, "%s has no start link in /etc/rc[2-5].d (update-rc.d sysfsutils disable)" % INIT_SCRIPT
    return False, "sysfsutils is not installed: nothing reads %s at boot" % SYSFS_CONF
