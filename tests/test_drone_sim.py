"""End to end against ground truth: simulated telemetry over MAVLink + rendered frames -> detection -> geotag.

The simulator flies a patrol leg over targets at known lat/lon and renders what its camera sees; the test
detects the targets in the pixels (a colour threshold stands in for the detector: drone must not import
vision), takes the pose from the link's timeline at each frame's capture time, geolocates, and compares with
the truth.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from seawatch.drone import mission as M
from seawatch.drone.geometry import GeoLocator, PoseSigmas, inside_ellipse, latlon_to_offsets, offsets_to_latlon
from seawatch.drone.link import MavlinkLink
from seawatch.drone.sim import SimTarget, SimVehicle, render_frame
from conftest import free_udp_port as _free_port

cv2 = pytest.importorskip("cv2")

HOME = (54.0, 7.0, 0.0)
TARGET_NE = [(15.0, -8.0), (25.0, 10.0), (40.0, 0.0), (55.0, -12.0), (65.0, 9.0)]


def _targets():
    out = []
    for i, (n, e) in enumerate(TARGET_NE):
        la, lo = offsets_to_latlon(HOME[0], HOME[1], n, e)
        out.append(SimTarget(f"boat{i}", float(la[0]), float(lo[0]), radius_m=1.5))
    return out


def _detect_red(img: np.ndarray, min_area_px: int = 12) -> np.ndarray:
    mask = ((img[:, :, 2] > 200) & (img[:, :, 0] < 60) & (img[:, :, 1] < 60)).astype(np.uint8)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    h, w = mask.shape
    keep = []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if area >= min_area_px and x > 0 and y > 0 and x + bw < w and y + bh < h:  # whole blob in view
            keep.append(centroids[i] + 0.5)  # pixel centres are at +0.5
    return np.asarray(keep).reshape(-1, 2)


def test_render_matches_projection():
    """The renderer and geometry agree: a target is drawn where ``project`` puts it."""
    sim_targets = _targets()
    from seawatch.drone.geometry import CameraIntrinsics, CameraPose

    k = CameraIntrinsics(640, 480, 460.0, 460.0, 321.0, 239.0, k1=-0.08, k2=0.02)
    pose = CameraPose(HOME[0], HOME[1], 35.0, 0.0, -3.0, 10.0, 0.0, -60.0, 0.0, "horizon")
    img = render_frame(pose, k, sim_targets, HOME[:2])
    blobs = _detect_red(img)
    loc = GeoLocator(k)
    px, inside = loc.project([t.lat_deg for t in sim_targets], [t.lon_deg for t in sim_targets], 0.0, pose)
    assert inside.sum() >= 3 and len(blobs) == inside.sum()
    for p in px[inside]:
        assert np.min(np.hypot(*(blobs - p).T)) < 1.0
    # sky above the horizon at the top of an oblique view
    oblique = render_frame(CameraPose(HOME[0], HOME[1], 35.0, gimbal_pitch_deg=-5.0, gimbal_frame="horizon"), k)
    assert oblique[0].mean(axis=0)[0] > 200 and oblique[-1].mean(axis=0)[0] < 160


@pytest.mark.slow
@pytest.mark.parametrize("gimbal_pitch_deg", [-90.0, -55.0])
def test_end_to_end_geotag_against_truth(gimbal_pitch_deg):
    port = _free_port()
    sim = SimVehicle(f"udpout:127.0.0.1:{port}", home=HOME, speed=1.0, telemetry_hz=20.0, targets=_targets(),
                     gimbal_pitch_deg=gimbal_pitch_deg)
    # start airborne at 40 m so the test flies only the patrol leg
    sim.h, sim.armed, sim.mode, sim.guided_target = 40.0, True, "GUIDED", (-25.0, 0.0, 40.0)
    sim.n = -25.0 if gimbal_pitch_deg == -90.0 else -60.0
    sim.guided_target = (sim.n, 0.0, 40.0)
    sim.start()
    link = MavlinkLink(f"udpin:127.0.0.1:{port}").open(5.0)
    try:
        msg = link.request(259, "CAMERA_INFORMATION")
        assert msg is not None
        camera = link.state.camera
        assert camera.width_px == 640 and camera.fx_px == pytest.approx(sim.camera.fx_px, rel=1e-3)
        leg = M.points([tuple(np.ravel(offsets_to_latlon(HOME[0], HOME[1], 90.0, 0.0)))], alt_m=40.0)
        mc = M.MissionClient(link)
        mc.upload(M.to_mission_items(leg, home=HOME, speed_m_s=8.0, return_to_launch=False))
        mc.start()
        link.wait_until(lambda s: (s.velocity_ned_m_s or (0, 0, 0))[0] > 7.0, 10.0, "cruise north")
        loc = GeoLocator(camera, surface_alt_m=0.0,
                         sigmas=PoseSigmas(attitude_deg=0.1, horizontal_m=0.1, vertical_m=0.1, timing_s=0.005,
                                           pixel_px=1.0))
        frames = []
        for _ in range(16):
            frames.append(sim.capture())
            time.sleep(0.25)
        time.sleep(0.2)  # let the telemetry after the last frame arrive
        errors, pose_err, covered, checked = [], [], 0, 0
        truth_lat = np.array([t.lat_deg for t in sim.targets])
        truth_lon = np.array([t.lon_deg for t in sim.targets])
        for capture_ns, img, truth_pose in frames:
            fix = link.timeline.pose_at(capture_ns)
            assert not fix.stale, fix.reason
            dn, de = latlon_to_offsets(truth_pose.lat_deg, truth_pose.lon_deg, fix.pose.lat_deg, fix.pose.lon_deg)
            pose_err.append(float(np.hypot(dn[0], de[0])))
            blobs = _detect_red(img)
            if len(blobs) == 0:
                continue
            g = loc.locate(blobs, fix.pose)
            assert g.valid.all()
            for i in range(len(blobs)):
                en, ee = latlon_to_offsets(float(g.lat_deg[i]), float(g.lon_deg[i]), truth_lat, truth_lon)
                d = np.hypot(en, ee)
                j = int(np.argmin(d))
                errors.append(float(d[j]))
                covered += bool(inside_ellipse(en[j : j + 1], ee[j : j + 1], g.cov_ne_m2[i : i + 1])[0])
                checked += 1
        errors = np.asarray(errors)
        assert len(errors) >= 10, f"only {len(errors)} detections"
        assert np.median(pose_err) < 0.15 and max(pose_err) < 0.4
        assert np.median(errors) < 0.3 and errors.max() < 1.0
        assert covered / checked >= 0.9
    finally:
        link.close()
        sim.stop()


def test_dronekit_sees_an_ardupilot_vehicle():
    """Cross-check the simulator with a third-party GCS library (dronekit2, import name ``dronekit``).

    dronekit's ``connect`` needs heartbeat, a mode, PARAM_VALUEs (else it hangs forever), GPS_RAW_INT and
    ATTITUDE; its mission download needs home as item 0. If the simulator drifted from ArduPilot, this fails.
    """
    from conftest import has_module, missing

    if not has_module("dronekit"):
        missing("dronekit2 is not installed (pip install -e '.[test]')")
    from dronekit import VehicleMode, connect

    port = _free_port()
    with SimVehicle(f"udpout:127.0.0.1:{port}", home=HOME, speed=2.0) as sim:
        v = connect(f"udpin:127.0.0.1:{port}", wait_ready=True, timeout=20, heartbeat_timeout=10)
        try:
            assert v.mode.name == "STABILIZE" and len(v.parameters) == len(sim.params)
            assert v.gps_0.fix_type == 3
            v.mode = VehicleMode("GUIDED")
            v.armed = True
            deadline = time.monotonic() + 10
            while not v.armed and time.monotonic() < deadline:
                time.sleep(0.1)
            assert v.armed and v.mode.name == "GUIDED"
            v.simple_takeoff(6)
            while (v.location.global_relative_frame.alt or 0) < 5.5 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert v.location.global_relative_frame.alt >= 5.5
            assert v.location.global_frame.lat == pytest.approx(HOME[0], abs=1e-6)
            v.commands.download()
            v.commands.wait_ready(timeout=10)
            assert v.home_location.lat == pytest.approx(HOME[0], abs=1e-6)
        finally:
            v.close()
