"""A camera's real video for the operator UI: its H.264 remuxed (never re-encoded) into fragmented MP4 and sent over a
WebSocket (``/api/sources/{id}/video``) to Media Source Extensions in the browser.

One :class:`CameraMuxer` per camera that someone watches, started by its first viewer and stopped when its last one
leaves. It taps the camera's packet ring (:meth:`~seawatch.streams.packets.PacketRing.listen`: an append to a queue in
the reader's thread, nothing more, so the analysis path pays nothing) and muxes in its own thread with PyAV: one init
segment (``ftyp`` + ``moov``), then one fragment (``moof`` + ``mdat``) per picture (``frag_every_frame``: a picture
goes out when the next one arrives, one frame interval of delay, instead of a GOP's with one fragment per GOP). Every
viewer of the camera gets the same bytes.

A new viewer gets the init segment and starts at the newest keyframe: the GOP buffered now (the ring's when the muxer
starts, the muxer's own afterwards), so the first picture shows at once instead of after up to a GOP's wait. Each
viewer has a bounded queue (:data:`VIEWER_MAX_BYTES`, and fragments queued longer than :data:`VIEWER_MAX_LAG_S`): a
viewer that cannot keep up loses whole fragments, is told so (``{"kind": "resync"}``) and goes on at the next
keyframe; it never holds up the camera, the muxer or the other viewers. At most :data:`MAX_VIEWERS` video viewers in
all (each costs the service its bandwidth); more are refused with a reason, and the UI shows the analysed pictures.

Only H.264 is sent (what every browser's MSE plays). A camera sending anything else (H.265/HEVC, the default of most
current IP cameras, MJPEG...) is re-encoded to H.264 for its viewers (:class:`_Transcoder`): its packets, tapped from
the same ring, are decoded in the muxer's own thread, scaled down to at most ``service.live_video_transcode_width_px``
(1280 px wide by default, keeping the aspect, never up) and encoded with libx264 (``ultrafast``, ``zerolatency``, no
B-frames, a keyframe every :data:`TRANSCODE_KEYFRAME_S`, yuv420p, one picture per camera picture: the camera's frame
rate at most), then muxed and sent exactly as a remuxed camera's (init segment, the GOP for new viewers, per-viewer
queues, resync, close codes). The ``video`` message then also says ``"transcoded_from"`` (the camera's codec) and a
``"note"`` ("H.265 re-encoded to H.264") for the UI. When the encoder falls behind the camera by more than
:data:`TRANSCODE_BEHIND_S` it decodes keyframes only until it has caught up (fewer pictures, never a growing delay).

The cost is bounded: at most ``service.live_video_transcode_max`` cameras (default 2) are re-encoded at once, each only
while someone watches it; a viewer of one more is refused (4429, with a reason that says so: the UI shows the analysed
pictures and tries again). With 0 nothing is re-encoded and such a camera is refused with 4415, as before.

Why a second decode in the muxer's thread rather than the pictures the camera's reader already decodes for analysis:
that reader decodes only keyframes while the scene is idle (``decode: auto``), with ``decode: keyframes``, and while
analysis falls behind, so the video would turn into one picture per GOP exactly when the machine is busy; a tap in its
hot loop would also put the encoder's pace next to the analysis path. Decoding again costs the most of the three steps
but keeps the video whole and the reader untouched. Measured on this project's 2-core build machine (other jobs
running) for a 1080p H.265 camera at 25 fps (testsrc2, 5.5 Mbit/s), one thread per step: a :class:`CameraMuxer` fed
in real time takes 26 % of one core re-encoding to 1280x720 (22 % to 640x360, 30 % at 1920x1080), its output about
4 Mbit/s (the ``maxrate``). Per picture: decode 6.3 ms, scale 1.0 ms, encode 2.6 ms in a quiet moment, up to twice
that while the machine's other jobs ran; tapping the reader's pictures would have saved the decode, about 16 % of a
core per watched camera.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from seawatch.streams.packets import (
    EncodedPacket,
    PacketRing,
    StreamInfo,
    ensure_h264_params,
    is_annexb,
    iter_annexb_nals,
)

log = logging.getLogger(__name__)

VIDEO_CODECS = {"h264"}  # sent as they are (remuxed); anything else would need re-encoding
MAX_VIEWERS = 16  # video viewers of all cameras together
VIEWER_MAX_BYTES = 16 * 1024 * 1024  # queued for one viewer; beyond it whole fragments are dropped
VIEWER_MAX_LAG_S = 3.0  # a fragment queued this long for a viewer: it is not keeping up, its queue is dropped
GOP_KEEP_BYTES = 16 * 1024 * 1024  # the newest GOP kept for new viewers, up to this size (else they wait a keyframe)
TAP_MAX_PACKETS = 1000  # packets waiting for the muxer thread; beyond it (the muxer starved) they are dropped
FIRST_PICTURE_WAIT_S = 10.0  # a viewer that got no picture in this long is told the camera sends none now
TRANSCODE_MAX = 2  # cameras re-encoded to H.264 at once (service.live_video_transcode_max); 0: none, refused (4415)
TRANSCODE_WIDTH_PX = 1280  # re-encoded video at most this wide (service.live_video_transcode_width_px), aspect kept
TRANSCODE_KEYFRAME_S = 1.0  # a keyframe this often in the re-encoded video: a resync or a new GOP soon
TRANSCODE_BEHIND_S = 1.0  # the decoder this far behind the newest packet tapped: keyframes only until caught up
# libx264: the cheapest preset, no lookahead or frame delay (one picture in, one out), a bounded bit rate
TRANSCODE_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23", "maxrate": "4M", "bufsize": "8M"}

# WebSocket close codes (4000-4999: the application's own), each with a reason a person can read
CLOSE_UNAUTHORIZED = 4401
CLOSE_UNKNOWN = 4404
CLOSE_FORMAT_CHANGED = 4409  # the camera's picture size or codec changed: connect again for the new init segment
CLOSE_CODEC = 4415  # the camera's codec cannot be sent without re-encoding
CLOSE_BUSY = 4429
CLOSE_NO_VIDEO = 4503  # this service reads no video for the camera
CLOSE_NOT_YET = 4504  # the camera sent no picture within FIRST_PICTURE_WAIT_S (offline, starting)

MUX_TICKS_PER_S = 90000  # the muxed timestamps' clock (streams.recording.MUX_TIME_BASE)
_MUX_OPTIONS = {"movflags": "frag_every_frame+empty_moov+default_base_moof", "flush_packets": "1"}
_CODEC_NAMES = {"mjpeg": "MJPEG", "hevc": "H.265 (HEVC)", "mpeg4": "MPEG-4 Part 2", "vp8": "VP8", "vp9": "VP9",
                "av1": "AV1", "mpeg2video": "MPEG-2"}


class VideoRefused(Exception):
    """A viewer is refused: ``code`` (a WebSocket close code above) and ``reason`` (at most 123 bytes, as a close
    frame allows)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason.encode()[:123].decode(errors="ignore")


def codec_refusal(codec_name: str, transcode: bool = False) -> str | None:
    """Why a camera's video cannot be sent (None: it can): not H.264 and ``transcode`` (re-encoding) is off, or a
    codec this FFmpeg cannot decode."""
    if codec_name in VIDEO_CODECS:
        return None
    name = _CODEC_NAMES.get(codec_name, codec_name or "an unknown codec")
    if not transcode:
        return (f"the camera sends {name}, not H.264, and live video re-encoding is off "
                "(service.live_video_transcode_max: 0)")
    if not _decodable(codec_name):
        return f"the camera sends {name}, not H.264, which this service cannot decode to re-encode"
    return None


def transcode_busy(codec_name: str, limit: int) -> str:
    """The reason a viewer of one camera more than ``limit`` re-encoded at once is refused."""
    name = _CODEC_NAMES.get(codec_name, codec_name or "an unknown codec")
    return (f"the camera sends {name}; {limit} camera{'s are' if limit != 1 else ' is'} re-encoded to H.264 already "
            "(service.live_video_transcode_max)")


def transcode_note(codec_name: str) -> str:
    """``"H.265 re-encoded to H.264"``: what the UI says over a re-encoded camera's video."""
    name = _CODEC_NAMES.get(codec_name, codec_name or "video").split(" (")[0]
    return f"{name} re-encoded to H.264"


def _decodable(codec_name: str) -> bool:
    import av

    try:
        av.Codec(codec_name, "r")
    except Exception:  # noqa: BLE001 - PyAV raises several kinds for an unknown name
        return False
    return True


def scaled_size(width_px: int, height_px: int, max_width_px: int) -> tuple[int, int]:
    """The re-encoded picture size: at most ``max_width_px`` wide, the aspect kept, never scaled up, both even (as
    yuv420p needs), at least 2x2."""
    w = max(2, min(width_px, max_width_px) // 2 * 2)
    h = height_px * w / width_px if width_px > 0 else height_px
    return w, max(2, int(round(h / 2)) * 2)


class TranscodeSlots:
    """At most ``limit`` cameras re-encoded at once: a muxer takes a slot before it decodes and gives it back when it
    stops or its camera turns out to send H.264. Thread-safe."""

    def __init__(self, limit: int = TRANSCODE_MAX) -> None:
        self.limit = limit
        self._owners: set = set()
        self._lock = threading.Lock()

    def acquire(self, owner) -> bool:
        with self._lock:
            if owner in self._owners:
                return True
            if len(self._owners) >= self.limit:
                return False
            self._owners.add(owner)
            return True

    def release(self, owner) -> None:
        with self._lock:
            self._owners.discard(owner)

    def room_for(self, source_id: str) -> bool:
        """Whether a viewer of ``source_id`` could be re-encoded now (a slot is free, or its camera holds one)."""
        with self._lock:
            return any(o.source_id == source_id for o in self._owners) or len(self._owners) < self.limit

    def __len__(self) -> int:
        with self._lock:
            return len(self._owners)


def avc_codec_string(annexb: bytes) -> str | None:
    """RFC 6381 ``avc1.PPCCLL`` (profile, constraint flags, level, in hex) from the first SPS in an Annex B buffer;
    None when it holds no SPS."""
    for header, pos in iter_annexb_nals(annexb, limit=32):
        if header & 0x1F == 7 and pos + 4 <= len(annexb):
            return "avc1." + annexb[pos + 1:pos + 4].hex().upper()
    return None


@dataclass(frozen=True, slots=True)
class Fragment:
    """One ``moof`` + ``mdat`` (one picture); ``keyframe``: decoding can start with it; ``clock`` (keyframes): the
    ``{"kind": "clock", "media_s", "capture_ns"}`` message sent before it, so a viewer can tell the capture time of
    the picture it shows (``capture_ns`` + the seconds played since ``media_s``, the keyframe's presentation time)."""

    data: bytes
    keyframe: bool
    clock: dict | None = None


def _take_boxes(buf: bytearray) -> list[tuple[bytes, bytes]]:
    """The complete top-level MP4 boxes at the start of ``buf`` as ``(type, whole box)``, removed from ``buf``."""
    out = []
    off = 0
    while len(buf) - off >= 8:
        size = int.from_bytes(buf[off:off + 4], "big")
        head = 8
        if size == 1:  # a 64-bit size follows the type
            if len(buf) - off < 16:
                break
            size, head = int.from_bytes(buf[off + 8:off + 16], "big"), 16
        if size < head:
            raise ValueError(f"MP4 box of size {size} in the muxer's output")
        if len(buf) - off < size:
            break
        out.append((bytes(buf[off + 4:off + 8]), bytes(buf[off:off + size])))
        off += size
    del buf[:off]
    return out


def _children(body: bytes):
    """(type, payload) of the boxes inside a container box's payload."""
    off = 0
    while off + 8 <= len(body):
        size = int.from_bytes(body[off:off + 4], "big")
        if size < 8:
            return
        yield body[off + 4:off + 8], body[off + 8:off + size]
        off += size


def _moof_samples(moof: bytes) -> int:
    """How many samples (pictures) a ``moof`` box's track runs hold."""
    n = 0
    for typ, body in _children(moof[8:]):
        if typ == b"traf":
            for t, run in _children(body):
                if t == b"trun" and len(run) >= 8:
                    n += int.from_bytes(run[4:8], "big")
    return n


class _Sink:
    """The file PyAV writes the MP4 into: a growing buffer the muxer thread cuts into boxes."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data) -> int:
        self.buf += data
        return len(data)

    def seekable(self) -> bool:
        return False


class Viewer:
    """One WebSocket's queue of what to send: ``("text", dict)``, ``("init", init segment)``, ``("bytes",
    fragment)``, ``("resync", dict)`` and at the end ``("close", (code, reason))``. Filled by the muxer thread, emptied by the WebSocket's coroutine with :meth:`take`.

    Bounded: fragments are dropped whole when the queue holds more than ``max_bytes`` or its oldest fragment waited
    more than ``max_lag_s``; then nothing is queued until the next keyframe, which comes after a ``resync`` message.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_bytes: int = VIEWER_MAX_BYTES,
                 max_lag_s: float = VIEWER_MAX_LAG_S) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._lock = threading.Lock()
        self._items: deque[tuple[str, Any, float]] = deque()
        self._bytes = 0
        self._wake_pending = False
        self.max_bytes = max_bytes
        self.max_lag_s = max_lag_s
        self.started = False  # got the init segment and a keyframe
        self.closed = False
        self.sent_fragments = 0
        self.dropped = 0  # fragments this viewer lost (slow)
        self._resync = False
        self._dropped_since = 0

    @property
    def queued_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def _wake(self) -> None:  # under the lock
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._event.set)
            except RuntimeError:  # its loop is closed: the client is gone
                self.closed = True

    def _append(self, kind: str, payload: Any) -> None:  # under the lock
        self._items.append((kind, payload, time.monotonic()))
        if kind in ("bytes", "init"):
            self._bytes += len(payload)

    def start(self, header: list[tuple[str, Any]], fragments: list[Fragment]) -> None:
        """The codec message and init segment, then fragments from a keyframe on."""
        with self._lock:
            if self.closed or self.started:
                return
            self.started = True
            for kind, payload in header:
                self._append(kind, payload)
            for f in fragments:
                if f.clock is not None:
                    self._append("clock", f.clock)
                self._append("bytes", f.data)
            self._wake()

    def offer(self, fragment: Fragment) -> None:
        """The next fragment, unless this viewer is behind (see the class docstring)."""
        with self._lock:
            if self.closed or not self.started:
                return
            if not self._resync:
                oldest = next((t for kind, _, t in self._items if kind == "bytes"), None)
                late = oldest is not None and time.monotonic() - oldest > self.max_lag_s
                if late or self._bytes + len(fragment.data) > self.max_bytes:
                    lost = sum(1 for kind, _, _ in self._items if kind == "bytes")
                    kept = [i for i in self._items if i[0] not in ("bytes", "resync", "clock")]  # the init stays
                    self._items = deque(kept)
                    self._bytes = sum(len(p) for kind, p, _ in kept if kind == "init")
                    self._resync = True
                    self._dropped_since = lost
                    self.dropped += lost
            if self._resync:
                if not fragment.keyframe:
                    self._dropped_since += 1
                    self.dropped += 1
                    return
                self._resync = False
                self._append("resync", {"kind": "resync", "dropped": self._dropped_since,
                                      "why": "this connection did not keep up: fragments were dropped, the video goes "
                                             "on at this keyframe"})
                self._dropped_since = 0
            if fragment.clock is not None:
                self._append("clock", fragment.clock)
            self._append("bytes", fragment.data)
            self._wake()

    def pending(self) -> list[tuple[str, Any]]:
        """A copy of what waits to be sent (diagnostics, tests)."""
        with self._lock:
            return [(kind, payload) for kind, payload, _ in self._items]

    def lost_fragments(self) -> None:
        """Fragments never reached this viewer (the muxer lost packets): go on at the next keyframe, after a resync."""
        with self._lock:
            self._resync = self._resync or self.started

    def close(self, code: int, reason: str) -> None:
        """Ends this viewer's connection (after what is queued) with ``code`` and ``reason``."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._items.append(("close", (code, reason.encode()[:123].decode(errors="ignore")), time.monotonic()))
            self._wake()

    async def take(self, timeout_s: float) -> list[tuple[str, Any]]:
        """What to send next: the messages up to and including one fragment (``[]`` when nothing came within
        ``timeout_s``). One fragment at a time, so what waits for a slow connection stays in the bounded queue, where
        it can be dropped, not in the sender's hands."""
        try:
            await asyncio.wait_for(self._event.wait(), max(0.0, timeout_s))
        except asyncio.TimeoutError:
            return []
        items = []
        with self._lock:
            while self._items:
                kind, payload, _ = self._items.popleft()
                items.append((kind, payload))
                if kind in ("bytes", "init"):
                    self._bytes -= len(payload)
                    self.sent_fragments += kind == "bytes"
                    break
            if not self._items:
                self._event.clear()
                self._wake_pending = False
        return items


class _Transcoder:
    """The decoding half of re-encoding (muxer thread only): a camera's packets (Annex B for H.265, a JPEG each for
    MJPEG) in, ``(picture, capture time ns or None)`` out. The pictures' ``pts`` are the camera's timeline in
    ``MUX_TIME_BASE`` ticks (:class:`~seawatch.streams.recording.Retimer`: its own spacing, reconnects bridged)."""

    def __init__(self, info: StreamInfo) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        from seawatch.streams.recording import Retimer

        self.ctx = av.CodecContext.create(info.codec_name, "r")
        if info.extradata and is_annexb(info.extradata):  # (an hvcC's parameter sets are in the keyframes instead)
            self.ctx.extradata = info.extradata
        self.ctx.thread_count = 1  # one core at most per camera, and no frame-threading delay
        self.ctx.thread_type = "SLICE"
        self.retimer = Retimer()
        self.scaler = VideoReformatter()
        self.errors = 0
        self._captures: dict[int, int] = {}

    def decode(self, p: EncodedPacket) -> list:
        import av

        from seawatch.streams.recording import MUX_TIME_BASE

        pts, dts = self.retimer.next(p)
        pkt = av.Packet(p.data)
        pkt.pts, pkt.dts, pkt.time_base = pts, dts, MUX_TIME_BASE
        pkt.is_keyframe = p.is_keyframe
        self._captures[pts] = p.capture_time_ns
        while len(self._captures) > 64:  # pictures the decoder never gave back (errors): forgotten
            del self._captures[next(iter(self._captures))]
        try:
            frames = self.ctx.decode(pkt)
        except av.FFmpegError as exc:
            self.errors += 1
            log.debug("live video: decode error: %s", exc)
            return []
        return [(f, self._captures.pop(f.pts, None) if f.pts is not None else None) for f in frames]


class CameraMuxer:
    """The live fragmented MP4 of one camera, for all its viewers (see the module docstring). Runs a thread from
    :meth:`start` to :meth:`stop`. ``slots``: the re-encoding budget shared by all cameras (None: none, a camera
    not sending H.264 is refused)."""

    def __init__(self, source_id: str, ring: PacketRing, slots: TranscodeSlots | None = None,
                 max_width_px: int = TRANSCODE_WIDTH_PX) -> None:
        self.source_id = source_id
        self.ring = ring
        self.slots = slots
        self.max_width_px = max_width_px
        self.refusal_code = CLOSE_CODEC
        self.transcoding = False  # this camera's video is re-encoded (it holds a slot)
        self.skipped_behind = 0  # packets not decoded because re-encoding fell behind the camera
        self._tc: _Transcoder | None = None
        self._newest_tap_ns: int | None = None  # capture time of the newest packet tapped (reader's thread)
        self._from_ring = False  # decoding the GOP the ring held when the muxer started
        self._behind = False  # re-encoding fell behind the camera: decoding waits for a keyframe
        self._out_size: tuple[int, int] | None = None  # the re-encoded picture size
        self._in_size: tuple[int, int] | None = None  # the decoded picture size it was opened for
        self._pts0 = 0
        self._last_pts = -1
        self._last_key_pts: int | None = None
        self._enc_captures: dict[int, int | None] = {}
        self._tap: deque = deque()
        self._tap_event = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # viewers, init segment, GOP
        self._viewers: set[Viewer] = set()
        self._thread: threading.Thread | None = None
        self.refusal: str | None = None
        self.info: StreamInfo | None = None
        self.codec: str | None = None
        self.fragments = 0  # made since start (for tests and stats)
        self.tap_overflows = 0
        self._out = None
        self._stream = None
        self._sink = _Sink()
        self._retimer = None
        # (keyframe flag, pts in MUX_TIME_BASE ticks, capture time) of muxed packets not yet seen in a fragment
        self._keys: deque[tuple[bool, int, int | None]] = deque()
        self._ftyp = b""
        self._header: list[tuple[str, Any]] | None = None
        self._moof: bytes | None = None
        self._gop: list[Fragment] = []
        self._gop_bytes = 0
        self._skip_to_key = False  # packets were lost (tap overflow): nothing muxed before the next keyframe

    # ---- viewers (any thread) -----------------------------------------------------------------------------------
    def join(self, viewer: Viewer) -> None:
        """Adds a viewer; it starts at once when a whole GOP is kept. Raises :class:`VideoRefused`."""
        with self._lock:
            if self.refusal is not None:
                raise VideoRefused(self.refusal_code, self.refusal)
            self._viewers.add(viewer)
            if self._header is not None and self._gop:
                viewer.start(self._header, self._gop)

    def leave(self, viewer: Viewer) -> int:
        """Removes a viewer; returns how many are left."""
        with self._lock:
            self._viewers.discard(viewer)
            return len(self._viewers)

    @property
    def viewers(self) -> int:
        with self._lock:
            return len(self._viewers)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _close_viewers(self, code: int, reason: str, only_started: bool = False) -> None:  # under the lock
        for v in list(self._viewers):
            if v.started or not only_started:
                v.close(code, reason)
                self._viewers.discard(v)

    # ---- the thread -----------------------------------------------------------------------------------------
    def start(self) -> "CameraMuxer":
        self._thread = threading.Thread(target=self._run, name=f"seawatch-live-video-{self.source_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 0.0) -> None:
        """Stops the thread (it unhooks from the ring within half a second; ``timeout_s`` > 0 waits for that)."""
        self._stop.set()
        self._tap_event.set()
        if self.slots is not None:  # (the thread may finish a picture meanwhile)
            self.slots.release(self)
        if timeout_s > 0 and self._thread is not None:
            self._thread.join(timeout_s)

    def _on_tap(self, item: EncodedPacket | StreamInfo) -> None:
        """The ring's listener: runs in the camera reader's thread, under the ring's lock, so it only queues."""
        if len(self._tap) >= TAP_MAX_PACKETS:  # the muxer thread is starved: start again at a keyframe
            self._tap.clear()
            self._tap.append(None)
        if isinstance(item, EncodedPacket):
            self._newest_tap_ns = item.capture_time_ns
        self._tap.append(item)
        self._tap_event.set()

    def _run(self) -> None:
        info, packets = self.ring.listen(self._on_tap)
        try:
            if info is not None:
                self._set_info(info)
            self._from_ring = True  # the GOP buffered: all of it decoded, the newest picture needs the ones before
            for p in packets:
                self._packet(p)
            self._from_ring = False
            while not self._stop.is_set():
                self._tap_event.wait(0.5)
                self._tap_event.clear()
                while self._tap and not self._stop.is_set():
                    item = self._tap.popleft()
                    if item is None:
                        self.tap_overflows += 1
                        log.warning("live video %s: the muxer fell behind the camera; going on at the next keyframe",
                                    self.source_id)
                        self._restart_at_keyframe()
                    elif isinstance(item, StreamInfo):
                        self._set_info(item)
                    else:
                        self._packet(item)
        except Exception:  # noqa: BLE001 - a viewer's problem, never the camera's: end the viewers, say why
            log.exception("live video %s: the muxer failed", self.source_id)
            with self._lock:
                self._close_viewers(1011, "the live video of this camera failed (logged on the server)")
        finally:
            self.ring.unlisten(self._on_tap)
            if self.slots is not None:
                self.slots.release(self)
            self._close_output()

    def _set_info(self, info: StreamInfo) -> None:
        old = self.info
        self.info = info
        same = old is not None and info.same_format(old) and info.annexb_params == old.annexb_params
        if same:
            return  # a reconnect: the timestamps are bridged (Retimer), the viewers go on
        refusal, code, transcode = None, CLOSE_CODEC, False
        if info.codec_name not in VIDEO_CODECS:
            limit = self.slots.limit if self.slots is not None else 0
            refusal = codec_refusal(info.codec_name, transcode=limit > 0)
            if refusal is None:
                transcode = self.slots.acquire(self)
                if not transcode:
                    refusal, code = transcode_busy(info.codec_name, limit), CLOSE_BUSY
        if not transcode and self.slots is not None:
            self.slots.release(self)
        with self._lock:
            self.refusal, self.refusal_code, self.transcoding = refusal, code, transcode
            if refusal is not None:
                self._close_viewers(code, refusal)
            elif self._header is not None:
                log.info("live video %s: the camera's video format changed; its viewers connect again", self.source_id)
                self._close_viewers(CLOSE_FORMAT_CHANGED, "the camera's video format changed: connect again",
                                    only_started=True)
        self._close_output()

    def _restart_at_keyframe(self) -> None:
        """After packets were lost: the output goes on at the next keyframe, and the viewers are told (resync). (When
        re-encoding only the decoder waits for the camera's next keyframe; the video goes on with a gap.)"""
        self._skip_to_key = True
        if self.transcoding:
            return
        with self._lock:
            for v in self._viewers:
                v.lost_fragments()

    def _close_output(self, keep_decoder: bool = False) -> None:
        if not keep_decoder:
            self._tc = None
        self._out_size = self._in_size = None
        self._last_pts, self._last_key_pts = -1, None
        self._enc_captures.clear()
        if self._out is not None:
            try:
                self._out.close()
            except Exception:  # noqa: BLE001 - the trailer of an output nobody reads any more
                pass
        self._out = self._stream = None
        self._sink = _Sink()
        self._keys.clear()
        self._moof = None
        self._ftyp = b""
        with self._lock:
            self._header = None
            self._gop, self._gop_bytes = [], 0

    def _open_output(self, key: EncodedPacket) -> None:
        import av

        from seawatch.streams.recording import MUX_TIME_BASE, Retimer

        info = self.info
        self._out = av.open(self._sink, "w", format="mp4", options=_MUX_OPTIONS)
        self._stream = self._out.add_mux_stream("h264", rate=info.rate_fps or 25, width=info.width_px,
                                                height=info.height_px)
        self._stream.time_base = MUX_TIME_BASE
        self._retimer = Retimer()
        self.codec = avc_codec_string(ensure_h264_params(key.data, info.annexb_params))

    def _packet(self, p: EncodedPacket) -> None:
        import av

        from seawatch.streams.recording import MUX_TIME_BASE

        info = self.info
        if info is None or self.refusal is not None:
            return
        if not p.data:
            # an empty packet is no picture, and FFmpeg may write no sample for it: muxed, it would put
            # ``_keys`` (one entry per packet) out of step with the fragments, flagging P-frames as keyframes
            # (a new viewer started on one, its clock on the wrong picture) and keyframes as not
            return
        if self._skip_to_key:
            if not p.is_keyframe:
                return
            self._skip_to_key = False
        if self.transcoding:
            self._transcode(p)
            return
        if self._out is None:
            if not p.is_keyframe:
                return
            self._open_output(p)
        pts, dts = self._retimer.next(p)
        data = ensure_h264_params(p.data, info.annexb_params) if p.is_keyframe else p.data
        pkt = av.Packet(data)
        pkt.pts, pkt.dts, pkt.time_base = pts, dts, MUX_TIME_BASE
        pkt.is_keyframe = p.is_keyframe
        pkt.stream = self._stream
        self._keys.append((p.is_keyframe, pts, p.capture_time_ns))
        try:
            self._out.mux(pkt)
        except av.FFmpegError as exc:  # a packet FFmpeg refuses: start again at the next keyframe, with a new init
            log.warning("live video %s: mux failed (%s); its viewers connect again", self.source_id, exc)
            with self._lock:
                self._close_viewers(CLOSE_FORMAT_CHANGED, "the live video restarted: connect again", only_started=True)
            self._close_output()
            return
        for typ, box in _take_boxes(self._sink.buf):
            self._box(typ, box)

    # ---- re-encoding (the muxer thread) ---------------------------------------------------------------------
    def _transcode(self, p: EncodedPacket) -> None:
        if self._tc is None:
            if not p.is_keyframe:
                return
            self._tc = _Transcoder(self.info)
        newest = self._newest_tap_ns
        if not p.is_keyframe:
            if (not self._from_ring and newest is not None
                    and newest - p.capture_time_ns > TRANSCODE_BEHIND_S * 1e9):
                self._behind = True  # behind the camera: catch up, decoding only keyframes meanwhile
            if self._behind:  # (and after it, the decoder can go on only at a keyframe)
                self.skipped_behind += 1
                return
        self._behind = False
        for frame, capture_ns in self._tc.decode(p):
            self._encode(frame, capture_ns)

    def _open_encoder(self, frame) -> None:
        import av

        from seawatch.streams.recording import MUX_TIME_BASE

        rate = Fraction(self.info.rate_fps or 25).limit_denominator(1001)
        w, h = scaled_size(frame.width, frame.height, self.max_width_px)
        self._out = av.open(self._sink, "w", format="mp4", options=_MUX_OPTIONS)
        st = self._out.add_stream("libx264", rate=rate)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.time_base = MUX_TIME_BASE
        cc = st.codec_context
        cc.time_base = MUX_TIME_BASE
        cc.gop_size = max(1, round(float(rate) * TRANSCODE_KEYFRAME_S * 10))  # a backstop: keyframes are forced by time
        cc.max_b_frames = 0
        cc.thread_count = 1
        cc.options = dict(TRANSCODE_OPTIONS)
        self._stream = st
        self._out_size, self._in_size = (w, h), (frame.width, frame.height)
        self._pts0 = frame.pts or 0

    def _encode(self, frame, capture_ns: int | None) -> None:
        from av.video.frame import PictureType

        from seawatch.streams.recording import MUX_TIME_BASE

        if self._out is not None and (frame.width, frame.height) != self._in_size:
            log.info("live video %s: the camera's picture size changed; its viewers connect again", self.source_id)
            with self._lock:
                self._close_viewers(CLOSE_FORMAT_CHANGED, "the camera's video format changed: connect again",
                                    only_started=True)
            self._close_output(keep_decoder=True)
        if self._out is None:
            self._open_encoder(frame)
        step = round(MUX_TICKS_PER_S / float(self.info.rate_fps or 25))
        pts = frame.pts - self._pts0 if frame.pts is not None else self._last_pts + step
        if pts <= self._last_pts:
            return  # a picture out of order (decoder trouble): dropped, the timeline only goes forward
        w, h = self._out_size
        img = self._tc.scaler.reformat(frame, w, h, "yuv420p", interpolation="BILINEAR")
        img.pts, img.time_base = pts, MUX_TIME_BASE
        if self._last_key_pts is None or pts - self._last_key_pts >= TRANSCODE_KEYFRAME_S * MUX_TICKS_PER_S:
            img.pict_type = PictureType.I  # by time, not count: a camera sending fewer pictures than it declares too
            self._last_key_pts = pts
        self._last_pts = pts
        self._enc_captures[pts] = capture_ns
        while len(self._enc_captures) > 64:
            del self._enc_captures[next(iter(self._enc_captures))]
        for pkt in self._stream.encode(img):
            self._mux_encoded(pkt)

    def _mux_encoded(self, pkt) -> None:
        import av

        if self.codec is None:
            extradata = bytes(self._stream.codec_context.extradata or b"")
            if extradata[:1] == b"\x01" and len(extradata) >= 4:  # avcC
                self.codec = "avc1." + extradata[1:4].hex().upper()
            else:
                self.codec = avc_codec_string(extradata) or avc_codec_string(bytes(pkt))
        self._keys.append((bool(pkt.is_keyframe), int(pkt.pts), self._enc_captures.pop(pkt.pts, None)))
        try:
            self._out.mux(pkt)
        except av.FFmpegError as exc:
            log.warning("live video %s: mux of the re-encoded video failed (%s); its viewers connect again",
                        self.source_id, exc)
            with self._lock:
                self._close_viewers(CLOSE_FORMAT_CHANGED, "the live video restarted: connect again", only_started=True)
            self._close_output(keep_decoder=True)
            return
        for typ, box in _take_boxes(self._sink.buf):
            self._box(typ, box)

    def _box(self, typ: bytes, box: bytes) -> None:
        if typ == b"ftyp":
            self._ftyp = box
        elif typ == b"moov":
            info = self.info
            mime = f'video/mp4; codecs="{self.codec}"' if self.codec else "video/mp4"
            w, h = self._out_size if self.transcoding and self._out_size else (info.width_px, info.height_px)
            hello = {"kind": "video", "source_id": self.source_id, "codec": self.codec, "mime": mime,
                     "width_px": w, "height_px": h, "rate_fps": float(info.rate_fps) if info.rate_fps else None}
            if self.transcoding:
                hello.update(transcoded_from=info.codec_name, note=transcode_note(info.codec_name))
            with self._lock:
                self._header = [("text", hello), ("init", self._ftyp + box)]
        elif typ == b"moof":
            self._moof = box
        elif typ == b"mdat" and self._moof is not None:
            n = max(1, _moof_samples(self._moof))
            muxed = [self._keys.popleft() for _ in range(min(n, len(self._keys)))]
            key = bool(muxed and muxed[0][0])
            clock = None
            if key and muxed[0][2] is not None:
                clock = {"kind": "clock", "media_s": muxed[0][1] / MUX_TICKS_PER_S, "capture_ns": int(muxed[0][2])}
            self._publish(Fragment(self._moof + box, key, clock))
            self._moof = None

    def _publish(self, frag: Fragment) -> None:
        self.fragments += 1
        with self._lock:
            if frag.keyframe:
                self._gop, self._gop_bytes = [frag], len(frag.data)
            elif self._gop:
                self._gop_bytes += len(frag.data)
                self._gop.append(frag)
                if self._gop_bytes > GOP_KEEP_BYTES:  # a new viewer waits for the next keyframe instead
                    self._gop, self._gop_bytes = [], 0
            for v in list(self._viewers):
                if v.closed:
                    self._viewers.discard(v)
                elif v.started:
                    v.offer(frag)
                elif frag.keyframe and self._header is not None:
                    v.start(self._header, [frag])


class LiveVideo:
    """The live video of every camera the service reads (one :class:`CameraMuxer` per watched camera).

    ``add_source(source_id, ring)`` registers a camera's packet ring; ``open(source_id, loop)`` gives a new
    :class:`Viewer` (raises :class:`VideoRefused`); ``close(source_id, viewer)`` when its connection ends.
    """

    def __init__(self, max_viewers: int = MAX_VIEWERS, viewer_max_bytes: int = VIEWER_MAX_BYTES,
                 viewer_max_lag_s: float = VIEWER_MAX_LAG_S, transcode_max: int = TRANSCODE_MAX,
                 transcode_width_px: int = TRANSCODE_WIDTH_PX) -> None:
        self.max_viewers = max_viewers
        self.slots = TranscodeSlots(transcode_max)
        self.transcode_width_px = transcode_width_px
        self.viewer_max_bytes = viewer_max_bytes
        self.viewer_max_lag_s = viewer_max_lag_s
        self._rings: dict[str, PacketRing] = {}
        self._muxers: dict[str, CameraMuxer] = {}
        self._viewers = 0
        self._lock = threading.Lock()

    def add_source(self, source_id: str, ring: PacketRing) -> None:
        with self._lock:
            self._rings[source_id] = ring

    def muxer(self, source_id: str) -> CameraMuxer | None:
        with self._lock:
            return self._muxers.get(source_id)

    @property
    def viewers(self) -> int:
        with self._lock:
            return self._viewers

    @property
    def transcoding(self) -> int:
        """Cameras whose live video is re-encoded to H.264 now."""
        return len(self.slots)

    def open(self, source_id: str, loop: asyncio.AbstractEventLoop) -> Viewer:
        with self._lock:
            ring = self._rings.get(source_id)
            if ring is None:
                raise VideoRefused(CLOSE_NO_VIDEO, f"this service reads no video for camera {source_id}")
            info = ring.info
            if info is not None and info.codec_name not in VIDEO_CODECS:
                if (why := codec_refusal(info.codec_name, transcode=self.slots.limit > 0)) is not None:
                    raise VideoRefused(CLOSE_CODEC, why)
                if not self.slots.room_for(source_id):
                    raise VideoRefused(CLOSE_BUSY, transcode_busy(info.codec_name, self.slots.limit))
            if self._viewers >= self.max_viewers:
                raise VideoRefused(CLOSE_BUSY, f"too many live video viewers ({self.max_viewers}, all cameras "
                                               "together); try again later")
            muxer = self._muxers.get(source_id)
            if muxer is None or not muxer.running:  # (one that failed is replaced; its viewers were closed)
                muxer = self._muxers[source_id] = CameraMuxer(source_id, ring, self.slots,
                                                              self.transcode_width_px).start()
            viewer = Viewer(loop, self.viewer_max_bytes, self.viewer_max_lag_s)
            try:
                muxer.join(viewer)  # raises for a codec found refused after the muxer started
            except VideoRefused:
                if muxer.viewers == 0:
                    del self._muxers[source_id]
                    muxer.stop()
                raise
            self._viewers += 1
            return viewer

    def close(self, source_id: str, viewer: Viewer) -> None:
        """The viewer's connection ended; the camera's muxer stops with its last viewer."""
        viewer.closed = True
        with self._lock:
            self._viewers -= 1
            muxer = self._muxers.get(source_id)
            if muxer is None or muxer.leave(viewer) > 0:
                return  # (a viewer of a muxer already replaced left it with the old one)
            del self._muxers[source_id]
        muxer.stop()

    def stop_all(self, timeout_s: float = 2.0) -> None:
        """At shutdown: every muxer's thread."""
        with self._lock:
            muxers = list(self._muxers.values())
            self._muxers.clear()
        for m in muxers:
            m.stop(timeout_s)
