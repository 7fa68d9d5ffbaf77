"""Bench results kept under a label, and two of them compared.

A result is kept with the settings that change what it measures (THP mode, huge pages, CPU
governor, I/O scheduler and read-ahead of the disk holding the files, kernel), in the user's
state folder: ``$XDG_STATE_HOME/aidoctor/bench/LABEL.json``, else
``~/.local/state/aidoctor/bench/LABEL.json``.

Results saved under an older schema are read and compared where a mode still measures what it
did (see :data:`OLDER`).
"""

from __future__ import annotations

import json
import os
import re
import time

SCHEMA = "aidoctor-bench/2"
# What changed in each older schema's modes (README: bench, saved results): its mode names,
# those read under the name of what they measured, and what a comparison says per mode. In /1,
# ``mmap`` touched one byte per page, what ``mmap-touch`` does now (``mmap`` reads every byte),
# and the anon modes' time included releasing their memory (15 of 116 ms for 256 MiB in 4 KiB
# pages on the development VM, 1 ms with huge pages).
_RELEASED = "the before run, saved by an older aidoctor, also timed releasing the memory (about a tenth more with 4 KiB pages)"
OLDER = {
    "aidoctor-bench/1": {
        "modes": ("cold", "warm", "anon", "anon-thp", "mmap"),
        "renamed": {"mmap": "mmap-touch"},
        "changed": {
            "mmap": "the before run was saved by an older aidoctor, whose mmap touched one byte per page: that figure is compared as "
            "mmap-touch, and mmap now reads every byte",
            "anon": _RELEASED,
            "anon-thp": _RELEASED,
        },
    }
}
_LABEL = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


class StoreError(ValueError):
    """A label or a saved result that cannot be used (a one-line error)."""


class NotSaved(StoreError):
    """Nothing is saved under the label."""


def folder() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "aidoctor", "bench")


def _path(label: str) -> str:
    if not re.fullmatch(_LABEL, label or ""):
        raise StoreError("bench label %r: use letters, digits, dot, dash and underscore (64 at most)" % label)
    return os.path.join(folder(), label + ".json")


def settings(files) -> dict:
    """What changes load times, read from this machine now."""

    def read(path):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return " ".join(handle.read().split())
        except OSError:
            return None

    def chosen(text):
        match = re.search(r"\[(\w[\w-]*)\]", text or "")
        return match.group(1) if match else text

    found = {
        "kernel": read("/proc/sys/kernel/osrelease"),
        "thp": chosen(read("/sys/kernel/mm/transparent_hugepage/enabled")),
        "thp_defrag": chosen(read("/sys/kernel/mm/transparent_hugepage/defrag")),
        "nr_hugepages": read("/proc/sys/vm/nr_hugepages"),
        "governor": read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
    }
    disk = _disk_of(files[0]) if files else None
    if disk:
        found["disk"] = disk
        found["scheduler"] = chosen(read("/sys/block/%s/queue/scheduler" % disk))
        found["read_ahead_kb"] = read("/sys/block/%s/queue/read_ahead_kb" % disk)
    return {key: value for key, value in found.items() if value is not None}


def _disk_of(path: str):
    """The whole disk under ``path`` (its sysfs block name), or None."""
    try:
        device = os.stat(path).st_dev
        link = os.path.realpath("/sys/dev/block/%d:%d" % (os.major(device), os.minor(device)))
    except OSError:
        return None
    if not link.startswith("/sys/devices/"):
        return None
    # A partition's folder sits inside its disk's; a whole disk has a queue of its own.
    for candidate in (link, os.path.dirname(link)):
        if os.path.exists(os.path.join(candidate, "queue")):
            return os.path.basename(candidate)
    return None


def document(results, files, repeat: int, temporary: bool, found=None, machine=None) -> dict:
    """The JSON form of a bench (README: bench JSON); ``machine`` is how busy the machine was
    over the whole bench."""
    from ai_doctor import __version__

    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": os.uname().nodename,
        "aidoctor": __version__,
        "machine": machine.as_dict() if machine is not None else None,
        "files": [] if temporary else [os.path.abspath(path) for path in files],
        "temporary_file": temporary,
        "bytes": results[0].size if results else 0,
        "repeat": repeat,
        "settings": found if found is not None else settings(files),
        "results": [_result(result) for result in results],
    }


def _result(result) -> dict:
    """One mode's figures; an anon mode's ``fresh_memory`` holds its floor's, in the same form."""
    low, median, high = result.gbps()
    q1, q3 = result.quartiles()
    figures = {
        "mode": result.mode,
        "seconds": [round(s, 6) for s in result.seconds],
        "gbps": dict(zip(("min", "q1", "median", "q3", "max"), (round(g, 3) for g in (low, q1, median, q3, high)))),
        "minor_faults": result.median("minor_faults"),
        "major_faults": result.median("major_faults"),
        "cpu_seconds": round(result.median("cpu_seconds"), 6),
        "first_seconds": round(result.first.seconds, 6) if result.first else None,
    }
    if result.mode == "fresh":
        del figures["mode"]
        return figures
    figures["note"] = result.note
    figures["machine"] = result.machine.as_dict() if result.machine is not None else None
    if result.fresh is not None:
        figures["fresh_memory"] = _result(result.fresh)
    return figures


# Separate runs of the same thing drift by several percent (page cache placement, CPU frequency,
# the disk; up to 11% between identical runs on the 2-core development VM):
# a smaller change is not called one.
DRIFT_PERCENT = 15.0


def save(label: str, data: dict) -> str:
    path = _path(label)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temporary = "%s.%d.tmp" % (path, os.getpid())
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(dict(data, label=label), handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise StoreError("cannot save bench %r in %s: %s" % (label, os.path.dirname(path), exc.strerror or exc)) from None
    return path


def _refuse_constant(name):
    raise ValueError("%s is not a number" % name)


def load(label: str) -> dict:
    path = _path(label)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle, parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise NotSaved("no saved bench %r (%s); save one with --save %s" % (label, path, label)) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise StoreError("saved bench %r (%s) cannot be read: %s" % (label, path, exc)) from None
    if not _valid(data):
        raise StoreError("saved bench %r (%s) is not an aidoctor bench result" % (label, path))
    return _current(data)


def _older(data: dict) -> dict:
    """What :data:`OLDER` says of the schema ``data`` was saved under; nothing for the current one."""
    schema = data.get("schema")
    return OLDER.get(schema, {}) if isinstance(schema, str) else {}


def _current(data: dict) -> dict:
    """A result saved under an older schema with each mode under the name of what it measured
    (``saved_as`` keeps the old name); its ``schema`` stays, so compare() can tell."""
    renamed = _older(data).get("renamed", {})
    if any(result["mode"] in renamed for result in data["results"]):
        data["results"] = [
            dict(result, mode=renamed[result["mode"]], saved_as=result["mode"]) if result["mode"] in renamed else result
            for result in data["results"]
        ]
    return data


def _number(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _valid(data) -> bool:
    """The fields compare() reads, with the types it needs (finite numbers: NaN is no rate)."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list) or not isinstance(data.get("schema"), str):
        return False
    if data["schema"] == SCHEMA:
        names = MODE_NAMES
    elif data["schema"] in OLDER:
        # Re-saved after it was read (its modes renamed), or as it was written.
        names = OLDER[data["schema"]]["modes"] + tuple(OLDER[data["schema"]]["renamed"].values())
    else:
        return False
    if not isinstance(data.get("settings", {}), dict) or not _number(data.get("bytes", 0)):
        return False
    for result in data["results"]:
        if not isinstance(result, dict) or result.get("mode") not in names or not isinstance(result.get("gbps"), dict):
            return False
        if not all(_number(value) for value in result["gbps"].values()) or not {"min", "median", "max"} <= set(result["gbps"]):
            return False
    return True


MODE_NAMES = ("cold", "warm", "anon", "anon-thp", "mmap", "mmap-touch")


def check_label(label: str) -> None:
    """Refuse a label, and a state folder that cannot be written, before anything is measured."""
    path = _path(label)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError("cannot save bench %r in %s: %s" % (label, os.path.dirname(path), exc.strerror or exc)) from None
    if not os.access(os.path.dirname(path), os.W_OK):
        raise StoreError("cannot save bench %r in %s: not writable" % (label, os.path.dirname(path)))


# A change is not the settings' to claim when one of the two runs had the busier machine by one
# of these (README: bench). Other work on a shared or small machine slows a single-threaded
# bench through more than the CPU it takes (memory bandwidth, caches, under a hypervisor the
# vCPU's time slices): one `yes` on the 2-core development VM made identical runs "slower" by
# 20-57%. The measures are over each mode's runs, or the whole bench where a mode took under
# SHORT_WINDOW seconds (too few clock ticks of /proc/stat to tell).
BUSY_STEAL_PERCENT = 5.0  # the hypervisor took more than this share of all CPUs' time (steal)
BUSY_OTHERS_POINTS = 25.0  # other work used this many percentage points more of all CPUs' time
BUSY_LOAD_PER_CPU = 0.5  # the 1-minute load average per CPU was higher by more than this
SHORT_WINDOW = 1.0


def _machine_ok(machine) -> bool:
    return isinstance(machine, dict) and _number(machine.get("cpus")) and machine["cpus"] >= 1


def machine_of(data: dict, result=None):
    """How busy the machine was over ``result``'s mode (over the whole bench for a short mode,
    or without ``result``); None for a result saved before aidoctor recorded it."""
    own = result.get("machine") if isinstance(result, dict) else None
    whole = data.get("machine")
    if _machine_ok(own) and _number(own.get("seconds")) and own["seconds"] >= SHORT_WINDOW:
        return own
    if _machine_ok(whole):
        return whole
    return own if _machine_ok(own) else None


def _load_per_cpu(machine):
    loads = [machine.get(key) for key in ("load_before", "load_after") if _number(machine.get(key))]
    return max(loads) / machine["cpus"] if loads else None


def busier(slow, fast=None, slow_name="this", fast_name="the other"):
    """Why the ``slow`` run's machine was busier than the ``fast`` one's, as phrases (empty when
    it was not). Without ``fast`` the measure is an idle machine running only the bench (load 1,
    no steal, no other work)."""
    if not _machine_ok(slow):
        return []
    alone = fast is None
    if alone:
        fast = {"cpus": slow["cpus"], "load_before": 1.0, "load_after": 1.0, "steal_percent": 0.0, "others_percent": 0.0}
    elif not _machine_ok(fast):
        fast = {"cpus": slow["cpus"]}

    def against(value, form):
        return "" if alone else (", " + form + " during %s run") % (value, fast_name)

    reasons = []
    steal = slow.get("steal_percent")
    if _number(steal) and steal > BUSY_STEAL_PERCENT:
        reasons.append("the hypervisor took %.0f%% of CPU time (steal) during %s run" % (steal, slow_name))
    mine, theirs = slow.get("others_percent"), fast.get("others_percent")
    if _number(mine) and _number(theirs) and mine - theirs > BUSY_OTHERS_POINTS:
        reasons.append("other work used %.0f%% of the CPUs during %s run%s" % (mine, slow_name, against(theirs, "%.0f%%")))
    mine, theirs = _load_per_cpu(slow), _load_per_cpu(fast)
    if mine is not None and theirs is not None and mine - theirs > BUSY_LOAD_PER_CPU:
        reasons.append("the 1-minute load was %.2f per CPU during %s run%s" % (mine, slow_name, against(theirs, "%.2f")))
    return reasons


def compare(before: dict, after: dict) -> dict:
    """Per mode: median GB/s before and after, the change in percent, and a verdict: a change
    inside the spread of the repeats (their interquartile ranges overlap) or under 15 % (what
    separate runs of one thing drift by) is no clear change; a bigger one is inconclusive when
    either run's machine was the busier (``busier``) or the runs vary widely; ``note`` where the
    before run measured the mode a little differently (an older schema). Modes of this run that
    the before run lacks or measured as something else are ``not_compared``, with the reason.
    Plus the settings that differ."""
    earlier = {r.get("mode"): r for r in before.get("results", []) if isinstance(r, dict)}
    changed_since = _older(before).get("changed", {})
    rows, missing = [], []
    for result in after.get("results", []):
        old = earlier.get(result.get("mode"))
        if old is None:
            missing.append({"mode": result.get("mode"), "reason": changed_since.get(result.get("mode"), "not measured in the before run")})
            continue
        a, b = old.get("gbps") or {}, result.get("gbps") or {}
        try:
            change = (b["median"] - a["median"]) / a["median"] * 100 if a["median"] else None
            # The interquartile ranges (min–max where a result has none): a first-run outlier
            # (compaction, a cold TLB) does not widen them.
            a_low, a_high = a.get("q1", a["min"]), a.get("q3", a["max"])
            b_low, b_high = b.get("q1", b["min"]), b.get("q3", b["max"])
            overlap = b_low <= a_high and a_low <= b_high
        except (KeyError, TypeError):
            continue
        # Runs whose middle half spans more than half their median (a shared or throttled disk) say
        # nothing either way at this number of runs.
        wide = any((side.get("q3", side["max"]) - side.get("q1", side["min"])) > 0.5 * side["median"] for side in (a, b) if side["median"])
        busy = []
        if change is not None and abs(change) >= DRIFT_PERCENT and (wide or not overlap):
            # Either way: a busy run can be slower (CPU time, memory bandwidth and caches shared) and,
            # under a hypervisor, faster too (vCPUs kept busy are not descheduled while idle). A run
            # saved before the machine was recorded counts as idle (busier's measure without one).
            old_machine, new_machine = machine_of(before, old), machine_of(after, result)
            busy = busier(new_machine, old_machine, "the after", "the before") + busier(old_machine, new_machine, "the before", "the after")
        if busy:
            verdict = "inconclusive: the machine was busy"
        elif change is not None and wide and abs(change) >= DRIFT_PERCENT:
            verdict = "inconclusive: the runs vary widely; rerun both with more --repeat"
        elif change is None or overlap or abs(change) < DRIFT_PERCENT:
            verdict = "no clear change"
        else:
            verdict = "faster" if change > 0 else "slower"
        rows.append(
            {
                "mode": result["mode"],
                "before": a["median"],
                "after": b["median"],
                "change_percent": change,
                "verdict": verdict,
                "busy": busy,
                "note": changed_since.get(result["mode"]),
            }
        )
    old_settings, new_settings = before.get("settings") or {}, after.get("settings") or {}
    changed = {
        key: [old_settings.get(key), new_settings.get(key)]
        for key in sorted(set(old_settings) | set(new_settings))
        if old_settings.get(key) != new_settings.get(key)
    }
    # What was read must be the same for the numbers to compare.
    for key in ("bytes", "files", "temporary_file"):
        if before.get(key) != after.get(key):
            changed["measured " + key.replace("_", " ")] = [before.get(key), after.get(key)]
    return {
        "before": before.get("label") or "(unlabelled)",
        "after": after.get("label"),
        "modes": rows,
        "not_compared": missing,
        "settings_changed": changed,
        "machine": {"before": machine_of(before), "after": machine_of(after)},
    }


def saved() -> list:
    """Every result kept in the state folder, oldest first: its label, when it was made, what it
    measured (bytes, files, modes, runs) and its settings; ``error`` where one cannot be read."""
    try:
        names = sorted(name for name in os.listdir(folder()) if name.endswith(".json"))
    except OSError:
        return []
    found = []
    for name in names:
        label = name[: -len(".json")]
        if not re.fullmatch(_LABEL, label):
            continue
        try:
            data = load(label)
        except StoreError as exc:
            found.append({"label": label, "created": None, "error": str(exc)})
            continue
        created = data.get("created") if isinstance(data.get("created"), str) else None
        files = data.get("files") if isinstance(data.get("files"), list) else []
        found.append(
            {
                "label": label,
                "created": created,
                "bytes": data.get("bytes", 0),
                "temporary_file": bool(data.get("temporary_file")),
                "files": [str(path) for path in files],
                "repeat": data.get("repeat") if _number(data.get("repeat")) else None,
                "modes": [result["mode"] for result in data["results"]],
                "settings": data.get("settings") or {},
            }
        )
    found.sort(key=lambda entry: (entry["created"] or "", entry["label"]))
    return found
