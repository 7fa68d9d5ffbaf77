"""The rule registry and runner: discovery, contracts, errors, ranking."""

from __future__ import annotations

import re

import pytest

from ai_doctor import engine
from ai_doctor.facts import PROVIDERS, Facts
from ai_doctor.host import Host
from ai_doctor.model import Finding, Issue, Pass, Severity, Skip, Status

CATALOGUE = {
    "hugepages.unsupported",
    "hugepages.shortfall",
    "hugepages.unused",
    "thp.disabled",
    "overcommit.strict-headroom",
    "overcommit.heuristic-oversize",
    "overcommit.ratio-ignored",
    "memory.headroom",
    "cpu.governor",
    "cpu.fixed-frequency",
    "storage.scheduler",
    "kernel.config-missing",
    "access.permission-denied",
    "access.readonly-sysctl",
}


def test_the_starting_catalogue_is_registered():
    assert CATALOGUE <= set(engine.load_rules())


@pytest.mark.parametrize("rule_id", sorted(CATALOGUE))
def test_every_rule_is_documented(rule_id):
    rule = engine.load_rules()[rule_id]
    assert re.fullmatch(r"[a-z]+\.[a-z0-9-]+", rule.id)
    assert rule.title and rule.summary and len(rule.docs) > 200
    assert "\n\n" in rule.docs  # a summary paragraph, then why and how
    if rule.area not in ("access",):
        assert "Documentation/" in rule.docs or "Reference:" in rule.docs


def test_rules_declare_only_known_facts():
    for rule in engine.load_rules().values():
        for name in rule.needs + rule.uses:
            assert name in PROVIDERS or name == "request", (rule.id, name)


def test_select_by_id_and_area_and_unknown():
    ids = [r.id for r in engine.select(only=["hugepages", "thp.disabled"])]
    assert ids == ["hugepages.unsupported", "hugepages.shortfall", "hugepages.unused", "thp.disabled"]
    assert "cpu.governor" not in [r.id for r in engine.select(skip=["cpu"])]
    with pytest.raises(LookupError) as error:
        engine.select(only=["cpu.nope"])
    assert "cpu.nope" in str(error.value)


def test_bad_declarations_are_refused():
    with pytest.raises(engine.RuleDefinitionError):
        engine.rule("NoDot", "t", Severity.LOW)(lambda f: None)
    with pytest.raises(engine.RuleDefinitionError):
        engine.rule("hugepages.shortfall", "dup", Severity.LOW)(lambda f: None)

    def undocumented(f):
        return None

    with pytest.raises(engine.RuleDefinitionError):
        engine.rule("test.undocumented", "t", Severity.LOW)(undocumented)


def make_rule(rule_id, check, severity=Severity.MEDIUM, needs=(), uses=(), review=False):
    check.__doc__ = "A test rule.\n\nIt exists for the engine tests."
    return engine.Rule(rule_id, rule_id, severity, needs, uses, review, check, __name__, 900)


def test_a_raising_rule_is_an_error_and_the_run_goes_on(tree):
    def boom(f):
        raise ZeroDivisionError("bad arithmetic")

    def fine(f):
        return Issue("found it")

    results, findings = engine.run(Facts(Host(str(tree))), [make_rule("t.boom", boom), make_rule("t.fine", fine)])
    assert results[0].status is Status.ERROR and results[0].reason.startswith("ZeroDivisionError: bad arithmetic at test_engine.py:")
    assert results[1].status is Status.FINDING and findings[0].message == "found it"


def test_undeclared_facts_are_an_error(tree):
    def sneaky(f):
        return f.meminfo

    results, _ = engine.run(Facts(Host(str(tree))), [make_rule("t.sneaky", sneaky)])
    assert results[0].status is Status.ERROR and "without declaring" in results[0].reason


def test_missing_required_facts_skip_with_the_reason(tree):
    results, _ = engine.run(Facts(Host(str(tree))), [make_rule("t.needs", lambda f: None, needs=("meminfo",))])
    assert results[0].status is Status.SKIP and "/proc/meminfo" in results[0].reason


def test_outcomes_normalise(tree):
    rules = [
        make_rule("t.none", lambda f: None),
        make_rule("t.pass", lambda f: Pass("all good")),
        make_rule("t.skip", lambda f: Skip("nothing to see")),
        make_rule("t.empty", lambda f: []),
        make_rule("t.wrong", lambda f: ["not an issue"]),
    ]
    results, _ = engine.run(Facts(Host(str(tree))), rules)
    assert [(r.status, r.reason) for r in results[:4]] == [
        (Status.PASS, ""),
        (Status.PASS, "all good"),
        (Status.SKIP, "nothing to see"),
        (Status.PASS, ""),
    ]
    assert results[4].status is Status.ERROR


def test_ranking_is_severity_then_impact_then_catalogue(tree):
    rules = [
        make_rule("t.a", lambda f: [Issue("a-low", severity=Severity.LOW), Issue("a-high-small", severity=Severity.HIGH, impact=1)]),
        make_rule("t.b", lambda f: Issue("b-high-big", severity=Severity.HIGH, impact=100)),
        make_rule("t.c", lambda f: Issue("c-high-small", severity=Severity.HIGH, impact=1)),
        make_rule("t.d", lambda f: Issue("d-critical")),
    ]
    rules = [r._replace(order=i) for i, r in enumerate(rules)]
    rules[3] = rules[3]._replace(severity=Severity.CRITICAL)
    _, findings = engine.run(Facts(Host(str(tree))), rules)
    assert [f.message for f in findings] == ["d-critical", "b-high-big", "a-high-small", "c-high-small", "a-low"]
    assert all(isinstance(f, Finding) for f in findings)


def test_review_rules_see_findings_and_refused_reads(tree):
    tree.write("/proc/meminfo", "MemTotal: 1 kB\n")
    tree.manifest(outcomes={"/proc/meminfo": "denied"})
    seen = {}

    def reviewer(f):
        seen["findings"] = [x.rule for x in f.findings]
        seen["audit"] = {a.rule: [g.path for g in a.failed_reads] for a in f.audit}

    rules = [
        make_rule("t.reader", lambda f: Issue("x"), needs=("meminfo",)),
        make_rule("t.review", reviewer, review=True),
    ]
    engine.run(Facts(Host(str(tree))), rules)
    assert seen == {"findings": [], "audit": {"t.reader": ["/proc/meminfo"]}}


def test_two_runs_rank_identically():
    host_a, host_b = Host("/"), Host("/")
    a = engine.run(Facts(host_a), engine.select())[1]
    b = engine.run(Facts(host_b), engine.select())[1]
    assert [(f.rule, f.message) for f in a] == [(f.rule, f.message) for f in b]


def test_rule_packs_register_through_entry_points(tmp_path, monkeypatch):
    """A third-party distribution naming a module in the ai_doctor.rules group is loaded."""
    from ai_doctor import catalogue

    (tmp_path / "aidoctor_pack_example.py").write_text(
        "from ai_doctor.engine import rule\n"
        "from ai_doctor.model import Severity, Pass\n"
        "@rule('pack.example', 'An example pack rule', Severity.LOW)\n"
        "def example(f):\n"
        "    '''A rule from a pack.\n\n    It passes.'''\n"
        "    return Pass('from the pack')\n"
    )
    info = tmp_path / "aidoctor_pack_example-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aidoctor-pack-example\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ai_doctor.rules]\nexample = aidoctor_pack_example\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(engine, "REGISTRY", dict(engine.load_rules()))
    monkeypatch.setattr(engine, "_loaded", False)
    monkeypatch.setattr(catalogue, "_packs", None)
    monkeypatch.delitem(__import__("sys").modules, "aidoctor_pack_example", raising=False)
    # the built-in modules are already imported, so only the pack registers anew
    rules = engine.load_rules()
    assert rules["pack.example"].title == "An example pack rule"
    assert [r.id for r in engine.select(only=["pack"])] == ["pack.example"]
    # Listed after every built-in rule, and ordered there in reports.
    assert [r.id for r in catalogue.listed()][-1] == "pack.example"
    assert rules["pack.example"].order > max(r.order for r in rules.values() if r.id != "pack.example")


def test_evidence_is_capped_and_deduplicated(tree, run):
    from conftest import minimal_host

    minimal_host(tree, overcommit="1")
    tree.write("/etc/sysctl.d/50-guide.conf", "vm.overcommit_ratio = 95\n" * 500)
    found = next(f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "overcommit.ratio-ignored")
    assert len(found["evidence"]) == 41 and found["evidence"][-1]["value"].endswith("more not shown")


@pytest.mark.unprovable("a sysctl file larger than aidoctor reads, which a fix refuses to edit")
def test_a_file_read_only_in_part_is_said_in_the_verdict(tree, run):
    from conftest import minimal_host

    minimal_host(tree, overcommit="1")
    padding = "# " + "x" * 1022 + "\n"
    tree.write("/etc/sysctl.d/50-tuning.conf", "vm.overcommit_ratio = 80\n" + padding * (9 << 10) + "vm.overcommit_memory = 2\n")
    report = run("--root", tree, "--format", "json", "-v").json
    found = next(f for f in report["findings"] if f["rule"] == "overcommit.ratio-ignored")
    assert found["message"].endswith("(Files read only in part: /etc/sysctl.d/50-tuning.conf (the first 8 MiB).)")
    passed = next(c for c in report["checks"] if c["rule"] == "hugepages.shortfall")
    assert "judged on files read only in part" in passed["reason"]


def test_one_value_in_many_numbered_folders_is_one_row_with_the_numbers():
    from ai_doctor.model import Evidence

    path = "/sys/devices/system/cpu/cpufreq/policy%d/scaling_governor"
    items = [Evidence(path % n, "powersave") for n in (0, 1, 2, 3, 8, 10, 11)] + [Evidence(path % 4, "ondemand")]
    items += [Evidence(path % 5, "ondemand"), Evidence("/etc/sysctl.conf", "vm.x = 1", 3)]
    rows = engine._evidence(items)
    assert rows == (
        Evidence("/sys/devices/system/cpu/cpufreq/policy{0-3,8,10-11}/scaling_governor", "powersave"),
        Evidence(path % 4, "ondemand"),  # two rows stay rows
        Evidence(path % 5, "ondemand"),
        Evidence("/etc/sysctl.conf", "vm.x = 1", 3),
    )


def test_the_entry_point_scan_is_remembered_until_the_folder_changes(tmp_path, monkeypatch):
    from ai_doctor import catalogue

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AIDOCTOR_NO_CACHE", raising=False)
    site = tmp_path / "site"
    (site / "numpy-2.0.dist-info").mkdir(parents=True)
    (site / "numpy-2.0.dist-info" / "entry_points.txt").write_text("[console_scripts]\nf2py = numpy.f2py:main\n")
    marker = "[%s]" % catalogue.ENTRY_POINT_GROUP
    assert catalogue._mentions(str(site), marker) is False
    remembered = list((tmp_path / "cache").rglob("entry-points-*"))
    assert len(remembered) == 1 and remembered[0].read_text() == "no"
    # Installing a rule pack adds its folder: the scan runs again and finds it.
    (site / "pack-1.0.dist-info").mkdir()
    (site / "pack-1.0.dist-info" / "entry_points.txt").write_text(marker + "\nexample = pack\n")
    assert catalogue._mentions(str(site), marker) is True
    # A zip file or a missing folder on sys.path holds no distributions to scan.
    (tmp_path / "python.zip").write_bytes(b"PK")
    assert catalogue._mentions(str(tmp_path / "python.zip"), marker) is False
    assert catalogue._mentions(str(tmp_path / "absent"), marker) is False


def test_the_catalogue_lists_every_built_in_rule_as_it_registers():
    # rules/_catalogue.py is written by tools/generate_share.py; a rule added or retitled
    # without running it would be missing from --list-rules and from runs.
    from ai_doctor import catalogue

    registered = sorted((r for r in engine.load_rules().values() if r.module.startswith("ai_doctor.rules.")), key=lambda r: r.order)
    assert catalogue.built_in() == tuple(catalogue.Listed(r.id, r.title, r.severity.value, r.summary, r.module) for r in registered), (
        "rules/_catalogue.py is stale: run tools/generate_share.py"
    )
    assert [r.order for r in registered] == list(range(len(registered)))
