"""Every fix of every fixture, proven: applied to a copy with `aidoctor fix --apply`, booted in
simulation, checked again (tests/proof.py)."""

from __future__ import annotations

import json

import pytest
from proof import findings, prove, ways

from conftest import FIXTURES

CASES = sorted(path.parent.name for path in FIXTURES.glob("*/expect.json"))

# Findings no configuration change fixes: a model larger than the host, hardware, a kernel
# without a feature, a driver to build with a program, a limit owned by the container's host
# (or its runtime's flags), a package to install, a key confirmed at the console, a model to move.
NO_CONFIGURATION_FIX = {
    ("vps-no-hugetlb", "overcommit.heuristic-oversize"),
    ("vps-no-hugetlb", "memory.headroom"),
    ("dev-vm-capture", "memory.headroom"),
    ("dev-vm-capture", "overcommit.heuristic-oversize"),
    ("dev-vm-capture", "cpu.fixed-frequency"),
    ("dev-vm-capture", "persist.sysctl-not-applied"),
    ("vm-fixed-frequency", "cpu.fixed-frequency"),
    ("vm-fixed-frequency", "kernel.config-missing"),
    ("container-cgroup-64g", "memory.headroom"),
    ("container-cgroup-64g", "access.readonly-sysctl"),
    ("permission-denied", "access.permission-denied"),
    ("gpu-dkms-failed-upgrade", "gpu.driver-missing-for-kernel"),
    ("image-gpu-no-driver", "gpu.driver-missing-for-kernel"),
    ("unused-static-pool", "memory.headroom"),
    ("strict-overcommit", "memory.headroom"),
    ("permission-denied", "kernel.config-missing"),
    ("gpu-driver-library-mismatch", "gpu.driver-too-old-for-cuda"),
    ("vps-no-hugetlb", "cpu.fixed-frequency"),
    ("debian-gpu-library-mismatch", "gpu.driver-library-mismatch"),
    ("debian-gpu-backports-no-apt-lists", "gpu.driver-missing-for-kernel"),
    ("gpu-container", "access.readonly-sysctl"),
    ("gpu-container-image-driver", "access.readonly-sysctl"),
    ("gpu-container-image-driver", "gpu.driver-library-mismatch"),
    ("limits-pids-container-events", "limits.pids"),
    ("limits-pids-container-events", "access.readonly-sysctl"),
    ("limits-memlock-mlock-info", "limits.memlock"),
    ("secureboot-unsigned-dkms", "gpu.secure-boot-signature"),
    ("secureboot-mok-pending", "gpu.secure-boot-signature"),
    ("gpuplat-hgx-fm-stopped", "gpu.fabric-manager"),
    ("gpuplat-hgx-fm-mismatch", "gpu.fabric-manager"),
    ("gpuplat-blackwell-proprietary", "gpu.module-flavour"),
    ("gpuplat-volta-open", "gpu.module-flavour"),
    ("gpuplat-acs-redirect-root", "pci.iommu-p2p"),
    ("gpuplat-link-narrowed", "pci.link-narrowed"),
    ("gpu-container", "memory.shm-size"),
    ("gpu-container-image-driver", "memory.shm-size"),
    ("shm-docker-64m-8gpu", "memory.shm-size"),
    ("shm-docker-512m-4gpu", "memory.shm-size"),
    ("shm-docker-64m-1gpu", "memory.shm-size"),
    ("shm-docker-64m-8gpu", "access.readonly-sysctl"),
    ("shm-docker-512m-4gpu", "access.readonly-sysctl"),
    ("shm-docker-64m-1gpu", "access.readonly-sysctl"),
    ("modelfs-nfs-ollama", "storage.model-network"),
    ("modelfs-virtiofs", "storage.model-network"),
    ("gpudev-docker-no-toolkit", "gpu.container-runtime"),
    ("gpudev-cdi-stale-uvm-major", "gpu.container-runtime"),
    ("gpudev-cdi-older-than-driver", "gpu.container-runtime"),
    ("gpudev-amd-kfd-denied", "gpu.device-nodes"),
    ("gpudev-uvm-not-loaded", "gpu.device-nodes"),
    ("gpudev-uvm-node-missing", "gpu.device-nodes"),
    ("cuda-wheels-old-driver", "gpu.driver-too-old-for-cuda"),
    ("gpudev-container-no-uvm", "gpu.device-nodes"),
    ("gpudev-container-no-uvm", "memory.headroom"),
    ("gpudev-container-no-uvm", "access.readonly-sysctl"),
    ("gpudev-container-no-uvm", "memory.shm-size"),
}


def _cases():
    for name in CASES:
        expect = json.loads((FIXTURES / name / "expect.json").read_text())
        for rule in sorted(expect["findings"]):
            yield name, rule


@pytest.mark.parametrize("name, rule", list(_cases()))
def test_every_way_of_fixing_a_fixture_finding_clears_it_at_the_next_boot(capsys, tmp_path, name, rule):
    expect = json.loads((FIXTURES / name / "expect.json").read_text())
    root = FIXTURES / name / "root"
    report = findings(capsys, root, expect["args"])
    numbers = [number for found, number in ways(report) if found == rule]
    proven, advice = [], []
    for number in numbers:
        problems = prove(capsys, tmp_path, root, expect["args"], rule, number)
        if problems is None:
            advice.append(number)
            continue
        assert not problems, (rule, number, problems)
        proven.append(number)
    if (name, rule) in NO_CONFIGURATION_FIX:
        assert not proven, "%s has a configuration fix now: take it off the list" % rule
    else:
        assert proven, "no way of fixing %s changes the configuration" % rule
