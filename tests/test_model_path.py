"""--model PATH: sizes, parameter counts and dtypes read from safetensors and GGUF headers made
by the formats' own libraries, folders, Hugging Face cache entries, snapshots, and headers
that lie (each refused with one line, exit 2, quickly)."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import subprocess
import sys
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_doctor import api, cli, modelfiles
from ai_doctor.host import Host
from ai_doctor.modelfiles import ModelError, parse_safetensors_header, read_model, summarize

from conftest import REPO, Tree, minimal_host

try:  # the formats' own writers (the test extra); the hostile headers below need none of them
    import gguf
    import numpy as np
    from safetensors import numpy as safetensors_numpy
except ImportError:
    gguf = np = safetensors_numpy = None

libraries = pytest.mark.skipif(gguf is None, reason="needs numpy, safetensors and gguf: pip install -e '.[test]'")


# -- builders --------------------------------------------------------------------------------


@pytest.fixture
def host_tree(tmp_path):
    """A small running host to point --root at (not the proving `tree` fixture: these trees
    hold models, not problems to fix)."""
    return minimal_host(Tree(tmp_path / "root"))


def safetensors_bytes(entries: dict, data_len=None, pad: bool = True) -> bytes:
    """A safetensors file from a header written by hand (bf16, which numpy cannot make)."""
    text = json.dumps(entries).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    if data_len is None:
        data_len = max([e["data_offsets"][1] for k, e in entries.items() if k != "__metadata__"] or [0])
    return struct.pack("<Q", len(text)) + text + b"\0" * data_len


def bf16(shapes: dict) -> dict:
    header, at = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [at, at + size]}
        at += size
    return header


def write_gguf(path, tensors, file_type=None, endian=None, tokens=None, **writer_args):
    """A GGUF file written by gguf-py's GGUFWriter; ``tensors``: name → array, or (array of
    bytes, quantized type)."""
    extra = {"endianess": endian} if endian is not None else {}
    writer = gguf.GGUFWriter(str(path), "llama", **extra, **writer_args)
    if file_type is not None:
        writer.add_file_type(file_type)
    if tokens is not None:
        writer.add_token_list(tokens)
    for name, value in tensors.items():
        if isinstance(value, tuple):
            writer.add_tensor(name, value[0], raw_dtype=value[1])
        else:
            writer.add_tensor(name, value.byteswap() if endian == gguf.GGUFEndian.BIG else value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_bytes(tensors=(), kv=(), version=3, order="<", data=None, n_tensors=None, n_kv=None) -> bytes:
    """A GGUF file built field by field, to say things GGUFWriter would not.
    ``tensors``: (name, dims, ggml type, offset); ``kv``: (key, type, packed value bytes)."""

    def string(text):
        raw = text.encode() if isinstance(text, str) else text
        return struct.pack(order + "Q", len(raw)) + raw

    out = b"GGUF" + struct.pack(order + "I", version)
    out += struct.pack(order + "QQ", len(tensors) if n_tensors is None else n_tensors, len(kv) if n_kv is None else n_kv)
    for key, kind, value in kv:
        out += string(key) + struct.pack(order + "I", kind) + value
    for name, dims, kind, offset in tensors:
        out += string(name) + struct.pack(order + "I", len(dims)) + b"".join(struct.pack(order + "Q", d) for d in dims)
        out += struct.pack(order + "IQ", kind, offset)
    out += b"\0" * (-len(out) % 32)
    return out + (b"\0" * 64 if data is None else data)


def measure(path) -> modelfiles.ModelFiles:
    return read_model(Host("/"), str(path))


# -- the tables match the formats' own packages ---------------------------------------------


@libraries
def test_ggml_block_sizes_are_gguf_py_s():
    theirs = {int(kind): (kind.name, block, size) for kind, (block, size) in gguf.GGML_QUANT_SIZES.items()}
    shared = set(theirs) & set(modelfiles.GGML_TYPES)
    assert len(shared) >= 30
    assert {k: theirs[k] for k in shared} == {k: modelfiles.GGML_TYPES[k] for k in shared}


@libraries
def test_gguf_file_type_names_are_llama_cpp_s():
    theirs = {int(t): t.name.replace("MOSTLY_", "").replace("ALL_", "") for t in gguf.LlamaFileType if t.name != "GUESSED"}
    shared = set(theirs) & set(modelfiles.GGUF_FILE_TYPES)
    assert len(shared) >= 30
    assert {k: theirs[k] for k in shared} == {k: modelfiles.GGUF_FILE_TYPES[k] for k in shared}


# -- safetensors ----------------------------------------------------------------------------


@libraries
def test_safetensors_written_by_the_library(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = {"embed": np.zeros((10, 16), np.float16), "norm": np.ones(16, np.float32), "ids": np.zeros(3, np.int64)}
    safetensors_numpy.save_file(tensors, str(path), metadata={"format": "pt"})
    found = measure(path)
    assert found.params == 160 + 16 + 3
    assert found.size == 320 + 64 + 24
    assert found.dtype == "f16 + f32 + i64" and found.dtype_key == "fp16"
    assert found.described == "179 parameters, f16 + f32 + i64, 408 B in 1 file"


@libraries
def test_bf16_checkpoint_written_by_hand_is_valid_for_the_library_too(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(bf16({"a": (64, 32), "b": (32,)})))
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as opened:
        assert sorted(opened.keys()) == ["a", "b"]
    found = measure(path)
    assert (found.params, found.size, found.dtype, found.dtype_key) == (2080, 4160, "bf16", "bf16")


def test_empty_and_scalar_tensors_are_allowed(tmp_path):
    header = {
        "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
        "e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [4, 4]},
    }
    (tmp_path / "m.safetensors").write_bytes(safetensors_bytes(header))
    assert measure(tmp_path / "m.safetensors").params == 1


def _refused_in_one_line(path, data, message):
    """``data`` written at ``path`` is refused with one line that names the file first."""
    path.write_bytes(data)
    with pytest.raises(ModelError) as caught:
        measure(path)
    line = str(caught.value)
    assert message in line, line
    assert line.startswith(str(path) + ": ") and "\n" not in line


@pytest.mark.parametrize(
    "data, message",
    [
        (struct.pack("<Q", 1000) + b'{"a":1}', "header length 1000 runs past the end of the file"),
        (struct.pack("<Q", 1 << 63) + b"{" * 8, "over the format's limit of 100000000 bytes"),
        (struct.pack("<Q", 8) + b"{not js}", "bad JSON"),
        (struct.pack("<Q", 8) + b"[1, 2]  ", "not a safetensors file"),
        (struct.pack("<Q", 6) + b'{"\xff":1}', "not UTF-8"),
        (struct.pack("<Q", 9) + b'{"a":NaN}', "NaN is not JSON"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}, 8), "outside the 8 bytes after the header"),
        (
            safetensors_bytes(
                {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
            ),
            "'b' at [4, 12] overlaps the tensor before it",
        ),
        (
            safetensors_bytes(
                {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}
            ),
            "leaves 4 bytes unused before it",
        ),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 16), "the tensors cover 8 of the 16 bytes"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}), "is 12 bytes, but its data_offsets span 8"),
        (safetensors_bytes({"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}), "unknown dtype 'Q9'"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}), "not a list of counts: [-2]"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}), "not a list of counts"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}), "not a list of counts"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}), "outside the 0 bytes"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, 8), "not [BEGIN, END]"),
        (safetensors_bytes({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}), "12 bits of F4, not whole bytes"),
        (safetensors_bytes({"a": [1, 2]}, 0), "tensor 'a' is not an object"),
        (
            safetensors_bytes({"a": {"dtype": "F32", "shape": [1 << 40, 1 << 40, 1 << 40], "data_offsets": [0, 8]}}),
            "is more bytes than the file holds, but its data_offsets span 8",
        ),
        (struct.pack("<Q", 200016) + b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}" + b" " * 10, "nested too deeply"),
        (
            struct.pack("<Q", 5061) + b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 8]}} ' + b"\0" * 8,
            "a number of 5000 digits",
        ),
    ],
)
def test_safetensors_headers_that_lie_are_refused(tmp_path, data, message):
    _refused_in_one_line(tmp_path / "model.safetensors", data, message)


def test_a_duplicate_key_message_names_it(tmp_path):
    text = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 4)
    with pytest.raises(ModelError, match="'a' appears twice"):
        measure(tmp_path / "m.safetensors")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=1 << 20))
def test_any_safetensors_header_is_read_or_refused_with_value_error(body, size):
    try:
        summary = parse_safetensors_header(b"{" + body, size)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert summary["bytes"] == size - 9 - len(body)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-5, max_value=1 << 65) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "x"]), children),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), JSONISH | st.just({"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}), max_size=4))
def test_structured_safetensors_headers_are_read_or_refused(header):
    text = json.dumps(header).encode()
    for size in (8 + len(text), 8 + len(text) + 4, 8 + len(text) + 8):
        try:
            parse_safetensors_header(text, size)
        except ValueError as exc:
            assert "\n" not in str(exc)


# -- GGUF -----------------------------------------------------------------------------------


@libraries
def test_gguf_written_by_gguf_py(tmp_path):
    path = tmp_path / "tiny-Q4_K_M.gguf"
    write_gguf(
        path,
        {
            "token_embd.weight": np.zeros((8, 64), np.float32),
            "output_norm.weight": np.zeros(64, np.float16),
            # 4 rows of 64 Q4_0 elements: 2 blocks of 18 bytes each.
            "blk.0.ffn_up.weight": (np.zeros((4, 36), np.uint8), gguf.GGMLQuantizationType.Q4_0),
        },
        file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M,
        tokens=["tok%d" % i for i in range(500)],
    )
    reader = gguf.GGUFReader(str(path))
    found = measure(path)
    assert found.params == sum(int(t.n_elements) for t in reader.tensors) == 512 + 64 + 256
    assert found.size == sum(int(t.n_bytes) for t in reader.tensors) == 2048 + 128 + 144
    assert found.dtype == "Q4_K_M"
    assert found.described == "832 parameters, Q4_K_M, 2.3 KiB in 1 file"


@libraries
def test_gguf_without_file_type_names_the_dominant_type(tmp_path):
    write_gguf(tmp_path / "m.gguf", {"a": (np.zeros((64, 34), np.uint8), gguf.GGMLQuantizationType.Q8_0), "n": np.zeros(32, np.float32)})
    found = measure(tmp_path / "m.gguf")
    assert (found.dtype, found.dtype_key, found.params) == ("Q8_0", "int8", 64 * 32 + 32)


@libraries
def test_big_endian_gguf_is_read(tmp_path):
    little, big = tmp_path / "le.gguf", tmp_path / "be.gguf"
    tensors = {"a": np.arange(96, dtype=np.float32).reshape(3, 32), "b": np.zeros(16, np.float16)}
    write_gguf(little, tensors)
    write_gguf(big, tensors, endian=gguf.GGUFEndian.BIG)
    assert little.read_bytes()[4:8] != big.read_bytes()[4:8]
    assert measure(big)._replace(files=(), described="") == measure(little)._replace(files=(), described="")


@libraries
def test_split_gguf_counts_every_part(tmp_path):
    base = tmp_path / "m.gguf"
    write_gguf(
        base, {"a": np.zeros((4, 32), np.float32), "b": np.zeros((2, 32), np.float32), "c": np.zeros(32, np.float16)}, split_max_tensors=1
    )
    parts = sorted(p.name for p in tmp_path.iterdir())
    assert parts == ["m-00001-of-00003.gguf", "m-00002-of-00003.gguf", "m-00003-of-00003.gguf"]
    from_first = measure(tmp_path / parts[0])
    from_folder = measure(tmp_path)
    assert from_first.params == from_folder.params == 128 + 64 + 32
    assert from_first.described.endswith("in 3 files")
    (tmp_path / parts[1]).unlink()
    with pytest.raises(ModelError, match="a part of a split GGUF model is missing"):
        measure(tmp_path / parts[0])


@libraries
def test_split_gguf_parts_that_disagree_are_refused(tmp_path):
    write_gguf(tmp_path / "m.gguf", {"a": np.zeros(32, np.float32), "b": np.zeros(32, np.float32)}, split_max_tensors=1)
    first, second = sorted(tmp_path.iterdir())
    os.rename(first, tmp_path / "swap")
    os.rename(second, first)
    os.rename(tmp_path / "swap", second)
    with pytest.raises(ModelError, match="its header says it is part 2 of 2"):
        measure(tmp_path)


def _u32(value):
    return struct.pack("<I", value)


def _string(text):
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize(
    "data, message",
    [
        (gguf_bytes(version=1), "GGUF version 1"),
        (gguf_bytes(version=4), "GGUF version 4, which this aidoctor does not read"),
        (gguf_bytes(n_kv=10**12), "1000000000000 metadata entries, more than the file"),
        (gguf_bytes(n_tensors=10**7), "10000000 tensors, more than the file"),
        (gguf_bytes(kv=[(b"k", 8, struct.pack("<Q", 1 << 63))]), "past the file or over 64 MiB"),
        (gguf_bytes(kv=[(b"k", 8, struct.pack("<Q", 40 << 20))], data=b"\0" * 100), "past the file or over 64 MiB"),
        (gguf_bytes(kv=[(b"k", 9, _u32(4) + struct.pack("<Q", 1 << 60))]), "holds 1152921504606846976 values, more than the file"),
        (gguf_bytes(kv=[(b"k", 9, _u32(8) + struct.pack("<Q", 1 << 40))]), "strings, more than the file can hold"),
        (gguf_bytes(kv=[(b"k", 9, _u32(9) + struct.pack("<Q", 1) + _u32(77) + struct.pack("<Q", 0))]), "an array of type 77"),
        (gguf_bytes(kv=[(b"k", 9, (_u32(9) + struct.pack("<Q", 1)) * 5)]), "nests 1 arrays 5 deep"),
        (gguf_bytes(kv=[(b"k", 9, _u32(9) + struct.pack("<Q", 10**6))], data=b"\0" * (13 << 20)), "nests 1000000 arrays 2 deep"),
        (gguf_bytes(kv=[(b"k", 99, b"")]), "value type 99"),
        (gguf_bytes(kv=[(b"general.alignment", 4, _u32(3))]), "general.alignment 3 is not a power of two"),
        (gguf_bytes(tensors=[("a", [1] * 9, 0, 0)]), "has 9 dimensions"),
        (gguf_bytes(tensors=[("a", [33], 2, 0)]), "33 elements per row is not a multiple of Q4_0's block of 32"),
        (gguf_bytes(tensors=[("a", [4], 77, 0)]), "ggml type 77"),
        (gguf_bytes(tensors=[("a", [1 << 40, 1 << 40], 0, 0)]), "more elements than ggml can count"),
        (gguf_bytes(tensors=[("a", [4], 0, 0), ("a", [4], 0, 32)]), "tensor 'a' appears twice"),
        (gguf_bytes(tensors=[("a", [4], 0, 0), ("b", [4], 0, 64)]), "tensor 'b' has offset 64, expected 32"),
        (gguf_bytes(tensors=[("a", [4], 0, 0), ("b", [4], 0, 0)]), "tensor 'b' has offset 0, expected 32"),
        (gguf_bytes(tensors=[("a", [1024], 0, 0)]), "past the end of the file"),
        (gguf_bytes(kv=[(b"k", 4, _u32(1))])[:30], "the header runs past the end of the file"),
        (b"GGUF" + _u32(3) + b"\0" * 8, "shorter than a GGUF header"),
    ],
)
def test_gguf_headers_that_lie_are_refused(tmp_path, data, message):
    _refused_in_one_line(tmp_path / "model.gguf", data, message)


@libraries
def test_a_truncated_gguf_download_is_refused(tmp_path):
    path = tmp_path / "m.gguf"
    write_gguf(path, {"a": np.zeros((64, 64), np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="past the end of the file .*: an unfinished download"):
        measure(path)


@libraries
@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_corruption_of_a_gguf_file_is_read_or_refused_with_value_error(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("g")
    if not (folder / "m.gguf").exists():
        write_gguf(folder / "m.gguf", {"a": np.zeros((2, 32), np.float32), "q": (np.zeros((1, 34), np.uint8), 8)}, file_type=7)
    original = bytearray((folder / "m.gguf").read_bytes())
    header_end = 400
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, min(header_end, len(original) - 1)))
        original[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(8, len(original)))
    try:
        json.loads(summarize(io.BytesIO(bytes(original[:cut]))))
    except ValueError as exc:
        assert "\n" not in str(exc)


def test_hostile_headers_are_refused_at_once_without_allocating(tmp_path):
    cases = {
        "a.safetensors": struct.pack("<Q", 99_999_999) + b"{" + b" " * 100,
        "b.gguf": gguf_bytes(kv=[(b"k", 8, struct.pack("<Q", 60 << 20))]),
        "c.gguf": gguf_bytes(n_tensors=1_000_000, n_kv=0),
        "d.gguf": gguf_bytes(kv=[(b"k", 9, _u32(8) + struct.pack("<Q", 10**9))]),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        tracemalloc.start()
        started = time.perf_counter()
        with pytest.raises(ModelError):
            measure(tmp_path / name)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 0.5 and peak < 4 << 20, (name, elapsed, peak)


@libraries
def test_a_real_sized_vocabulary_is_skipped_quickly(tmp_path):
    path = tmp_path / "m.gguf"
    write_gguf(path, {"a": np.zeros(32, np.float32)}, tokens=["▁token%d" % i for i in range(150_000)])
    started = time.perf_counter()
    assert measure(path).params == 32
    assert time.perf_counter() - started < 2


# -- folders and Hugging Face cache entries -------------------------------------------------


def sharded(folder, shards=2, per=3, index=True):
    """A transformers-style sharded bf16 checkpoint with its index."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for number in range(1, shards + 1):
        name = "model-%05d-of-%05d.safetensors" % (number, shards)
        names = {"layers.%d.%d.weight" % (number, i): (16, 8) for i in range(per)}
        (folder / name).write_bytes(safetensors_bytes(bf16(names)))
        weight_map.update(dict.fromkeys(names, name))
    if index:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    return weight_map


def test_sharded_folder(tmp_path):
    sharded(tmp_path / "m")
    found = measure(tmp_path / "m")
    assert found.params == 2 * 3 * 128 and found.size == 2 * 3 * 256
    assert found.described == "768 parameters, bf16, 1.5 KiB in 2 files"


def test_a_shard_the_index_names_must_be_there(tmp_path):
    sharded(tmp_path / "m", shards=3)
    (tmp_path / "m" / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ModelError, match=r"index.json: names 'model-00002-of-00003.safetensors', which is not in the folder"):
        measure(tmp_path / "m")


def test_the_index_tensors_must_be_in_their_shards(tmp_path):
    weight_map = sharded(tmp_path / "m")
    weight_map["layers.1.0.weight"] = "model-00002-of-00002.safetensors"
    (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ModelError, match="the index puts tensor 'layers.1.0.weight' in it, but its header does not hold it"):
        measure(tmp_path / "m")


@pytest.mark.parametrize(
    "index, message",
    [
        ("{", "bad JSON"),
        ("[]", "no weight_map"),
        ('{"weight_map": {"a": "../../etc/passwd"}}', "maps to '../../etc/passwd', not a file in the folder"),
        ('{"weight_map": {"a": 5}}', "maps to 5"),
    ],
)
def test_bad_indexes_are_refused(tmp_path, index, message):
    sharded(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ModelError, match=message):
        measure(tmp_path / "m")


def test_copies_beside_the_safetensors_are_left_out_and_said(tmp_path):
    sharded(tmp_path / "m")
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"\x80\x02" + b"\0" * 5000)
    (tmp_path / "m" / "consolidated.safetensors").write_bytes(safetensors_bytes(bf16({"x": (64, 64)})))
    found = measure(tmp_path / "m")
    assert found.params == 768 and len(found.files) == 2
    assert found.described == (
        "768 parameters, bf16, 1.5 KiB in 2 files "
        "(consolidated.safetensors not in the index, not counted; .bin/.pt copies beside them not counted)"
    )


def test_pickles_and_onnx_count_by_size(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + b"\0" * 4092)
    (tmp_path / "m" / "training_args.bin").write_bytes(b"\0" * 100)
    found = measure(tmp_path / "m")
    assert (found.size, found.params, found.dtype) == (4096, None, None)
    assert found.described == "4.0 KiB in 1 file (no parameter count: .bin/.pt/.pth/.onnx files are counted by size)"


@libraries
def test_a_folder_of_several_gguf_models_asks_for_one(tmp_path):
    for name in ("m-Q4_K_M.gguf", "m-Q8_0.gguf"):
        write_gguf(tmp_path / name, {"a": np.zeros(32, np.float32)})
    with pytest.raises(ModelError, match=r"holds 2 GGUF models \(m-Q4_K_M.gguf, m-Q8_0.gguf\); give the file"):
        measure(tmp_path)


def test_a_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no model weights in it"):
        measure(tmp_path)


def test_an_unknown_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a model file aidoctor can measure"):
        measure(tmp_path / "notes.txt")


@libraries
def test_an_ollama_blob_is_known_by_its_first_bytes(tmp_path):
    write_gguf(tmp_path / "sha256-0123abcd", {"a": np.zeros(64, np.float32)})
    assert measure(tmp_path / "sha256-0123abcd").params == 64


def test_packed_integer_weights_have_no_parameter_count(tmp_path):
    header = {
        "l.qweight": {"dtype": "I32", "shape": [64, 64], "data_offsets": [0, 16384]},
        "l.scales": {"dtype": "F16", "shape": [4, 64], "data_offsets": [16384, 16896]},
    }
    (tmp_path / "m.safetensors").write_bytes(safetensors_bytes(header))
    found = measure(tmp_path / "m.safetensors")
    assert (found.params, found.dtype_key) == (None, None)
    assert found.described == "i32, 16.5 KiB in 1 file (no parameter count: packed integer weights (i32))"


def test_a_diffusers_pipeline_counts_each_component(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    for part in ("unet", "vae"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "diffusion_pytorch_model.safetensors").write_bytes(safetensors_bytes(bf16({"w": (8, 8)})))
    (tmp_path / "scheduler").mkdir()
    assert measure(tmp_path).params == 128


def hf_cache(hub, revisions=("a1b2c3",), ref="a1b2c3"):
    """A Hugging Face cache entry as huggingface_hub lays it out: blobs named by hash, each
    snapshot's files links to ../../blobs/HASH."""
    repo = hub / "models--acme--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    if ref is not None:
        (repo / "refs" / "main").write_text(ref)
    source = hub.parent / "source"
    sharded(source)
    names = sorted(os.listdir(source))
    for number, name in enumerate(names):
        os.replace(source / name, repo / "blobs" / ("%064x" % (number + 1)))
    for revision in revisions:
        (repo / "snapshots" / revision).mkdir(parents=True)
        for number, name in enumerate(names):
            os.symlink("../../blobs/%064x" % (number + 1), repo / "snapshots" / revision / name)
    return repo


def test_hugging_face_cache_entry_follows_refs_main(tmp_path):
    repo = hf_cache(tmp_path / "hub", revisions=("a1b2c3", "d4e5f6"), ref="d4e5f6")
    found = measure(repo)
    assert found.params == 768 and all("/snapshots/d4e5f6/" in path for path in found.files)
    assert measure(tmp_path / "hub").params == 768  # the hub folder holding one model
    assert measure(repo / "snapshots" / "a1b2c3").params == 768


def test_hugging_face_cache_choices_that_cannot_be_made(tmp_path):
    repo = hf_cache(tmp_path / "hub", revisions=("a1b2c3", "d4e5f6"), ref=None)
    with pytest.raises(ModelError, match=r"2 snapshots \(a1b2c3, d4e5f6\) and no refs/main to choose one"):
        measure(repo)
    (repo / "refs" / "main").write_text("ffffff")
    with pytest.raises(ModelError, match="refs/main names snapshot 'ffffff', which is not in snapshots/"):
        measure(repo)
    (repo.parent / "models--acme--other" / "snapshots").mkdir(parents=True)
    with pytest.raises(ModelError, match=r"a Hugging Face cache of 2 models \(models--acme--other, models--acme--tiny\)"):
        measure(repo.parent)


def test_a_link_to_a_blob_not_downloaded(tmp_path):
    repo = hf_cache(tmp_path / "hub")
    blob = os.path.realpath(repo / "snapshots" / "a1b2c3" / "model-00002-of-00002.safetensors")
    os.unlink(blob)
    with pytest.raises(ModelError, match="model-00002-of-00002.safetensors: a link to a file that is not there"):
        measure(repo)


def test_in_a_tree_links_resolve_inside_it(tmp_path, host_tree):
    root = host_tree.root
    repo = hf_cache(root / "srv" / "hub")
    target = "/srv/hub/models--acme--tiny"
    assert read_model(Host(str(root)), target).params == 768
    # An absolute link is the tree's own path, never this machine's.
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(safetensors_bytes(bf16({"x": (4, 4)})))
    link = repo / "snapshots" / "a1b2c3" / "model-00001-of-00002.safetensors"
    link.unlink()
    os.symlink(str(outside), link)
    with pytest.raises(ModelError, match="a link to a file that is not there"):
        read_model(Host(str(root)), target)


# -- through the command line ---------------------------------------------------------------


def test_the_memory_rules_judge_the_size_read(run, host_tree, tmp_path):
    sharded(host_tree.root / "models" / "m")
    result = run("--root", host_tree, "--model", "/models/m", "--format", "json")
    assert result.code == 0, result.err
    assert result.json["options"]["model_size"] == {
        "bytes": 1536,
        "as_read": "/models/m",
        "from": "--model",
        "dtype": "bf16",
        "params": 768,
    }
    assert result.statuses()["memory.headroom"] == "pass"
    text = run("--root", host_tree, "--model", "/models/m").out
    assert "Model: 768 parameters, bf16, 1.5 KiB in 2 files" in text


def test_a_model_larger_than_the_host_is_a_finding(run, host_tree):
    folder = host_tree.root / "models" / "big"
    folder.mkdir(parents=True)
    header = bf16({"w": (1 << 20, 40 << 10)})  # 40 Gi bf16 parameters: 80 GiB
    text = json.dumps(header).encode()
    with open(folder / "model.safetensors", "wb") as stream:
        stream.write(struct.pack("<Q", len(text)) + text)
        stream.truncate(8 + len(text) + (80 << 30))  # sparse: nothing but the header is written
    result = run("--root", host_tree, "--model", "/models/big", "--format", "json", "--only", "memory")
    finding = [f for f in result.json["findings"] if f["rule"] == "memory.headroom"][0]
    assert finding["message"].startswith("The model needs 42.9 B parameters, bf16, 80.0 GiB in 1 file: ")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model-size", "1G"], "give --model or --model-size, not both"),
        (["--params", "7B"], "give --model or --params, not both"),
        (["--dtype", "bf16"], "give --model or --dtype, not both"),
        (["--model", "/models/n"], "--model given more than once"),
    ],
)
def test_model_and_another_size_is_a_usage_error(run, host_tree, extra, message):
    sharded(host_tree.root / "models" / "m")
    result = run("--root", host_tree, "--model", "/models/m", *extra)
    assert result.code == 2 and result.err.startswith("aidoctor: error: " + message)
    assert result.err.count("\n") == 1 and not result.out


def test_margin_goes_with_model(run, host_tree):
    sharded(host_tree.root / "models" / "m")
    assert run("--root", host_tree, "--model", "/models/m", "--margin", "1G", "--only", "memory").code == 0


def test_paths_in_a_tree_are_written_as_on_it(run, host_tree):
    sharded(host_tree.root / "models" / "m")
    relative = run("--root", host_tree, "--model", "models/m")
    assert relative.code == 2 and "with --root, give the path as on that system (absolute: /models/NAME)" in relative.err
    host_path = run("--root", host_tree, "--model", str(host_tree.root / "models" / "m"))
    assert host_path.code == 2 and host_path.err.rstrip().endswith("no such file or folder (paths are as on that system: /models/m)")


def test_a_hostile_header_through_the_real_command_is_one_line(host_tree):
    folder = host_tree.root / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    done = subprocess.run(
        [sys.executable, "-m", "ai_doctor", "--root", str(host_tree), "--model", "/models/m"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=dict(os.environ, AIDOCTOR_NO_CACHE="1"),
    )
    assert done.returncode == 2 and not done.stdout
    wanted = "aidoctor: error: --model: %s/models/m/model.safetensors: safetensors: header length %d is over the format's limit of %d bytes"
    assert done.stderr == wanted % (host_tree.root, 1 << 40, 100_000_000) + "\n"


def test_a_live_check_reads_relative_paths_here_and_passes_the_cache_environment(tmp_path, monkeypatch):
    sharded(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", "/srv/hf")
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    args = cli._parser().parse_args(["--model", "m"])
    request = api.with_model(args, api.request_from(args, ["--model", "m"]), Host("/"))
    assert request.model_path == str(tmp_path / "m") and request.size_source == "--model" and request.model_size == 1536
    assert request.env["HF_HOME"] == "/srv/hf" and "OLLAMA_MODELS" not in request.env
    # Without --model, a live check still says where caches live; a tree never does.
    plain = cli._parser().parse_args([])
    assert api.with_model(plain, api.request_from(plain, []), Host("/")).env["HF_HOME"] == "/srv/hf"
    tree_root = minimal_host(Tree(tmp_path / "root")).root
    assert api.with_model(plain, api.request_from(plain, []), Host(str(tree_root))).env == {}


def test_options_are_never_abbreviated(run, host_tree):
    # --model reads files: a prefix of --model-size must not silently become either option.
    for word in ("--model-s", "--mod"):
        refused = run("--root", host_tree, word, "1G", "--only", "memory")
        assert refused.code == 2 and "unrecognized arguments: %s" % word in refused.err


def test_a_snapshot_keeps_what_model_read_and_replays_it(run, host_tree, tmp_path):
    hf_cache(host_tree.root / "srv" / "hub")
    target = "/srv/hub/models--acme--tiny"
    direct = run("--root", host_tree, "--model", target, "--format", "json")
    assert direct.code == 0, direct.err
    assert run("snapshot", "--root", host_tree, "--model", target, "--dir", "-o", tmp_path / "snap").code == 0
    blobs = list((tmp_path / "snap" / "srv" / "hub" / "models--acme--tiny" / "blobs").glob("*"))
    assert all(blob.stat().st_size == 0 or blob.read_bytes()[:1] == b"{" for blob in blobs)  # no weights kept
    replay = run("--root", tmp_path / "snap", "--model", target, "--format", "json")
    assert replay.code == 0, replay.err
    assert replay.json["options"]["model_size"] == direct.json["options"]["model_size"]
    assert run("snapshot", "--root", host_tree, "-o", tmp_path / "archive.tar.gz").code == 0
    missing = run("--snapshot", tmp_path / "archive.tar.gz", "--model", target)
    assert missing.code == 2
    assert missing.err.rstrip().endswith("(the snapshot holds it only if taken with: aidoctor snapshot --model %s)" % target)


def test_a_recorded_summary_that_is_not_understood_is_refused(run, host_tree):
    folder = host_tree.root / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    record = host_tree.root / ".aidoctor" / "derived" / "model" / "models" / "m" / "model.safetensors"
    record.parent.mkdir(parents=True)
    for text in ('{"format": "safetensors", "bytes": -1}', "[", '{"format":"gguf","file":1,"bytes":1,"params":1,"types":{},"split":"x"}'):
        record.write_text(text)
        result = run("--root", host_tree, "--model", "/models/m")
        assert result.code == 2 and "the summary recorded for it is not understood" in result.err


def test_nested_arrays_are_skipped(tmp_path):
    inner = _u32(4) + struct.pack("<Q", 2) + _u32(1) + _u32(2)
    data = gguf_bytes(kv=[(b"k", 9, _u32(9) + struct.pack("<Q", 2) + inner * 2)], tensors=[("a", [4], 0, 0)])
    (tmp_path / "m.gguf").write_bytes(data)
    assert measure(tmp_path / "m.gguf").params == 4


def test_a_snapshot_s_recorded_cache_environment_is_its_environment(tmp_path):
    plain = cli._parser().parse_args([])
    tree = minimal_host(Tree(tmp_path / "root"))
    tree.manifest(format=1, env={"HOME": "/home/ml", "HF_HOME": "/srv/hf"})
    assert api.with_model(plain, api.request_from(plain, []), Host(str(tree))).env == {"HOME": "/home/ml", "HF_HOME": "/srv/hf"}
    # Anything else in its place is not taken (a tree is hostile input).
    for env in ({"PATH": "/bin"}, {"HOME": 5}, ["HOME"], "x"):
        tree.manifest(format=1, env=env)
        assert api.with_model(plain, api.request_from(plain, []), Host(str(tree))).env == {}


def test_a_live_snapshot_records_where_caches_are_looked_for(run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", "/nonexistent/hf")
    assert run("snapshot", "--dir", "-o", tmp_path / "snap", "--model", "/nonexistent/model").code == 2
    assert run("snapshot", "--dir", "-o", tmp_path / "snap").code == 0
    manifest = json.loads((tmp_path / "snap" / ".aidoctor" / "manifest.json").read_text())
    assert manifest["env"]["HF_HOME"] == "/nonexistent/hf"
