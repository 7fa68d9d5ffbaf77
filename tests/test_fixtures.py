"""Every fixture tree produces exactly the findings its expect.json names, and the skips."""

from __future__ import annotations

import json

import pytest

from conftest import FIXTURES

CASES = sorted(path.parent.name for path in FIXTURES.glob("*/expect.json"))


def test_there_are_enough_fixture_trees():
    assert len(CASES) >= 9


@pytest.mark.parametrize("name", CASES)
def test_fixture_findings(run, name):
    expect = json.loads((FIXTURES / name / "expect.json").read_text())
    result = run("--root", FIXTURES / name / "root", "--format", "json", *expect["args"])
    statuses = result.statuses()
    assert result.findings() == expect["findings"], expect["description"]
    for rule in expect.get("skips", []):
        assert statuses[rule] == "skip", rule
    assert "error" not in statuses.values(), [c for c in result.json["checks"] if c["status"] == "error"]
    # Commands each finding must print, exactly ({root}: the tree, for an image changed through chroot).
    for rule, wanted in expect.get("commands", {}).items():
        printed = [c for f in result.json["findings"] if f["rule"] == rule for step in f["remediation"] for c in step["commands"]]
        assert printed == [command.replace("{root}", str(FIXTURES / name / "root")) for command in wanted], (rule, printed)
    worst = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
    failing = any(worst[s] <= worst["high"] for s in expect["findings"].values())
    assert result.code == (1 if failing else 0)


@pytest.mark.parametrize("name", CASES)
def test_fixture_text_report_is_plain_and_names_each_finding(run, name):
    expect = json.loads((FIXTURES / name / "expect.json").read_text())
    result = run("--root", FIXTURES / name / "root", *expect["args"])
    assert "\x1b[" not in result.out
    for rule in expect["findings"]:
        assert rule in result.out
    assert result.out.rstrip().splitlines()[-1].startswith("Result: ")
    assert not any(line != line.rstrip() for line in result.out.splitlines())
