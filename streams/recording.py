"""Segment recording, retention, clip cutting and snapshots.

* Segments: the incoming H.264 is remuxed (never re-encoded) into fragmented MP4 files, one per ``segment_s``
  (cut at keyframes), named ``<start_ns>_<end_ns>.mp4`` under ``<root>/<source_id>/``; the file being written is
  ``<start_ns>.part.mp4``. Fragmented, so a segment cut short by a crash is still readable. Other codecs (MJPEG
  cameras) are kept as they came in Matroska segments (``.mkv``); clips from those are transcoded.
  A recorder that starts finds the ``.part`` files a crash (kill -9, power loss) left behind and finishes them:
  renamed to ``<start_ns>_<end_ns>`` from the packets they hold, or deleted when they hold none. Fragments are
  flushed to disk as they are completed, so a crash loses at most the fragment (GOP) being written.
* Retention: the oldest finished segments go when they are older than ``max_age_s`` or the source's total (the
  segment being written included) is over ``max_total_bytes``. The size rule never deletes the newest finished
  segment, so a cap below one segment keeps one segment (and a warning says so) instead of none.
* Clips are addressed by source and time window (UTC ns). They are written as H.264 MP4 with ``+faststart``
  (moov before mdat) that Chromium plays: a remux when the packets are H.264, a libx264 transcode otherwise.
  A clip only ever holds video of its window (from the keyframe before it): a window with no video in it (camera
  out, or later than the newest packet) is a :class:`StreamError`, never older video. A window that is only partly
  covered (an outage inside it) gives the part that exists; the MP4's ``comment`` tag says which spans were
  covered and ``partial`` (see :func:`read_clip_coverage`). A window across a change of recording format (codec or
  picture size: a camera reconfigured, a day/night profile) still shows all of it: only such a clip is decoded and
  re-encoded (libx264 ``veryfast``) at one size, the widest x tallest of its formats (no part scaled down; a part of
  another aspect ratio centred with black bars), with the same picture times, and its ``comment`` says so
  (``reencoded=``, :class:`ClipCoverage`); a window of one format is copied packet for packet as before. An
  unreadable segment is skipped with a warning (its time shows as an outage), not the whole clip lost.
  ``ClipStore`` never stores a clip whose window a live source may still fill (post-roll not arrived yet): it
  waits, or raises :class:`ClipNotReady`.
* Snapshots are JPEG files from a BGR image.

Timestamps in written files (1/90000 s) keep the stream's own spacing and bridge reconnects (where the stream's PTS
restarted) with capture times, so a clip spanning a reconnect still has increasing timestamps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
import numpy as np

from seawatch.errors import InputError, StreamError
from seawatch.streams.packets import (
    MAX_FRAME_GAP_NS,
    EncodedPacket,
    PacketRing,
    StreamInfo,
    annexb_params_of,
    coverage_spans,
    decode_time_ns,
    ensure_h264_params,
    ensure_params,
    select_window,
)

log = logging.getLogger(__name__)

MUX_TIME_BASE = Fraction(1, 90000)
_FASTSTART = {"movflags": "+faststart"}
_FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
# recorded segments: each fragment (one GOP, MP4) or cluster (Matroska) goes to disk when it is complete instead of
# when PyAV's 256 KiB write buffer fills, so a crash loses at most the fragment being written
_SEGMENT_MP4 = {**_FRAGMENTED, "flush_packets": "1"}
_SEGMENT_MKV = {"flush_packets": "1"}
REMUX_CODECS = {"h264"}


class Retimer:
    """Output timestamps (1/90000 s ticks) for packets in decode order.

    While the source's own timestamps are continuous the output keeps their exact spacing (estimated capture times
    wobble by milliseconds as the clock estimate improves); across a discontinuity (a reconnect restarts the
    stream's PTS) the gap is bridged with the capture-time difference. Decode timestamps strictly increase.
    """

    MAX_STEP_S = 5.0

    def __init__(self) -> None:
        self._prev: EncodedPacket | None = None
        self._dts = 0

    def next(self, p: EncodedPacket) -> tuple[int, int]:
        """(pts, dts) in MUX_TIME_BASE ticks."""
        prev = self._prev
        d_cur = p.dts if p.dts is not None else p.pts
        if prev is None:
            dts = 0
        else:
            d_prev = prev.dts if prev.dts is not None else prev.pts
            step = None
            if d_cur is not None and d_prev is not None and p.time_base == prev.time_base:
                step_s = (d_cur - d_prev) * p.time_base
                if 0 < step_s <= self.MAX_STEP_S:
                    step = round(step_s * 90000)
            if step is None:  # discontinuity: bridge with capture times (of the decode slots: B-frames reorder)
                step = (decode_time_ns(p) - decode_time_ns(prev)) * 9 // 100000
            dts = self._dts + max(1, step)
        reorder = 0
        if p.pts is not None and p.dts is not None and p.pts > p.dts:
            reorder = round((p.pts - p.dts) * p.time_base * 90000)
        self._prev = p
        self._dts = dts
        return dts + reorder, dts


def _rebase(packets: list[EncodedPacket]) -> list[tuple[EncodedPacket, int, int]]:
    """(packet, pts, dts) in MUX_TIME_BASE ticks, see :class:`Retimer`."""
    retimer = Retimer()
    return [(p, *retimer.next(p)) for p in packets]


def write_mp4(
    packets: list[EncodedPacket],
    info: StreamInfo,
    path: str | Path,
    *,
    fragmented: bool = False,
    crf: int = 23,
    comment: str | None = None,
) -> Path:
    """Write packets (starting at a keyframe) as an H.264 MP4: remux for H.264, libx264 transcode otherwise.

    Returns the path. ``fragmented=False`` gives ``+faststart`` (moov before mdat), what browsers want for a
    finished file. ``comment`` goes to the MP4's ``comment`` tag. Raises :class:`StreamError` if there is nothing
    to write or FFmpeg fails.
    """
    import av

    path = Path(path)
    if not packets:
        raise StreamError(f"no video to write to {path}: the time window holds no packets")
    if not packets[0].is_keyframe:
        raise StreamError(f"cannot write {path}: the packets do not start at a keyframe")
    timed = _rebase(packets)
    with _atomic_mp4(path) as tmp:
        if info.codec_name in REMUX_CODECS:
            # the first picture (the keyframe, captured at the clip's first_ns) at video time 0: with B-frames its
            # presentation time is the reorder delay after its decode time, so the decode times start before 0 (the
            # muxer writes an edit list) and a player's position plus first_ns is the capture time of what it shows
            lead = timed[0][1]
            timed = [(p, pts - lead, dts - lead) for p, pts, dts in timed]
            with av.open(str(tmp), "w", format="mp4", options=_FRAGMENTED if fragmented else _FASTSTART) as out:
                if comment:
                    out.metadata["comment"] = comment
                rate = info.rate_fps or 25
                stream = out.add_mux_stream(info.codec_name, rate=rate, width=info.width_px, height=info.height_px)
                stream.time_base = MUX_TIME_BASE
                params = info.annexb_params
                for p, pts, dts in timed:
                    data = ensure_h264_params(p.data, params) if p.is_keyframe else p.data
                    pkt = av.Packet(data)
                    pkt.pts, pkt.dts = pts, dts
                    pkt.time_base = MUX_TIME_BASE
                    pkt.is_keyframe = p.is_keyframe
                    pkt.stream = stream
                    out.mux(pkt)
        else:
            _transcode(timed, info, tmp, fragmented=fragmented, crf=crf, comment=comment)
    return path


@contextlib.contextmanager
def _atomic_mp4(path: Path):
    """Yields a temporary name beside ``path``; the file takes ``path``'s place only when the block completes
    (FFmpeg errors become :class:`StreamError`; on any failure the temporary file is removed)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except av.FFmpegError as exc:
        tmp.unlink(missing_ok=True)
        raise StreamError(f"writing {path} failed: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _h264_encoder(out, rate_fps, width_px: int, height_px: int, crf: int):
    """The libx264 stream clips are re-encoded into (``veryfast``, yuv420p, 1/90000 time base)."""
    enc = out.add_stream("libx264", rate=rate_fps or 25, options={"preset": "veryfast", "crf": str(crf)})
    enc.width, enc.height = width_px, height_px
    enc.pix_fmt = "yuv420p"
    enc.codec_context.time_base = MUX_TIME_BASE
    return enc


def _finish_h264(enc, out, encoded: int, refused: list[str], what: str) -> None:
    """Flush the encoder; :class:`StreamError` when no picture at all could be decoded."""
    if encoded == 0:
        raise StreamError(f"no picture of {what} could be decoded "
                          f"({len(refused)} packet(s) refused: {refused[0] if refused else 'no output'})")
    for q in enc.encode(None):
        out.mux(q)


def _log_refused(path: Path, refused: list[str], total: int) -> None:
    if refused:
        log.warning("clip %s: %d of %d packet(s) could not be decoded and were skipped (first: %s)",
                    path.name, len(refused), total, refused[0])


def _decoder(info: StreamInfo):
    """A decoder for a run's packets. They are all Annex B with their parameter sets in band (the readers'
    mp4toannexb filters), so an ``avcC`` / ``hvcC`` extradata (a recorded MP4 segment's) is not given to it: with one
    it parses every packet as length-prefixed and refuses it (an H.265 camera's clips and pictures cut from its
    recordings had no picture at all)."""
    import av

    dec = av.CodecContext.create(info.codec_name, "r")
    extradata = info.extradata
    if info.codec_name in ("h264", "hevc") and extradata[:1] == b"\x01":
        extradata = info.annexb_params
    if extradata:
        dec.extradata = extradata
    return dec


def _transcode(timed, info: StreamInfo, path: Path, *, fragmented: bool, crf: int, comment: str | None = None) -> None:
    """Decode and re-encode as H.264. A packet the decoder refuses is skipped (logged) instead of failing the clip;
    raises :class:`StreamError` only when no picture at all could be decoded."""
    import av

    dec = _decoder(info)
    refused: list[str] = []
    encoded = 0

    def decoded(pkt):
        try:
            return dec.decode(pkt)
        except av.FFmpegError as exc:  # a damaged packet, or one whose headers are missing: skip it
            refused.append(str(exc))
            return []

    with av.open(str(path), "w", format="mp4", options=_FRAGMENTED if fragmented else _FASTSTART) as out:
        if comment:
            out.metadata["comment"] = comment
        enc = _h264_encoder(out, info.rate_fps, info.width_px - info.width_px % 2, info.height_px - info.height_px % 2, crf)
        last_pts = -1
        for p, pts, _dts in [*timed, (None, None, None)]:
            for frame in decoded(av.Packet(p.data) if p is not None else None):
                # after a refused packet the decoder may hand out a frame late: keep output times increasing
                t = pts if pts is not None else timed[-1][1] + 1
                last_pts = t = max(t, last_pts + 1)
                frame = frame.reformat(width=enc.width, height=enc.height, format="yuv420p")
                frame.pts = t
                frame.time_base = MUX_TIME_BASE
                for q in enc.encode(frame):
                    out.mux(q)
                encoded += 1
        _finish_h264(enc, out, encoded, refused, f"the {info.codec_name} clip")
    _log_refused(path, refused, len(timed))


# codecs whose extradata is start-code headers that may equally stand in the bitstream before a keyframe
_INBAND_HEADER_CODECS = {"mpeg4", "mpeg1video", "mpeg2video"}


def with_inband_headers(data: bytes, info: StreamInfo) -> bytes:
    """A keyframe with the stream's decoder headers in front (what FFmpeg's ``dump_extra`` does).

    MPEG-4 Part 2 from an MP4 file keeps its VOL header only in the container's extradata, and PyAV cannot give
    extradata to a stream added for remuxing: a segment written without it in-band cannot be decoded again.
    """
    extradata = info.extradata
    if info.codec_name not in _INBAND_HEADER_CODECS or not extradata.startswith(b"\0\0\x01") or data.startswith(extradata):
        return data
    return extradata + data


def segment_extension(codec_name: str) -> str:
    """Recorded segments: MP4 for H.264/HEVC, Matroska for anything else (MJPEG...), always without re-encoding."""
    return "mp4" if codec_name in ("h264", "hevc") else "mkv"


def read_segment_packets(path: str | Path, start_ns: int, *,
                         growing: bool = False) -> tuple[StreamInfo, list[EncodedPacket]]:
    """Packets of a recorded segment, with capture time = ``start_ns`` + their pts. Raises :class:`InputError`.

    ``growing``: the segment is being written, so a fragment half written at its end is expected, not damage (no
    warning; the caller takes the newest packets from elsewhere)."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"cannot read recording {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise InputError(f"recording {path} has no video stream")
        stream = container.streams.video[0]
        info = stream_info(stream)
        bsf = _annexb_filter(stream)
        packets: list[EncodedPacket] = []
        first_pts = None
        try:
            for raw in container.demux(stream):
                for pkt in (bsf.filter(raw) if bsf is not None else [raw]) if raw.size else []:
                    if pkt.pts is None:
                        continue
                    if first_pts is None:
                        first_pts = pkt.pts
                    t = start_ns + int((pkt.pts - first_pts) * pkt.time_base * 1_000_000_000)
                    packets.append(
                        EncodedPacket(bytes(pkt), pkt.pts, pkt.dts, pkt.time_base, bool(pkt.is_keyframe), t)
                    )
        except av.FFmpegError as exc:
            (log.debug if growing else log.warning)("recording %s is damaged after %d packets: %s", path,
                                                    len(packets), exc)
    return info, packets


def stream_info(stream) -> StreamInfo:
    """StreamInfo of a PyAV input video stream."""
    ctx = stream.codec_context
    extradata = bytes(ctx.extradata or b"")
    rate = stream.average_rate or stream.guessed_rate
    return StreamInfo(
        codec_name=ctx.name,
        width_px=int(ctx.width or 0),
        height_px=int(ctx.height or 0),
        rate_fps=Fraction(rate) if rate else None,
        extradata=extradata,
        annexb_params=annexb_params_of(ctx.name, extradata),
    )


def _annexb_filter(stream):
    """A bitstream filter turning MP4-style H.264/HEVC into Annex B, or None when not needed."""
    import av

    ctx = stream.codec_context
    extradata = bytes(ctx.extradata or b"")
    if ctx.name in ("h264", "hevc") and extradata and extradata[:1] == b"\x01":
        return av.bitstream.BitStreamFilterContext(
            "h264_mp4toannexb" if ctx.name == "h264" else "hevc_mp4toannexb", stream
        )
    return None


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    start_ns: int
    end_ns: int

    @property
    def size_bytes(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


def list_segments(root: str | Path, source_id: str) -> list[Segment]:
    """Finished segments of a source, oldest first."""
    d = Path(root) / source_id
    out = []
    if not d.is_dir():
        return out
    for f in [*d.glob("*_*.mp4"), *d.glob("*_*.mkv")]:
        try:
            a, b = f.stem.split("_", 1)
            out.append(Segment(f, int(a), int(b)))
        except ValueError:
            continue
    out.sort(key=lambda s: s.start_ns)
    return out


def part_files(root: str | Path, source_id: str) -> list[Path]:
    """Segments being written (or left behind by a crash): ``<start_ns>.part.mp4`` / ``.part.mkv``."""
    d = Path(root) / source_id
    return sorted([*d.glob("*.part.mp4"), *d.glob("*.part.mkv")]) if d.is_dir() else []


@dataclass(frozen=True, slots=True)
class RecordedVideo:
    """What is recorded of a source: capture-time ``spans`` (first_ns, last_ns) of video, oldest first (pictures
    closer than ``MAX_FRAME_GAP_NS`` joined into one span), the finished ``segments`` and the ``bytes`` on disk
    (the segment being written included)."""

    spans: tuple[tuple[int, int], ...]
    segments: int
    bytes: int

    @property
    def oldest_ns(self) -> int | None:
        return self.spans[0][0] if self.spans else None

    @property
    def newest_ns(self) -> int | None:
        return self.spans[-1][1] if self.spans else None

    def within(self, start_ns: int | None, end_ns: int | None) -> tuple[tuple[int, int], ...]:
        """The spans cut to ``[start_ns, end_ns]`` (None: open on that side)."""
        lo = -(2**63) if start_ns is None else int(start_ns)
        hi = 2**63 - 1 if end_ns is None else int(end_ns)
        return tuple((max(a, lo), min(b, hi)) for a, b in self.spans if b >= lo and a <= hi)


def recorded_video(root: str | Path | None, source_id: str, ring: PacketRing | None = None,
                   join_gap_ns: int = MAX_FRAME_GAP_NS) -> RecordedVideo:
    """The video a source has on record: its finished segments (their names hold the first and last capture
    time), the segment being written (from its start to the ring's newest packet) and the pre-event ring."""
    raw: list[tuple[int, int]] = []
    segments = 0
    size = 0
    if root is not None:
        for seg in list_segments(root, source_id):
            raw.append((seg.start_ns, seg.end_ns))
            segments += 1
            size += seg.size_bytes
        newest = ring.newest_ns if ring is not None else None
        for part in part_files(root, source_id):
            size += _size(part)
            try:
                start = int(part.name.split(".part.", 1)[0])
            except ValueError:
                continue
            if newest is not None and newest >= start:  # being written now: up to the newest packet
                raw.append((start, newest))
    if ring is not None and (oldest := ring.oldest_ns) is not None and (newest := ring.newest_ns) is not None:
        raw.append((oldest, newest))
    spans: list[list[int]] = []
    for a, b in sorted(raw):
        if spans and a <= spans[-1][1] + join_gap_ns:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    return RecordedVideo(tuple((a, b) for a, b in spans), segments, size)


def recover_parts(root: str | Path, source_id: str) -> list[Path]:
    """Finish the ``.part`` segments a crash left behind; call it before a recorder for the source starts.

    Each is renamed ``<start_ns>_<end_ns>.<ext>``, ``end_ns`` from the capture time of its last readable packet, or
    deleted when it holds no readable packet (killed before its first fragment reached the disk). Returns the
    finished segment paths.
    """
    finished = []
    for part in part_files(root, source_id):
        name, ext = part.name.split(".part.", 1)
        try:
            start_ns = int(name)
            _info, packets = read_segment_packets(part, start_ns)
        except (ValueError, InputError) as exc:
            log.warning("recording %s: deleting unreadable leftover %s (%s)", source_id, part.name, exc)
            part.unlink(missing_ok=True)
            continue
        if not packets:
            log.warning("recording %s: deleting leftover %s: it holds no video", source_id, part.name)
            part.unlink(missing_ok=True)
            continue
        end_ns = max(p.capture_time_ns for p in packets)
        final = part.with_name(f"{start_ns}_{end_ns}.{ext}")
        os.replace(part, final)
        log.warning("recording %s: recovered %s (%d packets, %.1f s) left by an unclean stop", source_id,
                    final.name, len(packets), (end_ns - start_ns) / 1e9)
        finished.append(final)
    return finished


def enforce_retention(root: str | Path, source_id: str, *, max_age_s: float | None, max_total_bytes: int | None,
                      now_ns: int | None = None) -> list[Path]:
    """Delete the oldest finished segments beyond the age or total-size limit. Returns the deleted paths.

    The total counts the ``.part`` segment being written too (it is never deleted here). The size rule always keeps
    the newest finished segment: a cap below one segment's size leaves that one rather than no recording at all.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    segments = list_segments(root, source_id)
    deleted = []
    total = sum(s.size_bytes for s in segments) + sum(_size(f) for f in part_files(root, source_id))
    for i, s in enumerate(segments):
        too_old = max_age_s is not None and now_ns - s.end_ns > max_age_s * 1e9
        too_big = max_total_bytes is not None and total > max_total_bytes and i < len(segments) - 1
        if not (too_old or too_big):
            break
        total -= s.size_bytes
        s.path.unlink(missing_ok=True)
        deleted.append(s.path)
    if deleted:
        log.info("retention for %s: deleted %d segments", source_id, len(deleted))
    return deleted


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


RECORDING, FAILING, OFF = "recording", "failing", "off"


@dataclass(frozen=True, slots=True)
class RecordingStatus:
    """Whether a camera's video is being kept (:meth:`SegmentRecorder.status`), for the API, metrics and alarms.

    ``state``: ``recording`` (on, nothing failing: writing, or waiting for the camera's next keyframe), ``failing``
    (segments cannot be started, written or finished: the folder gone or unwritable, the disk full, a mount lost;
    the camera is still read and analysed, but no video is kept for clips and evidence) or ``off`` (recording
    disabled for the camera, or its recorder closed). While failing: ``reason`` (short, no file path),
    ``since_ns`` (UTC ns of the first failure of this spell), ``last_failure_ns`` (the newest failed attempt: the
    recorder retries at each keyframe) and ``failures`` (in this spell). ``recovered_ns``: when recording last
    resumed after a failure (the wall-clock time the first complete segment after it began), else None.
    """

    state: str
    reason: str | None = None
    since_ns: int | None = None
    last_failure_ns: int | None = None
    failures: int = 0
    recovered_ns: int | None = None
    segments_written: int = 0

    @property
    def failing(self) -> bool:
        return self.state == FAILING

    def as_dict(self) -> dict:
        return {"state": self.state, "reason": self.reason, "since_ns": self.since_ns,
                "last_failure_ns": self.last_failure_ns, "failures": self.failures, "recovered_ns": self.recovered_ns,
                "segments_written": self.segments_written}


RECORDING_OFF = RecordingStatus(OFF)  # a camera whose recording is disabled


def _short_reason(what: str, exc: BaseException | None, root: Path) -> str:
    """``what`` and the error's own words, without the file path (paths may name mounts and users; the log keeps
    the full text), at most 200 characters."""
    if exc is None:
        return what
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).replace(str(root), "<recordings>").split())
    return f"{what}: {text}"[:200]


class SegmentRecorder:
    """Packet sink that records one source into MP4 segments (remux, no re-encode).

    Args:
        root: recordings folder; files go to ``root/source_id/``.
        segment_s: target segment length; a new segment starts at the first keyframe after it.
        max_age_s, max_total_bytes: retention, applied each time a segment is finished.

    :meth:`status` says whether it is recording or failing (and why), read from any thread: a failure is logged
    once, and the status is what makes it visible (``GET /api/sources``, health, metrics, ``recording_failed``).
    """

    def __init__(self, root: str | Path, source_id: str, *, segment_s: float = 60.0,
                 max_age_s: float | None = 24 * 3600.0, max_total_bytes: int | None = 10 * 1024**3) -> None:
        self.root = Path(root)
        self.source_id = source_id
        self.segment_ns = int(segment_s * 1e9)
        self.max_age_s = max_age_s
        self.max_total_bytes = max_total_bytes
        self._info: StreamInfo | None = None
        self._out = None
        self._stream = None
        self._part: Path | None = None
        self._ext = "mp4"
        self._start_ns = 0
        self._last_ns = 0
        self._retimer = Retimer()
        self._write_failed = False  # a mux of the open segment failed: it may hold less than was muxed
        self._bytes_muxed = 0  # payload muxed into the open segment: a finished file holds at least this
        self._open_error: str | None = None  # why the last segment could not be started (said once)
        self._lock = threading.Lock()
        self._cap_warned = False
        self.segments_written = 0
        # the status: its own lock, so a reader of it never waits on a write that hangs (a lost network mount)
        self._status_lock = threading.Lock()
        self._status = RecordingStatus(RECORDING)
        self._opened_wall_ns = 0  # wall-clock time the open segment was started
        self._segment_error: str | None = None  # why writing the open segment failed (its status reason)
        self.recovered = recover_parts(self.root, source_id)  # a crash's leftovers, before anything new is written

    def set_info(self, info: StreamInfo) -> None:
        with self._lock:
            if not info.same_format(self._info):
                self._close_segment()
            self._info = info

    def push(self, packet: EncodedPacket) -> None:
        import av

        with self._lock:
            if self._info is None:
                return
            if self._out is not None and packet.is_keyframe and packet.capture_time_ns - self._start_ns >= self.segment_ns:
                self._close_segment()
            if self._out is None:
                if not packet.is_keyframe:
                    return
                try:
                    self._open_segment(packet.capture_time_ns)
                except (OSError, av.FFmpegError, ValueError) as exc:
                    # the folder gone, read-only or full: the camera goes on being read and analysed, unrecorded,
                    # and the next keyframe tries again (said once, not at every keyframe)
                    if str(exc) != self._open_error:
                        log.error("recording %s: cannot start a segment (%s); not recording until it can",
                                  self.source_id, exc)
                    self._open_error = str(exc)
                    self._failed(_short_reason("cannot start a segment", exc, self.root))
                    return
                if self._open_error is not None:
                    log.warning("recording %s: recording again", self.source_id)
                    self._open_error = None
            pts, dts = self._retimer.next(packet)
            data = packet.data
            if packet.is_keyframe and self._info.codec_name in ("h264", "hevc"):
                # every segment decodable on its own: an HEVC camera may send its VPS/SPS/PPS only once (SDP, IDR)
                data = ensure_params(data, self._info.annexb_params, self._info.codec_name)
            elif packet.is_keyframe:
                data = with_inband_headers(data, self._info)
            pkt = av.Packet(data)
            pkt.pts, pkt.dts, pkt.time_base = pts, dts, MUX_TIME_BASE
            pkt.is_keyframe = packet.is_keyframe
            pkt.stream = self._stream
            try:
                self._out.mux(pkt)
                self._last_ns = packet.capture_time_ns
                self._bytes_muxed += len(data)
            except av.FFmpegError as exc:
                log.warning("recording %s: mux failed (%s); starting a new segment", self.source_id, exc)
                self._segment_error = _short_reason("writing a segment failed", exc, self.root)
                self._write_failed = True
                self._close_segment()

    def status(self) -> RecordingStatus:
        """Recording, failing (why, since when) or off; safe from any thread, never waits on a write."""
        with self._status_lock:
            return replace(self._status, segments_written=self.segments_written)

    def _failed(self, reason: str) -> None:
        """A segment could not be started, written or finished: failing from now (or still, since the first)."""
        now = time.time_ns()
        with self._status_lock:
            st = self._status
            if st.state == FAILING:
                self._status = replace(st, reason=reason, last_failure_ns=now, failures=st.failures + 1)
            else:
                self._status = replace(st, state=FAILING, reason=reason, since_ns=now, last_failure_ns=now, failures=1)

    def _written(self) -> None:
        """A complete segment is on disk: recording again (from when that segment began) if it was failing."""
        with self._status_lock:
            st = self._status
            if st.state == FAILING:
                log.warning("recording %s: segments are written again (after %d failure(s) since %s ns)",
                            self.source_id, st.failures, st.since_ns)
                self._status = RecordingStatus(RECORDING, recovered_ns=self._opened_wall_ns or time.time_ns())

    def _open_segment(self, start_ns: int) -> None:
        import av

        d = self.root / self.source_id
        d.mkdir(parents=True, exist_ok=True)
        info = self._info
        self._ext = segment_extension(info.codec_name)
        self._part = d / f"{start_ns}.part.{self._ext}"
        if self._ext == "mp4":
            out = av.open(str(self._part), "w", format="mp4", options=_SEGMENT_MP4)
        else:
            out = av.open(str(self._part), "w", format="matroska", options=_SEGMENT_MKV)
        try:
            stream = out.add_mux_stream(info.codec_name, rate=info.rate_fps or 25,
                                        width=info.width_px, height=info.height_px)
        except BaseException:
            with contextlib.suppress(Exception):
                out.close()
            raise
        stream.time_base = MUX_TIME_BASE
        self._out, self._stream = out, stream  # only a segment that could be opened is ever muxed into
        self._start_ns = start_ns
        self._last_ns = start_ns
        self._write_failed = False
        self._bytes_muxed = 0
        self._retimer = Retimer()
        self._opened_wall_ns = time.time_ns()
        self._segment_error = None

    def _close_segment(self) -> None:
        if self._out is None:
            return
        try:
            self._out.close()
        except Exception as exc:  # noqa: BLE001 - a broken segment must not stop recording
            log.warning("recording %s: closing segment failed: %s", self.source_id, exc)
            self._write_failed = True  # its last fragment, and the trailer, may not be on disk
            self._segment_error = self._segment_error or _short_reason("closing a segment failed", exc, self.root)
        part = self._part
        renamed = False
        try:
            if _size(part) < self._bytes_muxed:  # a write failed unreported (PyAV's close does not say)
                self._write_failed = True
            if self._write_failed:
                kept = self._settle_failed_segment()
                self._failed(self._segment_error or ("a segment was cut short: not all of it reached the disk" if kept
                             else "a segment was lost: its file holds no readable video (disk full, or folder gone)"))
                if not kept:
                    return
            final = part.with_name(f"{self._start_ns}_{self._last_ns}.{self._ext}")
            os.replace(part, final)
            renamed = True
            self.segments_written += 1
            if not self._write_failed:
                self._written()
            enforce_retention(self.root, self.source_id, max_age_s=self.max_age_s, max_total_bytes=self.max_total_bytes)
            if self.max_total_bytes is not None and not self._cap_warned and _size(final) > self.max_total_bytes:
                self._cap_warned = True
                log.warning("recording %s: the size cap (%d bytes) is smaller than one segment (%d bytes); only the "
                            "newest segment is kept", self.source_id, self.max_total_bytes, _size(final))
        except OSError as exc:  # the folder gone or read-only (a failing disk): the part stays for recover_parts
            log.error("recording %s: segment %s: finishing it or the retention after it failed (%s)", self.source_id,
                      part.name, exc)
            if not renamed:  # the segment is not where clips are cut from (a retention failure alone is only logged)
                self._failed(_short_reason("cannot finish a segment", exc, self.root))
        finally:
            # the container is closed: muxing into it again crashed the whole process (a segfault in FFmpeg)
            self._out = self._stream = self._part = None

    def _settle_failed_segment(self) -> bool:
        """A segment whose writing failed (a full disk): what was muxed is not all on disk, so it is named by its last
        readable packet, as :func:`recover_parts` does after a crash, or deleted when it holds none (one a second on
        a full disk, named as segments, they joined into hours of "recorded" video with nothing in it). True: keep."""
        try:
            _info, packets = read_segment_packets(self._part, self._start_ns)
        except (ValueError, InputError, OSError):
            packets = []
        if not packets:
            self._part.unlink(missing_ok=True)
            return False
        self._last_ns = max(p.capture_time_ns for p in packets)
        return True

    def close(self) -> None:
        with self._lock:
            self._close_segment()
        with self._status_lock:
            self._status = RecordingStatus(OFF, recovered_ns=self._status.recovered_ns)


# a clip counts as covering its window when its video reaches this close to both ends without an outage inside
_EDGE_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ClipCoverage:
    """What a clip shows of its window ``[start_ns, end_ns]``: capture-time ``spans`` (first_ns, last_ns) of video,
    a new span after each outage. ``partial`` when it starts or ends more than a second inside the window or has an
    outage in it.

    A clip whose recordings changed format inside it (codec or picture size: a camera reconfigured, a day/night
    profile) is decoded and re-encoded at one size instead of copied: ``formats`` lists each format's run,
    ``(first_ns, codec, width_px, height_px)`` oldest first, and ``reencoded_px`` the clip's ``(width_px, height_px)``.
    Both are empty / None for a clip copied packet for packet (and in records written before they existed).

    ``first_ns`` is the capture time of the clip's first picture (its video time 0: the keyframe at or before the
    window's start), so a player's position maps to a capture time; None in records written before it existed.
    """

    start_ns: int
    end_ns: int
    spans: tuple[tuple[int, int], ...]
    formats: tuple[tuple[int, str, int, int], ...] = ()
    reencoded_px: tuple[int, int] | None = None
    first_ns: int | None = None

    @property
    def partial(self) -> bool:
        return not (len(self.spans) == 1 and self.spans[0][0] <= self.start_ns + _EDGE_NS
                    and self.spans[0][1] >= self.end_ns - _EDGE_NS)

    @property
    def reencoded(self) -> bool:
        return self.reencoded_px is not None

    @property
    def last_ns(self) -> int:
        return self.spans[-1][1]

    def comment(self) -> str:
        spans = ",".join(f"{a}-{b}" for a, b in self.spans)
        reencoded = ""
        if self.reencoded_px is not None:
            runs = ",".join(f"{c}:{w}x{h}@{t}" for t, c, w, h in self.formats)
            reencoded = f" reencoded={runs}->{self.reencoded_px[0]}x{self.reencoded_px[1]}"
        first = f" first_ns={self.first_ns}" if self.first_ns is not None else ""
        return (f"seawatch window_ns={self.start_ns}-{self.end_ns} covered_ns={spans}{reencoded}{first} "
                f"{'partial' if self.partial else 'complete'}")

    @classmethod
    def parse(cls, comment: str) -> "ClipCoverage | None":
        """The record :meth:`comment` wrote (any version); None when it is not one or is damaged."""
        fields = dict(f.split("=", 1) for f in comment.split() if "=" in f)
        try:
            a, b = fields["window_ns"].split("-")
            spans = tuple(tuple(int(x) for x in sp.split("-")) for sp in fields["covered_ns"].split(","))
            formats: tuple[tuple[int, str, int, int], ...] = ()
            size = None
            if "reencoded" in fields:
                runs, out = fields["reencoded"].split("->")
                size = _parse_size(out)
                parsed = []
                for run in runs.split(","):
                    codec, rest = run.split(":", 1)
                    wh, t = rest.split("@")
                    parsed.append((int(t), codec, *_parse_size(wh)))
                formats = tuple(parsed)
            first = int(fields["first_ns"]) if "first_ns" in fields else None
            return cls(int(a), int(b), spans, formats, size, first)
        except (KeyError, ValueError):
            return None


def _parse_size(text: str) -> tuple[int, int]:
    w, h = text.split("x")
    return int(w), int(h)


def read_clip_coverage(path: str | Path) -> ClipCoverage | None:
    """The coverage a clip written by :func:`cut_clip` records in its ``comment`` tag; None for other files."""
    import av

    try:
        with av.open(str(path)) as c:
            comment = c.metadata.get("comment", "")
    except (av.FFmpegError, OSError):
        return None
    return ClipCoverage.parse(comment) if comment.startswith("seawatch ") else None


def cut_clip(
    path: str | Path,
    start_ns: int,
    end_ns: int,
    *,
    recordings: str | Path | None = None,
    source_id: str | None = None,
    ring: PacketRing | None = None,
) -> Path:
    """Write the clip of a source for ``[start_ns, end_ns]`` to ``path`` (H.264 MP4, faststart).

    Packets come from finished segments under ``recordings/source_id`` and then from the pre-event ``ring`` for
    whatever is newer. The clip starts at the last keyframe at or before ``start_ns`` (after an outage: the first
    keyframe after it). Raises :class:`StreamError` when no video was captured inside the window (never older video
    instead). A window only partly covered gives what there is; the MP4's ``comment`` tag records the coverage
    (:func:`read_clip_coverage`). Packets are copied as recorded, except when the window spans more than one format
    (codec or picture size): then the clip is re-encoded at one size (:func:`reencode_size_px`,
    :func:`write_mp4_reencoded`) and its coverage record says so.
    """
    return _cut(path, start_ns, end_ns, recordings=recordings, source_id=source_id, ring=ring)[0]


def _gather_runs(start_ns: int, end_ns: int, *, recordings, source_id, ring) -> list[tuple[StreamInfo, list[EncodedPacket]]]:
    """The recorded packets around ``[start_ns, end_ns]`` (finished segments, then the ring for what is newer) as
    runs of one format (codec and picture size), oldest first; a run's info is its newest (same format: the
    parameter sets of the latest recording)."""
    runs: list[tuple[StreamInfo, list[EncodedPacket]]] = []

    def add(run_info: StreamInfo, run_packets: list[EncodedPacket]) -> None:
        if not run_packets:
            return
        if runs and runs[-1][0].same_format(run_info):
            runs[-1][1].extend(run_packets)
            runs[-1] = (run_info, runs[-1][1])
        else:
            runs.append((run_info, list(run_packets)))

    if recordings is not None and source_id is not None:
        parts = part_files(recordings, source_id) if ring is not None else []  # before the segments: see _part_packets
        segments = list_segments(recordings, source_id)
        for seg in segments:
            if seg.end_ns < start_ns - 10_000_000_000 or seg.start_ns > end_ns:
                continue
            try:
                seg_info, seg_packets = read_segment_packets(seg.path, seg.start_ns)
            except InputError as exc:  # one damaged file must not take the video around it with it
                log.warning("video of %s: skipping unreadable recording %s: %s", source_id, seg.path.name, exc)
                continue
            add(seg_info, seg_packets)
        for part in parts:
            add(*_part_packets(part, start_ns, end_ns, ring, segments))
        if ring is not None and ring.info is not None and ring.info.extradata:
            for i, (run_info, run_packets) in enumerate(runs):
                if (not run_info.extradata and ring.info.same_format(run_info)
                        and ring.info.codec_name == run_info.codec_name):
                    # segments recorded before their decoder headers were kept (MPEG-4 Part 2 from MP4): the live
                    # stream's
                    runs[i] = (replace(run_info, extradata=ring.info.extradata), run_packets)
    if ring is not None and ring.info is not None:
        newest = runs[-1][1][-1].capture_time_ns if runs else None
        ring_packets = ring.window(start_ns, end_ns)
        if newest is not None:
            ring_packets = [p for p in ring_packets if p.capture_time_ns > newest]
            # only continue from the ring at a keyframe unless it follows on directly in the same format
            if ring_packets and not ring_packets[0].is_keyframe and (
                    ring_packets[0].capture_time_ns - newest > 1e9 or not ring.info.same_format(runs[-1][0])):
                while ring_packets and not ring_packets[0].is_keyframe:
                    ring_packets.pop(0)
        add(ring.info, ring_packets)
    return runs


def _part_packets(part: Path, start_ns: int, end_ns: int, ring: PacketRing,
                  segments: list[Segment]) -> tuple[StreamInfo | None, list[EncodedPacket]]:
    """What only the segment being written (``part``) holds for a window: its packets older than the ring's first.

    The recorder closes a segment at the first keyframe ``segment_s`` after its start, while the ring keeps
    ``ring_s`` of video or less (its byte cap: a camera of high bit rate), so video can be older than the ring and in
    no finished segment yet; ``recorded_video`` lists it as recorded. The part's MP4 fragments (one per GOP) reach the
    disk as each GOP completes; what is newer, the last one perhaps half written, is taken from the ring.
    ``(None, [])`` when the ring reaches back to the window's start, the part begins after the window or holds nothing
    older than the ring, or it was finished meanwhile: ``segments`` (listed after the parts) then holds it, or, if
    it was renamed after that listing too, its finished file is read here.
    """
    oldest = ring.oldest_ns
    try:
        part_start = int(part.name.split(".part.", 1)[0])
    except ValueError:
        return None, []
    if oldest is None or start_ns >= oldest or part_start > end_ns or part_start >= oldest:
        return None, []
    if any(seg.start_ns == part_start for seg in segments):
        return None, []  # finished between the two listings: read with the segments
    try:
        info, packets = read_segment_packets(part, part_start, growing=True)
    except InputError:
        done = [s for s in list_segments(part.parent.parent, part.parent.name) if s.start_ns == part_start]
        if not done:
            return None, []
        try:
            info, packets = read_segment_packets(done[0].path, part_start)
        except InputError:
            return None, []
    return info, [p for p in packets if p.capture_time_ns < oldest]


def _cut(path, start_ns: int, end_ns: int, *, recordings, source_id, ring) -> tuple[Path, ClipCoverage]:
    if end_ns <= start_ns:
        raise InputError(f"clip window is empty: start {start_ns} >= end {end_ns}")
    runs = _gather_runs(start_ns, end_ns, recordings=recordings, source_id=source_id, ring=ring)
    packets = [p for _, run_packets in runs for p in run_packets]
    window = select_window(packets, start_ns, end_ns)
    if not window:
        where = f"source {source_id!r}" if source_id else "the pre-event buffer"
        raise StreamError(f"no recorded video of {where} between {start_ns} and {end_ns} ns")
    spans = coverage_spans(window, window[0].capture_time_ns, end_ns)
    spans = [(max(a, start_ns), b) for a, b in spans if b >= start_ns]
    coverage = ClipCoverage(int(start_ns), int(end_ns), tuple(spans), first_ns=window[0].capture_time_ns)
    # the window's share of each run (select_window returns a slice of ``packets``)
    first = next(i for i, p in enumerate(packets) if p is window[0])
    win_runs: list[tuple[StreamInfo, list[EncodedPacket]]] = []
    i = 0
    for run_info, run_packets in runs:
        part = packets[max(first, i):min(first + len(window), i + len(run_packets))]
        i += len(run_packets)
        if part:
            win_runs.append((run_info, part))
    if len(win_runs) == 1:  # one format: copied as recorded (a transcode only for codecs other than H.264)
        if coverage.partial:
            log.info("clip %s of %s covers only part of its window: %s", Path(path).name, source_id or "ring",
                     coverage.comment())
        return write_mp4(window, win_runs[0][0], path, comment=coverage.comment()), coverage
    size = reencode_size_px([run_info for run_info, _ in win_runs])
    coverage = replace(coverage, reencoded_px=size, formats=tuple(
        (max(int(start_ns), run_packets[0].capture_time_ns), run_info.codec_name, run_info.width_px,
         run_info.height_px) for run_info, run_packets in win_runs))
    t = time.monotonic()
    out, frames = write_mp4_reencoded(win_runs, size, path, comment=coverage.comment())
    log.info("clip %s of %s: the recordings change format inside its window (%s); re-encoded at %dx%d with libx264 "
             "(%d pictures, %.1f s of video, in %.1f s): %s", Path(path).name, source_id or "ring",
             " then ".join(f"{c} {w}x{h}" for _, c, w, h in coverage.formats), *size, frames,
             (window[-1].capture_time_ns - window[0].capture_time_ns) / 1e9, time.monotonic() - t, coverage.comment())
    return out, coverage


def _decoder_packet(p: EncodedPacket | None, pts: int | None, dts: int | None, info: StreamInfo):
    """An ``av.Packet`` for a decoder from a recorded packet (keyframes with their parameter sets in band), at
    ``pts``/``dts`` in MUX_TIME_BASE ticks; None (flush the decoder) for None."""
    import av

    if p is None:
        return None
    data = p.data
    if p.is_keyframe:
        data = (ensure_params(data, info.annexb_params, info.codec_name) if info.codec_name in ("h264", "hevc")
                else with_inband_headers(data, info))
    pkt = av.Packet(data)
    pkt.pts, pkt.dts, pkt.time_base = pts, dts, MUX_TIME_BASE
    return pkt


def picture_at(at_ns: int, *, recordings: str | Path | None = None, source_id: str | None = None,
               ring: PacketRing | None = None, max_gap_ns: int = MAX_FRAME_GAP_NS) -> tuple[int, np.ndarray]:
    """The recorded picture of a source nearest the capture time ``at_ns``, as ``(its capture time, BGR image)``,
    decoded from the keyframe before it. Raises :class:`StreamError` when no picture was recorded within
    ``max_gap_ns`` of it (camera out, not recorded yet, or deleted by retention)."""
    import av

    at_ns = int(at_ns)
    runs = _gather_runs(at_ns - max_gap_ns, at_ns + max_gap_ns, recordings=recordings, source_id=source_id, ring=ring)
    near = [(abs(p.capture_time_ns - at_ns), k) for k, (_, packets) in enumerate(runs) for p in packets]
    if not near or min(near)[0] > max_gap_ns:
        raise StreamError(f"no recorded picture of {source_id or 'the pre-event buffer'!r} within "
                          f"{max_gap_ns / 1e9:g} s of {at_ns} ns")
    info, packets = runs[min(near)[1]]
    # from the keyframe at or before the picture (the one after an outage) to the last packet shown by then
    window = (select_window(packets, at_ns, at_ns + max_gap_ns) or select_window(packets, at_ns - max_gap_ns, at_ns))
    if not window:
        raise StreamError(f"no decodable picture of {source_id!r} near {at_ns} ns (no keyframe before it)")
    times = {pts: p.capture_time_ns for p, pts, _ in _rebase(window)}
    dec = _decoder(info)
    best: tuple[int, int, np.ndarray] | None = None
    for p, pts, dts in [*_rebase(window), (None, None, None)]:
        try:
            frames = dec.decode(_decoder_packet(p, pts, dts, info))
        except av.FFmpegError as exc:  # a damaged packet: the pictures around it may still decode
            log.info("picture of %s near %s ns: a packet did not decode: %s", source_id, at_ns, exc)
            continue
        for frame in frames:
            t = times.get(frame.pts)
            if t is None:
                continue
            if best is None or abs(t - at_ns) < best[0]:
                best = (abs(t - at_ns), t, frame.to_ndarray(format="bgr24"))
    if best is None or best[0] > max_gap_ns:
        raise StreamError(f"no picture of {source_id!r} near {at_ns} ns could be decoded")
    return best[1], best[2]


def reencode_size_px(infos: list[StreamInfo]) -> tuple[int, int]:
    """The picture size of a clip re-encoded from runs of several sizes: the smallest that holds each run at its own
    resolution (widest width x tallest height, rounded up to even for 4:2:0). When the runs share an aspect ratio
    that is the largest run's size; no run is ever scaled down, so no recorded detail is lost to the change."""
    w = max(i.width_px for i in infos)
    h = max(i.height_px for i in infos)
    return w + w % 2, h + h % 2


def _fit_px(width_px: int, height_px: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(width, height, x, y) of a ``width_px`` x ``height_px`` picture scaled to fit ``size`` with its aspect ratio
    kept, centred (even sizes and offsets, for 4:2:0 chroma)."""
    cw, ch = size
    scale = min(cw / width_px, ch / height_px)
    w = min(cw, max(2, round(width_px * scale / 2) * 2))
    h = min(ch, max(2, round(height_px * scale / 2) * 2))
    return w, h, (cw - w) // 4 * 2, (ch - h) // 4 * 2


def _on_canvas(frame, fit: tuple[int, int, int, int], size: tuple[int, int]):
    """A decoded picture scaled into its place on a black ``size`` canvas, as a yuv420p VideoFrame."""
    import av

    w, h, x, y = fit
    pic = frame.reformat(width=w, height=h, format="yuv420p")
    if (w, h) == size:
        return pic
    cw, ch = size
    src = pic.to_ndarray().reshape(-1)  # I420: Y (h*w), U (h/2*w/2), V (h/2*w/2)
    canvas = np.empty(cw * ch * 3 // 2, np.uint8)
    planes = [(0, 0, cw, ch, w, h, x, y, 16), (w * h, cw * ch, cw // 2, ch // 2, w // 2, h // 2, x // 2, y // 2, 128)]
    planes.append((planes[1][0] + w * h // 4, planes[1][1] + cw * ch // 4, *planes[1][2:]))
    for s0, d0, dw, dh, sw, sh, dx, dy, black in planes:
        dst = canvas[d0:d0 + dw * dh].reshape(dh, dw)
        dst[:] = black  # limited-range black
        dst[dy:dy + sh, dx:dx + sw] = src[s0:s0 + sw * sh].reshape(sh, sw)
    return av.VideoFrame.from_ndarray(canvas.reshape(ch * 3 // 2, cw), format="yuv420p")


def write_mp4_reencoded(runs: list[tuple[StreamInfo, list[EncodedPacket]]], size: tuple[int, int],
                        path: str | Path, *, crf: int = 23, comment: str | None = None) -> tuple[Path, int]:
    """Write runs of packets in different formats (codec / picture size) as one H.264 MP4 of ``size`` (width_px,
    height_px): each run decoded with its own decoder, scaled to fit with its aspect ratio kept (black bars where it
    differs) and encoded with libx264 (``veryfast``, yuv420p, ``+faststart``, as :func:`write_mp4`'s transcode).

    Picture times are those :func:`write_mp4` gives the same packets, so the capture-time spacing is kept across
    the changes. A packet the decoder refuses is skipped (logged). Returns (path, pictures written); raises
    :class:`StreamError` when no picture could be decoded or FFmpeg fails.
    """
    import av

    path = Path(path)
    if not runs or not runs[0][1] or not runs[0][1][0].is_keyframe:
        raise StreamError(f"cannot write {path}: the packets do not start at a keyframe")
    timed = _rebase([p for _, packets in runs for p in packets])
    refused: list[str] = []
    encoded = 0
    with _atomic_mp4(path) as tmp:
        with av.open(str(tmp), "w", format="mp4", options=_FASTSTART) as out:
            if comment:
                out.metadata["comment"] = comment
            enc = _h264_encoder(out, runs[-1][0].rate_fps, *size, crf)
            last_pts = -1
            k = 0
            for info, packets in runs:
                dec = _decoder(info)
                fit = _fit_px(info.width_px, info.height_px, size)
                run_timed = timed[k:k + len(packets)]
                k += len(packets)
                for p, pts, dts in [*run_timed, (None, None, None)]:
                    try:
                        frames = dec.decode(_decoder_packet(p, pts, dts, info))
                    except av.FFmpegError as exc:  # a damaged packet: skip it, keep the rest of the clip
                        refused.append(str(exc))
                        continue
                    for frame in frames:
                        t = frame.pts if frame.pts is not None else (pts if pts is not None else last_pts + 1)
                        last_pts = t = max(t, last_pts + 1)  # output times strictly increase, across runs too
                        pic = _on_canvas(frame, fit, size)
                        pic.pts, pic.time_base = t, MUX_TIME_BASE
                        for q in enc.encode(pic):
                            out.mux(q)
                        encoded += 1
            _finish_h264(enc, out, encoded, refused, f"the clip {path.name}")
    _log_refused(path, refused, len(timed))
    return path, encoded


def save_jpeg(image: np.ndarray, path: str | Path, quality: int = 90) -> Path:
    """Write a BGR ``(H, W, 3) uint8`` image as JPEG. Raises :class:`InputError` for a bad image."""
    import cv2

    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"snapshot {path}: need an (H, W, 3) uint8 image, got {getattr(image, 'shape', type(image))}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InputError(f"snapshot {path}: JPEG encoding failed")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    return path


def ffprobe_summary(path: str | Path) -> dict:
    """Codec, size, frame count and top-level MP4 box order of a file (for tests and the benchmark)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for p in c.demux(s) if p.size)
        summary = {"codec": s.codec_context.name, "width": s.codec_context.width,
                   "height": s.codec_context.height, "packets": n,
                   "duration_s": float(c.duration / 1e6) if c.duration else None}
    summary["boxes"] = mp4_top_boxes(path)
    return summary


def mp4_top_boxes(path: str | Path) -> list[str]:
    """Top-level box types of an MP4 file in order (``moov`` before ``mdat`` means faststart)."""
    boxes = []
    with open(path, "rb") as f:
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            size = int.from_bytes(head[:4], "big")
            kind = head[4:8].decode("latin-1")
            if size == 1:
                size = int.from_bytes(f.read(8), "big")
                f.seek(size - 16, 1)
            elif size == 0:
                boxes.append(kind)
                break
            else:
                f.seek(size - 8, 1)
            boxes.append(kind)
    return boxes


_SAFE_ID = __import__("re").compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class ClipNotReady(StreamError):
    """The clip's window ends later than the newest video of its live source (post-roll still to come): ask again
    after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ClipStore:
    """Clips and snapshots addressed by source id and time (UTC ns), cut on demand and kept as files.

    ``get(source_id, start_ns, end_ns)`` returns ``clips_dir/source_id/<start_ns>_<end_ns>.mp4``, cutting it from
    the source's recorded segments (``recordings_dir``) and its pre-event ring if it does not exist yet.

    A window of a live source (one with a ring) that ends later than the ring's newest packet may still fill up:
    ``get`` waits up to ``wait_s`` for it, and if it is still short raises :class:`ClipNotReady` rather than store a
    clip cut short under the final name for good. Once the wall clock is ``LIVE_MARGIN_S`` past the window's end,
    nothing more can arrive (the camera was out): the clip is cut from what there is, marked partial in its
    ``comment`` tag (:func:`read_clip_coverage`), and kept.
    """

    LIVE_MARGIN_S = 5.0  # capture-to-ring latency of a live source, with room to spare
    LIVE_CLOCK_S = 60.0  # a ring whose capture times are further than this from the wall clock is no live source

    def __init__(self, clips_dir: str | Path, recordings_dir: str | Path | None = None) -> None:
        self.clips_dir = Path(clips_dir)
        self.recordings_dir = Path(recordings_dir) if recordings_dir is not None else None
        self._rings: dict[str, PacketRing] = {}
        self._lock = threading.Lock()  # guards _cutting
        self._cutting: dict[Path, list] = {}  # clip path -> [its lock, requests using it]

    @staticmethod
    def _check_id(source_id: str) -> str:
        if not isinstance(source_id, str) or not _SAFE_ID.match(source_id):
            raise InputError(f"source id {source_id!r} cannot name a clip folder (letters, digits, _ . - only)")
        return source_id

    def add_ring(self, source_id: str, ring: PacketRing) -> None:
        self._rings[self._check_id(source_id)] = ring

    def path_for(self, source_id: str, start_ns: int, end_ns: int) -> Path:
        return self.clips_dir / self._check_id(source_id) / f"{int(start_ns)}_{int(end_ns)}.mp4"

    def _still_arriving_s(self, ring: PacketRing | None, end_ns: int) -> float:
        """Seconds for which video of the window's end may still arrive (0: the window can no longer grow)."""
        if ring is None:
            return 0.0
        newest, lag_ns = ring.newest_ns, ring.newest_lag_ns
        if newest is not None and newest >= end_ns:
            return 0.0
        if lag_ns is not None and abs(lag_ns) > self.LIVE_CLOCK_S * 1e9:
            return 0.0  # capture times are not wall-clock times (a replay): no "still to come" to judge by
        return max(0.0, (end_ns - time.time_ns()) / 1e9 + self.LIVE_MARGIN_S)

    def get(self, source_id: str, start_ns: int, end_ns: int, *, wait_s: float = 0.0) -> Path:
        """The clip file for the window; raises :class:`StreamError` when no video covers it and
        :class:`ClipNotReady` when its post-roll has not arrived yet (after waiting up to ``wait_s``)."""
        path = self.path_for(source_id, start_ns, end_ns)
        if path.exists():
            return path
        ring = self._rings.get(source_id)
        left_s = self._still_arriving_s(ring, end_ns)
        if left_s > 0 and wait_s > 0:
            ring.wait_until(end_ns, min(wait_s, left_s))
            left_s = self._still_arriving_s(ring, end_ns)
        if left_s > 0:
            newest = ring.newest_ns
            behind = ("has no video yet" if newest is None
                      else f"is recorded up to {(end_ns - newest) / 1e9:.1f} s before the window's end")
            raise ClipNotReady(f"the clip is not complete yet: source {source_id!r} {behind}; "
                               f"try again in {max(1, round(left_s))} s", retry_after_s=left_s)
        # two requests for one clip must not write the same file at once; other clips are cut meanwhile (a window
        # across a change of recording format is re-encoded, seconds of work that must not hold up other cameras)
        with self._lock:
            entry = self._cutting.setdefault(path, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                if path.exists():
                    return path
                return cut_clip(path, int(start_ns), int(end_ns), recordings=self.recordings_dir,
                                source_id=source_id, ring=ring)
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._cutting[path]

    def recorded(self, source_id: str) -> RecordedVideo:
        """What is on record of a source (segments, the one being written, the ring)."""
        return recorded_video(self.recordings_dir, self._check_id(source_id), self._rings.get(source_id))

    def picture_at(self, source_id: str, at_ns: int) -> tuple[int, np.ndarray]:
        """The recorded picture of a source nearest ``at_ns``: (capture time, BGR image); see :func:`picture_at`."""
        return picture_at(at_ns, recordings=self.recordings_dir, source_id=self._check_id(source_id),
                          ring=self._rings.get(source_id))

    def save_snapshot(self, frame, quality: int = 90) -> Path:
        """JPEG of a :class:`~seawatch.streams.frame.Frame` at ``clips_dir/source_id/<capture_ns>.jpg``."""
        path = self.clips_dir / self._check_id(frame.source_id) / f"{frame.capture_time_ns}.jpg"
        return save_jpeg(frame.image, path, quality)
