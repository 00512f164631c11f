"""Read images, folders and video files for the command line (``seawatch detect``).

Images are decoded with ``cv2.imdecode`` (so any path, including non-ASCII ones, works); videos with PyAV,
frame by frame, with the frame index and a timestamp in nanoseconds from the stream's presentation time stamps.
A file that cannot be used raises :class:`~seawatch.errors.InputError` naming the file and what is wrong;
:func:`iter_media` turns those into :class:`MediaError` items so a run over many files carries on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Literal

import cv2
import numpy as np

from seawatch.errors import InputError

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm"})
VIDEO_EXTS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".ts", ".mts", ".mpg", ".mpeg", ".flv",
                        ".wmv", ".h264", ".264", ".h265", ".hevc"})

Kind = Literal["image", "video"]


@dataclass(frozen=True, slots=True)
class MediaFrame:
    """One frame to analyse.

    Attributes:
        source: the file it came from.
        kind: "image" or "video".
        frame_index: index of the decoded frame in the video (0 for images).
        timestamp_ns: presentation time of the frame in the video, ns (from PTS * time base); None for images.
        image: ``(H, W, 3) uint8`` BGR.
        fps: the video's average frame rate, when known.
    """

    source: Path
    kind: Kind
    frame_index: int
    timestamp_ns: int | None
    image: np.ndarray
    fps: float | None = None


@dataclass(frozen=True, slots=True)
class MediaError:
    """A file that failed (what and why), yielded in place of its frames."""

    source: Path
    message: str


def media_kind(path: Path) -> Kind | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return None


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files to read: files as given (any extension), folders searched recursively for image and video files.

    Order is stable: arguments in the given order, each folder's files sorted by their path. Paths that do not
    exist are kept, so reading them reports the error for that argument.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted((f for f in p.rglob("*") if f.is_file() and media_kind(f) is not None),
                           key=lambda f: f.relative_to(p).as_posix())
        else:
            found = [p]
        for f in found:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to ``(H, W, 3) uint8`` BGR; InputError when missing, empty, corrupt or unsupported."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return decode_image(data, str(path))


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes (see :func:`read_image`)."""
    if not data:
        raise InputError(f"{name}: empty file")
    if data[:2] == b"\xff\xd8":
        # libjpeg decodes a cut-off JPEG into a grey-padded picture with only a warning: refuse it instead
        problem = _jpeg_problem(data)
        if problem:
            raise InputError(f"{name}: {problem}")
    buf = np.frombuffer(data, np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise InputError(f"{name}: cannot decode image: {exc}") from exc
    if img is None or img.size == 0:
        raise InputError(f"{name}: not a decodable image (corrupt or unsupported format, {len(data)} bytes)")
    return img


def _jpeg_problem(data: bytes) -> str | None:
    """Why a JPEG byte string is incomplete, or None.

    Walks the header segments by their lengths (so an EXIF thumbnail, which has its own markers, is skipped) to
    the first start-of-scan, then looks for the end-of-image marker after it. Inside entropy-coded data a 0xFF
    byte is always stuffed (FF 00), so FF D9 there can only be the real marker; data appended after it (camera
    trailers, motion photos) does not matter.
    """
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return "corrupt JPEG (bad segment marker)"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan
            return None if data.find(b"\xff\xd9", pos) != -1 else "truncated JPEG (no end-of-image marker)"
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xD9:
            return "corrupt JPEG (ends before any image data)"
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return "truncated JPEG (ends inside its header)"


def _pts_to_ns(pts: int, time_base: Fraction) -> int:
    return (int(pts) * time_base.numerator * 1_000_000_000) // time_base.denominator


def probe_video(path: str | os.PathLike) -> tuple[int | None, float | None]:
    """(frame count as the container states it, average fps), either None when unknown or unreadable."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return None, None
            s = c.streams.video[0]
            rate = float(s.average_rate) if s.average_rate else None
            return (int(s.frames) or None), rate
    except (av.FFmpegError, OSError, ValueError):
        return None, None


def iter_video(path: str | os.PathLike, stride_frames: int = 1) -> Iterator[MediaFrame]:
    """Decode every ``stride_frames``-th frame of a video file.

    Raises InputError (possibly after yielding some frames) when the file is missing, is not a video, has no
    video stream, fails to decode, or ends before the frame count its container states (truncated).
    """
    import av

    path = Path(path)
    if stride_frames < 1:
        raise ValueError("stride_frames must be >= 1")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable video: {exc}") from exc
    try:
        if not container.streams.video:
            raise InputError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        expected = int(stream.frames or 0)
        tb = stream.time_base or Fraction(1, 90000)
        fps = float(stream.average_rate) if stream.average_rate else None
        index = 0
        try:
            for frame in container.decode(stream):
                if index % stride_frames == 0:
                    if frame.pts is not None:
                        ts = _pts_to_ns(frame.pts, frame.time_base or tb)
                    elif fps:
                        ts = int(round(index * 1e9 / fps))
                    else:
                        ts = None
                    yield MediaFrame(path, "video", index, ts, frame.to_ndarray(format="bgr24"), fps)
                index += 1
        except av.FFmpegError as exc:
            raise InputError(f"{path}: video decoding failed after {index} frames: {exc}") from exc
        if index == 0:
            raise InputError(f"{path}: no decodable video frames")
        if expected and index + max(2, expected // 100) < expected:
            raise InputError(f"{path}: truncated video: decoded {index} of the {expected} frames it declares")
    finally:
        container.close()


def iter_media(paths: Iterable[str | os.PathLike], stride_frames: int = 1) -> Iterator[MediaFrame | MediaError]:
    """Frames of every image and video under ``paths`` (see :func:`expand_paths`), in a stable order.

    A file that fails yields one :class:`MediaError` (after any frames it did give) and the iteration goes on.
    Files with an unknown extension are tried as an image, then as a video.
    """
    for path in expand_paths(paths):
        kind = media_kind(path)
        try:
            if not path.exists():
                raise InputError(f"{path}: no such file or folder")
            if kind == "image":
                yield MediaFrame(path, "image", 0, None, read_image(path))
            elif kind == "video":
                yield from iter_video(path, stride_frames)
            else:
                try:
                    img = read_image(path)
                except InputError:
                    img = None
                if img is not None:
                    yield MediaFrame(path, "image", 0, None, img)
                else:
                    got = 0
                    try:
                        for item in iter_video(path, stride_frames):
                            got += 1
                            yield item
                    except InputError as exc:
                        if got:
                            raise
                        raise InputError(f"{path}: unsupported file (neither an image nor a video)") from exc
        except InputError as exc:
            log.debug("media error: %s", exc)
            yield MediaError(path, str(exc))
