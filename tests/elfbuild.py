"""Small real ELF objects, built at test time with the system C compiler: a kernel module's
.modinfo, a shared object with a SONAME, an object carrying an IKCONFIG blob. Tests that use
them skip when there is no compiler; no binary is committed."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

COMPILER = shutil.which("cc") or shutil.which("gcc")


def need_compiler():
    if COMPILER is None:
        pytest.skip("no C compiler to build test ELF objects")


def _c_string(data: bytes) -> str:
    return '"%s"' % "".join("\\x%02x" % byte for byte in data)


def _compile(source: str, target: Path, *flags) -> Path:
    need_compiler()
    target.parent.mkdir(parents=True, exist_ok=True)
    source_file = target.with_name(target.name + ".c")
    source_file.write_text(source)
    subprocess.run([COMPILER, *flags, "-o", str(target), str(source_file)], check=True, capture_output=True)
    source_file.unlink()
    return target


def module(target: Path, fields, compress=None) -> Path:
    """A relocatable object with a .modinfo section of ``key=value`` entries, as kbuild lays
    it out (one NUL-terminated string each); ``compress``: None, "xz", "gz" or "zst"."""
    entries = "\n".join(
        'static const char modinfo_%d[] __attribute__((section(".modinfo"), used, aligned(1))) = %s;'
        % (index, _c_string(("%s=%s" % item).encode()))
        for index, item in enumerate(fields)
    )
    plain = target.with_name(target.name.split(".ko", 1)[0] + ".ko") if compress else target
    _compile(entries + "\nint init_module(void) { return 0; }\n", plain, "-c")
    if not compress:
        return plain
    data = plain.read_bytes()
    plain.unlink()
    if compress == "xz":
        target.write_bytes(lzma.compress(data, check=lzma.CHECK_CRC32))
    elif compress == "gz":
        target.write_bytes(gzip.compress(data))
    elif compress == "zst":
        program = shutil.which("zstd")
        if program is None:
            pytest.skip("no zstd program to compress a test module")
        target.write_bytes(subprocess.run([program, "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout)
    return target


def shared_object(target: Path, soname: str) -> Path:
    return _compile("int nvmlInit(void) { return 0; }\n", target, "-shared", "-fPIC", "-Wl,-soname," + soname)


def ikconfig_object(target: Path, config_text: str) -> Path:
    """An object whose .rodata holds IKCFG_ST, the gzip of ``config_text`` and IKCFG_ED, as
    kernel/configs.c builds configs.ko (and vmlinux)."""
    blob = b"IKCFG_ST" + gzip.compress(config_text.encode()) + b"IKCFG_ED"
    source = "const char kernel_config_data[] __attribute__((used)) = %s;\nint init_module(void) { return 0; }\n" % _c_string(blob)
    return _compile(source, target, "-c")
