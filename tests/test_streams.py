"""Streams without a network server: URL redaction, clock, queue, backoff, pre-event ring, motion gate, file readers
(paced, looped, truncated, not video), MJPEG over HTTP, segment recording with retention, clips and snapshots.

The RTSP server tests are in ``test_streams_rtsp.py``. Test clips are made with Debian's ffmpeg into tmp.
"""

from __future__ import annotations

import http.server
import random
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import missing
from seawatch.errors import InputError, StreamError
from seawatch.streams.clock import StreamClock
from seawatch.streams.frame_queue import FrameQueue, OverflowPolicy, QueueClosed
from seawatch.streams.motion import MotionGate, polygons_to_mask
from seawatch.streams.packets import EncodedPacket, PacketRing, StreamInfo, avcc_to_annexb_params, select_window
from seawatch.streams.recording import (
    SegmentRecorder,
    cut_clip,
    enforce_retention,
    ffprobe_summary,
    list_segments,
    mp4_top_boxes,
    save_jpeg,
)
from seawatch.streams.source import Source, SourceConfig, SourceGroup, State, backoff_delay_s
from seawatch.streams.urls import redact_text, redact_url, source_kind

S = 1_000_000_000


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        missing("Debian's ffmpeg is not installed (bash scripts/setup.sh)")
    return exe


def make_clip(path: Path, *, seconds: float = 4, size: str = "640x360", rate: int = 25, gop: int = 25,
              codec: str = "libx264") -> Path:
    args = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=size={size}:rate={rate}", "-t", str(seconds)]
    if codec == "libx264":
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-g", str(gop), "-bf", "0",
                 "-pix_fmt", "yuv420p"]
    else:
        args += ["-c:v", codec, "-q:v", "5"]
    subprocess.run([*args, str(path)], check=True, timeout=60)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """4 s, 640x360, 25 fps, H.264 baseline, 1 s GOP (100 frames)."""
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4")


def ffprobe(path: Path, entries: str = "stream=codec_name,width,height,nb_frames") -> str:
    exe = shutil.which("ffprobe")
    if exe is None:
        missing("Debian's ffprobe is not installed (bash scripts/setup.sh)")
    return subprocess.run([exe, "-v", "error", "-show_entries", entries, "-of", "compact", str(path)],
                          capture_output=True, text=True, timeout=30).stdout


# ----------------------------------------------------------------------------------------------- URLs
@pytest.mark.parametrize(
    "url, expected",
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/ch1", "rtsp://***@10.0.0.5:554/ch1"),
        ("rtsp://admin:p@ss@10.0.0.5/ch1", "rtsp://***@10.0.0.5/ch1"),
        ("rtsp://viewer@cam.local/live", "rtsp://***@cam.local/live"),
        ("http://cam/video.mjpg?user=admin&password=hunter2", "http://cam/video.mjpg?user=admin&password=***"),
        ("http://cam/stream?token=abc;x=1", "http://cam/stream?token=***;x=1"),
        ("rtsp://10.0.0.5/ch1", "rtsp://10.0.0.5/ch1"),
        ("/data/cam@2/clip.mp4", "/data/cam@2/clip.mp4"),
        ("", ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_text_removes_credentials_from_ffmpeg_messages():
    url = "rtsp://admin:s3cret@10.0.0.5/ch1"
    msg = f"[Errno 111] Connection refused: '{url}' (user admin:s3cret)"
    out = redact_text(msg, url)
    assert "s3cret" not in out and "rtsp://***@10.0.0.5/ch1" in out


@pytest.mark.parametrize("url, kind", [("rtsp://a/b", "rtsp"), ("http://a/b.mjpg", "mjpeg"),
                                       ("udp://0.0.0.0:5600", "udp"), ("/x/y.mp4", "file"), ("clip.mkv", "file")])
def test_source_kind(url, kind):
    assert source_kind(url) == kind


def test_bad_config_is_a_clear_error():
    with pytest.raises(InputError, match="rtsp_transport"):
        SourceConfig("c", "rtsp://x/y", rtsp_transport="http")
    with pytest.raises(InputError, match="read_timeout_s"):
        SourceConfig("c", "rtsp://x/y", read_timeout_s=0)
    with pytest.raises(InputError, match="empty"):
        SourceConfig("", "rtsp://x/y")


# ----------------------------------------------------------------------------------------------- clock
def test_clock_keeps_stream_spacing_despite_arrival_jitter():
    clock = StreamClock()
    rng = random.Random(1)
    base = 1_700_000_000 * S
    times = []
    for i in range(200):
        pts_s = i * 0.04
        recv = base + int(pts_s * S) + int(rng.uniform(0.005, 0.080) * S)  # 5-80 ms network/decode delay
        clock.observe(pts_s, recv)
        times.append(clock.capture_ns(pts_s, recv))
    gaps = np.diff(times) / 1e6
    assert np.all(gaps > 0)
    # after the best (lowest-delay) arrival has been seen, spacing is exactly the stream's 40 ms
    assert np.allclose(gaps[-100:], 40.0, atol=0.5)  # arrival jitter was 75 ms wide
    assert times[-1] - (base + int(199 * 0.04 * S)) <= 0.006 * S  # offset within the lowest delay seen


def test_clock_reanchors_on_jump_and_stays_monotonic():
    clock = StreamClock(jump_s=2.0)
    base = 1_700_000_000 * S
    out = []
    for i in range(50):
        clock.observe(i * 0.04, base + i * 40_000_000)
        out.append(clock.capture_ns(i * 0.04, base + i * 40_000_000))
    # the server restarts: pts starts again at 0, 3 s later
    later = base + 5 * S
    for i in range(50):
        clock.observe(i * 0.04, later + i * 40_000_000)
        out.append(clock.capture_ns(i * 0.04, later + i * 40_000_000))
    assert clock.reanchors == 1
    assert all(b > a for a, b in zip(out, out[1:]))
    assert abs(out[-1] - (later + 49 * 40_000_000)) < 1_000_000


def test_clock_follows_drift_and_reports_lag():
    # the camera's clock runs 100 ppm slow against ours, for 10 minutes at 25 fps, 5-30 ms network delay
    clock = StreamClock(window_s=60)
    rng = random.Random(2)
    base = 1_700_000_000 * S
    lags = []
    for i in range(25 * 600):
        pts_s = i * 0.04
        recv = base + int(pts_s * (1 + 100e-6) * S) + int(rng.uniform(0.005, 0.030) * S)
        clock.observe(pts_s, recv)
        lags.append(clock.lag_s(pts_s, recv))
    assert max(lags[-1000:]) < 0.035  # drift (60 ms over 10 min) is followed, not reported as lag
    # now decoding falls behind: packets come out 2 s late
    late = base + int(600 * (1 + 100e-6) * S) + 2 * S
    clock.observe(600.0, late)
    assert clock.lag_s(600.0, late) > 1.5


def test_clock_without_pts_uses_receive_time_and_fixed_anchor():
    clock = StreamClock()
    assert clock.capture_ns(None, 123) == 123
    assert clock.capture_ns(None, 100) == 124  # never backwards
    fixed = StreamClock(fixed_anchor_ns=10 * S)
    assert fixed.capture_ns(1.5, 0) == 11_500_000_000


# ----------------------------------------------------------------------------------------------- queue + backoff
def test_queue_drop_oldest_counts_drops():
    q: FrameQueue[int] = FrameQueue(3, OverflowPolicy.DROP_OLDEST)
    for i in range(10):
        assert q.put(i)
    assert q.dropped == 7
    assert [q.get(0), q.get(0), q.get(0)] == [7, 8, 9]
    assert q.get(0.05) is None


def test_queue_block_waits_then_times_out_and_closes():
    q: FrameQueue[int] = FrameQueue(1, OverflowPolicy.BLOCK)
    assert q.put(1)
    t = time.monotonic()
    assert not q.put(2, timeout_s=0.2)
    assert 0.15 < time.monotonic() - t < 1.0
    threading.Timer(0.1, q.get, args=(0,)).start()
    assert q.put(3, timeout_s=2.0)
    assert q.dropped == 0
    q.close()
    assert q.get(0) == 3
    with pytest.raises(QueueClosed):
        q.get(0.1)


def test_queue_get_latest_discards_older_as_drops():
    q: FrameQueue[int] = FrameQueue(8, OverflowPolicy.DROP_OLDEST)
    for i in range(5):
        q.put(i)
    assert q.get_latest(0) == 4
    assert q.skipped == 4 and q.dropped == 0 and len(q) == 0


def test_backoff_is_capped_exponential_with_jitter():
    rng = random.Random(3)
    delays = [backoff_delay_s(n, 0.5, 2.0, 0.25, rng) for n in range(8)]
    assert 0.375 <= delays[0] <= 0.625
    assert 0.75 <= delays[1] <= 1.25
    assert all(1.5 <= d <= 2.5 for d in delays[2:])
    assert len({round(d, 6) for d in delays[2:]}) > 1  # jitter: not in lockstep


# ----------------------------------------------------------------------------------------------- ring
def _pkt(t_s: float, key: bool, size: int = 1000) -> EncodedPacket:
    pts = int(round(t_s * 90000))
    return EncodedPacket(b"\0" * size, pts, pts, Fraction(1, 90000), key, int(t_s * S))


def test_ring_bounded_by_age_and_starts_at_keyframe():
    ring = PacketRing(max_age_s=3.0)
    ring.set_info(StreamInfo("h264", 640, 360))
    ring.push(_pkt(0.0, False))  # cannot start a ring
    assert len(ring) == 0
    for i in range(250):  # 10 s at 25 fps, keyframe every 1 s
        ring.push(_pkt(i * 0.04, i % 25 == 0))
    assert (ring.newest_ns - ring.oldest_ns) / S <= 3.0
    assert ring.oldest_ns / S == pytest.approx(7.0)  # whole GOPs evicted
    assert ring.window(7.5 * S, 8.5 * S)[0].capture_time_ns == 7 * S  # back to the keyframe


def test_ring_bounded_by_bytes():
    ring = PacketRing(max_age_s=100, max_bytes=50_000)
    ring.set_info(StreamInfo("h264", 640, 360))
    for i in range(500):
        ring.push(_pkt(i * 0.04, i % 25 == 0, size=1000))
    assert ring.size_bytes <= 50_000
    assert ring._packets[0].is_keyframe


def test_ring_cleared_when_format_changes():
    ring = PacketRing(10)
    ring.set_info(StreamInfo("h264", 640, 360))
    ring.push(_pkt(0, True))
    ring.set_info(StreamInfo("h264", 640, 360))
    assert len(ring) == 1
    ring.set_info(StreamInfo("h264", 1920, 1080))
    assert len(ring) == 0


def test_select_window_keeps_b_frame_references():
    tb = Fraction(1, 25)
    # decode order I0 P3 B1 B2 P6 B4 B5 (pts in frames), dts 0..6 shifted by 2
    order = [(0, True), (3, False), (1, False), (2, False), (6, False), (4, False), (5, False)]
    pk = [EncodedPacket(b"x", p, d - 2, tb, k, p * S // 25) for d, (p, k) in enumerate(order)]
    win = select_window(pk, 0, 2 * S // 25)
    # frames 0..2 need P3 (referenced by B1, B2), but not P6
    assert [p.pts for p in win] == [0, 3, 1, 2]


def test_access_units_are_assembled():
    from seawatch.streams.packets import AccessUnitAssembler

    tb = Fraction(1, 90000)
    sps_pps = b"\0\0\0\x01\x67\x42" + b"\0\0\0\x01\x68\xce"
    idr1, idr2, p1 = b"\0\0\x01\x65\x88", b"\0\0\x01\x65\x99", b"\0\0\x01\x41\x9a"
    asm = AccessUnitAssembler("h264")
    assert asm.push(EncodedPacket(sps_pps, None, None, tb, True, 0)) is None  # parameter sets only: held
    assert asm.push(EncodedPacket(idr1, 0, 0, tb, True, 1)) is None
    assert asm.push(EncodedPacket(sps_pps + idr2, 0, 0, tb, True, 1)) is None  # same picture, second slice
    au = asm.push(EncodedPacket(p1, 3600, 3600, tb, False, 2))
    assert au.data == sps_pps + idr1 + sps_pps + idr2 and au.is_keyframe and au.pts == 0
    assert asm.flush().data == p1 and asm.flush() is None


@pytest.mark.parametrize("data, codec, expected", [
    (b"\0\0\0\x01\x67\x42" + b"\0\0\0\x01\x68\xce" + b"\0\0\x01\x65\x88", "h264", False),  # first_mb 0
    (b"\0\0\0\x01\x67\x42" + b"\0\0\x01\x65\x48\x00", "h264", True),  # first_mb_in_slice 1: second slice
    (b"\0\0\x01\x41\x9a\x00", "h264", False),
    (b"\0\0\0\x01\x67\x42\x00", "h264", None),  # no slice
    (b"\0\0\x01\x26\x01\xaf", "hevc", False),  # IDR_W_RADL, first_slice_segment_in_pic_flag 1
    (b"\0\0\x01\x26\x01\x2f", "hevc", True),
    (b"\xff\xd8\xff", "mjpeg", None),
])
def test_continues_picture(data, codec, expected):
    from seawatch.streams.packets import continues_picture

    assert continues_picture(data, codec) is expected


def test_h264_param_sets_of_a_keyframe():
    from seawatch.streams.packets import h264_param_sets

    sps, pps = b"\x67\x42\x00\x0a", b"\x68\xce\x38\x80"
    key = b"\0\0\0\x01\x09\xf0" + b"\0\0\0\x01" + sps + b"\0\0\x01" + pps + b"\0\0\0\x01\x65\x88\x84"
    assert h264_param_sets(key) == b"\0\0\0\x01" + sps + b"\0\0\0\x01" + pps
    assert h264_param_sets(b"\0\0\x01\x41\x9a") == b""


def test_retimer_keeps_stream_spacing_and_bridges_reconnects():
    from seawatch.streams.recording import Retimer

    tb = Fraction(1, 90000)
    r = Retimer()
    out = []
    # capture times wobble (clock estimate improving), stream pts are exact 40 ms
    for i, wobble_ms in enumerate([0, -15, 3, -20, 0]):
        out.append(r.next(EncodedPacket(b"", 1000 + i * 3600, 1000 + i * 3600, tb, i == 0, i * 40_000_000 + wobble_ms * 1_000_000)))
    # reconnect: pts restart at 0, 2 s later by capture time
    out.append(r.next(EncodedPacket(b"", 0, 0, tb, True, 2_160_000_000)))
    out.append(r.next(EncodedPacket(b"", 3600, 3600, tb, False, 2_200_000_000)))
    dts = [d for _, d in out]
    assert dts[:5] == [0, 3600, 7200, 10800, 14400]
    assert dts[5] == 14400 + 2_000_000_000 * 9 // 100000 and dts[6] == dts[5] + 3600


def test_avcc_to_annexb():
    sps, pps = b"\x67\x42\xc0\x1f\xaa", b"\x68\xce\x3c\x80"
    avcc = b"\x01\x42\xc0\x1f\xff\xe1" + len(sps).to_bytes(2, "big") + sps + b"\x01" + len(pps).to_bytes(2, "big") + pps
    assert avcc_to_annexb_params(avcc) == b"\0\0\0\x01" + sps + b"\0\0\0\x01" + pps
    assert avcc_to_annexb_params(b"") == b""


# ----------------------------------------------------------------------------------------------- motion
def _scene(h=360, w=640, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(60, 120, (h // 8, w // 8), dtype=np.uint8)).repeat(8, 0).repeat(8, 1)


def test_motion_gate_static_scene_analysed_only_at_min_rate():
    gate = MotionGate(min_interval_s=2.0)
    scene = _scene()
    results = [gate.update(scene, i * 40_000_000) for i in range(150)]  # 6 s at 25 fps
    analysed = [i for i, r in enumerate(results) if r.analyse]
    assert analysed == [0, 50, 100]  # first frame, then every 2 s: a parked van is still looked at
    assert {results[i].reason for i in analysed[1:]} == {"interval"}


def test_motion_gate_finds_moving_object_and_its_box():
    gate = MotionGate(min_interval_s=10.0)
    scene = _scene()
    gate.update(scene, 0)
    moved = scene.copy()
    moved[100:160, 300:380] = 250
    r = gate.update(moved, 40_000_000)
    assert r.analyse and r.reason == "motion"
    assert len(r.boxes_xyxy_px) == 1
    x0, y0, x1, y1 = r.boxes_xyxy_px[0]
    assert 280 <= x0 <= 300 and 380 <= x1 <= 400 and 80 <= y0 <= 100 and 160 <= y1 <= 180


def test_motion_gate_ignores_masked_glare():
    water = [[(0.0, 0.6), (1.0, 0.6), (1.0, 1.0), (0.0, 1.0)]]
    gate = MotionGate(min_interval_s=10.0, ignore_polygons=water)
    scene = _scene()
    gate.update(scene, 0)
    glare = scene.copy()
    glare[250:360:4, :] = 255  # sparkle on the water, bottom 40 %
    r = gate.update(glare, 40_000_000)
    assert not r.analyse and r.reason == "idle"
    unmasked = MotionGate(min_interval_s=10.0)
    unmasked.update(scene, 0)
    assert unmasked.update(glare, 40_000_000).reason == "motion"


def test_polygon_mask():
    m = polygons_to_mask([[(0, 0), (0.5, 0), (0.5, 1), (0, 1)]], 10, 4)
    assert m[:, :5].all() and not m[:, 6:].any()


# ----------------------------------------------------------------------------------------------- file readers
def test_file_fast_reads_every_frame_with_stream_timing(clip):
    with Source(SourceConfig("f", str(clip), pace="fast", start_time_ns=1_000 * S)) as src:
        frames = list(src)
        st = src.status()
    assert st.state is State.ENDED and st.last_error is None
    assert [f.seq for f in frames] == list(range(100))
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].capture_time_ns == 1_000 * S
    assert np.all(np.diff([f.capture_time_ns for f in frames]) == 40_000_000)
    assert st.drops == 0  # files never drop (BLOCK policy)


def test_file_slow_consumer_blocks_reader_instead_of_dropping(clip):
    src = Source(SourceConfig("f", str(clip), pace="fast", queue_size=2)).start()
    got = []
    for _ in range(10):
        got.append(src.read(2.0))
        time.sleep(0.05)
    got += list(src)
    src.stop()
    assert [f.seq for f in got] == list(range(100))
    assert src.status().drops == 0


def test_file_loop_realtime_paced_and_monotonic(clip):
    src = Source(SourceConfig("f", str(clip), loop=True, pace="realtime")).start()
    frames, got_s = [], []
    deadline = time.monotonic() + 30  # (the first picture may take a while on a loaded machine)
    while time.monotonic() < deadline and not (got_s and got_s[-1] - got_s[0] >= 5.0):  # past the 4 s clip's end
        f = src.read(0.5)
        if f is not None:
            frames.append(f)
            got_s.append(time.monotonic())
    assert src.stop(3.0)
    assert src.status().state is State.STOPPED
    assert len(frames) > 100  # crossed the loop point of the 100-frame clip
    rate_fps = (len(frames) - 1) / (got_s[-1] - got_s[0])  # timed from the first picture, not from start()
    assert 22 <= rate_fps <= 28, rate_fps  # 25 fps real time
    ts = np.array([f.capture_time_ns for f in frames])
    assert np.all(np.diff(ts) > 0)
    assert np.allclose(np.diff(ts), 40_000_000, atol=1)  # even across the loop point
    assert [f.seq for f in frames] == list(range(len(frames)))


def test_fast_looping_file_releases_its_files(clip):
    import os

    before = len(os.listdir("/proc/self/fd"))
    src = Source(SourceConfig("l", str(clip), loop=True, pace="fast", queue_size=1000)).start()
    seqs = []
    deadline = time.monotonic() + 10
    while len(seqs) < 450 and time.monotonic() < deadline:  # 4.5 passes over the 100-frame clip
        f = src.read(1.0)
        if f is not None:
            seqs.append(f.seq)
    assert src.stop(3)
    assert seqs == list(range(450))
    assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_truncated_file_is_a_clear_error(clip, tmp_path):
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # moov at the end (no faststart): unreadable
    src = Source(SourceConfig("t", str(cut), pace="fast")).start()
    assert list(src) == []
    st = src.status()
    assert st.state is State.FAILED
    assert "not a readable video" in st.last_error and str(cut) in st.last_error


def test_truncated_faststart_file_reports_missing_frames(clip, tmp_path):
    fs = tmp_path / "fs.mp4"
    subprocess.run([_ffmpeg(), "-v", "error", "-y", "-i", str(clip), "-c", "copy", "-movflags", "+faststart", str(fs)],
                   check=True)
    data = fs.read_bytes()
    cut = tmp_path / "fs_cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    src = Source(SourceConfig("t", str(cut), pace="fast")).start()
    frames = list(src)
    st = src.status()
    assert 0 < len(frames) < 100  # what could be read was delivered
    assert st.state is State.FAILED and "truncated" in st.last_error


@pytest.mark.parametrize("content, expect", [(b"hello, not a video\n" * 50, "not a readable video"),
                                             (b"", "empty"), (None, "file not found")])
def test_not_video_files_are_clear_errors(tmp_path, content, expect):
    p = tmp_path / "x.mp4"
    if content is not None:
        p.write_bytes(content)
    src = Source(SourceConfig("bad", str(p), pace="fast")).start()
    assert list(src) == []
    st = src.status()
    assert st.state is State.FAILED and expect in st.last_error


def test_audio_only_file_is_an_error(tmp_path):
    p = tmp_path / "sound.wav"
    subprocess.run([_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", str(p)], check=True)
    src = Source(SourceConfig("a", str(p), pace="fast")).start()
    assert list(src) == []
    assert src.status().state is State.FAILED and "no video stream" in src.status().last_error


def test_keyframe_only_decoding(clip):
    with Source(SourceConfig("k", str(clip), pace="fast", decode="keyframes")) as src:
        frames = list(src)
        st = src.status()
    assert len(frames) == 4 and st.packets == 100  # 1 s GOP, 4 s clip
    assert st.state is State.ENDED


def test_gated_file_skips_conversion_of_idle_frames(tmp_path):
    # a still picture for 4 s: only the first frame and the min-rate frames reach the queue
    still = tmp_path / "still.mp4"
    subprocess.run([_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                    "-vf", "trim=end_frame=1,loop=loop=-1:size=1", "-t", "4", "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", "25", "-pix_fmt", "yuv420p", str(still)], check=True)
    gate = MotionGate(min_interval_s=1.0)
    with Source(SourceConfig("g", str(still), pace="fast"), gate=gate) as src:
        frames = list(src)
        st = src.status()
    assert len(frames) == 4  # t = 0, 1, 2, 3 s
    assert st.frames_gated_out == 96
    assert frames[0].motion is not None and frames[1].motion.reason == "interval"


def test_watchdog_replaces_a_reader_stuck_inside_ffmpeg(monkeypatch):
    """A read that never returns (what PyAV does on a hung server without timeouts): the watchdog marks the source
    offline after stall_timeout_s, starts a fresh reader, and stop() does not wait for the stuck one."""
    from types import SimpleNamespace

    from seawatch.streams import source as source_mod

    release = threading.Event()
    opened = []

    class StuckContainer:
        def __init__(self):
            ctx = SimpleNamespace(name="h264", width=64, height=48, extradata=b"", thread_count=0, thread_type=None,
                                  is_open=False, decode=lambda p: [])
            self.streams = SimpleNamespace(video=[SimpleNamespace(codec_context=ctx, average_rate=25, guessed_rate=25,
                                                                  time_base=Fraction(1, 90000), frames=0,
                                                                  start_time=0)])

        def demux(self, stream):
            release.wait(30)  # blocked in "FFmpeg"
            return iter(())

        def close(self):
            pass

    def fake_open(config):
        opened.append(time.monotonic())
        return StuckContainer()

    monkeypatch.setattr(source_mod, "open_input", fake_open)
    src = Source(SourceConfig("stuck", "rtsp://user:pw@cam/1", stall_timeout_s=0.5, backoff_initial_s=0.1)).start()
    try:
        t0 = time.monotonic()
        while src.status().stalls < 2 and time.monotonic() - t0 < 5:
            time.sleep(0.02)
        st = src.status()
        assert st.stalls >= 2 and len(opened) >= 2  # noticed twice, a new reader each time
        assert opened[1] - opened[0] < 1.5
        assert "stalled" in st.last_error and "pw" not in st.url
        t = time.monotonic()
        src.stop(1.0)
        assert time.monotonic() - t < 1.5  # the stuck readers are abandoned, not waited for
        assert src.status().state is State.STOPPED
    finally:
        release.set()


def _slow_decoder_source(monkeypatch, max_lag_s: float) -> Source:
    """A live source whose packets arrive at 25 fps but whose decoder needs 60 ms per frame (1.5x too slow)."""
    from types import SimpleNamespace

    from seawatch.streams import source as source_mod

    tb = Fraction(1, 90000)

    def decode(packet):
        if packet is None:
            return []
        time.sleep(0.06)
        return [SimpleNamespace(pts=packet.pts, time_base=tb, format=SimpleNamespace(name="rgb24"),
                                to_ndarray=lambda format: np.zeros((8, 8, 3), np.uint8))]

    class Container:
        def __init__(self):
            ctx = SimpleNamespace(name="mpeg4", width=8, height=8, extradata=b"", thread_count=0, thread_type=None,
                                  is_open=False, decode=decode)
            self.streams = SimpleNamespace(video=[SimpleNamespace(codec_context=ctx, average_rate=25, guessed_rate=25,
                                                                  time_base=tb, frames=0, start_time=0)])

        def demux(self, stream):
            t0 = time.monotonic()
            for i in range(10_000):
                delay = t0 + i * 0.04 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # "the network": packets become available at 25 fps
                yield SimpleNamespace(pts=i * 3600, dts=i * 3600, size=100, is_keyframe=i % 25 == 0)

        def close(self):
            pass

    monkeypatch.setattr(source_mod, "open_input", lambda config: Container())
    return Source(SourceConfig("slow", "rtsp://cam/1", max_lag_s=max_lag_s, queue_size=1000)).start()


@pytest.mark.parametrize("max_lag_s, bounded", [(0.5, True), (1000.0, False)])
def test_live_latency_does_not_grow_when_decoding_is_too_slow(monkeypatch, max_lag_s, bounded):
    src = _slow_decoder_source(monkeypatch, max_lag_s)
    frames = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 4.5:
            f = src.read(0.2)
            if f is not None:
                frames.append(f)
        st = src.status()
    finally:
        src.stop(2)
    late_s = [(f.receive_time_ns - f.capture_time_ns) / 1e9 for f in frames if f.receive_time_ns - frames[0].receive_time_ns > 3e9]
    assert late_s
    print(f"max_lag_s={max_lag_s}: frames {len(frames)}, worst lateness {max(late_s):.2f} s, "
          f"skipped late {st.frames_skipped_late}")
    if bounded:
        assert max(late_s) < 1.2 and st.frames_skipped_late > 0 and st.drops >= st.frames_skipped_late
    else:  # the same source without catch-up falls further and further behind: the test can tell
        assert max(late_s) > 1.2 and st.frames_skipped_late == 0


def test_source_group_one_failure_does_not_stop_others(clip, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk" * 100)
    group = SourceGroup([Source(SourceConfig("good", str(clip), pace="fast")),
                         Source(SourceConfig("bad", str(bad), pace="fast"))])
    with group:
        frames = list(group.sources["good"])
        status = group.status()
    assert len(frames) == 100
    assert status["bad"].state is State.FAILED and status["good"].state in (State.ENDED, State.STOPPED)
    assert group.sources["good"].status().state is State.STOPPED


# ----------------------------------------------------------------------------------------------- MJPEG over HTTP
class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        import cv2

        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        i = 0
        try:
            while not self.server.stop_serving.is_set():
                img = np.full((240, 320, 3), (i * 7) % 255, np.uint8)
                jpg = cv2.imencode(".jpg", img)[1].tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                 + jpg + b"\r\n")
                i += 1
                time.sleep(0.04)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture()
def mjpeg_server():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _MjpegHandler)
    srv.daemon_threads = True
    srv.stop_serving = threading.Event()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.stop_serving.set()
    srv.shutdown()
    srv.server_close()


def test_mjpeg_over_http_and_transcoded_clip(mjpeg_server, tmp_path, caplog):
    port = mjpeg_server.server_address[1]
    ring = PacketRing(10)
    url = f"http://viewer:topsecret@127.0.0.1:{port}/video.mjpg"
    caplog.set_level("INFO", logger="seawatch.streams")
    src = Source(SourceConfig("mj", url), ring=ring).start()
    frames = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:
        f = src.read(0.5)
        if f is not None:
            frames.append(f)
    st = src.status()
    now = time.time_ns()
    out = cut_clip(tmp_path / "mj.mp4", now - 2 * S, now, ring=ring)
    src.stop()
    assert len(frames) >= 30 and frames[0].image.shape == (240, 320, 3)
    assert np.all(np.diff([f.capture_time_ns for f in frames]) > 0)
    assert "topsecret" not in st.url and "topsecret" not in caplog.text and "***@" in caplog.text
    info = ffprobe_summary(out)
    assert info["codec"] == "h264" and info["packets"] >= 40
    assert mp4_top_boxes(out).index("moov") < mp4_top_boxes(out).index("mdat")


def test_mjpeg_recorded_as_is_and_clip_transcoded_from_segments(mjpeg_server, tmp_path):
    port = mjpeg_server.server_address[1]
    rec = SegmentRecorder(tmp_path / "rec", "mj", segment_s=1.0)
    src = Source(SourceConfig("mj", f"http://127.0.0.1:{port}/video.mjpg"), recorder=rec).start()
    try:
        t0 = time.monotonic()
        while len(list_segments(tmp_path / "rec", "mj")) < 2 and time.monotonic() - t0 < 8:
            src.read(0.2)
    finally:
        src.stop()
    segs = list_segments(tmp_path / "rec", "mj")
    assert len(segs) >= 2 and all(seg.path.suffix == ".mkv" for seg in segs)
    assert "codec_name=mjpeg" in ffprobe(segs[0].path)  # kept as the camera sent it
    out = cut_clip(tmp_path / "mj.mp4", segs[0].start_ns, segs[1].end_ns, recordings=tmp_path / "rec", source_id="mj")
    info = ffprobe_summary(out)
    assert info["codec"] == "h264" and info["packets"] >= 30
    assert info["boxes"].index("moov") < info["boxes"].index("mdat")


# ----------------------------------------------------------------------------------------------- UDP (drone video)
@pytest.mark.parametrize("fmt, input_format", [("mpegts", None), ("h264", "h264")])
def test_udp_h264_drone_stream(clip, tmp_path, fmt, input_format):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ring = PacketRing(20)
    src = Source(SourceConfig("drone", f"udp://127.0.0.1:{port}", input_format=input_format), ring=ring).start()
    sender = subprocess.Popen([_ffmpeg(), "-v", "error", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy",
                               "-f", fmt, f"udp://127.0.0.1:{port}?pkt_size=1316"])
    try:
        frames, first, decoded0 = [], None, 0
        deadline = time.monotonic() + 15  # the stream is joined at its next keyframe (1 s GOP), then read for 3 s
        while time.monotonic() < deadline and (first is None or time.monotonic() - first < 3.0):
            f = src.read(0.5)
            if f is not None:
                frames.append(f)
                if first is None:
                    first, decoded0 = time.monotonic(), src.status().frames_decoded
        st = src.status()
        now = time.time_ns()
        out = cut_clip(tmp_path / "drone.mp4", now - S, now, ring=ring)
    finally:
        sender.kill()
        sender.wait()
        src.stop()
    assert st.state is State.ONLINE and st.decode_errors == 0
    # 3 s of 25 fps decoded (75); a consumer slowed by a busy machine reads fewer (a live queue keeps the newest)
    assert st.frames_decoded - decoded0 >= 60 and len(frames) >= 20 and frames[0].image.shape == (360, 640, 3)
    assert np.all(np.diff([f.capture_time_ns for f in frames]) > 0)
    assert ffprobe_summary(out)["codec"] == "h264"


def test_udp_without_sender_goes_offline_without_blocking():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = Source(SourceConfig("silent", f"udp://127.0.0.1:{port}", open_timeout_s=1.0, read_timeout_s=1.0,
                              stall_timeout_s=1.0)).start()
    try:
        t0 = time.monotonic()
        assert src.read(0.5) is None
        assert time.monotonic() - t0 < 0.7
        deadline = time.monotonic() + 5
        while src.status().state is not State.OFFLINE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert src.status().state is State.OFFLINE
    finally:
        t = time.monotonic()
        src.stop(3)
        assert time.monotonic() - t < 3.5


# ----------------------------------------------------------------------------------------------- recording + clips
def test_segments_retention_and_clip_across_segments(clip, tmp_path):
    rec = SegmentRecorder(tmp_path / "rec", "cam", segment_s=1.0, max_age_s=None, max_total_bytes=None)
    t0 = 1_800_000_000 * S
    with Source(SourceConfig("cam", str(clip), pace="fast", start_time_ns=t0), recorder=rec) as src:
        assert len(list(src)) == 100
    segs = list_segments(tmp_path / "rec", "cam")
    assert len(segs) == 4  # 1 s segments cut at the 1 s keyframes
    assert segs[0].start_ns == t0 and segs[1].start_ns == t0 + S
    assert not list((tmp_path / "rec" / "cam").glob("*.part.mp4"))
    # the segments were remuxed, not re-encoded: same codec and profile as the input
    assert "h264" in ffprobe(segs[0].path, "stream=codec_name,profile") and "Baseline" in ffprobe(
        segs[0].path, "stream=codec_name,profile")

    out = cut_clip(tmp_path / "c.mp4", t0 + int(1.5 * S), t0 + int(2.5 * S), recordings=tmp_path / "rec",
                   source_id="cam")
    info = ffprobe_summary(out)
    assert info["codec"] == "h264" and info["packets"] == 38  # from the 1 s keyframe to 2.5 s: pre-roll kept
    assert info["boxes"].index("moov") < info["boxes"].index("mdat")
    assert "nb_frames=38" in ffprobe(out)

    total = sum(s.size_bytes for s in segs)
    deleted = enforce_retention(tmp_path / "rec", "cam", max_age_s=None, max_total_bytes=total - 1)
    assert deleted == [segs[0].path]
    deleted = enforce_retention(tmp_path / "rec", "cam", max_age_s=1.0, max_total_bytes=None, now_ns=t0 + 4 * S)
    assert [p.name for p in deleted] == [segs[1].path.name, segs[2].path.name]

    with pytest.raises(StreamError, match="no recorded video"):
        cut_clip(tmp_path / "none.mp4", t0 + 100 * S, t0 + 101 * S, recordings=tmp_path / "rec", source_id="cam")
    with pytest.raises(InputError, match="empty"):
        cut_clip(tmp_path / "none.mp4", t0 + 2 * S, t0 + S, recordings=tmp_path / "rec", source_id="cam")


def _frame_sizes(path: Path) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=width,height",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=60)
    return [line.strip(",") for line in out.stdout.split()]


def test_resolution_change_mid_stream_restarts_ring_and_segment_at_its_keyframe(tmp_path):
    """A camera switched from 320x240 to 160x120 without dropping the connection (new SPS in-band). Ring and
    recorder must take the new size at the change's keyframe, which is kept: the ring starts with it, a new segment
    starts with it, and clips after the change are 160x120 only, with the size in their header."""
    parts = []
    for i, size in enumerate(("320x240", "160x120")):
        p = tmp_path / f"p{i}.ts"
        subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"testsrc2=size={size}:rate=10", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast",
                        "-profile:v", "baseline", "-g", "10", "-bf", "0", "-pix_fmt", "yuv420p",
                        "-output_ts_offset", str(3 * i), str(p)], check=True, timeout=60)
        parts.append(p.read_bytes())
    both = tmp_path / "both.ts"
    both.write_bytes(b"".join(parts))
    t0 = 1_800_000_000 * S
    ring = PacketRing(60)
    rec = SegmentRecorder(tmp_path / "rec", "cam", segment_s=60.0, max_age_s=None, max_total_bytes=None)
    with Source(SourceConfig("cam", str(both), pace="fast", start_time_ns=t0), ring=ring, recorder=rec) as src:
        frames = list(src)
    assert len(frames) == 60
    t_change = next(f.capture_time_ns for f in frames if f.image.shape[:2] == (120, 160))
    assert all(f.image.shape[:2] == (240, 320) for f in frames if f.capture_time_ns < t_change)

    assert (ring.info.width_px, ring.info.height_px) == (160, 120)
    ring_packets = list(ring._packets)
    assert ring_packets[0].is_keyframe and ring_packets[0].capture_time_ns == t_change  # the new keyframe kept
    assert len(ring_packets) == 30

    segs = list_segments(tmp_path / "rec", "cam")
    assert [s.start_ns for s in segs][-1] == t_change and len(segs) == 2
    for seg, size in zip(segs, ((320, 240), (160, 120))):
        info = ffprobe_summary(seg.path)
        assert (info["width"], info["height"], info["packets"]) == (*size, 30), info
        assert _frame_sizes(seg.path) == [f"{size[0]},{size[1]}"] * 30

    window = (t_change + 1 * S, t_change + int(1.5 * S))  # from the keyframe 1 s after the change
    for name, kw in (("ring", dict(ring=ring)), ("segments", dict(recordings=tmp_path / "rec", source_id="cam"))):
        out = cut_clip(tmp_path / f"{name}.mp4", *window, **kw)
        info = ffprobe_summary(out)
        assert (info["width"], info["height"], info["packets"]) == (160, 120, 6), (name, info)
        assert set(_frame_sizes(out)) == {"160,120"}, name
    # a clip from the change on starts at the change's own keyframe
    out = cut_clip(tmp_path / "at_change.mp4", t_change, t_change + S, ring=ring)
    assert ffprobe_summary(out)["packets"] == 11 and set(_frame_sizes(out)) == {"160,120"}


def test_mpeg4_input_is_transcoded_to_h264(tmp_path):
    src_file = make_clip(tmp_path / "m4.avi", seconds=2, size="320x240", codec="mpeg4")
    ring = PacketRing(30)
    with Source(SourceConfig("m4", str(src_file), pace="fast", start_time_ns=0), ring=ring) as src:
        assert len(list(src)) == 50
    out = cut_clip(tmp_path / "m4.mp4", 0, int(1.96 * S), ring=ring)
    assert "codec_name=h264" in ffprobe(out) and "nb_frames=50" in ffprobe(out)


_PLAY_PAGE = """<!doctype html><html><body><video id="v" src="%s" muted playsinline></video><script>
const v = document.getElementById('v'); document.title = 'loading';
v.addEventListener('error', () => { document.title = 'error ' + (v.error && v.error.code); });
v.addEventListener('timeupdate', () => { if (v.currentTime > 0.5)
  document.title = 'played ' + v.videoWidth + 'x' + v.videoHeight; });
v.play().catch(e => { document.title = 'playfail ' + e; });
</script></body></html>"""


def chromium_title(video: Path, tmp_path: Path) -> str:
    """Let headless Chromium play ``video`` from a local page; returns the page title the script sets."""
    import re
    import tempfile

    exe = shutil.which("chromium")
    if exe is None:
        missing("Debian's chromium is not installed (bash scripts/setup.sh)")
    page = video.parent / f"play_{video.stem}.html"
    page.write_text(_PLAY_PAGE % video.name)
    with tempfile.TemporaryDirectory(dir=tmp_path) as profile:
        out = subprocess.run(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
             "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", f"--user-data-dir={profile}",
             "--autoplay-policy=no-user-gesture-required", "--allow-file-access-from-files",
             "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=60)
    m = re.search(r"<title>(.*?)</title>", out.stdout)
    return m.group(1) if m else f"no title (exit {out.returncode})"


def test_clips_play_in_chromium(clip, tmp_path):
    ring = PacketRing(30)
    with Source(SourceConfig("c", str(clip), pace="fast", start_time_ns=0), ring=ring) as src:
        assert len(list(src)) == 100
    remuxed = cut_clip(tmp_path / "remuxed.mp4", S, 3 * S, ring=ring)
    m4 = make_clip(tmp_path / "src.avi", seconds=2, size="320x240", codec="mpeg4")
    ring2 = PacketRing(30)
    with Source(SourceConfig("m", str(m4), pace="fast", start_time_ns=0), ring=ring2) as src:
        assert len(list(src)) == 50
    transcoded = cut_clip(tmp_path / "transcoded.mp4", 0, 2 * S, ring=ring2)
    assert chromium_title(remuxed, tmp_path) == "played 640x360"
    assert chromium_title(transcoded, tmp_path) == "played 320x240"
    # the check can fail: MPEG-4 Part 2 in MP4 (what OpenCV's writer makes) does not play
    bad = tmp_path / "mp4v.mp4"
    subprocess.run([_ffmpeg(), "-v", "error", "-y", "-i", str(m4), "-c:v", "mpeg4", str(bad)], check=True)
    assert not chromium_title(bad, tmp_path).startswith("played")


def test_clip_store_addresses_clips_by_source_and_window(clip, tmp_path):
    from seawatch.streams.recording import ClipStore

    t0 = 1_800_000_000 * S
    ring = PacketRing(30)
    rec = SegmentRecorder(tmp_path / "rec", "cam-1", segment_s=2.0)
    with Source(SourceConfig("cam-1", str(clip), pace="fast", start_time_ns=t0), ring=ring, recorder=rec) as src:
        frames = list(src)
    store = ClipStore(tmp_path / "clips", tmp_path / "rec")
    p = store.get("cam-1", t0 + S, t0 + 2 * S)  # from the segments alone
    assert p == tmp_path / "clips" / "cam-1" / f"{t0 + S}_{t0 + 2 * S}.mp4"
    assert ffprobe_summary(p)["packets"] == 26
    mtime = p.stat().st_mtime_ns
    assert store.get("cam-1", t0 + S, t0 + 2 * S).stat().st_mtime_ns == mtime  # kept, not cut again
    store.add_ring("cam-1", ring)
    assert ffprobe_summary(store.get("cam-1", t0 + 3 * S, t0 + 4 * S))["packets"] == 25
    snap = store.save_snapshot(frames[10])
    assert snap.name == f"{frames[10].capture_time_ns}.jpg" and snap.stat().st_size > 1000
    with pytest.raises(InputError, match="source id"):
        store.get("../etc", t0, t0 + S)
    with pytest.raises(StreamError):
        store.get("other", t0, t0 + S)


def test_snapshot_jpeg(tmp_path):
    import cv2

    img = np.zeros((48, 64, 3), np.uint8)
    img[:, 32:] = (0, 0, 255)
    p = save_jpeg(img, tmp_path / "snap" / "a.jpg")
    back = cv2.imread(str(p))
    assert back.shape == (48, 64, 3) and back[24, 50, 2] > 200 and back[24, 10, 2] < 30
    with pytest.raises(InputError, match="uint8"):
        save_jpeg(np.zeros((4, 4), np.float32), tmp_path / "b.jpg")


def test_real_media_b_frames_clip_decodes(shared_media, tmp_path):
    video = shared_media / "C_hardhat" / "industrial_worker_helmet_clip.mp4"
    if not video.exists():
        missing(f"{video} is absent from the shared media")
    ring = PacketRing(60)
    with Source(SourceConfig("hh", str(video), pace="fast", start_time_ns=0), ring=ring) as src:
        frames = list(src)
        assert src.status().state is State.ENDED
    assert len(frames) == 840
    assert np.all(np.diff([f.capture_time_ns for f in frames]) > 0)
    out = cut_clip(tmp_path / "hh.mp4", 10 * S, 12 * S, ring=ring)
    assert mp4_top_boxes(out).index("moov") < mp4_top_boxes(out).index("mdat")
    err = subprocess.run([_ffmpeg(), "-v", "error", "-i", str(out), "-f", "null", "-"], capture_output=True, text=True)
    assert err.returncode == 0 and err.stderr.strip() == ""  # every frame decodes (B-frame references kept)
    assert "codec_name=h264" in ffprobe(out) and "profile=High" in ffprobe(out, "stream=codec_name,profile")
