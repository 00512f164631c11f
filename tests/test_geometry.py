"""Camera geometry: known answers, round trips (hypothesis), uncertainty, homography calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawatch.drone.geometry import (
    PERFECT,
    CameraIntrinsics,
    CameraPose,
    GcpHomography,
    GeoLocator,
    GroundControlPoint,
    PoseSigmas,
    earth_radius_m,
    euler_zyx_from_quat,
    euler_zyx_to_matrix,
    inside_ellipse,
    latlon_to_offsets,
    matrix_to_euler_zyx,
    quat_from_euler_zyx,
    quat_slerp,
)
from seawatch.errors import ConfigError, InputError

K = CameraIntrinsics.from_fov(1920, 1080, 70.0)
K_DIST = CameraIntrinsics(1920, 1080, 1400.0, 1405.0, 955.0, 545.0, k1=-0.12, k2=0.05, p1=0.001, p2=-0.0008, k3=-0.01)
CENTRE = [[960.0, 540.0]]


def test_nadir_centre_maps_to_point_below():
    loc = GeoLocator(K, surface_alt_m=0.0, sigmas=PERFECT)
    pose = CameraPose(54.01, 7.2, 100.0, yaw_deg=37.0, gimbal_pitch_deg=-90.0)
    g = loc.locate(CENTRE, pose)
    assert g.valid.tolist() == [True]
    assert g.lat_deg[0] == pytest.approx(54.01, abs=1e-9)
    assert g.lon_deg[0] == pytest.approx(7.2, abs=1e-9)
    assert g.range_m[0] == pytest.approx(100.0)


@pytest.mark.parametrize("yaw_deg, north, east", [(0.0, 1.0, 0.0), (90.0, 0.0, 1.0), (180.0, -1.0, 0.0), (-90.0, 0.0, -1.0)])
def test_45_deg_depression_distance_equals_altitude(yaw_deg, north, east):
    loc = GeoLocator(K, surface_alt_m=5.0, sigmas=PERFECT)
    pose = CameraPose(54.0, 7.0, 105.0, yaw_deg=yaw_deg, gimbal_pitch_deg=-45.0)
    g = loc.locate(CENTRE, pose)
    # flat-earth answer: distance = altitude; the curved sea adds 0.7 mm at 100 m
    assert g.north_m[0] == pytest.approx(100.0 * north, abs=2e-3)
    assert g.east_m[0] == pytest.approx(100.0 * east, abs=2e-3)
    # geodesic distance from the camera to the WGS84 answer is the altitude above the surface
    _, _, dist = __import__("pyproj").Geod(ellps="WGS84").inv(7.0, 54.0, g.lon_deg[0], g.lat_deg[0])
    assert dist == pytest.approx(100.0, abs=2e-3)


def test_image_orientation_conventions():
    """Nadir, yaw 0: image top is north, image right is east."""
    loc = GeoLocator(K, sigmas=PERFECT)
    pose = CameraPose(54.0, 7.0, 100.0, gimbal_pitch_deg=-90.0)
    g = loc.locate([[960, 0], [1920, 540]], pose)
    assert g.north_m[0] > 30 and abs(g.east_m[0]) < 1e-6
    assert g.east_m[1] > 50 and abs(g.north_m[1]) < 1e-6


def test_gimbal_frames_agree_when_vehicle_level():
    loc = GeoLocator(K, sigmas=PERFECT)
    a = CameraPose(54.0, 7.0, 80.0, yaw_deg=30.0, gimbal_pitch_deg=-60.0, gimbal_yaw_deg=10.0, gimbal_frame="body")
    b = CameraPose(54.0, 7.0, 80.0, yaw_deg=30.0, gimbal_pitch_deg=-60.0, gimbal_yaw_deg=10.0, gimbal_frame="horizon")
    c = CameraPose(54.0, 7.0, 80.0, yaw_deg=99.0, gimbal_pitch_deg=-60.0, gimbal_yaw_deg=40.0, gimbal_frame="earth")
    pts = [[100, 900], [960, 540], [1800, 700]]
    ga, gb, gc = loc.locate(pts, a), loc.locate(pts, b), loc.locate(pts, c)
    np.testing.assert_allclose(ga.north_m, gb.north_m, atol=1e-6)
    np.testing.assert_allclose(ga.north_m, gc.north_m, atol=1e-6)
    np.testing.assert_allclose(ga.east_m, gc.east_m, atol=1e-6)
    # a stabilised gimbal ignores vehicle roll; a body-fixed one does not
    rolled_h = loc.locate(pts, CameraPose(**{**_fields(b), "roll_deg": 10.0}))
    rolled_b = loc.locate(pts, CameraPose(**{**_fields(a), "roll_deg": 10.0}))
    np.testing.assert_allclose(rolled_h.north_m, gb.north_m, atol=1e-6)
    assert np.abs(rolled_b.east_m - ga.east_m).max() > 5.0


def _fields(p: CameraPose) -> dict:
    return {k: getattr(p, k) for k in p.__slots__}


def test_above_horizon_gives_no_position_with_reason():
    loc = GeoLocator(K, sigmas=PERFECT)
    pose = CameraPose(54.0, 7.0, 100.0, gimbal_pitch_deg=-5.0)
    g = loc.locate([[960, 0], [960, 1080]], pose)
    assert g.valid.tolist() == [False, True]
    assert "horizon" in g.reasons[0] and g.reasons[1] is None
    assert math.isnan(g.lat_deg[0]) and math.isnan(g.semi_major_m[0])


def test_camera_below_surface_and_bad_pixels():
    loc = GeoLocator(K, surface_alt_m=10.0, sigmas=PERFECT)
    g = loc.locate(CENTRE, CameraPose(54.0, 7.0, 5.0, gimbal_pitch_deg=-90))
    assert not g.valid[0] and "not above the surface" in g.reasons[0]
    g = GeoLocator(K).locate([[np.nan, 3.0], [960, 540]], CameraPose(54.0, 7.0, 50.0, gimbal_pitch_deg=-90))
    assert g.valid.tolist() == [False, True] and "finite" in g.reasons[0]
    with pytest.raises(InputError):
        GeoLocator(K).locate(np.zeros((3, 3)), CameraPose(54.0, 7.0, 50.0))
    with pytest.raises(InputError):
        CameraPose(95.0, 7.0, 50.0)
    with pytest.raises(ConfigError):
        CameraIntrinsics(1920, 1080, -1.0, 1.0, 1.0, 1.0)


def test_max_range():
    loc = GeoLocator(K, sigmas=PERFECT, max_range_m=500.0)
    g = loc.locate(CENTRE, CameraPose(54.0, 7.0, 100.0, gimbal_pitch_deg=-5.0))
    assert not g.valid[0] and "max_range_m" in g.reasons[0]


def test_empty_batch():
    g = GeoLocator(K).locate(np.zeros((0, 2)), CameraPose(54.0, 7.0, 50.0, gimbal_pitch_deg=-90))
    assert len(g) == 0 and g.cov_ne_m2.shape == (0, 2, 2)


def test_antimeridian():
    loc = GeoLocator(K, sigmas=PERFECT)
    pose = CameraPose(-16.0, 179.9995, 100.0, yaw_deg=90.0, gimbal_pitch_deg=-45.0)
    g = loc.locate(CENTRE, pose)
    assert g.valid[0]
    assert -180.0 <= g.lon_deg[0] < -179.99  # 100 m east crosses the line
    px, inside = loc.project(g.lat_deg, g.lon_deg, 0.0, pose)
    assert inside[0]
    np.testing.assert_allclose(px, CENTRE, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(
    x=st.floats(0, 1920),
    y=st.floats(0, 1080),
    lat=st.floats(-80, 80),
    lon=st.floats(-180, 180),
    alt=st.floats(10, 500),
    roll=st.floats(-20, 20),
    pitch=st.floats(-20, 20),
    yaw=st.floats(-180, 180),
    gpitch=st.floats(-90, -30),
    gyaw=st.floats(-60, 60),
    frame=st.sampled_from(["body", "horizon", "earth"]),
    distorted=st.booleans(),
)
def test_pixel_ground_pixel_round_trip(x, y, lat, lon, alt, roll, pitch, yaw, gpitch, gyaw, frame, distorted):
    k = K_DIST if distorted else K
    loc = GeoLocator(k, surface_alt_m=0.0, sigmas=PERFECT)
    pose = CameraPose(lat, lon, alt, roll, pitch, yaw, 0.0, gpitch, gyaw, gimbal_frame=frame)
    g = loc.locate([[x, y]], pose)
    if not g.valid[0]:
        assert g.reasons[0]
        return
    assert g.alt_m[0] == pytest.approx(0.0, abs=1e-6)
    px, inside = loc.project(g.lat_deg, g.lon_deg, g.alt_m, pose)
    assert np.abs(px[0] - [x, y]).max() < 1e-4 * max(1.0, g.range_m[0] / 100.0)


@settings(max_examples=100, deadline=None)
@given(dn=st.floats(-300, 300), de=st.floats(-300, 300), gpitch=st.floats(-90, -40), yaw=st.floats(-180, 180))
def test_ground_pixel_ground_round_trip(dn, de, gpitch, yaw):
    loc = GeoLocator(K, sigmas=PERFECT)
    pose = CameraPose(10.0, 20.0, 120.0, yaw_deg=yaw, gimbal_pitch_deg=gpitch)
    lat, lon = __import__("seawatch.drone.geometry", fromlist=["x"]).offsets_to_latlon(10.0, 20.0, dn, de)
    px, inside = loc.project(lat, lon, 0.0, pose)
    if not inside[0]:
        return
    g = loc.locate(px, pose)
    assert g.valid[0]
    assert g.north_m[0] == pytest.approx(dn, abs=1e-5)
    assert g.east_m[0] == pytest.approx(de, abs=1e-5)


def test_distortion_round_trip_and_cv2_agreement():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    px = rng.uniform([0, 0], [1920, 1080], size=(500, 2))
    xy = K_DIST.undistort(px)
    np.testing.assert_allclose(K_DIST.distort(xy), px, atol=1e-6)
    cam = np.array([[K_DIST.fx_px, 0, K_DIST.cx_px], [0, K_DIST.fy_px, K_DIST.cy_px], [0, 0, 1]])
    dist = np.array([K_DIST.k1, K_DIST.k2, K_DIST.p1, K_DIST.p2, K_DIST.k3])
    ref, _ = cv2.projectPoints(np.c_[xy, np.ones(len(xy))], np.zeros(3), np.zeros(3), cam, dist)
    np.testing.assert_allclose(ref[:, 0, :], px, atol=1e-6)


@pytest.mark.parametrize("r, p, y", [(0.1, 0.2, 0.3), (-1.0, 0.5, 3.0), (0.0, -1.2, -2.0)])
def test_rotation_conventions(r, p, y):
    m = euler_zyx_to_matrix(r, p, y)
    assert np.allclose(m @ m.T, np.eye(3))
    np.testing.assert_allclose(matrix_to_euler_zyx(m), (r, p, y), atol=1e-12)
    np.testing.assert_allclose(euler_zyx_from_quat(quat_from_euler_zyx(r, p, y)), (r, p, y), atol=1e-12)


def test_slerp_takes_short_way_across_yaw_wrap():
    q0 = quat_from_euler_zyx(0.0, 0.0, math.radians(170.0))
    q1 = quat_from_euler_zyx(0.0, 0.0, math.radians(-170.0))
    _, _, yaw = euler_zyx_from_quat(quat_slerp(q0, q1, 0.5))
    assert abs(abs(math.degrees(yaw)) - 180.0) < 1e-9


def test_uncertainty_scales_with_obliquity_and_covers_truth():
    loc = GeoLocator(K, sigmas=PoseSigmas(attitude_deg=0.5, horizontal_m=0.0, vertical_m=0.0, timing_s=0.0, pixel_px=0.0))
    steep = loc.locate(CENTRE, CameraPose(54.0, 7.0, 100.0, gimbal_pitch_deg=-90.0))
    oblique = loc.locate(CENTRE, CameraPose(54.0, 7.0, 100.0, gimbal_pitch_deg=-20.0))
    # at 20 deg depression a 0.5 deg pitch error moves the point h/sin^2(20) * 0.0087 = 7.5 m along the view
    assert oblique.semi_major_m[0] > 5 * steep.semi_major_m[0]
    assert oblique.orientation_deg[0] == pytest.approx(0.0, abs=1.0) or oblique.orientation_deg[0] == pytest.approx(180.0, abs=1.0)
    sigma_along = 100.0 / math.sin(math.radians(20)) ** 2 * math.radians(0.5)
    assert oblique.semi_major_m[0] == pytest.approx(math.sqrt(5.991) * sigma_along, rel=0.05)


def test_ellipse_coverage_monte_carlo():
    """Noisy poses: the stated 95 % ellipse holds the truth in >= 90 % of trials."""
    sig = PoseSigmas(attitude_deg=0.5, horizontal_m=1.5, vertical_m=1.0, timing_s=0.05, pixel_px=0.0)
    loc = GeoLocator(K, sigmas=sig)
    truth_pose = CameraPose(54.0, 7.0, 100.0, gimbal_pitch_deg=-45.0, velocity_ned_m_s=(8.0, 0.0, 0.0))
    ref = GeoLocator(K, sigmas=PERFECT).locate(CENTRE, truth_pose)
    rng = np.random.default_rng(7)
    hits = 0
    trials = 300
    for _ in range(trials):
        dt = rng.normal(0, 0.05)
        dn, de = rng.normal(0, 1.5, 2) + np.array([8.0 * dt, 0.0])
        lat, lon = __import__("seawatch.drone.geometry", fromlist=["x"]).offsets_to_latlon(54.0, 7.0, dn, de)
        noisy = CameraPose(
            float(lat[0]), float(lon[0]), 100.0 + rng.normal(0, 1.0), *rng.normal(0, 0.5, 3),
            gimbal_pitch_deg=-45.0, velocity_ned_m_s=(8.0, 0.0, 0.0),
        )
        g = loc.locate(CENTRE, noisy)
        en, ee = latlon_to_offsets(float(g.lat_deg[0]), float(g.lon_deg[0]), ref.lat_deg, ref.lon_deg)
        hits += bool(inside_ellipse(en, ee, g.cov_ne_m2)[0])
    assert hits / trials >= 0.90


def test_dem_intersection():
    """A tilted DEM: the located point lies on the DEM and projects back to the pixel."""
    def dem(lat, lon):
        n, e = latlon_to_offsets(54.0, 7.0, lat, lon)
        return 10.0 + 0.1 * n

    loc = GeoLocator(K, dem=dem, sigmas=PERFECT)
    pose = CameraPose(54.0, 7.0, 150.0, gimbal_pitch_deg=-50.0)
    g = loc.locate([[960, 540], [300, 800]], pose)
    assert g.valid.all()
    np.testing.assert_allclose(g.alt_m, dem(g.lat_deg, g.lon_deg), atol=0.01)
    px, _ = loc.project(g.lat_deg, g.lon_deg, g.alt_m, pose)
    np.testing.assert_allclose(px, [[960, 540], [300, 800]], atol=0.05)


def _gcps_from_camera(pixels, pose, k=K):
    loc = GeoLocator(k, sigmas=PERFECT)
    g = loc.locate(pixels, pose)
    return [GroundControlPoint(x, y, la, lo) for (x, y), la, lo in zip(pixels, g.lat_deg, g.lon_deg)], loc


def test_homography_from_gcps_matches_surveyed_camera():
    pose = CameraPose(53.5, 8.1, 25.0, yaw_deg=200.0, gimbal_pitch_deg=-12.0)
    pixels = [(100, 700), (1800, 720), (1700, 1050), (200, 1000), (960, 800), (500, 900)]
    gcps, loc = _gcps_from_camera(pixels, pose)
    h = GcpHomography.fit(gcps)
    assert h.rms_m < 0.05
    test_px = np.array([[700, 850], [1300, 950], [960, 1079]])
    a, b = h.locate(test_px), loc.locate(test_px, pose)
    en, ee = latlon_to_offsets(53.5, 8.1, a.lat_deg, a.lon_deg)
    bn, be = latlon_to_offsets(53.5, 8.1, b.lat_deg, b.lon_deg)
    assert np.hypot(en - bn, ee - be).max() < 0.1
    np.testing.assert_allclose(h.project(b.lat_deg, b.lon_deg), test_px, atol=0.05)
    # above the horizon of the ground plane: no position
    sky = h.locate([[960, 0]])
    assert not sky.valid[0] and "horizon" in sky.reasons[0]


def test_homography_rejects_bad_gcps():
    with pytest.raises(ConfigError, match="at least 4"):
        GcpHomography.fit([GroundControlPoint(0, 0, 54, 7)] * 3)
    collinear = [GroundControlPoint(i * 100.0, i * 100.0, 54 + i * 1e-4, 7 + i * 1e-4) for i in range(4)]
    with pytest.raises(ConfigError):
        GcpHomography.fit(collinear)


def test_geo_benchmark_quick_run_meets_targets():
    """A small run of benchmarks/bench_geo.py: the accuracy targets hold (coverage needs the full run)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_geo.py"
    spec = importlib.util.spec_from_file_location("bench_geo", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(trials=8, seed=3)
    assert len(result["cells"]) == 24
    checks = {name: ok for name, ok, _ in bench.check(result)}
    assert checks["perfect telemetry: median <= 0.5 m in every cell"]
    assert checks["noisy, 100 m / 45 deg: median <= 5 m"]
    c = {(x["alt_m"], x["depression_deg"]): x for x in result["cells"]}
    # oblique views are worse than steep ones, as the geometry says
    assert c[(150.0, 15.0)]["noisy_median_m"] > 2 * c[(150.0, 90.0)]["noisy_median_m"]


@pytest.mark.parametrize("frame", ["body", "horizon", "earth"])
def test_attitude_sigma_counts_in_every_gimbal_frame(frame):
    loc = GeoLocator(K, sigmas=PoseSigmas(attitude_deg=0.5, horizontal_m=0.0, vertical_m=0.0, timing_s=0.0, pixel_px=0.0))
    g = loc.locate(CENTRE, CameraPose(54.0, 7.0, 100.0, gimbal_pitch_deg=-45.0, gimbal_frame=frame))
    # along the view: h / sin^2(45) * 0.5 deg = 1.745 m (one sigma)
    assert g.semi_major_m[0] == pytest.approx(math.sqrt(5.991) * 1.745, rel=0.03)


def test_curved_sea_for_a_far_shore_camera():
    """A camera 25 m up looking at a sea point 3 km away: the flat-earth answer would be ~80 m short."""
    h, s_m = 25.0, 3000.0
    r = earth_radius_m(54.0)
    theta = s_m / r
    depression = math.degrees(math.atan((h + r * (1 - math.cos(theta))) / (r * math.sin(theta))))
    loc = GeoLocator(K, sigmas=PERFECT)
    pose = CameraPose(54.0, 7.0, h, gimbal_pitch_deg=-depression, gimbal_yaw_deg=30.0, gimbal_frame="earth")
    g = loc.locate(CENTRE, pose)
    _, _, dist = __import__("pyproj").Geod(ellps="WGS84").inv(7.0, 54.0, g.lon_deg[0], g.lat_deg[0])
    assert dist == pytest.approx(s_m, abs=0.05)
    assert h / math.tan(math.radians(depression)) < s_m - 70  # what a flat earth would have said
    px, inside = loc.project(g.lat_deg, g.lon_deg, 0.0, pose)
    np.testing.assert_allclose(px, CENTRE, atol=1e-6)
    # just below the horizontal but above the sea horizon (dip 0.16 deg at 25 m): no intersection
    above = loc.locate(CENTRE, CameraPose(54.0, 7.0, h, gimbal_pitch_deg=-0.1, gimbal_frame="earth"))
    assert not above.valid[0] and "horizon" in above.reasons[0]
    below = loc.locate(CENTRE, CameraPose(54.0, 7.0, h, gimbal_pitch_deg=-0.25, gimbal_frame="earth"))
    tan_d = math.tan(math.radians(0.25))
    expected = (tan_d - math.sqrt(tan_d**2 - 2 * h / r)) * r  # d tan(dep) = h + d^2 / 2R, near root
    assert below.valid[0] and below.range_m[0] == pytest.approx(expected, rel=2e-3)  # flat earth: 5.7 km
