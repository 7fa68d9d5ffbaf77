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
from ai_doctor.facts.sysctl import DEFAULTS, key_path
from ai_doctor.model import Step

DROP_IN_DIR = "/etc/sysctl.d"
_ERE_SPECIAL = set("\\.[]()*+?{}|^$/")


def _quote(word: str) -> str:
    import shlex  # only when a fix is printed

    return shlex.quote(word)


def _ere(text: str) -> str:
    return "".join("\\" + c if c in _ERE_SPECIAL else c for c in text)


class Fixes:
    """Builds :class:`Step` lists for one target; see the module docstring."""

    def __init__(self, host, facts):
        self._facts = facts
        self.running = facts.get("running")
        identity = facts.get("identity")
        self.root = identity.is_root is True
        container = facts.get("container")
        self.container = container if container and container.detected else None
        # An image is changed from outside: commands run in it through chroot, so a pasted
        # command never edits the analysing machine's own files.
        self.image = None if self.running or host.live else host.root

    # -- shared pieces ------------------------------------------------------------------

    def sudo(self, command: str) -> str:
        if self.image is not None:
            command = "chroot %s %s" % (_quote(self.image), command)
        return command if self.root else "sudo " + command

    def _place(self, summary: str, host_wide: bool) -> str:
        if host_wide and self.container is not None:
            return "On %s (not inside this container, where it cannot be changed): %s" % (
                self.container.where,
                summary[0].lower() + summary[1:],
            )
        if self.image is not None:
            return "In the image at %s: %s" % (self.image, summary[0].lower() + summary[1:])
        return summary

    # -- sysctl -------------------------------------------------------------------------

    def sysctl(self, settings, topic: str, purpose: str):
        """Set ``settings`` [(key, value)] now and at every boot.

        The drop-in is /etc/sysctl.d/90-aidoctor-TOPIC.conf, written whole (re-running the fix
        leaves one copy). Editable assignments of the same keys elsewhere are commented out,
        because whichever file sorts last would otherwise win at boot.
        """
        keys = [key for key, _value in settings]
        writes = tuple(key_path(key) for key in keys)
        command = self.sudo("sysctl -w %s" % " ".join(_quote("%s=%s" % item) for item in settings))
        steps = self.runtime(purpose + " now", [command], writes)
        conflicts = self._editable_assignments(keys)
        commands = [self._comment_out_command(path, raw_keys) for path, raw_keys in conflicts]
        needed = [(k, v) for k, v in settings if not (DEFAULTS.get(k) == v and not self._vendor_files(k))]
        if needed:
            name = "90-aidoctor-%s.conf" % topic
            if any(other.rsplit("/", 1)[1] >= name for k, _v in needed for other in self._vendor_files(k)):
                name = "99-zz-aidoctor-%s.conf" % topic  # sort after the vendor file that sets it
            lines = " ".join(_quote("%s = %s" % item) for item in needed)
            target = "%s/%s" % (DROP_IN_DIR, name)
            commands.append("printf '%%s\\n' %s | %s" % (lines, self.sudo("tee " + target + " >/dev/null")))
        if not commands:
            return steps  # nothing persistent sets it, and the kernel default is what is wanted
        if self.running:
            commands.append(self.sudo("sysctl --system"))
        if needed:
            what = (
                "keep it at boot: "
                + ("comment out the lines that set it and " if conflicts else "")
                + "write a drop-in under /etc/sysctl.d"
            )
        else:
            what = "keep it at boot: comment out the lines that set it (the kernel default then applies)"
        if self.running:
            what += ", then reload all sysctl files (`sysctl -p` reads only /etc/sysctl.conf)"
        steps.append(Step(self._place(what[0].upper() + what[1:], True), tuple(commands), True, True, self.container is not None, writes))
        return steps

    def comment_out(self, assignments, summary: str):
        """A step commenting out persistent assignments (the settings do nothing or harm)."""
        by_file = {}
        for item in assignments:
            by_file.setdefault(item.path, []).append(_raw_key(item.text))
        commands = [self._comment_out_command(path, keys) for path, keys in sorted(by_file.items())]
        return Step(self._place(summary, True), tuple(commands), True, True, self.container is not None, ())

    def _editable_assignments(self, keys):
        config = self._facts.get("sysctl_config")
        if not config:
            return []
        by_file = {}
        for item in config.assignments:
            if item.key in keys and item.path.startswith("/etc/"):
                by_file.setdefault(item.path, []).append(_raw_key(item.text))
        return sorted(by_file.items())

    def _vendor_files(self, key: str):
        """Files outside /etc (not ours to edit) that set ``key``."""
        config = self._facts.get("sysctl_config")
        if not config:
            return []
        return [item.path for item in config.assignments if item.key == key and not item.path.startswith("/etc/")]

    def _comment_out_command(self, path: str, raw_keys) -> str:
        pattern = "|".join(sorted({_ere(key) for key in raw_keys}))
        script = "s/^([[:space:]]*-?(%s)[[:space:]]*=)/# \\1/" % pattern
        return self.sudo("sed -i -E %s %s" % (_quote(script), _quote(path)))

    # -- kernel command line ------------------------------------------------------------

    def kernel_args(self, add, remove, purpose: str):
        """A persistent change of the kernel command line, through the target's boot loader.

        ``add`` are parameters to set (``hugepages=128``); ``remove`` names parameters to drop
        first (``hugepages``), so a parameter is never left on the line twice.
        """
        add_text = " ".join(add)
        remove_names = sorted({arg.split("=", 1)[0] for arg in remove})
        cmdline = self._facts.get("cmdline")
        if cmdline:
            # Only what is on the line now needs removing; then a drop-in can simply add.
            present = {param.name for param in cmdline.params}
            remove_names = [name for name in remove_names if name in present]
        change = "add `%s` to" % add_text if add else "remove %s from" % ", ".join("`%s=`" % n for n in remove_names)
        if self.container is not None:
            return Step(self._place("%s: %s the kernel command line and reboot" % (purpose, change), True), (), True, True, True, ())
        tools = self._facts.get("tools") or {}
        if "grubby" in tools:
            command = "grubby --update-kernel=ALL"
            if remove_names:
                command += " --remove-args=%s" % _quote(" ".join(remove_names))
            if add:
                command += " --args=%s" % _quote(add_text)
            commands = (self.sudo(command),)
            how = "with grubby"
        elif "update-grub" in tools and add and not remove_names:
            # Debian's grub-mkconfig sources /etc/default/grub.d/*.cfg after /etc/default/grub,
            # so one file of our own is idempotent and leaves the distribution's file alone.
            line = 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX %s"' % add_text
            # One file per parameter family, so two fixes never overwrite each other.
            name = "90-aidoctor-%s.cfg" % add[0].split("=", 1)[0].replace(".", "-")
            commands = (
                self.sudo("mkdir -p /etc/default/grub.d"),
                "printf '%%s\\n' %s | %s" % (_quote(line), self.sudo("tee /etc/default/grub.d/%s >/dev/null" % name)),
                self.sudo("update-grub"),
            )
            how = "in a GRUB drop-in"
        elif "/etc/default/grub" in tools and ({"update-grub", "grub2-mkconfig", "grub-mkconfig"} & set(tools)):
            if "update-grub" in tools:
                rebuild = "update-grub"
            elif "grub2-mkconfig" in tools:
                rebuild = "grub2-mkconfig -o /boot/grub2/grub.cfg"
            else:
                rebuild = "grub-mkconfig -o /boot/grub/grub.cfg"
            commands = (self._edit("/etc/default/grub"), self.sudo(rebuild))
            how = "in GRUB_CMDLINE_LINUX (and GRUB_CMDLINE_LINUX_DEFAULT) of /etc/default/grub, by hand"
        elif "/etc/kernel/cmdline" in tools:
            commands = (self._edit("/etc/kernel/cmdline"),)
            if "kernel-install" in tools:
                commands += (self.sudo('kernel-install add "$(uname -r)" "/usr/lib/modules/$(uname -r)/vmlinuz"'),)
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
        return Step(self._place(summary, True), commands, True, True, False, ())

    def _edit(self, path: str) -> str:
        if self.image is not None:
            path = _quote(self.image.rstrip("/") + path)
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
        command = "echo %s | %s" % (_quote(value), self.sudo("tee %s >/dev/null" % " ".join(_quote(p) for p in paths)))
        return self.runtime(purpose + " now", [command], paths)

    def udev_rule(self, name: str, rule: str, purpose: str):
        """Install a udev rule file and apply it to present devices."""
        target = "/etc/udev/rules.d/%s" % name
        commands = ["printf '%%s\\n' %s | %s" % (_quote(rule), self.sudo("tee %s >/dev/null" % target))]
        if self.running:
            commands.append(self.sudo("udevadm control --reload"))
            commands.append(self.sudo("udevadm trigger --subsystem-match=block --action=change"))
        return Step(
            self._place("%s at every boot with a udev rule" % purpose, True), tuple(commands), True, True, self.container is not None, ()
        )

    def tuned_profile(self, profile: str, purpose: str):
        """Switch tuned's profile where tuned is installed; None otherwise."""
        tools = self._facts.get("tools") or {}
        if "tuned-adm" not in tools:
            return None
        return Step(
            self._place("%s with tuned (it re-applies the profile at every boot)" % purpose, True),
            (self.sudo("tuned-adm profile %s" % profile),),
            True,
            True,
            self.container is not None,
            (),
        )


def _raw_key(text: str) -> str:
    """The key as spelled in a sysctl line (``vm/nr_hugepages`` stays as written)."""
    key = text.split("=", 1)[0].strip()
    return key[1:].strip() if key.startswith("-") else key


@fact("fixes")
def fixes(host, facts):
    return Fixes(host, facts)
