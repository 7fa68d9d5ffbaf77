"""The Python API, and the checkup the command line runs: options in, a Report out.

    from ai_doctor import check
    report = check(model_size="140G")            # this host; root="/mnt/image" for a tree
    report.exit_code, report.findings, report.to_json()

:func:`check` takes the command line's options as keyword arguments (``--model-size 140G`` is
``model_size="140G"``) and runs what ``aidoctor --format json`` runs, without printing, writing
or exiting: what the command would refuse with exit 2 raises :class:`UsageError` (a ValueError)
with the same one-line message. The command line parses its words into the same options and
calls :func:`report` (ai_doctor.cli); both return the :class:`ai_doctor.model.Report` every
renderer reads.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from ai_doctor.exitcodes import UsageError
from ai_doctor.options import CHECK, defaults, offered

# What a host tree holds at least one of: an empty or mistyped folder is not a host.
HOST_MARKERS = ("/etc", "/usr", "/boot", "/proc/meminfo", "/sys/devices")


def check(
    model_size=None,
    *,
    root=None,
    snapshot=None,
    image=False,
    next_boot=False,
    params=None,
    dtype=None,
    model=None,
    margin=None,
    hugepages=None,
    only=(),
    skip=(),
    fail_on="high",
    strict=False,
):
    """One checkup, as ``aidoctor`` with the same options runs it; returns the Report.

    ``model_size`` ("140G", "70GB", or bytes as an int), or ``params`` ("70B") with ``dtype``,
    or ``model`` (a path to the weights, read for their size); ``root`` a host tree (an
    unpacked or mounted image with ``image=True``) or ``snapshot`` an archive, this host
    without either; ``next_boot`` judges the host as it will boot; ``only``/``skip`` rule ids
    or areas; ``fail_on`` and ``strict`` decide ``report.exit_code``. Raises UsageError for
    what the command line refuses with exit 2.
    """
    given = {
        "model_size": str(model_size) if isinstance(model_size, int) and not isinstance(model_size, bool) else model_size,
        "root": root,
        "snapshot": snapshot,
        "image": bool(image),
        "next_boot": bool(next_boot),
        "params": params,
        "dtype": dtype,
        "model": model,
        "margin": margin,
        "hugepages": hugepages,
        "only": [only] if isinstance(only, str) else list(only),
        "skip": [skip] if isinstance(skip, str) else list(skip),
        "fail_on": fail_on,
        "strict": bool(strict),
    }
    args = _options(given)
    # The command line that runs the same check: the report keeps it (options.argv).
    return report(args, _words(args))


def _options(given: dict):
    """The namespace the command line's parser makes, from keyword values: each checked and
    converted as the parser would, its error worded as the parser's."""
    values = defaults(CHECK)
    for option in offered(CHECK):
        value = given.get(option.dest)
        if option.kind == "flag":
            values[option.dest] = bool(value)
        elif option.kind == "append":
            values[option.dest] = [str(item) for item in value or ()]
        elif value is not None:
            value = str(value)
            if option.choices is not None and value not in option.choices:
                choices = ", ".join(repr(choice) for choice in option.choices)
                raise UsageError("%s: invalid choice: %r (choose from %s)" % (option.flags[0], value, choices))
            if option.convert is not None:
                try:
                    value = option.convert(value)
                except Exception as exc:  # argparse.ArgumentTypeError, in the parser's words
                    raise UsageError("%s: %s" % (option.flags[0], exc)) from None
            values[option.dest] = value
    return SimpleNamespace(**values)


def _words(args) -> list:
    """The command line's words for the options set in ``args``, in --help's order."""
    words = []
    for option in offered(CHECK):
        value = getattr(args, option.dest)
        if option.kind == "flag":
            words += [option.flags[0]] if value else []
        elif option.kind == "append":
            for item in value:
                words += [option.flags[0], item]
        elif value is not None and value != option.default:
            words += [option.flags[0], str(value)]
    return words


def report(args, argv=(), program=("aidoctor",)):
    """The Report of one checkup with the parsed options ``args`` (the command line's words
    ``argv``, the program that ran, for the report's request)."""
    request = request_from(args, list(argv))._replace(program=tuple(program))
    rules = select_rules(args)
    return on_target(args, request, lambda request, host: _checkup(args, request, host, rules))


def on_target(args, request, use):
    """``use(request, host)`` for the host the options name: this one, a tree (--root) or a
    snapshot archive (--snapshot, held for the call), the request completed by with_model."""
    if args.image and args.root is None and args.snapshot is None:
        raise UsageError("--image goes with --root DIR or --snapshot FILE (this host is running)")
    if args.snapshot is None:
        host = host_from(args)
        return use(with_model(args, request, host), host)
    if args.root is not None:
        raise UsageError("give --root or --snapshot, not both")
    from ai_doctor.archive import Spill

    with Spill() as spill:
        host = snapshot_host(args.snapshot, args.image, spill)
        return use(with_model(args, request, host), host)


def _checkup(args, request, host, rules):
    from ai_doctor.checkup import checkup

    if getattr(args, "next_boot", False):
        from ai_doctor.nextboot import simulate

        host = simulate(host, request)
    return checkup(host, request, rules, args.fail_on, args.strict, args.verbose)


def select_rules(args):
    """The rules --only and --skip choose, their modules imported."""
    from ai_doctor import engine

    return _choosing(engine.select, args)


def listed_rules(args):
    """The catalogue's entries for the rules --only and --skip choose; no rule module imported."""
    from ai_doctor import catalogue

    return _choosing(lambda only, skip: catalogue.choose(catalogue.listed(), only, skip), args)


def _choosing(choose, args):
    try:
        return choose(args.only, args.skip)
    except LookupError as exc:
        raise UsageError("unknown rule or area: %s (see aidoctor --list-rules)" % exc.args[0]) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def request_from(args, argv):
    from ai_doctor.model import Request
    from ai_doctor.units import (
        DTYPE_BYTES,
        SizeError,
        decimal,
        describe_size,
        gib,
        params_words,
        parse_params,
        parse_size,
        size_for,
    )

    if args.model is not None:
        given = [option for option in ("model_size", "params", "dtype") if getattr(args, option) is not None]
        if given:
            raise UsageError("give --model or --%s, not both (--model reads the size from the files)" % given[0].replace("_", "-"))
    if args.model_size is not None and args.params is not None:
        raise UsageError("give --model-size or --params, not both")
    margin = None
    if args.margin is not None:
        try:
            # No margin at all is a choice too: 0 (in any unit) is taken.
            margin = 0 if args.margin.rstrip("KMGTPkmgtpiIbB").strip(".0") == "" and args.margin[:1] in "0." else parse_size(args.margin)
        except SizeError as exc:
            raise UsageError("--margin %s" % str(exc).replace("a model size", "a margin")) from None
        if args.model_size is None and args.params is None and args.model is None:
            raise UsageError("--margin goes with --model, --model-size or --params (the room left beside a model)")
    if args.dtype and args.params is None:
        raise UsageError("--dtype goes with --params (a --model-size is already in bytes)")
    try:
        if args.model_size is not None:
            size = parse_size(args.model_size)
            described = describe_size(args.model_size, size)
            return Request(
                size, args.model_size, "--model-size", described, None, None, args.hugepages, tuple(["aidoctor"] + argv), margin=margin
            )
        if args.params is not None:
            params = parse_params(args.params)
            dtype = args.dtype or "bf16"
            size = size_for(params, dtype)
            per = DTYPE_BYTES[dtype]
            text = "%s params × %g byte%s (%s)" % (params_words(params), per, "" if per == 1 else "s", dtype)
            described = "%s = %s = %s" % (text, gib(size), decimal(size))
            return Request(
                size, args.params, "--params", described, dtype, params, args.hugepages, tuple(["aidoctor"] + argv), margin=margin
            )
    except SizeError as exc:
        raise UsageError("--%s %s" % ("model-size" if args.model_size is not None else "params", exc)) from None
    return Request(None, None, None, None, None, None, args.hugepages, tuple(["aidoctor"] + argv), margin=margin)


# The environment variables that say where model caches (storage.model-network) and Python
# environments with pip's CUDA (gpu.driver-too-old-for-cuda) live.
MODEL_ENV = ("HF_HOME", "HF_HUB_CACHE", "OLLAMA_MODELS", "HOME", "VIRTUAL_ENV", "CONDA_PREFIX")


def model_env() -> dict:
    return {name: os.environ[name] for name in MODEL_ENV if name in os.environ}


def with_model(args, request, host):
    """The request with what ``--model PATH`` reads through ``host`` (headers only), and the
    environment that says where model caches live: this process's for a live check, the one
    a snapshot's manifest recorded for a tree (none for other trees)."""
    if host.live:
        request = request._replace(env=model_env())
    else:
        recorded = host.manifest.get("env")
        if isinstance(recorded, dict) and all(name in MODEL_ENV and isinstance(value, str) for name, value in recorded.items()):
            request = request._replace(env=dict(recorded))
    if getattr(args, "model", None) is None:
        return request
    from ai_doctor import modelfiles

    path = _model_path(args.model, host)
    try:
        found = modelfiles.read_model(host, path)
    except modelfiles.ModelError as exc:
        # Each message begins with the file or folder it is about.
        raise UsageError("--model: %s" % _tree_hint(str(exc), args.model, host)) from None
    return request._replace(
        model_size=found.size,
        size_text=args.model,
        size_source="--model",
        described=found.described,
        dtype=found.dtype_key,
        params=found.params,
        model_path=path,
    )


def _model_path(given: str, host) -> str:
    """``--model PATH`` as a path on the target: relative to this directory on a live host;
    in a tree (--root, --snapshot) it must be written as on that system."""
    if not given:
        raise UsageError("--model: the path is empty")
    if "\x00" in given:
        raise UsageError("--model: the path holds a NUL byte")
    if host.live:
        return os.path.abspath(given)
    if not given.startswith("/"):
        where = "--snapshot" if host.origin else "--root"
        raise UsageError("--model %s: with %s, give the path as on that system (absolute: /models/NAME)" % (given, where))
    return given


def _tree_hint(message: str, given: str, host) -> str:
    """What to do about a path a tree does not hold: write it as on the target, or take the
    snapshot again with --model."""
    if host.live or not message.endswith("no such file or folder"):
        return message
    root = host.root.rstrip("/") + "/"
    if host.origin is None and given.startswith(root):
        return message + " (paths are as on that system: %s)" % given[len(root) - 1 :]
    if host.origin is not None or host.manifest.get("argv"):
        return message + " (the snapshot holds it only if taken with: aidoctor snapshot --model %s)" % given
    return message


def host_from(args):
    from ai_doctor.host import BadTree, Host

    if args.root is None:
        return Host("/")
    if not os.path.isdir(args.root):
        from ai_doctor import archive

        if archive.is_archive(args.root) and os.path.isfile(args.root):
            raise UsageError("--root %s: a snapshot archive; analyse it with --snapshot %s" % (args.root, args.root))
        raise UsageError("--root %s: not a directory" % args.root)
    image = getattr(args, "image", False)
    if image and os.path.realpath(args.root) == "/":
        # This running system is never judged as an image of itself, nor silently live.
        raise UsageError("--root %s --image: that is this running host; give an image's tree (a mounted or unpacked image)" % args.root)
    try:
        host = Host(args.root, image=image)
    except BadTree as exc:
        raise UsageError("--root %s" % exc) from None
    # A mistyped mount point must not pass a CI gate as a host with nothing wrong.
    if not any(host.exists(path) for path in HOST_MARKERS):
        inner = os.path.join(args.root, "root")
        hint = ""
        if os.path.isdir(inner) and any(os.path.lexists(os.path.join(inner, path.lstrip("/"))) for path in HOST_MARKERS):
            hint = "; the tree is in %s (a fixture's layout): --root %s" % (inner, inner)
        raise UsageError("--root %s: not a host tree (none of %s in it)%s" % (args.root, ", ".join(HOST_MARKERS), hint))
    return host


def snapshot_host(path: str, image: bool = False, spill=None):
    """The Host of a snapshot archive, its members checked one by one and held in memory as
    unpacking would have left them (nothing is written); one too large to hold is unpacked
    into the folder ``spill()`` makes (archive.load)."""
    from ai_doctor import archive
    from ai_doctor.host import BadTree, Host

    if os.path.isdir(path):
        raise UsageError("--snapshot %s: a directory; analyse a tree with --root %s" % (path, path))
    try:
        tree = archive.load(path, spill)
    except archive.ArchiveError as exc:
        message = str(exc)
        raise UsageError("--snapshot " + message if message.startswith(path) else "--snapshot %s: %s" % (path, message)) from None
    try:
        # Named by the archive, where the tree lies (an image's fixes say where they apply).
        host = Host(os.path.abspath(path), origin=path, image=image, tree=tree)
    except BadTree as exc:
        raise UsageError("--snapshot %s: %s" % (path, exc)) from None
    if not any(host.exists(marker) for marker in HOST_MARKERS):
        raise UsageError("--snapshot %s: holds no host tree (none of %s in it)" % (path, ", ".join(HOST_MARKERS)))
    return host
