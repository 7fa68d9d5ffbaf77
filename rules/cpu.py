"""CPU frequency: governors, and hosts where there is no frequency scaling to tune."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.cpufreq import CPUFREQ_DIR
from ai_doctor.facts.system import kernel_version
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step
from ai_doctor.remedy.actions import Show, SystemdUnit, WriteKernel
from ai_doctor.units import cpu_ranges

# Drivers whose "powersave" is their own adaptive algorithm, not the generic governor that
# pins the lowest frequency (Documentation/admin-guide/pm/intel_pstate.rst, amd-pstate.rst).
_ADAPTIVE_POWERSAVE = ("intel_pstate", "amd-pstate-epp")
# Drivers with an energy-performance preference (intel_pstate.rst, amd-pstate.rst).
_EPP_DRIVERS = ("intel_pstate", "amd-pstate-epp")


@rule(
    "cpu.governor",
    "CPU not on the performance governor",
    Severity.MEDIUM,
    uses=(
        "cpufreq",
        "running",
        "release",
        "ondemand_unit",
        "machine",
        "tuned",
        "tuned_profile",
        "cmdline",
        "kernel_config",
        "governors_at_boot",
        "sysfs_conf",
        "fixes",
    ),
)
def governor(f):
    """A CPU with a frequency policy is not on the `performance` governor.

    Tokenising, batching, data loading and the host side of GPU work run on the CPU; a
    governor that ramps the clock up on demand adds latency at every burst and lowers
    throughput for short ones. `performance` runs at the highest frequency the policy allows.

    With intel_pstate or amd-pstate-epp in active mode, `powersave` is the driver's own
    adaptive algorithm rather than the generic governor pinned at the lowest frequency, so it
    is reported as low, not medium. Anywhere else (acpi-cpufreq, intel_cpufreq, which is
    intel_pstate in passive mode, cppc_cpufreq …) `powersave` is the generic governor: "the
    lowest frequency, within the scaling_min_freq policy limit, to be requested" (cpufreq.rst),
    and the finding gives that floor and the policy's ceiling.

    Fix: write `performance` to each policy's scaling_governor now; keep it with tuned where
    tuned runs — it would otherwise re-apply its own profile's governor — through a small
    profile of our own applied after the active ones (`[cpu] governor=performance`, and
    `energy_performance_preference=performance` where the driver has one, since
    intel_pstate since about 5.10 refuses any other preference under performance), so the rest of the
    active profile stays; else with `cpufreq.default_governor=performance` on the kernel
    command line (Linux 5.9+). On Ubuntu, an enabled ondemand.service switches every CPU
    to ondemand or powersave seconds after boot whatever the kernel's default was: it is
    disabled first.

    Debian's sysfsutils writes the `scaling_governor` lines of /etc/sysfs.conf and
    /etc/sysfs.d/*.conf at every boot, after cpufrequtils (its unit's After=): such a line
    would set the governor back after any boot-time setting, so the fix comments it out.

    tuned's `[cpu] governor` is that of the profile tuned loads when it starts, read as tuned's
    own code does (Debian 12's tuned 2.20 and Debian 13's 2.25, whose postinst enables
    tuned.service and whose active_profile and profile_mode ship empty: daemon/daemon.py
    _get_startup_profile, utils/profile_recommender.py). In automatic mode (profile_mode `auto`, or
    both files empty) that is its recommend.d rules' pick: balanced on bare metal (2.20:
    conservative|powersave, conservative once its [modules] loads cpufreq_conservative; 2.25:
    schedutil|ondemand|powersave), virtual-guest where virt-what reports a hypervisor
    (performance). The fix keeps the pick before ours (`tuned-adm profile balanced
    aidoctor-cpu`), since tuned-adm switches to manual mode; where the pick is not known (an
    image: virt-what's output depends on the machine) the check says so, and the fix is advice.

    In an image the check judges the governor it will set at boot, the last word first: a
    sysfsutils line, the active tuned profile's `[cpu] governor` (where tuned starts at boot), an enabled
    ondemand.service (bare metal only), `cpufreq.default_governor=` on the default kernel's
    boot line (5.9+), else the kernel's build default (CONFIG_CPU_FREQ_DEFAULT_GOV_*, which
    intel_pstate and amd-pstate in active mode also follow for performance). A build default
    alone is reported as low: virtual machines usually have no frequency scaling at all.

    Reference: Documentation/admin-guide/pm/cpufreq.rst; Documentation/admin-guide/pm/intel_pstate.rst;
    tuned-adm(8) (recommend, automatic mode).
    """
    freq = f.cpufreq
    if not freq:
        return Skip(freq.reason) if f.running else _image_governor(f)
    if freq.layout == "none":
        return Skip("no CPU frequency policies: governor tuning does not apply here (cpu.fixed-frequency)")
    slow = [p for p in freq.policies if p.governor != "performance"]
    unread = "; not readable: %s" % ", ".join("%s (%s)" % item for item in freq.unread) if freq.unread else ""
    if not slow:
        return Pass("all %d readable policies use performance%s" % (len(freq.policies), unread))
    cpus = [cpu for p in slow for cpu in p.cpus]
    by_governor = {}
    for policy in slow:
        by_governor.setdefault(policy.governor, []).extend(policy.cpus)
    groups = [
        "%s %s on %s" % ("CPU" if len(c) == 1 else "CPUs", cpu_ranges(c), g or "no governor (scaling_governor is empty)")
        for g, c in sorted(by_governor.items())
    ]
    adaptive = all(p.governor == "powersave" and p.driver in _ADAPTIVE_POWERSAVE for p in slow)
    message = "%s: %d of %d CPUs not on performance." % ("; ".join(groups), len(cpus), sum(len(p.cpus) for p in freq.policies))
    if freq.unread:
        message += " %d more %s could not be read (%s)." % (
            len(freq.unread),
            "policy" if len(freq.unread) == 1 else "policies",
            ", ".join("%s: %s" % item for item in freq.unread[:4]) + (", …" if len(freq.unread) > 4 else ""),
        )
    if adaptive:
        message += (
            " Under %s, powersave is the driver's adaptive algorithm, not the lowest "
            "frequency; performance still removes the ramp-up at each burst."
        ) % slow[0].driver
    pinned = [p for p in slow if p.governor == "powersave" and p.driver not in _ADAPTIVE_POWERSAVE]
    if pinned:
        first = pinned[0]
        limits = ""
        if first.min_khz and first.max_khz:
            limits = ": %s (scaling_min_freq), where the policy allows up to %s (scaling_max_freq)" % (
                _freq(first.min_khz),
                _freq(first.max_khz),
            )
        message += " powersave under %s is the generic governor, which holds each CPU at the lowest frequency its policy allows%s." % (
            first.driver or "this cpufreq driver",
            limits,
        )
    missing = [p for p in slow if p.available and "performance" not in p.available]
    if missing:
        message += (
            " The performance governor is not offered here (%s available): load it with `modprobe cpufreq_performance` first."
            % " ".join(missing[0].available)
        )
    evidence = [Evidence(p.governor_path, p.governor or "(empty)") for p in slow[:8]]
    if len(slow) > 8:
        evidence.append(Evidence(CPUFREQ_DIR, "%d more policies not on performance" % (len(slow) - 8)))
    steps = _steps(f, freq, slow)
    tuned_words, tuned_evidence = _tuned_at_boot(f)
    message += tuned_words
    evidence += tuned_evidence
    boot = f.governors_at_boot
    unexplained = [p for p in slow if boot and p.governor_path in boot.kept]
    if unexplained:
        # Set after boot by something the checks do not know of, or by hand: a boot-time setting
        # does not stop a writer that comes later.
        message += (
            " They are not what the kernel starts with, and nothing found here (tuned, cpupower, cpufrequtils, sysfsutils, "
            "ondemand.service, the boot line) sets them: something else wrote them after boot, or a hand did; if something "
            "does, it will again after the boot-time setting below."
        )
        steps.append(
            f.fixes.step(
                "If something writes the governor after boot, change it there: look for it",
                [Show("grep -rIls scaling_governor /etc /usr/lib/systemd/system /usr/local")],
                None,
                host_wide=False,
                needs_root=False,
            )
        )
    return Issue(message, evidence, steps, severity=Severity.LOW if adaptive else None, impact=len(cpus))


def _tuned_at_boot(f):
    """(words, evidence) for what tuned sets at its next start where that is not performance, or
    is not known."""
    tuned, profile = f.tuned, f.tuned_profile
    if not (tuned and tuned.enabled and profile):
        return "", []
    decision = profile.decide("cpu", "governor")
    if not decision.known:
        return " What tuned sets when it next starts is not known: %s." % decision.why, []
    setting = decision.setting
    if setting is None or setting.value.split("|")[0].strip() == "performance":
        return "", []
    how = tuned.how
    # "/etc/tuned/active_profile: balanced" reads as a source; automatic mode as a sentence of its own.
    said = " (%s)." % how if how.startswith("/") else ". %s." % (how[:1].upper() + how[1:])
    return (
        " tuned sets %s (%s:%d) each time it starts%s" % (setting.text, setting.path, setting.line, said),
        [Evidence(setting.path, setting.text, setting.line)],
    )


def _freq(khz: int) -> str:
    return "%.1f GHz" % (khz / 1e6) if khz >= 1000000 else "%d MHz" % (khz // 1000)


def _steps(f, freq, slow):
    fixes = f.fixes
    if len(slow) == len(freq.policies) and freq.layout == "policy":
        # A pattern left to the shell (and expanded the same way by --apply).
        write = WriteKernel((CPUFREQ_DIR + "/policy*/scaling_governor",), "performance", True)
    else:
        write = WriteKernel(tuple(p.governor_path for p in slow), "performance")
    steps = fixes.runtime("Switch to the performance governor now", [write])
    ondemand = f.ondemand_unit
    machine = f.machine
    # The unit has ConditionVirtualization=no: in a VM it never runs.
    if ondemand and not (machine and machine.virtual):
        # Otherwise it switches the CPUs back seconds after every boot, whatever else is set.
        steps.append(
            fixes.step(
                "Stop Ubuntu's ondemand.service (%s), which sets every CPU to ondemand or powersave after each boot" % ondemand,
                [SystemdUnit("disable", "ondemand.service", True)],
                True,
                host_wide=False,
            )
        )
    steps += _sysfs_governor_steps(f, fixes)
    keys = ["governor=performance"]
    if any(p.driver in _EPP_DRIVERS for p in slow):
        # intel_pstate refuses any energy preference but 0 under performance (EBUSY): a
        # profile below that asks for balance_performance would fail on every apply.
        keys.append("energy_performance_preference=performance")
    tuned = fixes.tuned_override("aidoctor-cpu", "CPU governor performance (aidoctor)", [("cpu", keys)], "Keep it at boot")
    if tuned is not None:
        steps.append(tuned)
    elif kernel_version(f.release) >= (5, 9) or not f.release:
        steps.append(fixes.kernel_args(["cpufreq.default_governor=performance"], ["cpufreq.default_governor"], "Keep it at boot"))
    else:
        steps.append(
            Step(
                "Keep it at boot: kernels before 5.9 have no boot parameter for the default governor; install tuned "
                "(`tuned-adm profile throughput-performance`) or enable your distribution's cpupower service with governor=performance",
                (),
                True,
                True,
            )
        )
    return steps


def _sysfs_governor_lines(f):
    """sysfs.conf lines that sysfsutils writes to a scaling_governor at boot, other than
    performance (doctor/facts/sysfsconf.py)."""
    conf = f.sysfs_conf
    if not conf or not conf.applies:
        return []
    return [s for s in conf.settings if s.attr.endswith("cpufreq/scaling_governor") and s.value != "performance"]


def _sysfs_governor_steps(f, fixes):
    """Comment out the sysfs.conf lines that would set the governor back at every boot."""
    return fixes.comment_out_sysfs(
        _sysfs_governor_lines(f),
        "Comment out %(lines)s in %(path)s: Debian's sysfsutils writes %(values)s to the governor at every boot, "
        "after anything set before it",
    )


_KCONFIG_GOVERNORS = ("PERFORMANCE", "POWERSAVE", "USERSPACE", "ONDEMAND", "CONSERVATIVE", "SCHEDUTIL")


def _image_governor(f):
    """The governor an image sets at boot, from what has the last word."""
    fixes = f.fixes
    tuned, profile = f.tuned, f.tuned_profile
    decision = profile.decide("cpu", "governor") if tuned and tuned.enabled and profile else None
    setting = decision.setting if decision is not None and decision.known else None
    ondemand = f.ondemand_unit
    found = []  # (governor, words, evidence, explicit)
    if setting is not None:
        # tuned tries governor=a|b in order; the first is what the profile asks for.
        first = setting.value.split("|")[0].strip()
        whose = "the active tuned profile" if not tuned.auto else "tuned's pick at start (%s)" % " ".join(profile.names)
        found.append(
            (
                first,
                "%s sets %s (%s:%d)" % (whose, setting.text, setting.path, setting.line),
                Evidence(setting.path, setting.text, setting.line),
                True,
            )
        )
    if ondemand:
        found.append(("ondemand", "Ubuntu's ondemand.service is enabled", Evidence(ondemand, "enabled"), True))
    written = _sysfs_governor_lines(f)
    if written:
        # sysfsutils writes the files after boot, whatever the kernel started with.
        last = written[-1]
        words = "Debian's sysfsutils writes it at every boot (%s: %s)" % (last.where, last.raw.strip())
        found.insert(0, (last.value, words, Evidence(last.path, last.raw.strip(), last.line), True))
    elif decision is not None and not decision.known and not ondemand:
        return Skip("the image's governor at boot is tuned's, and what tuned sets is not known: %s" % decision.why)
    boot = None
    line = f.cmdline
    if not line and not found:
        # Unknown is not empty: the line may set cpufreq.default_governor=.
        return Skip("the kernel command line the image boots with is not known: %s" % line.reason)
    if line and kernel_version(f.release) >= (5, 9):
        for index, param in enumerate(line.params):
            if param.name == "cpufreq.default_governor" and param.value:
                path, number = line.origin(index)
                boot = (
                    param.value,
                    "the boot line has %s (%s)" % (param.text, "%s:%d" % (path, number) if number else path),
                    Evidence(path, param.text, number),
                    True,
                )
    config = f.kernel_config
    if boot is None and config:
        for name in _KCONFIG_GOVERNORS:
            if config.get("CPU_FREQ_DEFAULT_GOV_" + name) == "y":
                option = "CONFIG_CPU_FREQ_DEFAULT_GOV_%s=y" % name
                words = "the kernel's build default is %s (%s)" % (option, config.source)
                if name != "PERFORMANCE" and "y" in (config.get("X86_INTEL_PSTATE"), config.get("X86_AMD_PSTATE")):
                    # These drivers offer performance and powersave only; any other default is powersave.
                    words += ", which intel_pstate and amd-pstate in active mode run as their own `powersave`"
                boot = (name.lower(), words, Evidence(config.source, option), False)
    if boot is not None:
        found.append(boot)
    if not found:
        return Skip("an image: nothing in it sets a CPU governor (no tuned [cpu] governor, no ondemand.service, no build default found)")
    governor, words, evidence, explicit = found[0]
    if governor == "performance" and not ondemand:
        return Pass("the image sets the performance governor at boot (%s)" % words)
    # What boot sets is overridden by tuned; ondemand.service runs whatever the others say.
    slow = [item for item in found[:1] if item[0] != "performance"]
    slow += [item for item in found[1:] if item[0] == "ondemand" and ondemand]
    message = "The image will run its CPUs on `%s` where they have frequency scaling: %s." % (
        slow[0][0],
        "; ".join(item[1] for item in slow),
    )
    if ondemand:
        message += " ondemand.service runs on bare metal only (ConditionVirtualization=no) and switches every CPU after boot."
    if not explicit:
        message += " Virtual machines usually have no frequency scaling, so this matters on bare metal."
    steps = []
    if ondemand:
        steps.append(fixes.step("Disable Ubuntu's ondemand.service", [SystemdUnit("disable", "ondemand.service")], True, False))
    steps += _sysfs_governor_steps(f, fixes)
    if governor != "performance":
        keys = [("cpu", ["governor=performance", "energy_performance_preference=performance"])]
        override = fixes.tuned_override("aidoctor-cpu", "CPU governor performance (aidoctor)", keys, "Set the performance governor at boot")
        if override is not None:
            steps.append(override)
        elif kernel_version(f.release) >= (5, 9):
            steps.append(
                fixes.kernel_args(
                    ["cpufreq.default_governor=performance"], ["cpufreq.default_governor"], "Set the performance governor at boot"
                )
            )
    return Issue(message, [item[2] for item in slow], steps, severity=None if any(item[3] for item in slow) else Severity.LOW)


@rule("cpu.fixed-frequency", "No CPU frequency scaling", Severity.INFO, needs=("cpufreq",), uses=("machine", "cmdline", "fixes"))
def fixed_frequency(f):
    """No CPU frequency scaling is exposed: there are no policies under
    /sys/devices/system/cpu/cpufreq.

    Virtual machines usually see no cpufreq driver, and some servers run clocks fixed by
    firmware. Governor tuning does not apply: the guide's loop over
    /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor finds no files, and `tee` reports
    "No such file or directory" — not a permissions problem. On a VM, CPU frequency is the
    hypervisor's business and there is nothing to do. On bare metal, either the firmware
    keeps P-states to itself (a BIOS/UEFI power profile that is not OS-controlled), so its
    power profile is what to set to maximum performance, or no cpufreq driver is loaded
    (cpufreq.off=1, or any non-zero value, on the kernel command line). With
    intel_pstate=disable or amd_pstate=disable, acpi-cpufreq takes over (built into most
    distribution kernels, else loaded by udev), so no policies then still means
    the firmware offers no P-states.

    Virtual or bare metal is told from /sys/hypervisor/type (not for Xen's dom0), the DMI
    vendor and product names (an EC2 `*.metal` product is bare metal), and the x86
    `hypervisor` CPU flag.

    Reference: Documentation/admin-guide/pm/cpufreq.rst; Documentation/admin-guide/pm/intel_pstate.rst
    (intel_pstate=disable); Documentation/arch/x86/cpuinfo.rst (the hypervisor flag).
    """
    freq = f.cpufreq
    if freq.layout != "none":
        return Pass("%d frequency policies" % len(freq.policies))
    evidence = [Evidence(CPUFREQ_DIR, "no policy* directories")]
    fixed = 'Governor tuning does not apply, and writes to scaling_governor fail with "No such file or directory".'
    machine = f.machine
    if machine and machine.virtual:
        evidence.append(Evidence(machine.path, machine.sign))
        return Issue(
            "No CPU frequency policies in %s: this is a virtual machine, and the hypervisor sets CPU frequency. %s "
            "Nothing to do here." % (CPUFREQ_DIR, fixed),
            evidence,
        )
    if machine and machine.virtual is False:
        evidence.append(Evidence(machine.path, machine.sign))
        cmdline = f.cmdline
        params = cmdline.params if cmdline else ()
        off = [p for p in params if p.name == "cpufreq.off" and _nonzero(p.value)]
        disabled = [p for p in params if p.name in ("intel_pstate", "amd_pstate") and p.value == "disable"]
        steps = []
        message = "No CPU frequency policies in %s on bare metal: " % CPUFREQ_DIR
        if off:
            message += "the kernel command line has %s, which turns CPU frequency scaling off. %s" % (off[-1].text, fixed)
            steps.append(f.fixes.kernel_args([], ["cpufreq.off"], "Remove %s from the kernel command line" % off[-1].text))
        else:
            message += "the firmware keeps CPU frequency to itself (no ACPI P-states offered to the OS). %s" % fixed
            if disabled:
                message += " (%s is set, so only acpi-cpufreq could have taken over, and found nothing.)" % " ".join(
                    "%s=%s" % (p.name, p.value) for p in disabled
                )
            steps.append(
                Step(
                    "In the firmware (BIOS/UEFI) setup, choose the maximum-performance power profile, or hand P-state "
                    "control to the OS (often called OS Control or OS DBPM) so a cpufreq driver appears; then reboot",
                    (),
                    False,
                    True,
                )
            )
        return Issue(message, evidence, steps)
    return Issue(
        "No CPU frequency policies in %s: this kernel offers no frequency scaling here (a virtual machine, or clocks fixed by firmware). "
        "%s" % (CPUFREQ_DIR, fixed),
        evidence,
    )


def _nonzero(value) -> bool:
    """A module parameter int (kstrtoint, base 0: 1, 0x1, 010 octal) that is not zero."""
    text = (value or "").strip().lstrip("+-")
    base = 16 if text[:2].lower() == "0x" else 8 if text[:1] == "0" and len(text) > 1 else 10
    try:
        return int(text[2:] if base == 16 else text, base) != 0
    except ValueError:
        return False
