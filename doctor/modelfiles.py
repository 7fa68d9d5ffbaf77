"""``--model PATH``: a model's weight size, parameter count and dtype, read from the headers of
its files and never from the weights.

safetensors (huggingface/safetensors README, "Format"; the library's ``Metadata::validate``):
8 bytes, an unsigned little-endian N; N bytes of JSON that begin with ``{``, one entry per
tensor (``dtype``, ``shape``, ``data_offsets`` [BEGIN, END) into the byte buffer after the
header) and an optional ``__metadata__``; the buffer is covered entirely, without holes or
overlaps, and each span is the tensor's elements × its dtype's bits / 8. The library refuses a
header over 100,000,000 bytes; so does this reader. A sharded checkpoint names its shards in
``model.safetensors.index.json`` (``weight_map``: tensor → file).

GGUF (ggml docs/gguf.md; llama.cpp ggml/src/gguf.cpp, ``gguf_init_from_file_impl``): "GGUF",
a uint32 version (2 or 3: version 1 had 32-bit counts), uint64 tensor and key/value counts, the
key/values (a string key, a uint32 type, the value; arrays are a type, a uint64 count and the
values), then per tensor a name, uint32 n_dims, n_dims uint64 dimensions, a uint32 ggml type
and a uint64 offset. The data starts at the next multiple of ``general.alignment`` (32 unless
given); each tensor's offset must be where the one before it ends, padded to the alignment, as
llama.cpp requires ("tensor '…' has offset …, expected …"). A tensor's bytes are its elements
/ the type's block size × the block's bytes (GGML_QUANT_SIZES in gguf-py). Big-endian files
(the version reads byte-swapped) are read as such.

Other weights (``.bin``, ``.pt``, ``.pth`` pickles, ``.onnx``) are counted by their size alone:
their parameter count is not in a header. Every read goes through the run's Host with
``Host.derive``, so a ``--root`` tree holds everything read, the summary of each file is kept
(in the user's cache, and in a snapshot as a derived record), and the weights are never read.
Counts and lengths are checked against the file's size before anything is read or allocated.
"""

from __future__ import annotations

import json
import re
import struct

from ai_doctor.record import Record

KIND = "model"

# The safetensors library's MAX_HEADER_SIZE.
ST_MAX_HEADER = 100_000_000
# Bits per element of each safetensors dtype (the library's Dtype::bitsize).
ST_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

# ggml type id → (name, elements per block, bytes per block): gguf-py's GGML_QUANT_SIZES.
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# general.file_type → llama.cpp's name for it (llama_ftype, LLAMA_FTYPE_MOSTLY_*).
GGUF_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

# GGUF metadata value types: fixed sizes (struct codes); 8 string, 9 array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# Caps checked before anything is read or allocated (a header is hostile input).
GGUF_MAX_STRING = 64 << 20
GGUF_MAX_TENSORS = 1_000_000
GGUF_MAX_KV = 1_000_000
GGUF_MAX_DIMS = 8
GGUF_MAX_HEADER_READ = 256 << 20
# The GGUF keys whose values are kept.
_GGUF_WANTED = ("general.alignment", "general.file_type", "split.no", "split.count")

# Files counted by size alone, and names beside weights that are not weights.
PLAIN_SUFFIXES = (".bin", ".pt", ".pth", ".onnx", ".onnx_data", ".onnx.data")
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "optimizer.bin", "scaler.pt")
_SPLIT_GGUF = r"(?s)(.*)-([0-9]{5})-of-([0-9]{5})\.gguf\Z"
# Indexes larger than this are not a model's (DeepSeek-V3's, 91,000 tensors, is 9 MB).
INDEX_CAP = 64 << 20


class ModelError(ValueError):
    """A model path that cannot be measured; the message is the one line the user sees."""


class ModelFiles(Record):
    """What ``--model`` found: the bytes of tensor data (``size``), the parameter count (None
    when a format does not record it), the dtype as the files name it (``bf16``, ``Q4_K_M``),
    the nearest ``--dtype`` (for the memory rules' smaller-format sizes; None when unknown),
    the weight files counted, what was left out, and the line the report shows."""

    __slots__ = ("size", "params", "dtype", "dtype_key", "files", "notes", "described")


# -- safetensors ---------------------------------------------------------------------------


def _shown(name) -> str:
    """A name from a file, for a one-line message: printable ASCII, quoted, cut when long."""
    text = ascii(name)
    return text if len(text) <= 64 else text[:60] + "…" + text[-1]


def _count(value) -> bool:
    """A JSON whole number ≥ 0 (not a bool, not a float)."""
    return type(value) is int and 0 <= value < 1 << 64


def _unique_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError("safetensors header: %s appears twice" % _shown(key))
        seen[key] = value
    return seen


def _no_constant(name):
    raise ValueError("safetensors header: %s is not JSON" % name)


# No count in a model's header or index needs more digits; longer ones are refused before
# Python converts them (its own limit, 4300 digits, words the refusal for programmers).
MAX_DIGITS = 40


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError("a number of %d digits" % len(text.lstrip("-")))
    return int(text)


def parse_safetensors_header(header: bytes, file_size: int) -> dict:
    """The summary of a safetensors file from its JSON header (the N bytes after the length)
    and the file's size; ValueError saying what the header gets wrong."""
    buffer = file_size - 8 - len(header)
    if header[:1] != b"{":
        raise ValueError("safetensors header: does not begin with '{'")
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("safetensors header: not UTF-8 (byte %d)" % exc.start) from None
    try:
        # The format forbids a key given twice; json would keep the last one silently.
        entries = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_int=_bounded_int)
    except RecursionError:
        raise ValueError("safetensors header: JSON nested too deeply") from None
    except ValueError as exc:
        if str(exc).startswith("safetensors header"):
            raise
        raise ValueError("safetensors header: bad JSON (%s)" % str(exc)[:120]) from None
    if not isinstance(entries, dict):
        raise ValueError("safetensors header: not a JSON object")
    spans = []
    params = 0
    by_type = {}
    for name, info in entries.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise ValueError("safetensors header: tensor %s is not an object" % _shown(name))
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ST_BITS:
            raise ValueError("safetensors header: tensor %s has unknown dtype %s" % (_shown(name), _shown(dtype)))
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            raise ValueError("safetensors header: tensor %s has a shape that is not a list of counts: %s" % (_shown(name), _cut(shape)))
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets)):
            raise ValueError("safetensors header: tensor %s has data_offsets that are not [BEGIN, END]: %s" % (_shown(name), _cut(offsets)))
        begin, end = offsets
        if end < begin or end > buffer:
            raise ValueError(
                "safetensors header: tensor %s has data_offsets [%d, %d] outside the %d bytes after the header"
                % (_shown(name), begin, end, buffer)
            )
        elements = 1
        for dim in shape:
            elements *= dim
            if elements > buffer * 8:
                break  # already more than the file holds: refused just below, without huge numbers
        bits = elements * ST_BITS[dtype]
        if bits % 8:
            raise ValueError("safetensors header: tensor %s is %d bits of %s, not whole bytes" % (_shown(name), bits, dtype))
        if bits // 8 != end - begin:
            size = "%d bytes" % (bits // 8) if elements <= buffer * 8 else "more bytes than the file holds"
            raise ValueError(
                "safetensors header: tensor %s, shape %s of %s, is %s, but its data_offsets span %d"
                % (_shown(name), _cut(shape), dtype, size, end - begin)
            )
        spans.append((begin, end, name))
        params += elements
        kept = by_type.setdefault(dtype, [0, 0])
        kept[0] += elements
        kept[1] += end - begin
    spans.sort()
    reached = 0
    for begin, end, name in spans:
        if begin != reached:
            what = "overlaps the tensor before it" if begin < reached else "leaves %d bytes unused before it" % (begin - reached)
            raise ValueError("safetensors header: tensor %s at [%d, %d] %s" % (_shown(name), begin, end, what))
        reached = end
    if reached != buffer:
        raise ValueError("safetensors header: the tensors cover %d of the %d bytes after the header" % (reached, buffer))
    return {
        "format": "safetensors",
        "file": file_size,
        "bytes": reached,
        "params": params,
        "types": by_type,
        "names": sorted(name for _, _, name in spans),
    }


def _cut(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "…"


def safetensors_summary(stream, file_size: int) -> dict:
    """Read the header of the safetensors file open on ``stream`` (at its start)."""
    if file_size < 8:
        raise ValueError("safetensors: %d bytes, shorter than the 8-byte header length" % file_size)
    stream.seek(0)
    (length,) = struct.unpack("<Q", _read_exactly(stream, 8))
    if length > ST_MAX_HEADER:
        raise ValueError("safetensors: header length %d is over the format's limit of %d bytes" % (length, ST_MAX_HEADER))
    if 8 + length > file_size:
        raise ValueError("safetensors: header length %d runs past the end of the file (%d bytes)" % (length, file_size))
    return parse_safetensors_header(_read_exactly(stream, length), file_size)


def _read_exactly(stream, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise ValueError("the file ends early (it changed while being read?)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# -- GGUF ----------------------------------------------------------------------------------


class _Cursor:
    """Sequential reads of a GGUF header, in chunks, never past the file or the read cap."""

    CHUNK = 1 << 20

    def __init__(self, stream, size: int, order: str):
        self.stream, self.size, self.order = stream, size, order
        self.pos = 0
        self.buf = b""
        self.at = 0  # file offset of buf[0]
        self.read = 0

    def take(self, count: int) -> bytes:
        if self.pos + count > self.size:
            raise ValueError("GGUF: the header runs past the end of the file (byte %d of %d)" % (self.pos + count, self.size))
        start = self.pos - self.at
        if start < 0 or start + count > len(self.buf):
            self._fill(count)
            start = 0
        self.pos += count
        return self.buf[start : start + count]

    def _fill(self, count: int) -> None:
        want = min(max(count, self.CHUNK), self.size - self.pos)
        if self.read + want > GGUF_MAX_HEADER_READ:
            raise ValueError("GGUF: the header is over %d MiB" % (GGUF_MAX_HEADER_READ >> 20))
        self.stream.seek(self.pos)
        self.buf = _read_exactly(self.stream, want)
        self.at = self.pos
        self.read += want

    def skip(self, count: int) -> None:
        if self.pos + count > self.size:
            raise ValueError("GGUF: the header runs past the end of the file (byte %d of %d)" % (self.pos + count, self.size))
        self.pos += count

    def unpack(self, code: str):
        return struct.unpack(self.order + code, self.take(struct.calcsize(code)))[0]

    def string_length(self, what: str) -> int:
        length = self.unpack("Q")
        if length > GGUF_MAX_STRING or self.pos + length > self.size:
            raise ValueError("GGUF: %s of %d bytes (past the file or over %d MiB)" % (what, length, GGUF_MAX_STRING >> 20))
        return length

    def string(self, what: str) -> str:
        return self.take(self.string_length(what)).decode("utf-8", "replace")

    def skip_strings(self, count: int) -> None:
        """``count`` strings (a tokenizer's vocabulary), skipped without decoding."""
        size, order, unpack_from = self.size, self.order + "Q", struct.unpack_from
        for _ in range(count):
            start = self.pos - self.at
            if start < 0 or start + 8 > len(self.buf):
                length = self.string_length("a string in an array")
            else:
                (length,) = unpack_from(order, self.buf, start)
                self.pos += 8
                if length > GGUF_MAX_STRING or self.pos + length > size:
                    raise ValueError(
                        "GGUF: a string in an array of %d bytes (past the file or over %d MiB)" % (length, GGUF_MAX_STRING >> 20)
                    )
            self.pos += length


# Arrays may hold arrays (docs/gguf.md: "Any value type is valid, including arrays"); llama.cpp
# writes none, so a few levels and elements are plenty.
GGUF_MAX_NESTING = 4
GGUF_MAX_NESTED_ARRAYS = 100_000


def _skip_array(cursor, key: str, nested: list, depth: int = 1) -> None:
    """Skip an array value (its type and count already next), checking each count against
    what is left of the file before going on."""
    item, count = cursor.unpack("I"), cursor.unpack("Q")
    left = cursor.size - cursor.pos
    if item in _GGUF_SCALARS:
        width = struct.calcsize(_GGUF_SCALARS[item])
        if count * width > left:
            raise ValueError("GGUF: %s holds %d values, more than the file can hold" % (_shown(key), count))
        cursor.skip(count * width)
    elif item == _GGUF_STRING:
        if count * 8 > left:
            raise ValueError("GGUF: %s holds %d strings, more than the file can hold" % (_shown(key), count))
        cursor.skip_strings(count)
    elif item == _GGUF_ARRAY:
        nested[0] += count
        if depth >= GGUF_MAX_NESTING or nested[0] > GGUF_MAX_NESTED_ARRAYS or count * 12 > left:
            raise ValueError("GGUF: %s nests %d arrays %d deep, more than a model's metadata holds" % (_shown(key), count, depth + 1))
        for _ in range(count):
            _skip_array(cursor, key, nested, depth + 1)
    else:
        raise ValueError("GGUF: %s is an array of type %d, which GGUF does not have" % (_shown(key), item))


def gguf_summary(stream, file_size: int) -> dict:
    """Read the header of the GGUF file open on ``stream``; ValueError for one that lies."""
    if file_size < 24:
        raise ValueError("GGUF: %d bytes, shorter than a GGUF header" % file_size)
    stream.seek(0)
    head = _read_exactly(stream, 8)
    if head[:4] != b"GGUF":
        raise ValueError("not a GGUF file (it does not begin with 'GGUF')")
    # A big-endian file's version reads byte-swapped: 3 as 0x03000000 (gguf-py's reader does the same).
    (version,) = struct.unpack("<I", head[4:8])
    order = "<"
    if version & 0xFFFF == 0 and version:
        order = ">"
        (version,) = struct.unpack(">I", head[4:8])
    if version == 1:
        raise ValueError("GGUF version 1 (32-bit counts, from 2023), which llama.cpp no longer reads: convert it again")
    if version not in (2, 3):
        raise ValueError("GGUF version %d, which this aidoctor does not read (2 and 3)" % version)
    cursor = _Cursor(stream, file_size, order)
    cursor.skip(8)
    n_tensors, n_kv = cursor.unpack("Q"), cursor.unpack("Q")
    # Each key/value takes at least 13 bytes and each tensor 24: a count the file cannot hold lies.
    if n_kv > GGUF_MAX_KV or n_kv * 13 > file_size:
        raise ValueError("GGUF: %d metadata entries, more than the file (%d bytes) can hold" % (n_kv, file_size))
    if n_tensors > GGUF_MAX_TENSORS or n_tensors * 24 > file_size:
        raise ValueError("GGUF: %d tensors, more than the file (%d bytes) can hold" % (n_tensors, file_size))
    values = {}
    for _ in range(n_kv):
        key = cursor.string("a metadata key")
        kind = cursor.unpack("I")
        if kind in _GGUF_SCALARS:
            code = _GGUF_SCALARS[kind]
            value = cursor.unpack(code)
            if key in _GGUF_WANTED and code not in "fd?":
                values[key] = value
        elif kind == _GGUF_STRING:
            cursor.skip(cursor.string_length("the value of %s" % _shown(key)))
        elif kind == _GGUF_ARRAY:
            _skip_array(cursor, key, [0])
        else:
            raise ValueError("GGUF: %s has value type %d, which GGUF does not have" % (_shown(key), kind))
    alignment = values.get("general.alignment", 32)
    if not alignment or alignment & (alignment - 1):
        raise ValueError("GGUF: general.alignment %d is not a power of two" % alignment)
    tensors = []
    names = set()
    for _ in range(n_tensors):
        name = cursor.string("a tensor name")
        if name in names:
            raise ValueError("GGUF: tensor %s appears twice" % _shown(name))
        names.add(name)
        n_dims = cursor.unpack("I")
        if n_dims > GGUF_MAX_DIMS:
            raise ValueError("GGUF: tensor %s has %d dimensions (at most %d)" % (_shown(name), n_dims, GGUF_MAX_DIMS))
        dims = [cursor.unpack("Q") for _ in range(n_dims)]
        kind, offset = cursor.unpack("I"), cursor.unpack("Q")
        if kind not in GGML_TYPES:
            raise ValueError("GGUF: tensor %s has ggml type %d, which this aidoctor does not know" % (_shown(name), kind))
        type_name, block, block_bytes = GGML_TYPES[kind]
        elements = 1
        for dim in dims:
            elements *= dim
        if any(dim >= 1 << 63 for dim in dims) or elements >= 1 << 63:
            raise ValueError("GGUF: tensor %s has dimensions %s, more elements than ggml can count" % (_shown(name), dims))
        if dims and dims[0] % block:
            raise ValueError(
                "GGUF: tensor %s: %d elements per row is not a multiple of %s's block of %d" % (_shown(name), dims[0], type_name, block)
            )
        tensors.append((name, type_name, elements, elements // block * block_bytes, offset))
    data = -(-cursor.pos // alignment) * alignment if n_tensors else cursor.pos
    expected = 0
    params = 0
    by_type = {}
    for name, type_name, elements, size, offset in tensors:
        if offset != expected:
            raise ValueError(
                "GGUF: tensor %s has offset %d, expected %d (llama.cpp refuses such a file)" % (_shown(name), offset, expected)
            )
        if data + offset + size > file_size:
            raise ValueError(
                "GGUF: tensor %s ends at byte %d, past the end of the file (%d bytes): an unfinished download?"
                % (_shown(name), data + offset + size, file_size)
            )
        expected = offset + -(-size // alignment) * alignment
        params += elements
        kept = by_type.setdefault(type_name, [0, 0])
        kept[0] += elements
        kept[1] += size
    split = None
    if "split.count" in values:
        split = [values.get("split.no", 0), values["split.count"]]
    file_type = values.get("general.file_type")
    return {
        "format": "gguf",
        "file": file_size,
        "bytes": sum(size for _, _, _, size, _ in tensors),
        "params": params,
        "types": by_type,
        "file_type": GGUF_FILE_TYPES.get(file_type) if file_type is not None else None,
        "split": split,
    }


# -- one file ------------------------------------------------------------------------------


def summarize(stream) -> str:
    """Host.derive's extract: the compact JSON summary of the model file on ``stream``,
    decided by its first bytes (an Ollama blob has no suffix); other files get their size."""
    size = stream.seek(0, 2)
    stream.seek(0)
    head = stream.read(9)
    if head[:4] == b"GGUF":
        summary = gguf_summary(stream, size)
    elif len(head) == 9 and head[8:9] == b"{":
        summary = safetensors_summary(stream, size)
    else:
        summary = {"format": "other", "file": size}
    return json.dumps(summary, separators=(",", ":"), sort_keys=True)


def _summary(text: str, shown: str) -> dict:
    """A summary as kept (the cache, or a tree's derived record: hostile too), checked."""
    try:
        summary = json.loads(text, parse_int=_bounded_int)
    except (ValueError, RecursionError):
        summary = None
    if isinstance(summary, dict) and summary.get("format") == "other" and _count(summary.get("file")):
        return summary
    ok = (
        isinstance(summary, dict)
        and summary.get("format") in ("safetensors", "gguf")
        and all(_count(summary.get(key)) for key in ("file", "bytes", "params"))
        and isinstance(summary.get("types"), dict)
        and all(
            isinstance(k, str) and isinstance(v, list) and len(v) == 2 and all(_count(n) for n in v) for k, v in summary["types"].items()
        )
        and (summary["format"] == "gguf" or (isinstance(summary.get("names"), list) and all(isinstance(n, str) for n in summary["names"])))
        and (summary["format"] == "safetensors" or summary.get("file_type") is None or isinstance(summary.get("file_type"), str))
        and (
            summary.get("split") is None
            or (isinstance(summary["split"], list) and len(summary["split"]) == 2 and all(_count(n) for n in summary["split"]))
        )
    )
    if not ok:
        raise ModelError("%s: the summary recorded for it is not understood" % shown)
    return summary


# -- a model: a file, a folder, a Hugging Face cache entry ---------------------------------


class _Weights(Record):
    """One file to measure: its target path, the format its name promises (``safetensors``,
    ``gguf``, ``plain`` or ``any``), and the tensors an index puts in it (None: no index)."""

    __slots__ = ("path", "kind", "indexed")
    _defaults = {"indexed": None}


def read_model(host, path: str) -> ModelFiles:
    """Measure the model at target ``path`` through ``host``; ModelError with the one line to
    show when it cannot be measured or a header lies."""
    path = _normal(path)
    got, info = host.stat(path)
    if info is None:
        raise ModelError("%s: %s" % (host.display(path), _why(got)))
    notes = []
    if info.is_dir:
        files = _folder_files(host, _model_folder(host, path, notes), notes)
    else:
        files = _file_and_parts(host, path)
    return _measure(host, files, notes)


def _why(got) -> str:
    return "no such file or folder" if got.missing else got.describe()


def _normal(path: str) -> str:
    return "/" + "/".join(part for part in path.split("/") if part and part != ".")


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def _names(host, folder: str):
    got = host.listdir(folder)
    if not got.ok:
        raise ModelError("%s: %s" % (host.display(folder), _why(got)))
    return got.data


def _is_dir(host, path: str) -> bool:
    info = host.stat(path)[1]
    return info is not None and info.is_dir


def _listed(names, shown: int = 4) -> str:
    names = list(names)
    text = ", ".join(_shown(name)[1:-1] for name in names[:shown])
    return text + (" and %d more" % (len(names) - shown) if len(names) > shown else "")


def _model_folder(host, folder: str, notes) -> str:
    """The folder that holds the weights: ``folder`` itself; for a Hugging Face cache entry
    (models--ORG--NAME: refs/, snapshots/, blobs/) or its snapshots/ folder, the snapshot
    refs/main names, else the only one; for a hub folder holding one models--* entry, its."""
    names = _names(host, folder)
    if any(_weight_kind(name) for name in names):
        return folder
    if "snapshots" in names and _is_dir(host, _join(folder, "snapshots")):
        return _snapshot(host, folder, notes)
    parent, _, last = folder.rpartition("/")
    if last == "snapshots" and parent:
        return _snapshot(host, parent, notes)
    entries = [name for name in names if name.startswith("models--") and _is_dir(host, _join(folder, name))]
    if len(entries) == 1:
        return _model_folder(host, _join(folder, entries[0]), notes)
    if len(entries) > 1:
        raise ModelError(
            "%s: a Hugging Face cache of %d models (%s); give one of them" % (host.display(folder), len(entries), _listed(entries))
        )
    return folder


def _snapshot(host, repo: str, notes) -> str:
    snapshots = _join(repo, "snapshots")
    revisions = [name for name in _names(host, snapshots) if _is_dir(host, _join(snapshots, name))]
    ref = host.read_text(_join(repo, "refs/main"), cap=4096)
    if ref.ok:
        wanted = ref.data.strip()
        if not wanted or "/" in wanted or wanted in (".", "..") or not wanted.isprintable():
            raise ModelError("%s: refs/main holds %s, not a revision" % (host.display(repo), _shown(ref.data[:80])))
        if wanted not in revisions:
            raise ModelError("%s: refs/main names snapshot %s, which is not in snapshots/" % (host.display(repo), _shown(wanted)))
        return _join(snapshots, wanted)
    if len(revisions) == 1:
        return _join(snapshots, revisions[0])
    if not revisions:
        raise ModelError("%s: a Hugging Face cache entry with no snapshot (not downloaded yet?)" % host.display(repo))
    raise ModelError(
        "%s: %d snapshots (%s) and no refs/main to choose one; give the snapshot's folder"
        % (host.display(repo), len(revisions), _listed(revisions))
    )


def _weight_kind(name: str):
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".gguf"):
        return "gguf"
    if name.endswith(PLAIN_SUFFIXES) and name not in NOT_WEIGHTS and not name.startswith("rng_state"):
        return "plain"
    return None


_LEFT_OUT = {"gguf": "GGUF files", "plain": ".bin/.pt copies"}


def _folder_files(host, folder: str, notes, nested: bool = False):
    """The weight files of one folder, with what was left out added to ``notes``: safetensors
    first (the shards its index names), else one GGUF model, else .bin/.pt/.pth/.onnx files."""
    names = _names(host, folder)
    by_kind = {}
    for name in names:
        kind = _weight_kind(name)
        if kind:
            by_kind.setdefault(kind, []).append(name)
    if not by_kind:
        if not nested and "model_index.json" in names:
            # A diffusers pipeline: each component's weights in a folder of its own, all loaded.
            files = [
                item
                for name in names
                if _is_dir(host, _join(folder, name))
                for item in _folder_files(host, _join(folder, name), notes, True)
            ]
            if files:
                return files
        if nested:
            return []
        raise ModelError("%s: no model weights in it (*.safetensors, *.gguf, *.bin, *.pt, *.pth, *.onnx)" % host.display(folder))
    if "safetensors" in by_kind:
        files = _indexed(host, folder, names, by_kind["safetensors"], ".safetensors.index.json", "safetensors", notes)
        left = [_LEFT_OUT[kind] for kind in ("gguf", "plain") if kind in by_kind]
        if left:
            notes.append("%s beside them not counted" % " and ".join(left))
        return files
    if "gguf" in by_kind:
        models = _gguf_models(host, folder, by_kind["gguf"])
        if len(models) > 1:
            raise ModelError(
                "%s: holds %d GGUF models (%s); give the file to measure"
                % (host.display(folder), len(models), _listed(model[0] for model in models))
            )
        if "plain" in by_kind:
            notes.append(".bin/.pt files beside it not counted")
        return [_Weights(_join(folder, name), "gguf") for name in models[0]]
    return _indexed(host, folder, names, by_kind["plain"], ".bin.index.json", "plain", notes)


def _indexed(host, folder: str, names, files, suffix: str, kind: str, notes):
    """The shards the folder's index (model.safetensors.index.json) names, each of which must
    be there; without an index, every file. A file no index names (Mistral's
    consolidated.safetensors beside its shards) is not what loaders read."""
    indexes = [name for name in names if name.endswith(suffix)]
    if not indexes:
        return [_Weights(_join(folder, name), kind) for name in files]
    present = set(names)
    named = {}
    for index in indexes:
        for tensor, shard in _weight_map(host, _join(folder, index)).items():
            if shard not in present:
                raise ModelError(
                    "%s: names %s, which is not in the folder (an unfinished download?)"
                    % (host.display(_join(folder, index)), _shown(shard))
                )
            named.setdefault(shard, []).append(tensor)
    unnamed = [name for name in files if name not in named]
    if unnamed:
        notes.append("%s not in the index, not counted" % _listed(unnamed, 2))
    return [_Weights(_join(folder, shard), kind, tuple(tensors)) for shard, tensors in sorted(named.items())]


def _weight_map(host, path: str) -> dict:
    got = host.read_text(path, cap=INDEX_CAP)
    if not got.ok:
        raise ModelError("%s: %s" % (host.display(path), _why(got)))
    if got.truncated:
        raise ModelError("%s: larger than %d MiB, not a model's index" % (host.display(path), INDEX_CAP >> 20))
    try:
        index = json.loads(got.data, parse_int=_bounded_int)
    except (ValueError, RecursionError) as exc:
        raise ModelError("%s: bad JSON (%s)" % (host.display(path), str(exc)[:120])) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelError("%s: no weight_map (tensor → file) in it" % host.display(path))
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or "/" in shard or shard in (".", "..") or not shard.isprintable():
            raise ModelError("%s: tensor %s maps to %s, not a file in the folder" % (host.display(path), _shown(tensor), _shown(shard)))
    return weight_map


def _gguf_models(host, folder: str, names):
    """GGUF files grouped into models, a split model (NAME-00001-of-00003.gguf …) as one, each
    of its parts there."""
    groups = {}
    models = []
    for name in names:
        match = re.match(_SPLIT_GGUF, name)
        if match:
            groups.setdefault((match.group(1), match.group(3)), set()).add(name)
        else:
            models.append([name])
    for (stem, count), present in sorted(groups.items()):
        parts = ["%s-%05d-of-%s.gguf" % (stem, number, count) for number in range(1, int(count) + 1)]
        missing = [part for part in parts if part not in present]
        if missing or not parts:
            shown = _join(folder, missing[0] if missing else sorted(present)[0])
            raise ModelError("%s: a part of a split GGUF model is missing (an unfinished download?)" % host.display(shown))
        models.append(parts)
    return sorted(models)


def _file_and_parts(host, path: str):
    """A file given by name: itself, or every part of a split GGUF (llama.cpp loads them all
    from the first)."""
    folder, name = path.rsplit("/", 1)
    if not re.match(_SPLIT_GGUF, name):
        return [_Weights(path, _weight_kind(name) or "any")]
    folder = folder or "/"
    split = [n for n in _names(host, folder) if re.match(_SPLIT_GGUF, n)]
    (parts,) = [model for model in _gguf_models(host, folder, split) if name in model]
    return [_Weights(_join(folder, part), "gguf") for part in parts]


def _measure(host, files, notes) -> ModelFiles:
    summaries = []
    for item in files:
        got = host.derive(item.path, KIND, summarize)
        shown = host.display(item.path)
        if not got.ok:
            if got.missing and host.readlink(item.path).data:
                raise ModelError("%s: a link to a file that is not there (an unfinished download?)" % shown)
            raise ModelError("%s: %s" % (shown, _why(got)))
        summary = _summary(got.data, shown)
        found = summary["format"]
        if item.kind == "safetensors" and found != "safetensors":
            raise ModelError("%s: not a safetensors file (no JSON header after the 8-byte length)" % shown)
        if item.kind == "gguf" and found != "gguf":
            raise ModelError("%s: not a GGUF file (it does not begin with 'GGUF')" % shown)
        if item.kind == "any" and found == "other":
            raise ModelError("%s: not a model file aidoctor can measure (safetensors, GGUF, .bin, .pt, .pth, .onnx)" % shown)
        if item.indexed and found == "safetensors":
            held = set(summary["names"])
            absent = [tensor for tensor in item.indexed if tensor not in held]
            if absent:
                more = " (and %d more)" % (len(absent) - 1) if len(absent) > 1 else ""
                raise ModelError("%s: the index puts tensor %s%s in it, but its header does not hold it" % (shown, _shown(absent[0]), more))
        summaries.append((item.path, summary))
    _check_split(host, summaries)
    size = sum(s["file"] if s["format"] == "other" else s["bytes"] for _, s in summaries)
    if not size:
        raise ModelError("%s: the files hold no tensor data" % host.display(files[0].path))
    measured = [s for _, s in summaries if s["format"] != "other"]
    by_type = {}
    for summary in measured:
        for name, (count, nbytes) in summary["types"].items():
            kept = by_type.setdefault(name, [0, 0])
            kept[0] += count
            kept[1] += nbytes
    params = sum(s["params"] for s in measured) if len(measured) == len(summaries) else None
    gguf = [s.get("file_type") for s in measured if s["format"] == "gguf"]
    file_type = gguf[0] if gguf and len(set(gguf)) == 1 else None
    dtype, key, packed = _dtype(by_type, file_type, size, params, bool(gguf))
    notes = list(notes)
    if len(measured) < len(summaries):
        notes.append("no parameter count: .bin/.pt/.pth/.onnx files are counted by size")
    elif packed:
        params = None
        notes.append("no parameter count: packed integer weights (%s)" % dtype)
    from ai_doctor.units import gib

    parts = ["%s parameters" % count_words(params)] if params else []
    parts += [dtype] if dtype else []
    parts.append("%s in %d file%s" % (gib(size), len(summaries), "" if len(summaries) == 1 else "s"))
    described = ", ".join(parts) + (" (%s)" % "; ".join(notes) if notes else "")
    return ModelFiles(size, params, dtype, key, tuple(path for path, _ in summaries), tuple(notes), described)


def _check_split(host, summaries) -> None:
    """The parts of a split GGUF say which part each is (split.no counts from 0) and how many."""
    parts = [(path, s) for path, s in summaries if s["format"] == "gguf" and re.match(_SPLIT_GGUF, path.rsplit("/", 1)[1])]
    for number, (path, summary) in enumerate(parts):
        split = summary.get("split")
        if split is not None and (split[1] != len(parts) or split[0] != number):
            raise ModelError("%s: its header says it is part %d of %d" % (host.display(path), split[0] + 1, split[1]))


# The nearest --dtype of each element type (units.DTYPE_BYTES), for the smaller-format sizes.
_NEAREST = {"F64": "fp32", "F32": "fp32", "F16": "fp16", "BF16": "bf16", "I8": "int8", "F4": "int4"}
# Integers that carry packed weights (GPTQ/AWQ in int32, bitsandbytes in uint8): their element
# counts are not parameter counts.
_PACKED = ("U8", "I16", "U16", "I32", "U32", "I64", "U64", "BOOL", "C64")


def _word(name: str) -> str:
    """A type as the report writes it: bf16, f8_e4m3, i32 in lower case; ggml's block formats
    (Q4_K_M, IQ2_XS, MXFP4) as ggml writes them."""
    return name.lower() if name[:1] in "FBIUC" else name


def _dtype(by_type, file_type, size, params, gguf):
    """(the dtype in words, the nearest --dtype or None, whether packed integers dominate a
    safetensors checkpoint: GGUF's integer tensors hold what they say)."""
    if not by_type:
        return None, None, False
    total = sum(nbytes for _, nbytes in by_type.values()) or 1
    ranked = sorted(by_type.items(), key=lambda item: (-item[1][1], item[0]))
    top = ranked[0][0]
    if file_type:
        words = _word(file_type)
        # The file type names what the weights were quantized to (Q4_K_M), whatever type holds most bytes.
        top = file_type
    elif ranked[0][1][1] * 10 >= total * 9:
        words = _word(top)
    else:
        words = " + ".join(_word(name) for name, (_, nbytes) in ranked[:3] if nbytes * 20 >= total)
    if top in _PACKED and not gguf:
        return words, None, True
    if top in _NEAREST:
        return words, _NEAREST[top], False
    if top.startswith(("F8", "F6")):
        return words, "fp8", False
    # ggml's block formats: the nearest by bits per weight (Q8_0 is 8.5, Q6_K 6.6, Q4_K_M about 4.9).
    return words, "int8" if params and size * 8 > params * 5 else "int4", False


def count_words(count: int) -> str:
    """``70.6 B``, ``8.03 B``, ``494 M``: three figures and a scale."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        # 999,960,000 is 1.00 B, not 1000 M.
        if count * 2000 >= scale * 1999:
            value = count / scale
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return "%.*f %s" % (digits, value, suffix)
    return str(count)
