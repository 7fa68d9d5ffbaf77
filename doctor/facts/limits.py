"""Resource limits (open files, locked memory, processes) of the processes that serve models,
the persistent configuration that sets them, RDMA devices, and the pids cgroup around them.

Limits are per process and inherited at fork (setrlimit(2)), so the process judged is the one
that serves, not aidoctor's own shell: a running serving unit (its cgroup's first process), a
container runtime whose containers inherit its limits, inside a container a server process found
by name; only where none is found, this process (on a host, a server started by hand from a shell
has that shell's limits, as aidoctor run from one does). /proc/PID/limits (proc(5):
"Soft Limit", "Hard Limit", ``unlimited``) and /proc/PID/status (CapEff, Uid) are readable by
every user, but a /proc mounted with hidepid hides other users' processes.

Configured values: pam_limits applies /etc/security/limits.conf, then limits.d/*.conf, to login
sessions only (pam_limits(8)), and only where a PAM service (/etc/pam.d/login, sshd, su …) loads
it: a line naming the user (or its uid) wins over ``*``, which does not cover root; systemd services get LimitXXX= of their unit, else
DefaultLimitXXX= of system.conf and its drop-ins (systemd-system.conf(5)), else what PID 1
passes on: since systemd 240 a hard open-files limit of 512Ki (524288, at most fs.nr_open) with
the soft one at 1024 (systemd PR #10244), before it the kernel's 1024:4096
(include/asm-generic/resource.h INR_OPEN_CUR/INR_OPEN_MAX).
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.facts.cgroup import parse_proc_cgroup
from ai_doctor.facts.dropins import dropin_files
from ai_doctor.facts.gpudevices import user_name
from ai_doctor.facts.processes import unit_pids
from ai_doctor.record import Record

# Units that serve models, by the names their projects' guides give them (Ollama's Linux
# install writes ollama.service; the others are the usual names of hand-written units).
SERVING_UNITS = ("ollama.service", "vllm.service", "sglang.service", "tritonserver.service")
# Container runtimes: runc is started by containerd's shim, which inherits containerd's limits,
# and a container keeps them unless it is given --ulimit (or daemon.json default-ulimits).
RUNTIME_UNITS = ("containerd.service", "docker.service")
# Server programs found by command name (comm, at most 15 characters) inside a container, whose
# own PID namespace is short to scan.
SERVER_COMMS = ("ollama", "llama-server", "tritonserver", "raylet")

NOFILE, MEMLOCK, NPROC = "nofile", "memlock", "nproc"
# /proc/PID/limits row names (fs/proc/base.c lnames).
_ROWS = {"Max open files": NOFILE, "Max locked memory": MEMLOCK, "Max processes": NPROC}
# systemd's names for the same limits (systemd.exec(5)).
UNIT_KEYS = {"LimitNOFILE": NOFILE, "LimitMEMLOCK": MEMLOCK, "LimitNPROC": NPROC}
DEFAULT_KEYS = {"DefaultLimitNOFILE": NOFILE, "DefaultLimitMEMLOCK": MEMLOCK, "DefaultLimitNPROC": NPROC}

# Capability bits (include/uapi/linux/capability.h).
CAP_IPC_LOCK, CAP_SYS_ADMIN, CAP_SYS_RESOURCE = 14, 21, 24

SYSTEM_CONF = "/etc/systemd/system.conf"
SYSTEM_CONF_DIRS = (
    "/etc/systemd/system.conf.d",
    "/run/systemd/system.conf.d",
    "/usr/local/lib/systemd/system.conf.d",
    "/usr/lib/systemd/system.conf.d",
)
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
LIMITS_CONF = "/etc/security/limits.conf"
LIMITS_DIR = "/etc/security/limits.d"
# Where PAM services are configured: /etc/pam.d, the vendor folder of Linux-PAM built with
# --enable-vendordir (openSUSE: a name in /etc/pam.d hides it), and the old single file.
PAM_DIRS = ("/etc/pam.d", "/usr/lib/pam.d")
PAM_CONF = "/etc/pam.conf"
# Where systemd's shared library carries its version in its name: libsystemd-shared-249.so
# (Ubuntu 22.04, /usr/lib/systemd), libsystemd-shared-252.so (Debian 12, the multiarch folder),
# libsystemd-shared-256.11-1.fc41.so (Fedora, /usr/lib64/systemd).
SYSTEMD_LIB_DIRS = (
    "/usr/lib/systemd",
    "/usr/lib64/systemd",
    "/usr/lib/x86_64-linux-gnu/systemd",
    "/usr/lib/aarch64-linux-gnu/systemd",
    "/usr/lib/powerpc64le-linux-gnu/systemd",
    "/usr/lib/s390x-linux-gnu/systemd",
)
NR_OPEN = "/proc/sys/fs/nr_open"
INFINIBAND = "/sys/class/infiniband"
# systemd 240 raised the hard open-files limit it passes to services to 512Ki.
SYSTEMD_HARD_NOFILE = 524288
SYSTEMD_HARD_NOFILE_SINCE = 240
KERNEL_HARD_NOFILE = 4096

_CAP = 1 << 20


class Limit(Record):
    """One limit: ``soft`` and ``hard`` (None: unlimited)."""

    __slots__ = ("soft", "hard")


class ProcLimits(Record):
    """The limits of one process: ``pid`` (None for this process read as /proc/self), what it
    is (``label``: "ollama.service (pid 812)"), ``kind`` (service, runtime, server or self),
    its ``unit`` if any, ``limits`` {nofile|memlock|nproc: Limit} read at ``path`` (None when
    unreadable: ``problem`` says why), ``cap_eff`` (the effective capability mask, None when
    unknown), ``uid`` (real user id), ``cgroup`` (/proc/PID/cgroup text, None when unread), the
    rows as read (``rows``: item → the line) and, for this process, ``user``: the name of its
    uid in /etc/passwd (None when it has none there)."""

    __slots__ = ("pid", "label", "kind", "unit", "path", "limits", "problem", "cap_eff", "uid", "status_path", "cgroup", "rows", "user")
    _defaults = {"problem": None, "cap_eff": None, "uid": None, "status_path": None, "cgroup": None, "rows": None, "user": None}

    def capable(self, bit: int):
        """Whether capability ``bit`` is effective; None when CapEff was not read."""
        return None if self.cap_eff is None else bool(self.cap_eff >> bit & 1)

    @property
    def base(self) -> str:
        """The /proc folder of the process (/proc/812, /proc/self)."""
        return self.path.rsplit("/", 1)[0]


class ProcessLimits(Record):
    """The processes judged (``judged``, readable), those found whose limits could not be read
    (``unread``), and how they were chosen (``how``)."""

    __slots__ = ("judged", "unread", "how")


def parse_limits(text: str):
    """/proc/PID/limits as ({item: Limit}, {item: the line}); rows that do not parse are left out."""
    limits, rows = {}, {}
    for line in text.splitlines():
        for name, item in _ROWS.items():
            if not line.startswith(name + " "):
                continue
            words = line[len(name) :].split()
            if len(words) < 2:
                break
            soft, hard = _limit_word(words[0]), _limit_word(words[1])
            if soft is not False and hard is not False:
                limits[item] = Limit(soft, hard)
                rows[item] = line.rstrip()
            break
    return limits, rows


def _limit_word(word: str):
    """A limit as /proc writes it: a number, or None for unlimited; False when neither."""
    if word == "unlimited":
        return None
    if word.isdigit() and word.isascii() and len(word) <= 20:
        return int(word)
    return False


def parse_status(text: str):
    """(CapEff as an int or None, real uid or None) from /proc/PID/status."""
    cap = uid = None
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            word = line[7:].strip()
            if word and len(word) <= 32:
                try:
                    cap = int(word, 16)
                except ValueError:
                    cap = None
        elif line.startswith("Uid:"):
            words = line[4:].split()
            if words and words[0].isdigit() and len(words[0]) <= 10:
                uid = int(words[0])
    return cap, uid


def _read_process(host, base: str, pid, label: str, kind: str, unit=None) -> ProcLimits:
    got = host.read_text(base + "/limits", cap=16384)
    if not got.ok:
        problem = got.describe()
        if got.missing and pid is not None:
            problem = "not visible here (the process ended, or /proc hides other users' processes: hidepid)"
        return ProcLimits(pid, label, kind, unit, got.path, None, problem)
    limits, rows = parse_limits(got.data)
    status = host.read_text(base + "/status", cap=16384)
    cap, uid = parse_status(status.data) if status.ok else (None, None)
    cgroup = host.read_text(base + "/cgroup", cap=65536)
    return ProcLimits(pid, label, kind, unit, got.path, limits, None, cap, uid, status.path, cgroup.data if cgroup.ok else None, rows)


@fact("process_limits")
def process_limits(host, facts):
    if not facts.get("running"):
        return Unavailable("an image, not a running system: limits belong to running processes")
    found = []
    for unit in SERVING_UNITS + RUNTIME_UNITS:
        if unit == "docker.service" and any(p.unit == "containerd.service" for p in found):
            continue  # dockerd hands its containers to containerd, whose limits they inherit
        pids, _path = unit_pids(host, unit)
        if pids:
            pid = pids[0]
            kind = "runtime" if unit in RUNTIME_UNITS else "service"
            found.append(_read_process(host, "/proc/%d" % pid, pid, "%s (pid %d)" % (unit, pid), kind, unit))
    how = "serving units and container runtimes"
    container = facts.get("container")
    if not any(p.kind == "service" for p in found) and container and container.detected:
        processes = facts.get("processes")
        if processes and processes.scanned:
            for pid in processes.pids(*SERVER_COMMS)[:4]:
                name = processes.names.get(pid)
                found.append(_read_process(host, "/proc/%d" % pid, pid, "%s (pid %d)" % (name, pid), "server"))
    if not found:
        how = "this process"
        own = _read_process(host, "/proc/self", None, "this process", "self")
        if own.limits is None:
            return unreadable(host, host.read_text(own.path, cap=16384), "the limits of this process")
        if own.uid is not None:
            own = own._replace(user=user_name(host, own.uid) or ("root" if own.uid == 0 else None))
        found.append(own)
    judged = tuple(p for p in found if p.limits is not None)
    unread = tuple(p for p in found if p.limits is None)
    if host.next_boot:
        config = facts.get("limits_config")
        stacks = facts.get("pam_limits_stacks") if any(p.kind == "self" for p in judged) else None
        judged = tuple(_at_boot(p, config, stacks) for p in judged)
    return ProcessLimits(judged, unread, how)


def _at_boot(process: ProcLimits, config, stacks=None) -> ProcLimits:
    """``process`` as it starts at the next boot: a unit with what its unit file or systemd's
    defaults configure, a login session with what limits.conf gives its user (pam_limits'
    precedence: a line naming the user or its uid wins over ``*``, which is not root's:
    limits.conf(5)), unless no PAM service loads pam_limits (``stacks`` empty); a value nothing
    configures stays as it is now."""
    limits, rows = dict(process.limits), dict(process.rows or {})
    if process.unit is not None:
        for item in (NOFILE, MEMLOCK, NPROC):
            setting = config.units.get(process.unit, {}).get(item) or config.defaults.get(item)
            if setting is not None:
                limits[item], rows[item] = setting.limit, setting.text
    elif process.kind == "self" and process.uid is not None and stacks != ():
        sources = {}
        for line in config.pam:
            source = pam_source(line.domain, process.uid, process.user)
            if source is None:
                continue
            now = limits.get(line.item, Limit(None, None))
            soft, hard, applied = now.soft, now.hard, False
            for kind in ("soft", "hard"):
                if line.type not in (kind, "-"):
                    continue
                if source > sources.get((line.item, kind), _SOURCE_NONE):
                    break  # pam_limits' process_limit(): a more specific line already set it
                sources[line.item, kind], applied = source, True
                soft, hard = (line.value, hard) if kind == "soft" else (soft, line.value)
            if applied:
                if soft is not None and hard is not None and soft > hard:
                    soft = hard  # setup_limits() lowers the soft limit to the hard one
                limits[line.item], rows[line.item] = Limit(soft, hard), line.text
    else:
        return process
    return process._replace(limits=limits, rows=rows)


# pam_limits' precedence of a line (LIMITS_DEF_USER, LIMITS_DEF_DEFAULT; lower wins, an equal
# one read later replaces it).
_SOURCE_USER, _SOURCE_DEFAULT, _SOURCE_NONE = 0, 4, 99


def pam_source(domain: str, uid: int, user):
    """How a limits.conf ``domain`` applies to the user ``uid`` named ``user``: 0 for its name or
    a uid range holding it, 4 for ``*`` (not root's), None where it does not apply or cannot be
    told here (a group)."""
    if user is not None and domain == user:
        return _SOURCE_USER
    if domain == "*":
        return _SOURCE_DEFAULT if uid != 0 else None
    if ":" in domain and domain[0] not in "@%":
        low, _, high = domain.partition(":")
        if not domain.isascii() or (low and not low.isdigit()) or (high and not high.isdigit()) or not high and not low:
            return None
        if not low:
            return _SOURCE_USER if uid == int(high) else None
        if int(low) <= uid and (not high or uid <= int(high)):
            return _SOURCE_USER
    return None


# -- configuration ------------------------------------------------------------------------


class Setting(Record):
    """A configured limit: ``limit`` (Limit; None parts are unlimited), where it is set."""

    __slots__ = ("key", "limit", "path", "line", "text")


class PamLine(Record):
    """One limits.conf line: domain, type (soft, hard, -), item, value (None: unlimited)."""

    __slots__ = ("domain", "type", "item", "value", "path", "line", "text")


class LimitsConfig(Record):
    """Persistent configuration: systemd's ``defaults`` {item: Setting} (system.conf and its
    drop-ins), each unit's own ``units`` {unit: {item or "tasks": Setting}} and the names of
    its drop-ins (``dropins`` {unit: names}), the pam_limits lines ``pam`` for the three items
    (and the names in limits.d, ``pam_names``), the ``systemd_version`` (None: unknown),
    ``nr_open``."""

    __slots__ = ("defaults", "units", "dropins", "pam", "pam_names", "systemd_version", "nr_open")

    def dropin_name(self, unit: str, topic: str) -> str:
        """A drop-in name for ``unit`` that sorts after each it has: systemd applies them in
        file-name order, the last assignment winning (systemd.unit(5)); `systemctl edit`
        writes override.conf, after 90-…."""
        return name_after("aidoctor-" + topic, self.dropins.get(unit, ()))


def name_after(topic: str, others) -> str:
    """``NN-TOPIC.conf`` sorting after every name in ``others`` but an earlier one of this
    topic's own, which is written again rather than followed by one more each time."""
    others = [other for other in others if not other.endswith(topic + ".conf")]
    for prefix in ("90-", "99-", "zz-"):
        name = "%s%s.conf" % (prefix, topic)
        if all(name > other for other in others):
            return name
    return "%s~%s.conf" % (max(others)[:-5], topic)


_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}


def systemd_limit_value(text: str, item: str):
    """A systemd limit value ("infinity", "1048576", "8M", "soft:hard") as a Limit; None when
    it does not parse (or is empty, which resets to the default)."""
    text = text.strip()
    if not text:
        return None
    parts = text.split(":")
    if len(parts) > 2:
        return None
    values = []
    for part in parts:
        value = _systemd_number(part.strip(), item)
        if value is False:
            return None
        values.append(value)
    return Limit(values[0], values[-1])


def _systemd_number(word: str, item: str):
    if word == "infinity":
        return None
    scale = 1
    if item == MEMLOCK and word[-1:] in _SUFFIXES:
        scale, word = _SUFFIXES[word[-1]], word[:-1]
    if word.isdigit() and word.isascii() and len(word) <= 20:
        return int(word) * scale
    return False


def parse_unit_settings(text: str, keys, path: str, section: str):
    """{item: Setting} for ``keys`` (name → item) in ``section`` of a systemd file; the last
    assignment wins, an empty one resets."""
    found = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        if current != section or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        item = keys.get(key)
        if item is None:
            continue
        if item == "tasks":
            found[item] = Setting(key, value.strip(), path, number, raw.rstrip())
            continue
        limit = systemd_limit_value(value, item)
        if limit is None and value.strip():
            continue  # not understood: systemd ignores it too (with a warning)
        if limit is None:
            found.pop(item, None)
        else:
            found[item] = Setting(key, limit, path, number, raw.rstrip())
    return found


def parse_pam_limits(text: str, path: str):
    """The nofile, memlock and nproc lines of a limits.conf file (limits.conf(5))."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if len(words) != 4 or words[1] not in ("soft", "hard", "-") or words[2] not in (NOFILE, MEMLOCK, NPROC):
            continue
        word = words[3]
        if word in ("unlimited", "infinity", "-1"):
            value = None
        elif word.isdigit() and word.isascii() and len(word) <= 20:
            value = int(word) * (1024 if words[2] == MEMLOCK else 1)  # memlock in KiB
        else:
            continue
        found.append(PamLine(words[0], words[1], words[2], value, path, number, raw.rstrip()))
    return found


def _systemd_version(host):
    for folder in SYSTEMD_LIB_DIRS:
        listing = host.listdir(folder)
        for name in listing.data if listing.ok else ():
            if name.startswith("libsystemd-shared-") and ".so" in name:
                digits = name[len("libsystemd-shared-") :].split(".", 1)[0].split("-", 1)[0]
                if digits.isdigit() and len(digits) <= 4:
                    return int(digits)
    return None


@fact("limits_config")
def limits_config(host, facts):
    defaults = {}
    files = [SYSTEM_CONF] + [path for _name, path in dropin_files(host, SYSTEM_CONF_DIRS)]
    for path in files:
        got = host.read_text(path, cap=_CAP)
        if got.ok:
            defaults.update(parse_unit_settings(got.data, DEFAULT_KEYS, path, "Manager"))
    keys = dict(UNIT_KEYS, TasksMax="tasks")
    units, names = {}, {}
    for unit in SERVING_UNITS + RUNTIME_UNITS:
        settings = {}
        for folder in UNIT_DIRS:
            got = host.read_text("%s/%s" % (folder, unit), cap=_CAP)
            if got.ok:
                settings.update(parse_unit_settings(got.data, keys, got.path, "Service"))
                break
        dropins = dropin_files(host, ["%s/%s.d" % (folder, unit) for folder in UNIT_DIRS])
        names[unit] = tuple(name for name, _path in dropins)
        for _name, path in dropins:
            got = host.read_text(path, cap=_CAP)
            if got.ok:
                settings.update(parse_unit_settings(got.data, keys, path, "Service"))
        if settings or dropins or any(host.exists("%s/%s" % (folder, unit)) for folder in UNIT_DIRS):
            units[unit] = settings
    pam = []
    pam_files = dropin_files(host, (LIMITS_DIR,))
    for path in [LIMITS_CONF] + [path for _name, path in pam_files]:
        got = host.read_text(path, cap=_CAP)
        if got.ok:
            pam.extend(parse_pam_limits(got.data, path))
    nr_open = None
    got = host.read_text(NR_OPEN, cap=64)
    if got.ok and got.data.strip().isdigit():
        nr_open = int(got.data.strip())
    pam_names = tuple(name for name, _path in pam_files)
    return LimitsConfig(defaults, units, names, tuple(pam), pam_names, _systemd_version(host), nr_open)


def loads_pam_limits(text: str) -> bool:
    """Whether a PAM configuration file has a session line with pam_limits.so."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if any(word.lstrip("-") == "session" for word in words[:2]) and any(word.endswith("pam_limits.so") for word in words):
            return True
    return False


@fact("pam_limits_stacks")
def pam_limits_stacks(host, facts):
    """The PAM configuration files whose session lines load pam_limits.so (/etc/pam.d/login,
    sshd, su …), in the order read; () where none does, or where there is no PAM at all: nothing
    then applies limits.conf to any session."""
    found, seen = [], set()
    for folder in PAM_DIRS:
        listing = host.listdir(folder)
        if not listing.ok:
            if listing.missing:
                continue
            return unreadable(host, listing, "cannot list the PAM services at")
        for name in sorted(listing.data)[:256]:
            if name in seen:
                continue  # /etc/pam.d/NAME hides the vendor's file of the same name
            seen.add(name)
            got = host.read_text("%s/%s" % (folder, name), cap=65536)
            if got.ok and loads_pam_limits(got.data):
                found.append(got.path)
    got = host.read_text(PAM_CONF, cap=_CAP)
    if got.ok and loads_pam_limits(got.data):
        found.append(got.path)
    return tuple(found)


@fact("rdma_devices")
def rdma_devices(host, facts):
    """The RDMA devices (mlx5_0 …) under /sys/class/infiniband: present only while a driver
    registered one with the RDMA core (Documentation/ABI/stable/sysfs-class-infiniband)."""
    listing = host.listdir(INFINIBAND)
    if listing.ok:
        return tuple(sorted(listing.data))
    if listing.missing:
        if not facts.get("running"):
            return Unavailable("an image, not a running system: which RDMA devices exist is known on the running host")
        if not host.exists("/sys"):
            return Unavailable("no /sys: cannot tell whether RDMA devices exist")
        return ()
    return unreadable(host, listing, "cannot list RDMA devices at")


# -- pids cgroup --------------------------------------------------------------------------


class PidsLevel(Record):
    """One cgroup on the path of a judged process: its ``cgroup`` path, ``directory``,
    ``max`` (None: no limit), ``current``, ``events`` (pids.events ``max`` count; None when
    not read) and the files read."""

    __slots__ = ("cgroup", "directory", "max", "current", "events", "max_path", "events_path")


class PidsPath(Record):
    """The pids cgroups around one judged process (``process``: its ProcLimits), its own
    first, and what could not be read (``notes``)."""

    __slots__ = ("process", "version", "levels", "notes")

    @property
    def tightest(self):
        """The level with the smallest pids.max, or None."""
        limited = [level for level in self.levels if level.max is not None]
        return min(limited, key=lambda level: level.max) if limited else None


def _number(text: str):
    text = text.strip()
    if text == "max":
        return None
    return int(text) if text.isdigit() and len(text) <= 20 else False


def parse_flat_keyed(text: str):
    """A flat-keyed cgroup file ("max 3") as {key: int}."""
    values = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit() and len(words[1]) <= 20:
            values[words[0]] = int(words[1])
    return values


def _directory(mount, path: str) -> str:
    root = mount.root.rstrip("/")
    rel = path[len(root) :] if (path == root or path.startswith(root + "/")) else ""
    rel = rel.rstrip("/")
    return mount.mountpoint.rstrip("/") + rel if rel else mount.mountpoint


def _pids_path(host, mounts, process: ProcLimits):
    entries = parse_proc_cgroup(process.cgroup)
    notes = []
    v1 = [entry for entry in entries if "pids" in entry[1]]
    if v1:
        version, path = "v1", v1[0][2]
        mount = next((m for m in mounts.mounts if m.fstype == "cgroup" and "pids" in m.super_options), None)
    else:
        unified = [entry for entry in entries if entry[0] == "0" and not entry[1]]
        if not unified:
            return None
        version, path = "v2", unified[0][2]
        mount = next((m for m in mounts.mounts if m.fstype == "cgroup2"), None)
    if mount is None or any(part in (".", "..") for part in path.split("/")):
        return None
    directory = _directory(mount, path)
    top = mount.mountpoint.rstrip("/") or "/"
    levels = []
    current, cgroup = directory.rstrip("/") or "/", path.rstrip("/") or "/"
    while True:
        limit = used = events = None
        got = host.read_text(current + "/pids.max", cap=256)
        if got.ok:
            limit = _number(got.data)
            if limit is False:
                notes.append("%s (not a number: %r)" % (got.path, got.data.strip()[:40]))
                limit = None
        elif got.failed:
            notes.append("%s (%s)" % (got.path, got.describe()))
        counted = host.read_text(current + "/pids.current", cap=256)
        if counted.ok and _number(counted.data) not in (False, None):
            used = _number(counted.data)
        seen = host.read_text(current + "/pids.events", cap=4096)
        if seen.ok:
            events = parse_flat_keyed(seen.data).get("max")
        elif seen.failed:
            notes.append("%s (%s)" % (seen.path, seen.describe()))
        if got.ok or seen.ok:
            levels.append(PidsLevel(cgroup, current, limit, used, events, got.path, seen.path))
        if current == top or current == "/" or len(levels) > 64:
            break
        current = current.rsplit("/", 1)[0] or "/"
        cgroup = cgroup.rsplit("/", 1)[0] or "/"
    return PidsPath(process, version, tuple(levels), tuple(notes))


def _level_at_boot(level: PidsLevel, config) -> PidsLevel:
    """A cgroup level at the next boot: no refusals counted yet, and a unit's pids.max from
    its TasksMax= (a number or infinity; a percentage of the kernel's limit is left as is)."""
    level = level._replace(events=0 if level.events is not None else None, current=None)
    name = level.cgroup.rstrip("/").rsplit("/", 1)[-1]
    setting = config.units.get(name, {}).get("tasks") if config else None
    if setting is not None and level.cgroup == "/system.slice/" + name:
        value = setting.limit
        if value == "infinity":
            level = level._replace(max=None)
        elif value.isdigit() and len(value) <= 20:
            level = level._replace(max=int(value))
    return level


@fact("pids_limits")
def pids_limits(host, facts):
    processes = facts.get("process_limits")
    if not processes:
        return processes
    mounts = facts.get("mounts")
    if not mounts:
        return Unavailable("cannot find the cgroup mounts: " + mounts.reason)
    paths = []
    seen = set()
    boot = host.next_boot
    config = facts.get("limits_config") if boot else None
    for process in processes.judged:
        if process.cgroup is None:
            continue
        found = _pids_path(host, mounts, process)
        if found is not None and boot:
            found = found._replace(levels=tuple(_level_at_boot(level, config) for level in found.levels))
        if found is None or found.levels and found.levels[0].directory in seen:
            continue
        if found.levels:
            seen.add(found.levels[0].directory)
        paths.append(found)
    return tuple(paths)
