"""``seawatch drone replay LOG.tlog``: feed a telemetry log through the live link code and summarise it."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

import numpy as np

from seawatch.drone.link import MavlinkLink

HELP = "replay a .tlog through the live link code path; print a summary (and poses with --every)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("log", help="MAVLink telemetry log (.tlog)")
    p.add_argument("--altitude", choices=["relative", "amsl"], default="relative", help="pose altitude datum")
    p.add_argument("--every", type=float, default=0.0, metavar="S",
                   help="also print the interpolated pose every S seconds as JSON lines")
    p.add_argument("--speed", type=float, default=0.0, help="replay at this multiple of real time (0 = fast)")
    p.add_argument("--system", type=int, default=None, metavar="ID",
                   help="the vehicle's MAVLink system id (default: the first autopilot heard; give it on a link "
                        "(a log) shared by several vehicles)")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def run(args: argparse.Namespace) -> int:
    link = MavlinkLink(args.log, altitude=args.altitude, target_system=args.system).replay(speed=args.speed or None)
    tl = link.timeline
    summary: dict = {
        "file": args.log,
        "messages": link.counters.messages,
        "bad_data": link.counters.bad_data,
        "message_types": len(link.counters.by_type),
        "vehicle_system_id": link.target_system,
        "samples": tl.counts,
        "params": len(link.params),
        "statustext": len(link.statustext),
        "mode_changes": [{"time": _iso(t), "mode": m, "armed": a} for t, m, a in link.transitions],
    }
    rng = tl.time_range_ns()
    if rng is not None:
        pos = tl._pos.samples  # noqa: SLF001 - summary of the whole buffer
        lats = np.array([s.lat_deg for s in pos])
        lons = np.array([s.lon_deg for s in pos])
        alts = np.array([s.alt_m for s in pos])
        gaps = np.diff(np.array(tl._pos.times)) / 1e9 if len(pos) > 1 else np.zeros(1)  # noqa: SLF001
        summary.update(
            start=_iso(rng[0]), end=_iso(rng[1]), duration_s=round((rng[1] - rng[0]) / 1e9, 3),
            lat_range=[float(lats.min()), float(lats.max())], lon_range=[float(lons.min()), float(lons.max())],
            alt_range_m=[float(alts.min()), float(alts.max())], max_position_gap_s=round(float(gaps.max()), 3),
            vehicle_clock_offset_s=link.state.vehicle_clock_offset_s,
        )
        if args.every > 0:
            t = rng[0]
            step = int(args.every * 1e9)
            while t <= rng[1]:
                fix = tl.pose_at(t)
                row = {"time": _iso(t), "stale": fix.stale, "reason": fix.reason}
                if fix.pose is not None:
                    p = fix.pose
                    row.update(lat_deg=round(p.lat_deg, 8), lon_deg=round(p.lon_deg, 8), alt_m=round(p.alt_m, 3),
                               roll_deg=round(p.roll_deg, 3), pitch_deg=round(p.pitch_deg, 3), yaw_deg=round(p.yaw_deg, 3))
                print(json.dumps(row))
                t += step
    print(json.dumps(summary, indent=None if args.every > 0 else 1))
    return 0
