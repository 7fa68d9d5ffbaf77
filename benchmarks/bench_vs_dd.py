"""Whether `aidoctor bench` measures the system, not Python: its cold and warm read speeds
against `dd if=FILE of=/dev/null bs=16M` on the same file, in the same run.

Budget (issue 6): the bench's median GB/s reaches at least 0.9x dd's, cold and warm. Each
round runs dd and the bench interleaved, evicting the file (posix_fadvise DONTNEED) before
every cold read; the ratio is of medians.

    python benchmarks/bench_vs_dd.py [--size 1G] [--rounds 9] [--dir /var/tmp]

Run it with the interpreter aidoctor is installed in.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

from ai_doctor import bench
from ai_doctor.units import parse_size

BUDGET = 0.9


def dd(path: str) -> float:
    """dd's own time for the copy (its last line), not the time to start the process."""
    done = subprocess.run(["dd", "if=%s" % path, "of=/dev/null", "bs=16M"], check=True, stderr=subprocess.PIPE, text=True)
    match = re.search(r"copied, ([0-9.]+) s", done.stderr)
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    size = parse_size(args.size)
    fd, path = tempfile.mkstemp(prefix="aidoctor-dd-", dir=args.dir)
    try:
        block = os.urandom(16 << 20)
        with os.fdopen(fd, "wb") as handle:
            for _ in range(size // len(block)):
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        samples = {"dd cold": [], "bench cold": [], "dd warm": [], "bench warm": []}
        for _ in range(args.rounds):
            bench.evict([path])
            samples["dd cold"].append(dd(path))
            samples["bench cold"].append(bench.measure([path], ("cold",), 1)[0].runs[0].seconds)
            dd(path)  # warm the cache for both
            samples["dd warm"].append(dd(path))
            samples["bench warm"].append(bench.measure([path], ("warm",), 1)[0].runs[0].seconds)
        size = os.path.getsize(path)  # whole 16 MiB blocks of what was asked
    finally:
        os.unlink(path)
    rate = {name: size / statistics.median(times) / 1e9 for name, times in samples.items()}
    print("file: %d MiB in %s; rounds: %d, interleaved; medians" % (size >> 20, args.dir, args.rounds))
    worst = None
    for kind in ("cold", "warm"):
        ratio = rate["bench " + kind] / rate["dd " + kind]
        worst = ratio if worst is None else min(worst, ratio)
        print(
            "%-5s dd %6.2f GB/s   bench %6.2f GB/s   ratio %.2f (budget %.1f)"
            % (kind, rate["dd " + kind], rate["bench " + kind], ratio, BUDGET)
        )
    return 0 if worst >= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
