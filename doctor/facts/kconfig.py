"""The kernel build configuration, from wherever the host keeps it.

Sources, first readable wins: /proc/config.gz (CONFIG_IKCONFIG_PROC, the running kernel's own),
/boot/config-REL, /usr/lib/modules/REL/config, /lib/modules/REL/config (what distributions
install beside the kernel).
"""

from __future__ import annotations

import zlib

from ai_doctor.facts import Unavailable, fact

PROC_CONFIG = "/proc/config.gz"


class KernelConfig:
    """``CONFIG_*`` options (``y``, ``m``, strings as written; unset options map to ``n``).

    ``source`` is the file used; ``tried`` lists (path, outcome) for every place looked at.
    The text is parsed on first use: a distribution config has thousands of lines and most
    runs ask about none of them.
    """

    __slots__ = ("text", "source", "release", "tried", "_parsed")

    def __init__(self, text: str, source: str, release, tried):
        self.text = text
        self.source = source
        self.release = release
        self.tried = tried
        self._parsed = None

    def _options(self):
        if self._parsed is None:
            self._parsed = parse_kconfig(self.text)
        return self._parsed

    @property
    def options(self) -> dict:
        return self._options()[0]

    @property
    def notes(self):
        return self._options()[1]

    def get(self, name: str):
        """``y``, ``m``, ``n`` or the value; None when the option is not in this config at all."""
        return self.options.get(name if name.startswith("CONFIG_") else "CONFIG_" + name)

    def enabled(self, name: str):
        """True for ``y``/``m``, False for ``n``, None when the config does not mention it."""
        value = self.get(name)
        if value is None:
            return None
        return value in ("y", "m")


def parse_kconfig(text: str):
    """Options and notes from a .config file; odd lines are noted, never fatal."""
    options = {}
    notes = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            # "# CONFIG_FOO is not set" records an unset option; other comments are headings.
            words = line[1:].split()
            if len(words) == 4 and words[0].startswith("CONFIG_") and words[1:] == ["is", "not", "set"]:
                options[words[0]] = "n"
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.startswith("CONFIG_"):
            notes.append("line %d not understood: %r" % (number, line[:80]))
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        options[name] = value
    return options, notes


@fact("kernel_config")
def kernel_config(host, facts):
    release = facts.get("release")
    candidates = [PROC_CONFIG]
    if release:
        candidates += [
            "/boot/config-%s" % release,
            "/usr/lib/modules/%s/config" % release,
            "/lib/modules/%s/config" % release,
        ]
    tried = []
    for path in candidates:
        got = host.read_bytes(path, cap=16 << 20)
        tried.append((path, got.describe()))
        if not got.ok:
            continue
        data = got.data
        if path.endswith(".gz"):
            stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                data = stream.decompress(data, 16 << 20)
            except zlib.error as exc:
                tried[-1] = (path, "not gzip data (%s)" % exc)
                continue
            if not stream.eof:
                tried[-1] = (path, "larger than 16 MiB uncompressed" if stream.unconsumed_tail else "truncated gzip data")
                continue
        text = data.decode("utf-8", "replace")
        if "CONFIG_" not in text:
            tried[-1] = (path, "holds no CONFIG_ lines")
            continue
        return KernelConfig(text, path, release or None, tuple(tried))
    if not release:
        reason = "%s: %s, and the kernel release is unknown (%s), so /boot/config-RELEASE cannot be looked for" % (
            PROC_CONFIG,
            tried[0][1],
            release.reason,
        )
    else:
        reason = "no readable kernel config: " + "; ".join("%s %s" % item for item in tried)
    return Unavailable(reason, tuple(tried))


@fact("configs_module")
def configs_module(host, facts):
    """The ``configs`` module of the running kernel (CONFIG_IKCONFIG=m), or None."""
    release = facts.get("release")
    if not release:
        return None
    for base in ("/lib/modules", "/usr/lib/modules"):
        for suffix in ("", ".xz", ".gz", ".zst"):
            path = "%s/%s/kernel/kernel/configs.ko%s" % (base, release, suffix)
            if host.exists(path):
                return path
    return None
