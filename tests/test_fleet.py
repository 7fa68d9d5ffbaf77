"""aidoctor merge: many hosts' JSON reports as one fleet view."""

from __future__ import annotations

import json
import os
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


# -- report times, staleness, cell marks, folders, the fleet's exit code (issue 16) ------------

NOW = 1796860800.0  # 2026-12-10T00:00:00Z: ages in these tests are measured to it, not to the clock
DAY = 86400


def _iso(seconds: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@pytest.fixture
def made(run, tmp_path):
    """Two real reports as dicts: ``critical`` (infer-strict-01, a critical finding, run with
    --model-size 40G) and ``healthy`` (gpu-node-02, no findings, no model size)."""
    out = {}
    for key, fixture, extra in (("critical", "strict-overcommit", ["--model-size", "40G"]), ("healthy", "gpu-healthy", [])):
        target = tmp_path / ("%s-made.json" % key)
        run("--root", FIXTURES / fixture / "root", "--format", "json", "--fail-on", "never", "-o", target, *extra)
        out[key] = json.loads(target.read_text())
        target.unlink()
    return out


def _write(folder, name, report):
    path = folder / name
    path.write_text(json.dumps(report))
    return str(path)


@pytest.fixture
def aged(made, tmp_path):
    """Four reports, aged against NOW: fresh (1 day), old (8 days), legacy (no "created", as an
    older aidoctor wrote) and a snapshot analysed today but taken 10 days ago."""
    folder = tmp_path / "aged"
    folder.mkdir()
    healthy = made["healthy"]
    legacy = {key: value for key, value in dict(healthy, host=dict(healthy["host"], hostname="legacy")).items() if key != "created"}
    snapshot_host = dict(healthy["host"], hostname="snapped", captured=_iso(NOW - 10 * DAY), captured_by="0.1.0")
    return {
        "fresh": _write(folder, "fresh.json", dict(healthy, created=_iso(NOW - DAY), host=dict(healthy["host"], hostname="fresh"))),
        "old": _write(folder, "old.json", dict(made["critical"], created=_iso(NOW - 8 * DAY))),
        "legacy": _write(folder, "legacy.json", legacy),
        "snapshot": _write(folder, "snapshot.json", dict(healthy, created=_iso(NOW), host=snapshot_host)),
    }


def _fleet(paths, **options):
    from ai_doctor import fleet as fleet_model

    return fleet_model.load(paths, now=NOW, **options)


def test_reports_older_than_max_age_are_stale_and_a_report_without_a_time_is_unknown(aged):
    from ai_doctor.reports import fleet as renderer

    fleet = _fleet(list(aged.values()))
    hosts = {host["host"]: host for host in json.loads(renderer.render_json(fleet))["hosts"]}
    stale = {name: host["stale"] for name, host in hosts.items()}
    assert stale == {"fresh": False, "infer-strict-01": True, "legacy": False, "snapped": True}
    assert {name: host["time_unknown"] for name, host in hosts.items()} == {
        "fresh": False, "infer-strict-01": False, "legacy": True, "snapped": False,
    }  # fmt: skip
    assert hosts["infer-strict-01"]["age_seconds"] == 8 * DAY and hosts["legacy"]["age_seconds"] is None
    # A snapshot is as old as the host it recorded, not as the report made from it today.
    assert hosts["snapped"]["created"] == _iso(NOW) and hosts["snapped"]["captured"] == _iso(NOW - 10 * DAY)
    assert hosts["snapped"]["age_seconds"] == 10 * DAY
    assert hosts["fresh"]["created"] == _iso(NOW - DAY) and hosts["legacy"]["created"] is None

    text = renderer.render_text(fleet)
    assert "merged 2026-12-10T00:00:00Z; 2 stale (older than 7d); 1 time unknown" in text
    table = text.split("\n\n")[-1].splitlines()  # the reports block: time, age, model size, --fail-on, version
    assert table[0].split() == ["host", "report", "time", "age", "model", "size", "--fail-on", "aidoctor"]
    row = {name: next(line for line in table if line.startswith(name + " ")) for name in ("fresh", "infer-strict-01", "legacy", "snapped")}
    assert "8d old, stale" in row["infer-strict-01"] and _iso(NOW - 8 * DAY) in row["infer-strict-01"]
    assert "stale" not in row["fresh"] and "24h old" in row["fresh"]
    assert re.search(r"not given +time unknown", row["legacy"]) and "stale" not in row["legacy"]
    assert "(snapshot %s)" % _iso(NOW - 10 * DAY) in row["snapped"] and "10d old, stale" in row["snapped"]

    markdown = renderer.render_markdown(fleet)
    assert "| 8d old, **stale** |" in markdown and "| time unknown |" in markdown

    page = renderer.render_html(fleet)
    rows = {name: next(r for r in page.split("<tr") if ">%s</a>" % name in r) for name in ("fresh", "infer-strict-01", "legacy")}
    assert rows["infer-strict-01"].startswith(' class="stale"') and '<span class="badge stale">stale</span>' in rows["infer-strict-01"]
    assert "badge stale" not in rows["fresh"] and "badge stale" not in rows["legacy"]
    assert '<span class="badge time-unknown">time unknown</span>' in rows["legacy"]


def test_max_age_moves_the_line(aged):
    stale = {host.name: host.stale for host in _fleet([aged["fresh"], aged["old"]], max_age=12 * 3600).hosts}
    assert stale == {"fresh": True, "infer-strict-01": True}
    stale = {host.name: host.stale for host in _fleet([aged["fresh"], aged["old"]], max_age=9 * DAY).hosts}
    assert stale == {"fresh": False, "infer-strict-01": False}


def test_merge_judges_age_against_the_clock_and_takes_max_age(run, made, tmp_path):
    import time

    path = _write(tmp_path, "two-days.json", dict(made["healthy"], created=_iso(time.time() - 2 * DAY)))
    assert run("merge", path, "--format", "json").json["hosts"][0]["stale"] is False  # default 7d
    for age, stale in (("36h", True), ("3d", False), ("90m", True), (str(3 * DAY), False), ("1w", False)):
        fleet = run("merge", path, "--format", "json", "--max-age", age).json
        assert fleet["hosts"][0]["stale"] is stale, age
    assert run("merge", path, "--format", "json", "--max-age", "36h").json["max_age_seconds"] == 36 * 3600


@pytest.mark.parametrize("age", ["7x", "0", "0s", "=-1d", "", "d", "7 days", "1e9", "٣d"])
def test_a_bad_max_age_is_one_line_and_exit_2(run, made, tmp_path, age):
    path = _write(tmp_path, "r.json", made["healthy"])
    argument = "--max-age" + age if age.startswith("=") else "--max-age=" + age
    result = run("merge", path, argument)
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("aidoctor: error: --max-age ") and result.err.count("\n") == 1
    assert "7d, 36h, 90m, or seconds" in result.err


def test_pass_skipped_and_not_run_are_different_marks_with_a_legend(run, made, tmp_path):
    from ai_doctor.reports import fleet as renderer

    critical = _write(tmp_path, "critical.json", made["critical"])
    healthy = dict(made["healthy"], checks=[dict(c, status="pass") for c in made["healthy"]["checks"]])
    # A host checked with --only (or by an aidoctor that lacks the rule) never ran it: not run.
    cpu_only = [c for c in healthy["checks"] if c["rule"].startswith("cpu.")]
    only = dict(healthy, host=dict(healthy["host"], hostname="only-cpu"), checks=cpu_only)
    skipped = dict(healthy, host=dict(healthy["host"], hostname="skipped"), checks=[dict(c, status="skip") for c in healthy["checks"]])
    paths = [critical, _write(tmp_path, "healthy.json", healthy), _write(tmp_path, "only.json", only)]
    paths.append(_write(tmp_path, "skip.json", skipped))
    rule = "overcommit.strict-headroom"

    fleet = run("merge", *paths, "--format", "json").json
    marks = {host["host"]: host["marks"][rule] for host in fleet["hosts"]}
    assert marks == {"infer-strict-01": "critical", "gpu-node-02": "pass", "only-cpu": "not-run", "skipped": "skip"}
    assert all(rule not in host["cells"] for host in fleet["hosts"] if host["host"] != "infer-strict-01")  # cells: findings only

    text = run("merge", *paths).out
    column = fleet["rules"].index(rule)
    matrix = text.split("\n\n")[1].splitlines()  # the hosts × rules block, before the legend
    cells = {line.split()[0]: line.split()[2 + column] for line in matrix if line.split()[0] in ("gpu-node-02", "only-cpu", "skipped")}
    assert cells == {"gpu-node-02": ".", "only-cpu": "_", "skipped": "-"}
    assert ". pass, - skipped, _ not run" in text

    markdown = run("merge", *paths, "--format", "markdown").out
    lines = markdown.splitlines()
    row = {name: next(line for line in lines if line.startswith("| [%s]" % name)) for name in ("gpu-node-02", "only-cpu", "skipped")}
    assert " pass |" in row["gpu-node-02"] and " not run |" in row["only-cpu"] and " skipped |" in row["skipped"]

    page = renderer.render_html(_fleet(paths))
    legend = page[page.index('<ul class="legend"') : page.index("</ul>")]
    for words in ("critical", "failed to run", "pass: the check ran and found nothing", "skipped:", "not run:", ">stale<", "time unknown<"):
        assert words in legend, words
    for mark, symbol in (("pass", "✓"), ("skip", "–"), ("not-run", "·")):
        assert re.search(r'<td class="%s" title="[^"]+">%s</td>' % (mark, symbol), page), mark


def test_every_format_shows_each_report_time_model_size_fail_on_and_version(run, made, tmp_path):
    healthy = dict(made["healthy"], tool={"name": "aidoctor", "version": "0.0.9"})
    paths = [_write(tmp_path, "critical.json", made["critical"]), _write(tmp_path, "healthy.json", healthy)]
    created = {made["critical"]["created"], made["healthy"]["created"]}
    assert made["critical"]["options"]["model_size"]["as_read"] == "40G" and made["healthy"]["options"]["model_size"] is None

    hosts = {host["host"]: host for host in run("merge", *paths, "--format", "json").json["hosts"]}
    assert (hosts["infer-strict-01"]["model_size"], hosts["infer-strict-01"]["fail_on"], hosts["infer-strict-01"]["aidoctor_version"]) == (
        "40G", "never", made["critical"]["tool"]["version"],
    )  # fmt: skip
    assert (hosts["gpu-node-02"]["model_size"], hosts["gpu-node-02"]["aidoctor_version"]) == (None, "0.0.9")
    assert {host["created"] for host in hosts.values()} == created

    text = run("merge", *paths).out
    row = next(line for line in text.splitlines() if line.startswith("gpu-node-02") and "0.0.9" in line)
    assert made["healthy"]["created"] in row and re.search(r"\bnone\s+never\s+0\.0\.9$", row)
    markdown = run("merge", *paths, "--format", "markdown").out
    assert re.search(r"\| %s \| [^|]+ \| none \| never \| 0\.0\.9 \|" % re.escape(made["healthy"]["created"]), markdown)
    page = run("merge", *paths, "--format", "html").out
    assert '<td class="about">40G</td><td class="about">never</td>' in page and '<td class="about">0.0.9</td>' in page
    for stamp in created:
        assert stamp in page


def test_merge_of_a_folder_reads_its_json_files(run, made, tmp_path):
    folder = tmp_path / "reports"
    (folder / "deeper").mkdir(parents=True)
    _write(folder, "b.json", made["critical"])
    _write(folder, "a.json", made["healthy"])
    _write(folder / "deeper", "c.json", dict(made["healthy"], host=dict(made["healthy"]["host"], hostname="deeper")))  # not recursive
    (folder / "notes.txt").write_text("not a report, not *.json")
    fleet = run("merge", str(folder), "--format", "json").json
    assert sorted(host["report"] for host in fleet["hosts"]) == [str(folder / "a.json"), str(folder / "b.json")]
    # A folder and a file of it: the same report twice.
    assert "given twice" in run("merge", str(folder), str(folder / "a.json")).err

    (folder / "z.json").write_text('{"hello": "world"}')
    result = run("merge", str(folder))
    assert result.code == 2 and result.err == "aidoctor: error: %s: not an aidoctor report (no schema field)\n" % (folder / "z.json")


def test_merge_of_a_folder_without_reports_is_an_error(run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "report.txt").write_text("{}")
    result = run("merge", str(empty))
    assert result.code == 2 and result.out == ""
    assert result.err == "aidoctor: error: %s: a folder without *.json reports\n" % empty


def test_merge_fail_on_gives_the_fleet_an_exit_code(run, made, tmp_path):
    critical = _write(tmp_path, "critical.json", made["critical"])
    healthy = _write(tmp_path, "healthy.json", made["healthy"])
    assert made["critical"]["summary"]["exit_code"] == 0  # the host's own run passed --fail-on never
    assert run("merge", critical, healthy).code == 0  # the default: never
    for threshold, code in (("critical", 1), ("high", 1), ("info", 1), ("never", 0)):
        assert run("merge", critical, healthy, "--fail-on", threshold).code == code, threshold
    assert run("merge", healthy, "--fail-on", "info").code == 0
    fleet = run("merge", critical, healthy, "--fail-on", "high", "--format", "json")
    assert fleet.code == 1 and fleet.json["fail_on"] == "high" and fleet.json["hosts_failing"] == 1
    assert "--fail-on high: 1 host at or above" in run("merge", critical, healthy, "--fail-on", "high").out
    bad = run("merge", critical, "--fail-on", "severe")
    assert bad.code == 2 and "--fail-on" in bad.err and "severe" in bad.err


def test_a_bad_report_time_is_refused_and_hostile_words_are_bounded(run, made, tmp_path):
    bad = _write(tmp_path, "bad-time.json", dict(made["healthy"], created="yesterday"))
    result = run("merge", bad)
    assert result.code == 2 and result.err.startswith("aidoctor: error: %s: created 'yesterday' is not a UTC time" % bad)
    for created in (12, "2026-02-31T00:00:00Z", "2026-12-03T05:22:54"):
        assert run("merge", _write(tmp_path, "t.json", dict(made["healthy"], created=created))).code == 2, created
    odd_size = dict(made["healthy"], options=dict(made["healthy"]["options"], model_size=[1]))
    assert run("merge", _write(tmp_path, "t.json", odd_size)).code == 2

    hostile = dict(made["healthy"], tool={"version": "<script>" + "9" * 500}, options=dict(made["healthy"]["options"], fail_on="\x1b[2Jx"))
    hostile["host"] = dict(hostile["host"], captured="<img src=x>")
    path = _write(tmp_path, "hostile.json", hostile)
    host = run("merge", path, "--format", "json").json["hosts"][0]
    assert len(host["aidoctor_version"]) <= 40 and host["time_unknown"] is True  # a snapshot time that is not one
    page = run("merge", path, "--format", "html").out
    assert "<script>" not in page and "<img" not in page and "&lt;script&gt;" in page
    assert "\x1b" not in run("merge", path).out and "\x1b" not in run("merge", path, "--format", "markdown").out


# -- the same file by another name, reads sized to the file, every matrix cell escaped (issue 17) --


def test_merge_refuses_one_file_by_another_name(run, made, tmp_path):
    path = _write(tmp_path, "report.json", made["healthy"])
    (tmp_path / "link.json").symlink_to("report.json")
    os.link(path, str(tmp_path / "hard.json"))
    (tmp_path / "sub").mkdir()
    for other in (str(tmp_path / "link.json"), str(tmp_path / "hard.json"), str(tmp_path / "sub" / ".." / "report.json")):
        result = run("merge", path, other)
        assert result.code == 2 and result.err == "aidoctor: error: %s: given twice\n" % other
    # Two files with the same text are two reports (a host's report copied under another name).
    copy = _write(tmp_path, "copy.json", made["healthy"])
    assert [host["label"] for host in run("merge", path, copy, "--format", "json").json["hosts"]] == [
        "gpu-node-02 (%s)" % copy, "gpu-node-02 (%s)" % path,
    ]  # fmt: skip


def test_a_report_is_read_to_its_end_and_refused_past_the_limit(run, made, tmp_path, monkeypatch):
    from ai_doctor import fleet as fleet_model

    path = _write(tmp_path, "report.json", made["healthy"])
    size = os.path.getsize(path)
    monkeypatch.setattr(fleet_model, "MAX_REPORT", size)
    assert run("merge", path).code == 0
    monkeypatch.setattr(fleet_model, "MAX_REPORT", size - 1)
    result = run("merge", path)
    assert result.code == 2 and "larger than 0 MiB, not an aidoctor report" in result.err

    # A pipe says size 0: read to its end all the same (and to the limit, not past it).
    import threading

    monkeypatch.setattr(fleet_model, "MAX_REPORT", 64 << 20)
    pipe = tmp_path / "pipe.json"
    os.mkfifo(str(pipe))
    writer = threading.Thread(target=lambda: pipe.write_text(json.dumps(made["critical"])))
    writer.start()
    try:
        fleet = run("merge", str(pipe), "--format", "json").json
    finally:
        writer.join()
    assert [host["host"] for host in fleet["hosts"]] == ["infer-strict-01"]


def test_every_matrix_cell_of_a_hostile_report_stays_text(run, made, tmp_path):
    from ai_doctor.reports import fleet as renderer

    hostile = json.loads(json.dumps(made["critical"]))
    finding = hostile["findings"][0]
    finding["rule"], finding["title"] = "<b>rule</b>", '<img src=x onerror=alert(1)> "quoted" & \x1b[2J'
    failed = hostile["checks"][-1]
    failed.update(rule='x"><script>alert(2)</script>', title="<script>alert(3)</script>", status="error", reason="<i>boom</i>")
    hostile["checks"].append(dict(finding, rule="<b>rule</b>", status="finding"))
    hostile["host"]["kernel"] = ["<b>6.1</b>"]  # not text at all: shown as what it is
    paths = [_write(tmp_path, "hostile.json", hostile), _write(tmp_path, "healthy.json", made["healthy"])]
    fleet = _fleet(paths)
    page = renderer.render_html(fleet)
    for needle in ("<b>", "<img", "<script>", "<i>", "\x1b"):
        assert needle not in page, needle
    title = "&lt;img src=x onerror=alert(1)&gt; &#34;quoted&#34; &amp; \\x1b[2J"
    column = fleet.rules.index("<b>rule</b>")
    rows = [row.split("</tr>")[0] for row in page.split("<tr") if '<td class="host">' in row]
    assert len(rows) == 2
    for row in rows:  # host, worst, report time, model size, --fail-on, aidoctor, then one cell per rule
        assert row.count("<td") == 6 + len(fleet.rules)
    cells = rows[0].split("<td")[7:]
    assert cells[column] == ' class="cell critical"><a href="#host-1-f1" title="critical: %s">C</a></td>' % title
    assert cells[fleet.rules.index('x"><script>alert(2)</script>')] == (
        ' class="cell unknown"><a href="#host-1" title="failed to run: &lt;script&gt;alert(3)&lt;/script&gt;">?</a></td>'
    )
    assert '<th class="rule" title="%s">&lt;b&gt;rule&lt;/b&gt;</th>' % title in page
    assert "&lt;i&gt;boom&lt;/i&gt;" in page and "kernel [&#39;&lt;b&gt;6.1&lt;/b&gt;&#39;]" in page
