"""PCI Express between GPUs: IOMMU translation and ACS redirection on the peer-to-peer path."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.gpuplatform import ACS_REDIRECT, acs_words
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip
from ai_doctor.remedy.actions import NOW, Run

# From this many CPUs on, x2APIC needs interrupt remapping, which needs the IOMMU.
X2APIC_CPUS = 256


@rule(
    "pci.iommu-p2p",
    "IOMMU translation or ACS redirect between PCIe GPUs",
    Severity.MEDIUM,
    needs=("gpus",),
    uses=("running", "machine", "nvswitch", "iommu_paths", "fixes"),
)
def iommu_p2p(f):
    """Two or more NVIDIA GPUs talk over PCIe on bare metal (no NVSwitch) and the IOMMU
    translates their DMA (their IOMMU groups are of type DMA or DMA-FQ), or, read as root, ACS
    P2P Request or Completion Redirect is set on a bridge above a GPU.

    Peer-to-peer transfers between the GPUs then go up to the root complex (ACS redirect) and
    through IOMMU translation, which often fails outright: NCCL all-reduce and vLLM's custom
    all-reduce hang or return garbage, and p2pBandwidthLatencyTest shows it. The NCCL
    maintainers: "P2P not being functional is usually tied to ACS being enabled ... Disabling
    VT-d in the BIOS, passing iommu=pt ..., or disabling ACS in the PCI switches usually help"
    (NVIDIA/nccl#631; also #257, #2079; vllm-project/vllm#9920, #33041). Translated groups:
    medium (many platforms still work, slower); ACS redirect seen on a GPU's path: high.

    The group type is /sys/kernel/iommu_groups/N/type (Documentation/ABI/testing/
    sysfs-kernel-iommu_groups: DMA and DMA-FQ translate, identity does not). ACS is the Control
    register (offset 6) of the ACS extended capability (0x000D) of each upstream port in the
    GPU's sysfs path; the kernel gives only the first 64 bytes of config space to users other
    than root, so without root ACS is not seen and the message says so.

    Not a finding: a virtual machine (passed-through GPUs rely on the host's IOMMU and ACS to be
    isolated from each other; NVIDIA's VM guides configure ACS rather than clear it), GPUs behind
    NVSwitches (their traffic is NVLink), a single GPU. AMD Instinct GPUs talk over XGMI and are
    not counted. An image has no IOMMU state to read: it skips.

    Fix: `iommu=pt` on the kernel command line (the IOMMU stays on but passes DMA of host-owned
    devices through), then reboot. Never turn the IOMMU off on a machine with 256 or more CPU
    threads: x2APIC needs interrupt remapping, which needs the IOMMU (AMD's MI300X guide asks for
    iommu=pt for that reason). ACS: turn it off for the PCIe switches or root ports in the
    firmware setup, or, until the next boot, `setpci -s BDF ECAP_ACS+0x6.w=0000` on each bridge
    (NCCL troubleshooting, "PCI Access Control Services"). Both trade isolation between devices
    for speed: a device can then reach memory of another without the IOMMU checking it, which
    hardening baselines forbid; on machines that run untrusted devices or VMs with passthrough,
    keep them and use `NCCL_P2P_DISABLE=1` (or vLLM `--disable-custom-all-reduce`) instead.

    Reference: Documentation/ABI/testing/sysfs-kernel-iommu_groups;
    Documentation/admin-guide/kernel-parameters.txt (iommu=pt); include/uapi/linux/pci_regs.h
    (PCI_EXT_CAP_ID_ACS, PCI_ACS_RR, PCI_ACS_CR); NCCL Troubleshooting; AMD Instinct MI300X
    system optimization guide.
    """
    if not f.running:
        return Skip("an image: IOMMU groups and ACS are state of a running system")
    gpus = f.gpus
    if len(gpus.nvidia) < 2:
        return Pass("fewer than two NVIDIA GPUs on the PCI bus: no GPU-to-GPU PCIe traffic")
    switches = f.nvswitch
    if switches and switches.present:
        return Pass("the GPUs reach each other through NVSwitches (NVLink), not PCIe")
    machine = f.machine
    if machine and machine.virtual:
        return Pass(
            "a virtual machine (%s: %s): passed-through GPUs rely on the host's IOMMU and ACS to be isolated, which are the "
            "host's to judge (VM: passthrough needs ACS)" % (machine.path, machine.sign)
        )
    paths = f.iommu_paths
    if not paths:
        return Skip(paths.reason)
    translated = [p for p in paths.gpus if p.translated]
    redirects = [(p, b) for p in paths.gpus for b in p.bridges if b.control is not None and b.control & ACS_REDIRECT]
    # One bridge can sit above several GPUs: each is reported once.
    seen = set()
    redirects = [(p, b) for p, b in redirects if not (b.address in seen or seen.add(b.address))]
    acs_note = ""
    if not paths.acs_read:
        acs_note = (
            " ACS on the GPUs' upstream bridges was not seen: past its first 64 bytes, PCI config space is readable by root only; "
            "run aidoctor as root to check it."
        )
    if not translated and not redirects:
        kinds = sorted({p.type or "no IOMMU group" for p in paths.gpus})
        return Pass(
            "the GPUs' DMA is not translated (%s)%s"
            % (", ".join(kinds), "; ACS not seen (needs root)" if not paths.acs_read else "; no ACS redirect above them")
        )
    evidence = [Evidence(p.type_path, p.type) for p in translated]
    evidence += [Evidence(b.path + "/config", "ACSCtl: " + acs_words(b.control)) for _p, b in redirects]
    parts = []
    if translated:
        parts.append(
            "the IOMMU translates the DMA of %d of the %d NVIDIA GPUs (%s)"
            % (len(translated), len(paths.gpus), ", ".join("%s: group %s, %s" % (p.address, p.group, p.type) for p in translated))
        )
    if redirects:
        parts.append(
            "ACS redirects peer-to-peer requests to the root complex at %s"
            % ", ".join("%s (above %s)" % (b.address, p.address) for p, b in redirects)
        )
    message = (
        "%d NVIDIA GPUs share this bare-metal machine without NVSwitch, and %s: GPU-to-GPU transfers (NCCL, vLLM custom "
        "all-reduce) take the slow path through the root complex or hang." % (len(gpus.nvidia), " and ".join(parts))
    )
    cpus = paths.cpus or 0
    keep_on = " Do not turn the IOMMU off (intel_iommu=off, amd_iommu=off)%s: iommu=pt keeps it on." % (
        ": with %d CPU threads, x2APIC needs its interrupt remapping" % cpus if cpus >= X2APIC_CPUS else ""
    )
    message += keep_on + acs_note
    fixes = f.fixes
    steps = []
    if translated and paths.passthrough:
        message += (
            " The running command line already asks for passthrough (iommu=pt), so the groups were switched to translation "
            "after boot (a write to /sys/kernel/iommu_groups/N/type) or their devices require it."
        )
        steps.append(
            fixes.advice(
                "Find what writes DMA or DMA-FQ to the GPUs' /sys/kernel/iommu_groups/N/type after boot (a udev rule, a unit, "
                "a VFIO setup) and stop it, then reboot",
                host_wide=True,
            )
        )
    elif translated:
        steps.append(
            fixes.kernel_args(
                ["iommu=pt"],
                ["iommu", "iommu.passthrough"],
                "Pass host-owned devices' DMA through the IOMMU untranslated (it stays on for interrupt remapping and VFIO)",
            )
        )
    if redirects:
        steps.append(
            fixes.advice(
                'Turn ACS off for the PCIe switch or root ports above the GPUs in the firmware setup (often "PCIe ACS" or '
                '"ACS Enable"), so it stays off at every boot',
                host_wide=True,
            )
        )
        # Each bridge once, though several GPUs may sit below it.
        bridges = sorted({b.address for _p, b in redirects})
        actions = [Run(("setpci", "-s", address, "ECAP_ACS+0x6.w=0000"), phase=NOW) for address in bridges]
        summary = "Or clear ACS Control on those bridges until the next boot, in place of the firmware setting"
        if translated and not paths.passthrough:
            summary += " (iommu=pt is still the first step)"
        steps.append(fixes.step(summary, actions, False))
    steps.append(
        fixes.advice(
            "Or, where device isolation must stay (untrusted devices, VMs with passthrough), leave both and disable the P2P path "
            "instead: NCCL_P2P_DISABLE=1, or vLLM's --disable-custom-all-reduce",
            needs_root=False,
            persistent=None,
        )
    )
    return Issue(message, evidence, steps, severity=Severity.HIGH if redirects else Severity.MEDIUM)
