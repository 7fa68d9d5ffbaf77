"""Campaigns: many cases over worker processes, failures deduplicated, minimized and saved.

Each worker is forked from a process that imported aidoctor once; each case runs in a child
forked from its worker (see execute.py). Cases are numbered; case ``i`` of a campaign with
seed ``S`` is always the same case (cases.case_seed), whichever worker runs it.

A failure's key (oracle, exception type, last frame in aidoctor's code; or what differs) is
claimed by creating ``OUT/keys/HASH`` (mkdir is atomic across workers): the first worker to
see a key minimizes the case (drops runs, mutations, archive and report operations, then
files of the tree, while the same key still fails) and writes ``OUT/NNNN-ORACLE-…/`` with
``recipe.json`` (rebuilds the case), ``failure.txt`` and, where small, the tree (``root/``) or
the archive. Every failure, repeats included, is a line of ``OUT/failures.jsonl``.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import os
import pwd
import re
import select
import shutil
import signal
import sys
import tempfile
import time

from aidfuzz import archives, cases, execute, reports, trees


def key_text(key) -> str:
    return " | ".join(str(part) for part in key)


def key_hash(key) -> str:
    return hashlib.sha1(key_text(key).encode("utf-8", "backslashreplace")).hexdigest()[:12]


def scratch_dir() -> str:
    """A folder for sandboxes: in memory (/dev/shm) where there is one."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="aidfuzz-", dir=base)


# -- minimizing ---------------------------------------------------------------------------


class _Minimizer:
    def __init__(self, key, workdir, limits, budget):
        self.key = key
        self.workdir = workdir
        self.limits = limits
        self.deadline = time.monotonic() + budget
        self.tries = 0

    def fails(self, recipe) -> bool:
        if time.monotonic() > self.deadline:
            return False
        self.tries += 1
        try:
            result = execute.execute(recipe, self.workdir, self.limits, number=900_000_000 + self.tries)
        except Exception:  # noqa: BLE001 - a shrunk recipe the harness cannot build is not kept
            return False
        return any(f["key"] == self.key for f in result["failures"])

    def shrink_list(self, recipe, getter, setter):
        """Drop items of a list one at a time (last first) while the failure stays."""
        index = len(getter(recipe)) - 1
        while index >= 0:
            items = getter(recipe)
            if index < len(items):
                trial = copy.deepcopy(recipe)
                setter(trial, items[:index] + items[index + 1 :])
                if self.fails(trial):
                    recipe = trial
            index -= 1
        return recipe

    def shrink_tree(self, recipe):
        base = cases.base_tree(recipe)
        kept = sorted(p for p, e in base.items() if e[0] != "d")
        chunks = 2
        while len(kept) >= 2 and time.monotonic() < self.deadline:
            size = max(1, len(kept) // chunks)
            removed = False
            for start in range(0, len(kept), size):
                trial_keep = kept[:start] + kept[start + size :]
                trial = copy.deepcopy(recipe)
                trial["subset"] = {"keep": trial_keep}
                if self.fails(trial):
                    kept, recipe, removed = trial_keep, trial, True
                    chunks = max(chunks - 1, 2)
                    break
            if not removed:
                if size == 1:
                    break
                chunks = min(chunks * 2, len(kept))
        return recipe


def minimize(recipe, key, workdir, limits, budget: float = 20.0):
    """A smaller recipe with the same failure key (as small as ``budget`` seconds allow)."""
    shrink = _Minimizer(key, workdir, limits, budget)
    recipe = copy.deepcopy(recipe)
    if not shrink.fails(recipe):
        return recipe, shrink.tries
    # Runs after the failing one, then the others that are not needed.
    recipe = shrink.shrink_list(recipe, lambda r: r["runs"], lambda r, v: r.__setitem__("runs", v))
    recipe = shrink.shrink_list(recipe, lambda r: r["mutations"], lambda r, v: r.__setitem__("mutations", v))
    if recipe.get("archive"):
        for part in ("members", "raw", "packed"):
            recipe = shrink.shrink_list(
                recipe, lambda r, p=part: r["archive"].get(p, []), lambda r, v, p=part: r["archive"].__setitem__(p, v)
            )
    if recipe.get("reports"):
        recipe = shrink.shrink_list(recipe, lambda r: r["reports"], lambda r, v: r.__setitem__("reports", v))
        for index in range(len(recipe["reports"])):
            for part in ("mutations", "bytes"):
                recipe = shrink.shrink_list(
                    recipe,
                    lambda r, i=index, p=part: r["reports"][i][p] if i < len(r["reports"]) else [],
                    lambda r, v, i=index, p=part: r["reports"][i].__setitem__(p, v),
                )
    if not recipe.get("reports") or recipe["target"] != "merge":
        recipe = shrink.shrink_tree(recipe)
        # With fewer files, fewer mutations may do.
        recipe = shrink.shrink_list(recipe, lambda r: r["mutations"], lambda r, v: r.__setitem__("mutations", v))
    return recipe, shrink.tries


# -- saving -------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60]


def save(out_dir: str, failure: dict, recipe: dict, number: int) -> str:
    """Write a reproducer folder; returns its path."""
    frame = failure["key"][2] if len(failure["key"]) > 2 else ""
    name = "%04d-%s-%s" % (number, failure["oracle"], _slug("%s-%s" % (failure["key"][1] if len(failure["key"]) > 1 else "", frame)))
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    record = dict(recipe, failure={k: failure.get(k) for k in ("oracle", "key", "detail", "argv", "run", "stderr")})
    with open(os.path.join(folder, "recipe.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.write("\n")
    with open(os.path.join(folder, "failure.txt"), "w", encoding="utf-8", errors="backslashreplace") as handle:
        handle.write(
            "oracle: %s\nkey: %s\ncase: %s\n\n%s\n\nargv: %s\nstderr: %s\n"
            % (
                failure["oracle"],
                key_text(failure["key"]),
                cases.describe(recipe),
                failure.get("detail"),
                failure.get("argv"),
                failure.get("stderr"),
            )
        )
    try:
        tree = cases.build_tree(recipe)
        if recipe.get("archive"):
            data, file_size = archives.build(recipe["archive"], tree)
            if len(data) < (1 << 20) and not file_size:
                with open(os.path.join(folder, "host.tar.gz"), "wb") as handle:
                    handle.write(data)
        elif trees.size(tree) < (1 << 20) and not any(e[0] == "p" for e in tree.values()) and recipe["target"] != "merge":
            trees.materialize(tree, os.path.join(folder, "root"))
        for index, item in enumerate(recipe.get("reports") or ()):
            report = execute.base_report(item["fixture"], item.get("args", cases.MODEL))
            for mutation in item.get("mutations", ()):
                report = reports.apply(report, mutation)
            data = reports.serialize(report)
            for op in item.get("bytes", ()):
                data = reports.apply_bytes(data, op)
            if len(data) < (1 << 20):
                with open(os.path.join(folder, "r%d.json" % index), "wb") as handle:
                    handle.write(data)
    except (OSError, ValueError):
        pass
    return folder


def promote(folder: str, name: str, regressions: str) -> str:
    """Copy a reproducer's recipe into the regression corpus as ``regressions/NAME``."""
    target = os.path.join(regressions, name)
    os.makedirs(target, exist_ok=True)
    shutil.copy(os.path.join(folder, "recipe.json"), os.path.join(target, "recipe.json"))
    return target


# -- workers ------------------------------------------------------------------------------


def _drop_privileges(user: str, paths) -> None:
    entry = pwd.getpwnam(user)
    # The sandboxes' parent (mkdtemp made it private to root) must be passable.
    os.chmod(os.path.dirname(paths[0]), 0o711)
    for path in paths:
        for folder, _dirs, files in os.walk(path):
            os.chown(folder, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)


def _write(fd, message) -> None:
    data = (json.dumps(message) + "\n").encode("utf-8", "backslashreplace")
    while data:
        data = data[os.write(fd, data) :]


def _worker(number, jobs, options, workdir, out_dir, fd, deadline):
    """Run cases number, number+jobs, … until the deadline (or the case limit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    index = number
    seen = set()
    limits = {"timeout": options.get("timeout"), "memory_mib": options.get("memory_mib", 512)}
    pending = _fresh()
    last_flush = time.monotonic()
    while time.monotonic() < deadline and (options.get("max_cases") is None or index < options["max_cases"]):
        seed = cases.case_seed(options["seed"], index)
        recipe = cases.generate(seed, quick=options.get("quick", False), heavy_share=options.get("heavy_share", 0.005))
        cpu = _cpu()
        try:
            result = execute.execute(recipe, workdir, limits, number=index)
        except Exception as exc:  # noqa: BLE001 - the harness's own bug: said, and the run goes on
            import traceback

            _write(fd, {"ev": "harness", "case": index, "seed": seed, "trace": traceback.format_exc()[-2000:], "error": repr(exc)[:300]})
            index += jobs
            continue
        pending["cases"] += 1
        pending["execs"] += result["execs"]
        pending["fuzz_seconds"] += result["seconds"]
        pending["fuzz_cpu"] += _cpu() - cpu
        for failure in result["failures"]:
            pending["failures"] += 1
            pending["min_execs"] += _record(failure, recipe, index, seed, seen, options, workdir, out_dir, limits, fd, number)
        index += jobs
        if time.monotonic() - last_flush > 0.5:
            _write(fd, dict(pending, ev="stats", cpu=_cpu() - pending["cpu"]))
            pending = _fresh()
            last_flush = time.monotonic()
    _write(fd, dict(pending, ev="stats", cpu=_cpu() - pending["cpu"]))
    _write(fd, {"ev": "end"})


def _cpu() -> float:
    """CPU seconds of this worker and of the case children it has waited for."""
    times = os.times()
    return times[0] + times[1] + times[2] + times[3]


def _fresh() -> dict:
    return {"cases": 0, "execs": 0, "failures": 0, "fuzz_seconds": 0.0, "fuzz_cpu": 0.0, "min_execs": 0, "cpu": _cpu()}


def _record(failure, recipe, index, seed, seen, options, workdir, out_dir, limits, fd, worker):
    key = failure["key"]
    digest = key_hash(key)
    line = {
        "time": time.strftime("%H:%M:%S"),
        "worker": worker,
        "case": index,
        "seed": seed,
        "oracle": failure["oracle"],
        "key": key,
        "detail": failure.get("detail"),
        "argv": failure.get("argv"),
        "recipe": recipe,
    }
    folder = None
    spent = 0
    if digest not in seen:
        seen.add(digest)
        try:
            os.mkdir(os.path.join(out_dir, "keys", digest))
            mine = True
        except FileExistsError:
            mine = False
        if mine:
            small = recipe
            # A run that hangs or dies costs its whole time limit per try: kept as found.
            if options.get("minimize", True) and failure["oracle"] not in ("timeout", "memory", "killed"):
                budget = options.get("minimize_seconds", 20.0)
                small, tries = minimize(recipe, key, workdir, limits, budget=budget)
                spent = tries * len(recipe["runs"])  # command lines run while shrinking, about
            number = len(os.listdir(os.path.join(out_dir, "keys")))
            folder = save(out_dir, failure, small, number)
            with open(os.path.join(out_dir, "keys", digest, "folder"), "w") as handle:
                handle.write(folder)
            _write(
                fd, {"ev": "new", "oracle": failure["oracle"], "key": key, "folder": folder, "detail": failure.get("detail"), "case": index}
            )
    line["reproducer"] = folder or _folder_of(out_dir, digest)
    with open(os.path.join(out_dir, "failures.jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, default=str) + "\n")
    return spent


def _folder_of(out_dir, digest):
    try:
        with open(os.path.join(out_dir, "keys", digest, "folder")) as handle:
            return handle.read()
    except OSError:
        return None


def run(
    seconds=None,
    seed=1,
    jobs=1,
    out_dir="/tmp/aidoctor-fuzz",
    quick=False,
    heavy_share=0.005,
    timeout=None,
    memory_mib=512,
    as_user=None,
    minimize=True,
    minimize_seconds=20.0,
    max_cases=None,
    every=10.0,
    say=print,
):
    """A campaign; returns its totals. ``seconds`` (or ``max_cases``) bounds it."""
    os.makedirs(os.path.join(out_dir, "keys"), exist_ok=True)
    execute.prepare_worker()
    for name in trees.fixture_names():
        for args in cases.REPORT_ARGS:
            execute.base_report(name, args)
    gc.collect()
    gc.freeze()
    scratch = scratch_dir()
    options = {
        "seed": seed,
        "quick": quick,
        "heavy_share": heavy_share,
        "timeout": timeout,
        "memory_mib": memory_mib,
        "minimize": minimize,
        "minimize_seconds": minimize_seconds,
        "max_cases": max_cases,
    }
    started = time.monotonic()
    deadline = started + seconds if seconds else float("inf")
    workers = {}
    for number in range(jobs):
        workdir = os.path.join(scratch, "w%d" % number)
        os.mkdir(workdir)
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a worker
            code = 0
            try:
                os.close(read_fd)
                if as_user:
                    _drop_privileges(as_user, [workdir, out_dir])
                _worker(number, jobs, options, workdir, out_dir, write_fd, deadline)
            except BaseException:  # noqa: BLE001
                import traceback

                _write(write_fd, {"ev": "crash", "trace": traceback.format_exc()})
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        workers[read_fd] = {"pid": pid, "buffer": b"", "done": False}
    totals = {"cases": 0, "execs": 0, "failures": 0, "distinct": [], "fuzz_seconds": 0.0, "fuzz_cpu": 0.0, "min_execs": 0, "cpu": 0.0}
    last = started
    try:
        while any(not w["done"] for w in workers.values()):
            ready, _, _ = select.select([fd for fd, w in workers.items() if not w["done"]], [], [], 1.0)
            for fd in ready:
                worker = workers[fd]
                data = os.read(fd, 1 << 16)
                if not data:
                    worker["done"] = True
                    continue
                worker["buffer"] += data
                *lines, worker["buffer"] = worker["buffer"].split(b"\n")
                for line in lines:
                    message = json.loads(line.decode("utf-8"))
                    if message["ev"] == "stats":
                        for name in ("cases", "execs", "failures", "fuzz_seconds", "fuzz_cpu", "min_execs", "cpu"):
                            totals[name] += message[name]
                    elif message["ev"] == "new":
                        totals["distinct"].append(message)
                        say(
                            "FAIL %-16s %s\n     case %d: %s\n     -> %s"
                            % (
                                message["oracle"],
                                key_text(message["key"]),
                                message["case"],
                                (message.get("detail") or "")[:240],
                                message["folder"],
                            )
                        )
                    elif message["ev"] == "harness":
                        totals["harness"] = totals.get("harness", 0) + 1
                        say(
                            "harness error (a bug of the fuzzer, not aidoctor) in case %d (seed %d): %s\n%s"
                            % (message["case"], message["seed"], message["error"], message["trace"])
                        )
                    elif message["ev"] == "crash":
                        say("worker crashed:\n" + message["trace"])
            now = time.monotonic()
            if now - last >= every:
                last = now
                say(_progress(totals, now - started))
    except KeyboardInterrupt:
        for worker in workers.values():
            try:
                os.kill(worker["pid"], signal.SIGTERM)
            except OSError:
                pass
    for fd, worker in workers.items():
        os.waitpid(worker["pid"], 0)
        os.close(fd)
    trees.rmtree(scratch)
    totals["seconds"] = time.monotonic() - started
    say(_progress(totals, totals["seconds"], final=True))
    return totals


def _progress(totals, elapsed, final=False) -> str:
    """Executions are aidoctor command lines run on fuzzed input (shrinking counted apart).
    Rates: per second of the campaign's wall time, per second spent running cases (the rest is
    shrinking failures), and per CPU second spent running cases (what the load of a shared
    machine does not change)."""
    execs = totals["execs"]
    wall = execs / elapsed if elapsed else 0.0
    busy = execs / totals["fuzz_seconds"] if totals["fuzz_seconds"] else 0.0
    cpu = execs / totals["fuzz_cpu"] if totals["fuzz_cpu"] else 0.0
    return (
        "%s[%6.0fs] %d execs: %.1f/s wall, %.1f/s while fuzzing, %.1f per CPU-second; %d cases; %d shrinking; %d failures, %d distinct"
        % (
            "done " if final else "",
            elapsed,
            execs,
            wall,
            busy,
            cpu,
            totals["cases"],
            totals["min_execs"],
            totals["failures"],
            len(totals["distinct"]),
        )
    )


# -- in a test ----------------------------------------------------------------------------


def run_recipes(recipes, limits=None, setup=None):
    """Run ``recipes`` in one forked worker (this process keeps its own state); returns a list
    of (execs, failures) per recipe. ``setup`` is called in the worker first (the oracles'
    own tests break aidoctor there on purpose)."""
    scratch = scratch_dir()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the worker
        code = 0
        try:
            os.close(read_fd)
            execute.prepare_worker(warm=len(recipes) > 5)
            if setup is not None:
                setup()
            gc.collect()
            gc.freeze()
            for number, recipe in enumerate(recipes):
                result = execute.execute(recipe, scratch, limits, number=number)
                _write(write_fd, {"execs": result["execs"], "failures": result["failures"]})
        except BaseException:  # noqa: BLE001
            import traceback

            _write(write_fd, {"crash": traceback.format_exc()})
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    data = b""
    while True:
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    trees.rmtree(scratch)
    results = []
    for line in data.splitlines():
        message = json.loads(line.decode("utf-8"))
        if "crash" in message:
            raise RuntimeError("the fuzz worker failed:\n" + message["crash"])
        results.append((message["execs"], message["failures"]))
    return results
