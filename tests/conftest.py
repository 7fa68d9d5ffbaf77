"""Shared test helpers: fixture trees, a small tree builder, and running the CLI in-process."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ai_doctor import cli

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
# AIDOCTOR_CLI="python3.9 dist/aidoctor.pyz": the CLI tests run that command, each in a process
# of its own, instead of calling ai_doctor.cli in this one (how .ci/run tests the pyz).
CLI = shlex.split(os.environ.get("AIDOCTOR_CLI", ""))
in_process_only = pytest.mark.skipif(bool(CLI), reason="changes aidoctor inside this process; AIDOCTOR_CLI runs another")


@pytest.fixture(scope="session")
def pinned_wheels(tmp_path_factory):
    """Where pyz/build.py keeps the files pyz/requirements.txt pins, for every build of a session."""
    return tmp_path_factory.mktemp("wheels")


def build_pyz(wheels, output: Path) -> Path:
    """aidoctor.pyz of this checkout, as pyz/build.py makes it (skips where nothing can be
    downloaded)."""
    command = [sys.executable, str(REPO / "pyz" / "build.py"), "--wheels", str(wheels), "-o", str(output)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode and "pip download of pyz/requirements.txt failed" in done.stderr:
        pytest.skip("no package index to download pyz/requirements.txt from: %s" % done.stderr.strip()[-300:])
    assert done.returncode == 0, done.stderr
    return output


@pytest.fixture(scope="session")
def built_pyz(pinned_wheels, tmp_path_factory):
    """The pyz, alone in a folder of its own."""
    return build_pyz(pinned_wheels, tmp_path_factory.mktemp("alone") / "aidoctor.pyz")


def cli_command() -> list:
    """The words that start the command under test in a new process."""
    return list(CLI) or [sys.executable, "-m", "ai_doctor"]


def fixture_root(name: str) -> str:
    return str(FIXTURES / name / "root")


class Tree:
    """Builds a host tree under a temporary directory: ``tree.write("/proc/meminfo", text)``."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, path: str, text="", mode: int = 0o644) -> Path:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)
        os.chmod(target, mode)
        return target

    def link(self, path: str, target: str) -> None:
        where = self.root / path.lstrip("/")
        where.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, where)

    def manifest(self, **fields) -> None:
        self.write("/.aidoctor/manifest.json", json.dumps(fields))

    def __str__(self) -> str:
        return str(self.root)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test gets an empty cache of derived reads, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AIDOCTOR_NO_CACHE", raising=False)


@pytest.fixture
def tree(tmp_path, request, capsys):
    built = Tree(tmp_path / "root")
    yield built
    # Every host tree a test built gets the fix proof too (tests/proof.py): each way of fixing
    # each finding applied to a copy, the copy booted in simulation and checked again. A test
    # whose tree is broken on purpose says so with @pytest.mark.unprovable("why").
    # AIDOCTOR_PROVE_TREES=FILE writes the problems found to FILE as JSON lines instead.
    report = os.environ.get("AIDOCTOR_PROVE_TREES")
    if not (built.root / "etc").is_dir() or request.node.get_closest_marker("unprovable"):
        return
    from proof import prove_everything

    capsys.readouterr()
    problems = prove_everything(capsys, tmp_path / "proof", built.root, [])
    if problems and report:
        with open(report, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"test": request.node.nodeid, "problems": problems}) + "\n")
    elif problems:
        pytest.fail("the fix proof on this test's tree: " + "; ".join(problems), pytrace=False)


class Run:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    @property
    def json(self) -> dict:
        return json.loads(self.out)

    def findings(self) -> dict:
        return {f["rule"]: f["severity"] for f in self.json["findings"]}

    def statuses(self) -> dict:
        return {c["rule"]: c["status"] for c in self.json["checks"]}


@pytest.fixture
def run(capsys, monkeypatch):
    """Run ``aidoctor ARGS`` in-process (or AIDOCTOR_CLI); returns exit code and output."""
    monkeypatch.delenv("NO_COLOR", raising=False)

    def invoke(*args) -> Run:
        argv = [str(a) for a in args]
        if CLI:
            done = subprocess.run(CLI + argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
            return Run(done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's own answers (--help, --version among options)
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return invoke


MEMINFO_64G = """MemTotal:       67108864 kB
MemFree:        50331648 kB
MemAvailable:   62914560 kB
Cached:          8388608 kB
SwapTotal:             0 kB
SwapFree:              0 kB
CommitLimit:    33554432 kB
Committed_AS:    4194304 kB
HugePages_Total:       0
HugePages_Free:        0
HugePages_Rsvd:        0
HugePages_Surp:        0
Hugepagesize:       2048 kB
"""


def minimal_host(tree: Tree, meminfo: str = MEMINFO_64G, overcommit: str = "0", release: str = "6.1.0-18-amd64") -> Tree:
    """A running host with just enough for every rule to decide."""
    tree.write("/proc/meminfo", meminfo)
    tree.write("/proc/sys/kernel/osrelease", release + "\n")
    tree.write("/proc/sys/kernel/hostname", "testhost\n")
    tree.write("/proc/sys/vm/overcommit_memory", overcommit + "\n")
    tree.write("/proc/sys/vm/overcommit_ratio", "50\n")
    tree.write("/proc/sys/vm/overcommit_kbytes", "0\n")
    tree.write("/proc/sys/vm/nr_hugepages", "0\n")
    tree.write("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    tree.write("/proc/self/mountinfo", "26 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n22 26 0:21 / /proc rw - proc proc rw\n")
    tree.write("/proc/self/cgroup", "0::/user.slice\n")
    tree.write("/sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    tree.write("/sys/devices/system/cpu/online", "0-1\n")
    tree.write("/boot/config-%s" % release, "CONFIG_HUGETLBFS=y\nCONFIG_HUGETLB_PAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\n")
    tree.write("/etc/os-release", 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    return tree
