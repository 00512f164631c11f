"""Mapping a stream's own clock (RTP/PTS) to UTC nanoseconds, monotonic per source.

Why not just stamp frames with ``time.time_ns()`` when Python gets them: the decoder, the network and the GIL add
tens of milliseconds of jitter, and a burst of buffered frames after (re)connecting would all get the same time.
The stream clock spaces frames exactly as the camera captured them; only its offset to UTC is unknown.

The offset is estimated as the *smallest* ``receive - pts`` seen so far: the frame that arrived with the least delay
bounds the offset best (the same idea NTP uses). It is re-anchored when the stream clock jumps (a server restart,
a file loop, a PTS wrap) and capture times are clamped so they never go backwards for a source.
"""

from __future__ import annotations

import time


class StreamClock:
    """Turns presentation timestamps (seconds, stream clock) into capture times (int ns UTC).

    Args:
        jump_s: a change of ``receive - pts`` larger than this (either way) is a clock discontinuity and re-anchors.
        fixed_anchor_ns: if given, capture = anchor + pts exactly (files: the anchor is the replay start or the
            file's recorded start time), and no estimation is done.
    """

    __slots__ = ("jump_s", "_offset_ns", "_fixed", "_last_ns", "reanchors")

    def __init__(self, *, jump_s: float = 3.0, fixed_anchor_ns: int | None = None) -> None:
        self.jump_s = float(jump_s)
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
        if self._offset_ns is None:
            self._offset_ns = candidate
            return
        delta_ns = candidate - self._offset_ns
        if abs(delta_ns) > self.jump_s * 1e9:
            # discontinuity: the stream clock restarted or jumped; trust the new pair
            self._offset_ns = candidate
            self.reanchors += 1
        elif delta_ns < 0:
            self._offset_ns = candidate

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
