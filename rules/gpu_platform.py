"""The GPU platform around the driver: Fabric Manager on NVSwitch systems, and the NVIDIA kernel
module's flavour against the GPUs' generation."""

from __future__ import annotations

import re

from ai_doctor.engine import rule
from ai_doctor.facts.gpuplatform import FM_LOG, FM_UNIT, GENERATION_WORDS, NVSWITCH_CTL, NVSWITCH_PROC
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step
from ai_doctor.remedy.actions import NOW, Reboot, Run, Show

FM_SERVICE = "nvidia-fabricmanager"


def _family(f) -> str:
    distro = f.os_release
    return distro.family if distro else "linux"


def _distro_id(f) -> str:
    distro = f.os_release
    return distro.fields.get("ID", "") if distro else ""


def _branch(version: str) -> str:
    return version.split(".", 1)[0]


def _names(f):
    return {package.name for package in f.nvidia_packages or ()}


@rule(
    "gpu.fabric-manager",
    "NVSwitch system without a running, matching Fabric Manager",
    Severity.CRITICAL,
    uses=("nvswitch", "fabric_manager", "fabric_manager_log", "nvidia", "nvidia_packages", "running", "os_release", "fixes"),
    host_only="Fabric Manager, a daemon of the host, and /proc/driver/nvidia-nvswitch, not visible in a container",
)
def fabric_manager(f):
    """NVSwitches are present (the driver lists them under /proc/driver/nvidia-nvswitch/devices,
    or NVIDIA PCI functions of class 0x0680, which the driver claims as NVSwitches, are on the
    bus) and Fabric Manager is not installed, not running, masked, or its package's version is
    not exactly the loaded driver's.

    On an NVSwitch system (HGX/DGX A100, H100, H200) the GPUs reach each other only through the
    switches, which Fabric Manager programs at start. Without it, or with a version other than
    the driver's (it checks the loaded driver at start and exits on any difference: "fabric
    manager NVIDIA GPU driver interface version X don't match with driver version Y"), CUDA
    fails with error 802, "system not yet initialized", and nothing runs: critical. Running now
    but not enabled: high, since CUDA fails the same way after the next reboot. After a driver
    upgrade Fabric Manager must be upgraded and restarted with it; a driver package upgraded
    while the old module still runs is fixed by a reboot, not by downgrading Fabric Manager.

    Not a finding: PCIe GPUs (H100/A100 PCIe, no NVSwitch) never need Fabric Manager, and VMs
    such as Azure's NC H100 v5 show /dev/nvidia-nvswitchctl without any switch (Fabric Manager
    exits there with NV_WARN_NOTHING_TO_DO, as expected). Inside a container the check skips:
    Fabric Manager is a daemon of the host and /proc/driver/nvidia-nvswitch is not visible. In
    an image, whether the machines it boots have NVSwitches is not known: an installed Fabric
    Manager that is not enabled, or whose version is not the installed driver's, is reported.

    Running is read from the unit's cgroup (nvidia-fabricmanager.service); where no cgroup
    hierarchy can be read the state is not known and only enablement is judged. The version is
    dpkg's (nvidia-fabricmanager-550, cuda-drivers-fabricmanager-550); an rpm database is not
    read, so on RHEL only Fabric Manager's log (/var/log/fabricmanager.log, its first MiB) can
    show a mismatch.

    Fix: install Fabric Manager of exactly the driver's version (`apt-get install -y
    nvidia-fabricmanager-550=550.127.05-*`; RHEL: `dnf install -y
    nvidia-fabricmanager-550-550.127.05`), `systemctl enable --now nvidia-fabricmanager` (or
    restart it after an upgrade), and hold the driver and Fabric Manager packages together
    (`apt-mark hold`, `dnf versionlock add`) so an unattended upgrade cannot split them.
    NVLink 5 systems (HGX B200) also need the NVLink Subnet Manager, which this does not check.

    Reference: NVIDIA Fabric Manager User Guide; open-gpu-kernel-modules linux_nvswitch.c
    (nvswitch_pci_table) and procfs_nvswitch.c; pytorch/pytorch#35710, ollama/ollama#12136,
    huggingface/huggingface_hub#4128, Azure/azhpc-images PR#86 (hold the version).
    """
    nv = f.nvidia
    if not f.running:
        return _image(f, f.fabric_manager, nv)
    switches = f.nvswitch
    if not switches or switches.present is None:
        return Skip(getattr(switches, "reason", None) or "neither %s nor the PCI bus could be read" % NVSWITCH_PROC)
    if not switches.present:
        if switches.listed is not None or switches.ctl:
            seen = "%s lists none" % NVSWITCH_PROC if switches.listed is not None else "%s exists" % NVSWITCH_CTL
            return Pass(
                "no NVSwitch (%s, and none is on the PCI bus): Fabric Manager has nothing to manage here and exits with "
                "NV_WARN_NOTHING_TO_DO where it is started (as on VMs with NVLink but no switch)" % seen
            )
        return Pass("no NVSwitch on the PCI bus: PCIe and NVLink-bridged GPUs do not need Fabric Manager")
    where = NVSWITCH_PROC if switches.listed else "/sys/bus/pci/devices"
    listed = switches.listed or switches.on_bus
    evidence = [Evidence(where, "%d NVSwitch%s: %s" % (switches.count, "" if switches.count == 1 else "es", ", ".join(listed[:8])))]
    fm = f.fabric_manager
    driver = nv.loaded if nv else None
    if driver:
        evidence.append(Evidence(nv.loaded_from, driver))
    if not fm.installed:
        message = (
            "This machine has %d NVSwitch%s, and Fabric Manager is not installed (no %s, no %s unit, no package): until it "
            'programs the switches CUDA fails with error 802, "system not yet initialized".'
            % (switches.count, "" if switches.count == 1 else "es", "/usr/bin/nv-fabricmanager", FM_UNIT)
        )
        return Issue(message, evidence, _install_steps(f, fm, nv, driver, running=False))
    package = fm.package
    problems = []
    severity = Severity.CRITICAL
    if package is not None:
        evidence.append(Evidence("/var/lib/dpkg/status", "%s %s" % (package.name, package.version)))
    if fm.pids:
        evidence.append(Evidence(fm.pids_from, "running (pid %s)" % ", ".join(str(pid) for pid in fm.pids[:4])))
    elif fm.pids == ():
        evidence.append(Evidence(fm.pids_from, "not running"))
    mismatch = package is not None and driver and package.upstream != driver
    upgraded = mismatch and package.upstream in (nv.library_versions or ())
    if mismatch:
        if upgraded:
            problems.append(
                "the driver was upgraded to %s (its libraries and Fabric Manager %s), but module %s still runs: Fabric Manager "
                "refuses to start against it" % (package.upstream, package.upstream, driver)
            )
        else:
            problems.append(
                "Fabric Manager is %s (%s) and the loaded driver %s: Fabric Manager runs only with exactly its own driver version "
                "and exits at start otherwise" % (package.upstream, package.name, driver)
            )
    log = f.fabric_manager_log if fm.pids == () else None
    if log is not None and (not driver or log.driver_version == driver):
        evidence.append(Evidence(log.path, log.text, log.line))
        if not mismatch:
            problems.append("its log says its version does not match the driver (%s)" % log.text[:160])
            mismatch = True
    if fm.masked:
        problems.append("%s is masked, so systemd never starts it" % FM_UNIT)
    if fm.pids == ():
        problems.append("Fabric Manager (%s) is not running" % FM_UNIT + ("" if fm.enabled else ", and not enabled at boot"))
    elif not fm.enabled and not fm.masked:
        evidence.append(Evidence("/etc/systemd/system/multi-user.target.wants/%s" % FM_UNIT, "not present"))
        if fm.pids is None:
            problems.append(
                "Fabric Manager is not enabled at boot (whether it runs now cannot be told: no cgroup lists the unit's processes)"
            )
        else:
            problems.append("Fabric Manager runs now but is not enabled at boot")
        if not mismatch:
            severity = Severity.HIGH
    if not problems:
        note = "Fabric Manager %s serves %d NVSwitch%s" % (
            package.upstream if package else "(version not known: no dpkg database)",
            switches.count,
            "" if switches.count == 1 else "es",
        )
        if fm.pids is None:
            note += "; it is enabled, and whether it runs now cannot be told (no cgroup lists the unit's processes)"
        return Pass(note)
    when = "after the next reboot " if severity is Severity.HIGH else ""
    message = 'This machine has %d NVSwitch%s, and %s: %sCUDA fails with error 802, "system not yet initialized".' % (
        switches.count,
        "" if switches.count == 1 else "es",
        "; ".join(problems),
        when,
    )
    if upgraded:
        steps = [
            f.fixes.reboot_step("Reboot, which loads driver %s; Fabric Manager %s starts with it" % (package.upstream, package.upstream))
        ]
        steps += _hold_steps(f, fm, package.upstream)
        return Issue(message, evidence, steps, severity=severity)
    steps = _install_steps(f, fm, nv, driver, running=bool(fm.pids), install=bool(mismatch))
    return Issue(message, evidence, steps, severity=severity)


def _image(f, fm, nv):
    """An image: an installed Fabric Manager that will not start at boot, or not match."""
    if not fm.installed:
        return Skip("an image: whether the machines it boots have NVSwitches is not known here, and Fabric Manager is not installed in it")
    versions = nv.library_versions if nv else []
    driver = versions[0] if len(versions) == 1 else None
    package = fm.package
    problems = []
    evidence = []
    if package is not None:
        evidence.append(Evidence("/var/lib/dpkg/status", "%s %s" % (package.name, package.version)))
    if package is not None and driver and package.upstream != driver:
        problems.append("its version (%s) is not the installed driver's (%s)" % (package.upstream, driver))
        evidence.append(Evidence(nv.libraries[0].path, driver))
    if fm.masked:
        problems.append("%s is masked" % FM_UNIT)
    elif not fm.enabled:
        problems.append("%s is not enabled, so it does not start at boot" % FM_UNIT)
        evidence.append(Evidence("/etc/systemd/system/multi-user.target.wants/%s" % FM_UNIT, "not present"))
    if not problems:
        return Pass("Fabric Manager %s is installed and enabled" % (package.upstream if package else ""))
    message = (
        "Fabric Manager is installed in this image, so it is meant for NVSwitch machines, and %s: on them CUDA fails with error "
        '802, "system not yet initialized".' % "; ".join(problems)
    )
    return Issue(
        message, evidence, _install_steps(f, fm, nv, driver, running=False, install=bool(package and driver and package.upstream != driver))
    )


def _fm_packages(f, fm, driver: str):
    """The Fabric Manager packages to install for ``driver``: the installed ones (service,
    -dev, the cuda-drivers-fabricmanager meta-package) with the driver's branch in their names
    (nvidia-fabricmanager-550 → nvidia-fabricmanager-560), else nvidia-fabricmanager-BRANCH."""
    branch = _branch(driver)
    names = []
    for package in fm.packages if fm else ():
        match = re.fullmatch(r"(.*fabricmanager(?:-dev|-devel)?)-(\d+)", package.name)
        names.append("%s-%s" % (match.group(1), branch) if match else package.name)
    return list(dict.fromkeys(names)) or ["nvidia-fabricmanager-%s" % branch]


def _install_steps(f, fm, nv, driver, running: bool, install: bool = True):
    fixes = f.fixes
    steps = []
    family = _family(f)
    if install and driver:
        names = _fm_packages(f, fm, driver)
        if family == "debian":
            argv = ("apt-get", "install", "-y", "--allow-change-held-packages") + tuple("%s=%s-*" % (name, driver) for name in names)
            summary = "Install Fabric Manager %s, exactly the driver's version (%s)" % (driver, ", ".join(names))
            steps.append(fixes.step(summary, [Run(argv)], True, host_wide=False))
        elif family == "rhel":
            rpm = "nvidia-fabricmanager-%s-%s" % (_branch(driver), driver)
            steps.append(
                fixes.step(
                    "Install Fabric Manager %s, exactly the driver's version" % driver,
                    [Run(("dnf", "install", "-y", rpm))],
                    True,
                    host_wide=False,
                )
            )
        else:
            steps.append(
                Step(
                    "Install NVIDIA Fabric Manager %s, exactly the driver's version, from NVIDIA's repository or tarball" % driver,
                    (),
                    True,
                    True,
                )
            )
    elif install:
        steps.append(
            Step("Install NVIDIA Fabric Manager of exactly the loaded driver's version (nvidia-fabricmanager-BRANCH)", (), True, True)
        )
    if fm is not None and fm.masked:
        steps.append(fixes.step("Unmask %s" % FM_UNIT, [Run(("systemctl", "unmask", FM_SERVICE))], True, host_wide=False))
    if running:
        steps.append(
            fixes.step(
                "Restart Fabric Manager, so the new version runs", [Run(("systemctl", "restart", FM_SERVICE), NOW)], False, host_wide=False
            )
        )
        if not fm.enabled:
            steps.append(fixes.step("Enable it at boot", [Run(("systemctl", "enable", FM_SERVICE))], True, host_wide=False))
    else:
        now = bool(f.running)
        summary = "Start Fabric Manager now and keep it enabled at boot" if now else "Enable Fabric Manager at boot"
        steps.append(
            fixes.step(summary, [Run(("systemctl", "enable") + (("--now",) if now else ()) + (FM_SERVICE,))], True, host_wide=False)
        )
        if now:
            steps.append(
                fixes.step("See that it started (and why not)", [Show("tail -n 20 %s" % FM_LOG, needs_root=True)], None, host_wide=False)
            )
    if driver:
        steps += _hold_steps(f, fm, driver)
    return steps


_DRIVER_PACKAGES = ("nvidia-driver", "cuda-drivers", "nvidia-dkms-", "nvidia-open", "nvidia-kernel-dkms", "nvidia-kernel-open-dkms")


def _hold_steps(f, fm, driver: str):
    family = _family(f)
    fixes = f.fixes
    if family == "debian":
        held = _fm_packages(f, fm, driver)
        held += sorted(p.name for p in f.nvidia_packages or () if p.name.startswith(_DRIVER_PACKAGES) and "fabricmanager" not in p.name)
        held = list(dict.fromkeys(held))
        return [
            fixes.step(
                "Hold Fabric Manager and the driver together, so an upgrade cannot split their versions again",
                [Run(("apt-mark", "hold") + tuple(held))],
                True,
                host_wide=False,
            )
        ]
    if family == "rhel":
        return [
            fixes.step(
                "Lock the driver's and Fabric Manager's packages of branch %s together (dnf's versionlock plugin, "
                "python3-dnf-plugin-versionlock), so an upgrade cannot split their versions" % _branch(driver),
                [Run(("dnf", "versionlock", "add", "*nvidia*%s*" % _branch(driver)))],
                True,
                host_wide=False,
            )
        ]
    return []


# -- module flavour ----------------------------------------------------------------------------


@rule(
    "gpu.module-flavour",
    "NVIDIA kernel module flavour cannot drive the GPU",
    Severity.CRITICAL,
    needs=("gpus",),
    uses=("running", "nvidia_flavour", "gpu_models", "nvidia", "nvidia_packages", "os_release", "fixes"),
)
def module_flavour(f):
    """The nvidia kernel module here is of a flavour that cannot drive a GPU on the bus: a
    Blackwell or later GPU (GB100, GB202, …) with the proprietary module, or a GPU before Turing
    (Maxwell GM, Pascal GP, Volta GV) with the open module.

    The open kernel modules need the GSP, first in Turing, so they cannot drive older GPUs; from
    Blackwell on NVIDIA supports only the open modules (the proprietary one logs "NVRM: The
    NVIDIA GPU … requires use of the NVIDIA open kernel modules", then RmInitAdapter failed and
    Xid 169). Either way CUDA and nvidia-smi find no usable GPU: critical. Branches after 580
    ship only the open modules, so a pre-Turing GPU needs the 580 branch's proprietary driver.

    The flavour is the loaded module's (/proc/driver/nvidia/version: "NVIDIA UNIX Open Kernel
    Module for x86_64 …" or "NVIDIA UNIX x86_64 Kernel Module …"; else /sys/module/nvidia/taint,
    where P marks the proprietary module's license), else, where the module did not load, the
    installed module's .modinfo license (NVIDIA or Dual MIT/GPL). The GPU generation is the chip
    name the local pci.ids gives each device id; an id pci.ids does not know (a file older than
    the GPU) or a name without a chip code is not judged: the check then skips. In an image there
    is no bus to read: it skips. Inside a container the host's module and PCI bus are visible,
    so it is judged, and the fix is marked for the host.

    Fix: install the other flavour of the same driver (Ubuntu: nvidia-driver-550-server-open for
    nvidia-driver-550-server; Debian: nvidia-open-kernel-dkms for nvidia-kernel-dkms; NVIDIA's
    repository: nvidia-open or cuda-drivers; RHEL 8/9: `dnf module switch-to
    nvidia-driver:open-dkms`; .run: `-m=kernel-open`), then reboot.

    Reference: NVIDIA Driver Installation Guide, "Kernel Modules" and "Switching between Driver
    Module Flavors"; NVIDIA/open-gpu-kernel-modules README and issue #19 (GSP); Start9Labs PR#3693
    (GB10 on the proprietary module).
    """
    if not f.running:
        return Skip("an image: which GPUs the module drives is known on the running system only")
    gpus = f.gpus
    if not gpus.nvidia:
        return Pass("no NVIDIA GPU on the PCI bus")
    flavour = f.nvidia_flavour
    if not flavour:
        return Skip(flavour.reason)
    models = f.gpu_models
    if not models:
        return Skip(models.reason)
    unknown = [m for m in models.gpus if m.generation is None]
    newer = [m for m in models.gpus if m.generation == "blackwell"]
    older = [m for m in models.gpus if m.generation == "pre-turing"]
    bad = newer if flavour.name == "proprietary" else older
    if not bad:
        if unknown:
            return Skip(
                "%s: not known to %s (version %s), or its name has no chip code, so its generation is not known"
                % (
                    ", ".join("%s (%s%s)" % (m.address, m.ids, ", " + m.name if m.name else "") for m in unknown),
                    models.source,
                    models.version or "?",
                )
            )
        kinds = sorted({GENERATION_WORDS[m.generation] for m in models.gpus})
        return Pass("the %s module drives these GPUs (%s)" % (flavour.name, ", ".join(kinds)))
    state = "loaded" if flavour.loaded else "installed for the running kernel (it did not load)"
    gpu_words = ", ".join("%s (%s, %s)" % (m.address, m.ids, m.name) for m in bad)
    if flavour.name == "proprietary":
        message = (
            "The nvidia module %s is the proprietary one, and %s %s Blackwell or later, which only the open kernel module drives: "
            'the driver cannot initialise %s ("requires use of the NVIDIA open kernel modules", RmInitAdapter failed, Xid 169) '
            "and CUDA finds no GPU." % (state, gpu_words, "is" if len(bad) == 1 else "are", "it" if len(bad) == 1 else "them")
        )
    else:
        message = (
            "The nvidia module %s is the open one, and %s %s older than Turing, which the open kernel module cannot drive "
            "(it needs the GSP, first in Turing): %s not initialised and CUDA finds no GPU."
            % (state, gpu_words, "is" if len(bad) == 1 else "are", "it is" if len(bad) == 1 else "they are")
        )
    evidence = [Evidence(flavour.path, flavour.sign)]
    evidence += [Evidence("/sys/bus/pci/devices/%s" % m.address, "%s %s" % (m.ids, m.name)) for m in bad]
    evidence.append(Evidence(models.source, "pci.ids version %s" % (models.version or "?")))
    if newer and older:
        message += (
            " The bus holds both a GPU before Turing (%s) and a Blackwell or later one (%s): no flavour drives both, so one of "
            "them has to go to another machine." % (older[0].address, newer[0].address)
        )
        return Issue(message, evidence, [])
    to_open = flavour.name == "proprietary"
    steps = _flavour_steps(f, to_open)
    return Issue(message, evidence, steps)


def _driver_version(f):
    nv = f.nvidia
    if nv and nv.loaded:
        return nv.loaded
    versions = nv.library_versions if nv else []
    return versions[-1] if versions else None


def _flavour_steps(f, to_open: bool):
    fixes = f.fixes
    names = _names(f)
    family = _family(f)
    ubuntu = _distro_id(f) == "ubuntu"
    version = _driver_version(f)
    argv = None
    what = "open" if to_open else "proprietary"
    if not to_open and version and version[:3].isdigit() and int(_branch(version)) > 580:
        summary = (
            "Install the 580 branch's proprietary driver: driver %s ships only the open kernel modules, and branches after 580 drive "
            "no Maxwell, Pascal or Volta GPU" % version
        )
        return [fixes.advice(summary, host_wide=True)]
    if family == "debian":
        ubuntu_driver = sorted(n for n in names if re.fullmatch(r"nvidia-driver-\d+(-server)?(-open)?", n))
        if ubuntu_driver:
            current = ubuntu_driver[-1]
            target = (
                current + "-open"
                if to_open and not current.endswith("-open")
                else current[: -len("-open")]
                if current.endswith("-open")
                else None
            )
            if target:
                argv = ("apt-get", "install", "-y", target)
        elif "nvidia-kernel-dkms" in names and to_open:
            argv = ("apt-get", "install", "-y", "nvidia-open-kernel-dkms", "nvidia-kernel-dkms-")
        elif "nvidia-open-kernel-dkms" in names and not to_open:
            argv = ("apt-get", "install", "-y", "nvidia-kernel-dkms", "nvidia-open-kernel-dkms-")
        elif any(n.startswith(("cuda-drivers", "nvidia-open")) for n in names):
            # NVIDIA's repository ("Switching between Driver Module Flavors").
            if to_open:
                argv = ("apt-get", "install", "-y", "--autoremove", "--purge", "nvidia-open") + (("nvidia-driver-open",) if ubuntu else ())
            else:
                argv = ("apt-get", "install", "-y", "--autoremove", "--purge", "cuda-drivers") + (("nvidia-driver",) if ubuntu else ())
    elif family == "rhel":
        distro = f.os_release
        major = (distro.fields.get("VERSION_ID", "") if distro else "").split(".", 1)[0]
        if major.isdigit() and int(major) <= 9 and _distro_id(f) != "fedora":
            stream = "open-dkms" if to_open else "latest-dkms"
            if version:
                stream = "%s-%s" % (_branch(version), "open" if to_open else "dkms")
            argv = ("dnf", "-y", "module", "switch-to", "nvidia-driver:%s" % stream, "--allowerasing")
        else:
            argv = ("dnf", "install", "-y", "--allowerasing", "nvidia-open" if to_open else "cuda-drivers")
    steps = []
    if argv:
        steps.append(
            fixes.step("Install the %s flavour of the driver's kernel module in place of the other" % what, [Run(argv, proc=True)], True)
        )
    else:
        run = "sh NVIDIA-Linux-$(uname -m)-%s.run -m=%s" % (version or "VERSION", "kernel-open" if to_open else "kernel")
        steps.append(
            fixes.advice(
                "Install the %s flavour of the driver's kernel module in place of the other: your distribution's %s package of the same "
                "driver, or, for a .run install, `%s`" % (what, "-open" if to_open else "proprietary", run),
                host_wide=True,
            )
        )
    steps.append(fixes.step("Reboot to load it", [Reboot()], True))
    return steps
