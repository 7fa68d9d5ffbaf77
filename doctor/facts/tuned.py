"""tuned: whether it starts at boot, which profiles it loads then, and what they set once merged.

Read from tuned's own code (2.20, Debian 12; 2.25, Debian 13; both packages ship
/etc/tuned/active_profile and /etc/tuned/profile_mode empty, and their postinst enables
tuned.service through dh_installsystemd):

- daemon/daemon.py ``_get_startup_profile`` and utils/commands.py ``get_active_profile``: mode
  ``manual``, or no mode and some names in active_profile, loads those names; ``auto``, or no mode
  and no names, loads what the recommender picks (utils/profile_recommender.py: recommend.conf,
  then recommend.d/*.conf by file name, /etc over /usr/lib, the first matching section; balanced
  when none does, or when tuned-main.conf says ``recommend_command = 0``); any other mode, or a
  profile that is not there, starts nothing. /etc/tuned/post_loaded_profile is loaded last.
- profiles/loader.py and profiles/merger.py: each profile after the ones it includes (a file once),
  ``/etc`` before ``/usr/lib``; a section of a name already seen keeps that one's options,
  ``type`` and ``enabled`` unless it sets them, and its uname_regex and cpuinfo_regex unless it
  sets its own; ``replace=1`` starts the section over; ``drop=`` removes options.
- units/manager.py ``create``: a section becomes a plugin instance only where it is enabled and
  its cpuinfo_regex and uname_regex match (re.search over /proc/cpuinfo and ``" ".join(os.uname())``,
  or tuned-main.conf's cpuinfo_string and uname_string), in order of ``priority``; a plugin that
  owns devices (cpu, disk …) gives them all to its first instance.

tuned 2.24 moved the profiles to /usr/lib/tuned/profiles and /etc/tuned/profiles (consts.py).
"""

from __future__ import annotations

import re

from ai_doctor.facts import fact
from ai_doctor.facts.system import masked
from ai_doctor.record import Record

TUNED_ACTIVE = "/etc/tuned/active_profile"
TUNED_MODE = "/etc/tuned/profile_mode"
TUNED_POST = "/etc/tuned/post_loaded_profile"
TUNED_MAIN = "/etc/tuned/tuned-main.conf"
TUNED_WANTED = "/etc/systemd/system/multi-user.target.wants/tuned.service"
TUNED_PID = "/run/tuned/tuned.pid"
# Lowest precedence first, as tuned lists them (consts.py LOAD_DIRECTORIES, CFG_DEF_PROFILE_DIRS).
OLD_DIRS = ("/usr/lib/tuned", "/etc/tuned")
NEW_DIRS = ("/usr/lib/tuned/profiles", "/etc/tuned/profiles")
RECOMMEND_CONF = "/etc/tuned/recommend.conf"
RECOMMEND_DIRS = ("/usr/lib/tuned/recommend.d", "/etc/tuned/recommend.d")
DEFAULT_PROFILE = "balanced"
MODES = ("", "auto", "manual")
VIRT_WHAT = ("/usr/sbin/virt-what", "/usr/bin/virt-what")
SYSTEM_CPE = "/etc/system-release-cpe"
SYSPURPOSE = "/etc/rhsm/syspurpose/syspurpose.json"
CHASSIS = "/sys/devices/virtual/dmi/id/chassis_type"
CPUINFO = "/proc/cpuinfo"
# Plugins that own devices: their first instance takes every device (plugins/base.py
# assign_free_devices), so a later section of the same plugin tunes none.
DEVICE_PLUGINS = ("cpu", "disk", "net", "audio", "video", "scsi_host", "usb", "irq")
_SAFE_NAME = r"[a-zA-Z0-9_.-]+"
_MAX_FILES = 64
_MAX_PATTERN = 4096
# What a value may grow to by ${variable} expansion.
_MAX_EXPANDED = 65536
CPUINFO_CAP = 1 << 20


class Tuned(Record):
    """tuned's state: ``profiles`` named in active_profile (empty: none), ``mode`` (profile_mode's
    text), the ``post_loaded`` profile, where user profiles go (``user_dir``: /etc/tuned/profiles
    since tuned 2.24, /etc/tuned before), whether tuned-adm is there (``installed``) and whether
    the daemon starts at boot or runs now (``enabled``).

    ``base`` is what tuned loads when it next starts, before the post-loaded profile: the
    recommender's pick in automatic mode (None where that is not known), ``how`` says so in words,
    and ``recommended`` is the Recommendation (automatic mode only)."""

    __slots__ = ("profiles", "user_dir", "installed", "enabled", "mode", "post_loaded", "base", "how", "recommended")
    _defaults = {"mode": "", "post_loaded": None, "base": None, "how": "", "recommended": None}

    @property
    def auto(self) -> bool:
        """Whether tuned picks its profile when it starts (daemon.py _get_startup_profile)."""
        return self.mode == "auto" or (self.mode == "" and not self.profiles)


@fact("tuned")
def tuned(host, facts):
    got = host.read_text(TUNED_ACTIVE, cap=4096)
    profiles = tuple(got.data.split()) if got.ok else ()
    got = host.read_text(TUNED_MODE, cap=4096)
    mode = got.data.strip() if got.ok else ""
    got = host.read_text(TUNED_POST, cap=4096)
    post = got.data.strip() if got.ok and got.data.strip() else None
    new_layout = host.exists("/etc/tuned/profiles") or host.exists("/usr/lib/tuned/profiles")
    installed = "tuned-adm" in (facts.get("tools") or {})
    # Started at boot (wanted, not masked), or running now.
    enabled = installed and ((host.exists(TUNED_WANTED) and not masked(host, "tuned.service")) or host.exists(TUNED_PID))
    state = Tuned(profiles, "/etc/tuned/profiles" if new_layout else "/etc/tuned", installed, enabled, mode, post)
    if mode not in MODES:
        return state._replace(base=(), how="%s holds %r, which tuned refuses: it starts no profile" % (TUNED_MODE, mode[:40]))
    if not state.auto:
        return state._replace(base=profiles, how="%s: %s" % (TUNED_ACTIVE, " ".join(profiles) or "(empty, manual mode)"))
    if not installed:
        return state
    pick = recommend(host, facts, main_conf(host))
    said = "automatic mode (%s)" % ("profile_mode is auto" if mode == "auto" else "active_profile and profile_mode are empty")
    if pick.profile is not None:
        return state._replace(
            base=(pick.profile,), how="%s: tuned picks %s when it starts (%s)" % (said, pick.profile, pick.source), recommended=pick
        )
    if profiles and facts.get("running"):
        # tuned wrote its pick when it last started on this machine (daemon.py _thread_code).
        how = "%s: tuned picks its profile when it starts (which is not known: %s); it picked %s last time" % (
            said,
            pick.unknown,
            " ".join(profiles),
        )
        return state._replace(base=profiles, how=how, recommended=pick)
    how = "%s: tuned picks its profile when it starts, and which is not known (%s): %s" % (said, pick.unknown, pick.words)
    return state._replace(how=how, recommended=pick)


def main_conf(host) -> dict:
    """tuned-main.conf's options (key → value); missing: {}."""
    got = host.read_text(TUNED_MAIN, cap=65536)
    if not got.ok:
        return {}
    sections = parse_tuned_conf("[main]\n" + got.data)
    return {key: value for key, (_line, value) in sections.get("main", {}).items()}


def _true(text) -> bool:
    return str(text).strip().lower() in ("1", "y", "yes", "t", "true", "on")


# -- the recommender ------------------------------------------------------------------------


class Recommendation(Record):
    """What tuned's recommender picks: ``profile`` (None where not known), ``choices`` ((profile,
    condition words), …) the sections that may match, in order, ending with one that does,
    ``source`` (words: the file and section that decided), ``unknown`` (words: the inputs not
    known)."""

    __slots__ = ("profile", "choices", "source", "unknown")

    @property
    def words(self) -> str:
        """The choices in words: ``virtual-guest where virt=.+ matches (…), else balanced``."""
        parts = ["%s where %s" % choice for choice in self.choices[:-1]]
        last = self.choices[-1] if self.choices else (DEFAULT_PROFILE, "")
        parts.append(("else %s" if parts else "%s") % last[0])
        return ", ".join(parts)


# virt-what's first lines on common hypervisors (virt-what(1)); a virtual machine's exact output is
# not known here, so a rule decides only where it gives one answer for all of them.
_VM_OUTPUTS = (
    "kvm\n",
    "qemu\n",
    "vmware\n",
    "hyperv\n",
    "virtualbox\n",
    "parallels\n",
    "bhyve\n",
    "xen\nxen-domU\n",
    "xen\nxen-hvm\n",
    "aws\nkvm\n",
    "google_cloud\nkvm\n",
    "ibm_systemz\nibm_systemz-zvm\n",
)
# SMBIOS chassis types, index = /sys/.../chassis_type (profile_recommender.py _get_chassis_type).
_CHASSIS = (
    "",
    "Other",
    "Unknown",
    "Desktop",
    "Low Profile Desktop",
    "Pizza Box",
    "Mini Tower",
    "Tower",
    "Portable",
    "Laptop",
    "Notebook",
    "Hand Held",
    "Docking Station",
    "All In One",
    "Sub Notebook",
    "Space-saving",
    "Lunch Box",
    "Main Server Chassis",
    "Expansion Chassis",
    "Sub Chassis",
    "Bus Expansion Chassis",
    "Peripheral Chassis",
    "RAID Chassis",
    "Rack Mount Chassis",
    "Sealed-case PC",
    "Multi-system",
    "CompactPCI",
    "AdvancedTCA",
    "Blade",
    "Blade Enclosing",
    "Tablet",
    "Convertible",
    "Detachable",
    "IoT Gateway",
    "Embedded PC",
    "Mini PC",
    "Stick PC",
)


def recommend(host, facts, main) -> Recommendation:
    """tuned's recommender (utils/profile_recommender.py) on this target: each condition true,
    false or not known (None), a section matching where all are true."""
    if not _true(main.get("recommend_command", "1")):
        return Recommendation(DEFAULT_PROFILE, ((DEFAULT_PROFILE, ""),), "recommend_command = 0 in %s" % TUNED_MAIN, "")
    files = [RECOMMEND_CONF] if _is_file(host, RECOMMEND_CONF) else []
    by_name = {}
    for folder in RECOMMEND_DIRS:
        listing = host.listdir(folder)
        for name in listing.data if listing.ok else ():
            by_name[name] = "%s/%s" % (folder, name)
    files += [by_name[name] for name in sorted(by_name) if _is_file(host, by_name[name])]
    inputs = _Inputs(host, facts)
    choices, unknown = [], []
    for path in files[:_MAX_FILES]:
        got = host.read_text(path, cap=1 << 20)
        if not got.ok:
            choices.append(("?", "%s could not be read (%s)" % (path, got.describe())))
            unknown.append("%s: %s" % (path, got.describe()))
            continue
        for section, options in parse_tuned_conf(got.data).items():
            if section == "DEFAULT":
                continue
            verdict, why, missing = inputs.section(options)
            # "[balanced,2]" names balanced: the parser strips the last ",…".
            name = section.rsplit(",", 1)[0] if "," in section else section
            where = "%s [%s]" % (path, section)
            if verdict is None:
                choices.append((name, "%s (%s)" % (why, where)))
                unknown += [m for m in missing if m not in unknown]
            elif verdict:
                choices.append((name, why))
                if len(choices) == 1:
                    return Recommendation(name, tuple(choices), where, "")
                return Recommendation(None, tuple(choices), where, "; ".join(unknown))
    choices.append((DEFAULT_PROFILE, "no section matches"))
    if len(choices) == 1:
        return Recommendation(DEFAULT_PROFILE, tuple(choices), "no rule in recommend.d matches: tuned's default", "")
    return Recommendation(None, tuple(choices), "tuned's default", "; ".join(unknown))


def _is_file(host, path) -> bool:
    got, info = host.stat(path)
    return got.ok and info.is_file


class _Inputs:
    """What the recommender's conditions read, each known or not (None), read once."""

    def __init__(self, host, facts):
        self.host, self.facts = host, facts
        self.running = bool(facts.get("running"))
        self._virt = self._cpe = self._chassis = self._role = False

    def section(self, options):
        """(True/False/None, words, inputs not known) for one section: every option must match."""
        verdict, words, missing = True, [], []
        for key, (_line, value) in options.items():
            pattern = value if value != "" else "^$"
            if key == "virt":
                output, how = self.virt()
                result = _match_vm(pattern) if output is _VM else _match(pattern, output, re.S)
                what = "virt-what's output"
            elif key == "system":
                output, how = self.cpe()
                result, what = _match(pattern, output, re.S), SYSTEM_CPE
            elif key.startswith("/"):
                output, how = self.file(key)
                result, what = (False if output == "" and how == "missing" else _match(pattern, output, re.S)), key
            elif key.startswith("process"):
                output, how = None, "the processes running when tuned starts"
                result, what = None, "running processes"
            elif key == "chassis_type":
                output, how = self.chassis()
                result, what = _match(pattern, output, re.I), "the chassis type"
            elif key == "syspurpose_role":
                output, how = self.role()
                result, what = _match(pattern, output, re.I), "the syspurpose role"
            else:
                continue  # tuned ignores other keys (2.25's `replace=1`)
            text = "%s=%s" % (key, value)
            if result is False:
                return False, "%s does not match %s (%s)" % (text, what, how), []
            if result is None:
                verdict = None
                missing.append(how)
                words.append("%s matches %s" % (text, what))
            else:
                words.append(text)
        return verdict, " and ".join(words) or "always", missing

    def virt(self):
        if self._virt is False:
            self._virt = self._read_virt()
        return self._virt

    def _read_virt(self):
        if not any(self.host.exists(path) for path in VIRT_WHAT):
            return "", "virt-what is not installed: tuned reads no output"
        if not self.running:
            return None, "virt-what's output depends on the machine an image boots on"
        container = self.facts.get("container")
        if container and container.detected:
            return None, "virt-what's output in a container"
        machine = self.facts.get("machine")
        if not machine or machine.virtual is None:
            sign = "%s: %s" % (machine.path, machine.sign) if machine else getattr(machine, "reason", "")
            return None, "whether this is a virtual machine, which virt-what tells tuned (%s)" % sign
        if machine.virtual:
            return _VM, "a virtual machine (%s: %s)" % (machine.path, machine.sign)
        return "", "bare metal, where virt-what prints nothing (%s: %s)" % (machine.path, machine.sign)

    def cpe(self):
        if self._cpe is False:
            got = self.host.read_text(SYSTEM_CPE, cap=65536)
            if got.ok:
                self._cpe = (got.data, SYSTEM_CPE)
            elif got.missing:
                self._cpe = ("", "no %s" % SYSTEM_CPE)
            else:
                self._cpe = (None, "%s: %s" % (SYSTEM_CPE, got.describe()))
        return self._cpe

    def file(self, path):
        if not self.running and path.startswith(("/proc/", "/sys/", "/run/", "/dev/")):
            return None, "%s of the running system" % path
        got = self.host.read_text(path, cap=65536)
        if got.missing:
            return "", "missing"
        return (got.data, path) if got.ok else (None, "%s: %s" % (path, got.describe()))

    def chassis(self):
        if self._chassis is False:
            got = self.host.read_text(CHASSIS, cap=64)
            index = got.data.strip() if got.ok else ""
            if not self.running:
                self._chassis = (None, "the chassis of the machine an image boots on")
            elif index.isdigit() and 0 < int(index) < len(_CHASSIS):
                self._chassis = (_CHASSIS[int(index)], "%s: %s" % (CHASSIS, index))
            else:
                # tuned asks dmidecode then, which a tree does not answer.
                self._chassis = (None, "the chassis type (%s: %s)" % (CHASSIS, got.describe() if not got.ok else index[:8]))
        return self._chassis

    def role(self):
        if self._role is False:
            got = self.host.read_text(SYSPURPOSE, cap=65536)
            role = ""
            if got.ok:
                import json

                try:
                    data = json.loads(got.data)
                    role = data.get("role", "") if isinstance(data, dict) and isinstance(data.get("role", ""), str) else ""
                except ValueError:
                    role = ""
            self._role = (role, SYSPURPOSE if got.ok else "no %s" % SYSPURPOSE)
        return self._role


_VM = object()  # a virtual machine whose virt-what output is not known exactly


def _match(pattern, text, flags):
    """re.match as the recommender applies it; None where the text or the pattern is unusable."""
    if text is None or len(pattern) > _MAX_PATTERN or "${" in pattern:
        return None
    try:
        if _nested_repeat(pattern):
            return None
        return re.match(pattern, text, flags) is not None
    except (re.error, RecursionError):
        return None


def _match_vm(pattern):
    results = {_match(pattern, output, re.S) for output in _VM_OUTPUTS}
    return results.pop() if len(results) == 1 else None


# -- what the uname and cpuinfo conditions see ----------------------------------------------


class MatchInputs(Record):
    """What units/manager.py matches uname_regex and cpuinfo_regex against on the next start.

    ``uname`` is the whole string where known; ``fields`` (sysname, nodename, release, version,
    machine) hold None where not known, ``machine_how`` says how the machine was told; ``cpuinfo``
    is /proc/cpuinfo's text (None: not known, ``cpuinfo_how`` says why), ``truncated`` where it
    was capped."""

    __slots__ = ("uname", "fields", "machine_how", "cpuinfo", "cpuinfo_how", "truncated")


# uname's machine from the kernel's build configuration (arch/*/Makefile UTS_MACHINE).
_KCONFIG_MACHINES = (
    ("X86_64", "x86_64"),
    ("ARM64", "aarch64"),
    ("PPC64", "ppc64"),
    ("S390", "s390x"),
    ("RISCV", "riscv64"),
    ("LOONGARCH", "loongarch64"),
)
# Release names that end in the architecture: Debian's flavours, RHEL's and Fedora's.
_RELEASE_MACHINES = {
    "amd64": "x86_64",
    "x86_64": "x86_64",
    "arm64": "aarch64",
    "aarch64": "aarch64",
    "ppc64el": "ppc64le",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loong64": "loongarch64",
}
_MACHINES = ("x86_64", "aarch64", "aarch64_be", "ppc64", "ppc64le", "s390x", "riscv64", "loongarch64", "i386", "i586", "i686", "armv7l")


@fact("tuned_match_inputs")
def tuned_match_inputs(host, facts):
    main = main_conf(host)
    running = bool(facts.get("running"))
    release = facts.get("boot_release") or None
    machine, machine_how = _machine(host, facts, running, release)
    if main.get("uname_string"):
        uname, fields = main["uname_string"], ()
        machine_how = "uname_string in %s" % TUNED_MAIN
    else:
        version = sysname = None
        if running:
            got = host.read_text("/proc/sys/kernel/version", cap=256)
            # The version string is the running kernel's: another kernel at the next boot has its own.
            version = got.data.strip() if got.ok and release == facts.get("release") else None
            got = host.read_text("/proc/sys/kernel/ostype", cap=256)
            sysname = got.data.strip() if got.ok else "Linux"
            name = facts.get("hostname")
        else:
            sysname = "Linux"
            got = host.read_text("/etc/hostname", cap=256)
            name = got.data.strip().split("\n", 1)[0] if got.ok else None
        fields = (sysname, name or None, release, version, machine)
        uname = " ".join(fields) if None not in fields else None
    if main.get("cpuinfo_string"):
        cpuinfo, cpuinfo_how, truncated = main["cpuinfo_string"], "cpuinfo_string in %s" % TUNED_MAIN, False
    elif running:
        got = host.read_text(CPUINFO, cap=CPUINFO_CAP)
        # Each CPU repeats the same lines (a 2 KB flags line 200 times): a regex is searched in
        # each distinct line once, in the order they first appear (the first CPU's block whole).
        distinct = "\n".join(dict.fromkeys(got.data.split("\n"))) if got.ok else None
        cpuinfo, cpuinfo_how, truncated = (
            (distinct, CPUINFO, got.truncated) if got.ok else (None, "%s: %s" % (CPUINFO, got.describe()), False)
        )
    else:
        cpuinfo, cpuinfo_how, truncated = None, "an image does not tell which CPU it boots on", False
    return MatchInputs(uname, fields, machine_how, cpuinfo, cpuinfo_how, truncated)


def _machine(host, facts, running, release):
    """(uname's machine, how it was told), or (None, why not)."""
    if running:
        got = host.read_text("/proc/sys/kernel/arch", cap=256)
        if got.ok and got.data.strip():
            return got.data.strip(), "/proc/sys/kernel/arch"
    from ai_doctor.facts.boot import _boot_config

    config = _boot_config(facts)
    if config:
        for option, name in _KCONFIG_MACHINES:
            if config.get(option) == "y":
                if name == "aarch64" and config.get("CPU_BIG_ENDIAN") == "y":
                    name = "aarch64_be"
                elif name == "ppc64" and config.get("CPU_LITTLE_ENDIAN") == "y":
                    name = "ppc64le"
                return name, "CONFIG_%s=y in %s" % (option, config.source)
    if release:
        tail = release.replace("+", "-").replace(".", "-").split("-")[-1]
        if tail in _RELEASE_MACHINES:
            return _RELEASE_MACHINES[tail], "the kernel release %s" % release
    return None, "the kernel's architecture (no /proc/sys/kernel/arch, no kernel config, and the release name does not say)"


def _search(pattern, text):
    """re.search as units/manager.py applies a unit's regex; None where unusable, or where the
    profile's regex repeats a repetition or an alternation ((a+)+, (a|aa)*), which can take
    exponential time over /proc/cpuinfo: a profile is host text too."""
    # A ${variable} left as written is one aidoctor could not expand (too large, or a function).
    if len(pattern) > _MAX_PATTERN or "${" in pattern:
        return None
    try:
        if _nested_repeat(pattern):
            return None
        return re.search(pattern, text, re.MULTILINE) is not None
    except (re.error, RecursionError):
        return None


_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
_UNUSABLE = "not a regex Python compiles, or one that repeats a repetition, which aidoctor does not run over host text"


def _nested_repeat(pattern) -> bool:
    """Whether the parsed ``pattern`` holds a repeat inside a repeat, an alternation or a
    back-reference inside a repeat (the shapes that backtrack exponentially)."""
    try:
        from re import _parser as parser  # 3.11+
    except ImportError:  # 3.9, 3.10
        import sre_parse as parser

    def parts(value):
        if isinstance(value, parser.SubPattern):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from parts(item)

    def risky(tree, inside):
        for op, value in tree:
            name = str(op)
            if name in _REPEATS:
                if inside:
                    return True
                if any(risky(sub, True) for sub in parts(value)):
                    return True
            elif inside and (name in ("BRANCH", "GROUPREF", "GROUPREF_EXISTS")):
                return True
            elif any(risky(sub, inside) for sub in parts(value)):
                return True
        return _adjacent_wide(tree, parser)

    return risky(parser.parse(pattern), False)


def _adjacent_wide(seq, parser) -> bool:
    """Whether two unbounded repeats of something wide follow each other in ``seq`` with nothing
    required between them (.*.*x, \\w+\\w+): every split between them is tried, in polynomial
    time. A literal between them (.*server.*) leaves one way to split."""
    previous_wide = False
    for op, value in seq:
        name = str(op)
        if name in _REPEATS and value[1] == parser.MAXREPEAT and _wide(value[2]):
            if previous_wide:
                return True
            previous_wide = True
        elif name in _REPEATS and value[0] == 0:
            continue  # optional: separates nothing
        elif name == "SUBPATTERN":
            if previous_wide and _edge_wide(value[-1], parser, last=False):
                return True
            previous_wide = _edge_wide(value[-1], parser, last=True)
        else:
            previous_wide = False
    return False


def _edge_wide(seq, parser, last: bool) -> bool:
    """Whether ``seq`` starts (or with ``last``, ends) with a wide unbounded repeat, optional
    items aside."""
    for op, value in reversed(list(seq)) if last else seq:
        name = str(op)
        if name in _REPEATS and value[1] == parser.MAXREPEAT and _wide(value[2]):
            return True
        if name in _REPEATS and value[0] == 0:
            continue
        return name == "SUBPATTERN" and _edge_wide(value[-1], parser, last)
    return False


def _wide(item) -> bool:
    r"""Whether a repeated item matches most characters: ``.``, a negated set, or a class of
    words, digits or non-spaces (``\s`` and a plain set are narrow)."""
    for op, value in item:
        name = str(op)
        if name == "ANY" or name == "NOT_LITERAL":
            return True
        if name == "IN":
            for inner, arg in value:
                if str(inner) == "NEGATE" or (str(inner) == "CATEGORY" and str(arg) != "CATEGORY_SPACE"):
                    return True
    return False


_WORD = r"[A-Za-z0-9_]+"


def uname_verdict(pattern, inputs):
    """(True/False/None, words) for a uname_regex."""
    if pattern in ("", ".*"):
        return True, "uname_regex=%s matches anything" % pattern
    if inputs.uname is not None:
        result = _search(pattern, inputs.uname)
        shown = "`%s` (the machine from %s)" % (inputs.uname, inputs.machine_how)
        if result is None:
            return None, "uname_regex=%s matches (not known: %s)" % (_short(pattern), _UNUSABLE)
        return result, "uname_regex=%s %s %s" % (pattern, "matches" if result else "does not match", shown)
    known = [field for field in inputs.fields if field is not None]
    machine = inputs.fields[4] if len(inputs.fields) == 5 else None
    if re.fullmatch(_WORD, pattern):
        if any(pattern in field for field in known):
            return True, "uname_regex=%s matches `%s`" % (pattern, " ".join(known))
        # A kernel's version string (`#1 SMP PREEMPT_DYNAMIC` and its build time, scripts/mkcompile_h)
        # names no architecture: a machine name is decided by the other fields.
        if pattern in _MACHINES and machine is not None and inputs.fields[1] is not None:
            return False, "uname_regex=%s does not match the %s kernel (%s)" % (pattern, machine, inputs.machine_how)
    if machine is None:
        return None, "uname_regex=%s matches the kernel's uname (not known: %s)" % (_short(pattern), inputs.machine_how)
    return None, "uname_regex=%s matches the kernel's uname (not known: its version string, which only the running kernel tells)" % _short(
        pattern
    )


def cpuinfo_verdict(pattern, inputs):
    """(True/False/None, words) for a cpuinfo_regex."""
    if pattern in ("", ".*"):
        return True, "cpuinfo_regex=%s matches anything" % pattern
    if inputs.cpuinfo is None:
        return None, "cpuinfo_regex=%s matches %s (not known: %s)" % (_short(pattern), CPUINFO, inputs.cpuinfo_how)
    result = _search(pattern, inputs.cpuinfo)
    if result is None:
        return None, "cpuinfo_regex=%s matches %s (not known: %s)" % (_short(pattern), CPUINFO, _UNUSABLE)
    if result is False and inputs.truncated:
        return None, "cpuinfo_regex=%s matches %s (not known: only its first %d bytes were read)" % (_short(pattern), CPUINFO, CPUINFO_CAP)
    return result, "cpuinfo_regex=%s %s %s" % (_short(pattern), "matches" if result else "does not match", inputs.cpuinfo_how)


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "…"


# -- profiles and their merge ---------------------------------------------------------------


class TunedSetting(Record):
    """One ``key=value`` of a profile: the file and line, the text, the section, its plugin
    (``type=``, else the section's name), the key and the value."""

    __slots__ = ("path", "line", "text", "section", "plugin", "key", "value")


class TunedUnit(Record):
    """One merged section: its ``name``, ``plugin``, ``priority``, the settings tuned hands the
    plugin (option → TunedSetting, merge order), the ``uname_regex`` and ``cpuinfo_regex`` it ends
    with (after variables), and whether tuned makes it an instance here: ``verdict`` True, False
    or None (not known), ``why`` in words."""

    __slots__ = ("name", "plugin", "priority", "settings", "uname_regex", "cpuinfo_regex", "verdict", "why")

    def get(self, key):
        return self.settings.get(key)


class Decision(Record):
    """What tuned sets for one plugin option: ``known``, the ``setting`` (None: nothing sets it)
    and ``why`` it is not known."""

    __slots__ = ("known", "setting", "why")


# tuned's aliases: the vm plugin also takes transparent_hugepage.
_ALIASES = {("vm", "transparent_hugepage"): "transparent_hugepages"}


class TunedProfile(Record):
    """The profiles tuned loads when it next starts, merged: ``names``, ``units`` in the order tuned
    applies them, ``how`` it got the names; where tuned picks its profile at start and which is not
    known, ``alternatives`` ((words, TunedProfile), …) hold each pick instead (units then empty)."""

    __slots__ = ("names", "units", "how", "alternatives")
    _defaults = {"how": "", "alternatives": ()}

    @property
    def settings(self) -> dict:
        """(section, option) → TunedSetting of what tuned certainly applies (for alternatives: the
        same in every one)."""
        if self.alternatives:
            first, *rest = [alt.settings for _why, alt in self.alternatives]
            return {key: s for key, s in first.items() if all(other.get(key) == s for other in rest)}
        return {(u.name, key): s for u in self.units if u.verdict for key, s in u.settings.items()}

    @property
    def uncertain(self):
        """(TunedSetting, why) of what tuned may or may not apply here."""
        if self.alternatives:
            common = self.settings
            return tuple(
                (s, "in %s" % why)
                for why, alt in self.alternatives
                for key, s in {(u.name, k): s for u in alt.units if u.verdict is not False for k, s in u.settings.items()}.items()
                if key not in common
            )
        return tuple((s, u.why) for u in self.units if u.verdict is None for s in u.settings.values())

    @property
    def skipped(self):
        """(TunedSetting, why) of sections tuned skips here (conditions that do not match)."""
        if self.alternatives:
            return ()
        return tuple((s, u.why) for u in self.units if u.verdict is False for s in u.settings.values())

    def unit(self, name):
        for u in self.units:
            if u.name == name:
                return u
        for _why, alt in self.alternatives:
            found = alt.unit(name)
            if found is not None:
                return found
        return None

    def plugin(self, plugin: str):
        """Certain settings of the sections that use ``plugin``, in merge order."""
        return [s for s in self.settings.values() if s.plugin == plugin]

    def get(self, plugin: str, key: str):
        """The setting of ``key`` tuned applies for ``plugin``; None where none does or where that is
        not known (decide() tells the two apart)."""
        decision = self.decide(plugin, key)
        return decision.setting if decision.known else None

    def decide(self, plugin: str, key: str) -> Decision:
        """What tuned sets for ``plugin``'s ``key``: the last instance that sets it wins, except for
        plugins that own devices, whose first instance takes them all."""
        if self.alternatives:
            picks = [(why, alt.decide(plugin, key)) for why, alt in self.alternatives]
            values = {d.setting.value if d.setting is not None else None for _why, d in picks}
            if all(d.known for _why, d in picks) and len(values) == 1:
                return picks[0][1]
            said = "; ".join("%s %s" % (why, _said(d)) for why, d in picks)
            return Decision(False, next((d.setting for _w, d in picks if d.setting is not None), None), "%s: %s" % (self.how, said))
        found, doubt = None, None
        for u in self.units:
            if u.plugin != plugin or u.verdict is False:
                continue
            setting = u.get(key)
            if plugin in DEVICE_PLUGINS:
                if u.verdict is None:
                    return Decision(False, setting, "[%s] takes the devices only where %s" % (u.name, u.why))
                return Decision(True, setting, "")
            if setting is None:
                continue
            if u.verdict:
                found, doubt = setting, None
            else:
                doubt = "[%s] sets %s only where %s" % (u.name, setting.text, u.why)
        if doubt is not None:
            return Decision(False, found, doubt)
        return Decision(True, found, "")


def _said(decision) -> str:
    if not decision.known:
        return "is not known (%s)" % decision.why
    return "sets %s" % decision.setting.text if decision.setting is not None else "sets nothing"


@fact("tuned_profile")
def tuned_profile(host, facts):
    """What tuned sets when it next starts, where it is installed; None where it loads nothing."""
    state = facts.get("tuned")
    if not state or not state.installed:
        return None
    dirs = _profile_dirs(host, state)
    loader = _Loader(host, facts, dirs)
    post = (state.post_loaded,) if state.post_loaded else ()
    if state.base is None:
        # Automatic mode whose pick is not known: every profile the recommender may pick.
        pick = state.recommended
        alternatives, seen = [], set()
        for index, (name, condition) in enumerate(pick.choices if pick else ()):
            if name == "?" or name in seen:
                continue
            seen.add(name)
            label = "%s (picked where %s)" % (name, condition) if index < len(pick.choices) - 1 else "%s (picked otherwise)" % name
            alternatives.append((label, loader.profile((name,) + post, "")))
        if not alternatives:
            return None
        how = "tuned picks its profile when it starts (automatic mode), and which is not known (%s)" % pick.unknown
        return TunedProfile((), (), how, tuple(alternatives))
    names = state.base + post
    if not names:
        return None
    return loader.profile(names, state.how)


def _profile_dirs(host, state):
    if state.user_dir == "/etc/tuned":
        return OLD_DIRS
    listed = [d.strip().rstrip("/") for d in main_conf(host).get("profile_dirs", "").split(",") if d.strip().startswith("/")]
    return tuple(listed) or NEW_DIRS


class _Loader:
    """profiles/loader.py and merger.py over a Host."""

    def __init__(self, host, facts, dirs):
        self.host, self.facts, self.dirs = host, facts, dirs
        self._files = {}

    def _read(self, path):
        if path not in self._files:
            got = self.host.read_text(path, cap=1 << 20)
            self._files[path] = (got, parse_tuned_conf(got.data) if got.ok else {})
        return self._files[path]

    def _locate(self, name, processed):
        """The file of profile ``name``, the user's folder first; "" where every one was loaded already."""
        found = None
        for folder in reversed(self.dirs):
            path = "%s/%s/tuned.conf" % (folder, name.rsplit("/", 1)[-1])
            if path in processed:
                found = ""
                continue
            got, _sections = self._read(path)
            if got.ok:
                return path
        return found

    def profile(self, names, how) -> TunedProfile:
        # loader.py takes names of [a-zA-Z0-9_.-] only. A profile that is not there makes tuned
        # start none (daemon.py _load_profiles); a tree may simply not hold the packaged ones, so
        # it is left out, and said.
        processed, loaded, missing = [], [], []
        self._load([n for n in names if re.fullmatch(_SAFE_NAME, n)], processed, loaded, missing)
        if missing:
            how = "%s (%s not found: left out)" % (how, ", ".join(missing)) if how else "%s not found: left out" % ", ".join(missing)
        return TunedProfile(tuple(names), self._merge(loaded), how)

    def _load(self, names, processed, loaded, missing):
        for raw in names:
            name = raw.strip()
            conditional = name.startswith("-")
            name = name[1:] if conditional else name
            if len(processed) >= _MAX_FILES:
                continue
            path = self._locate(name, processed)
            if path == "":
                continue
            if path is None:
                if not conditional:
                    missing.append("profile %s" % (name or "''"))
                continue
            processed.append(path)
            sections = self._read(path)[1]
            include = sections.get("main", {}).get("include")
            if include is not None:
                if "${" in include[1]:
                    # A variable or a function (${f:exec:…}) that only tuned evaluates.
                    missing.append("%s:%d include=%s" % (path, include[0], include[1]))
                else:
                    self._load(_names(include[1]), processed, loaded, missing)
            loaded.append((path, sections))

    def _merge(self, loaded):
        units = {}  # name → dict, in merge order
        for path, sections in loaded:
            for section, options in sections.items():
                if section == "main":
                    continue
                new = _unit(path, section, options)
                old = units.get(section)
                if old is None or new["replace"]:
                    units[section] = new
                    continue
                old["type"], old["enabled"] = new["type"], new["enabled"]
                for key in ("uname_regex", "cpuinfo_regex", "priority"):
                    if new[key] is not None:
                        old[key] = new[key]
                for dropped in new["drop"]:
                    old["settings"].pop(_ALIASES.get((old["type"], dropped), dropped), None)
                for key, setting in new["settings"].items():
                    old["settings"].pop(key, None)  # keep merge order: the later one last
                    old["settings"][key] = setting
        variables = _variables(self.host, units.pop("variables", None))
        result = []
        for name, unit in units.items():
            plugin = unit["type"]
            settings = {}
            for s in unit["settings"].values():
                option = _ALIASES.get((plugin, s.key), s.key)
                settings[option] = s._replace(plugin=plugin)
            uname = _expand(unit["uname_regex"], variables) if unit["uname_regex"] is not None else None
            cpuinfo = _expand(unit["cpuinfo_regex"], variables) if unit["cpuinfo_regex"] is not None else None
            verdict, why = self._verdict(unit, uname, cpuinfo)
            try:
                priority = int(unit["priority"] or 0)
            except ValueError:
                priority = 0
            result.append(TunedUnit(name, plugin, priority, settings, uname, cpuinfo, verdict, why))
        # Instances are created by priority, a stable sort (units/manager.py create).
        return tuple(sorted(result, key=lambda u: u.priority))

    def _verdict(self, unit, uname, cpuinfo):
        if not _true(unit["enabled"]):
            return False, "enabled=%s" % unit["enabled"]
        if uname is None and cpuinfo is None:
            return True, ""
        inputs = self.facts.get("tuned_match_inputs")
        results = []
        if uname is not None:
            results.append(
                uname_verdict(uname, inputs) if "${" not in uname else (None, "uname_regex=%s matches (not known: a function)" % uname)
            )
        if cpuinfo is not None:
            if results and results[0][0] is False:
                return results[0]
            results.append(
                cpuinfo_verdict(cpuinfo, inputs)
                if "${" not in cpuinfo
                else (None, "cpuinfo_regex=%s matches (not known: a function)" % cpuinfo)
            )
        for value, why in results:
            if value is False:
                return False, why
        unknown = [why for value, why in results if value is None]
        if unknown:
            return None, "; ".join(unknown)
        return True, " and ".join(why for _v, why in results)


def _names(text: str):
    """``a, b;c`` → [a, b, c], as loader.py splits include= and unit.py drop=."""
    return [part.strip() for part in text.replace(";", ",").split(",")]


def _unit(path, section, options):
    """A section as profiles/unit.py reads it: the keys tuned takes for itself, and the rest."""
    own = {key: value for key, (_line, value) in options.items()}
    plugin = own.get("type", section)
    settings = {}
    for key, (line, value) in options.items():
        if key in _UNIT_KEYS:
            continue
        option = _ALIASES.get((plugin, key), key)
        settings.pop(option, None)
        settings[option] = TunedSetting(path, line, "%s=%s" % (key, value), section, plugin, key, value)
    drop = [d for d in _names(own["drop"]) if d] if "drop" in own else []
    return {
        "type": plugin,
        "enabled": own.get("enabled", "1"),
        "replace": _true(own.get("replace", "0")),
        "drop": drop,
        "uname_regex": own.get("uname_regex"),
        "cpuinfo_regex": own.get("cpuinfo_regex"),
        "priority": own.get("priority"),
        "settings": settings,
    }


# Keys profiles/unit.py takes for the unit itself (priority: 2.25; 2.20 passes it as an option).
_UNIT_KEYS = (
    "type",
    "enabled",
    "replace",
    "drop",
    "devices",
    "devices_udev_regex",
    "uname_regex",
    "cpuinfo_regex",
    "script_pre",
    "script_post",
    "priority",
)


def _variables(host, unit):
    """name → value of a [variables] section (profiles/variables.py add_from_cfg): each expanded
    with the ones before it; ``include=`` reads a file of them."""
    found = {}
    if unit is None:
        return found
    for key, setting in unit["settings"].items():
        if key == "include":
            got = host.read_text(setting.value.strip(), cap=65536)
            sections = parse_tuned_conf("[v]\n" + got.data) if got.ok else {}
            for name, (_line, value) in sections.get("v", {}).items():
                if re.fullmatch(_WORD, name):
                    found[name] = _expand(value, found)
        elif re.fullmatch(_WORD, key):
            found[key] = _expand(setting.value, found)
    return found


def _expand(text, variables) -> str:
    """``${name}`` replaced where ``name`` is a variable and no backslash comes before; functions
    (``${f:…}``) and unknown names are left as written."""
    out, start, size = [], 0, 0
    while True:
        begin = text.find("${", start)
        end = text.find("}", begin) if begin >= 0 else -1
        if begin < 0 or end < 0:
            out.append(text[start:])
            return "".join(out)
        name = text[begin + 2 : end]
        out.append(text[start:begin])
        value = variables[name] if name in variables and (begin == 0 or text[begin - 1] != "\\") else None
        # Each ${v} may double the text (v2=${v1}${v1}…): past the cap it stays as written.
        if value is None or size + len(value) > _MAX_EXPANDED:
            value = text[begin : end + 1]
        size += len(value) + begin - start
        out.append(value)
        start = end + 1


def parse_tuned_conf(text: str) -> dict:
    """tuned.conf as {section: {key: (line, value)}}; comments (whole-line, and inline after a
    blank, as tuned's ConfigParser has inline_comment_prefixes=("#",)) and odd lines are
    skipped. A section named twice is one section, a later key winning (strict=False)."""
    sections = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
            continue
        key, sep, value = line.partition("=")
        if sep and current is not None and key.strip():
            # tuned's ConfigParser takes "#" after a blank as the start of a comment.
            current[key.strip()] = (number, re.split(r"\s#", value, maxsplit=1)[0].strip())
    return sections
