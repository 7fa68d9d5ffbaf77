"""contrib/ansible/aidoctor.yml run for real by ansible-playbook: two inventory hosts on local
connections, one this host and one a host tree (aidoctor_root), merged into one fleet page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, fixture_root

GUIDE = fixture_root("guide-followed-literally")


def playbook(pyz: Path, work: Path, fail_on: str):
    program = Path(sys.executable).with_name("ansible-playbook")
    if not program.exists():
        program = shutil.which("ansible-playbook")
    if not program:
        pytest.skip("ansible-core is not installed (the test extra holds it)")
    inventory = work / "inventory.ini"
    local = "ansible_connection=local ansible_python_interpreter=%s" % sys.executable
    inventory.write_text("[fleet]\nthis-host %s\nimage-tree %s aidoctor_root=%s\n" % (local, local, GUIDE))
    variables = {
        "aidoctor_pyz": str(pyz),
        "aidoctor_reports": str(work / "reports"),
        "aidoctor_model_size": "140G",
        "aidoctor_python": sys.executable,
        "aidoctor_fail_on": fail_on,
        # Root already, or a user without sudo: the local connection runs as this user.
        "aidoctor_become": False,
        "aidoctor_tmpdir": str(work / "hosts-tmp"),
    }
    (work / "hosts-tmp").mkdir()
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(work / "tmp"), ANSIBLE_REMOTE_TEMP=str(work / "tmp"))
    env.pop("AIDOCTOR_CLI", None)
    command = [str(program), "-i", str(inventory), str(REPO / "contrib" / "ansible" / "aidoctor.yml"), "-e", json.dumps(variables)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_the_playbook_gathers_every_hosts_report_into_one_fleet_page(built_pyz, tmp_path, run):
    done = playbook(built_pyz, tmp_path, "never")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    reports = tmp_path / "reports"
    live, tree = (json.loads((reports / name).read_text()) for name in ("this-host.json", "image-tree.json"))
    assert live["host"]["source"] == "live system" and tree["host"]["root"] == GUIDE
    expected = run("--root", GUIDE, "--model-size", "140G", "--format", "json", "--fail-on", "never").json
    assert [f["rule"] for f in tree["findings"]] == [f["rule"] for f in expected["findings"]]
    page = (reports / "fleet.html").read_text()
    assert tree["host"]["hostname"] in page and live["host"]["hostname"] in page
    # The pyz, its unpacked code and the report went with the folder the play made on each host.
    assert list((tmp_path / "hosts-tmp").iterdir()) == []


def test_the_play_fails_with_the_fleet_when_a_host_reaches_fail_on(built_pyz, tmp_path):
    done = playbook(built_pyz, tmp_path, "info")
    assert done.returncode == 2 and "aidoctor merge exit 1: a host has a finding at or above info" in done.stdout
    assert (tmp_path / "reports" / "fleet.html").is_file()
