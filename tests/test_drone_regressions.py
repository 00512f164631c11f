"""Regressions of the s17 drone audit: operator abort vs patrol repeat, per-component boot clocks, GPS fix loss,
out-of-range positions, component filtering, CAMERA_INFORMATION without a height, and multi-vehicle links.

Hand-made MAVLink messages go through ``MavlinkLink._handle`` (the code path live links and replays share); the
fleet and multi-vehicle cases fly the built-in simulator over UDP on ports 18640-18659.
"""

from __future__ import annotations

import math
import time

import pytest
from pydantic import ValidationError
from pymavlink.dialects.v20 import ardupilotmega as mavlink

from seawatch.drone.config import DroneConfig
from seawatch.drone.geometry import CameraIntrinsics, GeoLocator
from seawatch.drone.geotag import geotag
from seawatch.drone.link import MavlinkLink
from seawatch.drone.pose import AttitudeSample, PoseTimeline, PositionSample
from seawatch.drone.sim import SimVehicle
from seawatch.errors import ConfigError, InputError, TelemetryError
from test_drone_dronekit import _until

T0 = 1_700_000_000.0
NS = 1_000_000_000


class _Sink:
    def write(self, b) -> None:
        pass


def _enc(sysid: int, comp: int):
    m = mavlink.MAVLink(_Sink(), srcSystem=sysid, srcComponent=comp)
    m.robust_parsing = True
    return m


def _feed(link: MavlinkLink, mav, name: str, t_s: float, *args):
    """Encode, pack and parse one message (as it would arrive), stamped ``t_s``, and hand it to the link."""
    msg = getattr(mav, name + "_encode")(*args)
    parsed = mavlink.MAVLink(_Sink()).decode(bytearray(msg.pack(mav)))
    parsed._timestamp = t_s
    link._handle(parsed)
    return parsed


AP, GIMBAL, CAMERA = _enc(1, 1), _enc(1, 154), _enc(1, 100)


def _vehicle(link, t, boot_ms, lat=54.0, lon=7.0, relalt_mm=100_000, yaw=0.0):
    _feed(link, AP, "heartbeat", t, 2, 3, 1 | 128 | 64, 4, 4)
    _feed(link, AP, "global_position_int", t, boot_ms, int(lat * 1e7), int(lon * 1e7), relalt_mm, relalt_mm, 0, 0, 0, 0)
    _feed(link, AP, "attitude", t, boot_ms, 0.0, 0.0, yaw, 0.0, 0.0, 0.0)


def _gps(link, t, fix_type, h_acc_mm=0):
    _feed(link, AP, "gps_raw_int", t, 0, fix_type, 0, 0, 0, 120, 65535, 65535, 65535, 10, 0, h_acc_mm, 0, 0, 0)


# ---- 2. one boot-clock offset per component ---------------------------------------------------------------------
@pytest.mark.parametrize("skew_ms", [-20_000, -2_000, 2_000])
def test_gimbal_with_its_own_boot_clock_does_not_shift_vehicle_times(skew_ms, caplog):
    link = MavlinkLink("x.tlog")
    q = [math.cos(math.radians(-45) / 2), 0.0, math.sin(math.radians(-45) / 2), 0.0]  # gimbal pitch -45
    with caplog.at_level("INFO", logger="seawatch.drone.link"):
        for i in range(50):  # 5 s at 10 Hz, every message received with no delay
            t = T0 + i * 0.1
            _vehicle(link, t, 60_000 + i * 100)
            _feed(link, GIMBAL, "gimbal_device_attitude_status", t, 0, 0, 60_000 + skew_ms + i * 100, 4 | 8 | 32, q,
                  math.nan, math.nan, math.nan, 0)
    t_last = int(round((T0 + 4.9) * NS))
    assert abs(link.timeline._pos.times[-1] - t_last) < 1_000_000  # within 1 ms of its receive time
    assert abs(link.timeline._gim.times[-1] - t_last) < 1_000_000
    fix = link.timeline.pose_at(t_last)
    assert not fix.stale and fix.pose.gimbal_pitch_deg == pytest.approx(-45.0, abs=0.01)
    assert not [r for r in caplog.records if "rebooted" in r.getMessage()]


# ---- 3. GPS fix quality ----------------------------------------------------------------------------------------
def test_gps_fix_lost_makes_the_pose_stale_and_h_acc_widens_the_ellipse():
    loc = GeoLocator(CameraIntrinsics.from_fov(640, 480, 60.0), 0.0)

    def run(fix_type, h_acc_mm=0):
        link = MavlinkLink("x.tlog")
        for i in range(20):
            t = T0 + i * 0.1
            _vehicle(link, t, 60_000 + i * 100)
            _gps(link, t, fix_type, h_acc_mm)
        t = int((T0 + 1.85) * NS)
        gp, fix = geotag(loc, link.timeline, [[320, 240]], t)
        return link, gp, fix

    link, gp, fix = run(1)  # no fix, GLOBAL_POSITION_INT keeps coming (EKF dead reckoning)
    assert link.state.gps_fix_type == 1
    assert fix.stale and fix.pose is None and "GPS fix lost" in fix.reason and not gp.valid[0]
    assert link.timeline._pos.samples[-1].fix_type == 1
    _, gp2d, fix2d = run(2)
    assert fix2d.stale and "2D fix" in fix2d.reason
    _, gp3d, fix3d = run(3)
    assert not fix3d.stale and gp3d.valid[0]
    _, gp_bad, fix_bad = run(3, h_acc_mm=25_000)  # a 3D fix reporting 25 m horizontal accuracy
    assert not fix_bad.stale and fix_bad.pose.horizontal_sigma_m == pytest.approx(25.0)
    assert gp_bad.semi_major_m[0] > 5 * gp3d.semi_major_m[0]


def test_positions_before_any_gps_report_are_not_flagged():
    """Logs without GPS_RAW_INT (fix unknown) geotag as before."""
    link = MavlinkLink("x.tlog")
    for i in range(10):
        _vehicle(link, T0 + i * 0.1, 60_000 + i * 100)
    fix = link.timeline.pose_at(int((T0 + 0.85) * NS))
    assert not fix.stale and link.timeline._pos.samples[-1].fix_type is None


# ---- 4. out-of-range positions ----------------------------------------------------------------------------------
def test_out_of_range_latitude_is_bad_data_and_never_buffered():
    link = MavlinkLink("x.tlog")
    for i in range(5):
        _vehicle(link, T0 + i * 0.1, 60_000 + i * 100, lat=95.0 if i == 4 else 54.0)
    _vehicle(link, T0 + 0.5, 60_500, lon=200.0)
    assert link.counters.bad_data == 2
    assert link.timeline.counts["position"] == 4 and link.state.lat_deg == 54.0 and link.state.lon_deg == 7.0
    fix = link.timeline.pose_at(int((T0 + 0.45) * NS))
    assert fix.pose is not None and fix.pose.lat_deg == pytest.approx(54.0)


def test_timeline_rejects_out_of_range_and_pose_at_never_raises():
    tl = PoseTimeline("d")
    with pytest.raises(InputError):
        tl.add_position(PositionSample(0, 95.0, 7.0, 10.0))
    with pytest.raises(InputError):
        tl.add_position(PositionSample(0, 54.0, -181.0, 10.0))
    # a sample that got into the buffer some other way: stale with a reason, not an exception
    tl._pos.add(PositionSample(0, 95.0, 7.0, 10.0))
    tl.add_attitude(AttitudeSample(0, 0.0, 0.0, 0.0))
    fix = tl.pose_at(0)
    assert fix.stale and fix.pose is None and "invalid telemetry" in fix.reason


# ---- 5. vehicle state only from the autopilot component ------------------------------------------------------------
def test_attitude_from_another_component_of_the_vehicle_is_ignored():
    link = MavlinkLink("x.tlog")
    for i in range(10):
        t = T0 + i * 0.1
        _vehicle(link, t, 60_000 + i * 100, yaw=0.0)
        _feed(link, GIMBAL, "attitude", t + 0.05, 60_000 + i * 100 + 50, 0.0, math.radians(-45), math.radians(90), 0, 0, 0)
        _feed(link, GIMBAL, "global_position_int", t + 0.05, 60_000 + i * 100 + 50, int(10e7), int(20e7), 0, 0, 0, 0, 0, 0)
    assert link.timeline.counts["attitude"] == 10 and link.timeline.counts["position"] == 10
    fix = link.timeline.pose_at(int((T0 + 0.95) * NS))
    assert fix.pose.yaw_deg == pytest.approx(0.0, abs=1e-6) and fix.pose.pitch_deg == pytest.approx(0.0, abs=1e-6)
    assert link.state.lat_deg == 54.0


def test_explicit_target_system_learns_the_autopilot_component():
    link = MavlinkLink("x.tlog", target_system=1)
    other = _enc(1, 191)  # a companion computer's attitude before the autopilot is heard
    _feed(link, other, "attitude", T0, 1000, 0.0, 0.5, 1.0, 0, 0, 0)
    for i in range(5):
        _vehicle(link, T0 + 0.1 * (i + 1), 60_000 + i * 100)
    assert link.target_component == 1 and link.timeline.counts["attitude"] == 5


# ---- 7. CAMERA_INFORMATION with an unknown height, errors inside a handler -----------------------------------------
def test_camera_information_with_unknown_height_is_not_an_exception():
    link = MavlinkLink("x.tlog")
    _feed(link, CAMERA, "camera_information", T0, 1000, b"vendor".ljust(32, b"\0"), b"model".ljust(32, b"\0"), 0,
          4.5, 6.17, 4.55, 1920, 0, 0, 0, 0, b"")
    assert link.state.camera is None and link.counters.messages == 1


def test_a_seawatch_error_in_a_handler_is_counted_and_waiters_still_get_the_message(monkeypatch):
    link = MavlinkLink("x.tlog")

    def boom(msg, recv_ns):
        raise ConfigError("camera intrinsics: bad")

    monkeypatch.setattr(link, "_on_camera_information", boom)
    with link.expect(["CAMERA_INFORMATION"]) as w:
        _feed(link, CAMERA, "camera_information", T0, 1000, b"v".ljust(32, b"\0"), b"m".ljust(32, b"\0"), 0,
              4.5, 6.17, 4.55, 1920, 1080, 0, 0, 0, b"")
        assert w.get(0.1) is not None
    assert link.counters.bad_data == 1


# ---- 6. several vehicles on one link ------------------------------------------------------------------------------
def test_command_ack_from_another_system_is_not_taken(monkeypatch):
    link = MavlinkLink("x.tlog")
    _vehicle(link, T0, 1000)  # target system 1
    other = _enc(2, 1)
    acks: list[tuple] = []

    def send(fn_name, *args):  # the vehicles answer: system 2 first (accepted), then maybe system 1
        for mav, result in acks:
            _feed(link, mav, "command_ack", time.time(), 176, result)

    monkeypatch.setattr(link, "send", send)
    acks[:] = [(other, 0)]
    with pytest.raises(TelemetryError, match="no COMMAND_ACK"):
        link.command_long(176, [1, 9], timeout_s=0.05, retries=0)
    acks[:] = [(other, 0), (AP, 4)]
    assert link.command_long(176, [1, 9], timeout_s=0.5, retries=0) == 4  # system 1's own answer: FAILED


def test_drone_config_target_system_reaches_the_link():
    d = DroneConfig.model_validate({"id": "d1", "connection": "udp:127.0.0.1:18640", "target_system": 3,
                                    "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 60}})
    assert d.build_link().target_system == 3
    with pytest.raises(ValidationError):
        DroneConfig.model_validate({"id": "d1", "connection": "udp:1.2.3.4:5", "target_system": 0,
                                    "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 60}})


def test_simulator_ignores_commands_for_another_system():
    from seawatch.drone.link import mavutil

    sim = SimVehicle("udpout:127.0.0.1:18641", system_id=1).start()
    gcs = mavutil().mavlink_connection("udpin:127.0.0.1:18641", source_system=255, source_component=190)
    try:
        assert gcs.recv_match(type="HEARTBEAT", blocking=True, timeout=5) is not None  # learn the sim's address
        gcs.mav.command_long_send(2, 1, 176, 0, 1, 9, 0, 0, 0, 0, 0)  # LAND for system 2
        ack = gcs.recv_match(type="COMMAND_ACK", blocking=True, timeout=1.0)
        assert ack is None and sim.mode == "STABILIZE"
        gcs.mav.command_long_send(1, 1, 176, 0, 1, 9, 0, 0, 0, 0, 0)  # LAND for system 1
        ack = gcs.recv_match(type="COMMAND_ACK", blocking=True, timeout=2.0)
        assert ack is not None and ack.result == 0 and sim.mode == "LAND"
    finally:
        gcs.close()
        sim.stop()


def test_abort_cli_takes_the_system_id():
    from seawatch.cli import main

    sim = SimVehicle("udpout:127.0.0.1:18642", system_id=7).start()
    try:
        assert main(["drone", "abort", "udp:127.0.0.1:18642", "--system", "7", "--mode", "LOITER"]) == 0
        assert sim.mode == "LOITER"
    finally:
        sim.stop()


# ---- 1. fleet patrols: an abort is never re-launched -----------------------------------------------------------------
def _runner(port: int, speed: float = 10.0, **drone_over):
    from seawatch.service.config import FleetDroneConfig
    from seawatch.service.fleet import DroneRunner

    d = {"id": "d1", "connection": f"udp:127.0.0.1:{port}", "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 60},
         "routes": {"r": {"type": "points", "points_lonlat": [[7.0, 54.0], [7.0003, 54.0]], "alt_m": 6}}}
    d.update(drone_over)
    drone = DroneConfig.model_validate(d)
    ops = FleetDroneConfig.model_validate({"drone": "d1", "sim": {"speed": speed}, "patrol": "r", "link_timeout_s": 5})
    assert ops.repeat  # the default
    return DroneRunner(drone, ops)


@pytest.mark.slow
def test_operator_abort_is_never_relaunched_until_restarted():
    r = _runner(18650).start()
    try:
        _until(lambda: r.patrol_state == "flying" and (r.link.state.alt_rel_m or 0) > 3, 60, "the patrol flying")
        r.mission.abort("RTL")  # what `seawatch drone abort` does, not through the service
        _until(lambda: r.link.state.armed is False, 60, "landed and disarmed after the RTL")
        time.sleep(2.0)  # ~20 s simulated on the ground
        st = r.status()
        assert r.patrols_started == 1 and r.link.state.armed is False
        assert st["patrol_state"] == "aborted" and "RTL" in st["patrol_reason"]
        r.restart_patrol()  # the explicit restart
        _until(lambda: r.patrols_started == 2 and r.link.state.armed, 30, "the patrol restarted")
        assert r.status()["patrol_state"] == "flying"
        r.abort_patrol("LAND")  # the service's own abort latches too
        _until(lambda: r.link.state.armed is False, 60, "landed after the service's LAND")
        time.sleep(1.5)
        assert r.patrols_started == 2 and r.patrol_state == "aborted"
    finally:
        r.stop()


def test_abort_on_the_ground_stops_the_patrol_and_sends_no_mode():
    """A drone on the ground, disarmed, its patrol held for battery: the operator's abort ("Stop patrol" in the UI)
    keeps the patrol from being flown when the battery is back, and sends the vehicle no RTL (nothing to fly home;
    it was sent one before, a mode the parked vehicle then sat in)."""
    r = _runner(18654, patrol_min_battery_pct=90).start()  # the simulator reports 87 %
    try:
        _until(lambda: r.patrol_state == "held" and r.link.state.armed is False, 30, "the patrol held on the ground")
        mode = r.link.state.mode
        assert r.abort_patrol("RTL") is False
        assert r.patrol_state == "aborted" and "RTL" in r.patrol_reason
        r.sim.battery_pct = 95
        time.sleep(1.5)  # ~15 s simulated: a held patrol would have started by now
        assert r.sim.mode == mode != "RTL" and r.link.state.mode == mode
        assert r.patrols_started == 0 and r.patrol_state == "aborted" and r.sim.armed is False
    finally:
        r.stop()


@pytest.mark.slow
def test_complete_patrol_repeats_only_with_battery_and_without_failsafe():
    r = _runner(18651, speed=20.0)
    r.start()
    try:
        _until(lambda: r.patrol_state == "flying", 60, "the patrol flying")
        _until(lambda: r.patrol_state == "complete", 60, "the patrol's last item reached")
        r.sim.battery_pct = 20
        _until(lambda: r.patrol_state == "held", 60, "the repeat held after landing")
        assert r.patrols_started == 1 and "battery 20 %" in r.status()["patrol_reason"]
        r.sim.battery_pct = 95
        r.sim.failsafe = True
        _until(lambda: "failsafe" in (r.patrol_reason or ""), 10, "the repeat held for the failsafe")
        assert r.patrols_started == 1
        r.sim.failsafe = False
        _until(lambda: r.patrols_started == 2, 30, "the repeat once battery and failsafe are fine")
        _until(lambda: r.patrol_state == "flying" and r.link.state.armed, 30, "flying again")
        r.sim.failsafe = True  # a failsafe in flight aborts the patrol
        _until(lambda: r.patrol_state == "aborted", 10, "aborted by the failsafe")
        assert "failsafe" in r.status()["patrol_reason"]
    finally:
        r.stop()


@pytest.mark.slow
def test_patrol_is_not_started_on_a_vehicle_someone_else_is_flying():
    """A vehicle already in the air when the service links up is another pilot's flight: no mission upload, no mode
    change, until it lands and disarms, or the operator's restart takes it over."""
    from seawatch.service.config import FleetDroneConfig
    from seawatch.service.fleet import DroneRunner

    for take_over in (False, True):
        port = 18652 + take_over
        sim = SimVehicle(f"udpout:127.0.0.1:{port}", home=(54.0, 7.0, 0.0), speed=10.0)
        sim.h, sim.armed, sim.mode = 15.0, True, "LOITER"  # the pilot's flight
        sim.start()
        drone = DroneConfig.model_validate({
            "id": "d1", "connection": f"udp:127.0.0.1:{port}", "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 60},
            "routes": {"r": {"type": "points", "points_lonlat": [[7.0, 54.0], [7.0003, 54.0]], "alt_m": 6}}})
        ops = FleetDroneConfig.model_validate({"drone": "d1", "sim": False, "patrol": "r", "link_timeout_s": 5})
        r = DroneRunner(drone, ops).start()
        try:
            _until(lambda: r.patrol_state == "held", 30, "the patrol held")
            assert "already armed" in r.status()["patrol_reason"]
            time.sleep(1.5)
            assert r.patrols_started == 0 and sim.mode == "LOITER" and len(sim.mission) == 1  # home only: no upload
            if take_over:
                r.restart_patrol()
            else:
                sim.mode, sim.h, sim.armed = "LAND", 0.0, False  # the pilot lands
            _until(lambda: r.patrols_started == 1 and r.patrol_state == "flying", 30, "the patrol started")
            assert sim.mode == "AUTO" and len(sim.mission) > 1
        finally:
            r.stop()
            sim.stop()
