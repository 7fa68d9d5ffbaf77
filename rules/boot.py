"""The boot loader's own files: is what GRUB boots what its configuration says?"""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.model import Evidence, Issue, Pass, Severity
from ai_doctor.remedy.actions import BootEntries

# Parameters other checks judge (huge pages, THP, the governor, NUMA balancing, init, the
# nouveau blacklist, sysctl.*) and the IOMMU ones GPU serving depends on: a pending change to
# one of them is a change those verdicts do not yet see.
_JUDGED = frozenset(
    (
        "hugepages",
        "hugepagesz",
        "default_hugepagesz",
        "transparent_hugepage",
        "thp_anon",
        "cpufreq.default_governor",
        "numa_balancing",
        "init",
        "rdinit",
        "modprobe.blacklist",
        "module_blacklist",
        "rd.driver.blacklist",
        "nouveau.modeset",
        "nomodeset",
        "intel_iommu",
        "amd_iommu",
        "iommu",
        "iommu.passthrough",
        "iommu.strict",
    )
)


@rule(
    "boot.grub-not-regenerated",
    "GRUB configuration edited but grub.cfg not regenerated",
    Severity.MEDIUM,
    needs=("grub_pending",),
    uses=("fixes",),
    host_only="the boot loader configuration (/etc/default/grub, grub.cfg)",
)
def grub_not_regenerated(f):
    """/etc/default/grub (or a /etc/default/grub.d/*.cfg file) gives the kernel command line
    other parameters than grub.cfg's default entry boots with: the edit was never applied.

    GRUB reads only grub.cfg. grub-mkconfig writes it, and only when it runs (`update-grub` on
    Debian and Ubuntu, `grub2-mkconfig -o /boot/grub2/grub.cfg` on RHEL and SUSE): its 10_linux
    script puts GRUB_CMDLINE_LINUX and then GRUB_CMDLINE_LINUX_DEFAULT on each normal entry's
    `linux` line, and GRUB_CMDLINE_LINUX alone on recovery entries, after sourcing
    /etc/default/grub and then (Debian, Ubuntu) each /etc/default/grub.d/*.cfg. Until it runs,
    an edit there does nothing, and every check that reads the boot line judges grub.cfg's.

    The default entry's parameters are compared, counted, with those the files give now, as the
    shell leaves the variables; what 10_linux and GRUB add themselves (`root=`, `ro`,
    `rootflags=subvol=`, recovery and init words, Ubuntu's `panic=-1` with GRUB_FORCE_PARTUUID,
    `$vt_handoff`, `$tuned_params`, `BOOT_IMAGE=`) is left out, and so is the order. Entries grub-mkconfig did not write (no
    `gnulinux-` id), Boot Loader Specification entries and variables the shell reader cannot
    evaluate are not judged. High when the difference touches a parameter other checks judge
    (huge pages, THP, IOMMU, the governor, init, the nouveau blacklist). The fix regenerates
    grub.cfg; when the edit was not meant, take it out of the file instead.

    References: GRUB manual, "Simple configuration handling" (grub-mkconfig and
    /etc/default/grub); grub's util/grub.d/10_linux.in (linux_entry); Debian's grub-mkconfig,
    which sources /etc/default/grub.d/*.cfg; update-grub(8).
    """
    pending = f.grub_pending
    entry = pending.entry
    if not pending.added and not pending.removed:
        return Pass("the default entry (%s:%d) has the parameters the GRUB files give it" % (pending.menu, entry.line))
    by_line = {}
    for param, (path, number, _text) in pending.added:
        by_line.setdefault("%s:%d" % (path, number), []).append(param)
    parts = []
    if len(by_line) == 1:
        where, params = next(iter(by_line.items()))
        parts.append("boots without %s, which %s sets" % (_named(params), where))
    elif by_line:
        groups = ["%s (set at %s)" % (_named(params), where) for where, params in by_line.items()]
        more = " and what %d more lines set" % (len(groups) - _SHOWN) if len(groups) > _SHOWN else ""
        parts.append("boots without %s%s" % (", ".join(groups[:_SHOWN]), more))
    if pending.removed:
        # Taken out of the files since, or written into grub.cfg by hand: either way the next
        # grub-mkconfig drops it.
        parts.append(
            "still boots with %s, which the GRUB files do not set (taken out of them since, or written into grub.cfg by hand)"
            % _named(pending.removed)
        )
    title = " > ".join(entry.titles)[:200]
    message = (
        "%s was not regenerated after the GRUB files changed: its default entry (line %d, %s) %s. GRUB reads only grub.cfg, "
        "which grub-mkconfig writes from /etc/default/grub and /etc/default/grub.d/*.cfg when it runs, so the change is not in "
        "force at the next boot; it comes with whatever runs grub-mkconfig next (on Debian and Ubuntu, a kernel update)."
        % (pending.menu, entry.line, title or "untitled", ", and ".join(parts))
    )
    judged = sorted(name for name in pending.names if name in _JUDGED or name.startswith("sysctl."))
    if judged:
        message += " Other checks judge the line grub.cfg boots with, so they do not see this change to %s." % ", ".join(
            "`%s`" % name[:120] for name in judged[:_SHOWN]
        )
    evidence = []
    for _param, (path, number, text) in pending.added:
        evidence.append(Evidence(path, text, number))
    evidence += [Evidence(path, text, number) for path, number, text in pending.assignments]
    booted = " ".join(param.text for param in entry.params)
    evidence.append(Evidence(pending.menu, booted if len(booted) <= 400 else booted[:400] + "…", entry.line))
    return Issue(message, evidence, [_regenerate(f, pending)], severity=Severity.HIGH if judged else None)


# Parameters named in one sentence; a line of thousands says how many more.
_SHOWN = 8


def _named(params) -> str:
    shown = ", ".join("`%s`" % param.text[:120] for param in params[:_SHOWN])
    return shown if len(params) <= _SHOWN else "%s and %d more" % (shown, len(params) - _SHOWN)


def _regenerate(f, pending):
    """grub.cfg written again by the tool the target has; in a tree, the edit it would make."""
    fixes = f.fixes
    argv = fixes.grub_regenerate(pending.menu)
    if argv is None:
        return fixes.advice(
            "Regenerate %s from the GRUB files with grub-mkconfig -o %s (no update-grub, grub2-mkconfig or grub-mkconfig was "
            "found here), or take the change out of them if it was not meant" % (pending.menu, pending.menu)
        )
    command = " ".join(argv)
    if fixes.image is not None:
        # grub-mkconfig probes the root device: in a chroot of an unpacked tree it fails, or
        # writes the build machine's disk into the image. A tree gets what it would write.
        summary = (
            "Regenerate %s from the GRUB files (`%s`) where the image's disk is attached (grub-mkconfig probes the root "
            "device, which a chroot of an unpacked tree does not have)" % (pending.menu, command)
        )
        argv = None
    else:
        summary = "Regenerate %s from the GRUB files" % pending.menu
    if pending.removed:
        summary += " (it drops %s: where that is meant, add it to GRUB_CMDLINE_LINUX in /etc/default/grub first)" % _named(pending.removed)
    if fixes.running and argv is not None:
        summary += ", then reboot"
    # Recovery entries get GRUB_CMDLINE_LINUX alone, as 10_linux writes them.
    default_only = tuple(param.text for param, source in pending.added if source[2].startswith("GRUB_CMDLINE_LINUX_DEFAULT"))
    action = BootEntries(argv, pending.add, pending.remove, default_only=default_only)
    return fixes.step(summary, [action], True, host_wide=False)
