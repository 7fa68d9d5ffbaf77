"""The kernel command line, and the huge page pools it asks for.

Huge page parameters follow Documentation/admin-guide/mm/hugetlbpage.rst: ``hugepages=N``
applies to the ``hugepagesz=`` (or ``default_hugepagesz=``) before it, or to the default size
when it comes first; ``hugepages=0:N,1:M`` asks per NUMA node (5.16+). Kernels before 5.7
parse by older rules (see Cmdline.hugepage_requests).
"""

from __future__ import annotations

import re

from ai_doctor.facts import fact, unreadable
from ai_doctor.record import Record
from ai_doctor.units import MAX_DIGITS, whole_number

CMDLINE = "/proc/cmdline"
_INVALID = object()


class Param(Record):
    """``name=value`` (value None for a bare flag such as ``quiet``)."""

    __slots__ = ("name", "value")

    @property
    def text(self) -> str:
        return self.name if self.value is None else "%s=%s" % (self.name, self.value)


class HugepageRequest(Record):
    """A pool asked for at boot; ``page_size`` None means the default size. ``leading``: before
    Linux 5.7, a count given before any hugepagesz= (the kernel's default_hstate_max_huge_pages),
    which is never allocated for a gigantic default size. ``per_node``: the pages a per-node
    count (``0:32,1:32``) names, on a kernel before 5.16 that reads only its leading number."""

    __slots__ = ("page_size", "count", "text", "leading", "index", "per_node")
    _defaults = {"leading": False, "index": None, "per_node": None}


class Cmdline(Record):
    """The kernel's parameters in order (those after ``--`` belong to init and are dropped).

    ``source`` names where the line comes from; a line put together from boot loader files
    also has ``origins``, the (path, line number) of each parameter. A line read from grub.cfg
    has ``sources`` too: for each parameter the GRUB defaults assignment grub-mkconfig wrote it
    from, as (path, line number, the assignment as written), or None.
    """

    __slots__ = ("raw", "params", "source", "origins", "sources")
    _defaults = {"origins": None, "sources": None}

    def origin(self, index: int):
        """(path, line number or None) of the parameter at ``index``."""
        return self.origins[index] if self.origins else (self.source, None)

    def grub_source(self, index: int):
        """(path, line number, assignment) in /etc/default/grub or a grub.d/*.cfg file that
        gives the grub.cfg parameter at ``index``; None where the line is not grub.cfg's, or
        the files no longer give it (grub.cfg was not regenerated since they changed)."""
        return self.sources[index] if self.sources else None

    def last(self, name: str):
        """The value of the last ``name=`` (the kernel lets later ones win), or None."""
        found = None
        for param in self.params:
            if param.name == name:
                found = param
        return found

    def first(self, name: str):
        """The first ``name=``, for the parameters where the kernel keeps the first."""
        for param in self.params:
            if param.name == name:
                return param
        return None

    def hugepage_requests(self, default_size=None, version=None):
        """The pools these parameters reserve at boot, in order.

        ``default_size`` is the architecture's default page size (meminfo's Hugepagesize);
        a ``default_hugepagesz=`` on the line takes its place. A size the kernel would not know
        stays None. ``version`` is the kernel's (major, minor) when known: Linux 5.7 rewrote
        this parsing (commit 282f4214384e, "hugetlbfs: clean up command line processing") and
        5.16 added per-node counts; older kernels read the line by their own rules.
        """
        if version is not None and version < (5, 7):
            return _requests_before_5_7(self.params, default_size)
        # The first default_hugepagesz= counts; the kernel warns about and ignores later ones.
        chosen = self.first("default_hugepagesz")
        if chosen is not None and chosen.value is not None:
            default_size = memparse(chosen.value) or default_size
        per_node = version is None or version >= (5, 16)
        requests = []
        size = default_size
        seen = set()
        default_seen = False
        for index, param in enumerate(self.params):
            if param.value is None:
                continue
            if param.name == "default_hugepagesz":
                # A second one is refused, and a hugepages= right after it with it.
                size = _INVALID if default_seen else memparse(param.value) or _INVALID
                default_seen = True
            elif param.name == "hugepagesz":
                size = memparse(param.value) or _INVALID
            elif param.name == "hugepages":
                count = _node_counts(param.value, per_node)
                if count is None or size is _INVALID or size in seen:
                    # Malformed, after an invalid hugepagesz=, or a second count for one size:
                    # the kernel ignores it.
                    continue
                seen.add(size)
                meant = None if per_node else _node_counts(param.value, True)
                requests.append(HugepageRequest(size, count, param.text, index=index, per_node=meant if ":" in param.value else None))
        return requests


def _requests_before_5_7(params, default_size):
    """The pools a kernel before 5.7 reserves, as its mm/hugetlb.c reads the line.

    hugetlb_nrpages_setup(): a count before any hugepagesz= goes to its own slot
    (default_hstate_max_huge_pages), later ones to the last hugepagesz='s pool; the same slot
    twice in a row keeps the first; a malformed count takes the slot as 0 (sscanf "%lu");
    one count after an unsupported hugepagesz= is dropped. setup_hugepagesz(): a size given
    again does not move the pool counts go to. The last default_hugepagesz= names the
    default, and hugetlb_init() fills it from the leading slot only when no count of its own
    was given (a 0 counts as none). There is no per-node form.
    """
    chosen = None
    for param in params:
        if param.name == "default_hugepagesz" and param.value is not None:
            chosen = memparse(param.value) or chosen
    default = chosen or default_size
    counts = {}
    leading = None
    parsed = None  # the pool counts go to; None until a hugepagesz= is given
    declared = set()
    last_slot = None
    valid = True
    for index, param in enumerate(params):
        if param.value is None:
            continue
        if param.name == "hugepagesz":
            size = memparse(param.value)
            if size is None:
                valid = False
            elif size not in declared:
                declared.add(size)
                parsed = size
        elif param.name == "hugepages":
            if not valid:
                valid = True
                continue
            slot = "leading" if parsed is None else parsed
            if slot == last_slot:
                continue
            last_slot = slot
            count = _node_counts(param.value, False)
            count = 0 if count is None else count
            meant = _node_counts(param.value, True) if ":" in param.value else None
            if slot == "leading":
                leading = (count, param.text, index, meant)
            else:
                counts[slot] = (count, param.text, index, meant)
    requests = [HugepageRequest(size, count, text, index=index, per_node=meant) for size, (count, text, index, meant) in counts.items()]
    if leading is not None and default and not counts.get(default, (0,))[0]:
        requests = [r for r in requests if r.page_size != default]
        requests.append(HugepageRequest(default, leading[0], leading[1], True, leading[2], leading[3]))
    return requests


def split_words(text: str, keep_quotes: bool = False, blank=str.isspace):
    """Words split at ``blank`` characters outside double quotes, which group; the quotes are
    dropped unless ``keep_quotes``."""
    words, word, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
            if not keep_quotes:
                continue
        if blank(char) and not quoted:
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(char)
    if word:
        words.append("".join(word))
    return words


def split_cmdline(text: str):
    """Split as the kernel's next_arg() does: whitespace, double quotes group, ``--`` ends."""
    params = []
    for item in split_words(text):
        if item == "--":
            break
        name, sep, value = item.partition("=")
        params.append(Param(name, value if sep else None))
    return params


_MEMPARSE = r"\s*(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([KMGTPEkmgtpe]?)"


def memparse(text: str):
    """The kernel's memparse(): a number in C notation (``0x`` hex, leading-0 octal, decimal)
    with an optional K/M/G/T/P/E suffix (binary); what follows is ignored. None for zero or
    no number."""
    match = re.match(_MEMPARSE, text)
    if not match or len(match.group(1)) > MAX_DIGITS + 2:
        # No 64-bit number has that many digits (a crafted line; int() would refuse it).
        return None
    value = int(match.group(1), 16 if match.group(1)[:2].lower() == "0x" else 8 if match.group(1)[0] == "0" else 10)
    suffix = match.group(2).upper()
    if suffix:
        value <<= 10 * ("KMGTPE".index(suffix) + 1)
    return value or None


_PLAIN_COUNT = r"\s*(\d+)"
_NODE_COUNTS = r"\d+:\d+(?:,\d+:\d+)*"


def _node_counts(value: str, per_node: bool = True):
    """``512`` → 512; ``0:256,1:256`` → 512 (pages over all nodes); malformed → None.

    As mm/hugetlb.c hugepages_setup() reads it: decimal (sscanf ``%lu``), and a plain count
    may carry trailing characters, which the kernel ignores. Before 5.16 there is no
    per-node form, and sscanf reads ``0:256,1:256`` as 0.
    """
    if ":" not in value or not per_node:
        match = re.match(_PLAIN_COUNT, value)
        return whole_number(match.group(1)) if match else None
    if not re.fullmatch(_NODE_COUNTS, value):
        return None
    counts = [whole_number(part.partition(":")[2]) for part in value.split(",")]
    return None if None in counts else sum(counts)


@fact("cmdline")
def cmdline(host, facts):
    """The running kernel's line; in an image, the line its boot loader gives the default kernel."""
    got = host.read_text(CMDLINE)
    if got.missing and not facts.get("running"):
        return facts.get("boot_line")
    if not got.ok:
        return unreadable(host, got, "cannot read")
    return Cmdline(got.data.strip(), tuple(split_cmdline(got.data)), CMDLINE)
