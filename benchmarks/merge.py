"""How long `aidoctor merge` takes for a fleet of 10,000 host reports.

Budget (issue 17; 1,000 reports in issue 3): merging 10,000 reports, with the text view on
standard output and the HTML fleet page written too, takes under 5 seconds on the 2-core
development machine. The reports are this checkout's fixtures run as JSON, each copied under
many host names (about 160 MB in a temporary folder); the merge runs several times and the
median is printed with its ratio to the budget.

    python benchmarks/merge.py [--hosts 10000] [--rounds 5]

Run it with the interpreter of the environment aidoctor is installed in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from startup import aidoctor_command

BUDGET_SECONDS = 5.0
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fleet(tool, folder: Path, hosts: int):
    """``hosts`` report files made from the fixtures' real reports."""
    reports = []
    for fixture in sorted(p for p in FIXTURES.iterdir() if (p / "root").is_dir()):
        done = subprocess.run(
            tool + ["--root", str(fixture / "root"), "--model-size", "40G", "--format", "json"], capture_output=True, text=True
        )
        reports.append(json.loads(done.stdout))
    paths = []
    for number in range(hosts):
        report = dict(reports[number % len(reports)])
        report["host"] = dict(report["host"], hostname="node-%04d" % number)
        path = folder / ("node-%04d.json" % number)
        path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        paths.append(str(path))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tool = aidoctor_command()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        paths = fleet(tool, folder, args.hosts)
        command = tool + ["merge"] + paths + ["--html", str(folder / "fleet.html")]
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        samples = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
            samples.append(time.perf_counter() - start)
        size = os.path.getsize(folder / "fleet.html")
    median = statistics.median(samples)
    print("command:  %s merge <%d reports> --html fleet.html" % (" ".join(tool), args.hosts))
    print(
        "rounds:   %d; median %.2fs (min %.2fs, max %.2fs); page %.1f MiB"
        % (args.rounds, median, min(samples), max(samples), size / (1 << 20))
    )
    print("budget:   %.1fs; ratio %.2f %s" % (BUDGET_SECONDS, median / BUDGET_SECONDS, "OVER" if median > BUDGET_SECONDS else "ok"))
    return 1 if median > BUDGET_SECONDS else 0


if __name__ == "__main__":
    sys.exit(main())
