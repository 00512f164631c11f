"""Pose timeline: interpolation to frame times, latency offset, staleness with reasons."""

from __future__ import annotations

import math

import numpy as np

import pytest

from seawatch.drone.geometry import latlon_to_offsets, offsets_to_latlon
from seawatch.drone.pose import AttitudeSample, GimbalSample, PoseTimeline, PositionSample
from seawatch.errors import ConfigError, InputError

S = 1_000_000_000
T0 = 1_700_000_000 * S


def _straight_line(tl: PoseTimeline, speed_m_s=10.0, n=11, dt_s=0.1):
    """Flying north at ``speed`` from (54, 7), yaw turning 10 deg/s through the 180/-180 wrap."""
    for i in range(n):
        t = T0 + int(i * dt_s * S)
        lat, lon = offsets_to_latlon(54.0, 7.0, speed_m_s * i * dt_s, 0.0)
        tl.add_position(PositionSample(t, float(lat[0]), float(lon[0]), 100.0 + i, (speed_m_s, 0.0, -10.0)))
        yaw = ((175.0 + 10.0 * i * dt_s + 180.0) % 360.0) - 180.0
        tl.add_attitude(AttitudeSample(t, 2.0 * i, 0.0, yaw))


def test_interpolates_position_linearly_and_attitude_by_slerp():
    tl = PoseTimeline()
    _straight_line(tl, dt_s=1.0)
    fix = tl.pose_at(T0 + int(2.5 * S))
    assert not fix.stale and fix.reason is None
    n, e = latlon_to_offsets(54.0, 7.0, fix.pose.lat_deg, fix.pose.lon_deg)
    assert n[0] == pytest.approx(25.0, abs=1e-6) and e[0] == pytest.approx(0.0, abs=1e-6)
    assert fix.pose.alt_m == pytest.approx(102.5)
    assert fix.pose.roll_deg == pytest.approx(5.0, abs=1e-6)
    assert fix.pose.yaw_deg == pytest.approx(-160.0, abs=1e-6)  # 175 + 25, wrapped
    # the yaw wraps between samples 0 (175) and 1 (-175): slerp goes through 180, not through 0
    mid = tl.pose_at(T0 + int(0.5 * S)).pose
    assert abs(abs(mid.yaw_deg) - 180.0) < 1e-6


def test_latency_offset_shifts_lookup():
    tl = PoseTimeline(latency_s=0.2)
    _straight_line(tl)
    fix = tl.pose_at(T0 + int(0.7 * S))
    assert fix.time_ns == T0 + int(0.5 * S)
    n, _ = latlon_to_offsets(54.0, 7.0, fix.pose.lat_deg, fix.pose.lon_deg)
    assert n[0] == pytest.approx(5.0, abs=1e-6)


def test_stale_when_telemetry_too_old_or_missing():
    tl = PoseTimeline(max_age_s=0.5)
    fix = tl.pose_at(T0)
    assert fix.stale and fix.pose is None and "no position telemetry" in fix.reason
    _straight_line(tl)  # samples 0 .. 1.0 s
    near = tl.pose_at(T0 + int(1.3 * S))  # 0.3 s after the newest: extrapolated along the velocity
    assert not near.stale
    n, _ = latlon_to_offsets(54.0, 7.0, near.pose.lat_deg, near.pose.lon_deg)
    assert n[0] == pytest.approx(13.0, abs=1e-6)
    assert near.pose.alt_m == pytest.approx(110.0 + 3.0)  # climbing 10 m/s (down = -10)
    old = tl.pose_at(T0 + int(2.0 * S))
    assert old.stale and "1.00 s older than the frame" in old.reason
    early = tl.pose_at(T0 - 3 * S)
    assert early.stale and "before the first position" in early.reason


def test_gap_in_telemetry_is_flagged():
    tl = PoseTimeline(max_gap_s=1.0, max_age_s=0.3)
    for t in (0.0, 0.1, 5.0, 5.1):
        tl.add_position(PositionSample(T0 + int(t * S), 54.0, 7.0, 50.0))
        tl.add_attitude(AttitudeSample(T0 + int(t * S), 0.0, 0.0, 0.0))
    fix = tl.pose_at(T0 + int(2.5 * S))
    assert fix.stale and "gap" in fix.reason and "4.90 s" in fix.reason
    # close to one side of the gap: that sample is used
    assert not tl.pose_at(T0 + int(0.3 * S)).stale


def test_attitude_missing_is_stale_and_out_of_order_samples_are_sorted():
    tl = PoseTimeline()
    tl.add_position(PositionSample(T0 + S, 54.0, 7.0, 50.0))
    tl.add_position(PositionSample(T0, 54.0, 7.0, 40.0))
    fix = tl.pose_at(T0 + S // 2)
    assert fix.stale and "attitude" in fix.reason
    tl.add_attitude(AttitudeSample(T0, 0.0, 0.0, 0.0))
    tl.add_attitude(AttitudeSample(T0 + S, 0.0, 0.0, 0.0))
    assert tl.pose_at(T0 + S // 2).pose.alt_m == pytest.approx(45.0)


def test_gimbal_default_and_telemetry():
    tl = PoseTimeline(default_gimbal=(0.0, -70.0, 0.0, "body"))
    _straight_line(tl)
    p = tl.pose_at(T0 + S // 2).pose
    assert (p.gimbal_pitch_deg, p.gimbal_frame) == (-70.0, "body")
    tl.add_gimbal(GimbalSample(T0, 0.0, -40.0, 0.0, "horizon"))
    tl.add_gimbal(GimbalSample(T0 + S, 0.0, -60.0, 0.0, "horizon"))
    p = tl.pose_at(T0 + S // 2).pose
    assert p.gimbal_pitch_deg == pytest.approx(-50.0, abs=1e-6) and p.gimbal_frame == "horizon"


def test_history_is_bounded_and_bad_input_rejected():
    tl = PoseTimeline(history_s=1.0)
    for i in range(100):
        tl.add_position(PositionSample(T0 + i * S // 10, 54.0, 7.0, 50.0))
    assert tl.counts["position"] == 11
    with pytest.raises(InputError):
        tl.add_position(PositionSample(T0, math.nan, 7.0, 50.0))
    with pytest.raises(ConfigError):
        PoseTimeline(max_age_s=0.0)


def test_geotag_stale_pose_gives_reason_and_fresh_pose_gives_positions():
    from seawatch.drone.geometry import CameraIntrinsics, GeoLocator
    from seawatch.drone.geotag import box_ground_points, geotag

    tl = PoseTimeline(default_gimbal=(0.0, -90.0, 0.0, "horizon"))
    _straight_line(tl)
    loc = GeoLocator(CameraIntrinsics.from_fov(640, 480, 70.0))
    boxes = [[300, 200, 340, 280], [0, 0, 10, 10]]
    pts = box_ground_points(boxes)
    assert pts.tolist() == [[320.0, 280.0], [5.0, 10.0]]
    g, fix = geotag(loc, tl, pts, T0 + S // 2)
    assert not fix.stale and g.valid.all() and np.isfinite(g.semi_major_m).all()
    g, fix = geotag(loc, tl, pts, T0 + 10 * S)
    assert fix.stale and not g.valid.any()
    assert g.reasons[0].startswith("no pose: drone: newest position telemetry")
