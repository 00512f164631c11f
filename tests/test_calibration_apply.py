"""Applying a fitted calibration to the running service (``PUT / DELETE / GET /api/sources/{id}/calibration``).

A real ``Service`` plays a generated video of a fixed camera (160x120, surveyed pose, pan 150 degrees) through a stand-in
detector that sees one fire box near the horizon while switched on, so each incident is located at the box's anchor
pixel. An administrator applies a calibration whose pan is 6 degrees off the configured one: the incident before the
PUT is placed where the configured pose puts the pixel, the one after it where the new pose does (16 pixels apart in
the picture, over 20 metres on the water). The operator calibration outlives a restart on the same data folder (with
a WARNING saying so, and saying clearly when the configured section was edited since), and DELETE goes back to the
configured one. Operators and viewers cannot change it; junk, another picture size and a drone's camera are refused.
The store and the PostgreSQL path are covered too."""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import serve_in_thread
from seawatch.drone.config import CalibrationConfig
from seawatch.drone.geometry import latlon_to_offsets
from seawatch.errors import ConfigError
from seawatch.service.auth import hash_api_key
from seawatch.service.config import load_config
from seawatch.service.store import EventQuery, EventStore
from seawatch.vision.detections import Detections
from test_service_serve import write_video
import test_service_store
from test_service_store import new_pg_database

postgres_server = test_service_store.postgres_server  # the session's PostgreSQL server fixture (skip / CI failure)

ADMIN = "apply-admin-key-0123456789abcdef"
OPERATOR = "apply-operator-key-0123456789abc"
VIEWER = "apply-viewer-key-0123456789abcde"
CAM = "quay-cam"
SURVEYED = {"lat_deg": 52.8420, "lon_deg": 5.7000, "alt_m": 30.0, "pan_deg": 150.0, "tilt_deg": -4.0}
CONFIGURED = {"camera": {"width_px": 160, "height_px": 120, "hfov_deg": 60.0}, "surveyed": SURVEYED}
FIRE_XYXY = (60.0, 40.0, 100.0, 70.0)
ANCHOR_PX = np.array([[0.5 * (FIRE_XYXY[0] + FIRE_XYXY[2]), FIRE_XYXY[3]]])  # where an incident is located (rules)


def calibration(**surveyed) -> dict:
    return {"camera": dict(CONFIGURED["camera"]), "surveyed": {**SURVEYED, **surveyed}, "surface_alt_m": 0.0}


APPLIED = calibration(pan_deg=156.0)  # "a few degrees" off: what a fit on the calibration page would answer


class FireSwitch:
    """A stand-in detector: one confident fire box near the horizon in every frame while ``on``."""

    def __init__(self) -> None:
        self.on = True

    def detect(self, images):
        n = 1 if self.on else 0
        box = np.array([FIRE_XYXY] * n, np.float32).reshape(n, 4)
        return [Detections(box, np.full(n, 0.9, np.float32), np.zeros(n, np.int32), ("fire",), model="stub") for _ in images]


def settings(tmp_path: Path, video: Path, *, cal: dict = CONFIGURED, database_url: str | None = None, drone: bool = False):
    storage = {"data_dir": str(tmp_path / "data")}
    if database_url is not None:
        storage["database_url"] = database_url
    data = {
        "storage": storage,
        "auth": {"api_keys": [{"name": "installer", "role": "admin", "key_sha256": hash_api_key(ADMIN)},
                              {"name": "desk", "role": "operator", "key_sha256": hash_api_key(OPERATOR)},
                              {"name": "wall", "role": "viewer", "key_sha256": hash_api_key(VIEWER)}]},
        "sources": [{"id": CAM, "url": str(video), "models": ["stub"], "analysis_fps": 5, "calibration": cal}],
        "zones": [{"id": "quay", "source": CAM, "polygon_px": [[0, 0], [160, 0], [160, 120], [0, 120]], "rules": [
            {"type": "fire_smoke", "labels": ["fire"], "window_frames": 3, "min_hits": 2, "min_duration_s": 0.4,
             "static_min_iou": None, "clear_after_s": 0.6, "cooldown_s": 0.0}]}],
    }
    if drone:
        data["sources"].append({"id": "d1-cam", "url": "udp://0.0.0.0:5600", "drone": "d1"})
        data["drones"] = [{"id": "d1", "connection": "udp:127.0.0.1:14999", "video_source": "d1-cam",
                           "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 70}}]
    return load_config(data=data)


def call(base: str, path: str, method: str = "GET", body=None, key: str = ADMIN, raw: bytes | None = None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"{base}{path}", method=method, data=data,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def placed_at(cal: dict) -> tuple[float, float]:
    """Where ``cal`` places the fire's anchor pixel (lat, lon)."""
    g = CalibrationConfig.model_validate(cal).build().locate(ANCHOR_PX)
    assert g.valid[0]
    return float(g.lat_deg[0]), float(g.lon_deg[0])


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    n, e = latlon_to_offsets(a[0], a[1], np.array([b[0]]), np.array([b[1]]))
    return float(math.hypot(n[0], e[0]))


def wait_for(fn, timeout_s: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or fn}")
        time.sleep(0.1)


def fires(svc) -> dict:
    return {e.id: e for e in svc.store.search(EventQuery(types=("fire",), limit=200)).events}


def one_incident(svc, det: FireSwitch) -> object:
    """Switch the fire on until a new located incident is stored, then off until it has ended: the stored event."""
    before = set(fires(svc))
    det.on = True
    try:
        ev = wait_for(lambda: next((e for i, e in fires(svc).items() if i not in before and e.geo is not None), None),
                      what="a new located fire incident")
    finally:
        det.on = False
    return wait_for(lambda: (lambda e: e if e.phase == "end" else None)(fires(svc)[ev.id]), what="the incident's end")


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "quay.mp4"
    write_video(path, seconds=4.0)
    return path


def start_service(cfg, det):
    from seawatch.service.runner import Service

    return Service(cfg, detectors={"stub": det}, file_pace="realtime", loop_files=True).start()


def test_the_geometry_of_this_test_tells_the_two_poses_apart():
    """The configured and the applied pose place the anchor pixel over 18 metres apart (else the test proves nothing)."""
    assert metres(placed_at(CONFIGURED), placed_at(APPLIED)) > 18.0


def test_an_applied_calibration_locates_the_next_events_outlives_a_restart_and_is_reverted(tmp_path, video, caplog):
    old_at, new_at = placed_at(CONFIGURED), placed_at(APPLIED)
    det = FireSwitch()
    cfg = settings(tmp_path, video)
    svc = start_service(cfg, det)
    try:
        with serve_in_thread(svc.app) as port:
            base = f"http://127.0.0.1:{port}"
            status, got = call(base, f"/api/sources/{CAM}/calibration", key=VIEWER)
            assert status == 200 and got["origin"] == "config" and got["history"] == []
            assert got["calibration"]["surveyed"]["pan_deg"] == 150.0 and got["config_changed_since"] is None
            before = one_incident(svc, det)
            assert metres((before.geo.lat_deg, before.geo.lon_deg), old_at) < 2.0, before.geo

            # operators and viewers cannot change it; nothing is stored when they try
            for key in (OPERATOR, VIEWER):
                assert call(base, f"/api/sources/{CAM}/calibration", "PUT", {"calibration": APPLIED}, key=key)[0] == 403
                assert call(base, f"/api/sources/{CAM}/calibration", "DELETE", key=key)[0] == 403
            assert svc.store.calibration_history(CAM) == []

            with caplog.at_level(logging.WARNING, logger="seawatch.service.app"):
                status, got = call(base, f"/api/sources/{CAM}/calibration", "PUT", {
                    "calibration": APPLIED, "note": "refit after the mast was knocked",
                    "fit": {"points": 6, "rms_px": 0.8, "median_left_out_ground_error_m": 3.2}})
            assert status == 200, got
            assert got["origin"] == "operator" and got["applied_by"] == "key:installer"
            assert got["note"] == "refit after the mast was knocked" and got["fit"]["rms_px"] == 0.8
            assert got["calibration"]["surveyed"]["pan_deg"] == 156.0 and got["view"]["pan_deg"] == 156.0
            assert got["config_changed_since"] is False and got["config_matches"] is False
            assert [h["status"] for h in got["history"]] == ["in_force"]
            logged = [r for r in caplog.records if "calibration applied to the running service" in r.getMessage()]
            assert len(logged) == 1 and logged[0].levelno == logging.WARNING
            assert "installer" in logged[0].getMessage() and "pan_deg: 156.0" in logged[0].getMessage()
            # the map's camera: the view in force, and where it comes from
            status, listed = call(base, "/api/sources", key=VIEWER)
            cam = next(s for s in listed if s["source_id"] == CAM)
            assert cam["calibration_origin"] == "operator" and cam["view"]["pan_deg"] == 156.0

            after = one_incident(svc, det)
            assert metres((after.geo.lat_deg, after.geo.lon_deg), new_at) < 2.0, after.geo
            assert metres((after.geo.lat_deg, after.geo.lon_deg), old_at) > 15.0
            # the incident before the PUT keeps where the configured pose put it
            kept = svc.store.get(before.id)
            assert metres((kept.geo.lat_deg, kept.geo.lon_deg), old_at) < 2.0
    finally:
        svc.stop()

    # a restart on the same data folder: still in force, and the log says so (once, naming the camera)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seawatch.service.runner"):
        svc = start_service(cfg, det)
    try:
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and CAM in r.getMessage()
                and "calibration applied by" in r.getMessage()]
        assert len(said) == 1, caplog.text
        assert "key:installer" in said[0] and "refit after the mast was knocked" in said[0]
        assert "to make it permanent" in said[0] and "pan_deg: 156.0" in said[0] and "DELETE" in said[0]
        assert "CHANGED" not in said[0]
        loc = svc.pipeline.locator_for(CAM, time.time_ns()).locate(ANCHOR_PX)[0]
        assert metres((loc[0], loc[1]), new_at) < 0.5
        ev = one_incident(svc, det)
        assert metres((ev.geo.lat_deg, ev.geo.lon_deg), new_at) < 2.0
    finally:
        svc.stop()

    # the configuration's calibration edited meanwhile: said loudly, the operator one stays in force
    edited = calibration(tilt_deg=-4.5)
    cfg2 = settings(tmp_path, video, cal=edited)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seawatch.service.runner"):
        svc = start_service(cfg2, det)
    try:
        said = [r.getMessage() for r in caplog.records if CAM in r.getMessage() and "calibration applied by" in r.getMessage()]
        assert len(said) == 1 and "CHANGED in the configuration" in said[0], caplog.text
        loc = svc.pipeline.locator_for(CAM, time.time_ns()).locate(ANCHOR_PX)[0]
        assert metres((loc[0], loc[1]), new_at) < 0.5
        with serve_in_thread(svc.app) as port:
            base = f"http://127.0.0.1:{port}"
            status, got = call(base, f"/api/sources/{CAM}/calibration", key=VIEWER)
            assert status == 200 and got["origin"] == "operator" and got["config_changed_since"] is True
            assert got["configured"]["surveyed"]["tilt_deg"] == -4.5

            with caplog.at_level(logging.WARNING, logger="seawatch.service.app"):
                status, got = call(base, f"/api/sources/{CAM}/calibration", "DELETE")
            assert status == 200, got
            assert got["origin"] == "config" and got["calibration"]["surveyed"]["tilt_deg"] == -4.5
            assert [h["status"] for h in got["history"]] == ["reverted"]
            assert got["history"][0]["reverted_by"] == "key:installer"
            assert any("reverted to the configured one by key installer" in r.getMessage() and r.levelno == logging.WARNING
                       for r in caplog.records), caplog.text
            status, listed = call(base, "/api/sources", key=VIEWER)
            cam = next(s for s in listed if s["source_id"] == CAM)
            assert cam["calibration_origin"] == "config" and cam["view"]["pan_deg"] == 150.0
            ev = one_incident(svc, det)
            assert metres((ev.geo.lat_deg, ev.geo.lon_deg), placed_at(edited)) < 2.0
            # nothing left to revert
            assert call(base, f"/api/sources/{CAM}/calibration", "DELETE")[0] == 404
    finally:
        svc.stop()


def test_the_api_refuses_junk_another_picture_size_and_a_drone_camera(tmp_path, video):
    det = FireSwitch()
    svc = start_service(settings(tmp_path, video, drone=False), det)
    try:
        with serve_in_thread(svc.app) as port:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: svc.pipeline.latest_frame(CAM) is not None, what="a first analysed frame")
            path = f"/api/sources/{CAM}/calibration"
            bad_bodies = [
                {},  # no calibration
                {"calibration": {**APPLIED, "colour": "blue"}},  # a key the configuration does not know
                {"calibration": {"surveyed": APPLIED["surveyed"]}},  # a surveyed pose without intrinsics
                {"calibration": calibration(pan_deg=400.0)},  # out of bounds
                {"calibration": calibration(lat_deg=float("nan"))},  # not JSON: sent as NaN
                {"calibration": APPLIED, "note": "x" * 501},
                {"calibration": APPLIED, "fit": {"rms_px": -1}},
                {"calibration": APPLIED, "extra": 1},
                {"calibration": {**APPLIED, "camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 60}}},  # not what it sends
                ["calibration"],
            ]
            for body in bad_bodies:
                status, got = call(base, path, "PUT", raw=json.dumps(body).encode())
                assert status == 422, (body, got)
            status, got = call(base, path, "PUT", raw=b"{not json")
            assert status == 422
            status, got = call(base, path, "PUT", {"calibration": {**APPLIED, "camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 60}}})
            assert "sends 160x120" in got["error"]["message"]
            assert svc.store.calibration_history(CAM) == []  # nothing refused was stored
            assert call(base, "/api/sources/nope/calibration", "PUT", {"calibration": APPLIED})[0] == 404
            assert call(base, "/api/sources/nope/calibration")[0] == 404
            assert call(base, path, "DELETE")[0] == 404  # nothing to revert
            status, got = call(base, path, "PUT", {"calibration": APPLIED})
            assert status == 200 and got["origin"] == "operator"
    finally:
        svc.stop()


def test_a_drone_camera_has_no_calibration_to_apply(tmp_path, video):
    """The API refuses a drone's camera (422), and so does the pipeline (ConfigError), whatever reaches it."""
    from seawatch.service.app import create_app
    from seawatch.vision.pipeline import Pipeline

    cfg = settings(tmp_path, video, drone=True)
    calls = []
    app = create_app(cfg, apply_calibration=lambda sid, cal: calls.append((sid, cal)))
    with serve_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        for method, body in (("GET", None), ("PUT", {"calibration": APPLIED}), ("DELETE", None)):
            status, got = call(base, "/api/sources/d1-cam/calibration", method, body)
            assert status == 422 and "drone's camera" in got["error"]["message"], (method, got)
        # without a pipeline (this app has none) the fixed camera's calibration is stored and handed to the hook
        status, got = call(base, f"/api/sources/{CAM}/calibration", "PUT", {"calibration": APPLIED})
        assert status == 200 and [c[0] for c in calls] == [CAM] and calls[0][1].surveyed.pan_deg == 156.0
        status, listed = call(base, "/api/sources")
        assert {s["source_id"]: s["calibration_origin"] for s in listed if s.get("kind") == "camera"} == \
            {CAM: "operator", "d1-cam": None}
    pipe = Pipeline(cfg.pipeline, detectors={"stub": FireSwitch()})
    with pytest.raises(ConfigError, match="drone's camera"):
        pipe.set_calibration("d1-cam", CalibrationConfig.model_validate(APPLIED))
    with pytest.raises(ConfigError, match="no source"):
        pipe.set_calibration("nope", CalibrationConfig.model_validate(APPLIED))


def test_the_pipeline_swaps_a_camera_geo_reference_in_one_step(tmp_path, video):
    """A locator taken before the swap keeps placing its frame with the old pose; the next one uses the new pose;
    None goes back to the configured one, and a camera with none configured loses its geo-reference again."""
    from seawatch.vision.pipeline import Pipeline

    cfg = settings(tmp_path, video)
    pipe = Pipeline(cfg.pipeline, detectors={"stub": FireSwitch()})
    t = 1_800_000_000_000_000_000
    first = pipe.locator_for(CAM, t)
    pipe.set_calibration(CAM, CalibrationConfig.model_validate(APPLIED))
    second = pipe.locator_for(CAM, t)
    assert metres(tuple(first.locate(ANCHOR_PX)[0][:2]), placed_at(CONFIGURED)) < 0.5
    assert metres(tuple(second.locate(ANCHOR_PX)[0][:2]), placed_at(APPLIED)) < 0.5
    pipe.set_calibration(CAM, None)
    assert metres(tuple(pipe.locator_for(CAM, t).locate(ANCHOR_PX)[0][:2]), placed_at(CONFIGURED)) < 0.5
    bare = Pipeline(settings(tmp_path, video, cal=None).pipeline, detectors={"stub": FireSwitch()})
    assert bare.locator_for(CAM, t) is None
    bare.set_calibration(CAM, CalibrationConfig.model_validate(APPLIED))
    assert metres(tuple(bare.locator_for(CAM, t).locate(ANCHOR_PX)[0][:2]), placed_at(APPLIED)) < 0.5
    bare.set_calibration(CAM, None)
    assert bare.locator_for(CAM, t) is None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return new_pg_database(request.getfixturevalue("postgres_server"))


def test_the_store_keeps_every_calibration_and_the_newest_is_in_force(db_url):
    store = EventStore.open(db_url)
    try:
        assert store.calibrations_in_force() == {} and store.calibration_in_force(CAM) is None
        a = store.add_calibration(CAM, APPLIED, "key:installer", note="first", fit={"rms_px": 1.5}, config_sha256="c0")
        b = store.add_calibration(CAM, calibration(pan_deg=155.0), "user:rita", note="ünïcode ✓")
        other = store.add_calibration("yard-cam", APPLIED, "user:rita")
        assert store.calibration_in_force(CAM).id == b.id
        assert {k: v.id for k, v in store.calibrations_in_force().items()} == {CAM: b.id, "yard-cam": other.id}
        got = store.calibration_history(CAM)
        assert [h.id for h in got] == [b.id, a.id]
        assert got[1].calibration == APPLIED and got[1].fit == {"rms_px": 1.5} and got[1].config_sha256 == "c0"
        assert got[0].note == "ünïcode ✓" and got[0].created_by == "user:rita"
        reverted = store.revert_calibration(CAM, "user:olga")
        assert reverted.id == b.id and reverted.reverted_by == "user:olga" and reverted.reverted_ns is not None
        assert store.calibration_in_force(CAM) is None  # the older one was superseded, not brought back
        assert store.revert_calibration(CAM, "user:olga") is None
        assert [h.id for h in store.calibration_history(CAM)] == [b.id, a.id]  # the history keeps everything
        assert set(store.calibrations_in_force()) == {"yard-cam"}
        c = store.add_calibration(CAM, APPLIED, "user:rita")
        assert store.calibration_in_force(CAM).id == c.id
        assert store.remove_calibration(c.id) and not store.remove_calibration(c.id)
        with pytest.raises(Exception, match="NUL"):
            store.add_calibration(CAM, APPLIED, "user:\x00")
        with pytest.raises(Exception, match="JSON"):
            store.add_calibration(CAM, {"x": float("nan")}, "user:rita")
    finally:
        store.close()


def test_a_store_at_the_previous_revision_gains_the_table(db_url):
    import sqlalchemy as sa

    from seawatch.service.migrations import upgrade

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        upgrade(conn, "0009")
        assert "source_calibrations" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    store = EventStore.open(db_url)
    try:
        assert store.add_calibration(CAM, APPLIED, "user:rita").id >= 1
        assert store.calibration_in_force(CAM).calibration == APPLIED
    finally:
        store.close()


def test_on_postgresql_an_applied_calibration_outlives_a_restart(tmp_path, video, request):
    url = new_pg_database(request.getfixturevalue("postgres_server"))
    det = FireSwitch()
    det.on = False
    cfg = settings(tmp_path, video, database_url=url)
    svc = start_service(cfg, det)
    try:
        assert svc.store.engine.dialect.name == "postgresql"
        with serve_in_thread(svc.app) as port:
            status, got = call(f"http://127.0.0.1:{port}", f"/api/sources/{CAM}/calibration", "PUT",
                               {"calibration": APPLIED, "note": "on postgres"})
            assert status == 200 and got["origin"] == "operator"
    finally:
        svc.stop()
    svc = start_service(cfg, det)
    try:
        loc = svc.pipeline.locator_for(CAM, time.time_ns()).locate(ANCHOR_PX)[0]
        assert metres((loc[0], loc[1]), placed_at(APPLIED)) < 0.5
        with serve_in_thread(svc.app) as port:
            base = f"http://127.0.0.1:{port}"
            status, got = call(base, f"/api/sources/{CAM}/calibration", key=VIEWER)
            assert got["origin"] == "operator" and got["note"] == "on postgres"
            status, got = call(base, f"/api/sources/{CAM}/calibration", "DELETE")
            assert status == 200 and got["origin"] == "config" and [h["status"] for h in got["history"]] == ["reverted"]
        loc = svc.pipeline.locator_for(CAM, time.time_ns()).locate(ANCHOR_PX)[0]
        assert metres((loc[0], loc[1]), placed_at(CONFIGURED)) < 0.5
    finally:
        svc.stop()
