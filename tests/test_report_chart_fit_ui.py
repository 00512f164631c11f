"""The report page's bar charts in headless Chromium: the count over the tallest bar lies inside the chart (it was
drawn with its top above the chart's edge and cut: "57" read as a half-height "5?", on screen and in print)."""

from __future__ import annotations

import test_report_ui
from test_report_ui import VIEWER_KEY, _make
from test_service_ui import _browser, _playwright, _wait, open_page

served = test_report_ui.served  # the fixture: an API-only service over the report tests' stored incidents

TOPS = """[...document.querySelectorAll('#{} g.bar text.value')].map(t => t.getBBox().y)"""


def test_report_bar_counts_fit_in_their_charts(served):
    with _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"{served}/report#key={VIEWER_KEY}", width=1280, height=900)
        _wait(page, "!document.getElementById('main').hidden && window.seawatchReport.state.report !== null")
        _make(page, "2026-09-21T00:00", "2026-09-23T00:00")
        _wait(page, "document.querySelector('#n-total b').textContent === '7'")
        for chart in ("per-day", "by-hour"):
            tops = page.evaluate(TOPS.format(chart))
            assert tops and min(tops) >= 0, (chart, tops)  # the tallest bar's count: its top inside the chart
        assert not errors, errors
        browser.close()
