"""One vessel, one alert: the same boat's identity alerts on two sources are linked.

A boat without AIS seen by the quay camera and by the patrol drone's camera (or by two fixed cameras whose views
overlap) raises one ``unidentified_vessel`` per source: each source has its own tracker, fuser and rules, and none of
them knows the others. The identity stage sees every source, so it links them here: when an ``unidentified_vessel``
starts on one source while another source has one open (or ended within ``window_s``) whose vessel's position is
compatible with the new one's, the new alert is **linked** to it. ``ais_dark`` is linked the same way, only to an
``ais_dark`` of the same MMSI (its condition key): one dark transponder, one alarm. Other types, and an
``unidentified_vessel`` against an ``ais_dark``, are never linked (one camera says who the boat is and the other
found no AIS: that is for the operator to judge, not a duplicate).

Compatible: both positions' 1-sigma error ellipses combined (covariances added: long along each camera's line of
sight, narrow across it), the displacement between the two positions shortened by a slack, and its Mahalanobis
distance within ``sigmas`` (like the AIS gate in ``fusion.py``). The slack is ``hull_slack_m`` (two cameras place the
boat at the bottom centre of its box, which is not the same point of the hull from two sides) plus
``max_speed_mps`` x the time between the two positions (the other alert's newest position may be seconds or, for an
ended one, minutes old). A far boat is not linked: when either ellipse's semi-major axis exceeds
``max_semi_major_m`` (a boat a kilometre out from a camera 20 m up), two boats along one line of sight cannot be
told apart, and a wrong link would silence a real alarm.

The link is an annotation; the AIS association and the per-source rules are untouched. The new alert carries
``same_vessel_as`` (the first alert's ``event_id``, ``source_id``, ``type``, ``start_ns``, ``distance_m`` between the
two positions, ``sigma_m`` the combined 1-sigma in that direction, ``sigmas`` the Mahalanobis distance after the slack,
``seen_ago_s`` how old the other position was, and ``others`` when more than one alert fitted: the most likely is
linked, the others named) and ``vessel_link`` (the event id of the group's first alert: searching for it finds every
alert of the vessel). The first alert, while open, gets an ``update`` phase with ``also_seen_by`` (one entry per
linked alert) and the same ``vessel_link``; an ended one is not reopened. The operator's UI sounds no alarm and shows
no desktop notification for a linked alert and shows the link in the list and the detail.

:class:`VesselAlertLinker` is pure bookkeeping (no events are built here): the stage tells it where each source's
tracks are (:meth:`observe`), which alerts started (:meth:`link`) and ended (:meth:`ended`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from seawatch.drone.geometry import geod  # one shared WGS84 Geod (vision may use drone)
from seawatch.vision.events import GeoPosition

log = logging.getLogger(__name__)

UNIDENTIFIED_VESSEL = "unidentified_vessel"
AIS_DARK = "ais_dark"
LINKED_TYPES = (UNIDENTIFIED_VESSEL, AIS_DARK)
# attributes the link puts on alerts: the stage carries them onto later phases of the same alert
LINK_ATTRIBUTES = ("same_vessel_as", "also_seen_by", "vessel_link")


class IdentityLinkConfig(BaseModel):
    """``identity.link``: when two sources' identity alerts are taken for the same vessel (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="link the same vessel's unidentified_vessel / ais_dark alerts across "
                          "sources (the linked one sounds no alarm in the UI)")
    sigmas: float = Field(3.5, gt=0.0, le=10.0, description="the two positions' combined error ellipses, in standard "
                          "deviations, within which they are one vessel")
    max_speed_mps: float = Field(10.0, ge=0.0, le=50.0, description="how fast a vessel may have moved between the two "
                                 "positions (m/s, ~20 kn): that far of the distance is free")
    hull_slack_m: float = Field(15.0, ge=0.0, le=500.0, description="free distance for two views of one hull (each "
                                "camera places the boat at the bottom centre of its box)")
    window_s: float = Field(120.0, ge=0.0, le=3600.0, description="an alert that ended this long ago still takes a "
                            "link (the boat left one camera's view as it entered the other's)")
    max_semi_major_m: float = Field(250.0, gt=0.0, le=20000.0, description="a position whose error ellipse is longer "
                                    "than this (a far boat) is not linked: two boats on one line of sight look alike")


@dataclass(frozen=True, slots=True)
class Link:
    """A new alert's link: what goes on it (``attributes``) and on the first alert (``first_id``, ``first_open``,
    ``also_seen_by``: the entry to append to its ``also_seen_by``; ``vessel_link``)."""

    first_id: str
    first_open: bool
    attributes: dict
    also_seen_by: dict
    vessel_link: str


@dataclass
class _Alert:
    event_id: str
    source_id: str
    type: str
    key: str  # the MMSI of an ais_dark
    start_ns: int
    track_ids: set[int]
    pos: GeoPosition | None
    pos_ns: int
    group: str  # the vessel_link: the event id of the group's first alert
    ended_ns: int | None = None


def _cov(p: GeoPosition) -> np.ndarray:
    """2x2 covariance (east, north; m^2) of a 1-sigma ellipse (major axis ``orientation_deg`` from north)."""
    a = max(1.0, float(p.semi_major_m))
    b = min(a, max(1.0, float(p.semi_minor_m)))
    th = math.radians(p.orientation_deg)
    u = np.array([math.sin(th), math.cos(th)])
    v = np.array([math.cos(th), -math.sin(th)])
    return a * a * np.outer(u, u) + b * b * np.outer(v, v)


def compare(p: GeoPosition, q: GeoPosition, dt_s: float, cfg: IdentityLinkConfig) -> tuple[float, float, float]:
    """(distance m, combined 1-sigma m in the direction between them, Mahalanobis distance after the slack) of two
    positions ``dt_s`` apart in time; a coincident pair has sigma of the combined ellipse's minor axis and 0 sigmas."""
    az, _, dist = geod().inv(p.lon_deg, p.lat_deg, q.lon_deg, q.lat_deg)
    dist = float(dist)
    cov = _cov(p) + _cov(q)
    if not (math.isfinite(dist) and math.isfinite(az)) or dist <= 0.0:
        return 0.0, float(math.sqrt(np.linalg.eigvalsh(cov)[0])), 0.0
    u = np.array([math.sin(math.radians(az)), math.cos(math.radians(az))])
    sigma = float(math.sqrt(u @ cov @ u))
    eff = max(0.0, dist - cfg.hull_slack_m - cfg.max_speed_mps * max(0.0, dt_s))
    d = u * eff
    maha = float(math.sqrt(d @ np.linalg.solve(cov, d)))
    return dist, sigma, maha


class VesselAlertLinker:
    """Links the start of an ``unidentified_vessel`` / ``ais_dark`` on one source to the same vessel's alert on
    another (module docstring). State: the alerts open now and those ended within ``window_s``."""

    def __init__(self, config: IdentityLinkConfig | None = None) -> None:
        self.config = config or IdentityLinkConfig()
        self._alerts: dict[str, _Alert] = {}  # event id -> alert
        self.counters = {"linked": 0, "ambiguous": 0, "too_far": 0}

    def observe(self, source_id: str, time_ns: int, positions: Mapping[int, GeoPosition | None]) -> None:
        """The positions of ``source_id``'s vessel tracks at ``time_ns`` (track id -> position or None): its open
        alerts' vessels are where their newest track is now."""
        for a in self._alerts.values():
            if a.source_id != source_id or a.ended_ns is not None:
                continue
            for tid in a.track_ids:
                pos = positions.get(tid)
                if pos is not None:
                    a.pos, a.pos_ns = pos, int(time_ns)
        self._prune(int(time_ns))

    def _prune(self, time_ns: int) -> None:
        window_ns = int(self.config.window_s * 1e9)
        for eid in [e for e, a in self._alerts.items() if a.ended_ns is not None and time_ns - a.ended_ns > window_ns]:
            del self._alerts[eid]

    def link(self, ev: Any) -> Link | None:
        """Record a new alert (an ``Event`` start of a linked type) and return its :class:`Link`, or None when no
        other source's alert is the same vessel (or it is no linked type, or linking is off)."""
        if ev.type not in LINKED_TYPES or ev.phase != "start":
            return None
        key = str(ev.attributes.get("condition_key", "")) if ev.type == AIS_DARK else ""
        new = _Alert(ev.id, ev.source_id, ev.type, key, int(ev.start_ns), set(int(t) for t in ev.track_ids), ev.geo,
                     int(ev.at_ns), ev.id)
        self._alerts[ev.id] = new
        cfg = self.config
        if not cfg.enabled or ev.geo is None:
            return None
        if ev.geo.semi_major_m > cfg.max_semi_major_m:
            self.counters["too_far"] += 1
            return None
        fits: dict[str, tuple[float, float, float, _Alert]] = {}  # per group: its best fitting alert
        for a in self._alerts.values():
            if a is new or a.source_id == ev.source_id or a.type != ev.type or a.key != key or a.pos is None:
                continue
            # a group that already has an open alert on this source is another boat this source sees
            if any(o.group == a.group and o.source_id == ev.source_id and o.ended_ns is None and o is not new
                   for o in self._alerts.values()):
                continue
            if a.pos.semi_major_m > cfg.max_semi_major_m:
                self.counters["too_far"] += 1
                continue
            dt_s = abs(int(ev.at_ns) - a.pos_ns) / 1e9
            dist, sigma, maha = compare(ev.geo, a.pos, dt_s, cfg)
            if maha > cfg.sigmas:
                continue
            best = fits.get(a.group)
            # within a group prefer the open alert, then the most likely
            rank = (a.ended_ns is not None, maha)
            if best is None or rank < (best[3].ended_ns is not None, best[2]):
                fits[a.group] = (dist, sigma, maha, a)
        if not fits:
            return None
        ranked = sorted(fits.values(), key=lambda f: (f[2], f[0]))
        dist, sigma, maha, first = ranked[0]
        new.group = first.group
        seen_ago_s = abs(int(ev.at_ns) - first.pos_ns) / 1e9
        attrs = {"event_id": first.event_id, "source_id": first.source_id, "type": first.type,
                 "start_ns": first.start_ns, "distance_m": round(dist, 1), "sigma_m": round(sigma, 1),
                 "sigmas": round(maha, 2), "seen_ago_s": round(seen_ago_s, 1)}
        if len(ranked) > 1:
            self.counters["ambiguous"] += 1
            attrs["others"] = [{"event_id": o.event_id, "source_id": o.source_id, "distance_m": round(d, 1),
                                "sigmas": round(m, 2)} for d, _, m, o in ranked[1:]]
        self.counters["linked"] += 1
        log.info("%s %s on %s: same vessel as %s on %s, %.0f m apart (%.1f sigma)", ev.type, ev.id, ev.source_id,
                 first.event_id, first.source_id, dist, maha)
        seen_by = {"event_id": ev.id, "source_id": ev.source_id, "distance_m": round(dist, 1),
                   "sigma_m": round(sigma, 1), "at_ns": int(ev.at_ns)}
        return Link(first.event_id, first.ended_ns is None, {"same_vessel_as": attrs, "vessel_link": first.group},
                    seen_by, first.group)

    def ended(self, event_id: str, end_ns: int) -> None:
        """An alert ended at ``end_ns``: it takes links for ``window_s`` more (at its last position)."""
        a = self._alerts.get(event_id)
        if a is not None:
            a.ended_ns = int(end_ns)


__all__ = ["AIS_DARK", "IdentityLinkConfig", "LINKED_TYPES", "LINK_ATTRIBUTES", "Link", "UNIDENTIFIED_VESSEL",
           "VesselAlertLinker", "compare"]
