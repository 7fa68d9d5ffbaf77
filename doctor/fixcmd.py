"""``aidoctor fix``: the findings' fixes as one script, a JSON plan, or applied.

``--apply`` on a tree (``--root DIR``) makes the file changes in Python, inside the tree, with
backups; what changes only a running system (sysctl -w, sysfs, programs) is listed, not done.
On the live host it runs every action after a confirmation per finding (``--yes`` skips it),
stops at the first failure, and leaves what belongs on a container's host to the host. Either
way the host is checked again, now and as it will boot, and the result says what cleared.
"""

from __future__ import annotations

import os
import sys

from ai_doctor.remedy.actions import FILE, MANUAL, NOW, REBOOT, RUN, SHOW, NotApplicable

EXIT_OK, EXIT_FAILED = 0, 1


class Outcome:
    DONE, SKIPPED, NOT_APPLIED, FAILED = "done", "skipped", "not applied", "failed"


def run(args, request, host, rules, write, usage_error, command=("aidoctor", "fix", "--apply")) -> int:
    """Print, or apply and check again (``command``: the words that started this run, for a
    rerun as root). Exit 0 when every change of the ways taken was made and
    their findings cleared (now or at the next boot); 1 when a change failed or could not be
    made, or a finding they were to fix is still there."""
    from ai_doctor.catalogue import listed
    from ai_doctor.checkup import checkup
    from ai_doctor.remedy.plan import PlanError, build, parse_choices
    from ai_doctor.reports import fixscript

    report = checkup(host, request, rules, "never")
    try:
        plan, notes = build(report, parse_choices(args.choose), {rule.id for rule in listed()})
    except PlanError as exc:
        raise usage_error(str(exc)) from None
    for note in notes:
        print("aidoctor: note: %s" % note, file=sys.stderr)
    if not args.apply:
        render = fixscript.render_json if args.format == "json" else fixscript.render_sh
        write(args.output, render(report, plan))
        return EXIT_OK
    if host.origin is not None:
        raise usage_error("fix --apply: --snapshot %s is read in memory, no tree to change; unpack it and give --root DIR" % host.origin)
    if not host.live and _is_this_root(host.root):
        raise usage_error("fix --apply: --root %s is this host's own root: run `fix --apply` without --root to change it" % host.root)
    # What the next boot holds already, so only what the changes bring is called new there.
    baseline = _booted_rules(host, request, rules)
    if host.live:
        applied, kept = _apply_live(args, report, plan, usage_error, command)
    else:
        applied, kept = _apply_tree(host, plan)
    try:
        recheck = _recheck(host, request, rules, report, plan, baseline)
    except Exception as exc:  # noqa: BLE001 - the changes are made: say which before anything else
        if os.environ.get("AIDOCTOR_DEBUG"):
            raise
        recheck = Recheck.failed("%s: %s" % (type(exc).__name__, exc))
    render = fixscript.render_applied_json if args.format == "json" else fixscript.render_applied
    write(args.output, render(report, applied, kept, recheck))
    failed = any(
        outcome in (Outcome.FAILED, Outcome.NOT_APPLIED) for _item, results in applied for _step, _action, outcome, _detail in results
    )
    fixed = {item.finding.rule for item in plan if item.changes}
    left = fixed & set(recheck.until_boot + recheck.remaining)
    # New now counts where the running system was changed too (this host) or is the boot (an
    # image); a tree's running kernel is not changed, so its files may now differ from it.
    new = recheck.new_at_boot or (recheck.new if host.live or not recheck.simulated else [])
    return EXIT_FAILED if failed or left or new or recheck.error or kept.error else EXIT_OK


def _is_this_root(root: str) -> bool:
    """Whether ``root`` is this machine's own root: a link to it, or the same folder mounted
    elsewhere (a bind mount), which a tree's changes would reach without the live checks."""
    try:
        here, there = os.stat("/"), os.stat(root)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class Kept:
    """Where the backups and the list of changes are (``folder``), or why they could not be
    written (``error``); both None when nothing changed."""

    def __init__(self, folder=None, error=None):
        self.folder, self.error = folder, error


def _finish(target) -> Kept:
    from ai_doctor.remedy.target import ApplyError

    try:
        return Kept(target.finish())
    except ApplyError as exc:
        return Kept(None, str(exc))


def _apply_tree(host, plan):
    """Every file action of the plan, applied inside the tree; the rest listed with why not."""
    from ai_doctor.remedy.target import Target

    def skip(_step, action):
        return None if action.phase == FILE else _not_in_tree(action)

    target = Target(host.root)
    applied = [(item, _apply_item(target, item, skip)[0]) for item in plan]
    return applied, _finish(target)


def _apply_item(target, item, skip):
    """The results of ``item``'s actions, each applied unless ``skip(step, action)`` gives
    why not, up to the first that fails or cannot be applied (on the live host, a failure
    too); and what stopped them (None)."""
    from ai_doctor.remedy.target import ApplyError

    results, stopped = [], None
    for step in item.steps:
        if not step.actions and step.persistent:
            results.append((step, None, Outcome.SKIPPED, "by hand: %s" % step.summary))
        for action in step.actions:
            why = "after %s" % stopped if stopped is not None else skip(step, action)
            if why:
                results.append((step, action, Outcome.SKIPPED, why))
                continue
            try:
                for change in action.apply(target):
                    results.append((step, action, Outcome.DONE, change))
            except NotApplicable as exc:
                results.append((step, action, Outcome.FAILED if target.live else Outcome.NOT_APPLIED, str(exc)))
                stopped = "a failure" if target.live else "a step that could not be applied"
            except (ApplyError, OSError) as exc:
                results.append((step, action, Outcome.FAILED, str(exc)))
                stopped = "a failure"
    return results, stopped


def _not_in_tree(action) -> str:
    return {
        NOW: "changes the running kernel, and a tree is not running",
        RUN: "runs a program, which --apply never does in a tree: run the printed command (through chroot for an image)",
        SHOW: "only shows something",
        REBOOT: "a reboot",
        MANUAL: "by hand",
    }.get(action.phase, "not applied to a tree")


def _apply_live(args, report, plan, usage_error, command):
    from ai_doctor.remedy.target import LiveTarget
    from ai_doctor.shell import join

    if os.geteuid() != 0:
        raise usage_error("fix --apply changes this host and needs root: sudo %s" % join(command))
    if not args.yes and not (sys.stdin is not None and sys.stdin.isatty()):
        raise usage_error("fix --apply: no terminal to ask on before each change; pass --yes to apply without asking")
    container = report.host.container
    where = "the container's host" if container != "kubernetes" else "this Kubernetes pod's node"
    target = LiveTarget()

    def skip(step, action):
        if step.on_host and container:
            return "belongs on %s: make it there" % where
        return _not_in_tree(action) if action.phase in (SHOW, REBOOT, MANUAL) else None

    applied = []
    failed = False
    for item in plan:
        if failed or not item.changes:
            applied.append((item, [(None, None, Outcome.SKIPPED, "after a failure" if failed else "no configuration fix")]))
            continue
        if not args.yes and not _confirm(item):
            applied.append((item, [(None, None, Outcome.SKIPPED, "declined")]))
            continue
        results, stopped = _apply_item(target, item, skip)
        failed = stopped is not None
        applied.append((item, results))
    return applied, _finish(target)


def _confirm(item) -> bool:
    finding = item.finding
    print("\n%s %s: %s" % (finding.severity.value, finding.rule, finding.title), file=sys.stderr)
    for step in item.steps:
        print("  %s" % step.summary, file=sys.stderr)
        for command in step.commands:
            print("    %s" % command, file=sys.stderr)
    sys.stderr.write("Apply this fix? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


class Recheck:
    """Rules whose findings cleared for good (now and at the next boot), cleared now but come
    back at the next boot, clear only at the next boot, remain, or are new (now, or at the next
    boot); and those not there now that the next boot brings as it did before the changes."""

    def __init__(self, for_good, until_boot, at_boot, remaining, new, simulated, error=None, new_at_boot=(), coming=()):
        self.for_good, self.until_boot, self.at_boot = for_good, until_boot, at_boot
        self.remaining, self.new, self.simulated = remaining, new, simulated
        self.error = error
        # Not there now, but after the next boot: brought by the changes, or coming as before them.
        self.new_at_boot, self.coming = list(new_at_boot), list(coming)

    @classmethod
    def failed(cls, error: str):
        """The check after the changes could not run (``error`` says why)."""
        return cls([], [], [], [], [], False, error)


def _fresh(host):
    from ai_doctor.host import Host

    return Host("/") if host.live else Host(host.root, origin=host.origin, image=host.image, tree=host.tree)


def _serious(report) -> set:
    """Rules with a finding above info: a fact worth knowing (a kernel without hugetlb, a VM's
    fixed clocks) is not a problem left, and one that a fix brings down to info is cleared."""
    from ai_doctor.model import Severity

    return {finding.rule for finding in report.findings if finding.severity is not Severity.INFO}


def _booted_rules(host, request, rules) -> set:
    from ai_doctor.checkup import checkup
    from ai_doctor.nextboot import simulate

    return _serious(checkup(simulate(_fresh(host), request), request, rules, "never"))


def _recheck(host, request, rules, before, plan, baseline=frozenset()) -> Recheck:
    from ai_doctor.checkup import checkup
    from ai_doctor.nextboot import NextBootHost, simulate

    now = checkup(_fresh(host), request, rules, "never")
    booted = simulate(_fresh(host), request)
    later = checkup(booted, request, rules, "never")
    had, left_now, left_later = _serious(before), _serious(now), _serious(later)
    # The findings fixed, and every other one the host had: a change may clear those too.
    judged = {item.finding.rule for item in plan if item.changes} | had
    return Recheck(
        sorted(judged - left_now - left_later),
        sorted((judged - left_now) & left_later),
        sorted((judged & left_now) - left_later),
        sorted(had & left_now & left_later),
        sorted(left_now - had),
        isinstance(booted, NextBootHost),
        new_at_boot=sorted(left_later - left_now - had - set(baseline)),
        coming=sorted((left_later - left_now - had) & set(baseline)),
    )
