"""What GPU driver and kernel-config checks cost on a host with a full /lib/modules.

Builds, in a temporary folder, a GPU server tree: a modules.dep of 6,000 modules, a real
nvidia module (built with the C compiler, padded to 80 MB like NVIDIA's) plain and as
.ko.xz, and a 100 MB kernel image whose config is only embedded (IKCONFIG). Then times
`aidoctor --root TREE --format json` against `python -c pass`, interleaved, round after
round, and prints ratios of medians. The budget is the core's: 4x for JSON. A compressed
module or kernel image is read once and what it holds is kept in the user's cache (keyed
by the file's inode, size and times): "cold" runs with AIDOCTOR_NO_CACHE=1, "warm" with the
cache filled.

    python benchmarks/gpu_host.py [--rounds 15]

Needs cc and objcopy (binutils); run it with the interpreter aidoctor is installed in.
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

from startup import aidoctor_command, timed

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "fixtures", "gpu-dkms-failed-upgrade", "root")
RELEASE = "6.8.0-45-generic"
BUDGET = 4.0


def compressible(size: int) -> bytes:
    """Bytes that compress about as well as kernel module code (3-4x)."""
    rng = random.Random(1)
    block = bytes(rng.getrandbits(8) % 40 for _ in range(1 << 20))
    return b"".join(block[i:] + block[:i] for i in range(0, size >> 20 << 12, 4096))[:size]


def build_module(target: str, fields, padding: int, work: str) -> None:
    source = os.path.join(work, "m.c")
    with open(source, "w") as handle:
        for index, (key, value) in enumerate(fields):
            data = "".join("\\x%02x" % b for b in ("%s=%s" % (key, value)).encode())
            handle.write('static const char m%d[] __attribute__((section(".modinfo"), used, aligned(1))) = "%s";\n' % (index, data))
        handle.write("int init_module(void) { return 0; }\n")
    subprocess.run(["cc", "-c", "-o", target, source], check=True)
    if padding:
        pad = os.path.join(work, "pad.bin")
        with open(pad, "wb") as handle:
            handle.write(compressible(padding))
        subprocess.run(["objcopy", "--add-section", ".text.pad=%s" % pad, target], check=True)


def build_tree(base: str, compress: bool, embedded_config: bool, work: str) -> str:
    root = os.path.join(base, "root")
    shutil.copytree(FIXTURE, root, symlinks=True, ignore=shutil.ignore_patterns(".aidoctor"))
    modules = os.path.join(root, "lib/modules", RELEASE)
    own = "kernel/block/kyber-iosched.ko"
    os.makedirs(os.path.join(modules, "kernel/block"), exist_ok=True)
    build_module(
        os.path.join(modules, own), [("name", "kyber_iosched"), ("vermagic", RELEASE + " SMP preempt mod_unload modversions ")], 0, work
    )
    nvidia = os.path.join(modules, "updates/dkms/nvidia.ko")
    os.makedirs(os.path.dirname(nvidia), exist_ok=True)
    for stale in os.listdir(os.path.dirname(nvidia)):
        os.remove(os.path.join(os.path.dirname(nvidia), stale))
    fields = [
        ("version", "550.127.05"),
        ("license", "NVIDIA"),
        ("name", "nvidia"),
        ("vermagic", RELEASE + " SMP preempt mod_unload modversions "),
    ]
    build_module(nvidia, fields, 80 << 20, work)
    name = "updates/dkms/nvidia.ko"
    if compress:
        with open(nvidia, "rb") as handle:
            data = handle.read()
        with open(nvidia + ".xz", "wb") as handle:
            handle.write(lzma.compress(data, preset=0, check=lzma.CHECK_CRC32))
        os.remove(nvidia)
        name += ".xz"
    lines = [own + ":", name + ":"] + [
        "kernel/drivers/misc/module%04d.ko.zst: kernel/lib/dep%03d.ko.zst" % (i, i % 400) for i in range(6000)
    ]
    with open(os.path.join(modules, "modules.dep"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    if embedded_config:
        os.remove(os.path.join(root, "boot", "config-" + RELEASE))
        with open(os.path.join(FIXTURE, "boot", "config-" + RELEASE), "rb") as handle:
            config = handle.read()
        kernel = compressible(60 << 20) + b"IKCFG_ST" + gzip.compress(config) + b"IKCFG_ED" + compressible(40 << 20)
        with open(os.path.join(root, "boot", "vmlinuz-" + RELEASE), "wb") as handle:
            handle.write(b"MZ" + bytes(16384) + gzip.compress(kernel, compresslevel=1))
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if not (shutil.which("cc") and shutil.which("objcopy")):
        print("needs cc and objcopy to build the modules")
        return 2
    tool = aidoctor_command()
    with tempfile.TemporaryDirectory() as work:
        print("building the trees (a minute: compressing 80 MB)…", flush=True)
        trees = {
            "plain .ko": build_tree(os.path.join(work, "plain"), False, False, work),
            ".ko.xz": build_tree(os.path.join(work, "xz"), True, False, work),
            "vmlinuz config": build_tree(os.path.join(work, "vmlinuz"), False, True, work),
        }
        cache = os.path.join(work, "cache")
        warm = dict(os.environ, XDG_CACHE_HOME=cache)
        cold = dict(os.environ, AIDOCTOR_NO_CACHE="1")
        commands = {"python -c pass": ([sys.executable, "-c", "pass"], os.environ)}
        for label, root in trees.items():
            command = tool + ["--root", root, "--model-size", "140G", "--format", "json"]
            commands["%s, cold" % label] = (command, cold)
            commands["%s, warm" % label] = (command, warm)
        for command, env in commands.values():
            timed(command, env=env)  # warm the page cache, bytecode and the derived cache
        samples = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (command, env) in commands.items():
                samples[name].append(timed(command, env=env))
    base = statistics.median(samples["python -c pass"])
    print("interpreter: %s (%s)" % (sys.executable, sys.version.split()[0]))
    print("rounds:      %d, interleaved; medians" % args.rounds)
    print("%-24s %9s %7s" % ("", "median", "ratio"))
    print("%-24s %7.1fms %7s" % ("python -c pass", base * 1000, "1.00"))
    over = []
    for name in list(commands)[1:]:
        median = statistics.median(samples[name])
        ratio = median / base
        print("%-24s %7.1fms %7.2f" % (name, median * 1000, ratio))
        if name.endswith("warm") and ratio > BUDGET:
            over.append(name)
    print("budget: %.0fx for a run with the cache filled (cold runs read each large file once)" % BUDGET)
    if over:
        print("over budget: %s" % ", ".join(over))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
