"""Robustness audit s27: an H.265 (HEVC) camera's recordings, and a camera switching codec (H.264 -> H.265 ->
H.264). The segments themselves were fine, but whatever was decoded from them (clips, which are re-encoded for every
codec but H.264, the picture at a moment for a report, a clip across a codec change) handed the decoder the segment's
``hvcC`` / ``avcC`` extradata along with Annex B packets: the HEVC decoder then refused every packet, so an H.265
camera's clip from its recordings failed ("no picture of the hevc clip could be decoded") and a clip across a switch
lost the H.265 part. The recordings are made with Debian's ffmpeg and recorded through the real reader and recorder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from seawatch.streams.recording import SegmentRecorder, cut_clip, list_segments, picture_at
from seawatch.streams.source import Source, SourceConfig
from test_clip_format_change import RGB, _colour, _decoded
from test_streams import S, _ffmpeg

T0 = 1_800_000_000 * S
FPS = 10
RUN_S = 3
ENCODERS = {"h264": ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS), "-bf", "0"],
            "hevc": ["-c:v", "libx265", "-x265-params", f"keyint={FPS}:bframes=0:log-level=none"]}


def _run(path: Path, colour: str, codec: str) -> Path:
    """RUN_S seconds of one solid colour in ``codec`` (1 s GOP, no B-frames), as MP4."""
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"color=c={RGB[colour]}:size=320x240:rate={FPS}", "-t", str(RUN_S), *ENCODERS[codec],
                    "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)
    return path


def _centre(rgb: np.ndarray) -> str:
    """The colour name of a picture's centre (RGB)."""
    h, w = rgb.shape[:2]
    return _colour(rgb[h // 2, w // 2])


def _record(tmp: Path, runs: list[tuple[str, str]]) -> Path:
    """A camera recorded run after run (each a connection of its own, as after the camera was reconfigured), the
    runs back to back in capture time. Returns the recordings folder (source ``cam``)."""
    rec = SegmentRecorder(tmp / "rec", "cam", segment_s=60.0, max_age_s=None, max_total_bytes=None)
    for i, (colour, codec) in enumerate(runs):
        clip = _run(tmp / f"run{i}.mp4", colour, codec)
        with Source(SourceConfig("cam", str(clip), pace="fast", start_time_ns=T0 + i * RUN_S * S), recorder=rec) as src:
            for _ in src:
                pass
    rec.close()
    return tmp / "rec"


def test_an_h265_cameras_clip_and_picture_come_from_its_recordings(tmp_path):
    rec = _record(tmp_path, [("green", "hevc")])
    assert [s.path.suffix for s in list_segments(rec, "cam")] == [".mp4"]
    out = cut_clip(tmp_path / "clip.mp4", T0 + S // 2, T0 + 5 * S // 2, recordings=rec, source_id="cam")
    frames = _decoded(out)
    assert len(frames) >= 2 * FPS - 1, len(frames)
    assert {_centre(px) for _, px in frames} == {"green"}
    t, image = picture_at(T0 + 2 * S, recordings=rec, source_id="cam")
    assert abs(t - (T0 + 2 * S)) <= S // FPS and image.shape == (240, 320, 3) and _centre(image[..., ::-1]) == "green"


def test_a_clip_across_a_codec_switch_shows_every_run(tmp_path):
    rec = _record(tmp_path, [("red", "h264"), ("green", "hevc"), ("blue", "h264")])
    assert len(list_segments(rec, "cam")) == 3
    out = cut_clip(tmp_path / "clip.mp4", T0 + 2 * S, T0 + 7 * S, recordings=rec, source_id="cam")
    colours = [_centre(px) for _, px in _decoded(out)]
    counts = {c: colours.count(c) for c in ("red", "green", "blue")}
    # 1 s of red, the whole 3 s of green, 1 s of blue (a picture either way at the edges)
    assert counts["green"] >= RUN_S * FPS - 1 and counts["red"] >= FPS - 1 and counts["blue"] >= FPS - 1, counts
    assert colours == sorted(colours, key=["red", "green", "blue"].index), "runs out of order"


@pytest.mark.parametrize("at_s", [0.5, 4.5])
def test_the_picture_at_a_moment_of_an_h265_run_between_h264_runs(tmp_path, at_s):
    rec = _record(tmp_path, [("red", "h264"), ("green", "hevc")])
    want = "red" if at_s < RUN_S else "green"
    _, image = picture_at(T0 + int(at_s * S), recordings=rec, source_id="cam")
    assert _centre(np.asarray(image)[..., ::-1]) == want  # picture_at gives BGR
