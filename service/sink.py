"""``StoreSink``: the pipeline's events land in the event store, then go to any publishers.

Order per event: the snapshot JPEG is written under the media folder, then the event is committed to the store,
then publishers (MQTT, WebSocket, ...) are called. A publisher never sees an event the store does not hold, and a
failing publisher does not lose the event.

A write that fails for a passing reason (SQLite busy beyond its timeout, disk full, the PostgreSQL server away:
``OperationalError``) keeps the phase in a bounded in-memory queue, in order, and later phases queue behind it. A
retry thread writes the queue every ``retry_interval_s`` until it is empty, and the store's ``close`` writes it once
more (:meth:`EventStore.add_close_hook`); ``put`` is idempotent by ``seq``, so a replay never applies a phase twice.
Only what overflows the queue, what is still queued at close, and phases the database rejects for good (any other
error) are lost: counted in ``dropped`` and logged. The pipeline thread writes only when nothing is queued, one
``put`` per event as before the queue, and never waits for the retry thread.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from seawatch.service.store import EventQuery, EventStore
from seawatch.vision.events import Event

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")
Publisher = Callable[[Event], None]
RESTART_END_REASON = "service restarted"  # end_reason of incidents found open at start (the last run did not end them)


class StoreSink:
    """A ``vision.events.Sink`` writing to an :class:`EventStore` (snapshots to ``media_dir/snapshots``).

    Counters: ``stored`` (phases applied), ``errors`` (failed write attempts), ``dropped`` (phases lost for good);
    ``pending`` phases wait for a retry. :meth:`stats` gathers them for a health report.
    """

    MAX_PENDING = 10_000
    RETRY_INTERVAL_S = 5.0
    KEEP_OPEN_TYPES: frozenset[str] = frozenset()  # open records :meth:`end_open` leaves open (restored elsewhere)

    def __init__(self, store: EventStore, media_dir: str | Path, publishers: list[Publisher] | None = None, *,
                 max_pending: int = MAX_PENDING, retry_interval_s: float = RETRY_INTERVAL_S) -> None:
        self.store = store
        self.media_dir = Path(media_dir)
        self.publishers: list[Publisher] = list(publishers or [])
        self.max_pending = max_pending
        self.retry_interval_s = retry_interval_s
        self.stored = 0
        self.errors = 0  # failed write attempts (a phase retried three times counts three)
        self.dropped = 0  # phases lost for good
        self._pending: collections.deque[Event] = collections.deque()
        self._qlock = threading.Lock()  # guards _pending, _retry_thread and the counters; held only briefly
        self._write = threading.Lock()  # one writer (pipeline or retry thread) at a time: phases stay in order
        self._wake = threading.Event()
        self._closed = False
        self._retry_thread: threading.Thread | None = None
        self._last_error_log_s = -float("inf")
        store.add_close_hook(self.close)  # what is queued gets a last try before the store closes

    @property
    def pending(self) -> int:
        """Phases waiting to be written again."""
        return len(self._pending)

    def stats(self) -> dict[str, int]:
        """Counters for a health report: stored, errors (failed attempts), pending (queued for a retry), dropped."""
        with self._qlock:
            return {"stored": self.stored, "errors": self.errors, "pending": len(self._pending), "dropped": self.dropped}

    def _save_snapshot(self, ev: Event) -> Event:
        snap = ev.snapshot
        if snap is None or snap.uri is not None:
            return ev
        data = snap.jpeg_bytes()
        if data is None:
            return ev
        rel = Path("snapshots") / (_SAFE.sub("_", ev.source_id) or "source") / f"{_SAFE.sub('_', ev.id)}_{ev.seq}.jpg"
        path = self.media_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a JPEG
        return replace(ev, snapshot=replace(snap, uri=rel.as_posix(), image=None, jpeg=None))

    def emit(self, event: Event) -> None:
        try:
            ev = self._save_snapshot(event)
        except OSError as exc:
            log.error("event %s: cannot write its snapshot (%s); storing it without one", event.id, exc)
            ev = replace(event, snapshot=replace(event.snapshot, image=None, jpeg=None)) if event.snapshot else event
        with self._qlock:
            backlog = bool(self._pending)
            if len(self._pending) >= self.max_pending:
                lost = self._pending.popleft()
                self.dropped += 1
                log.error("event %s (%s %s on %s) lost: %d phases already wait for the store (%d lost in all)",
                          lost.id, lost.type, lost.phase, lost.source_id, len(self._pending), self.dropped)
            self._pending.append(ev)
        # with a backlog this phase waits behind it (order per incident) for the retry thread: the pipeline thread
        # never waits for more than its own one write, nor for the retry thread
        if not backlog and self._write.acquire(blocking=False):
            try:
                self._drain(limit=1)
            finally:
                self._write.release()
        if self._pending and not self._closed:
            self._start_retry()

    def _drain(self, limit: int | None = None) -> bool:
        """Write queued phases in order (``_write`` held), at most ``limit``, stopping at the first passing failure;
        True when the queue is empty."""
        done = 0
        while limit is None or done < limit:
            with self._qlock:
                if not self._pending:
                    return True
                ev = self._pending[0]
            done += 1
            try:
                applied = self.store.put(ev)
            except sa.exc.OperationalError as exc:  # busy, locked, disk full, server gone: try again later
                with self._qlock:
                    self.errors += 1
                    now = time.monotonic()
                    quiet = now - self._last_error_log_s < max(self.retry_interval_s, 10.0)
                    if not quiet:
                        self._last_error_log_s = now
                    n = len(self._pending)
                if not quiet:  # once per interval, not once per queued phase
                    log.error("event %s (%s %s on %s) could not be stored; %d phase(s) kept for a retry: %s",
                              ev.id, ev.type, ev.phase, ev.source_id, n, exc.orig or exc)
                return False
            except Exception:  # noqa: BLE001 - the database refused this phase: retrying would not help
                with self._qlock:
                    self._pending.popleft()
                    self.errors += 1
                    self.dropped += 1
                log.exception("event %s (%s %s on %s) could not be stored", ev.id, ev.type, ev.phase, ev.source_id)
                continue
            with self._qlock:
                self._pending.popleft()
                self.stored += applied
            if applied:
                self._publish(ev)
        return not self._pending

    def _publish(self, ev: Event) -> None:
        for publish in self.publishers:
            try:
                publish(ev)
            except Exception:  # noqa: BLE001
                log.exception("publisher %r failed on event %s", publish, ev.id)

    def _start_retry(self) -> None:
        with self._qlock:
            if self._retry_thread is not None or self._closed:
                return
            self._retry_thread = threading.Thread(target=self._retry_loop, name="seawatch-store-retry", daemon=True)
            self._retry_thread.start()

    def _retry_loop(self) -> None:
        while True:
            self._wake.wait(self.retry_interval_s)
            self._wake.clear()
            if not self._closed:
                with self._write:
                    if self._drain():
                        log.info("event store writable again: every queued phase is stored")
            with self._qlock:  # exit decided under the lock emit queues under: a phase queued now finds no thread
                if self._closed or not self._pending:
                    self._retry_thread = None
                    return

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write the queued phases now (waiting up to ``timeout_s`` for a write in progress); True when none is left."""
        if not self._write.acquire(timeout=-1 if timeout_s is None else timeout_s):
            return False
        try:
            return self._drain(None)
        finally:
            self._write.release()

    def end_open(self, reason: str, at_ns: int | None = None) -> int:
        """End every incident the store holds open (``end_ns`` NULL): those a crash or ``kill -9`` left behind. Each
        gets an ``end`` phase (seq + 1, ``end_ns`` = its last ``at_ns``, ``attributes["end_reason"] = reason``)
        through :meth:`emit`, so publishers (MQTT counts) hear of it. Returns how many were ended."""
        n, cursor = 0, None
        while True:
            page = self.store.search(EventQuery(open_only=True, sort="start_ns", limit=200, cursor=cursor))
            for ev in page.events:
                if ev.type in self.KEEP_OPEN_TYPES:
                    continue
                self.emit(_ended(ev, reason, at_ns))
                n += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        if n:
            log.warning("%d incident(s) left open by the previous run ended (%s)", n, reason)
        return n

    def close(self) -> None:
        """Stop the retry thread and write what is queued once more; what is still queued then is lost (logged).
        Called by the store's ``close`` (and safe to call again)."""
        with self._qlock:
            self._closed = True
            t = self._retry_thread
        self._wake.set()
        if t is not None and t is not threading.current_thread():
            t.join(self.retry_interval_s + 10)
        with self._write:
            self._drain()
        with self._qlock:
            left = len(self._pending)
            self._pending.clear()
            self.dropped += left
        if left:
            log.error("%d event phase(s) could not be stored before the store closed and are lost", left)


def _ended(ev: Event, reason: str, at_ns: int | None) -> Event:
    """The ``end`` phase of a stored open incident (``put`` keeps the review state the store holds)."""
    end_ns = max(ev.at_ns if at_ns is None else int(at_ns), ev.start_ns)
    attrs: dict[str, Any] = {**ev.attributes, "end_reason": reason, "duration_s": round((end_ns - ev.start_ns) / 1e9, 3)}
    clip = ev.clip
    if clip is not None and clip.end_ns is None:
        clip = replace(clip, end_ns=end_ns + clip.post_roll_ns)
    return replace(ev, phase="end", seq=ev.seq + 1, end_ns=end_ns, at_ns=max(end_ns, ev.at_ns), attributes=attrs, clip=clip)
