"""GPU drivers: a kernel without the driver's module, modules built for another kernel, the
loaded driver against its libraries and against the CUDA toolkits, and nouveau in the way."""

from __future__ import annotations

from ai_doctor.engine import host_side, rule
from ai_doctor.facts.gpu import APT_LISTS, APT_SOURCE_PARTS, alternative_folder
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip, Step
from ai_doctor.remedy.actions import NOW, Reboot, Run, Show, WriteFile
from ai_doctor.shell import quote

# The oldest driver each CUDA release runs on (Linux x86_64). From 11.0 on, minor-version
# compatibility lets any release of a major family run on that family's floor, with a
# limited feature set (no JIT of its newer PTX); the toolkit's own driver gives it all.
# Sources: NVIDIA CUDA Toolkit Release Notes, "CUDA Toolkit and Corresponding Driver
# Versions" (GA releases), and CUDA Compatibility, "Minor Version Compatibility" (floors).
MINOR_COMPAT_FLOOR = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
TOOLKIT_DRIVER = {
    (7, 0): "346.46",
    (7, 5): "352.31",
    (8, 0): "375.26",
    (9, 0): "384.81",
    (9, 1): "390.46",
    (9, 2): "396.26",
    (10, 0): "410.48",
    (10, 1): "418.39",
    (10, 2): "440.33",
    (11, 0): "450.51.05",
    (11, 1): "455.23",
    (11, 2): "460.27.03",
    (11, 3): "465.19.01",
    (11, 4): "470.42.01",
    (11, 5): "495.29.05",
    (11, 6): "510.39.01",
    (11, 7): "515.43.04",
    (11, 8): "520.61.05",
    (12, 0): "525.60.13",
    (12, 1): "530.30.02",
    (12, 2): "535.54.03",
    (12, 3): "545.23.06",
    (12, 4): "550.54.14",
    (12, 5): "555.42.02",
    (12, 6): "560.28.03",
    (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
}


class _Numeric(tuple):
    """A dotted numeric version (550.127.05, 12.4.1) as numbers, with packaging's
    major/minor; importing packaging costs more than the rest of a run's rules."""

    @property
    def major(self) -> int:
        return self[0]

    @property
    def minor(self) -> int:
        return self[1] if len(self) > 1 else 0


def _older(a: str, b: str) -> bool:
    """Whether version ``a`` is older than ``b``; through packaging when either is not plain
    dotted numbers (the two kinds do not compare with each other)."""
    first, second = _version(a), _version(b)
    if isinstance(first, _Numeric) and isinstance(second, _Numeric):
        return first < second
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) < Version(b)
    except InvalidVersion:
        return False


def _version(text):
    """A comparable version: dotted numbers as numbers, anything else through packaging."""
    text = str(text or "")
    parts = text.split(".")
    if all(part.isdigit() and part.isascii() and len(part) <= 9 for part in parts) and len(parts) <= 4:
        return _Numeric(int(part) for part in parts)
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


def _target_words(f, mods, first: bool) -> str:
    if not f.running:
        return "kernel %s, which the image boots by default" % mods.release
    if first:
        return "the running kernel %s" % mods.release
    return "kernel %s, which the next boot starts (%s)" % (mods.release, f.default_boot.how)


def _family(f) -> str:
    distro = f.os_release
    return distro.family if distro else "linux"


def _backports(release: str) -> bool:
    """Whether a Debian kernel release comes from backports: 6.12.12+bpo-amd64 (bookworm on),
    6.1.0-0.deb11.17-amd64 (a newer release's kernel rebuilt for an older one), 5.10.0-0.bpo.15-amd64."""
    return "+bpo" in release or ".bpo." in release or "-0.deb" in release


def _headers_step(f, release: str):
    """Install the headers DKMS builds against: from the suite the kernel came from, after
    `apt-get update` where the image has no package lists (a Dockerfile's `rm -rf
    /var/lib/apt/lists/*`, Debian's minimal images)."""
    family = _family(f)
    if family == "rhel":
        return f.fixes.step(
            "Install the kernel headers for %s, which DKMS builds against" % release,
            [Run(("dnf", "install", "-y", "kernel-devel-%s" % release))],
            True,
            host_wide=False,
        )
    if family != "debian":
        return Step("Install the kernel headers (development files) for %s, which DKMS builds against" % release, (), True, True)
    package = "linux-headers-%s" % release
    suite = None
    summary = "Install the kernel headers for %s, which DKMS builds against" % release
    if _backports(release):
        distro = f.os_release
        codename = distro.fields.get("VERSION_CODENAME") if distro else None
        if not codename:
            return f.fixes.advice(
                "Install the kernel headers for %s, which DKMS builds against, from the backports suite the kernel came from "
                "(/etc/os-release names no VERSION_CODENAME): `apt-get install -t CODENAME-backports %s`" % (release, package)
            )
        suite = "%s-backports" % codename
        apt = f.apt
        if apt and suite not in apt.suites:
            uri = (apt.suites.get(codename) or (None, "http://deb.debian.org/debian"))[1]
            return f.fixes.advice(
                "Install the kernel headers for %s, which DKMS builds against, from %s, where the kernel came from: no apt "
                "source names that suite, so `apt-get install` cannot find them. Add it (the line `deb %s %s main` in "
                "%s/backports.list), then run `apt-get update` and `apt-get install -t %s %s`"
                % (release, suite, uri, suite, APT_SOURCE_PARTS, suite, package)
            )
        summary += " (from %s, where the kernel came from)" % suite
    actions, note = _apt_install(f, (("-t", suite) if suite else ()) + (package,), suite)
    return f.fixes.step(summary + note, actions, True, host_wide=False)


def _apt_install(f, arguments, suite=None):
    """``apt-get install -y ARGUMENTS``, after `apt-get update` where apt holds no package list
    (of ``suite``): it knows only the packages of the lists it holds. Returns (actions, words
    for the step)."""
    apt = f.apt
    actions, note = [], ""
    if apt is not None and apt.lists is not None and not (apt.lists and (suite is None or suite in apt.listed)):
        actions.append(Run(("apt-get", "update")))
        note = "; %s holds no package list%s, so update them first" % (APT_LISTS, " of %s" % suite if suite and apt.lists else "")
    # A DKMS package builds in its postinst, and so do kernel headers (Debian's
    # /etc/kernel/header_postinst.d/dkms): both need /proc, inside an image's chroot too.
    proc = any("dkms" in word or word.startswith("linux-headers-") for word in arguments)
    actions.append(Run(("apt-get", "install", "-y") + tuple(arguments), proc=proc))
    return actions, note


def _dkms_steps(f, nv, release: str, force: bool = False):
    """Build the driver's DKMS module for ``release``: its last log, headers, the build."""
    source = nv.dkms_source
    build = ("dkms", "install") + (("--force",) if force else ()) + (source.ref, "-k", release)
    fixes = f.fixes
    # In an image both run through chroot, where the image's own links resolve.
    status = Show("dkms status %s" % quote(source.module), needs_root=bool(fixes.image), proc=True)
    log = source.failed_log or source.log_for(release)
    if source.failed_log:
        summary = "See why the last DKMS build failed (a missing header package, a compiler too old or too new for the kernel)"
    elif log:
        summary = "See the log of DKMS's build of %s for %s" % (source.ref, release)
    else:
        summary = (
            "See what DKMS has built: it has not built %s for %s (no make.log under %s): no build was tried for this kernel, "
            "or it stopped before compiling, as it does when the kernel's headers are missing" % (source.ref, release, source.path)
        )
    actions = [status] + ([Show("tail -n 30 %s" % quote(log), needs_root=bool(fixes.image))] if log else [])
    return [
        fixes.step(summary, actions, None, host_wide=False, needs_root=False),
        _headers_step(f, release),
        fixes.step("Build and install the nvidia module for %s" % release, [Run(build, proc=True)], True, host_wide=False),
    ]


def _branch(nv) -> str:
    versions = nv.library_versions or [source.version for source in nv.dkms]
    return versions[-1].split(".", 1)[0] if versions else "VERSION"


@rule(
    "gpu.driver-missing-for-kernel",
    "NVIDIA driver installed without a module for the kernel",
    Severity.CRITICAL,
    needs=("nvidia", "gpu_modules"),
    uses=("running", "default_boot", "os_release", "fixes", "apt", "gsp_firmware"),
    host_only="the kernel modules (/lib/modules), DKMS trees and boot entries",
)
def driver_missing(f):
    """The NVIDIA driver's user space is installed (libnvidia-ml, libcuda, nvidia-smi or a DKMS
    source tree) but the kernel — the running one, in an image the one it boots by default —
    has no nvidia module in its modules folder.

    The driver cannot load: nvidia-smi says it "couldn't communicate with the NVIDIA driver"
    and CUDA finds no device. This is what a kernel update leaves when the DKMS build of the
    driver failed for the new kernel (its headers missing, a compiler mismatch), or when the
    distribution's prebuilt module package for the new kernel was not installed. On a running
    system, the kernel the next boot starts is checked too: high, because it fails only after
    the reboot.

    Fix: with DKMS, read the build log, install the kernel's headers and build the module for
    that kernel (`dkms install nvidia/VERSION -k RELEASE`); otherwise install the driver's
    kernel module package built for that kernel. DKMS keeps build/make.log only after a
    failed build (a finished one moves it to RELEASE/ARCH/log/make.log), so where neither is
    there the step says DKMS never built for that kernel instead of naming a missing file.
    The headers install after `apt-get update` where /var/lib/apt/lists holds no package
    list (removed by Dockerfiles and minimal images: apt then knows no package), and a
    Debian backports kernel (6.12.12+bpo-amd64) takes them from CODENAME-backports (`apt-get
    install -t bookworm-backports`); where no apt source names that suite, the step says so.

    Reference: dkms(8) and its actual_build (make.log); modules.dep(5); apt-get(8);
    sources.list(5); Debian Backports Instructions (backports.debian.org); NVIDIA Driver
    Installation Guide.
    """
    nv = f.nvidia
    if not nv.installed:
        return Pass("no NVIDIA driver is installed (no libnvidia-ml, libcuda, nvidia-smi or DKMS tree)")
    issues = []
    checked = []
    for position, mods in enumerate(f.gpu_modules):
        checked.append(mods.release)
        if "nvidia" in mods.found:
            continue
        loaded_here = position == 0 and f.running and nv.loaded
        gone = [path for name, path in mods.stale if name == "nvidia"]
        if not mods.base:
            where = "no /lib/modules/%s at all" % mods.release
        elif gone:
            where = "%s still names %s, but the file is gone" % (mods.index, gone[0])
        elif mods.index.endswith("modules.dep"):
            where = "%s lists none" % mods.index
        else:
            where = "none in %s" % mods.index
        if loaded_here:
            message = (
                "nvidia %s is loaded, but there is no nvidia module for %s on disk any more (%s): it was removed since it "
                "loaded (a driver upgrade whose build failed leaves this), so after the next reboot this kernel has no driver."
                % (nv.loaded, _target_words(f, mods, True), where)
            )
        else:
            message = (
                "The NVIDIA driver's user space is installed (%s), but there is no nvidia module for %s (%s): the driver "
                "cannot load, nvidia-smi cannot reach it and CUDA finds no GPU."
                % (_installed_words(nv), _target_words(f, mods, position == 0), where)
            )
        if nv.dkms:
            message += " DKMS holds the driver's source (%s), so its build for this kernel failed or never ran." % ", ".join(
                source.ref for source in nv.dkms
            )
        evidence = [Evidence(lib.path, lib.version) for lib in nv.libraries[:4]]
        evidence += [Evidence(source.path, "DKMS source") for source in nv.dkms]
        evidence.append(Evidence(mods.index if mods.base else "/lib/modules/%s" % mods.release, "no nvidia module"))
        if nv.dkms:
            steps = _dkms_steps(f, nv, mods.release)
        elif _debian_dkms_package(f, nv) and len(nv.library_versions) == 1:
            # Debian's libraries without its DKMS package: install the one of their version.
            steps = _rebuild_or_package(f, nv, mods.release)
        else:
            steps = [
                Step(
                    "Install the NVIDIA kernel module package built for %s, matching driver branch %s (Ubuntu: "
                    "linux-modules-nvidia-%s-server-%s; RHEL: the driver's precompiled kmod stream for this kernel), or the "
                    "driver's DKMS package" % (mods.release, _branch(nv), _branch(nv), mods.release),
                    (),
                    True,
                    True,
                )
            ]
        if f.running and position == 0 and not loaded_here:
            steps.append(f.fixes.step("Load it", [Run(("modprobe", "nvidia"), NOW), Show("nvidia-smi")], False, host_wide=False))
        severity = Severity.HIGH if f.running and (position > 0 or loaded_here) else None
        issues.append(Issue(message, evidence, steps, severity=severity))
    return issues or Pass("the nvidia module is installed for %s" % " and ".join(checked))


def _installed_words(nv) -> str:
    parts = []
    if nv.library_versions:
        parts.append("libraries %s" % ", ".join(nv.library_versions))
    if nv.smi:
        parts.append(nv.smi)
    if nv.dkms:
        parts.append("DKMS %s" % ", ".join(source.ref for source in nv.dkms))
    return "; ".join(parts)


_VERMAGIC_MODULES = ("nvidia", "amdgpu")


@rule(
    "gpu.module-vermagic-mismatch",
    "GPU driver module built for another kernel",
    Severity.CRITICAL,
    needs=("gpu_modules",),
    uses=("nvidia", "running", "default_boot", "os_release", "fixes", "apt", "gsp_firmware"),
    host_only="the kernel modules (/lib/modules)",
)
def vermagic_mismatch(f):
    """The nvidia (or amdgpu) module installed for a kernel was built for another kernel.

    The kernel compares a module's vermagic string with its own before loading it. Without
    module versioning the whole string must match, release included, and the load fails with
    "version magic '…' should be '…'". With CONFIG_MODVERSIONS (every distribution kernel;
    the module's vermagic then says `modversions`) the release part is skipped and each
    symbol's checksum is compared instead, so a module from another kernel loads only if
    nothing it uses changed — RHEL's weak-updates links rely on that within one kABI, and are
    not reported; across other kernels it usually fails with "disagrees about version of
    symbol" (high). The flags after the release (SMP, preempt, mod_unload, modversions) must
    match the kernel's own modules in any case.

    Fix: rebuild the module for that kernel (DKMS: `dkms install --force nvidia/VERSION -k
    RELEASE`), or install the module package built for it, then `depmod`.

    A module without vermagic (not built by kbuild, or its field stripped) loads only on a
    kernel built with CONFIG_MODULE_FORCE_LOAD, which taints itself (high); an empty one is
    compared and refused like any other. A .modinfo read only in part whose part holds no
    vermagic cannot be judged, and says so (low).

    Reference: kernel/module/version.c (same_magic), kernel/module/main.c (check_modinfo);
    Documentation/kbuild/modules.rst (Module Versioning).
    """
    issues = []
    looked = []
    for position, mods in enumerate(f.gpu_modules):
        for name in _VERMAGIC_MODULES:
            info = mods.found.get(name)
            if info is None:
                continue
            looked.append("%s for %s" % (name, mods.release))
            if info.problem:
                issues.append(
                    Issue(
                        "The %s module for %s (%s) could not be read: %s." % (name, mods.release, info.path, info.problem),
                        [Evidence(info.path, info.problem)],
                        severity=Severity.LOW,
                    )
                )
                continue
            issue = _vermagic_issue(f, mods, info, position == 0)
            if issue is not None:
                issues.append(issue)
            elif info.vermagic_release != mods.release:
                looked[-1] += " (a weak-updates link to the build for %s, loaded on kABI checksums)" % info.vermagic_release
    if not looked:
        return Skip("no nvidia or amdgpu module is installed for the kernel")
    return issues or Pass("each fits the kernel it is installed for: %s" % ", ".join(looked))


def _vermagic_issue(f, mods, info, first: bool):
    magic = info.field("vermagic") or ""
    built = info.vermagic_release
    flags = magic.split()[1:]
    reference = mods.reference.field("vermagic") if mods.reference and mods.reference.fields else None
    own_flags = reference.split()[1:] if reference else None
    evidence = [Evidence(info.path, "vermagic=" + magic.strip())]
    if reference:
        evidence.append(Evidence(mods.reference.path, "vermagic=" + reference.strip()))
    target = _target_words(f, mods, first)
    if "vermagic" not in (info.fields or {}):
        message = (
            "The %s module for %s (%s) has no vermagic in its .modinfo, which every module kbuild builds has: the "
            "kernel refuses to load it (Exec format error) unless it was built with CONFIG_MODULE_FORCE_LOAD, which "
            'loads it and taints itself ("bad vermagic: kernel tainted").' % (info.name, target, info.path)
        )
        return Issue(
            message, [Evidence(info.path, "no vermagic in .modinfo")], _rebuild_steps(f, info, mods.release), severity=Severity.HIGH
        )
    if not magic.strip():
        message = "The %s module for %s (%s) has an empty vermagic: the kernel refuses it (\"version magic '' should be '%s …'\")." % (
            info.name,
            target,
            info.path,
            mods.release,
        )
        return Issue(message, evidence, _rebuild_steps(f, info, mods.release))
    if own_flags is not None and flags != own_flags:
        message = (
            "The %s module for %s (%s) was built with vermagic `%s`, and the kernel's own modules say `%s`: the flags "
            'differ, so the kernel refuses it ("version magic … should be …").'
            % (info.name, target, info.path, magic.strip(), reference.strip())
        )
        return Issue(message, evidence, _rebuild_steps(f, info, mods.release))
    if built == mods.release:
        return None
    if "modversions" in flags:
        if "/weak-updates/" in info.path:
            return None  # RHEL's kABI: linked on purpose, loads while the symbols match
        message = (
            "The %s module installed for %s (%s) was built for %s. With module versioning the kernel checks each "
            "symbol's checksum instead of the release, so it loads only if nothing it uses changed between the two "
            'kernels; across kernel versions it usually fails with "disagrees about version of symbol".'
            % (info.name, target, info.path, built)
        )
        return Issue(message, evidence, _rebuild_steps(f, info, mods.release), severity=Severity.HIGH)
    message = "The %s module installed for %s (%s) was built for %s: the kernel refuses it (\"version magic '%s' should be '%s …'\")." % (
        info.name,
        target,
        info.path,
        built,
        magic.strip(),
        mods.release,
    )
    return Issue(message, evidence, _rebuild_steps(f, info, mods.release))


def _rebuild_steps(f, info, release: str):
    nv = f.nvidia
    if info.name == "nvidia" and nv and nv.dkms:
        steps = _dkms_steps(f, nv, release, force=True)
        steps.append(f.fixes.step("Refresh the module index", [Run(("depmod", release))], True, host_wide=False))
        return steps
    return [
        Step(
            "Install the %s module built for %s (the driver's DKMS package, or its module package for this kernel), "
            "then run `depmod %s`" % (info.name, release, release),
            (),
            True,
            True,
        )
    ]


@rule(
    "gpu.driver-library-mismatch",
    "NVIDIA kernel module and libraries disagree",
    Severity.CRITICAL,
    needs=("nvidia",),
    uses=("running", "gpu_modules", "default_boot", "os_release", "fixes", "apt", "gsp_firmware", "container", "mounts"),
)
def library_mismatch(f):
    """The loaded NVIDIA kernel module's version differs from the user-space libraries'
    (libnvidia-ml, libcuda): "Failed to initialize NVML: Driver/library version mismatch",
    and CUDA fails to initialise.

    Typical after a driver package upgrade without a reboot: the new libraries are in place,
    the old module still runs. In an image, the module installed for the default kernel is
    compared with the libraries: the same failure from the first boot. The libraries are the
    files that the names programs load (libcuda.so.1, libnvidia-ml.so.1) lead to, link by link
    inside the root: on Debian through update-alternatives to the selected flavour's folder
    (nvidia/current, nvidia/tesla-535 …). Debian's libraries and its nvidia-kernel-dkms only
    recommend each other's version, so a held DKMS package leaves an old module under new
    libraries.

    Fix: reboot; or, when nothing uses the GPU, unload the driver's modules and load the new
    one. When the module on disk is itself the old version (its DKMS build failed), rebuild
    it first; when DKMS holds no source of the libraries' version, install the DKMS package of
    that version (on Debian `apt-get install --allow-change-held-packages
    nvidia-kernel-dkms=VERSION-*`).

    Inside a container the loaded module is the host's and the libraries are the container's.
    Where they are bind mounts (the NVIDIA Container Toolkit mounts the host's own libraries
    into the container, see mountinfo), the host's driver was upgraded without a reboot: the
    fix is the host's reboot. Where they are files of the image itself, the image carries
    driver libraries of its own (a Dockerfile that installed a driver or cuda-drivers
    package): they must go, so the toolkit's mounts of the host's libraries are used.

    Reference: NVIDIA Driver Installation Guide; nvidia-smi(1); update-alternatives(1);
    Debian nvidia-graphics-drivers (nvidia-alternative.postinst, libcuda1 and
    nvidia-kernel-dkms control fields); NVIDIA Container Toolkit documentation
    (libnvidia-container mounts the driver's user-space libraries from the host).
    """
    nv = f.nvidia
    versions = nv.library_versions
    if not versions:
        return Skip("no NVIDIA user-space library (libnvidia-ml.so.VERSION, libcuda.so.VERSION) to compare with")
    first = f.gpu_modules[0] if f.gpu_modules else None
    on_disk = first.found.get("nvidia") if first else None
    disk_version = on_disk.field("version") if on_disk else None
    if f.running:
        if not nv.loaded:
            return Skip("the nvidia module is not loaded (nothing to compare the libraries with)")
        kernel_version, source = nv.loaded, nv.loaded_from
    else:
        if not disk_version and on_disk is not None and on_disk.partial:
            return Skip("the .modinfo of %s was read only in part, and its version is not in that part" % on_disk.path)
        if not disk_version:
            return Skip("no nvidia module with a version for the kernel the image boots")
        kernel_version, source = disk_version, on_disk.path
    if versions == [kernel_version]:
        return Pass("the nvidia module and the libraries are both %s" % kernel_version)
    evidence = [Evidence(source, kernel_version)] + [Evidence(lib.path, lib.shown) for lib in (nv.links or nv.libraries)[:4]]
    libs = ", ".join(versions)
    if not f.running:
        message = (
            "The nvidia module the image's default kernel loads is %s, but the libraries are %s: from the first boot, "
            'nvidia-smi fails with "Driver/library version mismatch" and CUDA does not start.' % (kernel_version, libs)
        )
        steps = _rebuild_or_package(f, nv, first.release, kernel_version, built=True) + _select_flavour(f, nv, kernel_version)
        return Issue(message + _dkms_words(nv, kernel_version), evidence, steps)
    message = (
        'The loaded nvidia module is %s (%s), but the user-space libraries are %s: nvidia-smi fails with "Failed to '
        'initialize NVML: Driver/library version mismatch" and CUDA does not start.' % (kernel_version, source, libs)
    )
    fixes = f.fixes
    container = f.container
    if container and container.detected:
        return _container_mismatch(f, nv, message, evidence)
    if first is not None and first.base and on_disk is None:
        message += (
            " And there is no nvidia module for this kernel on disk (%s): the upgrade's build failed, so a reboot would "
            "leave the host without a driver. Build it first." % (first.index)
        )
        steps = _rebuild_or_package(f, nv, first.release, kernel_version) + _then_load(f, nv)
        return Issue(message + _dkms_words(nv, kernel_version), evidence, steps)
    if disk_version and disk_version not in versions:
        message += " The module on disk for this kernel is %s too (%s), so a reboot alone does not fix it." % (disk_version, on_disk.path)
        evidence.append(Evidence(on_disk.path, "version=%s" % disk_version))
        steps = _rebuild_or_package(f, nv, first.release, kernel_version, built=True) + _then_load(f, nv)
        return Issue(message + _dkms_words(nv, kernel_version), evidence, steps + _select_flavour(f, nv, kernel_version))
    message += " The driver was upgraded and the old module still runs."
    steps = [
        fixes.reboot_step("Reboot, which loads the new module"),
        fixes.step(
            "Or, when nothing uses the GPU, reload the driver: see what holds it, stop those, unload the modules and load the new one",
            _reload_actions(nv),
            False,
            host_wide=False,
        ),
    ]
    return Issue(message, evidence, steps)


def _container_mismatch(f, nv, message: str, evidence):
    """A mismatch seen from inside a container: the host's module against libraries that the
    toolkit mounted from the host, or that the image brought along."""
    mounts = f.mounts
    points = {mount.mountpoint for mount in mounts.mounts} if mounts else set()
    files = [lib.path for lib in nv.libraries]
    mounted = [path for path in files if path in points]
    own = [path for path in files if path not in points]
    if mounted and not own:
        message += (
            " The libraries are the host's, mounted into this container by the NVIDIA Container Toolkit (%s): the host's "
            "driver was upgraded and its old module still runs. Restarting the container does not help." % ", ".join(mounted[:2])
        )
        return Issue(message, evidence, [f.fixes.step("Reboot, which loads the new module", [Reboot()], True)])
    message += (
        " The libraries are files of this container's image (%s), not the host's driver mounted in by the NVIDIA Container "
        "Toolkit: the image brings a driver of its own." % ", ".join(own[:2])
    )
    step = Step(
        "Rebuild the image without driver libraries (no driver or cuda-drivers package, no libcuda.so.* or libnvidia-ml.so.* "
        "copied in), and start it with the GPUs handed over by the NVIDIA Container Toolkit (docker run --gpus all, or a CDI "
        "device), which mounts the host's own libraries",
        (),
        False,
        True,
    )
    return Issue(message, evidence, [step])


def _dkms_words(nv, module_version: str) -> str:
    """Why a rebuild alone cannot help: DKMS holds no source of the libraries' version."""
    versions = nv.library_versions
    if not nv.dkms or any(source.version in versions for source in nv.dkms):
        return ""
    held = ", ".join(source.ref for source in nv.dkms)
    other = _other_flavour(nv, module_version)
    if other is not None:
        return (
            " The libraries are those of the %s flavour, which update-alternatives selects, while DKMS holds only %s, "
            "whose libraries (%s flavour) are installed but not selected: in auto mode update-alternatives selects the "
            "flavour of highest priority, so installing another one can move it." % (", ".join(sorted(_selected(nv))), held, other[0])
        )
    return (
        " DKMS holds only %s, not the libraries' version: its package was held back or not upgraded with them, so "
        "rebuilding what DKMS has builds the old module again." % held
    )


def _reload_actions(nv):
    """Stop what holds the devices, unload every nvidia module that is loaded (dependents
    first), load the new driver and start the services again."""
    modules = nv.modules_loaded or ("nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia")
    actions = [Show("fuser -v /dev/nvidia*", needs_root=True)]
    if nv.services:
        actions.append(Run(("systemctl", "stop") + tuple(nv.services), NOW))
    # Loaded again in the reverse order, nvidia first: the new version of each.
    actions += [Run(("rmmod",) + tuple(modules), NOW), Run(("modprobe", "-a") + tuple(reversed(modules)), NOW)]
    if nv.services:
        actions.append(Run(("systemctl", "start") + tuple(nv.services), NOW))
    actions.append(Show("nvidia-smi"))
    return actions


def _then_load(f, nv):
    """After a rebuild, the new module still has to replace the running one."""
    fixes = f.fixes
    return [
        fixes.reboot_step("Then reboot, which loads the new module"),
        fixes.step("Or, when nothing uses the GPU, reload the driver instead", _reload_actions(nv), False, host_wide=False),
    ]


def _rebuild_or_package(f, nv, release: str, module_version=None, built: bool = False):
    """Steps to a module of the libraries' version for ``release`` (``built``: DKMS built one
    of another version, ``module_version``, for it, so its headers are there)."""
    versions = nv.library_versions
    if any(source.version in versions for source in nv.dkms):
        return _dkms_steps(f, nv, release, force=True)
    package = _debian_dkms_package(f, nv)
    if package and len(versions) == 1:
        # DKMS holds no source of the libraries' version (its package held back while they
        # were upgraded): installing the package of that version registers and builds it.
        held = ", ".join(source.ref for source in nv.dkms)
        fixes = f.fixes
        # The DKMS package depends on its GSP firmware package at the same version: one held
        # beside it would block the install.
        firmware = tuple("%s=%s-*" % (name, versions[0]) for name in f.gsp_firmware or ())
        actions, note = _apt_install(f, ("--allow-change-held-packages", "%s=%s-*" % (package, versions[0])) + firmware)
        steps = []
        if nv.dkms and _other_flavour(nv, module_version) is None:
            steps.append(
                fixes.step(
                    "See whether %s is held back (DKMS holds only %s)" % (package, held),
                    [Show("apt-mark showhold", needs_root=bool(fixes.image))],
                    None,
                    host_wide=False,
                    needs_root=False,
                )
            )
        if not built:
            steps.append(_headers_step(f, release))
        steps.append(
            fixes.step(
                "Install %s %s, the libraries' version, which DKMS then builds for each kernel whose headers are installed "
                "(a hold stays in place)%s" % (package, versions[0], note),
                actions,
                True,
                host_wide=False,
            )
        )
        return steps
    return [
        Step(
            "Install the kernel module package of the same driver version as the libraries (%s) for %s" % (", ".join(versions), release),
            (),
            True,
            True,
        )
    ]


def _flavour(path: str):
    """Debian's driver flavour a library file lies in (…/nvidia/tesla-535/libcuda.so.V →
    ``tesla-535``); None outside those folders."""
    parts = path.split("/")
    if len(parts) > 3 and parts[-3] == "nvidia" and alternative_folder(parts[-2]):
        return parts[-2]
    return None


def _debian_dkms_package(f, nv):
    """Debian's DKMS package of the flavour the libraries come from: current →
    nvidia-kernel-dkms (nvidia-open-kernel-dkms where DKMS holds nvidia-current-open),
    tesla-535 → nvidia-tesla-535-kernel-dkms (each package's dkms.conf PACKAGE_NAME is
    nvidia-FLAVOUR); None where the libraries are not in such a folder."""
    flavours = {_flavour(lib.target or lib.path) for lib in nv.links}
    if _family(f) != "debian" or len(flavours) != 1 or None in flavours:
        return None
    flavour = flavours.pop()
    if flavour == "current":
        return "nvidia-open-kernel-dkms" if any(s.module == "nvidia-current-open" for s in nv.dkms) else "nvidia-kernel-dkms"
    return "nvidia-%s-kernel-dkms" % flavour


def _selected(nv):
    return {_flavour(lib.target or lib.path) for lib in nv.links} - {None}


def _other_flavour(nv, module_version):
    """(flavour, library) of an installed flavour, not the selected one, whose libraries are
    of the module's version; None where there is none."""
    selected = _selected(nv)
    for lib in nv.libraries:
        flavour = _flavour(lib.path)
        if module_version and lib.version == module_version and flavour and flavour not in selected:
            return flavour, lib
    return None


def _select_flavour(f, nv, module_version: str):
    """Selecting the installed flavour of the module's version again, as a way (installing a
    second flavour moves the alternative to it: in auto mode the higher priority wins)."""
    other = _other_flavour(nv, module_version)
    if other is None:
        return []
    flavour, lib = other
    # nvidia-alternative's master link: /usr/lib/nvidia/nvidia → /usr/lib/nvidia/FLAVOUR.
    argv = ("update-alternatives", "--set", "nvidia", "/usr/lib/nvidia/%s" % flavour)
    summary = "Or select the installed %s flavour again, whose libraries are %s like the module (%s)" % (flavour, module_version, lib.path)
    return [f.fixes.step(summary, [Run(argv)], True, host_wide=False)]


@rule(
    "gpu.driver-too-old-for-cuda",
    "NVIDIA driver older than an installed CUDA toolkit needs",
    Severity.CRITICAL,
    needs=("nvidia", "cuda_toolkits"),
    uses=("running", "gpu_modules", "site_packages"),
)
def too_old_for_cuda(f):
    """An installed CUDA toolkit, or the CUDA runtime pip installed for PyTorch and the like,
    needs a newer driver than the one here.

    Before CUDA 11, a toolkit needs at least the driver it shipped with (7.0 to 10.2 are in the
    table). From CUDA 11 on,
    minor-version compatibility lets every release of a major family run on that family's
    oldest driver (11.x: 450.80.02, 12.x: 525.60.13, 13.x: 580.65.06) with a limited feature
    set: PTX that the newer toolkit emits cannot be JIT-compiled by the older driver. Below
    the floor, CUDA fails with "CUDA driver version is insufficient for CUDA runtime version"
    (critical); between the floor and the toolkit's own driver the finding is low.

    The driver is the loaded module's version (in an image, the module the default kernel
    loads, else the libraries'). Toolkits are read from /usr/local/cuda*/version.json (or
    version.txt). CUDA from pip is judged the same way: the runtime wheel
    nvidia-cuda-runtime-cu12 (cu11; from 13.0 nvidia-cuda-runtime) that PyTorch, JAX and
    TensorFlow depend on installs site-packages/nvidia/cuda_runtime/lib/libcudart.so.12
    (13.x: nvidia/cu13/lib/libcudart.so.13), whose name carries the major release only, so the
    release is read from the wheel's metadata (nvidia_cuda_runtime_cu12-12.4.127.dist-info/
    METADATA, "Version: 12.4.127"); a PyTorch without that wheel beside it carries its CUDA
    inside and says the release in torch/version.py. The Pythons looked at are the system's
    (/usr/lib, /usr/lib64, /usr/local/lib, /usr/local/lib64: python3*/site-packages and
    dist-packages), /opt/conda and /opt/venv, and, where the run carries them (a live check,
    a snapshot's manifest), pip's user folder under HOME and the environment VIRTUAL_ENV or
    CONDA_PREFIX names; each folder is listed once, never searched. A /usr/local/cuda without
    a version file (a toolkit assembled from wheels) is judged by the wheels' dist-info it
    keeps (in the folder, or in its dist-info folder), else by where it or its libcudart leads
    (a site-packages' wheel, a libcudart.so.X.Y.Z); a libcudart.so.12 copied out of a wheel
    says the major release only, judged against its family's floor; a folder nothing dates is
    named, never taken for no toolkit. One release in several places is one finding naming
    each; the finding and the pass name the file each release was read from. Below the floor,
    the fix for CUDA from pip also offers wheels of the newest release the driver runs fully.
    NVIDIA's dotted numeric versions are compared as numbers, anything else with `packaging`
    (whose import costs more than the rest of the rules).

    Reference: NVIDIA CUDA Toolkit Release Notes, "CUDA Toolkit and Corresponding Driver
    Versions" (GA releases); NVIDIA CUDA Compatibility, "Minor Version Compatibility";
    NVIDIA CUDA Installation Guide for Linux, "Pip Wheels"; PyPI nvidia-cuda-runtime-cu12 and
    nvidia-cuda-runtime (the wheels' file lists and METADATA); PyTorch
    tools/generate_torch_version.py (torch/version.py).
    """
    toolkits = f.cuda_toolkits
    if not toolkits:
        sites = f.site_packages or ()
        looked = ", ".join(site.path for site in sites[:4]) + (" …" if len(sites) > 4 else "")
        if not sites:
            return Pass("no CUDA toolkit under /usr/local, and no Python environment with pip's CUDA runtime")
        return Pass("no CUDA toolkit under /usr/local, and no CUDA runtime from pip (nvidia-cuda-runtime*, torch) in %s" % looked)
    driver, source = _driver_version(f)
    if driver is None:
        return Skip("no NVIDIA driver version to compare with (no loaded module, module or library with a version)")
    have = _version(driver)
    issues = []
    fine = []
    unknown = []
    groups = {}
    for kit in toolkits:
        if kit.version is None and kit.major is None:
            unknown.append("CUDA in %s (no version.json, version.txt or versioned libcudart)" % kit.path)
        else:
            # The same release in several places is one finding, naming each.
            groups.setdefault(kit.version or str(kit.major), []).append(kit)
    for kits in groups.values():
        kit = kits[0]
        where = "; ".join(_told(k) for k in kits)
        if kit.version is None:
            # A libcudart.so.12 copied out of a wheel: its family's floor is all that is known.
            floor = MINOR_COMPAT_FLOOR.get(kit.major) if kit.major >= 11 else None
            own = None
        else:
            wanted = _version(kit.version)
            if wanted is None or have is None:
                continue
            key = (wanted.major, wanted.minor)
            # A minor the table does not hold gets its family's floor only: no driver is made up.
            own = TOOLKIT_DRIVER.get(key)
            floor = MINOR_COMPAT_FLOOR.get(wanted.major) if wanted.major >= 11 else own
            if floor is not None and own is not None and _older(own, floor):
                floor = own  # 11.0 shipped before its family's floor: its own driver is enough
        shown = kit.version or "%d.x" % kit.major
        if floor is None:
            unknown.append("CUDA %s (%s; no minimum driver known here)" % (shown, where))
            continue
        evidence = [Evidence(k.source, k.version or "libcudart.so.%d" % k.major) for k in kits] + [Evidence(source, driver)]
        if _older(driver, floor):
            message = (
                "CUDA %s (%s) needs an NVIDIA driver of at least %s, and the driver here is %s (%s): CUDA programs built "
                'with it fail with "CUDA driver version is insufficient for CUDA runtime version".' % (shown, where, floor, driver, source)
            )
            summary = "Upgrade the NVIDIA driver to %s or newer" % (own or floor)
            if any(k.kind != "toolkit" or k.via for k in kits):
                summary += ", or replace the CUDA wheels there with ones of a CUDA release this driver supports%s" % _supported(driver)
            else:
                summary += " (or use a CUDA release this driver supports)"
            issues.append(Issue(message, evidence, [Step(summary, (), True, True)]))
        elif own and _older(driver, own):
            message = (
                "CUDA %s (%s) shipped with driver %s; the driver here is %s (%s), which runs it through minor-version "
                "compatibility with a limited feature set: PTX built with this release cannot be JIT-compiled by the driver."
                % (shown, where, own, driver, source)
            )
            steps = [Step("Upgrade the NVIDIA driver to %s or newer for the full feature set" % own, (), True, True)]
            issues.append(Issue(message, evidence, steps, severity=Severity.LOW))
        else:
            fine.append("CUDA %s (%s)" % (shown, "; ".join(k.source if _told(k) == k.path else _told(k) for k in kits)))
    if issues:
        return issues
    if unknown and not fine:
        return Skip("driver %s; %s" % (driver, "; ".join(unknown)))
    return Pass("driver %s runs %s%s" % (driver, ", ".join(fine), "; not judged: " + "; ".join(unknown) if unknown else ""))


def _told(kit) -> str:
    """Where a CUDA release lies and, past a toolkit's version file, the file that says it."""
    if kit.kind == "toolkit" and not kit.via and kit.version and kit.source.startswith(kit.path + "/version."):
        return kit.path
    if kit.version is None:
        return "%s, %s, whose name says the major release only" % (kit.where, kit.source)
    return "%s, %s" % (kit.where, kit.source)


def _supported(driver: str) -> str:
    """The newest CUDA release whose own driver ``driver`` reaches, in words ("" if none)."""
    releases = [key for key, own in TOOLKIT_DRIVER.items() if not _older(driver, own)]
    return " (CUDA %d.%d or older)" % max(releases) if releases else ""


def _driver_version(f):
    nv = f.nvidia
    if nv.loaded:
        return nv.loaded, nv.loaded_from
    first = f.gpu_modules[0] if f.gpu_modules else None
    module = first.found.get("nvidia") if first else None
    if module is not None and module.field("version"):
        return module.field("version"), module.path
    # What programs load: the .so.1 names followed to their files; else the files, when
    # they agree (Debian's folders of flavours not selected say nothing of what loads).
    versions = nv.library_versions
    if nv.links or len(versions) == 1:
        found = nv.links or nv.libraries
        # CUDA programs load libcuda.so.1.
        lib = next((lib for lib in found if "/libcuda.so." in lib.path), found[0])
        return lib.version, lib.target or lib.path
    return None, None


BLACKLIST_FILE = "/etc/modprobe.d/blacklist-nouveau.conf"


@rule(
    "gpu.nouveau-loaded",
    "nouveau in the NVIDIA driver's way",
    Severity.HIGH,
    needs=("nvidia", "nouveau"),
    uses=("gpu_modules", "running", "os_release", "fixes", "container"),
)
def nouveau_loaded(f):
    """nouveau (the open-source driver for NVIDIA GPUs) is loaded, or nothing keeps it from
    loading, while the NVIDIA driver is installed.

    Only one driver can bind a GPU: with nouveau bound, the nvidia module fails to load or
    finds no device. nouveau is loaded by alias when the GPU is found, often from the
    initramfs, before anything else; `blacklist nouveau` (and `options nouveau modeset=0`)
    in modprobe.d, copied into the initramfs, keeps it out. Loaded: high; not kept out while
    its module is installed: medium. Inside a container only "loaded" is judged (the loaded
    modules are the host's and visible); what keeps nouveau out at boot is the host's.

    Fix: a modprobe.d file with `blacklist nouveau` and `options nouveau modeset=0`,
    regenerate the initramfs, reboot.

    Reference: modprobe.d(5); NVIDIA Driver Installation Guide (Disabling Nouveau).
    """
    nv = f.nvidia
    modules = f.gpu_modules
    nvidia_module = any("nvidia" in mods.found for mods in modules or ())
    if not (nv.installed or nvidia_module):
        return Pass("no NVIDIA driver is installed")
    state = f.nouveau
    blocked = [Evidence(path, text, line) for path, line, text in state.blocked_by]
    binds_nothing = [e for e in blocked if "modeset=0" in e.value or e.value == "nomodeset"]
    if state.loaded and binds_nothing:
        return Pass("nouveau is loaded but binds no GPU (%s)" % ", ".join(e.value for e in binds_nothing))
    if state.loaded:
        message = (
            "nouveau is loaded (%s) while the NVIDIA driver is installed: it holds the GPU, and the nvidia module cannot bind it."
            % state.loaded_from
        )
        if blocked:
            message += " A blacklist exists but did not stop it: the initramfs was probably built before it."
        return Issue(message, [Evidence(state.loaded_from, "nouveau")] + blocked, _nouveau_steps(f, bool(blocked)))
    if blocked:
        return Pass("nouveau is kept out (%s)" % ", ".join("%s:%d" % (e.path, e.line) if e.line else e.path for e in blocked))
    container = f.container
    if container and container.detected:
        return Skip(host_side("the modprobe.d files and kernel modules that keep nouveau out at boot", container))
    installed = [mods for mods in modules or () if "nouveau" in mods.found]
    if not installed:
        return Pass("nouveau is not installed for the kernel")
    path = installed[0].found["nouveau"].path
    message = (
        "Nothing keeps nouveau out (no `blacklist nouveau` in modprobe.d, no modprobe.blacklist= on the kernel command "
        "line) and its module is installed (%s): at boot it can claim the GPU before the nvidia module." % path
    )
    if state.initramfs_only:
        message += " (%s keeps it out of the initramfs only.)" % ", ".join(text for _path, _line, text in state.initramfs_only)
    return Issue(message, [Evidence(path, "nouveau module")], _nouveau_steps(f, False), severity=Severity.MEDIUM)


def _nouveau_steps(f, exists: bool):
    fixes = f.fixes
    family = _family(f)
    initramfs = {"debian": ("update-initramfs", "-u", "-k", "all"), "rhel": ("dracut", "--force", "--regenerate-all")}.get(family)
    actions = []
    if not exists:
        actions.append(WriteFile(BLACKLIST_FILE, ("blacklist nouveau", "options nouveau modeset=0"), True))
    if initramfs:
        actions.append(Run(initramfs))
    summary = (
        "Keep nouveau out at boot: blacklist it and rebuild the initramfs" if not exists else "Rebuild the initramfs with the blacklist"
    )
    if not initramfs:
        summary += " (with your distribution's initramfs tool)"
    steps = [fixes.step(summary, actions, True, host_wide=False)]
    if f.running:
        steps.append(fixes.reboot_step())
    return steps
