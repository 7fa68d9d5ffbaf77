"""The command line: parse, run one checkup, render, write, pick the exit code.

This is the only place that prints, writes report files or exits. Bad input of any kind ends
with one line on stderr naming it, and exit code 2.
"""

from __future__ import annotations

import os
import sys

from ai_doctor import __version__
from ai_doctor.exitcodes import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, UsageError

# Report files written beside the main output: option → renderer module under ai_doctor.reports.
FILE_OUTPUTS = (("html", "html"), ("junit", "junit"), ("sarif", "sarif"), ("prom", "prometheus"))


def _Parser(**settings):  # noqa: N802 - stands for the class, imported with argparse only when used
    from ai_doctor.argparser import Parser

    return Parser(**settings)


def _formatter(prog):
    from ai_doctor.argparser import formatter

    return formatter(prog)


def _parser(fix: bool = False, prog: str = "aidoctor"):
    from ai_doctor.argparser import command

    return command(fix, prog)


def main(argv=None) -> int:
    """The command line's exit code; run as the command (``argv`` None), the process ends here."""
    if argv is not None:
        return _main(list(argv), False)
    import gc

    # One short run allocates little garbage in cycles: collecting while the modules load
    # costs more than it frees.
    gc.set_threshold(100000, 50, 100)
    code = _main(sys.argv[1:], True)
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return code  # the interpreter's own exit reports nothing more useful
    # Everything is written and every file closed: tearing down the modules and objects
    # would only cost time (a sixth of a check).
    os._exit(code)


def _main(argv, invoked: bool) -> int:
    if sys.stderr is None:
        # Started with stderr closed: messages go nowhere rather than into the report on stdout.
        sys.stderr = open(os.devnull, "w")
    for stream in (sys.stdout, sys.stderr):
        try:
            # A C-locale terminal must not crash the report, and a file name that was not UTF-8
            # (lone surrogates) reads as \udcNN, as in a file written with -o.
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    try:
        return _dispatch(argv, _program() if invoked else ("aidoctor",))
    except UsageError as exc:
        print("aidoctor: error: %s" % exc, file=sys.stderr)
        if _wants_npd(argv):
            _npd_unknown(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("aidoctor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `aidoctor --list-rules | head`: the reader left; say nothing more.
        _silence_stdout()
        return EXIT_OK
    except Exception as exc:  # aidoctor itself failed: one line, exit 3 (DESIGN.md)
        if os.environ.get("AIDOCTOR_DEBUG"):
            raise
        if _wants_npd(argv):
            _npd_unknown("aidoctor failed: %s: %s" % (type(exc).__name__, exc))
            return EXIT_USAGE
        print("aidoctor: internal error: %s: %s (set AIDOCTOR_DEBUG=1 for the traceback)" % (type(exc).__name__, exc), file=sys.stderr)
        return EXIT_INTERNAL


def _npd_unknown(reason: str) -> None:
    """node-problem-detector reads exit 2 as "could not decide" and the reason from stdout:
    one line that says why."""
    from ai_doctor.reports.npd import fit

    try:
        _write(None, fit("unknown: %s" % reason) + "\n")
    except (UsageError, BrokenPipeError):
        pass


def _wants_npd(argv) -> bool:
    """Whether the command line asks for node-problem-detector's plugin output."""
    return "--format=npd" in argv or any(a == "--format" and b == "npd" for a, b in zip(argv, argv[1:]))


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush finds no closed pipe."""
    try:
        sys.stdout = open(os.devnull, "w")
    except OSError:
        pass


def _program():
    """The words that start this aidoctor again, for a rerun under sudo, whose secure_path
    rarely holds a virtual environment."""
    started = sys.argv[0] if sys.argv else ""
    if not started or started.endswith("__main__.py"):
        return (sys.executable, "-m", "ai_doctor")
    if started.endswith(".pyz") and os.path.isfile(started):
        return (sys.executable, os.path.abspath(started))  # the one file, with the Python it ran with
    return (os.path.abspath(started),) if os.path.exists(started) else ("aidoctor",)


def _dispatch(argv, program) -> int:
    if argv[:1] == ["explain"]:
        return _explain(argv[1:])
    if argv[:1] == ["snapshot"]:
        return _snapshot(argv[1:])
    if argv[:1] == ["merge"]:
        return _merge(argv[1:])
    if argv[:1] == ["bench"]:
        from ai_doctor import benchcmd

        args = benchcmd.parser(_Parser, _formatter).parse_args(argv[1:])
        return benchcmd.run(args, UsageError, _write)
    if argv[:1] == ["fix"]:
        return _fix(_parser(fix=True).parse_args(_attach_negative_values(argv[1:])), argv, program)
    if argv[:1] == ["completion"]:
        return _completion(argv[1:])
    prog = "aidoctor"
    if argv[:1] == ["check"]:
        argv, prog = argv[1:], "aidoctor check"
    if argv == ["--version"]:
        _write(None, "aidoctor %s\n" % __version__)
        return EXIT_OK
    from ai_doctor.options import quick

    args = quick(argv) or _parser(prog=prog).parse_args(_attach_negative_values(argv))
    if args.list_rules:
        from ai_doctor import api

        return _list_rules(args.format, api.listed_rules(args))
    return _check(args, argv, program)


def _attach_negative_values(argv):
    """``--model-size -5G`` as ``--model-size=-5G``, so the error names the value rather than
    argparse's "expected one argument"."""
    joined = []
    index = 0
    while index < len(argv):
        if (
            argv[index] in ("--model-size", "--params", "--hugepages", "--margin")
            and index + 1 < len(argv)
            and argv[index + 1][:1] == "-"
            and argv[index + 1][1:2].isdigit()
        ):
            joined.append("%s=%s" % (argv[index], argv[index + 1]))
            index += 2
            continue
        joined.append(argv[index])
        index += 1
    return joined


def _explain(argv) -> int:
    if argv in (["-h"], ["--help"]):
        _write(
            None,
            "usage: aidoctor explain RULE|AREA\n\n"
            "Prints a rule's documentation: why it matters, how its fix works, the kernel documents it rests on.\n"
            "An area (gpu, memory, limits …) lists its rules.\n"
            "The rules: aidoctor --list-rules\n",
        )
        return EXIT_OK
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UsageError("usage: aidoctor explain RULE|AREA (see aidoctor --list-rules)")
    from ai_doctor import catalogue

    rules = catalogue.listed()
    found = [r for r in rules if r.id == argv[0]]
    if not found:
        in_area = [r for r in rules if r.area == argv[0]]
        if in_area:
            # An area, as --only takes one: its rules, each explained by its id.
            _list_rules("text", in_area)
            _write(None, "\naidoctor explain RULE explains one of them.\n")
            return EXIT_OK
        import difflib

        names = [r.id for r in rules] + sorted({r.area for r in rules})
        close = difflib.get_close_matches(argv[0], names, n=1, cutoff=0.6)
        hint = "did you mean %s? " % close[0] if close else ""
        raise UsageError("unknown rule id or area %r (%ssee aidoctor --list-rules)" % (argv[0], hint))
    # The docs are the rule's docstring: its module alone is imported.
    from ai_doctor import engine

    found = engine.select(only=(argv[0],))[0]
    _write(None, "%s — %s\ndefault severity: %s\n\n%s\n" % (found.id, found.title, found.severity.value, found.docs))
    return EXIT_OK


def _completion(argv) -> int:
    """The shell's completion script, generated from the parsers (tools/generate_share.py)."""
    import pkgutil

    from ai_doctor.argparser import COMPLETION, SHELLS

    parser = _Parser(prog="aidoctor completion", formatter_class=_formatter, description=COMPLETION)
    parser.add_argument("shell", choices=SHELLS, help="the shell the script is for")
    args = parser.parse_args(argv)
    # pkgutil reads it from the package wherever it lies, aidoctor.pyz's zip too.
    _write(None, pkgutil.get_data("ai_doctor", "share/aidoctor." + args.shell).decode("utf-8"))
    return EXIT_OK


def _snapshot(argv) -> int:
    from ai_doctor.argparser import snapshot_command

    parser = snapshot_command()
    args = parser.parse_args(argv)
    from ai_doctor import archive, snapshot

    folder = args.dir or args.output.endswith("/")
    if folder and archive.is_archive(args.output.rstrip("/")):
        raise UsageError("snapshot -o %s: an archive's name asked for as a folder; drop --dir (or the /) for an archive" % args.output)
    if not folder and not archive.is_archive(args.output):
        # A folder is made only when asked: `-o host.zip` must not leave a folder called host.zip.
        raise UsageError(
            "snapshot -o %s: give an archive name ending in .tar.gz or .tgz, or a folder as %s/ (or add --dir)"
            % (args.output, args.output.rstrip("/"))
        )
    if os.path.lexists(args.output.rstrip("/") or "/"):
        what = "a folder" if os.path.isdir(args.output) else "a file" if os.path.isfile(args.output) else "something"
        raise UsageError("snapshot -o %s: %s of that name exists; choose a new name" % (args.output, what))

    from ai_doctor import api

    root = api.host_from(args).root
    # Where model caches live on this host, kept in the manifest: a replay looks where the live run looked.
    env = api.model_env() if root == "/" else {}
    host = snapshot.capture(root, ["aidoctor", "snapshot"] + argv, env)
    if args.model is not None:
        from ai_doctor.model import Request

        # Read through the capturing host, so the folders, links and each file's summary are kept.
        api.with_model(args, Request(), host)
    manifest = dict(snapshot.manifest_for(host, ["aidoctor", "snapshot"] + argv), env=env)
    try:
        if not folder:
            count = snapshot.write_archive(host, args.output, manifest)
            again = "--snapshot"
        else:
            count = snapshot.write_tree(host, args.output, manifest)
            again = "--root"
    except OSError as exc:
        raise UsageError("snapshot -o %s: %s" % (args.output, exc.strerror or exc)) from None
    print("aidoctor: wrote %d entries to %s; analyse it with: aidoctor %s %s" % (count, args.output, again, args.output), file=sys.stderr)
    return EXIT_OK


def _merge(argv) -> int:
    from ai_doctor.argparser import merge_command

    parser = merge_command()
    args = parser.parse_args(argv)
    _distinct_outputs(args, ("output", "html"))
    import time

    from ai_doctor import fleet as fleet_model
    from ai_doctor.exitcodes import EXIT_FINDINGS
    from ai_doctor.reports import fleet as renderer
    from ai_doctor.reports.words import visible

    try:
        max_age = fleet_model.parse_age(args.max_age)
    except ValueError as exc:
        raise UsageError("--max-age %s: %s" % (visible(args.max_age), exc)) from None
    try:
        # The merge asks the clock once; the renderers are handed it.
        fleet = fleet_model.load(args.reports, now=time.time(), max_age=max_age, fail_on=args.fail_on)
    except fleet_model.FleetError as exc:
        raise UsageError(str(exc)) from None
    text = getattr(renderer, "render_" + args.format)(fleet)
    try:
        _write(args.output, text)
    except BrokenPipeError:
        _silence_stdout()
    if args.html is not None:
        _write_file_as(args.html, renderer.render_html(fleet), "--html")
    return EXIT_FINDINGS if fleet.failing() else EXIT_OK


def _list_rules(output_format: str, rules) -> int:
    """``rules``: catalogue.Listed entries."""
    if output_format == "json":
        import json

        listing = [{"rule": r.id, "severity": r.severity, "title": r.title, "summary": r.summary} for r in rules]
        _write(None, json.dumps(listing, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    width = max(len(r.id) for r in rules)
    _write(None, "".join("%-*s  %-8s  %s\n" % (width, item.id, item.severity, item.title) for item in rules))
    return EXIT_OK


def _fix(args, argv, program) -> int:
    from ai_doctor import api, fixcmd

    request = api.request_from(args, argv)
    rules = api.select_rules(args)
    words = tuple(program) + tuple(argv)
    return api.on_target(args, request, lambda request, host: fixcmd.run(args, request, host, rules, _write, UsageError, words))


def _check(args, argv, program) -> int:
    from ai_doctor import api

    if sys.stdout is None and args.output in (None, "-"):
        raise UsageError("standard output is closed; write the report with --output FILE")
    _distinct_outputs(args, ("output",) + tuple(option for option, _ in FILE_OUTPUTS))
    return _write_report(args, api.report(args, argv, program))


def _write_report(args, report) -> int:
    """Render ``report`` as the options ask, write it and the report files; the exit code."""
    from ai_doctor.model import Status

    to_terminal = args.output is None and sys.stdout.isatty()
    if args.format != "text":
        renderer = _renderer(args.format)
        text = renderer.render(report)
    else:
        from ai_doctor.reports import text as renderer

        text = renderer.render(
            report,
            color=_colour(args.color, to_terminal),
            width=_width(to_terminal),
            unicode=_unicode(args.output),
            quiet=args.quiet,
        )
    code = _renderer("npd").status(report) if args.format == "npd" else report.exit_code
    # Report files first: a file that cannot be written is an error before anything is said
    # on standard output (an npd line must match the exit status).
    for option, module in FILE_OUTPUTS:
        path = getattr(args, option)
        if path is not None:
            _write_file_as(path, _renderer(module).render(report), "--" + option)
    try:
        _write(args.output, text)
    except BrokenPipeError:
        # `aidoctor | grep -q …`: the reader left early; the verdict still counts.
        _silence_stdout()
        return code
    failed = [check.rule for check in report.by_status(Status.ERROR)]
    if failed and report.exit_code != EXIT_INTERNAL and args.format != "npd":
        print("aidoctor: %d rule(s) failed internally: %s (their other checks ran)" % (len(failed), ", ".join(failed)), file=sys.stderr)
    return code


def _distinct_outputs(args, options) -> None:
    """Refuse two outputs aimed at one file (a path, a hard link, or standard output under
    another name): the second would silently replace the first."""
    seen = {}
    for option in options:
        path = getattr(args, option)
        if path == "-" or (path is None and option == "output"):
            key, path = _identity(None), "standard output"
        elif path is None:
            continue
        else:
            key = _identity(path)
        if key in seen:
            raise UsageError("--%s and --%s both write %s" % (seen[key], option, path))
        seen[key] = option


def _identity(path):
    """What a path (None: standard output) writes to: its device and inode where it exists."""
    try:
        info = os.fstat(sys.stdout.fileno()) if path is None else os.stat(path)
        return (info.st_dev, info.st_ino)
    except (OSError, ValueError, AttributeError):
        return ("stdout",) if path is None else os.path.realpath(path)


def _renderer(name: str):
    module = "ai_doctor.reports." + name
    __import__(module)  # importlib would add its own import (and warnings') to every start
    return sys.modules[module]


def _write_file_as(path: str, text: str, option: str) -> None:
    """A report file named by ``option``: its errors name that option, not --output."""
    try:
        _write_file(path, text)
    except UsageError as exc:
        raise UsageError(str(exc).replace("--output", option, 1)) from None


def _colour(choice: str, to_terminal: bool) -> bool:
    """--color, else NO_COLOR (no-color.org) over FORCE_COLOR (force-color.org), else a
    terminal that is not dumb."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return to_terminal and os.environ.get("TERM") != "dumb"


def _unicode(path) -> bool:
    """Whether marks such as ✓ and → survive the output's encoding (a file is UTF-8)."""
    if path is not None and path != "-":
        return True
    try:
        "✓✗·—→".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _width(to_terminal: bool):
    if not to_terminal:
        return None
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return None


def _write(path, text: str) -> None:
    if path is None or path == "-":
        if sys.stdout is None:
            raise UsageError("standard output is closed")
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise UsageError("standard output: %s" % (exc.strerror or exc)) from None
        return
    _write_file(path, text)


def _write_file(path: str, text: str) -> None:
    """Write the report to ``path`` the way a shell redirection would let this user, but
    whole: a temporary file beside it, renamed over it."""
    import stat

    if not path:
        raise UsageError("--output: the path is empty")
    if os.path.isdir(path):
        raise UsageError("--output %s: is a directory" % path)
    if path.endswith("/"):
        raise UsageError("--output %s: names a directory, and there is none" % path)
    if os.path.abspath(path).startswith(("/proc/", "/sys/")):
        raise UsageError("--output %s: a kernel interface file, not a place for a report" % path)
    if os.path.islink(path):
        folder, link = os.stat(os.path.dirname(os.path.abspath(path))), os.lstat(path)
        shared = folder.st_mode & stat.S_ISVTX and folder.st_mode & stat.S_IWOTH
        if shared and link.st_uid not in (os.geteuid(), folder.st_uid):
            # What fs.protected_symlinks refuses: another user's link in /tmp aimed at our files.
            raise UsageError("--output %s: a link another user left in a shared folder; not followed" % path)
    if os.path.exists(path) and not os.path.isfile(path):
        # /dev/stdout, a FIFO: write straight through, no temporary file beside it.
        _write_in_place(path, text, path)
        return
    # Like a shell redirection, a link names the file written.
    target = os.path.realpath(path)
    try:
        existing = os.stat(target)
    except OSError:
        existing = None
    if existing is not None and not os.access(target, os.W_OK):
        raise UsageError("--output %s: permission denied" % path)
    if existing is not None and existing.st_nlink > 1:
        _write_in_place(target, text, path)  # a rename would leave the other names with the old text
        return
    try:
        _replace_whole(target, text, existing)
    except PermissionError:
        if existing is None:
            raise UsageError("--output %s: cannot create files in %s (permission denied)" % (path, os.path.dirname(target))) from None
        # A file this user may write in a folder it may not change (or a sticky one): in place.
        _write_in_place(target, text, path)
    except OSError as exc:
        raise UsageError("--output %s: %s" % (path, exc.strerror or exc)) from None


def _write_in_place(target: str, text: str, shown: str) -> None:
    # A host's file name that was not UTF-8 arrives as lone surrogates: written as \\udcNN.
    try:
        with open(target, "w", encoding="utf-8", errors="backslashreplace") as stream:
            stream.write(text)
    except OSError as exc:
        raise UsageError("--output %s: %s" % (shown, exc.strerror or exc)) from None


def _replace_whole(target: str, text: str, existing) -> None:
    """A temporary file beside ``target``, created exclusively (a link planted there is never
    followed), keeping an existing file's mode and owner, renamed over it."""
    import tempfile

    handle, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(target), suffix=".aidoctor-tmp", dir=os.path.dirname(target))
    try:
        if existing is not None:
            os.fchmod(handle, existing.st_mode & 0o7777)
            try:
                os.fchown(handle, existing.st_uid, existing.st_gid)
            except OSError:
                pass
        else:
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(handle, 0o666 & ~mask)
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as stream:
            stream.write(text)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
