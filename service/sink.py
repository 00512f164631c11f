"""``StoreSink``: the pipeline's events land in the event store, then go to any publishers.

Order per event: the snapshot JPEG is written under the media folder, then the event is committed to the store,
then publishers (MQTT, WebSocket, ...) are called. A publisher never sees an event the store does not hold, and a
failing publisher does not lose the event.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

from seawatch.service.store import EventStore
from seawatch.vision.events import Event

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")
Publisher = Callable[[Event], None]


class StoreSink:
    """A ``vision.events.Sink`` writing to an :class:`EventStore` (snapshots to ``media_dir/snapshots``)."""

    def __init__(self, store: EventStore, media_dir: str | Path, publishers: list[Publisher] | None = None) -> None:
        self.store = store
        self.media_dir = Path(media_dir)
        self.publishers: list[Publisher] = list(publishers or [])
        self.stored = 0
        self.errors = 0

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
        try:
            applied = self.store.put(ev)
        except Exception:  # noqa: BLE001 - the pipeline must keep running; the failure is logged and counted
            self.errors += 1
            log.exception("event %s (%s %s on %s) could not be stored", ev.id, ev.type, ev.phase, ev.source_id)
            return
        if not applied:
            return
        self.stored += 1
        for publish in self.publishers:
            try:
                publish(ev)
            except Exception:  # noqa: BLE001
                log.exception("publisher %r failed on event %s", publish, ev.id)

    def close(self) -> None:
        pass
