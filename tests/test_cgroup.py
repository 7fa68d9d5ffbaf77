"""The cgroup_memory fact and the memory.headroom rule's judgement of cgroup limits.

Each limit on the path is weighed against the usage of the cgroup that carries it, less its
page cache (cgroup-v2.rst: memory.current counts "the cgroup and its descendants"; memory.stat
active_file and inactive_file are the file pages on the reclaim lists; tmpfs and shared memory,
counted in ``file``, sit on the anon lists). memory.high throttles, never OOM-kills.
v1's memory.stat hierarchical_memory_limit shows limits set above what the mount shows.

The shared corpus holds no cgroup memory files (only mount tables without a memory
controller, covered in test_corpus.py), so these trees are built here.
"""

from __future__ import annotations

import json

import pytest

from ai_doctor.facts import Facts
from ai_doctor.facts.cgroup import HIGH, MAX, CgroupLimit, parse_memory_stat
from ai_doctor.host import Host

from conftest import minimal_host

GiB = 1 << 30
CGROUP2 = "26 1 8:1 / / rw - ext4 /dev/sda1 rw\n29 26 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
UNLIMITED_V1 = "9223372036854771712\n"  # PAGE_COUNTER_MAX pages of 4 KiB


def v2_host(tree, cgroup_path: str, files: dict):
    """A running host whose process sits in ``cgroup_path`` on cgroup v2; ``files`` maps paths
    under /sys/fs/cgroup to their content (numbers are bytes)."""
    minimal_host(tree)  # MemTotal 64 GiB, MemAvailable 60 GiB, no swap
    tree.write("/proc/self/cgroup", "0::%s\n" % cgroup_path)
    tree.write("/proc/self/mountinfo", CGROUP2)
    for path, value in files.items():
        tree.write("/sys/fs/cgroup/" + path.lstrip("/"), value if isinstance(value, str) else "%d\n" % value)
    return tree


def stat(**fields) -> str:
    return "".join("%s %d\n" % item for item in fields.items())


def cgroup_of(tree):
    return Facts(Host(str(tree))).get("cgroup_memory")


def finding(result, rule="memory.headroom"):
    return next(f for f in result.json["findings"] if f["rule"] == rule)


def commands(found):
    return [c for step in found["remediation"] for c in step["commands"]]


def headroom(run, tree, size):
    return run("--root", tree, "--model-size", size, "--format", "json", "--only", "memory")


# -- the fact ----------------------------------------------------------------------------------


def test_memory_stat_is_flat_keyed_and_odd_lines_are_dropped():
    assert parse_memory_stat("anon 4096\ninactive_file 8192\nbroken\nfile x\nhierarchical_memory_limit 9223372036854771712\n") == {
        "anon": 4096,
        "inactive_file": 8192,
        "hierarchical_memory_limit": 9223372036854771712,
    }


def test_usage_is_read_in_the_cgroup_that_has_the_limit(tree):
    v2_host(
        tree,
        "/system.slice/model.service",
        {
            "system.slice/memory.max": 32 * GiB,
            "system.slice/memory.current": 20 * GiB,
            "system.slice/memory.stat": stat(anon=15 * GiB, inactive_file=4 * GiB, active_file=1 * GiB),
            "system.slice/model.service/memory.max": "max\n",
            "system.slice/model.service/memory.current": 1 * GiB,
        },
    )
    memory = cgroup_of(tree)
    (level,) = memory.limits
    assert level == CgroupLimit(
        MAX,
        "/system.slice",
        32 * GiB,
        "/sys/fs/cgroup/system.slice/memory.max",
        20 * GiB,
        "/sys/fs/cgroup/system.slice/memory.current",
        5 * GiB,
        "/sys/fs/cgroup/system.slice/memory.stat",
        (("inactive_file", 4 * GiB), ("active_file", GiB)),
    )
    # All page cache is subtracted (both file lists): reclaim frees it before the OOM killer acts.
    assert level.working_set == 15 * GiB and level.headroom == 17 * GiB
    assert memory.notes == ()


def test_every_limit_on_the_path_is_kept_with_its_own_usage(tree):
    v2_host(
        tree,
        "/work.slice/job.service",
        {
            "work.slice/memory.max": 40 * GiB,
            "work.slice/memory.current": 36 * GiB,
            "work.slice/memory.stat": stat(inactive_file=0),
            "work.slice/job.service/memory.max": 24 * GiB,
            "work.slice/job.service/memory.high": 20 * GiB,
            "work.slice/job.service/memory.current": 2 * GiB,
            "work.slice/job.service/memory.stat": stat(inactive_file=GiB),
        },
    )
    memory = cgroup_of(tree)
    assert [(level.kind, level.cgroup, level.limit, level.headroom) for level in memory.limits] == [
        (MAX, "/work.slice/job.service", 24 * GiB, 23 * GiB),
        (HIGH, "/work.slice/job.service", 20 * GiB, 19 * GiB),
        (MAX, "/work.slice", 40 * GiB, 4 * GiB),
    ]
    assert memory.limit == 24 * GiB and memory.limit_path == "/sys/fs/cgroup/work.slice/job.service/memory.max"


def test_unreadable_usage_and_stat_are_named_with_what_they_cost(tree):
    v2_host(tree, "/batch", {"batch/memory.max": 8 * GiB, "batch/memory.current": GiB})
    tree.manifest(outcomes={"/sys/fs/cgroup/batch/memory.current": "denied"})
    memory = cgroup_of(tree)
    (level,) = memory.limits
    assert level.usage is None and level.headroom is None
    assert memory.notes == (
        "/sys/fs/cgroup/batch/memory.current (permission denied where the tree was taken: what its limit leaves is not known)",
        "/sys/fs/cgroup/batch/memory.stat (not present: its page cache is counted as in use)",
    )


def test_v1_hierarchical_limit_shows_an_ancestor_above_the_mount(tree):
    # A container sees only its own v1 memory cgroup; its parent's 8 GiB limit shows in memory.stat.
    minimal_host(tree)
    tree.write("/proc/self/cgroup", "5:memory:/docker/abc\n0::/\n")
    tree.write(
        "/proc/self/mountinfo",
        "26 1 0:50 / / rw - overlay overlay rw\n35 26 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
    )
    tree.write("/sys/fs/cgroup/memory/memory.limit_in_bytes", UNLIMITED_V1)
    tree.write("/sys/fs/cgroup/memory/memory.usage_in_bytes", "%d\n" % (3 * GiB))
    tree.write(
        "/sys/fs/cgroup/memory/memory.stat",
        stat(cache=2 * GiB, inactive_file=GiB, hierarchical_memory_limit=8 * GiB, total_inactive_file=GiB, total_active_file=GiB),
    )
    memory = cgroup_of(tree)
    (level,) = memory.limits
    assert (level.kind, level.cgroup, level.limit, level.path) == (MAX, None, 8 * GiB, "/sys/fs/cgroup/memory/memory.stat")
    # total_*_file (hierarchical), not inactive_file; this cgroup's usage stands in.
    assert level.usage == 3 * GiB and level.reclaimable == 2 * GiB and level.headroom == 7 * GiB
    assert memory.limit == 8 * GiB


@pytest.mark.parametrize(
    "parent, hierarchical, expected",
    [
        (UNLIMITED_V1, int(UNLIMITED_V1), []),  # no limit anywhere
        ("%d\n" % (4 * GiB), 4 * GiB, ["/jobs"]),  # the visible parent's limit, not a second one
    ],
)
def test_v1_hierarchical_limit_adds_nothing_when_unlimited_or_already_seen(tree, parent, hierarchical, expected):
    minimal_host(tree)
    tree.write("/proc/self/cgroup", "5:memory:/jobs/a\n")
    tree.write("/proc/self/mountinfo", "35 26 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    tree.write("/sys/fs/cgroup/memory/memory.limit_in_bytes", UNLIMITED_V1)
    tree.write("/sys/fs/cgroup/memory/jobs/memory.limit_in_bytes", parent)
    tree.write("/sys/fs/cgroup/memory/jobs/memory.usage_in_bytes", "%d\n" % GiB)
    tree.write("/sys/fs/cgroup/memory/jobs/memory.stat", stat(total_inactive_file=0))
    tree.write("/sys/fs/cgroup/memory/jobs/a/memory.limit_in_bytes", UNLIMITED_V1)
    tree.write("/sys/fs/cgroup/memory/jobs/a/memory.stat", stat(hierarchical_memory_limit=hierarchical, total_inactive_file=0))
    memory = cgroup_of(tree)
    assert [level.cgroup for level in memory.limits] == expected
    assert memory.notes == ()


# -- the rule ----------------------------------------------------------------------------------


def test_the_limit_that_leaves_least_binds_not_the_smallest(tree, run):
    # The service may use 24 GiB and holds 2; its slice may use 40 GiB but already holds 36.
    v2_host(
        tree,
        "/work.slice/job.service",
        {
            "work.slice/memory.max": 40 * GiB,
            "work.slice/memory.current": 36 * GiB,
            "work.slice/memory.stat": stat(inactive_file=2 * GiB),
            "work.slice/job.service/memory.max": 24 * GiB,
            "work.slice/job.service/memory.current": 2 * GiB,
            "work.slice/job.service/memory.stat": stat(inactive_file=0),
        },
    )
    found = finding(headroom(run, tree, "10G"))
    assert found["severity"] == "high"
    assert (
        "more than the memory limit of cgroup /work.slice leaves (40.0 GiB in /sys/fs/cgroup/work.slice/memory.max, "
        "34.0 GiB in use (memory.current 36.0 GiB less 2.0 GiB of page cache" in found["message"]
    )
    assert {"path": "/sys/fs/cgroup/work.slice/memory.stat", "value": "inactive_file 2147483648"} in found["evidence"]
    # The unit that owns the limit is raised, by what it holds plus the model and an eighth.
    assert commands(found) == ["sudo systemctl set-property work.slice MemoryMax=46G"]
    assert "job.service" not in found["remediation"][-1]["summary"]
    # 4 GiB fits what the slice leaves.
    assert headroom(run, tree, "4G").statuses()["memory.headroom"] == "pass"


def test_every_limit_too_small_is_named_and_raised(tree, run):
    v2_host(
        tree,
        "/work.slice/job.service",
        {
            "work.slice/memory.max": 16 * GiB,
            "work.slice/memory.current": 3 * GiB,
            "work.slice/memory.stat": stat(inactive_file=0),
            "work.slice/job.service/memory.max": 12 * GiB,
            "work.slice/job.service/memory.current": GiB,
            "work.slice/job.service/memory.stat": stat(inactive_file=0),
        },
    )
    found = finding(headroom(run, tree, "14G"))
    assert found["severity"] == "critical"
    assert "more than the memory limit of its cgroup (12.0 GiB in /sys/fs/cgroup/work.slice/job.service/memory.max)" in found["message"]
    assert "also too small: cgroup /work.slice, 16.0 GiB in /sys/fs/cgroup/work.slice/memory.max leaving 13.0 GiB" in found["message"]
    assert commands(found) == [
        "sudo systemctl set-property job.service MemoryMax=17G",
        "sudo systemctl set-property work.slice MemoryMax=19G",
    ]


def test_page_cache_does_not_count_against_the_limit_but_shared_memory_does(tree, run):
    files = {"batch.slice/memory.max": 16 * GiB, "batch.slice/memory.current": 14 * GiB}
    v2_host(tree, "/batch.slice", dict(files, **{"batch.slice/memory.stat": stat(inactive_file=9 * GiB, active_file=GiB)}))
    result = headroom(run, tree, "8G")
    assert result.statuses()["memory.headroom"] == "pass"
    check = next(c for c in result.json["checks"] if c["rule"] == "memory.headroom")
    assert "the tightest cgroup limit (16.0 GiB in /sys/fs/cgroup/batch.slice/memory.max) leaves 12.0 GiB" in json.dumps(
        check, ensure_ascii=False
    )

    # Active file pages are page cache too (the issue: page cache in memory.current is reclaimable).
    v2_host(tree, "/batch.slice", dict(files, **{"batch.slice/memory.stat": stat(inactive_file=0, active_file=10 * GiB)}))
    assert headroom(run, tree, "8G").statuses()["memory.headroom"] == "pass"

    # 10 GiB of /dev/shm segments: `file` counts them, the file lists do not (shmem is on the
    # anon lists), so they stay in use: only swap could take them.
    stats = stat(file=10 * GiB, shmem=10 * GiB, inactive_file=0, active_file=0, inactive_anon=10 * GiB)
    v2_host(tree, "/batch.slice", dict(files, **{"batch.slice/memory.stat": stats}))
    found = finding(headroom(run, tree, "8G"))
    assert found["severity"] == "high" and "14.0 GiB in use (memory.current 14.0 GiB less 0 B of page cache" in found["message"]
    assert {"path": "/sys/fs/cgroup/batch.slice/memory.stat", "value": "inactive_file 0, active_file 0"} in found["evidence"]


def test_without_memory_stat_page_cache_counts_as_used_and_says_so(tree, run):
    v2_host(tree, "/batch.slice", {"batch.slice/memory.max": 16 * GiB, "batch.slice/memory.current": 14 * GiB})
    found = finding(headroom(run, tree, "8G"))
    assert found["severity"] == "high"
    assert "14.0 GiB in use (memory.current; page cache counted as used, memory.stat unreadable)" in found["message"]
    assert "Could not read /sys/fs/cgroup/batch.slice/memory.stat (not present: its page cache is counted as in use)." in found["message"]


def test_memory_high_throttles_and_ranks_below_memory_max(tree, run):
    v2_host(
        tree,
        "/system.slice/vllm.service",
        {
            "system.slice/vllm.service/memory.max": "max\n",
            "system.slice/vllm.service/memory.high": 12 * GiB,
            "system.slice/vllm.service/memory.current": 4 * GiB,
            "system.slice/vllm.service/memory.stat": stat(inactive_file=GiB),
        },
    )
    over = finding(headroom(run, tree, "16G"))
    assert over["severity"] == "high"
    assert "more than the memory.high of its cgroup (12.0 GiB in /sys/fs/cgroup/system.slice/vllm.service/memory.high)" in over["message"]
    assert "never OOM-kills" in over["message"]
    assert commands(over) == ["sudo systemctl set-property vllm.service MemoryHigh=21G"]
    left = finding(headroom(run, tree, "10G"))  # 12 GiB less 3 GiB in use leaves 9
    assert left["severity"] == "medium" and "leaves before throttling" in left["message"]
    assert headroom(run, tree, "8G").statuses()["memory.headroom"] == "pass"


def test_memory_max_and_memory_high_are_both_named_max_first(tree, run):
    v2_host(
        tree,
        "/system.slice/vllm.service",
        {
            "system.slice/vllm.service/memory.max": 14 * GiB,
            "system.slice/vllm.service/memory.high": 12 * GiB,
            "system.slice/vllm.service/memory.current": GiB,
            "system.slice/vllm.service/memory.stat": stat(inactive_file=0),
        },
    )
    found = finding(headroom(run, tree, "16G"))
    assert found["severity"] == "critical"
    # Raising memory.max alone would leave the throttle below the model.
    message = found["message"]
    assert message.index("more than the memory limit of its cgroup") < message.index("more than the memory.high of its cgroup")
    cmds = [c for step in found["remediation"] for c in step["commands"]]
    assert "sudo systemctl set-property vllm.service MemoryMax=19G" in cmds
    assert "sudo systemctl set-property vllm.service MemoryHigh=19G" in cmds


def test_a_limit_at_or_above_memtotal_is_left_to_the_ram_checks(tree, run):
    v2_host(tree, "/big.slice", {"big.slice/memory.max": 128 * GiB, "big.slice/memory.current": GiB})
    found = finding(headroom(run, tree, "65G"))  # MemTotal is 64 GiB
    assert found["severity"] == "critical"
    assert "MemTotal" in found["message"] and "memory limit" not in found["message"]


def test_v1_ancestor_limit_above_the_mount_is_critical_and_worded_as_unseen(tree, run):
    minimal_host(tree)
    tree.write("/proc/self/cgroup", "5:memory:/jobs/a\n")
    tree.write(
        "/proc/self/mountinfo",
        "26 1 8:1 / / rw - ext4 /dev/sda1 rw\n35 26 0:32 /jobs/a /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    )
    tree.write("/sys/fs/cgroup/memory/memory.limit_in_bytes", UNLIMITED_V1)
    tree.write("/sys/fs/cgroup/memory/memory.usage_in_bytes", "%d\n" % (3 * GiB))
    tree.write("/sys/fs/cgroup/memory/memory.stat", stat(hierarchical_memory_limit=8 * GiB, total_inactive_file=GiB))
    found = finding(headroom(run, tree, "10G"))
    assert found["severity"] == "critical"
    assert "an ancestor cgroup not visible here (hierarchical_memory_limit)" in found["message"]
    assert {"path": "/sys/fs/cgroup/memory/memory.stat", "value": "hierarchical_memory_limit %d" % (8 * GiB)} in found["evidence"]
    assert found["remediation"][-1]["summary"].startswith("Raise the memory limit of the cgroup above the mount")
    short = finding(headroom(run, tree, "7G"))  # 8 GiB less at least 2 GiB leaves at most 6
    assert short["severity"] == "high"
    assert "at least 2.0 GiB in use (this cgroup's memory.usage_in_bytes 3.0 GiB" in short["message"]


def test_a_user_manager_unit_is_raised_without_sudo(tree, run):
    app = "/user.slice/user-1000.slice/user@1000.service/app.slice"
    v2_host(
        tree,
        app + "/app-llm.scope",
        {app + "/memory.max": 8 * GiB, app + "/memory.current": GiB, app + "/memory.stat": stat(inactive_file=0)},
    )
    found = finding(headroom(run, tree, "10G"))
    assert commands(found) == ["systemctl --user set-property app.slice MemoryMax=13G"]
    assert found["remediation"][-1]["needs_root"] is False


def test_a_cgroup_no_unit_owns_gets_a_runtime_write(tree, run):
    v2_host(tree, "/lab/run-7", {"lab/memory.max": 8 * GiB, "lab/memory.current": GiB, "lab/memory.stat": stat(inactive_file=0)})
    found = finding(headroom(run, tree, "10G"))
    step = found["remediation"][-1]
    assert step["commands"] == ["echo 13G | sudo tee /sys/fs/cgroup/lab/memory.max >/dev/null"]
    assert step["persistent"] is False and "cgroup /lab" in step["summary"]


def test_a_docker_container_and_the_slice_above_it_are_raised_in_their_own_ways(tree, run):
    scope = "/system.slice/docker-%s.scope" % ("4f2b8a9c3d1e" + "0" * 52)
    v2_host(
        tree,
        scope,
        {
            "system.slice/memory.max": 20 * GiB,
            "system.slice/memory.current": 12 * GiB,
            "system.slice/memory.stat": stat(inactive_file=0),
            scope + "/memory.max": 16 * GiB,
            scope + "/memory.current": GiB,
            scope + "/memory.stat": stat(inactive_file=0),
        },
    )
    found = finding(headroom(run, tree, "18G"))
    assert found["severity"] == "critical"
    steps = found["remediation"][-2:]
    assert steps[0]["commands"] == ["docker update --memory 22G --memory-swap 22G 4f2b8a9c3d1e"] and steps[0]["on_host"]
    assert steps[1]["summary"].startswith("On the container's host, raise the memory limit of cgroup /system.slice to at least 33G")
    assert steps[1]["commands"] == ["sudo systemctl set-property system.slice MemoryMax=33G"] and steps[1]["on_host"]


def test_a_limit_is_never_advised_past_all_ram(tree, run):
    v2_host(
        tree,
        "/system.slice/vllm.service",
        {
            "system.slice/vllm.service/memory.max": 40 * GiB,
            "system.slice/vllm.service/memory.current": 30 * GiB,
            "system.slice/vllm.service/memory.stat": stat(inactive_file=0),
        },
    )
    found = finding(headroom(run, tree, "50G"))
    # 30 GiB held + 50 GiB + an eighth would be 87 GiB; the host has 64 GiB.
    assert "sudo systemctl set-property vllm.service MemoryMax=64G" in commands(found)
    assert "the cgroup aidoctor ran in (/system.slice/vllm.service)" in found["message"]


def test_unreadable_cgroup_membership_is_said_not_passed_silently(tree, run):
    minimal_host(tree)
    tree.write("/proc/self/cgroup", "0::/user.slice\n")
    tree.write("/proc/self/mountinfo", CGROUP2)
    tree.manifest(outcomes={"/proc/self/cgroup": "denied"})
    result = run("--root", tree, "--model-size", "8G", "--format", "json", "--only", "memory", "-v")
    check = next(c for c in result.json["checks"] if c["rule"] == "memory.headroom")
    assert check["status"] == "pass"
    assert (
        "GiB. Cgroup memory limits were not checked: cannot read /proc/self/cgroup: "
        "permission denied where the tree was taken; judged without 1 unreadable file" in check["reason"]
    )


def test_a_cgroup_outside_the_namespace_is_not_looked_up(tree):
    v2_host(tree, "/../../../../etc", {})
    tree.write("/etc/memory.max", "%d\n" % GiB)
    got = cgroup_of(tree)
    assert not got and "outside the cgroups this namespace can see" in got.reason


def test_a_container_in_its_own_cgroup_namespace_is_named_by_its_hostname(run):
    from conftest import fixture_root

    found = finding(headroom(run, fixture_root("container-cgroup-64g"), "140G"))
    assert any(c.startswith("docker update --memory ") and c.endswith(" 4f2b8a9c3d1e") for c in commands(found))
