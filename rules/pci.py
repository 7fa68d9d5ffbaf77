"""PCI Express around GPUs: IOMMU translation and ACS redirection between them, and links narrower than they can be."""

from __future__ import annotations

from math import gcd

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
    uses=("running", "machine", "nvswitch", "iommu_paths", "fixes", "cmdline", "boot_cmdline", "boot_args"),
)
def iommu_p2p(f):
    """Two or more NVIDIA GPUs talk over PCIe on bare metal (no NVSwitch) and the IOMMU
    translates their DMA (their IOMMU groups are of type DMA or DMA-FQ), or, read as root, ACS
    P2P Request or Completion Redirect is set on the ports of a PCIe switch that GPUs share.

    Peer-to-peer transfers between the GPUs then go through IOMMU translation, or up to the
    root complex instead of across the switch (ACS redirect), which often fails outright: NCCL
    all-reduce and vLLM's custom all-reduce hang or return garbage, and p2pBandwidthLatencyTest
    shows it. The NCCL maintainers: "P2P not being functional is usually tied to ACS being
    enabled ... Disabling VT-d in the BIOS, passing iommu=pt ..., or disabling ACS in the PCI
    switches usually help" (NVIDIA/nccl#631; also #257, #2079; vllm-project/vllm#9920, #33041).
    Translated groups: medium (many platforms still work, slower); ACS redirect on a switch port
    between GPUs: high.

    The group type is /sys/kernel/iommu_groups/N/type (Documentation/ABI/testing/
    sysfs-kernel-iommu_groups: DMA and DMA-FQ translate, identity does not). ACS is the Control
    register (offset 6) of the ACS extended capability (0x000D). It is judged only where it
    changes the path between GPUs: on the ports right below the lowest bridge two GPUs have in
    common, the PCIe switch they share, found by comparing the GPUs' folders under /sys/devices
    (/sys/devices/pciDDDD:BB/ROOT-PORT/.../GPU). GPUs each below their own root port meet in the
    root complex whatever ACS says, and the kernel itself sets ACS on every root port and switch
    port able to: wherever an IOMMU driver is found (AMD's detect_ivrs(), Intel's
    detect_intel_iommu() call pci_request_acs(); iommu=pt changes nothing there),
    pci_enable_acs() sets SrcValid, ReqRedir, CmpltRedir and UpstreamFwd (pci_std_enable_acs()
    in drivers/pci/pci.c). So those bits on root ports are the norm, not a finding. The kernel
    gives only the first 64 bytes of config space to users other than root: without root ACS is
    not seen, and where the GPUs share a switch the message says so.

    Not a finding: a virtual machine (passed-through GPUs rely on the host's IOMMU and ACS to be
    isolated from each other; NVIDIA's VM guides configure ACS rather than clear it), GPUs behind
    NVSwitches (their traffic is NVLink), a single GPU. AMD Instinct GPUs talk over XGMI and are
    not counted. An image has no IOMMU state to read: it skips.

    Fix: `iommu=pt` on the kernel command line (the IOMMU stays on but passes DMA of host-owned
    devices through), then reboot. Never turn the IOMMU off on a machine with 256 or more CPU
    threads: x2APIC needs interrupt remapping, which needs the IOMMU (AMD's MI300X guide asks for
    iommu=pt for that reason). ACS redirect: the kernel parameter
    `pci=disable_acs_redir=<port>[;<port>...]` (Linux 4.19 and later) clears ReqRedir, CmpltRedir
    and EgressCtrl on the ports it names, after the kernel set them, at every boot. pci_setup()
    keeps one disable_acs_redir string, so a second such option replaces the first: every port
    goes in one, separated by `;`. In grub.cfg `;` ends a command (GRUB manual, "Shell-like
    scripting"), so in GRUB's files the parameter is written in double quotes; aidoctor writes it
    itself only for a single port on a command line without other pci= options, and otherwise
    says what to add. (Linux 6.11 added `pci=config_acs=`, which sets any ACS bit of a device.)
    Turning ACS off in the firmware setup does not last: the kernel sets the bits again at boot
    while an IOMMU is on. Until the next boot, `setpci -s BDF ECAP_ACS+0x6.w=0000` on each port
    clears it (NCCL troubleshooting, "PCI Access Control Services"). Both trade isolation for
    speed: clearing ACS removes the isolation between the devices below the switch (one can reach
    another's memory without the IOMMU checking it; cleared at boot, they share one IOMMU group),
    which hardening baselines forbid; on machines that run untrusted devices or VMs with
    passthrough, keep ACS and use `NCCL_P2P_DISABLE=1` (or vLLM `--disable-custom-all-reduce`).

    Reference: Documentation/ABI/testing/sysfs-kernel-iommu_groups;
    Documentation/admin-guide/kernel-parameters.txt (iommu=pt, pci=disable_acs_redir=,
    pci=config_acs=); drivers/pci/pci.c (pci_enable_acs, pci_std_enable_acs, pci_setup);
    drivers/iommu/amd/init.c (detect_ivrs); drivers/iommu/intel/dmar.c (detect_intel_iommu);
    include/uapi/linux/pci_regs.h (PCI_EXT_CAP_ID_ACS, PCI_ACS_RR, PCI_ACS_CR); NCCL
    Troubleshooting; AMD Instinct MI300X system optimization guide.
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
    ports = paths.ports
    redirects = [b for b in ports if b.control is not None and b.control & ACS_REDIRECT]
    unseen = [b for b in ports if b.control is None and b.seen != "no ACS capability"]
    if not translated and not redirects:
        kinds = sorted({p.type or "no IOMMU group" for p in paths.gpus})
        return Pass("the GPUs' DMA is not translated (%s); %s" % (", ".join(kinds), _acs_state(paths, unseen)))
    evidence = [Evidence(p.type_path, p.type) for p in translated]
    evidence += [Evidence(b.path + "/config", "ACSCtl: " + acs_words(b.control)) for b in redirects]
    parts = []
    if translated:
        parts.append(
            "the IOMMU translates the DMA of %d of the %d NVIDIA GPUs (%s)"
            % (len(translated), len(paths.gpus), ", ".join("%s: group %s, %s" % (p.address, p.group, p.type) for p in translated))
        )
    if redirects:
        parts.append(
            "ACS redirects their peer-to-peer traffic up to the root complex at the ports of the PCIe switch they share (%s)"
            % ", ".join("%s above %s" % (b.address, b.gpu) for b in redirects)
        )
    message = (
        "%d NVIDIA GPUs share this bare-metal machine without NVSwitch, and %s: GPU-to-GPU transfers (NCCL, vLLM custom "
        "all-reduce) take the slow path through the root complex or hang." % (len(gpus.nvidia), " and ".join(parts))
    )
    cpus = paths.cpus or 0
    message += " Do not turn the IOMMU off (intel_iommu=off, amd_iommu=off)%s: iommu=pt keeps it on." % (
        ": with %d CPU threads, x2APIC needs its interrupt remapping" % cpus if cpus >= X2APIC_CPUS else ""
    )
    if redirects:
        message += (
            " The kernel sets these ACS bits itself at every boot while an IOMMU is on (iommu=pt too), whatever the firmware set. "
            "Clearing them removes the isolation between the devices below that switch: they reach each other's memory without "
            "the IOMMU checking it, and cleared at boot they share one IOMMU group."
        )
    else:
        state = _acs_state(paths, unseen)
        message += " %s%s." % (state[0].upper(), state[1:])
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
        # Each port once, though several GPUs may sit below a switch.
        addresses = sorted({b.address for b in redirects})
        steps.append(_at_every_boot(f, addresses))
        actions = [Run(("setpci", "-s", address, "ECAP_ACS+0x6.w=0000"), phase=NOW) for address in addresses]
        summary = "Or clear ACS Control on those ports now, until the next boot, when the kernel sets it again"
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


def _acs_state(paths, unseen) -> str:
    """What was judged of ACS between the GPUs, as a clause."""
    if not paths.located:
        return "ACS between them was not judged: where they sit in the PCI tree (their /sys/bus/pci/devices links) was not read"
    if not paths.ports:
        return (
            "ACS is not judged: no two of them share a PCIe switch (each is below its own root port), so their peer traffic meets "
            "in the root complex whatever ACS says"
        )
    where = ", ".join(b.address for b in paths.ports)
    if unseen:
        return (
            "ACS on the ports of the PCIe switch they share (%s) was not seen: past its first 64 bytes, PCI config space is "
            "readable by root only; run aidoctor as root to check it" % where
        )
    return "no ACS redirect on the ports of the PCIe switch they share (%s)" % where


def _at_every_boot(f, addresses):
    """The lasting fix for ACS redirect on ``addresses``: pci=disable_acs_redir=, written by
    aidoctor where one port is named and no other pci= option is on the line (the boot loader
    fixes replace a parameter by name, which would drop the others); by hand otherwise, since
    several ports need ``;``, which ends a command in grub.cfg."""
    param = "pci=disable_acs_redir=" + ";".join(addresses)
    purpose = "Keep ACS redirect off on %s at every boot (Linux 4.19 or later)" % ", ".join(addresses)
    lines = [f.cmdline, f.boot_cmdline.line if f.boot_cmdline else None]
    other_pci = any(p.name == "pci" for line in lines if line for p in line.params)
    other_pci = other_pci or any("pci" in args.names for args in f.boot_args or ())
    if len(addresses) == 1 and not other_pci:
        return f.fixes.kernel_args([param], [], purpose)
    why = []
    if len(addresses) > 1:
        why.append("in double quotes in GRUB's files, where `;` would end the command in grub.cfg")
    if other_pci:
        why.append(
            "beside the pci= options already there, and merged into their disable_acs_redir= if one has it (a second replaces the first)"
        )
    return f.fixes.advice(
        "%s: add `%s` to the kernel command line by hand, %s, then reboot" % (purpose, param, "; ".join(why)),
        host_wide=True,
    )


@rule(
    "pci.link-narrowed",
    "GPU on a PCIe link trained to fewer lanes than it supports",
    Severity.MEDIUM,
    needs=("gpus",),
    uses=("running", "machine", "gpu_links", "pci_devices", "fixes"),
)
def link_narrowed(f):
    """A PCIe link between an NVIDIA GPU and the root complex (the GPU's own, or one above the
    PCIe switch it sits behind) runs at fewer lanes than both of its ends support.

    Every copy between host memory and the GPU crosses that link: loading weights, pinned-memory
    transfers, CPU offload. At x8 instead of x16 it carries half the bandwidth, at x4 a quarter:
    host-to-device copies, and loads from the page cache or from storage faster than the
    narrowed link, slow down by as much. Nothing warns while it runs: the kernel logs it once
    when it finds the device at boot ("... limited by 8.0 GT/s PCIe x8 link at ...",
    pcie_report_downtraining() in drivers/pci/pci.c) and nvidia-smi shows it when asked. A link
    that trains narrower than both its ends points at hardware: a card not fully seated, a riser
    or cable, a retimer, the slot (NVIDIA/NVSentinel#890 asks for the same check for NVIDIA's
    fleet monitor). Medium at half the lanes; high at a quarter or fewer.

    Read from sysfs, which any user may read, and inside a container too: current_link_width is
    the Negotiated Link Width of the function's Link Status register, max_link_width the Maximum
    Link Width of its Link Capabilities (current_link_width_show() and max_link_width_show() in
    drivers/pci/pci-sysfs.c, Linux 4.13 and later; include/uapi/linux/pci_regs.h). The two ends
    of a link are paired from the GPU's folder up /sys/devices: the GPU and the port above it,
    then the switch's upstream port and the port above that (a switch's ports share an internal
    bus, not a link). A link is judged only when both ends read the same width and every number
    is a width a link can have (1, 2, 4, 8, 12, 16, 32 lanes; 0 is a link that is down, 63 a
    device that does not answer, 255 a capability that reads 0). What a link can do is the fewer
    lanes of its two ends: a GPU at x8 below a port with eight lanes (the slot's wiring, a lane
    split set in the firmware) or an x8 card in an x16 slot is how the machine is built or set
    up, and is said, not a finding. A switch's uplink is judged once, for all the GPUs behind it.

    The link's speed is not judged: NVIDIA GPUs lower it whenever they are idle (their
    performance states), so an idle GPU at 2.5 GT/s is normal (Syllo/nvtop#6, janhq/jan#183).
    NVIDIA documents that the width may also be reduced when the GPU is not in use, so the
    finding asks to confirm it under load.
    AMD GPUs are not judged: their power management sets lanes per PCIe DPM level
    (pp_dpm_pcie), so an idle link may be narrow by design. Not judged either: virtual
    functions (their link is the physical function's), a virtual machine (its PCIe ports are
    emulated), an image (links are trained when a machine starts).

    Fix: at the machine, power off, reseat the card and its riser or cable (for a switch's
    uplink: the cable, riser or retimer between the switch and the CPU), check the slot's lane
    setting in the firmware setup, or move the card to another slot; confirm first while the
    GPU is busy: `nvidia-smi --query-gpu=pci.bus_id,pcie.link.width.current,pcie.link.width.max
    --format=csv` for a GPU's own link, `lspci -vv -s ADDRESS` (LnkSta against LnkCap, as root)
    for any link. No setting in the operating system widens a link.

    Reference: drivers/pci/pci-sysfs.c (current_link_width, max_link_width);
    include/uapi/linux/pci_regs.h (PCI_EXP_LNKSTA_NLW, PCI_EXP_LNKCAP_MLW); nvidia-smi
    --help-query-gpu (pcie.link.width.current: "may be reduced when the GPU is not in use");
    hwloc's and nvtop's notes on idle GPUs lowering link speed.
    """
    if not f.running:
        return Skip("an image: PCIe links are trained when a machine starts")
    bus = f.pci_devices
    if not bus:
        return Skip("the PCI bus was not read: %s" % bus.reason)
    gpus = f.gpus
    if not gpus.nvidia:
        listed = len(gpus.driver_listed)
        if listed:
            return Skip("no NVIDIA GPU was found on the PCI bus, though the NVIDIA driver lists %d (/proc/driver/nvidia/gpus)" % listed)
        return Pass(
            "no NVIDIA GPU on the PCI bus%s" % ("; AMD GPUs are not judged (their power management narrows idle links)" if gpus.amd else "")
        )
    machine = f.machine
    if machine and machine.virtual:
        return Pass(
            "a virtual machine (%s: %s): its PCIe ports are emulated, and the physical links are the host's to judge"
            % (machine.path, machine.sign)
        )
    found = f.gpu_links
    if not found:
        return Skip(found.reason)
    nvidia = {d.address for d in gpus.nvidia}
    links = [link._replace(gpus=tuple(g for g in link.gpus if g in nvidia)) for link in found.links if nvidia.intersection(link.gpus)]
    judged = [link for link in links if link.unjudged is None]
    unseen = _unseen(found, nvidia, links)
    notes = unseen + _by_design(judged) + (["AMD GPUs are not judged (their power management narrows idle links)"] if gpus.amd else [])
    narrowed = [link for link in judged if link.narrowed]
    if not narrowed:
        if not judged:
            return Skip("no PCIe link of the NVIDIA GPUs could be judged: " + "; ".join(notes))
        widths = ", ".join("x%d" % width for width in sorted({link.lower.width for link in judged}))
        if unseen:
            message = "every PCIe link of the NVIDIA GPUs that could be judged runs at the width both its ends support (%s)" % widths
        else:
            message = "every PCIe link between the NVIDIA GPUs and the root complex runs at the width both its ends support (%s)" % widths
        return Pass("; ".join([message] + notes))
    evidence = []
    for link in narrowed:
        for end in (link.lower, link.upper):
            evidence.append(Evidence(end.folder + "/current_link_width", str(end.width)))
            evidence.append(Evidence(end.folder + "/max_link_width", str(end.max_width)))
    several = len(narrowed) > 1
    message = "%s: %s. " % (
        "%d PCIe links of NVIDIA GPUs are narrower than they can be" % len(narrowed)
        if several
        else "A PCIe link of an NVIDIA GPU is narrower than it can be",
        "; ".join(_narrowed_words(link) for link in narrowed),
    )
    message += (
        "Every copy between host memory and a GPU crosses the links on its path (loading weights, pinned-memory transfers, CPU "
        "offload). A link that trains narrower than both its ends points at the hardware: the card's seating, a riser or cable, a "
        "retimer, the slot. The link's speed is not judged (GPUs lower it when idle); NVIDIA says an idle GPU may narrow its link "
        "too, so confirm it while the GPU is busy."
    )
    if notes:
        message += " Also: %s." % "; ".join(notes)
    # A quarter of the lanes or fewer: a 140 GB load from memory takes four times as long or more.
    quarter = any(4 * link.lower.width <= link.capable for link in narrowed)
    return Issue(message, evidence, _link_steps(f.fixes, narrowed), severity=Severity.HIGH if quarter else None)


def _narrowed_words(link) -> str:
    lower, upper = link.lower, link.upper
    if link.own:
        what = "GPU %s's own link, to the port above it (%s)," % (lower.address, upper.address)
    else:
        what = "the uplink of the PCIe switch above %s (from its port %s to %s)" % (
            "GPU %s" % link.gpus[0] if len(link.gpus) == 1 else "GPUs %s" % ", ".join(link.gpus),
            lower.address,
            upper.address,
        )
    return "%s runs at x%d, though both ends support x%d: %s" % (what, lower.width, link.capable, _share(lower.width, link.capable))


def _share(width: int, capable: int) -> str:
    """The part of a link's bandwidth ``width`` lanes of ``capable`` carry, in words."""
    common = gcd(width, capable)
    part = (width // common, capable // common)
    words = {
        (1, 2): "half",
        (1, 4): "a quarter",
        (3, 4): "three quarters",
        (1, 8): "an eighth",
        (3, 8): "three eighths",
        (1, 16): "a sixteenth",
        (1, 32): "a thirty-second",
    }
    return "%s of its bandwidth" % words.get(part, "%d/%d" % part)


def _link_steps(fixes, narrowed):
    """Confirm under load (each narrowed link's lower end with lspci; a GPU's own with
    nvidia-smi too), then the work at the machine."""
    own = any(link.own for link in narrowed)
    ways = []
    if own:
        ways.append("`nvidia-smi --query-gpu=pci.bus_id,pcie.link.width.current,pcie.link.width.max --format=csv` (a GPU's own link)")
    addresses = [link.lower.address for link in narrowed]
    ways.append(
        "`sudo lspci -vv -s %s`" % addresses[0]
        if len(addresses) == 1
        else "`sudo lspci -vv -s ADDRESS` for each of %s" % ", ".join(addresses)
    )
    what = []
    if own:
        what.append("reseat the GPU and its riser or cable")
    uplinks = ", ".join("from %s up to %s" % (link.lower.address, link.upper.address) for link in narrowed if not link.own)
    if uplinks:
        what.append("check the cable, riser or retimer on the switch's uplink (%s) and the switch board's seating" % uplinks)
    return [
        fixes.advice(
            "Confirm it while the GPU is busy (a model loading, or a large copy): %s, reading LnkSta against LnkCap" % ", or ".join(ways),
            # nvidia-smi needs no root; lspci reads the link registers only as root.
            needs_root=not own,
            persistent=None,
            host_wide=True,
        ),
        fixes.advice(
            "At the machine: power it off, %s, and check the slot's lane setting (bifurcation) in the firmware setup; if the link "
            "still trains narrow, move the card to another slot or have the riser or board replaced. No operating-system setting "
            "widens a link" % " and ".join(what),
            host_wide=True,
        ),
    ]


def _unseen(found, nvidia, links) -> list:
    """What of the NVIDIA GPUs' links was not judged, and why, as clauses."""
    notes = []
    unplaced = [a for a in found.unplaced if a in nvidia]
    if len(unplaced) == 1:
        notes.append("where %s sits in the PCI tree was not read (its /sys/bus/pci/devices link)" % unplaced[0])
    elif unplaced:
        notes.append("where %s sit in the PCI tree was not read (their /sys/bus/pci/devices links)" % ", ".join(unplaced))
    unlinked = [a for a in found.unlinked if a in nvidia]
    if unlinked:
        notes.append("%s %s no link width to read, or no port above" % (", ".join(unlinked), "has" if len(unlinked) == 1 else "have"))
    stopped = {}
    for gpu, address in found.stopped:
        if gpu in nvidia:
            stopped.setdefault(address, []).append(gpu)
    for address, below in stopped.items():
        notes.append("the links above %s, from %s up, were not read (%s has no link width to read)" % (", ".join(below), address, address))
    for link in links:
        if link.unjudged is not None:
            notes.append("the link from %s to %s is not judged: %s" % (link.lower.address, link.upper.address, link.unjudged))
    return notes


def _by_design(judged) -> list:
    """The judged links at all the lanes one end has (narrow by how the machine is built), as clauses."""
    notes = []
    for link in judged:
        if not link.narrowed and link.capable < max(link.lower.max_width, link.upper.max_width):
            if link.upper.max_width == link.capable:
                fewer, why = link.upper, "the port's own maximum: the slot's wiring, or a lane split set in the firmware"
            else:
                fewer, why = link.lower, "the card's design" if link.own else "the switch's design"
            notes.append(
                "%s to %s runs at x%d, all the lanes %s has (%s), not a link that trained narrow"
                % (link.lower.address, link.upper.address, link.lower.width, fewer.address, why)
            )
    return notes
