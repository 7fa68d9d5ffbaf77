"""Whether `aidoctor bench` measures the system, not Python: its cold and warm read speeds
against `dd if=FILE of=/dev/null bs=16M` on the same file, in the same interleaved run.

Budgets (issue 17): the bench's median GB/s reaches at least 0.95x dd's warm and 0.9x dd's
cold. The file (1 GiB by default) is written, fsync'd, evicted and read once before the rounds,
so its page cache is filled the way a read fills it. Each round runs the real CLI in a fresh
process (`aidoctor bench FILE --modes cold,warm --repeat 3 --format json`) and dd, three reads
of each kind, in turns (dd first in even rounds, the bench first in odd ones), evicting the file
(posix_fadvise DONTNEED) before each of dd's cold reads; the bench evicts it itself before each
of its cold reads.

What is compared is each side's own timing of the read, never the time to start a process: for
the bench, the seconds of its timed runs from the JSON (not its first run, which it reports on
its own); for dd, the copy time on its last line. dd's copy also faults in its fresh 16 MiB
buffer, which the bench's timed runs reuse (a few ms per GiB, in dd's disfavour). Ratios are of
medians over the rounds; the middle half of each side's rates is printed beside them. Cold reads
from a shared virtual disk vary several-fold from one read to the next (0.6 to 2.7 GB/s for
both dd and the bench on the development VM, about one read in four at the low end, on either
side), hence 15 rounds of 3 reads of each kind a side by default: with one read a side per
round, which side drew more slow reads decided the cold ratio (0.6 to 1.1 from run to run).

    python benchmarks/bench_vs_dd.py [--size 1G] [--rounds 15] [--reads 3] [--dir /var/tmp]

Run it with the interpreter aidoctor is installed in; as root, or on a file of your own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from startup import aidoctor_command  # noqa: E402

from ai_doctor import bench  # noqa: E402
from ai_doctor.units import parse_size  # noqa: E402

BUDGETS = {"cold": 0.9, "warm": 0.95}


def dd(path: str) -> float:
    """dd's own time for the copy (its last line), not the time to start the process."""
    done = subprocess.run(["dd", "if=%s" % path, "of=/dev/null", "bs=16M"], check=True, stderr=subprocess.PIPE, text=True)
    match = re.search(r"copied, ([0-9.]+) s", done.stderr)
    return float(match.group(1))


def dd_round(path: str, samples: dict, reads: int) -> None:
    """``reads`` cold reads (each after an eviction), then ``reads`` warm ones, as the bench
    makes them."""
    for _ in range(reads):
        bench.evict([path])
        samples["dd cold"].append(dd(path))
    dd(path)  # the cache filled by a read, as for the bench's warm runs
    for _ in range(reads):
        samples["dd warm"].append(dd(path))


def bench_round(tool, path: str, samples: dict, reads: int) -> None:
    """One fresh `aidoctor bench` process timing ``reads`` runs of each mode; its own seconds
    per timed run, from its JSON."""
    done = subprocess.run(
        tool + ["bench", path, "--modes", "cold,warm", "--repeat", str(reads), "--format", "json"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    for result in json.loads(done.stdout)["results"]:
        samples["bench " + result["mode"]] += result["seconds"]
        if result.get("note"):
            print("bench %s: %s" % (result["mode"], result["note"]), file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--reads", type=int, default=3, help="timed reads of each kind per side and round")
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    size = parse_size(args.size)
    tool = aidoctor_command()
    fd, path = tempfile.mkstemp(prefix="aidoctor-dd-", suffix=".bin", dir=args.dir)
    try:
        block = os.urandom(16 << 20)
        with os.fdopen(fd, "wb") as handle:
            for _ in range(max(1, size // len(block))):
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        left = bench.evict([path])
        if left:
            print("eviction left %.0f%% of the file cached: cold reads are partly warm" % (100 * left), file=sys.stderr)
        dd(path)  # read once
        samples = {"dd cold": [], "bench cold": [], "dd warm": [], "bench warm": []}
        for index in range(args.rounds):
            if index % 2:
                bench_round(tool, path, samples, args.reads)
                dd_round(path, samples, args.reads)
            else:
                dd_round(path, samples, args.reads)
                bench_round(tool, path, samples, args.reads)
        size = os.path.getsize(path)  # whole 16 MiB blocks of what was asked
    finally:
        os.unlink(path)
    rate = {name: size / statistics.median(times) / 1e9 for name, times in samples.items()}
    spread = {name: statistics.quantiles([size / t / 1e9 for t in times], n=4, method="inclusive") for name, times in samples.items()}
    print("command: %s" % " ".join(tool))
    print(
        "file: %d MiB in %s, synced, evicted and read once; rounds: %d of %d reads a side, interleaved; medians (middle half)"
        % (size >> 20, args.dir, args.rounds, args.reads)
    )
    over = False
    for kind in ("cold", "warm"):
        ratio = rate["bench " + kind] / rate["dd " + kind]
        over = over or ratio < BUDGETS[kind]
        middle = ["(%.2f–%.2f)" % (spread[name][0], spread[name][2]) for name in ("dd " + kind, "bench " + kind)]
        print(
            "%-5s dd %6.2f GB/s %-13s  bench %6.2f GB/s %-13s  ratio %.2f (budget %.2f) %s"
            % (
                kind,
                rate["dd " + kind],
                middle[0],
                rate["bench " + kind],
                middle[1],
                ratio,
                BUDGETS[kind],
                "ok" if ratio >= BUDGETS[kind] else "UNDER",
            )
        )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
