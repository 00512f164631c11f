"""The one batch type every stage after the detector shares: detections of one frame as parallel arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EMPTY_F = np.zeros((0,), np.float32)


def pairwise_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """``(A, 4) x (B, 4) -> (A, B) float64`` IoU of every box in ``a`` with every box in ``b``; degenerate boxes
    (no area) give 0. The one general IoU of the project (NMS keeps its own area-cached variant on the hot path)."""
    a = np.asarray(a_xyxy, np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, np.float64).reshape(-1, 4)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass(frozen=True, slots=True)
class Detections:
    """Detections of one frame, struct-of-arrays.

    Attributes:
        xyxy_px: ``(N, 4) float32`` boxes as x1, y1, x2, y2 in source-image pixels.
        confidence: ``(N,) float32`` scores in [0, 1].
        class_id: ``(N,) int32`` index into ``labels``.
        labels: Seawatch label names indexed by ``class_id`` (e.g. ``("smoke", "fire")``).
        track_id: optional ``(N,) int64`` track ids (-1 where untracked).
        model: name of the model that produced them ("" when mixed or unknown).
    """

    xyxy_px: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    labels: tuple[str, ...] = ()
    track_id: np.ndarray | None = None
    model: str = ""

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy_px, dtype=np.float32).reshape(-1, 4) if np.size(self.xyxy_px) else np.zeros((0, 4), np.float32)
        n = xyxy.shape[0]
        conf = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        cls = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        if conf.shape[0] != n or cls.shape[0] != n:
            raise ValueError(f"Detections arrays disagree in length: xyxy {n}, confidence {conf.shape[0]}, class_id {cls.shape[0]}")
        tid = None
        if self.track_id is not None:
            tid = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
            if tid.shape[0] != n:
                raise ValueError(f"track_id has {tid.shape[0]} entries for {n} boxes")
        if n and self.labels and (cls.min() < 0 or cls.max() >= len(self.labels)):
            raise ValueError(f"class_id out of range for {len(self.labels)} labels")
        object.__setattr__(self, "xyxy_px", xyxy)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "class_id", cls)
        object.__setattr__(self, "track_id", tid)
        object.__setattr__(self, "labels", tuple(self.labels))

    @classmethod
    def empty(cls, labels: tuple[str, ...] = (), model: str = "") -> "Detections":
        return cls(np.zeros((0, 4), np.float32), _EMPTY_F, np.zeros((0,), np.int32), labels, None, model)

    def __len__(self) -> int:
        return int(self.xyxy_px.shape[0])

    def __getitem__(self, index: np.ndarray | slice | int) -> "Detections":
        """Select by boolean mask, integer index array or slice; always returns a Detections."""
        if isinstance(index, (int, np.integer)):
            index = np.array([index])
        return Detections(
            self.xyxy_px[index],
            self.confidence[index],
            self.class_id[index],
            self.labels,
            None if self.track_id is None else self.track_id[index],
            self.model,
        )

    @property
    def label(self) -> np.ndarray:
        """``(N,)`` array of label strings (object dtype)."""
        names = np.asarray(self.labels, dtype=object)
        return names[self.class_id] if len(self) else np.zeros((0,), object)

    @property
    def area_px(self) -> np.ndarray:
        wh = np.clip(self.xyxy_px[:, 2:] - self.xyxy_px[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    def with_label(self, *names: str) -> "Detections":
        """Keep boxes whose label is one of ``names``."""
        wanted = np.array([n in names for n in self.labels], dtype=bool)
        if not len(self) or not wanted.any():
            return self[np.zeros(len(self), bool)]
        return self[wanted[self.class_id]]

    def with_tracks(self, track_id: np.ndarray) -> "Detections":
        return Detections(self.xyxy_px, self.confidence, self.class_id, self.labels, track_id, self.model)

    @staticmethod
    def merge(batches: list["Detections"]) -> "Detections":
        """Concatenate detections of one frame from several models onto a shared label table."""
        batches = [b for b in batches if b is not None]
        if not batches:
            return Detections.empty()
        labels: list[str] = []
        for b in batches:
            for name in b.labels:
                if name not in labels:
                    labels.append(name)
        remapped = []
        for b in batches:
            lut = np.array([labels.index(n) for n in b.labels] or [0], dtype=np.int32)
            remapped.append(lut[b.class_id] if len(b) else np.zeros((0,), np.int32))
        tracks = None
        if all(b.track_id is not None for b in batches):
            tracks = np.concatenate([b.track_id for b in batches])
        models = {b.model for b in batches}
        return Detections(
            np.concatenate([b.xyxy_px for b in batches]),
            np.concatenate([b.confidence for b in batches]),
            np.concatenate(remapped),
            tuple(labels),
            tracks,
            models.pop() if len(models) == 1 else "",
        )

    def to_records(self) -> list[dict]:
        """One dict per box (label, confidence, xyxy_px): for JSON output, not for the hot path."""
        out = []
        for i in range(len(self)):
            rec = {
                "label": self.labels[self.class_id[i]] if self.labels else int(self.class_id[i]),
                "confidence": round(float(self.confidence[i]), 4),
                "xyxy_px": [round(float(v), 1) for v in self.xyxy_px[i]],
            }
            if self.track_id is not None:
                rec["track_id"] = int(self.track_id[i])
            out.append(rec)
        return out
