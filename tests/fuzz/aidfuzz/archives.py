"""Snapshot archives built byte by byte, and mutated at the level of members, headers and bytes.

An archive is described by a dict: the tree it starts from (as a list of members, the way
``aidoctor snapshot -o X.tar.gz`` packs one: PAX format, owners 0, link targets relative),
member operations (PAX records, GNU long names, sparse members, many members, links such as
``s -> .`` with ``a -> s/../x``, an mtime of 1e999, devices and FIFOs, duplicates, odd names),
operations on the raw tar bytes, the compression, and operations on the compressed bytes.
:func:`build` turns the description into bytes, deterministically.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile

from ai_doctor.host import lexical
from aidfuzz import trees
from aidfuzz.mutators import MARKER, b2s, s2b

BLOCK = 512
RECORD = 20 * BLOCK
# doctor/archive.py's limits, read from the module so the caps tracked are the real ones.
try:
    from ai_doctor import archive as _product

    MAX_ARCHIVE, MAX_UNPACKED, MAX_MEMBERS = _product.MAX_ARCHIVE, _product.MAX_UNPACKED, _product.MAX_MEMBERS
    MAX_SINGLE_READ, MAX_NAME, MAX_DEPTH = _product.MAX_SINGLE_READ, _product.MAX_NAME, _product.MAX_DEPTH
except ImportError:  # pragma: no cover
    MAX_ARCHIVE, MAX_UNPACKED, MAX_MEMBERS = 256 << 20, 1 << 30, 200_000
    MAX_SINGLE_READ, MAX_NAME, MAX_DEPTH = 16 << 20, 4096, 256

_TYPES = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE, "p": tarfile.FIFOTYPE}
_TYPES.update({"c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE, "7": tarfile.CONTTYPE})

# Header fields: (offset, length).
FIELDS = {
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "chksum": (148, 8),
    "type": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 6),
    "version": (263, 2),
    "uname": (265, 32),
    "prefix": (345, 155),
    "realsize": (483, 12),
    "isextended": (482, 1),
}


def _inside(folder: str, target: str) -> str:
    return lexical(target if target.startswith("/") else folder + "/" + target)


def members_of(tree: dict) -> list:
    """The members ``aidoctor snapshot`` would pack for ``tree`` (sorted, links made relative)."""
    import posixpath

    out = []
    for path in sorted(p for p in tree if p != "/"):
        kind, payload, mode = tree[path]
        member = {"name": path[1:], "type": kind, "mode": mode}
        if kind == "f":
            member["data"] = payload
        elif kind == "l":
            here = posixpath.dirname(path)
            member["link"] = posixpath.relpath(_inside(here, payload), here)
        out.append(member)
    return out


# -- raw headers -------------------------------------------------------------------------


def _octal(value: int, length: int) -> bytes:
    text = ("%0*o" % (length - 1, value)).encode("ascii")
    if len(text) > length - 1:
        # base-256, as GNU tar writes numbers too large for octal
        raw = bytearray(length)
        raw[0] = 0x80
        for index in range(length - 1, 0, -1):
            raw[index] = value & 0xFF
            value >>= 8
        return bytes(raw)
    return text + b"\x00"


def _checksum(block: bytearray) -> None:
    block[148:156] = b"        "
    total = sum(block)
    block[148:156] = ("%06o" % total).encode("ascii") + b"\x00 "


def raw_header(
    name: bytes, size: int, typeflag: bytes, mode: int = 0o644, link: bytes = b"", mtime: int = 0, gnu: bool = False
) -> bytearray:
    block = bytearray(BLOCK)
    block[0:100] = name[:100].ljust(100, b"\x00")
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(mtime, 12)
    block[156:157] = typeflag[:1]
    block[157:257] = link[:100].ljust(100, b"\x00")
    block[257:265] = b"ustar  \x00" if gnu else b"ustar\x0000"
    _checksum(block)
    return block


def _pad(data: bytes) -> bytes:
    rest = len(data) % BLOCK
    return data + b"\x00" * (BLOCK - rest if rest else 0)


def pax_records(records) -> bytes:
    """PAX records from (key, value) byte pairs, each with its correct length prefix."""
    out = b""
    for key, value in records:
        body = b" " + key + b"=" + value + b"\n"
        length = len(body) + 1
        while len(str(length).encode()) + len(body) != length:
            length += 1
        out += str(length).encode() + body
    return out


def _standard(member, fmt) -> bytes:
    info = tarfile.TarInfo(member["name"])
    kind = member["type"]
    info.type = _TYPES.get(kind, kind.encode("utf-8", "surrogateescape")[:1] or b"\x00")
    data = member.get("data", b"")
    info.size = len(data) if kind in ("f", "7") or kind not in _TYPES else 0
    if "size" in member:
        info.size = member["size"]
    info.mode = member.get("mode", 0o644) & 0o7777
    info.mtime = member.get("mtime", 0)
    info.linkname = member.get("link", "")
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if kind in ("c", "b"):
        info.devmajor, info.devminor = 1, 3
    pax = member.get("pax")
    if pax:
        info.pax_headers = {k: v for k, v in pax.items()}
    try:
        head = info.tobuf(fmt, "utf-8", "surrogateescape")
    except (ValueError, UnicodeError, OverflowError):
        head = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return head


def _sparse_gnu(member) -> bytes:
    """An old GNU sparse member (typeflag S): the map in the header, extension blocks after."""
    chunks = member["map"]
    stored = s2b(member.get("stored", "")) if "stored" in member else b"s" * sum(length for _, length in chunks)
    block = raw_header(member["name"].encode("utf-8", "surrogateescape"), len(stored), b"S", gnu=True)
    first, rest = chunks[:4], chunks[4:]
    for index, (offset, length) in enumerate(first):
        at = 386 + index * 24
        block[at : at + 12] = _octal(offset, 12)
        block[at + 12 : at + 24] = _octal(length, 12)
    block[482:483] = b"\x01" if rest else b"\x00"
    block[483:495] = _octal(member["realsize"], 12)
    _checksum(block)
    out = bytes(block)
    while rest:
        ext = bytearray(BLOCK)
        part, rest = rest[:21], rest[21:]
        for index, (offset, length) in enumerate(part):
            at = index * 24
            ext[at : at + 12] = _octal(offset, 12)
            ext[at + 12 : at + 24] = _octal(length, 12)
        ext[504:505] = b"\x01" if rest else b"\x00"
        out += bytes(ext)
    return out + _pad(stored)


def _sparse_pax(member) -> bytes:
    """A PAX 1.0 sparse member: GNU.sparse.* records, the map at the start of the data."""
    chunks = member["map"]
    name = member["name"].encode("utf-8", "surrogateescape")
    records = [(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.name", name)]
    records.append((b"GNU.sparse.realsize", str(member["realsize"]).encode()))
    mapping = ("%d\n" % len(chunks) + "".join("%d\n%d\n" % (o, n) for o, n in chunks)).encode()
    data = _pad(mapping) + b"s" * sum(n for _, n in chunks)
    body = pax_records(records)
    out = bytes(raw_header(b"././@PaxHeader", len(body), b"x")) + _pad(body)
    return out + bytes(raw_header(b"GNUSparseFile.0/" + name[:80], len(data), b"0")) + _pad(data)


def build_tar(members, fmt: str = "pax"):
    """The tar bytes of ``members`` and the offset of each member's own header."""
    formats = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}
    out = bytearray()
    offsets = []
    for member in members:
        kind = member["type"]
        if kind == "S" and "map" in member:
            piece = _sparse_gnu(member)
            offsets.append(len(out))
        elif kind == "PS" and "map" in member:
            piece = _sparse_pax(member)
            offsets.append(len(out))
        elif kind == "raw":
            piece = s2b(member["bytes"])
            offsets.append(len(out))
        else:
            if "rawpax" in member:
                body = s2b(member["rawpax"])
                out += raw_header(b"././@PaxHeader", len(body), b"x") + _pad(body)
            head = _standard(member, formats.get(fmt, tarfile.PAX_FORMAT))
            data = member.get("data", b"") if kind in ("f", "7") or kind not in _TYPES else b""
            offsets.append(len(out) + len(head) - BLOCK)
            piece = head + _pad(data)
        out += piece
        # Fields patched into the member's own header after it was written.
        patch = member.get("patch")
        if patch:
            at = offsets[-1]
            block = bytearray(out[at : at + BLOCK])
            for field, value in patch.items():
                offset, length = FIELDS[field]
                raw = s2b(value)
                block[offset : offset + length] = raw[:length].ljust(length, b"\x00")
            if "chksum" not in patch:
                _checksum(block)
            out[at : at + BLOCK] = block
    return bytes(out), offsets


def _finish(raw: bytes, end: str) -> bytes:
    if end == "none":
        return raw
    if end == "one":
        return raw + b"\x00" * BLOCK
    raw = raw + b"\x00" * (2 * BLOCK)
    rest = len(raw) % RECORD
    return raw + b"\x00" * (RECORD - rest if rest else 0)


def compress(raw: bytes, how: str) -> bytes:
    if how == "gz":
        return gzip.compress(raw, compresslevel=1, mtime=0)
    if how == "bz2":
        return bz2.compress(raw, 1)
    if how == "xz":
        return lzma.compress(raw, preset=0)
    return raw


def _byte_op(data: bytes, op) -> bytes:
    kind = op["op"]
    pos = min(op.get("pos", 0), len(data))
    if kind == "flip":
        return data[:pos] + bytes([data[pos] ^ (1 << op["bit"])]) + data[pos + 1 :] if pos < len(data) else data
    if kind == "set":
        return data[:pos] + s2b(op["data"]) + data[pos + len(op["data"]) :]
    if kind == "insert":
        return data[:pos] + s2b(op["data"]) + data[pos:]
    if kind == "delete":
        return data[:pos] + data[pos + op["len"] :]
    if kind == "truncate":
        return data[: op["len"]]
    if kind == "append":
        return data + s2b(op["data"]) * op.get("count", 1)
    if kind == "zeros":
        return data + b"\x00" * op["count"]
    if kind == "again":
        return data + data  # a second gzip member (or tar) after the first
    raise ValueError("unknown byte op %r" % kind)


def build(spec: dict, tree: dict):
    """The archive bytes of ``spec`` over ``tree``, and the size the file is to be extended to
    (with zeros, sparse; None to leave it)."""
    members = members_of(tree) if spec.get("from", "tree") == "tree" else []
    for op in spec.get("members", ()):
        members = member_op(members, op)
    raw, _offsets = build_tar(members, spec.get("format", "pax"))
    raw = _finish(raw, spec.get("end", "full"))
    for op in spec.get("raw", ()):
        raw = _byte_op(raw, op)
    packed = compress(raw, spec.get("compress", "gz"))
    for op in spec.get("packed", ()):
        packed = _byte_op(packed, op)
    return packed, spec.get("file_size")


# -- member operations --------------------------------------------------------------------


def member_op(members: list, op: dict) -> list:
    kind = op["op"]
    members = list(members)
    index = op.get("index")
    if index is not None:
        if not members:
            return members
        index %= len(members)
    if kind == "pax":
        members[index] = dict(members[index], pax=dict(members[index].get("pax", {}), **op["records"]))
    elif kind == "rawpax":
        members[index] = dict(members[index], rawpax=op["data"])
    elif kind == "patch":
        members[index] = dict(members[index], patch=dict(members[index].get("patch", {}), **op["fields"]))
    elif kind == "rename":
        members[index] = dict(members[index], name=op["name"])
    elif kind == "retype":
        members[index] = dict(members[index], type=op["type"], link=op.get("link", members[index].get("link", "")))
    elif kind == "size":
        members[index] = dict(members[index], size=op["size"])
    elif kind == "drop":
        del members[index]
    elif kind == "dup":
        extra = dict(op.get("with", {}))
        if isinstance(extra.get("data"), str):
            extra["data"] = s2b(extra["data"])
        members.insert(index + 1, dict(members[index], **extra))
    elif kind == "move":
        member = members.pop(index)
        members.insert(op["to"] % (len(members) + 1), member)
    elif kind == "add":
        member = {"name": op["name"], "type": op["type"], "mode": op.get("mode", 0o644)}
        if "data" in op:
            member["data"] = s2b(op["data"])
        if "link" in op:
            member["link"] = op["link"]
        for key in ("map", "realsize", "stored", "pax", "mtime", "size", "bytes"):
            if key in op:
                member[key] = op[key]
        members.insert(op.get("at", len(members)) if op.get("at") is not None else len(members), member)
    elif kind == "many":
        for number in range(op["count"]):
            members.append({"name": "%s%d" % (op["prefix"], number), "type": op.get("type", "f"), "mode": 0o644, "data": b""})
    elif kind == "mtime":
        members[index] = dict(members[index], pax=dict(members[index].get("pax", {}), mtime=op["value"]))
    else:
        raise ValueError("unknown member op %r" % kind)
    return members


def _name_variants(rng, name: str):
    return rng.choice(
        (
            "/" + name,
            "../" + name,
            name + "/..",
            "./" + name,
            name.replace("/", "//"),
            "",
            ".",
            "./",
            name + "\x00x",
            name + "\n",
            name.replace("/", "/./"),
            "a/" * (MAX_DEPTH - 1) + "x",
            "a/" * MAX_DEPTH + "x",
            "a/" * (MAX_DEPTH + 1) + "x",
            "n" * 255 + "/" + "m" * 255,
            ("d" * 200 + "/") * 20 + "x",
            "x" * (MAX_NAME - 1),
            "x" * MAX_NAME,
            "x" * (MAX_NAME + 1),
            ("d" * 99 + "/") * (MAX_NAME // 100) + "z" * (MAX_NAME % 100),
            name + "\udcff",
            MARKER + name,
            "etc/" + MARKER + ".conf",
        )
    )


def generate(rng, tree: dict, heavy: bool = True) -> dict:
    """An archive description over ``tree``: a few member operations, sometimes raw or
    compressed byte operations, and the compression."""
    members = members_of(tree)
    count = len(members)
    spec = {"format": rng.choice(("pax", "pax", "gnu", "ustar")), "compress": rng.choice(("gz", "gz", "gz", "bz2", "xz", "none"))}
    ops = []
    for _ in range(rng.choice((0, 1, 1, 2, 3, 5))):
        ops.append(_member_op(rng, count, heavy))
    spec["members"] = [op for op in ops if op is not None]
    if rng.random() < 0.15:
        spec["end"] = rng.choice(("none", "one"))
    if rng.random() < 0.25:
        raw, offsets = build_tar([m for m in members], spec["format"])
        spec["raw"] = [_raw_op(rng, len(raw), offsets)]
    if rng.random() < 0.15:
        spec["packed"] = [_packed_op(rng, heavy)]
    if heavy and rng.random() < 0.05:
        spec["file_size"] = MAX_ARCHIVE + rng.choice((-1, 0, 1))
        spec.setdefault("packed", []).append({"op": "zeros", "count": 1024})
    return spec


def _member_op(rng, count: int, heavy: bool):
    pick = rng.randrange(22)
    index = rng.randrange(max(count, 1))
    if pick == 0:
        value = rng.choice(("1e999", "-1e999", "nan", "inf", "1e308", "-1", "99999999999999999999999", "0x10", "", "1.5e10", "١"))
        return {"op": "mtime", "index": index, "value": value}
    if pick == 1:
        key = rng.choice(
            (
                "size",
                "uid",
                "gid",
                "path",
                "linkpath",
                "uname",
                "atime",
                "ctime",
                "comment",
                "hdrcharset",
                "GNU.sparse.size",
                "SCHILY.xattr.user.x",
                "mtime",
            )
        )
        value = rng.choice(
            ("-1", "1e999", "../../x", "/etc/passwd", "", "x" * 5000, "BINARY", "18446744073709551616", MARKER, "\udcff", "a\x00b")
        )
        return {"op": "pax", "index": index, "records": {key: value}}
    if pick == 2:
        body = rng.choice(
            (
                "5 a=\n",
                "9999 path=x\n",
                "0 path=x\n",
                "x path=y\n",
                "13 path=a\x00b\n",
                "30 mtime=1e999\n",
                "6 =x\n\n",
                "12 path=x",
                "%d path=%s\n" % (len(b"%d path=\n") + 4 + 3000, "p" * 3000),
                "20 hdrcharset=BINARY\n19 path=\xff\xfe\xfdxx\n",
            )
        )
        return {"op": "rawpax", "index": index, "data": body}
    if pick == 3:
        field = rng.choice(
            ("mode", "uid", "size", "mtime", "chksum", "type", "magic", "version", "linkname", "prefix", "name", "realsize", "isextended")
        )
        value = rng.choice(
            (
                "\x80" + "\xff" * 11,
                "\xff" * 12,
                "7777777777777",
                "-1",
                "",
                "\x00",
                "zzzzzzzz",
                " 0 ",
                "0" * 12,
                "K",
                "L",
                "x",
                "g",
                "V",
                "M",
                "S",
            )
        )
        return {"op": "patch", "index": index, "fields": {field: value}}
    if pick == 4:
        return {"op": "rename", "index": index, "name": _name_variants(rng, "etc/sysctl.conf")}
    if pick == 5:
        kind = rng.choice(("h", "p", "c", "b", "7", "X", "V", "M", "g", "x", "K", "L", "S", "D", "N", "A", "\x00", "5"))
        return {"op": "retype", "index": index, "type": kind, "link": rng.choice(("etc/os-release", "../x", "/etc/passwd", ""))}
    if pick == 6:
        return {"op": "size", "index": index, "size": rng.choice((MAX_UNPACKED, MAX_UNPACKED + 1, 1 << 40, 10**12, 0, 512, 1))}
    if pick == 7:
        return {"op": "dup", "index": index, "with": rng.choice(({}, {"type": "d"}, {"type": "l", "link": "."}, {"data": "x"}))}
    if pick == 8:
        return {"op": "move", "index": index, "to": rng.randrange(max(count, 1) + 1)}
    if pick == 9:
        return {"op": "drop", "index": index}
    if pick in (10, 11):
        # Links: s -> . and a -> s/../x; loops; chains; a member below a link; links leaving.
        folder = rng.choice(("", "etc/", "proc/", "sys/block/", "etc/sysctl.d/"))
        name, link = rng.choice(
            (
                ("s", "."),
                ("a", "s/../x"),
                ("s", ".."),
                ("l", "l"),
                ("up", "../" * 5),
                ("abs", "/etc"),
                ("e", "s/s/s/../.."),
                ("deep", "s/" * 100 + "x"),
                ("x", "y/../../.."),
                ("mf", "../" + ".aidoctor/manifest.json"),
                ("long", "l" * 5000),
                ("dot", "./././."),
                ("empty", ""),
                ("nul", "a\x00b"),
            )
        )
        ops = [{"op": "add", "name": folder + name, "type": "l", "link": link}]
        if rng.random() < 0.5:
            ops.append({"op": "add", "name": folder + "s", "type": "l", "link": "."})
            ops.append({"op": "add", "name": folder + "a", "type": "l", "link": "s/../x"})
        if rng.random() < 0.3:
            ops.append({"op": "add", "name": folder + name + "/below", "type": "f", "data": "x"})
        return ops[0] if len(ops) == 1 else {"op": "batch", "ops": ops}
    if pick == 12:
        realsize = rng.choice((100, 1 << 20, MAX_UNPACKED, MAX_UNPACKED + 1, 1 << 62, 0))
        chunks = rng.choice(([[0, 10]], [[realsize, 10]], [[0, 10], [5, 10]], [[1 << 61, 10]], [[i * 100, 10] for i in range(30)], []))
        return {
            "op": "add",
            "name": "etc/sparse%d" % rng.randrange(3),
            "type": rng.choice(("S", "PS")),
            "map": chunks,
            "realsize": realsize,
        }
    if pick == 13:
        if not heavy:
            return {"op": "many", "prefix": "etc/m/", "count": rng.choice((100, 1000))}
        return {"op": "many", "prefix": rng.choice(("m", "etc/m/")), "count": rng.choice((1000, 20000, MAX_MEMBERS - 200, MAX_MEMBERS + 1))}
    if pick == 14:
        name = rng.choice(("x" * 150, "d/" * 80 + "f", "n" * 99 + "/" + "m" * 200, "a" * 255))
        return {
            "op": "add",
            "name": "etc/sysctl.d/" + name,
            "type": rng.choice("fl"),
            "data": "vm.nr_hugepages = 4\n",
            "link": "l" * rng.choice((99, 100, 101, 1000)),
        }
    if pick == 15:
        return {
            "op": "add",
            "name": ".aidoctor/manifest.json",
            "type": "f",
            "data": rng.choice(("[" * 100000 + "]" * 100000, '{"outcomes": {"/": "denied"}}', "{", '{"uid": 1e999}')),
        }
    if pick == 16:
        return {
            "op": "add",
            "name": rng.choice(("proc", "etc", "etc/sysctl.d", ".aidoctor")),
            "type": rng.choice("fldp"),
            "data": "x",
            "link": ".",
        }
    if pick == 17:
        return {
            "op": "add",
            "name": "etc/big",
            "type": "f",
            "data": "",
            "size": rng.choice((MAX_SINGLE_READ, MAX_SINGLE_READ + 1, 1 << 40)),
        }
    if pick == 18:
        return {
            "op": "add",
            "name": "x",
            "type": "raw",
            "bytes": b2s(bytes(raw_header(b"././@LongLink", rng.choice((100, 1 << 20, MAX_SINGLE_READ + 1)), b"L", gnu=True))),
        }
    if pick == 19:
        return {"op": "pax", "index": index, "records": {"path": rng.choice(("a/" * 300 + "x", "/abs", "x/../../y", "etc/" + MARKER))}}
    if pick == 20:
        return {
            "op": "add",
            "name": "etc/os-release",
            "type": "f",
            "data": 'PRETTY_NAME="%s"\n' % MARKER,
            "mtime": rng.choice((0, -1, 2**40, 8**11 - 1)),
        }
    return {"op": "add", "name": "etc/%s.conf" % MARKER, "type": "f", "data": "vm.nr_hugepages = %s\n" % MARKER}


def _raw_op(rng, size: int, offsets):
    at = offsets[rng.randrange(len(offsets))] if offsets else 0
    field = rng.choice(list(FIELDS.values()))
    pos = at + field[0] + rng.randrange(field[1]) if rng.random() < 0.7 else rng.randrange(max(size, 1))
    kind = rng.choice(("flip", "set", "truncate", "delete", "insert"))
    if kind == "flip":
        return {"op": "flip", "pos": pos, "bit": rng.randrange(8)}
    if kind == "set":
        return {"op": "set", "pos": pos, "data": rng.choice(("\x00", "\xff", "7", "x", " ", "\x80\xff\xff\xff"))}
    if kind == "truncate":
        return {"op": "truncate", "len": rng.choice((at, at + 100, at + BLOCK, rng.randrange(max(size, 1))))}
    if kind == "delete":
        return {"op": "delete", "pos": pos, "len": rng.choice((1, BLOCK))}
    return {"op": "insert", "pos": at, "data": "\x00" * BLOCK}


def _packed_op(rng, heavy: bool):
    kind = rng.choice(("flip", "truncate", "append", "zeros", "again"))
    if kind == "flip":
        return {"op": "flip", "pos": rng.randrange(10, 200), "bit": rng.randrange(8)}
    if kind == "truncate":
        return {"op": "truncate", "len": rng.randrange(10, 400)}
    if kind == "append":
        return {
            "op": "append",
            "data": rng.choice(("garbage", "\x1f\x8b", "\x1f\x8b\x08\x00", "\x00\x00\x00\x01")),
            "count": rng.choice((1, 100)),
        }
    if kind == "zeros":
        return {"op": "zeros", "count": rng.choice((1, 512, 1 << 16)) if not heavy else rng.choice((1 << 16, 16 << 20))}
    return {"op": "again"}


def _flatten(ops):
    for op in ops:
        if op.get("op") == "batch":
            yield from op["ops"]
        else:
            yield op


def normalize(spec: dict) -> dict:
    """Batches of member operations written out flat."""
    spec = dict(spec)
    spec["members"] = list(_flatten(spec.get("members", ())))
    return spec


def heavy(spec: dict) -> bool:
    return bool(spec.get("file_size")) or any(
        op.get("op") == "many" and op["count"] > 5000 or op.get("op") == "zeros" and op["count"] > (1 << 20)
        for op in spec.get("members", []) + spec.get("packed", [])
    )


__all__ = ["build", "generate", "normalize", "members_of", "trees"]
