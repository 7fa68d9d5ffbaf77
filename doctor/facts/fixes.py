"""Remediation steps that are right for the host they are printed for.

Rules say *what* must change (a sysctl, a kernel parameter, a sysfs value, a udev rule); this
module knows *how* on this target: ``sudo`` unless already root, persistent sysctls as a drop-in
under /etc/sysctl.d (never appended to /etc/sysctl.conf) with the lines that would override it
commented out, kernel parameters through the boot loader tool the target has, nothing at
runtime for an image that is not running, and host-wide settings marked for the container's
host when the target is a container. Every host-derived word in a command is shell-quoted.
"""

from __future__ import annotations

from ai_doctor.facts import fact
from ai_doctor.facts.bootloader import GRUB_DROP_INS
from ai_doctor.facts.sysctl import DEFAULTS, key_path
from ai_doctor.facts.system import installed_kernels
from ai_doctor.facts.tuned import TUNED_ACTIVE, TUNED_MODE
from ai_doctor.model import Step
from ai_doctor.shell import quote

DROP_IN_DIR = "/etc/sysctl.d"
_ERE_SPECIAL = set("\\.[]()*+?{}|^$/")


def _ere(text: str) -> str:
    return "".join("\\" + c if c in _ERE_SPECIAL else c for c in text)


class Fixes:
    """Builds :class:`Step` lists for one target; see the module docstring."""

    def __init__(self, host, facts):
        # Every fact a fix may consult is taken here, so the reads count as this fact's inputs.
        self.running = facts.get("running")
        identity = facts.get("identity")
        self.root = identity.is_root is True
        container = facts.get("container")
        self.container = container if container and container.detected else None
        # An image is changed from outside: commands run in it through chroot, so a pasted
        # command never edits the analysing machine's own files.
        self.image = None if self.running or host.live else host.root
        config = facts.get("sysctl_config")
        self._sysctl_lines = (config.assignments + config.manual) if config else ()
        self._tools = facts.get("tools") or {}
        self._tuned = facts.get("tuned") or None
        cmdline = facts.get("cmdline")
        self._running_args = {param.name for param in cmdline.params} if cmdline else None
        self._boot_args = facts.get("boot_args") or ()
        self._drop_in_dir = host.stat(DROP_IN_DIR)[0].ok
        self._kernels = [quote(release) for release in installed_kernels(host)] if self.image is not None else []

    # -- shared pieces ------------------------------------------------------------------

    def sudo(self, command: str) -> str:
        if self.image is not None:
            command = "chroot %s %s" % (quote(self.image), command)
        return command if self.root else "sudo " + command

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

    # -- sysctl -------------------------------------------------------------------------

    def sysctl(self, settings, topic: str, purpose: str, displaces=(), replaces_ours=False, reload=True):
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
        """
        keys = [key for key, _value in settings]
        touched = set(keys) | set(displaces)
        writes = tuple(key_path(key) for key in keys)
        command = self.sudo("sysctl -w %s" % " ".join(quote("%s=%s" % item) for item in settings))
        steps = self.runtime(purpose + " now", [command], writes)
        editable = [item for item in self._sysctl_lines if item.key in touched and _in_etc(item)]
        vendor = [item for item in self._sysctl_lines if item.key in touched and not _in_etc(item)]
        commands = self._comment_out_commands(editable)
        vendor_keys = {item.key for item in vendor}
        needed = [(k, v) for k, v in settings if not (DEFAULTS.get(k) == v and not vendor_keys)]
        target = "%s/%s" % (DROP_IN_DIR, _drop_in_name(topic, {item.name for item in vendor}))
        if needed:
            lines = " ".join(quote("%s = %s" % item) for item in needed)
            if not self._drop_in_dir:
                commands.append(self.sudo("mkdir -p %s" % DROP_IN_DIR))
            commands.append("printf '%%s\\n' %s | %s" % (lines, self.sudo("tee " + target + " >/dev/null")))
        elif replaces_ours or any(item.path == target for item in self._sysctl_lines):
            # Back to kernel defaults: a drop-in of ours would otherwise keep its values.
            commands.append(self.sudo("rm -f %s" % target))
        if not commands:
            return steps  # nothing persistent sets it, and the kernel default is what is wanted
        reload = reload and self.running
        if reload:
            commands.append(self.sudo("sysctl --system"))
        if needed:
            what = (
                "make it persistent: "
                + ("comment out the lines that set it and " if editable else "")
                + "write a drop-in under /etc/sysctl.d"
            )
        else:
            what = "make it persistent: comment out the lines that set it (the kernel default then applies)"
        if reload:
            what += ", then reload all sysctl files (`sysctl -p` reads only /etc/sysctl.conf)"
        steps.append(Step(self._place(what[0].upper() + what[1:], True), tuple(commands), True, True, self.container is not None, writes))
        return steps

    def comment_out(self, assignments, summary: str):
        """A step commenting out persistent assignments (the settings do nothing or harm).

        Files in /etc are edited in place. A file elsewhere (/usr/lib/sysctl.d belongs to a
        package, /run/sysctl.d is rebuilt at boot) is overridden by an edited copy of the same
        name in /etc/sysctl.d, which hides it.
        """
        commands = self._comment_out_commands(item for item in assignments if _in_etc(item))
        by_origin = {}
        for item in assignments:
            if not _in_etc(item):
                by_origin.setdefault((item.path, item.name), []).append(_raw_key(item.text))
        for (path, name), raw_keys in sorted(by_origin.items()):
            override = "%s/%s" % (DROP_IN_DIR, name)
            edited = self.sudo("sed -E %s %s" % (quote(_comment_script(raw_keys)), quote(path)))
            commands.append("%s | %s" % (edited, self.sudo("tee %s >/dev/null" % override)))
        if self.running:
            commands.append(self.sudo("sysctl --system"))
        return Step(self._place(summary, True), tuple(commands), True, True, self.container is not None, ())

    def comment_out_lines(self, assignments, summary: str):
        """A step commenting out exactly these assignments' lines, by number, where other lines
        of the same key must stay (the copy in force); None when none is in /etc (a package's
        file is not edited). Nothing changes at runtime, so nothing is reloaded."""
        by_file = {}
        for item in assignments:
            if _in_etc(item):
                by_file.setdefault(item.path, set()).add(item.line)
        commands = []
        for path, lines in sorted(by_file.items()):
            script = " ".join("-e %s" % quote("%ds/^/# /" % line) for line in sorted(lines))
            commands.append(self.sudo("sed -i %s %s" % (script, quote(path))))
        if not commands:
            return None
        return Step(self._place(summary, True), tuple(commands), True, True, self.container is not None, ())

    def _comment_out_commands(self, assignments):
        by_file = {}
        for item in assignments:
            by_file.setdefault(item.path, []).append(_raw_key(item.text))
        return [self.sudo("sed -i -E %s %s" % (quote(_comment_script(keys)), quote(path))) for path, keys in sorted(by_file.items())]

    # -- kernel command line ------------------------------------------------------------

    def kernel_args(self, add, remove, purpose: str):
        """A persistent change of the kernel command line, through the target's boot loader.

        ``add`` are parameters to set (``hugepages=128``); ``remove`` names parameters to drop
        first (``hugepages``), so a parameter is never left on the line twice.
        """
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
        wanted = sorted({arg.split("=", 1)[0] for arg in remove})
        if self._running_args is None:
            # No running kernel to ask (an image). grubby's boot entries are not read here, and
            # removing an absent argument is harmless, so grubby is told to remove them all.
            present = configured | (set(wanted) if "grubby" in self._tools else set())
        else:
            # On the line now (unless our own drop-in put it there), or set for the next boot.
            present = configured | (self._running_args - own)
        remove_names = [name for name in wanted if name in present]
        change = "add `%s` to" % add_text if add else "remove %s from" % ", ".join("`%s=`" % n for n in remove_names)
        if self.container is not None:
            return Step(self._place("%s: %s the kernel command line and reboot" % (purpose, change), True), (), True, True, True, ())
        tools = self._tools
        if "grubby" in tools:
            command = "grubby --update-kernel=ALL"
            if remove_names:
                command += " --remove-args=%s" % quote(" ".join(remove_names))
            if add:
                command += " --args=%s" % quote(add_text)
            commands = (self.sudo(command),)
            how = "with grubby"
        elif "update-grub" in tools and (add or remove_names) and set(remove_names) <= self._grub_set(drop_in):
            # Debian's grub-mkconfig sources /etc/default/grub.d/*.cfg after /etc/default/grub,
            # so one file of our own is idempotent and leaves the distribution's file alone.
            # One file per parameter family, so two fixes never overwrite each other. A name
            # to drop is cut out of the GRUB_CMDLINE_LINUX* lines of the files that set it.
            commands = tuple(self._grub_removals(remove_names, drop_in))
            if add:
                line = 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX %s"' % add_text
                commands += (
                    self.sudo("mkdir -p %s" % GRUB_DROP_INS),
                    "printf '%%s\\n' %s | %s" % (quote(line), self.sudo("tee %s >/dev/null" % drop_in)),
                )
            commands += self._rebuild_grub("update-grub")
            how = "in a GRUB drop-in" if add else "in the GRUB files that set it"
        elif "/etc/default/grub" in tools and ({"update-grub", "grub2-mkconfig", "grub-mkconfig"} & set(tools)):
            if "update-grub" in tools:
                rebuild = "update-grub"
            elif "grub2-mkconfig" in tools:
                rebuild = "grub2-mkconfig -o /boot/grub2/grub.cfg"
            else:
                rebuild = "grub-mkconfig -o /boot/grub/grub.cfg"
            commands = (self._edit("/etc/default/grub"),) + self._rebuild_grub(rebuild)
            how = "in GRUB_CMDLINE_LINUX (and GRUB_CMDLINE_LINUX_DEFAULT) of /etc/default/grub, by hand"
        elif "/etc/kernel/cmdline" in tools:
            commands = (self._edit("/etc/kernel/cmdline"),)
            if "kernel-install" in tools:
                # In an image, uname -r would name this machine's kernel: name the image's own.
                releases = self._kernels if self.image is not None else ['"$(uname -r)"']
                commands += tuple(self.sudo("kernel-install add %s /usr/lib/modules/%s/vmlinuz" % (r, r)) for r in releases)
            how = "in /etc/kernel/cmdline (systemd-boot / kernel-install), by hand, then regenerate the boot entries"
        else:
            summary = (
                "%s: %s the kernel command line where this machine's is set: no boot loader configuration was found here "
                "(no grubby, update-grub, grub-mkconfig, /etc/default/grub or /etc/kernel/cmdline), so it is the VM's, "
                "the firmware's or an image builder's" % (purpose, change)
            )
            return Step(self._place(summary, True), (), True, True, False, ())
        summary = "%s: %s the kernel command line %s" % (purpose, change, how)
        if add and remove_names:
            summary += ", replacing any %s already there" % ", ".join("`%s=`" % n for n in remove_names)
        if self.running:
            summary += ", then reboot"
        elif self.image is not None and how.startswith(("in a GRUB drop-in", "in the GRUB files", "in GRUB_CMDLINE_LINUX")):
            # grub-mkconfig probes the root device: in a chroot of an unpacked tree it fails,
            # or writes the build machine's disk into the image.
            summary += (
                ", then regenerate grub.cfg where the image's disk is attached (grub-mkconfig probes the root device, "
                "which a chroot of an unpacked tree does not have)"
            )
        return Step(self._place(summary, True), commands, True, True, False, ())

    def _rebuild_grub(self, command: str):
        """The grub.cfg rebuild; none in an image, where it must run with the image's disk."""
        return () if self.image is not None else (self.sudo(command),)

    def _grub_set(self, drop_in) -> set:
        """Parameter names the GRUB defaults files (not ``drop_in``, rewritten whole) set."""
        return {name for args in self._boot_args if args.variable and args.path != drop_in for name in args.names}

    def _grub_removals(self, names, drop_in):
        """sed commands cutting ``names`` out of the GRUB_CMDLINE_LINUX* lines that set them."""
        if not names:
            return []
        pattern = "|".join(_ere(name) for name in names)
        script = (
            "/^[[:space:]]*(export[[:space:]]+)?GRUB_CMDLINE_LINUX(_DEFAULT)?=/ s/([\"'[:space:]=}])(%s)=[^\"'[:space:]}]*/\\1/g" % pattern
        )
        files = sorted({args.path for args in self._boot_args if args.variable and args.path != drop_in and args.names & set(names)})
        return [self.sudo("sed -i -E %s %s" % (quote(script), quote(path))) for path in files]

    def _edit(self, path: str) -> str:
        if self.image is not None:
            path = quote(self.image.rstrip("/") + path)
        return "${EDITOR:-vi} %s" % path if self.root else "sudoedit %s" % path

    def runtime(self, summary: str, commands, writes=(), host_wide: bool = True):
        """Commands (already with ``sudo`` where needed) that change the running kernel now;
        none for an image, which is not running."""
        if not self.running:
            return []
        on_host = host_wide and self.container is not None
        return [Step(self._place(summary, host_wide), tuple(commands), True, False, on_host, tuple(writes))]

    # -- sysfs and udev -----------------------------------------------------------------

    def sysfs(self, paths, value: str, purpose: str):
        """Write ``value`` to sysfs files now (lost at reboot); none for a stopped image."""
        command = "echo %s | %s" % (quote(value), self.sudo("tee %s >/dev/null" % " ".join(quote(p) for p in paths)))
        return self.runtime(purpose + " now", [command], paths)

    def udev_rule(self, name: str, rule: str, purpose: str):
        """Install a udev rule file and apply it to present devices."""
        target = "/etc/udev/rules.d/%s" % name
        commands = ["printf '%%s\\n' %s | %s" % (quote(rule), self.sudo("tee %s >/dev/null" % target))]
        if self.running:
            commands.append(self.sudo("udevadm control --reload"))
            commands.append(self.sudo("udevadm trigger --subsystem-match=block --action=change"))
        return Step(
            self._place("%s at every boot with a udev rule" % purpose, True), tuple(commands), True, True, self.container is not None, ()
        )

    def tuned_override(self, name: str, summary: str, sections, purpose: str):
        """A step adding tuned profile ``name`` (``sections``: (section, ["key=value", …]))
        after the active profiles, where tuned is installed; None otherwise.

        tuned-adm merges the profiles it is given, the last winning (tuned-adm(8)), so the
        active ones keep every other setting. The active list is read when the command runs,
        so overrides that other findings add survive whichever runs last.
        """
        tuned = self._tuned
        # Only where tuned already runs (or, in an image, starts at boot): enabling it would
        # apply a whole profile (and stop the services tuned.service conflicts with) for one
        # setting.
        if tuned is None or not tuned.enabled:
            return None
        directory = "%s/%s" % (tuned.user_dir, name)
        lines = ["[main]", "summary=%s" % summary]
        for section, keys in sections:
            lines.append("[%s]" % section)
            lines.extend(keys)
        others = "$(tr -s ' ' '\\n' 2>/dev/null <%s | grep -vx %s)" % (TUNED_ACTIVE, quote(name))
        if self.image is None:
            activate = "%s %s %s" % (self.sudo("tuned-adm profile"), others, quote(name))
        else:
            # No daemon to ask: write what `tuned-adm profile` records, which tuned reads when
            # the image boots (the list, merged in order, and the manual mode that keeps it).
            # No 2>/dev/null: an image seldom has a /dev, and a failed redirection would skip
            # the read and drop the active profiles.
            others = "$(tr -s ' ' '\\n' <%s | grep -vx %s)" % (TUNED_ACTIVE, quote(name))
            script = "p=%s; echo $p %s >%s && echo manual >%s" % (others, quote(name), TUNED_ACTIVE, TUNED_MODE)
            activate = self.sudo("sh -c %s" % quote(script))
        commands = (
            self.sudo("mkdir -p %s" % quote(directory)),
            "printf '%%s\\n' %s | %s"
            % (" ".join(quote(line) for line in lines), self.sudo("tee %s/tuned.conf >/dev/null" % quote(directory))),
            activate,
        )
        return Step(
            self._place("%s with tuned (a profile of its own, applied after the active ones)" % purpose, True),
            commands,
            True,
            True,
            self.container is not None,
            (),
        )


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


def _comment_script(raw_keys) -> str:
    """A sed -E script turning the assignments of ``raw_keys`` into comments."""
    pattern = "|".join(sorted({_ere(key) for key in raw_keys}))
    return "s/^([[:space:]]*-?(%s)[[:space:]]*=)/# \\1/" % pattern


def _raw_key(text: str) -> str:
    """The key as spelled in a sysctl line (``vm/nr_hugepages`` stays as written)."""
    key = text.split("=", 1)[0].strip()
    return key[1:].strip() if key.startswith("-") else key


@fact("fixes")
def fixes(host, facts):
    return Fixes(host, facts)
