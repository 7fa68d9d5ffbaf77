"""contrib/kubernetes: the DaemonSet mounts what the checks read, read-only, and runs the pyz
of contrib/kubernetes/Dockerfile with --root on those mounts."""

from __future__ import annotations

import pytest

from conftest import REPO

KUBERNETES = REPO / "contrib" / "kubernetes"
READ = {"/proc", "/sys", "/etc", "/boot", "/lib/modules"}


def test_the_daemonset_reads_the_node_through_read_only_mounts():
    yaml = pytest.importorskip("yaml")
    documents = list(yaml.safe_load_all((KUBERNETES / "daemonset.yaml").read_text()))
    (daemonset,) = [d for d in documents if d["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert set(host_paths.values()) == READ
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for name, path in host_paths.items():
        assert mounts[name]["readOnly"] is True and mounts[name]["mountPath"] == "/host" + path
    script = " ".join(container["args"])
    assert "python3 /aidoctor.pyz --root /host" in script and "--format json" in script
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}
    assert "privileged" not in container["securityContext"]
    dockerfile = (KUBERNETES / "Dockerfile").read_text()
    assert "COPY dist/aidoctor.pyz /aidoctor.pyz" in dockerfile
