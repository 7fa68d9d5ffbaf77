"""GPU device plumbing: container engines that can hand NVIDIA GPUs to containers, the device
nodes CUDA and ROCm open, and the /dev/char links systemd-managed containers need."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.containerrt import SNAP_DOCKER_CONFIG, nvidia_runtime
from ai_doctor.facts.gpudevices import SLEEP_TARGETS, SUSPEND_UNITS, UNIT_DIRS
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip
from ai_doctor.remedy.actions import NOW, CommentLines, EditByHand, Reboot, Run, Show, SystemdUnit, WriteFile

TOOLKIT_GUIDE = "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html"
CDI_SPEC = "/etc/cdi/nvidia.yaml"
DEV_CHAR_RULE = "/etc/udev/rules.d/71-nvidia-dev-char.rules"
POWER_CONF = "/etc/modprobe.d/nvidia-power-management.conf"
UVM_CONF = "/etc/modules-load.d/nvidia-uvm.conf"
NODES_RULE = "/etc/udev/rules.d/71-nvidia-device-nodes.rules"
PROC_DEVICES = "/proc/devices"


def _in_container(f):
    container = f.container
    return container if container and container.detected else None


def _has_nvidia_gpu(f) -> bool:
    """NVIDIA GPUs here: on the bus, in the driver's list or as nodes; in an image, an NVIDIA
    driver installed (the image is meant for GPU hosts)."""
    if not f.running:
        nv = f.nvidia
        return bool(nv and nv.installed)
    gpus = f.gpus
    nv = f.nvidia
    return bool((gpus and (gpus.nvidia or gpus.driver_listed or any("/nvidia" in n for n in gpus.nodes))) or (nv and nv.loaded))


def _ctk(rt) -> str:
    return rt.toolkit.get("nvidia-ctk", "nvidia-ctk")


def _install_toolkit(f, rt):
    """Advice to install the toolkit where nvidia-ctk is missing; None where it is there."""
    if "nvidia-ctk" in rt.toolkit:
        return None
    return f.fixes.advice(
        "Install the NVIDIA Container Toolkit (package nvidia-container-toolkit, from NVIDIA's repository as %s says), "
        "which provides nvidia-ctk and the runtime" % TOOLKIT_GUIDE
    )


def _steps(*steps):
    return [step for step in steps if step is not None]


@rule(
    "gpu.container-runtime",
    "Container engine cannot hand NVIDIA GPUs to containers",
    Severity.HIGH,
    needs=("container_runtimes",),
    uses=("container", "running", "gpus", "nvidia", "fixes"),
    host_only="the container engines' configuration (/etc/docker, /etc/containerd, CDI specs) and the host's device nodes",
)
def container_runtime(f):
    """Docker, Podman or Kubernetes' containerd is installed on a host with NVIDIA GPUs, but
    nothing lets it hand them to containers; or a CDI spec no longer matches the host.

    A container engine reaches NVIDIA GPUs one of three ways: the `nvidia` runtime
    (`runtimes.nvidia` in /etc/docker/daemon.json; a `runtimes.nvidia` table under
    containerd's CRI plugin, in config.toml or a file it `imports` such as
    /etc/containerd/conf.d/99-nvidia.toml), the OCI hook (dockerd registers `--gpus` when
    `nvidia-container-runtime-hook` is on its PATH; Podman reads
    /usr/share/containers/oci/hooks.d), or a CDI spec in /etc/cdi or /var/run/cdi (the
    latter wins; Podman's own way, Docker's from 25 with `features.cdi`, on by default from
    28.2). With none of them `docker run --gpus all` fails with `could not select device
    driver "" with capabilities: [[gpu]]` and Kubernetes pods get no GPU: high. CDI-only
    hosts (no runtime entry) are fine. containerd is judged only where kubelet, k3s or RKE2
    is installed (Docker uses its own containerd); the GPU Operator's toolkit under
    /usr/local/nvidia/toolkit and RKE2/k3s's generated configuration
    (/var/lib/rancher/{rke2,k3s}/agent/etc/containerd/config.toml) count.

    Also high: a daemon.json that is not valid JSON (dockerd refuses to start), a configured
    nvidia runtime whose program is missing, and an NVIDIA CDI spec that names a device node
    the host lacks or with other device numbers than the live node (injection fails:
    `unresolvable CDI devices`; NVIDIA/NemoClaw PR#4733 found a drifted nvidia-uvm major),
    or made for another driver version than the libraries installed here (what `nvidia-ctk cdi
    generate` takes it from; the loaded module's where they do not tell one version, and a
    loaded module older than the libraries is named as a pending reboot): its library mounts
    (up to 8 looked up on the host) name files a driver upgrade removes, and the message says
    which are gone (regenerate after every driver change, NVIDIA/cloud-native-docs PR#83). A
    spec without a driver version that is older than the nvidia module file is
    medium (it may predate the driver). In an image the engines' configuration is judged (a
    golden image without the toolkit configured is a real finding) but not the device
    numbers, which need live nodes. Inside a container this is skipped: it is the host's
    configuration.

    Fix: `nvidia-ctk runtime configure --runtime=docker` (or `--runtime=containerd`) and a
    restart of the engine; snap's Docker keeps its configuration in
    /var/snap/docker/current/config/daemon.json (nvidia-docker#1642); or CDI with `nvidia-ctk
    cdi generate --output=/etc/cdi/nvidia.yaml`, and `systemctl enable --now
    nvidia-cdi-refresh.path` where the toolkit ships it (it regenerates
    /var/run/cdi/nvidia.yaml after driver installs and upgrades).

    Reference: NVIDIA Container Toolkit install guide and CDI support pages; nvidia-ctk
    source (cmd/nvidia-ctk/runtime/configure, pkg/config/engine/docker and containerd,
    deployments/systemd/nvidia-cdi-refresh.*); CDI specification (cncf-tags/
    container-device-interface SPEC.md, pkg/cdi/spec-dirs.go); moby daemon/nvidia_linux.go;
    issues NVIDIA/nvidia-docker#1034, #1243, #1642, NVIDIA/nvidia-container-toolkit#871,
    #1239, NVIDIA/gpu-operator#531.
    """
    rt = f.container_runtimes
    if not rt.engines:
        return Pass("no Docker, Podman or Kubernetes containerd is installed")
    if not _has_nvidia_gpu(f):
        return Pass("no NVIDIA GPU here" if f.running else "no NVIDIA driver in the image")
    issues = []
    specs = rt.nvidia_specs
    hook = rt.toolkit.get("nvidia-container-runtime-hook")
    for engine in rt.engines:
        if engine.name == "docker":
            issues += _docker(f, rt, engine, specs, hook)
        elif engine.name == "containerd":
            issues += _containerd(f, rt, engine, specs)
        elif engine.name == "podman" and not specs and not rt.hooks:
            message = (
                "Podman is installed (%s) on a host with NVIDIA GPUs, but there is no NVIDIA CDI spec in /etc/cdi or "
                "/var/run/cdi and no NVIDIA hook in its hooks.d: `podman run --device nvidia.com/gpu=all` fails with "
                "`unresolvable CDI devices`." % engine.binary
            )
            issues.append(Issue(message, [Evidence("/etc/cdi", "no NVIDIA CDI spec")], _cdi_steps(f, rt, first=True)))
    for engine, name, path in rt.unresolved:
        message = "%s's runtime %r runs %s, which is not installed: containers using it fail to start." % (engine, name, path)
        issues.append(Issue(message, [Evidence(_config_path(rt, engine), "%s: %s" % (name, path))], _steps(_install_toolkit(f, rt))))
    issues += _spec_issues(f, rt, specs)
    if issues:
        return issues
    ways = []
    if specs:
        ways.append("CDI spec %s" % ", ".join(spec.path for spec in specs))
    if hook:
        ways.append("hook %s" % hook)
    note = "; device numbers not compared: an image has no device nodes" if specs and not f.running else ""
    return Pass("each engine can reach the GPUs%s%s" % (" (%s)" % "; ".join(ways) if ways else "", note))


def _config_path(rt, engine: str) -> str:
    if engine == "docker" and rt.docker:
        return rt.docker.path
    if engine == "containerd" and rt.containerd:
        return rt.containerd.path
    return engine


def _docker(f, rt, engine, specs, hook):
    config = rt.docker
    if config.problem:
        evidence = [Evidence(config.path, config.problem)]
        if config.problem.startswith("not valid JSON") or config.problem == "not a JSON object":
            message = (
                "%s is %s: dockerd refuses to start with a configuration file it cannot parse, so no container runs, "
                "with or without GPUs." % (config.path, config.problem)
            )
            step = f.fixes.step(
                "Correct %s (it must be one JSON object), then check it and restart Docker" % config.path,
                [EditByHand(config.path), Show("dockerd --validate --config-file=%s" % config.path, needs_root=True)]
                + ([Run(("systemctl", "restart", "docker"), NOW)] if f.running and engine.via != "snap" else []),
                True,
                host_wide=False,
            )
            return [Issue(message, evidence, [step])]
        return []
    runtime = [name for name, path in config.runtimes.items() if nvidia_runtime(name, path)]
    cdi = bool(specs) and config.cdi is not False
    if runtime or hook or cdi:
        return []
    why = "no NVIDIA runtime in %s" % (config.path if config.present else "%s (absent)" % config.path)
    if specs and config.cdi is False:
        why += ", CDI switched off there (features.cdi: false)"
    message = (
        "Docker is installed (%s) on a host with NVIDIA GPUs, but it has no way to hand them to containers: %s, no "
        "nvidia-container-runtime-hook on its PATH%s. `docker run --gpus all` fails with `could not select device driver "
        '"" with capabilities: [[gpu]]`.' % (engine.binary, why, "" if specs else " and no NVIDIA CDI spec")
    )
    evidence = [Evidence(config.path, "runtimes: %s" % (", ".join(sorted(config.runtimes)) or "none") if config.present else "not present")]
    ctk = _ctk(rt)
    fixes = f.fixes
    if engine.via == "snap":
        configure = [Run((ctk, "runtime", "configure", "--runtime=docker", "--config=%s" % SNAP_DOCKER_CONFIG))]
        if f.running:
            configure.append(Run(("snap", "restart", "docker"), NOW))
        summary = "Configure the nvidia runtime in the Docker snap's %s and restart it" % SNAP_DOCKER_CONFIG
    else:
        configure = [Run((ctk, "runtime", "configure", "--runtime=docker"))]
        if f.running:
            configure.append(Run(("systemctl", "restart", "docker"), NOW))
        summary = "Configure Docker's nvidia runtime (nvidia-ctk writes runtimes.nvidia into /etc/docker/daemon.json)" + (
            " and restart Docker" if f.running else ""
        )
    steps = _steps(_install_toolkit(f, rt), fixes.step(summary, configure, True, host_wide=False))
    steps += _cdi_steps(f, rt, first=False, docker=True)
    return [Issue(message, evidence, steps)]


def _containerd(f, rt, engine, specs):
    config = rt.containerd
    if config.cri_disabled:
        return []
    runtime = [name for name, path in config.runtimes.items() if nvidia_runtime(name, path)]
    if runtime or (specs and config.enable_cdi):
        return []
    where = config.path if config.present else "%s (absent: containerd's defaults)" % config.path
    message = (
        "Kubernetes runs containerd here (%s, %s) on a host with NVIDIA GPUs, but %s defines no nvidia runtime%s: the "
        "NVIDIA device plugin and GPU pods cannot get the GPUs."
        % (engine.via, engine.binary, where, " and does not enable CDI" if specs else " and there is no NVIDIA CDI spec")
    )
    evidence = [Evidence(path, "read") for path in config.files] or [Evidence(config.path, "not present")]
    fixes = f.fixes
    if engine.via in ("k3s", "rke2"):
        service = "k3s" if engine.via == "k3s" else "rke2-server"
        actions = [Run(("systemctl", "restart", service), NOW)] if f.running else []
        summary = (
            "Restart %s once nvidia-container-runtime is installed: it writes its containerd configuration at start and adds "
            "the nvidia runtime when it finds the program (an agent node restarts rke2-agent instead)" % engine.via
        )
        step = fixes.step(summary, actions, True, host_wide=False) if actions else fixes.advice(summary)
    else:
        actions = [Run((_ctk(rt), "runtime", "configure", "--runtime=containerd"))]
        if f.running:
            actions.append(Run(("systemctl", "restart", "containerd"), NOW))
        step = fixes.step(
            "Configure containerd's nvidia runtime (nvidia-ctk writes it to /etc/containerd/conf.d/99-nvidia.toml, which "
            "config.toml imports)" + (" and restart containerd" if f.running else ""),
            actions,
            True,
            host_wide=False,
        )
    return [Issue(message, evidence, _steps(_install_toolkit(f, rt), step))]


def _cdi_steps(f, rt, first: bool, docker: bool = False, output: str = CDI_SPEC, again: bool = False):
    """Generating a CDI spec (on a running host; ``again``: in place of a stale one) and keeping
    it current with nvidia-cdi-refresh.path where the toolkit ships that unit."""
    fixes = f.fixes
    lead = "" if first else "Or "
    note = ' (Docker 25 to 28.1 also needs "features": {"cdi": true} in daemon.json)' if docker else ""
    if not first and "nvidia-ctk" not in rt.toolkit:
        note += ", once the toolkit is installed"
    steps = []
    if first:
        install = _install_toolkit(f, rt)
        if install is not None:
            steps.append(install)
    if f.running:
        actions = [Run((_ctk(rt), "cdi", "generate", "--output=%s" % output)), Show("%s cdi list" % _ctk(rt))]
        if rt.refresh_unit and not rt.refresh_enabled:
            actions.append(Run(("systemctl", "enable", "--now", "nvidia-cdi-refresh.path")))
        if again:
            summary = "Generate the spec %s again from the driver and nodes here%s" % (
                output,
                ", and have nvidia-cdi-refresh regenerate it after driver changes" if rt.refresh_unit and not rt.refresh_enabled else "",
            )
        else:
            summary = "%suse CDI: generate the spec %s%s" % (
                lead,
                output,
                " and regenerate it after driver changes" if rt.refresh_unit and not rt.refresh_enabled else "",
            )
        steps.append(fixes.step((summary + note)[0].upper() + (summary + note)[1:], actions, True, host_wide=False))
    elif rt.refresh_unit:
        summary = "%suse CDI, generated at boot by nvidia-cdi-refresh (the spec must come from the host that runs it)%s" % (lead, note)
        steps.append(
            fixes.step(summary[0].upper() + summary[1:], [Run(("systemctl", "enable", "nvidia-cdi-refresh.path"))], True, host_wide=False)
        )
    return steps


def _spec_issues(f, rt, specs):
    issues = []
    nv = f.nvidia
    loaded = nv.loaded if nv else None
    installed = nv.library_versions if nv else []
    # nvidia-ctk cdi generate takes the version from the libraries installed, which is what a
    # spec must name; the loaded module only where they do not tell.
    if len(installed) == 1:
        driver, against = installed[0], "the driver libraries installed here are %s" % installed[0]
        if loaded and loaded != installed[0]:
            against += " (the loaded module is still %s: a reboot is pending)" % loaded
    else:
        driver, against = loaded, "the loaded driver is %s" % loaded
    for spec in specs:
        problems, evidence = [], []
        for host_path, node, outcome in spec.live:
            wanted = [(major, minor) for _p, hp, major, minor in spec.nodes if hp == host_path and major is not None]
            if node is None:
                problems.append("names %s, which the host does not have (%s)" % (host_path, outcome))
                evidence.append(Evidence(host_path, outcome))
            elif wanted and (node.major, node.minor) not in wanted:
                problems.append(
                    "gives %s the device numbers %d:%d, while the live node is %d:%d"
                    % (host_path, wanted[0][0], wanted[0][1], node.major, node.minor)
                )
                evidence.append(Evidence(host_path, "%d:%d" % (node.major, node.minor)))
        severity = None
        if spec.driver and driver and spec.driver != driver:
            if spec.gone:
                named = ", ".join(spec.gone[:3]) + (" …" if len(spec.gone) > 3 else "")
                mounts = "its library mounts name files that are gone: %s" % named
            else:
                mounts = "its library mounts name driver %s's libraries, which a driver upgrade removes" % spec.driver
            problems.append("was made for driver %s, and %s; %s" % (spec.driver, against, mounts))
            evidence.append(Evidence(spec.path, "driver %s" % spec.driver))
            evidence += [Evidence(path, "not present") for path in spec.gone[:3]]
        elif (
            not problems and spec.driver is None and spec.mtime is not None and rt.driver_mtime is not None and spec.mtime < rt.driver_mtime
        ):
            problems.append("is older than the nvidia module file and names no driver version: it may predate the driver")
            evidence.append(Evidence(spec.path, "mtime %d < module mtime %d" % (spec.mtime, rt.driver_mtime)))
            severity = Severity.MEDIUM
        if not problems:
            continue
        message = "The CDI spec %s (%s) %s: containers asking for its devices fail to start." % (
            spec.path,
            spec.kind,
            "; it ".join(problems),
        )
        if rt.refresh_enabled:
            message += " nvidia-cdi-refresh.path is enabled but regenerates only on driver installs and reboots, not module reloads."
        issues.append(
            Issue(
                message,
                [Evidence(spec.path, spec.kind)] + evidence,
                _cdi_steps(f, rt, first=True, output=spec.path, again=True),
                severity=severity,
            )
        )
    return issues


@rule(
    "gpu.device-nodes",
    "GPU device nodes missing, stale or out of reach",
    Severity.HIGH,
    needs=("gpu_devices",),
    uses=("gpus", "container", "nvidia", "gpu_device_names", "os_release", "fixes"),
)
def device_nodes(f):
    """The device files CUDA and ROCm open are missing, carry stale device numbers, or this
    process may not open them; or the host suspends without preserving video memory.

    NVIDIA (high): `nvidia_uvm` is not loaded (CUDA: `cuInit` 999, "Could not load UVM kernel
    module"); /dev/nvidia-uvm, /dev/nvidiactl or a GPU's /dev/nvidiaN (its "Device Minor" in
    /proc/driver/nvidia/gpus) is absent while its module is loaded; or one of them has another
    major than /proc/devices registers (`nvidia-uvm`; 195 as `nvidia`, `nvidia-frontend` before
    550.40): a node left from an earlier module load. The nodes are made by nvidia-modprobe
    (setuid root, which libcuda runs), a udev rule or nvidia-persistenced, never by devtmpfs:
    loading nvidia_uvm does not make /dev/nvidia-uvm. Where a setuid nvidia-modprobe is
    installed, an unloaded nvidia_uvm and absent nodes are what a host looks like before its
    first CUDA program (it loads and makes them for any user), so they are not reported on the
    host; without it they are (a plain nvidia-modprobe serves root only). Inside a container
    (judged there: injected nodes and numeric groups are what breaks) /dev/nvidia-uvm or
    /dev/nvidiactl missing beside /dev/nvidiaN means the runtime did not inject them: the host
    had nvidia_uvm unloaded when the container started, or the container did not ask for the
    compute capability; the fix is on the host and in how the container is started
    (`--gpus all`, NVIDIA_DRIVER_CAPABILITIES=compute,utility, CDI `nvidia.com/gpu=all`),
    never a modprobe inside it. With the GPU Operator the nodes under /run/nvidia/driver/dev
    are the ones judged.

    AMD (high): /dev/kfd or /dev/dri/renderD* exist but their mode and group do not let this
    process (its uid, gid and supplementary groups in /proc/self/status) read and write them:
    ROCm fails with "open /dev/kfd: permission denied" or "No devices found". Access given by
    ACLs (logind's uaccess for a desktop seat) is not seen. In a container the groups are
    numeric: the host's render group id must be added (`--group-add`).

    Suspend (medium): the host suspended since boot (/sys/power/suspend_stats/success > 0)
    while the loaded driver runs with `PreserveVideoMemoryAllocations: 0`
    (/proc/driver/nvidia/params): video memory is lost at suspend and CUDA programs (Ollama)
    fall back to the CPU or fail after resume until nvidia_uvm is reloaded; or with 1 but
    nvidia-suspend.service or nvidia-resume.service not enabled (no sleep service requires or
    wants them): the driver then refuses to suspend ("System Power Management attempted without
    driver procfs suspend interface"). A host that never suspended is not judged (a server that
    never sleeps is fine), nor one whose sleep targets are all masked.

    Not judged in an image (it has no device nodes) or in a tree that did not capture /dev.
    In the simulated next boot the nodes a udev rule makes are there.

    Fixes: the nodes made now, with `nvidia-modprobe -u -c=0` (loads nvidia-uvm, makes
    /dev/nvidia-uvm and /dev/nvidia-uvm-tools) and `nvidia-modprobe -c=N` (/dev/nvidiaN,
    255: /dev/nvidiactl) where it is installed, else `mknod` with the numbers /proc/devices
    registers (`modprobe nvidia-uvm` first where it is not loaded); at every boot, a udev rule
    that runs nvidia-modprobe when a GPU binds to the nvidia driver (as NVIDIA's packages
    do), or, without nvidia-modprobe, the package installed (setuid root, CUDA runs it for
    any user) and nvidia-uvm in /etc/modules-load.d; stale nodes removed and made again;
    `usermod -aG GROUP USER` (aidoctor run with sudo judges root, who may open anything: run
    it as the service's user to judge that user); `options nvidia
    NVreg_PreserveVideoMemoryAllocations=1 NVreg_TemporaryFilePath=/var/tmp` in modprobe.d
    with those of nvidia-suspend, nvidia-resume and nvidia-hibernate that are installed
    enabled (NVIDIA driver README, "Configuring Power Management Support"; where their unit
    files are not installed, which package ships them), or, on a server, the sleep targets
    masked. Reloading nvidia_uvm after a resume is advice, never a command of the fix.

    Reference: NVIDIA driver README (installed files, power management), nvidia-modprobe
    (nvidia-modprobe.c, modprobe-utils), nvidia-container-toolkit internal/info/proc/devices;
    Documentation/ABI/testing/sysfs-power; proc(5); modules-load.d(5); CUDA installation guide
    ("Device Node Verification"); issues NVIDIA/nvidia-docker#139, #997, NVIDIA/enroot#105,
    ollama/ollama#1813, #2934, PR#3282 (docs/gpu.md), NVIDIA/nvidia-container-toolkit#1155.
    """
    devices = f.gpu_devices
    container = _in_container(f)
    nv = f.nvidia
    issues = []
    notes = []
    if nv and nv.loaded:
        issues += _nvidia_nodes(f, devices, container, notes)
    elif devices.gpus:
        notes.append("NVIDIA nodes present but the driver's version is not readable")
    if devices.kfd is not None and devices.kfd.node is not None:
        issues += _amd_nodes(f, devices, container, notes)
    if nv and nv.loaded and not container:
        issues += _suspend(f, devices, notes)
    if issues:
        return issues
    if not (nv and nv.loaded) and devices.kfd is None:
        return Pass("no NVIDIA driver loaded and no /dev/kfd")
    return Pass("; ".join(notes) or "the GPU device nodes are consistent and usable")


def _expected(devices, name: str):
    """(major, minor) /proc/devices and the driver's fixed minors say /dev/NAME must have."""
    majors = devices.majors or {}
    gpu = devices.nvidia_major()
    if name == "nvidiactl":
        return (gpu, 255) if gpu is not None else None
    if name == "nvidia-modeset":
        return (gpu, 254) if gpu is not None else None
    if name in ("nvidia-uvm", "nvidia-uvm-tools"):
        major = majors.get("nvidia-uvm")
        return (major, 0 if name == "nvidia-uvm" else 1) if major is not None else None
    if name.startswith("nvidia") and name[6:].isdigit():
        return (gpu, int(name[6:])) if gpu is not None else None
    return None


def _nvidia_nodes(f, devices, container, notes):
    issues = []
    fixes = f.fixes
    stale = []
    for item in devices.nvidia:
        if item.node is None:
            continue
        name = item.path[len(devices.dev) + 1 :]
        if not item.node.is_char:
            stale.append((item, "is not a character device"))
            continue
        want = _expected(devices, name)
        if want is not None and (item.node.major, item.node.minor) != want:
            stale.append((item, "is %d:%d, and /proc/devices says %d:%d" % (item.node.major, item.node.minor, want[0], want[1])))
    if stale:
        message = (
            "%s: the driver registered other device numbers (%s), so CUDA opens the wrong device or none "
            "(cuInit error 999). Nodes outlive a module reload; these are left from an earlier one."
            % ("; ".join("%s %s" % (item.path, why) for item, why in stale), "/proc/devices")
        )
        evidence = [Evidence(item.path, "%s %d:%d" % (item.node.kind, item.node.major, item.node.minor)) for item, _why in stale]
        if container:
            steps = [
                fixes.advice(
                    "Remake the nodes on the host (as root, `nvidia-modprobe -u -c=0` remakes /dev/nvidia-uvm and "
                    "/dev/nvidia-uvm-tools, `nvidia-modprobe -c=N` /dev/nvidiaN, with the registered numbers), then "
                    "recreate this container so the runtime injects them again",
                    host_wide=True,
                )
            ]
        else:
            names = [item.path[len(devices.dev) + 1 :] for item, _why in stale]
            paths = tuple(item.path for item, _why in stale)
            if devices.tool:
                summary = "Have nvidia-modprobe make the nodes again with the registered numbers (it replaces a wrong node)"
                actions = _make_nodes(devices, names)
            else:
                summary = "Remove the stale nodes and make them again with the registered numbers"
                actions = [Run(("rm", "-f") + paths, NOW)] + _make_nodes(devices, names)
            summary += " (stop what uses the GPU first)"
            steps = [fixes.step(summary, actions + [Show("ls -l %s" % " ".join(paths))], False, host_wide=False)]
        issues.append(Issue(message, evidence, steps))
    if container:
        issues += _container_nodes(f, devices, container)
        return issues
    absent = _absent(devices)
    if devices.uvm_loaded is False or absent:
        if devices.helper:
            what = "nvidia_uvm is not loaded yet" if devices.uvm_loaded is False else "%s absent" % ", ".join(absent)
            notes.append("%s; %s (setuid root) makes %s at the first CUDA call" % (what, devices.helper, "it" if not absent else "them"))
        else:
            issues.append(_absent_issue(f, devices, absent))
    return issues


def _absent(devices):
    """Names under /dev of the nodes CUDA opens that are not there though their module is
    loaded: nvidiactl, nvidia-uvm (and its -tools twin), each GPU's nvidiaN."""
    names = []
    # nvidiactl matters where the driver has GPUs: nodes of them, or ones it lists.
    if devices.absent("nvidiactl") and devices.nvidia_major() is not None and (devices.gpus or devices.minors):
        names.append("nvidiactl")
    present = {item.path.rsplit("/", 1)[1] for item in devices.gpus}
    names += ["nvidia%d" % minor for minor in devices.minors if "nvidia%d" % minor not in present]
    if devices.uvm_loaded and devices.absent("nvidia-uvm"):
        names.append("nvidia-uvm")
        if devices.absent("nvidia-uvm-tools"):
            names.append("nvidia-uvm-tools")
    return names


def _absent_issue(f, devices, absent):
    """nvidia_uvm unloaded or nodes absent, with no setuid nvidia-modprobe to fix it for users."""
    unloaded = devices.uvm_loaded is False
    paths = ["%s/%s" % (devices.dev, name) for name in absent]
    who = "every user but root (%s, not setuid, serves root only)" % devices.tool if devices.tool else "every user"
    if unloaded:
        message = (
            "The nvidia driver is loaded but nvidia_uvm is not, and no setuid-root nvidia-modprobe is installed to load it when "
            'a CUDA program starts: CUDA fails (cuInit error 999, "Could not load UVM kernel module") for %s.' % who
        )
        if devices.loads_at_boot("nvidia-uvm"):
            message += " modules-load.d names it, so it loads at boot: it was unloaded since."
        message += " Loading it is not enough: /dev/nvidia-uvm must be made too (devtmpfs does not make NVIDIA's nodes)."
        if paths:
            message += " %s %s absent too." % (", ".join(paths), "is" if len(paths) == 1 else "are")
        evidence = [Evidence("/proc/modules", "no nvidia_uvm")]
    else:
        uvm = devices.majors.get("nvidia-uvm") if devices.majors else None
        message = (
            "%s %s not there though %s loaded, and no setuid-root nvidia-modprobe is installed to make %s when a CUDA program "
            "starts: CUDA cannot open %s and fails (%s) for %s. devtmpfs does not make NVIDIA's nodes: nvidia-modprobe, a udev "
            "rule or nvidia-persistenced does."
            % (
                ", ".join(paths),
                "is" if len(paths) == 1 else "are",
                "nvidia_uvm is" if any(n.startswith("nvidia-uvm") for n in absent) else "the nvidia driver is",
                "it" if len(paths) == 1 else "them",
                "it" if len(paths) == 1 else "them",
                "cuInit error 999" if "nvidia-uvm" in absent else "no CUDA-capable device is detected",
                who,
            )
        )
        evidence = [Evidence(path, "not present") for path in paths[:16]]
        if uvm is not None and "nvidia-uvm" in absent:
            evidence.append(Evidence(PROC_DEVICES, "%d nvidia-uvm" % uvm))
    made = [devices.made_by(name) for name in absent]
    if absent and all(made):
        message += " %s:%d makes %s when the driver binds, so %s back at the next boot." % (
            made[0].path,
            made[0].line,
            "it" if len(absent) == 1 else "them",
            "it comes" if len(absent) == 1 else "they come",
        )
    fixes = f.fixes
    wanted = list(absent) + (["nvidia-uvm", "nvidia-uvm-tools"] if unloaded else [])
    actions = []
    if unloaded and not devices.tool:
        # Nodes left from an earlier load may carry another major than the module gets now.
        left = tuple("%s/%s" % (devices.dev, name) for name in ("nvidia-uvm", "nvidia-uvm-tools") if not devices.absent(name))
        actions = [Run(("modprobe", "nvidia-uvm"), NOW)] + ([Run(("rm", "-f") + left, NOW)] if left else [])
    actions += _make_nodes(devices, wanted)
    summary = ("Load nvidia-uvm and make %s now" if unloaded else "Make %s now") % _node_words(wanted)
    look = Show("ls -l %s" % " ".join("%s/%s" % (devices.dev, name) for name in wanted))
    steps = [fixes.step(summary, actions + [look], False, host_wide=False)]
    boot = [name for name in wanted if not devices.made_by(name)]
    if boot and devices.tool:
        steps.append(
            fixes.step(
                "Make %s at every boot, whenever a GPU binds to the nvidia driver, with a udev rule that runs %s (as NVIDIA's "
                "packages do; -u also loads nvidia-uvm)" % (_node_words(boot), devices.tool),
                [WriteFile(NODES_RULE, _nodes_rule(devices, boot), True), Run(("udevadm", "control", "--reload"), NOW)],
                True,
                host_wide=False,
            )
        )
    elif boot:
        if unloaded and not devices.loads_at_boot("nvidia-uvm"):
            steps.append(
                fixes.step(
                    "Load nvidia-uvm at every boot (systemd-modules-load reads %s)" % UVM_CONF,
                    [WriteFile(UVM_CONF, ("nvidia-uvm",), True)],
                    True,
                    host_wide=False,
                )
            )
        steps.append(
            fixes.advice(
                "Install nvidia-modprobe (the nvidia-modprobe package, from the distribution or NVIDIA's CUDA repository): "
                "installed setuid root, it is what CUDA runs to load nvidia-uvm and make the nodes for any user, after every "
                "boot too"
            )
        )
    return Issue(message, evidence, steps)


def _node_words(names) -> str:
    return ", ".join("/dev/" + name for name in names) if len(names) < 4 else "the NVIDIA nodes"


def _nodes_rule(devices, names):
    """The lines of a udev rule that runs nvidia-modprobe for ``names`` when a GPU binds to the
    nvidia driver (NVIDIA's packages run it from such a rule, with ``-c0 -u``)."""
    runs = []
    if any(name.startswith("nvidia-uvm") for name in names):
        runs.append("%s -u -c=0" % devices.tool)
    minors = _gpu_minors(names)
    if minors:
        runs.append("%s %s" % (devices.tool, " ".join("-c=%d" % minor for minor in minors)))
    return (
        "# Load nvidia-uvm and make NVIDIA's device nodes whenever a GPU binds to the nvidia driver (devtmpfs does not make them)",
        'ACTION=="add|bind", SUBSYSTEM=="pci", ATTR{vendor}=="0x10de", DRIVER=="nvidia", %s' % ", ".join('RUN+="%s"' % run for run in runs),
    )


def _gpu_minors(names):
    """Minor numbers nvidia-modprobe -c makes for ``names`` (nvidiactl: 255)."""
    minors = sorted(int(name[6:]) for name in names if name.startswith("nvidia") and name[6:].isdigit())
    return minors + ([255] if "nvidiactl" in names else [])


def _make_nodes(devices, names):
    """Actions that make the nodes ``names`` (under the driver's /dev): nvidia-modprobe where it
    is installed (``-u -c=0``: the nvidia-uvm nodes; ``-c=N``: /dev/nvidiaN, 255 /dev/nvidiactl;
    ``-m``: /dev/nvidia-modeset), else mknod with the numbers /proc/devices registers, the nvidia-uvm
    nodes 0666 as nvidia-modprobe makes them, the others with the driver's DeviceFileMode, -UID
    and -GID; where nvidia-uvm has no major yet (it was just loaded), read from /proc/devices when
    the command runs."""
    actions = []
    uvm = [name for name in ("nvidia-uvm", "nvidia-uvm-tools") if name in names]
    minors = _gpu_minors(names)
    modeset = "nvidia-modeset" in names
    if devices.tool:
        if minors or modeset:
            actions.append(Run((devices.tool,) + tuple("-c=%d" % minor for minor in minors) + (("-m",) if modeset else ()), NOW))
        if uvm:
            actions.append(Run((devices.tool, "-u", "-c=0"), NOW))
        return actions
    gpu = devices.nvidia_major()
    mode, uid, gid = devices.file_mode()
    made = []
    for minor in minors + ([254] if modeset else []):
        name = "nvidiactl" if minor == 255 else "nvidia-modeset" if minor == 254 else "nvidia%d" % minor
        path = "%s/%s" % (devices.dev, name)
        actions.append(Run(("mknod", "-m", "%o" % mode, path, "c", str(gpu if gpu is not None else 195), str(minor)), NOW))
        made.append(path)
    if made and (uid or gid):
        actions.append(Run(("chown", "%d:%d" % (uid, gid)) + tuple(made), NOW))
    major = (devices.majors or {}).get("nvidia-uvm")
    if uvm and major is not None:
        actions += [
            Run(("mknod", "-m", "666", "%s/%s" % (devices.dev, name), "c", str(major), "0" if name == "nvidia-uvm" else "1"), NOW)
            for name in uvm
        ]
    elif uvm:
        script = 'set -- $(grep -x " *[0-9]* nvidia-uvm" /proc/devices) && ' + " && ".join(
            'mknod -m 666 %s/%s c "$1" %d' % (devices.dev, name, 0 if name == "nvidia-uvm" else 1) for name in uvm
        )
        actions.append(Run(("sh", "-c", script), NOW))
    return actions


def _container_nodes(f, devices, container):
    if not devices.gpus:
        return []
    missing = [name for name in ("nvidiactl", "nvidia-uvm") if devices.node(name) is not None and devices.node(name).node is None]
    if not missing:
        return []
    host_unloaded = devices.uvm_loaded is False
    message = "This container has %s but no %s: the runtime did not inject %s, so CUDA cannot start here%s." % (
        ", ".join(item.path for item in devices.gpus),
        " or ".join("/dev/" + name for name in missing),
        "them" if len(missing) > 1 else "it",
        " (the host has nvidia_uvm unloaded: /proc/modules lists none)"
        if host_unloaded and "nvidia-uvm" in missing
        else " (it was started without the compute capability, or the host's nodes were missing when it started)",
    )
    fixes = f.fixes
    steps = []
    if host_unloaded:
        steps.append(
            fixes.advice(
                "Load nvidia-uvm on the host and make its nodes (as root, `nvidia-modprobe -u -c=0` does both), and at every "
                "boot (%s, or a setuid nvidia-modprobe)" % UVM_CONF,
                host_wide=True,
            )
        )
    steps.append(
        fixes.advice(
            "Recreate the container with the GPUs and the compute capability: `docker run --gpus all` (or "
            "-e NVIDIA_DRIVER_CAPABILITIES=compute,utility with the nvidia runtime, or CDI `--device nvidia.com/gpu=all`)",
            host_wide=True,
        )
    )
    return [Issue(message, [Evidence("/dev/" + name, "not present") for name in missing], steps)]


def _amd_nodes(f, devices, container, notes):
    process = devices.process
    if process is None:
        notes.append("/proc/self/status not readable: access to /dev/kfd not judged")
        return []
    blocked = [item for item in (devices.kfd,) + tuple(devices.render) if item.node is not None and not process.may_use(item.node)]
    if not blocked:
        return []
    names = f.gpu_device_names
    gids = sorted({item.node.gid for item in blocked})
    group_words = ", ".join("%s (%d)" % (names.groups.get(gid), gid) if names.groups.get(gid) else str(gid) for gid in gids)
    message = (
        'This process (uid %d, groups %s) may not open %s: %s. ROCm fails with "open /dev/kfd: permission denied" or '
        "finds no GPU."
        % (
            process.uid,
            " ".join(str(g) for g in sorted({process.gid} | process.groups)),
            ", ".join(item.path for item in blocked),
            "; ".join("%s is %04o, owner %d, group %d" % (item.path, item.node.mode, item.node.uid, item.node.gid) for item in blocked),
        )
    )
    evidence = [Evidence(item.path, "%04o %d:%d" % (item.node.mode, item.node.uid, item.node.gid)) for item in blocked]
    evidence.append(Evidence(process.source, "uid %d gid %d groups %s" % (process.uid, process.gid, sorted(process.groups))))
    fixes = f.fixes
    if container:
        steps = [
            fixes.advice(
                "Recreate the container with the nodes' group added by number (groups inside a container are the host's ids): "
                "`--device=/dev/kfd --device=/dev/dri %s`" % " ".join("--group-add %d" % gid for gid in gids),
                host_wide=True,
            )
        ]
    else:
        named = [names.groups.get(gid) for gid in gids]
        if names.user and all(named):
            steps = [
                fixes.step(
                    "Add %s to the group%s %s (it takes effect at its next login or service start)"
                    % (names.user, "s" if len(named) > 1 else "", ", ".join(named)),
                    [Run(("usermod", "-aG", ",".join(named), names.user))],
                    True,
                    host_wide=False,
                )
            ]
        else:
            steps = [fixes.advice("Add the user the GPU program runs as to the group%s %s" % ("s" if len(gids) > 1 else "", group_words))]
    return [Issue(message, evidence, steps)]


def _suspend(f, devices, notes):
    value = devices.params.get("PreserveVideoMemoryAllocations")
    if value not in ("0", "1") or devices.suspends is None:
        return []
    needed = ("nvidia-suspend.service", "nvidia-resume.service")
    not_enabled = [unit for unit in needed if unit not in devices.enabled_units]
    if value == "1" and not not_enabled:
        return []
    if not devices.suspends:
        notes.append("no suspend since boot")
        return []
    if devices.sleep_masked:
        notes.append("the sleep targets are masked")
        return []
    times = "%d time%s" % (devices.suspends, "" if devices.suspends == 1 else "s")
    evidence = [
        Evidence("/sys/power/suspend_stats/success", str(devices.suspends)),
        Evidence("/proc/driver/nvidia/params", "PreserveVideoMemoryAllocations: %s" % value),
    ]
    if value == "0":
        message = (
            "This host suspended %s since boot (/sys/power/suspend_stats/success) while the NVIDIA driver runs with "
            "PreserveVideoMemoryAllocations 0: video memory is not saved across suspend, and CUDA programs fail or fall back to "
            "the CPU after resume until nvidia_uvm is reloaded." % times
        )
    else:
        message = (
            "This host suspends (%s since boot) and the NVIDIA driver runs with PreserveVideoMemoryAllocations 1, but %s %s not "
            "enabled: the driver saves video memory only when nvidia-suspend.service asks it to, and otherwise refuses to "
            'suspend ("System Power Management attempted without driver procfs suspend interface").'
            % (times, " and ".join(not_enabled), "is" if len(not_enabled) == 1 else "are")
        )
    fixes = f.fixes
    installed = [unit for unit in SUSPEND_UNITS if devices.units.get(unit)]
    missing = [unit for unit in needed if unit not in installed]
    enable = [unit for unit in installed if unit not in devices.enabled_units]
    option = "options nvidia NVreg_PreserveVideoMemoryAllocations=1 NVreg_TemporaryFilePath=/var/tmp"
    steps = []
    if missing:
        evidence.append(Evidence("/usr/lib/systemd/system", "no %s" % " or ".join(missing)))
        steps.append(
            fixes.advice(
                "Install NVIDIA's suspend units first (%s: no unit file in %s); they ship with the driver%s. Then preserve video "
                "memory: `%s` in %s, `systemctl enable %s`, and a reboot (the option without the units makes suspend fail)"
                % (
                    ", ".join(missing),
                    ", ".join(UNIT_DIRS),
                    _units_package(f),
                    option,
                    POWER_CONF,
                    " ".join(SUSPEND_UNITS),
                )
            )
        )
    else:
        actions = []
        preserve = devices.preserve
        if preserve is None or preserve[2] != "1":
            if preserve is not None and preserve[0].startswith("/etc/"):
                actions.append(CommentLines(preserve[0], ((preserve[1], preserve[3]),)))
                evidence.append(Evidence(preserve[0], preserve[3].strip(), preserve[1]))
            actions.append(WriteFile(POWER_CONF, (option,), True))
        if enable:
            actions.append(Run(("systemctl", "enable") + tuple(enable)))
        parts = []
        if value == "0":
            parts.append("the driver option (a driver loaded from the initramfs needs the initramfs rebuilt too)")
        if enable:
            parts.append("%s enabled, which save and restore it" % ", ".join(enable))
        summary = "Preserve video memory across suspend: %s" % " and ".join(parts)
        if "nvidia-hibernate.service" not in installed:
            summary += " (no nvidia-hibernate.service is installed: hibernation is not covered)"
        steps.append(fixes.step(summary, actions, True, host_wide=False))
        if value == "0":
            steps.append(fixes.step("Then reboot, which loads the driver with the option", [Reboot()], True, host_wide=False))
    if value == "0":
        steps.append(
            fixes.advice(
                "Until then, if CUDA fails after a resume: with no CUDA program running, reload nvidia_uvm "
                "(`rmmod nvidia_uvm`, then `modprobe nvidia_uvm`)",
                persistent=False,
            )
        )
    steps.append(
        fixes.step(
            "Or, on a server that should never sleep, mask the sleep targets",
            [SystemdUnit("mask", unit) for unit in SLEEP_TARGETS],
            True,
            host_wide=False,
        )
    )
    return [Issue(message, evidence, steps, severity=Severity.MEDIUM)]


def _units_package(f) -> str:
    """Which package ships NVIDIA's suspend units, where the distribution tells."""
    release = f.os_release
    fields = release.fields if release else {}
    ids = {fields.get("ID", "")} | set(fields.get("ID_LIKE", "").split())
    if "debian" in ids and "ubuntu" not in ids:
        return " (Debian: the nvidia-suspend-common package)"
    if ids & {"fedora"}:
        return " (Fedora with RPM Fusion: xorg-x11-drv-nvidia-power)"
    if "arch" in ids:
        return " (Arch: nvidia-utils)"
    return "'s packages or NVIDIA's installer, in /usr/lib/systemd/system"


@rule(
    "gpu.dev-char-links",
    "/dev/char links missing for NVIDIA devices under the systemd cgroup driver",
    Severity.MEDIUM,
    needs=("container_runtimes",),
    uses=("container", "gpu_devices", "fixes"),
    host_only="the container engine's cgroup driver and the host's /dev/char links",
)
def dev_char_links(f):
    """A container engine manages cgroups through systemd and the NVIDIA device nodes have no
    /dev/char/MAJOR:MINOR links.

    runc, under the systemd cgroup driver, gives systemd the container's device rules by
    /dev/char path; NVIDIA's nodes are made by mknod outside udev, so those links do not
    exist, and the next `systemctl daemon-reload` (which unattended upgrades run) re-applies
    the unit's rules without them: containers lose their GPUs with "Failed to initialize
    NVML: Unknown Error" and must be recreated. Medium: nothing fails until a reload, and
    then only running containers. The systemd driver is Docker's `native.cgroupdriver=systemd`
    (its default on cgroup v2 under systemd) or `SystemdCgroup = true` in Kubernetes'
    containerd; Podman is not judged. Inside a container and in an image this is skipped
    (host configuration, made at run time).

    Fix (NVIDIA's NOTICE): `nvidia-ctk system create-dev-char-symlinks --create-all` now, and
    at every driver bind with the udev rule the NOTICE gives, installed as
    /etc/udev/rules.d/71-nvidia-dev-char.rules; or switch Docker to the cgroupfs driver.

    Reference: NVIDIA NOTICE "Containers losing access to GPUs with error: Failed to
    initialize NVML: Unknown Error" (NVIDIA/nvidia-container-toolkit#48,
    NVIDIA/nvidia-docker#1730, NVIDIA/gpu-operator#485) and the toolkit's troubleshooting
    page; still reported in nvidia-container-toolkit#1227 (2025), nvidia-docker#1671, #1678,
    dstackai/dstack#2601.
    """
    rt = f.container_runtimes
    drivers = []
    docker = rt.engine("docker")
    if docker and rt.docker and not rt.docker.problem:
        driver = rt.docker.cgroup_driver or ("systemd" if rt.cgroup2 and rt.systemd else "cgroupfs")
        if driver == "systemd":
            how = "exec-opts in %s" % rt.docker.path if rt.docker.cgroup_driver else "its default on cgroup v2 under systemd"
            drivers.append(("Docker", how, rt.docker.path))
    containerd = rt.engine("containerd")
    if containerd and rt.containerd and not rt.containerd.cri_disabled and rt.containerd.systemd_cgroup:
        drivers.append(("containerd", "SystemdCgroup = true for %s" % ", ".join(rt.containerd.systemd_cgroup), rt.containerd.path))
    if not drivers:
        return Pass("no Docker or Kubernetes containerd with the systemd cgroup driver")
    devices = f.gpu_devices
    if not devices:
        return Skip(devices.reason)
    missing = sorted((key for key, present in devices.char_links.items() if not present), key=lambda k: tuple(int(p) for p in k.split(":")))
    if not devices.char_links:
        return Pass("no NVIDIA device nodes here")
    if not missing:
        return Pass("/dev/char links exist for the NVIDIA device nodes")
    by_key = {"%d:%d" % (i.node.major, i.node.minor): i.path for i in devices.nvidia if i.node is not None}
    message = (
        "%s manage%s container cgroups through systemd (%s), and %d NVIDIA device node%s no /dev/char link (%s): after "
        'the next `systemctl daemon-reload` running containers lose their GPUs ("Failed to initialize NVML: Unknown Error").'
        % (
            " and ".join(name for name, _how, _path in drivers),
            "s" if len(drivers) == 1 else "",
            "; ".join(how for _name, how, _path in drivers),
            len(missing),
            " has" if len(missing) == 1 else "s have",
            ", ".join("/dev/char/%s for %s" % (key, by_key.get(key, "?")) for key in missing[:8]) + (" …" if len(missing) > 8 else ""),
        )
    )
    evidence = [Evidence("/dev/char/" + key, "not present") for key in missing[:16]] + [Evidence(path, how) for _n, how, path in drivers]
    fixes = f.fixes
    ctk = rt.toolkit.get("nvidia-ctk", "/usr/bin/nvidia-ctk")
    rule_line = 'ACTION=="add", DEVPATH=="/bus/pci/drivers/nvidia", RUN+="%s system create-dev-char-symlinks --create-all"' % ctk
    steps = _steps(
        _install_toolkit(f, rt),
        fixes.step("Create the links now", [Run((ctk, "system", "create-dev-char-symlinks", "--create-all"), NOW)], False, host_wide=False),
        fixes.step(
            "Create them whenever the nvidia driver binds, with the udev rule NVIDIA's NOTICE gives",
            [
                WriteFile(
                    DEV_CHAR_RULE, ("# /dev/char links for the NVIDIA device nodes (NVIDIA/nvidia-container-toolkit#48)", rule_line), True
                ),
                Run(("udevadm", "control", "--reload"), NOW),
            ],
            True,
            host_wide=False,
        ),
    )
    if any(name == "Docker" for name, _how, _path in drivers) and len(drivers) == 1:
        steps.append(
            fixes.step(
                'Or switch Docker to the cgroupfs driver: "exec-opts": ["native.cgroupdriver=cgroupfs"] in %s, then restart it '
                "(not where kubelet expects the systemd driver)" % rt.docker.path,
                [EditByHand(rt.docker.path), Run(("systemctl", "restart", "docker"), NOW)],
                True,
                host_wide=False,
            )
        )
    return [Issue(message, evidence, steps)]
