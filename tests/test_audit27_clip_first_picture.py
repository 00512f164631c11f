"""A clip's first picture is at video time 0, as ``X-Clip-First-Ns`` says (the capture time of the clip's first
picture, "video time 0", so a player's position maps to a capture time: the Recordings view's "picture of
14:14:57.011 UTC", the drone's position under the video, the time of a report made from the picture shown).

A camera sending B-frames (the demo's yard camera: two, at 20 fps) had its clips remuxed with the first picture's
presentation time at the reorder delay (0.1 s there): Chromium showed the first picture at currentTime 0.1, so every
capture time the Recordings view showed was 0.1 s late and a report's snapshot was the picture two frames after the
one marked. The clip's timestamps now start at the first picture (its decode times before 0, an MP4 edit list)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from seawatch.streams.recording import read_segment_packets, write_mp4
from test_streams import S, _ffmpeg

T0 = 1_800_000_000 * S


@pytest.fixture(scope="module")
def bframe_clip(tmp_path_factory) -> Path:
    """3 s, 320x240, 25 fps, H.264 main with 2 B-frames, 1 s GOP: the first picture of a GOP is shown 0.08 s after
    it is decoded."""
    path = tmp_path_factory.mktemp("media") / "bframes.mp4"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v",
                    "main", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-bf", "2", "-b_strategy", "0",
                    "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)
    return path


def _first_pts_s(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time,flags",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=30, check=True).stdout
    return min(float(line.split(",")[0]) for line in out.split())


def test_clip_of_a_b_frame_camera_shows_its_first_picture_at_video_time_0(bframe_clip, tmp_path):
    from test_service_ui import _browser, _playwright, _wait

    info, packets = read_segment_packets(bframe_clip, T0)
    assert any(p.pts > p.dts for p in packets)  # B-frames: pictures shown after they are decoded
    start = next(i for i, p in enumerate(packets) if p.is_keyframe and p.capture_time_ns >= T0 + S)
    clip = write_mp4(packets[start:], info, tmp_path / "c.mp4")
    assert _first_pts_s(clip) == 0.0  # was 0.08: the reorder delay of 2 B-frames at 25 fps

    with _playwright() as p:  # what the Recordings view reads: the position of the picture shown
        browser = _browser(p)
        page = browser.new_page()
        page.route("http://clip.test/c.mp4", lambda r: r.fulfill(path=str(clip), content_type="video/mp4"))
        page.route("http://clip.test/", lambda r: r.fulfill(
            body="<!doctype html><video id=v muted src='c.mp4'></video>", content_type="text/html"))
        page.goto("http://clip.test/")
        _wait(page, "document.getElementById('v').readyState >= 2", 20)
        shown = page.evaluate("""new Promise((done) => { const v = document.getElementById('v');
            v.requestVideoFrameCallback((now, md) => done([v.currentTime, md.mediaTime])); v.currentTime = 0.001; })""")
        assert shown == [0, 0], shown  # the first picture (captured at X-Clip-First-Ns) at video time 0: was 0.08
        browser.close()
