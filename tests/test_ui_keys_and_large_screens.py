"""The operator UI at a control-room keyboard and on large screens (Chromium): Esc closes the topmost panel (the
recordings, the live view, the event's detail, in the order they were opened) and gives the focus back to what opened
it, but never while the operator types in a field nor while an area is being drawn on the map; the map grows with a
2560 or 3840 px window (drawn on the screen's device pixels) with clicks, hovering, zoom and area drawing landing where
they are drawn and an event's detail opening beside it, and goes back to the laptop and phone layouts when the window shrinks; the camera wall fills a 4K
screen."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

pytest.importorskip("fastapi")

from contextlib import contextmanager  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402
from seawatch.vision.events import GeoPosition  # noqa: E402

# where the three events are (a harbour's width apart: all on the map at once)
PLACES = {"ev00000": (53.5460, 8.5750), "ev00001": (53.5480, 8.5800), "ev00002": (53.5445, 8.5860)}
HIGH_RGB = (0xE6, 0x61, 0x01)  # map.js COLOURS.severity.high: an event's dot
ROWS = "document.querySelectorAll('#events tbody tr').length === 3"


@contextmanager
def _page(tmp_path, width: int = 1280, height: int = 900, dpr: float = 1, page: str = ""):
    """The service with the three events of PLACES (camera "quay"), and Chromium on its page ``page`` ("" the operator
    UI, "wall" the camera wall) at ``width`` x ``height`` CSS px and ``dpr`` device pixels per CSS px: ``(page,
    errors)``; no script error allowed, the browser closed after."""
    from conftest import serve_in_thread
    from test_live_view import KEY, _settings
    from test_service_store import make_event
    from test_service_ui import _browser, _playwright, _wait, open_page

    app = create_app(_settings(tmp_path))
    with serve_in_thread(app) as port:
        for i, (eid, (lat, lon)) in enumerate(PLACES.items()):
            app.state.store.put(make_event(i, type="vessel_in_zone", severity="high", source_id="quay",
                                           geo=GeoPosition(lat, lon, 10.0, 10.0, 0.0)))
        with _playwright() as p:
            browser = _browser(p)
            pg, errors = open_page(browser, f"http://127.0.0.1:{port}/{page}#key={KEY}", width=width, height=height,
                                   device_scale_factor=dpr)
            if not page:
                _wait(pg, ROWS, 15)
                _wait(pg, "window.seawatch.map.data.events.length === 3", 10)
            yield pg, errors
            assert not errors, errors
            browser.close()


def _active(page) -> str:
    """The focused element: its id, or "row:ID" for an event row."""
    return page.evaluate("""() => { const a = document.activeElement;
        return a.matches('#events tbody tr') ? 'row:' + a.dataset.id : a.id || a.tagName; }""")


def _shown(page) -> dict:
    return page.evaluate("Object.fromEntries(['detail', 'live-view', 'recordings'].map((id) => "
                         "[id, !document.getElementById(id).hidden]))")


@pytest.mark.slow
def test_esc_closes_recordings_live_view_and_detail_in_turn_and_gives_the_focus_back(tmp_path):
    from test_service_ui import _wait

    with _page(tmp_path) as (page, errors):
        # the close buttons are buttons a keyboard reaches, named for what they close
        names = page.evaluate("""['d-close', 'lv-close', 'rec-close'].map((id) => { const b = document.getElementById(id);
            return [b.tagName, b.type, b.tabIndex, b.getAttribute('aria-label') || b.textContent]; })""")
        assert names == [["BUTTON", "button", 0, "Close the event's detail"], ["BUTTON", "button", 0, "Close the live view"],
                         ["BUTTON", "button", 0, "Close the recordings"]], names
        page.click('#events tr[data-id="ev00001"]')
        _wait(page, "document.getElementById('detail').dataset.id === 'ev00001' && "
                    "!document.getElementById('d-live').hidden", 10)
        page.click("#d-live")
        _wait(page, "!document.getElementById('live-view').hidden", 5)
        page.click("#d-recordings")
        _wait(page, "!document.getElementById('recordings').hidden", 5)
        assert _shown(page) == {"detail": True, "live-view": True, "recordings": True}

        page.keyboard.press("Escape")  # the last opened first
        assert _shown(page) == {"detail": True, "live-view": True, "recordings": False}
        assert _active(page) == "d-recordings"
        page.keyboard.press("Escape")
        assert _shown(page) == {"detail": True, "live-view": False, "recordings": False}
        assert _active(page) == "d-live"
        page.keyboard.press("Escape")
        assert _shown(page) == {"detail": False, "live-view": False, "recordings": False}
        assert _active(page) == "row:ev00001"  # the row that opened it (drawn anew meanwhile)
        assert page.evaluate("window.seawatch.state.selected") is None
        assert "event=" not in page.evaluate("location.hash")
        assert page.evaluate("document.querySelectorAll('#events tr.sel').length") == 0
        page.keyboard.press("Escape")  # nothing left open: nothing happens
        assert _active(page) == "row:ev00001"

        # from the keyboard alone: Enter on the row, Esc back to it; the Close button works the same way
        page.keyboard.press("Enter")
        _wait(page, "!document.getElementById('detail').hidden", 5)
        page.focus("#d-close")
        page.keyboard.press("Enter")
        assert not _shown(page)["detail"]
        assert _active(page) == "row:ev00001"
        # a live view opened from the sources table goes back to its button there
        page.click('#sources tr[data-id="quay"] .live-act')
        _wait(page, "!document.getElementById('live-view').hidden", 5)
        page.keyboard.press("Escape")
        assert not _shown(page)["live-view"]
        assert page.evaluate("document.activeElement.matches('#sources tr[data-id=\"quay\"] .live-act')")


@pytest.mark.slow
def test_esc_while_typing_or_drawing_an_area_closes_nothing(tmp_path):
    from test_service_ui import _wait

    with _page(tmp_path) as (page, errors):
        page.click('#events tr[data-id="ev00000"]')
        _wait(page, "document.getElementById('detail').dataset.id === 'ev00000'", 10)
        page.click("#d-note")
        page.keyboard.type("buoy")
        page.keyboard.press("Escape")
        assert _shown(page)["detail"]
        assert page.input_value("#d-note") == "buoy"
        for field in ['#filters input[name="q"]', '#filters select[name="type"]']:
            page.focus(field)
            page.keyboard.press("Escape")
            assert _shown(page)["detail"], field
        # drawing an area: Esc cancels the drawing, the detail stays; the next Esc closes it
        page.click("#area-polygon")
        assert page.evaluate("!!window.seawatch.map.drawing")
        page.keyboard.press("Escape")
        assert page.evaluate("window.seawatch.map.drawing") is None
        assert _shown(page)["detail"]
        page.keyboard.press("Escape")
        assert not _shown(page)["detail"]
        assert not errors, errors


def _boxes(page) -> dict:
    return page.evaluate("""() => {
        const r = (id) => { const b = document.getElementById(id).getBoundingClientRect();
                            return {left: b.left, right: b.right, top: b.top, bottom: b.bottom, width: b.width, height: b.height}; };
        const c = document.getElementById('map');
        return {map: r('map'), list: r('list-pane'), canvas: [c.width, c.height], css: [c.clientWidth, c.clientHeight],
                scroll: document.documentElement.scrollWidth, view: document.documentElement.clientWidth}; }""")


def _marker_xy(page, eid: str) -> tuple[float, float]:
    """Where event ``eid``'s dot is on the screen (CSS px): the map's projection, in the canvas's CSS content box."""
    lat, lon = PLACES[eid]
    return tuple(page.evaluate(f"""() => {{ const m = window.seawatch.map, c = m.c, r = c.getBoundingClientRect(),
        p = m.project({lat}, {lon});
        return [r.left + c.clientLeft + p.x * c.clientWidth / m.widthPx, r.top + c.clientTop + p.y * c.clientHeight / m.heightPx]; }}"""))


@pytest.mark.slow
def test_map_fills_a_large_screen_sharply_and_clicks_hover_zoom_and_drawing_land_where_drawn(tmp_path):
    from PIL import Image
    from test_service_ui import _count, _wait

    with _page(tmp_path, 2560, 1440, dpr=2) as (page, errors):
        page.wait_for_timeout(300)  # laid out
        b = _boxes(page)
        assert b["map"]["width"] >= 0.55 * 2560 or b["map"]["height"] >= 0.55 * 1440, b
        assert b["map"]["bottom"] <= 1440, b  # all of it in the window
        assert b["canvas"] == [2 * b["css"][0], 2 * b["css"][1]], b  # a canvas pixel per device pixel: sharp
        assert b["list"]["left"] >= b["map"]["right"] - 1 and b["list"]["width"] >= 440, b  # the list beside it
        assert b["list"]["top"] < b["map"]["bottom"], b
        assert b["scroll"] <= b["view"], b

        # the dot is drawn where the map says the event is, and a pointer there finds it
        x, y = _marker_xy(page, "ev00001")
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot(scale="css"))).convert("RGB"))
        assert _count(shot, HIGH_RGB, x, y, r=4) >= 12, (x, y)
        page.mouse.move(x, y)
        _wait(page, "document.getElementById('map-hover').textContent.startsWith('event vessel_in_zone')", 5)
        page.mouse.click(x, y)
        _wait(page, "window.seawatch.state.selected === 'ev00001' && !document.getElementById('detail').hidden", 5)
        # the detail opens beside the map, under the list, in sight: nothing scrolls, the map stays where it was
        page.wait_for_timeout(500)  # a smooth scroll would have begun
        d = page.evaluate("""() => { const r = document.getElementById('detail').getBoundingClientRect();
            return {left: r.left, top: r.top, scrollY: window.scrollY}; }""")
        assert d["left"] >= b["map"]["right"] - 1 and d["top"] < 1440 - 160 and d["scrollY"] == 0, (d, b)

        # the wheel zooms about the pointer: the event stays under it
        x, y = _marker_xy(page, "ev00002")
        page.mouse.move(x, y)
        zoom = page.evaluate("window.seawatch.map.view.zoom")
        page.mouse.wheel(0, -100)
        _wait(page, f"window.seawatch.map.view.zoom > {zoom}", 5)
        x2, y2 = _marker_xy(page, "ev00002")
        assert math.hypot(x2 - x, y2 - y) < 1.5, (x, y, x2, y2)

        # a circle drawn from the event's dot (the east-most one: its edge 80 px west of it): centred on the event, its
        # radius as far as the second click
        page.click("#area-circle")
        x, y = _marker_xy(page, "ev00002")
        page.mouse.click(x, y)
        page.mouse.click(x - 80, y)
        _wait(page, "!!window.seawatch.map.area", 5)
        area = page.evaluate("window.seawatch.map.area")
        mpp = page.evaluate(f"window.seawatch.map.metresPerPx({PLACES['ev00002'][0]})")
        lat, lon = PLACES["ev00002"]
        off_m = math.hypot((area["lat"] - lat) * 111_200, (area["lon"] - lon) * 111_200 * math.cos(math.radians(lat)))
        assert off_m < 2 * mpp, (area, mpp)
        assert abs(area["radius_m"] - 80 * mpp) < 3 * mpp, (area, mpp)

        # a 4K screen: larger still; the window made smaller again: the laptop's map, then the phone's
        page.set_viewport_size({"width": 3840, "height": 2160})
        _wait(page, f"document.getElementById('map').clientWidth > {b['css'][0]}", 5)
        big = _boxes(page)
        assert big["map"]["width"] >= 0.55 * 3840 or big["map"]["height"] >= 0.55 * 2160, big
        assert big["list"]["left"] >= big["map"]["right"] - 1 and big["scroll"] <= big["view"], big
        page.set_viewport_size({"width": 1280, "height": 800})
        _wait(page, "document.getElementById('map').clientWidth === 720", 5)
        lap = _boxes(page)
        assert lap["css"] == [720, 520] and lap["canvas"] == [1440, 1040], lap  # as before, sharp
        assert lap["list"]["left"] >= lap["map"]["right"] - 1 and lap["list"]["width"] >= 440, lap
        assert lap["scroll"] <= lap["view"], lap
        page.set_viewport_size({"width": 390, "height": 844})
        _wait(page, "document.getElementById('map').getBoundingClientRect().right <= 390", 5)
        phone = _boxes(page)
        assert phone["scroll"] <= phone["view"], phone
        assert phone["map"]["width"] >= 300 and phone["list"]["top"] >= phone["map"]["bottom"] - 1, phone
        assert phone["canvas"] == [2 * phone["css"][0], 2 * phone["css"][1]], phone
        # and a click there still finds its event
        page.evaluate("window.seawatch.closeDetail(); window.seawatch.map.fitAll()")
        page.wait_for_timeout(200)
        page.evaluate("document.getElementById('map').scrollIntoView({block: 'start'})")
        x, y = _marker_xy(page, "ev00002")
        page.mouse.click(x, y)
        _wait(page, "window.seawatch.state.selected === 'ev00002'", 5)


@pytest.mark.slow
@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_laptop_and_phone_layouts_as_before(tmp_path, width, height):
    """Opened at a laptop's or a phone's size: the laptop keeps the 720 x 520 map with the list beside it, the phone a
    map as wide as the screen with the list below; neither scrolls sideways."""
    with _page(tmp_path, width, height) as (page, errors):
        page.wait_for_timeout(200)
        b = _boxes(page)
        assert b["scroll"] <= b["view"], b
        if width == 1280:
            assert b["css"] == [720, 520], b
            assert b["list"]["left"] >= b["map"]["right"] - 1, b
        else:
            assert b["map"]["left"] >= 0 and b["map"]["right"] <= width, b
            assert b["map"]["width"] >= width - 40, b
            assert b["list"]["top"] >= b["map"]["bottom"] - 1, b


@pytest.mark.slow
def test_camera_wall_fills_a_4k_screen(tmp_path):
    from test_service_ui import _wait

    with _page(tmp_path, 3840, 2160, page="wall") as (page, errors):
        _wait(page, "document.querySelectorAll('#wall .tile').length === 2", 15)
        r = page.evaluate("""() => { const w = document.getElementById('wall').getBoundingClientRect();
            const tiles = [...document.querySelectorAll('#wall .tile')].map((t) => t.getBoundingClientRect());
            return {left: w.left, right: w.right, bottom: w.bottom, area: tiles.reduce((s, t) => s + t.width * t.height, 0),
                    wallArea: w.width * w.height}; }""")
        assert r["left"] <= 1 and r["right"] >= 3839 and r["bottom"] >= 2159, r
        assert r["area"] >= 0.9 * r["wallArea"], r
