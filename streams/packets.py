"""Encoded packets kept after demuxing: the pre-event buffer and recordings hold these, never decoded frames.

A 1080p H.264 camera at 4 Mbit/s costs about 0.5 MB per second of pre-roll as packets, against ~150 MB per second
as decoded BGR frames; that is what keeps memory bounded.

H.264/HEVC packets are normalised to Annex B with the parameter sets (SPS/PPS) in front of every keyframe, so any
run of packets that starts at a keyframe can be written to a new MP4 on its own, whatever container they came from
(MP4 files carry length-prefixed NAL units with the parameter sets out of band; RTSP carries Annex B).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

# NAL unit types: H.264 SPS=7, PPS=8, IDR=5, non-IDR=1 ; HEVC VPS=32, SPS=33, PPS=34
_H264_PARAM_TYPES = {7, 8}
_H264_SLICE_TYPES = {1, 5}
_HEVC_PARAM_TYPES = {32, 33, 34}
_HEVC_SPS = 33
_HEVC_FIRST_NON_VCL = 32  # HEVC NAL types below this are slices (VCL)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a decoder or muxer needs to know about a video stream.

    Attributes:
        codec_name: FFmpeg codec name (``h264``, ``hevc``, ``mjpeg``...).
        width_px, height_px: coded picture size.
        rate_fps: nominal frame rate if the stream declares one, else None.
        extradata: codec extradata as the source delivered it (avcC or Annex B), may be empty.
        annexb_params: the parameter sets in Annex B form (H.264/HEVC), prepended to keyframes that lack them.
    """

    codec_name: str
    width_px: int
    height_px: int
    rate_fps: Fraction | None = None
    extradata: bytes = b""
    annexb_params: bytes = b""

    def same_format(self, other: "StreamInfo | None") -> bool:
        return (
            other is not None
            and other.codec_name == self.codec_name
            and other.width_px == self.width_px
            and other.height_px == self.height_px
        )


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One compressed access unit.

    Attributes:
        data: the payload (Annex B for H.264/HEVC).
        pts, dts: timestamps in ``time_base`` units, as the source gave them (None when unknown).
        time_base: seconds per timestamp unit.
        is_keyframe: decoding can start here.
        capture_time_ns: UTC ns of the picture (stream clock mapped to wall clock), not clamped.
    """

    data: bytes
    pts: int | None
    dts: int | None
    time_base: Fraction
    is_keyframe: bool
    capture_time_ns: int

    @property
    def size_bytes(self) -> int:
        return len(self.data)


def iter_annexb_nals(data: bytes, limit: int = 16):
    """Yield (nal_type_byte, start_offset) of up to ``limit`` NAL units of an Annex B buffer."""
    pos = 0
    n = 0
    length = len(data)
    while n < limit:
        i = data.find(b"\x00\x00\x01", pos)
        if i < 0 or i + 3 >= length:
            return
        yield data[i + 3], i + 3
        n += 1
        pos = i + 3


def is_annexb(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")


def _read_nals(record: bytes, pos: int, count: int) -> tuple[list[bytes], int]:
    """``count`` NAL units of a decoder configuration record (ISO 14496-15), each behind its 2-byte size, from
    ``pos``; and the position after them. IndexError when the record ends before them."""
    nals = []
    for _ in range(count):
        size = int.from_bytes(record[pos : pos + 2], "big")
        nal = record[pos + 2 : pos + 2 + size]
        if len(nal) != size:
            raise IndexError("a NAL unit runs past the record's end")
        nals.append(nal)
        pos += 2 + size
    return nals, pos


def _record_params(extradata: bytes, nals_of) -> bytes:
    """Parameter sets from extradata: an MP4 decoder configuration record (version 1) read by ``nals_of`` into its
    parameter-set NAL units, as Annex B; Annex B extradata (an RTSP stream's, from the SDP) as it is; empty if it
    cannot be parsed."""
    if not extradata:
        return b""
    if is_annexb(extradata):
        return extradata
    if extradata[0] != 1:
        return b""
    try:
        return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals_of(extradata))
    except IndexError:
        return b""


def _avcc_nals(record: bytes) -> list[bytes]:
    sps, pos = _read_nals(record, 6, record[5] & 0x1F)
    pps, _ = _read_nals(record, pos + 1, record[pos])
    return sps + pps


def _hvcc_nals(record: bytes) -> list[bytes]:
    out, pos = [], 23  # the record's fixed part (22 bytes), numOfArrays, then the arrays
    for _ in range(record[22]):
        nal_type = record[pos] & 0x3F
        nals, pos = _read_nals(record, pos + 3, int.from_bytes(record[pos + 1 : pos + 3], "big"))
        if nal_type in _HEVC_PARAM_TYPES:
            out += nals
    return out


def avcc_to_annexb_params(extradata: bytes) -> bytes:
    """SPS and PPS from an ``avcC`` box body (ISO 14496-15) as Annex B; empty if it cannot be parsed."""
    return _record_params(extradata, _avcc_nals)


def hvcc_to_annexb_params(extradata: bytes) -> bytes:
    """VPS, SPS and PPS from an ``hvcC`` box body (ISO 14496-15) as Annex B; Annex B extradata (an RTSP stream's,
    from the SDP) as it is; empty if it cannot be parsed."""
    return _record_params(extradata, _hvcc_nals)


def annexb_params_of(codec_name: str, extradata: bytes) -> bytes:
    """The parameter sets of an H.264 (SPS, PPS) or HEVC (VPS, SPS, PPS) stream's extradata as Annex B, to put in
    front of keyframes that come without them; empty for other codecs or unparsable extradata."""
    if codec_name == "h264":
        return avcc_to_annexb_params(extradata)
    if codec_name == "hevc":
        return hvcc_to_annexb_params(extradata)
    return b""


def h264_param_sets(data: bytes) -> bytes:
    """The SPS and PPS NAL units in front of the first slice of an Annex B H.264 access unit, as Annex B (empty if
    it carries none)."""
    starts = []
    pos = 0
    while True:
        i = data.find(b"\x00\x00\x01", pos)
        if i < 0 or i + 3 >= len(data):
            break
        starts.append(i)
        pos = i + 3
    out = bytearray()
    for k, i in enumerate(starts):
        nal_type = data[i + 3] & 0x1F
        if nal_type in _H264_SLICE_TYPES:
            break
        if nal_type in _H264_PARAM_TYPES:
            end = starts[k + 1] if k + 1 < len(starts) else len(data)
            if end > i and data[end - 1 : end] == b"\x00" and k + 1 < len(starts):
                end -= 1  # the next start code is the 4-byte form
            out += b"\x00\x00\x00\x01" + data[i + 3 : end]
    return bytes(out)


def hevc_param_sets(data: bytes) -> bytes:
    """The VPS, SPS and PPS NAL units in front of the first slice of an Annex B HEVC access unit, as Annex B (empty
    if it carries none)."""
    out = bytearray()
    for header, start in iter_annexb_nals(data, limit=64):
        nal_type = (header >> 1) & 0x3F
        if nal_type < _HEVC_FIRST_NON_VCL:
            break
        if nal_type in _HEVC_PARAM_TYPES:
            end = data.find(b"\x00\x00\x01", start)
            end = len(data) if end < 0 else end
            if end < len(data) and data[end - 1 : end] == b"\x00":
                end -= 1  # the next start code is the 4-byte form
            out += b"\x00\x00\x00\x01" + data[start:end]
    return bytes(out)


def param_sets(data: bytes, codec_name: str) -> bytes:
    """The parameter sets an H.264 / HEVC access unit carries before its first slice, as Annex B (empty if none, or
    another codec)."""
    if codec_name == "h264":
        return h264_param_sets(data)
    if codec_name == "hevc":
        return hevc_param_sets(data)
    return b""


def ensure_hevc_params(data: bytes, params: bytes) -> bytes:
    """Prefix ``params`` (Annex B VPS/SPS/PPS) to an HEVC keyframe that has no SPS before its first slice.

    Cameras and RTSP servers often send the parameter sets only in the SDP, or only before an IDR picture and not
    before the CRA keyframes that follow (gst-rtsp-server's rtph265pay, x265's open GOPs): a recording segment or a
    decoder that starts at such a keyframe has nothing to decode it with."""
    if not params:
        return data
    for header, _ in iter_annexb_nals(data, limit=64):
        nal_type = (header >> 1) & 0x3F
        if nal_type == _HEVC_SPS:
            return data
        if nal_type < _HEVC_FIRST_NON_VCL:
            break
    return params + data


def ensure_params(data: bytes, params: bytes, codec_name: str) -> bytes:
    """A keyframe of an H.264 / HEVC stream with its parameter sets in front (``params``, Annex B) unless it carries
    them already; other codecs' data as it is."""
    if codec_name == "h264":
        return ensure_h264_params(data, params)
    if codec_name == "hevc":
        return ensure_hevc_params(data, params)
    return data


def ensure_h264_params(data: bytes, params: bytes) -> bytes:
    """Prefix ``params`` (Annex B SPS/PPS) to a keyframe that does not carry an SPS before its first slice."""
    if not params:
        return data
    for header, _ in iter_annexb_nals(data):
        nal_type = header & 0x1F
        if nal_type == 7:
            return data
        if nal_type in _H264_SLICE_TYPES:
            break
    return params + data


class PacketRing:
    """The pre-event buffer: the newest encoded packets of one source, bounded by age and by bytes.

    The ring always starts at a keyframe (older packets are evicted a whole GOP at a time), so any window taken from
    it can be decoded. Safe to use from the reader thread (``push``) and any other thread (``window``).

    Args:
        max_age_s: keep packets whose capture time is within this many seconds of the newest; must cover
            pre-roll + post-roll of the clips cut from it.
        max_bytes: hard cap on the payload held.
    """

    def __init__(self, max_age_s: float = 30.0, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_age_ns = int(max_age_s * 1e9)
        self.max_bytes = int(max_bytes)
        self._packets: deque[EncodedPacket] = deque()
        self._bytes = 0
        self._info: StreamInfo | None = None
        self._pushed_wall_ns: int | None = None  # wall clock when the newest packet came in
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._listeners: tuple = ()

    @property
    def info(self) -> StreamInfo | None:
        return self._info

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._packets)

    def set_info(self, info: StreamInfo) -> None:
        """Called on (re)connect. A different codec or picture size starts the ring afresh."""
        with self._lock:
            if not info.same_format(self._info):
                self._packets.clear()
                self._bytes = 0
            self._info = info
            for fn in self._listeners:
                fn(info)

    def listen(self, fn) -> tuple[StreamInfo | None, list[EncodedPacket]]:
        """A tap (the live video): ``fn(packet)`` for every packet pushed from now on and ``fn(info)`` for every
        :meth:`set_info`, called in the reader's thread under the ring's lock, so ``fn`` must only queue.

        Returns the stream info and the packets from the newest keyframe on (the GOP buffered now), taken under the
        same lock: a listener misses no packet and sees none twice.
        """
        with self._lock:
            self._listeners = (*self._listeners, fn)
            packets = list(self._packets)
        last_key = next((i for i in range(len(packets) - 1, -1, -1) if packets[i].is_keyframe), len(packets))
        return self._info, packets[last_key:]

    def unlisten(self, fn) -> None:
        with self._lock:
            self._listeners = tuple(f for f in self._listeners if f != fn)  # (a bound method is a new object each time)

    def push(self, packet: EncodedPacket) -> None:
        with self._cond:
            if not self._packets and not packet.is_keyframe:
                return  # a ring must start decodable
            self._packets.append(packet)
            self._bytes += packet.size_bytes
            self._pushed_wall_ns = time.time_ns()
            for fn in self._listeners:
                fn(packet)
            newest = packet.capture_time_ns
            while self._packets and (
                newest - self._packets[0].capture_time_ns > self.max_age_ns or self._bytes > self.max_bytes
            ):
                self._evict_gop()
            self._cond.notify_all()

    def _evict_gop(self) -> None:
        first = self._packets.popleft()
        self._bytes -= first.size_bytes
        while self._packets and not self._packets[0].is_keyframe:
            p = self._packets.popleft()
            self._bytes -= p.size_bytes

    @property
    def newest_ns(self) -> int | None:
        with self._lock:
            return self._packets[-1].capture_time_ns if self._packets else None

    @property
    def oldest_ns(self) -> int | None:
        with self._lock:
            return self._packets[0].capture_time_ns if self._packets else None

    @property
    def newest_lag_ns(self) -> int | None:
        """Wall clock when the newest packet came in minus its capture time: a live source's latency (small); far
        from 0 when capture times are not wall-clock times (a file replayed fast, from a chosen start time)."""
        with self._lock:
            if not self._packets or self._pushed_wall_ns is None:
                return None
            return self._pushed_wall_ns - self._packets[-1].capture_time_ns

    def wait_until(self, t_ns: int, timeout_s: float) -> bool:
        """Block until a packet captured at or after ``t_ns`` is in the ring (post-roll), or the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._packets or self._packets[-1].capture_time_ns < t_ns:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def window(self, start_ns: int, end_ns: int) -> list[EncodedPacket]:
        """Packets from the last keyframe at or before ``start_ns`` up to ``end_ns`` (capture times).

        If the ring starts after ``start_ns`` the window starts at the ring's first packet (shorter pre-roll).
        """
        with self._lock:
            packets = list(self._packets)
        return select_window(packets, start_ns, end_ns)


def decode_time_ns(p: EncodedPacket) -> int:
    """Capture time of the packet's decode slot: its capture time minus the B-frame reorder delay."""
    if p.pts is not None and p.dts is not None and p.pts > p.dts:
        return p.capture_time_ns - int((p.pts - p.dts) * p.time_base * 1_000_000_000)
    return p.capture_time_ns


# Pictures further apart than this (capture time), or than 3 of the stream's usual frame intervals where those are
# longer (a camera sending one picture every few seconds), are an outage (camera offline, reconnect): video from
# before such a gap is not what was on screen in the window after it.
MAX_FRAME_GAP_NS = 2_000_000_000


def outage_gap_ns(packets: list[EncodedPacket]) -> int:
    """The capture-time gap that counts as an outage in ``packets``: ``MAX_FRAME_GAP_NS``, or 3 median frame
    intervals of a slower stream."""
    times = sorted(p.capture_time_ns for p in packets)
    if len(times) < 3:
        return MAX_FRAME_GAP_NS
    steps = sorted(b - a for a, b in zip(times, times[1:]))
    return max(MAX_FRAME_GAP_NS, 3 * steps[len(steps) // 2])


def select_window(packets: list[EncodedPacket], start_ns: int, end_ns: int) -> list[EncodedPacket]:
    """From packets in decode order: the last keyframe at/before ``start_ns`` up to ``end_ns``.

    The window ends at the last packet (in decode order) shown at or before ``end_ns``, so the reference frames
    that B-frames inside the window need are kept (a P-frame shown later but decoded earlier).
    If no keyframe is at or before ``start_ns`` the window starts at the first keyframe (shorter pre-roll); if the
    packets from that keyframe to ``start_ns`` have an outage in them (a gap over :func:`outage_gap_ns`) the window
    starts at the first keyframe after the gap, so no video from before an outage stands in for the window.
    Returns ``[]`` when no packet is captured inside ``[start_ns, end_ns]`` (camera out for the whole window, or the
    window after the newest packet): older video is never returned instead.
    """
    first = None
    k = len(packets)  # first packet decoded after start_ns
    for i, p in enumerate(packets):
        if decode_time_ns(p) > start_ns:
            k = i
            break
        if p.is_keyframe and p.capture_time_ns <= start_ns:
            first = i
    if first is not None:
        # an outage between the keyframe and the start (or right at the start): begin after it
        stop = min(k + 1, len(packets))
        gap_ns = outage_gap_ns(packets)
        for i in range(first + 1, stop):
            if decode_time_ns(packets[i]) - decode_time_ns(packets[i - 1]) > gap_ns:
                first = next((j for j in range(i, len(packets)) if packets[j].is_keyframe), None)
                break
        if first is None:
            return []
    else:
        first = next((i for i, p in enumerate(packets) if p.is_keyframe), None)
        if first is None:
            return []
    last = None
    inside = False
    for i in range(first, len(packets)):
        p = packets[i]
        if p.capture_time_ns <= end_ns:
            last = i
            inside = inside or p.capture_time_ns >= start_ns
        elif decode_time_ns(p) > end_ns:
            break  # decode order has passed the window: nothing later can be shown inside it
    return packets[first : last + 1] if inside else []


def coverage_spans(packets: list[EncodedPacket], start_ns: int, end_ns: int) -> list[tuple[int, int]]:
    """The parts of ``[start_ns, end_ns]`` that the packets show, as (first_ns, last_ns) capture-time spans.

    A new span starts after each outage (pictures further apart than :func:`outage_gap_ns`). Empty when nothing is
    captured inside the window.
    """
    times = sorted(p.capture_time_ns for p in packets if start_ns <= p.capture_time_ns <= end_ns)
    gap_ns = outage_gap_ns(packets)
    spans: list[tuple[int, int]] = []
    for t in times:
        if spans and t - spans[-1][1] <= gap_ns:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((t, t))
    return spans


def has_picture(data: bytes, codec_name: str) -> bool:
    """Whether an Annex B H.264/HEVC packet carries a coded slice (not only parameter sets or SEI)."""
    for header, _ in iter_annexb_nals(data, limit=32):
        if codec_name == "hevc":
            if (header >> 1) & 0x3F < 32:
                return True
        elif 1 <= header & 0x1F <= 5:
            return True
    return False


def continues_picture(data: bytes, codec_name: str) -> bool | None:
    """Whether an Annex B H.264/HEVC packet's first slice continues a picture begun in an earlier packet (H.264
    ``first_mb_in_slice`` != 0, HEVC ``first_slice_segment_in_pic_flag`` == 0); None when it holds no slice or the
    codec is another."""
    if codec_name not in ("h264", "hevc"):
        return None
    for header, pos in iter_annexb_nals(data, limit=32):
        if codec_name == "hevc":
            if (header >> 1) & 0x3F < 32:
                return None if pos + 2 >= len(data) else not data[pos + 2] & 0x80
        elif 1 <= header & 0x1F <= 5:
            return None if pos + 1 >= len(data) else not data[pos + 1] & 0x80  # ue(v) 0 is the single bit 1
    return None


class AccessUnitAssembler:
    """Turns demuxed packets into whole pictures for the ring and recordings.

    Some RTSP sources deliver parameter sets in a packet of their own (without a timestamp) or a picture's slices
    in several packets with one timestamp; written to MP4 as they are, each would become a "frame". Parameter-set
    packets are prepended to the next picture, and packets with the same pts are joined. Costs one packet of delay.
    """

    def __init__(self, codec_name: str) -> None:
        self.codec_name = codec_name
        self._h26x = codec_name in ("h264", "hevc")
        self._pending: EncodedPacket | None = None
        self._prefix = b""

    def push(self, packet: EncodedPacket) -> EncodedPacket | None:
        """Feed one packet; returns the previous complete access unit, if one is complete now."""
        from dataclasses import replace

        if self._h26x and not has_picture(packet.data, self.codec_name):
            self._prefix += packet.data
            return None
        if self._prefix:
            packet = replace(packet, data=self._prefix + packet.data)
            self._prefix = b""
        pending = self._pending
        if pending is not None and packet.pts is not None and packet.pts == pending.pts:
            self._pending = replace(pending, data=pending.data + packet.data,
                                    is_keyframe=pending.is_keyframe or packet.is_keyframe)
            return None
        self._pending = packet
        return pending

    def flush(self) -> EncodedPacket | None:
        """The last pending access unit (end of stream)."""
        pending, self._pending, self._prefix = self._pending, None, b""
        return pending
