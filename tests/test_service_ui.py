"""The operator web UI in headless Chromium (Playwright with Debian's chromium, RECIPES.md section 7) against a real
service: a surveyed camera (a generated video; a stand-in detector the test switches on and off), a simulated drone
flying a patrol, stored events. The page logs in, lists and filters events, draws markers, the camera, the drone and
the grid on the map (checked in screenshots at the projected positions), plays a clip, acknowledges an event (checked
through the API), receives a live event and shows the drone moving."""

from __future__ import annotations

import json
import math
import shutil
import socket
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import missing, serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key, hash_password  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.store import EventQuery  # noqa: E402
from seawatch.vision.detections import Detections  # noqa: E402
from seawatch.vision.events import ClipRef, GeoPosition  # noqa: E402
from test_service_serve import write_video  # noqa: E402
from test_service_store import S, T0, make_event  # noqa: E402
from conftest import free_port as _free_port  # noqa: E402

KEY = "ui-test-key-0123456789abcdef"
PASSWORD = "harbour-watch-pw-1"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--autoplay-policy=no-user-gesture-required"]
CAMERA = {"lat_deg": 52.8420, "lon_deg": 5.7000, "alt_m": 12.0, "pan_deg": 150.0, "tilt_deg": -25.0}
SEV_RGB = {"critical": (0xD7, 0x19, 0x1C), "low": (0x2C, 0x7B, 0xB6)}
DRONE_RGB = (0xE7, 0x29, 0x8A)
CAMERA_RGB = (0x6A, 0x3D, 0x9A)
GRID_RGB = (0x9F, 0xB3, 0xC4)
COAST_RGB = (0x7A, 0x8B, 0x6A)
AIS_RGB = (0x1B, 0x9E, 0x77)


class SwitchableFire:
    """A stand-in detector: a confident fire box in every frame while ``on`` (the UI, not the model, is under test)."""

    def __init__(self) -> None:
        self.on = True

    def detect(self, images):
        if self.on:
            box, conf = np.array([[40, 60, 120, 110]], np.float32), np.array([0.9], np.float32)
        else:
            box, conf = np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        return [Detections(box, conf, np.zeros(len(conf), np.int32), ("fire",), model="stub") for _ in images]


def settings(tmp_path: Path, video: Path | None = None, **over):
    data = {
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"users": [{"name": "ops", "role": "reviewer", "password_hash": hash_password(PASSWORD)}],
                 "api_keys": [{"name": "wall", "role": "operator", "key_sha256": hash_api_key(KEY)}]},
        "drones": [{"id": "patrol-1", "connection": f"udp:127.0.0.1:{_free_port(socket.SOCK_DGRAM)}",
                    "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 70},
                    "routes": {"harbour": {"type": "perimeter", "alt_m": 30, "polygon_lonlat": [
                        [5.699, 52.8385], [5.707, 52.8385], [5.707, 52.8425], [5.699, 52.8425]]}}}],
        "fleet": [{"drone": "patrol-1", "sim": {"speed": 4.0}, "patrol": "harbour"}],
    }
    if video is not None:
        data["sources"] = [{"id": "quay-cam", "url": str(video), "models": ["stub"], "analysis_fps": 5,
                            "calibration": {"camera": {"width_px": 160, "height_px": 120, "hfov_deg": 60}, "surveyed": CAMERA},
                            "water": [[[0, 80], [160, 80], [160, 120], [0, 120]]],
                            "ignore": [{"polygon_px": [[130, 0], [160, 0], [160, 30], [130, 30]], "labels": ["vessel"],
                                        "note": "buoy"}]}]
        data["zones"] = [{"id": "quay", "source": "quay-cam", "polygon_px": [[0, 0], [160, 0], [160, 120], [0, 120]], "rules": [
            {"type": "fire_smoke", "labels": ["fire"], "window_frames": 3, "min_hits": 2, "min_duration_s": 0.5,
             "static_min_iou": None, "clear_after_s": 1.0, "cooldown_s": 0.0}]}]
    data.update(over)
    return load_config(data=data)


@pytest.fixture
def live_service(tmp_path, shared_media):
    """A running Service (camera + simulated drone + the Lemmer AIS log) behind uvicorn on a free port, with three
    stored events."""
    from seawatch.service.runner import Service

    video = tmp_path / "quay.mp4"
    write_video(video, seconds=4.0)
    det = SwitchableFire()
    ais = str(shared_media / "F_ais" / "ais_gpsd_lemmer_nl_ais-nmea.log")
    svc = Service(settings(tmp_path, video, ais=[ais]), detectors={"stub": det}, file_pace="realtime", loop_files=True).start()
    try:
        with serve_in_thread(svc.app) as port:
            svc.store.put(make_event(0, type="vessel_in_zone", severity="critical", source_id="drone-cam",
                                     geo=GeoPosition(52.8400, 5.7060, 40.0, 20.0, 30.0), attributes={"vessel_name": "Noordzee Express"}))
            svc.store.put(make_event(1, type="smoke", severity="low", source_id="quay-cam", geo=GeoPosition(52.8392, 5.7010, 15.0, 15.0)))
            svc.store.put(make_event(2, type="no_hard_hat", severity="medium", source_id="yard-cam"))
            yield svc, det, f"http://127.0.0.1:{port}"
    finally:
        svc.stop()


def _browser(p):
    exe = shutil.which("chromium")
    if exe is None:
        missing("Debian's chromium is not installed (bash scripts/setup.sh)")
    return p.chromium.launch(executable_path=exe, headless=True, args=ARGS)


def open_page(browser, url: str, width: int = 1280, height: int = 900, **page_kw):
    """A new page of ``browser`` at ``url``, collecting the page's script errors: ``(page, errors)``."""
    page = browser.new_page(viewport={"width": width, "height": height}, **page_kw)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page, errors


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    return sync_playwright()


def _count(img: np.ndarray, rgb, x: float, y: float, r: int = 12, tol: int = 14) -> int:
    """Pixels of colour ``rgb`` within ``r`` px of (x, y) in an RGB screenshot."""
    y0, y1, x0, x1 = max(0, int(y) - r), int(y) + r + 1, max(0, int(x) - r), int(x) + r + 1
    patch = img[y0:y1, x0:x1].astype(int)
    return int((np.abs(patch - np.array(rgb)).max(axis=2) <= tol).sum())


def _shot(page) -> np.ndarray:
    import cv2

    png = page.locator("#map").screenshot()
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


DRONE_ON_MAP = """(() => { const m = window.seawatch.map, d = m.data.drones[0];
    return d && d.lat_deg !== null ? {lat: d.lat_deg, lon: d.lon_deg, p: m.project(d.lat_deg, d.lon_deg)} : null; })()"""


def _drone_pixels(page) -> tuple[int, dict]:
    """Drone-coloured pixels around the drone's projected position in a map screenshot taken while the map showed
    that position (the drone moves between live updates: retried until a screenshot falls between two)."""
    for _ in range(10):
        before = page.evaluate(DRONE_ON_MAP)
        page.wait_for_timeout(50)  # one animation frame: the redraw of the last update is on the canvas
        img = _shot(page)
        if before is not None and page.evaluate(DRONE_ON_MAP) == before:
            return _count(img, DRONE_RGB, before["p"]["x"], before["p"]["y"], r=14), before
    raise AssertionError("the drone position changed during every screenshot")


def _wait(page, js: str, timeout_s: float = 20.0):
    """Poll a JS expression until it is truthy (page.evaluate: Playwright's wait_for_function evaluates strings in the
    page, which the UI's content security policy rightly forbids)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if page.evaluate(js):
                return
        except Exception as exc:  # noqa: BLE001 - e.g. window.seawatch not there yet
            last = exc
        else:
            last = None
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for: {js}" + (f" ({last})" if last else ""))
        time.sleep(0.1)


def test_ui_shell_is_public_but_holds_no_data(tmp_path):
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "d")},
                            "service": {"map_tiles_url": "https://tiles.example.org/{z}/{x}/{y}.png"}})
    with TestClient(create_app(cfg)) as c:
        r = c.get("/")
        csp = r.headers["content-security-policy"]
        assert r.status_code == 200 and "<canvas" in r.text and "script-src 'self'" in csp
        assert "img-src 'self' blob: data: https://tiles.example.org;" in csp  # the tile server, nothing else
        for name in ("app.js", "map.js"):
            assert c.get(f"/ui/{name}").headers["content-type"].startswith("text/javascript")
        for bad in ("/ui/../app.py", "/ui/%2e%2e%2fapp.py", "/ui/app.py", "/ui/secret"):
            assert c.get(bad).status_code == 404, bad
        assert c.get("/api/events").status_code == 401 and c.get("/api/map").status_code == 401


def test_ui_operator_workflow_in_chromium(live_service, tmp_path):
    svc, det, base = live_service
    with _playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")

        # ---- log in (a wrong password is refused with a message, the right one opens the main view)
        page.fill("#login-form input[name=username]", "ops")
        page.fill("#login-form input[name=password]", "wrong-password")
        page.click("#login-form button")
        _wait(page, "document.getElementById('login-error').textContent.includes('wrong')")
        assert page.is_hidden("#main")
        page.fill("#login-form input[name=password]", PASSWORD)
        page.click("#login-form button")
        page.wait_for_selector("#main", state="visible")
        assert page.text_content("#who") == "ops (reviewer)"
        _wait(page, "document.getElementById('live').textContent === 'live: on'")

        # ---- the event list: the stored events and the live fire event of the camera
        for i in range(3):
            page.wait_for_selector(f'#events tr[data-id="ev0000{i}"]')
        _wait(page, "window.seawatch.state.events.some(e => e.type === 'fire' && e.source_id === 'quay-cam')")
        # ---- an open incident: snapshot shown, no clip player yet (its window is not closed)
        open_id = page.evaluate("window.seawatch.state.events.find(e => e.type === 'fire' && e.phase !== 'end').id")
        page.click(f'#events tr[data-id="{open_id}"]')
        _wait(page, f"document.getElementById('detail').dataset.id === '{open_id}' && document.getElementById('d-snapshot').naturalWidth > 0")
        assert page.evaluate("getComputedStyle(document.getElementById('d-clip')).display") == "none"
        assert "still open" in page.text_content("#d-clip-note")
        # ---- over the snapshot: the camera's zone (the event's, highlighted), water and ignore area, and the fire's
        # box, in the frame's pixels (160 x 120, shown at that size)
        _wait(page, "document.querySelectorAll('#d-overlay polygon').length === 3 && document.querySelector('#d-overlay rect')")
        areas = page.evaluate("""[...document.querySelectorAll('#d-overlay polygon')].map(p =>
            ({kind: p.dataset.kind, cls: p.getAttribute('class'), points: p.getAttribute('points')}))""")
        assert {a["kind"]: a["cls"] for a in areas} == {"zone": "zone hit", "water": "water", "ignore": "ignore"}
        assert next(a for a in areas if a["kind"] == "ignore")["points"] == "130,0 160,0 160,30 130,30"
        assert page.evaluate("document.getElementById('d-overlay').getAttribute('viewBox')") == "0 0 160 120"
        rect = page.evaluate("(r => [r.getAttribute('x'), r.getAttribute('y'), r.getAttribute('width'), "
                             "r.getAttribute('height')])(document.querySelector('#d-overlay rect'))")
        assert [float(v) for v in rect] == [40, 60, 80, 50]
        import cv2

        png = page.locator("#d-view").screenshot()
        (tmp_path / "snapshot_overlay.png").write_bytes(png)
        view = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        ix, iy = page.evaluate("(r => [r.left, r.top])(document.getElementById('d-snapshot').getBoundingClientRect())")
        vx, vy = page.evaluate("(r => [r.left, r.top])(document.getElementById('d-view').getBoundingClientRect())")
        top_edge = (ix - vx + 80, iy - vy + 60)  # the middle of the box's top edge, on screen
        assert _count(view, (255, 0, 255), *top_edge, r=3, tol=40) >= 3
        assert _count(view, (255, 0, 255), ix - vx + 80, iy - vy + 85, r=3, tol=40) == 0  # the box is not filled
        page.click("#d-areas")  # areas off: the box stays
        _wait(page, "document.querySelectorAll('#d-overlay polygon').length === 0 && document.querySelector('#d-overlay rect')")
        page.click("#d-areas")
        _wait(page, "document.querySelectorAll('#d-overlay polygon').length === 3")
        # ---- the drone is linked and flying its patrol; the sources table shows it
        _wait(page, "window.seawatch.state.sources.some(s => s.kind === 'drone' && s.state === 'connected' && s.lat_deg !== null)", 30)
        assert "drone" in page.text_content("#sources")

        # ---- filter by type: only fire rows remain; then by source
        page.select_option("#filters select[name=type]", "fire")
        page.click("#filters button")
        _wait(page, "[...document.querySelectorAll('#events tbody tr')].length >= 1 && "
                    "[...document.querySelectorAll('#events tbody tr td:nth-child(2)')].every(td => td.textContent === 'fire')")
        page.select_option("#filters select[name=type]", "")
        page.select_option("#filters select[name=source]", "quay-cam")
        page.click("#filters button")
        _wait(page, "[...document.querySelectorAll('#events tbody tr td:nth-child(4)')].every(td => td.textContent === 'quay-cam') && "
                    "!document.querySelector('#events tr[data-id=\"ev00000\"]')")
        # ---- a drone as a whole: its own incidents (here a lost link) and its camera's events
        svc.store.put(make_event(9, type="drone_link_lost", severity="critical", source_id="patrol-1",
                                 geo=GeoPosition(52.8410, 5.7040, 10.0, 10.0)))
        page.select_option("#filters select[name=source]", "drone:patrol-1")
        page.click("#filters button")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 1 && "
                    "!!document.querySelector('#events tr[data-id=\"ev00009\"]')")
        page.select_option("#filters select[name=source]", "")
        page.fill("#filters input[name=start_from]", "2099-01-01T00:00:00")  # a time range with nothing in it
        page.click("#filters button")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 0 && document.getElementById('count').textContent === '0 event(s)'")
        page.fill("#filters input[name=start_from]", "")
        page.click("#filters button")
        page.wait_for_selector('#events tr[data-id="ev00000"]')

        # ---- the map: event markers in their severity colour, the camera, the drone, the grid, at projected positions
        page.click("#map-fit")
        page.wait_for_timeout(300)
        proj = page.evaluate("""() => { const m = window.seawatch.map;
            return {crit: m.project(52.8400, 5.7060), low: m.project(52.8392, 5.7010), cam: m.project(%f, %f)}; }"""
                             % (CAMERA["lat_deg"], CAMERA["lon_deg"]))
        img = _shot(page)
        (tmp_path / "map.png").write_bytes(page.locator("#map").screenshot())
        assert _count(img, SEV_RGB["critical"], proj["crit"]["x"], proj["crit"]["y"], r=6) > 40
        assert _count(img, SEV_RGB["low"], proj["low"]["x"], proj["low"]["y"], r=6) > 40
        assert _count(img, SEV_RGB["critical"], proj["low"]["x"], proj["low"]["y"], r=6) == 0  # colours at the right place
        assert _count(img, CAMERA_RGB, proj["cam"]["x"], proj["cam"]["y"], r=6) > 50
        n_drone, first = _drone_pixels(page)
        assert n_drone > 20
        # hovering a marker names it: the critical event, then an AIS vessel (drawn in its colour)
        box = page.locator("#map").bounding_box()
        page.mouse.move(box["x"] + 1 + proj["crit"]["x"], box["y"] + 1 + proj["crit"]["y"])
        _wait(page, "document.getElementById('map-hover').textContent.startsWith('event vessel_in_zone (critical)')", 5)
        _wait(page, "window.seawatch.state.vessels.filter(v => v.lat_deg !== null).length >= 10")
        page.wait_for_timeout(100)
        vessel = page.evaluate("""(() => { const m = window.seawatch.map;
            for (const v of window.seawatch.state.vessels) {
              if (v.lat_deg === null || !v.name) continue;
              const p = m.project(v.lat_deg, v.lon_deg);
              if (p.x > 20 && p.y > 20 && p.x < m.c.width - 20 && p.y < m.c.height - 20 && m.describeAt(p.x, p.y).startsWith('vessel'))
                return {name: v.name, p}; }
            return null; })()""")
        assert vessel is not None
        assert _count(_shot(page), AIS_RGB, vessel["p"]["x"], vessel["p"]["y"], r=6) > 8
        page.mouse.move(box["x"] + 1 + vessel["p"]["x"], box["y"] + 1 + vessel["p"]["y"])
        _wait(page, f"document.getElementById('map-hover').textContent.includes({vessel['name']!r})", 5)
        ais_row = page.text_content('#sources tr[data-id="ais"]')
        assert "vessel(s)" in ais_row
        # a recorded log is not live AIS, and the row says so
        assert "ais_gpsd_lemmer_nl_ais-nmea.log: a recorded log replayed by the video's clock, not live AIS" in ais_row, ais_row
        grid = (np.abs(img.astype(int) - np.array(GRID_RGB)).max(axis=2) <= 10)
        assert grid.all(axis=1).sum() >= 2 or grid.all(axis=0).sum() >= 2  # full-width / full-height grid lines

        # ---- the drone moves (positions from the live feed, and its marker follows on the map)
        _wait(page, "(() => { const d = window.seawatch.map.data.drones[0];"
                    f" return Math.abs(d.lat_deg - {first['lat']}) + Math.abs(d.lon_deg - {first['lon']}) > 2e-4; }})()", 30)
        n_drone, moved = _drone_pixels(page)
        assert n_drone > 20 and math.hypot(moved["p"]["x"] - first["p"]["x"], moved["p"]["y"] - first["p"]["y"]) > 5  # it moved on screen
        d = page.evaluate("window.seawatch.state.sources.find(s => s.kind === 'drone')")
        assert d["patrol"] == "harbour" and d["route"] and d["armed"] is True

        # ---- the fire ends (detector off): its clip plays in the page
        det.on = False
        _wait(page, "window.seawatch.state.events.some(e => e.type === 'fire' && e.phase === 'end')", 30)
        fire_id = page.evaluate("window.seawatch.state.events.find(e => e.type === 'fire' && e.phase === 'end').id")
        page.click(f'#events tr[data-id="{fire_id}"]')
        _wait(page, f"document.getElementById('detail').dataset.id === '{fire_id}'")
        _wait(page, "(() => { const v = document.getElementById('d-clip'); return !v.hidden && v.readyState >= 2 && v.currentTime > 0; })()", 30)
        _wait(page, "document.getElementById('d-snapshot').naturalWidth > 0")

        # ---- acknowledge with a note: the status changes in the API and in the list
        page.fill("#d-note", "crew sent to the quay")
        page.click('#detail button[data-act="acknowledge"]')
        _wait(page, f"document.querySelector('#events tr[data-id=\"{fire_id}\"] td.status').textContent === 'acknowledged'")
        with TestClient(svc.app) as client:
            ev = client.get(f"/api/events/{fire_id}", headers={"X-API-Key": KEY}).json()
        assert ev["review_status"] == "acknowledged"
        assert ev["review_history"][-1]["note"] == "crew sent to the quay" and ev["review_history"][-1]["by"] == "ops"

        # ---- "False detection": a dismissal that says the detector was wrong (a welding flash, say), shown in the trail
        page.fill("#d-note", "welding flash")
        page.click("#d-false")
        _wait(page, f"document.querySelector('#events tr[data-id=\"{fire_id}\"] td.status').textContent === 'dismissed'")
        _wait(page, "document.querySelector('#d-audit li:last-child').textContent === 'dismissed (false detection) by ops: welding flash'")
        with TestClient(svc.app) as client:
            ev = client.get(f"/api/events/{fire_id}", headers={"X-API-Key": KEY}).json()
        assert [(h["status"], h["reason"]) for h in ev["review_history"]] == [("acknowledged", ""), ("dismissed", "false_detection")]

        # ---- a live event arrives without a reload
        n_fire = page.evaluate("window.seawatch.state.events.filter(e => e.type === 'fire').length")
        det.on = True
        _wait(page, f"window.seawatch.state.events.filter(e => e.type === 'fire').length > {n_fire}", 30)
        assert page.locator("#events tbody tr.fresh").count() >= 1

        # ---- "ignore this spot": the open fire becomes an ignore area of the camera (a flare stack, say); the
        # pipeline drops it from then on, so the incident ends and no new one starts; removing the area brings it back
        live_id = page.evaluate("window.seawatch.state.events.find(e => e.type === 'fire' && e.phase !== 'end').id")
        page.click(f'#events tr[data-id="{live_id}"]')
        _wait(page, f"document.getElementById('detail').dataset.id === '{live_id}' && !document.getElementById('d-ignore').hidden")
        page.fill("#d-note", "flare stack")
        page.click("#d-ignore")
        _wait(page, "document.querySelectorAll('#d-ignored li').length === 1")
        assert "flare stack (from this event)" in page.text_content("#d-ignored li")
        _wait(page, "document.querySelector('#d-overlay polygon.operator')")
        assert page.evaluate("document.querySelector('#d-overlay polygon.operator').getAttribute('points')") == "72,79 88,79 88,91 72,91"
        with TestClient(svc.app) as client:
            ev = client.get(f"/api/events/{live_id}", headers={"X-API-Key": KEY}).json()
            areas = client.get("/api/sources/quay-cam/ignore-areas", headers={"X-API-Key": KEY}).json()
        assert ev["review_status"] == "dismissed" and ev["review_history"][-1]["note"].endswith("added: flare stack")
        assert [(a["labels"], a["event_id"], a["created_by"]) for a in areas] == [(["fire"], live_id, "ops")]
        _wait(page, f"window.seawatch.state.events.some(e => e.id === '{live_id}' && e.phase === 'end')", 30)
        n_fire = page.evaluate("window.seawatch.state.events.filter(e => e.type === 'fire').length")
        page.wait_for_timeout(3000)  # the detector still fires every frame: nothing new while the area is there
        page.click("#filters button")
        page.wait_for_timeout(500)
        assert page.evaluate("window.seawatch.state.events.filter(e => e.type === 'fire').length") == n_fire
        page.click("#d-ignored li button")
        _wait(page, "document.querySelectorAll('#d-ignored li').length === 0 && !document.querySelector('#d-overlay polygon.operator')")
        with TestClient(svc.app) as client:
            assert client.get("/api/sources/quay-cam/ignore-areas", headers={"X-API-Key": KEY}).json() == []
        _wait(page, f"window.seawatch.state.events.filter(e => e.type === 'fire').length > {n_fire}", 30)

        # ---- the drone's row: patrol state, Abort (RTL) behind a confirm() (declined: nothing sent), Restart patrol
        row = '#sources tr[data-id="patrol-1"]'
        _wait(page, f"document.querySelector('{row}').textContent.includes('patrol harbour (flying')")
        assert page.is_disabled(f"{row} button[data-act=restart]")  # flying: a restart would start the mission over
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and "/api/drones/" in r.url else None)
        dialogs: list[str] = []
        page.once("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.click(f"{row} button[data-act=abort]")
        page.wait_for_timeout(300)
        assert dialogs and "patrol-1" in dialogs[0] and posts == []
        page.once("dialog", lambda d: d.accept())
        page.click(f"{row} button[data-act=abort]")
        _wait(page, "document.getElementById('sources-note').textContent.includes('patrol aborted')", 15)
        assert posts == [base + "/api/drones/patrol-1/abort"]
        _wait(page, f"document.querySelector('{row}').textContent.includes('patrol harbour (aborted: aborted by the operator (RTL)')")
        assert svc.fleet.runners["patrol-1"].patrol_state == "aborted"
        assert svc.fleet.runners["patrol-1"].link.state.mode == "RTL"
        # landed (the simulator put down at once): nothing to fly home, the patrol already stopped -> "Stop patrol",
        # disabled; Restart patrol stays
        sim = svc.fleet.runners["patrol-1"].sim
        sim.h, sim.armed = 0.0, False
        _wait(page, f"document.querySelector('{row} button[data-act=abort]').textContent === 'Stop patrol'", 15)
        assert page.is_disabled(f"{row} button[data-act=abort]") and not page.is_disabled(f"{row} button[data-act=restart]")

        # ---- without a tile server, the bundled coastline is drawn when the view reaches a coast (Dutch coast)
        page.evaluate("(() => { const m = window.seawatch.map; m.view = {lat: 53.0, lon: 5.2, zoom: 8}; m.draw(); })()")
        coast = np.abs(_shot(page).astype(int) - np.array(COAST_RGB)).max(axis=2) <= 12
        assert coast.sum() > 300
        assert not errors, errors
        browser.close()


def test_ui_kiosk_key_and_tiles_setting(tmp_path):
    """A wall display with ``#key=`` and a configured tile server: the page asks the tile server (blocked here, so
    nothing is drawn from it) and still draws events and the grid."""
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")},
                            "service": {"map_tiles_url": "http://127.0.0.1:9/{z}/{x}/{y}.png", "map_tiles_attribution": "test tiles"},
                            "auth": {"api_keys": [{"name": "wall", "role": "operator", "key_sha256": hash_api_key(KEY)}]}})
    app = create_app(cfg)
    with serve_in_thread(app) as port:
        app.state.store.put(make_event(0, type="fire", severity="critical", source_id="quay-1", geo=GeoPosition(54.02, 6.55, 30.0, 30.0)))
        with _playwright() as p:
            browser = _browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            tile_requests: list[str] = []
            page.on("request", lambda r: tile_requests.append(r.url) if r.url.endswith(".png") else None)
            page.goto(f"http://127.0.0.1:{port}/#key={KEY}")
            page.wait_for_selector('#events tr[data-id="ev00000"]')
            assert page.text_content("#who") == "wall (operator)"
            page.wait_for_timeout(500)
            xy = page.evaluate("window.seawatch.map.project(54.02, 6.55)")
            img = _shot(page)
            assert _count(img, SEV_RGB["critical"], xy["x"], xy["y"], r=6) > 40
            assert any(u.startswith("http://127.0.0.1:9/") for u in tile_requests)  # tiles asked from the configured server
            # an operator reviews what no reviewer confirmed: no Confirm button, and none at all on a confirmed event
            app.state.store.put(make_event(1, type="smoke", severity="low", source_id="quay-1"))
            app.state.store.review("ev00001", "confirmed", "rita", "user", "real smoke")
            page.reload()
            page.wait_for_selector('#events tr[data-id="ev00001"]')
            buttons = "[...document.querySelectorAll('#d-actions button[data-act]')].filter(b => !b.hidden).map(b => b.textContent)"
            page.click('#events tr[data-id="ev00000"]')
            _wait(page, "document.getElementById('detail').dataset.id === 'ev00000'")
            assert page.evaluate(buttons) == ["Acknowledge", "Dismiss", "False detection"]
            page.click('#events tr[data-id="ev00001"]')
            _wait(page, "document.getElementById('detail').dataset.id === 'ev00001'")
            assert page.evaluate(buttons) == []
            browser.close()


# Before the app runs: counts the page's 10 s timers still set (the AIS poll), and keeps the blob behind each object
# URL the page has not revoked (the page's CSP rightly forbids fetching blob: URLs).
INSTRUMENT = """(() => { const si = window.setInterval.bind(window), ci = window.clearInterval.bind(window);
  window.__polls = new Set();
  window.setInterval = (f, ms, ...a) => { const id = si(f, ms, ...a); if (ms === 10000) window.__polls.add(id); return id; };
  window.clearInterval = (id) => { window.__polls.delete(id); return ci(id); };
  const mk = URL.createObjectURL.bind(URL), rm = URL.revokeObjectURL.bind(URL);
  window.__blobs = new Map();
  URL.createObjectURL = (b) => { const u = mk(b); window.__blobs.set(u, b); return u; };
  URL.revokeObjectURL = (u) => { window.__blobs.delete(u); return rm(u); }; })()"""
BLOB_TEXT = "(u => window.__blobs.has(u) ? window.__blobs.get(u).text() : null)(document.getElementById('d-clip').src)"
ROWS = "[...document.querySelectorAll('#events tbody tr')].map(tr => tr.dataset.id)"


def _login(page, base=None):
    if base is not None:
        page.goto(base + "/")
    page.fill("#login-form input[name=username]", "ops")
    page.fill("#login-form input[name=password]", PASSWORD)
    page.click("#login-form button")
    page.wait_for_selector("#main", state="visible")
    _wait(page, "document.getElementById('live').textContent === 'live: on'")


def test_ui_review_desk_at_laptop_size(live_service, tmp_path):
    """At 1280 x 800 in another time zone: more events than a page ("Load more"), quick clicks (a late clip answer of
    the previous event is dropped), the review buttons scrolled into sight, the evidence package and the search as
    GeoJSON / KML saved under the server's names, the vessel and map-view filters, times typed as UTC, the open detail
    following a review made elsewhere (the typed note and the loaded clip kept), and a new login after a lost session
    (one AIS poll, one live socket, one request per map click)."""
    svc, det, base = live_service
    det.on = False  # no live fire incidents: a list that holds still
    for i in range(200):
        svc.store.put(make_event(10 + i, type="smoke", severity="low", source_id="yard-cam"))
    for i in (300, 301):  # ended: each has a clip URL (answered by the test below, not cut from recordings)
        svc.store.put(make_event(i, source_id="quay-cam", clip=ClipRef("quay-cam", T0 + (i - 5) * S, T0 + i * S, 5 * S, 5 * S)))
    with _playwright() as p:
        browser = _browser(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="Europe/Amsterdam", accept_downloads=True)
        ctx.add_init_script(INSTRUMENT)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sockets: list = []
        page.on("websocket", lambda ws: sockets.append(ws))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        _login(page, base)

        # ---- more events than a page: the count says so, "Load more" appends the next page
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 200")
        total = len(svc.store.search(EventQuery(limit=1000)).events)
        assert total > 200
        assert page.text_content("#count") == "200+ event(s)" and page.is_visible("#load-more")
        page.click("#load-more")
        _wait(page, f"document.querySelectorAll('#events tbody tr').length === {total}")
        ids = page.evaluate(ROWS)
        assert len(set(ids)) == total and page.is_hidden("#more-bar") and page.text_content("#count") == f"{total} event(s)"

        # ---- quick clicks: the first event's clip answers late, after the second was chosen; the player shows the
        # second event's clip only
        held: list = []

        def clip_route(route):
            event_id = route.request.url.split("/")[-2]
            if event_id == "ev00300":
                held.append(route)  # answered below
            else:
                route.fulfill(status=200, content_type="video/mp4", body=b"clip of " + event_id.encode())

        page.route("**/api/events/*/clip", clip_route)
        page.click('#events tr[data-id="ev00300"]')
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert held
        page.click('#events tr[data-id="ev00301"]')
        _wait(page, "document.getElementById('d-clip').dataset.url.endsWith('/ev00301/clip')")
        clip_src = page.evaluate("document.getElementById('d-clip').src")
        held[0].fulfill(status=200, content_type="video/mp4", body=b"clip of ev00300")
        page.wait_for_timeout(500)
        assert page.evaluate("document.getElementById('detail').dataset.id") == "ev00301"
        assert page.evaluate("document.getElementById('d-clip').src") == clip_src
        assert page.evaluate(BLOB_TEXT) == "clip of ev00301"
        # the late clip's object URL and those of the first event's media were freed: only ev00301's remain
        assert page.evaluate("Promise.all([...window.__blobs.values()].map(b => b.text()))").count("clip of ev00300") == 0
        assert page.evaluate("window.__blobs.size") <= 2  # its snapshot (none here) and clip
        # the review buttons are in sight without scrolling by hand
        _wait(page, "(r => r.top >= 0 && r.bottom <= window.innerHeight)"
                    "(document.querySelector('#detail button[data-act=acknowledge]').getBoundingClientRect())", 5)
        page.screenshot(path=str(tmp_path / "detail_1280x800.png"))

        # ---- the evidence package, fetched with the credential and saved under the server's name
        with page.expect_response("**/evidence.zip") as resp, page.expect_download() as dl:
            page.click("#d-export")
        assert resp.value.status == 200 and resp.value.headers["content-type"] == "application/zip"
        assert dl.value.suggested_filename == "seawatch-evidence-ev00301.zip"
        with zipfile.ZipFile(dl.value.path()) as z:
            assert {"event.json", "manifest.json"} <= set(z.namelist())
            assert json.loads(z.read("event.json"))["id"] == "ev00301"
        assert page.text_content("#d-error") == "" and page.text_content("#d-export") == "Export evidence"

        # ---- a review from another desk: the open detail follows; the typed note and the loaded clip stay
        page.fill("#d-note", "still typing")
        req = urllib.request.Request(base + "/api/events/ev00301/acknowledge", data=b'{"note": "from the wall"}', method="POST",
                                     headers={"X-API-Key": KEY, "Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=10).status == 200
        _wait(page, "document.getElementById('d-meta').textContent.includes('status: acknowledged') && "
                    "document.querySelectorAll('#d-audit li').length === 1", 10)
        assert "from the wall" in page.text_content("#d-audit li")
        assert page.input_value("#d-note") == "still typing"
        assert page.evaluate("document.getElementById('d-clip').src") == clip_src

        # ---- vessel filters, then the search saved as GeoJSON and KML (the same filters)
        page.fill("#filters input[name=vessel_name]", "noordzee")
        page.click("#filters button")
        _wait(page, f"JSON.stringify({ROWS}) === '[\"ev00000\"]'")
        page.click('#events tr[data-id="ev00000"]')  # another event: the note typed for ev00301 is not carried over
        _wait(page, "document.getElementById('detail').dataset.id === 'ev00000'")
        assert page.input_value("#d-note") == ""
        with page.expect_download() as dl:
            page.click("#export-geojson")
        assert dl.value.suggested_filename == "seawatch-events.geojson"
        fc = json.loads(Path(dl.value.path()).read_text())
        assert fc["type"] == "FeatureCollection" and [f["properties"]["id"] for f in fc["features"]] == ["ev00000"]
        with page.expect_download() as dl:
            page.click("#export-kml")
        assert dl.value.suggested_filename == "seawatch-events.kml" and b"<kml" in Path(dl.value.path()).read_bytes()
        with page.expect_download() as dl:
            page.click("#export-csv")
        rows = Path(dl.value.path()).read_text(encoding="utf-8-sig").splitlines()
        assert dl.value.suggested_filename == "seawatch-events.csv" and rows[0].startswith("id,type,severity")
        assert [r.split(",")[0] for r in rows[1:]] == ["ev00000"]
        page.fill("#filters input[name=vessel_name]", "")
        page.fill("#filters input[name=mmsi]", "244123456")
        page.click("#filters button")
        _wait(page, "document.getElementById('count').textContent === '0 event(s)'")
        assert "mmsi=244123456" in requests[-1] or any("mmsi=244123456" in u for u in requests[-5:])
        page.fill("#filters input[name=mmsi]", "")
        # only in map view: the map's bbox goes with the search; only located events come back
        page.check("#f-inview")
        _wait(page, "document.querySelectorAll('#events tbody tr').length >= 2 && "
                    "window.seawatch.state.events.every(e => e.geo)")
        assert any("min_lat=" in u and "max_lon=" in u for u in requests if "/api/events?" in u)
        page.uncheck("#f-inview")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 200")

        # ---- the times typed are UTC (the browser is in Amsterdam, UTC+2 then), labelled so
        assert "(UTC)" in page.text_content("#filters label:has(input[name=start_from])")
        typed = datetime.fromtimestamp((T0 + 300 * S) // S, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        page.fill("#filters input[name=start_from]", typed)
        page.fill("#filters input[name=start_to]", typed[:11] + "23:59:59")
        page.click("#filters button")
        _wait(page, f"JSON.stringify({ROWS}.sort()) === '[\"ev00300\",\"ev00301\"]'")
        assert any(f"start_from={typed.replace(':', '%3A')}.000Z" in u for u in requests)
        page.fill("#filters input[name=start_from]", "")
        page.fill("#filters input[name=start_to]", "")
        page.click("#filters button")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 200")

        # ---- the session is lost (a refused token), the user logs in again: one AIS poll, one live socket, one
        # request per map click (no second set of map listeners)
        assert page.evaluate("window.__polls.size") == 1
        page.fill("#filters input[name=vessel_name]", "noordzee")  # the filters stay through the new login
        page.evaluate("window.seawatch.state.auth = {Authorization: 'Bearer expired'}; window.seawatch.search().catch(() => {})")
        page.wait_for_selector("#login", state="visible")
        assert page.evaluate("window.__polls.size") == 0
        _login(page)
        _wait(page, f"JSON.stringify({ROWS}) === '[\"ev00000\"]'")
        # the AIS poll starts once the vessel table has loaded, after the list (a loaded machine: a moment later)
        _wait(page, "window.__polls.size >= 1")
        deadline = time.monotonic() + 5
        while sum(not ws.is_closed() for ws in sockets) != 1 and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert sum(not ws.is_closed() for ws in sockets) == 1
        assert page.evaluate("window.__polls.size") == 1
        page.evaluate("window.scrollTo(0, 0)")
        page.click("#map-fit")
        page.wait_for_timeout(200)
        xy = page.evaluate("window.seawatch.map.project(52.8400, 5.7060)")
        box = page.locator("#map").bounding_box()
        n = len(requests)
        page.mouse.click(box["x"] + 1 + xy["x"], box["y"] + 1 + xy["y"])
        _wait(page, "document.getElementById('detail').dataset.id === 'ev00000'")
        page.wait_for_timeout(500)
        assert [u for u in requests[n:] if u.split("?")[0].endswith("/api/events/ev00000")] == [base + "/api/events/ev00000"]
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(tmp_path / "main_1280x800.png"))

        # ---- a clip still being recorded (409 + Retry-After): the message shows, one retry after that many seconds;
        # none when another event was chosen meanwhile
        asked: list[str] = []

        def recording_route(route):
            event_id = route.request.url.split("/")[-2]
            asked.append(event_id)
            if asked.count(event_id) == 1:
                route.fulfill(status=409, headers={"Retry-After": "1"}, content_type="application/json",
                              body=json.dumps({"error": {"code": "conflict", "message": "still recording", "details": []}}))
            else:
                route.fulfill(status=200, content_type="video/mp4", body=b"recorded " + event_id.encode())

        page.unroute("**/api/events/*/clip")
        page.route("**/api/events/*/clip", recording_route)
        page.evaluate("window.seawatch.select('ev00300')")
        _wait(page, "document.getElementById('d-clip-note').textContent.includes('still recording (trying again in 1 s)')", 5)
        _wait(page, "document.getElementById('d-clip').dataset.url.endsWith('/ev00300/clip')", 5)
        assert page.evaluate(BLOB_TEXT) == "recorded ev00300" and asked == ["ev00300", "ev00300"]
        assert page.text_content("#d-clip-note") == ""
        page.evaluate("window.seawatch.select('ev00301')")
        _wait(page, "document.getElementById('d-clip-note').textContent.includes('trying again')", 5)
        page.evaluate("window.seawatch.select('ev00000')")  # chosen before the retry is due: no retry
        page.wait_for_timeout(1500)
        assert asked.count("ev00301") == 1 and page.evaluate("document.getElementById('detail').dataset.id") == "ev00000"
        assert not errors, errors
        browser.close()


# ---- retention in the UI: holds on an event ("Keep as evidence"), and the degraded-service banner ---------------

# Counts the page's 60 s timers still set (the health poll), like INSTRUMENT does for the 10 s AIS poll.
HEALTH_POLLS = """(() => { const si = window.setInterval.bind(window), ci = window.clearInterval.bind(window);
  window.__healthPolls = new Set();
  window.setInterval = (f, ms, ...a) => { const id = si(f, ms, ...a); if (ms === 60000) window.__healthPolls.add(id); return id; };
  window.clearInterval = (id) => { window.__healthPolls.delete(id); return ci(id); }; })()"""


def _retention_app(tmp_path, **retention):
    """An API-only service (no pipeline) with the reviewer "ops", the operator key "wall", an ended event, an open
    one and a confirmed one. The media disk counts as low only when ``retention`` says so."""
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data"),
                                        "retention": {"min_free_disk_pct": 0, "min_free_disk_gb": 0, **retention}},
                            "auth": {"users": [{"name": "ops", "role": "reviewer", "password_hash": hash_password(PASSWORD)}],
                                     "api_keys": [{"name": "wall", "role": "operator", "key_sha256": hash_api_key(KEY)}]}})
    return create_app(cfg)


def _fill(app):
    store = app.state.store
    store.put(make_event(0, type="smoke", severity="medium", source_id="quay-1", phase="end", end_ns=T0 + 30 * S,
                         clip=ClipRef("quay-1", T0 - 5 * S, T0 + 35 * S, 5 * S, 5 * S)))
    store.put(make_event(1, type="fire", severity="high", source_id="quay-1"))  # open
    store.put(make_event(2, type="fire", severity="critical", source_id="quay-1", phase="end", end_ns=T0 + 40 * S,
                         clip=ClipRef("quay-1", T0 - 3 * S, T0 + 45 * S, 5 * S, 5 * S)))
    store.review("ev00002", "confirmed", "rita", "user", "real fire")


def _api(base, path, method="GET", body=None, key=KEY):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _open(page, event_id):
    page.click(f'#events tr[data-id="{event_id}"]')
    _wait(page, f"document.getElementById('detail').dataset.id === '{event_id}' && "
                "!document.getElementById('d-kept').textContent.startsWith('holds: loading')", 10)


def test_ui_reviewer_keeps_an_event_as_evidence(tmp_path):
    """A reviewer at 1280 x 800: an unheld event says when it expires by the site's policy, "Keep as evidence" with a
    note puts a hold on it (stored: the API lists it), the detail lists the hold and says it is kept, the list marks
    it held; a confirmed and an open event say why they are kept; no health banner while the disk is fine."""
    app = _retention_app(tmp_path)
    with serve_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        _fill(app)
        with _playwright() as p:
            browser = _browser(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _login(page, base)
            page.wait_for_selector('#events tr[data-id="ev00000"]')
            _open(page, "ev00000")
            # medium events go 90 days after their last phase (the default), clips after 30: the dates, from health
            _wait(page, "document.getElementById('d-kept').textContent.includes('expires about')", 10)
            assert page.text_content("#d-kept").startswith(
                "Not held: expires about 2026-12-20 (90 days after its last update), its clip about 2026-10-21")
            assert page.locator("#d-holds li").count() == 0
            assert page.is_visible("#d-hold") and page.is_visible("#d-hold-note")
            assert "held" not in (page.get_attribute('#events tr[data-id="ev00000"]', "class") or "")
            # the review buttons and the hold button fit the laptop screen, side by side with the rest of the detail
            for sel in ("#detail button[data-act=acknowledge]", "#d-export", "#d-hold"):
                _wait(page, f"(r => r.top >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth)"
                            f"(document.querySelector('{sel}').getBoundingClientRect())", 5)

            page.fill("#d-hold-note", "insurance claim 4711")
            page.click("#d-hold")
            _wait(page, "document.querySelectorAll('#d-holds li').length === 1", 10)
            li = page.text_content("#d-holds li")
            assert li.startswith("kept as evidence by ops, ") and li.endswith(" UTC: insurance claim 4711")
            assert page.text_content("#d-kept").startswith("Kept past the retention period (on hold (1))")
            assert page.input_value("#d-hold-note") == "" and page.text_content("#d-error") == ""
            _wait(page, "document.querySelector('#events tr[data-id=\"ev00000\"]').classList.contains('held')", 5)
            assert page.text_content('#events tr[data-id="ev00000"] td.status') == "new"  # the mark is CSS, not text
            page.screenshot(path=str(tmp_path / "hold_1280x800.png"))
            status, holds = _api(base, "/api/events/ev00000/holds")
            assert status == 200 and [(h["reason"], h["by"], h["note"]) for h in holds] == [
                ("manual", "user:ops", "insurance claim 4711")]

            _open(page, "ev00002")  # confirmed: kept for that; no hold listed
            assert page.text_content("#d-kept").startswith("Kept past the retention period (confirmed)")
            assert page.locator("#d-holds li").count() == 0
            _open(page, "ev00001")  # an open incident is kept too
            assert "incident still open" in page.text_content("#d-kept")
            assert page.is_hidden("#health-banner")
            assert not errors, errors
            browser.close()


def test_ui_operator_sees_holds_but_cannot_hold(tmp_path):
    """A wall display (operator key): the holds of an event are listed (an evidence export's too), but there is no
    "Keep as evidence" button (the server would answer 403)."""
    app = _retention_app(tmp_path)
    with serve_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        _fill(app)
        app.state.store.hold("ev00000", "evidence_export", "user:rita")
        with _playwright() as p:
            browser = _browser(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/#key={KEY}")
            page.wait_for_selector('#events tr[data-id="ev00000"]')
            assert page.text_content("#who") == "wall (operator)"
            # the search says which events are held: marked before any is opened
            _wait(page, "document.querySelector('#events tr[data-id=\"ev00000\"]').classList.contains('held')", 5)
            assert not page.evaluate("document.querySelector('#events tr[data-id=\"ev00002\"]').classList.contains('held')")
            _open(page, "ev00000")
            assert page.text_content("#d-holds li").startswith("evidence package exported by rita, ")
            assert page.text_content("#d-kept").startswith("Kept past the retention period (on hold (1))")
            assert page.is_hidden("#d-hold") and page.is_hidden("#d-hold-note")
            _wait(page, "document.querySelector('#events tr[data-id=\"ev00000\"]').classList.contains('held')", 5)
            _open(page, "ev00002")
            assert page.is_hidden("#d-hold")
            assert not errors, errors
            browser.close()
        assert _api(base, "/api/events/ev00002/hold", "POST", {"note": "x"})[0] == 403


ADMIN_KEY = "ui-admin-key-0123456789abcdef"


def test_ui_reviewer_releases_a_hold_and_an_admin_an_exports(tmp_path):
    """A reviewer lifts a colleague's hold with "Release hold" and a note: the hold stays listed as lifted (by whom,
    why), the detail says when the event now expires (by its camera's own age), the list and a wall display (live) drop the held mark. An
    evidence export's hold has no "Release hold" for a reviewer; an admin lifts it with its own button, only with a
    note."""
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data"),
                                        "retention": {"min_free_disk_pct": 0, "min_free_disk_gb": 0,
                                                      "sources": {"quay-1": {"events_max_age_days": 365}}}},
                            "auth": {"users": [{"name": "ops", "role": "reviewer", "password_hash": hash_password(PASSWORD)}],
                                     "api_keys": [{"name": "wall", "role": "operator", "key_sha256": hash_api_key(KEY)},
                                                  {"name": "boss", "role": "admin", "key_sha256": hash_api_key(ADMIN_KEY)}]}})
    app = create_app(cfg)
    with serve_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        _fill(app)
        store = app.state.store
        store.hold("ev00000", "manual", "user:rita", "claim 42")
        store.put(make_event(3, type="fire", severity="high", source_id="quay-1", phase="end", end_ns=T0 + 50 * S,
                             clip=ClipRef("quay-1", T0 - 2 * S, T0 + 55 * S, 5 * S, 5 * S)))
        store.hold("ev00003", "evidence_export", "user:rita")
        with _playwright() as p:
            browser = _browser(p)
            wall = browser.new_page(viewport={"width": 1280, "height": 800})
            wall.goto(f"{base}/#key={KEY}")
            wall.wait_for_selector('#events tr[data-id="ev00000"]')
            _wait(wall, "document.getElementById('live').textContent === 'live: on'")
            _wait(wall, "document.querySelector('#events tr[data-id=\"ev00000\"]').classList.contains('held')", 5)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            wall.on("pageerror", lambda e: errors.append(str(e)))
            _login(page, base)
            page.wait_for_selector('#events tr[data-id="ev00000"]')
            _open(page, "ev00000")
            assert page.text_content("#d-kept").startswith("Kept past the retention period (on hold (1))")
            assert page.is_visible("#d-release") and page.is_visible("#d-hold")
            page.fill("#d-hold-note", "claim settled")
            page.click("#d-release")
            _wait(page, "document.querySelector('#d-holds li.released') !== null", 10)
            li = page.text_content("#d-holds li")
            assert li.startswith("kept as evidence by rita, ") and "(lifted by ops, " in li and li.endswith(": claim settled)")
            # the camera's own age (365 days), not the site-wide 90
            _wait(page, "document.getElementById('d-kept').textContent.startsWith('Not held: expires about')", 5)
            assert page.text_content("#d-kept").startswith(
                "Not held: expires about 2027-09-21 (365 days after its last update), its clip about 2026-10-21")
            assert page.is_hidden("#d-release") and page.input_value("#d-hold-note") == ""
            _wait(page, "!document.querySelector('#events tr[data-id=\"ev00000\"]').classList.contains('held')", 5)
            # the wall display learnt it from the live feed, without a reload
            _wait(wall, "!document.querySelector('#events tr[data-id=\"ev00000\"]').classList.contains('held')", 10)
            page.screenshot(path=str(tmp_path / "release_1280x800.png"))
            status, holds = _api(base, "/api/events/ev00000/holds")
            assert status == 200 and [(h["active"], h["released_by"], h["release_note"]) for h in holds] == [
                (False, "user:ops", "claim settled")]
            # an evidence export's hold: no "Release hold", no lift button for a reviewer
            _open(page, "ev00003")
            assert page.is_hidden("#d-release") and page.locator("#d-holds li button").count() == 0
            assert page.text_content("#d-kept").startswith("Kept past the retention period (on hold (1))")
            # an admin lifts it, with a note only
            admin = browser.new_page(viewport={"width": 1280, "height": 800})
            admin.on("pageerror", lambda e: errors.append(str(e)))
            admin.goto(f"{base}/#key={ADMIN_KEY}")
            admin.wait_for_selector('#events tr[data-id="ev00003"]')
            assert admin.text_content("#who") == "boss (admin)"
            _open(admin, "ev00003")
            assert admin.is_hidden("#d-release") and admin.is_visible("#d-holds li button.lift")
            admin.click("#d-holds li button.lift")
            _wait(admin, "document.getElementById('d-error').textContent.includes('say why')", 5)
            assert store.with_holds(["ev00003"]) == {"ev00003"}
            admin.fill("#d-hold-note", "package superseded by case 7")
            admin.click("#d-holds li button.lift")
            _wait(admin, "document.querySelector('#d-holds li.released') !== null", 10)
            assert "(lifted by boss (API key), " in admin.text_content("#d-holds li")
            assert store.with_holds(["ev00003"]) == set()
            # the reviewer's open detail follows the live message
            _wait(page, "document.querySelector('#d-holds li.released') !== null", 10)
            assert not errors, errors
            browser.close()


def test_ui_banner_when_the_media_disk_is_low(tmp_path):
    """A threshold no disk meets (100 000 GiB to keep free): health turns degraded, and the page shows a banner that
    says the media disk is low; the health poll is one 60 s timer whatever the number of logins, and the banner goes
    with the session."""
    app = _retention_app(tmp_path, min_free_disk_gb=100000)
    with serve_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        _fill(app)
        deadline = time.monotonic() + 10
        while json.loads(urllib.request.urlopen(base + "/api/health", timeout=5).read())["status"] != "degraded":
            assert time.monotonic() < deadline, "health never turned degraded"
            time.sleep(0.1)
        with _playwright() as p:
            browser = _browser(p)
            ctx = browser.new_context(viewport={"width": 1280, "height": 800})
            ctx.add_init_script(HEALTH_POLLS)
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _login(page, base)
            _wait(page, "!document.getElementById('health-banner').hidden", 10)
            assert page.is_visible("#health-banner")
            kinds = page.evaluate("[...document.querySelectorAll('#health-banner div')].map(d => d.dataset.kind)")
            assert kinds == ["disk-low"]
            text = page.text_content("#health-banner")
            assert "Media disk low" in text and "held evidence" in text
            assert page.get_attribute("#health-banner", "class") == "severe"
            page.screenshot(path=str(tmp_path / "disk_low_1280x800.png"))
            assert page.evaluate("window.__healthPolls.size") == 1
            # the session is lost: no banner on the login form, no poll; a new login makes one poll again
            page.evaluate("window.seawatch.state.auth = {Authorization: 'Bearer expired'}; window.seawatch.search().catch(() => {})")
            page.wait_for_selector("#login", state="visible")
            assert page.is_hidden("#health-banner") and page.evaluate("window.__healthPolls.size") == 0
            _login(page)
            _wait(page, "!document.getElementById('health-banner').hidden", 10)
            assert page.evaluate("window.__healthPolls.size") == 1
            assert not errors, errors
            browser.close()


def test_ui_sources_say_how_long_a_camera_has_been_down(tmp_path):
    """The sources table tells a down camera apart from one that just blinked: how long, how many attempts; and how
    a camera's analysis keeps up with the rate asked for."""
    import time as _time

    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")},
                            "sources": [{"id": "quay-1", "url": "rtsp://cam/1"}, {"id": "quay-2", "url": "rtsp://cam/2"}],
                            "auth": {"api_keys": [{"name": "wall", "role": "operator", "key_sha256": hash_api_key(KEY)}]}})
    down_ns = _time.time_ns() - 12 * 60 * S
    app = create_app(cfg, source_status=lambda: [
        {"source_id": "quay-1", "state": "offline", "since_ns": down_ns, "down_since_ns": down_ns, "attempts": 57,
         "last_error": "connection refused; retry in 15.0 s", "frames_decoded": 1200},
        {"source_id": "quay-2", "state": "online", "since_ns": down_ns, "down_since_ns": None, "attempts": 0,
         "frames_decoded": 900, "analysis": {"asked_fps": 4.0, "analysed_fps": 2.1, "delivered_fps": 25.0, "behind": True,
                                             "lag_ms": 163.4, "process_ms": 90.0, "detect_ms": 80.0, "frames": 400}}])
    with serve_in_thread(app) as port:
        with _playwright() as p:
            browser = _browser(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/#key={KEY}")
            page.wait_for_selector('#sources tr[data-id="quay-1"]')
            down = page.text_content('#sources tr[data-id="quay-1"]')
            assert "down for 12 min, 57 attempt(s)" in down and "connection refused" in down
            up = page.text_content('#sources tr[data-id="quay-2"]')
            assert "down for" not in up
            assert "analysed 2.1/4 fps (behind), lag 163 ms" in up  # analysis short of its asked rate: marked
            assert "analysed" not in down  # a camera with no analysis reported says nothing about it
            browser.close()
