"""Training labels from a review desk's decisions: a site's own frames for ``seawatch models train``.

A fixed camera's operators confirm and dismiss vessel alarms every day. Each decision is a label no one had to
draw: a confirmed event's box is a vessel, a dismissed event's box is something the model must learn to leave
alone (a buoy, a pile, a moored barge) — the hard negatives of that very camera. ``seawatch reviews export``
turns the event store's reviewed snapshots (full frames) into a YOLO dataset that ``seawatch models train``
takes next to the shipped training frames.

A frame holds more than the one reviewed box, so the rest of it needs a rule. Per frame, from the reviewed boxes
and the model's own detections on the same frame:

- **confirmed** boxes are vessel labels;
- **dismissed** boxes stay as they are in the image and get no label: background, the lesson of the dismissal;
- every other detection down to ``mask_conf`` was never decided by anyone: its region (box plus a margin) is
  blurred away in the exported image, so it is taught neither as a vessel nor as background. Without that, a
  moored boat the operator never alarmed on would be taught as background.

A detection counts as the reviewed box when their IoU reaches ``same_iou`` (the detector's box of the same
object moves a little between the snapshot and now). Vessels the model missed altogether stay unlabelled, so the
export is a pre-labelled set to check (``classes.txt`` + ``labels/*.txt`` open in any YOLO labelling tool), as
``seawatch detect --yolo-labels`` writes; the report lists what each frame's labels came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seawatch.vision.metrics import box_iou


@dataclass(frozen=True)
class SiteLabels:
    """One frame's labels from review decisions.

    Attributes:
        vessel_xyxy_px: ``(N, 4)`` boxes to label as vessels (the confirmed ones).
        background_xyxy_px: ``(M, 4)`` dismissed boxes, left in the image unlabelled.
        masked_xyxy_px: ``(K, 4)`` undecided detections, blurred away (before the margin).
    """

    vessel_xyxy_px: np.ndarray
    background_xyxy_px: np.ndarray
    masked_xyxy_px: np.ndarray

    def counts(self) -> dict[str, int]:
        return {"vessels": len(self.vessel_xyxy_px), "dismissed": len(self.background_xyxy_px),
                "masked": len(self.masked_xyxy_px)}


def _valid_rows(a: np.ndarray) -> np.ndarray:
    return np.isfinite(a).all(axis=1) & (a[:, 2] > a[:, 0]) & (a[:, 3] > a[:, 1])


def _boxes(a) -> np.ndarray:
    a = np.asarray(a, np.float32).reshape(-1, 4)
    return a[_valid_rows(a)]


def site_labels(det_xyxy_px, det_conf, confirmed_xyxy_px, dismissed_xyxy_px, mask_conf: float = 0.1,
                same_iou: float = 0.3) -> SiteLabels:
    """Labels of one frame from its reviewed boxes and the model's detections on it (module docstring).

    A box both confirmed and dismissed (two events over one object, decided differently) is neither: it is masked.
    Degenerate or non-finite boxes are dropped.
    """
    det = np.asarray(det_xyxy_px, np.float32).reshape(-1, 4)
    conf = np.asarray(det_conf, np.float32).reshape(-1)
    if len(conf) != len(det):
        raise ValueError("det_xyxy_px and det_conf differ in length")
    ok = _valid_rows(det)
    det, conf = det[ok], conf[ok]
    yes, no = _boxes(confirmed_xyxy_px), _boxes(dismissed_xyxy_px)
    if len(yes) and len(no):
        clash = box_iou(yes, no) >= same_iou
        disputed = np.concatenate([yes[clash.any(axis=1)], no[clash.any(axis=0)]])
        yes, no = yes[~clash.any(axis=1)], no[~clash.any(axis=0)]
    else:
        disputed = np.zeros((0, 4), np.float32)
    decided = np.concatenate([yes, no, disputed])
    undecided = det[conf >= mask_conf]
    if len(undecided) and len(decided):
        undecided = undecided[~(box_iou(undecided, decided) >= same_iou).any(axis=1)]
    return SiteLabels(yes, no, np.concatenate([undecided, disputed]).astype(np.float32))


def masked_image(image: np.ndarray, labels: SiteLabels, margin_frac: float = 0.15, min_margin_px: int = 3) -> np.ndarray:
    """A copy of ``image`` (BGR) with each masked box, grown by ``margin_frac`` of its size (at least
    ``min_margin_px``) on each side, replaced by a strong blur of its surroundings; pixels of the vessel boxes stay
    untouched, so a confirmed boat beside an undecided one keeps its label's content."""
    import cv2

    out = image.copy()
    if not len(labels.masked_xyxy_px):
        return out
    h, w = image.shape[:2]
    boxes = labels.masked_xyxy_px.astype(np.float64)
    size = boxes[:, 2:] - boxes[:, :2]
    pad = np.maximum(size * margin_frac, min_margin_px)
    grown = np.concatenate([boxes[:, :2] - pad, boxes[:, 2:] + pad], axis=1)
    side = int(max(9, min(201, 2 * round(float(size.max()) * 1.5) + 1)))  # odd kernel wider than the largest box
    blurred = cv2.GaussianBlur(cv2.blur(image, (side, side)), (0, 0), side / 4.0)
    region = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in grown:
        xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        xb, yb = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        region[ya:yb, xa:xb] = True
    for x0, y0, x1, y1 in labels.vessel_xyxy_px.astype(np.float64):
        region[max(0, int(np.floor(y0))):min(h, int(np.ceil(y1))), max(0, int(np.floor(x0))):min(w, int(np.ceil(x1)))] = False
    out[region] = blurred[region]
    return out
