"""Host trees held in memory: loaded from a fixture (or built), mutated, written out, listed.

A tree is a dict from target path (``/proc/meminfo``; names that are not UTF-8 are held with
surrogateescape) to an entry ``[kind, payload, mode]``: ``f`` a file (payload: bytes), ``d`` a
directory, ``l`` a symbolic link (payload: its target), ``p`` a FIFO. Every directory a path
needs is in the dict. Writing a tree out never follows a link it planted and never leaves the
folder it is given.
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

from ai_doctor.host import lexical

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "fixtures"

_CACHE = {}


def fixture_names():
    return sorted(p.parent.name for p in FIXTURES.glob("*/root") if p.is_dir())


def load_fixture(name: str) -> dict:
    """A fixture's tree (a fresh copy each call; the loaded one is kept)."""
    if name not in _CACHE:
        _CACHE[name] = load_dir(str(FIXTURES / name / "root"))
    return copy(_CACHE[name])


def copy(tree: dict) -> dict:
    return {path: list(entry) for path, entry in tree.items()}


def load_dir(root: str) -> dict:
    tree = {"/": ["d", None, 0o755]}
    for folder, dirs, files in os.walk(root):
        rel = "/" + os.path.relpath(folder, root).lstrip(".").lstrip("/")
        rel = "/" if rel == "/" else rel.rstrip("/")
        for name in dirs + files:
            full = os.path.join(folder, name)
            path = (rel.rstrip("/") + "/" + name) if rel != "/" else "/" + name
            info = os.lstat(full)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                tree[path] = ["l", os.readlink(full), 0o777]
            elif stat.S_ISDIR(info.st_mode):
                tree[path] = ["d", None, mode]
            elif stat.S_ISREG(info.st_mode):
                with open(full, "rb") as handle:
                    tree[path] = ["f", handle.read(), mode]
            elif stat.S_ISFIFO(info.st_mode):
                tree[path] = ["p", None, mode]
        # os.walk does not descend into links to directories: they are links here.
    return tree


MEMINFO = (
    "MemTotal:       67108864 kB\nMemFree:        50331648 kB\nMemAvailable:   62914560 kB\nCached:          8388608 kB\n"
    "SwapTotal:             0 kB\nSwapFree:              0 kB\nCommitLimit:    33554432 kB\nCommitted_AS:    4194304 kB\n"
    "HugePages_Total:       0\nHugePages_Free:        0\nHugePages_Rsvd:        0\nHugePages_Surp:        0\n"
    "Hugepagesize:       2048 kB\n"
)


def mini_host(release: str = "6.1.0-18-amd64") -> dict:
    """A running host with just enough for every rule to decide (as the suite's minimal_host),
    plus a little of everything the parsers read: small and cheap to write out."""
    files = {
        "/proc/meminfo": MEMINFO,
        "/proc/sys/kernel/osrelease": release + "\n",
        "/proc/sys/kernel/hostname": "fuzzhost\n",
        "/proc/sys/kernel/numa_balancing": "1\n",
        "/proc/sys/vm/overcommit_memory": "0\n",
        "/proc/sys/vm/overcommit_ratio": "50\n",
        "/proc/sys/vm/overcommit_kbytes": "0\n",
        "/proc/sys/vm/nr_hugepages": "0\n",
        "/proc/cmdline": "BOOT_IMAGE=/vmlinuz-%s root=/dev/sda1 ro quiet hugepages=16 transparent_hugepage=madvise\n" % release,
        "/proc/self/mountinfo": "26 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n22 26 0:21 / /proc rw - proc proc rw\n",
        "/proc/self/cgroup": "0::/user.slice\n",
        "/proc/1/comm": "systemd\n",
        "/proc/modules": "nvidia 56717312 0 - Live 0x0000000000000000 (POE)\n",
        "/sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never\n",
        "/sys/kernel/mm/transparent_hugepage/defrag": "always defer defer+madvise [madvise] never\n",
        "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages": "0\n",
        "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages": "0\n",
        "/sys/devices/system/cpu/online": "0-1\n",
        "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "powersave\n",
        "/sys/devices/system/cpu/cpufreq/policy0/scaling_driver": "acpi-cpufreq\n",
        "/sys/devices/system/cpu/cpufreq/policy0/affected_cpus": "0 1\n",
        "/sys/devices/system/node/online": "0-1\n",
        "/sys/block/nvme0n1/queue/scheduler": "[mq-deadline] none\n",
        "/sys/block/nvme0n1/mq/0/cpu_list": "0, 1\n",
        "/sys/fs/cgroup/user.slice/memory.max": "max\n",
        "/sys/module/nvidia/version": "535.161.07\n",
        "/boot/config-%s" % release: "CONFIG_HUGETLBFS=y\nCONFIG_HUGETLB_PAGE=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\n"
        "CONFIG_TRANSPARENT_HUGEPAGE_MADVISE=y\nCONFIG_CPU_FREQ_DEFAULT_GOV_SCHEDUTIL=y\n",
        "/boot/grub/grub.cfg": "menuentry 'Debian GNU/Linux' {\n\tlinux /vmlinuz-%s root=/dev/sda1 ro quiet\n}\n" % release,
        "/lib/modules/%s/modules.dep" % release: "updates/dkms/nvidia.ko: \nkernel/drivers/gpu/drm/nouveau/nouveau.ko:\n",
        "/etc/os-release": 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\n',
        "/etc/sysctl.conf": "vm.nr_hugepages = 16\nvm.overcommit_memory = 1\nvm.overcommit_ratio = 80\n",
        "/etc/sysctl.d/99-tuning.conf": "vm.swappiness = 10\nkernel.numa_balancing = 0\n",
        "/etc/default/grub": 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="hugepages=16"\n',
        "/etc/rc.local": "#!/bin/sh\necho never > /sys/kernel/mm/transparent_hugepage/enabled\nexit 0\n",
        "/etc/tuned/active_profile": "throughput-performance\n",
        "/etc/modprobe.d/blacklist-nouveau.conf": "blacklist nouveau\n",
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.535.161.07": "",
        "/var/lib/dkms/nvidia/535.161.07/source/dkms.conf": 'PACKAGE_VERSION="535.161.07"\n',
    }
    tree = {"/": ["d", None, 0o755]}
    for path, text in files.items():
        put_file(tree, path, text.encode("utf-8"))
    tree["/etc/rc.local"][2] = 0o755
    put_link(tree, "/boot/vmlinuz", "vmlinuz-" + release)
    put_file(tree, "/boot/vmlinuz-" + release, b"")
    put_link(tree, "/lib/modules/%s/updates/dkms/nvidia.ko" % release, "../../../../../../usr/src/nvidia.ko")
    return tree


def subset(tree: dict, ratio: float, seed: int) -> dict:
    """``tree`` with about ``ratio`` of its files and links dropped (directories stay, so
    listings still see them): a smaller tree, chosen by ``seed`` alone."""
    rng = random.Random(seed)
    kept = {}
    for path in sorted(tree):
        entry = tree[path]
        if entry[0] != "d" and not path.startswith("/.aidoctor/") and rng.random() < ratio:
            continue
        kept[path] = list(entry)
    return kept


def keep_only(tree: dict, paths) -> dict:
    """``tree`` with only the files and links in ``paths`` (and every directory)."""
    wanted = set(paths)
    return {p: list(e) for p, e in tree.items() if e[0] == "d" or p in wanted}


def norm(path: str):
    """A target path in one spelling, ``..`` stopping at the root; None for a path no file
    system can hold (a NUL byte)."""
    return None if "\x00" in path else lexical(path)


def parent(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


def ensure_dirs(tree: dict, path: str) -> bool:
    """Make every folder above ``path``; False where one of them is not a folder (a file, a
    link): the caller leaves the tree as it is."""
    parts = [p for p in path.split("/") if p][:-1]
    here = ""
    for part in parts:
        here += "/" + part
        entry = tree.get(here)
        if entry is None:
            tree[here] = ["d", None, 0o755]
        elif entry[0] != "d":
            return False
    return True


def put_file(tree: dict, path: str, data: bytes, mode: int = 0o644) -> bool:
    path = norm(path)
    if path is None or path == "/" or not ensure_dirs(tree, path):
        return False
    remove(tree, path)
    tree[path] = ["f", data, mode]
    return True


def put_link(tree: dict, path: str, target: str) -> bool:
    path = norm(path)
    if path is None or path == "/" or "\x00" in target or not ensure_dirs(tree, path):
        return False
    remove(tree, path)
    tree[path] = ["l", target, 0o777]
    return True


def remove(tree: dict, path: str) -> None:
    """Drop ``path`` and, for a folder, everything below it."""
    tree.pop(path, None)
    prefix = path.rstrip("/") + "/"
    for other in [p for p in tree if p.startswith(prefix)]:
        del tree[other]


def files(tree: dict):
    return sorted(p for p, e in tree.items() if e[0] == "f")


def size(tree: dict) -> int:
    return sum(len(e[1]) for e in tree.values() if e[0] == "f")


def materialize(tree: dict, root: str) -> int:
    """Write ``tree`` under ``root`` (which must not exist); returns how many entries could not
    be made (a name too long for this file system): the same tree always gives the same count
    under a root of the same length."""
    os.mkdir(root)
    broot = os.fsencode(root)
    failed = 0
    modes = []
    for path in sorted(tree, key=lambda p: (p.count("/"), p)):
        if path == "/":
            continue
        kind, payload, mode = tree[path]
        above = tree.get(parent(path))
        if above is None or above[0] != "d" or norm(path) != path:
            failed += 1  # never written through a link or outside the root
            continue
        real = broot + os.fsencode(path)
        try:
            if kind == "d":
                os.mkdir(real, 0o755)
                if mode != 0o755:
                    modes.append((real, mode))
            elif kind == "f":
                fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                try:
                    view = memoryview(payload)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                finally:
                    os.close(fd)
                if mode != 0o644:
                    modes.append((real, mode))
            elif kind == "l":
                os.symlink(os.fsencode(payload), real)
            elif kind == "p":
                os.mkfifo(real, 0o644)
                if mode != 0o644:
                    modes.append((real, mode))
        except OSError:
            failed += 1
    # Modes last, deepest first: a folder without x must not stop its own contents being made.
    for real, mode in sorted(modes, key=lambda item: -item[0].count(b"/")):
        try:
            os.chmod(real, mode, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass
    return failed


def listing(root: str, skip=()) -> dict:
    """Every entry under ``root`` (not following links): relative path → (kind, size, mtime,
    mode, link target). Folders named in ``skip`` (relative) are left out with their contents."""
    found = {}
    broot = os.fsencode(root)
    pending = [b""]
    skipped = {os.fsencode(s) for s in skip}
    while pending:
        rel = pending.pop()
        try:
            entries = list(os.scandir(broot + b"/" + rel if rel else broot))
        except OSError as exc:
            found[os.fsdecode(rel) + "/<unlistable>"] = ("?", exc.errno, 0, 0, None)
            continue
        for entry in entries:
            name = rel + b"/" + entry.name if rel else entry.name
            if name in skipped:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            kind = stat.S_IFMT(info.st_mode)
            target = None
            if stat.S_ISLNK(info.st_mode):
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    target = None
            key = os.fsdecode(name)
            if stat.S_ISDIR(info.st_mode):
                found[key] = (kind, 0, info.st_mtime_ns, stat.S_IMODE(info.st_mode), None)
                pending.append(name)
            else:
                found[key] = (kind, info.st_size, info.st_mtime_ns, stat.S_IMODE(info.st_mode), target)
    return found


def rmtree(path: str) -> None:
    """Remove a tree that may hold folders without permissions and FIFOs."""
    bpath = os.fsencode(path)
    try:
        info = os.lstat(bpath)
    except OSError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(bpath)
        return
    stack = [bpath]
    order = []
    while stack:
        folder = stack.pop()
        try:
            os.chmod(folder, 0o700)
        except OSError:
            pass
        order.append(folder)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass
    for folder in reversed(order):
        try:
            os.rmdir(folder)
        except OSError:
            pass
