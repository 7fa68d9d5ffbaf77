"""The kernel's build configuration: can its capabilities be verified at all, and against the
right kernel?"""

from __future__ import annotations

from ai_doctor.engine import host_side, rule
from ai_doctor.facts.kconfig import PROC_CONFIG, describes
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step
from ai_doctor.remedy.actions import NOW, Run


@rule(
    "kernel.config-missing",
    "Kernel configuration not found",
    Severity.LOW,
    uses=("kernel_config", "other_kernel_configs", "release", "configs_module", "running", "container", "fixes"),
)
def config_missing(f):
    """Neither /proc/config.gz nor a config file for the running kernel is readable.

    Checks of what the kernel can do (hugetlb, transparent huge pages, NUMA balancing) then
    rest on runtime traces alone and cannot tell "not built" from "not visible here".
    Distributions install the config beside the kernel as /boot/config-RELEASE (Debian, Ubuntu,
    RHEL, SUSE) or /usr/lib/modules/RELEASE/config (Fedora, Arch); kernels built with
    CONFIG_IKCONFIG_PROC expose it as /proc/config.gz, and with CONFIG_IKCONFIG=m after
    `modprobe configs`; with CONFIG_IKCONFIG the config is also read straight out of the
    configs module file or the kernel image (/boot/vmlinuz-RELEASE), and the finding names
    the source used. Custom and some cloud kernels ship none of these. Inside a container the
    kernel is the host's and /boot is not there: the check skips and says so, unless
    /proc/config.gz shows the config anyway.

    Reference: kernel/Kconfig (IKCONFIG, IKCONFIG_PROC); Documentation/admin-guide/README.rst.
    """
    config = f.kernel_config
    if config:
        return Pass("read %s" % config.where)
    release = f.release
    if release and f.other_kernel_configs:
        return Skip("configs of other kernels only: kernel.config-mismatch covers it")
    if not f.running:
        return Skip("an image, not a running system: no running kernel to look up")
    container = f.container
    if container and container.detected and not any(outcome.startswith("permission denied") for _path, outcome in config.tried):
        # The kernel is the host's: its config lies in the host's /boot, which a container does
        # not hold, and that absence says nothing about the kernel.
        return Skip(
            host_side("the kernel and its configuration (/boot/config-RELEASE)", container)
            + "; or mount the host's /boot read-only (docker run -v /boot:/boot:ro)"
        )
    evidence = [Evidence(path, outcome) for path, outcome in config.tried]
    steps = []
    module = f.configs_module
    refused = [path for path, outcome in config.tried if outcome.startswith("permission denied")]
    if refused:
        # It is there, only closed to this user: no "not found" and no list repeating it.
        recorded = any(outcome.endswith("where the tree was taken") for _, outcome in config.tried)
        message = "The kernel configuration for %s exists (%s) but %s, so kernel capabilities can only be judged from runtime traces." % (
            release if release else "the running kernel",
            " and ".join(refused),
            "was readable only by root where this tree was taken" if recorded else "is readable only by root here",
        )
        if recorded:
            steps.append(Step("Nothing to install: take the snapshot again as root (see access.permission-denied)", (), True, None))
        else:
            steps.append(Step("Nothing to install: rerun aidoctor as root to read it (see access.permission-denied)", (), True, None))
    else:
        message = "No kernel configuration is readable for %s (%s): kernel capabilities can only be judged from runtime traces." % (
            release if release else "the running kernel",
            "; ".join("%s %s" % item for item in config.tried) or config.reason,
        )
    if refused:
        return Issue(message, evidence, steps, title="Kernel configuration unreadable")
    if module:
        steps += f.fixes.runtime(
            "Load the configs module, which exposes /proc/config.gz", [Run(("modprobe", "configs"), NOW)], host_wide=True
        )
    else:
        steps.append(
            Step(
                "Install the config with the kernel (it ships in the kernel package of every mainstream distribution), "
                "or build kernels with CONFIG_IKCONFIG_PROC=y",
                (),
                True,
                True,
            )
        )
    return Issue(message, evidence, steps)


@rule(
    "kernel.config-mismatch",
    "Kernel configuration of another kernel",
    Severity.LOW,
    uses=("kernel_config", "other_kernel_configs", "release", "running"),
    host_only="the kernel configurations (/boot)",
)
def config_mismatch(f):
    """The only kernel configuration found describes another kernel release than the one
    that runs (in an image, the one it boots by default).

    A /boot/config-* left from an older kernel, or a config file whose own header names
    another release, says nothing certain about this kernel: capabilities judged from it
    (hugetlb, transparent huge pages, NUMA balancing) may be wrong. It is not used. A config
    whose header names another release than the one it was read for is reported as medium.
    Headers name either the whole release (RHEL, Fedora: 6.12.0-55.el10.x86_64) or only the
    upstream version (Debian: 6.1.192 for release 6.1.0-18-amd64): a whole release must be
    the same, an upstream version the same major.minor.

    Fix: install the configuration that ships with this kernel's package (or reinstall the
    kernel package), so /boot/config-RELEASE exists.

    Reference: Documentation/admin-guide/README.rst (the .config file); kernel/Kconfig
    (IKCONFIG).
    """
    config = f.kernel_config
    release = f.release
    if not release:
        return Skip("the kernel release is unknown")
    target = "kernel %s" % release if f.running else "kernel %s, which the image boots by default" % release
    if config:
        described = config.described
        if described and config.source != PROC_CONFIG and not describes(described, release):
            message = (
                "The configuration read for %s (%s) names release %s in its header: it is another kernel's, and the "
                "capability checks that use it may be wrong." % (target, config.where, described)
            )
            steps = [Step("Put the configuration that ships with %s's package in place (reinstall the package)" % release, (), True, True)]
            evidence = [Evidence(config.source, "# Linux %s Kernel Configuration" % described)]
            return Issue(message, evidence, steps, severity=Severity.MEDIUM)
        return Pass("%s is for %s" % (config.where, described or release))
    others = f.other_kernel_configs
    if not others:
        return Skip("no kernel configuration at all (kernel.config-missing)")
    listed = ", ".join(others[:6]) + (", …" if len(others) > 6 else "")
    message = (
        "No configuration for %s; the only ones here are for other kernels (%s), so they are not used and kernel "
        "capabilities can only be judged from runtime traces." % (target, listed)
    )
    steps = [Step("Install the configuration that ships with %s's package (reinstall the kernel package)" % release, (), True, True)]
    return Issue(message, [Evidence(path, "another kernel's") for path in others[:12]], steps)


@rule(
    "kernel.thp-missing",
    "Kernel built without transparent huge pages",
    Severity.LOW,
    uses=("kernel_config", "thp", "running"),
)
def thp_missing(f):
    """The kernel is built without transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE unset),
    or the running kernel shows none (no /sys/kernel/mm/transparent_hugepage).

    Without THP every anonymous mapping is backed by 4 KiB pages: loaders that fill large
    buffers take a page fault per 4 KiB, and madvise(MADV_HUGEPAGE) asks for nothing. Every
    mainstream distribution kernel builds THP; minimal and some VPS kernels do not. The
    build default (CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS, _MADVISE, _NEVER since 6.8) is what
    thp.disabled reads when the command line says nothing; the pass names it.

    Fix: boot a kernel built with CONFIG_TRANSPARENT_HUGEPAGE=y.

    Reference: Documentation/admin-guide/mm/transhuge.rst; mm/Kconfig (TRANSPARENT_HUGEPAGE).
    """
    from ai_doctor.facts.thp import KCONFIG_DEFAULTS, NO_THP

    config = f.kernel_config
    thp = f.thp
    built = config.enabled("TRANSPARENT_HUGEPAGE") if config else None
    shows_none = f.running and not thp and thp.reason.startswith(NO_THP)
    if built is False or shows_none:
        evidence = []
        if built is False:
            evidence.append(Evidence(config.source, "# CONFIG_TRANSPARENT_HUGEPAGE is not set"))
        if shows_none:
            evidence.append(Evidence("/sys/kernel/mm/transparent_hugepage", "absent"))
        message = (
            "The kernel has no transparent huge pages: large anonymous buffers are always mapped in 4 KiB pages, a page "
            "fault each, and programs that ask for huge pages with madvise get none."
        )
        steps = [Step("Boot a kernel built with CONFIG_TRANSPARENT_HUGEPAGE=y (every mainstream distribution kernel is)", (), True, True)]
        return Issue(message, evidence, steps)
    if built:
        default = next((mode for option, mode in KCONFIG_DEFAULTS if config.get(option) == "y"), None)
        return Pass("built with transparent huge pages%s (%s)" % (", default `%s`" % default if default else "", config.where))
    if f.running and thp:
        return Pass("the running kernel has transparent huge pages")
    return Skip("no kernel config that mentions CONFIG_TRANSPARENT_HUGEPAGE, and no running kernel to look at")


@rule(
    "kernel.numa-balancing",
    "Automatic NUMA balancing on a multi-node machine",
    Severity.LOW,
    needs=("numa",),
    uses=("fixes",),
)
def numa_balancing(f):
    """Automatic NUMA balancing (kernel.numa_balancing = 1) is on, on a machine with more than
    one NUMA node.

    To find out which node uses a page, the kernel periodically unmaps ranges of each
    process's memory and takes a NUMA hinting fault on the next touch, then migrates pages
    toward the node that touches them. Model servers pin their CPU threads and staging
    buffers per GPU and node; the scanning adds page faults and migrations to their memory.
    The kernel's documentation says to disable it when the workload is already bound to NUMA
    nodes, and GPU vendors' tuning guides turn it off (AMD Instinct system optimization;
    NVIDIA's Grace performance tuning guide boots with numa_balancing=disable). Memory
    tiering alone (2) is left alone.

    Fix: `sysctl -w kernel.numa_balancing=0` now and a drop-in under /etc/sysctl.d.

    Reference: Documentation/admin-guide/sysctl/kernel.rst (numa_balancing);
    Documentation/admin-guide/kernel-parameters.txt (numa_balancing=).
    """
    numa = f.numa
    if len(numa.nodes) <= 1:
        return Pass("one NUMA node: there is nothing to balance")
    if numa.balancing is None:
        return Pass("the kernel has no automatic NUMA balancing (no %s)" % numa.path)
    if not numa.balancing & 1:
        return Pass("automatic NUMA balancing is off (kernel.numa_balancing = %d)" % numa.balancing)
    message = (
        "Automatic NUMA balancing is on (kernel.numa_balancing = %d) across %d NUMA nodes: the kernel keeps unmapping "
        "parts of each process's memory to sample which node uses it, and migrates pages, which adds page faults and "
        "copies to a model server whose threads and buffers are placed per node." % (numa.balancing, len(numa.nodes))
    )
    steps = f.fixes.sysctl([("kernel.numa_balancing", "0")], "numa", "Turn automatic NUMA balancing off")
    return Issue(message, [Evidence(numa.path, str(numa.balancing))], steps, impact=len(numa.nodes))
