"""aidoctor bench: what it reads, what it measures, what it keeps and compares."""

from __future__ import annotations

import json
import os

import pytest

from ai_doctor import bench, benchstore


@pytest.fixture(autouse=True)
def _own_state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def _model(folder, name="model.safetensors", size=4 << 20):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(os.urandom(size))
    return path


def test_a_folder_gives_its_model_files_and_odd_paths_are_refused(tmp_path):
    shards = tmp_path / "llama"
    for name in ("model-00001.safetensors", "model-00002.safetensors"):
        _model(shards, name, 1024)
    (shards / "config.json").write_text("{}")
    assert [os.path.basename(p) for p in bench.model_files([str(shards)])] == ["model-00001.safetensors", "model-00002.safetensors"]
    os.mkfifo(str(tmp_path / "pipe"))
    for bad, words in ((tmp_path / "pipe", "not a regular file"), (tmp_path / "none", "No such file")):
        with pytest.raises(bench.BenchError, match=words):
            bench.model_files([str(bad)])


def test_every_mode_is_measured_and_the_files_are_never_written(tmp_path):
    path = _model(tmp_path)
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    results = bench.measure([str(path)], repeat=2)
    assert [r.mode for r in results] == list(bench.MODES)
    for result in results:
        assert len(result.runs) == 2 and result.size == 4 << 20
        low, median, high = result.gbps()
        assert 0 < low <= median <= high
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
    # A fresh anonymous buffer takes a fault per 4 KiB page it is filled through (or fewer with THP).
    assert results[2].median("minor_faults") > 0


def test_cold_runs_say_when_the_eviction_did_not_take(tmp_path, monkeypatch):
    path = _model(tmp_path)
    monkeypatch.setattr(bench, "evict", lambda files: 0.5)
    cold = bench.measure([str(path)], modes=("cold",), repeat=1)[0]
    assert "eviction left 50% of the pages cached" in cold.note


def test_json_of_a_temporary_file_which_is_removed(run, tmp_path):
    result = run("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "1", "--format", "json")
    assert result.code == 0
    data = json.loads(result.out)
    assert data["temporary_file"] and data["bytes"] == 8 << 20
    assert [r["mode"] for r in data["results"]] == ["cold", "warm", "anon", "anon-thp", "mmap"]
    first = data["results"][0]
    assert set(first) >= {"mode", "seconds", "gbps", "minor_faults", "major_faults"} and set(first["gbps"]) >= {"min", "median", "max"}
    assert os.listdir(str(tmp_path)) == []


def test_the_temporary_file_goes_on_ctrl_c(run, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "measure", interrupted)
    assert run("bench", "--size", "8M", "--dir", tmp_path).code == 130
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize(
    "args, words",
    [
        (["--size", "8P"], "does not fit the free space"),
        (["--size", "8M", "/etc/hostname"], "not both"),
        ([], "not both"),
        (["--size", "8M", "--save", "../x"], "bench label '../x'"),
        (["--size", "8M", "--compare", "never-saved"], "no saved bench 'never-saved'"),
        (["--size", "8M", "--repeat", "0"], "give 1 to 100 runs"),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(run, tmp_path, args, words):
    result = run("bench", "--dir", tmp_path, *args)
    assert result.code == 2 and words in result.err and len(result.err.strip().splitlines()) == 1


def test_save_then_compare_names_changed_settings(run, tmp_path):
    path = _model(tmp_path / "m")
    assert run("bench", path, "--repeat", "2", "--save", "before").code == 0
    saved = benchstore.load("before")
    saved["settings"]["thp"] = "never"  # as if THP was changed between the runs
    benchstore.save("before", saved)
    result = run("bench", path, "--repeat", "2", "--compare", "before")
    assert "Compared with 'before'" in result.out and "thp never → " in result.out


def test_a_change_inside_the_spread_is_no_clear_change():
    def doc(label, low, median, high):
        return {"label": label, "settings": {}, "results": [{"mode": "warm", "gbps": {"min": low, "median": median, "max": high}}]}

    same = benchstore.compare(doc("a", 8.0, 8.4, 8.6), doc("b", 8.1, 8.5, 8.9))
    assert same["modes"][0]["verdict"] == "no clear change"
    faster = benchstore.compare(doc("a", 2.0, 2.1, 2.2), doc("b", 3.0, 3.2, 3.3))
    assert faster["modes"][0]["verdict"] == "faster" and round(faster["modes"][0]["change_percent"]) == 52
    slower = benchstore.compare(doc("a", 3.0, 3.2, 3.3), doc("b", 2.0, 2.1, 2.2))
    assert slower["modes"][0]["verdict"] == "slower"
    # Apart, but by less than separate runs drift: not a change.
    drift = benchstore.compare(doc("a", 7.8, 7.87, 7.9), doc("b", 8.4, 8.43, 8.5))  # +7%, two identical runs
    assert drift["modes"][0]["verdict"] == "no clear change"


def test_a_first_run_outlier_does_not_hide_a_real_change():
    before = {
        "label": "a",
        "settings": {},
        "results": [{"mode": "anon", "gbps": {"min": 2.4, "q1": 2.5, "median": 2.57, "q3": 2.58, "max": 2.6}}],
    }
    after = {
        "label": "b",
        "settings": {},
        "results": [{"mode": "anon", "gbps": {"min": 0.4, "q1": 3.9, "median": 3.92, "q3": 3.93, "max": 3.95}}],
    }
    assert benchstore.compare(before, after)["modes"][0]["verdict"] == "faster"


def test_html_page_with_a_chart(run, tmp_path):
    page = tmp_path / "bench.html"
    assert run("bench", "--size", "8M", "--dir", tmp_path / "d", "--repeat", "1", "--html", page).code == 2  # no such --dir
    (tmp_path / "d").mkdir()
    assert run("bench", "--size", "8M", "--dir", tmp_path / "d", "--repeat", "1", "--html", page, "--save", "x").code == 0
    text = page.read_text()
    assert text.count("<rect") == 5 and "<script" not in text and "aidoctor bench: x" in text


def test_comparisons_say_when_they_cannot_tell():
    def doc(label, gbps, **extra):
        return dict({"label": label, "settings": {}, "bytes": 1, "results": [{"mode": "cold", "gbps": gbps}]}, **extra)

    wild = benchstore.compare(
        doc("a", {"min": 0.6, "q1": 0.7, "median": 2.0, "q3": 2.2, "max": 2.3}),
        doc("b", {"min": 0.5, "q1": 0.55, "median": 0.9, "q3": 0.95, "max": 1.0}),
    )
    assert wild["modes"][0]["verdict"].startswith("inconclusive")
    other = benchstore.compare(doc("a", {"min": 1, "median": 1, "max": 1}), doc("b", {"min": 1, "median": 1, "max": 1}, bytes=2))
    assert other["settings_changed"]["measured bytes"] == [1, 2]


def test_a_saved_result_with_no_numbers_is_refused_before_measuring(run, tmp_path):
    folder = tmp_path / "state" / "aidoctor" / "bench"
    folder.mkdir(parents=True)
    (folder / "nan.json").write_text(
        '{"schema": "aidoctor-bench/1", "results": [{"mode": "warm", "gbps": {"min": NaN, "median": 1, "max": 1}}]}'
    )
    (folder / "typed.json").write_text('{"schema": "aidoctor-bench/1", "results": [{"mode": [1], "gbps": {}}]}')
    for label in ("nan", "typed"):
        result = run("bench", "--size", "8M", "--dir", tmp_path, "--compare", label)
        assert result.code == 2 and "is not an aidoctor bench result" in result.err or "cannot be read" in result.err
    assert run("bench", "--size", "8M", "--dir", tmp_path, "--save", "").code == 2
