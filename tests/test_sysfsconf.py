"""Debian's sysfsutils (/etc/sysfs.conf, /etc/sysfs.d) as a writer at boot, and rc.local's pool."""

from __future__ import annotations

from test_rules import commands, finding

from ai_doctor.facts.sysfsconf import parse_sysfs_conf

from conftest import minimal_host

SYSFS_HEADER = "#\n# /etc/sysfs.conf - Configuration file for setting sysfs attributes.\n#\n"


def _bookworm_sysfsutils(tree, conf):
    """sysfsutils 2.1.1-4 (Debian 12): the init script with update-rc.d's start links."""
    tree.write("/etc/init.d/sysfsutils", "#!/bin/sh\n", mode=0o755)
    for level in (2, 3, 4, 5):
        tree.link("/etc/rc%d.d/S01sysfsutils" % level, "../init.d/sysfsutils")
    tree.write("/etc/sysfs.conf", SYSFS_HEADER + conf)


def _trixie_sysfsutils(tree, conf, enabled=True):
    """sysfsutils 2.1.1-7 (Debian 13): a native unit, enabled by deb-systemd-helper."""
    tree.write("/etc/init.d/sysfsutils", "#!/bin/sh\n", mode=0o755)
    tree.write("/usr/lib/systemd/system/sysfsutils.service", "[Service]\nExecStart=/usr/sbin/update-sysfs\n")
    tree.write("/usr/sbin/update-sysfs", "#!/usr/bin/perl\n", mode=0o755)
    if enabled:
        tree.link("/etc/systemd/system/multi-user.target.wants/sysfsutils.service", "/usr/lib/systemd/system/sysfsutils.service")
    tree.write("/etc/sysfs.conf", SYSFS_HEADER + conf)


def test_parse_keeps_settings_and_skips_permissions_and_comments():
    text = "# c\nmode power/state = 0660\nowner power/state = root:power\nkernel/mm/transparent_hugepage/enabled = never # off\n\n"
    found, stopped = parse_sysfs_conf(text, "/etc/sysfs.conf")
    assert stopped is None
    assert [(s.line, s.attr, s.value) for s in found] == [(4, "kernel/mm/transparent_hugepage/enabled", "never")]
    assert found[0].matches("/sys/kernel/mm/transparent_hugepage/enabled")
    assert not found[0].matches("/sys/kernel/mm/transparent_hugepage/defrag")


def test_globs_match_one_part_at_a_time():
    (setting,), _ = parse_sysfs_conf("devices/system/cpu/cpu*/cpufreq/scaling_governor = powersave\n", "/etc/sysfs.conf")
    assert setting.matches("/sys/devices/system/cpu/cpu12/cpufreq/scaling_governor")
    assert not setting.matches("/sys/devices/system/cpu/cpu1/x/cpufreq/scaling_governor")
    (doubled,), _ = parse_sysfs_conf("kernel//mm/transparent_hugepage/enabled = never\n", "/etc/sysfs.conf")
    assert doubled.matches("/sys/kernel/mm/transparent_hugepage/enabled")


def test_the_two_readers_as_debian_ships_them():
    # 2.1.1-4's init script reads with sh: a CR stays in the value (the kernel refuses it), and a
    # value with a blank is a syntax error that ends the run; 2.1.1-7's Perl trims both ends.
    crlf = "kernel/mm/transparent_hugepage/enabled = never\r\n"
    (shell,), _ = parse_sysfs_conf(crlf, "/etc/sysfs.conf", shell=True)
    (perl,), _ = parse_sysfs_conf(crlf, "/etc/sysfs.conf")
    assert shell.value == "never\r" and perl.value == "never"
    text = "a/b = 1\nc/d = x y\ne/f = 2\n"
    found, stopped = parse_sysfs_conf(text, "/etc/sysfs.conf", shell=True)
    assert [s.attr for s in found] == ["a/b"] and stopped == 2
    found, stopped = parse_sysfs_conf(text, "/etc/sysfs.conf")
    assert [s.attr for s in found] == ["a/b", "c/d", "e/f"] and stopped is None
    found, stopped = parse_sysfs_conf("a/b = 1\njunk\ne/f = 2\n", "/etc/sysfs.conf")
    assert [s.attr for s in found] == ["a/b"] and stopped == 2


def test_a_line_update_sysfs_stops_at_leaves_later_lines_unwritten(tree, run):
    minimal_host(tree)
    _trixie_sysfsutils(tree, "not an assignment\nkernel/mm/transparent_hugepage/enabled = never\n")
    result = run("--root", tree, "--format", "json", "--next-boot")
    assert result.statuses()["thp.disabled"] == "pass"


def test_thp_never_from_sysfsutils_is_a_writer_on_a_running_host(tree, run):
    minimal_host(tree)
    tree.write("/sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n")
    _bookworm_sysfsutils(tree, "kernel/mm/transparent_hugepage/enabled = never\n")
    found = finding(run("--root", tree, "--format", "json"), "thp.disabled")
    assert any(e["path"] == "/etc/sysfs.conf" and e["line"] == 4 for e in found["evidence"])
    assert "sudo sed -i --follow-symlinks -e '4s|^kernel/mm/transparent_hugepage/enabled = never$|# &|' /etc/sysfs.conf" in commands(found)


def test_thp_never_in_sysfs_conf_is_nothing_where_sysfsutils_does_not_start(tree, run):
    minimal_host(tree)
    _trixie_sysfsutils(tree, "kernel/mm/transparent_hugepage/enabled = never\n", enabled=False)
    result = run("--root", tree, "--format", "json", "--next-boot")
    assert result.statuses()["thp.disabled"] == "pass"


def test_thp_at_next_boot_follows_sysfsutils(tree, run):
    minimal_host(tree)
    _trixie_sysfsutils(tree, "kernel/mm/transparent_hugepage/enabled = never\n")
    result = run("--root", tree, "--format", "json", "--next-boot")
    assert result.statuses()["thp.disabled"] == "finding"


def test_governor_written_by_sysfsutils_is_kept_at_boot_and_its_line_commented_out(tree, run):
    minimal_host(tree)
    for cpu in (0, 1):
        base = "/sys/devices/system/cpu/cpufreq/policy%d" % cpu
        tree.write(base + "/scaling_governor", "powersave\n")
        tree.write(base + "/scaling_available_governors", "performance powersave schedutil\n")
        tree.write(base + "/scaling_driver", "acpi-cpufreq\n")
        tree.write(base + "/affected_cpus", "%d\n" % cpu)
    _bookworm_sysfsutils(tree, "devices/system/cpu/cpu*/cpufreq/scaling_governor = powersave\n")
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    summaries = [step["summary"] for step in found["remediation"]]
    assert any(s.startswith("Comment out line 4 in /etc/sysfs.conf: Debian's sysfsutils writes powersave") for s in summaries)
    # Nothing unexplained: sysfsutils is what sets them after boot.
    assert "something else wrote them after boot" not in found["message"]


def test_nvme_scheduler_written_by_sysfsutils(tree, run):
    minimal_host(tree)
    tree.write("/sys/block/nvme0n1/queue/scheduler", "[mq-deadline] none\n")
    tree.link("/sys/block/nvme0n1/device", "../../nvme0")
    _bookworm_sysfsutils(tree, "block/nvme0n1/queue/scheduler = mq-deadline\n")
    found = finding(run("--root", tree, "--format", "json"), "storage.scheduler")
    assert "Debian's sysfsutils writes a scheduler after boot, after any udev rule: /etc/sysfs.conf:4 (mq-deadline)" in found["message"]
    assert any("/etc/sysfs.conf" in c and "# &" in c for c in commands(found))


def test_rc_local_sysctl_write_is_a_pool_request(tree, run):
    minimal_host(tree)
    tree.write("/etc/rc.local", "#!/bin/sh -e\nsysctl -w vm.nr_hugepages=128\nexit 0\n", mode=0o755)
    found = finding(run("--root", tree, "--format", "json"), "hugepages.shortfall")
    assert found["message"].startswith("`sysctl -w vm.nr_hugepages=128` (/etc/rc.local:2) asks for 128 huge pages of 2 MiB")


def test_rc_local_that_never_runs_asks_for_no_pool(tree, run):
    minimal_host(tree)
    tree.write("/etc/rc.local", "#!/bin/sh -e\nexit 0\necho 128 > /proc/sys/vm/nr_hugepages\n", mode=0o755)
    statuses = run("--root", tree, "--format", "json").statuses()
    assert statuses["hugepages.shortfall"] == "pass" and statuses["persist.rc-local-ineffective"] == "finding"


def test_image_whose_sysfsutils_turns_thp_on_after_a_never_build_default_passes(tmp_path, run):
    import shutil

    from conftest import fixture_root

    root = tmp_path / "root"
    shutil.copytree(fixture_root("debian12-sysfsutils-thp"), root, symlinks=True)
    config = root / "boot/config-6.1.0-28-amd64"
    config.write_text(config.read_text().replace("CONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y", "CONFIG_TRANSPARENT_HUGEPAGE_NEVER=y"))
    conf = root / "etc/sysfs.conf"
    conf.write_text(conf.read_text().replace("enabled = never", "enabled = madvise"))
    check = [c for c in run("--root", root, "--image", "--format", "json").json["checks"] if c["rule"] == "thp.disabled"][0]
    assert check["status"] == "pass"
    assert "then sysfsutils (/etc/sysfs.conf:9) sets `madvise` after boot" in check["reason"]


def test_rc_local_pool_line_with_its_output_thrown_away_is_a_request(tree, run):
    minimal_host(tree)
    tree.write("/etc/rc.local", "#!/bin/sh\nsysctl -w vm.nr_hugepages=64 >/dev/null 2>&1 || true\nexit 0\n", mode=0o755)
    found = finding(run("--root", tree, "--format", "json"), "hugepages.shortfall")
    assert "asks for 64 huge pages of 2 MiB" in found["message"]
