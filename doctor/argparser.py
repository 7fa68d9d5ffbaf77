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

SUBCOMMANDS = ("check", "fix", "explain", "snapshot", "merge", "bench")


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


def command(fix: bool = False, prog: str = "aidoctor") -> argparse.ArgumentParser:
    """The parser of the check (``prog`` is ``aidoctor`` or ``aidoctor check``) or of fix."""
    if fix:
        parser = Parser(
            prog="aidoctor fix",
            formatter_class=formatter,
            description=(
                "The fixes of what the check finds: a POSIX sh script to review and run as root (the first way of fixing "
                "each finding, unless --choose picks another), a JSON plan, or applied with --apply."
            ),
            epilog="Exit codes: 0 printed or applied, 1 a change failed while applying, 2 bad input, 3 aidoctor failed.",
        )
    else:
        parser = Parser(
            prog=prog,
            usage="%(prog)s [options]\n       aidoctor {fix,explain,snapshot,merge,bench} … (see the end of --help)",
            formatter_class=formatter,
            description="Diagnose a Linux host (or an image or snapshot of one) before it loads and serves an AI model.",
            epilog=(
                "Subcommands: `aidoctor check` (the default), `aidoctor fix`, `aidoctor explain RULE`, "
                "`aidoctor snapshot -o FILE.tar.gz|DIR/`, "
                "`aidoctor merge REPORT.json …`, `aidoctor bench PATH…|--size 8G`. Exit "
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
