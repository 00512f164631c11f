"""Robustness audit s27: a camera's recordings folder becomes unusable while it records (a failing disk remounted
read-only, a mount that went away, the folder deleted or replaced). Finishing the segment then failed at its rename,
which left the closed container in the recorder; the camera reader reconnected, and its next packet was muxed into
that closed container: the whole service process died of a segmentation fault in FFmpeg. Before that, the failure
took the camera offline (an OSError out of the recorder ended its reader's session) although only its recording was
broken. Now the recorder drops a container it could not finish, a segment that cannot be started leaves the camera
being read and analysed, unrecorded, and recording starts again at a keyframe once the folder is usable.

A real camera reader on a looped H.264 file with the segment recorder, in a child process (a segfault must not take
pytest with it); the folder is replaced by a file for a few seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from test_streams import make_clip

CHILD = textwrap.dedent("""
    import json, shutil, sys, time
    from pathlib import Path
    from seawatch.streams.recording import SegmentRecorder, list_segments
    from seawatch.streams.source import Source, SourceConfig

    clip, root = sys.argv[1], Path(sys.argv[2])
    folder = root / "cam"
    rec = SegmentRecorder(root, "cam", segment_s=0.5, max_age_s=None, max_total_bytes=None)
    src = Source(SourceConfig("cam", clip, pace="realtime", loop=True), recorder=rec).start()
    frames, marks, phase = {"before": 0, "lost": 0, "back": 0}, {}, "before"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 8.0:
        el = time.monotonic() - t0
        if phase == "before" and el > 2.0:
            shutil.move(str(folder), str(root.parent / "moved-away"))
            folder.write_text("not a folder any more")
            phase = "lost"
        elif phase == "lost" and el > 4.5:
            folder.unlink()  # usable again (the recorder makes the folder)
            phase, marks["back_ns"] = "back", time.time_ns()
        f = src.read(0.2)
        frames[phase] += f is not None
    st = src.status()
    src.stop(5)
    print(json.dumps({**marks, "frames": frames, "state": st.state.value, "reconnects": st.reconnects,
                      "error": st.last_error, "segments": [s.start_ns for s in list_segments(root, "cam")]}))
""")


def test_losing_the_recordings_folder_neither_crashes_nor_stops_the_camera(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    out = subprocess.run([sys.executable, "-c", CHILD, str(clip), str(tmp_path / "rec")], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, f"the process ended with {out.returncode}: {out.stderr[-3000:]}"
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # read and analysed throughout, never taken offline by its recording
    assert r["state"] == "online" and r["reconnects"] == 0, r
    assert r["frames"]["lost"] >= 40 and r["frames"]["back"] >= 40, r["frames"]
    # recording again once the folder could be made again
    assert any(start > r["back_ns"] for start in r["segments"]), r["segments"]
    assert "cannot start a segment" in out.stderr
