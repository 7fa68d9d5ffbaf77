"""Sizes as people write them, and as the report prints them.

``--model-size`` follows coreutils: K, M, G, T, P, Ki … Pi and KiB … PiB are powers of 1024;
KB, MB, GB, TB, PB powers of 1000; a bare number is bytes; suffixes are case-insensitive. ``--params 70B``
counts parameters (K, M, B, T: thousand, million, billion, trillion).
"""

from __future__ import annotations

import math
import re

_BINARY = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
# Compiled on first use by re's cache: most runs read no size at all.
_SIZE = r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*"
_PARAMS = r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmbt]?)\s*"
_PARAM_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}

# Bytes per parameter. int4 formats store scales beside the weights; 0.5 is the floor.
DTYPE_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


class SizeError(ValueError):
    """A size or count that cannot be read; the message names the input."""


def _shown(text: str) -> str:
    """The input as an error message quotes it: in full when short, cut when not."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "…"


def parse_size(text: str) -> int:
    """Bytes for a size such as ``140G``, ``1.5TiB``, ``500GB`` or ``1073741824``."""
    match = re.fullmatch(_SIZE, text, re.I | re.A)
    if not match:
        raise SizeError("%s is not a size (examples: 140G, 140GiB, 150GB, 1073741824)" % _shown(text))
    number, suffix = match.groups()
    if len(number) > 24:
        raise SizeError("%s is larger than any machine's memory" % _shown(text))
    unit = suffix.upper()
    if unit in ("B", ""):
        if unit == "B":
            raise SizeError(
                "%s: a B suffix is ambiguous here; for bytes write %s, for %s billion parameters use --params %sB"
                % (_shown(text), number, number, number)
            )
        scale = 1
    elif unit in _BINARY:
        scale = _BINARY[unit]
    elif unit[1:] in ("I", "IB") and unit[0] in _BINARY:
        scale = _BINARY[unit[0]]
    elif len(unit) == 2 and unit.endswith("B") and unit[0] in _BINARY:
        scale = 1000 ** "_KMGTP".index(unit[0])
    else:
        raise SizeError("%s: unknown unit %r (use K, M, G, T, P, KiB…PiB or KB…PB)" % (_shown(text), suffix))
    value = _scaled(number, scale)
    if value < 1:
        raise SizeError("%s: a model size must be at least one byte" % _shown(text))
    if value >= 1 << 70:
        raise SizeError("%s is larger than any machine's memory" % _shown(text))
    return value


# The smallest parameter count taken as meant: below it, the suffix was surely forgotten.
MIN_PARAMS = 10**6


def parse_params(text: str) -> int:
    """A parameter count such as ``70B``, ``8b``, ``1.5T`` or ``350M``."""
    match = re.fullmatch(_PARAMS, text, re.I | re.A)
    if not match:
        raise SizeError("%s is not a parameter count (examples: 70B, 8B, 1.5T, 350M)" % _shown(text))
    number, suffix = match.groups()
    value = _scaled(number, _PARAM_SCALE[suffix.upper()])
    if value < 1:
        raise SizeError("%s: a model has at least one parameter" % _shown(text))
    if value < MIN_PARAMS:
        # A bare 70 is a count in billions written without its suffix, not a 70-parameter model.
        hint = "--params %sB" % number if not suffix else "a count of at least 1M"
        raise SizeError("%s is %d parameters, fewer than any model served has: did you mean %s?" % (_shown(text), value, hint))
    if value >= 10**16:
        raise SizeError("%s is more parameters than any model has" % _shown(text))
    return value


def _scaled(number: str, scale: int) -> int:
    """``number`` (digits, maybe with a decimal point) times ``scale``, exactly, rounded down."""
    whole, _, fraction = number.partition(".")
    if len(whole) > 24 or len(fraction) > 24:
        return 1 << 80  # past every bound; also keeps int() inside its digit limit
    value = int(whole or "0") * scale
    if fraction:
        value += int(fraction) * scale // 10 ** len(fraction)
    return value


def size_for(params: int, dtype: str) -> int:
    """Bytes of weights for ``params`` parameters stored as ``dtype``."""
    return int(math.ceil(params * DTYPE_BYTES[dtype]))


# What a 16-bit checkpoint shrinks to; int4 formats carry scales, so they are "about".
_FROM_16_BIT = (("int8", 0.5), ("int4", 0.25))


def quantized_sizes(size: int, params=None, dtype=None):
    """(what the sizes assume, [(format, bytes)]) for the smaller formats of a model: exact
    from a parameter count and format, else assuming 16-bit weights of ``size`` bytes. An
    empty list when the model is already int4."""
    if params and dtype:
        smaller = [(name, size_for(params, name)) for name in ("int8", "int4") if DTYPE_BYTES[name] < DTYPE_BYTES[dtype]]
        return "%s parameters" % params_words(params), smaller
    return "16-bit weights (an assumption: --params and --dtype make it exact)", [
        (name, int(size * factor)) for name, factor in _FROM_16_BIT
    ]


def gib(value: int) -> str:
    """Bytes in the binary unit that reads best: ``140.0 GiB``, ``512.0 MiB``, ``0 B``."""
    if value < 0:
        return "-" + gib(-value)
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return "%.1f %s" % (value / scale, unit)
    return "%d B" % value


def page_size(value: int) -> str:
    """A page size in the largest binary unit it is a whole multiple of: ``2 MiB``, ``1 GiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value and value % scale == 0:
            return "%d %s" % (value // scale, unit)
    return "%d B" % value


def kernel_size(value: int) -> str:
    """A size as the kernel command line writes it (memparse suffixes): ``2M``, ``1G``."""
    for suffix, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value and value % scale == 0:
            return "%d%s" % (value // scale, suffix)
    return str(value)


def decimal(value: int) -> str:
    """Bytes in the decimal unit that reads best: ``150.3 GB``."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if value >= scale:
            return "%.1f %s" % (value / scale, unit)
    return "%d B" % value


def describe_size(text: str, value: int) -> str:
    """How a size was read: ``140G = 140.0 GiB = 150.3 GB``."""
    return "%s = %s = %s" % (text.strip(), gib(value), decimal(value))


def params_words(params: int) -> str:
    """``70B`` for 70,000,000,000 parameters."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if params >= scale:
            return ("%.1f" % (params / scale)).rstrip("0").rstrip(".") + suffix
    return str(params)


def cpu_ranges(cpus) -> str:
    """CPU numbers grouped as the kernel writes them: ``0-3,8,10-11``."""
    ordered = sorted(set(cpus))
    parts = []
    start = prev = None
    for cpu in ordered:
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            parts.append(str(start) if start == prev else "%d-%d" % (start, prev))
            start = prev = cpu
    if start is not None:
        parts.append(str(start) if start == prev else "%d-%d" % (start, prev))
    return ",".join(parts)


# The kernel's numbers fit in 64 bits: 20 decimal digits. int() refuses more than 4,300 (and
# was quadratic in them before), so host text is measured before it is converted.
MAX_DIGITS = 20


def whole_number(text):
    """ASCII decimal digits (blanks around them allowed) as an int; None for anything else,
    signs included, or for more digits than a kernel number has."""
    text = (text or "").strip()
    if not text or len(text) > MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def parse_cpu_list(text: str):
    """The kernel's CPU list format (``0-3,8``) to a tuple of ints; bad parts are dropped."""
    cpus = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        first = whole_number(low)
        last = whole_number(high) if high else first
        if first is not None and last is not None and first <= last and last - first < 65536:
            cpus.extend(range(first, last + 1))
    return tuple(cpus)
