"""GPU driver checks on trees with real (test-built) kernel modules and libraries."""

from __future__ import annotations

import os

import pytest
from elfbuild import ikconfig_object, module, need_compiler, shared_object

from ai_doctor import elf, snapshot
from ai_doctor.facts import Facts
from ai_doctor.host import Host

from conftest import minimal_host

OLD, NEW = "6.8.0-45-generic", "6.8.0-49-generic"
DRIVER = "550.127.05"
FLAGS = "SMP preempt mod_unload modversions "


def _nvidia(tree, release, version=DRIVER, built_for=None, folder="updates/dkms", flags=FLAGS, compress=None):
    name = "nvidia.ko" + ("." + compress if compress else "")
    path = tree.root / "lib/modules" / release / folder / name
    module(
        path,
        [("version", version), ("license", "NVIDIA"), ("name", "nvidia"), ("vermagic", "%s %s" % (built_for or release, flags))],
        compress,
    )
    return "%s/%s" % (folder, name)


def _kernel(tree, release, modules=()):
    """A kernel's modules folder with one in-tree module (the kernel's own vermagic) and
    modules.dep naming ``modules`` (relative paths)."""
    own = "kernel/block/kyber-iosched.ko"
    module(tree.root / "lib/modules" / release / own, [("name", "kyber_iosched"), ("vermagic", "%s %s" % (release, FLAGS))])
    tree.write("/lib/modules/%s/modules.dep" % release, "".join("%s:\n" % m for m in (own,) + tuple(modules)))
    tree.write("/boot/vmlinuz-" + release, "")


def _userspace(tree, version=DRIVER):
    libs = tree.root / "usr/lib/x86_64-linux-gnu"
    shared_object(libs / ("libnvidia-ml.so." + version), "libnvidia-ml.so.1")
    tree.link("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "libnvidia-ml.so." + version)
    (tree.root / "var/lib/dkms/nvidia" / version).mkdir(parents=True)
    tree.write("/usr/bin/nvidia-smi", "", mode=0o755)


def _gpu_host(tree, loaded=DRIVER):
    minimal_host(tree, release=OLD)
    if loaded:
        tree.write("/sys/module/nvidia/version", loaded + "\n")
        tree.write("/proc/modules", "nvidia 54063104 0 - Live 0x0000000000000000 (POE)\n")
    else:
        tree.write("/proc/modules", "")


@pytest.mark.parametrize("compress", [None, "xz", "gz", "zst"])
def test_modinfo_of_plain_and_compressed_modules(tmp_path, compress):
    path = module(tmp_path / ("m.ko" + ("." + compress if compress else "")), [("version", "1.2"), ("vermagic", OLD + " SMP")], compress)
    with open(path, "rb") as stream:
        assert elf.parse_modinfo(elf.modinfo(stream)) == {"version": ["1.2"], "vermagic": [OLD + " SMP"]}


def test_odd_module_files_are_named_not_fatal(tmp_path):
    import lzma

    need_compiler()
    cases = {
        "empty.ko": b"",
        "text.ko": b"not an elf at all\n",
        "cut.ko.xz": lzma.compress(b"\x7fELF" + bytes(4096))[:40],
        "bomb.ko.gz": __import__("gzip").compress(bytes(8 << 20)),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with open(tmp_path / name, "rb") as stream, pytest.raises(ValueError):
            elf.modinfo(stream)
    shared = shared_object(tmp_path / "libx.so.1", "libx.so.1")
    with open(shared, "rb") as stream, pytest.raises(ValueError, match="no .modinfo section"):
        elf.modinfo(stream)


def test_ikconfig_between_markers(tmp_path):
    path = ikconfig_object(tmp_path / "configs.ko", "CONFIG_HUGETLBFS=y\n# CONFIG_NUMA_BALANCING is not set\n")
    with open(path, "rb") as stream:
        assert elf.ikconfig(stream).startswith("CONFIG_HUGETLBFS=y\n")


def test_failed_dkms_build_after_a_kernel_update(tree, run):
    _gpu_host(tree)
    _userspace(tree)
    _kernel(tree, OLD, [_nvidia(tree, OLD)])
    _kernel(tree, NEW)  # installed by the update; DKMS did not build for it
    result = run("--root", tree, "--format", "json")
    found = [f for f in result.json["findings"] if f["rule"] == "gpu.driver-missing-for-kernel"]
    assert [f["severity"] for f in found] == ["high"]  # the running kernel has it; the next boot does not
    assert "kernel %s, which the next boot starts" % NEW in found[0]["message"]
    commands = [c for step in found[0]["remediation"] for c in step["commands"]]
    assert "sudo dkms install nvidia/%s -k %s" % (DRIVER, NEW) in commands
    # No package lists (removed after the image was built): apt must read them first.
    assert commands[1:3] == ["sudo apt-get update", "sudo apt-get install -y linux-headers-%s" % NEW]
    # DKMS never tried this kernel: no make.log to point at.
    assert not any("make.log" in c for c in commands)
    assert "has not built nvidia/%s for %s" % (DRIVER, NEW) in found[0]["remediation"][0]["summary"]
    assert result.statuses()["gpu.driver-library-mismatch"] == "pass"
    # A failed build leaves build/make.log; apt with its lists installs at once.
    tree.write("/var/lib/dkms/nvidia/%s/build/make.log" % DRIVER, "DKMS make.log for nvidia-%s for kernel %s (x86_64)\n" % (DRIVER, NEW))
    tree.write("/var/lib/apt/lists/archive.ubuntu.com_ubuntu_dists_noble_main_binary-amd64_Packages.lz4", "")
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "gpu.driver-missing-for-kernel"]
    commands = [c for step in found[0]["remediation"] for c in step["commands"]]
    assert commands == [
        "dkms status nvidia",
        "tail -n 30 /var/lib/dkms/nvidia/%s/build/make.log" % DRIVER,
        "sudo apt-get install -y linux-headers-%s" % NEW,
        "sudo dkms install nvidia/%s -k %s" % (DRIVER, NEW),
    ]


def test_image_whose_default_kernel_has_no_driver(tree, run):
    _userspace(tree)
    _kernel(tree, OLD, [_nvidia(tree, OLD)])
    _kernel(tree, NEW)
    tree.write("/etc/os-release", "ID=ubuntu\nID_LIKE=debian\n")
    result = run("--root", tree, "--format", "json")
    assert result.findings()["gpu.driver-missing-for-kernel"] == "critical"
    message = [f for f in result.json["findings"] if f["rule"] == "gpu.driver-missing-for-kernel"][0]["message"]
    assert "kernel %s, which the image boots by default" % NEW in message
    # Pinning the older kernel boots one that has the driver.
    tree.write("/etc/default/grub", "GRUB_DEFAULT='1>2'\n")
    assert "gpu.driver-missing-for-kernel" not in run("--root", tree, "--format", "json").findings()


def test_driver_library_mismatch_after_an_upgrade_without_reboot(tree, run):
    _gpu_host(tree, loaded="535.183.01")
    _userspace(tree)
    _kernel(tree, OLD, [_nvidia(tree, OLD)])
    result = run("--root", tree, "--format", "json")
    found = [f for f in result.json["findings"] if f["rule"] == "gpu.driver-library-mismatch"][0]
    assert found["severity"] == "critical" and "535.183.01" in found["message"] and DRIVER in found["message"]
    assert found["remediation"][0]["commands"] == ["sudo reboot"]
    assert found["remediation"][1]["commands"] == [
        "sudo fuser -v /dev/nvidia*",
        "sudo rmmod nvidia",
        "sudo modprobe -a nvidia",
        "nvidia-smi",
    ]
    # What holds nvidia goes first: GPUDirect RDMA's module too, and the services that keep it open.
    loaded = ("nvidia_peermem", "nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia")
    tree.write("/proc/modules", "".join("%s 1 0 - Live 0x0\n" % name for name in loaded))
    tree.write("/usr/lib/systemd/system/nvidia-fabricmanager.service", "[Service]\n")
    tree.link(
        "/etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service", "/usr/lib/systemd/system/nvidia-fabricmanager.service"
    )
    tree.write("/usr/lib/systemd/system/nvidia-persistenced.service", "[Service]\n")  # installed, never enabled: left alone
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "gpu.driver-library-mismatch"][0]
    assert found["remediation"][1]["commands"][1:4] == [
        "sudo systemctl stop nvidia-fabricmanager",
        "sudo rmmod nvidia_peermem nvidia_uvm nvidia_drm nvidia_modeset nvidia",
        "sudo modprobe -a nvidia nvidia_modeset nvidia_drm nvidia_uvm nvidia_peermem",
    ]


def test_mismatch_with_an_old_module_on_disk_needs_a_rebuild(tree, run):
    _gpu_host(tree, loaded="535.183.01")
    _userspace(tree)
    _kernel(tree, OLD, [_nvidia(tree, OLD, version="535.183.01")])
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "gpu.driver-library-mismatch"][0]
    assert "a reboot alone does not fix it" in found["message"]
    assert any("dkms install --force nvidia/%s -k %s" % (DRIVER, OLD) in c for s in found["remediation"] for c in s["commands"])


@pytest.mark.parametrize(
    "folder, flags, severity",
    [
        ("updates/dkms", "SMP preempt mod_unload ", "critical"),  # no modversions: the release must match
        ("updates/dkms", FLAGS, "high"),  # symbol checksums decide
        ("weak-updates/nvidia", FLAGS, None),  # RHEL's kABI links: meant to load
    ],
)
def test_module_built_for_another_kernel(tree, run, folder, flags, severity):
    _gpu_host(tree, loaded=None)
    _userspace(tree)
    own = "kernel/block/kyber-iosched.ko"
    module(tree.root / "lib/modules" / OLD / own, [("name", "kyber_iosched"), ("vermagic", "%s %s" % (OLD, flags))])
    path = _nvidia(tree, OLD, built_for="6.5.0-41-generic", folder=folder, flags=flags)
    tree.write("/lib/modules/%s/modules.dep" % OLD, "%s:\n%s:\n" % (own, path))
    findings = run("--root", tree, "--format", "json").findings()
    assert findings.get("gpu.module-vermagic-mismatch") == severity


def test_flags_that_differ_from_the_kernels_own_modules(tree, run):
    _gpu_host(tree, loaded=None)
    _userspace(tree)
    _kernel(tree, OLD, [_nvidia(tree, OLD, flags="SMP mod_unload modversions ")])
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "gpu.module-vermagic-mismatch"]
    assert found[0]["severity"] == "critical" and "the flags differ" in found[0]["message"]


@pytest.mark.parametrize(
    "cuda, driver, severity",
    [
        ("12.4.1", "535.183.01", "low"),
        ("12.4.1", "470.256.02", "critical"),
        ("12.4.1", "550.127.05", None),
        ("10.2.89", "418.39", "critical"),
        ("11.0.3", "450.51.06", None),  # 11.0 shipped before the 11.x floor: its own driver is enough
        ("9.2.148", "390.157", "critical"),
    ],
)
def test_driver_against_cuda_toolkits(tree, run, cuda, driver, severity):
    _gpu_host(tree, loaded=driver)
    _userspace(tree, version=driver)
    _kernel(tree, OLD, [_nvidia(tree, OLD, version=driver)])
    folder = "/usr/local/cuda-%s" % ".".join(cuda.split(".")[:2])
    if cuda.startswith(("9.", "10.")):
        tree.write(folder + "/version.txt", "CUDA Version %s\n" % cuda)
    else:
        tree.write(folder + "/version.json", '{"cuda": {"name": "CUDA SDK", "version": "%s"}}' % cuda)
    tree.link("/usr/local/cuda", "cuda-%s" % ".".join(cuda.split(".")[:2]))
    result = run("--root", tree, "--format", "json")
    assert result.findings().get("gpu.driver-too-old-for-cuda") == severity
    assert len([f for f in result.json["findings"] if f["rule"] == "gpu.driver-too-old-for-cuda"]) == (1 if severity else 0)


def test_nouveau_loaded_unblocked_and_kept_out(tree, run):
    _gpu_host(tree)
    _userspace(tree)
    nouveau = "kernel/drivers/gpu/drm/nouveau/nouveau.ko"
    module(tree.root / "lib/modules" / OLD / nouveau, [("name", "nouveau"), ("vermagic", OLD + " " + FLAGS)])
    _kernel(tree, OLD, [_nvidia(tree, OLD), nouveau])
    assert run("--root", tree, "--format", "json").findings()["gpu.nouveau-loaded"] == "medium"
    tree.write("/proc/modules", "nouveau 2834432 0 - Live 0x0000000000000000\n")
    result = run("--root", tree, "--format", "json")
    assert result.findings()["gpu.nouveau-loaded"] == "high"
    commands = [c for f in result.json["findings"] if f["rule"] == "gpu.nouveau-loaded" for s in f["remediation"] for c in s["commands"]]
    assert "sudo update-initramfs -u -k all" in commands
    tree.write("/proc/modules", "")
    tree.write("/usr/lib/modprobe.d/nvidia-graphics-drivers.conf", "blacklist nouveau\noptions nouveau modeset=0\n")
    assert "gpu.nouveau-loaded" not in run("--root", tree, "--format", "json").findings()


def test_a_snapshot_keeps_what_modules_say_not_the_modules(tree, tmp_path, run):
    _gpu_host(tree, loaded="535.183.01")
    _userspace(tree)
    _kernel(tree, OLD, [_nvidia(tree, OLD, compress="xz")])
    before = run("--root", tree, "--format", "json").findings()
    host = snapshot.capture(str(tree))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    copied = tmp_path / "snap/lib/modules" / OLD / "updates/dkms/nvidia.ko.xz"
    assert not copied.exists()  # what it says is kept, not the module
    record = tmp_path / "snap/.aidoctor/derived/modinfo/lib/modules" / OLD / "updates/dkms/nvidia.ko.xz"
    assert "version=%s" % DRIVER in record.read_text()
    assert run("--root", tmp_path / "snap", "--format", "json").findings() == before
    assert Facts(Host(str(tmp_path / "snap"))).get("gpu_modules")[0].found["nvidia"].field("version") == DRIVER


def test_what_a_large_file_holds_is_kept_between_runs(tmp_path, monkeypatch):
    path = module(tmp_path / "lib/modules/r/nvidia.ko", [("version", DRIVER), ("vermagic", OLD + " SMP")])
    with open(path, "ab") as handle:
        handle.write(bytes(2 << 20))  # past the size worth caching
    calls = []

    def counting(stream):
        calls.append(1)
        return elf.modinfo(stream)

    for _ in range(2):
        assert "version=%s" % DRIVER in Host(str(tmp_path)).derive("/lib/modules/r/nvidia.ko", "modinfo", counting).data
    assert len(calls) == 1
    with open(path, "ab") as handle:
        handle.write(b"\0")  # a changed file is read again
    Host(str(tmp_path)).derive("/lib/modules/r/nvidia.ko", "modinfo", counting)
    assert len(calls) == 2
    (tmp_path / "lib/modules/r/bad.ko").write_bytes(bytes(2 << 20))
    first = Host(str(tmp_path)).derive("/lib/modules/r/bad.ko", "modinfo", counting)
    again = Host(str(tmp_path)).derive("/lib/modules/r/bad.ko", "modinfo", counting)
    assert first.detail == again.detail and first.detail.startswith("not an ELF file") and len(calls) == 3
    monkeypatch.setenv("AIDOCTOR_NO_CACHE", "1")
    Host(str(tmp_path)).derive("/lib/modules/r/nvidia.ko", "modinfo", counting)
    assert len(calls) == 4


@pytest.mark.parametrize("field, value", [("sh_size", 2 << 30), ("sh_size", 1 << 63), ("sh_type", 8), ("sh_flags", 0x800)])
def test_a_section_header_that_lies_is_refused_before_memory_is_spent(tmp_path, field, value):
    import struct as packing

    from elftools.elf.elffile import ELFFile

    path = module(tmp_path / "nvidia.ko", [("version", DRIVER), ("vermagic", OLD + " SMP")])
    data = bytearray(path.read_bytes())
    with open(path, "rb") as stream:
        parsed = ELFFile(stream)
        index = next(i for i, s in enumerate(parsed.iter_sections()) if s.name == ".modinfo")
        offset = parsed.header["e_shoff"] + index * parsed.header["e_shentsize"]
    # Elf64_Shdr: name(4) type(4) flags(8) addr(8) offset(8) size(8) …
    where = {"sh_type": (4, "<I"), "sh_flags": (8, "<Q"), "sh_size": (32, "<Q")}[field]
    packing.pack_into(where[1], data, offset + where[0], value)
    path.write_bytes(bytes(data))
    with open(path, "rb") as stream, pytest.raises(ValueError):
        elf.modinfo(stream)


def test_a_snapshot_replays_embedded_configs_and_unreadable_modules(tree, tmp_path, run):
    import gzip as gz

    _gpu_host(tree, loaded=None)
    _userspace(tree)
    os.remove(str(tree.root / ("boot/config-" + OLD)))
    config = "# Linux/x86 %s Kernel Configuration\nCONFIG_HUGETLBFS=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\n" % OLD
    tree.write(
        "/boot/vmlinuz-" + OLD, b"MZ" + bytes(4096) + gz.compress(b"x" * 1000 + b"IKCFG_ST" + gz.compress(config.encode()) + b"IKCFG_ED")
    )
    _kernel(tree, OLD, ["updates/dkms/nvidia.ko"])
    tree.write("/lib/modules/%s/updates/dkms/nvidia.ko" % OLD, b"not an elf\n")
    before = run("--root", tree, "--format", "json", "-v")
    assert before.findings()["gpu.module-vermagic-mismatch"] == "low"
    host = snapshot.capture(str(tree))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    after = run("--root", tmp_path / "snap", "--format", "json", "-v")
    assert after.findings() == before.findings()
    assert after.statuses() == before.statuses()


def test_a_failed_upgrade_under_a_running_driver_is_not_fixed_by_a_reboot(tree, run):
    _gpu_host(tree, loaded="535.183.01")
    _userspace(tree)  # 550 libraries and DKMS source; the 535 module was removed, 550 did not build
    (tree.root / "var/lib/dkms/nvidia/535.183.01").mkdir(parents=True)
    _kernel(tree, OLD)
    result = run("--root", tree, "--format", "json")
    assert result.findings()["gpu.driver-missing-for-kernel"] == "high"
    mismatch = [f for f in result.json["findings"] if f["rule"] == "gpu.driver-library-mismatch"][0]
    assert "a reboot would leave the host without a driver" in mismatch["message"]
    commands = [c for s in mismatch["remediation"] for c in s["commands"]]
    # The build matches the libraries, not the newest-sorting name.
    assert "sudo dkms install --force nvidia/%s -k %s" % (DRIVER, OLD) in commands
    # Then the new module has to replace the running one.
    assert commands[-1] == "nvidia-smi" and "sudo reboot" in commands


def test_dkms_sources_under_other_names(tree):
    (tree.root / "var/lib/dkms/nvidia-open/570.86.15").mkdir(parents=True)
    (tree.root / "var/lib/dkms/nvidia-fs/2.20.5").mkdir(parents=True)
    nv = Facts(Host(str(tree))).get("nvidia")
    assert [s.ref for s in nv.dkms] == ["nvidia-open/570.86.15"] and nv.installed


def test_debian_names_the_nvidia_module_nvidia_current(tree, run):
    _gpu_host(tree, loaded=None)
    _userspace(tree)
    path = "updates/dkms/nvidia-current.ko"
    module(tree.root / "lib/modules" / OLD / path, [("version", DRIVER), ("name", "nvidia"), ("vermagic", OLD + " " + FLAGS)])
    _kernel(tree, OLD, [path, "updates/dkms/nvidia-current-uvm.ko"])
    result = run("--root", tree, "--format", "json")
    assert "gpu.driver-missing-for-kernel" not in result.findings()
    assert result.statuses()["gpu.module-vermagic-mismatch"] == "pass"


def test_nouveau_with_modeset_off_binds_nothing(tree, run):
    _gpu_host(tree)
    _userspace(tree)
    _kernel(tree, OLD, [_nvidia(tree, OLD)])
    tree.write("/proc/modules", "nouveau 2834432 0 - Live 0x0000000000000000\n")
    tree.write("/proc/cmdline", "ro nouveau.modeset=0\n")
    assert "gpu.nouveau-loaded" not in run("--root", tree, "--format", "json").findings()
    tree.write("/proc/cmdline", "ro rd.driver.blacklist=nouveau\n")  # the initramfs only
    assert run("--root", tree, "--format", "json").findings()["gpu.nouveau-loaded"] == "high"


def test_a_module_without_vermagic_is_named_so_and_one_read_in_part_is_not_judged(tree, tmp_path, run, monkeypatch):
    from ai_doctor import host as host_module

    _gpu_host(tree, loaded=None)
    _userspace(tree)
    path = "updates/dkms/nvidia.ko"
    module(tree.root / "lib/modules" / OLD / path, [("version", DRIVER), ("license", "NVIDIA"), ("name", "nvidia")])
    _kernel(tree, OLD, [path])
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "gpu.module-vermagic-mismatch"]
    assert [f["severity"] for f in found] == ["high"] and "has no vermagic" in found[0]["message"]
    # An empty one is compared like any other, and refused whatever the kernel's build.
    module(tree.root / "lib/modules" / OLD / path, [("version", DRIVER), ("name", "nvidia"), ("vermagic", "")])
    monkeypatch.setenv("AIDOCTOR_NO_CACHE", "1")
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "gpu.module-vermagic-mismatch"]
    assert [f["severity"] for f in found] == ["critical"] and "has an empty vermagic" in found[0]["message"], found
    monkeypatch.delenv("AIDOCTOR_NO_CACHE")
    module(tree.root / "lib/modules" / OLD / path, [("version", DRIVER), ("license", "NVIDIA"), ("name", "nvidia")])
    # A snapshot's record of it too long to hold whole, vermagic after the part kept: no verdict
    # on a vermagic that was not read, and the check says what it could not see.
    host = snapshot.capture(str(tree))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    record = tmp_path / "snap/.aidoctor/derived/modinfo/lib/modules" / OLD / path
    record.write_text("version=%s\nname=nvidia\n%svermagic=%s %s\n" % (DRIVER, "parm=x:an option\n" * 400, OLD, FLAGS))
    monkeypatch.setattr(host_module, "DERIVED_CAP", 4096)
    result = run("--root", tmp_path / "snap", "--format", "json").json
    found = [f for f in result["findings"] if f["rule"] == "gpu.module-vermagic-mismatch"]
    assert [f["severity"] for f in found] == ["low"] and "read only in part" in found[0]["message"], found


def test_a_module_version_not_in_the_part_read_is_said_so(tree, tmp_path, run, monkeypatch):
    from ai_doctor import host as host_module

    _gpu_host(tree, loaded=None)
    _userspace(tree, version="550.127.05")
    _kernel(tree, OLD, [_nvidia(tree, OLD, version="535.183.01")])
    host = snapshot.capture(str(tree))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    record = tmp_path / "snap/.aidoctor/derived/modinfo/lib/modules" / OLD / "updates/dkms/nvidia.ko"
    record.write_text("name=nvidia\nvermagic=%s %s\n%sversion=535.183.01\n" % (OLD, FLAGS, "parm=x:an option\n" * 400))
    monkeypatch.setattr(host_module, "DERIVED_CAP", 4096)
    checks = run("--root", tmp_path / "snap", "--image", "--format", "json").json["checks"]
    (check,) = [c for c in checks if c["rule"] == "gpu.driver-library-mismatch"]
    assert check["status"] == "skip" and "read only in part, and its version is not in that part" in check["reason"], check
    # Nor is a licence that was not in the part read taken for no licence.
    flavour = Facts(Host(str(tmp_path / "snap"), image=True)).get("nvidia_flavour")
    assert not flavour and "read only in part, without its license" in flavour.reason


def test_the_next_boot_keeps_the_driver_whose_version_was_not_in_the_part_read(tree, tmp_path, monkeypatch):
    from ai_doctor import host as host_module

    _gpu_host(tree, loaded=DRIVER)
    _userspace(tree)
    _kernel(tree, OLD, [_nvidia(tree, OLD)])
    host = snapshot.capture(str(tree))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    record = tmp_path / "snap/.aidoctor/derived/modinfo/lib/modules" / OLD / "updates/dkms/nvidia.ko"
    record.write_text("name=nvidia\nvermagic=%s %s\n%sversion=%s\n" % (OLD, FLAGS, "parm=x:an option\n" * 400, DRIVER))
    assert Facts(Host(str(tmp_path / "snap"))).get("gpu_at_boot").nvidia == DRIVER
    monkeypatch.setattr(host_module, "DERIVED_CAP", 4096)
    # Read in part, the version is unknown, not absent: no "the next boot loads no driver".
    boot = Facts(Host(str(tmp_path / "snap"))).get("gpu_at_boot")
    assert not boot and "read only in part, without its version" in boot.reason
