"""The kernel command line, and the huge page pools it asks for.

Huge page parameters follow Documentation/admin-guide/mm/hugetlbpage.rst: ``hugepages=N``
applies to the ``hugepagesz=`` (or ``default_hugepagesz=``) before it, or to the default size
when it comes first; ``hugepages=0:N,1:M`` asks per NUMA node (5.16+).
"""

from __future__ import annotations

from ai_doctor.facts import fact, unreadable
from ai_doctor.record import Record

CMDLINE = "/proc/cmdline"
_INVALID = object()


class Param(Record):
    """``name=value`` (value None for a bare flag such as ``quiet``)."""

    __slots__ = ("name", "value")

    @property
    def text(self) -> str:
        return self.name if self.value is None else "%s=%s" % (self.name, self.value)


class HugepageRequest(Record):
    """A pool asked for at boot; ``page_size`` None means the default size."""

    __slots__ = ("page_size", "count", "text")


class Cmdline(Record):
    """The kernel's parameters in order (those after ``--`` belong to init and are dropped)."""

    __slots__ = ("raw", "params", "source")

    def last(self, name: str):
        """The value of the last ``name=`` (the kernel lets later ones win), or None."""
        found = None
        for param in self.params:
            if param.name == name:
                found = param
        return found

    def hugepage_requests(self, default_size=None):
        """The pools these parameters reserve at boot, in order.

        ``default_size`` is the architecture's default page size (meminfo's Hugepagesize);
        a ``default_hugepagesz=`` on the line takes its place. A size the kernel would not know
        stays None.
        """
        chosen = self.last("default_hugepagesz")
        if chosen is not None and chosen.value is not None:
            default_size = memparse(chosen.value) or default_size
        requests = []
        size = default_size
        seen = set()
        for param in self.params:
            if param.value is None:
                continue
            if param.name in ("hugepagesz", "default_hugepagesz"):
                size = memparse(param.value) or _INVALID
            elif param.name == "hugepages":
                count = _node_counts(param.value)
                if count is None or size is _INVALID or size in seen:
                    # Malformed, after an invalid hugepagesz=, or a second count for one size:
                    # the kernel ignores it.
                    continue
                seen.add(size)
                requests.append(HugepageRequest(size, count, param.text))
        return requests


def split_cmdline(text: str):
    """Split as the kernel's next_arg() does: whitespace, double quotes group, ``--`` ends."""
    params = []
    word = []
    quoted = False
    words = []
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char.isspace() and not quoted:
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(char)
    if word:
        words.append("".join(word))
    for item in words:
        if item == "--":
            break
        name, sep, value = item.partition("=")
        params.append(Param(name, value if sep else None))
    return params


def memparse(text: str):
    """The kernel's memparse(): a number with an optional K/M/G/T/P/E suffix (binary)."""
    text = text.strip()
    scale = 1
    if text and text[-1].upper() in "KMGTPE":
        scale = 1 << (10 * ("KMGTPE".index(text[-1].upper()) + 1))
        text = text[:-1]
    try:
        value = int(text, 0)
    except ValueError:
        return None
    return value * scale if value > 0 else None


def _node_counts(value: str):
    """``512`` → 512; ``0:256,1:256`` → 512 (pages over all nodes); malformed → None."""
    if ":" not in value:
        try:
            return int(value, 0)
        except ValueError:
            return None
    total = 0
    for part in value.split(","):
        node, sep, count = part.partition(":")
        try:
            int(node)
            total += int(count, 0)
        except ValueError:
            return None
    return total


@fact("cmdline")
def cmdline(host, facts):
    got = host.read_text(CMDLINE)
    if not got.ok:
        return unreadable(host, got, "cannot read")
    return Cmdline(got.data.strip(), tuple(split_cmdline(got.data)), CMDLINE)
