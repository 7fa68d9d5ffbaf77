"""CUDA from pip wheels (nvidia-cuda-runtime-cu12 and friends) judged against the driver like a
toolkit in /usr/local: the release read from the wheel's metadata, the places bounded."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_gpu import OLD, _gpu_host, _kernel, _nvidia, _userspace

from ai_doctor.facts import Facts
from ai_doctor.host import Host
from ai_doctor.model import Request

SYSTEM_PIP = "/usr/local/lib/python3.10/dist-packages"  # Ubuntu's pip, as root
METADATA = "Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: CUDA Runtime native Libraries\n\nCUDA runtime\n"


def _driver(tree, driver):
    _gpu_host(tree, loaded=driver)
    _userspace(tree, version=driver)
    _kernel(tree, OLD, [_nvidia(tree, OLD, version=driver)])


def _wheel(tree, site, version, package=None):
    """The files pip installs from nvidia-cuda-runtime-cuNN (nvidia-cuda-runtime from 13.0)."""
    major = version.split(".")[0]
    package = package or ("nvidia-cuda-runtime" if int(major) >= 13 else "nvidia-cuda-runtime-cu" + major)
    dist = "%s/%s-%s.dist-info" % (site, package.replace("-", "_"), version)
    tree.write(dist + "/METADATA", METADATA % (package, version))
    tree.write(dist + "/top_level.txt", "nvidia\n")
    lib = "nvidia/cu13/lib" if int(major) >= 13 else "nvidia/cuda_runtime/lib"
    tree.write("%s/%s/libcudart.so.%s" % (site, lib, major if major != "11" else "11.0"), b"\x7fELF")
    return dist


def _torch(tree, site, version, cuda):
    tree.write("%s/torch-%s.dist-info/METADATA" % (site, version), "Metadata-Version: 2.1\nName: torch\nVersion: %s\n" % version)
    tree.write(
        site + "/torch/version.py",
        "from typing import Optional\n\n__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip']\n"
        "__version__ = '%s'\ndebug = False\ncuda: Optional[str] = %r\ngit_version = 'x'\nhip: Optional[str] = None\n" % (version, cuda),
    )


def _finding(result, rule="gpu.driver-too-old-for-cuda"):
    found = [f for f in result.json["findings"] if f["rule"] == rule]
    assert len(found) <= 1, found
    return found[0] if found else None


def _check(result, rule="gpu.driver-too-old-for-cuda"):
    return next(c for c in result.json["checks"] if c["rule"] == rule)


@pytest.mark.parametrize(
    "site, version, driver, severity",
    [
        (SYSTEM_PIP, "12.4.127", "535.183.01", "low"),  # minor-version compatibility
        (SYSTEM_PIP, "12.4.127", "470.256.02", "critical"),  # below 12.x's floor
        (SYSTEM_PIP, "12.4.127", "550.127.05", None),
        ("/usr/lib/python3.12/site-packages", "13.0.96", "570.172.08", "critical"),  # 13.x: nvidia-cuda-runtime
        ("/usr/lib/python3.12/site-packages", "13.0.96", "580.95.05", None),
        ("/usr/lib64/python3.9/site-packages", "11.8.89", "470.256.02", "low"),
        ("/opt/conda/lib/python3.11/site-packages", "12.1.105", "525.60.13", "low"),
    ],
)
def test_a_runtime_wheel_against_the_driver(tree, run, site, version, driver, severity):
    _driver(tree, driver)
    dist = _wheel(tree, site, version)
    result = run("--root", tree, "--format", "json")
    found = _finding(result)
    assert (found and found["severity"]) == severity
    if found:
        assert dist in found["message"] and "CUDA %s (pip's nvidia-cuda-runtime" % version in found["message"]
        assert {"path": dist + "/METADATA", "value": version} in found["evidence"]
    else:
        check = _check(result)
        assert check["status"] == "pass" and "runs CUDA %s (pip's nvidia-cuda-runtime" % version in check["reason"]
        assert "%s/METADATA)" % dist in check["reason"]


def test_below_the_floor_the_step_names_what_the_driver_runs(tree, run):
    _driver(tree, "470.256.02")
    _wheel(tree, SYSTEM_PIP, "12.4.127")
    found = _finding(run("--root", tree, "--format", "json"))
    assert "at least 525.60.13" in found["message"] and "insufficient for CUDA runtime version" in found["message"]
    assert "CUDA 11.4 or older" in found["remediation"][0]["summary"] and "550.54.14" in found["remediation"][0]["summary"]


def test_the_metadata_says_the_release_not_the_folder_name(tree, run):
    _driver(tree, "535.183.01")
    dist = SYSTEM_PIP + "/nvidia_cuda_runtime_cu12-12.4.127.dist-info"
    tree.write(dist + "/METADATA", METADATA % ("nvidia-cuda-runtime-cu12", "12.6.77"))
    found = _finding(run("--root", tree, "--format", "json"))
    assert "CUDA 12.6.77" in found["message"] and "560.28.03" in found["message"]


def test_a_dist_info_without_metadata_is_read_from_its_name(tree, run):
    _driver(tree, "535.183.01")
    dist = SYSTEM_PIP + "/nvidia_cuda_runtime_cu12-12.4.127.dist-info"
    tree.write(dist + "/RECORD", "")
    found = _finding(run("--root", tree, "--format", "json"))
    assert found["severity"] == "low" and {"path": dist, "value": "12.4.127"} in found["evidence"]


def test_the_cu13_placeholder_and_cpu_torch_are_no_cuda(tree, run):
    _driver(tree, "535.183.01")
    # nvidia-cuda-runtime-cu13 0.0.1 only tells to install nvidia-cuda-runtime; a CPU PyTorch says cuda None.
    tree.write(SYSTEM_PIP + "/nvidia_cuda_runtime_cu13-0.0.1.dist-info/METADATA", METADATA % ("nvidia-cuda-runtime-cu13", "0.0.1"))
    _torch(tree, "/usr/local/lib/python3.10/site-packages", "2.5.1+cpu", None)
    check = _check(run("--root", tree, "--format", "json"))
    assert check["status"] == "pass" and check["reason"].startswith("no CUDA toolkit under /usr/local, and no CUDA runtime from pip")
    assert SYSTEM_PIP in check["reason"]


def test_torch_with_its_cuda_inside_and_beside_a_runtime_wheel(tree, run):
    _driver(tree, "470.256.02")
    site = "/usr/local/lib/python3.10/site-packages"
    _torch(tree, site, "2.0.1+cu118", "11.8")
    found = _finding(run("--root", tree, "--format", "json"))
    assert found["severity"] == "low" and "PyTorch 2.0.1+cu118 with its CUDA inside, %s/torch/version.py" % site in found["message"]
    # Beside the runtime wheel, the wheel's release is the one loaded; torch/version.py is not read.
    _wheel(tree, site, "12.4.127")
    found = _finding(run("--root", tree, "--format", "json"))
    assert found["severity"] == "critical" and "CUDA 12.4.127" in found["message"] and "PyTorch" not in found["message"]


def test_one_release_in_two_environments_is_one_finding_naming_both(tree, run):
    _driver(tree, "535.183.01")
    first = _wheel(tree, SYSTEM_PIP, "12.4.127")
    second = _wheel(tree, "/opt/venv/lib/python3.10/site-packages", "12.4.127")
    found = _finding(run("--root", tree, "--format", "json"))
    assert first in found["message"] and second in found["message"]
    assert [e["path"] for e in found["evidence"]][:2] == [first + "/METADATA", second + "/METADATA"]


def test_a_folder_reached_again_through_a_link_is_listed_once(tree):
    tree.write("/usr/lib/python3.9/site-packages/x.py")
    _wheel(tree, "/usr/lib/python3.9/site-packages", "12.4.127")
    tree.link("/usr/lib64", "lib")
    facts = Facts(Host(str(tree)))
    assert [s.path for s in facts.get("site_packages")] == ["/usr/lib/python3.9/site-packages"]
    assert len(facts.get("cuda_toolkits")) == 1


def test_the_environment_the_request_names(tree):
    venv = "/srv/llm/.venv"
    _wheel(tree, venv + "/lib/python3.11/site-packages", "12.8.90")
    _wheel(tree, "/home/ml/.local/lib/python3.11/site-packages", "12.6.77")
    assert Facts(Host(str(tree))).get("cuda_toolkits") == ()
    for env, version in (({"VIRTUAL_ENV": venv}, "12.8.90"), ({"CONDA_PREFIX": venv + "/"}, "12.8.90"), ({"HOME": "/home/ml"}, "12.6.77")):
        kits = Facts(Host(str(tree)), Request(env=env)).get("cuda_toolkits")
        assert [(k.kind, k.version) for k in kits] == [("wheel", version)]


def test_looking_is_bounded(tree):
    # Listings only of fixed folders and the package folders in them, never below; one file read a wheel.
    _wheel(tree, SYSTEM_PIP, "12.4.127")
    for n in range(200):
        tree.write("%s/pkg%d/__init__.py" % (SYSTEM_PIP, n))
        tree.write("%s/pkg%d-1.0.dist-info/METADATA" % (SYSTEM_PIP, n), "Name: pkg\n")
    host = Host(str(tree))
    Facts(host).get("cuda_toolkits")
    listed = [path for kind, path, _got in host.log if kind == "dir"]
    read = [path for kind, path, _got in host.log if kind == "file"]
    assert all(path.count("/") <= 5 for path in listed) and len(listed) <= 16, listed
    assert read == [SYSTEM_PIP + "/nvidia_cuda_runtime_cu12-12.4.127.dist-info/METADATA"]


# -- a /usr/local/cuda assembled from wheels -------------------------------------------------------


def test_usr_local_cuda_linked_to_a_wheel(tree, run):
    _driver(tree, "535.183.01")
    dist = _wheel(tree, SYSTEM_PIP, "12.4.127")
    tree.link("/usr/local/cuda", SYSTEM_PIP + "/nvidia/cuda_runtime")
    result = run("--root", tree, "--format", "json")
    found = _finding(result)
    assert found["severity"] == "low"
    assert "CUDA 12.4.127 (/usr/local/cuda, from pip's nvidia-cuda-runtime-cu12, %s/METADATA)" % dist in found["message"]


def test_usr_local_cuda_whose_libcudart_leads_into_a_venv(tree, run):
    _driver(tree, "535.183.01")
    site = "/srv/llm/.venv/lib/python3.11/site-packages"  # not a place looked at by itself
    dist = _wheel(tree, site, "13.0.96")
    _wheel(tree, site, "12.4.127")  # both families in one environment: the link says which
    tree.write("/usr/local/cuda/include/cuda.h", "")
    tree.link("/usr/local/cuda/lib64/libcudart.so.13", site + "/nvidia/cu13/lib/libcudart.so.13")
    tree.link("/usr/local/cuda/lib64/libcudart.so", "libcudart.so.13")
    found = _finding(run("--root", tree, "--format", "json"))
    assert found["severity"] == "critical" and "CUDA 13.0.96 (/usr/local/cuda, from pip's nvidia-cuda-runtime" in found["message"]
    assert dist + "/METADATA" in found["message"]


def test_usr_local_cuda_built_from_wheels_keeps_their_dist_info(tree, run):
    # As an image build leaves it: the wheels' lib and include moved up, their metadata kept in
    # dist-info/, libcudart.so.13 a plain file; no version.json.
    _driver(tree, "575.57.08")
    kit = "/usr/local/cuda-13.0"
    dist = kit + "/dist-info/nvidia_cuda_runtime-13.0.96.dist-info"
    tree.write(dist + "/METADATA", METADATA % ("nvidia-cuda-runtime", "13.0.96"))
    tree.write(kit + "/dist-info/nvidia_cuda_nvcc-13.0.88.dist-info/METADATA", METADATA % ("nvidia-cuda-nvcc", "13.0.88"))
    tree.write(kit + "/lib/libcudart.so.13", b"\x7fELF")
    tree.link(kit + "/lib64", "lib")
    tree.link("/usr/local/cuda", kit)
    found = _finding(run("--root", tree, "--format", "json"))
    assert found["severity"] == "critical" and "at least 580.65.06" in found["message"]
    assert "CUDA 13.0.96 (/usr/local/cuda-13.0, from pip's nvidia-cuda-runtime, %s/METADATA)" % dist in found["message"]
    # pip install --target: the dist-info right in the folder.
    target = "/usr/local/cuda-12.8"
    tree.write(target + "/nvidia_cuda_runtime_cu12-12.8.90.dist-info/METADATA", METADATA % ("nvidia-cuda-runtime-cu12", "12.8.90"))
    tree.write(target + "/nvidia/cuda_runtime/lib/libcudart.so.12", b"\x7fELF")
    kits = Facts(Host(str(tree))).get("cuda_toolkits")
    assert [(k.via, k.version, k.source) for k in kits] == [
        (target, "12.8.90", target + "/nvidia_cuda_runtime_cu12-12.8.90.dist-info/METADATA"),
        (kit, "13.0.96", dist + "/METADATA"),
    ]


def test_the_libcudart_name_says_which_family_in_a_shared_folder(tree):
    site = "/srv/venv/lib/python3.11/site-packages"
    _wheel(tree, site, "11.8.89")
    _wheel(tree, site, "12.4.127")  # both own nvidia/cuda_runtime/lib
    tree.link("/usr/local/cuda/lib64/libcudart.so.11.0", site + "/nvidia/cuda_runtime/lib/libcudart.so.11.0")
    kits = Facts(Host(str(tree))).get("cuda_toolkits")
    assert [(k.path, k.version, k.via) for k in kits] == [(site, "11.8.89", "/usr/local/cuda")]


@pytest.mark.parametrize("driver, status", [("470.256.02", "finding"), ("535.183.01", "pass")])
def test_usr_local_cuda_with_a_copied_libcudart_says_its_family(tree, run, driver, status):
    _driver(tree, driver)
    tree.write("/usr/local/cuda/lib64/libcudart.so.12", b"\x7fELF")
    result = run("--root", tree, "--format", "json")
    check = _check(result)
    assert check["status"] == status
    if status == "finding":
        found = _finding(result)
        assert found["severity"] == "critical" and "at least 525.60.13" in found["message"]
        assert "/usr/local/cuda/lib64/libcudart.so.12" in found["message"]
    else:
        assert check["reason"] == (
            "driver 535.183.01 runs CUDA 12.x (/usr/local/cuda, /usr/local/cuda/lib64/libcudart.so.12, "
            "whose name says the major release only)"
        )


def test_usr_local_cuda_with_a_versioned_libcudart(tree, run):
    _driver(tree, "535.183.01")
    tree.write("/usr/local/cuda-12.4/targets/x86_64-linux/lib/libcudart.so.12.4.127", b"\x7fELF")
    tree.link("/usr/local/cuda-12.4/targets/x86_64-linux/lib/libcudart.so.12", "libcudart.so.12.4.127")
    tree.link("/usr/local/cuda-12.4/lib64", "targets/x86_64-linux/lib")
    found = _finding(run("--root", tree, "--format", "json"))
    assert found["severity"] == "low" and "/usr/local/cuda-12.4/lib64/libcudart.so.12.4.127" in found["message"]


def test_a_toolkit_nothing_dates_is_never_no_toolkit(tree, run):
    _driver(tree, "535.183.01")
    tree.write("/usr/local/cuda-12.4/bin/nvcc", "")
    tree.link("/usr/local/cuda", "cuda-12.4")
    tree.link("/usr/local/cuda-11.8", "/opt/removed")  # a link left behind: nothing there
    check = _check(run("--root", tree, "--format", "json"))
    assert check["status"] == "skip" and "no CUDA toolkit" not in check["reason"]
    assert check["reason"] == "driver 535.183.01; CUDA in /usr/local/cuda-12.4 (no version.json, version.txt or versioned libcudart)"


def test_wheels_replay_from_a_snapshot(tree, run, tmp_path):
    _driver(tree, "535.183.01")
    _wheel(tree, SYSTEM_PIP, "12.4.127")
    _torch(tree, SYSTEM_PIP, "2.5.1", "12.4")
    tree.link("/usr/local/cuda", SYSTEM_PIP + "/nvidia/cuda_runtime")
    tree.link("/usr/lib64", "lib")
    _wheel(tree, "/usr/lib/python3.12/site-packages", "13.0.96")
    destination = tmp_path / "snap"
    assert run("snapshot", "--root", tree, "--dir", "-o", destination).code == 0
    original = run("--root", tree, "--format", "json")
    replayed = run("--root", destination, "--format", "json")
    assert replayed.json["findings"] == original.json["findings"] and replayed.statuses() == original.statuses()
    assert _check(replayed)["reason"] == _check(original)["reason"]
    found = [f for f in run("--root", destination, "--format", "json").json["findings"] if f["rule"] == "gpu.driver-too-old-for-cuda"]
    assert [(f["severity"], f["message"].split(" (")[0]) for f in found] == [("critical", "CUDA 13.0.96"), ("low", "CUDA 12.4.127")]


def test_a_toolkit_is_named_by_its_folder_not_the_link_to_it(tree):
    tree.write("/usr/local/cuda-12.4/version.json", '{"cuda": {"name": "CUDA SDK", "version": "12.4.1"}}')
    tree.link("/usr/local/cuda", "cuda-12.4")
    kits = Facts(Host(str(tree))).get("cuda_toolkits")
    assert [(k.path, k.version, k.source) for k in kits] == [("/usr/local/cuda-12.4", "12.4.1", "/usr/local/cuda-12.4/version.json")]


def test_a_python_folder_is_python3_or_python3_and_a_one_or_two_digit_minor():
    from ai_doctor.facts.cuda import _python_dir

    names = ("python3", "python3.9", "python3.12", "python3.", "python3.123", "python3.x", "python2.7", "python3.1\n", "Python3.9")
    assert [name for name in names if _python_dir(name)] == ["python3", "python3.9", "python3.12"]


# Pieces of dist-info names, with the letters that match i, s and k ignoring case.
NAME_PARTS = ["nvidia", "NVIDIA", "_", "-", ".", "cuda", "CUDA", "runtime", "torch", "TORCH", "cu12", "12.4", "dist-info"]
NAME_PARTS += ["DıſT-INFO", "İ", "ſ", "K"]


@settings(max_examples=400, deadline=None)
@example(["NVIDIA", "_", "cuda", "_", "runtime", "_", "cu12", "-", "12.4", ".", "DıſT-INFO"])
@example(["TORCH", "-", "12.4", ".", "dist-info"])
@given(st.lists(st.sampled_from(NAME_PARTS), max_size=9))
def test_the_dist_names_are_tried_as_their_expressions_match(parts):
    import re

    from ai_doctor.facts.cuda import _RUNTIME_DIST, _TORCH_DIST, _runtime_dist, _torch_dist

    name = "".join(parts)
    for ours, expression in ((_runtime_dist, _RUNTIME_DIST), (_torch_dist, _TORCH_DIST)):
        match = re.match(expression, name)
        found = ours(name)
        assert (found and found.groups()) == (match and match.groups())
