"""``LiveHub``: fan-out of live messages (stored events, review changes) from any thread to WebSocket clients.

Each subscriber owns a bounded asyncio queue on its event loop; ``publish`` is thread-safe (the pipeline thread
calls it after the store committed) and never blocks: a slow client loses its oldest messages, counted in
``dropped``, rather than holding up the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, loop: asyncio.AbstractEventLoop, max_queue: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queue)
        self.dropped = 0

    def _offer(self, message: dict[str, Any]) -> None:  # runs on the subscriber's loop
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)


class LiveHub:
    def __init__(self, max_queue: int = 256) -> None:
        self.max_queue = max_queue
        self._subs: set[Subscription] = set()
        self._listeners: list = []
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self) -> Subscription:
        """Call from the coroutine that will read the queue."""
        sub = Subscription(asyncio.get_running_loop(), self.max_queue)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def add_listener(self, fn) -> None:
        """``fn(message)`` is called in the publishing thread for every message (MQTT); it must not block long."""
        self._listeners.append(fn)

    def publish(self, message: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs)
        self.published += 1
        for fn in self._listeners:
            try:
                fn(message)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the others or the caller
                log.exception("live listener %r failed", fn)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub._offer, message)
            except RuntimeError:  # its loop is closed: the client is gone
                self.unsubscribe(sub)

    def publish_event(self, event, kind: str = "event") -> None:
        """A domain ``Event`` as ``{"kind": kind, "event": <EventOut JSON>}`` (a StoreSink publisher)."""
        from seawatch.service.schemas import EventOut

        self.publish({"kind": kind, "event": EventOut.from_event(event).model_dump(mode="json")})
