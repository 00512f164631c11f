"""A clip (and a recorded picture) of video that is only in the segment being written.

The recorder writes a segment of ``segment_s`` (60 s by default) and closes it at the first keyframe after that; the
pre-event ring holds ``ring_s`` (60 s by default) or less when its byte cap is reached (a camera of high bit rate).
Video older than the ring but still in the open segment (``<start>.part.mp4``) was invisible to the cutter: in the
demo, the clip of a yard-camera lane blockage asked for about 59 s after it ended showed only the 2.55 s after the
ring's first keyframe (``X-Clip-Covered-Ns`` 14:05:44.15 - 14:05:46.70 of a window 14:05:35.05 - 14:05:46.70, the
incident itself, 14:05:40.05 - 14:05:41.70, not in it), and that short clip was kept as the event's clip for good. ``/recordings`` listed
the same seconds as recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from seawatch.errors import StreamError
from seawatch.streams.packets import PacketRing
from seawatch.streams.recording import (
    ClipStore,
    SegmentRecorder,
    cut_clip,
    ffprobe_summary,
    list_segments,
    part_files,
    picture_at,
    read_clip_coverage,
    read_segment_packets,
)
from test_streams import S, make_clip

T0 = 1_800_000_000 * S


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    """4 s, 320x240, 25 fps, H.264 baseline, 1 s GOP (100 frames)."""
    return make_clip(tmp_path_factory.mktemp("media") / "small.mp4", size="320x240")


def _live(clip: Path, root: Path, ring_s: float):
    """The recorder and the ring of a live camera that has sent ``clip`` (0 .. 3.96 s after T0): the segment is still
    being written (a 60 s one), the ring holds only its last ``ring_s``. Returns (recorder, ring)."""
    info, packets = read_segment_packets(clip, T0)
    rec = SegmentRecorder(root, "cam", segment_s=60.0, max_age_s=None, max_total_bytes=None)
    ring = PacketRing(max_age_s=ring_s)
    rec.set_info(info)
    ring.set_info(info)
    for p in packets:
        rec.push(p)
        ring.push(p)
    return rec, ring


def test_clip_of_video_older_than_the_ring_comes_from_the_segment_being_written(small_clip, tmp_path):
    root = tmp_path / "rec"
    rec, ring = _live(small_clip, root, ring_s=1.5)
    try:
        assert list_segments(root, "cam") == [] and len(part_files(root, "cam")) == 1  # nothing finished yet
        assert ring.oldest_ns == T0 + 3 * S  # the ring: the last GOP only
        # all of it in the open segment: before, "no recorded video" (the ring starts after the window)
        clip = cut_clip(tmp_path / "a.mp4", T0 + S // 2, T0 + 2 * S + S // 2, recordings=root, source_id="cam",
                        ring=ring)
        cov = read_clip_coverage(clip)
        assert not cov.partial and cov.first_ns == T0 and cov.spans == ((T0 + S // 2, T0 + 2 * S + 12 * S // 25),)
        assert ffprobe_summary(clip)["packets"] == 63  # from the keyframe at 0 s to 2.48 s
        # across the open segment and the ring: one clip, no gap where the two meet
        store = ClipStore(tmp_path / "clips", root)
        store.add_ring("cam", ring)
        clip = store.get("cam", T0 + S // 2, T0 + 3 * S + S // 2)
        cov = read_clip_coverage(clip)
        assert not cov.partial and cov.first_ns == T0, cov.comment()
        assert cov.spans == ((T0 + S // 2, T0 + 3 * S + 12 * S // 25),)  # to its last picture
        assert ffprobe_summary(clip)["packets"] == 88  # 0 .. 3.48 s, every picture once
        # the recorded picture of a time only the open segment holds (a report from the Recordings view)
        at_ns, image = picture_at(T0 + S + 7 * S // 25, recordings=root, source_id="cam", ring=ring)
        assert at_ns == T0 + S + 7 * S // 25 and image.shape == (240, 320, 3)
    finally:
        rec.close()


def test_a_window_before_the_open_segment_and_the_ring_is_still_no_video(small_clip, tmp_path):
    root = tmp_path / "rec"
    rec, ring = _live(small_clip, root, ring_s=1.5)
    try:
        with pytest.raises(StreamError, match="no recorded video"):
            cut_clip(tmp_path / "x.mp4", T0 - 10 * S, T0 - 5 * S, recordings=root, source_id="cam", ring=ring)
    finally:
        rec.close()
