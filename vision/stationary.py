"""Stationary-foreground analysis of a lane, for objects no detector knows (pallets, crates, e-bikes).

Two background models of the downscaled grey lane crop are kept, both with time constants in seconds of capture
time (so the frame rate does not matter):

- the long-term model is the empty lane. It learns slowly and only from pixels that look like background, with a
  global gain that follows daylight changes; it may start from a reference image of the empty lane;
- the short-term model follows whatever is there now within a few seconds.

A pixel that differs from the long-term model (something is there that the empty lane does not have) but matches
the short-term model (it has not changed for a while) is *stationary foreground*. A moving object differs from
both, so people walking or cars driving through never accumulate time. Each pixel's timer runs on capture time,
with a short grace for flicker; the lane is blocked when enough of it has been stationary foreground for at least
the rule's duration. Foreground older than ``absorb_after_s`` is learnt as the new background (a permanent change).

Without a reference image the first frame is taken as the empty lane; an object already there at start-up is
then invisible to this analysis (vehicles are still caught by the detector path).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from seawatch.errors import ConfigError, InputError
from seawatch.vision.config import StationaryForegroundConfig
from seawatch.vision.zones import Zone

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StationaryState:
    """Result of one update.

    Attributes:
        blocked: stationary foreground for at least ``min_duration_s`` covers ``min_area_frac`` of the lane or more.
        fraction: lane fraction that has been stationary foreground for at least ``min_duration_s``.
        candidate_fraction: lane fraction that is stationary foreground now, however briefly.
        since_ns: earliest start time among the qualifying pixels (None when nothing qualifies).
        last_seen_ns: latest time any qualifying pixel was actually stationary foreground (timers bridge a grace).
        xyxy_px: full-frame box around the qualifying pixels (None when nothing qualifies).
        mask: ``(h, w) bool`` qualifying pixels on the downscaled lane crop.
    """

    blocked: bool
    fraction: float
    candidate_fraction: float
    since_ns: int | None
    last_seen_ns: int | None
    xyxy_px: tuple[float, float, float, float] | None
    mask: np.ndarray


def _channel_gain(now: np.ndarray, model: np.ndarray) -> np.ndarray:
    """``(3,)`` median ratio per colour channel of ``now`` to ``model`` (both ``(k, 3)``), clipped to [0.5, 2]."""
    num = np.median(now, axis=0)
    den = np.median(model, axis=0)
    return np.where(den > 1.0, np.clip(num / np.maximum(den, 1.0), 0.5, 2.0), 1.0).astype(np.float32)


class StationaryForeground:
    """Dual-background stationary-object detector for one lane polygon of one source."""

    def __init__(self, lane: Zone, config: StationaryForegroundConfig, min_duration_s: float) -> None:
        if lane.kind != "pixel":
            raise ConfigError(f"stationary-foreground analysis needs a pixel polygon; zone {lane.id!r} is {lane.kind}")
        self.lane = lane
        self.config = config
        self.min_duration_ns = int(round(min_duration_s * 1e9))
        self._shape: tuple[int, int] | None = None  # full-frame (H, W) the geometry was built for
        self._reference: np.ndarray | None = None
        if config.reference_image:
            ref = cv2.imread(config.reference_image, cv2.IMREAD_COLOR)
            if ref is None:
                raise ConfigError(f"zone {lane.id!r}: cannot read reference_image {config.reference_image!r}")
            self._reference = ref

    def _setup(self, shape: tuple[int, int]) -> None:
        h_img, w_img = shape
        x1, y1, x2, y2 = self.lane.pixel_bounds()  # type: ignore[misc]
        x1, y1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        x2, y2 = min(w_img, int(np.ceil(x2))), min(h_img, int(np.ceil(y2)))
        if x2 - x1 < 2 or y2 - y1 < 2:
            raise InputError(f"lane {self.lane.id!r} lies outside the {w_img}x{h_img} frame")
        self._crop = (x1, y1, x2, y2)
        scale = min(1.0, self.config.max_side_px / max(x2 - x1, y2 - y1))
        self._scale = scale
        self._small = (max(2, int(round((x2 - x1) * scale))), max(2, int(round((y2 - y1) * scale))))  # (w, h)
        ring = np.asarray(self.lane.polygon.exterior.coords, np.float64)
        ring = (ring - [x1, y1]) * scale
        mask = np.zeros((self._small[1], self._small[0]), np.uint8)
        cv2.fillPoly(mask, [np.round(ring).astype(np.int32)], 1)
        self._lane_mask = mask.astype(bool)
        self._lane_px = max(1, int(self._lane_mask.sum()))
        self._shape = shape
        self._long: np.ndarray | None = None
        self._short: np.ndarray | None = None
        self._since = np.full(mask.shape, -1, np.int64)
        self._last_stat = np.full(mask.shape, np.iinfo(np.int64).min // 2, np.int64)
        self._fg_prev = np.zeros(mask.shape, bool)
        self._time_ns: int | None = None

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """Downscaled, slightly blurred ``(h, w, 3) float32`` colour crop (colour, because a blue crate on grey
        asphalt can have the asphalt's brightness)."""
        x1, y1, x2, y2 = self._crop
        crop = image[y1:y2, x1:x2]
        if crop.ndim == 2:
            crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
        step = max(1, int(0.5 / self._scale))  # subsample by stride first: INTER_AREA on a full-HD crop costs ~7 ms
        if step > 1:
            crop = crop[::step, ::step]
        small = cv2.resize(crop, self._small, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small.astype(np.float32), (3, 3), 0)

    def _ignore_mask(self, ignore_xyxy_px: np.ndarray | None) -> np.ndarray:
        m = np.zeros(self._lane_mask.shape, bool)
        if ignore_xyxy_px is None or len(ignore_xyxy_px) == 0:
            return m
        x1, y1, _, _ = self._crop
        b = (np.asarray(ignore_xyxy_px, np.float64).reshape(-1, 4) - [x1, y1, x1, y1]) * self._scale
        h, w = m.shape
        for bx1, by1, bx2, by2 in b:
            c1, r1 = max(0, int(np.floor(bx1))), max(0, int(np.floor(by1)))
            c2, r2 = min(w, int(np.ceil(bx2))), min(h, int(np.ceil(by2)))
            if c2 > c1 and r2 > r1:
                m[r1:r2, c1:c2] = True
        return m

    def update(self, image: np.ndarray, time_ns: int, ignore_xyxy_px: np.ndarray | None = None,
               learn_only: bool = False) -> StationaryState:
        """Feed one full frame (``(H, W, 3) uint8`` BGR) at its capture time.

        ``ignore_xyxy_px``: boxes (people) whose pixels never count and never teach the background.
        ``learn_only`` (its rule is disarmed by its schedule): the background models follow the scene (the empty lane
        where it is empty), but no timer runs and nothing is absorbed, so an object that came while the rule was off
        is still foreground when it is armed, and timed from then.
        """
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.dtype != np.uint8:
            raise InputError(f"lane {self.lane.id!r}: expected an (H, W, 3) uint8 image, got {getattr(image, 'shape', type(image))}")
        shape = (int(image.shape[0]), int(image.shape[1]))
        if self._shape != shape:
            if self._shape is not None:
                log.warning("lane %s: frame size changed %s -> %s; background models restart", self.lane.id, self._shape, shape)
            self._setup(shape)
        cfg = self.config
        t = int(time_ns)
        grey = self._prepare(image)
        ignore = self._ignore_mask(ignore_xyxy_px)
        lane = self._lane_mask
        if self._long is None:
            if self._reference is not None and self._reference.shape[:2] == shape:
                self._long = self._prepare(self._reference)
            else:
                if self._reference is not None:
                    log.warning("lane %s: reference image size %s differs from the frames %s; ignored", self.lane.id, self._reference.shape[:2], shape)
                self._long = grey.copy()
            self._short = grey.copy()
            self._time_ns = t
        if t < self._time_ns:  # type: ignore[operator]
            raise InputError(f"lane {self.lane.id!r}: frame at {t} ns is older than the previous one at {self._time_ns} ns")
        dt_s = (t - self._time_ns) / 1e9  # type: ignore[operator]
        self._time_ns = t

        # daylight, auto exposure and white balance: a per-channel gain of each model, estimated on lane pixels
        # that were background last time (long-term) or on the whole lane (short-term, which holds the objects too)
        bg = lane & ~self._fg_prev & ~ignore
        gain = np.ones(3, np.float32)
        if bg.sum() >= 0.2 * self._lane_px:
            gain = _channel_gain(grey[bg], self._long[bg])
        gain_s = _channel_gain(grey[lane & ~ignore], self._short[lane & ~ignore]) if (lane & ~ignore).any() else np.ones(3, np.float32)
        long_eff = self._long * gain
        thr = cfg.diff_threshold
        fg_long = np.abs(grey - long_eff).max(axis=2) > thr
        stable = np.abs(grey - self._short * gain_s).max(axis=2) < thr
        stat = fg_long & stable & lane & ~ignore
        stat = cv2.morphologyEx(stat.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)

        if learn_only:
            a_s = 1.0 - np.exp(-dt_s / cfg.short_tau_s) if dt_s > 0 else 0.0
            a_l = 1.0 - np.exp(-dt_s / cfg.long_tau_s) if dt_s > 0 else 0.0
            self._short += a_s * (grey / gain_s - self._short)
            learn = ~fg_long & ~ignore
            self._long[learn] += a_l * (grey[learn] / gain - self._long[learn])
            self._since[:] = -1
            self._fg_prev = fg_long
            return StationaryState(False, 0.0, float((stat := fg_long & lane & ~ignore).sum()) / self._lane_px, None, None,
                                   None, np.zeros_like(stat))

        # per-pixel timers on capture time, with a grace for flicker
        grace_ns = int(cfg.grace_s * 1e9)
        self._since[stat & (self._since < 0)] = t
        self._last_stat[stat] = t
        # pixels hidden by people neither count nor lose their timer (a worker in front of a pallet)
        lapsed = ~stat & ~ignore & (t - self._last_stat > grace_ns)
        self._since[lapsed] = -1
        qualified = (self._since >= 0) & (t - self._since >= self.min_duration_ns) & lane

        # model updates (after the decision, so this frame is judged against the past)
        a_s = 1.0 - np.exp(-dt_s / cfg.short_tau_s) if dt_s > 0 else 0.0
        a_l = 1.0 - np.exp(-dt_s / cfg.long_tau_s) if dt_s > 0 else 0.0
        self._short += a_s * (grey / gain_s - self._short)
        learn = ~fg_long & ~ignore
        self._long[learn] += a_l * (grey[learn] / gain - self._long[learn])
        absorb = (self._since >= 0) & (t - self._since > int(cfg.absorb_after_s * 1e9))
        if absorb.any():
            self._long[absorb] = grey[absorb] / gain
            self._since[absorb] = -1
            log.info("lane %s: %d px of long-standing foreground absorbed into the background", self.lane.id, int(absorb.sum()))
        self._fg_prev = fg_long

        frac = float(qualified.sum()) / self._lane_px
        cand = float(stat.sum()) / self._lane_px
        since_ns = last_ns = None
        box = None
        if qualified.any():
            since_ns = int(self._since[qualified].min())
            last_ns = int(self._last_stat[qualified].max())
            rows, cols = np.nonzero(qualified)
            x1, y1, _, _ = self._crop
            s = self._scale
            box = (x1 + cols.min() / s, y1 + rows.min() / s, x1 + (cols.max() + 1) / s, y1 + (rows.max() + 1) / s)
        return StationaryState(frac >= cfg.min_area_frac, frac, cand, since_ns, last_ns, box, qualified)
