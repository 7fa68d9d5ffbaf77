"""Renderers other than text and JSON: Markdown, JUnit XML, the Prometheus textfile and the
node-problem-detector line, each from the same finished report, and several from one run."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ai_doctor import engine

from conftest import FIXTURES, fixture_root, minimal_host

GUIDE = fixture_root("guide-followed-literally")
HOSTILE = "<script>alert(1)</script>|*x*"


def hostile_host(tree):
    minimal_host(tree, overcommit="1")
    tree.write("/proc/sys/kernel/hostname", HOSTILE + "\x1b[31m\n")
    tree.write("/proc/sys/vm/overcommit_ratio", "95\n")
    tree.write("/etc/sysctl.d/50-x|`y`.conf", "vm.overcommit_ratio = 95\n")
    return tree


# -- Markdown ---------------------------------------------------------------------------------


def test_markdown_names_each_finding_with_its_fix_in_a_code_block(run):
    result = run("--root", GUIDE, "--model-size", "140G", "--format", "markdown")
    assert result.code == 0
    out = result.out
    assert out.startswith("# aidoctor report: gpu-node-07\n")
    assert "### 1. 🟡 medium · `hugepages.unused`: Static huge page pool reserved but unused" in out
    assert "   ```sh\n   sudo sysctl -w vm.nr_hugepages=0\n   ```" in out
    assert "| `cpu.fixed-frequency` | pass |" in out


def test_markdown_host_text_stays_text(run, tree):
    markdown_it = pytest.importorskip("markdown_it")
    out = run("--root", hostile_host(tree), "--format", "markdown").out
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(out)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\x1b" not in out
    # The file name with a pipe and backticks stays one cell of the evidence table.
    row = next(line for line in out.splitlines() if "50-x" in line and line.startswith("|"))
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render("| a | b | c |\n| --- | --- | --- |\n" + row + "\n")
    assert rendered.count("<td>") == 3


# -- JUnit ------------------------------------------------------------------------------------


def test_junit_one_testcase_per_check_failures_at_the_threshold(run, tmp_path):
    target = tmp_path / "junit.xml"
    result = run("--root", GUIDE, "--model-size", "140G", "--fail-on", "medium", "--junit", str(target))
    assert result.code == 1 and "hugepages.unused" in result.out  # the terminal report as well
    root = ET.parse(target).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert len(cases) == int(suite.get("tests")) == len(engine.load_rules())
    assert cases["hugepages.unused"].find("failure").get("type") == "medium"
    assert "sudo sysctl -w vm.nr_hugepages=0" in cases["hugepages.unused"].find("failure").text
    assert cases["overcommit.ratio-ignored"].find("failure") is None  # low, below --fail-on medium
    assert "vm.overcommit_ratio = 90" in cases["overcommit.ratio-ignored"].find("system-out").text
    assert cases["storage.scheduler"].find("skipped") is None or cases["storage.scheduler"].find("skipped").get("message")
    assert int(suite.get("failures")) == 3 and int(suite.get("skipped")) == len(suite.findall("testcase/skipped"))


def test_junit_is_well_formed_with_hostile_host_text(run, tree, tmp_path):
    target = tmp_path / "junit.xml"
    run("--root", hostile_host(tree), "--junit", str(target))
    suite = ET.parse(target).getroot().find("testsuite")
    assert suite.get("hostname").startswith(HOSTILE)


# -- Prometheus -------------------------------------------------------------------------------


def test_prometheus_textfile_parses_and_counts(run, tree, tmp_path):
    parser = pytest.importorskip("prometheus_client.parser")
    target = tmp_path / "aidoctor.prom"
    assert run("--root", hostile_host(tree), "--prom", str(target)).code == 0
    families = {family.name: family for family in parser.text_string_to_metric_families(target.read_text())}
    info = families["aidoctor_info"].samples[0]
    assert info.labels["hostname"] == HOSTILE + "\x1b[31m" and info.value == 1
    findings = {s.labels["severity"]: s.value for s in families["aidoctor_findings"].samples}
    assert findings["low"] == 1 and sum(findings.values()) == len(run("--root", tree, "--format", "json").json["findings"])
    statuses = [s for s in families["aidoctor_check_status"].samples if s.labels["rule"] == "overcommit.ratio-ignored"]
    assert {s.labels["status"]: s.value for s in statuses} == {"pass": 0, "finding": 1, "skip": 0, "error": 0}
    assert families["aidoctor_last_run_timestamp_seconds"].samples[0].value > 1.7e9
    assert not list(tmp_path.glob(".*aidoctor-tmp"))


# -- node-problem-detector --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, code, start",
    [
        (["--model-size", "140G"], 0, "ok: nothing at or above high"),
        (
            ["--model-size", "140G", "--fail-on", "medium"],
            1,
            "medium hugepages.unused: Static huge page pool reserved but unused (+2 more)",
        ),
    ],
)
def test_npd_line_and_status(run, args, code, start):
    result = run("--root", GUIDE, "--format", "npd", *args)
    assert result.code == code
    assert result.out.startswith(start) and result.out.count("\n") == 1
    assert len(result.out.rstrip("\n").encode()) <= 80


def test_npd_line_is_cut_at_80_bytes_on_a_character(run, tree):
    from ai_doctor.reports.npd import fit

    assert len(fit("é" * 100).encode()) <= 80 and fit("é" * 100).endswith("...")


def test_npd_unknown_when_a_rule_fails(run, tree, monkeypatch):
    from ai_doctor import engine

    minimal_host(tree)
    rule = engine.load_rules()["memory.headroom"]
    monkeypatch.setitem(engine.REGISTRY, "memory.headroom", rule._replace(check=lambda f: 1 / 0))
    result = run("--root", tree, "--model-size", "8G", "--format", "npd")
    assert result.code == 2 and result.out.startswith("unknown: 1 check(s) failed to run: memory.headroom")


def test_report_files_name_their_own_option_in_errors(run):
    result = run("--root", GUIDE, "--junit", "/nonexistent/dir/j.xml")
    assert result.code == 2 and result.err.startswith("aidoctor: error: --junit /nonexistent/dir/j.xml:")


def test_fixture_reports_render_in_every_format(run, tmp_path):
    for name in sorted(p.name for p in FIXTURES.iterdir() if (p / "root").is_dir()):
        for fmt in ("markdown", "npd"):
            assert run("--root", FIXTURES / name / "root", "--model-size", "40G", "--format", fmt).code in (0, 1)
        assert run("--root", FIXTURES / name / "root", "--junit", str(tmp_path / "j.xml"), "--prom", str(tmp_path / "p.prom")).code in (
            0,
            1,
        )
        ET.parse(tmp_path / "j.xml")


# -- SARIF ------------------------------------------------------------------------------------

SARIF_SCHEMA = FIXTURES.parent / "tests" / "sarif-schema-2.1.0.json"


def _sarif(run, tmp_path, *args):
    import json

    target = tmp_path / "out.sarif"
    run(*args, "--sarif", str(target))
    return json.loads(target.read_text())


def _validate(log):
    import json

    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(log)


def test_sarif_validates_and_carries_the_rules_table(run, tmp_path):
    log = _sarif(run, tmp_path, "--root", GUIDE, "--model-size", "140G")
    _validate(log)
    run_ = log["runs"][0]
    rules = {rule["id"]: rule for rule in run_["tool"]["driver"]["rules"]}
    assert len(rules) == len(engine.load_rules())
    assert rules["overcommit.strict-headroom"]["defaultConfiguration"]["level"] == "error"
    assert rules["thp.disabled"]["defaultConfiguration"]["level"] == "note"
    assert "vm.rst" in rules["overcommit.ratio-ignored"]["help"]["text"]
    results = {result["ruleId"]: result for result in run_["results"]}
    unused = results["hugepages.unused"]
    assert unused["level"] == "warning" and run_["tool"]["driver"]["rules"][unused["ruleIndex"]]["id"] == "hugepages.unused"
    location = unused["locations"][0]["physicalLocation"]
    assert location == {"artifactLocation": {"uri": "etc/sysctl.conf", "uriBaseId": "HOSTROOT"}, "region": {"startLine": 16}}
    assert run_["originalUriBaseIds"]["HOSTROOT"]["uri"].endswith("/guide-followed-literally/root/")


def test_sarif_fingerprints_are_stable_and_distinct(run, tmp_path):
    first = _sarif(run, tmp_path, "--root", GUIDE, "--model-size", "140G")["runs"][0]["results"]
    second = _sarif(run, tmp_path, "--root", GUIDE, "--model-size", "8G")["runs"][0]["results"]
    prints = [r["partialFingerprints"]["aidoctor/v1"] for r in first]
    assert prints == [r["partialFingerprints"]["aidoctor/v1"] for r in second]
    assert len(set(prints)) == len(prints)


def test_sarif_with_hostile_host_text_is_still_valid(run, tree, tmp_path):
    log = _sarif(run, tmp_path, "--root", hostile_host(tree))
    _validate(log)
    result = next(r for r in log["runs"][0]["results"] if r["ruleId"] == "overcommit.ratio-ignored")
    uris = [loc["physicalLocation"]["artifactLocation"]["uri"] for loc in result["locations"]]
    assert "etc/sysctl.d/50-x%7C%60y%60.conf" in uris


@pytest.mark.unprovable("aidoctor is made to fail on it")
def test_npd_reads_aidoctors_own_failure_as_unknown(run, tree, monkeypatch):
    from ai_doctor import checkup

    minimal_host(tree)
    monkeypatch.setattr(checkup, "host_summary", lambda host, facts: 1 / 0)
    result = run("--root", tree, "--format", "npd")
    assert result.code == 2 and result.out.startswith("unknown: aidoctor failed: ZeroDivisionError")


def test_a_file_name_that_is_not_utf8_never_stops_a_report(run, tree, tmp_path):
    import os

    minimal_host(tree)
    folder = os.path.join(str(tree.root).encode(), b"etc/sysctl.d")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, b"bad\xff\xfe.conf"), "w") as handle:
        handle.write("vm.nr_hugepages = 7\n")
    for args in (
        ["--format", "json"],
        ["--format", "html"],
        ["--format", "markdown"],
        ["--sarif", str(tmp_path / "s")],
        ["--html", str(tmp_path / "h")],
    ):
        result = run("--root", tree, "--model-size", "140G", "-o", str(tmp_path / "out"), *args)
        assert result.code == 1, (args, result.err)
    assert "bad\\xff\\xfe.conf" in (tmp_path / "h").read_text()


def test_npd_says_why_on_stdout_when_it_cannot_decide(run):
    bad = run("--root", "/nonexistent/tree", "--format", "npd")
    assert bad.code == 2 and bad.out.startswith("unknown: --root /nonexistent/tree: not a directory")
    unwritable = run("--root", GUIDE, "--format", "npd", "--junit", "/nonexistent/dir/j.xml")
    assert unwritable.code == 2 and unwritable.out.startswith("unknown: --junit /nonexistent/dir/j.xml:")


def test_two_outputs_to_one_file_are_refused(run, tmp_path):
    target = str(tmp_path / "f")
    result = run("--root", GUIDE, "--junit", target, "--sarif", target)
    assert result.code == 2 and "--junit and --sarif both write" in result.err
    assert "--output and --html both write" in run("--root", GUIDE, "-o", target, "--html", target).err
