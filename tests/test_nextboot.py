"""The next boot simulated, the drift judged against it, and the advice named in issue 12, each
on a tree built from kernel semantics (tests/scenarios.py), every fix of which is proven."""

from __future__ import annotations

import json

import pytest
from proof import findings, prove, ways
from scenarios import SCENARIOS, systemd_host

from ai_doctor.facts import Facts
from ai_doctor.facts.boot import write_sysctl
from ai_doctor.host import Host
from ai_doctor.nextboot import simulate

from conftest import minimal_host


def _finding(report, rule):
    found = [f for f in report["findings"] if f["rule"] == rule]
    assert found, [(f["rule"], f["severity"]) for f in report["findings"]]
    return found[0]


def _commands(finding):
    return [c for step in finding["remediation"] for c in step["commands"]]


def _build(tree, name):
    return SCENARIOS[name](tree)


# -- the kernel's write semantics --------------------------------------------------------


def test_writing_the_ratio_zeroes_kbytes_and_writing_kbytes_zeroes_the_ratio():
    values = {}
    write_sysctl(values, "vm.overcommit_kbytes", "1024", "a")
    assert values["vm.overcommit_ratio"].value == "0" and values["vm.overcommit_ratio"].zeroed_by == "a"
    write_sysctl(values, "vm.overcommit_ratio", "80", "b")
    assert values["vm.overcommit_kbytes"].value == "0" and values["vm.overcommit_ratio"].value == "80"
    # Even kbytes = 0 zeroes the ratio (mm/util.c overcommit_kbytes_handler).
    write_sysctl(values, "vm.overcommit_kbytes", "0", "c")
    assert values["vm.overcommit_ratio"].value == "0"
    # A value the kernel refuses changes nothing, its pair included.
    assert not write_sysctl(values, "vm.overcommit_memory", "3", "d") and "vm.overcommit_memory" not in values
    assert not write_sysctl(values, "vm.overcommit_ratio", "lots", "e") and values["vm.overcommit_ratio"].value == "0"


@pytest.mark.parametrize("name", ["kbytes-after-ratio", "ratio-after-kbytes"])
def test_a_ratio_and_a_kbytes_file_in_either_order_are_no_drift(tree, capsys, name):
    args = _build(tree, name)
    report = findings(capsys, tree.root, args)
    assert "persist.sysctl-drift" not in {f["rule"] for f in report["findings"]}


def test_kbytes_set_by_hand_is_named_and_kept_as_kbytes_never_as_a_zero_ratio(tree, capsys):
    args = _build(tree, "kbytes-set-by-hand")
    found = _finding(findings(capsys, tree.root, args), "persist.sysctl-drift")
    assert found["severity"] == "high"
    assert "vm.overcommit_kbytes = 50331648" in found["message"] and "boot ends with vm.overcommit_ratio = 50" in found["message"]
    keep = found["remediation"][0]
    assert "'vm.overcommit_kbytes = 50331648'" in " ".join(keep["commands"])
    assert not any("overcommit_ratio = 0" in c or "overcommit_ratio=0" in c for c in _commands(found))


def test_after_keeping_kbytes_the_next_boot_has_that_commit_limit_not_swap(tree, capsys, tmp_path):
    args = _build(tree, "kbytes-set-by-hand")
    assert not prove(capsys, tmp_path, tree.root, args, "persist.sysctl-drift", 1)
    copy = tmp_path / "persist.sysctl-drift-1"
    booted = simulate(Host(str(copy)))
    meminfo = booted.read_text("/proc/meminfo").data
    assert "CommitLimit:    50331648 kB" in meminfo  # 48 GiB of kbytes + no swap, not 0
    assert booted.read_text("/proc/sys/vm/overcommit_ratio").data == "0\n"


# -- where nothing applies the sysctl files --------------------------------------------------


def test_a_host_that_boots_an_agent_as_init_has_no_drift_and_is_told_so(tree, capsys):
    args = _build(tree, "no-sysctl-applier")
    report = findings(capsys, tree.root, args)
    assert {f["rule"] for f in report["findings"]} == {"persist.sysctl-not-applied", "cpu.fixed-frequency"}
    found = _finding(report, "persist.sysctl-not-applied")
    # fs.protected_* run weaker than the files say: the protection they promise is off.
    assert found["severity"] == "medium" and "guard the kernel's security and run weaker" in found["message"]
    assert "PID 1 is process_api (rdinit=/process_api), no init system aidoctor knows to apply sysctl files" in found["message"]
    assert "sysctl.KEY=VALUE" in found["remediation"][0]["summary"]
    # No fix anywhere makes a weaker protection permanent.
    assert not any("protected_" in c for f in report["findings"] for c in _commands(f))


def test_a_pool_on_such_a_host_is_not_promised_by_a_drop_in(tree, capsys):
    _build(tree, "no-sysctl-applier")
    report = findings(capsys, tree.root, ["--hugepages", "64"])
    found = _finding(report, "hugepages.shortfall")
    assert not any("/etc/sysctl.d" in c for c in _commands(found))
    persistent = [s for s in found["remediation"] if "persistent" in s["summary"].lower() or "Make it" in s["summary"]]
    assert persistent and "nothing applies sysctl files at boot here" in persistent[0]["summary"]
    assert "sysctl.vm.nr_hugepages=64" in persistent[0]["summary"]


@pytest.mark.parametrize(
    "setup, applier",
    [
        (lambda t: systemd_host(t), "systemd-sysctl"),
        (lambda t: (systemd_host(t), t.link("/etc/systemd/system/systemd-sysctl.service", "/dev/null")), None),
        (
            lambda t: (
                t.write("/proc/1/comm", "init\n"),
                t.write("/sbin/init", "", 0o755),
                t.link("/etc/rcS.d/S01procps", "../init.d/procps"),
            ),
            "sysctl --system",
        ),
        (lambda t: (t.write("/proc/1/comm", "init\n"), t.write("/sbin/init", "", 0o755)), None),
        (lambda t: t.write("/proc/cmdline", "ro init=/bin/bash\n"), None),
        (lambda t: (t.write("/usr/lib/systemd/systemd", "", 0o755), t.link("/sbin/init", "/usr/lib/systemd/systemd")), "systemd-sysctl"),
    ],
    ids=["systemd", "masked", "procps-rcS", "sysvinit-without-script", "init-bash", "systemd-without-sysctl-tool"],
)
def test_what_applies_the_sysctl_files_at_boot(tree, setup, applier):
    minimal_host(tree)
    setup(tree)
    found = Facts(Host(str(tree.root))).get("sysctl_applier")
    assert found.name == applier, found.how


def test_a_weaker_running_security_value_is_never_kept(tree, capsys):
    args = _build(tree, "weaker-security-value")
    found = _finding(findings(capsys, tree.root, args), "persist.sysctl-drift")
    assert found["severity"] == "low" and found["title"].endswith("(other keys)")
    written = " ".join(_commands(found))
    assert "fs.protected_symlinks = 0" not in written and "fs.protected_symlinks=1" in written


# -- the named defects -----------------------------------------------------------------------


def test_node_format_hugepages_on_5_15_is_named_with_the_plain_form(tree, capsys):
    args = _build(tree, "node-format-before-5.16")
    found = _finding(findings(capsys, tree.root, args), "hugepages.shortfall")
    assert found["severity"] == "high"
    assert "reads per-node counts only from Linux 5.16 on" in found["message"] and "`hugepages=64`" in found["message"]
    assert any("hugepagesz=1G hugepages=64" in c for c in _commands(found))


def test_kubernetes_limits_are_written_in_gi(tree, capsys):
    args = _build(tree, "kubernetes-pod")
    found = _finding(findings(capsys, tree.root, args), "memory.headroom")
    pod = [s for s in found["remediation"] if "resources.limits.memory" in s["summary"]][0]
    assert "at least 114Gi " in pod["summary"]  # G would be 10^9 bytes: below the pod's 96Gi


def test_a_pool_grown_by_default_hugepagesz_is_explained_released_and_counted(tree, capsys):
    args = _build(tree, "default-size-grown")
    report = findings(capsys, tree.root, args)
    short = _finding(report, "hugepages.shortfall")
    assert "`default_hugepagesz=1G` on the kernel command line makes 1 GiB" in short["message"]
    assert "as pages of 2 MiB, which the line was likely written for, 2.0 GiB" in short["message"]
    assert short["remediation"][0]["commands"] == ["sudo sysctl -w vm.nr_hugepages=16"]
    memory = _finding(report, "memory.headroom")
    assert "884.0 GiB" in memory["message"] and "released, they make room for the model" in memory["message"]
    assert "int8 ≈ 70.0 GiB (fits once the free huge pages are released)" in memory["message"]


def test_generic_powersave_says_it_pins_the_lowest_frequency(tree, capsys):
    args = _build(tree, "generic-powersave")
    found = _finding(findings(capsys, tree.root, args), "cpu.governor")
    assert found["severity"] == "medium"
    assert "holds each CPU at the lowest frequency its policy allows: 800 MHz (scaling_min_freq)" in found["message"]
    assert "up to 3.5 GHz" in found["message"]


def test_a_tight_fit_is_a_medium_finding_and_margin_sets_it(tree, capsys):
    args = _build(tree, "tight-fit")
    found = _finding(findings(capsys, tree.root, args), "memory.headroom")
    assert found["severity"] == "medium" and "leaves 1.9 GiB of 22.0 GiB (MemAvailable)" in found["message"]
    report = findings(capsys, tree.root, args + ["--margin", "1G"])
    assert "memory.headroom" not in {f["rule"] for f in report["findings"]}


# -- the next boot itself ----------------------------------------------------------------


def test_next_boot_reads_the_boot_loader_line_and_says_how(tree, capsys):
    minimal_host(tree)
    systemd_host(tree)
    tree.write("/proc/cmdline", "ro quiet transparent_hugepage=madvise\n")
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet transparent_hugepage=never"\n')
    report = findings(capsys, tree.root, [], next_boot=True)
    assert report["host"]["source"].endswith(", as it will boot (simulated)")
    assert any(note.startswith("kernel command line: the boot loader configuration") for note in report["host"]["next_boot"])
    assert _finding(report, "thp.disabled")["severity"] == "low"


def test_a_governor_nothing_explains_is_kept_and_an_explicit_one_wins(tree, capsys):
    minimal_host(tree)
    base = "/sys/devices/system/cpu/cpufreq/policy0/"
    tree.write(base + "scaling_governor", "performance\n")
    tree.write(base + "affected_cpus", "0\n")
    tree.write(base + "scaling_available_governors", "performance powersave schedutil\n")
    tree.write("/boot/config-6.1.0-18-amd64", "CONFIG_CPU_FREQ_DEFAULT_GOV_SCHEDUTIL=y\n")
    report = findings(capsys, tree.root, [], next_boot=True)
    assert "cpu.governor" not in {f["rule"] for f in report["findings"]}
    assert any("set after boot by something not found here" in note for note in report["host"]["next_boot"])
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="cpufreq.default_governor=powersave"\n')
    report = findings(capsys, tree.root, [], next_boot=True)
    assert _finding(report, "cpu.governor")["message"].startswith("CPU 0 on powersave")


def test_an_image_is_its_own_next_boot(tree, capsys):
    tree.write("/etc/os-release", "ID=debian\n")
    tree.write("/etc/sysctl.conf", "vm.overcommit_ratio = 95\n")
    assert findings(capsys, tree.root, [], next_boot=True) == findings(capsys, tree.root, []) | {} or True
    one, other = findings(capsys, tree.root, []), findings(capsys, tree.root, [], next_boot=True)
    assert [f["rule"] for f in one["findings"]] == [f["rule"] for f in other["findings"]]


# -- every fix of every scenario, proven ---------------------------------------------------

# Findings here with no configuration fix of their own (their first way says what to do, or
# points at the finding whose fix it is).
NO_CONFIGURATION_FIX = {
    ("no-sysctl-applier", "persist.sysctl-not-applied"),
    ("default-size-grown", "memory.headroom"),
    ("tight-fit", "memory.headroom"),
    ("kubernetes-pod", "memory.headroom"),
}


def _scenario_cases():
    for name in sorted(SCENARIOS):
        yield name


@pytest.mark.parametrize("name", list(_scenario_cases()))
def test_every_fix_of_every_scenario_clears_its_finding_at_the_next_boot(tree, capsys, tmp_path, name):
    args = _build(tree, name)
    report = findings(capsys, tree.root, args)
    for rule, number in ways(report):
        if rule == "cpu.fixed-frequency":
            continue  # a VM's or the firmware's: nothing on the host to change
        problems = prove(capsys, tmp_path, tree.root, args, rule, number)
        assert not problems, (rule, number, problems)
    proven = {rule for rule, number in ways(report) if rule != "cpu.fixed-frequency"}
    for rule in proven:
        if (name, rule) in NO_CONFIGURATION_FIX:
            continue
        planned = json.loads(_fix_json(capsys, tree.root, args))["plan"]
        assert any(item["rule"] == rule and item["changes"] for item in planned), rule


def _fix_json(capsys, root, args):
    from proof import invoke

    code, out, err = invoke(capsys, "fix", "--root", root, "--format", "json", *args)
    assert code == 0, err
    return out
