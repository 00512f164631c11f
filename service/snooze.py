"""Snoozing a camera's alerts for a while (crane maintenance, a contractor's van in the fire lane, a lens being cleaned)
without turning anything off and without losing anything.

While a camera is snoozed its detections still run and its events are still stored with their snapshot and clip,
but each carries ``attributes["snoozed"]`` (``by``, ``since_ns``, ``until_ns``, ``note``, ``snooze_id``): the operator
UI sounds no alarm and shows no desktop notification for it, the camera wall's tile does not turn red for it,
webhooks do not send it (unless an endpoint says ``snoozed: true``), MQTT publishes it with the flag and lets the
machine decide. A snooze covers every type of the camera's events (``types`` narrows it), the service-health ones
(``source_offline``, ``camera_moved``, ``camera_covered``, ``camera_blurred``) included: maintenance often takes
the camera down or covers it. A drone's own ``drone_link_lost`` is the drone's, not its camera's, and is never snoozed.

Whether an incident is snoozed is decided once, at the first phase this process sees of it (its start), and its later
phases carry the same mark: an incident raised during the snooze does not alarm when it updates or ends after the
snooze, and one raised before the snooze keeps alarming as it did. Events a person reported (``POST /api/events``,
``reported_by``) are never snoozed: someone chose to raise them.

The snooze itself is on record without a schema change: each is an incident of type ``source_snoozed`` (severity
``low``, the lowest there is; no labels, so it counts under no MQTT label) in the events table, started when the
snooze starts, with ``by``, ``note``, ``types`` and ``until_ns`` in its attributes, and ended when the snooze ends:
at ``until_ns`` by itself (``end_reason: expired``), early by an operator (``ended early``, ``ended_by``,
``end_note``) or by a new snooze of the same camera (``replaced``). It is searchable and in the report like any
incident. At start the service reads the open ones back (:meth:`SnoozeBook.restore`), so a snooze of 2 h still holds
after a restart at 1 h; one whose end passed while the service was down is ended at its ``until_ns``. For that the
start-up's "end the incidents the last run left open" skips them (:class:`SnoozingSink`).
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from seawatch.service.sink import StoreSink, _ended
from seawatch.service.store import EventQuery
from seawatch.vision.events import Event

log = logging.getLogger(__name__)

SNOOZE_TYPE = "source_snoozed"  # the record of a snooze, an incident in the events table
SNOOZE_SEVERITY = "low"
_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DECIDED_MAX = 100_000  # incidents whose snooze decision is remembered for their later phases (ended ones are forgotten)
RECORD_STORE_WAIT_S = 5.0  # how long a snooze's record may wait for the store before the request answers anyway
TICK_S = 0.5  # how often snoozes past their end are ended


class SnoozeIn(BaseModel):
    """``POST /api/sources/{id}/snooze``: for ``minutes`` from now or until ``until_ns``, with a note saying why."""

    model_config = ConfigDict(extra="forbid")

    minutes: float | None = Field(None, gt=0, allow_inf_nan=False, description="snooze for this long from now")
    until_ns: int | None = Field(None, gt=0, description="or until this instant (UTC ns)")
    note: str = Field(min_length=1, max_length=500, description="why (crane maintenance, lens cleaning...): required")
    types: list[str] | None = Field(None, min_length=1, max_length=50,
                                    description="event types to snooze (fire, no_hard_hat, source_offline, ...); "
                                                "default: every type of the camera's events")

    @field_validator("note")
    @classmethod
    def _note(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a note saying why is required")
        if any(ord(c) < 32 and c not in "\t" for c in v):
            raise ValueError("no control characters or line breaks")
        return v.strip()

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        bad = [t for t in v if not isinstance(t, str) or not _TYPE.match(t)]
        if bad:
            raise ValueError(f"not an event type: {str(bad[0])[:70]!r} (lower-case letters, digits, _)")
        return list(dict.fromkeys(v))

    def until(self, now_ns: int, max_s: float) -> int:
        """The snooze's end (UTC ns); ValueError, saying why, for none or both given, a past end or one too far."""
        if (self.minutes is None) == (self.until_ns is None):
            raise ValueError("give either minutes or until_ns")
        too_long = ValueError(f"a snooze is at most {_duration(max_s)} (source_alerts.snooze_max_s)")
        if self.minutes is not None:
            if self.minutes * 60.0 > max_s + 1.0:  # before any arithmetic on it: 1e308 minutes is refused, not a crash
                raise too_long
            return now_ns + int(round(self.minutes * 60e9))
        if self.until_ns <= now_ns:
            raise ValueError("until_ns is in the past")
        if self.until_ns - now_ns > max_s * 1e9 + 1e9:  # a second's slack: a client computing "now + 12 h" is not refused
            raise too_long
        return int(self.until_ns)


class SnoozeEndIn(BaseModel):
    """``DELETE /api/sources/{id}/snooze``: why it ends early (optional)."""

    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=500, description="why it ends early")


def _duration(s: float) -> str:
    return f"{s / 3600:g} h" if s >= 3600 else f"{s / 60:g} min"


@dataclass(frozen=True, slots=True)
class Snooze:
    """One camera's snooze: its record's incident id, who, from when until when, why, which event types."""

    id: str
    source_id: str
    by: str
    since_ns: int
    until_ns: int
    note: str
    types: tuple[str, ...] = ()  # empty: every type

    def covers(self, event_type: str, now_ns: int) -> bool:
        return self.since_ns <= now_ns < self.until_ns and (not self.types or event_type in self.types)

    def mark(self) -> dict[str, Any]:
        """What a snoozed event carries in ``attributes["snoozed"]``."""
        return {"by": self.by, "since_ns": self.since_ns, "until_ns": self.until_ns, "note": self.note,
                "snooze_id": self.id, **({"types": list(self.types)} if self.types else {})}

    def as_dict(self) -> dict[str, Any]:
        """As ``GET /api/sources`` and ``GET /api/sources/{id}/snooze`` serve it."""
        return {"id": self.id, "source_id": self.source_id, "by": self.by, "since_ns": self.since_ns,
                "until_ns": self.until_ns, "note": self.note, "types": list(self.types)}

    def record(self) -> Event:
        """The start of its record: a ``source_snoozed`` incident of the camera."""
        return Event(id=self.id, type=SNOOZE_TYPE, severity=SNOOZE_SEVERITY, phase="start", seq=0,
                     source_id=self.source_id, start_ns=self.since_ns, at_ns=self.since_ns,
                     attributes={"by": self.by, "note": self.note, "types": list(self.types), "until_ns": self.until_ns},
                     geo_reason="a snooze of a camera's alerts has no position")

    @classmethod
    def from_record(cls, ev: Event) -> "Snooze":
        a = ev.attributes
        return cls(id=ev.id, source_id=ev.source_id, by=str(a.get("by", "?")), since_ns=ev.start_ns,
                   until_ns=int(a["until_ns"]), note=str(a.get("note", "")), types=tuple(a.get("types") or ()))


class SnoozeBook:
    """The snoozes in force, one per camera at most; thread-safe. ``sink`` (set once the service has made it) stores
    and publishes the records; :meth:`stamp` marks events, :meth:`start` runs the timer that ends snoozes at their
    end."""

    def __init__(self, max_s: float, sink: StoreSink | None = None, clock=time.time_ns) -> None:
        self.max_s = float(max_s)
        self.sink = sink
        self.clock = clock
        self._active: dict[str, Snooze] = {}
        self._decided: collections.OrderedDict[str, dict[str, Any] | None] = collections.OrderedDict()
        self._lock = threading.Lock()  # the state, held briefly: stamp() on the pipeline's thread never waits on a write
        self._ops = threading.RLock()  # one operation (and its records' writes) at a time, records in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the record ----------------------------------------------------------------------------------------
    def _emit(self, ev: Event) -> None:
        if self.sink is None:
            log.error("snooze record %s (%s %s) not stored: no event sink", ev.id, ev.phase, ev.source_id)
            return
        self.sink.emit(ev)
        self.sink.flush(RECORD_STORE_WAIT_S)

    def _end_record(self, sn: Snooze, end_ns: int, reason: str, by: str | None = None, note: str = "") -> None:
        end_ns = max(sn.since_ns, min(end_ns, sn.until_ns))
        start = sn.record()
        attrs = {**start.attributes, "end_reason": reason, "duration_s": round((end_ns - sn.since_ns) / 1e9, 3)}
        if by is not None:
            attrs["ended_by"] = by
        if note:
            attrs["end_note"] = note
        self._emit(replace(start, phase="end", seq=1, end_ns=end_ns, at_ns=end_ns, attributes=attrs))

    # ---- operations ----------------------------------------------------------------------------------------
    def get(self, source_id: str, now_ns: int | None = None) -> Snooze | None:
        """The camera's snooze in force now, or None (one past its end counts as none before the timer ends it)."""
        now_ns = self.clock() if now_ns is None else now_ns
        with self._lock:
            sn = self._active.get(source_id)
        return sn if sn is not None and now_ns < sn.until_ns else None

    def snooze(self, source_id: str, by: str, until_ns: int, note: str, types=(), now_ns: int | None = None) -> Snooze:
        """Snooze the camera's alerts from now until ``until_ns``; a snooze in force is ended first (``replaced``)."""
        now_ns = self.clock() if now_ns is None else now_ns
        sn = Snooze(id=uuid.uuid4().hex, source_id=source_id, by=by, since_ns=now_ns, until_ns=int(until_ns),
                    note=note, types=tuple(types or ()))
        with self._ops:
            with self._lock:
                old = self._active.get(source_id)
                self._active[source_id] = sn
            if old is not None:
                self._end_record(old, now_ns, "replaced", by=by, note=f"replaced by snooze {sn.id}")
            self._emit(sn.record())
        log.warning("source %s: alerts snoozed by %s until %s (%s)%s%s", source_id, by, _utc(sn.until_ns), note,
                    f", types {', '.join(sn.types)}" if sn.types else "", f"; replaces the snooze by {old.by}" if old else "")
        return sn

    def end(self, source_id: str, by: str, note: str = "", now_ns: int | None = None) -> Snooze | None:
        """End the camera's snooze early (its record ends now: ``ended early``, who, why); None when none is in force."""
        now_ns = self.clock() if now_ns is None else now_ns
        with self._ops:
            with self._lock:
                sn = self._active.get(source_id)
                if sn is None or now_ns >= sn.until_ns:
                    return None
                del self._active[source_id]
            self._end_record(sn, now_ns, "ended early", by=by, note=note)
        log.warning("source %s: snooze by %s ended early by %s%s", source_id, sn.by, by, f" ({note})" if note else "")
        return sn

    def expire(self, now_ns: int | None = None) -> list[Snooze]:
        """End the snoozes whose end has come (their records end at ``until_ns``: ``expired``)."""
        now_ns = self.clock() if now_ns is None else now_ns
        with self._ops:
            with self._lock:
                done = [sn for sn in self._active.values() if now_ns >= sn.until_ns]
                for sn in done:
                    del self._active[sn.source_id]
            for sn in done:
                self._end_record(sn, sn.until_ns, "expired")
        for sn in done:
            log.info("source %s: snooze by %s expired at %s; its alerts alarm again", sn.source_id, sn.by, _utc(sn.until_ns))
        return done

    def restore(self, store, now_ns: int | None = None) -> "SnoozeBook":
        """At start: the snoozes whose record is still open in ``store`` are in force again; those whose end passed
        while the service was down are ended at it (and a second open one of a camera, which no run leaves, at once)."""
        now_ns = self.clock() if now_ns is None else now_ns
        found, cursor = [], None
        while True:
            page = store.search(EventQuery(types=(SNOOZE_TYPE,), open_only=True, sort="start_ns", limit=200, cursor=cursor))
            found += page.events
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        with self._ops:
            for ev in found:  # oldest first: a newer one of the same camera replaces it
                try:
                    sn = Snooze.from_record(ev)
                except (KeyError, TypeError, ValueError):
                    log.error("snooze record %s of %s unreadable (%r); ended", ev.id, ev.source_id, dict(ev.attributes))
                    self._emit(_ended(ev, "unreadable", now_ns))
                    continue
                with self._lock:
                    old = self._active.pop(sn.source_id, None)
                    self._active[sn.source_id] = sn
                if old is not None:
                    self._end_record(old, sn.since_ns, "replaced", note=f"replaced by snooze {sn.id}")
            with self._lock:
                restored = sorted(self._active.items())
            for sid, sn in restored:
                if now_ns < sn.until_ns:
                    log.warning("source %s: alerts snoozed by %s until %s (%s), from before the restart", sid, sn.by,
                                _utc(sn.until_ns), sn.note)
            self.expire(now_ns)
        return self

    # ---- marking events ------------------------------------------------------------------------------------
    def stamp(self, ev: Event, now_ns: int | None = None) -> Event:
        """``ev`` with ``attributes["snoozed"]`` when its incident was raised while its camera was snoozed for its
        type (decided at the incident's first phase, kept for its later ones); else ``ev`` itself."""
        if ev.type == SNOOZE_TYPE or "reported_by" in ev.attributes:
            return ev
        with self._lock:
            if ev.id in self._decided:
                mark = self._decided.pop(ev.id) if ev.phase == "end" else self._decided[ev.id]
            elif ev.phase == "start":
                now_ns = self.clock() if now_ns is None else now_ns
                sn = self._active.get(ev.source_id)
                mark = sn.mark() if sn is not None and sn.covers(ev.type, now_ns) else None
                self._decided[ev.id] = mark
                while len(self._decided) > _DECIDED_MAX:
                    self._decided.popitem(last=False)
            else:  # a later phase of an incident this run did not see start (ended after a restart): as stored
                return ev
        if mark is None or "snoozed" in ev.attributes:
            return ev
        return replace(ev, attributes={**ev.attributes, "snoozed": mark})

    # ---- the timer -----------------------------------------------------------------------------------------
    def start(self) -> "SnoozeBook":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="seawatch-snooze", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the timer; snoozes in force stay open in the store (a restart restores them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(RECORD_STORE_WAIT_S + 5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.expire()
            except Exception:  # noqa: BLE001 - the timer must not die of one failed write
                log.exception("snooze: ending expired snoozes failed")


class SnoozingSink(StoreSink):
    """The service's ``StoreSink`` that marks snoozed events (:meth:`SnoozeBook.stamp`) before they are stored and
    published, and leaves open snooze records open when it ends what the last run left open (they are restored)."""

    KEEP_OPEN_TYPES = frozenset({SNOOZE_TYPE})  # snoozes in force stay open for SnoozeBook.restore

    def __init__(self, book: SnoozeBook, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.book = book
        if book.sink is None:
            book.sink = self

    def emit(self, event: Event) -> None:
        try:
            event = self.book.stamp(event)
        except Exception:  # noqa: BLE001 - marking must never cost the event
            log.exception("event %s: snooze check failed; stored unmarked", event.id)
        super().emit(event)

def _utc(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))


def snooze_answer(book: SnoozeBook, store, source_id: str, history: int = 20) -> dict[str, Any]:
    """``GET /api/sources/{id}/snooze``: the snooze in force (or null) and the camera's last snoozes, newest first."""
    sn = book.get(source_id)
    page = store.search(EventQuery(types=(SNOOZE_TYPE,), source_ids=(source_id,), sort="-start_ns", limit=history))
    past = []
    for ev in page.events:
        a = ev.attributes
        past.append({"id": ev.id, "by": a.get("by"), "since_ns": ev.start_ns, "until_ns": a.get("until_ns"),
                     "note": a.get("note"), "types": list(a.get("types") or ()), "end_ns": ev.end_ns,
                     "end_reason": a.get("end_reason"), "ended_by": a.get("ended_by"), "end_note": a.get("end_note"),
                     "in_force": sn is not None and sn.id == ev.id})
    return {"source_id": source_id, "snooze": sn.as_dict() if sn is not None else None, "history": past,
            "max_s": book.max_s}


__all__ = ["SNOOZE_TYPE", "Snooze", "SnoozeBook", "SnoozeEndIn", "SnoozeIn", "SnoozingSink", "snooze_answer"]
