"""The rule registry and runner.

A rule is a function from facts to findings, registered with :func:`rule`. Its id, title,
default severity, docs (the docstring) and the facts it reads are declared once, here; every
list of rules (``--list-rules``, ``explain``, report tables) is generated from the registry.

Running: the rules a run selects are called in catalogue order with a view of the facts they
declared. A rule whose required facts are unavailable is skipped with the reason; one that
raises becomes an error result and the run goes on. Review rules run last and see the other
rules' findings and which of them read refused files.
"""

from __future__ import annotations

import os

from ai_doctor import catalogue
from ai_doctor.facts import Unavailable, module_names
from ai_doctor.facts.bootloader import with_grub_sources
from ai_doctor.model import CheckResult, Evidence, Finding, Issue, Pass, Severity, Skip, Status
from ai_doctor.record import Record

# Where rules the catalogue does not list (rule packs') are ordered: after every built-in one.
PACK_ORDER = 1 << 16
# The built-in areas in catalogue order (DESIGN.md); other modules follow by name.
AREAS = ("hugepages", "thp", "overcommit", "memory", "cpu", "storage", "kernel", "gpu", "pci", "limits", "access")

REGISTRY = {}


class Rule(Record):
    """A registered check; ``needs`` are facts it cannot run without, ``uses`` optional ones;
    ``host_only`` names inputs that live on a container's host (the check skips in one)."""

    __slots__ = ("id", "title", "severity", "needs", "uses", "review", "check", "module", "order", "host_only")
    _defaults = {"host_only": None}

    @property
    def docs(self) -> str:
        """The check's docstring, indentation removed; cleaned when read, which a run never does."""
        return _cleandoc(self.check.__doc__ or "")

    @property
    def area(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def summary(self) -> str:
        """The docstring's first paragraph on one line."""
        words = []
        for line in (self.check.__doc__ or "").strip().split("\n"):
            if not line.strip():
                break
            words.append(line.strip())
        return " ".join(words)


class RuleDefinitionError(Exception):
    """A rule declared wrongly (bad id, duplicate id, no docs); a bug in a rule pack."""


def rule(id: str, title: str, severity: Severity, needs=(), uses=(), review=False, host_only=None):
    """Register the decorated function as a check; its docstring is its documentation.

    ``host_only`` says, in words, which inputs belong to the host when the target is a
    container (``"the kernel modules and DKMS trees"``): there the check skips with that
    reason instead of judging the container's own copies, or their absence.
    """

    def register(check):
        area, dot, name = id.partition(".")
        if not (dot and area and name and id.replace(".", "").replace("-", "").replace("_", "").isalnum() and id == id.lower()):
            raise RuleDefinitionError("rule id %r is not of the form area.name" % id)
        if id in REGISTRY:
            raise RuleDefinitionError("rule id %r registered twice (%s, %s)" % (id, REGISTRY[id].module, check.__module__))
        if not (check.__doc__ or "").strip():
            raise RuleDefinitionError("rule %r has no documentation (docstring)" % id)
        # Ordered as the catalogue lists it, whatever was imported first; packs' rules after.
        place = catalogue.position(id)
        order = place if place is not None else PACK_ORDER + len(REGISTRY)
        REGISTRY[id] = Rule(id, title, severity, tuple(needs), tuple(uses), review, check, check.__module__, order, host_only)
        return check

    return register


def _cleandoc(text: str) -> str:
    """Docstring indentation removed (inspect.cleandoc without importing inspect)."""
    lines = text.expandtabs().split("\n")
    indents = [len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()]
    margin = min(indents) if indents else 0
    cleaned = [lines[0].strip()] + [line[margin:].rstrip() for line in lines[1:]]
    return "\n".join(cleaned).strip()


# -- discovery ---------------------------------------------------------------------------

_loaded = False


def load_rules() -> dict:
    """Import every built-in rule module and any registered rule packs, once."""
    global _loaded
    if _loaded:
        return REGISTRY
    _loaded = True
    import ai_doctor.rules as package

    names = module_names(package.__path__)
    # A module's area is its name up to "_" (gpu_devices is gpu's): the catalogue reads by area.
    for name in sorted(names, key=lambda n: (AREAS.index(n.split("_", 1)[0]) if n.split("_", 1)[0] in AREAS else len(AREAS), n)):
        __import__("ai_doctor.rules." + name)  # not importlib's import_module: importlib costs every start
    load_packs(catalogue.pack_modules())
    return REGISTRY


def load_packs(modules) -> None:
    """Import the rule packs' modules (``catalogue.pack_modules()``); they register on import."""
    for module in modules:
        __import__(module)


def select(only=(), skip=()):
    """Rules chosen by ids or area names, in catalogue order; only the modules that register
    them are imported. Unknown names raise LookupError naming them, a choice that leaves nothing
    raises ValueError."""
    chosen = catalogue.choose(catalogue.listed(), only, skip)
    for listed in chosen:
        if listed.id not in REGISTRY:
            __import__(listed.module)
    return [REGISTRY[listed.id] for listed in chosen]


# -- running -----------------------------------------------------------------------------


class UndeclaredFact(Exception):
    """A rule read a fact it did not declare."""


class RuleAudit(Record):
    """For review rules: what another rule did and which of its inputs were refused."""

    __slots__ = ("rule", "title", "status", "failed_reads", "severity")
    _defaults = {"severity": None}


class FactView:
    """The facts one rule declared, by attribute; records what it used."""

    __slots__ = ("_facts", "_allowed", "_rule", "used", "findings", "audit")

    def __init__(self, facts, rule_, findings=(), audit=()):
        self._facts = facts
        self._rule = rule_
        self._allowed = set(rule_.needs) | set(rule_.uses)
        self.used = set()
        self.findings = findings
        self.audit = audit

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._allowed:
            raise UndeclaredFact("rule %s reads fact %r without declaring it in needs/uses" % (self._rule.id, name))
        self.used.add(name)
        return self._facts.get(name)


def run(facts, rules):
    """Run ``rules`` over ``facts``; returns (check results in catalogue order, ranked findings)."""
    results = {}
    findings = []
    audit = []
    ordinary = [r for r in rules if not r.review]
    for rule_ in ordinary:
        result, used = _run_one(facts, rule_, (), ())
        results[rule_.id] = result
        # One walk over what the rule's facts read: refused reads, and reads cut at the cap.
        reads = list(facts.reads_behind(used))
        refused = tuple(_unique_paths(got for got in reads if got.failed))
        cut = [got for got in reads if got.ok and got.truncated]
        cut = sorted({"%s (the first %s)" % (got.path, _amount(_read_size(got))) for got in cut})
        if cut and result.status in (Status.PASS, Status.FINDING):
            result = _said_in_part(result, cut)
            results[rule_.id] = result
        denied = sum(1 for got in refused if got.denied)
        if denied and result.status is Status.PASS:
            # A pass from what could be read is not a clean bill: say so where it is read.
            note = "judged without %d unreadable file%s (access.permission-denied)" % (denied, "" if denied == 1 else "s")
            result = result._replace(reason="%s; %s" % (result.reason.rstrip("."), note) if result.reason else note)
            results[rule_.id] = result
        findings.extend(result.findings)
        audit.append(RuleAudit(rule_.id, rule_.title, result.status, refused, rule_.severity))
    ranked = tuple(sorted(findings, key=lambda f: f.sort_key))
    for rule_ in rules:
        if rule_.review:
            result, _used = _run_one(facts, rule_, ranked, tuple(audit))
            results[rule_.id] = result
            findings.extend(result.findings)
    ordered = tuple(results[r.id] for r in sorted(rules, key=lambda r: r.order))
    return ordered, tuple(sorted(findings, key=lambda f: f.sort_key))


def _read_size(got) -> int:
    """How much of its file a read cut at the cap took: a derivation says so in ``detail``, a
    read is its own length."""
    return int(got.detail) if (got.detail or "").isdigit() else len(got.data)


def _amount(size: int) -> str:
    """A read's size in words; each reader caps what it reads (8 MiB, or less for small files)."""
    # Cut at the last whole line, so a little under the cap: rounded, it reads as the cap.
    return "%d MiB" % ((size + (1 << 19)) >> 20) if size >= 1 << 20 else "%d KiB" % max(1, (size + 512) >> 10)


def _said_in_part(result, paths):
    """``result`` saying that it rests on files read only up to the cap."""
    note = "read only in part: %s" % ", ".join(paths)
    if result.status is Status.PASS:
        return result._replace(reason="%s; judged on files %s" % (result.reason.rstrip("."), note) if result.reason else "files " + note)
    changed = tuple(f._replace(message="%s (Files %s.)" % (f.message, note)) for f in result.findings)
    return result._replace(findings=changed)


# Evidence shown for one finding; a file repeating a key a million times must not make a
# report of a million lines.
MAX_EVIDENCE = 40


# Rows of one value in numbered folders (policy0 … policy255) collapse into one from this many.
COLLAPSE_FROM = 3


def _numbered(path: str):
    """(path with its first numbered folder written ``name{}``, the number), or None: for
    ``/sys/devices/system/cpu/cpufreq/policy4/scaling_governor``, ``(…/policy{}/…, 4)``."""
    parts = path.split("/")
    for index, part in enumerate(parts[:-1]):
        stem = part.rstrip("0123456789")
        digits = part[len(stem) :]
        if stem and digits and len(digits) <= 6 and stem.isalpha():
            return "/".join(parts[:index] + [stem + "{}"] + parts[index + 1 :]), int(digits)
    return None


def _number_list(numbers) -> str:
    """``0-3,8,10-11``, as the kernel writes CPU lists."""
    runs = []
    for number in sorted(set(numbers)):
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ",".join(str(a) if a == b else "%d-%d" % (a, b) for a, b in runs)


def _collapsed(items):
    """One row for many numbered files that say the same (``policy{0-63}``), in place of the
    first of them; every other row as it is."""
    groups = {}
    for item in items:
        numbered = _numbered(item.path) if item.line is None else None
        if numbered is not None:
            groups.setdefault((numbered[0], item.value), []).append(numbered[1])
    out, done = [], set()
    for item in items:
        numbered = _numbered(item.path) if item.line is None else None
        key = (numbered[0], item.value) if numbered is not None else None
        if key is None or len(groups[key]) < COLLAPSE_FROM:
            out.append(item)
        elif key not in done:
            done.add(key)
            out.append(Evidence(key[0].replace("{}", "{%s}" % _number_list(groups[key]), 1), item.value))
    return out


def _evidence(items):
    # One file can be reached by two names (sysctl.conf and its 99-sysctl.conf link).
    unique = tuple(_collapsed(tuple(dict.fromkeys(items))))
    if len(unique) <= MAX_EVIDENCE:
        return unique
    return unique[:MAX_EVIDENCE] + (Evidence("…", "%d more not shown" % (len(unique) - MAX_EVIDENCE)),)


def _unique_paths(reads):
    seen = set()
    for got in reads:
        if got.path not in seen:
            seen.add(got.path)
            yield got


def _run_one(facts, rule_, findings, audit):
    view = FactView(facts, rule_, findings, audit)
    try:
        if rule_.host_only:
            container = facts.get("container")
            if container and container.detected:
                return CheckResult(rule_.id, rule_.title, Status.SKIP, host_side(rule_.host_only, container), ()), {"container"}
        for name in rule_.needs:
            value = getattr(view, name)
            if isinstance(value, Unavailable):
                return CheckResult(rule_.id, rule_.title, Status.SKIP, value.reason, ()), view.used
        outcome = rule_.check(view)
        result = _result(rule_, outcome, facts)
    except Exception as exc:  # one broken rule never stops the run
        result = CheckResult(rule_.id, rule_.title, Status.ERROR, _describe_error(exc), ())
    return result, view.used


def host_side(inputs: str, container) -> str:
    """Why a check of the host's ``inputs`` skips inside a container."""
    where = container.where.replace("this Kubernetes pod's node", "the node")
    return "inside a container, what this check reads belongs to %s: %s; run aidoctor there (or take a snapshot there)" % (where, inputs)


def _result(rule_, outcome, facts) -> CheckResult:
    if outcome is None:
        return CheckResult(rule_.id, rule_.title, Status.PASS, "", ())
    if isinstance(outcome, Skip):
        return CheckResult(rule_.id, rule_.title, Status.SKIP, outcome.reason, ())
    if isinstance(outcome, Pass):
        return CheckResult(rule_.id, rule_.title, Status.PASS, outcome.note, ())
    if isinstance(outcome, Issue):
        outcome = [outcome]
    findings = []
    for index, issue in enumerate(outcome):
        if not isinstance(issue, Issue):
            raise TypeError("rule %s returned %r, not an Issue" % (rule_.id, type(issue).__name__))
        findings.append(
            Finding(
                rule_.id,
                issue.severity or rule_.severity,
                issue.title or rule_.title,
                issue.message,
                # A grub.cfg parameter also names the GRUB defaults line it was written from.
                _evidence(with_grub_sources(issue.evidence, facts)),
                tuple(issue.remediation),
                issue.impact,
                (rule_.order, index),
            )
        )
    if not findings:
        return CheckResult(rule_.id, rule_.title, Status.PASS, "", ())
    return CheckResult(rule_.id, rule_.title, Status.FINDING, "", tuple(findings))


def _describe_error(exc: Exception) -> str:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = " at %s:%d" % (os.path.basename(last.filename), last.lineno)
    return "%s: %s%s" % (type(exc).__name__, exc, where)
