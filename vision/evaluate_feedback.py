"""What a fixed camera's review desk does to the numbers: "ignore this spot", scored without peeking.

On a fixed camera most of a detector's surest false boxes sit at a few fixed spots — a buoy, a pile, a moored
crane barge the labels leave out — and come back in every frame. An operator dismisses such an alarm with "ignore
this spot" (``POST /api/events/{id}/ignore-spot``) and the camera drops detections of that label there from then
on. ``seawatch evaluate --operator-ignore`` measures that on labelled frames, leave-one-session-out: each frame is
scored with the ignore areas an operator would have made on the *other* sessions (days) of the same camera, never
from its own labels:

1. the false boxes at the model's operating threshold on those frames, surest first, are grouped into spots: a box
   whose anchor point (a vessel's waterline) lies in the area of a surer spot joins it, else it starts one;
2. a spot seen in at least ``min_frames`` frames becomes the area the review desk makes of its surest box
   (:func:`seawatch.vision.zones.ignore_area_around`, the same function the service uses);
3. the frame's detections whose anchor lies in one of those areas are dropped (:class:`IgnoreMask`) and the rest
   are matched against its labels as usual.

A frame's camera is its ground truth's ``camera`` (else its manifest category), its session the ground truth's
``session`` or ``date`` (else the first ``YYYY-MM-DD`` in its file name); a frame whose camera has no other session
is scored without areas and counted in ``frames_without_feedback``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from seawatch.vision.metrics import LabelStats, match

_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def camera_session(sample) -> tuple[str, str | None]:
    """``(camera, session)`` of a labelled frame (see the module docstring); session None when there is none."""
    gt = sample.ground_truth or {}
    camera = str(gt.get("camera") or sample.category)
    session = gt.get("session") or gt.get("date")
    if session is None and (m := _DATE.search(sample.path.name)):
        session = m.group(1)
    return camera, (None if session is None else str(session))


@dataclass
class _Frame:
    camera: str
    session: str | None
    xyxy_px: np.ndarray  # (N, 4) float32, the model's boxes of the label, down to the curve floor
    confidence: np.ndarray  # (N,)
    gt_xyxy_px: np.ndarray  # (M, 4)


@dataclass
class FeedbackLog:
    """Per (label, model), the frames' detections and labels, for :meth:`report` once every frame is in."""

    min_frames: int = 2
    frames: dict[tuple[str, str], list[_Frame]] = field(default_factory=dict)
    op_conf: dict[tuple[str, str], float] = field(default_factory=dict)

    def add(self, label: str, model: str, sample, xyxy_px: np.ndarray, confidence: np.ndarray, gt_xyxy_px: np.ndarray,
            op_conf: float) -> None:
        camera, session = camera_session(sample)
        self.frames.setdefault((label, model), []).append(
            _Frame(camera, session, np.asarray(xyxy_px, np.float32).reshape(-1, 4), np.asarray(confidence, np.float32),
                   np.asarray(gt_xyxy_px, np.float32).reshape(-1, 4)))
        self.op_conf[(label, model)] = op_conf

    def report(self) -> dict[tuple[str, str], dict]:
        """Per (label, model): the metrics with the other sessions' ignore areas applied, and how many areas."""
        out = {}
        for key, frames in self.frames.items():
            label, _ = key
            op = self.op_conf[key]
            st = LabelStats()
            sessions: dict[str, set[str]] = {}  # camera -> its sessions
            for f in frames:
                if f.session is not None:
                    sessions.setdefault(f.camera, set()).add(f.session)
            # per (camera, held-out session), once: the areas of its camera's other sessions and their mask
            areas_by: dict[tuple[str, str], tuple[list, object]] = {}
            without = 0
            for f in frames:
                if f.session is None or sessions[f.camera] == {f.session}:
                    without += 1
                    xy, conf = f.xyxy_px, f.confidence
                else:
                    ck = (f.camera, f.session)
                    if ck not in areas_by:
                        others = [g for g in frames if g.camera == f.camera and g.session not in (None, f.session)]
                        areas = recurring_false_alarm_areas(others, label, op, self.min_frames)
                        areas_by[ck] = (areas, _mask(areas, label))
                    mask = areas_by[ck][1]
                    keep = np.ones(len(f.xyxy_px), bool) if mask is None else mask.keep(_detections(f.xyxy_px, label))
                    xy, conf = f.xyxy_px[keep], f.confidence[keep]
                st.add(conf, match(xy, conf, f.gt_xyxy_px), len(f.gt_xyxy_px))
            entry = {**st.summary(op), "conf": op}
            for p in (0.8, 0.7, 0.6):
                entry[f"recall_at_precision_{p}"] = round(st.recall_at_precision(p)[0], 4)
            entry["ignore_areas"] = sum(len(areas) for areas, _ in areas_by.values())
            entry["frames_without_feedback"] = without
            entry["min_frames"] = self.min_frames
            out[key] = entry
        return out


def _detections(xyxy_px: np.ndarray, label: str):
    from seawatch.vision.detections import Detections

    xy = np.asarray(xyxy_px, np.float32).reshape(-1, 4)
    return Detections(xy, np.ones(len(xy), np.float32), np.zeros(len(xy), np.int32), (label,))


def _anchors(xyxy_px: np.ndarray, label: str) -> np.ndarray:
    """``(N, 2)`` the points an ignore area tests (zones.IGNORE_ANCHORS: a vessel's waterline)."""
    from seawatch.vision.zones import IGNORE_ANCHORS, anchor_points

    return anchor_points(_detections(xyxy_px, label), IGNORE_ANCHORS)


def _inside(point: np.ndarray, polygon: list[list[float]]) -> bool:
    xs = [p[0] for p in polygon]
    ys = [p[1] for p in polygon]  # ignore_area_around makes axis-aligned rectangles
    return min(xs) <= point[0] <= max(xs) and min(ys) <= point[1] <= max(ys)


def _mask(areas: list[list[list[float]]], label: str):
    """The pipeline's IgnoreMask of these areas for ``label`` (None for no areas)."""
    from seawatch.vision.zones import IgnoreMask

    return IgnoreMask.from_pixels([(a, (label,)) for a in areas], "evaluate") if areas else None


def recurring_false_alarm_areas(frames: list[_Frame], label: str, op_conf: float, min_frames: int = 2) -> list[list[list[float]]]:
    """The ignore areas an operator would make of these frames: spots of false boxes (at ``op_conf``) seen in at least
    ``min_frames`` frames, each the review desk's area around its surest box."""
    from seawatch.vision.zones import ignore_area_around

    false: list[tuple[float, int, np.ndarray]] = []
    for i, f in enumerate(frames):
        op = f.confidence >= op_conf
        xy, conf = f.xyxy_px[op], f.confidence[op]
        tp = match(xy, conf, f.gt_xyxy_px)
        false += [(float(c), i, b) for b, c in zip(xy[~tp], conf[~tp])]
    false.sort(key=lambda t: -t[0])
    spots: list[tuple[list[list[list[float]]], set[int]]] = []  # (areas, frames)
    for _, i, box in false:
        anchor = _anchors(box, label)[0]
        spot = next((s for s in spots if any(_inside(anchor, a) for a in s[0])), None)
        area = ignore_area_around(box, label)
        if spot is None:
            spots.append(([area], {i}))
        else:  # each time the operator dismisses it again, the spot grows by that box's area
            spot[0].append(area)
            spot[1].add(i)
    return [a for areas, seen in spots if len(seen) >= min_frames for a in areas]
