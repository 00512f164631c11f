"""The camera wall ("/wall") in headless Chromium against a real service: one tile per camera with its newest analysed
picture changing over time, an offline camera marked as such (its old picture greyed out, never shown as live), an
open high incident framing its camera's tile red with the incident type (and a click on it opening the incident in
the operator UI), a viewer key being enough, at most one picture request in flight per camera, none while the tab is
hidden, the same CSP as "/", and the wall working under a reverse proxy's path prefix.

The browser helpers and the full service (a camera on a generated video, a simulated drone, stored events) are
test_service_ui's; most tests here use an API-only app whose cameras' states and pictures the test sets."""

from __future__ import annotations

import re
import threading
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.vision.detections import Detections  # noqa: E402
from test_service_store import S, make_event  # noqa: E402
from test_service_ui import PASSWORD, _browser, _playwright, _wait, live_service, open_page  # noqa: E402,F401 - live_service: a fixture

VIEWER_KEY = "wall-viewer-key-0123456789abcdef"
CAMERAS = ("quay-1", "quay-2", "east-gate")
TILES = "[...document.querySelectorAll('#wall .tile')].map(a => a.dataset.id)"


def _tile(sid: str) -> str:
    return f"document.querySelector('#wall .tile[data-id=\"{sid}\"]')"


class FakeCameras:
    """The pipeline side of an API-only app: each camera's reader state (set by the test) and a new 320x180 picture
    on every call of ``latest_frame`` (its grey level from the call count, its capture time now). Counts the calls in
    flight per camera (``most_at_once``) and all calls (``calls``); ``slow_s`` makes a camera's answer that slow."""

    def __init__(self, ids) -> None:
        now = time.time_ns()
        self.states = {i: {"source_id": i, "state": "online", "since_ns": now - 60 * S, "down_since_ns": None,
                           "attempts": 0, "frames_decoded": 100} for i in ids}
        self.slow_s: dict[str, float] = {}
        self.calls = {i: 0 for i in ids}
        self.in_flight = {i: 0 for i in ids}
        self.most_at_once = {i: 0 for i in ids}
        self._lock = threading.Lock()

    def go_offline(self, sid: str, minutes: float, attempts: int) -> None:
        down = time.time_ns() - int(minutes * 60 * S)
        self.states[sid] = {**self.states[sid], "state": "offline", "since_ns": down, "down_since_ns": down,
                            "attempts": attempts, "last_error": "connection refused"}

    def source_status(self):
        return [dict(s) for s in self.states.values()]

    def latest_frame(self, sid: str):
        if sid not in self.calls:
            return None
        with self._lock:
            self.calls[sid] += 1
            self.in_flight[sid] += 1
            self.most_at_once[sid] = max(self.most_at_once[sid], self.in_flight[sid])
            n = self.calls[sid]
        try:
            time.sleep(self.slow_s.get(sid, 0.0))
            image = np.full((180, 320, 3), 40 + (n * 37) % 180, np.uint8)
            tracked = Detections(np.array([[60, 40, 200, 120]], np.float32), np.array([0.9], np.float32),
                                 np.array([0], np.int32), ("vessel",), track_id=np.array([3]))
            return time.time_ns(), image, tracked
        finally:
            with self._lock:
                self.in_flight[sid] -= 1


def _app(tmp_path: Path, cams: FakeCameras, **service):
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")}, "service": service,
                            "sources": [{"id": i, "url": f"rtsp://cam/{i}"} for i in cams.calls],
                            "auth": {"api_keys": [{"name": "wall-3", "role": "viewer", "key_sha256": hash_api_key(VIEWER_KEY)}]}})
    return create_app(cfg, source_status=cams.source_status, latest_frame=cams.latest_frame)


def _captures(page, sid: str, seconds: float) -> set:
    """The capture times a tile showed over ``seconds``."""
    seen = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.add(page.evaluate(f"window.seawatchWall.state.tiles.get('{sid}').captureNs"))
        time.sleep(0.1)
    return seen - {None}


def test_wall_is_served_like_the_main_page(tmp_path):
    """"/wall" is a static shell with the same CSP header as "/", nothing inline (script-src / style-src 'self'), its
    script and style from the UI's allow-list, and every URL in it relative (a path prefix needs no configuration)."""
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "d")},
                            "service": {"map_tiles_url": "https://tiles.example.org/{z}/{x}/{y}.png"}})
    with TestClient(create_app(cfg)) as c:
        root, wall = c.get("/"), c.get("/wall")
        assert wall.status_code == 200 and wall.headers["content-type"].startswith("text/html")
        assert wall.headers["content-security-policy"] == root.headers["content-security-policy"]
        assert "script-src 'self'" in wall.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in wall.headers["content-security-policy"]
        assert wall.headers["x-content-type-options"] == "nosniff"
        html = wall.text
        assert '<script type="module" src="ui/wall.js"></script>' in html and 'href="ui/wall.css"' in html
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html, re.I), "an inline style or handler"
        assert not re.search(r"""(?:src|href|action)=["']/""", html), "a URL from the host's root"
        assert c.get("/ui/wall.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/wall.css").headers["content-type"].startswith("text/css")
        assert c.get("/ui/wall.html").status_code == 404  # the page only as "/wall", with its header
        assert c.get("/api/sources").status_code == 401  # the shell is public, the data is not


def test_wall_tiles_states_and_incidents_with_a_viewer_key(tmp_path):
    """Three cameras on a 1280 x 720 wall display opened with a viewer key: one tile each, in the configured order,
    filling the screen without scrolling; each picture changes over time; a camera that goes offline is marked
    offline with how long (its last picture greyed out); an open high incident frames its tile red with its type
    (a low one or a dismissed one does not) and goes when the incident ends; a click on the framed tile opens the
    incident in the operator UI. Nothing the page asks needs more than a viewer, a slow camera never has two picture
    requests at once, and a hidden tab asks for no pictures."""
    cams = FakeCameras(CAMERAS)
    cams.slow_s["east-gate"] = 1.6  # slower than the refresh: a plain 1 s interval would overlap its requests
    app = _app(tmp_path, cams)
    with serve_in_thread(app) as port, _playwright() as p:
        browser = _browser(p)
        base = f"http://127.0.0.1:{port}"
        page, errors = open_page(browser, f"{base}/wall#key={VIEWER_KEY}", width=1280, height=720)
        answers: list[tuple[str, str, int]] = []
        page.on("response", lambda r: answers.append((r.request.method, r.url, r.status)))
        _wait(page, f"{TILES}.length === 3")
        assert page.evaluate(TILES) == list(CAMERAS)
        assert page.text_content("#who") == "wall-3 (viewer)"
        for sid in CAMERAS:
            _wait(page, f"{_tile(sid)}.querySelector('img').naturalWidth > 0", 10)
        # the grid fits the screen: equal tiles, all inside the viewport, nothing to scroll
        boxes = page.evaluate("[...document.querySelectorAll('#wall .tile')].map(a => { const r = a.getBoundingClientRect();"
                              " return [r.left, r.top, r.right, r.bottom]; })")
        assert all(b[2] <= 1280 and b[3] <= 720 for b in boxes), boxes
        assert len({round(b[2] - b[0]) for b in boxes}) == 1 and len({round(b[3] - b[1]) for b in boxes}) == 1, boxes
        assert (boxes[0][2] - boxes[0][0]) > 400  # three 16:9 tiles on 1280 x 720: a 2 x 2 grid, not a column
        assert page.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight")
        # the pictures change over time (a new capture time and a new blob), at a width that suits the tile
        assert len(_captures(page, "quay-1", 3.0)) >= 2
        widths = {int(m) for _, u, _ in answers for m in re.findall(r"latest\.jpg\?width=(\d+)", u)}
        tile_w = boxes[0][2] - boxes[0][0]
        assert widths and all(tile_w <= w < tile_w + 160 for w in widths), (widths, tile_w)
        assert "online" in page.text_content('#wall .tile[data-id="quay-1"] .state')
        assert re.search(r"\d\d:\d\d:\d\d UTC, \d+ s ago", page.text_content('#wall .tile[data-id="quay-1"] .age'))

        # ---- a camera goes offline: marked, with how long, its last picture greyed out (the live feed's sources)
        assert page.evaluate(f"{_tile('quay-2')}.classList.contains('offline')") is False
        cams.go_offline("quay-2", minutes=12, attempts=57)
        _wait(page, f"{_tile('quay-2')}.dataset.state === 'offline'", 10)
        veil = page.text_content('#wall .tile[data-id="quay-2"] .veil')
        assert "OFFLINE" in veil and "for 12 min" in veil and "57 attempt(s)" in veil, veil
        assert page.is_visible('#wall .tile[data-id="quay-2"] .veil')
        assert "offline for 12 min" in page.text_content('#wall .tile[data-id="quay-2"] .state')
        assert "last picture" in page.text_content('#wall .tile[data-id="quay-2"] .age')
        assert "grayscale" in page.evaluate(f"getComputedStyle({_tile('quay-2')}.querySelector('img')).filter")
        assert page.is_hidden('#wall .tile[data-id="quay-1"] .veil')  # the others stay live
        assert "1 offline" in page.text_content("#summary")
        asked_offline = cams.calls["quay-2"]  # its picture is not asked while it is down (checked below)

        # ---- incidents: an open high one frames its camera red with its type; low or dismissed ones do not
        red = "getComputedStyle(%s).borderTopColor" % _tile("quay-1")
        plain = page.evaluate(red)
        low = make_event(1, type="smoke", severity="low", source_id="east-gate")
        dismissed = make_event(2, type="fire", severity="critical", source_id="east-gate")
        high = make_event(3, type="vessel_in_zone", severity="high", source_id="quay-1")
        for ev in (low, dismissed, high):
            app.state.store.put(ev)
        app.state.store.review("ev00002", "dismissed", "rita", "user", "a flare stack")
        app.state.live.publish_event(high)
        _wait(page, f"{_tile('quay-1')}.classList.contains('incident')", 10)
        assert page.text_content('#wall .tile[data-id="quay-1"] .alert') == "vessel_in_zone · high"
        assert page.evaluate(red) == "rgb(215, 25, 28)" != plain
        assert not page.evaluate(f"{_tile('east-gate')}.classList.contains('incident')")
        assert not page.evaluate(f"{_tile('quay-2')}.classList.contains('incident')")
        href = page.get_attribute('#wall .tile[data-id="quay-1"]', "href")
        assert href == f"{base}/#key={VIEWER_KEY}&event=ev00003", href
        assert page.get_attribute('#wall .tile[data-id="quay-2"]', "href") == f"{base}/#key={VIEWER_KEY}&live=quay-2"
        # the incident ends: the frame goes
        ended = make_event(3, type="vessel_in_zone", severity="high", source_id="quay-1", phase="end", seq=1,
                           end_ns=high.start_ns + 20 * S)
        app.state.store.put(ended)
        app.state.live.publish_event(ended)
        _wait(page, f"!{_tile('quay-1')}.classList.contains('incident')", 10)
        assert page.is_hidden('#wall .tile[data-id="quay-1"] .alert')
        # a new one, through the live feed again
        again = make_event(4, type="fire", severity="critical", source_id="quay-1")
        app.state.store.put(again)
        app.state.live.publish_event(again)
        _wait(page, f"{_tile('quay-1')}.classList.contains('critical')", 10)
        assert page.text_content('#wall .tile[data-id="quay-1"] .alert') == "fire · critical"
        page.screenshot(path=str(tmp_path / "wall_1280x720.png"))

        # ---- the slow camera never had two requests at once; the others were asked about once a second
        assert cams.calls["east-gate"] >= 3 and cams.most_at_once == {i: 1 for i in CAMERAS}, cams.most_at_once

        # ---- a hidden tab asks for no pictures; shown again, it does at once
        page.evaluate("Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
                      "document.dispatchEvent(new Event('visibilitychange'))")
        time.sleep(1.8)  # a request under way when it was hidden ends (east-gate's takes 1.6 s)
        before = dict(cams.calls)
        time.sleep(2.5)
        assert cams.calls == before, (before, cams.calls)
        page.evaluate("delete document.hidden; document.dispatchEvent(new Event('visibilitychange'))")
        _wait(page, f"window.seawatchWall.state.tiles.get('quay-1').captureNs > {time.time_ns()}", 5)
        assert cams.calls["quay-2"] <= asked_offline + 1, (asked_offline, cams.calls)  # (+1: one under way)

        # ---- nothing the page asked needed more than the viewer key, and it only read
        assert answers and all(s < 400 for _, _, s in answers), [a for a in answers if a[2] >= 400]
        assert {m for m, _, _ in answers} == {"GET"}
        assert not errors, errors

        # ---- a click on the framed tile: the operator UI with the incident open, logged in by the same key
        page.click('#wall .tile[data-id="quay-1"]')
        _wait(page, "document.getElementById('detail') && document.getElementById('detail').dataset.id === 'ev00004'", 15)
        assert page.text_content("#who") == "wall-3 (viewer)"
        # the operator UI links back to the wall with the same key (no calibration link for a viewer)
        assert page.get_attribute("#to-wall", "href") == f"{base}/wall#key={VIEWER_KEY}"
        assert page.get_attribute("#to-report", "href") == f"{base}/report#key={VIEWER_KEY}"
        assert page.is_hidden("#to-calibrate")
        # ---- a tile without an incident: the operator UI with that camera's live view open; closed, the link goes
        page.goto(f"{base}/wall#key={VIEWER_KEY}")
        _wait(page, f"{TILES}.length === 3")
        page.click('#wall .tile[data-id="east-gate"]')
        _wait(page, "!document.getElementById('live-view').hidden", 15)
        assert page.text_content("#lv-title") == "Live: east-gate"
        _wait(page, "document.getElementById('lv-img').naturalWidth > 0", 10)
        page.click("#lv-close")
        assert "live=" not in page.evaluate("location.hash")
        assert not errors, errors
        browser.close()


def test_wall_with_the_sessions_login_on_the_live_service(live_service):
    """The whole service (a camera on a generated video analysed by the pipeline, a simulated drone, AIS): the wall
    with no credential shows the log-in form; logging in there gives the session token "/" uses too. The camera's
    tile (the drone and the AIS feed are no cameras) shows pictures the pipeline analysed, changing over time."""
    svc, det, base = live_service
    with _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"{base}/wall", width=1000, height=700)
        page.wait_for_selector("#login", state="visible")
        assert page.is_hidden("#wall")
        page.fill("#login-form input[name=username]", "ops")
        page.fill("#login-form input[name=password]", PASSWORD)
        page.click("#login-form button")
        _wait(page, f"{TILES}.length === 1", 15)
        assert page.evaluate(TILES) == ["quay-cam"]
        assert page.text_content("#who") == "ops (reviewer)"
        _wait(page, f"{_tile('quay-cam')}.querySelector('img').naturalWidth > 0", 20)
        assert len(_captures(page, "quay-cam", 3.5)) >= 2  # the video's frames as analysed, one after another
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        # the same session on the operator UI: no second log-in
        page.goto(f"{base}/")
        page.wait_for_selector("#main", state="visible", timeout=15000)
        assert page.is_hidden("#login") and page.text_content("#who") == "ops (reviewer)"
        assert not errors, errors
        browser.close()


def test_wall_under_a_path_prefix_the_proxy_strips(tmp_path):
    """Behind the prefix-stripping proxy of test_path_prefix (no root_path configured): "/seawatch/wall" loads its
    script and style, the live feed connects, the tiles show pictures, a tile links to the operator UI under the
    prefix, and nothing is asked outside it."""
    from test_path_prefix import StrippingProxy

    cams = FakeCameras(CAMERAS[:2])
    app = _app(tmp_path, cams)
    with serve_in_thread(app) as port, StrippingProxy(port) as proxy, _playwright() as p:
        browser = _browser(p)
        origin = f"http://127.0.0.1:{proxy.port}"
        page, errors = open_page(browser, f"{proxy.base}wall#key={VIEWER_KEY}", width=1000, height=600)
        for sid in CAMERAS[:2]:
            _wait(page, f"{_tile(sid)} && {_tile(sid)}.querySelector('img').naturalWidth > 0", 15)
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        assert page.get_attribute('#wall .tile[data-id="quay-1"]', "href") == f"{origin}/seawatch/#key={VIEWER_KEY}&live=quay-1"
        sent = {s.split("?")[0] for _, _, s in proxy.seen if s}
        for path in ("/wall", "/ui/wall.js", "/ui/wall.css", "/api/auth/me", "/api/sources", "/api/events",
                     "/api/live", "/api/sources/quay-1/latest.jpg"):
            assert path in sent, (path, sorted(sent))
        assert not [t for _, t, s in proxy.seen if s is None], proxy.seen  # nothing outside the prefix
        assert not errors, errors
        browser.close()
