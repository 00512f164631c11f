"""Robustness audit s27: the live video muxer (``service.live_video.CameraMuxer``) fed odd packets through a real
packet ring: real libx264 pictures with empty packets between them. FFmpeg writes no sample for some empty packets,
and the muxer kept one keyframe flag and capture time per packet muxed, so its flags went out of step with the
fragments: P-frames were flagged as keyframes (a new viewer started on one, a resync went on at one, the clock
message named another picture's time) and keyframes as not (with an empty packet after each picture, no new viewer
ever started: after 10 s it was told the camera sends no picture). Empty packets are now skipped.

Each fragment's flag is checked against what it holds (an IDR slice, NAL type 5, in its ``mdat``)."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import numpy as np
import pytest

from seawatch.service.live_video import CameraMuxer, Viewer
from seawatch.streams.packets import EncodedPacket, PacketRing, StreamInfo, h264_param_sets

W, H, N, GOP = 160, 120, 24, 6
T0 = 1_790_000_000_000_000_000
TB = Fraction(1, 25)


def _encode() -> list:
    import av

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base, ctx.framerate, ctx.gop_size = TB, Fraction(25), GOP
    ctx.options = {"bframes": "0", "tune": "zerolatency", "preset": "ultrafast"}
    out = []
    for i in range(N):
        f = av.VideoFrame.from_ndarray(np.full((H, W, 3), (i * 37) % 255, np.uint8), "bgr24")
        f.pts = i
        out += list(ctx.encode(f))
    return out + list(ctx.encode(None))


def _nal_types(fragment: bytes) -> list[int]:
    """NAL unit types in a fragment's ``mdat`` (length-prefixed, as MP4 holds them)."""
    body = fragment[fragment.find(b"mdat") + 4:]
    pos, types = 0, []
    while pos + 4 <= len(body):
        n = int.from_bytes(body[pos:pos + 4], "big")
        if n <= 0 or pos + 4 + n > len(body):
            break
        types.append(body[pos + 4] & 0x1F)
        pos += 4 + n
    return types


def _mux(empties) -> tuple[list, list, Viewer, list[int]]:
    """The fragments published for the encoded pictures with empty packets after the pictures ``empties`` says
    (index -> keyframe flag of the empty packet); also the GOP kept for new viewers at the end, a viewer that joined
    first, and the capture times of the pictures in order."""
    coded = _encode()
    assert [bool(p.is_keyframe) for p in coded].count(True) == N // GOP
    info = StreamInfo("h264", W, H, Fraction(25), b"", h264_param_sets(bytes(coded[0])))
    ring = PacketRing(30)
    muxer = CameraMuxer("cam", ring)
    published = []
    orig = muxer._publish
    muxer._publish = lambda f: (published.append(f), orig(f))
    viewer = Viewer(asyncio.new_event_loop())
    muxer.start()
    muxer.join(viewer)
    captures = []
    try:
        ring.set_info(info)
        for i, p in enumerate(coded):
            t = T0 + i * 40_000_000
            captures.append(t)
            ring.push(EncodedPacket(bytes(p), p.pts, p.dts, TB, bool(p.is_keyframe), t))
            if i in empties:
                ring.push(EncodedPacket(b"", None if empties[i] else p.pts, None, TB, empties[i], t + 1))
        deadline = time.monotonic() + 10
        while len(published) < N - 1 and time.monotonic() < deadline:  # the last picture waits for a next one
            time.sleep(0.02)
        time.sleep(0.2)
        with muxer._lock:
            gop = list(muxer._gop)  # what a viewer joining now would start with (cleared when the muxer stops)
    finally:
        muxer.stop(2)
    return published, gop, viewer, captures


@pytest.mark.parametrize("empties", [
    {7: False, 12: True},  # one empty packet mid-GOP, one flagged as a keyframe
    {i: False for i in range(N)},  # an empty packet after every picture
], ids=["a-few", "after-each"])
def test_empty_packets_leave_every_fragments_keyframe_flag_and_clock_true(empties):
    published, gop, viewer, captures = _mux(empties)
    assert len(published) == N - 1, len(published)
    wrong = [(i, f.keyframe, _nal_types(f.data)) for i, f in enumerate(published) if f.keyframe != (5 in _nal_types(f.data))]
    assert not wrong, f"fragments whose keyframe flag is not what they hold: {wrong}"
    # a keyframe's clock names its own picture's capture time (each picture is one fragment, in order)
    for i, f in enumerate(published):
        if f.keyframe:
            assert f.clock is not None and f.clock["capture_ns"] == captures[i]
    # the viewer that joined first started at the first keyframe and got every picture after it
    items = viewer.pending()
    assert [k for k, _ in items[:2]] == ["text", "init"]
    frags = [p for k, p in items if k == "bytes"]
    assert len(frags) == N - 1 and 5 in _nal_types(frags[0])
    # a viewer joining now starts at the newest GOP, which begins with an IDR picture
    assert gop and gop[0].keyframe and 5 in _nal_types(gop[0].data)
