"""Kernel config from wherever it is: files, the configs module, the kernel image; and a
config that belongs to another kernel."""

from __future__ import annotations

import gzip
import lzma
import os

import pytest
from elfbuild import ikconfig_object
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ai_doctor.facts import Facts
from ai_doctor.facts.kconfig import KernelConfig, describes, parse_kconfig
from ai_doctor.host import Host

from conftest import minimal_host

REL = "6.8.0-45-generic"
CONFIG = "#\n# Linux/x86 %s Kernel Configuration\n#\nCONFIG_HUGETLBFS=y\nCONFIG_HUGETLB_PAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\n" % REL


def _no_config_file(tree):
    minimal_host(tree, release=REL)
    os.remove(str(tree.root / "boot" / ("config-" + REL)))


@pytest.mark.parametrize("compress", [None, "xz"])
def test_config_from_the_configs_module(tree, run, compress):
    _no_config_file(tree)
    target = tree.root / "lib/modules" / REL / "kernel/kernel/configs.ko"
    ikconfig_object(target, CONFIG)
    if compress:
        target.with_name("configs.ko.xz").write_bytes(lzma.compress(target.read_bytes()))
        target.unlink()
    config = Facts(Host(str(tree))).get("kernel_config")
    assert config.embedded and config.source.startswith("/lib/modules/%s/kernel/kernel/configs.ko" % REL)
    assert config.get("HUGETLBFS") == "y"
    checks = {c["rule"]: c for c in run("--root", tree, "--format", "json", "-v").json["checks"]}
    assert checks["kernel.config-missing"]["reason"] == "read the config embedded in %s" % config.source


def test_config_from_a_compressed_kernel_image(tree):
    _no_config_file(tree)
    kernel = os.urandom(200000) + b"IKCFG_ST" + gzip.compress(CONFIG.encode()) + b"IKCFG_ED" + os.urandom(200000)
    # A bzImage: setup code, then the payload compressed with one of the kernel's methods.
    tree.write("/boot/vmlinuz-" + REL, b"MZ" + bytes(16384) + lzma.compress(kernel) + bytes(512))
    config = Facts(Host(str(tree))).get("kernel_config")
    assert config and config.embedded and config.source == "/boot/vmlinuz-" + REL


def test_an_image_without_ikconfig_says_so(tree):
    _no_config_file(tree)
    tree.write("/boot/vmlinuz-" + REL, b"MZ" + bytes(4096) + gzip.compress(os.urandom(100000)))
    config = Facts(Host(str(tree))).get("kernel_config")
    assert not config
    assert ("/boot/vmlinuz-" + REL, "no embedded kernel config in the image (CONFIG_IKCONFIG not built in)") in config.tried


def test_only_another_kernels_config(tree, run):
    _no_config_file(tree)
    tree.write("/boot/config-6.8.0-40-generic", CONFIG.replace(REL, "6.8.0-40-generic"))
    result = run("--root", tree, "--format", "json", "-v")
    assert result.findings()["kernel.config-mismatch"] == "low"
    assert result.statuses()["kernel.config-missing"] == "skip"


def test_a_config_whose_header_names_another_release(tree, run):
    minimal_host(tree, release=REL)
    tree.write("/boot/config-" + REL, CONFIG.replace(REL, "6.5.0-41-generic"))
    assert run("--root", tree, "--format", "json").findings()["kernel.config-mismatch"] == "medium"
    tree.write("/boot/config-" + REL, CONFIG)
    assert "kernel.config-mismatch" not in run("--root", tree, "--format", "json").findings()


@pytest.mark.parametrize(
    "header, release, same",
    [
        ("6.12.0-55.40.1.el10_0.x86_64", "6.12.0-55.40.1.el10_0.x86_64", True),
        ("6.12.0-55.40.1.el10_0.x86_64", "6.12.0-60.el10.x86_64", False),
        ("6.1.192", "6.1.0-18-amd64", True),  # Debian names the upstream version only
        ("6.1.192", "6.12.0-1-amd64", False),
        ("5.4.0-26-generic", "5.4.0-26-generic", True),
        ("6.14.0", "6.14.0-15-generic", True),
        ("6.10.5-arch1", "6.10.5-arch1-1", True),  # the header is KERNELVERSION, the release adds the local version
        ("6.10.0-rc3", "6.10.0-rc3-custom", True),
        ("6.1.5-arch1", "6.10.5-arch1-1", False),
    ],
)
def test_describes(header, release, same):
    assert describes(header, release) is same


def test_a_kernel_built_without_thp(tree, run):
    minimal_host(tree, release=REL)
    tree.write("/boot/config-" + REL, CONFIG.replace("CONFIG_TRANSPARENT_HUGEPAGE=y", "# CONFIG_TRANSPARENT_HUGEPAGE is not set"))
    os.remove(str(tree.root / "sys/kernel/mm/transparent_hugepage/enabled"))
    result = run("--root", tree, "--format", "json", "-v")
    assert result.findings()["kernel.thp-missing"] == "low"
    assert result.statuses()["thp.disabled"] == "skip"
    tree.write("/boot/config-" + REL, CONFIG + "CONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y\n")
    tree.write("/sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    checks = {c["rule"]: c for c in run("--root", tree, "--format", "json", "-v").json["checks"]}
    assert checks["kernel.thp-missing"]["reason"] == "built with transparent huge pages, default `madvise` (/boot/config-%s)" % REL


@pytest.mark.parametrize(
    "nodes, balancing, found",
    [("0-1\n", "1\n", "low"), ("0\n", "1\n", None), ("0-3\n", "0\n", None), ("0-1\n", "2\n", None), ("0-1\n", None, None)],
)
def test_numa_balancing_on_a_multi_node_machine(tree, run, nodes, balancing, found):
    minimal_host(tree, release=REL)
    tree.write("/sys/devices/system/node/online", nodes)
    if balancing is not None:
        tree.write("/proc/sys/kernel/numa_balancing", balancing)
    result = run("--root", tree, "--format", "json")
    assert result.findings().get("kernel.numa-balancing") == found
    if found:
        commands = [
            c for f in result.json["findings"] if f["rule"] == "kernel.numa-balancing" for s in f["remediation"] for c in s["commands"]
        ]
        assert commands[0] == "sudo sysctl -w kernel.numa_balancing=0"
        assert any("/etc/sysctl.d/90-aidoctor-numa.conf" in c for c in commands)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from(
            ["CONFIG_A=y", "CONFIG_A=m", "# CONFIG_A is not set", "CONFIG_AB=y", "XCONFIG_A=y", 'CONFIG_A="x y"', "CONFIG_A=n \r", "#", ""]
        ),
        max_size=8,
    )
)
def test_one_option_looked_up_reads_as_the_whole_config_parsed(lines):
    text = "\n".join(lines)
    whole = parse_kconfig(text)[0]
    for name in ("A", "AB"):
        assert KernelConfig(text, "x", None, ()).get(name) == whole.get("CONFIG_" + name)


HEADER_PARTS = ["# Linux/", "x86", " ", "  ", "6.8.0", "\t", "\n", "\r", "\xa0", " Kernel Configuration", "#"]


@settings(max_examples=300, deadline=None)
@example(["#", "\n", "# Linux/", "x86", " ", "6.8.0", " Kernel Configuration", "\n"])
@given(st.lists(st.sampled_from(HEADER_PARTS), max_size=12))
def test_the_header_is_read_as_the_expression_make_writes_it_by(parts):
    import re

    text = "".join(parts)
    match = re.search(r"(?m)^# Linux/\S+ (\S+) Kernel Configuration$", text)
    assert KernelConfig(text, "/boot/config", None, ()).described == (match.group(1) if match else None)
