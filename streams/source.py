"""One reader thread per source: open with timeouts, demux, decode, time-stamp, queue; reconnect by itself.

State machine (``SourceStatus.state``)::

    connecting -> online -> offline -> online -> ...          (live: retries for ever, capped exponential backoff
                                                              + jitter; connecting only before the first connect)
    connecting -> online -> ended                             (a file that is not looped, read to the end)
    connecting -> failed                                      (a file that is missing, truncated or not video)
    any -> stopped                                            (stop() was called)

A live source that is down stays ``offline`` through all its retries (no connecting/offline flapping): its status
says since when (``down_since_ns``), how many attempts in a row failed (``attempts``) and the last error. The first
failure is logged at WARNING, repeats at DEBUG with a WARNING summary every ``DOWN_SUMMARY_S`` ("still down for 35
min, 412 attempts, last error ..."), and the return at INFO ("back after 35 min"). Short outages reconnect fast
(``backoff_max_s``); after ``backoff_long_after_s`` down the cap stretches to ``backoff_long_max_s``, so a camera
gone for the night costs a few hundred attempts an hour, not thousands.

Every FFmpeg call runs with an open and a read timeout (PyAV blocks forever on a hung RTSP server without one).
On top of that a watchdog thread per source treats "no packet for ``stall_timeout_s``" as a failure: the source
goes ``offline`` at once and a fresh worker reconnects, while the stuck worker is abandoned and exits when its
FFmpeg timeout fires (a blocked FFmpeg call cannot be interrupted from another thread safely).

Encoded packets go to the optional pre-event ring and segment recorder before decoding, so recording costs no
decode. Decoded frames go through the optional motion gate (on the luma plane, before any BGR conversion) and
into the bounded frame queue still in YUV (:class:`~seawatch.streams.frame.DecodedFrame`): H.264 needs every frame
decoded, but only the frames a consumer takes are converted to BGR (:meth:`Source.read`, :class:`FrameScheduler`
after its ``due`` test), so the conversion of frames dropped from the queue or not due for analysis (23 of 25 at
``analysis_fps: 2``; it costs as much as decoding at 720p) is never paid. ``analysis_fps`` goes further for readers
that take every queued frame (files): only one frame per ``1 / analysis_fps`` s of capture time is queued at all.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from seawatch.errors import InputError, StreamError
from seawatch.streams.clock import StreamClock
from seawatch.streams.frame import DecodedFrame, Frame
from seawatch.streams.frame_queue import FrameQueue, OverflowPolicy, QueueClosed
from seawatch.streams.motion import MotionGate, luma_plane
from seawatch.streams.packets import (
    AccessUnitAssembler,
    EncodedPacket,
    PacketRing,
    StreamInfo,
    continues_picture,
    param_sets,
)
from seawatch.streams.urls import redact_text, redact_url, source_kind

log = logging.getLogger(__name__)


class State(str, enum.Enum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    ENDED = "ended"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """How to read one source. Durations in seconds.

    Attributes:
        source_id: the configured id (appears in frames, logs and status).
        url: ``rtsp://``, ``http(s)://`` (MJPEG), ``udp://`` (drone H.264 / MPEG-TS) or a file path.
        kind: ``rtsp`` / ``mjpeg`` / ``udp`` / ``file``; inferred from the URL when None.
        rtsp_transport: ``tcp`` (interleaved) or ``udp``.
        input_format: force an FFmpeg demuxer (``mpjpeg``, ``h264``, ``mpegts``...), else probed.
        loop: files only: start again at the end (capture times keep increasing).
        pace: files only: ``realtime`` (frames released at their PTS) or ``fast`` (as fast as decoded).
        open_timeout_s, read_timeout_s: passed to FFmpeg for every open and every read.
        stall_timeout_s: watchdog: no packet for this long means the source is stalled.
        backoff_initial_s, backoff_max_s, backoff_jitter: reconnect delay = min(max, initial * 2**n) * (1 ± jitter)
            after the n-th failed attempt in a row.
        backoff_long_after_s, backoff_long_max_s: once the source has been down this long, the cap is
            ``backoff_long_max_s`` instead (fewer attempts, sockets and log lines for a camera that is gone for long).
        queue_size: frames held for the consumer (live default 2, file default 8).
        decode_threads: FFmpeg decoder threads per source (1 is cheapest per stream and lowest latency).
        decode: ``all`` frames, ``keyframes`` only, or ``auto`` (keyframes only while the motion gate sees no
            motion for ``idle_keyframes_after_s``; needs a gate).
        start_time_ns: files: UTC ns of the file's first frame; default: the time the reader starts.
        max_lag_s: live only: when packets arrive this much later than the stream clock says (decoding cannot keep
            up, e.g. an overloaded machine), only keyframes are decoded until the lag is under a quarter of it, so
            latency does not grow; the skipped frames count as drops.
        analysis_fps: frames per second of capture time the consumer analyses; decoded frames between them are
            not converted to BGR nor queued (counted in ``frames_skipped_rate``). None: every frame is queued.
    """

    source_id: str
    url: str
    kind: str | None = None
    rtsp_transport: str = "tcp"
    input_format: str | None = None
    loop: bool = False
    pace: str = "realtime"
    open_timeout_s: float = 5.0
    read_timeout_s: float = 3.0
    stall_timeout_s: float = 4.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 2.0
    backoff_jitter: float = 0.25
    backoff_long_after_s: float = 60.0
    backoff_long_max_s: float = 15.0
    queue_size: int | None = None
    decode_threads: int = 1
    decode: str = "all"
    idle_keyframes_after_s: float = 10.0
    max_lag_s: float = 1.0
    start_time_ns: int | None = None
    analysis_fps: float | None = None

    def __post_init__(self) -> None:
        if not self.source_id:
            raise InputError("source id must not be empty")
        if self.analysis_fps is not None and not self.analysis_fps > 0:
            raise InputError(f"source {self.source_id}: analysis_fps must be > 0 or None, not {self.analysis_fps!r}")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise InputError(f"source {self.source_id}: rtsp_transport must be tcp or udp, not {self.rtsp_transport!r}")
        if self.pace not in ("realtime", "fast"):
            raise InputError(f"source {self.source_id}: pace must be realtime or fast, not {self.pace!r}")
        if self.decode not in ("all", "keyframes", "auto"):
            raise InputError(f"source {self.source_id}: decode must be all, keyframes or auto, not {self.decode!r}")
        for name in ("open_timeout_s", "read_timeout_s", "stall_timeout_s", "backoff_initial_s", "backoff_max_s",
                     "backoff_long_max_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"source {self.source_id}: {name} must be > 0")
        if self.resolved_kind not in ("rtsp", "mjpeg", "udp", "file"):
            raise InputError(f"source {self.source_id}: unknown kind {self.kind!r}")

    @property
    def resolved_kind(self) -> str:
        return self.kind or source_kind(self.url)

    @property
    def is_live(self) -> bool:
        return self.resolved_kind != "file"

    @property
    def takes_newest(self) -> bool:
        """Whether the consumer takes the newest frame and a full queue drops the oldest, as a camera does: live
        streams, and files played in real time (``pace: realtime``: a file played as a camera is never held back
        by a slow consumer, so it keeps to the wall clock and its capture times stay true). A file read as fast as
        it decodes keeps every frame: its reader waits for the consumer."""
        return self.is_live or self.pace == "realtime"

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A snapshot of one source, safe to log or serve (the URL is redacted).

    ``since_ns``: when ``state`` last changed. ``down_since_ns``: UTC ns of the failure that took a live source
    down (its first failed attempt), None while it is up; ``attempts``: connection attempts that failed in a row
    since then (0 while up). Both are cleared when frames come again.
    """

    source_id: str
    url: str
    state: State
    since_ns: int
    last_error: str | None = None
    down_since_ns: int | None = None
    attempts: int = 0
    connects: int = 0
    reconnects: int = 0
    stalls: int = 0
    frames_decoded: int = 0
    frames_queued: int = 0
    frames_gated_out: int = 0
    drops: int = 0
    decode_errors: int = 0
    frames_skipped_late: int = 0
    frames_skipped_by_consumer: int = 0
    frames_skipped_rate: int = 0
    packets: int = 0
    last_capture_ns: int | None = None
    last_receive_ns: int | None = None
    decode_mode: str = "all"

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["state"] = self.state.value
        return d


class _Abandoned(Exception):
    """This worker was replaced by the watchdog; leave quietly."""


class _Permanent(Exception):
    """An error retrying cannot fix (a file that is missing or not video)."""


def backoff_delay_s(attempt: int, initial_s: float, max_s: float, jitter: float, rng: random.Random) -> float:
    """Capped exponential backoff with +-jitter (fraction) so many cameras do not reconnect in lockstep."""
    base = min(max_s, initial_s * (2 ** min(attempt, 30)))
    return max(0.0, base * (1.0 + rng.uniform(-jitter, jitter)))


def open_input(config: SourceConfig):
    """Open a source with FFmpeg (PyAV) with open/read timeouts. Raises :class:`StreamError` / :class:`InputError`."""
    import av

    kind = config.resolved_kind
    options: dict[str, str] = {}
    if kind == "rtsp":
        # less probing = faster (re)connect; the stream declares its codec in the SDP anyway
        # little probing: the SDP and SPS already give codec and size; open takes ~0.5 s instead of ~1.5 s
        options.update(rtsp_transport=config.rtsp_transport, analyzeduration="300000", probesize="65536")
    elif kind == "udp":
        options.update(fifo_size="1000000", overrun_nonfatal="1", analyzeduration="1000000")
    elif kind == "mjpeg":
        options.update(analyzeduration="500000")
    if kind == "file":
        path = Path(config.url)
        if not path.exists():
            raise _Permanent(InputError(f"source {config.source_id}: file not found: {path}"))
        if path.is_dir():
            raise _Permanent(InputError(f"source {config.source_id}: {path} is a folder, not a video file"))
        if path.stat().st_size == 0:
            raise _Permanent(InputError(f"source {config.source_id}: {path} is empty (0 bytes)"))
    try:
        container = av.open(
            config.url,
            format=config.input_format,
            options=options,
            timeout=(config.open_timeout_s, config.read_timeout_s),
        )
    except av.FFmpegError as exc:
        msg = redact_text(str(exc), config.url)
        if kind == "file":
            raise _Permanent(
                InputError(f"source {config.source_id}: {config.url} is not a readable video (truncated or not a "
                           f"video file): {msg}")
            ) from exc
        raise StreamError(f"source {config.source_id}: cannot open {config.redacted_url}: {msg}") from exc
    if not container.streams.video:
        container.close()
        err = InputError(f"source {config.source_id}: {config.redacted_url} has no video stream")
        if kind == "file":
            raise _Permanent(err)
        raise err
    return container


DOWN_SUMMARY_S = 300.0  # while a source stays down, one WARNING summary per this many seconds (repeats: DEBUG)


def _duration_text(seconds: float) -> str:
    """A down time for a log line: 4.2 s, 12 min, 3.5 h."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


_RATE_SLACK_NS = 1_000_000  # = vision.pipeline.AnalysisRate.SLACK_NS (streams may not import vision)


class Source:
    """Reads one source in its own thread, with reconnect and a watchdog.

    Args:
        config: what to read.
        gate: optional motion gate; frames it skips are counted (``frames_gated_out``) and never converted to BGR.
        ring: optional pre-event buffer of encoded packets.
        recorder: optional packet sink with ``set_info(StreamInfo)``, ``push(EncodedPacket)``, ``close()``
            (e.g. :class:`~seawatch.streams.recording.SegmentRecorder`).
        stop: a shared stop signal (one for all sources); a private one otherwise.
        seed: random seed for the backoff jitter (tests).
        wakeup: an event set whenever this source queues a frame or ends (shared by the sources of one consumer:
            see :class:`FrameScheduler`).

    Consumers call :meth:`read` (or iterate) and :meth:`status`. Nothing a source does raises into the caller's
    thread; failures become status changes.
    """

    def __init__(
        self,
        config: SourceConfig,
        *,
        gate: MotionGate | None = None,
        ring: PacketRing | None = None,
        recorder=None,
        stop: threading.Event | None = None,
        seed: int | None = None,
        wakeup: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.gate = gate
        self.ring = ring
        self.recorder = recorder
        self._stop = stop if stop is not None else threading.Event()
        self._own_stop = threading.Event()
        size = config.queue_size or (2 if config.is_live else 8)
        policy = OverflowPolicy.DROP_OLDEST if config.takes_newest else OverflowPolicy.BLOCK
        self.frames: FrameQueue[DecodedFrame] = FrameQueue(size, policy, notify=wakeup)
        # the analysis rate: a frame is queued when its capture time reaches the next slot (1 ms slack, as
        # AnalysisRate, so a 25 fps stream analysed at 5 fps gives exactly every fifth frame)
        self._rate_step_ns = int(1e9 / config.analysis_fps) if config.analysis_fps else 0
        self._rate_next_ns = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # guards generation + status + emits
        self._gen = 0
        self._status = SourceStatus(config.source_id, config.redacted_url, State.CONNECTING, time.time_ns())
        self._progress_mono = time.monotonic()
        self._open_mono = time.monotonic()  # when the current worker's open began (the watchdog's open guard)
        self._down_mono: float | None = None  # monotonic twin of down_since_ns (backoff and log durations)
        self._summary_mono = 0.0  # when the last "still down" summary was logged
        self._seq = 0
        self._last_clock: StreamClock | None = None
        self._workers: list[threading.Thread] = []
        self._watchdog: threading.Thread | None = None
        self._decode_mode = "keyframes" if config.decode == "keyframes" else "all"
        self._file_anchor_ns: int | None = None
        self._file_loop_offset_s = 0.0
        self._phase = "opening"
        self._sink_info: StreamInfo | None = None  # what ring and recorder were told about the stream
        self._decoder = None  # this session's decoder (its picture size follows in-band SPS changes)

    # ------------------------------------------------------------------ public
    def start(self) -> "Source":
        if self._watchdog is not None:
            return self
        self._spawn_worker()
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.config.source_id}", daemon=True)
        self._watchdog.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop this source (not the shared signal). True if its threads ended within ``timeout_s``."""
        self._own_stop.set()
        with self._lock:
            self._gen += 1
        self.frames.close()
        deadline = time.monotonic() + timeout_s
        for t in [*self._workers, self._watchdog]:
            # a worker the watchdog has listed but not started yet (it is spawning one right now) cannot be joined;
            # it starts on an old generation and returns at once
            if t is not None and t is not threading.current_thread() and t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        if self.recorder is not None:
            self.recorder.close()
        self._set_state(State.STOPPED)
        return all(not t.is_alive() for t in [*self._workers, self._watchdog] if t is not None)

    def status(self) -> SourceStatus:
        with self._lock:
            return replace(self._status, drops=self._status.drops + self.frames.dropped,
                           frames_skipped_by_consumer=self.frames.skipped, decode_mode=self._decode_mode)

    def read(self, timeout_s: float = 1.0) -> Frame | None:
        """Next frame, or None after ``timeout_s``. Raises :class:`QueueClosed` when the source ended or stopped."""
        d = self.frames.get(timeout_s)
        return None if d is None else d.to_frame()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            try:
                d = self.frames.get(0.5)
            except QueueClosed:
                return
            if d is not None:
                yield d.to_frame()

    def __enter__(self) -> "Source":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or self._own_stop.is_set()

    # ------------------------------------------------------------------ internals
    def _set_state(self, state: State, error: str | None = None, **counters) -> None:
        with self._lock:
            self._set_state_locked(state, error, **counters)

    def _set_state_locked(self, state: State, error: str | None = None, *, now_ns: int | None = None,
                          **counters) -> None:
        s = self._status
        if s.state is State.STOPPED:
            return
        changes = dict(counters)
        if state is not s.state:
            changes.update(state=state, since_ns=time.time_ns() if now_ns is None else now_ns)
            if state is State.ONLINE and s.down_since_ns is not None:
                down_s = time.monotonic() - (self._down_mono if self._down_mono is not None else time.monotonic())
                log.info("source %s (%s): %s -> online: back after %s (%d failed attempt%s)", s.source_id, s.url,
                         s.state.value, _duration_text(down_s), s.attempts, "" if s.attempts == 1 else "s")
                changes.update(down_since_ns=None, attempts=0)
                self._down_mono = None
            elif error:
                log.warning("source %s (%s): %s -> %s: %s", s.source_id, s.url, s.state.value, state.value, error)
            else:
                log.info("source %s (%s): %s -> %s", s.source_id, s.url, s.state.value, state.value)
        if error is not None:
            changes["last_error"] = error
        self._status = replace(s, **changes)

    def _failed_locked(self, error: str, **counters) -> None:
        """One failed attempt (under ``_lock``). The first takes the source offline (WARNING, ``down_since_ns`` set);
        the repeats keep it offline, count ``attempts`` and log at DEBUG, with a WARNING summary every
        ``DOWN_SUMMARY_S``."""
        s = self._status
        if s.state is State.STOPPED:
            return
        now = time.monotonic()
        first = s.down_since_ns is None
        if first:
            self._down_mono = self._summary_mono = now
        now_ns = time.time_ns()
        down_since_ns = now_ns if first else s.down_since_ns
        self._set_state_locked(State.OFFLINE, error, now_ns=now_ns, attempts=s.attempts + 1,
                               down_since_ns=down_since_ns, **counters)
        if first and s.state is not State.OFFLINE:
            return  # the state change logged it
        if now - self._summary_mono >= DOWN_SUMMARY_S:
            self._summary_mono = now
            log.warning("source %s (%s): still down for %s, %d attempts, last error: %s", s.source_id, s.url,
                        _duration_text(now - self._down_mono), s.attempts + 1, error)
        else:
            log.debug("source %s: attempt %d failed: %s", s.source_id, s.attempts + 1, error)

    def _retry_delay_s(self) -> float:
        """Backoff before the next attempt (under ``_lock``): exponential in the failures so far, capped at
        ``backoff_max_s``, or ``backoff_long_max_s`` once the source has been down ``backoff_long_after_s``."""
        cfg = self.config
        down_s = 0.0 if self._down_mono is None else time.monotonic() - self._down_mono
        cap = cfg.backoff_max_s
        if down_s >= cfg.backoff_long_after_s:
            cap = max(cap, cfg.backoff_long_max_s)
        return backoff_delay_s(self._status.attempts, cfg.backoff_initial_s, cap, cfg.backoff_jitter, self._rng)

    BEHIND_LOG_INTERVAL_S = 300.0  # a stream that keeps falling behind: one WARNING, then one summary per interval

    def _log_behind(self, lag_s: float) -> None:
        """The stream fell behind (keyframes only until it catches up): a WARNING the first time and then at most one
        per ``BEHIND_LOG_INTERVAL_S``, counting the times between (a 2-core machine analysing several cameras can fall
        behind and catch up again every few seconds; each time is also counted in ``frames_skipped_late``)."""
        now = time.monotonic()
        last = getattr(self, "_behind_logged_mono", None)
        self._behind_since_log = getattr(self, "_behind_since_log", 0) + 1
        if last is not None and now - last < self.BEHIND_LOG_INTERVAL_S:
            log.debug("source %s: %.1f s behind the stream; decoding keyframes only to catch up",
                      self.config.source_id, lag_s)
            return
        more = (f" (fell behind {self._behind_since_log} times in the last {(now - last) / 60:.0f} min)"
                if last is not None and self._behind_since_log > 1 else "")
        log.warning("source %s: %.1f s behind the stream; decoding keyframes only to catch up%s",
                    self.config.source_id, lag_s, more)
        self._behind_logged_mono, self._behind_since_log = now, 0

    def _bump(self, **deltas) -> None:
        with self._lock:
            s = self._status
            self._status = replace(s, **{k: getattr(s, k) + v for k, v in deltas.items()})

    def _spawn_worker(self) -> None:
        with self._lock:
            gen = self._gen
        t = threading.Thread(target=self._run, args=(gen,), name=f"reader-{self.config.source_id}-{gen}", daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()]
        self._workers.append(t)
        t.start()

    def _watch(self) -> None:
        cfg = self.config
        period = min(0.25, cfg.stall_timeout_s / 4)
        while not self.stopping:
            self._stop.wait(period)
            if self.stopping:
                break
            now = time.monotonic()
            with self._lock:
                state = self._status.state
                if state in (State.ENDED, State.FAILED, State.STOPPED):
                    return
                # by the worker's phase, not the state: a source that is down stays offline while it retries
                stalled_online = self._phase == "reading" and now - self._progress_mono > cfg.stall_timeout_s
                # PyAV's open timeout restarts on every I/O step, so guard the whole open as well
                stalled_open = (self._phase == "opening"
                                and now - self._open_mono > cfg.open_timeout_s + cfg.stall_timeout_s)
                if not (stalled_online or stalled_open):
                    continue
                self._gen += 1
                what = "no data" if stalled_online else "open did not finish"
                waited = now - (self._progress_mono if stalled_online else self._open_mono)
                self._failed_locked(f"stalled: {what} for {waited:.1f} s (watchdog)", stalls=self._status.stalls + 1)
                # the fresh worker starts opening at once
                self._phase = "opening"
                self._progress_mono = self._open_mono = now
            alive = sum(1 for w in self._workers if w.is_alive())
            if alive > 4:
                log.error("source %s: %d stuck reader threads still waiting for FFmpeg timeouts", cfg.source_id, alive)
            self._spawn_worker()

    def _current(self, gen: int) -> bool:
        return gen == self._gen and not self.stopping

    def _run(self, gen: int) -> None:
        cfg = self.config
        while self._current(gen):
            try:
                self._session(gen)
                if not self._current(gen):
                    return
                if not cfg.is_live:
                    self._finish(gen, State.ENDED, None)
                    return
                err = "stream ended (server closed the connection)"
            except _Abandoned:
                return
            except _Permanent as exc:
                self._finish(gen, State.FAILED, str(exc.args[0]))
                return
            except InputError as exc:
                if not cfg.is_live:
                    self._finish(gen, State.FAILED, str(exc))
                    return
                err = str(exc)
            except StreamError as exc:
                err = str(exc)
            except Exception as exc:  # noqa: BLE001 - FFmpeg/OS errors of every kind mean "reconnect"
                err = f"{type(exc).__name__}: {redact_text(str(exc), cfg.url)}"
            with self._lock:
                if gen != self._gen or self.stopping:
                    return
                # a session that brought frames went online, which cleared attempts: the backoff starts short again
                delay = self._retry_delay_s()
                self._failed_locked(f"{err}; retry in {delay:.1f} s")
                self._phase = "waiting"
            if self._wait_stopping(delay):
                return

    def _wait_stopping(self, delay_s: float) -> bool:
        """Wait ``delay_s`` (a reconnect backoff); True as soon as this source or the shared signal stops (a stop()
        of this source alone must not wait out a backoff of up to a minute)."""
        deadline = time.monotonic() + delay_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self.stopping
            if self._own_stop.wait(min(left, 0.1)) or self._stop.is_set():
                return True

    def _set_state_if_current(self, gen: int, state: State, error: str | None = None, **counters) -> None:
        with self._lock:
            if gen == self._gen:
                self._set_state_locked(state, error, **counters)

    def _finish(self, gen: int, state: State, error: str | None) -> None:
        with self._lock:
            if gen != self._gen:
                return
            self._set_state_locked(state, error)
        self.frames.close()

    def _emit_frame(self, gen: int, frame: Frame) -> None:
        """Queue a frame; BLOCK policy waits in short steps so stop and the watchdog stay responsive."""
        while True:
            with self._lock:
                if gen != self._gen:
                    raise _Abandoned()
            self._progress_mono = time.monotonic()
            if self.frames.put(frame, timeout_s=0.2, stop=self._own_stop):
                return
            if self.frames.closed or self.stopping:
                raise _Abandoned()

    def _session(self, gen: int) -> bool:
        """One connection: open, then read until EOF, error or abandonment. Returns True if frames came."""
        import av

        cfg = self.config
        with self._lock:
            if gen != self._gen:
                raise _Abandoned()
            self._phase = "opening"
            self._progress_mono = self._open_mono = time.monotonic()
        box = [open_input(cfg)]  # a looping file reopens: _pump replaces box[0], this closes the last one
        try:
            with self._lock:
                if gen != self._gen:
                    raise _Abandoned()
                self._phase = "reading"
                self._progress_mono = time.monotonic()
                s = self._status
                self._status = replace(s, connects=s.connects + 1, reconnects=s.reconnects + (1 if s.connects else 0))
            return self._pump(gen, box, av)
        finally:
            try:
                box[0].close()
            except Exception:  # noqa: BLE001
                pass

    def _pump(self, gen: int, box: list, av) -> bool:
        from seawatch.streams.recording import _annexb_filter, stream_info

        cfg = self.config
        live = cfg.is_live
        loops = 0
        loop_offset_s = 0.0
        got_frames = False
        anchor_mono = None
        first_pts_s = None
        # files: capture = fixed anchor + pts ; live: estimated from arrival times
        if live:
            clock = StreamClock()
        else:
            if self._file_anchor_ns is None:
                self._file_anchor_ns = cfg.start_time_ns if cfg.start_time_ns is not None else time.time_ns()
            clock = StreamClock(fixed_anchor_ns=self._file_anchor_ns)
        if self._last_clock is not None:
            clock.continue_from(self._last_clock)
        self._last_clock = clock
        if not live:
            loop_offset_s = self._file_loop_offset_s

        while True:
            container = box[0]
            stream = container.streams.video[0]
            ctx = stream.codec_context
            ctx.thread_count = max(1, int(cfg.decode_threads))
            ctx.thread_type = "SLICE" if cfg.decode_threads <= 1 else "AUTO"
            info = stream_info(stream)
            bsf = _annexb_filter(stream) if (self.ring is not None or self.recorder is not None) else None
            au = AccessUnitAssembler(info.codec_name)
            # Some senders repeat SPS/PPS before every slice of a multi-slice IDR picture, so FFmpeg's parser
            # returns the picture as several packets with one pts and the decoder would show only its last slice.
            # A live keyframe is therefore held until the next packet shows whether it continues (one frame of
            # delay once per GOP, instead of the decoder's "chunks" mode, which delays every frame).
            hold_keys = live and info.codec_name in ("h264", "hevc")
            held: list = [None]
            for sink in (self.ring, self.recorder):
                if sink is not None:
                    sink.set_info(info)
            self._sink_info, self._decoder = info, ctx
            tb = stream.time_base or Fraction(1, 90000)
            expected_frames = int(stream.frames or 0)
            n_frames_this_pass = 0
            last_pts_s = None
            frame_dur_s = float(1 / info.rate_fps) if info.rate_fps else 0.04
            clock.frame_s = frame_dur_s
            need_key = self._decode_mode == "keyframes"
            behind = False
            online = False
            read_error = None

            def frames_of(packet):
                try:
                    return ctx.decode(packet)
                except av.FFmpegError as exc:
                    self._bump(decode_errors=1, drops=1)
                    log.debug("source %s: decode error: %s", cfg.source_id, exc)
                    return []

            def decode_live(packet, decode_this: bool):
                out = []
                h = held[0]
                if h is not None:
                    held[0] = None
                    if packet is not None and packet.pts is not None and packet.pts == h.pts:
                        merged = _copy_packet(av, h, bytes(h) + bytes(packet))
                        return list(frames_of(merged))
                    out.extend(frames_of(h))
                if packet is None:
                    out.extend(frames_of(None))
                elif decode_this:
                    if hold_keys and packet.is_keyframe:
                        held[0] = _copy_packet(av, packet, bytes(packet))
                    else:
                        out.extend(frames_of(packet))
                return out

            # live: the packets FFmpeg buffered while probing come out in one burst (see _arrivals)
            if live:
                demux = self._arrivals(gen, container.demux(stream), clock, tb, frame_dur_s, info.codec_name)
            else:
                demux = ((p, time.time_ns(), False) for p in container.demux(stream))
            while True:
                try:
                    packet, recv_ns, observed = next(demux)
                except StopIteration:
                    break
                except av.FFmpegError as exc:
                    if live:
                        if isinstance(exc, av.ExitError):  # FFmpeg's "immediate exit requested": our timeout fired
                            why = f"no data for {cfg.read_timeout_s:g} s (read timeout)"
                        else:
                            why = redact_text(str(exc), cfg.url)
                        raise StreamError(f"source {cfg.source_id}: read failed: {why}") from exc
                    read_error = redact_text(str(exc), cfg.url)
                    break
                if not self._current(gen):
                    raise _Abandoned()
                self._progress_mono = time.monotonic()
                if packet.size == 0:
                    frames = decode_live(None, False) if not need_key else []
                else:
                    pts_s = None if packet.pts is None else float(packet.pts * tb) + loop_offset_s
                    dts_s = None if packet.dts is None else float(packet.dts * tb) + loop_offset_s
                    # files too: a splice (timestamps going back mid-file) starts a new segment of the clock
                    if not observed:
                        clock.observe(pts_s, recv_ns, dts_s)
                    if live and not observed:  # (held at connect: late by the probe's buffering, not by us)
                        lag_s = clock.lag_s(pts_s, recv_ns)
                        if not behind and lag_s > cfg.max_lag_s:
                            behind = True
                            self._log_behind(lag_s)
                        elif behind and lag_s < cfg.max_lag_s / 4:
                            behind = False
                            log.debug("source %s: caught up", cfg.source_id)
                    self._bump(packets=1)
                    key = bool(packet.is_keyframe)
                    mode = "keyframes" if behind else self._decode_mode
                    if behind and not key:
                        self._bump(frames_skipped_late=1, drops=1)
                    if mode == "keyframes" and not key:
                        need_key = True
                        frames = decode_live(packet, False)
                    elif need_key and not key:
                        frames = decode_live(packet, False)  # back to full decode: wait for a keyframe
                    else:
                        need_key = False
                        frames = decode_live(packet, True)
                    # after decoding: the bitstream filter takes the packet's data over
                    if self.ring is not None or self.recorder is not None:
                        self._sink_packet(gen, packet, bsf, pts_s, clock, recv_ns, tb, au)
                for vf in frames:
                    if vf.pts is None:
                        fpts_s = None
                    else:
                        fpts_s = float(vf.pts * (vf.time_base or tb)) + loop_offset_s
                    if not live and cfg.pace == "realtime" and fpts_s is not None:
                        if anchor_mono is None:
                            anchor_mono, first_pts_s = time.monotonic(), fpts_s
                        self._pace_until(gen, anchor_mono + (fpts_s - first_pts_s))
                        recv_ns = time.time_ns()  # a paced file frame is "received" when it is released
                    capture_ns = clock.capture_ns(fpts_s, recv_ns)
                    if fpts_s is not None:
                        last_pts_s = fpts_s
                    n_frames_this_pass += 1
                    got_frames = True
                    if not online:
                        online = True
                        self._set_state_if_current(gen, State.ONLINE)
                    self._deliver(gen, vf, capture_ns, recv_ns)
            # end of this pass over the input
            last_au = au.flush()
            if last_au is not None:
                self._push_sinks(gen, last_au)
            if not live:
                short = (
                    expected_frames > 0
                    and self._decode_mode == "all"
                    and cfg.decode == "all"
                    and n_frames_this_pass < expected_frames * 0.98
                )
                if read_error is not None or short:
                    detail = read_error or f"only {n_frames_this_pass} of {expected_frames} frames could be decoded"
                    raise _Permanent(InputError(f"source {cfg.source_id}: {cfg.url} is truncated or damaged: {detail}"))
                if cfg.loop and n_frames_this_pass > 0 and not self.stopping:
                    loops += 1
                    if last_pts_s is not None:
                        loop_offset_s = last_pts_s + frame_dur_s - (float(stream.start_time * tb) if stream.start_time else 0.0)
                    self._file_loop_offset_s = loop_offset_s
                    container.close()
                    box[0] = open_input(cfg)
                    continue
                if n_frames_this_pass == 0 and loops == 0:
                    raise _Permanent(InputError(f"source {cfg.source_id}: {cfg.url} holds no decodable video frames"))
            return got_frames

    # the connect burst is over when PACED_RUN packets in a row each arrive at least PACED_FRACTION of their timestamp
    # step after the one before (they came from the network live, not from FFmpeg's probe buffer; two, so one
    # thread switch inside the burst does not end it); whatever the timestamps do (stuck, going back, missing),
    # nothing is held longer than HOLD_MAX_S after the first packet arrived, or beyond HOLD_MAX_PACKETS
    PACED_FRACTION = 0.5
    PACED_RUN = 2
    HOLD_MAX_S = 1.0
    HOLD_MAX_PACKETS = 256

    def _arrivals(self, gen: int, demux, clock: StreamClock, tb, frame_dur_s: float, codec_name: str):
        """A live session's packets as ``(packet, receive_ns, observed)``, in demux order.

        Opening probes the stream (``analyzeduration``), and the packets FFmpeg buffered meanwhile come out of
        ``demux`` in one burst, all "received" within a millisecond: stamped one by one, the stream clock's offset
        (the smallest ``receive - pts`` so far) would only settle at the end of the burst, and the first frames of
        every connection would be squeezed a few ms apart. So the first packets are held and given to the clock
        (``observed=True``) until they arrive paced, then released: every one of them is stamped with the settled
        offset, i.e. on the stream's own clock. That costs about two frame intervals of delay, once per connect.
        The session's first packet often has no timestamp (RTSP: the IDR sent before the first RTP timestamp is
        mapped); a held packet without one before the first timed packet gets that packet's time minus one frame,
        or its very time when that packet continues the same picture (a multi-slice IDR split over two packets,
        which must then be decoded and recorded as one picture).
        """
        held: list[tuple[object, int]] = []
        holding = True
        prev_ts = None  # (receive_ns, timestamp s) of the newest timed packet held
        first_ts_s = None
        run = 0
        for packet in demux:
            recv_ns = time.time_ns()
            if not holding:
                yield packet, recv_ns, False
                continue
            if not self._current(gen):
                raise _Abandoned()
            self._progress_mono = time.monotonic()
            held.append((packet, recv_ns))
            if recv_ns - held[0][1] >= self.HOLD_MAX_S * 1e9 or len(held) >= self.HOLD_MAX_PACKETS:
                holding = False
                yield from self._release(held, tb, frame_dur_s, codec_name)
                held = []
                continue
            if not packet.size or packet.pts is None:
                if first_ts_s is None and len(held) >= 8:
                    holding = False  # no timestamps (raw H.264 over UDP, some MJPEG): arrival times are all there is
                    yield from self._release(held, tb, frame_dur_s, codec_name)
                    held = []
                continue
            pts_s = float(packet.pts * tb)
            dts_s = None if packet.dts is None else float(packet.dts * tb)
            clock.observe(pts_s, recv_ns, dts_s)
            ts_s = pts_s if dts_s is None else dts_s  # dts: decode order never steps back (B-frames do in pts)
            first_ts_s = ts_s if first_ts_s is None else first_ts_s
            paced = (prev_ts is not None and ts_s > prev_ts[1]
                     and recv_ns - prev_ts[0] >= self.PACED_FRACTION * (ts_s - prev_ts[1]) * 1e9)
            run = run + 1 if paced else 0
            prev_ts = (recv_ns, ts_s)
            if run >= self.PACED_RUN or abs(ts_s - first_ts_s) >= self.HOLD_MAX_S:
                holding = False
                yield from self._release(held, tb, frame_dur_s, codec_name)
                held = []
        yield from self._release(held, tb, frame_dur_s, codec_name)  # the stream ended while they were held

    @staticmethod
    def _release(held: list, tb, frame_dur_s: float, codec_name: str):
        k = next((i for i, (p, _) in enumerate(held) if p.size and p.pts is not None), None)
        untimed = [] if k is None else [p for p, _ in held[:k] if p.size and p.pts is None]
        if untimed:
            first = held[k][0]
            same_picture = codec_name in ("h264", "hevc") and continues_picture(bytes(first), codec_name)
            step = 0 if same_picture else max(1, int(round(frame_dur_s / tb)))
            for p in untimed:
                p.pts = first.pts - step
                p.dts = (first.dts if first.dts is not None else first.pts) - step
        for p, recv_ns in held:
            yield p, recv_ns, True  # the clock has seen them (an estimated time is not evidence: not fed to it)

    def _pace_until(self, gen: int, target_mono: float) -> None:
        while True:
            left = target_mono - time.monotonic()
            if left <= 0:
                return
            if self._stop.wait(min(left, 0.2)) or self._own_stop.is_set() or gen != self._gen:
                raise _Abandoned()
            self._progress_mono = time.monotonic()

    def _sink_packet(self, gen, packet, bsf, pts_s, clock: StreamClock, recv_ns: int, tb, au) -> None:
        out = bsf.filter(packet) if bsf is not None else [packet]
        t = clock.packet_ns(pts_s, recv_ns)  # the mapping its frame gets, across splices and re-anchors too
        for p in out:
            enc = au.push(EncodedPacket(bytes(p), p.pts, p.dts, tb, bool(p.is_keyframe), t))
            if enc is not None:
                self._push_sinks(gen, enc)

    def _push_sinks(self, gen: int, enc: EncodedPacket) -> None:
        with self._lock:
            if gen != self._gen:
                raise _Abandoned()
        if enc.is_keyframe:
            self._follow_picture_size(enc)
        if self.ring is not None:
            self.ring.push(enc)
        if self.recorder is not None:
            self.recorder.push(enc)

    def _follow_picture_size(self, key: EncodedPacket) -> None:
        """Before a keyframe goes to the ring and recorder: if the picture size changed mid-stream (new parameter sets
        in-band, e.g. the camera's resolution was changed without dropping the connection), they get the new stream
        info first, so the ring starts afresh and the recorder starts a new segment *at* this keyframe, which is
        kept. The decoder has already decoded this keyframe (packets are decoded before they go to the sinks, and
        the access-unit assembler hands a picture over one packet later), so its size is the keyframe's."""
        info, ctx = self._sink_info, self._decoder
        if info is None or ctx is None:
            return
        w, h = int(ctx.width or 0), int(ctx.height or 0)
        if w <= 0 or h <= 0 or (w, h) == (info.width_px, info.height_px):
            return
        changes: dict = dict(width_px=w, height_px=h)
        if info.codec_name in ("h264", "hevc"):
            params = param_sets(key.data, info.codec_name)
            if params:  # the old SPS must not be put in front of the new pictures
                changes.update(annexb_params=params, extradata=params)
        new = replace(info, **changes)
        log.info("source %s: picture size changed mid-stream %dx%d -> %dx%d; recording continues in a new segment",
                 self.config.source_id, info.width_px, info.height_px, w, h)
        for sink in (self.ring, self.recorder):
            if sink is not None:
                sink.set_info(new)
        self._sink_info = new

    def _deliver(self, gen: int, vf, capture_ns: int, recv_ns: int) -> None:
        cfg = self.config
        seq = self._seq
        self._seq += 1
        self._bump(frames_decoded=1)
        motion = None
        if self.gate is not None:
            motion = self.gate.update(luma_plane(vf), capture_ns)
            if cfg.decode == "auto":
                idle = self.gate.idle_for_s(capture_ns) >= cfg.idle_keyframes_after_s
                self._decode_mode = "keyframes" if idle else "all"
            if not motion.analyse:
                self._bump(frames_gated_out=1)
                return
        if self._rate_step_ns:
            if capture_ns + _RATE_SLACK_NS < self._rate_next_ns:
                self._bump(frames_skipped_rate=1)
                return
            self._rate_next_ns = capture_ns + self._rate_step_ns
        # not converted to BGR here: most live frames are dropped from the queue or not due for analysis
        self._emit_frame(gen, DecodedFrame(cfg.source_id, seq, vf, capture_ns, recv_ns, motion=motion))
        with self._lock:
            s = self._status
            self._status = replace(s, frames_queued=s.frames_queued + 1, last_capture_ns=capture_ns, last_receive_ns=recv_ns)


def _copy_packet(av, packet, data: bytes):
    """A packet that owns ``data``, with the timing and flags of ``packet``."""
    out = av.Packet(data)
    out.pts, out.dts, out.time_base = packet.pts, packet.dts, packet.time_base
    out.is_keyframe = packet.is_keyframe
    return out


class FrameScheduler:
    """Frames of many sources for the analysis workers (one or more consumer threads).

    :meth:`take` hands a worker the next source with a frame, round-robin from where the last one was handed out,
    and *claims* that source until the worker calls :meth:`release`: a source is analysed by one worker at a time,
    so its frames stay in capture order and its tracker sees them one by one, while a slow source (a tiled
    harbour camera) occupies one worker and the other workers serve the other cameras.

    A camera (``takes_newest``) gives its newest frame at the moment it is taken (older ones are skipped and counted
    as ``frames_skipped_by_consumer``), a file read fast its oldest. ``due(source_id, capture_time_ns)`` (e.g.
    ``AnalysisRate.due``) is asked before a frame is converted to BGR; frames it refuses are skipped unconverted.
    No queue is ever waited on: a worker that finds nothing waits on ``wakeup`` (set by every queue's put and
    close, and by :meth:`release`, as a released source may hold a frame that came while it was claimed), so a dead
    or stalled camera costs the others nothing. A source that ended is handed out once as ``(source_id, None)``
    and then left out.
    """

    def __init__(self, sources: Mapping[str, Source], wakeup: threading.Event,
                 due: Callable[[str, int], bool] | None = None) -> None:
        self._sources = dict(sources)
        self._order = list(self._sources)
        self._wakeup = wakeup
        self._due = due
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._cursor = 0

    @property
    def finished(self) -> bool:
        """Every source has ended and been handed out (and released)."""
        with self._lock:
            return not self._order and not self._claimed

    def _pick(self) -> tuple[str | None, Any, bool]:
        """Under the lock: (source id, decoded frame or None for an ended source, whether anything was taken).
        The id is None when no unclaimed source had a due frame."""
        n = len(self._order)
        taken = False
        for k in range(n):
            i = (self._cursor + k) % n
            sid = self._order[i]
            if sid in self._claimed:
                continue
            src = self._sources[sid]
            try:
                d = src.frames.get_latest(0) if src.config.takes_newest else src.frames.get(0)
            except QueueClosed:
                self._claimed.add(sid)
                del self._order[i]
                self._cursor = i % len(self._order) if self._order else 0
                return sid, None, True
            if d is None:
                continue
            taken = True  # due or not: a file's queue may hold more, with no put to come to wake anyone
            if self._due is None or self._due(sid, d.capture_time_ns):
                self._claimed.add(sid)
                self._cursor = (i + 1) % n
                return sid, d, True
        return None, None, taken

    def take(self, timeout_s: float) -> tuple[str, Frame | None] | None:
        """The next ``(source_id, frame)`` (``frame`` None: that source ended), its source claimed until
        :meth:`release`; None when nothing came within ``timeout_s`` or every source has ended."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                self._wakeup.clear()  # before looking: a frame queued during the pass sets it again
                sid, decoded, taken = self._pick()
                if sid is None and not self._order and not self._claimed:
                    return None
            if sid is not None:
                if decoded is None:
                    return sid, None
                try:
                    return sid, decoded.to_frame()  # the BGR conversion outside the lock: workers convert in parallel
                except BaseException:
                    self.release(sid)
                    raise
            if taken:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._wakeup.wait(left)

    def release(self, source_id: str) -> None:
        """The worker is done with the frame ``take`` gave it; the source may be handed out again."""
        with self._lock:
            self._claimed.discard(source_id)
        self._wakeup.set()


class SourceGroup:
    """Many sources with one stop signal; one failing never stops the others."""

    def __init__(self, sources: list[Source] | None = None) -> None:
        self.stop_event = threading.Event()
        self.wakeup = threading.Event()  # set when any source queues a frame (see FrameScheduler)
        self.sources: dict[str, Source] = {}
        for s in sources or []:
            self.add(s)

    def add(self, source: Source) -> Source:
        if source.config.source_id in self.sources:
            raise InputError(f"duplicate source id {source.config.source_id!r}")
        source._stop = self.stop_event
        source.frames.notify = self.wakeup
        self.sources[source.config.source_id] = source
        return source

    def start(self) -> "SourceGroup":
        for s in self.sources.values():
            s.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> bool:
        self.stop_event.set()
        ok = True
        deadline = time.monotonic() + timeout_s
        for s in self.sources.values():
            ok &= s.stop(max(0.1, deadline - time.monotonic()))
        return ok

    def status(self) -> dict[str, SourceStatus]:
        return {k: s.status() for k, s in self.sources.items()}

    def latest(self) -> dict[str, Frame]:
        """The newest frame of each source that has one now (for a detector batching across sources)."""
        out = {}
        for k, s in self.sources.items():
            try:
                d = s.frames.get_latest(0)
            except QueueClosed:
                continue
            if d is not None:
                out[k] = d.to_frame()
        return out

    def __enter__(self) -> "SourceGroup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
