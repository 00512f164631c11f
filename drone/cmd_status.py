"""``seawatch drone status URL``: connect, print the vehicle state as JSON lines."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from seawatch.drone.link import MavlinkLink

HELP = "connect to a vehicle (udp:/tcp:/serial) and print its state as JSON lines"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="connection, e.g. udp:127.0.0.1:14550 (listen), tcp:127.0.0.1:5760, /dev/ttyACM0")
    p.add_argument("--baud", type=int, default=57600, help="serial baud rate")
    p.add_argument("--seconds", type=float, default=3.0, help="how long to watch (default 3 s)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between lines")
    p.add_argument("--timeout", type=float, default=10.0, help="wait this long for the vehicle to be ready (heartbeat, parameters)")
    p.add_argument("--tlog", default=None, help="also log the telemetry to this .tlog")
    p.add_argument("--stream-rate", type=float, default=None, metavar="HZ",
                   help="ask the vehicle for all data streams at this rate (direct SITL TCP / serial without MAVProxy)")
    p.add_argument("--system", type=int, default=None, metavar="ID",
                   help="the vehicle's MAVLink system id (default: the first autopilot heard; give it on a link "
                        "shared by several vehicles)")


def state_dict(link: MavlinkLink) -> dict:
    d = dataclasses.asdict(link.state)
    d["camera"] = None if link.state.camera is None else dataclasses.asdict(link.state.camera)
    d["link"] = link.status.value
    d["messages"] = link.counters.messages
    d["bad_data"] = link.counters.bad_data
    d["params"] = len(link.params)
    d["system"] = link.target_system
    return d


def run(args: argparse.Namespace) -> int:
    with MavlinkLink(args.url, baud=args.baud, tlog_path=args.tlog, stream_rate_hz=args.stream_rate,
                     target_system=args.system).open(args.timeout) as link:
        end = time.monotonic() + args.seconds
        while True:
            print(json.dumps(state_dict(link)), flush=True)
            if time.monotonic() + args.interval > end:
                break
            time.sleep(args.interval)
    return 0
