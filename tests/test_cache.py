"""The user's cache folder does not grow without end (doctor/cache.py): an entry for an earlier
version of the same file goes when the newer one is stored, an entry unused for a month goes
when the next is stored, a use keeps an entry (marking it at most once a day), and another run's
temporary file is left alone until it is a day old."""

from __future__ import annotations

import os
import time

from ai_doctor import cache

DAY = 86400


def _derived(tmp_path):
    return tmp_path / "cache" / "aidoctor" / "derived"


def _age(path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def test_a_file_rewritten_in_place_keeps_one_entry_and_other_files_keep_theirs(tmp_path):
    source, other = tmp_path / "status", tmp_path / "other"
    source.write_text("v1\n")
    other.write_text("x\n")
    cache.store("dpkg-nvidia", os.stat(other), "other's")
    first = os.stat(source)
    cache.store("dpkg-nvidia", first, "one")
    cache.store("modinfo", first, "the same file, another kind")
    source.write_text("version two\n")  # the same inode, a new size and time
    second = os.stat(source)
    assert second.st_ino == first.st_ino
    cache.store("dpkg-nvidia", second, "two")
    assert cache.lookup("dpkg-nvidia", second) == "two"
    assert cache.lookup("dpkg-nvidia", first) is None
    assert cache.lookup("modinfo", first) == "the same file, another kind"
    assert cache.lookup("dpkg-nvidia", os.stat(other)) == "other's"
    assert len(os.listdir(_derived(tmp_path))) == 3


def test_an_entry_unused_for_a_month_goes_when_the_next_is_stored(tmp_path):
    files = [tmp_path / name for name in ("a", "b", "c", "d")]
    for number, path in enumerate(files):
        path.write_text(str(number))
        cache.store("modinfo", os.stat(path), "entry %d" % number)
    entries = {path: _derived(tmp_path) / cache._entry("modinfo", os.stat(path)).rsplit("/", 1)[1] for path in files}
    _age(entries[files[0]], 31)  # unused for a month
    _age(entries[files[1]], 29)  # used within it
    _age(entries[files[2]], 31)
    # A run that used the third one today marks it: it stays.
    assert cache.lookup("modinfo", os.stat(files[2])) == "entry 2"
    assert entries[files[2]].stat().st_mtime > time.time() - 60
    fresh_temporary = _derived(tmp_path) / "modinfo-1-2-3-4-5.999.tmp"  # another run writing now
    stale_temporary = _derived(tmp_path) / "modinfo-1-2-3-4-6.998.tmp"  # left by a run that died
    fresh_temporary.write_text("half")
    stale_temporary.write_text("half")
    _age(stale_temporary, 2)
    nothing_before = list(_derived(tmp_path).iterdir())
    assert entries[files[0]] in nothing_before  # a lookup alone deletes nothing
    (tmp_path / "e").write_text("new")
    cache.store("modinfo", os.stat(tmp_path / "e"), "entry 4")
    left = sorted(path.name for path in _derived(tmp_path).iterdir())
    assert left == sorted(
        [entries[files[1]].name, entries[files[2]].name, entries[files[3]].name, fresh_temporary.name]
        + [cache._entry("modinfo", os.stat(tmp_path / "e")).rsplit("/", 1)[1]]
    )


def test_a_use_writes_nothing_when_the_entry_was_marked_today(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    cache.store("modinfo", os.stat(path), "kept")
    entry = cache._entry("modinfo", os.stat(path))
    then = time.time() - DAY / 2
    os.utime(entry, (then, then))
    assert cache.lookup("modinfo", os.stat(path)) == "kept"
    assert os.stat(entry).st_mtime == then


def test_compiled_templates_unused_for_a_month_go_when_one_is_stored(tmp_path):
    code = compile("x = 1", "<template>", "exec")
    cache.store_code("a" * 64, code)
    cache.store_code("b" * 64, code)
    folder = tmp_path / "cache" / "aidoctor" / "templates"
    _age(folder / ("a" * 64), 40)
    _age(folder / ("b" * 64), 40)
    # Loading one is a use: it stays; the other goes when the next is stored.
    assert cache.load_code("b" * 64) is not None
    cache.store_code("c" * 64, code)
    assert sorted(path.name for path in folder.iterdir()) == ["b" * 64, "c" * 64]
