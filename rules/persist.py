"""Persistence of sysctl settings: what boot will set against what runs now, and files that
say one thing twice or two things at once.

systemd-sysctl (sysctl.d(5)) and `sysctl --system` read the drop-in directories in one
lexicographic order of file names (a name in /etc hides the same name elsewhere) and apply
each file's lines in order: for a key set more than once, the last line read wins.
"""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step
from ai_doctor.remedy.actions import NOW, AddInterpreter, MakeExecutable, Run, StripCarriageReturns

# Keys whose loss another finding hangs on: a pool or a commit limit that vanishes at reboot.
_LOAD_BEARING = ("vm.nr_hugepages", "vm.overcommit_memory", "vm.overcommit_ratio", "vm.overcommit_kbytes")


def _same(a: str, b: str) -> bool:
    return " ".join(str(a).split()) == " ".join(str(b).split())


@rule(
    "persist.sysctl-drift",
    "Running sysctl differs from what boot will set",
    Severity.MEDIUM,
    needs=("sysctl_config", "sysctl_configured_runtime"),
    uses=("fixes",),
)
def sysctl_drift(f):
    """A sysctl's value in the running kernel differs from what the persistent configuration
    sets at boot.

    Either someone changed it by hand (`sysctl -w`, a script) and the change is lost at the
    next reboot, or the configuration changed and was never applied (`sysctl --system`).
    Either way, what was tested is not what the next boot gives. High when the key carries
    something another check depends on (the huge page pool, the overcommit mode and limit).
    vm.nr_hugepages below its configured count is a pool the kernel could not fill, which
    hugepages.shortfall judges; it is not reported here.

    Fix: make the configuration say what should run (a drop-in under /etc/sysctl.d), then
    `sysctl --system`; or apply the configuration as it is.

    Reference: sysctl.d(5); Documentation/admin-guide/sysctl/.
    """
    config = f.sysctl_config
    runtime = f.sysctl_configured_runtime
    if not runtime:
        return Skip("none of the configured keys could be read from /proc/sys")
    fixes = f.fixes
    issues = []
    for key, now in runtime.items():
        winner = config.effective(key)
        if winner is None or _same(winner.value, now):
            continue
        if key == "vm.nr_hugepages" and now.isdigit() and winner.value.strip().isdigit() and int(now) < int(winner.value):
            continue  # a pool short of its request: hugepages.shortfall
        message = (
            "%s is %s in the running kernel, but boot sets %s (%s wins): the next reboot changes it. Either the running "
            "value was set by hand and will be lost, or the file changed and was never applied." % (key, now, winner.value, winner.where)
        )
        evidence = [
            Evidence("/proc/sys/" + key.replace(".", "/"), now),
            Evidence(winner.path, "%s = %s" % (key, winner.value), winner.line),
        ]
        # It already runs: only the persistent half of the sysctl fix is needed, without a
        # reload that would reset the other drifted keys. One drop-in per key: two drift
        # fixes must not overwrite each other's file.
        topic = "drift-" + key.replace(".", "-").replace("/", "-")
        keep = [
            step._replace(summary=step.summary.replace("Make it persistent", "Keep the running value at boot", 1))
            for step in fixes.sysctl([(key, now)], topic, "Keep the running value", reload=False)[1:]
        ]
        apply = fixes.runtime("Or apply the configuration as it is, giving up the running value", [Run(("sysctl", "--system"), NOW)])
        severity = Severity.HIGH if key in _LOAD_BEARING else None
        issues.append(Issue(message, evidence, keep + apply, severity=severity))
    return issues or Pass("every configured key (%d) runs with the value boot sets" % len(runtime))


@rule(
    "persist.sysctl-conflict",
    "One sysctl set to different values in several files",
    Severity.LOW,
    needs=("sysctl_config",),
    uses=("fixes",),
)
def sysctl_conflict(f):
    """A sysctl key is set to different values in more than one file.

    At boot the files are read in lexicographic order of their names across /etc/sysctl.d,
    /run/sysctl.d, /usr/local/lib/sysctl.d and /usr/lib/sysctl.d (a name in /etc hides the
    same name elsewhere), and the last assignment wins; the others are dead text that says
    something the host never does. The finding names the file and line that wins, and why.

    Fix: keep one assignment (in the file that should own the setting) and remove the others.

    Reference: sysctl.d(5); systemd-sysctl.service(8).
    """
    config = f.sysctl_config
    keys = []
    for item in config.assignments:
        if item.key not in keys:
            keys.append(item.key)
    issues = []
    for key in keys:
        items = config.all(key)
        files = []
        for item in items:
            if item.path not in files:
                files.append(item.path)
        if len(files) < 2 or all(_same(item.value, items[-1].value) for item in items):
            continue
        winner = items[-1]
        others = "; ".join("%s = %s at %s" % (key, item.value, item.where) for item in items[:-1])
        if (winner.origin or winner.path) == "/etc/sysctl.conf":  # read as itself, not through a sysctl.d link
            why = "sysctl --system reads /etc/sysctl.conf after every drop-in"
        else:
            why = "%s is read last in sysctl.d order (file names sorted across the directories)" % winner.name
        message = "%s is set to different values in %d files: %s wins (%s = %s), because %s. Overridden: %s." % (
            key,
            len(files),
            winner.where,
            key,
            winner.value,
            why,
            others,
        )
        evidence = [Evidence(item.path, "%s = %s" % (key, item.value), item.line) for item in items]
        step = f.fixes.comment_out_lines(
            items[:-1], "Comment out the overridden lines, so the files say what boot does (nothing changes at runtime)"
        )
        issues.append(Issue(message, evidence, [step] if step else []))
    return issues or Pass("no key is set to different values in different files")


@rule("persist.sysctl-conf-duplicates", "One sysctl repeated in one file", Severity.LOW, needs=("sysctl_config",), uses=("fixes",))
def sysctl_conf_duplicates(f):
    """The same sysctl key appears more than once in one file.

    The typical cause is the tuning guide's `cat >> /etc/sysctl.conf <<EOF` run twice: every
    run appends the block again, the last copy silently wins, and an edit to the first copy
    does nothing. Unlinked /etc/sysctl.conf lines that `sysctl --system` still applies are
    counted too.

    Fix: keep the last assignment of each key (it is the one in force) and comment out the
    others; better, move the settings into a drop-in under /etc/sysctl.d written whole.

    Reference: sysctl.d(5); sysctl(8) (`--system`, `-p`).
    """
    config = f.sysctl_config
    by_file = {}
    for item in tuple(config.assignments) + tuple(config.manual):
        by_file.setdefault(item.path, {}).setdefault(item.key, []).append(item)
    issues = []
    for path, keys in by_file.items():
        repeated = {key: items for key, items in keys.items() if len({item.line for item in items}) > 1}
        if not repeated:
            continue
        parts = []
        evidence = []
        for key, items in repeated.items():
            lines = ", ".join(str(item.line) for item in items)
            values = {" ".join(item.value.split()) for item in items}
            parts.append(
                "%s %d times (lines %s%s; line %d wins)"
                % (key, len(items), lines, "" if len(values) == 1 else ", with different values", items[-1].line)
            )
            evidence += [Evidence(path, "%s = %s" % (key, item.value), item.line) for item in items]
        message = "%s sets %s: the last copy wins and the others mislead whoever edits them." % (path, "; ".join(parts))
        earlier = [item for items in repeated.values() for item in items[:-1]]
        step = f.fixes.comment_out_lines(
            earlier, "Comment out all but the last copy of each key (the one in force: nothing changes at runtime)"
        )
        issues.append(Issue(message, evidence, [step] if step else []))
    return issues or Pass("no file repeats a key")


# What makes an rc.local line tuning this tool cares about.
_TUNING = ("/proc/sys/", "/sys/", "sysctl ", "hugepages", "scaling_governor", "transparent_hugepage")


@rule("persist.rc-local-ineffective", "rc.local tuning that never runs", Severity.MEDIUM, needs=("rc_local",), uses=("fixes",))
def rc_local_ineffective(f):
    """/etc/rc.local (or /etc/rc.d/rc.local) holds tuning that boot never runs.

    systemd runs rc.local only through rc-local.service, which its generator adds only when
    the file is executable (systemd-rc-local-generator(8)); the service executes the file, so
    without an interpreter line (`#!/bin/sh`) the kernel refuses it (ENOEXEC); and a line after
    a top-level `exit 0` is never reached. Tuning guides often append to rc.local after the
    distribution's `exit 0`. High when what is lost is something other checks depend on (a
    huge page pool, the overcommit settings).

    Fix: put settings where they belong (a drop-in under /etc/sysctl.d, a udev rule for
    scheduler settings, the kernel command line for boot-time pools); where rc.local stays,
    make it executable, give it an interpreter line and move the lines above `exit 0`.

    Reference: systemd-rc-local-generator(8); rc-local.service; execve(2) (ENOEXEC).
    """
    rc = f.rc_local
    if rc is None:
        return Pass("no rc.local")
    tuning = [(number, line.strip()) for number, line in enumerate(rc.lines, 1) if _is_tuning(line)]
    if not tuning:
        return Pass("%s holds no tuning" % rc.path)
    end = rc.exit_line
    problems = []
    lost = list(tuning)
    if not rc.executable:
        problems.append("it is not executable, so systemd never runs it")
    if rc.crlf:
        problems.append(
            "its lines end in CRLF (a file edited on Windows), so the interpreter line names `%s\\r`, which does not exist, "
            "and executing it fails" % rc.lines[0][2:].strip()
        )
    elif not rc.has_interpreter:
        problems.append("it has no interpreter line (#!/bin/sh), so executing it fails")
    after = [(number, line) for number, line in tuning if end and number > end]
    if after:
        problems.append(
            "%s after `%s` (line %d), which ends the script first"
            % ("and its tuning comes" if problems else "its tuning comes", rc.lines[end - 1].strip(), end)
        )
        if len(problems) == 1:
            lost = after
    if not problems:
        return Pass("%s runs its tuning at boot" % rc.path)
    message = "%s holds %d tuning line%s that never run%s: %s." % (
        rc.path,
        len(lost),
        "" if len(lost) == 1 else "s",
        "s" if len(lost) == 1 else "",
        "; ".join(problems),
    )
    message += " Lost at every boot: %s." % "; ".join("line %d `%s`" % item for item in lost[:4])
    severity = Severity.HIGH if any(word in line for _, line in lost for word in ("nr_hugepages", "overcommit")) else None
    evidence = [Evidence(rc.path, line, number) for number, line in lost[:12]]
    fixes = f.fixes
    steps = [
        Step(
            "Move these settings where they belong: sysctls to a drop-in under /etc/sysctl.d, the I/O scheduler to a udev "
            "rule, boot-time huge page pools to the kernel command line (the other findings print each)",
            (),
            True,
            True,
        )
    ]
    commands = []
    if not rc.executable:
        commands.append(MakeExecutable(rc.path))
    if rc.crlf:
        commands.append(StripCarriageReturns(rc.path))
    elif not rc.has_interpreter:
        # --follow-symlinks: /etc/rc.local is a link to rc.d/rc.local on RHEL; keep the link.
        commands.append(AddInterpreter(rc.path))
    # Letting the file run also runs what nobody meant to keep: say so where it turns THP off.
    thp_off = [n for n, line in lost if all(word in line for word in ("transparent_hugepage", "enabled", "never"))]
    caveat = (
        " (line %s would then write `never` to transparent_hugepage/enabled and turn THP off: delete it first)"
        % " and ".join(str(n) for n in thp_off)
        if thp_off
        else ""
    )
    if commands:
        steps.append(fixes.step("Or keep rc.local and let it run" + caveat, commands, True, host_wide=False))
    if after:
        what = "%s move the tuning lines above `%s` (line %d), by hand" % (
            "And" if commands else "Or keep rc.local:",
            rc.lines[end - 1].strip(),
            end,
        )
        steps.append(Step(what + ("" if commands else caveat), (), True, True))
    return Issue(message, evidence, steps, severity=severity)


def _is_tuning(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#") and any(word in text for word in _TUNING)
