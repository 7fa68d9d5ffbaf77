"""What sysctl keys mean to this tool: which bear on loading and serving models, and which guard
the kernel's security, with the direction in which each is weaker.

The security table follows the kernel's documentation of each key
(Documentation/admin-guide/sysctl/fs.rst, kernel.rst, vm.rst, net.rst,
Documentation/networking/ip-sysctl.rst, Documentation/admin-guide/LSM/Yama.rst,
Documentation/admin-guide/sysrq.rst); ``kernel.unprivileged_userns_clone`` is Debian's and
Ubuntu's own patch.
"""

from __future__ import annotations

from ai_doctor.facts.sysctl import sysctl_int

# Keys that change how a model loads or a server serves it: memory, NUMA, the scheduler, file
# and socket limits.
_MODEL_PREFIXES = (
    "vm.",
    "kernel.numa_balancing",
    "kernel.sched_",
    "kernel.shm",
    "fs.file-max",
    "fs.nr_open",
    "fs.aio-max-nr",
    "net.core.",
    "net.ipv4.tcp_",
    "net.ipv4.ip_local_port_range",
)
# Where a stronger setting is lower, or the order is not the values' own.
_RANKS = {
    # 0 enabled for all; 1 (locked) and 2 both disable unprivileged BPF.
    "kernel.unprivileged_bpf_disabled": lambda v: 0 if v == 0 else 1,
    # 1 (debug) is the weakest, 2 (suidsafe) between it and 0.
    "fs.suid_dumpable": lambda v: {0: 2, 2: 1}.get(v, 0),
    # 1 enables every function, another mask some, 0 none.
    "kernel.sysrq": lambda v: 2 if v == 0 else 0 if v == 1 else 1,
    # 0 no validation, 2 loose, 1 strict (RFC 3704).
    "rp_filter": lambda v: {0: 0, 2: 1, 1: 2}.get(v, 0),
    "kernel.unprivileged_userns_clone": lambda v: -v,
    "user.max_user_namespaces": lambda v: -v,
}
# Keys where a higher value is stronger.
_HIGHER = (
    "fs.protected_symlinks",
    "fs.protected_hardlinks",
    "fs.protected_fifos",
    "fs.protected_regular",
    "kernel.kptr_restrict",
    "kernel.yama.ptrace_scope",
    "kernel.randomize_va_space",
    "kernel.dmesg_restrict",
    "kernel.perf_event_paranoid",
    "kernel.kexec_load_disabled",
    "net.core.bpf_jit_harden",
    "vm.mmap_min_addr",
    "net.ipv4.tcp_syncookies",
)


def bears_on_models(key: str) -> bool:
    return key.startswith(_MODEL_PREFIXES)


def _rank(key: str):
    if key in _HIGHER:
        return lambda v: v
    if key.startswith("net.ipv4.conf.") and key.endswith(".rp_filter"):
        return _RANKS["rp_filter"]
    return _RANKS.get(key)


def guards_security(key: str) -> bool:
    return _rank(key) is not None


def weakens(key: str, new, old) -> bool:
    """Whether setting ``key`` from ``old`` to ``new`` weakens security; a value that is not a
    number where one is expected counts as weakening (it cannot be shown not to)."""
    rank = _rank(key)
    if rank is None:
        return False
    before, after = sysctl_int(old), sysctl_int(new)
    if after is None or before is None:
        return str(new).strip() != str(old).strip()
    return rank(after) < rank(before)
