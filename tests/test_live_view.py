"""The live view of a camera: ``GET /api/sources/{id}/latest.jpg`` (its newest analysed picture with what is tracked
in it) and the UI's "Live" panel, from a stand-in frame, through the real service on a file played as a camera, and
in headless Chromium."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from fastapi.testclient import TestClient  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.vision.detections import Detections  # noqa: E402
from seawatch.vision.events import GeoPosition  # noqa: E402

KEY = "live-view-key-0123456789abcdef"
S = 1_000_000_000


def _settings(tmp_path, **over):
    return load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "wall", "role": "operator", "key_sha256": hash_api_key(KEY)}]},
        "sources": [{"id": "quay", "url": "rtsp://cam/quay"}, {"id": "gate", "url": "rtsp://cam/gate"}], **over})


def _decode(data: bytes) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return img


def _frame(capture_ns: int):
    image = np.full((360, 640, 3), 90, np.uint8)
    tracked = Detections(np.array([[100, 80, 300, 200]], np.float32), np.array([0.87], np.float32),
                         np.array([0], np.int32), ("vessel",), track_id=np.array([7]))
    return capture_ns, image, tracked


def test_latest_picture_with_boxes_scaled_cached_and_refused_where_there_is_none(tmp_path, monkeypatch):
    import seawatch.service.live_view as live_view

    frames = {"quay": _frame(1_800_000_000 * S)}
    encodes = []
    real_encode = live_view._encode
    monkeypatch.setattr(live_view, "_encode", lambda *a: encodes.append(a[2]) or real_encode(*a))
    app = create_app(_settings(tmp_path), latest_frame=frames.get)
    h = {"X-API-Key": KEY}
    with TestClient(app) as client:
        r = client.get("/api/sources/quay/latest.jpg", headers=h)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.headers["x-capture-time-ns"] == str(1_800_000_000 * S) and r.headers["cache-control"] == "no-store"
        boxed = _decode(r.content)
        assert boxed.shape == (360, 640, 3)
        plain = _decode(client.get("/api/sources/quay/latest.jpg", params={"boxes": "false"}, headers=h).content)
        # the box's left edge (x 100) is drawn on the boxed picture only; inside the box, clear of its lines, both are
        # the same grey frame (but for JPEG's colour blur)
        assert np.abs(boxed[100:190, 99:102].astype(int) - plain[100:190, 99:102].astype(int)).mean() > 30
        assert np.abs(boxed[104:184, 120:280].astype(int) - plain[104:184, 120:280].astype(int)).mean() < 3
        assert np.abs(plain.astype(int) - 90).max() < 8
        small = _decode(client.get("/api/sources/quay/latest.jpg", params={"width": 320}, headers=h).content)
        assert small.shape == (180, 320, 3)
        n = len(encodes)
        for _ in range(3):  # several viewers of one frame: encoded once
            assert client.get("/api/sources/quay/latest.jpg", params={"width": 320}, headers=h).status_code == 200
        assert len(encodes) == n
        frames["quay"] = _frame(1_800_000_001 * S)  # the next analysed frame: encoded anew
        r = client.get("/api/sources/quay/latest.jpg", params={"width": 320}, headers=h)
        assert r.headers["x-capture-time-ns"] == str(1_800_000_001 * S) and len(encodes) == n + 1

        none_yet = client.get("/api/sources/gate/latest.jpg", headers=h)
        assert none_yet.status_code == 404 and "no analysed picture yet" in none_yet.json()["error"]["message"]
        assert client.get("/api/sources/nope/latest.jpg", headers=h).status_code == 404
        assert client.get("/api/sources/quay/latest.jpg").status_code == 401
        for bad in ({"width": 10}, {"width": 100000}, {"width": "wide"}, {"boxes": "perhaps"}):
            r = client.get("/api/sources/quay/latest.jpg", params=bad, headers=h)
            assert r.status_code == 422 and set(r.json()) == {"error"}, (bad, r.text)


def test_the_service_shows_each_cameras_newest_analysed_picture(tmp_path):
    """The real service on a file played as a camera: latest.jpg follows the analysis (its capture time moves on),
    and the stand-in detector's box is drawn where it found it."""
    from test_service_serve import KEY as SERVE_KEY
    from test_service_serve import file_camera_service

    with file_camera_service(tmp_path) as svc:
        with TestClient(svc.app) as client:
            h = {"X-API-Key": SERVE_KEY}
            deadline = time.monotonic() + 20
            while (r := client.get("/api/sources/quay-1/latest.jpg", headers=h)).status_code == 404:
                assert time.monotonic() < deadline, r.text
                time.sleep(0.1)
            first_ns = int(r.headers["x-capture-time-ns"])
            time.sleep(1.5)
            for _ in range(20):  # the boxed and the plain picture of one frame (analysis moves on at 5 fps)
                r2 = client.get("/api/sources/quay-1/latest.jpg", headers=h)
                r3 = client.get("/api/sources/quay-1/latest.jpg", params={"boxes": "false"}, headers=h)
                if r2.headers["x-capture-time-ns"] == r3.headers["x-capture-time-ns"]:
                    break
            img, plain = _decode(r2.content), _decode(r3.content)
    assert int(r2.headers["x-capture-time-ns"]) - first_ns >= 1 * S
    assert r2.headers["x-capture-time-ns"] == r3.headers["x-capture-time-ns"]
    assert img.shape == (120, 160, 3)
    # the stub's fire box (40, 30)-(120, 100): its left edge drawn over the video's noise; inside it the same frame
    assert np.abs(img[50:95, 39:42].astype(int) - plain[50:95, 39:42].astype(int)).mean() > 20
    assert np.abs(img[40:90, 56:104].astype(int) - plain[40:90, 56:104].astype(int)).mean() < 6


def _ui(p, port: int):
    """Headless Chromium on the UI, logged in with the wall key: (browser, page, the page's script errors)."""
    from test_service_ui import _browser, open_page

    browser = _browser(p)
    return (browser, *open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}"))


@pytest.mark.slow
def test_ui_live_button_shows_the_camera_and_refreshes(tmp_path):
    """Chromium: the sources table's "Live" button opens the camera's picture, which is fetched again every second
    (the caption's capture time moves on); Close stops it. An event's "Live view" opens its camera's, and the map
    hands a camera click to the same view."""
    from conftest import serve_in_thread
    from test_service_ui import _playwright, _wait

    frames = {"quay": _frame(time.time_ns())}

    def latest(sid):
        got = frames.get(sid)
        if got is not None:  # a new frame each call: a camera analysed continuously
            frames[sid] = _frame(time.time_ns())
        return got

    gate_view = {"camera": {"width_px": 640, "height_px": 360, "hfov_deg": 60},
                 "surveyed": {"lat_deg": 53.55, "lon_deg": 8.58, "alt_m": 20.0, "pan_deg": 90.0, "tilt_deg": -10.0}}
    cfg = _settings(tmp_path, sources=[{"id": "quay", "url": "rtsp://cam/quay"},
                                       {"id": "gate", "url": "rtsp://cam/gate", "calibration": gate_view}])
    app = create_app(cfg, latest_frame=latest,
                     source_status=lambda: [{"source_id": "quay", "state": "online", "frames_decoded": 10},
                                            {"source_id": "gate", "state": "online", "frames_decoded": 10}])
    with serve_in_thread(app) as port:
        from test_service_store import make_event

        app.state.store.put(make_event(0, type="vessel_in_zone", source_id="quay"))
        with _playwright() as p:
            browser, page, errors = _ui(p, port)
            page.wait_for_selector('#sources tr[data-id="quay"] .live-act')
            page.click('#sources tr[data-id="quay"] .live-act')
            _wait(page, "document.getElementById('lv-img').naturalWidth === 640", 10)
            assert page.text_content("#lv-title") == "Live: quay"
            first = page.text_content("#lv-note")
            assert first.startswith("captured ")
            _wait(page, f"document.getElementById('lv-note').textContent !== {first!r}", 10)  # fetched again
            page.click('#sources tr[data-id="gate"] .live-act')  # another camera: no picture yet
            _wait(page, "document.getElementById('lv-note').textContent === 'no analysed picture yet'", 10)
            assert page.text_content("#lv-title") == "Live: gate"
            page.click("#lv-close")
            assert page.is_hidden("#live-view")
            # from an event's detail: what its camera sees now
            page.click('#events tr:has-text("vessel_in_zone")')
            page.wait_for_selector("#d-live:not([hidden])")
            page.click("#d-live")
            _wait(page, "document.getElementById('lv-title').textContent === 'Live: quay' && "
                        "document.getElementById('lv-img').naturalWidth === 640", 10)
            page.click("#lv-close")
            # a click on the camera's marker on the map (not on an event): its live view
            x, y = page.evaluate("""() => {
                const m = window.seawatch.map, cam = m.data.cameras.find((c) => c.source_id === 'gate');
                const p = m.project(cam.view.lat_deg, cam.view.lon_deg), r = m.c.getBoundingClientRect();
                return [r.left + p.x * r.width / m.c.width, r.top + p.y * r.height / m.c.height]; }""")
            page.mouse.click(x, y)
            _wait(page, "document.getElementById('lv-title').textContent === 'Live: gate'", 5)
            assert "click: live view" in page.text_content("#map-hover")
            page.click("#lv-close")

            # an event placed a few pixels from the camera (what a camera's own events look like at a port's
            # zoom): a click on the camera still opens the live view, a click on the event its detail; with the
            # events layer off the (invisible) event cannot be clicked
            app.state.store.put(make_event(1, type="fire", source_id="gate", geo=GeoPosition(53.55, 8.58004, 5.0, 5.0)))
            page.evaluate("window.seawatch.search()")
            _wait(page, "window.seawatch.map.data.events.some((e) => e.id === 'ev00001')", 10)
            spots = """(id) => {
                const m = window.seawatch.map, r = m.c.getBoundingClientRect(), px = (lat, lon) => {
                    const p = m.project(lat, lon); return [r.left + p.x * r.width / m.c.width, r.top + p.y * r.height / m.c.height]; };
                const cam = m.data.cameras.find((c) => c.source_id === 'gate'), ev = m.data.events.find((e) => e.id === id);
                return {cam: px(cam.view.lat_deg, cam.view.lon_deg), ev: px(ev.geo.lat_deg, ev.geo.lon_deg)}; }"""
            xy = page.evaluate(spots, "ev00001")
            gap_px = ((xy["cam"][0] - xy["ev"][0]) ** 2 + (xy["cam"][1] - xy["ev"][1]) ** 2) ** 0.5
            assert 1 < gap_px < 10, xy  # both within the 10 px a click reaches
            page.mouse.click(*xy["cam"])
            _wait(page, "document.getElementById('lv-title').textContent === 'Live: gate' && "
                        "!document.getElementById('live-view').hidden", 5)
            assert "click: live view" in page.text_content("#map-hover")
            page.click("#lv-close")
            page.mouse.click(*xy["ev"])
            _wait(page, "window.seawatch.state.selected === 'ev00001'", 5)
            assert page.is_hidden("#live-view")
            page.evaluate("window.seawatch.state.selected = null")
            page.uncheck('#map-bar input[data-layer="events"]')
            page.mouse.move(*xy["ev"])
            assert "event" not in page.text_content("#map-hover")
            page.mouse.click(*xy["ev"])
            page.wait_for_timeout(300)
            assert page.evaluate("window.seawatch.state.selected") is None
            assert not errors, errors
            browser.close()


@pytest.mark.slow
def test_ui_alarm_sounds_for_new_high_and_critical_incidents(tmp_path):
    """Chromium: a new high or critical incident on the live feed sets off the alarm (two tones for critical), not a
    low one, not an update; "alarm sound" off still lists it, silently, and is remembered."""
    from conftest import serve_in_thread
    from test_service_store import make_event
    from test_service_ui import _playwright, _wait

    from seawatch.service.live import LiveHub

    live = LiveHub()
    app = create_app(_settings(tmp_path), live=live)
    with serve_in_thread(app) as port:
        with _playwright() as p:
            browser, page, errors = _ui(p, port)
            _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
            page.click("#status-bar")  # a click on the page: browsers allow sound from then on
            _wait(page, "window.seawatch.alarm.ctx && window.seawatch.alarm.ctx.state === 'running'", 5)
            live.publish_event(make_event(0, severity="high", source_id="quay"))
            live.publish_event(make_event(1, severity="low", source_id="quay"))
            live.publish_event(make_event(0, severity="high", phase="update", seq=1, source_id="quay"))
            live.publish_event(make_event(2, severity="critical", type="smoke", source_id="gate"))
            _wait(page, "window.__alarms.length >= 2", 5)
            time.sleep(0.5)  # nothing more comes
            assert page.evaluate("window.__alarms") == [{"id": "ev00000", "severity": "high", "sound": True},
                                                        {"id": "ev00002", "severity": "critical", "sound": True}]
            page.click("#alarm-on")  # off
            live.publish_event(make_event(3, severity="critical", source_id="gate"))
            _wait(page, "window.__alarms.length === 3", 5)
            assert page.evaluate("window.__alarms[2]") == {"id": "ev00003", "severity": "critical", "sound": False}
            page.reload()
            page.wait_for_selector("#alarm-on", state="attached")
            assert page.evaluate("document.getElementById('alarm-on').checked") is False  # remembered
            assert not errors, errors
            browser.close()


# a stand-in for the browser's Notification (headless Chromium shows none): records each one, with the permission
# the test sets; document.hasFocus() follows window.__focused, so "the tab is not looked at" can be set
_FAKE_NOTIFICATIONS = """
window.__notes = []; window.__focused = true; document.hasFocus = () => window.__focused;
class FakeNotification {
  constructor(title, opts) { this.title = title; this.opts = opts; window.__notes.push(this); }
  close() { this.closed = true; }
}
FakeNotification.permission = localStorage.getItem("test-permission") || "default";
FakeNotification.requestPermission = async () => { FakeNotification.permission = "granted"; return "granted"; };
window.Notification = FakeNotification;
"""


@pytest.mark.slow
def test_ui_desktop_notifications_for_new_incidents_while_the_tab_is_not_looked_at(tmp_path):
    """Chromium: with "desktop notifications" on (the browser asked once), a new high or critical incident raises a
    notification while the page has no focus, not while it is looked at, not for a low one; a click on it opens the
    incident. Off by default, remembered, and disabled when the browser blocks notifications."""
    from conftest import serve_in_thread
    from test_service_store import make_event
    from test_service_ui import _browser, _playwright, _wait

    from seawatch.service.live import LiveHub

    live = LiveHub()
    app = create_app(_settings(tmp_path), live=live)
    with serve_in_thread(app) as port, _playwright() as p:
        browser = _browser(p)
        ctx = browser.new_context()
        ctx.add_init_script(_FAKE_NOTIFICATIONS)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/#key={KEY}")
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        assert page.evaluate("document.getElementById('notify-on').checked") is False  # off until asked for
        live.publish_event(make_event(0, severity="high", source_id="quay"))
        _wait(page, "window.__alarms.length === 1", 5)
        assert page.evaluate("window.__notes.length") == 0
        page.click("#notify-on")  # the browser asks; the user allows
        _wait(page, "localStorage.getItem('seawatch-notify') === 'on'", 5)
        live.publish_event(make_event(1, severity="critical", type="fire", source_id="quay", zone_id="berth-2",
                                      attributes={"vessel_name": "NOORD\u202eZEE"}))
        _wait(page, "window.__alarms.length === 2", 5)
        assert page.evaluate("window.__notes.length") == 0  # looked at: the list and the tone are enough
        page.evaluate("window.__focused = false")  # the operator is in another window
        live.publish_event(make_event(2, severity="low", source_id="quay"))
        live.publish_event(make_event(3, severity="critical", type="fire", source_id="quay", zone_id="berth-2",
                                      attributes={"vessel_name": "NOORD\u202eZEE"}))
        _wait(page, "window.__notes.length === 1", 5)
        note = page.evaluate("({title: window.__notes[0].title, body: window.__notes[0].opts.body, "
                             "tag: window.__notes[0].opts.tag, sticky: window.__notes[0].opts.requireInteraction})")
        assert note["title"] == "Seawatch: CRITICAL fire" and note["tag"] == "ev00003" and note["sticky"] is True
        assert note["body"].startswith("quay · zone berth-2 · NOORD") and "\u202e" not in note["body"], note
        live.publish_event(make_event(4, severity="high", source_id="gate"))
        _wait(page, "window.__notes.length === 2", 5)
        assert page.evaluate("window.__notes[1].opts.requireInteraction") is False
        page.evaluate("window.__notes[0].onclick()")  # a click on the first: its incident opens
        _wait(page, "window.seawatch.state.selected === 'ev00003'", 5)
        assert page.evaluate("window.__notes[0].closed") is True
        page.evaluate("localStorage.setItem('test-permission', 'granted')")
        page.reload()
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        assert page.evaluate("document.getElementById('notify-on').checked") is True  # remembered
        page.evaluate("localStorage.setItem('test-permission', 'denied')")
        page.reload()
        page.wait_for_selector("#notify-on", state="attached")
        assert page.evaluate("document.getElementById('notify-on').disabled") is True
        assert page.evaluate("document.getElementById('notify-on').checked") is False
        assert not errors, errors
        browser.close()
