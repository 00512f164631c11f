"""Clips whose window spans a change of recording format (a camera reconfigured to another resolution, a day/night
profile with another size): the clip shows the whole window, re-encoded at one size, and says so in its coverage
record; a window of one format is still copied packet for packet.

Recordings are made here with Debian's ffmpeg (solid colours per run, so each picture tells which run it came from)
and recorded through the real reader, recorder and ring.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest

from seawatch.streams.packets import PacketRing
from seawatch.streams.recording import (
    ClipCoverage,
    SegmentRecorder,
    cut_clip,
    ffprobe_summary,
    list_segments,
    mp4_top_boxes,
    read_clip_coverage,
    read_segment_packets,
)
from seawatch.streams.source import Source, SourceConfig
from test_streams import S, _ffmpeg, chromium_title

T0 = 1_800_000_000 * S
FPS = 10
RUN_S = 3
RGB = {"red": "0xD02020", "green": "0x20D020", "blue": "0x2020D0"}


def _part(path: Path, colour: str, size: str, offset_s: float) -> Path:
    """RUN_S seconds of one solid colour, H.264 baseline, 1 s GOP, as MPEG-TS starting at ``offset_s``."""
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"color=c={RGB[colour]}:size={size}:rate={FPS}", "-t", str(RUN_S), "-c:v", "libx264",
                    "-preset", "ultrafast", "-profile:v", "baseline", "-g", str(FPS), "-bf", "0", "-pix_fmt", "yuv420p",
                    "-muxdelay", "0", "-muxpreload", "0", "-output_ts_offset", str(offset_s), str(path)],
                   check=True, timeout=60)
    return path


def _record(tmp: Path, runs: list[tuple[str, str]]) -> Path:
    """One camera whose stream changes size in-band between runs (same connection, new SPS): the recorder starts a
    new segment at each change, as it does live. Returns the recordings folder (source ``cam``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    both = tmp / "stream.ts"
    both.write_bytes(b"".join(_part(tmp / f"p{i}.ts", c, size, RUN_S * i).read_bytes()
                              for i, (c, size) in enumerate(runs)))
    rec = SegmentRecorder(tmp / "rec", "cam", segment_s=60.0, max_age_s=None, max_total_bytes=None)
    with Source(SourceConfig("cam", str(both), pace="fast", start_time_ns=T0), recorder=rec) as src:
        for _ in src:
            pass
    return tmp / "rec"


def _colour(px: np.ndarray) -> str:
    r, g, b = (int(v) for v in px)
    if max(r, g, b) < 40:
        return "black"
    for name, (x, y, z) in {"red": (r, g, b), "green": (g, r, b), "blue": (b, r, g)}.items():
        if x > 150 and y < 90 and z < 90:
            return name
    return f"other{(r, g, b)}"


def _decoded(path: Path) -> list[tuple[float, np.ndarray]]:
    """(seconds from the clip's first picture, RGB image) of every picture, in presentation order."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.pts, f.time_base, f.to_ndarray(format="rgb24")) for f in c.decode(s)]
    t0 = frames[0][0]
    return [(float((pts - t0) * tb), img) for pts, tb, img in frames]


def _packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


@pytest.fixture(scope="module")
def size_change(tmp_path_factory) -> Path:
    """red 320x240 for 0..2.9 s, then blue 160x120 for 3.0..5.9 s."""
    return _record(tmp_path_factory.mktemp("size"), [("red", "320x240"), ("blue", "160x120")])


# --------------------------------------------------------------------------- a window across the change: all of it
@pytest.mark.parametrize("runs, canvas, pad_x", [
    ([("red", "320x240"), ("blue", "160x120")], (320, 240), 0),   # same aspect: the larger size, the smaller scaled up
    ([("red", "320x240"), ("blue", "480x270")], (480, 270), 60),  # 4:3 then 16:9: 4:3 at 360x270, pillarboxed
])
def test_a_window_across_a_size_change_is_reencoded_whole(runs, canvas, pad_x, tmp_path, caplog):
    rec = _record(tmp_path, runs)
    segs = list_segments(rec, "cam")
    assert len(segs) == 2 and segs[1].start_ns == T0 + RUN_S * S
    caplog.set_level(logging.INFO, logger="seawatch.streams.recording")
    out = cut_clip(tmp_path / "clip.mp4", T0 + S, T0 + 5 * S, recordings=rec, source_id="cam")

    summary = ffprobe_summary(out)
    assert summary["codec"] == "h264" and (summary["width"], summary["height"]) == canvas
    assert mp4_top_boxes(out).index("moov") < mp4_top_boxes(out).index("mdat")  # faststart, as every clip
    frames = _decoded(out)
    assert len(frames) == 41  # 1.0 .. 2.9 s (old run) and 3.0 .. 5.0 s (new run), 10 fps
    assert {img.shape[:2] for _, img in frames} == {canvas[::-1]}  # one size throughout
    assert frames[-1][0] == pytest.approx(4.0, abs=1e-3)  # capture-time spacing kept across the change
    times = [t for t, _ in frames]
    assert all(b - a == pytest.approx(0.1, abs=1e-3) for a, b in zip(times, times[1:]))
    h, w = canvas[1], canvas[0]
    for t, img in frames:
        want = "red" if t < 2.0 - 1e-3 else "blue"  # the change is 2 s into the clip (at 3 s)
        assert _colour(img[h // 2, w // 2]) == want, t
        edge = "black" if want == "red" and pad_x else want
        assert _colour(img[h // 2, 4]) == edge and _colour(img[h // 2, w - 5]) == edge, t
        if want == "red" and pad_x:
            assert _colour(img[h // 2, pad_x + 4]) == "red" and _colour(img[h // 2, w - pad_x - 5]) == "red"

    cov = read_clip_coverage(out)
    assert not cov.partial and cov.spans == ((T0 + S, T0 + 5 * S),)
    assert cov.reencoded and cov.reencoded_px == canvas
    sizes = [tuple(int(v) for v in size.split("x")) for _, size in runs]
    assert [(c, w_, h_) for _, c, w_, h_ in cov.formats] == [("h264", *sizes[0]), ("h264", *sizes[1])]
    assert [t for t, *_ in cov.formats] == [T0 + S, T0 + RUN_S * S]  # where each format starts in the clip
    assert f"->{canvas[0]}x{canvas[1]}" in cov.comment() and "complete" in cov.comment()
    assert any("re-encoded" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_the_evidence_manifest_says_a_clip_was_reencoded(size_change, tmp_path):
    import json
    import zipfile

    from seawatch.service.export import evidence_zip

    across = cut_clip(tmp_path / "across.mp4", T0 + S, T0 + 5 * S, recordings=size_change, source_id="cam")
    inside = cut_clip(tmp_path / "inside.mp4", T0 + 4 * S, T0 + 5 * S, recordings=size_change, source_id="cam")
    got = {}
    for name, clip in (("across", across), ("inside", inside)):
        zpath = tmp_path / f"{name}.zip"
        evidence_zip(zpath, {"id": "ev1"}, [], snapshot=None, clip=clip, missing={}, exported_by="user:r", version="t")
        got[name] = json.loads(zipfile.ZipFile(zpath).read("manifest.json"))["clip_coverage"]
    assert got["across"]["known"] and got["across"]["complete"] and got["across"]["reencoded"] is True
    assert got["across"]["reencoded_size_px"] == [320, 240]
    assert [(f["codec"], f["width_px"], f["height_px"]) for f in got["across"]["formats"]] == [
        ("h264", 320, 240), ("h264", 160, 120)]
    assert got["across"]["formats"][1]["from"].endswith("03Z")
    assert got["inside"]["known"] and got["inside"]["reencoded"] is False and "formats" not in got["inside"]


def test_a_reencoded_clip_plays_in_chromium(size_change, tmp_path):
    out = cut_clip(tmp_path / "across.mp4", T0 + S, T0 + 5 * S, recordings=size_change, source_id="cam")
    assert read_clip_coverage(out).reencoded
    assert chromium_title(out, tmp_path) == "played 320x240"


# ------------------------------------------------------------------------------ one format: copied, as before
@pytest.mark.parametrize("window_s, seg", [((0.5, 2.5), 0), ((3.5, 5.5), 1)])
def test_a_window_of_one_format_is_still_copied_packet_for_packet(size_change, window_s, seg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="seawatch.streams.recording")
    a, b = (T0 + round(x * S) for x in window_s)
    out = cut_clip(tmp_path / "one.mp4", a, b, recordings=size_change, source_id="cam")
    segment = list_segments(size_change, "cam")[seg]
    _, seg_packets = read_segment_packets(segment.path, segment.start_ns)
    first = max(i for i, p in enumerate(seg_packets) if p.is_keyframe and p.capture_time_ns <= a)
    want = _packets(segment.path)[first:first + 26]  # keyframe at 0.0 / 3.0 s .. 2.5 / 5.5 s
    got = _packets(out)
    assert len(got) == len(want) == 26
    assert got[1:] == want[1:]  # the very bytes of the recording (the keyframe may carry its SPS/PPS in front)
    assert got[0].endswith(want[0])
    cov = read_clip_coverage(out)
    assert not cov.reencoded and cov.formats == () and "reencoded" not in cov.comment()
    assert not any("re-encoded" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------- the ring after the recorded segments
def test_ring_of_the_new_format_after_segments_of_the_old_one(tmp_path):
    """The live case: the segments on disk are of the old size, the segment of the new size is still being written
    and the new size is only in the pre-event ring."""
    old = _part(tmp_path / "old.ts", "red", "320x240", 0)
    new = _part(tmp_path / "new.ts", "blue", "160x120", 0)
    rec = SegmentRecorder(tmp_path / "rec", "cam", segment_s=60.0, max_age_s=None, max_total_bytes=None)
    with Source(SourceConfig("cam", str(old), pace="fast", start_time_ns=T0), recorder=rec) as src:
        for _ in src:
            pass
    ring = PacketRing(60)
    with Source(SourceConfig("cam", str(new), pace="fast", start_time_ns=T0 + RUN_S * S), ring=ring) as src:
        for _ in src:
            pass
    assert (ring.info.width_px, ring.oldest_ns) == (160, T0 + RUN_S * S)
    out = cut_clip(tmp_path / "clip.mp4", T0 + S, T0 + 5 * S, recordings=tmp_path / "rec", source_id="cam", ring=ring)
    frames = _decoded(out)
    assert len(frames) == 41 and {img.shape[:2] for _, img in frames} == {(240, 320)}
    assert [_colour(img[120, 160]) for _, img in frames] == ["red"] * 20 + ["blue"] * 21
    assert frames[-1][0] == pytest.approx(4.0, abs=1e-3)
    cov = read_clip_coverage(out)
    assert not cov.partial and cov.reencoded and [f[2:] for f in cov.formats] == [(320, 240), (160, 120)]
    # from the ring alone (same format throughout): copied
    only_ring = cut_clip(tmp_path / "ring.mp4", T0 + 4 * S, T0 + 5 * S, ring=ring)
    assert not read_clip_coverage(only_ring).reencoded and ffprobe_summary(only_ring)["width"] == 160


# --------------------------------------------------------------------------------------------------- bad input
def test_a_corrupt_segment_in_the_middle_loses_only_itself(tmp_path, caplog):
    rec = _record(tmp_path, [("red", "320x240"), ("green", "160x120"), ("blue", "320x240")])
    segs = list_segments(rec, "cam")
    assert len(segs) == 3
    window = (T0 + S, T0 + 8 * S)

    # cut short inside its last fragment (a disk error, a crash): what it still holds is shown, the rest around it too
    data = segs[1].path.read_bytes()
    last_mdat = data.rindex(b"mdat") - 4
    segs[1].path.write_bytes(data[: last_mdat + 20])
    out = cut_clip(tmp_path / "truncated.mp4", *window, recordings=rec, source_id="cam")
    colours = [_colour(img[120, 160]) for _, img in _decoded(out)]
    assert colours[:20] == ["red"] * 20 and colours[-21:] == ["blue"] * 21
    assert set(colours) == {"red", "green", "blue"} and colours.count("green") >= 20  # its first two GOPs at least
    assert read_clip_coverage(out).reencoded

    # unreadable as a whole: skipped with a warning, the runs before and after it (one format) are copied, and the
    # coverage record shows the hole
    segs[1].path.write_bytes(b"\0" * 4096)
    caplog.set_level(logging.WARNING, logger="seawatch.streams.recording")
    out = cut_clip(tmp_path / "garbage.mp4", *window, recordings=rec, source_id="cam")
    colours = [_colour(img[120, 160]) for _, img in _decoded(out)]
    assert colours == ["red"] * 20 + ["blue"] * 21
    cov = read_clip_coverage(out)
    assert cov.partial and not cov.reencoded and len(cov.spans) == 2
    assert cov.spans[0][0] == T0 + S and cov.spans[1] == (T0 + 2 * RUN_S * S, T0 + 8 * S)
    assert any(segs[1].path.name in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


# ------------------------------------------------------------------------------------------- coverage record
def test_coverage_records_of_old_clips_still_parse():
    old = f"seawatch window_ns={T0}-{T0 + 4 * S} covered_ns={T0}-{T0 + 2 * S},{T0 + 3 * S}-{T0 + 4 * S} partial"
    cov = ClipCoverage.parse(old)
    assert cov.spans == ((T0, T0 + 2 * S), (T0 + 3 * S, T0 + 4 * S)) and cov.partial
    assert not cov.reencoded and cov.formats == () and cov.reencoded_px is None
    assert cov.comment() == old  # a clip that was not re-encoded is recorded exactly as before

    new = ClipCoverage(T0, T0 + 4 * S, ((T0, T0 + 4 * S),),
                       formats=((T0, "h264", 1920, 1080), (T0 + S, "hevc", 1280, 720)), reencoded_px=(1920, 1080))
    text = new.comment()
    assert f"reencoded=h264:1920x1080@{T0},hevc:1280x720@{T0 + S}->1920x1080" in text and text.endswith(" complete")
    assert ClipCoverage.parse(text) == new
    assert ClipCoverage.parse(text.replace("->1920x1080", "->huge")) is None  # damaged: not trusted
