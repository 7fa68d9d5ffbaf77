"""The long fuzz run: mutated host trees, snapshot archives and JSON reports through aidoctor's
checkup, snapshot and replay, and merge, until the time is up (issue 13).

    python benchmarks/fuzz.py --minutes 60 [--seed S] [--jobs J] [--out DIR] [--as-user USER]
    python benchmarks/fuzz.py --replay DIR/recipe.json     # run one reproducer again
    python benchmarks/fuzz.py --case N [--seed S]          # run case N of campaign S again

Every execution runs aidoctor in-process (``ai_doctor.cli.main``) in a child forked from a
worker that imported everything once, with a time limit (``--timeout``, per command line) and
an address-space cap (``--memory-mib`` above the worker's own size). Progress lines give
executions per second, an execution being one aidoctor command line (a case runs several on
one input). Each distinct failure (its oracle, exception type and last frame in aidoctor's
code) is minimized and written to ``--out`` (default /tmp/aidoctor-fuzz) as a folder holding
``recipe.json``, which rebuilds it; every occurrence is a line of ``failures.jsonl``. The run
is reproducible from its seed: case N of seed S is always the same case.

``--as-user USER`` (as root) runs the workers as USER after everything is imported, so reads
are refused the way a normal user's are; or start the whole run as that user
(``runuser -u aidtest -- VENV/bin/python benchmarks/fuzz.py …``) with a Python that has this
checkout installed. Exit status: 0 when nothing failed, 1 when something did.

Run it with the interpreter of the environment aidoctor is installed in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from aidfuzz import campaign, cases, execute  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to run (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="the campaign's seed (default: from the clock, printed)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--out", default="/tmp/aidoctor-fuzz", help="where reproducers go (default /tmp/aidoctor-fuzz)")
    parser.add_argument("--as-user", metavar="USER", help="run the workers as USER (needs root)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per command line (default 10; 30 for the cases at the caps)")
    parser.add_argument("--memory-mib", type=int, default=512, help="address space a run may add, in MiB (default 512)")
    parser.add_argument("--heavy", type=float, default=0.005, help="share of cases with inputs at and beyond the size caps (default 0.005)")
    parser.add_argument("--quick", action="store_true", help="small inputs only, as the test suite's short run")
    parser.add_argument("--no-minimize", action="store_true", help="save failures as found, without shrinking them")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between progress lines (default 10)")
    parser.add_argument("--replay", metavar="RECIPE", help="run one recipe.json and print its failures")
    parser.add_argument("--case", type=int, help="run case N of --seed and print its recipe and failures")
    args = parser.parse_args(argv)
    limits = {"timeout": args.timeout, "memory_mib": args.memory_mib}
    if args.replay or args.case is not None:
        if args.replay:
            with open(args.replay, encoding="utf-8") as handle:
                recipe = json.load(handle)
        else:
            seed = cases.case_seed(args.seed or 1, args.case)
            recipe = cases.generate(seed, quick=args.quick, heavy_share=args.heavy)
            print(json.dumps(recipe, indent=1)[:20000])
        print("case: %s" % cases.describe(recipe))
        [(execs, failures)] = campaign.run_recipes([recipe], limits)
        for failure in failures:
            print("FAIL %s %s\n     %s" % (failure["oracle"], campaign.key_text(failure["key"]), failure.get("detail")))
        print("%d command lines, %d failures" % (execs, len(failures)))
        return 1 if failures else 0
    if args.as_user and os.geteuid() != 0:
        parser.error("--as-user needs root")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(
        "aidoctor fuzz: seed %d, %.1f minutes, %d job(s), out %s%s"
        % (seed, args.minutes, args.jobs, args.out, ", as %s" % args.as_user if args.as_user else ""),
        flush=True,
    )
    totals = campaign.run(
        seconds=args.minutes * 60,
        seed=seed,
        jobs=args.jobs,
        out_dir=args.out,
        quick=args.quick,
        heavy_share=0.0 if args.quick else args.heavy,
        timeout=args.timeout,
        memory_mib=args.memory_mib,
        as_user=args.as_user,
        minimize=not args.no_minimize,
        every=args.every,
        say=lambda text: print(text, flush=True),
    )
    print("oracles: %s" % ", ".join(sorted(execute.ORACLES)))
    for item in totals["distinct"]:
        print("  %-16s %s -> %s" % (item["oracle"], campaign.key_text(item["key"]), item["folder"]))
    return 1 if totals["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
