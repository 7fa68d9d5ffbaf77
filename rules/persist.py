"""Persistence of sysctl settings: what boot will set against what runs now, and files that
say one thing twice or two things at once.

systemd-sysctl (sysctl.d(5)) and `sysctl --system` read the drop-in directories in one
lexicographic order of file names (a name in /etc hides the same name elsewhere) and apply
each file's lines in order: for a key set more than once, the last line read wins.
"""

from __future__ import annotations

import re

from ai_doctor.engine import rule
from ai_doctor.facts.sysctl import SYSCTL_CONF, SYSCTL_CONF_BACKUP, commit_limit, key_path, sysctl_int, sysctl_writes
from ai_doctor.facts.sysctlkeys import bears_on_models, guards_security, weakens
from ai_doctor.facts.system import kernel_version
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip
from ai_doctor.remedy.actions import AddInterpreter, CommentLines, MakeExecutable, MoveLineToEnd, SetSysctl, StripCarriageReturns
from ai_doctor.units import gib

# Keys whose loss another finding hangs on: a pool or a commit limit that vanishes at reboot.
_LOAD_BEARING = ("vm.nr_hugepages", "vm.overcommit_memory", "vm.overcommit_ratio", "vm.overcommit_kbytes")
# Writing one of these zeroes the other (mm/util.c): they are judged as the pair the kernel ends with.
_PAIR = ("vm.overcommit_ratio", "vm.overcommit_kbytes")


def _same(a: str, b: str) -> bool:
    return " ".join(str(a).split()) == " ".join(str(b).split())


@rule(
    "persist.sysctl-drift",
    "Running sysctl differs from what boot will set",
    Severity.MEDIUM,
    needs=("sysctl_config", "sysctl_configured_runtime", "sysctl_at_boot"),
    uses=("sysctl", "meminfo", "hugepages", "model", "fixes"),
)
def sysctl_drift(f):
    """A sysctl's value in the running kernel differs from what the next boot sets.

    Either someone changed it by hand (`sysctl -w`, a script) and the change is lost at the
    next reboot, or the configuration changed and was never applied (`sysctl --system`).
    Either way, what was tested is not what the next boot gives. What boot sets is simulated
    as the kernel takes it: the files in sysctl.d order, where something applies them at boot
    (on a host where nothing does, persist.sysctl-not-applied says so instead), and
    vm.overcommit_ratio and vm.overcommit_kbytes as one pair, since writing either zeroes the
    other ("Only one of them may be specified at a time. Setting one disables the other",
    vm.rst; mm/util.c): a file that sets the ratio and a later one that sets kbytes leave
    kbytes, not a ratio of 0.

    Keys that bear on loading or serving models (vm.*, NUMA balancing, scheduler, file and
    socket limits) get a finding each, high for the huge page pool and the overcommit settings
    other checks depend on; the others are listed in one low finding. vm.nr_hugepages below its
    configured count is a pool the kernel could not fill, which hugepages.shortfall judges.

    Fix: keep the running value at boot (a drop-in under /etc/sysctl.d, written without
    reloading the files, which would reset every other key changed by hand), or set the key
    back to what boot sets. For keys that guard the kernel's security (fs.protected_*,
    kernel.kptr_restrict, kernel.yama.ptrace_scope, kernel.randomize_va_space,
    kernel.unprivileged_bpf_disabled, kernel.dmesg_restrict, …) a weaker running value is
    never made permanent: setting it back is the only fix offered.

    Reference: sysctl.d(5); Documentation/admin-guide/sysctl/vm.rst (overcommit_kbytes);
    mm/util.c (overcommit_ratio_handler, overcommit_kbytes_handler).
    """
    after = f.sysctl_at_boot
    if not after.applier.applies:
        return Skip("nothing applies the sysctl files at boot here (%s): persist.sysctl-not-applied" % after.applier.how)
    runtime = f.sysctl_configured_runtime
    if not runtime:
        return Skip("none of the configured keys could be read from /proc/sys")
    drifted = []
    for key, now in runtime.items():
        boot = after.values.get(key)
        if key in _PAIR or boot is None or _same(boot.value, now):
            continue
        pool_now, pool_boot = (sysctl_int(now), sysctl_int(boot.value)) if key == "vm.nr_hugepages" else (None, None)
        if None not in (pool_now, pool_boot) and pool_now < pool_boot:
            continue  # a pool short of its request: hugepages.shortfall
        drifted.append((key, now, boot))
    issues = []
    pair = _pair_drift(f, after)
    if pair is not None:
        issues.append(pair)
    model = [item for item in drifted if bears_on_models(item[0])]
    other = [item for item in drifted if not bears_on_models(item[0])]
    for key, now, boot in model:
        message = (
            "%s is %s in the running kernel, but boot sets %s (%s wins): the next reboot changes it. Either the running "
            "value was set by hand and will be lost, or the file changed and was never applied." % (key, now, boot.value, boot.where)
        )
        severity = Severity.HIGH if key in _LOAD_BEARING else None
        # Outside mode 2 a ratio or kbytes line means nothing (overcommit.ratio-ignored): it goes.
        displaces = _PAIR if key == "vm.overcommit_memory" and now != "2" else ()
        topic = "drift-" + key.replace(".", "-").replace("/", "-")
        if key == "vm.overcommit_memory":
            steps, why = _mode_drift_steps(f, after, now, boot, topic, displaces)
            message += why
        else:
            steps = _drift_steps(f, [(key, now, boot)], topic, displaces)
        issues.append(Issue(message, _drift_evidence([(key, now, boot)]), steps, severity=severity))
    if other:
        shown = ["%s is %s, boot sets %s (%s)" % (key, now, boot.value, boot.where) for key, now, boot in other[:_SHOWN]]
        lines = _listed(shown, len(other), sep="; ")
        message = (
            "%d key%s that do%s not bear on loading or serving models run%s with another value than boot sets, so the next "
            "reboot changes %s: %s."
            % (
                len(other),
                "" if len(other) == 1 else "s",
                "es" if len(other) == 1 else "",
                "s" if len(other) == 1 else "",
                "it" if len(other) == 1 else "them",
                lines,
            )
        )
        steps = _drift_steps(f, other, "drift-other")
        issues.append(
            Issue(
                message,
                _drift_evidence(other[:_SHOWN]),
                steps,
                severity=Severity.LOW,
                title="Running sysctls differ from what boot sets (other keys)",
            )
        )
    return issues or Pass("every configured key (%d) runs with the value boot sets" % len(runtime))


def _drift_evidence(items):
    evidence = []
    for key, now, boot in items:
        evidence.append(Evidence(key_path(key), now))
        source = boot.zeroed_by or boot.source
        if hasattr(source, "path"):
            evidence.append(Evidence(source.path, "%s = %s" % (source.key, source.value), source.line))
    return evidence


def _mode_drift_steps(f, after, now, boot, topic, displaces):
    """vm.overcommit_memory's drift: strict mode is judged with the commit limit it would
    enforce. Keeping a running mode 2 whose pair leaves less than what is committed and the
    model makes that shortage permanent; setting mode 2 back sets the pair boot sets first (with
    the running one it could starve the host at once), and not at all where that pair is short.
    Returns (steps, words for the message)."""
    mem, model = f.meminfo, f.model
    committed = mem.get("Committed_AS") if mem else None
    needed = (committed or 0) + (model.size if model else 0)
    runtime = f.sysctl
    running_limit = _commit_limit(f, runtime.int("vm.overcommit_ratio") or 0, runtime.int("vm.overcommit_kbytes") or 0)
    ratio, kbytes = after.values.get("vm.overcommit_ratio"), after.values.get("vm.overcommit_kbytes")
    ratio_boot = int(ratio.value) if ratio is not None and ratio.value.isdigit() else 50
    kbytes_boot = int(kbytes.value) if kbytes is not None and kbytes.value.isdigit() else 0
    boot_limit = _commit_limit(f, ratio_boot, kbytes_boot)
    keep = not (now == "2" and None not in (running_limit, committed) and running_limit < needed)
    back = [("vm.overcommit_memory", boot.value)]
    if boot.value == "2":
        back.insert(0, ("vm.overcommit_kbytes", str(kbytes_boot)) if kbytes_boot else ("vm.overcommit_ratio", str(ratio_boot)))
        if None not in (boot_limit, committed) and boot_limit < needed:
            back = []
    words = ""
    if not keep:
        words += (
            " Kept at boot, strict mode with the running pair would make its commit limit of %s permanent, less than the %s needed."
            % (
                gib(running_limit),
                gib(needed),
            )
        )
    if not back:
        words += " Set back now, strict mode with the pair boot sets would enforce a commit limit of %s, less than the %s needed." % (
            gib(boot_limit),
            gib(needed),
        )
    return _drift_steps(f, [("vm.overcommit_memory", now, boot)], topic, displaces, keep=keep, back=back), words


def _drift_steps(f, items, topic, displaces=(), keep=True, back=None):
    """Keep what runs (where that weakens nothing, and ``keep``), or set it back to what boot
    sets (``back``: the settings that does, in order; empty: not offered)."""
    fixes = f.fixes
    weakened = [weakens(key, now, boot.value) for key, now, boot in items]
    weak = [item for item, weaker in zip(items, weakened) if weaker]
    kept_items = [(key, now) for (key, now, _boot), weaker in zip(items, weakened) if not weaker] if keep else []
    settings = tuple(back) if back is not None else tuple((key, boot.value) for key, _now, boot in items)
    back = fixes.runtime("Set %s back to what boot sets" % ("it" if len(items) == 1 else "them"), [SetSysctl(settings)]) if settings else []
    keep = kept_items
    if not keep:
        if not weak:
            return back
        # Keeping a weaker value would switch a protection off for good: never offered.
        names = ", ".join(key for key, _, _ in weak)
        return [s._replace(summary=s.summary + " (the running value of %s is weaker: it is not kept)" % names) for s in back]
    # It already runs: only the persistent half of the sysctl fix is needed, without a reload
    # that would reset the other drifted keys. One drop-in per topic: two drift fixes must not
    # overwrite each other's file.
    kept = [
        step._replace(
            summary=step.summary.replace("Make it persistent", "Keep the running value%s at boot" % ("" if len(keep) == 1 else "s"), 1)
        )
        for step in fixes.sysctl(keep, topic, "Keep the running value", displaces=displaces, reload=False)[1:]
    ]
    if weak:
        names = ", ".join(key for key, _, _ in weak)
        kept += fixes.runtime(
            "And set %s back to what boot sets: %s weaker now, and a weaker value is not kept"
            % (names, "it is" if len(weak) == 1 else "they are"),
            [SetSysctl(tuple((key, boot.value) for key, _now, boot in weak))],
        )
    return kept + [s._replace(summary="Or " + s.summary[0].lower() + s.summary[1:]) for s in back]


def _pair_drift(f, after):
    """vm.overcommit_ratio and vm.overcommit_kbytes as the pair the kernel ends with."""
    runtime = f.sysctl
    config = f.sysctl_config
    if not runtime or not any(config.all(key) for key in _PAIR):
        return None
    ratio_now, kbytes_now = runtime.int("vm.overcommit_ratio"), runtime.int("vm.overcommit_kbytes")
    ratio, kbytes = after.values.get("vm.overcommit_ratio"), after.values.get("vm.overcommit_kbytes")
    if None in (ratio_now, kbytes_now) or ratio is None or kbytes is None:
        return None
    ratio_boot, kbytes_boot = int(ratio.value), int(kbytes.value)
    if kbytes_now == kbytes_boot and (kbytes_now or ratio_now == ratio_boot):
        return None
    if kbytes_now:
        running = "vm.overcommit_kbytes = %d (so the ratio reads 0)" % kbytes_now
        keep_key, keep_value, drops = "vm.overcommit_kbytes", kbytes_now, "vm.overcommit_ratio"
    else:
        running = "vm.overcommit_ratio = %d" % ratio_now
        keep_key, keep_value, drops = "vm.overcommit_ratio", ratio_now, "vm.overcommit_kbytes"
    if kbytes_boot:
        boot_words = "vm.overcommit_kbytes = %d (%s)" % (kbytes_boot, kbytes.where)
        boot_key, boot_value = "vm.overcommit_kbytes", kbytes_boot
    else:
        boot_words = "vm.overcommit_ratio = %d (%s)" % (ratio_boot, ratio.where)
        boot_key, boot_value = "vm.overcommit_ratio", ratio_boot
    zeroed = kbytes if kbytes_boot == 0 and kbytes.zeroed_by is not None and not kbytes_now else ratio if ratio.zeroed_by else None
    message = (
        "The running kernel's commit limit comes from %s, but boot ends with %s: the next reboot changes the commit limit "
        "that strict overcommit enforces. Writing either key zeroes the other, so the pair is judged as the kernel ends with it."
        % (running, boot_words)
    )
    if zeroed is not None and zeroed.zeroed_by is not None:
        message += " At boot %s zeroes the other." % zeroed.where
    severity = Severity.HIGH
    boot_mode = sysctl_int(after.get("vm.overcommit_memory"))
    mem = f.meminfo
    committed = mem.get("Committed_AS") if mem else None
    boot_limit = _commit_limit(f, ratio_boot, kbytes_boot)
    # Strict overcommit refuses what takes Committed_AS over CommitLimit (mm/util.c).
    starves = boot_mode == 2 and boot_limit is not None and committed is not None and boot_limit < committed
    if starves:
        severity = Severity.CRITICAL
        message += (
            " Under strict overcommit (vm.overcommit_memory = 2 at boot) that gives a commit limit of %s, less than the %s "
            "committed now: after the next reboot allocations fail with ENOMEM as the services start." % (gib(boot_limit), gib(committed))
        )
    evidence = [Evidence(key_path("vm.overcommit_ratio"), str(ratio_now)), Evidence(key_path("vm.overcommit_kbytes"), str(kbytes_now))]
    for item in f.sysctl_config.assignments:
        if item.key in _PAIR:
            evidence.append(Evidence(item.path, "%s = %s" % (item.key, item.value), item.line))
    fixes = f.fixes
    model = f.model
    needed = (committed or 0) + (model.size if model else 0)
    running_limit = _commit_limit(f, ratio_now, kbytes_now)
    keep = []
    # Strict at boot, or kept strict by the mode's own drift fix: the running pair must hold.
    strict = boot_mode == 2 or runtime.int("vm.overcommit_memory") == 2
    if strict and running_limit is not None and committed is not None and running_limit < needed:
        # Kept at boot, the running pair would make a commit limit short of what is committed
        # and the model permanent (overcommit.strict-headroom): only setting it back is offered.
        message += " Keeping the running pair would make its commit limit of %s permanent, less than the %s needed: it is not offered." % (
            gib(running_limit),
            gib(needed),
        )
    else:
        keep = [
            step._replace(summary=step.summary.replace("Make it persistent", "Keep the running %s at boot" % keep_key, 1))
            for step in fixes.sysctl([(keep_key, str(keep_value))], "drift-overcommit", "Keep it", displaces=(drops,), reload=False)[1:]
        ]
    back = fixes.runtime(
        "%s the running kernel back to what boot sets" % ("Or set" if keep else "Set"), [SetSysctl(((boot_key, str(boot_value)),))]
    )
    if runtime.int("vm.overcommit_memory") == 2 and boot_limit is not None and committed is not None and boot_limit < needed:
        back = []  # setting it back now would take the running commit limit under what is committed (and the model)
    return Issue(message, evidence, keep + back, severity=severity, title="Running commit limit differs from what boot will set")


def _commit_limit(f, ratio, kbytes):
    """CommitLimit for a ratio/kbytes pair (mm/util.c vm_commit_limit), with this host's RAM,
    huge page pools and swap; None where meminfo does not say."""
    pools = f.hugepages
    held = sum(p.total * p.page_size for p in pools.pools.values()) if pools else 0
    return commit_limit(f.meminfo, held, ratio, kbytes)


@rule(
    "persist.sysctl-not-applied",
    "Sysctl files never applied at boot",
    Severity.LOW,
    needs=("sysctl_config", "sysctl_applier"),
    uses=("sysctl_configured_runtime", "boot_release", "fixes"),
)
def sysctl_not_applied(f):
    """Nothing on this host applies the persistent sysctl files at boot.

    systemd applies them through systemd-sysctl.service; without systemd, a boot script runs
    `sysctl --system` (Debian's procps in rcS.d, OpenRC's sysctl service). A host booted with
    another program as init (`init=`/`rdinit=` naming a VM agent, a container-like init), or
    with systemd-sysctl masked, applies none of them: the files in /etc/sysctl.d and
    /usr/lib/sysctl.d are dead text, and what the kernel runs with comes from its own defaults
    and from whatever sets values after boot. Comparing the running kernel with those files
    (persist.sysctl-drift) means nothing there, so that check is left to hosts that apply them.

    Low; medium when the files set keys that bear on loading or serving models, or keys that
    guard the kernel's security (fs.protected_*, kernel.kptr_restrict …) whose running value is
    weaker than the files say: the host then lacks protection its configuration claims.

    Fix: put the settings where this host applies them at boot: the kernel command line as
    `sysctl.KEY=VALUE` (Linux 5.8+, written just before init starts; not for keys of modules
    loaded later), in the boot configuration of this machine (a VM's launch configuration when
    it has no boot loader), or the program that runs as init.

    Reference: Documentation/admin-guide/kernel-parameters.txt (sysctl.*=, init=, rdinit=);
    sd_booted(3); sysctl.d(5).
    """
    applier = f.sysctl_applier
    config = f.sysctl_config
    if applier.applies:
        return Pass("%s applies them at boot (%s)" % (applier.name, applier.how))
    keys = {}
    for item in config.assignments:
        if "*" not in item.key and "?" not in item.key:
            keys[item.key] = item
    if not keys:
        return Pass("nothing applies sysctl files at boot here (%s), and they set nothing" % applier.how)
    runtime = f.sysctl_configured_runtime or {}
    model = sorted(key for key in keys if bears_on_models(key))
    shown = []
    for key in sorted(keys, key=lambda k: (not bears_on_models(k), k))[:8]:
        item = keys[key]
        now = runtime.get(key)
        runs = ", runs %s" % now if now is not None and not _same(now, item.value) else ""
        shown.append("%s = %s (%s%s)" % (key, item.value, item.where, runs))
    message = (
        "aidoctor knows of nothing that applies the sysctl files at boot on this host: %s. The %d key%s they set reach "
        "the kernel only when someone runs `sysctl --system`: %s%s."
        % (applier.how, len(keys), "" if len(keys) == 1 else "s", "; ".join(shown), "; …" if len(keys) > len(shown) else "")
    )
    if model:
        message += " Of these, %s bear%s on loading or serving models." % (", ".join(model), "s" if len(model) == 1 else "")
    weaker = sorted(key for key in keys if key in runtime and weakens(key, runtime[key], keys[key].value))
    if weaker:
        message += " %s guard%s the kernel's security and run%s weaker than the files say: the protection the files promise is off." % (
            ", ".join(weaker),
            "s" if len(weaker) == 1 else "",
            "s" if len(weaker) == 1 else "",
        )
    evidence = [Evidence(item.path, "%s = %s" % (item.key, item.value), item.line) for item in list(keys.values())[:12]]
    release = f.boot_release
    where = (
        "Put the settings this host needs where it applies them at boot: on the kernel command line as `sysctl.KEY=VALUE` "
        "(Linux 5.8+, set just before init starts), in this machine's boot configuration, or in the program that runs as init"
    )
    if release and kernel_version(release) < (5, 8) and kernel_version(release) != (0, 0):
        where = (
            "Put the settings this host needs into the program that runs as init "
            "(kernels before 5.8 take no sysctl.KEY=VALUE on the command line)"
        )
    severity = Severity.MEDIUM if model or weaker else None
    return Issue(message, evidence, [f.fixes.advice(where)], severity=severity, impact=len(keys))


@rule(
    "persist.sysctl-conf-unread",
    "/etc/sysctl.conf is never read at boot",
    Severity.MEDIUM,
    needs=("sysctl_config", "sysctl_applier"),
    uses=("sysctl_at_boot", "rc_local", "fixes"),
)
def sysctl_conf_unread(f):
    """/etc/sysctl.conf sets keys, but what applies the sysctl files at boot never reads it.

    systemd-sysctl reads only the sysctl.d folders (sysctl.d(5)); distributions linked
    /etc/sysctl.conf in as /etc/sysctl.d/99-sysctl.conf. Debian 13 no longer does: Debian's
    systemd dropped the link in 256.4-1 ("procps no longer ships /etc/sysctl.conf", #1076190),
    and procps 2:4.0.4-7 removes /etc/sysctl.conf on upgrade, keeping a changed one as
    /etc/sysctl.conf.dpkg-bak (dpkg-maintscript-helper(1) rm_conffile). Debian 12 (systemd 252)
    still ships the link. So the tuning guide's `cat >> /etc/sysctl.conf` followed by `sysctl -p`
    works until the reboot: `sysctl -p` and `sysctl --system` read the file, boot does not, and
    the pool and the overcommit mode the user believes persistent are gone. What is judged is the
    tree, not a version: the file, the link, and what applies the files at boot.

    High when a huge page pool or an overcommit setting is lost (boot sets another value); medium
    for other keys that bear on models or guard the kernel's security; low otherwise. Keys that
    the files boot reads set to the same value are not lost.

    Fix: move the lines into /etc/sysctl.d/99-sysctl.conf (the name the link had, so they are
    read at the same place, last but for later names) and comment them out in /etc/sysctl.conf,
    so the one place that says them is the one boot reads.

    Reference: sysctl.d(5); systemd-sysctl(8); Debian bug #1076190; Debian procps changelog
    2:4.0.4-7; dpkg-maintscript-helper(1).
    """
    config = f.sysctl_config
    applier = f.sysctl_applier
    unread = config.manual or config.renamed
    if not unread:
        return Pass("no /etc/sysctl.conf setting is left out at boot")
    if not applier.applies:
        return Skip("nothing applies the sysctl files at boot here (%s): persist.sysctl-not-applied" % applier.how)
    source = unread[0].path
    loaded = _rc_local_loads(f.rc_local, source)
    if loaded is not None:
        return Pass("%s reads it at boot, after systemd-sysctl: line %d `%s`" % (f.rc_local.path, loaded[0], loaded[1]))
    after = f.sysctl_at_boot
    last = {}
    for item in unread:
        if "*" not in item.key and "?" not in item.key:
            last[item.key] = item
    lost = [item for key, item in last.items() if not (after and after.values.get(key) and _same(after.values[key].value, item.value))]
    if not lost:
        return Pass("every key %s sets, boot sets to the same value through the files it reads" % source)
    shown = ["%s = %s (line %d, boot: %s)" % (item.key, item.value, item.line, _boot_value(after, item.key)) for item in lost[:_SHOWN]]
    if source == SYSCTL_CONF_BACKUP:
        why = (
            "%s holds what /etc/sysctl.conf held before procps removed it on upgrade (Debian 13's procps keeps a changed "
            "file under that name); nothing reads it" % source
        )
    else:
        why = "%s applies only the sysctl.d folders, and no /etc/sysctl.d/99-sysctl.conf links %s in" % (applier.name, source)
    message = "%s: %d setting%s of it never reach%s the kernel at boot, only `sysctl -p` or `sysctl --system` by hand: %s." % (
        why,
        len(lost),
        "" if len(lost) == 1 else "s",
        "es" if len(lost) == 1 else "",
        _listed(shown, len(lost), sep="; "),
    )
    if source == SYSCTL_CONF_BACKUP:
        message = message.replace(", only `sysctl -p` or `sysctl --system` by hand", "")
    keys = [item.key for item in lost]
    bearing = [key for key in keys if key in _LOAD_BEARING]
    if bearing:
        severity = Severity.HIGH
        message += " Among them %s, which the huge page and overcommit checks rely on." % ", ".join(bearing)
    elif any(bears_on_models(key) or guards_security(key) for key in keys):
        severity = None
    else:
        severity = Severity.LOW
    evidence = [Evidence(item.path, "%s = %s" % (item.key, item.value), item.line) for item in lost[:_SHOWN]]
    names = sorted({path.rsplit("/", 1)[-1] for path in config.files} | {item.name for item in config.assignments})
    names += [path.rsplit("/", 1)[-1] for path, _why in config.skipped if path != SYSCTL_CONF]
    if source == SYSCTL_CONF:
        masked = any(path.endswith("/99-sysctl.conf") for path, _why in config.skipped)
        there = (
            "masked: a link to /dev/null"
            if masked
            else "a file of its own, not a link to /etc/sysctl.conf"
            if "99-sysctl.conf" in names
            else "absent: nothing links /etc/sysctl.conf into the sysctl.d folders"
        )
        evidence.append(Evidence("/etc/sysctl.d/99-sysctl.conf", "(%s)" % there))
    # A ratio moved beside a mode other than 2 would do nothing at boot (overcommit.ratio-ignored).
    modes = [item.value for item in unread if item.key == "vm.overcommit_memory"]
    mode = modes[-1] if modes else _boot_value(after, "vm.overcommit_memory").split(" ", 1)[0]
    idle = [item for item in unread if item.key in _PAIR] if sysctl_int(mode) != 2 else []
    why_idle = "outside vm.overcommit_memory = 2 the ratio and kbytes do nothing (overcommit.ratio-ignored)"
    step = f.fixes.move_sysctl_lines(unread, source, names, idle, why_idle)
    return Issue(message, evidence, [step], severity=severity, impact=len(lost))


def _boot_value(after, key: str) -> str:
    value = after.values.get(key) if after else None
    return "%s from %s" % (value.value, value.where) if value is not None else "no file sets it, so the kernel's default stays"


def _rc_local_loads(rc, source: str):
    """(line number, text) of an rc.local line that boot runs and that loads ``source``:
    `sysctl -p` (or `--load`) with no file or with it, or `sysctl --system` (procps reads
    /etc/sysctl.conf last); None."""
    if source != SYSCTL_CONF or rc is None:
        return None
    for number, raw in enumerate(rc.lines, 1):
        words = raw.split("#", 1)[0].split()
        if words[:1] == ["sudo"]:
            words = words[1:]
        if not words or words[0].rsplit("/", 1)[-1] != "sysctl" or not rc.runs(number):
            continue
        files = [word for word in words[1:] if not word.startswith("-")]
        loads = "-p" in words or "--load" in words or any(word.startswith(("--load=", "-p/")) for word in words)
        named = [word.split("=", 1)[-1] for word in words if word.startswith("--load=")] + files
        if "--system" in words or (loads and (not named or SYSCTL_CONF in named)):
            return number, raw.strip()
    return None


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
    by_key = {}  # one pass, in first-seen order: a tree may hold 100,000 assignments
    for item in config.assignments:
        by_key.setdefault(item.key, []).append(item)
    issues = []
    for key, items in by_key.items():
        files = dict.fromkeys(item.path for item in items)
        if len(files) < 2 or all(_same(item.value, items[-1].value) for item in items):
            continue
        winner = items[-1]
        others = _listed(["%s = %s at %s" % (key, item.value, item.where) for item in items[:-1][:_SHOWN]], len(items) - 1, sep="; ")
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
        evidence = [Evidence(item.path, "%s = %s" % (key, item.value), item.line) for item in _ends(items)]
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
            if len(parts) == _SHOWN:
                break  # the message names the first keys; the fix takes them all
            values = {" ".join(item.value.split()) for item in items}
            lines = _listed([str(item.line) for item in _ends(items)], len(items), ends=True)
            parts.append(
                "%s %d times (lines %s%s; line %d wins)"
                % (key, len(items), lines, "" if len(values) == 1 else ", with different values", items[-1].line)
            )
            evidence += [Evidence(path, "%s = %s" % (key, item.value), item.line) for item in _ends(items)]
        said = _listed(parts, len(repeated), sep="; ")
        message = "%s sets %s: the last copy wins and the others mislead whoever edits them." % (path, said)
        earlier = [item for items in repeated.values() for item in items[:-1]]
        step = f.fixes.comment_out_lines(
            earlier, "Comment out all but the last copy of each key (the one in force: nothing changes at runtime)"
        )
        issues.append(Issue(message, evidence, [step] if step else []))
    return issues or Pass("no file repeats a key")


# How many items of a long list a message or its evidence names (the fix takes them all).
_SHOWN = 12


def _ends(items):
    """All of ``items`` when there are few; else the first ones and the last."""
    return items if len(items) <= _SHOWN else list(items[: _SHOWN - 1]) + [items[-1]]


def _listed(words, count: int, ends: bool = False, sep: str = ", ") -> str:
    """``words`` (of ``count``) joined, saying how many were left out: at the end, or with
    ``ends`` before the last word."""
    left = count - len(words)
    if left <= 0:
        return sep.join(words)
    if ends:
        return "%s%s… %d more …%s%s" % (sep.join(words[:-1]), sep, left, sep, words[-1])
    return "%s%s… and %d more" % (sep.join(words), sep, left)


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
    steps = _move_steps(fixes, rc, lost, end if after and len(problems) == 1 else None)
    commands = []
    if not rc.executable:
        commands.append(MakeExecutable(rc.path))
    if rc.crlf:
        commands.append(StripCarriageReturns(rc.path))
    # The line that ends the script, as it reads once the steps before have run.
    end_text = rc.lines[end - 1] if end else ""
    end_text = end_text[:-1] if rc.crlf and end_text.endswith("\r") else end_text
    if not rc.lines or not rc.lines[0].startswith("#!"):
        commands.append(AddInterpreter(rc.path))
        end = end + 1 if end else end
    # Letting the file run also runs what nobody meant to keep: a command that turns THP off is
    # commented out first, whole (an if block, a continued line), so the rest still parses.
    lost_lines = {number for number, _ in lost}
    thp_off = [
        (first, last)
        for first, last in rc.commands()
        if lost_lines & set(range(first, last + 1)) and _turns_thp_off(" ".join(rc.lines[first - 1 : last]))
    ]
    # A second top-level exit would stop what follows it as the first did.
    last_lost = max(lost_lines, default=0)
    exits = [number for number in rc.exit_lines()[1:] if number < last_lost] if after else []
    quiet = [(n, rc.lines[n - 1]) for first, last in thp_off for n in range(first, last + 1) if _command(rc.lines[n - 1])]
    quiet += [(n, rc.lines[n - 1]) for n in exits]
    words = []
    if quiet:
        commands.insert(0, CommentLines(rc.path, tuple(sorted(quiet))))
    if thp_off:
        words.append(
            "comment out line %s, which would then write `never` to transparent_hugepage/enabled and turn THP off"
            % " and ".join(str(first) if first == last else "%d-%d" % (first, last) for first, last in thp_off)
        )
    if exits:
        words.append("comment out the later `exit` on line %s, which would stop the tuning after it" % " and ".join(map(str, exits)))
    if after:
        commands.append(MoveLineToEnd(rc.path, end, end_text))
        words.append("move `%s` to the end, after the tuning appended below it" % end_text.strip())
    if commands:
        summary = "Or keep rc.local and let it run" + (": " + "; ".join(words) if words else "")
        steps.append(fixes.step(summary, commands, True, host_wide=False))
    return Issue(message, evidence, steps, severity=severity)


# One-shot triggers, not settings: nothing to keep at boot.
_TRIGGERS = ("vm.compact_memory", "vm.drop_caches")
# A value a sysctl.d line (and a kernel argument) carries as it is: numbers and words.
_PLAIN_VALUE = r"[A-Za-z0-9._:,+ \t-]*"


def _move_steps(fixes, rc, lost, end):
    """The first way: rc.local's sysctl settings moved to a drop-in, where boot applies them,
    and its tuning commands that boot never runs commented out, whole (a loop commented out in
    part would no longer parse), so the file says what boot does. A huge page pool is not
    moved: it never existed, and one that only costs memory (hugepages.unused) is not made up
    here; --hugepages N declares one that is needed. Only settings that bear on models are
    moved, in plain words: a key that guards security or runs programs (kernel.core_pattern,
    kernel.modprobe) never ran, and is not made to run at every boot without the admin."""
    settings, pool, kept = {}, [], set()
    for number, line in lost:
        for key, value in sysctl_writes(line) or ():
            if key == "vm.nr_hugepages":
                pool.append((number, value))
            elif key in _TRIGGERS:
                continue
            elif bears_on_models(key) and not guards_security(key) and re.fullmatch(_PLAIN_VALUE, str(value)):
                settings[key] = value
            else:
                kept.add(key)
    steps = []
    if settings:
        moved = fixes.sysctl(sorted(settings.items()), "rc-local", "Keep them", reload=False)
        persistent = [step for step in moved if step.persistent]
        steps += [
            step._replace(
                summary=step.summary.replace(
                    "Make it persistent", "Move its sysctl settings (%s) where boot applies them" % ", ".join(sorted(settings)), 1
                )
            )
            for step in persistent
        ]
    tuning = {number for number, _ in lost}
    dead = []
    exit_line = rc.exit_line
    for first, last in rc.commands():
        if first == exit_line or (end is not None and first < end):
            continue
        if any(number in tuning for number in range(first, last + 1)):
            dead += [(number, rc.lines[number - 1]) for number in range(first, last + 1) if _command(rc.lines[number - 1])]
    said = "; ".join("line %d `%s`" % (number, text.strip()) for number, text in dead[:6]) + ("; …" if len(dead) > 6 else "")
    summary = "%s the tuning lines of %s that boot never runs (%s), so the file says what boot does: nothing changes at boot" % (
        "Then comment out" if settings else "Comment out",
        rc.path,
        said,
    )
    if kept:
        summary += (
            "; not moved (only plain settings that bear on models are, never one that guards security or runs a program): %s; "
            "set them in /etc/sysctl.d by hand if they are meant"
            % (", ".join("`%s`" % key for key in sorted(kept)[:6]) + (", …" if len(kept) > 6 else ""))
        )
    if pool and fixes.image is not None:
        # An image has no running pool for hugepages.shortfall to judge: say what would keep one.
        summary += (
            "; line %s asks for a huge page pool, which never existed and is not made one here: if a hugetlbfs user needs it, "
            "reserve it on the image's kernel command line (`hugepages=%s`), where the kernel allocates it at boot"
            % (" and ".join(str(n) for n, _value in pool), pool[-1][1])
        )
    elif pool:
        summary += (
            "; line %s asks for a huge page pool, which never existed and is not made one here: if a hugetlbfs user needs it, "
            "`--hugepages N` says so and hugepages.shortfall reserves it" % " and ".join(str(n) for n, _value in pool)
        )
    steps.append(fixes.step(summary, [CommentLines(rc.path, tuple(dead))], True, host_wide=False))
    return steps


def _turns_thp_off(text: str) -> bool:
    return all(word in text for word in ("transparent_hugepage", "enabled", "never"))


def _command(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def _is_tuning(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#") and any(word in text for word in _TUNING)
