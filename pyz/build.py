"""Build aidoctor.pyz: aidoctor and its runtime dependencies in one file that any system
``python3`` from 3.9 on runs, without pip or a network.

    python3 pyz/build.py [-o dist/aidoctor.pyz] [--wheels FOLDER]

The dependencies are the files pinned in pyz/requirements.txt (versions and sha256 digests),
fetched with ``pip download --require-hashes`` from the index pip is configured with (into
``--wheels FOLDER`` to keep them for the next build). aidoctor itself is this checkout's
source, laid out as it installs (README: Where the code lives). The archive is reproducible:
its members sorted, each dated 1980-01-01 (or SOURCE_DATE_EPOCH) with one mode, so the same
checkout and pins give the same bytes. The code lies under ``lib/``; ``__main__.py`` is
pyz/main.py with the digest of that code written in, which names its unpacked copy.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
REQUIREMENTS = CHECKOUT / "pyz" / "requirements.txt"
# Checkout folder → import name, as pyproject.toml's package-dir installs them.
PACKAGES = {"doctor": "ai_doctor", "rules": "ai_doctor/rules", "reports": "ai_doctor/reports"}
# Folders of the checkout that are not code of the package.
NOT_CODE = ("__pycache__",)
# Files of the dependencies that a pure-Python run never loads (compiled speedups, C sources,
# type stubs): MarkupSafe falls back to its Python escaping without them.
LEFT_OUT = (".so", ".pyd", ".c", ".pyi")
SHEBANG = b"#!/usr/bin/env python3\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default=str(CHECKOUT / "dist" / "aidoctor.pyz"))
    parser.add_argument("--wheels", metavar="FOLDER", help="keep the pinned files in FOLDER: those it lacks are downloaded there first")
    args = parser.parse_args()
    stamp = _stamp()
    with tempfile.TemporaryDirectory(prefix="aidoctor-pyz-") as work:
        wheels = Path(args.wheels) if args.wheels else Path(work) / "wheels"
        if _missing(wheels):
            _download(wheels)
        members = dict(_own_code())
        for name, data in _dependencies(wheels):
            if name in members:
                raise SystemExit("build: %s comes from two places" % name)
            members[name] = data
    digest = hashlib.sha256()
    for name in sorted(members):
        digest.update(b"%d:%s\0%d:" % (len(name), name.encode(), len(members[name])))
        digest.update(members[name])
    bootstrap = (CHECKOUT / "pyz" / "main.py").read_text(encoding="utf-8").replace("@DIGEST@", digest.hexdigest()[:32])
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        _add(archive, "__main__.py", bootstrap.encode("utf-8"), stamp)
        for name in sorted(members):
            _add(archive, "lib/" + name, members[name], stamp)
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_bytes(SHEBANG + buffer.getvalue())
    temporary.chmod(0o755)
    os.replace(temporary, output)
    whole = hashlib.sha256(output.read_bytes()).hexdigest()
    print("%s: %d files, %.1f MB, sha256 %s" % (output, len(members) + 1, output.stat().st_size / 1e6, whole))
    return 0


def _stamp() -> tuple:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return (1980, 1, 1, 0, 0, 0)
    return time.gmtime(max(int(epoch), 315532800))[:6]


def _missing(folder: Path) -> set:
    """The pinned projects ``folder`` has no file of."""
    held = {_normal(path.name.split("-")[0]) for path in folder.iterdir()} if folder.is_dir() else set()
    return set(_pinned()) - held


def _download(folder: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--require-hashes",
        "-r",
        str(REQUIREMENTS),
        "-d",
        str(folder),
    ]
    done = subprocess.run(command)
    if done.returncode:
        raise SystemExit("build: pip download of pyz/requirements.txt failed (exit %d)" % done.returncode)


def _own_code():
    for folder, package in PACKAGES.items():
        root = CHECKOUT / folder
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if path.is_dir() or any(part in NOT_CODE for part in relative.parts):
                continue
            if path.suffix in (".py", ".j2") or path.name == "py.typed" or relative.parts[0] == "share":
                yield "%s/%s" % (package, relative.as_posix()), path.read_bytes()


def _pinned() -> dict:
    """Distribution name (normalised) → the pinned digest."""
    pins = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):  # pip's own options
            requirement, _, digest = line.partition(" --hash=sha256:")
            pins[_normal(requirement.split("==")[0])] = digest.strip()
    return pins


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _dependencies(wheels: Path):
    """(name inside lib/, bytes) of every pinned file's code, each file checked against its pin."""
    pins = _pinned()
    found = set()
    for path in sorted(wheels.iterdir()):
        project = _normal(path.name.split("-")[0])
        if project not in pins:
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != pins[project]:
            raise SystemExit("build: %s is not the file pyz/requirements.txt pins" % path.name)
        found.add(project)
        if path.name.endswith(".whl"):
            yield from _from_wheel(path)
        else:
            yield from _from_source(path)
    missing = sorted(set(pins) - found)
    if missing:
        raise SystemExit("build: no file for %s in %s" % (", ".join(missing), wheels))


def _wanted(name: str) -> bool:
    return not name.endswith("/") and not name.endswith(LEFT_OUT) and "__pycache__" not in name.split("/")


def _from_wheel(path: Path):
    with zipfile.ZipFile(path) as wheel:
        for name in sorted(wheel.namelist()):
            info_folder = name.split("/", 1)[0].endswith(".dist-info")
            # Of the metadata, what says which version it is and under which licence.
            if info_folder and not (name.endswith("/METADATA") or "/licenses/" in name or name.rsplit("/", 1)[-1].startswith("LICEN")):
                continue
            if _wanted(name):
                yield name, wheel.read(name)


def _from_source(path: Path):
    """A source release's package folder (``src/NAME/``) and its licence."""
    with tarfile.open(path) as source:
        top = source.getnames()[0].split("/", 1)[0]
        version = top.rsplit("-", 1)[1]
        for member in sorted(source.getmembers(), key=lambda m: m.name):
            if not member.isfile():
                continue
            inside = member.name[len(top) + 1 :]
            if inside.startswith("src/") and inside.count("/") >= 2 and "egg-info" not in inside and _wanted(inside):
                yield inside[len("src/") :], source.extractfile(member).read()
            elif inside in ("LICENSE.txt", "LICENSE", "PKG-INFO"):
                package = _normal(top.rsplit("-", 1)[0])
                leaf = "METADATA" if inside == "PKG-INFO" else "licenses/" + inside
                yield "%s-%s.dist-info/%s" % (package, version, leaf), source.extractfile(member).read()


def _add(archive: zipfile.ZipFile, name: str, data: bytes, stamp: tuple) -> None:
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3  # Unix, whatever builds it
    archive.writestr(info, data, compresslevel=9)


if __name__ == "__main__":
    sys.exit(main())
