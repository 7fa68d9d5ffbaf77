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

from ai_doctor.facts import Unavailable, fact, unreadable
from ai_doctor.facts.cmdline import Cmdline, Param, split_cmdline, split_words
from ai_doctor.facts.shellvars import UNKNOWN, NotEvaluable, assignments, evaluate
from ai_doctor.facts.system import installed_kernels, version_key
from ai_doctor.model import Evidence
from ai_doctor.record import Record

GRUB_DEFAULTS = "/etc/default/grub"
GRUB_DROP_INS = "/etc/default/grub.d"
KERNEL_CMDLINE_FILE = "/etc/kernel/cmdline"
BLS_DIRS = ("/boot/loader/entries", "/efi/loader/entries", "/boot/efi/loader/entries")
GRUBENV_PATHS = ("/boot/grub2/grubenv", "/boot/grub/grubenv")
_CMDLINE_VARIABLES = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")


class BootArgs(Record):
    """Kernel parameters a boot loader file sets for the next boot: the file, the line, the
    variable (``GRUB_CMDLINE_LINUX``…, or None for /etc/kernel/cmdline) and the parameters the
    line itself names (what fixes edit; the line's value is GrubFiles' to evaluate)."""

    __slots__ = ("path", "line", "variable", "params")

    @property
    def names(self):
        return {param.name for param in self.params}


def parse_grub_defaults(text: str, path: str):
    """GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT assignments of a /etc/default/grub file,
    with the parameters written on each line (``$…`` references left out)."""
    found = []
    for number, variable, raw, _why_not in assignments(text):
        if variable not in _CMDLINE_VARIABLES or raw is None:
            continue
        found.append(BootArgs(path, number, variable, _written_params(raw)))
    return found


def _written_params(raw: str):
    """The parameters an assignment's right-hand side names itself: with every variable empty,
    what the line adds is what is left (``${X:+$X }thp=never`` → ``thp=never``)."""
    try:
        written = evaluate(raw, {})
    except NotEvaluable:
        written = " ".join(re.split(r"[\s\"'{}]+", raw))
    return tuple(p for p in split_cmdline(written) if p.name and not p.name.startswith(("$", "#")))


class GrubSetting(Record):
    """A variable as sh leaves it after every GRUB defaults file is sourced: its value (None:
    unset), the file and line of the last assignment, and ``problem`` where it could not be
    evaluated (its value is then unknown)."""

    __slots__ = ("name", "value", "path", "line", "problem")
    _defaults = {"problem": None}


class GrubFiles(Record):
    """/etc/default/grub and the drop-ins after it: ``files`` are (path, text) in the order
    grub-mkconfig sources them; ``settings`` each variable's GrubSetting; ``history`` each
    assignment of a command-line variable as (name, path, line, right-hand side)."""

    __slots__ = ("files", "settings", "history")

    def variable(self, name: str):
        """(path, line, value) of ``name`` when it is set and could be evaluated, else None."""
        setting = self.settings.get(name)
        if setting is None or setting.problem or setting.value is None:
            return None
        return setting.path, setting.line, setting.value


def evaluate_grub_files(files):
    """Each variable's value after the files are sourced in order, without running them."""
    env, settings, history = {}, {}, []
    for path, text in files:
        for number, name, raw, why_not in assignments(text):
            if why_not:
                value, problem = UNKNOWN, why_not
            elif raw is None:
                value, problem = None, None  # unset
            else:
                try:
                    value, problem = evaluate(raw, env), None
                except NotEvaluable as exc:
                    value, problem = UNKNOWN, str(exc)
            env[name] = value
            settings[name] = GrubSetting(name, None if value is UNKNOWN else value, path, number, problem)
            if name in _CMDLINE_VARIABLES:
                history.append((name, path, number, raw or ""))
    return settings, tuple(history)


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
    settings, history = evaluate_grub_files(files)
    return GrubFiles(tuple(files), settings, history)


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
    """grubenv's values; ``refused`` says why a grubenv that exists could not be read (its
    values are then unknown, never taken as unset)."""

    __slots__ = ("path", "values", "refused")
    _defaults = {"refused": None}

    def unknown(self) -> str:
        return "grubenv (%s) could not be read (%s)" % (self.path, self.refused)


@fact("grubenv")
def grubenv(host, facts):
    refused = None
    for path in GRUBENV_PATHS:
        got = host.read_text(path, cap=65536)
        if got.ok:
            return Grubenv(path, parse_grubenv(got.data))
        if refused is None and not got.missing:
            refused = Grubenv(path, {}, got.describe())
    return refused


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


# -- grub.cfg: what GRUB itself reads ---------------------------------------------------------

GRUB_CFG_PATHS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg")
_LINUX = ("linux", "linuxefi", "linux16")
_SHLEX_BLANKS = frozenset(" \t\r\n")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Submenus deeper than this are not followed (grub-mkconfig writes one level): each entry
# carries the titles above it, so depth times entries must stay small.
MAX_MENU_DEPTH = 16


class MenuEntry(Record):
    """A grub.cfg menuentry: its titles and ids from the top (a submenu's, then its own), its
    position (``(1, 2)`` is GRUB_DEFAULT="1>2"), the kernel's release and its parameters with
    the line they are on."""

    __slots__ = ("titles", "ids", "position", "release", "params", "line")


class GrubMenu(Record):
    """grub.cfg's entries in order, its ``set default=``, and the variables it sets outside
    the entries (name → (value, line)): ``kernelopts`` on RHEL 8, the ``tuned_params`` that
    tuned's bootloader plugin writes, which entries' ``$name`` words take."""

    __slots__ = ("path", "entries", "default", "variables")

    @property
    def kernelopts(self):
        return self.variables.get("kernelopts")


def _words(text: str):
    """Words as ``shlex.split`` makes them (blanks separate; '…' keeps everything; in "…" a
    backslash escapes only ``"`` and itself, outside quotes any character), in one pass:
    shlex builds each word a character at a time, quadratic in a long one. Unbalanced quotes:
    the words between blanks."""
    words, word = [], []
    quote, escaped, started = None, False, False
    for char in text:
        if escaped:
            if quote == '"' and char not in '"\\':
                word.append("\\")
            word.append(char)
            escaped = False
        elif quote == "'":
            if char == "'":
                quote = None
            else:
                word.append(char)
        elif char == "\\":
            escaped = started = True
        elif quote == '"':
            if char == '"':
                quote = None
            else:
                word.append(char)
        elif char in "'\"":
            quote, started = char, True
        elif char in _SHLEX_BLANKS:
            if started:
                words.append("".join(word))
                word, started = [], False
        else:
            word.append(char)
            started = True
    if quote is not None or escaped:
        return text.split()
    if started:
        words.append("".join(word))
    return words


def _menu_opening(line: str):
    """(``menuentry`` or ``submenu``, its arguments) when ``line`` (stripped) opens one: the
    keyword, a blank, anything, ``{`` at the end; else None."""
    keyword = line[:9] if line.startswith("menuentry") else line[:7] if line.startswith("submenu") else None
    if keyword is None or len(line) == len(keyword) or not line[len(keyword)].isspace() or not line.endswith("{"):
        return None
    return keyword, line[len(keyword) : -1].strip()


def _set_line(line: str):
    """(name, value as written) of a ``set NAME=VALUE`` line (stripped), else None."""
    if not line.startswith("set") or len(line) == 3 or not line[3].isspace():
        return None
    name, sep, value = line[4:].lstrip().partition("=")
    if not sep or not name or name[0].isdigit() or not _NAME_CHARS.issuperset(name):
        return None
    return name, value


def parse_grub_cfg(text: str, path: str) -> GrubMenu:
    entries, levels, counters = [], [], [0]
    current = None
    default = None
    variables = {}
    hidden = 0  # menus open below MAX_MENU_DEPTH, whose entries are not followed
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        opened = _menu_opening(line) if line[:1] in ("m", "s") else None
        if opened:
            if hidden or len(levels) >= MAX_MENU_DEPTH:
                hidden += 1  # closed by its own "}"
                continue
            words = _words(opened[1])
            title = words[0] if words else ""
            ident = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("$menuentry_id_option", "--id")), "")
            position = tuple(level[2] for level in levels) + (counters[-1],)
            counters[-1] += 1
            if opened[0] == "submenu":
                levels.append((title, ident, position[-1]))
                counters.append(0)
            else:
                current = [title, ident, position, None, (), number]
            continue
        first = line.split(None, 1)[0] if line else ""
        if current is not None and first in _LINUX:
            parts = line.split(None, 2)
            kernel = parts[1].rsplit("/", 1)[-1] if len(parts) > 1 else ""
            current[3] = kernel[len("vmlinuz-") :] if kernel.startswith(("vmlinuz-", "vmlinux-")) else None
            # $vt_handoff, $tuned_params and the like stay, to be expanded where the line is read.
            current[4] = tuple(split_cmdline(parts[2] if len(parts) > 2 else ""))
            current[5] = number
            continue
        if line == "}":
            if current is not None:
                titles = tuple(level[0] for level in levels) + (current[0],)
                ids = tuple(level[1] for level in levels) + (current[1],)
                entries.append(MenuEntry(titles, ids, current[2], current[3], current[4], current[5]))
                current = None
            elif hidden:
                hidden -= 1
            elif levels:
                levels.pop()
                counters.pop()
            continue
        found = _set_line(line) if current is None and first == "set" else None
        if found:
            value = found[1].strip().strip('"').strip("'")
            if found[0] == "default":
                if value != "${next_entry}":
                    default = value
            else:
                variables[found[0]] = (value, number)
    return GrubMenu(path, tuple(entries), default, variables)


@fact("grub_menu")
def grub_menu(host, facts):
    """grub.cfg as grub-mkconfig last wrote it, or None. On BLS systems it holds no
    menuentries (blscfg reads the entries at boot)."""
    for path in GRUB_CFG_PATHS:
        got = host.read_text(path, cap=8 << 20)
        if got.ok:
            return parse_grub_cfg(got.data, path)
        if not got.missing:
            # There, but closed to this user (or not a file): what GRUB boots is not known.
            return unreadable(host, got, "cannot read")
    return None


def _menu_entry(menu, selector: str):
    """The grub.cfg entry a GRUB default names: a position (``1>2``), titles or ids joined by
    ``>``, or text naming a release; None when it names none."""
    kernels = [e for e in menu.entries if e.release]
    parts = [part.strip() for part in selector.split(">")]
    wanted = tuple(_small_int(part) for part in parts)
    if None not in wanted:
        return next((e for e in kernels if e.position == wanted), None)
    for entry in kernels:
        if len(entry.titles) == len(parts) and all(p in (t, i) for p, t, i in zip(parts, entry.titles, entry.ids)):
            return entry
    named = _release_in(selector, [e.release for e in kernels])
    return next((e for e in kernels if e.release == named), None) if named else None


@fact("loader_default")
def loader_default(host, facts):
    """systemd-boot's choice: loader.conf's ``default`` glob (loader.conf(5)) matched against
    the entries in menu order, or None where there is no such line."""
    entries = facts.get("boot_entries")
    if not entries:
        return None
    folder = entries[0].path.rsplit("/entries/", 1)[0]
    got = host.read_text(folder + "/loader.conf", cap=65536)
    pattern = None
    for line in got.data.splitlines() if got.ok else ():
        words = line.split(None, 1)
        if len(words) == 2 and words[0] == "default":
            pattern = words[1].strip()
    if not pattern or pattern.startswith("@"):
        return None  # @saved and the like live in EFI variables, not in the tree
    import fnmatch

    for entry in entries:
        name = entry.path.rsplit("/", 1)[1]
        if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(entry.id, pattern):
            return DefaultBoot(entry.version, "the boot entry %s, by default %s in %s/loader.conf" % (entry.path, pattern, folder), entry)
    return None


# -- the default kernel -------------------------------------------------------------------


class DefaultBoot(Record):
    """The kernel the boot loader starts by default: its release, how that was decided (words),
    and its BLS entry or grub.cfg menuentry where there is one."""

    __slots__ = ("release", "how", "entry", "menu")
    _defaults = {"entry": None, "menu": None}


def _selector(grub, env, menu):
    """(the default as GRUB reads it, words saying where from)."""
    chosen = grub.variable("GRUB_DEFAULT")
    selector, said = ("0", None) if chosen is None else (chosen[2], "GRUB_DEFAULT=%s at %s:%d" % (chosen[2], chosen[0], chosen[1]))
    if menu is not None and menu.default is not None and menu.entries:
        # grub.cfg is what boots; it says the same unless it is stale.
        selector, said = menu.default, 'set default="%s" in %s' % (menu.default, menu.path)
        if selector == "${saved_entry}":
            selector = "saved"
    if env is not None and env.refused and selector == "saved":
        # saved_entry lives there: which entry boots cannot be known, only assumed.
        return "0", "GRUB_DEFAULT=saved, but %s: the saved entry is not known, the first entry is assumed" % env.unknown()
    once = env.values.get("next_entry") if env else None
    if once:
        # grub-reboot's choice: grub.cfg boots it once, before any default.
        return once, "next_entry=%s in %s (grub-reboot: the next boot only)" % (once, env.path)
    if selector == "saved":
        saved = env.values.get("saved_entry") if env else None
        if saved:
            return saved, "the saved_entry in %s" % env.path
        if env is None:
            return "0", "GRUB_DEFAULT=saved, but there is no grubenv in the tree (on UEFI it may be on the EFI partition): the first entry"
        return "0", "GRUB_DEFAULT=saved with no saved_entry in %s" % env.path
    return selector, said


@fact("default_boot")
def default_boot(host, facts):
    entries = facts.get("boot_entries")
    grub = facts.get("grub_files")
    env = facts.get("grubenv")
    menu = facts.get("grub_menu") or None
    selector, said = _selector(grub, env, menu)
    if entries:
        loader = facts.get("loader_default")
        if loader is not None:
            return loader
        return _default_entry(entries, selector, said)
    if menu is not None and any(e.release for e in menu.entries):
        entry = _menu_entry(menu, selector)
        if entry is not None:
            return DefaultBoot(entry.release, "%s:%d, by %s" % (menu.path, entry.line, said), menu=entry)
        first = next(e for e in menu.entries if e.release)
        return DefaultBoot(first.release, "the first entry of %s: %s names none of its entries" % (menu.path, said), menu=first)
    kernels = _boot_kernels(host)
    if not kernels:
        return Unavailable("no kernel installed (nothing in /boot/vmlinuz-*, /lib/modules or /usr/lib/modules)")
    newest = kernels[-1]
    if selector.strip() in ("", "0"):
        return DefaultBoot(newest, "the newest installed" + (", by %s" % said if said else ""))
    named = _release_in(selector, kernels)
    if named:
        return DefaultBoot(named, said)
    flat = grub.variable("GRUB_DISABLE_SUBMENU")
    recovery = grub.variable("GRUB_DISABLE_RECOVERY")
    step = 1 if recovery is not None and recovery[2] == "true" else 2
    ordered = list(reversed(kernels))
    # grub-mkconfig's 10_linux: the newest kernel first, then (unless GRUB_DISABLE_SUBMENU=y)
    # an "Advanced options" submenu with each kernel, newest first, each followed by its
    # recovery entry unless GRUB_DISABLE_RECOVERY=true; with the submenu off they are top level.
    if flat is not None and flat[2] in ("y", "true"):
        index = _small_int(selector)
    else:
        top, sep, inner = selector.partition(">")
        index = _small_int(inner) if sep and top.strip() == "1" else None
    index = index // step if index is not None else None
    if index is not None and index < len(ordered):
        return DefaultBoot(ordered[index], said)
    return DefaultBoot(newest, "the newest installed: %s names no installed kernel" % said)


def _default_entry(entries, selector, said):
    words = ", by %s" % said if said else ""
    for entry in entries:
        if selector in (entry.id, entry.title):
            return DefaultBoot(entry.version, "the boot entry %s%s" % (entry.path, words), entry)
    index = _small_int(selector)
    if index is not None and index < len(entries):
        entry = entries[index]
        how = "the newest boot entry, %s%s" % (entry.path, words) if index == 0 else "entry %s, %s%s" % (selector, entry.path, words)
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


# A menu title or id is short; a default longer than this is looked for releases in its start.
_SELECTOR_CAP = 4096


def _release_in(text: str, releases):
    """The longest release named inside ``text`` (a menu title or id), or None. A release is at
    most 64 bytes (utsname), each looked for once."""
    text = text[:_SELECTOR_CAP]
    named = [r for r in dict.fromkeys(releases) if r and len(r) <= 64 and r in text]
    return max(named, key=len) if named else None


def _small_int(text: str):
    """``text`` as a menu position (ASCII digits, blanks around), else None: int() of thousands
    of digits is refused (and slow), and other scripts' digits are not GRUB's."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


# -- the next boot's command line -----------------------------------------------------------


@fact("boot_line")
def boot_line(host, facts):
    """The command line the default kernel gets at the next boot, each parameter with the file
    and line that sets it: its BLS entry, its grub.cfg menuentry, else what grub-mkconfig
    would write from the GRUB defaults files, else /etc/kernel/cmdline."""
    default = facts.get("default_boot")
    if default and default.entry is not None:
        return _entry_line(default.entry, facts.get("grubenv"), facts.get("grub_menu") or None)
    if default and default.menu is not None:
        return _menu_line(facts.get("grub_menu"), default.menu, facts.get("grubenv"), facts.get("grub_files"))
    menu = facts.get("grub_menu")
    if menu is not None and not menu:
        return Unavailable("grub.cfg holds the boot line, and %s" % menu.reason)
    grub = facts.get("grub_files")
    line = _grub_line(grub)
    if line is not None:
        return line
    own = [a for a in facts.get("boot_args") if a.variable is None]
    if own:
        return _line([(p, (own[0].path, own[0].line)) for p in own[0].params], own[0].path)
    return Unavailable("no boot loader configuration to read the kernel command line from (%s)" % _looked_at())


def _looked_at() -> str:
    return ", ".join((GRUB_DEFAULTS, KERNEL_CMDLINE_FILE, BLS_DIRS[0] + "/*.conf"))


def _line(pairs, source) -> Cmdline:
    params = tuple(p for p, _ in pairs)
    return Cmdline(" ".join(p.text for p in params), params, source, tuple(o for _, o in pairs))


def _grub_line(grub):
    """grub-mkconfig's normal entry: GRUB_CMDLINE_LINUX, then GRUB_CMDLINE_LINUX_DEFAULT, as
    the shell leaves them after every file is sourced; None where neither is set, Unavailable
    where one could not be evaluated. Each parameter is credited to the last assignment whose
    text names it."""
    if not any(grub.settings.get(name) for name in _CMDLINE_VARIABLES):
        return None
    problem = _unevaluated(grub, _CMDLINE_VARIABLES)
    if problem:
        return Unavailable("%s, so the kernel command line is not known" % problem)
    return _line([(param, origin) for param, _word, origin in _generated(grub, _CMDLINE_VARIABLES)], GRUB_DEFAULTS)


def _unevaluated(grub, variables):
    """Words naming the first of ``variables`` that could not be evaluated, or None."""
    for name in variables:
        setting = grub.settings.get(name)
        if setting is not None and setting.problem:
            return "%s at %s:%d could not be evaluated (%s)" % (setting.name, setting.path, setting.line, setting.problem)
    return None


def _generated(grub, variables):
    """The words grub-mkconfig writes from ``variables``, in order, with the values the shell
    left them: (parameter, the word as written, (path, line) of the last assignment whose text
    names it, else of the variable's last assignment). A ``--`` ends what the kernel reads."""
    found = []
    for name in variables:
        setting = grub.settings.get(name)
        if setting is None or not setting.value:
            continue
        # Who names each parameter, the last assignment winning: one pass over the history, not
        # one per parameter (a file appending a word per line would make that quadratic).
        named = {}
        for variable, path, number, raw in grub.history:
            if variable == name:
                named.update((param.text, (path, number)) for param in _written_params(raw))
        for word in split_words(setting.value, keep_quotes=True):
            text = word.replace('"', "")
            if text == "--":
                return found
            if text:
                key, sep, value = text.partition("=")
                param = Param(key, value if sep else None)
                found.append((param, word, named.get(param.text, (setting.path, setting.line))))
    return found


# -- grub.cfg against the GRUB defaults files ------------------------------------------------

# The words 10_linux puts before a recovery entry's GRUB_CMDLINE_LINUX itself (Debian and
# Ubuntu: single or recovery, nomodeset; Ubuntu also dis_ucode_ldr).
_RECOVERY_WORDS = frozenset(("single", "recovery", "nomodeset", "dis_ucode_ldr"))
# The longest assignment quoted in evidence; the rest is cut.
_QUOTE_CAP = 200


def _entry_kind(entry):
    """How grub-mkconfig's 10_linux made a menu entry, read from the id it gives it (ids are
    not translated, titles are): ``normal`` (gnulinux-simple-…, gnulinux-RELEASE-advanced-…),
    ``recovery``, ``init`` (an entry for another init system), or None: not 10_linux's."""
    ident = entry.ids[-1] if entry.ids else ""
    if not ident.startswith("gnulinux-"):
        return None
    if "-recovery-" in ident:
        return "recovery"
    return "init" if "-init-" in ident else "normal"


def _entry_variables(kind):
    # 10_linux: "${GRUB_CMDLINE_LINUX} ${GRUB_CMDLINE_LINUX_DEFAULT}" on normal and init entries,
    # "${GRUB_CMDLINE_LINUX_RECOVERY} ${GRUB_CMDLINE_LINUX}" on recovery ones.
    return ("GRUB_CMDLINE_LINUX",) if kind == "recovery" else _CMDLINE_VARIABLES


def _entry_kind_of(grub, entry):
    """(the entry's kind, whether GRUB_FORCE_PARTUUID is set): Ubuntu's 10_linux then boots
    without an initrd first, with ``panic=-1`` of its own on that line (the one read)."""
    forced = grub.variable("GRUB_FORCE_PARTUUID")
    return _entry_kind(entry), bool(forced and forced[2])


def _made_by_mkconfig(param, kind, forced=False) -> bool:
    """Whether ``param`` is put on an entry's line by 10_linux or GRUB, not by the files:
    ``linux KERNEL root=DEVICE ro ARGS``, btrfs's rootflags=subvol=, a recovery entry's words,
    an init entry's init=, Ubuntu's ``panic=-1`` with GRUB_FORCE_PARTUUID (``forced``),
    ``$vt_handoff`` and ``$tuned_params`` (expanded at boot), and the BOOT_IMAGE= GRUB adds
    when it boots."""
    if param.name.startswith("$") or param.name in ("root", "BOOT_IMAGE") or param.text == "ro":
        return True
    if forced and param.text == "panic=-1":
        return True
    if param.name == "rootflags" and (param.value or "").startswith("subvol="):
        return True
    if kind == "recovery" and param.value is None and param.name in _RECOVERY_WORDS:
        return True
    return kind == "init" and param.name == "init"


def _assignment_texts(grub):
    """(path, line) → the assignment of a command-line variable there, as written (cut)."""
    texts = {}
    for name, path, number, raw in grub.history:
        text = "%s=%s" % (name, raw.strip())
        texts[(path, number)] = text if len(text) <= _QUOTE_CAP else text[:_QUOTE_CAP] + "…"
    return texts


def _written_by(grub, entry):
    """parameter text → (path, line, assignment) of the GRUB defaults line grub-mkconfig would
    write it into ``entry`` from; empty where the entry is not 10_linux's or the files could
    not be evaluated."""
    kind, forced = _entry_kind_of(grub, entry)
    if kind is None or _unevaluated(grub, _entry_variables(kind)):
        return {}
    texts = _assignment_texts(grub)
    return {
        param.text: (origin[0], origin[1], texts.get(origin, ""))
        for param, _word, origin in _generated(grub, _entry_variables(kind))
        if not _made_by_mkconfig(param, kind, forced)
    }


def with_grub_sources(evidence, facts):
    """``evidence`` with the GRUB defaults line behind each grub.cfg parameter it names (an
    item whose value is the parameter) put before it: ``/etc/default/grub:6
    GRUB_CMDLINE_LINUX_DEFAULT="quiet hugepages=512" → /boot/grub/grub.cfg:120``, so a finding
    shows both the line that boots and the one the administrator edits. No file is read: the
    boot line is made from facts the grub.cfg items came from."""
    items = tuple(evidence)
    if not any(item.path in GRUB_CFG_PATHS and item.line is not None for item in items):
        return items
    line = facts.get("boot_line")
    if not line or not line.sources:
        return items
    sources = {}
    for index, param in enumerate(line.params):
        source = line.grub_source(index)
        if source is not None:
            sources.setdefault(line.origin(index), {})[param.text] = source
    found = []
    for item in items:
        named = sources.get((item.path, item.line)) if item.path in GRUB_CFG_PATHS else None
        source = named.get(item.value) if named else None
        if source is not None:
            found.append(Evidence(source[0], "%s → %s:%d" % (source[2], item.path, item.line), source[1]))
        found.append(item)
    return tuple(dict.fromkeys(found))


class GrubPending(Record):
    """grub.cfg's default entry against what grub-mkconfig would write for it from the GRUB
    defaults files now. ``added``: (parameter, (path, line, assignment)) the files give that
    the entry lacks, with the assignment that names it; ``removed``: the entry's parameters the files no longer give; ``add`` and
    ``remove``: what regenerating does to the entry's line (the words the files write for
    each parameter name that differs, and the names only the entry has); ``assignments``:
    (path, line, text) of each variable's last assignment."""

    __slots__ = ("menu", "entry", "added", "removed", "add", "remove", "assignments")

    @property
    def names(self):
        """The parameter names that differ."""
        return {param.name for param, _source in self.added} | {param.name for param in self.removed}


@fact("grub_pending")
def grub_pending(host, facts):
    """What running grub-mkconfig (update-grub) now would change in the default entry's line,
    compared as 10_linux writes it: the words of GRUB_CMDLINE_LINUX and (except on a recovery
    entry) GRUB_CMDLINE_LINUX_DEFAULT, counted, without what 10_linux and GRUB add
    themselves (``_made_by_mkconfig``)."""
    grub = facts.get("grub_files")
    if not any(path == GRUB_DEFAULTS for path, _text in grub.files):
        return Unavailable("no %s to regenerate grub.cfg from" % GRUB_DEFAULTS)
    menu = facts.get("grub_menu")
    if menu is not None and not menu:
        return menu
    default = facts.get("default_boot")
    if not default:
        return default
    if default.menu is None:
        if default.entry is not None:
            return Unavailable(
                "the next boot starts a Boot Loader Specification entry (%s), not a grub.cfg menu entry" % default.entry.path
            )
        if menu is None:
            return Unavailable("no grub.cfg (%s)" % ", ".join(GRUB_CFG_PATHS))
        return Unavailable("%s has no menu entry for the kernel the next boot starts" % menu.path)
    entry = default.menu
    kind, forced = _entry_kind_of(grub, entry)
    if kind is None:
        return Unavailable(
            "the default entry, %s:%d, is not one grub-mkconfig's 10_linux writes (its id is %r)"
            % (menu.path, entry.line, (entry.ids[-1] if entry.ids else "")[:80])
        )
    variables = _entry_variables(kind)
    problem = _unevaluated(grub, variables)
    if problem:
        return Unavailable("%s, so what grub-mkconfig would write is not known" % problem)
    from collections import Counter

    generated = [item for item in _generated(grub, variables) if not _made_by_mkconfig(item[0], kind, forced)]
    booted = [param for param in entry.params if not _made_by_mkconfig(param, kind, forced)]
    extra = Counter(param.text for param, _word, _origin in generated)
    extra.subtract(param.text for param in booted)
    missing = Counter({text: -count for text, count in extra.items() if count < 0})
    texts = _assignment_texts(grub)
    added, removed = [], []
    for param, _word, origin in generated:
        if extra[param.text] > 0:
            extra[param.text] -= 1
            added.append((param, origin + (texts.get(origin, ""),)))
    for param in booted:
        if missing[param.text] > 0:
            missing[param.text] -= 1
            removed.append(param)
    touched = {param.name for param, _source in added} | {param.name for param in removed}
    add = tuple(word for param, word, _origin in generated if param.name in touched)
    kept = {param.name for param, _word, _origin in generated if param.name in touched}
    assignments = []
    for name in variables:
        setting = grub.settings.get(name)
        if setting is not None:
            text = texts.get((setting.path, setting.line)) if setting.value is not None else None
            assignments.append((setting.path, setting.line, text or "unset %s" % name))
    return GrubPending(menu.path, entry, tuple(added), tuple(removed), add, tuple(sorted(touched - kept)), tuple(assignments))


def _menu_line(menu, entry, env, grub=None):
    """A grub.cfg entry's ``linux`` line, with ``$name`` from grub.cfg's own ``set`` lines (as
    tuned writes ``set tuned_params=…``) or grubenv, as GRUB expands it; each parameter written
    on the line also has the GRUB defaults line grub-mkconfig wrote it from, where there is one."""
    written = _written_by(grub, entry) if grub is not None else {}
    pairs, sources = [], []
    for param in entry.params:
        if not param.name.startswith("$"):
            pairs.append((param, (menu.path, entry.line)))
            sources.append(written.get(param.text))
            continue
        name = param.name.strip("${}")
        if name in menu.variables:
            value, origin = menu.variables[name][0], (menu.path, menu.variables[name][1])
        elif env is not None and name in env.values:
            value, origin = env.values[name], (env.path, None)
        else:
            continue
        expanded = [(p, origin) for p in split_cmdline(value) if not p.name.startswith("$")]
        pairs += expanded
        sources += [None] * len(expanded)
    line = _line(pairs, menu.path)
    return line._replace(sources=tuple(sources)) if any(sources) else line


def _entry_line(entry, env, menu=None):
    """An entry's options, with ``$name`` taken from grubenv as GRUB's blscfg expands it. RHEL 8
    keeps the whole line in ``$kernelopts``: where grubenv lacks it, grub.cfg's fallback
    ``set kernelopts=`` applies, and with neither the line is not known."""
    pairs = []
    for number, text in entry.options:
        for param in split_cmdline(text):
            if not param.name.startswith("$"):
                pairs.append((param, (entry.path, number)))
                continue
            name = param.name.strip("${}")
            value = env.values.get(name) if env else None
            origin = (env.path, None) if env else None
            if value is None and name == "kernelopts":
                if menu is not None and menu.kernelopts is not None:
                    value, origin = menu.kernelopts[0], (menu.path, menu.kernelopts[1])
                else:
                    where = (
                        env.unknown()
                        if env and env.refused
                        else "grubenv (%s) does not set it" % env.path
                        if env
                        else "there is no grubenv in the tree (on UEFI it may be on the EFI partition)"
                    )
                    return Unavailable(
                        "%s takes its options from $kernelopts, and %s: the kernel command line is not known" % (entry.path, where)
                    )
            pairs += [(p, origin) for p in split_cmdline(value or "") if not p.name.startswith("$")]
    return _line(pairs, entry.path)
