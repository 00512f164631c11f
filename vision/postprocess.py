"""Decode raw YOLO outputs, run class-aware NMS and map boxes back to source pixels, all with array operations.

Two raw layouts (``output_format`` in the model manifest):

- ``"yolov8"`` (ultralytics YOLOv8/11 heads): ``(B, 4 + nc, N)``: cx, cy, w, h, then one score per class.
  A candidate needs its best class score ``> conf`` (ultralytics ``non_max_suppression``, ``multi_label=False``).
- ``"yolov5"`` (anchor-based YOLOv5 heads): ``(B, N, 5 + nc)``: cx, cy, w, h, objectness, class probabilities.
  Candidates first need ``objectness > conf``; their score is ``max(objectness * class_prob) > conf``
  (YOLOv5 ``non_max_suppression``).

NMS is greedy and class-aware like ``torchvision.ops.nms`` on boxes offset by ``class * 7680`` (both frameworks):
boxes sorted by score, a box is dropped when its IoU with a kept, higher-scoring box of its class is
``> iou``. It is computed exactly (not Fast-NMS) without a Python loop per box: the greedy result is the unique
fixed point of ``keep[i] = not any(keep[k] and IoU[k, i] > iou for k < i)``, found by iterating that equation
on whole blocks of boxes (Cluster-NMS, Zheng et al. 2021); the number of iterations is the depth of the longest
suppression chain, a handful in practice.

Boxes are un-letterboxed like each framework does it: ultralytics 8.4 ``scale_boxes`` (integer pad, per-axis
gain) for "yolov8", YOLOv5's ``scale_boxes`` (one gain, fractional pad) for "yolov5"; then clipped to the frame.
Rows with non-finite numbers and boxes with no area left after clipping are dropped (the frameworks keep them;
they are not detections). Classes the manifest's ``labels`` does not map are dropped; several source classes may
map to one Seawatch label.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from seawatch.errors import ModelError
from seawatch.vision.detections import Detections
from seawatch.vision.preprocess import LetterboxBatch

MAX_WH_PX = 7680  # class offset for class-aware NMS, as in ultralytics and YOLOv5
MAX_NMS = 30000  # most candidates entering NMS per image, as in both frameworks
NMS_BLOCK = 2048  # boxes per block of the IoU matrix (memory: NMS_BLOCK**2 floats)
EARLY_STOP_BLOCK = 512  # block when NMS can stop at max_det: small enough to stop early

OutputFormat = Literal["yolov8", "yolov5"]


@dataclass(frozen=True, slots=True)
class LabelMap:
    """Source class ids -> Seawatch label ids.

    Attributes:
        labels: Seawatch labels of the output Detections (``class_id`` indexes these).
        lut: ``(nc,) int32``: label index for each source class, -1 for classes that are dropped.
    """

    labels: tuple[str, ...]
    lut: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.lut.shape[0])

    @classmethod
    def from_manifest(cls, manifest) -> "LabelMap":
        """From a :class:`seawatch.vision.registry.ModelManifest` (``classes`` and ``labels``)."""
        labels = manifest.seawatch_labels
        lut = np.array([labels.index(manifest.labels[c]) if c in manifest.labels else -1 for c in manifest.classes], np.int32)
        return cls(labels, lut)

    @classmethod
    def identity(cls, classes: tuple[str, ...]) -> "LabelMap":
        return cls(tuple(classes), np.arange(len(classes), dtype=np.int32))


@dataclass(frozen=True, slots=True)
class Candidates:
    """Boxes of one image that passed the confidence filter, in model-input (letterbox) pixels.

    ``xyxy (N, 4) float32``, ``score (N,) float32``, ``source_class (N,) int64`` (model class id).
    """

    xyxy: np.ndarray
    score: np.ndarray
    source_class: np.ndarray


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """``(N, 4)`` centre/size boxes to corners, in the input's float dtype (ultralytics ``xywh2xyxy``)."""
    out = np.empty_like(xywh)
    half = xywh[:, 2:4] / xywh.dtype.type(2)
    np.subtract(xywh[:, 0:2], half, out=out[:, 0:2])
    np.add(xywh[:, 0:2], half, out=out[:, 2:4])
    return out


def check_raw(raw: np.ndarray, output_format: OutputFormat, num_classes: int, model: str = "") -> np.ndarray:
    """Validate the raw output shape against the format and class count; returns it as a float32 array."""
    raw = np.asarray(raw)
    if raw.dtype != np.float32:
        raw = raw.astype(np.float32)
    if raw.ndim != 3:
        raise ModelError(f"model {model!r}: expected a 3-D output, got shape {raw.shape}")
    if output_format == "yolov8":
        want = 4 + num_classes
        if raw.shape[1] != want:
            raise ModelError(f"model {model!r}: yolov8 output {raw.shape} should be (B, {want}, N) for {num_classes} classes")
    elif output_format == "yolov5":
        want = 5 + num_classes
        if raw.shape[2] != want:
            raise ModelError(f"model {model!r}: yolov5 output {raw.shape} should be (B, N, {want}) for {num_classes} classes")
    else:
        raise ModelError(f"model {model!r}: unknown output_format {output_format!r}")
    return raw


def decode_one(pred: np.ndarray, output_format: OutputFormat, conf: float) -> Candidates:
    """Confidence filter and best class for one image's raw output (``(4+nc, N)`` or ``(N, 5+nc)``)."""
    conf32 = np.float32(conf)  # torch compares a float32 tensor with a Python float in float32
    if output_format == "yolov8":
        scores = pred[4:]
        best = scores.max(axis=0)  # NaN propagates and then fails the comparison, as torch.amax does
        idx = np.flatnonzero(best > conf32)
        if idx.size == 0:
            return _no_candidates()
        cls = scores[:, idx].argmax(axis=0)
        score = best[idx]
        xywh = np.ascontiguousarray(pred[:4, idx].T)
    else:
        obj = pred[:, 4]
        idx = np.flatnonzero(obj > conf32)
        if idx.size == 0:
            return _no_candidates()
        x = pred[idx]
        cls_scores = x[:, 5:] * x[:, 4:5]
        cls = cls_scores.argmax(axis=1)
        score = np.take_along_axis(cls_scores, cls[:, None], axis=1)[:, 0]
        ok = score > conf32
        cls, score, xywh = cls[ok], score[ok], x[ok, :4]
    return Candidates(xywh_to_xyxy(xywh), score.astype(np.float32, copy=False), cls.astype(np.int64, copy=False))


def _no_candidates() -> Candidates:
    return Candidates(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))


def _iou(a: np.ndarray, area_a: np.ndarray, b: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU in float32, the way torchvision's NMS kernel computes it (0/0 gives NaN)."""
    xx1 = np.maximum(a[:, None, 0], b[None, :, 0])
    yy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    xx2 = np.minimum(a[:, None, 2], b[None, :, 2])
    yy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(xx2 - xx1, np.float32(0)) * np.maximum(yy2 - yy1, np.float32(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


@functools.lru_cache(maxsize=4)
def _upper(n: int) -> np.ndarray:
    """``(n, n) bool``: True above the diagonal (k < i), shared read-only."""
    m = np.triu(np.ones((n, n), bool), 1)
    m.flags.writeable = False
    return m


def nms_sorted(xyxy: np.ndarray, iou: float, limit: int | None = None, block: int | None = None) -> np.ndarray:
    """Greedy NMS of boxes already sorted by descending score; returns a ``(N,) bool`` keep mask.

    Exact torchvision semantics (suppress when IoU ``> iou``), vectorised per block (see the module docstring).
    With ``limit``, stops once that many boxes are kept: later boxes are left unkept, which is exact for the first
    ``limit`` kept boxes (all that ``max_det`` lets through).
    """
    n = xyxy.shape[0]
    keep = np.zeros((n,), bool)
    if n == 0:
        return keep
    block = block or NMS_BLOCK
    thr = np.float64(iou)
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    for start in range(0, n, block):
        if limit is not None and np.count_nonzero(keep[:start]) >= limit:
            break
        stop = min(n, start + block)
        blk, blk_area = xyxy[start:stop], area[start:stop]
        alive = np.ones((stop - start,), bool)
        prev = np.flatnonzero(keep[:start])
        if prev.size:
            alive &= ~(_iou(xyxy[prev], area[prev], blk, blk_area) > thr).any(axis=0)
        over = _iou(blk, blk_area, blk, blk_area) > thr
        over &= _upper(block)[: stop - start, : stop - start]
        over &= alive[:, None]
        cur = alive
        while True:  # fixed-point iteration: each pass settles at least one more box of any suppression chain
            nxt = alive & ~(over & cur[:, None]).any(axis=0)
            if np.array_equal(nxt, cur):
                break
            cur = nxt
        keep[start:stop] = cur
    return keep


def nms(xyxy: np.ndarray, score: np.ndarray, iou: float, class_id: np.ndarray | None = None,
        max_det: int | None = None, max_wh: float = MAX_WH_PX) -> np.ndarray:
    """Class-aware greedy NMS; returns indices of kept boxes, highest score first.

    Args:
        xyxy: ``(N, 4) float32`` boxes in pixels smaller than ``max_wh``.
        score: ``(N,)`` scores.
        iou: IoU threshold; a box is suppressed when its IoU with a kept box of the same class is ``> iou``.
        class_id: ``(N,)`` ints; None for class-agnostic NMS.
        max_det: keep at most this many.
        max_wh: per-class coordinate offset that keeps classes apart (as ultralytics / YOLOv5 do).
    """
    n = xyxy.shape[0]
    if n == 0:
        return np.zeros((0,), np.int64)
    order = np.argsort(-score, kind="stable")
    boxes = np.asarray(xyxy, np.float32)[order]
    if class_id is not None:
        cls = np.asarray(class_id)[order]
        # The offset keeps the float32 IoU arithmetic identical to the frameworks'; classes never overlap after it.
        boxes = boxes + (cls.astype(np.float32) * np.float32(max_wh))[:, None]
    if class_id is None or (max_det is not None and n > 2 * max_det):
        # Many candidates and a max_det cut (low thresholds for evaluation): walk all classes together in score
        # order, in small blocks, and stop as soon as max_det boxes are kept.
        keep = nms_sorted(boxes, iou, limit=max_det, block=EARLY_STOP_BLOCK if max_det is not None else None)
    else:
        # Each class on its own: IoU matrices of one class at a time (a loop over classes, not boxes).
        keep = np.zeros((n,), bool)
        by_class = np.argsort(cls, kind="stable")  # score order is kept inside each class
        bounds = np.flatnonzero(np.diff(cls[by_class])) + 1
        for members in np.split(by_class, bounds):
            keep[members] = nms_sorted(boxes[members], iou)
    kept = order[keep]
    return kept[:max_det] if max_det is not None else kept


def _unletterbox(xyxy: np.ndarray, batch: LetterboxBatch, i: int, output_format: OutputFormat) -> np.ndarray:
    """Tensor pixels -> source pixels for image ``i`` of the batch, clipped, in place on a float32 array."""
    h, w = (int(v) for v in batch.src_hw[i])
    if output_format == "yolov5":
        # YOLOv5 scale_boxes: one gain from the input shape and a fractional pad
        in_h, in_w = batch.input_hw
        gain = min(in_h / h, in_w / w)
        pad_x, pad_y = (in_w - w * gain) / 2, (in_h - h * gain) / 2
        xyxy[:, 0::2] -= np.float32(pad_x)
        xyxy[:, 1::2] -= np.float32(pad_y)
        xyxy /= np.float32(gain)
    else:
        # ultralytics 8.4 scale_boxes: the integer pad LetterBox used and the per-axis gain after rounding
        xyxy[:, 0::2] -= np.float32(batch.pad_xy[i, 0])
        xyxy[:, 1::2] -= np.float32(batch.pad_xy[i, 1])
        xyxy[:, 0::2] /= np.float32(batch.gain_xy[i, 0])
        xyxy[:, 1::2] /= np.float32(batch.gain_xy[i, 1])
    np.clip(xyxy[:, 0::2], 0, w, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, h, out=xyxy[:, 1::2])
    return xyxy


def postprocess(raw: np.ndarray, batch: LetterboxBatch, output_format: OutputFormat, label_map: LabelMap,
                conf: float = 0.25, iou: float = 0.45, max_det: int = 300, model: str = "",
                agnostic: bool = False) -> list[Detections]:
    """Raw model output of a batch -> one :class:`Detections` per image, in source pixels.

    Args:
        raw: ``(B, 4+nc, N)`` ("yolov8") or ``(B, N, 5+nc)`` ("yolov5") float array.
        batch: the :class:`LetterboxBatch` the raw output was computed from.
        label_map: source classes -> Seawatch labels (unmapped classes are dropped).
        conf, iou, max_det: confidence threshold, NMS IoU threshold, most boxes per image.
        model: model name stamped on the Detections and used in error messages.
        agnostic: class-agnostic NMS (off by default, like both frameworks).
    """
    raw = check_raw(raw, output_format, label_map.num_classes, model)
    if raw.shape[0] != len(batch):
        raise ModelError(f"model {model!r}: output batch {raw.shape[0]} for {len(batch)} input frames")
    out: list[Detections] = []
    for i in range(raw.shape[0]):  # per image; everything inside is vectorised over boxes
        cand = decode_one(raw[i], output_format, conf)
        label = label_map.lut[cand.source_class] if cand.score.size else np.zeros((0,), np.int32)
        ok = (label >= 0) & np.isfinite(cand.xyxy).all(axis=1)
        xyxy, score, src_cls, label = cand.xyxy[ok], cand.score[ok], cand.source_class[ok], label[ok]
        if score.size > MAX_NMS:
            top = np.argsort(-score, kind="stable")[:MAX_NMS]
            xyxy, score, src_cls, label = xyxy[top], score[top], src_cls[top], label[top]
        keep = nms(xyxy, score, iou, None if agnostic else src_cls, max_det)
        xyxy = _unletterbox(xyxy[keep].astype(np.float32, copy=True), batch, i, output_format)
        score, label = score[keep], label[keep]
        has_area = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        out.append(Detections(xyxy[has_area], score[has_area], label[has_area], label_map.labels, None, model))
    return out
