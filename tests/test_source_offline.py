"""Camera-down and drone-link-lost incidents (``source_offline``, ``drone_link_lost``; ``service/source_watch.py``):
the watch's rules on statuses; a real RTSP camera that is not there at start, raises the incident, then comes up and
ends it; a flying simulated drone whose radio drops, through the whole service (store, API)."""

from __future__ import annotations

import time
import warnings
from types import SimpleNamespace

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import free_port  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.source_watch import SourceWatch  # noqa: E402
from seawatch.streams.source import State  # noqa: E402
from test_service_serve import FireEverywhere  # noqa: E402
from test_streams_rtsp import RtspServer, server_clip  # noqa: E402,F401

S = 1_000_000_000
KEY = "offline-test-key-0123456789"
T0 = 1_800_000_000 * S
QUAY = {"lat_deg": 53.5461, "lon_deg": 9.9661, "alt_m": 18.0, "pan_deg": 200.0, "tilt_deg": -10.0}


def _settings(tmp_path, url="rtsp://127.0.0.1:9/cam", **alerts):
    return load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "test", "role": "admin", "key_sha256": hash_api_key(KEY)}]},
        "sources": [{"id": "quay-1", "url": url, "models": ["stub"], "analysis_fps": 2,
                     "calibration": {"camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 60}, "surveyed": QUAY}},
                    {"id": "gate", "url": "rtsp://127.0.0.1:9/gate", "models": ["stub"]}],
        "source_alerts": alerts,
    })


def _st(state, since_s, down_s=None, attempts=0, err=None):
    return SimpleNamespace(state=state, since_ns=T0 + int(since_s * S),
                           down_since_ns=None if down_s is None else T0 + int(down_s * S), attempts=attempts,
                           last_error=err)


def test_a_camera_down_past_the_delay_is_an_incident_from_when_it_went_down_to_when_it_is_back(tmp_path):
    w = SourceWatch(_settings(tmp_path, offline_after_s=60))
    down = _st(State.OFFLINE, 10, down_s=10, attempts=4, err="source quay-1: cannot open rtsp://***@cam: refused")
    assert w.check({"quay-1": down}, T0 + 69 * S) == []  # 59 s: a reconnect or a reboot raises nothing
    (start,) = w.check({"quay-1": down}, T0 + 70 * S)
    assert (start.type, start.phase, start.severity, start.source_id) == ("source_offline", "start", "high", "quay-1")
    assert start.start_ns == T0 + 10 * S and start.at_ns == T0 + 70 * S  # the picture was lost at 10 s, not 70 s
    assert start.attributes["attempts"] == 4 and "refused" in start.attributes["last_error"]
    assert start.geo is not None and (start.geo.lat_deg, start.geo.lon_deg) == (QUAY["lat_deg"], QUAY["lon_deg"])
    assert w.check({"quay-1": _st(State.OFFLINE, 10, down_s=10, attempts=9)}, T0 + 80 * S) == []  # one incident
    (end,) = w.check({"quay-1": _st(State.ONLINE, 95)}, T0 + 96 * S)
    assert (end.id, end.phase, end.seq) == (start.id, "end", 1)
    assert end.end_ns == T0 + 95 * S and end.attributes["end_reason"] == "back online"
    assert end.attributes["duration_s"] == 85.0 and end.attributes["attempts"] == 9  # the count before it came back
    assert w.open == {} and w.check({"quay-1": _st(State.ONLINE, 95)}, T0 + 200 * S) == []


def test_failed_sources_stopped_sources_uncalibrated_cameras_and_shutdown(tmp_path):
    w = SourceWatch(_settings(tmp_path, offline_after_s=5, severity="critical"))
    # a reader that failed for good has no down_since: down since its state changed
    (a,) = w.check({"gate": _st(State.FAILED, 0, err="no video stream")}, T0 + 5 * S)
    assert a.severity == "critical" and a.start_ns == T0 and a.geo is None and "not surveyed" in a.geo_reason
    assert w.check({"quay-1": _st(State.CONNECTING, 0)}, T0 + 60 * S) == []  # still on its first connect
    (b,) = w.check({"quay-1": _st(State.OFFLINE, 1, down_s=1)}, T0 + 7 * S)
    (ended,) = w.check({"gate": _st(State.ENDED, 8)}, T0 + 9 * S)
    assert ended.id == a.id and ended.attributes["end_reason"] == "source ended" and ended.end_ns == T0 + 9 * S
    (closed,) = w.close(T0 + 10 * S)
    assert closed.id == b.id and closed.attributes["end_reason"] == "service stopped" and w.open == {}
    off = SourceWatch(_settings(tmp_path, offline_after_s=None))
    assert off.enabled and off.check({"gate": _st(State.FAILED, 0)}, T0 + 10**6 * S) == []  # the drone side is on
    assert not SourceWatch(_settings(tmp_path, offline_after_s=None, drone_link_lost_after_s=None)).enabled


@pytest.mark.slow
def test_an_rtsp_camera_missing_at_start_raises_the_incident_and_ends_it_when_it_comes_up(tmp_path, server_clip):
    port = free_port()
    cfg = _settings(tmp_path, url=f"rtsp://127.0.0.1:{port}/cam1", offline_after_s=1.5)
    from seawatch.service.runner import Service

    svc = Service(cfg, detectors={"stub": FireEverywhere()}).start()
    srv = RtspServer(server_clip)
    srv.port = port
    h = {"X-API-Key": KEY}
    try:
        with TestClient(svc.app) as client:
            def offline(**extra):
                return client.get("/api/events", params={"type": "source_offline", "source": "quay-1", **extra},
                                  headers=h).json()["events"]

            deadline = time.monotonic() + 15
            while not offline() and time.monotonic() < deadline:
                time.sleep(0.2)
            (ev,) = offline()
            assert ev["phase"] == "start" and ev["severity"] == "high" and ev["end_ns"] is None
            assert ev["at_ns"] - ev["start_ns"] >= 1.5 * S  # raised after the delay, dated from the loss
            assert ev["geo"]["lat_deg"] == QUAY["lat_deg"] and "cannot open" in ev["attributes"]["last_error"]
            assert ev["clip_url"] is None and ev["snapshot_url"] is None
            t_up = time.time_ns()
            srv.start()  # the camera comes up
            deadline = time.monotonic() + 20
            while offline()[0]["end_ns"] is None and time.monotonic() < deadline:
                time.sleep(0.2)
            (done,) = offline()
            assert done["id"] == ev["id"] and done["phase"] == "end", done
            assert done["attributes"]["end_reason"] == "back online" and t_up <= done["end_ns"] <= time.time_ns()
            assert svc.readers["quay-1"].status().state is State.ONLINE
            # the other camera (nothing on port 9) is down too: its own incident, without a place
            gate = client.get("/api/events", params={"type": "source_offline", "source": "gate"}, headers=h).json()
            assert gate["events"] and gate["events"][0]["geo"] is None
    finally:
        svc.stop()
        srv.kill()
    # the gate's incident ended with the service (stored), none is left open
    from seawatch.service.store import EventQuery, EventStore

    store = EventStore.open(cfg.storage.resolved_database_url())
    try:
        rows = store.search(EventQuery(types=("source_offline",))).events
        assert {e.source_id for e in rows} == {"quay-1", "gate"} and all(e.end_ns is not None for e in rows)
        assert next(e for e in rows if e.source_id == "gate").attributes["end_reason"] == "service stopped"
    finally:
        store.close()


def _drone(state, armed=True, age_s=0.0, lat=52.84, lon=5.70):
    return {"drone_id": "patrol-1", "kind": "drone", "state": state, "armed": armed, "last_message_age_s": age_s,
            "lat_deg": lat, "lon_deg": lon, "alt_rel_m": 42.0, "battery_pct": 61, "mode": "AUTO", "patrol": "box",
            "patrol_state": "flying", "heading_deg": 90.0, "last_error": "no HEARTBEAT for 2.0 s"}


def test_a_flying_drone_whose_link_is_lost_is_an_incident_where_it_was_last_seen(tmp_path):
    w = SourceWatch(_settings(tmp_path, drone_link_lost_after_s=10))
    assert w.check_drones([_drone("lost", age_s=9.0)], T0) == []  # a short drop: the link often comes back
    assert w.check_drones([_drone("lost", armed=False, age_s=600.0)], T0) == []  # on the ground, switched off
    (ev,) = w.check_drones([_drone("lost", age_s=12.5)], T0)
    assert (ev.type, ev.phase, ev.severity, ev.source_id) == ("drone_link_lost", "start", "critical", "patrol-1")
    assert ev.start_ns == T0 - int(12.5 * S)  # from its last message
    assert (ev.geo.lat_deg, ev.geo.lon_deg) == (52.84, 5.70)
    assert ev.attributes["alt_rel_m"] == 42.0 and ev.attributes["battery_pct"] == 61 and ev.attributes["mode"] == "AUTO"
    assert w.check_drones([_drone("lost", age_s=30.0)], T0 + 18 * S) == []
    (end,) = w.check_drones([_drone("connected")], T0 + 20 * S)
    assert end.id == ev.id and end.attributes["end_reason"] == "link back" and end.end_ns == T0 + 20 * S
    (again,) = w.check_drones([_drone("lost", age_s=11.0, lat=None, lon=None)], T0 + 60 * S)
    assert again.id != ev.id and again.geo is None and "never reported" in again.geo_reason
    (closed,) = w.close(T0 + 70 * S)
    assert closed.id == again.id and closed.attributes["end_reason"] == "service stopped"
    assert SourceWatch(_settings(tmp_path, drone_link_lost_after_s=None)).check_drones([_drone("lost", age_s=99)], T0) == []


def test_a_drone_camera_down_is_placed_where_its_drone_last_was(tmp_path):
    """A drone's camera (by ``drone: ID``, an inline drone, or a drone's ``video_source``) has no surveyed position:
    its source_offline incident is placed where its drone last reported itself, and names the drone. Before, an
    inline or ``drone: ID`` camera was reported as "not surveyed", and a video_source one had no place at all."""
    from seawatch.vision.events import GeoPosition

    drone = {"id": "patrol-1", "connection": "udp:127.0.0.1:9", "camera": {"width_px": 640, "height_px": 360,
                                                                            "hfov_deg": 70}}
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "drones": [{**drone, "video_source": "patrol-cam"}],
        "sources": [{"id": "patrol-cam", "url": "udp://127.0.0.1:5600", "models": ["stub"]},
                    {"id": "inline-cam", "url": "udp://127.0.0.1:5601", "models": ["stub"],
                     "drone": {**drone, "id": "survey-2", "connection": "udp:127.0.0.1:8"}}],
        "source_alerts": {"offline_after_s": 5},
    })
    w = SourceWatch(cfg)
    down = {sid: _st(State.OFFLINE, 0, down_s=0, err="no packets") for sid in ("patrol-cam", "inline-cam")}
    unknown = {ev.source_id: ev for ev in w.check(down, T0 + 6 * S)}
    assert unknown["inline-cam"].geo is None and "drone survey-2 has reported no position" in unknown["inline-cam"].geo_reason
    assert unknown["patrol-cam"].attributes["drone_id"] == "patrol-1"
    w2 = SourceWatch(cfg)
    w2.drone_camera_position = lambda sid: GeoPosition(52.84, 5.70, 3.0, 3.0) if sid == "inline-cam" else None
    placed = {ev.source_id: ev for ev in w2.check(down, T0 + 6 * S)}
    ev = placed["inline-cam"]
    assert (ev.geo.lat_deg, ev.geo.lon_deg) == (52.84, 5.70) and not ev.geo_reason
    assert ev.attributes["drone_id"] == "survey-2"
    assert placed["patrol-cam"].geo is None  # its drone has not reported yet


@pytest.mark.slow
def test_a_simulated_drone_losing_its_radio_in_flight_raises_the_incident_and_ends_it(tmp_path):
    import socket

    from seawatch.drone.sim import SimVehicle
    from seawatch.service.runner import Service

    port = free_port(socket.SOCK_DGRAM)
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "test", "role": "admin", "key_sha256": hash_api_key(KEY)}]},
        "drones": [{"id": "patrol-1", "connection": f"udp:127.0.0.1:{port}", "video_source": "patrol-cam",
                    "camera": {"width_px": 160, "height_px": 120, "hfov_deg": 70}}],
        # the drone's video: nothing listens there, so the camera is down from the start
        "sources": [{"id": "patrol-cam", "url": f"rtsp://127.0.0.1:{free_port()}/video", "models": ["stub"]}],
        "fleet": [{"drone": "patrol-1", "link_timeout_s": 0.5}],
        # the camera's incident comes once the drone has surely reported a position (placed where it last was)
        "source_alerts": {"drone_link_lost_after_s": 1.0, "offline_after_s": 8.0},
    })
    sim = SimVehicle(f"udpout:127.0.0.1:{port}", home=(52.84, 5.70, 0.0)).start()  # on before the ground station
    try:
        svc = Service(cfg, detectors={"stub": FireEverywhere()}).start()
    except BaseException:
        sim.stop()
        raise
    sim.h, sim.armed, sim.mode = 35.0, True, "GUIDED"  # airborne
    h = {"X-API-Key": KEY}
    try:
        with TestClient(svc.app) as client:
            def lost():
                return client.get("/api/events", params={"type": "drone_link_lost"}, headers=h).json()["events"]

            deadline = time.monotonic() + 30
            while client.get("/api/drones", headers=h).json()[0]["state"] != "connected" and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2.0)
            assert lost() == []  # connected and flying: nothing
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (cam := client.get(
                    "/api/events", params={"type": "source_offline"}, headers=h).json()["events"]):
                time.sleep(0.2)
            (cam_ev,) = cam  # its video down: where the drone is, from its telemetry
            assert cam_ev["source_id"] == "patrol-cam" and cam_ev["attributes"]["drone_id"] == "patrol-1"
            assert abs(cam_ev["geo"]["lat_deg"] - 52.84) < 1e-3 and abs(cam_ev["geo"]["lon_deg"] - 5.70) < 1e-3
            sim.silent = True  # the radio drops
            deadline = time.monotonic() + 15
            while not lost() and time.monotonic() < deadline:
                time.sleep(0.2)
            (ev,) = lost()
            assert ev["source_id"] == "patrol-1" and ev["severity"] == "critical" and ev["end_ns"] is None
            assert abs(ev["geo"]["lat_deg"] - 52.84) < 1e-3 and abs(ev["geo"]["lon_deg"] - 5.70) < 1e-3
            assert ev["attributes"]["alt_rel_m"] == pytest.approx(35.0, abs=1.0)
            sim.silent = False
            deadline = time.monotonic() + 30
            while lost()[0]["end_ns"] is None and time.monotonic() < deadline:
                time.sleep(0.2)
            (done,) = lost()
            assert done["id"] == ev["id"] and done["attributes"]["end_reason"] == "link back"
    finally:
        svc.stop()
        sim.stop()


def test_a_media_disk_still_full_after_the_guard_is_an_incident_until_space_is_back(tmp_path):
    from seawatch.service.retention import DiskReport

    w = SourceWatch(_settings(tmp_path))

    def rep(low, free_gb):
        return DiskReport("/srv/media", 100 * 10**9, int(free_gb * 10**9), free_gb, 5 * 10**9, low, at_ns=T0)

    assert w.check_disk(None, T0) == [] and w.check_disk(rep(False, 40), T0) == []
    (ev,) = w.check_disk(rep(True, 1.5), T0 + S)
    assert (ev.type, ev.severity, ev.source_id, ev.geo) == ("storage_low", "critical", "storage", None)
    assert ev.attributes["free_bytes"] == 1_500_000_000 and ev.attributes["threshold_bytes"] == 5 * 10**9
    assert w.check_disk(rep(True, 1.2), T0 + 60 * S) == []  # one incident while it lasts
    (end,) = w.check_disk(rep(False, 9), T0 + 120 * S)
    assert end.id == ev.id and end.attributes["end_reason"] == "space back above the threshold"
    assert end.attributes["free_bytes"] == 9 * 10**9 and end.end_ns == T0 + 120 * S


@pytest.mark.slow
def test_the_service_raises_storage_low_when_the_guard_cannot_free_enough(tmp_path):
    from seawatch.service.runner import Service

    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data"),
                    "retention": {"min_free_disk_gb": 100000, "disk_check_interval_s": 5}},  # 100 TB: never enough
        "auth": {"api_keys": [{"name": "test", "role": "admin", "key_sha256": hash_api_key(KEY)}]},
    })
    svc = Service(cfg).start()
    h = {"X-API-Key": KEY}
    try:
        with TestClient(svc.app) as client:  # the app's lifespan runs the retention worker and its disk guard
            def low():
                return client.get("/api/events", params={"type": "storage_low"}, headers=h).json()["events"]

            deadline = time.monotonic() + 15
            while not low() and time.monotonic() < deadline:
                time.sleep(0.2)
            (ev,) = low()
            assert ev["source_id"] == "storage" and ev["severity"] == "critical" and ev["end_ns"] is None
            assert ev["attributes"]["threshold_bytes"] == 100000 * 1024**3
            worker = svc.app.state.retention
            worker.retention.cfg = worker.retention.cfg.model_copy(update={"min_free_disk_gb": 0.0,
                                                                           "min_free_disk_pct": 0.0})
            deadline = time.monotonic() + 20
            while low()[0]["end_ns"] is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert low()[0]["attributes"]["end_reason"] == "space back above the threshold"
    finally:
        svc.stop()


def test_a_camera_down_is_placed_at_the_calibration_applied_while_running(tmp_path):
    """An administrator's calibration fitted with the camera's position (the GPS reading was off) moves where its
    camera-down incidents are placed; reverting goes back to the configured position; an uncalibrated camera given a
    calibration gets a place."""
    from seawatch.drone.config import CalibrationConfig

    cfg = _settings(tmp_path, offline_after_s=60)
    w = SourceWatch(cfg)
    moved = CalibrationConfig.model_validate({"camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 58.2},
                                              "surveyed": {**QUAY, "lat_deg": 53.5463, "lon_deg": 9.9665}})
    w.set_calibration("quay-1", moved)
    w.set_calibration("gate", moved)
    down = _st(State.OFFLINE, 10, down_s=10, attempts=4)
    got = {e.source_id: e for e in w.check({"quay-1": down, "gate": down}, T0 + 70 * S)}
    assert (got["quay-1"].geo.lat_deg, got["quay-1"].geo.lon_deg) == (53.5463, 9.9665)
    assert got["gate"].geo is not None and got["gate"].geo_reason is None
    w.set_calibration("quay-1", None)  # reverted: the configured one again
    w2_events = w.check({"quay-1": _st(State.ONLINE, 80)}, T0 + 81 * S)  # ends the first
    assert [e.phase for e in w2_events if e.source_id == "quay-1"] == ["end"]
    (again,) = [e for e in w.check({"quay-1": _st(State.OFFLINE, 100, down_s=100)}, T0 + 161 * S) if e.source_id == "quay-1"]
    assert (again.geo.lat_deg, again.geo.lon_deg) == (QUAY["lat_deg"], QUAY["lon_deg"])
