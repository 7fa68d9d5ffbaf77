"""grub.cfg against the GRUB defaults files: the line each grub.cfg parameter was written from,
and an edit of /etc/default/grub that update-grub never applied (boot.grub-not-regenerated)."""

from __future__ import annotations

import json
import shutil

import pytest

from ai_doctor.facts import Facts
from ai_doctor.facts.bootloader import with_grub_sources
from ai_doctor.host import Host
from ai_doctor.model import Evidence

from conftest import FIXTURES, minimal_host

RELEASE = "6.1.0-18-amd64"
UUID = "6a1f2c3b-54d9-4e8a-9b7c-0d2e4f6a8b1c"

# The menu entries of Debian 12's grub-mkconfig (10_linux), cut to the lines read here: the
# normal entry and the advanced one carry GRUB_CMDLINE_LINUX then GRUB_CMDLINE_LINUX_DEFAULT,
# the recovery entry `single` then GRUB_CMDLINE_LINUX.
GRUB_CFG = """### BEGIN /etc/grub.d/00_header ###
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
else
   set default="%(default)s"
fi
### END /etc/grub.d/00_header ###
### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-%(uuid)s' {
\tlinux\t/boot/vmlinuz-%(release)s root=UUID=%(uuid)s ro %(normal)s
\tinitrd\t/boot/initrd.img-%(release)s
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-%(uuid)s' {
\tmenuentry 'Debian GNU/Linux, with Linux %(release)s' --class debian $menuentry_id_option 'gnulinux-%(release)s-advanced-%(uuid)s' {
\t\tlinux\t/boot/vmlinuz-%(release)s root=UUID=%(uuid)s ro %(normal)s
\t}
\tmenuentry 'Debian GNU/Linux, with Linux %(release)s (recovery mode)' $menuentry_id_option 'gnulinux-%(release)s-recovery-%(uuid)s' {
\t\tlinux\t/boot/vmlinuz-%(release)s root=UUID=%(uuid)s ro single %(recovery)s
\t}
}
### END /etc/grub.d/10_linux ###
"""
NORMAL_LINE = 10  # the line of the first entry's `linux`


def grub_cfg(normal: str, recovery: str, default: str = "0") -> str:
    return GRUB_CFG % {"default": default, "uuid": UUID, "release": RELEASE, "normal": normal, "recovery": recovery}


def debian_image(tree, default_line='"quiet hugepages=512"', linux_line='"cpufreq.default_governor=performance"', cfg=None):
    """A Debian 12 image: /etc/default/grub (GRUB_CMDLINE_LINUX_DEFAULT on line 3,
    GRUB_CMDLINE_LINUX on line 4), a grub.d drop-in appending the serial console, and grub.cfg
    as grub-mkconfig writes it from them (or ``cfg``)."""
    tree.write("/etc/os-release", 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    tree.write("/boot/vmlinuz-" + RELEASE, "")
    tree.write(
        "/boot/config-" + RELEASE,
        "CONFIG_HUGETLBFS=y\nCONFIG_HUGETLB_PAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y\n",
    )
    tree.write("/usr/sbin/update-grub", "", 0o755)
    tree.write("/usr/lib/systemd/systemd-sysctl", "", 0o755)
    tree.write(
        "/etc/default/grub",
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=%s\nGRUB_CMDLINE_LINUX=%s\n" % (default_line, linux_line),
    )
    tree.write("/etc/default/grub.d/10_console.cfg", '# serial console\nGRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX console=ttyS0,115200"\n')
    if cfg is None:
        linux = "cpufreq.default_governor=performance console=ttyS0,115200"
        cfg = grub_cfg(linux + " quiet hugepages=512", linux)
    tree.write("/boot/grub/grub.cfg", cfg)


def _findings(run, tree, *args):
    result = run("--root", tree, "--format", "json", *args)
    return {f["rule"]: f for f in result.json["findings"]}, {c["rule"]: c for c in result.json["checks"]}


# -- each grub.cfg parameter's GRUB defaults line ----------------------------------------------


def test_each_grub_cfg_parameter_knows_the_grub_defaults_line_that_wrote_it(tree):
    debian_image(tree)
    line = Facts(Host(str(tree))).get("cmdline")
    texts = [p.text for p in line.params]
    assert texts == ["root=UUID=" + UUID, "ro", "cpufreq.default_governor=performance", "console=ttyS0,115200", "quiet", "hugepages=512"]
    assert line.origin(5) == ("/boot/grub/grub.cfg", NORMAL_LINE)
    assert line.grub_source(5) == ("/etc/default/grub", 3, 'GRUB_CMDLINE_LINUX_DEFAULT="quiet hugepages=512"')
    # The drop-in's own word is credited to it, the word it carries over to /etc/default/grub.
    assert line.grub_source(3) == ("/etc/default/grub.d/10_console.cfg", 2, 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX console=ttyS0,115200"')
    assert line.grub_source(2)[:2] == ("/etc/default/grub", 4)
    # root= and ro are 10_linux's own.
    assert line.grub_source(0) is None and line.grub_source(1) is None


def test_a_recovery_entry_takes_only_grub_cmdline_linux(tree):
    linux = "cpufreq.default_governor=performance console=ttyS0,115200"
    # quiet is on the recovery line here, but 10_linux writes only GRUB_CMDLINE_LINUX there.
    debian_image(tree, cfg=grub_cfg(linux + " quiet hugepages=512", linux + " quiet", default="1>1"))
    facts = Facts(Host(str(tree)))
    line = facts.get("cmdline")
    assert [p.text for p in line.params][2] == "single"
    sources = {p.text: line.grub_source(i) for i, p in enumerate(line.params)}
    assert sources["single"] is None and sources["quiet"] is None
    assert sources["console=ttyS0,115200"][0] == "/etc/default/grub.d/10_console.cfg"
    pending = facts.get("grub_pending")
    assert [p.text for p in pending.removed] == ["quiet"] and not pending.added


def test_evidence_naming_a_grub_cfg_parameter_gains_its_grub_defaults_line(tree):
    debian_image(tree)
    facts = Facts(Host(str(tree)))
    cfg = Evidence("/boot/grub/grub.cfg", "hugepages=512", NORMAL_LINE)
    other = Evidence("/boot/config-" + RELEASE, "CONFIG_HUGETLBFS=y")
    assert with_grub_sources([other, cfg], facts) == (
        other,
        Evidence("/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet hugepages=512" → /boot/grub/grub.cfg:%d' % NORMAL_LINE, 3),
        cfg,
    )
    # Not a parameter of that line, another line, no line: left as they are.
    for item in (Evidence("/boot/grub/grub.cfg", "hugepages=4", NORMAL_LINE), Evidence("/boot/grub/grub.cfg", "hugepages=512", 3)):
        assert with_grub_sources([item], facts) == (item,)


def test_a_parameter_the_files_no_longer_give_has_no_source(tree):
    linux = "cpufreq.default_governor=performance console=ttyS0,115200"
    debian_image(tree, cfg=grub_cfg(linux + " quiet hugepages=512 transparent_hugepage=never", linux))
    line = Facts(Host(str(tree))).get("cmdline")
    assert line.params[-1].text == "transparent_hugepage=never" and line.grub_source(len(line.params) - 1) is None
    item = Evidence("/boot/grub/grub.cfg", "transparent_hugepage=never", NORMAL_LINE)
    assert with_grub_sources([item], Facts(Host(str(tree)))) == (item,)


# -- boot.grub-not-regenerated ------------------------------------------------------------------


def test_an_edit_update_grub_never_applied_is_found_with_both_files(tree, run):
    linux = "cpufreq.default_governor=performance console=ttyS0,115200"
    debian_image(tree, cfg=grub_cfg(linux + " quiet", linux))  # written before hugepages=512 was added
    found, _checks = _findings(run, tree)
    issue = found["boot.grub-not-regenerated"]
    assert issue["severity"] == "high"  # hugepages= is judged by other checks
    assert "boots without `hugepages=512`, which /etc/default/grub:3 sets" in issue["message"]
    assert issue["evidence"][0] == {"path": "/etc/default/grub", "value": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet hugepages=512"', "line": 3}
    assert issue["evidence"][-1]["path"] == "/boot/grub/grub.cfg" and issue["evidence"][-1]["line"] == NORMAL_LINE
    step = issue["remediation"][0]
    assert "`update-grub`" in step["summary"] and "image's disk is attached" in step["summary"] and not step["commands"]
    assert step["actions"][0]["kind"] == "boot-entries" and step["actions"][0]["add"] == ["hugepages=512"]


def test_a_parameter_the_files_dropped_is_found_and_the_fix_takes_it_out(tree, run, capsys, tmp_path):
    linux = "cpufreq.default_governor=performance console=ttyS0,115200"
    debian_image(tree, cfg=grub_cfg(linux + " quiet hugepages=512 transparent_hugepage=never", linux))
    found, _checks = _findings(run, tree)
    issue = found["boot.grub-not-regenerated"]
    assert issue["severity"] == "high"
    assert "still boots with `transparent_hugepage=never`, which the GRUB files do not set" in issue["message"]
    assert "it drops `transparent_hugepage=never`" in issue["remediation"][0]["summary"]
    # thp.disabled judges what boots, grub.cfg's line, and names the line it is on.
    assert found["thp.disabled"]["evidence"][-1] == {
        "path": "/boot/grub/grub.cfg",
        "value": "transparent_hugepage=never",
        "line": NORMAL_LINE,
    }
    copy = tmp_path / "copy"
    shutil.copytree(str(tree.root), str(copy), symlinks=True)
    code = run("fix", "--root", copy, "--apply", "--yes", "--only", "boot", "--format", "json").code
    assert code == 0
    cfg = (copy / "boot/grub/grub.cfg").read_text().splitlines()
    assert cfg[NORMAL_LINE - 1].split()[-2:] == ["quiet", "hugepages=512"]
    after, checks = _findings(run, copy)
    assert "boot.grub-not-regenerated" not in after and "thp.disabled" not in after
    assert checks["boot.grub-not-regenerated"]["status"] == "pass"


def test_a_change_no_other_check_judges_is_medium(tree, run):
    debian_image(tree, cfg=grub_cfg("cpufreq.default_governor=performance quiet hugepages=512", "cpufreq.default_governor=performance"))
    found, _checks = _findings(run, tree)
    issue = found["boot.grub-not-regenerated"]
    assert issue["severity"] == "medium"
    assert "boots without `console=ttyS0,115200`, which /etc/default/grub.d/10_console.cfg:2 sets" in issue["message"]


@pytest.mark.parametrize(
    "normal",
    [
        # The order is not compared; $vt_handoff (Ubuntu) is expanded at boot; BOOT_IMAGE is GRUB's.
        "hugepages=512 quiet console=ttyS0,115200 cpufreq.default_governor=performance $vt_handoff",
        "cpufreq.default_governor=performance console=ttyS0,115200 quiet hugepages=512 rootflags=subvol=@rootfs",
    ],
)
def test_what_grub_mkconfig_adds_itself_is_no_difference(tree, run, normal):
    debian_image(tree, cfg=grub_cfg(normal, "cpufreq.default_governor=performance console=ttyS0,115200"))
    found, checks = _findings(run, tree)
    assert "boot.grub-not-regenerated" not in found
    assert checks["boot.grub-not-regenerated"]["status"] == "pass"


def test_a_word_given_twice_counts_twice(tree):
    linux = "cpufreq.default_governor=performance console=ttyS0,115200"
    debian_image(tree, default_line='"quiet hugepages=512 hugepages=512"', cfg=grub_cfg(linux + " quiet hugepages=512", linux))
    pending = Facts(Host(str(tree))).get("grub_pending")
    assert [p.text for p, _source in pending.added] == ["hugepages=512"]
    assert pending.add == ("hugepages=512", "hugepages=512") and pending.remove == ()


def test_grub2_mkconfig_on_a_running_host_is_the_command(tree, run):
    minimal_host(tree)
    tree.write("/usr/sbin/grub2-mkconfig", "", 0o755)
    tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="crashkernel=auto"\n')
    cfg = grub_cfg("quiet", "").replace("/boot/vmlinuz-", "/vmlinuz-")
    tree.write("/boot/grub2/grub.cfg", cfg)
    tree.write("/boot/vmlinuz-" + RELEASE, "")
    issue = _findings(run, tree)[0]["boot.grub-not-regenerated"]
    assert issue["severity"] == "medium"
    assert "boots without `crashkernel=auto`" in issue["message"] and "still boots with `quiet`" in issue["message"]
    step = issue["remediation"][0]
    assert step["commands"] == ["sudo grub2-mkconfig -o /boot/grub2/grub.cfg"] and step["summary"].endswith(", then reboot")


@pytest.mark.parametrize(
    "setup, reason",
    [
        (lambda tree: tree.write("/etc/default/grub", 'GRUB_CMDLINE_LINUX="$(cat /etc/args)"\n'), "could not be evaluated"),
        (lambda tree: tree.write("/boot/grub/grub.cfg", GRUB_CFG_CUSTOM), "is not one grub-mkconfig's 10_linux writes"),
        (lambda tree: (tree.root / "etc/default/grub").unlink(), "no /etc/default/grub"),
        (lambda tree: (tree.root / "boot/grub/grub.cfg").unlink(), "no grub.cfg"),
    ],
)
def test_what_cannot_be_compared_is_skipped_with_the_reason(tree, run, setup, reason):
    debian_image(tree)
    setup(tree)
    _found, checks = _findings(run, tree)
    check = checks["boot.grub-not-regenerated"]
    assert check["status"] == "skip" and reason in check["reason"]


GRUB_CFG_CUSTOM = (
    """menuentry 'Site kernel' {
\tlinux /boot/vmlinuz-%s root=/dev/vda1 ro hugepages=4
}
"""
    % RELEASE
)


def test_the_debian_fixture_names_the_edit_and_its_fix_clears_it(run, tmp_path):
    root = FIXTURES / "debian-grub-unapplied/root"
    issue = _findings(run, root)[0]["boot.grub-not-regenerated"]
    assert issue["evidence"][0] == {"path": "/etc/default/grub", "value": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet hugepages=512"', "line": 9}
    copy = tmp_path / "root"
    shutil.copytree(str(root), str(copy), symlinks=True)
    applied = run("fix", "--root", copy, "--apply", "--yes", "--only", "boot", "--format", "json")
    assert applied.code == 0, applied.out
    assert [r["outcome"] for item in json.loads(applied.out)["applied"] for r in item["results"]] == ["done"]
    # What update-grub writes into the default entry, as the regenerated fixture has it.
    wanted = (FIXTURES / "debian-grub-regenerated/root/boot/grub/grub.cfg").read_text().splitlines()[118].split()
    assert (copy / "boot/grub/grub.cfg").read_text().splitlines()[118].split() == wanted
    assert "boot.grub-not-regenerated" not in _findings(run, copy, "--next-boot")[0]


UBUNTU_CLOUD_CFG = """menuentry 'Ubuntu' --class ubuntu $menuentry_id_option 'gnulinux-simple-b993' {
\trecordfail
\tif [ "${initrdfail}" = 1 ]; then
\t  echo\t'GRUB_FORCE_PARTUUID set, initrdless boot failed. Attempting with initrd.'
\t  linux\t/boot/vmlinuz-6.8.0-1015-aws root=PARTUUID=26f2 ro  console=tty1 console=ttyS0 nvme_core.io_timeout=4294967295
\t  initrd\t/boot/initrd.img-6.8.0-1015-aws
\telse
\t  echo\t'GRUB_FORCE_PARTUUID set, attempting initrdless boot.'
\t  linux\t/boot/vmlinuz-6.8.0-1015-aws root=PARTUUID=26f2 ro  console=tty1 console=ttyS0 nvme_core.io_timeout=4294967295 panic=-1
\tfi
\tinitrdfail
}
"""


def test_ubuntu_cloud_initrdless_boot_adds_panic_itself(tree, run):
    # Ubuntu's cloud images set GRUB_FORCE_PARTUUID: 10_linux's initrdless line ends in panic=-1.
    tree.write("/boot/vmlinuz-6.8.0-1015-aws", "")
    tree.write("/usr/sbin/update-grub", "", 0o755)
    tree.write("/etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n')
    tree.write("/etc/default/grub.d/40-force-partuuid.cfg", "GRUB_FORCE_PARTUUID=26f2\n")
    tree.write(
        "/etc/default/grub.d/50-cloudimg-settings.cfg",
        'GRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0 nvme_core.io_timeout=4294967295"\n',
    )
    tree.write("/boot/grub/grub.cfg", UBUNTU_CLOUD_CFG)
    found, checks = _findings(run, tree)
    assert checks["boot.grub-not-regenerated"]["status"] == "pass", found.get("boot.grub-not-regenerated")
    # Without GRUB_FORCE_PARTUUID, 10_linux writes no panic=-1: this grub.cfg is then stale.
    (tree.root / "etc/default/grub.d/40-force-partuuid.cfg").unlink()
    issue = _findings(run, tree)[0]["boot.grub-not-regenerated"]
    assert "still boots with `panic=-1`" in issue["message"]


def test_parameters_from_several_lines_are_named_with_each_line(tree, run):
    debian_image(tree, cfg=grub_cfg("cpufreq.default_governor=performance quiet", "cpufreq.default_governor=performance"))
    issue = _findings(run, tree)[0]["boot.grub-not-regenerated"]
    assert (
        "boots without `console=ttyS0,115200` (set at /etc/default/grub.d/10_console.cfg:2), `hugepages=512` (set at /etc/default/grub:3)."
        in issue["message"]
    )
    assert [(e["path"], e.get("line")) for e in issue["evidence"]] == [
        ("/etc/default/grub.d/10_console.cfg", 2),
        ("/etc/default/grub", 3),
        ("/boot/grub/grub.cfg", NORMAL_LINE),
    ]


def test_applied_to_a_tree_recovery_entries_get_only_grub_cmdline_linux(tmp_path, run):
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "debian-grub-unapplied" / "root", root, symlinks=True)
    assert run("fix", "--root", root, "--image", "--apply", "--yes").code == 0
    lines = [row for row in (root / "boot/grub/grub.cfg").read_text().split("\n") if row.strip().startswith("linux\t")]
    normal = [row for row in lines if " single" not in row]
    recovery = [row for row in lines if " single" in row]
    # 10_linux writes GRUB_CMDLINE_LINUX_DEFAULT on normal entries alone, and keeps its tab.
    assert normal and all(row.endswith(" hugepages=512") for row in normal)
    assert recovery and not any("hugepages=512" in row for row in recovery)
