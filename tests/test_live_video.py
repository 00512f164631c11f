"""A camera's live video over ``/api/sources/{id}/video`` (``service.live_video``): the real service on H.264 (and
MJPEG) files played as cameras, watched over real WebSockets; the browser's Live view in headless Chromium."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import socket
import struct
import time
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from seawatch.service.runner import Service  # noqa: E402

from test_service_serve import KEY, FireEverywhere, serve_settings, write_video  # noqa: E402

FPS = 10


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of the MP4 boxes in ``data`` (one level)."""
    out, off = [], 0
    while off + 8 <= len(data):
        size, typ = struct.unpack(">I4s", data[off:off + 8])
        assert size >= 8 and off + size <= len(data), f"bad box {typ} of {size} bytes at {off}"
        out.append((typ, data[off + 8:off + size]))
        off += size
    assert off == len(data), "trailing bytes after the last box"
    return out


def _decode_time(fragment: bytes) -> int:
    """``tfdt`` baseMediaDecodeTime of a moof+mdat fragment."""
    (moof_t, moof), (mdat_t, _) = _boxes(fragment)
    assert (moof_t, mdat_t) == (b"moof", b"mdat")
    traf = dict(_boxes(moof))[b"traf"]
    tfdt = dict(_boxes(traf))[b"tfdt"]
    return struct.unpack(">Q", tfdt[4:12])[0] if tfdt[0] == 1 else struct.unpack(">I", tfdt[4:8])[0]


def _source_codec(path) -> str:
    """avc1.PPCCLL from the file's own SPS (its avcC: profile, constraint flags, level)."""
    import av

    with av.open(str(path)) as c:
        avcc = bytes(c.streams.video[0].codec_context.extradata)
    assert avcc[0] == 1
    return "avc1." + avcc[1:4].hex().upper()


def _decode(init: bytes, fragments: list[bytes], tmp_path) -> list:
    import av

    path = tmp_path / f"got-{time.monotonic_ns()}.mp4"
    path.write_bytes(init + b"".join(fragments))
    with av.open(str(path)) as c:
        return [f for f in c.decode(video=0)]


def _mjpeg_video(path, seconds: float = 2.0, size=(160, 120)) -> None:
    import av

    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        st = out.add_stream("mjpeg", rate=FPS)
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuvj420p"
        for _ in range(int(seconds * FPS)):
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


@contextlib.contextmanager
def _service(tmp_path, size=(160, 120), mjpeg: bool = False, **over):
    """The real service with ``quay-1``: an H.264 file played as a camera (looped, real time), and with ``mjpeg`` a
    second camera ``yard-mj`` sending MJPEG."""
    video = tmp_path / "quay.mp4"
    write_video(video, seconds=2.0, fps=FPS, size=size)
    if mjpeg:
        mj = tmp_path / "yard.mkv"
        _mjpeg_video(mj)
        over["sources"] = [{"id": "quay-1", "url": str(video), "models": ["stub"], "analysis_fps": 5},
                           {"id": "yard-mj", "url": str(mj), "models": ["stub"], "analysis_fps": 2}]
    cfg = serve_settings(tmp_path, video, **over)
    svc = Service(cfg, detectors={"stub": FireEverywhere()}, file_pace="realtime", loop_files=True).start()
    try:
        yield svc, video
    finally:
        svc.stop()


def _read_video(ws, seconds: float, clocks: list | None = None):
    """(hello message, init segment, fragments, receive times) from a TestClient WebSocket for ``seconds``; the
    ``clock`` messages go to ``clocks`` as (index of the fragment they come before, message)."""
    hello = ws.receive_json()
    init = ws.receive_bytes()
    fragments, times = [], []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        msg = ws.receive()
        assert msg["type"] == "websocket.send", msg
        if msg.get("text") is not None:
            clock = json.loads(msg["text"])
            assert clock["kind"] == "clock", f"unexpected text message {msg.get('text')}"
            if clocks is not None:
                clocks.append((len(fragments), clock))
            continue
        fragments.append(msg["bytes"])
        times.append(time.monotonic())
    return hello, init, fragments, times


def test_live_video_is_the_cameras_h264_as_fragmented_mp4(tmp_path):
    """The video WebSocket: the codec message names the camera's own SPS, the init segment is ftyp+moov, each binary
    message is one moof+mdat with increasing decode times (across the file's loops, where its timestamps restart),
    and what came decodes to pictures of the camera's size at its frame rate, starting at a keyframe."""
    with _service(tmp_path, size=(160, 120)) as (svc, video):
        with TestClient(svc.app) as client:
            # mid-GOP (a keyframe every 20 pictures, 2 s): ~10 pictures of this GOP in the ring, the next keyframe
            # ~1 s away
            deadline = time.monotonic() + 20
            while not (n := svc.readers["quay-1"].status().frames_decoded) >= 20 or not 8 <= n % 20 <= 11:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            t_open = time.monotonic()
            clocks: list = []
            with client.websocket_connect("/api/sources/quay-1/video", headers={"X-API-Key": KEY}) as ws:
                hello, init, fragments, times = _read_video(ws, 4.5, clocks)
                read_ns = time.time_ns()
            assert svc.app.state.live_video.viewers == 0
            # the last viewer left: the muxer stops and unhooks from the camera's ring
            ring = svc.app.state.live_video._rings["quay-1"]
            deadline = time.monotonic() + 3
            while ring._listeners or svc.app.state.live_video.muxer("quay-1") is not None:
                assert time.monotonic() < deadline, ring._listeners
                time.sleep(0.05)
    codec = _source_codec(video)
    assert hello == {"kind": "video", "source_id": "quay-1", "codec": codec, "mime": f'video/mp4; codecs="{codec}"',
                     "width_px": 160, "height_px": 120, "rate_fps": float(FPS)}
    top = [t for t, _ in _boxes(init)]
    assert top == [b"ftyp", b"moov"]
    moov = dict(_boxes(init))[b"moov"]
    assert b"avcC" in moov and b"mvex" in moov  # a fragmented file's init segment
    # the first picture at once: the GOP the ring held (in one go), not a wait for the next keyframe
    assert times[0] - t_open < 0.5, times[0] - t_open
    assert sum(1 for t in times if t - times[0] < 0.3) >= 5, [round(t - times[0], 2) for t in times[:12]]
    decode_times = [_decode_time(f) for f in fragments]
    assert all(b > a for a, b in zip(decode_times, decode_times[1:])), decode_times
    frames = _decode(init, fragments, tmp_path)
    assert frames and all((f.width, f.height) == (160, 120) for f in frames)
    assert frames[0].key_frame
    assert len(frames) >= len(fragments) - 2  # one picture per fragment, all decodable from the first
    span_s = (decode_times[-1] - decode_times[0]) / 90000
    assert abs((len(fragments) - 1) / span_s - FPS) < 1.0, (len(fragments), span_s)  # the camera's frame rate
    live = [t for t in times if t - times[0] > 1.5]  # after the buffered GOP came in one go: real time
    assert abs(len(live) / (times[-1] - times[0] - 1.5) - FPS) < 3, len(live)
    # before each keyframe a clock message: the capture time of that picture and where it lies on the video's
    # timeline, so a viewer can tell when the picture it shows was taken (~2 keyframes in 4.5 s, a GOP of 2 s)
    keyed = [i for i, f in enumerate(frames) if f.key_frame]
    assert [i for i, _ in clocks] == keyed[:len(clocks)] and len(clocks) >= 2, (clocks, keyed)
    for i, c in clocks:  # its presentation time: the decode time, plus the B-frames' reorder delay (2 pictures)
        assert 0 <= c["media_s"] * 90000 - decode_times[i] <= 3 * 90000 / FPS, (c, decode_times[i])
    (i0, c0), (i1, c1) = clocks[0], clocks[-1]
    # the capture times run with the timeline (the file's loop restarts its own timestamps; the capture times go on)
    assert abs((c1["capture_ns"] - c0["capture_ns"]) / 1e9 - (c1["media_s"] - c0["media_s"])) < 0.15, (c0, c1)
    assert 0 <= (read_ns - c1["capture_ns"]) / 1e9 < 3.0, (read_ns, c1)  # a live camera's: a moment ago


def test_live_video_refusals(tmp_path):
    """No credential, an unknown camera, a camera sending MJPEG (re-encoding off), a camera no video is read for, and
    one viewer too many: each closed with its code and a reason to show."""
    with _service(tmp_path, mjpeg=True, service={"live_video_viewers": 1, "live_video_transcode_max": 0}) as (svc, _):
        with TestClient(svc.app) as client:
            def refusal(path, headers=None, first=None):
                with client.websocket_connect(path, headers=headers or {}) as ws:
                    if first is not None:
                        ws.send_text(first)
                    with pytest.raises(WebSocketDisconnect) as closed:
                        ws.receive_bytes()
                return closed.value.code, closed.value.reason

            assert refusal("/api/sources/quay-1/video", first="{}") == (4401, "authentication required")
            assert refusal("/api/sources/quay-1/video", first=json.dumps({"api_key": "wrong"}))[0] == 4401
            assert refusal("/api/sources/nope/video", {"X-API-Key": KEY}) == (4404, "unknown camera")
            code, reason = refusal("/api/sources/yard-mj/video", {"X-API-Key": KEY})
            assert code == 4415 and "MJPEG" in reason and "H.264" in reason, reason
            deadline = time.monotonic() + 20  # also once the camera is known to send MJPEG (refused before muxing)
            while svc.app.state.live_video._rings["yard-mj"].info is None:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert refusal("/api/sources/yard-mj/video", {"X-API-Key": KEY})[0] == 4415
            assert svc.app.state.live_video.muxer("yard-mj") is None  # nothing left running for it

            # the browser's way: the credential as the first message; one viewer at most (service.live_video_viewers)
            with client.websocket_connect("/api/sources/quay-1/video") as ws:
                ws.send_text(json.dumps({"api_key": KEY}))
                assert ws.receive_json()["kind"] == "video"
                code, reason = refusal("/api/sources/quay-1/video", {"X-API-Key": KEY})
                assert code == 4429 and "too many" in reason
                assert isinstance(ws.receive_bytes(), bytes)  # the first viewer is unaffected
            with client.websocket_connect("/api/sources/quay-1/video", headers={"X-API-Key": KEY}) as ws:
                assert ws.receive_json()["kind"] == "video"  # the first one left: room for another

    from seawatch.service.app import create_app

    app = create_app(serve_settings(tmp_path / "bare", tmp_path / "quay.mp4"))  # an API with no camera readers
    with TestClient(app) as client:
        with client.websocket_connect("/api/sources/quay-1/video", headers={"X-API-Key": KEY}) as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
    assert closed.value.code == 4503 and "no video" in closed.value.reason


def test_a_stalled_viewer_loses_fragments_not_the_others(tmp_path):
    """Over a real server: one viewer stops reading (its socket's buffers fill), another reads on. The reading one
    gets every picture at the camera's rate; the stalled one's queue on the server stays bounded, it loses whole
    fragments, and when it reads again it is told (resync) and goes on at a keyframe that decodes."""
    from conftest import serve_in_thread
    from websockets.sync.client import connect

    with _service(tmp_path, size=(640, 360)) as (svc, _):
        lv = svc.app.state.live_video
        lv.viewer_max_lag_s = 1.0
        with serve_in_thread(svc.app) as port:
            url = f"ws://127.0.0.1:{port}/api/sources/quay-1/video"
            stalled_sock = socket.create_connection(("127.0.0.1", port))  # a small window: its sockets fill soon
            stalled_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with connect(url, sock=stalled_sock, additional_headers={"X-API-Key": KEY}, open_timeout=10,
                         max_size=None, max_queue=1, ping_interval=None) as stalled, \
                    connect(url, additional_headers={"X-API-Key": KEY}, open_timeout=10, max_size=None,
                            ping_interval=None) as reader:
                assert json.loads(stalled.recv(10))["kind"] == "video"
                stalled_init = stalled.recv(10)
                assert json.loads(reader.recv(10))["kind"] == "video"
                init = reader.recv(10)
                got, t0 = [], time.monotonic()
                while time.monotonic() - t0 < 6.0:
                    got.append(reader.recv(10))
                muxer = lv.muxer("quay-1")
                viewers = sorted(muxer._viewers, key=lambda v: v.dropped)
                fast, slow = viewers
                assert slow.dropped > 0 and fast.dropped == 0, (slow.dropped, fast.dropped)
                assert slow.queued_bytes <= lv.viewer_max_bytes
                # the reader kept the camera's pace while the other stalled
                assert abs(len(got) / 6.0 - FPS) < 3, len(got)
                assert all(isinstance(g, str) and json.loads(g)["kind"] == "clock" for g in got if not isinstance(g, bytes))
                got = [g for g in got if isinstance(g, bytes)]
                times = [_decode_time(g) for g in got]
                assert all(b > a for a, b in zip(times, times[1:]))
                frames = _decode(init, got, tmp_path)
                assert len(frames) >= len(got) - 2
                # what waits for the stalled one: after the drop a resync, then a keyframe that decodes on its own
                deadline = time.monotonic() + 10
                while True:
                    kinds = [k for k, _ in slow.pending()]
                    if "resync" in kinds and kinds[kinds.index("resync") + 1:].count("bytes") >= 3:
                        break
                    assert time.monotonic() < deadline, kinds
                    time.sleep(0.05)
                pending = slow.pending()
                k = kinds.index("resync")
                assert pending[k][1]["dropped"] > 0
                after = [p for kind, p in pending[k + 1:] if kind == "bytes"]
                frames = _decode(stalled_init, after, tmp_path)
                assert frames[0].key_frame and len(frames) == len(after)
                assert (frames[0].width, frames[0].height) == (640, 360)


def _ui(p, port: int):
    from test_service_ui import _browser, open_page

    browser = _browser(p)
    return (browser, *open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}"))


@pytest.mark.slow
def test_ui_live_view_plays_the_video_and_toggles_to_the_analysed_pictures(tmp_path):
    """Chromium: the Live view plays the camera's video (MSE: time advancing, the camera's size, data for the
    current position), near the live edge; "analysed" shows the analysed picture instead, "video" brings the video
    back; a camera sending MJPEG (re-encoding off) falls back to the analysed pictures and says why."""
    from conftest import serve_in_thread
    from test_service_ui import _playwright, _wait

    with _service(tmp_path, size=(160, 120), mjpeg=True, service={"live_video_transcode_max": 0}) as (svc, _):
        with serve_in_thread(svc.app) as port, _playwright() as p:
            browser, page, errors = _ui(p, port)
            assert page.evaluate("""MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E"')""")
            page.wait_for_selector('#sources tr[data-id="quay-1"] .live-act')
            page.click('#sources tr[data-id="quay-1"] .live-act')
            _wait(page, "!document.getElementById('lv-video').hidden", 20)
            video = "document.getElementById('lv-video')"
            _wait(page, f"{video}.readyState >= 2 && {video}.videoWidth === 160 && !{video}.paused", 10)
            t1 = page.evaluate(f"{video}.currentTime")
            page.wait_for_timeout(1500)
            t2 = page.evaluate(f"{video}.currentTime")
            assert 0.8 < t2 - t1 < 3.2, (t1, t2)  # playing (at the pace of the camera, or a jump to its newest pictures)
            assert page.evaluate(f"{video}.videoHeight") == 120
            behind = page.evaluate(f"(() => {{ const b = {video}.buffered; return b.end(b.length - 1) - {video}.currentTime; }})()")
            assert behind < 1.6, behind  # near the live edge
            assert page.text_content("#lv-status").startswith("live video 160×120")
            assert page.get_attribute("#lv-status", "title").startswith("avc1.")  # for whoever sets cameras up
            # how far behind the newest picture received it plays, said in words, kept up to date
            _wait(page, "/ [0-9.]+ s behind the newest picture$/.test(document.getElementById('lv-status').textContent)", 5)
            # and when the picture shown was taken (from the keyframes' clock messages): a moment ago
            status = page.text_content("#lv-status")
            age = re.search(r", picture of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((\d+\.\d) s ago\), ", status)
            assert age and 0.0 <= float(age.group(1)) < 3.0, status
            assert page.is_hidden("#lv-img")
            # the analysed pictures, with their boxes option
            page.check("#lv-mode-analysed")
            _wait(page, "document.getElementById('lv-img').naturalWidth === 160 && !document.getElementById('lv-img').hidden", 10)
            assert page.is_hidden("#lv-video") and page.is_visible("#lv-boxes")
            assert page.text_content("#lv-note").startswith("captured ")
            deadline = time.monotonic() + 5
            while svc.app.state.live_video.viewers:  # no video is sent while it is not shown
                assert time.monotonic() < deadline
                time.sleep(0.1)
            page.check("#lv-mode-video")
            _wait(page, f"!{video}.hidden && {video}.readyState >= 2 && !{video}.paused", 20)
            # a dropped connection (here the server's "format changed, connect again": the camera's stream info
            # changes as after a reconnect at another size) is connected again, and the video plays on
            opened = []
            lv = svc.app.state.live_video
            real_open = lv.open
            lv.open = lambda *a: opened.append(a[0]) or real_open(*a)
            ring = lv._rings["quay-1"]
            ring.set_info(dataclasses.replace(ring.info, annexb_params=b"", extradata=b""))
            deadline = time.monotonic() + 10
            while not opened:
                assert time.monotonic() < deadline, "the browser did not connect again"
                time.sleep(0.05)
            t1 = page.evaluate(f"{video}.currentTime")
            _wait(page, f"!{video}.hidden && {video}.readyState >= 2 && {video}.currentTime > {t1} + 0.5", 15)
            assert page.text_content("#lv-status").startswith("live video 160×120")
            page.click("#lv-close")
            # a camera whose video cannot be sent: its analysed pictures, and why
            page.click('#sources tr[data-id="yard-mj"] .live-act')
            _wait(page, "document.getElementById('lv-status').textContent.startsWith('video unavailable')", 10)
            status = page.text_content("#lv-status")
            assert "MJPEG" in status and status.endswith("showing analysed pictures"), status
            _wait(page, "document.getElementById('lv-img').naturalWidth === 160", 15)
            assert page.is_hidden("#lv-video")
            page.click("#lv-close")
            assert not errors, errors
            browser.close()


@pytest.mark.slow
def test_live_video_of_an_rtsp_camera(tmp_path):
    """A real RTSP camera (gst-rtsp-server, H.264 baseline 640x360 at 25 fps, a keyframe a second) through the
    service's reader: the codec string is the stream's SPS, and the video decodes at the camera's size and rate."""
    import subprocess

    from test_streams_rtsp import RtspServer, _require_tools

    _require_tools()
    clip = tmp_path / "cam.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=640x360:rate=25", "-t", "6", "-c:v", "libx264", "-preset", "veryfast",
                    "-profile:v", "baseline", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", str(clip)],
                   check=True, timeout=120)
    srv = RtspServer(clip)
    srv.start()
    try:
        cfg = serve_settings(tmp_path, sources=[{"id": "pier", "url": srv.url(), "models": ["stub"], "analysis_fps": 2}])
        svc = Service(cfg, detectors={"stub": FireEverywhere()}).start()
        try:
            with TestClient(svc.app) as client:
                deadline = time.monotonic() + 20
                while svc.readers["pier"].status().frames_decoded < 30:
                    assert time.monotonic() < deadline, svc.readers["pier"].status()
                    time.sleep(0.1)
                with client.websocket_connect("/api/sources/pier/video", headers={"X-API-Key": KEY}) as ws:
                    hello, init, fragments, times = _read_video(ws, 3.0)
        finally:
            svc.stop()
    finally:
        srv.kill()
    codec = _source_codec(clip)
    assert codec.startswith("avc1.42")  # baseline
    assert hello["codec"] == codec and (hello["width_px"], hello["height_px"]) == (640, 360)
    decode_times = [_decode_time(f) for f in fragments]
    assert all(b > a for a, b in zip(decode_times, decode_times[1:]))
    frames = _decode(init, fragments, tmp_path)
    assert frames[0].key_frame and all((f.width, f.height) == (640, 360) for f in frames)
    assert len(frames) >= len(fragments) - 2
    span_s = (decode_times[-1] - decode_times[0]) / 90000
    assert abs((len(fragments) - 1) / span_s - 25) < 2, (len(fragments), span_s)
    late = [t for t in times if t - times[0] > 1.2]  # after the buffered GOP: the camera's pace
    assert abs(len(late) / (times[-1] - times[0] - 1.2) - 25) < 5, len(late)


@pytest.mark.slow
def test_ui_live_video_under_a_proxy_prefix_with_a_viewer_key(tmp_path):
    """Chromium through a proxy that serves the service under /seawatch/ (and strips it), logged in with a wall
    display's viewer key: the Live view's video WebSocket goes through the prefix and plays."""
    from conftest import serve_in_thread
    from test_path_prefix import StrippingProxy
    from test_service_ui import _browser, _playwright, _wait, open_page

    from seawatch.service.auth import hash_api_key

    wall_key = "wall-display-key-0123456789abcdef"
    with _service(tmp_path, auth={"api_keys": [{"name": "wall", "role": "viewer", "key_sha256": hash_api_key(wall_key)}]}) \
            as (svc, _):
        with serve_in_thread(svc.app) as port, StrippingProxy(port) as proxy, _playwright() as p:
            browser = _browser(p)
            page, errors = open_page(browser, f"{proxy.base}#key={wall_key}")
            page.wait_for_selector('#sources tr[data-id="quay-1"] .live-act')
            page.click('#sources tr[data-id="quay-1"] .live-act')
            video = "document.getElementById('lv-video')"
            _wait(page, f"!{video}.hidden && {video}.readyState >= 2 && {video}.videoWidth === 160 && !{video}.paused", 20)
            t1 = page.evaluate(f"{video}.currentTime")
            _wait(page, f"{video}.currentTime > {t1} + 0.5", 5)
            assert ("GET", "/seawatch/api/sources/quay-1/video", "/api/sources/quay-1/video") in proxy.seen
            assert not errors, errors
            browser.close()


def test_packet_ring_tap_gives_the_buffered_gop_then_every_packet_once():
    """``PacketRing.listen``: the GOP buffered now (from its newest keyframe), then each packet pushed and each stream
    info set, in order, none missed or twice; ``unlisten`` stops it."""
    from fractions import Fraction

    from seawatch.streams.packets import EncodedPacket, PacketRing, StreamInfo

    def pkt(i: int) -> EncodedPacket:
        return EncodedPacket(bytes([i]), i, i, Fraction(1, 10), i % 5 == 0, i * 100_000_000)

    ring = PacketRing(max_age_s=30)
    info = StreamInfo("h264", 160, 120)
    ring.set_info(info)
    for i in range(12):  # keyframes at 0, 5, 10
        ring.push(pkt(i))
    seen: list = []
    got_info, gop = ring.listen(seen.append)
    assert got_info == info and [p.pts for p in gop] == [10, 11]
    for i in range(12, 15):
        ring.push(pkt(i))
    other = StreamInfo("h264", 320, 240)
    ring.set_info(other)
    ring.push(pkt(16))  # not a keyframe into an emptied ring: not kept, not heard
    ring.push(pkt(20))
    ring.unlisten(seen.append)
    ring.push(pkt(21))
    assert [x.pts if isinstance(x, EncodedPacket) else x for x in seen] == [12, 13, 14, other, 20]
