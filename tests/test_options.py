"""The plain check's command line read without argparse (ai_doctor.options.quick) means what
argparse would make of it, or is left to argparse."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_doctor import options
from ai_doctor.argparser import command
from ai_doctor.exitcodes import UsageError

FLAGS = sorted({flag for option in options.offered(options.CHECK) for flag in option.flags})
VALUES = ["8G", "140G", "-5G", "-", "", "json", "text", "npd", "sh", "high", "never", "bf16", "3", "-3", "99999999999", "x=y", "memory"]
ODD = ["--", "--nope", "check", "-vq", "--format=json", "--image=1", "--hugepages=12", "--model-size=-1G", "-h", "--version", "fix"]


def argparse_reading(argv):
    return vars(command().parse_args(argv))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FLAGS + VALUES + ODD), max_size=8))
def test_quick_reads_what_argparse_reads(argv):
    read = options.quick(argv)
    if read is None:
        return
    assert vars(read) == argparse_reading(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model-size", "140G", "--format", "json"],
        ["--model-size=140G", "--format=json", "--fail-on", "never"],
        ["--params", "70B", "--dtype", "fp8", "--hugepages", "40", "-v", "--color", "never"],
        ["--root", "image", "--image", "--only", "memory", "--only", "cpu", "--skip", "gpu", "-q"],
        ["--snapshot", "host.tar.gz", "--html", "r.html", "--junit", "j.xml", "--sarif", "s.json", "--prom", "p.prom", "-o", "out"],
        ["--next-boot", "--strict", "--verbose", "--quiet", "--list-rules", "--margin", "4G", "--model", "/models/x"],
    ],
)
def test_everyday_command_lines_skip_argparse(argv):
    read = options.quick(argv)
    assert read is not None
    assert vars(read) == argparse_reading(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--model-size", "8G", "--model-size", "80G"],  # given twice: argparse names it
        ["--format", "yaml"],
        ["--hugepages", "-3"],
        ["--hugepages", "1e3"],
        ["--model-siz", "8G"],
        ["--model-size"],
        ["-o", "-"],
        ["chek"],
        ["--image=yes"],
        ["-vq"],
        ["--help"],
    ],
)
def test_slips_and_the_unusual_are_left_to_argparse(argv):
    assert options.quick(argv) is None


def test_argparse_refuses_what_quick_leaves_for_a_slip():
    with pytest.raises(UsageError, match="given more than once"):
        argparse_reading(["--model-size", "8G", "--model-size", "80G"])
    with pytest.raises(UsageError, match="did you mean --model-size"):
        argparse_reading(["--model-siz", "8G"])


def test_every_option_is_offered_to_some_command():
    assert {option.where for option in options.OPTIONS} == {options.CHECK, options.FIX, options.BOTH}
    for name in (options.CHECK, options.FIX):
        dests = [option.dest for option in options.offered(name)]
        assert len(dests) == len(set(dests)), "one option per destination in %s" % name
