"""The rule catalogue without the rules: every rule's id, title, severity and summary.

``--list-rules``, ``explain AREA``, ``--only``/``--skip`` and the fleet's columns need only these,
and a run of a few rules needs only their modules: importing every rule module (and the fact
modules they use) costs more than Python's own start. The built-in rules are listed in
ai_doctor.rules._catalogue, which tools/generate_share.py writes from the rule modules
(tests/test_share.py fails when it is stale); rule packs from entry points are imported to be
listed, after the built-in ones.
"""

from __future__ import annotations

import os
import stat
import sys

from ai_doctor.record import Record

ENTRY_POINT_GROUP = "ai_doctor.rules"


class Listed(Record):
    """A rule as the catalogue lists it: ``severity`` is the default severity's name,
    ``module`` the module that registers it."""

    __slots__ = ("id", "title", "severity", "summary", "module")

    @property
    def area(self) -> str:
        return self.id.split(".", 1)[0]


def built_in() -> tuple:
    """The built-in rules in catalogue order, imported from nothing but the generated list."""
    from ai_doctor.rules._catalogue import RULES

    return tuple(Listed(*row) for row in RULES)


def listed() -> tuple:
    """Every rule: the built-in ones, then those of installed rule packs (imported)."""
    rules = built_in()
    packs = pack_modules()
    if not packs:
        return rules
    from ai_doctor import engine

    engine.load_packs(packs)
    added = sorted((r for r in engine.REGISTRY.values() if not r.module.startswith("ai_doctor.rules.")), key=lambda r: r.order)
    return rules + tuple(Listed(r.id, r.title, r.severity.value, r.summary, r.module) for r in added)


def position(rule_id: str):
    """A built-in rule's place in the catalogue; None for a rule it does not list."""
    global _positions
    if _positions is None:
        from ai_doctor.rules._catalogue import RULES

        _positions = {row[0]: index for index, row in enumerate(RULES)}
    return _positions.get(rule_id)


_positions = None


def choose(rules, only=(), skip=()) -> tuple:
    """The entries of ``rules`` chosen by ids or area names, in catalogue order; unknown names
    raise LookupError naming them, a choice that leaves nothing raises ValueError."""
    ids = {r.id for r in rules}
    areas = {r.area for r in rules}
    unknown = [name for name in list(only) + list(skip) if name not in ids and name not in areas]
    if unknown:
        raise LookupError(", ".join(repr(name) for name in unknown))

    def matches(rule, names):
        return rule.id in names or rule.area in names

    chosen = tuple(r for r in rules if (not only or matches(r, only)) and not matches(r, skip))
    if not chosen:
        raise ValueError("--only and --skip together select no rules")
    return chosen


def pack_modules():
    """Modules named in the ``ai_doctor.rules`` entry-point group, looked for once a process.

    importlib.metadata costs several times Python's start-up to import and scan, so it only
    runs when an installed distribution's entry_points.txt mentions the group. Whether one in
    a sys.path folder does is remembered (ai_doctor.cache) until the folder changes, as it
    does when pip installs, upgrades or removes anything there: an ML venv holds hundreds of
    distributions, and opening each one's file costs a tenth of a check.
    """
    global _packs
    if _packs is None:
        _packs = _entry_point_modules()
    return _packs


_packs = None


def _entry_point_modules():
    marker = "[%s]" % ENTRY_POINT_GROUP
    if not any(_mentions(directory or ".", marker) for directory in sys.path):
        return []
    from importlib import metadata

    try:
        points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python 3.9: a dict of groups
        points = metadata.entry_points().get(ENTRY_POINT_GROUP, [])
    return sorted({point.value.split(":", 1)[0] for point in points})


def _mentions(directory: str, marker: str) -> bool:
    """Whether an entry_points.txt of a distribution in ``directory`` holds ``marker``."""
    from ai_doctor import cache

    try:
        info = os.stat(directory)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False  # a zip file on sys.path: the standard library's own
    remembered = cache.lookup("entry-points", info)
    if remembered in ("yes", "no"):
        return remembered == "yes"
    try:
        entries = os.listdir(directory)
    except OSError:
        return False
    found = False
    for entry in entries:
        if entry.endswith((".dist-info", ".egg-info")):
            try:
                with open(os.path.join(directory, entry, "entry_points.txt"), encoding="utf-8") as handle:
                    if marker in handle.read():
                        found = True
                        break
            except (OSError, UnicodeDecodeError):
                continue
    cache.store("entry-points", info, "yes" if found else "no")
    return found
