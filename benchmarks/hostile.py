"""What hostile trees and archives cost the real CLI: each case built at full size, run as a fresh
process, its wall time and peak memory against the budget.

Budget (issue 13): every hostile input is refused with exit 2 or handled, in under 15 s and
512 MiB, and writes nothing outside the named output. The cases are the fuzzing campaign's
reproducers: archives whose headers claim huge sparse maps, PAX records or link names, more
members than a snapshot holds, members each deep in folders of its own; trees with climbing paths, a grub.cfg line of spaces, a MiB of
blank lines, an 8 MiB sysctl file, 100,000 repeated lines, 50,000 drop-ins, an empty boot entry.
Each case runs ``--rounds`` times, interleaved with the others, and the median is reported.

    python benchmarks/hostile.py [--rounds 3] [--only NAME]

Run it with the interpreter of the environment aidoctor is installed in, from a checkout (the
archive builders are the tests' own).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import pty
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, os.pardir, "fixtures")
TESTS = os.path.join(HERE, os.pardir, "tests")


BUDGET_SECONDS = 15.0
BUDGET_BYTES = 512 << 20
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def aidoctor_command():
    script = os.path.join(os.path.dirname(sys.executable), "aidoctor")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "ai_doctor"]


def copy_fixture(work: str, name: str) -> str:
    tree = os.path.join(work, "T")
    shutil.copytree(os.path.join(FIXTURES, name, "root"), tree, symlinks=True)
    return tree


def write(tree: str, path: str, data) -> None:
    target = os.path.join(tree, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


# -- the cases: each builds its input in ``work`` and returns the aidoctor arguments -----------


def modules_dep_climbing(work):
    tree = copy_fixture(work, "gpu-healthy")
    climb = "updates/dkms/" + "../" * 40 + "x/nvidia.ko.zst"
    write(tree, "/lib/modules/6.8.0-49-generic/modules.dep", "%s:\n" % climb)
    return ["snapshot", "--root", tree, "-o", os.path.join(work, "out.tar.gz")]


def empty_boot_entry(work):
    tree = copy_fixture(work, "image-rhel-traps")
    for name in os.listdir(os.path.join(tree, "boot/loader/entries")):
        write(tree, "/boot/loader/entries/" + name, "")
    return ["snapshot", "--root", tree, "--dir", "-o", os.path.join(work, "out")]


def nested_manifest(work):
    tree = copy_fixture(work, "healthy-tuned")
    write(tree, "/.aidoctor/manifest.json", "[" * 1_000_000 + "]" * 1_000_000)
    return ["--root", tree]


def grub_menuentry_spaces(work):
    tree = copy_fixture(work, "image-ubuntu-clean")
    write(tree, "/boot/grub/grub.cfg", "menuentry" + " " * 80_000 + "\n" + ("menuentry " + " " * 1000 + "\n") * 7000)
    return ["--root", tree, "--format", "json"]


def default_grub_blank_lines(work):
    tree = copy_fixture(work, "image-ubuntu-clean")
    write(tree, "/etc/default/grub", "\n" * (1 << 20) + 'GRUB_CMDLINE_LINUX="quiet"\n')
    return ["--root", tree, "--format", "json"]


def sysctl_8mb_file(work):
    tree = copy_fixture(work, "hugepage-shortfall")
    write(tree, "/etc/sysctl.d/50-big.conf", "".join("net.core.key%d = %d\n" % (i, i) for i in range(400_000))[: 8 << 20])
    return ["--root", tree, "--format", "json"]


def sysctl_100k_duplicates_fix(work):
    tree = copy_fixture(work, "hugepage-shortfall")
    write(tree, "/etc/sysctl.conf", "vm.swappiness = 10\n" * 100_000)
    return ["fix", "--root", tree]


def sysctl_100k_duplicates_terminal(work):
    tree = copy_fixture(work, "hugepage-shortfall")
    write(tree, "/etc/sysctl.conf", "vm.swappiness = 10\n" * 100_000)
    return ["--root", tree, "-v", "--terminal"]


def sysctl_50k_dropins(work):
    tree = copy_fixture(work, "hugepage-shortfall")
    for number in range(50_000):
        write(tree, "/etc/sysctl.d/%05d.conf" % number, "vm.swappiness = %d\n" % (number % 100))
    return ["--root", tree, "--format", "json"]


def archive(build):
    def case(work):
        path = os.path.join(work, "case.tar.gz")
        build(path)
        return ["--snapshot", path, "--format", "json"]

    case.__name__ = build.__name__
    return case


@archive
def sparse_map_claiming_10e8_blocks(path):
    mapping = b",".join(b"%d,512" % (i * 1024) for i in range(200_000))
    records = {b"GNU.sparse.size": b"%d" % 10**12, b"GNU.sparse.numblocks": b"100000000", b"GNU.sparse.map": mapping}
    gz(pathlib.Path(path), pax(records, header("GNUSparseFile.0/etc/s", 512) + bytes(512)))


@archive
def old_gnu_sparse_chain(path):
    sparse = patched(header("etc/s", 512, tarfile.GNUTYPE_SPARSE), 482, b"\1")
    gz(pathlib.Path(path), (bytes(504) + b"\1" + bytes(7)) * 10_000, times=100, head=sparse)


@archive
def pax_records_15mib_each(path):
    gz(pathlib.Path(path), pax({b"comment": b"a" * (15 << 20)}, header("etc/x")), times=80)


@archive
def link_name_15mib(path):
    target = b"a/" * (15 << 19)
    long_link = header("././@LongLink", len(target) + 1, tarfile.GNUTYPE_LONGLINK) + padded(target + b"\0")
    gz(pathlib.Path(path), long_link + header("etc/link", 0, tarfile.SYMTYPE))


def _members(path, count: int) -> None:
    base = header("m", 0)
    with gzip.open(path, "wb", compresslevel=6) as stream:
        for number in range(count):
            stream.write(patched(base, 0, b"m%d\0" % number))
        stream.write(bytes(1024))


@archive
def members_200001_empty(path):
    _members(path, 200_001)


@archive
def members_at_the_limit_empty(path):
    from ai_doctor import archive as snapshot_archive

    _members(path, snapshot_archive.MAX_MEMBERS)


@archive
def pax_mtime_1e999(path):
    gz(pathlib.Path(path), pax({b"mtime": b"1e999"}, header("etc/os-release", 0)))


@archive
def link_chain_leaving_the_tree(path):
    links = [({"name": name, "type": tarfile.SYMTYPE, "linkname": target}, None) for name, target in (("s", "."), ("a", "s/../x"))]
    craft(pathlib.Path(path), [MEMINFO] + links)


def _deep(path, members: int) -> None:
    """``members`` files, each 119 folders deep in folders of its own; ustar names (prefix and
    name fields), no extended header."""
    with tarfile.open(path, "w:gz", format=tarfile.USTAR_FORMAT) as out:
        out.addfile(*_file("proc/meminfo", b"MemTotal: 1048576 kB\n"))
        for number in range(members):
            out.addfile(*_file("%d/%s/f" % (number, "/".join("d" * 118)), b"x"))


def _file(name: str, data: bytes):
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


@archive
def members_in_deep_folders_of_their_own(path):
    _deep(path, 25_000)


@archive
def folders_at_the_limit(path):
    from ai_doctor import archive as snapshot_archive

    _deep(path, snapshot_archive.MAX_FOLDERS // 119 - 1)


@archive
def folder_levels_at_the_limit_unpacked(path):
    # Chains of folders 255 deep, as many as the levels allow, and a file of zeros that makes
    # the archive too large to hold: unpacked, where each path is resolved folder by folder.
    from ai_doctor import archive as snapshot_archive

    chain = sum(range(1, 256))
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as out:
        out.addfile(*_file("proc/meminfo", b"MemTotal: 1048576 kB\n"))
        zeros = tarfile.TarInfo("var/zeros")
        zeros.size = snapshot_archive.MAX_HELD + (1 << 20)
        out.addfile(zeros, _Zeros(zeros.size))
        for number in range((snapshot_archive.MAX_LEVELS - 10) // chain):
            name = "c%d" % number
            for _depth in range(255):
                folder = tarfile.TarInfo(name)
                folder.type = tarfile.DIRTYPE
                out.addfile(folder)
                name += "/d"


class _Zeros:
    def __init__(self, size: int):
        self.left = size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


CASES = [
    modules_dep_climbing,
    empty_boot_entry,
    nested_manifest,
    grub_menuentry_spaces,
    default_grub_blank_lines,
    sysctl_8mb_file,
    sysctl_100k_duplicates_fix,
    sysctl_100k_duplicates_terminal,
    sysctl_50k_dropins,
    sparse_map_claiming_10e8_blocks,
    old_gnu_sparse_chain,
    pax_records_15mib_each,
    link_name_15mib,
    members_200001_empty,
    members_at_the_limit_empty,
    pax_mtime_1e999,
    link_chain_leaving_the_tree,
    members_in_deep_folders_of_their_own,
    folders_at_the_limit,
    folder_levels_at_the_limit_unpacked,
]


def measured(args, work: str):
    """(exit code, seconds, peak bytes, stderr's last line) of one fresh aidoctor process."""
    terminal = "--terminal" in args
    args = [arg for arg in args if arg != "--terminal"]
    start = time.perf_counter()
    if terminal:
        # The terminal renderer, as a user at a terminal meets it.
        leader, follower = pty.openpty()
        environment = dict(ENVIRONMENT, COLUMNS="100")
        proc = subprocess.Popen(aidoctor_command() + args, stdout=follower, stderr=subprocess.PIPE, env=environment, cwd=work)
        os.close(follower)
        while True:
            try:
                if not os.read(leader, 1 << 16):
                    break
            except OSError:
                break
        err = proc.stderr.read()
        _pid, status, usage = os.wait4(proc.pid, 0)
        os.close(leader)
    else:
        proc = subprocess.Popen(aidoctor_command() + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENVIRONMENT, cwd=work)
        err = proc.stderr.read()
        _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return os.waitstatus_to_exitcode(status), seconds, usage.ru_maxrss * 1024, (lines[-1][-110:] if lines else "")


def build(base: str, names) -> dict:
    """Build the cases named under ``base``; their aidoctor arguments by name. Runs in a process
    of its own, so the measured ones do not inherit its peak memory through fork and exec."""
    global MEMINFO, craft, gz, header, padded, patched, pax
    sys.path.insert(0, TESTS)
    from test_archive import MEMINFO, craft, gz, header, padded, patched, pax

    built = {}
    for case in CASES:
        if case.__name__ in names:
            work = os.path.join(base, case.__name__)
            os.mkdir(work)
            built[case.__name__] = (work, case(work))
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="run the cases whose name holds this text")
    parser.add_argument("--build", metavar="FOLDER", help=argparse.SUPPRESS)
    options = parser.parse_args()
    names = [case.__name__ for case in CASES if not options.only or options.only in case.__name__]
    if options.build:
        json.dump(build(options.build, names), sys.stdout)
        return 0
    base = tempfile.mkdtemp(prefix="aidoctor-hostile-")
    try:
        command = [sys.executable, os.path.abspath(__file__), "--build", base] + (["--only", options.only] if options.only else [])
        prepared = json.loads(subprocess.run(command, stdout=subprocess.PIPE, check=True).stdout)
        results = {name: [] for name in prepared}
        for _round in range(options.rounds):
            for name, (work, args) in prepared.items():
                for output in ("out", "out.tar.gz"):
                    path = os.path.join(work, output)
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    elif os.path.exists(path):
                        os.unlink(path)
                results[name].append(measured(args, work))
        worst = 0.0
        print("%-36s %4s %9s %9s %6s  %s" % ("case", "exit", "seconds", "peak MiB", "ratio", "last line on stderr"))
        for name, runs in results.items():
            seconds = statistics.median(run[1] for run in runs)
            peak = max(run[2] for run in runs)
            ratio = max(seconds / BUDGET_SECONDS, peak / BUDGET_BYTES)
            codes = sorted({run[0] for run in runs})
            if any(code not in (0, 1, 2) for code in codes):
                ratio = float("inf")  # an internal error or a kill is never within budget
            worst = max(worst, ratio)
            print("%-36s %4s %9.2f %9.1f %5.2fx  %s" % (name, ",".join(map(str, codes)), seconds, peak / (1 << 20), ratio, runs[-1][3]))
        print("worst: %.2fx of the budget (%.0f s, %d MiB)" % (worst, BUDGET_SECONDS, BUDGET_BYTES >> 20))
        return 0 if worst <= 1.0 else 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
