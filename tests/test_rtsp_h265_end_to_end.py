"""An H.265 camera over real RTSP through the whole product.

Most port cameras send H.265 ("H.265+" is the default on Hikvision and Dahua). Here one is a real RTSP server
(``rtsp_h265_camera`` in conftest: gst-rtsp-server, x265 zerolatency, no B-frames, a keyframe a second, VPS/SPS/PPS
in band) watched by the real service with a stand-in detector: its pictures are decoded and analysed, an incident is
raised and ends, its clip is an H.264 MP4 with faststart that plays in headless Chromium, its snapshot a JPEG; the
recordings listing covers the incident and a clip cut from the recordings plays; the evidence package holds the clip;
the live video is re-encoded to H.264 (avc1); and after the server is killed and started again the camera goes
offline, comes back online and is recorded again; every recorded segment plays on its own.

What it found: the server (like many cameras) sends VPS/SPS/PPS in the SDP and before its first IDR picture only, not
before the CRA keyframes after it, and the recorder put parameter sets in front of H.264 keyframes only, so every
segment after a camera's first was an MP4 no player (nor the service itself) could open. The focused tests below
feed the recorder such a stream without any server.
"""

from __future__ import annotations

import io
import subprocess
import time
import warnings
import zipfile

import av
import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import wait_until  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.service.runner import Service  # noqa: E402
from seawatch.streams.recording import list_segments  # noqa: E402
from seawatch.vision.detections import Detections  # noqa: E402
from test_live_video import _boxes, _decode, _read_video  # noqa: E402
from test_service_serve import KEY, serve_settings  # noqa: E402
from test_streams import chromium_title  # noqa: E402

H = {"X-API-Key": KEY}
S = 1_000_000_000


class FireAtFirst:
    """A stand-in detector: a confident fire box in the first ``n`` pictures it is given, then nothing (so the
    incident starts, then ends and its clip window closes)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def detect(self, images):
        out = []
        for _ in images:
            self.calls += 1
            fire = self.calls <= self.n
            out.append(Detections(np.array([[40, 30, 120, 100]] if fire else np.zeros((0, 4)), np.float32),
                                  np.array([0.9] if fire else [], np.float32), np.array([0] if fire else [], np.int32),
                                  ("fire",), model="stub"))
        return out


def _source(client) -> dict:
    return next(s for s in client.get("/api/sources", headers=H).json() if s["source_id"] == "quay-h265")


def _mp4_summary(data: bytes) -> dict:
    """Codec, size, picture count and top-level boxes of an MP4 (PyAV)."""
    with av.open(io.BytesIO(data)) as c:
        st = c.streams.video[0]
        n = sum(1 for _ in c.decode(st))
        return {"codec": st.codec_context.name, "size": (st.codec_context.width, st.codec_context.height),
                "pictures": n, "boxes": [t for t, _ in _boxes(data)]}


def _ffmpeg_errors(path) -> str:
    """What Debian's ffmpeg says decoding a whole file (empty: it decodes cleanly), as any other player would."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-i", str(path), "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60)
    return out.stderr.strip() or ("" if out.returncode == 0 else f"exit {out.returncode}")


@pytest.mark.slow
def test_an_h265_rtsp_camera_end_to_end(rtsp_h265_camera, tmp_path):
    cam = rtsp_h265_camera
    cfg = serve_settings(
        tmp_path,
        sources=[{"id": "quay-h265", "url": cam.url, "models": ["stub"], "analysis_fps": 5}],
        zones=[{"id": "yard", "source": "quay-h265", "rules": [
            {"type": "fire_smoke", "labels": ["fire"], "window_frames": 3, "min_hits": 2, "min_duration_s": 0.5,
             "clear_after_s": 1.0, "static_min_iou": None}]}],
        events={"pre_roll_s": 1.0, "post_roll_s": 1.0},
        storage={"data_dir": str(tmp_path / "data"), "recording": {"segment_s": 2.0}},
    )
    det = FireAtFirst(10)
    svc = Service(cfg, detectors={"stub": det}).start()
    try:
        with TestClient(svc.app) as client:
            # decoded and analysed, online
            wait_until(lambda: svc.readers["quay-h265"].status().frames_decoded >= 20, 20, "20 decoded pictures")
            src = _source(client)
            assert src["state"] == "online" and src["frames_decoded"] >= 20, src
            wait_until(lambda: det.calls >= 5, 10, "analysis")

            # an incident, ended (the detector stops firing), its clip an H.264 MP4 with faststart
            def ended():
                evs = client.get("/api/events", params={"source": "quay-h265"}, headers=H).json()["events"]
                return next((e for e in evs if e["phase"] == "end"), None)

            ev = wait_until(ended, 20, "the incident to end")
            assert ev["type"] == "fire" and ev["zone_id"] == "yard"
            clip = client.get(ev["clip_url"], headers=H)
            assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4", clip.text[:300]
            info = _mp4_summary(clip.content)
            assert info["codec"] == "h264" and info["size"] == (320, 240), info
            assert info["boxes"].index(b"moov") < info["boxes"].index(b"mdat"), info  # faststart
            assert info["pictures"] >= 10 * (ev["end_ns"] - ev["start_ns"]) / S, info
            (tmp_path / "event.mp4").write_bytes(clip.content)
            assert chromium_title(tmp_path / "event.mp4", tmp_path) == "played 320x240"

            snap = client.get(ev["snapshot_url"], headers=H)
            assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8", snap.content[:100]

            # the recordings cover the incident; a clip cut from them plays
            rec = client.get("/api/sources/quay-h265/recordings", headers=H).json()
            assert rec["recording"] and any(s["start_ns"] <= ev["start_ns"] and s["end_ns"] >= ev["end_ns"]
                                             for s in rec["spans"]), (rec, ev)
            # (the camera was connected a moment before the incident: its pre-roll may reach before the recording)
            a, b = max(ev["start_ns"] - S, rec["spans"][0]["start_ns"]), ev["end_ns"]
            cut = client.get("/api/sources/quay-h265/clip", params={"start_ns": a, "end_ns": b}, headers=H)
            assert cut.status_code == 200, cut.text[:300]
            cut_info = _mp4_summary(cut.content)
            assert cut_info["codec"] == "h264" and cut_info["pictures"] >= 10 * (b - a) / S - 2, cut_info
            (tmp_path / "recording.mp4").write_bytes(cut.content)
            assert chromium_title(tmp_path / "recording.mp4", tmp_path) == "played 320x240"

            # the evidence package holds the clip
            z = client.get(f"/api/events/{ev['id']}/evidence.zip", headers=H)
            assert z.status_code == 200, z.text[:300]
            with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
                names = zf.namelist()
                assert "clip.mp4" in names, names
                assert _mp4_summary(zf.read("clip.mp4"))["codec"] == "h264"

            # live video: re-encoded to H.264
            with client.websocket_connect("/api/sources/quay-h265/video", headers=H) as ws:
                hello, init, fragments, _ = _read_video(ws, 2.5)
            assert hello["codec"].startswith("avc1.") and hello["transcoded_from"] == "hevc", hello
            frames = _decode(init, fragments, tmp_path)
            assert frames and frames[0].key_frame and (frames[0].width, frames[0].height) == (320, 240)

            # the camera goes away and comes back: offline, online again, recorded again
            before = svc.readers["quay-h265"].status()
            cam.stop()
            wait_until(lambda: _source(client)["state"] == "offline", 15, "the camera to go offline")
            down_ns = time.time_ns()
            cam.start()
            wait_until(lambda: _source(client)["state"] == "online", 20, "the camera to come back")
            wait_until(lambda: svc.readers["quay-h265"].status().frames_decoded >= before.frames_decoded + 20, 15,
                   "pictures after the reconnect")
            newest = lambda: client.get("/api/sources/quay-h265/recordings", headers=H).json()["newest_ns"]  # noqa: E731
            wait_until(lambda: (newest() or 0) > down_ns + S, 15, "recording after the reconnect")
            after = client.get("/api/sources/quay-h265/clip", params={"start_ns": down_ns + S, "end_ns": newest()},
                               headers=H)
            assert after.status_code == 200, after.text[:300]
            assert _mp4_summary(after.content)["codec"] == "h264"
            assert svc.readers["quay-h265"].status().reconnects >= before.reconnects + 1
    finally:
        svc.stop()
    # every recorded segment, before and after the reconnect, is an H.265 MP4 that plays on its own (the server sends
    # VPS/SPS/PPS before its first IDR only, not before the CRA keyframes that start the later segments)
    segments = list_segments(tmp_path / "data" / "media" / "recordings", "quay-h265")
    assert len(segments) >= 4 and any(s.start_ns > down_ns for s in segments), segments
    for seg in segments:
        assert _ffmpeg_errors(seg.path) == "", seg.path.name
        with av.open(str(seg.path)) as c:
            assert c.streams.video[0].codec_context.name == "hevc"
            n_packets = sum(1 for p in c.demux(video=0) if p.size)
        with av.open(str(seg.path)) as c:  # every picture decodes (a segment may span a short outage: fewer)
            assert sum(1 for _ in c.decode(video=0)) == n_packets >= 5, seg.path.name


# ---------------------------------------------------------------------------------------- focused: the parameter sets
VPS, SPS, PPS = b"\x40\x01\x0c\x01", b"\x42\x01\x01\x01\x60", b"\x44\x01\xc1\x72"
SC = b"\0\0\0\x01"
PARAMS = SC + VPS + SC + SPS + SC + PPS
IDR, CRA, TRAIL, SEI = b"\x28\x01\xaf", b"\x2a\x01\xaf", b"\x02\x01\xd0", b"\x4e\x01\x05"


@pytest.mark.parametrize("data, expected", [
    (SC + CRA, PARAMS + SC + CRA),  # a CRA keyframe without them: they go in front
    (SC + SEI + SC + CRA, PARAMS + SC + SEI + SC + CRA),
    (PARAMS + SC + IDR, PARAMS + SC + IDR),  # it has them: unchanged
    (SC + VPS + b"\0\0\x01" + SPS + b"\0\0\x01" + PPS + SC + IDR, SC + VPS + b"\0\0\x01" + SPS + b"\0\0\x01" + PPS + SC + IDR),
    (SC + IDR + SC + SPS, PARAMS + SC + IDR + SC + SPS),  # an SPS after the first slice is not one for it
])
def test_ensure_hevc_params(data, expected):
    from seawatch.streams.packets import ensure_hevc_params, ensure_params

    assert ensure_hevc_params(data, PARAMS) == expected
    assert ensure_params(data, PARAMS, "hevc") == expected
    assert ensure_hevc_params(data, b"") == data
    assert ensure_params(data, PARAMS, "mjpeg") == data


def test_hevc_param_sets_and_hvcc_to_annexb():
    from seawatch.streams.packets import annexb_params_of, hevc_param_sets, hvcc_to_annexb_params, param_sets

    key = SC + b"\x46\x01\x10" + SC + VPS + b"\0\0\x01" + SPS + SC + PPS + SC + SEI + SC + IDR  # AUD first
    assert hevc_param_sets(key) == PARAMS == param_sets(key, "hevc")
    assert hevc_param_sets(SC + TRAIL) == b"" and hevc_param_sets(SC + IDR + SC + SPS) == b""
    # hvcC: 22 bytes of profile/level fields, then arrays (type, count, [length, NAL]...)
    arrays = b"".join(bytes([0x80 | t]) + b"\x00\x01" + len(n).to_bytes(2, "big") + n
                      for t, n in ((32, VPS), (33, SPS), (34, PPS)))
    hvcc = b"\x01" + bytes(21) + b"\x03" + arrays
    assert hvcc_to_annexb_params(hvcc) == PARAMS == annexb_params_of("hevc", hvcc)
    assert hvcc_to_annexb_params(PARAMS) == PARAMS  # an RTSP stream's extradata (from the SDP) is Annex B already
    assert hvcc_to_annexb_params(b"") == b"" and hvcc_to_annexb_params(hvcc[:30]) == b""  # cut short
    assert annexb_params_of("mjpeg", hvcc) == b""


def _without_params(data: bytes) -> bytes:
    """An Annex B access unit without its VPS/SPS/PPS NAL units."""
    starts = [i for i in range(len(data) - 3) if data[i:i + 3] == b"\0\0\x01"]
    out = bytearray()
    for k, i in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(data)
        if end < len(data) and data[end - 1] == 0:
            end -= 1
        if (data[i + 3] >> 1) & 0x3F not in (32, 33, 34):
            out += SC + data[i + 3:end]
    return bytes(out)


def test_hevc_segments_after_the_first_play_when_keyframes_lack_parameter_sets(tmp_path):
    """An H.265 camera sending its parameter sets in the SDP (the stream's extradata) and before its first keyframe
    only: each segment the recorder writes (a new one every second here) decodes on its own, as does a clip cut
    from the segments alone."""
    from fractions import Fraction

    from seawatch.streams.packets import EncodedPacket
    from seawatch.streams.recording import SegmentRecorder, cut_clip, stream_info

    raw = tmp_path / "cam.hevc"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=160x120:rate=10", "-t", "4", "-c:v", "libx265", "-x265-params",
                    "keyint=10:min-keyint=10:bframes=0:log-level=error", "-pix_fmt", "yuv420p", "-f", "hevc", str(raw)],
                   check=True, timeout=60)
    t0_ns = 1_800_000_000 * S
    with av.open(str(raw)) as c:
        st = c.streams.video[0]
        info = stream_info(st)
        data = [bytes(p) for p in c.demux(st) if p.size]
    assert info.codec_name == "hevc" and info.extradata[:3] == b"\0\0\x01", info  # Annex B, as from an SDP
    assert info.annexb_params == info.extradata
    packets = []
    for i, d in enumerate(data):
        key = i % 10 == 0
        packets.append(EncodedPacket(d if i == 0 else _without_params(d), i, i, Fraction(1, 10), key, t0_ns + i * S // 10))
    assert len(packets) == 40 and all(b"\0\0\x01\x42" not in p.data for p in packets[1:])
    rec = SegmentRecorder(tmp_path / "rec", "cam", segment_s=1.0)
    rec.set_info(info)
    for p in packets:
        rec.push(p)
    rec.close()
    segments = list_segments(tmp_path / "rec", "cam")
    assert len(segments) == 4, segments
    for seg in segments:
        assert _ffmpeg_errors(seg.path) == "", seg.path.name
        with av.open(str(seg.path)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 10, seg.path.name
    clip = cut_clip(tmp_path / "late.mp4", t0_ns + 25 * S // 10, t0_ns + 39 * S // 10, recordings=tmp_path / "rec",
                    source_id="cam")
    with av.open(str(clip)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and sum(1 for _ in c.decode(video=0)) >= 15
