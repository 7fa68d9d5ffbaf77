"""memory.shm-size, storage.model-network and memory.headroom's OOM-kill counters.

/dev/shm's size is the tmpfs cap in mountinfo's superblock options (size=NNNk, written only when
it is not the default, half of RAM: mm/shmem.c shmem_show_options, tmpfs(5)); the model path's
filesystem is the longest mount point above it once links are followed, and an NFS mount's
read-ahead is /sys/class/bdi/MAJ:MIN/read_ahead_kb with MAJ:MIN from mountinfo's third field
(Documentation/ABI/testing/sysfs-class-bdi). The trees are built here: the shared corpus holds
mount tables with a default /dev/shm only, which test_corpus.py already covers.
"""

from __future__ import annotations

import pytest

from ai_doctor import engine
from ai_doctor.facts import Facts
from ai_doctor.facts.mounts import network_kind, parse_mountinfo, parse_mounts
from ai_doctor.facts.shm import NAME_CAP, parse_tmpfs_size
from ai_doctor.host import Host
from ai_doctor.model import Request

from conftest import minimal_host

GiB = 1 << 30
MiB = 1 << 20
ROOT = "26 1 259:2 / / rw,relatime - ext4 /dev/nvme0n1p2 rw\n22 26 0:21 / /proc rw - proc proc rw\n"
DEV = "24 26 0:5 / /dev rw,nosuid - devtmpfs udev rw,size=32768000k,mode=755\n"
CGROUP2 = "29 26 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"


def shm_line(options: str) -> str:
    return "25 24 0:23 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw,%s\n" % options


def gpu_host(tree, gpus: int, mountinfo: str):
    """A host with ``gpus`` GPUs in the NVIDIA driver's list and the given mount table."""
    minimal_host(tree)
    tree.write("/proc/self/mountinfo", mountinfo)
    for index in range(gpus):
        tree.write("/proc/driver/nvidia/gpus/0000:%02x:00.0/information" % (0x18 + index), "Model: NVIDIA H100\n")
    return tree


def container(tree, gpus: int, mountinfo: str, cgroup="/kubepods/besteffort/pod1/abc"):
    """A container (its cgroup path names the runtime) given ``gpus`` device nodes."""
    minimal_host(tree)
    tree.write("/proc/self/mountinfo", mountinfo)
    tree.write("/proc/self/cgroup", "0::/\n")
    tree.write("/proc/1/cgroup", "0::%s\n" % cgroup)
    for index in range(gpus):
        tree.write("/dev/nvidia%d" % index)
        tree.write("/.aidoctor/derived/node/dev/nvidia%d" % index, "c 195 %d 0666 0 0 1733000000\n" % index)
    return tree


def check(tree, rule, request=None):
    """(status, reason, findings) of one rule over ``tree``."""
    results, findings = engine.run(Facts(Host(str(tree)), request or Request()), engine.select(only=(rule,)))
    (result,) = results
    return result.status.value, result.reason, findings


def commands(finding):
    return [line for step in finding.remediation for line in step.commands]


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("65536k", 64 * MiB),  # what the kernel writes, always in k
        ("512m", 512 * MiB),
        ("16G", 16 * GiB),
        ("1048576", MiB),
        ("50%", 32 * GiB),
        ("0", 0),
        ("", None),
        ("12x", None),
        ("%", None),
    ],
)
def test_tmpfs_sizes_are_read_as_mount_writes_them(value, expected):
    assert parse_tmpfs_size(value, 64 * GiB) == expected


def test_mountinfo_keeps_the_device_number_and_proc_mounts_has_none():
    (mount,), notes = parse_mountinfo("118 26 0:53 / /srv/models rw,relatime - nfs4 10.0.0.5:/export rw,vers=4.2\n")
    assert mount.device == "0:53" and mount.fstype == "nfs4" and notes == []
    (bad,), _ = parse_mountinfo("1 2 x / /mnt rw - ext4 /dev/sda1 rw\n")
    assert bad.device is None
    (plain,), _ = parse_mounts("10.0.0.5:/export /srv/models nfs4 rw,vers=4.2 0 0\n")
    assert plain.device is None


@pytest.mark.parametrize(
    "fstype, source, remote",
    [
        ("nfs4", "host:/x", True),
        ("virtiofs", "models", True),
        ("9p", "drvfs", True),
        ("fuse.sshfs", "me@host:", True),
        ("fuse.gcsfuse", "bucket", True),
        ("fuse.lxcfs", "lxcfs", False),  # /proc files, not storage
        ("fuse.fuse-overlayfs", "fuse-overlayfs", False),  # rootless Podman's root
        ("fuseblk", "/dev/sdb1", False),  # ntfs-3g on a local disk
        ("fuse.gocryptfs", "/home/me/.cipher", False),  # an encrypted folder on a local disk
        ("ext4", "/dev/nvme0n1p2", False),
    ],
)
def test_network_and_fuse_filesystems_are_told_from_local_ones(fstype, source, remote):
    (mount,), _ = parse_mountinfo("40 26 0:60 / /m rw - %s %s rw\n" % (fstype, source))
    assert bool(network_kind(mount)) is remote


# -- memory.shm-size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gpus, options, expected",
    [
        (8, "size=65536k", "high"),
        (4, "size=262143k", "high"),
        (4, "size=262144k", "medium"),  # 256 MiB is not under 256 MiB
        (4, "size=524288k", "medium"),  # the table's reading: < 1 GiB with 2+ is medium
        (2, "size=524288k", "medium"),
        (2, "size=1048576k", "pass"),
        (1, "size=65536k", "info"),
        (1, "size=1048576k", "pass"),
        (8, "inode64", "pass"),  # the tmpfs default: half of RAM
        (8, "size=0k", "pass"),  # no limit
    ],
)
def test_shm_size_is_judged_against_the_gpus_here(tree, gpus, options, expected):
    gpu_host(tree, gpus, ROOT + DEV + shm_line(options))
    status, reason, findings = check(tree, "memory.shm-size")
    assert (findings[0].severity.value if findings else status) == expected


def test_no_gpu_no_judgement(tree):
    gpu_host(tree, 0, ROOT + DEV + shm_line("size=65536k"))
    tree.write("/dev/null")
    status, reason, _ = check(tree, "memory.shm-size")
    assert status == "skip" and reason.startswith("no GPU here")


def test_a_host_is_resized_now_and_its_fstab_line_changed(tree):
    gpu_host(tree, 8, ROOT + DEV + shm_line("size=131072k"))
    fstab = "UUID=1 / ext4 defaults 0 1\n# tmpfs /dev/shm tmpfs size=1G 0 0\ntmpfs /dev/shm tmpfs defaults,size=128M 0 0\n"
    tree.write("/etc/fstab", fstab)
    _, _, (found,) = check(tree, "memory.shm-size")
    assert found.severity.value == "high" and "capped at 128.0 MiB (size=131072k)" in found.message
    assert commands(found) == ["sudo mount -o remount,size=16G /dev/shm", "sudoedit /etc/fstab"]
    assert "line 3: tmpfs /dev/shm tmpfs defaults,size=128M 0 0" in found.remediation[1].summary
    assert not any(step.on_host for step in found.remediation)


def test_a_host_without_an_fstab_line_is_told_the_line_to_add(tree):
    gpu_host(tree, 2, ROOT + DEV + shm_line("size=65536k"))
    _, _, (found,) = check(tree, "memory.shm-size")
    assert "`tmpfs /dev/shm tmpfs defaults,size=16G 0 0`" in found.remediation[1].summary


def test_without_a_mount_of_its_own_shm_is_as_large_as_what_holds_it(tree):
    # Docker's /dev is a 64 MiB tmpfs too: a /dev/shm folder in it is capped by it.
    gpu_host(tree, 4, ROOT + "24 26 0:62 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755\n")
    tree.write("/dev/shm/.keep", "")
    _, _, (found,) = check(tree, "memory.shm-size")
    assert found.severity.value == "high" and "as a folder of /dev" in found.message
    gpu_host(tree, 4, ROOT)
    status, reason, _ = check(tree, "memory.shm-size")
    assert status == "pass" and "a folder of / (ext4)" in reason


def test_no_mount_and_no_folder_is_not_judged_as_the_filesystem_above(tree):
    gpu_host(tree, 4, ROOT + "24 26 0:62 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755\n")
    status, reason, _ = check(tree, "memory.shm-size")
    assert status == "skip" and reason.startswith("/dev/shm does not exist here")


def test_in_a_docker_container_the_fix_is_the_containers_on_its_host(tree):
    container(tree, 8, ROOT + CGROUP2 + DEV + shm_line("size=65536k"), cgroup="/system.slice/docker-" + "ab" * 32 + ".scope")
    tree.write("/sys/fs/cgroup/memory.max", "%d\n" % (32 * GiB))
    tree.write("/sys/fs/cgroup/memory.current", "%d\n" % GiB)
    tree.write("/sys/fs/cgroup/memory.stat", "inactive_file 0\nactive_file 0\n")
    _, _, (found,) = check(tree, "memory.shm-size")
    assert found.severity.value == "high"
    assert "the 64 MiB Docker and Kubernetes give a container" in found.message
    # A quarter of the 32 GiB limit: what is written there counts against it.
    (step,) = found.remediation
    assert step.on_host and "docker run --shm-size=8g" in step.summary and not step.actions


def test_in_a_pod_the_fix_is_a_memory_backed_empty_dir(tree):
    container(tree, 4, ROOT + DEV + shm_line("size=65536k"))
    _, _, (found,) = check(tree, "memory.shm-size")
    (step,) = found.remediation
    assert step.on_host and "emptyDir: {medium: Memory, sizeLimit: 16Gi}" in step.summary and "mountPath: /dev/shm" in step.summary


def test_left_over_segments_are_named_and_only_a_few_are_looked_at(tree):
    gpu_host(tree, 8, ROOT + DEV + shm_line("size=65536k"))
    for index in range(NAME_CAP + 8):
        tree.write("/dev/shm/nccl-%06d" % index, b"\0" * 4096)
    tree.write("/dev/shm/torch_4242_1804289383", b"\0" * 8192)
    tree.write("/dev/shm/sem.mp-abc", b"\0" * 32)  # a semaphore, none of them
    facts = Facts(Host(str(tree)), Request())
    shm = facts.get("shm")
    assert shm.matched == NAME_CAP + 9 and len(shm.segments) == NAME_CAP and shm.names == NAME_CAP + 10
    _, _, (found,) = check(tree, "memory.shm-size")
    assert "It holds %d segments of NCCL and PyTorch (nccl-000000, nccl-000001" % (NAME_CAP + 9) in found.message
    assert "and %d more)" % (NAME_CAP + 4) in found.message
    assert "rm -f /dev/shm/nccl-* /dev/shm/torch_* /dev/shm/psm_*" in commands(found)[-1]


def test_an_image_is_not_judged(tree):
    tree.write("/etc/os-release", "ID=debian\n")
    tree.write("/dev/nvidia0")
    status, reason, _ = check(tree, "memory.shm-size")
    assert status == "skip" and reason.startswith("an image, not a running system")


# -- storage.model-network ---------------------------------------------------------------------

NFS = "118 26 0:53 / /srv/models rw,relatime - nfs4 10.20.0.5:/export/models rw,vers=4.2,rsize=1048576,%s,addr=10.20.0.5\n"


def storage_host(tree, mountinfo: str):
    minimal_host(tree)
    tree.write("/proc/self/mountinfo", mountinfo)
    return tree


def test_a_model_path_on_nfs_names_the_read_ahead_and_its_fix(tree):
    storage_host(tree, ROOT + NFS % "local_lock=none")
    tree.write("/srv/models/llama/model.safetensors", "x")
    tree.write("/sys/class/bdi/0:53/read_ahead_kb", "128\n")
    _, _, (found,) = check(tree, "storage.model-network", Request(model_path="/srv/models/llama"))
    assert found.severity.value == "medium"
    assert "/srv/models/llama, --model, is on NFS" in found.message and "read-ahead is 128 KiB" in found.message
    assert "locks" not in found.message  # not the Hugging Face cache, and locks are not local
    lines = commands(found)
    assert lines[0] == "echo 15360 | sudo tee /sys/class/bdi/0:53/read_ahead_kb >/dev/null"
    # The folder first: a minimal image may have no /etc/udev/rules.d.
    assert lines[1] == "sudo mkdir -p /etc/udev/rules.d"
    assert "/etc/udev/rules.d/99-zz-aidoctor-nfs-readahead.rules" in lines[2]
    assert any(e.path == "/sys/class/bdi/0:53/read_ahead_kb" and e.value == "128" for e in found.evidence)


def test_a_large_read_ahead_leaves_only_the_mmap_advice(tree):
    storage_host(tree, ROOT + NFS % "local_lock=none")
    tree.write("/srv/models/llama/model.safetensors", "x")
    tree.write("/sys/class/bdi/0:53/read_ahead_kb", "15360\n")
    tree.write("/usr/libexec/nfsrahead", "")
    _, _, (found,) = check(tree, "storage.model-network", Request(model_path="/srv/models/llama"))
    assert "read-ahead" not in found.message and "nfsrahead" not in found.message
    assert commands(found) == [] and "--safetensors-load-strategy eager" in found.remediation[-1].summary


def test_nfsrahead_is_named_where_nfs_utils_ships_it(tree):
    storage_host(tree, ROOT + NFS % "local_lock=none")
    tree.write("/srv/models/llama/model.safetensors", "x")
    tree.write("/sys/class/bdi/0:53/read_ahead_kb", "128\n")
    tree.write("/usr/libexec/nfsrahead", "")
    _, _, (found,) = check(tree, "storage.model-network", Request(model_path="/srv/models/llama"))
    assert "[nfsrahead] section in /etc/nfs.conf" in found.message


@pytest.mark.parametrize(
    "options, said",
    [
        ("local_lock=none", None),
        ("nolock,local_lock=all", "mounted with nolock"),
        ("local_lock=flock", "mounted with local_lock=flock"),
    ],
)
def test_the_hugging_face_cache_on_nfs_with_local_locks_says_so(tree, options, said):
    storage_host(tree, ROOT + NFS % options)
    tree.write("/srv/models/hf/hub/models--meta-llama--Llama-3.1-70B/refs/main", "abc")
    request = Request(env={"HF_HOME": "/srv/models/hf", "HOME": "/home/me"})
    _, _, (found,) = check(tree, "storage.model-network", request)
    assert "the Hugging Face cache ($HF_HOME/hub)" in found.message
    if said:
        assert said in found.message and "two hosts filling this shared cache" in found.message
    else:
        assert "locks" not in found.message


def test_lustre_without_flock_breaks_old_huggingface_hub(tree):
    lustre = "130 26 0:60 / /lustre rw - lustre 10.0.0.1@o2ib:/scratch rw,lazystatfs\n"
    storage_host(tree, ROOT + lustre)
    tree.write("/lustre/me/hf/hub/.locks/x", "")
    _, _, (found,) = check(tree, "storage.model-network", Request(env={"HF_HUB_CACHE": "/lustre/me/hf/hub"}))
    assert "[Errno 38] Function not implemented" in found.message
    storage_host(tree, ROOT + lustre.replace("lazystatfs", "flock,lazystatfs"))
    _, _, (found,) = check(tree, "storage.model-network", Request(env={"HF_HUB_CACHE": "/lustre/me/hf/hub"}))
    assert "Errno" not in found.message


def test_links_are_followed_to_the_share(tree):
    storage_host(tree, ROOT + NFS % "local_lock=none")
    tree.write("/srv/models/ollama/blobs/sha256-1", "x")
    tree.link("/usr/share/ollama/.ollama/models", "/srv/models/ollama")
    _, _, (found,) = check(tree, "storage.model-network")
    assert "/usr/share/ollama/.ollama/models (-> /srv/models/ollama), Ollama's models" in found.message


def test_local_storage_and_local_fuse_pass(tree):
    lxcfs = "50 22 0:44 /proc/meminfo /proc/meminfo rw - fuse.lxcfs lxcfs rw\n"
    storage_host(tree, ROOT + lxcfs)
    tree.write("/home/me/.cache/huggingface/hub/version.txt", "1")
    status, reason, _ = check(tree, "storage.model-network", Request(env={"HOME": "/home/me"}))
    assert status == "pass" and "/home/me/.cache/huggingface/hub on / (ext4)" in reason


def test_a_fuse_bucket_is_network_storage_without_read_ahead_steps(tree):
    storage_host(tree, ROOT + "60 26 0:70 / /mnt/bucket rw - fuse.gcsfuse models-bucket rw,user_id=0\n")
    tree.write("/mnt/bucket/llama/config.json", "{}")
    _, _, (found,) = check(tree, "storage.model-network", Request(model_path="/mnt/bucket/llama"))
    assert "is on FUSE (gcsfuse)" in found.message and commands(found) == []


def test_nothing_to_look_at_skips_and_says_what_was_looked_for(tree):
    storage_host(tree, ROOT)
    status, reason, _ = check(tree, "storage.model-network", Request(env={"OLLAMA_MODELS": "/data/ollama"}))
    assert status == "skip" and "/data/ollama (Ollama's models ($OLLAMA_MODELS))" in reason


def test_in_a_container_the_read_ahead_is_the_hosts_to_change(tree):
    container(tree, 0, ROOT + NFS % "local_lock=none", cgroup="/system.slice/docker-" + "cd" * 32 + ".scope")
    tree.write("/srv/models/llama/model.safetensors", "x")
    tree.write("/sys/class/bdi/0:53/read_ahead_kb", "128\n")
    _, _, (found,) = check(tree, "storage.model-network", Request(model_path="/srv/models/llama"))
    assert found.remediation[0].on_host and found.remediation[1].on_host and not found.remediation[-1].on_host


# -- memory.headroom: OOM kills ----------------------------------------------------------------

V2 = ROOT + CGROUP2


def v2_service(tree, events, limit=32 * GiB, parent_events=None, parent_limit=None):
    minimal_host(tree)  # MemTotal 64 GiB, MemAvailable 60 GiB
    tree.write("/proc/self/mountinfo", V2)
    tree.write("/proc/self/cgroup", "0::/work.slice/vllm.service\n")
    base = "/sys/fs/cgroup/work.slice"
    tree.write(base + "/vllm.service/memory.max", "%d\n" % limit)
    tree.write(base + "/vllm.service/memory.current", "%d\n" % (2 * GiB))
    tree.write(base + "/vllm.service/memory.stat", "anon %d\ninactive_file 0\nactive_file 0\n" % (2 * GiB))
    tree.write(base + "/vllm.service/memory.events", "low 0\nhigh 0\nmax 12\noom 3\noom_kill %d\noom_group_kill 0\n" % events)
    tree.write(base + "/memory.current", "%d\n" % (2 * GiB))
    tree.write(base + "/memory.stat", "anon %d\n" % (2 * GiB))
    if parent_limit is not None:
        tree.write(base + "/memory.max", "%d\n" % parent_limit)
    if parent_events is not None:
        tree.write(base + "/memory.events", "max 0\noom 0\noom_kill %d\n" % parent_events)
    return tree


def headroom(tree, size):
    from ai_doctor.units import parse_size

    value = parse_size(size)
    request = Request(model_size=value, size_text=size, size_source="--model-size", described=size)
    return check(tree, "memory.headroom", request)


def test_a_model_that_fits_in_a_cgroup_that_has_oom_killed_is_a_medium_finding(tree):
    v2_service(tree, events=2)
    _, _, (found,) = headroom(tree, "8G")
    assert found.severity.value == "medium" and found.title == "Memory cgroup has already OOM-killed processes"
    assert "The OOM killer has already ended 2 processes in this cgroup (/work.slice/vllm.service)" in found.message
    assert [(e.path, e.value) for e in found.evidence] == [("/sys/fs/cgroup/work.slice/vllm.service/memory.events", "oom_kill 2")]


def test_no_kills_no_finding_and_a_model_that_does_not_fit_says_so(tree):
    v2_service(tree, events=0)
    status, _, _ = headroom(tree, "8G")
    assert status == "pass"
    v2_service(tree, events=1)
    _, _, (found,) = headroom(tree, "40G")
    assert found.severity.value == "critical" and "ended 1 process in this cgroup" in found.message
    assert ("/sys/fs/cgroup/work.slice/vllm.service/memory.events", "oom_kill 1") in [(e.path, e.value) for e in found.evidence]


def test_an_ancestors_kills_count_only_where_its_limit_binds_this_cgroup(tree):
    # A slice without a limit: its kills were its other services' (or the whole machine's).
    v2_service(tree, events=0, parent_events=5)
    status, _, _ = headroom(tree, "8G")
    assert status == "pass"
    v2_service(tree, events=0, parent_events=5, parent_limit=48 * GiB)
    _, _, (found,) = headroom(tree, "8G")
    assert "cgroup /work.slice, whose memory limit binds this one too" in found.message


def test_v1_counts_kills_in_memory_oom_control(tree):
    minimal_host(tree)
    tree.write("/proc/self/mountinfo", ROOT + "35 26 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    tree.write("/proc/self/cgroup", "4:memory:/docker/abc\n")
    base = "/sys/fs/cgroup/memory/docker/abc"
    tree.write(base + "/memory.limit_in_bytes", "%d\n" % (32 * GiB))
    tree.write(base + "/memory.usage_in_bytes", "%d\n" % GiB)
    tree.write(base + "/memory.stat", "total_inactive_file 0\ntotal_active_file 0\n")
    tree.write(base + "/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    _, _, (found,) = headroom(tree, "8G")
    assert "ended 4 processes in this cgroup (/docker/abc) (%s/memory.oom_control: oom_kill 4" % base in found.message


def test_the_corpus_nfs_mounts_carry_their_backing_device():
    """procfs's real mountinfo (prometheus/procfs fixtures): two NFSv4 mounts stacked at one point
    and an NFSv3 one, each with the device number its bdi is named by."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "procfs" / "fixtures" / "proc" / "26231" / "mountinfo"
    if not path.is_file():
        pytest.skip("the test corpus is not at %s" % path)
    mounts, _ = parse_mountinfo(path.read_text())
    nfs = [(m.mountpoint, m.fstype, m.device, network_kind(m)) for m in mounts if m.fstype.startswith("nfs")]
    assert nfs == [
        ("/mnt/nfs/test", "nfs4", "0:42", "NFS"),
        ("/mnt/nfs/test", "nfs4", "0:42", "NFS"),
        ("/mnt/nfs/test", "nfs", "0:44", "NFS"),
    ]
    assert not any(network_kind(m) for m in mounts if not m.fstype.startswith("nfs"))
