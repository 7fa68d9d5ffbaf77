"""Running one case: its inputs written into a private sandbox, the command lines run in-process
(``ai_doctor.cli.main``) in a forked child with a time limit and a memory cap, and the oracles.

The sandbox of a case holds ``tree/`` (the host tree), ``in/`` (archives, reports), ``out/``
(the named outputs), ``tmp/`` (the child's TMPDIR, to be empty after each run), ``home/``
(its HOME) and ``cache/`` (its XDG_CACHE_HOME, the one place it may write unasked). The child
runs there (its working directory), so a stray relative write lands where it is seen.

A failure is a dict: ``oracle`` (see ORACLES), ``key`` (what deduplicates it: the oracle, the
exception type and the last frame in aidoctor's code, or what differs), ``run`` (which command
line), ``detail``.
"""

from __future__ import annotations

import errno
import faulthandler
import io
import json
import os
import re
import resource
import select
import signal
import sys
import tempfile
import time
import traceback

from aidfuzz import archives, cases, reports, trees
from aidfuzz.mutators import MARKERS

ORACLES = {
    "crash": "an exception escaped aidoctor (exit 3 without AIDOCTOR_DEBUG)",
    "rule-error": "a check ended in status error",
    "exit-code": "an exit code other than 0, 1, 2",
    "usage-lines": "exit 2 without exactly one line on stderr",
    "long-line": "an error line longer than the limit",
    "timeout": "a run over its time limit",
    "memory": "a MemoryError, or killed near the memory cap",
    "killed": "the run died of a signal",
    "json": "JSON output (or a JSON report file) that does not parse",
    "xml": "a JUnit file that does not parse",
    "exit-mismatch": "the JSON summary's exit_code is not the exit code",
    "npd": "node-problem-detector output not one line of at most 80 bytes",
    "escape": "a marker planted in host text shows raw in HTML or Markdown",
    "wrote-outside": "something written outside the named outputs",
    "input-changed": "the tree (or an input, or an earlier output) changed",
    "temp-left": "a temporary file or folder left behind",
    "snapshot-refused": "snapshot refused a tree the checkup reads",
    "replay-refused": "a snapshot that was written is refused when replayed",
    "replay-mismatch": "a replay's findings or check statuses differ from the direct run",
}

LINE_LIMIT = 300
_PRODUCT_DIRS = ()
RULE_ERRORS = []
_BASE_REPORTS = {}


def product_dirs():
    global _PRODUCT_DIRS
    if not _PRODUCT_DIRS:
        import ai_doctor
        import ai_doctor.reports
        import ai_doctor.rules

        dirs = {os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (ai_doctor, ai_doctor.rules, ai_doctor.reports)}
        _PRODUCT_DIRS = tuple(sorted(dirs))
    return _PRODUCT_DIRS


def _where(filename: str) -> str:
    for base in product_dirs():
        if filename.startswith(base):
            return os.path.basename(base.rstrip(os.sep)) + "/" + filename[len(base) :]
    return filename


def our_frame(frames):
    """The innermost frame in aidoctor's own code: ``doctor/host.py:123 in _read`` (the folder
    named as in the checkout), or the innermost frame at all where none is ours."""
    dirs = product_dirs()
    chosen = None
    for frame in frames:
        filename, lineno, name = frame[0], frame[1], frame[2]
        if filename.startswith(dirs):
            chosen = (filename, lineno, name)
    if chosen is None and frames:
        chosen = tuple(frames[-1][:3])
    if chosen is None:
        return "?"
    return "%s:%s in %s" % (_where(chosen[0]), chosen[1], chosen[2])


# -- the worker: everything imported once, rule errors recorded with their traceback ----------


def prepare_worker(warm: bool = True) -> None:
    """Import aidoctor and everything a run may import, record rule errors' tracebacks, keep one
    Jinja environment (building it for each report costs more than the run), warm up."""
    import ai_doctor.archive  # noqa: F401
    import ai_doctor.checkup  # noqa: F401
    import ai_doctor.cli  # noqa: F401
    import ai_doctor.fixcmd  # noqa: F401
    import ai_doctor.fleet  # noqa: F401
    import ai_doctor.nextboot  # noqa: F401
    import ai_doctor.snapshot  # noqa: F401
    from ai_doctor import engine
    from ai_doctor.reports import html

    for name in ("json", "html", "markdown", "npd", "junit", "sarif", "prometheus", "fleet", "fixscript", "text"):
        __import__("ai_doctor.reports." + name)
    engine.load_rules()
    if not getattr(engine._describe_error, "_fuzz", False):
        original = engine._describe_error

        def describe_error(exc):
            RULE_ERRORS.append((type(exc).__name__, str(exc)[:300], traceback.extract_tb(exc.__traceback__)))
            return original(exc)

        describe_error._fuzz = True
        engine._describe_error = describe_error
    if not getattr(html.environment, "_fuzz", False):
        made = html.environment()

        def environment():
            return made

        environment._fuzz = True
        html.environment = environment
    # Everything aidoctor imports lazily, and the codecs it names: after --as-user drops root,
    # an interpreter under /root can no longer be read, so nothing may be left to import.
    lazy = ("elftools.elf.elffile", "elftools.common.exceptions", "jinja2", "gzip", "bz2", "lzma", "tarfile", "xml.etree.ElementTree",
            "shutil", "compression", "ctypes", "datetime", "fnmatch", "glob", "hashlib", "math", "packaging.version", "secrets", "shlex",
            "subprocess", "textwrap", "threading", "urllib.parse", "zstandard", "encodings.utf_8_sig", "encodings.latin_1",
            "encodings.ascii", "encodings.idna", "encodings.utf_16", "encodings.utf_32", "encodings.cp1252")  # fmt: skip
    for name in lazy:
        try:
            __import__(name)
        except ImportError:
            pass
    product_dirs()
    if not warm:
        return
    # Warm up: a fixture in every format, so the children fork with everything compiled.
    for fmt in ("json", "html", "markdown"):
        _in_process(["--root", str(trees.FIXTURES / "healthy-tuned" / "root"), "--model-size", "8G", "--format", fmt])
    base_report("healthy-tuned", cases.MODEL)


def _in_process(argv):
    from ai_doctor import cli

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        code = cli.main(list(argv))
        return code, sys.stdout.getvalue()
    except Exception:  # noqa: BLE001 - a base report that cannot be made is replaced below
        return 3, ""
    finally:
        sys.stdout, sys.stderr = saved


def base_report(fixture: str, args) -> dict:
    """A fixture's JSON report, made once per worker."""
    key = (fixture, tuple(args))
    if key not in _BASE_REPORTS:
        old = os.environ.get("AIDOCTOR_DEBUG")
        os.environ.pop("AIDOCTOR_DEBUG", None)
        code, out = _in_process(["--root", str(trees.FIXTURES / fixture / "root")] + list(args) + ["--format", "json"])
        if old is not None:
            os.environ["AIDOCTOR_DEBUG"] = old
        try:
            report = json.loads(out)
        except ValueError:
            report = {
                "schema": "aidoctor.report/1",
                "host": {"hostname": fixture},
                "findings": [],
                "checks": [],
                "summary": {"exit_code": code},
            }
        _BASE_REPORTS[key] = report
    return json.loads(json.dumps(_BASE_REPORTS[key]))


# -- inputs -------------------------------------------------------------------------------


def prepare(recipe: dict, sandbox: str) -> dict:
    """Write the case's inputs under ``sandbox``; returns the placeholders of its command lines."""
    os.mkdir(sandbox, 0o755)
    for sub in ("in", "out", "tmp", "home", "cache"):
        os.mkdir(os.path.join(sandbox, sub), 0o755)
    spec = recipe.get("archive")
    if recipe["target"] == "merge":
        os.mkdir(os.path.join(sandbox, "tree"))
    elif spec is None:
        tree = cases.build_tree(recipe)
        trees.materialize(tree, os.path.join(sandbox, "tree"))
    else:
        os.mkdir(os.path.join(sandbox, "tree"))
        data, file_size = archives.build(spec, cases.build_tree(recipe))
        path = os.path.join(sandbox, "in", "host.tar.gz")
        with open(path, "wb") as handle:
            handle.write(data)
        if file_size:
            os.truncate(path, file_size)
    for index, item in enumerate(recipe.get("reports") or ()):
        report = base_report(item["fixture"], item.get("args", cases.MODEL))
        for mutation in item.get("mutations", ()):
            report = reports.apply(report, mutation)
        data = reports.serialize(report)
        for op in item.get("bytes", ()):
            data = reports.apply_bytes(data, op)
        with open(os.path.join(sandbox, "in", "r%d.json" % index), "wb") as handle:
            handle.write(data)
    return {"{TREE}": os.path.join(sandbox, "tree"), "{OUT}": os.path.join(sandbox, "out"), "{IN}": os.path.join(sandbox, "in")}


def _argv(run, places):
    out = []
    for word in run["argv"]:
        for key, value in places.items():
            word = word.replace(key, value)
        out.append(word)
    return out


# -- the child ----------------------------------------------------------------------------


def _send(fd: int, message: dict) -> None:
    data = b"\x1e" + json.dumps(message, default=str).encode("utf-8", "backslashreplace") + b"\n"
    while data:
        try:
            written = os.write(fd, data)
        except InterruptedError:
            continue
        data = data[written:]


def _vmsize() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * resource.getpagesize()


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


class _Capture(io.TextIOWrapper):
    """What a run writes to stdout or stderr, as a UTF-8 stream that is not a terminal."""

    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8", errors="strict", newline="\n", write_through=True)

    def text(self) -> str:
        try:
            self.flush()
        except (ValueError, OSError):
            pass
        return self.buffer.getvalue().decode("utf-8", "backslashreplace")


def _invoke(argv):
    from ai_doctor import cli

    RULE_ERRORS.clear()
    out, err = _Capture(), _Capture()
    sys.stdout, sys.stderr = out, err
    tb = None
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - every escape is a finding
        code = 3
        tb = (type(exc).__name__, str(exc)[:500], traceback.extract_tb(exc.__traceback__))
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    return code, out.text(), err.text(), tb


def _short(text: str, size: int = 400) -> str:
    return text if len(text) <= size else text[:size] + "…(%d chars)" % len(text)


def _normal_message(text: str) -> str:
    """A message with its variable parts (paths, numbers, quoted names) taken out, for keys."""
    text = re.sub(r"'[^']*'(?:\.\.\.|…)?|\"[^\"]*\"(?:\.\.\.|…)?", "Q", text)
    text = re.sub(r"(/[^\s:,;()]*)+", "P", text)
    text = re.sub(r"\d+", "N", text)
    return text[:60]


def _frames_text(frames) -> list:
    return ["%s:%s in %s" % (_where(f[0]), f[1], f[2]) for f in frames[-8:]]


def _summary(doc):
    if not isinstance(doc, dict):
        return None
    try:
        findings = sorted([str(f.get("rule")), str(f.get("severity"))] for f in doc.get("findings", ()))
        statuses = {str(c.get("rule")): str(c.get("status")) for c in doc.get("checks", ())}
    except (AttributeError, TypeError):
        return None
    return {"findings": findings, "statuses": statuses}


# Every marker holds "<x-fuzz" or "<script>x-fuzz": raw, either is a tag a browser makes.
assert all("<x-fuzz" in m or "<script>x-fuzz" in m for m in MARKERS)
_RAW = re.compile(r"<x-fuzz|<script>x-fuzz")


def _markdown_prose(text: str) -> str:
    """Markdown with fenced blocks and code spans taken out: what a viewer renders as HTML."""
    text = re.sub(r"(?ms)^[ \t]*(```+|~~~+).*?^[ \t]*\1[^\n]*$", "", text)
    return re.sub(r"(?<!\\)(`+)(?:(?!\1)[^\n])+?\1", "", text)


def _check_run(run, code, out, err, tb, sandbox, elapsed):
    failures = []
    shown_err = err.replace(sandbox, "S")
    lines = [line for line in shown_err.splitlines()]
    fmt = run.get("format")

    def fail(oracle, key, detail):
        failures.append({"oracle": oracle, "key": [oracle] + list(key), "detail": detail})

    if tb is not None:
        kind, message, frames = tb
        oracle = "memory" if kind == "MemoryError" else "crash"
        fail(oracle, [kind, our_frame(frames)], "%s: %s; at %s" % (kind, _short(message, 300), " <- ".join(reversed(_frames_text(frames)))))
    elif code not in (0, 1, 2):
        fail("exit-code", [str(code), _normal_message(shown_err)], "exit %s: %s" % (code, _short(shown_err)))
    for kind, message, frames in RULE_ERRORS:
        oracle = "memory" if kind == "MemoryError" else "rule-error"
        fail(oracle, [kind, our_frame(frames)], "%s: %s; at %s" % (kind, _short(message, 300), " <- ".join(reversed(_frames_text(frames)))))
    # npd says "could not decide" with exit 2 and its line on stdout when a check failed to run
    # (that check is a rule-error already).
    npd_unknown = fmt == "npd" and not lines and out.startswith("unknown:")
    if code == 2 and tb is None and not npd_unknown and (len(lines) != 1 or not lines[0].strip()):
        fail("usage-lines", [fmt or "", str(len(lines))], "exit 2 with %d stderr lines: %s" % (len(lines), _short(shown_err)))
    for line in lines:
        if len(line) > LINE_LIMIT:
            fail("long-line", [_normal_message(line)], "a %d-character stderr line: %s" % (len(line), _short(line, 200)))
            break
    summary = None
    if fmt in ("json", "json-plan") and code in (0, 1):
        try:
            doc = json.loads(out)
        except ValueError as exc:
            fail("json", [fmt], "stdout is not JSON (%s): %s" % (exc, _short(out, 200)))
            doc = None
        if fmt == "json" and doc is not None:
            summary = _summary(doc)
            errors = [c for c in doc.get("checks", ()) if isinstance(c, dict) and c.get("status") == "error"]
            if errors and not RULE_ERRORS:
                for check in errors:
                    fail("rule-error", ["?", str(check.get("rule"))], "%s: %s" % (check.get("rule"), _short(str(check.get("reason")), 300)))
            exit_code = (doc.get("summary") or {}).get("exit_code") if isinstance(doc.get("summary"), dict) else None
            if "merge" not in run["argv"][:1] and exit_code is not None and exit_code != code:
                fail("exit-mismatch", [], "summary.exit_code %r, exit code %r" % (exit_code, code))
    if fmt in ("html", "markdown") and code in (0, 1):
        found = _RAW.search(out if fmt == "html" else _markdown_prose(out))
        if found:
            at = found.start()
            fail(
                "escape",
                [fmt, run["argv"][0] if run["argv"][0] == "merge" else "check"],
                "raw marker in %s output: …%s…" % (fmt, _short(out[max(0, at - 120) : at + 60], 300)),
            )
    if fmt == "npd":
        data = out.encode("utf-8")
        if code in (0, 1, 2) and (data.count(b"\n") != 1 or not data.endswith(b"\n") or len(data) - 1 > 80):
            fail("npd", [], "npd output %r" % _short(out, 200))
    for rel, kind in (run.get("files") or {}).items():
        if code not in (0, 1):
            break
        path = os.path.join(sandbox, rel)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            fail("wrote-outside", ["missing-output", rel], "%s not written: %s" % (rel, exc))
            continue
        text = data.decode("utf-8", "replace")
        if kind == "json":
            try:
                json.loads(text)
            except ValueError as exc:
                fail("json", [rel], "%s is not JSON: %s" % (rel, exc))
        elif kind == "xml":
            import xml.etree.ElementTree as ElementTree

            try:
                ElementTree.fromstring(data)
            except ElementTree.ParseError as exc:
                fail("xml", [rel], "%s is not XML: %s" % (rel, exc))
        elif kind == "html":
            found = _RAW.search(text)
            if found:
                fail(
                    "escape",
                    ["html-file"],
                    "raw marker in %s: …%s…" % (rel, _short(text[max(0, found.start() - 120) : found.start() + 60], 300)),
                )
    unique = {}
    for failure in failures:
        unique.setdefault(tuple(failure["key"]), failure)  # one rule error per key, not one per rule
    return list(unique.values()), summary


def _diff(before: dict, after: dict, allowed, sandbox_outputs):
    """Entries that changed, appeared or went, outside ``allowed`` (relative paths, with what
    lies below them)."""
    changed = []
    for path in sorted(set(before) | set(after)):
        if any(path == a or path.startswith(a + "/") for a in allowed):
            continue
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is not None and new is not None and path in ("tmp", "out", "home", "in", "tree") and old[0] == new[0] and old[3] == new[3]:
            continue  # a folder's own times change when something in it comes and goes
        changed.append((path, old, new))
    return changed


def _classify(path: str, outputs_so_far) -> str:
    if path.startswith("tmp/"):
        return "temp-left"
    if path.startswith(("tree/", "in/")) or path in ("tree", "in") or any(path == o or path.startswith(o + "/") for o in outputs_so_far):
        return "input-changed"
    return "wrote-outside"


def _child(recipe, sandbox, places, wfd, limits, before):
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cap = limits.get("memory_mib", 512) << 20
        if cap:
            ceiling = _vmsize() + cap
            resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 30, 3 << 30))
        os.environ.update(
            XDG_CACHE_HOME=os.path.join(sandbox, "cache"),
            HOME=os.path.join(sandbox, "home"),
            TMPDIR=os.path.join(sandbox, "tmp"),
            AIDOCTOR_DEBUG="1",
        )
        for name in ("NO_COLOR", "AIDOCTOR_NO_CACHE", "XDG_STATE_HOME", "AIDOCTOR_PROVE_TREES"):
            os.environ.pop(name, None)
        tempfile.tempdir = os.path.join(sandbox, "tmp")
        os.chdir(sandbox)
        # The time limit: SIGALRM makes faulthandler (a C handler, so even inside a regex or a
        # decompressor) write the stack to the pipe, then the default action ends the child.
        faulthandler.register(signal.SIGALRM, file=wfd, all_threads=True, chain=True)
        state = before
        outputs = []
        direct = None
        snapshot_code = None
        timeout = limits.get("timeout") or recipe.get("timeout", 10)
        rss0 = _rss()
        for index, run in enumerate(recipe["runs"]):
            argv = _argv(run, places)
            _send(wfd, {"ev": "start", "run": index})
            signal.setitimer(signal.ITIMER_REAL, timeout)
            started = time.perf_counter()
            code, out, err, tb = _invoke(argv)
            elapsed = time.perf_counter() - started
            signal.setitimer(signal.ITIMER_REAL, 0)
            failures, summary = _check_run(run, code, out, err, tb, sandbox, elapsed)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
            if cap and peak > cap * 0.8 and tb is None:
                failures.append(
                    {"oracle": "memory", "key": ["memory", "peak", run["argv"][0]], "detail": "peak RSS grew by %d MiB" % (peak >> 20)}
                )
            declared = [o for o in run.get("outputs", ())]
            # The sandbox is listed after each run that writes (or may: fix, snapshot, merge)
            # and after the last; a change seen there is put on the run just made.
            last = index == len(recipe["runs"]) - 1
            after = trees.listing(sandbox, skip=("cache",)) if declared or last or argv[0] in ("snapshot", "fix", "merge") else state
            for path, old, new in _diff(state, after, declared, outputs)[:5]:
                oracle = _classify(path, outputs)
                top = path.split("/")[0] + ("/" + path.split("/")[1] if "/" in path else "")
                what = "appeared" if old is None else "went" if new is None else "changed"
                failures.append(
                    {
                        "oracle": oracle,
                        "key": [
                            oracle,
                            run["argv"][0] if run["argv"][0] in ("snapshot", "merge", "fix") else "check",
                            re.sub(r"\d+", "N", top),
                        ],
                        "detail": "%s %s (%s -> %s)" % (path, what, old, new),
                    }
                )
            state = after
            outputs.extend(declared)
            role = run.get("role")
            if role == "direct":
                direct = {"code": code, "summary": summary}
            if role == "snapshot":
                snapshot_code = code
            if role == "snapshot" and direct is not None and direct["code"] in (0, 1) and code != 0 and tb is None:
                failures.append(
                    {
                        "oracle": "snapshot-refused",
                        "key": ["snapshot-refused", _normal_message(err.replace(sandbox, "S"))],
                        "detail": "exit %s: %s" % (code, _short(err.replace(sandbox, "S"), 300)),
                    }
                )
            elif role == "replay" and direct is not None and direct["code"] in (0, 1):
                failures.extend(_compare(run, direct, code, summary, err.replace(sandbox, "S"), tb, snapshot_code))
            for failure in failures:
                failure.update(
                    run=index,
                    argv=[a.replace(sandbox, "S") for a in argv],
                    stderr=_short(err.replace(sandbox, "S"), 600),
                    seconds=round(elapsed, 3),
                )
            _send(wfd, {"ev": "done", "run": index, "code": code, "failures": failures, "seconds": elapsed})
        _send(wfd, {"ev": "end"})
    except BaseException as exc:  # noqa: BLE001 - the harness itself: reported, never hidden
        try:
            _send(wfd, {"ev": "harness", "error": "%s: %s" % (type(exc).__name__, exc), "trace": traceback.format_exc()[-3000:]})
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(0)


def _compare(run, direct, code, summary, err, tb, snapshot_code):
    via = run.get("via", "dir")
    if tb is not None or snapshot_code != 0:
        return []  # an exception is its own failure; a refused snapshot was said already
    if code not in (0, 1):
        return [
            {
                "oracle": "replay-refused",
                "key": ["replay-refused", via, _normal_message(err)],
                "detail": "exit %s: %s" % (code, _short(err, 300)),
            }
        ]
    if summary is None or direct["summary"] is None:
        return []
    mine, theirs = summary, direct["summary"]
    if mine == theirs:
        return []
    gone = [f for f in theirs["findings"] if f not in mine["findings"]]
    new = [f for f in mine["findings"] if f not in theirs["findings"]]
    rules = sorted(r for r in set(mine["statuses"]) | set(theirs["statuses"]) if mine["statuses"].get(r) != theirs["statuses"].get(r))
    # One failure per replay, named by the first check whose status differs (else finding).
    first = rules[0] if rules else (gone or new or [["?", "?"]])[0][0]
    statuses = ", ".join("%s %s->%s" % (r, theirs["statuses"].get(r), mine["statuses"].get(r)) for r in rules)
    detail = "statuses differ: %s; findings only direct %s, only replay %s" % (statuses or "none", gone, new)
    return [{"oracle": "replay-mismatch", "key": ["replay-mismatch", via, first], "detail": detail}]


# -- the parent side ----------------------------------------------------------------------


_PLUMBING = ("doctor/record.py", "doctor/facts/__init__.py", "doctor/engine.py", "doctor/host.py")


def _timeout_frame(text: str):
    """The innermost frame of ours in a faulthandler dump (most recent call first), past the
    plumbing every read and fact goes through; without its line, since a stack caught at an
    instant is in one place of a slow function or another."""
    dirs = product_dirs()
    for match in re.finditer(r'File "([^"]+)", line (\d+) in (\S+)', text):
        if match.group(1).startswith(dirs) and not _where(match.group(1)).startswith(_PLUMBING):
            return "%s in %s" % (_where(match.group(1)), match.group(3))
    match = re.search(r'File "([^"]+)", line (\d+) in (\S+)', text)
    return "%s:%s in %s" % (_where(match.group(1)), match.group(2), match.group(3)) if match else "?"


def execute(recipe: dict, workdir: str, limits=None, number: int = 0) -> dict:
    """Run ``recipe`` in a sandbox under ``workdir``; returns {"execs", "failures", "seconds"}."""
    limits = dict(limits or {})
    sandbox = os.path.join(workdir, "c%09d" % number)
    if os.path.lexists(sandbox):
        trees.rmtree(sandbox)
    started = time.perf_counter()
    try:
        places = prepare(recipe, sandbox)
        before = trees.listing(sandbox, skip=("cache",))
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read_fd)
            _child(recipe, sandbox, places, write_fd, limits, before)
        os.close(write_fd)
        timeout = limits.get("timeout") or recipe.get("timeout", 10)
        deadline = time.monotonic() + timeout * len(recipe["runs"]) + 15
        chunks = []
        killed = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if ready:
                try:
                    data = os.read(read_fd, 1 << 16)
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                if not data:
                    break
                chunks.append(data)
        _, status = os.waitpid(pid, 0)
        os.close(read_fd)
        return _interpret(recipe, b"".join(chunks), status, killed, sandbox, started)
    finally:
        trees.rmtree(sandbox)


def _interpret(recipe, data, status, killed, sandbox, started):
    events = []
    text = []
    for line in data.split(b"\n"):
        if line.startswith(b"\x1e"):
            try:
                events.append(json.loads(line[1:].decode("utf-8")))
            except ValueError:
                text.append(line.decode("utf-8", "replace"))
        elif line:
            text.append(line.decode("utf-8", "replace"))
    dump = "\n".join(text)
    failures = []
    starts = [e["run"] for e in events if e["ev"] == "start"]
    done = {e["run"] for e in events if e["ev"] == "done"}
    for event in events:
        if event["ev"] == "done":
            failures.extend(event["failures"])
        elif event["ev"] == "harness":
            raise RuntimeError("the fuzz harness failed in the child: %s\n%s" % (event["error"], event["trace"]))
    ended = any(e["ev"] == "end" for e in events)
    if not ended:
        run = starts[-1] if starts else 0
        hung = run not in done
        argv = recipe["runs"][run]["argv"] if run < len(recipe["runs"]) else []
        word = argv[0] if argv and argv[0] in ("snapshot", "merge", "fix") else "check"
        if killed or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM):
            oracle, detail = "timeout", "over the time limit; %s" % _short(dump.replace(sandbox, "S"), 1500)
            key = ["timeout", word, _timeout_frame(dump)]
        elif os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            oracle = "memory" if signum in (signal.SIGKILL, signal.SIGSEGV) else "killed"
            detail = "died of signal %d" % signum
            key = [oracle, word, "signal %d" % signum]
        else:
            oracle, detail = "killed", "the child ended early (status %s): %s" % (status, _short(dump, 800))
            key = ["killed", word, "status"]
        if hung or killed:
            failures.append({"oracle": oracle, "key": key, "detail": detail, "run": run, "argv": [a for a in argv]})
    timings = [
        (recipe["runs"][e["run"]].get("format"), recipe["runs"][e["run"]]["argv"][0], e["seconds"]) for e in events if e["ev"] == "done"
    ]
    return {"execs": len(starts), "failures": failures, "seconds": time.perf_counter() - started, "timings": timings}
