"""Is the target a container? Several signals, weighed; /.dockerenv alone is not enough.

VM and bare-metal images built from container images keep /.dockerenv, so it only counts
beside other evidence. Strong signals: podman's /run/.containerenv, systemd's
/run/systemd/container, container cgroup paths, bind mounts from a container runtime's state
directory. Middling ones: an overlay root filesystem, /proc/sys mounted read-only.
"""

from __future__ import annotations

from ai_doctor.facts import fact
from ai_doctor.facts.cgroup import parse_proc_cgroup
from ai_doctor.record import Record

STRONG, MEDIUM, WEAK = 2, 1, 0.5
# Needed to call it a container: one strong signal, or two middling ones.
THRESHOLD = 2

_CGROUP_MARKERS = (
    ("kubepods", "kubernetes"),
    ("/docker/", "docker"),
    ("docker-", "docker"),
    ("libpod", "podman"),
    ("cri-containerd", "containerd"),
    ("crio-", "cri-o"),
    ("/lxc/", "lxc"),
    ("lxc.payload", "lxc"),
)
_INJECTED = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")
_BIND_MARKERS = (
    ("/var/lib/kubelet/pods/", "kubernetes"),
    ("/var/lib/docker/containers/", "docker"),
    ("/containers/storage/", "podman"),
    ("/run/containerd/", "containerd"),
)


class Signal(Record):
    """One hint: what it is, how much it counts, the path behind it, the runtime it names."""

    __slots__ = ("name", "weight", "evidence", "runtime")


class Container(Record):
    """Whether the target runs in a container, which runtime if known, and why."""

    __slots__ = ("detected", "runtime", "signals")

    @property
    def where(self) -> str:
        return {"kubernetes": "this Kubernetes pod's node"}.get(self.runtime, "the container's host")


@fact("container")
def container(host, facts):
    signals = []
    if host.exists("/run/.containerenv"):
        signals.append(Signal("podman marks its containers with /run/.containerenv", STRONG, "/run/.containerenv", "podman"))
    marker = host.read_text("/run/systemd/container", cap=256)
    if marker.ok and marker.data.strip():
        name = marker.data.strip()
        signals.append(Signal("systemd reports running in a container (%s)" % name, STRONG, marker.path, name))
    for path in ("/proc/1/cgroup", "/proc/self/cgroup"):
        got = host.read_text(path, cap=65536)
        if not got.ok:
            continue
        for _hid, _controllers, cgroup_path in parse_proc_cgroup(got.data):
            runtime = next((rt for key, rt in _CGROUP_MARKERS if key in cgroup_path), None)
            if runtime:
                signals.append(Signal("cgroup path %s belongs to %s" % (cgroup_path, runtime), STRONG, path, runtime))
                break
        else:
            continue
        break
    mounts = facts.get("mounts")
    if mounts:
        for mount in mounts.mounts:
            # Runtimes bind their per-container hostname, hosts and resolv.conf over /etc; a host
            # that merely runs a runtime mounts the state directory onto itself instead.
            if mount.mountpoint not in _INJECTED:
                continue
            runtime = next((rt for key, rt in _BIND_MARKERS if key in mount.root), None)
            if runtime:
                signals.append(
                    Signal(
                        "%s is bind-mounted from %s's state (%s)" % (mount.mountpoint, runtime, mount.root), STRONG, mounts.source, runtime
                    )
                )
                break
        root = mounts.at("/")
        if root is not None and root.fstype == "overlay":
            signals.append(Signal("the root filesystem is an overlay", MEDIUM, mounts.source, None))
        proc_sys = mounts.at("/proc/sys")
        if proc_sys is not None and proc_sys.read_only:
            signals.append(Signal("/proc/sys is mounted read-only", MEDIUM, mounts.source, None))
    if host.exists("/.dockerenv"):
        signals.append(Signal("/.dockerenv exists (images built from containers keep it too)", WEAK, "/.dockerenv", "docker"))
    score = sum(signal.weight for signal in signals)
    detected = score >= THRESHOLD
    runtime = next((s.runtime for s in signals if s.runtime and s.weight == STRONG), None)
    if detected and runtime is None:
        runtime = next((s.runtime for s in signals if s.runtime), None)
    return Container(detected, runtime if detected else None, tuple(signals))
