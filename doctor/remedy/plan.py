"""A fix plan: for each finding, in rank order, the one way of fixing it that will be taken.

A finding's remediation lists one or more alternatives (a step whose summary begins with "Or"
or "Otherwise" starts another); the first is taken unless ``--choose RULE=N`` names another.
A finding whose chosen way changes nothing on the host (advice, a smaller model) is kept in the
plan as one without a configuration fix, with its advice.
"""

from __future__ import annotations

from ai_doctor.model import alternatives
from ai_doctor.record import Record
from ai_doctor.remedy.actions import FILE, NOW, RUN

# Phases that change the host; the others only show, advise or ask for a reboot.
CHANGES = (NOW, FILE, RUN)


class PlanError(Exception):
    """A --choose that names no finding or no such way (the message is the user's line)."""


class Planned(Record):
    """One finding and the way taken: ``choice`` (1-based) of ``count`` ways, its ``steps``;
    ``changes`` is False where the way changes nothing (advice only)."""

    __slots__ = ("finding", "choice", "count", "steps")

    @property
    def changes(self) -> bool:
        return any(action.phase in CHANGES for step in self.steps for action in step.actions)

    @property
    def reboot(self) -> bool:
        return any(step.reboot for step in self.steps)


def parse_choices(texts):
    """``RULE=N`` words → {rule: N}; PlanError for anything else."""
    chosen = {}
    for text in texts:
        rule, sep, number = text.partition("=")
        if not sep or not rule or not (number.isascii() and number.isdigit()) or int(number) < 1:
            raise PlanError("--choose %s: write RULE=N, N counting the ways from 1 (e.g. hugepages.unused=2)" % text)
        if rule in chosen:
            raise PlanError("--choose %s given more than once" % rule)
        chosen[rule] = int(number)
    return chosen


def build(report, chosen=None, known=None):
    """The plan for ``report``'s findings; ``chosen`` {rule: way} from --choose.

    A choice applies to every finding of its rule that offers that many ways; another finding of
    the rule (persist.sysctl-drift has one per topic) keeps its first. A rule with no finding here
    is no error (a rerun after the fix worked), unless it is no rule at all (``known``: every
    rule id). Returns (plan, notes on choices that chose nothing)."""
    chosen = dict(chosen or {})
    if known is not None:
        unknown = sorted(rule for rule in chosen if rule not in known)
        if unknown:
            raise PlanError("--choose %s: no such rule (aidoctor --list-rules lists them)" % ", ".join(unknown))
    counts = {}
    for finding in report.findings:
        ways = alternatives(finding.remediation) or [[]]
        counts.setdefault(finding.rule, []).append(len(ways))
    for rule, number in chosen.items():
        offered = counts.get(rule)
        if offered and number > max(offered):
            most = max(offered)
            raise PlanError("--choose %s=%d: %s offers %d way%s here" % (rule, number, rule, most, "" if most == 1 else "s"))
    planned = []
    for finding in report.findings:
        ways = alternatives(finding.remediation) or [[]]
        number = chosen.get(finding.rule, 1)
        number = number if number <= len(ways) else 1
        planned.append(Planned(finding, number, len(ways), tuple(ways[number - 1])))
    notes = ["--choose %s: no finding of that rule here, so nothing is chosen" % rule for rule in sorted(set(chosen) - set(counts))]
    return tuple(planned), notes
