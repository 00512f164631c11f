"""Tiled inference for small objects (distant vessels): overlapping full-resolution tiles, plus the whole frame.

A 1920x1080 frame letterboxed to 640 px shrinks a 20 px boat to 7 px, below what a stride-8 head resolves.
Cutting the frame into overlapping tiles of about the model's input size keeps full resolution; an optional
pass on the whole frame (downscaled as usual) keeps the big objects that no tile contains whole. All crops of
all frames go through the detector in batches; boxes are shifted back into frame pixels and merged:

1. a box that touches an interior tile edge (cut by the tile) is dropped when a larger box of the same label
   from another crop covers most of it (``cut_cover`` of its area);
2. class-aware greedy NMS (the detector's IoU threshold) over everything left, then ``max_det``.

With ``flip`` (written ``+flip`` after a tile text, e.g. ``auto+flip``) each frame is also run mirrored left to
right, and the two views are fused (:func:`fuse_views`): a box both views found keeps their mean confidence on
their confidence-weighted mean box, a box one view found keeps half its confidence. Twice the CPU; on the
held-out harbour cameras it found more small vessels at every precision (see the README's vessel section).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from seawatch.vision.detections import Detections
from seawatch.vision.postprocess import nms


DEFAULT_OVERLAP = 0.2


@dataclass(frozen=True, slots=True)
class TileSpec:
    """How to tile.

    Attributes:
        size_px: tile side, pixels of the source frame (best equal to the detector's imgsz).
        overlap: fraction of a tile shared with its neighbour, in [0, 0.9].
        full_frame: also run the whole frame (downscaled by the detector's letterbox).
        batch: crops per detector call.
        edge_margin_px: a box within this distance of an interior tile edge counts as cut by it.
        cut_cover: a cut box is dropped when a larger same-label box covers at least this fraction of its area.
        flip: also run the frame mirrored left to right and fuse the two views (test-time augmentation).
    """

    size_px: int = 640
    overlap: float = DEFAULT_OVERLAP
    full_frame: bool = True
    batch: int = 8
    edge_margin_px: float = 2.0
    cut_cover: float = 0.5
    flip: bool = False

    def __post_init__(self) -> None:
        if self.size_px < 32:
            raise ValueError(f"tile size must be >= 32 px, got {self.size_px}")
        if not 0.0 <= self.overlap <= 0.9:
            raise ValueError(f"tile overlap must be in [0, 0.9], got {self.overlap}")
        if self.batch < 1:
            raise ValueError("tile batch must be >= 1")

    @classmethod
    def parse(cls, text: str, **kw) -> "TileSpec":
        """``"SIZE"`` or ``"SIZE:OVERLAP"`` (e.g. ``640:0.2``) as used on the command line."""
        size_s, _, ov_s = text.partition(":")
        try:
            size = int(size_s)
            overlap = float(ov_s) if ov_s else DEFAULT_OVERLAP
        except ValueError:
            raise ValueError(f"tile spec {text!r} is not SIZE[:OVERLAP], e.g. 640:0.2") from None
        return cls(size_px=size, overlap=overlap, **kw)


FLIP_SUFFIX = "+flip"


def model_tile(detector, overlap: float = DEFAULT_OVERLAP, **kw) -> TileSpec:
    """The tiling a model was trained for: its manifest's ``defaults.tile_px`` when set (a model fine-tuned on
    zoomed tiles), else its input size."""
    defaults = getattr(getattr(detector, "manifest", None), "defaults", None)
    size = getattr(defaults, "tile_px", None) or detector.settings.imgsz
    return TileSpec(size_px=int(size), overlap=overlap, **kw)


def parse_tile_text(text: str) -> tuple[int | None, float, bool]:
    """``SIZE[:OVERLAP][+flip]`` or ``auto[:OVERLAP][+flip]`` as written in a config or on the command line:
    ``(size_px, overlap, flip)``, size None for ``auto`` (each model's own, :func:`model_tile`). Raises ValueError
    naming ``text``."""
    body = text.strip()
    flip = body.lower().endswith(FLIP_SUFFIX)
    if flip:
        body = body[: -len(FLIP_SUFFIX)]
    head, _, ov_s = body.partition(":")
    auto = head.strip().lower() == "auto"
    parsed = ("640" if auto else head) + (":" + ov_s if ov_s else "")
    try:
        spec = TileSpec.parse(parsed)
    except ValueError as exc:
        raise ValueError(f"{str(exc).replace(repr(parsed), repr(text))} (or auto[:OVERLAP], "
                         f"either with {FLIP_SUFFIX})") from None
    return (None if auto else spec.size_px), spec.overlap, flip


def tile_for(text: str | None, detector, **kw) -> TileSpec | None:
    """The tiling of ``detector`` for a ``SIZE[:OVERLAP][+flip]`` / ``auto[:OVERLAP][+flip]`` text; None for no
    tiling."""
    if not text:
        return None
    size, overlap, flip = parse_tile_text(text)
    if size is None:
        return model_tile(detector, overlap, flip=flip, **kw)
    return TileSpec(size_px=size, overlap=overlap, flip=flip, **kw)


def check_tile_text(text: str | None) -> str | None:
    """Validate a tile spec without a detector (config checking); returns it unchanged."""
    if text:
        parse_tile_text(text)
    return text


def tile_starts(length_px: int, size_px: int, overlap: float) -> np.ndarray:
    """Start offsets of tiles of ``size_px`` covering ``[0, length_px)`` with at least ``overlap`` shared."""
    if length_px <= size_px:
        return np.zeros((1,), np.int64)
    step = size_px * (1.0 - overlap)
    n = int(math.ceil((length_px - size_px) / step)) + 1
    return np.round(np.linspace(0, length_px - size_px, n)).astype(np.int64)


def tile_grid(height_px: int, width_px: int, size_px: int, overlap: float) -> np.ndarray:
    """``(T, 4) int64`` tiles as x0, y0, x1, y1 (exclusive ends) covering the frame, row-major."""
    xs = tile_starts(width_px, size_px, overlap)
    ys = tile_starts(height_px, size_px, overlap)
    gx, gy = np.meshgrid(xs, ys)
    x0, y0 = gx.ravel(), gy.ravel()
    return np.stack([x0, y0, np.minimum(x0 + size_px, width_px), np.minimum(y0 + size_px, height_px)], axis=1)


def _cut_mask(xyxy: np.ndarray, tile: np.ndarray, frame_hw: tuple[int, int], margin: float) -> np.ndarray:
    """Boxes (frame pixels) that touch an edge of ``tile`` that is inside the frame."""
    h, w = frame_hw
    x0, y0, x1, y1 = (float(v) for v in tile)
    cut = np.zeros((xyxy.shape[0],), bool)
    if x0 > 0:
        cut |= xyxy[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= xyxy[:, 1] <= y0 + margin
    if x1 < w:
        cut |= xyxy[:, 2] >= x1 - margin
    if y1 < h:
        cut |= xyxy[:, 3] >= y1 - margin
    return cut


def merge_tiles(parts: list[Detections], cut: list[np.ndarray], iou: float, max_det: int,
                cut_cover: float = 0.5) -> Detections:
    """Merge per-crop detections already shifted to frame pixels (see the module docstring)."""
    merged = Detections.merge(parts) if parts else Detections.empty()
    if len(merged) == 0:
        return merged
    is_cut = np.concatenate(cut) if cut else np.zeros((len(merged),), bool)
    crop_id = np.concatenate([np.full((len(p),), i, np.int64) for i, p in enumerate(parts)])
    ci = np.flatnonzero(is_cut)
    if ci.size:
        b = merged.xyxy_px
        area = merged.area_px
        cb = b[ci]
        ix = np.clip(np.minimum(cb[:, None, 2], b[None, :, 2]) - np.maximum(cb[:, None, 0], b[None, :, 0]), 0, None)
        iy = np.clip(np.minimum(cb[:, None, 3], b[None, :, 3]) - np.maximum(cb[:, None, 1], b[None, :, 1]), 0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            cover = ix * iy / area[ci, None]
        fuller = ((cover >= cut_cover) & (area[None, :] > area[ci, None])
                  & (merged.class_id[None, :] == merged.class_id[ci, None])
                  & (crop_id[None, :] != crop_id[ci, None]))
        drop = np.zeros((len(merged),), bool)
        drop[ci] = fuller.any(axis=1)
        merged = merged[~drop]
    keep = nms(merged.xyxy_px, merged.confidence, iou, merged.class_id, max_det)
    return merged[keep]


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inter > 0, inter / (area_a[:, None] + area_b[None, :] - inter), 0.0)


def fuse_views(a: Detections, b: Detections, iou: float = 0.55) -> Detections:
    """Two views of one frame (e.g. the frame and its mirror, mapped back) -> one set of boxes.

    Boxes of the same class are paired greedily, most confident first, at IoU >= ``iou``; a pair becomes its
    confidence-weighted mean box at the mean confidence, an unpaired box keeps half its confidence (the other
    view scored it 0). The result is sorted by confidence."""
    na, nb = len(a), len(b)
    xyxy = np.concatenate([a.xyxy_px, b.xyxy_px]).astype(np.float32) if na + nb else np.zeros((0, 4), np.float32)
    conf = np.concatenate([a.confidence, b.confidence]).astype(np.float32) * 0.5
    cls = np.concatenate([a.class_id, b.class_id]).astype(np.int64)
    drop = np.zeros(na + nb, bool)
    if na and nb:
        ious = _box_iou(a.xyxy_px.astype(np.float64), b.xyxy_px.astype(np.float64))
        ious[a.class_id[:, None] != b.class_id[None, :]] = 0.0
        taken = np.zeros(nb, bool)
        for i in np.argsort(-a.confidence, kind="stable"):
            cand = np.where(taken, 0.0, ious[i])
            j = int(np.argmax(cand))
            if cand[j] < iou:
                continue
            taken[j] = True
            wa, wb = float(a.confidence[i]), float(b.confidence[j])
            xyxy[i] = (a.xyxy_px[i] * wa + b.xyxy_px[j] * wb) / max(wa + wb, 1e-9)
            conf[i] = 0.5 * (wa + wb)
            drop[na + j] = True
    keep = np.flatnonzero(~drop)
    keep = keep[np.argsort(-conf[keep], kind="stable")]
    labels = a.labels or b.labels
    return Detections(xyxy[keep], conf[keep], cls[keep], labels, None, a.model or b.model)


def _unmirror(det: Detections, width_px: int) -> Detections:
    xy = det.xyxy_px.copy()
    xy[:, 0] = width_px - det.xyxy_px[:, 2]
    xy[:, 2] = width_px - det.xyxy_px[:, 0]
    return Detections(xy, det.confidence, det.class_id, det.labels, None, det.model)


def detect_tiled(detector, images: list[np.ndarray], spec: TileSpec = TileSpec()) -> list[Detections]:
    """Tiled detection for each frame (``(H, W, 3) uint8`` BGR); ``detector`` is an OnnxDetector-like object
    with ``detect(list) -> list[Detections]``, ``labels``, ``name`` and ``settings.iou / settings.max_det``."""
    if spec.flip:
        n = len(images)
        mirrored = [np.ascontiguousarray(im[:, ::-1]) for im in images]
        both = detect_tiled(detector, list(images) + mirrored, replace(spec, flip=False))
        max_det = detector.settings.max_det
        return [fuse_views(both[i], _unmirror(both[n + i], images[i].shape[1]))[:max_det] for i in range(n)]
    crops: list[np.ndarray] = []
    owners: list[tuple[int, np.ndarray, bool]] = []  # (frame index, tile xyxy, is a tile rather than the frame)
    for fi, im in enumerate(images):
        h, w = im.shape[:2]
        grid = tile_grid(h, w, spec.size_px, spec.overlap)
        single = grid.shape[0] == 1
        for t in grid:
            crops.append(im[t[1] : t[3], t[0] : t[2]])  # a view, no copy
            owners.append((fi, t, not single))
        if spec.full_frame and not single:
            crops.append(im)
            owners.append((fi, np.array([0, 0, w, h], np.int64), False))
    results: list[Detections] = []
    for start in range(0, len(crops), spec.batch):
        results += detector.detect(crops[start : start + spec.batch])
    per_frame: list[list[Detections]] = [[] for _ in images]
    per_cut: list[list[np.ndarray]] = [[] for _ in images]
    for (fi, t, is_tile), det in zip(owners, results):
        shifted = Detections(det.xyxy_px + np.array([t[0], t[1], t[0], t[1]], np.float32), det.confidence,
                             det.class_id, det.labels, None, det.model)
        per_frame[fi].append(shifted)
        h, w = images[fi].shape[:2]
        per_cut[fi].append(_cut_mask(shifted.xyxy_px, t, (h, w), spec.edge_margin_px) if is_tile
                           else np.zeros((len(shifted),), bool))
    s = detector.settings
    out = []
    for fi in range(len(images)):
        d = merge_tiles(per_frame[fi], per_cut[fi], s.iou, s.max_det, spec.cut_cover)
        out.append(Detections(d.xyxy_px, d.confidence, d.class_id, detector.labels, None, detector.name)
                   if len(d) else Detections.empty(detector.labels, detector.name))
    return out
