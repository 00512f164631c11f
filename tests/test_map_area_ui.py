"""A search area drawn on the operator map, in headless Chromium against a real service: a reviewer clicks the corners
of a polygon (or a circle's centre and edge) on the map, and the event list, the map and the exports then hold only
the events located inside it, the same events the search API finds for that polygon or circle. A corner whose edge
would cross another is refused with the reason, Backspace takes a corner back, Esc cancels, a drag still pans."""

from __future__ import annotations

import csv
import io
import json
import urllib.parse
import urllib.request

import pytest

from conftest import serve_in_thread
from seawatch.service.auth import hash_api_key
from seawatch.service.app import create_app
from seawatch.service.config import load_config
from seawatch.vision.events import GeoPosition
from test_service_store import make_event
from test_service_ui import _browser, _count, _playwright, _shot, _wait, open_page

KEY = "area-test-viewer-key-0123456789"
ROWS = "[...document.querySelectorAll('#events tbody tr')].map(tr => tr.dataset.id).sort()"
AREA_RGB = (0x12, 0x32, 0x4A)
# located events over Lemmer harbour (lat, lon), and one with no position
PLACES = {"ev00000": (52.8400, 5.7000), "ev00001": (52.8410, 5.7020), "ev00002": (52.8440, 5.7100),
          "ev00003": (52.8372, 5.6950)}
BERTH = [(52.8390, 5.6990), (52.8390, 5.7030), (52.8420, 5.7030), (52.8420, 5.6990)]  # round ev00000 and ev00001


@pytest.fixture
def area_service(tmp_path):
    """An API-only service with four located events and one without a position; a viewer key (searching is reading)."""
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")},
                            "auth": {"api_keys": [{"name": "wall", "role": "viewer", "key_sha256": hash_api_key(KEY)}]}})
    app = create_app(cfg)
    with serve_in_thread(app) as port:
        for i, (eid, (lat, lon)) in enumerate(PLACES.items()):
            app.state.store.put(make_event(i, type="vessel_in_zone", severity="high", source_id="harbour-cam",
                                           geo=GeoPosition(lat, lon, 12.0, 8.0, 0.0)))
        app.state.store.put(make_event(4, type="fire", severity="critical", source_id="yard-cam"))  # no position
        yield f"http://127.0.0.1:{port}"


def _api_ids(base: str, **params) -> list[str]:
    req = urllib.request.Request(f"{base}/api/events?{urllib.parse.urlencode(params)}", headers={"X-API-Key": KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return sorted(e["id"] for e in json.loads(r.read())["events"])


def _click_at(page, lat: float, lon: float, dbl: bool = False) -> None:
    """A click on the map where (lat, lon) is drawn now."""
    xy = page.evaluate(f"window.seawatch.map.project({lat}, {lon})")
    box = page.locator("#map").bounding_box()
    size = page.evaluate("[document.getElementById('map').width, document.getElementById('map').height]")
    x, y = box["x"] + xy["x"] * box["width"] / size[0], box["y"] + xy["y"] * box["height"] / size[1]
    page.mouse.move(x, y)
    page.mouse.click(x, y, click_count=2 if dbl else 1)


def _start(browser, base):
    page, errors = open_page(browser, f"{base}/#key={KEY}")
    _wait(page, f"({ROWS}).length === 5")
    return page, errors


def test_polygon_drawn_on_the_map_limits_the_list_map_and_exports(area_service):
    base = area_service
    with _playwright() as p:
        browser = _browser(p)
        page, errors = _start(browser, base)
        searches: list[str] = []
        page.on("request", lambda r: searches.append(r.url) if "/api/events?" in r.url else None)
        page.click("#area-polygon")
        assert page.get_attribute("#area-polygon", "aria-pressed") == "true"
        assert "click corner 1" in page.text_content("#area-hint")
        for lat, lon in BERTH:
            _click_at(page, lat, lon)
        assert page.evaluate("window.seawatch.map.drawing.points.length") == 4
        assert "or the first corner" in page.text_content("#area-hint")
        _click_at(page, *BERTH[0])  # the first corner again closes it
        _wait(page, f"JSON.stringify({ROWS}) === JSON.stringify(['ev00000', 'ev00001'])")
        info = page.text_content("#area-info")
        assert info.startswith("search area: polygon of 4 corners, ") and "m²" in info, info
        # the search sent the polygon, and the API answers the same for it
        sent = urllib.parse.parse_qs(urllib.parse.urlparse(searches[-1]).query)
        corners = [tuple(float(v) for v in c.split()) for c in sent["polygon"][0].split(",")]
        assert len(corners) == 4
        for (lon, lat), (blat, blon) in zip(corners, BERTH):
            assert abs(lat - blat) < 3e-5 and abs(lon - blon) < 5e-5, (lat, lon)  # a map pixel is ~2 m here
        assert _api_ids(base, polygon=sent["polygon"][0]) == ["ev00000", "ev00001"]
        # the map: the area's dashed outline along its southern edge; only the two events inside are drawn
        page.wait_for_timeout(200)
        mid = page.evaluate(f"window.seawatch.map.project({BERTH[0][0]}, {(BERTH[0][1] + BERTH[1][1]) / 2})")
        assert _count(_shot(page), AREA_RGB, mid["x"], mid["y"], r=10, tol=30) > 4
        assert page.evaluate("window.seawatch.map.data.events.map(e => e.id).sort()") == ["ev00000", "ev00001"]
        # the exports take the area too
        with page.expect_download() as dl:
            page.click("#export-csv")
        rows = list(csv.DictReader(io.StringIO(open(dl.value.path(), encoding="utf-8-sig").read())))
        assert sorted(r["id"] for r in rows) == ["ev00000", "ev00001"]
        # the area is in the address: a reload (or the link sent to a colleague) searches the same place
        assert "area=p%3A52.839" in page.evaluate("location.hash")
        page.reload()
        _wait(page, f"JSON.stringify({ROWS}) === JSON.stringify(['ev00000', 'ev00001'])")
        assert page.text_content("#area-info") == info and page.is_visible("#area-clear")
        # cleared: every event again, and the address forgets it
        page.click("#area-clear")
        _wait(page, f"({ROWS}).length === 5")
        assert page.is_hidden("#area-bar") and "polygon" not in searches[-1]
        assert "area=" not in page.evaluate("location.hash")
        # junk in the address is no area (the whole list), not an error
        page.goto(f"{base}/#key={KEY}&area=p:1,2;3")
        _wait(page, f"({ROWS}).length === 5")
        assert page.is_hidden("#area-bar")
        assert errors == []
        browser.close()


def test_circle_drawn_on_the_map_searches_a_radius(area_service):
    base = area_service
    with _playwright() as p:
        browser = _browser(p)
        page, errors = _start(browser, base)
        page.click("#area-circle")
        assert "click the circle's centre" in page.text_content("#area-hint")
        _click_at(page, *PLACES["ev00000"])
        assert "click the circle's edge" in page.text_content("#area-hint")
        _click_at(page, 52.8400, 5.7050)  # 337 m east: ev00001 (170 m) in, ev00003 (475 m) out
        _wait(page, f"JSON.stringify({ROWS}) === JSON.stringify(['ev00000', 'ev00001'])")
        area = page.evaluate("window.seawatch.map.area")
        assert area["kind"] == "circle" and abs(area["radius_m"] - 337) < 6, area
        assert abs(area["lat"] - 52.84) < 3e-5 and abs(area["lon"] - 5.70) < 5e-5
        assert page.text_content("#area-info").startswith("search area: circle of 33")
        assert _api_ids(base, near_lat=area["lat"], near_lon=area["lon"], radius_m=area["radius_m"]) == ["ev00000", "ev00001"]
        # a wider circle takes ev00003 in as well
        page.click("#area-circle")
        _click_at(page, *PLACES["ev00000"])
        _click_at(page, 52.8400, 5.7090)  # 610 m
        _wait(page, f"JSON.stringify({ROWS}) === JSON.stringify(['ev00000', 'ev00001', 'ev00003'])")
        assert "area=c%3A52.84" in page.evaluate("location.hash")
        page.reload()
        _wait(page, f"JSON.stringify({ROWS}) === JSON.stringify(['ev00000', 'ev00001', 'ev00003'])")
        assert page.evaluate("window.seawatch.map.area.kind") == "circle"
        assert errors == []
        browser.close()


def test_drawing_refuses_a_crossing_edge_and_keys_undo_and_cancel(area_service):
    base = area_service
    with _playwright() as p:
        browser = _browser(p)
        page, errors = _start(browser, base)
        page.click("#area-polygon")
        a, b, c, d = BERTH
        for lat, lon in (a, b, d):
            _click_at(page, lat, lon)
        # a -> b -> d, then c: the edge d -> c is fine; but a corner south of a-b from d crosses a -> b
        _click_at(page, 52.8380, 5.7010)
        assert page.evaluate("window.seawatch.map.drawing.points.length") == 3
        assert "not there: its edge would cross another edge" in page.text_content("#area-hint")
        # closing a -> b -> d -> (south-east) would cross too: Backspace takes d back instead
        page.keyboard.press("Backspace")
        assert page.evaluate("window.seawatch.map.drawing.points.length") == 2
        # a drag pans the map and adds no corner
        view = page.evaluate("({...window.seawatch.map.view})")
        box = page.locator("#map").bounding_box()
        page.mouse.move(box["x"] + 100, box["y"] + 100)
        page.mouse.down()
        page.mouse.move(box["x"] + 160, box["y"] + 130, steps=5)
        page.mouse.up()
        assert page.evaluate("window.seawatch.map.view.lon") != view["lon"]
        assert page.evaluate("window.seawatch.map.drawing.points.length") == 2
        _click_at(page, *c)
        _click_at(page, *d, dbl=True)  # a double click on the last corner closes the polygon
        _wait(page, "window.seawatch.map.area !== null")
        assert page.evaluate("window.seawatch.map.area.points.length") == 4
        _wait(page, f"JSON.stringify({ROWS}) === JSON.stringify(['ev00000', 'ev00001'])")
        # Esc while drawing a new one cancels it and keeps the area drawn before
        page.click("#area-circle")
        _click_at(page, *PLACES["ev00002"])
        page.keyboard.press("Escape")
        assert page.evaluate("window.seawatch.map.drawing") is None
        assert page.get_attribute("#area-circle", "aria-pressed") == "false"
        assert page.evaluate("window.seawatch.map.area.kind") == "polygon"
        # typing Backspace in a filter field is typing, not taking back a corner
        page.click("#area-polygon")
        _click_at(page, *a)
        page.fill("#filters input[name=q]", "abc")
        page.focus("#filters input[name=q]")
        page.keyboard.press("Backspace")
        assert page.input_value("#filters input[name=q]") == "ab"
        assert page.evaluate("window.seawatch.map.drawing.points.length") == 1
        assert errors == []
        browser.close()
