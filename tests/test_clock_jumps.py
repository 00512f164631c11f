"""Stream timestamps that jump backwards (a splice in a file, a live sender that steps its clock back): frame times
keep the real spacing, ring packet times keep increasing, clips around frames after the jump cover what was asked,
and B-frame reordering (pts stepping back in decode order) is not taken for a jump.

Test media are made with Debian's ffmpeg into tmp: two MPEG-TS parts concatenated, the second one's timestamps
2 s behind where the first one ends (the audit's reproducer, s17/streams finding 6).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import missing
from seawatch.streams.clock import StreamClock
from seawatch.streams.packets import PacketRing
from seawatch.streams.recording import cut_clip
from seawatch.streams.source import Source, SourceConfig, State

S = 1_000_000_000
T0 = 1_800_000_000 * S
FRAME_NS = 100_000_000  # 10 fps


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        missing("Debian's ffmpeg is not installed (bash scripts/setup.sh)")
    return exe


def _part(path: Path, lavfi: str, offset_s: float, bframes: int) -> Path:
    profile = ["-profile:v", "baseline", "-bf", "0"] if bframes == 0 else ["-profile:v", "main", "-bf", str(bframes)]
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", lavfi, "-t", "3",
                    "-c:v", "libx264", "-preset", "ultrafast", *profile, "-g", "10", "-pix_fmt", "yuv420p",
                    "-output_ts_offset", str(offset_s), str(path)], check=True, timeout=60)
    return path


def spliced_ts(d: Path, bframes: int = 0) -> Path:
    """6 s at 10 fps: 3 s of testsrc2, then 3 s of solid red whose pts start 2 s before the first part ends."""
    a = _part(d / f"a{bframes}.ts", "testsrc2=size=320x240:rate=10", 0, bframes)
    b = _part(d / f"b{bframes}.ts", "color=c=red:size=320x240:rate=10", 1, bframes)
    out = d / f"spliced{bframes}.ts"
    out.write_bytes(a.read_bytes() + b.read_bytes())
    return out


def is_red(image: np.ndarray) -> bool:
    b, g, r = (int(v) for v in image[120, 160])
    return r > 200 and g < 60 and b < 60


@pytest.fixture(scope="module")
def spliced(tmp_path_factory) -> Path:
    return spliced_ts(tmp_path_factory.mktemp("jumps"))


def ring_packets(ring: PacketRing) -> list:
    return ring.window(0, 2**62)  # all of it, in the order pushed


def read_all(path: Path, ring: PacketRing | None = None) -> list:
    with Source(SourceConfig("cam", str(path), pace="fast", start_time_ns=T0), ring=ring) as src:
        frames = list(src)
        assert src.status().state is State.ENDED
    return frames


# ----------------------------------------------------------------------------------------------- (a) frame spacing
def test_file_frames_keep_real_spacing_after_backward_jump(spliced):
    frames = read_all(spliced)
    assert len(frames) == 60
    red = [is_red(f.image) for f in frames]
    assert red == [False] * 30 + [True] * 30  # the splice is where the picture changes
    gaps = np.diff([f.capture_time_ns for f in frames])
    assert np.all(gaps == FRAME_NS)  # not 1 ns apart after the jump; one frame across it


@pytest.mark.parametrize("fixed", [False, True], ids=["live", "file"])
def test_clock_backward_jump_of_2s_keeps_spacing(fixed):
    # packets in decode order (no B-frames: dts == pts), arriving in real time; pts jump back 2 s after 3 s
    clock = StreamClock(fixed_anchor_ns=T0 if fixed else None, frame_s=0.1)
    pts = [i * 0.1 for i in range(30)] + [1.0 + i * 0.1 for i in range(30)]
    frames, packets = [], []
    for i, p in enumerate(pts):
        recv = T0 + i * FRAME_NS + 20_000_000
        clock.observe(p, recv, p)
        packets.append(clock.packet_ns(p, recv))
        frames.append(clock.capture_ns(p, recv))
    assert clock.reanchors == 1
    assert np.allclose(np.diff(frames), FRAME_NS, atol=1e6)  # live: within the arrival-time estimate
    assert np.all(np.diff(packets) > 0)
    if fixed:
        assert frames == [T0 + i * FRAME_NS for i in range(60)]


def test_clock_reanchor_on_arrival_alone_moves_frames_and_packets_together():
    # live: pts run on, but packets arrive 5 s late after a stall (jump_s re-anchors): one mapping for both
    clock = StreamClock(frame_s=0.1)
    same = []
    for i in range(60):
        p = i * 0.1
        recv = T0 + i * FRAME_NS + (5 * S if i >= 30 else 0)
        clock.observe(p, recv, p)
        pk = clock.packet_ns(p, recv)
        same.append(clock.capture_ns(p, recv) == pk)
    assert clock.reanchors == 1
    assert all(same)


def test_clock_small_backward_step_is_a_discontinuity_for_frames_only_callers():
    # a caller that never feeds packets: the frames' own pts show the step
    clock = StreamClock(fixed_anchor_ns=0, frame_s=0.1)
    times = [clock.capture_ns(p) for p in [0.0, 0.1, 0.2, 0.3, 0.4, -0.3, -0.2]]
    assert times == [0, 100_000_000, 200_000_000, 300_000_000, 400_000_000, 500_000_000, 600_000_000]
    assert clock.reanchors == 1


def test_looped_spliced_file_stays_evenly_spaced(spliced):
    # the loop's own offset and the splice's both apply, pass after pass
    src = Source(SourceConfig("l", str(spliced), loop=True, pace="fast", queue_size=1000, start_time_ns=T0)).start()
    frames = []
    deadline = time.monotonic() + 20
    while len(frames) < 150 and time.monotonic() < deadline:  # 2.5 passes, two loop points and three splices
        f = src.read(1.0)
        if f is not None:
            frames.append(f)
    assert src.stop(3)
    assert len(frames) == 150
    assert np.all(np.diff([f.capture_time_ns for f in frames]) == FRAME_NS)


# ----------------------------------------------------------------------------------------------- (b) ring order
def test_ring_packet_times_strictly_increase_across_jump(spliced):
    ring = PacketRing(60)
    frames = read_all(spliced, ring)
    times = [p.capture_time_ns for p in ring_packets(ring)]
    assert len(times) == 60
    assert np.all(np.diff(times) > 0)
    # packets carry the same times as their frames (one packet per frame, no B-frames)
    assert times == [f.capture_time_ns for f in frames]


# ----------------------------------------------------------------------------------------------- (c) clips
def test_clip_around_frame_after_jump_covers_requested_window(spliced, tmp_path):
    import av

    ring = PacketRing(60)
    frames = read_all(spliced, ring)
    event = [f for f in frames if is_red(f.image)][10]  # 1 s after the splice
    t = event.capture_time_ns
    out = cut_clip(tmp_path / "event.mp4", t - S, t + S, ring=ring)
    with av.open(str(out)) as c:
        pics = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
        s = c.streams.video[0]
        span_s = float((s.duration or 0) * s.time_base)
    assert 20 <= len(pics) <= 22  # 2 s at 10 fps, not the 4.9 s the squeezed times gave
    assert 1.9 <= span_s <= 2.2
    assert all(is_red(p) for p in pics)  # centred on the event: all after the splice


# ----------------------------------------------------------------------------------------------- (d) B-frames
def test_clock_b_frame_reordering_does_not_reanchor():
    # decode order of an IBBP... GOP with pyramid B-frames: pts step back up to 3 frames; dts never does
    pattern = [0, 4, 2, 1, 3, 8, 6, 5, 7]
    pts = []
    for g in range(20):
        for p in pattern[1:] if g else pattern:
            pts.append((g * 8 + p) * 0.04)
    dts = [(i - 2) * 0.04 for i in range(len(pts))]
    for fixed in (False, True):
        clock = StreamClock(fixed_anchor_ns=T0 if fixed else None, frame_s=0.04)
        for p, d in zip(pts, dts):
            clock.observe(p, T0 + int(d * S) + 300_000_000, d)
        assert clock.reanchors == 0
        frames = [clock.capture_ns(p, T0 + 10 * S) for p in sorted(pts)]
        assert np.allclose(np.diff(frames), 40_000_000, atol=1)


def test_b_frame_file_does_not_reanchor_and_its_splice_does(tmp_path):
    plain = _part(tmp_path / "plain.ts", "testsrc2=size=320x240:rate=10", 0, bframes=3)
    for path, n in ((plain, 30), (spliced_ts(tmp_path, bframes=3), 60)):
        ring = PacketRing(60)
        frames = read_all(path, ring)
        assert len(frames) == n
        # a B-frame mistaken for a splice would shift the times after it: the spacing stays one frame throughout
        assert np.all(np.diff([f.capture_time_ns for f in frames]) == FRAME_NS)
        # ring packets are in decode order: their times, sorted, are the frames' times
        assert sorted(p.capture_time_ns for p in ring_packets(ring)) == [f.capture_time_ns for f in frames]
