"""The report page ("/report") in headless Chromium against an API-only service over a store of known incidents
(test_report_api's): served like "/wall" (the same CSP header, nothing inline, relative URLs, its files on the UI's
allow-list); with a viewer key it makes the report of a chosen period and shows its numbers (summary, tables, bar
charts), the lists link into the operator UI (a click opens the event there), a server's refusal (a period over 92
days) is shown, and under print media the controls are hidden and the report alone is laid out.

SEAWATCH_REPORT_SHOTS=DIR saves the screenshots (screen at 1280 px, print) there to look at."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.store import EventStore  # noqa: E402
from test_report_api import VIEWER_KEY, fill  # noqa: E402
from test_service_ui import _browser, _playwright, _wait, open_page  # noqa: E402


def _config(tmp_path: Path):
    return load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "shift-lead", "role": "viewer", "key_sha256": hash_api_key(VIEWER_KEY)}]},
        "drones": [{"id": "patrol-1", "connection": "udp:127.0.0.1:14550", "video_source": "drone-cam",
                    "camera": {"width_px": 640, "height_px": 360, "hfov_deg": 70}}]})


@pytest.fixture
def served(tmp_path):
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    fill(store)
    try:
        with serve_in_thread(create_app(_config(tmp_path), store=store)) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        store.close()


def test_report_page_is_served_like_the_wall(tmp_path):
    with TestClient(create_app(_config(tmp_path))) as c:
        root, page = c.get("/"), c.get("/report")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == root.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        html = page.text
        assert '<script type="module" src="ui/report.js"></script>' in html and 'href="ui/report.css"' in html
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html, re.I), "an inline style or handler"
        assert not re.search(r"""(?:src|href|action)=["']/""", html), "a URL from the host's root"
        assert c.get("/ui/report.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/report.css").headers["content-type"].startswith("text/css")
        assert c.get("/ui/report.html").status_code == 404  # the page only as "/report", with its header
        js = c.get("/ui/report.js").text
        assert "http://" not in js.replace("http://www.w3.org/2000/svg", "") and "https://" not in js  # nothing from elsewhere
        assert c.get("/api/report", params={"start_from": "2026-09-21", "start_to": "2026-09-22"}).status_code == 401


def _text(page, sel: str) -> str:
    return page.evaluate(f"document.querySelector({sel!r}).textContent")


def _make(page, start: str, end: str) -> None:
    page.select_option("#period", "custom")
    page.fill("#from", start)
    page.fill("#to", end)
    page.click("#make")


def test_report_page_numbers_links_and_print(served, tmp_path):
    shots = os.environ.get("SEAWATCH_REPORT_SHOTS")
    with _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"{served}/report#key={VIEWER_KEY}", width=1280, height=900)
        _wait(page, "!document.getElementById('main').hidden && window.seawatchReport.state.report !== null")
        assert _text(page, "#who").startswith("shift-lead")
        # a three-shift port's handover: the last 8 hours, up to now
        page.select_option("#period", "8")
        _wait(page, "(() => { const r = window.seawatchReport.state.report; return r && "
                    "Math.abs((r.period.start_to_ns - r.period.start_from_ns) / 3.6e12 - 8) < 1e-3; })()")
        # the default period (the last 7 days) holds none of the stored incidents (September 2026)
        _make(page, "2026-09-21T00:00", "2026-09-23T00:00")
        _wait(page, "document.querySelector('#n-total b').textContent === '7'")
        cards = page.evaluate("Object.fromEntries([...document.querySelectorAll('#summary .card')]"
                              ".map(c => [c.id, c.querySelector('b').textContent]))")
        assert cards == {"n-total": "7", "n-open": "2", "n-new": "2", "n-confirmed": "1", "n-false": "1", "n-high": "4",
                         "n-held": "1", "n-response": "2 min 0 s"}
        assert _text(page, "#meta-period") == "2026-09-21 00:00 UTC to 2026-09-23 00:00 UTC (2 days)"
        assert _text(page, "#meta-filters") == "none (every incident)"
        assert "by shift-lead (viewer)" in _text(page, "#meta-made")
        rows = page.evaluate("[...document.querySelectorAll('#by-type tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        assert rows[0] == ["fire", "1", "1", "1", "0", "3"] and rows[-1] == ["all", "1", "2", "1", "3", "7"]
        days = page.evaluate("[...document.querySelectorAll('#per-day g.bar')].map(g => [g.dataset.label, g.dataset.total])")
        assert days == [["2026-09-21", "3"], ["2026-09-22", "4"]]
        hours = page.evaluate("[...document.querySelectorAll('#by-hour g.bar')].map(g => Number(g.dataset.total))")
        assert len(hours) == 24 and hours[6] == 2 and hours[23] == 1 and hours[0] == 1 and sum(hours) == 7
        # a bar's height follows its count: the day of 4 is taller than the day of 3
        heights = page.evaluate("[...document.querySelectorAll('#per-day g.bar')].map(g => [...g.querySelectorAll('rect')]"
                                ".reduce((a, r) => a + r.getBBox().height, 0))")
        assert heights[1] > heights[0] > 0 and abs(heights[1] / heights[0] - 4 / 3) < 0.02
        resp = page.evaluate("[...document.querySelectorAll('#response tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        assert resp[0][1:] == ["5", "2 min 0 s", "4 min 36 s", "5 min 0 s", "2"]
        assert resp[1][1:] == ["3", "5 min 0 s", "9 min 0 s", "10 min 0 s", "4"]
        busiest = page.evaluate("[...document.querySelectorAll('#busiest tbody tr')].map(r => r.cells[0].textContent)")
        assert busiest[:2] == ["cam-1", "cam-2"]
        assert page.evaluate("[...document.querySelectorAll('#list-severe tbody tr')].length") == 4
        confirmed = page.evaluate("[...document.querySelectorAll('#list-confirmed tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        assert len(confirmed) == 1 and confirmed[0][0] == "e1" and confirmed[0][3] == "2026-09-21 06:00 UTC"
        assert "rita" in confirmed[0][7] and confirmed[0][8] == "real fire on quay 3"
        held = _text(page, "#list-held tbody tr")
        assert "Noordzee Express" in held and "244123456" in held and "evidence for the harbour master" in held
        href = page.evaluate("document.querySelector('#list-confirmed a.event-link').href")
        assert href == f"{served}/#key={VIEWER_KEY}&event=e1"
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{shots}/report-screen.png", full_page=True)

        # print: the controls go, the report stays
        assert page.evaluate("getComputedStyle(document.getElementById('controls')).display") != "none"
        page.emulate_media(media="print")
        for sel in ("controls", "bar"):
            assert page.evaluate(f"getComputedStyle(document.getElementById('{sel}')).display") == "none", sel
        assert page.evaluate("getComputedStyle(document.getElementById('report')).display") != "none"
        assert page.evaluate("document.getElementById('report').getBoundingClientRect().height") > 500
        # the width of A4 inside the page's margins (186 mm at 96 px per inch): nothing sticks out to the right
        page.set_viewport_size({"width": 703, "height": 1000})
        assert page.evaluate("document.documentElement.scrollWidth") <= 703
        assert page.evaluate("document.querySelector('#list-severe table').getBoundingClientRect().right") <= 703
        if shots:
            page.screenshot(path=f"{shots}/report-print.png", full_page=True)
            page.pdf(path=f"{shots}/report.pdf", format="A4")
        assert page.pdf(format="A4").startswith(b"%PDF")
        page.emulate_media(media="screen")
        page.set_viewport_size({"width": 1280, "height": 900})

        # a period the service refuses: its message is shown, the last report stays
        _make(page, "2026-01-01T00:00", "2026-06-01T00:00")
        _wait(page, "document.getElementById('status').textContent.includes('at most 92 days')")
        assert _text(page, "#n-total b") == "7"
        # a filter narrows the numbers and is stated
        page.fill("#type", "smoke")
        _make(page, "2026-09-21T00:00", "2026-09-23T00:00")
        _wait(page, "document.querySelector('#n-total b').textContent === '2'")
        assert _text(page, "#meta-filters") == "type: smoke"

        # a click on a listed incident opens it in the operator UI
        page.fill("#type", "")
        _make(page, "2026-09-21T00:00", "2026-09-23T00:00")
        _wait(page, "document.querySelector('#n-total b').textContent === '7'")
        page.click("#list-confirmed a.event-link")
        _wait(page, "document.getElementById('detail') && document.getElementById('detail').dataset.id === 'e1'", 15)
        assert errors == [], errors
        browser.close()


def _local_page(browser, url: str, mode: str = "local"):
    """A page at ``url`` in a browser context in Europe/Amsterdam with the display zone ``mode`` chosen (as the
    operator page keeps it); ``(page, errors, asked)``: its script errors and the /api/report URLs it asked."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Amsterdam")
    ctx.add_init_script(f"localStorage.setItem('seawatch-times', {mode!r})")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/report?" in r.url else None)
    page.goto(url)
    _wait(page, "!document.getElementById('main').hidden && window.seawatchReport.state.report !== null")
    return page, errors, asked


def _bars(page, chart: str) -> list[list[str]]:
    return page.evaluate(f"[...document.querySelectorAll('#{chart} g.bar')].map(g => [g.dataset.label, g.dataset.total])")


def _hours(page) -> dict[int, int]:
    return {int(label[:2]): int(n) for label, n in _bars(page, "by-hour") if n != "0"}


def test_report_page_in_the_zone_chosen_on_the_operator_page(served):
    """With local times chosen (Europe/Amsterdam, CEST in September), the period typed is read in that zone (the
    request carries the UTC instants), the report's times carry CEST, and the per-day and hour-of-day counts are
    asked for (tz=Europe/Amsterdam) and shown in Amsterdam's days and hours, the charts saying so. The header's
    "times" switched to UTC: the period keeps its instants, the report is made again in UTC days and hours."""
    with _playwright() as p:
        browser = _browser(p)
        page, errors, asked = _local_page(browser, f"{served}/report#key={VIEWER_KEY}")
        assert _text(page, ".tz") in ("CET", "CEST") and "times in CE" in _text(page, "#period-legend")
        assert page.evaluate("document.getElementById('tz-mode').value") == "local"
        _make(page, "2026-09-21T02:00", "2026-09-23T02:00")  # CEST: 00:00 UTC to 00:00 UTC, as the UTC test's period
        _wait(page, "document.querySelector('#n-total b').textContent === '7'")
        assert "start_from=2026-09-21T00%3A00%3A00.000Z" in asked[-1] and "start_to=2026-09-23T00%3A00%3A00.000Z" in asked[-1]
        assert "tz=Europe%2FAmsterdam" in asked[-1]
        assert _text(page, "#meta-period") == "2026-09-21 02:00 CEST to 2026-09-23 02:00 CEST (2 days)"
        confirmed = page.evaluate("[...document.querySelectorAll('#list-confirmed tbody tr')].map(r => r.cells[3].textContent)")
        assert confirmed == ["2026-09-21 08:00 CEST"]  # 06:00 UTC
        assert _text(page, "#per-day-title") == "Per day (Europe/Amsterdam)"
        assert _text(page, "#by-hour-title") == "By hour of day (Europe/Amsterdam)"
        # e1, e2 at 08:00, 08:30 CEST on the 21st; e3 (23:59:59.999 UTC) 01:59 and e4 02:00 CEST on the 22nd; e5, e9
        # 14:00, 14:30; e6 15:00; and the 23rd's first two hours, empty
        assert _bars(page, "per-day") == [["2026-09-21", "2"], ["2026-09-22", "5"], ["2026-09-23", "0"]]
        assert _hours(page) == {8: 2, 1: 1, 2: 1, 14: 2, 15: 1}
        assert page.evaluate("document.querySelectorAll('.zone-note').length") == 0  # no clock change in the period

        n = len(asked)
        page.select_option("#tz-mode", "utc")
        _wait(page, "document.getElementById('by-hour-title').textContent === 'By hour of day (UTC)'")
        assert len(asked) == n + 1 and "tz=UTC" in asked[-1] and "start_from=2026-09-21T00%3A00%3A00.000Z" in asked[-1]
        assert page.evaluate("[document.getElementById('from').value, document.getElementById('to').value]") == [
            "2026-09-21T00:00", "2026-09-23T00:00"]
        assert _text(page, ".tz") == "UTC" and _text(page, "#per-day-title") == "Per day (UTC)"
        assert _text(page, "#meta-period") == "2026-09-21 00:00 UTC to 2026-09-23 00:00 UTC (2 days)"
        assert _bars(page, "per-day") == [["2026-09-21", "3"], ["2026-09-22", "4"]]
        assert _hours(page) == {6: 2, 23: 1, 0: 1, 12: 2, 13: 1}
        assert page.evaluate("localStorage.getItem('seawatch-times')") == "utc"  # shared with the operator page
        assert errors == []
        browser.close()


@pytest.fixture
def served_dst(tmp_path):
    """The service over test_report_zone_api's store: incidents every hour of Amsterdam's days of 23 and 25 hours."""
    from test_report_zone_api import fill as fill_dst

    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    fill_dst(store)
    try:
        with serve_in_thread(create_app(_config(tmp_path), store=store)) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        store.close()


def test_report_page_over_a_clock_change(served_dst):
    """Local times, Amsterdam, 2026-10-25 (25 hours): typed from 00:00 to 00:00 the next day, the report is one local
    day of 25 hours (said in the period, the chart's label and a note), 02:00 counts two incidents (CEST and CET);
    02:30 typed as "from" is read as its first reading and a note says so, as the operator page does; 02:30 on
    2026-03-29 does not exist and is refused; printed on A4's width, nothing sticks out. In UTC the same instants are
    two UTC days, and back in local times the typed period is Amsterdam's day again."""
    with _playwright() as p:
        browser = _browser(p)
        page, errors, asked = _local_page(browser, f"{served_dst}/report#key={VIEWER_KEY}")
        _make(page, "2026-10-25T00:00", "2026-10-26T00:00")
        _wait(page, "document.querySelector('#n-total b').textContent === '25'")
        assert "start_from=2026-10-24T22%3A00%3A00.000Z" in asked[-1] and "start_to=2026-10-25T23%3A00%3A00.000Z" in asked[-1]
        assert _text(page, "#meta-period") == "2026-10-25 00:00 CEST to 2026-10-26 00:00 CET (1 day, 25 h)"
        assert [(page.evaluate("document.querySelector('.tz[data-for=from]').textContent"),
                 page.evaluate("document.querySelector('.tz[data-for=to]').textContent"))] == [("CEST", "CET")]
        assert _bars(page, "per-day") == [["2026-10-25 (25 h)", "25"]]
        assert _hours(page) == {**{h: 1 for h in range(24)}, 2: 2}
        assert "2026-10-25 had 25 hours" in _text(page, "#per-day .zone-note")
        page.emulate_media(media="print")
        page.set_viewport_size({"width": 703, "height": 1000})  # A4 inside the margins
        assert page.evaluate("document.documentElement.scrollWidth") <= 703
        assert page.evaluate("getComputedStyle(document.getElementById('bar')).display") == "none"  # the zone control too
        page.emulate_media(media="screen")
        page.set_viewport_size({"width": 1280, "height": 900})

        page.select_option("#tz-mode", "utc")  # the same instants, made again in UTC days
        _wait(page, "document.getElementById('per-day-title').textContent === 'Per day (UTC)'")
        assert _bars(page, "per-day") == [["2026-10-24", "2"], ["2026-10-25", "23"]]
        assert _text(page, "#meta-period") == "2026-10-24 22:00 UTC to 2026-10-25 23:00 UTC (25 h)"
        assert page.evaluate("document.querySelectorAll('.zone-note').length") == 0
        page.select_option("#tz-mode", "local")
        _wait(page, "document.getElementById('per-day-title').textContent === 'Per day (Europe/Amsterdam)'")
        assert page.evaluate("[document.getElementById('from').value, document.getElementById('to').value]") == [
            "2026-10-25T00:00", "2026-10-26T00:00"]

        _make(page, "2026-10-25T02:30", "2026-10-25T04:00")  # 02:30 CEST (00:30 UTC) to 04:00 CET (03:00 UTC)
        _wait(page, "document.querySelector('#n-total b').textContent === '3'")  # a02, a03, a04 (00:30-02:30 UTC)
        assert "start_from=2026-10-25T00%3A30%3A00.000Z" in asked[-1]
        assert _text(page, "#time-note") == "from 2026-10-25 02:30 occurs twice (CEST, then CET): read as the first"
        assert _hours(page) == {2: 2, 3: 1}
        _make(page, "2026-03-29T02:30", "2026-03-29T04:00")
        _wait(page, "document.getElementById('status').textContent.includes('does not exist in Europe/Amsterdam')")
        assert _text(page, "#status").startswith("from: ")
        assert errors == []
        browser.close()
