"""The README's lists agree with the code (the registry is the one source of rule ids)."""

from __future__ import annotations

import json
import re

import pytest

from ai_doctor import engine

from conftest import FIXTURES, REPO

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    start = re.search(r"^#+ %s.*$" % re.escape(title), README, re.M)
    end = re.search(r"^## ", README[start.end() :], re.M)
    return README[start.end() : start.end() + end.start()] if end else README[start.end() :]


def test_rule_table_matches_the_registry():
    table = re.findall(r"^\| `([a-z]+\.[a-z0-9-]+)` \| (\w+) \|", section("What each finding means"), re.M)
    rules = engine.load_rules()
    assert [rule_id for rule_id, _ in table] == [r.id for r in sorted(rules.values(), key=lambda r: r.order)]
    assert {rule_id: severity for rule_id, severity in table} == {r.id: r.severity.value for r in rules.values()}


def test_fixture_table_matches_the_fixtures():
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section("Host trees, snapshots and fixtures"), re.M))
    assert listed == {path.parent.name for path in FIXTURES.glob("*/expect.json")}


def test_quick_start_has_exactly_two_shell_blocks():
    blocks = re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", section("Quick start"), re.S)
    assert len(blocks) == 2
    assert "aidoctor" in blocks[0] and "pytest" not in blocks[0]
    assert "pytest" in blocks[1]


def test_json_example_is_json_with_the_documented_keys():
    example = re.search(r"```json\n(.*?)```", section("JSON output"), re.S).group(1).replace("…", "...")
    report = json.loads(example)
    assert set(report) == {"schema", "created", "tool", "host", "facts", "options", "summary", "findings", "checks"}


def test_the_license_file_is_the_licence_pyproject_names():
    named = re.search(r'^license = \{ text = "([^"]+)" \}$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    text = (REPO / "LICENSE").read_text()
    assert named == "Apache-2.0"
    assert "Apache License" in text[:200] and "Version 2.0, January 2004" in text[:200]
    assert "END OF TERMS AND CONDITIONS" in text


def _recipe_commands(block: str, ci: str):
    """The shell lines of a README CI recipe: GitLab's ``script:`` items, GitHub's ``run: |``."""
    if ci == "gitlab":
        script = block.split("script:\n", 1)[1]
        return [line.strip()[2:] for line in script.splitlines() if line.startswith("    - ")]
    run = block.split("run: |\n", 1)[1]
    return [line.strip() for line in run.splitlines() if line.startswith("    ") and not line.startswith("- ")][:3]


@pytest.mark.parametrize("ci", ["gitlab", "github"])
def test_the_ci_recipes_run_on_a_fixture_image(tmp_path, ci):
    import os
    import shutil
    import subprocess
    import sys
    import tarfile

    blocks = re.findall(r"```yaml\n(.*?)```", section("Golden images in CI"), re.S)
    block = next(b for b in blocks if ("image-check:" in b) == (ci == "gitlab"))
    commands = _recipe_commands(block, ci)
    assert commands[0].startswith("python3 -m venv .aidoctor && .aidoctor/bin/pip install ")
    assert any(".aidoctor/bin/aidoctor --root" in command for command in commands)
    # The suite's own environment stands in for the install line.
    os.makedirs(tmp_path / ".aidoctor" / "bin")
    os.symlink(shutil.which("aidoctor") or os.path.join(os.path.dirname(sys.executable), "aidoctor"), tmp_path / ".aidoctor/bin/aidoctor")
    os.makedirs(tmp_path / "build")
    with tarfile.open(tmp_path / "build" / "rootfs.tar", "w") as out:
        out.add(FIXTURES / "image-ubuntu-clean" / "root", arcname=".")
    script = "\n".join(command.split("  #", 1)[0] for command in commands[1:])
    if os.geteuid() == 0 or not shutil.which("sudo"):
        script = script.replace("sudo ", "")
    done = subprocess.run(["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "aidoctor.xml").read_text().startswith("<?xml")
