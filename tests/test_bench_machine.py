"""aidoctor bench: how busy the machine was, and comparisons that will not credit a setting with a neighbour's load."""

from __future__ import annotations

import os

from ai_doctor import bench, benchstore
from ai_doctor.reports import bench as render

STAT = """cpu  1038094 761 312013 6689712 31452 0 7492 19576 0 0
cpu0 519047 380 156006 3344856 15726 0 3746 9788 0 0
cpu1 519047 381 156007 3344856 15726 0 3746 9788 0 0
intr 123
"""


def test_load_and_cpu_counters_are_read_from_proc_text():
    assert bench.parse_loadavg("0.52 0.58 0.59 1/467 12345\n") == 0.52
    assert bench.parse_loadavg("") is None and bench.parse_loadavg("busy 1 2") is None
    cpus, ticks = bench.parse_stat(STAT)
    busy = 1038094 + 761 + 312013 + 0 + 7492
    assert cpus == 2 and ticks == (busy, 19576, busy + 6689712 + 31452 + 19576)
    # A kernel before 2.6.11 has no steal column; an odd line gives no counters rather than wrong ones.
    assert bench.parse_stat("cpu  10 0 5 100 1 0 0\ncpu0 10 0 5 100 1 0 0\n") == (1, (15, 0, 116))
    assert bench.parse_stat("cpu  ten 0 5 100\n") == (0, None) and bench.parse_stat("cpu  1 0 5 ²\n") == (0, None)


def test_steal_and_other_work_are_shares_of_all_cpus_time_over_the_window():
    hertz = os.sysconf("SC_CLK_TCK")
    start = bench.Sample(10.0, 0.4, 2, (1000, 50, 10000), 3.0)
    # Over 3 s of 2 CPUs (6 s, 6 * hertz ticks): 0.3 s stolen, 4 s busy of which 1 s was the bench's own.
    end = bench.Sample(13.0, 1.6, 2, (1000 + 4 * hertz, 50 + 0.3 * hertz, 10000 + 6 * hertz), 4.0)
    machine = bench.between(start, end)
    assert machine.cpus == 2 and machine.load_before == 0.4 and machine.load_after == 1.6 and machine.seconds == 3.0
    assert round(machine.steal_percent, 3) == 5.0 and round(machine.others_percent, 3) == 50.0
    # The bench's own exact CPU time can exceed the coarse ticks: never below zero.
    assert bench.between(start, end._replace(own=10.0)).others_percent == 0.0
    assert bench.between(start._replace(ticks=None), end).steal_percent is None


def _run(label, median, spread=0.02, **machine):
    gbps = {
        "min": median * (1 - 2 * spread),
        "q1": median * (1 - spread),
        "median": median,
        "q3": median * (1 + spread),
        "max": median * (1 + 2 * spread),
    }
    whole = dict({"cpus": 2, "load_before": 0.4, "load_after": 0.5, "steal_percent": 0.0, "others_percent": 1.0, "seconds": 4.0}, **machine)
    mode = dict(whole, seconds=2.0)
    return {"label": label, "settings": {}, "bytes": 1, "machine": whole, "results": [{"mode": "anon", "gbps": gbps, "machine": mode}]}


def _verdict(before, after):
    row = benchstore.compare(before, after)["modes"][0]
    return row["verdict"], row["busy"]


def test_identical_settings_under_a_background_load_are_inconclusive_not_slower():
    # Measured on the 2-core VM: 256 MiB, anon 1.42 GB/s idle, 1.04 GB/s with `yes` running: "slower" by 27%.
    verdict, busy = _verdict(_run("idle", 1.42, others_percent=2.0), _run("busy", 1.04, others_percent=48.0, load_after=1.1))
    assert verdict == "inconclusive: the machine was busy"
    assert busy == ["other work used 48% of the CPUs during the after run, 2% during the before run"]
    # The same numbers on an equally quiet machine are a real change.
    assert _verdict(_run("idle", 1.42, others_percent=2.0), _run("after", 1.04, others_percent=20.0)) == ("slower", [])


def test_the_rule_thresholds():
    idle = _run("a", 2.0)
    # Steal above 5% in either run, the faster one too (a VM's neighbours come and go).
    assert _verdict(idle, _run("b", 3.0, steal_percent=5.5))[0] == "inconclusive: the machine was busy"
    assert _verdict(_run("a", 2.0, steal_percent=7.0), _run("b", 3.0))[1] == [
        "the hypervisor took 7% of CPU time (steal) during the before run"
    ]
    assert _verdict(idle, _run("b", 3.0, steal_percent=5.0))[0] == "faster"
    # Other work: more than 25 points of all CPUs' time apart, either way.
    assert _verdict(idle, _run("b", 3.0, others_percent=26.5))[0].startswith("inconclusive")
    assert _verdict(_run("a", 2.0, others_percent=40.0), _run("b", 3.0, others_percent=16.0))[0] == "faster"
    # The 1-minute load, per CPU, the higher of before and after: more than 0.5 apart.
    loaded = _verdict(idle, _run("b", 1.0, load_after=1.8))
    assert loaded == (
        "inconclusive: the machine was busy",
        ["the 1-minute load was 0.90 per CPU during the after run, 0.25 during the before run"],
    )
    assert _verdict(idle, _run("b", 1.0, load_after=1.4))[0] == "slower"
    # A busy machine does not make a change out of drift or overlapping runs.
    assert _verdict(idle, _run("b", 2.1, others_percent=90.0)) == ("no clear change", [])


def test_a_short_mode_is_judged_over_the_whole_bench_and_an_old_result_by_what_it_has():
    before, after = _run("a", 2.0), _run("b", 1.0)
    after["results"][0]["machine"].update(seconds=0.2, others_percent=0.0)  # too few ticks to tell
    after["machine"]["others_percent"] = 60.0
    assert _verdict(before, after)[0] == "inconclusive: the machine was busy"
    # Saved before aidoctor recorded the machine: the new run is held to an idle machine's numbers.
    old = _run("old", 2.0)
    del old["machine"], old["results"][0]["machine"]
    assert _verdict(old, _run("b", 1.0, others_percent=20.0)) == ("slower", [])
    assert _verdict(old, _run("b", 1.0, others_percent=60.0)) == (
        "inconclusive: the machine was busy",
        ["other work used 60% of the CPUs during the after run"],
    )
    assert _verdict(old, _run("b", 1.0, steal_percent=9.0))[0] == "inconclusive: the machine was busy"
    assert "Machine before: not recorded" in "\n".join(render.compare_text(benchstore.compare(old, _run("b", 1.0))))


def test_the_comparison_text_gives_the_reasons_and_both_machines():
    comparison = benchstore.compare(_run("idle", 1.42, others_percent=2.0), _run("busy", 1.04, others_percent=48.0))
    text = "\n".join(render.compare_text(comparison))
    assert "anon            1.42      1.04    -26.8%  inconclusive: the machine was busy" in text
    assert "           other work used 48% of the CPUs during the after run, 2% during the before run" in text
    assert "Machine before: 2 CPUs; 1-minute load 0.40 → 0.50; other work 2% and steal 0% of all CPUs' time." in text
    assert "Machine after: 2 CPUs; 1-minute load 0.40 → 0.50; other work 48% and steal 0% of all CPUs' time." in text


def test_a_single_busy_run_says_so_and_a_comparison_without_shared_modes_says_that():
    data = dict(_run("x", 1.0, others_percent=60.0), repeat=1, created="2025-01-31T10:00:00Z", host="h")
    data["results"][0].update(minor_faults=1, major_faults=0, cpu_seconds=0.1)
    text = render.text(data)
    assert "Note: the machine was busy (other work used 60% of the CPUs during this run): these numbers say as much" in text
    assert "Note: the machine was busy" not in render.text(dict(data, machine=dict(data["machine"], others_percent=3.0)))
    other = dict(data, results=[dict(data["results"][0], mode="cold")])
    empty = render.text(data, benchstore.compare(other, data))
    assert "No mode was measured in both runs." in empty and "mode          before" not in empty
    assert "anon not compared: not measured in the before run." in empty
