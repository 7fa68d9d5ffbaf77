"""Work a start must not do, kept from creeping back. No timing here: benchmarks/startup.py
measures the ratios; these tests hold the causes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EVERY_MODULE = """
import os, pkgutil, re, sys, importlib
import ai_doctor
package = os.path.dirname(ai_doctor.__file__)
regex_code = os.path.dirname(re.__file__)
compiled = []
original = re._compile

def spy(pattern, flags):
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(regex_code):
        frame = frame.f_back
    if frame is not None and frame.f_code.co_filename.startswith(package):
        compiled.append("%s:%d %r" % (frame.f_code.co_filename[len(package) + 1:], frame.f_lineno, pattern))
    return original(pattern, flags)

re._compile = spy
names = [name for _, name, _ in pkgutil.walk_packages(ai_doctor.__path__, "ai_doctor.") if not name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(len(names))
print("\\n".join(compiled))
"""


def test_no_module_compiles_a_pattern_when_imported():
    # A compile costs about 0.1 ms and a run uses few of the sixty patterns: they stay strings
    # and re compiles each on first use (and keeps it in its cache).
    done = subprocess.run([sys.executable, "-c", EVERY_MODULE], capture_output=True, text=True, check=True)
    count, *compiled = done.stdout.strip().split("\n")
    assert int(count) > 60
    assert compiled == []


LOADED_BY = """
import sys
from ai_doctor.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
assert code in (0, 1), code
print("\\n".join(sorted(name for name in sys.modules if name.startswith("ai_doctor.rules."))), file=sys.stderr)
"""


def rule_modules_loaded_by(*argv):
    done = subprocess.run([sys.executable, "-c", LOADED_BY] + list(argv), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [name for name in done.stderr.split("\n") if name]


def test_the_rule_list_and_an_area_are_read_from_the_catalogue_without_the_rules():
    # Importing every rule module (and the fact modules they use) costs more than Python's start.
    assert rule_modules_loaded_by("--list-rules") == ["ai_doctor.rules._catalogue"]
    assert rule_modules_loaded_by("--list-rules", "--format", "json", "--skip", "gpu") == ["ai_doctor.rules._catalogue"]
    assert rule_modules_loaded_by("explain", "gpu") == ["ai_doctor.rules._catalogue"]
    # One rule's docs: its module alone.
    assert rule_modules_loaded_by("explain", "thp.disabled") == ["ai_doctor.rules._catalogue", "ai_doctor.rules.thp"]


def test_a_run_of_some_rules_imports_only_their_modules():
    tree = str(Path(__file__).resolve().parents[1] / "fixtures" / "image-ubuntu-clean" / "root")
    loaded = rule_modules_loaded_by("--root", tree, "--only", "cpu", "--only", "thp.disabled", "--format", "json")
    assert loaded == ["ai_doctor.rules._catalogue", "ai_doctor.rules.cpu", "ai_doctor.rules.thp"]


def test_a_replay_reads_the_archive_without_tarfile(tmp_path):
    # tarfile's import and its second parse of every header were most of what a replay cost;
    # a gzip'd archive needs neither bz2 nor lzma.
    tree = str(Path(__file__).resolve().parents[1] / "fixtures" / "image-ubuntu-clean" / "root")
    archive = str(tmp_path / "image.tar.gz")
    subprocess.run([sys.executable, "-m", "ai_doctor", "snapshot", "--root", tree, "-o", archive], check=True, capture_output=True)
    replay = (
        "import sys\nfrom ai_doctor.cli import main\ncode = main(['--snapshot', %r, '--format', 'json'])\n"
        "print(code, *sorted({'tarfile', 'bz2', 'lzma'} & set(sys.modules)), file=sys.stderr)" % archive
    )
    done = subprocess.run([sys.executable, "-c", replay], capture_output=True, text=True)
    assert done.stderr.strip().split("\n")[-1] == "0", done.stderr
