"""A fixed camera's pointing from ground control points: the pan, tilt, roll and horizontal field of view (and, when
asked, the position) that best put the points' surveyed positions where they are seen in the picture.

Nobody measures a mast camera's tilt to a tenth of a degree, and at a harbour camera's shallow angles a tenth of a
degree is tens of metres on the water. What an installer can give is where a few things the chart knows are in the
picture: a quay corner, a bollard, a beacon, the foot of a wind turbine; and, looking out to sea, the horizon. This
module fits the surveyed pose (``calibration.surveyed`` + ``camera.hfov_deg``) to them by least squares on the pixel
reprojection error, through the same projection the geolocator uses (``GeoLocator.project``: the earth's curvature,
the lens distortion), and says how good the result is where it matters, on the ground:

- each point's residual in pixels, and its ground error: how far from its surveyed position the fitted pose places
  the pixel where it was seen (the error an event there would have);
- the same with the pose fitted without that point (leave one out, 4 points or more): an honest estimate of the
  error elsewhere in the picture, which a pose that merely bends to its own points hides;
- warnings for what makes a fit weak: too few points, points bunched in a corner (the field of view then rests on
  little), one point far off the others (a wrong click or a wrong chart position), a point above the fitted horizon.

A horizon (two or more pixels on the sea horizon) pins tilt and roll: its apparent dip below the level is known from
the camera's height (standard refraction), which is worth most when the control points are all near the camera.

Coordinates: pixels of the picture as the camera sends it (x right, y down, from the top-left corner); WGS84
latitude / longitude; heights in the calibration's vertical datum (the one ``surface_alt_m`` and the camera's
``alt_m`` use, e.g. metres above mean sea level).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from seawatch.drone.geometry import (
    CameraIntrinsics,
    CameraPose,
    GeoLocator,
    geod,
    latlon_to_offsets,
)
from seawatch.errors import InputError

# apparent dip of the sea horizon below the level, degrees per sqrt(metre of height): 1.76 arcminutes x sqrt(h), the
# navigators' rule with standard terrestrial refraction (k = 0.13); geometric (no air) would be 1.93'
HORIZON_DIP_DEG_PER_SQRT_M = 1.76 / 60.0
MAX_POINTS = 200
BEHIND_PX = 1e4  # the residual of a point behind the camera or off the lens model (pushes the fit away from it)


@dataclass(frozen=True, slots=True)
class ControlPoint:
    """A point of the surface (or above it) seen at pixel (x_px, y_px), surveyed at (lat_deg, lon_deg, alt_m)."""

    x_px: float
    y_px: float
    lat_deg: float
    lon_deg: float
    alt_m: float | None = None  # None: on the surface (surface_alt_m)
    name: str = ""


@dataclass
class PoseFit:
    """The fitted pose and how well it holds.

    Attributes:
        pose: the camera pose (earth-frame pan = gimbal yaw, tilt = gimbal pitch, roll).
        intrinsics: the camera model with the fitted (or given) field of view.
        hfov_deg: its horizontal field of view.
        fitted: the names of the parameters fitted (pan_deg, tilt_deg, roll_deg, hfov_deg, position).
        residual_px: ``(N,)`` distance between where each point was seen and where the pose projects it.
        ground_error_m: ``(N,)`` distance between each point's surveyed position and where the pose places its pixel
            (NaN when the pixel does not meet the surface: above the fitted horizon).
        loo_ground_error_m: ``(N,)`` the same with the pose fitted without that point (NaN under 4 points).
        horizon_residual_px: ``(H,)`` how far each horizon pixel is from the fitted horizon, in pixels.
        warnings: what makes this fit weak, in words.
    """

    pose: CameraPose
    intrinsics: CameraIntrinsics
    hfov_deg: float
    fitted: tuple[str, ...]
    points: tuple[ControlPoint, ...]
    surface_alt_m: float
    residual_px: np.ndarray
    ground_error_m: np.ndarray
    loo_ground_error_m: np.ndarray
    horizon_residual_px: np.ndarray
    warnings: list[str] = field(default_factory=list)

    @property
    def rms_px(self) -> float:
        return float(np.sqrt(np.mean(self.residual_px ** 2)))

    def config(self) -> dict:
        """The ``calibration`` section of a source (intrinsics with the field of view, the surveyed pose)."""
        k = self.intrinsics
        cam: dict = {"width_px": k.width_px, "height_px": k.height_px, "hfov_deg": round(self.hfov_deg, 3)}
        for name in ("k1", "k2", "p1", "p2", "k3"):
            if getattr(k, name):
                cam[name] = getattr(k, name)
        p = self.pose
        return {"camera": cam,
                "surveyed": {"lat_deg": round(p.lat_deg, 7), "lon_deg": round(p.lon_deg, 7), "alt_m": round(p.alt_m, 2),
                             "pan_deg": round(p.gimbal_yaw_deg % 360.0, 3), "tilt_deg": round(p.gimbal_pitch_deg, 3),
                             "roll_deg": round(p.gimbal_roll_deg, 3)},
                "surface_alt_m": self.surface_alt_m}


def horizon_dip_deg(height_m: float) -> float:
    """Apparent dip of the sea horizon below the level for an eye ``height_m`` above the sea (standard refraction)."""
    return HORIZON_DIP_DEG_PER_SQRT_M * math.sqrt(max(0.0, height_m))


def _pose(lat: float, lon: float, alt: float, pan: float, tilt: float, roll: float) -> CameraPose:
    return CameraPose(lat, lon, alt, gimbal_roll_deg=roll, gimbal_pitch_deg=tilt, gimbal_yaw_deg=pan, gimbal_frame="earth")


class _Problem:
    """The least-squares problem: parameters [pan, tilt, roll, (hfov), (north_m, east_m, up_m)] -> pixel residuals."""

    def __init__(self, points: Sequence[ControlPoint], horizon_px: np.ndarray, width_px: int, height_px: int,
                 at: tuple[float, float, float], hfov_deg: float | None, fit_position: bool, surface_alt_m: float,
                 distortion: dict[str, float]):
        self.points = list(points)
        self.px = np.array([[p.x_px, p.y_px] for p in points], float).reshape(-1, 2)
        self.lat = np.array([p.lat_deg for p in points], float)
        self.lon = np.array([p.lon_deg for p in points], float)
        self.alt = np.array([surface_alt_m if p.alt_m is None else p.alt_m for p in points], float)
        self.horizon = horizon_px.reshape(-1, 2)
        self.w, self.h = width_px, height_px
        self.at = at
        self.hfov = hfov_deg
        self.fit_position = fit_position
        self.surface_alt_m = surface_alt_m
        self.distortion = distortion

    @property
    def names(self) -> tuple[str, ...]:
        return ("pan_deg", "tilt_deg", "roll_deg") + (("hfov_deg",) if self.hfov is None else ()) + \
            (("position",) if self.fit_position else ())

    def unpack(self, x: np.ndarray) -> tuple[CameraPose, CameraIntrinsics, float]:
        pan, tilt, roll = x[0], x[1], x[2]
        i = 3
        hfov = self.hfov
        if hfov is None:
            hfov = float(x[i])
            i += 1
        lat, lon, alt = self.at
        if self.fit_position:
            dn, de, du = x[i:i + 3]
            az = math.degrees(math.atan2(de, dn))
            lon2, lat2, _ = geod().fwd(lon, lat, az, math.hypot(dn, de))
            lat, lon, alt = lat2, lon2, alt + du
        k = CameraIntrinsics.from_fov(self.w, self.h, hfov, **self.distortion)
        return _pose(lat, lon, alt, float(pan), float(tilt), float(roll)), k, hfov

    def residuals(self, x: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        pose, k, _ = self.unpack(x)
        loc = GeoLocator(k, surface_alt_m=self.surface_alt_m)
        sel = slice(None) if keep is None else keep
        proj, _ = loc.project(self.lat[sel], self.lon[sel], self.alt[sel], pose)
        r = proj - self.px[sel]
        r = np.where(np.isfinite(r), r, BEHIND_PX).ravel()
        if len(self.horizon):
            r = np.concatenate([r, self.horizon_residuals(pose, k)])
        return r

    def horizon_residuals(self, pose: CameraPose, k: CameraIntrinsics) -> np.ndarray:
        """Each horizon pixel's elevation against the horizon's apparent dip, as pixels (x the focal length)."""
        xy = k.undistort(self.horizon)
        rays = np.column_stack([xy, np.ones(len(xy))]) @ pose.rotation_ned_from_camera().T  # NED
        elev = np.degrees(np.arctan2(-rays[:, 2], np.hypot(rays[:, 0], rays[:, 1])))
        dip = horizon_dip_deg(pose.alt_m - self.surface_alt_m)
        return np.radians(elev + dip) * k.fy_px


def _start(prob: _Problem) -> list[np.ndarray]:
    """Starting points: the pan towards the points, the tilt to their mean depression, a few fields of view."""
    lat, lon, alt = prob.at
    az, _, dist = geod().inv(np.full(len(prob.lat), lon), np.full(len(prob.lat), lat), prob.lon, prob.lat)
    az = np.asarray(az, float)
    dist = np.maximum(np.asarray(dist, float), 1.0)
    pan0 = math.degrees(math.atan2(np.sin(np.radians(az)).mean(), np.cos(np.radians(az)).mean()))
    tilt0 = -float(np.degrees(np.arctan2(alt - prob.alt, dist)).mean())
    fovs = [prob.hfov] if prob.hfov is not None else [60.0, 30.0, 95.0, 12.0]
    starts = []
    for f in fovs:
        # where the points' mean pixel is off the centre moves the start by the angle it stands for
        fx = (prob.w / 2) / math.tan(math.radians(f) / 2)
        dx = float(prob.px[:, 0].mean() - prob.w / 2) if len(prob.px) else 0.0
        dy = float(prob.px[:, 1].mean() - prob.h / 2) if len(prob.px) else 0.0
        x = [pan0 - math.degrees(math.atan2(dx, fx)), tilt0 + math.degrees(math.atan2(dy, fx)), 0.0]
        if prob.hfov is None:
            x.append(f)
        if prob.fit_position:
            x += [0.0, 0.0, 0.0]
        starts.append(np.array(x, float))
    return starts


def _solve(prob: _Problem, starts: list[np.ndarray], keep: np.ndarray | None = None) -> np.ndarray:
    from scipy.optimize import least_squares

    lo = [-np.inf, -90.0, -45.0] + ([1.0] if prob.hfov is None else []) + ([-500.0, -500.0, -200.0] if prob.fit_position else [])
    hi = [np.inf, 90.0, 45.0] + ([170.0] if prob.hfov is None else []) + ([500.0, 500.0, 200.0] if prob.fit_position else [])
    best = None
    for x0 in starts:
        x0 = np.clip(x0, np.array(lo) + 1e-6, np.array(hi) - 1e-6)
        # soft_l1 at 3 px: one wrong click pulls the pose much less than with plain squares (and stands out after)
        res = least_squares(prob.residuals, x0, bounds=(lo, hi), loss="soft_l1", f_scale=3.0, x_scale="jac",
                            kwargs={"keep": keep}, max_nfev=400)
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    return best.x


def _ground_errors(prob: _Problem, x: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    pose, k, _ = prob.unpack(x)
    out = np.full(len(idx), np.nan)
    for j, i in enumerate(idx):
        gp = GeoLocator(k, surface_alt_m=float(prob.alt[i])).locate(prob.px[i:i + 1], pose)
        if gp.valid[0]:
            north, east = latlon_to_offsets(float(prob.lat[i]), float(prob.lon[i]), gp.lat_deg[:1], gp.lon_deg[:1])
            out[j] = float(math.hypot(north[0], east[0]))
    return out


def fit_pose(points: Sequence[ControlPoint], *, width_px: int, height_px: int, lat_deg: float, lon_deg: float,
             alt_m: float, hfov_deg: float | None = None, fit_position: bool = False, surface_alt_m: float = 0.0,
             horizon_px: Sequence[Sequence[float]] = (), distortion: dict[str, float] | None = None) -> PoseFit:
    """Fit the pose of a camera at (lat_deg, lon_deg, alt_m) with a ``width_px x height_px`` picture.

    ``hfov_deg`` None fits the field of view too; ``fit_position`` moves the camera too (within 500 m, 200 m in
    height: a GPS reading that is off; needs 5 points). Raises InputError for what cannot be fitted."""
    pts = list(points)
    hz = np.asarray(horizon_px, float).reshape(-1, 2) if len(horizon_px) else np.zeros((0, 2))
    if not (0 < width_px <= 16384 and 0 < height_px <= 16384):
        raise InputError(f"picture size {width_px}x{height_px} is not a camera picture")
    if not (math.isfinite(lat_deg) and -90 <= lat_deg <= 90 and math.isfinite(lon_deg) and -180 <= lon_deg <= 180
            and math.isfinite(alt_m)):
        raise InputError(f"camera position {lat_deg}, {lon_deg}, {alt_m} m is not a position")
    if alt_m - surface_alt_m <= 0:
        raise InputError(f"the camera ({alt_m} m) must be above the surface ({surface_alt_m} m)")
    if hfov_deg is not None and not 0 < hfov_deg < 170:
        raise InputError(f"field of view {hfov_deg} deg is not in (0, 170)")
    if len(pts) > MAX_POINTS:
        raise InputError(f"{len(pts)} control points: at most {MAX_POINTS}")
    need = (3 if hfov_deg is None else 2) + (2 if fit_position else 0)
    if len(pts) < need:
        what = "a fitted field of view" if hfov_deg is None else "a given field of view"
        raise InputError(f"{len(pts)} control point(s): {need} at least for pan, tilt, roll and {what}"
                         + (" and the position" if fit_position else ""))
    for i, p in enumerate(pts):
        label = f"point {i + 1}" + (f" ({p.name})" if p.name else "")
        vals = (p.x_px, p.y_px, p.lat_deg, p.lon_deg) + (() if p.alt_m is None else (p.alt_m,))
        if not all(math.isfinite(v) for v in vals):
            raise InputError(f"{label}: a value is not a number")
        if not (0 <= p.x_px <= width_px and 0 <= p.y_px <= height_px):
            raise InputError(f"{label}: pixel ({p.x_px}, {p.y_px}) is outside the {width_px}x{height_px} picture")
        if not (-90 <= p.lat_deg <= 90 and -180 <= p.lon_deg <= 180):
            raise InputError(f"{label}: {p.lat_deg}, {p.lon_deg} is not a latitude, longitude")
        _, _, d = geod().inv(lon_deg, lat_deg, p.lon_deg, p.lat_deg)
        if d < 1.0:
            raise InputError(f"{label}: {d:.1f} m from the camera; a control point must be away from it")
        if d > 50_000:
            raise InputError(f"{label}: {d / 1000:.0f} km from the camera; a wrong position?")
    if not np.isfinite(hz).all() or ((hz < 0) | (hz > [width_px, height_px])).any():
        raise InputError("horizon pixels must be inside the picture")
    dist = {k: float(v) for k, v in (distortion or {}).items() if k in ("k1", "k2", "p1", "p2", "k3")}

    prob = _Problem(pts, hz, width_px, height_px, (lat_deg, lon_deg, alt_m), hfov_deg, fit_position, surface_alt_m, dist)
    x = _solve(prob, _start(prob))
    pose, k, hfov = prob.unpack(x)
    proj, _ = GeoLocator(k, surface_alt_m=surface_alt_m).project(prob.lat, prob.lon, prob.alt, pose)
    resid = np.hypot(*(proj - prob.px).T)
    resid = np.where(np.isfinite(resid), resid, np.inf)
    ground = _ground_errors(prob, x, range(len(pts)))
    loo = np.full(len(pts), np.nan)
    if len(pts) >= need + 1 and len(pts) >= 4:
        for i in range(len(pts)):
            keep = np.ones(len(pts), bool)
            keep[i] = False
            loo[i] = _ground_errors(prob, _solve(prob, [x], keep), [i])[0]
    hres = np.abs(prob.horizon_residuals(pose, k)) if len(hz) else np.zeros(0)
    fit = PoseFit(pose, k, hfov, prob.names, tuple(pts), surface_alt_m, resid, ground, loo, hres)
    fit.warnings = _warnings(fit, prob)
    return fit


def _warnings(fit: PoseFit, prob: _Problem) -> list[str]:
    out = []
    n = len(fit.points)
    name = (lambda i: f"point {i + 1}" + (f" ({fit.points[i].name})" if fit.points[i].name else ""))
    if not np.isfinite(fit.residual_px).all():
        bad = [name(i) for i in np.flatnonzero(~np.isfinite(fit.residual_px))]
        out.append(f"{', '.join(bad)} fell behind the fitted camera: the fit failed; check the pixels and positions")
    if n < 4:
        out.append(f"{n} points: the fit cannot be checked against a point it was not fitted to; add more (6 or more, "
                   "spread over the picture, near and far)")
    med = float(np.median(fit.residual_px[np.isfinite(fit.residual_px)])) if np.isfinite(fit.residual_px).any() else 0.0
    for i in np.flatnonzero(np.isfinite(fit.residual_px) & (fit.residual_px > max(8.0, 4 * med))):
        out.append(f"{name(int(i))} is {fit.residual_px[i]:.0f} px from where the others put it: a wrong click or a "
                   "wrong position? (try without it)")
    for i in np.flatnonzero(np.isnan(fit.ground_error_m) & np.isfinite(fit.residual_px)):
        out.append(f"{name(int(i))} is above the fitted horizon: it does not meet the surface at its height")
    if "hfov_deg" in fit.fitted:
        span = float(np.ptp(prob.px[:, 0])) / prob.w
        if span < 0.3:
            out.append(f"the points span {span:.0%} of the picture's width: the field of view rests on little; spread "
                       "them across the picture (or give the field of view)")
    if len(fit.horizon_residual_px) and fit.horizon_residual_px.max() > 5:
        out.append(f"the horizon is {fit.horizon_residual_px.max():.0f} px from the fitted one at worst: is the camera "
                   "height right, and is it the sea horizon (not a far shore)?")
    return out


def report(fit: PoseFit) -> str:
    """The fit in words: the pose, each point's residual and ground errors, the warnings."""
    p = fit.pose
    lines = [f"fitted {', '.join(fit.fitted)} from {len(fit.points)} control point(s)"
             + (f" and {len(fit.horizon_residual_px)} horizon pixel(s)" if len(fit.horizon_residual_px) else ""),
             f"  pan {p.gimbal_yaw_deg % 360:.2f} deg, tilt {p.gimbal_pitch_deg:.2f} deg, roll {p.gimbal_roll_deg:.2f} deg, "
             f"horizontal field of view {fit.hfov_deg:.2f} deg",
             f"  camera at {p.lat_deg:.6f}, {p.lon_deg:.6f}, {p.alt_m:.1f} m",
             f"  reprojection RMS {fit.rms_px:.1f} px",
             "  point                      pixel          residual  ground error  left out"]
    for i, (pt, r, g, lo) in enumerate(zip(fit.points, fit.residual_px, fit.ground_error_m, fit.loo_ground_error_m)):
        label = (f"{i + 1} {pt.name}" if pt.name else str(i + 1))[:24]
        lines.append(f"  {label:<24} {pt.x_px:7.1f},{pt.y_px:7.1f}  {r:7.1f} px  "
                     f"{'above horizon' if math.isnan(g) else f'{g:8.1f} m':>12}  "
                     f"{'' if math.isnan(lo) else f'{lo:8.1f} m'}")
    if np.isfinite(fit.loo_ground_error_m).any():
        lo = fit.loo_ground_error_m[np.isfinite(fit.loo_ground_error_m)]
        lines.append(f"  left-out ground error: median {np.median(lo):.1f} m, worst {lo.max():.1f} m "
                     "(each point against the pose fitted without it)")
    for w in fit.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
