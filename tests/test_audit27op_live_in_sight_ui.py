"""Operator audit (night shift, a 1280x720 laptop): a camera's live view opened from an event's detail ("Live view"),
from a click on the camera on the map, or from a link (a camera wall tile: ``#live=CAMERA``) is brought into sight.
It sits under the map, the list and the detail; before, it opened below the bottom of the screen and the click
seemed to do nothing. Opened from the sources table, where it is already in sight, the page does not jump."""

from __future__ import annotations

import pytest

from test_live_view import KEY, _settings

IN_SIGHT = """() => { const r = document.getElementById('live-view').getBoundingClientRect();
    return !document.getElementById('live-view').hidden && r.top >= 0 && r.top < innerHeight - 100; }"""


@pytest.mark.slow
def test_ui_live_view_opened_from_the_detail_a_link_or_the_map_is_in_sight(tmp_path):
    from conftest import serve_in_thread
    from test_service_store import make_event
    from test_service_ui import _browser, _playwright, _wait, open_page

    from seawatch.service.app import create_app

    cams = [{"id": cid, "url": f"rtsp://cam/{cid}", "calibration": {
        "camera": {"width_px": 1920, "height_px": 1080, "hfov_deg": 60},
        "surveyed": {"lat_deg": 53.55, "lon_deg": lon, "alt_m": 20.0, "pan_deg": 90.0, "tilt_deg": -10.0}}}
        for cid, lon in (("quay", 8.58), ("gate", 8.59))]
    app = create_app(_settings(tmp_path, sources=cams))
    with serve_in_thread(app) as port, _playwright() as p:
        for i in range(8):
            app.state.store.put(make_event(i, source_id="quay"))
        browser = _browser(p)
        # a link to a camera's live view (what a wall tile without an incident opens)
        page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}&live=gate", width=1280, height=720)
        _wait(page, "document.getElementById('lv-title').textContent === 'Live: gate'", 10)
        _wait(page, IN_SIGHT, 5)
        page.click("#lv-close")

        # an event's detail: "Live view"
        page.evaluate("scrollTo(0, 0)")
        page.click('#events tr[data-id="ev00003"]')
        _wait(page, "!document.getElementById('detail').hidden && !document.getElementById('d-live').hidden", 5)
        page.click("#d-live")
        _wait(page, "document.getElementById('lv-title').textContent === 'Live: quay'", 5)
        _wait(page, IN_SIGHT, 5)
        page.click("#lv-close")

        # a click on the camera on the map (the map at the top of the page)
        page.evaluate("scrollTo(0, 0)")
        xy = page.evaluate("""() => { const m = window.seawatch.map, r = m.c.getBoundingClientRect();
            const cam = m.data.cameras.find((c) => c.source_id === 'gate'), q = m.project(cam.view.lat_deg, cam.view.lon_deg);
            return [r.left + q.x * r.width / m.c.width, r.top + q.y * r.height / m.c.height]; }""")
        page.mouse.click(*xy)
        _wait(page, "document.getElementById('lv-title').textContent === 'Live: gate'", 5)
        _wait(page, IN_SIGHT, 5)
        page.click("#lv-close")

        # the sources table's "Live": already in sight there, the page stays where it is
        page.locator('#sources tr[data-id="quay"]').scroll_into_view_if_needed()
        y0 = page.evaluate("scrollY")
        page.click('#sources tr[data-id="quay"] button:has-text("Live")')
        _wait(page, "document.getElementById('lv-title').textContent === 'Live: quay'", 5)
        page.wait_for_timeout(300)
        assert page.evaluate("scrollY") == y0
        assert not errors, errors
        browser.close()
