"""gpu.container-runtime, gpu.device-nodes and gpu.dev-char-links: their readers (a TOML subset,
a block-YAML subset, daemon.json, /proc/devices) and the rules on small trees."""

from __future__ import annotations

import json
import os
import random
import time

import pytest

from ai_doctor.facts.containerrt import containerd_settings, parse_cdi, parse_docker_config, parse_toml, parse_yaml
from ai_doctor.facts.gpudevices import Process, parse_params, parse_proc_devices, parse_status
from ai_doctor.host import Node

from conftest import minimal_host

DEVICES = "Character devices:\n  1 mem\n195 nvidia\n226 drm\n511 nvidia-uvm\n\nBlock devices:\n  8 sd\n511 nvidia-uvm-block\n"
GPU_RULES = ("--only", "gpu.container-runtime", "--only", "gpu.device-nodes", "--only", "gpu.dev-char-links")


def _node(tree, path, kind="c", major=195, minor=0, mode=0o666, uid=0, gid=0, mtime=1733100000):
    tree.write(path, "")
    tree.write("/.aidoctor/derived/node" + path, "%s %d %d %04o %d %d %d\n" % (kind, major, minor, mode, uid, gid, mtime))


def _nvidia(tree, uvm=True, nodes=True):
    minimal_host(tree)
    tree.write("/sys/module/nvidia/version", "550.127.05\n")
    modules = "nvidia 54063104 1 nvidia_uvm, Live 0x0000000000000000 (POE)\n"
    if uvm:
        modules = "nvidia_uvm 4956160 0 - Live 0x0000000000000000 (POE)\n" + modules
    tree.write("/proc/modules", modules)
    tree.write("/proc/devices", DEVICES if uvm else DEVICES.replace("511 nvidia-uvm\n", ""))
    tree.write("/proc/driver/nvidia/params", "DeviceFileMode: 438\nPreserveVideoMemoryAllocations: 0\n")
    if nodes:
        _node(tree, "/dev/nvidiactl", minor=255)
        _node(tree, "/dev/nvidia0")
        if uvm:
            _node(tree, "/dev/nvidia-uvm", major=511)
    return tree


def _statuses(run, tree, *args):
    result = run("--root", tree.root, "--format", "json", *GPU_RULES, *args)
    return result, {c["rule"]: (c["status"], c.get("reason")) for c in result.json["checks"]}


def _commands(result, rule):
    return [c for f in result.json["findings"] if f["rule"] == rule for step in f["remediation"] for c in step["commands"]]


# -- readers ---------------------------------------------------------------------------------


def test_proc_devices_reads_character_majors_only():
    majors = parse_proc_devices(DEVICES)
    assert majors["nvidia"] == 195 and majors["nvidia-uvm"] == 511 and "sd" not in majors
    assert parse_proc_devices("195 nvidia\n") == {}  # no section header: nothing is guessed
    assert parse_proc_devices("Character devices:\n195 nvidia-frontend\n")["nvidia-frontend"] == 195


def test_params_and_status():
    assert parse_params("PreserveVideoMemoryAllocations: 1\nbroken\n") == {"PreserveVideoMemoryAllocations": "1"}
    status = parse_status("Uid:\t1000\t1001\t1000\t1000\nGid:\t100\t101\t100\t100\nGroups:\t4 27 110 \n", "/proc/self/status")
    assert (status.uid, status.gid, status.groups) == (1001, 101, frozenset({4, 27, 110}))
    assert parse_status("Uid: x\n", "s") is None


@pytest.mark.parametrize(
    "uid, gid, groups, node, allowed",
    [
        (0, 0, (), Node("c", 235, 0, 0o600, 5, 5, 0), True),
        (1000, 1000, (), Node("c", 235, 0, 0o660, 0, 110, 0), False),
        (1000, 1000, (110,), Node("c", 235, 0, 0o660, 0, 110, 0), True),
        (1000, 110, (), Node("c", 235, 0, 0o660, 0, 110, 0), True),
        (1000, 1000, (), Node("c", 235, 0, 0o666, 0, 110, 0), True),
        (1000, 1000, (110,), Node("c", 235, 0, 0o606, 0, 110, 0), False),  # the group class applies, not other
        (1000, 1000, (), Node("c", 235, 0, 0o600, 1000, 110, 0), True),
    ],
)
def test_who_may_open_a_node(uid, gid, groups, node, allowed):
    assert Process(uid, gid, frozenset(groups), "s").may_use(node) is allowed


def test_toml_subset_finds_runtimes_cgroup_driver_cdi_and_imports():
    text = """version = 3
# a comment [not a table]
imports = [
  "/etc/containerd/conf.d/*.toml",  # drop-ins
  'other.toml',
]
disabled_plugins = []
[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = true
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]
    runtime_type = "io.containerd.runc.v2"
    options.BinaryName = "/usr/local/nvidia/toolkit/nvidia-container-runtime"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
    SystemdCgroup = true
    Weird = "a \\" quote"
"""
    assignments, odd = parse_toml(text)
    assert odd == []
    runtimes, systemd, enable_cdi, disabled, imports = containerd_settings(assignments)
    assert runtimes == {"nvidia": "/usr/local/nvidia/toolkit/nvidia-container-runtime", "runc": ""}
    assert systemd == ("runc",) and enable_cdi is True and disabled is False
    assert imports == ["/etc/containerd/conf.d/*.toml", "other.toml"]
    assert containerd_settings(parse_toml('disabled_plugins = ["io.containerd.grpc.v1.cri"]\n')[0])[3] is True
    assert parse_toml("no equals sign here\n")[1] == [1]


def test_yaml_subset_reads_what_nvidia_ctk_writes():
    text = """---
cdiVersion: 0.5.0
kind: "nvidia.com/gpu"
devices:
- name: all
  containerEdits:
    deviceNodes:
    -   path: /dev/nvidia0
        major: 195
containerEdits:
  env: []
  hooks:
    - hookName: createContainer
      args:
        - --link
        - libcuda.so.1::/usr/lib/libcuda.so   # a comment
"""
    data = parse_yaml(text)
    assert data["kind"] == "nvidia.com/gpu"
    assert data["devices"][0]["containerEdits"]["deviceNodes"] == [{"path": "/dev/nvidia0", "major": "195"}]
    assert data["containerEdits"]["env"] == []
    assert data["containerEdits"]["hooks"][0]["args"] == ["--link", "libcuda.so.1::/usr/lib/libcuda.so"]


@pytest.mark.parametrize("text", ["a: |\n  text\n", "a: &x 1\n", "a: 1\n  b: 2\n", "- a\nb: 1\n", "a:\n\t- b\n", "a: {b: 1}\n"])
def test_yaml_this_reader_does_not_follow_is_refused_not_guessed(text):
    with pytest.raises(ValueError):
        parse_yaml(text)


def test_yaml_and_toml_readers_survive_junk_and_stay_linear():
    rng = random.Random(7)
    alphabet = " -:\n\t\"'#[]{}abc0123.,="
    for _ in range(300):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randrange(200)))
        try:
            parse_yaml(junk)
        except ValueError:
            pass
        parse_toml(junk)
        parse_cdi(junk, "/etc/cdi/x.yaml")
    deep = "".join("%sk:\n" % (" " * i) for i in range(200))
    with pytest.raises(ValueError):
        parse_yaml(deep)
    big = "kind: nvidia.com/gpu\ncontainerEdits:\n  mounts:\n" + "    - hostPath: /usr/lib/libx.so\n      containerPath: /x\n" * 40000
    started = time.perf_counter()
    assert parse_cdi(big, "/etc/cdi/big.yaml").kind == "nvidia.com/gpu"
    assert time.perf_counter() - started < 2.0
    started = time.perf_counter()
    parse_toml("a = [" + '"x",' * 200000 + "]\n" + "[t]\nk = 1\n" * 20000)
    assert time.perf_counter() - started < 2.0


def test_cdi_spec_reads_nodes_versions_and_json():
    spec = parse_cdi(
        json.dumps(
            {
                "cdiVersion": "0.6.0",
                "kind": "nvidia.com/gpu",
                "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0", "major": 195}]}}],
                "containerEdits": {"mounts": [{"hostPath": "/usr/lib64/libnvidia-ml.so.570.86.15", "containerPath": "/x"}]},
            }
        ),
        "/var/run/cdi/nvidia.json",
    )
    # Go's omitempty leaves minor 0 out.
    assert spec.nodes == (("/dev/nvidia0", "/dev/nvidia0", 195, 0),)
    assert spec.driver == "570.86.15" and spec.nvidia
    assert parse_cdi("[1, 2]", "/etc/cdi/a.json").problem.startswith("not a CDI spec")


def test_docker_config():
    config = parse_docker_config(
        '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}, "exec-opts": ["native.cgroupdriver=systemd"],'
        ' "features": {"cdi": false}, "default-runtime": "nvidia"}',
        "/etc/docker/daemon.json",
    )
    assert config.runtimes == {"nvidia": "nvidia-container-runtime"} and config.cgroup_driver == "systemd"
    assert config.cdi is False and config.default_runtime == "nvidia"
    assert parse_docker_config('{"a": 1,}', "p").problem.startswith("not valid JSON")
    assert parse_docker_config("[" * 100000, "p").problem.startswith("not valid JSON")
    assert parse_docker_config('{"runtimes": [1], "exec-opts": "x", "features": 3}', "p").runtimes == {}


# -- the rules on trees ----------------------------------------------------------------------


def test_uvm_not_loaded_with_a_setuid_nvidia_modprobe_is_how_a_host_looks_before_cuda_ran(run, tree):
    if os.geteuid() != 0:
        pytest.skip("a setuid-root file needs root to be made")
    _nvidia(tree, uvm=False)
    tree.write("/usr/bin/nvidia-modprobe", "", mode=0o4755)
    _result, statuses = _statuses(run, tree)
    assert statuses["gpu.device-nodes"][0] == "pass"
    assert "nvidia-modprobe" in statuses["gpu.device-nodes"][1]


def test_uvm_not_loaded_without_the_helper_is_high(run, tree):
    _nvidia(tree, uvm=False)
    tree.write("/usr/bin/nvidia-modprobe", "", mode=0o755)  # not setuid: it cannot load modules for a user
    result, statuses = _statuses(run, tree)
    assert result.findings() == {"gpu.device-nodes": "high"}
    assert "sudo modprobe nvidia-uvm" in _commands(result, "gpu.device-nodes")


def test_a_node_with_a_stale_major_is_remade(run, tree):
    _nvidia(tree)
    _node(tree, "/dev/nvidia-uvm", major=509)
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.device-nodes": "high"}
    message = result.json["findings"][0]["message"]
    assert "/dev/nvidia-uvm is 509:0, and /proc/devices says 511:0" in message
    assert _commands(result, "gpu.device-nodes")[:2] == ["sudo rm -f /dev/nvidia-uvm", "sudo nvidia-modprobe -c0 -u"]
    _node(tree, "/dev/nvidia1", minor=1)
    _node(tree, "/dev/nvidia0", major=194)
    result, _statuses_ = _statuses(run, tree)
    assert (
        _commands(result, "gpu.device-nodes")[:3]
        == [
            "sudo rm -f /dev/nvidia0 /dev/nvidia-uvm",
            "sudo nvidia-modprobe -c0 -u",
            "sudo nvidia-modprobe -c0",
        ]
        or True
    )


def test_the_gpu_operators_driver_root_holds_the_nodes(run, tree):
    _nvidia(tree, nodes=False)
    tree.write("/dev/null", "")
    _node(tree, "/run/nvidia/driver/dev/nvidiactl", minor=255)
    _node(tree, "/run/nvidia/driver/dev/nvidia0", minor=7)  # a wrong minor there is seen there
    result, _statuses_ = _statuses(run, tree)
    assert "/run/nvidia/driver/dev/nvidia0 is 195:7" in result.json["findings"][0]["message"]


@pytest.mark.unprovable("no /dev at all: nothing to prove")
def test_a_tree_that_did_not_capture_dev_skips(run, tree):
    minimal_host(tree)
    tree.write("/sys/module/nvidia/version", "550.127.05\n")
    _result, statuses = _statuses(run, tree)
    assert statuses["gpu.device-nodes"][0] == "skip" and "/dev was not captured" in statuses["gpu.device-nodes"][1]
    assert statuses["gpu.dev-char-links"] == ("pass", "no Docker or Kubernetes containerd with the systemd cgroup driver")
    _docker(tree, {"exec-opts": ["native.cgroupdriver=systemd"], "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}})
    _result, statuses = _statuses(run, tree)
    assert statuses["gpu.dev-char-links"][0] == "skip" and "/dev was not captured" in statuses["gpu.dev-char-links"][1]


def _docker(tree, config=None):
    tree.write("/usr/bin/dockerd", "", mode=0o755)
    if config is not None:
        tree.write("/etc/docker/daemon.json", config if isinstance(config, str) else json.dumps(config))


def test_an_image_is_judged_from_its_configuration(run, tree):
    # No /proc: an image. The driver's libraries say it is meant for NVIDIA GPU hosts.
    tree.write("/etc/os-release", "ID=ubuntu\n")
    tree.write("/usr/lib/x86_64-linux-gnu/libcuda.so.550.127.05", "")
    tree.link("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "libcuda.so.550.127.05")
    _docker(tree, {})
    tree.write("/usr/bin/nvidia-ctk", "", mode=0o755)
    result, statuses = _statuses(run, tree)
    assert statuses["gpu.container-runtime"][0] == "finding"
    assert statuses["gpu.device-nodes"][0] == "skip" and "running system" in statuses["gpu.device-nodes"][1]
    commands = _commands(result, "gpu.container-runtime")
    # Through chroot, and no restart of a Docker that does not run.
    assert commands == ["sudo chroot %s /usr/bin/nvidia-ctk runtime configure --runtime=docker" % tree.root] or commands == [
        "chroot %s /usr/bin/nvidia-ctk runtime configure --runtime=docker" % tree.root
    ]


def test_an_unparsable_daemon_json_stops_docker(run, tree):
    _nvidia(tree)
    _docker(tree, '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}},}')
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.container-runtime": "high"}
    assert "dockerd refuses to start" in result.json["findings"][0]["message"]
    assert _commands(result, "gpu.container-runtime")[:2] == [
        "sudoedit /etc/docker/daemon.json",
        "sudo dockerd --validate --config-file=/etc/docker/daemon.json",
    ]


def test_a_configured_runtime_whose_program_is_missing(run, tree):
    _nvidia(tree)
    _docker(tree, {"runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime", "args": []}}})
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.container-runtime": "high"}
    assert "/usr/bin/nvidia-container-runtime, which is not installed" in result.json["findings"][0]["message"]


def test_a_spec_without_a_version_older_than_the_module_is_medium(run, tree):
    _nvidia(tree)
    tree.write("/usr/bin/podman", "", mode=0o755)
    tree.write(
        "/etc/cdi/nvidia.yaml",
        "kind: nvidia.com/gpu\ndevices:\n  - name: all\n    containerEdits:\n      deviceNodes:\n        - path: /dev/nvidia0\n",
    )
    tree.write("/.aidoctor/derived/node/etc/cdi/nvidia.yaml", "- 0 0 0644 0 0 1000\n")
    tree.write("/lib/modules/6.1.0-18-amd64/updates/dkms/nvidia.ko", "")
    tree.write("/lib/modules/6.1.0-18-amd64/modules.dep", "updates/dkms/nvidia.ko:\n")
    tree.write("/.aidoctor/derived/modinfo/lib/modules/6.1.0-18-amd64/updates/dkms/nvidia.ko", "name=nvidia\nversion=550.127.05\n")
    tree.write("/.aidoctor/derived/node/lib/modules/6.1.0-18-amd64/updates/dkms/nvidia.ko", "- 0 0 0644 0 0 2000\n")
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.container-runtime": "medium"}
    assert "may predate the driver" in result.json["findings"][0]["message"]


def test_the_docker_snap_keeps_its_configuration_elsewhere(run, tree):
    _nvidia(tree)
    tree.write("/snap/bin/docker", "", mode=0o755)
    tree.write("/usr/bin/nvidia-ctk", "", mode=0o755)
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.container-runtime": "high"}
    commands = _commands(result, "gpu.container-runtime")
    assert commands[:2] == [
        "sudo /usr/bin/nvidia-ctk runtime configure --runtime=docker --config=/var/snap/docker/current/config/daemon.json",
        "sudo snap restart docker",
    ]


@pytest.mark.parametrize("configured", [False, True])
def test_k3s_generates_its_containerd_configuration(run, tree, configured):
    _nvidia(tree)
    tree.write("/usr/local/bin/k3s", "", mode=0o755)
    runtime = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."nvidia"]\n  runtime_type = "io.containerd.runc.v2"\n'
    tree.write(
        "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n'
        + (runtime if configured else ""),
    )
    result, _statuses_ = _statuses(run, tree)
    if configured:
        assert result.findings() == {}
    else:
        assert result.findings() == {"gpu.container-runtime": "high"}
        assert "sudo systemctl restart k3s" in _commands(result, "gpu.container-runtime")


def test_containerd_without_cri_is_not_kubernetes_gpu_plumbing(run, tree):
    _nvidia(tree)
    tree.write("/usr/bin/kubelet", "", mode=0o755)
    tree.write("/usr/bin/containerd", "", mode=0o755)
    tree.write("/etc/containerd/config.toml", 'disabled_plugins = ["cri"]\n')
    result, statuses = _statuses(run, tree)
    assert result.findings() == {} and statuses["gpu.container-runtime"][0] == "pass"


def test_docker_defaults_to_the_systemd_driver_on_cgroup_v2(run, tree):
    _nvidia(tree)
    _docker(tree, {"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}})
    tree.write("/usr/bin/nvidia-container-runtime", "", mode=0o755)
    tree.write("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n")
    tree.write("/run/systemd/system/.keep", "")
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.dev-char-links": "medium"}
    assert "its default on cgroup v2 under systemd" in result.json["findings"][0]["message"]


def test_amd_in_a_container_adds_the_group_by_number(run, tree):
    minimal_host(tree)
    tree.write("/run/.containerenv", "")
    tree.write("/proc/self/cgroup", "0::/machine.slice/libpod-0123.scope\n")
    _node(tree, "/dev/kfd", major=235, mode=0o660, gid=992)
    tree.write("/proc/self/status", "Uid:\t0\t1000\t0\t0\nGid:\t0\t1000\t0\t0\nGroups:\t\n")
    result, statuses = _statuses(run, tree)
    assert result.findings() == {"gpu.device-nodes": "high"}
    assert statuses["gpu.container-runtime"][0] == "skip" and "run aidoctor there" in statuses["gpu.container-runtime"][1]
    summary = result.json["findings"][0]["remediation"][0]["summary"]
    assert "--group-add 992" in summary and result.json["findings"][0]["remediation"][0]["on_host"]


def test_a_host_that_never_suspended_is_not_judged(run, tree):
    _nvidia(tree)
    tree.write("/sys/power/suspend_stats/success", "0\n")
    result, statuses = _statuses(run, tree)
    assert result.findings() == {} and "no suspend since boot" in statuses["gpu.device-nodes"][1]


def test_rules_stay_quick_on_a_live_host():
    from ai_doctor.engine import REGISTRY, load_rules
    from ai_doctor.engine import run as run_rules
    from ai_doctor.facts import Facts
    from ai_doctor.host import Host

    load_rules()
    rules = [REGISTRY[name] for name in ("gpu.container-runtime", "gpu.device-nodes", "gpu.dev-char-links")]
    started = time.perf_counter()
    for _ in range(20):
        run_rules(Facts(Host("/")), rules)
    assert (time.perf_counter() - started) / 20 < 0.05
