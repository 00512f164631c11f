"""Cameras' newest analysed pictures as JPEG: the live view (``GET /api/sources/{id}/latest.jpg``).

The pipeline keeps each camera's newest analysed frame with what is tracked in it (``Pipeline.latest_frame``). A
request encodes it, with the tracked boxes drawn and scaled down to the width asked for; one encoded picture per
camera and kind (with or without boxes) is kept until the next frame, so any number of operators watching one
camera cost one encode per analysed frame, and no request can make it keep more than that.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from seawatch.errors import InputError

JPEG_QUALITY = 80


class LiveView:
    """``jpeg(source_id, boxes, width_px)`` -> ``(capture_time_ns, JPEG bytes)`` or None before a first frame."""

    def __init__(self, latest_frame: Callable[[str], Any]) -> None:
        self._latest = latest_frame
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, bool], tuple[int, int | None, bytes]] = {}  # -> capture ns, width, JPEG

    def jpeg(self, source_id: str, boxes: bool = True, width_px: int | None = None) -> tuple[int, bytes] | None:
        got = self._latest(source_id)
        if got is None:
            return None
        capture_ns, image, tracked = got
        key = (source_id, bool(boxes))
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] == capture_ns and hit[1] == width_px:
            return capture_ns, hit[2]
        data = _encode(image, tracked if boxes else None, width_px)
        with self._lock:
            self._cache[key] = (capture_ns, width_px, data)
        return capture_ns, data


def _encode(image, tracked, width_px: int | None) -> bytes:
    import cv2

    from seawatch.vision.annotate import draw

    out = draw(image, [tracked]) if tracked is not None and len(tracked) else image
    h, w = out.shape[:2]
    if width_px is not None and width_px < w:
        out = cv2.resize(out, (int(width_px), max(1, round(h * width_px / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise InputError(f"could not JPEG-encode a {w}x{h} picture")
    return buf.tobytes()
