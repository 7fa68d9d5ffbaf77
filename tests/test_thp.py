"""Transparent huge pages: per-size controls (6.8+), what sets the mode at boot, and what
writes it afterwards (Documentation/admin-guide/mm/transhuge.rst)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_doctor.facts import Facts, Unavailable
from ai_doctor.facts.cmdline import Cmdline, split_cmdline
from ai_doctor.facts.kconfig import KernelConfig
from ai_doctor.facts.thp import boot_modes, format_thp_anon, parse_thp_anon
from ai_doctor.facts.tuned import parse_tuned_conf
from ai_doctor.host import Host
from ai_doctor.shell import quote

from conftest import minimal_host

K = 1024
M = 1024 * K
THP = "/sys/kernel/mm/transparent_hugepage"
TOP = THP + "/enabled"
PMD = THP + "/hugepages-2048kB/enabled"
SIZES = (16 * K, 32 * K, 64 * K, 128 * K, 256 * K, 512 * K, 1 * M, 2 * M)


def mthp(tree, top, pmd, small="never"):
    """A 6.8+ kernel: top-level control, 64 KiB and 2 MiB per-size controls."""
    tree.write(TOP, top + "\n")
    tree.write(THP + "/hpage_pmd_size", "2097152\n")
    tree.write(PMD, {"always": "[always] inherit madvise never", "inherit": "always [inherit] madvise never"}.get(pmd, pmd) + "\n")
    tree.write(
        THP + "/hugepages-64kB/enabled", "[always] inherit madvise never\n" if small == "always" else "always inherit madvise [never]\n"
    )
    return tree


NEVER = "always madvise [never]"
MADVISE = "always [madvise] never"
SIZE_NEVER = "always inherit madvise [never]"
SIZE_MADVISE = "always inherit [madvise] never"


def cmdline(text):
    return Cmdline(text, tuple(split_cmdline(text)), "/proc/cmdline")


def kconfig(*lines):
    return KernelConfig("\n".join(lines) + "\n", "/boot/config-6.8.0", "6.8.0", ())


def check(result):
    return next(c for c in result.json["checks"] if c["rule"] == "thp.disabled")


def finding(result):
    return next(f for f in result.json["findings"] if f["rule"] == "thp.disabled")


def commands(found):
    return [c for step in found["remediation"] for c in step["commands"]]


def summaries(found):
    return [step["summary"] for step in found["remediation"]]


def run_thp(run, tree):
    return run("--root", tree, "--format", "json", "--only", "thp")


# -- the fact ------------------------------------------------------------------------------


def test_fact_reads_each_size_and_the_pmd_size(tree):
    minimal_host(tree)
    mthp(tree, NEVER, SIZE_MADVISE, small="always")
    tree.write(THP + "/hugepages-128kB/shmem_enabled", "always inherit within_size advise [never]\n")  # no anon control
    thp = Facts(Host(str(tree))).get("thp")
    assert thp.top.mode == "never"
    assert sorted(thp.sizes) == [64 * K, 2 * M]
    assert thp.pmd_size == 2 * M and thp.pmd.path == PMD
    assert thp.pmd_mode == "madvise"
    assert thp.others_on() == ((64 * K, "always"),)
    assert thp.pmd.shown == SIZE_MADVISE


def test_fact_before_6_8_has_only_the_top_level(tree):
    minimal_host(tree)  # enabled only
    thp = Facts(Host(str(tree))).get("thp")
    assert thp.sizes == {} and thp.pmd is None and thp.pmd_size is None
    assert thp.pmd_mode == "madvise"


def test_inherit_takes_the_top_level_mode(tree):
    minimal_host(tree)
    mthp(tree, "[always] madvise never", "inherit")
    assert Facts(Host(str(tree))).get("thp").pmd_mode == "always"


def test_fact_without_a_known_mode_is_unavailable(tree):
    minimal_host(tree)
    tree.write(TOP, "always madvise never\n")
    thp = Facts(Host(str(tree))).get("thp")
    assert isinstance(thp, Unavailable) and "holds no known mode" in thp.reason


# -- boot parameters and build default -----------------------------------------------------


def test_thp_anon_example_from_the_kernel_docs():
    modes = parse_thp_anon("16K-64K:always;128K,512K:inherit;256K:madvise;1M-2M:never", SIZES)
    assert modes == {
        16 * K: "always",
        32 * K: "always",
        64 * K: "always",
        128 * K: "inherit",
        256 * K: "madvise",
        512 * K: "inherit",
        1 * M: "never",
        2 * M: "never",
    }


def test_thp_anon_leaves_unnamed_sizes_never_and_later_ones_build_on_earlier():
    first = parse_thp_anon("64K:always", SIZES)
    assert first[64 * K] == "always" and first[2 * M] == "never"
    second = parse_thp_anon("2M:madvise", SIZES, first)
    assert second[64 * K] == "always" and second[2 * M] == "madvise"


def test_a_bad_thp_anon_is_ignored_whole():
    assert parse_thp_anon("64K:always;3K:always", SIZES) is None  # not a THP size
    assert parse_thp_anon("64K:sometimes", SIZES) is None
    assert parse_thp_anon("64K:always;", SIZES) is None  # empty token: no policy
    assert parse_thp_anon("2M-64K:always", SIZES) is None  # backwards range
    boot = boot_modes(cmdline("thp_anon=64K:always thp_anon=2M:bogus"), None, SIZES)
    assert boot.thp_anon == ("thp_anon=64K:always",)
    assert boot.size_mode(2 * M, 2 * M) == "never"


def test_format_thp_anon_round_trips():
    modes = parse_thp_anon("16K-64K:always;2M:inherit", SIZES)
    text = format_thp_anon(modes)
    assert text == "16K,32K,64K:always;2048K:inherit"
    assert parse_thp_anon(text, SIZES) == modes


def test_boot_top_level_last_valid_parameter_wins_over_build_default():
    config = kconfig("CONFIG_TRANSPARENT_HUGEPAGE=y", "CONFIG_TRANSPARENT_HUGEPAGE_NEVER=y")
    boot = boot_modes(cmdline("transparent_hugepage=madvise transparent_hugepage=bogus"), config, SIZES)
    assert (boot.top, boot.top_source) == ("madvise", ("/proc/cmdline", "transparent_hugepage=madvise", None))
    boot = boot_modes(cmdline("ro quiet"), config, SIZES)
    assert (boot.top, boot.top_source) == ("never", ("/boot/config-6.8.0", "CONFIG_TRANSPARENT_HUGEPAGE_NEVER=y", None))
    assert boot.mode(2 * M, 2 * M) == "never"  # the PMD size inherits at boot
    assert boot_modes(cmdline("ro"), Unavailable("no config"), SIZES).top is None


def test_parse_tuned_conf():
    sections = parse_tuned_conf("# c\n[main]\ninclude = base\n\n[vm]\ntransparent_hugepages=never\nodd line\n")
    assert sections == {"main": {"include": (3, "base")}, "vm": {"transparent_hugepages": (6, "never")}}


@given(st.text(max_size=200))
def test_boot_and_tuned_parsers_never_raise(text):
    parse_thp_anon(text, SIZES)
    parse_tuned_conf(text)
    boot_modes(cmdline(text), kconfig(text), SIZES)


# -- the rule ------------------------------------------------------------------------------


def test_top_level_never_with_pmd_size_on_is_not_off(tree, run):
    minimal_host(tree)
    mthp(tree, NEVER, SIZE_MADVISE)
    result = check(run_thp(run, tree))
    assert result["status"] == "pass"
    assert result["reason"] == "2 MiB transparent huge pages: madvise (their own setting; top level never)"


def test_pmd_size_never_is_off_whatever_the_top_level_says(tree, run):
    minimal_host(tree)
    mthp(tree, "[always] madvise never", SIZE_NEVER, small="always")
    found = finding(run_thp(run, tree))
    assert found["message"].startswith("Transparent huge pages are off for 2 MiB pages (their own setting is `never`)")
    assert "Smaller sizes are on: 64 KiB (always)." in found["message"]
    assert {"path": PMD, "value": SIZE_NEVER} in found["evidence"]
    cmds = commands(found)
    assert cmds[0] == "echo inherit | sudo tee %s >/dev/null" % PMD
    assert not any(TOP in c for c in cmds)  # the top level is fine
    # No thp_anon= on the command line: the kernel started it as inherit, so user space wrote it.
    assert "something wrote `never` to %s after boot" % PMD in found["message"]
    assert not any("kernel command line" in s for s in summaries(found))


def test_command_line_never_is_fixed_on_the_command_line(tree, run):
    minimal_host(tree)
    tree.write(TOP, NEVER + "\n")
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz ro transparent_hugepage=never\n")
    tree.write("/usr/sbin/grubby", "", 0o755)
    found = finding(run_thp(run, tree))
    assert "The kernel command line (transparent_hugepage=never) sets the top level to `never` at boot." in found["message"]
    assert commands(found) == [
        "echo madvise | sudo tee %s >/dev/null" % TOP,
        "sudo grubby --update-kernel=ALL --remove-args=transparent_hugepage --args=transparent_hugepage=madvise",
    ]


def test_build_default_never_is_fixed_on_the_command_line(tree, run):
    minimal_host(tree)
    tree.write(TOP, NEVER + "\n")
    tree.write("/boot/config-6.1.0-18-amd64", "CONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE_NEVER=y\n")
    found = finding(run_thp(run, tree))
    assert "The kernel's build configuration (CONFIG_TRANSPARENT_HUGEPAGE_NEVER=y) sets the top level" in found["message"]
    assert any("transparent_hugepage=madvise" in s for s in summaries(found))
    assert {"path": "/boot/config-6.1.0-18-amd64", "value": "CONFIG_TRANSPARENT_HUGEPAGE_NEVER=y"} in found["evidence"]


def test_runtime_writer_when_the_kernel_starts_with_thp_on(tree, run):
    minimal_host(tree)
    tree.write(TOP, NEVER + "\n")
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz ro transparent_hugepage=madvise\n")
    tree.write("/usr/sbin/grubby", "", 0o755)
    found = finding(run_thp(run, tree))
    assert "The kernel starts the top level at `madvise` (transparent_hugepage=madvise)." in found["message"]
    assert "a kernel argument would not stop it" in found["message"]
    assert not any("grubby" in c for c in commands(found))
    last = found["remediation"][-1]
    assert last["summary"].startswith("Find what writes `never` after boot and change it there: a tuned profile")
    assert last["commands"] == ["grep -rIls transparent_hugepage /etc"]


def test_tuned_profile_that_writes_never_is_named_and_overridden(tree, run):
    minimal_host(tree)
    tree.write(TOP, NEVER + "\n")
    tree.write("/boot/config-6.1.0-18-amd64", "CONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y\n")
    tree.write("/usr/sbin/tuned-adm", "", 0o755)
    tree.write("/etc/tuned/active_profile", "db-server\n")
    tree.write("/run/tuned/tuned.pid", "812\n")
    tree.write("/usr/lib/tuned/db-server/tuned.conf", "[main]\ninclude=db-base\n[sysctl]\nvm.swappiness=10\n")
    tree.write("/usr/lib/tuned/db-base/tuned.conf", "[main]\nsummary=base\n\n[vm]\ntransparent_hugepages=never\n")
    found = finding(run_thp(run, tree))
    assert "CONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y" in found["message"]
    assert {"path": "/usr/lib/tuned/db-base/tuned.conf", "value": "transparent_hugepages=never", "line": 5} in found["evidence"]
    cmds = commands(found)
    assert "sudo mkdir -p /etc/tuned/aidoctor-thp" in cmds
    assert any("'[vm]' transparent_hugepages=madvise" in c and "tee /etc/tuned/aidoctor-thp/tuned.conf" in c for c in cmds)
    assert cmds[-1] == "sudo sh -c " + quote(
        "set -f; tuned-adm profile $(tr -s ' \\t\\r\\v\\f' '\\n\\n\\n\\n\\n' 2>/dev/null </etc/tuned/active_profile "
        "| grep -vx aidoctor-thp) aidoctor-thp"
    )


def test_tuned_vm_setting_is_not_blamed_when_the_command_line_sets_thp(tree, run):
    # tuned's vm plugin ignores transparent_hugepages when the kernel command line sets it.
    minimal_host(tree)
    tree.write(TOP, NEVER + "\n")
    tree.write("/proc/cmdline", "ro transparent_hugepage=always\n")
    tree.write("/etc/tuned/active_profile", "db\n")
    tree.write("/etc/tuned/db/tuned.conf", "[vm]\ntransparent_hugepages=never\n")
    found = finding(run_thp(run, tree))
    assert not any(e["path"] == "/etc/tuned/db/tuned.conf" for e in found["evidence"])


@pytest.mark.unprovable(
    "an enabled unit writes `never` to the top level at boot, yet it runs madvise: the next boot turns THP off another way"
)
def test_only_writers_of_the_control_that_is_never_are_blamed(tree, run):
    minimal_host(tree)
    mthp(tree, MADVISE, SIZE_NEVER)
    tree.write("/etc/systemd/system/disable-thp.service", "[Service]\nExecStart=/bin/sh -c 'echo never > %s'\n" % TOP)
    tree.write("/etc/systemd/system/hugepages.service", "[Service]\nExecStart=/bin/sh -c 'echo 64 > /proc/sys/vm/nr_hugepages'\n")
    for unit in ("disable-thp.service", "hugepages.service"):
        tree.link("/etc/systemd/system/multi-user.target.wants/" + unit, "/etc/systemd/system/" + unit)
    tree.write("/etc/rc.local", "#!/bin/sh\n# echo never > %s\necho never > %s\n" % (PMD, PMD), mode=0o755)
    found = finding(run_thp(run, tree))
    paths = [e["path"] for e in found["evidence"]]
    assert "/etc/systemd/system/disable-thp.service" not in paths  # it writes the top level, which is madvise
    assert "/etc/systemd/system/hugepages.service" not in paths  # a hugetlb pool, not THP
    assert {"path": "/etc/rc.local", "value": "echo never > %s" % PMD, "line": 3} in found["evidence"]
    assert (
        "sudo sed -i --follow-symlinks -e '3s|^echo never > /sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled$|# &|' "
        "/etc/rc.local" in commands(found)
    )


def test_systemd_unit_that_writes_the_top_level(tree, run):
    minimal_host(tree)
    tree.write(TOP, NEVER + "\n")
    tree.write("/proc/cmdline", "ro transparent_hugepage=madvise\n")
    tree.write("/etc/systemd/system/disable-thp.service", "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo never > %s'\n" % TOP)
    tree.link("/etc/systemd/system/multi-user.target.wants/disable-thp.service", "/etc/systemd/system/disable-thp.service")
    found = finding(run_thp(run, tree))
    assert any(e["path"] == "/etc/systemd/system/disable-thp.service" and e["line"] == 3 for e in found["evidence"])
    assert "sudo systemctl disable disable-thp.service" in commands(found)


def test_thp_anon_that_turns_the_pmd_size_off_is_rewritten(tree, run):
    minimal_host(tree)
    mthp(tree, MADVISE, SIZE_NEVER, small="always")
    tree.write("/proc/cmdline", "ro thp_anon=64K:always;2M:never\n")
    tree.write("/usr/sbin/grubby", "", 0o755)
    found = finding(run_thp(run, tree))
    assert "`thp_anon=64K:always;2M:never` on the kernel command line sets 2 MiB pages to `never` at boot." in found["message"]
    assert commands(found) == ["echo inherit | sudo tee %s >/dev/null" % PMD]
    # GRUB reads an unquoted ";" as a command separator, so the new value is given to set by hand.
    assert found["remediation"][-1]["summary"].startswith(
        'Keep it at boot: replace `thp_anon=64K:always;2M:never` on the kernel command line with `thp_anon="64K:always;2048K:inherit"`'
    )


def test_thp_anon_only_about_the_pmd_size_is_removed(tree, run):
    minimal_host(tree)
    mthp(tree, MADVISE, SIZE_NEVER)
    tree.write("/proc/cmdline", "ro thp_anon=2M:never\n")
    tree.write("/usr/sbin/grubby", "", 0o755)
    # Without thp_anon= the PMD size inherits and the others are never: the same as asked for.
    assert commands(finding(run_thp(run, tree)))[-1] == "sudo grubby --update-kernel=ALL --remove-args=thp_anon"


def test_unknown_boot_default_keeps_the_kernel_argument(tree, run):
    minimal_host(tree)  # the build config has no THP default choice, the command line is silent
    tree.write(TOP, NEVER + "\n")
    found = finding(run_thp(run, tree))
    assert "Neither the kernel command line nor the kernel's build configuration says" in found["message"]
    assert any("transparent_hugepage=madvise" in s for s in summaries(found))
    assert not any(s.startswith("Find what writes") for s in summaries(found))


def test_in_a_container_the_writer_is_on_the_host(tree, run):
    minimal_host(tree)
    tree.write(TOP, NEVER + "\n")
    tree.write("/proc/cmdline", "ro transparent_hugepage=madvise\n")
    tree.write("/run/.containerenv", "")
    tree.write("/etc/rc.local", "echo never > %s\n" % TOP)  # the container's, not the host's
    found = finding(run_thp(run, tree))
    assert not any(e["path"] == "/etc/rc.local" for e in found["evidence"])
    last = found["remediation"][-1]
    assert last["on_host"] is True and "(not inside this container)" in last["summary"]


def test_overridden_tuned_setting_and_defrag_lines_are_not_blamed(tree, run):
    minimal_host(tree)
    tree.write(TOP, NEVER + "\n")
    tree.write("/proc/cmdline", "ro transparent_hugepage=madvise\n")
    tree.write("/etc/tuned/active_profile", "child\n")
    # The child's alias spelling overrides the parent's setting.
    tree.write("/etc/tuned/child/tuned.conf", "[main]\ninclude=parent\n[vm]\ntransparent_hugepage=madvise\n")
    tree.write("/usr/lib/tuned/parent/tuned.conf", "[vm]\ntransparent_hugepages=never\n")
    tree.write("/etc/rc.local", "echo never > %s/defrag\n" % THP)
    facts = Facts(Host(str(tree)))
    assert facts.get("thp_writers").found == ()
    assert facts.get("tuned").profiles == ("child",)
    found = finding(run_thp(run, tree))
    assert found["remediation"][-1]["summary"].startswith("Find what writes `never` after boot")


def test_an_rc_local_line_boot_never_reaches_writes_nothing(tree):
    from ai_doctor.facts import Facts
    from ai_doctor.host import Host

    line = "echo never > %s" % TOP
    for text, mode in (("#!/bin/sh\n%s\n" % line, 0o644), ("%s\n" % line, 0o755), ("#!/bin/sh\nexit 0\n%s\n" % line, 0o755)):
        tree.write("/etc/rc.local", text, mode=mode)
        assert Facts(Host(str(tree))).get("thp_writers").found == ()
    tree.write("/etc/rc.local", "#!/bin/sh\n%s\nexit 0\n" % line, mode=0o755)
    assert [w.line for w in Facts(Host(str(tree))).get("thp_writers").found] == [2]


def test_tuned_inline_comments_are_comments():
    sections = parse_tuned_conf("[cpu]\ngovernor=performance   # keep clocks high\n[vm]\ntransparent_hugepages=never # db\nx=a#b\n")
    assert sections["cpu"]["governor"] == (2, "performance")
    assert sections["vm"]["transparent_hugepages"] == (4, "never") and sections["vm"]["x"] == (5, "a#b")


def test_only_enabled_units_write_thp(tree):
    from ai_doctor.facts import Facts
    from ai_doctor.host import Host

    mongo = "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo never | tee %s > /dev/null'\n[Install]\nWantedBy=basic.target\n" % TOP
    tree.write("/usr/lib/systemd/system/disable-transparent-huge-pages.service", mongo)
    tree.write("/etc/systemd/system/disable-thp.service", mongo)  # installed, never enabled
    tree.link(
        "/etc/systemd/system/basic.target.wants/disable-transparent-huge-pages.service",
        "/usr/lib/systemd/system/disable-transparent-huge-pages.service",
    )
    writers = Facts(Host(str(tree))).get("thp_writers").found
    assert [(w.kind, w.path, w.line) for w in writers] == [("systemd", "/usr/lib/systemd/system/disable-transparent-huge-pages.service", 3)]


def test_a_masked_unit_never_runs(tree):
    from ai_doctor.facts import Facts
    from ai_doctor.host import Host

    unit = "[Service]\nExecStart=/bin/sh -c 'echo never > %s'\n" % TOP
    tree.write("/usr/lib/systemd/system/thp-never.service", unit)
    tree.link("/etc/systemd/system/multi-user.target.wants/thp-never.service", "/usr/lib/systemd/system/thp-never.service")
    tree.link("/etc/systemd/system/thp-never.service", "/dev/null")
    assert Facts(Host(str(tree))).get("thp_writers").found == ()


def test_a_tmpfiles_line_that_writes_never_at_boot(tree, run):
    minimal_host(tree)
    tree.write(TOP, NEVER + "\n")
    tree.write("/proc/cmdline", "ro transparent_hugepage=madvise\n")
    tree.write("/etc/tmpfiles.d/thp.conf", "# no THP for the database\nw /sys/kernel/mm/transparent_hugepage/enabled - - - - never\n")
    found = finding(run_thp(run, tree))
    line = "w /sys/kernel/mm/transparent_hugepage/enabled - - - - never"
    assert {"path": "/etc/tmpfiles.d/thp.conf", "value": line, "line": 2} in found["evidence"]
    assert (
        "sudo sed -i --follow-symlinks -e '2s|^w /sys/kernel/mm/transparent_hugepage/enabled - - - - never$|# &|' /etc/tmpfiles.d/thp.conf"
        in commands(found)
    )


def test_an_rc_local_command_continued_over_lines(tree):
    from ai_doctor.facts import Facts
    from ai_doctor.host import Host

    tree.write("/etc/rc.local", "#!/bin/sh\necho never > \\\n  %s\nexit 0\n" % TOP, mode=0o755)
    writers = Facts(Host(str(tree))).get("thp_writers").found
    assert [(w.line, w.last, w.text) for w in writers] == [(2, 3, "echo never > %s" % TOP)]
