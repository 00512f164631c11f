"""A camera whose recording fails is visible and alarmed, not only in the log (robustness audit s28).

Before, a recorder that could not start, write or finish its segments (the recordings folder removed or unwritable,
the disk full, a mount gone) said so once in the log and kept retrying: ``GET /api/sources``, health, the metrics
and the alarms all looked fine, and nobody knew until an incident reviewer found no clip for the night. Now the
recorder reports a status (``streams.recording.RecordingStatus``: recording / failing with the reason and since when
/ off, and when it recovered), the API, health, metrics and the sources table show it, and a failure that lasts
becomes a ``recording_failed`` incident (``service/source_watch.py``) that ends when segments are written again.

Here: the recorder's status through a folder lost and restored (real packets of a generated H.264 clip) and through
a full disk (a child process whose file-size limit drops to one byte: writes fail with EFBIG, as on a full disk);
the watch's rules on statuses; and the real service on a looped video file whose recordings folder is replaced by a
file (tests may run as root, whom chmod does not stop) and then restored.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import wait_until  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.source_watch import RECORDING_FAILED, SourceWatch  # noqa: E402
from seawatch.streams.recording import RECORDING_OFF, SegmentRecorder, list_segments, read_segment_packets  # noqa: E402
from test_service_serve import KEY, file_camera_service  # noqa: E402
from test_streams import make_clip  # noqa: E402

S = 1_000_000_000
T0 = 1_800_000_000 * S


@pytest.fixture(scope="module")
def packets(tmp_path_factory):
    """(StreamInfo, packets) of a 6 s 160x120 25 fps H.264 clip with a keyframe each second, captured from T0."""
    clip = make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=6, size="160x120")
    return read_segment_packets(clip, T0)


def _push(rec: SegmentRecorder, packets, from_s: float, to_s: float) -> None:
    for p in packets:
        if T0 + from_s * S <= p.capture_time_ns < T0 + to_s * S:
            rec.push(p)


# ---------------------------------------------------------------------------------------------- the recorder itself
def test_the_recorder_says_failing_with_a_short_reason_until_a_segment_is_written_again(tmp_path, packets):
    info, pkts = packets
    root = tmp_path / "recordings"
    rec = SegmentRecorder(root, "cam", segment_s=1.0, max_age_s=None, max_total_bytes=None)
    st = rec.status()
    assert (st.state, st.reason, st.since_ns, st.failures, st.recovered_ns) == ("recording", None, None, 0, None)
    rec.set_info(info)
    _push(rec, pkts, 0, 2)  # the segment of 0-1 s finished at the keyframe of 1 s
    st = rec.status()
    assert st.state == "recording" and st.segments_written == 1 and not st.failing

    folder = root / "cam"
    shutil.move(str(folder), str(tmp_path / "moved-away"))  # the folder goes (a mount lost), a file in its place
    folder.write_text("not a folder any more")
    t_lost = time.time_ns()
    _push(rec, pkts, 2, 3)  # 1-2 s cannot be finished, 2-3 s cannot be started
    st = rec.status()
    assert st.state == "failing" and st.failing and st.failures == 2, st
    assert st.reason.startswith("cannot start a segment: "), st.reason
    assert str(tmp_path) not in st.reason and "<recordings>" not in st.reason  # no path: the log has it
    assert t_lost <= st.since_ns <= st.last_failure_ns <= time.time_ns()
    since = st.since_ns
    _push(rec, pkts, 3, 4)  # still failing at the next keyframe: the spell goes on, counted
    st = rec.status()
    assert st.state == "failing" and st.since_ns == since and st.failures == 3 and st.last_failure_ns >= since

    folder.unlink()  # usable again: the recorder makes the folder at the next keyframe
    t_back = time.time_ns()
    _push(rec, pkts, 4, 5)
    assert rec.status().state == "failing"  # a segment opened, not written yet: no video is on disk so far
    _push(rec, pkts, 5, 6)  # ... the keyframe of 5 s finishes it
    st = rec.status()
    assert st.state == "recording" and st.reason is None and st.since_ns is None and st.failures == 0, st
    assert t_back <= st.recovered_ns <= time.time_ns() and st.segments_written == 2
    assert [s.start_ns for s in list_segments(root, "cam")] == [T0 + 4 * S]

    rec.close()  # the source stopped: off, its last recovery still said
    st = rec.status()
    assert st.state == "off" and st.recovered_ns is not None and st.as_dict()["state"] == "off"
    assert RECORDING_OFF.as_dict() == {"state": "off", "reason": None, "since_ns": None, "last_failure_ns": None,
                                       "failures": 0, "recovered_ns": None, "segments_written": 0}


CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from seawatch.streams.recording import SegmentRecorder, read_segment_packets

    clip, root = sys.argv[1], Path(sys.argv[2])
    info, pkts = read_segment_packets(clip, 0)
    rec = SegmentRecorder(root, "cam", segment_s=1.0, max_age_s=None, max_total_bytes=None)
    rec.set_info(info)
    def push(a, b):
        for p in pkts:
            if a * 10**9 <= p.capture_time_ns < b * 10**9:
                rec.push(p)
    out = []
    push(0, 2)
    out.append(rec.status().as_dict())
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))  # the disk is full from now
    push(2, 4)
    out.append(rec.status().as_dict())
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    push(4, 6)
    out.append(rec.status().as_dict())
    print(json.dumps(out))
""")


def test_a_full_disk_is_a_failing_recording_until_space_is_back(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=6, size="160x120")
    out = subprocess.run([sys.executable, "-c", CHILD, str(clip), str(tmp_path / "rec")], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    before, full, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before["state"] == "recording" and before["segments_written"] == 1, before
    # open succeeds on a full disk (a new file takes no space); the writes fail and are found at the segment's end
    assert full["state"] == "failing" and full["failures"] >= 1 and full["reason"], full
    assert str(tmp_path) not in full["reason"], full["reason"]
    assert after["state"] == "recording" and after["recovered_ns"] is not None and after["segments_written"] >= 2, after


# ------------------------------------------------------------------------------------------------------ the watch
def _watch(tmp_path, **alerts) -> SourceWatch:
    return SourceWatch(load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "sources": [{"id": "quay-1", "url": "rtsp://127.0.0.1:9/cam", "models": ["stub"]},
                    {"id": "gate", "url": "rtsp://127.0.0.1:9/gate", "models": ["stub"]}],
        "source_alerts": alerts}))


def _cam(sid="quay-1", state="online", up_s=0.0, rec="failing", since_s=10.0, last_s=None, failures=3,
         recovered_s=None, reason="cannot start a segment: File exists"):
    failing = rec == "failing"
    return {"source_id": sid, "state": state, "since_ns": T0 + int(up_s * S),
            "recording": {"state": rec, "reason": reason if failing else None,
                          "since_ns": T0 + int(since_s * S) if failing else None,
                          "last_failure_ns": T0 + int((since_s if last_s is None else last_s) * S) if failing else None,
                          "failures": failures if failing else 0,
                          "recovered_ns": None if recovered_s is None else T0 + int(recovered_s * S),
                          "segments_written": 5}}


def test_a_recording_failing_past_the_delay_is_an_incident_until_segments_are_written_again(tmp_path):
    w = _watch(tmp_path)  # the default delay: 30 s, severity high
    assert w.recording_after_ns == 30 * S
    assert w.check_recording([_cam()], T0 + 39 * S) == []  # 29 s: a hiccup raises nothing
    (start,) = w.check_recording([_cam(last_s=39)], T0 + 40 * S)
    assert (start.type, start.phase, start.severity, start.source_id) == (RECORDING_FAILED, "start", "high", "quay-1")
    assert start.start_ns == T0 + 10 * S and start.at_ns == T0 + 40 * S  # from the first failure
    assert start.attributes["reason"] == "cannot start a segment: File exists" and start.attributes["failures"] == 3
    assert start.attributes["failing_for_s"] == 30.0 and start.geo is None and "not surveyed" in start.geo_reason
    assert w.check_recording([_cam(last_s=45, failures=9, reason="cannot finish a segment: Read-only file system")],
                             T0 + 46 * S) == []  # one incident, kept up to date
    (end,) = w.check_recording([_cam(rec="recording", recovered_s=50)], T0 + 53 * S)
    assert (end.id, end.phase, end.seq) == (start.id, "end", 1)
    assert end.end_ns == T0 + 50 * S and end.attributes["end_reason"] == "segments written again"
    assert end.attributes["failures"] == 9 and "Read-only" in end.attributes["reason"]  # what it was at the end
    assert w.open_recordings == {} and w.check_recording([_cam(rec="recording")], T0 + 99 * S) == []


def test_no_recording_incident_for_recording_off_a_camera_down_or_a_failure_not_seen_since_it_came_back(tmp_path):
    w = _watch(tmp_path, recording_failed_after_s=5, recording_failed_severity="critical")
    assert w.check_recording([_cam(rec="off"), _cam("gate", rec="off")], T0 + 10**4 * S) == []  # disabled: nothing
    # the camera down: no picture, nothing to record (source_offline says so), however long the failure is
    assert w.check_recording([_cam(state="offline")], T0 + 100 * S) == []
    assert w.check_recording([_cam(state="failed")], T0 + 100 * S) == []
    # back online at 100 s: the failure (last tried at 10 s) is not raised until the recorder failed again since
    assert w.check_recording([_cam(up_s=100)], T0 + 101 * S) == []
    (ev,) = w.check_recording([_cam(up_s=100, last_s=101)], T0 + 102 * S)
    assert ev.severity == "critical" and ev.start_ns == T0 + 10 * S
    # the camera goes down while the incident is open: it stays open (nothing recorded meanwhile either)
    assert w.check_recording([_cam(state="offline", up_s=103, last_s=101)], T0 + 110 * S) == []
    # the source stops (recorder closed: off): ended
    (off,) = w.check_recording([_cam(state="stopped", rec="off")], T0 + 120 * S)
    assert off.id == ev.id and off.attributes["end_reason"] == "recording off" and off.end_ns == T0 + 120 * S
    (again,) = w.check_recording([_cam("gate", last_s=30)], T0 + 130 * S)
    (closed,) = w.close(T0 + 131 * S)
    assert closed.id == again.id and closed.attributes["end_reason"] == "service stopped"
    assert _watch(tmp_path, recording_failed_after_s=None).check_recording([_cam()], T0 + 10**6 * S) == []


# -------------------------------------------------------------------------------------------------- the service
def _metric(text: str, name: str, source: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'{name}{{source="{source}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait(what, fn, timeout_s=30.0):
    return wait_until(fn, timeout_s, what, step_s=0.25)


def test_a_camera_whose_recordings_folder_is_lost_shows_failing_alarms_and_recovers(tmp_path):
    storage = {"data_dir": str(tmp_path / "data"), "recording": {"segment_s": 2.0}}
    with file_camera_service(tmp_path, seconds=2.0, storage=storage,
                             source_alerts={"recording_failed_after_s": 2.0}) as svc:
        with TestClient(svc.app) as client:
            h = {"X-API-Key": KEY}

            def cam():
                (row,) = [s for s in client.get("/api/sources", headers=h).json() if s["source_id"] == "quay-1"]
                return row

            def incidents():
                return client.get("/api/events", params={"type": RECORDING_FAILED, "source": "quay-1"},
                                  headers=h).json()["events"]

            def gauge():
                text = client.get("/api/metrics", headers=h).text
                return _metric(text, "seawatch_camera_recording_failing", "quay-1")

            _wait("a first segment", lambda: cam()["recording"]["segments_written"] >= 1)
            rec = cam()["recording"]
            assert rec["state"] == "recording" and rec["reason"] is None, rec
            assert client.get("/api/health", headers=h).json()["status"] == "ok"
            assert gauge() == 0

            folder = svc.app.state.media_dir / "recordings" / "quay-1"
            shutil.move(str(folder), str(tmp_path / "moved-away"))  # the folder lost, a file in its place
            folder.write_text("not a folder any more")
            t_lost = time.time_ns()

            rec = _wait("recording failing", lambda: (r := cam()["recording"])["state"] == "failing" and r)
            assert rec["reason"] and str(tmp_path) not in rec["reason"] and rec["since_ns"] >= t_lost, rec
            assert cam()["state"] == "online"  # still read and analysed
            health = client.get("/api/health", headers=h).json()
            assert health["status"] == "degraded", health
            (bad,) = health["recording"]
            assert bad["source_id"] == "quay-1" and bad["reason"] and bad["since_ns"] == rec["since_ns"], bad
            assert client.get("/api/health").json()["status"] == "degraded"  # the anonymous probe sees it too
            assert gauge() == 1

            (ev,) = _wait("a recording_failed incident", incidents)
            assert ev["phase"] == "start" and ev["severity"] == "high" and ev["end_ns"] is None, ev
            assert ev["start_ns"] == rec["since_ns"] and ev["at_ns"] - ev["start_ns"] >= 2 * S
            assert ev["attributes"]["reason"] and str(tmp_path) not in ev["attributes"]["reason"]

            folder.unlink()  # usable again: the recorder makes the folder at the next keyframe
            t_back = time.time_ns()
            rec = _wait("recording again", lambda: (r := cam()["recording"])["state"] == "recording" and r)
            assert t_back <= rec["recovered_ns"] <= time.time_ns(), rec
            assert any(s.start_ns >= t_back - S for s in list_segments(folder.parent, "quay-1"))
            (done,) = _wait("the incident's end", lambda: [e for e in incidents() if e["end_ns"] is not None])
            assert done["id"] == ev["id"] and done["attributes"]["end_reason"] == "segments written again", done
            assert done["end_ns"] == rec["recovered_ns"]
            assert client.get("/api/health", headers=h).json()["status"] == "ok"
            assert gauge() == 0
