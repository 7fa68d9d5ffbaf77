"""Rules read facts only: no files, no os, no subprocess (DESIGN.md, Data flow)."""

from __future__ import annotations

import ast

import pytest

from conftest import REPO

FORBIDDEN_MODULES = {"os", "subprocess", "io", "pathlib", "shutil", "glob", "socket", "tempfile", "ctypes", "posix"}
FORBIDDEN_CALLS = {"open", "exec", "eval", "__import__", "compile"}
RULE_FILES = sorted((REPO / "rules").glob("*.py"))


def test_there_are_rule_modules():
    assert len(RULE_FILES) >= 8


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rules_never_touch_the_system(path):
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            problems += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                problems.append(node.module)
            if node.module == "ai_doctor.host":
                problems.append("ai_doctor.host (rules get facts, not the Host)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            problems.append("%s() at line %d" % (node.func.id, node.lineno))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in FORBIDDEN_MODULES:
            problems.append("%s.%s at line %d" % (node.value.id, node.attr, node.lineno))
    assert not problems, problems


def test_renderers_do_not_rank_or_filter():
    for path in sorted((REPO / "reports").glob("*.py")):
        source = path.read_text()
        assert "sorted(" not in source and ".sort(" not in source, path.name


def test_no_utils_module():
    for folder in ("doctor", "rules", "reports"):
        assert not list((REPO / folder).glob("**/utils.py"))
