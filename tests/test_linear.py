"""Parsers, rules, fixes and renderers stay linear in what a hostile tree holds.

Each input here is large enough that a quadratic (or backtracking) implementation takes
minutes, so the suite would visibly hang, while a linear one takes well under a second; no test
measures time. Where an old implementation is replaced, a property test pins the new one to
what the old one did on small inputs.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_doctor.facts import Facts, shellvars
from ai_doctor.facts.bootloader import _release_in, evaluate_grub_files, parse_grub_cfg, parse_grub_defaults
from ai_doctor.host import Host
from ai_doctor.remedy import actions as act
from ai_doctor.remedy.target import Target

from conftest import Tree, minimal_host

RELEASE = "6.8.0-49-generic"
OLDER = "6.8.0-45-generic"


def _image(tree, releases=(RELEASE, OLDER)):
    """An image with kernels ``releases`` and GRUB's tools, and no boot loader files yet."""
    tree.write("/etc/os-release", 'ID=ubuntu\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n')
    tree.write("/etc/hostname", "image\n")
    for release in releases:
        tree.write("/boot/vmlinuz-%s" % release, "")
        tree.write("/boot/config-%s" % release, "CONFIG_HUGETLBFS=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\n")
    tree.write("/usr/sbin/update-grub", "#!/bin/sh\n", 0o755)
    tree.write("/usr/lib/systemd/systemd-sysctl", "", 0o755)
    return tree


def _findings(result, rule):
    return [f for f in result.json["findings"] if f["rule"] == rule]


def _statuses_ran(result):
    """No check failed to run (an exception in a parser shows as an error)."""
    return {rule: status for rule, status in result.statuses().items() if status == "error"} == {}


# -- 1. grub.cfg -------------------------------------------------------------------------------


def test_a_menuentry_line_of_blanks_and_a_long_title_are_read_in_one_pass(tree, run):
    # `menuentry` and 80,000 blanks backtracked for 25 s in `\s+(.*?)\s*\{\s*$`; a title of a
    # mebibyte took shlex minutes (it builds a word a character at a time).
    _image(tree)
    title = "t" * (1 << 20)
    tree.write(
        "/boot/grub/grub.cfg",
        "menuentry" + " " * 2_000_000 + "\n"
        "set" + " " * 500_000 + "\n"
        'set default="1"\n'
        "menuentry 'Ubuntu' $menuentry_id_option 'gnulinux-simple' {\n"
        "\tlinux /boot/vmlinuz-%s root=/dev/sda1 ro quiet\n"
        "}\n"
        "menuentry '%s' --id 'long' {\n"
        "\tlinux /boot/vmlinuz-%s root=/dev/sda1 ro hugepages=8\n"
        "}\n" % (OLDER, title, RELEASE),
    )
    menu = parse_grub_cfg((tree.root / "boot/grub/grub.cfg").read_text(), "/boot/grub/grub.cfg")
    assert [(e.titles, e.ids, e.position, e.release) for e in menu.entries] == [
        (("Ubuntu",), ("gnulinux-simple",), (0,), OLDER),
        ((title,), ("long",), (1,), RELEASE),
    ]
    assert menu.default == "1"
    result = run("--root", tree, "--format", "json")
    assert result.json["host"]["kernel"] == RELEASE and _statuses_ran(result)


def test_submenus_nested_past_the_limit_are_not_followed(tree, run):
    # Each entry carries the titles above it: 50,000 nested submenus with an entry each would
    # be 10^9 titles.
    _image(tree)
    depth = 50_000
    text = "".join("submenu 's%d' {\nmenuentry 'e%d' {\n\tlinux /boot/vmlinuz-%s ro\n}\n" % (i, i, OLDER) for i in range(depth))
    text += "}\n" * depth + "menuentry 'top' {\n\tlinux /boot/vmlinuz-%s ro\n}\n" % RELEASE
    tree.write("/boot/grub/grub.cfg", 'set default="1"\n' + text)
    menu = parse_grub_cfg(text, "/boot/grub/grub.cfg")
    assert len(menu.entries) == 16 and max(len(e.titles) for e in menu.entries) == 16
    # Every "}" below the limit closes what it opened: the entry after them is the second at the top.
    assert menu.entries[-1].titles == ("top",) and menu.entries[-1].position == (1,)
    result = run("--root", tree, "--format", "json")
    assert result.json["host"]["kernel"] == RELEASE and _statuses_ran(result)


def test_a_long_default_is_looked_for_releases_once_per_release():
    releases = ["6.%d.0-1-generic" % i for i in range(40_000)]
    selector = "Advanced options>" + "x" * (4 << 20) + releases[-1]
    # Only the start of a default this long names an entry: no release in it.
    assert _release_in(selector, releases) is None
    assert _release_in("Ubuntu, with Linux " + releases[123], releases * 3) == releases[123]


def test_a_default_of_thousands_of_digits_is_no_position(tree, run):
    # int() refuses more than 4,300 digits: the default boot would have failed to run.
    _image(tree)
    tree.write("/etc/default/grub", 'GRUB_DEFAULT="1>%s"\nGRUB_CMDLINE_LINUX="quiet"\n' % ("7" * 5000))
    result = run("--root", tree, "--format", "json")
    assert result.json["host"]["kernel"] == RELEASE and _statuses_ran(result)


# -- 2. /etc/default/grub: the shell evaluator -----------------------------------------------------


def test_grub_defaults_with_a_mebibyte_of_blank_lines(tree, run):
    _image(tree)
    blank = "\n" * ((1 << 20) - 200)
    text = "GRUB_DEFAULT=0\n" + blank + 'GRUB_CMDLINE_LINUX="hugepages=16 quiet"\n'
    tree.write("/etc/default/grub", text)
    (args,) = parse_grub_defaults(text, "/etc/default/grub")
    assert args.line == len(blank) + 2 and args.names == {"hugepages", "quiet"}
    line = Facts(Host(str(tree))).get("cmdline")
    assert [p.text for p in line.params] == ["hugepages=16", "quiet"] and line.origin(0) == ("/etc/default/grub", args.line)
    assert _statuses_ran(run("--root", tree, "--format", "json"))


def test_shell_lines_that_made_the_quote_and_comment_regexes_rescan_are_read_in_one_pass():
    # `"\"\"\"…` (each " scanned to the end again) and ` # # #…` after a quote left open over
    # lines (each # scanned to the next newline again) were quadratic.
    escaped = 'A="' + '\\"' * 400_000 + '\n"\nB=1\n'  # the quote goes on over a line
    found = list(shellvars.assignments(escaped))
    assert found[0][:2] == (1, "A") and found[-1] == (3, "B", "1", None)
    marks = 'A="\n' + " #" * 400_000 + '\n"\nB=2\n'
    found = list(shellvars.assignments(marks))
    assert found[0][:2] == (1, "A") and found[-1] == (4, "B", "2", None)
    assert shellvars.shell_commands('x "' + '\\"' * 400_000) == [("start", ["x", '"' + '\\"' * 400_000])]


def test_a_value_doubled_line_after_line_stops_at_the_limit():
    text = "A=x\n" + 'A="$A$A"\n' * 64 + 'GRUB_CMDLINE_LINUX="$A"\n'
    settings, _history = evaluate_grub_files([("/etc/default/grub", text)])
    assert settings["GRUB_CMDLINE_LINUX"].problem == "$A, which could not be evaluated"
    env = {"A": "x"}
    with pytest.raises(shellvars.NotEvaluable, match="a value longer than %d characters" % shellvars.MAX_VALUE):
        for _line in range(64):
            env["A"] = shellvars.evaluate('"$A$A"', env)
    assert len(env["A"]) <= shellvars.MAX_VALUE


def test_each_word_of_a_long_appended_line_is_credited_in_one_pass(tree, run):
    # Each word was credited by scanning every earlier line back: words × lines.
    _image(tree)
    words, lines = 8000, 24_000
    text = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="%s"\n' % " ".join(["p"] * words)
    text += 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX"\n' * lines + 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX w"\n'
    tree.write("/etc/default/grub", text)
    line = Facts(Host(str(tree))).get("cmdline")
    assert len(line.params) == words + 1
    assert line.origin(0) == ("/etc/default/grub", 2) and line.origin(words) == ("/etc/default/grub", lines + 3)
    assert _statuses_ran(run("--root", tree, "--format", "json"))


_SHELL_PIECES = list("ab=# \t'\"\\\n$`{}:+-;|&()") + ["\u00a0", "\u2028", "export ", "if ", "fi"]
_SHELL = st.lists(st.sampled_from(_SHELL_PIECES), max_size=24).map("".join)


@settings(max_examples=400, deadline=None)
@given(line=_SHELL)
def test_quotes_and_comments_are_set_aside_as_the_regexes_did(line):
    # The substitutions the scanner replaced: (a) quoted text made '', (b) a comment dropped.
    code = re.sub(r"'[^']*'|\"(?:\\.|[^\"\\])*\"", "''", line)
    assert shellvars._without_quotes(line) == code
    assert shellvars._without_comment(code) == re.sub(r"(^|\s)#.*$", "", code)


# -- 3. and 4. sysctl files and the fix for their duplicates ------------------------------------


def test_an_eight_megabyte_sysctl_file_is_read_and_judged_in_one_pass(run, tmp_path):
    tree = minimal_host(Tree(tmp_path / "root"))
    keys = 200_000
    big = "".join("net.test.k%d = 1\n" % i for i in range(keys)) + "vm.swappiness = 1\n" * 50_000
    tree.write("/etc/sysctl.d/70-big.conf", big)
    tree.write("/etc/sysctl.d/80-more.conf", "net.test.k7 = 2\nnet.test.k8 = 2\n")
    result = run("--root", tree.root, "--format", "json", "--model-size", "1G")
    assert _statuses_ran(result)
    conflicts = _findings(result, "persist.sysctl-conflict")
    assert sorted(f["message"].split()[0] for f in conflicts) == ["net.test.k7", "net.test.k8"]
    (duplicates,) = _findings(result, "persist.sysctl-conf-duplicates")
    # The message and evidence name a few lines; the fix takes every one.
    assert "vm.swappiness 50000 times (lines %d, %d," % (keys + 1, keys + 2) in duplicates["message"]
    assert "… 49988 more …, %d; line %d wins" % (keys + 50_000, keys + 50_000) in duplicates["message"]
    assert len(duplicates["message"]) < 1000 and len(duplicates["evidence"]) == 12
    (action,) = duplicates["remediation"][0]["actions"]
    assert action["kind"] == "comment-lines" and len(action["lines"]) == 49_999


def _sh_file(tmp_path, commands):
    """Run ``commands`` as sh does a script (no argument holds them, whatever their size)."""
    script = tmp_path / "fix.sh"
    script.write_text("set -eu\n" + "\n".join(commands) + "\n")
    subprocess.run(["sh", str(script)], check=True)


def test_a_hundred_thousand_duplicates_are_commented_out_by_one_runnable_command(run, tmp_path):
    # One sed per 100 lines rewrote the file 1,000 times (minutes), and a package's file was
    # copied through one pipeline of 1,000 seds on a line of megabytes.
    tree = minimal_host(Tree(tmp_path / "root"))
    count = 100_000
    text = "".join("vm.swappiness = %d\n" % (i % 100) for i in range(count))
    tree.write("/etc/sysctl.d/70-dup.conf", text)
    (found,) = _findings(run("--root", tree.root, "--format", "json"), "persist.sysctl-conf-duplicates")
    (step,) = found["remediation"]
    (command,) = step["commands"]
    # Every line of it short; one sed pass checks the lines, one comments them out, each
    # reading its script from a here-document.
    assert max(len(line) for line in command.split("\n")) < 200 and command.count("sed ") == 2
    assert len(command) < 2000  # lines 1 to 99,999: one range
    copy = tmp_path / "70-dup.conf"
    copy.write_text(text)
    _sh_file(tmp_path, [command.replace("sudo ", "").replace("/etc/sysctl.d/70-dup.conf", str(copy))])
    wanted = "".join("# " + line + "\n" for line in text.splitlines()[:-1]) + "vm.swappiness = 99\n"
    assert copy.read_text() == wanted
    # --apply makes the same change.
    lines = tuple(tuple(pair) for pair in step["actions"][0]["lines"])
    act.CommentLines("/etc/sysctl.d/70-dup.conf", lines).apply(Target(str(tree.root)))
    assert (tree.root / "etc/sysctl.d/70-dup.conf").read_text() == wanted


def test_the_proof_clears_thousands_of_duplicates(tree, run):
    # The tree fixture applies the fix with --apply and checks the finding is gone at the next boot.
    minimal_host(tree)
    tree.write("/etc/sysctl.d/70-dup.conf", "".join("vm.swappiness = %d\n" % (i % 10) for i in range(20_000)))
    (found,) = _findings(run("--root", tree, "--format", "json"), "persist.sysctl-conf-duplicates")
    assert len(found["remediation"][0]["commands"]) == 1


_LINE = st.text(alphabet=st.sampled_from(list("ab09 =._-/\\*[]^$&|@%,:!#'\"\t") + ["é", "\r", "\ufffd", "\x1b"]), max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(_LINE, min_size=150, max_size=400), data=st.data())
def test_commenting_many_lines_out_is_the_same_in_sed_and_python(tmp_path_factory, lines, data):
    tmp_path = tmp_path_factory.mktemp("many")
    lines = [line + "x" * 300 if index % 37 == 5 else line for index, line in enumerate(lines)]  # known by a prefix
    chosen = data.draw(st.sets(st.integers(1, len(lines)), min_size=act._SED_CHUNK + 1, max_size=len(lines)))
    picked = tuple((n, lines[n - 1]) for n in sorted(chosen) if not lines[n - 1].startswith("#"))
    if len(picked) <= act._SED_CHUNK:
        return

    def tree_and_copy(rows):
        # U+FFFD stands for a byte that is not UTF-8, as the Host reads one.
        raw = ("\n".join(rows) + "\n").replace("\ufffd", "\udcff").encode("utf-8", "surrogateescape")
        root = tmp_path / ("root%d" % len(list(tmp_path.iterdir())))
        (root / "etc").mkdir(parents=True)
        (root / "etc/x.conf").write_bytes(raw)
        copy = root / "shell.conf"
        copy.write_bytes(raw)
        return root, copy

    root, copy = tree_and_copy(lines)
    for _run in range(2):  # the second run changes nothing, in either
        _sh_file(tmp_path, ["export LC_ALL=C", act.CommentLines(str(copy), picked).sh(act.PLAIN)[0]])
        act.CommentLines("/etc/x.conf", picked).apply(Target(str(root)))
        assert (root / "etc/x.conf").read_bytes() == copy.read_bytes()
    # A line known by all its text that changed since the check: neither edits the file.
    whole = [n for n, text in picked if act._guard(text)[1] == act.WHOLE]
    if whole:
        changed = list(lines)
        changed[whole[-1] - 1] += "Z"
        root, copy = tree_and_copy(changed)
        before = copy.read_bytes()
        _sh_file(tmp_path, ["export LC_ALL=C", act.CommentLines(str(copy), picked).sh(act.PLAIN)[0]])
        assert copy.read_bytes() == before
        with pytest.raises(act.NotApplicable):
            act.CommentLines("/etc/x.conf", picked).apply(Target(str(root)))


def test_lines_with_bytes_that_are_not_utf8_keep_their_own_guard_in_bounded_passes(tmp_path):
    # Their text is not known whole, so each keeps a regular expression, which costs sed tens of
    # kilobytes: at most _SED_GUARDED of them to a pass.
    count = 1200
    raw = b"".join(b"vm.x = %d\xff\n" % i for i in range(count))
    lines = tuple((n, "vm.x = %d\ufffd" % (n - 1)) for n in range(1, count + 1))
    copy = tmp_path / "x.conf"
    copy.write_bytes(raw)
    (command,) = act.CommentLines(str(copy), lines).sh(act.PLAIN)
    assert command.count("sed -i") == 3
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/x.conf").write_bytes(raw)
    for _run in range(2):
        _sh_file(tmp_path, ["export LC_ALL=C", command])
        act.CommentLines("/etc/x.conf", lines).apply(Target(str(root)))
        assert copy.read_bytes() == (root / "etc/x.conf").read_bytes() == b"".join(b"# " + line + b"\n" for line in raw.splitlines())


def test_a_package_file_with_many_duplicates_is_copied_to_etc_in_one_pass(tmp_path):
    count = 50_000
    text = "".join("vm.swappiness = %d\n" % (i % 7) for i in range(count))
    lines = tuple((n, "vm.swappiness = %d" % ((n - 1) % 7)) for n in range(1, count))
    source = tmp_path / "usr-50-dup.conf"
    source.write_text(text)
    copy = tmp_path / "etc-50-dup.conf"
    (command,) = act.OverrideCopy(str(source), str(copy), lines).sh(act.PLAIN)
    assert max(len(line) for line in command.split("\n")) < 1000
    wanted = act.comment_out(text, lines, str(source))
    _sh_file(tmp_path, [command])
    assert copy.read_text() == wanted
    _sh_file(tmp_path, [command])  # the copy is there now: edited in place, nothing changes
    assert copy.read_text() == wanted


# -- 5. the terminal report ---------------------------------------------------------------------


def test_a_long_message_is_wrapped_in_one_pass_with_colour_and_without(run, tmp_path, monkeypatch):
    # rich sliced the whole message once per wrapped line.
    tree = minimal_host(Tree(tmp_path / "root"))
    words = " ".join("w%d" % i for i in range(300_000))
    tree.write("/etc/sysctl.d/10-a.conf", "kernel.test = %s end\n" % words)
    tree.write("/etc/sysctl.d/20-b.conf", "kernel.test = 2\n")
    plain = run("--root", tree.root, "--model-size", "1G").out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    coloured = run("--root", tree.root, "--model-size", "1G").out
    assert "\x1b[" in coloured
    for out, width in ((plain, 100), (coloured, 120)):
        text = re.sub("\x1b\\[[0-9;]*m", "", out)
        assert "w299999 end at /etc/sysctl.d/10-a.conf:1" in " ".join(text.split())
        message = [line for line in text.splitlines() if re.match(r"    \S", line)]
        assert len(message) > 1000 and max(len(line) for line in message) <= width


def test_a_here_document_copies_whole_from_the_terminal_report(run, tmp_path):
    tree = minimal_host(Tree(tmp_path / "root"))
    text = "".join("vm.swappiness = %d\n" % (i % 3) for i in range(5000))
    tree.write("/etc/sysctl.d/70-dup.conf", text)
    out = run("--root", tree.root, "--model-size", "1G").out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "AIDOCTOR_CHECK" in line)
    end = next(i for i, line in enumerate(lines) if line == "esac")
    # Only the first line is indented: the end markers start their lines, as sh needs.
    assert lines[start].startswith("         case ") and {"AIDOCTOR_CHECK", "AIDOCTOR_SED"} <= set(lines[start:end])
    copy = tmp_path / "copy.conf"
    copy.write_text(text)
    command = "\n".join([lines[start].strip()] + lines[start + 1 : end + 1])
    _sh_file(tmp_path, [command.replace("sudo ", "").replace("/etc/sysctl.d/70-dup.conf", str(copy))])
    assert copy.read_text().count("# vm.swappiness") == 4999


# -- 6. and 7. the GRUB edits, rc.local and the drift fixes ---------------------------------------


def test_grub_edits_read_long_blank_runs_and_continued_lines_in_one_pass():
    # `[ \t]+(name)=` was tried from every blank of a run; each continued line made a chain
    # through all the lines after it.
    row = 'GRUB_CMDLINE_LINUX="quiet' + " " * 2_000_000 + 'hugepages=4 splash"'
    assert act.grub_cut(row + "\n", ["hugepages"]) == 'GRUB_CMDLINE_LINUX="quiet splash"\n'
    continued = "GRUB_CMDLINE_LINUX=\\\n" * 200_000 + "x\n"
    assert not act.grub_lines_needing_hand(continued, ["hugepages"])
    assert act.grub_lines_needing_hand(continued + 'GRUB_CMDLINE_LINUX="a\\`b hugepages=2"\n', ["hugepages"])


def test_rc_local_with_thousands_of_exits_and_tuning_lines(run, tmp_path):
    # Each later exit was checked against every lost line, and each command against every tuning line.
    tree = minimal_host(Tree(tmp_path / "root"))
    pairs = 20_000
    body = "#!/bin/sh\nexit 0\n" + "echo 1 > /proc/sys/vm/swappiness\nexit 0\n" * pairs
    tree.write("/etc/rc.local", body, 0o755)
    result = run("--root", tree.root, "--format", "json", "--model-size", "1G")
    (found,) = _findings(result, "persist.rc-local-ineffective")
    assert "holds %d tuning lines that never run" % pairs in found["message"]
    comments = [a for step in found["remediation"] for a in step["actions"] if a["kind"] == "comment-lines"]
    # The tuning lines that boot never runs, and (letting it run) the later exits.
    assert sorted(len(a["lines"]) for a in comments) == [pairs - 1, pairs]
    assert all(len(step["commands"]) <= 4 for step in found["remediation"])


def test_a_fix_per_drifted_key_finds_its_lines_through_an_index(run, tmp_path):
    # Every drifted key's fix looked through every configured line.
    tree = minimal_host(Tree(tmp_path / "root"))
    keys = 2000
    globs = "".join("net.pad%d.* = 0\n" % i for i in range(150_000))  # lines no finding names
    tree.write("/etc/sysctl.d/60-vm.conf", "".join("vm.test_%d = 1\n" % i for i in range(keys)) + globs)
    for i in range(keys):
        tree.write("/proc/sys/vm/test_%d" % i, "2\n")
    result = run("--root", tree.root, "--format", "json", "--model-size", "1G")
    drift = [f for f in _findings(result, "persist.sysctl-drift") if f["message"].startswith("vm.test_")]
    assert len(drift) == keys
    keep = drift[-1]["remediation"][0]
    assert any(a["kind"] == "comment-lines" and a["lines"] == [[keys, "vm.test_%d = 1" % (keys - 1)]] for a in keep["actions"])


def test_a_modules_dep_line_naming_the_module_a_million_times_is_read_once():
    from ai_doctor.facts.modules import parse_modules_dep

    line = "updates/dkms/nvidia.ko: " + "nvidia " * 1_000_000
    text = "kernel/a.ko:\n" + line + "\nupdates/dkms/nvidia_uvm.ko: nvidia.ko\n"
    found = parse_modules_dep(text, ["nvidia", "nvidia_uvm"])
    assert found == {"nvidia": "updates/dkms/nvidia.ko", "nvidia_uvm": "updates/dkms/nvidia_uvm.ko"}


def test_the_html_report_keeps_a_here_document_on_its_lines(run, tmp_path):
    import html

    from conftest import Tree

    tree = minimal_host(Tree(tmp_path / "root"))
    tree.write("/etc/sysctl.conf", "vm.swappiness = 10\n" * 500)
    out = tmp_path / "r.html"
    run("--root", tree.root, "--html", out, "--model-size", "1G")
    page = html.unescape(out.read_text())
    assert "\nAIDOCTOR_SED\n" in page and "\\x0a" not in page
