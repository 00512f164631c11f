"""Live video of cameras that do not send H.264 (``service.live_video``): an H.265 (and an MJPEG) file played as a
camera through the real service, re-encoded to H.264 for the browser; watched over real WebSockets, the fMP4 bytes
decoded with PyAV, and played by headless Chromium."""

from __future__ import annotations

import contextlib
import subprocess
import time
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from seawatch.service.runner import Service  # noqa: E402

from test_live_video import _boxes, _decode, _decode_time, _mjpeg_video, _read_video  # noqa: E402
from test_service_serve import KEY, FireEverywhere, serve_settings  # noqa: E402

FPS = 10
H = {"X-API-Key": KEY}


def _h265_video(path, seconds: float = 3.0, size=(640, 360), keyint: int = 20, x265: str = "") -> None:
    """An H.265 clip (libx265, its default B-frames and open GOPs unless ``x265`` says otherwise, a keyframe every
    ``keyint`` pictures)."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={FPS}", "-t", str(seconds), "-c:v", "libx265",
                    "-preset", "ultrafast", "-x265-params", f"keyint={keyint}:min-keyint={keyint}:log-level=error{x265}",
                    "-pix_fmt", "yuv420p", "-tag:v", "hvc1", str(path)], check=True, timeout=120)


@contextlib.contextmanager
def _service(tmp_path, cameras: dict, **service):
    """The real service with ``cameras`` ({id: video file}) played as live cameras (looped, real time); ``service``
    goes to the ``service`` section of the settings."""
    sources = [{"id": sid, "url": str(path), "models": ["stub"], "analysis_fps": 1} for sid, path in cameras.items()]
    cfg = serve_settings(tmp_path, sources=sources, service=service)
    svc = Service(cfg, detectors={"stub": FireEverywhere()}, file_pace="realtime", loop_files=True).start()
    try:
        yield svc
    finally:
        svc.stop()


def _wait_frames(svc, source_id: str, n: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while svc.readers[source_id].status().frames_decoded < n:
        assert time.monotonic() < deadline, svc.readers[source_id].status()
        time.sleep(0.05)


def _refusal(client, path: str) -> tuple[int, str]:
    with client.websocket_connect(path, headers=H) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
    return closed.value.code, closed.value.reason


def test_an_h265_camera_is_re_encoded_to_h264(tmp_path):
    """An H.265 640x360 camera at 10 fps, ``live_video_transcode_width_px: 320``: the video message says avc1 at
    320x180 and that it is re-encoded; the init segment carries an avcC (not the camera's hvcC); the fragments decode
    to 320x180 pictures from a keyframe on, with increasing timestamps, at the camera's rate, a keyframe about every
    second (each after a clock message). A second viewer joining later starts at a keyframe; the metrics count one
    camera re-encoded while watched, none after."""
    video = tmp_path / "quay.mp4"
    _h265_video(video)
    with _service(tmp_path, {"quay-1": video}, live_video_transcode_width_px=320) as svc:
        lv = svc.app.state.live_video
        with TestClient(svc.app) as client:
            _wait_frames(svc, "quay-1", 15)
            clocks: list = []
            with client.websocket_connect("/api/sources/quay-1/video", headers=H) as ws:
                hello, init, fragments, _ = _read_video(ws, 4.0, clocks)
                assert lv.transcoding == 1
                metrics = client.get("/api/metrics", headers=H).text
                time.sleep(0.3)  # mid-GOP, most likely: the second viewer starts at the GOP's keyframe anyway
                with client.websocket_connect("/api/sources/quay-1/video", headers=H) as ws2:
                    hello2, init2, fragments2, _ = _read_video(ws2, 1.5)
            deadline = time.monotonic() + 5
            while lv.transcoding or lv.muxer("quay-1") is not None:  # the last viewer left: the encoder stops
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert "seawatch_live_video_transcoding_cameras 0" in client.get("/api/metrics", headers=H).text
    assert "seawatch_live_video_transcoding_cameras 1" in metrics
    assert hello["codec"].startswith("avc1.") and hello["mime"] == f'video/mp4; codecs="{hello["codec"]}"', hello
    assert (hello["width_px"], hello["height_px"], hello["rate_fps"]) == (320, 180, float(FPS)), hello
    assert hello["transcoded_from"] == "hevc" and hello["note"] == "H.265 re-encoded to H.264", hello
    assert [t for t, _ in _boxes(init)] == [b"ftyp", b"moov"]
    moov = dict(_boxes(init))[b"moov"]
    assert b"avcC" in moov and b"hvcC" not in moov and b"mvex" in moov
    decode_times = [_decode_time(f) for f in fragments]
    assert all(b > a for a, b in zip(decode_times, decode_times[1:])), decode_times
    frames = _decode(init, fragments, tmp_path)
    assert frames[0].key_frame and len(frames) >= len(fragments) - 1
    assert all((f.width, f.height) == (320, 180) for f in frames)
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:])), pts  # no B-frames: presentation order is decode order
    span_s = (decode_times[-1] - decode_times[0]) / 90000
    assert abs((len(fragments) - 1) / span_s - FPS) < 1.5, (len(fragments), span_s)  # the camera's rate
    keyed = [i for i, f in enumerate(frames) if f.key_frame]
    gaps_s = [(decode_times[b] - decode_times[a]) / 90000 for a, b in zip(keyed, keyed[1:])]
    # a keyframe a second (the camera's: every 2 s); longer only after pictures skipped on an overloaded machine
    assert len(keyed) >= 3 and all(g >= 0.95 for g in gaps_s) and sorted(gaps_s)[len(gaps_s) // 2] <= 1.15, gaps_s
    assert [i for i, _ in clocks] == keyed[:len(clocks)] and len(clocks) >= 3, (clocks, keyed)
    assert all(c["capture_ns"] > 0 for _, c in clocks)
    # the second viewer: the same stream, from a keyframe (the GOP kept for new viewers)
    assert hello2 == hello
    frames2 = _decode(init2, fragments2, tmp_path)
    assert frames2 and frames2[0].key_frame and len(frames2) >= len(fragments2) - 1
    assert all((f.width, f.height) == (320, 180) for f in frames2)


def test_re_encoding_is_capped_and_can_be_turned_off(tmp_path):
    """``live_video_transcode_max: 1`` with an H.265 and an MJPEG camera: while the H.265 one is watched, a viewer
    of the MJPEG one is refused (4429, saying why), an H.264-free camera's second viewer is not; once it left, the
    MJPEG camera's video is re-encoded too. With ``0`` nothing is re-encoded: 4415, as before."""
    hevc, mj = tmp_path / "quay.mp4", tmp_path / "yard.mkv"
    _h265_video(hevc, seconds=2.0, size=(160, 120))
    _mjpeg_video(mj)
    with _service(tmp_path, {"quay-1": hevc, "yard-mj": mj}, live_video_transcode_max=1) as svc:
        lv = svc.app.state.live_video
        with TestClient(svc.app) as client:
            _wait_frames(svc, "quay-1", 5)
            _wait_frames(svc, "yard-mj", 5)
            with client.websocket_connect("/api/sources/quay-1/video", headers=H) as ws:
                assert ws.receive_json()["note"] == "H.265 re-encoded to H.264"
                code, reason = _refusal(client, "/api/sources/yard-mj/video")
                assert code == 4429 and "MJPEG" in reason and "re-encoded" in reason, (code, reason)
                assert "live_video_transcode_max" in reason
                with client.websocket_connect("/api/sources/quay-1/video", headers=H) as ws2:  # the same camera: ok
                    assert ws2.receive_json()["kind"] == "video"
                    assert isinstance(ws2.receive_bytes(), bytes)
                assert isinstance(ws.receive_bytes(), bytes)
                assert lv.transcoding == 1
            deadline = time.monotonic() + 5
            while lv.transcoding:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with client.websocket_connect("/api/sources/yard-mj/video", headers=H) as ws:
                hello, init, fragments, _ = _read_video(ws, 2.0)
    assert hello["note"] == "MJPEG re-encoded to H.264" and hello["codec"].startswith("avc1."), hello
    frames = _decode(init, fragments, tmp_path)
    assert frames and frames[0].key_frame and all((f.width, f.height) == (160, 120) for f in frames)
    assert len(frames) >= len(fragments) - 1 and len(frames) >= 10

    with _service(tmp_path / "off", {"quay-1": hevc}, live_video_transcode_max=0) as svc:
        with TestClient(svc.app) as client:
            code, reason = _refusal(client, "/api/sources/quay-1/video")  # (its codec perhaps not known yet: the muxer says)
            assert code == 4415 and "H.265" in reason and "live_video_transcode_max: 0" in reason, (code, reason)
            _wait_frames(svc, "quay-1", 5)
            code, reason = _refusal(client, "/api/sources/quay-1/video")  # after: refused at once
            assert code == 4415 and "H.265" in reason, reason
            assert svc.app.state.live_video.muxer("quay-1") is None and svc.app.state.live_video.transcoding == 0


def _annexb_packets(path):
    """(StreamInfo, EncodedPackets) of an H.265 file as a camera's reader puts them in its ring: Annex B, capture
    times from the pictures' timestamps."""
    import av

    from seawatch.streams.packets import EncodedPacket
    from seawatch.streams.recording import stream_info

    t0_ns = time.time_ns()
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        bsf = av.bitstream.BitStreamFilterContext("hevc_mp4toannexb", st)
        out = [EncodedPacket(bytes(q), q.pts, q.dts, st.time_base, bool(q.is_keyframe), t0_ns + int(q.pts * st.time_base * 1e9))
               for p in c.demux(st) for q in bsf.filter(p) if q.size]
        return stream_info(st), out


def test_a_re_encoder_behind_the_camera_decodes_keyframes_only(tmp_path):
    """Pictures waiting for the re-encoder more than TRANSCODE_BEHIND_S older than the newest packet tapped: it
    skips to the keyframes (fewer pictures, no growing delay); within it again, it decodes and encodes every one."""
    from seawatch.service.live_video import TRANSCODE_BEHIND_S, CameraMuxer, TranscodeSlots
    from seawatch.streams.packets import PacketRing

    video = tmp_path / "cam.mp4"
    _h265_video(video, seconds=4.0, size=(160, 120), keyint=10, x265=":bframes=0:open-gop=0")  # as most cameras
    info, packets = _annexb_packets(video)
    assert info.codec_name == "hevc" and len(packets) == 40 and sum(p.is_keyframe for p in packets) == 4
    m = CameraMuxer("cam", PacketRing(), TranscodeSlots(1))  # its thread not started: fed here, in this thread
    m._set_info(info)
    assert m.transcoding and m.refusal is None
    m._newest_tap_ns = newest = packets[-1].capture_time_ns  # all 4 s tapped at once: the first 3 s are behind
    for p in packets:
        m._packet(p)
    behind = [p for p in packets if newest - p.capture_time_ns > TRANSCODE_BEHIND_S * 1e9]
    assert sum(not p.is_keyframe for p in behind) == 26  # then the one exactly 1 s old waits for a keyframe too
    assert m.skipped_behind == 27 and not m._behind
    decoded = len(packets) - m.skipped_behind  # 3 keyframes, then the last 10 pictures
    assert decoded - 3 <= m.fragments <= decoded, m.fragments  # (the decoder holds a few back for reordering)
    assert m.codec.startswith("avc1.")
    m.stop()


def test_scaled_size_keeps_the_aspect_and_never_scales_up():
    from seawatch.service.live_video import scaled_size

    assert scaled_size(1920, 1080, 1280) == (1280, 720)
    assert scaled_size(640, 360, 1280) == (640, 360)
    assert scaled_size(2560, 1440, 1280) == (1280, 720)
    assert scaled_size(1000, 333, 640) == (640, 214)  # even sides (yuv420p)
    assert scaled_size(1080, 1920, 1280) == (1080, 1920)
    assert scaled_size(3, 3, 1280) == (2, 2)


@pytest.mark.slow
def test_ui_plays_the_re_encoded_h265_camera(tmp_path):
    """Chromium's Live view plays the H.265 camera's video re-encoded (MSE: time advancing, the scaled size) and its
    status line says it is re-encoded."""
    from conftest import serve_in_thread
    from test_live_video import _ui
    from test_service_ui import _playwright, _wait

    video = tmp_path / "quay.mp4"
    _h265_video(video)
    with _service(tmp_path, {"quay-1": video}, live_video_transcode_width_px=320) as svc:
        with serve_in_thread(svc.app) as port, _playwright() as p:
            browser, page, errors = _ui(p, port)
            page.wait_for_selector('#sources tr[data-id="quay-1"] .live-act')
            page.click('#sources tr[data-id="quay-1"] .live-act')
            v = "document.getElementById('lv-video')"
            _wait(page, f"!{v}.hidden && {v}.readyState >= 2 && {v}.videoWidth === 320 && !{v}.paused", 25)
            assert page.evaluate(f"{v}.videoHeight") == 180
            t1 = page.evaluate(f"{v}.currentTime")
            page.wait_for_timeout(1500)
            t2 = page.evaluate(f"{v}.currentTime")
            assert 0.8 < t2 - t1 < 3.2, (t1, t2)
            status = page.text_content("#lv-status")
            assert status.startswith("live video 320×180 (H.265 re-encoded to H.264)"), status
            assert svc.app.state.live_video.transcoding == 1
            assert not errors, errors
            browser.close()
