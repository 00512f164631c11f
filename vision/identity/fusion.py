"""Camera-track / AIS association and per-track identity.

Each update takes the geolocated vessel tracks of one moment (from fixed-camera calibration or drone pose) and
the AIS vessel table, and:

1. extrapolates every AIS vessel's last position to the frame time by dead reckoning along its COG at its SOG
   (geodesic, ``pyproj.Geod`` WGS84), with an uncertainty that grows with the time since the report;
2. gates each (track, vessel) pair by the Mahalanobis distance with the combined covariance (the track's error
   ellipse, long along a camera's line of sight and narrow across it, plus the AIS prediction's isotropic sigma):
   within ``gate_sigmas``, and, when both are moving, by course difference. The distance is to the hull, not to
   the reported point: AIS gives the GNSS antenna's position and where it sits on the hull (type 5 / 24B
   dimensions), so the reference moves to the hull centre when the heading is known and half the hull (else the
   antenna's farthest reach) is free (the displacement is shortened by that much along its own direction);
   see :func:`gate_axes_m` for the caps: ``max_gate_m`` bounds how far the AIS side's uncertainty may widen the
   gate on each axis of the ellipse, never the camera's own ellipse, and ``max_gate_along_m`` is a hard outer
   bound. A track whose own ``gate_sigmas`` x semi-major axis exceeds ``max_gate_along_m`` is *too far to
   judge*: a miss means nothing there, so its identity says so (``too_far_to_judge``) and the rules raise no
   ``unidentified_vessel`` for it until it comes close enough;
3. assigns one-to-one with the Hungarian method (``scipy.optimize.linear_sum_assignment``) on a cost of squared
   Mahalanobis distance plus squared normalised course difference, halved for the MMSI the track had last time
   (hysteresis: two vessels passing each other do not swap identities on one noisy frame); when more than one AIS
   vessel lies inside a track's gate the association's confidence is shared among them by likelihood and the
   identity says ``ambiguous``;
4. gives every track a :class:`TrackIdentity`: ``ais+registry``, ``ais_only``, ``ocr_only`` or ``none``, a
   confidence, and a ``mismatch`` reason when hull text, AIS name, AIS MMSI and registry disagree.

Track course/speed: taken from the :class:`GeoTrack` when the caller knows it, else estimated from the
track's own positions over the last ``velocity_window_s``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from seawatch.drone.geometry import geod  # one shared WGS84 Geod (vision may use drone)
from seawatch.vision.identity.hulltext import similarity
from seawatch.vision.identity.ocr import HullRead
from seawatch.vision.identity.registry import RegistryEntry, VesselRegistry
from seawatch.vision.identity.vessels import VesselState, VesselTable

log = logging.getLogger(__name__)

KINDS = ("ais+registry", "ais_only", "ocr_only", "none")
_KN = 1852.0 / 3600.0
_INFEASIBLE = 1e9
# another AIS vessel inside a track's gate whose likelihood is at least this fraction of the chosen one's makes the
# association "ambiguous" (farther ones barely change the confidence, naming them would be noise)
_AMBIGUOUS_RATIO = 0.1


@dataclass(frozen=True, slots=True)
class GeoTrack:
    """A vessel track at one moment, on the ground.

    ``pos_sigma_m`` 1-sigma horizontal position error of the geolocation (camera calibration / drone pose), a
    circle, for callers that have nothing better; ``semi_major_m``/``semi_minor_m``/``orientation_deg`` the 1-sigma
    error ellipse when known (as :class:`~seawatch.vision.events.GeoPosition` has it: semi-axes in m, the major
    axis's azimuth in degrees clockwise from true north; for a camera the major axis lies along the line of sight),
    which the association uses instead of the circle; ``cog_deg``/``sog_mps`` when the caller has them (else the
    fuser estimates them); ``in_zone`` whether the track is inside a watch zone (for the rules); ``hull`` the
    track's voted hull-text read, if any.
    """

    track_id: int
    time_ns: int
    lat_deg: float
    lon_deg: float
    pos_sigma_m: float = 20.0
    cog_deg: float | None = None
    sog_mps: float | None = None
    in_zone: bool = True
    hull: HullRead | None = None
    semi_major_m: float | None = None
    semi_minor_m: float | None = None
    orientation_deg: float = 0.0

    def ellipse_m(self) -> tuple[float, float, float]:
        """(semi-major m, semi-minor m, major-axis azimuth deg) of the 1-sigma error ellipse: the given one when
        its axes are finite and ordered (semi-minor clipped to [1 m, semi-major]), else the ``pos_sigma_m``
        circle. Never raises: a bad ellipse falls back to the circle."""
        a, b = self.semi_major_m, self.semi_minor_m
        circle = max(1.0, float(self.pos_sigma_m)) if math.isfinite(self.pos_sigma_m) else 1.0
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
            return circle, circle, 0.0
        a = max(1.0, float(a))
        b = min(a, max(1.0, float(b)))
        theta = float(self.orientation_deg) % 180.0 if math.isfinite(self.orientation_deg) else 0.0
        return a, b, theta


@dataclass(frozen=True, slots=True)
class AisPrediction:
    """An AIS vessel's position extrapolated to a frame time."""

    mmsi: int
    lat_deg: float
    lon_deg: float
    sigma_m: float
    age_s: float
    cog_deg: float | None
    sog_mps: float | None
    # half-size of the hull around (lat_deg, lon_deg), m: a camera's waterline point may lie anywhere on the hull,
    # so this much of the distance is free (0 when the AIS static data gave no dimensions)
    extent_m: float = 0.0


@dataclass(frozen=True, slots=True)
class TrackIdentity:
    """Who a track is. ``kind`` in :data:`KINDS`; ``confidence`` in [0, 1] for that kind.

    ``mmsi``/``ais_name`` from the associated AIS vessel; ``registry`` the registry entry the identity rests on;
    ``hull_text`` the voted OCR text and ``hull_registry`` the entry it matched (may differ from ``registry``
    when the sources disagree); ``mismatch`` a sentence when sources disagree (None when they agree);
    ``registry_alerts`` reasons from the entry (blacklisted, licence_expired, ...); ``last_mmsi`` the MMSI this
    track was last associated with, kept after AIS goes quiet (for ``ais_dark``).
    """

    track_id: int
    time_ns: int
    kind: str
    confidence: float
    mmsi: int | None = None
    ais_name: str | None = None
    name: str | None = None
    hull_text: str | None = None
    registry: RegistryEntry | None = None
    distance_m: float | None = None
    ais_age_s: float | None = None
    mismatch: str | None = None
    registry_alerts: tuple[str, ...] = ()
    hull_registry: RegistryEntry | None = None
    last_mmsi: int | None = None
    last_mmsi_time_ns: int | None = None
    # why a track has no AIS match (kind ocr_only / none): the nearest AIS vessel, its distance and the gate
    unmatched_reason: str | None = None
    nearest_mmsi: int | None = None
    nearest_name: str | None = None
    nearest_distance_m: float | None = None
    nearest_gate_m: float | None = None
    # the track's error ellipse is so long (gate_sigmas x semi-major > max_gate_along_m) that no AIS match proves
    # nothing: "unknown: too far to judge"; the rules raise no unidentified_vessel for it
    too_far_to_judge: bool = False
    # several AIS vessels inside the track's gate: the sentence naming them (confidence is shared among them)
    ambiguous: str | None = None

    def as_attributes(self) -> dict:
        """Flat JSON-able attributes for an event."""
        out = {
            "identity": self.kind,
            "identity_confidence": round(self.confidence, 3),
            "mmsi": self.mmsi,
            "ais_name": self.ais_name,
            "vessel_name": self.name,
            "hull_text": self.hull_text,
            "registry_hull_number": self.registry.hull_number if self.registry else None,
            "hull_registry_hull_number": self.hull_registry.hull_number if self.hull_registry else None,
            "registry_source": self.registry.source if self.registry else None,
            "association_distance_m": None if self.distance_m is None else round(self.distance_m, 1),
            "ais_age_s": None if self.ais_age_s is None else round(self.ais_age_s, 1),
            "mismatch": self.mismatch,
            "registry_alerts": list(self.registry_alerts),
            "ais_unmatched_reason": self.unmatched_reason,
            "ais_nearest_mmsi": self.nearest_mmsi,
            "ais_nearest_name": self.nearest_name,
            "ais_nearest_distance_m": None if self.nearest_distance_m is None else round(self.nearest_distance_m, 1),
            "ais_nearest_gate_m": None if self.nearest_gate_m is None else round(self.nearest_gate_m, 1),
            "too_far_to_judge": True if self.too_far_to_judge else None,
            "ambiguous": self.ambiguous,
        }
        return {k: v for k, v in out.items() if v is not None and v != []}


@dataclass(frozen=True, slots=True)
class FusionConfig:
    max_ais_age_s: float = 360.0  # AIS reports older than this are not extrapolated (3-minute reporters: 540 s)
    ais_sigma_m: float = 10.0  # GNSS error of a fresh AIS position
    ais_sigma_growth_mps: float = 0.5  # + this x age (unknown acceleration / turn)
    ais_sigma_growth_frac: float = 0.15  # + this x distance run since the report (dead-reckoning error)
    gate_sigmas: float = 3.5  # 2-D: a true pair falls outside 3.5 sigma 0.2 % of the time (3 sigma: 1.1 %)
    # how far the AIS side's uncertainty (an old report's grown sigma) may widen the gate on either axis of the
    # track's ellipse; the camera's own ellipse (gate_sigmas x its semi-axis) is never cut by it
    max_gate_m: float = 500.0
    # hard outer bound of the gate on every axis (a track near the horizon never claims a vessel farther than
    # this); a track whose own gate_sigmas x semi-major exceeds it is too far to judge
    max_gate_along_m: float = 3000.0
    min_speed_for_course_mps: float = 1.5  # below this a course is noise
    course_gate_deg: float = 60.0
    course_scale_deg: float = 30.0
    hysteresis: float = 0.5  # cost multiplier for the track's previous MMSI
    velocity_window_s: float = 30.0
    min_velocity_span_s: float = 5.0
    ocr_min_confidence: float = 0.3
    ocr_min_match: float = 0.85  # registry fuzzy-match score for an OCR read
    name_mismatch_below: float = 0.6  # similarity under which two names are "different"
    max_hull_extent_m: float = 200.0  # AIS dimensions saturate at 511 m: never more slack than this

    def __post_init__(self) -> None:
        for name in ("gate_sigmas", "max_gate_m", "max_gate_along_m"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"FusionConfig.{name} must be a positive number, got {v!r}")
        if self.max_gate_along_m < self.max_gate_m:
            raise ValueError(f"FusionConfig.max_gate_along_m ({self.max_gate_along_m} m) must be at least "
                             f"max_gate_m ({self.max_gate_m} m): it is the outer bound of the gate")


@dataclass
class _TrackMemory:
    positions: deque = field(default_factory=lambda: deque(maxlen=64))
    mmsi: int | None = None
    mmsi_time_ns: int | None = None
    hits: int = 0  # consecutive updates associated with ``mmsi``
    last_seen_ns: int = 0


def extrapolate(states: Sequence[VesselState], time_ns: int, cfg: FusionConfig = FusionConfig()) -> list[AisPrediction]:
    """Dead-reckon each vessel's last position to ``time_ns`` (vectorised geodesic forward problem).

    Vessels without a position, or whose position is older than ``max_ais_age_s`` (or newer than the frame by
    more than that), are left out; a vessel that reports every 3 minutes (moored, at anchor, slow class B) keeps
    its report for three of its intervals (``VesselState.quiet_after_s``), so one or two reports lost on the air
    do not make it unidentified. A vessel with no SOG/COG, or slower than 0.1 kn, stays where it was.
    """
    rows = [s for s in states if s.has_position and s.position_time_ns is not None
            and abs(time_ns - s.position_time_ns) <= s.quiet_after_s(cfg.max_ais_age_s) * 1e9]
    if not rows:
        return []
    lat = np.array([s.lat_deg for s in rows], float)
    lon = np.array([s.lon_deg for s in rows], float)
    dt_s = np.array([(time_ns - s.position_time_ns) / 1e9 for s in rows], float)
    sog = np.array([(s.sog_kn or 0.0) * _KN if s.cog_deg is not None else 0.0 for s in rows], float)
    cog = np.array([s.cog_deg if s.cog_deg is not None else 0.0 for s in rows], float)
    run_m = sog * dt_s  # negative when the report is newer than the frame: dead-reckon backwards
    moving = (sog >= 0.1 * _KN) & (np.abs(run_m) > 0.01)  # under 0.1 kn a SOG is GNSS jitter at anchor
    plon, plat = lon.copy(), lat.copy()
    if moving.any():
        lo2, la2, _ = geod().fwd(lon[moving], lat[moving], cog[moving], run_m[moving])
        plon[moving], plat[moving] = lo2, la2
    age = np.abs(dt_s)
    sigma = cfg.ais_sigma_m + cfg.ais_sigma_growth_mps * age + cfg.ais_sigma_growth_frac * np.abs(run_m)
    # a speed without a course (COG "not available", common on class B): it moved that far, direction unknown
    blind = np.array([(s.sog_kn or 0.0) * _KN if s.cog_deg is None else 0.0 for s in rows], float) * age
    sigma = sigma + blind
    # the reported position is the GNSS antenna's, anywhere on the hull (TUI ISLA, 135 m: 5 m from her bow); with
    # the ship's heading known, move it to the hull centre and allow half the hull; without, allow the antenna's
    # farthest reach
    extent = np.zeros(len(rows))
    shift_m = np.zeros(len(rows))
    shift_az = np.zeros(len(rows))
    for i, s in enumerate(rows):
        hull = _hull_geometry(s, cfg)
        if hull is not None:
            extent[i], shift_m[i], shift_az[i] = hull
    shifted = shift_m > 0.01
    if shifted.any():
        lo2, la2, _ = geod().fwd(plon[shifted], plat[shifted], shift_az[shifted], shift_m[shifted])
        plon[shifted], plat[shifted] = lo2, la2
    return [
        AisPrediction(s.mmsi, float(plat[i]), float(plon[i]), float(sigma[i]), float(dt_s[i]), s.cog_deg,
                      None if s.sog_kn is None else s.sog_kn * _KN, float(extent[i]))
        for i, s in enumerate(rows)
    ]


def _hull_geometry(s: VesselState, cfg: FusionConfig) -> tuple[float, float, float] | None:
    """(extent m, shift m, shift azimuth deg) from a vessel's antenna position to its hull, or None without
    dimensions. Heading: the reported true heading, else the COG of a clearly moving vessel (at rest a COG is noise)."""
    bow, stern = s.to_bow_m, s.to_stern_m
    if bow is None or stern is None:
        return None
    port, stbd = s.to_port_m or 0.0, s.to_starboard_m or 0.0
    heading = s.heading_deg
    if heading is None and s.cog_deg is not None and (s.sog_kn or 0.0) * _KN >= cfg.min_speed_for_course_mps:
        heading = s.cog_deg
    if heading is None:
        return min(math.hypot(max(bow, stern), max(port, stbd)), cfg.max_hull_extent_m), 0.0, 0.0
    ahead, right = (bow - stern) / 2.0, (stbd - port) / 2.0
    extent = min(math.hypot((bow + stern) / 2.0, (port + stbd) / 2.0), cfg.max_hull_extent_m)
    return extent, math.hypot(ahead, right), (heading + math.degrees(math.atan2(right, ahead))) % 360.0


class _Geometry(NamedTuple):
    """(tracks x predictions) matrices of the association: distance to the reported point, distance to the hull,
    the hull distance's components along / across the track ellipse's major axis (m, absolute), the combined
    1-sigma on each axis (m), the gate's semi-axes (m), the Mahalanobis distance (sigmas) and the gate in the
    direction of the vessel (m); ``semi_major_m`` (tracks,) the track's own 1-sigma semi-major axis."""

    dist: np.ndarray
    eff: np.ndarray
    along: np.ndarray
    across: np.ndarray
    sig_along: np.ndarray
    sig_across: np.ndarray
    gate_along: np.ndarray
    gate_across: np.ndarray
    maha: np.ndarray
    gate: np.ndarray
    semi_major_m: np.ndarray

    @property
    def feasible(self) -> np.ndarray:
        """Inside the gate ellipse (a Mahalanobis test, with each axis capped as :func:`gate_axes_m` says)."""
        return (self.along / self.gate_along) ** 2 + (self.across / self.gate_across) ** 2 <= 1.0 + 1e-9


def gate_axes_m(semi_m, ais_sigma_m, cfg: FusionConfig):
    """Gate semi-axis (m) on one axis of a track's error ellipse: ``gate_sigmas`` x the combined 1-sigma
    sqrt(semi^2 + ais_sigma^2), capped at max(``max_gate_m``, ``gate_sigmas`` x semi) and at ``max_gate_along_m``.

    Why: the old blanket 500 m cap was there so that an old AIS report (whose sigma grows with its age) cannot
    open the gate wide; it must not cut the camera's own, measured uncertainty, which along a far boat's line
    of sight is kilometres (the cap cut it, and a boat with its AIS vessel inside its own ellipse alarmed as
    unidentified). So the cap bounds only the widening beyond the track's own extent, on each axis (across the
    line of sight the track's axis is metres, so the cap works there as before; for a circular track it is the
    old gate exactly), and ``max_gate_along_m`` is a hard outer bound for an absurd ellipse near the horizon."""
    semi = np.asarray(semi_m, float)
    g = cfg.gate_sigmas
    raw = g * np.sqrt(semi ** 2 + np.asarray(ais_sigma_m, float) ** 2)
    return np.minimum(np.minimum(raw, np.maximum(cfg.max_gate_m, g * semi)), cfg.max_gate_along_m)


def _angle_diff_deg(a, b):
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


class IdentityFuser:
    """Stateful per-camera-system fuser: call :meth:`update` once per frame time with all geolocated tracks."""

    def __init__(self, registry: VesselRegistry | None = None, config: FusionConfig | None = None,
                 *, track_ttl_s: float = 600.0) -> None:
        self.registry = registry if registry is not None else VesselRegistry()
        self.cfg = config or FusionConfig()
        self._mem: dict[int, _TrackMemory] = {}
        self._ttl_ns = int(track_ttl_s * 1e9)

    # -- track kinematics --------------------------------------------------------------------------------
    def _velocity(self, mem: _TrackMemory, t: GeoTrack) -> tuple[float | None, float | None]:
        """(course deg, speed m/s) of a track; course ``None`` unless the speed clearly exceeds its noise.

        From positions over ``velocity_window_s`` (end points), the speed's 1-sigma noise is about
        sqrt(2) x pos_sigma / span; a course is only trusted above 3 sigma of that (and ``min_speed``).
        """
        cfg = self.cfg
        if t.cog_deg is not None and t.sog_mps is not None:
            return (t.cog_deg if t.sog_mps >= cfg.min_speed_for_course_mps else None), t.sog_mps
        pts = [p for p in mem.positions if t.time_ns - p[0] <= cfg.velocity_window_s * 1e9]
        if len(pts) < 2:
            return None, None
        (t0, la0, lo0), (t1, la1, lo1) = pts[0], pts[-1]
        span = (t1 - t0) / 1e9
        if span < cfg.min_velocity_span_s:
            return None, None
        az, _, dist = geod().inv(lo0, la0, lo1, la1)
        speed = float(dist / span)
        noise = math.sqrt(2.0) * t.pos_sigma_m / span
        trusted = speed >= max(cfg.min_speed_for_course_mps, 3.0 * noise)
        return (float(az % 360.0) if trusted else None), speed

    # -- association ---------------------------------------------------------------------------------------
    def _geometry(self, tracks: Sequence[GeoTrack], preds: Sequence[AisPrediction]) -> _Geometry:
        """Every (track, prediction) pair's distance, distance to the hull and its components along / across the
        track's ellipse, combined sigmas, Mahalanobis distance and gate."""
        cfg = self.cfg
        tlat = np.array([t.lat_deg for t in tracks])[:, None]
        tlon = np.array([t.lon_deg for t in tracks])[:, None]
        plat = np.array([p.lat_deg for p in preds])[None, :]
        plon = np.array([p.lon_deg for p in preds])[None, :]
        shape = (len(tracks), len(preds))
        az, _, dist = geod().inv(np.broadcast_to(tlon, shape), np.broadcast_to(tlat, shape),
                                  np.broadcast_to(plon, shape), np.broadcast_to(plat, shape))
        dist = np.asarray(dist, float).reshape(shape)
        az = np.asarray(az, float).reshape(shape)
        ell = np.array([t.ellipse_m() for t in tracks], float).reshape(len(tracks), 3)
        a, b, theta = ell[:, 0:1], ell[:, 1:2], ell[:, 2:3]
        ps = np.array([p.sigma_m for p in preds], float)[None, :]
        # distance to the hull, not to its reference point (the hull's extent is free): the displacement is
        # shortened by the extent along its own direction, then split along / across the track's major axis
        eff = np.maximum(0.0, dist - np.array([p.extent_m for p in preds])[None, :])
        rel = np.radians(az - theta)
        along, across = np.abs(eff * np.cos(rel)), np.abs(eff * np.sin(rel))
        sig_along, sig_across = np.sqrt(a ** 2 + ps ** 2), np.sqrt(b ** 2 + ps ** 2)
        maha = np.sqrt((along / sig_along) ** 2 + (across / sig_across) ** 2)
        gate_along, gate_across = gate_axes_m(a, ps, cfg), gate_axes_m(b, ps, cfg)
        # the gate's radius in the direction of the vessel (what an operator compares the distance with)
        c, s = np.cos(rel), np.sin(rel)
        gate = 1.0 / np.sqrt((c / gate_along) ** 2 + (s / gate_across) ** 2)
        return _Geometry(dist, eff, along, across, sig_along, sig_across, gate_along, gate_across, maha, gate,
                         ell[:, 0])

    def too_far_to_judge(self, t: GeoTrack) -> bool:
        """Whether a track's own ``gate_sigmas`` x semi-major axis exceeds ``max_gate_along_m``: its gate is cut
        short of its own uncertainty, so no AIS vessel inside the gate says nothing about who it is."""
        return self.cfg.gate_sigmas * t.ellipse_m()[0] > self.cfg.max_gate_along_m

    def associate(self, tracks: Sequence[GeoTrack], preds: Sequence[AisPrediction],
                  kin: Sequence[tuple[float | None, float | None]],
                  geo: _Geometry | None = None) -> dict[int, tuple[int, float]]:
        """track index -> (prediction index, distance m), one-to-one. ``geo``: :meth:`_geometry` of the same pairs
        when already computed."""
        if not tracks or not preds:
            return {}
        cfg = self.cfg
        geo = geo or self._geometry(tracks, preds)
        dist = geo.dist
        cost = geo.maha ** 2
        feasible = geo.feasible
        # course: only where both the track and the AIS vessel are clearly moving
        t_cog = np.array([np.nan if k[0] is None else k[0] for k in kin])[:, None]
        p_cog = np.array([np.nan if p.cog_deg is None or (p.sog_mps or 0) < cfg.min_speed_for_course_mps
                          else p.cog_deg for p in preds])[None, :]
        dc = _angle_diff_deg(t_cog, p_cog)
        both = np.isfinite(dc)
        feasible &= ~(both & (dc > cfg.course_gate_deg))
        cost = cost + np.where(both, (np.nan_to_num(dc) / cfg.course_scale_deg) ** 2, 0.0)
        for i, t in enumerate(tracks):
            prev = self._mem.get(t.track_id)
            if prev is not None and prev.mmsi is not None:
                for j, p in enumerate(preds):
                    if p.mmsi == prev.mmsi:
                        cost[i, j] *= cfg.hysteresis
        cost = np.where(feasible, cost, _INFEASIBLE)
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        return {int(r): (int(c), float(dist[r, c])) for r, c in zip(rows, cols) if cost[r, c] < _INFEASIBLE}

    # -- identity ------------------------------------------------------------------------------------------
    def update(self, tracks: Sequence[GeoTrack], table: VesselTable | None, time_ns: int) -> dict[int, TrackIdentity]:
        """Identities of ``tracks`` at ``time_ns`` (track id -> identity)."""
        cfg = self.cfg
        for t in tracks:
            if not (math.isfinite(t.lat_deg) and math.isfinite(t.lon_deg)):
                raise ValueError(f"track {t.track_id}: position is not finite")
        states = table.snapshot(time_ns, with_position=True) if table is not None else []
        preds = extrapolate(states, time_ns, cfg)
        mems = []
        kin = []
        for t in tracks:
            mem = self._mem.setdefault(t.track_id, _TrackMemory())
            mem.positions.append((t.time_ns, t.lat_deg, t.lon_deg))
            mem.last_seen_ns = time_ns
            mems.append(mem)
            kin.append(self._velocity(mem, t))
        geo = self._geometry(tracks, preds) if tracks and preds else None
        pairs = self.associate(tracks, preds, kin, geo)
        out: dict[int, TrackIdentity] = {}
        for i, t in enumerate(tracks):
            mem = mems[i]
            pred = dist = None
            if i in pairs:
                j, dist = pairs[i]
                pred = preds[j]
                mem.hits = mem.hits + 1 if mem.mmsi == pred.mmsi else 1
                mem.mmsi, mem.mmsi_time_ns = pred.mmsi, time_ns
            else:
                mem.hits = 0
            state = table.get(pred.mmsi) if (pred is not None and table is not None) else None
            maha = share = None
            ambiguous = None
            if pred is not None:
                maha = float(geo.maha[i, j])
                share, ambiguous = self._ambiguity(i, j, preds, geo, table)
            ident = self._identity(t, pred, dist, state, mem, time_ns, maha=maha, share=share)
            if ambiguous:
                ident = replace(ident, ambiguous=ambiguous)
            if pred is None:
                ident = replace(ident, too_far_to_judge=self.too_far_to_judge(t),
                                **self._why_unmatched(i, tracks, preds, kin, pairs, table, len(states), geo))
            out[t.track_id] = ident
        # forget tracks not seen for a long time
        for tid in [k for k, m in self._mem.items() if time_ns - m.last_seen_ns > self._ttl_ns]:
            del self._mem[tid]
        return out

    def _ambiguity(self, i: int, j: int, preds: Sequence[AisPrediction], geo: _Geometry,
                   table: VesselTable | None) -> tuple[float, str | None]:
        """(share of the association's confidence, sentence or None) for track ``i`` assigned to prediction ``j``:
        the chosen vessel's likelihood over that of every AIS vessel inside the track's gate; a sentence naming the
        others when any is at least ``_AMBIGUOUS_RATIO`` as likely (two boats inside one long ellipse: the
        assignment still picks one, but the operator should know it could be the other)."""
        inside = np.flatnonzero(geo.feasible[i])
        like = np.exp(-0.5 * geo.maha[i, inside] ** 2)
        lj = math.exp(-0.5 * float(geo.maha[i, j]) ** 2)
        share = lj / float(like.sum()) if like.sum() > 0 else 1.0
        rivals = [int(k) for k, lk in zip(inside, like) if k != j and lk >= _AMBIGUOUS_RATIO * lj]
        if not rivals:
            return min(1.0, share), None
        names = []
        for k in rivals:
            st = table.get(preds[k].mmsi) if table is not None else None
            names.append(f"MMSI {preds[k].mmsi}" + (f" ({st.name})" if st is not None and st.name else "")
                         + f" {geo.dist[i, k]:.0f} m away")
        return min(1.0, share), (f"ambiguous: {len(rivals) + 1} AIS vessels lie inside this track's position "
                                 f"uncertainty; also {', '.join(names)}")

    def _describe(self, i: int, j: int, geo: _Geometry) -> str:
        """Where AIS vessel ``j`` lies from track ``i`` in the operator's terms: along / across the line of sight
        (the track ellipse's major axis) with the gate on each, or a plain distance and gate for a round one."""
        a = float(geo.semi_major_m[i])
        along, across = float(geo.along[i, j]), float(geo.across[i, j])
        ga, gc = float(geo.gate_along[i, j]), float(geo.gate_across[i, j])
        if ga <= 1.5 * gc:  # a near-circular ellipse (drone overhead, near boat): no line of sight worth naming
            return f"outside the {float(geo.gate[i, j]):.0f} m gate" if not geo.feasible[i, j] else \
                f"inside the {float(geo.gate[i, j]):.0f} m gate"
        hull = " (to its hull)" if geo.eff[i, j] < geo.dist[i, j] - 0.5 else ""
        txt = (f"{along:.0f} m along the line of sight{hull} (range uncertainty \u00b1{a:.0f} m, gate {ga:.0f} m) "
               f"and {across:.0f} m across it (gate {gc:.0f} m)")
        if along > ga and across > gc:
            return txt + ": outside the gate both along and across the line of sight"
        if across > gc:
            return txt + ": outside the gate across the line of sight"
        if along > ga:
            return txt + ": outside the gate along the line of sight"
        if not geo.feasible[i, j]:
            return txt + f": outside the gate ellipse ({float(geo.maha[i, j]):.1f} sigma)"
        return txt

    def _why_unmatched(self, i: int, tracks: Sequence[GeoTrack], preds: Sequence[AisPrediction],
                       kin: Sequence[tuple[float | None, float | None]], pairs: dict[int, tuple[int, float]],
                       table: VesselTable | None, n_states: int, geo: _Geometry | None) -> dict:
        """What an operator needs to judge a track without AIS match: the nearest AIS vessel (by distance to its
        hull), how far it is, the gate, and which test it failed."""
        cfg = self.cfg
        if not preds:
            if n_states == 0:
                return {"unmatched_reason": "no AIS vessel with a position in the table (is the AIS feed running?)"}
            return {"unmatched_reason": f"no AIS position report within {cfg.max_ais_age_s:.0f} s of this frame "
                                        f"({n_states} vessel(s) in the table)"}
        dist, eff, gate = geo.dist[i], geo.eff[i], geo.gate[i]  # (computed for the association)
        j = int(np.argmin(eff / gate))  # the nearest in units of its own gate
        p = preds[j]
        state = table.get(p.mmsi) if table is not None else None
        name = state.name if state is not None else None
        who = f"MMSI {p.mmsi}" + (f" ({name})" if name else "")
        far = ""
        if self.too_far_to_judge(tracks[i]):
            a = float(geo.semi_major_m[i])
            far = (f"unknown: too far to judge (position \u00b1{a:.0f} m along the line of sight, "
                   f"{cfg.gate_sigmas:g} sigma {cfg.gate_sigmas * a:.0f} m is over the {cfg.max_gate_along_m:.0f} m "
                   f"bound); ")
        if not geo.feasible[i, j]:
            why = (f"nearest AIS vessel {who} is {dist[j]:.0f} m away (report {abs(p.age_s):.0f} s old), "
                   f"{self._describe(i, j, geo)}")
        else:
            owner = next((tracks[k].track_id for k, (jj, _) in pairs.items() if jj == j), None)
            tc = kin[i][0]
            moving = p.cog_deg is not None and (p.sog_mps or 0.0) >= cfg.min_speed_for_course_mps
            if owner is not None:
                why = f"nearest AIS vessel {who} ({dist[j]:.0f} m away) is matched to track {owner}"
            elif tc is not None and moving and float(_angle_diff_deg(tc, p.cog_deg)) > cfg.course_gate_deg:
                why = (f"nearest AIS vessel {who} ({dist[j]:.0f} m away) steers {p.cog_deg:.0f} deg, the track "
                       f"{tc:.0f} deg")
            else:
                why = f"nearest AIS vessel {who} ({dist[j]:.0f} m away) was not assigned"
        return {"unmatched_reason": far + why, "nearest_mmsi": p.mmsi, "nearest_name": name,
                "nearest_distance_m": float(dist[j]), "nearest_gate_m": float(gate[j])}

    def identify_unlocated(self, tracks: Sequence[GeoTrack], time_ns: int) -> dict[int, TrackIdentity]:
        """Identities of tracks that have no position (``lat_deg``/``lon_deg`` NaN) from their hull read alone:
        only the tracks whose read matches a registry entry (``ocr_only``) are returned. No association; the
        track's memory (its last MMSI, for ``ais_dark``) is read, not changed."""
        out: dict[int, TrackIdentity] = {}
        for t in tracks:
            ident = self._identity(t, None, None, None, self._mem.get(t.track_id) or _TrackMemory(), time_ns)
            if ident.kind == "ocr_only":
                out[t.track_id] = ident
        return out

    def _identity(self, t: GeoTrack, pred: AisPrediction | None, dist: float | None, state: VesselState | None,
                  mem: _TrackMemory, time_ns: int, *, maha: float | None = None,
                  share: float | None = None) -> TrackIdentity:
        """The identity of one track. ``maha``: the pair's Mahalanobis distance (sigmas; None: from the track's
        circle); ``share``: the chosen vessel's share of the likelihood of every vessel in the gate (ambiguity)."""
        cfg = self.cfg
        reg = self.registry
        day = dt.datetime.fromtimestamp(time_ns / 1e9, dt.timezone.utc).date()
        hull = t.hull if (t.hull is not None and t.hull.text and t.hull.confidence >= cfg.ocr_min_confidence) else None
        ocr_match = reg.best(hull.text, min_score=cfg.ocr_min_match) if hull is not None else None
        ocr_entry = ocr_match.entry if ocr_match else None
        common = dict(track_id=t.track_id, time_ns=time_ns, hull_text=hull.text if hull else None,
                      hull_registry=ocr_entry, last_mmsi=mem.mmsi, last_mmsi_time_ns=mem.mmsi_time_ns)

        if pred is None:
            if ocr_entry is not None:
                conf = hull.confidence * ocr_match.score
                return TrackIdentity(kind="ocr_only", confidence=round(conf, 4), name=ocr_entry.name,
                                     registry=ocr_entry, mmsi=None, registry_alerts=ocr_entry.alerts(day), **common)
            return TrackIdentity(kind="none", confidence=1.0 if hull is None else round(1.0 - hull.confidence, 4),
                                 **common)

        # associated with an AIS vessel
        if maha is None:
            maha = max(0.0, dist - pred.extent_m) / math.hypot(t.pos_sigma_m, pred.sigma_m)
        assoc = math.exp(-0.5 * maha ** 2) * (1.0 - 0.5 ** min(mem.hits, 10)) * (1.0 if share is None else share)
        ais_name = state.name if state is not None else None
        mmsi_entry = reg.by_mmsi(pred.mmsi)
        name_match = reg.best(ais_name, min_score=cfg.ocr_min_match) if ais_name else None
        name_entry = name_match.entry if name_match else None

        mismatch = None
        if ocr_entry is not None and mmsi_entry is not None and ocr_entry is not mmsi_entry:
            mismatch = (f"hull reads {hull.text} (registered {ocr_entry.label}, MMSI {ocr_entry.mmsi}) but AIS "
                        f"MMSI {pred.mmsi} is registered to {mmsi_entry.label}")
        elif ocr_entry is not None and ocr_entry.mmsi is not None and ocr_entry.mmsi != pred.mmsi:
            mismatch = f"hull reads {hull.text}, registered with MMSI {ocr_entry.mmsi}, but AIS says MMSI {pred.mmsi}"
        elif mmsi_entry is not None and ais_name and name_entry is not mmsi_entry and max(
            similarity(ais_name, n) for n in mmsi_entry.names()
        ) < cfg.name_mismatch_below:
            mismatch = f"AIS name {ais_name!r} differs from the name registered for MMSI {pred.mmsi} ({mmsi_entry.label})"
        elif (mmsi_entry is None and name_entry is not None and name_entry.mmsi is not None
              and name_entry.mmsi != pred.mmsi):
            mismatch = (f"AIS name {ais_name!r} is registered ({name_entry.label}) with MMSI {name_entry.mmsi}, "
                        f"but it is broadcast with MMSI {pred.mmsi}")
        elif hull is not None and hull.pattern_ok and ocr_entry is None and ais_name:
            # unregistered hull text: compare with what AIS broadcasts (Latin or Chinese) and its registry names
            names = [ais_name] + (list(mmsi_entry.names()) if mmsi_entry else [])
            if max(similarity(hull.text, n) for n in names) < cfg.name_mismatch_below and mmsi_entry is not None:
                mismatch = f"hull reads {hull.text} but AIS MMSI {pred.mmsi} is registered to {mmsi_entry.label}"

        entry = mmsi_entry or name_entry
        if entry is not None:
            support = 0.0
            if ocr_entry is entry:
                support = hull.confidence * ocr_match.score
            conf = 1.0 - (1.0 - assoc) * (1.0 - support)
            if mismatch:
                conf *= 0.5
            alerts = entry.alerts(day)
            return TrackIdentity(kind="ais+registry", confidence=round(conf, 4), mmsi=pred.mmsi, ais_name=ais_name,
                                 name=entry.name, registry=entry, distance_m=dist, ais_age_s=pred.age_s,
                                 mismatch=mismatch, registry_alerts=alerts, **common)
        return TrackIdentity(kind="ais_only", confidence=round(assoc * (0.5 if mismatch else 1.0), 4),
                             mmsi=pred.mmsi, ais_name=ais_name, name=ais_name, registry=None, distance_m=dist,
                             ais_age_s=pred.age_s, mismatch=mismatch, **common)
