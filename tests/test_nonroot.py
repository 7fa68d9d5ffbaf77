"""A real unprivileged user meets a file it may not read: permission denied, for real.

Tests usually run as root, who reads everything; this one copies the package where an
unprivileged user can import it and runs aidoctor as that user with ``runuser``. It skips
where that is impossible (not root, no runuser, no such user, no interpreter they may run).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import REPO, Tree, minimal_host

USER = "nobody"


def _interpreter_for(user: str):
    for candidate in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if not candidate:
            continue
        probe = subprocess.run([shutil.which("runuser"), "-u", user, "--", candidate, "-c", "import json"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return candidate
    return None


@pytest.fixture
def unprivileged():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    if not shutil.which("runuser"):
        pytest.skip("no runuser")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.skip("no user %r" % USER)
    python = _interpreter_for(USER)
    if python is None:
        pytest.skip("no Python interpreter that %r may run" % USER)
    work = tempfile.mkdtemp(prefix="aidoctor-nonroot-")
    os.chmod(work, 0o755)
    package = os.path.join(work, "lib", "ai_doctor")
    shutil.copytree(REPO / "doctor", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "rules", os.path.join(package, "rules"), ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "reports", os.path.join(package, "reports"), ignore=shutil.ignore_patterns("__pycache__"))
    for folder, _dirs, files in os.walk(os.path.join(work, "lib")):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    yield python, work
    shutil.rmtree(work, ignore_errors=True)


def test_unreadable_file_is_reported_for_a_real_user(unprivileged):
    python, work = unprivileged
    tree = Tree(__import__("pathlib").Path(work) / "host")
    minimal_host(tree)
    secret = tree.write("/etc/sysctl.d/10-secret.conf", "vm.nr_hugepages = 64\n", mode=0o600)
    tree.write("/boot/config-6.1.0-18-amd64", "CONFIG_HUGETLBFS=y\n", mode=0o600)
    for folder, _dirs, _files in os.walk(tree.root):
        os.chmod(folder, 0o755)
    assert secret.stat().st_mode & 0o777 == 0o600
    done = subprocess.run(
        [
            shutil.which("runuser"),
            "-u",
            USER,
            "--",
            python,
            "-m",
            "ai_doctor",
            "--root",
            str(tree.root),
            "--model-size",
            "1G",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": os.path.join(work, "lib"), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    findings = {f["rule"]: f for f in report["findings"]}
    denied = findings["access.permission-denied"]
    assert {"path": "/etc/sysctl.d/10-secret.conf", "value": "permission denied"} in denied["evidence"]
    assert {"path": "/boot/config-6.1.0-18-amd64", "value": "permission denied"} in denied["evidence"]
    assert findings["kernel.config-missing"]["severity"] == "low"
    assert "is readable only by root here" in findings["kernel.config-missing"]["message"]
    assert findings["kernel.config-missing"]["title"] == "Kernel configuration unreadable"
    # The rerun names this very interpreter: sudo's secure_path would not find a venv's aidoctor.
    rerun = denied["remediation"][0]["commands"][0]
    assert rerun.startswith("sudo %s -m ai_doctor --root " % python), rerun


def test_fix_apply_as_a_user_is_refused_with_the_command_to_run_as_root(unprivileged):
    python, work = unprivileged
    done = subprocess.run(
        [shutil.which("runuser"), "-u", USER, "--", python, "-m", "ai_doctor", "fix", "--apply", "--yes"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": os.path.join(work, "lib"), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "aidoctor: error: fix --apply changes this host and needs root: sudo %s -m ai_doctor fix --apply --yes\n" % python


def _as_user(python, work, *args):
    return subprocess.run(
        [shutil.which("runuser"), "-u", USER, "--", python, "-m", "ai_doctor"] + list(args),
        capture_output=True,
        text=True,
        env={"PYTHONPATH": os.path.join(work, "lib"), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=60,
    )


@pytest.mark.parametrize("mode", [0o444, 0o000, 0o111])
def test_a_folder_listed_but_not_searchable_replays_as_it_ran(unprivileged, mode):
    """Mode 0444 lets a user list the CPUs but not look inside them: the snapshot keeps the names
    and the refusal, so the replay skips the governor checks as the direct run did."""
    python, work = unprivileged
    tree = Tree(__import__("pathlib").Path(work) / "host")
    minimal_host(tree)
    for cpu in ("cpu0", "cpu1"):
        tree.write("/sys/devices/system/cpu/%s/cpufreq/scaling_governor" % cpu, "powersave\n")
        tree.write("/sys/devices/system/cpu/%s/cpufreq/scaling_driver" % cpu, "intel_pstate\n")
    for folder, _dirs, _files in os.walk(tree.root):
        os.chmod(folder, 0o755)
    os.chmod(str(tree.root / "sys/devices/system/cpu"), mode)
    writable = os.path.join(work, "out")
    os.mkdir(writable)
    os.chown(writable, pwd.getpwnam(USER).pw_uid, -1)
    snap = os.path.join(writable, "snap")
    try:
        direct = _as_user(python, work, "--root", str(tree.root), "--model-size", "1G", "--format", "json")
        taken = _as_user(python, work, "snapshot", "--root", str(tree.root), "--dir", "-o", snap)
        replayed = _as_user(python, work, "--root", snap, "--model-size", "1G", "--format", "json")
    finally:
        os.chmod(str(tree.root / "sys/devices/system/cpu"), 0o755)
    assert taken.returncode == 0, taken.stderr
    shape = [
        ({f["rule"]: f["severity"] for f in report["findings"]}, {c["rule"]: c["status"] for c in report["checks"]})
        for report in (json.loads(direct.stdout), json.loads(replayed.stdout))
    ]
    assert shape[0] == shape[1]
    assert shape[0][1]["cpu.governor"] == "skip"
