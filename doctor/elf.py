"""What kernel modules and kernel images carry inside: a module's .modinfo, the embedded
kernel config (IKCONFIG). Each extractor takes a seekable binary stream and returns text, for
Host.derive; it raises ValueError for a file it does not understand.

pyelftools reads the ELF (section headers, then the one section wanted), so a plain module is
never loaded whole. A compressed module (``.ko.xz``, ``.ko.gz``, ``.ko.zst``) is decompressed
into memory first, up to a cap: ELF section headers sit at the end of the file.
"""

from __future__ import annotations

import io
import struct
import zlib

# Larger than any module shipped (NVIDIA's kernel modules are about 100 MiB unpacked).
DECOMPRESSED_CAP = 512 << 20
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")
# What all the payload candidates of one kernel image may decompress to together: a real
# kernel is under 100 MiB; a file planted with many false starts stops here.
IMAGE_BUDGET = 768 << 20
IKCFG_START = b"IKCFG_ST"
IKCFG_END = b"IKCFG_ED"


class TooLarge(ValueError):
    """Data that inflates past the cap (a decompression bomb, or not what it claims)."""


def module_name(file_name: str):
    """``nvidia-uvm.ko.zst`` → ``nvidia_uvm`` (the kernel treats - and _ alike); None for
    other files."""
    for suffix in MODULE_SUFFIXES:
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)].replace("-", "_")
    return None


def _magic(stream) -> bytes:
    stream.seek(0)
    head = stream.read(6)
    stream.seek(0)
    return head


def uncompressed(stream):
    """The stream itself for a plain file; an in-memory copy of the contents for xz, gzip or
    zstd (told by the magic bytes, not the name), read through a file-like decompressor in
    bounded steps so a bomb stops at the cap."""
    head = _magic(stream)
    if head.startswith(b"\xfd7zXZ\x00"):
        import lzma

        return _inflate(lzma.LZMAFile(stream), "xz", (lzma.LZMAError, EOFError))
    if head.startswith(b"\x1f\x8b"):
        import gzip

        return _inflate(gzip.GzipFile(fileobj=stream), "gzip", (OSError, EOFError, zlib.error))
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return _unzstd(stream)
    return stream


def _inflate(reader, what: str, errors):
    out = io.BytesIO()
    try:
        while True:
            chunk = reader.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
            if out.tell() > DECOMPRESSED_CAP:
                raise TooLarge("%s data inflates past %d MiB" % (what, DECOMPRESSED_CAP >> 20))
    except TooLarge:
        raise
    except errors as exc:
        detail = str(exc)
        # A decoder's own "corrupt …" is not wrapped in another.
        raise ValueError(detail if detail.startswith("corrupt") else "corrupt or truncated %s data (%s)" % (what, detail)) from None
    finally:
        close = getattr(reader, "close", None)
        if close is not None and reader is not None:
            try:
                close()
            except (OSError, ValueError):
                pass
    out.seek(0)
    return out


def _unzstd(stream):
    return _inflate(_zstd_reader(stream), "zstd", (ValueError, OSError, EOFError))


def _zstd_reader(stream):
    """A file-like zstd decoder over ``stream``: Python 3.14's compression.zstd, the
    zstandard package, or the zstd program fed through a pipe (nothing opened by name)."""
    try:
        from compression import zstd

        return _Checked(zstd.ZstdFile(stream), zstd.ZstdError)
    except ImportError:
        pass
    try:
        import zstandard

        return _Checked(zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=False), zstandard.ZstdError)
    except ImportError:
        pass
    import shutil

    program = shutil.which("zstd")
    if program is None:
        raise ValueError("zstd-compressed, and no zstd decoder here (Python 3.14, the zstandard package or the zstd program)")
    return _ZstdPipe(program, stream)


class _Checked:
    """A decoder whose own error type reads as ValueError (corrupt data, not a crash)."""

    def __init__(self, reader, error):
        self._reader = reader
        self._error = error

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except self._error as exc:
            raise ValueError("corrupt zstd data (%s)" % exc) from None

    def close(self) -> None:
        self._reader.close()


class _ZstdPipe:
    def __init__(self, program: str, stream):
        import subprocess
        import threading

        self._child = subprocess.Popen([program, "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._feeder = threading.Thread(target=_feed, args=(self._child.stdin, stream), daemon=True)
        self._feeder.start()

    def read(self, size: int = -1) -> bytes:
        data = self._child.stdout.read(size)
        if not data and self._child.wait() != 0:
            raise ValueError("corrupt or truncated zstd data (zstd exited %d)" % self._child.returncode)
        return data

    def close(self) -> None:
        if self._child.poll() is None:
            self._child.kill()
        self._child.stdout.close()
        self._child.wait()
        # The feeder reads the caller's stream: it must be done before the stream moves on.
        self._feeder.join()


def _feed(pipe, stream) -> None:
    try:
        sent = 0
        while sent <= DECOMPRESSED_CAP:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            pipe.write(chunk)
            sent += len(chunk)
        pipe.close()
    except (OSError, ValueError):
        pass  # the reader stopped (a bomb, corrupt data, or what it wanted found)


def _elf(stream):
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        return ELFFile(stream)
    except ELFError as exc:
        raise ValueError("not an ELF file (%s)" % exc) from None


# A real .modinfo is a few KiB; a header that claims more is not trusted with memory.
SECTION_CAP = 1 << 20
_SHT_NOBITS = 8
_SHF_COMPRESSED = 0x800


def section_bytes(stream, name: str, cap: int = SECTION_CAP) -> bytes:
    """The contents of section ``name`` of an ELF file (plain or compressed), refused past
    ``cap`` bytes or when its header says it holds no bytes or compressed ones: pyelftools
    would make a section of the size the header claims."""
    from elftools.common.exceptions import ELFError

    elf = _elf(uncompressed(stream))
    try:
        section = elf.get_section_by_name(name)
        if section is None:
            raise ValueError("no %s section" % name)
        header = section.header
        if header["sh_type"] == "SHT_NOBITS" or header["sh_type"] == _SHT_NOBITS or header["sh_flags"] & _SHF_COMPRESSED:
            raise ValueError("a %s section that holds no plain bytes" % name)
        if not 0 <= header["sh_size"] <= cap:
            raise ValueError("a %s section of %d bytes (more than %d KiB)" % (name, header["sh_size"], cap >> 10))
        return section.data()
    except (ELFError, OverflowError, MemoryError, struct.error, IndexError, KeyError) as exc:
        raise ValueError("damaged ELF file (%s)" % (str(exc)[:200] or type(exc).__name__)) from None


def modinfo(stream) -> str:
    """A module's .modinfo as ``key=value`` lines, in file order (``vermagic=6.8.0-45-generic
    SMP preempt mod_unload modversions``, ``version=550.127.05``, ``depends=drm``, …)."""
    data = section_bytes(stream, ".modinfo")
    entries = [item.decode("utf-8", "replace") for item in data.split(b"\x00") if b"=" in item]
    if not entries:
        raise ValueError("an empty .modinfo section")
    # A value never holds a newline in practice; one that does is cut there, not trusted.
    return "".join(entry.split("\n", 1)[0] + "\n" for entry in entries)


def parse_modinfo(text: str) -> dict:
    """``key=value`` lines → {key: [values]} (alias, firmware and parm repeat)."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found.setdefault(key, []).append(value)
    return found


def ikconfig(stream) -> str:
    """The kernel config embedded between IKCFG_ST and IKCFG_ED (CONFIG_IKCONFIG): gzip data
    inside configs.ko (plain or compressed) or an uncompressed vmlinux, found by scanning."""
    found = _between_markers(_chunks(uncompressed(stream)))
    if found is None:
        raise ValueError("no embedded kernel config (no IKCFG_ST … IKCFG_ED)")
    return _gunzip_config(found)


def kernel_image_config(stream) -> str:
    """The embedded config of a kernel image (/boot/vmlinuz-REL), as the kernel's
    scripts/extract-ikconfig finds it: in the file as it is, else in the compressed payload,
    located by the magic bytes of each compressor the standard library (or a zstd decoder)
    reads, decompressed in steps until the end marker."""
    found = _between_markers(_chunks(stream))
    if found is not None:
        return _gunzip_config(found)
    budget = [IMAGE_BUDGET]
    for _what, magic, opener in _PAYLOADS:
        for offset in _offsets(stream, magic, limit=4):
            if budget[0] <= 0:
                raise ValueError("no embedded kernel config found within %d MiB of decompressed data" % (IMAGE_BUDGET >> 20))
            reader = None
            try:
                reader = opener(_Window(stream, offset))
                found = _between_markers(_chunks(reader, budget=budget))
            except Exception:  # noqa: BLE001 - a false magic match fails in its decoder's own way
                found = None
            finally:
                if reader is not None:
                    try:
                        reader.close()
                    except Exception:  # noqa: BLE001
                        pass
            if found is not None:
                return _gunzip_config(found)
    for what, magic in ((b"\x02\x21\x4c\x18", "lz4"), (b"\x89LZO", "lzo")):
        if _offsets(stream, what, limit=1):
            raise ValueError("no embedded kernel config found; the image may be %s-compressed, which nothing here decodes" % magic)
    raise ValueError("no embedded kernel config in the image (CONFIG_IKCONFIG not built in)")


def _gunzip_config(blob: bytes) -> str:
    try:
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        text = stream.decompress(blob, 16 << 20)
    except zlib.error as exc:
        raise ValueError("the embedded kernel config is not gzip data (%s)" % exc) from None
    return text.decode("utf-8", "replace")


def _chunks(reader, size: int = 1 << 20, cap: int = DECOMPRESSED_CAP, budget=None):
    """The reader's data in chunks, up to ``cap`` bytes, and within what is left of ``budget``
    (a one-item list shared by several readers) where one is given."""
    total = 0
    while total <= cap and (budget is None or budget[0] > 0):
        chunk = reader.read(size)
        if not chunk:
            return
        total += len(chunk)
        if budget is not None:
            budget[0] -= len(chunk)
        yield chunk


def _between_markers(chunks):
    """The bytes between IKCFG_ST and IKCFG_ED in a stream of chunks, or None."""
    window = b""
    collected = None
    for chunk in chunks:
        if collected is None:
            window += chunk
            start = window.find(IKCFG_START)
            if start < 0:
                window = window[-(len(IKCFG_START) - 1) :]
                continue
            collected = window[start + len(IKCFG_START) :]
        else:
            collected += chunk
        end = collected.find(IKCFG_END)
        if end >= 0:
            return collected[:end]
        if len(collected) > 16 << 20:
            return None
    return None


def _offsets(stream, magic: bytes, limit: int = 8):
    """Where ``magic`` starts in the file (the first ``limit`` places), scanning in chunks."""
    found = []
    stream.seek(0)
    position = 0
    tail = b""
    while len(found) < limit:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        data = tail + chunk
        start = 0
        while len(found) < limit:
            index = data.find(magic, start)
            if index < 0:
                break
            found.append(position - len(tail) + index)
            start = index + 1
        tail = data[-(len(magic) - 1) :]
        position += len(chunk)
    return found


class _Window:
    """The file from ``offset`` on, as a stream of its own (decompressors read from 0)."""

    def __init__(self, stream, offset: int):
        self._stream = stream
        self._offset = offset
        stream.seek(offset)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def _open_gzip(window):
    import gzip

    return gzip.GzipFile(fileobj=window)


def _open_xz(window):
    import lzma

    return lzma.LZMAFile(window)


def _open_lzma(window):
    import lzma

    return lzma.LZMAFile(window, format=lzma.FORMAT_ALONE)


def _open_bzip2(window):
    import bz2

    return bz2.BZ2File(window)


def _open_zstd(window):
    return _zstd_reader(window)


_PAYLOADS = (
    ("gzip", b"\x1f\x8b\x08", _open_gzip),
    ("xz", b"\xfd7zXZ\x00", _open_xz),
    ("zstd", b"\x28\xb5\x2f\xfd", _open_zstd),
    ("bzip2", b"BZh", _open_bzip2),
    ("lzma", b"\x5d\x00\x00", _open_lzma),
)
