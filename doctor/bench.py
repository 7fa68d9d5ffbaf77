"""Timing model loading the ways loaders do it, so a tuning change can be seen to help or not.

Modes (each repeated, each run timed on its own):

- ``cold``: the files are evicted from the page cache first (posix_fadvise DONTNEED, which
  needs no root for clean pages; mincore() then says whether the eviction took), then read.
- ``warm``: read again from the page cache.
- ``anon``: read into a freshly allocated anonymous area, as torch.load and most loaders
  fill tensors: the page faults of the new memory are part of the cost.
- ``anon-thp``: the same with madvise(MADV_HUGEPAGE) on the area, so transparent huge
  pages back it where the THP mode allows (Documentation/admin-guide/mm/transhuge.rst).
- ``mmap``: map the files and read every byte through the mapping, as a safetensors load
  does: each mapped stretch is copied into the reused buffer (a C memcpy).
- ``mmap-touch``: map the files and touch one byte per page: the cost of mapping the cached
  pages in alone, what a lazy loader pays before the first use of a tensor.

Beside each anon mode the bench times the machine's fresh-memory floor: as many bytes of new
anonymous memory (with MADV_HUGEPAGE under anon-thp) written once per page, nothing read. Its
page faults and the kernel's zeroing are what make anon slower than warm.

Reads are large (16 MiB) with readinto(), so the numbers are the system's, not Python's, and
every copy lands page-aligned: the reused buffer and the fresh areas are mmap()s (page
boundaries), and in a fresh area each file starts at a page boundary. The kernel's copy from
the page cache runs several times slower when destination and source are misaligned (a
bytearray's data sits 16 bytes past a page boundary: 7 against 19 GB/s on the development VM).
Fresh memory is released after the clock stops, since a loader keeps it. The model files are
opened read-only and never written.

Around each mode the bench also notes how busy the machine was (:class:`Machine`): the 1-minute
load average before and after, and from /proc/stat's ``cpu`` line the share of all CPUs' time
that the hypervisor stole and that other work used (Documentation/filesystems/proc.rst,
"1.8 Miscellaneous kernel statistics in /proc/stat"), so a comparison can tell a setting's
effect from a neighbour's.
"""

from __future__ import annotations

import mmap
import os
import resource
import statistics
import time

from ai_doctor.record import Record

MODES = ("cold", "warm", "anon", "anon-thp", "mmap", "mmap-touch")
# The modes that read into fresh memory, each with the floor timed beside it: whether THP is asked for.
FRESH = {"anon": False, "anon-thp": True}
CHUNK = 16 << 20
PAGE = mmap.PAGESIZE
MODEL_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".npz")


class BenchError(ValueError):
    """Something about the request that makes the bench impossible (a one-line error)."""


class Run(Record):
    """One timed pass over the files: seconds, minor and major faults, CPU seconds."""

    __slots__ = ("seconds", "minor_faults", "major_faults", "cpu_seconds")


class Machine(Record):
    """How busy the machine was over ``seconds`` of the bench: the 1-minute load average before
    and after (of the whole machine, ``cpus`` CPUs), and the percent of all CPUs' time stolen by
    the hypervisor and used by work other than the bench. None where /proc did not say."""

    __slots__ = ("cpus", "load_before", "load_after", "steal_percent", "others_percent", "seconds")

    def as_dict(self) -> dict:
        rounded = {"load_before": 2, "load_after": 2, "steal_percent": 1, "others_percent": 1, "seconds": 3}
        return {
            name: (round(value, rounded[name]) if name in rounded and value is not None else value)
            for name, value in self._asdict().items()
        }


class Sample(Record):
    """The counters a :class:`Machine` is the difference of: monotonic time, the 1-minute load,
    the CPU count, /proc/stat's (busy, steal, total) clock ticks, and this process's CPU seconds."""

    __slots__ = ("when", "load", "cpus", "ticks", "own")


class ModeResult(Record):
    """The runs of one mode over ``size`` bytes; ``note`` says what did not go as asked (an
    eviction that did not take); ``first`` is the run before them, kept out of the spread;
    ``machine`` how busy the machine was over the mode; ``fresh``, for an anon mode, the
    fresh-memory floor timed beside it (a ModeResult of its own, mode ``fresh``)."""

    __slots__ = ("mode", "size", "runs", "note", "first", "machine", "fresh")
    _defaults = {"note": None, "first": None, "machine": None, "fresh": None}

    @property
    def seconds(self):
        return [run.seconds for run in self.runs]

    def rates(self):
        """GB/s of each run, slowest first (decimal GB, as disks are sold)."""
        return sorted(self.size / run.seconds / 1e9 for run in self.runs if run.seconds > 0)

    def gbps(self):
        """(min, median, max) GB/s over the runs."""
        rates = self.rates()
        if not rates:
            return (0.0, 0.0, 0.0)
        return (rates[0], statistics.median(rates), rates[-1])

    def quartiles(self):
        """(first, third) quartile of the runs' GB/s: the spread without a warm-up outlier."""
        rates = self.rates()
        if len(rates) < 2:
            value = rates[0] if rates else 0.0
            return (value, value)
        cuts = statistics.quantiles(rates, n=4, method="inclusive")
        return (cuts[0], cuts[2])

    def median(self, field: str):
        return statistics.median(getattr(run, field) for run in self.runs)


def model_files(paths):
    """The files to read: each file given, and the model files in each folder given (by
    suffix, or every regular file when none has one), each once. Refuses anything else."""
    found = []
    for path in paths:
        if os.path.isdir(path):  # a link to a folder (/models/current) counts as the folder
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                raise BenchError("%s: %s" % (path, exc.strerror or exc)) from None
            chosen = [n for n in names if n.endswith(MODEL_SUFFIXES)] or names
            files = [os.path.join(path, n) for n in chosen if _regular(os.path.join(path, n))]
            if not files:
                raise BenchError("%s: no model files in this folder (weights in subfolders are named one by one)" % path)
            found += files
        elif _regular(path):
            found.append(path)
        elif os.path.lexists(path) and not os.path.exists(path):
            raise BenchError("%s: a link to nothing" % path)
        elif not os.path.exists(path):
            try:
                os.stat(path)
            except OSError as exc:
                raise BenchError("%s: %s" % (path, exc.strerror or "no such file or folder")) from None
        else:
            raise BenchError("%s: not a regular file or a folder" % path)
    unique = []
    seen = set()
    for path in found:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    for path in unique:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise BenchError("%s: %s" % (path, exc.strerror or exc)) from None
    if not sum(os.path.getsize(path) for path in unique):
        raise BenchError("%s: empty: nothing to time" % ", ".join(paths))
    return unique


def _regular(path: str) -> bool:
    import stat

    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def parse_loadavg(text: str):
    """The 1-minute load average from /proc/loadavg's text (``0.52 0.58 0.59 1/467 12345``)."""
    try:
        value = float(text.split(None, 1)[0])
    except (ValueError, IndexError):
        return None
    return value if 0 <= value < 1e6 else None


def parse_stat(text: str):
    """(CPU count, (busy, steal, total) clock ticks) from /proc/stat's text; (0, None) where
    the ``cpu`` line is missing or odd. ``guest`` and ``guest_nice`` are already counted in
    ``user`` and ``nice``, so the total is the first eight columns; kernels before 2.6.11
    have no steal column (steal 0)."""
    cpus, ticks = 0, None
    for line in text.splitlines():
        if line.startswith("cpu "):
            fields = line.split()[1:9]
            if len(fields) >= 4 and all(field.isascii() and field.isdigit() for field in fields):
                numbers = [int(field) for field in fields] + [0] * (8 - len(fields))
                user, nice, system, idle, iowait, irq, softirq, steal = numbers
                ticks = (user + nice + system + irq + softirq, steal, sum(numbers))
        elif line.startswith("cpu") and line[3:4].isdigit():
            cpus += 1
    return cpus, ticks


def _text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read(1 << 20)
    except OSError:
        return ""


def sample() -> Sample:
    """The counters now (see :class:`Sample`)."""
    cpus, ticks = parse_stat(_text("/proc/stat"))
    own = resource.getrusage(resource.RUSAGE_SELF)
    return Sample(time.monotonic(), parse_loadavg(_text("/proc/loadavg")), cpus or os.cpu_count() or 1, ticks, own.ru_utime + own.ru_stime)


def between(start: Sample, end: Sample) -> Machine:
    """How busy the machine was from ``start`` to ``end``. Other work is the CPUs' busy time less
    this process's own (getrusage is exact, ticks are not, so it is never taken below zero)."""
    steal = others = None
    if start.ticks and end.ticks:
        busy, stolen, total = (after - before for after, before in zip(end.ticks, start.ticks))
        if total > 0:
            hertz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            steal = 100.0 * stolen / total
            others = 100.0 * max(0.0, busy / hertz - (end.own - start.own)) / (total / hertz)
            others = min(others, 100.0)
    return Machine(end.cpus, start.load, end.load, steal, others, max(0.0, end.when - start.when))


def _usage():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_majflt, usage.ru_utime + usage.ru_stime


def _timed(action) -> Run:
    minor, major, cpu = _usage()
    start = time.perf_counter()
    held = action()
    seconds = time.perf_counter() - start
    minor_after, major_after, cpu_after = _usage()
    if isinstance(held, mmap.mmap):
        held.close()  # fresh memory is released after the clock stops: a loader keeps it
    return Run(seconds, minor_after - minor, major_after - major, cpu_after - cpu)


def aligned(size: int) -> mmap.mmap:
    """``size`` bytes of new anonymous memory, starting at a page boundary (every mapping does)."""
    return mmap.mmap(-1, max(size, PAGE), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _fresh(size: int, huge: bool) -> mmap.mmap:
    area = aligned(size)
    if huge and hasattr(mmap, "MADV_HUGEPAGE"):  # Linux only; Python 3.8+
        area.madvise(mmap.MADV_HUGEPAGE)
    return area


def placement(sizes):
    """Where each file starts in a fresh area, and the area's size: each at a page boundary, so
    that every read lands at the same offset within a page as the page-cache data it copies."""
    starts, end = [], 0
    for size in sizes:
        starts.append(end)
        end += -(-size // PAGE) * PAGE
    return starts, max(end, PAGE)


def _read_all(files, buffer) -> None:
    view = memoryview(buffer)
    try:
        for path in files:
            with open(path, "rb", buffering=0) as handle:
                while handle.readinto(view):
                    pass
    finally:
        view.release()


def _read_into_fresh(files, starts, size: int, huge: bool) -> mmap.mmap:
    """The files read into one new anonymous area of ``size`` bytes, each from its start (see
    :func:`placement`), as a loader fills its tensors; the caller releases the area."""
    area = _fresh(size, huge)
    view = memoryview(area)
    try:
        for path, offset in zip(files, starts):
            with open(path, "rb", buffering=0) as handle:
                # A file that grew since it was sized stops at the end of the area (an empty view reads nothing).
                while True:
                    count = handle.readinto(view[offset : offset + CHUNK])
                    if not count:
                        break
                    offset += count
    except BaseException:
        view.release()
        area.close()
        raise
    view.release()
    return area


def _touch_fresh(size: int, huge: bool) -> mmap.mmap:
    """``size`` bytes of new anonymous memory written once per page, nothing read: the page
    faults and the kernel's zeroing alone, the floor under an anon mode. One C-level extended
    slice per 16 MiB, so no Python loop per page and no index as large as the area."""
    area = _fresh(size, huge)
    zeros = bytes(CHUNK // PAGE)
    for offset in range(0, size, CHUNK):
        end = min(offset + CHUNK, size)
        area[offset:end:PAGE] = zeros[: -(-(end - offset) // PAGE)]
    return area


def _mapped(files):
    """Each file that is not empty, mapped read-only in turn (unmapped when the next is asked for)."""
    for path in files:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size:
                with mmap.mmap(handle.fileno(), size, prot=mmap.PROT_READ) as area:
                    yield area


def _map_and_copy(files, buffer) -> int:
    """Every byte of the files read through a mapping of each, as a safetensors load reads its
    tensors: each 16 MiB stretch copied into ``buffer`` (memoryview slice assignment, a C
    memcpy between page-aligned addresses). Returns the bytes copied."""
    target = memoryview(buffer)
    copied = 0
    try:
        for area in _mapped(files):
            source = memoryview(area)
            try:
                for offset in range(0, len(area), len(target)):
                    count = min(len(target), len(area) - offset)
                    target[:count] = source[offset : offset + count]
                    copied += count
            finally:
                source.release()  # before the mapping is closed
    finally:
        target.release()
    return copied


def _map_and_touch(files) -> int:
    """Map the files and read one byte per page, gathered by one C-level slice per 16 MiB: every
    page is mapped in, nothing is copied. Returns the pages touched."""
    touched = 0
    for area in _mapped(files):
        for offset in range(0, len(area), CHUNK):
            touched += len(area[offset : offset + CHUNK : PAGE])
    return touched


def evict(files) -> float:
    """Drop the files' clean pages from the page cache; returns the fraction still resident."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return resident_fraction(files)


def resident_fraction(files):
    """The fraction of the files' pages in the page cache (mincore(2)); None where it cannot
    be told."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mincore = libc.mincore
    except (OSError, AttributeError):
        return None
    mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    resident = pages = 0
    for path in files:
        info = os.stat(path)
        if os.geteuid() != 0 and info.st_uid != os.geteuid() and not os.access(path, os.W_OK):
            # Since Linux 5.2 mincore() reports every page of a file the caller neither owns
            # nor may write as cached (CVE-2019-5489): it cannot tell.
            return None
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if not size:
                continue
            # A private (copy-on-write) mapping is writable to ctypes, which needs that to take
            # its address; nothing is written, so the file is never touched.
            with mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY) as area:
                count = (size + PAGE - 1) // PAGE
                vector = (ctypes.c_ubyte * count)()
                anchor = ctypes.c_char.from_buffer(area)
                try:
                    if mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vector) != 0:
                        return None
                finally:
                    del anchor
                resident += sum(byte & 1 for byte in vector)
                pages += count
    return resident / pages if pages else 0.0


def measure(files, modes=MODES, repeat: int = 3, progress=None):
    """Run each mode ``repeat`` times over ``files``, after one first run reported on its own;
    an anon mode's runs alternate with its fresh-memory floor's. ``progress(step)`` is told each run."""
    sizes = [os.path.getsize(path) for path in files]
    total = sum(sizes)
    starts, area = placement(sizes)
    buffer = aligned(CHUNK)
    actions = {
        "warm": lambda: _read_all(files, buffer),
        "cold": lambda: _read_all(files, buffer),
        "anon": lambda: _read_into_fresh(files, starts, area, False),
        "anon-thp": lambda: _read_into_fresh(files, starts, area, True),
        "mmap": lambda: _map_and_copy(files, buffer),
        "mmap-touch": lambda: _map_and_touch(files),
    }
    floors = {"anon": lambda: _touch_fresh(total, FRESH["anon"]), "anon-thp": lambda: _touch_fresh(total, FRESH["anon-thp"])}
    results = []
    try:
        for mode in modes:
            runs, floor = [], []
            note = first = floor_first = None
            before = sample()
            # One untimed-for-the-verdict first run: its cost (compaction for the first huge
            # pages, a cold TLB) is real for a first load, so it is reported on its own.
            for index in range(repeat + 1):
                if mode == "cold":
                    left = evict(files)
                    if left is None and note is None and os.geteuid() != 0:
                        note = "whether the eviction took cannot be checked for a file of another user (mincore hides it)"
                    elif left is not None and left > 0.01:
                        note = "eviction left %.0f%% of the pages cached, so these reads are partly warm: pages not yet " % (left * 100)
                        note += "written back (run sync first), mapped by a running process, or kept in memory by tmpfs"
                else:
                    _read_all(files, buffer)  # every mode but cold starts from the page cache
                run = _timed(actions[mode])
                touched = _timed(floors[mode]) if mode in floors else None
                if index == 0:
                    first, floor_first = run, touched
                    continue
                runs.append(run)
                if touched is not None:
                    floor.append(touched)
                if progress is not None:
                    progress(mode)
            fresh = ModeResult("fresh", total, tuple(floor), None, floor_first) if mode in floors else None
            results.append(ModeResult(mode, total, tuple(runs), note, first, between(before, sample()), fresh))
    finally:
        buffer.close()
    return results
