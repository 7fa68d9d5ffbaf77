"""The next boot: what a running host will look like after a reboot, from its persistent
configuration alone. One place answers it, for the checks that compare the running system with
its configuration (persist.sysctl-drift), for every fix that calls itself persistent, and for
``aidoctor --next-boot``, which runs the checks over ai_doctor.nextboot's Host overlay.

In boot order:

- the kernel the boot loader starts, with its command line (bootloader.py); where no boot loader
  configuration is found, the running line is assumed;
- what the kernel sets before any user space: its defaults, ``hugepages=`` pools (read by that
  kernel's own rules), ``transparent_hugepage=``/``thp_anon=``, ``cpufreq.default_governor=``
  (5.9+), ``numa_balancing=``, and ``sysctl.KEY=VALUE`` (5.8+, written just before init runs;
  Documentation/admin-guide/kernel-parameters.txt);
- what init applies: the sysctl files, only where something applies them at boot (sysctl_applier:
  systemd-sysctl, or a procps/OpenRC script running `sysctl --system`), with the kernel's write
  semantics: writing vm.overcommit_ratio zeroes vm.overcommit_kbytes and writing kbytes (even 0)
  zeroes the ratio (mm/util.c overcommit_ratio_handler, overcommit_kbytes_handler; vm.rst
  "Setting one disables the other");
- what starts later: tuned's profile, ondemand.service, units, tmpfiles.d, Debian's sysfsutils
  and rc.local that write THP modes (sysfsutils also governors and schedulers), udev rules that
  set schedulers, rc.local's vm.nr_hugepages.

Memory that is in use now is assumed to be in use after the reboot too (the same services start
again), and a pool is allocated when it fits in nine tenths of RAM.
"""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact
from ai_doctor.facts.cmdline import memparse
from ai_doctor.facts.sysctl import DEFAULTS, SYSTEMD_SYSCTL, normal_key, sysctl_int
from ai_doctor.facts.system import kernel_version, masked, usable_release
from ai_doctor.host import join_link
from ai_doctor.record import Record

# Pools the kernel can hold at boot: what fits in this share of RAM (the rest is for the kernel
# and everything else).
POOL_SHARE = 0.9
_INIT_PARAMS = ("init", "rdinit")


class BootLine(Record):
    """The command line of the next boot (a Cmdline), and whether it was read from the boot
    loader configuration (``known``) or only assumed to stay the running one."""

    __slots__ = ("line", "known", "how")


@fact("boot_cmdline")
def boot_cmdline(host, facts):
    line = facts.get("boot_line")
    if line:
        return BootLine(line, True, "the boot loader configuration (%s)" % line.source)
    running = facts.get("cmdline") if facts.get("running") else None
    if running:
        return BootLine(running, False, "the running command line (%s): %s" % (running.source, line.reason))
    return Unavailable("the next boot's kernel command line is not known: %s" % line.reason)


@fact("boot_release")
def boot_release(host, facts):
    """The kernel the next boot starts: the boot loader's default, else the running one."""
    default = facts.get("default_boot")
    if default and usable_release(default.release):
        return default.release
    return facts.get("release")


class Applier(Record):
    """What applies the sysctl files at boot: ``name`` (``systemd-sysctl``, ``sysctl --system``,
    None for nothing), how that was told (words), and whether it was seen (``known``) or assumed
    where the tree does not say (the files are then taken as applied)."""

    __slots__ = ("name", "how", "known")

    @property
    def applies(self) -> bool:
        return self.name is not None


def _init_params(line):
    """{``init``: value, ``rdinit``: value} of a command line (the last of each)."""
    found = {}
    for param in line.params if line else ():
        if param.name in _INIT_PARAMS and param.value:
            found[param.name] = param.value
    return found


def _resolve(host, path: str) -> str:
    """``path`` with its links followed inside the tree (for naming what runs, not reading)."""
    for _ in range(10):
        link = host.readlink(path)
        if not link.ok or not link.data:
            return path
        path = join_link(path, link.data)
    return path


@fact("sysctl_applier")
def sysctl_applier(host, facts):
    running = facts.get("running")
    boot = facts.get("boot_cmdline")
    wanted = _init_params(boot.line) if boot else {}
    unit_masked = masked(host, "systemd-sysctl.service")
    has_tool = any(host.exists(path) for path in SYSTEMD_SYSCTL)

    def systemd(how):
        if unit_masked:
            return Applier(None, how + ", and systemd-sysctl.service is masked", True)
        # systemd ships systemd-sysctl: a tree without it is one that does not show it.
        return Applier("systemd-sysctl", how, has_tool)

    if running and wanted == _init_params(facts.get("cmdline")):
        # The next boot starts the same init as this one: ask this boot (sd_booted(3)).
        if host.exists("/run/systemd/system"):
            return systemd("systemd runs this boot (/run/systemd/system), and the next boot starts the same init")
        comm = host.read_text("/proc/1/comm", cap=256)
        name = comm.data.strip() if comm.ok else None
        if name == "systemd":
            return systemd("PID 1 is systemd")
        if name and name not in ("init", "busybox", "openrc-init", "runit", "s6-svscan"):
            said = " (%s)" % " ".join("%s=%s" % item for item in sorted(wanted.items())) if wanted else ""
            return Applier(
                None,
                "PID 1 is %s%s, no init system aidoctor knows to apply sysctl files, and the next boot starts it again" % (name, said),
                True,
            )
    program = wanted.get("init") or wanted.get("rdinit") or "/sbin/init"
    real = _resolve(host, program)
    base = real.rsplit("/", 1)[-1]
    if base == "systemd":
        return systemd("%s is systemd (%s)" % (program, real) if real != program else "init is systemd (%s)" % program)
    if wanted and base not in ("init", "busybox", "openrc-init"):
        # init= or rdinit= names some other program: it runs instead of any init system.
        key = "init" if "init" in wanted else "rdinit"
        return Applier(
            None,
            "the boot line starts %s as init (%s=%s), no init system aidoctor knows to apply sysctl files" % (program, key, program),
            True,
        )
    script = _sysv_script(host)
    if script is not None:
        return Applier("sysctl --system", "%s runs `sysctl --system` at boot" % script, True)
    if host.exists(real) and base in ("init", "busybox"):
        return Applier(None, "init is %s, and no boot script (procps, OpenRC sysctl) applies sysctl files" % real, True)
    # The tree does not say: take the files as applied, as systemd-sysctl or procps would.
    return Applier("systemd-sysctl" if has_tool else "sysctl --system", "assumed: the tree does not show what runs at boot", False)


def _sysv_script(host):
    """The boot script that runs `sysctl --system` without systemd: Debian's procps (rcS.d) or
    OpenRC's sysctl service (boot or sysinit runlevel); None."""
    listing = host.listdir("/etc/rcS.d")
    for name in listing.data if listing.ok else ():
        if name.startswith("S") and name.endswith("procps"):
            return "/etc/rcS.d/" + name
    for runlevel in ("sysinit", "boot"):
        path = "/etc/runlevels/%s/sysctl" % runlevel
        if host.exists(path):
            return path
    return None


# -- sysctls ------------------------------------------------------------------------------


class BootValue(Record):
    """A sysctl's value after boot and what set it: ``source`` is an Assignment, a kernel
    parameter's text, or words (``kernel default``); ``zeroed_by`` names the write of the other
    half of ratio/kbytes that zeroed it."""

    __slots__ = ("value", "source", "zeroed_by")
    _defaults = {"zeroed_by": None}

    @property
    def where(self) -> str:
        source = self.zeroed_by or self.source
        return source.where if hasattr(source, "where") else str(source)


class BootSysctl(Record):
    """key → BootValue after the next boot; keys boot does not set are absent (they keep what
    the kernel starts with, which only the running value hints at)."""

    __slots__ = ("values", "applier")

    def get(self, key: str):
        found = self.values.get(key)
        return found.value if found is not None else None


# Writes the kernel refuses leave the value as it was (EINVAL): ranges as the handlers check
# them (proc_dointvec_minmax, proc_doulongvec_minmax); None: no bound.
_RANGES = {
    "vm.overcommit_memory": (0, 2),
    "vm.overcommit_ratio": (None, None),
    "vm.overcommit_kbytes": (0, None),
    "vm.nr_hugepages": (0, None),
    "vm.admin_reserve_kbytes": (0, None),
    "vm.user_reserve_kbytes": (0, None),
    "kernel.numa_balancing": (0, None),
}
# Kernel defaults that do not depend on the machine (the reserves do: min(free / 32, cap)).
_EXACT_DEFAULTS = ("vm.overcommit_memory", "vm.overcommit_ratio", "vm.overcommit_kbytes")
_PAIR = {"vm.overcommit_ratio": "vm.overcommit_kbytes", "vm.overcommit_kbytes": "vm.overcommit_ratio"}


def write_sysctl(values, key: str, value: str, source) -> bool:
    """One write as the kernel takes it, into ``values`` (key → BootValue); False when refused."""
    text = " ".join(str(value).split())
    if key in _RANGES:
        number = sysctl_int(text)
        low, high = _RANGES[key]
        if number is None or (low is not None and number < low) or (high is not None and number > high):
            return False
        text = str(number)
    values[key] = BootValue(text, source)
    other = _PAIR.get(key)
    if other is not None:
        values[other] = BootValue("0", values.get(other, BootValue("0", "kernel default")).source, source)
    return True


def cmdline_sysctls(line, version):
    """(key, value, parameter text) of ``sysctl.KEY=VALUE`` parameters (5.8+): every ``.`` and
    ``/`` is a separator (fs/proc/proc_sysctl.c process_sysctl_arg)."""
    if line is None or (version != (0, 0) and version < (5, 8)):
        return []
    found = []
    for param in line.params:
        if param.name[:7] in ("sysctl.", "sysctl/") and param.value:
            key = ".".join(part for part in param.name[7:].replace("/", ".").split(".") if part)
            if key:
                found.append((key, param.value, param.text))
    return found


@fact("sysctl_at_boot")
def sysctl_at_boot(host, facts):
    config = facts.get("sysctl_config")
    applier = facts.get("sysctl_applier")
    boot = facts.get("boot_cmdline")
    line = boot.line if boot else None
    release = facts.get("boot_release")
    values = {}
    for key in _EXACT_DEFAULTS:
        values[key] = BootValue(DEFAULTS[key], "kernel default")
    numa = _numa_default(facts, line, release)
    if numa is not None:
        values["kernel.numa_balancing"] = numa
    for key, value, text in cmdline_sysctls(line, kernel_version(release) if release else (0, 0)):
        write_sysctl(values, normal_key(key), value, text)
    if config and applier.applies:
        assignments = [item for item in config.assignments if "*" not in item.key and "?" not in item.key]
        if applier.name == "systemd-sysctl":
            assignments = systemd_order(assignments)
        for item in assignments:
            write_sysctl(values, item.key, item.value, item)
    return BootSysctl(values, applier)


def systemd_order(assignments):
    """The writes systemd-sysctl makes of ``assignments``: one per key, its last value, in the
    order of an ordered hashmap where a later line with the same value keeps the key's place and
    one with another value moves it to the end (src/sysctl/sysctl.c parse_file: "Overwriting
    earlier assignment"). procps' `sysctl --system` writes every line in order instead; with
    vm.overcommit_ratio and vm.overcommit_kbytes zeroing each other the two can end apart."""
    kept = {}
    for item in assignments:
        earlier = kept.get(item.key)
        if earlier is not None and " ".join(earlier.value.split()) == " ".join(item.value.split()):
            continue
        kept.pop(item.key, None)
        kept[item.key] = item
    return list(kept.values())


def _numa_default(facts, line, release):
    """kernel.numa_balancing as the kernel starts it (mm/mempolicy.c check_numabalancing_enable):
    ``numa_balancing=enable|disable``, else on with more than one node where
    CONFIG_NUMA_BALANCING_DEFAULT_ENABLED is set; None when the config does not say."""
    numa = facts.get("numa")
    if not numa or numa.balancing is None:
        return None
    param = line.last("numa_balancing") if line else None
    if param is not None and param.value in ("enable", "disable"):
        return BootValue("1" if param.value == "enable" else "0", param.text)
    config = _boot_config(facts)
    enabled = config.get("NUMA_BALANCING_DEFAULT_ENABLED") if config else None
    if enabled is None:
        return None
    on = enabled == "y" and len(numa.nodes) > 1
    return BootValue("1" if on else "0", "kernel default (CONFIG_NUMA_BALANCING_DEFAULT_ENABLED=%s, %d nodes)" % (enabled, len(numa.nodes)))


def _boot_config(facts):
    """The next kernel's build configuration (Unavailable when none is found)."""
    release, running = facts.get("boot_release"), facts.get("release")
    if release and running and release != running:
        from ai_doctor.facts.kconfig import config_for

        return config_for(facts.host, release, running=False)
    return facts.get("kernel_config")


# -- huge page pools ------------------------------------------------------------------------


class BootPool(Record):
    """A pool after the next boot: pages asked for (``asked``, and by what), pages the kernel
    gets (``total``), and pages in use and reserved for mappings (``used``, ``reserved``: as
    now, within the new pool)."""

    __slots__ = ("page_size", "asked", "total", "used", "reserved", "source", "origin")
    _defaults = {"origin": None}

    @property
    def free(self) -> int:
        return self.total - self.used


class BootPools(Record):
    __slots__ = ("pools", "default_size", "notes")

    def pool(self, size):
        return self.pools.get(size)


def arch_default_size(pools, cmdline) -> int:
    """The architecture's default huge page size, whatever default_hugepagesz= says now."""
    current = pools.default_size if pools else None
    chosen = cmdline.first("default_hugepagesz") if cmdline else None
    if chosen is None and current:
        return current
    # The running line moved the default: the base size is the one every x86 and arm64
    # kernel with 4 KiB pages has.
    return 2 << 20 if not pools or (2 << 20) in pools.pools or not current else current


@fact("pools_at_boot")
def pools_at_boot(host, facts):
    pools = facts.get("hugepages")
    boot = facts.get("boot_cmdline")
    if not pools or not pools.pools or not boot:
        return Unavailable("no huge page pools to carry to the next boot")
    running_line = facts.get("cmdline")
    base = arch_default_size(pools, running_line if running_line else None)
    line = boot.line
    release = facts.get("boot_release")
    version = kernel_version(release) if release else None
    chosen = line.first("default_hugepagesz")
    default_size = (memparse(chosen.value) if chosen is not None and chosen.value else None) or base
    asked = {}
    for item in line.hugepage_requests(base, version):
        if item.page_size:
            path, number = line.origin(item.index) if item.index is not None else (line.source, None)
            asked[item.page_size] = (item.count, item.text, (path, item.text, number))
    after = facts.get("sysctl_at_boot")
    setting = after.values.get("vm.nr_hugepages") if after else None
    if setting is not None:
        # Applied after the boot-time reservation: it resizes the default-size pool.
        source = setting.source
        origin = (source.path, "vm.nr_hugepages = %s" % source.value, source.line) if hasattr(source, "path") else None
        asked[default_size] = (sysctl_int(setting.value) or 0, "vm.nr_hugepages = %s (%s)" % (setting.value, setting.where), origin)
    from ai_doctor.facts.memory import rc_local_pool

    late = rc_local_pool(facts.get("rc_local"))
    if late is not None:
        # rc-local.service runs after systemd-sysctl and resizes the default pool last.
        count, number, text = late
        path = facts.get("rc_local").path
        asked[default_size] = (count, "`%s` (%s:%d)" % (text, path, number), (path, text, number))
    mem = facts.get("meminfo")
    room = int((mem.get("MemTotal", 0) if mem else 0) * POOL_SHARE)
    found = {}
    notes = []
    for size in sorted(set(pools.pools) | set(asked), reverse=True):
        count, source, origin = asked.get(size, (0, "nothing asks for it at boot", None))
        now = pools.pools.get(size)
        used = (now.total - now.free) if now is not None else 0
        reserved = now.reserved if now is not None else 0
        got = count
        if mem and count * size > room:
            got = max(room // size, 0)
            notes.append("%d pages of %d kB asked for; only %d fit in nine tenths of RAM" % (count, size // 1024, got))
        room -= got * size
        if now is None and size not in pools.pools:
            continue  # a size this kernel does not offer
        in_use = min(used, got)
        found[size] = BootPool(size, count, got, in_use, min(reserved, got - in_use), source, origin)
    return BootPools(found, default_size, tuple(notes))


# -- transparent huge pages, governors, schedulers, GPU ------------------------------------


class BootTHP(Record):
    """THP modes after boot: ``top``, and ``sizes`` (size → mode) for the per-size controls;
    ``why`` says what decided the top level; None where nothing says (kept as running).
    ``notes`` say where a running mode was kept for want of a reason it would change."""

    __slots__ = ("top", "sizes", "why", "notes")
    _defaults = {"notes": ()}


@fact("thp_at_boot")
def thp_at_boot(host, facts):
    """THP modes after boot. What sets them explicitly wins: ``transparent_hugepage=`` and
    ``thp_anon=`` on the boot line, then tuned's profile (whose vm plugin yields to the boot
    line) and what writes `never` after boot (units, tmpfiles.d, rc.local). The build default
    counts only where it agrees with the running mode, as for the governors."""
    thp = facts.get("thp")
    boot = facts.get("boot_cmdline")
    if not thp or not boot:
        return Unavailable("no transparent huge pages to carry to the next boot")
    from ai_doctor.facts.thp import THP_DIR, TOP_MODES, boot_modes

    line = boot.line
    config = _boot_config(facts)
    modes = boot_modes(line, config if config else None, tuple(thp.sizes))
    top = why = None
    if modes.top_source and modes.top_source[1].startswith("transparent_hugepage="):
        top, why = modes.top, modes.top_source[1]
    sizes = {size: modes.size_mode(size, thp.pmd_size) for size in thp.sizes}
    tuned, profile = facts.get("tuned"), facts.get("tuned_profile")
    tuned_notes = []
    if tuned and tuned.enabled and profile:
        decision = profile.decide("vm", "transparent_hugepages")
        setting = decision.setting
        # tuned's vm plugin leaves THP alone when the command line sets it.
        if line.last("transparent_hugepage") is None:
            if not decision.known:
                # Whether tuned writes it depends on what is not known: on this same machine, what
                # runs now is what tuned did this boot.
                top, why = thp.top.mode, "kept from the running kernel"
                tuned_notes.append("THP: whether tuned writes it is not known (%s): kept as it runs" % decision.why)
            elif setting is not None and setting.value in TOP_MODES:
                top, why = setting.value, "tuned (%s:%d)" % (setting.path, setting.line)
        for item in profile.plugin("sysfs"):
            _sysfs_thp(item.key, item.value, thp, sizes)
            if item.key.endswith("/transparent_hugepage/enabled") and item.value in TOP_MODES:
                top, why = item.value, "tuned (%s:%d)" % (item.path, item.line)
        for item, doubt in profile.uncertain:
            if item.plugin == "sysfs" and item.key.startswith(THP_DIR + "/") and item.key.endswith("/enabled"):
                sizes.update((size, control.mode) for size, control in thp.sizes.items() if control.path == item.key)
                if item.key == thp.top.path:
                    top, why = thp.top.mode, "kept from the running kernel"
                tuned_notes.append("THP: whether tuned writes %s is not known (%s): kept as it runs" % (item.text, doubt))
    sysfs = facts.get("sysfs_conf")
    if sysfs and sysfs.applies:
        # Debian's sysfsutils writes whatever mode it is given (its `never` lines are writers too).
        setting = sysfs.last(THP_DIR + "/enabled")
        if setting is not None and setting.value in TOP_MODES:
            top, why = setting.value, "sysfsutils (%s)" % setting.where
        for size in sizes:
            setting = sysfs.last("%s/hugepages-%dkB/enabled" % (THP_DIR, size // 1024))
            if setting is not None:
                sizes[size] = setting.value
    writers = facts.get("thp_writers")
    for writer in writers.found if writers else ():
        if writer.kind == "tuned":
            continue
        targets = writer.targets or ("top",)
        if "top" in targets:
            top, why = "never", "%s (%s:%d)" % (writer.kind, writer.path, writer.line or 0)
        if "size" in targets and thp.pmd_size in sizes:
            sizes[thp.pmd_size] = "never"
    notes = []
    if top is None and modes.top is not None:
        if modes.top == thp.top.mode:
            top, why = modes.top, modes.top_source[1]
        else:
            # Only the build default says otherwise: something not looked for (or a hand) set
            # the running mode after boot, and is taken to do so again.
            notes.append(
                "THP: the kernel starts at `%s` (%s) but runs at `%s`, set after boot by something not found here "
                "(a tuned profile, a unit, tmpfiles.d, sysfsutils and rc.local were looked at) or by hand: kept"
                % (modes.top, modes.top_source[1], thp.top.mode)
            )
            top, why = thp.top.mode, "kept from the running kernel"
    return BootTHP(top, sizes, why, tuple(tuned_notes + notes))


def _sysfs_thp(key, value, thp, sizes):
    from ai_doctor.facts.thp import THP_DIR, _dir_size

    if key.startswith(THP_DIR + "/hugepages-") and key.endswith("/enabled"):
        size = _dir_size(key[len(THP_DIR) + 1 :].split("/", 1)[0])
        if size in sizes:
            sizes[size] = value


_CPU_GOVERNOR = "/sys/devices/system/cpu/cpu%d/cpufreq/scaling_governor"
_KCONFIG_GOVERNORS = ("PERFORMANCE", "POWERSAVE", "USERSPACE", "ONDEMAND", "CONSERVATIVE", "SCHEDUTIL")
# Drivers that pick P-states themselves (setpolicy): only performance and powersave exist.
_SETPOLICY = ("intel_pstate", "amd-pstate-epp")


class BootGovernors(Record):
    """policy's scaling_governor path → its governor after boot, and notes on what decided;
    ``kept``: the policies whose running governor nothing found explains."""

    __slots__ = ("governors", "notes", "kept")
    _defaults = {"kept": ()}


@fact("governors_at_boot")
def governors_at_boot(host, facts):
    """The governor of each policy after boot. What sets one explicitly wins, the last word
    first: ondemand.service (Ubuntu, bare metal), tuned's [cpu] governor, cpupower.service or
    cpufrequtils, ``cpufreq.default_governor=`` (5.9+). The kernel's build default counts only
    where it agrees with the running governor: one that differs was set after boot by
    something not looked for (or by hand), and is kept, with a note."""
    freq = facts.get("cpufreq")
    boot = facts.get("boot_cmdline")
    if not freq or not freq.policies:
        return Unavailable("no CPU frequency policies to carry to the next boot")
    release = facts.get("boot_release")
    explicit = why = None
    param = boot.line.last("cpufreq.default_governor") if boot else None
    if param is not None and param.value and kernel_version(release) >= (5, 9):
        explicit, why = param.value, param.text
    service = _governor_service(host, facts)
    if service is not None:
        explicit, why = service
    default = None
    config = _boot_config(facts)
    for name in _KCONFIG_GOVERNORS if config else ():
        if config.get("CPU_FREQ_DEFAULT_GOV_" + name) == "y":
            default = (name.lower(), "CONFIG_CPU_FREQ_DEFAULT_GOV_%s=y" % name)
    tuned, profile = facts.get("tuned"), facts.get("tuned_profile")
    decision = profile.decide("cpu", "governor") if tuned and tuned.enabled and profile else None
    tuned_setting = decision.setting if decision is not None and decision.known else None
    # Governors whose modules tuned's [modules] loads before its [cpu] runs are offered by then.
    loads = _tuned_loads(profile, config) if tuned_setting is not None else ()
    tuned_set = []
    ondemand = facts.get("ondemand_unit")
    machine = facts.get("machine")
    sysfs = facts.get("sysfs_conf") or None
    sysfs_set = []
    found, kept = {}, []
    for policy in freq.policies:
        wanted = explicit if explicit is not None else default[0] if default else None
        governor = _governor_for(policy, wanted)
        if tuned_setting is not None:
            offered = [g.strip() for g in tuned_setting.value.split("|")]
            chosen = next((g for g in offered if _available(policy, g) or (g in loads and policy.driver not in _SETPOLICY)), None)
            governor, explicit_here = chosen or governor, chosen is not None
            tuned_set += [chosen] if chosen else []
        elif decision is not None and not decision.known:
            # What tuned sets depends on what is not known: kept as it runs on this machine.
            governor, explicit_here = policy.governor, True
        else:
            explicit_here = False
        if ondemand and not (machine and machine.virtual):
            # Ubuntu's script: ondemand where offered, else powersave.
            governor, explicit_here = ("ondemand" if _available(policy, "ondemand") else "powersave"), True
        written = sysfs.last(policy.governor_path, *(_CPU_GOVERNOR % cpu for cpu in policy.cpus)) if sysfs else None
        if written is not None and _available(policy, written.value):
            # sysfsutils starts after cpufrequtils (its unit's After=) and writes the file itself.
            governor, explicit_here = written.value, True
            sysfs_set.append(written)
        if governor is not None and explicit is None and not explicit_here and governor != policy.governor:
            kept.append(policy)
            governor = policy.governor
        if governor is not None:
            found[policy.governor_path] = governor
    notes = []
    if kept:
        notes.append(
            "CPU governors: the kernel's default is %s (%s), but %d %s run%s %s, set after boot by something not found "
            "here (tuned, cpupower, cpufrequtils, ondemand.service, sysfsutils and the boot line were looked at) or by hand: kept"
            % (
                default[0],
                default[1],
                len(kept),
                "policy" if len(kept) == 1 else "policies",
                "s" if len(kept) == 1 else "",
                "/".join(sorted({p.governor or "none" for p in kept})),
            )
        )
    elif why is not None:
        notes.append("CPU governors: %s from %s" % (explicit, why))
    if sysfs_set:
        notes.append("CPU governors: %s from sysfsutils (%s)" % ("/".join(sorted({s.value for s in sysfs_set})), sysfs_set[-1].where))
    if tuned_set:
        notes.append(
            "CPU governors: %s from tuned's %s at %s:%d (%s)"
            % ("/".join(sorted(set(tuned_set))), tuned_setting.text, tuned_setting.path, tuned_setting.line, tuned.how)
        )
    elif decision is not None and not decision.known:
        notes.append("CPU governors: what tuned sets is not known (%s): kept as they run" % decision.why)
    return BootGovernors(found, tuple(notes), tuple(p.governor_path for p in kept))


def _tuned_loads(profile, config):
    """Governors tuned's [modules] loads (``cpufreq_NAME``, built as a module or in) before its
    [cpu] instance runs: instances start in priority order (units/manager.py)."""
    order = [u.plugin for u in profile.units if u.verdict]
    if "modules" not in order or "cpu" not in order or order.index("modules") > order.index("cpu") or not config:
        return ()
    names = [s.key[len("cpufreq_") :] for s in profile.plugin("modules") if s.key.startswith("cpufreq_")]
    return tuple(n for n in names if config.get("CPU_FREQ_GOV_" + n.upper()) in ("m", "y"))


def _governor_for(policy, wanted):
    if wanted is None:
        return None
    if policy.driver in _SETPOLICY:
        # The driver keeps its own policy, powersave, for any other name (cpufreq.c).
        return "performance" if wanted == "performance" else "powersave"
    return _available(policy, wanted)


CPUPOWER_UNIT = "/etc/systemd/system/multi-user.target.wants/cpupower.service"


def _governor_service(host, facts):
    """(governor, where) that cpupower.service (RHEL's /etc/sysconfig/cpupower, Arch's
    /etc/default/cpupower) or Debian's cpufrequtils sets at boot; None."""
    import shlex

    if host.exists(CPUPOWER_UNIT) and not masked(host, "cpupower.service"):
        for path in ("/etc/sysconfig/cpupower", "/etc/default/cpupower"):
            got = host.read_text(path, cap=65536)
            for line in got.data.splitlines() if got.ok else ():
                name, _, value = line.strip().partition("=")
                try:
                    words = shlex.split(value)
                except ValueError:
                    continue
                words = " ".join(words).split()
                if name == "CPUPOWER_START_OPTS" and "frequency-set" in words:
                    for flag in ("-g", "--governor"):
                        if flag in words[:-1]:
                            return words[words.index(flag) + 1], "cpupower.service (%s)" % path
                if name == "governor" and words:
                    return words[0], "cpupower.service (%s)" % path
    got = host.read_text("/etc/default/cpufrequtils", cap=65536)
    if got.ok and host.exists("/etc/init.d/cpufrequtils"):
        for line in got.data.splitlines():
            name, _, value = line.strip().partition("=")
            if name == "GOVERNOR" and value.strip("\"' "):
                return value.strip("\"' "), "cpufrequtils (/etc/default/cpufrequtils)"
    return None


def _available(policy, governor):
    if not governor:
        return None
    return governor if not policy.available or governor in policy.available else None


@fact("schedulers_at_boot")
def schedulers_at_boot(host, facts):
    """scheduler file → the scheduler a block device has after boot: the kernel's default
    (mq-deadline for one hardware queue, else none: block/elevator.c), then the last udev rule
    that sets one for it."""
    devices = facts.get("block_devices")
    if not devices:
        return Unavailable("no block devices to carry to the next boot")
    rules = facts.get("udev_scheduler_rules") or ()
    sysfs = facts.get("sysfs_conf") or None
    found = {}
    for device in devices:
        if device.scheduler is None or len(device.schedulers) <= 1:
            continue
        # Unknown where the hardware queues could not be counted: only a rule then says.
        value = None
        if device.hw_queues is not None:
            value = "mq-deadline" if device.hw_queues == 1 and "mq-deadline" in device.schedulers else "none"
        for rule in rules:
            if rule.value in device.schedulers and rule.may_match(device.name):
                value = rule.value
        # sysfsutils starts after udev has set the disks up (its unit's After=udev.service).
        written = sysfs.last("/sys/block/%s/queue/scheduler" % device.name) if sysfs else None
        if written is not None and written.value in device.schedulers:
            value = written.value
        if value is not None:
            found[device.scheduler_path] = value
    return found


class BootGpu(Record):
    """The nvidia module version the next boot loads (None: none loads), and whether nouveau
    still loads."""

    __slots__ = ("nvidia", "nouveau")


@fact("gpu_at_boot")
def gpu_at_boot(host, facts):
    nv = facts.get("nvidia")
    loaded = facts.get("loaded_modules")
    if not nv or loaded is None:
        return Unavailable("no loaded modules to carry to the next boot")
    release = facts.get("boot_release")
    modules = next((mods for mods in facts.get("gpu_modules") or () if mods.release == release), None)
    version = None
    if nv.loaded and modules is not None and "nvidia" in modules.found:
        module = modules.found["nvidia"]
        version = module.field("version")
        if version is None and module.partial:
            # Not in the part read is not "none loads": the next boot is not simulated for it.
            return Unavailable("the .modinfo of %s was read only in part, without its version" % module.path)
    nouveau = facts.get("nouveau")
    stays = bool(nouveau and nouveau.loaded and not nouveau.blocked_by)
    return BootGpu(version, stays)
