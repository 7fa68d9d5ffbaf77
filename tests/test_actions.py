"""Actions: the shell a step prints and the Python that --apply runs make the same change, a
second run changes nothing, and a tree can never make a write land outside it."""

from __future__ import annotations

import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_doctor.remedy import actions as act
from ai_doctor.remedy.target import ApplyError, Target

# Lines of host text: printable ASCII and a few characters sed and the shell treat specially.
_LINE = st.text(alphabet=st.sampled_from(list("abz09 =._-/\\*[]^$&|@%,:!#'\"\t") + ["é", "\r"]), max_size=30)


def _sh(action, path):
    for command in action.sh(act.PLAIN):
        subprocess.run(["sh", "-c", command], check=True)
    with open(path, "rb") as stream:
        return stream.read().decode("utf-8", "surrogateescape")


def _tree_file(tmp_path, relative, text):
    root = tmp_path / "root"
    target = root / relative.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(text.encode("utf-8", "surrogateescape"))
    return root, target


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_LINE, min_size=1, max_size=6), data=st.data())
def test_commenting_lines_out_is_the_same_in_sed_and_python_and_idempotent(tmp_path_factory, lines, data):
    tmp_path = tmp_path_factory.mktemp("comment")
    text = "\n".join(lines) + "\n"
    chosen = data.draw(st.sets(st.integers(1, len(lines)), min_size=1))
    root, real = _tree_file(tmp_path, "/etc/x.conf", text)
    shell_copy = tmp_path / "shell.conf"
    shell_copy.write_bytes(text.encode("utf-8", "surrogateescape"))
    picked = tuple((n, lines[n - 1]) for n in sorted(chosen))
    by_sed = _sh(act.CommentLines(str(shell_copy), picked), shell_copy)
    target = Target(str(root))
    act.CommentLines("/etc/x.conf", picked).apply(target)
    by_python = real.read_bytes().decode("utf-8", "surrogateescape")
    assert by_python == by_sed
    # Run again: both leave the file as it is.
    assert _sh(act.CommentLines(str(shell_copy), picked), shell_copy) == by_sed
    act.CommentLines("/etc/x.conf", picked).apply(Target(str(root)))
    assert real.read_bytes().decode("utf-8", "surrogateescape") == by_python


def test_a_line_that_changed_since_the_check_is_not_commented_out(tmp_path):
    root, real = _tree_file(tmp_path, "/etc/x.conf", "vm.nr_hugepages = 64\n")
    with pytest.raises(act.NotApplicable, match="no longer reads"):
        act.CommentLines("/etc/x.conf", ((1, "vm.nr_hugepages = 128"),)).apply(Target(str(root)))
    assert real.read_text() == "vm.nr_hugepages = 64\n"


_GRUB = st.lists(
    st.one_of(
        st.builds(
            lambda name, words: '%s="%s"' % (name, " ".join(words)),
            st.sampled_from(["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT", " export GRUB_CMDLINE_LINUX", "GRUB_TIMEOUT"]),
            st.lists(
                st.sampled_from(
                    [
                        "quiet",
                        "hugepages=16",
                        "hugepagesz=2M",
                        "xhugepages=1",
                        "$GRUB_CMDLINE_LINUX",
                        "a=b",
                        "\t",
                        "\u2003",
                        '\\"',
                        "`x`",
                        "$(x)",
                        "${X:+$X }",
                    ]
                ),
                max_size=5,
            ),
        ),
        st.just("# hugepages=3 in a comment"),
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=_GRUB)
def test_cutting_grub_parameters_is_the_same_in_sed_and_python(tmp_path_factory, lines):
    tmp_path = tmp_path_factory.mktemp("grub")
    text = "\n".join(lines) + "\n"
    copy = tmp_path / "grub"
    copy.write_text(text)
    names = ("hugepages", "hugepagesz")
    assert _sh(act.CutGrubParams(str(copy), names), copy) == act.grub_cut(text, names)


def test_a_grub_line_a_cut_could_turn_into_a_command_is_left_for_an_edit_by_hand(tmp_path):
    # Cutting `hugepages=32\` would leave the escaped quote a closing one: what follows would run.
    text = 'GRUB_CMDLINE_LINUX="hugepages=32\\"; touch /tmp/x; #"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet hugepages=8"\n'
    copy = tmp_path / "grub"
    copy.write_text(text)
    expected = 'GRUB_CMDLINE_LINUX="hugepages=32\\"; touch /tmp/x; #"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
    assert act.grub_cut(text, ("hugepages",)) == expected
    assert _sh(act.CutGrubParams(str(copy), ("hugepages",)), copy) == expected
    assert act.grub_lines_needing_hand(text, ("hugepages",))
    assert not act.grub_lines_needing_hand(expected.split("\n", 1)[1], ("hugepages",))


@pytest.mark.parametrize(
    "text",
    ['GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="quiet splash"\n', 'GRUB_CMDLINE_LINUX=""\n', 'GRUB_CMDLINE_LINUX="a"\nGRUB_TIMEOUT=5\n'],
)
def test_appending_to_grub_cmdline_linux_is_the_same_in_sed_and_python(tmp_path, text):
    copy = tmp_path / "grub"
    copy.write_text(text)
    add = ("hugepagesz=1G", "hugepages=4")
    assert act.appendable_grub_line(text)
    assert _sh(act.AppendGrubParams(str(copy), add), copy) == act.grub_append(text, add)


@pytest.mark.parametrize("text", ['GRUB_CMDLINE_LINUX="$X quiet"\n', 'GRUB_CMDLINE_LINUX="a"\nGRUB_CMDLINE_LINUX="b"\n', "GRUB_X=1\n"])
def test_grub_lines_that_need_a_shell_are_not_extended(text):
    assert not act.appendable_grub_line(text)


def test_carriage_returns_and_the_interpreter_line_match_sed(tmp_path):
    text = "echo 1\r\nexit 0\r\n"
    root, real = _tree_file(tmp_path, "/etc/rc.local", text)
    copy = tmp_path / "rc"
    copy.write_text(text)
    for action in (act.StripCarriageReturns, act.AddInterpreter, act.AddInterpreter):
        _sh(action(str(copy)), copy)
        action("/etc/rc.local").apply(Target(str(root)))
    assert real.read_text() == copy.read_text() == "#!/bin/sh\necho 1\nexit 0\n"


def test_a_write_through_a_link_in_the_tree_stays_inside_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(outside), root / "etc" / "sysctl.d")  # absolute: re-rooted, as chroot would
    (root / str(outside).lstrip("/")).mkdir(parents=True)
    target = Target(str(root))
    act.WriteFile("/etc/sysctl.d/90-x.conf", ("vm.x = 1",)).apply(target)
    assert not (outside / "90-x.conf").exists()
    assert (root / str(outside).lstrip("/") / "90-x.conf").read_text() == "vm.x = 1\n"


def test_a_tree_whose_backup_folder_is_a_link_gets_no_backup_through_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root, real = _tree_file(tmp_path, "/etc/x.conf", "a = 1\n")
    (root / ".aidoctor").mkdir()
    os.symlink(str(outside), root / ".aidoctor" / "backup")
    with pytest.raises(ApplyError, match="not a folder"):
        act.CommentLines("/etc/x.conf", ((1, "a = 1"),)).apply(Target(str(root)))
    assert list(outside.iterdir()) == [] and real.read_text() == "a = 1\n"


def test_a_fifo_or_a_kernel_file_is_never_written(tmp_path):
    root, _ = _tree_file(tmp_path, "/etc/keep", "")
    os.mkfifo(root / "etc" / "fifo.conf")
    target = Target(str(root))
    with pytest.raises(act.NotApplicable, match="not a regular file"):
        act.WriteFile("/etc/fifo.conf", ("x",)).apply(target)
    with pytest.raises(act.NotApplicable, match="kernel or device file"):
        act.WriteFile("/proc/sys/vm/nr_hugepages", ("0",)).apply(target)
    with pytest.raises(act.NotApplicable, match="running kernel"):
        act.SetSysctl((("vm.nr_hugepages", "0"),)).apply(target)


def test_changed_files_are_backed_up_and_listed(tmp_path):
    import json

    root, real = _tree_file(tmp_path, "/etc/x.conf", "a = 1\n")
    target = Target(str(root))
    act.CommentLines("/etc/x.conf", ((1, "a = 1"),)).apply(target)
    act.WriteFile("/etc/new.conf", ("b = 2",)).apply(target)
    folder = target.finish()
    assert open(os.path.join(folder, "etc/x.conf")).read() == "a = 1\n"
    record = json.load(open(os.path.join(folder, "changes.json")))
    assert record["changed"] == ["/etc/x.conf", "/etc/new.conf"] and record["created"] == ["/etc/new.conf"]
    assert real.read_text() == "# a = 1\n"


def test_a_folder_swapped_for_a_link_after_it_was_resolved_gets_a_refusal_not_a_write_outside(tmp_path):
    # A running container's root can change while --apply works: the folders of a path are
    # opened one by one without following a link, so the resolution made before cannot be
    # redirected.
    outside = tmp_path / "outside"
    outside.mkdir()
    root, _ = _tree_file(tmp_path, "/etc/sysctl.d/10-a.conf", "a = 1\n")
    target = Target(str(root))
    resolved = target.host.resolve("/etc/sysctl.d/90-x.conf")
    os.rename(root / "etc" / "sysctl.d", root / "etc" / "old")
    os.symlink(str(outside), root / "etc" / "sysctl.d")
    target.host.resolve = lambda path: resolved  # what a lookup just before the swap saw
    with pytest.raises(act.NotApplicable, match="not a folder"):
        act.WriteFile("/etc/sysctl.d/90-x.conf", ("vm.x = 1",)).apply(target)
    assert list(outside.iterdir()) == []


def test_removing_a_link_removes_the_link_not_the_file_it_points_to(tmp_path):
    root, important = _tree_file(tmp_path, "/etc/important", "keep\n")
    link = root / "etc" / "90-aidoctor-x.conf"
    os.symlink("/etc/important", link)
    target = Target(str(root))
    assert act.RemoveFile("/etc/90-aidoctor-x.conf").apply(target) == ["removed /etc/90-aidoctor-x.conf"]
    assert not os.path.lexists(link) and important.read_text() == "keep\n"
    assert os.readlink(os.path.join(target.finish(), "etc/90-aidoctor-x.conf")) == "/etc/important"


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_fifo_a_device_or_a_huge_file_to_remove_is_refused_before_it_is_read(tmp_path):
    root, _ = _tree_file(tmp_path, "/etc/keep", "")
    os.mkfifo(root / "etc" / "fifo.conf")
    os.mknod(root / "etc" / "zero.conf", 0o600 | 0o020000, os.makedev(1, 5))
    with open(root / "etc" / "huge.conf", "wb") as stream:
        stream.truncate(20 << 30)  # sparse: costs no disk
    target = Target(str(root))
    for name in ("fifo.conf", "zero.conf"):
        with pytest.raises(act.NotApplicable, match="not a regular file or a link"):
            act.RemoveFile("/etc/" + name).apply(target)
    with pytest.raises(act.NotApplicable, match="larger than"):
        act.RemoveFile("/etc/huge.conf").apply(target)
    assert sorted(os.listdir(root / "etc")) == ["fifo.conf", "huge.conf", "keep", "zero.conf"]


def test_a_file_with_other_names_is_not_made_executable(tmp_path):
    # Its mode is every name's, and one of them may lie outside the tree.
    outside = tmp_path / "victim"
    outside.write_text("#!/bin/sh\n")
    outside.chmod(0o644)
    root, _ = _tree_file(tmp_path, "/etc/keep", "")
    os.link(outside, root / "etc" / "rc.local")
    with pytest.raises(act.NotApplicable, match="other names"):
        act.MakeExecutable("/etc/rc.local").apply(Target(str(root)))
    assert outside.stat().st_mode & 0o777 == 0o644


def test_systemctl_disable_in_a_tree_removes_the_wants_link_and_keeps_the_unit(tmp_path):
    root, unit = _tree_file(tmp_path, "/etc/systemd/system/disable-thp.service", "[Service]\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir()
    os.symlink("/etc/systemd/system/disable-thp.service", wants / "disable-thp.service")
    done = act.SystemdUnit("disable", "disable-thp.service").apply(Target(str(root)))
    assert done == ["removed /etc/systemd/system/multi-user.target.wants/disable-thp.service"]
    assert not os.path.lexists(wants / "disable-thp.service") and unit.read_text() == "[Service]\n"


def test_the_backup_folder_is_made_before_the_first_change(tmp_path):
    # A new file needs no backup, but the change is still not made where no backup could be.
    root, _ = _tree_file(tmp_path, "/etc/keep", "")
    (root / ".aidoctor").mkdir()
    (root / ".aidoctor" / "backup").write_text("a file, not a folder")
    with pytest.raises(ApplyError, match="backup folder"):
        act.WriteFile("/etc/new.conf", ("x = 1",)).apply(Target(str(root)))
    assert not (root / "etc" / "new.conf").exists()


_NOT_UTF8 = "vm.overcommit_ratio = 5\ufffd0"  # as the Host reads a line with a byte 0xff


def test_a_line_with_a_byte_that_is_not_utf8_or_a_very_long_line_is_commented_out_alike(tmp_path):
    text = b"vm.overcommit_ratio = 5\xff0\n" + b"vm.x = " + b"9" * 5000 + b"\n\xe9cho done\nkeep\n"
    lines = ((1, _NOT_UTF8), (2, "vm.x = " + "9" * 5000), (3, "\ufffdcho done"))
    root, real = _tree_file(tmp_path, "/etc/x.conf", text.decode("utf-8", "surrogateescape"))
    copy = tmp_path / "shell.conf"
    copy.write_bytes(text)
    action = act.CommentLines(str(copy), lines)
    assert all(len(line) < 2000 for line in action.sh(act.PLAIN))
    _sh(action, copy)
    act.CommentLines("/etc/x.conf", lines).apply(Target(str(root)))
    assert real.read_bytes() == copy.read_bytes() == b"# " + text.replace(b"\nvm.x", b"\n# vm.x").replace(b"\n\xe9", b"\n# \xe9")
    _sh(action, copy)  # again: nothing changes
    act.CommentLines("/etc/x.conf", lines).apply(Target(str(root)))
    assert real.read_bytes() == copy.read_bytes()


def test_many_lines_are_commented_out_in_one_sed_pass(tmp_path):
    # One command whatever the count (a sed pass per 100 lines was quadratic); tests/test_linear.py
    # runs it on 100,000 lines.
    text = "".join("vm.nr_hugepages = %d\n" % n for n in range(250))
    copy = tmp_path / "many.conf"
    copy.write_text(text)
    action = act.CommentLines(str(copy), tuple((n + 1, "vm.nr_hugepages = %d" % n) for n in range(250)))
    assert len(action.sh(act.PLAIN)) == 1
    assert _sh(action, copy) == "".join("# vm.nr_hugepages = %d\n" % n for n in range(250))


def test_the_tuned_list_in_an_image_is_written_as_it_reads(tmp_path):
    # A `*` stays a word and a backslash stays text, in sh as in --apply.
    listed = "throughput-performance -n \\c /etc/* gpu-serving\n"
    root, active = _tree_file(tmp_path, "/etc/tuned/active_profile", listed)
    shell_root = tmp_path / "shell"
    (shell_root / "etc/tuned").mkdir(parents=True)
    (shell_root / "etc/tuned/active_profile").write_text(listed)
    (command,) = act.TunedActivate("aidoctor-cpu", False).sh(act.PLAIN)
    subprocess.run(["sh", "-c", command.replace("/etc/tuned/", str(shell_root) + "/etc/tuned/")], check=True)
    act.TunedActivate("aidoctor-cpu", False).apply(Target(str(root)))
    wanted = "throughput-performance -n \\c /etc/* gpu-serving aidoctor-cpu\n"
    assert active.read_text() == (shell_root / "etc/tuned/active_profile").read_text() == wanted


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_node_is_looked_at_never_opened(tmp_path, monkeypatch):
    # Opening alone acts on some devices (a watchdog arms, a tape rewinds).
    root, _ = _tree_file(tmp_path, "/etc/tuned/keep", "")
    os.mknod(root / "etc/tuned/active_profile", 0o600 | 0o020000, os.makedev(1, 3))
    opened = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):
        opened.append((str(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    target = Target(str(root))
    for attempt in (lambda: target.read("/etc/tuned/active_profile"), lambda: target.chmod_executable("/etc/tuned/active_profile")):
        with pytest.raises(act.NotApplicable, match="not a regular file"):
            attempt()
    assert [flags for path, flags in opened if path.endswith("active_profile")] == [os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC] * 2


def test_a_rerun_that_changes_nothing_leaves_no_backup_folder(tmp_path):
    root, _ = _tree_file(tmp_path, "/etc/x.conf", "# a = 1\n")
    target = Target(str(root))
    assert act.CommentLines("/etc/x.conf", ((1, "a = 1"),)).apply(target) == ["/etc/x.conf already says this"]
    assert act.RemoveFile("/etc/gone.conf").apply(target) == ["/etc/gone.conf was already absent"]
    assert target.finish() is None and not (root / ".aidoctor").exists()
