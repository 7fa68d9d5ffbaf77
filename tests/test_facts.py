"""Fact parsers on odd input, and facts read from small trees."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_doctor.facts import Facts, Unavailable
from ai_doctor.facts.cgroup import parse_proc_cgroup
from ai_doctor.facts.cmdline import Cmdline, memparse, split_cmdline
from ai_doctor.facts.kconfig import parse_kconfig
from ai_doctor.facts.memory import parse_choice, parse_meminfo
from ai_doctor.facts.mounts import parse_mountinfo, parse_mounts
from ai_doctor.facts.sysctl import key_path, normal_key, parse_sysctl_file
from ai_doctor.facts.system import kernel_version, parse_os_release
from ai_doctor.host import Host

GiB = 1 << 30


def facts_for(tree, request=None):
    return Facts(Host(str(tree)), request)


# -- meminfo -------------------------------------------------------------------------------


def test_meminfo_units_and_counts():
    info = parse_meminfo("MemTotal:       16384 kB\nHugePages_Total:      4\nHugepagesize:       2048 kB\n")
    assert info.get("MemTotal") == 16384 * 1024
    assert info.get("HugePages_Total") == 4
    assert info.get("Hugepagesize") == 2 << 20
    assert not info.notes


def test_meminfo_odd_lines_are_noted_not_fatal():
    info = parse_meminfo("MemTotal: 10 kB\ngarbage\nMemFree: lots kB\nWeird: 5 MB\n\nMemAvailable:\t8 kB\n")
    assert info.values == {"MemTotal": 10240, "MemAvailable": 8192}
    assert len(info.notes) == 3


@given(st.text())
def test_meminfo_never_raises(text):
    parse_meminfo(text)


def test_meminfo_fact_needs_memtotal(tree):
    tree.write("/proc/meminfo", "MemFree: 1 kB\n")
    value = facts_for(tree).get("meminfo")
    assert isinstance(value, Unavailable) and "MemTotal" in value.reason


def test_parse_choice():
    assert parse_choice("always [madvise] never\n") == ("madvise", ("always", "madvise", "never"))
    assert parse_choice("none\n") == ("none", ("none",))
    assert parse_choice("[none] mq-deadline kyber") == ("none", ("none", "mq-deadline", "kyber"))
    assert parse_choice("a b c")[0] is None


# -- sysctl --------------------------------------------------------------------------------


def test_sysctl_file_syntax():
    text = "# comment\n; also a comment\n\nvm.a = 1\n  vm.b=2  \n-vm.c = 3\nvm/d/e.f = 4\nnot an assignment\nvm.g =\n"
    items, notes = parse_sysctl_file(text, "/etc/sysctl.d/x.conf")
    assert [(i.key, i.value, i.line, i.ignore_failure) for i in items] == [
        ("vm.a", "1", 4, False),
        ("vm.b", "2", 5, False),
        ("vm.c", "3", 6, True),
        ("vm.d.e/f", "4", 7, False),
        ("vm.g", "", 9, False),
    ]
    assert len(notes) == 1 and ":8:" in notes[0]


def test_keys_swap_separators_like_systemd():
    assert normal_key("net/ipv4/conf/eth0.100/forwarding") == "net.ipv4.conf.eth0/100.forwarding"
    assert normal_key("vm.nr_hugepages") == "vm.nr_hugepages"
    assert key_path("net.ipv4.conf.eth0/100.forwarding") == "/proc/sys/net/ipv4/conf/eth0.100/forwarding"
    assert key_path("vm.nr_hugepages") == "/proc/sys/vm/nr_hugepages"


def test_sysctl_config_merges_as_systemd_does(tree):
    tree.write("/usr/lib/systemd/systemd-sysctl", "", 0o755)
    tree.write("/usr/lib/sysctl.d/10-vendor.conf", "vm.swappiness = 60\nvm.a = vendor\n")
    tree.write("/usr/lib/sysctl.d/50-masked.conf", "vm.masked = 1\n")
    tree.write("/usr/lib/sysctl.d/60-hidden.conf", "vm.hidden = vendor\n")
    tree.write("/run/sysctl.d/60-hidden.conf", "vm.hidden = run\n")
    tree.write("/etc/sysctl.d/60-hidden.conf", "vm.hidden = etc\n")
    tree.link("/etc/sysctl.d/50-masked.conf", "/dev/null")
    tree.write("/etc/sysctl.d/20-site.conf", "vm.swappiness = 10\nvm.a = site\n")
    tree.write("/etc/sysctl.d/README", "vm.ignored = 1\n")
    tree.write("/etc/sysctl.conf", "vm.swappiness = 1\n")
    tree.link("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")
    config = facts_for(tree).get("sysctl_config")
    assert config.applier == "systemd-sysctl"
    assert config.files == (
        "/usr/lib/sysctl.d/10-vendor.conf",
        "/etc/sysctl.d/20-site.conf",
        "/etc/sysctl.d/60-hidden.conf",
        "/etc/sysctl.conf",
    )
    assert config.effective("vm.swappiness").where == "/etc/sysctl.conf:1"
    assert config.effective("vm.a").value == "site"
    assert config.effective("vm.hidden").value == "etc"
    assert config.effective("vm.masked") is None
    assert config.effective("vm.ignored") is None
    assert ("/etc/sysctl.d/50-masked.conf", "masked: a link to /dev/null") in config.skipped
    assert [i.value for i in config.all("vm.swappiness")] == ["60", "10", "1"]


def test_sysctl_conf_without_a_link_is_not_applied_by_systemd(tree):
    tree.write("/usr/lib/systemd/systemd-sysctl", "", 0o755)
    tree.write("/etc/sysctl.conf", "vm.nr_hugepages = 128\n")
    config = facts_for(tree).get("sysctl_config")
    assert config.effective("vm.nr_hugepages") is None
    assert config.skipped[0][0] == "/etc/sysctl.conf"


def test_sysctl_conf_is_applied_last_without_systemd(tree):
    tree.write("/etc/sysctl.conf", "vm.a = conf\n")
    tree.write("/etc/sysctl.d/99-zzz.conf", "vm.a = dropin\n")
    config = facts_for(tree).get("sysctl_config")
    assert config.applier == "sysctl --system"
    assert config.effective("vm.a").value == "conf"


def test_runtime_sysctl_reads_values(tree):
    tree.write("/proc/sys/vm/overcommit_memory", "2\n")
    tree.write("/proc/sys/vm/overcommit_ratio", "80\n")
    runtime = facts_for(tree).get("sysctl")
    assert runtime.int("vm.overcommit_memory") == 2 and runtime.get("vm.overcommit_ratio") == "80"
    assert runtime.int("vm.overcommit_kbytes") is None


# -- kernel command line -------------------------------------------------------------------


def test_cmdline_splits_like_the_kernel():
    params = split_cmdline('BOOT_IMAGE=/vmlinuz quiet dyndbg="file x.c +p" hugepages=16 -- init-arg single\n')
    assert [p.text for p in params] == ["BOOT_IMAGE=/vmlinuz", "quiet", "dyndbg=file x.c +p", "hugepages=16"]


@pytest.mark.parametrize(
    "line, expected",
    [
        # Documentation/admin-guide/mm/hugetlbpage.rst's own examples
        ("hugepages=256", [(2 << 20, 256)]),
        ("default_hugepagesz=2M hugepages=256", [(2 << 20, 256)]),
        ("hugepages=256 default_hugepagesz=2M", [(2 << 20, 256)]),
        ("hugepages=256 hugepagesz=2M hugepages=512", [(2 << 20, 256)]),
        ("hugepagesz=1G hugepages=4 hugepagesz=2M hugepages=512", [(1 << 30, 4), (2 << 20, 512)]),
        ("default_hugepagesz=1G hugepages=8", [(1 << 30, 8)]),
        ("hugepagesz=2M hugepages=0:1,1:2", [(2 << 20, 3)]),
        ("hugepages=lots", []),
        ("hugepagesz=bogus hugepages=4", []),
    ],
)
def test_hugepage_requests_follow_hugetlbpage_rst(line, expected):
    requests = Cmdline(line, tuple(split_cmdline(line)), "/proc/cmdline").hugepage_requests(2 << 20)
    assert [(r.page_size, r.count) for r in requests] == expected


@pytest.mark.parametrize(
    "line, expected",
    [
        # Before 5.7 the last default_hugepagesz= wins …
        ("default_hugepagesz=1G default_hugepagesz=2M hugepages=64", [(2 << 20, 64)]),
        # … and an explicit count for the default size beats a leading one.
        ("hugepages=256 hugepagesz=2M hugepages=512", [(2 << 20, 512)]),
        ("hugepagesz=1G hugepages=4 hugepagesz=2M hugepages=512", [(1 << 30, 4), (2 << 20, 512)]),
        # No per-node form before 5.16: sscanf("%lu") reads 0.
        ("hugepagesz=2M hugepages=0:1,1:2", [(2 << 20, 0)]),
        # A second leading count is refused ("specified twice without interleaving hugepagesz=").
        ("hugepages=1 hugepages=2", [(2 << 20, 1)]),
        # An explicit 0 is no count of its own: the leading one still fills the pool.
        ("hugepages=512 hugepagesz=2M hugepages=0", [(2 << 20, 512)]),
        # A malformed count takes the slot as 0.
        ("hugepages=x hugepages=7", [(2 << 20, 0)]),
        # A size given again does not move where counts go: 4 lands on 2M's slot twice in a row.
        ("hugepagesz=1G hugepagesz=2M hugepages=512 hugepagesz=1G hugepages=4", [(2 << 20, 512)]),
        # One count after an unsupported size is dropped.
        ("hugepagesz=bogus hugepages=4 hugepages=8", [(2 << 20, 8)]),
    ],
)
def test_hugepage_requests_on_kernels_before_5_7(line, expected):
    requests = Cmdline(line, tuple(split_cmdline(line)), "/proc/cmdline").hugepage_requests(2 << 20, (5, 4))
    assert [(r.page_size, r.count) for r in requests] == expected


def test_per_node_counts_need_5_16():
    line = "hugepagesz=2M hugepages=0:1,1:2"
    cmdline = Cmdline(line, tuple(split_cmdline(line)), "/proc/cmdline")
    assert [r.count for r in cmdline.hugepage_requests(2 << 20, (5, 15))] == [0]
    assert [r.count for r in cmdline.hugepage_requests(2 << 20, (5, 16))] == [3]


def test_memparse():
    assert memparse("2M") == 2 << 20 and memparse("1G") == 1 << 30 and memparse("0x10") == 16
    assert memparse("") is None and memparse("x") is None and memparse("0") is None


# -- kernel config -------------------------------------------------------------------------


def test_kconfig_parse():
    options, notes = parse_kconfig('#\n# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_S="a b"\nCONFIG_N=250\nnonsense\n')
    assert options == {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "n", "CONFIG_S": "a b", "CONFIG_N": "250"}
    assert len(notes) == 1


def test_kernel_config_prefers_proc_config_gz(tree):
    tree.write("/proc/sys/kernel/osrelease", "6.1.0-1\n")
    tree.write("/proc/config.gz", gzip.compress(b"CONFIG_HUGETLBFS=y\n"))
    tree.write("/boot/config-6.1.0-1", "# CONFIG_HUGETLBFS is not set\n")
    config = facts_for(tree).get("kernel_config")
    assert config.source == "/proc/config.gz" and config.enabled("HUGETLBFS") is True
    assert config.enabled("NOT_THERE") is None


def test_kernel_config_falls_back_and_says_what_it_tried(tree):
    tree.write("/proc/sys/kernel/osrelease", "6.1.0-1\n")
    tree.write("/proc/config.gz", b"not gzip")
    tree.write("/usr/lib/modules/6.1.0-1/config", "# CONFIG_HUGETLBFS is not set\n")
    config = facts_for(tree).get("kernel_config")
    assert config.source == "/usr/lib/modules/6.1.0-1/config" and config.enabled("HUGETLBFS") is False
    assert config.tried[0][1].startswith("not gzip")
    assert config.tried[1] == ("/boot/config-6.1.0-1", "not present")


def test_kernel_config_missing_is_unavailable_with_paths(tree):
    tree.write("/proc/sys/kernel/osrelease", "6.1.0-1\n")
    value = facts_for(tree).get("kernel_config")
    assert isinstance(value, Unavailable) and len(value.tried) == 4


def test_kernel_version():
    assert kernel_version("6.1.0-18-amd64") == (6, 1)
    assert kernel_version("5.14.0-427.el9.x86_64") == (5, 14)
    assert kernel_version("4.19.0+") == (4, 19)
    assert kernel_version("garbage") == (0, 0)
    assert kernel_version(None) == (0, 0)


# -- mounts, cgroups, containers -----------------------------------------------------------


def test_mountinfo_with_escapes_and_optional_fields():
    text = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\nbroken line\n"
    mounts, notes = parse_mountinfo(text)
    assert mounts[0].mountpoint == "/mnt two" and mounts[0].root == "/mnt1" and mounts[0].fstype == "ext3"
    assert "noatime" in mounts[0].options and "errors=continue" in mounts[0].super_options
    assert len(notes) == 1


def test_proc_mounts_fallback():
    mounts, _notes = parse_mounts("proc /proc/sys proc ro,nosuid 0 0\n")
    assert mounts[0].read_only and mounts[0].mountpoint == "/proc/sys"


def test_proc_cgroup_lines():
    assert parse_proc_cgroup("12:memory:/docker/abc\n0::/\nbad\n3:cpu,cpuacct:/x") == [
        ("12", ("memory",), "/docker/abc"),
        ("0", (), "/"),
        ("3", ("cpu", "cpuacct"), "/x"),
    ]


def test_cgroup_v2_limit_is_the_smallest_on_the_path(tree):
    tree.write("/proc/self/cgroup", "0::/system.slice/model.service\n")
    tree.write("/proc/self/mountinfo", "29 21 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    tree.write("/sys/fs/cgroup/system.slice/memory.max", "%d\n" % (32 * GiB))
    tree.write("/sys/fs/cgroup/system.slice/model.service/memory.max", "max\n")
    tree.write("/sys/fs/cgroup/system.slice/model.service/memory.current", "%d\n" % GiB)
    limit = facts_for(tree).get("cgroup_memory")
    assert limit.version == "v2" and limit.limit == 32 * GiB
    assert limit.limit_path == "/sys/fs/cgroup/system.slice/memory.max"
    # Usage is read where the limit is: memory.current there counts every process below it.
    assert [(level.path, level.usage_path) for level in limit.limits] == [
        ("/sys/fs/cgroup/system.slice/memory.max", "/sys/fs/cgroup/system.slice/memory.current")
    ]


def test_cgroup_v1_memory_controller_wins_on_hybrid_hosts(tree):
    tree.write("/proc/self/cgroup", "4:memory:/process_api/abc\n0::/\n")
    tree.write(
        "/proc/self/mountinfo",
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
    )
    tree.write("/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes", "9223372036854771712\n")
    tree.write("/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes", "%d\n" % (8 * GiB))
    limit = facts_for(tree).get("cgroup_memory")
    assert limit.version == "v1" and limit.limit == 8 * GiB


def test_cgroup_unlimited_on_any_page_size(tree):
    tree.write("/proc/self/cgroup", "4:memory:/\n")
    tree.write("/proc/self/mountinfo", "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    tree.write("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854710272\n")  # 64 KiB pages
    assert facts_for(tree).get("cgroup_memory").limit is None


def test_dockerenv_alone_is_not_a_container(tree):
    tree.write("/.dockerenv", "")
    tree.write("/proc/self/mountinfo", "26 1 8:1 / / rw - ext4 /dev/vda rw\n")
    tree.write("/proc/self/cgroup", "0::/init.scope\n")
    container = facts_for(tree).get("container")
    assert not container.detected and container.signals[0].name.startswith("/.dockerenv")


@pytest.mark.parametrize(
    "files, runtime",
    [
        ({"/run/.containerenv": ""}, "podman"),
        ({"/proc/1/cgroup": "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope\n"}, "kubernetes"),
        ({"/proc/1/cgroup": "12:memory:/docker/0123456789ab\n"}, "docker"),
        ({"/run/systemd/container": "lxc\n"}, "lxc"),
    ],
)
def test_strong_signals_name_the_runtime(tree, files, runtime):
    for path, text in files.items():
        tree.write(path, text)
    container = facts_for(tree).get("container")
    assert container.detected and container.runtime == runtime


def test_overlay_root_and_readonly_proc_sys_together_are_a_container(tree):
    tree.write(
        "/proc/self/mountinfo",
        "1 0 0:1 / / rw - overlay overlay rw\n2 1 0:2 / /proc rw - proc proc rw\n3 2 0:2 /sys /proc/sys ro - proc proc rw\n",
    )
    tree.write("/proc/self/cgroup", "0::/\n")
    assert facts_for(tree).get("container").detected


def test_os_release_quoting():
    fields = parse_os_release('NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nX=\'single\'\n# c\nbad line\n')
    assert fields == {"NAME": "Red Hat Enterprise Linux", "ID": "rhel", "ID_LIKE": "fedora", "X": "single"}


# -- cpufreq and block devices -------------------------------------------------------------


def test_cpufreq_policies(tree):
    for n, governor in enumerate(["performance", "powersave"]):
        tree.write("/sys/devices/system/cpu/cpufreq/policy%d/scaling_governor" % n, governor + "\n")
        tree.write("/sys/devices/system/cpu/cpufreq/policy%d/affected_cpus" % n, "%d %d\n" % (2 * n, 2 * n + 1))
        tree.write("/sys/devices/system/cpu/cpufreq/policy%d/scaling_driver" % n, "intel_pstate\n")
    tree.write("/sys/devices/system/cpu/online", "0-3\n")
    freq = facts_for(tree).get("cpufreq")
    assert freq.layout == "policy"
    assert [(p.name, p.governor, p.driver) for p in freq.policies] == [
        ("policy0", "performance", "intel_pstate"),
        ("policy1", "powersave", "intel_pstate"),
    ]


def test_cpufreq_absent_means_no_scaling(tree):
    tree.write("/sys/devices/system/cpu/online", "0-3\n")
    (tree.root / "sys/devices/system/cpu/cpu0").mkdir()
    assert facts_for(tree).get("cpufreq").layout == "none"


def test_block_devices_know_nvme(tree):
    tree.write("/sys/devices/pci0/nvme/nvme0/nvme0n1/queue/scheduler", "none [mq-deadline]\n")
    tree.link("/sys/block/nvme0n1", "../devices/pci0/nvme/nvme0/nvme0n1")
    tree.write("/sys/block/sda/queue/scheduler", "[bfq] none\n")
    tree.write("/sys/block/loop0/queue/scheduler", "[none]\n")
    devices = {d.name: d for d in facts_for(tree).get("block_devices")}
    assert devices["nvme0n1"].is_nvme and devices["nvme0n1"].scheduler == "mq-deadline"
    assert devices["nvme0n1"].sysfs_path == "/sys/devices/pci0/nvme/nvme0/nvme0n1"
    assert not devices["sda"].is_nvme and devices["sda"].scheduler == "bfq"
    assert devices["loop0"].is_virtual and devices["loop0"].scheduler is None


# -- nothing a future kernel writes makes a parser raise -----------------------------------

odd_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400)


@given(odd_text)
def test_parsers_never_raise(text):
    parse_mountinfo(text)
    parse_mounts(text)
    parse_kconfig(text)
    parse_sysctl_file(text, "/etc/sysctl.conf")
    parse_proc_cgroup(text)
    parse_os_release(text)
    parse_choice(text)
    cmdline = Cmdline(text, tuple(split_cmdline(text)), "/proc/cmdline")
    cmdline.hugepage_requests(2 << 20)
    memparse(text)


# Each example runs every fact over a tree: on a loaded 2-core machine one can pass 200 ms.
@settings(deadline=None)
@given(st.binary(max_size=300))
def test_facts_survive_arbitrary_bytes(tmp_path_factory, data):
    from conftest import Tree

    tree = Tree(tmp_path_factory.mktemp("odd") / "root")
    for path in (
        "/proc/meminfo",
        "/proc/cmdline",
        "/proc/self/mountinfo",
        "/proc/self/cgroup",
        "/proc/sys/kernel/osrelease",
        "/proc/sys/vm/overcommit_memory",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor",
        "/sys/devices/system/cpu/cpufreq/policy0/affected_cpus",
        "/sys/block/nvme0n1/queue/scheduler",
        "/etc/sysctl.conf",
        "/etc/os-release",
        "/proc/config.gz",
    ):
        tree.write(path, data)
    facts = facts_for(tree)
    from ai_doctor.facts import PROVIDERS

    for name in sorted(PROVIDERS):
        facts.get(name)


def test_a_proc_that_was_denied_still_marks_a_running_system(tree):
    tree.write("/proc/meminfo", "MemTotal: 1 kB\n")
    tree.manifest(outcomes={"/proc/meminfo": "denied"})
    assert Facts(Host(str(tree))).get("running") is True
    image = tree.root.parent / "image"
    (image / "etc").mkdir(parents=True)
    assert Facts(Host(str(image))).get("running") is False


def test_an_image_boots_its_newest_kernel_by_version_order(tree):
    for release in ("6.8.0-45-generic", "6.8.0-100-generic", "5.15.0-91-generic"):
        (tree.root / "lib/modules" / release).mkdir(parents=True)
        tree.write("/boot/vmlinuz-" + release, "")
    tree.write("/boot/vmlinuz-6.8.0-9-generic", "")
    tree.write("/boot/vmlinuz-6.8.0-200-generic.old", "")
    tree.write("/etc/hostname", "img\n")
    assert Facts(Host(str(tree))).get("release") == "6.8.0-100-generic"


def test_a_modules_folder_without_a_kernel_image_is_not_booted(tree):
    # A leftover /lib/modules folder (a removed kernel, a DKMS build) gets no GRUB entry.
    (tree.root / "lib/modules/6.8.0-100-generic").mkdir(parents=True)
    tree.write("/boot/vmlinuz-6.8.0-45-generic", "")
    facts = Facts(Host(str(tree)))
    assert facts.get("release") == "6.8.0-45-generic"
    assert facts.get("default_boot").how == "the newest installed"


def test_the_fact_index_names_the_module_of_every_fact():
    import ai_doctor.facts as package

    registered = {name: provider.__module__.rsplit(".", 1)[1] for name, provider in package.PROVIDERS.items()}
    indexed = {name: module for module, names in package.MODULES.items() for name in names}
    assert registered == indexed


def test_a_run_imports_only_the_fact_modules_it_reads():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ai_doctor.facts import Facts\n"
        "from ai_doctor.host import Host\n"
        "Facts(Host('/')).get('meminfo')\n"
        "print(' '.join(m for m in sys.modules if m.startswith('ai_doctor.facts.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = done.stdout.split()
    assert "ai_doctor.facts.memory" in loaded
    assert "ai_doctor.facts.gpuplatform" not in loaded and "ai_doctor.facts.tuned" not in loaded
