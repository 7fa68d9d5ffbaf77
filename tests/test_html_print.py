"""The HTML report on paper and in narrow windows: a finding keeps to one page, commands wrap
only at spaces and after ``/``, ``=`` and ``,`` and still copy exactly, an empty Line column is
left out, and seven findings print on about three pages.

Built on a canned report (no checkup runs); the page count prints it with Debian's headless
``chromium`` and skips where there is none.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_doctor.model import CheckResult, Evidence, Finding, HostSummary, Report, Request, Severity, Status, Step
from ai_doctor.remedy.actions import Action
from ai_doctor.reports import html as html_report
from ai_doctor.reports.words import visible

HOSTILE = "<script>alert(1)</script>"
LONG = (
    "sudo chroot /srv/images/rhel9/root sed -i --follow-symlinks -E '/^[ \\t]*(export[ \\t]+)?GRUB_CMDLINE_LINUX(_DEFAULT)?=/ "
    "{ s/[ \\t]+(transparent_hugepage)=[^\"' \\t}]*//g; }' /etc/default/grub"
)
HEREDOC = "sudo tee /etc/sysctl.d/90-aidoctor.conf >/dev/null <<'EOF'\nvm.overcommit_memory = 0\nEOF"


class Literal(Action):
    """An action whose shell line is given as it is, so a test controls the command text."""

    __slots__ = ("line",)

    def sh(self, shell):
        return (self.line,)


def step(summary, *lines):
    return Step(summary, actions=tuple(Literal(line) for line in lines), needs_root=True, persistent=True)


def finding(number, evidence=(), commands=(LONG,), severity=Severity.LOW):
    return Finding(
        rule="demo.rule-%d" % number,
        severity=severity,
        title="Demonstration finding %d" % number,
        message="The tuning in /etc/sysctl.conf says one thing and the running kernel another: the value read at boot is "
        "not the one the guide asked for, and the pool it reserves goes unused by the model server.",
        evidence=evidence
        or (
            Evidence("/etc/sysctl.conf", "vm.overcommit_memory = 1", 9),
            Evidence("/etc/sysctl.conf", "vm.overcommit_ratio = 95", 10),
            Evidence("/proc/sys/vm/overcommit_memory", "1"),
        ),
        remediation=(step("Comment out the ineffective lines, so the file says what the kernel does", *commands),),
        impact=0,
        order=number,
    )


def report(findings, uid=0, hostname="gpu-node-07"):
    host = HostSummary(
        hostname=hostname,
        kernel="6.1.0-18-amd64",
        source="live system",
        root="/",
        live=True,
        uid=uid,
        container=None,
        distro="Debian GNU/Linux 12 (bookworm)",
    )
    checks = tuple(CheckResult("demo.passed-%d" % n, "Passed %d" % n, Status.PASS, "nothing to see", ()) for n in range(30))
    return Report("0.0-test", host, Request(), checks, tuple(findings), "high", 0, False, 1764000000.0)


class _Text(HTMLParser):
    """The text a browser gives as textContent for each element of one class (tags add none)."""

    def __init__(self, tag: str, within: str):
        super().__init__(convert_charrefs=True)
        self.tag, self.within = tag, within
        self.depth, self.inside, self.found = 0, 0, []

    def handle_starttag(self, tag, attrs):
        if tag in ("wbr", "br"):
            return
        self.depth += 1
        if self.inside:
            self.inside += 1
        elif tag == self.tag and self.within in (dict(attrs).get("class") or "").split():
            self.inside = 1
            self.found.append("")

    def handle_endtag(self, tag):
        self.depth -= 1
        if self.inside:
            self.inside -= 1

    def handle_data(self, data):
        if self.inside:
            self.found[-1] += data


def _texts(page: str, tag: str, within: str) -> list:
    parser = _Text(tag, within)
    parser.feed(page)
    return parser.found


def _wbr_neighbours(markup: str):
    """Each <wbr> with the text just before and just after it (tags dropped, unescaped)."""
    parts = str(markup).split("<wbr>")
    plain = [html.unescape(re.sub(r"<[^>]*>", "", part)) for part in parts]
    return list(zip(plain, plain[1:]))


# -- where a command may wrap --------------------------------------------------------------------


@pytest.mark.parametrize("command", (False, True))
@pytest.mark.parametrize(
    "text",
    (LONG, HEREDOC, "sudo sysctl -w vm.nr_hugepages=0", "a=b,c //x y=/z /etc/ 4c1e-5.14.0.conf", HOSTILE, "\x1b[31m/<b>/x=\u202e"),
)
def test_breakable_adds_wbr_only_after_a_separator_inside_a_word(text, command):
    markup = html_report.breakable(text, command=command)
    plain = html.unescape(re.sub(r"<[^>]*>", "", str(markup)))
    assert plain == ("\n".join(visible(line) for line in text.split("\n")) if command else visible(text))
    assert "<script>" not in markup and "<b>" not in markup
    for before, after in _wbr_neighbours(markup):
        assert before[-1] in "/=,", (before, after)  # never between two letters of a word
        assert after[:1] and not after[0].isspace() and after[0] not in "/=,"
        assert not before.rstrip("/=,")[-1:].isspace()  # nor after a path's leading /


def test_breakable_splits_paths_and_settings_where_a_person_would():
    assert str(html_report.breakable("/etc/tuned/gpu-serving/tuned.conf")) == "/etc/<wbr>tuned/<wbr>gpu-serving/<wbr>tuned.conf"
    assert str(html_report.breakable("--args=transparent_hugepage=madvise")) == "--args=<wbr>transparent_hugepage=<wbr>madvise"
    assert "<wbr>" not in str(html_report.breakable("vm.overcommit_memory = 1"))  # the spaces break it


def test_a_command_keeps_words_a_browser_would_break_whole():
    markup = str(html_report.breakable("sed -i --follow-symlinks -e '3{\\|^exit 0$|{h;d;};}' /etc/rc.local", command=True))
    assert '<span class="nb">--follow-symlinks</span>' in markup and '<span class="nb">-i</span>' in markup
    assert '<span class="nb">&#39;3{\\|^exit</span>' in markup
    assert "sed " in markup and '<span class="nb">sed' not in markup  # a plain word needs no span
    # Evidence may break after a hyphen (a long file name), so it gets no spans.
    assert "span" not in str(html_report.breakable("4c1e9b2f-5.14.0-362.conf"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab/=,- .\n<&'\"\t?(\x1b"), max_size=40), st.booleans())
def test_breakable_text_is_the_input_and_wbr_follows_separators(text, command):
    markup = html_report.breakable(text, command=command)
    plain = html.unescape(re.sub(r"<[^>]*>", "", str(markup)))
    assert plain == ("\n".join(visible(line) for line in text.split("\n")) if command else visible(text))
    for before, after in _wbr_neighbours(markup):
        assert before[-1] in "/=," and after[0] not in "/=, \n"


# -- the rendered page ---------------------------------------------------------------------------


def test_commands_copy_exactly_what_the_report_says():
    hostile = "echo %s > /tmp/x" % HOSTILE
    findings = [finding(1, commands=(LONG, HEREDOC)), finding(2, commands=(hostile,))]
    page = html_report.render(report(findings))
    assert HOSTILE not in page and "&lt;script&gt;" in page
    # The Copy button copies the <code>'s textContent: the commands, joined by newlines, as the
    # text and JSON reports give them, whatever <wbr> and spans mark where they may wrap.
    assert _texts(page, "div", "command") == [LONG + "\n" + HEREDOC, hostile]
    assert page.count('<span class="cmd">') == 3
    assert "var text = code.textContent;" in page


def test_the_line_column_is_left_out_where_no_evidence_has_a_line():
    without = finding(1, evidence=(Evidence("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "schedutil"),))
    mixed = finding(2)
    page = html_report.render(report([without, mixed]))
    first, second = page.split('id="finding-')[1:3]
    assert "<th>Line</th>" not in first and "<th>File</th><th>Value</th>" in first
    assert first.count("<td>") == 2  # path and value, no empty cell
    assert "<th>Line</th>" in second and "<td>9</td>" in second and "<td></td>" in second  # the /proc row has none


def test_the_header_shows_the_uid_the_checks_read_as():
    assert "<dt>Read as</dt><dd>uid 1000</dd>" in html_report.render(report([finding(1)], uid=1000))
    assert "Read as" not in html_report.render(report([finding(1)], uid=None))


def test_print_rules():
    page = html_report.render(report([finding(1)]))
    css = page[page.index("<style>") : page.index("</style>")]
    printed = css[css.index("@media print") :]
    assert re.search(r"@page \{ margin: \d+mm", css)
    assert "html { font-size: 10pt; }" in printed
    assert re.search(r"\.finding \{ break-inside: avoid;", printed)
    # A finding taller than a page breaks between rows and steps, its heading kept with its start.
    assert ".finding .head { break-inside: avoid; break-after: avoid; }" in printed
    assert "tr, pre, ol.steps li { break-inside: avoid; }" in printed
    assert "button.copy { display: none; }" in printed
    # The passed and skipped checks print folded (their one line) unless opened: nothing opens them.
    assert "details:not([open])" in printed and "beforeprint" not in page
    # Commands wrap on screen too, at their spaces and <wbr> only.
    assert "white-space: pre-wrap;" in css and ".nb { white-space: nowrap; }" in css
    assert "word-break: break-all" not in css
    # The copy button sits in the code block's top-right corner.
    assert re.search(r"button\.copy \{ position: absolute; top: [.\d]+rem; right: [.\d]+rem;", css)


# -- on paper, in a real browser -----------------------------------------------------------------


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


def test_seven_findings_print_on_about_three_pages(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("no chromium here (Debian: apt install chromium)")
    severities = [Severity.HIGH, Severity.MEDIUM] + [Severity.LOW] * 5
    target = tmp_path / "report.html"
    target.write_text(html_report.render(report([finding(n, severity=s) for n, s in enumerate(severities, 1)])))
    pdf = tmp_path / "report.pdf"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer", "--print-to-pdf=%s" % pdf]
    subprocess.run(command + [target.resolve().as_uri()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True)
    # Letter, chromium's default paper; A4 is taller. Before the print rules it took six.
    assert 2 <= _pages(pdf.read_bytes()) <= 3
