"""What kernel modules and kernel images carry inside: a module's .modinfo, the embedded
kernel config (IKCONFIG). Each extractor takes a seekable binary stream and returns text, for
Host.derive; it raises ValueError for a file it does not understand.

pyelftools reads the ELF (section headers, then the one section wanted), so a plain module is
never loaded whole. A compressed module (``.ko.xz``, ``.ko.gz``, ``.ko.zst``) is decompressed
into memory first, up to a cap: ELF section headers sit at the end of the file.
"""

from __future__ import annotations

import io
import zlib

# Larger than any module shipped (NVIDIA's kernel modules are about 100 MiB unpacked).
DECOMPRESSED_CAP = 512 << 20
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")
IKCFG_START = b"IKCFG_ST"
IKCFG_END = b"IKCFG_ED"


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
                raise ValueError("%s data inflates past %d MiB" % (what, DECOMPRESSED_CAP >> 20))
    except errors as exc:
        raise ValueError("corrupt or truncated %s data (%s)" % (what, exc)) from None
    out.seek(0)
    return out


def _unzstd(stream):
    """zstd through Python 3.14's compression.zstd, the zstandard package, or the zstd program
    (fed through a pipe: nothing is opened by name)."""
    try:
        from compression import zstd

        return _inflate(zstd.ZstdFile(stream), "zstd", (zstd.ZstdError, EOFError))
    except ImportError:
        pass
    try:
        import zstandard

        return _inflate(zstandard.ZstdDecompressor().stream_reader(stream), "zstd", (zstandard.ZstdError,))
    except ImportError:
        pass
    import shutil
    import subprocess

    program = shutil.which("zstd")
    if program is None:
        raise ValueError("zstd-compressed, and no zstd decoder here (Python 3.14, the zstandard package or the zstd program)")
    stream.seek(0)
    compressed = stream.read(DECOMPRESSED_CAP + 1)
    with subprocess.Popen([program, "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as child:
        import threading

        feeder = threading.Thread(target=_feed, args=(child.stdin, compressed), daemon=True)
        feeder.start()
        try:
            out = _inflate(child.stdout, "zstd", (OSError,))
        except ValueError:
            child.kill()
            raise
        feeder.join()
        if child.wait() != 0:
            raise ValueError("corrupt or truncated zstd data (zstd exited %d)" % child.returncode)
    return out


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:
        pass  # the reader stopped (a bomb, or corrupt data): its error is the one to report


def _elf(stream):
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        return ELFFile(stream)
    except ELFError as exc:
        raise ValueError("not an ELF file (%s)" % exc) from None


def section_bytes(stream, name: str) -> bytes:
    """The contents of section ``name`` of an ELF file (plain or compressed)."""
    from elftools.common.exceptions import ELFError

    elf = _elf(uncompressed(stream))
    try:
        section = elf.get_section_by_name(name)
        if section is None:
            raise ValueError("no %s section" % name)
        return section.data()
    except ELFError as exc:
        raise ValueError("damaged ELF file (%s)" % exc) from None


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
    """The kernel config embedded between IKCFG_ST and IKCFG_ED (CONFIG_IKCONFIG): gzip data,
    found in the ELF's sections (configs.ko, vmlinux) or, for other files, anywhere."""
    data = uncompressed(stream).read(DECOMPRESSED_CAP + 1)
    return config_between_markers(data)


def config_between_markers(data: bytes) -> str:
    start = data.find(IKCFG_START)
    if start < 0:
        raise ValueError("no embedded kernel config (no IKCFG_ST marker)")
    end = data.find(IKCFG_END, start)
    if end < 0:
        raise ValueError("the embedded kernel config is cut short (no IKCFG_ED marker)")
    blob = data[start + len(IKCFG_START) : end]
    try:
        text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(blob, 16 << 20)
    except zlib.error as exc:
        raise ValueError("the embedded kernel config is not gzip data (%s)" % exc) from None
    return text.decode("utf-8", "replace")
