"""limits.nofile, limits.memlock, limits.pids: parsers, which process is judged, severities, fixes."""

from __future__ import annotations

import pytest

from ai_doctor.facts.limits import (
    Limit,
    loads_pam_limits,
    name_after,
    pam_source,
    parse_limits,
    parse_pam_limits,
    parse_status,
    parse_unit_settings,
    systemd_limit_value,
)

from conftest import minimal_host

LIMITS = """Limit                     Soft Limit           Hard Limit           Units
Max processes             {nproc[0]:<20} {nproc[1]:<20} processes
Max open files            {nofile[0]:<20} {nofile[1]:<20} files
Max locked memory         {memlock[0]:<20} {memlock[1]:<20} bytes
"""
ROOT_CAPS = "000001ffffffffff"
NO_CAPS = "0000000000000000"


def limits_text(nofile=(1024, 524288), memlock=(8388608, 8388608), nproc=(63000, 63000)):
    return LIMITS.format(nofile=nofile, memlock=memlock, nproc=nproc)


def status_text(uid=0, cap=ROOT_CAPS):
    return "Name:\tx\nUid:\t%d\t%d\t%d\t%d\nCapEff:\t%s\n" % (uid, uid, uid, uid, cap)


def process(tree, pid, uid=0, cap=ROOT_CAPS, cgroup=None, comm=None, **limits):
    base = "/proc/self" if pid == "self" else "/proc/%d" % pid
    tree.write(base + "/limits", limits_text(**limits))
    tree.write(base + "/status", status_text(uid, cap))
    if cgroup is not None:
        tree.write(base + "/cgroup", cgroup)
    if comm is not None:
        tree.write(base + "/comm", comm + "\n")


def service(tree, unit, pid, max_="max", events="max 0\n", **kwargs):
    folder = "/sys/fs/cgroup/system.slice/%s" % unit
    tree.write(folder + "/cgroup.procs", "%d\n" % pid)
    tree.write(folder + "/pids.max", max_ + "\n")
    tree.write(folder + "/pids.events", events)
    process(tree, pid, cgroup="0::/system.slice/%s\n" % unit, **kwargs)


def host(tree):
    minimal_host(tree)
    tree.write(
        "/proc/self/mountinfo", "26 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n30 26 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    )
    tree.write("/proc/sys/fs/nr_open", "1048576\n")
    return tree


PAM_SSHD = "@include common-auth\nsession    required     pam_loginuid.so\nsession    required     pam_limits.so\n"
PASSWD = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"


def session(tree, uid=1000, pam=PAM_SSHD, passwd=PASSWD, **limits):
    """aidoctor run from a login session of ``uid`` (no serving unit), PAM loading pam_limits."""
    process(tree, "self", uid=uid, cap=ROOT_CAPS if uid == 0 else NO_CAPS, **limits)
    if pam is not None:
        tree.write("/etc/pam.d/sshd", pam)
    if passwd is not None:
        tree.write("/etc/passwd", passwd)


def check(run, tree, rule, *more):
    result = run("--root", tree, "--model-size", "8G", "--format", "json", "--only", "limits", *more)
    found = [f for f in result.json["findings"] if f["rule"] == rule]
    status = next(c for c in result.json["checks"] if c["rule"] == rule)
    return found, status


def commands(found):
    return [c for step in found["remediation"] for c in step["commands"]]


# -- parsers --------------------------------------------------------------------------


def test_parse_limits_reads_soft_hard_and_unlimited():
    limits, rows = parse_limits(limits_text(nofile=(1024, 4096), memlock=("unlimited", "unlimited")) + "Max open filesX 1 2\n")
    assert limits["nofile"] == Limit(1024, 4096)
    assert limits["memlock"] == Limit(None, None)
    assert limits["nproc"] == Limit(63000, 63000)
    assert rows["nofile"].startswith("Max open files")


def test_parse_limits_leaves_out_rows_it_cannot_read():
    limits, _rows = parse_limits("Max open files            lots                 4096                 files\nMax processes 5\n")
    assert limits == {}


def test_parse_status_effective_caps_and_real_uid():
    assert parse_status("Uid:\t1000\t0\t0\t0\nCapEff:\t0000000000004000\n") == (0x4000, 1000)
    assert parse_status("CapEff:\tzz\n") == (None, None)


@pytest.mark.parametrize(
    "text, item, limit",
    [
        ("infinity", "nofile", Limit(None, None)),
        ("1048576", "nofile", Limit(1048576, 1048576)),
        ("1024:524288", "nofile", Limit(1024, 524288)),
        ("8M", "memlock", Limit(8 << 20, 8 << 20)),
        ("64K:infinity", "memlock", Limit(64 << 10, None)),
        ("8M", "nofile", None),
        ("1:2:3", "nofile", None),
        ("", "nofile", None),
    ],
)
def test_systemd_limit_values(text, item, limit):
    assert systemd_limit_value(text, item) == limit


def test_unit_settings_last_wins_and_empty_resets():
    text = "[Service]\nLimitNOFILE=4096\nLimitNOFILE=8192\nLimitMEMLOCK=8M\nLimitMEMLOCK=\n[Install]\nLimitNOFILE=1\n"
    found = parse_unit_settings(text, {"LimitNOFILE": "nofile", "LimitMEMLOCK": "memlock"}, "/x", "Service")
    assert found["nofile"].limit == Limit(8192, 8192) and found["nofile"].line == 3
    assert "memlock" not in found


def test_pam_lines_memlock_in_kib():
    lines = parse_pam_limits("# c\n*  soft  memlock  64\n@gpu hard nofile unlimited\n* soft nproc 4096 # rhel\nbad line\n", "/l")
    assert [(p.domain, p.type, p.item, p.value) for p in lines] == [
        ("*", "soft", "memlock", 65536),
        ("@gpu", "hard", "nofile", None),
        ("*", "soft", "nproc", 4096),
    ]


def test_drop_in_names_sort_after_the_others():
    assert name_after("aidoctor-nofile", ()) == "90-aidoctor-nofile.conf"
    assert name_after("aidoctor-nofile", ("override.conf",)) == "zz-aidoctor-nofile.conf"
    assert name_after("aidoctor-nofile", ("zzz.conf",)) > "zzz.conf"
    # A fix applied again rewrites its own file, whatever name it took then.
    assert name_after("aidoctor-nofile", ("90-aidoctor-nofile.conf",)) == "90-aidoctor-nofile.conf"
    assert name_after("aidoctor-nofile", ("override.conf", "zz-aidoctor-nofile.conf")) == "zz-aidoctor-nofile.conf"
    assert name_after("aidoctor-nofile", ("zzz.conf", "zzz~aidoctor-nofile.conf")) == "zzz~aidoctor-nofile.conf"


# -- limits.nofile ----------------------------------------------------------------------


def test_serving_unit_is_judged_not_this_process(tree, run):
    host(tree)
    process(tree, "self", nofile=(1024, 4096))
    service(tree, "vllm.service", 700, uid=1000, cap=NO_CAPS, nofile=(1024, 1048576), memlock=("unlimited", "unlimited"))
    found, status = check(run, tree, "limits.nofile")
    assert not found and "vllm.service (pid 700): hard 1048576" in status["reason"]


def test_low_hard_limit_of_a_unit_names_its_configuration(tree, run):
    host(tree)
    tree.write("/etc/systemd/system/vllm.service", "[Service]\nExecStart=/bin/vllm serve\nLimitNOFILE=4096\n")
    service(tree, "vllm.service", 700, uid=1000, cap=NO_CAPS, nofile=(4096, 4096), memlock=("unlimited", "unlimited"))
    (found,), _ = check(run, tree, "limits.nofile")
    assert found["severity"] == "medium"
    assert found["message"].startswith("vllm.service (pid 700) has a hard open-files limit of 4096")
    assert {"path": "/etc/systemd/system/vllm.service", "value": "LimitNOFILE=4096", "line": 3} in found["evidence"]
    assert (
        "printf '%s\\n' '[Service]' LimitNOFILE=1048576 | sudo tee /etc/systemd/system/vllm.service.d/90-aidoctor-nofile.conf >/dev/null"
        in (commands(found))
    )
    assert commands(found)[-1] == "sudo systemctl restart vllm.service"


def test_fix_stays_within_nr_open(tree, run):
    host(tree)
    tree.write("/proc/sys/fs/nr_open", "524288\n")
    service(tree, "ollama.service", 700, nofile=(1024, 4096), memlock=("unlimited", "unlimited"))
    (found,), _ = check(run, tree, "limits.nofile")
    assert any("LimitNOFILE=524288" in c for c in commands(found))


def test_unreadable_service_is_named_never_passed(tree, run):
    host(tree)
    process(tree, "self", nofile=(1024, 1048576))
    tree.write("/sys/fs/cgroup/system.slice/ollama.service/cgroup.procs", "812\n")  # /proc/812 hidden (hidepid)
    found, status = check(run, tree, "limits.nofile")
    assert not found and status["status"] == "skip"
    assert "ollama.service (pid 812)" in status["reason"] and "hidepid" in status["reason"]


def test_this_process_on_a_host_gets_a_limits_d_line_for_its_user_alone(tree, run):
    host(tree)
    session(tree, nofile=(1024, 4096))
    tree.write("/etc/security/limits.d/20-site.conf", "*  hard  nofile  4096\nbob  hard  nofile  2048\n")
    (found,), _ = check(run, tree, "limits.nofile")
    assert found["severity"] == "medium"
    assert found["message"].startswith("This process (aidoctor's own session: no serving unit or server process was found) has")
    assert "check the server's own with `grep 'Max open files' /proc/PID/limits`" in found["message"]
    assert "pam_limits" not in found["message"]  # nothing claims how this session got its limits
    # The lines that apply to alice are evidence; bob's is not.
    assert {"path": "/etc/security/limits.d/20-site.conf", "value": "*  hard  nofile  4096", "line": 1} in found["evidence"]
    assert not any("bob" in item["value"] for item in found["evidence"])
    assert commands(found) == [
        "sudo mkdir -p /etc/security/limits.d",
        "printf '%s\\n' 'alice  hard  nofile  1048576' | sudo tee /etc/security/limits.d/90-aidoctor-nofile-alice.conf >/dev/null",
    ]
    first, other = found["remediation"]
    assert "for alice alone" in first["summary"] and "through sshd" in first["summary"]
    assert other["summary"].startswith("Or, for a server run as a systemd service") and not other["commands"]


def test_root_session_gets_a_root_line_and_the_wildcard_is_not_its_evidence(tree, run):
    host(tree)
    session(tree, uid=0, nofile=(1024, 4096))
    tree.write("/etc/security/limits.d/20-site.conf", "*  hard  nofile  4096\n")
    (found,), _ = check(run, tree, "limits.nofile")
    assert [item["path"] for item in found["evidence"]] == ["/proc/self/limits"]  # `*` is not root's
    assert "'root  hard  nofile  1048576'" in " ".join(commands(found))
    assert not any("'*" in command for command in commands(found))


def test_no_pam_service_loading_pam_limits_gets_words_not_a_limits_d_file(tree, run):
    """A VM whose init (not a login) starts the session: limits.conf reaches nothing there."""
    host(tree)
    session(tree, uid=0, pam="auth required pam_unix.so\n# session required pam_limits.so\n", nofile=(20000, 20000))
    (found,), _ = check(run, tree, "limits.nofile")
    assert found["severity"] == "medium"
    assert not commands(found)
    assert found["remediation"][0]["summary"].startswith("No PAM service here loads pam_limits")


def test_a_user_without_a_name_gets_words_naming_its_uid(tree, run):
    host(tree)
    session(tree, uid=70001, passwd="root:x:0:0:root:/root:/bin/bash\n", nofile=(1024, 4096))
    (found,), _ = check(run, tree, "limits.nofile")
    assert not commands(found)
    assert "uid 70001" in found["remediation"][0]["summary"] and "`NAME hard nofile 1048576`" in found["remediation"][0]["summary"]


def test_the_user_line_lasts_at_the_next_boot_over_a_later_wildcard(tree, run):
    host(tree)
    session(tree, nofile=(1024, 4096))
    tree.write("/etc/security/limits.d/10-alice.conf", "alice  hard  nofile  1048576\n")
    tree.write("/etc/security/limits.d/95-site.conf", "*  hard  nofile  4096\n")
    found, status = check(run, tree, "limits.nofile", "--next-boot")
    assert not found and status["reason"] == "judged this process: hard 1048576"


def test_limits_d_lines_do_not_reach_a_session_at_the_next_boot_without_pam_limits(tree, run):
    host(tree)
    session(tree, pam="session required pam_unix.so\n", nofile=(1024, 4096))
    tree.write("/etc/security/limits.d/10-alice.conf", "alice  hard  nofile  1048576\n")
    (found,), _ = check(run, tree, "limits.nofile", "--next-boot")
    assert "hard open-files limit of 4096" in found["message"]


@pytest.mark.parametrize(
    "domain, uid, user, source",
    [
        ("alice", 1000, "alice", 0),
        ("*", 1000, "alice", 4),
        ("*", 0, "root", None),
        ("root", 0, "root", 0),
        ("bob", 1000, "alice", None),
        ("@gpu", 1000, "alice", None),
        (":1000", 1000, None, 0),
        ("1000:", 1500, None, 0),
        ("1000:1200", 1500, None, None),
        (":", 1000, None, None),
        ("x:1", 1, None, None),
    ],
)
def test_pam_source_follows_pam_limits_precedence(domain, uid, user, source):
    assert pam_source(domain, uid, user) == source


def test_pam_limits_is_found_on_session_lines_only():
    assert loads_pam_limits("session    required     pam_limits.so\n")
    assert loads_pam_limits("-session optional /lib/x86_64-linux-gnu/security/pam_limits.so\n")
    assert loads_pam_limits("sshd session required pam_limits.so\n")  # /etc/pam.conf
    assert not loads_pam_limits("# session required pam_limits.so\n")
    assert not loads_pam_limits("account required pam_limits.so\nsession required pam_unix.so\n")


def test_container_limit_is_fixed_on_its_host(tree, run):
    host(tree)
    tree.write("/run/.containerenv", "")
    process(tree, "self", cap="00000000a80425fb", nofile=(1024, 1024), memlock=("unlimited", "unlimited"))
    (found,), _ = check(run, tree, "limits.nofile")
    assert found["message"].startswith("This container")
    (step,) = found["remediation"]
    assert step["on_host"] and "--ulimit nofile=1048576:1048576" in step["summary"]


def test_container_runtime_limits_are_what_containers_inherit(tree, run):
    host(tree)
    process(tree, "self", nofile=(1024, 1048576))
    service(tree, "containerd.service", 900, nofile=(1024, 4096), memlock=("unlimited", "unlimited"))
    service(tree, "docker.service", 901, nofile=(1024, 1048576), memlock=("unlimited", "unlimited"))
    (found,), _ = check(run, tree, "limits.nofile")
    assert "containerd.service (pid 900)" in found["message"] and "containers it starts inherit" in found["message"]
    assert found["remediation"][1]["summary"].startswith("Or start each container")


def test_server_found_by_name_in_a_container(tree, run):
    host(tree)
    tree.write("/run/.containerenv", "")
    process(tree, "self", nofile=(1024, 1048576), comm="aidoctor")
    process(tree, 77, uid=1000, cap=NO_CAPS, comm="llama-server", nofile=(1024, 4096), memlock=("unlimited", "unlimited"))
    (found,), _ = check(run, tree, "limits.nofile")
    assert found["message"].startswith("llama-server (pid 77)")


def test_a_host_is_not_scanned_by_name_a_hand_started_server_has_its_shells_limits(tree, run):
    host(tree)
    process(tree, "self", nofile=(1024, 1048576), comm="aidoctor")
    process(tree, 77, uid=1000, cap=NO_CAPS, comm="llama-server", nofile=(1024, 4096), memlock=("unlimited", "unlimited"))
    found, status = check(run, tree, "limits.nofile")
    assert not found and status["status"] == "pass" and "this process" in status["reason"]


def test_image_with_known_systemd_passes_on_its_default(tree, run):
    tree.write("/etc/os-release", "ID=debian\n")
    tree.write("/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so", "")
    found, status = check(run, tree, "limits.nofile")
    assert not found and status["reason"] == "services in the image get systemd 252's hard open-files limit of 524288"


def test_image_without_systemd_version_skips(tree, run):
    tree.write("/etc/os-release", "ID=debian\n")
    found, status = check(run, tree, "limits.nofile")
    assert status["status"] == "skip" and "cannot be told" in status["reason"]


def test_image_unit_before_systemd_240_gets_the_kernel_default(tree, run):
    tree.write("/etc/os-release", "ID=rhel\n")
    tree.write("/usr/lib64/systemd/libsystemd-shared-239.so", "")
    tree.write("/usr/lib/systemd/system/tritonserver.service", "[Service]\nExecStart=/opt/tritonserver/bin/tritonserver\n")
    (found,), _ = check(run, tree, "limits.nofile")
    assert "4096 (systemd 239's default)" in found["message"]


# -- limits.memlock ---------------------------------------------------------------------


def rdma(tree):
    tree.write("/sys/devices/pci0000:00/0000:0b:00.0/infiniband/mlx5_0/node_type", "1: CA\n")
    tree.link("/sys/class/infiniband/mlx5_0", "../../devices/pci0000:00/0000:0b:00.0/infiniband/mlx5_0")


def test_rdma_and_a_finite_limit_is_high(tree, run):
    host(tree)
    rdma(tree)
    service(tree, "vllm.service", 700, uid=1000, cap=NO_CAPS, memlock=(65536, 65536))
    (found,), _ = check(run, tree, "limits.memlock")
    assert found["severity"] == "high" and "64 KiB (hard 64 KiB) without CAP_IPC_LOCK" in found["message"]
    assert {"path": "/sys/class/infiniband", "value": "mlx5_0"} in found["evidence"]


def test_cap_ipc_lock_exempts(tree, run):
    host(tree)
    rdma(tree)
    service(tree, "vllm.service", 700, uid=1000, cap="0000000000004000", memlock=(65536, 65536))
    found, status = check(run, tree, "limits.memlock")
    assert not found and "CAP_IPC_LOCK is effective" in status["reason"]


def test_runtime_with_rdma_is_medium(tree, run):
    host(tree)
    rdma(tree)
    process(tree, "self", memlock=("unlimited", "unlimited"))
    service(tree, "containerd.service", 900, uid=0, cap=NO_CAPS, memlock=(8388608, 8388608))
    (found,), _ = check(run, tree, "limits.memlock")
    assert found["severity"] == "medium" and "--ulimit memlock=-1" in found["message"]


def test_no_rdma_finite_limit_is_info_with_words_only(tree, run):
    host(tree)
    service(tree, "ollama.service", 812, uid=998, cap=NO_CAPS, memlock=(8388608, 8388608))
    (found,), _ = check(run, tree, "limits.memlock")
    assert found["severity"] == "info" and "8 MiB" in found["message"]
    (step,) = found["remediation"]
    assert not step["commands"]
    assert step["summary"].startswith("Only if a model is to be locked in RAM") and "ollama.service alone" in step["summary"]


def test_no_rdma_in_a_plain_users_session_changes_nothing_for_everyone(tree, run):
    """The review's case: a plain user on a VM without GPU, RDMA or server."""
    host(tree)
    session(tree, memlock=(8388608, 8388608))
    (found,), _ = check(run, tree, "limits.memlock")
    assert found["severity"] == "info" and found["message"].startswith("This process (aidoctor's own session")
    (step,) = found["remediation"]
    assert not step["commands"]
    assert "`alice soft memlock unlimited`" in step["summary"] and "Never for every account" in step["summary"]


def test_rdma_with_only_this_process_judged_is_medium_and_fixed_for_its_user(tree, run):
    host(tree)
    rdma(tree)
    session(tree, memlock=(8388608, 8388608))
    (found,), _ = check(run, tree, "limits.memlock")
    assert found["severity"] == "medium"
    assert "and this process (aidoctor's own session: no serving unit or server process was found) has" in found["message"]
    assert "`grep 'Max locked memory' /proc/PID/limits`" in found["message"] and "only Ethernet" in found["message"]
    assert commands(found)[-1] == (
        "printf '%s\\n' 'alice  soft  memlock  unlimited' 'alice  hard  memlock  unlimited' "
        "| sudo tee /etc/security/limits.d/90-aidoctor-memlock-alice.conf >/dev/null"
    )
    assert not any("'*" in command for command in commands(found))


def test_rdma_in_a_container_without_a_server_is_medium(tree, run):
    host(tree)
    rdma(tree)
    tree.write("/run/.containerenv", "")
    process(tree, "self", uid=1000, cap=NO_CAPS, memlock=(65536, 65536))
    (found,), _ = check(run, tree, "limits.memlock")
    assert found["severity"] == "medium" and "no server process was found in this container" in found["message"]
    assert "and this container (read from this process" in found["message"]


def test_memlock_skips_in_an_image(tree, run):
    tree.write("/etc/os-release", "ID=debian\n")
    _found, status = check(run, tree, "limits.memlock")
    assert status["status"] == "skip" and "an image" in status["reason"]


# -- limits.pids ------------------------------------------------------------------------


def gpus(tree, count):
    for index in range(count):
        tree.write("/proc/driver/nvidia/gpus/0000:%02x:00.0/information" % (0x18 + index), "Model: H100\n")


def test_refused_forks_are_high_even_on_one_gpu(tree, run):
    host(tree)
    service(tree, "ollama.service", 812, max_="4096", events="max 7\n", memlock=("unlimited", "unlimited"))
    (found,), _ = check(run, tree, "limits.pids")
    assert found["severity"] == "high"
    assert (
        "counts 7 fork or clone calls refused" in found["message"] and "pids.max 4096 at /system.slice/ollama.service" in found["message"]
    )


def test_low_pids_max_matters_on_multi_gpu_hosts_only(tree, run):
    host(tree)
    gpus(tree, 1)
    service(tree, "vllm.service", 700, max_="4096", memlock=("unlimited", "unlimited"))
    found, status = check(run, tree, "limits.pids")
    assert not found and "GPU count 1" in status["reason"]
    gpus(tree, 2)
    (found,), _ = check(run, tree, "limits.pids")
    assert found["severity"] == "medium" and "pids.max is 4096" in found["message"]
    assert commands(found)[-1] == "sudo systemctl set-property --runtime vllm.service TasksMax=infinity"


def test_a_parent_slice_limit_counts(tree, run):
    host(tree)
    gpus(tree, 4)
    tree.write("/sys/fs/cgroup/system.slice/pids.max", "2048\n")
    service(tree, "vllm.service", 700, memlock=("unlimited", "unlimited"))
    (found,), _ = check(run, tree, "limits.pids")
    assert "cgroup /system.slice whose pids.max is 2048" in found["message"]
    assert commands(found) == ["sudo systemctl set-property system.slice TasksMax=infinity"]


def test_nproc_is_judged_unless_root_or_capable(tree, run):
    host(tree)
    gpus(tree, 2)
    service(tree, "vllm.service", 700, uid=1000, cap=NO_CAPS, nproc=(4096, 4096), memlock=("unlimited", "unlimited"))
    (found,), _ = check(run, tree, "limits.pids")
    assert "RLIMIT_NPROC) of 4096" in found["message"]
    assert any("LimitNPROC=infinity" in c for c in commands(found))
    service(tree, "vllm.service", 700, uid=0, cap=ROOT_CAPS, nproc=(4096, 4096), memlock=("unlimited", "unlimited"))
    found, status = check(run, tree, "limits.pids")
    assert not found and "not enforced for it" in status["reason"]


def test_container_pids_events(tree, run):
    host(tree)
    tree.write("/run/.containerenv", "")
    process(tree, "self", cgroup="0::/\n", memlock=("unlimited", "unlimited"))
    tree.write("/sys/fs/cgroup/pids.max", "2048\n")
    tree.write("/sys/fs/cgroup/pids.events", "max 1\n")
    (found,), _ = check(run, tree, "limits.pids")
    assert found["severity"] == "high" and found["remediation"][0]["on_host"]
    assert "refused at the limit: this container (read from this process" in found["message"]
    assert "--pids-limit -1" in found["remediation"][0]["summary"]


def test_pids_skip_in_an_image(tree, run):
    tree.write("/etc/os-release", "ID=debian\n")
    _found, status = check(run, tree, "limits.pids")
    assert status["status"] == "skip"


def test_a_limits_line_is_written_only_for_a_plain_user_name_in_a_file_of_its_own():
    # A fix run as alice and then as bob writes two files: bob's never replaces alice's line.
    # A name that pam_limits reads as more than one user (`*`, `@group`, `%group`), or that
    # would shape a path, gets no line: words on what to write instead.
    from ai_doctor.rules.limits import _plain_name

    assert _plain_name("alice") and _plain_name("svc.vllm-1_a")
    assert not any(_plain_name(name) for name in ("", "*", "@sudo", "%adm", "a b", "a/b", "ünï", "x" * 33, "a;b", "$(x)", "a\nb"))


def test_a_user_named_like_every_account_gets_no_limits_line(tree, run):
    host(tree)
    rdma(tree)
    session(tree, memlock=(8388608, 8388608), passwd=PASSWD.replace("alice:", "*:"))
    (found,), _ = check(run, tree, "limits.memlock")
    assert not any("limits.d" in command for command in commands(found)), commands(found)
    assert "not a plain user name" in found["remediation"][0]["summary"]
