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
    # A fresh anonymous area takes a fault per 4 KiB page it is filled through (or fewer with THP).
    assert results[2].median("minor_faults") > 0
    # Each anon mode has its fresh-memory floor beside it, as many runs over as many bytes; the others have none.
    assert [r.mode for r in results if r.fresh is not None] == ["anon", "anon-thp"]
    for result in results[2:4]:
        assert result.fresh.mode == "fresh" and result.fresh.size == 4 << 20 and len(result.fresh.runs) == 2 and result.fresh.first
        assert result.fresh.gbps()[0] > 0


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
    assert data["schema"] == "aidoctor-bench/2"
    assert [r["mode"] for r in data["results"]] == ["cold", "warm", "anon", "anon-thp", "mmap", "mmap-touch"]
    first = data["results"][0]
    assert set(first) >= {"mode", "seconds", "gbps", "minor_faults", "major_faults"} and set(first["gbps"]) >= {"min", "median", "max"}
    # The fresh-memory floor beside the anon modes, in the same form as a mode's figures.
    assert [r["mode"] for r in data["results"] if "fresh_memory" in r] == ["anon", "anon-thp"]
    floor = data["results"][2]["fresh_memory"]
    assert set(floor) == {"seconds", "gbps", "minor_faults", "major_faults", "cpu_seconds", "first_seconds"}
    assert len(floor["seconds"]) == 1 and floor["gbps"]["median"] > 0
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
        ([], "give model files or a folder (aidoctor bench PATH…), or a temporary file's size (aidoctor bench --size 8G)"),
        (["--size", "70B"], "bench takes bytes"),
        (["--list", "--size", "8M"], "bench --list: takes no PATH"),
        (
            ["--size", "8M", "--modes", "warm,mmap-only"],
            "bench --modes warm,mmap-only: give some of cold,warm,anon,anon-thp,mmap,mmap-touch",
        ),
        (["--size", "8M", "--modes", ","], "bench --modes ,: give some of"),
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
    # One mark per mode, and one per anon mode for its fresh-memory floor.
    assert text.count("<circle") == 8 and "<script" not in text and "aidoctor bench: x" in text


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


def test_bench_alone_says_what_to_give_and_70b_is_not_sent_to_an_option_bench_lacks(run):
    result = run("bench")
    assert result.code == 2 and result.out == ""
    assert result.err == (
        "aidoctor: error: bench: give model files or a folder (aidoctor bench PATH…), "
        "or a temporary file's size (aidoctor bench --size 8G)\n"
    )
    result = run("bench", "--size", "70B")
    assert result.code == 2 and len(result.err.splitlines()) == 1
    # bench has no --params: it says what bench takes, and what a 70B-parameter model weighs at 16 bits.
    assert "--params" not in result.err and "a plain number (70)" in result.err and "--size 140GB" in result.err


def test_the_first_run_is_shown_on_its_own_and_saved_when_compare_and_save_name_one_label(run, tmp_path):
    page = tmp_path / "first.html"
    args = ("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "1")
    result = run(*args, "--compare", "last", "--save", "last", "--html", page)
    assert result.code == 0, result.err
    assert "First run under 'last': nothing was saved under it before" in result.out and "Compared with" not in result.out
    assert "cold " in result.out and "mmap " in result.out  # the result itself, in full
    html = page.read_text()
    assert "First run under &#39;last&#39;" in html and "Compared with" not in html and html.count("<circle") == 8
    assert benchstore.load("last")["results"]
    # The next run with the same words compares with it, and keeps itself for the one after.
    again = run(*args, "--compare", "last", "--save", "last", "--html", page)
    assert again.code == 0 and "Compared with 'last'" in again.out and "First run" not in again.out
    assert page.read_text().count("<circle") == 14  # before and now, per mode, and the fresh-memory floors now
    # A --compare label that was never saved, with another --save label, is still a mistake.
    assert run(*args, "--compare", "typo", "--save", "last").code == 2


def test_a_result_with_nothing_saved_says_how_to_get_a_comparison(run, tmp_path):
    alone = run("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "1")
    assert alone.code == 0 and alone.out.rstrip().endswith(
        "First result, with nothing saved to compare with: keep it with --save LABEL, change a setting, and run again with --compare LABEL."
    )
    run("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "1", "--save", "base")
    later = run("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "1")
    assert "Not compared: --compare LABEL compares with a saved result (saved: base; --list shows them)." in later.out


def test_list_shows_the_saved_labels_oldest_first_with_their_time_and_what_was_measured(run, tmp_path):
    assert run("bench", "--list").out.startswith("No saved bench results (in %s" % benchstore.folder())
    model = _model(tmp_path / "m", size=1 << 20)
    assert run("bench", model, "--repeat", "1", "--save", "model-one").code == 0
    assert run("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "2", "--save", "temp").code == 0
    folder = tmp_path / "state" / "aidoctor" / "bench"
    for label, created in (("model-one", "2025-01-31T10:00:00Z"), ("temp", "2025-02-01T09:30:00Z")):
        saved = benchstore.load(label)
        saved["created"] = created
        benchstore.save(label, saved)
    (folder / "broken.json").write_text("{")
    result = run("bench", "--list")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == "Saved bench results (in %s), oldest first:" % folder
    assert lines[1].startswith("broken     saved bench 'broken'") and "cannot be read" in lines[1]
    modes = "cold, warm, anon, anon-thp, mmap, mmap-touch"
    assert lines[2].startswith("model-one  2025-01-31 10:00:00 UTC  1.0 MiB of %s, 1 run of %s" % (model, modes))
    assert lines[3].startswith("temp       2025-02-01 09:30:00 UTC  8.0 MiB of a temporary file, 2 runs of %s" % modes)
    listed = json.loads(run("bench", "--list", "--format", "json").out)
    assert [entry["label"] for entry in listed["saved"]] == ["broken", "model-one", "temp"]
    assert listed["saved"][2]["bytes"] == 8 << 20 and listed["saved"][2]["repeat"] == 2


def test_json_and_html_say_who_ran_it_and_how_busy_the_machine_was(run, tmp_path):
    from ai_doctor import __version__

    page = tmp_path / "bench.html"
    result = run("bench", "--size", "8M", "--dir", tmp_path, "--repeat", "1", "--format", "json", "--html", page)
    data = json.loads(result.out)
    assert result.err == ""  # no progress where stderr is not a terminal
    assert data["host"] == os.uname().nodename and data["aidoctor"] == __version__
    fields = {"cpus", "load_before", "load_after", "steal_percent", "others_percent", "seconds"}
    assert set(data["machine"]) == fields and all(set(r["machine"]) == fields for r in data["results"])
    assert 0 <= data["machine"]["others_percent"] <= 100 and data["machine"]["cpus"] >= 1
    html = page.read_text()
    for words in (os.uname().nodename, os.uname().release, "<dt>aidoctor</dt><dd>%s</dd>" % __version__, data["created"][:10]):
        assert words in html
    for mode in bench.MODES:  # each mode explained in one line
        assert "<li><b>%s</b> " % mode in html
    assert "<li><b>fresh memory</b> " in html and html.count('<tr class="fresh"><td>fresh memory</td>') == 2
    assert "GB/s, logarithmic axis" in html


def test_the_chart_keeps_slow_and_fast_modes_readable_on_a_log_axis():
    from ai_doctor.reports import bench as render

    def result(mode, median):
        return {
            "mode": mode,
            "gbps": {"min": median * 0.9, "q1": median * 0.95, "median": median, "q3": median * 1.05, "max": median * 1.1},
        }

    chart = render.chart({"results": [result("cold", 1.4), result("anon", 1.5), result("mmap", 67.0)]})
    cold, anon, mmap_ = chart["marks"]
    width = chart["right"] - chart["left"]
    # On a linear axis to 70 GB/s, cold's middle half (1.33-1.47 GB/s) would be one pixel wide and
    # cold and anon a pixel apart; here they are boxes of their own, and mmap far to the right.
    assert cold["q3"] - cold["q1"] > 10 and anon["median"] - cold["median"] > 5 and mmap_["median"] > cold["median"] + 0.5 * width
    assert [tick["label"] for tick in chart["ticks"]] == ["1", "2", "5", "10", "20", "50", "100"]
    # Equal ratios, equal distances: 10% either side of the median spans the same width at 1.4 and at 67 GB/s.
    assert abs((cold["max"] - cold["min"]) - (mmap_["max"] - mmap_["min"])) < 0.3


def test_writing_the_temporary_file_shows_progress_from_the_start(tmp_path):
    import io

    from rich.console import Console

    from ai_doctor import benchcmd

    screen = io.StringIO()
    told = []

    def show(size):
        bar = benchcmd._Writing(size, Console(file=screen, force_terminal=True, width=100))
        told.append(("started", screen.getvalue() != ""))

        def progress(done):
            told.append(done)
            bar(done)

        progress.syncing, progress.stop = bar.syncing, bar.stop
        return progress

    path = benchcmd._make_file(40 << 20, str(tmp_path), ValueError, show)
    assert os.path.getsize(path) == 40 << 20
    # Shown before the first block is written, then after each 16 MiB block.
    assert told == [("started", True), 16 << 20, 32 << 20, 40 << 20]
    assert "writing the temporary file" in screen.getvalue()
