"""Camera geometry shared by drones and fixed cameras: pixel <-> ground <-> WGS84, with uncertainty.

Frames and conventions (all angles in degrees at the API, radians inside):

* **NED**: a local tangent frame at the camera: x north, y east, z down (metres).
* **Body (FRD)**: vehicle x forward, y right, z down. Vehicle attitude is aerospace Z-Y-X Euler
  (yaw about down, then pitch about the new right axis, then roll about forward), as MAVLink ATTITUDE reports:
  ``R_ned_from_body = Rz(yaw) @ Ry(pitch) @ Rx(roll)``. Yaw 0 = north, 90 = east; pitch > 0 = nose up.
* **Gimbal**: the same Z-Y-X Euler convention; the gimbal's x axis is the optical axis. Gimbal pitch -90 looks
  straight down. ``gimbal_frame`` says what the gimbal angles are relative to:

  - ``"body"``: relative to the vehicle body (fixed mounts, ``MOUNT_STATUS``-style angles relative to the airframe);
    ``R_ned_from_gimbal = R_ned_from_body @ R(gimbal)``.
  - ``"horizon"``: a stabilised gimbal (MAVLink gimbal v2 default): roll/pitch relative to the horizon, yaw
    relative to the vehicle heading; ``R = Rz(vehicle_yaw + gimbal_yaw) @ Ry(gimbal_pitch) @ Rx(gimbal_roll)``.
  - ``"earth"``: roll/pitch/yaw all absolute (gimbal v2 with yaw lock, or a surveyed fixed camera);
    the vehicle attitude is ignored.

* **Camera (OpenCV)**: x right, y down in the image, z along the optical axis. The camera sits on the gimbal
  with camera z = gimbal x, camera x = gimbal y, camera y = gimbal z, so with everything at zero the image top
  points up and image right points east when yaw is 0 and pitch looks at the horizon.

Heights: ``CameraPose.alt_m``, the surface height and any DEM must share one vertical datum (all AMSL, or all
relative to the home point). Rays are intersected with the surface as a sphere of the local WGS84 radius of
curvature (the sea drops 2.5 cm at 560 m but 0.7 m at 3 km, which a shore camera 25 m up would turn into an
80 m range error on a flat earth; rays beyond the true horizon miss). The hit is expressed as azimuth and arc
distance from the camera nadir and turned into WGS84 with ``pyproj.Geod`` (WGS84), so ``north_m``/``east_m``
are azimuthal-equidistant coordinates around the nadir.

Uncertainty: the ground point is recomputed with each error source moved by +-1 sigma (central differences,
which is also the symmetric sigma-point set), the 2x2 covariance of the north/east error is accumulated, and
the 95 % ellipse is reported (semi-axes = sqrt(chi2_2(0.95)) * sqrt(eigenvalue)). Timing error enters through
the pose's velocity and angular rates.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Sequence

import numpy as np

from seawatch.errors import ConfigError, InputError

log = logging.getLogger(__name__)

CHI2_2DOF_95 = -2.0 * math.log(0.05)  # 5.991: 95 % quantile of chi-square with 2 degrees of freedom
GimbalFrame = Literal["body", "horizon", "earth"]
_GIMBAL_FRAMES = ("body", "horizon", "earth")

# camera axes expressed in gimbal axes (columns: camera x, y, z)
_GIMBAL_FROM_CAM = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

_GEOD = None


def geod():
    """The shared WGS84 ``pyproj.Geod`` (created on first use, not at import)."""
    global _GEOD
    if _GEOD is None:
        from pyproj import Geod

        _GEOD = Geod(ellps="WGS84")
    return _GEOD


_WGS84_A_M = 6378137.0
_WGS84_E2 = 6.69437999014e-3


def earth_radius_m(lat_deg: float) -> float:
    """Gaussian mean radius of curvature of WGS84 at a latitude, sqrt(M N) (the local sphere)."""
    s2 = math.sin(math.radians(lat_deg)) ** 2
    w = 1.0 - _WGS84_E2 * s2
    m = _WGS84_A_M * (1.0 - _WGS84_E2) / w**1.5
    nn = _WGS84_A_M / math.sqrt(w)
    return math.sqrt(m * nn)


def ray_sphere_hit(
    rays_ned_unit: np.ndarray, cam_alt_m, surface_alt_m, radius_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where unit rays from a camera meet a sphere of the surface height: (north_arc_m, east_arc_m, range_m).

    The camera is ``cam_alt_m`` above the datum sphere of ``radius_m`` (centre below the camera nadir); the
    surface is the concentric sphere ``surface_alt_m`` above the datum. Arcs are measured along the datum
    sphere from the nadir, split by azimuth (what ``pyproj.Geod.fwd`` takes). Rays that miss (at or above the
    horizon) give NaN. Inputs broadcast; ``rays_ned_unit`` is ``(..., 3)``.
    """
    d = rays_ned_unit
    rc = radius_m + cam_alt_m
    b = rc * d[..., 2]  # (R + H) * cos(angle from the nadir)
    c = (cam_alt_m - surface_alt_m) * (2.0 * radius_m + cam_alt_m + surface_alt_m)  # |C-O|^2 - (R+s)^2
    disc = b * b - c
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (b > 0) & (disc >= 0) & (c > 0)
        t = np.where(ok, c / (b + np.sqrt(np.where(disc >= 0, disc, 0.0))), np.nan)  # the near root, stably
        pn, pe = t * d[..., 0], t * d[..., 1]
        pz_from_centre = rc - t * d[..., 2]  # distance of the hit from the centre plane through O, along up
        theta = np.arctan2(np.hypot(pn, pe), pz_from_centre)
        arc = radius_m * theta
        horiz = np.hypot(pn, pe)
        scale = np.where(horiz > 0, arc / horiz, 1.0)
    return pn * scale, pe * scale, t


# --------------------------------------------------------------------------------------------- rotations


def euler_zyx_to_matrix(roll_rad, pitch_rad, yaw_rad) -> np.ndarray:
    """Rotation matrices ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``; inputs broadcast, output ``(..., 3, 3)``."""
    r, p, y = np.broadcast_arrays(
        np.asarray(roll_rad, float), np.asarray(pitch_rad, float), np.asarray(yaw_rad, float)
    )
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    m = np.empty(r.shape + (3, 3))
    m[..., 0, 0] = cy * cp
    m[..., 0, 1] = cy * sp * sr - sy * cr
    m[..., 0, 2] = cy * sp * cr + sy * sr
    m[..., 1, 0] = sy * cp
    m[..., 1, 1] = sy * sp * sr + cy * cr
    m[..., 1, 2] = sy * sp * cr - cy * sr
    m[..., 2, 0] = -sp
    m[..., 2, 1] = cp * sr
    m[..., 2, 2] = cp * cr
    return m


def matrix_to_euler_zyx(m: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_zyx_to_matrix` for one matrix: (roll, pitch, yaw) in radians."""
    pitch = -math.asin(max(-1.0, min(1.0, float(m[2, 0]))))
    roll = math.atan2(float(m[2, 1]), float(m[2, 2]))
    yaw = math.atan2(float(m[1, 0]), float(m[0, 0]))
    return roll, pitch, yaw


def quat_from_euler_zyx(roll_rad: float, pitch_rad: float, yaw_rad: float) -> np.ndarray:
    """Quaternion ``(w, x, y, z)`` of ``Rz(yaw) Ry(pitch) Rx(roll)`` (the MAVLink convention)."""
    cr, sr = math.cos(roll_rad / 2), math.sin(roll_rad / 2)
    cp, sp = math.cos(pitch_rad / 2), math.sin(pitch_rad / 2)
    cy, sy = math.cos(yaw_rad / 2), math.sin(yaw_rad / 2)
    return np.array(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ]
    )


def euler_zyx_from_quat(q: Sequence[float]) -> tuple[float, float, float]:
    """(roll, pitch, yaw) in radians from a quaternion ``(w, x, y, z)`` (normalised here)."""
    w, x, y, z = (float(v) for v in q)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if not math.isfinite(n) or n < 1e-9:
        raise InputError(f"quaternion {tuple(q)} has no valid rotation (norm {n})")
    w, x, y, z = w / n, x / n, y / n, z / n
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def quat_slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions ``(w, x, y, z)``, shortest path, ``t`` in [0, 1]."""
    q0 = np.asarray(q0, float) / np.linalg.norm(q0)
    q1 = np.asarray(q1, float) / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation; take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    s = math.sin(theta)
    return (math.sin((1 - t) * theta) / s) * q0 + (math.sin(t * theta) / s) * q1


# --------------------------------------------------------------------------------------------- intrinsics


@dataclass(frozen=True, slots=True)
class CameraIntrinsics:
    """Pinhole camera with Brown-Conrady distortion (OpenCV's k1, k2, p1, p2, k3).

    Attributes are in pixels for the image size ``width_px x height_px``; distortion coefficients are unitless.
    """

    width_px: int
    height_px: int
    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0

    def __post_init__(self) -> None:
        if self.width_px <= 0 or self.height_px <= 0:
            raise ConfigError(f"camera intrinsics: image size {self.width_px}x{self.height_px} must be positive")
        for name in ("fx_px", "fy_px"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"camera intrinsics: {name}={v} must be a positive number")
        for name in ("cx_px", "cy_px", "k1", "k2", "p1", "p2", "k3"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"camera intrinsics: {name} is not finite")

    @classmethod
    def from_fov(cls, width_px: int, height_px: int, hfov_deg: float, **distortion: float) -> "CameraIntrinsics":
        """Square pixels, principal point at the centre, horizontal field of view ``hfov_deg``."""
        if not 0 < hfov_deg < 180:
            raise ConfigError(f"camera intrinsics: horizontal field of view {hfov_deg} deg must be in (0, 180)")
        f = (width_px / 2) / math.tan(math.radians(hfov_deg) / 2)
        return cls(width_px, height_px, f, f, width_px / 2, height_px / 2, **distortion)

    @classmethod
    def from_sensor(
        cls, width_px: int, height_px: int, focal_length_mm: float, sensor_width_mm: float, sensor_height_mm: float
    ) -> "CameraIntrinsics":
        """From MAVLink CAMERA_INFORMATION-style values (focal length and sensor size in mm)."""
        if focal_length_mm <= 0 or sensor_width_mm <= 0 or sensor_height_mm <= 0:
            raise ConfigError(
                f"camera intrinsics: focal length {focal_length_mm} mm and sensor {sensor_width_mm}x"
                f"{sensor_height_mm} mm must be positive"
            )
        fx = focal_length_mm / sensor_width_mm * width_px
        fy = focal_length_mm / sensor_height_mm * height_px
        return cls(width_px, height_px, fx, fy, width_px / 2, height_px / 2)

    @property
    def has_distortion(self) -> bool:
        return any((self.k1, self.k2, self.p1, self.p2, self.k3))

    def distort(self, xy_norm: np.ndarray) -> np.ndarray:
        """Normalised undistorted coordinates ``(N, 2)`` -> pixels ``(N, 2)``."""
        x, y = xy_norm[..., 0], xy_norm[..., 1]
        if self.has_distortion:
            r2 = x * x + y * y
            radial = 1 + r2 * (self.k1 + r2 * (self.k2 + r2 * self.k3))
            xd = x * radial + 2 * self.p1 * x * y + self.p2 * (r2 + 2 * x * x)
            yd = y * radial + self.p1 * (r2 + 2 * y * y) + 2 * self.p2 * x * y
        else:
            xd, yd = x, y
        return np.stack([xd * self.fx_px + self.cx_px, yd * self.fy_px + self.cy_px], axis=-1)

    def undistort(self, pixels_px: np.ndarray, iterations: int = 30) -> np.ndarray:
        """Pixels ``(N, 2)`` -> normalised undistorted coordinates ``(N, 2)`` (fixed-point inversion).

        Converges to < 1e-9 for the distortion of ordinary lenses within the image; points where it does
        not converge come back NaN.
        """
        p = np.asarray(pixels_px, float)
        xd = (p[..., 0] - self.cx_px) / self.fx_px
        yd = (p[..., 1] - self.cy_px) / self.fy_px
        if not self.has_distortion:
            return np.stack([xd, yd], axis=-1)
        x, y = xd.copy(), yd.copy()
        for _ in range(iterations):
            r2 = x * x + y * y
            radial = 1 + r2 * (self.k1 + r2 * (self.k2 + r2 * self.k3))
            dx = 2 * self.p1 * x * y + self.p2 * (r2 + 2 * x * x)
            dy = self.p1 * (r2 + 2 * y * y) + 2 * self.p2 * x * y
            with np.errstate(divide="ignore", invalid="ignore"):
                x = (xd - dx) / radial
                y = (yd - dy) / radial
        out = np.stack([x, y], axis=-1)
        back = self.distort(out)
        err = np.hypot(back[..., 0] - p[..., 0], back[..., 1] - p[..., 1])
        out[~(err < 1e-3)] = np.nan
        return out


# --------------------------------------------------------------------------------------------- pose


@dataclass(frozen=True, slots=True)
class CameraPose:
    """Where the camera is and where it looks, at one instant.

    Attributes:
        lat_deg, lon_deg: WGS84 position of the camera.
        alt_m: camera height in the same vertical datum as the surface (see module doc).
        roll_deg, pitch_deg, yaw_deg: vehicle attitude (Z-Y-X Euler, NED); zero for a fixed camera.
        gimbal_roll_deg, gimbal_pitch_deg, gimbal_yaw_deg: gimbal angles in ``gimbal_frame``.
        gimbal_frame: "body", "horizon" or "earth" (see module doc).
        time_ns: UTC time this pose is valid for, if known.
        velocity_ned_m_s: vehicle velocity (north, east, down), used for the timing-error term.
        rates_deg_s: attitude rates (roll, pitch, yaw), used for the timing-error term.
        horizontal_sigma_m: the position source's own horizontal error (m, e.g. GPS_RAW_INT.h_acc) when known;
            the locator uses it where it exceeds its configured ``PoseSigmas.horizontal_m``.
    """

    lat_deg: float
    lon_deg: float
    alt_m: float
    roll_deg: float = 0.0
    pitch_deg: float = 0.0
    yaw_deg: float = 0.0
    gimbal_roll_deg: float = 0.0
    gimbal_pitch_deg: float = 0.0
    gimbal_yaw_deg: float = 0.0
    gimbal_frame: GimbalFrame = "body"
    time_ns: int | None = None
    velocity_ned_m_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rates_deg_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    horizontal_sigma_m: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat_deg) and -90.0 <= self.lat_deg <= 90.0):
            raise InputError(f"camera pose: latitude {self.lat_deg} is not in [-90, 90]")
        if not (math.isfinite(self.lon_deg) and -540.0 <= self.lon_deg <= 540.0):
            raise InputError(f"camera pose: longitude {self.lon_deg} is not a valid longitude")
        for name in ("alt_m", "roll_deg", "pitch_deg", "yaw_deg", "gimbal_roll_deg", "gimbal_pitch_deg", "gimbal_yaw_deg"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"camera pose: {name} is not finite ({getattr(self, name)})")
        if self.gimbal_frame not in _GIMBAL_FRAMES:
            raise InputError(f"camera pose: gimbal_frame {self.gimbal_frame!r} is not one of {_GIMBAL_FRAMES}")

    def rotation_ned_from_camera(self) -> np.ndarray:
        """``(3, 3)`` matrix taking camera-frame vectors (x right, y down, z forward) to NED."""
        return _rotations(self, np.zeros((1, 6)))[0]


def _rotations(pose: CameraPose, dangles_deg: np.ndarray) -> np.ndarray:
    """NED-from-camera rotations for the pose with angle offsets ``(K, 6)`` (vehicle rpy, gimbal rpy), degrees.

    Offsets 0..2 are errors of the attitude reference (the vehicle AHRS); for a stabilised gimbal they tilt the
    camera through the horizon it holds, so ``PoseSigmas.attitude_deg`` counts in every gimbal frame.
    """
    d = np.radians(dangles_deg)
    vr = math.radians(pose.roll_deg) + d[:, 0]
    vp = math.radians(pose.pitch_deg) + d[:, 1]
    vy = math.radians(pose.yaw_deg) + d[:, 2]
    gr = math.radians(pose.gimbal_roll_deg) + d[:, 3]
    gp = math.radians(pose.gimbal_pitch_deg) + d[:, 4]
    gy = math.radians(pose.gimbal_yaw_deg) + d[:, 5]
    if pose.gimbal_frame == "body":
        r = euler_zyx_to_matrix(vr, vp, vy) @ euler_zyx_to_matrix(gr, gp, gy)
    elif pose.gimbal_frame == "horizon":
        # a stabilised gimbal: the vehicle's roll/pitch do not move the camera, but the error of the attitude
        # reference it stabilises against (the vehicle's roll/pitch error) does
        r = euler_zyx_to_matrix(gr + d[:, 0], gp + d[:, 1], vy + gy)
    else:
        r = euler_zyx_to_matrix(gr + d[:, 0], gp + d[:, 1], gy + d[:, 2])
    return r @ _GIMBAL_FROM_CAM


# --------------------------------------------------------------------------------------------- errors model


@dataclass(frozen=True, slots=True)
class PoseSigmas:
    """One-sigma errors of the inputs to geolocation.

    Attributes:
        attitude_deg: vehicle roll/pitch/yaw error (each axis).
        gimbal_deg: gimbal roll/pitch/yaw error (each axis).
        horizontal_m: camera position error, north and east each.
        vertical_m: camera height error.
        surface_m: error of the surface height (waves, tide, DEM error).
        timing_s: error of the pose time versus the frame capture time (scaled by velocity and rates).
        pixel_px: error of the pixel position (detector box centre), each axis.
    """

    attitude_deg: float = 0.5
    gimbal_deg: float = 0.0
    horizontal_m: float = 1.5
    vertical_m: float = 1.0
    surface_m: float = 0.0
    timing_s: float = 0.05
    pixel_px: float = 1.0

    def __post_init__(self) -> None:
        for name in self.__slots__:
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"pose sigmas: {name}={v} must be a non-negative number")


PERFECT = PoseSigmas(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class GroundPoints:
    """Geolocated pixels, one entry per input pixel (struct of arrays).

    Attributes:
        lat_deg, lon_deg, alt_m: ``(N,)`` float64 ground positions; NaN where not ``valid``.
        north_m, east_m: ``(N,)`` offsets from the camera nadir in its tangent plane.
        range_m: ``(N,)`` slant distance camera -> ground point.
        valid: ``(N,)`` bool.
        reasons: length-N tuple; None where valid, else why there is no position.
        cov_ne_m2: ``(N, 2, 2)`` covariance of the (north, east) error; NaN when unknown, inf when unbounded.
        semi_major_m, semi_minor_m: ``(N,)`` 95 % ellipse semi-axes.
        orientation_deg: ``(N,)`` azimuth of the major axis, degrees clockwise from north in [0, 180).
    """

    lat_deg: np.ndarray
    lon_deg: np.ndarray
    alt_m: np.ndarray
    north_m: np.ndarray
    east_m: np.ndarray
    range_m: np.ndarray
    valid: np.ndarray
    reasons: tuple[str | None, ...]
    cov_ne_m2: np.ndarray
    semi_major_m: np.ndarray
    semi_minor_m: np.ndarray
    orientation_deg: np.ndarray

    def __len__(self) -> int:
        return int(self.valid.shape[0])


def ellipse_from_cov(cov: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Semi-major, semi-minor (m) and major-axis azimuth (deg from north, [0, 180)) of ``(N, 2, 2)`` (n, e) covs."""
    k = math.sqrt(-2.0 * math.log(1.0 - confidence))
    cov = np.asarray(cov, float)
    n = cov.shape[0]
    major = np.full(n, np.nan)
    minor = np.full(n, np.nan)
    orient = np.full(n, np.nan)
    finite = np.isfinite(cov).all(axis=(1, 2))
    if finite.any():
        w, v = np.linalg.eigh(cov[finite])  # ascending
        w = np.clip(w, 0.0, None)
        major[finite] = k * np.sqrt(w[:, 1])
        minor[finite] = k * np.sqrt(w[:, 0])
        vn, ve = v[:, 0, 1], v[:, 1, 1]
        orient[finite] = np.degrees(np.arctan2(ve, vn)) % 180.0
    inf = np.isinf(cov).any(axis=(1, 2))
    major[inf] = np.inf
    minor[inf] = np.inf
    return major, minor, orient


def inside_ellipse(d_north_m, d_east_m, cov: np.ndarray, confidence: float = 0.95) -> np.ndarray:
    """Whether error vectors ``(N,)`` lie inside the ``confidence`` ellipse of covariances ``(N, 2, 2)``."""
    d = np.stack([np.asarray(d_north_m, float), np.asarray(d_east_m, float)], axis=-1)
    out = np.zeros(d.shape[0], bool)
    ok = np.isfinite(cov).all(axis=(1, 2)) & np.isfinite(d).all(axis=1)
    if ok.any():
        c = cov[ok] + np.eye(2) * 1e-12
        m2 = np.einsum("ni,nij,nj->n", d[ok], np.linalg.inv(c), d[ok])
        out[ok] = m2 <= -2.0 * math.log(1.0 - confidence)
    out[np.isinf(cov).any(axis=(1, 2))] = True
    return out


# --------------------------------------------------------------------------------------------- locate

DemFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _as_pixels(pixels_px) -> np.ndarray:
    p = np.asarray(pixels_px, dtype=float)
    if p.ndim == 1 and p.shape[0] == 2:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] != 2:
        raise InputError(f"pixels must have shape (N, 2), got {p.shape}")
    return p


def _offsets_to_latlon(pose: CameraPose, north_m: np.ndarray, east_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = north_m.shape[0]
    lat = np.full(n, np.nan)
    lon = np.full(n, np.nan)
    ok = np.isfinite(north_m) & np.isfinite(east_m)
    if ok.any():
        az = np.degrees(np.arctan2(east_m[ok], north_m[ok]))
        dist = np.hypot(north_m[ok], east_m[ok])
        lo, la, _ = geod().fwd(np.full(az.shape, pose.lon_deg), np.full(az.shape, pose.lat_deg), az, dist)
        lat[ok], lon[ok] = la, ((np.asarray(lo) + 180.0) % 360.0) - 180.0
    return lat, lon


def latlon_to_offsets(lat0_deg: float, lon0_deg: float, lat_deg, lon_deg) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic (north, east) offsets in metres of points from an origin (azimuthal equidistant)."""
    lat = np.atleast_1d(np.asarray(lat_deg, float))
    lon = np.atleast_1d(np.asarray(lon_deg, float))
    az, _, dist = geod().inv(np.full(lat.shape, lon0_deg), np.full(lat.shape, lat0_deg), lon, lat)
    az = np.radians(np.asarray(az))
    dist = np.asarray(dist)
    return dist * np.cos(az), dist * np.sin(az)


def offsets_to_latlon(lat0_deg: float, lon0_deg: float, north_m, east_m) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`latlon_to_offsets`."""
    p = CameraPose(lat0_deg, lon0_deg, 0.0)
    return _offsets_to_latlon(p, np.atleast_1d(np.asarray(north_m, float)), np.atleast_1d(np.asarray(east_m, float)))


class GeoLocator:
    """Pixel -> WGS84 for one camera (drone or fixed), against a surface at a height or a DEM.

    ``locate(pixels_px, pose)`` is the one verb; ``project(lat, lon, alt, pose)`` is its inverse.
    """

    def __init__(
        self,
        intrinsics: CameraIntrinsics,
        surface_alt_m: float = 0.0,
        dem: DemFn | None = None,
        sigmas: PoseSigmas | None = None,
        max_range_m: float = 20_000.0,
    ) -> None:
        if not math.isfinite(surface_alt_m):
            raise ConfigError(f"geolocator: surface_alt_m {surface_alt_m} is not finite")
        self.intrinsics = intrinsics
        self.surface_alt_m = float(surface_alt_m)
        self.dem = dem
        self.sigmas = sigmas if sigmas is not None else PoseSigmas()
        self.max_range_m = float(max_range_m)

    # -- core: ground offsets for a batch of perturbed parameter sets ----------------------------------------

    def _intersect(
        self, pose: CameraPose, xy_norm: np.ndarray, dangles_deg: np.ndarray, dpos: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ground (north, east, alt, range) for K perturbations x N rays: each ``(K, N)``.

        ``dpos`` is ``(K, 4)``: camera north, east, up offsets and surface height offset (m).
        """
        rays_cam = np.concatenate([xy_norm, np.ones((xy_norm.shape[0], 1))], axis=1)  # (N, 3)
        rays_cam /= np.linalg.norm(rays_cam, axis=1, keepdims=True)
        rot = _rotations(pose, dangles_deg)  # (K, 3, 3)
        rays = np.einsum("kij,nj->kni", rot, rays_cam)  # (K, N, 3) NED, unit
        cam_alt = pose.alt_m + dpos[:, 2:3]  # (K, 1)
        radius = earth_radius_m(pose.lat_deg)
        surf = np.broadcast_to(self.surface_alt_m + dpos[:, 3:4], rays.shape[:2]).copy()
        if self.dem is not None:
            surf = self._dem_heights(pose, np.zeros(rays.shape[:2]), np.zeros(rays.shape[:2])) + dpos[:, 3:4]
            for _ in range(50):
                n, e, _t = ray_sphere_hit(rays, cam_alt, surf, radius)
                new = self._dem_heights(pose, n + dpos[:, 0:1], e + dpos[:, 1:2]) + dpos[:, 3:4]
                diff = np.abs(new - surf)
                change = float(np.max(np.where(np.isfinite(diff), diff, 0.0), initial=0.0))
                surf = np.where(np.isfinite(new), new, surf)
                if change < 1e-3:
                    break
        n, e, rng = ray_sphere_hit(rays, cam_alt, surf, radius)
        north = n + dpos[:, 0:1]
        east = e + dpos[:, 1:2]
        return north, east, surf, rng

    def _dem_heights(self, pose: CameraPose, north: np.ndarray, east: np.ndarray) -> np.ndarray:
        flat_n, flat_e = north.ravel(), east.ravel()
        lat, lon = _offsets_to_latlon(pose, flat_n, flat_e)
        h = np.asarray(self.dem(lat, lon), float).reshape(north.shape)  # type: ignore[misc]
        return h

    def locate(self, pixels_px, pose: CameraPose, sigmas: PoseSigmas | None = None) -> GroundPoints:
        """Geolocate pixels ``(N, 2)`` (x, y in the distorted image) seen from ``pose``."""
        px = _as_pixels(pixels_px)
        n = px.shape[0]
        sig = sigmas if sigmas is not None else self.sigmas
        reasons: list[str | None] = [None] * n
        if pose.alt_m - self.surface_alt_m <= 0 and self.dem is None:
            reason = f"camera height {pose.alt_m:.2f} m is not above the surface at {self.surface_alt_m:.2f} m"
            return _empty(n, reason)
        bad_px = ~np.isfinite(px).all(axis=1)
        xy = self.intrinsics.undistort(np.where(bad_px[:, None], 0.0, px))
        bad_undist = ~np.isfinite(xy).all(axis=1)
        xy = np.where(np.isfinite(xy), xy, 0.0)

        # nominal + 2 perturbations per error source (central differences, step = 1 sigma)
        va, ga = sig.attitude_deg, sig.gimbal_deg
        vel = np.asarray(pose.velocity_ned_m_s, float)
        rates = np.asarray(pose.rates_deg_s, float)
        att = [math.hypot(va, rates[i] * sig.timing_s) for i in range(3)]
        hor_m = sig.horizontal_m
        if pose.horizontal_sigma_m is not None and math.isfinite(pose.horizontal_sigma_m):
            hor_m = max(hor_m, pose.horizontal_sigma_m)  # a degraded GPS widens the ellipse
        hor_n = math.hypot(hor_m, vel[0] * sig.timing_s)
        hor_e = math.hypot(hor_m, vel[1] * sig.timing_s)
        ver = math.hypot(sig.vertical_m, vel[2] * sig.timing_s)
        steps: list[tuple[int, float]] = []  # (parameter index, sigma) for 0..5 angles, 6..9 positions, 10..11 px
        for i, s in enumerate(att + [ga, ga, ga] + [hor_n, hor_e, ver, sig.surface_m] + [sig.pixel_px] * 2):
            if s > 0:
                steps.append((i, s))
        k = 1 + 2 * len(steps)
        dang = np.zeros((k, 6))
        dpos = np.zeros((k, 4))
        dpx = np.zeros((k, 2))
        for j, (i, s) in enumerate(steps):
            for sign, row in ((1.0, 1 + 2 * j), (-1.0, 2 + 2 * j)):
                if i < 6:
                    dang[row, i] = sign * s
                elif i < 10:
                    dpos[row, i - 6] = sign * s
                else:
                    dpx[row, i - 10] = sign * s
        if np.any(dpx != 0):
            # pixel perturbations need their own undistortion; do them as separate ray sets
            norths, easts, alts, rngs = [], [], [], []
            for row in range(k):
                xy_r = xy if not np.any(dpx[row]) else self.intrinsics.undistort(px + dpx[row])
                xy_r = np.where(np.isfinite(xy_r), xy_r, 0.0)
                nn, ee, aa, rr = self._intersect(pose, xy_r, dang[row : row + 1], dpos[row : row + 1])
                norths.append(nn[0]), easts.append(ee[0]), alts.append(aa[0]), rngs.append(rr[0])
            north, east, alt, rng = (np.stack(a) for a in (norths, easts, alts, rngs))
        else:
            north, east, alt, rng = self._intersect(pose, xy, dang, dpos)

        n0, e0, a0, r0 = north[0], east[0], alt[0], rng[0]
        valid = np.isfinite(n0) & np.isfinite(e0) & ~bad_px & ~bad_undist & (r0 <= self.max_range_m)
        for i in range(n):
            if bad_px[i]:
                reasons[i] = "pixel coordinates are not finite"
            elif bad_undist[i]:
                reasons[i] = "pixel is outside the valid region of the lens distortion model"
            elif not (np.isfinite(n0[i]) and np.isfinite(e0[i])):
                reasons[i] = "ray does not reach the surface (at or above the horizon)"
            elif not r0[i] <= self.max_range_m:
                reasons[i] = f"ground point is {r0[i]:.0f} m away, beyond max_range_m {self.max_range_m:.0f} m"

        cov = np.zeros((n, 2, 2))
        for j in range(len(steps)):
            dn = (north[1 + 2 * j] - north[2 + 2 * j]) / 2.0
            de = (east[1 + 2 * j] - east[2 + 2 * j]) / 2.0
            g = np.stack([dn, de], axis=-1)  # (N, 2), already scaled by sigma
            cov += np.einsum("ni,nj->nij", g, g)
        # a perturbation that loses the ground (ray over the horizon) makes the error unbounded
        cov[~np.isfinite(cov).all(axis=(1, 2))] = np.inf
        cov[~valid] = np.nan
        major, minor, orient = ellipse_from_cov(cov)
        lat, lon = _offsets_to_latlon(pose, np.where(valid, n0, np.nan), np.where(valid, e0, np.nan))
        nanv = lambda a: np.where(valid, a, np.nan)  # noqa: E731
        return GroundPoints(
            lat_deg=lat,
            lon_deg=lon,
            alt_m=nanv(a0),
            north_m=nanv(n0),
            east_m=nanv(e0),
            range_m=nanv(r0),
            valid=valid,
            reasons=tuple(reasons),
            cov_ne_m2=cov,
            semi_major_m=major,
            semi_minor_m=minor,
            orientation_deg=orient,
        )

    def project(self, lat_deg, lon_deg, alt_m, pose: CameraPose) -> tuple[np.ndarray, np.ndarray]:
        """Ground points -> pixels ``(N, 2)`` and ``(N,)`` bool: in front of the camera and inside the image."""
        lat = np.atleast_1d(np.asarray(lat_deg, float))
        lon = np.atleast_1d(np.asarray(lon_deg, float))
        alt = np.broadcast_to(np.asarray(alt_m, float), lat.shape)
        north, east = latlon_to_offsets(pose.lat_deg, pose.lon_deg, lat, lon)
        return self.project_ned(ned_vectors_to(north, east, alt, pose.alt_m, earth_radius_m(pose.lat_deg)), pose)

    def project_ned(self, v_ned: np.ndarray, pose: CameraPose) -> tuple[np.ndarray, np.ndarray]:
        """Vectors camera -> point in NED ``(N, 3)`` -> pixels ``(N, 2)`` and visibility ``(N,)``."""
        rot = pose.rotation_ned_from_camera()
        v_cam = v_ned @ rot  # row-vector form of rot.T @ v
        z = v_cam[:, 2]
        front = z > 1e-9
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = v_cam[:, :2] / np.where(front, z, np.nan)[:, None]
        px = self.intrinsics.distort(xy)
        w, h = self.intrinsics.width_px, self.intrinsics.height_px
        inside = front & (px[:, 0] >= 0) & (px[:, 0] <= w) & (px[:, 1] >= 0) & (px[:, 1] <= h)
        return px, inside


def ned_vectors_to(north_arc_m, east_arc_m, alt_m, cam_alt_m: float, radius_m: float) -> np.ndarray:
    """Camera -> point vectors ``(N, 3)`` in the camera's tangent NED frame, on the local sphere.

    The point is ``alt_m`` above the datum at arc distances north/east of the camera nadir (inverse of
    :func:`ray_sphere_hit`).
    """
    n = np.asarray(north_arc_m, float)
    e = np.asarray(east_arc_m, float)
    h = np.asarray(alt_m, float)
    s = np.hypot(n, e)
    theta = s / radius_m
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(s > 0, np.sin(theta) / np.where(s > 0, s, 1.0) * radius_m, 1.0)
    rh = radius_m + h
    horiz = rh * scale / radius_m  # (R + h) sin(theta) / s
    down = cam_alt_m + radius_m - rh * np.cos(theta)
    return np.stack([n * horiz, e * horiz, np.broadcast_to(down, n.shape)], axis=-1)


def _empty(n: int, reason: str) -> GroundPoints:
    nan = np.full(n, np.nan)
    return GroundPoints(
        lat_deg=nan.copy(),
        lon_deg=nan.copy(),
        alt_m=nan.copy(),
        north_m=nan.copy(),
        east_m=nan.copy(),
        range_m=nan.copy(),
        valid=np.zeros(n, bool),
        reasons=(reason,) * n,
        cov_ne_m2=np.full((n, 2, 2), np.nan),
        semi_major_m=nan.copy(),
        semi_minor_m=nan.copy(),
        orientation_deg=nan.copy(),
    )


# --------------------------------------------------------------------------------------------- homography


@dataclass(frozen=True, slots=True)
class GroundControlPoint:
    """A pixel in a fixed camera's image and the surveyed WGS84 position it shows."""

    x_px: float
    y_px: float
    lat_deg: float
    lon_deg: float


@dataclass(frozen=True)
class GcpHomography:
    """Pixel <-> ground-plane mapping of a fixed camera fitted from >= 4 ground control points.

    Attributes:
        matrix: ``(3, 3)`` homography from undistorted pixels to (east, north) metres around the origin.
        origin_lat_deg, origin_lon_deg: tangent-plane origin (the GCP centroid).
        rms_m: root-mean-square residual of the fit on the GCPs, metres (0 when exactly 4 points).
        sigma_m: one-sigma position error used for the ellipse (``rms_m`` corrected for degrees of freedom,
            never below ``min_sigma_m``).
    """

    matrix: np.ndarray
    origin_lat_deg: float
    origin_lon_deg: float
    rms_m: float
    sigma_m: float
    intrinsics: CameraIntrinsics | None = None
    _sign: float = field(default=1.0, repr=False)

    @classmethod
    def fit(
        cls,
        gcps: Sequence[GroundControlPoint],
        intrinsics: CameraIntrinsics | None = None,
        min_sigma_m: float = 0.5,
    ) -> "GcpHomography":
        """Direct linear transform with Hartley normalisation over all GCPs (least squares when > 4)."""
        if len(gcps) < 4:
            raise ConfigError(f"homography calibration needs at least 4 ground control points, got {len(gcps)}")
        px = np.array([[g.x_px, g.y_px] for g in gcps], float)
        lat = np.array([g.lat_deg for g in gcps], float)
        lon = np.array([g.lon_deg for g in gcps], float)
        if not (np.isfinite(px).all() and np.isfinite(lat).all() and np.isfinite(lon).all()):
            raise ConfigError("homography calibration: a ground control point has a non-finite coordinate")
        if intrinsics is not None:
            px = _undistorted_px(intrinsics, px)
        lat0, lon0 = float(np.mean(lat)), float(np.mean(lon))
        north, east = latlon_to_offsets(lat0, lon0, lat, lon)
        dst = np.stack([east, north], axis=1)
        h = _dlt(px, dst)
        mapped, w = _apply_h(h, px)
        sign = float(np.sign(np.median(w))) or 1.0
        res = np.hypot(*(mapped - dst).T)
        rms = float(np.sqrt(np.mean(res**2)))
        dof = 2 * len(gcps) - 8
        sigma = max(min_sigma_m, rms * math.sqrt(2 * len(gcps) / dof) / math.sqrt(2) if dof > 0 else min_sigma_m)
        return cls(h, lat0, lon0, rms, sigma, intrinsics, sign)

    def locate(self, pixels_px) -> GroundPoints:
        """Pixels ``(N, 2)`` -> ground points on the calibrated plane (circular ellipse of ``sigma_m``)."""
        px = _as_pixels(pixels_px)
        if self.intrinsics is not None:
            px = _undistorted_px(self.intrinsics, px)
        en, w = _apply_h(self.matrix, px)
        valid = np.isfinite(en).all(axis=1) & (w * self._sign > 1e-12)
        reasons = tuple(None if v else "pixel is above the horizon of the calibrated ground plane" for v in valid)
        east = np.where(valid, en[:, 0], np.nan)
        north = np.where(valid, en[:, 1], np.nan)
        lat, lon = offsets_to_latlon(self.origin_lat_deg, self.origin_lon_deg, north, east)
        n = px.shape[0]
        cov = np.where(valid[:, None, None], np.eye(2)[None] * self.sigma_m**2, np.nan)
        major, minor, orient = ellipse_from_cov(cov)
        return GroundPoints(
            lat_deg=lat,
            lon_deg=lon,
            alt_m=np.full(n, np.nan),
            north_m=north,
            east_m=east,
            range_m=np.full(n, np.nan),
            valid=valid,
            reasons=reasons,
            cov_ne_m2=cov,
            semi_major_m=major,
            semi_minor_m=minor,
            orientation_deg=orient,
        )

    def project(self, lat_deg, lon_deg) -> np.ndarray:
        """Ground points -> pixels ``(N, 2)`` (distorted when intrinsics were given)."""
        north, east = latlon_to_offsets(self.origin_lat_deg, self.origin_lon_deg, lat_deg, lon_deg)
        px, _ = _apply_h(np.linalg.inv(self.matrix), np.stack([east, north], axis=1))
        if self.intrinsics is not None:
            k = self.intrinsics
            xy = np.stack([(px[:, 0] - k.cx_px) / k.fx_px, (px[:, 1] - k.cy_px) / k.fy_px], axis=1)
            px = k.distort(xy)
        return px


def _undistorted_px(k: CameraIntrinsics, px: np.ndarray) -> np.ndarray:
    xy = k.undistort(px)
    return np.stack([xy[:, 0] * k.fx_px + k.cx_px, xy[:, 1] * k.fy_px + k.cy_px], axis=1)


def _normalising_transform(p: np.ndarray) -> np.ndarray:
    c = p.mean(axis=0)
    d = np.sqrt(((p - c) ** 2).sum(axis=1)).mean()
    if not d > 0:
        raise ConfigError("homography calibration: ground control points coincide")
    s = math.sqrt(2) / d
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])


def _dlt(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    ts, td = _normalising_transform(src), _normalising_transform(dst)
    s = (np.c_[src, np.ones(len(src))] @ ts.T)[:, :2]
    d = (np.c_[dst, np.ones(len(dst))] @ td.T)[:, :2]
    rows = []
    for (x, y), (u, v) in zip(s, d):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    a = np.asarray(rows)
    _, sv, vt = np.linalg.svd(a)
    if sv.shape[0] >= 8 and sv[7] < 1e-9 * sv[0]:
        raise ConfigError("homography calibration: ground control points are degenerate (three or more collinear)")
    hn = vt[-1].reshape(3, 3)
    h = np.linalg.inv(td) @ hn @ ts
    if abs(h[2, 2]) > 1e-12:
        h = h / h[2, 2]
    return h


def _apply_h(h: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.c_[p, np.ones(len(p))] @ h.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return q[:, :2] / q[:, 2:3], q[:, 2]


def pose_with(pose: CameraPose, **changes) -> CameraPose:
    """A copy of ``pose`` with fields changed (``dataclasses.replace`` re-validates)."""
    return replace(pose, **changes)
