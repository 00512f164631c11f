"""Rules that turn tracked detections into incidents, on wall-clock (frame capture) time.

Every timer here compares capture times in nanoseconds; nothing counts frames except the fire/smoke vote, whose
window is "the last n analysed frames" *and* at most ``window_max_age_s`` old. So a pipeline that lags, drops
frames or analyses at an uneven rate reaches the same decisions at the same capture times, give or take the
gap to the next analysed frame.

Rules (configured per zone, see ``seawatch.vision.config``):

- ``fire_smoke``: k of the last n analysed frames show the label in the zone, evidence began at least T s ago,
  and the boxes are not frozen in place (a lamp, a red sign or a painted wall does not flicker). A source found
  frozen is remembered and its boxes are no evidence (a real fire beside it is dated from its own first box); an
  open incident whose evidence freezes ends. Severity from the burning area (fraction of the frame) and its
  growth. One incident per label and zone; ends after ``clear_after_s`` without evidence.
- ``no_hard_hat``: a person track (or, without person boxes, a bare-head track, or the person track that head
  last belonged to) in the zone without a hard hat for at least T s. Heads are matched to persons one to one
  (``assign_heads``). One incident per worker; best snapshot by confidence x size.
- ``fire_lane_blocked``: a vehicle track that stays put in the lane for T (or, with stationary-foreground
  analysis, any unknown object that does). People never count. One incident per blockage, ended when the lane
  has been clear for ``clear_after_s``.
- ``vessel_in_zone``: a vessel track in the zone for at least T s. One incident per track; the identity stage
  adds hull text / MMSI / registry attributes through an enricher.

A rule with a ``schedule`` (``seawatch.vision.schedule``) runs only while the frame's capture time is inside its
weekly windows: outside them it raises nothing and an open incident ends at the edge (``end_reason`` "schedule:
disarmed at 19:00 Europe/Amsterdam"); armed again, it starts afresh, so a subject already there is judged from
then with the normal dwell. What a rule learns of the scene goes on while it is off (a fire lane's empty-lane
background), so a crate put down in the lane at night is still a crate when the lane's rule arms in the morning.

``RuleEngine.update(source_id, time_ns, detections, image=None, locator=None)`` runs every rule of every zone
of that source and returns (and emits to its sinks) the events of that frame.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from seawatch.errors import InputError
from seawatch.vision.config import (
    EventPolicy,
    FireLaneRuleConfig,
    FireSmokeRuleConfig,
    HardHatRuleConfig,
    RulesConfig,
    VesselZoneRuleConfig,
    ZoneConfig,
)
from seawatch.vision.detections import Detections
from seawatch.vision.events import (
    FIRE_LANE_BLOCKED,
    NO_HARD_HAT,
    SEVERITIES,
    VESSEL_IN_ZONE,
    ClipRef,
    Event,
    GeoPosition,
    Sink,
    Snapshot,
    severity_rank,
)
from seawatch.vision.schedule import Schedule
from seawatch.vision.stationary import StationaryForeground
from seawatch.vision.tracking import iou_matrix
from seawatch.vision.zones import Locator, Zone, zone_anchor_points

log = logging.getLogger(__name__)

NOT_GEOREFERENCED = "source is not geo-referenced (no calibration or pose for this frame)"
NO_GROUND_HIT = "the anchor point does not hit the ground (above the horizon or outside the calibrated area)"

Enricher = Callable[[Event], Event]


@dataclass(frozen=True, slots=True)
class FrameContext:
    """What every rule sees for one analysed frame of one source.

    Attributes:
        source_id: the source.
        time_ns: capture time (UTC ns, stream clock).
        detections: tracked detections (``track_id`` filled, -1 where untracked).
        image: the ``(H, W, 3) uint8`` BGR frame, or None when the caller does not pass pixels.
        frame_size_px: (width, height) of the frame, or None when unknown.
        locator: pixel -> ground mapping for this frame, or None when the source is not geo-referenced.
    """

    source_id: str
    time_ns: int
    detections: Detections
    image: np.ndarray | None
    frame_size_px: tuple[int, int] | None
    locator: Locator | None


def _s_to_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


MAX_TRACK_IDS = 32  # tracker ids one event lists at most (the first and the latest)


class _Incident:
    """Book-keeping of one open incident and the event values it produces."""

    def __init__(self, type_: str, source_id: str, zone_id: str, start_ns: int, severity: str, policy: EventPolicy) -> None:
        self.id = Event.new_id()
        self.type = type_
        self.source_id = source_id
        self.zone_id = zone_id
        self.start_ns = int(start_ns)
        self.severity = severity
        self.policy = policy
        self.seq = -1
        self.track_ids: dict[int, None] = {}  # in the order seen; the first and the latest MAX_TRACK_IDS - 1 kept
        self.label_scores: dict[str, float] = {}
        self.snapshot: Snapshot | None = None
        self.geo: GeoPosition | None = None
        self.geo_reason: str = NOT_GEOREFERENCED
        self.attributes: dict[str, Any] = {}
        self.last_emit_ns: int | None = None
        self._emitted_signature: tuple | None = None
        self.last_evidence_ns = int(start_ns)

    def observe(self, ctx: FrameContext, idx: np.ndarray, subject_xyxy: np.ndarray | None = None, subject_track: int | None = None) -> None:
        """Take the evidence boxes ``idx`` of this frame into account (labels, scores, tracks, snapshot, geo).

        With ``subject_track`` only that track id is recorded (a person, not also its head box's track).
        """
        d = ctx.detections
        idx = np.asarray(idx, np.int64).reshape(-1)
        self.last_evidence_ns = max(self.last_evidence_ns, ctx.time_ns)
        if idx.size == 0:
            return
        labels = d.label[idx]
        conf = d.confidence[idx]
        for lab, c in zip(labels, conf):
            self.label_scores[str(lab)] = max(self.label_scores.get(str(lab), 0.0), float(c))
        if subject_track is not None:
            self.add_tracks([int(subject_track)])
        elif d.track_id is not None:
            self.add_tracks(int(t) for t in d.track_id[idx] if t >= 0)
        boxes = d.xyxy_px[idx].astype(np.float64)
        area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
        score = conf * np.sqrt(area)  # confidence x linear size
        best = int(np.argmax(score))
        box = boxes[best] if subject_xyxy is None else np.asarray(subject_xyxy, np.float64).reshape(4)
        if self.snapshot is None or float(score[best]) > self.snapshot.score:
            self.snapshot = Snapshot(
                ctx.source_id, ctx.time_ns, tuple(float(v) for v in box), float(score[best]),
                image=None if ctx.image is None else ctx.image.copy(),
            )
        self._locate(ctx, box)

    def add_tracks(self, track_ids) -> None:
        """Record the tracker ids of this incident's subject. A moored boat the tracker re-acquires every few
        minutes for weeks would otherwise carry thousands: the first id and the latest ones are kept."""
        for t in track_ids:
            if t in self.track_ids:
                continue
            self.track_ids[t] = None
            if len(self.track_ids) > MAX_TRACK_IDS:
                del self.track_ids[list(self.track_ids)[1]]  # the oldest but the first

    def _locate(self, ctx: FrameContext, xyxy: np.ndarray) -> None:
        if ctx.locator is None:
            self.geo, self.geo_reason = None, NOT_GEOREFERENCED
            return
        point = np.array([[0.5 * (xyxy[0] + xyxy[2]), xyxy[3]]])  # where the subject meets ground/water
        try:
            res = np.asarray(ctx.locator.locate(point), np.float64).reshape(-1)
        except Exception as exc:  # a locator is another stage's code: never let it kill the rules
            log.warning("locator failed for source %s: %s", ctx.source_id, exc)
            self.geo, self.geo_reason = None, f"locator failed: {exc}"
            return
        if res.size < 3 or not np.isfinite(res[:3]).all():
            self.geo, self.geo_reason = None, NO_GROUND_HIT
            return
        unc = max(0.0, float(res[2]))
        self.geo = GeoPosition(float(res[0]), float(res[1]), unc, unc, 0.0)

    def _signature(self) -> tuple:
        return (self.severity, tuple(sorted(self.track_ids)), tuple(sorted(self.label_scores)))

    def make(self, phase: str, at_ns: int, end_ns: int | None = None) -> Event:
        self.seq += 1
        self.last_emit_ns = at_ns
        self._emitted_signature = self._signature()
        pre, post = _s_to_ns(self.policy.pre_roll_s), _s_to_ns(self.policy.post_roll_s)
        clip = ClipRef(self.source_id, self.start_ns - pre, None if end_ns is None else end_ns + post, pre, post)
        labels = tuple(sorted(self.label_scores))
        return Event(
            id=self.id,
            type=self.type,
            severity=self.severity,  # type: ignore[arg-type]
            phase=phase,  # type: ignore[arg-type]
            seq=self.seq,
            source_id=self.source_id,
            zone_id=self.zone_id,
            start_ns=self.start_ns,
            end_ns=end_ns,
            at_ns=int(at_ns),
            track_ids=tuple(sorted(self.track_ids)),
            labels=labels,
            scores=tuple(self.label_scores[lab] for lab in labels),
            attributes=dict(self.attributes),
            snapshot=self.snapshot,
            clip=clip,
            geo=self.geo,
            geo_reason=self.geo_reason,
        )

    def maybe_update(self, at_ns: int) -> Event | None:
        """An update when something that matters changed, or as a heartbeat every ``update_interval_s``."""
        if self._signature() != self._emitted_signature:
            return self.make("update", at_ns)
        interval = _s_to_ns(self.policy.update_interval_s)
        if interval > 0 and self.last_emit_ns is not None and at_ns - self.last_emit_ns >= interval:
            return self.make("update", at_ns)
        return None

    def end(self, at_ns: int, end_ns: int, reason: str) -> Event:
        self.attributes["end_reason"] = reason
        self.attributes["duration_s"] = round(max(0, end_ns - self.start_ns) / 1e9, 3)
        return self.make("end", at_ns, max(end_ns, self.start_ns))


class Rule:
    """One rule in one zone. ``update`` gets the frame context and the zone membership of every detection."""

    needs_tracks = True

    def __init__(self, zone: Zone, zone_cfg: ZoneConfig, policy: EventPolicy) -> None:
        self.zone = zone
        self.zone_cfg = zone_cfg
        self.policy = policy
        self.schedule: Schedule | None = None  # when armed (set by the engine); None: always
        self.rule_cfg: Any = None  # its config, to start afresh when the schedule arms it again
        self.disarmed = False  # its schedule had it off at the last frame
        self.last_armed_ns: int | None = None  # capture time of the last frame it was armed for

    def update(self, ctx: FrameContext, inside: np.ndarray) -> list[Event]:
        raise NotImplementedError

    def observe_disarmed(self, ctx: FrameContext) -> None:
        """A frame while its schedule has it off: nothing is judged; a rule that learns the scene keeps learning."""

    def carry_over(self, old: "Rule") -> None:
        """Armed again (a fresh rule replaces ``old``): take over what ``old`` learnt of the scene, never its timers."""

    def close(self, time_ns: int, reason: str) -> list[Event]:
        """End every open incident (stream ended, engine shut down)."""
        raise NotImplementedError


def _label_mask(d: Detections, names: Iterable[str]) -> np.ndarray:
    names = set(names)
    if not len(d) or not d.labels:
        return np.zeros(len(d), bool)
    lut = np.array([lab in names for lab in d.labels], bool)
    return lut[d.class_id]


def _tracked(d: Detections) -> np.ndarray:
    return np.zeros(len(d), bool) if d.track_id is None else d.track_id >= 0


# --------------------------------------------------------------------------------------------- fire / smoke


class _LabelVote:
    def __init__(self) -> None:
        self.window: deque[tuple[int, bool, tuple[float, float, float, float] | None]] = deque()
        self.candidate_ns: int | None = None
        self.last_hit_ns: int | None = None
        self.incident: _Incident | None = None
        self.cooldown_until_ns = -(2**62)
        self.areas: deque[tuple[int, float]] = deque()  # (time, area fraction) for growth
        self.changes: deque[tuple[int, float]] = deque()  # (time, grey change inside the box vs the previous frame)
        self.static_logged = False
        # sources found frozen in place (a lamp, a sign): box -> last time seen; their boxes are no evidence
        self.frozen: dict[tuple[float, float, float, float], int] = {}


class FireSmokeRule(Rule):
    """k of the last n analysed frames over at least T s; severity from area and growth."""

    needs_tracks = False

    def __init__(self, zone: Zone, zone_cfg: ZoneConfig, policy: EventPolicy, cfg: FireSmokeRuleConfig) -> None:
        super().__init__(zone, zone_cfg, policy)
        self.cfg = cfg
        self._state = {lab: _LabelVote() for lab in cfg.labels}
        self._prev_small: np.ndarray | None = None  # downscaled grey previous frame, for the pixel-change test
        self._small_scale = 1.0

    _SMALL_WIDTH_PX = 256

    def _small_grey(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        self._small_scale = min(1.0, self._SMALL_WIDTH_PX / max(1, w))
        step = max(1, int(0.5 / self._small_scale))
        sub = image[::step, ::step]
        grey = cv2.cvtColor(sub, cv2.COLOR_BGR2GRAY) if sub.ndim == 3 else sub
        size = (max(1, int(round(w * self._small_scale))), max(1, int(round(h * self._small_scale))))
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)

    def _pixel_change(self, small: np.ndarray | None, box: tuple[float, float, float, float]) -> float | None:
        """Mean absolute grey change inside ``box`` between this and the previous analysed frame."""
        prev = self._prev_small
        if small is None or prev is None or prev.shape != small.shape:
            return None
        s = self._small_scale
        x1, y1 = max(0, int(np.floor(box[0] * s))), max(0, int(np.floor(box[1] * s)))
        x2, y2 = min(small.shape[1], int(np.ceil(box[2] * s))), min(small.shape[0], int(np.ceil(box[3] * s)))
        if x2 <= x1 or y2 <= y1:
            return None
        return float(np.abs(small[y1:y2, x1:x2] - prev[y1:y2, x1:x2]).mean())

    def _severity(self, st: _LabelVote, t: int, area_frac: float | None) -> str:
        if area_frac is None:
            return "medium"
        a = self.cfg.severity_area_frac
        recent = [f for (_, f) in list(st.areas)[-5:]] or [area_frac]
        smooth = float(np.median(recent))  # flicker around a threshold must not flip severity
        level = int(np.searchsorted(np.asarray(a), smooth, side="right"))  # 0 low .. 3 critical
        # growth compares medians of the earliest and latest thirds of the window, so flame flicker is not growth
        horizon = t - _s_to_ns(self.cfg.growth_window_s)
        past = np.array([f for (ts, f) in st.areas if ts >= horizon])
        if past.size >= 6:
            third = past.size // 3
            early, late = float(np.median(past[:third])), float(np.median(past[-third:]))
            if early > 0 and late / early >= self.cfg.growth_factor:
                level += 1
        return SEVERITIES[min(level, 3)]

    def _static_since(self, st: _LabelVote) -> int | None:
        """Capture time of the first of the frozen boxes ``_is_static`` looked at (call it only when static)."""
        since = st.candidate_ns or 0
        return min((ts for (ts, hit, b) in st.window if hit and b is not None and ts >= since), default=None)

    def _freeze(self, st: _LabelVote, boxes: np.ndarray, t: int) -> None:
        """Remember this frame's boxes as a frozen source, and drop the candidate they kept open: their hits were
        never evidence of fire, so a real fire must prove itself (k of n over T s) from its own first box."""
        for b in np.asarray(boxes, np.float64).reshape(-1, 4):
            st.frozen[tuple(float(v) for v in b)] = t
        st.candidate_ns = None
        st.areas.clear()
        st.changes.clear()

    def _drop_frozen(self, st: _LabelVote, d: Detections, sel: np.ndarray, t: int) -> np.ndarray:
        """``sel`` without the boxes of known frozen sources (each refreshed when seen); a frozen source unseen for
        ``max_gap_s`` is forgotten (the lamp was switched off)."""
        if not st.frozen:
            return sel
        idx = np.flatnonzero(sel)
        if idx.size:
            keys = list(st.frozen)
            iou = iou_matrix(d.xyxy_px[idx].astype(np.float64), np.asarray(keys, np.float64))
            match = iou >= self.cfg.static_min_iou
            for j in np.flatnonzero(match.any(axis=0)):
                st.frozen[keys[j]] = t
            sel = sel.copy()
            sel[idx[match.any(axis=1)]] = False
        gap = _s_to_ns(self.cfg.max_gap_s)
        for k in [k for k, seen in st.frozen.items() if t - seen > gap]:
            del st.frozen[k]
        return sel

    def _is_static(self, st: _LabelVote) -> bool:
        """Frozen box (and, when frames are given, frozen pixels): a lamp, a sign, a sunset - not a fire."""
        if self.cfg.static_min_iou is None:
            return False
        since = st.candidate_ns or 0
        boxes = [b for (ts, hit, b) in st.window if hit and b is not None and ts >= since]
        if len(boxes) < 3:
            return False
        arr = np.asarray(boxes, np.float64)
        iou = iou_matrix(arr[:1], arr)[0]
        if not bool((iou >= self.cfg.static_min_iou).all()):
            return False
        changes = [c for (ts, c) in st.changes if ts >= since]
        if changes and float(np.median(changes)) >= self.cfg.static_max_pixel_change:
            return False  # the box stays put but its pixels move: a steady fire seen from afar
        return True

    def update(self, ctx: FrameContext, inside: np.ndarray) -> list[Event]:
        cfg = self.cfg
        d = ctx.detections
        t = ctx.time_ns
        out: list[Event] = []
        frame_area = None if ctx.frame_size_px is None else float(ctx.frame_size_px[0] * ctx.frame_size_px[1])
        small = None
        if ctx.image is not None and cfg.static_min_iou is not None:
            small = self._small_grey(ctx.image)
        for lab, st in self._state.items():
            sel = _label_mask(d, (lab,)) & (d.confidence >= cfg.floor(lab)) & inside
            area_frac = None
            if frame_area and sel.any():
                area_frac = float(min(1.0, d.area_px[sel].sum() / frame_area))
                if cfg.min_area_frac > 0:
                    big = sel & (d.area_px / frame_area >= cfg.min_area_frac)
                    sel = big
                    area_frac = float(min(1.0, d.area_px[sel].sum() / frame_area)) if sel.any() else None
            if cfg.static_min_iou is not None:
                sel = self._drop_frozen(st, d, sel, t)
                if frame_area and not sel.any():
                    area_frac = None
                elif frame_area:
                    area_frac = float(min(1.0, d.area_px[sel].sum() / frame_area))
            hit = bool(sel.any())
            union = None
            if hit:
                b = d.xyxy_px[sel]
                union = (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))
            st.window.append((t, hit, union))
            while len(st.window) > cfg.window_frames or (st.window and t - st.window[0][0] > _s_to_ns(cfg.window_max_age_s)):
                st.window.popleft()
            if hit:
                st.last_hit_ns = t
                if st.candidate_ns is None:
                    st.candidate_ns = t
                change = self._pixel_change(small, union)  # type: ignore[arg-type]
                if change is not None:
                    st.changes.append((t, change))
                if area_frac is not None:
                    st.areas.append((t, area_frac))
            horizon = t - _s_to_ns(max(cfg.growth_window_s, cfg.window_max_age_s))
            while st.areas and st.areas[0][0] < horizon:
                st.areas.popleft()
            while st.changes and (len(st.changes) > cfg.window_frames or st.changes[0][0] < horizon):
                st.changes.popleft()

            if st.incident is None:
                if st.candidate_ns is not None and st.last_hit_ns is not None and t - st.last_hit_ns > _s_to_ns(cfg.max_gap_s):
                    st.candidate_ns = None  # evidence faded before confirmation
                    st.areas.clear()
                    continue
                if not hit or st.candidate_ns is None:
                    continue
                hits = sum(1 for (ts, h, _) in st.window if h and ts >= st.candidate_ns)
                if hits < cfg.min_hits or t - st.candidate_ns < _s_to_ns(cfg.min_duration_s) or t < st.cooldown_until_ns:
                    continue
                if self._is_static(st):
                    if not st.static_logged:
                        log.info("%s/%s: %s evidence is frozen in place (lamp, sign?); not raising", ctx.source_id, self.zone.id, lab)
                        st.static_logged = True
                    self._freeze(st, d.xyxy_px[sel], t)
                    continue
                inc = _Incident(lab, ctx.source_id, self.zone.id, st.candidate_ns, self._severity(st, t, area_frac), self.policy)
                inc.observe(ctx, np.flatnonzero(sel))
                inc.attributes.update(self._attrs(st, area_frac, hits))
                st.incident = inc
                out.append(inc.make("start", t))
            else:
                inc = st.incident
                if hit and self._is_static(st):
                    # the evidence froze in place (the fire is out; a lamp, a glowing sign remains): it no longer
                    # holds the incident open, which ended when the frozen evidence began
                    log.info("%s/%s: %s evidence is frozen in place; ending the incident", ctx.source_id, self.zone.id, lab)
                    frozen_from = self._static_since(st)
                    out.append(self._end(st, t, "evidence static", end_ns=frozen_from))
                    self._freeze(st, d.xyxy_px[sel], t)
                elif hit:
                    inc.observe(ctx, np.flatnonzero(sel))
                    new_sev = self._severity(st, t, area_frac)
                    if severity_rank(new_sev) > severity_rank(inc.severity):
                        inc.severity = new_sev  # severity only escalates within an incident
                    inc.attributes.update(self._attrs(st, area_frac, None))
                    ev = inc.maybe_update(t)
                    if ev is not None:
                        out.append(ev)
                elif t - st.last_hit_ns >= _s_to_ns(cfg.clear_after_s):  # type: ignore[operator]
                    out.append(self._end(st, t, "clear"))
        if small is not None:
            self._prev_small = small
        return out

    def _attrs(self, st: _LabelVote, area_frac: float | None, hits: int | None) -> dict[str, Any]:
        a: dict[str, Any] = {}
        if area_frac is not None:
            a["area_frac"] = round(area_frac, 5)
            a["max_area_frac"] = round(max(area_frac, float((st.incident.attributes.get("max_area_frac") if st.incident else 0) or 0)), 5)
        if hits is not None:
            a["confirm_hits"] = hits
            a["confirm_window"] = len(st.window)
        return a

    def _end(self, st: _LabelVote, t: int, reason: str, end_ns: int | None = None) -> Event:
        inc = st.incident
        assert inc is not None and st.last_hit_ns is not None
        ev = inc.end(t, st.last_hit_ns if end_ns is None else end_ns, reason)
        st.incident = None
        st.candidate_ns = None
        st.areas.clear()
        st.static_logged = False
        st.cooldown_until_ns = t + _s_to_ns(self.cfg.cooldown_s)
        return ev

    def close(self, time_ns: int, reason: str) -> list[Event]:
        return [self._end(st, time_ns, reason) for st in self._state.values() if st.incident is not None]


# ------------------------------------------------------------------------------------- per-track dwell rules


@dataclass(slots=True)
class _Dwell:
    dwell_start_ns: int
    last_violation_ns: int
    incident: _Incident | None = None
    cooldown_until_ns: int = -(2**62)
    box: np.ndarray | None = None  # the subject's last box, to know it again under a new track id
    missed_since_ns: int | None = None  # first analysed frame since the last violation that lacked it, else None


_LONG_AGO_NS = -(2**62)


class _DwellRule(Rule):
    """Shared timing of rules whose subject is one track: violating for T s -> start; not for end_after -> end.

    Absence is measured from the first analysed frame that lacked the violation, never from the gap between two
    frames that both show it: a pipeline analysing one frame every few seconds (a low ``analysis_fps``, a lag
    that drops frames) keeps the dwell timer running through a continuous violation.

    A subject that comes back under a new track id (the tracker lost it: missed detections, an occlusion, a
    stream gap) where one of the same kind was last seen, and whose own track is not in this frame, is that
    subject: it keeps its dwell timer, its open incident (no second event for one moored boat or one worker) and
    its cooldown.
    """

    # a new track is the same subject when its box centre is within this fraction of the larger box diagonal
    REACQUIRE_FRAC = 0.5

    event_type = ""
    severity = "medium"

    def __init__(self, zone: Zone, zone_cfg: ZoneConfig, policy: EventPolicy, min_duration_s: float, grace_s: float,
                 end_after_s: float, cooldown_s: float) -> None:
        super().__init__(zone, zone_cfg, policy)
        self.T = _s_to_ns(min_duration_s)
        self.grace = _s_to_ns(grace_s)
        self.end_after = _s_to_ns(end_after_s)
        self.cooldown = _s_to_ns(cooldown_s)
        self._subjects: dict[tuple[str, int], _Dwell] = {}

    def subjects(self, ctx: FrameContext, inside: np.ndarray) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray, dict]]:
        """Violating subjects this frame: key -> (evidence indices, subject box, attributes)."""
        raise NotImplementedError

    def present(self, ctx: FrameContext) -> set[tuple[str, int]]:
        """Keys of the subjects whose track is in this frame, violating or not (called after ``subjects``)."""
        raise NotImplementedError

    def renames(self) -> dict[tuple[str, int], tuple[str, int]]:
        """Subjects known to continue under another key from this frame on (old key -> new key); none by default."""
        return {}

    @staticmethod
    def _absent_ns(s: _Dwell, t: int) -> int:
        return 0 if s.missed_since_ns is None else t - s.missed_since_ns

    def update(self, ctx: FrameContext, inside: np.ndarray) -> list[Event]:
        t = ctx.time_ns
        out: list[Event] = []
        now = self.subjects(ctx, inside)
        present = self.present(ctx) | set(now)
        for old, new in self.renames().items():
            if old in self._subjects and new not in self._subjects:
                self._subjects[new] = self._subjects.pop(old)
        for key, (idx, box, attrs) in now.items():
            s = self._subjects.get(key)
            if s is None:
                heir = self._heir(key, box, present, t)
                s = self._subjects[key] = self._subjects.pop(heir) if heir is not None else _Dwell(t, t)
            if s.incident is None and self._absent_ns(s, t) > self.grace:
                s.dwell_start_ns = t  # absent for longer than grace: the dwell timer restarts
            s.last_violation_ns = t
            s.missed_since_ns = None
            s.box = np.asarray(box, np.float64)
            if s.incident is None:
                if t - s.dwell_start_ns >= self.T and t >= s.cooldown_until_ns:
                    inc = _Incident(self.event_type, ctx.source_id, self.zone.id, s.dwell_start_ns, self.severity, self.policy)
                    inc.observe(ctx, idx, box, key[1])
                    inc.attributes.update(attrs)
                    inc.attributes["subject"] = key[0]
                    inc.attributes["dwell_s"] = round((t - s.dwell_start_ns) / 1e9, 3)
                    s.incident = inc
                    out.append(inc.make("start", t))
            else:
                s.incident.observe(ctx, idx, box, key[1])
                s.incident.attributes.update(attrs)
                s.incident.attributes["dwell_s"] = round((t - s.incident.start_ns) / 1e9, 3)
                ev = s.incident.maybe_update(t)
                if ev is not None:
                    out.append(ev)
        for key in list(self._subjects):
            if key in now:
                continue
            s = self._subjects[key]
            if s.missed_since_ns is None:
                s.missed_since_ns = t  # this analysed frame is the first evidence of absence
            if s.incident is not None:
                if t - s.last_violation_ns >= self.end_after:
                    out.append(self._end(s, t, "cleared"))
            elif self._absent_ns(s, t) > self.grace and t >= s.cooldown_until_ns:
                del self._subjects[key]  # track state dropped once nothing depends on it
        return out

    def _heir(self, key: tuple[str, int], box, present: set, t: int) -> tuple[str, int] | None:
        """The subject a new track continues: same kind, its own track not in this frame (violating or not),
        still remembered (timing, an open incident or a cooldown), its last box centre nearest the new one within
        REACQUIRE_FRAC of the diagonal."""
        b = np.asarray(box, np.float64)
        c = (b[:2] + b[2:]) / 2
        best, best_d = None, np.inf
        for k, s in self._subjects.items():
            if k[0] != key[0] or k in present or s.box is None:
                continue
            if s.incident is None and t >= s.cooldown_until_ns and self._absent_ns(s, t) > self.grace:
                continue  # nothing left to carry on
            diag = max(float(np.hypot(*(b[2:] - b[:2]))), float(np.hypot(*(s.box[2:] - s.box[:2]))))
            d = float(np.hypot(*((s.box[:2] + s.box[2:]) / 2 - c)))
            if d <= self.REACQUIRE_FRAC * diag and d < best_d:
                best, best_d = k, d
        return best

    def _end(self, s: _Dwell, t: int, reason: str) -> Event:
        assert s.incident is not None
        ev = s.incident.end(t, s.last_violation_ns, reason)
        s.incident = None
        s.cooldown_until_ns = t + self.cooldown
        s.dwell_start_ns = t
        s.last_violation_ns = _LONG_AGO_NS
        s.missed_since_ns = _LONG_AGO_NS  # any new violation starts a fresh dwell
        return ev

    def close(self, time_ns: int, reason: str) -> list[Event]:
        out = [self._end(s, time_ns, reason) for s in self._subjects.values() if s.incident is not None]
        self._subjects.clear()
        return out

    @property
    def subject_count(self) -> int:
        return len(self._subjects)


SAME_HEAD_IOU = 0.5  # a helmet and a no_helmet box overlapping this much are two readings of one head
HELD_BELOW = -2  # assign_heads: a head box below its person's worn head (a helmet held at the chest)


def _crowns(hb: np.ndarray) -> np.ndarray:
    """``(H, 2)`` crown point of each head box: horizontal centre, a quarter of the way down."""
    return np.stack([(hb[:, 0] + hb[:, 2]) / 2, hb[:, 1] + 0.25 * (hb[:, 3] - hb[:, 1])], axis=1)


def head_groups(head_xyxy: np.ndarray, confidence: np.ndarray | None = None) -> np.ndarray:
    """``(H,) int`` group per head box: boxes overlapping by ``SAME_HEAD_IOU`` or more are one head (the head
    detector often gives one head both a ``helmet`` and a ``no_helmet`` box). Groups are numbered from 0 in order
    of their most confident box."""
    hb = np.asarray(head_xyxy, np.float64).reshape(-1, 4)
    n = hb.shape[0]
    group = np.full(n, -1, np.int64)
    if n == 0:
        return group
    order = np.argsort(-np.asarray(confidence, np.float64)) if confidence is not None else np.arange(n)
    iou = iou_matrix(hb, hb)
    reps: list[int] = []
    for i in order:
        for g, r in enumerate(reps):
            if iou[i, r] >= SAME_HEAD_IOU:
                group[i] = g
                break
        else:
            group[i] = len(reps)
            reps.append(int(i))
    return group


def assign_heads(person_xyxy: np.ndarray, head_xyxy: np.ndarray, head_region_frac: float,
                 confidence: np.ndarray | None = None) -> np.ndarray:
    """``(H,) int`` index of the person box each head box belongs to; -1 for none, ``HELD_BELOW`` (-2) for a head
    box inside a person box below the head that person wears (a helmet held at the chest: nobody's head).

    A head can belong to a person when its crown point (horizontal centre, a quarter of the way down the head box)
    lies in the top ``head_region_frac`` of the person box (or a quarter head-height above it). The crown rather
    than the centre, so that in a close-up, where the head fills half the person box, the head still belongs to its
    body. Heads are matched to persons one to one (boxes of one head, see ``head_groups``, go together), by the
    least total distance from crown to the top centre of the person box (in person widths / heights): each person
    wears its topmost, best-centred head, and a neighbour's head goes to the neighbour.
    """
    from scipy.optimize import linear_sum_assignment

    pb = np.asarray(person_xyxy, np.float64).reshape(-1, 4)
    hb = np.asarray(head_xyxy, np.float64).reshape(-1, 4)
    owner = np.full(hb.shape[0], -1, np.int64)
    if pb.shape[0] == 0 or hb.shape[0] == 0:
        return owner
    group = head_groups(hb, confidence)
    n_groups = int(group.max()) + 1
    # one representative box per head: the first (most confident) of its group
    rep = np.array([int(np.flatnonzero(group == g)[0]) for g in range(n_groups)])
    gb = hb[rep]
    hc = _crowns(gb)
    pw = np.maximum(pb[:, 2] - pb[:, 0], 1e-6)
    ph = np.maximum(pb[:, 3] - pb[:, 1], 1e-6)
    region_bottom = pb[:, 1] + head_region_frac * ph
    feasible = (
        (hc[:, None, 0] >= pb[None, :, 0]) & (hc[:, None, 0] <= pb[None, :, 2])
        & (hc[:, None, 1] >= pb[None, :, 1] - 0.25 * (gb[:, None, 3] - gb[:, None, 1])) & (hc[:, None, 1] <= region_bottom[None, :])
    )
    dx = (hc[:, None, 0] - 0.5 * (pb[None, :, 0] + pb[None, :, 2])) / pw[None, :]
    dy = (hc[:, None, 1] - pb[None, :, 1]) / ph[None, :]
    cost = np.hypot(dx, dy)
    big = 1e6  # infeasible pairs: never chosen over leaving a head or a person unmatched
    rows, cols = linear_sum_assignment(np.where(feasible, cost, big))
    g_owner = np.full(n_groups, -1, np.int64)
    ok = feasible[rows, cols]
    g_owner[rows[ok]] = cols[ok]
    # a head left over inside a person box, below the head that person wears, is held or mis-detected
    worn_crown_y = np.full(pb.shape[0], np.inf)
    worn_crown_y[g_owner[g_owner >= 0]] = hc[g_owner >= 0, 1]
    inside_box = (
        (hc[:, None, 0] >= pb[None, :, 0]) & (hc[:, None, 0] <= pb[None, :, 2])
        & (hc[:, None, 1] >= pb[None, :, 1]) & (hc[:, None, 1] <= pb[None, :, 3])
    )
    held = (g_owner < 0) & (inside_box & (hc[:, None, 1] > worn_crown_y[None, :])).any(axis=1)
    g_owner[held] = HELD_BELOW
    return g_owner[group]


def fire_smoke_labels(detections: Detections, cfg: FireSmokeRuleConfig | None = None) -> tuple[str, ...]:
    """The rule's labels that one still image shows above their confidence floors (no timers, no zone): for
    per-image alarms and frame-by-frame comparisons."""
    cfg = cfg or FireSmokeRuleConfig()
    d = detections
    return tuple(lab for lab in cfg.labels if bool((_label_mask(d, (lab,)) & (d.confidence >= cfg.floor(lab))).any()))


def _free_bare_heads(d: Detections, heads: np.ndarray, owner: np.ndarray, bare: np.ndarray, hat: np.ndarray) -> list[int]:
    """Indices of the bare heads on no person box (``owner == -1``), one per head (``head_groups``): its most
    confident ``no_helmet`` box, where that is at least as confident as the head's ``helmet`` box."""
    free = heads[owner == -1]
    if free.size == 0:
        return []
    group = head_groups(d.xyxy_px[free], d.confidence[free])
    out = []
    for g in range(int(group.max()) + 1):
        mine = free[group == g]
        if not bare[mine].any():
            continue
        b = mine[bare[mine]][int(np.argmax(d.confidence[mine][bare[mine]]))]
        hat_conf = float(d.confidence[mine][hat[mine]].max()) if hat[mine].any() else 0.0
        if float(d.confidence[b]) >= hat_conf:
            out.append(int(b))
    return out


def bare_headed(detections: Detections, cfg: HardHatRuleConfig | None = None, inside: np.ndarray | None = None) -> np.ndarray:
    """Indices of the people without a hard hat in one still image (no tracks, no timers): for per-image counts.

    A person box counts when its head (``assign_heads``) is bare (``no_helmet`` at least as confident as
    ``helmet``), or, per ``cfg.person_without_helmet_box``, when a large-enough person has no head box; a bare head
    on no person box counts by itself (its own index is returned). ``inside`` restricts to a zone (anchor test
    done by the caller).
    """
    cfg = cfg or HardHatRuleConfig()
    d = detections
    ok = d.confidence >= cfg.min_confidence
    if inside is not None:
        ok = ok & np.asarray(inside, bool)
    persons = np.flatnonzero(_label_mask(d, cfg.person_labels) & ok)
    bare = _label_mask(d, (cfg.no_helmet_label,)) & (d.confidence >= cfg.min_confidence)
    hat = _label_mask(d, (cfg.helmet_label,)) & (d.confidence >= cfg.min_confidence)
    heads = np.flatnonzero(bare | hat)
    owner = assign_heads(d.xyxy_px[persons], d.xyxy_px[heads], cfg.head_region_frac, d.confidence[heads])
    out = []
    for pi, p in enumerate(persons):
        mine = heads[owner == pi]
        bare_conf = float(d.confidence[mine][bare[mine]].max()) if bare[mine].any() else 0.0
        hat_conf = float(d.confidence[mine][hat[mine]].max()) if hat[mine].any() else 0.0
        h = d.xyxy_px[p, 3] - d.xyxy_px[p, 1]
        if (bare_conf > 0 and bare_conf >= hat_conf) or (
            bare_conf == 0 and hat_conf == 0 and cfg.person_without_helmet_box == "violation" and h >= cfg.min_person_height_px
        ):
            out.append(int(p))
    out += [h_i for h_i in _free_bare_heads(d, heads, owner, bare, hat) if inside is None or inside[h_i]]
    return np.array(sorted(out), np.int64)


class HardHatRule(_DwellRule):
    """A person (or bare head) track in the zone without a hard hat for at least T s.

    The subject is the worker: a person track, or a bare head on no person box. A head track remembers the person
    track it last belonged to (``head_memory_s``), so a worker whose person box comes and goes is one subject
    (keyed by that person track) and one incident, not one for the person and one for the head.
    """

    event_type = NO_HARD_HAT

    def __init__(self, zone: Zone, zone_cfg: ZoneConfig, policy: EventPolicy, cfg: HardHatRuleConfig) -> None:
        super().__init__(zone, zone_cfg, policy, cfg.min_duration_s, cfg.grace_s, cfg.end_after_s, cfg.cooldown_s)
        self.cfg = cfg
        self._head_memory: dict[int, tuple[int, bool]] = {}  # person track -> (time, bare) of its last head box
        self._head_owner: dict[int, tuple[int, int]] = {}  # head track -> (person track, time last seen)
        self._present: set[tuple[str, int]] = set()
        self._renames: dict[tuple[str, int], tuple[str, int]] = {}

    def present(self, ctx: FrameContext) -> set[tuple[str, int]]:
        return self._present

    def renames(self) -> dict[tuple[str, int], tuple[str, int]]:
        return self._renames

    def subjects(self, ctx: FrameContext, inside: np.ndarray):
        cfg = self.cfg
        t = ctx.time_ns
        memory_ns = _s_to_ns(cfg.head_memory_s)
        for tid in [k for k, (ts, _) in self._head_memory.items() if t - ts > memory_ns]:
            del self._head_memory[tid]
        for hid in [k for k, (_, ts) in self._head_owner.items() if t - ts > memory_ns]:
            del self._head_owner[hid]
        d = ctx.detections
        tracked = _tracked(d)
        ok = d.confidence >= cfg.min_confidence
        is_person = _label_mask(d, cfg.person_labels)
        persons = np.flatnonzero(is_person & ok & tracked)
        bare = _label_mask(d, (cfg.no_helmet_label,)) & ok
        hat = _label_mask(d, (cfg.helmet_label,)) & ok
        heads = np.flatnonzero(bare | hat)
        person_tids = {int(v) for v in d.track_id[is_person & tracked]} if d.track_id is not None else set()
        self._present = {("person", tid) for tid in person_tids}
        self._renames = {}
        out: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, dict]] = {}
        owner = assign_heads(d.xyxy_px[persons], d.xyxy_px[heads], cfg.head_region_frac, d.confidence[heads])  # person index per head
        for k, h in enumerate(heads):
            if owner[k] >= 0 and tracked[h]:
                hid, pid = int(d.track_id[h]), int(d.track_id[persons[owner[k]]])
                self._head_owner[hid] = (pid, t)
                self._renames[("head", hid)] = ("person", pid)  # a head seen alone before its person box: one worker
        for pi, p in enumerate(persons):
            if not inside[p]:
                continue
            mine = heads[owner == pi]
            bare_conf = float(d.confidence[mine][bare[mine]].max()) if bare[mine].any() else 0.0
            hat_conf = float(d.confidence[mine][hat[mine]].max()) if hat[mine].any() else 0.0
            box = d.xyxy_px[p]
            tid = int(d.track_id[p])
            if bare_conf > 0 and bare_conf >= hat_conf:
                self._head_memory[tid] = (t, True)
                ev = np.concatenate([[p], mine[bare[mine]]])
                out[("person", tid)] = (ev, box, {"evidence": "bare_head", "head_confidence": round(bare_conf, 4)})
            elif hat_conf > 0:
                self._head_memory[tid] = (t, False)
            elif tid in self._head_memory:
                # head box missed this frame: the head seen moments ago decides (a hat does not vanish in a frame)
                if self._head_memory[tid][1]:
                    out[("person", tid)] = (np.array([p]), box, {"evidence": "bare_head_recent"})
            elif cfg.person_without_helmet_box == "violation" and (box[3] - box[1]) >= cfg.min_person_height_px:
                out[("person", tid)] = (np.array([p]), box, {"evidence": "no_helmet_box"})
        if d.track_id is None:
            return out
        # heads on no person box (no person detector, or it missed): the worker is the person track the head last
        # belonged to while that person box is missing, else the head track itself
        free_bare = set(_free_bare_heads(d, heads, owner, bare, hat))
        for k, h in enumerate(heads):
            if owner[k] != -1 or not tracked[h]:
                continue
            hid = int(d.track_id[h])
            key = ("head", hid)
            if hid in self._head_owner and self._head_owner[hid][0] not in person_tids:
                pid = self._head_owner[hid][0]
                self._head_owner[hid] = (pid, t)
                key = ("person", pid)
                if int(h) in free_bare or not bare[h]:
                    self._head_memory[pid] = (t, bool(int(h) in free_bare))
            self._present.add(key)
            if int(h) in free_bare and inside[h]:
                out[key] = (np.array([h]), d.xyxy_px[h], {"evidence": "bare_head", "head_confidence": round(float(d.confidence[h]), 4)})
        return out


class VesselZoneRule(_DwellRule):
    """A vessel track inside the zone for at least T s."""

    event_type = VESSEL_IN_ZONE

    def __init__(self, zone: Zone, zone_cfg: ZoneConfig, policy: EventPolicy, cfg: VesselZoneRuleConfig) -> None:
        super().__init__(zone, zone_cfg, policy, cfg.min_duration_s, cfg.grace_s, cfg.end_after_s, cfg.cooldown_s)
        self.cfg = cfg

    def present(self, ctx: FrameContext) -> set[tuple[str, int]]:
        d = ctx.detections
        return {("vessel", int(v)) for v in d.track_id[_label_mask(d, self.cfg.labels) & _tracked(d)]} if len(d) else set()

    def subjects(self, ctx: FrameContext, inside: np.ndarray):
        d = ctx.detections
        sel = np.flatnonzero(_label_mask(d, self.cfg.labels) & (d.confidence >= self.cfg.min_confidence) & _tracked(d) & inside)
        return {("vessel", int(d.track_id[i])): (np.array([i]), d.xyxy_px[i], {}) for i in sel}


# ------------------------------------------------------------------------------------------------ fire lane


@dataclass(slots=True)
class _Parked:
    ref_xy: np.ndarray
    still_since_ns: int
    last_seen_ns: int
    label: str


class FireLaneRule(Rule):
    """Lane occupied by a stationary vehicle track (or unknown stationary object) for at least T."""

    def __init__(self, zone: Zone, zone_cfg: ZoneConfig, policy: EventPolicy, cfg: FireLaneRuleConfig) -> None:
        super().__init__(zone, zone_cfg, policy)
        self.cfg = cfg
        self.T = _s_to_ns(cfg.min_duration_s)
        self._vehicles: dict[int, _Parked] = {}
        self._fg = StationaryForeground(zone, cfg.stationary_foreground, cfg.min_duration_s) if cfg.stationary_foreground else None
        self._fg_warned = False
        self._incident: _Incident | None = None
        self._last_blocked_ns: int | None = None
        self._cooldown_until_ns = -(2**62)

    def observe_disarmed(self, ctx: FrameContext) -> None:
        """Off by its schedule: the lane's background models go on learning the empty lane (a night's light
        changes), without timers, so a crate put down while it was off is foreground, timed from when it is armed
        (a model started afresh at arming would learn that crate as the empty lane)."""
        if self._fg is not None and ctx.image is not None:
            ignore = _label_mask(ctx.detections, self.cfg.ignore_labels)
            self._fg.update(ctx.image, ctx.time_ns, ctx.detections.xyxy_px[ignore], learn_only=True)

    def carry_over(self, old: Rule) -> None:
        if isinstance(old, FireLaneRule) and old._fg is not None and self._fg is not None and old._fg._long is not None:
            self._fg = old._fg  # its timers are all reset (learn_only): judged from the arming frame on

    def update(self, ctx: FrameContext, inside: np.ndarray) -> list[Event]:
        cfg = self.cfg
        d = ctx.detections
        t = ctx.time_ns
        ok = d.confidence >= cfg.min_confidence
        veh = _label_mask(d, cfg.vehicle_labels) & ok & _tracked(d)
        if cfg.min_overlap_frac > 0 and self.zone.kind != "geo" and veh.any():
            in_lane = np.zeros(len(d), bool)
            vi = np.flatnonzero(veh)
            in_lane[vi] = self.zone.overlap_fraction(d.xyxy_px[vi]) >= cfg.min_overlap_frac
        else:
            in_lane = inside
        anchors = zone_anchor_points(self.zone, d, self.zone_cfg.anchors)
        for i in np.flatnonzero(veh & in_lane):
            tid = int(d.track_id[i])
            box = d.xyxy_px[i].astype(np.float64)
            diag = float(np.hypot(box[2] - box[0], box[3] - box[1]))
            p = self._vehicles.get(tid)
            if p is None:
                # a new id where a vehicle rested until recently is most likely that vehicle re-acquired by the
                # tracker (missed detections, occlusion): it inherits the resting timer
                heir = self._heir(anchors[i], diag, t)
                if heir is not None:
                    p = self._vehicles.pop(heir)
                    p.last_seen_ns = t
                    p.label = str(d.label[i])
                    self._vehicles[tid] = p
                    continue
            if p is None or np.hypot(*(anchors[i] - p.ref_xy)) > cfg.max_drift_frac * diag:
                self._vehicles[tid] = _Parked(anchors[i].copy(), t, t, str(d.label[i]))  # (re)starts resting here
            else:
                p.last_seen_ns = t
                p.label = str(d.label[i])
        grace = _s_to_ns(cfg.grace_s)
        for tid in [k for k, p in self._vehicles.items() if t - p.last_seen_ns >= grace]:
            del self._vehicles[tid]
        parked = {tid: p for tid, p in self._vehicles.items() if t - p.still_since_ns >= self.T}

        fg_state = None
        if self._fg is not None:
            if ctx.image is None:
                if not self._fg_warned:
                    log.warning("%s/%s: stationary-foreground analysis needs frames; none given", ctx.source_id, self.zone.id)
                    self._fg_warned = True
            else:
                ignore = _label_mask(d, cfg.ignore_labels)
                fg_state = self._fg.update(ctx.image, t, d.xyxy_px[ignore])
        fg_blocked = fg_state is not None and fg_state.blocked

        blocked = bool(parked) or fg_blocked
        out: list[Event] = []
        if blocked:
            # the blockage was last *seen* then (a vehicle within its grace, or foreground within its grace, was not)
            seen = [p.last_seen_ns for p in parked.values()]
            if fg_blocked and fg_state.last_seen_ns is not None:
                seen.append(fg_state.last_seen_ns)
            self._last_blocked_ns = max(seen + [self._last_blocked_ns or -(2**62)])
            starts = [p.still_since_ns for p in parked.values()]
            if fg_blocked and fg_state.since_ns is not None:
                starts.append(fg_state.since_ns)
            if self._incident is None:
                # start only on evidence seen in this very frame (grace memory may extend, never open, a blockage)
                seen_now = any(p.last_seen_ns == t for p in parked.values()) or (fg_blocked and fg_state.last_seen_ns == t)
                if t < self._cooldown_until_ns or not seen_now:
                    return out
                self._incident = _Incident(FIRE_LANE_BLOCKED, ctx.source_id, self.zone.id, min(starts), "high", self.policy)
                self._observe(ctx, parked, fg_state)
                out.append(self._incident.make("start", t))
            else:
                self._observe(ctx, parked, fg_state)
                ev = self._incident.maybe_update(t)
                if ev is not None:
                    out.append(ev)
        elif self._incident is not None and t - self._last_blocked_ns >= _s_to_ns(cfg.clear_after_s):  # type: ignore[operator]
            out.append(self._end(t, "lane clear"))
        return out

    def _heir(self, anchor_xy: np.ndarray, diag: float, t: int) -> int | None:
        """Id of a resting vehicle, not seen in this frame, whose place ``anchor_xy`` is (closest first)."""
        best, best_d = None, self.cfg.max_drift_frac * diag
        for tid, p in self._vehicles.items():
            if p.last_seen_ns == t:
                continue
            dist = float(np.hypot(*(anchor_xy - p.ref_xy)))
            if dist <= best_d:
                best, best_d = tid, dist
        return best

    def _observe(self, ctx: FrameContext, parked: dict[int, _Parked], fg_state) -> None:
        inc = self._incident
        assert inc is not None
        d = ctx.detections
        t = ctx.time_ns
        idx = np.flatnonzero(np.isin(d.track_id, list(parked))) if parked and d.track_id is not None else np.zeros(0, np.int64)
        # a parked vehicle missed in this frame still counts: keep its track id
        inc.add_tracks(parked)
        if idx.size:
            inc.observe(ctx, idx)
        else:
            inc.last_evidence_ns = t
        occupants = [{"kind": "vehicle", "track_id": tid, "label": p.label, "still_s": round((t - p.still_since_ns) / 1e9, 1)} for tid, p in sorted(parked.items())]
        if fg_state is not None and fg_state.blocked:
            occupants.append({"kind": "unknown_object", "lane_frac": round(fg_state.fraction, 4),
                              "xyxy_px": [round(v, 1) for v in fg_state.xyxy_px] if fg_state.xyxy_px else None})
            if inc.snapshot is None and fg_state.xyxy_px is not None:
                inc.snapshot = Snapshot(ctx.source_id, t, fg_state.xyxy_px, 0.0, image=None if ctx.image is None else ctx.image.copy())
                inc._locate(ctx, np.asarray(fg_state.xyxy_px))
        inc.attributes["occupants"] = occupants
        inc.attributes["occupant_kinds"] = sorted({o["kind"] for o in occupants})

    def _end(self, t: int, reason: str) -> Event:
        inc = self._incident
        assert inc is not None
        ev = inc.end(t, self._last_blocked_ns or t, reason)
        self._incident = None
        self._cooldown_until_ns = t + _s_to_ns(self.cfg.cooldown_s)
        return ev

    def close(self, time_ns: int, reason: str) -> list[Event]:
        return [self._end(time_ns, reason)] if self._incident is not None else []


# -------------------------------------------------------------------------------------------------- engine


def build_rule(zone: Zone, zone_cfg: ZoneConfig, policy: EventPolicy, cfg) -> Rule:
    if isinstance(cfg, FireSmokeRuleConfig):
        return FireSmokeRule(zone, zone_cfg, policy, cfg)
    if isinstance(cfg, HardHatRuleConfig):
        return HardHatRule(zone, zone_cfg, policy, cfg)
    if isinstance(cfg, FireLaneRuleConfig):
        return FireLaneRule(zone, zone_cfg, policy, cfg)
    if isinstance(cfg, VesselZoneRuleConfig):
        return VesselZoneRule(zone, zone_cfg, policy, cfg)
    raise TypeError(f"unknown rule config {type(cfg).__name__}")


class RuleEngine:
    """All zones and rules of all sources.

    ``update`` takes one analysed frame of one source (tracked detections, capture time, optionally the pixels and
    a locator) and returns the events it caused, after passing each through the enrichers (e.g. the vessel
    identity stage adding MMSI / hull text) and emitting it to every sink. Frames of one source must come in
    non-decreasing capture time; sources are independent.
    """

    def __init__(self, config: RulesConfig, sinks: Sequence[Sink] = (), enrichers: Sequence[Enricher] = ()) -> None:
        self.config = config
        self.sinks = list(sinks)
        self.enrichers = list(enrichers)
        self._zones: dict[str, list[tuple[Zone, ZoneConfig, list[Rule]]]] = {}
        for zc in config.zones:
            zone = zc.build_zone()
            rules = [self._build(zone, zc, rc) for rc in zc.rules]
            self._zones.setdefault(zc.source, []).append((zone, zc, rules))
        self._last_ns: dict[str, int] = {}
        self._geo_warned: set[tuple[str, str]] = set()

    def _build(self, zone: Zone, zc: ZoneConfig, rc, schedule: Schedule | None = None) -> Rule:
        rule = build_rule(zone, zc, self.config.events, rc)
        rule.rule_cfg = rc
        if rc.schedule is not None:
            rule.schedule = schedule or rc.schedule.build(self.config.site.timezone)
        return rule

    def _gate(self, rules: list[Rule], i: int, zone: Zone, zc: ZoneConfig, t: int, out: list[Event]) -> Rule | None:
        """``rules[i]`` if its schedule arms it at capture time ``t``, else None. Disarming ends its open incidents
        at the edge (the first change after its last armed frame), with the reason; arming again replaces it with a
        fresh rule, so a subject already there is judged from this frame with the rule's normal dwell and delays,
        not from timers that ran while it was off."""
        rule = rules[i]
        sched = rule.schedule
        assert sched is not None
        if sched.armed(t):
            if rule.disarmed:
                log.info("source %s zone %s: %s armed (%s)", rule.zone_cfg.source, zone.id, rule.rule_cfg.type, sched.describe())
                old, rule = rule, self._build(zone, zc, rule.rule_cfg, sched)
                rule.carry_over(old)  # what it learnt of the scene, not its timers
                rules[i] = rule
            rule.last_armed_ns = t
            return rule
        if not rule.disarmed:
            rule.disarmed = True
            if rule.last_armed_ns is not None:
                edge = sched.state(rule.last_armed_ns)[1]
                edge = t if edge is None or edge > t else edge
                out.extend(rule.close(edge, sched.disarm_reason(edge)))
                log.info("source %s zone %s: %s disarmed (%s)", rule.zone_cfg.source, zone.id, rule.rule_cfg.type, sched.describe())
        return None

    @property
    def source_ids(self) -> tuple[str, ...]:
        return tuple(self._zones)

    def rules_for(self, source_id: str) -> list[Rule]:
        return [r for (_, _, rules) in self._zones.get(source_id, ()) for r in rules]

    def update(self, source_id: str, time_ns: int, detections: Detections, image: np.ndarray | None = None,
               locator: Locator | None = None, frame_size_px: tuple[int, int] | None = None) -> list[Event]:
        time_ns = int(time_ns)
        prev = self._last_ns.get(source_id)
        if prev is not None and time_ns < prev:
            raise InputError(f"source {source_id!r}: frame at {time_ns} ns is older than the previous one at {prev} ns")
        self._last_ns[source_id] = time_ns
        zones = self._zones.get(source_id)
        if not zones:
            return []
        if image is not None:
            if not isinstance(image, np.ndarray) or image.ndim != 3:
                raise InputError(f"source {source_id!r}: image must be an (H, W, 3) array, got {getattr(image, 'shape', type(image))}")
            frame_size_px = (int(image.shape[1]), int(image.shape[0]))
        ctx = FrameContext(source_id, time_ns, detections, image, frame_size_px, locator)
        needs_tracks = any(r.needs_tracks for (_, _, rules) in zones for r in rules)
        if needs_tracks and len(detections) and detections.track_id is None:
            raise InputError(f"source {source_id!r}: rules need tracked detections (track_id); run a ByteTracker first")
        out: list[Event] = []
        for zone, zc, rules in zones:
            if zone.kind == "geo" and locator is None and (source_id, zone.id) not in self._geo_warned:
                log.warning("source %s: geo zone %s is inactive: the frame has no locator (not geo-referenced)", source_id, zone.id)
                self._geo_warned.add((source_id, zone.id))
            inside = zone.contains_px(zone_anchor_points(zone, detections, zc.anchors), locator)
            for i in range(len(rules)):
                rule = rules[i] if rules[i].schedule is None else self._gate(rules, i, zone, zc, time_ns, out)
                if rule is not None:
                    out.extend(rule.update(ctx, inside))
                else:
                    rules[i].observe_disarmed(ctx)
        return self._publish(out)

    def update_frame(self, frame, detections: Detections, locator: Locator | None = None) -> list[Event]:
        """``update`` for a ``seawatch.streams.frame.Frame``."""
        return self.update(frame.source_id, frame.capture_time_ns, detections, frame.image, locator)

    def close(self, time_ns: int | None = None, source_id: str | None = None, reason: str = "stream ended") -> list[Event]:
        """End every open incident (of one source, or all); ``time_ns`` defaults to each source's last frame time."""
        out: list[Event] = []
        for sid, zones in self._zones.items():
            if source_id is not None and sid != source_id:
                continue
            t = time_ns if time_ns is not None else self._last_ns.get(sid)
            if t is None:
                continue
            for _, _, rules in zones:
                for r in rules:
                    out.extend(r.close(int(t), reason))
        return self._publish(out)

    def _publish(self, events: list[Event]) -> list[Event]:
        final = []
        for ev in events:
            for enrich in self.enrichers:
                try:
                    ev = enrich(ev)
                except Exception:  # an enricher is another stage's code: the event still goes out
                    log.exception("enricher %r failed on event %s (%s); event sent without it", enrich, ev.id, ev.type)
            final.append(ev)
            for sink in self.sinks:
                sink.emit(ev)
        return final
