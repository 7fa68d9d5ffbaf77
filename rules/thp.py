"""Transparent huge pages."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.model import Evidence, Issue, Pass, Severity


@rule("thp.disabled", "Transparent huge pages disabled", Severity.LOW, needs=("thp",), uses=("cmdline", "fixes"))
def disabled(f):
    """Transparent huge pages are set to `never`.

    With THP the kernel backs large anonymous mappings with 2 MiB pages (on x86-64) without
    a reserved pool: fewer page faults and TLB misses when a loader fills large buffers, and
    for the CPU-side tensors. `never` turns that off for every process, including those that
    ask for it with madvise(MADV_HUGEPAGE). `madvise` is the usual choice for serving hosts:
    huge pages where a program asks, no surprise compaction stalls elsewhere.

    Fix: write `madvise` to /sys/kernel/mm/transparent_hugepage/enabled now, and set
    `transparent_hugepage=madvise` on the kernel command line so it holds after reboot.

    Reference: Documentation/admin-guide/mm/transhuge.rst.
    """
    thp = f.thp
    if thp.enabled != "never":
        return Pass("transparent huge pages: %s" % thp.enabled)
    evidence = [Evidence(thp.path, " ".join("[%s]" % c if c == thp.enabled else c for c in thp.choices))]
    message = (
        "Transparent huge pages are off (`never`): large buffers are mapped 4 KiB "
        "at a time, even for programs that ask for huge pages with madvise."
    )
    cmdline = f.cmdline
    boot = cmdline.last("transparent_hugepage") if cmdline else None
    if boot is not None:
        evidence.append(Evidence(cmdline.source, boot.text))
        message += " The kernel command line sets it (%s)." % boot.text
    fixes = f.fixes
    steps = fixes.sysfs([thp.path], "madvise", "Turn THP on for programs that ask (madvise)")
    steps.append(fixes.kernel_args(["transparent_hugepage=madvise"], ["transparent_hugepage"], "Keep it at boot"))
    return Issue(message, evidence, steps)
