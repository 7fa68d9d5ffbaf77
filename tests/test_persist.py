"""Persistence of sysctl settings: drift between boot and now, conflicts, duplicates."""

from __future__ import annotations

import subprocess

import pytest
from test_rules import commands, finding

from conftest import minimal_host


def test_conflict_names_the_file_that_wins_and_why(tree, run):
    minimal_host(tree)
    tree.write("/etc/sysctl.d/10-tuning.conf", "vm.swappiness = 10\nvm.max_map_count = 262144\n")
    tree.write("/usr/lib/sysctl.d/50-default.conf", "vm.swappiness = 60\nvm.max_map_count = 262144\n")
    found = finding(run("--root", tree, "--format", "json"), "persist.sysctl-conflict")
    assert "vm.swappiness is set to different values in 2 files: /usr/lib/sysctl.d/50-default.conf:1 wins" in found["message"]
    assert "because 50-default.conf is read last in sysctl.d order" in found["message"]
    assert "vm.max_map_count" not in found["message"]  # same value twice is no conflict
    # The package's file is not edited; the overridden /etc line is commented out by number.
    assert commands(found) == ["sudo sed -i --follow-symlinks -e '1s|^vm\\.swappiness = 10$|# &|' /etc/sysctl.d/10-tuning.conf"]


def test_no_conflict_when_files_agree(tree, run):
    minimal_host(tree)
    tree.write("/etc/sysctl.d/10-a.conf", "vm.swappiness = 10\n")
    tree.write("/etc/sysctl.d/20-b.conf", "vm.swappiness=10\n")
    assert run("--root", tree, "--format", "json").statuses()["persist.sysctl-conflict"] == "pass"


def test_duplicates_in_one_file_keep_the_last(tree, run, tmp_path):
    minimal_host(tree)
    text = "vm.swappiness = 10\nvm.nr_hugepages = 0\nvm.swappiness = 1\n"
    tree.write("/etc/sysctl.conf", text)
    tree.link("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")
    found = finding(run("--root", tree, "--format", "json"), "persist.sysctl-conf-duplicates")
    assert found["message"].startswith("/etc/sysctl.conf sets vm.swappiness 2 times (lines 1, 3, with different values; line 3 wins)")
    command = commands(found)[0]
    copy = tmp_path / "sysctl.conf"
    copy.write_text(text)
    subprocess.run(["bash", "-c", command.replace("sudo ", "").replace("/etc/sysctl.conf", str(copy))], check=True)
    assert copy.read_text() == "# vm.swappiness = 10\nvm.nr_hugepages = 0\nvm.swappiness = 1\n"


def test_drift_between_boot_and_now(tree, run):
    minimal_host(tree)
    tree.write("/etc/sysctl.d/60-vm.conf", "vm.swappiness = 10\nvm.nr_hugepages = 16\nvm.dirty_ratio = 20\n")
    tree.write("/proc/sys/vm/swappiness", "60\n")  # set by hand since boot, or the file never applied
    tree.write("/proc/sys/vm/dirty_ratio", "20\n")
    tree.write("/proc/sys/vm/nr_hugepages", "64\n")  # more than boot asks for: lost at reboot
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "persist.sysctl-drift"]
    by_key = {f["message"].split()[0]: f for f in found}
    assert set(by_key) == {"vm.swappiness", "vm.nr_hugepages"}
    assert by_key["vm.swappiness"]["severity"] == "medium" and by_key["vm.nr_hugepages"]["severity"] == "high"
    assert "boot sets 10 (/etc/sysctl.d/60-vm.conf:1 wins)" in by_key["vm.swappiness"]["message"]
    # Each key keeps its own drop-in, so taking both fixes keeps both values.
    assert any("/etc/sysctl.d/90-aidoctor-drift-vm-swappiness.conf" in c for c in commands(by_key["vm.swappiness"]))
    assert any("/etc/sysctl.d/90-aidoctor-drift-vm-nr_hugepages.conf" in c for c in commands(by_key["vm.nr_hugepages"]))
    # Keeping a running value re-applies nothing: a reload would reset the other drifted key.
    keep = [step for step in by_key["vm.swappiness"]["remediation"] if step["summary"].startswith("Keep")][0]
    assert "sysctl --system" not in " ".join(keep["commands"]) and "reload" not in keep["summary"]
    # Or the one key back to what boot sets: `sysctl --system` would reset every other key too.
    assert by_key["vm.swappiness"]["remediation"][-1]["commands"] == ["sudo sysctl -w vm.swappiness=10"]


def test_a_pool_short_of_its_request_is_shortfall_not_drift(tree, run):
    minimal_host(tree)
    tree.write("/etc/sysctl.d/60-vm.conf", "vm.nr_hugepages = 512\n")
    tree.write("/proc/sys/vm/nr_hugepages", "100\n")
    result = run("--root", tree, "--format", "json")
    assert result.statuses()["persist.sysctl-drift"] == "pass"


def test_drift_needs_a_running_kernel(tree, run):
    tree.write("/etc/sysctl.d/60-vm.conf", "vm.swappiness = 10\n")
    tree.write("/etc/os-release", 'ID=debian\nPRETTY_NAME="Debian"\n')
    assert run("--root", tree, "--format", "json", "-v").statuses()["persist.sysctl-drift"] == "skip"


def test_rc_local_that_runs_its_tuning_passes(tree, run):
    minimal_host(tree)
    tree.write("/etc/rc.local", "#!/bin/sh -e\necho none > /sys/block/nvme0n1/queue/scheduler\nexit 0\n", 0o755)
    assert run("--root", tree, "--format", "json").statuses()["persist.rc-local-ineffective"] == "pass"


def test_rc_local_without_an_interpreter_line_loses_a_pool(tree, run):
    minimal_host(tree)
    tree.write("/etc/rc.d/rc.local", "sysctl -w vm.nr_hugepages=512\n", 0o755)
    found = finding(run("--root", tree, "--format", "json"), "persist.rc-local-ineffective")
    assert found["severity"] == "high" and "no interpreter line" in found["message"]
    # The first way comments the dead line out; a pool that never existed is not made one.
    comment, keep = found["remediation"]
    assert comment["commands"] == ["sudo sed -i --follow-symlinks -e '1s|^sysctl -w vm\\.nr_hugepages=512$|# &|' /etc/rc.d/rc.local"]
    assert "asks for a huge page pool, which never existed and is not made one here" in comment["summary"]
    # Or let it run: an interpreter line only where there is none yet, so a second run changes nothing.
    assert keep["commands"] == [
        "sudo head -n 1 /etc/rc.d/rc.local | grep -q '^#!' || sudo sed -i --follow-symlinks '1i #!/bin/sh' /etc/rc.d/rc.local"
    ]


def test_rc_local_tuning_after_exit_0(tree, run):
    minimal_host(tree)
    tree.write("/etc/rc.local", "#!/bin/sh\nexit 0\necho never > /sys/kernel/mm/transparent_hugepage/enabled\n", 0o755)
    found = finding(run("--root", tree, "--format", "json"), "persist.rc-local-ineffective")
    assert "its tuning comes after `exit 0` (line 2)" in found["message"] and found["severity"] == "medium"


def test_a_snapshot_keeps_the_mode_of_a_file_it_read(run, tree, tmp_path):
    minimal_host(tree)
    tree.write("/etc/rc.local", "#!/bin/sh -e\nsysctl -w vm.swappiness=10\n", 0o755)
    assert run("snapshot", "--root", tree, "--dir", "-o", str(tmp_path / "snap")).code == 0
    copy = tmp_path / "snap/etc/rc.local"
    assert copy.read_text().startswith("#!/bin/sh") and copy.stat().st_mode & 0o111


def test_an_exit_inside_a_branch_does_not_end_rc_local(tree, run):
    minimal_host(tree)
    text = "#!/bin/sh\nif [ -e /etc/skip ]; then\n    exit 0\nfi\necho 1024 > /proc/sys/vm/nr_hugepages\n"
    tree.write("/etc/rc.local", text, 0o755)
    assert run("--root", tree, "--format", "json").statuses()["persist.rc-local-ineffective"] == "pass"


def test_line_numbers_count_newlines_only(tree, run):
    minimal_host(tree)
    tree.write("/etc/sysctl.d/60-x.conf", "# a\x0c form feed\nvm.swappiness = 10\nvm.swappiness = 20\n")
    found = finding(run("--root", tree, "--format", "json"), "persist.sysctl-conf-duplicates")
    assert "(lines 2, 3, with different values; line 3 wins)" in found["message"]


def test_sysctl_conf_wins_under_procps_for_its_own_reason(tree, run):
    minimal_host(tree)
    tree.write("/etc/sysctl.conf", "vm.swappiness = 60\n")
    tree.write("/etc/sysctl.d/zz-tune.conf", "vm.swappiness = 10\n")
    found = finding(run("--root", tree, "--format", "json"), "persist.sysctl-conflict")
    assert "because sysctl --system reads /etc/sysctl.conf after every drop-in" in found["message"]


@pytest.mark.parametrize(
    "text, lost",
    [
        # An exit inside an if at column 0 ends nothing when the test fails.
        ("#!/bin/sh\nif [ -e /etc/skip-tuning ]; then\nexit 0\nfi\nsysctl -w vm.nr_hugepages=1024\n", None),
        ("#!/bin/sh\nexit 0 # nothing below runs\nsysctl -w vm.nr_hugepages=1024\n", "after `exit 0 # nothing below runs` (line 2)"),
        ("#!/bin/sh\nexit 1\nsysctl -w vm.nr_hugepages=1024\n", "after `exit 1` (line 2)"),
        ("#!/bin/sh\r\nsysctl -w vm.nr_hugepages=1024\r\n", "its lines end in CRLF"),
        # A subshell's exit ends the subshell; a here-document's lines are data.
        ("#!/bin/sh\n( exit 0 )\nsysctl -w vm.nr_hugepages=1024\n", None),
        ("#!/bin/sh\ncat > /tmp/x.sh <<EOF\nexit 0\nEOF\nsysctl -w vm.nr_hugepages=1024\n", None),
        # exec replaces the shell; a second command on the line runs unconditionally.
        ("#!/bin/sh\nexec /usr/local/sbin/tune.sh\nsysctl -w vm.nr_hugepages=1024\n", "after `exec /usr/local/sbin/tune.sh` (line 2)"),
        ("#!/bin/sh\ntrue; exit 0\nsysctl -w vm.nr_hugepages=1024\n", "after `true; exit 0` (line 2)"),
        ("#!/bin/sh\n[ -e /etc/skip ] && exit 0\nsysctl -w vm.nr_hugepages=1024\n", None),
    ],
)
def test_rc_local_exits_and_line_endings_as_the_shell_sees_them(tree, run, text, lost):
    tree.write("/etc/os-release", "ID=debian\n")
    tree.write("/etc/rc.local", text, 0o755)
    result = run("--root", tree, "--format", "json")
    found = [f for f in result.json["findings"] if f["rule"] == "persist.rc-local-ineffective"]
    if lost is None:
        assert not found
    else:
        assert lost in found[0]["message"] and found[0]["severity"] == "high"


def test_letting_rc_local_run_warns_of_the_thp_line_it_would_run(tree, run):
    tree.write("/etc/os-release", "ID=debian\n")
    tree.write("/etc/rc.local", "#!/bin/sh\nsysctl -w vm.swappiness=10\necho never > /sys/kernel/mm/transparent_hugepage/enabled\n", 0o644)
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "persist.rc-local-ineffective"][0]
    keep = [s for s in found["remediation"] if "keep rc.local and let it run" in s["summary"]][0]
    assert keep["summary"].startswith("Or, in the image at ")
    assert "comment out line 3, which would then write `never`" in keep["summary"]


@pytest.mark.parametrize(
    "text",
    [
        # The guides' snippet: commenting out the echo alone would leave an if block that no longer parses.
        "if test -f /sys/kernel/mm/transparent_hugepage/enabled; then\n   echo never > /sys/kernel/mm/transparent_hugepage/enabled\nfi\n",
        "echo never > \\\n  /sys/kernel/mm/transparent_hugepage/enabled\n",
    ],
)
def test_letting_rc_local_run_comments_out_the_whole_thp_command_and_later_exits(tree, run, text):
    minimal_host(tree)
    rc = "#!/bin/sh\nexit 0\n" + text + "exit 0\necho 5 > /proc/sys/vm/swappiness\n"
    tree.write("/etc/rc.local", rc, 0o755)
    done = run(
        "fix", "--root", tree, "--choose", "persist.rc-local-ineffective=2", "--only", "persist.rc-local-ineffective", "--apply", "--yes"
    )
    assert done.code == 0, done.out
    result = (tree.root / "etc/rc.local").read_text()
    body = "".join("# " + line + "\n" if line.strip() else "\n" for line in text.splitlines())
    assert result == "#!/bin/sh\n" + body + "# exit 0\necho 5 > /proc/sys/vm/swappiness\nexit 0\n"
    subprocess.run(["sh", "-n", str(tree.root / "etc/rc.local")], check=True)


def _overcommit(tree, running_mode, running_ratio, files):
    # 64 GiB, 4 GiB committed, no swap.
    minimal_host(tree, overcommit=str(running_mode))
    tree.write("/proc/sys/vm/overcommit_ratio", "%d\n" % running_ratio)
    tree.write("/run/systemd/system/.keep", "")
    tree.write("/etc/sysctl.d/90-overcommit.conf", files)


def test_a_running_strict_mode_that_starves_is_never_kept_by_its_drift_fix(tree, run):
    # Kept with the running ratio of 30 (limit 19.2 GiB), strict mode would starve the model for good.
    _overcommit(tree, 2, 30, "vm.overcommit_memory = 0\nvm.overcommit_ratio = 90\n")
    drift = [
        f for f in run("--root", tree, "--model-size", "20G", "--format", "json").json["findings"] if f["rule"] == "persist.sysctl-drift"
    ]
    assert len(drift) == 2
    for found in drift:
        assert [s["summary"].split(" ")[0] for s in found["remediation"]] == ["Set"], found["remediation"]
    mode = [f for f in drift if "vm.overcommit_memory is 2" in f["message"]][0]
    assert "Kept at boot, strict mode with the running pair would make its commit limit of 19.2 GiB permanent" in mode["message"]
    assert commands(mode) == ["sudo sysctl -w vm.overcommit_memory=0"]


def test_setting_strict_mode_back_sets_the_boot_ratio_first(tree, run):
    # With the running ratio of 5, mode 2 alone would set a commit limit of 3.2 GiB at once.
    _overcommit(tree, 0, 5, "vm.overcommit_memory = 2\nvm.overcommit_ratio = 90\n")
    drift = [
        f for f in run("--root", tree, "--model-size", "20G", "--format", "json").json["findings"] if f["rule"] == "persist.sysctl-drift"
    ]
    mode = [f for f in drift if "vm.overcommit_memory is 0" in f["message"]][0]
    assert "sudo sysctl -w vm.overcommit_ratio=90 vm.overcommit_memory=2" in commands(mode)
    # And not at all where the boot pair is short itself.
    tree.write("/etc/sysctl.d/90-overcommit.conf", "vm.overcommit_memory = 2\nvm.overcommit_ratio = 10\n")
    drift = [
        f for f in run("--root", tree, "--model-size", "20G", "--format", "json").json["findings"] if f["rule"] == "persist.sysctl-drift"
    ]
    mode = [f for f in drift if "vm.overcommit_memory is 0" in f["message"]][0]
    assert not any("vm.overcommit_memory=2" in c for c in commands(mode))
    assert "Set back now, strict mode with the pair boot sets would enforce a commit limit of 6.4 GiB" in mode["message"]


def test_many_keys_set_in_two_files_are_each_one_conflict(run, tmp_path):
    # Grouped in one pass (a lookup per key over all assignments was quadratic: 50,000 took
    # minutes); benchmarks/hostile.py times the full-size tree with the real CLI.
    from conftest import Tree

    tree = minimal_host(Tree(tmp_path / "root"))
    count = 2_000
    tree.write("/etc/sysctl.d/10-a.conf", "".join("net.test.key%d = 1\n" % i for i in range(count)))
    tree.write("/etc/sysctl.d/20-b.conf", "".join("net.test.key%d = 2\n" % i for i in range(count)))
    result = run("--root", tree.root, "--format", "json", "--model-size", "1G")
    conflicts = [f for f in result.json["findings"] if f["rule"] == "persist.sysctl-conflict"]
    assert len(conflicts) == count
    assert conflicts[0]["message"].startswith("net.test.key0 is set to different values in 2 files: /etc/sysctl.d/20-b.conf:1 wins")


def _trixie(tree, sysctl_conf=None):
    """A running Debian 13 host: systemd-sysctl, no /etc/sysctl.d/99-sysctl.conf link."""
    minimal_host(tree, release="6.12.48+deb13-amd64")
    tree.write("/usr/lib/systemd/systemd-sysctl", mode=0o755)
    tree.write("/proc/1/comm", "systemd\n")
    tree.write("/usr/lib/sysctl.d/50-pid-max.conf", "kernel.pid_max = 4194304\n")
    tree.write("/etc/sysctl.d/README.sysctl", "procps ships this folder with a README only\n")
    if sysctl_conf is not None:
        tree.write("/etc/sysctl.conf", sysctl_conf)
    return tree


GUIDE_BLOCK = "vm.nr_hugepages = 128\nvm.overcommit_memory = 1\nvm.overcommit_ratio = 95\n"


def test_sysctl_conf_that_boot_never_reads_is_high_when_the_pool_is_lost(tree, run):
    _trixie(tree, "# local settings\n" + GUIDE_BLOCK)
    found = finding(run("--root", tree, "--format", "json"), "persist.sysctl-conf-unread")
    assert found["severity"] == "high"
    assert found["message"].startswith(
        "systemd-sysctl applies only the sysctl.d folders, and no /etc/sysctl.d/99-sysctl.conf links /etc/sysctl.conf in: "
        "3 settings of it never reach the kernel at boot"
    )
    assert "vm.nr_hugepages = 128 (line 2, boot: no file sets it, so the kernel's default stays)" in found["message"]
    assert found["message"].endswith(
        "Among them vm.nr_hugepages, vm.overcommit_memory, vm.overcommit_ratio, which the huge page and overcommit checks rely on."
    )
    assert "vm.overcommit_memory = 1 (line 3, boot: 0 from kernel default)" in found["message"]
    assert [(e["path"], e["line"]) for e in found["evidence"][:3]] == [("/etc/sysctl.conf", n) for n in (2, 3, 4)]
    # Moved where boot reads it, in the place the link had; the ratio does nothing in mode 1.
    assert commands(found) == [
        "printf '%s\\n' '# Moved from /etc/sysctl.conf by aidoctor: systemd-sysctl reads only the sysctl.d folders.' "
        "'vm.nr_hugepages = 128' 'vm.overcommit_memory = 1' | sudo tee /etc/sysctl.d/99-sysctl.conf >/dev/null",
        "sudo sed -i --follow-symlinks -e '2s|^vm\\.nr_hugepages = 128$|# &|' -e '3s|^vm\\.overcommit_memory = 1$|# &|' "
        "-e '4s|^vm\\.overcommit_ratio = 95$|# &|' /etc/sysctl.conf",
    ]
    summary = found["remediation"][0]["summary"]
    assert summary.startswith(
        "Move 2 lines of /etc/sysctl.conf into /etc/sysctl.d/99-sysctl.conf, which systemd-sysctl reads at boot, "
        "and comment out all 3 there; `vm.overcommit_ratio = 95` is not moved"
    )
    assert summary.endswith(". Nothing changes until boot")
    assert found["evidence"][-1]["value"] == "(absent: nothing links /etc/sysctl.conf into the sysctl.d folders)"


def test_sysctl_conf_read_through_the_link_or_by_procps_is_fine(tree, run):
    _trixie(tree, GUIDE_BLOCK)
    tree.link("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")  # Debian 12's systemd ships it
    assert run("--root", tree, "--format", "json").statuses()["persist.sysctl-conf-unread"] == "pass"


def test_sysctl_conf_without_systemd_is_read_by_sysctl_system(tree, run):
    minimal_host(tree)
    tree.write("/etc/sysctl.conf", GUIDE_BLOCK)
    tree.write("/etc/rcS.d/S01procps", mode=0o755)
    assert run("--root", tree, "--format", "json").statuses()["persist.sysctl-conf-unread"] == "pass"


def test_sysctl_conf_keys_boot_sets_the_same_are_not_lost(tree, run):
    _trixie(tree, "vm.swappiness = 10\n")
    tree.write("/etc/sysctl.d/60-vm.conf", "vm.swappiness=10\n")
    check = [c for c in run("--root", tree, "--format", "json").json["checks"] if c["rule"] == "persist.sysctl-conf-unread"][0]
    assert check["status"] == "pass" and "boot sets to the same value" in check["reason"]


def test_sysctl_conf_only_of_other_keys_is_low(tree, run):
    _trixie(tree, "kernel.printk = 3 4 1 3\n")
    assert finding(run("--root", tree, "--format", "json"), "persist.sysctl-conf-unread")["severity"] == "low"


def test_sysctl_conf_kept_as_dpkg_bak_on_upgrade(tree, run):
    # procps 2:4.0.4-7 removes /etc/sysctl.conf on upgrade; a changed one is kept as .dpkg-bak.
    _trixie(tree)
    tree.write("/etc/sysctl.conf.dpkg-bak", "vm.nr_hugepages = 512\n")
    found = finding(run("--root", tree, "--format", "json"), "persist.sysctl-conf-unread")
    assert found["severity"] == "high"
    assert found["message"].startswith("/etc/sysctl.conf.dpkg-bak holds what /etc/sysctl.conf held before procps removed it")
    assert "only `sysctl -p`" not in found["message"]
    # Nothing reads the backup: only the drop-in is written, the backup is left as it is.
    assert commands(found) == [
        "printf '%s\\n' '# Moved from /etc/sysctl.conf.dpkg-bak by aidoctor: systemd-sysctl reads only the sysctl.d folders.' "
        "'vm.nr_hugepages = 512' | sudo tee /etc/sysctl.d/99-sysctl.conf >/dev/null"
    ]


def test_sysctl_conf_read_by_an_rc_local_that_runs_is_read_at_boot(tree, run):
    _trixie(tree, GUIDE_BLOCK)
    tree.write("/etc/rc.local", "#!/bin/sh -e\nsysctl -p\nexit 0\n", mode=0o755)
    check = [c for c in run("--root", tree, "--format", "json").json["checks"] if c["rule"] == "persist.sysctl-conf-unread"][0]
    assert check["status"] == "pass" and "/etc/rc.local reads it at boot, after systemd-sysctl: line 2 `sysctl -p`" in check["reason"]
    tree.write("/etc/rc.local", "#!/bin/sh -e\nexit 0\nsysctl -p\n", mode=0o755)  # never reached
    assert run("--root", tree, "--format", "json").statuses()["persist.sysctl-conf-unread"] == "finding"


def test_sysctl_conf_evidence_says_what_99_sysctl_conf_is(tree, run):
    _trixie(tree, GUIDE_BLOCK)
    tree.write("/etc/sysctl.d/99-sysctl.conf", "kernel.panic = 10\n")
    found = finding(run("--root", tree, "--format", "json"), "persist.sysctl-conf-unread")
    assert found["evidence"][-1]["value"] == "(a file of its own, not a link to /etc/sysctl.conf)"
    assert "/etc/sysctl.d/zz-aidoctor-sysctl-conf.conf" in " ".join(commands(found))
    (tree.root / "etc/sysctl.d/99-sysctl.conf").unlink()
    tree.link("/etc/sysctl.d/99-sysctl.conf", "/dev/null")
    found = finding(run("--root", tree, "--format", "json"), "persist.sysctl-conf-unread")
    assert found["evidence"][-1]["value"] == "(masked: a link to /dev/null)"
