"""The command line as a user meets it: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest

from ai_doctor import __version__

from conftest import cli_command, fixture_root, in_process_only, minimal_host

GUIDE = fixture_root("guide-followed-literally")
SHELL_CLI = " ".join(shlex.quote(word) for word in cli_command())
STRICT = fixture_root("strict-overcommit")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model-size", "lots"], "--model-size 'lots' is not a size"),
        (["--model-size", "70B"], "--params 70B"),
        (["--model-size", "0"], "at least one byte"),
        (["--params", "70Q"], "--params '70Q' is not a parameter count"),
        (["--params", "70B", "--model-size", "1G"], "not both"),
        (["--dtype", "fp16"], "--dtype goes with --params"),
        (["--dtype", "fp7", "--params", "7B"], "invalid choice: 'fp7'"),
        (["--format", "xml"], "invalid choice: 'xml'"),
        (["--fail-on", "severe"], "invalid choice: 'severe'"),
        (["--only", "cpu.turbo"], "unknown rule or area: 'cpu.turbo'"),
        (["--only", ""], "unknown rule or area: ''"),
        (["--skip", "fpga"], "unknown rule or area: 'fpga'"),
        (["--root", "/nonexistent/tree"], "--root /nonexistent/tree: not a directory"),
        (["--hugepages", "-3"], "is negative"),
        (["--hugepages", "many"], "not a whole number"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["explain"], "usage: aidoctor explain RULE"),
        (["explain", "memory.nope"], "unknown rule id or area 'memory.nope'"),
        (["--output", "/nonexistent/dir/report.json"], "--output /nonexistent/dir/report.json:"),
        (["--output", "/"], "--output /: is a directory"),
        (["--root", "/proc"], "--root /proc: not a host tree"),
        (["--only", "cpu", "--skip", "cpu"], "select no rules"),
        (["--hugepages", "99999999999999999999999"], "more huge pages than any machine holds"),
        (["--model-size", "9" * 5000], "is larger than any machine's memory"),
        (["--params", "9" * 5000 + "B"], "more parameters than any model has"),
        (["--model-size", "140Q"], "unknown unit 'Q'"),
        (["--model-size", "-5G"], "--model-size '-5G' is not a size"),
        (["--model-size", "8G", "--model-size", "80G"], "--model-size given more than once"),
        (["--format", "json", "--format", "text"], "--format given more than once"),
        (["-o", "/tmp/a.json", "--output", "/tmp/b.json"], "-o given more than once"),
        (["--hugepages", "+5"], "not a whole number"),
        (["--hugepages", "1_000"], "not a whole number"),
        (["--hugepages", "\u0663"], "not a whole number"),  # ARABIC-INDIC DIGIT THREE
        (["--output", "/proc/version"], "a kernel interface file"),
        (["--list-rules", "--only", "fpga"], "unknown rule or area: 'fpga'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, args, words):
    result = run(*args)
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aidoctor: error: ") and words in lines[0], result.err


def test_empty_root_is_not_a_host(run, tmp_path):
    result = run("--root", tmp_path, "--fail-on", "high")
    assert result.code == 2 and "not a host tree" in result.err


def test_broken_manifest_in_root_is_exit_2(run, tree):
    tree.write("/.aidoctor/manifest.json", "{")
    result = run("--root", tree)
    assert result.code == 2 and "unreadable manifest" in result.err


def test_exit_codes_follow_fail_on(run):
    assert run("--root", GUIDE, "--model-size", "140G").code == 0  # medium and low findings only
    assert run("--root", GUIDE, "--model-size", "140G", "--fail-on", "medium").code == 1
    assert run("--root", STRICT, "--model-size", "40G").code == 1
    assert run("--root", STRICT, "--model-size", "40G", "--fail-on", "never").code == 0
    assert run("--root", STRICT, "--model-size", "40G", "--fail-on", "critical").code == 1


@in_process_only
def test_strict_turns_a_rule_error_into_exit_3(run, tree, monkeypatch):
    from ai_doctor import engine

    minimal_host(tree)
    rule = engine.load_rules()["thp.disabled"]

    def broken(f):
        raise RuntimeError("simulated")

    monkeypatch.setitem(engine.REGISTRY, "thp.disabled", rule._replace(check=broken))
    relaxed = run("--root", tree)
    assert relaxed.code == 0 and "thp.disabled: RuntimeError: simulated" in relaxed.out
    assert "1 rule(s) failed internally: thp.disabled" in relaxed.err
    assert run("--root", tree, "--strict").code == 3


def test_json_report_shape(run):
    result = run("--root", STRICT, "--model-size", "40G", "--format", "json")
    report = result.json
    assert report["schema"] == "aidoctor.report/1"
    assert report["tool"] == {"name": "aidoctor", "version": __version__}
    assert report["host"]["hostname"] == "infer-strict-01" and report["host"]["kernel"].startswith("5.14.0")
    assert report["options"]["model_size"]["bytes"] == 40 << 30 and report["options"]["model_size"]["as_read"] == "40G"
    assert report["summary"]["findings"]["critical"] == 1 and report["summary"]["exit_code"] == 1
    finding = report["findings"][0]
    assert set(finding) == {"rank", "rule", "severity", "title", "message", "evidence", "remediation"}
    assert finding["rank"] == 1
    assert {"path": "/etc/sysctl.d/90-overcommit.conf", "value": "vm.overcommit_memory = 2", "line": 2} not in finding["evidence"]
    assert finding["evidence"][0] == {"path": "/proc/sys/vm/overcommit_memory", "value": "vm.overcommit_memory = 2"}
    step = finding["remediation"][0]
    assert set(step) == {"summary", "commands", "needs_root", "persistent", "on_host", "actions"}
    assert {c["status"] for c in report["checks"]} <= {"pass", "finding", "skip", "error"}
    assert (
        len(report["checks"])
        == report["summary"]["checks"]["pass"]
        + report["summary"]["checks"]["finding"]
        + report["summary"]["checks"]["skip"]
        + report["summary"]["checks"]["error"]
    )


def test_params_and_dtype_are_read_back(run):
    result = run("--root", STRICT, "--params", "70B", "--dtype", "int8", "--format", "json")
    assert result.json["options"]["model_size"] == {
        "bytes": 70 * 10**9,
        "as_read": "70B",
        "from": "--params",
        "dtype": "int8",
        "params": 70 * 10**9,
    }
    text = run("--root", STRICT, "--params", "70B").out
    assert "Model: 70B params × 2 bytes (bf16) = 130.4 GiB = 140.0 GB" in text


def test_text_header_says_how_the_size_was_read(run):
    out = run("--root", STRICT, "--model-size", "140G").out
    assert "Model: 140G = 140.0 GiB = 150.3 GB" in out
    assert out.splitlines()[0].startswith("aidoctor %s · infer-strict-01" % __version__)


def test_verbose_shows_evidence_and_skip_reasons(run):
    quiet = run("--root", fixture_root("vps-no-hugetlb"), "--model-size", "12G").out
    loud = run("--root", fixture_root("vps-no-hugetlb"), "--model-size", "12G", "-v").out
    assert "Evidence:" not in quiet and "(-v shows why)" in quiet
    assert "Evidence:" in loud and "[-] storage.scheduler: no NVMe namespaces on this host" in loud


def test_only_and_skip(run):
    only = run("--root", GUIDE, "--model-size", "140G", "--only", "cpu", "--format", "json").json
    assert [c["rule"] for c in only["checks"]] == ["cpu.governor", "cpu.fixed-frequency"]
    skipped = run("--root", GUIDE, "--model-size", "140G", "--skip", "cpu.governor", "--skip", "hugepages", "--format", "json").json
    assert {"cpu.governor", "hugepages.unused"}.isdisjoint(c["rule"] for c in skipped["checks"])


def test_list_rules_follows_only_and_skip(run):
    listing = run("--list-rules", "--only", "cpu", "--skip", "cpu.fixed-frequency")
    assert [line.split()[0] for line in listing.out.splitlines()] == ["cpu.governor"]


def test_list_rules_and_explain(run):
    listing = run("--list-rules")
    assert listing.code == 0
    assert listing.out.splitlines()[0].split()[:2] == ["hugepages.unsupported", "info"]
    assert len(listing.out.splitlines()) >= 14
    explained = run("explain", "overcommit.ratio-ignored")
    assert explained.code == 0 and "mode 1 never refuses" in explained.out and "vm.rst" in explained.out


def test_version(run):
    for words in (["--version"], ["check", "--version"]):
        done = run(*words)
        assert done.code == 0 and done.out == "aidoctor %s\n" % __version__
    # Among other options argparse answers it, as before.
    done = run("--model-size", "8G", "--version")
    assert done.code == 0 and done.out.strip() == "aidoctor %s" % __version__


def test_output_file_is_written_whole(run, tmp_path):
    target = tmp_path / "report.json"
    result = run("--root", GUIDE, "--model-size", "140G", "--format", "json", "--output", target)
    assert result.out == "" and json.loads(target.read_text())["schema"] == "aidoctor.report/1"
    # Nothing beside it (the cache folder is the test's XDG_CACHE_HOME).
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["report.json"]


def test_check_subcommand_is_the_default(run):
    first, second = run("check", "--root", GUIDE, "--format", "json").json, run("--root", GUIDE, "--format", "json").json
    assert first.pop("created") and second.pop("created") and first == second


def console(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(cli_command() + args, capture_output=True, text=True, env=env, timeout=60)


def test_module_entry_point_and_plain_pipe():
    done = console(["--root", GUIDE, "--model-size", "140G"], {"NO_COLOR": "1"})
    assert done.returncode == 0 and "\x1b" not in done.stdout and "hugepages.unused" in done.stdout


def test_colour_on_a_terminal_and_none_with_no_color():
    pty = pytest.importorskip("pty")
    for env, coloured in (({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)):
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            cli_command() + ["--root", GUIDE, "--model-size", "140G"],
            stdout=follower,
            stderr=subprocess.PIPE,
            env=dict(os.environ, COLUMNS="100", **env),
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=60)
        os.close(leader)
        out = b"".join(chunks).decode()
        assert ("\x1b[" in out) is coloured
        assert "cpu.governor" in out
        # A command is never broken across lines, even on a 100-column terminal.
        assert "echo performance | sudo tee /sys/devices/system/cpu/cpufreq/policy*/scaling_governor >/dev/null" in out


def test_ascii_terminal_gets_ascii_marks():
    done = console(["--root", GUIDE, "--model-size", "140G"], {"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and "[!] medium" in done.stdout and "->" in done.stdout


@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
def test_standard_output_that_cannot_be_written_is_one_line_exit_2(redirect):
    if redirect == ">/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    shell = subprocess.run(
        "%s --root %s --model-size 140G %s" % (SHELL_CLI, GUIDE, redirect),
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 2
    lines = shell.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aidoctor: error: standard output"), shell.stderr


def test_broken_pipe_is_quiet():
    shell = subprocess.run(
        "%s --root %s --model-size 140G -v | head -1" % (SHELL_CLI, GUIDE),
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.stderr == ""


def test_hostile_host_text_is_not_markup_nor_terminal_escapes(run, tree):
    minimal_host(tree)
    tree.write("/proc/sys/kernel/hostname", "[bold red]pwn[/] :smile: \x1b[31mred\x1b]0;title\x07\u202egnp\n")
    tree.write("/etc/sysctl.d/50-x.conf", "vm.overcommit_ratio = 9\x1b[2J\n")
    out = run("--root", tree, "-v").out
    assert "[bold red]pwn[/] :smile: \\x1b[31mred\\x1b]0;title\\x07\\u202egnp" in out
    assert "vm.overcommit_ratio = 9\\x1b[2J" in out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out


def test_explain_help_and_rule_list_as_json(run):
    assert run("explain", "--help").out.startswith("usage: aidoctor explain RULE")
    listing = json.loads(run("--list-rules", "--format", "json").out)
    assert listing[0] == {
        "rule": "hugepages.unsupported",
        "severity": "info",
        "title": "Kernel without huge page support",
        "summary": "The kernel has no hugetlb support, so no static huge page pool can exist.",
    }


def test_numbers_stay_with_their_units_when_wrapped():
    from ai_doctor.reports.text import _pieces

    text = "aaaa bbbb 64.0 GiB and uid 1000 too"
    for width in range(24, 40):
        lines = [text[start:end] for start, end in _pieces(text, width, 0, 0)]
        assert " ".join(lines) == text
        assert not any(line.endswith(("64.0", "uid")) for line in lines), (width, lines)


def test_output_never_follows_a_link_planted_beside_the_target(run, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    # The name an older aidoctor used for its temporary file, and any other guess.
    (shared / ".r.txt.aidoctor-tmp").symlink_to(victim)
    assert run("--root", GUIDE, "--model-size", "140G", "-o", str(shared / "r.txt")).code == 0
    assert victim.read_text() == "precious\n"
    assert (shared / "r.txt").is_file() and not (shared / "r.txt").is_symlink()
    assert "aidoctor" in (shared / "r.txt").read_text()


def test_output_to_dev_stdout_writes_through_a_pipe():
    done = console(["--root", GUIDE, "--model-size", "140G", "--format", "json", "-o", "/dev/stdout"])
    assert done.returncode == 0 and json.loads(done.stdout)["schema"]


def test_output_through_a_link_writes_its_target_and_keeps_its_mode(run, tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    os.chmod(real, 0o640)
    (tmp_path / "link.txt").symlink_to("real.txt")
    assert run("--root", GUIDE, "--model-size", "140G", "-o", str(tmp_path / "link.txt")).code == 0
    assert (tmp_path / "link.txt").is_symlink()
    assert "aidoctor" in real.read_text() and real.stat().st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob(".*aidoctor-tmp"))


def test_output_refuses_another_users_link_in_a_shared_folder(run, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to plant a link owned by another user")
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    victim = tmp_path / "victim.conf"
    victim.write_text("SECRET\n")
    (shared / "report.txt").symlink_to(victim)
    os.lchown(shared / "report.txt", 65534, 65534)
    result = run("--root", GUIDE, "--model-size", "140G", "-o", str(shared / "report.txt"))
    assert result.code == 2 and "a link another user left in a shared folder" in result.err
    assert victim.read_text() == "SECRET\n"


def test_output_keeps_hard_links_and_refuses_odd_paths(run, tmp_path):
    first = tmp_path / "h1"
    first.write_text("old\n")
    os.link(first, tmp_path / "h2")
    assert run("--root", GUIDE, "--model-size", "140G", "-o", str(first)).code == 0
    assert "aidoctor" in (tmp_path / "h2").read_text()
    assert "names a directory" in run("--root", GUIDE, "-o", str(tmp_path / "zz") + "/").err
    assert not (tmp_path / "zz").exists()
    assert "the path is empty" in run("--root", GUIDE, "-o", "").err


def test_a_hard_link_or_standard_output_under_another_name_is_one_file(run, tmp_path):
    first = tmp_path / "hl1"
    first.write_text("")
    os.link(first, tmp_path / "hl2")
    result = run("--root", GUIDE, "-o", str(first), "--junit", str(tmp_path / "hl2"))
    assert result.code == 2 and "--output and --junit both write" in result.err
    shell = subprocess.run(
        "%s --root %s --format json --html /dev/stdout > %s" % (SHELL_CLI, GUIDE, tmp_path / "mix.out"),
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 2 and "--output and --html both write" in shell.stderr


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["--model-szie", "140G"], "did you mean --model-size for --model-szie?"),
        (["chek"], "did you mean check for chek?"),
        (["fix", "--chose", "x=1"], "did you mean --choose for --chose?"),
    ],
)
def test_a_misspelt_option_or_subcommand_names_what_was_meant(run, argv, hint):
    result = run(*argv)
    assert result.code == 2 and hint in result.err and result.err.count("\n") == 1


def test_check_help_names_check_and_the_usage_names_the_subcommands(run):
    for argv, usage in ((["check", "--help"], "usage: aidoctor check [options]"), (["--help"], "usage: aidoctor [options]")):
        done = run(*argv)
        out = done.out
        assert done.code == 0 and out.startswith(usage) and "aidoctor {fix,explain,snapshot,merge,bench,completion}" in out


def test_explain_an_area_lists_its_rules_and_a_misspelt_id_is_named(run):
    listed = run("explain", "limits")
    ids = [line.split()[0] for line in listed.out.splitlines()[:3]]
    assert listed.code == 0 and ids == ["limits.nofile", "limits.memlock", "limits.pids"]
    wrong = run("explain", "gpu.fabric-manger")
    assert wrong.code == 2 and "did you mean gpu.fabric-manager?" in wrong.err


def test_a_tree_an_archive_and_a_fixture_folder_given_to_the_wrong_option_say_which_to_use(run, tmp_path):
    archive = tmp_path / "host.tar.gz"
    archive.write_bytes(b"")
    assert "analyse it with --snapshot %s" % archive in run("--root", archive).err
    assert "analyse a tree with --root %s" % GUIDE in run("--snapshot", GUIDE).err
    fixture = str(GUIDE)[: -len("/root")]
    assert "--root %s/root" % fixture in run("--root", fixture).err
    refused = run("--root", "/", "--image")
    assert refused.code == 2 and "that is this running host" in refused.err


def test_the_report_ends_with_its_findings_in_rank_order_and_quiet_keeps_only_that(run):
    full = run("--root", GUIDE, "--model-size", "140G")
    ranked = [f["rule"] for f in run("--root", GUIDE, "--model-size", "140G", "--format", "json").json["findings"]]
    closing = full.out.split("Findings, most important first:\n", 1)[1].splitlines()
    listed = [line.split()[2] for line in closing if line[:4].strip().rstrip(".").isdigit()]
    assert listed == ranked and closing[-1].startswith("Result: ")
    quiet = run("--root", GUIDE, "--model-size", "140G", "-q")
    assert quiet.code == full.code and "Fix:" not in quiet.out and "checks passed" not in quiet.out
    assert quiet.out.splitlines()[0] == full.out.splitlines()[0] and quiet.out.endswith(full.out[full.out.index("Findings, most") :])


@pytest.mark.parametrize(
    "argv, environment, coloured",
    [
        (["--color", "always"], {}, True),
        (["--color", "never"], {"FORCE_COLOR": "1"}, False),
        ([], {"FORCE_COLOR": "1"}, True),
        ([], {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),
        ([], {}, False),  # piped
    ],
)
def test_colour_is_chosen_by_the_option_then_no_color_then_force_color(run, monkeypatch, argv, environment, coloured):
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result = run("--root", GUIDE, "--model-size", "140G", "-q", *argv)
    assert ("\x1b[" in result.out) is coloured


def test_a_wrapped_title_stays_under_its_rule_id():
    from ai_doctor.checkup import checkup
    from ai_doctor.host import Host
    from ai_doctor.model import Request
    from ai_doctor.reports import text

    report = checkup(Host(str(GUIDE)), Request(model_size=140 << 30, described="140G"), None, "high")
    lines = text.render(report, width=50).splitlines()
    headers = [number for number, line in enumerate(lines) if line.startswith("[") and "checks passed" not in line]
    wrapped = [lines[number + 1] for number in headers if not lines[number + 1].startswith("    ") or lines[number + 1][4] == " "]
    assert wrapped and all(line.startswith(" " * 13) and line[13] != " " for line in wrapped)
