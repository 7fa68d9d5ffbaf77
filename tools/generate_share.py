"""Generate the shell completion scripts and the manual page from the command's one argparse
definition (ai_doctor.argparser.whole), into doctor/share/ (installed as ai_doctor/share/), and
the rule catalogue (rules/_catalogue.py, read by ai_doctor.catalogue) from the rule modules:

    python tools/generate_share.py            # after changing an option, a subcommand or a rule's title, severity or docs
    python tools/generate_share.py --check    # exit 1 where a file is not what it would generate

shtab writes the completion scripts (bash, zsh, tcsh) and argparse-manpage the page (both in the
test extra; the command only reads what they wrote: `aidoctor completion bash`). Rule ids and
areas complete after --only, --skip and explain, listed from the built-in catalogue. The output
is the same on every machine: the help is formatted 80 columns wide and the page carries this
version's month, not today's date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
SHARE = CHECKOUT / "doctor" / "share"
CATALOGUE = CHECKOUT / "rules" / "_catalogue.py"
MONTH = "December 2026"  # of this version (ai_doctor.__version__)
SUMMARY = "diagnose Linux hosts that load and serve AI models"
SECTIONS = (
    (
        "exit status",
        ".TP\n0\nnothing at or above --fail-on\n.TP\n1\nfindings at or above --fail-on\n.TP\n2\nbad input (one line on stderr names it)\n"
        ".TP\n3\naidoctor itself failed, or a rule failed under --strict",
    ),
    (
        "environment",
        ".TP\nNO_COLOR, FORCE_COLOR\nturn the terminal's colours off, or on where it is not a terminal\n"
        ".TP\nXDG_CACHE_HOME\nwhere aidoctor keeps its cache folder (~/.cache without it)\n"
        ".TP\nAIDOCTOR_NO_CACHE\nset: keep nothing between runs\n"
        ".TP\nAIDOCTOR_PYZ_CACHE\nwhere aidoctor.pyz unpacks its code\n"
        ".TP\nHF_HOME, HF_HUB_CACHE, OLLAMA_MODELS\nwhere model caches live (storage.model-network)",
    ),
    (
        "examples",
        ".nf\naidoctor --model-size 140G\naidoctor --root /mnt/image --image --format json --fail-on high\n"
        "aidoctor fix --model-size 140G > fix.sh\naidoctor snapshot -o host.tar.gz\naidoctor --snapshot host.tar.gz --html report.html\n"
        "aidoctor merge reports/ --html fleet.html\naidoctor explain memory.headroom\nsource <(aidoctor completion bash)\n.fi",
    ),
    ("see also", "sysctl(8), proc(5), the README of the source distribution for every rule and the kernel documentation it cites"),
)


def fixed_width(prog):
    return argparse.HelpFormatter(prog, width=80)


def catalogue(rules) -> str:
    """ai_doctor.rules._catalogue: the built-in rules as ai_doctor.catalogue lists them."""
    rows = "".join(
        "    (%s),\n" % ", ".join(json.dumps(value, ensure_ascii=False) for value in (r.id, r.title, r.severity.value, r.summary, r.module))
        # In the order the rule modules registered them (engine.load_rules imports by area), not
        # by Rule.order, which the catalogue being written decides.
        for r in rules.values()
    )
    return (
        '"""The built-in rules in catalogue order: (id, title, default severity, summary, module).\n\n'
        "Written by tools/generate_share.py from the rule modules, which register them; run it after\n"
        "adding a rule or changing one's title, severity or docstring (tests/test_share.py checks).\n"
        '"""\n\n# ruff: noqa: E501\n# fmt: off\nRULES = (\n%s)\n# fmt: on\n' % rows
    )


def generated() -> dict:
    """File under the checkout → its text."""
    import shtab
    from argparse_manpage.manpage import Manpage

    from ai_doctor import __version__, argparser, engine

    rules = {rule_id: rule for rule_id, rule in engine.load_rules().items() if rule.module.startswith("ai_doctor.rules.")}
    names = sorted(rules) + sorted({rule.area for rule in rules.values()})
    preamble = '_aidoctor_rules() {\n  compgen -W "%s" -- "$1"\n}\n' % " ".join(names)
    files = {CATALOGUE: catalogue(rules)}
    for shell in argparser.SHELLS:
        parser = argparser.whole(rules, fixed_width)
        files[SHARE / ("aidoctor." + shell)] = shtab.complete(parser, shell, preamble={"bash": preamble} if shell == "bash" else "")
    parser = argparser.whole(rules, fixed_width)
    parser._manpage = [{"heading": heading, "content": content} for heading, content in SECTIONS]
    data = {"project_name": "aidoctor", "version": __version__, "date": MONTH, "manual_title": "aidoctor manual", "description": SUMMARY}
    page = str(Manpage(parser, _data=data))
    # roff is ASCII: any other character as its escape (\[u2026] for …), as groff without preconv reads it.
    files[SHARE / "aidoctor.1"] = "".join(c if c.isascii() else "\\[u%04X]" % ord(c) for c in page)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args()
    stale = []
    for path, text in sorted(generated().items()):
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(CHECKOUT)))
            continue
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print("wrote", path.relative_to(CHECKOUT))
    if stale:
        print("not what tools/generate_share.py makes (run it): %s" % ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
