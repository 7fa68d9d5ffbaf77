"""Compiled HTML templates kept between runs (reports/html.py): compiled once, then read from
the user's cache folder; an entry that another user could have written, a torn or corrupt one,
or one made from other template text, options or versions is never used, and nothing about the
cache can break a run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import fixture_root

GUIDE = fixture_root("guide-followed-literally")


@pytest.fixture
def compiles(monkeypatch):
    """The names of the templates jinja2 compiles from source, in order."""
    import jinja2

    names = []
    original = jinja2.Environment.compile

    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
        names.append(name)
        return original(self, source, name, filename, raw, defer_init)

    monkeypatch.setattr(jinja2.Environment, "compile", compile)
    return names


@pytest.fixture
def folder(tmp_path):
    """Where the entries go: the suite sets XDG_CACHE_HOME to the test's own ``cache``."""
    return tmp_path / "cache" / "aidoctor" / "templates"


def _render(templates, **options) -> str:
    """``page`` of ``templates`` (name → text), in an environment with the HTML report's cache
    and by default its options."""
    import jinja2

    from ai_doctor.reports import html

    options = dict({"autoescape": True, "trim_blocks": True, "lstrip_blocks": True}, **options)
    environment = jinja2.Environment(loader=jinja2.DictLoader(templates), bytecode_cache=html._compiled(jinja2), **options)
    return environment.get_template("page").render(who="<b>&</b>")


PAGE = {"page": "{% if who %}\n<p>{{ who }}</p>\n  {% endif %}\n"}
RENDERED = "<p>&lt;b&gt;&amp;&lt;/b&gt;</p>\n"


def _page(run) -> str:
    page = run("--root", GUIDE, "--model-size", "140G", "--format", "html").out
    return re.sub(r"<dt>Finished</dt><dd>[^<]*</dd>", "", page)


def test_a_template_is_compiled_once_and_then_read_from_the_users_cache(run, compiles, folder):
    first = _page(run)
    assert compiles == ["report.html.j2"]
    (entry,) = folder.iterdir()
    assert entry.stat().st_mode & 0o777 == 0o600 and folder.stat().st_mode & 0o777 == 0o700
    assert _page(run) == first and compiles == ["report.html.j2"]  # a new run: read, not compiled


def test_no_cache_turns_it_off(run, compiles, folder, monkeypatch):
    monkeypatch.setenv("AIDOCTOR_NO_CACHE", "1")
    assert _page(run) == _page(run)
    assert compiles == ["report.html.j2"] * 2 and not folder.parent.exists()


def _corrupt(entry):
    entry.write_bytes(b"not a compiled template")


def _torn(entry):
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])


def _changed_code(entry):
    data = bytearray(entry.read_bytes())
    data[-1] ^= 1
    entry.write_bytes(bytes(data))


def _edited_text(entry):
    # Still code, other code: the page's text changed inside it.
    data = entry.read_bytes()
    assert b"<p>" in data
    entry.write_bytes(data.replace(b"<p>", b"<q>"))


def _other_code(entry):
    # Whole and with its digest right, but not code: a value of another type.
    import hashlib
    import marshal

    data = entry.read_bytes()
    header = data[: data.index(b"\n", data.index(b"\n") + 1) + 1]
    payload = marshal.dumps(42)
    entry.write_bytes(header + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def _huge(entry):
    entry.write_bytes(entry.read_bytes() + b"\0" * (4 << 20))


def _writable_by_others(entry):
    entry.chmod(0o666)


def _a_link(entry):
    kept = entry.with_name("kept")
    shutil.copy(entry, kept)
    entry.unlink()
    entry.symlink_to(kept)


def _a_fifo(entry):
    entry.unlink()
    os.mkfifo(entry)


def _a_folder(entry):
    entry.unlink()
    entry.mkdir()


SPOILS = [_corrupt, _torn, _changed_code, _edited_text, _other_code, _huge, _writable_by_others, _a_link, _a_fifo, _a_folder]


@pytest.mark.parametrize("spoil", SPOILS, ids=lambda spoil: spoil.__name__.strip("_"))
def test_an_entry_that_is_not_whole_or_not_this_users_alone_is_compiled_again(compiles, folder, spoil):
    expected = _render(PAGE)
    (entry,) = folder.iterdir()
    spoil(entry)
    assert _render(PAGE) == expected == RENDERED and len(compiles) == 2
    if entry.is_file() and not entry.is_symlink():  # replaced by a good one
        assert entry.stat().st_mode & 0o777 == 0o600
        assert _render(PAGE) == expected and len(compiles) == 2


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_entry_or_a_cache_folder_of_another_user_is_not_used(compiles, folder, tmp_path):
    expected = _render(PAGE)
    (entry,) = folder.iterdir()
    os.chown(entry, 65534, 65534)  # nobody's, and only readable by this root
    assert _render(PAGE) == expected and len(compiles) == 2
    assert entry.stat().st_uid == 0  # replaced by this user's own

    # A cache folder that belongs to another user (a root run with a user's HOME): not written in.
    shutil.rmtree(tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    os.chown(tmp_path / "cache", 65534, 65534)
    assert _render(PAGE) == expected and _render(PAGE) == expected and len(compiles) == 4
    assert not (tmp_path / "cache" / "aidoctor").exists()


def test_an_entry_renamed_to_another_templates_name_is_compiled_again(compiles, folder):
    _render({"page": "A {{ who }}"})
    (first,) = folder.iterdir()
    first.rename(folder / "kept")
    _render({"page": "B {{ who }}"})
    (second,) = [entry for entry in folder.iterdir() if entry.name != "kept"]
    (folder / "kept").replace(second)  # A's code, whole and this user's, under B's name
    assert _render({"page": "B {{ who }}"}) == "B &lt;b&gt;&amp;&lt;/b&gt;" and len(compiles) == 3


def test_other_template_text_or_options_are_compiled_again(compiles):
    assert _render({"page": "A {{ who }}"}) == "A &lt;b&gt;&amp;&lt;/b&gt;"
    assert _render({"page": "B {{ who }}"}) == "B &lt;b&gt;&amp;&lt;/b&gt;"  # same name, other text
    assert _render(PAGE) == RENDERED
    assert _render(PAGE, trim_blocks=False, lstrip_blocks=False) == "\n" + RENDERED + "  "  # no trailing newline: jinja2 drops the last
    assert _render(PAGE, autoescape=False) == "<p><b>&</b></p>\n"
    assert len(compiles) == 5
    assert _render({"page": "B {{ who }}"}) == "B &lt;b&gt;&amp;&lt;/b&gt;" and len(compiles) == 5


def test_a_cache_that_cannot_be_written_only_means_compiling(compiles, tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert _render(PAGE) == _render(PAGE) == RENDERED and len(compiles) == 2


def _package_zip(target):
    """The ai_doctor package as one zip, laid out as installed (a zipapp's import path)."""
    import zipfile

    import ai_doctor
    import ai_doctor.reports
    import ai_doctor.rules

    with zipfile.ZipFile(target, "w") as archive:
        for package, inside in ((ai_doctor, "ai_doctor"), (ai_doctor.rules, "ai_doctor/rules"), (ai_doctor.reports, "ai_doctor/reports")):
            source = package.__path__[0]
            for root, folders, files in os.walk(source):
                # rules/ and reports/ are their own entries (beside doctor/ in a checkout).
                skip = ("__pycache__", "rules", "reports") if root == source and package is ai_doctor else ("__pycache__",)
                folders[:] = [name for name in folders if name not in skip]
                for name in files:
                    if name.endswith((".py", ".j2")):
                        path = os.path.join(root, name)
                        archive.write(path, os.path.join(inside, os.path.relpath(path, source)))


def test_templates_read_from_a_zip_are_cached_in_the_users_folder_never_beside_it(tmp_path, folder, made_reports):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    _package_zip(shipped / "aidoctor.zip")
    # Each run counts what it compiles: the second finds the first's code in the cache.
    script = (
        "import sys, jinja2\n"
        "compiled = []\n"
        "original = jinja2.Environment.compile\n"
        "jinja2.Environment.compile = lambda self, *a, **k: compiled.append(1) or original(self, *a, **k)\n"
        "from ai_doctor import cli\n"
        "import ai_doctor.reports.html as html\n"
        "assert html.__file__.startswith(sys.argv[1]), html.__file__\n"
        "code = cli.main(['merge'] + sys.argv[2:] + ['--html', sys.argv[1] + '.html'])\n"
        "print(len(compiled))\n"
        "sys.exit(code)\n"
    )
    environment = dict(os.environ, PYTHONPATH=str(shipped / "aidoctor.zip"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script, str(shipped / "aidoctor.zip")] + made_reports,
            capture_output=True,
            text=True,
            env=environment,
            cwd=str(tmp_path),
        )
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.splitlines()[-1])
    assert runs == ["1", "0"]
    assert sorted(os.listdir(shipped)) == ["aidoctor.zip", "aidoctor.zip.html"]  # nothing written beside the package
    assert len(list(folder.iterdir())) == 1
    assert "<script>" not in (shipped / "aidoctor.zip.html").read_text()


@pytest.fixture
def made_reports(run, tmp_path):
    target = tmp_path / "report.json"
    run("--root", GUIDE, "--model-size", "40G", "--format", "json", "-o", str(target))
    return [str(target)]
