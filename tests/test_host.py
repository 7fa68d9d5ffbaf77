"""The Host reader: outcomes instead of exceptions, capped reads, links kept inside the root."""

from __future__ import annotations

import os
import stat

import pytest

from ai_doctor.host import MISSING, OK, BadTree, Host, join_link


def test_ok_missing_and_not_a_file(tree):
    tree.write("/proc/meminfo", "MemTotal: 1 kB\n")
    (tree.root / "etc/sysctl.d").mkdir(parents=True)
    host = Host(str(tree))
    assert host.read_text("/proc/meminfo").data == "MemTotal: 1 kB\n"
    assert host.read_text("/proc/nothing").status == MISSING
    assert host.read_text("/proc/meminfo/below").status == MISSING  # ENOTDIR is absence too
    got = host.read_text("/etc/sysctl.d")
    assert got.status == "error" and got.detail == "not a regular file"


def test_reads_are_capped_not_sized(tree):
    tree.write("/proc/big", b"x" * 5000)
    got = Host(str(tree)).read_bytes("/proc/big", cap=1024)
    assert got.ok and got.truncated and len(got.data) == 1024
    assert not Host(str(tree)).read_bytes("/proc/big", cap=5000).truncated


def test_a_fifo_does_not_hang_the_run(tree):
    (tree.root / "proc").mkdir(parents=True)
    os.mkfifo(tree.root / "proc/meminfo")
    got = Host(str(tree)).read_text("/proc/meminfo")
    assert got.status == "error" and "regular" in got.detail


def test_text_that_is_not_utf8_is_replaced(tree):
    tree.write("/etc/hostname", b"caf\xe9\n")
    assert Host(str(tree)).read_text("/etc/hostname").data == "caf\ufffd\n"


def test_manifest_marks_paths_denied_and_failing(tree):
    tree.write("/boot/config-1", "CONFIG_X=y\n")
    tree.write("/sys/x/y", "1\n")
    tree.manifest(uid=1000, outcomes={"/boot/config-1": "denied", "/sys/x": "EIO: Input/output error"})
    host = Host(str(tree))
    assert host.read_text("/boot/config-1").status == "denied"
    got = host.read_text("/sys/x/y")
    assert got.status == "error" and got.detail == "EIO: Input/output error"
    assert host.listdir("/sys/x").status == "error"
    assert host.euid == 1000


def test_the_manifest_is_not_part_of_the_host(tree):
    tree.write("/etc/hostname", "h\n")
    tree.manifest(uid=0)
    host = Host(str(tree))
    assert host.read_text("/.aidoctor/manifest.json").status == MISSING
    assert ".aidoctor" not in host.listdir("/").data


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"outcomes": {"/a": 5}}', '{"outcomes": []}'])
def test_a_broken_manifest_is_refused(tree, text):
    tree.write("/.aidoctor/manifest.json", text)
    with pytest.raises(BadTree):
        Host(str(tree))


def test_a_manifest_link_leaving_the_tree_is_refused(tree, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text('{"uid": 0}')
    tree.link("/.aidoctor/manifest.json", str(outside))
    with pytest.raises(BadTree, match="the manifest is a symbolic link"):
        Host(str(tree))


def test_a_manifest_folder_that_is_a_link_is_refused(tree, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/manifest.json").write_text('{"uid": 0}')
    tree.link("/.aidoctor", str(tmp_path / "elsewhere"))
    with pytest.raises(BadTree, match="not a directory"):
        Host(str(tree))


def test_a_manifest_fifo_is_refused_without_hanging(tree):
    (tree.root / ".aidoctor").mkdir(parents=True)
    os.mkfifo(tree.root / ".aidoctor/manifest.json")
    with pytest.raises(BadTree, match="not a regular file"):
        Host(str(tree))


def test_real_permission_denied_is_an_outcome(tree):
    if os.geteuid() == 0:
        pytest.skip("root reads everything; tests/test_nonroot.py runs a real user")
    secret = tree.write("/etc/sysctl.d/10-secret.conf", "vm.x = 1\n", mode=0o000)
    assert Host(str(tree)).read_text("/etc/sysctl.d/10-secret.conf").status == "denied"
    secret.chmod(0o644)


@pytest.fixture
def outside(tmp_path):
    """A file beside the tree that no read through the tree may ever return."""
    (tmp_path / "secret").write_text("outside the root\n")
    return tmp_path / "secret"


def test_absolute_links_are_rerooted(tree, outside):
    tree.write("/etc/real.conf", "inside\n")
    tree.link("/etc/sysctl.d/abs.conf", "/etc/real.conf")
    tree.link("/etc/sysctl.d/escape.conf", str(outside))
    host = Host(str(tree))
    assert host.read_text("/etc/sysctl.d/abs.conf").data == "inside\n"
    assert host.read_text("/etc/sysctl.d/escape.conf").status == MISSING


def test_dotdot_is_clamped_at_the_root(tree, outside):
    tree.write("/secret", "the tree's own\n")
    tree.link("/etc/climb", "../../../../../../../secret")
    tree.link("/etc/dir-climb", "../../..")
    host = Host(str(tree))
    assert host.read_text("/etc/climb").data == "the tree's own\n"
    assert host.read_text("/etc/dir-climb/secret").data == "the tree's own\n"
    assert host.read_text("/../../secret").data == "the tree's own\n"
    assert "secret" in host.listdir("/etc/dir-climb").data


def test_intermediate_links_resolve_inside(tree, outside):
    tree.write("/sys/devices/pci0/block/nvme0n1/queue/scheduler", "[none] mq-deadline\n")
    tree.link("/sys/block/nvme0n1", "../devices/pci0/block/nvme0n1")
    tree.link("/proc/self", "4242")
    tree.write("/proc/4242/cgroup", "0::/\n")
    tree.link("/lib", "/usr/lib")
    tree.write("/usr/lib/os-release", "ID=debian\n")
    tree.link("/escape", str(outside.parent))
    host = Host(str(tree))
    assert host.read_text("/sys/block/nvme0n1/queue/scheduler").data.startswith("[none]")
    assert host.read_text("/proc/self/cgroup").data == "0::/\n"
    assert host.read_text("/lib/os-release").ok
    assert host.read_text("/escape/secret").status == MISSING
    assert host.readlink("/sys/block/nvme0n1").data == "../devices/pci0/block/nvme0n1"
    assert host.readlink("/proc/4242/cgroup").data is None  # exists, not a link


def test_link_loops_stop(tree):
    tree.link("/a", "/b")
    tree.link("/b", "/a")
    tree.link("/self", "self")
    host = Host(str(tree))
    got = host.read_text("/a")
    assert got.status == "error" and got.detail.startswith("ELOOP")
    assert host.read_text("/self/x").status == "error"
    assert host.stat("/a")[0].status == "error"


def test_every_access_is_logged(tree):
    tree.write("/proc/meminfo", "x\n")
    host = Host(str(tree))
    host.read_text("/proc/meminfo")
    host.listdir("/proc")
    host.readlink("/proc/none")
    host.stat("/proc")
    assert [(kind, path, got.status) for kind, path, got in host.log] == [
        ("file", "/proc/meminfo", OK),
        ("dir", "/proc", OK),
        ("link", "/proc/none", MISSING),
        ("stat", "/proc", OK),
    ]


def test_trace_links_records_links_on_the_way(tree):
    tree.link("/proc/self", "77")
    tree.write("/proc/77/mountinfo", "x\n")
    host = Host(str(tree), trace_links=True)
    host.read_text("/proc/self/mountinfo")
    assert ("link", "/proc/self") in [(kind, path) for kind, path, _got in host.log]


def test_paths_are_normalised(tree):
    tree.write("/proc/meminfo", "x\n")
    host = Host(str(tree))
    assert host.read_text("proc//./meminfo/").path == "/proc/meminfo"


def test_live_host_reads_this_machine():
    host = Host("/")
    assert host.live and host.euid == os.geteuid()
    assert host.read_text("/proc/self/status").ok


@pytest.mark.parametrize(
    "path, target, expected",
    [
        ("/sys/block/sda", "../devices/pci0/sda", "/sys/devices/pci0/sda"),
        ("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf", "/etc/sysctl.conf"),
        ("/etc/x", "/usr/lib/x", "/usr/lib/x"),
        ("/a", "../../../b", "/b"),
    ],
)
def test_join_link(path, target, expected):
    assert join_link(path, target) == expected


def test_a_text_cut_at_the_cap_ends_at_its_last_whole_line(tree):
    tree.write("/etc/sysctl.d/10-big.conf", "vm.swappiness = 10\nvm.nr_hugepages = 4096\n")
    got = Host(str(tree)).read_text("/etc/sysctl.d/10-big.conf", cap=24)
    assert got.truncated and got.data == "vm.swappiness = 10\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_node_in_a_tree_is_never_opened(tree):
    # Opening some devices acts on this machine (a watchdog arms when opened): refuse first.
    tree.write("/etc/os-release", "ID=debian\n")
    (tree.root / "dev").mkdir()
    os.mknod(str(tree.root / "dev/fake-watchdog"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    tree.link("/etc/kernel/cmdline", "/dev/fake-watchdog")
    host = Host(str(tree))
    opened = []
    real_open = os.open
    try:
        os.open = lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k)
        got = host.read_text("/etc/kernel/cmdline")
        derived = host.derive("/etc/kernel/cmdline", "modinfo", lambda stream: "x")
    finally:
        os.open = real_open
    assert got.detail == derived.detail == "not a regular file"
    assert not [p for p in opened if "fake-watchdog" in str(p)]


def test_paths_in_one_spelling_whichever_way_they_are_written():
    import itertools

    from ai_doctor.host import _normal

    for length in range(1, 7):
        for pieces in itertools.product(["/", "a", ".", "..", "b"], repeat=length):
            path = "".join(pieces)
            parts = [part for part in path.split("/") if part and part != "."]
            assert _normal(path) == "/" + "/".join(parts), path


def test_a_derivation_over_the_cap_is_kept_in_part_and_says_so_through_cache_and_snapshots(tree, tmp_path, monkeypatch):
    from ai_doctor import host as host_module
    from ai_doctor import snapshot
    from ai_doctor.engine import _read_size

    monkeypatch.setattr(host_module, "DERIVED_CAP", 4096)
    tree.write("/lib/modules/big.ko", b"\x7fELF")
    lines = "".join("line %04d of what was found\n" % n for n in range(400))  # ~11 KiB

    def derive(root):
        found = Host(root, trace_links=True)
        return found, found.derive("/lib/modules/big.ko", "modinfo", lambda stream: lines)

    for _ in range(2):  # extracted, then from the cache
        live, got = derive(str(tree))
        assert got.ok and got.truncated and lines.startswith(got.data) and got.data.endswith("\n")
        assert 4096 - 100 < len(got.data.encode()) <= 4096 and _read_size(got) == 4096 - 64
    # A snapshot's record stays within what a replay reads of it; a snapshot of that replay
    # (and of that one) keeps saying the text is in part.
    for number in range(2):
        snapshot.write_tree(live, str(tmp_path / ("snap%d" % number)), snapshot.manifest_for(live))
        live, replayed = derive(str(tmp_path / ("snap%d" % number)))
        assert (replayed.data, replayed.truncated, replayed.detail) == (got.data, True, got.detail)


def test_a_record_over_the_cap_replays_in_part_and_a_snapshot_of_it_says_so(tree, tmp_path, monkeypatch):
    from ai_doctor import host as host_module
    from ai_doctor import snapshot

    monkeypatch.setattr(host_module, "DERIVED_CAP", 4096)
    # Written by hand or by something else: longer than any record aidoctor writes.
    tree.write("/.aidoctor/manifest.json", '{"format": 1}')
    tree.write("/.aidoctor/derived/modinfo/lib/modules/big.ko", "".join("name=x%d\n" % n for n in range(2000)))
    replay = Host(str(tree), trace_links=True)
    got = replay.derive("/lib/modules/big.ko", "modinfo", lambda stream: "never called")
    assert got.ok and got.truncated and got.data.endswith("\n") and got.data.startswith("name=x0\nname=x1\n")
    snapshot.write_tree(replay, str(tmp_path / "again"), snapshot.manifest_for(replay))
    again = Host(str(tmp_path / "again")).derive("/lib/modules/big.ko", "modinfo", lambda stream: "never called")
    assert (again.data, again.truncated) == (got.data, True)


def test_a_derivation_of_one_line_over_the_cap_says_how_much_was_read(tree, monkeypatch):
    from ai_doctor import host as host_module
    from ai_doctor.engine import _read_size

    monkeypatch.setattr(host_module, "DERIVED_CAP", 4096)
    tree.write("/lib/modules/big.ko", b"\x7fELF")
    got = Host(str(tree)).derive("/lib/modules/big.ko", "modinfo", lambda stream: "parm=" + "x" * 10000)
    # Not one whole line within it: nothing kept, and the note says the first 4 KiB, not 0 bytes.
    assert got.ok and got.truncated and got.data == "" and _read_size(got) == 4096 - 64
