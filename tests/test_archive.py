"""Snapshot archives: `aidoctor snapshot -o host.tar.gz` replays with `--snapshot`, and a crafted
archive is refused member by member before anything is written (exit 2, one line)."""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tarfile

import pytest

from ai_doctor import archive

from conftest import FIXTURES, fixture_root

LIVE = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/meminfo"), reason="needs a live Linux /proc")
ARGS = [["--model-size", "140G"], ["--model-size", "2G", "--hugepages", "16", "-v"]]


def comparable(report: dict) -> dict:
    for key in ("source", "root", "live"):
        report["host"].pop(key)
    report["options"].pop("argv")
    return report


def without_numbers(value):
    """A live host's counters (MemAvailable, Committed_AS) move between the snapshot and the
    live run; what must match is every finding, check and sentence around those numbers."""
    if isinstance(value, dict):
        return {key: without_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_numbers(item) for item in value]
    if isinstance(value, str):
        return re.sub(r"[0-9]+", "#", value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "#"
    return value


@LIVE
def test_a_live_snapshot_archive_gives_the_live_findings(run, tmp_path):
    target = tmp_path / "host.tar.gz"
    result = run("snapshot", "-o", str(target))
    assert result.code == 0 and "analyse it with: aidoctor --snapshot" in result.err
    with tarfile.open(target) as tar:
        names = tar.getnames()
        assert ".aidoctor/manifest.json" in names
        # Absolute link targets are stored relative to the link: the data filter takes them.
        assert all(not m.linkname.startswith("/") for m in tar.getmembers() if m.issym())
    for args in ARGS:
        live = comparable(run(*(args + ["--format", "json"])).json)
        replayed = run("--snapshot", str(target), *(args + ["--format", "json"])).json
        assert replayed["host"]["source"] == "snapshot %s" % target
        assert without_numbers(comparable(replayed)) == without_numbers(live)


@pytest.mark.parametrize("name", ["guide-followed-literally", "permission-denied", "nvme-mq-deadline"])
def test_a_tree_snapshot_archive_replays_identically(run, tmp_path, name):
    target = tmp_path / "snap.tgz"
    assert run("snapshot", "--root", fixture_root(name), "-o", str(target)).code == 0
    expect = json.loads((FIXTURES / name / "expect.json").read_text())
    original = comparable(run("--root", fixture_root(name), *expect["args"], "--format", "json").json)
    replayed = comparable(run("--snapshot", str(target), *expect["args"], "--format", "json").json)
    assert replayed == original


def test_unpacking_without_the_data_filter_takes_the_same_archive(run, tmp_path, monkeypatch):
    target = tmp_path / "snap.tar.gz"
    assert run("snapshot", "--root", fixture_root("nvme-mq-deadline"), "-o", str(target)).code == 0
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    result = run("--snapshot", str(target), "--model-size", "8G", "--format", "json")
    assert result.code in (0, 1) and "storage.scheduler" in result.findings()


# -- crafted archives ---------------------------------------------------------------------------


def craft(path, members):
    """A .tar.gz of (TarInfo fields, data) pairs."""
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as out:
        for fields, data in members:
            fields = dict(fields)
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            else:
                out.addfile(info)
    return path


MEMINFO = ({"name": "proc/meminfo"}, b"MemTotal: 1048576 kB\n")


@pytest.mark.parametrize(
    "members, words",
    [
        ([({"name": "/etc/passwd"}, b"x")], "an absolute or empty name"),
        ([({"name": "etc/../../escape"}, b"x")], "climbs out of the tree"),
        ([({"name": "etc/link", "type": tarfile.SYMTYPE, "linkname": "../../outside"}, None)], "a symbolic link leaving the tree"),
        ([({"name": "etc/link", "type": tarfile.SYMTYPE, "linkname": "/etc/shadow"}, None)], "a symbolic link leaving the tree"),
        (
            [({"name": "etc", "type": tarfile.SYMTYPE, "linkname": "."}, None), ({"name": "etc/passwd"}, b"x")],
            "lies below a symbolic link",
        ),
        ([MEMINFO, ({"name": "etc/hard", "type": tarfile.LNKTYPE, "linkname": "proc/meminfo"}, None)], "a hard link"),
        ([({"name": "dev/sda", "type": tarfile.BLKTYPE, "devmajor": 8}, None)], "a device, FIFO or other special file"),
        ([({"name": "run/fifo", "type": tarfile.FIFOTYPE}, None)], "a device, FIFO or other special file"),
    ],
)
def test_crafted_members_are_refused_with_exit_2(run, tmp_path, members, words):
    path = craft(tmp_path / "bad.tar.gz", list(members))
    result = run("--snapshot", str(path))
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aidoctor: error: --snapshot %s: member " % path) and words in lines[0], result.err
    assert not (tmp_path / "passwd").exists() and not (tmp_path / "escape").exists()


def test_a_compression_bomb_is_refused_before_it_inflates(run, tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_UNPACKED", 1 << 20)
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as out:
        info = tarfile.TarInfo("proc/meminfo")
        info.size = 4 << 20  # 4 MiB of zeros: a few KiB compressed
        out.addfile(info, io.BytesIO(bytes(info.size)))
    assert os.path.getsize(path) < 64 << 10
    result = run("--snapshot", str(path))
    assert result.code == 2 and "more than 1 MiB unpacked" in result.err


def test_an_oversized_or_broken_archive_is_refused(run, tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b not really gzip")
    result = run("--snapshot", str(garbage))
    assert result.code == 2 and "not a readable snapshot archive" in result.err
    monkeypatch.setattr(archive, "MAX_ARCHIVE", 10)
    result = run("--snapshot", str(craft(tmp_path / "ok.tar.gz", [MEMINFO])))
    assert result.code == 2 and "more than the 0 MiB a snapshot can be" in result.err
    assert "No such file or directory" in run("--snapshot", str(tmp_path / "none.tar.gz")).err


def test_an_archive_without_a_host_is_named(run, tmp_path):
    path = craft(tmp_path / "empty.tar.gz", [({"name": "notes.txt"}, b"hello")])
    result = run("--snapshot", str(path))
    assert result.code == 2 and "holds no host tree" in result.err
    assert "give --root or --snapshot, not both" in run("--snapshot", str(path), "--root", fixture_root("healthy-tuned")).err


def test_the_golden_image_ci_command_from_the_readme(run, tmp_path):
    import xml.etree.ElementTree as ET

    readme = (FIXTURES.parent / "README.md").read_text()
    assert 'aidoctor --root "$IMAGE_ROOT" --fail-on high --junit aidoctor.xml' in readme
    target = tmp_path / "aidoctor.xml"
    result = run("--root", fixture_root("image-without-proc"), "--fail-on", "high", "--junit", str(target))
    assert result.code == 0  # the image's one finding is low
    suite = ET.parse(target).getroot().find("testsuite")
    assert suite.get("failures") == "0" and int(suite.get("skipped")) > 0
    assert "kernel 6.8.0-45-generic" in result.out  # the kernel the image boots, from /boot


def test_image_mode_can_be_forced_on_a_tree_with_proc(run):
    result = run("--root", fixture_root("guide-followed-literally"), "--image", "--model-size", "140G", "--format", "json", "-v")
    statuses = result.statuses()
    assert result.json["host"]["source"].startswith("image at ")
    assert statuses["memory.headroom"] == "skip" and statuses["storage.scheduler"] == "skip"
    # Judged from what boot sets: Debian's build default, schedutil.
    assert statuses["cpu.governor"] == "finding"
    assert statuses["persist.sysctl-conf-duplicates"] == "finding" and statuses["overcommit.ratio-ignored"] == "finding"
    assert "--image goes with --root" in run("--image").err


def test_a_header_built_to_exhaust_memory_is_refused(run, tmp_path):
    import gzip

    path = tmp_path / "paxbomb.tar.gz"
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 64 << 20
    with gzip.open(path, "wb") as out:
        out.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        zeros = bytes(1 << 20)
        for _ in range(64):
            out.write(zeros)
    result = run("--snapshot", str(path))
    assert result.code == 2 and "a header or read of more than 16 MiB" in result.err


@pytest.mark.parametrize(
    "members, words",
    [
        ([({"name": "a/" * 3000 + "f"}, b"x")], "longer or deeper than any file system path"),
        ([({"name": "q", "type": tarfile.SYMTYPE, "linkname": "etc/sysctl.conf"}, None), ({"name": "q"}, b"x")], "the same name twice"),
        ([({"name": "etc/x", "type": tarfile.SYMTYPE, "linkname": "a\nb/../../.."}, None)], "leaving the tree"),
    ],
)
def test_deep_duplicate_and_odd_members_are_one_line_exit_2(run, tmp_path, members, words):
    result = run("--snapshot", str(craft(tmp_path / "odd.tar.gz", list(members))))
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and words in result.err


def test_a_fifo_or_a_non_archive_is_refused_at_once(run, tmp_path):
    os.mkfifo(tmp_path / "ff")
    assert "not a regular file" in run("--snapshot", str(tmp_path / "ff")).err
    (tmp_path / "empty.tar.gz").write_bytes(b"")
    result = run("--snapshot", str(tmp_path / "empty.tar.gz"))
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1


def test_modes_and_climbing_links_survive_without_the_data_filter(run, tree, tmp_path, monkeypatch):
    from conftest import minimal_host

    minimal_host(tree)
    tree.write("/etc/rc.local", "#!/bin/sh\necho 1024 > /proc/sys/vm/nr_hugepages\nexit 0\n", 0o755)
    tree.write("/etc/sysctl.conf", "vm.swappiness = 10\n")
    tree.link("/etc/sysctl.d/99-sysctl.conf", "../../../../etc/sysctl.conf")  # climbs past /: stops at the root
    target = tmp_path / "t.tar.gz"
    assert run("snapshot", "--root", tree, "-o", str(target)).code == 0
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    result = run("--snapshot", str(target), "--format", "json", "-v")
    assert result.code == 0, result.err
    assert result.statuses()["persist.rc-local-ineffective"] == "pass"
