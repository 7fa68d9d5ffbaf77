"""aidoctor merge: many hosts' JSON reports as one fleet view."""

from __future__ import annotations

import json
import re

import pytest

from conftest import FIXTURES

NAMES = sorted(p.name for p in FIXTURES.iterdir() if (p / "root").is_dir())


@pytest.fixture
def reports(run, tmp_path):
    paths = []
    for name in NAMES:
        target = tmp_path / ("%s.json" % name)
        run("--root", FIXTURES / name / "root", "--model-size", "40G", "--format", "json", "-o", str(target))
        paths.append(str(target))
    return paths


def test_merge_ranks_hosts_by_their_worst_finding(run, reports):
    result = run("merge", *reports, "--format", "json")
    assert result.code == 0
    fleet = result.json
    worst = [host["worst"] for host in fleet["hosts"]]
    order = ["critical", "high", "medium", "low", "info", None]
    assert worst == sorted(worst, key=order.index)
    assert fleet["hosts_by_worst"]["ok"] == worst.count(None) and len(fleet["hosts"]) == len(NAMES)
    strict = next(h for h in fleet["hosts"] if h["host"] == "infer-strict-01")
    assert strict["cells"] == {"overcommit.strict-headroom": "critical"}
    assert fleet["rules"][0] == "hugepages.unsupported"  # catalogue order


def test_merge_html_cells_link_to_findings(run, reports, tmp_path):
    page_path = tmp_path / "fleet.html"
    assert run("merge", *reports, "--html", str(page_path)).code == 0
    page = page_path.read_text()

    links = set(re.findall(r'href="#(host-\d+-f\d+)"', page))
    anchors = set(re.findall(r'id="(host-\d+-f\d+)"', page))
    assert links and links <= anchors
    for needle in ("src=", "@import", "url("):
        assert needle not in page


def test_merge_text_and_markdown(run, reports):
    text = run("merge", *reports).out
    assert text.startswith("aidoctor fleet: %d hosts" % len(NAMES)) and "infer-strict-01" in text
    markdown = run("merge", *reports, "--format", "markdown").out
    assert markdown.startswith("# aidoctor fleet") and "| infer\\-strict\\-01 |" not in markdown  # only leading dashes escape
    assert re.search(r"\| \[infer-strict-01\]\(#host-\d+\) \| critical \|", markdown)
    # every cell link has its anchor

    assert set(re.findall(r"\]\(#(host-\d+-f\d+)\)", markdown)) <= set(re.findall(r'<a id="(host-\d+-f\d+)">', markdown))


@pytest.mark.parametrize(
    "content, words",
    [
        ("not json at all", "not JSON"),
        ("[1, 2]", "not an aidoctor report (no schema field)"),
        ('{"schema": "aidoctor.report/9"}', "report schema 'aidoctor.report/9'"),
        ('{"schema": "aidoctor.report/1", "host": {}}', "missing or malformed fields"),
        ('{"schema": "aidoctor.report/1", "host": {}, "findings": [{"severity": "dire"}], "summary": {"exit_code": 1}}', "malformed"),
    ],
)
def test_merge_refuses_what_is_not_a_report(run, reports, tmp_path, content, words):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = run("merge", reports[0], str(bad))
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("aidoctor: error: %s: " % bad) and words in result.err


def test_merge_of_a_missing_file_names_it(run, tmp_path):
    result = run("merge", str(tmp_path / "nope.json"))
    assert result.code == 2 and "nope.json: No such file or directory" in result.err


def test_merged_hostile_hostnames_stay_text(run, reports, tmp_path):
    data = json.loads(open(reports[0]).read())
    data["host"]["hostname"] = "<script>alert(1)</script>"
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(data))
    page_path = tmp_path / "fleet.html"
    run("merge", str(hostile), "--html", str(page_path))
    page = page_path.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_merge_marks_a_host_whose_checks_failed_and_keeps_same_names_apart(run, reports, tmp_path):
    data = json.loads(open(reports[0]).read())
    clean = dict(data, findings=[], checks=[dict(c, status="pass") for c in data["checks"]])
    broken = dict(clean, checks=[dict(clean["checks"][0], status="error", reason="RuntimeError: boom")] + clean["checks"][1:])
    for name, report in (("a.json", clean), ("b.json", broken)):
        (tmp_path / name).write_text(json.dumps(report))
    fleet = run("merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--format", "json").json
    assert [h["verdict"] for h in fleet["hosts"]] == ["unknown", "ok"]
    assert fleet["hosts"][0]["label"].endswith("(%s)" % (tmp_path / "b.json"))  # the same host name twice
    text = run("merge", str(tmp_path / "a.json"), str(tmp_path / "b.json")).out
    assert "(failed to run: hugepages.unsupported)" in text
    row = next(line for line in text.splitlines() if "b.json" in line)
    assert " ? " in row + " "  # the failed check's cell reads unknown, not nothing
    fleet = run("merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--format", "json").json
    assert fleet["hosts"][0]["checks_failed"] == [{"rule": "hugepages.unsupported", "reason": "RuntimeError: boom"}]
    assert fleet["hosts"][0]["cells"] == {"hugepages.unsupported": "unknown"}


@pytest.mark.parametrize(
    "content, words",
    [
        ("[" * 60000 + "]" * 60000, "not JSON"),
        ('{"schema": "aidoctor.report/1", "host": {}, "findings": [], "summary": {"exit_code": Infinity}}', "malformed"),
    ],
)
def test_merge_refuses_crafted_json_with_exit_2(run, tmp_path, content, words):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = run("merge", str(bad))
    assert result.code == 2 and words in result.err


def test_merge_takes_a_report_with_a_byte_order_mark(run, reports, tmp_path):
    marked = tmp_path / "bom.json"
    marked.write_bytes(b"\xef\xbb\xbf" + open(reports[0], "rb").read())
    assert run("merge", str(marked)).code == 0


def test_merge_text_shows_hostile_rule_ids_as_text(run, reports, tmp_path):
    data = json.loads(open(reports[0]).read())
    data["findings"][0]["rule"] = "evil|rule\x1b[2J"
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(data))
    assert "\x1b" not in run("merge", str(hostile)).out
    markdown = run("merge", str(hostile), "--format", "markdown").out
    header = next(line for line in markdown.splitlines() if line.startswith("| host |"))
    assert header.count(" | ") == markdown.splitlines()[markdown.splitlines().index(header) + 1].count(" | ")


def test_merge_refuses_one_report_twice_and_two_outputs_to_one_file(run, reports, tmp_path):
    assert "given twice" in run("merge", reports[0], reports[0]).err
    page = str(tmp_path / "x.html")
    assert "--output and --html both write" in run("merge", reports[0], "-o", page, "--html", page).err
