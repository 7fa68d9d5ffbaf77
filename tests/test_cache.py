"""The user's cache folder does not grow without end (doctor/cache.py): an entry for an earlier
version of the same file goes when the newer one is stored, an entry unused for a month goes
when the next is stored, a use keeps an entry (marking it at most once a day), and another run's
temporary file is left alone until it is a day old. Nothing outside the user's own folders is
ever read, written or deleted: not through a link planted where a folder should be, not in a
folder others can write, not in another user's cache (a root run with that user's HOME)."""

from __future__ import annotations

import os
import time

import pytest

from ai_doctor import cache

DAY = 86400


def _next_run():
    """As a new process finds the cache: a run opens its folder once and keeps it open."""
    for _path, fd in cache._opened.values():
        if fd is not None:
            os.close(fd)
    cache._opened.clear()


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
    entries = {path: _derived(tmp_path) / cache._entry_name("modinfo", os.stat(path)) for path in files}
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
        + [cache._entry_name("modinfo", os.stat(tmp_path / "e"))]
    )


def test_a_use_writes_nothing_when_the_entry_was_marked_today(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    cache.store("modinfo", os.stat(path), "kept")
    entry = _derived(tmp_path) / cache._entry_name("modinfo", os.stat(path))
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


def _old_files(folder, count=3):
    """Files a month and more old, named as entries are: what a prune would delete."""
    made = []
    for number in range(count):
        path = folder / ("modinfo-1-%d-3-4-5" % number)
        path.write_text("someone else's")
        _age(path, 60)
        made.append(path)
    return made


@pytest.mark.parametrize("where", ["aidoctor", "derived"])
def test_a_link_where_a_cache_folder_should_be_is_never_followed(tmp_path, where):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "derived").mkdir(parents=True)
    # Old files there, one named as the next entry will be: none may be read, replaced or deleted.
    kept = _old_files(elsewhere) + _old_files(elsewhere / "derived")
    source = tmp_path / "f"
    source.write_text("x")
    (elsewhere / "derived" / cache._entry_name("modinfo", os.stat(source))).write_text("planted")
    (tmp_path / "cache" / "aidoctor").mkdir(parents=True)
    if where == "aidoctor":
        (tmp_path / "cache" / "aidoctor").rmdir()
        (tmp_path / "cache" / "aidoctor").symlink_to(elsewhere)
    else:
        (tmp_path / "cache" / "aidoctor" / "derived").symlink_to(elsewhere / "derived")
    assert cache.lookup("modinfo", os.stat(source)) is None
    cache.store("modinfo", os.stat(source), "new")
    cache.store_code("a" * 64, compile("x = 1", "<t>", "exec"))
    assert all(path.read_text() == "someone else's" for path in kept)
    planted = cache._entry_name("modinfo", os.stat(source))
    assert (elsewhere / "derived" / planted).read_text() == "planted"
    assert sorted(path.name for path in elsewhere.rglob("*")) == sorted([path.name for path in kept] + ["derived", planted])


def test_a_cache_folder_others_can_write_or_another_users_is_not_used(tmp_path, monkeypatch):
    source = tmp_path / "f"
    source.write_text("x")
    cache.store("modinfo", os.stat(source), "kept")
    derived = _derived(tmp_path)
    old = _old_files(derived)
    derived.chmod(0o777)
    _next_run()
    assert cache.lookup("modinfo", os.stat(source)) is None  # anyone could have written it
    (tmp_path / "g").write_text("y")
    cache.store("modinfo", os.stat(tmp_path / "g"), "new")
    assert all(path.exists() for path in old) and not (derived / cache._entry_name("modinfo", os.stat(tmp_path / "g"))).exists()
    derived.chmod(0o700)
    _next_run()
    assert cache.lookup("modinfo", os.stat(source)) == "kept"
    if os.geteuid() == 0:
        # A root run with another user's HOME: that user's cache is theirs, and so is making one.
        os.chown(tmp_path / "cache", 65534, 65534)
        _next_run()
        assert cache.lookup("modinfo", os.stat(source)) is None
        cache.store("modinfo", os.stat(tmp_path / "g"), "new")
        assert all(path.exists() for path in old) and not (derived / cache._entry_name("modinfo", os.stat(tmp_path / "g"))).exists()
        fresh = tmp_path / "home"
        fresh.mkdir()
        os.chown(fresh, 65534, 65534)
        monkeypatch.setenv("XDG_CACHE_HOME", str(fresh / ".cache"))
        cache.store("modinfo", os.stat(source), "x")
        assert not (fresh / ".cache").exists()


def test_what_the_cache_did_not_write_is_left_alone_and_a_link_goes_as_a_link(tmp_path):
    source = tmp_path / "f"
    source.write_text("x")
    cache.store("modinfo", os.stat(source), "kept")
    derived = _derived(tmp_path)
    (derived / "a-folder").mkdir()
    os.mkfifo(str(derived / "a-fifo"))
    target = tmp_path / "target"
    target.write_text("not the cache's")
    (derived / "a-link").symlink_to(target)
    for name in ("a-folder", "a-fifo"):
        _age(derived / name, 60)
    then = time.time() - 60 * DAY
    os.utime(derived / "a-link", (then, then), follow_symlinks=False)
    _age(target, 60)
    (tmp_path / "g").write_text("y")
    cache.store("modinfo", os.stat(tmp_path / "g"), "new")
    assert (derived / "a-folder").is_dir() and (derived / "a-fifo").exists()
    assert not os.path.lexists(derived / "a-link") and target.read_text() == "not the cache's"


def test_a_file_larger_than_any_entry_is_not_read_and_is_replaced(tmp_path, monkeypatch):
    from ai_doctor.host import DERIVED_CAP

    assert cache._MAX_TEXT >= DERIVED_CAP + 64  # an entry holds a derivation's whole text
    monkeypatch.setattr(cache, "_MAX_TEXT", 100)
    source = tmp_path / "f"
    source.write_text("x")
    cache.store("modinfo", os.stat(source), "y" * 101)
    entry = _derived(tmp_path) / cache._entry_name("modinfo", os.stat(source))
    _age(entry, 10)
    assert cache.lookup("modinfo", os.stat(source)) is None
    assert entry.stat().st_mtime < time.time() - 9 * DAY  # not marked as used: it ages out
    cache.store("modinfo", os.stat(source), "short")
    assert cache.lookup("modinfo", os.stat(source)) == "short"


def test_a_relative_cache_home_is_ignored_and_times_to_come_are_not_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    source = tmp_path / "f"
    source.write_text("x")
    cache.store("modinfo", os.stat(source), "kept")
    assert not (tmp_path / "relative").exists()
    derived = tmp_path / "home/.cache/aidoctor/derived"
    assert cache.lookup("modinfo", os.stat(source)) == "kept"
    planted = derived / "modinfo-9-9-9-9-9"
    planted.write_text("dated ahead")
    later = time.time() + 400 * DAY
    os.utime(planted, (later, later))
    (tmp_path / "g").write_text("y")
    cache.store("modinfo", os.stat(tmp_path / "g"), "next")
    assert not planted.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a folder of another user's")
def test_a_cache_reached_through_a_folder_another_user_controls_is_not_used(tmp_path, monkeypatch):
    # A root run with a user's HOME whose .cache that user made a link to a folder of root's:
    # that user could swap the folders, so nothing there is read, written or deleted.
    rootowned = tmp_path / "rootowned"
    (rootowned / "aidoctor" / "derived").mkdir(parents=True)
    old = _old_files(rootowned / "aidoctor" / "derived")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").symlink_to(rootowned)
    os.chown(home, 65534, 65534)
    os.lchown(home / ".cache", 65534, 65534)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    source = tmp_path / "f"
    source.write_text("x")
    cache.store("modinfo", os.stat(source), "new")
    cache.store_code("a" * 64, compile("x = 1", "<t>", "exec"))
    assert sorted(path.name for path in rootowned.rglob("*")) == sorted(["aidoctor", "derived"] + [path.name for path in old])
    # A folder above that anyone may rename entries in (not sticky, as /tmp is): the same.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared / "cache"))
    cache.store("modinfo", os.stat(source), "new")
    assert not (shared / "cache").exists()
    shared.chmod(0o1777)
    _next_run()
    cache.store("modinfo", os.stat(source), "new")
    assert cache.lookup("modinfo", os.stat(source)) == "new"
