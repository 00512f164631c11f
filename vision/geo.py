"""Geo-reference of a frame for the rules: fixed-camera calibration or a drone pose at the frame's capture time.

The rules and zones speak the small :class:`~seawatch.vision.zones.Locator` protocol (``locate(xy_px (N, 2)) ->
(N, 3)`` lat, lon, 1-sigma uncertainty in metres, NaN off the ground). The drone package's locators answer with
a richer ``GroundPoints`` (a full covariance, a reason per pixel), so they do not satisfy it as they are;
:class:`FrameLocator` adapts them and remembers what it located, so that :class:`GeoEnricher` can put the full
1-sigma ellipse (not just a radius) on events and, when a drone pose is stale, the reason why an event has no
position.

- :class:`SourceGeo` is one source's geo-reference, built once: ``SourceGeo.fixed(CalibrationConfig)`` or
  ``SourceGeo.drone(timeline, geolocator)``. ``frame_locator(capture_time_ns)`` gives the locator of one frame
  (for a drone, the pose interpolated to that time; a stale pose gives a locator that locates nothing and says
  why).
- :class:`GeoEnricher` is an ``Event -> Event`` enricher for the rule engine.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from seawatch.errors import ConfigError
from seawatch.vision.events import Event, GeoPosition

log = logging.getLogger(__name__)

# ellipse_from_cov(cov, confidence) scales by sqrt(-2 ln(1 - confidence)); this confidence makes that 1 (1 sigma)
_ONE_SIGMA_2D = 1.0 - math.exp(-0.5)
GEO_REASONS_OVERRIDABLE = (
    "source is not geo-referenced (no calibration or pose for this frame)",
    "the anchor point does not hit the ground (above the horizon or outside the calibrated area)",
)


def one_sigma_ellipses(points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N,)`` 1-sigma semi-major, semi-minor (m) and major-axis azimuth (deg from north) of ``GroundPoints``.

    NaN where the point is invalid, inf where the error is unbounded (a perturbation loses the ground).
    """
    from seawatch.drone.geometry import ellipse_from_cov

    return ellipse_from_cov(np.asarray(points.cov_ne_m2, float), confidence=_ONE_SIGMA_2D)


class FrameLocator:
    """Pixels of ONE frame -> ground, as the vision ``Locator`` protocol wants it.

    Args:
        ground_fn: ``pixels (N, 2) -> GroundPoints`` (a fixed camera's ``locate``, or a ``GeoLocator`` bound to
            the frame's pose), or None when the frame has no geo-reference (then every pixel is off the ground).
        reason: why the frame has no geo-reference (a stale drone pose), else None.
        kind: ``calibration`` or ``drone_pose`` (goes into event attributes).
        pose: for a drone frame, :func:`pose_snapshot` of the pose used (goes into ``attributes["geo_pose"]``).
    """

    def __init__(self, ground_fn: Callable[[np.ndarray], Any] | None, reason: str | None = None, kind: str = "",
                 pose: dict[str, Any] | None = None) -> None:
        self._fn = ground_fn
        self.reason = reason
        self.kind = kind
        # the drone pose this frame was geotagged with (pose_snapshot), kept with the events located in it
        self.pose = pose
        # (lat, lon) of every position handed out -> its full ellipse, so an event carrying that position can
        # be given the ellipse by the enricher (the rules keep only the radius)
        self.ellipses: dict[tuple[float, float], GeoPosition] = {}
        self._memo: dict[tuple[float, float], tuple] = {}

    @property
    def stale(self) -> bool:
        return self._fn is None

    def ground_points(self, xy_px: np.ndarray):
        """``GroundPoints`` for pixels ``(N, 2)`` (all invalid, with ``reason``, when the frame has no pose)."""
        from seawatch.drone.geometry import _as_pixels, _empty

        px = _as_pixels(xy_px)
        if self._fn is None:
            return _empty(px.shape[0], self.reason or "no geo-reference")
        return self._fn(px)

    def _rows(self, pts: np.ndarray) -> list[tuple]:
        """Per pixel ``(lat, lon, major_1sigma, minor_1sigma, orientation, reason)``, computed once per pixel
        and frame (zones, rules and the identity stage ask for the same waterline points)."""
        keys = [(float(x), float(y)) for x, y in pts]
        todo = sorted({k for k in keys if k not in self._memo})
        if todo:
            g = self.ground_points(np.asarray(todo, np.float64))
            major, minor, orient = one_sigma_ellipses(g)
            for i, k in enumerate(todo):
                if not bool(g.valid[i]) or not (np.isfinite(g.lat_deg[i]) and np.isfinite(g.lon_deg[i])):
                    self._memo[k] = (np.nan, np.nan, np.nan, np.nan, np.nan, g.reasons[i] or self.reason or "no ground position")
                else:
                    self._memo[k] = (float(g.lat_deg[i]), float(g.lon_deg[i]), float(major[i]), float(minor[i]),
                                     float(orient[i]) if np.isfinite(orient[i]) else 0.0, None)
        return [self._memo[k] for k in keys]

    def locate(self, xy_px: np.ndarray) -> np.ndarray:
        """``(N, 3) float64``: lat_deg, lon_deg, 1-sigma horizontal uncertainty (m); NaN rows off the ground."""
        pts = np.asarray(xy_px, np.float64).reshape(-1, 2)
        out = np.full((pts.shape[0], 3), np.nan)
        if pts.shape[0] == 0 or self._fn is None:
            return out
        for i, (lat, lon, major, minor, orient, _) in enumerate(self._rows(pts)):
            if not np.isfinite(lat):
                continue
            # an unbounded error (inf) stays inf: the rules then report no position, zones still use lat/lon
            out[i] = (lat, lon, major if np.isfinite(major) else np.inf)
            if np.isfinite(major) and np.isfinite(minor):
                self.ellipses[(lat, lon)] = GeoPosition(lat, lon, major, min(minor, major), orient)
        return out

    def reasons(self, xy_px: np.ndarray) -> list[str | None]:
        """Per pixel: None where it has a ground position, else why not (above the horizon, no pose...)."""
        pts = np.asarray(xy_px, np.float64).reshape(-1, 2)
        if self._fn is None:
            return [self.reason or "no geo-reference"] * pts.shape[0]
        return [row[5] for row in self._rows(pts)] if pts.shape[0] else []

    def geo_positions(self, xy_px: np.ndarray) -> list[tuple[GeoPosition | None, str | None]]:
        """One ``(GeoPosition, None)`` or ``(None, reason)`` per pixel (full 1-sigma ellipses)."""
        pts = np.asarray(xy_px, np.float64).reshape(-1, 2)
        if pts.shape[0] == 0:
            return []
        if self._fn is None:
            return [(None, self.reason or "no geo-reference")] * pts.shape[0]
        out: list[tuple[GeoPosition | None, str | None]] = []
        for lat, lon, major, minor, orient, reason in self._rows(pts):
            if not np.isfinite(lat):
                out.append((None, reason))
            elif not (np.isfinite(major) and np.isfinite(minor)):
                out.append((None, "position error is unbounded (the point is near the horizon)"))
            else:
                out.append((GeoPosition(lat, lon, major, min(minor, major), orient), None))
        return out


def pose_snapshot(fix, capture_time_ns: int, timeline=None) -> dict[str, Any]:
    """The pose a drone frame was geotagged with, as plain JSON values (event attribute ``geo_pose``): camera
    position and attitude, gimbal, the frame's capture time and the telemetry time looked up, and how far the
    nearest position / attitude samples were from it (``*_age_s``)."""
    p = fix.pose
    out: dict[str, Any] = {
        "vehicle_id": getattr(timeline, "vehicle_id", None),
        "capture_time_ns": int(capture_time_ns),
        "telemetry_time_ns": int(fix.time_ns),
        "latency_s": getattr(timeline, "latency_ns", 0) / 1e9,
        "position_age_s": round(float(fix.position_age_s), 6),
        "attitude_age_s": round(float(fix.attitude_age_s), 6),
    }
    for name in ("lat_deg", "lon_deg", "alt_m", "roll_deg", "pitch_deg", "yaw_deg", "gimbal_roll_deg",
                 "gimbal_pitch_deg", "gimbal_yaw_deg"):
        out[name] = float(getattr(p, name))
    out["gimbal_frame"] = p.gimbal_frame
    out["velocity_ned_m_s"] = [float(v) for v in p.velocity_ned_m_s]
    return out


class SourceGeo:
    """One source's geo-reference (built once), giving a :class:`FrameLocator` per frame."""

    def __init__(self, source_id: str, *, fixed=None, timeline=None, geolocator=None) -> None:
        if fixed is None and (timeline is None or geolocator is None):
            raise ConfigError(f"source {source_id!r}: a geo-reference needs a calibration, or a pose timeline and a camera")
        self.source_id = source_id
        self._fixed = fixed
        self.timeline = timeline
        self.geolocator = geolocator

    @classmethod
    def from_calibration(cls, source_id: str, calibration) -> "SourceGeo":
        """From a ``seawatch.drone.config.CalibrationConfig`` (surveyed pose or >= 4 GCPs)."""
        try:
            fixed = calibration.build()
        except ConfigError as exc:
            raise ConfigError(f"source {source_id!r}: calibration: {exc}") from None
        return cls(source_id, fixed=fixed)

    @classmethod
    def from_drone(cls, source_id: str, timeline, geolocator) -> "SourceGeo":
        """From a ``PoseTimeline`` (fed by a MAVLink link or a replay) and a ``GeoLocator`` (the drone camera)."""
        return cls(source_id, timeline=timeline, geolocator=geolocator)

    @property
    def kind(self) -> str:
        return "calibration" if self._fixed is not None else "drone_pose"

    def frame_locator(self, capture_time_ns: int) -> FrameLocator:
        if self._fixed is not None:
            return FrameLocator(self._fixed.locate, None, "calibration")
        fix = self.timeline.pose_at(int(capture_time_ns))
        if fix.stale or fix.pose is None:
            return FrameLocator(None, f"no pose: {fix.reason}", "drone_pose")
        pose, loc = fix.pose, self.geolocator
        return FrameLocator(lambda px: loc.locate(px, pose), None, "drone_pose",
                            pose=pose_snapshot(fix, int(capture_time_ns), self.timeline))


class GeoEnricher:
    """``Event -> Event``: the full 1-sigma ellipse on events located in a recent frame (and, for a drone, the pose
    that frame was geotagged with, as ``attributes["geo_pose"]``), and the stale-pose reason on events of a frame
    without a pose.

    The pipeline calls :meth:`set_frame` with each frame's locator before the rules run.
    """

    def __init__(self, memory: int = 4096) -> None:
        self._frame: dict[str, FrameLocator | None] = {}
        self._ellipses: "OrderedDict[tuple[str, float, float], GeoPosition]" = OrderedDict()
        self._poses: dict[tuple[str, float, float], dict[str, Any]] = {}  # same keys: the drone pose behind each
        self._memory = int(memory)

    def set_frame(self, source_id: str, locator) -> None:
        # keep the previous frame's positions first: an end / update event may carry a position located in an
        # earlier frame that raised no event itself
        self._absorb(source_id)
        self._frame[source_id] = locator if isinstance(locator, FrameLocator) else None

    def _absorb(self, source_id: str) -> None:
        loc = self._frame.get(source_id)
        if loc is None or not loc.ellipses:
            return
        for (lat, lon), pos in loc.ellipses.items():
            key = (source_id, lat, lon)
            self._ellipses[key] = pos
            self._ellipses.move_to_end(key)
            if loc.pose is not None:
                self._poses[key] = loc.pose
            else:
                self._poses.pop(key, None)
        loc.ellipses.clear()
        while len(self._ellipses) > self._memory:
            key, _ = self._ellipses.popitem(last=False)
            self._poses.pop(key, None)

    def __call__(self, ev: Event) -> Event:
        self._absorb(ev.source_id)
        loc = self._frame.get(ev.source_id)
        if ev.geo is not None:
            key = (ev.source_id, ev.geo.lat_deg, ev.geo.lon_deg)
            pos = self._ellipses.get(key)
            if pos is not None and pos != ev.geo:
                ev = replace(ev, geo=pos)
            pose = self._poses.get(key)
            if pose is not None and ev.attributes.get("geo_pose") != pose:
                ev = replace(ev, attributes={**ev.attributes, "geo_pose": pose})
        elif loc is not None and loc.stale and ev.geo_reason in GEO_REASONS_OVERRIDABLE:
            ev = replace(ev, geo_reason=loc.reason)
        if loc is not None and "geo_reference" not in ev.attributes:
            ev = replace(ev, attributes={**ev.attributes, "geo_reference": loc.kind})
        return ev
