"""The options of `aidoctor [check]` and `aidoctor fix`, written once as data.

argparse is built from this table (ai_doctor.argparser) for --help, for every error and for
`aidoctor fix`; a plain check's command line (``--model-size 140G --format json``) is read from
it directly by :func:`quick`, because importing argparse (with gettext and locale) and building
the parser cost a tenth of a whole run. :func:`quick` gives up, and argparse decides, on
anything it does not take exactly as argparse would: tests compare the two on generated
command lines.
"""

from __future__ import annotations

from types import SimpleNamespace

from ai_doctor.record import Record

FORMATS = ("text", "json", "markdown", "html", "npd")
FAIL_ON = ("critical", "high", "medium", "low", "info", "never")
DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8", "int4")

# Where an option is offered: the check, `aidoctor fix`, or both.
CHECK, FIX, BOTH = "check", "fix", "both"


class Option(Record):
    """One option: its flags (as --help lists them), where its value goes and what it takes.

    ``kind``: ``once`` (a value, at most once: ``--model-size 8G --model-size 80G`` has no
    right answer to guess), ``flag`` (true when given) or ``append`` (repeatable values).
    """

    __slots__ = ("flags", "dest", "kind", "group", "help", "metavar", "choices", "default", "convert", "where")
    _defaults = {"metavar": None, "choices": None, "default": None, "convert": None, "where": BOTH}


def count(text: str) -> int:
    """A whole number of huge pages (--hugepages)."""
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise _type_error("%r is negative" % text)
    # Plain ASCII digits only: int() would also take "+5", "1_000" and other scripts' digits.
    if not (text.isascii() and text.isdigit()):
        raise _type_error("%r is not a whole number" % text[:40])
    value = int(text) if len(text) <= 24 else 1 << 80
    if value >= 1 << 32:
        raise _type_error("%r: more huge pages than any machine holds" % text[:40])
    return value


def _type_error(message: str) -> Exception:
    import argparse  # only on the way to argparse's error message

    return argparse.ArgumentTypeError(message)


MODEL, SOURCE, CHOOSE, FIXING, OUTPUT = "the model", "what to examine", "which checks", "fixing", "output"

OPTIONS = (
    Option(
        ("--model",),
        "model",
        "once",
        MODEL,
        "the model's files (a file, a folder, a Hugging Face cache entry): size, parameters and dtype read from their headers",
        metavar="PATH",
    ),
    Option(
        ("--model-size",),
        "model_size",
        "once",
        MODEL,
        "weights size: 140G, 140GiB (powers of 1024), 150GB (powers of 1000), or bytes",
        metavar="SIZE",
    ),
    Option(("--params",), "params", "once", MODEL, "parameter count instead of a size: 70B, 8B, 350M", metavar="COUNT"),
    Option(("--dtype",), "dtype", "once", MODEL, "weight format for --params (default bf16)", choices=DTYPES),
    Option(
        ("--hugepages",), "hugepages", "once", MODEL, "the default-size huge page pool the deployment needs", metavar="N", convert=count
    ),
    Option(
        ("--margin",),
        "margin",
        "once",
        MODEL,
        "memory to leave beside the weights for page cache, runtime, KV cache and CUDA context (default: 5%% of it, at least 2G)",
        metavar="SIZE",
    ),
    Option(
        ("--root",), "root", "once", SOURCE, "a host tree: mounted image, unpacked snapshot, fixture (default: this host)", metavar="DIR"
    ),
    Option(
        ("--snapshot",),
        "snapshot",
        "once",
        SOURCE,
        "a snapshot archive (aidoctor snapshot -o host.tar.gz), checked and read in memory",
        metavar="FILE",
    ),
    Option(("--image",), "image", "flag", SOURCE, "judge the --root tree as an image even if it holds /proc and /sys (what boot will do)"),
    Option(
        ("--next-boot",),
        "next_boot",
        "flag",
        SOURCE,
        "judge the host as it will be after a reboot, simulated from its persistent configuration",
        where=CHECK,
    ),
    Option(("--only",), "only", "append", CHOOSE, "run only this rule or area (repeatable)", metavar="RULE"),
    Option(("--skip",), "skip", "append", CHOOSE, "do not run this rule or area (repeatable)", metavar="RULE"),
    Option(
        ("--choose",),
        "choose",
        "append",
        FIXING,
        "take the Nth way of fixing RULE's findings (default: the first)",
        metavar="RULE=N",
        where=FIX,
    ),
    Option(
        ("--apply",),
        "apply",
        "flag",
        FIXING,
        "make the changes: in a --root tree the file changes (with backups), on this host everything, after asking",
        where=FIX,
    ),
    Option(("--yes",), "yes", "flag", FIXING, "with --apply, do not ask before each finding's fix", where=FIX),
    Option(
        ("--format",), "format", "once", OUTPUT, "sh (default): a script; json: the plan", choices=("sh", "json"), default="sh", where=FIX
    ),
    Option(("--output", "-o"), "output", "once", OUTPUT, "write it to FILE instead of standard output", metavar="FILE", where=FIX),
    Option(("--list-rules",), "list_rules", "flag", CHOOSE, "list the rules and exit", where=CHECK),
    Option(
        ("--format",),
        "format",
        "once",
        OUTPUT,
        "text (default), json, markdown, html, or npd (a node-problem-detector plugin line and exit status)",
        choices=FORMATS,
        default="text",
        where=CHECK,
    ),
    Option(
        ("--output", "-o"), "output", "once", OUTPUT, "write the report to FILE instead of standard output", metavar="FILE", where=CHECK
    ),
    Option(("--html",), "html", "once", OUTPUT, "also write a self-contained HTML report to FILE", metavar="FILE", where=CHECK),
    Option(("--junit",), "junit", "once", OUTPUT, "also write JUnit XML (one testcase per check) to FILE", metavar="FILE", where=CHECK),
    Option(("--sarif",), "sarif", "once", OUTPUT, "also write SARIF 2.1.0 (code-scanning views) to FILE", metavar="FILE", where=CHECK),
    Option(("--prom",), "prom", "once", OUTPUT, "also write a Prometheus textfile (node_exporter) to FILE", metavar="FILE", where=CHECK),
    Option(
        ("--fail-on",),
        "fail_on",
        "once",
        OUTPUT,
        "exit 1 when a finding is at least this severe (default high)",
        choices=FAIL_ON,
        default="high",
        where=CHECK,
    ),
    Option(("--strict",), "strict", "flag", OUTPUT, "exit 3 when a rule itself fails", where=CHECK),
    Option(("-v", "--verbose"), "verbose", "flag", OUTPUT, "show evidence, passed and skipped checks", where=CHECK),
    Option(("-q", "--quiet"), "quiet", "flag", OUTPUT, "text: the header, the list of findings and the result line only", where=CHECK),
    Option(
        ("--color",),
        "color",
        "once",
        OUTPUT,
        "text colours: auto (a terminal, unless NO_COLOR is set; FORCE_COLOR forces them), always (for less -R), never",
        choices=("auto", "always", "never"),
        default="auto",
        where=CHECK,
    ),
)


def offered(command: str):
    """The options of ``command`` (CHECK or FIX), in the order --help lists them."""
    return [option for option in OPTIONS if option.where in (BOTH, command)]


def defaults(where: str) -> dict:
    """Each option's value when it is not given, as argparse leaves it: [] for a repeatable
    one, False for a flag."""
    return {option.dest: [] if option.kind == "append" else False if option.kind == "flag" else option.default for option in offered(where)}


def quick(argv):
    """A plain check's command line read as argparse would read it, or None where argparse
    must decide (help, --version, a slip to report, anything unusual)."""
    by_flag = {flag: option for option in offered(CHECK) for flag in option.flags}
    values = defaults(CHECK)
    given = set()
    index = 0
    while index < len(argv):
        word = argv[index]
        index += 1
        name, equals, attached = word.partition("=") if word.startswith("--") else (word, "", "")
        option = by_flag.get(name)
        if option is None:
            return None
        if option.kind == "flag":
            if equals:
                return None
            values[option.dest] = True
            continue
        if equals:
            value = attached
        elif index < len(argv) and not argv[index].startswith("-"):
            value = argv[index]
            index += 1
        else:
            return None  # no value, or one argparse reads as an option (``-5G``, ``-``)
        if option.choices is not None and value not in option.choices:
            return None
        if option.convert is not None:
            try:
                value = option.convert(value)
            except Exception:  # argparse's words for it
                return None
        if option.kind == "append":
            values[option.dest].append(value)
            continue
        if option.dest in given:
            return None
        given.add(option.dest)
        values[option.dest] = value
    if given:
        values["_given"] = given  # as argparser.Once records it
    return SimpleNamespace(**values)
