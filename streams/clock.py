"""Mapping a stream's own clock (RTP/PTS) to UTC nanoseconds, monotonic per source.

Why not just stamp frames with ``time.time_ns()`` when Python gets them: the decoder, the network and the GIL add
tens of milliseconds of jitter, and a burst of buffered frames after (re)connecting would all get the same time.
The stream clock spaces frames exactly as the camera captured them; only its offset to UTC is unknown.

The offset is estimated as the *smallest* ``receive - pts`` seen so far: the frame that arrived with the least delay
bounds the offset best (the same idea NTP uses). The minimum is taken over a sliding window (60 s), so drift between
the camera's clock and ours is followed. It is re-anchored when the stream clock jumps (a server restart,
a file loop, a PTS wrap) and capture times are clamped so they never go backwards for a source.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime, timezone


def parse_utc_ns(text: str, what: str) -> int:
    """UTC ns of an ISO 8601 date or time given on the command line (``what`` names the option in the error); a time
    without a zone is UTC."""
    from seawatch.errors import InputError

    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{what}: {text!r} is not an ISO 8601 date or time (2026-07-16, 2026-07-16T12:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1e9)


class StreamClock:
    """Turns presentation timestamps (seconds, stream clock) into capture times (int ns UTC).

    Args:
        jump_s: a change of ``receive - pts`` larger than this (either way) is a clock discontinuity and re-anchors.
        window_s: the offset is the smallest ``receive - pts`` of this many seconds.
        fixed_anchor_ns: if given, capture = anchor + pts exactly (files: the anchor is the replay start or the
            file's recorded start time), and no estimation is done.
    """

    __slots__ = ("jump_s", "_offset_ns", "_fixed", "_last_ns", "reanchors", "_window", "_window_ns")

    def __init__(self, *, jump_s: float = 3.0, fixed_anchor_ns: int | None = None, window_s: float = 60.0) -> None:
        self.jump_s = float(jump_s)
        self._window: deque[tuple[int, int]] = deque()
        self._window_ns = int(window_s * 1e9)
        self._fixed = fixed_anchor_ns is not None
        self._offset_ns: int | None = fixed_anchor_ns
        self._last_ns: int | None = None
        self.reanchors = 0

    @property
    def offset_ns(self) -> int | None:
        """UTC ns of stream time 0, or None before the first observation."""
        return self._offset_ns

    def observe(self, pts_s: float | None, receive_ns: int) -> None:
        """Feed one (stream time, arrival time) pair; packets are best (they arrive before decode delay)."""
        if self._fixed or pts_s is None:
            return
        candidate = receive_ns - int(round(pts_s * 1e9))
        if self._offset_ns is not None and abs(candidate - self._offset_ns) > self.jump_s * 1e9:
            # discontinuity: the stream clock restarted or jumped; trust the new pair
            self.reanchors += 1
            self._window.clear()
        # sliding-window minimum (monotonic deque): the smallest delay of the last window_s seconds, so clock drift
        # between sender and receiver (tens of ppm) is followed instead of accumulating as apparent lag
        q = self._window
        while q and q[-1][1] >= candidate:
            q.pop()
        q.append((receive_ns, candidate))
        while q[0][0] < receive_ns - self._window_ns:
            q.popleft()
        self._offset_ns = q[0][1]

    def lag_s(self, pts_s: float | None, receive_ns: int) -> float:
        """How much later than the best-seen delay this packet arrived (0 without a clock): growing = falling behind."""
        if pts_s is None or self._offset_ns is None or self._fixed:
            return 0.0
        return (receive_ns - self._offset_ns - pts_s * 1e9) / 1e9

    def capture_ns(self, pts_s: float | None, receive_ns: int | None = None) -> int:
        """Capture time in UTC ns for a frame or packet, never earlier than the previous one (+1 ns).

        Without a usable pts (MJPEG, raw H.264 over UDP) the receive time is the best there is.
        """
        if receive_ns is None:
            receive_ns = time.time_ns()
        if pts_s is None or self._offset_ns is None:
            t = receive_ns
        else:
            t = self._offset_ns + int(round(pts_s * 1e9))
            if not self._fixed and t > receive_ns:
                # cannot have been captured after it arrived: the offset estimate is stale (clock drift)
                self._offset_ns -= t - receive_ns
                t = receive_ns
        if self._last_ns is not None and t <= self._last_ns:
            t = self._last_ns + 1
        self._last_ns = t
        return t

    def continue_from(self, other: "StreamClock") -> None:
        """Keep capture times monotonic across a reconnect (the new connection starts its own clock)."""
        if other._last_ns is not None:
            self._last_ns = other._last_ns if self._last_ns is None else max(self._last_ns, other._last_ns)
