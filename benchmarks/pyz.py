"""What running aidoctor.pyz costs next to the installed command.

Budget (issue 18): ``python3 aidoctor.pyz --format json`` at most 1.5x the installed
``aidoctor --format json``, both a live check of this host, both with this interpreter; medians
of interleaved runs, each a fresh process, as benchmarks/startup.py measures. Shown beside it
without a budget: the first run of a new build (which unpacks the code into the cache) and a
run from the zip itself (AIDOCTOR_NO_CACHE=1: every module compiled on every start).

    python benchmarks/pyz.py [--pyz dist/aidoctor.pyz] [--rounds 15]

Without --pyz it builds one (pyz/build.py, which downloads the pinned dependencies). Run it
with the interpreter of a regular install (`pip install .`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from startup import aidoctor_command, timed

CHECKOUT = Path(__file__).resolve().parents[1]
BUDGET = 1.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyz", help="an aidoctor.pyz already built")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONDONTWRITEBYTECODE", "AIDOCTOR_NO_CACHE")}
    with tempfile.TemporaryDirectory(prefix="aidoctor-pyz-bench-") as work:
        pyz = Path(work) / "aidoctor.pyz"
        if args.pyz:
            shutil.copy(args.pyz, pyz)
        else:
            subprocess.run([sys.executable, str(CHECKOUT / "pyz" / "build.py"), "-o", str(pyz)], check=True)
        env["XDG_CACHE_HOME"] = str(Path(work) / "cache")
        report = ["--format", "json"]
        first = timed([sys.executable, str(pyz)] + report, env=env)
        commands = {
            "installed": (aidoctor_command() + report, env),
            "pyz": ([sys.executable, str(pyz)] + report, env),
            "pyz, from the zip": ([sys.executable, str(pyz)] + report, dict(env, AIDOCTOR_NO_CACHE="1")),
        }
        samples = {name: [] for name in commands}
        for command, environment in commands.values():
            timed(command, env=environment)
        for _ in range(args.rounds):
            for name, (command, environment) in commands.items():
                samples[name].append(timed(command, env=environment))
    medians = {name: statistics.median(times) for name, times in samples.items()}
    base = medians["installed"]
    print("interpreter: %s (%s)" % (sys.executable, sys.version.split()[0]))
    print("rounds:      %d, interleaved; medians" % args.rounds)
    print("%-28s %9s %7s %7s" % ("", "median", "ratio", "budget"))
    print("%-28s %7.1fms %7.2f" % ("installed", base * 1e3, 1.0))
    over = medians["pyz"] / base > BUDGET
    print("%-28s %7.1fms %7.2f %6.1fx %s" % ("pyz", medians["pyz"] * 1e3, medians["pyz"] / base, BUDGET, "OVER" if over else "ok"))
    print("%-28s %7.1fms %7.2f" % ("pyz, from the zip", medians["pyz, from the zip"] * 1e3, medians["pyz, from the zip"] / base))
    print("%-28s %7.1fms %7.2f" % ("pyz, first run (unpacks)", first * 1e3, first / base))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
