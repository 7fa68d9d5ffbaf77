"""Remediation that is right for the host: which files are edited, what sorts last, what the
boot loader is told, and commands that a shell accepts and that do what they say."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rules import commands, finding, meminfo

from ai_doctor.shell import quote

from conftest import FIXTURES, minimal_host

GiB = 1 << 30


def test_unlinked_sysctl_conf_is_commented_out_too_since_sysctl_system_applies_it_last(tree, run):
    minimal_host(tree, overcommit="1")
    tree.write("/usr/lib/systemd/systemd-sysctl", "", 0o755)
    tree.write("/etc/sysctl.d/80-x.conf", "vm.overcommit_memory = 1\nvm.overcommit_ratio = 95\n")
    tree.write("/etc/sysctl.conf", "vm.overcommit_memory=1\n")  # not linked into /etc/sysctl.d
    minimal_host(tree, overcommit="2")
    found = finding(run("--root", tree, "--model-size", "40G", "--format", "json"), "overcommit.strict-headroom")
    cmds = commands(found)
    assert "sudo sed -i --follow-symlinks -e '1s|^vm\\.overcommit_memory=1$|# &|' /etc/sysctl.conf" in cmds
    # Back in the heuristic mode the ratio means nothing: its line goes too.
    both = "-e '1s|^vm\\.overcommit_memory = 1$|# &|' -e '2s|^vm\\.overcommit_ratio = 95$|# &|'"
    assert "sudo sed -i --follow-symlinks %s /etc/sysctl.d/80-x.conf" % both in cmds
    assert cmds[-1] == "sudo sysctl --system"


def test_every_vendor_file_that_sets_the_key_is_hidden_by_an_edited_copy(tree, run):
    minimal_host(tree, overcommit="2")
    tree.write("/usr/lib/sysctl.d/99-zzz-batch.conf", "vm.overcommit_memory = 2\n")
    tree.write("/usr/lib/sysctl.d/zz-tuning.conf", "vm.overcommit_memory = 2\n")
    cmds = commands(finding(run("--root", tree, "--model-size", "40G", "--format", "json"), "overcommit.strict-headroom"))
    # A drop-in merely sorted after them would leave two values in the files (persist.sysctl-conflict).
    for name in ("99-zzz-batch.conf", "zz-tuning.conf"):
        assert any(c.startswith("if [ -e /etc/sysctl.d/%s ]" % name) and "/usr/lib/sysctl.d/%s" % name in c for c in cmds)
    # Back at the kernel's default, nothing needs a line of its own.
    assert not any("'vm.overcommit_memory = 0'" in c for c in cmds)
    assert "sudo mkdir -p /etc/sysctl.d" in cmds


def test_a_linked_vendor_file_is_hidden_under_its_link_name(tree, run):
    minimal_host(tree, overcommit="2")
    tree.write("/usr/share/tuning/a.conf", "vm.overcommit_memory = 2\n")
    tree.link("/usr/lib/sysctl.d/95-tuning.conf", "/usr/share/tuning/a.conf")
    cmds = commands(finding(run("--root", tree, "--model-size", "40G", "--format", "json"), "overcommit.strict-headroom"))
    assert any("sudo tee /etc/sysctl.d/95-tuning.conf" in c and "/usr/share/tuning/a.conf" in c for c in cmds)


def test_vendor_file_is_overridden_by_an_edited_copy_in_etc_never_edited_in_place(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=512, HugePages_Free=512))
    tree.write("/proc/sys/vm/nr_hugepages", "512\n")
    tree.write("/usr/lib/sysctl.d/60-dpdk.conf", "kernel.x = 1\nvm.nr_hugepages = 512\n")
    cmds = commands(finding(run("--root", tree, "--format", "json"), "hugepages.unused"))
    # nr_hugepages=0 is the default: the vendor file's line is hidden by an edited copy, nothing else.
    assert any(c.startswith("if [ -e /etc/sysctl.d/60-dpdk.conf ]") for c in cmds)
    assert not any("tee /etc/sysctl.d/90-aidoctor-hugepages.conf" in c for c in cmds)
    assert not any(
        "sed -i" in c and c.split("sed -i", 1)[1].split(";")[0].rstrip().endswith("/usr/lib/sysctl.d/60-dpdk.conf") for c in cmds
    )


def test_vendor_file_asking_for_a_pool_the_kernel_cannot_have_is_overridden_by_a_copy(tree, run):
    minimal_host(tree, meminfo=meminfo().replace("Hugepagesize:", "X:"))
    (tree.root / "proc/sys/vm/nr_hugepages").unlink()
    tree.write("/usr/lib/sysctl.d/60-dpdk.conf", "kernel.x = 1\nvm.nr_hugepages = 512\n")
    found = finding(run("--root", tree, "--format", "json"), "hugepages.unsupported")
    script = "-e '2s|^vm\\.nr_hugepages = 512$|# &|'"
    copy = "sudo sed %s /usr/lib/sysctl.d/60-dpdk.conf | sudo tee /etc/sysctl.d/60-dpdk.conf >/dev/null" % script
    assert "if [ -e /etc/sysctl.d/60-dpdk.conf ]; then sudo sed -i --follow-symlinks %s /etc/sysctl.d/60-dpdk.conf; else %s; fi" % (
        script,
        copy,
    ) in commands(found)


def test_container_sysctl_files_are_not_the_hosts_configuration(tree, run):
    minimal_host(tree)
    tree.write("/run/.containerenv", "")
    tree.write("/.dockerenv", "")
    tree.write("/proc/self/cgroup", "0::/system.slice/docker-0123abcd.scope\n")
    tree.write("/etc/sysctl.d/80-pool.conf", "vm.nr_hugepages = 512\n")
    result = run("--root", tree, "--format", "json")
    assert result.statuses()["hugepages.shortfall"] == "pass"  # no request: the image's file never reaches the kernel
    assert "hugepages.shortfall" not in result.findings()


def test_releasing_one_size_keeps_the_other_sizes_boot_reservation(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=512, HugePages_Free=512))
    tree.write("/proc/cmdline", "ro default_hugepagesz=2M hugepagesz=1G hugepages=4 hugepagesz=2M hugepages=512\n")
    tree.write("/usr/sbin/grubby", "", 0o755)
    base = "/sys/kernel/mm/hugepages/hugepages-%dkB/"
    for size, total, free in ((2048, 512, 512), (1 << 20, 4, 0)):
        tree.write(base % size + "nr_hugepages", "%d\n" % total)
        tree.write(base % size + "free_hugepages", "%d\n" % free)
    found = finding(run("--root", tree, "--format", "json"), "hugepages.unused")
    # The 2 MiB default goes with its pool; the 1 GiB pool stays.
    assert (
        "sudo grubby --update-kernel=ALL --remove-args='default_hugepagesz hugepages hugepagesz' --args='hugepagesz=1G hugepages=4'"
        in commands(found)
    )
    assert "512 huge pages of 2 MiB" in found["message"]


def test_releasing_the_only_boot_pool_that_a_sysctl_also_sets(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=512, HugePages_Free=512))
    tree.write("/proc/cmdline", "ro hugepages=512\n")
    tree.write("/etc/sysctl.d/80-pool.conf", "vm.nr_hugepages = 512\n")
    tree.write("/usr/sbin/grubby", "", 0o755)
    cmds = commands(finding(run("--root", tree, "--format", "json"), "hugepages.unused"))
    assert "sudo grubby --update-kernel=ALL --remove-args=hugepages" in cmds
    assert any("sed -i" in c and "/etc/sysctl.d/80-pool.conf" in c for c in cmds)


def test_pool_declared_with_hugepages_option_is_not_unused(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=512, HugePages_Free=512))
    result = run("--root", tree, "--hugepages", "512", "--format", "json")
    assert result.statuses()["hugepages.unused"] == "pass"
    assert "declared as needed" in next(c["reason"] for c in result.json["checks"] if c["rule"] == "hugepages.unused")


def test_surplus_pages_do_not_count_toward_the_requested_pool(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=512, HugePages_Free=0, HugePages_Surp=100))
    tree.write("/etc/sysctl.d/80-pool.conf", "vm.nr_hugepages = 512\n")
    found = finding(run("--root", tree, "--format", "json"), "hugepages.shortfall")
    assert "but the pool holds 412 besides 100 surplus: 100 pages (200.0 MiB) short" in found["message"]


def test_a_parameter_the_grub_file_sets_is_cut_out_before_the_drop_in_adds_it(tree, run, tmp_path):
    minimal_host(tree)
    tree.write("/usr/sbin/update-grub", "", 0o755)
    grub = (
        'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="quiet hugepages=16 hugepagesz=2M"\n'
        "GRUB_CMDLINE_LINUX_DEFAULT=hugepages=8\n# hugepages=3 in a comment\n"
    )
    tree.write("/etc/default/grub", grub)  # pending, not booted yet
    cmds = commands(finding(run("--root", tree, "--hugepages", "64", "--format", "json"), "hugepages.shortfall"))
    sed = next(c for c in cmds if c.startswith("sudo sed -i --follow-symlinks -E") and c.endswith(" /etc/default/grub"))
    assert "/etc/default/grub.d/90-aidoctor-hugepagesz.cfg" in "\n".join(cmds)
    # Run the very command on a copy: the pairs go, everything else stays.
    copy = tmp_path / "grub"
    copy.write_text(grub)
    subprocess.run(["bash", "-c", sed.replace("sudo ", "", 1).replace("/etc/default/grub", str(copy))], check=True)
    assert copy.read_text() == 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="quiet"\nGRUB_CMDLINE_LINUX_DEFAULT=\n# hugepages=3 in a comment\n'


def test_a_parameter_set_only_outside_grubs_files_goes_into_grub_cmdline_linux(tree, run):
    minimal_host(tree)
    tree.write("/proc/cmdline", "ro quiet hugepages=16\n")  # from a grub.cfg edited by hand
    tree.write("/usr/sbin/update-grub", "", 0o755)
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet"\n')
    cmds = commands(finding(run("--root", tree, "--hugepages", "64", "--format", "json"), "hugepages.shortfall"))
    # update-grub rewrites grub.cfg whole, hand edits included: the parameter goes where it reads.
    assert (
        """sudo sed -i --follow-symlinks -E 's/^(GRUB_CMDLINE_LINUX="[^"$`\\\\]*)"$/\\1 hugepagesz=2M hugepages=64"/' /etc/default/grub"""
        in cmds
    )
    assert cmds[-1] == "sudo update-grub"
    assert not any("/etc/default/grub.d" in c for c in cmds)


def test_grub_drop_in_of_our_own_is_rewritten_in_place(tree, run):
    minimal_host(tree)
    tree.write("/proc/cmdline", "ro quiet hugepagesz=2M hugepages=16\n")
    tree.write("/usr/sbin/update-grub", "", 0o755)
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet"\n')
    tree.write("/etc/default/grub.d/90-aidoctor-hugepagesz.cfg", 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX hugepagesz=2M hugepages=16"\n')
    cmds = commands(finding(run("--root", tree, "--hugepages", "64", "--format", "json"), "hugepages.shortfall"))
    assert "printf '%s\\n' 'GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX hugepagesz=2M hugepages=64\"' | " in "\n".join(cmds)
    assert "sudo tee /etc/default/grub.d/90-aidoctor-hugepagesz.cfg >/dev/null" in "\n".join(cmds)


def test_first_default_hugepagesz_wins_and_counts_are_decimal(tree, run):
    from ai_doctor.facts.cmdline import Cmdline, split_cmdline

    def pools(line):
        cmdline = Cmdline(line, tuple(split_cmdline(line)), "/proc/cmdline")
        return [(r.page_size, r.count) for r in cmdline.hugepage_requests(2 << 20)]

    # A second default_hugepagesz= is refused, and so is the hugepages= after it (mm/hugetlb.c).
    assert pools("default_hugepagesz=1G hugepages=2 default_hugepagesz=2M hugepages=9 hugepagesz=2M hugepages=0x10") == [
        (1 << 30, 2),
        (2 << 20, 0),  # sscanf %lu reads the 0 of 0x10
    ]
    assert pools("hugepages=010") == [(2 << 20, 10)]
    assert pools("hugepages=0:010,1:5") == [(2 << 20, 15)]


def _all_commands(result):
    return [c for f in result.json["findings"] for step in f["remediation"] for c in step["commands"]]


def test_every_command_of_a_troubled_host_is_valid_shell(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=512, HugePages_Free=512), overcommit="2")
    tree.write("/proc/cmdline", "ro hugepagesz=1G hugepages=4 hugepagesz=2M hugepages=512 transparent_hugepage=never\n")
    tree.write("/sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n")
    tree.write("/etc/sysctl.d/80-x.conf", "vm.nr_hugepages = 512\nvm.overcommit_ratio = 50\n")
    tree.write("/usr/sbin/update-grub", "", 0o755)
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet"\n')
    cmds = _all_commands(run("--root", tree, "--model-size", "70G", "--hugepages", "600", "--format", "json"))
    assert len(cmds) >= 8
    _assert_valid_shell(cmds)


@pytest.mark.parametrize("name", sorted(path.parent.name for path in FIXTURES.glob("*/expect.json")))
def test_every_command_of_every_fixture_is_valid_shell(run, name):
    expect = json.loads((FIXTURES / name / "expect.json").read_text())
    result = run("--root", FIXTURES / name / "root", "--format", "json", *expect["args"])
    cmds = _all_commands(result)
    _assert_valid_shell(cmds)
    if name == "image-without-proc":
        # An image is changed through chroot, so a pasted command never edits this machine.
        root = str(FIXTURES / name / "root")
        assert cmds and all(root in c for c in cmds if not c.startswith(("sync", "cat ", "echo ", "printf "))), cmds


def _assert_valid_shell(cmds):
    for command in cmds:
        check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert check.returncode == 0, (command, check.stderr)


def test_comment_out_script_comments_exactly_the_keys(tree, run, tmp_path):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=512, HugePages_Free=512))
    sample = (
        "# pools\nvm.nr_hugepages = 512\n  -vm.nr_hugepages=16\nvm.nr_hugepages_mempolicy = 1\n"
        "vm/nr_hugepages = 8\nkernel.x = vm.nr_hugepages\n"
    )
    tree.write("/etc/sysctl.d/80-pool.conf", sample)
    cmds = commands(finding(run("--root", tree, "--format", "json"), "hugepages.unused"))
    sed = next(c for c in cmds if "sed -i" in c)
    words = shlex.split(sed)
    target = tmp_path / "copy.conf"
    target.write_text(sample)
    subprocess.run(words[words.index("sed") : -1] + [str(target)], check=True)
    assert target.read_text() == (
        "# pools\n# vm.nr_hugepages = 512\n#   -vm.nr_hugepages=16\nvm.nr_hugepages_mempolicy = 1\n"
        "# vm/nr_hugepages = 8\nkernel.x = vm.nr_hugepages\n"
    )


def test_swap_file_on_btrfs_is_made_without_copy_on_write(tree, run):
    # Before 5.2 the heuristic judges free memory + free swap: swap can make up a small deficit.
    minimal_host(tree, release="4.19.0-26-amd64")
    tree.write("/proc/self/mountinfo", "26 1 0:30 /@ / rw,relatime - btrfs /dev/sda2 rw\n")
    cmds = commands(finding(run("--root", tree, "--model-size", "61G", "--format", "json"), "overcommit.heuristic-oversize"))
    guard = "swapon --show=NAME --noheadings | grep -qxF /swapfile.aidoctor || "
    assert cmds[:3] == [
        guard + "sudo truncate -s 0 /swapfile.aidoctor",
        guard + "sudo chattr +C /swapfile.aidoctor",
        guard + "sudo fallocate -l 2G /swapfile.aidoctor",
    ]
    assert cmds[-1] == guard + "sudo swapon /swapfile.aidoctor"


def test_governor_on_a_kernel_before_5_9_without_tuned_says_how_to_keep_it(tree, run):
    minimal_host(tree, release="5.4.0-150-generic")
    base = "/sys/devices/system/cpu/cpufreq/policy0"
    tree.write(base + "/scaling_governor", "ondemand\n")
    tree.write(base + "/affected_cpus", "0\n")
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    assert "kernels before 5.9 have no boot parameter for the default governor" in found["remediation"][-1]["summary"]
    assert not any("cpufreq.default_governor" in c for c in commands(found))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12))
def test_a_quoted_word_is_one_printable_shell_word(word):
    import subprocess

    quoted = quote(word)
    assert quoted.isprintable()
    done = subprocess.run(["bash", "-c", "printf %s " + quoted], capture_output=True, env={"LC_ALL": "C.UTF-8"})
    assert done.stdout == word.encode("utf-8", "surrogateescape")


def test_a_file_name_that_is_not_utf8_is_quoted_as_its_bytes():
    name = b"/etc/sysctl.d/bad\xff.conf".decode("utf-8", "surrogateescape")  # as os.listdir gives it
    assert quote(name) == "$'/etc/sysctl.d/bad\\xff.conf'"
    done = subprocess.run(["bash", "-c", "printf %s " + quote(name)], capture_output=True)
    assert done.stdout == b"/etc/sysctl.d/bad\xff.conf"


def test_a_missing_sysctl_d_is_created_before_the_drop_in(tree, run):
    minimal_host(tree, overcommit="2")
    tree.write("/etc/sysctl.conf", "vm.overcommit_memory = 2\n")  # strict at boot too: the ratio is kept
    assert not (tree.root / "etc/sysctl.d").exists()
    cmds = commands(finding(run("--root", tree, "--model-size", "40G", "--format", "json"), "overcommit.strict-headroom"))
    made = cmds.index("sudo mkdir -p /etc/sysctl.d")
    assert cmds[made + 1].endswith("| sudo tee /etc/sysctl.d/90-aidoctor-overcommit.conf >/dev/null")
    # Back to the heuristic mode, the drop-in the ratio step may have written goes.
    assert "sudo rm -f /etc/sysctl.d/90-aidoctor-overcommit.conf" in cmds


def test_a_limit_that_boot_ignores_is_raised_now_only(tree, run):
    # Strict by hand, heuristic at boot: a ratio kept for boot would be ignored there.
    minimal_host(tree, overcommit="2")
    found = finding(run("--root", tree, "--model-size", "40G", "--format", "json"), "overcommit.strict-headroom")
    first = found["remediation"][0]
    assert first["commands"] == ["sudo sysctl -w vm.overcommit_ratio=73"]
    assert first["summary"].endswith("(at boot vm.overcommit_memory is 0, which ignores the limit: nothing to keep for boot)")
    assert not found["remediation"][1]["summary"].startswith("Make it persistent")


def test_unprintable_non_ascii_is_quoted_as_bytes_for_any_locale():
    assert quote("a\u202eb") == "$'a\\xe2\\x80\\xaeb'"
    done = subprocess.run(["bash", "-c", "printf %s " + quote("a\u202eb")], capture_output=True, env={"LC_ALL": "C"})
    assert done.stdout == "a\u202eb".encode()
