"""The host overview: the facts a support engineer asks for first, read from fixture trees,
shown in every format, never guessed, and replayed from a snapshot unchanged."""

from __future__ import annotations

import re

import pytest

from ai_doctor.facts import PROVIDERS
from ai_doctor.facts.cpuinfo import count_cpus, parse_model
from ai_doctor.overview import Cpu, HugePages, HugePool, Overcommit, Overview, Virtualization, rows

from conftest import fixture_root

GPU = fixture_root("gpu-healthy")
CONTAINER = fixture_root("container-cgroup-64g")
NVME = fixture_root("nvme-mq-deadline")
HGX = fixture_root("gpuplat-hgx-fm-running")
HOSTILE = "<script>alert(1)</script>|*x*"


def facts_of(run, root, *args):
    result = run("--root", root, *args, "--format", "json")
    return result.json["facts"]


# -- values read from fixtures ------------------------------------------------------------------


def test_a_gpu_server_shows_its_cpus_memory_driver_and_cuda(run):
    facts = facts_of(run, GPU, "--model-size", "140G")
    assert facts["cpu"] == {"model": None, "count": 64, "numa_nodes": 2}
    assert facts["unknown"]["cpu.model"] == "cannot read /proc/cpuinfo: not present"
    assert facts["memory"] == {"total": 2113658880 << 10, "available": 2051234816 << 10, "swap_total": 0, "swap_free": 0}
    assert facts["hugepages"] == {"supported": True, "default_size": 2 << 20, "pools": [{"page_size": 2 << 20, "total": 0, "free": 0}]}
    assert facts["thp"] == "madvise"
    assert facts["overcommit"] == {"mode": 0, "ratio": 50, "kbytes": 0}
    assert facts["nvidia_driver"] == {"loaded": "550.127.05", "libraries": ["550.127.05"]}
    assert facts["cuda"] == [{"version": "12.4.1", "major": None, "where": "/usr/local/cuda-12.4"}]
    assert facts["cmdline"]["source"] == "/proc/cmdline" and "transparent_hugepage=madvise" in facts["cmdline"]["text"]
    # The tree has no /sys/bus/pci: the GPUs are unknown, with the reason, not "none".
    assert facts["gpus"] is None and "/sys/bus/pci/devices" in facts["unknown"]["gpus"]


def test_gpus_on_the_bus_are_named_from_pci_ids(run):
    facts = facts_of(run, HGX)
    devices = facts["gpus"]["devices"]
    assert [(d["vendor"], d["ids"], d["name"]) for d in devices] == [("nvidia", "10de:2330", "GH100 [H100 SXM5 80GB]")] * 2
    assert facts["gpus"]["usable"] == 2
    assert facts["nvidia_driver"]["loaded"] == "550.127.05"


def test_a_container_shows_the_cgroup_limit_that_applies(run):
    facts = facts_of(run, CONTAINER, "--model-size", "140G")
    assert facts["cgroup_memory"] == {"version": "v2", "cgroup": "/", "limit": 64 << 30, "path": "/sys/fs/cgroup/memory.max"}
    assert facts["virtualization"]["container"] is True and facts["virtualization"]["runtime"] == "docker"
    assert facts["cpu"]["count"] == 16 and facts["memory"]["total"] == 512 << 30
    assert facts["disks"] == [{"name": "nvme0n1", "scheduler": "none", "path_of": None}]


def test_disks_show_their_schedulers_multipath_paths_included(run):
    facts = facts_of(run, NVME)
    schedulers = {d["name"]: (d["scheduler"], d["path_of"]) for d in facts["disks"]}
    assert schedulers["nvme0n1"] == ("mq-deadline", None) and schedulers["nvme2n1"] == ("none", None)
    assert schedulers["nvme3c3n1"] == ("mq-deadline", "nvme3n1")
    assert schedulers["sda"] == ("mq-deadline", None)
    assert facts["cpu"]["count"] == 8


def test_cpu_model_from_cpuinfo_and_the_vm_sign(run):
    facts = facts_of(run, fixture_root("debian-tuned-auto"))
    assert facts["cpu"]["model"] == "AMD EPYC 7443 24-Core Processor" and facts["cpu"]["count"] == 4
    assert facts["virtualization"]["vm"] is False and facts["virtualization"]["vm_sign"] == "/proc/cpuinfo: flags lack hypervisor"
    arm = facts_of(run, fixture_root("debian-tuned-thunderx"))
    assert arm["cpu"]["model"] == "CPU implementer 0x43, part 0x0af"


def test_an_image_says_what_it_cannot_know(run):
    facts = facts_of(run, fixture_root("image-ubuntu-clean"))
    for key in ("memory", "hugepages", "thp", "overcommit", "cgroup_memory", "gpus", "disks"):
        assert facts[key] is None and "an image, not a running system" in facts["unknown"][key], key
    assert facts["cpu"] == {"model": None, "count": None, "numa_nodes": None}
    # The line its boot loader gives the kernel, and where it was read.
    assert facts["cmdline"]["source"] == "/etc/default/grub" and "transparent_hugepage=madvise" in facts["cmdline"]["text"]


def test_every_unknown_value_has_its_reason(run):
    for root in (GPU, CONTAINER, NVME, fixture_root("image-ubuntu-clean")):
        facts = facts_of(run, root)
        for key, value in facts.items():
            if value is None:
                assert facts["unknown"].get(key), (root, key)


# -- in every format ------------------------------------------------------------------------------


def test_text_shows_the_overview_under_verbose_only(run):
    quiet = run("--root", CONTAINER, "--model-size", "8G").out
    loud = run("--root", CONTAINER, "--model-size", "8G", "-v").out
    assert "Host:" not in quiet
    block = loud.split("Host:\n", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"^  CPU +16 CPUs, model unknown \(cannot read /proc/cpuinfo: not present\)$", block, re.M)
    assert re.search(r"^  Cgroup memory +64\.0 GiB \(/sys/fs/cgroup/memory\.max, cgroup v2 /\)$", block, re.M)
    assert re.search(r"^  Virtualization +container \(docker\)", block, re.M)
    assert re.search(r"^  Disks +nvme0n1: none$", block, re.M)
    # It comes after the header, before the findings.
    assert loud.index("Model: ") < loud.index("Host:") < loud.index("[")


def test_html_has_the_overview_table_under_the_header(run):
    page = run("--root", HGX, "--model-size", "140G", "--format", "html").out
    table = page.split('<section class="overview">', 1)[1].split("</section>", 1)[0]
    cells = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td>(.*?)</td></tr>', table))
    plain = {label: re.sub(r"<wbr>", "", words) for label, words in cells.items()}
    assert plain["GPUs"] == "2 × NVIDIA GH100 [H100 SXM5 80GB] (10de:2330, no driver bound)"
    assert plain["NVIDIA driver"] == "550.127.05 loaded; libraries 550.127.05"
    assert plain["CPU"].startswith("64 CPUs") and plain["Memory"].startswith("2.0 TiB total")
    assert page.index("</header>") < page.index('<section class="overview">') < page.index("No findings")


def test_markdown_lists_the_overview(run):
    out = run("--root", CONTAINER, "--format", "markdown").out
    assert "## Host\n" in out and "- **Cgroup memory:** 64.0 GiB (/sys/fs/cgroup/memory.max, cgroup v2 /)" in out


def hostile_tree(tree):
    # No /etc: a running system's /proc and /sys only (no fix proof to run over it).
    tree.write("/proc/meminfo", "MemTotal: 1048576 kB\nMemAvailable: 524288 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n")
    tree.write("/proc/sys/kernel/hostname", "h\n")
    tree.write("/proc/cpuinfo", "processor\t: 0\nmodel name\t: %s\x1b[31m\n\n" % HOSTILE)
    tree.write("/proc/cmdline", "root=/dev/sda1 x=%s\n" % HOSTILE)
    tree.write("/sys/devices/system/cpu/online", "0-3\n")
    return tree


def test_host_text_in_the_overview_is_escaped_everywhere(run, tree):
    hostile_tree(tree)
    page = run("--root", tree, "--format", "html").out.replace("<wbr>", "")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "\x1b" not in page
    markdown = run("--root", tree, "--format", "markdown").out
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown and "\x1b" not in markdown
    text = run("--root", tree, "-v").out
    assert HOSTILE + "\\x1b[31m" in text and "\x1b" not in text
    assert facts_of(run, tree)["cpu"]["model"] == HOSTILE + "\x1b[31m"


def test_a_fact_that_fails_is_unknown_and_the_report_goes_on(run, tree, monkeypatch):
    hostile_tree(tree)

    def broken(host, facts):
        raise ValueError("odd cpuinfo")

    monkeypatch.setitem(PROVIDERS, "cpus", broken)
    result = run("--root", tree, "--format", "json")
    assert result.code == 0
    facts = result.json["facts"]
    assert facts["cpu"] == {"model": None, "count": None, "numa_nodes": None}
    assert facts["unknown"]["cpu"] == "reading cpus failed: ValueError: odd cpuinfo"


# -- a snapshot replays it ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpuplat-hgx-fm-running", "container-cgroup-64g", "debian-tuned-auto"])
def test_a_snapshot_replays_the_overview(run, tmp_path, name):
    destination = tmp_path / "snap"
    assert run("snapshot", "--root", fixture_root(name), "--dir", "-o", destination).code == 0
    direct = facts_of(run, fixture_root(name), "--model-size", "140G")
    replayed = facts_of(run, destination, "--model-size", "140G")
    assert replayed == direct and direct["memory"]["total"] and direct["cpu"]["count"]


# -- the parsers and the words ---------------------------------------------------------------------


def test_cpu_lists_are_counted_without_expanding_them():
    assert count_cpus("0-63\n") == 64
    assert count_cpus("0-3,8,2-5") == 7
    assert count_cpus("0-3,0-3,x,5-2,") == 4
    assert count_cpus("0-18446744073709551615," * 400) == 18446744073709551616
    assert count_cpus("") == 0


def test_the_model_comes_from_the_first_cpu_only():
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n\n"
    assert parse_model(text + "processor\t: 1\nmodel name\t: other\n") == "Intel(R) Xeon(R) Platinum 8480+"
    assert parse_model("processor\t: 0\ncpu\t\t: POWER9 (raw), altivec supported\n") == "POWER9 (raw), altivec supported"
    assert parse_model("processor\t: 0\nflags\t: fpu\n") is None


def _view(**changes):
    view = Overview(
        cpu=Cpu("EPYC", 2, 1),
        memory=None,
        hugepages=HugePages(True, 2 << 20, (HugePool(2 << 20, 1024, 1000), HugePool(1 << 30, 8, 8))),
        thp="never",
        overcommit=Overcommit(2, 95, 0),
        cgroup_memory=None,
        virtualization=Virtualization(False, None, True, "/sys/class/dmi/id/sys_vendor: QEMU"),
        gpus=None,
        nvidia_driver=None,
        cuda=(),
        disks=(),
        cmdline=None,
        unknown=(("memory", "cannot read /proc/meminfo: denied"),),
    )
    return dict(rows(view._replace(**changes)))


def test_words_for_pools_strict_overcommit_and_unknowns():
    words = _view()
    assert words["Huge pages"] == "2 MiB (default): 1024 pages, 1000 free; 1 GiB: 8 pages, 8 free"
    assert words["Overcommit"] == "2 (strict, overcommit_ratio 95)"
    assert words["Memory"] == "unknown (cannot read /proc/meminfo: denied)"
    assert words["Cgroup memory"] == "unknown" and words["Disks"] == "none found"
    assert words["Virtualization"] == "no container; virtual machine (/sys/class/dmi/id/sys_vendor: QEMU)"
    # No GPU and no driver: no driver or CUDA line to say so.
    assert "NVIDIA driver" not in words and "CUDA" not in words
    assert _view(overcommit=Overcommit(2, 50, 1048576))["Overcommit"] == "2 (strict, overcommit_kbytes 1048576)"


def test_a_report_without_an_overview_renders_without_one():
    assert rows(None) == ()
