"""pci.link-narrowed: PCIe links of NVIDIA GPUs trained to fewer lanes than both ends support,
on small trees (a GPU below a root port, behind a PCIe switch, by design, VMs, images)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gpu_platform import _host, _pci, _statuses

from ai_doctor.facts import Facts
from ai_doctor.facts.gpuplatform import GpuLink, LinkEnd
from ai_doctor.host import Host

RULE = "pci.link-narrowed"
RP, USP, DSP, GPU = "0000:40:01.1", "0000:41:00.0", "0000:42:00.0", "0000:43:00.0"


def _widths(tree, address, current, maximum):
    """Write ``address``'s current_link_width and max_link_width (None: leave it out)."""
    folder = os.path.realpath(tree.root / "sys/bus/pci/devices" / address)
    for name, value in (("current_link_width", current), ("max_link_width", maximum)):
        if value is not None:
            with open(os.path.join(folder, name), "w") as out:
                out.write("%s\n" % value)


def _below_root_port(tree, gpu=(16, 16), port=(16, 16)):
    _host(tree)
    _pci(tree, "0000:41:00.0", 0x2330, upstream=(RP,), group=1, group_type="identity")
    _widths(tree, "0000:41:00.0", *gpu)
    _widths(tree, RP, *port)
    return tree


def _behind_switch(tree, gpu=(16, 16), downstream=(16, 16), upstream=(16, 16), root=(16, 16)):
    _host(tree)
    _pci(tree, GPU, 0x2330, upstream=(RP, USP, DSP), group=1, group_type="identity")
    for address, widths in ((GPU, gpu), (DSP, downstream), (USP, upstream), (RP, root)):
        _widths(tree, address, *widths)
    return tree


def test_a_gpu_trained_at_x8_of_x16_is_found_with_the_files_that_say_so(tree, run):
    _below_root_port(tree, gpu=(8, 16), port=(8, 16))
    checks, findings = _statuses(run, tree)
    found = findings[RULE]
    assert found["severity"] == "medium"
    assert "GPU 0000:41:00.0's own link (0000:41:00.0 to 0000:40:01.1) runs at x8, though both ends support x16" in found["message"]
    assert "half the bandwidth" in found["message"] and "confirm it while the GPU is busy" in found["message"]
    shown = {(e["path"], e["value"]) for e in found["evidence"]}
    gpu_folder = "/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0"
    assert (gpu_folder + "/current_link_width", "8") in shown and (gpu_folder + "/max_link_width", "16") in shown
    assert ("/sys/devices/pci0000:40/0000:40:01.1/max_link_width", "16") in shown
    # Hardware: words to act on at the machine, nothing the fix script would run.
    steps = found["remediation"]
    assert len(steps) == 2 and not any(step["commands"] for step in steps)
    assert "lspci -vv -s 0000:41:00.0" in steps[0]["summary"] and "reseat" in steps[1]["summary"]


def test_a_gpu_at_full_width_passes_whatever_its_idle_speed(tree, run):
    _below_root_port(tree)
    folder = os.path.realpath(tree.root / "sys/bus/pci/devices/0000:41:00.0")
    with open(os.path.join(folder, "current_link_speed"), "w") as out:
        out.write("2.5 GT/s PCIe\n")
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert checks[RULE]["status"] == "pass" and "(x16)" in checks[RULE]["reason"]


def test_a_slot_with_eight_lanes_is_the_board_not_a_fault(tree, run):
    _below_root_port(tree, gpu=(8, 16), port=(8, 8))
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert "0000:41:00.0 runs at x8 because 0000:40:01.1 supports only x8" in checks[RULE]["reason"]


def test_a_narrowed_link_above_a_pcie_switch_is_found_and_the_switch_inside_is_not_a_link(tree, run):
    # The switch's downstream port leads to the GPU at x16; its upstream port trained at x4.
    _behind_switch(tree, upstream=(4, 16), root=(4, 16))
    _checks, findings = _statuses(run, tree)
    found = findings[RULE]
    assert (
        "the link above the PCIe switch GPU %s sits behind (%s to %s) runs at x4, though both ends support x16" % (GPU, USP, RP)
        in (found["message"])
    )
    assert "a quarter of the bandwidth" in found["message"]
    assert "Also:" not in found["message"]


def test_a_switch_port_with_fewer_lanes_than_the_gpu_is_by_design(tree, run):
    _behind_switch(tree, gpu=(8, 16), downstream=(8, 8))
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert "%s runs at x8 because %s supports only x8" % (GPU, DSP) in checks[RULE]["reason"]


def test_ends_that_disagree_are_not_judged(tree, run):
    _below_root_port(tree, gpu=(8, 16), port=(16, 16))
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert checks[RULE]["status"] == "skip"
    assert "0000:41:00.0 to 0000:40:01.1 (the two ends read x8 and x16)" in checks[RULE]["reason"]


def test_a_kernel_without_link_files_skips(tree, run):
    _below_root_port(tree, gpu=(None, None), port=(None, None))
    checks, _findings = _statuses(run, tree)
    assert checks[RULE]["status"] == "skip"
    assert "0000:41:00.0 has no link width to read, or no port above" in checks[RULE]["reason"]


def test_vm_amd_and_no_gpu_are_not_judged(tree, run):
    _below_root_port(tree, gpu=(8, 16), port=(8, 16))
    tree.write("/sys/class/dmi/id/product_name", "Standard PC (Q35 + ICH9, 2009)\n")
    tree.write("/sys/class/dmi/id/sys_vendor", "QEMU\n")
    checks, findings = _statuses(run, tree)
    assert RULE not in findings and "virtual machine" in checks[RULE]["reason"]


def test_amd_gpus_are_not_judged(tree, run):
    _host(tree)
    _pci(tree, "0000:41:00.0", 0x74A1, upstream=(RP,), group=1, group_type="identity")
    folder = os.path.realpath(tree.root / "sys/bus/pci/devices/0000:41:00.0")
    with open(os.path.join(folder, "vendor"), "w") as out:
        out.write("0x1002\n")
    _widths(tree, "0000:41:00.0", 8, 16)
    _widths(tree, RP, 8, 16)
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert "no NVIDIA GPU" in checks[RULE]["reason"] and "AMD GPUs are not judged" in checks[RULE]["reason"]


def test_an_image_skips(tree, run):
    # No /proc: an image, whatever /sys holds.
    tree.write("/etc/os-release", "ID=ubuntu\nID_LIKE=debian\n")
    _pci(tree, "0000:41:00.0", 0x2330, upstream=(RP,), group=1, group_type="identity")
    _widths(tree, "0000:41:00.0", 8, 16)
    _widths(tree, RP, 8, 16)
    checks, _findings = _statuses(run, tree)
    assert checks[RULE]["status"] == "skip" and "image" in checks[RULE]["reason"]


def test_the_fact_pairs_the_folders_from_the_gpu_up(tree):
    _behind_switch(tree, upstream=(4, 16), root=(4, 16))
    links = Facts(Host(str(tree.root))).get("gpu_links")
    assert [(link.lower.address, link.upper.address) for link in links.links] == [(GPU, DSP), (USP, RP)]
    assert links.unplaced == () and links.unlinked == ()


@pytest.mark.parametrize("text", ["", "x16", "16.0", "²", "٨", "99999", "-8", " "])
def test_width_files_that_are_not_plain_numbers_are_not_read(tree, text):
    _below_root_port(tree)
    _widths(tree, "0000:41:00.0", text, text)
    links = Facts(Host(str(tree.root))).get("gpu_links")
    assert links.links == () and links.unlinked == ("0000:41:00.0",)


@settings(max_examples=200)
@given(st.tuples(*[st.one_of(st.none(), st.integers(0, 32))] * 4))
def test_narrowed_only_when_both_ends_agree_and_both_support_more(widths):
    lower_width, lower_max, upper_width, upper_max = widths
    link = GpuLink("g", LinkEnd("g", "/g", lower_width, lower_max), LinkEnd("p", "/p", upper_width, upper_max))
    expected = None not in widths and lower_width == upper_width and 0 < lower_width < min(lower_max, upper_max)
    assert link.narrowed == expected
