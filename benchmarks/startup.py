"""How much each everyday aidoctor command costs next to starting Python at all.

Budgets (issue 17), as ratios of medians to `python -c pass` of the same interpreter:

    live check, JSON                                     3.0x
    live check, text piped                               3.5x
    live check, text on a terminal (colour, rich)        8.0x
    --version, --list-rules                              2.5x
    --root image whose /boot config is 330 KB            3.5x
    live check, JSON, in a venv with 200 distributions   3.0x (to that venv's python -c pass)

Two floors are printed beside them, without budgets: Python with ``re`` and ``json``, and with
every module a JSON check imports, before it reads a file (each exiting as the command does).

Measured the same way every time: every command runs as a fresh process of the installed CLI,
interleaved round after round, and each ratio is of medians. The image is a copy of the
image-ubuntu-clean fixture whose kernel configs are grown to a distribution's 330 KB. The
crowded venv is a new venv that sees this environment through a .pth file and holds 200 more
distributions, each with METADATA, RECORD and most with entry_points.txt, as an ML venv does:
what the rule plugins' entry-point lookup walks.

    python benchmarks/startup.py [--rounds 25] [--instructions]

``--instructions`` also counts each command's instructions under valgrind's callgrind (one run
each, within 0.2% from try to try): where wall-clock medians of a busy machine drift by a tenth
between batches, the count shows what a change saved.

Run it with the interpreter of a regular install (`pip install .`): an editable install adds
its import hook to every start and is reported as such.
"""

from __future__ import annotations

import argparse
import os
import pty
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
CONFIG_SIZE = 330 * 1024
DISTRIBUTIONS = 200
# name: (budget, the baseline it is measured against)
BUDGETS = {
    "json": (3.0, "python -c pass"),
    "text (piped)": (3.5, "python -c pass"),
    "text (terminal)": (8.0, "python -c pass"),
    "--version": (2.5, "python -c pass"),
    "--list-rules": (2.5, "python -c pass"),
    "image, 330 KB config": (3.5, "python -c pass"),
    "json, 200-dist venv": (3.0, "python -c pass (200-dist venv)"),
}
# pip writes an installed package's bytecode; a shell that sets PYTHONDONTWRITEBYTECODE would
# make every measured run compile aidoctor from source, which no user's run does.
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def aidoctor_command():
    script = os.path.join(os.path.dirname(sys.executable), "aidoctor")
    if os.path.exists(script):
        return [script]
    found = shutil.which("aidoctor")
    return [found] if found else [sys.executable, "-m", "ai_doctor"]


def timed(command, terminal=False, env=None) -> float:
    """Seconds one run of ``command`` takes, its output discarded (read from a terminal where
    ``terminal``), in ``env`` (this environment without PYTHONDONTWRITEBYTECODE by default)."""
    env = ENVIRONMENT if env is None else env
    start = time.perf_counter()
    if terminal:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(command, stdout=follower, stderr=subprocess.DEVNULL, env=env)
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
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def baseline_of(name: str) -> str:
    """The command ``name``'s ratio is taken against."""
    return BUDGETS[name][1] if name in BUDGETS else "python -c pass"


def instructions(command, terminal=False) -> int:
    """Instructions one run of ``command`` executes in user space, counted by callgrind."""
    with tempfile.NamedTemporaryFile(prefix="aidoctor-callgrind-") as log:
        timed(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--log-file=" + log.name] + command, terminal)
        for line in Path(log.name).read_text().splitlines():
            if "I   refs:" in line:
                return int(line.rsplit(":", 1)[1].replace(",", ""))
    raise SystemExit("valgrind counted nothing for %s" % " ".join(command))


def editable() -> bool:
    """Whether aidoctor is imported from this checkout rather than an installed copy."""
    done = subprocess.run(
        [sys.executable, "-c", "import ai_doctor; print(ai_doctor.__file__)"], capture_output=True, text=True, env=ENVIRONMENT
    )
    return Path(done.stdout.strip()).resolve().is_relative_to(CHECKOUT)


# The modules a JSON check imports, printed by a check run in this interpreter.
CHECK_MODULES = """
import os, sys
from ai_doctor.cli import main
sys.stdout = open(os.devnull, "w")
main(sys.argv[1:])
sys.stdout = sys.__stdout__
print(" ".join(name for name in sys.modules if name.startswith("ai_doctor")))
"""


def floors(size) -> dict:
    """What a check costs before it reads anything: the interpreter with ``re`` and ``json``
    (which pip's script and the JSON output import anyway), and with every module a JSON check
    imports; each exits as the command does (os._exit, no interpreter teardown)."""
    done = subprocess.run([sys.executable, "-c", CHECK_MODULES] + size + ["--format", "json"], capture_output=True, text=True, check=True)
    names = done.stdout.split()
    imports = "import os, re, json\nfor name in %r: __import__(name)\nos._exit(0)" % names
    return {
        "floor: re + json": ([sys.executable, "-c", "import os, re, json; os._exit(0)"], False),
        "floor: + a check's imports": ([sys.executable, "-c", imports], False),
    }


def image_tree(work: Path) -> Path:
    """The image-ubuntu-clean fixture with each /boot config grown to 330 KB of options."""
    tree = work / "image"
    shutil.copytree(CHECKOUT / "fixtures" / "image-ubuntu-clean" / "root", tree, symlinks=True)
    for config in sorted((tree / "boot").glob("config-*")):
        text = config.read_text()
        lines = []
        size = len(text)
        number = 0
        while size < CONFIG_SIZE:
            # A distribution's mix: modules, built-ins, unset options, values.
            line = ("CONFIG_PADDING_DRIVER_%05d=m", "CONFIG_PADDING_CORE_%05d=y", "# CONFIG_PADDING_OFF_%05d is not set")[number % 3]
            line = (line % number) + "\n"
            lines.append(line)
            size += len(line)
            number += 1
        # The fixture's own options last: a lookup walks past the padding first.
        config.write_text("".join(lines) + text)
    return tree


def crowded_venv(work: Path):
    """A venv that imports this environment's aidoctor and holds 200 other distributions;
    returns its python and its aidoctor script."""
    venv = work / "crowded"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
        ).stdout.strip()
    )
    (site / "aidoctor-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for number in range(DISTRIBUTIONS):
        name = "package_%03d" % number
        info = site / ("%s-1.%d.0.dist-info" % (name, number))
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: %s\nVersion: 1.%d.0\nSummary: padding\n" % (name, number))
        (info / "RECORD").write_text("%s/__init__.py,,\n%s,,\n" % (name, info.name + "/METADATA"))
        (info / "INSTALLER").write_text("pip\n")
        if number % 4:
            (info / "entry_points.txt").write_text(
                "[console_scripts]\n%s = %s.cli:main\n\n[%s.plugins]\nstandard = %s.plugins:standard\n" % (name, name, name, name)
            )
    script = venv / "bin" / "aidoctor"
    script.write_text("#!%s\nimport sys\nfrom ai_doctor.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n" % python)
    script.chmod(0o755)
    return [str(python)], [str(script)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--model-size", default="140G")
    parser.add_argument("--instructions", action="store_true", help="also count instructions under valgrind (callgrind)")
    args = parser.parse_args()
    if args.instructions and not shutil.which("valgrind"):
        raise SystemExit("startup.py: --instructions needs valgrind (Debian: apt install valgrind)")
    tool = aidoctor_command()
    size = ["--model-size", args.model_size]
    with tempfile.TemporaryDirectory(prefix="aidoctor-startup-") as work:
        image = image_tree(Path(work))
        crowded_python, crowded_tool = crowded_venv(Path(work))
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], False),
            **floors(size),
            "json": (tool + size + ["--format", "json"], False),
            "text (piped)": (tool + size, False),
            "text (terminal)": (tool + size, True),
            "--version": (tool + ["--version"], False),
            "--list-rules": (tool + ["--list-rules"], False),
            "image, 330 KB config": (tool + size + ["--root", str(image), "--format", "json"], False),
            "python -c pass (200-dist venv)": (crowded_python + ["-c", "pass"], False),
            "json, 200-dist venv": (crowded_tool + size + ["--format", "json"], False),
        }
        samples = {name: [] for name in commands}
        for command, terminal in commands.values():  # warm the page cache and bytecode
            timed(command, terminal)
        for _ in range(args.rounds):
            for name, (command, terminal) in commands.items():
                samples[name].append(timed(command, terminal))
        counts = {name: instructions(command, terminal) for name, (command, terminal) in commands.items()} if args.instructions else {}
    medians = {name: statistics.median(times) for name, times in samples.items()}
    print("interpreter: %s (%s)" % (sys.executable, sys.version.split()[0]))
    print("command:     %s" % " ".join(tool))
    if editable():
        print("install:     EDITABLE (imported from this checkout): its import hook costs every start; measure `pip install .`")
    print("rounds:      %d, interleaved; medians" % args.rounds)
    print("%-32s %9s %7s %7s" % ("", "median", "ratio", "budget"))
    over = False
    for name, median in medians.items():
        baseline = baseline_of(name)
        if name.startswith("floor"):
            print("%-32s %7.1fms %7.2f" % (name, median * 1000, median / medians[baseline]))
        elif name not in BUDGETS:
            print("%-32s %7.1fms %7s" % (name, median * 1000, "1.00"))
        else:
            budget = BUDGETS[name][0]
            ratio = median / medians[baseline]
            over = over or ratio > budget
            print("%-32s %7.1fms %7.2f %6.1fx %s" % (name, median * 1000, ratio, budget, "OVER" if ratio > budget else "ok"))
    if counts:
        print("\ninstructions (callgrind, user space, one run each)")
        for name, count in counts.items():
            print("%-32s %8.1fM %6.2f" % (name, count / 1e6, count / counts[baseline_of(name)]))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
