"""``seawatch calibrate POINTS``: a fixed camera's pan, tilt, roll and field of view from ground control points.

POINTS is a CSV file (a header row ``x_px,y_px,lat_deg,lon_deg`` and optionally ``alt_m`` and ``name`` columns: where
each point is seen in the camera's picture, and its surveyed position; ``alt_m`` its height, empty for a point on the
surface) or a YAML / JSON file ``{points: [{x_px, y_px, lat_deg, lon_deg, alt_m?, name?}, ...], horizon_px: [[x, y],
...]}``. The camera's position and picture size come from the source's ``calibration`` in ``--config`` (``--source``),
or from ``--at`` and ``--size``. It prints the fitted pose, each point's residual and ground error (and the error with
the pose fitted without it), the warnings, and the ``calibration`` section to paste into the source.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from seawatch.errors import ConfigError, InputError

HELP = "fit a fixed camera's pan, tilt, roll and field of view to ground control points (prints the calibration)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("points", metavar="POINTS", help="CSV (x_px,y_px,lat_deg,lon_deg[,alt_m][,name]) or YAML/JSON "
                   "{points: [...], horizon_px: [[x, y], ...]}")
    p.add_argument("--config", metavar="FILE", help="seawatch serve configuration holding the source")
    p.add_argument("--source", metavar="ID", help="the source in --config: its camera position, picture size, field of view")
    p.add_argument("--at", metavar="LAT,LON,ALT", help="the camera's position: degrees, degrees, metres (in the datum "
                   "of --surface-alt); overrides the source's")
    p.add_argument("--size", metavar="WxH", help="the picture's size in pixels, e.g. 1920x1080")
    p.add_argument("--hfov", type=float, metavar="DEG", help="horizontal field of view, kept as given (else fitted)")
    p.add_argument("--fit-hfov", action="store_true", help="fit the field of view even when the source gives one")
    p.add_argument("--fit-position", action="store_true", help="move the camera too (a GPS position that is off; "
                   "5 points at least)")
    p.add_argument("--horizon", action="append", default=[], metavar="X,Y",
                   help="a pixel on the sea horizon (repeat; two or more pin the tilt and roll)")
    p.add_argument("--surface-alt", type=float, metavar="M", help="height of the water / ground in the camera's datum "
                   "(default: the source's surface_alt_m, else 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _floats(text: str, n: int, what: str) -> list[float]:
    parts = [s.strip() for s in text.replace("x", ",").split(",")] if what == "--size" else [s.strip() for s in text.split(",")]
    try:
        vals = [float(s) for s in parts]
    except ValueError:
        vals = []
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise InputError(f"{what} {text!r}: expected {n} numbers")
    return vals


def read_points(path: str | Path) -> tuple[list, list[list[float]]]:
    """Control points and horizon pixels of a CSV, YAML or JSON file (InputError naming the file and row)."""
    from seawatch.drone.calibrate import ControlPoint
    from seawatch.vision.config import read_yaml_file

    path = Path(path)
    rows: list[dict]
    horizon: list = []
    if path.suffix.lower() == ".csv":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read it: {exc}") from None
        # a spreadsheet's CSV: commas, or (Excel in a country with decimal commas) semicolons or tabs between fields
        # with commas in the numbers
        head = text.splitlines()[0] if text.strip() else ""
        delim = max((";", "\t", ","), key=lambda d: (head.count(d), d == ","))
        decimal_comma = delim != ","
        reader = csv.DictReader(text.splitlines(), delimiter=delim)
        missing = {"x_px", "y_px", "lat_deg", "lon_deg"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}: the header needs x_px, y_px, lat_deg, lon_deg (missing {', '.join(sorted(missing))}; "
                             f"read as fields separated by {'tabs' if delim == chr(9) else repr(delim)})")
        rows = list(reader)
        if decimal_comma:
            rows = [{k: (v.replace(",", ".") if k != "name" and isinstance(v, str) else v) for k, v in r.items()} for r in rows]
    else:
        data = read_yaml_file(path)  # YAML is a superset of JSON
        if not isinstance(data, dict) or not isinstance(data.get("points"), list):
            raise InputError(f"{path}: expected a mapping with a list 'points' (and optionally 'horizon_px')")
        rows = data["points"]
        horizon = data.get("horizon_px") or []
        if not isinstance(horizon, list) or not all(isinstance(h, (list, tuple)) and len(h) == 2 for h in horizon):
            raise InputError(f"{path}: horizon_px must be a list of [x, y] pixels")
    points = []
    for i, r in enumerate(rows):
        where = f"{path}: point {i + 1}"
        if not isinstance(r, dict):
            raise InputError(f"{where}: expected x_px, y_px, lat_deg, lon_deg")
        try:
            vals = {k: float(r[k]) for k in ("x_px", "y_px", "lat_deg", "lon_deg")}
            alt = r.get("alt_m")
            alt_m = None if alt is None or str(alt).strip() == "" else float(alt)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: x_px, y_px, lat_deg, lon_deg (and alt_m) must be numbers ({exc})") from None
        points.append(ControlPoint(**vals, alt_m=alt_m, name=str(r.get("name") or "")[:64]))
    try:
        horizon = [[float(a), float(b)] for a, b in horizon]
    except (TypeError, ValueError):
        raise InputError(f"{path}: horizon_px must be numbers") from None
    return points, horizon


def run(args: argparse.Namespace) -> int:
    from seawatch.drone.calibrate import fit_pose, report

    points, horizon = read_points(args.points)
    horizon += [_floats(h, 2, "--horizon") for h in args.horizon]
    at = size = None
    hfov = args.hfov
    surface = args.surface_alt
    distortion: dict[str, float] = {}
    if args.config or args.source:
        if not (args.config and args.source):
            raise InputError("--config and --source go together")
        from seawatch.service.config import load_config

        cfg = load_config(args.config)
        src = next((s for s in cfg.sources if s.id == args.source), None)
        if src is None:
            raise InputError(f"{args.config}: no source {args.source!r} (there are: {', '.join(s.id for s in cfg.sources) or 'none'})")
        if (why := cfg.calibration_refusal(src.id)) is not None:
            raise InputError(why)
        cal = src.calibration
        if cal is not None:
            if surface is None:
                surface = cal.surface_alt_m
            if cal.camera is not None:
                cam = cal.camera
                size = (cam.width_px, cam.height_px)
                distortion = {k: getattr(cam, k) for k in ("k1", "k2", "p1", "p2", "k3")}
                if hfov is None and not args.fit_hfov:
                    k = cam.build()
                    hfov = math.degrees(2 * math.atan((k.width_px / 2) / k.fx_px))
            if cal.surveyed is not None:
                at = (cal.surveyed.lat_deg, cal.surveyed.lon_deg, cal.surveyed.alt_m)
    if args.at:
        at = tuple(_floats(args.at, 3, "--at"))
    if args.size:
        w, h = _floats(args.size, 2, "--size")
        size = (int(w), int(h))
    if at is None:
        raise ConfigError("the camera's position is unknown: give --at LAT,LON,ALT (the camera's latitude and longitude "
                          "in degrees, its height in metres)" + (
                              f"; source {args.source!r} has no calibration.surveyed" if args.source else
                              " or a --config and --source with a surveyed pose"))
    if size is None:
        raise ConfigError("the picture's size is unknown: give --size WxH (the camera's full-size picture, e.g. "
                          "1920x1080)" + (f"; source {args.source!r} has no calibration.camera" if args.source else
                                          " or a --config and --source with calibration.camera"))
    fit = fit_pose(points, width_px=size[0], height_px=size[1], lat_deg=at[0], lon_deg=at[1], alt_m=at[2],
                   hfov_deg=hfov, fit_position=args.fit_position, surface_alt_m=surface or 0.0, horizon_px=horizon,
                   distortion=distortion)
    section = fit.config()
    failed = not all(math.isfinite(r) for r in fit.residual_px)
    if args.json:
        print(json.dumps({"calibration": section, "fitted": list(fit.fitted), "rms_px": fit.rms_px,
                          "points": [{"name": p.name, "x_px": p.x_px, "y_px": p.y_px, "residual_px": _num(r),
                                      "ground_error_m": _num(g), "left_out_ground_error_m": _num(lo)}
                                     for p, r, g, lo in zip(fit.points, fit.residual_px, fit.ground_error_m,
                                                            fit.loo_ground_error_m)],
                          "horizon_residual_px": [float(v) for v in fit.horizon_residual_px],
                          "warnings": fit.warnings, "ok": not failed}, indent=2))
    else:
        import yaml

        print(report(fit))
        print()
        print(f"# the source's calibration (seawatch calibrate {Path(args.points).name}):")
        print(yaml.safe_dump({"calibration": section}, sort_keys=False, default_flow_style=None).rstrip())
    return 1 if failed else 0


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
