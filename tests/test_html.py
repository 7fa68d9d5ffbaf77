"""The HTML report: escaped, self-contained, and checked in a real headless Chromium.

The browser test drives Debian's chromium through chromedriver's WebDriver HTTP interface with
the standard library alone: it loads the file from a file:// URL, reads the browser's console
log (no errors) and its network log (no request but the file itself), and saves a screenshot
(set AIDOCTOR_SCREENSHOTS=DIR to keep it). It skips where chromium or chromedriver is absent.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import fixture_root, minimal_host

GUIDE = fixture_root("guide-followed-literally")
HOSTILE = "<script>alert(1)</script>"


def _hostile(tree):
    minimal_host(tree, overcommit="1")
    tree.write("/proc/sys/kernel/hostname", HOSTILE + "\n")
    tree.write("/proc/sys/vm/overcommit_ratio", "95\n")
    tree.write("/etc/sysctl.d/50-<img src=x onerror=alert(2)>.conf", "vm.overcommit_ratio = 95\n")
    return tree


def test_html_is_self_contained_and_escaped(run, tree, tmp_path):
    target = tmp_path / "report.html"
    assert run("--root", _hostile(tree), "--html", str(target)).code == 0
    page = target.read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    # Nothing that would reach for another address: no external script, style, image or font.
    # (<wbr> and spans only say where host text may wrap: "src=<wbr>x" is the file name's.)
    text = re.sub(r"<wbr>|</?span[^>]*>", "", page).replace("&lt;img src=x", "")
    for needle in ("src=", "href=", "@import", "url("):
        assert needle not in text, needle


def test_html_as_the_main_format_and_beside_the_terminal_report(run, tmp_path):
    page = run("--root", GUIDE, "--model-size", "140G", "--format", "html").out
    assert page.startswith("<!DOCTYPE html>") and "hugepages.unused" in page
    assert page.index("hugepages.unused") < page.index("cpu.governor") < page.index("overcommit.ratio-ignored")
    # The command as text: <wbr> and spans only say where it may wrap.
    assert "sudo sysctl -w vm.nr_hugepages=0" in re.sub(r"<wbr>|</?span[^>]*>", "", page)
    assert "aidoctor --root" in page  # the command line that produced it


# -- in a real browser ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Driver:
    """Just enough of the WebDriver protocol, over HTTP, for one page."""

    def __init__(self, chromedriver: str, chromium: str):
        self.port = _free_port()
        self.process = subprocess.Popen([chromedriver, "--port=%d" % self.port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = "http://127.0.0.1:%d" % self.port
        for _ in range(100):
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        options = {"binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"]}
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]

    def _call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read().decode())["value"]

    def do(self, method: str, path: str, body=None):
        return self._call(method, "/session/%s%s" % (self.session, path), body)

    def close(self):
        try:
            self._call("DELETE", "/session/" + self.session)
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("no chromium and chromedriver here (Debian: apt install chromium chromium-driver)")
    driver = _Driver(chromedriver, chromium)
    yield driver
    driver.close()


def test_html_in_headless_chromium(run, tree, tmp_path, browser):
    target = tmp_path / "report.html"
    run("--root", _hostile(tree), "--model-size", "140G", "--html", str(target))
    url = target.resolve().as_uri()
    browser.do("POST", "/url", {"url": url})
    title = browser.do("POST", "/execute/sync", {"script": "return document.querySelector('h1').textContent", "args": []})
    assert title == "aidoctor report: " + HOSTILE  # shown as text, never run
    buttons = browser.do("POST", "/execute/sync", {"script": "return document.querySelectorAll('button.copy').length", "args": []})
    assert buttons == browser.do("POST", "/execute/sync", {"script": "return document.querySelectorAll('.command').length", "args": []})
    assert buttons > 0  # the script ran
    # What the Copy button copies (textContent) is what a selection copies (innerText): the
    # <wbr> and spans that say where a command may wrap add no text and no line.
    script = "return Array.from(document.querySelectorAll('.command code'), function (c) { return [c.textContent, c.innerText]; })"
    copied = browser.do("POST", "/execute/sync", {"script": script, "args": []})
    assert copied and all(content == shown for content, shown in copied)
    # Long commands wrap: no code block scrolls sideways, and each button sits in its block's corner.
    script = "return Array.from(document.querySelectorAll('pre')).filter(function (p) { return p.scrollWidth > p.clientWidth; }).length"
    assert browser.do("POST", "/execute/sync", {"script": script, "args": []}) == 0
    script = (
        "var b = document.querySelector('button.copy').getBoundingClientRect();"
        "var p = document.querySelector('.command pre').getBoundingClientRect();"
        "return [b.top - p.top, p.right - b.right];"
    )
    top, right = browser.do("POST", "/execute/sync", {"script": script, "args": []})
    assert 0 < top < 20 and 0 < right < 20
    console = browser.do("POST", "/se/log", {"type": "browser"})
    assert [entry for entry in console if entry["level"] == "SEVERE"] == []
    requests = []
    for entry in browser.do("POST", "/se/log", {"type": "performance"}):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    assert requests and all(address == url for address in requests), requests
    shot = base64.b64decode(browser.do("GET", "/screenshot"))
    assert shot.startswith(b"\x89PNG")
    keep = os.environ.get("AIDOCTOR_SCREENSHOTS")
    (tmp_path / "report.png").write_bytes(shot)
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(tmp_path / "report.png", os.path.join(keep, "report.png"))
