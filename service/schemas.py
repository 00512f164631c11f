"""API schemas (pydantic, the HTTP edge only); converted explicitly from the domain ``Event`` and store values."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seawatch.errors import InputError
from seawatch.vision.events import Event

Severity = Literal["low", "medium", "high", "critical"]
Status = Literal["new", "acknowledged", "dismissed", "confirmed"]
Sort = Literal["-start_ns", "start_ns", "-at_ns", "at_ns"]
Name = Annotated[str, Field(min_length=1, max_length=128)]  # an event type, source or zone id (stated in the schema)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_ns(dt: datetime) -> int:
    """UTC ns of an aware datetime (a naive one is taken as UTC); exact to the microsecond."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(default_factory=list, description="where in the request (query, body, path + field)")
    msg: str


class ErrorInfo(BaseModel):
    code: str = Field(description="machine-readable: unauthorized, forbidden, not_found, invalid_request, rate_limited, ...")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every error answer has this shape."""

    error: ErrorInfo


class SearchParams(BaseModel):
    """Event search filters (repeat a list parameter for several values: ``?type=fire&type=smoke``)."""

    model_config = ConfigDict(extra="forbid")

    type: list[Name] = Field(default_factory=list, max_length=50, description="event types (any of)")
    severity: list[Severity] = Field(default_factory=list, max_length=4, description="severities (any of)")
    min_severity: Severity | None = Field(None, description="this severity or worse")
    status: list[Status] = Field(default_factory=list, max_length=4, description="review statuses (any of)")
    source: list[Name] = Field(default_factory=list, max_length=200, description="source ids (any of)")
    drone: list[Name] = Field(default_factory=list, max_length=50,
                              description="drone ids (any of): the drone's own incidents (drone_link_lost) and its "
                                          "cameras' events; together with source, any of both")
    zone: list[Name] = Field(default_factory=list, max_length=200, description="zone ids (any of)")
    start_from: datetime | None = Field(None, description="incident started at or after (ISO 8601, UTC if no zone)")
    start_to: datetime | None = Field(None, description="incident started before (ISO 8601)")
    active_from: datetime | None = Field(None, description="incident still going at or after this time (open, or ended "
                                                         "at or after it); with start_to: the incidents of a time window")
    open: bool | None = Field(None, description="true: still open (no end yet); false: ended")
    min_lat: float | None = Field(None, ge=-90, le=90, description="bbox south edge, degrees (give all four bbox edges)")
    min_lon: float | None = Field(None, ge=-180, le=180, description="bbox west edge; west > east crosses the antimeridian")
    max_lat: float | None = Field(None, ge=-90, le=90, description="bbox north edge")
    max_lon: float | None = Field(None, ge=-180, le=180, description="bbox east edge")
    polygon: str | None = Field(None, min_length=1, max_length=20000,
                                description="WGS84 polygon 'lon lat,lon lat,...' (3-500 vertices, straight edges in lon/lat, "
                                            "boundary included, no self-crossing, not across the antimeridian)")
    near_lat: float | None = Field(None, ge=-90, le=90, description="radius search centre latitude (with near_lon and radius_m)")
    near_lon: float | None = Field(None, ge=-180, le=180, description="radius search centre longitude")
    radius_m: float | None = Field(None, gt=0, le=1_000_000, description="radius search: geodesic metres on the WGS84 ellipsoid")
    has_geo: bool | None = Field(None, description="true: only events with a position; false: only without")
    mmsi: str | None = Field(None, pattern=r"^[0-9]{1,9}$", description="vessel MMSI (exact)")
    vessel_name: str | None = Field(None, min_length=1, max_length=128, description="vessel name contains (case-insensitive)")
    hull_text: str | None = Field(None, min_length=1, max_length=64, description="hull OCR text contains (case-insensitive)")
    q: str | None = Field(None, min_length=1, max_length=200, description="free text: every word must appear in type, labels, attributes or review notes")
    sort: Sort = Field("-start_ns", description="start_ns / at_ns (last update), '-' = newest first")
    limit: int = Field(50, ge=1, le=10000, description="page size (at most service.max_page_size)")
    cursor: str | None = Field(None, max_length=512, description="next_cursor of the previous page")

    @model_validator(mode="after")
    def _check(self) -> "SearchParams":
        edges = (self.min_lat, self.min_lon, self.max_lat, self.max_lon)
        if any(e is not None for e in edges) and any(e is None for e in edges):
            raise ValueError("a bbox needs all four of min_lat, min_lon, max_lat, max_lon")
        if self.min_lat is not None and self.max_lat is not None and self.min_lat > self.max_lat:
            raise ValueError("min_lat must not exceed max_lat")
        near = (self.near_lat, self.near_lon, self.radius_m)
        if any(e is not None for e in near) and any(e is None for e in near):
            raise ValueError("a radius search needs all three of near_lat, near_lon, radius_m")
        try:
            self.geo_filters()
        except InputError as exc:
            raise ValueError(str(exc)) from None
        if self.start_from and self.start_to and to_ns(self.start_from) > to_ns(self.start_to):
            raise ValueError("start_from must not be after start_to")
        for name in ("type", "source", "zone"):
            for v in getattr(self, name):
                if not 0 < len(v) <= 128:
                    raise ValueError(f"{name} values must be 1-128 characters")
        return self

    def geo_filters(self) -> dict[str, Any]:
        """The polygon and radius filters as the store's typed values (``EventQuery`` fields)."""
        from seawatch.service.store import GeoCircle, GeoPolygon

        out: dict[str, Any] = {}
        if self.polygon is not None:
            out["polygon"] = GeoPolygon.parse(self.polygon)
        if self.radius_m is not None and self.near_lat is not None and self.near_lon is not None:
            out["near"] = GeoCircle(self.near_lat, self.near_lon, self.radius_m)
        return out


class GeoOut(BaseModel):
    lat_deg: float
    lon_deg: float
    semi_major_m: float
    semi_minor_m: float
    orientation_deg: float


class ClipOut(BaseModel):
    source_id: str
    start_ns: int
    end_ns: int | None
    pre_roll_ns: int
    post_roll_ns: int


class SnapshotOut(BaseModel):
    source_id: str
    capture_time_ns: int
    xyxy_px: list[float]
    score: float


class ReviewOut(BaseModel):
    status: Status
    at_ns: int
    by: str
    note: str
    reason: Literal["", "false_detection"] = ""


class EventOut(BaseModel):
    """One incident (its newest phase) with its review status and audit trail."""

    id: str
    type: str
    severity: Severity
    phase: Literal["start", "update", "end"]
    seq: int
    source_id: str
    zone_id: str
    start_ns: int
    end_ns: int | None
    at_ns: int
    track_ids: list[int]
    labels: list[str]
    scores: list[float]
    attributes: dict[str, Any]
    snapshot: SnapshotOut | None
    clip: ClipOut | None
    geo: GeoOut | None
    geo_reason: str | None
    review_status: Status
    review_history: list[ReviewOut]
    snapshot_url: str | None = Field(None, description="JPEG of the best view, when stored")
    clip_url: str | None = Field(None, description="MP4 clip, cut from recordings on request")
    held: bool | None = Field(None, description="has a hold (an evidence export, a reviewer's hold): retention keeps "
                              "it for good; in searches and single events (null in live messages)")

    @classmethod
    def from_event(cls, ev: Event, prefix: str = "/api") -> "EventOut":
        d = ev.to_dict()
        d["snapshot_url"] = f"{prefix}/events/{ev.id}/snapshot" if ev.snapshot is not None and ev.snapshot.uri else None
        d["clip_url"] = f"{prefix}/events/{ev.id}/clip" if ev.clip is not None and ev.clip.end_ns is not None else None
        return cls.model_validate(d)


class EventPage(BaseModel):
    events: list[EventOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000, description="reviewer note (kept in the audit trail, searchable)")
    reason: Literal["", "false_detection"] = Field(
        "", description="dismissals only: 'false_detection' when the detector was wrong (the box is not what its label "
                        "says, e.g. a buoy called a vessel) rather than a real but harmless incident; `seawatch reviews "
                        "export` teaches only those boxes as background")


class IgnoreSpotIn(BaseModel):
    """How big the ignore area made of an event's subject box is, and why."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=500, description="why (e.g. 'fairway buoy'): kept with the area and in the audit trail")
    labels: list[str] | None = Field(None, min_length=1, max_length=8,
                                     description="labels to drop there (default: the event's labels; must be among them)")
    margin_frac: float = Field(0.1, ge=0.0, le=2.0, description="reach around the anchor point, as a fraction of the box's size")
    min_margin_px: float = Field(6.0, ge=0.0, le=200.0, description="and at least this many pixels")


class IgnoreAreaOut(BaseModel):
    """An ignore area added from the review desk (detections of ``labels`` with their anchor point inside are
    dropped on that camera)."""

    id: int
    source_id: str
    labels: list[str]
    polygon_px: list[list[float]]
    note: str
    event_id: str | None
    created_by: str
    created_ns: int


class IgnoreSpotOut(BaseModel):
    area: IgnoreAreaOut
    event: EventOut


class AuditOut(BaseModel):
    event_id: str
    status: Status
    at_ns: int
    by: str
    by_kind: Literal["user", "key"]
    note: str
    reason: Literal["", "false_detection"] = ""


class HoldOut(BaseModel):
    """A hold on an event (``event_holds``): while ``active``, retention never deletes the event nor its media. A
    lifted hold stays listed, with who lifted it, when and why."""

    id: int = Field(description="the hold's id (DELETE /events/{id}/hold with {hold_id} lifts this one)")
    reason: Literal["evidence_export", "manual"] = Field(description="evidence_export: an evidence package was "
                                                         "exported; manual: a reviewer's hold")
    by: str = Field(description="who put it: user:NAME or key:NAME")
    at_ns: int
    note: str
    active: bool = Field(description="false once lifted")
    released_ns: int | None = Field(None, description="when it was lifted (null: active)")
    released_by: str | None = Field(None, description="who lifted it: user:NAME or key:NAME")
    release_note: str = Field("", description="why it was lifted")


class HoldReleaseIn(BaseModel):
    """Lifting holds: by default every active reviewer's (``manual``) hold of the event; ``hold_id`` names one hold
    (an evidence export's only by an admin, with a ``note``)."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000, description="why the hold is lifted (required for an evidence export's)")
    hold_id: int | None = Field(None, ge=1, description="lift only this hold (ids: GET /events/{id}/holds)")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at_s: float = Field(description="UTC seconds since the epoch")
    role: str


class WhoAmI(BaseModel):
    name: str
    role: str
    kind: Literal["user", "key"]


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: Literal["ok", "error"]


class SourceOut(BaseModel):
    """A configured source and its live reader status (URL credentials redacted).

    A camera that is down stays ``offline`` while it retries; ``down_since_ns`` and ``attempts`` say for how long
    and how often it has been tried since."""

    model_config = ConfigDict(extra="allow")

    source_id: str
    state: str
    since_ns: int | None = Field(None, description="UTC ns of the last state change")
    down_since_ns: int | None = Field(
        None, description="cameras: UTC ns of the failure that took it down (first failed attempt); null while up")
    attempts: int | None = Field(
        None, ge=0, description="cameras: connection attempts failed in a row since down_since_ns (0 while up)")
    last_error: str | None = Field(None, description="the newest error (credentials redacted)")
    analysis: dict[str, Any] | None = Field(
        None, description="cameras: how analysis keeps up: asked_fps, analysed_fps (last 10 s), delivered_fps (what "
                          "the camera gave for analysis, after motion gating), behind (analysed under 80 % of the "
                          "asked rate, or of the delivered one when less), lag_ms (capture to end of analysis, running "
                          "mean; null for a replay's clock), process_ms and detect_ms (per frame, running means), "
                          "frames (since start)")


class SpanOut(BaseModel):
    start_ns: int = Field(description="capture time of the span's first picture (UTC ns)")
    end_ns: int = Field(description="capture time of its last picture (UTC ns)")


class RecordingsOut(BaseModel):
    """What is recorded of a camera: spans of video (joined across segment boundaries, split at outages)."""

    source_id: str
    recording: bool = Field(description="false when the service records no video (storage.recording.enabled)")
    spans: list[SpanOut] = Field(description="recorded video inside the asked window, oldest first")
    oldest_ns: int | None = Field(description="the oldest recorded picture of this camera (retention deletes older)")
    newest_ns: int | None = Field(description="the newest recorded picture")
    segments: int = Field(description="finished segment files")
    bytes: int = Field(description="disk used by this camera's recordings")
    max_clip_s: int = Field(description="the longest window GET /api/sources/{id}/clip cuts")


Point = Annotated[list[Annotated[float, Field(ge=0, le=100_000)]], Field(min_length=2, max_length=2)]
Box = Annotated[list[Annotated[float, Field(ge=0, le=100_000)]], Field(min_length=4, max_length=4)]


class ReportIn(BaseModel):
    """An event a person reports from a camera's recording (a fire the detector missed, a boat seen on the video):
    the window it is seen in, the picture for its snapshot, and optionally where in the picture."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=128, description="the camera (a drone's camera too)")
    start_ns: int = Field(ge=0, description="the window's start (UTC ns): the event's start and its clip's")
    end_ns: int = Field(ge=0, description="the window's end (UTC ns)")
    at_ns: int | None = Field(None, ge=0, description="capture time of the picture for the snapshot (default: the "
                                                      "window's middle); the recorded picture nearest it is used")
    point_px: Point | None = Field(None, description="the spot in that picture [x, y] (recorded pixels): located on "
                                                     "the map through the camera's calibration or the drone's pose")
    box_px: Box | None = Field(None, description="the subject's box [x1, y1, x2, y2] (default: around point_px); "
                                                 "without point_px its bottom centre (where it meets the ground or "
                                                 "water) is the spot located")
    label: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,63}$",
                              description="what the subject is, as a detector label (vessel, person, fire...): the "
                                          "event's label. With box_px, a report a reviewer confirms is a training "
                                          "label of the site's own frames (`seawatch reviews export`): a boat the "
                                          "model missed")
    type: str = Field("manual_report", pattern=r"^[a-z][a-z0-9_]{0,63}$",
                      description="event type (manual_report, or what it is: fire, smoke, vessel_in_zone...)")
    severity: Severity = "medium"
    note: str = Field("", max_length=2000, description="what was seen (kept with the event and in its audit trail)")

    @model_validator(mode="after")
    def _window(self) -> "ReportIn":
        if self.end_ns <= self.start_ns:
            raise ValueError("end_ns must be after start_ns")
        if self.at_ns is not None and not self.start_ns <= self.at_ns <= self.end_ns:
            raise ValueError("at_ns must lie inside [start_ns, end_ns]")
        if self.box_px is not None and not (self.box_px[0] < self.box_px[2] and self.box_px[1] < self.box_px[3]):
            raise ValueError("box_px must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2")
        return self
