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
    for key in ("source", "root", "live"):
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
    from ai_doctor import cli

    return cli._request(cli._parser().parse_args(args), args)


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
    result = run("snapshot", "-o", destination)
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
    assert run("snapshot", "--root", fixture_root(name), "-o", destination).code == 0
    expect = json.loads((FIXTURES / name / "expect.json").read_text())
    for args in ARGS + [expect["args"]]:
        replay_matches(run, ["--root", fixture_root(name)], destination, args)


def test_snapshot_keeps_the_content_of_listed_files(tmp_path):
    host = snapshot.capture(fixture_root("hugepage-shortfall"))
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    written = (tmp_path / "snap/etc/sysctl.d/60-hugepages.conf").read_text()
    assert written == (FIXTURES / "hugepage-shortfall/root/etc/sysctl.d/60-hugepages.conf").read_text()


def test_snapshot_records_refusals_in_the_manifest(run, tmp_path):
    destination = tmp_path / "snap"
    run("snapshot", "--root", fixture_root("permission-denied"), "-o", destination)
    outcomes = json.loads((destination / ".aidoctor/manifest.json").read_text())["outcomes"]
    assert outcomes["/boot/config-6.8.0-45-generic"] == "denied"


def test_snapshot_refuses_an_existing_destination(run, tmp_path):
    result = run("snapshot", "-o", tmp_path)
    assert result.code == 2 and "already exists" in result.err


def test_snapshot_does_not_create_missing_parents(run, tmp_path):
    result = run("snapshot", "-o", tmp_path / "no" / "such" / "place")
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
