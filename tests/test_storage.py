"""storage.scheduler: NVMe multipath paths, hardware queues, and the name of our udev rule."""

from __future__ import annotations

import pytest

from ai_doctor.engine import load_rules
from ai_doctor.facts import Facts
from ai_doctor.facts.blockdev import BlockDevice
from ai_doctor.facts.udev import SchedulerRule, name_after
from ai_doctor.host import Host

from conftest import minimal_host

HEAD = "/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"


def storage():
    """The rule module, imported after every rule so the registry keeps its catalogue order."""
    load_rules()
    from ai_doctor.rules import storage

    return storage


def facts_for(tree):
    return Facts(Host(str(tree)))


def run_json(run, tree):
    return run("--root", tree, "--format", "json", "--only", "storage.scheduler")


def finding(result):
    (found,) = result.json["findings"]
    return found


def commands(found):
    return [c for step in found["remediation"] for c in step["commands"]]


def queues(tree, where: str, count: int) -> None:
    """``count`` hardware queue directories under ``where``/mq, as block/blk-mq-sysfs.c makes them."""
    for number in range(count):
        tree.write("%s/mq/%d/cpu_list" % (where, number), "%d\n" % number)


def nvme(tree, name: str, scheduler: str, hidden: bool = False, hw_queues: int = 0) -> None:
    where = "/sys/block/" + name
    tree.write(where + "/queue/scheduler", scheduler + "\n")
    tree.write(where + "/hidden", "1\n" if hidden else "0\n")
    queues(tree, where, hw_queues)


def multipath(tree, paths) -> None:
    """A native-multipath namespace as a running kernel lays it out: the head nvme0n1 under its
    subsystem (bio-based, a bare ``none``), the paths nvme0cXn1 under their controllers."""
    tree.write(HEAD + "/queue/scheduler", "none\n")
    tree.write(HEAD + "/hidden", "0\n")
    tree.link("/sys/block/nvme0n1", "../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1")
    for controller, (scheduler, hw_queues) in enumerate(paths):
        name = "nvme0c%dn1" % controller
        where = "/sys/devices/pci0000:00/0000:00:0%d.0/nvme/nvme%d/%s" % (controller + 1, controller, name)
        tree.write(where + "/queue/scheduler", scheduler + "\n")
        tree.write(where + "/hidden", "1\n")
        queues(tree, where, hw_queues)
        tree.link("/sys/block/" + name, ".." + where[len("/sys") :])


# -- facts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, nvme, head",
    [
        ("nvme0n1", True, None),
        ("nvme0c1n1", True, "nvme0n1"),
        ("nvme12c3n45", True, "nvme12n45"),
        ("nvme0n1p1", False, None),
        ("nvme0c1n1p2", False, None),
        ("nvmec1n1", False, None),
        ("nvme0cn1", False, None),
        ("sda", False, None),
    ],
)
def test_nvme_names_and_the_head_of_a_path(name, nvme, head):
    device = BlockDevice(name, None, None, (), head is not None)
    assert (device.is_nvme, device.head) == (nvme, head)


def test_block_devices_read_multipath_paths_and_their_hardware_queues(tree):
    multipath(tree, [("[mq-deadline] none", 1), ("[none] mq-deadline", 4)])
    tree.write("/sys/block/sda/queue/scheduler", "[bfq] none\n")
    queues(tree, "/sys/block/sda", 2)  # not NVMe: not listed
    devices = {d.name: d for d in facts_for(tree).get("block_devices")}
    head, first, second = devices["nvme0n1"], devices["nvme0c0n1"], devices["nvme0c1n1"]
    assert (head.hidden, head.scheduler, head.schedulers, head.hw_queues, head.head) == (False, "none", ("none",), None, None)
    assert (first.hidden, first.scheduler, first.hw_queues, first.head) == (True, "mq-deadline", 1, "nvme0n1")
    assert (second.hidden, second.scheduler, second.hw_queues) == (True, "none", 4)
    assert devices["sda"].hw_queues is None


def test_udev_rules_are_ordered_by_the_name_of_a_link_not_its_target(tree):
    tree.write("/usr/share/tuning/10-target.rules", 'KERNEL=="nvme*", ATTR{queue/scheduler}="kyber"\n')
    tree.link("/etc/udev/rules.d/99-zzz-link.rules", "/usr/share/tuning/10-target.rules")
    tree.write("/usr/lib/udev/rules.d/50-vendor.rules", 'KERNEL=="nvme*", ATTR{queue/scheduler}="bfq"\n')
    rules = facts_for(tree).get("udev_scheduler_rules")
    assert [(r.name, r.path, r.value) for r in rules] == [
        ("50-vendor.rules", "/usr/lib/udev/rules.d/50-vendor.rules", "bfq"),
        ("99-zzz-link.rules", "/etc/udev/rules.d/99-zzz-link.rules", "kyber"),
    ]


def test_udev_rules_masked_in_etc_or_hidden_by_a_dot_are_not_read(tree):
    tree.write("/usr/lib/udev/rules.d/99-zzz-vendor.rules", 'KERNEL=="nvme*", ATTR{queue/scheduler}="mq-deadline"\n')
    tree.link("/etc/udev/rules.d/99-zzz-vendor.rules", "/dev/null")
    tree.write("/etc/udev/rules.d/.99-zzz-draft.rules", 'KERNEL=="nvme*", ATTR{queue/scheduler}="bfq"\n')
    tree.write("/run/udev/rules.d/70-runtime.rules", 'KERNEL=="nvme*", ATTR{queue/scheduler}="kyber"\n')
    assert [r.name for r in facts_for(tree).get("udev_scheduler_rules")] == ["70-runtime.rules"]


def test_our_udev_rule_glob_matches_namespaces_and_multipath_paths():
    rule = storage().UDEV_RULE
    ours = SchedulerRule("/etc/udev/rules.d/" + storage().RULES_FILE, 1, "none", rule)
    assert [ours.may_match(n) for n in ("nvme0n1", "nvme0c0n1", "nvme12c3n45", "sda", "nvmex")] == [True, True, True, False, False]
    # Partitions match the glob too; ENV{DEVTYPE}=="disk" is what keeps them out.
    assert ours.may_match("nvme0n1p1") and 'ENV{DEVTYPE}=="disk"' in rule


# -- the rules file name ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "names, expected",
    [
        ([], "60-aidoctor-nvme-scheduler.rules"),
        (["10-a.rules", "60-aidoctor-nvme-scheduler.rule"], "60-aidoctor-nvme-scheduler.rules"),
        (["60-aidoctor-nvme-scheduler.rules"], "99-aidoctor-nvme-scheduler.rules"),  # strictly after
        (["61-ssd.rules"], "99-aidoctor-nvme-scheduler.rules"),
        (["99-ssd.rules"], "99-zz-aidoctor-nvme-scheduler.rules"),
        (["99-zzz-x.rules"], "zz-aidoctor-nvme-scheduler.rules"),
        (["tuning.rules", "70-a.rules"], "zz-aidoctor-nvme-scheduler.rules"),
        (["zz-tuning.rules"], "zz-tuning~aidoctor-nvme-scheduler.rules"),
        (["zzz.rules", "99-a.rules"], "zzz~aidoctor-nvme-scheduler.rules"),
        (["~~~.rules"], "~~~~aidoctor-nvme-scheduler.rules"),
        (["zz_$(x).rules"], "zz_~aidoctor-nvme-scheduler.rules"),  # the unsafe part is not copied
        (["zzé.rules"], "z~aidoctor-nvme-scheduler.rules"),  # é sorts after ~: beat it one place earlier
        (["é.rules"], None),
    ],
)
def test_rules_file_name_sorts_strictly_after_every_other(names, expected):
    name = name_after(names, storage().RULES_FILE)
    assert name == expected
    if name is not None:
        assert name.endswith(".rules")
        # udev sorts by strcmp, i.e. by the bytes of the names.
        assert all(name.encode() > other.encode() for other in names)
        assert all(c.isascii() and (c.isalnum() or c in "._+,=@%~-") for c in name)


def test_our_rule_sorts_after_a_letter_named_rules_file(tree, run):
    minimal_host(tree)
    nvme(tree, "nvme0n1", "none [mq-deadline]")
    tree.write("/etc/udev/rules.d/tuning.rules", 'KERNEL=="nvme*", ATTR{queue/scheduler}="mq-deadline"\n')
    tree.write("/usr/lib/udev/rules.d/zz-vendor.rules", 'KERNEL=="sd*", ATTR{queue/scheduler}="bfq"\n')
    found = finding(run_json(run, tree))
    assert any("sudo tee '/etc/udev/rules.d/zz-vendor~aidoctor-nvme-scheduler.rules'" in c for c in commands(found))


def test_rules_setting_none_do_not_move_our_rule(tree, run):
    # Our own file from an earlier run sets none: re-running the fix rewrites that same file.
    minimal_host(tree)
    nvme(tree, "nvme0n1", "none [mq-deadline]")
    tree.write("/etc/udev/rules.d/60-aidoctor-nvme-scheduler.rules", storage().UDEV_RULE + "\n")
    tree.write("/etc/udev/rules.d/99-none.rules", 'KERNEL=="nvme*", ATTR{queue/scheduler}="none"\n')
    found = finding(run_json(run, tree))
    assert any("sudo tee /etc/udev/rules.d/60-aidoctor-nvme-scheduler.rules" in c for c in commands(found))
    assert "udev rules set a scheduler" not in found["message"]


# -- multipath -------------------------------------------------------------------------------


def test_multipath_paths_are_judged_in_place_of_their_head(tree, run):
    minimal_host(tree)
    multipath(tree, [("[mq-deadline] none", 8), ("[none] mq-deadline", 8)])
    found = finding(run_json(run, tree))
    message = found["message"]
    assert message.startswith("nvme0c0n1 (path of nvme0n1, mq-deadline) uses a kernel I/O scheduler")
    assert "nvme0n1 is native NVMe multipath" in message and "nvme0c1n1" not in message
    assert [e["path"] for e in found["evidence"]] == ["/sys/block/nvme0c0n1/queue/scheduler"]
    cmds = commands(found)
    assert cmds[0] == "echo none | sudo tee /sys/block/nvme0c0n1/queue/scheduler >/dev/null"
    # udev gets no events from hidden paths: the rule writes them on the head's events.
    (rule_command,) = [c for c in cmds if "aidoctor-nvme-scheduler.rules" in c]
    assert "RUN+=" in rule_command and "tee /sys/block/nvme*c*n*/queue/scheduler" in rule_command
    assert found["remediation"][1]["summary"].startswith("Keep none for every NVMe namespace and multipath path")


def test_multipath_with_every_path_on_none_passes(tree, run):
    minimal_host(tree)
    multipath(tree, [("[none] mq-deadline", 8), ("[none] mq-deadline", 8)])
    nvme(tree, "nvme1n1", "[none] mq-deadline")
    result = run_json(run, tree)
    (check,) = result.json["checks"]
    assert check["status"] == "pass"
    assert check["reason"] == "1 NVMe namespace and 2 multipath paths of nvme0n1 on none"


def test_a_head_without_a_scheduler_choice_is_not_judged_by_itself(tree, run):
    # The head's bare "none" says nothing about the paths; unreadable paths leave the check undecided.
    minimal_host(tree)
    multipath(tree, [("[mq-deadline] none", 8)])
    (tree.root / "sys/devices/pci0000:00/0000:00:01.0/nvme/nvme0/nvme0c0n1/queue/scheduler").unlink()
    (check,) = run_json(run, tree).json["checks"]
    assert (check["status"], check["reason"]) == ("skip", "the scheduler of nvme0c0n1 (path of nvme0n1) could not be read")


def test_a_hidden_namespace_that_is_not_a_path_takes_no_block_io(tree, run):
    # core.c hides a namespace the kernel cannot use as a block device (its char device remains).
    minimal_host(tree)
    nvme(tree, "nvme0n1", "[mq-deadline] none", hidden=True)
    (check,) = run_json(run, tree).json["checks"]
    assert (check["status"], check["reason"]) == ("skip", "no NVMe namespaces on this host")


def test_no_multipath_means_no_path_writes_in_the_udev_rule(tree, run):
    minimal_host(tree)
    nvme(tree, "nvme0n1", "none [kyber]", hw_queues=8)
    found = finding(run_json(run, tree))
    assert not any("RUN+=" in c for c in commands(found))
    assert "single hardware queue" not in found["message"] and "multipath" not in found["message"]


# -- the kernel's default for a single hardware queue -----------------------------------------


def test_a_single_hardware_queue_is_named_as_the_kernel_default(tree, run):
    minimal_host(tree)
    nvme(tree, "nvme0n1", "[mq-deadline] none", hw_queues=1)
    nvme(tree, "nvme1n1", "[mq-deadline] none", hw_queues=4)
    found = finding(run_json(run, tree))
    assert "nvme0n1 has a single hardware queue, for which mq-deadline is the kernel's own default." in found["message"]
    assert "nvme1n1 has" not in found["message"]
    assert {"path": "/sys/block/nvme0n1/mq", "value": "1 hardware queue"} in found["evidence"]


def test_a_none_the_kernel_would_not_pick_is_lost_without_a_udev_rule(tree, run):
    minimal_host(tree)
    nvme(tree, "nvme0n1", "[none] mq-deadline kyber", hw_queues=1)  # the kernel's pick would be mq-deadline
    nvme(tree, "nvme1n1", "[none] mq-deadline kyber", hw_queues=8)  # the kernel's own pick
    result = run("--root", tree, "--format", "json", "--only", "storage")
    assert result.statuses()["storage.scheduler"] == "pass"
    (found,) = [f for f in result.json["findings"] if f["rule"] == "storage.scheduler-not-persistent"]
    assert found["message"].startswith("nvme0n1 runs on none, but with a single hardware queue the kernel picks mq-deadline")
    assert any("/etc/udev/rules.d/" in c for c in commands(found))
    tree.write("/etc/udev/rules.d/60-nvme.rules", 'ACTION=="add", KERNEL=="nvme*", ATTR{queue/scheduler}="none"\n')
    kept = run("--root", tree, "--format", "json", "--only", "storage")
    assert kept.statuses()["storage.scheduler-not-persistent"] == "pass"
