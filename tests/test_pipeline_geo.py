"""Geo-referenced events through ``Pipeline.process``: calibrated fixed cameras and drone sources.

Detections are injected (``Pipeline(detectors=...)``): a calibrated camera's detector returns boxes at the pixels
where known ground points project; a drone source's detector finds the simulator's rendered targets by colour
(no COCO model detects a red disc on a rendered sea). Positions are checked against the known truth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from seawatch.drone.config import CalibrationConfig, DroneConfig
from seawatch.drone.geometry import CameraIntrinsics, GeoLocator, latlon_to_offsets, offsets_to_latlon
from seawatch.drone.pose import AttitudeSample, PoseTimeline, PositionSample
from seawatch.errors import ConfigError
from seawatch.vision.detections import Detections
from seawatch.vision.events import MemorySink
from seawatch.vision.geo import FrameLocator, SourceGeo
from seawatch.vision.pipeline import Pipeline, load_pipeline_config
from seawatch.vision.zones import Locator

cv2 = pytest.importorskip("cv2")

T0_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
CAM = (53.55, 8.58)
CALIB_SURVEYED = {
    "camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 60.0},
    "surveyed": {"lat_deg": CAM[0], "lon_deg": CAM[1], "alt_m": 20.0, "pan_deg": 30.0, "tilt_deg": -10.0},
}


class BoxDetector:
    """Returns the boxes the test puts in ``boxes`` (one list of xyxy per call), label ``vessel``."""

    name = "boxes"
    labels = ("vessel",)

    def __init__(self) -> None:
        self.boxes: list[tuple[float, float, float, float]] = []

    def detect(self, images):
        out = []
        for _ in images:
            n = len(self.boxes)
            out.append(Detections(np.asarray(self.boxes, np.float32).reshape(n, 4), np.full(n, 0.9, np.float32),
                                  np.zeros(n, np.int32), self.labels, model=self.name))
        return out


class RedBlobDetector:
    """The simulator draws targets as red discs: one ``vessel`` box per whole red blob."""

    name = "redblob"
    labels = ("vessel",)

    def detect(self, images):
        out = []
        for img in images:
            mask = ((img[:, :, 2] > 200) & (img[:, :, 0] < 60) & (img[:, :, 1] < 60)).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            h, w = mask.shape
            boxes = [(x, y, x + bw, y + bh) for x, y, bw, bh, area in stats[1:n]
                     if area >= 12 and x > 0 and y > 0 and x + bw < w and y + bh < h]
            k = len(boxes)
            out.append(Detections(np.asarray(boxes, np.float32).reshape(k, 4), np.full(k, 0.9, np.float32),
                                  np.zeros(k, np.int32), self.labels, model=self.name))
        return out


def _square_lonlat(lat, lon, half_m):
    la, lo = offsets_to_latlon(lat, lon, [-half_m, -half_m, half_m, half_m], [-half_m, half_m, half_m, -half_m])
    return [[float(a), float(b)] for a, b in zip(lo, la)]


def _dist_m(lat0, lon0, lat1, lon1) -> float:
    n, e = latlon_to_offsets(lat0, lon0, lat1, lon1)
    return float(math.hypot(n[0], e[0]))


def _fixed_truth():
    """Target ~180 m out along the camera's pan, and its pixel (projected with the surveyed pose)."""
    cfg = CalibrationConfig.model_validate(CALIB_SURVEYED)
    cam = cfg.build()
    la, lo = offsets_to_latlon(CAM[0], CAM[1], 180.0 * math.cos(math.radians(30)), 180.0 * math.sin(math.radians(30)))
    px, inside = cam.locator.project(la, lo, 0.0, cam.pose)
    assert inside[0]
    return float(la[0]), float(lo[0]), px[0], cam


@pytest.mark.parametrize("method", ["surveyed", "gcps"])
def test_calibrated_camera_event_at_the_right_place_and_geo_zone_triggers(method):
    lat, lon, px, cam = _fixed_truth()
    if method == "surveyed":
        calibration = CALIB_SURVEYED
    else:
        # four ground control points surveyed on the water, around the scene
        gcps = []
        c, s_ = math.cos(math.radians(30)), math.sin(math.radians(30))
        for fwd, right in ((60, -15), (65, 20), (300, -80), (320, 90)):  # (forward, right) of the camera, metres
            gla, glo = offsets_to_latlon(CAM[0], CAM[1], fwd * c - right * s_, fwd * s_ + right * c)
            gp, ok = cam.locator.project(gla, glo, 0.0, cam.pose)
            assert ok[0]
            gcps.append({"x_px": float(gp[0, 0]), "y_px": float(gp[0, 1]), "lat_deg": float(gla[0]), "lon_deg": float(glo[0])})
        calibration = {"gcps": gcps}
    far = offsets_to_latlon(CAM[0], CAM[1], 500.0, -500.0)
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://x", "models": ["boxes"], "calibration": calibration}],
        "zones": [
            {"id": "berth", "source": "quay", "polygon_lonlat": _square_lonlat(lat, lon, 40.0),
             "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]},
            {"id": "elsewhere", "source": "quay", "polygon_lonlat": _square_lonlat(float(far[0][0]), float(far[1][0]), 40.0),
             "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]},
        ],
    })
    det = BoxDetector()
    x, y = float(px[0]), float(px[1])
    det.boxes = [(x - 30, y - 24, x + 30, y)]  # bottom centre (the waterline) on the target pixel
    sink = MemorySink()
    pipe = Pipeline(cfg, [sink], detectors={"boxes": det})
    image = np.zeros((720, 1280, 3), np.uint8)
    events = []
    for k in range(8):
        events += pipe.process("quay", T0_NS + k * 500_000_000, image)
    events += pipe.close()
    starts = [e for e in events if e.phase == "start"]
    assert [(e.type, e.zone_id) for e in starts] == [("vessel_in_zone", "berth")]
    assert sink.events == events
    g = starts[0].geo
    assert g is not None and starts[0].geo_reason is None
    err = _dist_m(lat, lon, g.lat_deg, g.lon_deg)
    assert err <= max(1.0, 3 * g.semi_major_m), (err, g)
    assert starts[0].attributes["geo_reference"] == "calibration"
    if method == "surveyed":
        # a shallow view: the error stretches along the line of sight (pan 30 deg), a real ellipse, not a disc
        assert g.semi_major_m > 3 * g.semi_minor_m > 0
        assert min(abs(g.orientation_deg - 30.0), abs(g.orientation_deg - 210.0) % 180) < 5.0
        assert err < 1.0  # same geometry as the projection: only float noise
    else:
        assert g.semi_major_m == pytest.approx(g.semi_minor_m)  # homography: circular sigma
        assert err < 2.0


def test_locator_adapter_satisfies_the_rules_protocol_and_flags_the_sky():
    _, _, px, _ = _fixed_truth()
    geo = SourceGeo.from_calibration("quay", CalibrationConfig.model_validate(CALIB_SURVEYED))
    loc = geo.frame_locator(T0_NS)
    assert isinstance(loc, Locator)
    res = loc.locate(np.array([px, [640.0, 5.0]]))  # the target and a pixel in the sky (tilt -10, vfov ~34)
    assert res.shape == (2, 3) and res.dtype == np.float64
    assert np.isfinite(res[0]).all() and res[0, 2] > 0
    assert np.isnan(res[1]).all()
    (pos, why), (pos2, why2) = loc.geo_positions(np.array([px, [640.0, 5.0]]))
    assert pos is not None and why is None and pos.lat_deg == res[0, 0]
    assert pos2 is None and "horizon" in why2
    assert loc.locate(np.zeros((0, 2))).shape == (0, 3)


def test_bad_calibration_and_drone_references_are_config_errors():
    with pytest.raises(ConfigError, match="gcps"):
        load_pipeline_config(None, {"sources": [{"id": "a", "url": "x", "calibration": {"gcps": [
            {"x_px": 0, "y_px": 0, "lat_deg": 1, "lon_deg": 1}]}}]})
    with pytest.raises(ConfigError, match="drone 'nope'"):
        load_pipeline_config(None, {"sources": [{"id": "a", "url": "x", "drone": "nope"}]})
    with pytest.raises(ConfigError, match="not both"):
        load_pipeline_config(None, {"sources": [{"id": "a", "url": "x", "drone": "d", "calibration": CALIB_SURVEYED}],
                                    "drones": [{"id": "d", "connection": "udp:0.0.0.0:14550",
                                                "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 70}}]})
    with pytest.raises(ConfigError, match="ais"):
        load_pipeline_config(None, {"ais": ["ftp://x:1"]})


# --------------------------------------------------------------------------------------------- drone


HOME = (54.0, 7.0)
CAMERA = CameraIntrinsics.from_fov(640, 480, 70.0)
ALT_M = 40.0
SPEED_N_M_S = 2.0
TELEMETRY_END_S = 6.0


def _drone_pose(t_s: float):
    from seawatch.drone.geometry import CameraPose

    la, lo = offsets_to_latlon(HOME[0], HOME[1], SPEED_N_M_S * t_s, 0.0)
    return CameraPose(float(la[0]), float(lo[0]), ALT_M, 0.0, 0.0, 0.0, 0.0, -90.0, 0.0, "horizon",
                      T0_NS + int(t_s * 1e9), (SPEED_N_M_S, 0.0, 0.0))


def _timeline() -> PoseTimeline:
    """10 Hz telemetry of a drone flying north at 2 m/s, 40 m up, camera straight down; it stops at 6 s."""
    tl = PoseTimeline("drone-1", max_age_s=0.5, max_gap_s=1.0, default_gimbal=(0.0, -90.0, 0.0, "horizon"))
    for i in range(int(TELEMETRY_END_S * 10) + 1):
        t = i / 10
        p = _drone_pose(t)
        tl.add_position(PositionSample(T0_NS + int(t * 1e9), p.lat_deg, p.lon_deg, ALT_M, (SPEED_N_M_S, 0.0, 0.0)))
        tl.add_attitude(AttitudeSample(T0_NS + int(t * 1e9), 0.0, 0.0, 0.0))
    return tl


def _drone_config(zones):
    return load_pipeline_config(None, {
        "sources": [{"id": "drone-1-cam", "url": "udp://0.0.0.0:5600", "models": ["redblob"], "drone": "drone-1"}],
        "drones": [{"id": "drone-1", "connection": "udp:127.0.0.1:1", "camera": {
            "width_px": 640, "height_px": 480, "fx_px": CAMERA.fx_px},
            "sigmas": {"attitude_deg": 0.2, "horizontal_m": 0.3, "vertical_m": 0.2, "timing_s": 0.01}}],
        "zones": zones,
    })


def test_drone_frames_geotagged_from_the_pose_timeline_against_the_simulator_truth():
    from seawatch.drone.sim import SimTarget, render_frame

    tla, tlo = offsets_to_latlon(HOME[0], HOME[1], 8.0, 5.0)
    target = SimTarget("boat", float(tla[0]), float(tlo[0]), radius_m=2.0)
    far = offsets_to_latlon(HOME[0], HOME[1], 200.0, 0.0)
    cfg = _drone_config([
        {"id": "farm", "source": "drone-1-cam", "polygon_lonlat": _square_lonlat(target.lat_deg, target.lon_deg, 15.0),
         "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0, "end_after_s": 1.0}]},
        {"id": "far", "source": "drone-1-cam", "polygon_lonlat": _square_lonlat(float(far[0][0]), float(far[1][0]), 15.0),
         "rules": [{"type": "vessel_in_zone", "min_duration_s": 0.0}]},
    ])
    sink = MemorySink()
    pipe = Pipeline(cfg, [sink], detectors={"redblob": RedBlobDetector()}, pose_timelines={"drone-1-cam": _timeline()})
    assert not pipe.links  # a caller-fed timeline: no MAVLink link is opened
    events, seen = [], 0
    for k in range(20):  # 0 .. 4.75 s, frames every 0.25 s, all inside the telemetry
        t_s = 0.1 + 0.25 * k
        img = render_frame(_drone_pose(t_s), CAMERA, [target], HOME)
        seen += len(RedBlobDetector().detect([img])[0])
        events += pipe.process("drone-1-cam", T0_NS + int(t_s * 1e9), img)
    assert seen >= 18
    starts = [e for e in events if e.phase == "start"]
    assert [(e.type, e.zone_id) for e in starts] == [("vessel_in_zone", "farm")]
    located = [e for e in events if e.geo is not None]
    assert located and all(e.attributes["geo_reference"] == "drone_pose" for e in located)
    for e in located:
        # the rules locate the bottom centre of the box: the disc's edge, up to one radius from its centre
        err = _dist_m(target.lat_deg, target.lon_deg, e.geo.lat_deg, e.geo.lon_deg)
        assert err <= target.radius_m + 3 * e.geo.semi_major_m, (err, e.geo)
        assert 0 < e.geo.semi_major_m < 2.0
    # the geolocation itself (blob centre, not box edge) against the truth, per frame
    geo = pipe.geo["drone-1-cam"]
    errors = []
    for k in range(0, 20, 4):
        t_s = 0.1 + 0.25 * k
        img = render_frame(_drone_pose(t_s), CAMERA, [target], HOME)
        b = RedBlobDetector().detect([img])[0].xyxy_px[0]
        res = geo.frame_locator(T0_NS + int(t_s * 1e9)).locate(np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]]))
        errors.append(_dist_m(target.lat_deg, target.lon_deg, res[0, 0], res[0, 1]))
    assert max(errors) < 0.5, errors


def test_stale_drone_pose_gives_events_without_position_and_says_why():
    from seawatch.drone.sim import SimTarget, render_frame

    tla, tlo = offsets_to_latlon(HOME[0], HOME[1], 14.0, 3.0)
    target = SimTarget("boat", float(tla[0]), float(tlo[0]), radius_m=2.0)
    cfg = _drone_config([
        {"id": "frame", "source": "drone-1-cam", "rules": [{"type": "vessel_in_zone", "min_duration_s": 0.5}]},
        {"id": "geo", "source": "drone-1-cam", "polygon_lonlat": _square_lonlat(target.lat_deg, target.lon_deg, 30.0),
         "rules": [{"type": "vessel_in_zone", "min_duration_s": 0.5}]},
    ])
    pipe = Pipeline(cfg, [], detectors={"redblob": RedBlobDetector()}, pose_timelines={"drone-1-cam": _timeline()})
    events = []
    for k in range(8):  # 8 .. 9.75 s: telemetry ended at 6 s
        t_s = 8.0 + 0.25 * k
        img = render_frame(_drone_pose(TELEMETRY_END_S), CAMERA, [target], HOME)
        events += pipe.process("drone-1-cam", T0_NS + int(t_s * 1e9), img)
    starts = [e for e in events if e.phase == "start"]
    # the whole-frame zone still raises its event; the geo zone cannot be evaluated without a pose
    assert [e.zone_id for e in starts] == ["frame"]
    ev = starts[0]
    assert ev.geo is None
    assert ev.geo_reason.startswith("no pose: drone-1") and ("old" in ev.geo_reason or "telemetry" in ev.geo_reason), ev.geo_reason
    assert ev.to_dict()["geo_reason"] == ev.geo_reason


def test_frame_locator_without_pose_locates_nothing():
    loc = FrameLocator(None, "no pose: drone-1: no telemetry yet", "drone_pose")
    assert np.isnan(loc.locate(np.array([[1.0, 2.0]]))).all()
    assert loc.geo_positions(np.array([[1.0, 2.0]])) == [(None, "no pose: drone-1: no telemetry yet")]
    with pytest.raises(ConfigError):
        Pipeline(_drone_config([]), [], detectors={"redblob": RedBlobDetector()},
                 pose_timelines={"nope": _timeline()})


def test_geo_locator_direct_vs_pipeline_locator_agree():
    """The pipeline's drone locator is the drone package's GeoLocator at the interpolated pose, nothing else."""
    cfg = _drone_config([])
    pipe = Pipeline(cfg, [], detectors={"redblob": RedBlobDetector()}, pose_timelines={"drone-1-cam": _timeline()})
    drone: DroneConfig = cfg.drones[0]
    direct = GeoLocator(drone.camera.build(), sigmas=drone.sigmas.build())
    px = np.array([[100.0, 100.0], [320.0, 240.0], [600.0, 400.0]])
    t_s = 2.55
    want = direct.locate(px, _drone_pose(t_s))
    got = pipe.locator_for("drone-1-cam", T0_NS + int(t_s * 1e9)).locate(px)
    for i in range(3):
        assert _dist_m(want.lat_deg[i], want.lon_deg[i], got[i, 0], got[i, 1]) < 0.02


def test_live_drone_config_opens_the_mavlink_link_and_geotags_simulator_frames():
    """The whole live path: a ``drones`` entry bound to the video source by ``video_source``; ``Pipeline.start``
    opens the MAVLink link (to the simulator), whose telemetry fills the pose timeline the frames are looked up in."""
    import socket
    import time

    pytest.importorskip("pymavlink")
    from seawatch.drone.sim import SimTarget, SimVehicle

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tla, tlo = offsets_to_latlon(HOME[0], HOME[1], 6.0, 4.0)
    target = SimTarget("boat", float(tla[0]), float(tlo[0]), radius_m=2.0)
    sim = SimVehicle(f"udpout:127.0.0.1:{port}", home=(HOME[0], HOME[1], 0.0), telemetry_hz=20.0, targets=[target],
                     gimbal_pitch_deg=-90.0)
    sim.h, sim.armed, sim.mode, sim.guided_target = 30.0, True, "GUIDED", (0.0, 0.0, 30.0)  # hovering
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "d1-cam", "url": "udp://0.0.0.0:5600", "models": ["redblob"]}],
        "drones": [{"id": "d1", "connection": f"udpin:127.0.0.1:{port}", "video_source": "d1-cam",
                    "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 70.0}, "max_pose_age_s": 0.5,
                    "sigmas": {"attitude_deg": 0.2, "horizontal_m": 0.3, "vertical_m": 0.2, "timing_s": 0.01}}],
        "zones": [{"id": "all", "source": "d1-cam", "rules": [{"type": "vessel_in_zone", "min_duration_s": 0.3}]}],
    })
    sim.start()
    pipe = Pipeline(cfg, [], detectors={"redblob": RedBlobDetector()})
    try:
        pipe.start(link_timeout_s=5.0)
        assert "d1" in pipe.links
        time.sleep(0.5)  # some telemetry before the first frame
        frames = []
        for _ in range(8):
            frames.append(sim.capture())
            time.sleep(0.1)
        time.sleep(0.3)  # the telemetry after the last frame
        events = []
        for capture_ns, img, _ in frames:
            events += pipe.process("d1-cam", capture_ns, img)
        start = [e for e in events if e.phase == "start"]
        assert len(start) == 1 and start[0].geo is not None, [(e.geo, e.geo_reason) for e in events]
        g = start[0].geo
        err = _dist_m(target.lat_deg, target.lon_deg, g.lat_deg, g.lon_deg)
        assert err <= target.radius_m + 3 * g.semi_major_m + 0.5, (err, g)
    finally:
        pipe.stop()
        sim.stop()
    assert not pipe.links
