"""``aidoctor fix``: the plan as a POSIX sh script to review and run as root, or as JSON.

The script is the actions' own shell form (ai_doctor.remedy.actions), written for root (no
sudo), so it is what ``--apply`` would do. It stops at the first command that fails (``set
-eu``), and every command is safe to run twice. Commands that only show something, reboots,
edits by hand and steps that belong on a container's host are comments.
"""

from __future__ import annotations

import json
import time

from ai_doctor.remedy.actions import FILE, IMAGE_UNNAMED, MANUAL, NOW, REBOOT, RUN, SHOW, Shell
from ai_doctor.reports.words import visible
from ai_doctor.shell import posix_words, quote

SCHEMA = "aidoctor.fix/1"
_PHASE_WORDS = {NOW: "now, until reboot", FILE: "lasts", RUN: "runs a program"}


def _comment(text: str, width: int = 96):
    """``text`` as ``#`` lines (host text made visible: no control character ends a comment)."""
    import textwrap

    return ["# " + line for line in textwrap.wrap(visible(text), width, break_long_words=False, break_on_hyphens=False)] or ["#"]


def render_sh(report, plan) -> str:
    host = report.host
    made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.finished or time.time()))
    request = report.request
    model = request.described if request is not None and request.described else "no model size given"
    out = [
        "#!/bin/sh",
        "# aidoctor fix: review it, then run it as root (sudo sh FILE).",
    ]
    out += _comment("host: %s (%s), kernel %s" % (host.hostname or "unknown host", host.source, host.kernel or "unknown"))
    out += _comment("made %s by aidoctor %s; model: %s" % (made, report.tool_version, model))
    fixing = [item for item in plan if item.changes]
    out += _comment(
        "%d finding%s with a fix below, %d without a configuration fix; each block is one way of fixing its finding "
        "(aidoctor fix --choose RULE=N picks another)" % (len(fixing), "" if len(fixing) == 1 else "s", len(plan) - len(fixing))
    )
    images = dict.fromkeys(step.shell.image() for item in plan for step in item.steps or () if step.shell is not None and step.shell.chroot)
    unnamed = Shell(chroot=IMAGE_UNNAMED).image() in images
    usage = "sudo sh $0 /the/image/folder" if unnamed else "sudo sh $0"
    out += ["set -eu", 'if [ "$(id -u)" -ne 0 ]; then echo "aidoctor fix: run this as root (%s)" >&2; exit 1; fi' % usage]
    if unnamed:
        # A snapshot that does not say where its image was: the reader names the folder, as an
        # argument (sudo keeps no IMAGE a user sets before it) or in IMAGE.
        out += _comment("The snapshot does not record where its image's files are: give their folder, sudo sh FILE /mnt/golden")
        out.append("IMAGE=${1:-${IMAGE:-}}")
        out.append(': "${IMAGE:?give the folder of the image: sudo sh FILE /mnt/golden}"')
    for image in images:
        # Never this machine's own root, under any name (a link to it, //, a bind mount of it):
        # test's -ef, which every Linux sh has (dash, bash, busybox), though POSIX lacks it.
        out += _runnable(
            "if [ ! -d %s ] || [ %s -ef / ]; then printf 'aidoctor fix: %%s is not the folder of an image\\n' %s >&2; exit 1; fi"
            % (image, image, image),
            ("SC3013",),
        )
    if not images and host.nodename:
        # A plan for a running system changes the machine it runs on: only the one it is for
        # (a script from another host's snapshot, or copied across a fleet, stops).
        name = quote(host.nodename)
        out += _comment("For %s only: it stops on any other machine." % host.nodename)
        out += _runnable(
            'if [ "$(uname -n)" != %s ]; then printf \'aidoctor fix: this plan is for %%s, not %%s\\n\' %s "$(uname -n)" >&2; exit 1; fi'
            % (name, name)
        )
    # sed in a UTF-8 locale matches no byte that is not UTF-8: in C, the edits are --apply's.
    out += _comment("Patterns match bytes, as aidoctor fix --apply edits them, whatever the locale:") + ["export LC_ALL=C"]
    reboot = []
    for number, item in enumerate(plan, 1):
        finding = item.finding
        out.append("")
        out += _comment("%d. %s %s: %s" % (number, finding.severity.value, finding.rule, finding.title))
        if not item.changes:
            out += _comment("No configuration fix here:")
            for step in item.steps or ():
                out += ["#   " + line[2:] for line in _comment(step.summary, 92)]
                # What a step shows (a listing to choose from) is printed, never run.
                out += [
                    "#     to look: " + visible(line)
                    for action in step.actions
                    if action.phase == SHOW
                    for line in action.sh(_script_shell(step))
                ]
            if not item.steps:
                out += _comment("  (the finding says what it means; nothing to change)")
            continue
        if item.count > 1:
            out += _comment("way %d of %d" % (item.choice, item.count))
        for step in item.steps:
            out += _step(step)
        if item.reboot:
            reboot.append(finding.rule)
    out.append("")
    if reboot:
        rules = ", ".join(dict.fromkeys(reboot))
        out += _comment("Reboot for what takes effect at boot (%s)." % rules)
        out.append("echo 'aidoctor fix: done; reboot for %s to take effect' >&2" % rules)
    else:
        out.append("echo 'aidoctor fix: done' >&2")
    return "\n".join(out) + "\n"


def _script_shell(step):
    return Shell(sudo=False, chroot=step.shell.chroot if step.shell else None)


def _step(step):
    shell = _script_shell(step)
    phases = {action.phase for action in step.actions}
    lasts = (
        "takes effect at the next boot" if step.reboot else _PHASE_WORDS.get(FILE if FILE in phases else NOW if NOW in phases else RUN, "")
    )
    out = _comment("%s%s" % (step.summary, " [%s]" % lasts if lasts and phases & {NOW, FILE, RUN} else ""))
    for action in step.actions:
        lines = action.sh(shell)
        if step.on_host:
            out += ["#   (on the host) " + visible(line) for line in lines]
        elif action.phase == SHOW:
            out += ["#   to look: " + visible(line) for line in lines]
        elif action.phase == REBOOT:
            out += ["#   then reboot: " + visible(line) for line in lines]
        elif action.phase == MANUAL:
            out += ["#   by hand: " + visible(line) for line in lines]
        else:
            for line in lines:
                out += _runnable(line)
    return out


def _runnable(line: str, notes=()) -> list:
    """``line`` as the script runs it: host text bash writes as $'…' (a control character, a
    byte that is not UTF-8) spelled for sh by printf into variables set just before, each line
    with the shellcheck directives it needs."""
    out = []
    if "$'" in line:
        assignments, line = posix_words(line, "host_text_")
        for assignment in assignments:
            out += _lint_notes(assignment) + [assignment]
    return out + _lint_notes(line, notes) + [line]


def _lint_notes(line: str, notes=()):
    """shellcheck directives for what a command does on purpose (``notes``, and these): a ``$``
    in single quotes is written into a file (or run by a shell of the target) as it is, and
    tuned's profile list is split into words."""
    codes = list(notes)
    if _expansion_in_single_quotes(line):
        codes.append("SC2016")
    if "tuned-adm profile $(" in line:
        codes.append("SC2046")
    return ["# shellcheck disable=%s" % ",".join(codes)] if codes else []


def _expansion_in_single_quotes(line: str) -> bool:
    """Whether a ``$`` or a backquote stands inside single quotes of ``line`` (sh quoting; one
    pass): shellcheck's SC2016 asks whether it was meant to expand."""
    quoted = None
    escaped = False
    for char in line:
        if quoted == "'":
            if char == "'":
                quoted = None
            elif char in "$`":
                return True
        elif escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted == '"':
            if char == '"':
                quoted = None
        elif char in "'\"":
            quoted = char
    return False


def render_json(report, plan) -> str:
    items = []
    for item in plan:
        finding = item.finding
        items.append(
            {
                "rule": finding.rule,
                "severity": finding.severity.value,
                "title": finding.title,
                "way": item.choice,
                "ways": item.count,
                "changes": item.changes,
                "reboot": item.reboot,
                "steps": [
                    {
                        "summary": step.summary,
                        "persistent": step.persistent,
                        "on_host": step.on_host,
                        # As the script has them: for root, no sudo.
                        "commands": [line for action in step.actions for line in action.sh(_script_shell(step))],
                        "actions": [action.as_dict() for action in step.actions],
                    }
                    for step in item.steps
                ],
            }
        )
    host = report.host
    document = {
        "schema": SCHEMA,
        "tool": {"name": "aidoctor", "version": report.tool_version},
        "host": {
            "hostname": host.hostname,
            "kernel": host.kernel,
            "source": host.source,
            "root": host.root,
            "image": host.image,
            "image_variable": host.image_variable,
        },
        "plan": items,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_applied(report, applied, kept, recheck) -> str:
    """What --apply did, finding by finding, and what the check finds afterwards."""
    host = report.host
    out = ["aidoctor fix --apply: %s" % visible(host.source)]
    for number, (item, results) in enumerate(applied, 1):
        finding = item.finding
        way = " (way %d of %d)" % (item.choice, item.count) if item.count > 1 else ""
        out.append("%d. %s %s%s" % (number, finding.severity.value, finding.rule, way))
        for step, action, outcome, detail in results:
            if action is None:
                out.append(
                    "   %s, %s" % (outcome, visible(detail)) if detail.startswith("by hand") else "   %s: %s" % (outcome, visible(detail))
                )
                continue
            shown = "; ".join(action.sh(Shell(sudo=False, chroot=step.shell.chroot if step.shell else None))) or action.kind
            if outcome == "done":
                out.append("   %s" % visible(detail))
            else:
                out.append("   %s: %s (%s)" % (outcome, visible(shown), visible(detail)))
    if kept.folder:
        out.append("Backups of the files changed, and the list of changes: %s" % visible(kept.folder))
    if kept.error:
        out.append("The list of changes was not written: %s" % visible(kept.error))
    if recheck.error:
        out.append(
            "Not checked again, since the check failed (%s): run aidoctor again to see where the host stands" % visible(recheck.error)
        )
        return "\n".join(out) + "\n"
    out.append("Checked again, now and as the host will boot (aidoctor --next-boot):")
    rows = [
        ("cleared, now and at the next boot", recheck.for_good),
        ("cleared now, back at the next boot (what lasts was not applied)", recheck.until_boot),
        ("cleared at the next boot", recheck.at_boot),
        ("still there", recheck.remaining),
        ("new", recheck.new),
        ("new at the next boot", recheck.new_at_boot),
        ("not there now, but at the next boot, as before these changes", recheck.coming),
    ]
    if not recheck.simulated:
        rows = [
            ("cleared (an image: judged as it boots)", recheck.for_good + recheck.until_boot),
            ("still there", recheck.remaining),
            ("new", recheck.new),
        ]
    for words, rules in rows:
        if rules or words == "still there":
            out.append("   %s: %s" % (words, ", ".join(rules) or "none"))
    return "\n".join(out) + "\n"


def render_applied_json(report, applied, kept, recheck) -> str:
    items = []
    for item, results in applied:
        items.append(
            {
                "rule": item.finding.rule,
                "way": item.choice,
                "results": [
                    {"action": action.as_dict() if action is not None else None, "outcome": outcome, "detail": detail}
                    for _step, action, outcome, detail in results
                ],
            }
        )
    document = {
        "schema": "aidoctor.fix-result/1",
        "root": report.host.root,
        "applied": items,
        "backups": kept.folder,
        "recheck": {
            "cleared": recheck.for_good,
            "cleared_until_next_boot": recheck.until_boot,
            "cleared_at_next_boot": recheck.at_boot,
            "remaining": recheck.remaining,
            "new": recheck.new,
            "new_at_next_boot": recheck.new_at_boot,
            "coming_at_next_boot": recheck.coming,
            "next_boot_simulated": recheck.simulated,
        },
    }
    if kept.error:
        document["backups_error"] = kept.error
    if recheck.error:
        document["recheck"] = {"error": recheck.error}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
