"""Remediation steps that are right for the host they are printed for.

Rules say *what* must change (a sysctl, a kernel parameter, a sysfs value, a udev rule); this
module knows *how* on this target, as actions (ai_doctor.remedy.actions) that the report
renders to commands and ``aidoctor fix`` applies: ``sudo`` unless already root, persistent
sysctls as a drop-in under /etc/sysctl.d (never appended to /etc/sysctl.conf) with the lines
that would override it commented out, kernel parameters through the boot loader tool the
target has, nothing at runtime for an image that is not running, and host-wide settings marked
for the container's host when the target is a container. Every host-derived word in a command
is shell-quoted.
"""

from __future__ import annotations

import re

from ai_doctor.facts import fact
from ai_doctor.facts.bootloader import GRUB_DEFAULTS, GRUB_DROP_INS, KERNEL_CMDLINE_FILE
from ai_doctor.facts.sysctl import DEFAULTS, SYSCTL_CONF
from ai_doctor.facts.system import installed_kernels
from ai_doctor.host import lexical
from ai_doctor.model import Step
from ai_doctor.remedy import actions as act

DROP_IN_DIR = "/etc/sysctl.d"


def _image_at(host) -> str:
    """Where an image's files are for its fixes: the tree, or for a snapshot archive (read in
    memory, nothing to chroot into) the image it was taken of, as its manifest says: its
    ``root``, or in one taken before snapshots recorded that, the ``--root`` of its command
    line where that was absolute; where neither says, IMAGE_UNNAMED."""
    if host.origin is None:
        return host.root
    manifest = host.manifest
    argv = manifest.get("argv")
    given = None
    if isinstance(argv, list) and all(isinstance(word, str) for word in argv[:64]):
        for at, word in enumerate(argv[:64]):
            if word == "--root" and at + 1 < len(argv):
                given = argv[at + 1]
            elif word.startswith("--root="):
                given = word[len("--root=") :]
    for recorded in (manifest.get("root"), given):
        # Tree text, quoted where shown: a whole absolute path, normal, and never one that is
        # this machine's own root under another name (//, /mnt/.., /proc/1/root) or in /proc,
        # /sys, /dev.
        if isinstance(recorded, str) and recorded.startswith("/") and len(recorded) <= 4096 and recorded.isprintable():
            normal = lexical(recorded)
            if normal != "/" and normal.split("/")[1] not in ("proc", "sys", "dev"):
                return normal
    # Nowhere said: the commands name it as $IMAGE, for the reader to set (not the archive: no
    # one can chroot into a .tar.gz).
    return act.IMAGE_UNNAMED


class Fixes:
    """Builds :class:`Step` lists for one target; see the module docstring."""

    def __init__(self, host, facts):
        # Every fact a fix may consult is taken here, so the reads count as this fact's inputs.
        self.running = facts.get("running")
        self._host = host
        identity = facts.get("identity")
        self.root = identity.is_root is True
        container = facts.get("container")
        self.container = container if container and container.detected else None
        # An image is changed from outside: commands run in it through chroot, so a pasted
        # command never edits the analysing machine's own files.
        self.image = None if self.running or host.live else _image_at(host)
        self.shell = act.Shell(sudo=not self.root, chroot=self.image)
        config = facts.get("sysctl_config")
        self._config = config if config else None
        applier = facts.get("sysctl_applier")
        # Where nothing applies the sysctl files at boot, a drop-in would not last.
        self._no_applier = applier if applier and applier.known and not applier.applies else None
        # How the files are read in again as boot reads them: systemd-sysctl where systemd runs
        # (its order is not procps's: one write per key), else procps; nothing where no one does.
        if self._no_applier is not None:
            self._reload = None
        elif applier and applier.known and applier.name == "systemd-sysctl":
            self._reload = act.Run(("systemctl", "restart", "systemd-sysctl.service"), act.NOW)
        else:
            self._reload = act.Run(("sysctl", "--system"), act.NOW)
        self._boot_release = facts.get("boot_release")
        self._sysctl_lines = (config.assignments + config.manual) if config else ()
        self._sysctl_by_key = None  # key → its lines, made on first use
        self._tools = facts.get("tools") or {}
        self._tuned = facts.get("tuned") or None
        cmdline = facts.get("cmdline")
        self._running_args = {param.name for param in cmdline.params} if cmdline else None
        # A line with init's arguments after `--`: a parameter added at its end would be init's.
        self._init_args = bool(cmdline) and " -- " in " %s " % cmdline.raw
        self._boot_args = facts.get("boot_args") or ()
        grub = facts.get("grub_files")
        self._grub_files = dict(grub.files) if grub else {}
        self._drop_in_dir = host.stat(DROP_IN_DIR)[0].ok
        self._kernels = installed_kernels(host) if self.image is not None else []

    # -- shared pieces ------------------------------------------------------------------

    def step(self, summary: str, actions, persistent, host_wide: bool = True, needs_root=None) -> Step:
        """A step of ``actions`` worded for where it runs (the container's host, the image)."""
        actions = tuple(actions)
        if needs_root is None:
            needs_root = any(action.needs_root for action in actions) or not actions
        on_host = host_wide and self.container is not None
        return Step(self._place(summary, host_wide), actions, needs_root, persistent, on_host, self.shell)

    def _place(self, summary: str, host_wide: bool) -> str:
        if host_wide and self.container is not None:
            where = "on %s (not inside this container, where it cannot be changed)" % self.container.where
        elif self.image is not None:
            where = "in the image at %s" % self.image
        else:
            return summary
        # "Or, for a pool …" stays an alternative: "Or, on the host (…): for a pool …".
        lead = ""
        for word in ("Or, ", "Or "):
            if summary.startswith(word):
                lead, summary = "Or, ", summary[len(word) :]
                break
        text = "%s%s: %s" % (lead, where, summary[0].lower() + summary[1:])
        return text[0].upper() + text[1:]

    def runtime(self, summary: str, actions, host_wide: bool = True):
        """A step that changes the running system now (lost at reboot); none for an image,
        which is not running."""
        if not self.running:
            return []
        return [self.step(summary, actions, False, host_wide)]

    def advice(self, summary: str, needs_root: bool = True, persistent=True, host_wide: bool = False) -> Step:
        """A step in words only: what to do by hand."""
        return Step(self._place(summary, host_wide), (), needs_root, persistent, host_wide and self.container is not None, self.shell)

    # -- sysctl -------------------------------------------------------------------------

    def sysctl(self, settings, topic: str, purpose: str, displaces=(), replaces_ours=False, reload=True, now=True, only_now=None):
        """Set ``settings`` [(key, value)] now and at every boot.

        The drop-in is /etc/sysctl.d/NN-aidoctor-TOPIC.conf, written whole (re-running the fix
        leaves one copy) and named to sort after every file outside /etc that sets one of the
        keys, because the file applied last wins. Assignments of the keys in /etc (and in an
        /etc/sysctl.conf that only `sysctl --system` reads) are commented out. ``displaces``
        names keys the settings override, such as vm.overcommit_kbytes for the ratio: writing
        one of that pair zeroes the other, so a later line of the other would undo the fix.
        ``replaces_ours``: another step of the same finding may have written this topic's
        drop-in (an alternative taken first); settings back at kernel defaults then remove it.
        ``reload``: False where the settings already run, so the files are not re-applied
        (`sysctl --system` would also reset every other key that was changed by hand).
        ``now``: False for settings meant for the next boot only (the running kernel would take
        them otherwise: a pool in pages of another size). ``only_now``: why nothing is kept for
        boot (the settings mean nothing there); the step says so.
        """
        keys = [key for key, _value in settings]
        touched = set(keys) | set(displaces)
        if only_now:
            return self.runtime("%s now (%s)" % (purpose, only_now), [act.SetSysctl(tuple(settings))])
        steps = self.runtime(purpose + " now", [act.SetSysctl(tuple(settings))]) if now else []
        if self._no_applier is not None and self.container is None:
            lasting = self._sysctl_at_boot(settings)
            return steps + ([lasting] if lasting is not None else [])
        target = "%s/%s" % (DROP_IN_DIR, _drop_in_name(topic, ()))
        setting = self._lines_of(touched)
        # Our own drop-in is written whole, not edited.
        editable = [item for item in setting if _in_etc(item) and item.path != target]
        vendor = [item for item in setting if not _in_etc(item)]
        # A package's lines are hidden by an edited copy of its file in /etc: a drop-in merely
        # sorted after them would leave the files saying two things (persist.sysctl-conflict).
        actions = self._comment_actions(editable) + self._override_actions(vendor)
        needed = [(k, v) for k, v in settings if DEFAULTS.get(k) != v]
        if needed:
            lines = tuple("%s = %s" % item for item in needed)
            made = any(isinstance(action, act.MakeFolder) for action in actions)
            actions.append(act.WriteFile(target, lines, not self._drop_in_dir and not made))
        elif replaces_ours or any(item.path == target for item in self._lines_of(touched)):
            # Back to kernel defaults: a drop-in of ours would otherwise keep its values.
            actions.append(act.RemoveFile(target))
        if not actions:
            return steps  # nothing persistent sets it, and the kernel default is what is wanted
        reload = reload and self.running and self._reload is not None
        if reload:
            actions.append(self._reload)
        if needed:
            what = (
                "make it persistent: "
                + ("comment out the lines that set it and " if editable else "")
                + "write a drop-in under /etc/sysctl.d"
            )
        else:
            what = "make it persistent: comment out the lines that set it (the kernel default then applies)"
        if reload:
            what += ", then read all sysctl files again as boot does (`sysctl -p` reads only /etc/sysctl.conf)"
        if not now:
            # Nothing runs now: the step is the purpose itself, made for the next boot.
            what = "%s: %s" % (purpose, what.split(": ", 1)[1])
        steps.append(self.step(what[0].upper() + what[1:], actions, True))
        return steps

    def _sysctl_at_boot(self, settings):
        """The persistent half where nothing applies sysctl files at boot: ``sysctl.KEY=VALUE``
        on the kernel command line (5.8+: fs/proc/proc_sysctl.c writes them before init)."""
        from ai_doctor.facts.system import kernel_version

        why = "nothing applies sysctl files at boot here (persist.sysctl-not-applied)"
        version = kernel_version(self._boot_release) if self._boot_release else (0, 0)
        # A value with blanks needs quotes GRUB's own quoting would eat, and a key whose part holds
        # a dot (eth0.100, kept as eth0/100) cannot be named there: every dot is a separator.
        plain = all(" " not in str(value) and "/" not in key for key, value in settings)
        if version < (5, 8) or not plain:
            return self.advice("Make it persistent: %s, so set it in the program that runs as init" % why)
        add = ["sysctl.%s=%s" % item for item in settings if DEFAULTS.get(item[0]) != item[1]]
        names = {"sysctl.%s" % key for key, _ in settings}
        on_line = (self._running_args or set()) | {name for args in self._boot_args for name in args.names}
        if not add and not names & on_line:
            return None  # back at the kernel's default, and nothing at boot sets it otherwise
        return self.kernel_args(add, sorted(names), "Make it persistent on the kernel command line, since " + why)

    def comment_out(self, assignments, summary: str):
        """A step that takes the keys of ``assignments`` out of the persistent configuration:
        every assignment of them (the settings do nothing or harm).

        Files in /etc are edited in place. A file elsewhere (/usr/lib/sysctl.d belongs to a
        package, /run/sysctl.d is rebuilt at boot) is overridden by an edited copy of the same
        name in /etc/sysctl.d, which hides it.
        """
        keys = {item.key for item in assignments}
        every = self._lines_of(keys) or list(assignments)
        actions = self._comment_actions([item for item in every if _in_etc(item)])
        actions += self._override_actions([item for item in every if not _in_etc(item)])
        if self.running and self._reload is not None:
            actions.append(self._reload)
        return self.step(summary, actions, True)

    def move_sysctl_lines(self, assignments, source: str, others, left_out=(), why_left=""):
        """A step moving ``assignments`` (every line of ``source``, a file boot never reads) into
        a drop-in that boot reads at the place the file had when /etc/sysctl.d/99-sysctl.conf
        linked it in, and commenting them out where they were when ``source`` is /etc/sysctl.conf
        (which `sysctl --system` and `sysctl -p` still read). Nothing is applied now: the values
        are the administrator's, and whether they run is what the running kernel shows. ``others``:
        the names of the sysctl files there are, which the new name must not hide; ``left_out``:
        assignments commented out but not moved, ``why_left`` says why."""
        from ai_doctor.facts.boot import systemd_order

        name = "99-sysctl.conf" if "99-sysctl.conf" not in others else _drop_in_name("sysctl-conf", others)
        target = "%s/%s" % (DROP_IN_DIR, name)
        lines = ("# Moved from %s by aidoctor: systemd-sysctl reads only the sysctl.d folders." % source,)
        # One line per key, as systemd-sysctl would write them: a repeated key moved whole would
        # be a duplicate in the new file.
        skipped = {id(item) for item in left_out}
        moved = [item for item in assignments if id(item) not in skipped]
        lines += tuple(item.text for item in systemd_order(moved))
        actions = [act.WriteFile(target, lines, not self._drop_in_dir)] if moved else []
        if source == SYSCTL_CONF:
            actions.append(act.CommentLines(source, _lines(assignments)))
        summary = "Move %s of %s into %s, which systemd-sysctl reads at boot" % (
            "its line" if len(moved) == 1 == len(assignments) else "%d line%s" % (len(moved), "" if len(moved) == 1 else "s"),
            source,
            target,
        )
        if source == SYSCTL_CONF:
            summary += ", and comment out %s there" % ("all %d" % len(assignments) if left_out else "them")
        if left_out:
            summary += "; %s %s not moved: %s" % (
                ", ".join("`%s`" % item.text for item in left_out),
                "is" if len(left_out) == 1 else "are",
                why_left,
            )
        return self.step(summary + ". Nothing changes until boot", actions, True)

    def _lines_of(self, keys):
        """The sysctl lines (applied ones, then /etc/sysctl.conf's manual ones) that set one of
        ``keys``, in that order; indexed once, so a fix per key stays linear in the lines."""
        if self._sysctl_by_key is None:
            self._sysctl_by_key = {}
            for position, item in enumerate(self._sysctl_lines):
                self._sysctl_by_key.setdefault(item.key, []).append((position, item))
        found = [pair for key in keys for pair in self._sysctl_by_key.get(key, ())]
        return [item for _position, item in sorted(found, key=lambda pair: pair[0])]

    def comment_out_lines(self, assignments, summary: str):
        """A step commenting out exactly these assignments' lines, where other lines of the same
        key must stay (the copy in force); a package's file gets an edited copy in /etc that hides
        it. Nothing changes at runtime, so nothing is reloaded."""
        actions = self._comment_actions([item for item in assignments if _in_etc(item)])
        actions += self._override_actions([item for item in assignments if not _in_etc(item)])
        if not actions:
            return None
        return self.step(summary, actions, True)

    def _override_actions(self, assignments):
        """Copies of packages' files in /etc/sysctl.d with these assignments commented out."""
        by_origin = {}
        for item in assignments:
            by_origin.setdefault((item.path, item.name), []).append(item)
        copies = [act.OverrideCopy(path, "%s/%s" % (DROP_IN_DIR, name), _lines(items)) for (path, name), items in sorted(by_origin.items())]
        return ([act.MakeFolder(DROP_IN_DIR)] if copies and not self._drop_in_dir else []) + copies

    def _comment_actions(self, assignments):
        by_file = {}
        for item in assignments:
            by_file.setdefault(item.path, []).append(item)
        return [act.CommentLines(path, _lines(items)) for path, items in sorted(by_file.items())]

    # -- kernel command line ------------------------------------------------------------

    def kernel_args(self, add, remove, purpose: str):
        """A persistent change of the kernel command line, through the target's boot loader.

        ``add`` are parameters to set (``hugepages=128``); ``remove`` names parameters to drop
        first (``hugepages``), so a parameter is never left on the line twice.
        """
        add = tuple(add)
        unsafe = [arg for arg in add if not re.fullmatch(_SAFE_PARAM, arg)]
        if unsafe:
            # Boot loader files are shell (GRUB's defaults) or are split on blanks: a quote or a
            # `|` from host text would change what they do.
            return self.advice(
                "%s: add %s to the kernel command line by hand, if it is meant: it holds characters aidoctor does not write "
                "into boot loader files (quotes, blanks or shell syntax)" % (purpose, ", ".join(repr(arg)[:120] for arg in unsafe))
            )
        add_text = " ".join(add)
        # Named to be sourced after every other drop-in that assigns GRUB_CMDLINE_LINUX, which
        # would otherwise replace what ours appends.
        assigning = {
            args.path.rsplit("/", 1)[1]
            for args in self._boot_args
            if args.path.startswith(GRUB_DROP_INS + "/") and args.variable == "GRUB_CMDLINE_LINUX" and "aidoctor-" not in args.path
        }
        topic = add[0].split("=", 1)[0].replace(".", "-") if add else None
        drop_in = "%s/%s" % (GRUB_DROP_INS, _drop_in_name(topic, assigning, ".cfg")) if add else None
        own, configured = set(), set()
        for args in self._boot_args:
            (own if args.path == drop_in else configured).update(args.names)
        added = {arg.split("=", 1)[0] for arg in add}
        dropped = {arg.split("=", 1)[0] for arg in remove}
        wanted = sorted(dropped | added)
        if self._running_args is None:
            # No running kernel to ask (an image). grubby's boot entries are not read here, and
            # removing an absent argument is harmless, so grubby is told to remove them all.
            present = configured | (set(wanted) if "grubby" in self._tools else set())
        else:
            # On the line now (unless our own drop-in put it there), or set for the next boot.
            present = configured | (self._running_args - own)
        remove_names = [name for name in wanted if name in present]
        shown_removed = [name for name in remove_names if name in dropped]
        change = "add `%s` to" % add_text if add else "remove %s from" % ", ".join("`%s=`" % n for n in shown_removed)
        if self.container is not None:
            return self.advice("%s: %s the kernel command line and reboot" % (purpose, change), host_wide=True)
        tools = self._tools
        regenerate = None
        if "grubby" in tools:
            # /etc/default/grub too, where grub2-mkconfig reads it: a later rebuild of grub.cfg
            # must not bring a removed parameter back or lose an added one.
            actions = self._grub_removals(sorted(set(remove_names) | added), None)
            defaults = self._grub_files.get(GRUB_DEFAULTS)
            also = ""
            if add and defaults is not None and act.appendable_grub_line(defaults):
                if not any(a.path == GRUB_DEFAULTS for a in actions):
                    actions += self._grub_cut(GRUB_DEFAULTS, sorted(added))
                actions.append(act.AppendGrubParams(GRUB_DEFAULTS, add))
                also = " (and in GRUB_CMDLINE_LINUX of /etc/default/grub, which grub2-mkconfig reads)"
            elif actions:
                also = " (and out of the GRUB files that set it, which grub2-mkconfig reads)"
            actions.append(act.BootEntries(_grubby_argv(add, remove_names), add, tuple(remove_names)))
            how = "with grubby" + also
        elif "update-grub" in tools and (add or remove_names) and set(remove_names) <= self._grub_set(drop_in):
            # Debian's grub-mkconfig sources /etc/default/grub.d/*.cfg after /etc/default/grub,
            # so one file of our own is idempotent and leaves the distribution's file alone.
            # One file per parameter family, so two fixes never overwrite each other. A name
            # to drop is cut out of the GRUB_CMDLINE_LINUX* lines of the files that set it.
            actions = self._grub_removals(remove_names, drop_in)
            if add:
                line = 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX %s"' % add_text
                actions.append(act.WriteFile(drop_in, (line,), True))
            regenerate = ("update-grub",)
            how = "in a GRUB drop-in" if add else "in the GRUB files that set it"
        elif GRUB_DEFAULTS in tools and ({"update-grub", "grub2-mkconfig", "grub-mkconfig"} & set(tools)):
            regenerate = self.grub_regenerate()
            if act.appendable_grub_line(self._grub_files.get(GRUB_DEFAULTS, "")):
                # Cut first, every name added included, so a second run leaves one copy.
                names = tuple(sorted(set(remove_names) | added))
                actions = self._grub_cut(GRUB_DEFAULTS, names) if names else []
                if add:
                    actions.append(act.AppendGrubParams(GRUB_DEFAULTS, add))
                how = "in GRUB_CMDLINE_LINUX of /etc/default/grub"
            else:
                actions = [self._by_hand(GRUB_DEFAULTS)]
                how = "in GRUB_CMDLINE_LINUX (and GRUB_CMDLINE_LINUX_DEFAULT) of /etc/default/grub, by hand"
        elif KERNEL_CMDLINE_FILE in tools:
            own_line = next((a for a in self._boot_args if a.path == KERNEL_CMDLINE_FILE), None)
            words = [p.text for p in own_line.params] if own_line else []
            from ai_doctor.remedy.bootedit import edit_words

            actions = [act.WriteFile(KERNEL_CMDLINE_FILE, (" ".join(edit_words(words, add, remove_names)),))]
            if "kernel-install" in tools:
                # In an image, uname -r would name this machine's kernel: name the image's own.
                releases = tuple(self._kernels) if self.image is not None else None
                actions.append(act.BootEntries(("kernel-install",), add, tuple(remove_names), releases))
            how = "in /etc/kernel/cmdline (systemd-boot / kernel-install), then regenerate the boot entries"
        elif GRUB_DEFAULTS in tools:
            # The GRUB files without the program that writes grub.cfg from them (grub2-common).
            return self.advice(
                "%s: %s the kernel command line in GRUB_CMDLINE_LINUX of %s, by hand: no update-grub, grub2-mkconfig or "
                "grub-mkconfig is installed here to write grub.cfg from it, so install the boot loader's package (Debian: "
                "grub2-common) or regenerate grub.cfg where it is" % (purpose, change, GRUB_DEFAULTS)
            )
        else:
            summary = (
                "%s: %s the kernel command line where this machine's is set%s: no boot loader configuration was found here "
                "(no grubby, update-grub, grub-mkconfig, /etc/default/grub or /etc/kernel/cmdline), so it is the VM's, "
                "the firmware's or an image builder's"
                % (purpose, change, ", before its `--` (what follows it goes to init)" if self._init_args else "")
            )
            return self.advice(summary)
        if regenerate is not None:
            # In an image grub-mkconfig must run where the image's disk is attached: nothing is
            # printed for it, and a tree gets the entries it would write (BootEntries).
            actions.append(act.BootEntries(regenerate if self.image is None else None, add, tuple(remove_names)))
        summary = "%s: %s the kernel command line %s" % (purpose, change, how)
        by_hand = [a.path for a in actions if isinstance(a, act.EditByHand)]
        if by_hand and not how.endswith("by hand"):
            summary += " (by hand in %s, whose line has shell quoting or a command a cut could break)" % ", ".join(by_hand)
        if add and shown_removed:
            summary += ", replacing any %s already there" % ", ".join("`%s=`" % n for n in shown_removed)
        if self.running:
            summary += ", then reboot"
        elif self.image is not None and regenerate is not None:
            # grub-mkconfig probes the root device: in a chroot of an unpacked tree it fails,
            # or writes the build machine's disk into the image.
            summary += (
                ", then regenerate grub.cfg where the image's disk is attached (grub-mkconfig probes the root device, "
                "which a chroot of an unpacked tree does not have)"
            )
        return self.step(summary, actions, True, host_wide=False)

    def grub_regenerate(self, menu=None):
        """The command that writes grub.cfg again from the GRUB files with the tool the target
        has: update-grub (Debian, Ubuntu), else grub2-mkconfig or grub-mkconfig with ``-o``
        ``menu`` (else that tool's usual grub.cfg); None where it has none of them."""
        tools = self._tools
        if "update-grub" in tools:
            return ("update-grub",)
        if "grub2-mkconfig" in tools:
            return ("grub2-mkconfig", "-o", menu or "/boot/grub2/grub.cfg")
        if "grub-mkconfig" in tools:
            return ("grub-mkconfig", "-o", menu or "/boot/grub/grub.cfg")
        return None

    def _grub_set(self, drop_in) -> set:
        """Parameter names the GRUB defaults files (not ``drop_in``, rewritten whole) set."""
        return {name for args in self._boot_args if args.variable and args.path != drop_in for name in args.names}

    def _grub_removals(self, names, drop_in):
        """Actions cutting ``names`` out of the GRUB_CMDLINE_LINUX* lines that set them."""
        if not names:
            return []
        files = sorted({args.path for args in self._boot_args if args.variable and args.path != drop_in and args.names & set(names)})
        return [action for path in files for action in self._grub_cut(path, names)]

    def _grub_cut(self, path: str, names):
        """Cutting ``names`` out of a GRUB file, or an edit by hand where a line naming one has
        shell quoting or expansion the cut leaves alone (it could break it)."""
        if act.grub_lines_needing_hand(self._grub_files.get(path, ""), names):
            return [self._by_hand(path)]
        return [act.CutGrubParams(path, tuple(names))]

    def _by_hand(self, path: str):
        """An edit by hand of ``path``; in an image, of where the image's links lead inside it."""
        resolved = None
        if self.image is not None:
            try:
                resolved = self._host.resolve(path, fresh=False)
            except OSError:
                resolved = None
        return act.EditByHand(path, resolved if resolved != path else None)

    # -- sysfs, udev, tuned ---------------------------------------------------------------

    def sysfs(self, paths, value: str, purpose: str, glob: bool = False):
        """Write ``value`` to sysfs files now (lost at reboot); none for a stopped image."""
        return self.runtime(purpose + " now", [act.WriteKernel(tuple(paths), value, glob)])

    def comment_out_sysfs(self, settings, summary: str):
        """Steps commenting out sysfs.conf ``settings`` (doctor/facts/sysfsconf.py), one per file;
        ``summary`` is formatted with the lines (``line 4 and 9``), the file and the values."""
        by_file = {}
        for setting in settings:
            by_file.setdefault(setting.path, []).append(setting)
        return [
            self.step(
                summary
                % {
                    "lines": "line " + " and ".join(str(s.line) for s in items),
                    "path": path,
                    "values": "/".join(sorted({s.value for s in items})),
                },
                [act.CommentLines(path, tuple((s.line, s.raw) for s in items))],
                True,
                host_wide=False,
            )
            for path, items in sorted(by_file.items())
        ]

    def udev_rule(self, name: str, rule: str, purpose: str):
        """Install a udev rule file and apply it to present devices."""
        actions = [act.WriteFile("/etc/udev/rules.d/%s" % name, (rule,), True)]
        if self.running:
            actions.append(act.Run(("udevadm", "control", "--reload"), act.NOW))
            # Only the NVMe namespaces replay their events, not every disk, md and dm device.
            actions.append(act.Run(("udevadm", "trigger", "--subsystem-match=block", "--sysname-match=nvme*", "--action=change"), act.NOW))
        return self.step("%s at every boot with a udev rule" % purpose, actions, True)

    def tuned_override(self, name: str, summary: str, sections, purpose: str):
        """A step adding tuned profile ``name`` (``sections``: (section, ["key=value", …]))
        after the active profiles, where tuned is installed; None otherwise.

        tuned-adm merges the profiles it is given, the last winning (tuned-adm(8)), so the
        active ones keep every other setting. The active list is read when the command runs,
        so overrides that other findings add survive whichever runs last. In automatic mode
        tuned loads its recommender's pick, not that list: the pick is kept before ours, and
        where it is not known the step is advice.
        """
        tuned = self._tuned
        # Only where tuned already runs (or, in an image, starts at boot): enabling it would
        # apply a whole profile (and stop the services tuned.service conflicts with) for one
        # setting.
        if tuned is None or not tuned.enabled:
            return None
        lines = ["[main]", "summary=%s" % summary]
        for section, keys in sections:
            lines.append("[%s]" % section)
            lines.extend(keys)
        path = "%s/%s/tuned.conf" % (tuned.user_dir, name)
        if tuned.auto and tuned.base is None:
            pick = tuned.recommended
            return self.advice(
                "%s with tuned, by hand: tuned picks its profile when it starts (%s), and which one is not known here (%s); "
                "write %s (%s) and run `tuned-adm profile PICK %s`, PICK being what `tuned-adm recommend` prints %s"
                % (
                    purpose,
                    pick.words if pick else "automatic mode",
                    pick.unknown if pick else tuned.how,
                    path,
                    " ".join(lines),
                    name,
                    "on the machines the image boots on" if self.image is not None else "here",
                ),
                host_wide=True,
            )
        base = tuned.base if tuned.auto else None
        actions = (act.WriteFile(path, tuple(lines), True), act.TunedActivate(name, self.image is None, base))
        if base:
            after = "after %s: in automatic mode tuned loads the profile it picks at start" % " ".join(base)
        else:
            after = "applied after the active ones"
        return self.step("%s with tuned (a profile of its own, %s)" % (purpose, after), actions, True)

    # -- programs -------------------------------------------------------------------------

    def reboot_step(self, summary: str = "Reboot") -> Step:
        return self.step(summary, [act.Reboot()], True, host_wide=False)


# What aidoctor writes into boot loader files itself: no quotes, blanks or shell syntax.
_SAFE_PARAM = r"[A-Za-z0-9._/:,+=@-]+"


def _lines(items):
    """(line number, the line as written) of assignments, one per line, in order."""
    return tuple(sorted({(item.line, item.raw if item.raw is not None else item.text) for item in items}))


def _grubby_argv(add, remove_names):
    argv = ["grubby", "--update-kernel=ALL"]
    if remove_names:
        argv.append("--remove-args=" + " ".join(remove_names))
    if add:
        argv.append("--args=" + " ".join(add))
    return tuple(argv)


def _in_etc(item) -> bool:
    """Whether an assignment was reached through /etc, where the administrator edits files."""
    return (item.origin or item.path).startswith("/etc/")


def _drop_in_name(topic: str, others, suffix: str = ".conf") -> str:
    """A drop-in file name that sorts after every name in ``others``."""
    for prefix in ("90-aidoctor-", "99-aidoctor-", "zz-aidoctor-"):
        name = "%s%s%s" % (prefix, topic, suffix)
        if all(name > other for other in others):
            return name
    # "~" sorts after every other printable ASCII character.
    return "%s~aidoctor-%s%s" % (max(others)[: -len(suffix)], topic, suffix)


@fact("fixes")
def fixes(host, facts):
    return Fixes(host, facts)
