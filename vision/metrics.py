"""Detection metrics: box matching, precision/recall and AP50 per label, vectorised over boxes.

Matching follows the rule the project evaluates by: a prediction matches a ground-truth box of the same label when
IoU >= ``iou_small`` (0.3) for ground-truth boxes whose longer side is under ``small_px`` (32 px), else >= ``iou``
(0.5). Greedy by descending confidence, each ground-truth box matched at most once (the VOC/COCO convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seawatch.vision.detections import pairwise_iou


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise IoU, ``(N,4) x (M,4) -> (N,M) float32``; degenerate boxes give 0."""
    return pairwise_iou(a_xyxy, b_xyxy).astype(np.float32)


def match(pred_xyxy: np.ndarray, pred_conf: np.ndarray, gt_xyxy: np.ndarray,
          iou: float = 0.5, iou_small: float = 0.3, small_px: float = 32.0) -> np.ndarray:
    """Greedy matching of one image's predictions (one label) to its ground truth.

    Returns ``(N,) bool``: whether each prediction is a true positive.
    """
    return _greedy(pred_xyxy, pred_conf, gt_xyxy, iou, iou_small, small_px)[0]


def match_gt(pred_xyxy: np.ndarray, pred_conf: np.ndarray, gt_xyxy: np.ndarray,
             iou: float = 0.5, iou_small: float = 0.3, small_px: float = 32.0) -> np.ndarray:
    """The same matching seen from the ground truth: ``(M,) bool``, whether each ground-truth box was found."""
    return _greedy(pred_xyxy, pred_conf, gt_xyxy, iou, iou_small, small_px)[1]


def _greedy(pred_xyxy, pred_conf, gt_xyxy, iou: float, iou_small: float, small_px: float):
    pred_xyxy = np.asarray(pred_xyxy, np.float32).reshape(-1, 4)
    gt_xyxy = np.asarray(gt_xyxy, np.float32).reshape(-1, 4)
    tp = np.zeros(len(pred_xyxy), bool)
    taken = np.zeros(len(gt_xyxy), bool)
    if not len(pred_xyxy) or not len(gt_xyxy):
        return tp, taken
    ious = box_iou(pred_xyxy, gt_xyxy)
    gt_side = np.max(gt_xyxy[:, 2:] - gt_xyxy[:, :2], axis=1)
    thr = np.where(gt_side < small_px, iou_small, iou).astype(np.float32)
    ok = ious >= thr[None, :]
    for i in np.argsort(-np.asarray(pred_conf, np.float32), kind="stable"):
        cand = ok[i] & ~taken
        if cand.any():
            j = int(np.argmax(np.where(cand, ious[i], -1.0)))
            taken[j] = True
            tp[i] = True
    return tp, taken


def average_precision(tp_sorted: np.ndarray, n_gt: int) -> float:
    """All-point interpolated AP from TP flags sorted by descending confidence."""
    if n_gt == 0:
        return float("nan")
    if len(tp_sorted) == 0:
        return 0.0
    tp_c = np.cumsum(tp_sorted)
    fp_c = np.cumsum(~tp_sorted)
    recall = tp_c / n_gt
    precision = tp_c / np.maximum(tp_c + fp_c, 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


@dataclass
class LabelStats:
    """Accumulates one label's matches over many images."""

    conf: list[np.ndarray] = field(default_factory=list)
    tp: list[np.ndarray] = field(default_factory=list)
    n_gt: int = 0

    def add(self, pred_conf: np.ndarray, tp: np.ndarray, n_gt: int) -> None:
        self.conf.append(np.asarray(pred_conf, np.float32))
        self.tp.append(np.asarray(tp, bool))
        self.n_gt += int(n_gt)

    @classmethod
    def merged(cls, parts) -> "LabelStats":
        """One label's stats over several parts (e.g. the categories of a manifest)."""
        out = cls()
        for p in parts:
            out.conf += p.conf
            out.tp += p.tp
            out.n_gt += p.n_gt
        return out

    def summary(self, conf_threshold: float = 0.0) -> dict:
        conf = np.concatenate(self.conf) if self.conf else np.zeros(0, np.float32)
        tp = np.concatenate(self.tp) if self.tp else np.zeros(0, bool)
        order = np.argsort(-conf, kind="stable")
        ap50 = average_precision(tp[order], self.n_gt)
        keep = conf >= conf_threshold
        n_tp = int(tp[keep].sum())
        n_fp = int((~tp[keep]).sum())
        n_fn = self.n_gt - n_tp
        precision = n_tp / (n_tp + n_fp) if n_tp + n_fp else float("nan")
        recall = n_tp / self.n_gt if self.n_gt else float("nan")
        return {
            "tp": n_tp, "fp": n_fp, "fn": n_fn, "gt": self.n_gt,
            "precision": _r(precision), "recall": _r(recall), "ap50": _r(ap50),
        }

    def recall_at_precision(self, min_precision: float) -> tuple[float, float]:
        """Best recall reachable with precision >= ``min_precision`` (and the confidence threshold giving it)."""
        conf = np.concatenate(self.conf) if self.conf else np.zeros(0, np.float32)
        tp = np.concatenate(self.tp) if self.tp else np.zeros(0, bool)
        if not self.n_gt or not len(conf):
            return 0.0, 1.0
        order = np.argsort(-conf, kind="stable")
        tp_c = np.cumsum(tp[order])
        prec = tp_c / np.arange(1, len(tp_c) + 1)
        cs = conf[order]
        # a threshold keeps every box of a confidence or none: only the ends of runs of equal confidence are cuts
        group_end = np.r_[cs[1:] != cs[:-1], True]
        ok = np.where((prec >= min_precision) & group_end)[0]
        if not len(ok):
            return 0.0, 1.0
        best = ok[np.argmax(tp_c[ok])]
        return float(tp_c[best] / self.n_gt), float(conf[order][best])


# ground-truth size bins, by the box's longer side in pixels: distant boats are the first two
SIZE_BINS_PX = (16.0, 32.0, 96.0)


@dataclass
class SizeStats:
    """Recall per ground-truth size (longer side, px): how far away a model stops finding things."""

    found: np.ndarray = field(default_factory=lambda: np.zeros(len(SIZE_BINS_PX) + 1, np.int64))
    total: np.ndarray = field(default_factory=lambda: np.zeros(len(SIZE_BINS_PX) + 1, np.int64))

    def add(self, gt_xyxy: np.ndarray, found: np.ndarray) -> None:
        gt_xyxy = np.asarray(gt_xyxy, np.float32).reshape(-1, 4)
        side = np.max(gt_xyxy[:, 2:] - gt_xyxy[:, :2], axis=1)
        b = np.searchsorted(np.asarray(SIZE_BINS_PX), side, side="right")
        np.add.at(self.total, b, 1)
        np.add.at(self.found, b, np.asarray(found, bool).astype(np.int64))

    def summary(self) -> dict:
        edges = (0.0, *SIZE_BINS_PX)
        names = [f"{lo:g}-{hi:g}px" for lo, hi in zip(edges, SIZE_BINS_PX)] + [f">={SIZE_BINS_PX[-1]:g}px"]
        return {n: {"gt": int(t), "found": int(f), "recall": _r(f / t if t else float("nan"))}
                for n, f, t in zip(names, self.found, self.total) if t}


def _r(x: float) -> float | None:
    return None if x != x else round(float(x), 4)
