"""Demo media for the embedded default of ``seawatch serve``: a real harbour webcam still made into a short H.264
clip that the service loops as a live camera (the shared media has no boat video), and the car-park time-lapse
(MPEG-4 Part 2) made H.264, as an IP camera sends, so its recordings are remuxed into clips, not re-encoded."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from seawatch.errors import InputError

log = logging.getLogger(__name__)


def _made_once(src: Path, out: Path, fps: Fraction, frames) -> Path:
    """``out``: the BGR ``frames`` (an iterable, read only when needed) as an H.264 MP4 at ``fps``, written to a
    ``.part.mp4`` and moved into place. Made once: an ``out`` newer than ``src`` is kept. InputError when no frame
    comes."""
    from seawatch.vision.cmd_detect import VideoWriter

    if out.is_file() and out.stat().st_mtime >= src.stat().st_mtime and out.stat().st_size > 0:
        return out
    part = out.with_name(out.stem + ".part.mp4")
    writer = VideoWriter(part, fps)
    n = 0
    try:
        for image in frames:
            writer.write(image)
            n += 1
    finally:
        writer.close()
    if n == 0:
        part.unlink(missing_ok=True)
        raise InputError(f"{src}: no frame decoded")
    part.replace(out)
    return out


def still_clip(still: Path, out: Path, *, seconds: float = 10.0, fps: int = 2, noise: int = 2) -> Path:
    """``out``: ``still`` held for ``seconds`` at ``fps`` as an H.264 MP4, with +-``noise`` grey levels of sensor
    noise per frame (a fixed camera on a calm scene). Made once: an ``out`` newer than ``still`` is kept. Raises
    InputError when the still cannot be read."""
    from seawatch.vision.media import read_image

    def frames():
        image = read_image(still)  # InputError for a missing or broken file
        rng = np.random.default_rng(0)
        for _ in range(max(1, round(seconds * fps))):
            jitter = rng.integers(-noise, noise + 1, image.shape, dtype=np.int16)
            yield np.clip(image.astype(np.int16) + jitter, 0, 255).astype(np.uint8)

    return _made_once(still, out, Fraction(fps), frames())


def harbour_clip(media_dir: Path, data_dir: Path) -> Path | None:
    """The demo harbour camera's clip under ``data_dir/demo/`` (made from the shared harbour still), or None with a
    warning when the still is missing or unreadable (the demo runs without that camera)."""
    from seawatch.service.config import DEFAULT_HARBOUR_STILL

    still = media_dir / DEFAULT_HARBOUR_STILL
    if not still.is_file():
        log.warning("demo harbour camera left out: %s is missing", still)
        return None
    try:
        return still_clip(still, data_dir / "demo" / "harbour-cam.mp4")
    except (InputError, OSError) as exc:
        log.warning("demo harbour camera left out: %s", exc)
        return None


def h264_copy(src: Path, out: Path) -> Path:
    """``out``: the video ``src`` re-encoded as H.264 MP4 at its own frame rate (libx264, as clips are). Made once: an
    ``out`` newer than ``src`` is kept. Raises InputError when ``src`` cannot be decoded."""
    from seawatch.vision.media import iter_video, probe_video

    fps = probe_video(src)[1]
    if not fps:
        raise InputError(f"{src}: not a readable video")
    return _made_once(src, out, Fraction(fps).limit_denominator(1001), (f.image for f in iter_video(src)))


def yard_clip(media_dir: Path, data_dir: Path) -> Path | None:
    """The demo yard camera's clip under ``data_dir/demo/`` (the shared car-park time-lapse as H.264), or None with a
    warning when it is missing or unreadable (the demo then plays the shared file as it is)."""
    from seawatch.service.config import DEFAULT_YARD_CLIP

    src = media_dir / DEFAULT_YARD_CLIP
    if not src.is_file():
        return None
    try:
        return h264_copy(src, data_dir / "demo" / "yard-cam.mp4")
    except (InputError, OSError) as exc:
        log.warning("demo yard camera plays %s as it is (%s)", src, exc)
        return None
