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


def _boot_driver(tree, release="6.1.0-18-amd64"):
    """The nvidia module of the kernel that boots next, so --next-boot loads the driver again."""
    tree.write("/lib/modules/%s/updates/dkms/nvidia.ko" % release, "")
    tree.write("/lib/modules/%s/modules.dep" % release, "updates/dkms/nvidia.ko:\n")
    tree.write("/.aidoctor/derived/modinfo/lib/modules/%s/updates/dkms/nvidia.ko" % release, "name=nvidia\nversion=550.127.05\n")


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
    _boot_driver(tree)  # the fix proof (conftest) then boots the driver again, without nvidia_uvm unless the rule loads it
    tree.write("/usr/bin/nvidia-modprobe", "", mode=0o755)  # not setuid: it cannot load modules for a user
    result, statuses = _statuses(run, tree)
    assert result.findings() == {"gpu.device-nodes": "high"}
    message = result.json["findings"][0]["message"]
    assert "for every user but root (/usr/bin/nvidia-modprobe, not setuid, serves root only)" in message
    assert "Loading it is not enough: /dev/nvidia-uvm must be made too" in message
    # nvidia-modprobe -u loads nvidia-uvm and makes both of its nodes; a udev rule does it at every boot.
    assert _commands(result, "gpu.device-nodes") == [
        "sudo /usr/bin/nvidia-modprobe -u -c=0",
        "ls -l /dev/nvidia-uvm /dev/nvidia-uvm-tools",
        "sudo mkdir -p /etc/udev/rules.d",
        "printf '%s\\n' '# Load nvidia-uvm and make NVIDIA'\"'\"'s device nodes whenever a GPU binds to the nvidia driver "
        '(devtmpfs does not make them)\' \'ACTION=="add|bind", SUBSYSTEM=="pci", ATTR{vendor}=="0x10de", DRIVER=="nvidia", '
        'RUN+="/usr/bin/nvidia-modprobe -u -c=0"\' | sudo tee /etc/udev/rules.d/71-nvidia-device-nodes.rules >/dev/null',
        "sudo udevadm control --reload",
    ]


def _uvm_node_missing(tree):
    """nvidia_uvm loaded, /dev/nvidiactl and /dev/nvidia0 made, /dev/nvidia-uvm not, and a
    (not setuid) nvidia-modprobe installed."""
    _nvidia(tree, nodes=False)
    _boot_driver(tree)
    tree.write("/dev/null", "")
    _node(tree, "/dev/nvidiactl", minor=255)
    _node(tree, "/dev/nvidia0")
    tree.write("/usr/bin/nvidia-modprobe", "", mode=0o755)


def test_a_loaded_uvm_without_its_node_is_high_and_the_udev_rule_clears_it_at_the_next_boot(run, tree, tmp_path):
    _uvm_node_missing(tree)
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.device-nodes": "high"}
    message = result.json["findings"][0]["message"]
    assert message.startswith("/dev/nvidia-uvm, /dev/nvidia-uvm-tools are not there though nvidia_uvm is loaded")
    assert {"path": "/proc/devices", "value": "511 nvidia-uvm"}.items() <= result.json["findings"][0]["evidence"][-1].items()
    assert _commands(result, "gpu.device-nodes")[0] == "sudo /usr/bin/nvidia-modprobe -u -c=0"
    # Written to a copy, the rule makes the nodes at the next boot: the finding is gone there.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tree.root, copy, symlinks=True)
    run("fix", "--root", copy, "--apply", "--yes", "--only", "gpu.device-nodes")
    assert "/usr/bin/nvidia-modprobe -u -c=0" in (copy / "etc/udev/rules.d/71-nvidia-device-nodes.rules").read_text()
    booted = run("--root", copy, "--format", "json", "--next-boot", *GPU_RULES)
    assert booted.findings() == {}
    # Now (not at boot) the rule has not run yet: the nodes are still missing, and it says they come back.
    result = run("--root", copy, "--format", "json", *GPU_RULES)
    assert "71-nvidia-device-nodes.rules:2 makes them when the driver binds" in result.json["findings"][0]["message"]
    assert _commands(result, "gpu.device-nodes") == ["sudo /usr/bin/nvidia-modprobe -u -c=0", "ls -l /dev/nvidia-uvm /dev/nvidia-uvm-tools"]


def test_a_missing_gpu_node_is_found_from_the_minors_the_driver_lists(run, tree):
    _nvidia(tree)
    tree.write(
        "/proc/driver/nvidia/params", "DeviceFileMode: 432\nDeviceFileUID: 0\nDeviceFileGID: 44\nPreserveVideoMemoryAllocations: 0\n"
    )
    for bus, minor in (("0000:17:00.0", 0), ("0000:65:00.0", 1)):
        tree.write("/proc/driver/nvidia/gpus/%s/information" % bus, "Model: \t\t NVIDIA L40S\nDevice Minor: \t %d\n" % minor)
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.device-nodes": "high"}
    message = result.json["findings"][0]["message"]
    assert message.startswith("/dev/nvidia1 is not there though the nvidia driver is loaded")
    assert "no CUDA-capable device is detected" in message
    # No nvidia-modprobe: mknod with the driver's mode, owner and group; nvidia-modprobe -c=1 where it is installed.
    assert _commands(result, "gpu.device-nodes")[:2] == ["sudo mknod -m 660 /dev/nvidia1 c 195 1", "sudo chown 0:44 /dev/nvidia1"]
    tree.write("/usr/bin/nvidia-modprobe", "", mode=0o755)
    result, _statuses_ = _statuses(run, tree)
    assert _commands(result, "gpu.device-nodes")[0] == "sudo /usr/bin/nvidia-modprobe -c=1"


def test_nvidia_modprobe_arguments_as_nvgetopt_reads_them():
    from ai_doctor.facts.gpudevices import modprobe_flags

    assert modprobe_flags(["-c0", "-u"]) == (True, [0], False)
    assert modprobe_flags(["-c=0", "-c", "1", "--create-nvidia-device-file=255", "-m"]) == (False, [0, 1, 255], True)
    assert modprobe_flags(["--unified-memory"]) == (True, [], False)
    assert modprobe_flags(["-c", "x", "-cfoo"]) == (False, [], False)


@pytest.mark.parametrize(
    "rule, made",
    [
        ('ACTION=="add", DEVPATH=="/module/nvidia_uvm", SUBSYSTEM=="module", RUN+="/sbin/create-uvm-dev-node"\n', True),
        (
            'ACTION=="add|bind", ATTR{vendor}=="0x10de", ATTR{class}=="0x03[0-9]*", \\\n    DRIVER=="nvidia", '
            'TEST!="/dev/nvidia-uvm", \\\n    RUN+="/usr/bin/nvidia-modprobe", \\\n    RUN+="/usr/bin/nvidia-modprobe -c0 -u"\n',
            True,
        ),
        # -u without a minor only loads the module; a rule whose program is missing makes nothing.
        ('ACTION=="add", DRIVER=="nvidia", RUN+="/usr/bin/nvidia-modprobe -u"\n', False),
        ('ACTION=="add", DRIVER=="nvidia", RUN+="/opt/gone/nvidia-modprobe -c0 -u"\n', False),
        ('# ACTION=="add", DRIVER=="nvidia", RUN+="/usr/bin/nvidia-modprobe -c0 -u"\n', False),
    ],
)
def test_udev_rules_that_make_the_uvm_nodes(run, tree, rule, made):
    _uvm_node_missing(tree)
    tree.write("/sbin/create-uvm-dev-node", "#!/bin/sh\n", mode=0o755)
    tree.write("/usr/lib/udev/rules.d/60-nvidia.rules", rule)
    booted = run("--root", tree.root, "--format", "json", "--next-boot", *GPU_RULES)
    assert booted.findings() == ({} if made else {"gpu.device-nodes": "high"})


def test_a_node_with_a_stale_major_is_remade(run, tree):
    _nvidia(tree)
    _node(tree, "/dev/nvidia-uvm", major=509)
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.device-nodes": "high"}
    message = result.json["findings"][0]["message"]
    assert "/dev/nvidia-uvm is 509:0, and /proc/devices says 511:0" in message
    # No nvidia-modprobe here: removed and made again with the registered numbers.
    assert _commands(result, "gpu.device-nodes")[:2] == ["sudo rm -f /dev/nvidia-uvm", "sudo mknod -m 666 /dev/nvidia-uvm c 511 0"]
    _node(tree, "/dev/nvidia0", major=194)
    tree.write("/usr/bin/nvidia-modprobe", "", mode=0o755)
    result, _statuses_ = _statuses(run, tree)
    # With -u, nvidia-modprobe's -c minors are nvidia-uvm's: /dev/nvidia0 needs a run of its own.
    assert _commands(result, "gpu.device-nodes")[:2] == ["sudo /usr/bin/nvidia-modprobe -c=0", "sudo /usr/bin/nvidia-modprobe -u -c=0"]


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


def _suspending(tree, units=("nvidia-suspend.service", "nvidia-resume.service"), preserve="0"):
    _nvidia(tree)
    _boot_driver(tree)
    tree.write("/proc/driver/nvidia/params", "DeviceFileMode: 438\nPreserveVideoMemoryAllocations: %s\n" % preserve)
    tree.write("/sys/power/suspend_stats/success", "2\n")
    tree.link("/etc/systemd/system/getty.target.wants/getty@tty1.service", "/lib/systemd/system/getty@.service")
    for unit in units:
        tree.write("/usr/lib/systemd/system/" + unit, "[Unit]\nDescription=NVIDIA system %s actions\n" % unit.split(".")[0])


def _enable(root, *units):
    for unit in units:
        service = "systemd-hibernate.service" if "hibernate" in unit else "systemd-suspend.service"
        folder = root / ("etc/systemd/system/%s.requires" % service)
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink("/usr/lib/systemd/system/" + unit, folder / unit)


@pytest.mark.unprovable("enabling the units is systemctl's, which --apply never runs in a tree: the test boots it by hand")
def test_the_suspend_fix_enables_only_the_units_there_and_runs_nothing_conditional(run, tree, tmp_path):
    import shutil

    _suspending(tree)
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.device-nodes": "medium"}
    commands = _commands(result, "gpu.device-nodes")
    assert "sudo systemctl enable nvidia-suspend.service nvidia-resume.service" in commands
    assert not any("hibernate.service" in c or "rmmod" in c or "modprobe nvidia" in c for c in commands), commands
    steps = result.json["findings"][0]["remediation"]
    assert "no nvidia-hibernate.service is installed" in steps[0]["summary"]
    reload = next(step for step in steps if "reload nvidia_uvm" in step["summary"])
    assert reload["commands"] == [] and "`rmmod nvidia_uvm`" in reload["summary"]
    copy = tmp_path / "copy"
    shutil.copytree(tree.root, copy, symlinks=True)
    run("fix", "--root", copy, "--apply", "--yes", "--only", "gpu.device-nodes")
    # The option alone (systemctl enable is not run in a tree) is not the fix: not cleared at the next boot.
    booted = run("--root", copy, "--format", "json", "--next-boot", *GPU_RULES)
    assert booted.findings() == {"gpu.device-nodes": "medium"}
    assert "nvidia-suspend.service and nvidia-resume.service are not enabled" in booted.json["findings"][0]["message"]
    _enable(copy, "nvidia-suspend.service", "nvidia-resume.service")
    assert run("--root", copy, "--format", "json", "--next-boot", *GPU_RULES).findings() == {}


def test_suspend_units_that_are_not_installed_are_named_with_their_package(run, tree):
    _suspending(tree, units=())
    result, _statuses_ = _statuses(run, tree)
    steps = result.json["findings"][0]["remediation"]
    assert "Debian: the nvidia-suspend-common package" in steps[0]["summary"] and steps[0]["commands"] == []
    # What the script runs is the other way only: masking sleep.
    assert _commands(result, "gpu.device-nodes") == [
        "sudo systemctl mask %s" % t for t in ("sleep.target", "suspend.target", "hibernate.target", "hybrid-sleep.target")
    ]


@pytest.mark.parametrize("enabled", [False, True])
def test_preserving_without_the_units_enabled_makes_suspend_fail(run, tree, enabled):
    _suspending(tree, units=("nvidia-suspend.service", "nvidia-resume.service", "nvidia-hibernate.service"), preserve="1")
    tree.write("/etc/modprobe.d/nvidia-power-management.conf", "options nvidia NVreg_PreserveVideoMemoryAllocations=1\n")
    if enabled:
        _enable(tree.root, "nvidia-suspend.service", "nvidia-resume.service", "nvidia-hibernate.service")
    result, statuses = _statuses(run, tree)
    if enabled:
        assert result.findings() == {} and statuses["gpu.device-nodes"][0] == "pass"
        return
    assert result.findings() == {"gpu.device-nodes": "medium"}
    assert "refuses to suspend" in result.json["findings"][0]["message"]
    # The option is in force already: only the units, and no reboot.
    assert _commands(result, "gpu.device-nodes")[0] == (
        "sudo systemctl enable nvidia-suspend.service nvidia-resume.service nvidia-hibernate.service"
    )
    assert not any(step["summary"].startswith("Then reboot") for step in result.json["findings"][0]["remediation"])


def _spec_host(tree, spec_version, libraries=("550.127.05",)):
    """Podman with /etc/cdi/nvidia.yaml made for ``spec_version``; the driver libraries installed."""
    _nvidia(tree)
    tree.write("/usr/bin/podman", "", mode=0o755)
    tree.write("/usr/bin/nvidia-ctk", "", mode=0o755)
    for version in libraries:
        for name in ("libcuda.so.", "libnvidia-ml.so."):
            tree.write("/usr/lib/x86_64-linux-gnu/%s%s" % (name, version), "")
    for name in ("libcuda.so.", "libnvidia-ml.so."):
        tree.link("/usr/lib/x86_64-linux-gnu/%s1" % name, name + libraries[-1])
    tree.write(
        "/etc/cdi/nvidia.yaml",
        "kind: nvidia.com/gpu\ndevices:\n  - name: all\n    containerEdits:\n      deviceNodes:\n        - path: /dev/nvidia0\n"
        "containerEdits:\n  mounts:\n"
        + "".join(
            "    - hostPath: /usr/lib/x86_64-linux-gnu/%s%s\n      containerPath: /usr/lib/x86_64-linux-gnu/%s%s\n"
            % (name, spec_version, name, spec_version)
            for name in ("libcuda.so.", "libnvidia-ml.so.")
        ),
    )


def test_a_spec_for_another_driver_says_which_of_its_libraries_are_gone(run, tree):
    _spec_host(tree, "535.183.01")
    result, _statuses_ = _statuses(run, tree)
    assert result.findings() == {"gpu.container-runtime": "high"}
    finding = result.json["findings"][0]
    assert "was made for driver 535.183.01, and the driver libraries installed here are 550.127.05" in finding["message"]
    assert "name files that are gone: /usr/lib/x86_64-linux-gnu/libcuda.so.535.183.01, " in finding["message"]
    assert {"path": "/usr/lib/x86_64-linux-gnu/libcuda.so.535.183.01", "value": "not present"}.items() <= finding["evidence"][2].items()


def test_a_spec_whose_old_libraries_are_still_there_is_not_said_to_name_missing_files(run, tree):
    _spec_host(tree, "535.183.01", libraries=("535.183.01", "550.127.05"))
    result, _statuses_ = _statuses(run, tree)
    message = result.json["findings"][0]["message"]
    assert "gone" not in message and "name driver 535.183.01's libraries, which a driver upgrade removes" in message


@pytest.mark.parametrize("spec", ["560.35.03", "550.127.05"])
def test_a_pending_reboot_compares_the_spec_with_the_libraries_installed(run, tree, spec):
    # The libraries were upgraded to 560.35.03; the 550.127.05 module still runs until a reboot.
    _spec_host(tree, spec, libraries=("560.35.03",))
    result, _statuses_ = _statuses(run, tree, "--only", "gpu.container-runtime")
    if spec == "560.35.03":
        assert result.findings() == {}  # what nvidia-ctk cdi generate gives: right after the reboot
        return
    assert result.findings() == {"gpu.container-runtime": "high"}
    assert (
        "made for driver 550.127.05, and the driver libraries installed here are 560.35.03 (the loaded module is still "
        "550.127.05: a reboot is pending)" in result.json["findings"][0]["message"]
    )
