"""ByteTrack-class multi-object tracker over ``Detections``, with wall-clock timing.

Per update (one frame, capture time ``time_ns``):

1. every track's Kalman state (box centre x/y, aspect w/h, height, and their rates per second) is predicted to
   ``time_ns`` — the time step is the real gap between frames, so irregular or lagging frame delivery does not
   distort motion;
2. confirmed and lost tracks are matched to high-confidence detections by IoU with Hungarian assignment
   (``scipy.optimize.linear_sum_assignment``);
3. confirmed tracks still unmatched get a second chance against the low-confidence detections (the ByteTrack
   idea: a partly occluded object's low score still carries its track);
4. tentative tracks are matched to the high-confidence detections left; a tentative track gets its id only after
   ``min_hits`` matched frames, and is dropped at its first miss;
5. remaining confident detections start tentative tracks; lost tracks older than ``lost_buffer_s`` are dropped.

Association never crosses labels, except within a configured group (car/truck/bus, which detectors confuse).
Ids come from a counter owned by the tracker instance (1, 2, 3, ... per instance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from seawatch.errors import InputError
from seawatch.vision.config import TrackerConfig
from seawatch.vision.detections import Detections, pairwise_iou

log = logging.getLogger(__name__)

_NDIM = 4
# Process-noise and measurement-noise weights relative to box height (as in the ByteTrack/SORT Kalman filter),
# expressed per second of elapsed time instead of per frame.
_STD_POS_PER_S = 0.10  # box heights of random position drift per sqrt(second)
_STD_VEL_PER_S = 0.10  # box heights/s of random velocity change per sqrt(second)
_STD_MEAS = 1.0 / 20.0  # measurement noise, box heights
_STD_ASPECT = 1e-2
_STD_ASPECT_VEL = 1e-3


def xyxy_to_xyah(xyxy: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x1, y1, x2, y2 -> ``(N, 4)`` centre x, centre y, aspect w/h, height (float64)."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    w = np.maximum(b[:, 2] - b[:, 0], 1e-3)
    h = np.maximum(b[:, 3] - b[:, 1], 1e-3)
    return np.stack([b[:, 0] + w / 2, b[:, 1] + h / 2, w / h, h], axis=1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    a = np.asarray(xyah, np.float64).reshape(-1, 4)
    h = np.maximum(a[:, 3], 1e-3)
    w = np.maximum(a[:, 2], 1e-6) * h
    return np.stack([a[:, 0] - w / 2, a[:, 1] - h / 2, a[:, 0] + w / 2, a[:, 1] + h / 2], axis=1)


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """``(A, B)`` IoU of every box in ``a`` with every box in ``b`` (see ``detections.pairwise_iou``)."""
    return pairwise_iou(a_xyxy, b_xyxy)


class _Kalman:
    """Constant-velocity Kalman filter on (cx, cy, a, h), batched over tracks, time step in seconds."""

    H = np.hstack([np.eye(_NDIM), np.zeros((_NDIM, _NDIM))])

    @staticmethod
    def initiate(xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(M, 4)`` measurements -> means ``(M, 8)``, covariances ``(M, 8, 8)``."""
        m = xyah.shape[0]
        mean = np.zeros((m, 2 * _NDIM))
        mean[:, :_NDIM] = xyah
        h = xyah[:, 3]
        std = np.stack(
            [2 * _STD_MEAS * h, 2 * _STD_MEAS * h, np.full(m, _STD_ASPECT), 2 * _STD_MEAS * h,
             0.5 * h, 0.5 * h, np.full(m, _STD_ASPECT_VEL), 0.2 * h],
            axis=1,
        )
        cov = np.zeros((m, 2 * _NDIM, 2 * _NDIM))
        idx = np.arange(2 * _NDIM)
        cov[:, idx, idx] = std**2
        return mean, cov

    @staticmethod
    def predict(mean: np.ndarray, cov: np.ndarray, dt_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = mean.shape[0]
        if m == 0:
            return mean, cov
        dt = np.clip(np.asarray(dt_s, np.float64).reshape(-1), 0.0, None)
        F = np.tile(np.eye(2 * _NDIM), (m, 1, 1))
        F[:, np.arange(_NDIM), np.arange(_NDIM) + _NDIM] = dt[:, None]
        h = np.maximum(mean[:, 3], 1e-3)
        q_pos = (_STD_POS_PER_S * h) ** 2 * dt
        q_vel = (_STD_VEL_PER_S * h) ** 2 * dt
        q = np.stack([q_pos, q_pos, np.full(m, _STD_ASPECT**2) * dt, q_pos, q_vel, q_vel, np.full(m, _STD_ASPECT_VEL**2) * dt, q_vel], axis=1)
        Q = np.zeros((m, 2 * _NDIM, 2 * _NDIM))
        idx = np.arange(2 * _NDIM)
        Q[:, idx, idx] = q
        new_mean = np.einsum("mij,mj->mi", F, mean)
        new_cov = F @ cov @ F.transpose(0, 2, 1) + Q
        return new_mean, new_cov

    @classmethod
    def update(cls, mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = mean.shape[0]
        if m == 0:
            return mean, cov
        H = cls.H
        h = np.maximum(mean[:, 3], 1e-3)
        r = np.stack([(_STD_MEAS * h) ** 2, (_STD_MEAS * h) ** 2, np.full(m, 1e-1**2), (_STD_MEAS * h) ** 2], axis=1)
        R = np.zeros((m, _NDIM, _NDIM))
        R[:, np.arange(_NDIM), np.arange(_NDIM)] = r
        PHt = cov @ H.T  # (m, 8, 4)
        S = H @ PHt + R  # (m, 4, 4)
        K = np.linalg.solve(S, PHt.transpose(0, 2, 1)).transpose(0, 2, 1)  # (m, 8, 4)
        innov = xyah - mean[:, :_NDIM]
        new_mean = mean + np.einsum("mij,mj->mi", K, innov)
        new_cov = cov - K @ S @ K.transpose(0, 2, 1)
        return new_mean, new_cov


@dataclass(slots=True)
class _Track:
    mean: np.ndarray  # (8,)
    cov: np.ndarray  # (8, 8)
    group: int  # association group (label or label group)
    label: str
    state: str  # "tentative" | "tracked" | "lost"
    hits: int
    first_seen_ns: int
    last_seen_ns: int
    state_ns: int  # time the Kalman state refers to
    track_id: int = -1
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A read-only view of one live track (for debugging and rules that want predicted boxes)."""

    track_id: int
    label: str
    state: str
    xyxy_px: tuple[float, float, float, float]
    first_seen_ns: int
    last_seen_ns: int


class ByteTracker:
    """Tracks one source. ``update(detections, time_ns)`` returns the detections with ``track_id`` filled.

    Each input box keeps its position in the output; boxes not (yet) on a confirmed track get ``-1``. The input
    is not modified. Frames must come in non-decreasing capture time; an older frame raises ``InputError``.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_time_ns: int | None = None
        self._group_of: dict[str, int] = {}
        for gi, group in enumerate(self.config.class_groups):
            for lab in group:
                self._group_of.setdefault(lab, gi)

    def reset(self) -> None:
        """Forget every track (the id counter keeps counting, so ids are never reused by this instance)."""
        self._tracks = []
        self._last_time_ns = None

    @property
    def live_track_count(self) -> int:
        return len(self._tracks)

    def tracks(self) -> list[TrackInfo]:
        out = []
        for t in self._tracks:
            box = xyah_to_xyxy(t.mean[None, :_NDIM])[0]
            out.append(TrackInfo(t.track_id, t.label, t.state, tuple(float(v) for v in box), t.first_seen_ns, t.last_seen_ns))
        return out

    def _group(self, label: str) -> int:
        g = self._group_of.get(label)
        if g is None:
            g = len(self.config.class_groups) + len(self._group_of)
            self._group_of[label] = g
        return g

    def update(self, detections: Detections, time_ns: int) -> Detections:
        cfg = self.config
        time_ns = int(time_ns)
        if self._last_time_ns is not None and time_ns < self._last_time_ns:
            raise InputError(f"tracker got a frame at {time_ns} ns, older than the previous one at {self._last_time_ns} ns")
        first_frame = self._last_time_ns is None
        self._last_time_ns = time_ns

        n = len(detections)
        out_ids = np.full(n, -1, np.int64)
        conf = detections.confidence
        finite = np.isfinite(detections.xyxy_px).all(axis=1) & np.isfinite(conf)
        wh = detections.xyxy_px[:, 2:] - detections.xyxy_px[:, :2]
        valid = finite & (wh > 0).all(axis=1)
        labels = detections.label if n else np.zeros((0,), object)
        det_group = np.array([self._group(str(lab)) for lab in labels], np.int64) if n else np.zeros((0,), np.int64)
        det_xyxy = detections.xyxy_px.astype(np.float64)

        # 1. predict every track to this frame's time, by the real elapsed time since its state was last advanced
        if self._tracks:
            for t in self._tracks:
                if t.state == "lost":
                    # as in ByteTrack: a lost box keeps drifting with its velocity but stops growing/shrinking
                    t.mean = t.mean.copy()
                    t.mean[7] = 0.0
            mean = np.stack([t.mean for t in self._tracks])
            cov = np.stack([t.cov for t in self._tracks])
            dt = np.array([(time_ns - t.state_ns) / 1e9 for t in self._tracks])
            pm, pc = _Kalman.predict(mean, cov, dt)
            pred_xyxy = xyah_to_xyxy(pm[:, :_NDIM])
        else:
            pm = np.zeros((0, 8))
            pc = np.zeros((0, 8, 8))
            pred_xyxy = np.zeros((0, 4))
        track_group = np.array([t.group for t in self._tracks], np.int64)
        states = np.array([t.state for t in self._tracks], object)

        high = valid & (conf >= cfg.high_confidence)
        low = valid & (conf >= cfg.low_confidence) & ~high
        det_free = np.ones(n, bool)
        matched_track = np.zeros(len(self._tracks), bool)
        updates: list[tuple[int, int]] = []  # (track index, det index)

        def assign(track_idx: np.ndarray, det_idx: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
            if track_idx.size == 0 or det_idx.size == 0:
                return []
            iou = iou_matrix(pred_xyxy[track_idx], det_xyxy[det_idx])
            same = track_group[track_idx][:, None] == det_group[det_idx][None, :]
            cost = np.where(same & (iou >= min_iou), 1.0 - iou, 1e6)
            rows, cols = linear_sum_assignment(cost)
            keep = cost[rows, cols] < 1e5
            return [(int(track_idx[r]), int(det_idx[c])) for r, c in zip(rows[keep], cols[keep])]

        # 2. confirmed + lost tracks vs high-confidence detections
        stage1_tracks = np.flatnonzero((states == "tracked") | (states == "lost"))
        for ti, di in assign(stage1_tracks, np.flatnonzero(high & det_free), cfg.match_iou):
            updates.append((ti, di))
            matched_track[ti] = True
            det_free[di] = False
        # 3. still-unmatched confirmed (not lost) tracks vs low-confidence detections
        stage2_tracks = np.flatnonzero((states == "tracked") & ~matched_track)
        for ti, di in assign(stage2_tracks, np.flatnonzero(low & det_free), cfg.low_match_iou):
            updates.append((ti, di))
            matched_track[ti] = True
            det_free[di] = False
        # 4. tentative tracks vs the remaining high-confidence detections
        tentative = np.flatnonzero(states == "tentative")
        for ti, di in assign(tentative, np.flatnonzero(high & det_free), cfg.tentative_match_iou):
            updates.append((ti, di))
            matched_track[ti] = True
            det_free[di] = False

        # Kalman correction for matched tracks, batched
        if updates:
            tis = np.array([u[0] for u in updates])
            dis = np.array([u[1] for u in updates])
            um, uc = _Kalman.update(pm[tis], pc[tis], xyxy_to_xyah(det_xyxy[dis]))
            pm[tis] = um
            pc[tis] = uc
        survivors: list[_Track] = []
        for i, t in enumerate(self._tracks):
            t.mean, t.cov, t.state_ns = pm[i], pc[i], time_ns
        for ti, di in updates:
            t = self._tracks[ti]
            t.last_seen_ns = time_ns
            t.hits += 1
            t.score = float(conf[di])
            t.label = str(labels[di])
            if t.state == "tentative" and t.hits >= cfg.min_hits:
                t.state = "tracked"
                t.track_id = self._new_id()
            elif t.state == "lost":
                t.state = "tracked"
            if t.state == "tracked":
                out_ids[di] = t.track_id
        for i, t in enumerate(self._tracks):
            if not matched_track[i]:
                if t.state == "tentative":
                    continue  # a tentative track dies at its first miss
                if t.state == "tracked":
                    t.state = "lost"
                if (time_ns - t.last_seen_ns) / 1e9 > cfg.lost_buffer_s:
                    continue  # lost for too long: state dropped
            survivors.append(t)

        # 5. new tracks from confident unmatched detections
        new_idx = np.flatnonzero(det_free & valid & (conf >= cfg.new_track_confidence))
        if new_idx.size:
            nm, nc = _Kalman.initiate(xyxy_to_xyah(det_xyxy[new_idx]))
            for k, di in enumerate(new_idx):
                t = _Track(nm[k], nc[k], int(det_group[di]), str(labels[di]), "tentative", 1, time_ns, time_ns, time_ns, score=float(conf[di]))
                if cfg.min_hits <= 1 or first_frame:
                    t.state = "tracked"
                    t.track_id = self._new_id()
                    out_ids[di] = t.track_id
                survivors.append(t)
        self._tracks = survivors
        return detections.with_tracks(out_ids)

    def _new_id(self) -> int:
        tid = self._next_id
        self._next_id += 1
        return tid


class SourceTrackers:
    """One ``ByteTracker`` per source, created on first use; ``close(source_id)`` drops a finished source's state."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._trackers: dict[str, ByteTracker] = {}

    def update(self, source_id: str, detections: Detections, time_ns: int) -> Detections:
        tracker = self._trackers.get(source_id)
        if tracker is None:
            tracker = self._trackers[source_id] = ByteTracker(self.config)
        return tracker.update(detections, time_ns)

    def close(self, source_id: str) -> None:
        self._trackers.pop(source_id, None)

    def __contains__(self, source_id: str) -> bool:
        return source_id in self._trackers
