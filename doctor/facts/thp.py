"""Transparent huge pages: the mode of each control, what the kernel sets at boot, and what in
user space writes the modes afterwards.

Documentation/admin-guide/mm/transhuge.rst, "Global THP controls": since Linux 6.8 every THP
size has its own ``hugepages-<size>kB/enabled`` (always, inherit, madvise, never). The
top-level ``enabled`` only applies to sizes set to ``inherit``; by default that is the PMD size
(2 MiB on x86-64), and every other size is ``never``. "Boot parameters": the kernel command line
sets the top-level default with ``transparent_hugepage=`` and the per-size defaults with
``thp_anon=`` (6.12+).
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.facts.cmdline import memparse
from ai_doctor.facts.dropins import dropin_files
from ai_doctor.facts.memory import parse_choice
from ai_doctor.facts.system import masked
from ai_doctor.record import Record
from ai_doctor.units import whole_number

THP_DIR = "/sys/kernel/mm/transparent_hugepage"
NO_THP = "this kernel has no transparent huge pages"
TOP_MODES = ("always", "madvise", "never")
SIZE_MODES = ("always", "inherit", "madvise", "never")
# The Kconfig choice behind the top-level default when the command line says nothing
# (CONFIG_TRANSPARENT_HUGEPAGE_NEVER exists since 6.8).
KCONFIG_DEFAULTS = (
    ("CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS", "always"),
    ("CONFIG_TRANSPARENT_HUGEPAGE_MADVISE", "madvise"),
    ("CONFIG_TRANSPARENT_HUGEPAGE_NEVER", "never"),
)


class Control(Record):
    """One ``enabled`` file: where, the active mode, and the modes it offers in file order."""

    __slots__ = ("path", "mode", "choices")

    @property
    def shown(self) -> str:
        """The file's text as the kernel prints it, the active mode in brackets."""
        return " ".join("[%s]" % c if c == self.mode else c for c in self.choices)


class THP(Record):
    """Anonymous transparent huge pages.

    ``top`` is the top-level control; ``sizes`` maps a page size in bytes to its per-size
    control (empty before 6.8); ``pmd_size`` is the PMD-mapped size in bytes (None when unknown).
    """

    __slots__ = ("top", "sizes", "pmd_size")

    def mode(self, size) -> str:
        """The mode that applies to ``size``: its own, or the top-level one where it inherits."""
        control = self.sizes.get(size)
        if control is None or control.mode == "inherit":
            return self.top.mode
        return control.mode

    @property
    def pmd(self):
        """The PMD size's own control, or None (before 6.8)."""
        return self.sizes.get(self.pmd_size)

    @property
    def pmd_mode(self) -> str:
        return self.mode(self.pmd_size)

    def others_on(self):
        """(size, mode) of the sizes other than PMD that are not ``never``, smallest first."""
        return tuple((size, self.mode(size)) for size in sorted(self.sizes) if size != self.pmd_size and self.mode(size) != "never")


@fact("thp")
def thp(host, facts):
    path = THP_DIR + "/enabled"
    got = host.read_text(path)
    if not got.ok:
        if got.status == "missing" and host.exists("/sys/kernel/mm"):
            return Unavailable("%s (no %s)" % (NO_THP, THP_DIR))
        return unreadable(host, got, "cannot read")
    mode, choices = parse_choice(got.data)
    if mode not in TOP_MODES:
        return Unavailable("%s holds no known mode: %r" % (path, got.data.strip()[:80]))
    top = Control(path, mode, choices)
    sizes = {}
    listing = host.listdir(THP_DIR)
    for name in listing.data if listing.ok else ():
        size = _dir_size(name)
        if size is None:
            continue
        size_path = "%s/%s/enabled" % (THP_DIR, name)
        got = host.read_text(size_path)
        # A size without an anonymous ``enabled`` (shmem-only sizes) or with an odd one is left out.
        if got.ok:
            mode, choices = parse_choice(got.data)
            if mode in SIZE_MODES:
                sizes[size] = Control(size_path, mode, choices)
    pmd_size = None
    if sizes:
        got = host.read_text(THP_DIR + "/hpage_pmd_size")
        if got.ok:
            pmd_size = whole_number(got.data)
        if pmd_size not in sizes:
            # Anonymous THP sizes run up to the PMD size, so the largest is it.
            pmd_size = max(sizes)
    return THP(top, sizes, pmd_size)


def _dir_size(name: str):
    """``hugepages-2048kB`` → 2097152; None for other names."""
    if not (name.startswith("hugepages-") and name.endswith("kB")):
        return None
    digits = name[len("hugepages-") : -2]
    kib = whole_number(digits) if digits == digits.strip() else None
    return kib * 1024 if kib else None


# -- what the kernel sets at boot ----------------------------------------------------------


class BootModes(Record):
    """The modes the kernel starts with, before user space writes anything.

    ``top`` is the top-level mode (None: unknown) and ``top_source`` (path, text, line) says where it
    comes from; ``sizes`` maps size → mode from ``thp_anon=`` (None when the command line has
    none, so the PMD size inherits and other sizes are ``never``); ``thp_anon`` lists the
    ``thp_anon=`` texts that were applied.
    """

    __slots__ = ("top", "top_source", "sizes", "thp_anon")

    def size_mode(self, size, pmd_size) -> str:
        if self.sizes is None:
            return "inherit" if size == pmd_size else "never"
        return self.sizes.get(size, "never")

    def mode(self, size, pmd_size):
        """The mode ``size`` gets at boot; None when it inherits an unknown top-level mode."""
        own = self.size_mode(size, pmd_size)
        return self.top if own == "inherit" else own


def boot_modes(cmdline, kconfig, sizes) -> BootModes:
    """What ``transparent_hugepage=``, ``thp_anon=`` and the build default set at boot.

    ``cmdline`` and ``kconfig`` may be Unavailable; ``sizes`` are the THP sizes the kernel
    offers (bytes), which ``thp_anon=`` ranges cover.
    """
    top = source = None
    params = cmdline.params if cmdline else ()
    for index, param in enumerate(params):
        # setup_transparent_hugepage() ignores unknown words; the last valid one wins.
        if param.name == "transparent_hugepage" and param.value in TOP_MODES:
            path, line = cmdline.origin(index)
            top, source = param.value, (path, param.text, line)
    if top is None and kconfig:
        for option, mode in KCONFIG_DEFAULTS:
            if kconfig.get(option) == "y":
                top, source = mode, (kconfig.source, "%s=y" % option, None)
    modes = None
    applied = []
    if sizes:
        for param in params:
            if param.name == "thp_anon" and param.value is not None:
                parsed = parse_thp_anon(param.value, sizes, modes)
                if parsed is not None:
                    modes = parsed
                    applied.append(param.text)
    return BootModes(top, source, modes, tuple(applied))


def parse_thp_anon(value: str, sizes, before=None):
    """Apply one ``thp_anon=16K-64K:always;2M:inherit`` to ``before`` (size → mode), as
    setup_thp_anon() does: sizes it does not name keep their mode (``never`` on the first one),
    and a parameter with any bad size or mode is ignored whole (None)."""
    modes = dict(before) if before is not None else {size: "never" for size in sizes}
    for token in value.split(";"):
        ranges, sep, mode = token.partition(":")
        if not sep or mode not in SIZE_MODES:
            return None
        for part in ranges.split(","):
            start_text, dash, end_text = part.partition("-")
            start = memparse(start_text)
            end = memparse(end_text) if dash else start
            if start not in sizes or end not in sizes or start > end:
                return None
            for size in sizes:
                if start <= size <= end:
                    modes[size] = mode
    return modes


def format_thp_anon(modes) -> str:
    """size → mode as one ``thp_anon=`` value; ``never`` sizes are left out (implied)."""
    groups = []
    for mode in ("always", "madvise", "inherit"):
        chosen = [size for size in sorted(modes) if modes[size] == mode]
        if chosen:
            groups.append("%s:%s" % (",".join("%dK" % (size // 1024) for size in chosen), mode))
    return ";".join(groups)


# -- what writes the modes after boot ------------------------------------------------------


class Writer(Record):
    """A line on the target that writes a THP mode after boot.

    ``kind`` is ``tuned``, ``systemd`` or ``rc.local``; ``targets`` holds ``top`` and/or
    ``size`` for the top-level and per-size controls it writes (empty: could not tell). For
    tuned, ``section``, its ``plugin`` (``type=``, else the section's name) and ``key`` are the
    profile's (``vm``, ``vm``, ``transparent_hugepages``) and ``value`` what it sets.
    """

    __slots__ = ("kind", "path", "line", "text", "targets", "section", "plugin", "key", "value", "last", "raw_lines")
    _defaults = {"section": None, "plugin": None, "key": None, "value": None, "last": None, "raw_lines": ()}


class Writers(Record):
    """``found``: the writers, in the order they were looked for."""

    __slots__ = ("found",)


SYSTEMD_DIR = "/etc/systemd/system"
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
# Names of units written to turn THP off (MongoDB's documented one is
# disable-transparent-huge-pages.service); a unit named otherwise is not opened.
_UNIT_HINTS = ("thp", "hugepage", "huge-page", "huge_page", "transparent")


def _enabled_units(host):
    """(name, unit file) of the services enabled through a .wants folder of /etc/systemd/system
    whose names suggest THP; a unit that is only installed does not run at boot."""
    found = {}
    top = host.listdir(SYSTEMD_DIR)
    for folder in top.data if top.ok else ():
        if not folder.endswith(".wants"):
            continue
        listing = host.listdir("%s/%s" % (SYSTEMD_DIR, folder))
        for name in listing.data if listing.ok else ():
            if (
                name.endswith(".service")
                and any(hint in name.lower() for hint in _UNIT_HINTS)
                and name not in found
                and not masked(host, name)
            ):
                # The unit file as systemd finds it: /etc first, then the vendor folders.
                wanted = "%s/%s/%s" % (SYSTEMD_DIR, folder, name)
                found[name] = next((d + "/" + name for d in UNIT_DIRS if host.exists(d + "/" + name)), wanted)
    return sorted(found.items())


@fact("thp_writers")
def thp_writers(host, facts):
    """Cheap places that set THP at boot: the active tuned profile, enabled systemd units named
    for THP, systemd-tmpfiles lines, Debian's sysfsutils, rc.local. Anything else (configuration management, a
    node tuning operator) is not looked for."""
    found = []
    profile = facts.get("tuned_profile")
    tuned = facts.get("tuned")
    # A profile applies only where tuned starts at boot (or runs now).
    if profile and tuned and tuned.enabled:
        cmdline = facts.get("cmdline")
        # tuned's vm plugin leaves THP alone when the kernel command line sets it.
        boot_set = bool(cmdline) and any(p.name == "transparent_hugepage" for p in cmdline.params)
        # What tuned certainly writes here, the last instance of a plugin winning; a section it
        # may skip (its uname_regex or cpuinfo_regex not known) is left to the rule to word.
        decisions = [] if boot_set else [profile.decide("vm", "transparent_hugepages")]
        sysfs = profile.plugin("sysfs") + [s for s, _why in profile.uncertain if s.plugin == "sysfs"]
        decisions += [profile.decide("sysfs", key) for key in dict.fromkeys(s.key for s in sysfs if _sets_thp("sysfs", s.key))]
        for decision in decisions:
            setting = decision.setting
            if decision.known and setting is not None and setting.value == "never":
                targets = ("top",) if setting.plugin == "vm" else _targets(setting.key)
                found.append(
                    Writer(
                        "tuned",
                        setting.path,
                        setting.line,
                        setting.text,
                        targets,
                        setting.section,
                        setting.plugin,
                        setting.key,
                        setting.value,
                    )
                )
    for name, path in _enabled_units(host):
        unit = host.read_text(path, cap=65536)
        text = unit.data if unit.ok else ""
        # A "hugepages" unit may only reserve a hugetlb pool; "thp" in the name is clear enough.
        if ("transparent_hugepage" in text and "never" in text) or ("thp" in name.lower() and "transparent_hugepage" not in text):
            line, shown = _first_line(text, (("transparent_hugepage", "enabled"), ("ExecStart",)))
            found.append(Writer("systemd", path, line, shown or name, _targets(shown or "")))
    found += _tmpfiles_writers(host, facts.get("running"))
    found += _sysfsutils_writers(facts.get("sysfs_conf"))
    rc = facts.get("rc_local")
    for number, last, line in _logical_lines(rc.lines if rc else ()):
        # ``enabled`` only: writing never to ``defrag`` leaves THP on. A line boot never
        # reaches writes nothing (persist.rc-local-ineffective says so).
        if all(word in line for word in ("transparent_hugepage", "enabled", "never")) and not line.startswith("#") and rc.runs(number):
            found.append(Writer("rc.local", rc.path, number, line, _targets(line), last=last, raw_lines=rc.lines[number - 1 : last]))
    return Writers(tuple(found))


def _logical_lines(lines):
    """(first and last line number, text) of each command line, a trailing backslash joining
    the next."""
    pending, start = [], None
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if start is None:
            start = number
        if text.endswith("\\"):
            pending.append(text[:-1].strip())
            continue
        pending.append(text)
        yield start, number, " ".join(part for part in pending if part)
        pending, start = [], None
    if pending:
        yield start, len(lines), " ".join(part for part in pending if part)


TMPFILES_DIRS = ("/etc/tmpfiles.d", "/run/tmpfiles.d", "/usr/lib/tmpfiles.d")


def _tmpfiles_writers(host, running):
    """systemd-tmpfiles ``w`` lines writing never to a THP control at boot (tmpfiles.d(5)); a
    name in /etc hides the same name in /usr/lib, and an image's /run is empty at boot."""
    found = []
    for _name, path in dropin_files(host, [d for d in TMPFILES_DIRS if running or not d.startswith("/run/")]):
        got = host.read_text(path, cap=1 << 20)
        # Lines as sed numbers them: at newlines only.
        for number, raw in enumerate(got.data.split("\n") if got.ok else (), 1):
            fields = raw.split()
            if len(fields) >= 7 and fields[0].rstrip("!-") in ("w", "w+") and fields[1].startswith(THP_DIR + "/"):
                if fields[1].endswith("/enabled") and " ".join(fields[6:]) == "never":
                    found.append(Writer("tmpfiles", path, number, raw.strip(), _targets(fields[1]), raw_lines=(raw,)))
    return found


def _sysfsutils_writers(conf):
    """sysfs.conf lines (Debian's sysfsutils) writing never to a THP ``enabled`` control, where
    boot runs update-sysfs; a later line of the same control wins (doctor/facts/sysfsconf.py)."""
    if not conf or not conf.applies:
        return []
    found = []
    for path in [THP_DIR + "/enabled"] + [setting.attr for setting in conf.settings if "/hugepages-" in setting.attr]:
        control = path if path.startswith("/sys/") else "/sys/" + path.strip("/")
        if not (control.startswith(THP_DIR + "/") and control.endswith("/enabled")):
            continue
        setting = conf.last(control)
        if setting is not None and setting.value == "never" and all(w.line != setting.line or w.path != setting.path for w in found):
            found.append(Writer("sysfsutils", setting.path, setting.line, setting.raw.strip(), _targets(control), raw_lines=(setting.raw,)))
    return found


def _sets_thp(kind: str, key: str) -> bool:
    if kind == "vm":
        return key in ("transparent_hugepages", "transparent_hugepage")
    return kind == "sysfs" and key.startswith(THP_DIR + "/") and key.endswith("/enabled")


def _targets(text: str):
    """Which controls a line names: the top-level ``enabled``, per-size ones, or both."""
    targets = []
    if THP_DIR + "/enabled" in text:
        targets.append("top")
    if THP_DIR + "/hugepages-" in text:
        targets.append("size")
    return tuple(targets)


def _first_line(text: str, choices):
    """The first uncommented line holding every word of a choice, trying the choices in order."""
    for words in choices:
        for number, raw in enumerate(text.splitlines(), 1):
            if all(word in raw for word in words) and not raw.lstrip().startswith("#"):
                return number, raw.strip()
    return None, None
