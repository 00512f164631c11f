"""Boxes drawn on a frame: ``seawatch detect --annotate`` and the live view of a camera (``latest.jpg``)."""

from __future__ import annotations

import numpy as np


def _color(label: str) -> tuple[int, int, int]:
    h = sum(ord(c) * 131 ** i for i, c in enumerate(label)) % 180
    import cv2

    hsv = np.uint8([[[h, 220, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw(image: np.ndarray, dets_by_model: list) -> np.ndarray:
    """A copy of ``image`` with every model's boxes and ``label conf`` drawn (``label #track conf`` for tracked
    boxes)."""
    import cv2

    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 640))
    for det in dets_by_model:
        if not len(det):
            continue
        boxes = np.round(det.xyxy_px).astype(np.int32)
        tracks = det.track_id if det.track_id is not None else np.full(len(det), -1)
        for (x1, y1, x2, y2), lab, conf, tid in zip(boxes, det.label, det.confidence, tracks):  # per box by nature
            col = _color(str(lab))
            cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), col, thick, cv2.LINE_AA)
            text = f"{lab} #{tid} {conf:.2f}" if tid >= 0 else f"{lab} {conf:.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, thick)
            y_text = max(int(y1), th + base)
            cv2.rectangle(out, (int(x1), y_text - th - base), (int(x1) + tw, y_text), col, -1)
            cv2.putText(out, text, (int(x1), y_text - base), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (0, 0, 0), thick,
                        cv2.LINE_AA)
    return out
