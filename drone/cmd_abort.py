"""``seawatch drone abort URL``: stop a patrol (RTL by default)."""

from __future__ import annotations

import argparse

from seawatch.drone.link import MavlinkLink
from seawatch.drone.mission import MissionClient

HELP = "abort the patrol: return to launch (or --mode LOITER / BRAKE / LAND)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="vehicle connection")
    p.add_argument("--mode", default="RTL", choices=["RTL", "SMART_RTL", "LOITER", "BRAKE", "LAND"])
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--system", type=int, default=None, metavar="ID",
                   help="the vehicle's MAVLink system id (default: the first autopilot heard; give it on a link "
                        "shared by several vehicles)")


def run(args: argparse.Namespace) -> int:
    with MavlinkLink(args.url, target_system=args.system).open(args.timeout) as link:
        MissionClient(link).abort(args.mode)
        print(f"{link.vehicle_id}: mode {link.state.mode}")
    return 0
