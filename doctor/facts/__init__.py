"""Facts: typed values parsed from a Host, computed once per run and cached.

Each fact is a function ``(host, facts) -> value`` registered with :func:`fact`. When its inputs
are absent it returns :class:`Unavailable` with the reason, which rules pass on as a skip.
Parsers underneath are pure functions of text, so odd input is tested without a Host.
"""

from __future__ import annotations

# The facts registered so far: each module registers its own when imported.
_REGISTERED = {}

# Which module of this package provides each fact, so that a run imports only the modules of
# the facts its rules read (tests/test_facts.py checks this against what the modules register).
MODULES = {
    "blockdev": ("block_devices",),
    "boot": (
        "boot_cmdline", "boot_release", "governors_at_boot", "gpu_at_boot", "pools_at_boot", "schedulers_at_boot", "sysctl_applier",
        "sysctl_at_boot", "thp_at_boot",
    ),
    "bootloader": (
        "boot_args", "boot_entries", "boot_line", "default_boot", "grub_files", "grub_menu", "grub_pending", "grubenv", "loader_default",
    ),
    "cgroup": ("cgroup_memory",),
    "cmdline": ("cmdline",),
    "container": ("container",),
    "containerrt": ("container_runtimes",),
    "cpufreq": ("cpufreq", "machine"),
    "cpuinfo": ("cpus",),
    "cuda": ("cuda_toolkits", "site_packages"),
    "fixes": ("fixes",),
    "gpu": ("apt", "gsp_firmware", "loaded_modules", "nouveau", "nvidia"),
    "gpudevices": ("gpu_device_names", "gpu_devices", "gpu_devices_at_boot"),
    "gpuplatform": (
        "fabric_manager", "fabric_manager_log", "gpu_links", "gpu_models", "iommu_paths", "nvidia_flavour", "nvidia_packages", "nvswitch",
    ),
    "kconfig": ("configs_module", "kernel_config", "other_kernel_configs"),
    "limits": ("limits_config", "pam_limits_stacks", "pids_limits", "process_limits", "rdma_devices"),
    "memory": ("grown_pools", "hugepage_requests", "hugepages", "meminfo", "releasable_pools", "unused_pools"),
    "modules": ("gpu_modules",),
    "mounts": ("model_storage", "mounts"),
    "numa": ("numa",),
    "pci": ("gpus", "pci_devices"),
    "processes": ("processes",),
    "request": ("model",),
    "secureboot": ("module_signatures", "secure_boot"),
    "shm": ("shm",),
    "sysctl": ("sysctl", "sysctl_config", "sysctl_configured_runtime"),
    "sysfsconf": ("sysfs_conf",),
    "system": ("hostname", "identity", "nodename", "ondemand_unit", "os_release", "rc_local", "release", "running", "tools"),
    "thp": ("thp", "thp_writers"),
    "tuned": ("tuned", "tuned_match_inputs", "tuned_profile"),
    "udev": ("udev_scheduler_rules",),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in MODULES.items() for name in names}


def fact(name: str):
    """Register a fact provider under ``name``."""

    def register(provider):
        if name in _REGISTERED:
            raise ValueError("fact %r registered twice" % name)
        _REGISTERED[name] = provider
        return provider

    return register


def provider_of(name: str):
    """The function that computes fact ``name``, its module imported on first use."""
    try:
        return _REGISTERED[name]
    except KeyError:
        pass
    module = _MODULE_OF.get(name)
    if module is not None:
        # __import__, not importlib's import_module: importing importlib (and warnings) costs
        # half a millisecond of every start.
        __import__("%s.%s" % (__name__, module))
    try:
        return _REGISTERED[name]
    except KeyError:
        raise LookupError("no fact named %r" % name) from None


def __getattr__(attribute: str):
    # PROVIDERS: every fact there is (a snapshot computes them all), each module imported.
    if attribute == "PROVIDERS":
        _load_all()
        return _REGISTERED
    raise AttributeError("module %r has no attribute %r" % (__name__, attribute))


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
        provider = provider_of(name)
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


def module_names(package_path) -> set:
    """The public modules (no leading ``_``) of a package, from its ``__path__``: folders are
    listed directly; anything else (aidoctor.pyz run from the zip) through pkgutil."""
    import os

    names = set()
    for directory in package_path:
        try:
            names.update(entry[:-3] for entry in os.listdir(directory) if entry.endswith(".py") and not entry.startswith("_"))
        except OSError:
            import pkgutil

            names.update(module.name for module in pkgutil.iter_modules([directory]) if not module.name.startswith("_"))
    return names


def _load_all() -> None:
    # Every module in this package, listed in MODULES or not: a new one registers on import.
    names = set(MODULES) | module_names(__path__)
    for name in sorted(names):
        __import__("%s.%s" % (__name__, name))
