"""Fitting a fixed camera's pose from the web UI (``POST /api/sources/{id}/calibration/fit``, the calibration page).

The page sends the points an installer marked (a pixel in the camera's picture, its position on the map) and any
horizon pixels; this answers the fitted ``calibration`` section with how well it holds (``seawatch.drone.calibrate``),
where the fitted pose puts each point in the picture (to draw), the fitted view for the map, and the same points'
ground errors under the calibration the camera runs with now, so "better or worse than now" is a number. The fit
saves nothing.

An administrator may then apply the fitted section to the running service (``PUT /api/sources/{id}/calibration``,
:class:`CalibrationApplyIn`): it is stored (``EventStore.add_calibration``, with who, when, a note and the fit's
summary), the pipeline's geo-reference of the camera is swapped for it, and it stays in force over restarts until it
is reverted (``DELETE``) to the configured one. The configuration file stays the installer's: the log says what to
paste into it to make the calibration permanent. When the configured section changed after an operator
calibration was applied (:func:`config_section_sha256` is stored with it), the operator one is kept in force and the
change is reported (the log at start, ``config_changed_since`` in the API): the operator calibration was fitted to
what the camera sees, and an edit of the file may be about something else (an unrelated tidy-up, a distortion
term); the administrator decides, by reverting it or not. When the configured section equals it (it was pasted
in), the log says it can be reverted with nothing changing.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from seawatch.drone.config import CalibrationConfig
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


def _num(v: float) -> float | None:
    return round(float(v), 3) if math.isfinite(v) else None


def _current_errors(cal, points, width_px: int, height_px: int) -> dict[str, Any] | None:
    """The points' ground errors under ``cal``, the calibration the source runs with now (None when it has none)."""
    from seawatch.drone.geometry import latlon_to_offsets

    if cal is None:
        return None
    note = None
    if cal.camera is not None and (cal.camera.width_px, cal.camera.height_px) != (width_px, height_px):
        note = (f"the calibration in force is for a {cal.camera.width_px}x{cal.camera.height_px} picture; the camera "
                f"sends {width_px}x{height_px}, so it places every event wrong")
    try:
        locator = cal.build()
    except Exception as exc:  # noqa: BLE001 - a calibration that does not build is reported, not raised
        return {"ground_error_m": [None] * len(points), "note": f"the calibration in force does not build: {exc}"}
    out = []
    for p in points:
        g = locator.locate(np.array([[p.x_px, p.y_px]]))
        if not g.valid[0]:
            out.append(None)
            continue
        n, e = latlon_to_offsets(p.lat_deg, p.lon_deg, g.lat_deg[:1], g.lon_deg[:1])
        out.append(_num(math.hypot(n[0], e[0])))
    return {"ground_error_m": out, "note": note}


def fit_for_source(spec, body: CalibrationFitIn, current: CalibrationConfig | None = None) -> dict[str, Any]:
    """The fit of ``body``'s points for source ``spec`` (a pipeline SourceConfig), as the API answers it; ``current``
    is the calibration in force (an operator's), default the configured one."""
    from seawatch.drone.calibrate import ControlPoint, fit_pose
    from seawatch.drone.geometry import GeoLocator

    cal = current if current is not None else spec.calibration
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
        "view": calibration_view(CalibrationConfig.model_validate(fit.config())),  # as it would be applied
        "current": _current_errors(cal, points, body.width_px, body.height_px),
    }


# ---- applying a calibration to the running service ----------------------------------------------------------------
class FitSummaryIn(BaseModel):
    """How well the applied calibration fitted, as the calibration page's fit reported it (kept with it, shown in the
    history; the service does not recompute it)."""

    model_config = ConfigDict(extra="forbid")

    points: int | None = Field(None, ge=0, le=MAX_API_POINTS, description="control points fitted")
    horizon_points: int | None = Field(None, ge=0, le=20, description="sea-horizon pixels fitted")
    rms_px: float | None = Field(None, ge=0, le=1e6, description="RMS pixel residual of the points")
    median_ground_error_m: float | None = Field(None, ge=0, le=1e7, description="the points' median ground error")
    median_left_out_ground_error_m: float | None = Field(
        None, ge=0, le=1e7, description="median ground error of each point with the pose fitted without it")
    median_current_ground_error_m: float | None = Field(
        None, ge=0, le=1e7, description="the points' median ground error under the calibration in force before")
    fitted: list[str] = Field([], max_length=10, description="what was fitted (pan, tilt, roll, hfov, position)")
    warnings: list[str] = Field([], max_length=20, description="the fit's warnings")


class CalibrationApplyIn(BaseModel):
    """``PUT /api/sources/{id}/calibration``: the ``calibration`` section as the fit answers it (validated by the
    same model as the configuration file's), an optional note and the fit's summary."""

    model_config = ConfigDict(extra="forbid")

    calibration: CalibrationConfig = Field(description="the source's calibration section: camera intrinsics with a "
                                                       "surveyed pose (or >= 4 gcps), surface_alt_m")
    note: str = Field("", max_length=500, description="why (shown in the history and the log)")
    fit: FitSummaryIn | None = Field(None, description="the fit's summary numbers, kept with it")


def config_section_sha256(calibration: CalibrationConfig | None) -> str:
    """SHA-256 of a calibration section as the configuration validates it (defaults filled in, keys sorted), so the
    same section written differently in YAML hashes the same; ``None`` (no calibration) hashes as ``null``."""
    data = None if calibration is None else calibration.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True, allow_nan=False).encode()).hexdigest()


def same_calibration(a: CalibrationConfig | None, b: CalibrationConfig | None) -> bool:
    """The two sections place events alike (equal once validated, defaults filled in)."""
    if a is None or b is None:
        return a is b
    return a.model_dump(mode="json") == b.model_dump(mode="json")


def yaml_section(calibration: CalibrationConfig) -> str:
    """The section to paste under the source in the configuration (defaults left out), as one YAML text."""
    import yaml

    body = calibration.model_dump(mode="json", exclude_defaults=True)
    body.setdefault("surface_alt_m", calibration.surface_alt_m)
    return yaml.safe_dump({"calibration": body}, sort_keys=False, default_flow_style=None, width=1000).strip()


def calibration_view(calibration: CalibrationConfig | None) -> dict[str, Any] | None:
    """Position, pointing and horizontal field of view of a surveyed fixed camera (the map's view cone), or None (no
    calibration, or ground control points without a surveyed pose)."""
    cal = calibration
    if cal is None or cal.surveyed is None or cal.camera is None:
        return None
    k = cal.camera.build()
    hfov = 2 * math.degrees(math.atan(k.width_px / (2 * k.fx_px)))
    sv = cal.surveyed
    # how far the view cone is drawn: where the optical axis meets the surface, within 200 m .. 5 km
    drop_m = sv.alt_m - cal.surface_alt_m
    reach_m = drop_m / math.tan(math.radians(-sv.tilt_deg)) if sv.tilt_deg < -0.5 and drop_m > 0 else 5000.0
    return {"lat_deg": sv.lat_deg, "lon_deg": sv.lon_deg, "alt_m": sv.alt_m, "pan_deg": sv.pan_deg, "tilt_deg": sv.tilt_deg,
            "hfov_deg": round(hfov, 2), "range_m": round(min(5000.0, max(200.0, 2 * reach_m)), 1)}


def in_force(spec, row) -> tuple[CalibrationConfig | None, str | None]:
    """The calibration a fixed camera runs with and its origin: the operator's (``row``, a stored
    ``SourceCalibration`` in force, or None) over the configured one; ``(None, None)`` when it has neither."""
    if row is not None:
        return CalibrationConfig.model_validate(row.calibration), "operator"
    if spec.calibration is not None:
        return spec.calibration, "config"
    return None, None


def calibration_answer(spec, history: list) -> dict[str, Any]:
    """``GET /api/sources/{id}/calibration``: the calibration in force with its origin (``config`` / ``operator`` /
    null for none), who applied it, when and why, whether the configured section changed since, the configured one,
    and the history of applied calibrations (newest first, each ``in_force`` / ``superseded`` / ``reverted``)."""
    row = history[0] if history and history[0].reverted_ns is None else None
    cal, origin = in_force(spec, row)
    configured_sha = config_section_sha256(spec.calibration)
    out: dict[str, Any] = {
        "source_id": spec.id, "origin": origin,
        "calibration": None if cal is None else cal.model_dump(mode="json"),
        "view": calibration_view(cal),
        "applied_by": None, "applied_ns": None, "note": "", "fit": None, "id": None, "config_changed_since": None,
        "config_matches": None,
        "configured": None if spec.calibration is None else spec.calibration.model_dump(mode="json"),
        "configured_view": calibration_view(spec.calibration),
    }
    if row is not None:
        out.update(applied_by=row.created_by, applied_ns=row.created_ns, note=row.note, fit=row.fit, id=row.id,
                   config_changed_since=bool(row.config_sha256) and row.config_sha256 != configured_sha,
                   config_matches=same_calibration(cal, spec.calibration))
    items = []
    for i, h in enumerate(history):
        status = "reverted" if h.reverted_ns is not None else ("in_force" if i == 0 else "superseded")
        items.append({**h.to_dict(), "status": status})
    out["history"] = items
    return out
