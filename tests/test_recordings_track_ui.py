"""A drone camera's window in the "Recordings" panel of the operator UI (headless Chromium, against the real service):
the drone's flight log over the window drawn on the map as its recorded track (fitted once, checked in a screenshot at
the projected positions), a marker where the drone was at the capture time of the picture shown (moving when the video
is sought, gone outside the logged flight), the position said under the video; a window without a flight log says
so; a fixed camera, a newer request and closing the panel take the track away."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from seawatch.service.auth import hash_api_key  # noqa: E402

KEY = "track-ui-key-0123456789abcdef"
S = 1_000_000_000
LAT0_DEG, LON0_DEG, ALT_M = 52.84, 5.70, 40.0  # where the flight starts, flying east at 40 m
SPEED_M_S, FLIGHT_S, RATE_HZ = 5.0, 60, 10
TRACK_RGB = (0x00, 0xA6, 0xD6)  # COLOURS.recTrack in map.js
CAM = {"width_px": 160, "height_px": 120, "hfov_deg": 60}


def _geod():
    from pyproj import Geod

    return Geod(ellps="WGS84")


# the flight: along the parallel LAT0_DEG, east, its longitude linear in time (FLIGHT_S * SPEED_M_S metres in all)
LON_END_DEG = _geod().fwd(LON0_DEG, LAT0_DEG, 90.0, SPEED_M_S * FLIGHT_S)[0]


def flown(t0_ns: int, t_ns: int) -> tuple[float, float]:
    """(lat_deg, lon_deg) of the drone at ``t_ns`` (the flight starting at ``t0_ns``)."""
    f = (t_ns - t0_ns) / (FLIGHT_S * S)
    return LAT0_DEG, LON0_DEG + (LON_END_DEG - LON0_DEG) * f


def logged_in(t0_ns: int, start_ns: int, end_ns: int) -> int:
    """How many logged positions lie in ``[start_ns, end_ns]`` (both ends included, as the track endpoint reads)."""
    return sum(1 for i in range(FLIGHT_S * RATE_HZ) if start_ns <= t0_ns + i * S // RATE_HZ <= end_ns)


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    return abs(_geod().inv(a[1], a[0], b[1], b[0])[2])


def _get(base: str, path: str, **params):
    from urllib.parse import urlencode

    url = f"{base}{path}" + (f"?{urlencode(params)}" if params else "")
    with urllib.request.urlopen(urllib.request.Request(url, headers={"X-API-Key": KEY}), timeout=30) as r:
        return r.status, r.headers, r.read()


@pytest.fixture
def drone_recording_service(tmp_path: Path):
    """The real service with drone ``patrol-1`` (its link on a silent UDP port), its camera ``dcam`` (a dead RTSP URL)
    and a fixed camera ``quay``; before start-up, an hour-old flight in the drone's flight log (60 s east at 5 m/s,
    10 Hz) and three recordings of ``dcam`` from it (4 s each, at 20 s, 45.5 s and 57 s into the flight): (base URL,
    port, flight start ns)."""
    from conftest import free_udp_port, serve_in_thread
    from test_recording_safety import _record
    from test_recordings_api import ramp_clip

    from seawatch.drone.flight_log import FlightLogWriter
    from seawatch.drone.pose import AttitudeSample, PoseTimeline, PositionSample
    from seawatch.service.config import load_config
    from seawatch.service.runner import Service

    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "desk", "role": "operator", "key_sha256": hash_api_key(KEY)}]},
        "drones": [{"id": "patrol-1", "connection": f"udp:127.0.0.1:{free_udp_port()}", "camera": CAM}],
        "sources": [{"id": "dcam", "url": "rtsp://127.0.0.1:9/none", "drone": "patrol-1"},
                    {"id": "quay", "url": "rtsp://127.0.0.1:9/quay"}]})
    media = cfg.storage.resolved_media_dir()
    t0 = (time.time_ns() // S - 3600) * S
    flight = PoseTimeline("patrol-1", history_s=600)
    for i in range(FLIGHT_S * RATE_HZ):
        t = t0 + i * S // RATE_HZ
        lat, lon = flown(t0, t)
        flight.add_position(PositionSample(t, lat, lon, ALT_M, (0.0, SPEED_M_S, 0.0), 3, 1.0))
        flight.add_attitude(AttitudeSample(t, 0.0, 0.0, 90.0))
    assert FlightLogWriter(media / "flightlog", {"patrol-1": flight}).poll() == 2 * FLIGHT_S * RATE_HZ
    clip = ramp_clip(tmp_path / "ramp.mp4")  # 4 s
    _record(clip, media / "recordings", "dcam", t0 + 20 * S, segment_s=2.0)
    _record(clip, media / "recordings", "dcam", t0 + 57 * S, segment_s=2.0)  # past the flight's end after 2.9 s
    _record(clip, media / "recordings", "dcam", t0 + 45 * S + S // 2, segment_s=2.0)  # keyframes at 45.5, 46.5 ... s
    svc = Service(cfg).start()
    try:
        with serve_in_thread(svc.app) as port:
            yield f"http://127.0.0.1:{port}", port, t0
    finally:
        svc.stop()


def _track(page) -> dict | None:
    return page.evaluate("window.seawatch.recTrack()")


def _seek(page, to_s: float) -> dict:
    """Pause the video at ``to_s`` and answer the track state once the picture there is shown."""
    from test_service_ui import _wait

    page.evaluate(f"(() => {{ const v = document.getElementById('rec-video'); v.pause(); v.currentTime = {to_s}; }})()")
    _wait(page, f"(() => {{ const v = document.getElementById('rec-video'); return !v.seeking && "
                f"Math.abs(v.currentTime - {to_s}) < 0.05; }})()", 10)
    time.sleep(0.2)  # the seeked event's handler
    return _track(page)


def _drone_line(page) -> tuple[float, float, float]:
    text = page.text_content("#rec-drone")
    m = re.fullmatch(r"drone patrol-1 at (-?\d+\.\d{5}), (-?\d+\.\d{5}), (-?\d+) m", text)
    assert m, text
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def _track_pixels(page, lat: float, lon: float, dx: float = 0, dy: float = 0, r: int = 3) -> int:
    """Pixels of the track colour within ``r`` px of the map position of (lat, lon) moved by (dx, dy) px."""
    from test_service_ui import _count, _shot

    page.evaluate("window.seawatch.map.draw()")  # what is on the canvas now, not at the next animation frame
    p = page.evaluate(f"window.seawatch.map.project({lat}, {lon})")
    return _count(_shot(page), TRACK_RGB, p["x"] + dx, p["y"] + dy, r=r)


def _open(page, source: str, from_ns: int, len_s: int = 60) -> None:
    page.evaluate("([id, from, len]) => window.seawatch.openRecordings(id, from, len)", [source, float(from_ns), len_s])


@pytest.mark.slow
def test_ui_recordings_of_a_drone_camera_show_where_the_drone_flew(drone_recording_service):
    from test_service_ui import _browser, _playwright, _wait, open_page

    base, port, t0 = drone_recording_service
    sources = json.loads(_get(base, "/api/sources")[2])
    assert {s["source_id"]: s.get("drone_id") for s in sources if (s.get("kind") or "camera") == "camera"} == \
        {"dcam": "patrol-1", "quay": None}
    with _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}")
        _wait(page, "document.getElementById('live').className === 'on' && "
                    "!!document.querySelector('#sources tr[data-id=\"dcam\"]')", 30)  # start-up done (map fitted)
        assert _track(page) is None and page.evaluate("window.seawatch.map.recTrack") is None
        before = page.evaluate("window.seawatch.map.view")

        # the window from 10 s into the flight, 60 s: the logged positions in it, the map framed on them
        w_start, w_end = t0 + 10 * S, t0 + 70 * S
        _open(page, "dcam", w_start)
        _wait(page, "(() => { const t = window.seawatch.recTrack(); return t && t.loaded; })()", 20)
        in_window = logged_in(t0, w_start, w_end)
        tr = _track(page)
        assert tr["drone_id"] == "patrol-1" and tr["error"] is None and tr["points"] == in_window == 500, tr
        assert page.evaluate("window.seawatch.map.recTrack.points.length") == in_window
        view = page.evaluate("window.seawatch.map.view")
        assert view != before and not page.evaluate("window.seawatch.map.touched")
        # fitted: the track's ends (10 s and the flight's end, 250 m apart) well inside the 720 x 520 canvas, far apart
        ends = [page.evaluate(f"window.seawatch.map.project({lat}, {lon})")
                for lat, lon in (flown(t0, w_start), flown(t0, t0 + (FLIGHT_S * RATE_HZ - 1) * S // RATE_HZ))]
        assert all(0 < e["x"] < 720 and 0 < e["y"] < 520 for e in ends), ends
        assert ends[1]["x"] - ends[0]["x"] > 300, ends  # east is to the right
        # the panel opens beside the map (1280 px wide page): the track and the video are seen together, and the
        # event list moves to the next row
        boxes = page.evaluate("['map', 'rec-video', 'list-pane'].map((id) => { "
                              "const r = document.getElementById(id).getBoundingClientRect(); "
                              "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; })")
        m, v, lst = boxes
        assert v["left"] >= m["right"] and v["top"] < m["bottom"] and v["right"] <= 1280, boxes
        assert v["right"] - v["left"] >= 480, boxes  # the video shrinks to fit, not to a thumbnail
        assert lst["top"] >= m["bottom"], boxes

        # the video (4 s from 20 s into the flight): the marker where the drone was at the picture shown
        _wait(page, "(() => { const v = document.getElementById('rec-video'); return v.readyState >= 2 && "
                    "v.videoWidth > 0; })()", 40)
        first_ns = int(_get(base, "/api/sources/dcam/clip", start_ns=w_start, end_ns=w_end)[1]["X-Clip-First-Ns"])
        assert first_ns == t0 + 20 * S
        at1 = _seek(page, 1.05)  # between two logged positions (10 Hz)
        assert at1["marker"] is not None, at1
        assert abs(at1["at_ns"] - (first_ns + 1.05 * S)) < 2_000_000, at1  # the picture shown: 21.05 s into the flight
        assert metres(tuple(at1["marker"]), flown(t0, at1["at_ns"])) < 3.0, (at1, flown(t0, at1["at_ns"]))
        # interpolated between them (the flight is linear in time), not the nearest one's 0.25 m away
        assert metres(tuple(at1["marker"]), flown(t0, at1["at_ns"])) < 0.05, (at1, flown(t0, at1["at_ns"]))
        assert abs(at1["alt_m"] - ALT_M) < 0.01
        lat, lon, alt = _drone_line(page)  # under the video
        assert abs(lat - at1["marker"][0]) < 1e-5 and abs(lon - at1["marker"][1]) < 1e-5 and alt == ALT_M

        # sought ~2 s on: the marker 10 m further east, where the flight formula puts it
        at3 = _seek(page, 3.0)
        assert abs(at3["at_ns"] - (first_ns + 3.0 * S)) < 2_000_000, at3
        assert metres(tuple(at3["marker"]), flown(t0, at3["at_ns"])) < 3.0, (at3, flown(t0, at3["at_ns"]))
        moved = metres(tuple(at1["marker"]), tuple(at3["marker"]))
        assert abs(moved - 1.95 * SPEED_M_S) < 0.5 and at3["marker"][1] > at1["marker"][1], (at1, at3, moved)
        assert _drone_line(page)[1] == pytest.approx(at3["marker"][1], abs=1e-5)

        # a click on the track: the video goes to when the drone was there (22.5 s into the flight: 2.5 s into the clip);
        # a point of the track with no video in this window (40 s) says so
        def click_map(lat: float, lon: float) -> None:
            page.evaluate("document.getElementById('map').scrollIntoView()")  # the panel is below it on the page
            xy = page.evaluate(f"""(() => {{ const c = document.getElementById('map'), r = c.getBoundingClientRect(),
                p = window.seawatch.map.project({lat}, {lon});
                return [r.left + p.x * r.width / c.width, r.top + p.y * r.height / c.height]; }})()""")
            page.mouse.click(*xy)

        click_map(*flown(t0, t0 + 22_500_000_000))
        # the marker of the picture sought (not the one before it, until the seek's handler has run)
        _wait(page, "Math.abs(document.getElementById('rec-video').currentTime - 2.5) < 0.05 && "
                    "!!window.seawatch.recTrack().marker && "
                    f"Math.abs(window.seawatch.recTrack().at_ns - {t0 + 22_500_000_000}) < 50e6", 10)
        assert metres(tuple(_track(page)["marker"]), flown(t0, t0 + 22_500_000_000)) < 0.5
        click_map(*flown(t0, t0 + 40 * S))
        _wait(page, "document.getElementById('rec-note').textContent.startsWith('no video of the drone at ')", 10)
        assert abs(page.evaluate("document.getElementById('rec-video').currentTime") - 2.5) < 0.05  # not moved
        _seek(page, 3.0)

        # on the map (a screenshot): the track's colour along it (35 s into the flight, not yet flown at the picture),
        # none 40 px north of it, and the marker's ring 8 px north of the drone (off the east-west track)
        mid = flown(t0, t0 + 35 * S)
        assert _track_pixels(page, *mid) > 0
        assert _track_pixels(page, *mid, dy=-40, r=6) == 0
        assert _track_pixels(page, *at3["marker"], dy=-8, r=2) > 0
        assert _track_pixels(page, *at1["marker"], dy=-8, r=2) == 0  # the marker moved off there (10 m: > 20 px)

        # a window starting between two keyframes: the clip's lead-in pictures (before the window) have the drone's
        # position too (the track is fetched from before the window), while the track drawn is the window's
        lead_start = t0 + 47 * S  # between the keyframes at 46.5 and 47.5 s
        lead_first = int(_get(base, "/api/sources/dcam/clip", start_ns=lead_start, end_ns=lead_start + 3 * S)[1]["X-Clip-First-Ns"])
        assert lead_first < lead_start, (lead_first, lead_start)
        _open(page, "dcam", lead_start)
        _wait(page, "(() => { const t = window.seawatch.recTrack(); return t && t.loaded && "
                    "document.getElementById('rec-video').readyState >= 2; })()", 40)
        assert _track(page)["points"] == logged_in(t0, lead_start, lead_start + 60 * S)
        at0 = _seek(page, 0.1)
        assert at0["at_ns"] < lead_start and at0["marker"] is not None, at0
        assert metres(tuple(at0["marker"]), flown(t0, at0["at_ns"])) < 0.05, at0

        # the window over the flight's end (the second recording, 57-61 s): a marker while it flew, none past the end
        _open(page, "dcam", t0 + 50 * S)
        _wait(page, "(() => { const t = window.seawatch.recTrack(); return t && t.loaded && "
                    "document.getElementById('rec-video').readyState >= 2; })()", 40)
        assert _track(page)["points"] == logged_in(t0, t0 + 50 * S, t0 + 110 * S) == 100  # 50.0 .. 59.9 s
        at = _seek(page, 1.0)
        assert at["marker"] is not None and metres(tuple(at["marker"]), flown(t0, at["at_ns"])) < 3.0, at
        at = _seek(page, 3.5)  # 60.5 s: after the last logged position
        assert at["marker"] is None and at["at_ns"] is None, at
        assert page.evaluate("window.seawatch.map.recMarker") is None
        assert page.text_content("#rec-drone") == "drone patrol-1: no logged position within 5 s of the picture shown"
        # the window reaches past the camera's last recorded picture an hour ago: said so, not "so far"
        note = page.text_content("#rec-note")
        assert " · nothing recorded after " in note and "so far" not in note, note

        # a window with no flight log (nor video): said, nothing on the map
        _open(page, "dcam", t0 + 300 * S)
        _wait(page, "(() => { const t = window.seawatch.recTrack(); return t && t.loaded; })()", 20)
        tr = _track(page)
        assert tr["points"] == 0 and tr["marker"] is None, tr
        assert page.text_content("#rec-drone") == "no flight log of patrol-1 for this window"
        assert page.evaluate("window.seawatch.map.recTrack") is None

        # a fixed camera asked for right after the drone camera: the drone camera's answers, coming later, are dropped
        got = page.evaluate("""async ([f]) => {
            const a = window.seawatch.openRecordings('dcam', f, 60);
            await window.seawatch.openRecordings('quay', f, 60);
            await a;
            return [window.seawatch.recTrack(), window.seawatch.map.recTrack,
                    document.getElementById('rec-drone').textContent];
        }""", [float(w_start)])
        assert got == [None, None, ""], got
        assert page.evaluate("document.getElementById('rec-source').value") == "quay"
        late = flown(t0, t0 + 55 * S)  # on the window's track, and on the map as framed for the window over the end
        assert 0 < page.evaluate(f"window.seawatch.map.project({late[0]}, {late[1]}).x") < 720
        assert _track_pixels(page, *late, r=6) == 0

        # the drone camera again (framed on its track again: the last framing was another window's), then the panel
        # closed: the track and its marker gone
        _open(page, "dcam", w_start)
        _wait(page, "(() => { const t = window.seawatch.recTrack(); return t && t.loaded; })()", 20)
        _wait(page, "document.getElementById('rec-video').readyState >= 2", 40)
        assert _seek(page, 2.0)["marker"] is not None
        assert _track_pixels(page, *mid) > 0
        page.click("#rec-close")
        assert _track(page) is None
        assert page.evaluate("[window.seawatch.map.recTrack, window.seawatch.map.recMarker]") == [None, None]
        assert page.text_content("#rec-drone") == ""
        assert _track_pixels(page, *mid, r=6) == 0

        # the user moves the map: a track shown again is not framed any more
        page.locator("#map").scroll_into_view_if_needed()
        box = page.locator("#map").bounding_box()
        page.mouse.move(box["x"] + 300, box["y"] + 300)
        page.mouse.down()
        page.mouse.move(box["x"] + 360, box["y"] + 330, steps=5)
        page.mouse.up()
        assert page.evaluate("window.seawatch.map.touched")
        moved_view = page.evaluate("window.seawatch.map.view")
        _open(page, "dcam", t0 + 5 * S, 30)
        _wait(page, "(() => { const t = window.seawatch.recTrack(); return t && t.loaded; })()", 20)
        assert _track(page)["points"] == logged_in(t0, t0 + 5 * S, t0 + 35 * S) == 301  # 5.0 .. 35.0 s
        assert page.evaluate("window.seawatch.map.view") == moved_view

        page.click("#rec-close")
        assert _track(page) is None
        assert errors == []
        browser.close()
