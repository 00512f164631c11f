"""Zones: anchors per label, vectorised point tests, geo zones through a locator, overlap, bad polygons."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawatch.errors import ConfigError
from seawatch.vision.detections import Detections
from seawatch.vision.zones import Locator, Zone, anchor_points

LABELS = ("person", "vessel", "car", "fire")


def test_anchor_points_per_label_and_override():
    d = Detections(np.array([[0, 0, 10, 20], [0, 0, 10, 20], [100, 50, 140, 70], [0, 0, 4, 4]], np.float32),
                   np.full(4, 0.9), np.array([0, 1, 2, 3]), LABELS)
    np.testing.assert_allclose(anchor_points(d), [[5, 20], [5, 20], [120, 70], [2, 2]])  # a vessel at its waterline
    np.testing.assert_allclose(anchor_points(d, {"vessel": "bottom_centre", "person": "centre"})[:2], [[5, 10], [5, 20]])
    assert anchor_points(Detections.empty(LABELS)).shape == (0, 2)


SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]


@pytest.mark.parametrize(
    "pt, inside",
    [((50, 50), True), ((0, 50), True), ((100, 100), True), ((100.01, 50), False), ((-1, -1), False), ((np.nan, 5), False)],
)
def test_pixel_zone_contains_with_boundary_and_nan(pt, inside):
    z = Zone.from_pixels("sq", SQUARE)
    assert z.contains_px(np.array([pt])).tolist() == [inside]


def test_concave_zone_vectorised_and_closed_ring_accepted():
    # an L shape: the notch (75, 75) is outside
    z = Zone.from_pixels("L", [[0, 0], [100, 0], [100, 50], [50, 50], [50, 100], [0, 100], [0, 0]])
    pts = np.array([[25, 25], [75, 25], [25, 75], [75, 75]])
    assert z.contains_px(pts).tolist() == [True, True, True, False]
    assert z.contains_px(np.zeros((0, 2))).shape == (0,)
    assert Zone.whole_frame("all").contains_px(pts).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 150), st.floats(-50, 150)), min_size=1, max_size=30))
def test_pixel_zone_matches_the_rectangle_formula(points):
    pts = np.array(points)
    expected = (pts[:, 0] >= 0) & (pts[:, 0] <= 100) & (pts[:, 1] >= 0) & (pts[:, 1] <= 100)
    assert (Zone.from_pixels("sq", SQUARE).contains_px(pts) == expected).all()


class GridLocator:
    """pixel (x, y) -> lat = 54 - y * 1e-4, lon = 7 + x * 1e-4; NaN (sky) above y = 10."""

    def locate(self, xy_px):
        xy = np.asarray(xy_px, np.float64).reshape(-1, 2)
        out = np.stack([54 - xy[:, 1] * 1e-4, 7 + xy[:, 0] * 1e-4, np.full(len(xy), 3.0)], axis=1)
        out[xy[:, 1] < 10] = np.nan
        return out


def test_geo_zone_through_locator_and_inactive_without_one():
    z = Zone.from_lonlat("farm", [[7.001, 53.995], [7.005, 53.995], [7.005, 53.999], [7.001, 53.999]])
    assert isinstance(GridLocator(), Locator)
    pts = np.array([[30, 30], [5, 30], [30, 80], [30, 5]])  # in, west of it, south of it, sky
    assert z.contains_px(pts, GridLocator()).tolist() == [True, False, False, False]
    assert z.contains_px(pts, None).tolist() == [False] * 4
    assert z.contains_lonlat(np.array([7.003]), np.array([53.997])).tolist() == [True]
    with pytest.raises(ConfigError):
        Zone.from_pixels("p", SQUARE).contains_lonlat(np.array([0.0]), np.array([0.0]))


def test_overlap_fraction_of_boxes():
    z = Zone.from_pixels("sq", SQUARE)
    frac = z.overlap_fraction(np.array([[0, 0, 50, 50], [50, 0, 150, 100], [200, 200, 210, 210], [10, 10, 10, 20]]))
    np.testing.assert_allclose(frac, [1.0, 0.5, 0.0, 0.0])


@pytest.mark.parametrize(
    "vertices, geo, match",
    [
        ([[0, 0], [1, 1]], False, "at least 3"),
        ([[0, 0], [10, 10], [10, 0], [0, 10]], False, "invalid"),
        ([[0, 0], [1, 1], [2, 2]], False, "invalid|zero area"),
        ([[0, 0], [1, np.inf], [2, 0]], False, "finite"),
        ([[0, 0, 0], [1, 1, 1], [2, 0, 0]], False, "pairs"),
        ([[0, 95], [1, 95], [1, 96]], True, "lat in"),
        ([[179, 0], [-179, 0], [-179, 1]], True, "antimeridian"),
    ],
)
def test_bad_polygons_raise_config_errors_naming_the_zone(vertices, geo, match):
    with pytest.raises(ConfigError, match=match) as info:
        (Zone.from_lonlat if geo else Zone.from_pixels)("z7", vertices)
    assert "z7" in str(info.value)


def test_water_mask_drops_vessels_on_land_and_keeps_the_rest():
    from seawatch.vision.zones import WaterMask

    # water below y = 400 across a 1000 px wide frame; a quay (land) above
    mask = WaterMask.from_pixels([[[0, 400], [1000, 400], [1000, 700], [0, 700]]], margin_px=8)
    xyxy = np.array([
        [100, 350, 160, 420],   # hull in the water (bottom at 420)
        [300, 100, 310, 380],   # a mast on the quay (bottom at 380, 20 px above the water)
        [500, 360, 560, 395],   # moored against the quay wall: bottom 5 px above the edge, inside the margin
        [700, 200, 740, 300],   # a person on the quay: not a vessel, kept
    ], np.float32)
    dets = Detections(xyxy, np.full(4, 0.9, np.float32), np.array([0, 0, 0, 1], np.int32), ("vessel", "person"))
    assert mask.keep(dets).tolist() == [True, False, True, True]
    tight = WaterMask.from_pixels([[[0, 400], [1000, 400], [1000, 700], [0, 700]]], margin_px=0)
    assert tight.keep(dets).tolist() == [True, False, False, True]
    assert len(mask.keep(Detections.empty(("vessel",)))) == 0


@pytest.mark.parametrize("polys,margin,fragment", [
    ([], 8, "at least one polygon"),
    ([[[0, 0], [10, 0]]], 8, "at least 3"),
    ([[[0, 0], [10, 10], [10, 0], [0, 10]]], 8, "invalid"),
    ([[[0, 0], [10, 0], [10, 10]]], -1, "margin"),
])
def test_water_mask_rejects_bad_polygons(polys, margin, fragment):
    from seawatch.vision.zones import WaterMask

    with pytest.raises(ConfigError, match=fragment):
        WaterMask.from_pixels(polys, margin, "quay")
