"""Zones: pixel or WGS84 polygons, prepared once and tested against arrays of anchor points.

A detection is "in" a zone when its anchor point is: the bottom centre of the box for things standing on the
ground (people, vehicles), the centre for everything else (vessels, fire, smoke, heads). Pixel zones suit
fixed cameras; geo zones (lon/lat polygons, GeoJSON axis order) need a ``Locator`` that maps pixels of the
current frame to the ground — a calibrated fixed camera or a drone pose at capture time. A geo zone on a frame
without a locator matches nothing (and says so once in the log).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import shapely
from shapely.geometry import Polygon

from seawatch.errors import ConfigError
from seawatch.vision.detections import Detections

log = logging.getLogger(__name__)

Anchor = Literal["bottom_centre", "centre"]

# Things that stand on the ground are where their feet/wheels are; the rest where their middle is.
DEFAULT_ANCHORS: Mapping[str, Anchor] = {
    "person": "bottom_centre",
    "person_fallen": "centre",
    "car": "bottom_centre",
    "truck": "bottom_centre",
    "bus": "bottom_centre",
    "motorcycle": "bottom_centre",
    "bicycle": "bottom_centre",
    "vessel": "centre",
    "fire": "centre",
    "smoke": "centre",
    "helmet": "centre",
    "no_helmet": "centre",
}


@runtime_checkable
class Locator(Protocol):
    """Maps pixels of one frame to the ground (implemented by camera calibration or a drone pose).

    ``locate(xy_px)`` takes ``(N, 2) float`` pixel coordinates and returns ``(N, 3) float64`` rows of
    ``lat_deg, lon_deg, uncertainty_m`` (1-sigma horizontal radius); rows are NaN where the pixel does not hit
    the ground (above the horizon, outside the calibrated area).
    """

    def locate(self, xy_px: np.ndarray) -> np.ndarray: ...


def anchor_points(dets: Detections, anchors: Mapping[str, Anchor] | None = None) -> np.ndarray:
    """``(N, 2) float64`` anchor point of each box, per its label (``DEFAULT_ANCHORS`` overridden by ``anchors``)."""
    n = len(dets)
    if n == 0:
        return np.zeros((0, 2), np.float64)
    table = dict(DEFAULT_ANCHORS)
    if anchors:
        table.update(anchors)
    xyxy = dets.xyxy_px.astype(np.float64)
    cx = 0.5 * (xyxy[:, 0] + xyxy[:, 2])
    cy = 0.5 * (xyxy[:, 1] + xyxy[:, 3])
    if dets.labels:
        bottom_of_label = np.array([table.get(lab, "centre") == "bottom_centre" for lab in dets.labels], bool)
        bottom = bottom_of_label[dets.class_id]
        cy = np.where(bottom, xyxy[:, 3], cy)
    return np.stack([cx, cy], axis=1)


@dataclass(frozen=True, slots=True)
class Zone:
    """One polygon, prepared for fast repeated point tests.

    Attributes:
        id: zone id (unique per source).
        kind: ``pixel`` (vertices are x, y pixels) or ``geo`` (vertices are lon, lat degrees WGS84), or
            ``frame`` (the whole image; no polygon).
        polygon: the shapely polygon (None for ``frame``).
    """

    id: str
    kind: Literal["pixel", "geo", "frame"]
    polygon: Polygon | None = field(default=None, compare=False)

    @classmethod
    def whole_frame(cls, zone_id: str) -> "Zone":
        return cls(zone_id, "frame", None)

    @classmethod
    def from_pixels(cls, zone_id: str, vertices_px: Sequence[Sequence[float]]) -> "Zone":
        """A pixel polygon from ``[[x, y], ...]`` (at least 3 vertices, not self-intersecting)."""
        return cls(zone_id, "pixel", _polygon(zone_id, vertices_px, geo=False))

    @classmethod
    def from_lonlat(cls, zone_id: str, vertices_lonlat: Sequence[Sequence[float]]) -> "Zone":
        """A WGS84 polygon from ``[[lon, lat], ...]`` (GeoJSON order)."""
        return cls(zone_id, "geo", _polygon(zone_id, vertices_lonlat, geo=True))

    @property
    def area(self) -> float:
        """Polygon area in its own units (px² or deg²); inf for the whole frame."""
        return float("inf") if self.polygon is None else float(self.polygon.area)

    def contains_px(self, xy_px: np.ndarray, locator: Locator | None = None) -> np.ndarray:
        """``(N,) bool``: which pixel points lie inside (boundary counts as inside).

        Geo zones convert the points with ``locator``; without one, or where it returns NaN, nothing is inside.
        """
        pts = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
        if pts.shape[0] == 0:
            return np.zeros((0,), bool)
        if self.kind == "frame":
            return np.isfinite(pts).all(axis=1)
        if self.kind == "pixel":
            return self._contains_xy(pts[:, 0], pts[:, 1])
        if locator is None:
            return np.zeros(pts.shape[0], bool)
        geo = np.asarray(locator.locate(pts), dtype=np.float64).reshape(-1, 3)
        if geo.shape[0] != pts.shape[0]:
            raise ConfigError(f"locator returned {geo.shape[0]} positions for {pts.shape[0]} pixels (zone {self.id!r})")
        return self._contains_xy(geo[:, 1], geo[:, 0])

    def contains_lonlat(self, lon_deg: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
        """``(N,) bool`` for points already on the ground (geo zones only)."""
        if self.kind != "geo":
            raise ConfigError(f"zone {self.id!r} is a {self.kind} zone, not a geo zone")
        return self._contains_xy(np.asarray(lon_deg, np.float64), np.asarray(lat_deg, np.float64))

    def overlap_fraction(self, xyxy_px: np.ndarray) -> np.ndarray:
        """``(N,) float``: fraction of each box's area that lies inside this pixel zone (1 for ``frame``)."""
        boxes = np.asarray(xyxy_px, dtype=np.float64).reshape(-1, 4)
        if boxes.shape[0] == 0:
            return np.zeros((0,), np.float64)
        if self.kind == "frame":
            return np.ones(boxes.shape[0])
        if self.kind != "pixel":
            raise ConfigError(f"overlap_fraction needs a pixel zone; zone {self.id!r} is {self.kind}")
        geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
        box_area = shapely.area(geoms)
        inter = shapely.area(shapely.intersection(geoms, self.polygon))
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(box_area > 0, inter / box_area, 0.0)
        return np.nan_to_num(frac, nan=0.0)

    def _contains_xy(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ok = np.isfinite(x) & np.isfinite(y)
        out = np.zeros(x.shape[0], bool)
        if ok.any():
            # shapely.intersects_xy counts the boundary as inside (contains_xy would not).
            out[ok] = shapely.intersects_xy(self.polygon, x[ok], y[ok])
        return out

    def pixel_bounds(self) -> tuple[float, float, float, float] | None:
        """x1, y1, x2, y2 of a pixel polygon, else None."""
        if self.kind != "pixel":
            return None
        return tuple(float(v) for v in self.polygon.bounds)  # type: ignore[return-value]


def _polygon(zone_id: str, vertices: Sequence[Sequence[float]], geo: bool) -> Polygon:
    try:
        pts = np.asarray(vertices, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"zone {zone_id!r}: vertices must be a list of [x, y] number pairs") from None
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ConfigError(f"zone {zone_id!r}: vertices must be [x, y] pairs, got an array of shape {pts.shape}")
    if len(pts) >= 2 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]  # closed rings are fine
    if len(pts) < 3:
        raise ConfigError(f"zone {zone_id!r}: a polygon needs at least 3 distinct vertices, got {len(pts)}")
    if not np.isfinite(pts).all():
        raise ConfigError(f"zone {zone_id!r}: vertices must be finite numbers")
    if geo:
        lon, lat = pts[:, 0], pts[:, 1]
        if (np.abs(lat) > 90).any() or (np.abs(lon) > 180).any():
            raise ConfigError(f"zone {zone_id!r}: geo vertices are [lon, lat] degrees; lon in [-180, 180], lat in [-90, 90]")
        if lon.max() - lon.min() > 180:
            raise ConfigError(f"zone {zone_id!r}: geo polygons crossing the antimeridian are not supported; split it in two")
    poly = Polygon(pts)
    if not poly.is_valid:
        raise ConfigError(f"zone {zone_id!r}: polygon is invalid ({shapely.is_valid_reason(poly)})")
    if poly.area <= 0:
        raise ConfigError(f"zone {zone_id!r}: polygon has zero area")
    shapely.prepare(poly)
    return poly


@dataclass(frozen=True, slots=True)
class WaterMask:
    """Where vessels can be in a fixed camera's image: pixel polygons of open water (and berths).

    A vessel detection is kept when its waterline point — the bottom centre of its box, where hull meets water —
    lies inside one of the polygons, grown by ``margin_px`` (a hull moored against a quay wall sits on the
    polygon's edge). Masts, cranes, lamp posts and parked cars on land, sky and reflections on the quay are then
    dropped before tracking. Other labels pass untouched. Fixed cameras only: a camera that pans or zooms moves
    the water in the image (leave the mask off, or use geo zones with a calibration).
    """

    water: object  # the grown polygons as one prepared shapely geometry
    margin_px: float = 8.0
    labels: tuple[str, ...] = ("vessel",)

    @classmethod
    def from_pixels(cls, polygons_px: Sequence[Sequence[Sequence[float]]], margin_px: float = 8.0,
                    source_id: str = "") -> "WaterMask":
        if margin_px < 0 or margin_px != margin_px:
            raise ConfigError(f"source {source_id!r}: water margin must be >= 0 px, got {margin_px}")
        if not polygons_px:
            raise ConfigError(f"source {source_id!r}: water needs at least one polygon (or leave it out)")
        polys = [_polygon(f"{source_id}:water[{i}]", verts, geo=False) for i, verts in enumerate(polygons_px)]
        water = shapely.union_all(polys)
        if margin_px:
            water = water.buffer(margin_px, join_style="mitre")
        shapely.prepare(water)
        return cls(water, float(margin_px))

    def keep(self, dets: Detections) -> np.ndarray:
        """``(N,) bool``: detections to keep (every non-vessel one; vessels whose waterline is on water)."""
        n = len(dets)
        if not n:
            return np.zeros((0,), bool)
        is_vessel = np.isin(dets.label, self.labels)
        if not is_vessel.any():
            return np.ones(n, bool)
        waterline = anchor_points(dets, {lab: "bottom_centre" for lab in self.labels})
        return ~is_vessel | shapely.intersects_xy(self.water, waterline[:, 0], waterline[:, 1])  # edge = water
