"""Sysctls: the runtime values in /proc/sys and the persistent configuration applied at boot.

The persistent configuration is merged as systemd-sysctl does (sysctl.d(5)): ``*.conf`` files
from /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d and /lib/sysctl.d;
a file name in an earlier directory hides the same name in later ones (a link to /dev/null
masks it); all files are applied in lexicographic order of their names, whatever their
directory; the last assignment of a key wins. systemd-sysctl does not read /etc/sysctl.conf
itself: distributions link it in as /etc/sysctl.d/99-sysctl.conf. Where there is no
systemd-sysctl, the procps boot scripts run ``sysctl --system``, which applies /etc/sysctl.conf
last.
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.facts.dropins import dropin_files
from ai_doctor.host import READ_CAP, join_link
from ai_doctor.record import Record

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"
# Where dpkg keeps a changed conffile it removes (dpkg-maintscript-helper(1) rm_conffile): Debian's
# procps 2:4.0.4-7 (trixie) removes /etc/sysctl.conf on upgrade.
SYSCTL_CONF_BACKUP = SYSCTL_CONF + ".dpkg-bak"
SYSTEMD_SYSCTL = ("/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl")

# Runtime keys the checks read (Documentation/admin-guide/sysctl/vm.rst); each costs a read.
RUNTIME_KEYS = (
    "vm.overcommit_memory",
    "vm.overcommit_ratio",
    "vm.overcommit_kbytes",
    "vm.admin_reserve_kbytes",
    "vm.user_reserve_kbytes",
)
# The reserves' defaults are their usual ceilings (8 MiB and 128 MiB; smaller on tiny hosts).
DEFAULTS = {
    "vm.overcommit_memory": "0",
    "vm.overcommit_ratio": "50",
    "vm.overcommit_kbytes": "0",
    "vm.nr_hugepages": "0",
    "vm.admin_reserve_kbytes": "8192",
    "vm.user_reserve_kbytes": "131072",
}


_SWAP = str.maketrans("/.", "./")


def key_path(key: str) -> str:
    """``vm.nr_hugepages`` → ``/proc/sys/vm/nr_hugepages`` (``eth0/100`` → ``eth0.100``)."""
    return "/proc/sys/" + key.translate(_SWAP)


def normal_key(key: str) -> str:
    """A key in its dotted spelling; sysctl.d(5) also accepts ``vm/nr_hugepages``.

    When the first separator is a slash, slashes and dots swap (``net/ipv4/conf/eth0.100/x`` is
    ``net.ipv4.conf.eth0/100.x``), as systemd and procps both do.
    """
    slash, dot = key.find("/"), key.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return key.translate(_SWAP)
    return key


class RuntimeSysctl(Record):
    """Runtime values by key (text as the kernel prints it) and each key's read outcome."""

    __slots__ = ("values", "outcomes")

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def int(self, key: str, default=None):
        number = sysctl_int(self.values.get(key))
        return default if number is None else number


def sysctl_int(value):
    """A one-number sysctl value as the kernel's integer parser takes it (decimal, optional
    sign), or None: "2 garbage", other scripts' digits and several lines are not a number."""
    text = str(value).strip() if value is not None else ""
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
        return None
    return int(text)


@fact("sysctl")
def runtime_sysctl(host, facts):
    values = {}
    outcomes = {}
    for key in RUNTIME_KEYS:
        got = host.read_text(key_path(key))
        outcomes[key] = got
        if got.ok:
            values[key] = " ".join(got.data.split())
    if not values:
        got = outcomes["vm.overcommit_memory"]
        return unreadable(host, got, "cannot read")
    return RuntimeSysctl(values, outcomes)


class Assignment(Record):
    """One ``key = value`` line: where it is (file, 1-based line), how it was written, and
    ``origin``, the path in a sysctl directory it was reached by (a link's own path when
    ``path`` is the link's target); ``raw`` is the line exactly as the file has it, which an
    edit checks before it comments the line out."""

    __slots__ = ("key", "value", "path", "line", "text", "ignore_failure", "origin", "raw")
    _defaults = {"origin": None, "raw": None}

    @property
    def name(self) -> str:
        """The file name that orders it at boot: the link's own name, not its target's."""
        return (self.origin or self.path).rsplit("/", 1)[-1]

    @property
    def where(self) -> str:
        return "%s:%d" % (self.path, self.line)


class SysctlConfig(Record):
    """The persistent sysctl configuration in the order it is applied at boot.

    ``files`` lists the files applied, in order; ``skipped`` lists (path, reason) for files
    that exist but are not applied at boot; ``assignments`` is every assignment in application
    order; ``manual`` holds the assignments of an /etc/sysctl.conf that boot skips but
    ``sysctl --system`` and ``sysctl -p`` still apply (procps reads it last); ``renamed``
    those of an /etc/sysctl.conf.dpkg-bak left where /etc/sysctl.conf is gone, which nothing
    reads.
    """

    __slots__ = ("applier", "files", "assignments", "skipped", "notes", "manual", "renamed")
    _defaults = {"manual": (), "renamed": ()}

    def effective(self, key: str):
        """The assignment that wins for ``key`` (the last), or None."""
        found = None
        for item in self.assignments:
            if item.key == key:
                found = item
        return found

    def all(self, key: str):
        return [item for item in self.assignments if item.key == key]


def parse_sysctl_file(text: str, path: str, origin=None):
    """Assignments and notes from one sysctl.d file, as systemd-sysctl reads it; ``origin`` is
    the path it was reached by when that is a link to ``path``."""
    origin = origin or path
    assignments = []
    notes = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        ignore = key.startswith("-")
        key = key[1:] if ignore else key
        key = key.strip()
        if not sep or not key:
            notes.append("%s:%d: not an assignment, ignored at boot: %r" % (path, number, line[:80]))
            continue
        assignments.append(Assignment(normal_key(key), value.strip(), path, number, line, ignore, origin, raw))
    return assignments, notes


@fact("sysctl_config")
def sysctl_config(host, facts):
    container = facts.get("container")
    if container and container.detected and facts.get("running"):
        # vm.* and most other sysctls are not namespaced: boot of the host applies the host's files.
        return Unavailable("inside a container: its own sysctl files are never applied to the kernel it shares with %s" % container.where)
    systemd = any(host.exists(path) for path in SYSTEMD_SYSCTL)
    running = facts.get("running")
    # /run is a fresh tmpfs at boot: what an image holds there is never read.
    chosen = dict(dropin_files(host, [d for d in SYSCTL_DIRS if running or not d.startswith("/run/")]))
    files = []
    skipped = []
    assignments = []
    notes = []
    reached_conf = False
    for name in sorted(chosen):
        path = origin = chosen[name]
        link = host.readlink(path)
        if link.data == "/dev/null":
            skipped.append((path, "masked: a link to /dev/null"))
            continue
        got = host.read_text(path)
        if link.data:
            # Evidence and edits name the file itself: `sed -i` on the link would replace it.
            path = join_link(path, link.data)
            reached_conf = reached_conf or path == SYSCTL_CONF
        if not got.ok:
            notes.append("%s: %s" % (path, got.describe()))
            continue
        parsed, file_notes = parse_sysctl_file(got.data, path, origin)
        if got.truncated:
            file_notes.append("%s: larger than %d MiB; only its first part was read" % (path, READ_CAP >> 20))
        files.append(path)
        assignments.extend(parsed)
        notes.extend(file_notes)
    conf = host.read_text(SYSCTL_CONF)
    manual = ()
    if conf.ok and not reached_conf:
        if systemd:
            manual = tuple(parse_sysctl_file(conf.data, SYSCTL_CONF)[0])
            skipped.append(
                (
                    SYSCTL_CONF,
                    (
                        "systemd-sysctl does not read it at boot (no link to it in /etc/sysctl.d); "
                        "only `sysctl -p` or `sysctl --system` apply it"
                    ),
                )
            )
        else:
            parsed, file_notes = parse_sysctl_file(conf.data, SYSCTL_CONF)
            files.append(SYSCTL_CONF)
            assignments.extend(parsed)
            notes.extend(file_notes)
    elif conf.failed:
        notes.append("%s: %s" % (SYSCTL_CONF, conf.describe()))
    renamed = ()
    if conf.missing and systemd:
        backup = host.read_text(SYSCTL_CONF_BACKUP)
        if backup.ok:
            renamed = tuple(parse_sysctl_file(backup.data, SYSCTL_CONF_BACKUP)[0])
    if not files and not skipped and not host.exists("/etc"):
        return Unavailable("no /etc in %s" % host.display("/"))
    applier = "systemd-sysctl" if systemd else "sysctl --system"
    return SysctlConfig(applier, tuple(files), tuple(assignments), tuple(skipped), tuple(notes), manual, renamed)


class Setting(Record):
    """The value that governs a key, and where it was read (a /proc/sys file, a config file and
    line, or the kernel default)."""

    __slots__ = ("key", "value", "path", "line")

    @property
    def int(self):
        return sysctl_int(self.value)

    def evidence(self):
        from ai_doctor.model import Evidence

        return Evidence(self.path, "%s = %s" % (self.key, self.value), self.line)


def governing(config, runtime, key: str) -> Setting:
    """The running kernel's value when it could be read, else what boot would set, else the
    kernel default."""
    if runtime:
        value = runtime.get(key)
        if value is not None:
            return Setting(key, value, key_path(key), None)
    if config:
        item = config.effective(key)
        if item is not None:
            return Setting(key, item.value, item.path, item.line)
    return Setting(key, DEFAULTS.get(key), "kernel default", None)


def loader_reserves(runtime) -> int:
    """Bytes strict overcommit keeps from a model loader (mm/util.c __vm_enough_memory):
    vm.admin_reserve_kbytes (it rarely has CAP_SYS_ADMIN) + vm.user_reserve_kbytes. An
    unreadable or odd value counts as the kernel default."""
    total = 0
    for key in ("vm.admin_reserve_kbytes", "vm.user_reserve_kbytes"):
        value = governing(None, runtime, key).int
        total += (value if value is not None and value >= 0 else int(DEFAULTS[key])) * 1024
    return total


def commit_room(runtime, mem):
    """What strict overcommit lets a loader commit where the running kernel enforces it
    (vm.overcommit_memory = 2): CommitLimit − Committed_AS less the reserves closed to it;
    else None."""
    if not runtime or runtime.int("vm.overcommit_memory") != 2 or "CommitLimit" not in mem or "Committed_AS" not in mem:
        return None
    return mem.get("CommitLimit") - mem.get("Committed_AS") - loader_reserves(runtime)


def commit_limit(mem, pool_bytes: int, ratio: int, kbytes: int):
    """CommitLimit for a ratio/kbytes pair (mm/util.c vm_commit_limit): kbytes, else the RAM
    left after ``pool_bytes`` of huge pages times ratio / 100; plus swap. None where meminfo
    does not say how much RAM there is."""
    if not mem or "MemTotal" not in mem:
        return None
    base = kbytes * 1024 if kbytes else max(mem.get("MemTotal") - pool_bytes, 0) * ratio // 100
    return base + mem.get("SwapTotal", 0)


def commit_change(runtime, pool_bytes: int) -> int:
    """How much CommitLimit moves when ``pool_bytes`` of huge pages leave (or, negative, join)
    the pool: the pool is taken out of RAM before the ratio applies (mm/util.c
    vm_commit_limit); with overcommit_kbytes set, not at all."""
    if not runtime or runtime.int("vm.overcommit_kbytes"):
        return 0
    return pool_bytes * runtime.int("vm.overcommit_ratio", 50) // 100


@fact("sysctl_configured_runtime")
def sysctl_configured_runtime(host, facts):
    """The running kernel's value of every key the persistent configuration sets (one plain
    key each; globs and keys the kernel lacks are left out), whitespace-normalised."""
    config = facts.get("sysctl_config")
    if not facts.get("running"):
        return Unavailable("an image: no running kernel to compare the configuration with")
    if not config:
        return Unavailable("no persistent sysctl configuration to compare the running kernel with")
    values = {}
    asked = set()
    listings = {}  # folder → its names, so keys the kernel lacks cost no read (a file may set 100,000)
    for item in config.assignments:
        key = item.key
        if key in asked or "*" in key or "?" in key:
            continue
        asked.add(key)
        path = key_path(key)
        folder, name = path.rsplit("/", 1)
        if folder not in listings:
            listing = host.listdir(folder)
            # A folder that is not there holds no key; one that cannot be listed is read key by key.
            listings[folder] = frozenset(listing.data) if listing.ok else frozenset() if listing.missing else None
        if listings[folder] is not None and name not in listings[folder]:
            continue
        got = host.read_text(path, cap=65536)
        if got.ok:
            values[key] = " ".join(got.data.split())
    return values


_QUIET_SUFFIXES = (" || true", " || :", " 2>&1", " >/dev/null", " > /dev/null", " 2>/dev/null", " 2> /dev/null", " &>/dev/null")


def sysctl_writes(line: str):
    """The (key, value) settings one simple shell line makes, as tuning guides write them into
    rc.local: ``sysctl [-w] [-q] [-e] KEY=VALUE…``, ``echo VALUE > /proc/sys/PATH`` and
    ``echo VALUE | [sudo] tee [-a] /proc/sys/PATH…``; None for any other line (loops,
    expansions, several commands)."""
    import shlex

    # Output thrown away and failures ignored (`>/dev/null`, `|| true`) change nothing written.
    end, trimmed = len(line), True
    while trimmed:  # by index: a line of a million `|| true` is cut in one pass, not copied each time
        trimmed = False
        for suffix in _QUIET_SUFFIXES:
            if line.endswith(suffix, 0, end):
                end, trimmed = end - len(suffix), True
                while end and line[end - 1] in " \t":
                    end -= 1
    line = line[:end]
    if any(char in line for char in ";&`$(){}<\\") or line.count("|") > 1:
        return None
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if not words:
        return None
    if "|" in words:
        bar = words.index("|")
        left, right = words[:bar], [w for w in words[bar + 1 :] if w != "sudo"]
        if len(left) != 2 or left[0] != "echo" or not right or right[0].rsplit("/", 1)[-1] != "tee":
            return None
        paths = [w for w in right[1:] if w != "-a"]
        keys = [_proc_key(path) for path in paths]
        return [(key, left[1]) for key in keys] if paths and None not in keys else None
    if words[0] == "sudo":
        words = words[1:]
    if words and words[0].rsplit("/", 1)[-1] == "sysctl":
        settings = []
        for word in words[1:]:
            if word in ("-w", "-q", "-e", "--write", "--quiet"):
                continue
            key, sep, value = word.partition("=")
            if not sep or not key or key.startswith("-"):
                return None
            settings.append((normal_key(key), value))
        return settings or None
    if len(words) in (3, 4) and words[0] == "echo":
        target = words[-1] if len(words) == 4 and words[2] in (">", ">>") else words[2].lstrip(">") if len(words) == 3 else None
        if len(words) == 3 and not words[2].startswith(">"):
            return None
        key = _proc_key(target or "")
        return [(key, words[1])] if key else None
    return None


def _proc_key(path: str):
    if not path.startswith("/proc/sys/") or any(part in ("", ".", "..") for part in path[len("/proc/sys/") :].split("/")):
        return None
    return normal_key(path[len("/proc/sys/") :])
