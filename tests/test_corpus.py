"""Parsers and facts against real /proc, /sys and kernel config files that nobody here wrote.

The corpus (shared/corpus beside the repository; see its README.md) holds the prometheus/procfs
and node_exporter fixture trees, 37 distribution kernel configs and a few Debian modules. Every
expected value below was read from those files. Nothing is copied into the repository: tests
that need a layout the corpus lacks (/proc/config.gz, /boot/config-*, an NVMe entry in
/sys/block, real symbolic links) build it in tmp_path at run time from corpus bytes.

The corpus is never walked, and never read through a link by the OS: its trees hold links to
``/`` and link cycles. A checkout may keep those links as real symbolic links (upstream's form)
or as small regular files holding the link target (a copy made where links could not be
stored); :func:`link_target` reads either, and the tests that depend on link semantics build
real links in tmp_path so they test the same thing on both.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import pytest

from ai_doctor.facts import Facts, Unavailable
from ai_doctor.facts.cmdline import split_cmdline
from ai_doctor.facts.kconfig import PROC_CONFIG, KernelConfig, parse_kconfig
from ai_doctor.facts.memory import parse_choice, parse_meminfo
from ai_doctor.facts.mounts import parse_mountinfo
from ai_doctor.host import Host

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
PROCFS = CORPUS / "procfs" / "fixtures"
NODE = CORPUS / "node_exporter"
KCONFIG = CORPUS / "kconfig"

pytestmark = pytest.mark.skipif(
    not (PROCFS.is_dir() and NODE.is_dir() and KCONFIG.is_dir()),
    reason="the test corpus is not at %s" % CORPUS,
)

KIB = 1024
NVME_NS = "/sys/devices/pci0000:00/0000:00:02.1/0000:01:00.0/nvme/nvme0/nvme0n1"
BAT0 = "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00/device:00/PNP0C09:00/PNP0C0A:00/power_supply/BAT0"


# -- reading the corpus without following its links ------------------------------------------


def corpus_bytes(root: Path, path: str) -> bytes:
    """A corpus file's bytes; O_NOFOLLOW so a link out of the tree is refused, not followed."""
    fd = os.open(str(root / path.lstrip("/")), os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def corpus_text(root: Path, path: str) -> str:
    return corpus_bytes(root, path).decode("utf-8")


def link_target(root: Path, path: str) -> str:
    """Where a corpus link points: a real link's target, or a flattened link's content."""
    real = root / path.lstrip("/")
    if real.is_symlink():  # lstat: the link itself
        return os.readlink(str(real))
    return corpus_text(root, path)


class Mirror:
    """A host tree under tmp_path assembled from corpus files and real symbolic links."""

    def __init__(self, root: Path):
        self.root = root

    def _place(self, path: str) -> Path:
        where = self.root / path.lstrip("/")
        where.parent.mkdir(parents=True, exist_ok=True)
        return where

    def copy(self, source: Path, path: str, dest: str = None) -> None:
        self._place(dest or path).write_bytes(corpus_bytes(source, path))

    def link(self, source: Path, path: str, dest: str = None) -> str:
        """Recreate the corpus link at ``path`` as a real link; returns its target."""
        target = link_target(source, path)
        self.symlink(dest or path, target)
        return target

    def symlink(self, path: str, target: str) -> None:
        os.symlink(target, str(self._place(path)))

    def write(self, path: str, data) -> None:
        where = self._place(path)
        if isinstance(data, bytes):
            where.write_bytes(data)
        else:
            where.write_text(data)

    def host(self) -> Host:
        return Host(str(self.root))


@pytest.fixture
def mirror(tmp_path) -> Mirror:
    return Mirror(tmp_path / "root")


def facts_of(root: Path) -> Facts:
    return Facts(Host(str(root)))


# -- the corpus is what these tests think it is ----------------------------------------------


@pytest.mark.parametrize(
    "root, path, target",
    [
        (PROCFS, "/proc/26231/root", "/"),
        (PROCFS, "/proc/26231/cwd", "/usr/bin"),
        (PROCFS, "/proc/26231/exe", "/usr/bin/vim"),
        (PROCFS, "/proc/26232/root", "/does/not/exist"),
        (PROCFS, "/proc/26232/cwd", "/does/not/exist"),
        (PROCFS, "/proc/self", "26231"),
        (PROCFS, "/sys/devices/system/cpu/cpu0/cpufreq", "../cpufreq/policy0"),
        (PROCFS, "/sys/class/power_supply/BAT0", "../.." + BAT0[len("/sys") :]),
        (PROCFS, BAT0 + "/subsystem", "../../../../../../../../../class/power_supply"),
        (NODE, "/proc/self", "10"),
    ],
)
def test_corpus_links_point_where_the_readme_says(root, path, target):
    assert link_target(root, path) == target


# -- /proc/meminfo ---------------------------------------------------------------------------


def test_procfs_meminfo_fact():
    mem = facts_of(PROCFS).get("meminfo")
    assert mem.notes == ()
    assert len(mem.values) == 45  # 45 lines, every one understood
    assert mem.get("MemTotal") == 15666184 * KIB == 16042172416
    assert mem.get("MemFree") == 440324 * KIB
    assert mem.get("Cached") == 12007640 * KIB
    assert mem.get("Active(anon)") == 267256 * KIB
    assert mem.get("SwapTotal") == 0
    assert mem.get("Zswap") == 22414 * KIB
    assert mem.get("CommitLimit") == 7833092 * KIB
    assert mem.get("Committed_AS") == 530844 * KIB
    assert mem.get("VmallocTotal") == 34359738367 * KIB
    assert mem.get("AnonHugePages") == 12288 * KIB
    assert mem.get("Hugepagesize") == 2048 * KIB
    # Counts, not sizes.
    assert [mem.get(k) for k in ("HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp")] == [0, 0, 0, 0]
    assert mem.get("DirectMap2M") == 16039936 * KIB
    assert mem == parse_meminfo(corpus_text(PROCFS, "/proc/meminfo"))


def test_node_exporter_meminfo_fact():
    mem = facts_of(NODE).get("meminfo")
    assert mem.notes == ()
    assert len(mem.values) == 42
    assert mem.get("MemTotal") == 3742148 * KIB == 3831959552
    assert mem.get("MemFree") == 225472 * KIB
    assert mem.get("SwapCached") == 192504 * KIB
    assert mem.get("SwapTotal") == 4194300 * KIB
    assert mem.get("SwapFree") == 3155360 * KIB
    assert mem.get("Unevictable") == 32 * KIB
    # Committed beyond the limit, as the file says.
    assert mem.get("Committed_AS") == 7835436 * KIB > mem.get("CommitLimit") == 6065372 * KIB
    assert mem.get("AnonHugePages") == 0
    assert mem.get("HugePages_Total") == 0
    assert mem.get("Hugepagesize") == 2097152
    assert "Zswap" not in mem  # this kernel predates zswap accounting
    assert mem == parse_meminfo(corpus_text(NODE, "/proc/meminfo"))


def test_meminfo_parser_notes_a_malformed_fixture_instead_of_raising():
    # procfs ships an ASCII-art cow as a deliberately broken schedstat.
    text = corpus_text(PROCFS, "/proc/26233/schedstat")
    parsed = parse_meminfo(text)
    assert parsed.values == {}
    assert len(parsed.notes) == 8 == len([line for line in text.splitlines() if line.strip()])
    assert parsed.notes[1] == "line 2 not understood: '< this is a malformed schedstat file >'"


@pytest.mark.parametrize(
    "root, nr_hugepages",
    [(PROCFS, "0"), (NODE, "not present")],
)
def test_hugepages_fact_falls_back_to_meminfo(root, nr_hugepages):
    # Neither tree has /sys/kernel/mm/hugepages: the default pool comes from meminfo.
    pools = facts_of(root).get("hugepages")
    assert pools.supported is True
    assert pools.default_size == 2048 * KIB
    assert sorted(pools.pools) == [2048 * KIB]
    pool = pools.pool()
    assert (pool.total, pool.free, pool.reserved, pool.surplus, pool.source) == (0, 0, 0, 0, "/proc/meminfo")
    assert dict(pools.evidence) == {"/proc/sys/vm/nr_hugepages": nr_hugepages, "/proc/meminfo Hugepagesize": "2048 kB"}


def test_thp_fact_without_the_sysfs_directory():
    # procfs has no /sys/kernel/mm at all; node_exporter has /sys/kernel/mm/ksm only.
    procfs = facts_of(PROCFS).get("thp")
    assert isinstance(procfs, Unavailable)
    assert procfs.reason == "cannot read /sys/kernel/mm/transparent_hugepage/enabled: not present"
    node = facts_of(NODE).get("thp")
    assert isinstance(node, Unavailable)
    assert "no transparent huge pages" in node.reason


# -- sysctls and the command line (procfs only) ----------------------------------------------


def test_procfs_runtime_sysctls():
    sysctl = facts_of(PROCFS).get("sysctl")
    assert sysctl.values == {
        "vm.overcommit_memory": "0",
        "vm.overcommit_ratio": "50",
        "vm.overcommit_kbytes": "0",
        "vm.admin_reserve_kbytes": "8192",
        "vm.user_reserve_kbytes": "131072",
    }
    assert sysctl.int("vm.overcommit_ratio") == 50
    host = Host(str(PROCFS))
    assert host.read_text("/proc/sys/vm/swappiness").data.strip() == "60"
    assert host.read_text("/proc/sys/vm/dirty_ratio").data.strip() == "20"
    node = facts_of(NODE).get("sysctl")
    assert isinstance(node, Unavailable) and "/proc/sys/vm/overcommit_memory" in node.reason


def test_procfs_cmdline():
    facts = facts_of(PROCFS)
    cmdline = facts.get("cmdline")
    assert cmdline.raw == (
        "BOOT_IMAGE=/vmlinuz-5.11.0-22-generic root=UUID=456a0345-450d-4f7b-b7c9-43e3241d99ad ro quiet splash vt.handoff=7"
    )
    assert [p.text for p in cmdline.params] == [
        "BOOT_IMAGE=/vmlinuz-5.11.0-22-generic",
        "root=UUID=456a0345-450d-4f7b-b7c9-43e3241d99ad",
        "ro",
        "quiet",
        "splash",
        "vt.handoff=7",
    ]
    # Only the first '=' separates name and value.
    assert cmdline.last("root").value == "UUID=456a0345-450d-4f7b-b7c9-43e3241d99ad"
    assert cmdline.last("quiet").value is None
    assert cmdline.hugepage_requests(2 << 20) == []
    assert facts.get("hugepage_requests") == ()
    assert list(cmdline.params) == split_cmdline(corpus_text(PROCFS, "/proc/cmdline"))
    assert isinstance(facts_of(NODE).get("cmdline"), Unavailable)


# -- CPU frequency ---------------------------------------------------------------------------


def test_procfs_cpufreq_uses_the_policy_directory():
    freq = facts_of(PROCFS).get("cpufreq")
    assert freq.layout == "policy"
    assert freq.unread == ()
    assert [p.name for p in freq.policies] == ["policy0"]
    policy = freq.policies[0]
    assert policy.path == "/sys/devices/system/cpu/cpufreq/policy0"
    assert policy.governor_path == "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor"
    assert policy.cpus == (0,)  # affected_cpus: "0"
    assert policy.governor == "powersave"
    assert policy.driver == "intel_pstate"
    assert policy.available == ("performance", "powersave")
    # cpu1 has its own per-CPU directory (also powersave), but with a policy directory present
    # the per-CPU ones are not read: this fixture mixes the two layouts, real kernels do not.
    assert corpus_text(PROCFS, "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor").strip() == "powersave"
    assert all(1 not in p.cpus for p in freq.policies)


def test_node_exporter_cpufreq_falls_back_to_per_cpu_directories():
    freq = facts_of(NODE).get("cpufreq")
    assert freq.layout == "per-cpu"
    assert freq.unread == ()
    assert [p.name for p in freq.policies] == ["cpu0", "cpu1", "cpu2", "cpu3"]
    for number, policy in enumerate(freq.policies):
        assert policy.path == "/sys/devices/system/cpu/cpu%d/cpufreq" % number
        assert policy.governor == "powersave"
        assert policy.driver == "intel_pstate"
        assert policy.available == ("performance", "powersave")
        # Every related_cpus file in this fixture says "0"; a per-CPU directory speaks for its
        # own CPU, so the four CPUs are counted once each.
        assert corpus_text(NODE, policy.path + "/related_cpus").strip() == "0"
        assert policy.cpus == (number,)


# -- block devices ---------------------------------------------------------------------------


def _by_name(devices):
    return {d.name: d for d in devices}


@pytest.mark.parametrize(
    "root, disks",
    [
        (PROCFS, ["dm-0", "dm-1", "dm-2", "md0", "md1", "md10", "md4", "md5", "md6", "md7", "md8", "sda", "sdb", "sdc", "sdd", "sde"]),
        (NODE, ["dm-5", "dm-6", "dm-7", "md0", "md1", "md10", "md4", "md5", "md6", "sda", "sdi", "sdj", "sdk", "sdl", "sdm", "sdn"]),
    ],
)
def test_block_devices_of_the_corpus_trees(root, disks):
    devices = facts_of(root).get("block_devices")
    assert [d.name for d in devices] == disks  # 16 entries, sorted as listed
    named = _by_name(devices)
    sda = named["sda"]
    assert sda.scheduler == "bfq"
    assert sda.schedulers == ("mq-deadline", "kyber", "bfq", "none")
    assert sda.hidden is False
    assert sda.is_nvme is False
    assert sda.scheduler_path == "/sys/block/sda/queue/scheduler"
    for device in devices:
        # sys/block/* are plain directories in these fixtures, not links into /sys/devices.
        assert device.sysfs_path is None
        assert device.is_virtual == device.name.startswith(("dm-", "md"))
        if device.name != "sda":
            # dm/md are skipped as virtual; the other sd* have only device/state, no queue.
            assert (device.scheduler, device.schedulers) == (None, ())
    # The NVMe namespace exists only under /sys/devices here; /sys/block does not list it.
    assert not any(d.is_nvme for d in devices)


def test_corpus_nvme_namespace_queue_read_through_host():
    host = Host(str(PROCFS))
    got = host.read_text(NVME_NS + "/queue/scheduler")
    assert got.data == "[none] mq-deadline \n"
    assert parse_choice(got.data) == ("none", ("none", "mq-deadline"))
    assert host.read_text(NVME_NS + "/queue/rotational").data == "0\n"
    assert host.read_text(NVME_NS + "/queue/read_ahead_kb").data == "128\n"
    assert host.read_text(NVME_NS + "/hidden").data == "0\n"
    assert host.read_text(NVME_NS + "/dev").data == "259:0\n"
    names = host.listdir(NVME_NS).data
    assert ("nvme0n1p1", "nvme0n1p2", "nvme0n1p3") == tuple(n for n in names if n.startswith("nvme0n1p"))


def _nvme_files(mirror: Mirror, source: Path, where: str) -> None:
    for name in ("queue/scheduler", "queue/rotational", "queue/read_ahead_kb", "hidden"):
        mirror.copy(source, NVME_NS + "/" + name, where + "/" + name)


@pytest.mark.parametrize("source", [PROCFS, NODE])
def test_nvme_namespace_as_a_plain_sys_block_directory_is_known_by_name(mirror, source):
    # As in these fixtures, /sys/block/* as plain directories: only the name says NVMe.
    _nvme_files(mirror, source, "/sys/block/nvme0n1")
    mirror.copy(source, "/sys/block/sda/queue/scheduler")
    mirror.copy(source, "/sys/block/sda/queue/rotational")
    named = _by_name(Facts(mirror.host()).get("block_devices"))
    assert sorted(named) == ["nvme0n1", "sda"]
    nvme = named["nvme0n1"]
    assert nvme.sysfs_path is None
    assert nvme.is_nvme is True
    assert nvme.scheduler == "none"
    assert nvme.schedulers == ("none", "mq-deadline")
    assert nvme.hidden is False  # hidden: "0"
    assert named["sda"].is_nvme is False and named["sda"].scheduler == "bfq"


def test_nvme_namespace_as_a_sys_block_link_into_sys_devices(mirror):
    # The layout of a running kernel: /sys/block/nvme0n1 -> ../devices/…/nvme/nvme0/nvme0n1.
    _nvme_files(mirror, PROCFS, NVME_NS)
    mirror.symlink("/sys/block/nvme0n1", ".." + NVME_NS[len("/sys") :])
    host = mirror.host()
    assert host.readlink("/sys/block/nvme0n1").data == "../devices/pci0000:00/0000:00:02.1/0000:01:00.0/nvme/nvme0/nvme0n1"
    (nvme,) = Facts(host).get("block_devices")
    assert nvme.name == "nvme0n1"
    assert nvme.sysfs_path == NVME_NS
    assert nvme.is_nvme is True
    assert (nvme.scheduler, nvme.schedulers, nvme.hidden) == ("none", ("none", "mq-deadline"), False)


# -- mounts ----------------------------------------------------------------------------------


def test_parse_procfs_mountinfo():
    mounts, notes = parse_mountinfo(corpus_text(PROCFS, "/proc/26231/mountinfo"))
    assert notes == []
    assert [m.mountpoint for m in mounts] == [
        "/root",  # "1 1 0:5 /  /root …": a doubled space in the fixture, split as whitespace
        "/sys",
        "/proc",
        "/",
        "/mnt/nfs/test",
        "/mnt/nfs/test",
        "/mnt/nfs/test",
        "/var/lib/containers/storage/overlay",
    ]
    first = mounts[0]
    assert (first.root, first.fstype, first.source) == ("/", "rootfs", "rootfs")
    assert first.options == frozenset({"rw", "nosuid"})
    root = mounts[3]
    assert (root.fstype, root.source) == ("ext4", "/dev/sda1")
    assert root.options == frozenset({"rw", "relatime"})
    assert root.super_options == frozenset({"rw", "errors=remount-ro", "data=ordered"})
    assert mounts[2].options == frozenset({"rw", "nosuid", "nodev", "noexec", "relatime"})
    assert [m.fstype for m in mounts[4:7]] == ["nfs4", "nfs4", "nfs"]
    assert "vers=4.0" in mounts[4].super_options and "clientaddr=192.168.1.5" in mounts[4].super_options
    assert "vers=3" in mounts[6].super_options and "proto=udp" in mounts[6].super_options
    assert mounts[4].source == "192.168.1.1:/srv/test"
    # No optional fields before the separator on this line.
    storage = mounts[7]
    assert storage.root == "/var/lib/containers/storage/overlay"
    assert (storage.fstype, storage.source) == ("xfs", "/dev/mapper/rhel-root")
    assert "logbsize=32k" in storage.super_options and "seclabel" in storage.super_options
    assert not any(m.read_only for m in mounts)


def test_parse_node_exporter_mountinfo_of_pid_1():
    text = corpus_text(NODE, "/proc/1/mountinfo")
    mounts, notes = parse_mountinfo(text)
    assert notes == []
    assert len(mounts) == 32 == len(text.splitlines())
    by_point = {}
    for mount in mounts:
        by_point.setdefault(mount.mountpoint, []).append(mount)
    root = by_point["/"][0]
    assert (root.fstype, root.source) == ("ext4", "/dev/dm-2")
    assert root.super_options == frozenset({"errors=remount-ro", "data=ordered"})
    cgroup_tmpfs = by_point["/sys/fs/cgroup"][0]
    assert cgroup_tmpfs.read_only and cgroup_tmpfs.fstype == "tmpfs"
    assert by_point["/dev/hugepages"][0].fstype == "hugetlbfs"
    assert by_point["/sys/fs/cgroup/cpu,cpuacct"][0].super_options == frozenset({"rw", "cpu", "cpuacct"})
    # Read by position: this fixture line has the source and type the other way round
    # ("- systemd-1 autofs"), and the parser does not guess.
    assert [(m.fstype, m.source) for m in by_point["/proc/sys/fs/binfmt_misc"]] == [
        ("systemd-1", "autofs"),
        ("binfmt_misc", "binfmt_misc"),
    ]
    assert by_point["/run/user/1000/gvfs"][0].fstype == "fuse.gvfsd-fuse"
    # Octal escapes in mount points: \040 is a space, \011 a tab.
    vsphere = [m.mountpoint for m in mounts if "vsanDatastore" in m.mountpoint]
    prefix = "/var/lib/kubelet/plugins/kubernetes.io/vsphere-volume/mounts/[vsanDatastore]"
    rest = "bafb9e5a-8856-7e6c-699c-801844e77a4a/kubernetes-dynamic-pvc-3eba5bba-48a3-11e8-89ab-005056b92113.vmdk"
    assert vsphere == [prefix + " " + rest, prefix + "\t" + rest]
    cgroups = [m for m in mounts if m.fstype == "cgroup"]
    assert len(cgroups) == 8
    assert not any("memory" in m.super_options for m in cgroups)


def test_parse_node_exporter_mountinfo_of_pid_10():
    mounts, notes = parse_mountinfo(corpus_text(NODE, "/proc/10/mountinfo"))
    assert notes == []
    assert [(m.mountpoint, m.fstype) for m in mounts] == [
        ("/root", "rootfs"),
        ("/sys", "sysfs"),
        ("/proc", "proc"),
        ("/", "ext4"),
        ("/mnt/nfs/test", "nfs4"),
        ("/mnt/nfs/test-dupe", "nfs4"),
        ("/mnt/nfs/test-dupe", "nfs"),
    ]


def test_parse_mountinfo_notes_mountstats_lines():
    # /proc/PID/mountstats is another format: every line is noted, none raises.
    text = corpus_text(PROCFS, "/proc/26231/mountstats")
    mounts, notes = parse_mountinfo(text)
    assert mounts == []
    assert len(notes) == len([line for line in text.splitlines() if line.split()]) == 19
    assert notes[0] == "line 1 not understood: 'device rootfs mounted on / with fstype rootfs'"


def test_mounts_fact_through_proc_self_link(mirror):
    target = mirror.link(PROCFS, "/proc/self")
    assert target == "26231"
    mirror.copy(PROCFS, "/proc/26231/mountinfo")
    mounts = Facts(mirror.host()).get("mounts")
    assert mounts.source == "/proc/self/mountinfo"
    assert mounts.notes == ()
    assert len(mounts.mounts) == 8
    assert mounts.at("/").source == "/dev/sda1"
    # Three mounts stacked at one point: the last one is visible.
    assert mounts.at("/mnt/nfs/test").fstype == "nfs"
    assert mounts.covering("/mnt/nfs/test/data/model.bin").fstype == "nfs"
    assert mounts.covering("/proc/sys/vm/nr_hugepages").mountpoint == "/proc"
    assert mounts.covering("/opt/models").mountpoint == "/"


def test_mounts_fact_on_the_corpus_tree_itself():
    # Whether /proc/self reaches proc/26231 depends on the checkout keeping it as a link.
    mounts = facts_of(PROCFS).get("mounts")
    if (PROCFS / "proc/self").is_symlink():
        assert mounts.source == "/proc/self/mountinfo" and len(mounts.mounts) == 8
    else:
        assert isinstance(mounts, Unavailable)
        assert mounts.reason == "cannot read /proc/self/mountinfo: not present"


def _node_exporter_self(mirror: Mirror) -> None:
    assert mirror.link(NODE, "/proc/self") == "10"
    mirror.copy(NODE, "/proc/10/mountinfo")
    mirror.copy(NODE, "/proc/1/mountinfo")


def test_node_exporter_pid_10_is_not_a_container(mirror):
    _node_exporter_self(mirror)
    facts = Facts(mirror.host())
    assert len(facts.get("mounts").mounts) == 7
    container = facts.get("container")
    assert container.detected is False
    assert container.runtime is None
    assert container.signals == ()


def test_cgroup_v1_memory_controller_not_mounted(mirror):
    # node_exporter's PID 1 mounts eight v1 hierarchies, none with the memory controller.
    mirror.copy(NODE, "/proc/1/mountinfo", "/proc/self/mountinfo")
    mirror.write("/proc/self/cgroup", "4:memory:/user.slice\n1:name=systemd:/user.slice\n")
    got = Facts(mirror.host()).get("cgroup_memory")
    assert isinstance(got, Unavailable)
    assert got.reason == "the memory controller (cgroup v1, /user.slice) is not mounted"


@pytest.mark.parametrize("source, path", [(PROCFS, "/proc/26231/mountinfo"), (NODE, "/proc/1/mountinfo")])
def test_a_podman_host_is_not_a_container(mirror, source, path):
    # Both files are a host's mount table: / is ext4 on a disk, sysfs and proc at the top.
    mirror.copy(source, path, "/proc/self/mountinfo")
    facts = Facts(mirror.host())
    assert facts.get("mounts").at("/").fstype == "ext4"
    container = facts.get("container")
    assert container.detected is False, container.signals


# -- links out of the tree -------------------------------------------------------------------


def test_links_out_of_the_procfs_tree_never_reach_this_machine():
    host = Host(str(PROCFS))
    # 26231/root -> /: the tree's own root at most, never this machine's /etc/hostname.
    assert host.read_text("/proc/26231/root/etc/hostname").status == "missing"
    assert host.read_text("/proc/26231/root/../../etc/hostname").status == "missing"
    assert host.listdir("/proc/26231/cwd").status == "missing"  # -> /usr/bin
    assert host.stat("/proc/26232/root/bin/sh")[0].status == "missing"  # -> /does/not/exist
    facts = Facts(host)
    assert isinstance(facts.get("hostname"), Unavailable)
    assert isinstance(facts.get("os_release"), Unavailable)
    assert isinstance(facts.get("release"), Unavailable)
    assert facts.get("tools") == {}
    assert facts.get("identity").euid is None

    exe = host.read_text("/proc/26231/exe")  # -> /usr/bin/vim
    through_root = host.read_text("/proc/26231/root/proc/meminfo")
    listing = host.listdir("/proc/26231/root")
    if (PROCFS / "proc/26231/exe").is_symlink():
        assert exe.status == "missing"
        assert host.readlink("/proc/26231/exe").data == "/usr/bin/vim"
        assert through_root.data == corpus_text(PROCFS, "/proc/meminfo")  # re-rooted at the tree
        assert listing.data == ("proc", "sys")
    else:
        # A flattened link is a file holding the target: its own bytes, nothing behind them.
        assert exe.ok and exe.data == "/usr/bin/vim"
        assert host.readlink("/proc/26231/exe").data is None
        assert through_root.status == "missing"
        assert listing.status == "missing"


def _procfs_process_links(mirror: Mirror) -> None:
    for name in ("root", "cwd", "exe"):
        mirror.link(PROCFS, "/proc/26231/" + name)
    for name in ("root", "cwd"):
        mirror.link(PROCFS, "/proc/26232/" + name)
    mirror.link(PROCFS, "/proc/self")
    mirror.copy(PROCFS, "/proc/26231/mountinfo")
    mirror.copy(PROCFS, "/proc/meminfo")


def test_real_links_out_of_the_tree_are_re_rooted(mirror):
    _procfs_process_links(mirror)
    host = mirror.host()
    assert host.readlink("/proc/26231/root").data == "/"
    assert host.readlink("/proc/26231/exe").data == "/usr/bin/vim"
    assert host.readlink("/proc/meminfo").data is None
    # /etc/hostname and /usr/bin exist on the machine running this, not in the tree.
    assert host.read_text("/proc/26231/root/etc/hostname").status == "missing"
    assert host.read_text("/proc/self/root/etc/hostname").status == "missing"
    assert host.read_text("/proc/26231/exe").status == "missing"
    assert host.stat("/proc/26231/exe")[0].status == "missing"
    assert host.listdir("/proc/26231/cwd").status == "missing"
    assert host.listdir("/proc/26232/root").status == "missing"
    # Inside the tree they resolve as chroot would: / is the tree, .. stops at it.
    meminfo = corpus_text(PROCFS, "/proc/meminfo")
    assert host.read_text("/proc/26231/root/proc/meminfo").data == meminfo
    assert host.read_text("/proc/self/root/proc/self/root/proc/meminfo").data == meminfo
    assert host.read_text("/proc/26231/root/../../../../proc/meminfo").data == meminfo
    assert host.listdir("/proc/26231/root").data == ("proc",)
    assert host.stat("/proc/26231/root")[1].is_dir
    assert host.read_text("/proc/self/mountinfo").data == corpus_text(PROCFS, "/proc/26231/mountinfo")
    facts = Facts(host)
    assert isinstance(facts.get("hostname"), Unavailable)
    assert facts.get("tools") == {}
    assert facts.get("meminfo").get("MemTotal") == 15666184 * KIB


def test_a_file_placed_in_the_tree_is_what_root_link_shows(mirror):
    _procfs_process_links(mirror)
    mirror.write("/etc/hostname", "corpus-mirror\n")
    host = mirror.host()
    assert host.read_text("/proc/26231/root/etc/hostname").data == "corpus-mirror\n"
    assert Facts(host).get("hostname") == "corpus-mirror"


def _battery_links(mirror: Mirror) -> None:
    mirror.link(PROCFS, "/sys/class/power_supply/BAT0")
    mirror.link(PROCFS, BAT0 + "/subsystem")
    for name in ("type", "status", "capacity"):
        mirror.copy(PROCFS, BAT0 + "/" + name)


def test_sysfs_link_cycle_resolves_inside_the_tree(mirror):
    _battery_links(mirror)
    host = mirror.host()
    assert host.read_text("/sys/class/power_supply/BAT0/type").data == "Battery\n"
    assert host.read_text("/sys/class/power_supply/BAT0/subsystem/BAT0/status").data == "Discharging\n"
    assert host.listdir("/sys/class/power_supply/BAT0/subsystem").data == ("BAT0",)


def test_sysfs_link_cycle_stops_after_forty_links(mirror):
    _battery_links(mirror)
    host = mirror.host()
    # One link for class/…/BAT0, two for each subsystem/BAT0 round.
    within = "/sys/class/power_supply/BAT0/" + "subsystem/BAT0/" * 19 + "capacity"  # 39 links
    assert host.read_text(within).data == "98\n"
    beyond = "/sys/class/power_supply/BAT0/" + "subsystem/BAT0/" * 20 + "capacity"  # 41 links
    got = host.read_text(beyond)
    assert got.status == "error"
    assert got.detail.startswith("ELOOP")


# -- kernel configs --------------------------------------------------------------------------

# file: (HUGETLBFS, THP default or "n", IKCONFIG, HZ, NUMA, default cpufreq governor), as in
# the corpus README's table and checked against the files.
KCONFIGS = {
    "Alma_Linux_10_aarch64.config": ("y", "always", "n", "100", "y", "performance"),
    "Alma_Linux_10_x86_64.config": ("y", "always", "n", "1000", "y", "performance"),
    "Android_15_(6.6)_aarch64.config": ("n", "madvise", "y", "250", "n", "schedutil"),
    "Arch_hardened_x86_64.config": ("y", "madvise", "y", "1000", "y", "schedutil"),
    "Arch_x86_64.config": ("y", "always", "y", "1000", "y", "schedutil"),
    "Azure_Linux_x86_64.config": ("y", "madvise", "y", "250", "y", "performance"),
    "CentOS_10_Stream_aarch64.config": ("y", "always", "n", "100", "y", "performance"),
    "CentOS_10_Stream_x86_64.config": ("y", "always", "n", "1000", "y", "performance"),
    "Debian_10_Buster_aarch64.config": ("y", "always", "n", "250", "y", "performance"),
    "Debian_10_Buster_x86_64.config": ("y", "always", "n", "250", "y", "ondemand"),
    "Debian_13_Trixie_aarch64.config": ("y", "always", "n", "250", "y", "schedutil"),
    "Debian_13_Trixie_x86_64.config": ("y", "always", "n", "250", "y", "schedutil"),
    "Fedora_42_Updates_aarch64.config": ("y", "madvise", "n", "1000", "y", "schedutil"),
    "Fedora_42_Updates_x86_64.config": ("y", "madvise", "n", "1000", "y", "schedutil"),
    "Fedora_Asahi_Remix_Rawhide_aarch64.config": ("y", "madvise", "n", "1000", "y", "schedutil"),
    "Fedora_Rawhide_x86_64.config": ("y", "madvise", "n", "1000", "y", "schedutil"),
    "OpenSUSE_aarch64.config": ("y", "always", "y", "250", "y", "ondemand"),
    "OpenSUSE_riscv64.config": ("y", "always", "y", "250", "y", "ondemand"),
    "OpenSUSE_x86_64.config": ("y", "always", "y", "1000", "y", "schedutil"),
    "Oracle_Linux_10_(UEK-NEXT)_aarch64.config": ("y", "always", "n", "250", "y", "performance"),
    "Oracle_Linux_10_(UEK-NEXT)_x86_64.config": ("y", "always", "n", "1000", "y", "performance"),
    "Ubuntu_20.04_LTS_Focal_aarch64.config": ("y", "madvise", "n", "250", "y", "performance"),
    "Ubuntu_20.04_LTS_Focal_x86_64.config": ("y", "madvise", "n", "250", "y", "performance"),
    "Ubuntu_24.04_LTS_Noble_riscv64.config": ("y", "madvise", "n", "250", "y", "performance"),
    "Ubuntu_25.04_Oracular_aarch64.config": ("y", "madvise", "n", "1000", "y", "ondemand"),
    "Ubuntu_25.04_Plucky_x86_64.config": ("y", "madvise", "n", "1000", "y", "schedutil"),
    "android_pixel-3a.config": ("n", "n", "y", "300", "n", "performance"),
    "android_pixel-7.config": ("n", "madvise", "y", "250", "n", "schedutil"),
    "android_samsung_s23.config": ("n", "madvise", "y", "250", "n", "schedutil"),
    "debian-6.1.192-2-amd64.config": ("y", "always", "n", "250", "y", "schedutil"),
    "debian-6.1.192-2-arm64.config": ("y", "always", "n", "250", "y", "schedutil"),
    "debian-6.12.118-1-amd64.config": ("y", "always", "n", "250", "y", "schedutil"),
    "example_config.gz": ("y", "n", "y", "1000", "y", "userspace"),
    "nixpkgs-linux_hardened.config": ("y", "madvise", "y", "1000", "y", "schedutil"),
    "nixpkgs-linux_latest.config": ("y", "madvise", "y", "1000", "y", "schedutil"),
    "nixpkgs-linux_lts.config": ("y", "madvise", "y", "1000", "y", "schedutil"),
    "rhel-8.0.config": ("y", "always", "n", "1000", "y", "performance"),
}

# Config syntax, line by line: CONFIG_X=value (one pair of quotes stripped) or the unset form.
_OPTION = re.compile(r'^(?:(CONFIG_[A-Za-z0-9_]+)=(?:"(.*)"|(.*))|# (CONFIG_[A-Za-z0-9_]+) is not set)$', re.M)


def kconfig_text(name: str) -> str:
    data = corpus_bytes(KCONFIG, name)
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8")


def test_the_kconfig_folder_holds_the_expected_files():
    assert sorted(os.listdir(str(KCONFIG))) == sorted(KCONFIGS)


@pytest.mark.parametrize("name", sorted(KCONFIGS))
def test_kconfig_file(name):
    hugetlbfs, thp, ikconfig, hz, numa, governor = KCONFIGS[name]
    text = kconfig_text(name)
    options, notes = parse_kconfig(text)
    # Every line is config syntax (assignment, "is not set", comment or blank): no notes, and
    # exactly the options a line-by-line reading finds.
    assert notes == []
    expected = {}
    for match in _OPTION.finditer(text):
        name, quoted, plain, unset = match.groups()
        if unset:
            expected[unset] = "n"
        else:
            expected[name] = quoted if quoted is not None else plain
    assert options == expected
    assert len(options) > 3000

    config = KernelConfig(text, "/boot/config-test", None, ())
    assert config.get("HUGETLBFS") == hugetlbfs  # the Android ones: "# CONFIG_HUGETLBFS is not set"
    assert config.enabled("HUGETLBFS") is (hugetlbfs == "y")
    modes = [m for m in ("always", "madvise", "never") if config.get("TRANSPARENT_HUGEPAGE_" + m.upper()) == "y"]
    if thp == "n":
        assert config.get("TRANSPARENT_HUGEPAGE") == "n" and config.enabled("TRANSPARENT_HUGEPAGE") is False
        assert modes == []
    else:
        assert config.enabled("TRANSPARENT_HUGEPAGE") is True
        assert modes == [thp]
    assert config.get("CONFIG_IKCONFIG") == ikconfig == config.get("IKCONFIG")
    assert config.get("IKCONFIG_PROC") == ("y" if ikconfig == "y" else None)
    assert config.get("HZ") == hz
    assert config.get("NUMA") == numa
    governors = [k for k, v in options.items() if k.startswith("CONFIG_CPU_FREQ_DEFAULT_GOV_") and v == "y"]
    assert governors == ["CONFIG_CPU_FREQ_DEFAULT_GOV_" + governor.upper()]
    assert config.get("AIDOCTOR_NOT_AN_OPTION") is None and config.enabled("AIDOCTOR_NOT_AN_OPTION") is None


def test_kconfig_string_values():
    android, _ = parse_kconfig(kconfig_text("Android_15_(6.6)_aarch64.config"))
    assert android["CONFIG_CMDLINE"] == (
        "console=ttynull stack_depot_disable=on cgroup_disable=pressure kasan.stacktrace=off"
        " kvm-arm.mode=protected bootconfig ioremap_guard"
    )
    assert android["CONFIG_LOCALVERSION"] == "-4k"
    arch, _ = parse_kconfig(kconfig_text("Arch_hardened_x86_64.config"))
    assert arch["CONFIG_CMDLINE"] == "pti=on page_alloc.shuffle=1"  # '=' inside a value
    assert arch["CONFIG_DEFAULT_HOSTNAME"] == "archlinux"
    debian, _ = parse_kconfig(kconfig_text("debian-6.1.192-2-amd64.config"))
    assert debian["CONFIG_LOCALVERSION"] == ""
    assert debian["CONFIG_DEFAULT_HOSTNAME"] == "(none)"
    assert debian["CONFIG_MODULE_COMPRESS_NONE"] == "y"
    example, _ = parse_kconfig(kconfig_text("example_config.gz"))
    assert example["CONFIG_LOCALVERSION"] == ""
    assert example["CONFIG_CC_VERSION_TEXT"] == "gcc (GCC) 12.2.1 20221121 (Red Hat 12.2.1-4)"


def test_kernel_config_fact_reads_proc_config_gz(mirror):
    mirror.copy(KCONFIG, "example_config.gz", PROC_CONFIG)
    config = Facts(mirror.host()).get("kernel_config")
    assert isinstance(config, KernelConfig)
    assert config.source == "/proc/config.gz"
    assert config.release is None  # no /proc/sys/kernel/osrelease in the tree
    assert config.tried == (("/proc/config.gz", "read"),)
    assert config.text == kconfig_text("example_config.gz")
    assert config.notes == []
    assert len(config.options) == 3876
    assert config.get("IKCONFIG_PROC") == "y"
    assert config.enabled("HUGETLBFS") is True
    assert config.get("HUGETLB_PAGE") == "y"
    assert config.enabled("TRANSPARENT_HUGEPAGE") is False
    assert config.get("CPU_FREQ_DEFAULT_GOV_USERSPACE") == "y"
    assert config.get("CC_VERSION_TEXT") == "gcc (GCC) 12.2.1 20221121 (Red Hat 12.2.1-4)"


def test_kernel_config_link_to_this_machine_is_not_followed(mirror):
    # An absolute link to the corpus file on this machine re-roots into the tree: not found.
    mirror.symlink(PROC_CONFIG, str(KCONFIG / "example_config.gz"))
    got = Facts(mirror.host()).get("kernel_config")
    assert isinstance(got, Unavailable)
    assert got.tried == (("/proc/config.gz", "not present"),)
    assert "kernel release is unknown" in got.reason


def test_kernel_config_fact_reads_boot_config_for_the_release(mirror):
    mirror.write("/proc/sys/kernel/osrelease", "6.1.0-56-amd64\n")
    mirror.copy(KCONFIG, "debian-6.1.192-2-amd64.config", "/boot/config-6.1.0-56-amd64")
    facts = Facts(mirror.host())
    config = facts.get("kernel_config")
    assert config.source == "/boot/config-6.1.0-56-amd64"
    assert config.release == "6.1.0-56-amd64"
    assert config.tried == (("/proc/config.gz", "not present"), ("/boot/config-6.1.0-56-amd64", "read"))
    assert config.get("IKCONFIG") == "n"  # Debian: no /proc/config.gz, no configs.ko
    assert config.get("TRANSPARENT_HUGEPAGE_ALWAYS") == "y"
    assert config.get("CPU_FREQ_DEFAULT_GOV_SCHEDUTIL") == "y"
    assert config.get("HZ") == "250"
    assert facts.get("configs_module") is None


def test_kernel_config_fact_reads_lib_modules_config(mirror):
    release = "6.12.118+deb13-amd64"
    mirror.write("/proc/sys/kernel/osrelease", release + "\n")
    mirror.copy(KCONFIG, "debian-6.12.118-1-amd64.config", "/lib/modules/%s/config" % release)
    for module in ("kernel/block/kyber-iosched.ko.xz", "kernel/drivers/cpufreq/cpufreq_powersave.ko.xz"):
        mirror.copy(CORPUS / "modules", "%s/%s" % (release, module), "/lib/modules/%s/%s" % (release, module))
    facts = Facts(mirror.host())
    config = facts.get("kernel_config")
    assert config.source == "/lib/modules/%s/config" % release
    assert [outcome for _path, outcome in config.tried] == ["not present", "not present", "not present", "read"]
    assert config.get("MODULE_COMPRESS_XZ") == "y"
    assert config.get("IKCONFIG") == "n"
    # The real modules are there, but Debian builds no configs.ko.
    assert facts.get("configs_module") is None
    assert Host(str(mirror.root)).read_bytes("/lib/modules/%s/kernel/block/kyber-iosched.ko.xz" % release).data[:6] == b"\xfd7zXZ\x00"


def test_a_truncated_proc_config_gz_is_not_taken_as_the_config(mirror):
    mirror.write(PROC_CONFIG, corpus_bytes(KCONFIG, "example_config.gz")[:12000])
    config = Facts(mirror.host()).get("kernel_config")
    # The complete file sets CONFIG_HUGETLBFS=y; the first 12000 bytes stop long before it.
    assert not (config and config.source == PROC_CONFIG)
    assert (PROC_CONFIG, "truncated gzip data") in config.tried


# -- real Debian modules: .modinfo and the module index --------------------------------------

MODULES = CORPUS / "modules"
REAL_MODULES = [
    ("6.1.0-56-amd64", "kernel/block/kyber-iosched.ko"),
    ("6.1.0-56-amd64", "kernel/drivers/cpufreq/acpi-cpufreq.ko"),
    ("6.1.0-56-arm64", "kernel/drivers/cpufreq/cpufreq_powersave.ko"),
    ("6.12.118+deb13-amd64", "kernel/block/kyber-iosched.ko.xz"),
    ("6.12.118+deb13-amd64", "kernel/drivers/cpufreq/cpufreq_powersave.ko.xz"),
]


@pytest.mark.parametrize("release, path", REAL_MODULES)
def test_modinfo_of_real_debian_modules(release, path):
    from ai_doctor import elf

    with open(str(MODULES / release / path), "rb") as stream:
        fields = elf.parse_modinfo(elf.modinfo(stream))
    # Each module was built for the release its folder names (signed Debian builds).
    assert fields["vermagic"][0].split()[0] == release
    assert fields["name"] == [elf.module_name(path.rsplit("/", 1)[1])]
    assert fields["intree"] == ["Y"] and fields["license"] == ["GPL"]


def test_module_index_reads_real_modules_through_modules_dep(mirror):
    release = "6.12.118+deb13-amd64"
    mirror.write("/proc/sys/kernel/osrelease", release + "\n")
    for _release, path in [m for m in REAL_MODULES if m[0] == release]:
        mirror.copy(MODULES, "%s/%s" % (release, path), "/lib/modules/%s/%s" % (release, path))
    # depmod's format; an out-of-tree GPU module the index names but the folder lacks.
    mirror.write(
        "/lib/modules/%s/modules.dep" % release,
        "kernel/block/kyber-iosched.ko.xz:\nkernel/drivers/cpufreq/cpufreq_powersave.ko.xz:\nupdates/dkms/nvidia.ko.xz:\n",
    )
    from ai_doctor.facts.modules import modules_for

    assert Facts(mirror.host()).get("gpu_modules")[0].found == {}  # a stale index entry: the file is gone
    modules = modules_for(mirror.host(), release, names=("cpufreq_powersave", "nvidia"), read=("cpufreq_powersave",))
    assert list(modules.found) == ["cpufreq_powersave"]
    assert modules.found["cpufreq_powersave"].vermagic_release == release
    assert modules.reference.path == "/lib/modules/%s/kernel/block/kyber-iosched.ko.xz" % release
    assert modules.reference.field("vermagic").split()[0] == release


@pytest.mark.parametrize("name", sorted(p.name for p in KCONFIG.glob("*.config")) if KCONFIG.is_dir() else [])
def test_every_distribution_config_names_its_kernel(name):
    config = KernelConfig(corpus_bytes(KCONFIG, name).decode("utf-8", "replace"), "/boot/config-x", None, ())
    described = config.described
    assert described and described[0].isdigit()
    # A config always describes its own release, whatever the header's style.
    from ai_doctor.facts.kconfig import describes

    assert describes(described, described)


@pytest.mark.parametrize("name", ["debian-6.1.192-2-amd64.config", "Fedora_42_Updates_x86_64.config", "rhel-8.0.config"])
def test_one_option_looked_up_agrees_with_the_whole_parse(name):
    text = corpus_bytes(KCONFIG, name).decode("utf-8", "replace")
    options, _notes = parse_kconfig(text)
    for key in list(options)[::37] + ["CONFIG_NOT_AN_OPTION", "CONFIG_LOCALVERSION"]:
        assert KernelConfig(text, "/boot/config-x", None, ()).get(key) == options.get(key), key
