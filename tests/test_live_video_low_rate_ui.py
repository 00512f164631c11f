"""The Live view of a camera that sends few pictures a second (the embedded demo's harbour camera: 2 a second, one
keyframe per 10 s loop) in headless Chromium: the video must play, not stay blank while the page jumps to the newest
pictures again and again (a jump to 0.3 s before the end never finished: Chromium plays only with a few pictures
decoded ahead, 2 s of them at this rate)."""

from __future__ import annotations

import json
import re
import time
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from seawatch.service.runner import Service  # noqa: E402

from test_live_video import _ui  # noqa: E402
from test_service_serve import FireEverywhere, serve_settings, write_video  # noqa: E402

VIDEO = "document.getElementById('lv-video')"


def _declaring(declared_fps):
    """A WebSocket route that passes the video through but says the camera declares ``declared_fps`` (a camera that
    declares 25 pictures a second and sends 2; or, with None, one that declares no rate)."""
    def handler(ws) -> None:
        server = ws.connect_to_server()

        def from_server(message) -> None:
            if isinstance(message, str) and json.loads(message).get("kind") == "video":
                message = json.dumps({**json.loads(message), "rate_fps": declared_fps})
            ws.send(message)

        server.on_message(from_server)

    return handler


@pytest.mark.slow
@pytest.mark.parametrize("declared_fps", ["as sent", 25.0])
def test_ui_live_video_of_a_two_pictures_a_second_camera_plays(tmp_path, declared_fps):
    """2 pictures a second, one GOP of 10 s (libx264's default keyframe interval is longer than the clip): within
    10 s of opening the Live view Chromium shows pictures (decoded frames counted, no seek left pending, time
    advancing), and stays within a few seconds of the newest picture. Also when the camera declares 25 a second
    (the interval its pictures show counts)."""
    from conftest import serve_in_thread
    from test_service_ui import _playwright, _wait

    video = tmp_path / "harbour.mp4"
    write_video(video, seconds=10.0, fps=2, size=(320, 180))
    svc = Service(serve_settings(tmp_path, video), detectors={"stub": FireEverywhere()}, file_pace="realtime",
                  loop_files=True).start()
    try:
        with serve_in_thread(svc.app) as port, _playwright() as p:
            browser, page, errors = _ui(p, port)
            if declared_fps != "as sent":
                page.route_web_socket(re.compile(r".*/api/sources/quay-1/video$"), _declaring(declared_fps))
            page.wait_for_selector('#sources tr[data-id="quay-1"] .live-act')
            time.sleep(3)  # a GOP of a few pictures buffered: the viewer starts behind the newest one, and jumps
            page.click('#sources tr[data-id="quay-1"] .live-act')
            _wait(page, f"!{VIDEO}.hidden", 20)
            page.wait_for_timeout(4000)
            page.evaluate(f"window.__seeks = 0; {VIDEO}.addEventListener('seeking', () => window.__seeks++)")
            page.wait_for_timeout(6000)
            # no jump after jump to the newest pictures (each one cut the last short: 4 in these 6 s before the fix)
            assert page.evaluate("window.__seeks") <= 1
            state = page.evaluate(f"""(() => {{ const v = {VIDEO}, b = v.buffered;
                return {{frames: v.getVideoPlaybackQuality().totalVideoFrames, seeking: v.seeking, t: v.currentTime,
                         ready: v.readyState, behind: b.length ? b.end(b.length - 1) - v.currentTime : null}}; }})()""")
            assert state["frames"] >= 8, state  # ~16 pictures came in 8 s; blank before the fix (0-2, always seeking)
            assert not state["seeking"] and state["ready"] >= 2, state
            assert state["behind"] is not None and state["behind"] < 5.0, state  # near the newest picture still
            t1 = state["t"]
            page.wait_for_timeout(2000)
            assert page.evaluate(f"{VIDEO}.currentTime") > t1 + 1.0  # it plays on
            assert page.text_content("#lv-status").startswith("live video 320×180")
            assert not errors, errors
            browser.close()
    finally:
        svc.stop()
