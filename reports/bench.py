"""Bench results and comparisons as text and HTML (the JSON form is benchstore.document's)."""

from __future__ import annotations

from ai_doctor.units import gib


def text(data: dict, comparison=None) -> str:
    lines = []
    files = data.get("files") or []
    what = "a temporary file" if data.get("temporary_file") else "%d file%s" % (len(files), "" if len(files) == 1 else "s")
    lines.append(
        "aidoctor bench · %s of %s · %d run%s per mode"
        % (gib(data.get("bytes", 0)), what, data["repeat"], "" if data["repeat"] == 1 else "s")
    )
    lines.append("")
    lines.append("%-9s %12s %16s %18s %8s" % ("mode", "median GB/s", "min–max GB/s", "faults minor/major", "CPU s"))
    for result in data["results"]:
        gbps = result["gbps"]
        lines.append(
            "%-9s %12.2f %16s %18s %8.3f"
            % (
                result["mode"],
                gbps["median"],
                "%.2f–%.2f" % (gbps["min"], gbps["max"]),
                "%d / %d" % (result["minor_faults"], result["major_faults"]),
                result["cpu_seconds"],
            )
        )
    notes = ["%s: %s" % (r["mode"], r["note"]) for r in data["results"] if r.get("note")]
    settings = data.get("settings") or {}
    if settings:
        lines.append("")
        lines.append("Settings: " + ", ".join("%s %s" % (key.replace("_", " "), value) for key, value in settings.items()))
    for note in notes:
        lines.append("Note: " + note)
    if comparison is not None:
        lines.append("")
        lines += compare_text(comparison)
    return "\n".join(lines) + "\n"


def compare_text(comparison: dict):
    lines = [
        "Compared with %r (median GB/s; a change inside the spread of the runs, or under 15%%, is no clear change):" % comparison["before"]
    ]
    lines.append("%-9s %9s %9s %9s  %s" % ("mode", "before", "after", "change", "verdict"))
    for row in comparison["modes"]:
        change = "%+.1f%%" % row["change_percent"] if row["change_percent"] is not None else "–"
        lines.append("%-9s %9.2f %9.2f %9s  %s" % (row["mode"], row["before"], row["after"], change, row["verdict"]))
    changed = comparison["settings_changed"]
    if changed:
        lines.append("Settings that differ: " + "; ".join("%s %s → %s" % (key.replace("_", " "), a, b) for key, (a, b) in changed.items()))
    else:
        lines.append("No setting that matters differs between the two runs.")
    return lines


def html(data: dict, comparison=None, label=None) -> str:
    """One self-contained page: the table, an inline SVG of median GB/s with each mode's range,
    and the comparison."""
    from ai_doctor.reports.html import environment

    files = data.get("files") or []
    what = "a temporary file" if data.get("temporary_file") else "%d file%s" % (len(files), "" if len(files) == 1 else "s")
    template = environment().get_template("bench.html.j2")
    return template.render(data=data, comparison=comparison, label=label, size=gib(data.get("bytes", 0)), what=what)
