"""A bounded frame queue with a named overflow policy and counted drops.

Live sources use ``DROP_OLDEST``: when the consumer is slow the oldest frame goes, so latency never grows.
Files use ``BLOCK``: the reader waits (in short, stop-aware steps) and nothing is lost.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class OverflowPolicy(str, enum.Enum):
    DROP_OLDEST = "drop_oldest"
    BLOCK = "block"


class QueueClosed(Exception):
    """The queue was closed (the source stopped) and is empty."""


class FrameQueue(Generic[T]):
    """Thread-safe bounded FIFO. ``dropped`` counts items discarded by ``DROP_OLDEST``.

    ``notify``: an event set after every put, so one consumer can wait for "a frame from any source" on one event
    instead of waiting on each queue in turn (a dead camera's empty queue would otherwise hold up the others).
    """

    def __init__(self, maxsize: int, policy: OverflowPolicy | str = OverflowPolicy.DROP_OLDEST,
                 notify: threading.Event | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self.policy = OverflowPolicy(policy)
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.skipped = 0
        self.put_count = 0
        self.notify = notify

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T, timeout_s: float | None = None, stop: threading.Event | None = None) -> bool:
        """Add an item. Returns False if it was not added (BLOCK timed out, stop was set, or the queue is closed)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            if self._closed:
                return False
            if self.policy is OverflowPolicy.DROP_OLDEST:
                while len(self._items) >= self.maxsize:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.maxsize:
                    if self._closed or (stop is not None and stop.is_set()):
                        return False
                    wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                    if wait <= 0:
                        return False
                    self._cond.wait(wait)
            self._items.append(item)
            self.put_count += 1
            self._cond.notify_all()
        if self.notify is not None:
            self.notify.set()
        return True

    def get(self, timeout_s: float | None = None) -> T | None:
        """Oldest item, or None after ``timeout_s``. Raises :class:`QueueClosed` once closed and drained."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._items:
                if self._closed:
                    raise QueueClosed()
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                self._cond.wait(wait)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def get_latest(self, timeout_s: float | None = None) -> T | None:
        """The newest item, discarding older ones (counted in ``skipped``, not ``dropped``: the consumer chose it).

        What a detector that batches the newest frame of each source wants.
        """
        first = self.get(timeout_s)
        if first is None:
            return None
        with self._cond:
            if self._items:
                self.skipped += len(self._items)  # the first one and all but the newest of the rest
                first = self._items.pop()
                self._items.clear()
                self._cond.notify_all()
            return first

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.notify is not None:
            self.notify.set()  # a waiting consumer learns at once that this source ended
