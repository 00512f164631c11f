"""Patrol missions: route planning (perimeter, lawnmower, point list) and the MAVLink mission protocol.

Routes are planned in a local geodesic frame around the area (``latlon_to_offsets``) and returned as WGS84
waypoints with heights relative to home. :func:`to_mission_items` turns them into an ArduCopter mission
(item 0 = home, which ArduPilot overwrites; NAV_TAKEOFF; optional DO_CHANGE_SPEED and gimbal pitch;
NAV_WAYPOINT items in MAV_FRAME_GLOBAL_RELATIVE_ALT; NAV_RETURN_TO_LAUNCH). :class:`MissionClient` uploads,
downloads, starts, monitors and aborts it over a :class:`~seawatch.drone.link.MavlinkLink`, with a timeout
and bounded retries on every step.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from seawatch.drone.geometry import latlon_to_offsets, offsets_to_latlon
from seawatch.errors import ConfigError, TelemetryError

log = logging.getLogger(__name__)

MAV_CMD_NAV_WAYPOINT = 16
MAV_CMD_NAV_RETURN_TO_LAUNCH = 20
MAV_CMD_NAV_LAND = 21
MAV_CMD_NAV_TAKEOFF = 22
MAV_CMD_DO_CHANGE_SPEED = 178
MAV_CMD_DO_GIMBAL_MANAGER_PITCHYAW = 1000
MAV_CMD_MISSION_START = 300
MAV_FRAME_GLOBAL = 0
MAV_FRAME_MISSION = 2
MAV_FRAME_GLOBAL_RELATIVE_ALT = 3
MAX_ITEMS = 700  # ArduPilot's mission storage on small boards holds ~700 items

MISSION_RESULTS = {
    0: "ACCEPTED", 1: "ERROR", 2: "UNSUPPORTED_FRAME", 3: "UNSUPPORTED", 4: "NO_SPACE", 5: "INVALID",
    6: "INVALID_PARAM1", 7: "INVALID_PARAM2", 8: "INVALID_PARAM3", 9: "INVALID_PARAM4", 10: "INVALID_PARAM5_X",
    11: "INVALID_PARAM6_Y", 12: "INVALID_PARAM7", 13: "INVALID_SEQUENCE", 14: "DENIED", 15: "OPERATION_CANCELLED",
}


@dataclass(frozen=True, slots=True)
class Waypoint:
    """A patrol point: WGS84 position, height above home (m) and an optional hold time (s)."""

    lat_deg: float
    lon_deg: float
    alt_m: float
    hold_s: float = 0.0


@dataclass(frozen=True, slots=True)
class MissionItem:
    """One MAVLink mission item (MISSION_ITEM_INT fields, lat/lon in degrees)."""

    seq: int
    command: int
    frame: int = MAV_FRAME_GLOBAL_RELATIVE_ALT
    param1: float = 0.0
    param2: float = 0.0
    param3: float = 0.0
    param4: float = 0.0
    lat_deg: float = 0.0
    lon_deg: float = 0.0
    alt_m: float = 0.0
    autocontinue: int = 1


@dataclass(frozen=True, slots=True)
class MissionProgress:
    """Where the vehicle is in its mission."""

    mode: str | None
    armed: bool | None
    current_seq: int | None
    total: int
    last_reached_seq: int | None
    fraction: float
    distance_to_current_m: float | None
    complete: bool


# --------------------------------------------------------------------------------------------- planning


def _check_polygon(polygon: Sequence[tuple[float, float]], what: str) -> np.ndarray:
    p = np.asarray(polygon, float)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
        raise ConfigError(f"{what}: polygon needs at least 3 (lat, lon) vertices, got shape {p.shape}")
    if not np.isfinite(p).all() or (np.abs(p[:, 0]) > 90).any() or (np.abs(p[:, 1]) > 180).any():
        raise ConfigError(f"{what}: polygon has a vertex outside valid lat/lon")
    if np.allclose(p[0], p[-1], rtol=0.0, atol=1e-9):
        p = p[:-1]
    if len(p) < 3:
        raise ConfigError(f"{what}: polygon needs at least 3 distinct vertices")
    return p


def _check_alt(alt_m: float, what: str) -> None:
    if not (math.isfinite(alt_m) and 2.0 <= alt_m <= 500.0):
        raise ConfigError(f"{what}: altitude {alt_m} m must be in [2, 500] m above home")


def perimeter(polygon: Sequence[tuple[float, float]], alt_m: float, hold_s: float = 0.0) -> list[Waypoint]:
    """Fly the polygon's edges: one waypoint per vertex, closing back at the first."""
    p = _check_polygon(polygon, "perimeter route")
    _check_alt(alt_m, "perimeter route")
    wps = [Waypoint(float(la), float(lo), alt_m, hold_s) for la, lo in p]
    return wps + [wps[0]]


def points(pts: Sequence[tuple[float, float]], alt_m: float, hold_s: float = 0.0) -> list[Waypoint]:
    """Visit a list of points (e.g. turbines) in order."""
    if len(pts) == 0:
        raise ConfigError("point route: no points given")
    _check_alt(alt_m, "point route")
    out = []
    for i, (la, lo) in enumerate(pts):
        if not (math.isfinite(la) and math.isfinite(lo) and abs(la) <= 90 and abs(lo) <= 180):
            raise ConfigError(f"point route: point {i} ({la}, {lo}) is not a valid lat/lon")
        out.append(Waypoint(float(la), float(lo), alt_m, hold_s))
    return out


def lawnmower(
    polygon: Sequence[tuple[float, float]],
    spacing_m: float,
    alt_m: float,
    heading_deg: float | None = None,
) -> list[Waypoint]:
    """Back-and-forth sweep lines ``spacing_m`` apart covering the polygon.

    Lines run along ``heading_deg`` (degrees from north; default: the polygon's longest edge);
    ``ceil(width / spacing)`` lines are centred across the polygon, so each covers spacing/2 either side. For a concave polygon a line may cross it several times; the parts are
    flown in order along the line (the hops between them leave the polygon).
    """
    p = _check_polygon(polygon, "lawnmower route")
    _check_alt(alt_m, "lawnmower route")
    if not (math.isfinite(spacing_m) and spacing_m > 0):
        raise ConfigError(f"lawnmower route: spacing {spacing_m} m must be positive")
    lat0, lon0 = float(p[:, 0].mean()), float(p[:, 1].mean())
    n, e = latlon_to_offsets(lat0, lon0, p[:, 0], p[:, 1])
    if heading_deg is None:
        dn, de = np.roll(n, -1) - n, np.roll(e, -1) - e
        k = int(np.argmax(np.hypot(dn, de)))
        heading = math.atan2(de[k], dn[k])
    else:
        heading = math.radians(heading_deg)
    ch, sh = math.cos(heading), math.sin(heading)
    u = n * ch + e * sh  # along the lines
    v = -n * sh + e * ch  # across the lines
    vmin, vmax = float(v.min()), float(v.max())
    width = vmax - vmin
    n_lines = max(1, int(math.ceil(width / spacing_m - 1e-3)))  # tolerance: geodesic widths are not exact
    if n_lines * 2 > MAX_ITEMS:
        raise ConfigError(
            f"lawnmower route: {n_lines} lines at {spacing_m} m spacing exceed the {MAX_ITEMS}-item mission limit"
        )
    wps_ne: list[tuple[float, float]] = []
    for i in range(n_lines):
        # lines centred on the polygon: each covers spacing/2 either side
        vc = vmin + (width - (n_lines - 1) * spacing_m) / 2 + i * spacing_m
        us = []
        for j in range(len(u)):
            v1, v2, u1, u2 = v[j], v[(j + 1) % len(v)], u[j], u[(j + 1) % len(u)]
            if (v1 <= vc < v2) or (v2 <= vc < v1):
                us.append(u1 + (vc - v1) * (u2 - u1) / (v2 - v1))
        us.sort()
        segs = [(us[k], us[k + 1]) for k in range(0, len(us) - 1, 2)]
        if i % 2 == 1:
            segs = [(b, a) for a, b in reversed(segs)]
        for a, b in segs:
            for uu in (a, b):
                wps_ne.append((uu * ch - vc * sh, uu * sh + vc * ch))
    if not wps_ne:
        raise ConfigError("lawnmower route: the polygon is too thin for one sweep line")
    arr = np.asarray(wps_ne)
    lat, lon = offsets_to_latlon(lat0, lon0, arr[:, 0], arr[:, 1])
    return [Waypoint(float(a), float(b), alt_m) for a, b in zip(lat, lon)]


def route_length_m(wps: Sequence[Waypoint]) -> float:
    """Horizontal length of the route through the waypoints (geodesic)."""
    if len(wps) < 2:
        return 0.0
    from seawatch.drone.geometry import geod

    lats = [w.lat_deg for w in wps]
    lons = [w.lon_deg for w in wps]
    return float(geod().line_length(lons, lats))


def to_mission_items(
    wps: Sequence[Waypoint],
    takeoff_alt_m: float | None = None,
    home: tuple[float, float, float] = (0.0, 0.0, 0.0),
    speed_m_s: float | None = None,
    gimbal_pitch_deg: float | None = None,
    return_to_launch: bool = True,
    takeoff: bool = True,
) -> list[MissionItem]:
    """An ArduCopter mission: home, [takeoff], [speed], [gimbal pitch], waypoints, [RTL].

    ``takeoff=False`` for a vehicle that is already in the air (a task sent to a flying drone): it then flies
    straight to the first waypoint, climbing or descending on the way, instead of a NAV_TAKEOFF from where it is.
    """
    if not wps:
        raise ConfigError("mission: no waypoints")
    items = [MissionItem(0, MAV_CMD_NAV_WAYPOINT, MAV_FRAME_GLOBAL, lat_deg=home[0], lon_deg=home[1], alt_m=home[2])]
    if takeoff:
        items.append(MissionItem(1, MAV_CMD_NAV_TAKEOFF,
                                 alt_m=takeoff_alt_m if takeoff_alt_m is not None else wps[0].alt_m))
    if speed_m_s is not None:
        if not (0 < speed_m_s <= 30):
            raise ConfigError(f"mission: speed {speed_m_s} m/s must be in (0, 30]")
        items.append(MissionItem(len(items), MAV_CMD_DO_CHANGE_SPEED, MAV_FRAME_MISSION, param1=1, param2=speed_m_s, param3=-1))
    if gimbal_pitch_deg is not None:
        items.append(MissionItem(len(items), MAV_CMD_DO_GIMBAL_MANAGER_PITCHYAW, MAV_FRAME_MISSION,
                                 param1=gimbal_pitch_deg, param2=0.0, param3=math.nan, param4=math.nan))
    for w in wps:
        items.append(MissionItem(len(items), MAV_CMD_NAV_WAYPOINT, MAV_FRAME_GLOBAL_RELATIVE_ALT, param1=w.hold_s,
                                 lat_deg=w.lat_deg, lon_deg=w.lon_deg, alt_m=w.alt_m))
    if return_to_launch:
        items.append(MissionItem(len(items), MAV_CMD_NAV_RETURN_TO_LAUNCH, MAV_FRAME_MISSION))
    if len(items) > MAX_ITEMS:
        raise ConfigError(f"mission: {len(items)} items exceed the {MAX_ITEMS}-item limit")
    return items


def investigate_items(
    lat_deg: float,
    lon_deg: float,
    alt_m: float,
    hold_s: float,
    home: tuple[float, float, float],
    *,
    airborne: bool,
    speed_m_s: float | None = None,
    gimbal_pitch_deg: float | None = None,
) -> list[MissionItem]:
    """"Send a drone to look": [takeoff to ``alt_m``], [speed], [gimbal pitch], one NAV_WAYPOINT over the target
    holding ``hold_s`` seconds (param1), then RTL. ``airborne``: the vehicle is flying already (no takeoff item)."""
    _check_alt(alt_m, "investigate task")
    if not (math.isfinite(hold_s) and 0.0 <= hold_s <= 3600.0):
        raise ConfigError(f"investigate task: hold {hold_s} s must be in [0, 3600] s")
    target = points([(lat_deg, lon_deg)], alt_m, hold_s)
    return to_mission_items(target, takeoff_alt_m=alt_m, home=home, speed_m_s=speed_m_s,
                            gimbal_pitch_deg=gimbal_pitch_deg, return_to_launch=True, takeoff=not airborne)


# --------------------------------------------------------------------------------------------- protocol


class MissionClient:
    """Upload / download / start / monitor / abort a mission over an open :class:`MavlinkLink`."""

    def __init__(self, link, timeout_s: float = 2.0, retries: int = 3) -> None:
        self.link = link
        self.timeout_s = timeout_s
        self.retries = retries
        self.items: list[MissionItem] = []

    def _send_item(self, it: MissionItem) -> None:
        tsys, tcomp = self.link.target_system, self.link.target_component
        self.link.send(
            "mission_item_int_send", tsys, tcomp, it.seq, it.frame, it.command, 0, it.autocontinue,
            it.param1, it.param2, it.param3, it.param4,
            int(round(it.lat_deg * 1e7)), int(round(it.lon_deg * 1e7)), float(it.alt_m), 0,
        )

    def upload(self, items: Sequence[MissionItem]) -> None:
        """MISSION_COUNT, then answer each MISSION_REQUEST(_INT) until MISSION_ACK; raises TelemetryError."""
        if not items:
            raise ConfigError("mission upload: no items")
        for i, it in enumerate(items):
            if it.seq != i:
                raise ConfigError(f"mission upload: item {i} has seq {it.seq}")
        tsys = self.link._require_target()
        tcomp = self.link.target_component
        types = ["MISSION_REQUEST_INT", "MISSION_REQUEST", "MISSION_ACK"]
        t0 = time.monotonic()
        with self.link.expect(types, lambda m: m.get_srcSystem() == tsys) as w:
            self.link.send("mission_count_send", tsys, tcomp, len(items), 0)
            last_sent: MissionItem | None = None
            misses = 0
            while True:
                m = w.get(self.timeout_s)
                if m is None:
                    misses += 1
                    if misses > self.retries:
                        got = "nothing" if last_sent is None else f"item {last_sent.seq}"
                        raise TelemetryError(
                            f"drone {self.link.vehicle_id}: mission upload stalled after {got} "
                            f"({self.retries + 1} x {self.timeout_s} s without a request or ack)"
                        )
                    if last_sent is None:
                        self.link.send("mission_count_send", tsys, tcomp, len(items), 0)
                    else:
                        self._send_item(last_sent)
                    continue
                misses = 0
                if m.get_type() == "MISSION_ACK":
                    if m.type == 0 and last_sent is not None and last_sent.seq == len(items) - 1:
                        break
                    if m.type == 0:
                        continue  # a stale ack from an earlier transaction
                    raise TelemetryError(
                        f"drone {self.link.vehicle_id}: mission upload rejected: "
                        f"{MISSION_RESULTS.get(m.type, m.type)}"
                    )
                if not 0 <= m.seq < len(items):
                    raise TelemetryError(f"drone {self.link.vehicle_id}: vehicle asked for item {m.seq} of {len(items)}")
                last_sent = items[m.seq]
                self._send_item(last_sent)
        self.items = list(items)
        log.info("drone %s: mission of %d items uploaded in %.2f s", self.link.vehicle_id, len(items),
                 time.monotonic() - t0)

    def download(self) -> list[MissionItem]:
        """MISSION_REQUEST_LIST, then MISSION_REQUEST_INT for every item; ends with MISSION_ACK."""
        tsys = self.link._require_target()
        tcomp = self.link.target_component
        count = None
        for _ in range(self.retries + 1):
            with self.link.expect(["MISSION_COUNT"], lambda m: m.get_srcSystem() == tsys) as w:
                self.link.send("mission_request_list_send", tsys, tcomp, 0)
                m = w.get(self.timeout_s)
            if m is not None:
                count = m.count
                break
        if count is None:
            raise TelemetryError(f"drone {self.link.vehicle_id}: no MISSION_COUNT after {self.retries + 1} requests")
        out: list[MissionItem] = []
        for seq in range(count):
            for _ in range(self.retries + 1):
                with self.link.expect(["MISSION_ITEM_INT"], lambda m, s=seq: m.seq == s) as w:
                    self.link.send("mission_request_int_send", tsys, tcomp, seq, 0)
                    m = w.get(self.timeout_s)
                if m is not None:
                    out.append(MissionItem(m.seq, m.command, m.frame, m.param1, m.param2, m.param3, m.param4,
                                           m.x / 1e7, m.y / 1e7, m.z, m.autocontinue))
                    break
            else:
                raise TelemetryError(f"drone {self.link.vehicle_id}: mission item {seq} of {count} not received")
        self.link.send("mission_ack_send", tsys, tcomp, 0, 0)
        return out

    def clear(self) -> None:
        tsys = self.link._require_target()
        with self.link.expect(["MISSION_ACK"], lambda m: m.get_srcSystem() == tsys) as w:
            self.link.send("mission_clear_all_send", tsys, self.link.target_component, 0)
            m = w.get(self.timeout_s)
        if m is None or m.type != 0:
            raise TelemetryError(f"drone {self.link.vehicle_id}: mission clear not acknowledged")
        self.items = []

    def start(self, arm_mode: str = "GUIDED") -> None:
        """Arm in ``arm_mode`` (ArduCopter does not arm in AUTO) and send MISSION_START (switches to AUTO).

        The mission flies from its first item: MISSION_SET_CURRENT 1 goes first. ArduPilot's MISSION_START (and a
        switch to AUTO) resumes where the last mission stopped unless MIS_RESTART is 1, and a mission replaced in the
        air (a patrol interrupted by a task, a patrol restarted after an abort) would otherwise go on from the old
        mission's item number."""
        if not self.link.state.armed:
            self.link.set_mode(arm_mode)
            self.link.arm(True)
        self.set_current(1)
        result = self.link.command_long(MAV_CMD_MISSION_START, [0, 0], self.timeout_s)
        self.link._check("mission start", result)
        self.link.wait_until(lambda s: s.mode == "AUTO", 3.0, "mode AUTO after MISSION_START")

    def set_current(self, seq: int) -> bool:
        """MISSION_SET_CURRENT ``seq``: the item the mission goes on from; True once the vehicle's MISSION_CURRENT says
        so (an autopilot that does not answer is not an error: the start that follows is checked on its own)."""
        tsys = self.link.target_system
        for _ in range(self.retries + 1):
            with self.link.expect(["MISSION_CURRENT"], lambda m: m.get_srcSystem() == tsys and m.seq == seq) as w:
                self.link.send("mission_set_current_send", tsys, self.link.target_component, seq)
                if w.get(self.timeout_s) is not None:
                    return True
        log.warning("drone %s: no MISSION_CURRENT %d after MISSION_SET_CURRENT; starting anyway", self.link.vehicle_id, seq)
        return False

    def abort(self, mode: str = "RTL") -> None:
        """Stop the patrol: RTL (default), LOITER/BRAKE to hold, or LAND."""
        self.link.set_mode(mode)

    def progress(self) -> MissionProgress:
        s = self.link.state
        total = len(self.items)
        cur = s.mission_seq
        dist = None
        if cur is not None and 0 < cur < total and s.lat_deg is not None:
            it = self.items[cur]
            if it.command == MAV_CMD_NAV_WAYPOINT:
                dn, de = latlon_to_offsets(s.lat_deg, s.lon_deg, it.lat_deg, it.lon_deg)
                dist = float(math.hypot(dn[0], de[0]))
        reached = s.last_reached_seq
        nav = [i.seq for i in self.items if i.seq > 0]
        done_frac = 0.0
        if nav and reached is not None:
            done_frac = sum(1 for q in nav if q <= reached) / len(nav)
        complete = bool(nav) and reached is not None and reached >= nav[-1]
        return MissionProgress(s.mode, s.armed, cur, total, reached, done_frac, dist, complete)

    def wait_complete(self, timeout_s: float) -> MissionProgress:
        """Poll progress until the last item is reached (or the vehicle lands and disarms); bounded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            p = self.progress()
            if p.complete:
                return p
            time.sleep(0.1)
        raise TelemetryError(f"drone {self.link.vehicle_id}: mission not complete after {timeout_s} s "
                             f"({self.progress()})")
