"""How much a full live check costs next to starting Python at all.

Budget (issue 2): a full live check with JSON output costs at most 4x `python -c pass` of the
same interpreter, text output at most 8x. Measured the same way every time: the commands run
interleaved, round after round, and each ratio is of medians. Text is measured both piped
(plain) and on a pseudo-terminal (colour through rich).

    python benchmarks/startup.py [--rounds 25]

Run it with the interpreter of the environment aidoctor is installed in.
"""

from __future__ import annotations

import argparse
import os
import pty
import shutil
import statistics
import subprocess
import sys
import time

BUDGETS = {"json": 4.0, "text (piped)": 8.0, "text (terminal)": 8.0}
# pip writes an installed package's bytecode; a shell that sets PYTHONDONTWRITEBYTECODE would
# make every measured run compile aidoctor from source, which no user's run does.
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def aidoctor_command():
    script = os.path.join(os.path.dirname(sys.executable), "aidoctor")
    if os.path.exists(script):
        return [script]
    found = shutil.which("aidoctor")
    return [found] if found else [sys.executable, "-m", "ai_doctor"]


def timed(command, terminal=False) -> float:
    start = time.perf_counter()
    if terminal:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(command, stdout=follower, stderr=subprocess.DEVNULL, env=ENVIRONMENT)
        os.close(follower)
        while True:
            try:
                if not os.read(leader, 65536):
                    break
            except OSError:
                break
        proc.wait()
        os.close(leader)
    else:
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENVIRONMENT)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--model-size", default="140G")
    args = parser.parse_args()
    tool = aidoctor_command()
    commands = {
        "python -c pass": ([sys.executable, "-c", "pass"], False),
        "json": (tool + ["--model-size", args.model_size, "--format", "json"], False),
        "text (piped)": (tool + ["--model-size", args.model_size], False),
        "text (terminal)": (tool + ["--model-size", args.model_size], True),
    }
    samples = {name: [] for name in commands}
    for command, terminal in commands.values():  # warm the page cache and bytecode
        timed(command, terminal)
    for _ in range(args.rounds):
        for name, (command, terminal) in commands.items():
            samples[name].append(timed(command, terminal))
    base = statistics.median(samples["python -c pass"])
    print("interpreter: %s (%s)" % (sys.executable, sys.version.split()[0]))
    print("command:     %s" % " ".join(tool))
    print("rounds:      %d, interleaved; medians" % args.rounds)
    if "PYTHONDONTWRITEBYTECODE" in os.environ:
        print("bytecode:    written by the warm-up run (PYTHONDONTWRITEBYTECODE is not passed on: an installed aidoctor has it)")
    print("%-16s %9s %7s %7s" % ("", "median", "ratio", "budget"))
    print("%-16s %7.1fms %7s %7s" % ("python -c pass", base * 1000, "1.00", ""))
    over = False
    for name in ("json", "text (piped)", "text (terminal)"):
        median = statistics.median(samples[name])
        ratio = median / base
        budget = BUDGETS[name]
        over = over or ratio > budget
        print("%-16s %7.1fms %7.2f %6.1fx %s" % (name, median * 1000, ratio, budget, "OVER" if ratio > budget else "ok"))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
