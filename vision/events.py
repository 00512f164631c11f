"""The domain ``Event`` every stage agrees on, its JSON form, and the sinks events are emitted to.

An incident (one fire, one bare-headed worker, one blockage, one vessel in a zone) produces a sequence of event
values sharing one ``id``: a ``start``, zero or more ``update``s and one ``end``. ``seq`` counts them (0 for the
start), so a store can apply them idempotently and in order.

Times are int nanoseconds UTC taken from frame capture times (the stream's clock), never from when Python
processed the frame.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal, Mapping, Protocol, runtime_checkable

import numpy as np

from seawatch.errors import InputError

log = logging.getLogger(__name__)

Phase = Literal["start", "update", "end"]
Severity = Literal["low", "medium", "high", "critical"]
ReviewStatus = Literal["new", "acknowledged", "dismissed", "confirmed"]

PHASES: tuple[str, ...] = ("start", "update", "end")
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
REVIEW_STATUSES: tuple[str, ...] = ("new", "acknowledged", "dismissed", "confirmed")
# why a dismissal: "" (a real but harmless incident, or not said) or "false_detection" (the detector was wrong: the
# box is not what its label says); only dismissals carry one
REVIEW_REASONS: tuple[str, ...] = ("", "false_detection")


def reason_problem(status: str, reason: str) -> str | None:
    """Why ``reason`` cannot go with a review of ``status`` (None when it can): one rule for the store, the API and
    :meth:`Event.with_review`."""
    if reason not in REVIEW_REASONS:
        return f"unknown review reason {reason!r}; one of {REVIEW_REASONS[1:]}"
    if reason and status != "dismissed":
        return f"a reason ({reason}) goes with a dismissal, not with {status}"
    return None

# Event types raised by the vision rules; other stages (identity, streams) add their own (see ARCHITECTURE.md).
FIRE = "fire"
SMOKE = "smoke"
NO_HARD_HAT = "no_hard_hat"
FIRE_LANE_BLOCKED = "fire_lane_blocked"
VESSEL_IN_ZONE = "vessel_in_zone"


def severity_rank(severity: str) -> int:
    """0 for ``low`` ... 3 for ``critical``."""
    return SEVERITIES.index(severity)


@dataclass(frozen=True, slots=True)
class GeoPosition:
    """Where an event is on the ground, WGS84, with a 1-sigma uncertainty ellipse.

    Attributes:
        lat_deg, lon_deg: WGS84 latitude / longitude in degrees.
        semi_major_m, semi_minor_m: ellipse semi-axes in metres (semi_major_m >= semi_minor_m >= 0).
        orientation_deg: direction of the semi-major axis, degrees clockwise from true north, [0, 180).
    """

    lat_deg: float
    lon_deg: float
    semi_major_m: float
    semi_minor_m: float
    orientation_deg: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lat_deg", "lon_deg", "semi_major_m", "semi_minor_m", "orientation_deg"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"GeoPosition.{name} must be finite, got {getattr(self, name)!r}")
        if not -90.0 <= self.lat_deg <= 90.0 or not -180.0 <= self.lon_deg <= 180.0:
            raise ValueError(f"GeoPosition out of range: lat {self.lat_deg}, lon {self.lon_deg}")
        if self.semi_minor_m < 0 or self.semi_major_m < self.semi_minor_m:
            raise ValueError(f"GeoPosition needs semi_major_m >= semi_minor_m >= 0, got {self.semi_major_m}, {self.semi_minor_m}")
        object.__setattr__(self, "orientation_deg", float(self.orientation_deg) % 180.0)

    def to_dict(self) -> dict[str, float]:
        return {
            "lat_deg": float(self.lat_deg),
            "lon_deg": float(self.lon_deg),
            "semi_major_m": float(self.semi_major_m),
            "semi_minor_m": float(self.semi_minor_m),
            "orientation_deg": float(self.orientation_deg),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GeoPosition":
        return cls(float(d["lat_deg"]), float(d["lon_deg"]), float(d["semi_major_m"]), float(d["semi_minor_m"]), float(d.get("orientation_deg", 0.0)))


@dataclass(frozen=True, slots=True)
class ClipRef:
    """A time window on a source; the clip is cut from that source's recordings on demand.

    ``start_ns``/``end_ns`` already include the pre/post roll; ``end_ns`` is None while the incident is open.
    """

    source_id: str
    start_ns: int
    end_ns: int | None
    pre_roll_ns: int = 0
    post_roll_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "start_ns": int(self.start_ns),
            "end_ns": None if self.end_ns is None else int(self.end_ns),
            "pre_roll_ns": int(self.pre_roll_ns),
            "post_roll_ns": int(self.post_roll_ns),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClipRef":
        end = d.get("end_ns")
        return cls(str(d["source_id"]), int(d["start_ns"]), None if end is None else int(end), int(d.get("pre_roll_ns", 0)), int(d.get("post_roll_ns", 0)))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The best view of an incident.

    Attributes:
        source_id: source the frame came from.
        capture_time_ns: capture time of that frame.
        xyxy_px: box of the subject in that frame (x1, y1, x2, y2 pixels).
        score: the ranking score used to pick it (confidence x linear size).
        uri: where the JPEG was stored (set by a sink or the store), else None.
        image: the ``(H, W, 3) uint8`` BGR frame, in memory only (never serialised, excluded from equality).
        jpeg: encoded bytes when carried inline (serialised as base64 only on request).
    """

    source_id: str
    capture_time_ns: int
    xyxy_px: tuple[float, float, float, float]
    score: float
    uri: str | None = None
    image: np.ndarray | None = field(default=None, compare=False, repr=False)
    jpeg: bytes | None = field(default=None, compare=False, repr=False)

    def jpeg_bytes(self, quality: int = 88) -> bytes | None:
        """JPEG of the frame (encoded now from ``image`` when not yet encoded); None when there is no image."""
        if self.jpeg is not None:
            return self.jpeg
        if self.image is None:
            return None
        import cv2

        ok, buf = cv2.imencode(".jpg", self.image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise InputError(f"could not JPEG-encode the snapshot of source {self.source_id!r} at {self.capture_time_ns} ns")
        return buf.tobytes()

    def to_dict(self, include_jpeg: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source_id": self.source_id,
            "capture_time_ns": int(self.capture_time_ns),
            "xyxy_px": [round(float(v), 1) for v in self.xyxy_px],
            "score": round(float(self.score), 4),
            "uri": self.uri,
        }
        if include_jpeg:
            data = self.jpeg_bytes()
            d["jpeg_b64"] = None if data is None else base64.b64encode(data).decode("ascii")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Snapshot":
        b64 = d.get("jpeg_b64")
        return cls(
            str(d["source_id"]),
            int(d["capture_time_ns"]),
            tuple(float(v) for v in d["xyxy_px"]),  # type: ignore[arg-type]
            float(d["score"]),
            d.get("uri"),
            None,
            None if not b64 else base64.b64decode(b64),
        )


@dataclass(frozen=True, slots=True)
class ReviewEntry:
    """One change of review status (the audit trail)."""

    status: ReviewStatus
    at_ns: int
    by: str = ""
    note: str = ""
    reason: str = ""  # REVIEW_REASONS: "false_detection" on a dismissal that says the detector was wrong

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "at_ns": int(self.at_ns), "by": self.by, "note": self.note, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReviewEntry":
        return cls(d["status"], int(d["at_ns"]), str(d.get("by", "")), str(d.get("note", "")), str(d.get("reason", "")))


@dataclass(frozen=True, slots=True)
class Event:
    """One phase of one incident.

    Attributes:
        id: incident id (uuid4 hex string), shared by the start, updates and end of one incident.
        type: event type (``fire``, ``smoke``, ``no_hard_hat``, ``fire_lane_blocked``, ``vessel_in_zone``, ...).
        severity: ``low`` | ``medium`` | ``high`` | ``critical``.
        phase: ``start`` | ``update`` | ``end``.
        seq: 0 for the start, +1 for each later phase of the same incident.
        source_id: the source the incident was seen on.
        zone_id: the zone whose rule raised it ("" for a whole-frame rule or another stage).
        start_ns: UTC ns when the condition began (first evidence, before the confirmation delay).
        end_ns: UTC ns when the condition was last true; None until the ``end`` phase.
        at_ns: UTC ns (frame capture time) at which this phase was decided.
        track_ids: tracker ids involved (sorted).
        labels: detector labels involved (sorted), with ``scores`` the best confidence of each, same order.
        attributes: free JSON-able details (area fraction, dwell seconds, hull text, MMSI, end reason...).
        snapshot: the best view so far, or None.
        clip: the clip window (source id + time span with pre/post roll).
        geo: position with uncertainty, or None; then ``geo_reason`` says why.
        review_status: ``new`` | ``acknowledged`` | ``dismissed`` | ``confirmed``; ``review_history`` the audit trail.
    """

    id: str
    type: str
    severity: Severity
    phase: Phase
    source_id: str
    start_ns: int
    at_ns: int
    seq: int = 0
    zone_id: str = ""
    end_ns: int | None = None
    track_ids: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    snapshot: Snapshot | None = None
    clip: ClipRef | None = None
    geo: GeoPosition | None = None
    geo_reason: str | None = "source is not geo-referenced"
    review_status: ReviewStatus = "new"
    review_history: tuple[ReviewEntry, ...] = ()

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"Event.phase must be one of {PHASES}, got {self.phase!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Event.severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.review_status not in REVIEW_STATUSES:
            raise ValueError(f"Event.review_status must be one of {REVIEW_STATUSES}, got {self.review_status!r}")
        if len(self.labels) != len(self.scores):
            raise ValueError(f"Event.labels ({len(self.labels)}) and scores ({len(self.scores)}) differ in length")
        if self.end_ns is not None and self.end_ns < self.start_ns:
            raise ValueError(f"Event.end_ns {self.end_ns} is before start_ns {self.start_ns}")
        if self.phase == "end" and self.end_ns is None:
            raise ValueError("an end-phase Event needs end_ns")
        if self.geo is not None:
            object.__setattr__(self, "geo_reason", None)
        elif not self.geo_reason:
            raise ValueError("an Event without a geo position needs geo_reason")
        object.__setattr__(self, "track_ids", tuple(int(t) for t in self.track_ids))
        # attributes are JSON-able by construction (numpy values become plain numbers/lists, NaN becomes None)
        object.__setattr__(self, "attributes", _jsonable(dict(self.attributes)))

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    @property
    def duration_s(self) -> float:
        """Seconds from start to end (or to ``at_ns`` while open)."""
        stop = self.end_ns if self.end_ns is not None else self.at_ns
        return max(0, stop - self.start_ns) / 1e9

    @property
    def review_reason(self) -> str:
        """Why the current review status, per its newest audit entry ("false_detection" or "")."""
        return next((r.reason for r in reversed(self.review_history) if r.status == self.review_status), "")

    def with_review(self, status: ReviewStatus, at_ns: int, by: str = "", note: str = "", reason: str = "") -> "Event":
        """A copy with a new review status and the change appended to the audit trail."""
        if status not in REVIEW_STATUSES:
            raise InputError(f"review status must be one of {REVIEW_STATUSES}, got {status!r}")
        if (why := reason_problem(status, reason)) is not None:
            raise InputError(why)
        return replace(self, review_status=status,
                       review_history=self.review_history + (ReviewEntry(status, int(at_ns), by, note, reason),))

    def to_dict(self, include_jpeg: bool = False) -> dict[str, Any]:
        """A JSON-able dict (snapshot pixels only as base64 when ``include_jpeg``)."""
        return {
            "id": self.id,
            "type": self.type,
            "severity": self.severity,
            "phase": self.phase,
            "seq": int(self.seq),
            "source_id": self.source_id,
            "zone_id": self.zone_id,
            "start_ns": int(self.start_ns),
            "end_ns": None if self.end_ns is None else int(self.end_ns),
            "at_ns": int(self.at_ns),
            "track_ids": list(self.track_ids),
            "labels": list(self.labels),
            "scores": [round(float(s), 4) for s in self.scores],
            "attributes": _jsonable(self.attributes),
            "snapshot": None if self.snapshot is None else self.snapshot.to_dict(include_jpeg),
            "clip": None if self.clip is None else self.clip.to_dict(),
            "geo": None if self.geo is None else self.geo.to_dict(),
            "geo_reason": self.geo_reason,
            "review_status": self.review_status,
            "review_history": [r.to_dict() for r in self.review_history],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Event":
        """Inverse of ``to_dict``; a malformed dict raises ``InputError`` naming the field."""
        try:
            end = d.get("end_ns")
            return cls(
                id=str(d["id"]),
                type=str(d["type"]),
                severity=d["severity"],
                phase=d["phase"],
                seq=int(d.get("seq", 0)),
                source_id=str(d["source_id"]),
                zone_id=str(d.get("zone_id", "")),
                start_ns=int(d["start_ns"]),
                end_ns=None if end is None else int(end),
                at_ns=int(d["at_ns"]),
                track_ids=tuple(int(t) for t in d.get("track_ids", ())),
                labels=tuple(str(x) for x in d.get("labels", ())),
                scores=tuple(float(x) for x in d.get("scores", ())),
                attributes=dict(d.get("attributes") or {}),
                snapshot=None if d.get("snapshot") is None else Snapshot.from_dict(d["snapshot"]),
                clip=None if d.get("clip") is None else ClipRef.from_dict(d["clip"]),
                geo=None if d.get("geo") is None else GeoPosition.from_dict(d["geo"]),
                geo_reason=d.get("geo_reason"),
                review_status=d.get("review_status", "new"),
                review_history=tuple(ReviewEntry.from_dict(r) for r in d.get("review_history", ())),
            )
        except KeyError as exc:
            raise InputError(f"event dict lacks field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"event dict is invalid: {exc}") from None

    def to_json(self, include_jpeg: bool = False) -> str:
        return json.dumps(self.to_dict(include_jpeg), separators=(",", ":"), sort_keys=False)


def _jsonable(value: Any) -> Any:
    """Attributes may hold numpy scalars/arrays and tuples; make them plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@runtime_checkable
class Sink(Protocol):
    """Where events go (the service's store, MQTT, a JSON-lines file...). ``emit`` must not block for long."""

    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps emitted events in a list (tests, evaluation)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


class JsonLinesSink:
    """Writes one JSON object per event and line to a path or an open text stream (the CLI uses stdout).

    With ``snapshot_dir`` set, each snapshot that has pixels is written there as ``<event id>_<seq>.jpg`` and the
    event's ``snapshot.uri`` points at it; otherwise snapshots appear without pixels unless ``include_jpeg``.
    """

    def __init__(self, target: str | Path | IO[str], snapshot_dir: str | Path | None = None, include_jpeg: bool = False) -> None:
        self._own = isinstance(target, (str, Path))
        if self._own:
            path = Path(target)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._stream: IO[str] = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise InputError(f"cannot open event file {path}: {exc}") from None
        else:
            self._stream = target  # type: ignore[assignment]
        self._snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir)
        if self._snapshot_dir is not None:
            try:
                self._snapshot_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create snapshot folder {self._snapshot_dir}: {exc}") from None
        self._include_jpeg = include_jpeg
        self.count = 0

    def emit(self, event: Event) -> None:
        snap = event.snapshot
        if self._snapshot_dir is not None and snap is not None and snap.uri is None:
            data = snap.jpeg_bytes()
            if data is not None:
                path = self._snapshot_dir / f"{event.id}_{event.seq}.jpg"
                try:
                    path.write_bytes(data)
                except OSError as exc:
                    raise InputError(f"cannot write snapshot {path}: {exc}") from None
                event = replace(event, snapshot=replace(snap, uri=str(path)))
        self._stream.write(event.to_json(self._include_jpeg) + "\n")
        self._stream.flush()
        self.count += 1

    def close(self) -> None:
        if self._own:
            self._stream.close()


def read_json_lines(path: str | Path) -> list[Event]:
    """Events written by ``JsonLinesSink`` (blank lines skipped); a bad line raises ``InputError`` with its number."""
    out: list[Event] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read event file {path}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Event.from_dict(json.loads(line)))
        except (json.JSONDecodeError, InputError) as exc:
            raise InputError(f"{path}:{n}: {exc}") from None
    return out
