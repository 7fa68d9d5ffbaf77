"""Tree mutations: each one a plain dict (JSON) that :func:`apply` replays exactly.

:func:`generate` draws one mutation from a ``random.Random`` and the tree as it is now; every
choice it makes (the file, the offset, the bytes) is written into the dict, so a failure is
rebuilt from its recipe alone, whatever the random generator does in another Python. Large
payloads are parameters (``{"op": "repeat", "unit": "\\n", "count": 1048576}``), not data.

Bytes in a mutation are held as strings of code points 0-255 (latin-1), which JSON carries.
"""

from __future__ import annotations

import json

from aidfuzz import trees

MARKER = "<x-fuzz>"
# Markers planted in host text: the HTML and Markdown reports must never show them raw.
MARKERS = (MARKER, "<script>x-fuzz</script>", "\"><x-fuzz a='", "<x-fuzz/>`|*_[x](y)")

# The read caps in doctor/host.py (READ_CAP) and the smaller ones the facts pass.
CAPS = (256, 4096, 65536, 1 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20)

INTERESTING_NUMBERS = (
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "07",
    "0x10",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "1" + "0" * 30,
    "9" * 5000,
    "1e999",
    "nan",
    "inf",
    "-inf",
    "1.5",
    "1_000",
    "١٢",
    "",
    " ",
    "max",
    "-max",
    "+5",
    "0:0",
    "1-0",
    "3-1",
    "0-4095",
    "99999999999999999999999999kB",
)
INTERESTING_TOKENS = (
    "[never]",
    "[always] [madvise]",
    "[]",
    "[",
    "]",
    "never",
    "none",
    "[none]",
    "=",
    "==",
    "\\",
    '"',
    "'",
    "$(",
    "`",
    "#",
    "\t",
    "\r",
    "\x00",
    "\x1b[31m",
    "\u202e",
    "\ufeff",
    "\xff",
    "\xc3",
    "\xed\xa0\x80",
    "..",
    "../../..",
    "/",
    "//",
    "*",
    "?",
    "%s",
    "{",
    "}",
    "${x}",
    "$kernelopts",
    "\n\n\n",
    ":",
    ";",
    "&&",
    "|",
    "<",
    ">",
)
LINK_TARGETS = (
    "/",
    ".",
    "..",
    "../../..",
    "../../../../../../../../../../etc/passwd",
    "/etc/passwd",
    "/proc/self/root",
    "/proc/meminfo",
    "self",
    "./self",
    "",
    "x" * 300,
    "/dev/zero",
    "/dev/stdin",
    "loop/..",
    "nonexistent",
    "../" * 60 + "etc",
    "\udcff\udcfe",
)


def b2s(data: bytes) -> str:
    return data.decode("latin-1")


def s2b(text: str) -> bytes:
    return text.encode("latin-1")


def _token(rng) -> bytes:
    pick = rng.random()
    if pick < 0.45:
        return INTERESTING_NUMBERS[rng.randrange(len(INTERESTING_NUMBERS))].encode("utf-8")
    if pick < 0.85:
        return INTERESTING_TOKENS[rng.randrange(len(INTERESTING_TOKENS))].encode("utf-8", "surrogateescape")
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))


def _lines(data: bytes):
    return data.split(b"\n")


def _pick_file(rng, tree, hot=True):
    names = trees.files(tree)
    if not names:
        return None
    if hot and rng.random() < 0.5:
        preferred = [n for n in names if n.startswith(("/proc/", "/sys/", "/etc/", "/boot/")) and len(tree[n][1]) < (1 << 20)]
        if preferred:
            return preferred[rng.randrange(len(preferred))]
    return names[rng.randrange(len(names))]


def _pick_any(rng, tree):
    names = sorted(p for p in tree if p != "/")
    return names[rng.randrange(len(names))] if names else None


def _pick_dir(rng, tree):
    names = sorted(p for p, e in tree.items() if e[0] == "d")
    return names[rng.randrange(len(names))]


def _pos(rng, data: bytes) -> int:
    if not data or rng.random() < 0.1:
        return rng.choice((0, len(data)))
    # Often at a line start, where parsers look.
    if rng.random() < 0.4:
        starts = [0] + [i + 1 for i, c in enumerate(data) if c == 10]
        return starts[rng.randrange(len(starts))]
    return rng.randrange(len(data) + 1)


# -- generation --------------------------------------------------------------------------


def _byte_level(rng, tree, heavy=False):
    path = _pick_file(rng, tree)
    if path is None:
        return None
    data = tree[path][1]
    kind = rng.choice(
        (
            "flip",
            "flip",
            "set",
            "insert",
            "insert",
            "delete",
            "dup",
            "truncate",
            "splice",
            "repeat",
            "repeat",
            "dupline",
            "longline",
            "token",
            "token",
            "token",
            "crlf",
            "nul_newlines",
            "strip_final",
            "bom",
            "plant",
        )
    )
    if kind == "flip" and data:
        return {"op": "flip", "path": path, "pos": rng.randrange(len(data)), "bit": rng.randrange(8)}
    if kind == "set" and data:
        return {
            "op": "set",
            "path": path,
            "pos": rng.randrange(len(data)),
            "byte": rng.choice((0, 10, 32, 0x7F, 0x80, 0xFF, rng.randrange(256))),
        }
    if kind == "insert":
        return {"op": "insert", "path": path, "pos": _pos(rng, data), "data": b2s(_token(rng))}
    if kind == "delete" and data:
        at = rng.randrange(len(data))
        return {"op": "delete", "path": path, "pos": at, "len": rng.randrange(1, max(2, min(len(data) - at, 64)) + 1)}
    if kind == "dup" and data:
        at = rng.randrange(len(data))
        return {
            "op": "dup",
            "path": path,
            "pos": at,
            "len": rng.randrange(1, min(len(data) - at, 256) + 1),
            "times": rng.choice((1, 2, 10, 1000)),
        }
    if kind == "truncate":
        return {"op": "truncate", "path": path, "len": rng.randrange(len(data) + 1)}
    if kind == "splice":
        other = _pick_file(rng, tree, hot=False)
        lines = _lines(tree[other][1])
        first = rng.randrange(len(lines))
        last = min(len(lines), first + rng.randrange(1, 8))
        return {"op": "splice", "path": path, "from": other, "lines": [first, last], "at": rng.randrange(len(_lines(data)) + 1)}
    if kind == "repeat":
        unit, count = rng.choice(
            (
                (" ", 80_000),
                ("\n", (1 << 20) if heavy else 10_000),
                ("\x00", rng.choice((1, 100, 65536))),
                ("\xff\xfe", 1000),
                ("\xc3", 1),
                ("\xed\xa0\x80", 3),
                ("\t", 10_000),
                ("a", 70_000),
                ("0", 5000),
                ("[", 50_000),
                ("\r\n", 1000),
                ("=", 10_000),
                ("#", 100_000),
                ("\\", 10_000),
                ("\x1b[2J", 10),
            )
        )
        return {"op": "repeat", "path": path, "pos": _pos(rng, data), "unit": unit, "count": count}
    if kind == "dupline":
        count = rng.choice((2, 1000, 100_000) if heavy else (2, 100, 1000))
        return {"op": "dupline", "path": path, "line": rng.randrange(len(_lines(data)) + 1), "count": count}
    if kind == "longline":
        return {
            "op": "longline",
            "path": path,
            "line": rng.randrange(len(_lines(data)) + 1),
            "len": rng.choice((4097, 65537, 1 << 20, 9 << 20) if heavy else (4097, 65537)),
            "char": rng.choice("x 9="),
        }
    if kind == "token":
        # Replace a run of digits (a value), or a word, with an interesting one.
        runs = []
        index, size = 0, len(data)
        while index < size and len(runs) < 200:
            if 48 <= data[index] <= 57 or (rng.random() < 0.3 and 97 <= data[index] <= 122):
                start = index
                while index < size and (48 <= data[index] <= 57 or 97 <= data[index] <= 122 or data[index] in b"_-"):
                    index += 1
                runs.append((start, index - start))
            index += 1
        if not runs:
            return {"op": "insert", "path": path, "pos": _pos(rng, data), "data": b2s(_token(rng))}
        start, length = runs[rng.randrange(len(runs))]
        return {"op": "replace", "path": path, "pos": start, "len": length, "data": b2s(_token(rng))}
    if kind == "crlf":
        return {"op": "crlf", "path": path}
    if kind == "nul_newlines":
        return {"op": "nul_newlines", "path": path}
    if kind == "strip_final":
        return {"op": "truncate", "path": path, "len": max(0, len(data) - 1)}
    if kind == "bom":
        return {"op": "insert", "path": path, "pos": 0, "data": b2s("\ufeff".encode("utf-8"))}
    return _plant(rng, tree, path)


def _plant(rng, tree, path=None):
    marker = MARKERS[rng.randrange(len(MARKERS))]
    if rng.random() < 0.3:
        # In a name: a sysctl drop-in, a unit, a profile, a block device.
        folder = rng.choice(("/etc/sysctl.d", "/etc/modprobe.d", "/etc/default/grub.d", "/boot/loader/entries", "/sys/block", "/etc/tuned"))
        name = marker.replace("/", "\\") + rng.choice((".conf", ".cfg", "", "/queue/scheduler"))
        return {"op": "add", "path": folder + "/" + name, "data": b2s(("vm.nr_hugepages = 1%s\n" % marker).encode("utf-8"))}
    path = path or _pick_file(rng, tree)
    if path is None:
        return None
    data = tree[path][1]
    if rng.random() < 0.5:
        # Where values are: after '=' or ':' or a bracket.
        spots = [i + 1 for i, c in enumerate(data[:65536]) if c in b"=:[ "]
        if spots:
            return {"op": "insert", "path": path, "pos": spots[rng.randrange(len(spots))], "data": b2s(marker.encode())}
    return {"op": "insert", "path": path, "pos": _pos(rng, data), "data": b2s(marker.encode())}


def _structure(rng, tree, heavy=False):
    kind = rng.choice(
        (
            "symlink",
            "symlink",
            "symlink",
            "dotchain",
            "loop",
            "fifo",
            "empty",
            "todir",
            "tofile",
            "nest",
            "chmod",
            "remove",
            "rename",
            "many",
            "linkchain",
        )
    )
    if kind in ("symlink", "fifo", "empty", "todir", "chmod", "remove", "rename"):
        path = _pick_any(rng, tree) if rng.random() < 0.4 else _pick_file(rng, tree)
        if path is None:
            return None
    if kind == "symlink":
        pick = rng.random()
        if pick < 0.4:
            target = LINK_TARGETS[rng.randrange(len(LINK_TARGETS))]
        elif pick < 0.7:
            other = _pick_any(rng, tree)
            target = other  # absolute, re-rooted
        else:
            other = _pick_any(rng, tree)
            depth = path.count("/") - 1
            target = "../" * depth + other.lstrip("/")  # relative, climbing to the root first
        return {"op": "symlink", "path": path, "target": target}
    if kind == "dotchain":
        # `s -> .` and a path through it: s/s/s/s/.../name, and `a -> s/../x`.
        folder = _pick_dir(rng, tree)
        base = folder.rstrip("/")
        muts = [{"op": "symlink", "path": base + "/s", "target": "."}]
        if rng.random() < 0.5:
            muts.append({"op": "symlink", "path": base + "/a", "target": "s/../" + rng.choice(("x", "..", "../..", "s/s/s/..", "a"))})
        victim = _pick_file(rng, tree)
        if victim:
            muts.append(
                {"op": "symlink", "path": victim, "target": "/".join(["s"] * rng.choice((3, 39, 41, 200))) + "/" + victim.rsplit("/", 1)[1]}
            )
            if rng.random() < 0.5:
                muts.append({"op": "symlink", "path": victim, "target": base + "/" + "/".join(["s"] * 41) + victim})
        return {"op": "batch", "ops": muts}
    if kind == "loop":
        path = _pick_file(rng, tree) or "/etc/x"
        other = path + ".loop"
        return {"op": "batch", "ops": [{"op": "symlink", "path": path, "target": other}, {"op": "symlink", "path": other, "target": path}]}
    if kind == "linkchain":
        path = _pick_file(rng, tree)
        if path is None:
            return None
        return {"op": "linkchain", "path": path, "n": rng.choice((2, 39, 40, 41, 100))}
    if kind == "fifo":
        return {"op": "fifo", "path": path}
    if kind == "empty":
        return {"op": "empty", "path": path}
    if kind == "todir":
        return {"op": "todir", "path": path, "child": rng.choice((None, "x", "0", path.rsplit("/", 1)[1]))}
    if kind == "tofile":
        folder = _pick_dir(rng, tree)
        if folder == "/":
            return None
        return {"op": "tofile", "path": folder, "data": b2s(_token(rng) + b"\n")}
    if kind == "nest":
        folder = _pick_dir(rng, tree)
        depth = rng.choice((10, 100, 255, 256, 257, 600))
        name = rng.choice(("a", "nvme0n1", "policy0", "..a", "x" * 255))
        if len(name) * depth > 3000:
            depth = 3000 // (len(name) + 1)
        leaf = rng.choice(("x.conf", "scheduler", "meminfo", "config", "nvidia.ko", "version"))
        return {"op": "nest", "path": folder, "name": name, "depth": depth, "leaf": leaf, "data": b2s(_token(rng) + b"\n")}
    if kind == "chmod":
        return {"op": "chmod", "path": path, "mode": rng.choice((0, 0o200, 0o100, 0o444, 0o4755, 0o600))}
    if kind == "remove":
        return {"op": "remove", "path": path}
    if kind == "rename":
        parent = trees.parent(path)
        name = rng.choice(
            ("\udcff\udcfe.conf", "a\nb", " ", "-", "..conf", ".hidden", "x" * 255, "UPPER", "name with spaces", "\x1b[1m", "é")
        )
        return {"op": "rename", "path": path, "to": (parent.rstrip("/") + "/" + name)}
    if kind == "many":
        folder = rng.choice(
            (
                "/etc/sysctl.d",
                "/sys/devices/system/cpu",
                "/sys/block",
                "/sys/devices/system/cpu/cpufreq",
                "/etc/modprobe.d",
                "/boot",
                "/usr/local",
                "/var/lib/dkms",
            )
        )
        prefix = rng.choice(("cpu", "policy", "nvme", "x", "vmlinuz-", "config-", "cuda-", "nvidia", "", "9"))
        return {
            "op": "many",
            "path": folder,
            "prefix": prefix,
            "count": rng.choice((100, 1000, 5000, 20_000) if heavy else (10, 100, 1000)),
            "data": b2s(_token(rng) + b"\n"),
            "kind": rng.choice("fdl"),
        }
    return None


def _release(tree):
    for path in ("/proc/sys/kernel/osrelease",):
        entry = tree.get(path)
        if entry and entry[0] == "f":
            return entry[1].decode("utf-8", "replace").strip() or "6.1.0"
    modules = sorted(p.split("/")[3] for p in tree if p.startswith("/lib/modules/") and p.count("/") == 3)
    return modules[0] if modules else "6.1.0-18-amd64"


def _semantic(rng, tree):
    """Content that names paths, with `..`, emptiness and loops where a path or version goes."""
    release = _release(tree)
    kind = rng.choice(
        (
            "modules_dep",
            "bls",
            "grubenv",
            "grub",
            "tuned",
            "release",
            "manifest",
            "manifest",
            "derived",
            "cmdline",
            "sysctl",
            "cgroup",
            "rclocal",
            "mountinfo",
        )
    )
    climb = rng.choice(
        ("../../../../../x", "..", "../", "", "/", ".", "../" * 40, "a/../../..", "\x00", "x\ny", "%s/../%s" % (release, release))
    )
    if kind == "modules_dep":
        base = rng.choice(("/lib/modules/", "/usr/lib/modules/")) + release
        line = rng.choice(
            (
                "updates/dkms/../../../../../x/nvidia.ko: ",
                "/lib/modules/../../../etc/passwd/nvidia.ko:",
                "../../../../nvidia.ko.xz: kernel/x.ko",
                "updates/dkms/%snvidia.ko:" % climb,
                "kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko.zst:",
                "nvidia.ko:" + " nvidia.ko" * 1000,
                ":::",
                "updates/dkms/nvidia.ko.gz: nvidia.ko.gz",
            )
        )
        ops = [{"op": "append", "path": base + "/modules.dep", "data": b2s((line + "\n").encode("utf-8", "surrogateescape"))}]
        if rng.random() < 0.5:
            ops.append(
                {
                    "op": "add",
                    "path": base + "/updates/dkms/nvidia.ko",
                    "data": b2s(rng.choice((b"", b"\x7fELF", b"\x7fELF\x02\x01\x01" + b"\x00" * 57, b"not elf"))),
                }
            )
        return {"op": "batch", "ops": ops}
    if kind == "bls":
        version = rng.choice(("", "../", "../../..", climb, release, release + "/../..", "x" * 5000))
        body = "title x%s\nversion %s\nlinux /vmlinuz-%s\ninitrd /initramfs-%s.img\noptions %s\n" % (
            MARKER if rng.random() < 0.2 else "",
            version,
            rng.choice((version, "../../../x", "")),
            version,
            rng.choice(("$kernelopts", "$tuned_params hugepages=4", "hugepages=../..", "", "root=/dev/sda " * 2000)),
        )
        name = rng.choice(
            ("a-%s.conf" % version.replace("/", "_")[:100], "x.conf", ".conf", "%s.conf" % climb.replace("/", "_").replace("\x00", ""))
        )
        return {"op": "add", "path": "/boot/loader/entries/" + (name or "y.conf"), "data": b2s(body.encode("utf-8"))}
    if kind == "grubenv":
        body = "# GRUB Environment Block\nsaved_entry=%s\nkernelopts=%s\n" % (
            climb,
            rng.choice(("root=/x $kernelopts", "$kernelopts", "hugepages=99999999999999999999")),
        )
        body = body + "#" * max(0, 1024 - len(body))
        return {"op": "add", "path": rng.choice(trees_grubenv), "data": b2s(body.encode("utf-8", "surrogateescape"))}
    if kind == "grub":
        value = rng.choice(
            (
                '"1>1>1>1>1"',
                "saved",
                '"%s"' % climb,
                '"$GRUB_DEFAULT"',
                "'",
                '"',
                "$(reboot)",
                '"' + ">" * 1000 + '"',
                "-1",
                "99999999999999999999",
            )
        )
        body = 'GRUB_DEFAULT=%s\nGRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX hugepages=%s"\n' % (value, rng.choice(("16", "../..", "", "-1")))
        return {
            "op": "add",
            "path": rng.choice(("/etc/default/grub", "/etc/default/grub.d/99-fuzz.cfg")),
            "data": b2s(body.encode("utf-8")),
        }
    if kind == "tuned":
        profile = rng.choice(("self", "a", climb, "../../../etc", "throughput-performance", "x" * 300))
        body = "[main]\ninclude=%s\n[cpu]\ngovernor=%s\n[vm]\ntransparent_hugepages=never\n" % (
            rng.choice((profile, "a,b,a", "${f:exec:reboot}", "b")),
            rng.choice(("powersave", MARKER, "")),
        )
        ops = [
            {"op": "add", "path": "/etc/tuned/active_profile", "data": b2s((profile + "\n").encode("utf-8", "surrogateescape"))},
            {
                "op": "add",
                "path": "/etc/tuned/%s/tuned.conf" % profile.replace("\x00", ""),
                "data": b2s(body.encode("utf-8", "surrogateescape")),
            },
        ]
        if rng.random() < 0.5:
            ops.append({"op": "add", "path": "/etc/tuned/b/tuned.conf", "data": b2s(b"[main]\ninclude=a\n")})
            ops.append({"op": "add", "path": "/etc/tuned/a/tuned.conf", "data": b2s(b"[main]\ninclude=b\n")})
        return {"op": "batch", "ops": ops}
    if kind == "release":
        value = rng.choice(
            ("../../..", "", "..", ".", "/", "a/b", "6.1.0\x00x", "6.1.0/../../../etc", "x" * 5000, release + "\n" + release, "%s" % MARKER)
        )
        return {"op": "add", "path": "/proc/sys/kernel/osrelease", "data": b2s((value + "\n").encode("utf-8", "surrogateescape"))}
    if kind == "manifest":
        return _manifest(rng)
    if kind == "derived":
        what = rng.choice(("modinfo", "ikconfig", "x", "..", ""))
        target = rng.choice(("/lib/modules/%s/updates/dkms/nvidia.ko" % release, "/boot/vmlinuz-" + release, "/", "/x/../../y"))
        data = rng.choice(
            (
                "\x00not understood: " + "y" * 1000,
                "vermagic=%s SMP mod_unload\nversion=535\n" % release,
                "",
                "\x00",
                MARKER,
                "CONFIG_HUGETLBFS=y\n" * 1000,
            )
        )
        return {"op": "add", "path": "/.aidoctor/derived/%s%s" % (what, target), "data": b2s(data.encode("utf-8"))}
    if kind == "cmdline":
        words = rng.choice(
            (
                "hugepages=1G hugepagesz=1G hugepages=0:32,1:32 default_hugepagesz=2M",
                "init=%s rdinit=../../x sysctl.vm.nr_hugepages=%s" % (climb, rng.choice(("1e999", "-1", "9" * 100))),
                "transparent_hugepage=%s thp_anon=%s cpufreq.default_governor=%s" % (MARKER, "2M-1G:always;;;", climb),
                "BOOT_IMAGE=%s" % climb + " x" * 20000,
                'a="b c d e' * 100,
                "hugepages=" + "9" * 5000,
            )
        )
        return {"op": "add", "path": "/proc/cmdline", "data": b2s((words + "\n").encode("utf-8", "surrogateescape"))}
    if kind == "sysctl":
        line = rng.choice(
            (
                "vm.nr_hugepages = %s" % rng.choice(INTERESTING_NUMBERS),
                "vm/overcommit_memory=2",
                "-vm.overcommit_ratio = 1e999",
                "vm.%s = 1" % MARKER,
                "include %s" % climb,
                "kernel.core_pattern = |/bin/sh -c 'x'",
                "= 5",
                "vm.nr_hugepages",
                ". = .",
                "vm..nr_hugepages = 1",
                "vm.overcommit_kbytes = 18446744073709551616",
            )
        )
        path = rng.choice(("/etc/sysctl.conf", "/etc/sysctl.d/50-fuzz.conf", "/usr/lib/sysctl.d/10-x.conf", "/run/sysctl.d/x.conf"))
        return {"op": "append", "path": path, "data": b2s((line + "\n").encode("utf-8", "surrogateescape"))}
    if kind == "cgroup":
        value = rng.choice(
            (
                "0::/../../..",
                "0::%s" % climb,
                "4:memory:/docker/" + "x/" * 2000,
                "0::",
                "::",
                "0::/a\n0::/b",
                "1:name=systemd:/\n0::/../../../../sys",
            )
        )
        return {"op": "add", "path": "/proc/self/cgroup", "data": b2s((value + "\n").encode("utf-8", "surrogateescape"))}
    if kind == "rclocal":
        body = rng.choice(
            (
                "#!/bin/sh\necho never > /sys/kernel/mm/transparent_hugepage/enabled\nsysctl -w vm.nr_hugepages=%s\n"
                % rng.choice(INTERESTING_NUMBERS),
                "#!/bin/sh\n" + "if true; then\n" * 100 + "sysctl vm.overcommit_memory=2\n",
                "#!/bin/sh\necho %s > /proc/sys/vm/nr_hugepages\nexit 0\nsysctl -w vm.overcommit_memory=2\n" % MARKER,
                "#!\n" + "(" * 5000,
                "#!/bin/sh\ncat <<EOF\n" + "x\n" * 100,
            )
        )
        return {
            "op": "add",
            "path": rng.choice(("/etc/rc.local", "/etc/rc.d/rc.local")),
            "data": b2s(body.encode("utf-8")),
            "mode": rng.choice((0o755, 0o644)),
        }
    value = rng.choice(
        (
            "26 1 8:1 / / rw - ext4 /dev/sda1 rw\n" * 10000,
            "1 0 0:1 %s / ro - overlay overlay ro\n" % climb,
            "x\n",
            "26 1 8:1 / /proc/sys ro - proc proc ro\n26 1 8:1 / /proc/sys rw - proc proc rw\n",
            "a b c d e f g h - \n",
        )
    )
    return {"op": "add", "path": "/proc/self/mountinfo", "data": b2s(value.encode("utf-8", "surrogateescape"))}


trees_grubenv = ("/boot/grub2/grubenv", "/boot/grub/grubenv")


def _manifest(rng):
    path = "/.aidoctor/manifest.json"
    pick = rng.randrange(12)
    if pick == 0:
        return {
            "op": "deepjson",
            "path": path,
            "depth": rng.choice((100, 1000, 100_000)),
            "open": rng.choice("[{"),
            "wrap": rng.random() < 0.5,
        }
    if pick == 1:
        return {"op": "setsize", "path": path, "size": (8 << 20) + rng.choice((-1, 0, 1)), "fill": "json"}
    if pick == 2:
        return {"op": "symlink", "path": path, "target": rng.choice(("/etc/os-release", "manifest.json", "/proc/self/environ"))}
    if pick == 3:
        return {"op": "fifo", "path": path}
    if pick == 4:
        return {"op": "tofile", "path": "/.aidoctor", "data": "{}"}
    if pick == 5:
        return {"op": "symlink", "path": "/.aidoctor", "target": rng.choice(("/etc", ".", "/", "../../..", "/tmp"))}
    outcomes = {}
    for _ in range(rng.randrange(1, 6)):
        key = rng.choice(
            (
                "/",
                "",
                "/proc",
                "/proc/meminfo",
                "relative/path",
                "/etc/sysctl.d",
                "/x\x00y",
                "/../..",
                "//proc//meminfo/",
                "/" + MARKER,
                "/sys/block/nvme0n1/queue/scheduler",
                "/.aidoctor/manifest.json",
            )
        )
        outcomes[key] = rng.choice(("denied", "missing", "ok", "error", "EIO: Input/output error", "", MARKER, "x" * 5000, "\x00"))
    manifest = {"format": rng.choice((1, 2, 0, -1, "1", None, 1e300)), "aidoctor": "0.1.0", "outcomes": outcomes}
    if pick == 6:
        manifest["outcomes"] = rng.choice(([], None, "denied", {"/proc": 1}, {"/proc": None}, {"/proc": ["denied"]}))
    if pick == 7:
        manifest = rng.choice(([], "x", 1, None, [{"outcomes": {}}]))
    if pick == 8:
        manifest["uid"] = rng.choice((True, False, -1, 0, 1000, 2**64, 1e999, "0", None, [0], 1.5))
    if pick == 9:
        manifest["hostname"] = rng.choice((MARKER, "x" * 100_000, None, 5, {"a": 1}))
        manifest["kernel"] = rng.choice(("../../..", None, 7, ["6.1"]))
    raw = json.dumps(manifest, allow_nan=True)
    if pick == 10:
        raw = raw.replace("1e+300", "1e999").replace("Infinity", "1e999")
        raw = raw[: rng.randrange(len(raw) + 1)] if rng.random() < 0.5 else raw + "\x00"
    if pick == 11:
        raw = '{"outcomes": {"/proc": "denied", "/proc": "missing"}, "uid": 1' + "0" * 5000 + "}"
    return {"op": "add", "path": path, "data": b2s(raw.encode("utf-8", "surrogateescape"))}


def _caps(rng, tree):
    """A file at, just below or just above a read cap."""
    path = _pick_file(rng, tree)
    if path is None:
        return None
    cap = rng.choice(CAPS)
    return {
        "op": "setsize",
        "path": path,
        "size": cap + rng.choice((-1, 0, 1)),
        "fill": rng.choice(("lines", "longline", "nonewline", "repeat")),
    }


def generate(rng, tree, heavy: bool = True):
    """One mutation for ``tree``: a dict, or None where the draw found nothing to change."""
    pick = rng.random()
    if pick < 0.42:
        mutation = _byte_level(rng, tree, heavy)
    elif pick < 0.68:
        mutation = _structure(rng, tree, heavy)
    elif pick < 0.88:
        mutation = _semantic(rng, tree)
    elif pick < 0.95:
        mutation = _plant(rng, tree)
    elif heavy:
        mutation = _caps(rng, tree)
    else:
        mutation = _byte_level(rng, tree, heavy)
    if mutation is not None and not heavy and _heavy(mutation):
        return None
    return mutation


def generate_heavy(rng, tree):
    """One mutation of the sizes that cost: at and beyond the read caps, a million blank lines,
    100,000 duplicate lines, 20,000 names in a folder, a manifest nested 100,000 deep."""
    path = _pick_file(rng, tree)
    pick = rng.randrange(7)
    if pick == 0 or path is None:
        return _caps(rng, tree) or _manifest(rng)
    data = tree[path][1]
    if pick == 1:
        return {"op": "repeat", "path": path, "pos": _pos(rng, data), "unit": "\n", "count": 1 << 20}
    if pick == 2:
        return {"op": "dupline", "path": path, "line": rng.randrange(len(_lines(data)) + 1), "count": 100_000}
    if pick == 3:
        return {
            "op": "longline",
            "path": path,
            "line": rng.randrange(len(_lines(data)) + 1),
            "len": rng.choice((1 << 20, 9 << 20)),
            "char": "x",
        }
    if pick == 4:
        return {
            "op": "many",
            "path": rng.choice(("/etc/sysctl.d", "/sys/block", "/sys/devices/system/cpu", "/boot")),
            "prefix": rng.choice(("cpu", "nvme", "x")),
            "count": 20_000,
            "data": "0\n",
            "kind": rng.choice("fdl"),
        }
    if pick == 5:
        return {
            "op": "deepjson",
            "path": "/.aidoctor/manifest.json",
            "depth": 100_000,
            "open": rng.choice("[{"),
            "wrap": rng.random() < 0.5,
        }
    return {
        "op": "repeat",
        "path": path,
        "pos": _pos(rng, data),
        "unit": rng.choice((" ", "#", "\x00", "a")),
        "count": rng.choice((80_000, 4 << 20)),
    }


def _heavy(mutation) -> bool:
    """Mutations that write megabytes: left out of the quick runs."""
    if mutation.get("op") == "batch":
        return any(_heavy(m) for m in mutation["ops"])
    if mutation["op"] == "setsize" and mutation["size"] > (1 << 20) + 1:
        return True
    if mutation["op"] == "longline" and mutation["len"] > (1 << 20):
        return True
    return False


# -- application -------------------------------------------------------------------------


def _file(tree, path):
    entry = tree.get(path)
    return entry if entry is not None and entry[0] == "f" else None


def _fill(size: int, how: str) -> bytes:
    if how == "lines":
        line = b"vm.swappiness = 10\n"
        data = line * (size // len(line) + 1)
        return data[:size]
    if how == "longline":
        return b"x" * (size - 1) + b"\n" if size else b""
    if how == "json":
        body = b'{"format": 1, "outcomes": {}, "pad": "'
        tail = b'"}\n'
        return body + b"p" * max(0, size - len(body) - len(tail)) + tail
    if how == "repeat":
        line = b"MemTotal:       67108864 kB\n"
        return (line * (size // len(line) + 1))[:size]
    return b"9" * size


def apply(tree: dict, m: dict) -> None:
    """Replay mutation ``m`` on ``tree``. A mutation whose file is gone (an earlier one replaced
    it) changes nothing: the same list always gives the same tree."""
    op = m["op"]
    path = m.get("path")
    if op == "batch":
        for inner in m["ops"]:
            apply(tree, inner)
        return
    if path is not None:
        path = trees.norm(path)
        if path is None:
            return
    entry = _file(tree, path) if path is not None else None
    if op in (
        "flip",
        "set",
        "insert",
        "delete",
        "dup",
        "truncate",
        "splice",
        "repeat",
        "dupline",
        "longline",
        "replace",
        "crlf",
        "nul_newlines",
        "append",
        "setsize",
    ):
        if entry is None:
            if op == "append" or op == "setsize" and path.startswith("/.aidoctor/"):
                trees.put_file(tree, path, b"")
                entry = _file(tree, path)
            if entry is None:
                return
        data = entry[1]
        pos = min(m.get("pos", 0), len(data))
        if op == "flip":
            if pos < len(data):
                data = data[:pos] + bytes([data[pos] ^ (1 << m["bit"])]) + data[pos + 1 :]
        elif op == "set":
            if pos < len(data):
                data = data[:pos] + bytes([m["byte"]]) + data[pos + 1 :]
        elif op == "insert":
            data = data[:pos] + s2b(m["data"]) + data[pos:]
        elif op == "append":
            data = data + (b"" if not data or data.endswith(b"\n") else b"\n") + s2b(m["data"])
        elif op == "delete":
            data = data[:pos] + data[pos + m["len"] :]
        elif op == "dup":
            piece = data[pos : pos + m["len"]]
            data = data[:pos] + piece * (m["times"] + 1) + data[pos + m["len"] :]
        elif op == "truncate":
            data = data[: m["len"]]
        elif op == "splice":
            other = _file(tree, m["from"])
            if other is None:
                return
            first, last = m["lines"]
            piece = _lines(other[1])[first:last]
            lines = _lines(data)
            at = min(m["at"], len(lines))
            data = b"\n".join(lines[:at] + piece + lines[at:])
        elif op == "repeat":
            data = data[:pos] + s2b(m["unit"]) * m["count"] + data[pos:]
        elif op == "dupline":
            lines = _lines(data)
            at = min(m["line"], max(0, len(lines) - 1))
            line = lines[at] if lines else b""
            data = b"\n".join(lines[:at] + [line] * m["count"] + lines[at + 1 :])
        elif op == "longline":
            lines = _lines(data)
            at = min(m["line"], len(lines))
            data = b"\n".join(lines[:at] + [m["char"].encode() * m["len"]] + lines[at:])
        elif op == "replace":
            data = data[:pos] + s2b(m["data"]) + data[pos + m["len"] :]
        elif op == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif op == "nul_newlines":
            data = data.replace(b"\n", b"\x00")
        elif op == "setsize":
            size = m["size"]
            if m["fill"] in ("json",):
                data = _fill(size, "json")
            elif len(data) >= size:
                data = data[:size]
            else:
                data = data + _fill(size - len(data), m["fill"])
                if m["fill"] == "nonewline":
                    data = data.replace(b"\n", b" ")
        entry[1] = data
        return
    if op == "add":
        trees.put_file(tree, path, s2b(m["data"]), m.get("mode", 0o644))
    elif op == "symlink":
        trees.put_link(tree, path, m["target"])
    elif op == "fifo":
        if trees.ensure_dirs(tree, path):
            trees.remove(tree, path)
            tree[path] = ["p", None, 0o644]
    elif op == "empty":
        if path in tree:
            trees.put_file(tree, path, b"")
    elif op == "todir":
        if path in tree:
            old = tree[path]
            trees.remove(tree, path)
            tree[path] = ["d", None, 0o755]
            if m.get("child"):
                tree[path + "/" + m["child"]] = ["f", old[1] if old[0] == "f" else b"", 0o644]
    elif op == "tofile":
        if path in tree and path != "/":
            trees.put_file(tree, path, s2b(m["data"]))
    elif op == "nest":
        if path in tree and tree[path][0] == "d":
            deep = path.rstrip("/") + ("/" + m["name"]) * m["depth"] + "/" + m["leaf"]
            trees.put_file(tree, deep, s2b(m["data"]))
    elif op == "chmod":
        if path in tree and tree[path][0] != "l":
            tree[path][2] = m["mode"]
    elif op == "remove":
        if path != "/":
            trees.remove(tree, path)
    elif op == "rename":
        to = trees.norm(m["to"])
        if to is not None and path in tree and path != "/" and to not in tree and trees.parent(to) == trees.parent(path):
            moved = {p: e for p, e in tree.items() if p == path or p.startswith(path + "/")}
            for p in moved:
                del tree[p]
            for p, e in moved.items():
                tree[to + p[len(path) :]] = e
    elif op == "many":
        if trees.ensure_dirs(tree, path + "/x") and tree.get(path, ["d"])[0] == "d":
            for index in range(m["count"]):
                where = "%s/%s%d" % (path, m["prefix"], index)
                if m["kind"] == "d":
                    tree[where] = ["d", None, 0o755]
                    tree[where + "/scheduler"] = ["f", s2b(m["data"]), 0o644]
                elif m["kind"] == "l":
                    tree[where] = ["l", "%s%d" % (m["prefix"], index + 1), 0o777]
                else:
                    tree[where] = ["f", s2b(m["data"]), 0o644]
    elif op == "linkchain":
        if entry is not None:
            data = entry[1]
            hops = ["%s.hop%d" % (path, i) for i in range(1, m["n"])]
            trees.put_file(tree, path + ".end", data)
            names = [path] + hops
            for index, name in enumerate(names):
                target = names[index + 1] if index + 1 < len(names) else path + ".end"
                tree[name] = ["l", target.rsplit("/", 1)[1], 0o777]
    elif op == "deepjson":
        depth = m["depth"]
        opener, closer = (b"[", b"]") if m["open"] == "[" else (b'{"a":', b"}")
        body = opener * depth + b"1" + closer * depth
        if m.get("wrap"):
            body = b'{"outcomes": {}, "x": ' + body + b"}"
        trees.put_file(tree, path, body)
    else:
        raise ValueError("unknown mutation %r" % op)


def describe(m: dict) -> str:
    """A short description of a mutation, for failure lines."""
    if m["op"] == "batch":
        return "+".join(describe(inner) for inner in m["ops"])
    words = [m["op"]]
    if "path" in m:
        words.append(repr(m["path"])[1:-1][:80])
    for key in ("target", "count", "size", "len", "depth", "mode", "n", "unit", "data"):
        if key in m:
            value = m[key]
            words.append("%s=%s" % (key, (repr(value)[:40]) if not isinstance(value, int) else value))
    return " ".join(words)
