"""Patrol planning and the mission protocol against the simulator."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from seawatch.drone import mission as M
from seawatch.drone.geometry import latlon_to_offsets, offsets_to_latlon
from seawatch.drone.link import LinkStatus, MavlinkLink
from seawatch.drone.sim import SimVehicle
from seawatch.errors import ConfigError
from conftest import free_udp_port as _free_port

HOME = (54.0, 7.0, 0.0)


def _poly(ne):
    la, lo = offsets_to_latlon(HOME[0], HOME[1], [p[0] for p in ne], [p[1] for p in ne])
    return list(zip(la.tolist(), lo.tolist()))


RECT = _poly([(100, -40), (100, 40), (-100, 40), (-100, -40)])  # 200 m N-S by 80 m E-W


def _ne(wps):
    n, e = latlon_to_offsets(HOME[0], HOME[1], [w.lat_deg for w in wps], [w.lon_deg for w in wps])
    return np.stack([n, e], axis=1)


def test_lawnmower_covers_rectangle_along_long_edge():
    wps = M.lawnmower(RECT, spacing_m=20.0, alt_m=30.0)
    ne = _ne(wps)
    # lines run north-south (the long edge) at east = -30, -10, 10, 30
    assert len(wps) == 8
    np.testing.assert_allclose(sorted(set(np.round(ne[:, 1], 3))), [-30, -10, 10, 30], atol=0.01)
    np.testing.assert_allclose(np.abs(ne[:, 0]), 100.0, atol=0.01)
    # boustrophedon: consecutive lines alternate direction
    assert np.sign(ne[1, 0] - ne[0, 0]) == -np.sign(ne[3, 0] - ne[2, 0]) != 0
    assert all(w.alt_m == 30.0 for w in wps)
    assert M.route_length_m(wps) == pytest.approx(4 * 200 + 3 * 20, abs=0.1)


def test_lawnmower_heading_and_concave_polygon():
    wps = M.lawnmower(RECT, spacing_m=50.0, alt_m=30.0, heading_deg=90.0)  # lines east-west
    ne = _ne(wps)
    np.testing.assert_allclose(np.abs(ne[:, 1]), 40.0, atol=0.01)
    u_shape = _poly([(0, 0), (100, 0), (100, 30), (20, 30), (20, 70), (100, 70), (100, 100), (0, 100)])
    wps = M.lawnmower(u_shape, spacing_m=10.0, alt_m=20.0, heading_deg=90.0)
    ne = _ne(wps)
    # lines north of the notch (north > 20) are split in two parts: 4 waypoints per line
    north_lines = [round(n, 1) for n in ne[:, 0] if n > 20]
    assert sorted(set(north_lines)) == [25.0, 35.0, 45.0, 55.0, 65.0, 75.0, 85.0, 95.0]
    assert all(north_lines.count(n) == 4 for n in set(north_lines))


def test_perimeter_and_points_and_items():
    wps = M.perimeter(RECT, 25.0)
    assert len(wps) == 5 and wps[0] == wps[-1]
    turbines = M.points([(54.001, 7.001), (54.002, 7.003)], 40.0, hold_s=5.0)
    items = M.to_mission_items(turbines, takeoff_alt_m=15.0, home=HOME, speed_m_s=8.0, gimbal_pitch_deg=-30.0)
    cmds = [i.command for i in items]
    assert cmds == [16, 22, 178, 1000, 16, 16, 20]
    assert items[1].alt_m == 15.0 and items[4].param1 == 5.0 and items[4].frame == 3
    assert [i.seq for i in items] == list(range(len(items)))


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.lawnmower(RECT[:2], 10, 30),
        lambda: M.lawnmower(RECT, 0.0, 30),
        lambda: M.lawnmower(RECT, 10, 1000),
        lambda: M.lawnmower(RECT, 0.05, 30),  # too many lines for the mission store
        lambda: M.points([], 30),
        lambda: M.points([(95.0, 7.0)], 30),
        lambda: M.to_mission_items([], home=HOME),
    ],
)
def test_bad_routes_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()


@pytest.fixture()
def fast_sim():
    port = _free_port()
    sim = SimVehicle(f"udpout:127.0.0.1:{port}", home=HOME, speed=10.0, telemetry_hz=10).start()
    link = MavlinkLink(f"udpin:127.0.0.1:{port}").open(5.0)
    yield sim, link
    link.close()
    sim.stop()


def test_upload_download_fly_and_return(fast_sim):
    sim, link = fast_sim
    wps = M.lawnmower(_poly([(60, -30), (60, 30), (-20, 30), (-20, -30)]), spacing_m=30.0, alt_m=20.0)
    items = M.to_mission_items(wps, home=HOME, speed_m_s=10.0)
    mc = M.MissionClient(link)
    mc.upload(items)
    got = mc.download()
    assert [i.command for i in got] == [i.command for i in items]
    for a, b in zip(got[4:], items[4:]):
        assert a.lat_deg == pytest.approx(b.lat_deg, abs=1e-7) and a.alt_m == pytest.approx(b.alt_m)
    mc.start()
    assert link.state.mode == "AUTO" and link.state.armed
    seen_seq = set()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        p = mc.progress()
        if p.current_seq is not None:
            seen_seq.add(p.current_seq)
        if p.complete:
            break
        time.sleep(0.05)
    assert p.complete and p.fraction == 1.0
    assert sim.reached == list(range(1, len(items)))
    assert len(seen_seq) >= 3  # progress was visible while flying
    link.wait_until(lambda s: s.armed is False, 40.0, "landed after RTL")
    assert link.state.mode == "RTL" and abs(link.state.alt_rel_m) < 0.05
    n, e = latlon_to_offsets(HOME[0], HOME[1], link.state.lat_deg, link.state.lon_deg)
    assert math.hypot(n[0], e[0]) < 1.0


def test_abort_mid_mission_returns_home(fast_sim):
    sim, link = fast_sim
    wps = M.points([tuple(x) for x in np.array(_poly([(300, 0), (300, 300)]))], alt_m=25.0)
    mc = M.MissionClient(link)
    mc.upload(M.to_mission_items(wps, home=HOME, return_to_launch=False))
    mc.start()
    link.wait_until(lambda s: (s.alt_rel_m or 0) > 20 and (s.mission_seq or 0) >= 2, 20.0, "on the way")
    mc.abort()
    assert link.state.mode == "RTL"
    link.wait_until(lambda s: s.armed is False, 60.0, "landed at home")
    n, e = latlon_to_offsets(HOME[0], HOME[1], link.state.lat_deg, link.state.lon_deg)
    assert math.hypot(n[0], e[0]) < 1.0
    assert 3 not in sim.reached  # the far waypoint was never reached
    mc.clear()
    home_only = mc.download()
    assert len(home_only) == 1 and home_only[0].lat_deg == pytest.approx(HOME[0], abs=1e-7)  # ArduPilot keeps home
    assert link.status is LinkStatus.CONNECTED


def test_a_mission_replaced_in_the_air_flies_from_its_first_item(fast_sim):
    """ArduPilot (MIS_RESTART 0, its default) resumes a mission where it was stopped, and an upload does not move that
    point: a patrol interrupted at its 3rd waypoint and replaced by a task would fly the task from item 3. The
    client's start sets the current item to 1 first (the simulator keeps the current item as ArduPilot does)."""
    sim, link = fast_sim
    assert sim.params["MIS_RESTART"] == 0
    far = M.points([tuple(x) for x in np.array(_poly([(100, 0), (200, 0), (300, 0), (400, 0), (500, 0)]))], alt_m=25.0)
    mc = M.MissionClient(link)
    mc.upload(M.to_mission_items(far, home=HOME, return_to_launch=False))
    mc.start()
    link.wait_until(lambda s: (s.mission_seq or 0) >= 3, 30.0, "past the patrol's first waypoint")
    link.set_mode("GUIDED")  # interrupted where it is
    stopped_at = sim.current_seq
    task = M.points([tuple(x) for x in np.array(_poly([(0, 100), (0, 150), (0, 200), (0, 250)]))], alt_m=25.0)
    items = M.to_mission_items(task, home=HOME, return_to_launch=False)
    assert 2 <= stopped_at < len(items)  # a resume would skip the task's first items
    mc.upload(items)
    assert sim.current_seq == stopped_at  # the upload left the resume point where it was, like ArduPilot
    before = len(sim.reached)
    mc.start()
    link.wait_until(lambda s: len(sim.reached) - before >= len(items) - 1, 40.0, "the task flown")
    assert sim.reached[before:before + len(items) - 1] == list(range(1, len(items)))  # every item, from the first
    n, e = latlon_to_offsets(HOME[0], HOME[1], link.state.lat_deg, link.state.lon_deg)
    assert math.hypot(n[0] - 0, e[0] - 250) < 3.0
