"""Sizes as users type them (coreutils conventions) and as reports print them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_doctor.units import SizeError, cpu_ranges, describe_size, gib, parse_cpu_list, parse_params, parse_size, size_for

GiB = 1 << 30


@pytest.mark.parametrize(
    "text, expected",
    [
        ("140G", 140 * GiB),
        ("140g", 140 * GiB),
        ("140GiB", 140 * GiB),
        ("140gib", 140 * GiB),
        ("150GB", 150 * 10**9),
        ("150gb", 150 * 10**9),
        ("512M", 512 << 20),
        ("512MB", 512 * 10**6),
        ("4K", 4096),
        ("4KB", 4000),
        ("4kib", 4096),
        ("1T", 1 << 40),
        ("1TB", 10**12),
        ("1.5T", 3 << 39),
        ("1073741824", GiB),
        (" 2G ", 2 * GiB),
        ("0.5G", GiB // 2),
    ],
)
def test_parse_size_follows_coreutils(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "not a size"),
        ("G", "not a size"),
        ("-5G", "not a size"),
        ("140X", "unknown unit"),
        ("140GiBB", "unknown unit"),
        ("0", "at least one byte"),
        ("70B", "--params 70B"),
        ("1e9", "not a size"),
        ("99999999999P", "larger than any machine"),
        ("١٤٠G", "not a size"),
    ],
)
def test_parse_size_rejects_with_a_reason(text, words):
    with pytest.raises(SizeError) as error:
        parse_size(text)
    assert words in str(error.value)


@given(st.integers(min_value=1, max_value=1 << 50), st.sampled_from(["", "K", "M", "G", "KiB", "MiB", "GiB", "KB", "MB", "GB"]))
def test_parse_size_scales_integers_exactly(number, suffix):
    scale = {
        "": 1,
        "K": 1 << 10,
        "M": 1 << 20,
        "G": 1 << 30,
        "KiB": 1 << 10,
        "MiB": 1 << 20,
        "GiB": 1 << 30,
        "KB": 1000,
        "MB": 10**6,
        "GB": 10**9,
    }
    value = number * scale[suffix]
    if value >= 1 << 70:
        return
    assert parse_size("%d%s" % (number, suffix)) == value


@given(st.text(max_size=12))
def test_parse_size_never_raises_anything_but_size_error(text):
    try:
        assert parse_size(text) >= 1
    except SizeError:
        pass


def test_describe_size_says_how_it_was_read():
    assert describe_size("140G", parse_size("140G")) == "140G = 140.0 GiB = 150.3 GB"
    assert describe_size("150GB", parse_size("150GB")) == "150GB = 139.7 GiB = 150.0 GB"


@pytest.mark.parametrize(
    "text, count", [("70B", 70 * 10**9), ("8b", 8 * 10**9), ("1.5T", 15 * 10**11), ("350M", 350 * 10**6), ("7000000", 7 * 10**6)]
)
def test_parse_params(text, count):
    assert parse_params(text) == count


@pytest.mark.parametrize("text", ["", "B", "70G", "-1B", "70BB", "0"])
def test_parse_params_rejects(text):
    with pytest.raises(SizeError):
        parse_params(text)


def test_size_for_dtypes():
    params = 70 * 10**9
    assert size_for(params, "fp16") == 140 * 10**9
    assert size_for(params, "bf16") == 140 * 10**9
    assert size_for(params, "int8") == 70 * 10**9
    assert size_for(params, "fp8") == 70 * 10**9
    assert size_for(params, "int4") == 35 * 10**9
    assert size_for(params, "fp32") == 280 * 10**9


def test_gib_picks_a_readable_unit():
    assert gib(0) == "0 B"
    assert gib(512) == "512 B"
    assert gib(512 << 20) == "512.0 MiB"
    assert gib(140 * GiB) == "140.0 GiB"
    assert gib(2 << 40) == "2.0 TiB"
    assert gib(-GiB) == "-1.0 GiB"


def test_cpu_lists_round_trip():
    assert parse_cpu_list("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert cpu_ranges([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert parse_cpu_list("x,2-1,5") == (5,)
    assert cpu_ranges([]) == ""


@given(st.sets(st.integers(min_value=0, max_value=512)))
def test_cpu_ranges_parse_back(cpus):
    assert set(parse_cpu_list(cpu_ranges(cpus))) == cpus


@pytest.mark.parametrize(
    "text, hint", [("70", "did you mean --params 70B?"), ("7000", "did you mean --params 7000B?"), ("500K", "at least 1M")]
)
def test_a_count_no_model_has_is_refused_with_what_was_meant(text, hint):
    with pytest.raises(SizeError) as caught:
        parse_params(text)
    assert hint in str(caught.value)
