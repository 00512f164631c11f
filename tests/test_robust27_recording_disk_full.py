"""Robustness audit s27: the media disk fills up while a camera records. Every keyframe then opened a new segment
whose first write failed, and the empty file was still renamed into a finished segment (``<t>_<t>.mp4``, one byte):
one a second, each a point of "recorded" video, so the recordings listed the whole time the disk was full as
recorded (the points closer than the frame gap join into one span) and clips were cut from files with nothing in them.
A segment into which not one packet was written is now removed, and the camera keeps being analysed throughout.

A real camera reader on a looped H.264 file with the segment recorder, in a child process whose file-size limit
(``RLIMIT_FSIZE``) is dropped to one byte for a while: writes then fail with EFBIG as on a full disk, and Python
ignores SIGXFSZ, so nothing else changes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from test_streams import make_clip

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from seawatch.streams.recording import SegmentRecorder, list_segments, recorded_video
    from seawatch.streams.source import Source, SourceConfig

    clip, root = sys.argv[1], Path(sys.argv[2])
    rec = SegmentRecorder(root, "cam", segment_s=0.5, max_age_s=None, max_total_bytes=None)
    src = Source(SourceConfig("cam", clip, pace="realtime", loop=True), recorder=rec).start()
    marks, frames = {}, {"before": 0, "full": 0, "after": 0}
    t0 = time.monotonic()
    phase = "before"
    while time.monotonic() - t0 < 8.0:
        el = time.monotonic() - t0
        if phase == "before" and el > 2.0:
            resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))  # the disk is full from now
            phase, marks["full_ns"] = "full", time.time_ns()
        elif phase == "full" and el > 5.0:
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            phase, marks["back_ns"] = "after", time.time_ns()
        f = src.read(0.2)
        frames[phase] += f is not None
    state = src.status().state.value
    src.stop(5)
    segs = [{"start_ns": s.start_ns, "end_ns": s.end_ns, "bytes": s.size_bytes} for s in list_segments(root, "cam")]
    spans = recorded_video(root, "cam").spans
    print(json.dumps({**marks, "frames": frames, "state": state, "segments": segs, "spans": spans}))
""")


def test_segments_opened_on_a_full_disk_leave_no_file_claiming_recorded_video(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    out = subprocess.run([sys.executable, "-c", CHILD, str(clip), str(tmp_path / "rec")], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    full_ns, back_ns = r["full_ns"], r["back_ns"]
    # the camera went on being analysed while its recording failed
    assert r["frames"]["full"] >= 40 and r["frames"]["after"] >= 20 and r["state"] == "online", r["frames"]
    # no file that holds nothing poses as a segment
    empty = [s for s in r["segments"] if s["bytes"] < 1000]
    assert not empty, f"segments with nothing in them: {empty}"
    # recorded before the disk filled and again once space was back ...
    assert any(s["end_ns"] < full_ns for s in r["segments"]), r["segments"]
    assert any(s["start_ns"] > back_ns for s in r["segments"]), r["segments"]
    # ... and the recordings do not claim the time in between (a segment may have been cut short at the start)
    mid_lo, mid_hi = full_ns + 1_000_000_000, back_ns - 500_000_000
    covering = [sp for sp in r["spans"] if sp[0] < mid_hi and sp[1] > mid_lo]
    assert not covering, f"spans claiming video recorded while the disk was full: {covering}"
