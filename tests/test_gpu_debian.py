"""Debian's NVIDIA layout: libraries and nvidia-smi reached through update-alternatives, driver
flavours in their own folders (nvidia/current, nvidia/tesla-535), the DKMS module renamed
nvidia-current, and the fixes for images whose apt lists were removed or whose kernel comes
from backports."""

from __future__ import annotations

import os
import shlex

import pytest
from elfbuild import module

from ai_doctor import snapshot
from ai_doctor.facts import Facts
from ai_doctor.facts.gpu import LIB_DIRS, Library, parse_deb822_sources, parse_sources_list
from ai_doctor.host import Host

from conftest import fixture_root

KERNEL = "6.1.0-28-amd64"
BPO = "6.12.12+bpo-amd64"
OLD, NEW = "535.216.03", "535.309.01"
FLAGS = "SMP preempt mod_unload modversions "
LIBS = "/usr/lib/x86_64-linux-gnu"
BOOKWORM = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n'
SOURCES = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main contrib non-free non-free-firmware\n"


def _flavour(tree, flavour, version, selected):
    """A driver flavour's libraries and nvidia-smi as Debian's packages install them, and when
    ``selected`` the update-alternatives links (absolute, as update-alternatives makes them)."""
    folder = "%s/nvidia/%s" % (LIBS, flavour)
    for lib in ("libcuda.so", "libnvidia-ml.so"):
        tree.write("%s/%s.%s" % (folder, lib, version))
        tree.link("%s/%s.1" % (folder, lib), "%s.%s" % (lib, version))
    tree.write("/usr/lib/nvidia/%s/nvidia-smi" % flavour, mode=0o755)
    if selected:
        _select(tree, flavour)


def _select(tree, flavour):
    for lib in ("libcuda.so.1", "libnvidia-ml.so.1"):
        name = "/etc/alternatives/nvidia--%s-x86_64-linux-gnu" % lib
        for path in (name, "%s/%s" % (LIBS, lib)):
            if os.path.lexists(str(tree.root) + path):
                os.remove(str(tree.root) + path)
        tree.link("%s/%s" % (LIBS, lib), name)
        tree.link(name, "%s/nvidia/%s/%s" % (LIBS, flavour, lib))
    if os.path.lexists(str(tree.root) + "/usr/bin/nvidia-smi"):
        os.remove(str(tree.root) + "/etc/alternatives/nvidia--nvidia-smi")
    else:
        tree.link("/usr/bin/nvidia-smi", "/etc/alternatives/nvidia--nvidia-smi")
    tree.link("/etc/alternatives/nvidia--nvidia-smi", "/usr/lib/nvidia/%s/nvidia-smi" % flavour)


def _image(tree, dkms_module="nvidia-current", version=OLD, release=KERNEL, lists=True, suites="bookworm bookworm-updates"):
    """A Debian 12 image (no /proc) whose default kernel has DKMS's ``dkms_module`` build of
    ``version``, as nvidia-kernel-dkms names it (dkms.conf DEST_MODULE_NAME=$PACKAGE_NAME)."""
    tree.write("/etc/os-release", BOOKWORM)
    tree.write("/etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="transparent_hugepage=madvise"\n')
    tree.write("/etc/modprobe.d/nvidia-blacklists-nouveau.conf", "blacklist nouveau\n")
    tree.write("/etc/apt/sources.list.d/debian.sources", SOURCES % suites)
    if lists:
        for suite in suites.split():
            tree.write("/var/lib/apt/lists/deb.debian.org_debian_dists_%s_main_binary-amd64_Packages" % suite)
    tree.write("/boot/vmlinuz-" + release)
    tree.write("/boot/config-" + release, "CONFIG_HUGETLBFS=y\nCONFIG_HUGETLB_PAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\n")
    own = "kernel/block/kyber-iosched.ko"
    module(tree.root / "lib/modules" / release / own, [("name", "kyber_iosched"), ("vermagic", release + " " + FLAGS)])
    dep = [own]
    if dkms_module:
        path = "updates/dkms/%s.ko" % dkms_module
        module(tree.root / "lib/modules" / release / path, [("version", version), ("name", "nvidia"), ("vermagic", release + " " + FLAGS)])
        dep.append(path)
        tree.write("/var/lib/dkms/%s/%s/%s/x86_64/log/make.log" % (dkms_module, version, release), "DKMS make.log\n")
    tree.write("/lib/modules/%s/modules.dep" % release, "".join("%s:\n" % m for m in dep))


def _finding(run, tree, rule):
    result = run("--root", tree, "--format", "json")
    found = [f for f in result.json["findings"] if f["rule"] == rule]
    return result, (found[0] if found else None)


def _commands(finding):
    return [c for step in finding["remediation"] for c in step["commands"]]


# -- libraries through update-alternatives ------------------------------------------------------


def test_the_names_programs_load_are_followed_through_the_alternatives():
    nv = Facts(Host(fixture_root("debian-gpu-library-mismatch"))).get("nvidia")
    current = LIBS + "/nvidia/current"
    assert nv.links == (
        Library(LIBS + "/libnvidia-ml.so.1", NEW, current + "/libnvidia-ml.so." + NEW),
        Library(LIBS + "/libcuda.so.1", NEW, current + "/libcuda.so." + NEW),
    )
    assert nv.library_versions == [NEW] and nv.smi == "/usr/bin/nvidia-smi"
    assert [(s.ref, s.failed_log, s.logs) for s in nv.dkms] == [
        ("nvidia-current/" + OLD, None, ((KERNEL, "/var/lib/dkms/nvidia-current/%s/%s/x86_64/log/make.log" % (OLD, KERNEL)),))
    ]


def test_a_held_dkms_package_under_new_libraries_is_a_mismatch_from_the_first_boot(run):
    result, found = _finding(run, fixture_root("debian-gpu-library-mismatch"), "gpu.driver-library-mismatch")
    assert result.code == 1 and found["severity"] == "critical"
    assert "module the image's default kernel loads is %s, but the libraries are %s" % (OLD, NEW) in found["message"]
    assert {"path": LIBS + "/libcuda.so.1", "value": "%s (%s/nvidia/current/libcuda.so.%s)" % (NEW, LIBS, NEW)} in found["evidence"]
    # Rebuilding what DKMS holds would build 535.216.03 again: the package of the libraries' version.
    commands = _commands(found)
    assert not any("dkms install" in c for c in commands)
    # The package's postinst builds the module: in the image's chroot, with /proc mounted for it.
    assert commands[-1] == _with_proc(
        fixture_root("debian-gpu-library-mismatch"), "apt-get install -y --allow-change-held-packages 'nvidia-kernel-dkms=%s-*'" % NEW
    )


def test_a_snapshot_of_the_debian_tree_replays_the_links(run, tmp_path):
    source = fixture_root("debian-gpu-library-mismatch")
    host = snapshot.capture(source)
    snapshot.write_tree(host, str(tmp_path / "snap"), snapshot.manifest_for(host))
    snap = tmp_path / "snap"
    # The chain itself is kept, link by link, and the file it ends at.
    assert os.readlink(str(snap / "usr/lib/x86_64-linux-gnu/libcuda.so.1")) == "/etc/alternatives/nvidia--libcuda.so.1-x86_64-linux-gnu"
    assert os.readlink(str(snap / "etc/alternatives/nvidia--libcuda.so.1-x86_64-linux-gnu")) == LIBS + "/nvidia/current/libcuda.so.1"
    assert (snap / ("usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so." + NEW)).is_file()
    assert Facts(Host(str(snap))).get("nvidia") == Facts(Host(source)).get("nvidia")
    before, after = run("--root", source, "--format", "json"), run("--root", snap, "--format", "json")
    assert after.findings() == before.findings() == {"gpu.driver-library-mismatch": "critical"}
    assert after.code == before.code == 1


def test_a_dangling_alternative_is_no_library(tree):
    _image(tree)
    _flavour(tree, "current", NEW, selected=True)
    os.remove(str(tree.root / "etc/alternatives/nvidia--libcuda.so.1-x86_64-linux-gnu"))
    nv = Facts(Host(str(tree))).get("nvidia")
    assert [lib.path for lib in nv.links] == [LIBS + "/libnvidia-ml.so.1"]
    # The flavour's folder still says what is installed.
    assert sorted(lib.path for lib in nv.libraries) == [
        LIBS + "/nvidia/current/libcuda.so." + NEW,
        LIBS + "/nvidia/current/libnvidia-ml.so." + NEW,
    ]


def test_unselected_flavours_count_only_where_nothing_is_selected(tree, run):
    _image(tree, version=NEW)
    _flavour(tree, "current", NEW, selected=False)
    _flavour(tree, "tesla-535", OLD, selected=False)
    nv = Facts(Host(str(tree))).get("nvidia")
    assert nv.links == () and nv.library_versions == [OLD, NEW] and nv.smi is None
    _select(tree, "current")
    assert run("--root", tree, "--format", "json").statuses()["gpu.driver-library-mismatch"] == "pass"


@pytest.mark.parametrize(
    "driver, cuda, severity", [(OLD, "12.4.1", "low"), ("525.147.05", "12.4.1", "low"), ("470.256.02", "12.4.1", "critical")]
)
def test_cuda_against_the_selected_flavour_when_no_module_says(tree, run, driver, cuda, severity):
    _image(tree, dkms_module=None)
    _flavour(tree, "tesla", driver, selected=True)
    _flavour(tree, "current", "550.163.01", selected=False)  # installed, not what programs load
    tree.write("/usr/local/cuda-12.4/version.json", '{"cuda": {"version": "%s"}}' % cuda)
    result, found = _finding(run, tree, "gpu.driver-too-old-for-cuda")
    assert found["severity"] == severity
    assert {"path": "%s/nvidia/tesla/libcuda.so.%s" % (LIBS, driver), "value": driver} in found["evidence"]


# -- the Tesla flavour --------------------------------------------------------------------------


def test_the_tesla_flavour_selected_beside_an_unselected_current(tree, run):
    _image(tree, dkms_module="nvidia-tesla-535", version=OLD)
    _flavour(tree, "tesla-535", OLD, selected=True)
    _flavour(tree, "current", NEW, selected=False)
    result = run("--root", tree, "--format", "json")
    assert result.statuses()["gpu.driver-library-mismatch"] == "pass" and result.code == 0
    nv = Facts(Host(str(tree))).get("nvidia")
    assert {lib.version for lib in nv.libraries} == {OLD, NEW} and nv.library_versions == [OLD]
    # Installing nvidia-driver beside it moves the alternative (auto mode, higher priority).
    _select(tree, "current")
    result, found = _finding(run, tree, "gpu.driver-library-mismatch")
    assert found["severity"] == "critical" and "DKMS holds only nvidia-tesla-535/%s" % OLD in found["message"]
    commands = _commands(found)
    assert _with_proc(tree, "apt-get install -y --allow-change-held-packages 'nvidia-kernel-dkms=%s-*'" % NEW) in commands
    way = [s for s in found["remediation"] if s["summary"].startswith(("Or ", "Or,"))]
    assert way[0]["commands"] == ["sudo chroot %s update-alternatives --set nvidia /usr/lib/nvidia/tesla-535" % tree]


# -- the DKMS fix: apt lists, backports, make.log ----------------------------------------------


def _with_proc(root, command: str) -> str:
    """A command run in the image's chroot with /proc mounted in a mount namespace of its own
    (dkms reads /dev/fd, a link into /proc); the image's folder is the inner shell's $1."""
    from ai_doctor.shell import quote

    return "sudo unshare --mount --fork sh -c %s sh %s" % (
        quote('mount -t proc proc "$1"/proc && exec chroot "$1" %s' % command),
        quote(str(root)),
    )


def test_backports_kernel_in_an_image_without_apt_lists(run):
    result, found = _finding(run, fixture_root("debian-gpu-backports-no-apt-lists"), "gpu.driver-missing-for-kernel")
    assert result.code == 1 and found["severity"] == "critical"
    root = fixture_root("debian-gpu-backports-no-apt-lists")
    assert _commands(found)[0] == _with_proc(root, "dkms status nvidia-current")  # dkms needs /proc, even to show
    assert _commands(found)[1] == "sudo chroot %s apt-get update" % root
    # Debian's headers run DKMS from their postinst (/etc/kernel/header_postinst.d/dkms): /proc too.
    assert _commands(found)[2:] == [
        _with_proc(root, "apt-get install -y -t bookworm-backports linux-headers-" + BPO),
        _with_proc(root, "dkms install nvidia-current/%s -k %s" % (NEW, BPO)),
    ]
    assert "has not built nvidia-current/%s for %s" % (NEW, BPO) in found["remediation"][0]["summary"]


def _bpo_image(tree, **image):
    _image(tree, version=NEW, **image)
    _flavour(tree, "current", NEW, selected=True)
    tree.write("/boot/vmlinuz-" + BPO)
    tree.write("/lib/modules/%s/modules.dep" % BPO, "")


def test_a_backports_suite_no_source_names_is_said_not_run(tree, run):
    _bpo_image(tree)
    result, found = _finding(run, tree, "gpu.driver-missing-for-kernel")
    step = found["remediation"][1]
    assert step["commands"] == []
    assert "from bookworm-backports" in step["summary"] and "no apt source names that suite" in step["summary"]
    assert "`deb http://deb.debian.org/debian bookworm-backports main`" in step["summary"]
    # Named in sources.list, listed by an earlier update: installed from it straight away.
    tree.write("/etc/apt/sources.list", "deb [arch=amd64] http://deb.debian.org/debian bookworm-backports main contrib\n")
    tree.write("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm-backports_main_binary-amd64_Packages.lz4")
    result, found = _finding(run, tree, "gpu.driver-missing-for-kernel")
    assert found["remediation"][1]["commands"] == [_with_proc(tree, "apt-get install -y -t bookworm-backports linux-headers-%s" % BPO)]


def _last_words(step) -> list:
    """The last word of each command a step runs in the image (one that needs /proc runs it in
    an inner shell, the image's folder after it as its $1)."""
    words = [shlex.split(command) for command in step["commands"]]
    return [each[-3].rsplit(" ", 1)[-1] if "unshare" in each else each[-1] for each in words]


def test_lists_of_the_release_but_not_of_backports_are_updated_first(tree, run):
    _bpo_image(tree, suites="bookworm bookworm-backports")
    os.remove(str(tree.root / "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm-backports_main_binary-amd64_Packages"))
    result, found = _finding(run, tree, "gpu.driver-missing-for-kernel")
    assert _last_words(found["remediation"][1]) == ["update", "linux-headers-" + BPO]
    assert "holds no package list of bookworm-backports" in found["remediation"][1]["summary"]
    # A lists folder that could not be read says nothing: no update is asked for.
    tree.manifest(outcomes={"/var/lib/apt/lists": "denied"})
    result, found = _finding(run, tree, "gpu.driver-missing-for-kernel")
    assert _last_words(found["remediation"][1]) == ["linux-headers-" + BPO]


def test_a_failed_build_log_and_a_finished_build_log(tree, run):
    _image(tree, version=NEW)
    _flavour(tree, "current", NEW, selected=True)
    # The module is gone (removed by hand), DKMS's build for this kernel had finished.
    tree.write("/lib/modules/%s/modules.dep" % KERNEL, "kernel/block/kyber-iosched.ko:\n")
    log = "/var/lib/dkms/nvidia-current/%s/%s/x86_64/log/make.log" % (NEW, KERNEL)
    result, found = _finding(run, tree, "gpu.driver-missing-for-kernel")
    assert found["remediation"][0]["commands"][1] == "sudo chroot %s tail -n 30 %s" % (tree, log)
    assert found["remediation"][0]["summary"].endswith("see the log of DKMS's build of nvidia-current/%s for %s" % (NEW, KERNEL))
    failed = "/var/lib/dkms/nvidia-current/%s/build/make.log" % NEW
    tree.write(failed, "DKMS make.log\n")
    result, found = _finding(run, tree, "gpu.driver-missing-for-kernel")
    assert found["remediation"][0]["commands"][1] == "sudo chroot %s tail -n 30 %s" % (tree, failed)


def test_apt_sources_in_both_formats():
    text = (
        "# comment\ndeb http://deb.debian.org/debian bookworm main\n"
        "deb-src http://deb.debian.org/debian bookworm main\n"
        "deb [ arch=amd64 signed-by=/usr/share/keyrings/k.gpg ] https://repo.example/apt stable main # trailing\n"
        "deb [arch=amd64] http://x/ ./\ndeb [broken\n"
    )
    assert parse_sources_list(text) == [
        ("http://deb.debian.org/debian", "bookworm"),
        ("https://repo.example/apt", "stable"),
        ("http://x/", "./"),
    ]
    deb822 = (
        "Types: deb deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n bookworm-updates\nComponents: main\n\n"
        "# off\nTypes: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\n"
    )
    debian = "http://deb.debian.org/debian"
    assert parse_deb822_sources(deb822) == [(debian, "bookworm"), (debian, "bookworm-updates")]


# -- cost on a live host ---------------------------------------------------------------------


def test_library_folders_are_never_listed(tree):
    _image(tree)
    _flavour(tree, "current", NEW, selected=True)
    host = Host(str(tree))
    Facts(host).get("nvidia")
    listed = {path for kind, path, _got in host.log if kind == "dir"}
    assert not listed & set(LIB_DIRS)
    assert LIBS + "/nvidia" in listed  # Debian's flavours: a folder of a few names


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a live Linux host")
def test_the_live_host_asks_for_names_not_folders():
    host = Host("/")
    nv = Facts(host).get("nvidia")
    assert not {path for kind, path, _got in host.log if kind == "dir"} & set(LIB_DIRS)
    assert all(lib.version and lib.path.startswith("/") for lib in nv.libraries + nv.links)


def test_apt_sources_parse_in_linear_time():
    # A field continued a million times, a bracket never closed on a long line.
    assert (
        parse_deb822_sources("Types: deb\nURIs: http://x/\nSuites: a\n" + " b\n" * 1_000_000)
        == [("http://x/", "a")] + [("http://x/", "b")] * 1_000_000
    )
    assert parse_sources_list("deb [" + " o=1" * 1_000_000 + "\n") == []
