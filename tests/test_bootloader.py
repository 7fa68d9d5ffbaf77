"""The next boot: default kernel and command line, from GRUB files, BLS entries and grubenv."""

from __future__ import annotations

import pytest

from ai_doctor.facts import Facts
from ai_doctor.facts.bootloader import parse_bls_entry, parse_grub_defaults, parse_grubenv
from ai_doctor.host import Host

RHEL_NEW = "5.14.0-427.13.1.el9_4.x86_64"
RHEL_OLD = "5.14.0-362.8.1.el9_3.x86_64"
MACHINE = "8f3c2f0e1a2b4c5d9e8f7a6b5c4d3e2f"


def _bls(tree, release, options, extra=""):
    tree.write(
        "/boot/loader/entries/%s-%s.conf" % (MACHINE, release),
        "title Red Hat Enterprise Linux (%s) 9.4 (Plow)\nversion %s\nlinux /vmlinuz-%s\n"
        "initrd /initramfs-%s.img $tuned_initrd\noptions %s\n%sgrub_class rhel\n" % (release, release, release, release, options, extra),
    )
    tree.write("/boot/vmlinuz-" + release, "")


def _facts(tree):
    return Facts(Host(str(tree)))


def test_grub_lines_name_the_parameters_written_on_them():
    kept = parse_grub_defaults("GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX b=2\"' c=3'\n", "/x.cfg")[0]
    assert [p.text for p in kept.params] == ["b=2", "c=3"]
    idiom = parse_grub_defaults('GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT:+$GRUB_CMDLINE_LINUX_DEFAULT }thp=x"\n', "/y")[0]
    assert [p.text for p in idiom.params] == ["thp=x"]


def test_the_grub_sed_cuts_a_parameter_out_of_the_append_idiom(tmp_path):
    import subprocess

    from ai_doctor.facts.fixes import Fixes
    from ai_doctor.remedy.actions import PLAIN, grub_cut

    target = tmp_path / "99-ai.cfg"
    original = 'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT:+$GRUB_CMDLINE_LINUX_DEFAULT }transparent_hugepage=never"\n'
    target.write_text(original)
    args = parse_grub_defaults(target.read_text(), str(target))
    fixes = Fixes.__new__(Fixes)
    fixes.image, fixes.root, fixes._boot_args = None, True, tuple(args)
    fixes._grub_files = {str(target): original}
    for action in fixes._grub_removals(["transparent_hugepage"], None):
        for command in action.sh(PLAIN):
            subprocess.run(command, shell=True, check=True)
    wanted = 'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT:+$GRUB_CMDLINE_LINUX_DEFAULT }"\n'
    assert target.read_text() == wanted
    # What --apply does in Python is what the printed sed does.
    assert grub_cut(original, ["transparent_hugepage"]) == wanted


@pytest.mark.parametrize(
    "drop_in, line",
    [
        # Ubuntu cloud images replace the default; ours appends.
        ('GRUB_CMDLINE_LINUX_DEFAULT="console=ttyS0"', ["hugepages=8", "console=ttyS0"]),
        ('GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX thp_anon=2M:never"', ["hugepages=8", "thp_anon=2M:never", "quiet", "splash"]),
        # The shell idiom for "append with a blank when there is something to append to".
        (
            'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT:+$GRUB_CMDLINE_LINUX_DEFAULT }transparent_hugepage=never"',
            ["hugepages=8", "quiet", "splash", "transparent_hugepage=never"],
        ),
        ("GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX\"' hugepages=64'", ["hugepages=8", "hugepages=64", "quiet", "splash"]),
    ],
)
def test_grub_drop_ins_evaluate_as_sh_would(tree, drop_in, line):
    tree.write("/boot/vmlinuz-6.8.0-45-generic", "")
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX="hugepages=8"\n')
    tree.write("/etc/default/grub.d/99-site.cfg", drop_in + "\n")
    assert [p.text for p in _facts(tree).get("cmdline").params] == line


def test_a_grub_line_sh_cannot_take_is_not_guessed(tree):
    tree.write("/boot/vmlinuz-6.8.0-45-generic", "")
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="transparent_hugepage=never\n')
    line = _facts(tree).get("cmdline")
    assert not line and 'GRUB_CMDLINE_LINUX at /etc/default/grub:1 could not be evaluated (an unterminated " quote)' in line.reason
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="$(cat /etc/extra-args)"\n')
    assert "command substitution" in _facts(tree).get("cmdline").reason


def test_image_boot_line_follows_shell_order_of_grub_files(tree):
    tree.write("/boot/vmlinuz-6.8.0-45-generic", "")
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX="hugepages=8"\n')
    # Ubuntu cloud images replace the default in a drop-in; ours appends.
    tree.write("/etc/default/grub.d/50-cloudimg-settings.cfg", 'GRUB_CMDLINE_LINUX_DEFAULT="console=ttyS0"\n')
    tree.write(
        "/etc/default/grub.d/90-aidoctor-transparent_hugepage.cfg",
        'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX transparent_hugepage=madvise"\n',
    )
    line = _facts(tree).get("cmdline")
    assert [p.text for p in line.params] == ["hugepages=8", "transparent_hugepage=madvise", "console=ttyS0"]
    assert line.origin(1) == ("/etc/default/grub.d/90-aidoctor-transparent_hugepage.cfg", 1)
    assert line.origin(0) == ("/etc/default/grub", 2)


def test_bls_entries_and_grubenv_give_the_default_kernel_and_its_line(tree):
    _bls(tree, RHEL_OLD, "root=/dev/mapper/rhel-root ro hugepages=16")
    _bls(tree, RHEL_NEW, "root=/dev/mapper/rhel-root ro $tuned_params")
    tree.write("/etc/default/grub", 'GRUB_DEFAULT=saved\nGRUB_ENABLE_BLSCFG=true\nGRUB_CMDLINE_LINUX="hugepages=99"\n')
    tree.write(
        "/boot/grub2/grubenv",
        "# GRUB Environment Block\nsaved_entry=%s-%s\ntuned_params=transparent_hugepage=never\n%s" % (MACHINE, RHEL_OLD, "#" * 900),
    )
    facts = _facts(tree)
    default = facts.get("default_boot")
    assert default.release == RHEL_OLD and "saved_entry" in default.how
    assert facts.get("release") == RHEL_OLD
    assert [p.text for p in facts.get("cmdline").params] == ["root=/dev/mapper/rhel-root", "ro", "hugepages=16"]


def test_bls_options_expand_grubenv_variables(tree):
    _bls(tree, RHEL_NEW, "$kernelopts $tuned_params")
    tree.write("/boot/grub2/grubenv", "kernelopts=root=/dev/vda1 ro hugepages=4\ntuned_params=transparent_hugepage=never\n")
    line = _facts(tree).get("cmdline")
    assert [p.text for p in line.params] == ["root=/dev/vda1", "ro", "hugepages=4", "transparent_hugepage=never"]
    assert line.origin(3) == ("/boot/grub2/grubenv", None)


def test_bls_default_without_saved_entry_is_the_newest(tree):
    _bls(tree, RHEL_OLD, "ro")
    _bls(tree, RHEL_NEW, "ro hugepages=2")
    default = _facts(tree).get("default_boot")
    assert default.release == RHEL_NEW and default.entry.options == ((5, "ro hugepages=2"),)


def test_bls_entries_ignored_when_grub_is_told_not_to_read_them(tree):
    _bls(tree, RHEL_NEW, "ro hugepages=2")
    tree.write("/etc/default/grub", 'GRUB_ENABLE_BLSCFG=false\nGRUB_CMDLINE_LINUX="hugepages=3"\n')
    assert [p.text for p in _facts(tree).get("cmdline").params] == ["hugepages=3"]


def test_grub_default_names_a_kernel_by_title_or_submenu_index(tree):
    for release in ("6.8.0-40-generic", "6.8.0-45-generic", "6.8.0-49-generic"):
        tree.write("/boot/vmlinuz-" + release, "")
    tree.write("/etc/default/grub", 'GRUB_DEFAULT="Advanced options for Ubuntu>Ubuntu, with Linux 6.8.0-45-generic"\n')
    assert _facts(tree).get("release") == "6.8.0-45-generic"
    # Newest first, each kernel followed by its recovery entry: 1>4 is the third kernel.
    tree.write("/etc/default/grub", "GRUB_DEFAULT='1>4'\n")
    assert _facts(tree).get("release") == "6.8.0-40-generic"
    tree.write("/etc/default/grub", "GRUB_DEFAULT='1>2'\nGRUB_DISABLE_RECOVERY=true\n")
    assert _facts(tree).get("release") == "6.8.0-40-generic"
    tree.write("/etc/default/grub", "GRUB_DEFAULT=saved\n")
    tree.write("/boot/grub/grubenv", "saved_entry=gnulinux-advanced-abc>gnulinux-6.8.0-45-generic-advanced-abc\n")
    assert _facts(tree).get("release") == "6.8.0-45-generic"
    tree.write("/etc/default/grub", "GRUB_DEFAULT='Windows Boot Manager'\n")
    default = _facts(tree).get("default_boot")
    assert default.release == "6.8.0-49-generic" and "names no installed kernel" in default.how


def test_parsers_take_odd_text():
    entry = parse_bls_entry("# comment\nlinux /vmlinuz-6.1.0-13-amd64\noptions a\noptions  b c\nbogus\n", "/boot/loader/entries/x.conf")
    assert (entry.id, entry.version, entry.options) == ("x", "6.1.0-13-amd64", ((3, "a"), (4, "b c")))
    assert parse_grubenv("# GRUB Environment Block\nsaved_entry=0\n####\n=x\n") == {"saved_entry": "0"}


UBUNTU_GRUB_CFG = """#
# DO NOT EDIT THIS FILE
#
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi
menuentry 'Ubuntu' --class ubuntu --class gnu-linux $menuentry_id_option 'gnulinux-simple-5f0b' {
	recordfail
	linux	/boot/vmlinuz-6.8.0-49-generic root=UUID=5f0b ro transparent_hugepage=never hugepages=8192 $vt_handoff
	initrd	/boot/initrd.img-6.8.0-49-generic
}
submenu 'Advanced options for Ubuntu' $menuentry_id_option 'gnulinux-advanced-5f0b' {
	menuentry 'Ubuntu, with Linux 6.8.0-49-generic' --class ubuntu $menuentry_id_option 'gnulinux-6.8.0-49-generic-advanced-5f0b' {
		linux	/boot/vmlinuz-6.8.0-49-generic root=UUID=5f0b ro transparent_hugepage=never hugepages=8192 $vt_handoff
	}
	menuentry 'Ubuntu, with Linux 6.8.0-49-generic (recovery mode)' $menuentry_id_option 'gnulinux-6.8.0-49-generic-recovery-5f0b' {
		linux	/boot/vmlinuz-6.8.0-49-generic root=UUID=5f0b ro recovery nomodeset dis_ucode_ldr
	}
	menuentry 'Ubuntu, with Linux 6.8.0-45-generic' --class ubuntu $menuentry_id_option 'gnulinux-6.8.0-45-generic-advanced-5f0b' {
		linux	/boot/vmlinuz-6.8.0-45-generic root=UUID=5f0b ro quiet
	}
}
menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {
	fwsetup
}
"""


def test_grub_cfg_is_what_boots_even_when_the_grub_files_say_otherwise(tree):
    for release in ("6.8.0-45-generic", "6.8.0-49-generic"):
        tree.write("/boot/vmlinuz-" + release, "")
    tree.write("/etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=""\n')  # edited, update-grub never run
    tree.write("/boot/grub/grub.cfg", UBUNTU_GRUB_CFG)
    facts = _facts(tree)
    assert facts.get("default_boot").how == '/boot/grub/grub.cfg:18, by set default="0" in /boot/grub/grub.cfg'
    line = facts.get("cmdline")
    assert [p.text for p in line.params] == ["root=UUID=5f0b", "ro", "transparent_hugepage=never", "hugepages=8192"]
    assert line.origin(2) == ("/boot/grub/grub.cfg", 18)
    tree.write("/boot/grub/grub.cfg", UBUNTU_GRUB_CFG.replace('set default="0"', 'set default="${saved_entry}"'))
    tree.write("/boot/grub/grubenv", "saved_entry=gnulinux-advanced-5f0b>gnulinux-6.8.0-45-generic-advanced-5f0b\n")
    facts = _facts(tree)
    assert facts.get("release") == "6.8.0-45-generic" and [p.text for p in facts.get("cmdline").params][-1] == "quiet"
    tree.write("/boot/grub/grub.cfg", UBUNTU_GRUB_CFG.replace('set default="0"', 'set default="1>2"'))
    assert _facts(tree).get("release") == "6.8.0-45-generic"


def test_rhel8_kernelopts_from_grubenv_or_grub_cfg_else_unknown(tree):
    _bls(tree, RHEL_NEW, "$kernelopts $tuned_params")
    line = _facts(tree).get("cmdline")
    assert not line and "$kernelopts" in line.reason and "no grubenv in the tree" in line.reason
    tree.write(
        "/boot/grub2/grub.cfg",
        'if [ -z "${kernelopts}" ]; then\n  set kernelopts="root=/dev/vda1 ro transparent_hugepage=never "\nfi\nblscfg\n',
    )
    line = _facts(tree).get("cmdline")
    assert [p.text for p in line.params] == ["root=/dev/vda1", "ro", "transparent_hugepage=never"]
    assert line.origin(2) == ("/boot/grub2/grub.cfg", 2)


def test_systemd_boot_default_glob_in_loader_conf(tree):
    for release, options in (("6.13.5-200.fc42.x86_64", "ro hugepages=512"), ("6.14.2-300.fc42.x86_64", "ro")):
        tree.write(
            "/efi/loader/entries/%s-%s.conf" % (MACHINE, release),
            "title Fedora\nversion %s\nlinux /%s/linux\noptions %s\n" % (release, release, options),
        )
    tree.write("/efi/loader/loader.conf", "timeout 3\ndefault %s-6.13.5-*\n" % MACHINE)
    facts = _facts(tree)
    assert facts.get("release") == "6.13.5-200.fc42.x86_64" and "loader.conf" in facts.get("default_boot").how
    assert [p.text for p in facts.get("cmdline").params] == ["ro", "hugepages=512"]


def test_grub_default_index_without_the_submenu(tree):
    for release in ("6.8.0-31-generic", "6.8.0-45-generic"):
        tree.write("/boot/vmlinuz-" + release, "")
    # 10_linux with GRUB_DISABLE_SUBMENU=y: newest, its recovery, then the older kernel.
    tree.write("/etc/default/grub", "GRUB_DISABLE_SUBMENU=y\nGRUB_DEFAULT=2\n")
    assert _facts(tree).get("release") == "6.8.0-31-generic"


def test_our_grub_drop_in_is_sourced_after_one_that_assigns(tree, run):
    tree.write("/boot/vmlinuz-6.8.0-45-generic", "")
    tree.write("/boot/config-6.8.0-45-generic", "CONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y\n")
    tree.write("/usr/sbin/update-grub", "", 0o755)
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="transparent_hugepage=never"\n')
    tree.write("/etc/default/grub.d/99-site.cfg", 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX net.ifnames=0"\n')
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "thp.disabled"][0]
    commands = [c for s in found["remediation"] for c in s["commands"]]
    assert any("tee /etc/default/grub.d/zz-aidoctor-transparent_hugepage.cfg" in c for c in commands)


def test_thp_never_from_tuned_params_points_at_the_tuned_profile(tree, run):
    _bls(tree, RHEL_NEW, "root=/dev/vda1 ro $tuned_params")
    tree.write("/boot/config-" + RHEL_NEW, "CONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE_ALWAYS=y\n")
    tree.write("/boot/grub2/grubenv", "tuned_params=transparent_hugepage=never\n")
    tree.write("/usr/sbin/grubby", "", 0o755)
    tree.write("/usr/sbin/tuned-adm", "", 0o755)
    tree.write("/etc/tuned/active_profile", "site\n")
    tree.write("/etc/tuned/site/tuned.conf", "[bootloader]\ncmdline=transparent_hugepage=never\n")
    found = [f for f in run("--root", tree, "--format", "json").json["findings"] if f["rule"] == "thp.disabled"][0]
    assert found["evidence"][0] == {"path": "/boot/grub2/grubenv", "value": "transparent_hugepage=never"}
    step = found["remediation"][0]
    assert "/etc/tuned/site/tuned.conf:2" in step["summary"] and not step["commands"]


def test_thp_anon_that_turns_2m_off_in_an_image(tree, run):
    tree.write("/boot/vmlinuz-6.14.0-15-generic", "")
    tree.write("/boot/config-6.14.0-15-generic", "CONFIG_X86_64=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y\n")
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="thp_anon=2M:never"\n')
    assert run("--root", tree, "--format", "json").findings().get("thp.disabled") == "low"
    # Sizes a thp_anon= leaves out are never, 2M too; naming it inherit keeps it on.
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="thp_anon=64K:always"\n')
    assert run("--root", tree, "--format", "json").findings().get("thp.disabled") == "low"
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="\\"thp_anon=64K:always;2M:inherit\\""\n')
    assert "thp.disabled" not in run("--root", tree, "--format", "json").findings()


def test_a_reservation_this_boot_already_made_is_not_a_pending_reboot(tmp_path, run):
    import shutil

    from conftest import FIXTURES

    root = tmp_path / "root"
    shutil.copytree(str(FIXTURES / "hugepage-shortfall/root"), str(root), symlinks=True)
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro hugepages=4096\n")
    (root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX="hugepages=4096"\n')
    found = [f for f in run("--root", root, "--format", "json").json["findings"] if f["rule"] == "hugepages.shortfall"][0]
    assert "a reboot is pending" not in found["message"]
    assert not any(s["summary"].startswith("Reboot to take") for s in found["remediation"])
    # Booked for the next boot only: that one is pending.
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro\n")
    found = [f for f in run("--root", root, "--format", "json").json["findings"] if f["rule"] == "hugepages.shortfall"][0]
    assert "a reboot is pending" in found["message"]


def test_a_grub_cfg_this_user_cannot_read_leaves_the_line_unknown(tree):
    tree.write("/boot/vmlinuz-6.8.0-45-generic", "")
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX=""\n')
    tree.write("/boot/grub/grub.cfg", UBUNTU_GRUB_CFG)
    tree.manifest(outcomes={"/boot/grub/grub.cfg": "denied"})
    line = _facts(tree).get("cmdline")
    assert not line and "grub.cfg holds the boot line" in line.reason and "permission denied" in line.reason


def test_tuned_params_set_in_grub_cfg_reach_the_entry(tree):
    release = "3.10.0-1160.108.1.el7.x86_64"
    tree.write("/boot/vmlinuz-" + release, "")
    tree.write(
        "/boot/grub2/grub.cfg",
        "### BEGIN /etc/grub.d/00_tuned ###\n"
        'set tuned_params="transparent_hugepage=never hugepagesz=1G hugepages=16"\n'
        "### END /etc/grub.d/00_tuned ###\n"
        "menuentry 'CentOS Linux (%s) 7 (Core)' --class centos {\n"
        "\tlinux16 /vmlinuz-%s root=/dev/mapper/centos-root ro rhgb quiet $tuned_params\n"
        "}\n" % (release, release),
    )
    line = _facts(tree).get("cmdline")
    assert [p.text for p in line.params][-3:] == ["transparent_hugepage=never", "hugepagesz=1G", "hugepages=16"]
    assert line.origin(len(line.params) - 1) == ("/boot/grub2/grub.cfg", 2)


def test_releasing_a_pool_the_next_boot_no_longer_asks_for_needs_no_boot_step(tmp_path, run):
    import shutil

    from conftest import FIXTURES

    root = tmp_path / "root"
    shutil.copytree(str(FIXTURES / "unused-static-pool/root"), str(root), symlinks=True)
    found = [f for f in run("--root", root, "--format", "json").json["findings"] if f["rule"] == "hugepages.unused"][0]
    assert any("at boot" in s["summary"] for s in found["remediation"])
    grub = root / "etc/default/grub"
    grub.write_text(grub.read_text().replace("default_hugepagesz=1G hugepagesz=1G hugepages=32", ""))
    found = [f for f in run("--root", root, "--format", "json").json["findings"] if f["rule"] == "hugepages.unused"][0]
    assert not any("at boot" in s["summary"] for s in found["remediation"])


def test_grub_reboot_next_entry_wins_once(tree):
    for release in ("6.8.0-45-generic", "6.8.0-49-generic"):
        tree.write("/boot/vmlinuz-" + release, "")
    tree.write("/boot/grub/grub.cfg", UBUNTU_GRUB_CFG)
    tree.write("/boot/grub/grubenv", "next_entry=gnulinux-advanced-5f0b>gnulinux-6.8.0-45-generic-advanced-5f0b\n")
    default = _facts(tree).get("default_boot")
    assert default.release == "6.8.0-45-generic" and "grub-reboot" in default.how


@pytest.mark.parametrize(
    "text, value, unknown",
    [
        ('GRUB_CMDLINE_LINUX="a"\nif false; then\nGRUB_CMDLINE_LINUX="transparent_hugepage=never"\nfi\n', None, True),
        ('case x in x) GRUB_CMDLINE_LINUX="never";; esac\n', None, True),
        ("GRUB_CMDLINE_LINUX=never\nunset GRUB_CMDLINE_LINUX\n", None, False),
        ('readonly GRUB_CMDLINE_LINUX="a"\n', "a", False),
    ],
)
def test_grub_assignments_sh_may_not_make_are_unknown(text, value, unknown):
    from ai_doctor.facts.bootloader import evaluate_grub_files

    setting = evaluate_grub_files([("/etc/default/grub", text)])[0]["GRUB_CMDLINE_LINUX"]
    assert setting.value == value and bool(setting.problem) is unknown


def test_boot_entry_edits_keep_what_they_do_not_change(tmp_path):
    from ai_doctor.remedy.actions import NotApplicable
    from ai_doctor.remedy.bootedit import edit_entries
    from ai_doctor.remedy.target import Target

    root = tmp_path / "root"
    entry = root / "boot/loader/entries/a.conf"
    entry.parent.mkdir(parents=True)
    # A no-break space is part of a parameter for the kernel (it splits at ASCII blanks only).
    entry.write_text("title a\nlinux /vmlinuz\n  options root=/dev/sda acpi_osi=\u00a0Linux transparent_hugepage=never\n")
    edit_entries(Target(str(root)), ["transparent_hugepage=madvise"], ["transparent_hugepage"], bls=True)
    assert entry.read_text() == "title a\nlinux /vmlinuz\n  options root=/dev/sda acpi_osi=\u00a0Linux transparent_hugepage=madvise\n"
    # RHEL 8: the entries take $kernelopts from grubenv, whose other lines stay as they are.
    block = "# GRUB Environment Block\nsaved_entry=a\nnote=two\\\nlines\nnot-a-variable\nkernelopts=root=/dev/sda hugepages=4\n"
    entry, grubenv = _rhel8_entry(root, "$kernelopts", block)
    edit_entries(Target(str(root)), ["hugepages=8"], ["hugepages"], bls=True)
    wanted = block.replace("hugepages=4", "hugepages=8")
    assert grubenv.read_text() == wanted + "#" * (1024 - len(wanted))
    block = "# GRUB Environment Block\nsaved_entry=a\n"
    grubenv.write_text(block + "#" * (1024 - len(block)))
    with pytest.raises(NotApplicable, match="sets no kernelopts"):
        edit_entries(Target(str(root)), ["hugepages=8"], ["hugepages"], bls=True)


def _rhel8_entry(root, options: str, block: str):
    """A BLS entry with ``options`` and a grubenv of ``block``, padded to its 1024 bytes."""
    entry = root / "boot/loader/entries/a.conf"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text("title a\nlinux /vmlinuz\noptions %s\n" % options)
    grubenv = root / "boot/grub2/grubenv"
    grubenv.parent.mkdir(parents=True, exist_ok=True)
    grubenv.write_text(block + "#" * (1024 - len(block)))
    return entry, grubenv


def test_parameters_beside_kernelopts_go_from_the_entry_and_new_ones_go_into_grubenv(tmp_path):
    from ai_doctor.remedy.bootedit import edit_entries
    from ai_doctor.remedy.target import Target

    root = tmp_path / "root"
    entry, grubenv = _rhel8_entry(root, "$kernelopts hugepages=32 $tuned_params", "# GRUB Environment Block\nkernelopts=root=/dev/sda ro\n")
    edit_entries(Target(str(root)), ["hugepages=8"], ["hugepages"], bls=True)
    assert entry.read_text() == "title a\nlinux /vmlinuz\noptions $kernelopts $tuned_params\n"
    assert grubenv.read_text().startswith("# GRUB Environment Block\nkernelopts=root=/dev/sda ro hugepages=8\n")


def test_never_in_rhel8_kernelopts_is_not_blamed_on_tuned(tree, run):
    _bls(tree, RHEL_NEW, "$kernelopts $tuned_params")
    tree.write("/usr/sbin/grubby", "", 0o755)
    tree.write("/boot/grub2/grubenv", "kernelopts=root=/dev/vda1 ro transparent_hugepage=never\ntuned_params=\n")
    tree.write("/boot/config-%s" % RHEL_NEW, "CONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y\n")
    found = [f for f in run("--root", tree, "--image", "--format", "json").json["findings"] if f["rule"] == "thp.disabled"][0]
    summaries = " ".join(step["summary"] for step in found["remediation"])
    assert "tuned" not in summaries and "grubby" in summaries
