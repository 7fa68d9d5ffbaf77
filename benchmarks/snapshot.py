"""What taking and replaying a snapshot of this host costs.

Budgets (issue 17), as ratios of medians:

    aidoctor --snapshot host.tar.gz --format json   1.5x  the live check (aidoctor --format json)
    aidoctor snapshot -o host.tar.gz                4.0x  python -c pass

A replay reads the archive's checked members from memory (nothing is unpacked to disk), so it
costs the live check plus reading the archive; taking a snapshot writes the archive straight
from what the reads logged. Measured as benchmarks/startup.py measures: every command a fresh
process of the installed CLI, interleaved round after round, medians. The snapshot replayed is
one of this host taken at the start; `--dir` (a folder) is shown beside it, without a budget.

    python benchmarks/snapshot.py [--rounds 15]

Run it with the interpreter of a regular install (`pip install .`), as startup.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from startup import aidoctor_command, timed

# As startup.py: an installed package's bytecode is written once, not compiled on every run.
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}

# name: (budget, the baseline it is measured against)
BUDGETS = {
    "replay, json": (1.5, "live check, json"),
    "snapshot -o FILE.tar.gz": (4.0, "python -c pass"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--model-size", default="140G")
    args = parser.parse_args()
    tool = aidoctor_command()
    size = ["--model-size", args.model_size]
    with tempfile.TemporaryDirectory(prefix="aidoctor-snapshot-bench-") as work:
        taken = os.path.join(work, "host.tar.gz")
        subprocess.run(tool + ["snapshot", "-o", taken], check=True, stderr=subprocess.DEVNULL, env=ENVIRONMENT)
        archive = os.path.join(work, "again.tar.gz")
        folder = os.path.join(work, "again")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "live check, json": tool + size + ["--format", "json"],
            "replay, json": tool + size + ["--snapshot", taken, "--format", "json"],
            "snapshot -o FILE.tar.gz": tool + ["snapshot", "-o", archive],
            "snapshot -o DIR/": tool + ["snapshot", "-o", folder + "/"],
        }

        def run(command) -> float:
            seconds = timed(command)
            # Each snapshot is written anew: the name must not exist.
            if os.path.exists(archive):
                os.unlink(archive)
            shutil.rmtree(folder, ignore_errors=True)
            return seconds

        samples = {name: [] for name in commands}
        for command in commands.values():  # warm the page cache and bytecode
            run(command)
        for _ in range(args.rounds):
            for name, command in commands.items():
                samples[name].append(run(command))
        size_kib = os.path.getsize(taken) / 1024
    medians = {name: statistics.median(times) for name, times in samples.items()}
    print("interpreter: %s (%s)" % (sys.executable, sys.version.split()[0]))
    print("command:     %s" % " ".join(tool))
    found = subprocess.run([sys.executable, "-c", "import ai_doctor; print(ai_doctor.__file__)"], capture_output=True, text=True)
    print("ai_doctor:   %s" % found.stdout.strip())
    print("snapshot:    %.0f KiB, of this host" % size_kib)
    print("rounds:      %d, interleaved; medians" % args.rounds)
    print("%-28s %9s %7s %7s  %s" % ("", "median", "ratio", "budget", "against"))
    over = False
    for name, median in medians.items():
        if name not in BUDGETS:
            print("%-28s %7.1fms" % (name, median * 1000))
            continue
        budget, baseline = BUDGETS[name]
        ratio = median / medians[baseline]
        over = over or ratio > budget
        print("%-28s %7.1fms %7.2f %6.1fx  %s %s" % (name, median * 1000, ratio, budget, baseline, "OVER" if ratio > budget else "ok"))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
