"""Zones: pixel or WGS84 polygons, prepared once and tested against arrays of anchor points.

A detection is "in" a zone when its anchor point is (``zone_anchor_points``). In a pixel zone: the bottom centre
of the box for things standing on the ground or floating (people, vehicles, a vessel's waterline, as the water
masks and ignore areas test), the centre for everything else (fire, smoke, heads). In a geo zone: the bottom
centre of every box, the point where it meets the ground or water — the only point a ``Locator`` places
correctly (a box centre projects too far away, or above the horizon) and the point an event's geo position is
located from. Per-zone ``anchors`` override both. Pixel zones suit fixed cameras; geo zones (lon/lat polygons,
GeoJSON axis order) need a ``Locator`` that maps pixels of the current frame to the ground — a calibrated fixed
camera or a drone pose at capture time. A geo zone on a frame without a locator matches nothing (and says so
once in the log).
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

# Things that stand on the ground or float are where their feet/wheels/waterline are; the rest where their middle is.
DEFAULT_ANCHORS: Mapping[str, Anchor] = {
    "person": "bottom_centre",
    "person_fallen": "centre",
    "car": "bottom_centre",
    "truck": "bottom_centre",
    "bus": "bottom_centre",
    "motorcycle": "bottom_centre",
    "bicycle": "bottom_centre",
    "vessel": "bottom_centre",
    "fire": "centre",
    "smoke": "centre",
    "helmet": "centre",
    "no_helmet": "centre",
}
# the point an ignore area (IgnoreMask) tests: a vessel's waterline, as the water masks and pixel zones do
IGNORE_ANCHORS: Mapping[str, Anchor] = DEFAULT_ANCHORS
# a geo zone tests where each thing meets the ground or water (see the module docstring)
GEO_ANCHORS: Mapping[str, Anchor] = {lab: "bottom_centre" for lab in DEFAULT_ANCHORS}


@runtime_checkable
class Locator(Protocol):
    """Maps pixels of one frame to the ground (implemented by camera calibration or a drone pose).

    ``locate(xy_px)`` takes ``(N, 2) float`` pixel coordinates and returns ``(N, 3) float64`` rows of
    ``lat_deg, lon_deg, uncertainty_m`` (1-sigma horizontal radius); rows are NaN where the pixel does not hit
    the ground (above the horizon, outside the calibrated area).
    """

    def locate(self, xy_px: np.ndarray) -> np.ndarray: ...


def anchor_points(dets: Detections, anchors: Mapping[str, Anchor] | None = None, *,
                  defaults: Mapping[str, Anchor] = DEFAULT_ANCHORS, fallback: Anchor = "centre") -> np.ndarray:
    """``(N, 2) float64`` anchor point of each box, per its label (``defaults`` overridden by ``anchors``;
    ``fallback`` for a label in neither)."""
    n = len(dets)
    if n == 0:
        return np.zeros((0, 2), np.float64)
    table = dict(defaults)
    if anchors:
        table.update(anchors)
    xyxy = dets.xyxy_px.astype(np.float64)
    cx = 0.5 * (xyxy[:, 0] + xyxy[:, 2])
    cy = 0.5 * (xyxy[:, 1] + xyxy[:, 3])
    if dets.labels:
        bottom_of_label = np.array([table.get(lab, fallback) == "bottom_centre" for lab in dets.labels], bool)
        bottom = bottom_of_label[dets.class_id]
        cy = np.where(bottom, xyxy[:, 3], cy)
    return np.stack([cx, cy], axis=1)


def zone_anchor_points(zone: "Zone", dets: Detections, anchors: Mapping[str, Anchor] | None = None) -> np.ndarray:
    """``(N, 2) float64`` the point of each box that ``zone`` tests: ``GEO_ANCHORS`` (every box's bottom centre)
    for a geo zone, ``DEFAULT_ANCHORS`` otherwise; the zone's own ``anchors`` override either."""
    if zone.kind == "geo":
        return anchor_points(dets, anchors, defaults=GEO_ANCHORS, fallback="bottom_centre")
    return anchor_points(dets, anchors)


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
    the water in the image (use :class:`ViewWaterMask`, or :class:`GeoWaterMask` with a calibration or pose).
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

    def covers_tile(self, tile_xyxy, frame_hw: tuple[int, int] | None = None) -> bool:
        """Whether a tile (pixels) touches the grown water: a vessel box found wholly inside a tile that does not
        has its waterline off the water and would be dropped, so tiled detection need not look there."""
        x0, y0, x1, y1 = (float(v) for v in tile_xyxy)
        return bool(shapely.intersects(self.water, shapely.box(x0, y0, x1, y1)))

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


@dataclass(frozen=True)
class IgnoreMask:
    """A fixed camera's known false alarms: pixel areas where detections of some labels are dropped before
    tracking (a fairway buoy, a dolphin pile, a ship painted on a warehouse). A detection is dropped when its
    anchor point (bottom centre for vessels — the waterline the water masks test —, people and vehicles, else the
    centre) lies inside an area that names its label; boats passing in front of a buoy still cross it in a frame or two and keep
    their track."""

    areas: tuple[tuple[object, frozenset[str]], ...]  # (prepared polygon, labels)

    @classmethod
    def from_pixels(cls, areas: Sequence[tuple[Sequence[Sequence[float]], Sequence[str]]],
                    source_id: str = "") -> "IgnoreMask":
        built = []
        for i, (verts, labels) in enumerate(areas):
            if not labels:
                raise ConfigError(f"source {source_id!r}: ignore[{i}] names no labels")
            poly = _polygon(f"{source_id}:ignore[{i}]", verts, geo=False)
            shapely.prepare(poly)
            built.append((poly, frozenset(labels)))
        return cls(tuple(built))

    def keep(self, dets: Detections) -> np.ndarray:
        """``(N,) bool``: detections outside every area that names their label."""
        n = len(dets)
        keep = np.ones(n, bool)
        if not n:
            return keep
        pts = anchor_points(dets, IGNORE_ANCHORS)  # a vessel's waterline, as the water masks test
        for poly, labels in self.areas:
            hit = np.isin(dets.label, list(labels))
            if hit.any():
                keep &= ~(hit & shapely.intersects_xy(poly, pts[:, 0], pts[:, 1]))
        return keep


def ignore_area_around(xyxy_px: Sequence[float], label: str, margin_frac: float = 0.1,
                       min_margin_px: float = 6.0, frame_wh_px: tuple[int, int] | None = None) -> list[list[float]]:
    """The ignore area an operator's "ignore this spot" makes of one false box (a buoy, a pile): a rectangle
    around the box's anchor point — the point :class:`IgnoreMask` tests (a vessel's waterline) — reaching
    ``margin_frac`` of the box's width and height to each side, at least ``min_margin_px``, so the same object
    found a few pixels off next time is still inside while a boat passing by is out of it within a frame or two.
    Kept tight on purpose: on the held-out harbour camera, areas of 30 % of a box also swallowed the boats moored
    beside a false alarm (recall 0.67 -> 0.54 where 10 % kept 0.65; ``seawatch evaluate --operator-ignore``).
    Clipped to the frame when ``frame_wh_px`` is given. Returns ``[[x, y], ...]`` pixels (4 corners)."""
    x0, y0, x1, y1 = (float(v) for v in xyxy_px)
    if not all(np.isfinite([x0, y0, x1, y1])) or x1 <= x0 or y1 <= y0:
        raise ValueError(f"not a box: {list(xyxy_px)}")
    ax = 0.5 * (x0 + x1)
    ay = y1 if IGNORE_ANCHORS.get(label, "centre") == "bottom_centre" else 0.5 * (y0 + y1)
    dx = max(min_margin_px, margin_frac * (x1 - x0))
    dy = max(min_margin_px, margin_frac * (y1 - y0))
    left, top, right, bottom = ax - dx, ay - dy, ax + dx, ay + dy
    if frame_wh_px is not None:
        w, h = frame_wh_px
        left, top, right, bottom = max(0.0, left), max(0.0, top), min(float(w), right), min(float(h), bottom)
    r = lambda v: round(v, 1)  # noqa: E731
    return [[r(left), r(top)], [r(right), r(top)], [r(right), r(bottom)], [r(left), r(bottom)]]


def _is_sky(reason: str | None) -> bool:
    """A locator's reason for a pixel with no ground position that means the pixel looks above the horizon
    (``GeoLocator``: the ray misses the surface; a GCP homography: beyond its horizon line)."""
    return reason is None or "horizon" in reason


def read_water_geojson(path) -> list[Polygon]:
    """Water polygons (``[lon, lat]``, holes kept: piers, pontoons, islands) from a GeoJSON file: a bare
    Polygon / MultiPolygon, a Feature or a FeatureCollection of them (other geometry types are skipped). Raises
    ConfigError naming the file for what cannot be read or is not valid."""
    import json
    from pathlib import Path

    where = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"water areas {where}: cannot read GeoJSON: {exc}") from None
    geoms: list = []
    todo = [doc]
    while todo:
        node = todo.pop()
        if not isinstance(node, dict):
            raise ConfigError(f"water areas {where}: expected GeoJSON objects, found {type(node).__name__}")
        kind = node.get("type")
        if kind == "FeatureCollection":
            todo.extend(reversed(node.get("features") or []))
        elif kind == "Feature":
            if node.get("geometry") is not None:
                todo.append(node["geometry"])
        elif kind == "GeometryCollection":
            todo.extend(reversed(node.get("geometries") or []))
        elif kind == "Polygon":
            geoms.append(node.get("coordinates"))
        elif kind == "MultiPolygon":
            geoms.extend(node.get("coordinates") or [])
    polys: list[Polygon] = []
    for i, rings in enumerate(geoms):
        if not isinstance(rings, list) or not rings:
            raise ConfigError(f"water areas {where}: polygon {i} has no rings")
        shell = _polygon(f"{where}:polygon[{i}]", rings[0], geo=True)
        holes = [_polygon(f"{where}:polygon[{i}].hole[{j}]", r, geo=True) for j, r in enumerate(rings[1:])]
        poly = Polygon(shell.exterior.coords, [h.exterior.coords for h in holes])
        if not poly.is_valid:
            raise ConfigError(f"water areas {where}: polygon {i} is invalid ({shapely.is_valid_reason(poly)})")
        polys.append(poly)
    if not polys:
        raise ConfigError(f"water areas {where}: no Polygon or MultiPolygon in the file")
    return polys


@dataclass(frozen=True, slots=True)
class GeoWaterMask:
    """Where vessels can be for a geo-referenced source (a fixed camera's calibration, or a drone's pose at the
    frame's capture time): below the horizon and, when the site's water areas are given, on water.

    The test point is a vessel box's waterline (bottom centre). It is located on the ground through the frame's
    locator; the vessel is kept when that point is within ``margin_m`` plus ``sigma_k`` times its 1-sigma position
    error of the water polygons. A waterline that looks above the horizon (the sky, the far shore's skyline seen
    from a drone) is dropped — unless the same point ``horizon_margin_px`` lower in the image reaches the water,
    since a hull right on the horizon is real and the pose has errors. Unlike the pixel :class:`WaterMask` it
    follows the camera: a drone on patrol or a camera whose pose is known as it pans. Frames without a pose
    (stale telemetry) keep every detection: nothing is dropped on a guess.

    Attributes:
        water_m: the water polygons in metres of a transverse Mercator plane centred on them (prepared), or None
            for "every surface below the horizon is water" (open sea, an offshore wind farm).
        to_plane: ``(lon, lat) -> (x_m, y_m)`` of that plane.
    """

    water_m: object | None
    to_plane: object | None
    margin_m: float = 10.0
    sigma_k: float = 2.0
    horizon_margin_px: float = 12.0
    labels: tuple[str, ...] = ("vessel",)

    @classmethod
    def build(cls, polygons_lonlat: Sequence[Polygon] = (), margin_m: float = 10.0, sigma_k: float = 2.0,
              horizon_margin_px: float = 12.0) -> "GeoWaterMask":
        if not polygons_lonlat:
            return cls(None, None, float(margin_m), float(sigma_k), float(horizon_margin_px))
        from pyproj import Transformer

        water = shapely.union_all(list(polygons_lonlat))
        c = water.centroid
        tm = Transformer.from_crs("EPSG:4326", f"+proj=tmerc +lat_0={c.y:.8f} +lon_0={c.x:.8f} +k=1 +x_0=0 +y_0=0 "
                                  "+ellps=WGS84 +units=m", always_xy=True)
        water_m = shapely.transform(water, lambda xy: np.column_stack(tm.transform(xy[:, 0], xy[:, 1])))
        shapely.prepare(water_m)
        return cls(water_m, tm, float(margin_m), float(sigma_k), float(horizon_margin_px))

    def keep(self, dets: Detections, locator) -> np.ndarray:
        """``(N,) bool``: detections to keep (non-vessels; vessels on water, near the horizon, or of a frame
        without a geo-reference)."""
        n = len(dets)
        if not n:
            return np.zeros((0,), bool)
        is_vessel = np.isin(dets.label, self.labels)
        if not is_vessel.any() or locator is None or getattr(locator, "stale", False):
            return np.ones(n, bool)
        idx = np.flatnonzero(is_vessel)
        waterline = anchor_points(dets[idx], {lab: "bottom_centre" for lab in self.labels})
        keep = np.ones(n, bool)
        keep[idx] = self.keeps_waterlines(waterline, locator)
        return keep

    def keeps_waterlines(self, waterline: np.ndarray, locator) -> np.ndarray:
        """``(K,) bool`` for waterline pixels ``(K, 2)`` of one frame with a (non-stale) locator."""
        waterline = np.asarray(waterline, np.float64).reshape(-1, 2)
        rows = np.asarray(locator.locate(waterline), np.float64).reshape(-1, 3)
        ok = np.ones(len(waterline), bool)
        off = ~np.isfinite(rows[:, 0])
        if off.any():
            reasons = locator.reasons(waterline[off]) if hasattr(locator, "reasons") else [None] * int(off.sum())
            sky = np.array([_is_sky(r) for r in reasons], bool)
            if sky.any():
                lower = waterline[off][sky] + np.array([0.0, self.horizon_margin_px])
                reaches = np.isfinite(np.asarray(locator.locate(lower), np.float64).reshape(-1, 3)[:, 0])
                cut = np.flatnonzero(off)[sky]
                ok[cut] = reaches  # a hull on the horizon stays; it is not tested against the land (too far to tell)
        on = ~off
        if self.water_m is not None and on.any():
            x, y = self.to_plane.transform(rows[on, 1], rows[on, 0])  # lon, lat -> plane metres
            dist = shapely.distance(self.water_m, shapely.points(np.column_stack([x, y])))
            sigma = np.nan_to_num(rows[on, 2], nan=0.0, posinf=np.inf)
            ok[on] = dist <= self.margin_m + self.sigma_k * sigma
        return ok

    def tile_filter(self, locator, frame_hw: tuple[int, int], step_px: float = 8.0):
        """For tiled detection of one frame: ``keep_tile(tile_xyxy, frame_hw)``, true for a tile where a vessel
        could be kept — a waterline on a grid of ``step_px`` over the frame that the mask keeps lies in it (the
        margins in metres are many pixels wide, so the grid does not step over a channel). None when the frame has
        no pose (every tile runs) or every grid point is kept."""
        if locator is None or getattr(locator, "stale", False):
            return None
        h, w = frame_hw
        xs = np.arange(step_px / 2, w, step_px)
        ys = np.arange(step_px / 2, h, step_px)
        gx, gy = np.meshgrid(xs, ys)
        grid = _GridLocator(locator) if hasattr(locator, "ground_points") else locator
        ok = self.keeps_waterlines(np.column_stack([gx.ravel(), gy.ravel()]), grid).reshape(gy.shape)
        if ok.all():
            return None
        # summed-area table: kept grid points inside a rectangle in O(1)
        sat = np.zeros((ok.shape[0] + 1, ok.shape[1] + 1), np.int64)
        sat[1:, 1:] = ok.cumsum(0).cumsum(1)

        def keep_tile(tile_xyxy, hw=None) -> bool:
            x0, y0, x1, y1 = (float(v) for v in tile_xyxy)
            c0, c1 = np.searchsorted(xs, x0), np.searchsorted(xs, x1)
            r0, r1 = np.searchsorted(ys, y0), np.searchsorted(ys, y1)
            return bool(sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0] > 0)

        return keep_tile


class _GridLocator:
    """``locate`` / ``reasons`` of a grid of pixels straight from a FrameLocator's vectorised ground points,
    without its per-pixel memo and ellipses (kept for the waterlines events are located at)."""

    def __init__(self, frame_locator) -> None:
        self._loc = frame_locator

    def locate(self, xy_px: np.ndarray) -> np.ndarray:
        from seawatch.vision.geo import one_sigma_ellipses

        g = self._loc.ground_points(np.asarray(xy_px, np.float64).reshape(-1, 2))
        major = one_sigma_ellipses(g)[0]
        ok = np.asarray(g.valid, bool) & np.isfinite(g.lat_deg) & np.isfinite(g.lon_deg)
        out = np.full((ok.size, 3), np.nan)
        out[ok] = np.column_stack([g.lat_deg, g.lon_deg, np.where(np.isfinite(major), major, np.inf)])[ok]
        return out

    def reasons(self, xy_px: np.ndarray) -> list[str | None]:
        g = self._loc.ground_points(np.asarray(xy_px, np.float64).reshape(-1, 2))
        return [None if v else (r or "no ground position") for v, r in zip(np.asarray(g.valid, bool), g.reasons)]


@dataclass
class _ReferenceView:
    """One reference image of a moving camera's view with its water polygons (reference pixels)."""

    name: str
    polygons_px: list[np.ndarray]
    keypoints_px: np.ndarray  # (K, 2) in reference pixels
    descriptors: np.ndarray  # (K, 32) uint8 ORB


class ViewWaterMask:
    """The pixel water mask of a camera that pans or zooms (a PTZ touring its presets, a camera nudged by wind):
    the water polygons are drawn once on reference images of its views, and every analysed frame is registered
    to them (ORB features of the shore, buildings and quays; a RANSAC similarity: pan, tilt, zoom), so the polygons
    follow the view.

    The view with the most inliers wins; the polygons are mapped into the frame, grown by ``margin_px`` and
    used as :class:`WaterMask` does (vessel boxes whose waterline is outside are dropped). A frame that matches no
    view well enough (the camera looks elsewhere, night, fog) keeps every box: nothing is dropped on a guess;
    ``last_view`` says which view matched (None: none).
    """

    MAX_SIDE_PX = 960  # features are found on frames and references scaled to this long side
    N_FEATURES = 2000
    RATIO = 0.75  # Lowe's ratio test
    RANSAC_PX = 4.0

    def __init__(self, views: list[_ReferenceView], margin_px: float = 8.0, min_inliers: int = 25,
                 labels: tuple[str, ...] = ("vessel",)) -> None:
        import cv2

        self.views = views
        self.margin_px = float(margin_px)
        self.min_inliers = int(min_inliers)
        self.labels = labels
        self.last_view: str | None = None
        self.last_inliers = 0
        self._orb = cv2.ORB_create(self.N_FEATURES)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    def _features(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import cv2

        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        scale = min(1.0, self.MAX_SIDE_PX / max(gray.shape[:2]))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        kps, desc = self._orb.detectAndCompute(small, None)
        pts = np.array([k.pt for k in kps], np.float64).reshape(-1, 2) / scale
        return pts, desc

    @classmethod
    def from_views(cls, views: Sequence[tuple[str, np.ndarray, Sequence[Sequence[Sequence[float]]]]],
                   margin_px: float = 8.0, min_inliers: int = 25, source_id: str = "") -> "ViewWaterMask":
        """``views``: (name, reference image BGR, water polygons in its pixels). Raises ConfigError for a polygon
        that is not valid or a reference without enough texture to register against."""
        if margin_px < 0 or margin_px != margin_px:
            raise ConfigError(f"source {source_id!r}: water margin must be >= 0 px, got {margin_px}")
        if not views:
            raise ConfigError(f"source {source_id!r}: water_views needs at least one view")
        mask = cls([], margin_px, min_inliers)
        for name, image, polygons in views:
            if not polygons:
                raise ConfigError(f"source {source_id!r}: water view {name}: give at least one water polygon")
            polys = [_polygon(f"{source_id}:{name}[{i}]", p, geo=False) for i, p in enumerate(polygons)]
            pts, desc = mask._features(image)
            if desc is None or len(pts) < 4 * min_inliers:
                raise ConfigError(f"source {source_id!r}: water view {name}: the reference image has too little "
                                  f"texture to register frames against ({len(pts)} features)")
            mask.views.append(_ReferenceView(name, [np.asarray(p.exterior.coords, np.float64) for p in polys],
                                             pts, desc))
        return mask

    def register(self, image: np.ndarray) -> tuple[_ReferenceView, np.ndarray] | None:
        """The best matching view and its transform reference -> frame (3x3), or None when no view matches."""
        import cv2

        pts, desc = self._features(image)
        best: tuple[int, _ReferenceView, np.ndarray] | None = None
        if desc is not None and len(pts) >= self.min_inliers:
            for view in self.views:
                pairs = self._matcher.knnMatch(view.descriptors, desc, k=2)
                good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < self.RATIO * m[1].distance]
                if len(good) < self.min_inliers:
                    continue
                src = view.keypoints_px[[g.queryIdx for g in good]]
                dst = pts[[g.trainIdx for g in good]]
                # a similarity (pan, tilt, zoom, roll): a full homography is ill-posed when the features lie on one
                # band (a far shore along the horizon), as they do over open water
                a, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=self.RANSAC_PX)
                n = int(inl.sum()) if inl is not None else 0
                if a is not None and n >= self.min_inliers and (best is None or n > best[0]):
                    best = (n, view, np.vstack([a, [0.0, 0.0, 1.0]]))
        self.last_view = best[1].name if best else None
        self.last_inliers = best[0] if best else 0
        return (best[1], best[2]) if best else None

    def frame_mask(self, image: np.ndarray) -> WaterMask | None:
        """The fixed :class:`WaterMask` of this frame: the best matching view's polygons mapped into it; None when
        no view matches (then nothing may be dropped)."""
        found = self.register(image)
        if found is None:
            return None
        view, m = found
        # a similarity maps a valid polygon to a valid polygon: the fixed camera's mask of the mapped rings
        mapped = [ring @ m[:2, :2].T + m[:2, 2] for ring in view.polygons_px]
        fixed = WaterMask.from_pixels(mapped, self.margin_px)
        return WaterMask(fixed.water, fixed.margin_px, self.labels)

    def keep(self, dets: Detections, image: np.ndarray) -> np.ndarray:
        """``(N,) bool``: detections to keep (non-vessels; vessels on the registered view's water, as the fixed
        :class:`WaterMask` of the mapped polygons decides; everything when no view matches)."""
        n = len(dets)
        if not n or not np.isin(dets.label, self.labels).any():
            return np.ones(n, bool)
        mask = self.frame_mask(image)
        return np.ones(n, bool) if mask is None else mask.keep(dets)
