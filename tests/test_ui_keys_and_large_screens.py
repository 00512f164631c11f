"""The operator UI at a control-room keyboard (Chromium): Esc closes the topmost panel (the recordings, the live view,
the event's detail, in the order they were opened) and gives the focus back to what opened it, but never while the
operator types in a field nor while an area is being drawn on the map."""

from __future__ import annotations

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
