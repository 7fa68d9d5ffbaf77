"""The kernel build configuration, from wherever the host keeps it.

Sources, first readable wins: /proc/config.gz (CONFIG_IKCONFIG_PROC, the running kernel's own),
/boot/config-REL, /usr/lib/modules/REL/config, /lib/modules/REL/config (what distributions
install beside the kernel), then the config embedded with CONFIG_IKCONFIG: in the configs
module (kernel/kernel/configs.ko, plain or compressed), in the kernel image /boot/vmlinuz-REL
(inside its compressed payload), or in a debug vmlinux.
"""

from __future__ import annotations

import zlib

from ai_doctor.facts import Unavailable, fact

PROC_CONFIG = "/proc/config.gz"
# The first line of a config that make writes: ``# Linux/ARCH RELEASE Kernel Configuration``.
_HEADER = ("# Linux/", " Kernel Configuration")
MODULE_ROOTS = ("/lib/modules", "/usr/lib/modules")


class KernelConfig:
    """``CONFIG_*`` options (``y``, ``m``, strings as written; unset options map to ``n``).

    ``source`` is the file used; ``tried`` lists (path, outcome) for every place looked at.
    The text is parsed on first use: a distribution config has thousands of lines and most
    runs ask about none of them.
    """

    __slots__ = ("text", "source", "release", "tried", "embedded", "_parsed")

    def __init__(self, text: str, source: str, release, tried, embedded: bool = False):
        self.text = text
        self.source = source
        self.release = release
        self.tried = tried
        # Taken out of a module or kernel image (IKCONFIG), not a config file.
        self.embedded = embedded
        self._parsed = None

    @property
    def described(self):
        """The release the config's own header names (``# Linux/x86 6.8.0-45-generic Kernel
        Configuration``); None when it has none."""
        start, end = _HEADER
        for line in self.text[:2048].split("\n"):
            if line.startswith(start) and line.endswith(end):
                words = line[len(start) : -len(end)].split(" ")
                # Two words, one space apart, neither holding white space.
                if len(words) == 2 and all(word.split() == [word] for word in words):
                    return words[1]
        return None

    @property
    def where(self) -> str:
        return "the config embedded in %s" % self.source if self.embedded else self.source

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
        """``y``, ``m``, ``n`` or the value; None when the option is not in this config at all.

        Before the whole text is parsed, one option is looked up where it is written: a run
        that asks about three options of a 10,000-line config should not parse them all.
        """
        key = name if name.startswith("CONFIG_") else "CONFIG_" + name
        if self._parsed is not None:
            return self._parsed[0].get(key)
        text = self.text
        # Every place the name is written at the start of a line, the last winning: found with
        # str.find (a regex per option costs more than the rest of a run's rules).
        last = (-1, None)
        for needle, unset in ((key + "=", False), ("# %s is not set" % key, True)):
            at = text.find(needle)
            while at != -1:
                end = text.find("\n", at)
                end = len(text) if end == -1 else end
                if (at == 0 or text[at - 1] == "\n") and at > last[0]:
                    rest = text[at + len(needle) : end].rstrip(" \t\r")
                    if not unset:
                        last = (at, rest[1:-1] if len(rest) >= 2 and rest[0] == rest[-1] == '"' else rest)
                    elif not rest:
                        last = (at, "n")
                at = text.find(needle, end)
        return last[1]

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
    return config_for(host, facts.get("release"))


def config_for(host, release, running: bool = True):
    """The config of kernel ``release`` (Unavailable with what was tried); /proc/config.gz
    only for the ``running`` one."""
    candidates = [PROC_CONFIG] if running else []
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
    if release:
        found = _embedded(host, release, tried)
        if found is not None:
            return found
    if not release and not tried:
        return Unavailable("the kernel release is unknown (%s)" % release.reason)
    if not release:
        reason = "%s: %s, and the kernel release is unknown (%s), so /boot/config-RELEASE cannot be looked for" % (
            PROC_CONFIG,
            tried[0][1],
            release.reason,
        )
    else:
        reason = "no readable kernel config: " + "; ".join("%s %s" % item for item in tried)
    return Unavailable(reason, tuple(tried))


def _embedded(host, release: str, tried):
    """The IKCONFIG copy in the configs module, the kernel image or a debug vmlinux."""
    from ai_doctor import elf

    suffixes = ("", ".xz", ".gz", ".zst")
    places = ["%s/%s/kernel/kernel/configs.ko%s" % (root, release, suffix) for root in MODULE_ROOTS for suffix in suffixes]
    places += [
        "/boot/vmlinuz-%s" % release,
        "%s/%s/vmlinuz" % (MODULE_ROOTS[1], release),  # Fedora, RHEL and bootc keep the image here
        "/usr/lib/debug/boot/vmlinux-%s" % release,
        "/usr/lib/debug/lib/modules/%s/vmlinux" % release,
    ]
    for path in places:
        got, info = host.stat(path)
        # Empty files are asked too: a snapshot keeps what was found in the file, not the file.
        if not got.ok or not info.is_file:
            continue
        extract = elf.ikconfig if "/configs.ko" in path else elf.kernel_image_config
        derived = host.derive(path, "ikconfig", extract)
        tried.append((path, derived.describe() if not derived.ok else "ok"))
        if derived.ok and "CONFIG_" in derived.data:
            return KernelConfig(derived.data, path, release, tuple(tried), embedded=True)
    return None


def describes(config_release: str, release: str) -> bool:
    """Whether a config whose header names ``config_release`` is for kernel ``release``.

    Some headers name the whole release (RHEL, Fedora, older Ubuntu: 6.12.0-55.el10.x86_64),
    others the upstream version only (Debian's 6.1.192 for release 6.1.0-18-amd64): a whole
    release must be the same, an upstream version the same major.minor.
    """
    # The header is KERNELVERSION; the release adds the local version (CONFIG_LOCALVERSION,
    # the build's suffix): the header is its start.
    if release.startswith(config_release) and release[len(config_release) : len(config_release) + 1] in ("", "-", "+", "_", "~"):
        return True
    if "-" in config_release:
        return False
    return config_release.split(".")[:2] == release.split("-", 1)[0].split(".")[:2]


@fact("other_kernel_configs")
def other_kernel_configs(host, facts):
    """Config files of kernels other than the one judged: /boot/config-* and the modules
    folders' config."""
    release = facts.get("release")
    found = []
    boot = host.listdir("/boot")
    for name in boot.data if boot.ok else ():
        if name.startswith("config-") and name[len("config-") :] != release:
            found.append("/boot/" + name)
    for root in MODULE_ROOTS:
        listing = host.listdir(root)
        for name in listing.data if listing.ok else ():
            if name != release and host.stat("%s/%s/config" % (root, name))[0].ok:
                found.append("%s/%s/config" % (root, name))
    return tuple(found)


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
