"""The analysis pipeline without the service: frames -> detection -> tracking -> zones/rules -> events.

``Pipeline.process(source_id, capture_time_ns, image)`` is the one per-frame entry point. Frames always come from
``seawatch.streams`` readers and are sampled by one :class:`AnalysisRate`: ``run_file`` (evaluation replays),
``seawatch run`` and ``seawatch serve`` differ only in how many sources they read and where events go.

Geo-reference (``seawatch.vision.geo``): a source with a ``calibration`` (surveyed pose or >= 4 ground control
points) or a ``drone`` (a ``drones`` entry, inline or by id; or a ``PoseTimeline`` given to ``Pipeline`` as
``pose_timelines``) gets a locator per frame, so its events carry a WGS84 position with a 1-sigma ellipse and its
``polygon_lonlat`` zones work. A drone frame whose pose is stale gives events without a position, with the reason.

Vessel identity (``seawatch.vision.vessel_identity``): with ``ais`` feeds and/or a ``registry`` (or an
``identity`` section), ``vessel_in_zone`` events carry MMSI / name / identity kind and confidence, and the
identity rules' decisions (unidentified_vessel, identity_mismatch, registry_alert, ais_dark) are emitted as
events through the same sinks.

Example (YAML)::

    sources:
      - id: quay-cam
        url: rtsp://cam/quay
        models: [vessel]
        calibration:
          camera: {width_px: 1920, height_px: 1080, hfov_deg: 60}
          surveyed: {lat_deg: 53.55, lon_deg: 8.58, alt_m: 25.0, pan_deg: 210, tilt_deg: -8}
      - {id: drone-1-cam, url: udp://0.0.0.0:5600, drone: drone-1}
    drones:
      - {id: drone-1, connection: "udp:0.0.0.0:14550", camera: {width_px: 1920, height_px: 1080, hfov_deg: 82}}
    ais: [tcp://ais-dispatcher:5631, recordings/ais.nmea]
    registry: registry.csv
    identity: {unidentified_after_s: 60}
    water_areas: {geojson: harbour-water.geojson}   # vessels of geo-referenced sources on land or in the sky: dropped
    zones:
      - {id: fairway, source: quay-cam, polygon_lonlat: [[8.57, 53.54], [8.59, 53.54], [8.59, 53.55]],
         rules: [{type: vessel_in_zone, min_duration_s: 30}]}
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seawatch.drone.config import CalibrationConfig, DroneConfig
from seawatch.errors import ConfigError, InputError, ModelError
from seawatch.vision.config import (EventPolicy, RulesConfig, SiteConfig, TrackerConfig, WaterAreasConfig,
                                    ZoneConfig, check_scalars, duplicate_zone, error_message, load_rules_config,
                                    read_yaml_file)
from seawatch.vision.detections import Detections
from seawatch.vision.events import Event, Sink
from seawatch.vision.vessel_identity import IdentityConfig
from seawatch.vision.view_check import ViewCheckConfig

log = logging.getLogger(__name__)

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class WaterViewSpec(BaseModel):
    """One view of a camera that pans or zooms: a reference image of it and its water polygons in that image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(min_length=1, description="image file of the view (a frame grabbed at that preset)")
    water: tuple[tuple[tuple[float, float], ...], ...] = Field(
        min_length=1, description="pixel polygons of open water and berths in the reference image")


class IgnoreAreaSpec(BaseModel):
    """A known false alarm of a fixed camera (an object mask, as Frigate calls it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    polygon_px: tuple[tuple[float, float], ...] = Field(
        min_length=3, description="pixel polygon [[x, y], ...] around the object's anchor point (a vessel's waterline)")
    labels: tuple[str, ...] = Field(("vessel",), min_length=1, description="labels dropped there")
    note: str = Field("", max_length=200, description="what it is (fairway buoy, dolphin pile), for the next reader")


def build_view_water_mask(views: Sequence[WaterViewSpec], margin_px: float, source_id: str):
    """The ``ViewWaterMask`` of a source's ``water_views`` (ConfigError naming the file for an unreadable image)."""
    import cv2

    from seawatch.vision.zones import ViewWaterMask

    loaded = []
    for v in views:
        image = cv2.imread(v.reference, cv2.IMREAD_COLOR)
        if image is None:
            raise ConfigError(f"source {source_id!r}: water view reference {v.reference!r} cannot be read as an image")
        loaded.append((Path(v.reference).name, image, v.water))
    return ViewWaterMask.from_views(loaded, margin_px, source_id=source_id)


class SourceSpec(BaseModel):
    """One video source as the pipeline sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID, description="source id (zones refer to it)")
    url: str = Field(min_length=1, description="file path or stream URL")
    models: tuple[str, ...] = Field(("coco_yolov5n",), min_length=1, description="registry models run on this source; "
                                    "NAME+NAME runs a group whose boxes of a label they share are fused "
                                    "(seawatch.vision.ensemble), e.g. coco_yolov5n+v5_frz40")
    tile: str | None = Field(None, description="tiled inference for small objects (e.g. vessels): SIZE[:OVERLAP], "
                                               "auto[:OVERLAP] (each model's trained tile size), or none; more sizes after "
                                               "commas (auto,288) and +flip (the frame mirrored too) add fused views: more "
                                               "small vessels, one more pass each")
    water: tuple[tuple[tuple[float, float], ...], ...] | None = Field(
        None, description="fixed cameras: pixel polygons ([[x, y], ...] each) of open water and berths; vessel "
                          "detections whose waterline (box bottom centre) is outside all of them are dropped before "
                          "tracking (masts, cranes, cars on the quay). None: no mask. Cameras that pan: water_views")
    water_views: tuple[WaterViewSpec, ...] | None = Field(
        None, description="cameras that pan or zoom: reference images of their views with water polygons; each frame "
                          "is registered to them (features + homography) and the matching view's polygons follow it; a "
                          "frame matching no view keeps every box. Instead of water")
    water_margin_px: float = Field(8.0, ge=0.0, le=500.0, description="the water polygons grown by this much")
    ignore: tuple[IgnoreAreaSpec, ...] = Field(
        (), description="fixed cameras: areas where detections of the given labels are dropped before tracking "
                        "(buoys, piles, a ship painted on a wall): their anchor point (a vessel's waterline) inside")
    water_areas: bool = Field(True, description="geo-referenced sources: drop vessel detections on land or in the sky "
                                                "by the site's water_areas (when the config has them)")
    analysis_fps: float = Field(2.0, gt=0.0, le=60.0, description="frames analysed per second of video")
    conf: float | None = Field(None, ge=0.0, le=1.0, description="detector confidence floor (default: tracker's low_confidence)")
    calibration: CalibrationConfig | None = Field(
        None, description="fixed camera geo-reference: surveyed pose (with intrinsics) or >= 4 ground control points")
    drone: DroneConfig | str | None = Field(
        None, description="the drone carrying this camera: an inline drones entry, or the id of one in `drones`")
    view_check: ViewCheckConfig | None = Field(
        None, description="fixed cameras (seawatch serve): this camera's view check, replacing source_alerts.view_check "
                          "(moved / covered / out of focus against its reference view; {enabled: false} turns it off)")

    def ignore_refusal(self) -> str | None:
        """Why this source cannot have pixel ignore areas (it pans or flies), or None for a fixed camera."""
        if self.water_views is not None or self.drone is not None:
            return "ignore areas are pixel areas of a fixed camera: not with water_views or a drone"
        return None

    @field_validator("tile", mode="before")
    @classmethod
    def _tile_number(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # YAML reads `tile: 384` as a number

    @model_validator(mode="after")
    def _one_geo(self) -> "SourceSpec":
        if self.calibration is not None and self.drone is not None:
            raise ValueError("give calibration (fixed camera) or drone, not both")
        from seawatch.vision.tiling import check_tile_text

        check_tile_text(self.tile)  # a bad tile spec is a config error here, not a crash at start
        from seawatch.vision.ensemble import members_of

        for name in self.models:
            try:
                members_of(name)  # a malformed group (a+, a+a) too
            except ModelError as exc:
                raise ValueError(str(exc)) from None
        if self.water is not None and self.water_views is not None:
            raise ValueError("give water (a fixed camera) or water_views (a camera that pans), not both")
        if self.ignore:
            if (why := self.ignore_refusal()) is not None:
                raise ValueError(why)
            from seawatch.vision.zones import IgnoreMask

            try:
                IgnoreMask.from_pixels([(a.polygon_px, a.labels) for a in self.ignore], self.id)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if self.water_views is not None:
            try:
                build_view_water_mask(self.water_views, self.water_margin_px, self.id)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if self.water is not None:
            from seawatch.vision.zones import WaterMask

            try:
                WaterMask.from_pixels(self.water, self.water_margin_px, self.id)  # polygon errors name the source
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self


class PipelineConfig(BaseModel):
    """The ``seawatch run`` configuration: sources plus the rules configuration (tracker, events, zones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[SourceSpec, ...] = Field((), description="sources (more may be given on the command line)")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="tracker settings")
    events: EventPolicy = Field(default_factory=EventPolicy, description="clip rolls and update cadence")
    zones: tuple[ZoneConfig, ...] = Field((), description="zones per source with their rules")
    site: SiteConfig = Field(default_factory=SiteConfig, description="the site's time zone (rule schedules)")
    drones: tuple[DroneConfig, ...] = Field((), description="drones (a source refers to one by `drone: ID`, or a drone names its `video_source`)")
    ais: tuple[str, ...] = Field((), description="AIS feeds: NMEA file paths (replayed by their own clock), loop:PATH (a log replayed live: re-timed to start at the first frame, looped), tcp://HOST:PORT, udp://HOST:PORT")
    registry: str | None = Field(None, description="vessel registry CSV file")
    identity: IdentityConfig | None = Field(None, description="vessel identity settings (on when ais or registry is given)")
    water_areas: WaterAreasConfig | None = Field(
        None, description="the site's water in WGS84: vessel detections of calibrated cameras and drones whose waterline "
                          "is on land or above the horizon are dropped ({} = open sea: the horizon test only)")
    analysis_workers: int = Field(
        0, ge=0, le=64, description="threads analysing frames side by side, each source on one of them at a time, so a "
                                    "slow camera (a tiled harbour view) does not hold up the others; 0 = auto "
                                    "(one per CPU core, at most one per source); with more than one, each model's "
                                    "onnxruntime threads are the cores divided among the workers")

    @model_validator(mode="after")
    def _refs(self) -> "PipelineConfig":
        ids = [d.id for d in self.drones]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate drone ids: {dup}")
        if (why := duplicate_zone(self.zones)) is not None:  # serve's loader does not go through RulesConfig
            raise ValueError(why)
        for i, s in enumerate(self.sources):
            if isinstance(s.drone, str) and s.drone not in ids:
                raise ValueError(f"sources.{i} ({s.id}): drone {s.drone!r} is not in drones {ids}")
        from seawatch.vision.vessel_identity import check_ais_urls

        try:
            check_ais_urls(self.ais)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def identity_enabled(self) -> bool:
        return bool(self.ais) or self.registry is not None or self.identity is not None

    def drone_of(self, source_id: str) -> DroneConfig | None:
        """The drone whose camera a source is (by the source's ``drone`` or a drone's ``video_source``)."""
        spec = next((s for s in self.sources if s.id == source_id), None)
        if spec is not None and isinstance(spec.drone, DroneConfig):
            return spec.drone
        if spec is not None and isinstance(spec.drone, str):
            return next(d for d in self.drones if d.id == spec.drone)
        return next((d for d in self.drones if d.video_source == source_id), None)

    def ignore_refusal(self, source_id: str) -> str | None:
        """Why ``source_id`` cannot take pixel ignore areas (unknown, it pans, it flies), or None for a fixed camera."""
        spec = next((s for s in self.sources if s.id == source_id), None)
        if spec is None:
            return f"no source {source_id!r} is configured"
        why = spec.ignore_refusal() or (None if self.drone_of(source_id) is None else "it is a drone's camera")
        return None if why is None else f"source {source_id!r}: {why}"

    def calibration_refusal(self, source_id: str) -> str | None:
        """Why ``source_id`` cannot be given a fitted calibration (unknown, a drone's camera), or None for a fixed one."""
        if not any(s.id == source_id for s in self.sources):
            return f"no source {source_id!r} is configured"
        if self.drone_of(source_id) is not None:
            return f"source {source_id!r} is a drone's camera: it is located from the drone's pose, not calibrated"
        return None

    @property
    def rules(self) -> RulesConfig:
        return RulesConfig(tracker=self.tracker, events=self.events, zones=self.zones, site=self.site)


def load_pipeline_config(path: str | Path | None, data: dict | None = None) -> PipelineConfig:
    """Validate a YAML file (or a dict); every error names the file and the field."""
    where = str(path) if path else "config"
    if data is None:
        if path is None:
            return PipelineConfig()
        data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    check_scalars(data, where)
    rules_part = {k: data[k] for k in ("tracker", "events", "zones", "site") if k in data}
    load_rules_config(rules_part, where)  # field-by-field messages for the rules part
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [f"  {where}: {'.'.join(str(p) for p in e['loc']) or '(top)'}: {error_message(e, PipelineConfig)}"
                 for e in errors]
        if any(e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in errors):  # serve's sections, most likely
            lines.append(f"  {where}: this command takes the pipeline part of a configuration only; a whole site's file "
                         "(storage, auth, mqtt, email, ...) runs with `seawatch serve --config FILE`")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    if path is not None:  # a file: what `run` would refuse at start (a caller passing data may bring its detectors)
        check_references(cfg, where)
    return cfg


def reference_problems(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """``(field path, message)`` for what the fields' own validation cannot see and ``run`` / ``serve`` would refuse at
    start: a model name the registry does not know (the same lookup ``run`` makes: the shipped manifests and those
    registered in the cache), a vessel registry file that cannot be read, a drone route whose geometry does not
    plan, a drone connection that is no MAVLink address."""
    from seawatch.drone.config import DroneConfig
    from seawatch.vision import registry
    from seawatch.vision.ensemble import members_of

    out: list[tuple[str, str]] = []
    known: dict[str, str | None] = {}
    for i, s in enumerate(cfg.sources):
        for j, name in enumerate(s.models):
            try:
                members = members_of(name) or (name,)
            except ModelError:
                continue  # reported by SourceSpec's own validator
            for m in members:
                if m not in known:
                    try:
                        registry.get_manifest(m)
                        known[m] = None
                    except (ModelError, ConfigError) as exc:
                        known[m] = str(exc)
                if known[m] is not None:
                    out.append((f"sources[{i}].models[{j}]", known[m]))
    from seawatch.vision.vessel_identity import ais_file_problem

    for i, url in enumerate(cfg.ais):  # a log file is read at start: it must be there (sockets are parsed on load)
        if "://" not in url and (why := ais_file_problem(url)) is not None:
            out.append((f"ais[{i}]", why))
    if cfg.registry is not None:
        from seawatch.vision.identity.registry import VesselRegistry

        try:
            VesselRegistry.from_csv(cfg.registry)  # missing, a folder, not UTF-8, bad rows: as at start
        except InputError as exc:
            out.append(("registry", str(exc)))
    drones = [(f"drones[{i}]", d) for i, d in enumerate(cfg.drones)]
    drones += [(f"sources[{i}].drone", s.drone) for i, s in enumerate(cfg.sources) if isinstance(s.drone, DroneConfig)]
    for where, d in drones:
        from seawatch.drone.link import connection_problem

        why = connection_problem(d.connection)
        if why is not None:
            out.append((f"{where}.connection", why))
        for name, route in d.routes.items():
            try:
                route.build()  # the waypoints a patrol would fly: polygon vertices, lat/lon ranges, spacing
            except (ConfigError, ValueError) as exc:
                out.append((f"{where}.routes.{name}", str(exc)))
    return out


def check_references(cfg: PipelineConfig, where: str) -> None:
    """ConfigError listing :func:`reference_problems`, each line naming ``where`` (the file) and the field."""
    problems = reference_problems(cfg)
    if problems:
        lines = [f"  {where}: {path}: {msg}" for path, msg in problems]
        raise ConfigError(f"invalid configuration ({len(lines)} error{'s' if len(lines) != 1 else ''}):\n"
                          + "\n".join(lines))


class Pipeline:
    """Detectors (one per model, shared by sources), a tracker per source, one rule engine; optionally a
    geo-reference per source and the vessel identity stage.

    Args:
        config: the pipeline configuration.
        sinks: where events go (rule events and identity events alike).
        detectors: model name -> detector object (``detect(list[image]) -> list[Detections]``), used instead of
            loading that model from the registry.
        pose_timelines: source id -> ``PoseTimeline`` fed by the caller (a link, a replay, a test); the camera
            comes from the source's drone config, or from ``drone_cameras``.
        drone_cameras: source id -> ``GeoLocator`` for sources given a timeline but no drone config.
        vessel_table: an existing AIS ``VesselTable`` for the identity stage.
    """

    def __init__(self, config: PipelineConfig, sinks: Sequence[Sink] = (), detectors: dict[str, Any] | None = None,
                 pose_timelines: dict[str, Any] | None = None, drone_cameras: dict[str, Any] | None = None,
                 vessel_table: Any = None):
        from seawatch.vision.detector import load_detector
        from seawatch.vision.geo import GeoEnricher
        from seawatch.vision.rules import RuleEngine
        from seawatch.vision.tiling import tile_for
        from seawatch.vision.tracking import ByteTracker
        from seawatch.vision.zones import IgnoreMask, WaterMask

        self.config = config
        self.sources = {s.id: s for s in config.sources}
        self.detectors: dict[str, Any] = dict(detectors or {})
        # analysis workers (analyse_sources): with more than one, each model's onnxruntime threads are the cores
        # divided among them, without spinning, so workers running side by side do not fight over the cores
        self.workers = worker_count(config.analysis_workers, len(config.sources))
        threads = {}
        if self.workers > 1:
            threads = {"intra_op_threads": max(1, (os.cpu_count() or 1) // self.workers),
                       "session_config": {"session.intra_op.allow_spinning": "0"}}
        floor = config.tracker.low_confidence
        for s in config.sources:
            for name in s.models:
                if name not in self.detectors:
                    self.detectors[name] = load_detector(name, conf=s.conf if s.conf is not None else floor, **threads)
        self.water = {s.id: WaterMask.from_pixels(s.water, s.water_margin_px, s.id)
                      for s in config.sources if s.water is not None}
        self.view_water = {s.id: build_view_water_mask(s.water_views, s.water_margin_px, s.id)
                           for s in config.sources if s.water_views is not None}
        self.ignore = {s.id: IgnoreMask.from_pixels([(a.polygon_px, a.labels) for a in s.ignore], s.id)
                       for s in config.sources if s.ignore}
        # the site's water for geo-referenced sources (built here once; the config check built it before)
        self.geo_water = config.water_areas.build() if config.water_areas is not None else None
        self.tiles = {(s.id, name): tile_for(s.tile, self.detectors[name]) for s in config.sources for name in s.models}
        # per source, the tiled models that find only what its water masks judge (the vessel model): they need not
        # look at tiles with no water, whatever they found there would be dropped
        self.water_tiled: dict[str, set[str]] = {}
        for s in config.sources:
            mask = self.water.get(s.id) or self.view_water.get(s.id) or (self.geo_water if s.water_areas else None)
            self.water_tiled[s.id] = {name for name in s.models if mask is not None and self.tiles[(s.id, name)]
                                      is not None and set(self.detectors[name].labels) <= set(mask.labels)}
        self.trackers = {s.id: ByteTracker(config.tracker) for s in config.sources}
        self.stats = {s.id: AnalysisStats(s.analysis_fps) for s in config.sources}
        self.latest: dict[str, tuple[int, np.ndarray, Detections]] = {}  # source id -> its newest analysed frame
        self.sinks = list(sinks)
        self._given_timelines = set(pose_timelines or {})
        self.geo = self._build_geo(pose_timelines or {}, drone_cameras or {})
        self.links: dict[str, Any] = {}  # drone id -> MavlinkLink opened by start()
        self.identity = None
        if config.identity_enabled or vessel_table is not None:
            from seawatch.vision.vessel_identity import VesselIdentityStage

            self.identity = VesselIdentityStage(
                config.identity, config.zones, config.ais, config.registry, table=vessel_table,
                pre_roll_s=config.events.pre_roll_s, post_roll_s=config.events.post_roll_s,
                site_tz=config.site.timezone)
        self.geo_enricher = GeoEnricher()
        # source id -> why its events' positions are unreliable (the service's view check: the camera moved)
        self.geo_warnings: dict[str, str] = {}
        enrichers = ([self.geo_enricher] + ([self.identity.enrich] if self.identity is not None else [])
                     + [self._geo_warning])
        self.engine = RuleEngine(config.rules, sinks, enrichers=enrichers)
        self.frames = 0
        self.seconds = 0.0
        self._started = False
        # detection runs in the caller's thread (analysis workers detect side by side); tracking, identity, rules
        # and the sinks run under this lock, one frame at a time, as they share incidents, the AIS table and sinks
        self._lock = threading.RLock()
        # source id -> (the picture size its pixel geometry was last judged at, what is wrong with it or None)
        self.geometry_checks: dict[str, tuple[tuple[int, int], str | None]] = {}

    def _build_geo(self, timelines: dict[str, Any], cameras: dict[str, Any]) -> dict[str, Any]:
        from seawatch.vision.geo import SourceGeo

        out: dict[str, Any] = {}
        for sid in timelines:
            if sid not in self.sources:
                raise ConfigError(f"pose_timelines: unknown source {sid!r}")
        for s in self.config.sources:
            drone = self.config.drone_of(s.id)
            if s.calibration is not None:
                if s.id in timelines:
                    raise ConfigError(f"source {s.id!r} has a calibration and a pose timeline; give one")
                out[s.id] = SourceGeo.from_calibration(s.id, s.calibration)
            elif drone is not None or s.id in timelines:
                camera = cameras.get(s.id) or (drone.build_locator() if drone is not None else None)
                if camera is None:
                    raise ConfigError(f"source {s.id!r}: a pose timeline needs the drone camera (a drone config or drone_cameras)")
                timeline = timelines.get(s.id) or drone.build_timeline()  # type: ignore[union-attr]
                out[s.id] = SourceGeo.from_drone(s.id, timeline, camera)
        return out

    def set_added_ignore(self, source_id: str, areas: Sequence[tuple[Sequence[Sequence[float]], Sequence[str]]]) -> None:
        """Ignore areas added while running (an operator's "ignore this spot", kept in the event store), on top of
        the source's configured ``ignore``; replaces what was added before (``()`` leaves the configured ones).
        Takes effect from the next frame. ConfigError for an unknown source, one that pans or flies, or a bad area."""
        from seawatch.vision.zones import IgnoreMask

        if (why := self.config.ignore_refusal(source_id)) is not None:
            raise ConfigError(why)
        spec = self.sources[source_id]
        all_areas = [(a.polygon_px, a.labels) for a in spec.ignore] + [(p, tuple(lab)) for p, lab in areas]
        mask = IgnoreMask.from_pixels(all_areas, source_id) if all_areas else None
        if mask is None:  # one assignment each way: the analysis workers read the dict without a lock
            self.ignore.pop(source_id, None)
        else:
            self.ignore[source_id] = mask

    def calibration_refusal(self, source_id: str) -> str | None:
        """Why ``source_id``'s geo-reference cannot be replaced by a calibration (unknown, a drone's camera, a pose
        timeline given by the caller), or None for a fixed camera."""
        if source_id in self.sources and source_id in self._given_timelines:
            return f"source {source_id!r} is a drone's camera: it is located from the drone's pose, not calibrated"
        return self.config.calibration_refusal(source_id)

    def set_calibration(self, source_id: str, calibration=None) -> None:
        """Locate ``source_id``'s frames with ``calibration`` (a ``CalibrationConfig``: an operator's, applied while
        running) instead of its configured one; None goes back to the configured one (or to none).

        The source's ``SourceGeo`` is built first and swapped in with one assignment: a frame already being analysed
        keeps the locator it took (``locator_for`` at its start), the next frame analysed uses the new one. ConfigError
        for a drone's camera, an unknown source or a calibration that does not build (the old one then stays)."""
        from seawatch.vision.geo import SourceGeo

        if (why := self.calibration_refusal(source_id)) is not None:
            raise ConfigError(why)
        cal = calibration if calibration is not None else self.sources[source_id].calibration
        if cal is None:
            self.geo.pop(source_id, None)
        else:
            self.geo[source_id] = SourceGeo.from_calibration(source_id, cal)

    def set_geo_warning(self, source_id: str, warning: str | None) -> None:
        """While ``warning`` is set (a fixed camera known moved since its reference view: its calibrated pose no longer
        holds), the source's events carry it as ``attributes["geo_warning"]``; None clears it."""
        if warning:
            self.geo_warnings[source_id] = warning
        else:
            self.geo_warnings.pop(source_id, None)

    def _geo_warning(self, ev: Event) -> Event:
        from dataclasses import replace

        warning = self.geo_warnings.get(ev.source_id)
        if warning is None or ev.attributes.get("geo_warning") == warning:
            return ev
        return replace(ev, attributes={**ev.attributes, "geo_warning": warning})

    def start(self, link_timeout_s: float = 10.0) -> "Pipeline":
        """Start what runs beside the frames: AIS socket feeds and the MAVLink links of configured drones whose
        timeline was not given by the caller. A link that does not open is logged; its frames have no pose."""
        if self._started:
            return self
        self._started = True
        if self.identity is not None:
            self.identity.start()
        for s in self.config.sources:
            drone = self.config.drone_of(s.id)
            geo = self.geo.get(s.id)
            if drone is None or geo is None or drone.id in self.links or s.id in self._given_timelines:
                continue
            try:
                self.links[drone.id] = drone.build_link(geo.timeline).open(link_timeout_s)
            except Exception as exc:  # a drone that is not there yet is a status, not a crash
                log.error("drone %s (%s): link did not open: %s; frames of %s have no pose", drone.id,
                          drone.connection, exc, s.id)
        return self

    def stop(self) -> None:
        """Stop AIS feeds and close drone links (open incidents are ended by ``close``)."""
        if self.identity is not None:
            self.identity.stop()
        for link in self.links.values():
            try:
                link.close()
            except Exception as exc:
                log.warning("closing drone link: %s", exc)
        self.links.clear()
        self._started = False

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def detect(self, source_id: str, image: np.ndarray, locator=None) -> Detections:
        """Detections of every model of the source, tiled where configured, without vessels off the water: the
        source's pixel ``water`` mask, then (with ``locator``, the frame's geo-reference) the site's water areas;
        then without what its ``ignore`` areas name."""
        from seawatch.vision.tiling import detect_tiled

        spec = self.sources[source_id]
        water = self.water.get(source_id)
        view_water = self.view_water.get(source_id)
        geo_water = self.geo_water if locator is not None and spec.water_areas else None
        only_water = self.water_tiled[source_id]
        # a camera that pans is registered once per frame, before detection when the tiles need its water
        frame_water = view_water.frame_mask(image) if view_water is not None and only_water else None
        keep_tile = self._water_tiles(water, frame_water, geo_water, locator, image) if only_water else None
        parts = []
        for name in spec.models:
            det = self.detectors[name]
            tile = self.tiles[(source_id, name)]
            skip = keep_tile if name in only_water else None
            parts.append(detect_tiled(det, [image], tile, skip)[0] if tile else det.detect([image])[0])
        merged = Detections.merge(parts)
        if water is not None:
            merged = merged[water.keep(merged)]
        if view_water is not None and len(merged):
            if only_water:
                merged = merged if frame_water is None else merged[frame_water.keep(merged)]
            else:
                merged = merged[view_water.keep(merged, image)]
        if geo_water is not None and len(merged):
            merged = merged[geo_water.keep(merged, locator)]
        if (ignore := self.ignore.get(source_id)) is not None and len(merged):
            merged = merged[ignore.keep(merged)]
        return merged

    @staticmethod
    def _water_tiles(water, frame_water, geo_water, locator, image: np.ndarray):
        """``keep_tile(tile_xyxy, frame_hw)`` for the masks that apply to this frame (a tile must touch the water of
        each), or None when none can refuse a tile (no mask, no pose for the geo one)."""
        tests = [m.covers_tile for m in (water, frame_water) if m is not None]
        geo_tiles = geo_water.tile_filter(locator, image.shape[:2]) if geo_water is not None else None
        tests += [geo_tiles] if geo_tiles is not None else []
        if not tests:
            return None
        return lambda tile_xyxy, frame_hw: all(t(tile_xyxy, frame_hw) for t in tests)

    def locator_for(self, source_id: str, capture_time_ns: int):
        """The locator of one frame of a source (calibration, or the drone pose at that time), or None."""
        geo = self.geo.get(source_id)
        return None if geo is None else geo.frame_locator(capture_time_ns)

    def process(self, source_id: str, capture_time_ns: int, image: np.ndarray, locator=None) -> list[Event]:
        """Events caused by one analysed frame of ``source_id`` (frames of a source in capture order).

        ``locator`` overrides the source's own geo-reference for this frame.
        """
        if source_id not in self.sources:
            raise InputError(f"unknown source {source_id!r}")
        t0 = time.perf_counter()
        if not self._started and (self.identity is not None or self.config.drones):
            self.start()
        if locator is None:
            locator = self.locator_for(source_id, capture_time_ns)
        size_wh = (int(image.shape[1]), int(image.shape[0]))
        checked = self.geometry_checks.get(source_id)
        if checked is None or checked[0] != size_wh:  # the first picture, or the camera's size changed
            self._check_geometry(source_id, size_wh)
        dets = self.detect(source_id, image, locator)
        detect_s = time.perf_counter() - t0
        with self._lock:
            tracked = self.trackers[source_id].update(dets, capture_time_ns)
            # the live view's picture: this frame and what is tracked in it (one assignment; read without the lock)
            self.latest[source_id] = (int(capture_time_ns), image, tracked[tracked.track_id >= 0])
            ident_events: list[Event] = []
            if self.identity is not None:
                # before the rules, so vessel_in_zone events of this frame carry this frame's identity
                ident_events = self.identity.update(source_id, capture_time_ns, tracked, locator, image)
            self.geo_enricher.set_frame(source_id, locator)
            events = self.engine.update(source_id, capture_time_ns, tracked, image, locator)
            self._emit(ident_events)  # after the rules' events of the same frame, so sinks see the returned order
            self.frames += 1
            took_s = time.perf_counter() - t0
            self.seconds += took_s
        self.stats[source_id].record(capture_time_ns, took_s, detect_s)
        return events + ident_events

    def pixel_geometry(self, source_id: str) -> list[tuple[str, Sequence[Sequence[float]]]]:
        """A fixed camera's pixel polygons, each named: its zones' ``polygon_px``, its ignore areas, its water."""
        spec = self.sources[source_id]
        out = [(f"zone {z.id}", z.polygon_px) for z in self.config.zones
               if z.source == source_id and z.polygon_px is not None]
        out += [(f"ignore area {i + 1}", a.polygon_px) for i, a in enumerate(spec.ignore)]
        out += [(f"water polygon {i + 1}", poly) for i, poly in enumerate(spec.water or ())]
        return out

    def _check_geometry(self, source_id: str, size_wh: tuple[int, int]) -> None:
        """Whether the source's pixel polygons fit the pictures it sends: a zone drawn on the main stream's 1920x1080
        picture while the camera's URL gives the 640x360 substream lies mostly outside it and silently never holds a
        detection. Judged at its first picture and whenever its size changes; logged once per size, and kept in
        :attr:`geometry_checks` (the service shows it with the camera). Corners up to 10 % beyond the picture are
        taken as drawn to its edge on purpose."""
        w, h = size_wh
        bad = []
        for name, poly in self.pixel_geometry(source_id):
            xs, ys = [float(p[0]) for p in poly], [float(p[1]) for p in poly]
            if max(xs) > 1.1 * w or max(ys) > 1.1 * h or min(xs) >= w or min(ys) >= h:
                bad.append(f"{name} reaches x {max(xs):.0f}, y {max(ys):.0f} px")
        problem = None
        if bad:
            problem = (f"{'; '.join(bad[:3])}{f' (and {len(bad) - 3} more)' if len(bad) > 3 else ''}, but the "
                       f"camera's picture is {w}x{h} px: drawn on another picture (the main stream, a snapshot of "
                       "another size)? Redraw in this picture's pixels")
            log.warning("source %s: %s", source_id, problem)
        self.geometry_checks[source_id] = (size_wh, problem)

    def latest_frame(self, source_id: str) -> tuple[int, np.ndarray, Detections] | None:
        """The newest analysed frame of a source: ``(capture_time_ns, BGR image, its tracked detections)``, or None
        before the first (the image is the frame analysed, never written to afterwards)."""
        return self.latest.get(source_id)

    def _emit(self, events: list[Event]) -> None:
        for ev in events:
            for sink in self.sinks:
                sink.emit(ev)

    def close(self, time_ns: int | None = None, source_id: str | None = None, reason: str = "end of input") -> list[Event]:
        """End every open incident (of one source or all): end of a file, shutdown."""
        with self._lock:
            events = self.engine.close(time_ns, source_id, reason)
            if self.identity is not None:
                ident = self.identity.close(time_ns, source_id, reason)
                self._emit(ident)
                events += ident
        if source_id is None:
            self.stop()
        return events


def worker_count(setting: int, n_sources: int, cores: int | None = None) -> int:
    """How many analysis threads run: ``setting`` (``analysis_workers``), or for 0 (auto) one per CPU core; never more
    than there are sources (a source is analysed by one worker at a time), and at least one.

    Auto is one per core because on the 2-core reference machine two workers with one onnxruntime thread each
    analysed the demo's four cameras closer to their asked rates, with less CPU, than one worker with two threads
    (``seawatch bench workers``; README, "Analysis workers")."""
    if setting <= 0:
        setting = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(setting, n_sources))


def analyse_sources(pipeline: "Pipeline", sources: dict[str, Any], wakeup: threading.Event, stop: threading.Event,
                    rate: "AnalysisRate", workers: int = 1, on_ended=None, on_error=None) -> int:
    """Frames of many sources through ``pipeline``, by ``workers`` threads (the caller's among them), until every
    source has ended or ``stop`` is set; returns how many events the frames and ended sources gave.

    Each worker takes the next source with a frame due (:class:`seawatch.streams.source.FrameScheduler`: newest
    frame of a live camera, a file's next, a source on one worker at a time) and runs it through
    :meth:`Pipeline.process`; detection runs side by side (onnxruntime releases the GIL), the rest one frame at a
    time. A source that ended has its incidents closed (``Pipeline.close``), then ``on_ended(source_id)`` is called.
    A frame that fails is reported to ``on_error(source_id, exc)`` (default: logged) and the watch goes on.
    """
    from seawatch.errors import SeawatchError
    from seawatch.streams.source import FrameScheduler

    scheduler = FrameScheduler(sources, wakeup, due=rate.due)
    halt = threading.Event()  # the caller's thread was interrupted: the others stop too
    lock = threading.Lock()
    count = [0]

    def report(sid: str, exc: Exception) -> None:
        if on_error is not None:
            on_error(sid, exc)
        elif isinstance(exc, SeawatchError):
            log.error("source %s: %s", sid, exc)
        else:
            log.error("source %s: pipeline failed on a frame", sid, exc_info=exc)

    def work() -> None:
        while not (stop.is_set() or halt.is_set()):
            try:
                item = scheduler.take(0.25)
            except Exception:  # noqa: BLE001 - a frame that cannot be converted, a queue in a bad state
                log.exception("analysis worker: taking the next frame failed")
                stop.wait(0.25)
                continue
            if item is None:
                if scheduler.finished:
                    return
                continue
            sid, frame = item
            try:
                if frame is None and stop.is_set():
                    n = 0  # stopped with the caller (its readers close as it shuts down): not "source ended"
                elif frame is None:
                    n = len(pipeline.close(None, sid, "source ended"))
                    if on_ended is not None:
                        on_ended(sid)
                elif stop.is_set():
                    n = 0
                else:
                    n = len(pipeline.process(sid, frame.capture_time_ns, frame.image))
                with lock:
                    count[0] += n
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the watch
                report(sid, exc)
            finally:
                scheduler.release(sid)

    others = [threading.Thread(target=work, name=f"seawatch-analysis-{i + 1}", daemon=True)
              for i in range(max(1, workers) - 1)]
    for t in others:
        t.start()
    try:
        work()
    finally:
        halt.set()
        for t in others:
            t.join()
    return count[0]


class AnalysisStats:
    """How well analysis keeps up with one source (what an operator checks when a camera seems slow): frames
    analysed per second over the last ``WINDOW_S`` against the rate asked for, the lag from capture to the end of
    analysis (live sources: capture times are wall-clock times), and the time a frame takes (all of it, and
    detection alone). Thread-safe; :meth:`Pipeline.process` records every frame."""

    WINDOW_S = 10.0
    SMOOTHING = 0.2  # weight of the newest frame in the running means
    MAX_LAG_S = 3600.0  # a larger gap is not lag but a replay's clock (capture times not on the wall clock)
    BEHIND_SHARE = 0.8  # analysed under this share of the possible rate: "behind"

    def __init__(self, asked_fps: float, clock=time.monotonic) -> None:
        self._clock = clock  # monotonic seconds (tests give their own)
        self.asked_fps = float(asked_fps)
        self.frames = 0
        self._done: deque[float] = deque()  # monotonic completion times within the window
        self._lock = threading.Lock()
        self._created = clock()
        self._queued: deque[tuple[float, int]] = deque()  # (monotonic time, the reader's frames_queued) per snapshot
        self.process_ms: float | None = None
        self.detect_ms: float | None = None
        self.lag_ms: float | None = None

    def record(self, capture_time_ns: int, process_s: float, detect_s: float) -> None:
        now = self._clock()
        lag_s = (time.time_ns() - int(capture_time_ns)) / 1e9
        def mean(old: float | None, new_s: float) -> float:
            return new_s * 1e3 if old is None else (1 - self.SMOOTHING) * old + self.SMOOTHING * new_s * 1e3

        with self._lock:
            self.frames += 1
            self._done.append(now)
            while self._done and now - self._done[0] > self.WINDOW_S:
                self._done.popleft()
            self.process_ms = mean(self.process_ms, process_s)
            self.detect_ms = mean(self.detect_ms, detect_s)
            self.lag_ms = mean(self.lag_ms, lag_s) if abs(lag_s) <= self.MAX_LAG_S else None

    def snapshot(self, frames_queued: int | None = None) -> dict[str, Any]:
        """``asked_fps``, ``analysed_fps`` (last WINDOW_S), ``lag_ms``, ``process_ms``, ``detect_ms`` (running means;
        None before the first frame, ``lag_ms`` also for a replay), ``frames`` (since start).

        ``frames_queued``: the source reader's count of frames it queued (``SourceStatus.frames_queued``), given at
        each call: from it, ``delivered_fps`` (what the camera gave for analysis over the window: after motion gating,
        None until 2 s of it are known) and ``behind``: analysis takes under BEHIND_SHARE of what it could
        (the asked rate, or the delivered one when the camera gives less)."""
        now = self._clock()
        window_s = max(min(self.WINDOW_S, now - self._created), 1.0)  # just started: over the time there was

        def r(v):
            return None if v is None else round(v, 1)

        with self._lock:
            recent = sum(1 for t in self._done if now - t <= window_s)
            delivered = None
            if frames_queued is not None:
                self._queued.append((now, int(frames_queued)))
                while len(self._queued) > 2 and now - self._queued[1][0] >= self.WINDOW_S:
                    self._queued.popleft()  # keep one sample at least WINDOW_S old, when there is one
                (t0, q0) = self._queued[0]
                if now - t0 >= 2.0:
                    delivered = max(0.0, (int(frames_queued) - q0) / (now - t0))
            analysed = recent / window_s
            possible = self.asked_fps if delivered is None else min(self.asked_fps, delivered)
            behind = delivered is not None and self.frames >= 5 and analysed < self.BEHIND_SHARE * possible
            return {"asked_fps": self.asked_fps, "analysed_fps": round(analysed, 2),
                    "delivered_fps": None if delivered is None else round(delivered, 2), "behind": behind,
                    "lag_ms": r(self.lag_ms), "process_ms": r(self.process_ms), "detect_ms": r(self.detect_ms),
                    "frames": self.frames}


class AnalysisRate:
    """Which frames of each source are analysed: one per ``1 / analysis_fps`` seconds of capture time.

    The one sampler shared by ``seawatch run``, ``seawatch serve`` and :func:`run_file` (1 ms slack absorbs
    timestamp rounding, so a 25 fps stream analysed at 5 fps takes exactly every fifth frame).
    """

    SLACK_NS = 1_000_000

    def __init__(self, sources: Sequence[SourceSpec]):
        self._step_ns = {s.id: int(1e9 / s.analysis_fps) for s in sources}
        self._next_ns = {s.id: 0 for s in sources}

    def due(self, source_id: str, capture_time_ns: int) -> bool:
        """True (and the next slot is booked) when this frame should be analysed."""
        if capture_time_ns + self.SLACK_NS < self._next_ns[source_id]:
            return False
        self._next_ns[source_id] = capture_time_ns + self._step_ns[source_id]
        return True


def run_file(pipeline: Pipeline, source_id: str, path: str | Path, start_ns: int) -> list[Event]:
    """Run one video file through the pipeline, read by the same stream reader as live sources (as fast as it
    decodes, no drops); capture time = ``start_ns`` + the frame's timestamp. Closes open incidents at the end and
    raises InputError when the file cannot be read."""
    from seawatch.streams.frame_queue import QueueClosed
    from seawatch.streams.source import Source, SourceConfig, State

    spec = pipeline.sources[source_id]
    rate = AnalysisRate([spec])
    events: list[Event] = []
    last: int | None = None
    # the reader queues (and converts to BGR) only the frames this rate takes: the same frames, 1/10 of the work at
    # analysis_fps 2.5 on 25 fps video
    src = Source(SourceConfig(source_id=source_id, url=str(path), kind="file", pace="fast", start_time_ns=start_ns,
                              analysis_fps=spec.analysis_fps))
    with src:
        while True:
            try:
                frame = src.read(timeout_s=1.0)
            except QueueClosed:
                break
            if frame is None or not rate.due(source_id, frame.capture_time_ns):
                continue
            last = frame.capture_time_ns
            events += pipeline.process(source_id, last, frame.image)
        status = src.status()
    if status.state == State.FAILED or (status.frames_decoded == 0 and status.last_error):
        raise InputError(f"{path}: {status.last_error or status.state.value}")
    events += pipeline.close(last, source_id)
    return events
