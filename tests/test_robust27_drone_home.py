"""Robustness audit s27: a drone reporting an impossible HOME_POSITION (lat/lon beyond +-90 / +-180 deg, what an int32
degE7 of 1e9-ish garbage decodes to). It was taken as the home, and the geodesic from it to any target is NaN, which
passes ``dist_m > max_task_range_m``: a task to a target kilometres beyond the drone's range was flown. Now such a
home is bad data (counted, the earlier home kept) and a range that cannot be measured refuses the task.

The first test flies the built-in simulator over a real UDP link, the simulator itself sending the bad message."""

from __future__ import annotations

import time

import pytest

from conftest import free_udp_port
from seawatch.service.fleet import TaskRefused
from test_drone_investigate import HOME, _at, _linked, _runner, _untouched
from test_drone_regressions import AP, T0, _feed, _vehicle
from seawatch.drone.link import MavlinkLink

BAD_DEGE7 = 2**31 - 1  # 214.7483647 deg


def test_an_impossible_home_from_the_vehicle_does_not_open_the_range_check():
    r = _runner(free_udp_port(), patrol=False, speed=10.0, max_task_range_m=1000.0).start()
    try:
        _linked(r)
        bad_before = r.link.counters.bad_data
        r.sim._send("home_position_send", BAD_DEGE7, -BAD_DEGE7, 0, 0.0, 0.0, 0.0, [1.0, 0.0, 0.0, 0.0], 0.0, 0.0, 0.0)
        deadline = time.monotonic() + 5.0
        while r.link.counters.bad_data == bad_before and r.link.state.home is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(TaskRefused) as e:
            r.investigate(*_at(0.0, 5000.0))  # 5 km east of home, the range is 1 km
        assert e.value.kind == "target" and "farther than its max_task_range_m (1000 m)" in str(e.value), str(e.value)
        _untouched(r)
        assert r.link.state.home is not None and r.link.state.home[:2] == pytest.approx(HOME, abs=1e-6)
    finally:
        r.stop()


@pytest.mark.parametrize("lat_e7, lon_e7", [(BAD_DEGE7, 70_000_000), (540_000_000, -BAD_DEGE7), (-910_000_000, 0)])
def test_home_position_out_of_range_is_bad_data_and_the_known_home_stays(lat_e7, lon_e7):
    link = MavlinkLink("x.tlog")
    _vehicle(link, T0, 60_000)
    _feed(link, AP, "home_position", T0 + 0.1, 540_000_000, 70_000_000, 12_000, 0.0, 0.0, 0.0, [1.0, 0, 0, 0],
          0.0, 0.0, 0.0)
    assert link.state.home == pytest.approx((54.0, 7.0, 12.0))
    bad = link.counters.bad_data
    _feed(link, AP, "home_position", T0 + 0.2, lat_e7, lon_e7, 0, 0.0, 0.0, 0.0, [1.0, 0, 0, 0], 0.0, 0.0, 0.0)
    assert link.counters.bad_data == bad + 1
    assert link.state.home == pytest.approx((54.0, 7.0, 12.0))


def test_home_at_zero_zero_is_no_home_yet():
    link = MavlinkLink("x.tlog")
    _vehicle(link, T0, 60_000)
    _feed(link, AP, "home_position", T0 + 0.1, 0, 0, 0, 0.0, 0.0, 0.0, [1.0, 0, 0, 0], 0.0, 0.0, 0.0)
    assert link.state.home is None


def test_a_range_that_cannot_be_measured_is_a_refusal():
    """The fleet's own guard, whatever the home: a NaN geodesic is no pass."""
    from seawatch.drone.config import DroneConfig
    from seawatch.service.fleet import DroneRunner
    from test_drone_investigate import CAM

    d = DroneConfig.model_validate({"id": "d1", "connection": "udp:127.0.0.1:9", "camera": CAM,
                                    "max_task_range_m": 1000.0})
    r = DroneRunner(d, None)
    why = r._target_problem(54.0, 7.0, (214.7, -214.7, 0.0), MavlinkLink("x.tlog").state)
    assert why is not None and "cannot be measured" in why
