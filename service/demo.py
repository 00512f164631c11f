"""Demo media for the embedded default of ``seawatch serve``: a real harbour webcam still made into a short H.264
clip that the service loops as a live camera (the shared media has no boat video)."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from seawatch.errors import InputError

log = logging.getLogger(__name__)


def still_clip(still: Path, out: Path, *, seconds: float = 10.0, fps: int = 2, noise: int = 2) -> Path:
    """``out``: ``still`` held for ``seconds`` at ``fps`` as an H.264 MP4, with +-``noise`` grey levels of sensor
    noise per frame (a fixed camera on a calm scene). Made once: an ``out`` newer than ``still`` is kept. Raises
    InputError when the still cannot be read."""
    from seawatch.vision.cmd_detect import VideoWriter
    from seawatch.vision.media import read_image

    if out.is_file() and out.stat().st_mtime >= still.stat().st_mtime and out.stat().st_size > 0:
        return out
    image = read_image(still)  # InputError for a missing or broken file
    part = out.with_name(out.stem + ".part.mp4")
    writer = VideoWriter(part, Fraction(fps))
    rng = np.random.default_rng(0)
    try:
        for _ in range(max(1, round(seconds * fps))):
            jitter = rng.integers(-noise, noise + 1, image.shape, dtype=np.int16)
            writer.write(np.clip(image.astype(np.int16) + jitter, 0, 255).astype(np.uint8))
    finally:
        writer.close()
    part.replace(out)
    return out


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
