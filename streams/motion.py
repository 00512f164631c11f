"""Motion gating: decide cheaply which frames (and which regions) the detector should look at.

A frame's luma plane is downscaled (strided view + area resize, ~0.2 ms for 1080p) and compared with a slowly
updated background. Changed pixels outside the configured masks (water glare, trees, timestamps burned in by
the camera) are grouped into boxes. A frame is analysed when enough changed, or when ``min_interval_s`` has passed
since the last analysed frame, so a parked van or a steady fire that never moves is still seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True, slots=True)
class MotionResult:
    """What the gate decided for one frame.

    Attributes:
        analyse: run the detector on this frame.
        reason: ``first``, ``motion``, ``interval`` (minimum analysis rate) or ``idle`` (skipped).
        changed_fraction: fraction of unmasked (downscaled) pixels that changed, 0..1.
        boxes_xyxy_px: ``(K, 4) float32`` regions with change, in full-frame pixels.
    """

    analyse: bool
    reason: str
    changed_fraction: float
    boxes_xyxy_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


def luma_plane(frame) -> np.ndarray:
    """The Y plane of a PyAV VideoFrame as an ``(H, W) uint8`` view, without converting the frame to BGR."""
    fmt = frame.format.name
    if fmt.startswith(("yuv", "yuvj", "nv12", "nv21", "gray")):
        plane = frame.planes[0]
        buf = np.frombuffer(plane, np.uint8)
        return buf.reshape(-1, plane.line_size)[: frame.height, : frame.width]
    return frame.to_ndarray(format="gray")


def polygons_to_mask(polygons_norm: Sequence[Sequence[tuple[float, float]]], width_px: int, height_px: int) -> np.ndarray:
    """``(H, W) bool`` mask, True inside any polygon; polygon vertices are (x, y) normalised to 0..1."""
    import cv2

    mask = np.zeros((height_px, width_px), np.uint8)
    for poly in polygons_norm:
        pts = np.asarray(poly, np.float64).reshape(-1, 2) * [width_px, height_px]
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


class MotionGate:
    """Per-source motion gate (not thread-safe; one per reader).

    Args:
        width_px: analysis width of the downscaled luma (height keeps the aspect ratio).
        pixel_threshold: luma difference (0..255) that counts as change.
        min_changed_fraction: fraction of unmasked pixels that must change to call it motion.
        min_interval_s: analyse at least one frame this often even without motion (static hazards).
        max_rate_hz: analyse at most this many frames per second even with motion (None: no cap).
        background_alpha: how fast the background follows the scene (per frame).
        ignore_polygons: normalised polygons whose change is ignored (water glare, trees, on-screen clocks).
    """

    def __init__(
        self,
        *,
        width_px: int = 160,
        pixel_threshold: int = 18,
        min_changed_fraction: float = 0.002,
        min_interval_s: float = 5.0,
        max_rate_hz: float | None = None,
        background_alpha: float = 0.05,
        ignore_polygons: Sequence[Sequence[tuple[float, float]]] = (),
    ) -> None:
        if width_px < 8:
            raise ValueError("motion width_px must be >= 8")
        self.width_px = int(width_px)
        self.pixel_threshold = float(pixel_threshold)
        self.min_changed_fraction = float(min_changed_fraction)
        self.min_interval_ns = int(min_interval_s * 1e9)
        self.min_gap_ns = int(1e9 / max_rate_hz) if max_rate_hz else 0
        self.alpha = float(background_alpha)
        self.ignore_polygons = list(ignore_polygons)
        self._bg: np.ndarray | None = None
        self._keep: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._last_analysed_ns: int | None = None
        self._last_motion_ns: int | None = None
        self._first_ns: int | None = None
        self.frames_seen = 0
        self.frames_analysed = 0

    def idle_for_s(self, now_ns: int | None = None) -> float:
        """Seconds since the last motion (since the first frame if none yet)."""
        ref = self._last_motion_ns if self._last_motion_ns is not None else self._first_ns
        if ref is None:
            return 0.0
        return ((now_ns if now_ns is not None else time.time_ns()) - ref) / 1e9

    def _small(self, luma: np.ndarray) -> np.ndarray:
        import cv2

        h, w = luma.shape[:2]
        out_w = min(self.width_px, w)
        out_h = max(1, round(h * out_w / w))
        step = max(1, int(w // (out_w * 2)))  # strided view first: far fewer pixels for the area resize
        view = luma[::step, ::step]
        return cv2.resize(view, (out_w, out_h), interpolation=cv2.INTER_AREA).astype(np.float32)

    def update(self, luma: np.ndarray, t_ns: int) -> MotionResult:
        """Gate one frame. ``luma``: ``(H, W) uint8`` (see :func:`luma_plane`); ``t_ns``: its capture time."""
        import cv2

        if luma.ndim != 2:
            raise ValueError(f"luma must be (H, W), got shape {luma.shape}")
        self.frames_seen += 1
        full_h, full_w = luma.shape
        small = self._small(luma)
        if self._bg is None or self._shape != (full_h, full_w):
            self._shape = (full_h, full_w)
            self._bg = small
            self._first_ns = t_ns
            sh, sw = small.shape
            self._keep = ~polygons_to_mask(self.ignore_polygons, sw, sh) if self.ignore_polygons else np.ones((sh, sw), bool)
            return self._decide(True, "first", 0.0, np.zeros((0, 4), np.float32), t_ns)

        diff = np.abs(small - self._bg)
        changed = (diff > self.pixel_threshold) & self._keep
        cv2.accumulateWeighted(small, self._bg, self.alpha)
        n_keep = int(self._keep.sum()) or 1
        fraction = float(changed.sum()) / n_keep
        moving = fraction >= self.min_changed_fraction
        boxes = np.zeros((0, 4), np.float32)
        if moving:
            self._last_motion_ns = t_ns
            boxes = self._boxes(changed, full_w, full_h)
        return self._decide(moving, "motion" if moving else "idle", fraction, boxes, t_ns)

    def _decide(self, moving: bool, reason: str, fraction: float, boxes: np.ndarray, t_ns: int) -> MotionResult:
        last = self._last_analysed_ns
        if reason == "first":
            analyse = True
        elif moving:
            analyse = last is None or t_ns - last >= self.min_gap_ns
        else:
            # 20 ms tolerance (under one frame period, over clock jitter): keyframes exactly one interval apart
            # must not miss every other slot
            analyse = last is None or t_ns - last >= self.min_interval_ns - 20_000_000
            if analyse:
                reason = "interval"
        if analyse:
            self._last_analysed_ns = t_ns
            self.frames_analysed += 1
        return MotionResult(analyse, reason, fraction, boxes)

    def _boxes(self, changed: np.ndarray, full_w: int, full_h: int) -> np.ndarray:
        import cv2

        grown = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8))
        n, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        if n <= 1:
            return np.zeros((0, 4), np.float32)
        st = stats[1:]
        sx = full_w / changed.shape[1]
        sy = full_h / changed.shape[0]
        x0 = st[:, 0] * sx
        y0 = st[:, 1] * sy
        x1 = (st[:, 0] + st[:, 2]) * sx
        y1 = (st[:, 1] + st[:, 3]) * sy
        return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)
