"""pci.link-narrowed: PCIe links of NVIDIA GPUs trained to fewer lanes than both ends support,
on small trees (a GPU below a root port, behind a PCIe switch, by design, VMs, images)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gpu_platform import _host, _pci, _statuses

from ai_doctor.facts import Facts
from ai_doctor.facts.gpuplatform import PCIE_WIDTHS, GpuLink, LinkEnd
from ai_doctor.host import Host

RULE = "pci.link-narrowed"
RP, USP, DSP, GPU = "0000:40:01.1", "0000:41:00.0", "0000:42:00.0", "0000:43:00.0"
DSP2, GPU2 = "0000:42:01.0", "0000:44:00.0"


def _folder(tree, address):
    return os.path.realpath(tree.root / "sys/bus/pci/devices" / address)


def _widths(tree, address, current, maximum):
    """Write ``address``'s current_link_width and max_link_width (None: leave it out)."""
    for name, value in (("current_link_width", current), ("max_link_width", maximum)):
        if value is not None:
            with open(os.path.join(_folder(tree, address), name), "w") as out:
                out.write("%s\n" % value)


def _below_root_port(tree, gpu=(16, 16), port=(16, 16)):
    _host(tree)
    _pci(tree, "0000:41:00.0", 0x2330, upstream=(RP,), group=1, group_type="identity")
    _widths(tree, "0000:41:00.0", *gpu)
    _widths(tree, RP, *port)
    return tree


def _behind_switch(tree, gpu=(16, 16), downstream=(16, 16), upstream=(16, 16), root=(16, 16), second=False):
    """A GPU (and with ``second`` another, at x16) behind a PCIe switch below root port RP."""
    _host(tree)
    _pci(tree, GPU, 0x2330, upstream=(RP, USP, DSP), group=1, group_type="identity")
    widths = [(GPU, gpu), (DSP, downstream), (USP, upstream), (RP, root)]
    if second:
        _pci(tree, GPU2, 0x2330, upstream=(RP, USP, DSP2), group=2, group_type="identity")
        widths += [(GPU2, (16, 16)), (DSP2, (16, 16))]
    for address, pair in widths:
        _widths(tree, address, *pair)
    return tree


def _links(tree):
    return Facts(Host(str(tree.root))).get("gpu_links")


def test_a_gpu_trained_at_x8_of_x16_is_found_with_the_files_that_say_so(tree, run):
    _below_root_port(tree, gpu=(8, 16), port=(8, 16))
    _checks, findings = _statuses(run, tree)
    found = findings[RULE]
    assert found["severity"] == "medium"
    assert (
        "GPU 0000:41:00.0's own link, to the port above it (0000:40:01.1), runs at x8, though both ends support x16: half of its "
        "bandwidth" in found["message"]
    )
    assert "Every copy between host memory and a GPU crosses the links on its path" in found["message"]
    assert "confirm it while the GPU is busy" in found["message"]
    shown = {(e["path"], e["value"]) for e in found["evidence"]}
    gpu_folder = "/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0"
    assert (gpu_folder + "/current_link_width", "8") in shown and (gpu_folder + "/max_link_width", "16") in shown
    assert ("/sys/devices/pci0000:40/0000:40:01.1/current_link_width", "8") in shown
    assert ("/sys/devices/pci0000:40/0000:40:01.1/max_link_width", "16") in shown
    # Hardware: words to act on at the machine, nothing the fix script would run.
    steps = found["remediation"]
    assert len(steps) == 2 and not any(step["commands"] for step in steps)
    assert "nvidia-smi --query-gpu=" in steps[0]["summary"] and "`sudo lspci -vv -s 0000:41:00.0`" in steps[0]["summary"]
    assert not steps[0]["needs_root"]  # nvidia-smi reads it as any user
    assert "reseat the GPU and its riser or cable" in steps[1]["summary"]


def test_a_gpu_at_full_width_passes_whatever_its_idle_speed(tree, run):
    _below_root_port(tree)
    with open(os.path.join(_folder(tree, "0000:41:00.0"), "current_link_speed"), "w") as out:
        out.write("2.5 GT/s PCIe\n")
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert checks[RULE]["reason"] == (
        "every PCIe link between the NVIDIA GPUs and the root complex runs at the width both its ends support (x16)"
    )


def test_a_slot_with_eight_lanes_is_the_board_not_a_fault(tree, run):
    _below_root_port(tree, gpu=(8, 16), port=(8, 8))
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert checks[RULE]["reason"].endswith(
        "0000:41:00.0 to 0000:40:01.1 runs at x8, all the lanes 0000:40:01.1 has (the port's own maximum: the slot's wiring, or a "
        "lane split set in the firmware), not a link that trained narrow"
    )


def test_an_x8_card_in_an_x16_slot_is_the_card(tree, run):
    _below_root_port(tree, gpu=(8, 8), port=(8, 16))
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert "runs at x8, all the lanes 0000:41:00.0 has (the card's design), not a link that trained narrow" in checks[RULE]["reason"]


def test_a_gpu_link_at_a_quarter_or_less_is_high(tree, run):
    _below_root_port(tree, gpu=(1, 16), port=(1, 16))
    _checks, findings = _statuses(run, tree)
    assert findings[RULE]["severity"] == "high" and "a sixteenth of its bandwidth" in findings[RULE]["message"]


def test_a_narrowed_switch_uplink_is_one_link_for_every_gpu_behind_it(tree, run):
    # The switch's downstream ports lead to the GPUs at x16; its upstream port trained at x4.
    _behind_switch(tree, upstream=(4, 16), root=(4, 16), second=True)
    _checks, findings = _statuses(run, tree)
    found = findings[RULE]
    assert found["message"].startswith(
        "A PCIe link of an NVIDIA GPU is narrower than it can be: the uplink of the PCIe switch above GPUs %s, %s (from its port %s "
        "to %s) runs at x4, though both ends support x16: a quarter of its bandwidth. " % (GPU, GPU2, USP, RP)
    )
    # A quarter of the lanes: high.
    assert found["severity"] == "high"
    assert found["message"].count(USP) == 1 and "Also:" not in found["message"]
    # What to look at is the switch's uplink: lspci on its upstream port; the GPUs' own links are fine.
    steps = found["remediation"]
    assert "`sudo lspci -vv -s %s`" % USP in steps[0]["summary"] and "nvidia-smi" not in steps[0]["summary"]
    assert steps[0]["needs_root"]
    assert "the switch's uplink (from %s up to %s)" % (USP, RP) in steps[1]["summary"] and "reseat the GPU" not in steps[1]["summary"]


def test_two_narrowed_links_each_say_their_share(tree, run):
    _behind_switch(tree, gpu=(8, 16), downstream=(8, 16), upstream=(12, 16), root=(12, 16))
    _checks, findings = _statuses(run, tree)
    message = findings[RULE]["message"]
    assert message.startswith("2 PCIe links of NVIDIA GPUs are narrower than they can be: GPU %s's own link" % GPU)
    assert "runs at x8, though both ends support x16: half of its bandwidth" in message
    assert "runs at x12, though both ends support x16: three quarters of its bandwidth" in message
    assert findings[RULE]["severity"] == "medium"


def test_a_switch_port_with_fewer_lanes_than_the_gpu_is_by_design(tree, run):
    _behind_switch(tree, gpu=(8, 16), downstream=(8, 8))
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert "%s to %s runs at x8, all the lanes %s has (the port's own maximum" % (GPU, DSP, DSP) in checks[RULE]["reason"]


def test_a_climb_that_stops_below_the_root_port_says_so_once_for_the_gpus_behind_it(tree, run):
    _behind_switch(tree, upstream=(None, None), root=(4, 16), second=True)
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    reason = checks[RULE]["reason"]
    assert reason.startswith("every PCIe link of the NVIDIA GPUs that could be judged runs at the width both its ends support (x16)")
    assert "the links above %s, %s, from %s up, were not read" % (GPU, GPU2, USP) in reason and reason.count(USP) == 2


@pytest.mark.parametrize(
    "gpu, port, why",
    [
        ((8, 16), (16, 16), "its two ends read x8 and x16"),
        ((0, 16), (0, 16), "0000:41:00.0 reads width 0, which no trained link has (a link that is down)"),
        ((63, 16), (63, 16), "0000:41:00.0 reads width 63, which no trained link has (a device that does not answer)"),
        ((16, 255), (16, 255), "the most lanes 0000:41:00.0 and 0000:40:01.1 support is not known"),
        ((16, 16), (63, 16), "0000:40:01.1 reads width 63, which no trained link has (a device that does not answer)"),
        ((8, 16), (8, None), "the most lanes 0000:40:01.1 supports is not known"),
        ((8, 16), (None, 16), "the width of 0000:40:01.1 was not read"),
    ],
)
def test_links_that_cannot_be_judged_say_why(tree, run, gpu, port, why):
    _below_root_port(tree, gpu=gpu, port=port)
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert checks[RULE]["status"] == "skip"
    assert (
        checks[RULE]["reason"]
        == "no PCIe link of the NVIDIA GPUs could be judged: the link from 0000:41:00.0 to 0000:40:01.1 is not judged: " + why
    )


def test_a_kernel_without_link_files_skips(tree, run):
    _below_root_port(tree, gpu=(None, None), port=(None, None))
    checks, _findings = _statuses(run, tree)
    assert checks[RULE]["status"] == "skip"
    assert "0000:41:00.0 has no link width to read, or no port above" in checks[RULE]["reason"]


def test_a_vm_is_not_judged(tree, run):
    _below_root_port(tree, gpu=(8, 16), port=(8, 16))
    tree.write("/sys/class/dmi/id/product_name", "Standard PC (Q35 + ICH9, 2009)\n")
    tree.write("/sys/class/dmi/id/sys_vendor", "QEMU\n")
    checks, findings = _statuses(run, tree)
    assert RULE not in findings and "virtual machine" in checks[RULE]["reason"]


def test_amd_gpus_are_not_judged(tree, run):
    _host(tree)
    _pci(tree, "0000:41:00.0", 0x74A1, upstream=(RP,), group=1, group_type="identity")
    tree.write("/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0/vendor", "0x1002\n")
    _widths(tree, "0000:41:00.0", 8, 16)
    _widths(tree, RP, 8, 16)
    checks, findings = _statuses(run, tree)
    assert RULE not in findings
    assert checks[RULE]["reason"] == "no NVIDIA GPU on the PCI bus; AMD GPUs are not judged (their power management narrows idle links)"


def test_a_bus_not_read_skips_and_gpus_only_the_driver_lists_are_not_judged(tree, run):
    _host(tree)
    tree.write("/proc/driver/nvidia/gpus/0000:41:00.0/information", "Model: H100\n")
    checks, _findings = _statuses(run, tree)
    assert checks[RULE]["status"] == "skip"
    assert checks[RULE]["reason"] == "the PCI bus was not read: PCI devices /sys/bus/pci/devices: not present"
    # The bus read (an Intel NIC on it), and no NVIDIA function there.
    tree.write("/sys/devices/pci0000:00/0000:00:19.0/vendor", "0x8086\n")
    tree.write("/sys/devices/pci0000:00/0000:00:19.0/device", "0x15b8\n")
    tree.link("/sys/bus/pci/devices/0000:00:19.0", "../../../devices/pci0000:00/0000:00:19.0")
    checks, _findings = _statuses(run, tree)
    assert checks[RULE]["reason"] == "no NVIDIA GPU was found on the PCI bus, though the NVIDIA driver lists 1 (/proc/driver/nvidia/gpus)"


def test_an_image_skips(tree, run):
    # No /proc: an image, whatever /sys holds.
    tree.write("/etc/os-release", "ID=ubuntu\nID_LIKE=debian\n")
    _pci(tree, "0000:41:00.0", 0x2330, upstream=(RP,), group=1, group_type="identity")
    _widths(tree, "0000:41:00.0", 8, 16)
    _widths(tree, RP, 8, 16)
    checks, _findings = _statuses(run, tree)
    assert checks[RULE]["status"] == "skip" and "image" in checks[RULE]["reason"]


def test_the_fact_pairs_the_folders_from_the_gpu_up_and_lists_a_shared_link_once(tree):
    _behind_switch(tree, upstream=(4, 16), root=(4, 16), second=True)
    links = _links(tree)
    assert [(link.gpus, link.lower.address, link.upper.address) for link in links.links] == [
        ((GPU,), GPU, DSP),
        ((GPU, GPU2), USP, RP),
        ((GPU2,), GPU2, DSP2),
    ]
    assert links.unplaced == links.unlinked == links.stopped == ()


def test_a_virtual_function_is_left_to_its_physical_function(tree):
    _below_root_port(tree, gpu=(0, 0), port=(16, 16))
    tree.link("/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0/physfn", "../0000:41:00.0")
    links = _links(tree)
    assert links.links == links.unlinked == ()


def test_a_bus_link_that_leads_outside_sys_devices_places_nothing(tree, run):
    _host(tree)
    folder = "/etc/pci0000:40/0000:40:01.1/0000:41:00.0"
    for name, text in (
        ("vendor", "0x10de"),
        ("device", "0x2330"),
        ("class", "0x030200"),
        ("current_link_width", "8"),
        ("max_link_width", "16"),
    ):
        tree.write("%s/%s" % (folder, name), text + "\n")
    for name, text in (("current_link_width", "8"), ("max_link_width", "16")):
        tree.write("/etc/pci0000:40/0000:40:01.1/" + name, text + "\n")
    tree.link("/sys/bus/pci/devices/0000:41:00.0", os.path.relpath(folder, "/sys/bus/pci/devices"))
    assert _links(tree).unplaced == ("0000:41:00.0",)
    checks, findings = _statuses(run, tree)
    assert RULE not in findings and "where 0000:41:00.0 sits in the PCI tree was not read" in checks[RULE]["reason"]


@pytest.mark.parametrize("text", ["", "x16", "16.0", "²", "٨", "99999", "-8", " "])
def test_width_files_that_are_not_plain_numbers_are_not_read(tree, text):
    _below_root_port(tree)
    _widths(tree, "0000:41:00.0", text, text)
    links = _links(tree)
    assert links.links == () and links.unlinked == ("0000:41:00.0",)


@settings(max_examples=300)
@given(st.tuples(*[st.one_of(st.none(), st.integers(0, 300))] * 4))
def test_narrowed_only_when_both_ends_agree_on_a_width_and_both_support_more(widths):
    lower_width, lower_max, upper_width, upper_max = widths
    link = GpuLink(("g",), LinkEnd("g", "/g", lower_width, lower_max), LinkEnd("p", "/p", upper_width, upper_max))
    widths_ok = lower_width in PCIE_WIDTHS and lower_max in PCIE_WIDTHS and upper_max in PCIE_WIDTHS
    expected = widths_ok and lower_width == upper_width and lower_width < min(lower_max, upper_max)
    assert link.narrowed == expected
    assert (link.unjudged is None) == (widths_ok and lower_width == upper_width)
