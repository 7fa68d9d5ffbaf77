"""The fix proof: apply one way of fixing one rule's findings to a copy of a tree with
`aidoctor fix --apply`, boot it in simulation (`--next-boot`), check again.

A fix is proven when its findings are gone, nothing new at or above low appears, and no value
written weakens a sysctl that guards the kernel's security. A way with a step by hand, one that
changes only a running system, or one whose boot half needs boot loader files the tree does not
have, cannot be proven on a tree: None.
"""

from __future__ import annotations

import json
import shutil

from ai_doctor import cli
from ai_doctor.facts.sysctl import parse_sysctl_file
from ai_doctor.facts.sysctlkeys import guards_security, weakens

SEVERITY = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
# What fix --apply says where a tree holds no boot loader configuration (a test's small tree, a
# VM started with its line): the boot half of a way cannot be applied, nor proven, there.
NO_BOOT_CONFIGURATION = "the tree holds no boot entries and no boot loader configuration"


def invoke(capsys, *args):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def findings(capsys, root, args, next_boot=False):
    code, out, err = invoke(capsys, "--root", root, "--format", "json", *(("--next-boot",) if next_boot else ()), *args)
    assert code in (0, 1), err
    return json.loads(out)


def ways(report):
    """(rule, way number) for every way of fixing every finding, one per rule and number."""
    found = {}
    for finding in report["findings"]:
        count = 1 + sum(1 for step in finding["remediation"][1:] if step["summary"].startswith(("Or ", "Or,", "Otherwise")))
        found[finding["rule"]] = min(found.get(finding["rule"], count), count)
    return [(rule, number) for rule, count in sorted(found.items()) for number in range(1, count + 1)]


def plan(capsys, root, args, rule, number):
    """The plan items of ``rule``'s findings with way ``number`` chosen."""
    code, out, err = invoke(capsys, "fix", "--root", root, "--choose", "%s=%d" % (rule, number), "--format", "json", *args)
    assert code == 0, err
    return [item for item in json.loads(out)["plan"] if item["rule"] == rule]


def written_sysctls(planned):
    """(key, value) of every sysctl a plan sets: now, or in a file under sysctl.d."""
    for item in planned:
        for step in item["steps"]:
            for action in step["actions"]:
                if action["kind"] == "sysctl":
                    yield from (tuple(pair) for pair in action["settings"])
                elif action["kind"] == "write-file" and "/sysctl.d/" in action["path"]:
                    for assignment in parse_sysctl_file("\n".join(action["lines"]), action["path"])[0]:
                        yield assignment.key, assignment.value


def prove(capsys, tmp_path, source_root, args, rule, number):
    """Apply ``rule``'s way ``number`` to a copy of ``source_root``; returns the problems found
    (empty: proven), or None when that way changes nothing (advice only)."""
    before = findings(capsys, source_root, args)
    baseline = findings(capsys, source_root, args, next_boot=True)
    planned = plan(capsys, source_root, args, rule, number)
    problems = []
    running = {}
    for check in before["findings"]:
        for item in check["evidence"]:
            if item["path"].startswith("/proc/sys/"):
                running[item["path"][len("/proc/sys/") :].replace("/", ".")] = item["value"]
    for key, value in written_sysctls(planned):
        if guards_security(key) and key in running and weakens(key, value, running[key]):
            problems.append("writes %s = %s, weaker than the running %s" % (key, value, running[key]))
    phases = {action["phase"] for item in planned for step in item["steps"] for action in step["actions"]}
    if any(step["persistent"] and not step["actions"] for item in planned for step in item["steps"]):
        # Part of the way is by hand (the boot line of a machine without boot loader files, a
        # firmware setting): the rest alone is not the fix.
        return None
    if "file" in phases:
        copy = tmp_path / ("%s-%d" % (rule, number))
        shutil.copytree(source_root, copy, symlinks=True)
        code, out, err = invoke(
            capsys,
            "fix",
            "--root",
            copy,
            "--apply",
            "--yes",
            "--format",
            "json",
            "--only",
            rule,
            "--choose",
            "%s=%d" % (rule, number),
            *args,
        )
        if code not in (0, 1):
            return ["fix --apply exited %d: %s" % (code, err)]
        refused = [
            result["detail"] for item in json.loads(out)["applied"] for result in item["results"] if result["outcome"] == "not applied"
        ]
        if refused and all(detail.startswith(NO_BOOT_CONFIGURATION) for detail in refused):
            return None  # the tree's kernel command line is not in it: the boot half is the host's
        if code != 0:
            problems.append("fix --apply exited %d: %s" % (code, out))
        after = findings(capsys, copy, args, next_boot=True)
    elif "reboot" in phases and not phases & {"now", "run"}:
        after = baseline  # a reboot is all it takes: the next boot as it is
    else:
        # A way that changes only a running system (or runs a program there) is the host's to prove.
        return None
    # Cleared: gone, or down to info (a fact worth knowing) from above it.
    was = min(SEVERITY[f["severity"]] for f in before["findings"] if f["rule"] == rule)
    left = [f for f in after["findings"] if f["rule"] == rule and (f["severity"] != "info" or was == SEVERITY["info"])]
    if left:
        problems.append("still there at the next boot: %s" % "; ".join(f["message"][:200] for f in left))
    known = {(f["rule"], f["severity"]) for f in before["findings"] + baseline["findings"]}
    worst = {
        f["rule"]: min(SEVERITY[g["severity"]] for g in before["findings"] + baseline["findings"] if g["rule"] == f["rule"])
        for f in before["findings"] + baseline["findings"]
    }
    for finding in after["findings"]:
        if SEVERITY[finding["severity"]] > SEVERITY["low"] or (finding["rule"], finding["severity"]) in known:
            continue
        if finding["rule"] in worst and SEVERITY[finding["severity"]] >= worst[finding["rule"]]:
            continue
        problems.append("new at the next boot: %s %s: %s" % (finding["severity"], finding["rule"], finding["message"][:200]))
    return problems


def prove_everything(capsys, work, root, args):
    """Every way of fixing every finding of the tree at ``root``; the problems, by rule and way."""
    import os

    try:
        report = findings(capsys, root, args)
    except (AssertionError, ValueError) as exc:
        return ["the check itself failed: %s" % exc]
    problems = []
    for rule, number in ways(report):
        folder = work / ("%s-%d" % (rule, number))
        os.makedirs(folder, exist_ok=True)
        try:
            found = prove(capsys, folder, root, args, rule, number)
        except (AssertionError, ValueError, OSError) as exc:
            found = ["the proof failed: %s" % exc]
        problems += ["%s way %d: %s" % (rule, number, problem) for problem in found or ()]
    return problems
