"""aidoctor bench: what each mode reads and where (every byte, page-aligned), the fresh-memory
floor beside the anon modes, and saved results whose mmap meant something else."""

from __future__ import annotations

import ctypes
import json
import mmap
import os

import pytest

from ai_doctor import bench, benchstore
from ai_doctor.reports import bench as render

PAGE = mmap.PAGESIZE


@pytest.fixture(autouse=True)
def _own_state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def _files(tmp_path, sizes):
    """Files of these sizes, each of its own bytes."""
    paths = []
    for index, size in enumerate(sizes):
        path = tmp_path / ("shard-%d.safetensors" % index)
        path.write_bytes(os.urandom(size))
        paths.append(str(path))
    return paths


def _address(area, offset=0) -> int:
    anchor = ctypes.c_char.from_buffer(area, offset)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


def test_mmap_reads_every_byte_through_the_mapping_and_mmap_touch_one_per_page(tmp_path):
    # Sizes off page and chunk boundaries, one over a chunk, and an empty file.
    paths = _files(tmp_path, [bench.CHUNK + 12345, 0, 3 * PAGE + 7])
    buffer = bench.aligned(bench.CHUNK)
    try:
        assert bench._map_and_copy(paths, buffer) == bench.CHUNK + 12345 + 3 * PAGE + 7
        # The last stretch copied is the last file, whole: its bytes, read through the mapping.
        with open(paths[2], "rb") as handle:
            assert buffer[: 3 * PAGE + 7] == handle.read()
    finally:
        buffer.close()
    assert bench._map_and_touch(paths) == -(-(bench.CHUNK + 12345) // PAGE) + 4


def test_every_copy_lands_page_aligned(tmp_path):
    # The reused buffer: a mapping, at a page boundary (a bytearray's data is 16 bytes past one).
    buffer = bench.aligned(bench.CHUNK)
    try:
        assert _address(buffer) % PAGE == 0
    finally:
        buffer.close()
    # A fresh area: each file starts at a page boundary, whatever the size of the one before.
    sizes = [PAGE + 100, 5, 2 * PAGE]
    paths = _files(tmp_path, sizes)
    starts, size = bench.placement(sizes)
    assert starts == [0, 2 * PAGE, 3 * PAGE] and size == 5 * PAGE
    assert bench.placement([]) == ([], PAGE)
    for huge in (False, True):
        area = bench._read_into_fresh(paths, starts, size, huge)
        try:
            assert len(area) == size
            for path, start, length in zip(paths, starts, sizes):
                assert (_address(area) + start) % PAGE == 0
                with open(path, "rb") as handle:
                    assert area[start : start + length] == handle.read()
        finally:
            area.close()


def test_the_fresh_memory_floor_writes_every_page_of_new_memory():
    for huge in (False, True):
        area = bench._touch_fresh(3 * PAGE + 1, huge)
        try:
            assert len(area) == 3 * PAGE + 1 and _address(area) % PAGE == 0
            assert area[:] == bytes(3 * PAGE + 1)  # written with zeros, every page
        finally:
            area.close()
    # Timed, it takes page faults: new memory is the cost it measures.
    run = bench._timed(lambda: bench._touch_fresh(64 * PAGE, False))
    assert run.minor_faults > 0 and run.seconds > 0


def test_the_text_puts_the_floor_under_each_anon_mode(run, tmp_path):
    result = run("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "1")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    rows = [line.split()[0] for line in lines[3:11]]
    assert rows == ["cold", "warm", "anon", "fresh", "anon-thp", "fresh", "mmap", "mmap-touch"]
    assert any(line.startswith("fresh: as many bytes of newly allocated memory written once per page") for line in lines)


def test_modes_runs_only_those_in_the_bench_order(run, tmp_path):
    result = run("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "1", "--modes", "warm, cold,warm", "--format", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [r["mode"] for r in data["results"]] == ["cold", "warm"] and "skipped" not in data


def _saved_v1(tmp_path):
    """A result saved by an aidoctor whose mmap touched one byte per page (schema /1)."""

    def mode(name, median):
        return {
            "mode": name,
            "gbps": {"min": median * 0.98, "q1": median * 0.99, "median": median, "q3": median * 1.01, "max": median * 1.02},
        }

    old = {
        "schema": "aidoctor-bench/1",
        "created": "2025-01-31T10:00:00Z",
        "bytes": 1,
        "files": [],
        "temporary_file": True,
        "repeat": 3,
        "settings": {},
        "results": [mode("warm", 14.0), mode("anon", 1.8), mode("mmap", 66.0)],
    }
    folder = tmp_path / "state" / "aidoctor" / "bench"
    folder.mkdir(parents=True)
    (folder / "old.json").write_text(json.dumps(old))


def _now(**medians):
    return {
        "schema": benchstore.SCHEMA,
        "bytes": 1,
        "files": [],
        "temporary_file": True,
        "settings": {},
        "results": [{"mode": name.replace("_", "-"), "gbps": {"min": m, "median": m, "max": m}} for name, m in medians.items()],
    }


def test_an_older_mmap_figure_is_compared_as_mmap_touch_never_as_mmap(tmp_path):
    _saved_v1(tmp_path)
    old = benchstore.load("old")
    assert [r["mode"] for r in old["results"]] == ["warm", "anon", "mmap-touch"] and old["results"][2]["saved_as"] == "mmap"
    comparison = benchstore.compare(old, _now(warm=14.1, anon=1.9, mmap=13.0, mmap_touch=67.0))
    rows = {row["mode"]: row for row in comparison["modes"]}
    assert sorted(rows) == ["anon", "mmap-touch", "warm"]
    assert rows["mmap-touch"]["before"] == 66.0 and rows["mmap-touch"]["verdict"] == "no clear change"
    # The other modes still compare; anon with a word on what the older run also timed.
    assert rows["warm"]["note"] is None and "also timed releasing the memory" in rows["anon"]["note"]
    assert comparison["not_compared"] == [
        {
            "mode": "mmap",
            "reason": "the before run was saved by an older aidoctor, whose mmap touched one byte per page: "
            "that figure is compared as mmap-touch, and mmap now reads every byte",
        }
    ]
    text = "\n".join(render.compare_text(comparison))
    assert "mmap not compared: the before run was saved by an older aidoctor, whose mmap touched one byte per page" in text
    assert "           note: the before run, saved by an older aidoctor, also timed releasing the memory" in text
    # Saved again (read, changed, written), it still reads the same.
    benchstore.save("old", old)
    assert [r["mode"] for r in benchstore.load("old")["results"]] == ["warm", "anon", "mmap-touch"]


def test_the_cli_compares_with_an_older_result_and_lists_it_under_what_it_measured(run, tmp_path):
    _saved_v1(tmp_path)
    page = tmp_path / "c.html"
    result = run("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "1", "--compare", "old", "--html", page)
    assert result.code == 0, result.err
    assert "mmap not compared: the before run was saved by an older aidoctor" in result.out
    assert "\nmmap-touch " in result.out.split("Compared with")[1]
    html = page.read_text()
    assert "mmap not compared: the before run was saved by an older aidoctor" in html and "note: the before run, saved by" in html
    listed = run("bench", "--list").out
    assert "1 B of a temporary file, 3 runs of warm, anon, mmap-touch" in listed
    # A schema aidoctor does not know is still refused.
    folder = tmp_path / "state" / "aidoctor" / "bench"
    (folder / "future.json").write_text(json.dumps(dict(_now(warm=1.0), schema="aidoctor-bench/9")))
    (folder / "odd.json").write_text(json.dumps(dict(_now(warm=1.0), schema=["aidoctor-bench/1"])))
    for label in ("future", "odd"):
        refused = run("bench", "--size", "8M", "--dir", tmp_path, "--compare", label)
        assert refused.code == 2 and "is not an aidoctor bench result" in refused.err
