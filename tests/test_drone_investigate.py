""""Send a drone to look" in the fleet: a task interrupts the patrol, flies to the target, holds over it with the
gimbal down, returns and lands, against the built-in simulator over MAVLink (UDP on free ports, sped up); the mission
the vehicle holds is downloaded back and checked item by item; the patrol never comes back by itself; the safety
refusals leave the vehicle untouched; abort and restart. The HTTP side is in ``test_drone_investigate_api.py``."""

from __future__ import annotations

import math
import time

import pytest

from conftest import free_udp_port
from seawatch.drone import mission as M
from seawatch.drone.config import DroneConfig
from seawatch.drone.geometry import latlon_to_offsets, offsets_to_latlon
from seawatch.drone.sim import SimVehicle
from seawatch.service.fleet import DroneRunner, TaskRefused
from test_drone_dronekit import _until

HOME = (54.0, 7.0)
CAM = {"width_px": 640, "height_px": 480, "hfov_deg": 60}


def _at(north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` / ``east_m`` from home (lat, lon)."""
    la, lo = offsets_to_latlon(HOME[0], HOME[1], north_m, east_m)
    return float(la[0]), float(lo[0])


def _offset_m(sim: SimVehicle, lat: float, lon: float) -> float:
    """Horizontal distance of the simulated vehicle's true position from (lat, lon)."""
    p = sim.true_pose()
    dn, de = latlon_to_offsets(lat, lon, p.lat_deg, p.lon_deg)
    return math.hypot(float(dn[0]), float(de[0]))


def _runner(port: int, patrol: bool = True, speed: float = 10.0, sim: bool | dict = True, **drone_over) -> DroneRunner:
    from seawatch.service.config import FleetDroneConfig

    d = {"id": "d1", "connection": f"udp:127.0.0.1:{port}", "camera": CAM,
         "routes": {"r": {"type": "points", "points_lonlat": [[7.0, 54.0], [7.0006, 54.0], [7.0006, 54.0004]],
                          "alt_m": 10}}}
    d.update(drone_over)
    ops = {"drone": "d1", "patrol": "r" if patrol else None, "link_timeout_s": 5,
           "sim": ({"speed": speed, "home_lat_deg": HOME[0], "home_lon_deg": HOME[1]} if sim is True else sim)}
    return DroneRunner(DroneConfig.model_validate(d), FleetDroneConfig.model_validate(ops))


def _linked(r: DroneRunner) -> None:
    from seawatch.drone.link import LinkStatus

    _until(lambda: r.link is not None and r.link.status == LinkStatus.CONNECTED
           and r.link.state.lat_deg is not None and r.battery.get("remaining_pct") is not None, 30, "the link up")


@pytest.mark.slow
def test_task_interrupts_the_patrol_holds_over_the_target_and_lands_at_home():
    r = _runner(free_udp_port(), speed=10.0).start()
    try:
        _until(lambda: r.patrol_state == "flying" and (r.link.state.alt_rel_m or 0) > 5, 60, "the patrol flying")
        assert r.status()["task"] is None
        target = _at(150.0, -120.0)
        task = r.investigate(*target, alt_m=20.0, hold_s=40.0, event_id="ev-1", requested_by="user olga")
        st = r.status()
        assert st["patrol_state"] == "interrupted" and "olga" in st["patrol_reason"]
        assert not st["patrol_reason"].startswith("interrupted")  # the UI shows "interrupted: <reason>"
        t = st["task"]
        assert t["kind"] == "investigate" and t["state"] in ("flying", "holding") and t["event_id"] == "ev-1"
        assert (t["lat_deg"], t["lon_deg"], t["alt_m"], t["hold_s"]) == (target[0], target[1], 20.0, 40.0)
        assert r.sim.mode == "AUTO" and r.sim.armed

        # the mission the vehicle holds now: home, (no takeoff: it is flying), gimbal down, the target with its hold, RTL
        got = M.MissionClient(r.link).download()
        assert [it.command for it in got] == [M.MAV_CMD_NAV_WAYPOINT, M.MAV_CMD_DO_GIMBAL_MANAGER_PITCHYAW,
                                              M.MAV_CMD_NAV_WAYPOINT, M.MAV_CMD_NAV_RETURN_TO_LAUNCH]
        assert got[1].param1 == -90.0  # the drone's task_gimbal_pitch_deg default: straight down
        wp = got[2]
        assert wp.frame == M.MAV_FRAME_GLOBAL_RELATIVE_ALT and wp.param1 == 40.0 and wp.alt_m == 20.0
        assert abs(wp.lat_deg - target[0]) < 2e-7 and abs(wp.lon_deg - target[1]) < 2e-7
        assert task.wp_seq == 2 and [i.command for i in task.items] == [i.command for i in got]

        _until(lambda: r.status()["task"]["state"] == "holding", 60, "holding over the target")
        assert _offset_m(r.sim, *target) < 5.0 and abs(r.sim.h - 20.0) < 3.0
        # it stays there for the hold (40 s simulated = 4 s here): sample it
        offs = []
        while r.status()["task"]["state"] == "holding":
            offs.append(_offset_m(r.sim, *target))
            assert r.sim.gimbal_pitch_deg == -90.0
            time.sleep(0.2)
        assert len(offs) >= 5 and max(offs) < 3.0, offs
        assert r.status()["task"]["held_s"] >= 2.5
        assert r.status()["task"]["state"] in ("returning", "complete")
        _until(lambda: r.status()["task"]["state"] == "complete", 90, "the task complete (landed)")
        assert r.sim.armed is False and math.hypot(r.sim.n, r.sim.e) < 1.0 and r.sim.h == 0.0  # at home
        assert r.status()["task"]["reason"] is None
        time.sleep(2.0)  # ~20 s simulated on the ground: the patrol does not come back by itself
        assert r.patrols_started == 1 and r.patrol_state == "interrupted" and not r.sim.armed

        r.restart_patrol()  # the operator's restart flies the patrol again
        _until(lambda: r.patrols_started == 2 and r.patrol_state == "flying", 30, "the patrol flying again")
        assert r.status()["task"]["state"] == "complete"  # the last task stays in the status
        assert len(r.sim.mission) == 6  # the patrol's mission again: home, takeoff, 3 points, RTL
    finally:
        r.stop()


@pytest.mark.slow
def test_task_from_the_ground_takes_off_and_abort_ends_it():
    """A drone without a patrol: the task takes off, and the operator's abort (RTL) makes it ``aborted``."""
    r = _runner(free_udp_port(), patrol=False, speed=10.0).start()
    try:
        _linked(r)
        assert r.status()["patrol_state"] == "none" and r.link.state.home is None  # the task asks for it
        target = _at(-200.0, 60.0)
        r.investigate(*target, requested_by="key crew-tablet")  # the drone's defaults: 40 m, 60 s
        got = M.MissionClient(r.link).download()
        assert [it.command for it in got] == [M.MAV_CMD_NAV_WAYPOINT, M.MAV_CMD_NAV_TAKEOFF,
                                              M.MAV_CMD_DO_GIMBAL_MANAGER_PITCHYAW, M.MAV_CMD_NAV_WAYPOINT,
                                              M.MAV_CMD_NAV_RETURN_TO_LAUNCH]
        assert got[1].alt_m == 40.0 and got[3].alt_m == 40.0 and got[3].param1 == 60.0
        assert r.status()["patrol_state"] == "none"
        _until(lambda: (r.link.state.alt_rel_m or 0) > 10 and _offset_m(r.sim, *target) < 150, 60, "on its way")
        assert r.status()["task"]["state"] == "flying"
        r.abort_patrol("RTL")
        t = r.status()["task"]
        assert t["state"] == "aborted" and t["reason"] == "aborted by the operator (RTL)"
        _until(lambda: r.sim.armed is False, 90, "landed after the RTL")
        assert math.hypot(r.sim.n, r.sim.e) < 1.0
        assert r.status()["task"]["state"] == "aborted"
    finally:
        r.stop()


@pytest.mark.slow
def test_a_mode_change_by_someone_else_aborts_the_task_and_the_vehicle_is_theirs():
    r = _runner(free_udp_port(), patrol=False, speed=10.0).start()
    try:
        _linked(r)
        r.investigate(*_at(100.0, 0.0), alt_m=15.0, hold_s=5.0)
        _until(lambda: (r.link.state.alt_rel_m or 0) > 5, 30, "airborne")
        r.sim._set_mode(5)  # LOITER from a transmitter
        _until(lambda: r.status()["task"]["state"] == "aborted", 10, "the task aborted")
        assert "LOITER" in r.status()["task"]["reason"] and "not by the service" in r.status()["task"]["reason"]
        with pytest.raises(TaskRefused, match="another pilot") as e:  # the pilot has it now
            r.investigate(*_at(50.0, 0.0))
        assert e.value.kind == "vehicle" and r.sim.mode == "LOITER"
    finally:
        r.stop()


# ---- safety refusals ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grounded():
    """A simulated drone on the ground, linked, no patrol; an L-shaped operating area (concave): a strip 200 m wide
    from 100 m east of home to 600 m west, and an arm from its west end 800 m north."""
    corners_ne = [(-100, -600), (-100, 100), (100, 100), (100, -400), (800, -400), (800, -600)]
    area = [[lo, la] for la, lo in (_at(n, e) for n, e in corners_ne)]
    r = _runner(free_udp_port(), patrol=False, speed=10.0, max_task_range_m=1000.0, operating_area_lonlat=area,
                task_min_alt_m=15.0, task_max_alt_m=80.0).start()
    try:
        _linked(r)
        yield r
    finally:
        r.stop()


def _untouched(r: DroneRunner) -> None:
    assert r.sim.armed is False and len(r.sim.mission) == 1 and r.sim.mode == "STABILIZE"
    assert r.status()["task"] is None


@pytest.mark.parametrize("target, kw, kind, words", [
    (_at(0.0, 1100.0), {}, "target", "farther than its max_task_range_m (1000 m)"),
    (_at(-700.0, 0.0), {}, "target", "outside the drone's operating area"),
    # in the L's arm, but the straight leg from home cuts across the inside corner, outside the area
    (_at(700.0, -500.0), {}, "target", "leg between home and the target"),
    (_at(100.0, 0.0), {"alt_m": 10.0}, "target", "outside the drone's task limits (15 to 80 m"),
    (_at(100.0, 0.0), {"alt_m": 81.0}, "target", "outside the drone's task limits"),
    (_at(100.0, 0.0), {"hold_s": -1.0}, "target", "hold -1 s"),
    ((float("nan"), 7.0), {}, "target", "not a valid latitude"),
])
def test_targets_out_of_bounds_are_refused(grounded, target, kw, kind, words):
    with pytest.raises(TaskRefused) as e:
        grounded.investigate(*target, **kw)
    assert e.value.kind == kind and words in str(e.value), str(e.value)
    _untouched(grounded)


def test_a_target_inside_the_area_and_range_passes_the_target_checks(grounded):
    home = grounded.link.request(242, "HOME_POSITION") and grounded.link.state.home
    assert home is not None
    assert grounded._target_problem(*_at(50.0, -550.0), home, grounded.link.state) is None  # the strip's far end
    assert grounded._target_problem(*_at(-90.0, 90.0), home, grounded.link.state) is None
    # the point the parametrised case refuses for its leg: the leg is the reason, not the point
    assert "leg" in grounded._target_problem(*_at(700.0, -500.0), home, grounded.link.state)


@pytest.mark.parametrize("knob, value, words", [
    ("battery_pct", 20, "battery 20 % is below the 50 % needed to start a task"),
    ("failsafe", True, "failsafe active (system status CRITICAL)"),
])
def test_battery_and_failsafe_refuse_a_task(grounded, knob, value, words):
    old = getattr(grounded.sim, knob)
    setattr(grounded.sim, knob, value)
    try:
        want = (lambda: grounded.battery.get("remaining_pct") == value) if knob == "battery_pct" else \
            (lambda: grounded.link.state.system_status == 5)
        _until(want, 10, f"the vehicle reporting {knob}={value}")
        with pytest.raises(TaskRefused) as e:
            grounded.investigate(*_at(50.0, -100.0))  # a target it could fly to otherwise
        assert e.value.kind == "vehicle" and words in str(e.value), str(e.value)
        _untouched(grounded)
    finally:
        setattr(grounded.sim, knob, old)
        _until(lambda: grounded.battery.get("remaining_pct") == 87 and grounded.link.state.system_status != 5, 10,
               "the vehicle healthy again")


@pytest.mark.slow
def test_a_vehicle_someone_else_is_flying_is_refused():
    port = free_udp_port()
    sim = SimVehicle(f"udpout:127.0.0.1:{port}", home=(HOME[0], HOME[1], 0.0), speed=10.0)
    sim.h, sim.armed, sim.mode = 15.0, True, "LOITER"  # the pilot's flight
    sim.start()
    r = _runner(port, patrol=False, sim=False).start()
    try:
        _linked(r)
        with pytest.raises(TaskRefused, match="vehicle armed under another pilot's control") as e:
            r.investigate(*_at(100.0, 0.0))
        assert e.value.kind == "vehicle"
        time.sleep(0.5)
        assert sim.mode == "LOITER" and sim.armed and len(sim.mission) == 1  # untouched
        sim.mode, sim.h, sim.armed = "LAND", 0.0, False  # the pilot lands: the vehicle is free
        _until(lambda: r.link.state.armed is False, 10, "seen disarmed")
        sim.mode = "STABILIZE"
        r.investigate(*_at(100.0, 0.0), alt_m=15.0, hold_s=1.0)
        assert sim.armed and sim.mode == "AUTO"
    finally:
        r.stop()
        sim.stop()


def test_no_link_is_refused():
    r = _runner(free_udp_port(), patrol=False, sim=False)  # nothing sends there; never started
    with pytest.raises(TaskRefused, match="no link to the vehicle") as e:
        r.investigate(*_at(100.0, 0.0))
    assert e.value.kind == "vehicle" and r.status()["task"] is None


def test_task_config_limits_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="task_alt_m 5.0 must lie within"):
        DroneConfig.model_validate({"id": "d", "connection": "udp:127.0.0.1:1", "camera": CAM, "task_alt_m": 5})
    with pytest.raises(ValidationError, match="operating_area_lonlat is not a valid polygon"):
        DroneConfig.model_validate({"id": "d", "connection": "udp:127.0.0.1:1", "camera": CAM,
                                    "operating_area_lonlat": [[7, 54], [7.1, 54.1], [7.1, 54], [7, 54.1]]})
    with pytest.raises(ValidationError, match="at least 3"):
        DroneConfig.model_validate({"id": "d", "connection": "udp:127.0.0.1:1", "camera": CAM,
                                    "operating_area_lonlat": [[7, 54], [7.1, 54.1]]})
    d = DroneConfig.model_validate({"id": "d", "connection": "udp:127.0.0.1:1", "camera": CAM})
    assert (d.max_task_range_m, d.task_alt_m, d.task_hold_s, d.task_gimbal_pitch_deg, d.operating_area()) == \
        (3000.0, 40.0, 60.0, -90.0, None)


def test_investigate_items():
    home = (54.0, 7.0, 3.0)
    items = M.investigate_items(54.001, 7.002, 30.0, 45.0, home, airborne=False, speed_m_s=8.0, gimbal_pitch_deg=-80.0)
    assert [(i.seq, i.command) for i in items] == [(0, 16), (1, 22), (2, 178), (3, 1000), (4, 16), (5, 20)]
    assert items[1].alt_m == 30.0 and items[2].param2 == 8.0 and items[3].param1 == -80.0
    assert (items[4].lat_deg, items[4].lon_deg, items[4].alt_m, items[4].param1) == (54.001, 7.002, 30.0, 45.0)
    flying = M.investigate_items(54.001, 7.002, 30.0, 0.0, home, airborne=True)
    assert [(i.seq, i.command) for i in flying] == [(0, 16), (1, 16), (2, 20)]
    from seawatch.errors import ConfigError

    with pytest.raises(ConfigError, match="hold"):
        M.investigate_items(54.001, 7.002, 30.0, 4000.0, home, airborne=True)
    with pytest.raises(ConfigError, match="altitude"):
        M.investigate_items(54.001, 7.002, 1.0, 10.0, home, airborne=True)
