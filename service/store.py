"""The event store: SQLAlchemy 2 Core tables, Alembic-migrated; SQLite (WAL) by default, PostgreSQL supported.

Three shapes are kept apart: the domain ``Event`` (vision.events), the table rows here, and the API schemas
(service.schemas). An incident's phases (start / update / end) share one ``id``; ``put`` upserts by id and applies
a phase only when its ``seq`` is newer, so replays are idempotent. Review actions (acknowledge / dismiss /
confirm) are rows of ``review_actions``, the audit trail; the event row carries the current status.

``put`` commits before it returns: callers publish (MQTT, WebSocket) only after it, so what was published is
always in the database.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import event as sa_event

from seawatch.errors import ConfigError, InputError
from seawatch.vision.events import REVIEW_STATUSES, SEVERITIES, Event, ReviewEntry, reason_problem, severity_rank

log = logging.getLogger(__name__)

metadata = sa.MetaData()

events_table = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("severity_rank", sa.SmallInteger, nullable=False),
    sa.Column("phase", sa.String(8), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("source_id", sa.String(128), nullable=False),
    sa.Column("zone_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("start_ns", sa.BigInteger, nullable=False),
    sa.Column("end_ns", sa.BigInteger, nullable=True),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("lat_deg", sa.Float, nullable=True),
    sa.Column("lon_deg", sa.Float, nullable=True),
    sa.Column("mmsi", sa.String(16), nullable=True),
    sa.Column("vessel_name", sa.String(128), nullable=True),
    sa.Column("hull_text", sa.String(64), nullable=True),
    sa.Column("review_status", sa.String(16), nullable=False, server_default="new"),
    sa.Column("search_text", sa.Text, nullable=False, server_default=""),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("stored_ns", sa.BigInteger, nullable=False),
)
# lat/lon ride along in the time and type indexes (migration 0004): a walk along them tests a geo filter on the entry
sa.Index("ix_events_start_geo", events_table.c.start_ns, events_table.c.id, events_table.c.lat_deg, events_table.c.lon_deg)
sa.Index("ix_events_at", events_table.c.at_ns, events_table.c.id)
sa.Index("ix_events_type_start_geo", events_table.c.type, events_table.c.start_ns, events_table.c.lat_deg, events_table.c.lon_deg)
sa.Index("ix_events_source_start", events_table.c.source_id, events_table.c.start_ns)
sa.Index("ix_events_status_start", events_table.c.review_status, events_table.c.start_ns)
sa.Index("ix_events_lat_lon", events_table.c.lat_deg, events_table.c.lon_deg)
sa.Index("ix_events_mmsi", events_table.c.mmsi)

review_table = sa.Table(
    "review_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("by_kind", sa.String(8), nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("reason", sa.String(32), nullable=False, server_default=""),  # migration 0006: REVIEW_REASONS
)
sa.Index("ix_review_event", review_table.c.event_id, review_table.c.id)

# an operator's "ignore this spot" (migration 0005): applied on top of the source's configured ignore areas
ignore_table = sa.Table(
    "ignore_areas",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_id", sa.String(128), nullable=False),
    sa.Column("labels", sa.Text, nullable=False),  # JSON list of labels
    sa.Column("polygon_px", sa.Text, nullable=False),  # JSON [[x, y], ...] pixels
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("event_id", sa.String(64), nullable=True),  # the dismissed event it came from (no foreign key: events may be pruned)
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
)
sa.Index("ix_ignore_areas_source", ignore_table.c.source_id, ignore_table.c.id)
sa.Index("ux_ignore_areas_event", ignore_table.c.event_id, unique=True)  # migration 0008: one area per event

# holds (migration 0007): an event with an active hold row is never deleted by retention, nor its media; one row per
# evidence export (who, when) or reviewer's hold. A confirmed event is held by its review status alone. A lifted hold
# (migration 0009) stays as a row with released_ns / released_by / release_note: the audit trail keeps it.
holds_table = sa.Table(
    "event_holds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("at_ns", sa.BigInteger, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("released_ns", sa.BigInteger, nullable=True),  # migration 0009: NULL while the hold holds
    sa.Column("released_by", sa.String(128), nullable=True),
    sa.Column("release_note", sa.Text, nullable=False, server_default=""),
)
sa.Index("ix_event_holds_event", holds_table.c.event_id, holds_table.c.id)
HOLD_REASONS: tuple[str, ...] = ("evidence_export", "manual")

# named times of the store (migration 0009), UTC ns: ``enabled_ns`` (retention first ran on it) and
# ``protect_before_ns`` (events stored before it wait out the upgrade grace; 0: none)
retention_state_table = sa.Table(
    "retention_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value_ns", sa.BigInteger, nullable=False),
)

# operator calibrations (migration 0010): a fixed camera's calibration applied from the calibration page, one row per
# apply (never deleted: the audit trail). The newest row of a source is in force unless reverted (then the configured
# calibration is); config_sha256 is the configured section's hash when it was applied (config_section_sha256)
calibrations_table = sa.Table(
    "source_calibrations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_id", sa.String(128), nullable=False),
    sa.Column("calibration", sa.Text, nullable=False),  # JSON: the source's calibration section
    sa.Column("fit", sa.Text, nullable=False, server_default="{}"),  # JSON: the fit's summary numbers
    sa.Column("config_sha256", sa.String(64), nullable=False, server_default=""),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("reverted_ns", sa.BigInteger, nullable=True),
    sa.Column("reverted_by", sa.String(128), nullable=True),
)
sa.Index("ix_source_calibrations_source", calibrations_table.c.source_id, calibrations_table.c.id)

# the security audit log (migration 0011): one row per recorded user action (service/audit.py), kept
# storage.retention.audit_days; details is JSON and never holds a password, token or key
audit_table = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time_ns", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False, server_default=""),  # user or key name ("": unknown)
    sa.Column("actor_kind", sa.String(8), nullable=False, server_default=""),  # user / key / ""
    sa.Column("role", sa.String(16), nullable=False, server_default=""),
    sa.Column("client", sa.String(64), nullable=False, server_default=""),  # the client's address (trusted proxies)
    sa.Column("action", sa.String(64), nullable=False),  # dotted: auth.login, export.evidence, drone.abort
    sa.Column("target", sa.String(256), nullable=False, server_default=""),  # event / source / drone id
    sa.Column("outcome", sa.String(16), nullable=False),  # ok / refused / failed
    sa.Column("status", sa.Integer, nullable=False),  # the HTTP status answered
    sa.Column("details", sa.Text, nullable=False, server_default="{}"),
)
sa.Index("ix_audit_log_time", audit_table.c.time_ns, audit_table.c.id)
sa.Index("ix_audit_log_actor", audit_table.c.actor, audit_table.c.time_ns)
sa.Index("ix_audit_log_target", audit_table.c.target, audit_table.c.time_ns)
AUDIT_OUTCOMES: tuple[str, ...] = ("ok", "refused", "failed")

SORTS = {
    "-start_ns": ("start_ns", True),
    "start_ns": ("start_ns", False),
    "-at_ns": ("at_ns", True),
    "at_ns": ("at_ns", False),
}


@dataclass(frozen=True, slots=True)
class BBox:
    """WGS84 box; ``min_lon_deg > max_lon_deg`` means it crosses the antimeridian."""

    min_lat_deg: float
    min_lon_deg: float
    max_lat_deg: float
    max_lon_deg: float

    def __post_init__(self) -> None:
        if not (-90 <= self.min_lat_deg <= self.max_lat_deg <= 90):
            raise InputError(f"bbox latitudes must satisfy -90 <= min <= max <= 90, got {self.min_lat_deg}, {self.max_lat_deg}")
        if not (-180 <= self.min_lon_deg <= 180 and -180 <= self.max_lon_deg <= 180):
            raise InputError(f"bbox longitudes must lie in [-180, 180], got {self.min_lon_deg}, {self.max_lon_deg}")


MAX_POLYGON_VERTICES = 500
MAX_RADIUS_M = 1_000_000.0
# smallest radius of curvature of the WGS84 ellipsoid (meridional, at the equator): a geodesic of length r spans at
# most r / this radians of latitude, so boxes built with it always contain the whole circle
_MIN_CURVATURE_RADIUS_M = 6_335_439.0


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


@dataclass(frozen=True, slots=True)
class GeoPolygon:
    """A WGS84 polygon: one outer ring of (lon_deg, lat_deg) vertices, edges straight in lon/lat (as in GeoJSON,
    RFC 7946 §3.1.1), boundary included. 3 to MAX_POLYGON_VERTICES distinct vertices, a simple ring (no self
    crossing) with an area; the closing vertex may be repeated. It may not cross the antimeridian (split it)."""

    vertices_lonlat: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        v = tuple((float(x), float(y)) for x, y in self.vertices_lonlat) if _valid_pairs(self.vertices_lonlat) else None
        if v is None:
            raise InputError("polygon vertices must be (lon, lat) pairs of finite numbers")
        if len(v) > 1 and v[0] == v[-1]:
            v = v[:-1]
        if not 3 <= len(v) <= MAX_POLYGON_VERTICES:
            raise InputError(f"a polygon needs 3 to {MAX_POLYGON_VERTICES} vertices, got {len(v)}")
        for i, (lon, lat) in enumerate(v):
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise InputError(f"polygon vertex {i} ({lon}, {lat}) is outside lon [-180, 180], lat [-90, 90]")
        from shapely.geometry import Polygon

        shape = Polygon(v)
        if not shape.is_valid or shape.area <= 0:
            from shapely.validation import explain_validity

            why = explain_validity(shape) if not shape.is_valid else "it has no area"
            raise InputError(f"the polygon is not a simple ring ({why}): its edges must not cross or touch")
        object.__setattr__(self, "vertices_lonlat", v)

    @classmethod
    def parse(cls, text: str) -> "GeoPolygon":
        """From ``"lon lat,lon lat,..."`` (the API's ``polygon`` parameter)."""
        if not isinstance(text, str) or len(text) > 40 * MAX_POLYGON_VERTICES:
            raise InputError("polygon text is too long")
        pairs = []
        for i, part in enumerate(text.split(",")):
            nums = part.split()
            if len(nums) != 2:
                raise InputError(f"polygon vertex {i} must be 'lon lat' (two numbers separated by a space), got {part.strip()[:40]!r}")
            try:
                lon, lat = float(nums[0]), float(nums[1])
            except ValueError:
                raise InputError(f"polygon vertex {i}: {part.strip()[:40]!r} is not two numbers") from None
            if not _finite(lon, lat):
                raise InputError(f"polygon vertex {i} is not finite")
            pairs.append((lon, lat))
            if len(pairs) > MAX_POLYGON_VERTICES + 1:
                raise InputError(f"a polygon has at most {MAX_POLYGON_VERTICES} vertices")
        return cls(tuple(pairs))

    @property
    def wkt(self) -> str:
        ring = [*self.vertices_lonlat, self.vertices_lonlat[0]]
        return "POLYGON((" + ",".join(f"{lon!r} {lat!r}" for lon, lat in ring) + "))"

    def box(self) -> tuple[float, float, list[tuple[float, float]]]:
        """(min_lat, max_lat, [(min_lon, max_lon)]) containing the polygon."""
        lons = [p[0] for p in self.vertices_lonlat]
        lats = [p[1] for p in self.vertices_lonlat]
        return min(lats), max(lats), [(min(lons), max(lons))]


def _valid_pairs(pairs: Any) -> bool:
    try:
        return all(len(p) == 2 and _finite(p[0], p[1]) for p in pairs)
    except TypeError:
        return False


@dataclass(frozen=True, slots=True)
class GeoCircle:
    """Events within ``radius_m`` geodesic metres (WGS84 ellipsoid) of a point; 0 < radius_m <= MAX_RADIUS_M."""

    lat_deg: float
    lon_deg: float
    radius_m: float

    def __post_init__(self) -> None:
        if not _finite(self.lat_deg, self.lon_deg, self.radius_m):
            raise InputError("near_lat, near_lon and radius_m must be finite numbers")
        if not (-90 <= self.lat_deg <= 90 and -180 <= self.lon_deg <= 180):
            raise InputError(f"the centre ({self.lat_deg}, {self.lon_deg}) is outside lat [-90, 90], lon [-180, 180]")
        if not 0 < self.radius_m <= MAX_RADIUS_M:
            raise InputError(f"radius_m must be above 0 and at most {MAX_RADIUS_M:.0f}, got {self.radius_m}")

    def box(self) -> tuple[float, float, list[tuple[float, float]]]:
        """(min_lat, max_lat, lon ranges) containing every point within the radius (conservative by a margin;
        two lon ranges across the antimeridian, the whole circle of longitude around a pole)."""
        delta = self.radius_m / _MIN_CURVATURE_RADIUS_M  # radians, an upper bound of the angular radius
        dlat = math.degrees(delta) * 1.001 + 1e-7
        lo, hi = self.lat_deg - dlat, self.lat_deg + dlat
        if lo <= -90 or hi >= 90:
            return max(lo, -90.0), min(hi, 90.0), [(-180.0, 180.0)]
        ratio = math.sin(delta) / math.cos(math.radians(max(abs(lo), abs(hi))))
        if ratio >= 1:
            return lo, hi, [(-180.0, 180.0)]
        dlon = math.degrees(math.asin(ratio)) * 1.001 + 1e-7
        west, east = self.lon_deg - dlon, self.lon_deg + dlon
        if west < -180:
            return lo, hi, [(west + 360, 180.0), (-180.0, east)]
        if east > 180:
            return lo, hi, [(west, 180.0), (-180.0, east - 360)]
        return lo, hi, [(west, east)]


_GEOD = None


def geodesic_m(lat0_deg: float, lon0_deg: float, lat_deg: float, lon_deg: float) -> float:
    """WGS84 geodesic distance in metres (Karney, through pyproj; the algorithm PostGIS uses on the spheroid)."""
    global _GEOD
    if _GEOD is None:
        from pyproj import Geod

        _GEOD = Geod(ellps="WGS84")
    return float(_GEOD.inv(lon0_deg, lat0_deg, lon_deg, lat_deg)[2])


@functools.lru_cache(maxsize=64)
def _prepared_polygon(wkt: str):
    import shapely
    from shapely import wkt as shapely_wkt

    shape = shapely_wkt.loads(wkt)
    shapely.prepare(shape)
    return shape


def _sqlite_in_polygon(wkt: str | None, lon: float | None, lat: float | None) -> int | None:
    """SQL function ``sw_in_polygon(wkt, lon, lat)``: 1 when the point is inside or on the polygon (a point on the
    antimeridian is tested at both -180 and +180: the same place)."""
    if wkt is None or lon is None or lat is None:
        return None
    import shapely

    shape = _prepared_polygon(wkt)
    if abs(lon) == 180 and shapely.intersects_xy(shape, -lon, lat):
        return 1
    return int(shapely.intersects_xy(shape, lon, lat))


def _sqlite_lower(text: str | None) -> str | None:
    """SQL function ``sw_lower(text)``: Unicode lower case, as PostgreSQL's ``lower`` (SQLite's only lowers ASCII)."""
    return None if text is None else text.lower()


def _seam_lon(lon_deg: float | None) -> float | None:
    """Longitude -180 stored as +180 (the same meridian), so one value stands for the seam."""
    return 180.0 if lon_deg == -180 else lon_deg


def _sqlite_geodesic_m(lat0: float | None, lon0: float | None, lat: float | None, lon: float | None) -> float | None:
    if lat0 is None or lon0 is None or lat is None or lon is None:
        return None
    return geodesic_m(lat0, lon0, lat, lon)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Typed search filters; empty tuples / None mean 'any'. Times are UTC ns; ``start`` range is half-open."""

    types: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    min_severity: str | None = None
    statuses: tuple[str, ...] = ()
    source_ids: tuple[str, ...] = ()
    zone_ids: tuple[str, ...] = ()
    start_from_ns: int | None = None
    start_to_ns: int | None = None
    active_from_ns: int | None = None  # still going at or after it: open, or end_ns >= it
    open_only: bool | None = None
    bbox: BBox | None = None
    polygon: GeoPolygon | None = None
    near: GeoCircle | None = None
    has_geo: bool | None = None
    mmsi: str | None = None
    vessel_name: str | None = None
    hull_text: str | None = None
    text: str | None = None
    sort: str = "-start_ns"
    limit: int = 50
    cursor: str | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.severities if s not in SEVERITIES]
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            bad.append(self.min_severity)
        if bad:
            raise InputError(f"unknown severity {bad[0]!r}; one of {SEVERITIES}")
        bad = [s for s in self.statuses if s not in REVIEW_STATUSES]
        if bad:
            raise InputError(f"unknown review status {bad[0]!r}; one of {REVIEW_STATUSES}")
        if self.sort not in SORTS:
            raise InputError(f"unknown sort {self.sort!r}; one of {tuple(SORTS)}")
        if self.limit < 1:
            raise InputError("limit must be at least 1")
        for name in ("types", "source_ids", "zone_ids", "mmsi", "vessel_name", "hull_text", "text", "cursor"):
            value = getattr(self, name)
            if any("\x00" in v for v in ((value,) if isinstance(value, str) else value or ())):
                raise InputError(f"{name} must not contain NUL characters")


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Event]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ReviewAction:
    event_id: str
    status: str
    at_ns: int
    by: str
    by_kind: str
    note: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "status": self.status, "at_ns": self.at_ns, "by": self.by, "by_kind": self.by_kind,
                "note": self.note, "reason": self.reason}


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # the time columns are BIGINT: times beyond them are clamped


@dataclass(frozen=True, slots=True)
class IgnoreArea:
    """A stored ignore area: detections of ``labels`` whose anchor point lies in ``polygon_px`` on ``source_id``
    are dropped."""

    id: int
    source_id: str
    labels: tuple[str, ...]
    polygon_px: tuple[tuple[float, float], ...]
    note: str
    event_id: str | None
    created_by: str
    created_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source_id": self.source_id, "labels": list(self.labels),
                "polygon_px": [list(p) for p in self.polygon_px], "note": self.note, "event_id": self.event_id,
                "created_by": self.created_by, "created_ns": self.created_ns}


@dataclass(frozen=True, slots=True)
class SourceCalibration:
    """One stored operator calibration of a fixed camera (a row of ``source_calibrations``).

    ``calibration`` is the source's ``calibration`` section as JSON values (validated by the API through
    ``CalibrationConfig`` before it is stored); ``fit`` the fit's summary numbers as the page reported them;
    ``config_sha256`` the configured section's hash when it was applied; ``reverted_ns`` / ``reverted_by`` are set
    when an administrator reverted it to the configured calibration (UTC ns)."""

    id: int
    source_id: str
    calibration: dict[str, Any]
    fit: dict[str, Any]
    config_sha256: str
    note: str
    created_by: str
    created_ns: int
    reverted_ns: int | None = None
    reverted_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source_id": self.source_id, "calibration": self.calibration, "fit": self.fit,
                "note": self.note, "created_by": self.created_by, "created_ns": self.created_ns,
                "reverted_ns": self.reverted_ns, "reverted_by": self.reverted_by}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the security audit log (``audit_log``): who (``actor``, ``actor_kind``, ``role``) did ``action``
    on ``target`` from ``client`` at ``time_ns`` (UTC), with what ``outcome`` (``ok`` / ``refused`` / ``failed``) and
    HTTP ``status``; ``details`` are plain JSON values. ``id`` is 0 before it is stored."""

    time_ns: int
    action: str
    outcome: str
    status: int
    actor: str = ""
    actor_kind: str = ""
    role: str = ""
    client: str = ""
    target: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "time_ns": self.time_ns, "actor": self.actor, "actor_kind": self.actor_kind,
                "role": self.role, "client": self.client, "action": self.action, "target": self.target,
                "outcome": self.outcome, "status": self.status, "details": self.details}


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of the audit log: ``action`` a prefix of the dotted name (``export`` finds every export), ``actor`` and
    ``target`` exact, ``[from_ns, to_ns)`` UTC ns; newest first, ``limit`` a page, ``cursor`` the previous page's."""

    action: str | None = None
    actor: str | None = None
    target: str | None = None
    from_ns: int | None = None
    to_ns: int | None = None
    limit: int = 100
    cursor: str | None = None


_AUDIT_CURSOR = "audit:-time_ns"  # what an audit cursor is for (an events cursor is refused, and the other way round)


@dataclass(frozen=True, slots=True)
class MediaRow:
    """What retention needs to know of one stored event: its files and whether it may go.

    ``held``: confirmed by a reviewer or with an active hold (never deleted automatically); ``open``: no end yet;
    ``age_ns``: the later of its last time (``at_ns``) and when it was stored (a clock far off cannot age it early);
    ``false_detection``: dismissed, its newest review saying the detector was wrong (training data).
    """

    id: str
    source_id: str
    severity: str
    at_ns: int
    age_ns: int
    open: bool
    held: bool
    snapshot_uri: str | None
    clip: tuple[str, int, int] | None  # (source_id, start_ns, end_ns) of a closed clip window
    stored_ns: int = 0
    false_detection: bool = False


@dataclass(frozen=True)
class ExpiryRules:
    """Which closed, unheld events retention deletes now. Cutoffs are UTC ns: an event is past one when both its last
    time (``at_ns``) and when it was stored (``stored_ns``) are before it.

    ``by_severity``: the cutoff per severity of events whose source is not in ``by_source`` (a severity left out:
    kept); ``by_source``: a source's own cutoffs per severity (left out or None: kept); a false detection must also
    be past ``false_detection_ns`` (None: no more than the others), or is kept when ``keep_false_detections``;
    ``protect_stored_before_ns``: events stored before it are kept (the upgrade grace; None: none are).
    """

    by_severity: Mapping[str, int]
    by_source: Mapping[str, Mapping[str, int | None]] = field(default_factory=dict)
    false_detection_ns: int | None = None
    keep_false_detections: bool = False
    protect_stored_before_ns: int | None = None


def _active_hold() -> Any:
    """EXISTS an unreleased hold row of the event (the outer query's ``events`` row)."""
    h, t = holds_table, events_table
    return sa.exists().where(h.c.event_id == t.c.id, h.c.released_ns.is_(None))


def _held_expr() -> Any:
    t = events_table
    return sa.or_(t.c.review_status == "confirmed", _active_hold())


def _false_detection_expr() -> Any:
    """Dismissed, and the newest review action says the detector was wrong (as ``seawatch reviews export`` reads it);
    one probe of the (event_id, id) index of review_actions."""
    t, r = events_table, review_table
    newest = (sa.select(r.c.reason).where(r.c.event_id == t.c.id).order_by(r.c.id.desc()).limit(1)
              .correlate(t).scalar_subquery())
    return sa.and_(t.c.review_status == "dismissed", sa.func.coalesce(newest, "") == "false_detection")


def _past(cut: int) -> Any:
    t = events_table
    return sa.and_(t.c.at_ns < _clamp64(cut), t.c.stored_ns < _clamp64(cut))


def _expiry_conds(rules: ExpiryRules) -> list[Any] | None:
    """WHERE conditions of the events ``rules`` expire (None: none can). The plain ``at_ns`` bound comes first, so the
    walk along the (at_ns, id) index stops at the newest cutoff; the per-source and per-severity cutoffs, the false
    detection test (a correlated probe, only for dismissed rows) and the holds test run on the rows it reads."""
    t = events_table
    groups, cuts = [], []
    for src, by_sev in rules.by_source.items():
        sevs = {k: c for k, c in by_sev.items() if c is not None}
        if len(set(sevs.values())) == 1 and len(sevs) == len(SEVERITIES):  # one age for every severity
            groups.append(sa.and_(t.c.source_id == src, _past(next(iter(sevs.values())))))
        elif sevs:
            by_sev_cond = sa.or_(*(sa.and_(t.c.severity == k, _past(c)) for k, c in sevs.items()))
            groups.append(sa.and_(t.c.source_id == src, by_sev_cond))
        cuts += list(sevs.values())
    if rules.by_severity:
        sev = sa.or_(*(sa.and_(t.c.severity == k, _past(c)) for k, c in rules.by_severity.items()))
        groups.append(sa.and_(t.c.source_id.not_in(list(rules.by_source)), sev) if rules.by_source else sev)
        cuts += list(rules.by_severity.values())
    if not groups:
        return None
    conds: list[Any] = [t.c.at_ns < _clamp64(max(cuts)), t.c.end_ns.is_not(None),
                        groups[0] if len(groups) == 1 else sa.or_(*groups),
                        t.c.review_status != "confirmed", ~_active_hold()]
    if rules.keep_false_detections:
        conds.append(sa.not_(_false_detection_expr()))
    elif rules.false_detection_ns is not None:
        conds.append(sa.or_(sa.not_(_false_detection_expr()), _past(rules.false_detection_ns)))
    if rules.protect_stored_before_ns is not None:
        conds.append(t.c.stored_ns >= _clamp64(rules.protect_stored_before_ns))
    return conds


def _hold_dict(r) -> dict[str, Any]:
    return {"id": int(r.id), "reason": r.reason, "by": r.by, "at_ns": int(r.at_ns), "note": r.note,
            "active": r.released_ns is None, "released_ns": None if r.released_ns is None else int(r.released_ns),
            "released_by": r.released_by, "release_note": r.release_note or ""}


def _media_row(row) -> MediaRow:
    try:
        doc = json.loads(row.data)
    except ValueError:
        doc = {}
    snap = doc.get("snapshot") or {}
    clip = doc.get("clip") or {}
    window = None
    if clip.get("end_ns") is not None and clip.get("start_ns") is not None:
        window = (str(clip.get("source_id", row.source_id)), int(clip["start_ns"]), int(clip["end_ns"]))
    return MediaRow(row.id, row.source_id, row.severity, int(row.at_ns), max(int(row.at_ns), int(row.stored_ns)),
                    row.end_ns is None, bool(row.held), snap.get("uri") if isinstance(snap, dict) else None, window,
                    int(row.stored_ns), bool(row.fd))


class AreaExists(InputError):
    """The event already made an ignore area (``area``): one event, one area."""

    def __init__(self, area: IgnoreArea) -> None:
        super().__init__(f"event {area.event_id} already made ignore area {area.id}")
        self.area = area


def _clamp64(ns: int) -> int:
    return min(max(int(ns), _INT64_MIN), _INT64_MAX)


def _encode_cursor(sort: str, key: int, event_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([sort, key, event_id], separators=(",", ":")).encode()).decode().rstrip("=")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_cursor(cursor: str, sort: str) -> tuple[int, str]:
    try:
        # issued cursors hold an int key: no float (1e999 is inf), no NaN/Infinity constants
        s, key, eid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), parse_constant=_no_constant)
        if type(key) is not int or not isinstance(eid, str) or not isinstance(s, str) or not _INT64_MIN <= key <= _INT64_MAX:
            raise ValueError
    except (ValueError, TypeError, UnicodeError):
        raise InputError("cursor is not one this server issued") from None
    if s != sort:
        raise InputError(f"cursor belongs to sort {s!r}, not {sort!r}")
    return key, eid


def _json_object(text: str | None) -> dict[str, Any]:
    """A stored JSON object (an audit row's details); {} for anything else, so that one odd row cannot break a page."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {"unreadable": (text or "")[:200]}
    return value if isinstance(value, dict) else {"value": value}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _flatten_text(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _flatten_text(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten_text(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


_NOT_SEARCHED = ("geo_pose",)  # numbers of the drone pose snapshot: nothing anyone searches for by text


def _search_text(ev: Event, notes: Sequence[str] = ()) -> str:
    attrs = {k: v for k, v in ev.attributes.items() if k not in _NOT_SEARCHED}
    parts = [ev.type, ev.source_id, ev.zone_id, *ev.labels, *_flatten_text(attrs), *notes]
    return " ".join(p for p in parts if p).lower().replace("\x00", "")  # PostgreSQL text cannot hold NUL


def identity_columns(ev: Event) -> dict[str, str | None]:
    """The vessel identity an event's row is searched by (``mmsi``, ``vessel_name``, ``hull_text``), as stored; the
    CSV export shows the same."""
    return {"mmsi": _attr(ev, "mmsi", max_len=16), "vessel_name": _attr(ev, "vessel_name", "ais_name", max_len=128),
            "hull_text": _attr(ev, "hull_text", max_len=64)}


def _attr(ev: Event, *names: str, max_len: int) -> str | None:
    for n in names:
        v = ev.attributes.get(n)
        if v not in (None, ""):
            return str(v).replace("\x00", "")[:max_len]
    return None


def _box_conds(min_lat: float, max_lat: float, lon_ranges: list[tuple[float, float]], hide: bool = False) -> list[Any]:
    """Conditions on the indexed lat/lon columns for a box (several lon ranges: across the antimeridian);
    ``hide``: written as ``col + 0`` so that the planner does not use the lat/lon index for them."""
    t = events_table
    lat_col, lon_col = (t.c.lat_deg + 0, t.c.lon_deg + 0) if hide else (t.c.lat_deg, t.c.lon_deg)
    lat = lat_col.between(min_lat, max_lat)
    if len(lon_ranges) == 1:
        lo, hi = lon_ranges[0]
        if lo <= -180 and hi >= 180:
            return [lat, lon_col.is_not(None)]
    # -180 and +180 are one meridian: a range touching one side of the seam also takes points stored on the other
    # (new rows hold +180, see _seam_lon; rows written before may hold -180)
    ranges = [lon_col.between(lo, hi) for lo, hi in lon_ranges]
    seam = sorted({v for lo, hi in lon_ranges for v in ((180.0,) if lo <= -180 else ()) + ((-180.0,) if hi >= 180 else ())
                   if not any(a <= v <= b for a, b in lon_ranges)})
    ranges += [lon_col == v for v in seam]
    return [lat, ranges[0] if len(ranges) == 1 else sa.or_(*ranges)]


def _sqlite_cond(shape: "GeoPolygon | GeoCircle") -> Any:
    t = events_table
    if isinstance(shape, GeoPolygon):
        return sa.func.sw_in_polygon(shape.wkt, t.c.lon_deg, t.c.lat_deg) == 1
    return sa.func.sw_geodesic_m(shape.lat_deg, shape.lon_deg, t.c.lat_deg, t.c.lon_deg) <= shape.radius_m


def _postgis_cond(shape: "GeoPolygon | GeoCircle") -> Any:
    """ST_Covers on the GiST-indexed geometry / ST_DWithin on the GiST-indexed geography (spheroid distance)."""
    if isinstance(shape, GeoPolygon):
        poly = sa.func.ST_GeomFromText(shape.wkt, 4326)
        cond = sa.func.ST_Covers(poly, sa.literal_column("events.geom"))
        lons = [p[0] for p in shape.vertices_lonlat]
        mirrors = [v for v, touches in ((180.0, min(lons) <= -180), (-180.0, max(lons) >= 180)) if touches]
        if not mirrors:
            return cond
        # a polygon with an edge on the antimeridian also covers the points stored at the other side's -180/+180
        t = events_table
        return sa.or_(cond, *(sa.and_(t.c.lon_deg == v, sa.func.ST_Covers(poly, sa.func.ST_SetSRID(
            sa.func.ST_MakePoint(-v, t.c.lat_deg), 4326))) for v in mirrors))
    centre = sa.func.ST_GeogFromText(f"SRID=4326;POINT({shape.lon_deg!r} {shape.lat_deg!r})")
    return sa.func.ST_DWithin(sa.literal_column("(events.geom)::geography"), centre, shape.radius_m)


def _sqlite_pragmas(dbapi_conn, _record, *, read_only: bool = False) -> None:
    cur = dbapi_conn.cursor()
    if read_only:  # switching to WAL writes the file header: a read-only store is left in the mode it is in
        cur.execute("PRAGMA query_only=ON")
    else:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # each commit is on disk before put() returns
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
    # exact geo predicates for polygon / radius search (the lat/lon index narrows the rows first)
    dbapi_conn.create_function("sw_in_polygon", 3, _sqlite_in_polygon, deterministic=True)
    dbapi_conn.create_function("sw_geodesic_m", 4, _sqlite_geodesic_m, deterministic=True)
    dbapi_conn.create_function("sw_lower", 1, _sqlite_lower, deterministic=True)


# tables a database may hold that are not someone else's: ours (by name prefix) and PostGIS's
_OWN_TABLE_PREFIXES = ("events", "review_actions", "ignore_areas", "event_holds", "retention_state", "source_calibrations",
                       "audit_log", "alembic_version", "spatial_ref_sys")


@dataclass(frozen=True)
class SchemaCheck:
    """What a database URL holds, looked at without writing to it (nor creating it).

    ``state``: ``missing`` (no SQLite file there), ``empty`` (no tables), ``foreign`` (tables, but no Seawatch schema),
    ``old`` (a Seawatch store at an older revision than ``head``), ``current``, or ``newer`` (a revision this version
    does not know: written by a newer Seawatch)."""

    url: str  # password hidden
    state: str
    revision: str | None
    head: str
    tables: tuple[str, ...] = ()

    def problem(self, *, dry_run: bool) -> str | None:
        """Why a retention run (``dry_run``: a count that must not change the store) cannot use this database, or
        None."""
        if self.state == "missing":
            return (f"no event store at {self.url}: the database does not exist (check --database or "
                    "storage.database_url; retention runs on the store `seawatch serve` writes)")
        if self.state == "empty":
            return (f"{self.url} is an empty database, not a Seawatch event store (no Seawatch schema): nothing to "
                    "apply retention to (check --database or storage.database_url)")
        if self.state == "foreign":
            shown = ", ".join(self.tables[:8]) + (", ..." if len(self.tables) > 8 else "")
            return (f"{self.url} is not a Seawatch event store (no Seawatch schema; its tables: {shown}); refusing to "
                    "touch it (check --database or storage.database_url)")
        if self.state == "newer":
            return (f"{self.url} is at schema revision {self.revision}, newer than this Seawatch knows (up to "
                    f"{self.head}): upgrade Seawatch first")
        if self.state == "old" and dry_run:
            return (f"{self.url} is a Seawatch event store at schema revision {self.revision}, older than this version's "
                    f"{self.head}; a dry run does not upgrade it: run without --dry-run (or `seawatch serve`) to upgrade "
                    "it, then count again")
        return None


def _known_revisions() -> tuple[str, set[str]]:
    from alembic.script import ScriptDirectory

    from seawatch.service.migrations import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    return script.get_current_head(), {r.revision for r in script.walk_revisions()}


def _schema_state(tables: Sequence[str], revision: str | None, head: str, known: set[str]) -> str:
    if "alembic_version" in tables and "events" in tables and revision is not None:
        if revision == head:
            return "current"
        return "old" if revision in known else "newer"
    if not tables:
        return "empty"
    if revision is None and not [t for t in tables if not t.startswith(_OWN_TABLE_PREFIXES)]:
        return "empty"  # a store whose first migration never committed (or PostGIS's own table only)
    return "foreign"


def inspect_schema(url: str) -> SchemaCheck:
    """Look at the database behind ``url`` read-only: never creates a file, a table or a database.

    Raises :class:`ConfigError` when the URL is invalid or the database cannot be read (not a database, refused)."""
    try:
        sa_url = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"storage.database_url: {exc}") from None
    shown = sa_url.render_as_string(hide_password=True)
    head, known = _known_revisions()
    if sa_url.get_backend_name() == "sqlite":
        import sqlite3
        from urllib.parse import quote

        db = sa_url.database
        if not db or db == ":memory:" or db.startswith("file:"):
            return SchemaCheck(shown, "missing" if not db else "empty", None, head)
        path = Path(db)
        if path.is_dir():
            raise ConfigError(f"{shown}: {path} is a directory, not a database file")
        if not path.exists():
            return SchemaCheck(shown, "missing", None, head)
        try:
            conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
            try:
                tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                           "AND name NOT LIKE 'sqlite_%'"))
                revision = None
                if "alembic_version" in tables:
                    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                    revision = row[0] if row else None
            finally:
                conn.close()
        except sqlite3.Error as exc:  # "file is not a database", unreadable
            raise ConfigError(f"{shown}: cannot read it as an SQLite database: {exc}") from None
        return SchemaCheck(shown, _schema_state(tables, revision, head, known), revision, head, tuple(tables))
    try:
        engine = sa.create_engine(sa_url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(f"storage.database_url {shown}: {exc}") from None
    try:
        with engine.connect() as conn:
            tables = sorted(sa.inspect(conn).get_table_names())
            revision = None
            if "alembic_version" in tables:
                revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            conn.rollback()
    except sa.exc.DBAPIError as exc:
        orig = str(exc.orig).strip()
        if "does not exist" in orig and "database" in orig:
            return SchemaCheck(shown, "missing", None, head)
        raise ConfigError(f"cannot open the database {shown}: {orig}") from None
    finally:
        engine.dispose()
    return SchemaCheck(shown, _schema_state(tables, revision, head, known), revision, head, tuple(tables))


class EventStore:
    """Thread-safe event store. ``EventStore.open(url)`` migrates the database to the newest schema first."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._write_lock = threading.Lock()  # one writer at a time (SQLite has one anyway)
        self._fts: bool | None = None
        self._geom: bool | None = None
        self._close_hooks: list = []

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, read_only: bool = False) -> "EventStore":
        """``read_only``: the database must exist; nothing is created, migrated or written (an SQLite file is opened
        with ``mode=ro`` and ``query_only``, a PostgreSQL session is ``default_transaction_read_only``)."""
        try:
            sa_url = sa.engine.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(f"storage.database_url: {exc}") from None
        kwargs: dict[str, Any] = {}
        if read_only:
            migrate = False
            if sa_url.get_backend_name() == "sqlite":
                import sqlite3
                from urllib.parse import quote

                db = sa_url.database
                if not db or db == ":memory:" or not Path(db).is_file():
                    raise ConfigError(f"storage: no database file at {db or '(memory)'} to open read-only")
                uri = f"file:{quote(str(Path(db).resolve()))}?mode=ro"
                kwargs["creator"] = lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
            elif sa_url.get_backend_name() == "postgresql":
                kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
        if sa_url.get_backend_name() == "postgresql":
            # a connection the server closed (a restart, a fail-over) is replaced before use, not failed on
            kwargs["pool_pre_ping"] = True
        elif sa_url.get_backend_name() == "sqlite":
            db = sa_url.database
            if db and db != ":memory:":
                try:
                    Path(db).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(f"storage: cannot create the folder of {db}: {exc.strerror or exc}") from None
            kwargs["connect_args"] = {"check_same_thread": False}
        try:
            engine = sa.create_engine(sa_url, **kwargs)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(f"storage.database_url {sa_url.render_as_string(hide_password=True)}: {exc}") from None
        if sa_url.get_backend_name() == "sqlite":
            sa_event.listen(engine, "connect", functools.partial(_sqlite_pragmas, read_only=read_only))
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        """Upgrade the schema to the newest Alembic revision."""
        from seawatch.service.migrations import upgrade

        try:
            with self.engine.begin() as conn:
                tables = sa.inspect(conn).get_table_names()
                if "alembic_version" not in tables:
                    others = sorted(t for t in tables if not t.startswith(_OWN_TABLE_PREFIXES))
                    if others:  # someone else's database: creating our tables in it would be a mess to undo
                        raise ConfigError(
                            f"storage: {self.engine.url.render_as_string(hide_password=True)} is not a Seawatch event "
                            f"store (no Seawatch schema; its tables: {', '.join(others[:8])}); refusing to create "
                            "tables in it: use an empty or new database")
                else:
                    self._check_revision(conn)
                upgrade(conn)
            if self.engine.dialect.name == "postgresql":
                from seawatch.service.migrations.versions.r0003_postgis import ensure_postgis

                with self.engine.begin() as conn:  # PostGIS installed after 0003 ran: add the spatial column now
                    ensure_postgis(conn)
        except sa.exc.DBAPIError as exc:  # OperationalError, and DatabaseError for a file that is not a database
            raise ConfigError(f"storage: cannot open/migrate the database "
                              f"{self.engine.url.render_as_string(hide_password=True)}: {exc.orig}") from None

    def _check_revision(self, conn) -> None:
        """Before Alembic runs on an existing store: refuse one written by a newer Seawatch (a rollback after an
        upgrade) with a message saying so, instead of Alembic's "Can't locate revision" traceback, and say in the log
        (WARNING, seen at the default level) when an older store is about to be upgraded: the upgrade is one way."""
        revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        if revision is None:
            return
        head, known = _known_revisions()
        shown = self.engine.url.render_as_string(hide_password=True)
        if revision not in known:
            raise ConfigError(
                f"storage: {shown} is at schema revision {revision}, newer than this Seawatch knows (up to {head}): "
                "it was upgraded by a newer Seawatch. Run that version again, or restore the backup taken before the "
                "upgrade (service/README.md, 'Upgrades, backup and restore'); this version leaves the store untouched")
        if revision != head:
            log.warning("storage: upgrading the event store %s from schema revision %s to %s; this is one way: older "
                        "Seawatch versions refuse the store afterwards (keep the backup taken before the upgrade)",
                        shown, revision, head)

    def add_close_hook(self, fn) -> None:
        """``fn()`` runs first in :meth:`close`, while the store still writes (a sink's last retry of queued events)."""
        self._close_hooks.append(fn)

    def close(self) -> None:
        hooks, self._close_hooks = self._close_hooks, []
        for fn in hooks:
            try:
                fn()
            except Exception:  # noqa: BLE001 - the store closes anyway
                log.exception("store close hook %r failed", fn)
        self.engine.dispose()

    # ---- writes -------------------------------------------------------------------------------------------
    def put(self, ev: Event) -> bool:
        """Store one phase of an incident; True when applied, False when it is not newer than what is stored."""
        now = time.time_ns()
        doc = ev.to_dict()
        for k in ("review_status", "review_history"):
            doc.pop(k, None)
        values = {
            "type": ev.type,
            "severity": ev.severity,
            "severity_rank": severity_rank(ev.severity),
            "phase": ev.phase,
            "seq": ev.seq,
            "source_id": ev.source_id,
            "zone_id": ev.zone_id,
            "start_ns": ev.start_ns,
            "end_ns": ev.end_ns,
            "at_ns": ev.at_ns,
            "lat_deg": ev.geo.lat_deg if ev.geo else None,
            "lon_deg": _seam_lon(ev.geo.lon_deg) if ev.geo else None,
            **identity_columns(ev),
            "data": json.dumps(doc, separators=(",", ":")),
            "stored_ns": now,
        }
        t = events_table
        with self._write_lock, self.engine.begin() as conn:
            row = conn.execute(sa.select(t.c.seq).where(t.c.id == ev.id)).first()
            if row is None:
                conn.execute(t.insert().values(id=ev.id, review_status="new", search_text=_search_text(ev), **values))
                return True
            if ev.seq <= row.seq:
                return False
            notes = conn.execute(sa.select(review_table.c.note).where(review_table.c.event_id == ev.id)).scalars().all()
            conn.execute(t.update().where(t.c.id == ev.id).values(search_text=_search_text(ev, notes), **values))
            return True

    def review(self, event_id: str, status: str, by: str, by_kind: str = "user", note: str = "", at_ns: int | None = None,
               reason: str = "") -> Event:
        """Set the review status and append to the audit trail; returns the updated event (KeyError if unknown).
        ``reason`` ("false_detection") says why a dismissal: the detector was wrong."""
        if status not in REVIEW_STATUSES or status == "new":
            raise InputError(f"review status must be acknowledged, dismissed or confirmed, not {status!r}")
        if (why := reason_problem(status, reason)) is not None:
            raise InputError(why)
        if "\x00" in note or "\x00" in by:
            raise InputError("a review note must not contain NUL characters")
        at = time.time_ns() if at_ns is None else int(at_ns)
        t = events_table
        with self._write_lock, self.engine.begin() as conn:
            row = conn.execute(sa.select(t.c.id, t.c.search_text).where(t.c.id == event_id)).first()
            if row is None:
                raise KeyError(event_id)
            conn.execute(review_table.insert().values(event_id=event_id, status=status, at_ns=at, by=by, by_kind=by_kind, note=note,
                                                      reason=reason))
            text = row.search_text + (" " + note.lower() if note else "")
            conn.execute(t.update().where(t.c.id == event_id).values(review_status=status, search_text=text))
        ev = self.get(event_id)
        assert ev is not None
        return ev

    def add_ignore_area(self, source_id: str, polygon_px: Sequence[Sequence[float]], labels: Sequence[str], by: str,
                        note: str = "", event_id: str | None = None) -> IgnoreArea:
        """Store an ignore area (InputError for a polygon of fewer than 3 finite points, no labels, NUL characters;
        AreaExists when ``event_id`` already made one)."""
        pts = [(float(x), float(y)) for x, y in polygon_px]
        if len(pts) < 3 or not all(math.isfinite(v) for p in pts for v in p):
            raise InputError("an ignore area needs at least 3 finite [x, y] points")
        if not labels or not all(isinstance(lab, str) and lab for lab in labels):
            raise InputError("an ignore area names at least one label")
        if any("\x00" in t for t in (source_id, by, note, *labels)):
            raise InputError("an ignore area must not contain NUL characters")
        now = time.time_ns()
        try:
            with self._write_lock, self.engine.begin() as conn:
                if event_id is not None:
                    row = conn.execute(sa.select(ignore_table).where(ignore_table.c.event_id == event_id)
                                       .order_by(ignore_table.c.id).limit(1)).first()
                    if row is not None:
                        raise AreaExists(self._ignore_area(row))
                new_id = conn.execute(ignore_table.insert().values(
                    source_id=source_id, labels=json.dumps(list(labels)), polygon_px=json.dumps(pts), note=note,
                    event_id=event_id, created_by=by, created_ns=now)).inserted_primary_key[0]
        except sa.exc.IntegrityError:
            # another process sharing the database made the area from this event between the check and the insert
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(ignore_table).where(ignore_table.c.event_id == event_id)).first()
            if event_id is None or row is None:
                raise
            raise AreaExists(self._ignore_area(row)) from None
        return IgnoreArea(int(new_id), source_id, tuple(labels), tuple(pts), note, event_id, by, now)

    def remove_ignore_area(self, area_id: int) -> IgnoreArea | None:
        """Delete one ignore area; the row as it was, or None when there is no such area."""
        with self._write_lock, self.engine.begin() as conn:
            row = conn.execute(sa.select(ignore_table).where(ignore_table.c.id == area_id)).first()
            if row is None:
                return None
            conn.execute(ignore_table.delete().where(ignore_table.c.id == area_id))
        return self._ignore_area(row)

    def ignore_areas(self, source_id: str | None = None) -> list[IgnoreArea]:
        """Stored ignore areas, oldest first (of one source when ``source_id`` is given)."""
        q = sa.select(ignore_table).order_by(ignore_table.c.id)
        if source_id is not None:
            q = q.where(ignore_table.c.source_id == source_id)
        with self.engine.connect() as conn:
            return [self._ignore_area(r) for r in conn.execute(q)]

    @staticmethod
    def _ignore_area(row) -> IgnoreArea:
        return IgnoreArea(int(row.id), row.source_id, tuple(json.loads(row.labels)),
                          tuple((float(x), float(y)) for x, y in json.loads(row.polygon_px)), row.note, row.event_id,
                          row.created_by, int(row.created_ns))

    # ---- operator calibrations ------------------------------------------------------------------------------
    def add_calibration(self, source_id: str, calibration: Mapping[str, Any], by: str, *, note: str = "",
                        fit: Mapping[str, Any] | None = None, config_sha256: str = "",
                        at_ns: int | None = None) -> SourceCalibration:
        """Store a calibration applied to ``source_id`` by ``by``; from now on it is the one in force (the newest).
        InputError for NUL characters or values that are not JSON (NaN)."""
        try:
            cal_text = json.dumps(dict(calibration), allow_nan=False, sort_keys=True)
            fit_text = json.dumps(dict(fit or {}), allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InputError(f"a stored calibration must be plain JSON values: {exc}") from None
        if any("\x00" in t for t in (source_id, by, note, cal_text, fit_text, config_sha256)):
            raise InputError("a calibration must not contain NUL characters")
        now = time.time_ns() if at_ns is None else int(at_ns)
        with self._write_lock, self.engine.begin() as conn:
            new_id = conn.execute(calibrations_table.insert().values(
                source_id=source_id, calibration=cal_text, fit=fit_text, config_sha256=config_sha256, note=note,
                created_by=by, created_ns=now)).inserted_primary_key[0]
        return SourceCalibration(int(new_id), source_id, json.loads(cal_text), json.loads(fit_text), config_sha256, note,
                                 by, now)

    def revert_calibration(self, source_id: str, by: str, at_ns: int | None = None) -> SourceCalibration | None:
        """Mark the calibration in force on ``source_id`` reverted by ``by`` (the configured one is in force again);
        the row as it is now, or None when no operator calibration was in force. The row stays (the history)."""
        c = calibrations_table
        now = time.time_ns() if at_ns is None else int(at_ns)
        with self._write_lock, self.engine.begin() as conn:
            row = conn.execute(sa.select(c).where(c.c.source_id == source_id).order_by(c.c.id.desc()).limit(1)).first()
            if row is None or row.reverted_ns is not None:
                return None
            conn.execute(c.update().where(c.c.id == row.id, c.c.reverted_ns.is_(None)).values(reverted_ns=now, reverted_by=by))
            row = conn.execute(sa.select(c).where(c.c.id == row.id)).first()
        return self._calibration(row)

    def remove_calibration(self, calibration_id: int) -> bool:
        """Delete one row: only to undo an apply the running service refused right after it was stored (an apply
        that never took effect is no history). True when there was such a row."""
        c = calibrations_table
        with self._write_lock, self.engine.begin() as conn:
            return conn.execute(c.delete().where(c.c.id == calibration_id)).rowcount > 0

    def calibration_history(self, source_id: str) -> list[SourceCalibration]:
        """Every calibration applied to ``source_id``, newest first (reverted and superseded ones included)."""
        c = calibrations_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c).where(c.c.source_id == source_id).order_by(c.c.id.desc())).all()
        return [self._calibration(r) for r in rows]

    def calibrations_in_force(self) -> dict[str, SourceCalibration]:
        """Source id -> its operator calibration in force (the newest row of the source, unless reverted); one
        query, for every source that has one."""
        c = calibrations_table
        newest = sa.select(sa.func.max(c.c.id)).group_by(c.c.source_id).scalar_subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c).where(c.c.id.in_(newest), c.c.reverted_ns.is_(None))).all()
        return {r.source_id: self._calibration(r) for r in rows}

    def calibration_in_force(self, source_id: str) -> SourceCalibration | None:
        """The operator calibration in force on ``source_id``, or None (the configured one is)."""
        c = calibrations_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(c).where(c.c.source_id == source_id).order_by(c.c.id.desc()).limit(1)).first()
        return None if row is None or row.reverted_ns is not None else self._calibration(row)

    @staticmethod
    def _calibration(row) -> SourceCalibration:
        return SourceCalibration(int(row.id), row.source_id, json.loads(row.calibration), json.loads(row.fit or "{}"),
                                 row.config_sha256 or "", row.note, row.created_by, int(row.created_ns),
                                 None if row.reverted_ns is None else int(row.reverted_ns), row.reverted_by)

    # ---- the security audit log ------------------------------------------------------------------------------
    def add_audit(self, entry: AuditEntry) -> int:
        """Append one row to the audit log (``service/audit.py`` builds it); its id. InputError for an unknown
        outcome or details that are not plain JSON; text too long for its column is cut, NUL characters dropped."""
        if entry.outcome not in AUDIT_OUTCOMES:
            raise InputError(f"audit outcome must be one of {AUDIT_OUTCOMES}, not {entry.outcome!r}")
        try:
            # json.dumps escapes a NUL in the details: text PostgreSQL takes
            details = json.dumps(entry.details, allow_nan=False, separators=(",", ":"), default=str)
        except (TypeError, ValueError) as exc:
            raise InputError(f"audit details must be plain JSON values: {exc}") from None

        def text(value: str, n: int) -> str:
            return str(value or "").replace("\x00", "")[:n]

        a = audit_table
        values = dict(time_ns=_clamp64(entry.time_ns), actor=text(entry.actor, 128), actor_kind=text(entry.actor_kind, 8),
                      role=text(entry.role, 16), client=text(entry.client, 64), action=text(entry.action, 64),
                      target=text(entry.target, 256), outcome=entry.outcome, status=int(entry.status), details=details)
        with self._write_lock, self.engine.begin() as conn:
            return int(conn.execute(a.insert().values(**values)).inserted_primary_key[0])

    def audit_log(self, q: AuditQuery) -> tuple[list[AuditEntry], str | None]:
        """A page of the audit log, newest first (``time_ns``, then ``id``), and the cursor of the next page (None:
        the last). InputError for a cursor this store did not issue for the audit log."""
        a = audit_table
        sel = sa.select(a).order_by(a.c.time_ns.desc(), a.c.id.desc()).limit(q.limit + 1)
        if q.action:  # a prefix of the dotted name, compared as text (no LIKE: "_" and "%" mean themselves)
            sel = sel.where(sa.func.substr(a.c.action, 1, len(q.action)) == q.action)
        if q.actor is not None:
            sel = sel.where(a.c.actor == q.actor)
        if q.target is not None:
            sel = sel.where(a.c.target == q.target)
        if q.from_ns is not None:
            sel = sel.where(a.c.time_ns >= _clamp64(q.from_ns))
        if q.to_ns is not None:
            sel = sel.where(a.c.time_ns < _clamp64(q.to_ns))
        if q.cursor:
            key, last = _decode_cursor(q.cursor, _AUDIT_CURSOR)
            if not last.isdigit() or len(last) > 18:
                raise InputError("cursor is not one this server issued")
            sel = sel.where(sa.or_(a.c.time_ns < key, sa.and_(a.c.time_ns == key, a.c.id < int(last))))
        with self.engine.connect() as conn:
            rows = conn.execute(sel).all()
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        out = [AuditEntry(time_ns=int(r.time_ns), action=r.action, outcome=r.outcome, status=int(r.status), actor=r.actor,
                          actor_kind=r.actor_kind, role=r.role, client=r.client, target=r.target,
                          details=_json_object(r.details), id=int(r.id)) for r in rows]
        nxt = _encode_cursor(_AUDIT_CURSOR, out[-1].time_ns, str(out[-1].id)) if more and out else None
        return out, nxt

    def count_audit_before(self, before_ns: int) -> int:
        """Audit rows older than ``before_ns`` (UTC ns): what retention would delete."""
        a = audit_table
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(a).where(a.c.time_ns < _clamp64(before_ns))).scalar_one())

    def delete_audit_before(self, before_ns: int, limit: int = 500) -> int:
        """Delete up to ``limit`` of the oldest audit rows older than ``before_ns`` (one short transaction, along the
        ``(time_ns, id)`` index); how many went. Retention calls it until it answers less than ``limit``."""
        a = audit_table
        ids = sa.select(a.c.id).where(a.c.time_ns < _clamp64(before_ns)).order_by(a.c.time_ns, a.c.id).limit(limit)
        with self._write_lock, self.engine.begin() as conn:
            found = conn.execute(ids).scalars().all()
            if not found:
                return 0
            return int(conn.execute(a.delete().where(a.c.id.in_(found))).rowcount)

    # ---- holds and retention -------------------------------------------------------------------------------
    def hold(self, event_id: str, reason: str, by: str, note: str = "", at_ns: int | None = None) -> int:
        """Put a hold on an event (KeyError if unknown): retention never deletes it nor its media while the hold is
        active. Returns the hold's id."""
        if reason not in HOLD_REASONS:
            raise InputError(f"hold reason must be one of {HOLD_REASONS}, not {reason!r}")
        if "\x00" in note or "\x00" in by:
            raise InputError("a hold must not contain NUL characters")
        at = time.time_ns() if at_ns is None else int(at_ns)
        with self._write_lock, self.engine.begin() as conn:
            if conn.execute(sa.select(events_table.c.id).where(events_table.c.id == event_id)).first() is None:
                raise KeyError(event_id)
            res = conn.execute(holds_table.insert().values(event_id=event_id, reason=reason, by=by, at_ns=at, note=note))
            return int(res.inserted_primary_key[0])

    def release_holds(self, event_id: str, by: str, note: str = "", *, hold_id: int | None = None,
                      reasons: Sequence[str] | None = None, at_ns: int | None = None) -> list[dict[str, Any]]:
        """Lift the active holds of an event: ``hold_id`` only that one, else those whose reason is in ``reasons``
        (None: every one). A lifted hold is marked released (who, when, why), never deleted. Returns the holds lifted
        (none: nothing matched, or another desk lifted them first); KeyError when the event is unknown. An
        evidence export's hold is lifted only with a ``note`` saying why (InputError)."""
        if "\x00" in note or "\x00" in by:
            raise InputError("a hold release must not contain NUL characters")
        at = time.time_ns() if at_ns is None else int(at_ns)
        h = holds_table
        conds = [h.c.event_id == event_id, h.c.released_ns.is_(None)]
        if hold_id is not None:
            conds.append(h.c.id == int(hold_id))
        if reasons is not None:
            conds.append(h.c.reason.in_(list(reasons)))
        with self._write_lock, self.engine.begin() as conn:
            if conn.execute(sa.select(events_table.c.id).where(events_table.c.id == event_id)).first() is None:
                raise KeyError(event_id)
            rows = conn.execute(sa.select(h.c.id, h.c.reason).where(*conds).order_by(h.c.id)).all()
            if not note.strip() and any(r.reason == "evidence_export" for r in rows):
                raise InputError("lifting an evidence export's hold needs a note saying why (the exported package "
                                 "can no longer be checked against the original once it is deleted)")
            ids = [r.id for r in rows]
            if ids:
                # released_ns IS NULL again: a desk that lifted one meanwhile keeps its record
                conn.execute(h.update().where(h.c.id.in_(ids), h.c.released_ns.is_(None))
                             .values(released_ns=at, released_by=by, release_note=note))
            lifted = conn.execute(sa.select(h).where(h.c.id.in_(ids), h.c.released_ns == at, h.c.released_by == by)
                                  .order_by(h.c.id)).all() if ids else []
        return [_hold_dict(r) for r in lifted]

    def holds(self, event_id: str) -> list[dict[str, Any]]:
        """The hold rows of an event, oldest first, lifted ones included (``active`` False, with who lifted them,
        when and why)."""
        h = holds_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(h).where(h.c.event_id == event_id).order_by(h.c.id)).all()
        return [_hold_dict(r) for r in rows]

    def with_holds(self, ids: Sequence[str]) -> set[str]:
        """Which of these events have an active hold (an evidence export, a reviewer's hold); one indexed query per
        900 ids (an export asks for up to 10 000: SQLite bounds the parameters of one statement)."""
        ids = list(ids)
        h = holds_table
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 900):
                out.update(conn.execute(sa.select(h.c.event_id).where(h.c.event_id.in_(ids[i:i + 900]),
                                                                       h.c.released_ns.is_(None)).distinct()).scalars())
        return out

    def held_counts(self) -> dict[str, int]:
        """Events retention keeps whatever their age: ``confirmed``, ``holds`` (events with an active hold), ``held``
        (either), ``open``."""
        t, h = events_table, holds_table
        with self.engine.connect() as conn:
            confirmed = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.review_status == "confirmed")).scalar_one())
            holds = int(conn.execute(sa.select(sa.func.count(sa.distinct(h.c.event_id)))
                                     .where(h.c.released_ns.is_(None))).scalar_one())
            held = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(_held_expr())).scalar_one())
            opened = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.end_ns.is_(None))).scalar_one())
        return {"confirmed": confirmed, "holds": holds, "held": held, "open": opened}

    def retention_state(self) -> dict[str, int]:
        """The store's retention times (``enabled_ns``, ``protect_before_ns``); empty before retention first ran."""
        r = retention_state_table
        with self.engine.connect() as conn:
            return {row.name: int(row.value_ns) for row in conn.execute(sa.select(r))}

    def init_retention_state(self, values: Mapping[str, int]) -> dict[str, int]:
        """Record ``values`` unless the store already has an ``enabled_ns`` (another process, or an earlier start, was
        first: its values stand); returns what the store holds."""
        r = retention_state_table
        try:
            with self._write_lock, self.engine.begin() as conn:
                if conn.execute(sa.select(r.c.name).where(r.c.name == "enabled_ns")).first() is None:
                    conn.execute(r.insert(), [{"name": k, "value_ns": _clamp64(v)} for k, v in values.items()])
        except sa.exc.IntegrityError:  # a second process sharing the database inserted them between check and insert
            pass
        return self.retention_state()

    _MEDIA_COLS = (events_table.c.id, events_table.c.source_id, events_table.c.severity, events_table.c.at_ns,
                   events_table.c.stored_ns, events_table.c.end_ns, events_table.c.data)

    def _media_select(self) -> sa.Select:
        return sa.select(*self._MEDIA_COLS, _held_expr().label("held"), _false_detection_expr().label("fd"))

    def expired_events(self, rules: ExpiryRules | Mapping[str, int], after: tuple[int, str] | None = None,
                       limit: int = 500) -> list[MediaRow]:
        """Closed, unheld events the :class:`ExpiryRules` expire (a plain ``{severity: cutoff ns}`` is
        ``ExpiryRules(by_severity=...)``), oldest first along the ``at_ns`` index, after the ``(at_ns, id)`` cursor
        ``after``."""
        rules = rules if isinstance(rules, ExpiryRules) else ExpiryRules(dict(rules))
        conds = _expiry_conds(rules)
        if conds is None:
            return []
        t = events_table
        if after is not None:
            # the plain range first: the index walk starts at the cursor instead of testing the OR from the start
            conds += [t.c.at_ns >= after[0], sa.or_(t.c.at_ns > after[0], sa.and_(t.c.at_ns == after[0], t.c.id > after[1]))]
        stmt = self._media_select().where(*conds).order_by(t.c.at_ns, t.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [_media_row(r) for r in conn.execute(stmt)]

    def count_expired(self, rules: ExpiryRules, stored_before_ns: int | None = None) -> int:
        """How many events ``rules`` expire (only those stored before ``stored_before_ns`` when given)."""
        conds = _expiry_conds(rules)
        if conds is None:
            return 0
        if stored_before_ns is not None:
            conds.append(events_table.c.stored_ns < _clamp64(stored_before_ns))
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events_table).where(*conds)).scalar_one())

    def delete_expired(self, ids: Sequence[str], rules: ExpiryRules | None = None) -> list[MediaRow]:
        """Delete these events (and their audit trail) in one transaction, each only if it is still closed and
        unheld, and still expired by ``rules`` when given (a reviewer may have confirmed it, held it or called it a
        false detection since it was selected); returns the rows deleted, whose files the caller removes after the
        commit."""
        if not ids:
            return []
        t = events_table
        base = [t.c.end_ns.is_not(None), t.c.review_status != "confirmed", ~_active_hold()]
        if rules is not None:
            conds = _expiry_conds(rules)
            if conds is None:
                return []
            base = conds
        with self._write_lock, self.engine.begin() as conn:
            rows = [_media_row(r) for r in conn.execute(self._media_select().where(t.c.id.in_(list(ids)), *base))]
            gone = [r for r in rows if not r.open and not r.held]
            if gone:
                conn.execute(t.delete().where(t.c.id.in_([r.id for r in gone]), *base))
        return gone

    def media_rows(self, ids: Sequence[str]) -> dict[str, MediaRow]:
        """The stored events among ``ids`` (media and hold state), by id."""
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(self._media_select().where(events_table.c.id.in_(list(ids))))
            return {r.id: _media_row(r) for r in rows}

    def media_rows_like(self, pattern: str) -> list[MediaRow]:
        """Events whose id matches a file-name stem in which ``_`` may stand for any one character (the snapshot
        sink replaces characters unsafe in file names by ``_``)."""
        with self.engine.connect() as conn:
            rows = conn.execute(self._media_select().where(events_table.c.id.like(pattern)).limit(1000))
            return [_media_row(r) for r in rows]

    def clip_owners(self, source_id: str, start_ns: int, end_ns: int) -> list[MediaRow]:
        """Events of ``source_id`` that start inside ``[start_ns, end_ns]``: those whose clip may be this window
        (an event's clip window holds its start; compare ``MediaRow.clip`` for the exact window)."""
        t = events_table
        stmt = self._media_select().where(t.c.source_id == source_id, t.c.start_ns >= _clamp64(start_ns),
                                          t.c.start_ns <= _clamp64(end_ns))
        with self.engine.connect() as conn:
            return [_media_row(r) for r in conn.execute(stmt)]

    def held_since(self, at_ns: int, limit: int = 10_000) -> list[MediaRow]:
        """Held, closed events whose last time is after ``at_ns`` (their clips may still be cut from recordings)."""
        t = events_table
        stmt = (self._media_select().where(t.c.at_ns >= _clamp64(at_ns), t.c.end_ns.is_not(None), _held_expr())
                .order_by(t.c.at_ns.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [_media_row(r) for r in conn.execute(stmt)]

    def open_windows(self) -> list[tuple[str, int]]:
        """(source_id, clip start) of every open incident: recordings from there on are still needed."""
        t = events_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.source_id, t.c.start_ns, t.c.data).where(t.c.end_ns.is_(None)).limit(100_000))
            out = []
            for r in rows:
                try:
                    clip = json.loads(r.data).get("clip") or {}
                except ValueError:
                    clip = {}
                out.append((str(clip.get("source_id", r.source_id)), int(clip.get("start_ns", r.start_ns))))
            return out

    # ---- reads --------------------------------------------------------------------------------------------
    def _history(self, conn, ids: Sequence[str]) -> dict[str, list[ReviewEntry]]:
        out: dict[str, list[ReviewEntry]] = {}
        if not ids:
            return out
        r = review_table
        rows = conn.execute(sa.select(r.c.event_id, r.c.status, r.c.at_ns, r.c.by, r.c.note, r.c.reason)
                            .where(r.c.event_id.in_(ids)).order_by(r.c.id))
        for row in rows:
            out.setdefault(row.event_id, []).append(ReviewEntry(row.status, row.at_ns, row.by, row.note, row.reason))
        return out

    @staticmethod
    def _event(data: str, status: str, history: list[ReviewEntry]) -> Event:
        ev = Event.from_dict(json.loads(data))
        return replace(ev, review_status=status, review_history=tuple(history))

    def get(self, event_id: str) -> Event | None:
        t = events_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.data, t.c.review_status).where(t.c.id == event_id)).first()
            if row is None:
                return None
            return self._event(row.data, row.review_status, self._history(conn, [event_id]).get(event_id, []))

    def audit(self, event_id: str) -> list[ReviewAction]:
        r = review_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(r).where(r.c.event_id == event_id).order_by(r.c.id)).all()
        return [ReviewAction(x.event_id, x.status, x.at_ns, x.by, x.by_kind, x.note, x.reason) for x in rows]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one())

    GEO_FIRST_MAX_ROWS = 20_000

    def _has_fts(self) -> bool:
        """SQLite with the FTS5 trigram index of migration 0002 (PostgreSQL's pg_trgm index needs no query change)."""
        if self.engine.dialect.name != "sqlite":
            return False
        if self._fts is None:
            with self.engine.connect() as conn:
                self._fts = conn.execute(sa.text("SELECT 1 FROM sqlite_master WHERE name = 'events_fts'")).first() is not None
        return self._fts

    def _postgis(self) -> bool:
        """PostgreSQL with the PostGIS column of migration 0003 (absent where the extension could not be created)."""
        if self.engine.dialect.name != "postgresql":
            return False
        if self._geom is None:
            with self.engine.connect() as conn:
                self._geom = conn.execute(sa.text(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = 'events' AND column_name = 'geom'")).first() is not None
        return self._geom

    GEO_FIRST_MIN_ROWS = 2_000

    def _geo_first_rows(self, limit: int) -> int:
        """How many events a box may hold for reading it through the lat/lon index to pay off.

        Reading the box costs one row per event in it (b); walking another index (time, type) until ``limit``
        matches costs about limit * N / b rows (N events in all). They break even at b = sqrt(limit * N). SQLite
        only (its max(rowid) is free); PostgreSQL keeps the fixed GEO_FIRST_MAX_ROWS."""
        if self.engine.dialect.name != "sqlite":
            return self.GEO_FIRST_MAX_ROWS
        with self.engine.connect() as conn:
            n = int(conn.execute(sa.text("SELECT max(rowid) FROM events")).scalar() or 0)
        return min(self.GEO_FIRST_MAX_ROWS, max(self.GEO_FIRST_MIN_ROWS, int(math.sqrt((limit + 1) * n))))

    def _rare_in_fts(self, phrase: str, limit: int) -> bool:
        """True when few enough events hold ``phrase`` for reading them through the trigram index to pay off (the
        same break-even as a box, :meth:`_geo_first_rows`); a common word is cheaper to find by walking the sort
        index and testing each row, which stops after ``limit`` matches."""
        k = self._geo_first_rows(limit)
        probe = sa.text("SELECT count(*) FROM (SELECT rowid FROM events_fts WHERE events_fts MATCH :p LIMIT :k)")
        with self.engine.connect() as conn:
            return int(conn.execute(probe, {"p": phrase, "k": k + 1}).scalar() or 0) <= k

    def _few_in_box(self, box: list[Any], limit: int = 50) -> bool:
        """True when the box holds few enough events to read it first (an index-only probe of the lat/lon index)."""
        t = events_table
        most = self._geo_first_rows(limit)
        probe = sa.select(sa.func.count()).select_from(sa.select(t.c.lat_deg).where(*box).limit(most + 1).subquery())
        with self.engine.connect() as conn:
            return int(conn.execute(probe).scalar_one()) <= most

    def search(self, q: EventQuery) -> Page:
        stmt = self._select(q)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
            more = len(rows) > q.limit
            rows = rows[: q.limit]
            hist = self._history(conn, [r.id for r in rows])
        events = [self._event(r.data, r.review_status, hist.get(r.id, [])) for r in rows]
        nxt = _encode_cursor(q.sort, rows[-1].sort_key, rows[-1].id) if more and rows else None
        return Page(events, nxt)

    def where_clause(self, q: EventQuery) -> Any:
        """The WHERE clause a search of ``q`` filters with (its cursor, order and limit left out): for aggregates over
        the events a search finds (service.report). ``true`` when ``q`` has no filter."""
        clause = self._select(replace(q, cursor=None)).whereclause
        return sa.true() if clause is None else clause

    def explain(self, q: EventQuery) -> str:
        """The database's plan for a search (SQLite EXPLAIN QUERY PLAN / PostgreSQL EXPLAIN), one line per step."""
        stmt = self._select(q)
        compiled = stmt.compile(dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True})
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                params = tuple(compiled.params[k] for k in compiled.positiontup or ())
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params).all()
                return "\n".join(str(r[-1]) for r in rows)
            rows = conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params).all()
            return "\n".join(str(r[0]) for r in rows)

    def _select(self, q: EventQuery) -> sa.Select:
        t = events_table
        conds: list[Any] = []
        if q.types:
            conds.append(t.c.type.in_(q.types))
        if q.severities:
            conds.append(t.c.severity.in_(q.severities))
        if q.min_severity is not None:
            conds.append(t.c.severity_rank >= severity_rank(q.min_severity))
        if q.statuses:
            conds.append(t.c.review_status.in_(q.statuses))
        if q.source_ids:
            conds.append(t.c.source_id.in_(q.source_ids))
        if q.zone_ids:
            conds.append(t.c.zone_id.in_(q.zone_ids))
        if q.start_from_ns is not None:
            conds.append(t.c.start_ns >= _clamp64(q.start_from_ns))
        if q.start_to_ns is not None:
            if q.start_to_ns > _INT64_MAX:
                conds.append(sa.true())
            elif q.start_to_ns <= _INT64_MIN:  # before every BIGINT time: nothing (the driver cannot bind it)
                conds.append(sa.false())
            else:
                conds.append(t.c.start_ns < q.start_to_ns)
        if q.active_from_ns is not None:
            conds.append(sa.or_(t.c.end_ns.is_(None), t.c.end_ns >= _clamp64(q.active_from_ns)))
        if q.open_only is True:
            conds.append(t.c.end_ns.is_(None))
        elif q.open_only is False:
            conds.append(t.c.end_ns.is_not(None))
        if q.has_geo is True:
            conds.append(t.c.lat_deg.is_not(None))
        elif q.has_geo is False:
            conds.append(t.c.lat_deg.is_(None))
        boxes: list[tuple[float, float, list[tuple[float, float]]]] = []  # (min_lat, max_lat, lon ranges)
        if q.bbox is not None:
            b = q.bbox
            lons = [(b.min_lon_deg, b.max_lon_deg)] if b.min_lon_deg <= b.max_lon_deg else [(b.min_lon_deg, 180.0), (-180.0, b.max_lon_deg)]
            boxes.append((b.min_lat_deg, b.max_lat_deg, lons))
        exact: list[Any] = []  # the costly exact predicates go last, after every indexed condition
        for shape in (q.polygon, q.near):
            if shape is None:
                continue
            if self._postgis():
                exact.append(_postgis_cond(shape))
            elif self.engine.dialect.name == "sqlite":
                boxes.append(shape.box())  # the lat/lon index narrows, the exact SQL function decides
                exact.append(_sqlite_cond(shape))
            else:
                raise ConfigError("polygon and radius search need PostGIS on this PostgreSQL database "
                                  "(CREATE EXTENSION postgis as a superuser, then restart the service to migrate)")
        geo_first = any(self._few_in_box(_box_conds(*b), q.limit) for b in boxes)
        # SQLite, many events in the box: walk the time (or type, source...) index and test the box on each row,
        # with the lat/lon columns hidden from the planner; otherwise it reads the whole latitude band of the
        # lat/lon index and sorts tens of thousands of rows
        hide = self.engine.dialect.name == "sqlite" and not geo_first
        for b in boxes:
            conds += _box_conds(*b, hide=hide)
        if q.mmsi:
            conds.append(t.c.mmsi == q.mmsi)
        # the pattern is lowered by Python; SQLite's own lower() only lowers ASCII, so it gets Python's (sw_lower)
        lower = sa.func.sw_lower if self.engine.dialect.name == "sqlite" else sa.func.lower
        if q.vessel_name:
            conds.append(lower(t.c.vessel_name).like(f"%{_like_escape(q.vessel_name.lower())}%", escape="\\"))
        if q.hull_text:
            # stored hull text is normalised (seawatch.vision.identity.hulltext): a query typed as painted ("SC 10",
            # "浙岱渔 03891", traditional 漁, O for 0) matches in that form too; the raw text still finds a fragment
            from seawatch.vision.identity.hulltext import normalise_hull

            patterns = {q.hull_text.lower(), normalise_hull(q.hull_text).lower()} - {""}
            conds.append(sa.or_(*(lower(t.c.hull_text).like(f"%{_like_escape(p)}%", escape="\\") for p in sorted(patterns))))
        if q.text:
            fts = self._has_fts()
            for word in q.text.lower().split():
                conds.append(t.c.search_text.like(f"%{_like_escape(word)}%", escape="\\"))
                phrase = '"' + word.replace('"', '""') + '"'
                # trigram index: candidates by rowid for a rare word (the LIKE above re-checks them)
                if fts and len(word) >= 3 and self._rare_in_fts(phrase, q.limit):
                    conds.append(sa.literal_column("events.rowid").in_(
                        sa.select(sa.literal_column("rowid")).select_from(sa.table("events_fts"))
                        .where(sa.literal_column("events_fts").op("MATCH")(phrase))))
        col_name, desc = SORTS[q.sort]
        col = t.c[col_name]
        if geo_first:
            # Few events in the box: read them through the lat/lon index and sort them. "+ 0" hides the time
            # column from the planner, which otherwise walks the time index and reads every row of the period.
            col = col + 0
        if q.cursor:
            key, eid = _decode_cursor(q.cursor, q.sort)
            if desc:
                conds.append(sa.or_(col < key, sa.and_(col == key, t.c.id < eid)))
            else:
                conds.append(sa.or_(col > key, sa.and_(col == key, t.c.id > eid)))
        conds += exact
        order = (col.desc(), t.c.id.desc()) if desc else (col.asc(), t.c.id.asc())
        return sa.select(t.c.id, t.c.data, t.c.review_status, col.label("sort_key")).where(*conds).order_by(*order).limit(q.limit + 1)
