"""The analysis pipeline without the service: frames -> detection -> tracking -> zones/rules -> events.

``Pipeline.process(source_id, capture_time_ns, image)`` is the one per-frame entry point; ``run_file`` feeds it the
frames of a video or image file at the source's analysis rate, with capture times from the file's own clock
(presentation timestamps) offset to a UTC start time. Live sources go through the same ``process``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seawatch.errors import ConfigError, InputError
from seawatch.vision.config import EventPolicy, RulesConfig, TrackerConfig, ZoneConfig, load_rules_config
from seawatch.vision.detections import Detections
from seawatch.vision.events import Event, Sink

log = logging.getLogger(__name__)

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class SourceSpec(BaseModel):
    """One video source as the pipeline sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID, description="source id (zones refer to it)")
    url: str = Field(min_length=1, description="file path or stream URL")
    models: tuple[str, ...] = Field(("coco_yolov5n",), min_length=1, description="registry models run on this source")
    tile: str | None = Field(None, description="tiled inference SIZE[:OVERLAP] for small objects (e.g. vessels), or none")
    analysis_fps: float = Field(2.0, gt=0.0, le=60.0, description="frames analysed per second of video")
    conf: float | None = Field(None, ge=0.0, le=1.0, description="detector confidence floor (default: tracker's low_confidence)")


class PipelineConfig(BaseModel):
    """The ``seawatch run`` configuration: sources plus the rules configuration (tracker, events, zones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[SourceSpec, ...] = Field((), description="sources (more may be given on the command line)")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="tracker settings")
    events: EventPolicy = Field(default_factory=EventPolicy, description="clip rolls and update cadence")
    zones: tuple[ZoneConfig, ...] = Field((), description="zones per source with their rules")

    @property
    def rules(self) -> RulesConfig:
        return RulesConfig(tracker=self.tracker, events=self.events, zones=self.zones)


def load_pipeline_config(path: str | Path | None, data: dict | None = None) -> PipelineConfig:
    """Validate a YAML file (or a dict); every error names the file and the field."""
    where = str(path) if path else "config"
    if data is None:
        if path is None:
            return PipelineConfig()
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{where}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    rules_part = {k: data[k] for k in ("tracker", "events", "zones") if k in data}
    load_rules_config(rules_part, where)  # field-by-field messages for the rules part
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {where}: {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


class Pipeline:
    """Detectors (one per model, shared by sources), a tracker per source, one rule engine."""

    def __init__(self, config: PipelineConfig, sinks: Sequence[Sink] = (), detectors: dict[str, Any] | None = None):
        from seawatch.vision.detector import load_detector
        from seawatch.vision.rules import RuleEngine
        from seawatch.vision.tiling import TileSpec
        from seawatch.vision.tracking import ByteTracker

        self.config = config
        self.sources = {s.id: s for s in config.sources}
        self.detectors: dict[str, Any] = dict(detectors or {})
        floor = config.tracker.low_confidence
        for s in config.sources:
            for name in s.models:
                if name not in self.detectors:
                    self.detectors[name] = load_detector(name, conf=s.conf if s.conf is not None else floor)
        self.tiles = {s.id: TileSpec.parse(s.tile) if s.tile else None for s in config.sources}
        self.trackers = {s.id: ByteTracker(config.tracker) for s in config.sources}
        self.engine = RuleEngine(config.rules, sinks)
        self.frames = 0
        self.seconds = 0.0

    def detect(self, source_id: str, image: np.ndarray) -> Detections:
        from seawatch.vision.tiling import detect_tiled

        spec = self.sources[source_id]
        tile = self.tiles[source_id]
        parts = []
        for name in spec.models:
            det = self.detectors[name]
            parts.append(detect_tiled(det, [image], tile)[0] if tile else det.detect([image])[0])
        return Detections.merge(parts)

    def process(self, source_id: str, capture_time_ns: int, image: np.ndarray, locator=None) -> list[Event]:
        """Events caused by one analysed frame of ``source_id`` (frames of a source in capture order)."""
        if source_id not in self.sources:
            raise InputError(f"unknown source {source_id!r}")
        t0 = time.perf_counter()
        dets = self.detect(source_id, image)
        tracked = self.trackers[source_id].update(dets, capture_time_ns)
        events = self.engine.update(source_id, capture_time_ns, tracked, image, locator)
        self.frames += 1
        self.seconds += time.perf_counter() - t0
        return events

    def close(self, time_ns: int | None = None, source_id: str | None = None, reason: str = "end of input") -> list[Event]:
        """End every open incident (of one source or all): end of a file, shutdown."""
        return self.engine.close(time_ns, source_id, reason)


def file_frames(path: str | Path, analysis_fps: float) -> Iterator[tuple[int, np.ndarray]]:
    """``(offset_ns, image)`` of a video (frames picked at ``analysis_fps`` by their timestamps) or one image."""
    from seawatch.vision.media import media_kind, read_image, iter_video

    path = Path(path)
    kind = media_kind(path)
    if kind == "image":
        yield 0, read_image(path)
        return
    if kind != "video":
        raise InputError(f"{path}: not an image or video file")
    step_ns = int(1e9 / analysis_fps)
    next_ns = 0
    for fr in iter_video(path):
        t = fr.timestamp_ns if fr.timestamp_ns is not None else int(fr.frame_index * 1e9 / (fr.fps or 25.0))
        if t + 1_000_000 >= next_ns:  # 1 ms slack for timestamp rounding
            next_ns = t + step_ns
            yield t, fr.image


def run_file(pipeline: Pipeline, source_id: str, path: str | Path, start_ns: int) -> list[Event]:
    """Run one file through the pipeline; capture time = ``start_ns`` + the frame's timestamp. Closes incidents."""
    spec = pipeline.sources[source_id]
    events: list[Event] = []
    last = start_ns
    for offset_ns, image in file_frames(path, spec.analysis_fps):
        last = start_ns + offset_ns
        events += pipeline.process(source_id, last, image)
    events += pipeline.close(last, source_id)
    return events
