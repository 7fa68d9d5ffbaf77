"""Transparent huge pages."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.thp import THP_DIR, boot_modes, format_thp_anon
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step
from ai_doctor.remedy.actions import CommentLines, Show, SystemdUnit
from ai_doctor.shell import quote
from ai_doctor.units import page_size

TUNED_OVERRIDE = "aidoctor-thp"
_PMD_X86 = 2 << 20


@rule(
    "thp.disabled",
    "Transparent huge pages disabled",
    Severity.LOW,
    uses=(
        "thp",
        "running",
        "cmdline",
        "kernel_config",
        "thp_writers",
        "tuned",
        "tuned_profile",
        "rc_local",
        "grubenv",
        "sysfs_conf",
        "fixes",
    ),
)
def disabled(f):
    """Transparent huge pages are `never` for the PMD size (2 MiB on x86-64).

    With THP the kernel backs large anonymous mappings with 2 MiB pages without a reserved
    pool: fewer page faults and TLB misses when a loader fills large buffers, and for the
    CPU-side tensors. `never` turns that off, including for programs that ask for it with
    madvise(MADV_HUGEPAGE). `madvise` is the usual choice for serving hosts: huge pages where a
    program asks, no surprise compaction stalls elsewhere.

    Since Linux 6.8 each size has its own control, hugepages-<size>kB/enabled (always, inherit,
    madvise, never), and the top-level `enabled` applies only to sizes set to `inherit`, which
    the PMD size is by default (transhuge.rst, "Global THP controls"). So a top-level `never`
    with the PMD size set to `madvise` is not THP off, and a PMD size set to `never` is off
    whatever the top level says; the check judges the mode the PMD size ends up with.

    Fix: write `madvise` to /sys/kernel/mm/transparent_hugepage/enabled (and `inherit` to the
    PMD size's own control where that says `never`) now. To keep it, change what set `never`:
    `transparent_hugepage=` or `thp_anon=` on the kernel command line, or the kernel's build
    default CONFIG_TRANSPARENT_HUGEPAGE_NEVER (transhuge.rst, "Boot parameters"). When the
    kernel starts with THP on, something in user space wrote `never` after boot (a tuned
    profile, a systemd unit, a systemd-tmpfiles `w` line, Debian's sysfsutils — which writes
    each `attribute = value` of /etc/sysfs.conf and /etc/sysfs.d/*.conf at boot where its unit
    (2.1.1-7, Debian 13) is enabled or its init script (2.1.1-4, Debian 12) has start links —
    rc.local, configuration management, a node tuning operator), and a kernel argument does not
    stop it: the check names what it finds. Running programs keep their mappings until
    restarted (transhuge.rst, "Need of application restart").

    In an image the check judges what the default kernel will start with (its boot line and
    build default) and what the image writes after boot.

    tuned is read as its own code runs it (Debian 12's tuned 2.20 and Debian 13's 2.25:
    daemon/daemon.py, utils/profile_recommender.py, profiles/merger.py, units/manager.py): the
    profiles it loads at start (active_profile, or in automatic mode, profile_mode `auto` or both
    files empty as the packages ship them, the one its recommend.d rules pick), merged section by
    section, each section only where its uname_regex and cpuinfo_regex match. So
    throughput-performance, and virtual-guest, which includes it, write `never` only in
    [vm.thunderx], on aarch64 Cavium ThunderX CPUs, and leave THP alone elsewhere. The machine is
    /proc/sys/kernel/arch, else the kernel's build configuration, else its release name; an image
    does not tell its CPU, and where tuned's choice depends on something not known the check
    says so and skips. The fix's section carries `uname_regex=.*` and `cpuinfo_regex=.*` where the
    section it overrides has conditions: tuned merges it into that section and would keep them.

    Reference: Documentation/admin-guide/mm/transhuge.rst; sysfs.conf(5) and Debian's
    sysfsutils (update-sysfs, sysfsutils.service); tmpfiles.d(5); tuned.conf(5), tuned-adm(8).
    """
    thp = f.thp
    if not thp:
        return Skip(thp.reason) if f.running else _image(f)
    pmd = thp.pmd
    size = page_size(thp.pmd_size) if thp.pmd_size else None
    if thp.pmd_mode != "never":
        if pmd is not None and pmd.mode != "inherit":
            return Pass("%s transparent huge pages: %s (their own setting; top level %s)" % (size, pmd.mode, thp.top.mode))
        return Pass("transparent huge pages: %s" % thp.top.mode)
    top_never = thp.top.mode == "never"
    size_never = pmd is not None and pmd.mode == "never"
    evidence = [Evidence(thp.top.path, thp.top.shown)]
    if pmd is not None:
        evidence.append(Evidence(pmd.path, pmd.shown))
    if pmd is None:
        message = "Transparent huge pages are off (`never`)"
    elif size_never:
        message = "Transparent huge pages are off for %s pages (their own setting is `never`)" % size
    else:
        message = "Transparent huge pages are off for %s pages (`never`, inherited from the top level)" % size
    message += ": large buffers are mapped in small pages, even for programs that ask for huge pages with madvise."
    others = thp.others_on()
    if others:
        message += " Smaller sizes are on: %s." % ", ".join("%s (%s)" % (page_size(s), mode) for s, mode in others)

    cmdline = f.cmdline
    # The build default only matters for the top level, and only when the command line is silent.
    boot = boot_modes(cmdline, f.kernel_config if top_never else None, tuple(thp.sizes))
    add, remove, runtime_written, notes = [], [], [], []
    by_hand = None
    if top_never:
        if boot.top_source:
            evidence.append(Evidence(*boot.top_source))
        if boot.top == "never":
            notes.append("%s sets the top level to `never` at boot." % _source_words(boot.top_source))
            add.append("transparent_hugepage=madvise")
            remove.append("transparent_hugepage")
        elif boot.top is None:
            notes.append("Neither the kernel command line nor the kernel's build configuration says what THP starts with.")
            add.append("transparent_hugepage=madvise")
            remove.append("transparent_hugepage")
        else:
            notes.append("The kernel starts the top level at `%s` (%s)." % (boot.top, boot.top_source[1]))
            runtime_written.append(thp.top.path)
    if size_never:
        if boot.size_mode(thp.pmd_size, thp.pmd_size) == "never":
            evidence.append(Evidence(cmdline.source, " ".join(boot.thp_anon)))
            notes.append("`%s` on the kernel command line sets %s pages to `never` at boot." % (" ".join(boot.thp_anon), size))
            wanted = dict(boot.sizes)
            wanted[thp.pmd_size] = "inherit"
            value = format_thp_anon(wanted)
            if ";" in value:
                # GRUB's script reads an unquoted ";" as the end of the `linux` command: by hand.
                by_hand = Step(
                    'Keep it at boot: replace `%s` on the kernel command line with `thp_anon="%s"`, by hand, quoted '
                    "(in GRUB's configuration an unquoted `;` ends the command line)" % (" ".join(boot.thp_anon), value),
                    (),
                    True,
                    True,
                )
            elif value != "%dK:inherit" % (thp.pmd_size // 1024):
                add.append("thp_anon=" + value)
                remove.append("thp_anon")
            else:
                remove.append("thp_anon")
        else:
            notes.append("%s pages start as `inherit` (no thp_anon= at boot sets them)." % size)
            runtime_written.append(pmd.path)
    if runtime_written:
        notes.append(
            "So something wrote `never` to %s after boot, and a kernel argument would not stop it." % " and ".join(runtime_written)
        )
    message += " " + " ".join(notes)
    message += " Restart the model server afterwards: the setting applies to what programs map from then on."

    fixes = f.fixes
    steps = []
    if top_never:
        steps += fixes.sysfs([thp.top.path], "madvise", "Turn THP on for programs that ask (madvise)")
    if size_never:
        steps += fixes.sysfs([pmd.path], "inherit", "Let %s pages follow the top-level setting" % size)
    tuned_line = _tuned_bootloader(f, boot)
    if tuned_line is not None:
        steps.append(tuned_line)
    elif add or remove:
        steps.append(fixes.kernel_args(add, remove, "Keep it at boot"))
    if by_hand is not None:
        steps.append(by_hand)
    if runtime_written or boot.top is None:
        # Where the boot default is unknown, a writer found is still worth naming.
        targets = {"top"} if top_never and boot.top != "never" else set()
        if size_never and pmd.path in runtime_written:
            targets.add("size")
        writer_steps, writer_evidence = _writer_steps(f, fixes, targets, bool(runtime_written))
        steps += writer_steps
        evidence += writer_evidence
    return Issue(message, evidence, steps)


def _image(f):
    """What an image's default kernel starts with, and what the image writes after boot."""
    config = f.kernel_config
    if config and config.enabled("TRANSPARENT_HUGEPAGE") is False:
        return Skip("the kernel is built without transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE is not set in %s)" % config.source)
    line = f.cmdline
    if not line:
        # An unknown line is not an empty one: it may set transparent_hugepage= or thp_anon=.
        return Skip("the kernel command line the image boots with is not known: %s" % line.reason)
    # The anonymous THP sizes thp_anon= can name: on x86-64 with 4 KiB pages, 16 KiB to the
    # 2 MiB PMD size (orders 2 to 9).
    sizes = tuple(16384 << order for order in range(8)) if config and config.get("X86_64") == "y" else ()
    boot = boot_modes(f.cmdline, config, sizes)
    writers = f.thp_writers.found if f.thp_writers else ()
    pmd_off = bool(sizes) and boot.thp_anon and boot.size_mode(_PMD_X86, _PMD_X86) == "never"
    if pmd_off:
        line = f.cmdline
        index = max(i for i, p in enumerate(line.params) if p.name == "thp_anon")
        path, number = line.origin(index)
        message = (
            "The image will run with 2 MiB transparent huge pages off: `%s` on its boot line sets them to `never` "
            '(transhuge.rst, "Boot parameters"), whatever the top level says.' % line.params[index].text
        )
        step = Step("Remove `%s` from the boot line, or give 2M `inherit` in it, by hand" % line.params[index].text, (), True, True)
        return Issue(message, [Evidence(path, line.params[index].text, number)], [step])
    doubt = _tuned_doubt(f) if not writers and boot.top != "never" else None
    if doubt is not None:
        start = (
            "at `%s` (%s)" % (boot.top, _where(boot.top_source))
            if boot.top
            else "at a mode its boot line and kernel configuration do not say"
        )
        return Skip(
            "the image boots with transparent huge pages %s, and whether tuned writes `never` after boot is not known: %s" % (start, doubt)
        )
    later = _set_after_boot(f, line)
    if later is not None and not writers:
        # tuned's vm plugin or sysfsutils writes a mode other than never after boot: it is the one that runs.
        start = "at `%s` (%s)" % (boot.top, _where(boot.top_source)) if boot.top else "at a mode its boot line does not say"
        return Pass(
            "the image boots with transparent huge pages %s, then %s sets `%s` after boot; nothing found writes `never`"
            % (start, later[1], later[0])
        )
    if boot.top != "never" and not writers:
        if boot.top is None:
            return Skip(
                "an image whose boot line and kernel configuration do not say what THP starts with, and nothing found "
                "writes it after boot (a tuned profile, a systemd unit, a tmpfiles.d line, sysfsutils, rc.local)"
            )
        return Pass(
            "the image boots with transparent huge pages at `%s` (%s) and nothing found writes `never` after boot"
            % (boot.top, _where(boot.top_source))
        )
    evidence, notes, steps = [], [], []
    fixes = f.fixes
    if boot.top == "never":
        evidence.append(Evidence(*boot.top_source))
        notes.append("%s sets them to `never` at boot." % _source_words(boot.top_source))
        tuned_line = _tuned_bootloader(f, boot)
        if tuned_line is not None:
            steps.append(tuned_line)
        else:
            steps.append(fixes.kernel_args(["transparent_hugepage=madvise"], ["transparent_hugepage"], "Start them at madvise"))
    elif boot.top is not None:
        notes.append("The kernel starts them at `%s` (%s)." % (boot.top, _where(boot.top_source)))
    if writers:
        notes.append("After boot, %s writes `never`." % ", ".join("%s (%s:%d)" % (w.kind, w.path, w.line or 0) for w in writers))
        writer_steps, writer_evidence = _writer_steps(f, fixes, {"top", "size"}, True)
        steps += writer_steps
        evidence += writer_evidence
    message = (
        "The image will run with transparent huge pages off: large buffers are mapped in small pages, even for "
        "programs that ask for huge pages with madvise. " + " ".join(notes)
    )
    return Issue(message, evidence, steps)


def _tuned_doubt(f):
    """Why it is not known whether tuned writes `never` after boot (a section whose uname_regex or
    cpuinfo_regex the target does not answer, a profile picked at start); None where it is known."""
    tuned, profile = f.tuned, f.tuned_profile
    if not (tuned and tuned.enabled and profile):
        return None
    never = [s for s, _why in profile.uncertain if s.value == "never"]
    line = f.cmdline
    # tuned's vm plugin leaves THP alone when the command line sets it.
    vm = not (line and any(p.name == "transparent_hugepage" for p in line.params))
    for s in never:
        if (s.plugin == "vm" and vm and s.key in ("transparent_hugepages", "transparent_hugepage")) or (
            s.plugin == "sysfs" and s.key.startswith("/sys/kernel/mm/transparent_hugepage/") and s.key.endswith("/enabled")
        ):
            decision = profile.decide(s.plugin, "transparent_hugepages" if s.plugin == "vm" else s.key)
            if not decision.known:
                return decision.why
    return None


def _set_after_boot(f, line):
    """(mode, what sets it) where tuned (certainly, the boot line not setting THP) or Debian's
    sysfsutils writes a top-level mode other than never after boot; None otherwise."""
    sysfs = f.sysfs_conf
    setting = sysfs.last(THP_DIR + "/enabled") if sysfs else None
    if setting is not None and setting.value in ("always", "madvise"):
        return setting.value, "sysfsutils (%s)" % setting.where
    tuned, profile = f.tuned, f.tuned_profile
    if not (tuned and tuned.enabled and profile) or line.last("transparent_hugepage") is not None:
        return None
    decision = profile.decide("vm", "transparent_hugepages")
    chosen = decision.setting
    if decision.known and chosen is not None and chosen.value in ("always", "madvise"):
        return chosen.value, "tuned (%s:%d)" % (chosen.path, chosen.line)
    return None


def _tuned_bootloader(f, boot):
    """Where `never` reaches the boot line through grubenv's $tuned_params: tuned's bootloader
    plugin writes it from the active profile every time it applies it, so grubby or a GRUB
    file cannot take it away; the profile has to change. None otherwise."""
    if boot.top != "never" or not boot.top_source or not boot.top_source[0].endswith("grubenv"):
        return None
    env = f.grubenv
    # grubenv also holds RHEL 8's $kernelopts, which grubby edits: only tuned_params is tuned's.
    if env is None or "transparent_hugepage=never" not in env.values.get("tuned_params", ""):
        return None
    profile = f.tuned_profile
    settings = [s for s in (profile.plugin("bootloader") if profile else ()) if "transparent_hugepage=never" in s.value]
    where = ", ".join("%s:%d" % (s.path, s.line) for s in settings) or "the active tuned profile's [bootloader] section"
    return Step(
        "Start them at madvise: tuned puts `transparent_hugepage=never` on the boot line through $tuned_params (%s): "
        "change it to `transparent_hugepage=madvise` in that profile's [bootloader] cmdline (in a profile of your own, "
        "not the packaged one), and tuned writes the new line when it next applies the profile" % where,
        (),
        True,
        True,
    )


def _where(source) -> str:
    path, text, line = source
    return "%s at %s%s" % (text, path, ":%d" % line if line else "")


def _source_words(source) -> str:
    text = source[1]
    if text.startswith("CONFIG_"):
        return "The kernel's build configuration (%s)" % text
    return "The kernel command line (%s)" % text


def _writer_steps(f, fixes, targets, certain):
    """Steps that stop what writes `never` after boot to the ``targets`` controls (``top``,
    ``size``), and the evidence of what was found. Only when ``certain`` that something does,
    a step says where to look if nothing was found."""
    look = (
        "a tuned profile ([vm] transparent_hugepages, or [sysfs]), a systemd unit, /etc/sysfs.conf, /etc/rc.local, "
        "configuration management (Ansible, Puppet, cloud-init), or a node tuning operator"
    )
    if fixes.container is not None:
        if not certain:
            return [], []
        summary = "On %s (not inside this container): find what writes `never` after boot and change it there: %s" % (
            fixes.container.where,
            look,
        )
        return [Step(summary, (), True, None, True)], []
    writers = f.thp_writers
    # A writer of a control that is not `never` now is not the one to blame.
    found = [w for w in (writers.found if writers else ()) if not w.targets or targets & set(w.targets)]
    evidence = [Evidence(w.path, w.text, w.line) for w in found]
    steps = []
    tuned = [w for w in found if w.kind == "tuned"]
    if tuned:
        override = _tuned_override(fixes, tuned, f.tuned_profile)
        if override is not None:
            steps.append(override)
    for writer in found:
        if writer.kind == "systemd":
            name = writer.path.rsplit("/", 1)[1]
            # In an image, systemctl cat would show this machine's unit: the image's file is read
            # inside it (chroot), where its own links resolve.
            show = Show("cat %s" % quote(writer.path), needs_root=True) if fixes.image else Show("systemctl cat %s" % quote(name))
            steps.append(
                fixes.step(
                    "Stop the unit %s, which writes it at boot (read it first: it may do more)" % name,
                    [show, SystemdUnit("disable", name)],
                    True,
                    host_wide=False,
                )
            )
        elif writer.kind == "tmpfiles" and writer.path.startswith("/etc/"):
            steps.append(_comment_out(fixes, writer, "a systemd-tmpfiles line that writes it at boot"))
        elif writer.kind == "sysfsutils":
            steps.append(_comment_out(fixes, writer, "a line Debian's sysfsutils writes at every boot"))
        elif writer.kind == "tmpfiles":
            name = writer.path.rsplit("/", 1)[1]
            steps.append(
                Step(
                    "Override %s, a package's systemd-tmpfiles file that writes it at boot: a copy without line %d as "
                    "/etc/tmpfiles.d/%s hides it" % (writer.path, writer.line, name),
                    (),
                    True,
                    True,
                )
            )
        elif writer.kind == "rc.local":
            steps.append(_comment_out(fixes, writer, "which writes it at boot", f.rc_local))
    if not steps and certain:
        steps.append(
            fixes.step(
                "Find what writes `never` after boot and change it there: " + look,
                [Show("grep -rIls transparent_hugepage /etc", needs_root=bool(fixes.image))],
                None,
                host_wide=False,
                needs_root=False,
            )
        )
    return steps, evidence


def _comment_out(fixes, writer, what: str, script=None):
    """A step commenting out the writer's lines: every line of a command continued with
    backslashes, or the rest would run alone; in a shell ``script`` (rc.local), the whole
    top-level command holding it, since an if block left empty no longer parses."""
    first, last = writer.line, writer.last if writer.last and writer.last > writer.line else writer.line
    if script is not None:
        first, last = script.command_at(writer.line)
        rows = script.lines
    else:
        rows = (None,) * (writer.line - 1) + tuple(writer.raw_lines)
    span = "%d-%d" % (first, last) if last > first else "%d" % first
    lines = tuple((number, rows[number - 1]) for number in range(first, last + 1) if rows[number - 1].strip()[:1] not in ("", "#"))
    return fixes.step(
        "Comment out line %s of %s, %s" % (span, writer.path, what),
        [CommentLines(writer.path, lines)],
        True,
        host_wide=False,
    )


def _tuned_override(fixes, settings, profile):
    """A profile of our own, applied after the active ones, that sets the same keys to on."""
    sections = {}
    for s in settings:
        # The per-size files go back to following the top level, which this sets to madvise.
        value = "inherit" if "/hugepages-" in s.key else "madvise"
        sections.setdefault(s.section, []).append("%s=%s" % (s.key, value))
    for s in settings:
        if s.section != s.plugin and "type=%s" % s.plugin not in sections[s.section]:
            sections[s.section].insert(0, "type=%s" % s.plugin)
    conditional = []
    for section, keys in sections.items():
        unit = profile.unit(section) if profile else None
        # tuned merges our section into the earlier one of its name, keeping that one's
        # uname_regex and cpuinfo_regex unless ours sets them (profiles/merger.py): ours match
        # anything, so the override applies wherever tuned runs it, not only where they matched.
        for option in ("cpuinfo_regex", "uname_regex"):
            if unit is not None and getattr(unit, option) is not None:
                keys.insert(1 if keys[0].startswith("type=") else 0, "%s=.*" % option)
                conditional += [section] if section not in conditional else []
    where = ", ".join("%s:%d" % (s.path, s.line) for s in settings)
    if conditional:
        where += "; in [%s], whose conditions match here" % "], [".join(conditional)
    return fixes.tuned_override(
        TUNED_OVERRIDE,
        "Transparent huge pages for programs that ask (aidoctor)",
        list(sections.items()),
        "The active tuned profile writes it (%s): set it to madvise" % where,
    )
