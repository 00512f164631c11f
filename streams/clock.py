"""Mapping a stream's own clock (RTP/PTS) to UTC nanoseconds, monotonic per source.

Why not just stamp frames with ``time.time_ns()`` when Python gets them: the decoder, the network and the GIL add
tens of milliseconds of jitter, and a burst of buffered frames after (re)connecting would all get the same time.
The stream clock spaces frames exactly as the camera captured them; only its offset to UTC is unknown.

The offset is estimated as the *smallest* ``receive - pts`` seen so far: the frame that arrived with the least delay
bounds the offset best (the same idea NTP uses). The minimum is taken over a sliding window (60 s), so drift between
the camera's clock and ours is followed. It is re-anchored when the stream clock jumps (a server restart,
a file loop, a PTS wrap) or steps back by more than two frame intervals (a splice, live or in a file), and capture
times are clamped so they never go backwards for a source.
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
    try:
        ns = int(dt.timestamp() * 1e9)
    except (OverflowError, ValueError):
        ns = -1
    # times are int64 ns since 1970: before it nothing counts as a frame time, after 2262-04-11 it does not fit
    if not 0 <= ns < 2**63 - 10**9:
        raise InputError(f"{what}: {text!r} is outside the times Seawatch can record (1970-01-01 to 2262-04-11 UTC)")
    return ns


class StreamClock:
    """Turns presentation timestamps (seconds, stream clock) into capture times (int ns UTC).

    Args:
        jump_s: live: a change of ``receive - pts`` larger than this (either way) is a clock discontinuity and
            re-anchors.
        window_s: the offset is the smallest ``receive - pts`` of this many seconds.
        fixed_anchor_ns: if given, capture = anchor + pts exactly (files: the anchor is the replay start or the
            file's recorded start time), and no estimation is done; a splice (pts going back) still shifts it.
        frame_s: nominal frame interval in seconds (sets how far back a timestamp may step before it counts as a
            discontinuity: two frame intervals, at least 20 ms; 0.1 s when unknown).

    Discontinuities: besides ``jump_s``, timestamps stepping back by more than two frame intervals start a new
    *segment* with its own offset (live: re-estimated from arrival times; files: placed one frame after the
    latest time so far, as at a file loop). Packets are seen in decode order, where B-frames legitimately step
    pts back, so :meth:`observe` looks at dts (which never goes back in one stream). Frames come in presentation
    order, a little later than their packets: a frame keeps its segment's offset until its own pts shows the
    step, so frames still in the decoder when the packets crossed a splice are not moved.
    """

    __slots__ = ("jump_s", "frame_s", "_offsets", "_split_hw", "_fixed", "_last_ns", "reanchors", "_window",
                 "_window_ns", "_pkt_hw", "_pkt_dts", "_frame_pts")

    def __init__(self, *, jump_s: float = 3.0, fixed_anchor_ns: int | None = None, window_s: float = 60.0,
                 frame_s: float | None = None) -> None:
        self.jump_s = float(jump_s)
        self.frame_s = frame_s
        self._window: deque[tuple[int, int]] = deque()
        self._window_ns = int(window_s * 1e9)
        self._fixed = fixed_anchor_ns is not None
        # segments pending for the frames: [0] is the one frames use now, [-1] the one packets use now; each
        # entry of _split_hw is the highest packet pts of the segment before it (None for the first)
        self._offsets: list[int | None] = [fixed_anchor_ns]
        self._split_hw: list[float | None] = [None]
        self._pkt_hw: float | None = None
        self._pkt_dts: float | None = None
        self._frame_pts: float | None = None
        self._last_ns: int | None = None
        self.reanchors = 0

    @property
    def offset_ns(self) -> int | None:
        """UTC ns of stream time 0 for the newest packets, or None before the first observation."""
        return self._offsets[-1]

    def _backstep_s(self) -> float:
        """How far back a timestamp may step (presentation order, or dts) before it is a discontinuity."""
        return max(2.0 * self.frame_s, 0.02) if self.frame_s else 0.1

    def _split(self, pts_s: float, receive_ns: int, high_s: float | None) -> None:
        """Start a new segment at ``pts_s``; ``high_s``: the highest pts of the segment that ends here."""
        self.reanchors += 1
        if self._fixed:
            # a splice in a file: continue one frame after the latest picture, as a loop does
            step_s = 0.0 if high_s is None else high_s + (self.frame_s or 0.0) - pts_s
            new = self._offsets[-1] + int(round(step_s * 1e9))
        else:
            # the stream clock restarted or jumped; trust the new pair (set by the caller through _window_add)
            self._window.clear()
            new = None
        self._offsets.append(new)
        self._split_hw.append(high_s)
        if len(self._offsets) > 4:
            # splices closer together than the decoder's delay (a broken stream): do not let the list grow
            del self._offsets[0], self._split_hw[0]
        self._pkt_hw = None
        self._pkt_dts = None

    def _window_add(self, receive_ns: int, candidate: int) -> None:
        # sliding-window minimum (monotonic deque): the smallest delay of the last window_s seconds, so clock drift
        # between sender and receiver (tens of ppm) is followed instead of accumulating as apparent lag
        q = self._window
        while q and q[-1][1] >= candidate:
            q.pop()
        q.append((receive_ns, candidate))
        while q[0][0] < receive_ns - self._window_ns:
            q.popleft()
        self._offsets[-1] = q[0][1]

    def observe(self, pts_s: float | None, receive_ns: int, dts_s: float | None = None) -> None:
        """Feed one packet's (stream time, arrival time) pair, in decode order; packets are best (they arrive before
        decode delay). ``dts_s`` (decode time, same clock) finds splices without mistaking B-frames for one;
        without it only a pts step back of more than a second below the highest pts so far counts."""
        if pts_s is None:
            return
        if dts_s is not None and self._pkt_dts is not None:
            split = dts_s < self._pkt_dts - self._backstep_s()
        elif dts_s is None and self._pkt_hw is not None:
            split = pts_s < self._pkt_hw - max(self._backstep_s(), 1.0)
        else:
            split = False
        candidate = receive_ns - int(round(pts_s * 1e9))
        offset = self._offsets[-1]
        if not split and not self._fixed and offset is not None and abs(candidate - offset) > self.jump_s * 1e9:
            split = True
        if split:
            self._split(pts_s, receive_ns, self._pkt_hw)
        self._pkt_hw = pts_s if self._pkt_hw is None else max(self._pkt_hw, pts_s)
        if dts_s is not None:
            self._pkt_dts = dts_s
        if not self._fixed:
            self._window_add(receive_ns, candidate)

    def lag_s(self, pts_s: float | None, receive_ns: int) -> float:
        """How much later than the best-seen delay this packet arrived (0 without a clock): growing = falling behind."""
        offset = self._offsets[-1]
        if pts_s is None or offset is None or self._fixed:
            return 0.0
        return (receive_ns - offset - pts_s * 1e9) / 1e9

    def packet_ns(self, pts_s: float | None, receive_ns: int) -> int:
        """Capture time in UTC ns of the packet just given to :meth:`observe`: the same mapping its frame gets, not
        clamped (in decode order B-frames come before the later pictures they reference)."""
        offset = self._offsets[-1]
        if pts_s is None or offset is None:
            return receive_ns
        return offset + int(round(pts_s * 1e9))

    def _follow(self, pts_s: float, receive_ns: int) -> None:
        """Move the frames to the next segment once their presentation-order pts shows its start."""
        prev = self._frame_pts
        tol = self._backstep_s()
        if len(self._offsets) > 1:
            # every frame of the segment before the split has a packet at or below ``high``: a frame past it is
            # from the new segment (a forward jump, or a re-anchor on arrival times alone with pts running on)
            high = self._split_hw[1]
            if prev is None or pts_s < prev - tol or (high is not None and pts_s > high + 1e-6):
                del self._offsets[0], self._split_hw[0]
        elif prev is not None and pts_s < prev - tol:
            # a step back the packets did not show (a caller feeding frames only): the frames start it
            self._split(pts_s, receive_ns, prev)
            del self._offsets[0], self._split_hw[0]
            if not self._fixed:
                self._window_add(receive_ns, receive_ns - int(round(pts_s * 1e9)))

    def capture_ns(self, pts_s: float | None, receive_ns: int | None = None) -> int:
        """Capture time in UTC ns for a frame (presentation order), never earlier than the previous one (+1 ns).

        Without a usable pts (MJPEG, raw H.264 over UDP) the receive time is the best there is.
        """
        if receive_ns is None:
            receive_ns = time.time_ns()
        if pts_s is not None and self._offsets[0] is not None:
            self._follow(pts_s, receive_ns)
        if pts_s is None or self._offsets[0] is None:
            t = receive_ns
        else:
            self._frame_pts = pts_s
            t = self._offsets[0] + int(round(pts_s * 1e9))
            if not self._fixed and t > receive_ns and len(self._offsets) == 1:
                # cannot have been captured after it arrived: the offset estimate is stale (clock drift)
                self._offsets[0] -= t - receive_ns
                t = receive_ns
        if self._last_ns is not None and t <= self._last_ns:
            t = self._last_ns + 1
        self._last_ns = t
        return t

    def continue_from(self, other: "StreamClock") -> None:
        """Keep capture times monotonic across a reconnect (the new connection starts its own clock)."""
        if other._last_ns is not None:
            self._last_ns = other._last_ns if self._last_ns is None else max(self._last_ns, other._last_ns)
