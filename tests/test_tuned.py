"""tuned as its own code runs it: the profile it loads at start (active_profile and profile_mode,
or its recommender in automatic mode), sections merged by name, and sections it skips where
their uname_regex or cpuinfo_regex does not match (Debian 12's tuned 2.20, Debian 13's 2.25)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ai_doctor.facts import Facts
from ai_doctor.facts.tuned import MatchInputs, cpuinfo_verdict, parse_tuned_conf, uname_verdict
from ai_doctor.host import Host
from ai_doctor.remedy.actions import PLAIN, TunedActivate

from conftest import FIXTURES, MEMINFO_64G, minimal_host

TX_REGEX = r"CPU part\s+:\s+(0x0?516)|(0x0?af)|(0x0?a[0-3])|(0x0?b8)\b"
# Debian's packaged tuned files, as the fixtures hold them: 2.20 (Debian 12) and 2.25 (Debian 13).
PACKAGES = {"2.20": FIXTURES / "debian-tuned-throughput-amd64/root", "2.25": FIXTURES / "debian-tuned-virtual-guest/root"}


def facts(root):
    return Facts(Host(str(root)))


def json_run(run, *args):
    return run(*[str(a) for a in args], "--format", "json")


def check(result, rule):
    return next(c for c in result.json["checks"] if c["rule"] == rule)


def finding(result, rule):
    return next(f for f in result.json["findings"] if f["rule"] == rule)


def commands(found):
    return [c for step in found["remediation"] for c in step["commands"]]


def install_tuned(tree, version, active="", mode="", enabled=True):
    """tuned's package files from the fixtures, and its state files."""
    source = PACKAGES[version]
    for folder in ("usr/lib/tuned", "etc/tuned"):
        shutil.copytree(str(source / folder), str(tree.root / folder), dirs_exist_ok=True)
    for tool in ("tuned", "tuned-adm", "virt-what"):
        tree.write("/usr/sbin/" + tool, "", 0o755)
    tree.write("/usr/lib/systemd/system/tuned.service", (source / "usr/lib/systemd/system/tuned.service").read_text())
    if enabled:
        tree.link("/etc/systemd/system/multi-user.target.wants/tuned.service", "/usr/lib/systemd/system/tuned.service")
    tree.write("/etc/tuned/active_profile", active)
    tree.write("/etc/tuned/profile_mode", mode)
    return tree


def live(tree, arch="x86_64", virtual=False, release="6.1.0-18-amd64"):
    """A running host: ``virtual`` sets the x86 hypervisor flag (bare metal lacks it)."""
    minimal_host(tree, MEMINFO_64G, release=release)
    tree.write("/proc/sys/kernel/arch", arch + "\n")
    tree.write("/proc/sys/kernel/ostype", "Linux\n")
    tree.write("/proc/sys/kernel/version", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n")
    if arch == "x86_64":
        tree.write(
            "/proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu lm%s\n\n" % (" hypervisor" if virtual else "")
        )
    return tree


# -- the uname and cpuinfo conditions (units/manager.py) -----------------------------------


def inputs(uname=None, fields=(), cpuinfo=None, truncated=False):
    return MatchInputs(uname, fields, "a test", cpuinfo, "a test", truncated)


def test_uname_regex_is_searched_in_the_whole_uname_string():
    full = inputs("Linux host 6.1.0-18-arm64 #1 SMP aarch64")
    assert uname_verdict("aarch64", full)[0] is True
    assert uname_verdict("^Linux host", full)[0] is True
    assert uname_verdict("x86_64", full)[0] is False
    assert uname_verdict("(", full)[0] is None  # tuned itself would fail on it
    assert uname_verdict(".*", inputs())[0] is True


def test_an_image_decides_a_machine_name_from_the_fields_it_tells():
    image = inputs(fields=("Linux", "localhost", "6.1.0-18-amd64", None, "x86_64"))
    assert uname_verdict("aarch64", image)[0] is False
    assert uname_verdict("amd64", image)[0] is True  # in the release name
    # A regex over the version string, which only the running kernel prints, is not known.
    assert uname_verdict("PREEMPT_RT", image)[0] is None
    assert uname_verdict("aarch6.", image)[0] is None
    unnamed = inputs(fields=("Linux", None, "6.1.0-18-amd64", None, "x86_64"))
    assert uname_verdict("aarch64", unnamed)[0] is None  # a host name could hold it


def test_cpuinfo_regex_as_tuned_writes_thunderx():
    tx2 = "processor\t: 0\nCPU implementer\t: 0x43\nCPU part\t: 0x0af\n"
    neoverse = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n"
    assert cpuinfo_verdict(TX_REGEX, inputs(cpuinfo=tx2))[0] is True
    assert cpuinfo_verdict(TX_REGEX, inputs(cpuinfo=neoverse))[0] is False
    # Cut short: a match is a match, no match is not known.
    assert cpuinfo_verdict(TX_REGEX, inputs(cpuinfo=neoverse, truncated=True))[0] is None
    verdict, why = cpuinfo_verdict(TX_REGEX, inputs())
    assert verdict is None and "not known" in why


def test_machine_from_proc_config_or_release_name(tree):
    live(tree, arch="aarch64")
    got = facts(tree.root).get("tuned_match_inputs")
    assert got.fields[4] == "aarch64" and got.machine_how == "/proc/sys/kernel/arch"
    assert got.uname == "Linux testhost 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) aarch64"
    os.unlink(str(tree.root / "proc/sys/kernel/arch"))  # before Linux 6.1
    tree.write("/boot/config-6.1.0-18-amd64", "CONFIG_X86_64=y\n")
    got = facts(tree.root).get("tuned_match_inputs")
    assert got.fields[4] == "x86_64" and got.machine_how == "CONFIG_X86_64=y in /boot/config-6.1.0-18-amd64"
    os.unlink(str(tree.root / "boot/config-6.1.0-18-amd64"))
    got = facts(tree.root).get("tuned_match_inputs")
    assert got.fields[4] == "x86_64" and got.machine_how == "the kernel release 6.1.0-18-amd64"


def test_tuned_main_conf_presets_the_strings(tree):
    shutil.copytree(str(FIXTURES / "debian-tuned-arm64-image/root"), str(tree.root), symlinks=True, dirs_exist_ok=True)
    tree.write("/etc/tuned/tuned-main.conf", "uname_string = aarch64\ncpuinfo_string = CPU part : 0x0af\n")
    profile = facts(tree.root).get("tuned_profile")
    assert profile.unit("vm.thunderx").verdict is True
    assert profile.get("vm", "transparent_hugepages").value == "never"


# -- the fixtures ---------------------------------------------------------------------------


def test_throughput_performance_on_an_amd64_image_leaves_thp_alone(run):
    root = FIXTURES / "debian-tuned-throughput-amd64/root"
    profile = facts(root).get("tuned_profile")
    unit = profile.unit("vm.thunderx")
    assert unit.verdict is False
    assert unit.why == "uname_regex=aarch64 does not match the x86_64 kernel (CONFIG_X86_64=y in /boot/config-6.1.0-18-amd64)"
    assert facts(root).get("thp_writers").found == ()
    result = json_run(run, "--root", root, "--image")
    assert check(result, "thp.disabled")["status"] == "pass"
    assert "tuned" not in check(result, "thp.disabled")["reason"]
    assert "the active tuned profile sets governor=performance" in check(result, "cpu.governor")["reason"]


def test_virtual_guest_on_debian_13_includes_the_same_section(run):
    root = FIXTURES / "debian-tuned-virtual-guest/root"
    state = facts(root).get("tuned")
    assert state.user_dir == "/etc/tuned/profiles"
    profile = facts(root).get("tuned_profile")
    assert profile.unit("vm.thunderx").settings["transparent_hugepages"].path == "/usr/lib/tuned/profiles/throughput-performance/tuned.conf"
    assert profile.unit("vm.thunderx").verdict is False
    # virtual-guest's [vm] merges into throughput-performance's: dirty_ratio 30 wins.
    assert profile.unit("vm").settings["dirty_ratio"].value == "30"
    assert json_run(run, "--root", root, "--image").findings() == {}


def test_an_arm64_image_cannot_tell_a_thunderx_and_says_so(run):
    result = json_run(run, "--root", FIXTURES / "debian-tuned-arm64-image/root", "--image")
    found = check(result, "thp.disabled")
    assert found["status"] == "skip"
    assert (
        "whether tuned writes `never` after boot is not known: [vm.thunderx] sets transparent_hugepages=never only where" in found["reason"]
    )
    assert "an image does not tell which CPU it boots on" in found["reason"]


def test_thunderx_override_carries_conditions_of_its_own(run, tmp_path):
    root = FIXTURES / "debian-tuned-thunderx/root"
    result = json_run(run, "--root", root, "--model-size", "70G")
    found = finding(result, "thp.disabled")
    assert {"path": "/usr/lib/tuned/throughput-performance/tuned.conf", "value": "transparent_hugepages=never", "line": 22} in found[
        "evidence"
    ]
    written = next(c for c in commands(found) if "aidoctor-thp/tuned.conf" in c)
    assert "'[vm.thunderx]' type=vm 'uname_regex=.*' 'cpuinfo_regex=.*' transparent_hugepages=madvise" in written


def test_tuned_merge_keeps_the_earlier_sections_conditions(tree):
    # The override the check used to write: on an amd64 host it inherits uname_regex=aarch64
    # (profiles/merger.py), so tuned skips it as it skips the original.
    shutil.copytree(str(FIXTURES / "debian-tuned-throughput-amd64/root"), str(tree.root), symlinks=True, dirs_exist_ok=True)
    tree.write("/etc/tuned/active_profile", "throughput-performance site\n")
    tree.write("/etc/tuned/site/tuned.conf", "[vm.thunderx]\ntype=vm\ntransparent_hugepages=madvise\n")
    unit = facts(tree.root).get("tuned_profile").unit("vm.thunderx")
    assert unit.verdict is False and unit.uname_regex == "aarch64"
    assert unit.settings["transparent_hugepages"].path == "/etc/tuned/site/tuned.conf"
    tree.write("/etc/tuned/site/tuned.conf", "[vm.thunderx]\ntype=vm\nuname_regex=.*\ncpuinfo_regex=.*\ntransparent_hugepages=madvise\n")
    profile = facts(tree.root).get("tuned_profile")
    assert profile.unit("vm.thunderx").verdict is True
    assert profile.get("vm", "transparent_hugepages").value == "madvise"
    # Without type=, the merged section takes its own name as the plugin, which tuned has not.
    tree.write("/etc/tuned/site/tuned.conf", "[vm.thunderx]\nuname_regex=.*\ncpuinfo_regex=.*\ntransparent_hugepages=madvise\n")
    assert facts(tree.root).get("tuned_profile").unit("vm.thunderx").plugin == "vm.thunderx"


def test_auto_mode_on_bare_metal_runs_balanced(run):
    root = FIXTURES / "debian-tuned-auto/root"
    state = facts(root).get("tuned")
    assert state.auto and state.base == ("balanced",)
    assert state.how == (
        "automatic mode (active_profile and profile_mode are empty): tuned picks balanced when it starts "
        "(/usr/lib/tuned/recommend.d/50-tuned.conf [balanced])"
    )
    boot = facts(root).get("governors_at_boot")
    # balanced's [modules] loads cpufreq_conservative before its [cpu] (priority=10) runs.
    assert set(boot.governors.values()) == {"conservative"}
    result = json_run(run, "--root", root, "--model-size", "70G")
    found = finding(result, "cpu.governor")
    assert (
        "tuned sets governor=conservative|powersave (/usr/lib/tuned/balanced/tuned.conf:13) each time it starts. Automatic mode "
        "(active_profile and profile_mode are empty): tuned picks balanced when it starts" in found["message"]
    )
    assert found["remediation"][-1]["summary"].startswith("Keep it at boot with tuned (a profile of its own, after balanced:")
    assert "p=balanced;; esac; tuned-adm profile $p aidoctor-cpu" in commands(found)[-1]
    after = json_run(run, "--root", root, "--model-size", "70G", "--next-boot")
    assert "CPUs 0-3 on conservative" in finding(after, "cpu.governor")["message"]


# -- the recommender (utils/profile_recommender.py) -----------------------------------------


def test_a_virtual_machine_in_auto_mode_runs_virtual_guest_and_keeps_thp(tree, run):
    live(tree, virtual=True, release="6.12.48+deb13-amd64")
    install_tuned(tree, "2.25", "virtual-guest\n", "auto\n")
    tree.write("/run/tuned/tuned.pid", "700\n")
    state = facts(tree.root).get("tuned")
    assert state.base == ("virtual-guest",) and "virtual-guest when it starts" in state.how
    profile = facts(tree.root).get("tuned_profile")
    assert profile.unit("vm.thunderx").verdict is False
    assert facts(tree.root).get("thp_at_boot").top != "never"
    result = json_run(run, "--root", tree, "--next-boot")
    assert check(result, "thp.disabled")["status"] == "pass"


def test_recommend_d_rules_in_order(tree):
    live(tree)
    install_tuned(tree, "2.20")
    pick = facts(tree.root).get("tuned").recommended
    assert pick.profile == "balanced" and pick.source == "/usr/lib/tuned/recommend.d/50-tuned.conf [balanced]"
    tree.write("/etc/system-release-cpe", "cpe:/o:redhat:enterprise_linux:9::server\n")
    assert facts(tree.root).get("tuned").base == ("throughput-performance",)
    # A file of the same name in /etc/tuned/recommend.d hides the packaged one.
    tree.write("/etc/tuned/recommend.d/50-tuned.conf", "[network-latency,1]\nchassis_type=rack\n[powersave]\n")
    tree.write("/sys/devices/virtual/dmi/id/chassis_type", "23\n")
    assert facts(tree.root).get("tuned").base == ("network-latency",)
    tree.write("/etc/tuned/recommend.conf", "[latency-performance]\n/etc/hostname=.+\n")
    tree.write("/etc/hostname", "epyc-11\n")
    assert facts(tree.root).get("tuned").base == ("latency-performance",)
    tree.write("/etc/tuned/tuned-main.conf", "recommend_command = 0\n")
    assert facts(tree.root).get("tuned").base == ("balanced",)


def test_virt_what_missing_means_no_output(tree):
    live(tree, virtual=True)
    install_tuned(tree, "2.20")
    assert facts(tree.root).get("tuned").base == ("virtual-guest",)
    os.unlink(str(tree.root / "usr/sbin/virt-what"))
    assert facts(tree.root).get("tuned").base == ("balanced",)


def test_process_conditions_are_not_known(tree):
    live(tree)
    install_tuned(tree, "2.20")
    tree.write("/etc/tuned/recommend.d/10-db.conf", "[postgresql]\nprocess=postgres\n")
    state = facts(tree.root).get("tuned")
    assert state.base is None and state.recommended.choices[0][0] == "postgresql"
    assert "the processes running when tuned starts" in state.how


def test_a_container_is_not_known_to_the_2_25_rules(tree):
    live(tree, virtual=False, release="6.12.48+deb13-amd64")
    install_tuned(tree, "2.25")
    assert facts(tree.root).get("tuned").base == ("balanced",)
    tree.write("/run/.containerenv", "")
    state = facts(tree.root).get("tuned")
    assert state.base is None
    # virt-what's output in a container is not known: 2.25's [default] rule may match, or not.
    assert [name for name, _why in state.recommended.choices] == ["default", "virtual-guest", "balanced"]


def test_an_unknown_pick_makes_the_governor_fix_advice(tree, run):
    # An arm64 server: no x86 hypervisor flag, no DMI vendor, so virt-what's output is not known.
    live(tree, arch="aarch64", release="6.1.0-18-arm64")
    install_tuned(tree, "2.20")
    tree.write("/proc/cpuinfo", "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n")
    tree.write("/sys/devices/system/cpu/cpufreq/policy0/scaling_governor", "schedutil\n")
    tree.write("/sys/devices/system/cpu/cpufreq/policy0/affected_cpus", "0\n")
    tree.write("/sys/devices/system/cpu/cpufreq/policy0/scaling_driver", "cppc_cpufreq\n")
    profile = facts(tree.root).get("tuned_profile")
    decision = profile.decide("cpu", "governor")
    assert not decision.known
    assert "virtual-guest (picked where virt=.+ matches virt-what's output" in decision.why
    assert "sets governor=performance; balanced (picked otherwise) sets governor=conservative|powersave" in decision.why
    found = finding(json_run(run, "--root", tree), "cpu.governor")
    last = found["remediation"][-1]
    assert last["summary"].startswith("Keep it at boot with tuned, by hand: tuned picks its profile when it starts")
    assert last["commands"] == []
    assert "What tuned sets when it next starts is not known" in found["message"]
    notes = json_run(run, "--root", tree, "--next-boot").json["host"]["next_boot"]
    assert any("CPU governors: what tuned sets is not known" in note for note in notes)


def test_an_image_in_auto_mode_says_which_profiles_it_may_run(tree, run):
    shutil.copytree(str(FIXTURES / "debian-tuned-throughput-amd64/root"), str(tree.root), symlinks=True, dirs_exist_ok=True)
    tree.write("/etc/tuned/active_profile", "")
    tree.write("/etc/tuned/profile_mode", "")
    result = json_run(run, "--root", tree, "--image")
    skipped = check(result, "cpu.governor")
    assert skipped["status"] == "skip"
    assert "virt-what's output depends on the machine an image boots on" in skipped["reason"]
    # Neither pick writes THP on an x86_64 kernel: that much is known.
    assert check(result, "thp.disabled")["status"] == "pass"


# -- loading and merging (profiles/loader.py, merger.py) -----------------------------------


def test_merge_semantics(tree):
    live(tree)
    install_tuned(tree, "2.20", "site\n", "manual\n")
    tree.write(
        "/etc/tuned/site/tuned.conf",
        "[main]\ninclude=throughput-performance,-missing-ok\n"
        "[cpu]\ndrop=min_perf_pct\ngovernor=schedutil\n"
        "[sysctl]\nreplace=1\nvm.swappiness=1\n"
        "[disk]\nenabled=false\n"
        "[cpu.second]\ntype=cpu\ngovernor=powersave\n",
    )
    profile = facts(tree.root).get("tuned_profile")
    cpu = profile.unit("cpu")
    assert "min_perf_pct" not in cpu.settings and cpu.settings["governor"].value == "schedutil"
    assert list(profile.unit("sysctl").settings) == ["vm.swappiness"]
    assert profile.unit("disk").verdict is False
    # The first cpu instance takes every CPU: the second tunes none (plugins/base.py).
    assert profile.get("cpu", "governor").value == "schedutil"
    assert "missing-ok" not in profile.how


def test_a_user_profile_of_a_packaged_name_includes_the_packaged_one(tree):
    live(tree)
    install_tuned(tree, "2.20", "balanced\n", "manual\n")
    # The loader skips a file it loaded already and finds the next one of the name.
    tree.write("/etc/tuned/balanced/tuned.conf", "[main]\ninclude=balanced\n[cpu]\ngovernor=performance\n")
    profile = facts(tree.root).get("tuned_profile")
    assert profile.get("cpu", "governor").path == "/etc/tuned/balanced/tuned.conf"
    assert profile.unit("modules") is not None  # from /usr/lib/tuned/balanced


def test_variables_expand_in_regexes(tree):
    live(tree, arch="aarch64")
    install_tuned(tree, "2.20", "site\n", "manual\n")
    tree.write("/etc/tuned/site-vars.conf", "part=0x0af\n")
    tree.write(
        "/etc/tuned/site/tuned.conf",
        "[variables]\ninclude=/etc/tuned/site-vars.conf\nregex=CPU part\\s+:\\s+${part}\n"
        "[vm]\ncpuinfo_regex=${regex}\ntransparent_hugepages=never\n"
        "[sysctl]\ncpuinfo_regex=${f:exec:true}\nvm.swappiness=1\n",
    )
    tree.write("/proc/cpuinfo", "processor\t: 0\nCPU part\t: 0x0af\n")
    profile = facts(tree.root).get("tuned_profile")
    assert profile.unit("vm").cpuinfo_regex == "CPU part\\s+:\\s+0x0af" and profile.unit("vm").verdict is True
    assert profile.unit("sysctl").verdict is None  # a function only tuned evaluates


def test_profile_mode_rules(tree):
    live(tree)
    install_tuned(tree, "2.20", "throughput-performance\n", "auto\n")
    assert facts(tree.root).get("tuned").base == ("balanced",)  # auto: the pick, not the list
    tree.write("/etc/tuned/profile_mode", "")
    assert facts(tree.root).get("tuned").base == ("throughput-performance",)
    tree.write("/etc/tuned/profile_mode", "manual\n")
    tree.write("/etc/tuned/active_profile", "")
    assert facts(tree.root).get("tuned").base == () and facts(tree.root).get("tuned_profile") is None
    tree.write("/etc/tuned/profile_mode", "sometimes\n")
    assert facts(tree.root).get("tuned").base == ()
    tree.write("/etc/tuned/profile_mode", "manual\n")
    tree.write("/etc/tuned/active_profile", "balanced\n")
    tree.write("/etc/tuned/post_loaded_profile", "throughput-performance\n")
    assert facts(tree.root).get("tuned_profile").get("cpu", "governor").value == "performance"


def test_parsers_are_linear():
    import time

    text = "[s]\n" + "include=" + " " * 200000 + "x\n" + "a=" + "${" * 50000 + "\n"
    start = time.perf_counter()
    parse_tuned_conf(text)
    from ai_doctor.facts.tuned import _expand, _names

    _names(" " * 200000 + ";")
    _expand("${" * 100000, {"a": "b"})
    assert time.perf_counter() - start < 1


# -- the action ------------------------------------------------------------------------------


@pytest.mark.parametrize("running", [True, False])
def test_activate_keeps_the_pick_in_auto_mode_only(tmp_path, running):
    action = TunedActivate("aidoctor-cpu", running, ("balanced",))
    command = action.sh(PLAIN)[0]
    tuned = tmp_path / "etc/tuned"
    tuned.mkdir(parents=True)

    def state(active, mode):
        for name, text in (("active_profile", active), ("profile_mode", mode)):
            path = tuned / name
            if text is None:
                if path.exists():
                    path.unlink()
            else:
                path.write_text(text)
        done = subprocess.run(
            ["sh", "-c", command.replace("tuned-adm profile", "echo").replace("/etc/tuned/", str(tuned) + "/")],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip() if running else (tuned / "active_profile").read_text().strip()

    assert state("", "") == "balanced aidoctor-cpu"
    assert state("balanced\n", "auto\n") == "balanced aidoctor-cpu"
    assert state("balanced aidoctor-thp\n", "manual\n") == "balanced aidoctor-thp aidoctor-cpu"  # another fix ran first
    assert state("virtual-guest\n", "") == "virtual-guest aidoctor-cpu"  # no mode and a name: manual
    if running:
        assert state(None, None) == "balanced aidoctor-cpu"


def test_activate_applies_as_it_prints(tmp_path):
    from ai_doctor.remedy.target import Target

    (tmp_path / "etc/tuned").mkdir(parents=True)
    (tmp_path / "etc/tuned/active_profile").write_text("")
    target = Target(str(tmp_path))
    TunedActivate("aidoctor-cpu", False, ("balanced",)).apply(target)
    assert (tmp_path / "etc/tuned/active_profile").read_text() == "balanced aidoctor-cpu\n"
    assert (tmp_path / "etc/tuned/profile_mode").read_text() == "manual\n"
    TunedActivate("aidoctor-thp", False, ("balanced",)).apply(target)
    assert (tmp_path / "etc/tuned/active_profile").read_text() == "balanced aidoctor-cpu aidoctor-thp\n"


def test_a_profile_regex_that_backtracks_exponentially_is_not_run():
    import time

    from ai_doctor.facts.tuned import _search

    started = time.monotonic()
    assert _search("(a|aa)+c", "a" * 64) is None  # would take longer than the universe otherwise
    assert _search("(x+)+y", "x" * 64) is None
    assert time.monotonic() - started < 1
    assert _search(r"CPU part\s+:\s+(0x0a1|0x0af)", "CPU part\t: 0x0af\n") is True
    assert _search("Cavium.*ThunderX", "model name\t: Intel\n") is False


def test_recommend_and_polynomial_regexes_and_doubling_variables_stay_bounded():
    import time

    from ai_doctor.facts.tuned import _expand, _match, _search

    started = time.monotonic()
    assert _match("(a+)+$", "a" * 40 + "!", 0) is None  # a recommend.d /FILE= condition
    assert _search(".*.*.*Z", "flags\t: " + " ".join("flag%d" % i for i in range(300))) is None
    assert _match(".*(computenode|server).*", "cpe:/o:redhat:enterprise_linux:9::server", 0) is True  # Debian's own rule
    variables = {"v0": "a" * 16}
    for level in range(1, 40):
        variables["v%d" % level] = _expand("${v%d}${v%d}" % (level - 1, level - 1), variables)
    assert max(len(value) for value in variables.values()) <= 65536 + 16  # the cap, and a ${v} left as written
    assert _search(variables["v39"], "aarch64") is None  # left as written: not known, not a verdict
    assert time.monotonic() - started < 2
