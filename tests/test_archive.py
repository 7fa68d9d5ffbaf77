"""Snapshot archives: `aidoctor snapshot -o host.tar.gz` replays with `--snapshot`, and a crafted
archive is refused member by member before anything is written (exit 2, one line)."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
import tarfile

import pytest

from ai_doctor import archive

from conftest import FIXTURES, fixture_root

LIVE = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/meminfo"), reason="needs a live Linux /proc")
ARGS = [["--model-size", "140G"], ["--model-size", "2G", "--hugepages", "16", "-v"]]


def comparable(report: dict) -> dict:
    report.pop("created")  # when each run ended
    for key in ("source", "root", "live", "captured", "captured_by"):
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
    replayed = run("--snapshot", str(target), "--model-size", "8G", "--format", "json")
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    (tmp_path / "out").mkdir()
    assert archive.unpack(str(target), str(tmp_path / "out")) > 10
    result = run("--root", tmp_path / "out", "--model-size", "8G", "--format", "json")
    assert result.code in (0, 1) and "storage.scheduler" in result.findings()
    assert result.findings() == replayed.findings() and result.statuses() == replayed.statuses()


def test_a_snapshot_repacked_with_tar_c_dir_dot_replays_as_taken(run, tmp_path, monkeypatch):
    # `tar czf s.tar.gz -C DIR .` (the usual way to pack a folder) names the folder itself "./"
    # and every member below it "./etc/…".
    taken = tmp_path / "snap.tar.gz"
    assert run("snapshot", "--root", fixture_root("nvme-mq-deadline"), "-o", str(taken)).code == 0
    (tmp_path / "tree").mkdir()
    archive.unpack(str(taken), str(tmp_path / "tree"))
    repacked = tmp_path / "repacked.tar.gz"
    with tarfile.open(repacked, "w:gz") as out:
        out.add(str(tmp_path / "tree"), arcname=".")
    with tarfile.open(repacked) as packed:
        assert packed.getnames()[:2] == [".", "./.aidoctor"]
    expected = run("--snapshot", str(taken), "--model-size", "8G", "--format", "json")
    again = run("--snapshot", str(repacked), "--model-size", "8G", "--format", "json")
    assert again.code == expected.code and again.findings() == expected.findings() and again.statuses() == expected.statuses()
    for filtered in (True, False):
        if not filtered:
            monkeypatch.delattr(tarfile, "data_filter", raising=False)
        out = tmp_path / ("out-%s" % filtered)
        out.mkdir()
        with tarfile.open(repacked) as packed:
            assert archive.unpack(str(repacked), str(out)) == len(packed.getmembers())
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "tree").iterdir())


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
        ([({"name": "."}, b"x")], "an absolute or empty name"),  # only a folder may be the tree's own
        ([({"name": "./", "type": tarfile.DIRTYPE}, None), ({"name": ".", "type": tarfile.DIRTYPE}, None), MEMINFO], "the same name twice"),
        ([({"name": "etc/../../escape"}, b"x")], "climbs out of the tree"),
        ([({"name": "etc/link", "type": tarfile.SYMTYPE, "linkname": "../../outside"}, None)], "a symbolic link leaving the tree"),
        (
            [({"name": "etc/link", "type": tarfile.SYMTYPE, "linkname": "/etc/shadow"}, None)],
            "a symbolic link leaving the tree (-> '/etc/shadow'); absolute links are refused: take the image with aidoctor snapshot",
        ),
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


def test_members_each_deep_in_folders_of_their_own_are_refused_past_the_folder_limit(run, tmp_path, monkeypatch):
    # A few members can imply many folders: the tree is refused before it is built, in memory
    # and unpacked alike; a tree at the limit is read.
    monkeypatch.setattr(archive, "MAX_FOLDERS", 100)
    deep = "/".join("d" * 9)

    def members(count):
        return [MEMINFO] + [({"name": "%d/%s/f" % (number, deep)}, b"x") for number in range(count)]

    path = craft(tmp_path / "deep.tar.gz", members(11))  # 11 × 10 folders
    result = run("--snapshot", str(path))
    assert result.code == 2 and result.out == "" and "more than 100 folders in the tree: not a snapshot" in result.err
    (tmp_path / "out").mkdir()
    with pytest.raises(archive.ArchiveError, match="more than 100 folders"):
        archive.unpack(str(path), str(tmp_path / "out"))
    assert run("--snapshot", str(craft(tmp_path / "limit.tar.gz", members(9)))).code in (0, 1)  # 9 × 10 + proc


@pytest.mark.parametrize("limit", ["MAX_FOLDERS", "MAX_LEVELS"])
def test_listed_folders_count_towards_the_limits_as_implied_ones_do(run, tmp_path, monkeypatch, limit):
    # Empty folders listed one by one, and chains of folders listed deep: unpacking resolves
    # each name folder by folder, so their depth in all is bounded too.
    monkeypatch.setattr(archive, limit, 100)
    if limit == "MAX_FOLDERS":
        listed = ["e/%d" % number for number in range(100)]  # and e: 101
    else:
        listed = ["/".join(["c"] + ["d"] * depth) for depth in range(14)]  # 1 + 2 + … + 14 = 105 levels
    path = craft(tmp_path / "listed.tar.gz", [MEMINFO] + [({"name": name, "type": tarfile.DIRTYPE}, None) for name in listed])
    words = "more than 100 folders in the tree" if limit == "MAX_FOLDERS" else "more than 100 folder levels in all the names"
    result = run("--snapshot", str(path))
    assert result.code == 2 and words in result.err
    (tmp_path / "out").mkdir()
    with pytest.raises(archive.ArchiveError, match=words):
        archive.unpack(str(path), str(tmp_path / "out"))
    # One fewer is read.
    path = craft(tmp_path / "fewer.tar.gz", [MEMINFO] + [({"name": name, "type": tarfile.DIRTYPE}, None) for name in listed[:-2]])
    assert run("--snapshot", str(path)).code in (0, 1)


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
    assert 'aidoctor --root "$PWD/image" --fail-on high --junit aidoctor.xml' in readme
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
    assert result.code == 2 and "a PAX header of 67108864 bytes, more than the 65536 it may be" in result.err


@pytest.mark.parametrize(
    "members, words",
    [
        ([({"name": "a/" * 3000 + "f"}, b"x")], "a name longer than any file system path (a GNU long name of 6002 bytes)"),
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
    # Executable tuning (a pool asked for here would be a shortfall on this host: rc.local runs).
    tree.write("/etc/rc.local", "#!/bin/sh\necho madvise > /sys/kernel/mm/transparent_hugepage/enabled\nexit 0\n", 0o755)
    tree.write("/etc/sysctl.conf", "vm.swappiness = 10\n")
    tree.link("/etc/sysctl.d/99-sysctl.conf", "../../../../etc/sysctl.conf")  # climbs past /: stops at the root
    target = tmp_path / "t.tar.gz"
    assert run("snapshot", "--root", tree, "-o", str(target)).code == 0
    result = run("--snapshot", str(target), "--format", "json", "-v")
    assert result.code == 0, result.err
    assert result.statuses()["persist.rc-local-ineffective"] == "pass"
    # Unpacked where tarfile has no data filter: the same modes, member by member.
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    (tmp_path / "out").mkdir()
    archive.unpack(str(target), str(tmp_path / "out"))
    assert os.stat(tmp_path / "out/etc/rc.local").st_mode & 0o777 == 0o755
    assert run("--root", tmp_path / "out", "--format", "json", "-v").statuses() == result.statuses()


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="compares with tarfile's data filter")
def test_unpacked_without_the_data_filter_the_tree_is_the_filters_mode_for_mode_time_for_time(tmp_path, monkeypatch):
    # Debian 12's Python 3.11.2 has no filter: an archive too large to hold unpacks through our
    # own extraction, which must leave what the filter leaves, whatever the umask.
    packed = craft(
        tmp_path / "m.tar.gz",
        [
            ({"name": "./", "type": tarfile.DIRTYPE, "mode": 0o700, "mtime": 1_400_000_000}, None),
            MEMINFO,
            ({"name": "etc/rc.local", "mode": 0o4755, "mtime": 1_600_000_000}, b"#!/bin/sh\n"),
            ({"name": "etc/odd", "mode": 0o077, "mtime": 1_600_000_001}, b"x"),
            ({"name": "etc/d", "type": tarfile.DIRTYPE, "mode": 0o700, "mtime": 1_500_000_000}, None),
            ({"name": "etc/d/f", "mode": 0o640, "mtime": 1_600_000_002}, b"y" * 100_000),
            ({"name": "etc/d/l", "type": tarfile.SYMTYPE, "linkname": "f"}, None),
            ({"name": "var/implied/g", "mode": 0o600}, b"z"),
        ],
    )

    def unpacked(name):
        folder = tmp_path / name
        folder.mkdir()
        assert archive.unpack(str(packed), str(folder)) == 8
        found = {}
        for where, folders, files in os.walk(folder):
            for entry in [where] + [os.path.join(where, name) for name in folders + files]:
                info = os.lstat(entry)
                timed = not stat.S_ISLNK(info.st_mode) and not entry.endswith("implied")
                found[os.path.relpath(entry, folder)] = (info.st_mode, int(info.st_mtime) if timed else None)
        return found

    # Not 022: the mode a folder was once made with (0o755) must not pass for the umask's.
    old = os.umask(0o002)
    try:
        filtered = unpacked("filtered")
        monkeypatch.delattr(tarfile, "data_filter")
        ours = unpacked("ours")
    finally:
        os.umask(old)
    assert ours == filtered
    assert filtered["etc/rc.local"] == (stat.S_IFREG | 0o755, 1_600_000_000) and filtered["."][1] == 1_400_000_000
    assert filtered["etc/d"] == (stat.S_IFDIR | 0o775, 1_500_000_000)


# -- hostile archives: refused from their headers, before tarfile parses them ----------------------
# Each is built at the size that was found hostile where that is cheap (gzip members repeat, so a
# long stream costs one compression), and tarfile.open is made to fail: the refusal must come from
# the pre-scan, which reads headers only, whatever they claim.


def header(name, size=0, kind=tarfile.REGTYPE, **fields) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def patched(block: bytes, at: int, data: bytes) -> bytes:
    """``block`` with ``data`` written at ``at``, checksummed again."""
    block = bytearray(block)
    block[at : at + len(data)] = data
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def record(key: bytes, value: bytes) -> bytes:
    body = b" %s=%s\n" % (key, value)
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length = len(b"%d" % length) + len(body)
    return b"%d%s" % (length, body)


def extended(payload: bytes, kind=tarfile.XHDTYPE) -> bytes:
    return header("././@PaxHeader", len(payload), kind) + padded(payload)


def pax(records: dict, member: bytes = b"") -> bytes:
    """A PAX extended header holding ``records`` (bytes keys and values), then ``member``."""
    return extended(b"".join(record(key, value) for key, value in records.items())) + member


def gz(path, *parts, times=1, head=b"", tail=b"", end=b"\0" * 1024):
    """A .tar.gz of ``head``, the raw ``parts`` repeated ``times`` times, ``tail`` and ``end``:
    gzip members concatenate, so a long stream costs one compression."""
    import gzip

    chunk = gzip.compress(b"".join(parts))
    path.write_bytes(gzip.compress(head) + chunk * times + gzip.compress(tail + end))
    return path


def refused_by_prescan(run, monkeypatch, path, words):
    def never(*args, **kwargs):
        raise AssertionError("tarfile.open called: the pre-scan let the archive through")

    monkeypatch.setattr(tarfile, "open", never)
    result = run("--snapshot", str(path))
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and words in lines[0], result.err
    # One short line, whatever the archive holds: names are cut to 80 characters.
    assert len(lines[0]) < 400 + len(str(path)), len(lines[0])
    return lines[0]


MAP = b"0,512," * 4


@pytest.mark.parametrize(
    "records, data",
    [
        # GNU sparse 0.0, 0.1 and 1.0 (the map in the data), each claiming 10^8 blocks
        (
            {
                b"GNU.sparse.size": b"%d" % 10**12,
                b"GNU.sparse.numblocks": b"100000000",
                b"GNU.sparse.offset": b"0",
                b"GNU.sparse.numbytes": b"512",
            },
            b"",
        ),
        ({b"GNU.sparse.size": b"%d" % 10**12, b"GNU.sparse.numblocks": b"100000000", b"GNU.sparse.map": MAP[:-1]}, b""),
        (
            {b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0", b"GNU.sparse.name": b"etc/s", b"GNU.sparse.realsize": b"%d" % 10**12},
            b"100000000\n" + MAP.replace(b",", b"\n"),
        ),
    ],
)
def test_pax_sparse_members_are_refused(run, tmp_path, monkeypatch, records, data):
    member = header("GNUSparseFile.0/etc/s", len(data)) + padded(data)
    path = gz(tmp_path / "sparse.tar.gz", pax(records, member))
    refused_by_prescan(run, monkeypatch, path, "a sparse member (snapshots hold none)")


def test_an_old_gnu_sparse_member_is_refused_before_its_extension_chain(run, tmp_path, monkeypatch):
    # Typeflag S, "extended" set, then 100,000 extension blocks each saying another follows.
    sparse = patched(header("etc/s", 512, tarfile.GNUTYPE_SPARSE), 482, b"\1")
    extension = bytes(504) + b"\1" + bytes(7)
    path = gz(tmp_path / "oldgnu.tar.gz", extension * 1000, times=100, head=sparse)
    refused_by_prescan(run, monkeypatch, path, "member 'etc/s': a sparse member")


def test_pax_records_of_15_mib_are_refused_unread(run, tmp_path, monkeypatch):
    records = {b"comment": b"a" * (15 << 20)}
    path = gz(tmp_path / "paxbig.tar.gz", pax(records, header("etc/x")), times=80)
    assert os.path.getsize(path) < 2 << 20
    size = len(record(b"comment", records[b"comment"]))
    refused_by_prescan(run, monkeypatch, path, "a PAX header of %d bytes, more than the 65536 it may be" % size)


@pytest.mark.parametrize("how", ["pax", "gnu"])
def test_a_link_name_of_15_mib_is_refused_unread_and_not_echoed(run, tmp_path, monkeypatch, how):
    target = b"a/" * (15 << 19)
    link = header("etc/link", 0, tarfile.SYMTYPE)
    if how == "pax":
        member = pax({b"linkpath": target}, link)
        words = "a PAX header of"
    else:
        member = header("././@LongLink", len(target) + 1, tarfile.GNUTYPE_LONGLINK) + padded(target + b"\0") + link
        words = "a GNU long link of 15728641 bytes"
    refused_by_prescan(run, monkeypatch, gz(tmp_path / "link.tar.gz", member), words)


def test_a_name_of_15_mib_is_named_by_its_first_80_characters(run, tmp_path, monkeypatch):
    name = b"n" * (15 << 20)
    member = header("././@LongLink", len(name) + 1, tarfile.GNUTYPE_LONGNAME) + padded(name + b"\0") + header("x")
    line = refused_by_prescan(run, monkeypatch, gz(tmp_path / "name.tar.gz", member), "a name longer than any file system path")
    assert "member %r...: " % ("n" * 80) in line


def test_one_member_beyond_the_limit_is_refused_at_the_headers(run, tmp_path, monkeypatch):
    empty = header("m")
    path = gz(tmp_path / "many.tar.gz", empty * 1000, times=archive.MAX_MEMBERS // 1000, tail=empty)
    refused_by_prescan(run, monkeypatch, path, "more than %d members: not a snapshot" % archive.MAX_MEMBERS)


@pytest.mark.parametrize(
    "value", [b"1e999", b"-1e999", b"inf", b"nan", b"1e20", b"99999999999999999999", b"1_000", b" 5", b"0x10", b"", b"5" * 30]
)
def test_a_pax_time_that_utime_cannot_take_is_refused(run, tmp_path, monkeypatch, value):
    path = gz(tmp_path / "mtime.tar.gz", pax({b"mtime": value}, header("etc/os-release", 0)))
    refused_by_prescan(run, monkeypatch, path, "member 'etc/os-release': a PAX mtime that is no time in range")


def test_a_base_256_header_time_out_of_range_is_refused(run, tmp_path, monkeypatch):
    member = patched(header("etc/os-release"), 136, b"\x80" + b"\xff" * 11)
    refused_by_prescan(run, monkeypatch, gz(tmp_path / "mtime.tar.gz", member), "a modification time out of range")


def test_times_in_range_are_taken(run, tmp_path):
    from conftest import MEMINFO_64G

    data = MEMINFO_64G.encode()
    member = pax({b"mtime": b"-5.5"}, header("proc/meminfo", len(data)) + padded(data))
    member += pax({b"mtime": b"1.7e9", b"atime": b"1700000000.123456"}, header("etc/os-release", 3) + padded(b"x=1"))
    result = run("--snapshot", str(gz(tmp_path / "t.tar.gz", member)), "--format", "json")
    assert result.code in (0, 1), result.err


def test_behind_the_pre_scan_tarfile_reading_is_checked_again(run, tmp_path, monkeypatch):
    # With the pre-scan's record checks off, mtime=1e999 reaches tarfile: refused, not a crash.
    monkeypatch.setattr(archive, "_record_problem", lambda key, value: None)
    path = gz(tmp_path / "mtime.tar.gz", pax({b"mtime": b"1e999"}, header("etc/os-release", 0)))
    result = run("--snapshot", str(path))
    assert result.code == 2 and "member 'etc/os-release': a modification time out of range" in result.err, result.err
    # And members tarfile finds elsewhere than the pre-scan did, or fewer, are refused where
    # tarfile reads the archive again: to unpack it (a replay holds the pre-scan's members).
    scan = archive._Scan.run
    path = craft(tmp_path / "ok.tar.gz", [MEMINFO])
    for change, words in [
        (lambda sizes: sizes.__setitem__(0, 1), "member 'proc/meminfo': tarfile reads it otherwise"),
        (lambda sizes: sizes.append(0), "tarfile stops after 1 members, the pre-scan read 2"),
    ]:

        def changed(self, change=change):
            offsets, sizes, kinds = scan(self)
            change(sizes)
            offsets.append(0)
            return offsets, sizes, kinds + b"0"

        monkeypatch.setattr(archive._Scan, "run", changed)
        (tmp_path / "out").mkdir(exist_ok=True)
        with pytest.raises(archive.ArchiveError, match=re.escape(words)):
            archive.unpack(str(path), str(tmp_path / "out"))


@pytest.mark.parametrize(
    "parts, words",
    [
        ([record(b"path", b"etc/a")[:-1] + b"x"], "a PAX header with a malformed record at byte 0"),
        ([b"12 path=etc/a"], "a PAX header with a malformed record"),
        ([b"9 =etc/a\n"], "a PAX header with a malformed record"),
        ([b"0 path=x\n"], "a PAX header with a malformed record"),
        ([record(b"path", b"etc/a"), b"junk"], "a PAX header with a malformed record"),
        ([record(b"comment", b"1" * 33)], "a PAX header with a run of more than 32 digits"),
        ([record(b"path", b"a" * 4097)], "a PAX path longer than 4096 bytes or holding a NUL"),
        ([record(b"linkpath", b"a\0b")], "a PAX linkpath longer than 4096 bytes or holding a NUL"),
        ([record(b"size", b"-1")], "a PAX size that is no number"),
    ],
)
def test_malformed_pax_records_are_refused(run, tmp_path, monkeypatch, parts, words):
    payload = b"".join(parts)
    member = header("././@PaxHeader", len(payload), tarfile.XHDTYPE) + padded(payload) + header("etc/a")
    refused_by_prescan(run, monkeypatch, gz(tmp_path / "pax.tar.gz", member), words)


@pytest.mark.parametrize(
    "stream, words",
    [
        (pax({b"path": b"a"}, pax({b"path": b"b"}, header("c"))), "two extended headers of one kind for one member"),
        (pax({b"path": b"a"}), "an extended header with no member after it"),
        (
            header("g", 9, tarfile.XGLTYPE) + padded(record(b"path", b"x")) + header("c"),
            "a global PAX header setting 'path' for every member",
        ),
        (padded(b"garbage"), "a header with a bad checksum at byte 0"),
        (header("etc/a", 100)[:-1] + b"\1", "a header with a bad checksum"),
        (header("etc/a", 1 << 20) + bytes(512), "member 'etc/a': the archive ends inside its data"),
        (patched(header("etc/a"), 124, b"\xff" * 12), "member 'etc/a': a size field that is no size"),
        (patched(header("etc/a"), 124, b"9"), "member 'etc/a': a size field that is no size"),
        (header("etc", 512, tarfile.DIRTYPE) + bytes(512), "a folder or link that carries data"),
        (header("etc/z", 0, b"Z"), "member 'etc/z': an unknown member type b'Z'"),
    ],
)
def test_headers_a_snapshot_never_holds_are_refused(run, tmp_path, monkeypatch, stream, words):
    end = b"" if words.startswith("member 'etc/a': the archive ends") else b"\0" * 1024
    refused_by_prescan(run, monkeypatch, gz(tmp_path / "h.tar.gz", stream, end=end), words)


@pytest.mark.parametrize(
    "links",
    [
        [("s", "."), ("a", "s/../x")],  # the kernel follows s first: '..' of the root leaves the tree
        [("a", "s/../x"), ("s", ".")],  # in either order
        [("d/up", ".."), ("e", "d/up/..")],  # d/up is the root: inside; e climbs from it
        [("d/s", "../d"), ("d/a", "s/s/s/../../../..")],
        [("l%d" % i, "l%d" % (i + 1)) for i in range(50)] + [("l50", "..")],  # a long chain that ends outside
        [("a", "d/" * 300)],  # deeper than any member
    ],
)
@pytest.mark.parametrize("data_filter", [True, False])
def test_links_are_followed_through_each_other_as_the_kernel_would(run, tmp_path, monkeypatch, links, data_filter):
    members = [MEMINFO] + [({"name": name, "type": tarfile.SYMTYPE, "linkname": target}, None) for name, target in links]
    path = craft(tmp_path / "links.tar.gz", members)
    result = run("--snapshot", str(path))
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and ": a symbolic link " in lines[0], result.err
    # Refused before anything is written, unpacking with the data filter or without.
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    (tmp_path / "out").mkdir()
    with pytest.raises(archive.ArchiveError, match=": a symbolic link "):
        archive.unpack(str(path), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "x") and os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("data_filter", [True, False])
def test_links_no_lookup_gets_through_are_taken(run, tmp_path, monkeypatch, data_filter):
    """A loop, or a chain of more than 40 links, fails every lookup with ELOOP: nothing can be
    reached through it, and a snapshot of a host that has one (50 links in /sys/block) replays."""
    from conftest import MEMINFO_64G

    meminfo = ({"name": "proc/meminfo"}, MEMINFO_64G.encode())
    chain = [("l%d" % i, "l%d" % (i + 1)) for i in range(49)] + [("l49", "proc/meminfo")]
    loops = [("a", "b"), ("b", "a"), ("c", "a/d"), ("d/self", "self")]
    links = [({"name": name, "type": tarfile.SYMTYPE, "linkname": target}, None) for name, target in chain + loops]
    path = craft(tmp_path / "loops.tar.gz", [meminfo] + links)
    result = run("--snapshot", str(path), "--format", "json")
    assert result.code in (0, 1), result.err
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    (tmp_path / "out").mkdir()
    assert archive.unpack(str(path), str(tmp_path / "out")) == len(links) + 1
    assert run("--root", tmp_path / "out", "--format", "json").findings() == result.findings()
    assert not os.path.exists(tmp_path / "outside") and not os.path.exists(tmp_path / "x")


def test_chains_of_links_inside_the_tree_are_taken(run, tmp_path):
    from conftest import MEMINFO_64G

    meminfo = ({"name": "proc/meminfo"}, MEMINFO_64G.encode())
    chain = [({"name": "l%d" % i, "type": tarfile.SYMTYPE, "linkname": "l%d" % (i + 1)}, None) for i in range(39)]
    chain.append(({"name": "l39", "type": tarfile.SYMTYPE, "linkname": "proc/meminfo"}, None))  # 40 links: the kernel's limit
    others = [
        ({"name": "d/s", "type": tarfile.SYMTYPE, "linkname": "../proc"}, None),
        ({"name": "d/m", "type": tarfile.SYMTYPE, "linkname": "s/../d/s/meminfo"}, None),  # s is /proc, '..' the root
        ({"name": "d/n", "type": tarfile.SYMTYPE, "linkname": "./missing/../../d/m"}, None),
    ]
    result = run("--snapshot", str(craft(tmp_path / "ok.tar.gz", [meminfo] + chain + others)), "--format", "json")
    assert result.code in (0, 1), result.err


def test_a_member_below_a_link_is_refused_whichever_comes_first(run, tmp_path):
    members = [({"name": "etc/passwd"}, b"x"), ({"name": "etc", "type": tarfile.SYMTYPE, "linkname": "proc"}, None)]
    result = run("--snapshot", str(craft(tmp_path / "below.tar.gz", members)))
    assert result.code == 2 and "member 'etc/passwd': lies below a symbolic link" in result.err


def test_the_link_checks_agree_with_the_kernel(tmp_path):
    """Links made on disk and resolved there (realpath follows them component by component, as
    the kernel does): each link the checks follow out of the tree leads out there, and each they
    take stays inside."""
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    names = st.sampled_from(["a", "b", "d/a", "d/e/a"])
    parts = st.sampled_from(["..", "..", ".", "a", "b", "d/a", "d/e/a", "d", "x"])
    targets = st.lists(parts, min_size=1, max_size=4).map("/".join)

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.dictionaries(names, targets, min_size=1, max_size=4))
    @example({"a": ".", "b": "a/../x"})  # lexically inside, out through a
    @example({"b": "d/e/a", "a": "b/../.."})  # lexically outside, inside through b
    def check(links):
        import tempfile

        with tempfile.TemporaryDirectory(dir=tmp_path) as outer:
            root = os.path.join(outer, "tree")
            for name, target in links.items():
                os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
                os.symlink(target, os.path.join(root, name))
            resolver = archive._Links(links)
            for name in links:
                try:
                    resolver.resolve(name, 0)
                    verdict = "inside"
                except archive._Unfollowable as exc:
                    verdict = "outside" if exc.args[0] == archive._OUTSIDE else "loop"
                where = os.path.realpath(os.path.join(root, name))
                if verdict != "loop":
                    inside = where == root or where.startswith(root + os.sep)
                    assert verdict == ("inside" if inside else "outside"), (links, name, where)

    check()


def members_both_ways(data: bytes):
    """The members of a tar stream as the pre-scan reads them for a replay, and as tarfile does;
    each (name, link target, mode, time, size, where its data starts, type)."""
    scan = archive._Scan(io.BytesIO(data), members=True)
    scan.run()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as source:
        theirs = list(source)

    def fields(member):
        # Python 3.9's tarfile keeps the "/" a GNU long name gives a folder; 3.11 on drop it.
        name = member.name.rstrip("/") if member.isdir() else member.name
        return (name, member.linkname, member.mode, member.mtime, member.size, member.offset_data, member.type)

    return [fields(m) for m in scan.held], [fields(m) for m in theirs]


def test_a_replay_reads_each_member_as_tarfile_does():
    """A replay holds the pre-scan's reading of the members, not tarfile's second parse (most of
    its cost): for archives tarfile writes in each of its formats, the two agree field by field."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    part = st.text(st.sampled_from("abé-_.x\udcff\u4e2d"), min_size=1, max_size=70).filter(lambda p: p not in (".", ".."))
    names = st.lists(part, min_size=1, max_size=4).map("/".join)
    kinds = st.sampled_from(["file", "dir", "link"])
    members = st.lists(
        st.tuples(names, kinds, st.integers(0, 0o7777), st.integers(0, 2**33), st.binary(max_size=700), names),
        min_size=1,
        max_size=6,
        unique_by=lambda m: m[0],
    )
    formats = st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(members, formats, st.booleans())
    def check(entries, form, fraction):
        out = io.BytesIO()
        try:
            with tarfile.open(fileobj=out, mode="w", format=form, encoding="utf-8", errors="surrogateescape") as tar:
                for name, kind, mode, mtime, data, target in entries:
                    info = tarfile.TarInfo(name)
                    info.mode, info.mtime = mode, mtime + (0.5 if fraction and form == tarfile.PAX_FORMAT else 0)
                    if kind == "dir":
                        info.type = tarfile.DIRTYPE
                        tar.addfile(info)
                    elif kind == "link":
                        info.type, info.linkname = tarfile.SYMTYPE, target
                        tar.addfile(info)
                    else:
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        except ValueError:
            return  # a name this format cannot hold (ustar: too long, or not ASCII-encodable)
        ours, theirs = members_both_ways(out.getvalue())
        assert ours == theirs

    check()


@pytest.mark.parametrize(
    "blocks, words",
    [
        # A PAX path and a GNU long name for one member: which wins depends on their order.
        (lambda: pax({b"path": b"etc/a"}, long_name(b"etc/b") + header("etc/c")), "both a PAX header and a GNU long name"),
        (lambda: long_name(b"etc/b") + pax({b"path": b"etc/a"}, header("etc/c")), "both a PAX header and a GNU long name"),
        # tarfile finds hdrcharset by searching the header's text, a value's too.
        (lambda: pax({b"comment": b"1 hdrcharset=BINARY"}, header("etc/c")), "hdrcharset other than once"),
        (lambda: extended(record(b"hdrcharset", b"BINARY") + record(b"hdrcharset", b"x")) + header("etc/c"), "hdrcharset other than once"),
    ],
)
def test_headers_whose_reading_depends_on_tarfile_internals_are_refused(run, tmp_path, blocks, words):
    result = run("--snapshot", str(gz(tmp_path / "odd.tar.gz", blocks())))
    assert result.code == 2 and words in result.err, result.err


def long_name(name: bytes) -> bytes:
    return header("././@LongLink", len(name) + 1, tarfile.GNUTYPE_LONGNAME) + padded(name + b"\0")


def test_a_header_field_tarfile_cannot_read_is_refused_in_a_replay_and_unpacking(run, tmp_path):
    # tarfile ends the archive silently at an invalid header after the first.
    path = gz(tmp_path / "mode.tar.gz", header("etc/hostname"), patched(header("etc/os-release"), 100, b"0-644\0"))  # the mode
    result = run("--snapshot", str(path))
    assert result.code == 2 and "member 'etc/os-release': a header field that is no number" in result.err, result.err
    (tmp_path / "out").mkdir()
    with pytest.raises(archive.ArchiveError, match="member 'etc/os-release': a header field that is no number"):
        archive.unpack(str(path), str(tmp_path / "out"))


def checksum_off_by_65521(block: bytes) -> bytes:
    """``block`` whose stored checksum is 65521 more than its sum: the same modulo 65521."""
    block = bytearray(block)
    block[148:155] = b"%06o\0" % (int(block[148:154], 8) + 65521)
    return bytes(block)


@pytest.mark.parametrize(
    "blocks, words",
    [
        (lambda: header("etc/a") + checksum_off_by_65521(header("etc/b")), "a header with a bad checksum"),
        # An extended header's own number fields are read by tarfile too.
        (
            lambda: header("etc/a") + patched(pax({b"path": b"etc/b"})[:512], 100, b"9") + pax({b"path": b"etc/b"})[512:] + header("x"),
            "a header field that is no number",
        ),
        (
            lambda: header("etc/a") + patched(long_name(b"etc/c")[:512], 329, b"x") + long_name(b"etc/c")[512:] + header("x"),
            "a header field that is no number",
        ),
        # tarfile reads the header after a global one as a member, and fails at the end.
        (lambda: header("etc/a") + extended(record(b"comment", b"hi"), tarfile.XGLTYPE), "an extended header with no member after it"),
        # tarfile before 3.12.6 fails on a value not UTF-8, and reads one only up to a newline.
        (lambda: pax({b"hdrcharset": b"\xff"}, header("etc/a")), "a PAX hdrcharset other than BINARY"),
        (
            lambda: extended(record(b"hdrcharset", b"BINARY\nX") + record(b"path", b"etc/\xc3\xa9")) + header("x"),
            "a PAX hdrcharset other than BINARY",
        ),
        # Unpacked, a link or file named like a folder becomes one, or fails.
        (lambda: header("etc/x/.", kind=tarfile.SYMTYPE, linkname="y"), "a file or link named as a folder"),
        (lambda: header("etc/f/.", 1) + padded(b"x"), "a file or link named as a folder"),
    ],
)
def test_headers_tarfile_would_read_otherwise_are_refused_by_the_pre_scan(run, tmp_path, blocks, words):
    """A replay holds the pre-scan's members: what tarfile, unpacking, would stop at, fail on or
    read differently is refused there, in both, with the same line."""
    path = gz(tmp_path / "odd.tar.gz", blocks())
    result = run("--snapshot", str(path))
    assert result.code == 2 and words in result.err, result.err
    (tmp_path / "out").mkdir()
    with pytest.raises(archive.ArchiveError, match=re.escape(words)):
        archive.unpack(str(path), str(tmp_path / "out"))


def test_what_reading_garbage_raises_is_one_line(tmp_path, monkeypatch):
    import struct
    import zlib

    path = craft(tmp_path / "ok.tar.gz", [MEMINFO])
    for error in (
        zlib.error("bad"),
        struct.error("bad"),
        OverflowError("big"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
        EOFError(),
    ):

        def fail(self, error=error):
            raise error

        monkeypatch.setattr(archive._Scan, "run", fail)
        with pytest.raises(archive.ArchiveError) as caught:
            archive.unpack(str(path), str(tmp_path / "out"))
        assert "not a readable snapshot archive" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("mangle", ["flip", "truncate", "bz2", "xz"])
def test_damaged_compressed_streams_are_one_line_exit_2(run, tmp_path, mangle):
    import bz2
    import lzma

    data = craft(tmp_path / "ok.tar.gz", [MEMINFO]).read_bytes()
    if mangle == "flip":
        data = data[:20] + bytes([data[20] ^ 0xFF]) + data[21:]
    elif mangle == "truncate":
        data = data[: len(data) // 2]
    elif mangle == "bz2":
        data = bz2.compress(b"x" * 1000)[:-10]
    else:
        data = lzma.compress(bytes(2048))[:30]
    (tmp_path / "bad.tar.gz").write_bytes(data)
    result = run("--snapshot", str(tmp_path / "bad.tar.gz"))
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err


@pytest.mark.parametrize("data_filter", [True, False])
def test_archives_aidoctor_writes_unpack_with_long_names_and_links(run, tmp_path, monkeypatch, data_filter):
    from conftest import Tree, minimal_host

    tree = minimal_host(Tree(tmp_path / "host"))
    long_name = "/etc/sysctl.d/" + "x" * 150 + ".conf"
    tree.write(long_name, "vm.swappiness = 10\n")
    tree.write("/etc/sysctl.d/ünïcode.conf", "vm.swappiness = 10\n")
    tree.link("/etc/sysctl.d/99-sysctl.conf", "/etc/sysctl.conf")
    tree.write("/etc/sysctl.conf", "vm.swappiness = 10\n")
    target = tmp_path / "t.tar.gz"
    assert run("snapshot", "--root", tree, "-o", str(target)).code == 0
    with tarfile.open(target) as packed:
        extended = [m.name for m in packed.getmembers() if m.pax_headers]
    # Whole-second times: only the names a ustar header cannot hold take a PAX header.
    assert sorted(extended) == sorted(["etc/sysctl.d/" + "x" * 150 + ".conf", "etc/sysctl.d/ünïcode.conf"])
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    assert archive.unpack(str(target), str(out)) > 10
    assert (out / long_name.lstrip("/")).read_text() == "vm.swappiness = 10\n"
    assert os.readlink(out / "etc/sysctl.d/99-sysctl.conf") == "../sysctl.conf"


# -- compressed framing: read by zlib, bz2 and lzma, never byte by byte ----------------------------


@pytest.mark.parametrize("middle, name, after", [(1 << 20, b"", 0), (0, b"n" * (16 << 20), 0), (0, b"", 200 << 20)])
def test_gzip_padding_and_file_names_are_read_at_once(tmp_path, middle, name, after):
    """GzipFile reads zeros padding a member, and a header's file name, byte by byte: 30 s for
    200 MiB of either. Here the first member holds the header, the second the data; zeros are
    a hole in the file, so it stays small on disk. Zeros after the archive are never read."""
    import gzip

    tar = gzip.decompress(craft(tmp_path / "ok.tar.gz", [MEMINFO]).read_bytes())
    first = bytearray(gzip.compress(tar[:512]))
    if name:
        first[3] |= 0x08  # FNAME: a NUL-terminated name after the ten header bytes
        first[10:10] = name + b"\0"
    path = tmp_path / "framed.tar.gz"
    with open(path, "wb") as out:
        out.write(first)
        out.seek(middle, os.SEEK_CUR)
        out.write(gzip.compress(tar[512:]))
        out.truncate(out.tell() + after)
    out = tmp_path / "out"
    out.mkdir()
    assert archive.unpack(str(path), str(out)) == 1
    assert (out / "proc/meminfo").read_bytes() == MEMINFO[1]


def test_thousands_of_empty_gzip_members_or_mebibytes_of_zeros_between_are_refused(tmp_path):
    import gzip

    path = tmp_path / "streams.tar.gz"
    path.write_bytes(gzip.compress(b"") * 5000 + craft(tmp_path / "ok.tar.gz", [MEMINFO]).read_bytes())
    with pytest.raises(archive.ArchiveError, match="more than 4096 compressed streams"):
        archive.unpack(str(path), str(tmp_path))
    with open(path, "wb") as out:
        out.write(gzip.compress(b""))
        out.truncate(out.tell() + (200 << 20))
        out.seek(0, os.SEEK_END)
        out.write(craft(tmp_path / "ok.tar.gz", [MEMINFO]).read_bytes())
    with pytest.raises(archive.ArchiveError, match="more than 1024 KiB of zeros after a compressed stream"):
        archive.unpack(str(path), str(tmp_path))


@pytest.mark.parametrize("how", ["bz2", "xz", "tar"])
def test_bzip2_xz_and_plain_tar_archives_unpack(tmp_path, how):
    import bz2
    import gzip
    import lzma

    tar = gzip.decompress(craft(tmp_path / "ok.tar.gz", [MEMINFO]).read_bytes())
    data = {"bz2": bz2.compress(tar) * 2, "xz": lzma.compress(tar) + bytes(8), "tar": tar}[how]
    (tmp_path / "a.tar.gz").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    assert archive.unpack(str(tmp_path / "a.tar.gz"), str(out)) == 1
    assert (out / "proc/meminfo").read_bytes() == MEMINFO[1]


def test_an_xz_stream_asking_for_gibibytes_is_refused(tmp_path):
    import lzma
    import struct
    import zlib

    data = bytearray(lzma.compress(tarfile.TarInfo("x").tobuf(), check=lzma.CHECK_CRC32))
    size = (data[12] + 1) * 4  # the block header, after the 12-byte stream header
    block = data[12 : 12 + size]
    block[block.index(0x21) + 2] = 40  # the LZMA2 dictionary: 4 GiB
    block[-4:] = struct.pack("<I", zlib.crc32(bytes(block[:-4])))
    data[12 : 12 + size] = block
    (tmp_path / "a.tar.gz").write_bytes(bytes(data))
    with pytest.raises(archive.ArchiveError, match="Memory usage limit"):
        archive.unpack(str(tmp_path / "a.tar.gz"), str(tmp_path))
