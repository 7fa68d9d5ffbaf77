"""argparse as aidoctor uses it: parsers that refuse abbreviations and say what was meant, an
action that takes a value once, and the check's and fix's parsers built from ai_doctor.options.

Imported only where argparse is needed (--help, an error, the subcommands): a plain check reads
its command line with ai_doctor.options.quick.
"""

from __future__ import annotations

import argparse
import os
import sys

from ai_doctor import __version__, options
from ai_doctor.exitcodes import UsageError

SUBCOMMANDS = ("check", "fix", "explain", "snapshot", "merge", "bench", "completion")
SHELLS = ("bash", "zsh", "tcsh")
EXPLAIN = "What a rule checks, why, and the kernel documentation behind it; an area lists its rules."
COMPLETION = "Print the completion script for a shell: `source <(aidoctor completion bash)` in ~/.bashrc (zsh alike)."


class Parser(argparse.ArgumentParser):
    """Refuses abbreviations (``--model`` is not ``--model-size``) and says what was meant when
    an option or subcommand is misspelt."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(message + self._suggestion(message))

    def _suggestion(self, message: str) -> str:
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return ""
        import difflib

        known = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        hints = []
        for word in message[len(prefix) :].split():
            if word.startswith("--"):
                close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.75)
            elif not word.startswith("-") and self.prog == "aidoctor":
                close = difflib.get_close_matches(word, SUBCOMMANDS, n=1, cutoff=0.6)
            else:
                close = []
            if close:
                hints.append("%s for %s" % (close[0], word))
        return " (did you mean %s?)" % ", ".join(hints) if hints else ""


class Once(argparse.Action):
    """Stores a value, refusing a second one: ``--model-size 8G --model-size 80G`` has no
    right answer to guess."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given", set())
        if self.dest in given:
            parser.error("%s given more than once" % "/".join(self.option_strings))
        given.add(self.dest)
        setattr(namespace, self.dest, values)


def formatter(prog):
    # argparse would import shutil (and its compression modules) just to ask for the width.
    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns - 2
    except (OSError, ValueError, AttributeError):  # AttributeError: stderr closed (None)
        width = 78
    return argparse.HelpFormatter(prog, width=max(width, 40))


_ACTIONS = {"once": Once, "flag": "store_true", "append": "append"}


def command(fix: bool = False, prog: str = "aidoctor", formatter_class=formatter) -> argparse.ArgumentParser:
    """The parser of the check (``prog`` is ``aidoctor`` or ``aidoctor check``) or of fix."""
    if fix:
        parser = Parser(
            prog="aidoctor fix",
            formatter_class=formatter_class,
            description=(
                "The fixes of what the check finds: a POSIX sh script to review and run as root (the first way of fixing "
                "each finding, unless --choose picks another), a JSON plan, or applied with --apply."
            ),
            epilog="Exit codes: 0 printed or applied, 1 a change failed while applying, 2 bad input, 3 aidoctor failed.",
        )
    else:
        parser = Parser(
            prog=prog,
            usage="%(prog)s [options]\n       aidoctor {fix,explain,snapshot,merge,bench,completion} … (see the end of --help)",
            formatter_class=formatter_class,
            description="Diagnose a Linux host (or an image or snapshot of one) before it loads and serves an AI model.",
            epilog=(
                "Subcommands: `aidoctor check` (the default), `aidoctor fix`, `aidoctor explain RULE`, "
                "`aidoctor snapshot -o FILE.tar.gz|DIR/`, "
                "`aidoctor merge REPORT.json …`, `aidoctor bench PATH…|--size 8G`, `aidoctor completion bash|zsh|tcsh`. Exit "
                "codes: 0 nothing at or above --fail-on, 1 findings at or above it, 2 bad input, 3 aidoctor failed."
            ),
        )
    groups = {}
    for option in options.offered(options.FIX if fix else options.CHECK):
        group = groups.get(option.group)
        if group is None:
            group = groups[option.group] = parser.add_argument_group(option.group)
        settings = {"action": _ACTIONS[option.kind], "dest": option.dest, "help": option.help}
        if option.kind == "append":
            settings["default"] = []
        elif option.default is not None:
            settings["default"] = option.default
        for name, value in (("metavar", option.metavar), ("choices", option.choices), ("type", option.convert)):
            if value is not None:
                settings[name] = value
        group.add_argument(*option.flags, **settings)
    if not fix:
        parser.add_argument("--version", action="version", version="aidoctor %s" % __version__)
    return parser


def snapshot_command(formatter_class=formatter) -> argparse.ArgumentParser:
    parser = Parser(
        prog="aidoctor snapshot",
        formatter_class=formatter_class,
        description="Record what the checks read on this host as a tree that `aidoctor --root DIR` analyses anywhere.",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE.tar.gz|DIR/",
        required=True,
        help="the archive to create (.tar.gz or .tgz), or with a trailing / (or --dir) a folder; it must not exist",
    )
    parser.add_argument("--dir", action="store_true", help="-o names a folder to create, not an archive")
    parser.add_argument("--root", metavar="DIR", help="snapshot a host tree instead of this host")
    parser.add_argument(
        "--model", metavar="PATH", help="keep what --model PATH reads (the weight files' headers, summarized; never the weights)"
    )
    return parser


def merge_command(formatter_class=formatter) -> argparse.ArgumentParser:
    parser = Parser(
        prog="aidoctor merge",
        formatter_class=formatter_class,
        description="Combine many hosts' JSON reports (aidoctor --format json) into one fleet view.",
    )
    parser.add_argument("reports", metavar="REPORT.json|DIR", nargs="+", help="reports to combine; a folder stands for its *.json files")
    parser.add_argument("--format", action=Once, choices=("text", "markdown", "json", "html"), default="text", help="for standard output")
    parser.add_argument("--output", "-o", action=Once, metavar="FILE", help="write it to FILE instead of standard output")
    parser.add_argument("--html", action=Once, metavar="FILE", help="also write the fleet page as self-contained HTML to FILE")
    parser.add_argument(
        "--max-age",
        action=Once,
        metavar="AGE",
        default="7d",
        help="mark reports older than AGE stale: 7d, 36h, 90m or seconds (default 7d)",
    )
    parser.add_argument(
        "--fail-on",
        action=Once,
        choices=options.FAIL_ON,
        default="never",
        help="exit 1 when a host has a finding at least this severe (default never: exit 0)",
    )
    return parser


def whole(rules, formatter_class=formatter) -> argparse.ArgumentParser:
    """The whole command line as one parser, every subcommand under it, for the completion
    scripts and the manual page (tools/generate_share.py); ``rules``: the rule catalogue,
    whose ids and areas complete after --only, --skip and explain. The command itself parses
    each subcommand with its own parser (the check's words need no subcommand)."""
    from ai_doctor import benchcmd

    names = sorted(rules) + sorted({rule.area for rule in rules.values()})
    rule_names = {"bash": "_aidoctor_rules", "zsh": "(%s)" % " ".join(names), "tcsh": "(%s)" % " ".join(names)}
    parser = command(formatter_class=formatter_class)
    parser.usage = "%(prog)s [check] [options] | %(prog)s {fix,explain,snapshot,merge,bench,completion} ..."
    subcommands = parser.add_subparsers(title="subcommands", dest="subcommand", metavar="SUBCOMMAND")
    # Every parser formatted by ``formatter_class``: argparse's default follows the terminal's width.
    for name, help_text, made in (
        ("check", "the checkup (the default: `aidoctor OPTIONS` is `aidoctor check OPTIONS`)", command(prog="aidoctor check")),
        ("fix", "the fixes of what the check finds: a script, a JSON plan, or applied", command(fix=True)),
        ("snapshot", "record what the checks read, to analyse elsewhere", snapshot_command()),
        ("merge", "combine many hosts' JSON reports into a fleet view", merge_command()),
        ("bench", "time model loading the ways loaders do it", benchcmd.parser(Parser, formatter_class)),
    ):
        subcommands.add_parser(
            name,
            prog="aidoctor " + name,
            parents=[made],
            add_help=False,
            help=help_text,
            description=made.description,
            formatter_class=formatter_class,
        )
    for name, help_text, description in (
        ("explain", "what a rule checks and why, or an area's rules", EXPLAIN),
        ("completion", "print the shell completion script", COMPLETION),
    ):
        subcommands.add_parser(name, prog="aidoctor " + name, help=help_text, description=description, formatter_class=formatter_class)
    explain, completion = subcommands.choices["explain"], subcommands.choices["completion"]
    explain.add_argument("rule", metavar="RULE|AREA", choices=names, help="a rule id (memory.headroom) or an area (memory)")
    completion.add_argument("shell", choices=SHELLS, help="the shell the script is for")
    for sub in [parser] + list(subcommands.choices.values()):
        for action in sub._actions:
            if action.dest in ("only", "skip"):
                action.complete = rule_names
    return parser
