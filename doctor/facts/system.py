"""Who and what the target is: kernel release, hostname, distribution, user, admin tools."""

from __future__ import annotations

import re

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.facts.shellvars import OPENERS, ends_script, shell_commands
from ai_doctor.record import Record

OSRELEASE = "/proc/sys/kernel/osrelease"
TOOL_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
TOOLS = ("grubby", "update-grub", "grub2-mkconfig", "grub-mkconfig", "tuned-adm", "cpupower", "udevadm", "kernel-install")


@fact("release")
def release(host, facts):
    """The running kernel's release; in an image, the kernel its boot loader starts by default."""
    got = host.read_text(OSRELEASE, cap=4096)
    if not got.ok and got.missing and not facts.get("running"):
        default = facts.get("default_boot")
        if not default:
            return Unavailable("an image with %s" % default.reason)
        if not usable_release(default.release):
            # An empty or crafted ``version`` line; it would name /boot/config- or climb out of /lib/modules.
            return Unavailable("the default boot entry (%s) names no usable kernel release: %r" % (default.how, default.release[:80]))
        return default.release
    if not got.ok:
        return unreadable(host, got, "cannot read the kernel release from")
    text = got.data.strip()
    if not usable_release(text):
        return Unavailable("%s holds no release: %r" % (OSRELEASE, text[:80]))
    return text


def usable_release(text: str) -> bool:
    """A release is one file name (it names /boot/config-R and /lib/modules/R); utsname holds 64 bytes."""
    return bool(text) and len(text) <= 64 and text not in (".", "..") and not any(c.isspace() or c in "/\x00" for c in text)


def installed_kernels(host):
    """Kernel releases installed in a tree, oldest first by version order."""
    found = set()
    for folder in ("/lib/modules", "/usr/lib/modules"):
        listing = host.listdir(folder)
        found.update(name for name in (listing.data if listing.ok else ()) if _plausible(name))
    boot = host.listdir("/boot")
    for name in boot.data if boot.ok else ():
        for prefix in ("vmlinuz-", "config-"):
            if name.startswith(prefix) and _plausible(name[len(prefix) :]):
                found.add(name[len(prefix) :])
    return sorted(found, key=version_key)


def _plausible(name: str) -> bool:
    return bool(name) and name[0].isdigit() and "/" not in name and not name.endswith((".old", ".bak"))


def version_key(release_text: str):
    """6.8.0-45-generic → (6, 8, 0, 45, 'generic'): numbers compared as numbers."""
    import re

    # Numbers compare by length, then digits: no int() of a crafted thousand-digit part.
    parts = re.findall(r"\d+|[^\d.\-+~_]+", release_text)
    return tuple((0, len(part.lstrip("0")), part.lstrip("0")) if part.isdigit() else (1, 0, part) for part in parts)


def kernel_version(release_text) -> tuple:
    """(major, minor) of a release such as ``6.1.0-56-amd64``; (0, 0) when unreadable."""
    numbers = []
    for part in str(release_text or "").split("-", 1)[0].split(".")[:2]:
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits or len(digits) > 9:
            break
        numbers.append(int(digits))
    return tuple(numbers) if len(numbers) == 2 else (0, 0)


@fact("hostname")
def hostname(host, facts):
    for path in ("/proc/sys/kernel/hostname", "/etc/hostname"):
        got = host.read_text(path, cap=4096)
        if got.ok and got.data.strip():
            return got.data.strip().splitlines()[0][:253]
    recorded = host.manifest.get("hostname")
    if isinstance(recorded, str) and recorded:
        return recorded[:253]
    return Unavailable("no hostname in /proc/sys/kernel/hostname or /etc/hostname")


@fact("nodename")
def nodename(host, facts):
    """The running kernel's host name (``uname -n``), as /proc has it; None for an image, or
    where /proc does not say (/etc/hostname may be another spelling)."""
    if not facts.get("running"):
        return None
    got = host.read_text("/proc/sys/kernel/hostname", cap=4096)
    name = got.data.strip() if got.ok else ""
    return name if name and "\n" not in name else None


class OsRelease(Record):
    """/etc/os-release as a mapping (os-release(5)); ``family`` groups distributions."""

    __slots__ = ("fields", "path")

    @property
    def pretty(self) -> str:
        return self.fields.get("PRETTY_NAME") or self.fields.get("NAME") or self.fields.get("ID", "Linux")

    @property
    def family(self) -> str:
        """``debian``, ``rhel``, ``suse``, ``arch`` or the distribution's own ID."""
        ids = [self.fields.get("ID", "")] + self.fields.get("ID_LIKE", "").split()
        for family, members in _FAMILIES:
            if any(i in members or i.startswith(members) for i in ids if i):
                return family
        return ids[0] or "linux"


_FAMILIES = (
    ("debian", ("debian", "ubuntu")),
    ("rhel", ("rhel", "fedora", "centos")),
    ("suse", ("suse", "opensuse", "sles")),
    ("arch", ("arch",)),
)


def parse_os_release(text: str) -> dict:
    """KEY=value lines with shell-style quoting, as os-release(5) allows."""
    fields = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
            value = value.replace('\\"', '"').replace("\\\\", "\\").replace("\\$", "$").replace("\\`", "`")
        fields[key] = value
    return fields


@fact("os_release")
def os_release(host, facts):
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        got = host.read_text(path, cap=65536)
        if got.ok:
            return OsRelease(parse_os_release(got.data), path)
    return Unavailable("no /etc/os-release or /usr/lib/os-release")


class Identity(Record):
    """The user the target was read as (None: unknown, e.g. a mounted image), whether that was
    on this machine (``live``) or in a tree taken elsewhere, and who reads it now (``reader``)."""

    __slots__ = ("euid", "live", "reader")

    @property
    def is_root(self):
        return None if self.euid is None else self.euid == 0


@fact("identity")
def identity(host, facts):
    return Identity(host.euid, host.live, host.reader_uid)


BOOT_FILES = ("/etc/default/grub", "/etc/kernel/cmdline")


@fact("tools")
def tools(host, facts):
    """Admin tools installed on the target, by name → path, so fixes name ones that exist;
    boot loader configuration files (BOOT_FILES) that exist are listed under their path."""
    found = {}
    for name in TOOLS:
        for directory in TOOL_DIRS:
            path = "%s/%s" % (directory, name)
            got, info = host.stat(path)
            if got.ok and info.is_file and info.executable:
                found[name] = path
                break
    for path in BOOT_FILES:
        got, info = host.stat(path)
        if got.ok and info.is_file:
            found[path] = path
    return found


@fact("running")
def running(host, facts):
    """Whether the target is a running system (live, or a snapshot with /proc), not an image."""
    # Present counts, readable or not: a snapshot taken without root still had a /proc.
    return host.live or any(not host.stat(path)[0].missing for path in ("/proc/self", "/proc/meminfo"))


# Ubuntu's ondemand.service switches every CPU to ondemand/powersave shortly after boot,
# whatever the kernel's default governor was.
ONDEMAND_UNITS = ("/lib/systemd/system/ondemand.service", "/usr/lib/systemd/system/ondemand.service")
ONDEMAND_WANTED = "/etc/systemd/system/multi-user.target.wants/ondemand.service"


def masked(host, unit: str) -> bool:
    """Whether ``systemctl mask`` linked the unit to /dev/null: systemd then never starts it,
    whatever .wants links remain."""
    return any(host.readlink("%s/%s" % (folder, unit)).data == "/dev/null" for folder in ("/etc/systemd/system", "/run/systemd/system"))


@fact("ondemand_unit")
def ondemand_unit(host, facts):
    """The path of an enabled (and not masked) ondemand.service, or None."""
    if not host.exists(ONDEMAND_WANTED) or masked(host, "ondemand.service"):
        return None
    return next((path for path in ONDEMAND_UNITS if host.exists(path)), ONDEMAND_WANTED)


RC_LOCAL_PATHS = ("/etc/rc.local", "/etc/rc.d/rc.local")


class RcLocal(Record):
    """/etc/rc.local as boot would run it: the file (a link followed to its target), whether it
    may be executed, and its lines; ``exits`` and ``spans``, what exit_lines() and commands()
    find, read once where the fact is made (None: found when asked)."""

    __slots__ = ("path", "executable", "lines", "exits", "spans")
    _defaults = {"exits": None, "spans": None}

    @property
    def has_interpreter(self) -> bool:
        """An interpreter line the kernel can run: ``#!/bin/sh`` ending in a carriage return
        (CRLF line endings) names ``/bin/sh\\r``, which does not exist."""
        return bool(self.lines) and self.lines[0].startswith("#!") and not self.crlf

    @property
    def crlf(self) -> bool:
        return bool(self.lines) and self.lines[0].endswith("\r")

    @property
    def exit_line(self):
        """The first line that ends the script whatever happens: an ``exit`` (any status, any
        comment) or ``exec COMMAND`` outside every if, case, loop, brace group and subshell,
        and not inside a here-document; None when there is none."""
        return next(iter(self.exit_lines()), None)

    def exit_lines(self):
        """Every line that ends the script whatever happens (see exit_line), in order."""
        return self.exits if self.exits is not None else _exit_lines(self.lines)

    def command_at(self, number: int):
        """(first, last) line of the top-level command holding line ``number``: commenting out
        less (a line of an if block, part of a continued line) would leave the rest unable to
        parse, or running alone."""
        import bisect

        spans = self.commands()
        at = bisect.bisect_right(spans, (number, len(self.lines) + 1)) - 1
        return spans[at] if at >= 0 and spans[at][0] <= number <= spans[at][1] else (number, number)

    def commands(self):
        """(first, last) line numbers of each top-level command: one line, one continued with
        backslashes, or an if/case/loop/group/subshell with its body, a here-document included."""
        return self.spans if self.spans is not None else _command_spans(self.lines)

    def runs(self, number: int) -> bool:
        """Whether line ``number`` runs at boot: systemd starts only an executable rc.local,
        which needs an interpreter line, and nothing after a top-level exit is reached."""
        end = self.exit_line
        return self.executable and self.has_interpreter and (end is None or number < end)


# Compiled on first use, as rc.local is rare.
_HEREDOC_MARK = r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1"


def _exit_lines(lines):
    stack = []
    heredoc = None
    found = []
    for number, line in enumerate(lines, 1):
        if heredoc is not None:
            if line.rstrip("\r").lstrip("\t") == heredoc:
                heredoc = None
            continue
        for separator, words in shell_commands(line):
            word = words[0]
            if word in OPENERS:
                stack.append(word)
            elif stack and word == OPENERS[stack[-1]]:
                stack.pop()
            elif not stack and ends_script(separator, words) and found[-1:] != [number]:
                found.append(number)
        marker = re.search(_HEREDOC_MARK, line) if "<<" in line else None
        if marker:
            heredoc = marker.group(2)
    return tuple(found)


def _command_spans(lines):
    spans = []
    stack = []
    heredoc = None
    start = None
    for number, line in enumerate(lines, 1):
        if start is None:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = number
        if heredoc is not None:
            if line.rstrip("\r").lstrip("\t") == heredoc:
                heredoc = None
        else:
            for _separator, words in shell_commands(line):
                if words[0] in OPENERS:
                    stack.append(words[0])
                elif stack and words[0] == OPENERS[stack[-1]]:
                    stack.pop()
            marker = re.search(_HEREDOC_MARK, line) if "<<" in line else None
            if marker:
                heredoc = marker.group(2)
        if not stack and heredoc is None and not line.rstrip("\r").endswith("\\"):
            spans.append((start, number))
            start = None
    if start is not None:
        spans.append((start, len(lines)))
    return tuple(spans)


@fact("rc_local")
def rc_local(host, facts):
    """The first rc.local that exists (/etc/rc.local is a link to /etc/rc.d/rc.local on RHEL),
    or None."""
    for path in RC_LOCAL_PATHS:
        got, info = host.stat(path)
        if not got.ok or not info.is_file:
            continue
        text = host.read_text(path, cap=1 << 20)
        if not text.ok:
            return unreadable(host, text, "cannot read")
        # Lines as sh and sed count them: at newlines only (splitlines would also break at
        # form feeds and other separators, and line numbers in fixes would point elsewhere).
        lines = tuple(text.data.split("\n"))
        return RcLocal(path, info.executable, lines, _exit_lines(lines), _command_spans(lines))
    return None
