"""Shell completion and the manual page: generated from the one argparse definition, current,
and working where a user sources or reads them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ai_doctor import engine

from conftest import REPO

SHARE = REPO / "doctor" / "share"


def test_the_shipped_files_are_what_the_parsers_generate():
    pytest.importorskip("shtab")
    pytest.importorskip("argparse_manpage")
    # Whatever the terminal's width: the files are the same on every machine.
    for columns in ("80", "200"):
        check = [sys.executable, str(REPO / "tools" / "generate_share.py"), "--check"]
        done = subprocess.run(check, capture_output=True, text=True, env=dict(os.environ, COLUMNS=columns))
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_prints_the_script_without_its_generator(shell):
    code = (
        "import sys\nfrom ai_doctor.cli import main\ncode = main(['completion', %r])\n"
        "print(code, 'shtab' in sys.modules, 'argparse_manpage' in sys.modules, file=sys.stderr)" % shell
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == (SHARE / ("aidoctor." + shell)).read_text(encoding="utf-8")
    assert done.stderr.split() == ["0", "False", "False"]


def test_an_unknown_shell_is_exit_2(run):
    done = run("completion", "fish")
    assert done.code == 2 and "invalid choice: 'fish'" in done.err


def completions(*words):
    """What bash offers for the last word, the script sourced as a user's ~/.bashrc does."""
    script = (
        'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; '
        'COMPREPLY=(); _shtab_aidoctor "$1" "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", script, "bash", str(SHARE / "aidoctor.bash")] + list(words), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_subcommands_options_and_rule_ids():
    rules = engine.load_rules()
    assert completions("aidoctor", "--only", "hug") == {r for r in rules if r.startswith("hug")} | {"hugepages"}
    assert completions("aidoctor", "fix", "--skip", "lim") == {r for r in rules if r.startswith("lim")} | {"limits"}
    assert completions("aidoctor", "explain", "memory.") == {r for r in rules if r.startswith("memory.")}
    assert completions("aidoctor", "sn") == {"snapshot"}
    assert completions("aidoctor", "--model-s") == {"--model-size"}
    assert completions("aidoctor", "--format", "") == {"text", "json", "markdown", "html", "npd"}
    assert completions("aidoctor", "completion", "") == {"bash", "zsh", "tcsh"}


@pytest.mark.skipif(shutil.which("groff") is None, reason="no groff")
def test_the_manual_page_renders_without_warnings():
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P-bcou", str(SHARE / "aidoctor.1")],
        capture_output=True,
        text=True,
        env=dict(os.environ, MANWIDTH="80"),
    )
    assert done.returncode == 0 and done.stderr == ""
    page = done.stdout
    for words in ("aidoctor - diagnose Linux hosts", "--model-size", "EXIT STATUS", "aidoctor snapshot", "AIDOCTOR_PYZ_CACHE"):
        assert words in page
