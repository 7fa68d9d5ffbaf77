"""Will the model fit in memory: RAM, what is available now, swap, the cgroup limit."""

from __future__ import annotations

from ai_doctor.engine import rule
from ai_doctor.model import Evidence, Issue, Pass, Severity, Step
from ai_doctor.units import DTYPE_BYTES, gib, params_words, size_for

# What a 16-bit checkpoint shrinks to; int4 formats carry scales, so they are "about".
_QUANTIZED = (("int8", 0.5), ("int4", 0.25))


@rule(
    "memory.headroom",
    "Not enough memory for the model",
    Severity.HIGH,
    needs=("model", "meminfo"),
    uses=("cgroup_memory", "hugepages", "container", "fixes"),
)
def headroom(f):
    """The model is larger than the memory it can get.

    Critical when it exceeds all RAM (MemTotal) or the hard memory limit of the cgroup
    aidoctor runs in (memory.max in cgroup v2, memory.limit_in_bytes in v1, the smallest on
    the path to the root): it cannot be held, and the OOM killer ends the loader. High when it
    exceeds MemAvailable plus free swap, or the cgroup's limit minus what the cgroup already
    uses: the load evicts everything else or is killed. Medium when it only fits by using
    swap: it loads, slowly, and pages during inference.

    MemAvailable is the kernel's estimate of memory available without swapping; it excludes
    static huge page pools. When the model does not fit, the message gives the sizes of
    quantized variants (int8, int4).

    Reference: Documentation/filesystems/proc.rst (MemAvailable); Documentation/admin-guide/cgroup-v2.rst
    (memory.max, memory.high); Documentation/admin-guide/cgroup-v1/memory.rst.
    """
    model, mem = f.model, f.meminfo
    size = model.size
    total = mem.get("MemTotal", 0)
    available = mem.get("MemAvailable")
    estimated = available is None
    if estimated:  # kernels before 3.14 have no MemAvailable
        available = mem.get("MemFree", 0) + mem.get("Cached", 0)
    swap_free = mem.get("SwapFree", 0)
    cgroup = f.cgroup_memory
    limit = cgroup.limit if cgroup else None
    usage = cgroup.usage if cgroup else None

    problems = []  # (severity, sentence, capacity)
    if size > total:
        problems.append((Severity.CRITICAL, "more than all of this host's RAM (MemTotal %s)" % gib(total), total))
    if limit is not None and size > limit:
        problems.append((Severity.CRITICAL, "more than the memory limit of its cgroup (%s in %s)" % (gib(limit), cgroup.limit_path), limit))
    if available + swap_free < size:
        problems.append(
            (
                Severity.HIGH,
                "more than is available now (%s %s%s)"
                % (
                    "MemFree + Cached" if estimated else "MemAvailable",
                    gib(available),
                    " + free swap %s" % gib(swap_free) if swap_free else ", no swap free",
                ),
                available + swap_free,
            )
        )
    if limit is not None and usage is not None and limit - usage < size <= limit:
        problems.append(
            (
                Severity.HIGH,
                "more than the cgroup's limit leaves after what it already uses (%s of %s)" % (gib(usage), gib(limit)),
                limit - usage,
            )
        )
    if not problems and available < size:
        problems.append(
            (
                Severity.MEDIUM,
                "more than MemAvailable (%s): it only fits by using swap, and will page" % gib(available),
                available + swap_free,
            )
        )
    if not problems:
        return Pass("the model (%s) fits: MemAvailable %s of MemTotal %s" % (gib(size), gib(available), gib(total)))

    severity = min((p[0] for p in problems), key=lambda s: s.rank)
    capacity = min(p[2] for p in problems)
    message = "The model needs %s: %s." % (model.described, "; ".join(p[1] for p in problems))
    pools = f.hugepages
    idle = sum(p.bytes_total for p in pools.pools.values() if p.total and p.free == p.total and not p.reserved) if pools else 0
    if idle:
        message += " An unused huge page pool holds %s out of MemAvailable (hugepages.unused)." % gib(idle)
    quantized = _quantized(model, capacity)
    if quantized:
        message += " " + quantized
    evidence = [Evidence(mem.path, "%s: %s" % (key, gib(mem.get(key)))) for key in ("MemTotal", "MemAvailable", "SwapFree") if key in mem]
    if limit is not None:
        evidence.append(Evidence(cgroup.limit_path, str(limit)))
    if usage is not None and limit is not None:
        evidence.append(Evidence(cgroup.usage_path, str(usage)))
    return Issue(message, evidence, _steps(f, cgroup, size, problems, quantized), severity=severity, impact=size - capacity)


def _quantized(model, capacity) -> str:
    """What the same model needs at smaller formats, and whether that fits ``capacity``."""
    if model.params and model.dtype:
        base = "%s parameters" % params_words(model.params)
        sizes = [(dtype, size_for(model.params, dtype)) for dtype in ("int8", "int4") if DTYPE_BYTES[dtype] < DTYPE_BYTES[model.dtype]]
    else:
        base = "16-bit weights (an assumption: --params and --dtype make it exact)"
        sizes = [(dtype, int(model.size * factor)) for dtype, factor in _QUANTIZED]
    if not sizes:
        return ""
    parts = ["%s ≈ %s (%s)" % (dtype, gib(value), "fits" if value <= capacity else "does not fit") for dtype, value in sizes]
    return "As %s, quantized it would need %s." % (base, ", ".join(parts))


def _steps(f, cgroup, size, problems, quantized):
    steps = []
    if quantized:
        steps.append(
            Step("Load a quantized variant that fits (sizes above; int4 formats need a little more for their scales)", (), False, None)
        )
    over_cgroup = cgroup and cgroup.limit is not None and any("cgroup" in p[1] for p in problems)
    if over_cgroup:
        steps.append(_cgroup_step(f, cgroup, size))
    if not any(p[0] is Severity.CRITICAL for p in problems) and any("cgroup" not in p[1] for p in problems):
        steps.append(
            Step(
                "Free memory before loading: stop other large processes and release unused huge page pools "
                "(page cache needs nothing: MemAvailable already counts what can be reclaimed)",
                ("ps -eo pid,rss,comm --sort=-rss | head", "free -h"),
                False,
                None,
            )
        )
    return steps


def _cgroup_step(f, cgroup, size):
    # Leave an eighth on top for the loader's own buffers and the runtime.
    want = "%dG" % -(-(size + size // 8) // (1 << 30))
    unit = _unit_of(cgroup.path)
    container = f.container
    fixes = f.fixes
    if container and container.detected:
        if container.runtime == "kubernetes":
            return Step(
                "Raise the pod's memory limit: set resources.limits.memory to at least %s in its spec (on the cluster, not here)" % want,
                (),
                False,
                True,
                True,
            )
        ident = _container_id(cgroup.path)
        command = "docker update --memory %s --memory-swap %s %s" % (want, want, ident or "CONTAINER")
        if container.runtime == "podman":
            command = "podman update --memory %s %s" % (want, ident or "CONTAINER")
        return Step("Raise the container's memory limit on its host (or recreate it with --memory %s)" % want, (command,), True, True, True)
    if unit:
        return Step(
            "Raise the memory limit of %s (persists as a systemd drop-in)" % unit,
            (fixes.sudo("systemctl set-property %s MemoryMax=%s" % (unit, want)),),
            True,
            True,
        )
    return Step(
        "Raise the memory limit of cgroup %s to at least %s (memory.max or memory.limit_in_bytes)" % (cgroup.path, want), (), True, False
    )


def _unit_of(path: str):
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last if last.endswith((".service", ".scope", ".slice")) and last != "-.slice" else None


def _container_id(path: str):
    last = path.rstrip("/").rsplit("/", 1)[-1]
    for prefix in ("docker-", "libpod-"):
        if last.startswith(prefix):
            last = last[len(prefix) :]
    last = last.split(".", 1)[0]
    return last[:12] if len(last) == 64 and all(c in "0123456789abcdef" for c in last) else None
