"""``seawatch drone camera URL``: a live camera for a vehicle without one (the simulator, ArduPilot SITL).

Follows the vehicle over MAVLink (position, attitude, gimbal: the same link and pose timeline the pipeline uses),
renders what its camera sees (the sea, configured boats from ``../shared/media`` photos) and sends H.264 in
MPEG-TS over UDP, like a drone's video link: read it as a ``udp://0.0.0.0:PORT`` source (the drone's
``video_source``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

HELP = "render a drone camera from a MAVLink vehicle's pose and send it as H.264/MPEG-TS over UDP (sim, SITL)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="MAVLink connection, e.g. udp:127.0.0.1:14550 (listen), tcp:127.0.0.1:5760 (SITL)")
    p.add_argument("--out", default="udp://127.0.0.1:5600", help="where to send the video (udp://HOST:PORT)")
    p.add_argument("--fps", type=float, default=3.0, help="frames per second (0.2-30, default 3)")
    p.add_argument("--size", default="640x480", help="frame size WxH (even numbers, default 640x480)")
    p.add_argument("--hfov", type=float, default=60.0, help="horizontal field of view in degrees (default 60)")
    p.add_argument("--boat", action="append", default=[], metavar="LAT,LON[,LEN_M[,HEADING_DEG]]",
                   help="a boat on the water (repeatable); heading = compass direction of the photo's long axis "
                        "(90: upright for a camera looking north)")
    p.add_argument("--media", default=None, help="folder of the shared media (boat photos); default: SEAWATCH_SHARED/media "
                   "or ../shared/media; without it boats are plain hulls")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0 = until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=10.0, help="wait this long for the vehicle (heartbeat)")
    p.add_argument("--system", type=int, default=None, metavar="ID", help="the vehicle's MAVLink system id")
    p.add_argument("--stream-rate", type=float, default=None, metavar="HZ",
                   help="ask the vehicle for all data streams at this rate (direct SITL TCP without MAVProxy)")


def _size(text: str) -> tuple[int, int]:
    from seawatch.errors import InputError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {text!r}: expected WxH, e.g. 640x480") from None
    if w % 2 or h % 2 or not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise InputError(f"--size {text!r}: width and height must be even, 16-4096 px")
    return w, h


def _media(arg: str | None):
    from pathlib import Path

    from seawatch.paths import shared_media_dir

    return Path(arg) if arg is not None else shared_media_dir()


def run(args: argparse.Namespace) -> int:
    from seawatch.drone.camera_stream import BoatSpec, CameraStreamer, LinkPoses, boat_targets, parse_udp_out
    from seawatch.drone.geometry import CameraIntrinsics
    from seawatch.drone.link import MavlinkLink
    from seawatch.errors import InputError

    # every argument checked before anything connects
    parse_udp_out(args.out)
    w, h = _size(args.size)
    if not (0.2 <= args.fps <= 30):
        raise InputError(f"--fps {args.fps:g}: must be 0.2-30")
    if not (5.0 <= args.hfov <= 170.0):
        raise InputError(f"--hfov {args.hfov:g}: must be 5-170 degrees")
    boats = [BoatSpec.parse(b, i) for i, b in enumerate(args.boat)]
    camera = CameraIntrinsics.from_fov(w, h, args.hfov)
    targets, bank = boat_targets(boats, _media(args.media)) if boats else ([], None)
    with MavlinkLink(args.url, require_params=False, stream_rate_hz=args.stream_rate,
                     target_system=args.system).open(args.timeout) as link:
        streamer = CameraStreamer(LinkPoses(link), camera, args.out, fps=args.fps, targets=targets, bank=bank).start()
        print(json.dumps({"streaming": args.out, "size": f"{w}x{h}", "fps": args.fps, "boats": len(targets)}), flush=True)
        try:
            end = time.monotonic() + args.seconds if args.seconds > 0 else float("inf")
            next_print = time.monotonic() + 5.0
            while time.monotonic() < end:
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))
                if time.monotonic() >= next_print:
                    next_print += 5.0
                    print(json.dumps(streamer.stats()), flush=True)
        finally:
            streamer.stop()
        print(json.dumps(streamer.stats()), flush=True)
    return 0
