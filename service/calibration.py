"""Fitting a fixed camera's pose from the web UI (``POST /api/sources/{id}/calibration/fit``, the calibration page).

The page sends the points an installer marked (a pixel in the camera's picture, its position on the map) and any
horizon pixels; this answers the fitted ``calibration`` section with how well it holds (``seawatch.drone.calibrate``),
where the fitted pose puts each point in the picture (to draw), the fitted view for the map, and the same points'
ground errors under the calibration the camera runs with now, so "better or worse than now" is a number. Nothing is
saved: the configuration file is the installer's (the page prints the section to paste into it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from seawatch.errors import InputError

MAX_API_POINTS = 60  # each point is refitted once left out: 60 fits of a few ms, well under a second on 2 cores


class CalPointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x_px: float = Field(ge=0, le=16384, description="where the point is seen: pixel x in the full-size picture")
    y_px: float = Field(ge=0, le=16384, description="pixel y (down from the top)")
    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)
    alt_m: float | None = Field(None, ge=-500, le=10000, description="its height in the calibration's datum; "
                                "none: on the surface (surface_alt_m)")
    name: str = Field("", max_length=64)


class CameraAtIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)
    alt_m: float = Field(ge=-500, le=10000, description="camera height in the calibration's datum")


class CalibrationFitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: list[CalPointIn] = Field(max_length=MAX_API_POINTS)
    horizon_px: list[tuple[float, float]] = Field([], max_length=20, description="pixels on the sea horizon")
    width_px: int = Field(gt=0, le=16384, description="the picture's size as the camera sends it")
    height_px: int = Field(gt=0, le=16384)
    camera: CameraAtIn | None = Field(None, description="the camera's position; default: the source's surveyed one")
    hfov_deg: float | None = Field(None, gt=0, lt=170, description="keep this field of view; none: fit it")
    fit_position: bool = Field(False, description="move the camera too (5 points at least)")
    surface_alt_m: float | None = Field(None, ge=-500, le=10000, description="default: the source's, else 0")


def _view(pose, hfov_deg: float, surface_alt_m: float) -> dict[str, Any]:
    """The fitted camera as the map draws a camera (the sources' ``view``)."""
    drop_m = pose.alt_m - surface_alt_m
    tilt = pose.gimbal_pitch_deg
    reach_m = drop_m / math.tan(math.radians(-tilt)) if tilt < -0.5 and drop_m > 0 else 5000.0
    return {"lat_deg": pose.lat_deg, "lon_deg": pose.lon_deg, "alt_m": pose.alt_m, "pan_deg": pose.gimbal_yaw_deg % 360.0,
            "tilt_deg": tilt, "hfov_deg": round(hfov_deg, 2), "range_m": round(min(5000.0, max(200.0, 2 * reach_m)), 1)}


def _num(v: float) -> float | None:
    return round(float(v), 3) if math.isfinite(v) else None


def _current_errors(spec, points, width_px: int, height_px: int) -> dict[str, Any] | None:
    """The points' ground errors under the calibration the source runs with now (None when it has none)."""
    from seawatch.drone.geometry import latlon_to_offsets

    cal = spec.calibration
    if cal is None:
        return None
    note = None
    if cal.camera is not None and (cal.camera.width_px, cal.camera.height_px) != (width_px, height_px):
        note = (f"the configured calibration is for a {cal.camera.width_px}x{cal.camera.height_px} picture; the camera "
                f"sends {width_px}x{height_px}, so it places every event wrong")
    try:
        locator = cal.build()
    except Exception as exc:  # noqa: BLE001 - a calibration that does not build is reported, not raised
        return {"ground_error_m": [None] * len(points), "note": f"the configured calibration does not build: {exc}"}
    out = []
    for p in points:
        g = locator.locate(np.array([[p.x_px, p.y_px]]))
        if not g.valid[0]:
            out.append(None)
            continue
        n, e = latlon_to_offsets(p.lat_deg, p.lon_deg, g.lat_deg[:1], g.lon_deg[:1])
        out.append(_num(math.hypot(n[0], e[0])))
    return {"ground_error_m": out, "note": note}


def fit_for_source(spec, body: CalibrationFitIn) -> dict[str, Any]:
    """The fit of ``body``'s points for source ``spec`` (a pipeline SourceConfig), as the API answers it."""
    from seawatch.drone.calibrate import ControlPoint, fit_pose
    from seawatch.drone.geometry import GeoLocator

    cal = spec.calibration
    at = body.camera
    if at is None:
        if cal is None or cal.surveyed is None:
            raise InputError(f"source {spec.id!r} has no surveyed position: give the camera's position (camera: "
                             "lat_deg, lon_deg, alt_m)")
        at = CameraAtIn(lat_deg=cal.surveyed.lat_deg, lon_deg=cal.surveyed.lon_deg, alt_m=cal.surveyed.alt_m)
    surface = body.surface_alt_m if body.surface_alt_m is not None else (cal.surface_alt_m if cal is not None else 0.0)
    distortion = {}
    if cal is not None and cal.camera is not None and (cal.camera.width_px, cal.camera.height_px) == (body.width_px, body.height_px):
        distortion = {k: getattr(cal.camera, k) for k in ("k1", "k2", "p1", "p2", "k3")}
    points = [ControlPoint(p.x_px, p.y_px, p.lat_deg, p.lon_deg, p.alt_m, p.name) for p in body.points]
    fit = fit_pose(points, width_px=body.width_px, height_px=body.height_px, lat_deg=at.lat_deg, lon_deg=at.lon_deg,
                   alt_m=at.alt_m, hfov_deg=body.hfov_deg, fit_position=body.fit_position, surface_alt_m=surface,
                   horizon_px=[list(h) for h in body.horizon_px], distortion=distortion)
    alts = [surface if p.alt_m is None else p.alt_m for p in points]
    proj, _ = GeoLocator(fit.intrinsics, surface_alt_m=surface).project(
        [p.lat_deg for p in points], [p.lon_deg for p in points], alts, fit.pose)
    return {
        "source_id": spec.id,
        "calibration": fit.config(),
        "fitted": list(fit.fitted),
        "rms_px": _num(fit.rms_px),
        "ok": bool(np.isfinite(fit.residual_px).all()),
        "points": [{"name": p.name, "residual_px": _num(r), "ground_error_m": _num(g), "left_out_ground_error_m": _num(lo),
                    "projected_px": [_num(x), _num(y)]}
                   for p, r, g, lo, (x, y) in zip(points, fit.residual_px, fit.ground_error_m, fit.loo_ground_error_m, proj)],
        "horizon_residual_px": [_num(v) for v in fit.horizon_residual_px],
        "warnings": fit.warnings,
        "view": _view(fit.pose, fit.hfov_deg, surface),
        "current": _current_errors(spec, points, body.width_px, body.height_px),
    }
