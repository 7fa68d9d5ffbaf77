"""The next boot: which kernel the boot loader starts by default, and with which command line.

Boot Loader Specification entries (/boot/loader/entries/*.conf on RHEL 8+, Fedora, and
systemd-boot's on the ESP) name one kernel and its ``options`` each; GRUB's blscfg lists them
newest first and expands ``$kernelopts`` and ``$tuned_params`` from grubenv. Without them,
grub-mkconfig (Debian, Ubuntu, SUSE) writes one entry per /boot/vmlinuz-*, newest first, with
GRUB_CMDLINE_LINUX and then GRUB_CMDLINE_LINUX_DEFAULT from /etc/default/grub and the
/etc/default/grub.d/*.cfg files it sources after it. GRUB_DEFAULT picks the entry (``saved``:
grubenv's saved_entry). /etc/kernel/cmdline is what kernel-install writes into new entries.
"""

from __future__ import annotations

import re

from ai_doctor.facts import Unavailable, fact
from ai_doctor.facts.cmdline import Cmdline, split_cmdline
from ai_doctor.facts.system import installed_kernels, version_key
from ai_doctor.record import Record

GRUB_DEFAULTS = "/etc/default/grub"
GRUB_DROP_INS = "/etc/default/grub.d"
KERNEL_CMDLINE_FILE = "/etc/kernel/cmdline"
BLS_DIRS = ("/boot/loader/entries", "/efi/loader/entries", "/boot/efi/loader/entries")
GRUBENV_PATHS = ("/boot/grub2/grubenv", "/boot/grub/grubenv")
_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*)")
_CMDLINE_VARIABLES = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")


class BootArgs(Record):
    """Kernel parameters a boot loader file sets for the next boot: the file, the line, the
    variable (``GRUB_CMDLINE_LINUX``…, or None for /etc/kernel/cmdline) and the parameters.
    ``keeps`` is where the variable's earlier value goes (``"$GRUB_CMDLINE_LINUX foo"`` keeps
    it first: 0), or None when the assignment replaces it."""

    __slots__ = ("path", "line", "variable", "params", "keeps")
    _defaults = {"keeps": None}

    @property
    def names(self):
        return {param.name for param in self.params}


def _shell_value(text: str) -> str:
    """The value of a one-line shell assignment: the quoted string, or the word up to a blank."""
    text = text.strip()
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        return text[1:end] if end != -1 else text[1:]
    return text.split(None, 1)[0] if text else ""


def grub_variables(text: str) -> dict:
    """name → (line number, value) of a /etc/default/grub file's assignments, the last winning."""
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _ASSIGNMENT.match(line)
        if match:
            found[match.group(1)] = (number, _shell_value(match.group(2)))
    return found


def parse_grub_defaults(text: str, path: str):
    """GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT assignments of a /etc/default/grub file."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _ASSIGNMENT.match(line)
        if not match or match.group(1) not in _CMDLINE_VARIABLES:
            continue
        variable = match.group(1)
        params, keeps = [], None
        for param in split_cmdline(_shell_value(match.group(2))):
            if param.name.startswith("$"):
                # ``$GRUB_CMDLINE_LINUX`` (or ``${…}``) keeps the variable's earlier value there.
                if param.name.strip("${}") == variable and keeps is None:
                    keeps = len(params)
                continue
            params.append(param)
        found.append(BootArgs(path, number, variable, tuple(params), keeps))
    return found


class GrubFiles(Record):
    """/etc/default/grub and the drop-ins after it: ``files`` are (path, text) in the order
    grub-mkconfig sources them."""

    __slots__ = ("files",)

    def variable(self, name: str):
        """(path, line, value) of the last assignment of ``name``, or None."""
        found = None
        for path, text in self.files:
            value = grub_variables(text).get(name)
            if value is not None:
                found = (path, value[0], value[1])
        return found


@fact("grub_files")
def grub_files(host, facts):
    paths = [GRUB_DEFAULTS]
    listing = host.listdir(GRUB_DROP_INS)
    if listing.ok:
        paths += ["%s/%s" % (GRUB_DROP_INS, name) for name in sorted(listing.data) if name.endswith(".cfg")]
    files = []
    for path in paths:
        got = host.read_text(path, cap=1 << 20)
        if got.ok:
            files.append((path, got.data))
    return GrubFiles(tuple(files))


@fact("boot_args")
def boot_args(host, facts):
    """What the boot loader files give the next boot: the GRUB defaults files and
    /etc/kernel/cmdline (kernel-install)."""
    found = []
    for path, text in facts.get("grub_files").files:
        found += parse_grub_defaults(text, path)
    got = host.read_text(KERNEL_CMDLINE_FILE, cap=65536)
    if got.ok:
        found.append(BootArgs(KERNEL_CMDLINE_FILE, 1, None, tuple(split_cmdline(" ".join(got.data.split())))))
    return tuple(found)


# -- Boot Loader Specification entries and grubenv ------------------------------------------


class BootEntry(Record):
    """One BLS entry: its file, id (the file name without ``.conf``), title, kernel release and
    ``options`` lines as (line number, text)."""

    __slots__ = ("path", "id", "title", "version", "options")


def parse_bls_entry(text: str, path: str) -> BootEntry:
    """A loader entry: ``key value`` lines; ``options`` may repeat (they are joined)."""
    fields = {}
    options = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "options":
            options.append((number, value))
        else:
            fields.setdefault(key, value)
    name = path.rsplit("/", 1)[1]
    entry_id = name[: -len(".conf")] if name.endswith(".conf") else name
    version = fields.get("version") or ""
    if not version:
        # ``linux /vmlinuz-5.14.0-362.el9.x86_64`` names the release too.
        kernel = fields.get("linux", "").rsplit("/", 1)[-1]
        version = kernel[len("vmlinuz-") :] if kernel.startswith("vmlinuz-") else ""
    return BootEntry(path, entry_id, fields.get("title", ""), version, tuple(options))


def parse_grubenv(text: str) -> dict:
    """grubenv's ``name=value`` lines (the block is padded with ``#``)."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name and not name.startswith("#"):
            found[name] = value
    return found


class Grubenv(Record):
    __slots__ = ("path", "values")


@fact("grubenv")
def grubenv(host, facts):
    for path in GRUBENV_PATHS:
        got = host.read_text(path, cap=65536)
        if got.ok:
            return Grubenv(path, parse_grubenv(got.data))
    return None


@fact("boot_entries")
def boot_entries(host, facts):
    """BLS entries in the order GRUB and systemd-boot list them: newest release first. Empty
    where the boot loader does not read them (GRUB_ENABLE_BLSCFG=false)."""
    setting = facts.get("grub_files").variable("GRUB_ENABLE_BLSCFG")
    if setting is not None and setting[2] != "true":
        return ()
    entries = []
    for folder in BLS_DIRS:
        listing = host.listdir(folder)
        for name in sorted(listing.data) if listing.ok else ():
            if not name.endswith(".conf"):
                continue
            path = "%s/%s" % (folder, name)
            got = host.read_text(path, cap=65536)
            if got.ok:
                entries.append(parse_bls_entry(got.data, path))
        if entries:
            break
    return tuple(sorted(entries, key=lambda e: version_key(e.version or e.id), reverse=True))


# -- the default kernel -------------------------------------------------------------------


class DefaultBoot(Record):
    """The kernel the boot loader starts by default: its release, how that was decided (words),
    and its BLS entry where there is one."""

    __slots__ = ("release", "how", "entry")
    _defaults = {"entry": None}


@fact("default_boot")
def default_boot(host, facts):
    entries = facts.get("boot_entries")
    grub = facts.get("grub_files")
    env = facts.get("grubenv")
    chosen = grub.variable("GRUB_DEFAULT")
    selector, said = ("0", None) if chosen is None else (chosen[2], "GRUB_DEFAULT=%s at %s:%d" % (chosen[2], chosen[0], chosen[1]))
    if selector == "saved":
        saved = env.values.get("saved_entry") if env else None
        if saved:
            selector, said = saved, "GRUB_DEFAULT=saved and the saved_entry in %s" % env.path
        else:
            selector, said = "0", "GRUB_DEFAULT=saved with no saved_entry in grubenv"
    if entries:
        return _default_entry(entries, selector, said)
    kernels = _boot_kernels(host)
    if not kernels:
        return Unavailable("no kernel installed (nothing in /boot/vmlinuz-*, /lib/modules or /usr/lib/modules)")
    newest = kernels[-1]
    if selector.strip() in ("", "0"):
        return DefaultBoot(newest, "the newest installed" + (", by %s" % said if said else ""))
    named = _release_in(selector, kernels)
    if named:
        return DefaultBoot(named, said)
    submenu = re.fullmatch(r"\s*1\s*>\s*(\d+)\s*", selector)
    if submenu:
        # grub-mkconfig's "Advanced options" submenu: each kernel, newest first, followed by
        # its recovery entry unless GRUB_DISABLE_RECOVERY=true.
        recovery = grub.variable("GRUB_DISABLE_RECOVERY")
        step = 1 if recovery is not None and recovery[2] == "true" else 2
        index = int(submenu.group(1)) // step
        ordered = list(reversed(kernels))
        if index < len(ordered):
            return DefaultBoot(ordered[index], said)
    return DefaultBoot(newest, "the newest installed: %s names no installed kernel" % said)


def _default_entry(entries, selector, said):
    words = ", by %s" % said if said else ""
    for entry in entries:
        if selector in (entry.id, entry.title):
            return DefaultBoot(entry.version, "the boot entry %s%s" % (entry.path, words), entry)
    if selector.strip().isdigit() and int(selector) < len(entries):
        entry = entries[int(selector)]
        how = (
            "the newest boot entry, %s%s" % (entry.path, words) if int(selector) == 0 else "entry %s, %s%s" % (selector, entry.path, words)
        )
        return DefaultBoot(entry.version, how, entry)
    named = _release_in(selector, [e.version for e in entries])
    for entry in entries:
        if named and entry.version == named:
            return DefaultBoot(entry.version, "the boot entry %s%s" % (entry.path, words), entry)
    entry = entries[0]
    return DefaultBoot(entry.version, "the newest boot entry, %s: %s names no entry" % (entry.path, said or "the default"), entry)


def _boot_kernels(host):
    """Releases grub-mkconfig makes entries for (those with /boot/vmlinuz-*), else every
    installed one; oldest first."""
    kernels = installed_kernels(host)
    boot = host.listdir("/boot")
    with_image = {name[len("vmlinuz-") :] for name in (boot.data if boot.ok else ()) if name.startswith("vmlinuz-")}
    return [k for k in kernels if k in with_image] or kernels


def _release_in(text: str, releases):
    """The longest release named inside ``text`` (a menu title or id), or None."""
    named = [r for r in releases if r and r in text]
    return max(named, key=len) if named else None


# -- the next boot's command line -----------------------------------------------------------


@fact("boot_line")
def boot_line(host, facts):
    """The command line the default kernel gets at the next boot, each parameter with the file
    and line that sets it."""
    default = facts.get("default_boot")
    entry = default.entry if default else None
    if entry is not None:
        return _entry_line(entry, facts.get("grubenv"))
    args = facts.get("boot_args")
    grub = [a for a in args if a.variable]
    if grub:
        return _grub_line(grub)
    own = [a for a in args if a.variable is None]
    if own:
        return _line([(p, (own[0].path, own[0].line)) for p in own[0].params], own[0].path)
    return Unavailable("no boot loader configuration to read the kernel command line from (%s)" % _looked_at())


def _looked_at() -> str:
    return ", ".join((GRUB_DEFAULTS, KERNEL_CMDLINE_FILE, BLS_DIRS[0] + "/*.conf"))


def _line(pairs, source) -> Cmdline:
    params = tuple(p for p, _ in pairs)
    return Cmdline(" ".join(p.text for p in params), params, source, tuple(o for _, o in pairs))


def _grub_line(args) -> Cmdline:
    """grub-mkconfig's normal entry: GRUB_CMDLINE_LINUX, then GRUB_CMDLINE_LINUX_DEFAULT, each
    as the shell leaves it after every file is sourced."""
    values = {name: [] for name in _CMDLINE_VARIABLES}
    for item in args:
        new = [(p, (item.path, item.line)) for p in item.params]
        if item.keeps is not None:
            new = new[: item.keeps] + values[item.variable] + new[item.keeps :]
        values[item.variable] = new
    return _line(values["GRUB_CMDLINE_LINUX"] + values["GRUB_CMDLINE_LINUX_DEFAULT"], GRUB_DEFAULTS)


def _entry_line(entry, env) -> Cmdline:
    """An entry's options, with ``$name`` taken from grubenv as GRUB's blscfg expands it."""
    pairs = []
    for number, text in entry.options:
        for param in split_cmdline(text):
            if not param.name.startswith("$"):
                pairs.append((param, (entry.path, number)))
                continue
            value = env.values.get(param.name.strip("${}"), "") if env else ""
            pairs += [(p, (env.path, None)) for p in split_cmdline(value) if not p.name.startswith("$")]
    return _line(pairs, entry.path)
