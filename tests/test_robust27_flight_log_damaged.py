"""Robustness audit s27: a drone's compressed flight-log hour damaged on disk (a disk error, a copy cut and patched).
A damaged deflate stream raises ``zlib.error``, which is not an ``OSError``, so it went through ``read_flight_log``:
``GET /api/drones/{id}/track`` answered 500 for any window touching that hour, and a report from that drone's
recording, and an evidence export, failed with it. Now the damaged hour is skipped with a warning, as an unreadable
file already was, and the other hours are served."""

from __future__ import annotations

import time
import warnings

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.drone.flight_log import HOUR_NS, FlightLogWriter, read_flight_log, timeline_from_log  # noqa: E402
from seawatch.drone.pose import PoseTimeline  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from test_flight_log import KEY, S, _fly, _service_settings  # noqa: E402


def _log_two_hours(root, drone_id: str, now_ns: int) -> tuple[int, int]:
    """Flight log of ``drone_id`` under ``root``: 60 s flown in the previous hour (compressed) and 60 s in this one;
    the previous hour's deflate stream is then damaged. Returns the two hours' start."""
    this_hour = now_ns // HOUR_NS * HOUR_NS
    last_hour = this_hour - HOUR_NS
    live = PoseTimeline(drone_id, history_s=7200)
    writer = FlightLogWriter(root, {drone_id: live})
    _fly(live, last_hour + 600 * S, 60)
    _fly(live, this_hour + 10 * S, 60)
    writer.poll(now_ns=this_hour + 71 * S)
    assert writer.compress(now_ns=this_hour + 10 * 60 * S)  # the previous hour is gzipped
    gz = next(root.rglob(f"{last_hour}.jsonl.gz"))
    data = bytearray(gz.read_bytes())
    start = 10 if not data[3] & 0x08 else data.index(0, 10) + 1  # after the header (and the file name it holds)
    data[start] = 0xFF  # the first deflate block's header: a reserved block type
    gz.write_bytes(bytes(data))
    return last_hour, this_hour


def test_a_damaged_hour_is_skipped_and_the_track_of_the_others_served(tmp_path, caplog):
    now = time.time_ns()
    app = create_app(_service_settings(tmp_path / "data"))
    with TestClient(app) as client:
        last_hour, this_hour = _log_two_hours(app.state.media_dir / "flightlog", "patrol:1", now)
        r = client.get("/api/drones/patrol:1/track", headers={"X-API-Key": KEY},
                       params={"start_ns": last_hour, "end_ns": this_hour + 100 * S})
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    assert len(points) == 600 and all(p[0] >= this_hour for p in points)  # this hour's 60 s at 10 Hz
    assert any("unreadable" in m and ".jsonl.gz" in m for m in caplog.messages)


def test_poses_for_a_report_come_from_the_readable_hours(tmp_path):
    root = tmp_path / "flightlog"
    last_hour, this_hour = _log_two_hours(root, "d1", time.time_ns())
    got = read_flight_log(root, "d1", last_hour, this_hour + HOUR_NS)
    assert len(got["position"]) == 600 and got["position"][0]["time_ns"] == this_hour + 10 * S
    like = PoseTimeline("d1")
    assert timeline_from_log(root, "d1", last_hour + 610 * S, last_hour + 620 * S, like=like) is None  # damaged
    tl = timeline_from_log(root, "d1", this_hour + 20 * S, this_hour + 30 * S, like=like)
    assert tl is not None and not tl.pose_at(this_hour + 25 * S).stale
