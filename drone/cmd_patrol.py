"""``seawatch drone patrol [URL]``: plan a route, and upload / start / monitor it when a URL is given."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from seawatch.drone import mission as M
from seawatch.errors import ConfigError

HELP = "plan a patrol (lawnmower / perimeter / points), upload it, start it, follow its progress"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", nargs="?", default=None, help="vehicle connection; without it the plan is only printed")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--lawnmower", metavar="POLYGON", help='"lat,lon;lat,lon;..." or @file.json ([[lat, lon], ...])')
    g.add_argument("--perimeter", metavar="POLYGON", help="fly the polygon's edges")
    g.add_argument("--points", metavar="POINTS", help="visit these points in order (e.g. turbines)")
    p.add_argument("--alt", type=float, required=True, help="height above home, m")
    p.add_argument("--spacing", type=float, default=30.0, help="lawnmower line spacing, m")
    p.add_argument("--heading", type=float, default=None, help="lawnmower line direction, deg from north")
    p.add_argument("--hold", type=float, default=0.0, help="seconds to hold at each point")
    p.add_argument("--speed", type=float, default=None, help="cruise speed m/s (DO_CHANGE_SPEED)")
    p.add_argument("--gimbal-pitch", type=float, default=None, help="gimbal pitch for the patrol, deg")
    p.add_argument("--no-rtl", action="store_true", help="do not return to launch at the end")
    p.add_argument("--start", action="store_true", help="arm and start the mission after upload")
    p.add_argument("--wait", type=float, default=0.0, metavar="S", help="print progress until done (at most S s)")
    p.add_argument("--timeout", type=float, default=10.0, help="first-heartbeat timeout")
    p.add_argument("--system", type=int, default=None, metavar="ID",
                   help="the vehicle's MAVLink system id (default: the first autopilot heard; give it on a link "
                        "shared by several vehicles)")


def parse_latlons(text: str, what: str) -> list[tuple[float, float]]:
    """``"lat,lon;lat,lon"`` or ``@file.json`` holding ``[[lat, lon], ...]``; ConfigError unless every point is
    exactly two numbers."""
    try:
        if text.startswith("@"):
            data = json.loads(Path(text[1:]).read_text(encoding="utf-8"))
            return [(float(a), float(b)) for a, b in data]
        points = [part.split(",") for part in text.split(";") if part.strip()]
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{what}: cannot read {text!r} as lat,lon pairs: {exc}") from None
    for i, values in enumerate(points):
        if len(values) != 2:
            raise ConfigError(f"{what}: point {i + 1} {','.join(values).strip()!r} is not lat,lon: each point needs "
                              f"exactly two numbers (\"lat,lon;lat,lon;...\")")
    try:
        return [(float(a), float(b)) for a, b in points]
    except ValueError as exc:
        raise ConfigError(f"{what}: cannot read {text!r} as lat,lon pairs: {exc}") from None


def plan(args: argparse.Namespace) -> list[M.Waypoint]:
    if args.lawnmower:
        return M.lawnmower(parse_latlons(args.lawnmower, "--lawnmower"), args.spacing, args.alt, args.heading)
    if args.perimeter:
        return M.perimeter(parse_latlons(args.perimeter, "--perimeter"), args.alt, args.hold)
    return M.points(parse_latlons(args.points, "--points"), args.alt, args.hold)


def run(args: argparse.Namespace) -> int:
    wps = plan(args)
    if args.url is None:
        print(json.dumps({"waypoints": [dataclasses.asdict(w) for w in wps],
                          "length_m": round(M.route_length_m(wps), 1)}, indent=1))
        return 0
    from seawatch.drone.link import MavlinkLink

    with MavlinkLink(args.url, target_system=args.system).open(args.timeout) as link:
        home = link.state.home
        if home is None:
            msg = link.request(242, "HOME_POSITION")
            home = link.state.home if msg is not None else (wps[0].lat_deg, wps[0].lon_deg, 0.0)
        items = M.to_mission_items(wps, home=home, speed_m_s=args.speed, gimbal_pitch_deg=args.gimbal_pitch,
                                   return_to_launch=not args.no_rtl)
        mc = M.MissionClient(link)
        mc.upload(items)
        print(json.dumps({"uploaded_items": len(items), "length_m": round(M.route_length_m(wps), 1)}), flush=True)
        if args.start:
            mc.start()
        if args.wait > 0:
            end = time.monotonic() + args.wait
            while time.monotonic() < end:
                prog = mc.progress()
                print(json.dumps(dataclasses.asdict(prog)), flush=True)
                if prog.complete:
                    return 0
                time.sleep(1.0)
            return 1
    return 0
