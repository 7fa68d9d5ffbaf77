"""tuned: whether it runs, its active profiles, and what they set once merged.

tuned reads the profile names in /etc/tuned/active_profile at start and merges them in order,
each profile after the ones it includes, a later value winning (tuned-adm(8), tuned.conf(5)).
"""

from __future__ import annotations

import re

from ai_doctor.facts import fact
from ai_doctor.facts.system import masked
from ai_doctor.record import Record

TUNED_ACTIVE = "/etc/tuned/active_profile"
TUNED_MODE = "/etc/tuned/profile_mode"
TUNED_WANTED = "/etc/systemd/system/multi-user.target.wants/tuned.service"
TUNED_PID = "/run/tuned/tuned.pid"
# User profiles first: tuned prefers /etc over /usr/lib; tuned 2.24 moved both into profiles/.
TUNED_DIRS = ("/etc/tuned/profiles", "/etc/tuned", "/usr/lib/tuned/profiles", "/usr/lib/tuned")


class Tuned(Record):
    """tuned's active profiles (empty: none recorded), where user profiles go
    (/etc/tuned/profiles since tuned 2.24, /etc/tuned before), whether tuned-adm is there,
    and whether the daemon starts at boot or runs now (``enabled``)."""

    __slots__ = ("profiles", "user_dir", "installed", "enabled")


@fact("tuned")
def tuned(host, facts):
    got = host.read_text(TUNED_ACTIVE, cap=4096)
    profiles = tuple(got.data.split()) if got.ok else ()
    new_layout = host.exists("/etc/tuned/profiles") or host.exists("/usr/lib/tuned/profiles")
    installed = "tuned-adm" in (facts.get("tools") or {})
    # Started at boot (wanted, not masked), or running now.
    enabled = installed and ((host.exists(TUNED_WANTED) and not masked(host, "tuned.service")) or host.exists(TUNED_PID))
    return Tuned(profiles, "/etc/tuned/profiles" if new_layout else "/etc/tuned", installed, enabled)


class TunedSetting(Record):
    """One ``key=value`` of a profile: the file and line, the text, the section, its plugin
    (``type=``, else the section's name), the key and the value."""

    __slots__ = ("path", "line", "text", "section", "plugin", "key", "value")


# tuned's aliases: the vm plugin also takes transparent_hugepage.
_ALIASES = {("vm", "transparent_hugepage"): "transparent_hugepages"}


class TunedProfile(Record):
    """The merged settings of the active profiles: (section, key) → TunedSetting."""

    __slots__ = ("settings",)

    def plugin(self, plugin: str):
        """Settings of the sections that use ``plugin``, in merge order."""
        return [s for s in self.settings.values() if s.plugin == plugin]

    def get(self, plugin: str, key: str):
        """The last setting of ``key`` in a section using ``plugin``, or None."""
        found = None
        for setting in self.plugin(plugin):
            if _ALIASES.get((plugin, setting.key), setting.key) == key:
                found = setting
        return found


@fact("tuned_profile")
def tuned_profile(host, facts):
    """What the active profiles set, where tuned is installed; None otherwise."""
    state = facts.get("tuned")
    if not state or not state.installed or not state.profiles:
        return None
    chosen = {}
    seen = set()

    def load(name, depth):
        name = name.strip().lstrip("-")
        if not name or "$" in name or "/" in name or name in seen or depth > 8:
            return
        seen.add(name)
        for directory in TUNED_DIRS:
            path = "%s/%s/tuned.conf" % (directory, name)
            got = host.read_text(path, cap=1 << 20)
            if got.ok:
                break
        else:
            return
        sections = parse_tuned_conf(got.data)
        for include in sections.get("main", {}).get("include", (None, ""))[1].replace(";", ",").split(","):
            load(include, depth + 1)
        for section, options in sections.items():
            if section == "main":
                continue
            plugin = options.get("type", (None, section))[1]
            for key, (line, value) in options.items():
                if key == "type":
                    continue
                option = _ALIASES.get((plugin, key), key)
                chosen.pop((section, option), None)  # keep merge order: the later one last
                chosen[(section, option)] = TunedSetting(path, line, "%s=%s" % (key, value), section, plugin, key, value)

    for profile in state.profiles:
        load(profile, 0)
    return TunedProfile(chosen)


def parse_tuned_conf(text: str) -> dict:
    """tuned.conf as {section: {key: (line, value)}}; comments (whole-line, and inline after a
    blank, as tuned's ConfigParser has inline_comment_prefixes=("#",)) and odd lines are
    skipped."""
    sections = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
            continue
        key, sep, value = line.partition("=")
        if sep and current is not None and key.strip():
            # tuned's ConfigParser takes "#" after a blank as the start of a comment.
            current[key.strip()] = (number, re.split(r"\s#", value, maxsplit=1)[0].strip())
    return sections
