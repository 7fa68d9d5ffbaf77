"""The Python API as a serving stack's start-up hook or a notebook uses it: ai_doctor.check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ai_doctor
from ai_doctor import UsageError, api, check, cli
from ai_doctor.model import Report

from conftest import fixture_root, minimal_host

GUIDE = fixture_root("guide-followed-literally")
STRICT = fixture_root("strict-overcommit")


def without_time(text: str) -> dict:
    data = json.loads(text)
    data.pop("created")
    return data


@pytest.mark.parametrize("root, size", [(GUIDE, "140G"), (STRICT, "40G")])
def test_check_answers_as_the_command_does(run, root, size):
    report = check(model_size=size, root=root)
    command = run("--root", root, "--model-size", size, "--format", "json")
    assert isinstance(report, Report)
    assert report.exit_code == command.code
    ours, theirs = without_time(report.to_json()), without_time(command.out)
    # The report keeps the command line that runs the same check.
    assert ours["options"].pop("argv") == ["aidoctor", "--model-size", size, "--root", root]
    theirs["options"].pop("argv")
    assert ours == theirs
    assert [finding.rule for finding in report.findings] == [finding["rule"] for finding in command.json["findings"]]


def test_every_format_and_the_text_as_a_pipe_gets_it(run):
    report = check(model_size="140G", root=GUIDE, fail_on="never")
    assert report.exit_code == 0
    html = report.to_html()
    assert html.startswith("<!DOCTYPE html>") and "hugepages.unused" in html
    piped = run("--root", GUIDE, "--model-size", "140G", "--fail-on", "never").out
    assert report.to_text() == piped


def test_options_are_the_command_lines_as_keywords(tree):
    minimal_host(tree, overcommit="2")
    strict = check(model_size=60 << 30, root=str(tree), only="overcommit", fail_on="critical")
    assert {c.rule.split(".")[0] for c in strict.checks} == {"overcommit"}
    assert strict.request.size_text == str(60 << 30) and strict.exit_code == 1
    skipped = check(params="7B", dtype="fp16", root=str(tree), skip=["overcommit", "gpu"])
    assert skipped.request.model_size == 14 * 10**9 and not any(c.rule.startswith(("overcommit.", "gpu.")) for c in skipped.checks)


@pytest.mark.parametrize(
    "options, words",
    [
        ({"model_size": "lots"}, "--model-size 'lots' is not a size"),
        ({"fail_on": "severe"}, "--fail-on: invalid choice: 'severe'"),
        ({"dtype": "fp16"}, "--dtype goes with --params"),
        ({"root": "/nonexistent/tree"}, "--root /nonexistent/tree: not a directory"),
        ({"only": "fpga"}, "unknown rule or area: 'fpga'"),
        ({"hugepages": -3}, "--hugepages: '-3' is negative"),
        ({"image": True}, "--image goes with --root DIR or --snapshot FILE"),
    ],
)
def test_what_the_command_refuses_raises_usage_error_with_its_words(options, words, run):
    with pytest.raises(UsageError) as raised:
        check(**options)
    assert words in str(raised.value) and isinstance(raised.value, ValueError)
    flags = []
    for name, value in options.items():
        flags += ["--" + name.replace("_", "-")] + ([] if value is True else [str(value)])
    assert words in run(*flags).err


def test_only_keywords_and_no_unknown_ones():
    with pytest.raises(TypeError):
        check("140G", GUIDE)  # root is keyword-only: a path is never mistaken for a size
    with pytest.raises(TypeError):
        check(model_size="140G", format="json")


def test_a_snapshot_and_the_next_boot(tmp_path, run):
    archive = tmp_path / "host.tar.gz"
    assert run("snapshot", "--root", GUIDE, "-o", archive).code == 0
    replayed = check(model_size="140G", snapshot=str(archive))
    assert [f.rule for f in replayed.findings] == [f.rule for f in check(model_size="140G", root=GUIDE).findings]
    booted = check(model_size="140G", root=GUIDE, next_boot=True)
    assert "as it will boot" in booted.host.source


def test_the_command_line_runs_through_it(monkeypatch, run):
    seen = []
    real = api.report

    def spy(args, argv=(), program=("aidoctor",)):
        seen.append(list(argv))
        return real(args, argv, program)

    monkeypatch.setattr(api, "report", spy)
    assert run("--root", GUIDE, "--format", "json").code == cli.main(["--root", GUIDE, "--format", "json"])
    assert seen == [["--root", GUIDE, "--format", "json"]] * 2


def test_importing_the_package_loads_nothing_more_and_it_is_typed():
    # What the import adds (an editable install's own hook may have loaded typing at start-up).
    code = "import sys\nbefore = set(sys.modules)\nimport ai_doctor\nprint(sorted(set(sys.modules) - before))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['ai_doctor']"
    assert Path(ai_doctor.__file__).with_name("py.typed").is_file()
    assert ai_doctor.check is api.check and "check" in ai_doctor.__all__
