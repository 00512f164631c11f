"""Configuration of drones and of fixed-camera calibration (the ``drones`` part of the Seawatch YAML, and the
``calibration`` of a fixed source). Pydantic only here, at the edge; ``build_*`` methods return the frozen
runtime objects (CameraIntrinsics, PoseTimeline, GeoLocator, MavlinkLink, waypoints).

Example (YAML)::

    drones:
      - id: drone-1
        connection: udp:0.0.0.0:14550
        video_source: drone-1-cam
        camera: {width_px: 1920, height_px: 1080, hfov_deg: 82.0, k1: -0.11, k2: 0.04}
        latency_s: 0.18
        altitude: relative          # pose altitude above home; surface_alt_m in the same datum
        surface_alt_m: -2.5         # sea level relative to the home pad
        routes:
          farm-perimeter: {type: perimeter, polygon_lonlat: [[6.51, 53.99], [6.60, 53.99], [6.60, 54.05]], alt_m: 60}
          turbines: {type: points, points_lonlat: [[6.52, 54.0], [6.53, 54.0]], alt_m: 40, hold_s: 10}
        max_task_range_m: 3000      # "send a drone to look": targets at most this far from home
        operating_area_lonlat: [[6.50, 53.98], [6.62, 53.98], [6.62, 54.06], [6.50, 54.06]]
        task_alt_m: 40              # height and hold of a task when the request names none
        task_hold_s: 60

    # a fixed camera's calibration (inside its source):
    calibration:
      camera: {width_px: 1920, height_px: 1080, hfov_deg: 60}
      surveyed: {lat_deg: 53.55, lon_deg: 8.58, alt_m: 25.0, pan_deg: 210, tilt_deg: -8}
      # or: gcps: [{x_px: 100, y_px: 900, lat_deg: ..., lon_deg: ...}, ... at least 4]
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seawatch.drone import mission as M
from seawatch.drone.geometry import (
    CameraIntrinsics,
    CameraPose,
    GcpHomography,
    GeoLocator,
    GroundControlPoint,
    GroundPoints,
    PoseSigmas,
)
from seawatch.drone.pose import PoseTimeline
from seawatch.errors import ConfigError

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntrinsicsConfig(_Strict):
    """Camera intrinsics: either fx/fy (+ cx/cy) from a calibration, or a horizontal field of view."""

    width_px: int = Field(gt=0, le=16384, description="image width in pixels")
    height_px: int = Field(gt=0, le=16384, description="image height in pixels")
    fx_px: float | None = Field(None, gt=0, description="focal length x in pixels (from calibration)")
    fy_px: float | None = Field(None, gt=0, description="focal length y in pixels (default fx)")
    cx_px: float | None = Field(None, description="principal point x (default image centre)")
    cy_px: float | None = Field(None, description="principal point y (default image centre)")
    hfov_deg: float | None = Field(None, gt=0, lt=180, description="horizontal field of view, when fx is unknown")
    k1: float = Field(0.0, ge=-5, le=5, description="radial distortion (OpenCV)")
    k2: float = Field(0.0, ge=-5, le=5, description="radial distortion (OpenCV)")
    p1: float = Field(0.0, ge=-1, le=1, description="tangential distortion (OpenCV)")
    p2: float = Field(0.0, ge=-1, le=1, description="tangential distortion (OpenCV)")
    k3: float = Field(0.0, ge=-5, le=5, description="radial distortion (OpenCV)")

    @model_validator(mode="after")
    def _focal(self) -> "IntrinsicsConfig":
        if (self.fx_px is None) == (self.hfov_deg is None):
            raise ValueError("give exactly one of fx_px (calibrated) or hfov_deg")
        return self

    def build(self) -> CameraIntrinsics:
        dist = dict(k1=self.k1, k2=self.k2, p1=self.p1, p2=self.p2, k3=self.k3)
        if self.fx_px is None:
            base = CameraIntrinsics.from_fov(self.width_px, self.height_px, float(self.hfov_deg))  # type: ignore[arg-type]
            fx = fy = base.fx_px
        else:
            fx, fy = self.fx_px, self.fy_px or self.fx_px
        cx = self.cx_px if self.cx_px is not None else self.width_px / 2
        cy = self.cy_px if self.cy_px is not None else self.height_px / 2
        return CameraIntrinsics(self.width_px, self.height_px, fx, fy, cx, cy, **dist)


class SigmasConfig(_Strict):
    """One-sigma input errors for the uncertainty ellipse (see ``PoseSigmas``)."""

    attitude_deg: float = Field(0.5, ge=0, le=30, description="vehicle attitude error per axis")
    gimbal_deg: float = Field(0.0, ge=0, le=30, description="gimbal angle error per axis")
    horizontal_m: float = Field(1.5, ge=0, le=1000, description="camera position error, north and east each")
    vertical_m: float = Field(1.0, ge=0, le=1000, description="camera height error")
    surface_m: float = Field(0.0, ge=0, le=1000, description="surface height error (waves, tide, DEM)")
    timing_s: float = Field(0.05, ge=0, le=10, description="frame-to-telemetry timing error")
    pixel_px: float = Field(1.0, ge=0, le=1000, description="detection position error per axis")

    def build(self) -> PoseSigmas:
        return PoseSigmas(**self.model_dump())


class SurveyedPoseConfig(_Strict):
    """A fixed camera's surveyed position and pointing (pan = azimuth from north, tilt < 0 looks down)."""

    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)
    alt_m: float = Field(description="camera height in the surface's datum")
    pan_deg: float = Field(ge=-360, le=360, description="optical axis azimuth, degrees clockwise from north")
    tilt_deg: float = Field(ge=-90, le=90, description="optical axis elevation; negative looks down")
    roll_deg: float = Field(0.0, ge=-45, le=45, description="image roll")

    def build(self) -> CameraPose:
        return CameraPose(self.lat_deg, self.lon_deg, self.alt_m, gimbal_roll_deg=self.roll_deg,
                          gimbal_pitch_deg=self.tilt_deg, gimbal_yaw_deg=self.pan_deg, gimbal_frame="earth")


class GcpConfig(_Strict):
    x_px: float
    y_px: float
    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)


class FixedCameraLocator:
    """Pixels -> WGS84 for a fixed camera: a surveyed pose through ``GeoLocator``, or a GCP homography."""

    def __init__(self, locator: GeoLocator | None, pose: CameraPose | None, homography: GcpHomography | None):
        self.locator, self.pose, self.homography = locator, pose, homography

    def locate(self, pixels_px) -> GroundPoints:
        if self.homography is not None:
            return self.homography.locate(pixels_px)
        assert self.locator is not None and self.pose is not None
        return self.locator.locate(pixels_px, self.pose)


class CalibrationConfig(_Strict):
    """A fixed camera's geo-reference: a surveyed pose (needs intrinsics) or >= 4 ground control points."""

    camera: IntrinsicsConfig | None = Field(None, description="intrinsics; needed with a surveyed pose")
    surveyed: SurveyedPoseConfig | None = None
    gcps: list[GcpConfig] | None = Field(None, description="at least 4 pixel <-> lat/lon pairs on the surface")
    surface_alt_m: float = Field(0.0, description="height of the water / ground plane in the camera's datum")
    sigmas: SigmasConfig = SigmasConfig(attitude_deg=0.2, horizontal_m=0.5, vertical_m=0.3, timing_s=0.0)

    @model_validator(mode="after")
    def _one_method(self) -> "CalibrationConfig":
        if (self.surveyed is None) == (self.gcps is None):
            raise ValueError("give exactly one of surveyed or gcps")
        if self.surveyed is not None and self.camera is None:
            raise ValueError("a surveyed pose needs camera intrinsics")
        if self.gcps is not None and len(self.gcps) < 4:
            raise ValueError(f"gcps needs at least 4 points, got {len(self.gcps)}")
        return self

    def build(self) -> FixedCameraLocator:
        k = self.camera.build() if self.camera is not None else None
        if self.gcps is not None:
            h = GcpHomography.fit([GroundControlPoint(g.x_px, g.y_px, g.lat_deg, g.lon_deg) for g in self.gcps], k)
            return FixedCameraLocator(None, None, h)
        assert k is not None and self.surveyed is not None
        loc = GeoLocator(k, surface_alt_m=self.surface_alt_m, sigmas=self.sigmas.build())
        return FixedCameraLocator(loc, self.surveyed.build(), None)


class RouteConfig(_Strict):
    """A patrol route. Coordinates are [lon, lat] (GeoJSON order, as zones' polygon_lonlat)."""

    type: Literal["lawnmower", "perimeter", "points"]
    polygon_lonlat: list[tuple[float, float]] | None = Field(None, description="area for lawnmower / perimeter")
    points_lonlat: list[tuple[float, float]] | None = Field(None, description="points to visit, in order")
    alt_m: float = Field(ge=2, le=500, description="height above home")
    spacing_m: float = Field(30.0, gt=0, le=5000, description="lawnmower line spacing")
    heading_deg: float | None = Field(None, ge=-360, le=360, description="lawnmower line direction")
    hold_s: float = Field(0.0, ge=0, le=3600, description="hold time at each point")
    speed_m_s: float | None = Field(None, gt=0, le=30, description="cruise speed")
    gimbal_pitch_deg: float | None = Field(None, ge=-90, le=30, description="gimbal pitch during the patrol")
    return_to_launch: bool = True

    @model_validator(mode="after")
    def _geometry(self) -> "RouteConfig":
        if self.type == "points" and not self.points_lonlat:
            raise ValueError("a points route needs points_lonlat")
        if self.type != "points" and not self.polygon_lonlat:
            raise ValueError(f"a {self.type} route needs polygon_lonlat")
        return self

    def build(self) -> list[M.Waypoint]:
        if self.type == "points":
            return M.points([(la, lo) for lo, la in self.points_lonlat or []], self.alt_m, self.hold_s)
        poly = [(la, lo) for lo, la in self.polygon_lonlat or []]
        if self.type == "perimeter":
            return M.perimeter(poly, self.alt_m, self.hold_s)
        return M.lawnmower(poly, self.spacing_m, self.alt_m, self.heading_deg)

    def build_items(self, home: tuple[float, float, float]) -> list[M.MissionItem]:
        return M.to_mission_items(self.build(), home=home, speed_m_s=self.speed_m_s,
                                  gimbal_pitch_deg=self.gimbal_pitch_deg, return_to_launch=self.return_to_launch)


class DroneConfig(_Strict):
    """One drone: its MAVLink connection, camera, timing and patrol routes."""

    id: str = Field(pattern=_ID, description="drone id, used in events and logs")
    connection: str = Field(min_length=1, description="MAVLink connection (dronekit): udp:H:P, udpin:H:P, tcp:H:P, /dev/ttyX")
    baud: int = Field(57600, gt=0, description="serial baud rate")
    target_system: int | None = Field(None, ge=1, le=255, description="the vehicle's MAVLink system id (SYSID_THISMAV); "
                                      "unset = the first autopilot heard (set it on a link shared by several vehicles)")
    patrol_min_battery_pct: float = Field(50.0, ge=0, le=100, description="a patrol is started (or repeated) only "
                                          "with at least this battery charge reported (SYS_STATUS); 0 = no check")
    video_source: str | None = Field(None, pattern=_ID, description="the source id of this drone's video")
    camera: IntrinsicsConfig
    gimbal_default: tuple[float, float, float] = Field((0.0, -90.0, 0.0), description="roll, pitch, yaw (deg) "
                                                       "used until gimbal telemetry arrives")
    gimbal_frame: Literal["body", "horizon", "earth"] = "horizon"
    latency_s: float = Field(0.0, ge=-2.0, le=10.0, description="video stamped this much after exposure")
    max_pose_age_s: float = Field(0.5, gt=0, le=10, description="older telemetry makes the pose stale")
    max_gap_s: float = Field(1.0, gt=0, le=30, description="widest telemetry gap interpolated across")
    altitude: Literal["relative", "amsl"] = "relative"
    surface_alt_m: float = Field(0.0, ge=-1000, le=9000, description="sea / ground height in the altitude datum")
    max_range_m: float = Field(5000.0, gt=0, le=100_000, description="farthest ground point reported")
    heartbeat_timeout_s: float = Field(3.0, gt=0, le=60)
    require_params: bool = Field(True, description="the link is ready only once the vehicle sent a PARAM_VALUE")
    stream_rate_hz: float | None = Field(None, gt=0, le=50, description="ask the vehicle for all data streams at this "
                                         "rate (direct SITL/serial links without MAVProxy); unset = leave its rates")
    tlog: str | None = Field(None, description="append telemetry to this .tlog file")
    sigmas: SigmasConfig = SigmasConfig()
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    # "send a drone to look" (POST /api/drones/{id}/investigate): the task's defaults and limits
    max_task_range_m: float = Field(3000.0, gt=0, le=100_000, description="a task's target may be at most this far "
                                    "(geodesic) from the drone's home / launch point; a farther one is refused")
    operating_area_lonlat: list[tuple[float, float]] | None = Field(
        None, description="[lon, lat] polygon the drone may fly in: a task whose target, or whose straight legs (drone "
                          "to target, target to home), leave it is refused; unset = no area check")
    task_alt_m: float = Field(40.0, ge=2, le=500, description="height above home a task flies and holds at, when "
                              "the request names none")
    task_min_alt_m: float = Field(10.0, ge=2, le=500, description="lowest height above home a task may ask for")
    task_max_alt_m: float = Field(120.0, ge=2, le=500, description="highest height above home a task may ask for")
    task_hold_s: float = Field(60.0, ge=0, le=3600, description="how long a task holds over its target, when the "
                               "request names no hold_s")
    task_gimbal_pitch_deg: float | None = Field(-90.0, ge=-90, le=30, description="gimbal pitch a task sets before "
                                                "its hold (-90 = straight down), when the vehicle reports a gimbal; "
                                                "null = leave the gimbal alone")
    task_speed_m_s: float | None = Field(None, gt=0, le=30, description="cruise speed of a task; unset = the "
                                         "vehicle's own (WPNAV_SPEED)")

    @model_validator(mode="after")
    def _task_limits(self) -> "DroneConfig":
        if not self.task_min_alt_m <= self.task_alt_m <= self.task_max_alt_m:
            raise ValueError(f"task_alt_m {self.task_alt_m} must lie within task_min_alt_m {self.task_min_alt_m} "
                             f"and task_max_alt_m {self.task_max_alt_m}")
        if self.operating_area_lonlat is not None:
            self.operating_area()  # raises on a bad polygon
        return self

    def operating_area(self):
        """The ``operating_area_lonlat`` as a prepared shapely polygon in (lon, lat), or None when unset."""
        if self.operating_area_lonlat is None:
            return None
        import shapely
        from shapely.geometry import Polygon

        pts = self.operating_area_lonlat
        if len(pts) < 3 or any(not (-180 <= lo <= 180 and -90 <= la <= 90) for lo, la in pts):
            raise ValueError("operating_area_lonlat needs at least 3 [lon, lat] corners within +-180 / +-90")
        poly = Polygon(pts)
        if not poly.is_valid or poly.area <= 0:
            raise ValueError(f"operating_area_lonlat is not a valid polygon ({shapely.is_valid_reason(poly)})")
        shapely.prepare(poly)
        return poly

    def build_timeline(self) -> PoseTimeline:
        r, p, y = self.gimbal_default
        return PoseTimeline(self.id, latency_s=self.latency_s, max_age_s=self.max_pose_age_s,
                            max_gap_s=self.max_gap_s, default_gimbal=(r, p, y, self.gimbal_frame))

    def build_locator(self) -> GeoLocator:
        return GeoLocator(self.camera.build(), surface_alt_m=self.surface_alt_m, sigmas=self.sigmas.build(),
                          max_range_m=self.max_range_m)

    def build_link(self, timeline: PoseTimeline | None = None):
        from seawatch.drone.link import MavlinkLink

        return MavlinkLink(self.connection, vehicle_id=self.id, timeline=timeline or self.build_timeline(),
                           tlog_path=self.tlog, altitude=self.altitude, baud=self.baud,
                           heartbeat_timeout_s=self.heartbeat_timeout_s, require_params=self.require_params,
                           stream_rate_hz=self.stream_rate_hz, target_system=self.target_system)


class DronesConfig(_Strict):
    drones: list[DroneConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> "DronesConfig":
        ids = [d.id for d in self.drones]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate drone ids: {sorted(dup)}")
        return self


def load_drones(data: Mapping[str, Any], where: str = "config") -> DronesConfig:
    """Validate the ``drones`` section; every error names its field path."""
    try:
        cfg = DronesConfig.model_validate({"drones": list(data.get("drones", []) or [])})
    except ValidationError as exc:
        lines = [f"  {where}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid drones configuration:\n" + "\n".join(lines)) from None
    for d in cfg.drones:  # routes are planned now so a bad polygon is reported at load time
        for name, r in d.routes.items():
            try:
                r.build()
            except ConfigError as exc:
                raise ConfigError(f"{where}: drones.{d.id}.routes.{name}: {exc}") from None
    return cfg


def load_calibration(data: Mapping[str, Any], where: str = "calibration") -> FixedCameraLocator:
    try:
        cfg = CalibrationConfig.model_validate(dict(data))
    except ValidationError as exc:
        lines = [f"  {where}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid calibration:\n" + "\n".join(lines)) from None
    return cfg.build()


__all__ = [
    "CalibrationConfig", "DroneConfig", "DronesConfig", "FixedCameraLocator", "IntrinsicsConfig", "RouteConfig",
    "SigmasConfig", "SurveyedPoseConfig", "load_calibration", "load_drones",
]
