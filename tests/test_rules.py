"""Rules on small constructed trees: conditions, severities, messages, remediation."""

from __future__ import annotations

import json

import pytest

from ai_doctor.shell import quote

from conftest import MEMINFO_64G, minimal_host

GiB = 1 << 30


def meminfo(**fields):
    text = MEMINFO_64G
    for key, value in fields.items():
        lines = [line for line in text.splitlines() if not line.startswith(key + ":")]
        unit = "" if key.startswith("HugePages_") else " kB"
        lines.append("%s: %d%s" % (key, value, unit))
        text = "\n".join(lines) + "\n"
    return text


def finding(result, rule):
    return next(f for f in result.json["findings"] if f["rule"] == rule)


def commands(found):
    return [c for step in found["remediation"] for c in step["commands"]]


def test_healthy_minimal_host_has_no_findings(tree, run):
    minimal_host(tree)
    result = run("--root", tree, "--model-size", "20G", "--format", "json", "--skip", "cpu")
    assert result.findings() == {}
    assert result.code == 0


def test_strict_headroom_numbers_and_ratio(tree, run):
    minimal_host(tree, overcommit="2")
    result = run("--root", tree, "--model-size", "40G", "--format", "json")
    found = finding(result, "overcommit.strict-headroom")
    assert found["severity"] == "critical"
    assert "CommitLimit − Committed_AS = 32.0 GiB − 4.0 GiB = 28.0 GiB; the model needs 40.0 GiB" in found["message"]
    # (4 GiB committed + 40 GiB + 8 + 128 MiB of reserves + 2 GiB for the loader) / 64 GiB RAM → 72.1 %
    assert "sudo sysctl -w vm.overcommit_ratio=73" in commands(found)
    assert any("90-aidoctor-overcommit.conf" in c for c in commands(found))


def test_strict_headroom_counts_the_reserves_closed_to_the_loader(tree, run):
    minimal_host(tree, overcommit="2")
    tree.write("/proc/sys/vm/user_reserve_kbytes", "%d\n" % (1 << 20))  # 1 GiB
    # 28 GiB of headroom: 27.5 GiB fits, but not with 1 GiB + 8 MiB reserved.
    found = finding(run("--root", tree, "--model-size", "27.5G", "--format", "json"), "overcommit.strict-headroom")
    assert "the model needs 27.5 GiB, and the admin and user reserves (1.0 GiB) are closed to it" in found["message"]
    result = run("--root", tree, "--model-size", "26G", "--format", "json")
    assert result.statuses()["overcommit.strict-headroom"] == "pass"


def test_strict_ratio_fix_comments_out_kbytes_that_would_override_it(tree, run):
    minimal_host(tree, overcommit="2")
    tree.write("/etc/sysctl.d/80-cap.conf", "vm.overcommit_memory = 2\nvm.overcommit_kbytes = 0\n")
    tree.write("/usr/lib/sysctl.d/95-vendor.conf", "vm.overcommit_kbytes = 1000\n")
    found = finding(run("--root", tree, "--model-size", "40G", "--format", "json"), "overcommit.strict-headroom")
    cmds = commands(found)
    # Writing vm.overcommit_kbytes zeroes the ratio: no later kbytes line may survive the fix.
    assert "sudo sed -i --follow-symlinks -e '2s|^vm\\.overcommit_kbytes = 0$|# &|' /etc/sysctl.d/80-cap.conf" in cmds
    assert any("sudo tee /etc/sysctl.d/95-vendor.conf" in c for c in cmds)  # the package's line hidden by a copy
    assert any("/etc/sysctl.d/90-aidoctor-overcommit.conf" in c for c in cmds)


def test_strict_headroom_fits(tree, run):
    minimal_host(tree, overcommit="2")
    assert run("--root", tree, "--model-size", "20G", "--format", "json").statuses()["overcommit.strict-headroom"] == "pass"


def test_heuristic_oversize_uses_ram_plus_swap(tree, run):
    minimal_host(tree, meminfo=meminfo(SwapTotal=16 * GiB // 1024, SwapFree=16 * GiB // 1024))
    assert "overcommit.heuristic-oversize" not in run("--root", tree, "--model-size", "79G", "--format", "json").findings()
    result = run("--root", tree, "--model-size", "81G", "--format", "json")
    found = finding(result, "overcommit.heuristic-oversize")
    assert "MemTotal + SwapTotal = 64.0 GiB + 16.0 GiB = 80.0 GiB" in found["message"]
    # More swap would let the allocation through and leave the model living in swap.
    assert commands(found) == [] and len(found["remediation"]) == 1


def test_heuristic_before_linux_5_2_judges_by_free_memory(tree, run):
    minimal_host(tree, release="4.19.0-26-amd64")
    found = finding(run("--root", tree, "--model-size", "61G", "--format", "json"), "overcommit.heuristic-oversize")
    assert "kernels before 5.2" in found["message"]


def test_strict_ratio_above_100_is_offered_with_its_cost(tree, run):
    minimal_host(tree, overcommit="2")
    found = finding(run("--root", tree, "--model-size", "60G", "--format", "json"), "overcommit.strict-headroom")
    # (4 GiB committed + 60 GiB + 8 + 128 MiB of reserves + 3 GiB for the loader) / 64 GiB RAM → 104.9 %
    summaries = [s["summary"] for s in found["remediation"]]
    assert "A ratio of 105% sets a commit limit larger than RAM" in summaries[0]
    assert "sudo sysctl -w vm.overcommit_ratio=105" in commands(found)


def test_strict_offers_no_limit_for_a_model_larger_than_ram_and_swap(tree, run):
    minimal_host(tree, overcommit="2")
    found = finding(run("--root", tree, "--model-size", "70G", "--format", "json"), "overcommit.strict-headroom")
    assert [s["summary"][:31] for s in found["remediation"]] == ["No commit limit makes it fit: t"]
    # and no "return to the heuristic mode", which would refuse it as well
    assert commands(found) == []


def test_strict_return_to_heuristic_says_what_the_old_kernel_judges(tree, run):
    minimal_host(tree, overcommit="2", release="4.19.0-26-amd64")
    found = finding(run("--root", tree, "--model-size", "40G", "--format", "json"), "overcommit.strict-headroom")
    assert any("free memory, page cache and free swap" in s["summary"] for s in found["remediation"])


@pytest.mark.parametrize("value", ["abc", "7", "", "2 garbage", "\u0662", "99999999999999999999999999"])
def test_an_overcommit_mode_no_kernel_takes_is_not_judged(tree, run, value):
    minimal_host(tree, overcommit=value)
    statuses = run("--root", tree, "--model-size", "200G", "--format", "json", "-v").statuses()
    assert statuses["overcommit.strict-headroom"] == "skip"
    assert statuses["overcommit.heuristic-oversize"] == "skip"
    assert statuses["overcommit.ratio-ignored"] == "skip"


def test_ratio_ignored_runtime_only(tree, run):
    minimal_host(tree, overcommit="1")
    tree.write("/proc/sys/vm/overcommit_ratio", "95\n")
    found = finding(run("--root", tree, "--format", "json"), "overcommit.ratio-ignored")
    assert found["severity"] == "low" and "Mode 1 never refuses" in found["message"]
    # sysctl --system would leave the value as it is: the fix resets it in the running kernel.
    assert commands(found) == ["sudo sysctl -w vm.overcommit_ratio=50"]


def test_ratio_kbytes_pair_is_read_correctly(tree, run):
    minimal_host(tree, overcommit="0")
    tree.write("/proc/sys/vm/overcommit_ratio", "0\n")  # zeroed by writing overcommit_kbytes
    tree.write("/proc/sys/vm/overcommit_kbytes", "1048576\n")
    found = finding(run("--root", tree, "--format", "json"), "overcommit.ratio-ignored")
    assert "vm.overcommit_kbytes = 1048576" in found["message"] and "overcommit_ratio" not in found["message"]


def test_memory_headroom_tiers(tree, run):
    minimal_host(tree)  # MemTotal 64 GiB, MemAvailable 60 GiB, no swap
    assert run("--root", tree, "--model-size", "50G", "--format", "json").statuses()["memory.headroom"] == "pass"
    assert run("--root", tree, "--model-size", "62G", "--format", "json").findings()["memory.headroom"] == "high"
    assert run("--root", tree, "--model-size", "65G", "--format", "json").findings()["memory.headroom"] == "critical"
    minimal_host(tree, meminfo=meminfo(SwapTotal=8 * GiB // 1024, SwapFree=8 * GiB // 1024))
    assert run("--root", tree, "--model-size", "62G", "--format", "json").findings()["memory.headroom"] == "medium"


def test_memory_headroom_quantized_sizes_from_params(tree, run):
    minimal_host(tree)
    found = finding(run("--root", tree, "--params", "70B", "--dtype", "bf16", "--format", "json"), "memory.headroom")
    assert "int8 ≈ 65.2 GiB (does not fit)" in found["message"]
    assert "int4 ≈ 32.6 GiB (fits)" in found["message"]
    assert found["severity"] == "critical"


def test_memory_headroom_names_the_systemd_unit(tree, run):
    minimal_host(tree)
    tree.write("/proc/self/cgroup", "0::/system.slice/vllm.service\n")
    tree.write("/proc/self/mountinfo", "26 1 8:1 / / rw - ext4 /dev/sda1 rw\n29 21 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    tree.write("/sys/fs/cgroup/system.slice/vllm.service/memory.max", "%d\n" % (16 * GiB))
    found = finding(run("--root", tree, "--model-size", "20G", "--format", "json"), "memory.headroom")
    assert found["severity"] == "critical"
    assert "sudo systemctl set-property vllm.service MemoryMax=23G" in commands(found)


def test_shortfall_from_sysctl_and_hugepages_option(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=100, HugePages_Free=90))
    tree.write("/proc/sys/vm/nr_hugepages", "100\n")
    tree.write("/etc/sysctl.d/80-pool.conf", "vm.nr_hugepages = 512\n")
    found = finding(run("--root", tree, "--format", "json"), "hugepages.shortfall")
    assert found["severity"] == "high"
    assert "vm.nr_hugepages = 512 (/etc/sysctl.d/80-pool.conf:1) asks for 512 huge pages of 2 MiB" in found["message"]
    assert {"path": "/etc/sysctl.d/80-pool.conf", "value": "vm.nr_hugepages = 512", "line": 1} in found["evidence"]
    cmds = commands(found)
    assert "echo 1 | sudo tee /proc/sys/vm/compact_memory >/dev/null" in cmds
    boot = found["remediation"][-2]
    assert boot["summary"].startswith("Reserve the pool at boot: add `hugepagesz=2M hugepages=512` to the kernel command line")
    assert "no boot loader configuration was found here" in boot["summary"] and boot["commands"] == []
    assert found["remediation"][-1]["commands"] == [
        "sudo sed -i --follow-symlinks -e '1s|^vm\\.nr_hugepages = 512$|# &|' /etc/sysctl.d/80-pool.conf",
        "sudo sysctl --system",
    ]
    # --hugepages states what the user wants now and overrides the configuration
    assert "hugepages.shortfall" not in run("--root", tree, "--hugepages", "64", "--format", "json").findings()


def test_an_idle_short_pool_is_shortfalls_alone_and_may_be_dropped(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=100, HugePages_Free=100))
    tree.write("/proc/sys/vm/nr_hugepages", "100\n")
    tree.write("/etc/sysctl.d/80-pool.conf", "vm.nr_hugepages = 512\n")
    result = run("--root", tree, "--format", "json", "-v")
    # Not "release it" from one rule and "grow it" from the other.
    assert result.statuses()["hugepages.unused"] == "pass"
    found = finding(result, "hugepages.shortfall")
    assert "None of the 100 pages it does hold is in use" in found["message"]
    last = found["remediation"][-1]
    assert last["summary"].startswith("Or, if nothing here maps hugetlbfs, drop the request")
    assert "/etc/sysctl.d/80-pool.conf" in last["commands"][0]


def test_an_empty_pool_asked_for_in_a_file_may_never_have_been_applied(tree, run):
    minimal_host(tree)
    tree.write("/etc/sysctl.d/80-pool.conf", "vm.nr_hugepages = 512\n")
    found = finding(run("--root", tree, "--format", "json"), "hugepages.shortfall")
    assert "the setting was never applied" in found["message"]
    assert not any("drop_caches" in c for c in commands(found))


def test_boot_steps_for_two_pools_print_one_final_line(tree, run):
    # 1 GiB pool reserved at boot and idle; 2 MiB pool asked for in sysctl.d and short.
    minimal_host(tree, meminfo=meminfo(HugePages_Total=10, HugePages_Free=5))
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 hugepagesz=1G hugepages=4\n")
    tree.write("/proc/sys/vm/nr_hugepages", "10\n")
    tree.write("/etc/sysctl.d/80-pool.conf", "vm.nr_hugepages = 512\n")
    gig = "/sys/kernel/mm/hugepages/hugepages-1048576kB/"
    for name, value in (("nr_hugepages", 4), ("free_hugepages", 4), ("resv_hugepages", 0), ("surplus_hugepages", 0)):
        tree.write(gig + name, "%d\n" % value)
    tree.write("/usr/sbin/grubby", "", 0o755)
    result = run("--root", tree, "--format", "json")
    short, unused = finding(result, "hugepages.shortfall"), finding(result, "hugepages.unused")
    final = "sudo grubby --update-kernel=ALL --remove-args='hugepages hugepagesz' --args='hugepagesz=2M hugepages=512'"
    assert final in commands(short) and final in commands(unused)
    boot = next(s for s in short["remediation"] if s["summary"].startswith("Reserve the pool at boot"))
    assert "(with the other pool changes on the same line: 1 GiB pages → 0, hugepages.unused)" in boot["summary"]


def test_shortfall_reserves_on_the_command_line_with_grubby(tree, run):
    minimal_host(tree)
    tree.write("/usr/sbin/grubby", "", 0o755)
    found = finding(run("--root", tree, "--hugepages", "64", "--format", "json"), "hugepages.shortfall")
    assert "sudo grubby --update-kernel=ALL --args='hugepagesz=2M hugepages=64'" in commands(found)


def test_unused_pool_medium_and_its_fix(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=512, HugePages_Free=512))
    tree.write("/proc/sys/vm/nr_hugepages", "512\n")
    tree.write("/etc/sysctl.conf", "vm.nr_hugepages=512\n")
    found = finding(run("--root", tree, "--model-size", "1G", "--format", "json"), "hugepages.unused")
    assert found["severity"] == "medium"
    cmds = commands(found)
    assert "sudo sysctl -w vm.nr_hugepages=0" in cmds
    assert "sudo sed -i --follow-symlinks -e '1s|^vm\\.nr_hugepages=512$|# &|' /etc/sysctl.conf" in cmds
    assert not any("tee /etc/sysctl.d" in c for c in cmds)  # 0 is the default: nothing to write


def test_pool_in_use_is_not_unused(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=512, HugePages_Free=512, HugePages_Rsvd=10))
    assert run("--root", tree, "--format", "json").statuses()["hugepages.unused"] == "pass"


def test_thp_never(tree, run):
    minimal_host(tree)
    tree.write("/sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n")
    found = finding(run("--root", tree, "--format", "json"), "thp.disabled")
    assert found["severity"] == "low"
    assert "echo madvise | sudo tee /sys/kernel/mm/transparent_hugepage/enabled >/dev/null" in commands(found)


def test_thp_not_built_skips(tree, run):
    minimal_host(tree)
    (tree.root / "sys/kernel/mm/transparent_hugepage/enabled").unlink()
    result = run("--root", tree, "--format", "json", "--only", "thp")
    assert result.statuses() == {"thp.disabled": "skip"}
    assert "no transparent huge pages" in result.json["checks"][0]["reason"]


def policies(tree, governors, driver="acpi-cpufreq"):
    for n, governor in enumerate(governors):
        base = "/sys/devices/system/cpu/cpufreq/policy%d" % n
        tree.write(base + "/scaling_governor", governor + "\n")
        tree.write(base + "/affected_cpus", "%d\n" % n)
        tree.write(base + "/scaling_driver", driver + "\n")


def test_governor_groups_cpus(tree, run):
    minimal_host(tree, release="6.5.0-1-generic")
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX=""\n')
    tree.write("/usr/sbin/grub-mkconfig", "", 0o755)
    policies(tree, ["performance", "powersave", "powersave", "performance", "ondemand"])
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    assert found["severity"] == "medium"
    assert found["message"].startswith("CPU 4 on ondemand; CPUs 1-2 on powersave: 3 of 5 CPUs not on performance.")
    cmds = commands(found)
    assert cmds[0].startswith("echo performance | sudo tee /sys/devices/system/cpu/cpufreq/policy1/scaling_governor")
    assert "cpufreq.default_governor=performance" in found["remediation"][1]["summary"]
    # A plain GRUB_CMDLINE_LINUX="…" is extended in place, then grub.cfg rebuilt.
    appended = 's/^(GRUB_CMDLINE_LINUX="[^"$`\\\\]*)"$/\\1 cpufreq.default_governor=performance"/'
    assert "sudo sed -i --follow-symlinks -E '%s' /etc/default/grub" % appended in cmds
    assert cmds[-1] == "sudo grub-mkconfig -o /boot/grub/grub.cfg"


def test_intel_pstate_powersave_is_low(tree, run):
    minimal_host(tree)
    policies(tree, ["powersave", "powersave"], driver="intel_pstate")
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    assert found["severity"] == "low" and "adaptive algorithm" in found["message"]
    assert "policy*" in commands(found)[0]


def test_governor_persists_with_tuned_where_tuned_runs(tree, run):
    minimal_host(tree)
    policies(tree, ["schedutil"])
    tree.write("/usr/sbin/tuned-adm", "", 0o755)
    tree.write("/etc/tuned/active_profile", "virtual-guest\n")
    # Installed but not enabled: enabling it would apply a whole profile for one setting.
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    assert not any("tuned" in c for c in commands(found))
    assert found["remediation"][-1]["summary"].startswith("Keep it at boot: add `cpufreq.default_governor=performance`")
    tree.link("/etc/systemd/system/multi-user.target.wants/tuned.service", "/usr/lib/systemd/system/tuned.service")
    tree.write("/usr/lib/systemd/system/tuned.service", "[Service]\n")
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    cmds = commands(found)
    # A profile of our own after the active one, not a switch away from it.
    assert "sudo mkdir -p /etc/tuned/aidoctor-cpu" in cmds
    assert "printf '%s\\n' '[main]' 'summary=CPU governor performance (aidoctor)' '[cpu]' governor=performance" in cmds[2]
    assert cmds[-1] == "sudo sh -c " + quote(
        "set -f; tuned-adm profile $(tr -s ' \\t\\r\\v\\f' '\\n\\n\\n\\n\\n' 2>/dev/null </etc/tuned/active_profile "
        "| grep -vx aidoctor-cpu) aidoctor-cpu"
    )


def test_the_tuned_profile_list_keeps_other_overrides_whichever_runs_last(tmp_path):
    import subprocess

    from ai_doctor.facts.fixes import Fixes
    from ai_doctor.facts.system import Identity
    from ai_doctor.facts.tuned import Tuned

    class Facts:
        def get(self, name):
            facts = {"running": True, "identity": Identity(1000, True, 1000), "tuned": Tuned(("virtual-guest",), "/etc/tuned", True, True)}
            return facts.get(name)

    from ai_doctor.host import Host

    step = Fixes(Host("/"), Facts()).tuned_override("aidoctor-cpu", "s", [("cpu", ["governor=performance"])], "Keep it")
    active = tmp_path / "active_profile"
    active.write_text("virtual-guest aidoctor-thp aidoctor-cpu\n")
    listing = (
        step.commands[-1].replace("sudo sh", "sh").replace("tuned-adm profile", "echo").replace("/etc/tuned/active_profile", str(active))
    )
    done = subprocess.run(["sh", "-c", listing], capture_output=True, text=True, check=True)
    assert done.stdout == "virtual-guest aidoctor-thp aidoctor-cpu\n"
    active.unlink()  # tuned never ran: only our own profile
    assert subprocess.run(["sh", "-c", listing], capture_output=True, text=True).stdout == "aidoctor-cpu\n"


def test_scheduler_udev_rule(tree, run):
    minimal_host(tree)
    tree.write("/sys/block/nvme0n1/queue/scheduler", "none [kyber]\n")
    found = finding(run("--root", tree, "--format", "json"), "storage.scheduler")
    cmds = commands(found)
    assert "echo none | sudo tee /sys/block/nvme0n1/queue/scheduler >/dev/null" in cmds
    assert any("/etc/udev/rules.d/60-aidoctor-nvme-scheduler.rules" in c and 'ATTR{queue/scheduler}="none"' in c for c in cmds)
    assert "sudo udevadm trigger --subsystem-match=block '--sysname-match=nvme*' --action=change" in cmds


def test_hidden_nvme_multipath_paths_are_judged(tree, run):
    # The path device, not the bio-based head, is where the scheduler sits (tests/test_storage.py).
    minimal_host(tree)
    tree.write("/sys/block/nvme0n1/queue/scheduler", "none\n")
    tree.write("/sys/block/nvme0c0n1/queue/scheduler", "none [mq-deadline]\n")
    tree.write("/sys/block/nvme0c0n1/hidden", "1\n")
    found = finding(run("--root", tree, "--format", "json"), "storage.scheduler")
    assert found["message"].startswith("nvme0c0n1 (path of nvme0n1, mq-deadline) uses a kernel I/O scheduler")
    assert "echo none | sudo tee /sys/block/nvme0c0n1/queue/scheduler >/dev/null" in commands(found)


def test_config_missing_suggests_the_configs_module(tree, run):
    minimal_host(tree)
    (tree.root / "boot/config-6.1.0-18-amd64").unlink()
    tree.write("/lib/modules/6.1.0-18-amd64/kernel/kernel/configs.ko.xz", b"")
    found = finding(run("--root", tree, "--format", "json"), "kernel.config-missing")
    assert "sudo modprobe configs" in commands(found)


def test_unsupported_hugetlb_without_requests_is_info(tree, run):
    minimal_host(tree, meminfo="MemTotal: 1048576 kB\nMemAvailable: 524288 kB\n")
    (tree.root / "proc/sys/vm/nr_hugepages").unlink()
    found = finding(run("--root", tree, "--format", "json"), "hugepages.unsupported")
    assert found["severity"] == "info"


def test_unsupported_names_the_boot_request_a_sysctl_overrides(tree, run):
    minimal_host(tree, meminfo="MemTotal: 1048576 kB\nMemAvailable: 524288 kB\n")
    (tree.root / "proc/sys/vm/nr_hugepages").unlink()
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 hugepages=64\n")
    tree.write("/etc/sysctl.d/80-pool.conf", "vm.nr_hugepages = 128\n")
    found = finding(run("--root", tree, "--format", "json"), "hugepages.unsupported")
    assert found["severity"] == "high"
    assert "vm.nr_hugepages = 128 (/etc/sysctl.d/80-pool.conf:1)" in found["message"]
    assert "hugepages=64 (/proc/cmdline)" in found["message"]
    summaries = [s["summary"] for s in found["remediation"]]
    assert any(s.startswith("Otherwise drop the sysctl") for s in summaries)
    assert any(s.startswith("Then drop the boot-time request") for s in summaries)  # the same way: both must go


def test_root_needs_no_sudo(tree, run):
    minimal_host(tree)
    tree.manifest(uid=0)
    tree.write("/sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n")
    found = finding(run("--root", tree, "--format", "json"), "thp.disabled")
    assert commands(found)[0] == "echo madvise | tee /sys/kernel/mm/transparent_hugepage/enabled >/dev/null"


def test_container_fixes_go_to_the_host(tree, run):
    minimal_host(tree)
    tree.write("/run/.containerenv", "")
    tree.write("/proc/self/mountinfo", "1 0 0:1 / / rw - overlay overlay rw\n3 2 0:2 /sys /proc/sys ro - proc proc rw\n")
    tree.write("/sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n")
    result = run("--root", tree, "--format", "json")
    found = finding(result, "thp.disabled")
    assert all(step["on_host"] for step in found["remediation"])
    assert found["remediation"][0]["summary"].startswith("On the container's host")


def test_readonly_sysctl_is_raised_by_the_findings_it_blocks(tree, run):
    minimal_host(tree, overcommit="2")
    tree.write("/proc/self/mountinfo", "1 0 0:1 / / rw - overlay overlay rw\n3 2 0:2 /sys /proc/sys ro - proc proc rw\n")
    result = run("--root", tree, "--model-size", "40G", "--format", "json")
    assert result.findings()["access.readonly-sysctl"] == "critical"
    assert "overcommit.strict-headroom" in finding(result, "access.readonly-sysctl")["message"]


def test_permission_denied_names_the_checks(tree, run):
    minimal_host(tree)
    tree.write("/etc/sysctl.d/10-secret.conf", "")
    tree.manifest(uid=1000, outcomes={"/etc/sysctl.d/10-secret.conf": "denied", "/boot/config-6.1.0-18-amd64": "denied"})
    result = run("--root", tree, "--model-size", "1G", "--format", "json")
    found = finding(result, "access.permission-denied")
    assert found["severity"] == "medium"
    assert "uid 1000" in found["message"] and "kernel.config-missing" in found["message"]
    assert {"path": "/etc/sysctl.d/10-secret.conf", "value": "permission denied"} in found["evidence"]
    assert commands(found) == ['sudo env "PATH=$PATH" aidoctor snapshot -o snapshot-as-root']


def test_image_mode_skips_runtime_checks_with_reasons(tree, run):
    tree.write("/etc/sysctl.conf", "vm.overcommit_memory = 1\nvm.overcommit_ratio = 95\n")
    result = run("--root", tree, "--model-size", "1G", "--format", "json")
    checks = {c["rule"]: c for c in result.json["checks"]}
    assert checks["memory.headroom"]["status"] == "skip" and "an image, not a running system" in checks["memory.headroom"]["reason"]
    found = finding(result, "overcommit.ratio-ignored")
    step = found["remediation"][0]
    assert step["summary"].startswith("In the image at %s: " % tree.root)
    assert step["commands"][0].startswith("sudo chroot %s sed -i --follow-symlinks -e " % tree.root)


def test_ratio_waiting_for_mode_2_at_boot_is_not_ignored(tree, run):
    minimal_host(tree, overcommit="0")
    tree.write("/etc/sysctl.d/90-overcommit.conf", "vm.overcommit_memory = 2\nvm.overcommit_ratio = 80\n")
    tree.write("/proc/sys/vm/overcommit_ratio", "80\n")
    assert run("--root", tree, "--format", "json").statuses()["overcommit.ratio-ignored"] == "pass"


def test_ratio_ignored_is_judged_by_the_boot_mode(tree, run):
    minimal_host(tree, overcommit="2")
    tree.write("/etc/sysctl.d/90-overcommit.conf", "vm.overcommit_memory = 1\nvm.overcommit_ratio = 80\n")
    found = finding(run("--root", tree, "--format", "json"), "overcommit.ratio-ignored")
    assert "vm.overcommit_ratio = 80 at /etc/sysctl.d/90-overcommit.conf:2" in found["message"]
    assert "the configuration boots with vm.overcommit_memory = 1" in found["message"]


def test_no_boot_loader_here_says_so(tree, run):
    minimal_host(tree)
    policies(tree, ["schedutil"])
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    last = found["remediation"][-1]
    assert last["commands"] == [] and "no boot loader configuration was found here" in last["summary"]


def test_kernel_install_hosts_edit_etc_kernel_cmdline(tree, run):
    minimal_host(tree)
    policies(tree, ["schedutil"])
    tree.write("/etc/kernel/cmdline", "root=/dev/sda1 ro\n")
    tree.write("/usr/bin/kernel-install", "", 0o755)
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    # The file is rewritten whole with the parameter, then kernel-install rewrites the entries.
    assert found["remediation"][-1]["commands"] == [
        "printf '%s\\n' 'root=/dev/sda1 ro cpufreq.default_governor=performance' | sudo tee /etc/kernel/cmdline >/dev/null",
        'sudo kernel-install add "$(uname -r)" /usr/lib/modules/"$(uname -r)"/vmlinuz',
    ]


def test_scheduler_rule_sorts_after_the_rules_that_set_one(tree, run):
    minimal_host(tree)
    tree.write("/sys/block/nvme0n1/queue/scheduler", "none [mq-deadline]\n")
    tree.write("/etc/udev/rules.d/99-ssd.rules", 'ACTION=="add", KERNEL=="nvme*", ATTR{queue/scheduler}="mq-deadline"\n')
    tree.write("/etc/udev/rules.d/70-sata.rules", 'ACTION=="add", KERNEL=="sd*", ATTR{queue/scheduler}="bfq"\n')
    found = finding(run("--root", tree, "--format", "json"), "storage.scheduler")
    assert "/etc/udev/rules.d/99-ssd.rules:1 (mq-deadline)" in found["message"] and "70-sata" not in found["message"]
    assert any("99-zz-aidoctor-nvme-scheduler.rules" in c for c in commands(found))


def test_fixed_frequency_on_a_vm_needs_nothing(run):
    from conftest import fixture_root

    found = finding(run("--root", fixture_root("vm-fixed-frequency"), "--format", "json"), "cpu.fixed-frequency")
    assert "this is a virtual machine" in found["message"] and found["remediation"] == []
    assert {"path": "/sys/class/dmi/id/sys_vendor", "value": "QEMU"} in found["evidence"]


def test_fixed_frequency_on_bare_metal_points_at_firmware_and_the_driver(tree, run):
    minimal_host(tree)
    tree.write("/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae\n")
    tree.write("/sys/class/dmi/id/sys_vendor", "Dell Inc.\n")
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_pstate=disable\n")
    found = finding(run("--root", tree, "--format", "json"), "cpu.fixed-frequency")
    assert "on bare metal" in found["message"] and "intel_pstate=disable" in found["message"]
    assert [s["summary"][:37] for s in found["remediation"]] == ["In the firmware (BIOS/UEFI) setup, ch"]
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 cpufreq.off=1\n")
    found = finding(run("--root", tree, "--format", "json"), "cpu.fixed-frequency")
    assert "cpufreq.off=1, which turns CPU frequency scaling off" in found["message"]
    assert found["remediation"][0]["summary"].startswith("Remove cpufreq.off=1 from the kernel command line")


def test_an_ec2_metal_instance_is_bare_metal(tree, run):
    minimal_host(tree)
    tree.write("/sys/class/dmi/id/sys_vendor", "Amazon EC2\n")
    tree.write("/sys/class/dmi/id/product_name", "m7i.metal-24xl\n")
    found = finding(run("--root", tree, "--format", "json"), "cpu.fixed-frequency")
    assert "on bare metal" in found["message"]


def test_an_empty_governor_and_unreadable_policies_are_said(tree, run):
    minimal_host(tree)
    policies(tree, ["", "performance", "performance"])
    tree.manifest(outcomes={"/sys/devices/system/cpu/cpufreq/policy2/scaling_governor": "denied"})
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    assert found["message"].startswith("CPU 0 on no governor (scaling_governor is empty): 1 of 2 CPUs not on performance.")
    assert (
        "1 more policy could not be read "
        "(/sys/devices/system/cpu/cpufreq/policy2/scaling_governor: permission denied where the tree was taken)" in found["message"]
    )


def test_no_quantized_variant_offered_when_none_fits(tree, run):
    minimal_host(tree)
    found = finding(run("--root", tree, "--model-size", "300G", "--format", "json"), "memory.headroom")
    assert "int4 ≈ 75.0 GiB (does not fit)" in found["message"]
    assert [s["summary"] for s in found["remediation"]] == [
        "Not even int4 fits here: use a smaller model, or a host (or limit) with more memory"
    ]


def test_ubuntus_ondemand_service_is_stopped_and_epp_kept_with_performance(tree, run):
    minimal_host(tree)
    policies(tree, ["powersave", "powersave"], driver="intel_pstate")
    tree.write("/lib/systemd/system/ondemand.service", "[Service]\nExecStart=/lib/systemd/set-cpufreq\n")
    tree.link("/etc/systemd/system/multi-user.target.wants/ondemand.service", "/lib/systemd/system/ondemand.service")
    tree.write("/usr/sbin/tuned-adm", "", 0o755)
    tree.write("/run/tuned/tuned.pid", "812\n")
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    summaries = [s["summary"] for s in found["remediation"]]
    assert summaries[1].startswith("Stop Ubuntu's ondemand.service (/lib/systemd/system/ondemand.service)")
    cmds = commands(found)
    assert "sudo systemctl disable --now ondemand.service" in cmds
    assert any("'[cpu]' governor=performance energy_performance_preference=performance" in c for c in cmds)


def _two_boot_pools(tree, release="6.1.0-18-amd64", line="hugepagesz=2M hugepages=4096 hugepagesz=1G hugepages=8"):
    """A 2 MiB pool the command line asks 4096 of and got 1500; an idle 1 GiB pool of 8."""
    minimal_host(tree, meminfo=meminfo(HugePages_Total=1500, HugePages_Free=1000), release=release)
    tree.write("/proc/sys/vm/nr_hugepages", "1500\n")
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 %s\n" % line)
    gig = "/sys/kernel/mm/hugepages/hugepages-1048576kB/"
    for name, value in (("nr_hugepages", 8), ("free_hugepages", 8), ("resv_hugepages", 0), ("surplus_hugepages", 0)):
        tree.write(gig + name, "%d\n" % value)
    tree.write("/usr/sbin/grubby", "", 0o755)


@pytest.mark.parametrize(
    "gig_pages, final, summary",
    [
        # 8 GiB released covers the 5.1 GiB missing: keep asking for all of it.
        (8, 4096, "Keep asking for 4096 pages at boot: releasing the unused pool there (hugepages.unused) frees 8.0 GiB"),
        # 2 GiB does not: ask for what the kernel could reserve.
        (2, 1500, "Ask the kernel command line for no more than the pool holds, 1500 pages"),
    ],
)
def test_a_short_boot_pool_and_an_idle_one_agree_on_one_line(tree, run, gig_pages, final, summary):
    _two_boot_pools(tree, line="hugepagesz=2M hugepages=4096 hugepagesz=1G hugepages=%d" % gig_pages)
    for name in ("nr_hugepages", "free_hugepages"):
        tree.write("/sys/kernel/mm/hugepages/hugepages-1048576kB/" + name, "%d\n" % gig_pages)
    result = run("--root", tree, "--format", "json")
    short, unused = finding(result, "hugepages.shortfall"), finding(result, "hugepages.unused")
    line = "sudo grubby --update-kernel=ALL --remove-args='hugepages hugepagesz' --args='hugepagesz=2M hugepages=%d'" % final
    assert line in commands(short) and line in commands(unused)
    assert any(s["summary"].startswith(summary) for s in short["remediation"])


def test_before_5_7_an_unsized_count_is_named_as_the_cause(tree, run):
    _two_boot_pools(tree, release="5.4.0-150-generic", line="default_hugepagesz=1G hugepages=16")
    tree.write("/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages", "0\n")
    tree.write("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages", "0\n")
    found = finding(run("--root", tree, "--format", "json"), "hugepages.shortfall")
    assert "Before Linux 5.7 a count given before any hugepagesz=" in found["message"]
    assert "--args='default_hugepagesz=1G hugepagesz=1G hugepages=16'" in " ".join(commands(found))


def test_growing_a_pool_that_would_push_the_model_out_is_said(tree, run):
    minimal_host(tree, meminfo=meminfo(HugePages_Total=100, HugePages_Free=90))
    tree.write("/proc/sys/vm/nr_hugepages", "100\n")
    tree.write("/etc/sysctl.d/80-pool.conf", "vm.nr_hugepages = 10340\n")  # 20 GiB more than now
    found = finding(run("--root", tree, "--model-size", "50G", "--format", "json"), "hugepages.shortfall")
    assert (
        "Growing the pool takes 20.0 GiB out of MemAvailable (60.0 GiB now): the model (50.0 GiB) would then no longer fit"
        in found["message"]
    )


def test_a_boot_line_near_all_memory_is_flagged(tree, run):
    minimal_host(tree)
    tree.write("/usr/sbin/grubby", "", 0o755)
    found = finding(run("--root", tree, "--hugepages", "31000", "--format", "json"), "hugepages.shortfall")
    boot = next(s for s in found["remediation"] if "kernel command line" in s["summary"])
    assert "the line reserves 60.5 GiB of 64.0 GiB and leaves 3.5 GiB to everything else" in boot["summary"]


def test_reserving_at_boot_instead_drops_the_sysctl_that_would_shrink_it(run):
    from conftest import fixture_root

    found = finding(
        run("--root", fixture_root("guide-followed-literally"), "--hugepages", "4096", "--format", "json"), "hugepages.shortfall"
    )
    summaries = [s["summary"] for s in found["remediation"]]
    boot = next(i for i, s in enumerate(summaries) if s.startswith("Or, for a pool that must survive fragmentation"))
    assert summaries[boot + 1].startswith("With the boot reservation, drop the sysctl that resizes the pool after boot (/etc/sysctl.conf:")


def test_a_declared_pool_is_not_called_unused_by_any_rule(run):
    from conftest import fixture_root

    result = run("--root", fixture_root("unused-static-pool"), "--model-size", "80G", "--hugepages", "32", "--format", "json")
    assert "hugepages.unused" not in result.findings()
    text = json.dumps(result.json["findings"])
    assert "unused huge page pool" not in text


def test_boot_lines_agree_when_the_pool_asked_for_is_only_declared(tree, run):
    _two_boot_pools(tree, line="hugepagesz=1G hugepages=8")
    tree.write("/proc/sys/vm/nr_hugepages", "0\n")
    tree.write("/proc/meminfo", meminfo(HugePages_Total=0, HugePages_Free=0))
    result = run("--root", tree, "--hugepages", "4096", "--format", "json")
    short, unused = finding(result, "hugepages.shortfall"), finding(result, "hugepages.unused")
    grubby = [c for c in commands(short) + commands(unused) if "grubby" in c]
    assert len(set(grubby)) == 1 and grubby[0].endswith("--args='hugepagesz=2M hugepages=4096'")


def test_headroom_never_says_fits_where_strict_overcommit_refuses(tree, run):
    minimal_host(tree, overcommit="2")
    result = run("--root", tree, "--model-size", "40G", "--format", "json", "-v")
    check = next(c for c in result.json["checks"] if c["rule"] == "memory.headroom")
    assert check["status"] == "pass" and "fits" not in check["reason"]
    assert (
        "Strict overcommit lets a loader commit only 27.9 GiB (CommitLimit − Committed_AS, less the admin and user reserves)"
        in check["reason"]
    )
    # and a quantized variant "fits" only within the commit limit too
    found = finding(run("--root", tree, "--model-size", "70G", "--format", "json"), "memory.headroom")
    assert (
        "int8 ≈ 35.0 GiB (fits in memory once the strict commit limit is raised: overcommit.strict-headroom), int4 ≈ 17.5 GiB (fits)"
        in found["message"]
    )


@pytest.mark.parametrize("value", ["", "abc", "-5"])
def test_an_odd_reserve_falls_back_to_the_kernel_default(tree, run, value):
    minimal_host(tree, overcommit="2")
    tree.write("/proc/sys/vm/user_reserve_kbytes", value + "\n")
    result = run("--root", tree, "--model-size", "40G", "--format", "json")
    assert result.statuses()["overcommit.strict-headroom"] == "finding"


def test_before_5_7_a_leading_count_for_2m_pages_is_an_ordinary_shortfall(tree, run):
    _two_boot_pools(tree, release="5.4.0-150-generic", line="hugepages=4096")
    found = finding(run("--root", tree, "--format", "json"), "hugepages.shortfall")
    assert "Before Linux 5.7" not in found["message"]
    assert "Either the kernel could not reserve that much at boot" in found["message"]


def test_before_5_7_a_later_hugepagesz_does_not_rescue_a_leading_gigantic_count(tree, run):
    _two_boot_pools(tree, release="5.4.0-150-generic", line="hugepages=16 default_hugepagesz=1G hugepagesz=1G")
    tree.write("/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages", "0\n")
    tree.write("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages", "0\n")
    found = finding(run("--root", tree, "--format", "json"), "hugepages.shortfall")
    assert "Before Linux 5.7 a count given before any hugepagesz=" in found["message"]
    assert "--args='default_hugepagesz=1G hugepagesz=1G hugepages=16'" in " ".join(commands(found))


def test_a_boot_pool_released_with_the_reboot_pending_is_no_shortfall(tree, run):
    # hugepages.unused's steps were taken: pool released now, GRUB no longer asks; no reboot yet.
    _two_boot_pools(tree, line="hugepagesz=1G hugepages=8")
    tree.write("/proc/sys/vm/nr_hugepages", "0\n")
    tree.write("/proc/meminfo", meminfo(HugePages_Total=0, HugePages_Free=0))
    for name in ("nr_hugepages", "free_hugepages"):
        tree.write("/sys/kernel/mm/hugepages/hugepages-1048576kB/" + name, "0\n")
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet"\n')
    assert not {"hugepages.shortfall", "hugepages.unused"} & set(run("--root", tree, "--format", "json").findings())
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet hugepagesz=1G hugepages=8"\n')
    assert "hugepages.shortfall" in run("--root", tree, "--format", "json").findings()


def test_a_pool_competing_with_the_model_offers_keeping_it(run):
    from conftest import fixture_root

    found = finding(run("--root", fixture_root("hugepage-shortfall"), "--model-size", "40G", "--format", "json"), "hugepages.shortfall")
    assert "the model (40.0 GiB) would then no longer fit" in found["message"]
    assert any(
        s["summary"].startswith("Or keep the pool as it is, for the model's sake: ask for the 1500 pages") for s in found["remediation"]
    )
    assert "printf '%s\\n' 'vm.nr_hugepages = 1500' | sudo tee /etc/sysctl.d/90-aidoctor-hugepages.conf >/dev/null" in commands(found)
    worse = finding(run("--root", fixture_root("hugepage-shortfall"), "--model-size", "50G", "--format", "json"), "hugepages.shortfall")
    assert "Growing the pool takes 5.1 GiB more out of MemAvailable, which is already short of the model" in worse["message"]


@pytest.mark.parametrize("declared, spare", [("0", "32.0 GiB"), ("16", "16.0 GiB")])
def test_pages_beyond_what_hugepages_declares_are_unused(run, declared, spare):
    from conftest import fixture_root

    result = run("--root", fixture_root("unused-static-pool"), "--model-size", "8G", "--hugepages", declared, "--format", "json")
    found = finding(result, "hugepages.unused")
    assert found["severity"] == "medium"
    if declared != "0":
        assert "--hugepages declares 16 of them needed; the other 16 (%s) only cost memory." % spare in found["message"]
        assert any(s["summary"].startswith("Shrink the pool to the 16 pages declared") for s in found["remediation"])


def test_ondemand_service_is_left_alone_in_a_vm_where_it_never_runs(tree, run):
    minimal_host(tree)
    policies(tree, ["powersave"], driver="intel_pstate")
    tree.write("/lib/systemd/system/ondemand.service", "[Unit]\nConditionVirtualization=no\n")
    tree.link("/etc/systemd/system/multi-user.target.wants/ondemand.service", "/lib/systemd/system/ondemand.service")
    tree.write("/sys/class/dmi/id/sys_vendor", "QEMU\n")
    found = finding(run("--root", tree, "--format", "json"), "cpu.governor")
    assert not any("ondemand" in c for c in commands(found))


def test_any_nonzero_cpufreq_off_is_named(tree, run):
    minimal_host(tree)
    tree.write("/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme\n")
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 cpufreq.off=0x1\n")
    found = finding(run("--root", tree, "--format", "json"), "cpu.fixed-frequency")
    assert "cpufreq.off=0x1, which turns CPU frequency scaling off" in found["message"]


def test_a_boot_reservation_waiting_for_a_reboot_is_said_so(tree, run):
    minimal_host(tree)
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet hugepagesz=2M hugepages=64"\n')
    tree.write("/usr/sbin/update-grub", "", 0o755)
    found = finding(run("--root", tree, "--hugepages", "64", "--format", "json"), "hugepages.shortfall")
    assert "The boot loader files reserve 64 of them at the next boot: a reboot is pending." in found["message"]
    assert [s["summary"] for s in found["remediation"]] == ["Reboot to take the boot-time reservation"]
    # A sysctl asking for fewer would shrink it again after boot: not merely pending.
    tree.write("/etc/sysctl.d/60-pool.conf", "vm.nr_hugepages = 8\n")
    found = finding(run("--root", tree, "--hugepages", "64", "--format", "json"), "hugepages.shortfall")
    assert "a reboot is pending" not in found["message"]


def test_growing_a_pool_under_strict_overcommit_weighs_the_commit_limit(run):
    from conftest import fixture_root

    result = run("--root", fixture_root("strict-overcommit"), "--model-size", "24G", "--hugepages", "4096", "--format", "json")
    found = finding(result, "hugepages.shortfall")
    assert "growing the pool lowers what a loader may commit from 25.9 GiB to 21.9 GiB" in found["message"]
    # and the ratio strict-headroom offers counts the pool as it will be
    strict = finding(
        run("--root", fixture_root("strict-overcommit"), "--model-size", "40G", "--hugepages", "4096", "--format", "json"),
        "overcommit.strict-headroom",
    )
    plain = finding(
        run("--root", fixture_root("strict-overcommit"), "--model-size", "40G", "--format", "json"), "overcommit.strict-headroom"
    )
    ratio = [c for c in commands(strict) if c.startswith("sudo sysctl -w vm.overcommit_ratio=")][0]
    assert ratio != [c for c in commands(plain) if c.startswith("sudo sysctl -w vm.overcommit_ratio=")][0]


def test_a_refused_grubenv_is_not_taken_as_absent_and_raises_the_access_finding(run, tmp_path):
    import shutil

    from conftest import fixture_root

    root = tmp_path / "image"
    shutil.copytree(fixture_root("image-rhel-traps"), root, symlinks=True)
    # RHEL keeps grubenv 0600: a snapshot taken as a normal user records it as refused.
    (root / "boot/grub2/grubenv").unlink()
    (root / ".aidoctor").mkdir()
    manifest = {"format": 1, "hostname": "rhel-img", "uid": 1000, "outcomes": {"/boot/grub2/grubenv": "denied"}}
    (root / ".aidoctor/manifest.json").write_text(json.dumps(manifest))
    result = run("--root", root, "--model-size", "70G", "--format", "json")
    assert "grubenv (/boot/grub2/grubenv) could not be read" in result.json["host"]["source"]
    assert "there is no grubenv" not in json.dumps(result.json)
    found = finding(result, "access.permission-denied")
    assert "/boot/grub2/grubenv decides which kernel" in found["message"]
    # The driver check read the guessed kernel's modules: what it may hide is critical.
    assert found["severity"] == "critical" and "gpu.driver-missing-for-kernel (partial data)" in found["message"]
    # GRUB_DEFAULT=saved on a GPU image: the driver check judged the guessed kernel.
    root2 = tmp_path / "gpu"
    shutil.copytree(fixture_root("image-gpu-no-driver"), root2, symlinks=True)
    grub = root2 / "etc/default/grub"
    grub.write_text(grub.read_text().replace("GRUB_DEFAULT=0", "GRUB_DEFAULT=saved"))
    (root2 / ".aidoctor").mkdir(exist_ok=True)
    (root2 / ".aidoctor/manifest.json").write_text(json.dumps(dict(manifest, outcomes={"/boot/grub/grubenv": "denied"})))
    raised = finding(run("--root", root2, "--format", "json"), "access.permission-denied")
    assert raised["severity"] == "critical" and "gpu.driver-missing-for-kernel (partial data)" in raised["message"]
