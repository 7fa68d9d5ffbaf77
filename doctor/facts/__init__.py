"""Facts: typed values parsed from a Host, computed once per run and cached.

Each fact is a function ``(host, facts) -> value`` registered with :func:`fact`. When its inputs
are absent it returns :class:`Unavailable` with the reason, which rules pass on as a skip.
Parsers underneath are pure functions of text, so odd input is tested without a Host.
"""

from __future__ import annotations

PROVIDERS = {}


def fact(name: str):
    """Register a fact provider under ``name``."""

    def register(provider):
        if name in PROVIDERS:
            raise ValueError("fact %r registered twice" % name)
        PROVIDERS[name] = provider
        return provider

    return register


class Unavailable:
    """A fact whose inputs could not be read; falsy, with the reason in words.

    ``tried`` optionally lists (path, outcome) pairs, for checks that report the absence itself.
    """

    __slots__ = ("reason", "tried")

    def __init__(self, reason: str, tried=()):
        self.reason = reason
        self.tried = tried

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "Unavailable(%r)" % self.reason


def unreadable(host, got, what: str) -> Unavailable:
    """The reason a file could not be used, worded for a skipped check."""
    if got.missing and not host.live and got.path.startswith(("/proc/", "/sys/")) and not host.exists("/proc/self"):
        return Unavailable("no %s: an image, not a running system" % got.path)
    return Unavailable("%s %s: %s" % (what, got.path, got.describe()))


class Facts:
    """The fact cache for one run over one Host.

    ``inputs[name]`` keeps the slice of the Host log read while the fact was computed
    (nested facts included), so a check that ran on partial data can be named.
    """

    def __init__(self, host, request=None):
        self.host = host
        self.request = request
        self._values = {"request": request}
        self.inputs = {}
        self._computing = []
        self._needs = {}

    def get(self, name: str):
        if self._computing:
            # A fact computed earlier is still an input of this one: its reads count too.
            self._needs.setdefault(self._computing[-1], set()).add(name)
        try:
            return self._values[name]
        except KeyError:
            pass
        try:
            provider = PROVIDERS[name]
        except KeyError:
            raise LookupError("no fact named %r" % name) from None
        if name in self._computing:
            raise RuntimeError("facts depend on each other in a cycle: %s" % " -> ".join(self._computing + [name]))
        start = len(self.host.log)
        self._computing.append(name)
        try:
            value = provider(self.host, self)
        finally:
            self._computing.pop()
        self._values[name] = value
        self.inputs[name] = (start, len(self.host.log))
        return value

    def reads_behind(self, names):
        """The Host log entries read for ``names`` and every fact they read, each once, in
        log order."""
        seen, todo, spans = set(), list(names), set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            spans.add(self.inputs.get(current, (0, 0)))
            todo.extend(self._needs.get(current, ()))
        # Spans nest or overlap (a fact's span holds those computed inside it): merged, each
        # entry is read once.
        reached = 0
        for start, end in sorted(spans):
            for index in range(max(start, reached), end):
                yield self.host.log[index][2]
            reached = max(reached, end)


def _load_providers() -> None:
    # Every module in this package registers its facts on import; new ones need no list.
    import importlib
    import os

    names = set()
    for directory in __path__:
        try:
            names.update(entry[:-3] for entry in os.listdir(directory) if entry.endswith(".py") and not entry.startswith("_"))
        except OSError:
            continue
    for name in sorted(names):
        importlib.import_module("%s.%s" % (__name__, name))


_load_providers()
