"""gpu.fabric-manager, gpu.module-flavour and pci.iommu-p2p: their parsers, and the rules on
small trees (containers, images, VMs, RHEL, cases the fixtures do not hold)."""

from __future__ import annotations

import io
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_doctor.facts import Facts
from ai_doctor.facts.cmdline import Cmdline, Param
from ai_doctor.facts.gpuplatform import (
    ACS_CR,
    ACS_EC,
    ACS_REDIRECT,
    ACS_RR,
    KERNEL_ACS,
    Bridge,
    Package,
    _passthrough,
    acs_control,
    acs_registers,
    acs_words,
    at_next_boot,
    disable_acs_redir,
    generation,
    nvidia_device_lines,
    nvidia_paragraphs,
    parse_dpkg_status,
    parse_fm_log,
    shared_ports,
)
from ai_doctor.host import Host

from conftest import minimal_host

PCI_IDS = (
    "#\n#\tList of PCI IDs\n#\n#\tVersion: 2026.08.22\n#\n"
    "10dd  Evans & Sutherland\n"
    "10de  NVIDIA Corporation\n"
    "\t1db6  GV100GL [Tesla V100 PCIe 32GB]\n"
    "\t\t10de 124a  Tesla V100 PCIe 32GB\n"
    "\t22a3  GH100 [H100 NVSwitch]\n"
    "\t2330  GH100 [H100 SXM5 80GB]\n"
    "\t2684  AD102 [GeForce RTX 4090]\n"
    "\t26b1  AD102GL [RTX 6000 Ada Generation]\n"
    "\t2b00  GB10B [Jetson AGX Thor]\n"
    "\t2bb5  GB202GL [RTX PRO 6000 Blackwell Server Edition]\n"
    "10df  Emulex Corporation\n"
    "\t1ae5  LightPulse Fibre Channel Host Adapter\n"
)

STATUS = """Package: nvidia-fabricmanager-550
Status: install ok installed
Architecture: amd64
Version: 550.127.05-1
Description: Fabric Manager for NVSwitch based systems.

Package: nvidia-driver-535
Status: deinstall ok config-files
Version: 535.183.01-0ubuntu1
Description: removed, configuration kept

Package: zlib1g
Status: install ok installed
Version: 1:1.3.dfsg-3.1ubuntu2.1

Package: cuda-drivers-fabricmanager-550
Status: hold ok installed
Version: 1:550.127.05-0ubuntu0.24.04.1
Description: meta"""


# -- parsers ------------------------------------------------------------------------------------


def test_dpkg_status_keeps_installed_driver_and_fabric_manager_packages():
    found = parse_dpkg_status(STATUS)
    assert [(p.name, p.version, p.upstream) for p in found] == [
        ("cuda-drivers-fabricmanager-550", "1:550.127.05-0ubuntu0.24.04.1", "550.127.05"),
        ("nvidia-fabricmanager-550", "550.127.05-1", "550.127.05"),
    ]


def test_dpkg_status_parse_is_linear_in_a_large_file():
    import time

    filler = "".join("Package: lib%d\nStatus: install ok installed\nVersion: 1.0-%d\n\n" % (n, n) for n in range(60000))
    text = filler + STATUS
    start = time.perf_counter()
    assert [p.name for p in parse_dpkg_status(text)] == ["cuda-drivers-fabricmanager-550", "nvidia-fabricmanager-550"]
    assert time.perf_counter() - start < 0.5


# Lines of dpkg paragraphs, ours and others', some written oddly (a second Package line, no
# blank line between two paragraphs, spaces after the colon).
STATUS_LINES = [
    "Package: nvidia-driver-550",
    "Package: nvidia-fabricmanager-550",
    "Package: cuda-drivers",
    "Package: fabricmanager-555",
    "Package: libc6",
    "Package:  nvidia-utils-550",
    "Status: install ok installed",
    "Status: deinstall ok config-files",
    "Version: 550.127.05-1",
    "Version: 1:2.39-0ubuntu8",
    "Description: x",
    "",
    "",
]


@given(st.lists(st.sampled_from(STATUS_LINES), max_size=40))
def test_the_nvidia_paragraphs_a_snapshot_keeps_hold_every_package_the_whole_file_does(lines):
    text = "\n".join(lines)
    kept = nvidia_paragraphs(io.BytesIO(text.encode()))
    assert parse_dpkg_status(kept) == parse_dpkg_status(text)
    ours = ("Package: nvidia-", "Package: cuda-drivers", "Package: fabricmanager")
    assert all(any(line.startswith(ours) for line in paragraph.split("\n")) for paragraph in kept.split("\n\n") if paragraph.strip())


def test_a_snapshot_keeps_the_nvidia_packages_not_the_package_database(tree, tmp_path, run):
    from ai_doctor import snapshot

    _hgx(tree)
    tree.write("/sys/fs/cgroup/system.slice/nvidia-fabricmanager.service/cgroup.procs", "2417\n")
    filler = "".join("Package: lib%d\nStatus: install ok installed\nVersion: 1.0-%d\n\n" % (n, n) for n in range(2000))
    tree.write("/var/lib/dpkg/status", filler + STATUS + "\n")
    before = _statuses(run, tree)
    host = snapshot.capture(str(tree))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    assert not (tmp_path / "snap/var/lib/dpkg/status").exists()
    record = (tmp_path / "snap/.aidoctor/derived/dpkg-nvidia/var/lib/dpkg/status").read_text()
    assert "lib1" not in record and "Package: nvidia-fabricmanager-550" in record and "Package: nvidia-driver-535" in record
    assert _statuses(run, tmp_path / "snap") == before
    assert [p.name for p in Facts(Host(str(tmp_path / "snap"))).get("nvidia_packages")] == [
        "cuda-drivers-fabricmanager-550",
        "nvidia-fabricmanager-550",
    ]


def test_a_status_file_with_cr_line_ends_reads_the_same_from_the_cache(tree):
    _hgx(tree)
    tree.write("/var/lib/dpkg/status", STATUS.replace("\n", "\r\n").replace("Package: zlib1g", "Package: nvidia-x\rStatus: y"))
    answers = [Facts(Host(str(tree))).get("nvidia_packages") for _ in range(3)]  # computed, then kept
    assert answers[0] == answers[1] == answers[2] == parse_dpkg_status((tree.root / "var/lib/dpkg/status").read_bytes().decode())


def test_a_snapshot_of_nvidia_paragraphs_over_8_mib_replays_them_whole(tree, tmp_path):
    from ai_doctor import snapshot

    _hgx(tree)
    # Paragraphs a snapshot keeps (nvidia-…) but no check counts, before the ones it does.
    doc = "Package: nvidia-doc-%d\nStatus: install ok installed\nVersion: 1\nDescription: " + "d" * 900 + "\n\n"
    tree.write("/var/lib/dpkg/status", "".join(doc % n for n in range(9500)) + STATUS + "\n")
    live = Facts(Host(str(tree))).get("nvidia_packages")
    host = snapshot.capture(str(tree))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    assert (tmp_path / "snap/.aidoctor/derived/dpkg-nvidia/var/lib/dpkg/status").stat().st_size > 8 << 20
    assert Facts(Host(str(tmp_path / "snap"))).get("nvidia_packages") == live and len(live) == 2


def _status_read(host):
    Facts(host).get("nvidia_packages")
    return [got for kind, _path, got in host.log if kind == "derived:dpkg-nvidia"][-1]


def test_a_status_file_over_the_cap_is_judged_in_part_and_says_so_live_cached_and_replayed(tree, tmp_path, monkeypatch):
    from ai_doctor import snapshot
    from ai_doctor.engine import _read_size
    from ai_doctor.facts import gpuplatform

    _hgx(tree)
    filler = "".join("Package: lib%d\nStatus: install ok installed\nVersion: 1.0-%d\n\n" % (n, n) for n in range(200))
    tree.write("/var/lib/dpkg/status", STATUS + "\n\n" + filler)
    monkeypatch.setattr(gpuplatform, "DPKG_STATUS_CAP", 4096)
    for _ in range(2):  # extracted, then from the cache
        got = _status_read(Host(str(tree)))
        assert got.truncated and 3000 < _read_size(got) <= 4096
        assert [p.name for p in parse_dpkg_status(got.data)] == ["cuda-drivers-fabricmanager-550", "nvidia-fabricmanager-550"]
    host = snapshot.capture(str(tree))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    replayed = _status_read(Host(str(tmp_path / "snap")))
    assert replayed.truncated and replayed.detail == got.detail and replayed.data == got.data
    # A tree holding the file cut where it was read, as snapshots did before they kept records.
    older = tmp_path / "older"
    older.mkdir()
    (older / "var/lib/dpkg").mkdir(parents=True)
    (older / "var/lib/dpkg/status").write_bytes((tree.root / "var/lib/dpkg/status").read_bytes()[:2000])
    (older / ".aidoctor").mkdir()
    (older / ".aidoctor/manifest.json").write_text('{"format": 1, "truncated": ["/var/lib/dpkg/status"]}')
    monkeypatch.setattr(gpuplatform, "DPKG_STATUS_CAP", 1 << 20)
    cut = _status_read(Host(str(older)))
    assert cut.truncated and _read_size(cut) == 2000


def test_package_upstream_version_without_epoch_or_revision():
    assert Package("x", "550.127.05").upstream == "550.127.05"
    assert Package("x", "2:550.127.05-1").upstream == "550.127.05"


def test_fabric_manager_log_mismatch_line():
    log = (
        "[INFO] Fabric Manager version 530.30.02 is running\n"
        "[ERROR] fabric manager NVIDIA GPU driver interface version 530.30.02 don't match with driver version 530.41.03. "
        "Please update with matching NVIDIA driver package.\n"
        "[INFO] exiting\n"
    )
    found = parse_fm_log(log)
    assert (found.line, found.fm_version, found.driver_version) == (2, "530.30.02", "530.41.03")
    assert parse_fm_log("[INFO] all good\n") is None


@pytest.mark.parametrize(
    "name, expected",
    [
        ("GB202GL [RTX PRO 6000 Blackwell Server Edition]", "blackwell"),
        ("GB100 [B200]", "blackwell"),
        ("GR100 [Reserved Dev ID A]", "blackwell"),
        ("GH100 [H100 SXM5 80GB]", "turing"),
        ("AD102GL [L40S]", "turing"),
        ("GA100 [A100 SXM4 80GB]", "turing"),
        ("TU104GL [Tesla T4]", "turing"),
        ("GV100GL [Tesla V100 PCIe 32GB]", "pre-turing"),
        ("GP102 [GeForce GTX 1080 Ti]", "pre-turing"),
        ("GM204 [GeForce GTX 980]", "pre-turing"),
        ("G80 [GeForce 8800 GTX]", "pre-turing"),
        ("GB10B [Jetson AGX Thor]", None),
        ("Tegra PCIe x8 Endpoint", None),
        ("High Definition Audio", None),
        ("GH", None),
        ("", None),
    ],
)
def test_generation_from_the_pci_ids_chip_name(name, expected):
    assert generation(name) == expected


def test_pci_ids_nvidia_section_only_device_lines():
    text = nvidia_device_lines(io.BytesIO(PCI_IDS.encode()))
    lines = text.splitlines()
    assert lines[0] == "version: 2026.08.22"
    assert "1db6 GV100GL [Tesla V100 PCIe 32GB]" in lines
    assert not any("124a" in line or "LightPulse" in line or "Emulex" in line for line in lines)
    with pytest.raises(ValueError):
        nvidia_device_lines(io.BytesIO(b"10df  Emulex Corporation\n"))


def _config(control=None, size=4096, loop=False, capability=0x005F):
    data = bytearray(size)
    struct.pack_into("<HH", data, 0, 0x1022, 0x14AB)
    if size > 0x100:
        # AER at 0x100 → ACS at 0x148 (or back to 0x100: a loop).
        struct.pack_into("<I", data, 0x100, 0x0001 | (2 << 16) | ((0x100 if loop else 0x148) << 20))
        if control is not None:
            struct.pack_into("<I", data, 0x148, 0x000D | (1 << 16))
            struct.pack_into("<HH", data, 0x14C, capability, control)
    return bytes(data)


def test_acs_control_from_the_extended_capability_chain():
    assert acs_control(_config(0x001D)) == 0x001D
    assert acs_registers(_config(0x0001, capability=0x007F)) == (0x007F, 0x0001)
    assert acs_words(0x001D) == "SrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-"
    assert acs_control(_config(None)) is None
    assert acs_control(_config(0x1D, size=64)) is None  # what a user other than root reads
    assert acs_control(_config(None, loop=True)) is None
    assert acs_control(b"\xff" * 4096) is None


def _cmdline(*texts):
    params = tuple(Param(*(t.split("=", 1) if "=" in t else (t, None))) for t in texts)
    return Cmdline(" ".join(texts), params, "/proc/cmdline", (), ())


def test_passthrough_from_the_command_line_last_wins():
    assert _passthrough(_cmdline("quiet", "iommu=pt"))
    assert _passthrough(_cmdline("amd_iommu=on", "iommu=soft,pt"))
    assert not _passthrough(_cmdline("iommu=pt", "iommu=nopt"))
    assert _passthrough(_cmdline("iommu.passthrough=1"))
    assert not _passthrough(_cmdline("iommu=pt", "iommu.passthrough=0"))
    assert not _passthrough(_cmdline("intel_iommu=on"))
    assert not _passthrough(None)


def test_disable_acs_redir_takes_the_last_option_and_its_addresses():
    line = _cmdline("pci=noaer,disable_acs_redir=0000:42:00.0;42:01.0", "quiet")
    assert disable_acs_redir(line) == {"0000:42:00.0", "0000:42:01.0"}
    # pci_setup() keeps one string: a second option replaces the first.
    assert disable_acs_redir(_cmdline("pci=disable_acs_redir=0000:42:00.0", "pci=disable_acs_redir=1:05:00.0")) == {"0001:05:00.0"}
    # Paths and ids are the kernel's to match; nothing is guessed for them.
    assert disable_acs_redir(_cmdline("pci=disable_acs_redir=0000:40:01.1/00.0/00.0;pci:1000:c010")) == set()
    assert disable_acs_redir(_cmdline("pci=realloc", "disable_acs_redir=0000:42:00.0")) == set()
    assert disable_acs_redir(None) == set()


def _port(control, capability=0x005F, address="0000:42:00.0"):
    return Bridge(address, "/sys/devices/x/" + address, "0000:43:00.0", "0000:41:00.0", control, capability, "read")


@given(st.integers(0, 0x7F), st.integers(0, 0x7F), st.booleans(), st.booleans())
def test_acs_at_the_next_boot_is_what_the_kernel_writes(control, capability, iommu, named):
    after = at_next_boot(_port(control, capability), iommu, {"0000:42:00.0"} if named else set()).control
    if named:
        # pci=disable_acs_redir= clears ReqRedir, CmpltRedir and EgressCtrl after the kernel's defaults.
        assert not after & (ACS_RR | ACS_CR | ACS_EC)
    expected = control | (capability & KERNEL_ACS if iommu else 0)
    assert after == (expected & ~(ACS_RR | ACS_CR | ACS_EC) if named else expected)
    if iommu and not named and capability & ACS_REDIRECT:
        # A redirect cleared by hand (setpci) comes back where an IOMMU driver runs.
        assert after & ACS_REDIRECT
    assert at_next_boot(_port(None), iommu, {"0000:42:00.0"}).control is None


def _chains(slots):
    """GPUs at ``slots`` (each a tuple of branch numbers from a root port down): their upstream
    bridges as shared_ports takes them, with a bridge's address made from its place."""
    chains = []
    for number, slot in enumerate(slots):
        chain = []
        for depth in range(1, len(slot) + 1):
            place = slot[:depth]
            address = "%04x:%02x:%02x.0" % (place[0], depth, sum(place) % 32)
            chain.append((address, "/sys/devices/pci0000:%02x/" % place[0] + "/".join(map(str, place))))
        chains.append(("0000:%02x:00.0" % (0x80 + number), chain))
    return chains


@given(st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=4).map(tuple), min_size=0, max_size=6, unique=True))
def test_shared_ports_are_the_ports_right_below_where_two_gpus_meet(slots):
    found = {(folder, gpu) for _address, folder, gpu, _switch in shared_ports(_chains(slots))}
    expected = set()
    for one, (gpu_one, _c) in zip(slots, _chains(slots)):
        for other in slots:
            if other == one:
                continue
            common = next((k for k in range(min(len(one), len(other))) if one[k] != other[k]), min(len(one), len(other)))
            if common and common < len(one):
                expected.add(("/sys/devices/pci0000:%02x/" % one[0] + "/".join(map(str, one[: common + 1])), gpu_one))
    # Each port once: where several GPUs reach one port, the first one found names it.
    assert {folder for folder, _gpu in found} == {folder for folder, _gpu in expected}
    assert found <= expected
    # A root port is never judged: below it, GPUs meet in the root complex.
    assert not {folder for folder, _gpu in found} & {chain[0][1] for _gpu, chain in _chains(slots)}


def test_gpus_below_their_own_root_ports_share_no_port():
    chains = [
        ("0000:41:00.0", [("0000:40:01.1", "/sys/devices/pci0000:40/0000:40:01.1")]),
        ("0000:c1:00.0", [("0000:c0:01.1", "/sys/devices/pci0000:c0/0000:c0:01.1")]),
        ("0000:42:00.0", [("0000:40:01.2", "/sys/devices/pci0000:40/0000:40:01.2")]),
        ("0000:99:00.0", None),
    ]
    assert shared_ports(chains) == []


# -- trees --------------------------------------------------------------------------------------


def _pci(tree, address, device, klass=0x030200, upstream=(), group=None, group_type="DMA", bridge_config=None):
    """A GPU below ``upstream`` bridges (root port first); ``bridge_config``: every bridge's
    config space, or {address: config} (default: the 64 bytes a user other than root reads)."""
    chain = ["pci" + (upstream[0] if upstream else address)[:7]] + list(upstream) + [address]
    folder = "/sys/devices/" + "/".join(chain)
    for index, bridge in enumerate(upstream):
        bfolder = "/sys/devices/" + "/".join(chain[: index + 2])
        tree.write(bfolder + "/vendor", "0x1022\n")
        tree.write(bfolder + "/device", "0x14ab\n")
        config = bridge_config.get(bridge) if isinstance(bridge_config, dict) else bridge_config
        tree.write(bfolder + "/config", config if config is not None else _config(None, size=64))
        if not (tree.root / ("sys/bus/pci/devices/" + bridge)).is_symlink():
            tree.link("/sys/bus/pci/devices/" + bridge, os.path.relpath(bfolder, "/sys/bus/pci/devices"))
    tree.write(folder + "/vendor", "0x10de\n")
    tree.write(folder + "/device", "0x%04x\n" % device)
    tree.write(folder + "/class", "0x%06x\n" % klass)
    tree.link("/sys/bus/pci/devices/" + address, os.path.relpath(folder, "/sys/bus/pci/devices"))
    if group is not None:
        tree.link(folder + "/iommu_group", os.path.relpath("/sys/kernel/iommu_groups/%d" % group, folder))
        tree.write("/sys/kernel/iommu_groups/%d/type" % group, group_type + "\n")


def _host(tree, driver="550.127.05", flavour="proprietary"):
    minimal_host(tree, release="6.8.0-49-generic")
    tree.write("/usr/share/misc/pci.ids", PCI_IDS)
    tree.write("/sys/class/dmi/id/sys_vendor", "Supermicro\n")
    tree.write("/sys/class/dmi/id/product_name", "SYS-821GE-TNHR\n")
    tree.write("/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme sse2\n")
    if driver:
        title = "NVIDIA UNIX Open Kernel Module for x86_64" if flavour == "open" else "NVIDIA UNIX x86_64 Kernel Module"
        tree.write("/proc/driver/nvidia/version", "NVRM version: %s  %s  Release Build\n" % (title, driver))
        tree.write("/sys/module/nvidia/version", driver + "\n")
    return tree


UNIT = "/lib/systemd/system/nvidia-fabricmanager.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service"


def _hgx(tree, **kwargs):
    _host(tree, **kwargs)
    _pci(tree, "0000:18:00.0", 0x2330, group=1)
    _pci(tree, "0000:2a:00.0", 0x2330, group=2)
    _pci(tree, "0000:05:00.0", 0x22A3, klass=0x068000)
    tree.write("/proc/driver/nvidia-nvswitch/devices/0000:05:00.0/fabric_state", "")
    tree.write("/usr/bin/nv-fabricmanager", "", mode=0o755)
    tree.write(UNIT, "[Install]\nWantedBy=multi-user.target\n")
    tree.write("/sys/fs/cgroup/system.slice/nvidia-persistenced.service/cgroup.procs", "1893\n")
    return tree


def _statuses(run, tree, *args):
    result = run("--root", tree, "--format", "json", "--model-size", "1G", *args)
    checks = {c["rule"]: c for c in result.json["checks"]}
    findings = {f["rule"]: f for f in result.json["findings"]}
    return checks, findings


def _commands(finding):
    return [command for step in finding["remediation"] for command in step["commands"]]


def test_fabric_manager_running_but_not_enabled_is_high(tree, run):
    _hgx(tree)
    tree.write("/sys/fs/cgroup/system.slice/nvidia-fabricmanager.service/cgroup.procs", "2417\n")
    tree.write("/var/lib/dpkg/status", STATUS)
    checks, findings = _statuses(run, tree)
    found = findings["gpu.fabric-manager"]
    assert found["severity"] == "high" and "not enabled at boot" in found["message"]
    assert "sudo systemctl enable nvidia-fabricmanager" in _commands(found)


def test_fabric_manager_state_unknown_without_cgroups_judges_enablement(tree, run):
    _hgx(tree)
    os.remove(tree.root / "sys/fs/cgroup/system.slice/nvidia-persistenced.service/cgroup.procs")
    os.rmdir(tree.root / "sys/fs/cgroup/system.slice/nvidia-persistenced.service")
    os.rmdir(tree.root / "sys/fs/cgroup/system.slice")
    tree.link(
        "/etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service", "/lib/systemd/system/nvidia-fabricmanager.service"
    )
    tree.write("/var/lib/dpkg/status", STATUS)
    checks, findings = _statuses(run, tree)
    assert "gpu.fabric-manager" not in findings
    assert "cannot be told" in checks["gpu.fabric-manager"]["reason"]


@pytest.mark.unprovable("the tree has the new libraries but no kernel module of theirs to load")
def test_fabric_manager_after_a_driver_upgrade_not_yet_loaded_asks_for_a_reboot(tree, run):
    """The driver's libraries and Fabric Manager are 550.127.05, the module that runs is older:
    a reboot loads the new driver, and Fabric Manager starts with it."""
    _hgx(tree, driver="550.90.07")
    tree.write("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.127.05", "")
    tree.link("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "libnvidia-ml.so.550.127.05")
    tree.link(
        "/etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service", "/lib/systemd/system/nvidia-fabricmanager.service"
    )
    tree.write("/var/lib/dpkg/status", STATUS)
    _checks, findings = _statuses(run, tree)
    found = findings["gpu.fabric-manager"]
    assert found["severity"] == "critical" and "still runs" in found["message"]
    assert _commands(found)[0] == "sudo reboot"


def test_fabric_manager_on_rhel_installs_the_branch_package_and_locks_it(tree, run):
    _hgx(tree)
    tree.write("/etc/os-release", 'ID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n')
    _checks, findings = _statuses(run, tree)
    found = findings["gpu.fabric-manager"]
    # No dpkg database: the version is not known, the unit is not running and not enabled.
    assert "not running" in found["message"]
    assert _commands(found) == [
        "sudo systemctl enable --now nvidia-fabricmanager",
        "sudo tail -n 20 /var/log/fabricmanager.log",
        "sudo dnf versionlock add '*nvidia*550*'",
    ]


def test_fabric_manager_not_installed_on_an_nvswitch_host(tree, run):
    _host(tree)
    _pci(tree, "0000:18:00.0", 0x2330, group=1)
    _pci(tree, "0000:05:00.0", 0x22A3, klass=0x068000)
    tree.write("/etc/os-release", 'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n')
    _checks, findings = _statuses(run, tree)
    found = findings["gpu.fabric-manager"]
    assert "not installed" in found["message"]
    assert _commands(found)[0] == "sudo apt-get install -y --allow-change-held-packages 'nvidia-fabricmanager-550=550.127.05-*'"


def _container(tree):
    tree.write("/run/.containerenv", "")
    tree.write("/proc/1/cgroup", "0::/\n")


def test_in_a_container_fabric_manager_skips_and_the_flavour_fix_belongs_to_the_host(tree, run):
    _hgx(tree)
    _container(tree)
    _pci(tree, "0000:3b:00.0", 0x2BB5, group=3)
    checks, findings = _statuses(run, tree)
    assert checks["gpu.fabric-manager"]["status"] == "skip" and "container" in checks["gpu.fabric-manager"]["reason"]
    found = findings["gpu.module-flavour"]
    assert found["severity"] == "critical" and "0000:3b:00.0" in found["message"]
    assert all(step["on_host"] for step in found["remediation"])


def test_an_image_skips_all_three(tree, run):
    tree.write("/etc/os-release", "ID=ubuntu\nID_LIKE=debian\n")
    tree.write("/usr/share/misc/pci.ids", PCI_IDS)
    checks, _findings = _statuses(run, tree)
    for rule in ("gpu.fabric-manager", "gpu.module-flavour", "pci.iommu-p2p"):
        assert checks[rule]["status"] == "skip", rule
    assert "image" in checks["pci.iommu-p2p"]["reason"]


def test_an_image_with_fabric_manager_installed_but_not_enabled(tree, run):
    tree.write("/etc/os-release", "ID=ubuntu\nID_LIKE=debian\n")
    tree.write("/usr/bin/nv-fabricmanager", "", mode=0o755)
    tree.write(UNIT, "[Install]\nWantedBy=multi-user.target\n")
    tree.write("/var/lib/dpkg/status", STATUS)
    _checks, findings = _statuses(run, tree)
    found = findings["gpu.fabric-manager"]
    assert "not enabled" in found["message"]
    assert any(command.endswith("systemctl enable nvidia-fabricmanager") for command in _commands(found))


def test_module_flavour_read_from_taint_when_the_version_file_says_nothing(tree):
    _host(tree, driver=None)
    tree.write("/sys/module/nvidia/taint", "OE\n")
    flavour = Facts(Host(str(tree))).get("nvidia_flavour")
    assert (flavour.name, flavour.path) == ("open", "/sys/module/nvidia/taint")


def test_mixed_generations_no_flavour_drives_both(tree, run):
    _host(tree, flavour="open")
    _pci(tree, "0000:3b:00.0", 0x1DB6, group=1, group_type="identity")
    _pci(tree, "0000:5e:00.0", 0x2BB5, group=2, group_type="identity")
    _checks, findings = _statuses(run, tree)
    found = findings["gpu.module-flavour"]
    assert "no flavour drives both" in found["message"] and not found["remediation"]


def test_jetson_name_is_not_judged(tree, run):
    _host(tree)
    _pci(tree, "0000:01:00.0", 0x2B00, group=1)
    checks, _findings = _statuses(run, tree)
    assert checks["gpu.module-flavour"]["status"] == "skip"


def test_pre_turing_on_a_driver_after_580_needs_the_580_branch(tree, run):
    _host(tree, driver="590.48.01", flavour="open")
    _pci(tree, "0000:3b:00.0", 0x1DB6, group=1, group_type="identity")
    _checks, findings = _statuses(run, tree)
    steps = findings["gpu.module-flavour"]["remediation"]
    assert "580 branch" in steps[0]["summary"] and not steps[0]["commands"]


def test_iommu_on_a_vm_and_behind_nvswitch_and_with_one_gpu_is_quiet(tree, run):
    _host(tree)
    _pci(tree, "0000:41:00.0", 0x2684, klass=0x030000, group=1, group_type="DMA")
    checks, _ = _statuses(run, tree)
    assert "fewer than two" in checks["pci.iommu-p2p"]["reason"]
    _pci(tree, "0000:c1:00.0", 0x2684, klass=0x030000, group=2, group_type="DMA")
    tree.write("/sys/class/dmi/id/product_name", "Standard PC (Q35 + ICH9, 2009)\n")
    tree.write("/sys/class/dmi/id/sys_vendor", "QEMU\n")
    checks, findings = _statuses(run, tree)
    assert "pci.iommu-p2p" not in findings and "passthrough needs ACS" in checks["pci.iommu-p2p"]["reason"]


# Two GPUs behind one PCIe switch: root port 0000:40:01.1, the switch's upstream port 0000:41:00.0,
# its downstream ports 0000:42:00.0 and 0000:42:01.0, and the GPUs below them.
RP, USP, DSP0, DSP1 = "0000:40:01.1", "0000:41:00.0", "0000:42:00.0", "0000:42:01.0"
KERNEL_DEFAULT = 0x001D  # SrcValid, ReqRedir, CmpltRedir, UpstreamFwd: pci_std_enable_acs()


def _switch(tree, configs=None, group_type="identity", device=0x26B1):
    """Two RTX 6000 Ada below one switch; ``configs``: {bridge: config space} (none: the 64
    bytes a user other than root reads)."""
    for gpu, port, group in (("0000:43:00.0", DSP0, 1), ("0000:44:00.0", DSP1, 2)):
        _pci(tree, gpu, device, klass=0x030000, upstream=(RP, USP, port), group=group, group_type=group_type, bridge_config=configs)


def _root(tree):
    tree.manifest(format=1, hostname="testhost", kernel="6.8.0-49-generic", uid=0)


def test_iommu_translated_with_many_threads_says_keep_it_on(tree, run):
    _host(tree)
    _pci(tree, "0000:41:00.0", 0x26B1, klass=0x030000, upstream=("0000:40:01.1",), group=1, group_type="DMA")
    _pci(tree, "0000:c1:00.0", 0x26B1, klass=0x030000, upstream=("0000:c0:01.1",), group=2, group_type="DMA")
    tree.write("/sys/devices/system/cpu/possible", "0-383\n")
    _checks, findings = _statuses(run, tree)
    found = findings["pci.iommu-p2p"]
    assert found["severity"] == "medium"
    assert "with 384 CPU threads, x2APIC needs its interrupt remapping" in found["message"]
    # Each below its own root port: ACS is not what stands between them, and not asked about.
    assert "ACS is not judged: no two of them share a PCIe switch" in found["message"] and "not seen" not in found["message"]
    assert "iommu=off" not in " ".join(_commands(found)) and "intel_iommu=off" not in " ".join(_commands(found))


def test_iommu_passthrough_already_on_the_line_is_not_asked_for_again(tree, run):
    _host(tree)
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro iommu=pt\n")
    _pci(tree, "0000:41:00.0", 0x26B1, klass=0x030000, group=1, group_type="DMA")
    _pci(tree, "0000:c1:00.0", 0x26B1, klass=0x030000, group=2, group_type="DMA")
    _checks, findings = _statuses(run, tree)
    found = findings["pci.iommu-p2p"]
    assert "already asks for passthrough" in found["message"]
    assert "after boot" in found["remediation"][0]["summary"]


def test_the_kernels_own_acs_on_separate_root_ports_is_not_a_finding(tree, run):
    """The outside review's case: read as root, the root ports carry the ACS bits the kernel
    sets wherever an IOMMU driver runs, the groups are identity and iommu=pt is on the line."""
    _host(tree)
    _root(tree)
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro iommu=pt\n")
    default = _config(KERNEL_DEFAULT)
    _pci(tree, "0000:41:00.0", 0x26B1, klass=0x030000, upstream=("0000:40:01.1",), group=1, group_type="identity", bridge_config=default)
    _pci(tree, "0000:c1:00.0", 0x26B1, klass=0x030000, upstream=("0000:c0:01.1",), group=2, group_type="identity", bridge_config=default)
    checks, findings = _statuses(run, tree)
    assert "pci.iommu-p2p" not in findings
    assert "no two of them share a PCIe switch" in checks["pci.iommu-p2p"]["reason"]


def test_acs_redirect_on_the_ports_of_a_shared_switch_is_high(tree, run):
    _host(tree)
    _root(tree)
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro iommu=pt\n")
    # The root port's bits are the kernel's too, but they are not on the way between the GPUs.
    _switch(tree, {RP: _config(KERNEL_DEFAULT), USP: _config(None), DSP0: _config(KERNEL_DEFAULT), DSP1: _config(KERNEL_DEFAULT)})
    _checks, findings = _statuses(run, tree)
    found = findings["pci.iommu-p2p"]
    assert found["severity"] == "high"
    ports = "at the ports of the PCIe switch they share (0000:42:00.0 above 0000:43:00.0, 0000:42:01.0 above 0000:44:00.0)"
    assert ports in found["message"]
    assert RP not in found["message"] and USP not in found["message"]
    assert "removes the isolation between the devices below that switch" in found["message"]
    assert [e["path"] for e in found["evidence"]] == [
        "/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0/0000:42:00.0/config",
        "/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0/0000:42:01.0/config",
    ]
    lasting, now, isolation = found["remediation"]
    # Two ports need `;`, which ends a command in grub.cfg: the parameter is named, not written.
    assert "`pci=disable_acs_redir=0000:42:00.0;0000:42:01.0`" in lasting["summary"] and "double quotes" in lasting["summary"]
    assert not lasting["commands"] and lasting["persistent"]
    assert now["commands"] == ["setpci -s 0000:42:00.0 ECAP_ACS+0x6.w=0000", "setpci -s 0000:42:01.0 ECAP_ACS+0x6.w=0000"]
    assert not now["persistent"] and "until the next boot" in now["summary"]
    assert "NCCL_P2P_DISABLE=1" in isolation["summary"]
    assert "firmware" not in " ".join(step["summary"] for step in found["remediation"])


def test_acs_on_a_shared_switch_read_without_root_is_said_not_seen(tree, run):
    _host(tree)
    _switch(tree, group_type="DMA-FQ")
    _checks, findings = _statuses(run, tree)
    found = findings["pci.iommu-p2p"]
    assert found["severity"] == "medium"
    assert "ACS on the ports of the PCIe switch they share (0000:42:00.0, 0000:42:01.0) was not seen" in found["message"]
    for name in ("iommu_groups/1/type", "iommu_groups/2/type"):
        tree.write("/sys/kernel/" + name, "identity\n")
    checks, findings = _statuses(run, tree)
    assert "pci.iommu-p2p" not in findings and "was not seen" in checks["pci.iommu-p2p"]["reason"]


def test_a_shared_switch_without_redirect_passes(tree, run):
    _host(tree)
    _root(tree)
    # What pci=disable_acs_redir= leaves: SrcValid and UpstreamFwd.
    _switch(tree, {RP: _config(KERNEL_DEFAULT), USP: _config(None), DSP0: _config(0x0011), DSP1: _config(0x0011)})
    checks, findings = _statuses(run, tree)
    assert "pci.iommu-p2p" not in findings
    assert "no ACS redirect on the ports of the PCIe switch they share (0000:42:00.0, 0000:42:01.0)" in checks["pci.iommu-p2p"]["reason"]


def _grub(tree, line="quiet"):
    tree.write("/etc/os-release", 'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n')
    tree.write("/etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="%s"\n' % line)
    tree.write("/usr/sbin/update-grub", "", 0o755)
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro %s\n" % line)


def test_one_port_with_redirect_is_kept_off_at_every_boot(tree, run, tmp_path):
    """One downstream port has no ACS capability: pci=disable_acs_redir= names one port, with
    no `;`, and is written to a GRUB drop-in. The tree's own fix proof (conftest) applies it and
    boots the copy in simulation; this test also checks that next boot by hand."""
    import shutil

    _host(tree)
    _root(tree)
    _grub(tree, "quiet iommu=pt")
    _switch(tree, {RP: _config(KERNEL_DEFAULT), USP: _config(None), DSP0: _config(KERNEL_DEFAULT), DSP1: _config(None)})
    _checks, findings = _statuses(run, tree)
    found = findings["pci.iommu-p2p"]
    assert found["severity"] == "high" and "0000:42:00.0 above 0000:43:00.0" in found["message"]
    assert _commands(found)[:3] == [
        "mkdir -p /etc/default/grub.d",
        "printf '%s\\n' 'GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX pci=disable_acs_redir=0000:42:00.0\"' "
        "| tee /etc/default/grub.d/90-aidoctor-pci.cfg >/dev/null",
        "update-grub",
    ]
    applied = tmp_path / "applied"
    shutil.copytree(str(tree.root), str(applied), symlinks=True)
    way = ("--only", "pci.iommu-p2p", "--choose", "pci.iommu-p2p=1", "--model-size", "1G")
    result = run("fix", "--root", applied, "--apply", "--yes", *way)
    assert result.code == 0, result.out + result.err
    after = run("--root", applied, "--next-boot", "--format", "json", "--model-size", "1G")
    checks = {c["rule"]: c for c in after.json["checks"]}
    assert checks["pci.iommu-p2p"]["status"] == "pass", checks["pci.iommu-p2p"]
    # Cleared by hand with setpci instead, the redirect comes back: the kernel sets it at boot.
    tree.write("/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0/0000:42:00.0/config", _config(0x0011))
    now = run("--root", tree, "--format", "json", "--model-size", "1G")
    assert "pci.iommu-p2p" not in now.findings()
    assert run("--root", tree, "--next-boot", "--format", "json", "--model-size", "1G").findings()["pci.iommu-p2p"] == "high"


def test_one_port_beside_other_pci_options_is_named_not_written(tree, run):
    _host(tree)
    _root(tree)
    _grub(tree, "quiet iommu=pt pci=noaer")
    _switch(tree, {RP: _config(KERNEL_DEFAULT), USP: _config(None), DSP0: _config(KERNEL_DEFAULT), DSP1: _config(None)})
    _checks, findings = _statuses(run, tree)
    lasting = findings["pci.iommu-p2p"]["remediation"][0]
    # A fix by parameter name would cut pci=noaer out of the line.
    assert not lasting["commands"] and "beside the pci= options already there" in lasting["summary"]
    assert "`pci=disable_acs_redir=0000:42:00.0`" in lasting["summary"] and "double quotes" not in lasting["summary"]


def test_iommu_in_a_container_is_judged_and_the_kernel_line_belongs_to_the_host(tree, run):
    _host(tree)
    _container(tree)
    _switch(tree, group_type="DMA-FQ")
    _checks, findings = _statuses(run, tree)
    found = findings["pci.iommu-p2p"]
    assert found["severity"] == "medium" and "not seen" in found["message"]
    assert found["remediation"][0]["on_host"] and "iommu=pt" in found["remediation"][0]["summary"]


def test_acs_redirect_in_a_container_is_fixed_on_the_host(tree, run):
    _host(tree)
    _container(tree)
    _root(tree)
    _switch(tree, {RP: _config(KERNEL_DEFAULT), USP: _config(None), DSP0: _config(KERNEL_DEFAULT), DSP1: _config(KERNEL_DEFAULT)})
    _checks, findings = _statuses(run, tree)
    lasting = findings["pci.iommu-p2p"]["remediation"][0]
    assert lasting["on_host"] and "pci=disable_acs_redir=0000:42:00.0;0000:42:01.0" in lasting["summary"]


def test_gpus_whose_place_in_the_tree_is_unknown_are_not_judged_for_acs(tree, run):
    """Bus entries that are folders, not links to /sys/devices: where the GPUs sit is not known."""
    _host(tree)
    for address, group in (("0000:43:00.0", 1), ("0000:44:00.0", 2)):
        folder = "/sys/bus/pci/devices/" + address
        tree.write(folder + "/vendor", "0x10de\n")
        tree.write(folder + "/device", "0x26b1\n")
        tree.write(folder + "/class", "0x030000\n")
        tree.link(folder + "/iommu_group", os.path.relpath("/sys/kernel/iommu_groups/%d" % group, folder))
        tree.write("/sys/kernel/iommu_groups/%d/type" % group, "DMA\n")
    _checks, findings = _statuses(run, tree)
    found = findings["pci.iommu-p2p"]
    assert found["severity"] == "medium"
    assert "ACS between them was not judged: where they sit in the PCI tree" in found["message"]
