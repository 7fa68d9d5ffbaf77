"""Bench results, comparisons and the saved list as text and HTML (the JSON form is
benchstore.document's)."""

from __future__ import annotations

import math

from ai_doctor import benchstore
from ai_doctor.units import gib

# What each mode times, in one line (the README's bench section says it at length).
MEANING = {
    "cold": "read after the files are evicted from the page cache: the disk, as the first load after a boot",
    "warm": "read again from the page cache: a memory copy, as a reload soon after",
    "anon": "read into freshly allocated memory, as torch.load and most loaders fill tensors: adds the page faults of new memory",
    "anon-thp": "the same with transparent huge pages asked for (madvise): fewer, larger faults where the THP mode allows them",
    "mmap": "mapped and every byte read through the mapping (copied into a reused buffer), as a safetensors load reads its tensors",
    "mmap-touch": "mapped and one byte per page touched: the page-cache pages mapped in alone, no copy, what a lazy loader pays "
    "before first use",
}
# The fresh-memory floor beside each anon mode.
FRESH = (
    "as many bytes of newly allocated memory written once per page, nothing read (with huge pages asked for beside anon-thp): "
    "its page faults alone, the floor under the anon mode above it; anon reads slower than warm by about this cost"
)


def when(created) -> str:
    """``2025-01-31T10:00:00Z`` as ``2025-01-31 10:00:00 UTC``; anything else as it is."""
    if isinstance(created, str) and len(created) == 20 and created[10] == "T" and created.endswith("Z"):
        return created[:10] + " " + created[11:19] + " UTC"
    return str(created or "unknown time")


def _what(data: dict) -> str:
    files = data.get("files") or []
    return "a temporary file" if data.get("temporary_file") else "%d file%s" % (len(files), "" if len(files) == 1 else "s")


def _percent(value) -> str:
    return "%.0f%%" % value if isinstance(value, (int, float)) else "–"


def machine_line(machine) -> str:
    """How busy the machine was, in one sentence (without the leading "Machine")."""
    if not machine:
        return "not recorded (a result saved before aidoctor recorded it)"
    loads = "%s → %s" % tuple(
        "%.2f" % machine[key] if isinstance(machine.get(key), (int, float)) else "?" for key in ("load_before", "load_after")
    )
    return "%d CPU%s; 1-minute load %s; other work %s and steal %s of all CPUs' time" % (
        machine["cpus"],
        "" if machine["cpus"] == 1 else "s",
        loads,
        _percent(machine.get("others_percent")),
        _percent(machine.get("steal_percent")),
    )


def busy_note(data: dict):
    """Why this run's machine was busy, or None: its numbers then say as much about that work as
    about the settings."""
    reasons = benchstore.busier(benchstore.machine_of(data), None, "this")
    if not reasons:
        return None
    return "the machine was busy (%s): these numbers say as much about that work as about the settings" % "; ".join(reasons)


def text(data: dict, comparison=None, alone=None) -> str:
    """The result as a table, its machine and settings, then the comparison or, without one,
    ``alone`` (what to do to get one)."""
    lines = []
    lines.append(
        "aidoctor bench · %s of %s · %d run%s per mode · %s · %s"
        % (
            gib(data.get("bytes", 0)),
            _what(data),
            data["repeat"],
            "" if data["repeat"] == 1 else "s",
            data.get("host") or "?",
            when(data.get("created")),
        )
    )
    lines.append("")
    lines.append("%-10s %11s %13s %19s %7s %7s %6s" % ("mode", "GB/s median", "min–max", "faults minor/major", "CPU s", "others", "steal"))
    for result in data["results"]:
        machine = result.get("machine") or {}
        busy = " %7s %6s" % (_percent(machine.get("others_percent")), _percent(machine.get("steal_percent")))
        lines.append(_row(result["mode"], result) + busy)
        if isinstance(result.get("fresh_memory"), dict):
            lines.append(_row("  fresh", result["fresh_memory"]))
    lines.append("")
    if _has_fresh(data):
        lines.append("fresh: " + FRESH + ".")
    lines.append("Machine: %s over the bench (per mode: others, steal)." % machine_line(benchstore.machine_of(data)))
    settings = data.get("settings") or {}
    if settings:
        lines.append("Settings: " + ", ".join("%s %s" % (key.replace("_", " "), value) for key, value in settings.items()))
    busy = busy_note(data)
    if busy:
        lines.append("Note: " + busy + ".")
    for result in data["results"]:
        if result.get("note"):
            lines.append("Note: %s: %s" % (result["mode"], result["note"]))
    lines.append("")
    if comparison is not None:
        lines += compare_text(comparison)
    elif alone:
        lines.append(alone)
    return "\n".join(lines) + "\n"


def _has_fresh(data: dict) -> bool:
    return any(isinstance(result.get("fresh_memory"), dict) for result in data["results"])


def _row(name: str, figures: dict) -> str:
    gbps = figures["gbps"]
    return "%-10s %11.2f %13s %19s %7.3f" % (
        name,
        gbps["median"],
        "%.2f–%.2f" % (gbps["min"], gbps["max"]),
        "%d / %d" % (figures["minor_faults"], figures["major_faults"]),
        figures["cpu_seconds"],
    )


RULE = (
    "a change inside the spread of the runs, or under 15%, is no clear change; a bigger one is inconclusive where either run's machine "
    "was busier than the other's (steal above 5%, 25 points more of the CPUs used by other work, or 0.5 more load per CPU)"
)


def compare_text(comparison: dict):
    lines = ["Compared with %r (median GB/s; %s):" % (comparison["before"], RULE)]
    if not comparison["modes"]:
        lines.append("No mode was measured in both runs.")
    else:
        lines.append("%-10s %9s %9s %9s  %s" % ("mode", "before", "after", "change", "verdict"))
    for row in comparison["modes"]:
        change = "%+.1f%%" % row["change_percent"] if row["change_percent"] is not None else "–"
        lines.append("%-10s %9.2f %9.2f %9s  %s" % (row["mode"], row["before"], row["after"], change, row["verdict"]))
        reasons = list(row.get("busy") or ())
        if row.get("note"):
            reasons.append("note: " + row["note"])
        for reason in reasons:
            lines.append("%-10s %s" % ("", reason))
    for row in comparison.get("not_compared") or ():
        lines.append("%s not compared: %s." % (row["mode"], row["reason"]))
    machines = comparison.get("machine") or {}
    lines.append("Machine before: %s." % machine_line(machines.get("before")))
    lines.append("Machine after: %s." % machine_line(machines.get("after")))
    changed = comparison["settings_changed"]
    if changed:
        lines.append("Settings that differ: " + "; ".join("%s %s → %s" % (key.replace("_", " "), a, b) for key, (a, b) in changed.items()))
    else:
        lines.append("No setting that matters differs between the two runs.")
    return lines


def listing(entries, folder: str) -> str:
    """The saved results, oldest first: label, when, what was measured."""
    if not entries:
        return "No saved bench results (in %s): keep one with --save LABEL.\n" % folder
    lines = ["Saved bench results (in %s), oldest first:" % folder]
    width = max(len(entry["label"]) for entry in entries)
    for entry in entries:
        if entry.get("error"):
            lines.append("%-*s  %s" % (width, entry["label"], entry["error"]))
            continue
        if entry["temporary_file"]:
            what = "a temporary file"
        elif len(entry["files"]) == 1:
            what = entry["files"][0]
        else:
            what = "%d files in %s" % (len(entry["files"]), _common(entry["files"]))
        repeat = entry.get("repeat")
        runs = "%d run%s of %s" % (repeat, "" if repeat == 1 else "s", ", ".join(entry["modes"])) if repeat else ", ".join(entry["modes"])
        settings = entry.get("settings") or {}
        tuned = ", ".join("%s %s" % (key.replace("_", " "), settings[key]) for key in ("thp", "governor") if settings.get(key))
        lines.append(
            "%-*s  %s  %s of %s, %s%s"
            % (width, entry["label"], when(entry["created"]), gib(entry["bytes"]), what, runs, "; " + tuned if tuned else "")
        )
    return "\n".join(lines) + "\n"


def _common(paths) -> str:
    import os

    try:
        return os.path.commonpath(paths) or "/"
    except ValueError:
        return "several folders"


# The chart's GB/s axis is logarithmic: mmap of cached pages runs at tens of GB/s, cold and anon
# reads at one or two, and on a linear axis those, the modes tuning changes, are slivers. On a
# log axis equal distances are equal ratios, so a 20% change looks the same size in every mode.
_LEFT, _RIGHT, _ROW = 130.0, 690.0, 22


def chart(data: dict, earlier=None) -> dict:
    """Where the marks of the chart go: per mode one row (two with ``earlier``: before, then
    now; one more under an anon mode for its fresh-memory floor), each with the x of min, q1,
    median, q3 and max on a log axis, and the axis ticks."""
    before = {r.get("mode"): r for r in (earlier or {}).get("results", []) if isinstance(r, dict)}
    rows = []
    for result in data["results"]:
        series = []
        if earlier is not None and result["mode"] in before:
            series.append(("before", before[result["mode"]].get("gbps") or {}))
        series.append(("now" if earlier is not None else "", result["gbps"]))
        if isinstance(result.get("fresh_memory"), dict):
            series.append(("fresh", result["fresh_memory"].get("gbps") or {}))
        rows.append((result["mode"], series))
    values = [g[key] for _mode, series in rows for _name, g in series for key in ("min", "max", "median") if _positive(g.get(key))]
    if not values:
        values = [1.0]
    # The axis runs between the nearest 1-2-5 steps around the values.
    steps = [step * 10.0**power for power in range(-4, 5) for step in (1, 2, 5)]
    low = max([step for step in steps if step <= min(values)] or [steps[0]])
    high = min([step for step in steps if step >= max(values)] or [steps[-1]])
    if high <= low:
        high = low * 2
    span = math.log10(high) - math.log10(low)

    def x(value):
        value = min(max(value, low), high) if _positive(value) else low
        return round(_LEFT + (math.log10(value) - math.log10(low)) / span * (_RIGHT - _LEFT), 1)

    ticks = [
        {"x": x(step), "label": "%g" % step, "major": abs(math.log10(step) - round(math.log10(step))) < 1e-9}
        for step in steps
        if low <= step <= high
    ]
    marks = []
    y = 8
    for mode, series in rows:
        for index, (name, gbps) in enumerate(series):
            median = gbps.get("median")
            marks.append(
                {
                    "mode": mode if index == 0 else "",
                    "series": name,
                    "label": "fresh memory" if name == "fresh" else name,
                    "y": y,
                    "min": x(gbps.get("min")),
                    "q1": x(gbps.get("q1", gbps.get("min"))),
                    "median": x(median),
                    "q3": x(gbps.get("q3", gbps.get("max"))),
                    "max": x(gbps.get("max")),
                    "value": median if _positive(median) else 0.0,
                }
            )
            y += _ROW
        y += 6
    return {"width": 760, "height": y + 44, "axis_y": y + 4, "top": 4, "left": _LEFT, "right": _RIGHT, "ticks": ticks, "marks": marks}


def _number(value, form: str) -> str:
    """A number in ``form``, or a dash where there is none (a result saved before it was kept)."""
    return form % value if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


def html(data: dict, comparison=None, label=None, alone=None, earlier=None) -> str:
    """One self-contained page: who and when, what each mode times, a chart of GB/s per mode on
    a log axis (the runs' range, middle half and median; with ``earlier``, its marks beside),
    the table with how busy the machine was, and the comparison or ``alone``."""
    from ai_doctor.reports.html import environment

    machine = benchstore.machine_of(data)
    template = environment().get_template("bench.html.j2")
    return template.render(
        data=data,
        comparison=comparison,
        label=label,
        alone=alone,
        size=gib(data.get("bytes", 0)),
        what=_what(data),
        created=when(data.get("created")),
        kernel=(data.get("settings") or {}).get("kernel"),
        meaning=MEANING,
        fresh=FRESH,
        has_fresh=_has_fresh(data),
        chart=chart(data, earlier if comparison is not None else None),
        machine=machine_line(machine),
        busy=busy_note(data),
        rule=RULE,
        number=_number,
        before_machine=machine_line((comparison or {}).get("machine", {}).get("before")),
        after_machine=machine_line((comparison or {}).get("machine", {}).get("after")),
    )
