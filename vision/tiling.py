"""Tiled inference for small objects (distant vessels): overlapping full-resolution tiles, plus the whole frame.

A 1920x1080 frame letterboxed to 640 px shrinks a 20 px boat to 7 px, below what a stride-8 head resolves.
Cutting the frame into overlapping tiles of about the model's input size keeps full resolution; an optional
pass on the whole frame (downscaled as usual) keeps the big objects that no tile contains whole. All crops of
all frames go through the detector in batches; boxes are shifted back into frame pixels and merged:

1. a box that touches an interior tile edge (cut by the tile) is dropped when a larger box of the same label
   from another crop covers most of it (``cut_cover`` of its area);
2. class-aware greedy NMS (the detector's IoU threshold) over everything left, then ``max_det``.

Views: more tile sizes (``auto,288``: the model's own size and 288 px tiles, zoomed further) and ``flip``
(written ``+flip`` after a tile text, e.g. ``auto+flip``: each frame also mirrored left to right, every size) give
several detections of one frame, fused by :func:`fuse_views`: a box every view found keeps its mean confidence on
the confidence-weighted mean box, a box one view of two found keeps half its confidence, so agreement ranks
first. Each view costs one more pass; on the held-out harbour cameras both found more small vessels at every
precision (README, "The vessel model"; models/VESSEL.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from seawatch.vision.detections import Detections, pairwise_iou
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
        flip: also run the frame mirrored left to right and fuse the views (test-time augmentation).
        extra_sizes_px: more tile sizes, each a view of its own, fused with the first (multi-scale).
    """

    size_px: int = 640
    overlap: float = DEFAULT_OVERLAP
    full_frame: bool = True
    batch: int = 8
    edge_margin_px: float = 2.0
    cut_cover: float = 0.5
    flip: bool = False
    extra_sizes_px: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for size in (self.size_px, *self.extra_sizes_px):
            if size < 32:
                raise ValueError(f"tile size must be >= 32 px, got {size}")
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
    zoomed tiles), else its input size; a detector that states its own ``tile_px`` (a model group) that."""
    defaults = getattr(getattr(detector, "manifest", None), "defaults", None)
    size = getattr(detector, "tile_px", None) or getattr(defaults, "tile_px", None) or detector.settings.imgsz
    return TileSpec(size_px=int(size), overlap=overlap, **kw)


def parse_tile_text(text: str) -> tuple[tuple[int | None, ...], float, bool]:
    """``SIZES[:OVERLAP][+flip]`` as written in a config or on the command line, SIZES one or more of a size in
    pixels or ``auto`` separated by commas (``640``, ``auto``, ``auto,288:0.2+flip``): ``(sizes, overlap, flip)``,
    None in sizes for ``auto`` (each model's own, :func:`model_tile`). Raises ValueError naming ``text``."""
    body = text.strip()
    flip = body.lower().endswith(FLIP_SUFFIX)
    if flip:
        body = body[: -len(FLIP_SUFFIX)]
    head, _, ov_s = body.partition(":")

    def bad(reason: str) -> ValueError:
        return ValueError(f"tile spec {text!r}: {reason}; write SIZES[:OVERLAP][{FLIP_SUFFIX}], sizes in pixels or "
                          f"auto separated by commas, e.g. 640:0.2 or auto,288{FLIP_SUFFIX}")

    try:
        overlap = float(ov_s) if ov_s.strip() else DEFAULT_OVERLAP
    except ValueError:
        raise bad(f"overlap {ov_s.strip()!r} is not a number") from None
    sizes: list[int | None] = []
    for part in head.split(","):
        word = part.strip()
        auto = word.lower() == "auto"
        try:
            size = None if auto else int(word)
        except ValueError:
            raise bad(f"{word or '(empty)'!r} is not a size") from None
        try:
            TileSpec(size_px=640 if size is None else size, overlap=overlap)  # the range checks
        except ValueError as exc:
            raise bad(str(exc)) from None
        sizes.append(size)
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"tile spec {text!r} names a size twice")
    return tuple(sizes), overlap, flip


def tile_for(text: str | None, detector, **kw) -> TileSpec | None:
    """The tiling of ``detector`` for a ``SIZES[:OVERLAP][+flip]`` text (:func:`parse_tile_text`); None for no
    tiling."""
    if not text:
        return None
    sizes, overlap, flip = parse_tile_text(text)
    own = model_tile(detector, overlap).size_px
    resolved = list(dict.fromkeys(own if s is None else s for s in sizes))  # auto may equal a size given
    return TileSpec(size_px=resolved[0], overlap=overlap, flip=flip, extra_sizes_px=tuple(resolved[1:]), **kw)


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


def fuse_views(views: list[Detections], iou: float = 0.55) -> Detections:
    """Several views of one frame (the frame and its mirror mapped back, other tile sizes) -> one set of boxes.

    View by view, each box joins the most overlapping cluster of its class not yet joined by that view (IoU >=
    ``iou`` with the cluster's current box, most confident boxes first) or starts a new one. A cluster becomes
    its confidence-weighted mean box at the mean confidence over all views (a view that missed it counts 0): what
    every view finds keeps its confidence, what one view of two finds keeps half. Sorted by confidence."""
    n_views = max(len(views), 1)
    labels = next((v.labels for v in views if v.labels), ())
    model = next((v.model for v in views if v.model), "")
    c_box: list[np.ndarray] = []  # per cluster: sum of conf * box
    c_w: list[float] = []  # sum of conf
    c_cls: list[int] = []
    for v in views:
        if not len(v):
            continue
        order = np.argsort(-v.confidence, kind="stable")
        # the clusters as they stood before this view: its own new clusters are not joined again within it
        joined = np.zeros(len(c_w), bool)
        cur = (np.array(c_box) / np.maximum(np.array(c_w), 1e-9)[:, None]) if c_w else np.zeros((0, 4))
        cur_cls = np.array(c_cls, np.int64)
        ious = pairwise_iou(v.xyxy_px, cur)
        for i in order:
            w = float(v.confidence[i])
            j = -1
            if len(cur):
                cand = np.where(~joined & (cur_cls == int(v.class_id[i])), ious[i], 0.0)
                k = int(np.argmax(cand))
                if cand[k] >= iou:
                    j = k
            if j < 0:
                c_box.append(v.xyxy_px[i].astype(np.float64) * w)
                c_w.append(w)
                c_cls.append(int(v.class_id[i]))
            else:
                joined[j] = True
                c_box[j] = c_box[j] + v.xyxy_px[i].astype(np.float64) * w
                c_w[j] += w
    if not c_w:
        return Detections.empty(labels, model)
    w = np.array(c_w)
    xyxy = (np.array(c_box) / np.maximum(w, 1e-9)[:, None]).astype(np.float32)
    conf = (w / n_views).astype(np.float32)
    order = np.argsort(-conf, kind="stable")
    return Detections(xyxy[order], conf[order], np.array(c_cls, np.int32)[order], labels, None, model)


def _unmirror(det: Detections, width_px: int) -> Detections:
    xy = det.xyxy_px.copy()
    xy[:, 0] = width_px - det.xyxy_px[:, 2]
    xy[:, 2] = width_px - det.xyxy_px[:, 0]
    return Detections(xy, det.confidence, det.class_id, det.labels, None, det.model)


TileFilter = Callable[[np.ndarray, tuple[int, int]], bool]  # (tile xyxy px, frame (h, w)) -> look there?


def _mirrored(keep_tile: TileFilter) -> TileFilter:
    """The same filter for the frame mirrored left to right."""
    def keep(t: np.ndarray, hw: tuple[int, int]) -> bool:
        return keep_tile(np.array([hw[1] - t[2], t[1], hw[1] - t[0], t[3]]), hw)
    return keep


def detect_tiled(detector, images: list[np.ndarray], spec: TileSpec = TileSpec(),
                 keep_tile: TileFilter | None = None) -> list[Detections]:
    """Tiled detection for each frame (``(H, W, 3) uint8`` BGR); ``detector`` is an OnnxDetector-like object
    with ``detect(list) -> list[Detections]``, ``labels``, ``name`` and ``settings.iou / settings.max_det``.

    ``keep_tile(tile_xyxy, frame_hw)``: tiles it refuses are not run (e.g. tiles with no water for a vessel model:
    what they would find is dropped by the water mask anyway); the whole-frame pass always runs."""
    if spec.flip or spec.extra_sizes_px:
        n = len(images)
        mirrored = [np.ascontiguousarray(im[:, ::-1]) for im in images] if spec.flip else []
        views: list[list[Detections]] = [[] for _ in images]
        for size in (spec.size_px, *spec.extra_sizes_px):
            one = replace(spec, size_px=size, flip=False, extra_sizes_px=())
            if keep_tile is None:  # one batch for both
                out = detect_tiled(detector, list(images) + mirrored, one)
            else:
                out = detect_tiled(detector, images, one, keep_tile)
                out += detect_tiled(detector, mirrored, one, _mirrored(keep_tile)) if mirrored else []
            for i in range(n):
                views[i].append(out[i])
                if spec.flip:
                    views[i].append(_unmirror(out[n + i], images[i].shape[1]))
        max_det = detector.settings.max_det
        return [fuse_views(v)[:max_det] for v in views]
    crops: list[np.ndarray] = []
    owners: list[tuple[int, np.ndarray, bool]] = []  # (frame index, tile xyxy, is a tile rather than the frame)
    for fi, im in enumerate(images):
        h, w = im.shape[:2]
        grid = tile_grid(h, w, spec.size_px, spec.overlap)
        single = grid.shape[0] == 1
        for t in grid:
            if not single and keep_tile is not None and not keep_tile(t, (h, w)):
                continue
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
