"""Pose timeline: per-vehicle telemetry buffers interpolated to each video frame's capture time.

Position, attitude and gimbal attitude arrive as separate MAVLink messages at their own rates, so each has its
own time-sorted buffer. ``pose_at(capture_time_ns)`` looks every buffer up at ``capture_time_ns - latency``
(the video latency offset: how much later than the real exposure the frame was stamped), interpolates
position linearly in a local geodesic frame and attitude by quaternion slerp, and says why when it cannot:
no telemetry yet, a gap wider than ``max_gap_s`` around the frame, or newest telemetry older than
``max_age_s``. A stale pose comes back as ``pose=None`` with ``stale=True`` and the reason, so the event can
still go out without a position.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from seawatch.drone.geometry import (
    CameraPose,
    GimbalFrame,
    euler_zyx_from_quat,
    geod,
    quat_from_euler_zyx,
    quat_slerp,
)
from seawatch.errors import ConfigError, InputError

log = logging.getLogger(__name__)

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class PositionSample:
    """A GLOBAL_POSITION_INT-like fix. ``alt_m`` in the datum the geolocator uses; velocity north/east/down.

    ``fix_type`` is the GPS fix (GPS_FIX_TYPE: 0-1 none, 2 2D, 3 3D, 4 DGPS, 5-6 RTK) the vehicle last reported
    when this position came, None when unknown (no GPS_RAW_INT); ``h_acc_m`` its reported horizontal accuracy
    (m), None when not reported.
    """

    time_ns: int
    lat_deg: float
    lon_deg: float
    alt_m: float
    velocity_ned_m_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fix_type: int | None = None
    h_acc_m: float | None = None


@dataclass(frozen=True, slots=True)
class AttitudeSample:
    """An ATTITUDE-like sample: vehicle roll/pitch/yaw (Z-Y-X Euler, NED) and body rates."""

    time_ns: int
    roll_deg: float
    pitch_deg: float
    yaw_deg: float
    rates_deg_s: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class GimbalSample:
    """A gimbal attitude sample (GIMBAL_DEVICE_ATTITUDE_STATUS or MOUNT_STATUS), angles in ``frame``."""

    time_ns: int
    roll_deg: float
    pitch_deg: float
    yaw_deg: float
    frame: GimbalFrame = "horizon"


@dataclass(frozen=True, slots=True)
class PoseFix:
    """The answer of :meth:`PoseTimeline.pose_at`.

    Attributes:
        time_ns: the telemetry time looked up (frame capture time minus the latency offset).
        pose: the interpolated pose, or None when stale.
        stale: True when no trustworthy pose exists for that time.
        reason: why it is stale (None when not).
        position_age_s, attitude_age_s: distance in time to the nearest position / attitude sample.
    """

    time_ns: int
    pose: CameraPose | None
    stale: bool
    reason: str | None
    position_age_s: float
    attitude_age_s: float


T = TypeVar("T", PositionSample, AttitudeSample, GimbalSample)

GPS_FIX_3D = 3
GPS_FIX_NAMES = {0: "no GPS", 1: "no fix", 2: "2D fix"}


def _fix_problem(*samples: PositionSample | None) -> str | None:
    """Why these positions are not GPS-backed (below a 3D fix), or None (3D or better, or fix unknown)."""
    for s in samples:
        if s is not None and s.fix_type is not None and s.fix_type < GPS_FIX_3D:
            return (f"GPS fix lost ({GPS_FIX_NAMES.get(s.fix_type, s.fix_type)}, fix type {s.fix_type}): position "
                    "is dead reckoning")
    return None


class _Buffer(Generic[T]):
    """Time-sorted samples; out-of-order arrivals are inserted in place."""

    def __init__(self, kind: str, history_s: float) -> None:
        self.kind = kind
        self.history_ns = int(history_s * NS)
        self.times: list[int] = []
        self.samples: list[T] = []

    def add(self, s: T) -> None:
        t = int(s.time_ns)
        if self.times and t >= self.times[-1]:
            self.times.append(t)
            self.samples.append(s)
        else:
            i = bisect.bisect_right(self.times, t)
            self.times.insert(i, t)
            self.samples.insert(i, s)
        cut = self.times[-1] - self.history_ns
        if self.times[0] < cut:
            j = bisect.bisect_left(self.times, cut)
            del self.times[:j]
            del self.samples[:j]

    def bracket(self, t_ns: int, max_gap_s: float, max_age_s: float) -> tuple[T | None, T | None, float, str | None]:
        """(before, after, fraction, reason) for time ``t_ns``; ``after`` None means hold/extrapolate ``before``."""
        if not self.times:
            return None, None, 0.0, f"no {self.kind} telemetry received"
        i = bisect.bisect_right(self.times, t_ns)
        if i == 0:
            lead_s = (self.times[0] - t_ns) / NS
            if lead_s > max_age_s:
                return None, None, 0.0, f"frame is {lead_s:.2f} s before the first {self.kind} telemetry"
            return self.samples[0], None, 0.0, None
        if i == len(self.times):
            age_s = (t_ns - self.times[-1]) / NS
            if age_s > max_age_s:
                return None, None, 0.0, (
                    f"newest {self.kind} telemetry is {age_s:.2f} s older than the frame (max {max_age_s:.2f} s)"
                )
            return self.samples[-1], None, 0.0, None
        t0, t1 = self.times[i - 1], self.times[i]
        gap_s = (t1 - t0) / NS
        if gap_s > max_gap_s:
            near_s = min(t_ns - t0, t1 - t_ns) / NS
            if near_s > max_age_s:
                return None, None, 0.0, (
                    f"{self.kind} telemetry has a {gap_s:.2f} s gap around the frame (max {max_gap_s:.2f} s)"
                )
            s = self.samples[i - 1] if t_ns - t0 <= t1 - t_ns else self.samples[i]
            return s, None, 0.0, None
        f = 0.0 if t1 == t0 else (t_ns - t0) / (t1 - t0)
        return self.samples[i - 1], self.samples[i], f, None

    def age_s(self, t_ns: int) -> float:
        if not self.times:
            return math.inf
        i = bisect.bisect_left(self.times, t_ns)
        cands = [abs(self.times[j] - t_ns) for j in (i - 1, i) if 0 <= j < len(self.times)]
        return min(cands) / NS

    def __len__(self) -> int:
        return len(self.times)


class PoseTimeline:
    """Buffered telemetry of one vehicle, queried at frame capture times (thread safe).

    Args:
        vehicle_id: for log lines and reasons.
        latency_s: video latency offset; the pose is looked up at ``capture_time_ns - latency_s``.
        max_age_s: how far (s) the nearest sample may be from the lookup time before the pose is stale.
        max_gap_s: widest gap (s) between two samples that is still interpolated across.
        history_s: how much telemetry to keep.
        default_gimbal: (roll, pitch, yaw, frame) used while no gimbal telemetry has arrived (fixed mount).
        gimbal_max_age_s: gimbal status may be slow; its own staleness limit (older gimbal data is held).
    """

    def __init__(
        self,
        vehicle_id: str = "drone",
        latency_s: float = 0.0,
        max_age_s: float = 0.5,
        max_gap_s: float = 1.0,
        history_s: float = 300.0,
        default_gimbal: tuple[float, float, float, GimbalFrame] = (0.0, -90.0, 0.0, "horizon"),
        gimbal_max_age_s: float = 5.0,
    ) -> None:
        for name, v in (("max_age_s", max_age_s), ("max_gap_s", max_gap_s), ("history_s", history_s)):
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"pose timeline {vehicle_id}: {name}={v} must be positive")
        if not math.isfinite(latency_s):
            raise ConfigError(f"pose timeline {vehicle_id}: latency_s={latency_s} is not finite")
        self.vehicle_id = vehicle_id
        self.latency_ns = int(round(latency_s * NS))
        self.max_age_s = max_age_s
        self.max_gap_s = max_gap_s
        self.gimbal_max_age_s = gimbal_max_age_s
        self.default_gimbal = default_gimbal
        self._lock = threading.Lock()
        self._pos: _Buffer[PositionSample] = _Buffer("position", history_s)
        self._att: _Buffer[AttitudeSample] = _Buffer("attitude", history_s)
        self._gim: _Buffer[GimbalSample] = _Buffer("gimbal", history_s)

    # -- input ----------------------------------------------------------------------------------------------

    def add_position(self, s: PositionSample) -> None:
        if not (math.isfinite(s.lat_deg) and math.isfinite(s.lon_deg) and math.isfinite(s.alt_m)):
            raise InputError(f"pose timeline {self.vehicle_id}: position sample at {s.time_ns} is not finite")
        if not (-90.0 <= s.lat_deg <= 90.0 and -180.0 <= s.lon_deg <= 180.0):
            raise InputError(f"pose timeline {self.vehicle_id}: position sample at {s.time_ns} is not a valid "
                             f"lat/lon ({s.lat_deg}, {s.lon_deg})")
        with self._lock:
            self._pos.add(s)

    def add_attitude(self, s: AttitudeSample) -> None:
        if not all(math.isfinite(v) for v in (s.roll_deg, s.pitch_deg, s.yaw_deg)):
            raise InputError(f"pose timeline {self.vehicle_id}: attitude sample at {s.time_ns} is not finite")
        with self._lock:
            self._att.add(s)

    def add_gimbal(self, s: GimbalSample) -> None:
        if not all(math.isfinite(v) for v in (s.roll_deg, s.pitch_deg, s.yaw_deg)):
            raise InputError(f"pose timeline {self.vehicle_id}: gimbal sample at {s.time_ns} is not finite")
        with self._lock:
            self._gim.add(s)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"position": len(self._pos), "attitude": len(self._att), "gimbal": len(self._gim)}

    def time_range_ns(self) -> tuple[int, int] | None:
        """First and last position sample time, or None."""
        with self._lock:
            if not self._pos.times:
                return None
            return self._pos.times[0], self._pos.times[-1]

    def last_position(self) -> PositionSample | None:
        """The newest position sample (telemetry time), or None before the first."""
        with self._lock:
            return self._pos.samples[-1] if self._pos.samples else None

    def samples_between(self, t0_ns: int, t1_ns: int, max_per_kind: int = 50_000) -> dict[str, list[dict]]:
        """The buffered samples with ``t0_ns <= time_ns <= t1_ns`` (telemetry clock) per kind, as plain dicts, for
        evidence packages. Only what is still buffered (``history_s``); at most ``max_per_kind`` each, evenly thinned."""
        from dataclasses import asdict

        out: dict[str, list[dict]] = {}
        with self._lock:
            for kind, buf in (("position", self._pos), ("attitude", self._att), ("gimbal", self._gim)):
                i, j = bisect.bisect_left(buf.times, int(t0_ns)), bisect.bisect_right(buf.times, int(t1_ns))
                picked = buf.samples[i:j]
                if len(picked) > max_per_kind:
                    step = len(picked) / max_per_kind
                    picked = [picked[int(k * step)] for k in range(max_per_kind)]
                out[kind] = [asdict(x) for x in picked]
        return out

    # -- query ----------------------------------------------------------------------------------------------

    def pose_at(self, capture_time_ns: int) -> PoseFix:
        """The pose at a frame's capture time (UTC ns, same clock as the telemetry times)."""
        t = int(capture_time_ns) - self.latency_ns
        with self._lock:
            p0, p1, pf, preason = self._pos.bracket(t, self.max_gap_s, self.max_age_s)
            a0, a1, af, areason = self._att.bracket(t, self.max_gap_s, self.max_age_s)
            page, aage = self._pos.age_s(t), self._att.age_s(t)
            if len(self._gim):
                g0, g1, gf, greason = self._gim.bracket(t, self.gimbal_max_age_s, self.gimbal_max_age_s)
            else:
                g0 = g1 = None
                gf, greason = 0.0, None
        reason = preason or areason or greason or _fix_problem(p0, p1)
        if reason is not None:
            return PoseFix(t, None, True, f"{self.vehicle_id}: {reason}", page, aage)
        assert p0 is not None and a0 is not None
        try:
            pose = self._pose(t, p0, p1, pf, a0, a1, af, g0, g1, gf)
        except (InputError, ValueError) as exc:
            # samples that passed intake but make no pose (added straight to the timeline): stale, never raise,
            # so the frame's detections and events still go out
            return PoseFix(t, None, True, f"{self.vehicle_id}: invalid telemetry: {exc}", page, aage)
        return PoseFix(t, pose, False, None, page, aage)

    def _pose(self, t, p0, p1, pf, a0, a1, af, g0, g1, gf) -> CameraPose:
        lat, lon, alt, vel = _interp_position(p0, p1, pf, t)
        roll, pitch, yaw = _interp_angles(a0, a1, af)
        rates = a0.rates_deg_s if a1 is None else tuple(float(x) for x in np.add(np.multiply(a0.rates_deg_s, 1 - af), np.multiply(a1.rates_deg_s, af)))
        if g0 is None:
            gr, gp, gy, gframe = self.default_gimbal
        else:
            gr, gp, gy = _interp_angles(g0, g1, gf)
            gframe = g0.frame
        pose = CameraPose(
            lat_deg=lat,
            lon_deg=lon,
            alt_m=alt,
            roll_deg=roll,
            pitch_deg=pitch,
            yaw_deg=yaw,
            gimbal_roll_deg=gr,
            gimbal_pitch_deg=gp,
            gimbal_yaw_deg=gy,
            gimbal_frame=gframe,
            time_ns=t,
            velocity_ned_m_s=vel,
            rates_deg_s=rates,  # type: ignore[arg-type]
            horizontal_sigma_m=_h_acc(p0, p1),
        )
        return pose


def _interp_position(
    p0: PositionSample, p1: PositionSample | None, f: float, t_ns: int
) -> tuple[float, float, float, tuple[float, float, float]]:
    g = geod()
    if p1 is None:
        # hold, moved along the last velocity for the (short, <= max_age) time since the sample
        dt = (t_ns - p0.time_ns) / NS
        vn, ve, vd = p0.velocity_ned_m_s
        dn, de = vn * dt, ve * dt
        if dn == 0 and de == 0:
            return p0.lat_deg, p0.lon_deg, p0.alt_m - vd * dt, p0.velocity_ned_m_s
        lon, lat, _ = g.fwd(p0.lon_deg, p0.lat_deg, math.degrees(math.atan2(de, dn)), math.hypot(dn, de))
        return float(lat), _wrap_lon(lon), p0.alt_m - vd * dt, p0.velocity_ned_m_s
    az, _, dist = g.inv(p0.lon_deg, p0.lat_deg, p1.lon_deg, p1.lat_deg)
    if dist > 0:
        lon, lat, _ = g.fwd(p0.lon_deg, p0.lat_deg, az, dist * f)
    else:
        lon, lat = p0.lon_deg, p0.lat_deg
    alt = p0.alt_m + (p1.alt_m - p0.alt_m) * f
    vel = tuple(float(a + (b - a) * f) for a, b in zip(p0.velocity_ned_m_s, p1.velocity_ned_m_s))
    return float(lat), _wrap_lon(lon), float(alt), vel  # type: ignore[return-value]


def _h_acc(p0: PositionSample, p1: PositionSample | None) -> float | None:
    """The larger reported horizontal accuracy (m) of the positions used, None when neither reported one."""
    vals = [p.h_acc_m for p in (p0, p1) if p is not None and p.h_acc_m is not None and math.isfinite(p.h_acc_m)]
    return max(vals) if vals else None


def _wrap_lon(lon: float) -> float:
    return float(((lon + 180.0) % 360.0) - 180.0)


def _interp_angles(s0, s1, f: float) -> tuple[float, float, float]:
    if s1 is None or f == 0.0:
        return s0.roll_deg, s0.pitch_deg, s0.yaw_deg
    q0 = quat_from_euler_zyx(*(math.radians(v) for v in (s0.roll_deg, s0.pitch_deg, s0.yaw_deg)))
    q1 = quat_from_euler_zyx(*(math.radians(v) for v in (s1.roll_deg, s1.pitch_deg, s1.yaw_deg)))
    r, p, y = euler_zyx_from_quat(quat_slerp(q0, q1, f))
    return math.degrees(r), math.degrees(p), math.degrees(y)
