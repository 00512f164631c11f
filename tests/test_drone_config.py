"""Drone and fixed-camera calibration configuration: validation with field paths, and what it builds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from seawatch.drone.config import load_calibration, load_drones
from seawatch.drone.geometry import GeoLocator, CameraIntrinsics, CameraPose, PERFECT, latlon_to_offsets
from seawatch.errors import ConfigError

DOC = """
drones:
  - id: drone-1
    connection: udp:127.0.0.1:14550
    video_source: drone-1-cam
    camera: {width_px: 1920, height_px: 1080, hfov_deg: 82.0, k1: -0.11, k2: 0.04}
    latency_s: 0.18
    surface_alt_m: -2.5
    routes:
      perimeter: {type: perimeter, polygon_lonlat: [[6.51, 53.99], [6.60, 53.99], [6.60, 54.05]], alt_m: 60}
      sweep: {type: lawnmower, polygon_lonlat: [[6.51, 53.99], [6.53, 53.99], [6.53, 54.0], [6.51, 54.0]], alt_m: 50, spacing_m: 200}
      turbines: {type: points, points_lonlat: [[6.52, 54.0], [6.53, 54.0]], alt_m: 40, hold_s: 10}
"""


def test_example_builds_everything():
    cfg = load_drones(yaml.safe_load(DOC))
    d = cfg.drones[0]
    k = d.camera.build()
    assert k.fx_px == pytest.approx(960 / math.tan(math.radians(41.0))) and k.k1 == -0.11
    tl = d.build_timeline()
    assert tl.latency_ns == 180_000_000 and tl.default_gimbal == (0.0, -90.0, 0.0, "horizon")
    loc = d.build_locator()
    assert loc.surface_alt_m == -2.5
    link = d.build_link()
    assert link.url == "udp:127.0.0.1:14550" and link.vehicle_id == "drone-1" and link.timeline.latency_ns == 180_000_000
    wps = d.routes["turbines"].build()
    assert [(w.lat_deg, w.lon_deg, w.hold_s) for w in wps] == [(54.0, 6.52, 10.0), (54.0, 6.53, 10.0)]
    assert len(d.routes["perimeter"].build()) == 4
    items = d.routes["sweep"].build_items(home=(53.99, 6.51, 0.0))
    assert items[0].command == 16 and items[1].command == 22 and items[-1].command == 20


@pytest.mark.parametrize(
    "patch, where",
    [
        ({"camera": {"width_px": 1920, "height_px": 1080}}, "drones.0.camera"),
        ({"camera": {"width_px": 1920, "height_px": 1080, "hfov_deg": 80, "fx_px": 1000}}, "drones.0.camera"),
        ({"latency_s": 99}, "drones.0.latency_s"),
        ({"id": "bad id!"}, "drones.0.id"),
        ({"routes": {"r": {"type": "points", "alt_m": 30}}}, "drones.0.routes.r"),
        ({"routes": {"r": {"type": "perimeter", "polygon_lonlat": [[6.5, 54], [6.6, 54]], "alt_m": 30}}}, "routes.r"),
        ({"colour": "red"}, "drones.0.colour"),
    ],
)
def test_errors_name_the_field(patch, where):
    data = yaml.safe_load(DOC)
    data["drones"][0].update(patch)
    with pytest.raises(ConfigError) as ei:
        load_drones(data, where="site.yaml")
    assert where in str(ei.value) and "site.yaml" in str(ei.value)


def test_duplicate_ids_rejected():
    data = yaml.safe_load(DOC)
    data["drones"].append(dict(data["drones"][0]))
    with pytest.raises(ConfigError, match="duplicate drone ids"):
        load_drones(data)


def test_fixed_camera_surveyed_and_gcps_agree():
    camera = {"width_px": 1280, "height_px": 720, "hfov_deg": 60}
    surveyed = {"lat_deg": 53.55, "lon_deg": 8.58, "alt_m": 25.0, "pan_deg": 210.0, "tilt_deg": -10.0}
    a = load_calibration({"camera": camera, "surveyed": surveyed})
    px = [(100, 600), (1200, 620), (1100, 715), (200, 700), (640, 500)]
    truth = GeoLocator(CameraIntrinsics.from_fov(1280, 720, 60), sigmas=PERFECT).locate(
        px, CameraPose(53.55, 8.58, 25.0, gimbal_pitch_deg=-10.0, gimbal_yaw_deg=210.0, gimbal_frame="earth"))
    ga = a.locate(px)
    np.testing.assert_allclose(ga.lat_deg, truth.lat_deg, atol=1e-9)
    gcps = [{"x_px": x, "y_px": y, "lat_deg": float(la), "lon_deg": float(lo)}
            for (x, y), la, lo in zip(px, truth.lat_deg, truth.lon_deg)]
    b = load_calibration({"gcps": gcps})
    gb = b.locate([(640, 650)])
    gt = a.locate([(640, 650)])
    n, e = latlon_to_offsets(float(gt.lat_deg[0]), float(gt.lon_deg[0]), gb.lat_deg, gb.lon_deg)
    assert math.hypot(n[0], e[0]) < 0.05
    # the camera looks south-south-west: points are south-west of it
    assert (ga.lat_deg < 53.55).all() and (ga.lon_deg < 8.58).all()


@pytest.mark.parametrize(
    "data, msg",
    [
        ({"surveyed": {"lat_deg": 53.5, "lon_deg": 8.5, "alt_m": 20, "pan_deg": 0, "tilt_deg": -5}}, "intrinsics"),
        ({"gcps": [{"x_px": 0, "y_px": 0, "lat_deg": 53.5, "lon_deg": 8.5}] * 3}, "at least 4"),
        ({}, "exactly one"),
    ],
)
def test_calibration_errors(data, msg):
    with pytest.raises(ConfigError, match=msg):
        load_calibration(data)
