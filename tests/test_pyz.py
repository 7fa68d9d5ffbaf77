"""aidoctor.pyz as a user meets it: built by pyz/build.py, copied alone to a folder and run by a
system Python with no aidoctor installed, oldest and newest this machine has."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import build_pyz, fixture_root

GUIDE = fixture_root("guide-followed-literally")
MAX_SIZE = 5_000_000
HELD = (
    "ai_doctor/rules/hugepages.py",
    "ai_doctor/reports/templates/report.html.j2",
    "rich/console.py",
    "jinja2/environment.py",
    "markupsafe/_native.py",
    "packaging/version.py",
    "elftools/elf/elffile.py",
    "markdown_it/main.py",
    "pygments/lexer.py",
)


def interpreters() -> dict:
    """(major, minor) → a CPython of that version on this machine: on PATH or under pyenv."""
    found = {}
    roots = [os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")]
    for minor in range(8, 15):
        candidates = []
        for root in roots:
            candidates += sorted(glob.glob(os.path.join(root, "versions", "3.%d.*" % minor, "bin", "python3")))
        candidates.append(shutil.which("python3.%d" % minor))
        for path in candidates:
            # pyenv's shims answer for every version and run only the chosen one.
            if path and "/shims/" not in path and os.access(path, os.X_OK):
                found[(3, minor)] = path
                break
    return found


def run_pyz(python: str, pyz: Path, args, cache: Path, **environment):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIDOCTOR", "PYTHON", "VIRTUAL_ENV"))}
    env.update(XDG_CACHE_HOME=str(cache), **environment)
    # From the pyz's folder, so nothing of this checkout can be imported by accident.
    return subprocess.run([python, str(pyz)] + list(args), capture_output=True, text=True, env=env, cwd=str(pyz.parent), timeout=120)


def comparable(report: str) -> dict:
    data = json.loads(report)
    data.pop("created")
    return data


def test_the_build_is_reproducible_small_and_holds_only_pure_python(pinned_wheels, built_pyz, tmp_path):
    pyz = built_pyz
    again = build_pyz(pinned_wheels, tmp_path / "again.pyz")
    assert again.read_bytes() == pyz.read_bytes()
    assert pyz.stat().st_size < MAX_SIZE and os.access(pyz, os.X_OK)
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
        assert names[0] == "__main__.py" and names[1:] == sorted(names[1:])
        assert not [name for name in names if name.endswith((".so", ".pyc")) or "__pycache__" in name]
        assert all("lib/" + member in names for member in HELD)
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_runs_alone_with_a_system_python_and_answers_as_the_installed_command(built_pyz, tmp_path, run, which):
    pyz = built_pyz
    found = interpreters()
    usable = sorted(version for version in found if version >= (3, 9))
    if not usable:
        pytest.skip("no Python 3.9 or newer found")
    python = found[usable[0] if which == "oldest" else usable[-1]]
    expected = run("--root", GUIDE, "--model-size", "140G", "--format", "json")
    done = run_pyz(python, pyz, ["--root", GUIDE, "--model-size", "140G", "--format", "json"], tmp_path / "cache")
    assert done.returncode == expected.code, done.stderr
    assert comparable(done.stdout) == comparable(expected.out)
    # Unpacked once, into the cache it names; the second run imports from there.
    assert [p.name for p in (tmp_path / "cache" / "aidoctor" / "pyz").iterdir()] and not list(tmp_path.glob("cache/aidoctor/pyz/*.*"))
    again = run_pyz(python, pyz, ["--version"], tmp_path / "cache")
    assert again.returncode == 0 and again.stdout.startswith("aidoctor ")


def test_without_a_cache_it_runs_from_the_zip_and_writes_nothing(built_pyz, tmp_path, run):
    pyz = built_pyz
    expected = run("--root", GUIDE, "--format", "json")
    # Its own cache folder: the suite's (tmp_path / "cache") is the in-process run's.
    done = run_pyz(sys.executable, pyz, ["--root", GUIDE, "--format", "json"], tmp_path / "pyz-cache", AIDOCTOR_NO_CACHE="1")
    assert done.returncode == expected.code and comparable(done.stdout) == comparable(expected.out)
    assert not (tmp_path / "pyz-cache").exists()


def test_an_unpacked_copy_others_can_write_is_never_run(built_pyz, tmp_path, run):
    pyz = built_pyz
    first = run_pyz(sys.executable, pyz, ["--version"], tmp_path / "cache")
    assert first.returncode == 0
    (unpacked,) = (tmp_path / "cache" / "aidoctor" / "pyz").iterdir()
    (unpacked / "ai_doctor" / "cli.py").write_text("import sys\ndef main():\n    print('planted')\n    sys.exit(0)\n")
    shutil.rmtree(unpacked / "ai_doctor" / "__pycache__", ignore_errors=True)
    unpacked.chmod(0o777)
    done = run_pyz(sys.executable, pyz, ["--root", GUIDE, "--format", "json"], tmp_path / "cache")
    assert "planted" not in done.stdout and done.returncode == run("--root", GUIDE, "--format", "json").code


def _launcher():
    """pyz/main.py as a module, to call its parts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pyz_main", str(Path(__file__).parent.parent / "pyz" / "main.py"))
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    return launcher


def test_copies_of_other_builds_unused_for_a_month_go_when_a_new_build_unpacks(built_pyz, tmp_path):
    import time

    folder = tmp_path / "cache" / "aidoctor" / "pyz"
    folder.mkdir(parents=True, mode=0o700)
    now = time.time()

    def made(name, age_days, marks=(".complete", ".used")):
        copy = folder / name
        (copy / "ai_doctor").mkdir(parents=True)
        (copy / "ai_doctor" / "cli.py").write_text("")
        for mark in marks:
            (copy / mark).write_text("")
        stamp = copy / marks[-1] if marks else copy
        os.utime(stamp, (now - age_days * 86400, now - age_days * 86400))
        return copy

    gone = [
        made("0" * 32, 45),
        made("3" * 32 + ".k2j4_a9x", 2, marks=()),  # an unpacking a run abandoned
    ]
    kept = [
        made("1" * 32, 20),
        made("2" * 32, -3),  # marked ahead of now: a machine sharing the cache, its clock ahead
        made("4" * 32 + ".a9x1bb0q", 0, marks=()),  # another run unpacking now
        made("6" * 32, 45, marks=(".complete",)),  # a build's from before copies were marked
        # AIDOCTOR_PYZ_CACHE may name a folder that holds more than builds: only theirs go.
        made("7" * 32, 45, marks=()),
        made("8" * 32 + ".journal", 45, marks=()),
        made("projects", 90, marks=()),
    ]
    # A link where a copy would be leads elsewhere: removed never, nor what it leads to.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "ai_doctor").mkdir(parents=True)
    for mark in (".complete", ".used"):
        (elsewhere / mark).write_text("")
        os.utime(elsewhere / mark, (now - 90 * 86400, now - 90 * 86400))
    (folder / ("5" * 32)).symlink_to(elsewhere)
    kept.append(folder / ("5" * 32))
    assert run_pyz(sys.executable, built_pyz, ["--version"], tmp_path / "cache").returncode == 0
    left = sorted(path.name for path in folder.iterdir())
    (mine,) = [name for name in left if name not in {path.name for path in kept}]
    assert left == sorted([mine] + [path.name for path in kept]) and (elsewhere / ".used").exists()
    assert not any(path.exists() for path in gone)
    # The mark of a build from before .used (its .complete) is kept fresh too.
    complete = folder / mine / ".complete"
    os.utime(complete, (now - 40 * 86400, now - 40 * 86400))
    os.utime(folder / mine / ".used", (now - 3 * 86400, now - 3 * 86400))
    assert run_pyz(sys.executable, built_pyz, ["--version"], tmp_path / "cache").returncode == 0
    assert abs(complete.stat().st_mtime - time.time()) < 60
    # A run marks its copy used, at most once a day: a copy in use is never a month unused.
    used = folder / mine / ".used"
    os.utime(used, (now - 3 * 86400, now - 3 * 86400))
    assert run_pyz(sys.executable, built_pyz, ["--version"], tmp_path / "cache").returncode == 0
    assert abs(used.stat().st_mtime - time.time()) < 60
    os.utime(used, (now - 3600, now - 3600))
    assert run_pyz(sys.executable, built_pyz, ["--version"], tmp_path / "cache").returncode == 0
    assert used.stat().st_mtime == now - 3600


def test_a_copy_that_cannot_be_marked_used_is_still_imported_from(tmp_path, monkeypatch):
    # A cache filled once and then read-only (a container's): the mark fails, the copy serves.
    import errno

    launcher = _launcher()
    monkeypatch.setattr(launcher, "DIGEST", "9" * 32)
    copy = tmp_path / "pyz" / ("9" * 32)
    (copy / "ai_doctor").mkdir(parents=True, mode=0o700)
    for folder in (tmp_path / "pyz", copy):
        folder.chmod(0o700)
    for mark in (".complete", ".used"):
        (copy / mark).write_text("")
        os.utime(copy / mark, (1, 1))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "utime", read_only)
    monkeypatch.setenv("AIDOCTOR_PYZ_CACHE", str(tmp_path / "pyz"))
    monkeypatch.delenv("AIDOCTOR_NO_CACHE", raising=False)
    assert launcher._unpacked(str(tmp_path / "aidoctor.pyz")) == str(copy)


def test_an_older_python_is_told_which_it_needs(built_pyz, tmp_path):
    pyz = built_pyz
    old = interpreters().get((3, 8))
    if old is None:
        pytest.skip("no Python 3.8 here")
    done = run_pyz(old, pyz, ["--version"], tmp_path / "cache")
    assert done.returncode == 2 and done.stderr == "aidoctor: error: needs Python 3.9 or newer; this is 3.8\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a folder of another user's")
def test_a_cache_in_another_users_home_is_neither_made_nor_used(built_pyz, tmp_path, run):
    # Root with a user's HOME: that user could swap the folders code is imported from during
    # the run, so the code runs from the zip and nothing is made in the home.
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    done = run_pyz(sys.executable, built_pyz, ["--root", GUIDE, "--format", "json"], home / ".cache")
    assert done.returncode == run("--root", GUIDE, "--format", "json").code and json.loads(done.stdout)["findings"]
    assert list(home.iterdir()) == []


def test_the_launcher_and_the_cache_agree_on_whose_folders_lead_to_it(tmp_path):
    from ai_doctor import cache

    launcher = _launcher()
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "sticky").mkdir()
    (tmp_path / "sticky").chmod(0o1777)
    (tmp_path / "link").symlink_to(tmp_path / "open")
    paths = ["/", "/tmp/x", str(tmp_path / "open" / "x"), str(tmp_path / "sticky" / "x"), str(tmp_path / "link" / "x"), str(tmp_path / "x")]
    if os.geteuid() == 0:
        (tmp_path / "theirs").mkdir()
        os.chown(tmp_path / "theirs", 65534, 65534)
        paths.append(str(tmp_path / "theirs" / "x"))
    answers = [(launcher._only_ours_above(path), cache._only_ours_above(path, os.geteuid())) for path in paths]
    assert all(mine == theirs for mine, theirs in answers), answers
    assert [mine for mine, _ in answers][2:] == [False, True, False, True] + ([False] if os.geteuid() == 0 else [])
