"""The one entry point, ``seawatch``.

Each command lives in the module that owns it; that module defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Modules must not import heavy libraries (torch, ultralytics)
at import time, so ``seawatch --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from seawatch import __version__
from seawatch.errors import SeawatchError

# command path -> module implementing it
COMMANDS: dict[tuple[str, ...], str] = {
    ("models", "fetch"): "seawatch.vision.export.cmd_fetch",
    ("models", "list"): "seawatch.vision.cmd_models_list",
    ("models", "register"): "seawatch.vision.cmd_models_register",
    ("models", "quantize"): "seawatch.vision.export.cmd_quantize",
    ("models", "train"): "seawatch.vision.export.cmd_train",
    ("models", "soup"): "seawatch.vision.export.cmd_soup",
    ("detect",): "seawatch.vision.cmd_detect",
    ("run",): "seawatch.vision.cmd_run",
    ("evaluate",): "seawatch.vision.cmd_evaluate",
    ("bench",): "seawatch.vision.cmd_bench",
    ("ais", "show"): "seawatch.vision.identity.cmd_ais_show",
    ("drone", "replay"): "seawatch.drone.cmd_replay",
    ("drone", "status"): "seawatch.drone.cmd_status",
    ("drone", "sim"): "seawatch.drone.cmd_sim",
    ("drone", "patrol"): "seawatch.drone.cmd_patrol",
    ("drone", "abort"): "seawatch.drone.cmd_abort",
    ("drone", "camera"): "seawatch.drone.cmd_camera",
    ("config", "check"): "seawatch.service.cmd_config_check",
    ("calibrate",): "seawatch.service.cmd_calibrate",
    ("reviews", "export"): "seawatch.service.cmd_reviews_export",
    ("retention", "run"): "seawatch.service.cmd_retention",
    ("serve",): "seawatch.service.cmd_serve",
}

GROUP_HELP = {
    "models": "provision, list, register, quantize, train and average detection models",
    "drone": "MAVLink drones: status, replay, simulate, patrol, abort, camera",
    "config": "validate a configuration file and explain every error",
    "ais": "AIS: read NMEA from a file or socket and show the vessel table",
    "reviews": "the review desk's verdicts as training data of your own cameras",
    "retention": "delete expired events and media now (seawatch serve does it periodically)",
}


class _Unavailable:
    """Stands in for a command whose module cannot be imported; running it explains why."""

    def __init__(self, path: tuple[str, ...], exc: ImportError):
        self.reason = f"{exc}"
        self.HELP = f"(unavailable: {exc})"
        self.name = " ".join(path)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER)

    def run(self, args: argparse.Namespace) -> int:
        raise SeawatchError(f"`seawatch {self.name}` is unavailable: {self.reason}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seawatch", description="Seawatch: port and wind-farm watch.")
    parser.add_argument("--version", action="version", version=f"seawatch {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # an optional dependency is missing: the other commands still work
            module = _Unavailable(path, exc)
        if len(path) == 1:
            sub = top.add_parser(path[0], help=module.HELP, description=module.HELP)
        else:
            if path[0] not in groups:
                gp = top.add_parser(path[0], help=GROUP_HELP.get(path[0], ""))
                groups[path[0]] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
                gp.set_defaults(_group_parser=gp)
            sub = groups[path[0]].add_parser(path[1], help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


_COORDINATES = re.compile(r"^-\d[\d.,;\s-]*[,;][\d.,;\s-]*$")  # "-35.36,149.16;..." (not a plain negative number)


def join_coordinate_values(argv: list[str]) -> list[str]:
    """``--opt -35.36,149.16`` as ``--opt=-35.36,149.16``: argparse takes a value that starts with ``-`` and is not a
    plain number for an option, so southern or western coordinates (ArduPilot SITL's home is at -35.36) were refused
    with "expected one argument"."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" not in a and i + 1 < len(argv) and _COORDINATES.match(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_coordinate_values(sys.argv[1:] if argv is None else list(argv)))
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    run = getattr(args, "_run", None)
    if run is None:
        (getattr(args, "_group_parser", None) or parser).print_help()
        return 2
    try:
        rc = int(run(args) or 0)
        sys.stdout.flush()  # here, so a reader that has gone is a BrokenPipeError below, not a traceback at exit
        return rc
    except SeawatchError as exc:
        print(f"seawatch: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("seawatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `seawatch ... | head`: the reader has gone, nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141
