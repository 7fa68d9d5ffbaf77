"""Snapshot archives (``host.tar.gz``): writing one, and reading one safely, into memory for a
replay or unpacked into a folder.

An archive comes from someone else's machine, so reading it trusts nothing in it. Its
compressed streams are read with zlib, bz2 or lzma directly, within limits. First our own
pre-scan walks the tar stream header by header, before tarfile parses a byte of it: a header or
PAX record beyond small limits, a sparse member, a time out of range, too many members or
headers, more bytes than the limit (the sizes in the headers are what extraction writes, so a
compression bomb is refused before it inflates) is refused there, in a fraction of a second and
a few MiB whatever the archive claims. Every member is then checked: a name that is absolute or
climbs with ``..``, a hard link, a device or FIFO, a member below a symbolic link (which would
write through it) or below a file, and a symbolic link that, followed the way the kernel follows
it through the archive's other links, leaves the tree.

A replay (:func:`load`) holds the members in memory as unpacking would have left them on disk
(ai_doctor.tree.Members): nothing is written. Its members are the pre-scan's, read as tarfile
reads them (name, link, mode and time from the header, a GNU long name or PAX records; a test
compares the two field by field on archives tarfile writes in each format); headers whose reading
depends on tarfile's internals (a PAX path and a GNU long name for one member, hdrcharset in a
value) are refused. tarfile's own parse, twice the pre-scan's cost, is left to :func:`unpack` and
to an archive too large to hold: there tarfile reads the stream again and must find every member
where the pre-scan did, and extracts them with its ``data`` filter, where this Python has it
(3.12, and the security releases 3.8.17, 3.9.17, 3.10.12, 3.11.4 on); elsewhere the same checks
guard a member-by-member extraction that never follows a link, with the filter's modes.

Writing (:func:`pack` from a folder, :func:`write` from entries in memory) puts absolute link
targets as relative ones: inside a tree they mean the same (the Host re-roots them), and the
data filter accepts them.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import sys
import time
import zlib
from array import array

from ai_doctor.host import lexical

# A snapshot is a few hundred KiB; these leave room for big hosts and refuse bombs.
MAX_ARCHIVE = 256 << 20
MAX_UNPACKED = 1 << 30
# What a replay holds in memory at the most (the tar stream; its members are copied out of it):
# an archive that unpacks to more, which no snapshot aidoctor takes comes near, is unpacked into
# a temporary folder instead, so a small archive that inflates to a GiB costs disk, not memory.
MAX_HELD = 64 << 20
# A live snapshot holds a few hundred members, a 512-CPU host some thousands; unpacking takes
# about 0.3 ms a member, so this bounds a valid archive's unpacking to seconds.
MAX_MEMBERS = 30_000
# The folders their names imply, listed or not: members deep in folders of their own would
# otherwise make a tree of millions of folders out of a small archive.
MAX_FOLDERS = 30_000
# Every member's folders counted, its own depth: unpacking resolves each member's path folder
# by folder, so deep names cost by their depth. A snapshot's average is under ten.
MAX_LEVELS = 16 * MAX_MEMBERS
# tarfile reads a PAX or GNU long-name header in one read; member data it copies in small
# chunks. A single read larger than this is a header built to exhaust memory.
MAX_SINGLE_READ = 16 << 20
MAX_NAME = 4096
MAX_DEPTH = 256
# The longest name of one file or folder (NAME_MAX), in bytes: what a file system can create.
MAX_PART = 255
# Headers, as the pre-scan takes them: every header block and extended record together (each
# member's PAX header can take up to MAX_EXTENDED); one PAX header's records; all extended records
# together, and PAX records in all, which tarfile keeps member by member.
MAX_HEADER_BYTES = 128 << 20
MAX_EXTENDED = 64 << 10
MAX_EXTENDED_TOTAL = 8 << 20
MAX_RECORDS = 2 * MAX_MEMBERS
# tarfile before 3.12.6 searches each PAX header with a regex that is quadratic in a run of
# digits (CVE-2024-6232); a name or number in a snapshot never has a run this long.
MAX_DIGITS = 32
# Modification times a snapshot holds, in seconds either side of 1970 (about the year 2514);
# utime fails on an infinite or huge one.
MAX_MTIME = 1 << 34
# Links followed in one lookup before the kernel fails it with ELOOP, path_resolution(7), and
# components walked resolving all the links of an archive.
MAX_LINKS = 40
MAX_LINK_STEPS = 1_000_000
SUFFIXES = (".tar.gz", ".tgz")

# Streams in one compressed archive (pack writes one; pbzip2 one per 900 kB), the zeros that may
# pad one (tar pads to its record, 10 KiB by default), and the memory an xz stream may ask for
# (xz -9 asks 65 MiB): millions of tiny streams, GiBs of zeros or of memory would otherwise
# cost minutes or the memory.
MAX_STREAMS = 4096
MAX_PADDING = 1 << 20
MAX_XZ_MEMORY = 128 << 20

BLOCK = 512
_CHUNK = 256 << 10
_INPUT = 64 << 10
_ZERO = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")
_KEPT = _REGULAR + (b"5", b"2")
# Member types the pre-scan passes quickly: not the old-style regular one, which a name ending
# in "/" makes a folder.
_PLAIN = (b"0", b"7", b"5", b"2")
_EXTENDED_KINDS = (b"x", b"X", b"g", b"L", b"K")
# A header's size (11 octal digits and a NUL, as tarfile writes it), checksum (6 and a NUL)
# and type.
_FIELDS = struct.Struct("124x11sB12x6sB1xc")
_SPECIAL = "a device, FIFO or other special file"
_SPARSE = "a sparse member (snapshots hold none)"
_REFUSED = {b"1": "a hard link (snapshots hold none)", b"3": _SPECIAL, b"4": _SPECIAL, b"6": _SPECIAL, b"S": _SPARSE}
_DIGIT_RUNS = bytes.maketrans(b"0123456789", b"1" * 10)
_TIME_BYTES = frozenset(b"0123456789.+-eE")


class ArchiveError(Exception):
    """An archive that will not be unpacked: the message says why, naming the member."""


def is_archive(path: str) -> bool:
    return path.endswith(SUFFIXES)


# gzip's fastest: taking a snapshot costs little more than its reads. Of a 1.5 MB tar here, 9
# (tarfile's default) makes 256 KB in 49 ms, 6 (gzip's) 260 KB in 24 ms, 1 307 KB in 8 ms.
COMPRESSION = 1


def pack(tree: str, archive: str) -> int:
    """Write the snapshot ``tree`` as a gzip'd tar at ``archive``; returns the member count."""
    import tarfile

    count = 0
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=COMPRESSION) as out:
        for folder, dirs, files in os.walk(tree):
            # A link is a name like a file's, wherever it points (os.walk counts one to a folder
            # as a folder): the order is the tree's own, not this machine's.
            links = [name for name in dirs if os.path.islink(os.path.join(folder, name))]
            dirs[:] = sorted(name for name in dirs if name not in links)
            for name in dirs + sorted(files + links):
                path = os.path.join(folder, name)
                member = out.gettarinfo(path, arcname=os.path.relpath(path, tree))
                _normalised(member, member.mtime)
                if member.isreg():
                    with open(path, "rb") as handle:
                        out.addfile(member, handle)
                else:
                    out.addfile(member)
                count += 1
    return count


def write(entries, archive: str) -> int:
    """Write a snapshot tree held in memory as a new gzip'd tar at ``archive``: member for member
    what :func:`pack` writes of that tree on disk (one time for all, the time of writing).
    ``entries``: (path without the leading ``/``, mode, content) in pack's order, the content the
    bytes of a file, the target (str) of a link, or None for a folder. Returns the member count;
    raises OSError, leaving no archive behind."""
    import gzip
    import tarfile

    headers = _Headers(min(max(int(time.time()), -MAX_MTIME), MAX_MTIME))
    count = 0
    # Exclusive: never through a link or over a file made since the name was found free.
    with open(archive, "xb") as raw:
        try:
            # As tarfile.open(archive, "w:gz") writes it: the archive's name in the gzip header.
            with gzip.GzipFile(archive, "wb", COMPRESSION, raw) as out:
                parts, size = [], 0
                for path, mode, content in entries:
                    if isinstance(content, str):
                        content = _relative(path, content)
                    header = headers.of(path, mode, content)
                    parts.append(header)
                    size += len(header)
                    if isinstance(content, bytes) and content:
                        parts.extend((content, bytes(-len(content) % BLOCK)))
                        size += _padded(len(content))
                    if len(parts) > 256:
                        out.write(b"".join(parts))
                        parts = []
                    count += 1
                # Two blocks of zeros end the archive; tarfile pads it to a whole record.
                size += 2 * BLOCK
                parts.append(bytes(2 * BLOCK + -size % tarfile.RECORDSIZE))
                out.write(b"".join(parts))
        except BaseException:
            os.unlink(archive)
            raise
    return count


class _Headers:
    """The header blocks tarfile writes for a snapshot's members (PAX format, owned by no one,
    all at ``mtime``), made from one it wrote: the fields that differ are spliced in and the
    checksum made again. Tarfile itself encodes a member whose name, or link's target, needs an
    extended header (not ASCII, or longer than its field)."""

    def __init__(self, mtime: int):
        import tarfile

        self._KINDS = {bytes: tarfile.REGTYPE, str: tarfile.SYMTYPE, type(None): tarfile.DIRTYPE}
        self.mtime = mtime
        model = self.info("", 0, b"")
        self.encoding, self.pax_format = tarfile.ENCODING, tarfile.PAX_FORMAT
        block = model.tobuf(self.pax_format, self.encoding, "surrogateescape")
        self.owners, self.mtime_field, self.rest = block[108:124], block[136:148], block[257:]
        # The fast way holds only where tarfile writes no extended header: in range, ASCII, short.
        self.fast = len(block) == BLOCK and 0 <= mtime < 8**11

    def info(self, path: str, mode: int, content):
        import tarfile

        member = tarfile.TarInfo(path)
        member.mode, member.type, member.mtime = mode, self._KINDS[type(content)], self.mtime
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        if isinstance(content, bytes):
            member.size = len(content)
        elif content is not None:
            member.linkname = content
        return member

    def of(self, path: str, mode: int, content) -> bytes:
        kind = type(content)
        if kind is type(None):
            path += "/"
        link = content if kind is str else ""
        size = len(content) if kind is bytes else 0
        if not (self.fast and len(path) <= 100 and len(link) <= 100 and path.isascii() and link.isascii() and size < 8**11):
            return self.info(path.rstrip("/"), mode, content).tobuf(self.pax_format, self.encoding, "surrogateescape")
        block = b"".join(
            (
                path.encode("ascii").ljust(100, b"\0"),
                b"%07o\0" % (mode & 0o7777),
                self.owners,
                b"%011o\0" % size,
                self.mtime_field,
                b"        ",
                self._KINDS[kind],
                link.encode("ascii").ljust(100, b"\0"),
                self.rest,
            )
        )
        return block[:148] + b"%06o\0" % sum(block) + block[155:]


def _normalised(member, mtime) -> None:
    """A member as a snapshot holds it: owned by no one, a whole-second time, a link's target
    relative and inside the tree."""
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    # Whole seconds, in the range unpacking takes: a fractional time would cost every member a
    # PAX header.
    member.mtime = min(max(int(mtime), -MAX_MTIME), MAX_MTIME)
    if member.issym():
        member.linkname = _relative(member.name, member.linkname)


def _relative(name: str, target: str) -> str:
    """The target of the link ``name`` as an archive holds it. Inside a tree "/x" means the
    tree's /x, and ".." stops at its root (as the Host resolves them): written relative and
    inside, so unpacking takes them."""
    here = os.path.dirname("/" + name)
    return os.path.relpath(_inside(here, target), here)


def _shown(name) -> str:
    """A name for a message: its first 80 characters, quoted and escaped."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    return repr(name[:80]) + ("..." if len(name) > 80 else "")


# -- the pre-scan ------------------------------------------------------------------------------


class _Reader:
    """The decompressed stream read forward in 256 KiB chunks into ``buffer``: ``at`` is the next
    byte there, ``base`` the stream offset of the buffer's first byte."""

    def __init__(self, stream):
        self.stream = stream
        self.buffer = b""
        self.at = self.base = 0

    @property
    def offset(self) -> int:
        return self.base + self.at

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes, fewer where the stream ends."""
        if self.at + size > len(self.buffer):
            self.fill(size)
        data = self.buffer[self.at : self.at + size]
        self.at += len(data)
        return data

    def fill(self, size: int) -> None:
        """Have the next ``size`` bytes in the buffer, fewer where the stream ends."""
        parts = [self.buffer[self.at :]]
        have = len(parts[0])
        read = getattr(self.stream, "read1", self.stream.read)
        while have < size:
            chunk = read(max(size - have, _CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self.base += self.at
        self.buffer, self.at = b"".join(parts), 0

    def skip(self, size: int) -> bool:
        """Read past ``size`` bytes, discarding them; False where the stream ends first."""
        left = size - (len(self.buffer) - self.at)
        if left <= 0:
            self.at += size
            return True
        self.base += len(self.buffer)
        self.buffer, self.at = b"", 0
        while left > 0:
            chunk = self.stream.read(min(left, _CHUNK))
            if not chunk:
                return False
            left -= len(chunk)
            self.base += len(chunk)
        return True


def _number(field: bytes):
    """A header's number field as tarfile's nti() reads it (octal up to a NUL, or GNU base-256),
    or None where tarfile would find the header invalid."""
    if field[0] == 0x80:
        return int.from_bytes(field[1:], "big")
    if field[0] == 0xFF:
        return int.from_bytes(field[1:], "big") - (1 << (8 * len(field) - 8))
    try:
        return int(field.partition(b"\0")[0].strip() or b"0", 8)
    except ValueError:
        return None


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _ustar_name(block: bytes) -> bytes:
    name = block[:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0]
    return prefix + b"/" + name if prefix else name


def _records(payload: bytes, size: int) -> list:
    """A PAX header's ``LEN key=value\\n`` records, as tarfile reads them, each length checked
    to end at a newline; anything tarfile could read another way is refused (ValueError)."""
    if payload[size:].strip(b"\0"):
        raise ValueError("bytes after its records")
    if payload.translate(_DIGIT_RUNS).find(b"1" * (MAX_DIGITS + 1)) != -1:
        raise ValueError("a run of more than %d digits" % MAX_DIGITS)
    records = []
    at = 0
    while at < size:
        space = payload.find(b" ", at, at + 8)
        length = int(payload[at:space]) if space > at and payload[at:space].isdigit() else 0
        end = at + length
        equals = payload.find(b"=", space + 1, end - 1) if length else -1
        if equals <= space + 1 or end > size or payload[end - 1] != 0x0A:
            raise ValueError("a malformed record at byte %d" % at)
        records.append((payload[space + 1 : equals], payload[equals + 1 : end - 1]))
        at = end
    return records


def _charset_texts(payload: bytes) -> int:
    """How often ``DIGITS hdrcharset=`` appears in a PAX header's text, records and values."""
    count, at = 0, payload.find(b" hdrcharset=")
    while at != -1:
        count += at > 0 and payload[at - 1 : at].isdigit()
        at = payload.find(b" hdrcharset=", at + 1)
    return count


def _time_ok(value) -> bool:
    if isinstance(value, bytes):
        if not value or len(value) > 32 or not _TIME_BYTES.issuperset(value):
            return False
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, (int, float)) and math.isfinite(value) and abs(value) <= MAX_MTIME


def _record_problem(key: bytes, value: bytes):
    """Why a member's PAX record is refused, or None."""
    if key.startswith(b"GNU.sparse."):
        return _SPARSE
    if key in (b"path", b"linkpath") and (len(value) > MAX_NAME or b"\0" in value):
        return "a PAX %s longer than %d bytes or holding a NUL" % (key.decode(), MAX_NAME)
    if key in (b"size", b"uid", b"gid") and not (value.isdigit() and len(value) <= 18):
        return "a PAX %s that is no number (%s)" % (key.decode(), _shown(value))
    if key in (b"mtime", b"atime", b"ctime") and not _time_ok(value):
        return "a PAX %s that is no time in range (%s)" % (key.decode(), _shown(value))
    return None


class _Scan:
    """One pass over the decompressed tar stream, header by header, as tarfile will walk it.

    Extended headers (PAX ``x``, GNU long name ``L`` and long link ``K``) are read into
    ``pending`` for the member they precede, one of each kind at most; a global PAX header
    (``g``) may carry only a comment, as it would otherwise apply to every member after it."""

    def __init__(self, stream, members: bool = False):
        self.reader = _Reader(stream)
        # Each member as tarfile reads it (a _Member), where asked for.
        self.held = [] if members else None
        self.pending = {}
        self.global_last = False
        self.members = self.header_bytes = self.extended = self.records = self.unpacked = 0
        self.offsets, self.sizes, self.kinds = array("I"), array("I"), bytearray()

    def run(self) -> tuple:
        """Where each member's data starts, its size and its type, as tarfile must find them."""
        reader = self.reader
        fields, adler32 = _FIELDS.unpack_from, zlib.adler32
        while True:
            at = reader.at
            if at + BLOCK > len(reader.buffer):
                reader.fill(BLOCK)
                at = reader.at
            block = reader.buffer[at : at + BLOCK]
            reader.at = at + BLOCK
            if len(block) < BLOCK or block == _ZERO:
                return self.end(block)
            size, size_end, stored, stored_end, kind = fields(block)
            try:
                size, stored = int(size, 8), int(stored, 8)
            except ValueError:
                size = None
            if size is None or size_end or stored_end:
                # Not the form tarfile writes: each field read in full, as tarfile reads it.
                size, stored = _number(block[124:136]), _number(block[148:156])
            # The unsigned sum tarfile checks first, from adler32's (1 + sum) modulo 65521; where
            # a sum 65521 more could match too (a large stored value, few NULs), the exact sum.
            if (
                stored is None
                or ((adler32(block) & 0xFFFF) - sum(block[148:156]) + 255 - stored) % 65521
                or (stored >= 65521 or block.count(0) < 260)
                and stored != 256 + sum(block) - sum(block[148:156])
            ):
                raise ArchiveError("not a readable snapshot archive (a header with a bad checksum at byte %d)" % (reader.offset - BLOCK))
            # tarfile reads every number field of every header, an extended one's too, and stops
            # at one it cannot read.
            numbers = _header_numbers(block)
            if numbers is None:
                raise self.refused(block, "a header field that is no number")
            if size is None or size < 0:
                raise self.refused(block, "a size field that is no size")
            if kind in _EXTENDED_KINDS:
                self.extended_header(block, kind, size)
                self.global_last = kind == b"g"
            else:
                self.member(block, kind, size, numbers)
                self.global_last = False

    def end(self, block: bytes) -> tuple:
        """The layout, at a block of zeros or the end of the stream: where tarfile stops too."""
        if block and len(block) < BLOCK:
            raise ArchiveError("not a readable snapshot archive (it ends inside a header)")
        if self.pending or self.global_last:
            # tarfile reads the header after an extended one, a global one's too, as its member.
            raise ArchiveError("an extended header with no member after it: not a snapshot")
        return self.offsets, self.sizes, self.kinds

    def refused(self, block: bytes, problem: str) -> ArchiveError:
        pax = self.pending.get(b"x", {})
        name = pax.get(b"path") or self.pending.get(b"L") or _ustar_name(block)
        return ArchiveError("member %s: %s" % (_shown(name), problem))

    def extended_header(self, block: bytes, kind: bytes, size: int) -> None:
        kind = b"x" if kind == b"X" else kind
        if kind in self.pending:
            raise self.refused(block, "two extended headers of one kind for one member")
        if kind == b"g" and self.pending:
            raise self.refused(block, "a global PAX header among one member's headers")
        what = {b"x": "a PAX header", b"g": "a global PAX header", b"L": "a GNU long name", b"K": "a GNU long link"}[kind]
        limit = MAX_NAME + 1 if kind in (b"L", b"K") else MAX_EXTENDED
        if size > limit and kind == b"L":
            # Named by its first bytes: the rest is never read.
            name = self.reader.take(BLOCK).split(b"\0", 1)[0]
            raise ArchiveError("member %s: a name longer than any file system path (%s of %d bytes)" % (_shown(name), what, size))
        if size > limit:
            raise self.refused(block, "%s of %d bytes, more than the %d it may be" % (what, size, limit))
        self.extended += size
        if self.extended > MAX_EXTENDED_TOTAL:
            raise ArchiveError("more than %d MiB of extended headers: not a snapshot" % (MAX_EXTENDED_TOTAL >> 20))
        # Members' own headers are bounded by their count; these come on top.
        self.header_bytes += BLOCK + _padded(size)
        if self.header_bytes + BLOCK * self.members > MAX_HEADER_BYTES:
            raise ArchiveError("more than %d MiB of headers: not a snapshot" % (MAX_HEADER_BYTES >> 20))
        payload = self.reader.take(_padded(size))
        if len(payload) < _padded(size):
            raise self.refused(block, "the archive ends inside its extended header")
        if kind in (b"L", b"K"):
            # tarfile takes the name up to the first NUL of the blocks read.
            value = payload.split(b"\0", 1)[0]
            if len(value) > MAX_NAME:
                raise self.refused(block, "a GNU long name or link of more than %d bytes" % MAX_NAME)
            self.pending[kind] = value
            return
        try:
            records = _records(payload, size)
        except ValueError as exc:
            raise self.refused(block, "a PAX header with %s" % exc) from None
        self.records += len(records)
        if self.records > MAX_RECORDS:
            raise ArchiveError("more than %d PAX records: not a snapshot" % MAX_RECORDS)
        # tarfile before 3.12.6 takes hdrcharset from the first place the text "N hdrcharset="
        # appears, in a value too; later ones from the first record: a header with one record of
        # it and no such text elsewhere, or none, is read alike by all.
        charsets = [value for key, value in records if key == b"hdrcharset"]
        if len(charsets) > 1 or _charset_texts(payload[:size]) != len(charsets):
            raise self.refused(block, "a PAX header with hdrcharset other than once, in a record of its own")
        if charsets and charsets[0] not in _CHARSETS:
            # tarfile before 3.12.6 reads the value up to a newline and fails on one not UTF-8.
            raise self.refused(block, "a PAX hdrcharset other than BINARY or %s" % _CHARSETS[1].decode())
        if kind == b"g":
            for key, _ in records:
                if key != b"comment":
                    raise ArchiveError("a global PAX header setting %s for every member: not a snapshot" % _shown(key))
            return
        self.pending[kind] = dict(records)

    def member(self, block: bytes, kind: bytes, size: int, numbers: tuple) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise ArchiveError("more than %d members: not a snapshot" % MAX_MEMBERS)
        if self.pending or kind not in _PLAIN or block[136] >= 0x80:
            kind, size = self.unusual(block, kind, size, numbers[1])
        reader = self.reader
        offset = reader.base + reader.at
        if size and kind in _REGULAR:
            self.unpacked += size
            if self.unpacked > MAX_UNPACKED:
                raise ArchiveError("more than %d MiB unpacked: not a snapshot" % (MAX_UNPACKED >> 20))
            if not reader.skip(_padded(size)):
                raise self.refused(block, "the archive ends inside its data")
        elif size:
            raise self.refused(block, "a folder or link that carries data")
        self.offsets.append(offset)
        self.sizes.append(size)
        self.kinds += kind
        if self.held is not None:
            self.held.append(self.read_member(block, kind, size, offset, numbers))
        if self.pending:
            self.pending = {}

    def read_member(self, block: bytes, kind: bytes, size: int, offset: int, numbers: tuple):
        """The member as tarfile's TarInfo.frombuf, _proc_gnulong and _proc_pax make it: name,
        link target, mode and time from the header (``numbers``: its mode and time), a GNU long
        name or link, or PAX records."""
        mode, mtime = numbers
        name = _text(block[:100].split(b"\0", 1)[0])
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = _text(prefix) + "/" + name
        link = _text(block[157:257].split(b"\0", 1)[0])
        pending = self.pending
        if pending:
            pax = pending.get(b"x", {})
            # The order of a PAX header and a GNU long name decides which name tarfile keeps;
            # a snapshot never holds both for one member.
            if (b"path" in pax and b"L" in pending) or (b"linkpath" in pax and b"K" in pending):
                raise self.refused(block, "both a PAX header and a GNU long name give its name")
            if b"L" in pending:
                name = _text(pending[b"L"])
            if b"K" in pending:
                link = _text(pending[b"K"])
            binary = pax.get(b"hdrcharset") == b"BINARY"
            if b"path" in pax:
                name = _pax_text(pax[b"path"], binary).rstrip("/")
            if b"linkpath" in pax:
                link = _pax_text(pax[b"linkpath"], binary)
            if b"mtime" in pax:
                mtime = float(pax[b"mtime"])
        if kind == b"5":
            # tarfile strips a folder's slashes as it reads each form (3.9 keeps a long name's).
            name = name.rstrip("/")
        return _Member(name, link, mode, mtime, size, offset, kind)

    def unusual(self, block: bytes, kind: bytes, size: int, mtime) -> tuple:
        """A member's type and size where extended headers, its type or a base-256 time
        (``mtime``, the header's) may change or refuse them."""
        if kind == b"\0" and block[:100].partition(b"\0")[0].endswith(b"/"):
            kind = b"5"  # an old-style folder, as tarfile reads it
        problem = _REFUSED.get(kind) or (None if kind in _KEPT else "an unknown member type %r" % kind)
        pax = self.pending.get(b"x", {})
        for key, value in pax.items():
            problem = problem or _record_problem(key, value)
        # An octal time is in range whatever its digits; a base-256 one may not be.
        if not problem and not _time_ok(mtime):
            problem = "a modification time out of range"
        if problem:
            raise self.refused(block, problem)
        return kind, int(pax[b"size"]) if b"size" in pax else size


# Number fields tarfile's header parse reads besides the size and checksum: mode, uid, gid, mtime,
# devmajor, devminor.
_NUMBER_FIELDS = struct.Struct("100x8s8s8s12x12s181x8s8s")
_OCTAL = b"01234567"
_NO_DEVICE = bytes(8)
# tarfile's own encoding for names in headers and GNU long names (tarfile.ENCODING).
_ENCODING = sys.getfilesystemencoding()


_CHARSETS = (b"BINARY", b"ISO-IR 10646 2000 UTF-8")


def _header_numbers(block: bytes):
    """A header's mode and time as tarfile reads them, or None where tarfile finds one of its
    number fields (mode, uid, gid, mtime, devmajor, devminor) unreadable."""
    fields = _NUMBER_FIELDS.unpack_from(block)
    mode, uid, gid, mtime, major, minor = fields
    if (
        mode[-1] or uid[-1] or gid[-1] or mtime[-1] or major != _NO_DEVICE or minor != _NO_DEVICE
        or (mode[:-1] + uid[:-1] + gid[:-1] + mtime[:-1]).translate(None, _OCTAL)
    ):  # fmt: skip
        # Not as tarfile writes them (octal digits and a NUL; no device numbers): read as
        # tarfile reads them.
        numbers = [_number(field) for field in fields]
        return None if None in numbers else (numbers[0], numbers[3])
    return int(mode[:-1], 8), int(mtime[:-1], 8)


def _text(field: bytes) -> str:
    return field.decode(_ENCODING, "surrogateescape")


def _pax_text(value: bytes, binary: bool) -> str:
    """A PAX path or linkpath as tarfile decodes it: UTF-8, or the file system's encoding where
    the header says hdrcharset=BINARY, and that encoding with escapes where it fails."""
    try:
        return value.decode(_ENCODING if binary else "utf-8")
    except UnicodeDecodeError:
        return _text(value)


class _Member:
    """One member as the pre-scan read it, with the attributes and tests of a tarfile.TarInfo
    that the checks and :func:`_held` use."""

    __slots__ = ("name", "linkname", "mode", "mtime", "size", "offset_data", "type")

    def __init__(self, name, linkname, mode, mtime, size, offset_data, kind):
        self.name, self.linkname, self.mode, self.mtime = name, linkname, mode, mtime
        self.size, self.offset_data, self.type = size, offset_data, kind

    def isdir(self) -> bool:
        return self.type == b"5"

    def issym(self) -> bool:
        return self.type == b"2"

    def islnk(self) -> bool:
        return self.type == b"1"

    def isreg(self) -> bool:
        return self.type in _REGULAR


# -- reading with tarfile ----------------------------------------------------------------------


class _Bounded:
    """The decompressed stream, refusing a single read (a header) or a total beyond the limits,
    so a crafted archive is stopped before it inflates in memory or on disk."""

    def __init__(self, stream):
        self.stream = stream
        self.total = 0

    def read(self, size=-1):
        if size is None or size < 0 or size > MAX_SINGLE_READ:
            raise ArchiveError("a header or read of more than %d MiB: not a snapshot" % (MAX_SINGLE_READ >> 20))
        data = self.stream.read(size)
        self.total += len(data)
        if self.total > MAX_UNPACKED + MAX_HEADER_BYTES + (1 << 20):
            raise ArchiveError("more than %d MiB unpacked: not a snapshot" % (MAX_UNPACKED >> 20))
        return data

    def seek(self, offset, whence=0):
        return self.stream.seek(offset, whence)

    def tell(self):
        return self.stream.tell()


class _Decompressed:
    """The tar stream of a compressed archive: its streams (gzip members, bzip2 or xz streams)
    decompressed in turn, as GzipFile, BZ2File and LZMAFile read them, but each header parsed
    by zlib, bz2 or lzma and the zeros that may pad a stream skipped a chunk at a time (GzipFile
    reads a gzip file name and such zeros byte by byte: 200 MiB of either took it 30-45 s), and
    at most MAX_STREAMS streams. Read forward; a seek back starts again from the beginning."""

    def __init__(self, raw, new):
        self.raw = raw
        self.new = new
        self.rewind()

    def rewind(self) -> None:
        self.raw.seek(0)
        self.inflate = self.new()
        self.streams = 1
        self.position = 0
        self.ended = False

    def read(self, size: int) -> bytes:
        parts, have = [], 0
        while have < size and not self.ended:
            part = self.more(size - have)
            parts.append(part)
            have += len(part)
        self.position += have
        return b"".join(parts)

    def read1(self, size: int) -> bytes:
        """Up to ``size`` bytes, as soon as there are some: the pre-scan reads no further than
        the end of the archive, not into what may follow it."""
        part = b""
        while not part and not self.ended:
            part = self.more(size)
        self.position += len(part)
        return part

    def more(self, want: int) -> bytes:
        """Up to ``want`` more bytes, maybe none (a header read, a stream ended)."""
        inflate = self.inflate
        if inflate.eof:
            return self.next_stream(want)
        # What max_length left of the input: zlib hands it back, bz2 and lzma keep it.
        data = getattr(inflate, "unconsumed_tail", b"")
        if not data and getattr(inflate, "needs_input", True):
            data = self.raw.read(_INPUT)
            if not data:
                raise EOFError("the compressed data ends inside a stream")
        return inflate.decompress(data, want)

    def next_stream(self, want: int) -> bytes:
        rest = self.inflate.unused_data
        zeros = len(rest)
        rest = rest.lstrip(b"\0")
        while not rest:
            if zeros > MAX_PADDING:
                raise ArchiveError("more than %d KiB of zeros after a compressed stream: not a snapshot" % (MAX_PADDING >> 10))
            chunk = self.raw.read(_INPUT)
            if not chunk:
                self.ended = True
                return b""
            zeros += len(chunk)
            rest = chunk.lstrip(b"\0")
        self.streams += 1
        if self.streams > MAX_STREAMS:
            raise ArchiveError("more than %d compressed streams: not a snapshot" % MAX_STREAMS)
        self.inflate = self.new()
        return self.inflate.decompress(rest, want)

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:
            raise OSError("a compressed stream cannot be read from its end")
        if whence == 1:
            offset += self.position
        if offset < self.position:
            self.rewind()
        while self.position < offset and self.read(min(offset - self.position, _CHUNK)):
            pass
        return self.position


def _decompressed(raw):
    """The archive's tar stream from its start, decompressed as its first bytes say (bz2 and
    lzma imported only for their own archives)."""
    raw.seek(0)
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return _Decompressed(raw, lambda: zlib.decompressobj(31))
    if magic.startswith(b"BZh"):
        import bz2

        return _Decompressed(raw, bz2.BZ2Decompressor)
    if magic.startswith(b"\xfd7zXZ"):
        import lzma

        return _Decompressed(raw, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=MAX_XZ_MEMORY))
    return raw


def _unreadable():
    """What reading garbage raises, beyond ArchiveError: turned into one line."""
    import lzma
    import tarfile

    return (
        tarfile.TarError,
        EOFError,
        OSError,
        ValueError,
        ArithmeticError,
        RecursionError,
        MemoryError,
        LookupError,
        zlib.error,
        struct.error,
        lzma.LZMAError,
    )


def load(archive: str, spill=None):
    """Check every member of ``archive`` as :func:`unpack` does, and hold the tree in memory as
    unpacking would have left it (an ai_doctor.tree.Members a Host reads): nothing is written.
    An archive that unpacks to more than MAX_HELD bytes is unpacked instead, into the empty
    folder ``spill()`` makes (a :class:`Spill`), and read from there (a tree.Folder); without
    ``spill`` it is refused. Raises ArchiveError naming what was refused, as unpack does."""
    shown = []

    def hold(raw):
        # One pass, the pre-scan's, which also reads each member as tarfile would: nothing is
        # written, so tarfile's extraction (and its second parse, most of a replay's cost) is
        # needed only where the archive is too large to hold and is unpacked instead.
        kept = _Kept(_decompressed(raw), MAX_HELD)
        scan = _Scan(kept, members=True)
        layout = scan.run()
        if kept.parts is None:
            if spill is None:
                raise ArchiveError("%s: more than %d MiB unpacked, more than a replay holds in memory" % (archive, MAX_HELD >> 20))
            from ai_doctor.tree import Folder

            shown.append(spill())
            _extracted(raw, layout, shown[0])
            return Folder(shown[0])
        data = b"".join(kept.parts)
        kept.parts = None
        return _held(_checked(scan.held), data)

    return _reading(archive, hold, shown)


class Spill:
    """``with Spill() as spill``: ``spill()`` makes a temporary folder the first time it is
    called (for :func:`load`), and the end of the ``with`` removes it."""

    def __init__(self):
        self.folder = None

    def __enter__(self):
        return self

    def __call__(self) -> str:
        import tempfile

        self.folder = tempfile.mkdtemp(prefix="aidoctor-snapshot-")
        return self.folder

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


def unpack(archive: str, destination: str) -> int:
    """Check every member of ``archive``, then extract it into ``destination`` (an empty
    directory); returns the member count. Raises ArchiveError naming what was refused."""

    def extract(raw):
        # Two passes over one open file: the pre-scan's, then tarfile's, which must agree.
        return _extracted(raw, _Scan(_decompressed(raw)).run(), destination)

    return _reading(archive, extract, [destination])


def _extracted(raw, layout: tuple, destination: str) -> int:
    """The archive ``raw`` read again by tarfile, checked against the pre-scan's ``layout`` and
    extracted into ``destination``; returns the member count."""
    import tarfile

    with tarfile.open(fileobj=_Bounded(_decompressed(raw)), mode="r:") as source:
        members = _checked(source, layout)
        if hasattr(tarfile, "data_filter"):
            source.extractall(destination, members=members, filter="data")
        else:
            _extract(source, members, destination)
    return len(members)


def _reading(archive: str, use, shown: list):
    """``use(raw)`` on the open archive, which must be a regular file within the size limit;
    whatever reading it raises becomes one ArchiveError line, without the folders in
    ``shown`` (where it is unpacked)."""
    try:
        info = os.stat(archive)
    except OSError as exc:
        raise ArchiveError("%s: %s" % (archive, exc.strerror or exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise ArchiveError("%s: not a regular file" % archive)
    if info.st_size > MAX_ARCHIVE:
        raise ArchiveError("%s: %d MiB, more than the %d MiB a snapshot can be" % (archive, info.st_size >> 20, MAX_ARCHIVE >> 20))
    try:
        with open(archive, "rb") as raw:
            return use(raw)
    except ArchiveError:
        raise
    except _unreadable() as exc:
        # tarfile.FilterError is a TarError: the data filter refused something the checks let by.
        detail = str(exc)
        for folder in shown:
            detail = detail.replace(folder, "")
        detail = " ".join(detail.split())
        detail = detail[:200] + ("..." if len(detail) > 200 else "")
        raise ArchiveError("%s: not a readable snapshot archive (%s)" % (archive, detail or type(exc).__name__)) from None


class _Kept:
    """The decompressed stream, the parts read from it kept (``parts``) up to ``limit`` bytes;
    past that none are (``parts`` None)."""

    def __init__(self, stream, limit: int):
        self.stream = stream
        self.parts = []
        self.left = limit
        self.read1 = self._read1 if hasattr(stream, "read1") else self.read

    def _keep(self, data: bytes) -> bytes:
        if self.parts is not None:
            self.left -= len(data)
            if self.left < 0:
                self.parts = None
            else:
                self.parts.append(data)
        return data

    def read(self, size: int) -> bytes:
        return self._keep(self.stream.read(size))

    def _read1(self, size: int) -> bytes:
        return self._keep(self.stream.read1(size))


def _held(members: list, data: bytes):
    """The checked ``members`` (their contents in ``data``, the tar stream) as a tree in memory,
    as tarfile's data filter extracts them into a new temporary folder: folders with the mode
    the umask leaves (those the paths imply too), files with the filter's modes, and the times
    extraction sets (folders last, in reverse order of their names; links and implied folders
    get the time of the unpacking)."""
    from ai_doctor.tree import Entry, Members, umask

    now = time.time()
    folder = stat.S_IFDIR | (0o777 & ~umask())
    tree = Members({"/": Entry(stat.S_IFDIR | 0o700, now)})  # mkdtemp's mode
    folders = []
    for member in members:
        path = "/" + "/".join(part for part in member.name.split("/") if part not in ("", "."))
        if member.isdir():
            if path != "/":  # the tree's own folder keeps its mode, as extraction leaves it
                tree.place(path, Entry(folder, now), folder, now)
            folders.append((member.name, path, member.mtime))
        elif member.issym():
            tree.place(path, Entry(stat.S_IFLNK | 0o777, now, target=member.linkname), folder, now)
        else:
            start = member.offset_data
            entry = Entry(stat.S_IFREG | _data_mode(member.mode), member.mtime, data=data[start : start + member.size])
            tree.place(path, entry, folder, now)
    folders.sort(key=lambda item: item[0], reverse=True)
    for _name, path, mtime in folders:
        tree.entries[path].st_mtime = mtime
    return tree


def _data_mode(mode: int) -> int:
    """The permission bits tarfile's data filter gives a regular file: no special bits nor group
    or other write, no execute bits unless the owner's, and the owner's read and write."""
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _checked(source, layout=None) -> list:
    """The members of ``source`` checked: as tarfile reads them, each where the pre-scan's
    ``layout`` has it, or the pre-scan's own (no layout)."""
    offsets, sizes, kinds = layout or (None, None, None)
    members = []
    total = levels = 0
    seen = {}
    links = {}
    for member in source:
        index = len(members)
        where = (member.offset_data, member.size, member.type)
        if layout is not None and (index >= len(offsets) or (offsets[index], sizes[index], kinds[index : index + 1]) != where):
            raise ArchiveError("member %s: tarfile reads it otherwise than the pre-scan did: not a snapshot" % _shown(member.name))
        name = member.name
        if len(name) > MAX_NAME or name.count("/") > MAX_DEPTH or "\x00" in name:
            raise ArchiveError("member %s: a name longer or deeper than any file system path" % _shown(name))
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if name.startswith("/") or not (parts or (name.startswith(".") and member.isdir())):
            raise ArchiveError("member %s: an absolute or empty name" % _shown(name))
        if ".." in parts:
            raise ArchiveError("member %s: climbs out of the tree with '..'" % _shown(name))
        levels += len(parts)
        if levels > MAX_LEVELS:
            raise ArchiveError("member %s: more than %d folder levels in all the names: not a snapshot" % (_shown(name), MAX_LEVELS))
        if not parts:
            # "./": the tree's own folder, as `tar -C DIR .` writes it first; nothing to place.
            if "" in seen:
                raise ArchiveError("member %s: the same name twice" % _shown(name))
            if not _time_ok(member.mtime):
                raise ArchiveError("member %s: a modification time out of range" % _shown(name))
            seen[""] = True
            members.append(member)
            continue
        # UTF-8 takes at most 4 bytes a character: only a longer part can be too long.
        if max(map(len, parts)) > MAX_PART // 4 and any(len(os.fsencode(part)) > MAX_PART for part in parts):
            raise ArchiveError("member %s: a name longer or deeper than any file system path" % _shown(name))
        path = "/".join(parts)
        # One name, one entry: a second (a file over a link, a link over a file) would be
        # written through the first or depend on the Python's extraction order.
        folder = member.isdir()
        if not folder and name.endswith(("/", "/.")):
            # Unpacked, such a name makes a folder or fails; a snapshot never holds one.
            raise ArchiveError("member %s: a file or link named as a folder" % _shown(name))
        if path in seen and not (folder and seen[path]):
            raise ArchiveError("member %s: the same name twice" % _shown(name))
        seen[path] = folder
        if member.islnk():
            raise ArchiveError("member %s: a hard link (snapshots hold none)" % _shown(name))
        if member.issym():
            # symlink(2) takes a target shorter than PATH_MAX (4096 bytes), and not an empty one.
            if len(member.linkname) >= MAX_NAME or "\x00" in member.linkname or len(os.fsencode(member.linkname)) >= MAX_NAME:
                raise ArchiveError("member %s: a link target longer than any file system path" % _shown(name))
            if not member.linkname:
                raise ArchiveError("member %s: a symbolic link to nothing" % _shown(name))
            links[path] = member.linkname
        elif not (folder or member.isreg()):
            raise ArchiveError("member %s: a device, FIFO or other special file" % _shown(name))
        if not _time_ok(member.mtime):
            raise ArchiveError("member %s: a modification time out of range" % _shown(name))
        total += member.size
        if total > MAX_UNPACKED:
            raise ArchiveError("more than %d MiB unpacked: not a snapshot" % (MAX_UNPACKED >> 20))
        members.append(member)
    if layout is not None and len(members) != len(offsets):
        raise ArchiveError("tarfile stops after %d members, the pre-scan read %d: not a snapshot" % (len(members), len(offsets)))
    _below_links(seen, links)
    _Links(links).check()
    return members


def _below_links(paths: dict, links: dict) -> None:
    """Refuse a member whose folder is a symbolic link or lies below one, wherever the link
    comes in the archive: extraction would write through it. And one below a file, which no
    file system can hold, and a tree of more than MAX_FOLDERS folders. ``paths``: each member's
    path, True for a folder."""
    clear = set()
    for path in paths:
        folder = path.rpartition("/")[0]
        walked = []
        while folder and folder not in clear:
            if len(clear) + len(walked) >= MAX_FOLDERS:
                raise ArchiveError("member %s: more than %d folders in the tree: not a snapshot" % (_shown(path), MAX_FOLDERS))
            if folder in links:
                raise ArchiveError("member %s: lies below a symbolic link, and would be written through it" % _shown(path))
            if folder in paths and not paths[folder]:
                raise ArchiveError("member %s: lies below %s, a file" % (_shown(path), _shown(folder)))
            walked.append(folder)
            folder = folder.rpartition("/")[0]
        clear.update(walked)
    # Listed folders with nothing below them count too.
    if len(clear) + sum(1 for path, folder in paths.items() if folder and path not in clear) > MAX_FOLDERS:
        raise ArchiveError("more than %d folders in the tree: not a snapshot" % MAX_FOLDERS)


class _Unfollowable(Exception):
    """A link the checks will not let the kernel follow: the argument says why."""


_OUTSIDE = "leaving the tree"
_LOOP = "in a loop or a chain of more than %d links" % MAX_LINKS


class _Links:
    """The archive's symbolic links, resolved as the kernel will resolve them once all are
    unpacked, in any order (path_resolution(7)): a target walked component by component from
    the link's folder, a link met on the way followed (its own target from its folder), ``..``
    taken after following, more than 40 links in one lookup a failure (ELOOP). A name not in
    the archive counts as a folder, so nothing made there later can lead out either."""

    def __init__(self, links: dict):
        self.links = links
        self.done = {}
        self.active = set()
        self.looping = set()  # links no lookup gets through (ELOOP), kept so each is walked once
        self.steps = 0

    def check(self) -> None:
        for path, target in self.links.items():
            try:
                self.resolve(path, 0)
            except _Unfollowable as exc:
                if exc.args[0] == _LOOP:
                    # Every lookup through it fails with ELOOP, as on the host the snapshot was
                    # taken from (its reads recorded that): nothing can be reached through it.
                    continue
                hint = ""
                if target.startswith("/"):
                    # An image's tree packed by tar: its links lead to its own files, absolutely.
                    hint = "; absolute links are refused: take the image with aidoctor snapshot --root DIR, or give its tree as --root DIR"
                raise ArchiveError("member %s: a symbolic link %s (-> %s)%s" % (_shown(path), exc.args[0], _shown(target), hint)) from None

    def resolve(self, path: str, nesting: int):
        """Where the link at ``path`` leads (its folders, outermost first, each as a path) and
        how many links the lookup followed, itself included."""
        if path in self.done:
            return self.done[path]
        if path in self.active or path in self.looping:
            self.looping.add(path)
            raise _Unfollowable(_LOOP)
        if nesting > MAX_LINKS:
            # Too deep from where this lookup started, not necessarily from this link.
            raise _Unfollowable(_LOOP)
        self.active.add(path)
        folders = []
        for part in path.split("/")[:-1]:
            folders.append(folders[-1] + "/" + part if folders else part)
        try:
            folders, followed = self.walk(folders, self.links[path], nesting)
        finally:
            self.active.discard(path)
        if followed + 1 > MAX_LINKS:
            self.looping.add(path)
            raise _Unfollowable(_LOOP)
        self.done[path] = (folders, followed + 1)
        return self.done[path]

    def walk(self, folders: list, target: str, nesting: int):
        if target.startswith("/"):
            raise _Unfollowable(_OUTSIDE)
        followed = 0
        for part in target.split("/"):
            self.steps += 1
            if self.steps > MAX_LINK_STEPS:
                raise ArchiveError("symbolic links too many or too long to follow: not a snapshot")
            if part in ("", "."):
                continue
            if part == "..":
                if not folders:
                    raise _Unfollowable(_OUTSIDE)
                folders.pop()
                continue
            here = folders[-1] + "/" + part if folders else part
            if len(folders) >= MAX_DEPTH or len(here) > MAX_NAME:
                raise _Unfollowable("going deeper than any path in the tree")
            if here in self.links:
                reached, count = self.resolve(here, nesting + 1)
                followed += count
                if followed > MAX_LINKS:
                    raise _Unfollowable(_LOOP)
                folders = list(reached)
                self.steps += len(folders)
            else:
                folders.append(here)
        return folders, followed


def _inside(folder: str, target: str) -> str:
    """Where ``target`` of a link in ``folder`` leads inside a tree: absolute targets restart
    at its root and ``..`` stops there."""
    return lexical(target if target.startswith("/") else folder + "/" + target)


def _extract(source, members, destination: str) -> None:
    """Extraction without tarfile's filter (Debian 12's 3.11.2 and other Pythons before the
    filter): members already checked, files created exclusively and never through a link, and
    the tree the filter would leave: its file modes, folders with the mode the umask leaves,
    files with their times and folders with theirs set last, in reverse order of their names."""
    import shutil

    root = os.path.realpath(destination)
    folders = []
    for member in members:
        target = os.path.join(root, *[p for p in member.name.split("/") if p not in ("", ".")])
        if target == root:
            folders.append((member.name, root, member.mtime))  # "./", the tree's own folder
            continue
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        inside = os.path.realpath(parent)
        if stat.S_ISLNK(os.lstat(parent).st_mode) or not (inside == root or inside.startswith(root.rstrip("/") + "/")):
            raise ArchiveError("member %s: its folder is not inside the tree" % _shown(member.name))
        if member.isdir():
            if not os.path.isdir(target):
                os.mkdir(target)
            folders.append((member.name, target, member.mtime))
        elif member.issym():
            os.symlink(member.linkname, target)
        else:
            mode = _data_mode(member.mode)
            handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(handle, "wb") as out, source.extractfile(member) as data:
                # tarfile's own buffer size: a large member never sits in memory whole.
                shutil.copyfileobj(data, out, 16 << 10)
                out.flush()  # a write left in the buffer would set the time again on close
                os.fchmod(out.fileno(), mode)  # whatever the umask took from the mode
                os.utime(out.fileno(), (member.mtime, member.mtime))
    folders.sort(key=lambda item: item[0], reverse=True)
    for _name, target, mtime in folders:
        os.utime(target, (mtime, mtime), follow_symlinks=False)
