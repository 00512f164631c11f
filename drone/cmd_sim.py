"""``seawatch drone sim``: run the ArduCopter-like MAVLink simulator."""

from __future__ import annotations

import argparse

from seawatch.drone import sim

HELP = "run the simulated ArduCopter (sends to a GCS like SITL's --out)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="udp:127.0.0.1:14550", help="GCS address (udp:H:P sends there; tcpin:H:P serves)")
    p.add_argument("--home", default="54.0,7.0,0.0", help="lat,lon,amsl of home")
    p.add_argument("--speed", type=float, default=1.0, help="simulation speed factor")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")


def run(args: argparse.Namespace) -> int:
    return sim.main(["--out", args.out, f"--home={args.home}", "--speed", str(args.speed),
                     "--duration", str(args.duration)])
