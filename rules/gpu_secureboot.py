"""Secure Boot and the NVIDIA kernel module's signature: a module the kernel cannot verify
does not load."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.facts.secureboot import EFI_DIR, LOCKDOWN, SECURE_BOOT_VAR, SIG_ENFORCE
from ai_doctor.model import Evidence, Issue, Pass, Severity, Skip
from ai_doctor.remedy.actions import Run, Show
from ai_doctor.shell import quote

# The enrollment is confirmed by a person before the operating system starts: the reboot is
# the machine's half, the confirmation a step by hand that no file change replaces.
_REBOOT = "Reboot with someone at the machine's console (the screen and keyboard, or the BMC's or hypervisor's remote console)"
_CONFIRM = (
    "At the console, before the operating system starts, shim's MokManager (a blue screen, waiting about 10 seconds for a "
    "key) asks to enroll the key: choose Enroll MOK, Continue, Yes and type the password given to mokutil. It cannot be "
    "answered over SSH (use IPMI, iDRAC, iLO or a cloud serial console); unanswered, it boots on without enrolling the key"
)


def _console_steps(fixes):
    return [fixes.reboot_step(_REBOOT), fixes.step(_CONFIRM, [], True, host_wide=False)]


def _enforcer(sb) -> str:
    if sb.sig_enforce:
        return "module signatures are enforced (%s is Y)" % SIG_ENFORCE
    if sb.lockdown in ("integrity", "confidentiality"):
        return "the kernel is locked down (%s: %s)" % (LOCKDOWN, sb.lockdown)
    return "Secure Boot is on, under which distribution kernels lock down and refuse modules they cannot verify"


def _evidence(sb):
    evidence = []
    if sb.state is not None:
        evidence.append(Evidence(SECURE_BOOT_VAR, "1 (Secure Boot on)" if sb.state else "0 (Secure Boot off)"))
    if sb.lockdown is not None:
        evidence.append(Evidence(LOCKDOWN, sb.lockdown))
    if sb.sig_enforce is not None:
        evidence.append(Evidence(SIG_ENFORCE, "Y" if sb.sig_enforce else "N"))
    return evidence


def _names(keys) -> str:
    shown = ["%s (serial %s)" % (cert.name, cert.serial) for cert in keys.certs[:6]]
    more = len(keys.certs) - len(shown)
    return ", ".join(shown) + (" and %d more" % more if more > 0 else "") if shown else "no certificate"


def _target(f, entry, first: bool) -> str:
    if first:
        return "the running kernel %s" % entry.release
    default = f.default_boot
    how = " (%s)" % default.how if default and getattr(default, "how", None) else ""
    return "kernel %s, which the next boot starts%s" % (entry.release, how)


@rule(
    "gpu.secure-boot-signature",
    "The kernel refuses the NVIDIA module's signature",
    Severity.CRITICAL,
    needs=("gpu_modules",),
    uses=("running", "secure_boot", "module_signatures", "nvidia", "kernel_config", "default_boot", "os_release", "fixes"),
    host_only="the Secure Boot state (/sys/firmware, hidden in a container) and the kernel modules",
)
def secure_boot_signature(f):
    """Secure Boot is on (or module signatures are otherwise enforced) and the nvidia module
    installed for the kernel is unsigned, or signed by a key the kernel does not trust: it
    cannot load (`modprobe: ERROR: could not insert 'nvidia': Key was rejected by service`, or
    "Operation not permitted" with "Lockdown: unsigned module loading is restricted" in the
    kernel log), nvidia-smi "couldn't communicate with the NVIDIA driver" and CUDA finds no GPU.
    This is what a DKMS build leaves on a Secure Boot machine when its signing key was never
    enrolled, or when the enrollment was never completed at the console.

    When the kernel refuses: module.sig_enforce (CONFIG_MODULE_SIG_FORCE or the boot
    parameter) refuses any module it cannot verify, and so does lockdown in integrity or
    confidentiality mode (kernel/module/signing.c, security/lockdown/lockdown.c). Distribution
    kernels lock down when the firmware enforces Secure Boot (the SecureBoot EFI variable is
    1); /sys/kernel/security/lockdown saying `[none]` with sig_enforce N means unsigned
    modules load (tainting the kernel), and the check passes. No /sys/firmware/efi (a legacy
    BIOS boot) or SecureBoot 0 pass too.

    Whom the kernel trusts: the key it was built with, which signed its own modules (and, on
    Ubuntu, the prebuilt linux-modules-nvidia-* modules, whose signatures come from the same
    kernel build), and the Machine Owner Keys shim passes in MokListRT (distribution kernels
    use them for modules; mainline since 5.19 through the .machine keyring). The module's
    PKCS#7 signer (issuer and serial number, or subjectKeyIdentifier) is compared with the
    signer of one of the kernel's own modules and with each certificate in MokListRT.

    Severity: critical for the running kernel's module (it cannot load), high for the module
    of the kernel the next boot starts (it fails after the reboot); medium when the signing
    key waits in MokNew for enrollment, which happens only at the console on the next boot.
    A loaded nvidia module passes (the kernel took it). Other NVIDIA modules (nvidia-fs,
    nvidia-peermem) are not judged. Skips, naming what could not be read, where the Secure
    Boot state, the module (a .ko.zst with no zstd decoder here) or MokListRT (the EFI MOK
    table's copy is readable by root only) cannot be read. In a container the firmware and
    modules are the host's (/sys/firmware is hidden). In an image the firmware's Secure Boot
    state is unknown, so only a kernel built with CONFIG_MODULE_SIG_FORCE=y is judged: it
    refuses an unsigned module whatever the firmware says.

    Fix: on Ubuntu, prefer the prebuilt modules signed in the kernel's build
    (linux-modules-nvidia-BRANCH[-server]-RELEASE, listed by `ubuntu-drivers list --gpgpu`)
    over DKMS. Otherwise sign with the DKMS key and enroll it: rebuild the module (dkms 3
    signs what it builds with /var/lib/dkms/mok.key), `mokutil --import /var/lib/dkms/mok.pub`
    (older Ubuntu: /var/lib/shim-signed/mok/MOK.der), then reboot and confirm the enrollment
    in MokManager at the console. Turning Secure Boot off is not offered: it removes the
    boot chain's protection for the whole machine.

    Reference: Documentation/admin-guide/module-signing.rst; include/linux/module_signature.h
    and scripts/sign-file.c (the appended signature); Documentation/filesystems/efivarfs.rst
    (4 attribute bytes, then the data); drivers/firmware/efi/mokvar-table.c
    (/sys/firmware/efi/mok-variables); security/integrity/platform_certs/machine_keyring.c;
    mokutil(1); dkms(8) (mok_signing_key, mok_certificate); research: linux-surface#906,
    NVIDIA/gpu-driver-container#44, MicrosoftDocs/azure-docs#111536 (enrollment impossible
    over SSH), Start9Labs/start-technologies#3702, NVIDIA/gds-nvidia-fs#81.
    """
    targets = [mods for mods in f.gpu_modules if "nvidia" in mods.found]
    if not targets:
        return Skip("no nvidia module is installed for the kernel")
    if not f.running:
        return _image(f)
    sb = f.secure_boot
    if not sb:
        return Skip(sb.reason)
    enforced = sb.enforced
    if enforced is None:
        return Skip("the Secure Boot state could not be read (%s)" % sb.state_problem)
    if not enforced:
        if not sb.efi:
            words = "no EFI firmware interface (%s): a legacy BIOS boot, without Secure Boot" % EFI_DIR
        else:
            words = "Secure Boot is %s" % ("on" if sb.state else "off")
        if sb.lockdown is not None:
            words += ", the kernel is not locked down (%s: none)" % LOCKDOWN
        if sb.sig_enforce is False:
            words += ", module signatures are not enforced (%s: N)" % SIG_ENFORCE
        return Pass(words + ": the kernel loads unsigned modules")
    issues, notes, unknown = [], [], []
    running = f.gpu_modules[0].release
    for entry in f.module_signatures:
        first = entry.release == running
        target = _target(f, entry, first)
        if entry.loaded:
            notes.append("the nvidia module of %s is loaded, so the kernel took its signature" % target)
            continue
        if entry.signer is None:
            unknown.append("the nvidia module of %s (%s) could not be read: %s" % (target, entry.path, entry.problem))
            continue
        judged = _judge(f, sb, entry, target, first)
        if isinstance(judged, Issue):
            issues.append(judged)
        elif judged.startswith("?"):
            unknown.append(judged[1:])
        else:
            notes.append(judged)
    if issues:
        return issues
    if unknown and not notes:
        return Skip("; ".join(unknown))
    return Pass("; ".join(notes + ["could not tell for %s" % u for u in unknown]))


def _judge(f, sb, entry, target: str, first: bool):
    """An Issue, or words for a pass (``?`` first: could not tell)."""
    signer = entry.signer
    module = "the nvidia module for %s (%s)" % (target, entry.path)
    if signer.signed and signer.same_key(entry.reference_signer):
        return "%s is signed with the kernel's own module key, like %s (%s)" % (module, entry.reference, signer.shown)
    enrolled = sb.enrolled
    if signer.signed and enrolled is not None and any(signer.made_by(cert) for cert in enrolled.certs):
        return "%s is %s, enrolled in %s" % (module, signer.shown, enrolled.path)
    pending = sb.pending
    waiting = signer.signed and pending is not None and any(signer.made_by(cert) for cert in pending.certs)
    if signer.signed and enrolled is None and not waiting:
        return "?%s is %s, and the enrolled keys (MokListRT) could not be read: %s" % (module, signer.shown, sb.enrolled_problem)
    evidence = _evidence(sb) + [Evidence(entry.path, signer.shown)]
    if entry.reference_signer is not None:
        evidence.append(Evidence(entry.reference, "the kernel's own module, %s" % entry.reference_signer.shown))
    if enrolled is not None:
        evidence.append(Evidence(enrolled.path, _names(enrolled)))
    if pending is not None:
        evidence.append(Evidence(pending.path, "pending enrollment: %s" % _names(pending)))
    why = _enforcer(sb)
    severity = None if first else Severity.HIGH
    when = "it cannot load" if first else "after the reboot it cannot load"
    if waiting:
        message = (
            "%s is %s, a key waiting in MokNew to be enrolled: %s, and the key is enrolled only when someone confirms it in "
            "MokManager at the console during the next boot. Until then %s; nvidia-smi cannot reach the driver."
            % (module[0].upper() + module[1:], signer.shown, why, "the module cannot load" if first else "it stays refused")
        )
        steps = [f.fixes.step("See the keys waiting for enrollment", [Show("mokutil --list-new")], None, host_wide=False, needs_root=False)]
        steps += _console_steps(f.fixes)
        return Issue(message, evidence, steps, severity=Severity.MEDIUM)
    if signer.kind == "none":
        problem = "is unsigned"
    elif signer.kind != "pkcs7":
        problem = "is %s" % signer.shown
    else:
        problem = "is %s, which is neither the kernel's own module key nor a key enrolled in MokListRT" % signer.shown
    message = (
        '%s %s, and %s: %s (modprobe: "Key was rejected by service" or "Operation not permitted"), so nvidia-smi cannot '
        "reach the driver and CUDA finds no GPU."
    ) % (
        module[0].upper() + module[1:],
        problem,
        why,
        when,
    )
    if pending is not None and not waiting:
        message += " MokNew holds other keys waiting for enrollment (%s), not this one." % _names(pending)
    return Issue(message, evidence, _steps(f, sb, entry), severity=severity)


def _steps(f, sb, entry):
    """The way through the module's own signing key first (it keeps the driver as installed),
    then, on Ubuntu, the prebuilt modules signed in the kernel's build as the other way."""
    steps = _signing_steps(f, sb, entry)
    distro = f.os_release
    if distro and distro.fields.get("ID") == "ubuntu":
        branch = _branch(f.nvidia)
        steps.append(
            f.fixes.step(
                "Or, prefer Ubuntu's prebuilt NVIDIA modules, signed in the kernel's own build, over the DKMS build: install "
                "linux-modules-nvidia-%s-server-%s (for the -server driver) or linux-modules-nvidia-%s-%s, matching the "
                "driver's libraries, and remove the DKMS package (nvidia-dkms-%s-server or nvidia-dkms-%s); this lists them"
                % (branch, entry.release, branch, entry.release, branch, branch),
                [Show("ubuntu-drivers list --gpgpu")],
                None,
                host_wide=False,
                needs_root=False,
            )
        )
    return steps


def _signing_steps(f, sb, entry):
    fixes = f.fixes
    signer = entry.signer
    nv = f.nvidia
    key = _dkms_key(sb, signer)
    if signer.kind == "pkcs7" and key is None:
        return [
            fixes.advice(
                "Enroll the certificate of the key that signed the module (%s) with `mokutil --import CERTIFICATE.der` and "
                "complete the enrollment at the console on the next boot, or rebuild the module so that it is signed with an "
                "enrolled key" % signer.shown
            )
        ]
    if key is None:
        return [
            fixes.advice(
                "Have the module signed: DKMS 3 or later creates a signing key (/var/lib/dkms/mok.key, its certificate "
                "/var/lib/dkms/mok.pub) and signs the modules it builds; rebuild the module with it, enroll the certificate "
                "(`mokutil --import /var/lib/dkms/mok.pub`) and complete the enrollment at the console on the next boot"
            )
        ]
    steps = []
    source = nv.dkms_source if nv else None
    if signer.kind != "pkcs7":
        if source is None:
            steps.append(fixes.advice("Rebuild the nvidia module for %s so that it is signed with %s's key" % (entry.release, key.path)))
        else:
            steps.append(
                fixes.step(
                    "Rebuild the nvidia module for %s with DKMS, which signs it with the key of %s" % (entry.release, key.path),
                    [Run(("dkms", "install", "--force", source.ref, "-k", entry.release), proc=True)],
                    True,
                    host_wide=False,
                )
            )
    enrolled = sb.enrolled
    cert = key.certs[0]
    if enrolled is not None and any(c.issuer == cert.issuer and c.serial == cert.serial for c in enrolled.certs):
        return steps
    steps.append(
        fixes.step(
            "Ask for the DKMS signing certificate %s (%s) to be enrolled as a Machine Owner Key; mokutil asks for a one-time "
            "password to type again at the console" % (key.path, cert.name),
            [Run(("mokutil", "--import", key.path))],
            True,
            host_wide=False,
        )
    )
    steps += _console_steps(fixes)
    return steps


def _dkms_key(sb, signer):
    """The DKMS signing certificate on disk that fits: the one that signed the module, or for
    an unsigned module the first present."""
    for keys in sb.on_disk:
        if not keys.certs:
            continue
        if signer.kind == "pkcs7":
            if signer.made_by(keys.certs[0]):
                return keys
        else:
            return keys
    return None


def _branch(nv) -> str:
    versions = (nv.library_versions or [source.version for source in nv.dkms]) if nv else []
    return versions[-1].split(".", 1)[0] if versions else "BRANCH"


def _image(f):
    """An image: only a kernel that refuses unsigned modules whatever the firmware says."""
    config = f.kernel_config
    if not config or config.get("MODULE_SIG_FORCE") != "y":
        return Skip("an image: Secure Boot is the firmware's setting, unknown for an image, and the kernel does not force signatures")
    issues, notes = [], []
    for entry in f.module_signatures:
        if entry.signer is None:
            notes.append("the nvidia module of kernel %s (%s) could not be read: %s" % (entry.release, entry.path, entry.problem))
        elif entry.signer.kind == "none":
            message = (
                "The image's kernel %s forces module signatures (CONFIG_MODULE_SIG_FORCE=y in %s), and its nvidia module (%s) "
                "is unsigned: from the first boot it cannot load, whatever the firmware's Secure Boot setting."
                % (entry.release, config.where, entry.path)
            )
            evidence = [Evidence(config.source, "CONFIG_MODULE_SIG_FORCE=y"), Evidence(entry.path, "unsigned")]
            step = f.fixes.advice(
                "Sign the module for %s with a key the kernel trusts: build it with DKMS 3 or later, which signs it with "
                "/var/lib/dkms/mok.key, and enroll that key's certificate where the image boots (`mokutil --import %s`)"
                % (entry.release, quote("/var/lib/dkms/mok.pub"))
            )
            issues.append(Issue(message, evidence, [step]))
        else:
            notes.append("the nvidia module of kernel %s is %s" % (entry.release, entry.signer.shown))
    if issues:
        return issues
    return Skip("an image: Secure Boot is the firmware's setting, unknown for an image; %s" % "; ".join(notes or ["no module read"]))
