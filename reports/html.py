"""The report as one self-contained HTML file, for a support ticket.

Everything is inline (CSS, a few lines of JS for copy buttons and printing): no request leaves
the page, and it opens offline from a file:// URL. The template is autoescaped, and host text
also has its control characters shown as escapes, so a hostname such as
``<script>alert(1)</script>`` reads as text. Without JS the page is whole; commands wrap when
printed instead of being cut off.
"""

from __future__ import annotations

from ai_doctor.model import Status
from ai_doctor.reports.words import command_line, found_words, step_flags, threshold_words, visible, visible_lines

_ORDER = ("critical", "high", "medium", "low", "info")


def environment():
    """The templates under reports/templates, autoescaped, with host text made visible."""
    import jinja2  # only for the HTML formats

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ai_doctor.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["visible"] = visible
    env.filters["visible_lines"] = visible_lines
    return env


def render(report) -> str:
    template = environment().get_template("report.html.j2")
    counts = report.counts()
    worst = next((severity for severity in _ORDER if counts[severity]), None)
    finished = None
    if report.finished:
        import datetime

        finished = datetime.datetime.fromtimestamp(report.finished, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return template.render(
        report=report,
        host=report.host,
        request=report.request,
        counts=[(severity, counts[severity]) for severity in _ORDER],
        worst=worst,
        found=found_words(report),
        threshold=threshold_words(report),
        failing=report.failing(),
        flags=step_flags,
        others=[check for check in report.checks if check.status in (Status.PASS, Status.SKIP)],
        failed=[check for check in report.checks if check.status is Status.ERROR],
        finished=finished,
        argv=command_line(report),
    )
