"""`aidoctor fix`: the script as sh runs it, the plan as JSON, and --apply on a tree with its
result, refusals and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from ai_doctor.shell import posix_words, quote

from conftest import fixture_root


def _copy(tmp_path, name: str):
    root = tmp_path / name
    shutil.copytree(fixture_root(name), root, symlinks=True)
    return root


def test_the_script_is_sh_that_stops_at_a_failure_and_runs_only_as_root(run):
    script = run("fix", "--root", fixture_root("strict-overcommit"), "--model-size", "40G").out
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh" and "set -eu" in lines
    assert 'if [ "$(id -u)" -ne 0 ]; then echo "aidoctor fix: run this as root (sudo sh $0)" >&2; exit 1; fi' in lines
    assert "sysctl -w vm.overcommit_ratio=76" in lines and not any(line.startswith("sudo ") for line in lines)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, text=True, check=True)


def test_the_plan_as_json_names_each_way_its_commands_and_actions(run):
    plan = run("fix", "--root", fixture_root("strict-overcommit"), "--model-size", "40G", "--format", "json").json
    assert plan["schema"] == "aidoctor.fix/1"
    (item,) = [i for i in plan["plan"] if i["rule"] == "overcommit.strict-headroom"]
    assert (item["way"], item["ways"], item["changes"]) == (1, 2, True)
    step = item["steps"][0]
    assert step["commands"] == ["sysctl -w vm.overcommit_ratio=76"]
    assert step["actions"] == [{"kind": "sysctl", "phase": "now", "settings": [["vm.overcommit_ratio", "76"]]}]


def test_host_text_bash_would_quote_is_spelled_for_sh_and_nothing_is_skipped(tmp_path, run):
    root = _copy(tmp_path, "strict-overcommit")
    os.rename(root / "etc/sysctl.d/90-overcommit.conf", os.fsencode(root / "etc/sysctl.d") + b"/90-\xff.conf")
    script = run("fix", "--root", root, "--model-size", "40G").out
    assert "$'" not in script and "not run" not in script
    assert "host_text_1=$(printf '%bX' '/etc/sysctl.d/90-\\0377.conf'); host_text_1=${host_text_1%X}" in script.splitlines()
    assert any(line.startswith("sed -i --follow-symlinks") and line.endswith(' "$host_text_1"') for line in script.splitlines())
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)


_WORD = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00") | st.sampled_from(["\udcff", "\udc80"]), max_size=12
)


@settings(max_examples=80, deadline=None)
@given(words=st.lists(_WORD, min_size=1, max_size=4))
def test_words_bash_quotes_reach_a_program_byte_for_byte_through_sh(words):
    line = "printf '%s\\0' " + " ".join(quote(word) for word in words)
    assignments, posix = posix_words(line, "w")
    done = subprocess.run(["sh", "-c", "\n".join(assignments + [posix])], capture_output=True, check=True)
    assert done.stdout == b"".join(word.encode("utf-8", "surrogateescape") + b"\0" for word in words)


def test_apply_to_a_tree_changes_it_keeps_backups_and_checks_it_again(tmp_path, run):
    root = _copy(tmp_path, "strict-overcommit")
    done = run("fix", "--root", root, "--model-size", "40G", "--apply", "--yes")
    assert done.code == 0, done.out + done.err
    assert "wrote /etc/sysctl.d/90-aidoctor-overcommit.conf" in done.out
    assert "cleared at the next boot: overcommit.strict-headroom" in done.out
    (folder,) = (root / ".aidoctor/backup").iterdir()
    record = json.loads((folder / "changes.json").read_text())
    assert "/etc/sysctl.d/90-aidoctor-overcommit.conf" in record["created"]
    assert (folder / "etc/sysctl.d/90-overcommit.conf").read_text() == (
        (tmp_path / "original.conf").write_text(open(fixture_root("strict-overcommit") + "/etc/sysctl.d/90-overcommit.conf").read())
        and (tmp_path / "original.conf").read_text()
    )
    again = run("fix", "--root", root, "--model-size", "40G", "--apply", "--yes", "--format", "json")
    assert again.code == 0 and again.json["backups"] is None  # nothing left to change


def test_apply_refuses_a_root_that_is_this_host_and_a_snapshot_archive(tmp_path, run):
    os.symlink("/", tmp_path / "slash")
    refused = run("fix", "--root", tmp_path / "slash", "--apply", "--yes")
    assert refused.code == 2 and "is this host's own root" in refused.err and len(refused.err.splitlines()) == 1
    archive = tmp_path / "snap.tar.gz"
    assert run("snapshot", "--root", fixture_root("strict-overcommit"), "-o", archive).code == 0
    refused = run("fix", "--snapshot", archive, "--apply", "--yes")
    assert refused.code == 2 and "unpack it and give --root DIR" in refused.err


def test_apply_on_this_host_refuses_without_root_and_without_a_terminal(run, monkeypatch):
    # Nothing is changed: both refusals come before the first action (test_nonroot runs the
    # first for a real user).
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    refused = run("fix", "--apply")
    assert refused.code == 2 and refused.err == "aidoctor: error: fix --apply changes this host and needs root: sudo aidoctor fix --apply\n"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    refused = run("fix", "--apply")
    assert refused.code == 2 and "pass --yes" in refused.err


def test_a_grub_line_a_cut_could_break_is_left_to_an_edit_by_hand(tmp_path, run):
    root = _copy(tmp_path, "unused-static-pool")
    grub = root / "etc/default/grub"
    hostile = 'GRUB_CMDLINE_LINUX="default_hugepagesz=1G hugepagesz=1G hugepages=32\\"; touch /tmp/aidoctor-mark; #"\n'
    grub.write_text(grub.read_text().replace('GRUB_CMDLINE_LINUX="default_hugepagesz=1G hugepagesz=1G hugepages=32"\n', hostile))
    script = run("fix", "--root", root, "--model-size", "70G").out
    assert "/etc/default/grub" not in "".join(line for line in script.splitlines() if line.startswith("sed"))
    assert "#   by hand: ${EDITOR:-vi} /etc/default/grub" in script
    assert "by hand in /etc/default/grub, whose line has shell quoting or a command a cut could break" in script.replace("\n# ", " ")
    done = run("fix", "--root", root, "--model-size", "70G", "--apply", "--yes")
    assert "skipped: ${EDITOR:-vi} /etc/default/grub (by hand)" in done.out and hostile in grub.read_text()


def test_the_result_is_reported_when_the_check_afterwards_fails(tmp_path, run, monkeypatch):
    from ai_doctor import fixcmd

    def broken(*args):
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(fixcmd, "_recheck", broken)
    root = _copy(tmp_path, "strict-overcommit")
    done = run("fix", "--root", root, "--model-size", "40G", "--apply", "--yes")
    assert done.code == 1
    assert "wrote /etc/sysctl.d/90-aidoctor-overcommit.conf" in done.out and "Not checked again" in done.out


def test_a_dead_rc_local_setting_that_is_not_plain_is_never_moved_where_boot_applies_it(tmp_path, run):
    root = _copy(tmp_path, "guide-followed-literally")
    (root / "proc/1").mkdir(parents=True, exist_ok=True)
    (root / "proc/1/comm").write_text("dumb-init\n")  # nothing applies sysctl files: the command line would carry it
    rc = "#!/bin/sh -e\nexit 0\nsysctl -w 'vm.swappiness=1\"|/tmp/payload\"'\nsysctl -w kernel.core_pattern='|/tmp/x'\n"
    (root / "etc/rc.local").write_text(rc)
    script = run("fix", "--root", root, "--model-size", "140G").out
    assert "payload" not in "".join(line for line in script.splitlines() if not line.startswith("#") and "sed -i" not in line)
    assert "core_pattern" not in "".join(line for line in script.splitlines() if "tee" in line)
    assert "not moved" in script


def test_a_file_to_edit_by_hand_in_an_image_is_named_where_its_links_lead_inside_it(tmp_path, run):
    # The editor runs outside the chroot, where an absolute link would open this machine's file.
    root = _copy(tmp_path, "image-rhel-traps")
    grub = root / "etc/default/grub"
    real = root / "etc/default/grub.real"
    real.write_text(grub.read_text().replace('GRUB_CMDLINE_LINUX="', 'GRUB_CMDLINE_LINUX="a\\\\b transparent_hugepage=never '))
    grub.unlink()
    os.symlink("/etc/default/grub.real", grub)
    script = run("fix", "--root", root, "--image", "--model-size", "70G").out
    assert "#   by hand: ${EDITOR:-vi} %s" % real in script.splitlines()


def test_what_runs_now_but_nothing_keeps_is_said_to_come_at_the_next_boot(tree, run):
    from conftest import MEMINFO_64G, minimal_host

    pool = MEMINFO_64G.replace("HugePages_Total:       0", "HugePages_Total:      64").replace(
        "HugePages_Free:        0", "HugePages_Free:       64"
    )
    minimal_host(tree, pool)
    tree.write("/proc/sys/vm/nr_hugepages", "64\n")  # set by hand: no file keeps it
    tree.write("/run/systemd/system/.keep", "")
    done = run("fix", "--root", tree, "--hugepages", "64", "--apply", "--yes", "--format", "json")
    recheck = done.json["recheck"]
    assert recheck["new"] == recheck["new_at_next_boot"] == [] and recheck["coming_at_next_boot"] == ["hugepages.shortfall"]


def test_choose_for_a_rule_without_a_finding_is_a_note_and_for_no_rule_an_error(tmp_path, run):
    root = _copy(tmp_path, "strict-overcommit")
    done = run("fix", "--root", root, "--model-size", "40G", "--choose", "hugepages.unused=2")
    assert done.code == 0 and "note: --choose hugepages.unused: no finding of that rule here" in done.err
    refused = run("fix", "--root", root, "--model-size", "40G", "--choose", "hugepages.unsued=2")
    assert refused.code == 2 and "no such rule" in refused.err
    refused = run("fix", "--root", root, "--model-size", "40G", "--choose", "overcommit.strict-headroom=3")
    assert refused.code == 2 and "offers 2 ways here" in refused.err


def test_a_grub_value_continued_on_the_next_line_is_left_to_an_edit_by_hand(tmp_path, run):
    root = _copy(tmp_path, "unused-static-pool")
    (root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX="quiet \\\ndefault_hugepagesz=1G hugepagesz=1G hugepages=32"\n')
    script = run("fix", "--root", root, "--model-size", "70G", "--only", "hugepages.unused").out
    assert "#   by hand: ${EDITOR:-vi} /etc/default/grub" in script
    assert not any(line.startswith("sed") and "GRUB_CMDLINE" in line for line in script.splitlines())


def test_apply_refuses_this_hosts_root_mounted_elsewhere(tmp_path, run):
    where = tmp_path / "bound"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", "/", str(where)], capture_output=True).returncode != 0:
        import pytest

        pytest.skip("needs root and bind mounts")
    try:
        refused = run("fix", "--root", where, "--apply", "--yes")
    finally:
        subprocess.run(["umount", str(where)], check=True)
    assert refused.code == 2 and "is this host's own root" in refused.err


def test_fixes_that_comment_out_one_line_comment_it_out_once(tmp_path, run):
    # hugepages.unused, overcommit.ratio-ignored and persist.sysctl-conf-duplicates all comment
    # out lines of the guide's twice-appended block: each line gets one "# ", by --apply and by
    # the printed script run twice over a copy.
    root = _copy(tmp_path, "guide-followed-literally")
    args = json.loads(open(fixture_root("guide-followed-literally") + "/../expect.json").read())["args"]
    script = run("fix", "--root", root, *args).out
    done = run("fix", "--root", root, *args, "--apply", "--yes")
    assert done.code in (0, 1), done.out + done.err
    text = (root / "etc/sysctl.conf").read_text()
    assert "# vm.nr_hugepages = 128" in text and "# #" not in text
    copy = tmp_path / "sysctl.conf"
    copy.write_text(open(fixture_root("guide-followed-literally") + "/etc/sysctl.conf").read())
    edits = [
        line.replace("/etc/sysctl.conf", str(copy))
        for line in script.splitlines()
        if line.startswith("sed -i") and "/etc/sysctl.conf" in line
    ]
    assert len(edits) >= 2
    for _ in range(2):
        for line in edits:
            subprocess.run(["sh", "-c", line], check=True)
    assert "# #" not in copy.read_text() and "# vm.nr_hugepages = 128" in copy.read_text()


def test_a_plan_for_a_running_system_stops_on_any_other_machine(tmp_path, run):
    # A script from another host's snapshot, or copied across a fleet, changes nothing here.
    root = _copy(tmp_path, "strict-overcommit")
    (root / "proc/sys/kernel/hostname").write_text("gpu-node-other\n")
    script = run("fix", "--root", root, "--model-size", "40G").out
    checked = script.replace('if [ "$(id -u)" -ne 0 ]', "if false", 1)
    assert "# For gpu-node-other only: it stops on any other machine." in script.splitlines()
    stopped = subprocess.run(["sh", "-c", checked], capture_output=True, text=True)
    assert stopped.returncode == 1 and stopped.stderr == "aidoctor fix: this plan is for gpu-node-other, not %s\n" % os.uname().nodename
    # Made for this machine, it passes that check (and fails at the first change: a tree's
    # paths are not this machine's to change in a test).
    (root / "proc/sys/kernel/hostname").write_text(os.uname().nodename + "\n")
    mine = run("fix", "--root", root, "--model-size", "40G").out.replace('if [ "$(id -u)" -ne 0 ]', "if false", 1)
    lines = mine.splitlines()
    guard = [line for line in lines if line.startswith('if [ "$(uname -n)" != ')]
    assert len(guard) == 1
    done = subprocess.run(["sh", "-c", "\n".join(lines[: lines.index(guard[0]) + 1] + ["echo past"])], capture_output=True, text=True)
    assert done.stdout == "past\n" and done.returncode == 0
    # An image has no host name to check: its folder is checked instead.
    image = run("fix", "--root", fixture_root("image-rhel-traps")).out
    assert "uname -n" not in image and "is not the folder of an image" in image
