"""Work a start must not do, kept from creeping back. No timing here: benchmarks/startup.py
measures the ratios; these tests hold the causes."""

from __future__ import annotations

import subprocess
import sys

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
