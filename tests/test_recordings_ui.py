"""The "Recordings" panel of the operator UI in headless Chromium, against the real service recording a generated video
played as a live camera: any window of the camera's recording is shown (the coverage bar with what is recorded and the
camera's events, the video with the capture time of the picture shown, partial coverage said), downloaded, and what
is seen in it reported as an event with the spot marked in the picture (checked through the API); a window with no
recording says so, naming the camera and where its video is."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import warnings
from datetime import datetime, timezone

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from seawatch.service.auth import hash_api_key  # noqa: E402

KEY = "recordings-ui-key-0123456789abcdef"
S = 1_000_000_000
VIDEO_PX = (160, 120)  # the generated camera's picture (width, height)
CAMERA = {"lat_deg": 52.8420, "lon_deg": 5.7000, "alt_m": 12.0, "pan_deg": 150.0, "tilt_deg": -25.0}
SPOT_PX = (100, 50)  # where the reviewer marks the smoke, in the recorded picture's pixels (on the ground: located)
NOTE = "smoke behind the crane, missed by the detector"


def _get(base: str, path: str, **params):
    from urllib.parse import urlencode

    url = f"{base}{path}" + (f"?{urlencode(params)}" if params else "")
    with urllib.request.urlopen(urllib.request.Request(url, headers={"X-API-Key": KEY}), timeout=30) as r:
        return r.status, r.headers, r.read()  # headers: case-insensitive (the server sends them lower-case)


def _json(base: str, path: str, **params):
    return json.loads(_get(base, path, **params)[2])


def _utc_ns(text: str) -> int:
    """'2024-05-01 12:00:03.250' (UTC) as ns ('2024-05-01 12:00' too: a browser writes a time input's hh:mm:00 so)."""
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return round(datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp() * 1000) * 1_000_000


def _ui(p, port: int):
    """Headless Chromium on the UI, logged in with the operator key: (browser, page, the page's script errors)."""
    from test_service_ui import _browser, open_page

    browser = _browser(p)
    return (browser, *open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}", accept_downloads=True))


@pytest.fixture
def recording_service(tmp_path):
    """The real service recording a looped generated video as a live camera (2 s segments), with a stand-in fire
    detector, behind uvicorn: (service, base URL) once a few seconds of video and a fire event are on record."""
    from conftest import serve_in_thread
    from test_service_serve import file_camera_service

    with file_camera_service(
            tmp_path, seconds=3.0, size=VIDEO_PX,
            storage={"data_dir": str(tmp_path / "data"), "recording": {"segment_s": 2.0}},
            auth={"api_keys": [{"name": "desk", "role": "operator", "key_sha256": hash_api_key(KEY)}]},
            sources=[{"id": "quay-1", "url": str(tmp_path / "quay.mp4"), "models": ["stub"], "analysis_fps": 5,
                      "calibration": {"camera": {"width_px": VIDEO_PX[0], "height_px": VIDEO_PX[1], "hfov_deg": 60},
                                      "surveyed": CAMERA}}]) as svc:
        with serve_in_thread(svc.app) as port:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 40
            while True:  # several seconds recorded (a finished segment among them) and the stub's fire reported
                rec = _json(base, "/api/sources/quay-1/recordings")
                fires = _json(base, "/api/events", source="quay-1", type="fire")["events"]
                if (rec["spans"] and rec["segments"] >= 1 and rec["newest_ns"] - rec["oldest_ns"] >= 6 * S and fires):
                    break
                assert time.monotonic() < deadline, (rec, fires)
                time.sleep(0.5)
            yield svc, base, port


@pytest.mark.slow
def test_ui_recordings_play_a_window_download_it_and_report_what_is_seen(recording_service):
    from test_service_ui import _playwright, _wait

    _svc, base, port = recording_service
    with _playwright() as p:
        browser, page, errors = _ui(p, port)
        # the sources table's "Recordings" on the camera: the last 5 minutes (the default length); again with 1 min
        # chosen: the last minute
        page.wait_for_selector('#sources tr[data-id="quay-1"] .rec-act')
        assert page.is_hidden("#recordings")
        opened_ns = time.time_ns()
        page.click('#sources tr[data-id="quay-1"] .rec-act')
        assert page.is_visible("#recordings")
        win_from = page.evaluate("document.getElementById('rec-from').value")
        assert page.evaluate("document.getElementById('rec-len').value") == "300"
        assert abs(_utc_ns(win_from.replace("T", " ")) + 300 * S - opened_ns) < 2 * S, (win_from, opened_ns)
        page.select_option("#rec-len", "60")
        opened_ns = time.time_ns()
        page.click('#sources tr[data-id="quay-1"] .rec-act')
        assert page.evaluate("document.getElementById('rec-source').value") == "quay-1"
        assert page.evaluate("[...document.getElementById('rec-source').options].map((o) => o.value)") == ["quay-1"]
        win_from = page.evaluate("document.getElementById('rec-from').value")
        start_ns = _utc_ns(win_from.replace("T", " "))
        end_ns = start_ns + 60 * S
        assert abs(end_ns - opened_ns) < 2 * S, (win_from, opened_ns)  # the window ends now

        # the coverage bar: what is recorded (the service started seconds ago: the window's end), the fire event
        _wait(page, "document.querySelectorAll('#rec-bar .rec-span').length >= 1", 20)
        spans = page.evaluate("[...document.querySelectorAll('#rec-bar .rec-span')].map((e) => [e.dataset.startNs, "
                              "e.dataset.endNs, e.getBoundingClientRect().width])")
        bar_w = page.evaluate("document.getElementById('rec-bar').getBoundingClientRect().width")
        for a, b, w in spans:
            assert start_ns <= int(a) < int(b) <= end_ns + 2 * S, (spans, start_ns, end_ns)
            assert 0 < w < bar_w * 0.5  # seconds of a minute, not the whole bar
        oldest_ns = _json(base, "/api/sources/quay-1/recordings")["oldest_ns"]
        assert abs(int(spans[0][0]) - oldest_ns) < S // 2  # the window began before anything was recorded
        _wait(page, "document.querySelectorAll('#rec-bar .rec-tick').length >= 1", 10)
        tick_id = page.evaluate("document.querySelector('#rec-bar .rec-tick').dataset.id")
        fire = _json(base, f"/api/events/{tick_id}")
        assert fire["type"] == "fire" and fire["end_ns"] is None  # the stub's fire burns on
        assert "before" not in page.evaluate("document.querySelector('#rec-bar .rec-tick').className")

        # the video plays (a decoded picture of the recorded size, time moving on), the note saying the capture time
        _wait(page, "(() => { const v = document.getElementById('rec-video'); return v.readyState >= 2 && "
                    "v.videoWidth > 0 && v.currentTime > 0.5; })()", 40)
        assert page.evaluate("[document.getElementById('rec-video').videoWidth, "
                             "document.getElementById('rec-video').videoHeight]") == list(VIDEO_PX)
        note = page.text_content("#rec-note")
        m = re.match(r"picture of (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC", note)
        assert m, note
        shown_ns = _utc_ns(m.group(1))
        assert start_ns <= shown_ns <= end_ns, (note, start_ns, end_ns)
        # the window began before the service did: partial, and the note says what was recorded
        assert "partial: recorded " in note, note
        t1 = page.evaluate("document.getElementById('rec-video').currentTime")
        _wait(page, f"document.getElementById('rec-video').currentTime > {t1} + 0.3", 10)
        _wait(page, f"!document.getElementById('rec-note').textContent.includes({m.group(1)!r})", 10)

        # a click on the bar goes to that time (a few seconds into the clip, clear of the event ticks)
        page.evaluate("document.getElementById('rec-video').pause()")
        first_ns = int(_get(base, "/api/sources/quay-1/clip", start_ns=start_ns, end_ns=end_ns)[1]["X-Clip-First-Ns"])
        assert start_ns <= first_ns <= int(spans[0][0]) + S
        box = page.locator("#rec-bar").bounding_box()
        ticks_x = page.evaluate("[...document.querySelectorAll('#rec-bar .rec-tick')].map((e) => "
                                "e.getBoundingClientRect().left + e.getBoundingClientRect().width / 2)")
        to_x = lambda sec: (first_ns + sec * S - start_ns) / (end_ns - start_ns) * box["width"]  # noqa: E731
        seek_s = next(sec for sec in (4.0, 3.0, 5.0, 2.0) if all(abs(box["x"] + to_x(sec) - t) > 8 for t in ticks_x))
        page.click("#rec-bar", position={"x": to_x(seek_s), "y": box["height"] / 2})
        _wait(page, f"Math.abs(document.getElementById('rec-video').currentTime - {seek_s}) < 0.3", 5)

        # Download: the window's MP4 under the server's name
        with page.expect_download() as got:
            page.click("#rec-download")
        dl = got.value
        assert dl.suggested_filename.startswith("seawatch-quay-1-") and dl.suggested_filename.endswith(".mp4")
        data = open(dl.path(), "rb").read()
        assert data[4:8] == b"ftyp" and len(data) > 1000

        # mark the spot: a click in the black bars beside the picture is refused, one in the picture is kept
        page.check("#rec-mark")
        assert page.is_visible("#rec-pick")
        assert page.evaluate("document.getElementById('rec-video').paused")
        vbox = page.evaluate("(() => { const v = document.getElementById('rec-video'); return [v.clientWidth, v.clientHeight]; })()")
        scale = min(vbox[0] / VIDEO_PX[0], vbox[1] / VIDEO_PX[1])
        x0, y0 = (vbox[0] - VIDEO_PX[0] * scale) / 2, (vbox[1] - VIDEO_PX[1] * scale) / 2
        assert x0 > 20, vbox  # the 4:3 picture in the 16:9 player: bars left and right (letterboxing under test)
        page.click("#rec-pick", position={"x": x0 / 2, "y": vbox[1] / 2})
        assert "outside the picture" in page.text_content("#rec-report-error")
        assert page.locator("#rec-view .rec-marker").count() == 0
        page.click("#rec-pick", position={"x": x0 + SPOT_PX[0] * scale, "y": y0 + SPOT_PX[1] * scale})
        assert page.locator("#rec-view .rec-marker").count() == 1
        assert page.is_hidden("#rec-pick")
        marked = page.text_content("#rec-reported")
        mm = re.match(r"spot marked at \((\d+), (\d+)\) px, (\S+ \S+) UTC", marked)
        assert mm, marked
        marked_ns = _utc_ns(mm.group(3))
        assert start_ns <= marked_ns <= end_ns

        # report it as smoke
        page.select_option("#rec-type", "smoke")
        page.select_option("#rec-severity", "high")
        page.fill("#rec-report-note", NOTE)
        page.click("#rec-report-btn")
        _wait(page, "document.getElementById('rec-reported').textContent.startsWith('reported: smoke ') || "
                    "document.getElementById('rec-report-error').textContent !== ''", 30)
        assert page.text_content("#rec-report-error") == ""
        ev_id = page.text_content("#rec-reported").split()[-1]
        _wait(page, f"document.getElementById('detail').dataset.id === {ev_id!r}", 10)  # selected
        _wait(page, f"!!document.querySelector('#events tr[data-id=\"{ev_id}\"]')", 10)  # listed

        ev = _json(base, f"/api/events/{ev_id}")
        assert ev["type"] == "smoke" and ev["severity"] == "high" and ev["source_id"] == "quay-1"
        assert ev["attributes"]["note"] == NOTE and ev["attributes"]["reported_by"] == "key:desk"
        px = ev["attributes"]["point_px"]
        assert abs(px[0] - SPOT_PX[0]) <= 3 and abs(px[1] - SPOT_PX[1]) <= 3, px
        assert ev["geo"] is not None, ev.get("geo_reason")  # the marked spot, through the camera's calibration
        assert abs(ev["at_ns"] - marked_ns) < 0.5 * S  # the picture the spot was marked on
        assert ev["snapshot"] is not None and ev["snapshot_url"]
        status, headers, jpg = _get(base, ev["snapshot_url"])
        import cv2

        img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[:2] == (VIDEO_PX[1], VIDEO_PX[0])
        clip = ev["clip"]
        assert clip is not None and clip["start_ns"] <= ev["at_ns"] <= clip["end_ns"]
        # the minute around the picture, inside the window shown
        assert start_ns <= ev["start_ns"] <= ev["at_ns"] <= ev["end_ns"] <= end_ns
        assert ev["end_ns"] - ev["start_ns"] <= 60 * S + 1000
        assert any(r["status"] == "acknowledged" and NOTE in (r.get("note") or "") for r in ev["review_history"]), ev["review_history"]
        assert ev["labels"] == ["smoke"] and "box_drawn" not in ev["attributes"]  # the label preset from the type

        # a boat with its box drawn (a drag on the paused picture): labelled vessel, its box the subject, located at
        # its bottom centre; a reviewer's confirmation makes it a training label (seawatch reviews export)
        # "mark the spot" takes only while a picture is shown (else it unticks itself: "no video shown"), and the page
        # must rest (the report just made opened its event with a smooth scroll) before the drag's positions are taken
        for _ in range(20):
            page.check("#rec-mark")
            if page.is_visible("#rec-pick"):
                break
            page.wait_for_timeout(250)
        _wait(page, "new Promise(r => { const y = window.scrollY; setTimeout(() => r(window.scrollY === y), 200); })", 5)
        diag = ("[document.getElementById('rec-pick').hidden, document.getElementById('rec-report-error').textContent, "
                "JSON.stringify(document.getElementById('rec-pick').getBoundingClientRect())]")
        # the press through the locator: Playwright places it where the pick layer is at that moment and checks that
        # the layer is what receives it (a bounding box read earlier can be stale when the page above it re-renders:
        # the press then fell on another element and no drag began); the moves after it go to the layer anyway
        # (pointer capture), from its box read after the press
        pick_layer = page.locator("#rec-pick")
        pick_layer.hover(position={"x": x0 + 40 * scale, "y": y0 + 30 * scale})
        page.mouse.down()
        pick = pick_layer.bounding_box()
        to_page = lambda x, y: (pick["x"] + x0 + x * scale, pick["y"] + y0 + y * scale)  # noqa: E731
        page.mouse.move(*to_page(70, 60), steps=4)
        assert page.is_visible("#rec-drag-box"), page.evaluate(diag)
        page.mouse.move(*to_page(90, 80), steps=4)
        page.mouse.up()
        assert page.is_hidden("#rec-pick") and page.is_hidden("#rec-drag-box")
        assert page.text_content("#rec-reported").startswith("box drawn (")
        assert page.locator("#rec-view .rec-box").count() == 1
        page.select_option("#rec-type", "vessel_in_zone")
        assert page.evaluate("document.getElementById('rec-label').value") == "vessel"
        page.click("#rec-report-btn")
        _wait(page, "document.getElementById('rec-reported').textContent.startsWith('reported: vessel_in_zone ') || "
                    "document.getElementById('rec-report-error').textContent !== ''", 30)
        assert page.text_content("#rec-report-error") == ""
        boat = _json(base, f"/api/events/{page.text_content('#rec-reported').split()[-1]}")
        assert boat["labels"] == ["vessel"] and boat["attributes"]["box_drawn"] is True
        bx = boat["snapshot"]["xyxy_px"]
        assert all(abs(a - b) <= 2 for a, b in zip(bx, (40, 30, 90, 80))), bx
        assert boat["attributes"]["point_px"] == [(bx[0] + bx[2]) / 2, bx[3]]
        assert boat["geo"] is not None, boat.get("geo_reason")

        # the event's "Recordings around" (5 min): its camera from 2 minutes before it started, a window that ends
        # minutes from now: what is recorded so far plays at once (cut at the newest recorded picture), and says so
        page.select_option("#rec-len", "300")
        page.wait_for_selector("#d-recordings:not([hidden])")
        t_click = time.monotonic()
        page.click("#d-recordings")
        expect_from = datetime.fromtimestamp(ev["start_ns"] // S - 120, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        # (a browser writes a time of hh:mm:00 as "hh:mm")
        _wait(page, f"(v => v.length === 16 ? v + ':00' : v)(document.getElementById('rec-from').value) === {expect_from!r}", 5)
        assert page.text_content("#rec-title").startswith("Recordings: quay-1, ")
        _wait(page, "document.getElementById('rec-note').textContent.includes('so far (Show again for more)')", 20)
        assert time.monotonic() - t_click < 10  # not the server's 15 s wait for video still to come
        so_far = re.search(r"recorded up to (\d\d:\d\d:\d\d) UTC so far", page.text_content("#rec-note")).group(1)
        h_, m_, s_ = (int(x) for x in so_far.split(":"))
        behind_s = (time.time() - (h_ * 3600 + m_ * 60 + s_)) % 86400  # seconds of the UTC day (across midnight too)
        assert behind_s < 15, (so_far, behind_s)
        _wait(page, "document.getElementById('rec-video').readyState >= 2", 20)

        # the ticks on that bar: the fire and the reported smoke; a click on one opens its event
        _wait(page, f"!!document.querySelector('#rec-bar .rec-tick[data-id=\"{ev_id}\"]') && "
                    f"!!document.querySelector('#rec-bar .rec-tick[data-id=\"{tick_id}\"]')", 20)
        page.click(f'#rec-bar .rec-tick[data-id="{tick_id}"]')
        _wait(page, f"document.getElementById('detail').dataset.id === {tick_id!r}", 10)
        page.click(f'#rec-bar .rec-tick[data-id="{ev_id}"]')
        _wait(page, f"document.getElementById('detail').dataset.id === {ev_id!r}", 10)
        # the smoke and the boat were reported at the same start: their ticks share the bar's height, each clickable
        boxes = page.evaluate(f"""[{ev_id!r}, {boat['id']!r}].map((id) => {{
            const r = document.querySelector(`#rec-bar .rec-tick[data-id="${{id}}"]`).getBoundingClientRect();
            return [r.left, r.top, r.bottom]; }})""")
        assert abs(boxes[0][0] - boxes[1][0]) < 1 and (boxes[0][2] <= boxes[1][1] or boxes[1][2] <= boxes[0][1]), boxes
        page.click(f'#rec-bar .rec-tick[data-id="{boat["id"]}"]')
        _wait(page, f"document.getElementById('detail').dataset.id === {boat['id']!r}", 10)

        # a window starting after the fire began, while it burns on: its tick at the window's left edge, marked
        later_ns = (fire["start_ns"] // S + 1) * S
        page.evaluate(f"window.seawatch.openRecordings('quay-1', {later_ns}, 60)")
        _wait(page, f"!!document.querySelector('#rec-bar .rec-tick.before[data-id=\"{tick_id}\"]')", 20)
        assert page.evaluate(f"document.querySelector('#rec-bar .rec-tick[data-id=\"{tick_id}\"]').style.left") in ("0%", "0.000%")
        # a window whose clip starts at the keyframe before it (a whole second between keyframes): the spot marked
        # on that lead-in picture is reported at that picture's own time, not at the window's start
        rec_info = _json(base, "/api/sources/quay-1/recordings")
        later_ns, lead_first_ns = None, None
        for w in range(rec_info["oldest_ns"] // S + 1, rec_info["newest_ns"] // S - 1):
            first = int(_get(base, "/api/sources/quay-1/clip", start_ns=w * S, end_ns=rec_info["newest_ns"])[1]["X-Clip-First-Ns"])
            # a lead-in longer than the player's first picture: libx264's B-frames put it 0.2 s into the clip
            # (a lead-in of 0.15 s showed no lead-in picture at all); keyframes every 3 s (the looped file), so some
            # whole second has one of 0.5 s or more
            if first < w * S - S // 2:
                later_ns, lead_first_ns = w * S, first
                break
        assert later_ns is not None, rec_info  # keyframes fall between whole seconds somewhere in the recording
        page.evaluate(f"window.seawatch.openRecordings('quay-1', {later_ns}, 60)")
        # (a time on the whole minute reads hh:mm, as the browser writes it)
        later_from = datetime.fromtimestamp(later_ns // S, tz=timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')
        _wait(page, f"(v => v.length === 16 ? v + ':00' : v)(document.getElementById('rec-from').value).startsWith({later_from!r})", 5)
        _wait(page, "document.getElementById('rec-video').readyState >= 2 && "
                    "document.getElementById('rec-note').textContent.startsWith('picture of ')", 20)
        # paused at the clip's first picture (asked again until the player rests there: its autoplay may start after
        # an early pause)
        for _ in range(20):
            page.evaluate("(() => { const v = document.getElementById('rec-video'); v.pause(); v.currentTime = 0; })()")
            _wait(page, "!document.getElementById('rec-video').seeking", 5)
            page.wait_for_timeout(100)
            if page.evaluate("(() => { const v = document.getElementById('rec-video'); return v.paused && v.currentTime < 0.3; })()"):
                break
        shown_ns = lead_first_ns + round(page.evaluate("document.getElementById('rec-video').currentTime") * S)
        # a lead-in picture is shown (the lead-in is at least 0.1 s)
        assert shown_ns < later_ns, (shown_ns, later_ns, lead_first_ns)
        page.check("#rec-mark")
        page.click("#rec-pick", position={"x": x0 + SPOT_PX[0] * scale, "y": y0 + SPOT_PX[1] * scale})
        page.select_option("#rec-type", "smoke")
        page.click("#rec-report-btn")
        _wait(page, "document.getElementById('rec-reported').textContent.startsWith('reported: smoke ') || "
                    "document.getElementById('rec-report-error').textContent !== ''", 30)
        assert page.text_content("#rec-report-error") == ""
        lead = _json(base, f"/api/events/{page.text_content('#rec-reported').split()[-1]}")
        assert abs(lead["at_ns"] - shown_ns) < S // 10, (lead["at_ns"], shown_ns, later_ns)
        assert lead["start_ns"] <= lead["at_ns"] <= lead["end_ns"] and lead["geo"] is not None

        # a year ago: nothing recorded; the note names the camera and where its video is
        year_ago = (time.time_ns() // S - 365 * 86400) * S
        page.evaluate(f"window.seawatch.openRecordings('quay-1', {year_ago}, 60)")
        _wait(page, "document.getElementById('rec-note').textContent.startsWith('no recording of quay-1 between')", 20)
        text = page.text_content("#rec-note")
        assert "recorded video of quay-1 exists from " in text, text
        assert page.evaluate("document.getElementById('rec-video').getAttribute('src')") is None
        assert page.locator("#rec-bar .rec-span").count() == 0
        # a window longer than the server cuts as one clip: refused, said so
        page.evaluate(f"window.seawatch.openRecordings('quay-1', {year_ago}, 3600)")
        _wait(page, "document.getElementById('rec-note').textContent.startsWith('this window cannot be shown')", 10)
        page.click("#rec-close")
        assert page.is_hidden("#recordings")
        assert not errors, errors
        browser.close()
