"""The fuzzer (issue 13) in the suite: a short deterministic run, and the regression corpus.

``test_short_fuzz_run`` runs a fixed set of cases (fixed seeds, small inputs: a few seconds)
through every oracle of tests/fuzz/aidfuzz/execute.py. ``test_fuzz_regression[NAME]`` runs
each reproducer of ``tests/fuzz/regressions/NAME/recipe.json`` (a failure a fuzz run found:
its ``failure`` field says which) and asserts that no oracle fails any more. Run them alone
with ``pytest tests/fuzz -k regression``. The long run is ``python benchmarks/fuzz.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from aidfuzz import campaign, cases  # noqa: E402

SEED = 13
CASES = 60
REGRESSIONS = HERE / "regressions"


def _report(recipe, failures) -> str:
    lines = []
    for failure in failures:
        lines.append(
            "%s: %s\n  %s\n  argv: %s" % (failure["oracle"], campaign.key_text(failure["key"]), failure.get("detail"), failure.get("argv"))
        )
    lines.append("case: %s" % cases.describe(recipe))
    lines.append("recipe: %s" % json.dumps(recipe)[:1500])
    return "\n".join(lines)


def test_short_fuzz_run():
    recipes = [cases.generate(cases.case_seed(SEED, index), quick=True) for index in range(CASES)]
    results = campaign.run_recipes(recipes)
    assert len(results) == len(recipes)
    execs = sum(execs for execs, _ in results)
    assert execs >= 200  # each case runs several command lines
    seen = {}
    for recipe, (_, failures) in zip(recipes, results):
        for failure in failures:
            seen.setdefault(campaign.key_text(failure["key"]), _report(recipe, [failure]))
    assert not seen, "%d distinct failures in %d command lines:\n\n%s" % (len(seen), execs, "\n\n".join(seen.values()))


def test_cases_are_the_same_from_their_seed():
    assert cases.generate(cases.case_seed(SEED, 7), quick=True) == cases.generate(cases.case_seed(SEED, 7), quick=True)
    recipe = cases.generate(cases.case_seed(SEED, 3))
    assert cases.build_tree(recipe) == cases.build_tree(json.loads(json.dumps(recipe)))


def _breaks(how):
    """A setup for the worker that breaks aidoctor's checkup in one way."""

    def setup():
        import os
        import time

        from ai_doctor import checkup, cli

        original = checkup.checkup

        def broken(host, *args, **kwargs):
            if how == "crash":
                raise KeyError("planted")
            if how == "timeout":
                time.sleep(30)
            if how == "memory":
                # One request past the worker's address-space cap fails at once; filling memory
                # page by page up to it took seconds on a loaded machine and met the time limit.
                hoard = bytearray(8 << 30)
                del hoard
            if how == "wrote-outside":
                with open("stray.txt", "w") as handle:
                    handle.write("x")
            if how == "input-changed":
                os.utime(host.root + "/etc/os-release", (0, 0))
            if how == "temp-left":
                import tempfile

                tempfile.mkdtemp()
            return original(host, *args, **kwargs)

        checkup.checkup = broken
        if how == "escape":
            from ai_doctor.reports import html

            html.render = lambda report: "<p><x-fuzz></p>"
        cli.checkup = broken

    return setup


@pytest.mark.parametrize("how", ["crash", "timeout", "memory", "wrote-outside", "input-changed", "temp-left", "escape"])
def test_the_oracles_catch_what_they_are_for(how):
    recipe = {
        "format": 1,
        "seed": 0,
        "target": "checkup",
        "base": {"mini": True},
        "subset": None,
        "mutations": [],
        "heavy": False,
        "timeout": 2,
        "runs": [
            {
                "argv": ["--root", "{TREE}", "--model-size", "8G", "--format", "html" if how == "escape" else "json"],
                "format": "html" if how == "escape" else "json",
            }
        ],
    }
    [(_, clean)] = campaign.run_recipes([recipe])
    assert clean == []
    [(_, failures)] = campaign.run_recipes([recipe], setup=_breaks(how))
    assert [f["oracle"] for f in failures] == [how], failures


@pytest.mark.parametrize("name", sorted(p.parent.name for p in REGRESSIONS.glob("*/recipe.json")))
def test_fuzz_regression(name):
    recipe = json.loads((REGRESSIONS / name / "recipe.json").read_text(encoding="utf-8"))
    [(execs, failures)] = campaign.run_recipes([recipe])
    assert execs == len(recipe["runs"])
    assert not failures, "%s (found as: %s)\n%s" % (name, recipe.get("failure", {}).get("detail"), _report(recipe, failures))
