"""Host trees built from kernel semantics: each function fills a Tree and returns the aidoctor
arguments it is judged with. tests/test_nextboot.py checks what each must say, and proves every
fix of every one (tests/proof.py)."""

from __future__ import annotations

from conftest import minimal_host

GiB_KB = 1 << 20


def meminfo(total_gib, available_gib, hugepages=0, free=None, size_kb=2048, swap_gib=0, commit_limit_kb=None, committed_kb=4 << 20):
    free = hugepages if free is None else free
    limit = commit_limit_kb if commit_limit_kb is not None else (total_gib * GiB_KB - hugepages * size_kb) // 2 + swap_gib * GiB_KB
    return (
        "MemTotal:       %d kB\nMemFree:        %d kB\nMemAvailable:   %d kB\nCached:          4194304 kB\n"
        "SwapTotal:      %d kB\nSwapFree:       %d kB\nCommitLimit:    %d kB\nCommitted_AS:   %d kB\n"
        "HugePages_Total:   %d\nHugePages_Free:    %d\nHugePages_Rsvd:        0\nHugePages_Surp:        0\n"
        "Hugepagesize:       %d kB\nHugetlb:        %d kB\n"
        % (
            total_gib * GiB_KB,
            available_gib * GiB_KB,
            available_gib * GiB_KB,
            swap_gib * GiB_KB,
            swap_gib * GiB_KB,
            limit,
            committed_kb,
            hugepages,
            free,
            size_kb,
            hugepages * size_kb,
        )
    )


def pools(tree, **sizes):
    """Pool files: pools(tree, kb2048=(total, free), kb1048576=(total, free))."""
    for name, (total, free) in sizes.items():
        base = "/sys/kernel/mm/hugepages/hugepages-%skB/" % name[2:]
        tree.write(base + "nr_hugepages", "%d\n" % total)
        tree.write(base + "free_hugepages", "%d\n" % free)
        tree.write(base + "resv_hugepages", "0\n")
        tree.write(base + "surplus_hugepages", "0\n")


def systemd_host(tree):
    tree.write("/run/systemd/system/.keep", "")
    tree.write("/proc/1/comm", "systemd\n")
    tree.write("/usr/lib/systemd/systemd-sysctl", "", 0o755)


def kbytes_after_ratio(tree):
    """Mode 2; one file sets the ratio, a later one kbytes: the kernel ends with kbytes (the
    ratio reads 0). No drift."""
    minimal_host(tree, overcommit="2")
    systemd_host(tree)
    tree.write("/etc/sysctl.d/50-ratio.conf", "vm.overcommit_memory = 2\nvm.overcommit_ratio = 80\n")
    tree.write("/etc/sysctl.d/60-kbytes.conf", "vm.overcommit_kbytes = 50331648\n")
    tree.write("/proc/sys/vm/overcommit_ratio", "0\n")
    tree.write("/proc/sys/vm/overcommit_kbytes", "50331648\n")
    tree.write("/proc/meminfo", meminfo(64, 60, commit_limit_kb=50331648))
    return ["--model-size", "20G"]


def ratio_after_kbytes(tree):
    """The other order: kbytes first, the ratio later: the kernel ends with the ratio."""
    minimal_host(tree, overcommit="2")
    systemd_host(tree)
    tree.write("/etc/sysctl.d/50-kbytes.conf", "vm.overcommit_memory = 2\nvm.overcommit_kbytes = 50331648\n")
    tree.write("/etc/sysctl.d/60-ratio.conf", "vm.overcommit_ratio = 80\n")
    tree.write("/proc/sys/vm/overcommit_ratio", "80\n")
    tree.write("/proc/sys/vm/overcommit_kbytes", "0\n")
    tree.write("/proc/meminfo", meminfo(64, 60, commit_limit_kb=64 * GiB_KB * 80 // 100))
    return ["--model-size", "20G"]


def kbytes_set_by_hand(tree):
    """Mode 2 with a ratio of 50 in the files; someone set kbytes by hand: the running ratio
    reads 0. Keeping "the running ratio" would write ratio 0 and leave a commit limit of swap."""
    minimal_host(tree, overcommit="2")
    systemd_host(tree)
    tree.write("/etc/sysctl.d/90-overcommit.conf", "vm.overcommit_memory = 2\nvm.overcommit_ratio = 50\n")
    tree.write("/proc/sys/vm/overcommit_ratio", "0\n")
    tree.write("/proc/sys/vm/overcommit_kbytes", "50331648\n")
    tree.write("/proc/meminfo", meminfo(64, 60, commit_limit_kb=50331648))
    return ["--model-size", "20G"]


def no_sysctl_applier(tree):
    """A VM booted with rdinit= into an agent, not an init system: nothing applies the sysctl
    files, and the running values differ from them (the distribution's defaults)."""
    minimal_host(tree, release="6.1.0-18-amd64")
    tree.write("/proc/cmdline", "console=ttyS0 quiet rdinit=/process_api -- --agent\n")
    tree.write("/proc/1/comm", "process_api\n")
    tree.write("/usr/lib/systemd/systemd-sysctl", "", 0o755)
    tree.write("/usr/lib/sysctl.d/50-pid-max.conf", "kernel.pid_max = 4194304\n")
    tree.write("/usr/lib/sysctl.d/99-protect-links.conf", "fs.protected_symlinks = 1\nfs.protected_hardlinks = 1\n")
    tree.write("/proc/sys/kernel/pid_max", "32768\n")
    tree.write("/proc/sys/fs/protected_symlinks", "0\n")
    tree.write("/proc/sys/fs/protected_hardlinks", "0\n")
    return ["--model-size", "8G"]


def weaker_security_value(tree):
    """A systemd host whose running fs.protected_symlinks is 0 against the 1 its files set."""
    minimal_host(tree)
    systemd_host(tree)
    tree.write("/usr/lib/sysctl.d/99-protect-links.conf", "fs.protected_symlinks = 1\nkernel.pid_max = 4194304\n")
    tree.write("/proc/sys/fs/protected_symlinks", "0\n")
    tree.write("/proc/sys/kernel/pid_max", "32768\n")
    return ["--model-size", "8G"]


def node_format_before_5_16(tree):
    """Ubuntu 22.04's 5.15 with hugepages=0:32,1:32: read as 0, no pool, no warning."""
    minimal_host(tree, release="5.15.0-91-generic", meminfo=meminfo(256, 240))
    line = "quiet splash hugepagesz=1G hugepages=0:32,1:32"
    tree.write("/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-5.15.0-91-generic root=/dev/sda1 ro %s\n" % line)
    tree.write("/etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="%s"\nGRUB_CMDLINE_LINUX=""\n' % line)
    tree.write("/usr/sbin/update-grub", "", 0o755)
    tree.write("/sys/devices/system/node/online", "0-1\n")
    pools(tree, kb2048=(0, 0), kb1048576=(0, 0))
    return ["--model-size", "70G"]


def default_size_grown(tree):
    """default_hugepagesz=1G added to a host whose sysctl asks for 1024 (2 MiB) pages: 1 TiB of
    1 GiB pages asked, 900 reserved, 884 free."""
    minimal_host(tree, meminfo=meminfo(1007, 60, hugepages=900, free=884, size_kb=GiB_KB))
    line = "quiet default_hugepagesz=1G"
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro %s\n" % line)
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="%s"\n' % line)
    tree.write("/usr/sbin/update-grub", "", 0o755)
    systemd_host(tree)
    tree.write("/etc/sysctl.d/80-hugepages.conf", "vm.nr_hugepages = 1024\n")
    tree.write("/proc/sys/vm/nr_hugepages", "900\n")
    pools(tree, kb2048=(0, 0), kb1048576=(900, 884))
    return ["--model-size", "140G"]


def generic_powersave(tree):
    """acpi-cpufreq with the generic powersave governor: the lowest frequency, held."""
    minimal_host(tree, meminfo=meminfo(128, 120))
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet"\n')
    tree.write("/usr/sbin/update-grub", "", 0o755)
    for cpu in range(4):
        base = "/sys/devices/system/cpu/cpufreq/policy%d/" % cpu
        tree.write(base + "scaling_governor", "powersave\n")
        tree.write(base + "scaling_driver", "acpi-cpufreq\n")
        tree.write(base + "affected_cpus", "%d\n" % cpu)
        tree.write(base + "scaling_available_governors", "conservative ondemand userspace powersave performance schedutil\n")
        tree.write(base + "scaling_min_freq", "800000\n")
        tree.write(base + "scaling_max_freq", "3500000\n")
    tree.write(
        "/boot/config-6.1.0-18-amd64",
        "CONFIG_HUGETLBFS=y\nCONFIG_HUGETLB_PAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_CPU_FREQ_DEFAULT_GOV_POWERSAVE=y\n",
    )
    return ["--model-size", "30G"]


def tight_fit(tree):
    """A model that fits with 1.9 GiB left for everything else."""
    minimal_host(tree, meminfo=meminfo(32, 22))
    return ["--model-size", "20.1G"]


def kubernetes_pod(tree):
    """A pod limited to 96Gi asked for a 100 GiB model: the limit to set is in Gi."""
    minimal_host(tree, meminfo=meminfo(512, 480))
    tree.write("/proc/self/cgroup", "0::/\n")
    tree.write("/proc/1/cgroup", "0::/kubepods.slice/kubepods-pod1234.slice/cri-containerd-0123.scope\n")
    tree.write(
        "/proc/self/mountinfo",
        "26 1 0:30 / / rw - overlay overlay rw\n"
        "27 26 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
        "22 26 0:21 / /proc rw - proc proc rw\n",
    )
    tree.write("/sys/fs/cgroup/memory.max", "%d\n" % (96 << 30))
    tree.write("/sys/fs/cgroup/memory.current", "%d\n" % (1 << 30))
    tree.write("/sys/fs/cgroup/memory.stat", "inactive_file 0\n")
    return ["--model-size", "100G"]


SCENARIOS = {
    "kbytes-after-ratio": kbytes_after_ratio,
    "ratio-after-kbytes": ratio_after_kbytes,
    "kbytes-set-by-hand": kbytes_set_by_hand,
    "no-sysctl-applier": no_sysctl_applier,
    "weaker-security-value": weaker_security_value,
    "node-format-before-5.16": node_format_before_5_16,
    "default-size-grown": default_size_grown,
    "generic-powersave": generic_powersave,
    "tight-fit": tight_fit,
    "kubernetes-pod": kubernetes_pod,
}
