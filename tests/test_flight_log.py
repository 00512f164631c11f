"""Flight logs: every drone's telemetry kept on disk beside its video (a live pose buffer holds 5 minutes), read back
as the drone's track for the map and as poses to geotag a picture of an older recording; an event reported from
yesterday's patrol video is placed where the drone's camera looked."""

from __future__ import annotations

import io
import json
import time
import warnings
import zipfile

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.drone.flight_log import HOUR_NS, FlightLogWriter, flight_track, read_flight_log, timeline_from_log  # noqa: E402
from seawatch.drone.pose import AttitudeSample, GimbalSample, PoseTimeline, PositionSample  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.runner import Service  # noqa: E402
from conftest import free_udp_port  # noqa: E402

S = 1_000_000_000
KEY = "flight-log-key-0123456789abcdef"
H0 = 1_800_000_000 * S // HOUR_NS * HOUR_NS  # an hour boundary


def _fly(timeline: PoseTimeline, t0_ns: int, seconds: float, hz: int = 10, gimbal: bool = True) -> None:
    """A drone flying north-east at 5 m/s, 40 m up, yawing slowly; the gimbal looks 45 deg down."""
    for i in range(int(seconds * hz)):
        t = t0_ns + i * S // hz
        s = i / hz
        timeline.add_position(PositionSample(t, 54.0 + s * 3.2e-5, 7.0 + s * 5.5e-5, 40.0, (3.5, 3.5, 0.0), 3, 1.5))
        timeline.add_attitude(AttitudeSample(t, 1.0, -2.0, (45.0 + s) % 360))
        if gimbal and i % 5 == 0:
            timeline.add_gimbal(GimbalSample(t, 0.0, -45.0, 0.0, "body"))


def test_the_log_keeps_every_sample_once_across_polls_hours_and_restarts(tmp_path):
    live = PoseTimeline("d1", history_s=600)
    root = tmp_path / "flightlog"
    writer = FlightLogWriter(root, {"d1": live}, max_age_s=2 * 3600)
    t0 = H0 - 30 * S  # the flight crosses an hour boundary
    for k in range(6):  # polled every 10 s of flight
        _fly(live, t0 + k * 10 * S, 10)
        writer.poll(now_ns=t0 + (k + 1) * 10 * S)
    assert writer.poll(now_ns=t0 + 61 * S) == 0  # nothing new: nothing written twice
    files = sorted(p.name for p in (root / "d1").iterdir())
    assert files == [f"{H0 - HOUR_NS}.jsonl", f"{H0}.jsonl"]
    got = read_flight_log(root, "d1", t0, t0 + 60 * S)
    assert len(got["position"]) == len(got["attitude"]) == 600 and len(got["gimbal"]) == 120
    times = [r["time_ns"] for r in got["position"]]
    assert times == sorted(set(times)) and times[0] == t0 and times[-1] == t0 + 599 * S // 10
    assert got["position"][0]["fix_type"] == 3 and got["gimbal"][0]["frame"] == "body"
    assert writer.written == 1320

    # a restarted service: a new writer, new samples appended, the old ones still there once
    live2 = PoseTimeline("d1", history_s=600)
    writer2 = FlightLogWriter(root, {"d1": live2}, max_age_s=2 * 3600)
    _fly(live2, t0 + 100 * S, 5, gimbal=False)  # no gimbal telemetry this time
    writer2.poll(now_ns=t0 + 106 * S)
    assert len(read_flight_log(root, "d1", t0, t0 + 200 * S)["position"]) == 650

    # a line cut by a crash is skipped, the rest read
    with open(root / "d1" / f"{H0}.jsonl", "a") as f:
        f.write('{"kind":"position","time_ns":')
    assert len(read_flight_log(root, "d1", t0, t0 + 200 * S)["position"]) == 650

    track = flight_track(root, "d1", t0, t0 + 60 * S, max_points=50)
    assert len(track) == 50 and track[0][0] == t0 and track[-1][0] == t0 + 599 * S // 10
    assert track[0][1:] == [54.0, 7.0, 40.0]

    # two minutes after an hour ends its file is gzipped; hours that ended more than max_age_s ago go
    before = read_flight_log(root, "d1", H0, H0 + HOUR_NS)
    size = (root / "d1" / f"{H0}.jsonl").stat().st_size
    writer.poll(now_ns=H0 + 2 * HOUR_NS + 10 * S)
    assert sorted(p.name for p in (root / "d1").iterdir()) == [f"{H0}.jsonl.gz"]
    assert (root / "d1" / f"{H0}.jsonl.gz").stat().st_size < size / 5
    assert read_flight_log(root, "d1", H0, H0 + HOUR_NS) == before and len(before["position"]) == 350


def test_a_fast_stream_is_thinned_to_about_10_a_second(tmp_path):
    live = PoseTimeline("d1", history_s=600)
    for i in range(500):  # 10 s of 50 Hz attitude, 5 Hz position
        live.add_attitude(AttitudeSample(H0 + i * S // 50, 0.0, 0.0, float(i % 360)))
        if i % 10 == 0:
            live.add_position(PositionSample(H0 + i * S // 50, 54.0, 7.0, 30.0))
    FlightLogWriter(tmp_path, {"d1": live}).poll(now_ns=H0 + 11 * S)
    got = read_flight_log(tmp_path, "d1", H0, H0 + 10 * S)
    steps = {b["time_ns"] - a["time_ns"] for a, b in zip(got["attitude"], got["attitude"][1:])}
    assert len(got["attitude"]) == 100 and steps == {100_000_000}
    assert len(got["position"]) == 50


def test_poses_from_the_log_match_the_live_buffer(tmp_path):
    live = PoseTimeline("d1", latency_s=0.12, history_s=600)
    _fly(live, H0, 30)
    writer = FlightLogWriter(tmp_path, {"d1": live})
    writer.poll(now_ns=H0 + 31 * S)
    logged = timeline_from_log(tmp_path, "d1", H0 + 5 * S, H0 + 25 * S, like=live)
    assert logged is not None and logged.latency_ns == live.latency_ns and logged.max_age_s == live.max_age_s
    for t in (H0 + 7 * S + 33_000_000, H0 + 15 * S, H0 + 24 * S + 950_000_000):
        a, b = live.pose_at(t), logged.pose_at(t)
        assert not a.stale and not b.stale
        for name in ("lat_deg", "lon_deg", "alt_m", "yaw_deg", "gimbal_pitch_deg"):
            assert getattr(a.pose, name) == pytest.approx(getattr(b.pose, name), abs=1e-9), name
    assert logged.pose_at(H0 + 40 * S).stale  # not flown then
    assert timeline_from_log(tmp_path, "d1", H0 + 100 * S, H0 + 200 * S, like=live) is None
    assert timeline_from_log(tmp_path, "nobody", H0, H0 + 10 * S, like=live) is None


def _service_settings(data_dir, route=None):
    cam = {"width_px": 160, "height_px": 120, "hfov_deg": 60}
    drones = [{"id": "patrol:1", "connection": f"udp:127.0.0.1:{free_udp_port()}", "camera": cam}]
    data = {"storage": {"data_dir": str(data_dir)},
            "auth": {"api_keys": [{"name": "crew", "role": "reviewer", "key_sha256": hash_api_key(KEY)}]},
            "drones": drones,
            # the drone's camera: nothing streams it here; its recording is put in place by the test
            "sources": [{"id": "dcam", "url": "rtsp://127.0.0.1:9/none", "drone": "patrol:1"}]}
    if route is not None:
        drones[0]["routes"] = {"r": route}
        data["fleet"] = [{"drone": "patrol:1", "sim": {"speed": 10.0}, "patrol": "r", "link_timeout_s": 5}]
    return load_config(data=data)


def test_the_service_logs_a_flying_drone_and_serves_its_track(tmp_path):
    route = {"type": "points", "points_lonlat": [[7.0, 54.0], [7.0006, 54.0], [7.0006, 54.0004]], "alt_m": 8}
    svc = Service(_service_settings(tmp_path / "data", route)).start()
    try:
        with TestClient(svc.app) as client:
            h = {"X-API-Key": KEY}
            deadline = time.monotonic() + 40
            while True:
                r = client.get("/api/drones/patrol:1/track", headers=h)
                assert r.status_code == 200, r.text
                if len(r.json()["points"]) >= 20:
                    break
                assert time.monotonic() < deadline, r.json()
                time.sleep(0.5)
            points = r.json()["points"]
            assert all(abs(lat - 54.0) < 0.01 and abs(lon - 7.0) < 0.01 for _, lat, lon, _ in points)
            assert [p[0] for p in points] == sorted(p[0] for p in points)
            assert abs(points[-1][0] - time.time_ns()) < 5 * S
            folder = svc.settings.storage.resolved_media_dir() / "flightlog" / "patrol%3A1"
            assert any(folder.glob("*.jsonl"))
            assert client.get("/api/drones/nope/track", headers=h).status_code == 404
            assert client.get("/api/drones/patrol:1/track").status_code == 401
            for bad in ({"start_ns": 10 * S, "end_ns": 5 * S}, {"start_ns": 0, "end_ns": 2 * 86400 * S},
                        {"max_points": 1}, {"start_ns": "yesterday"}):
                assert client.get("/api/drones/patrol:1/track", params=bad, headers=h).status_code == 422, bad
    finally:
        svc.stop()


def test_a_report_from_old_drone_video_is_placed_through_the_flight_log(tmp_path):
    """A picture recorded an hour before start-up (beyond the live pose buffer): the event reported from it is
    located with the logged pose, where the camera's centre ray meets the water."""
    from test_recordings_api import _metres, _record, ramp_clip

    cfg = _service_settings(tmp_path / "data")
    media = cfg.storage.resolved_media_dir()
    t0 = time.time_ns() - 3600 * S
    flown = PoseTimeline("patrol:1", history_s=600)
    for i in range(100):  # hovering 30 m up, heading 90 deg (east), camera 45 deg down
        t = t0 - 2 * S + i * S // 10
        flown.add_position(PositionSample(t, 54.0, 7.0, 30.0, (0.0, 0.0, 0.0), 3, 1.0))
        flown.add_attitude(AttitudeSample(t, 0.0, 0.0, 90.0))
        flown.add_gimbal(GimbalSample(t, 0.0, -45.0, 0.0, "body"))
    FlightLogWriter(media / "flightlog", {"patrol:1": flown}).poll()
    _record(ramp_clip(tmp_path / "ramp.mp4"), media / "recordings", "dcam", t0, segment_s=2.0)
    svc = Service(cfg).start()
    try:
        with TestClient(svc.app) as client:
            h = {"X-API-Key": KEY}
            assert svc.pipeline.locator_for("dcam", t0 + S).stale  # the live buffer has nothing of it
            r = client.post("/api/events", json={"source": "dcam", "start_ns": t0, "end_ns": t0 + 3 * S,
                                                 "at_ns": t0 + S, "point_px": [80, 60], "type": "vessel_in_zone",
                                                 "note": "small boat under the drone"}, headers=h)
            assert r.status_code == 201, r.text
            ev = r.json()
            # its evidence has the drone's samples of the clip window, from the log too
            r = client.get(f"/api/events/{ev['id']}/evidence.zip", headers=h)
            assert r.status_code == 200, r.text
            with zipfile.ZipFile(io.BytesIO(r.content)) as z:
                tel = json.loads(z.read("telemetry.json"))
                assert "clip.mp4" in z.namelist()
    finally:
        svc.stop()
    assert ev["geo"] is not None, ev["geo_reason"]
    assert ev["attributes"]["geo_reference"] == "drone_pose" and ev["attributes"]["geo_pose"]["alt_m"] == 30.0
    dist, bearing = _metres(54.0, 7.0, ev["geo"]["lat_deg"], ev["geo"]["lon_deg"])
    assert abs(dist - 30.0) < 1.5 and abs(bearing - 90.0) < 2.0, (dist, bearing)  # 30 m up, 45 deg down: 30 m east
    assert ev["type"] == "vessel_in_zone" and 0 < ev["geo"]["semi_major_m"] < 30
    assert tel["samples_from"] == "flight_log" and tel["geotag_pose"]["alt_m"] == 30.0
    assert [p["time_ns"] for p in tel["samples"]["position"]] == [t0 + i * S // 10 for i in range(31)]
