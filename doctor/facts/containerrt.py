"""Container engines on the host and how they hand NVIDIA GPUs to containers.

Three ways exist (NVIDIA Container Toolkit documentation, "Installing the NVIDIA Container
Toolkit" and "Support for Container Device Interface"):

- the ``nvidia`` runtime, which ``nvidia-ctk runtime configure`` writes: for Docker
  ``runtimes.nvidia.path`` in /etc/docker/daemon.json (pkg/config/engine/docker), for
  containerd a ``runtimes.nvidia`` table under the CRI plugin
  (``plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia`` in a version 2 config,
  ``plugins."io.containerd.cri.v1.runtime"…`` in version 3), since toolkit 1.17 in the drop-in
  /etc/containerd/conf.d/99-nvidia.toml that config.toml ``imports``;
- the OCI hook: dockerd registers its ``--gpus`` device driver when
  ``nvidia-container-runtime-hook`` is on its PATH (moby daemon/nvidia_linux.go); Podman reads
  hook files from /usr/share/containers/oci/hooks.d;
- CDI: a spec (YAML or JSON) in /etc/cdi or /var/run/cdi, the latter taking precedence
  (tags.cncf.io/container-device-interface pkg/cdi/spec-dirs.go: the later directory has the
  higher priority), written by ``nvidia-ctk cdi generate`` or nvidia-cdi-refresh.service
  (which writes /var/run/cdi/nvidia.yaml). Podman uses CDI natively; Docker from 25 when
  ``features.cdi`` is set (28.2 enables it by default); containerd with ``enable_cdi``.

containerd matters here only for Kubernetes (kubelet, k3s or RKE2 is installed): Docker runs
its own containerd, and its GPU handling is Docker's. k3s and RKE2 generate their containerd
configuration at start (/var/lib/rancher/{k3s,rke2}/agent/etc/containerd/config.toml) and add
the nvidia runtime themselves when its binary is there.

Configuration files are read with small linear readers: JSON (daemon.json), a TOML subset
(table headers, ``key = value`` with strings, booleans, numbers and arrays, dotted keys) and a
block-YAML subset (mappings, sequences, plain and quoted scalars) for CDI specs; what they do
not understand is noted, never raised.
"""

from __future__ import annotations

import json

from ai_doctor.facts import fact
from ai_doctor.record import Record

BIN_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin", "/sbin")
# The GPU Operator installs the toolkit here on each node.
OPERATOR_TOOLKIT = "/usr/local/nvidia/toolkit"
TOOLKIT = ("nvidia-container-runtime", "nvidia-container-runtime-hook", "nvidia-ctk")
DOCKER_CONFIG = "/etc/docker/daemon.json"
SNAP_DOCKER_CONFIG = "/var/snap/docker/current/config/daemon.json"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
RANCHER_CONFIGS = (
    ("k3s", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"),
    ("rke2", "/var/lib/rancher/rke2/agent/etc/containerd/config.toml"),
)
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
HOOK_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")
CDI_REFRESH_UNITS = (
    "/usr/lib/systemd/system/nvidia-cdi-refresh.path",
    "/lib/systemd/system/nvidia-cdi-refresh.path",
    "/etc/systemd/system/nvidia-cdi-refresh.path",
)
CDI_REFRESH_LINK = "/etc/systemd/system/multi-user.target.wants/nvidia-cdi-refresh.path"
CONFIG_CAP = 1 << 20
SPEC_CAP = 4 << 20
# Files one run reads at most: CDI specs, containerd imports.
FILE_LIMIT = 32
# Library mounts of a CDI spec looked up on the host, at most (libcuda and libnvidia-ml are named
# once per device class; a few say whether the driver they came from is still installed).
LIBRARY_CHECK = 8


class DockerConfig(Record):
    """/etc/docker/daemon.json: ``problem`` says why it could not be used (None: read or
    absent; ``present`` tells which); ``runtimes`` name → path; ``cdi``: features.cdi (None:
    unset); ``cgroup_driver`` from exec-opts (None: unset); ``cdi_dirs``: cdi-spec-dirs."""

    __slots__ = ("path", "present", "problem", "runtimes", "default_runtime", "cdi", "cgroup_driver", "cdi_dirs")


class ContainerdConfig(Record):
    """A containerd configuration with what it imports: ``files`` read, ``runtimes`` name →
    BinaryName ("" when unset), ``systemd_cgroup`` names of runtimes with ``SystemdCgroup =
    true``, ``enable_cdi`` (None: unset), ``cri_disabled``, ``problems``."""

    __slots__ = ("path", "present", "files", "runtimes", "systemd_cgroup", "enable_cdi", "cri_disabled", "problems")


class CdiSpec(Record):
    """One CDI spec: ``kind`` (``nvidia.com/gpu``), ``nodes`` (container path, host path, major
    or None, minor or None), ``libraries`` (host paths mounted), ``driver`` (the driver version
    it was made for, from --host-driver-version or libcuda/libnvidia-ml file names), ``mtime``
    (None: unknown), ``problem`` (None: understood) and, on a running host, ``live``: (host
    path, Node or None, outcome) of each device node it names under /dev; ``gone``: those of the
    first :data:`LIBRARY_CHECK` ``libraries`` the host does not have (stat'ed, never opened)."""

    __slots__ = ("path", "kind", "nodes", "libraries", "driver", "mtime", "problem", "live", "gone")
    _defaults = {"live": (), "gone": ()}

    @property
    def nvidia(self) -> bool:
        return (self.kind or "").startswith("nvidia.com/")


class Engine(Record):
    """An installed container engine: ``name`` (docker, containerd, podman), its binary and, for
    containerd, what runs it (kubelet, k3s, rke2)."""

    __slots__ = ("name", "binary", "via")
    _defaults = {"via": None}


class ContainerRuntimes(Record):
    """Engines installed, their configuration, the toolkit binaries (name → path), CDI specs,
    Podman's NVIDIA hook files, nvidia-cdi-refresh (unit file, enabled link) and whether systemd
    runs with the unified cgroup hierarchy (Docker's default cgroup driver is systemd there).
    ``unresolved``: (engine, runtime name, path) of configured NVIDIA runtimes whose program is
    not there; ``driver_mtime``: when the nvidia module of the kernel that runs (in an image:
    boots) was written (None: unknown)."""

    __slots__ = (
        "engines",
        "docker",
        "containerd",
        "toolkit",
        "specs",
        "hooks",
        "refresh_unit",
        "refresh_enabled",
        "cgroup2",
        "systemd",
        "unresolved",
        "driver_mtime",
    )

    def engine(self, name: str):
        return next((engine for engine in self.engines if engine.name == name), None)

    @property
    def nvidia_specs(self):
        return tuple(spec for spec in self.specs if spec.nvidia)


def find_binary(host, name: str, dirs=BIN_DIRS):
    """The path of an executable ``name`` in ``dirs`` (the first), or None."""
    for directory in dirs:
        path = "%s/%s" % (directory, name)
        got, info = host.stat(path)
        if got.ok and info.is_file and info.executable:
            return path
    return None


def parse_docker_config(text: str, path: str) -> DockerConfig:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return DockerConfig(path, True, "not valid JSON (%s)" % str(exc)[:160], {}, None, None, None, ())
    if not isinstance(data, dict):
        return DockerConfig(path, True, "not a JSON object", {}, None, None, None, ())
    runtimes = {}
    for name, value in (data.get("runtimes") or {}).items() if isinstance(data.get("runtimes"), dict) else ():
        runtimes[str(name)] = str(value.get("path", "")) if isinstance(value, dict) else ""
    features = data.get("features") if isinstance(data.get("features"), dict) else {}
    cdi = features.get("cdi") if isinstance(features.get("cdi"), bool) else None
    driver = None
    for option in data.get("exec-opts") or () if isinstance(data.get("exec-opts"), list) else ():
        key, sep, value = str(option).partition("=")
        if sep and key.strip() == "native.cgroupdriver":
            driver = value.strip()
    dirs = data.get("cdi-spec-dirs")
    dirs = tuple(str(d) for d in dirs if isinstance(d, str)) if isinstance(dirs, list) else ()
    default = data.get("default-runtime") if isinstance(data.get("default-runtime"), str) else None
    return DockerConfig(path, True, None, runtimes, default, cdi, driver, dirs)


# -- a TOML subset ---------------------------------------------------------------------------


def _split_dotted(text: str):
    """``plugins."io.containerd.grpc.v1.cri".containerd`` → its parts, quotes removed."""
    parts, current, quote = [], [], None
    for char in text:
        if quote:
            if char == quote:
                quote = None
            else:
                current.append(char)
        elif char in "\"'":
            quote = char
        elif char == ".":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return tuple(parts)


def _toml_value(text: str):
    """A scalar or an array of scalars from the text after ``=`` (already joined when the array
    spans lines); anything else (an inline table) as its text."""
    text = text.strip()
    if text.startswith("["):
        return [_toml_value(item) for item in _array_items(text[1:])]
    if text[:1] and text[0] in "\"'":
        end = text.find(text[0], 1)
        while text[0] == '"' and end > 0 and text[end - 1] == "\\":
            end = text.find('"', end + 1)
        return text[1:end] if end > 0 else text[1:]
    word = text.split("#", 1)[0].strip()
    if word in ("true", "false"):
        return word == "true"
    try:
        return int(word.replace("_", ""))
    except ValueError:
        return word


def _array_items(text: str):
    """Items of an array's text (after its ``[``), split at top-level commas."""
    items, current, quote, depth = [], [], None, 0
    for char in text:
        if quote:
            current.append(char)
            if char == quote:
                quote = None
            continue
        if char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            if depth == 0:
                break
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item for item in items if item.strip() and not item.strip().startswith("#")]


def _strip_comment(line: str) -> str:
    """``line`` without a ``#`` comment outside strings."""
    quote, escaped = None, False
    for at, char in enumerate(line):
        if escaped:
            escaped = False
        elif quote:
            if char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:at]
    return line


def _open_brackets(text: str) -> int:
    """How many ``[`` stay open at the end of ``text`` (strings skipped; no comments left)."""
    depth, quote = 0, None
    for char in text:
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
    return depth


def parse_toml(text: str):
    """[(table path, key path, value)] of every assignment, in order, and the lines not
    understood. Linear in the text: an array spanning lines is gathered once."""
    found, odd = [], []
    table = ()
    pending = None
    for number, raw in enumerate(text.split("\n"), 1):
        line = _strip_comment(raw).strip()
        if pending is not None:
            pending[2].append(line)
            # Only the new line is scanned: the depth so far is kept, so a long array stays linear.
            pending[3][0] += _open_brackets(line)
            if pending[3][0] <= 0:
                found.append((table, pending[0], _toml_value(" ".join(pending[2]))))
                pending = None
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            inner = line[2:].split("]]", 1)[0] if line.startswith("[[") else line[1:].split("]", 1)[0]
            table = _split_dotted(inner)
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            odd.append(number)
            continue
        keys = _split_dotted(key.strip())
        if value.strip().startswith("[") and _open_brackets(value) > 0:
            pending = (keys, number, [value.strip()], [_open_brackets(value)])
            continue
        found.append((table, keys, _toml_value(value)))
    return found, odd


def containerd_settings(assignments):
    """(runtimes name → BinaryName, runtimes with SystemdCgroup = true, enable_cdi, CRI
    disabled, imports) from parse_toml's assignments; later ones win, as containerd merges
    imported files over the main one."""
    runtimes, systemd, enable_cdi, disabled, imports = {}, {}, None, False, []
    for table, keys, value in assignments:
        path = table + keys
        if path == ("imports",) and isinstance(value, list):
            imports += [str(item) for item in value]
        elif path == ("disabled_plugins",) and isinstance(value, list):
            disabled = any(str(item) in ("cri", "io.containerd.grpc.v1.cri") for item in value)
        elif path[-1:] == ("enable_cdi",) and isinstance(value, bool):
            enable_cdi = value
        if "runtimes" in path[:-1]:
            at = path.index("runtimes")
            if at + 1 < len(path):
                name = path[at + 1]
                runtimes.setdefault(name, "")
                rest = path[at + 2 :]
                if rest == ("options", "BinaryName") and isinstance(value, str):
                    runtimes[name] = value
                elif rest == ("options", "SystemdCgroup") and isinstance(value, bool):
                    systemd[name] = value
    return runtimes, tuple(sorted(name for name, on in systemd.items() if on)), enable_cdi, disabled, imports


def read_containerd(host, path: str) -> ContainerdConfig:
    """The configuration at ``path`` with the files its ``imports`` name (``*`` in the last
    part only)."""
    got = host.read_text(path, cap=CONFIG_CAP)
    if got.missing:
        return ContainerdConfig(path, False, (), {}, (), None, False, ())
    if not got.ok:
        return ContainerdConfig(path, True, (), {}, (), None, False, ("%s: %s" % (path, got.describe()),))
    assignments, odd = parse_toml(got.data)
    problems = ["%s: line %d not understood" % (path, odd[0])] if odd else []
    files = [path]
    imports = containerd_settings(assignments)[4]
    for pattern in imports[:FILE_LIMIT]:
        if not pattern.startswith("/"):
            pattern = path.rsplit("/", 1)[0] + "/" + pattern
        folder, _, name = pattern.rpartition("/")
        if "*" in folder or "?" in folder:
            problems.append("%s: import %s not followed" % (path, pattern))
            continue
        if "*" in name or "?" in name or "[" in name:
            import fnmatch

            listing = host.listdir(folder or "/")
            matched = [n for n in (listing.data if listing.ok else ()) if fnmatch.fnmatchcase(n, name)]
        else:
            matched = [name]
        for entry in matched[:FILE_LIMIT]:
            child = "%s/%s" % (folder, entry)
            if child in files:
                continue
            read = host.read_text(child, cap=CONFIG_CAP)
            if read.ok:
                more, _odd = parse_toml(read.data)
                assignments += more
                files.append(child)
            elif not read.missing:
                problems.append("%s: %s" % (child, read.describe()))
    runtimes, systemd, enable_cdi, disabled, _imports = containerd_settings(assignments)
    return ContainerdConfig(path, True, tuple(files), runtimes, systemd, enable_cdi, disabled, tuple(problems))


# -- a block-YAML subset (CDI specs) --------------------------------------------------------


class _Odd(ValueError):
    pass


def _yaml_lines(text: str):
    lines = []
    for raw in text.split("\n"):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise _Odd("a tab in indentation")
        lines.append([len(raw) - len(raw.lstrip(" ")), stripped])
    return lines


def _scalar(text: str):
    if text[:1] and text[0] in "\"'":
        end = text.rfind(text[0])
        return text[1:end] if end > 0 else text[1:]
    if text in ("[]", "{}"):
        return [] if text == "[]" else {}
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(item.strip()) for item in text[1:-1].split(",") if item.strip()]
    if " #" in text:
        text = text.split(" #", 1)[0].rstrip()
    return text


def _mapping_key(text: str):
    """(key, rest) when ``text`` starts a mapping entry (``key:`` or ``key: value``); None."""
    if text[:1] and text[0] in "\"'":
        end = text.find(text[0], 1)
        if end > 0 and text[end + 1 : end + 2] == ":" and text[end + 2 : end + 3] in ("", " "):
            return text[1:end], text[end + 2 :].strip()
        return None
    if text.endswith(":"):
        return text[:-1].strip(), ""
    at = text.find(": ")
    if at > 0 and not text.startswith(("[", "{")):
        return text[:at].strip(), text[at + 2 :].strip()
    return None


def parse_yaml(text: str):
    """A block-YAML document of mappings, sequences and scalars (all as strings); ValueError
    for what it does not read (anchors, block scalars, flow mappings, nesting past 64 levels).
    Each line is looked at once."""
    lines = _yaml_lines(text)
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0][0], 0)
    if end != len(lines):
        raise _Odd("line %d is indented unlike its neighbours" % (end + 1))
    return value


def _item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _block(lines, at, indent, depth):
    if depth > 64:
        raise _Odd("nested more than 64 levels")
    return (_sequence if _item(lines[at][1]) else _mapping)(lines, at, indent, depth)


def _sequence(lines, at, indent, depth):
    items = []
    while at < len(lines) and lines[at][0] == indent and _item(lines[at][1]):
        text = lines[at][1]
        item = text[1:].strip()
        if not item:
            if at + 1 < len(lines) and lines[at + 1][0] > indent:
                value, at = _block(lines, at + 1, lines[at + 1][0], depth + 1)
            else:
                value, at = None, at + 1
        elif _mapping_key(item) is not None:
            # "- key: value": the item's mapping starts on this line, at the column of "key".
            column = indent + len(text) - len(item)
            lines[at] = [column, item]
            value, at = _mapping(lines, at, column, depth + 1)
        else:
            value, at = _scalar(item), at + 1
        items.append(value)
    return items, at


def _mapping(lines, at, indent, depth):
    result = {}
    while at < len(lines) and lines[at][0] == indent and not _item(lines[at][1]):
        entry = _mapping_key(lines[at][1])
        if entry is None:
            raise _Odd("line %r is no mapping entry" % lines[at][1][:40])
        key, rest = entry
        at += 1
        if rest:
            if rest[0] in "|>&*!" or (rest[0] == "{" and rest != "{}"):
                raise _Odd("YAML this reader does not follow (%s)" % rest[0])
            result[key] = _scalar(rest)
        elif at < len(lines) and lines[at][0] > indent:
            result[key], at = _block(lines, at, lines[at][0], depth + 1)
        elif at < len(lines) and lines[at][0] == indent and _item(lines[at][1]):
            result[key], at = _sequence(lines, at, indent, depth + 1)
        else:
            result[key] = None
    return result, at


def _driver_version_of(name: str):
    for prefix in ("libcuda.so.", "libnvidia-ml.so."):
        at = name.rfind("/" + prefix)
        if at >= 0:
            version = name[at + 1 + len(prefix) :]
            if version and version[0].isdigit() and version.count(".") >= 1:
                return version
    return None


def parse_cdi(text: str, path: str) -> CdiSpec:
    """What aidoctor uses of a CDI spec (JSON when it opens with ``{``, else YAML)."""
    try:
        data = json.loads(text) if text.lstrip()[:1] in ("{", "[") else parse_yaml(text)
    except (ValueError, RecursionError) as exc:
        return CdiSpec(path, None, (), (), None, None, "not understood (%s)" % str(exc)[:120])
    if not isinstance(data, dict):
        return CdiSpec(path, None, (), (), None, None, "not a CDI spec (no top-level mapping)")
    edits = [data.get("containerEdits")]
    for device in data.get("devices") or () if isinstance(data.get("devices"), list) else ():
        if isinstance(device, dict):
            edits.append(device.get("containerEdits"))
    nodes, libraries, driver = [], [], None
    for edit in edits:
        if not isinstance(edit, dict):
            continue
        for node in edit.get("deviceNodes") or () if isinstance(edit.get("deviceNodes"), list) else ():
            if isinstance(node, dict) and isinstance(node.get("path"), str):
                host_path = node.get("hostPath") if isinstance(node.get("hostPath"), str) else node["path"]
                major, minor = _number(node.get("major")), _number(node.get("minor"))
                # Go's omitempty leaves a zero out: a major without a minor has minor 0.
                nodes.append((node["path"], host_path, major, 0 if major is not None and minor is None else minor))
        for mount in edit.get("mounts") or () if isinstance(edit.get("mounts"), list) else ():
            if isinstance(mount, dict) and isinstance(mount.get("hostPath"), str):
                found = _driver_version_of(mount["hostPath"])
                if found:
                    libraries.append(mount["hostPath"])
                    driver = driver or found
        for hook in edit.get("hooks") or () if isinstance(edit.get("hooks"), list) else ():
            for arg in hook.get("args") or () if isinstance(hook, dict) and isinstance(hook.get("args"), list) else ():
                if isinstance(arg, str) and arg.startswith("--host-driver-version="):
                    driver = arg.split("=", 1)[1] or driver
    unique = tuple(dict.fromkeys(nodes))
    kind = data.get("kind") if isinstance(data.get("kind"), str) else None
    return CdiSpec(path, kind, unique, tuple(dict.fromkeys(libraries)), driver, None, None)


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 10:
        return int(value)
    return None


def _specs(host, dirs, running):
    found = []
    for folder in dirs:
        listing = host.listdir(folder)
        for name in (listing.data if listing.ok else ())[:FILE_LIMIT]:
            if not name.endswith((".yaml", ".json")):
                continue
            path = "%s/%s" % (folder, name)
            got = host.read_text(path, cap=SPEC_CAP)
            if not got.ok:
                if not got.missing:
                    found.append(CdiSpec(path, None, (), (), None, None, got.describe()))
                continue
            spec = parse_cdi(got.data, path)
            node = host.node(path)
            live = ()
            if running:
                looked = []
                for host_path in dict.fromkeys(host_path for _p, host_path, _ma, _mi in spec.nodes if host_path.startswith("/dev/")):
                    if len(looked) >= 256:
                        break
                    read = host.node(host_path)
                    looked.append((host_path, read.data if read.ok else None, read.describe()))
                live = tuple(looked)
            gone = tuple(lib for lib in spec.libraries[:LIBRARY_CHECK] if host.stat(lib)[0].missing)
            found.append(spec._replace(mtime=node.data.mtime if node.ok else None, live=live, gone=gone))
    return tuple(found)


@fact("container_runtimes")
def container_runtimes(host, facts):
    engines = []
    docker = None
    dockerd = find_binary(host, "dockerd")
    snap = host.exists("/snap/bin/docker")
    if dockerd or snap:
        engines.append(Engine("docker", dockerd or "/snap/bin/docker", "snap" if snap and not dockerd else None))
        path = SNAP_DOCKER_CONFIG if snap and not dockerd else DOCKER_CONFIG
        got = host.read_text(path, cap=CONFIG_CAP)
        if got.ok:
            docker = parse_docker_config(got.data, path)
        elif got.missing:
            docker = DockerConfig(path, False, None, {}, None, None, None, ())
        else:
            docker = DockerConfig(path, True, got.describe(), {}, None, None, None, ())
    containerd = None
    kube = None
    for name, config in RANCHER_CONFIGS:
        binary = find_binary(host, name)
        if binary:
            kube = (name, binary, config)
            break
    if kube is None:
        kubelet = find_binary(host, "kubelet")
        if kubelet:
            kube = ("kubelet", kubelet, CONTAINERD_CONFIG)
    if kube is not None:
        via, binary, config = kube
        containerd_binary = binary if via in ("k3s", "rke2") else find_binary(host, "containerd")
        if containerd_binary:
            engines.append(Engine("containerd", containerd_binary, via))
            containerd = read_containerd(host, config)
    podman = find_binary(host, "podman")
    if podman:
        engines.append(Engine("podman", podman))
    toolkit = {}
    for name in TOOLKIT:
        path = find_binary(host, name, BIN_DIRS + (OPERATOR_TOOLKIT,))
        if path:
            toolkit[name] = path
    hooks = []
    if podman:
        for folder in HOOK_DIRS:
            listing = host.listdir(folder)
            hooks += ["%s/%s" % (folder, n) for n in (listing.data if listing.ok else ()) if "nvidia" in n and n.endswith(".json")]
    dirs = CDI_DIRS + tuple(d for d in (docker.cdi_dirs if docker else ()) if d not in CDI_DIRS)
    running = bool(facts.get("running"))
    specs = _specs(host, dirs, running) if engines else ()
    unresolved = []
    configured = [("docker", name, path) for name, path in (docker.runtimes.items() if docker else ())]
    configured += [("containerd", name, path) for name, path in (containerd.runtimes.items() if containerd else ())]
    for engine, name, path in configured:
        if not nvidia_runtime(name, path) or not path:
            continue
        if path.startswith("/"):
            if not host.exists(path):
                unresolved.append((engine, name, path))
        elif find_binary(host, path, BIN_DIRS + (OPERATOR_TOOLKIT,)) is None:
            unresolved.append((engine, name, path))
    driver_mtime = None
    if any(spec.nvidia for spec in specs):
        modules = facts.get("gpu_modules") or ()
        module = modules[0].found.get("nvidia") if modules else None
        if module is not None:
            read = host.node(module.path)
            driver_mtime = read.data.mtime if read.ok else None
    refresh_unit = next((path for path in CDI_REFRESH_UNITS if host.exists(path)), None)
    refresh_enabled = host.readlink(CDI_REFRESH_LINK).ok
    cgroup2 = host.exists("/sys/fs/cgroup/cgroup.controllers")
    systemd = host.exists("/run/systemd/system")
    return ContainerRuntimes(
        tuple(engines),
        docker,
        containerd,
        toolkit,
        specs,
        tuple(hooks),
        refresh_unit,
        refresh_enabled,
        cgroup2,
        systemd,
        tuple(unresolved),
        driver_mtime,
    )


def nvidia_runtime(name: str, path: str) -> bool:
    """Whether a configured runtime is NVIDIA's: named nvidia (nvidia-cdi, nvidia-legacy …) or
    running nvidia-container-runtime (its .cdi and .legacy variants included)."""
    return name.startswith("nvidia") or path.rsplit("/", 1)[-1].startswith("nvidia-container-runtime")
