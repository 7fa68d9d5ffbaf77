"""The kernel's build configuration: can its capabilities be verified at all?"""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step


@rule(
    "kernel.config-missing",
    "Kernel configuration not found",
    Severity.LOW,
    uses=("kernel_config", "release", "configs_module", "running", "container", "fixes"),
)
def config_missing(f):
    """Neither /proc/config.gz nor a config file for the running kernel is readable.

    Checks of what the kernel can do (hugetlb, transparent huge pages, NUMA balancing) then
    rest on runtime traces alone and cannot tell "not built" from "not visible here".
    Distributions install the config beside the kernel as /boot/config-RELEASE (Debian, Ubuntu,
    RHEL, SUSE) or /usr/lib/modules/RELEASE/config (Fedora, Arch); kernels built with
    CONFIG_IKCONFIG_PROC expose it as /proc/config.gz, and with CONFIG_IKCONFIG=m after
    `modprobe configs`. Custom and some cloud kernels ship none of these.

    Reference: kernel/Kconfig (IKCONFIG, IKCONFIG_PROC); Documentation/admin-guide/README.rst.
    """
    config = f.kernel_config
    if config:
        return Pass("read %s" % config.source)
    release = f.release
    if not f.running:
        return Skip("an image, not a running system: no running kernel to look up")
    evidence = [Evidence(path, outcome) for path, outcome in config.tried]
    steps = []
    module = f.configs_module
    container = f.container
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
    if container and container.detected:
        message += " In a container the kernel is the host's, and so is its config."
        steps.append(
            Step(
                (
                    "Let the container see the host's kernel config: mount /boot read-only "
                    "(docker run -v /boot:/boot:ro), or run aidoctor on the host"
                ),
                (),
                False,
                True,
                True,
            )
        )
    elif module:
        steps += f.fixes.runtime(
            "Load the configs module, which exposes /proc/config.gz", [f.fixes.sudo("modprobe configs")], host_wide=True
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
