"""What a boot loader tool writes into a tree when it is told to add or remove kernel parameters,
made in Python where the tool itself cannot run (a tree is not this machine's to boot).

- ``grubby --update-kernel=ALL`` edits every Boot Loader Specification entry's ``options``
  (RHEL 9, Fedora), or grubenv's ``kernelopts`` where the entries take their options from it
  (RHEL 8), or grub.cfg's ``linux`` lines where there are no entries (RHEL 7);
- ``kernel-install add`` writes each entry's ``options`` from /etc/kernel/cmdline;
- ``update-grub`` / ``grub-mkconfig`` regenerate grub.cfg, whose entries then carry the
  parameters the GRUB defaults files give them.
"""

from __future__ import annotations

from ai_doctor.facts.bootloader import GRUB_DEFAULTS, KERNEL_CMDLINE_FILE
from ai_doctor.facts.cmdline import split_words as split_cmdline_words
from ai_doctor.remedy.actions import NotApplicable

BLS_DIRS = ("/boot/loader/entries", "/efi/loader/entries", "/boot/efi/loader/entries")
GRUB_CFG_PATHS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg")
GRUBENV_PATHS = ("/boot/grub2/grubenv", "/boot/grub/grubenv")
GRUBENV_SIZE = 1024
_LINUX = ("linux", "linuxefi", "linux16")


# The blanks the kernel splits its command line at (lib/cmdline.c next_arg, ASCII isspace); a
# no-break space is part of a parameter.
_BLANKS = " \t\n\v\f\r"


def split_words(text: str):
    """Kernel parameters as written: split at ASCII blanks outside double quotes, quotes kept."""
    return split_cmdline_words(text, keep_quotes=True, blank=_BLANKS.__contains__)


def _name(word: str) -> str:
    return word.split("=", 1)[0].replace('"', "")


def _gone(add, remove) -> set:
    return {name.split("=", 1)[0] for name in remove} | {_name(word) for word in add}


def edit_words(words, add, remove):
    """``words`` without the parameters named in ``remove`` (and those ``add`` sets), then ``add``."""
    gone = _gone(add, remove)
    return [w for w in words if _name(w) not in gone] + list(add)


def edit_entries(target, add, remove, bls: bool, default_only=()):
    """Every boot entry of the tree given ``add``/``remove`` (``bls``: the tool writes Boot
    Loader Specification entries where there are any); the changes in words. ``default_only``:
    words of ``add`` that grub.cfg's recovery entries do not get (10_linux writes
    GRUB_CMDLINE_LINUX_DEFAULT on normal entries alone)."""
    done = []
    gone = _gone(add, remove)
    entries = _bls_entries(target) if bls else []
    if entries:
        uses_kernelopts = False
        for path, text in entries:
            rows = text.split("\n")
            options = [i for i, row in enumerate(rows) if _keyword(row) == "options"]
            # RHEL 8: the options take $kernelopts from grubenv, where grubby adds; what the
            # entry names beside it is still removed here.
            shared = any("$kernelopts" in split_words(rows[i]) for i in options)
            uses_kernelopts = uses_kernelopts or shared
            for i in options:
                row = rows[i]
                indent = row[: len(row) - len(row.lstrip(" \t"))]
                kept = [w for w in split_words(row.lstrip(" \t")[len("options") :]) if _name(w) not in gone]
                added = list(add) if i == options[-1] and not shared else []
                rows[i] = indent + "options " + " ".join(kept + added)
            if not options and add:
                rows.insert(len(rows) - 1 if rows and rows[-1] == "" else len(rows), "options " + " ".join(add))
            if "\n".join(rows) != text:
                done.append(target.write(path, "\n".join(rows)))
        if uses_kernelopts:
            done.append(_edit_grubenv(target, add, remove))
        return done
    for path in GRUB_CFG_PATHS:
        text = target.read(path)
        if text is None:
            continue
        rows = text.split("\n")
        depth = 0
        recovery = False
        for i, row in enumerate(rows):
            stripped = row.strip()
            if stripped.startswith(("menuentry ", "submenu ")) and stripped.endswith("{"):
                depth += 1
                # 10_linux's recovery entries: ids gnulinux-REL-recovery-UUID.
                recovery = stripped.startswith("menuentry ") and "-recovery-" in stripped
            elif stripped == "}" and depth:
                depth -= 1
            elif depth and stripped.split(None, 1)[:1] and stripped.split(None, 1)[0] in _LINUX:
                indent = row[: len(row) - len(row.lstrip())]
                parts = stripped.split(None, 2)
                if len(parts) < 2:
                    continue
                wanted = [word for word in add if word not in default_only] if recovery else add
                words = edit_words(split_words(parts[2] if len(parts) > 2 else ""), wanted, remove)
                # The keyword and the kernel keep their own spacing (grub-mkconfig writes a tab).
                head = stripped[: stripped.find(parts[1], len(parts[0])) + len(parts[1])]
                rows[i] = "%s%s %s" % (indent, head, " ".join(words))
        done.append(target.write(path, "\n".join(rows)))
        return done
    # No entries in the tree: the boot line is what the GRUB files (or /etc/kernel/cmdline) say,
    # already changed. Without those either, nothing in the tree holds the line.
    if target.read(GRUB_DEFAULTS) is None and target.read(KERNEL_CMDLINE_FILE) is None:
        raise NotApplicable("the tree holds no boot entries and no boot loader configuration: its kernel command line is set elsewhere")
    return ["no boot entries in the tree to rewrite (the next boot's line comes from the boot loader configuration)"]


def _keyword(row: str) -> str:
    """The first word of a BLS entry line (its key), split at ASCII blanks as the loader does."""
    stripped = row.lstrip(" \t")
    end = next((i for i, char in enumerate(stripped) if char in " \t"), len(stripped))
    return stripped[:end]


def _bls_entries(target):
    for folder in BLS_DIRS:
        listing = target.host.listdir(folder)
        names = sorted(n for n in (listing.data if listing.ok else ()) if n.endswith(".conf"))
        found = []
        for name in names:
            text = target.read("%s/%s" % (folder, name))
            if text is not None:
                found.append(("%s/%s" % (folder, name), text))
        if found:
            return found
    return []


def _edit_grubenv(target, add, remove) -> str:
    """kernelopts in grubenv rewritten as grub2-editenv would: every other line kept as it is
    (a value may go on over lines, a newline escaped with a backslash), padded with ``#`` to
    its fixed size."""
    for path in GRUBENV_PATHS:
        text = target.read(path)
        if text is None:
            continue
        entries = _grubenv_entries(text)
        found = [i for i, entry in enumerate(entries) if entry.startswith("kernelopts=")]
        if not found:
            raise NotApplicable("%s sets no kernelopts, which the boot entries take their options from: run grubby on the host" % path)
        current = entries[found[-1]][len("kernelopts=") :]
        if "\\" in current:
            raise NotApplicable("%s: kernelopts holds escaped characters: run grubby on the host" % path)
        for i in found:
            entries[i] = "kernelopts=" + " ".join(edit_words(split_words(current), add, remove))
        kept = [entry for entry in entries if entry and not set(entry) <= {"#"}]
        if not kept or kept[0] != "# GRUB Environment Block":
            kept.insert(0, "# GRUB Environment Block")
        block = "".join(entry + "\n" for entry in kept)
        size = len(block.encode("utf-8", "surrogateescape"))
        if size > GRUBENV_SIZE:
            raise NotApplicable("%s: the new kernelopts do not fit its %d bytes" % (path, GRUBENV_SIZE))
        return target.write(path, block + "#" * (GRUBENV_SIZE - size))
    raise NotApplicable("the boot entries take their options from $kernelopts, and there is no grubenv in the tree")


def _grubenv_entries(text: str):
    """grubenv's lines, a line ending in an odd number of backslashes joined with the next."""
    entries, pending = [], None
    for row in text.split("\n"):
        entry = row if pending is None else pending + "\n" + row
        if (len(entry) - len(entry.rstrip("\\"))) % 2:
            pending = entry
            continue
        pending = None
        entries.append(entry)
    if pending is not None:
        entries.append(pending)
    return entries
