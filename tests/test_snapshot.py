"""A snapshot replays to the same findings as the run that took it."""

from __future__ import annotations

import json
import os
import sys

import pytest

from ai_doctor import snapshot
from ai_doctor.checkup import checkup
from ai_doctor.host import Host
from ai_doctor.reports.json import as_dict

from conftest import FIXTURES, fixture_root

ARGS = [[], ["--model-size", "140G"], ["--model-size", "2G", "--hugepages", "16"], ["--params", "8B", "-v"]]


def comparable(report: dict) -> dict:
    report.pop("created")  # when each run ended
    for key in ("source", "root", "live", "captured", "captured_by"):
        report["host"].pop(key)
    report["options"].pop("argv")
    return report


def replay_matches(run, source_args, destination, args):
    original = comparable(run(*(source_args + args + ["--format", "json"])).json)
    replayed = comparable(run(*(["--root", destination] + args + ["--format", "json"])).json)
    # Fixes for an image name where it lies (chroot DIR …): the one allowed difference.
    if source_args:
        replayed = json.loads(json.dumps(replayed).replace(str(destination), str(source_args[1])))
    assert replayed == original


LIVE = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/meminfo"), reason="needs a live Linux /proc")


def request_for(args):
    from ai_doctor import api, cli

    return api.request_from(cli._parser().parse_args(args), args)


@LIVE
@pytest.mark.parametrize("args", ARGS)
def test_the_record_of_a_live_run_replays_identically(tmp_path, args):
    # The live run and its record are the same reads, so live values that drift between two
    # runs (MemAvailable) cannot make them differ.
    host = Host("/", trace_links=True)
    live = as_dict(checkup(host, request_for(args)))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    replayed = as_dict(checkup(Host(str(tmp_path / "snap")), request_for(args)))
    assert comparable(replayed) == comparable(live)


@LIVE
def test_snapshot_command_replays_the_same_findings(run, tmp_path):
    destination = tmp_path / "snap"
    result = run("snapshot", "--dir", "-o", destination)
    assert result.code == 0 and "analyse it with: aidoctor --root" in result.err
    manifest = json.loads((destination / ".aidoctor/manifest.json").read_text())
    assert manifest["uid"] == os.geteuid() and manifest["format"] == 1
    for args in ARGS:
        live = run(*(args + ["--format", "json"]))
        replayed = run(*(["--root", destination] + args + ["--format", "json"]))
        assert replayed.findings() == live.findings() and replayed.statuses() == live.statuses()


@pytest.mark.parametrize("name", sorted(path.parent.name for path in FIXTURES.glob("*/expect.json")))
def test_tree_snapshot_replays_identically(run, tmp_path, name):
    destination = tmp_path / "snap"
    expect = json.loads((FIXTURES / name / "expect.json").read_text())
    # What --model reads is kept only when the snapshot is asked to keep it.
    model = expect["args"][expect["args"].index("--model") :][:2] if "--model" in expect["args"] else []
    assert run("snapshot", "--root", fixture_root(name), "--dir", "-o", destination, *model).code == 0
    for args in ARGS + [expect["args"]]:
        replay_matches(run, ["--root", fixture_root(name)], destination, args)


def test_snapshot_keeps_the_content_of_listed_files(tmp_path):
    host = snapshot.capture(fixture_root("hugepage-shortfall"))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    written = (tmp_path / "snap/etc/sysctl.d/60-hugepages.conf").read_text()
    assert written == (FIXTURES / "hugepage-shortfall/root/etc/sysctl.d/60-hugepages.conf").read_text()


def test_snapshot_records_refusals_in_the_manifest(run, tmp_path):
    destination = tmp_path / "snap"
    run("snapshot", "--root", fixture_root("permission-denied"), "--dir", "-o", destination)
    outcomes = json.loads((destination / ".aidoctor/manifest.json").read_text())["outcomes"]
    assert outcomes["/boot/config-6.8.0-45-generic"] == "denied"


def test_snapshot_refuses_an_existing_destination_and_names_what_it_is(run, tmp_path):
    result = run("snapshot", "--dir", "-o", tmp_path)
    assert result.code == 2 and "a folder of that name exists" in result.err
    (tmp_path / "host.tar.gz").write_bytes(b"")
    result = run("snapshot", "-o", tmp_path / "host.tar.gz")
    assert result.code == 2 and "a file of that name exists" in result.err


def test_a_folder_is_made_only_when_asked(run, tmp_path):
    result = run("snapshot", "-o", tmp_path / "host.zip")
    assert result.code == 2 and "ending in .tar.gz or .tgz, or a folder as %s/ (or add --dir)" % (tmp_path / "host.zip") in result.err
    assert not (tmp_path / "host.zip").exists()
    assert run("snapshot", "--root", fixture_root("vps-no-hugetlb"), "-o", "%s/" % (tmp_path / "tree")).code == 0
    assert (tmp_path / "tree" / ".aidoctor" / "manifest.json").is_file()


def test_snapshot_does_not_create_missing_parents(run, tmp_path):
    result = run("snapshot", "--dir", "-o", tmp_path / "no" / "such" / "place")
    assert result.code == 2 and "No such file or directory" in result.err
    assert not (tmp_path / "no").exists()


def test_snapshot_holds_only_what_the_checks_read(tmp_path):
    import shutil

    source = tmp_path / "host"
    shutil.copytree(str(fixture_root("healthy-tuned")), str(source), symlinks=True)
    (source / "etc/unrelated-secret").write_text("not for the snapshot\n")
    kernel = source / "boot/vmlinuz-5.14.0-427.13.1.el9_4.x86_64"
    kernel.write_bytes(b"\x7fELF kernel image")
    host = snapshot.capture(str(source))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    assert not (tmp_path / "snap/etc/unrelated-secret").exists()
    # /boot is listed (which kernels are installed): names come back, contents do not.
    assert (tmp_path / "snap/boot" / kernel.name).read_bytes() == b""
    assert (tmp_path / "snap/proc/meminfo").read_text() == (FIXTURES / "healthy-tuned/root/proc/meminfo").read_text()


# -- hostile trees: paths read from the tree never place a write outside the snapshot ---------


def _entries(folder) -> dict:
    """Every entry below ``folder`` with its kind and size, links not followed."""
    found = {}
    for where, dirs, files in os.walk(str(folder)):
        for name in dirs + files:
            path = os.path.join(where, name)
            info = os.lstat(path)
            found[os.path.relpath(path, str(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def hostile_copy(tmp_path, name: str):
    """A fixture copied into a sandbox folder that also receives the snapshot."""
    import shutil

    sandbox = tmp_path / "sandbox"
    shutil.copytree(fixture_root(name), str(sandbox / "T"), symlinks=True)
    (sandbox / "out").mkdir()
    return sandbox, sandbox / "T"


def snapshot_stays_inside(run, sandbox, tree, args):
    """Snapshot ``tree`` (folder and archive); nothing but the named outputs may appear or
    change in the sandbox, and both replays give the direct run's findings."""
    before = _entries(sandbox)
    for output in ("snap/", "snap.tar.gz"):
        result = run("snapshot", "--root", tree, "-o", "%s/out/%s" % (sandbox, output))
        assert result.code == 0, result.err
    after = {path: entry for path, entry in _entries(sandbox).items() if path != "out" and not path.startswith("out" + os.sep)}
    assert after == {path: entry for path, entry in before.items() if path != "out"}
    replay_matches(run, ["--root", str(tree)], sandbox / "out/snap", args)
    direct = run("--root", tree, *args, "--format", "json")
    replayed = run("--snapshot", sandbox / "out/snap.tar.gz", *args, "--format", "json")
    assert replayed.findings() == direct.findings() and replayed.statuses() == direct.statuses()
    assert "error" not in direct.statuses().values()
    return direct


def test_a_modules_dep_entry_climbing_out_is_kept_inside_the_snapshot(run, tmp_path):
    sandbox, tree = hostile_copy(tmp_path, "gpu-healthy")
    modules = tree / "lib/modules/6.8.0-49-generic"
    (tree / "x").mkdir()
    os.rename(str(modules / "updates/dkms/nvidia.ko.zst"), str(tree / "x/nvidia.ko.zst"))
    climb = "updates/dkms/" + "../" * 24 + "x/nvidia.ko.zst"
    (modules / "modules.dep").write_text("kernel/block/kyber-iosched.ko.zst:\n%s:\n" % climb)
    direct = snapshot_stays_inside(run, sandbox, tree, ["--model-size", "8G"])
    # The entry resolves inside the tree, as the kernel's path walk stops at its root.
    assert direct.findings() == {"gpu.module-vermagic-mismatch": "low"}
    # What was found in it is kept under the entry's own spelling, letters normalised.
    kept = sandbox / "out/snap/.aidoctor/derived/modinfo/x/nvidia.ko.zst"
    assert kept.read_text().startswith("\x00not understood: not an ELF file")


def test_a_nul_byte_in_a_modules_dep_path_is_refused_and_replays(run, tmp_path):
    sandbox, tree = hostile_copy(tmp_path, "gpu-healthy")
    (tree / "lib/modules/6.8.0-49-generic/modules.dep").write_bytes(b"updates/dkms/nvidia\x00/../nvidia.ko.zst:\n")
    snapshot_stays_inside(run, sandbox, tree, ["--model-size", "8G"])


@pytest.mark.parametrize("version", ["", "..", "../../../../../../../../../tmp", "a/../../b", "x" * 70])
def test_a_boot_entry_with_an_unusable_version_is_a_skip_not_an_error(run, tmp_path, version):
    sandbox, tree = hostile_copy(tmp_path, "image-rhel-traps")
    for entry in (tree / "boot/loader/entries").iterdir():
        entry.write_text("title crafted\nversion %s\nlinux /vmlinuz-%s\noptions ro\n" % (version, version))
    direct = snapshot_stays_inside(run, sandbox, tree, ["--model-size", "8G"])
    assert direct.json["host"]["kernel"] is None
    assert direct.statuses()["kernel.config-missing"] == "skip"


@pytest.mark.parametrize("name", ["gpu-healthy", "gpu-dkms-failed-upgrade", "gpu-driver-library-mismatch"])
def test_a_fifo_where_the_module_should_be_replays_as_it_ran(run, tmp_path, name):
    sandbox, tree = hostile_copy(tmp_path, name)
    modules = [path for path in tree.rglob("nvidia.ko*")]
    assert modules
    for path in modules:
        path.unlink()
        os.mkfifo(str(path))
    direct = snapshot_stays_inside(run, sandbox, tree, ["--model-size", "8G"])
    assert "gpu.module-vermagic-mismatch" in direct.findings()


def test_a_deeply_nested_manifest_is_refused_in_one_line(run, tmp_path):
    tree = tmp_path / "T"
    (tree / ".aidoctor").mkdir(parents=True)
    (tree / ".aidoctor/manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    result = run("--root", tree)
    assert result.code == 2 and result.err.count("\n") == 1 and "unreadable manifest" in result.err


def test_nothing_is_placed_through_a_link_the_snapshot_holds(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    layout = snapshot._Layout()
    assert layout.link("/etc", str(outside)) == 1
    assert layout.file("/boot/vmlinuz", b"kernel") == 1
    for attempt in (
        lambda: layout.file("/etc/passwd", b"planted"),
        lambda: layout.folder("/etc/sub"),
        lambda: layout.link("/etc/sub", "/"),
        lambda: layout.file("/boot/vmlinuz/below", b"planted"),
        lambda: layout.file("/a/../../escape", b"planted"),
        lambda: layout.file("/a/\x00", b"planted"),
        lambda: layout.file("/a/" + "x" * 256, b"no file system holds the name"),
    ):
        with pytest.raises(snapshot._Unplaceable):
            attempt()
    layout.chmod("/etc", 0o777)  # a link: left alone
    assert layout.modes == {} and layout.file("/etc", b"taken") == 0
    writer = snapshot._Writer(str(tmp_path / "snap"))
    try:
        writer.write(layout)
    finally:
        writer.close()
    assert list(outside.iterdir()) == [] and os.readlink(tmp_path / "snap/etc") == str(outside)
    assert not (tmp_path / "escape").exists()


def test_the_writer_stops_at_a_link_planted_in_its_way(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    layout = snapshot._Layout()
    layout.file("/etc/passwd", b"kept")
    writer = snapshot._Writer(str(tmp_path / "snap"))
    try:
        (tmp_path / "snap/etc").symlink_to(outside)  # made by someone else meanwhile
        with pytest.raises(OSError):
            writer.write(layout)
    finally:
        writer.close()
    assert list(outside.iterdir()) == []


def test_a_link_into_the_tree_metadata_reads_as_absent(run, tmp_path):
    sandbox, tree = hostile_copy(tmp_path, "hugepage-shortfall")
    (tree / ".aidoctor").mkdir()
    (tree / ".aidoctor/manifest.json").write_text('{"outcomes": {}}\n')
    (tree / "etc/sysctl.d/99-via-link.conf").symlink_to("/.aidoctor/manifest.json")
    (tree / "etc/sysctl.d/98-via-dots.conf").symlink_to("../../.aidoctor/../.aidoctor/manifest.json")
    host = Host(str(tree))
    assert host.read_text("/etc/sysctl.d/99-via-link.conf").missing and host.read_text("/etc/sysctl.d/98-via-dots.conf").missing
    snapshot_stays_inside(run, sandbox, tree, ["--model-size", "8G"])


def test_a_file_larger_than_the_read_cap_replays_as_read_in_part(run, tmp_path):
    from ai_doctor.host import READ_CAP

    sandbox, tree = hostile_copy(tmp_path, "hugepage-shortfall")
    filler = b"# filler\n" * (READ_CAP // 9 + 1000)
    (tree / "etc/sysctl.d/50-big.conf").write_bytes(filler + b"vm.nr_hugepages = 8\n")
    snapshot_stays_inside(run, sandbox, tree, ["--model-size", "8G"])
    manifest = json.loads((sandbox / "out/snap/.aidoctor/manifest.json").read_text())
    assert manifest["truncated"] == ["/etc/sysctl.d/50-big.conf"]
    # Every sentence too: the replay says which files were read only in part.
    replay_matches(run, ["--root", str(tree)], sandbox / "out/snap", ["--model-size", "8G"])


def test_device_nodes_replay_from_a_snapshot(tmp_path):
    host = Host("/")
    seen = {path: host.node(path) for path in ("/dev/null", "/dev/zero", "/etc/hostname", "/dev/no-such-node")}
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    replay = Host(str(tmp_path / "snap"))
    for path, got in seen.items():
        again = replay.node(path)
        assert (again.status, again.data) == (got.status, got.data), path
    assert seen["/dev/null"].data.kind == "c" and (seen["/dev/null"].data.major, seen["/dev/null"].data.minor) == (1, 3)


@pytest.mark.parametrize(
    "text", ["c 1 3", "x 1 3 0666 0 0 1", "c -1 3 0666 0 0 1", "c 1 3 99999 0 0 1", "c 1 3 0666 0 0 1e99", "c 1 3 0888 0 0 1"]
)
def test_a_device_record_that_is_not_one_reads_as_an_error(tmp_path, text):
    record = tmp_path / ".aidoctor" / "derived" / "node" / "dev"
    record.mkdir(parents=True)
    (record / "nvidia0").write_text(text + "\n")
    got = Host(str(tmp_path)).node("/dev/nvidia0")
    assert got.failed and "not understood" in got.detail


def test_a_report_says_when_it_ran_and_when_and_by_what_its_snapshot_was_taken(run, tmp_path):
    destination = tmp_path / "snap"
    assert run("snapshot", "--root", fixture_root("guide-followed-literally"), "--dir", "-o", destination).code == 0
    manifest = json.loads((destination / ".aidoctor/manifest.json").read_text())
    report = run("--root", destination, "--format", "json").json
    assert report["created"].endswith("Z") and len(report["created"]) == len("2026-12-03T05:22:54Z")
    assert report["host"]["captured"] == manifest["created"] and report["host"]["captured_by"] == manifest["aidoctor"]
    text = run("--root", destination).out
    assert "Snapshot: taken %s by aidoctor %s" % (manifest["created"], manifest["aidoctor"]) in text
    # The manifest is the snapshot's text: what is not a short printable word is not shown.
    manifest.update(created="\x1b[31m2026", aidoctor="x" * 500)
    (destination / ".aidoctor/manifest.json").write_text(json.dumps(manifest))
    hostile = run("--root", destination, "--format", "json").json["host"]
    assert hostile["captured"] is None and hostile["captured_by"] is None
