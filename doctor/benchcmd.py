"""`aidoctor bench`: choose what to read, check it fits, measure, keep and compare."""

from __future__ import annotations

import os
import sys

from ai_doctor import bench, benchstore

TEMP_DIR = "/var/tmp"  # disk-backed where /tmp is often tmpfs, whose pages cannot be evicted


def parser(make_parser, formatter):
    command = make_parser(
        prog="aidoctor bench",
        formatter_class=formatter,
        description=(
            "Time model loading the ways loaders do it: cold and warm reads, reads into fresh memory with and without "
            "transparent huge pages (beside the time to touch as much fresh memory), mmap reading every byte, mmap touching a byte "
            "per page. Save a result, tune, run again and compare."
        ),
    )
    command.add_argument("paths", metavar="PATH", nargs="*", help="model files, or a folder of them (never written)")
    command.add_argument("--size", metavar="SIZE", help="measure a temporary file of this size instead (8G), removed afterwards")
    command.add_argument("--dir", metavar="DIR", default=TEMP_DIR, help="where --size creates its file (default %s)" % TEMP_DIR)
    command.add_argument("--repeat", metavar="N", type=int, default=3, help="runs per mode (default 3)")
    command.add_argument("--modes", metavar="LIST", help="the modes to run, comma-separated (default all: %s)" % ",".join(bench.MODES))
    command.add_argument("--format", choices=("text", "json"), default="text")
    command.add_argument("--save", metavar="LABEL", help="keep the result under LABEL (in %s)" % benchstore.folder())
    command.add_argument(
        "--compare", metavar="LABEL", help="compare with the result saved under LABEL (the same LABEL as --save: the first run saves it)"
    )
    command.add_argument("--list", action="store_true", help="list the saved results: label, when, what was measured")
    command.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    command.add_argument("--html", metavar="FILE", help="also write the result as an HTML page with a chart")
    return command


def run(args, usage_error, write) -> int:
    from ai_doctor.units import SizeError, gib, parse_size

    if args.list:
        if args.paths or args.size or args.save or args.compare or args.html or args.modes:
            raise usage_error("bench --list: takes no PATH, --size, --modes, --save, --compare or --html")
        return _list(args, write)
    if not args.paths and not args.size:
        raise usage_error(
            "bench: give model files or a folder (aidoctor bench PATH…), or a temporary file's size (aidoctor bench --size 8G)"
        )
    if args.paths and args.size:
        raise usage_error("bench: give model files or a folder (PATH …), or --size SIZE, not both")
    if not 1 <= args.repeat <= 100:
        raise usage_error("bench --repeat %d: give 1 to 100 runs" % args.repeat)
    chosen = _modes(args.modes, usage_error)
    first = False
    try:
        try:
            earlier = benchstore.load(args.compare) if args.compare is not None else None
        except benchstore.NotSaved:
            if args.compare != args.save:
                raise
            # `--compare LABEL --save LABEL` compares with the run before and keeps this one: the
            # first time there is nothing before it.
            earlier, first = None, True
        if args.save is not None:
            benchstore.check_label(args.save)  # refused before anything is measured
    except benchstore.StoreError as exc:
        raise usage_error(str(exc)) from None
    temporary = None
    try:
        if args.size:
            try:
                size = parse_size(_bytes_meant(args.size, usage_error))
            except SizeError as exc:
                raise usage_error("bench --size %s" % exc) from None
            _fits(size, args.dir, usage_error, gib, 2 if set(chosen) & set(bench.FRESH) else 1)
            _exit_on_signals()  # so the temporary file goes on SIGTERM and SIGHUP too
            temporary = _make_file(size, args.dir, usage_error, _writing)
            files = [temporary]
        else:
            try:
                files = bench.model_files(args.paths)
            except bench.BenchError as exc:
                raise usage_error("bench: %s" % exc) from None
        total = sum(os.path.getsize(path) for path in files)
        # The fresh-memory modes hold an area of the files' size beside their page cache.
        modes = chosen if 2 * total <= _available() * 0.9 else tuple(mode for mode in chosen if mode not in bench.FRESH)
        if not modes:
            raise usage_error(
                "bench --modes %s: an area of the files' size beside their page cache does not fit the memory available" % args.modes
            )
        progress = _progress(len(modes) * args.repeat)
        start = bench.sample()
        try:
            results = bench.measure(files, modes, args.repeat, progress)
        except OSError as exc:
            raise usage_error("bench: %s: %s" % (getattr(exc, "filename", None) or "reading", exc.strerror or exc)) from None
        finally:
            if progress is not None:
                progress.stop()
        machine = bench.between(start, bench.sample())
        found = benchstore.settings(files)  # while the temporary file still exists
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
    data = benchstore.document(results, files, args.repeat, temporary is not None, found, machine)
    if len(modes) < len(chosen):
        left_out = ", ".join(mode for mode in chosen if mode not in modes)
        data["skipped"] = "%s: an area of the files' size beside their page cache does not fit the memory available" % left_out
    comparison = benchstore.compare(earlier, dict(data, label=args.save)) if earlier is not None else None
    alone = None if comparison is not None else _alone(args, first)
    if args.save:
        try:
            benchstore.save(args.save, data)
        except benchstore.StoreError as exc:
            raise usage_error(str(exc)) from None
    from ai_doctor.reports import bench as render

    if args.html:
        write(args.html, render.html(data, comparison, args.save, alone, earlier))
    if args.format == "json":
        import json

        body = dict(data, comparison=comparison) if comparison is not None else data
        write(args.output, json.dumps(body, indent=2) + "\n")
    else:
        text = render.text(data, comparison, alone)
        if data.get("skipped"):
            text += "Skipped: %s\n" % data["skipped"]
        if os.geteuid() != 0:
            text += "Run as uid %d, not root: no mode needs root.\n" % os.geteuid()
        if args.save and comparison is not None:
            text += "Saved as %r; after a change, run again with --compare %s\n" % (args.save, args.save)
        write(args.output, text)
    return 0


def _alone(args, first: bool) -> str:
    """What a result with nothing to compare with says in place of a comparison."""
    if first:
        return "First run under %r: nothing was saved under it before; it is saved now, and the next --compare %s compares with it." % (
            args.save,
            args.save,
        )
    labels = [entry["label"] for entry in benchstore.saved()]
    others = [label for label in labels if label != args.save]
    listed = ", ".join(others[-5:]) + (" …" if len(others) > 5 else "")
    if args.save:
        if not labels:
            return "First saved result, with nothing earlier to compare with: after a change, run again with --compare %s." % args.save
        if not others:
            return "Saved as %r, over the result kept under it before; after a change, run again with --compare %s." % (
                args.save,
                args.save,
            )
        return "Saved as %r; after a change, run again with --compare %s. Also saved: %s (--list shows them)." % (
            args.save,
            args.save,
            listed,
        )
    if others:
        return "Not compared: --compare LABEL compares with a saved result (saved: %s; --list shows them)." % listed
    return (
        "First result, with nothing saved to compare with: keep it with --save LABEL, change a setting, and run again with --compare LABEL."
    )


def _list(args, write) -> int:
    from ai_doctor.reports import bench as render

    entries = benchstore.saved()
    if args.format == "json":
        import json

        write(args.output, json.dumps({"folder": benchstore.folder(), "saved": entries}, indent=2) + "\n")
    else:
        write(args.output, render.listing(entries, benchstore.folder()))
    return 0


def _modes(text, usage_error):
    """The modes asked for by ``--modes``, in the bench's order; all without it."""
    if text is None:
        return bench.MODES
    asked = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in asked if name not in bench.MODES]
    if unknown or not asked:
        raise usage_error("bench --modes %s: give some of %s, comma-separated" % (text, ",".join(bench.MODES)))
    return tuple(mode for mode in bench.MODES if mode in asked)


def _bytes_meant(text: str, usage_error) -> str:
    """``--size 70B`` reads as bytes to some and as a parameter count to others; bench measures bytes,
    so it says what to write for either."""
    import re

    match = re.fullmatch(r"\s*([0-9]{1,6}(?:\.[0-9]{1,3})?)\s*[bB]\s*", text)
    if not match:
        return text
    number = float(match.group(1))
    raise usage_error(
        "bench --size %s: B is ambiguous: bench takes bytes, as a plain number (%s) or with a unit (K, M, G, T, KiB…PiB, KB…PB); "
        "a %sB-parameter model's weights take %s at 16 bits (--size %s)"
        % (text.strip(), match.group(1), match.group(1), _decimal(number * 2e9), _decimal(number * 2e9).replace(" ", ""))
    )


def _decimal(value: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if value >= scale:
            return ("%.1f" % (value / scale)).rstrip("0").rstrip(".") + " " + unit
    return "%d B" % value


def _exit_on_signals() -> None:
    import signal

    def leave(number, _frame):
        raise SystemExit(128 + number)

    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, leave)


def _available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _fits(size: int, folder: str, usage_error, gib, copies: int = 2) -> None:
    """Refuse a ``--size`` that does not fit the free space, or memory ``copies`` times over
    (page cache, and the fresh-memory modes' area)."""
    if size <= 0:
        raise usage_error("bench --size: give a size above zero")
    try:
        stats = os.statvfs(folder)
    except OSError as exc:
        raise usage_error("bench --dir %s: %s" % (folder, exc.strerror or exc)) from None
    free = stats.f_bavail * stats.f_frsize
    if size + (1 << 30) > free:
        raise usage_error("bench --size %s: does not fit the free space in %s (%s free, 1 GiB kept spare)" % (gib(size), folder, gib(free)))
    available = _available()
    if available and copies * size > available * 0.9:
        held = "the fresh-memory modes hold twice that (page cache and area)" if copies == 2 else "its page cache would not stay warm"
        raise usage_error("bench --size %s: does not fit the memory available (%s): %s" % (gib(size), gib(available), held))


def _make_file(size: int, folder: str, usage_error, show=None) -> str:
    """A file of ``size`` bytes of data that compresses like model weights do (barely);
    ``show(size)`` gives the progress, told the bytes written after each block."""
    import tempfile

    try:
        fd, path = tempfile.mkstemp(prefix="aidoctor-bench-", suffix=".bin", dir=folder)
    except OSError as exc:
        raise usage_error("bench --dir %s: %s" % (folder, exc.strerror or exc)) from None
    progress = show(size) if show is not None else None
    try:
        block = os.urandom(bench.CHUNK)
        with os.fdopen(fd, "wb") as handle:
            left = size
            while left > 0:
                written = handle.write(block[: min(left, len(block))])
                left -= written
                if progress is not None:
                    progress(size - left)
            handle.flush()
            if progress is not None:
                progress.syncing()
            os.fsync(handle.fileno())  # written back, so the cold runs can evict it
    except BaseException:
        os.unlink(path)
        raise
    finally:
        if progress is not None:
            progress.stop()
    return path


class _Writing:
    """Bytes written of the temporary file, on stderr from the start (writing gigabytes takes
    a while before the first mode runs); stopped on any exit."""

    def __init__(self, size: int, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self.task = self.bar.add_task("writing the temporary file", total=size)
        self.bar.start()

    def __call__(self, done: int) -> None:
        self.bar.update(self.task, completed=done)

    def syncing(self) -> None:
        self.bar.update(self.task, description="writing it back to disk (fsync)")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _writing(size: int):
    """Progress of writing the temporary file on a terminal; nothing when piped."""
    return _Writing(size) if sys.stderr.isatty() else None


class _Bar:
    """A progress bar on stderr once the bench has run for a second; stopped on any exit, so
    an interrupted run leaves the cursor visible."""

    def __init__(self, steps: int):
        import time

        self.steps, self.done, self.bar, self.task = steps, 0, None, None
        self.started = time.monotonic()

    def __call__(self, mode: str) -> None:
        import time

        self.done += 1
        if self.bar is None and time.monotonic() - self.started > 1.0 and self.done < self.steps:
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(mode, total=self.steps, completed=self.done)
            self.bar.start()
        elif self.bar is not None:
            self.bar.update(self.task, advance=1, description=mode)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _progress(steps: int):
    """A progress bar on a terminal; nothing when piped."""
    return _Bar(steps) if sys.stderr.isatty() else None
