"""Odd host files never make a rule fail: whatever the files hold, every check decides."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_doctor.checkup import checkup
from ai_doctor.host import Host
from ai_doctor.model import Request, Status

from conftest import MEMINFO_64G, Tree, minimal_host

PATHS = (
    "/proc/meminfo",
    "/proc/cmdline",
    "/proc/self/mountinfo",
    "/proc/self/cgroup",
    "/proc/1/cgroup",
    "/proc/sys/kernel/osrelease",
    "/proc/sys/kernel/hostname",
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/vm/overcommit_ratio",
    "/proc/sys/vm/overcommit_kbytes",
    "/proc/sys/vm/nr_hugepages",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
    "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
    "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor",
    "/sys/devices/system/cpu/cpufreq/policy0/affected_cpus",
    "/sys/devices/system/cpu/cpufreq/policy0/scaling_driver",
    "/sys/block/nvme0n1/queue/scheduler",
    "/sys/fs/cgroup/memory.max",
    "/etc/sysctl.conf",
    "/etc/sysctl.d/50-x.conf",
    "/etc/os-release",
    "/run/systemd/container",
)
PLAUSIBLE = st.sampled_from(
    [
        "",
        "0\n",
        "1\n",
        "2\n",
        "-1\n",
        "max\n",
        "99999999999999999999999\n",
        "[none] mq-deadline\n",
        "always madvise [never]\n",
        "0-3\n",
        "performance\n",
        "powersave\n",
        "intel_pstate\n",
        "vm.nr_hugepages = 512\n",
        "vm.overcommit_memory = 2\nvm.overcommit_ratio = 300\n",
        "hugepagesz=1G hugepages=999999 default_hugepagesz=3M transparent_hugepage=never\n",
        "0::/../../x\n",
        "1 0 0:1 / / ro - overlay overlay ro\n3 1 0:2 /sys /proc/sys ro - proc proc rw\n",
        MEMINFO_64G.replace("67108864", "0"),
        MEMINFO_64G + "HugePages_Total: 5\nHugePages_Free: 9\n",
        "MemTotal: -5 kB\nMemAvailable: 99999999999999 kB\nCommitLimit: 1 kB\nCommitted_AS: 999999999 kB\n",
    ]
)
CONTENT = st.one_of(PLAUSIBLE, st.text(max_size=80), st.binary(max_size=80))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=st.dictionaries(st.sampled_from(PATHS), CONTENT, max_size=8), size=st.sampled_from([None, 1, 40 << 30, 1 << 60]))
def test_every_check_decides_on_odd_files(tmp_path_factory, files, size):
    tree = minimal_host(Tree(tmp_path_factory.mktemp("odd") / "root"))
    for path, content in files.items():
        tree.write(path, content)
    request = Request(model_size=size, size_text="x", size_source="--model-size", described="x")
    report = checkup(Host(str(tree)), request, fail_on="info")
    errors = [(c.rule, c.reason) for c in report.checks if c.status is Status.ERROR]
    assert not errors
    from ai_doctor.reports import json as json_report
    from ai_doctor.reports import text as text_report

    text_report.render(report)
    text_report.render(report, color=True, width=60)
    json_report.render(report)
