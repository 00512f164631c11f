"""The site's water areas (WGS84) for geo-referenced sources: vessel boxes on land or in the sky are dropped.

Geometry is exact: a surveyed fixed camera and a drone pose project known ground points to pixels (the same
``GeoLocator`` the product locates with), and boxes are put with their waterline (bottom centre) on those pixels.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from seawatch.drone.config import CalibrationConfig
from seawatch.drone.geometry import CameraIntrinsics, CameraPose, GeoLocator, latlon_to_offsets, offsets_to_latlon
from seawatch.errors import ConfigError
from seawatch.vision.config import WaterAreasConfig
from seawatch.vision.detections import Detections
from seawatch.vision.events import MemorySink
from seawatch.vision.geo import FrameLocator
from seawatch.vision.pipeline import Pipeline, load_pipeline_config
from seawatch.vision.zones import read_water_geojson

T0_NS = 1_767_225_600 * 10**9
CAM = (53.55, 8.58)
PAN_DEG = 30.0
CALIB = {
    "camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 60.0},
    "surveyed": {"lat_deg": CAM[0], "lon_deg": CAM[1], "alt_m": 20.0, "pan_deg": PAN_DEG, "tilt_deg": -10.0},
}


def _ahead(fwd_m: float, right_m: float = 0.0, origin=CAM, heading_deg: float = PAN_DEG) -> tuple[float, float]:
    """(lat, lon) of a point ``fwd_m`` ahead and ``right_m`` to the right of a camera looking at ``heading_deg``."""
    c, s = math.cos(math.radians(heading_deg)), math.sin(math.radians(heading_deg))
    la, lo = offsets_to_latlon(origin[0], origin[1], fwd_m * c - right_m * s, fwd_m * s + right_m * c)
    return float(la[0]), float(lo[0])


def _ring(points_fwd_right, **kw) -> list[list[float]]:
    return [[lo, la] for la, lo in (_ahead(f, r, **kw) for f, r in points_fwd_right)]


# The basin: from 100 m to 400 m ahead, 60 m either side; land (the quay) nearer than 100 m and beside it.
BASIN = _ring([(100, -60), (100, 60), (400, 60), (400, -60)])
PIER = _ring([(200, -10), (200, 10), (300, 10), (300, -10)])  # a pier reaching into the basin (a hole)


def _camera():
    cam = CalibrationConfig.model_validate(CALIB).build()
    return cam, FrameLocator(cam.locate, None, "calibration")


def _pixel(cam, lat, lon) -> tuple[float, float]:
    px, inside = cam.locator.project(lat, lon, 0.0, cam.pose)
    assert inside[0]
    return float(px[0, 0]), float(px[0, 1])


def _boxes(waterlines, labels=None) -> Detections:
    """Boxes 40 x 20 px whose bottom centre is each waterline pixel; label ids index ``("vessel", "person")``."""
    xy = np.asarray(waterlines, np.float32).reshape(-1, 2)
    xyxy = np.column_stack([xy[:, 0] - 20, xy[:, 1] - 20, xy[:, 0] + 20, xy[:, 1]])
    ids = np.asarray(labels if labels is not None else [0] * len(xy), np.int32)
    return Detections(xyxy, np.full(len(xy), 0.9, np.float32), ids, ("vessel", "person"), model="boxes")


def test_vessels_on_land_and_in_the_sky_are_dropped_the_rest_kept():
    cam, loc = _camera()
    mask = WaterAreasConfig(polygons_lonlat=(BASIN,)).build()
    water = _pixel(cam, *_ahead(250, -30))
    quay = _pixel(cam, *_ahead(60, 0))  # 40 m short of the basin: land
    moored = _pixel(cam, *_ahead(95, 30))  # 5 m short of the edge: a hull against the quay wall (margin 10 m)
    beside = _pixel(cam, *_ahead(200, 100))  # 40 m off the basin's side
    sky = (640.0, 40.0)  # the horizon is near y = 165 for a 10 deg tilt
    keep = mask.keep(_boxes([water, quay, moored, beside, sky]), loc)
    assert keep.tolist() == [True, False, True, False, False]
    # a person on the quay is no vessel: the mask leaves other labels alone
    assert mask.keep(_boxes([quay, sky], labels=[1, 1]), loc).tolist() == [True, True]
    # no locator (the source is not geo-referenced) or a frame without a pose: nothing dropped on a guess
    assert mask.keep(_boxes([quay, sky]), None).tolist() == [True, True]
    stale = FrameLocator(None, "no pose: telemetry 3.0 s old", "drone_pose")
    assert mask.keep(_boxes([quay, sky]), stale).tolist() == [True, True]


def test_the_horizon_margin_keeps_a_hull_on_the_horizon_and_the_margins_are_metres():
    cam, loc = _camera()
    # the first image row (going up) that no longer reaches the sea, in the middle column
    rows = np.arange(300, 100, -1, dtype=np.float64)
    hits = np.isfinite(loc.locate(np.column_stack([np.full(rows.size, 640.0), rows]))[:, 0])
    horizon_y = float(rows[np.argmin(hits)])
    assert hits[0] and not hits.all() and 140 < horizon_y < 190
    just_above, well_above = (640.0, horizon_y - 4), (640.0, horizon_y - 40)
    open_sea = WaterAreasConfig().build()  # no polygons: all water below the horizon
    assert open_sea.keep(_boxes([just_above, well_above]), loc).tolist() == [True, False]
    strict = WaterAreasConfig(horizon_margin_px=0).build()
    assert strict.keep(_boxes([just_above]), loc).tolist() == [False]
    # open sea: the quay 60 m ahead is "water" too, only the sky goes
    assert open_sea.keep(_boxes([_pixel(cam, *_ahead(60))]), loc).tolist() == [True]
    # margin in metres: 40 m short of the basin passes with a 50 m margin, not with 30 m
    quay = _pixel(cam, *_ahead(60))
    assert WaterAreasConfig(polygons_lonlat=(BASIN,), margin_m=50, sigma_k=0).build().keep(_boxes([quay]), loc)[0]
    assert not WaterAreasConfig(polygons_lonlat=(BASIN,), margin_m=30, sigma_k=0).build().keep(_boxes([quay]), loc)[0]


def test_position_error_widens_the_margin():
    cam, _ = _camera()
    quay = _pixel(cam, *_ahead(60))
    mask = WaterAreasConfig(polygons_lonlat=(BASIN,), margin_m=10, sigma_k=2).build()

    class Sloppy:  # the Locator protocol: lat, lon, 1-sigma metres; a pose known to 25 m
        def __init__(self, sigma_m):
            self.sigma_m = sigma_m

        def locate(self, xy_px):
            rows = cam.locate(np.asarray(xy_px, np.float64))
            return np.column_stack([rows.lat_deg, rows.lon_deg, np.full(len(rows), self.sigma_m)])

    assert mask.keep(_boxes([quay]), Sloppy(25.0)).tolist() == [True]  # 40 m <= 10 + 2 x 25
    assert mask.keep(_boxes([quay]), Sloppy(5.0)).tolist() == [False]
    assert mask.keep(_boxes([quay]), Sloppy(np.inf)).tolist() == [True]  # unbounded error: cannot tell, keep


def test_geojson_water_with_a_pier_hole_and_bad_files(tmp_path):
    cam, loc = _camera()
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"natural": "water"}, "geometry": {"type": "Polygon", "coordinates": [BASIN, PIER]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": BASIN[0]}},  # skipped
    ]}
    path = tmp_path / "harbour-water.geojson"
    path.write_text(json.dumps(doc))
    mask = WaterAreasConfig(geojson=str(path), margin_m=5, sigma_k=0).build()
    on_pier = _pixel(cam, *_ahead(250, 0))
    by_pier = _pixel(cam, *_ahead(250, -35))
    assert mask.keep(_boxes([on_pier, by_pier]), loc).tolist() == [False, True]

    (tmp_path / "broken.geojson").write_text('{"type": "FeatureCollection", "features": [')
    (tmp_path / "points.geojson").write_text(json.dumps({"type": "Point", "coordinates": [8.5, 53.5]}))
    (tmp_path / "bowtie.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[8.0, 53.0], [8.1, 53.1], [8.1, 53.0], [8.0, 53.1], [8.0, 53.0]]]}))
    for name, words in (("broken", "cannot read GeoJSON"), ("points", "no Polygon"), ("bowtie", "invalid"),
                        ("missing", "cannot read")):
        with pytest.raises(ConfigError, match=words) as err:
            read_water_geojson(tmp_path / f"{name}.geojson")
        assert f"{name}.geojson" in str(err.value)
    # in a pipeline config it is a config error naming the field, before anything starts
    with pytest.raises(ConfigError, match=r"config: water_areas: .*cannot read GeoJSON") as err:
        load_pipeline_config(None, {"water_areas": {"geojson": str(tmp_path / "broken.geojson")}})
    assert "broken.geojson" in str(err.value)
    with pytest.raises(ConfigError, match="lon, lat"):
        load_pipeline_config(None, {"water_areas": {"polygons_lonlat": [[[853.5, 8.5], [853.6, 8.5], [853.6, 8.6]]]}})


def _run(cfg, boxes) -> list:
    from test_pipeline_geo import BoxDetector

    det = BoxDetector()
    det.boxes = boxes
    sink = MemorySink()
    pipe = Pipeline(cfg, [sink], detectors={"boxes": det})
    image = np.zeros((720, 1280, 3), np.uint8)
    events = []
    for k in range(8):
        events += pipe.process("quay", T0_NS + k * 500_000_000, image)
    events += pipe.close(T0_NS + 8 * 500_000_000)
    return events


@pytest.mark.parametrize("use_mask", [True, False])
def test_pipeline_raises_no_vessel_event_for_a_box_on_land(use_mask):
    cam, _ = _camera()
    x, y = _pixel(cam, *_ahead(60, 0))  # on the quay
    wx, wy = _pixel(cam, *_ahead(250, -30))  # in the basin
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://x", "models": ["boxes"], "calibration": CALIB, "water_areas": use_mask}],
        "water_areas": {"polygons_lonlat": [BASIN]},
        "zones": [{"id": "all", "source": "quay", "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
    })
    events = _run(cfg, [(x - 30, y - 20, x + 30, y), (wx - 30, wy - 20, wx + 30, wy)])
    starts = [e for e in events if e.phase == "start" and e.type == "vessel_in_zone"]
    assert len(starts) == (1 if use_mask else 2)
    if use_mask:  # the one that stays is the basin's (located 190 m from the quay box)
        la, lo = _ahead(250, -30)
        n, e = latlon_to_offsets(la, lo, starts[0].geo.lat_deg, starts[0].geo.lon_deg)
        assert math.hypot(n[0], e[0]) < 60


def test_drone_mask_follows_the_pose():
    """The same pixel is water when the drone looks out over the basin and land when it turns to the shore."""
    k = CameraIntrinsics.from_fov(1280, 720, 70.0)
    geo = GeoLocator(k)
    mask = WaterAreasConfig(polygons_lonlat=(BASIN,), margin_m=5).build()
    at = _ahead(150, 0)  # over the basin, 50 m up, camera 20 deg below the horizon
    for yaw_deg, expect in ((PAN_DEG, True), (PAN_DEG + 180.0, False)):
        pose = CameraPose(at[0], at[1], 50.0, 0.0, 0.0, yaw_deg, 0.0, -20.0, 0.0, "horizon")
        loc = FrameLocator(lambda px, p=pose: geo.locate(px, p), None, "drone_pose")
        # a point 100 m ahead of the drone: inside the basin looking out, on land (behind the quay) looking back
        px, inside = geo.project(*_ahead(100, 0, origin=at, heading_deg=yaw_deg), 0.0, pose)
        assert inside[0]
        sky = (640.0, 100.0)
        assert mask.keep(_boxes([tuple(px[0]), sky]), loc).tolist() == [expect, False]


def test_drone_pipeline_drops_the_boat_on_land_and_the_one_in_the_sky():
    """A drone looking out to the horizon (simulator frames, pose from its telemetry timeline): a boat on the
    harbour water raises its event; a disc on land and a red blob in the sky do not, with the site's water given."""
    pytest.importorskip("cv2")
    from seawatch.drone.pose import AttitudeSample, PoseTimeline, PositionSample
    from seawatch.drone.sim import SimTarget, render_frame
    from test_pipeline_geo import RedBlobDetector

    home = (54.0, 7.0)
    camera = CameraIntrinsics.from_fov(640, 480, 70.0)
    alt_m, pitch_deg = 30.0, -12.0
    pose = CameraPose(home[0], home[1], alt_m, 0.0, 0.0, 0.0, 0.0, pitch_deg, 0.0, "horizon")
    timeline = PoseTimeline("drone-1", max_age_s=0.5, max_gap_s=1.0, default_gimbal=(0.0, pitch_deg, 0.0, "horizon"))
    for i in range(41):
        t_ns = T0_NS + i * 100_000_000
        timeline.add_position(PositionSample(t_ns, home[0], home[1], alt_m))
        timeline.add_attitude(AttitudeSample(t_ns, 0.0, 0.0, 0.0))
    # water: the basin north of the drone from 60 m out; the strip nearer than 60 m is the quay
    water = _ring([(60, -200), (60, 200), (600, 200), (600, -200)], origin=home, heading_deg=0.0)
    boat_la, boat_lo = _ahead(150, -20, origin=home, heading_deg=0.0)
    car_la, car_lo = _ahead(45, 15, origin=home, heading_deg=0.0)
    targets = [SimTarget("boat", boat_la, boat_lo, radius_m=3.0), SimTarget("car", car_la, car_lo, radius_m=3.0)]
    base = render_frame(pose, camera, targets, home)
    assert len(RedBlobDetector().detect([base])[0]) == 2
    frame = base.copy()
    frame[20:32, 300:316] = (0, 0, 255)  # a red blob in the sky (a balloon, a light): no waterline there
    locate = GeoLocator(camera)
    assert not np.isfinite(locate.locate(np.array([[308.0, 32.0]]), pose).lat_deg[0])  # it is above the horizon

    def run(use_mask: bool) -> list:
        cfg = load_pipeline_config(None, {
            "sources": [{"id": "drone-1-cam", "url": "udp://0.0.0.0:5600", "models": ["redblob"], "drone": "drone-1",
                         "water_areas": use_mask}],
            "drones": [{"id": "drone-1", "connection": "udp:127.0.0.1:1",
                        "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 70.0}}],
            "water_areas": {"polygons_lonlat": [water]},
            "zones": [{"id": "all", "source": "drone-1-cam", "rules": [{"type": "vessel_in_zone", "min_duration_s": 0.5}]}],
        })
        pipe = Pipeline(cfg, [], detectors={"redblob": RedBlobDetector()}, pose_timelines={"drone-1-cam": timeline})
        events = []
        for k in range(8):
            events += pipe.process("drone-1-cam", T0_NS + 500_000_000 + k * 250_000_000, frame)
        return [e for e in events if e.phase == "start"]

    masked = run(True)
    assert len(masked) == 1
    n, e = latlon_to_offsets(boat_la, boat_lo, masked[0].geo.lat_deg, masked[0].geo.lon_deg)
    assert math.hypot(n[0], e[0]) < 10  # the boat's, not the car's (95 m away)
    assert len(run(False)) == 3


# ------------------------------------------------------------------- cameras that pan: registered reference views

def _shore(shared_media, name):
    cv2 = pytest.importorskip("cv2")
    path = shared_media / "A_boats" / name
    if not path.is_file():
        pytest.fail(f"the shared media lost {path.name}")
    return cv2.imread(str(path))


W4_DAY1 = "shore_w4gnqsqx_1440_2022-07-16_11-26_output_0.jpg"
W4_DAY2 = "shore_w4gnqsqx_1440_2022-07-17_09-50_output_0.jpg"
OTHER_CAMERA = "shore_dlwkigk3_720_2022-07-19_06-28_output_0.jpg"


def test_view_mask_follows_a_pan_and_zoom_of_a_real_harbour_view(shared_media):
    """A real lake-harbour webcam frame is the reference (water below the horizon, y > 870 of 1080); the 'next'
    frame is the same view zoomed 1.1x and panned (a known homography). The mask registers it, maps the water
    into the new view, keeps the boat on the water and drops the box in the sky; another camera's frame and a
    black (night) frame match no view and keep everything."""
    cv2 = pytest.importorskip("cv2")
    from seawatch.vision.zones import ViewWaterMask

    ref = _shore(shared_media, W4_DAY1)
    h, w = ref.shape[:2]
    water = [[[0, 870], [w, 870], [w, h], [0, h]]]
    mask = ViewWaterMask.from_views([("preset-1", ref, water)], margin_px=4)
    s, dx, dy = 1.1, -60.0, 25.0
    known = np.array([[s, 0, (1 - s) * w / 2 + dx], [0, s, (1 - s) * h / 2 + dy], [0, 0, 1]])
    frame = cv2.warpPerspective(ref, known, (w, h))

    def to_frame(x, y):
        p = known @ np.array([x, y, 1.0])
        return p[0] / p[2], p[1] / p[2]

    found = mask.register(frame)
    assert found is not None and mask.last_view == "preset-1" and mask.last_inliers >= 25
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64).reshape(-1, 1, 2)
    err = cv2.perspectiveTransform(corners, found[1]) - cv2.perspectiveTransform(corners, known)
    assert np.abs(err).max() < 3.0  # the recovered pan/zoom is the applied one to within 3 px at the corners
    boat, sky, shore = to_frame(900, 960), to_frame(900, 400), to_frame(900, 845)  # shore: above the water line
    keep = mask.keep(_boxes([boat, sky, shore]), frame)
    assert keep.tolist() == [True, False, False]
    assert mask.keep(_boxes([boat, sky], labels=[1, 1]), frame).tolist() == [True, True]  # not vessels
    for other in (_shore(shared_media, OTHER_CAMERA), np.zeros_like(ref)):
        assert mask.keep(_boxes([sky]), other).tolist() == [True] and mask.last_view is None


def test_view_mask_registers_the_same_camera_a_day_later(shared_media):
    """The same webcam on the next morning (light, boats and its pan have changed) still registers to the
    reference view; a frame of another camera does not."""
    from seawatch.vision.zones import ViewWaterMask

    ref = _shore(shared_media, W4_DAY1)
    mask = ViewWaterMask.from_views([("preset-1", ref, [[[0, 870], [1920, 870], [1920, 1080], [0, 1080]]])])
    assert mask.register(_shore(shared_media, W4_DAY2)) is not None and mask.last_inliers >= 25
    assert mask.register(_shore(shared_media, OTHER_CAMERA)) is None


def test_water_views_config_errors(tmp_path, shared_media):
    cv2 = pytest.importorskip("cv2")
    ref = tmp_path / "preset1.jpg"
    cv2.imwrite(str(ref), _shore(shared_media, W4_DAY1))
    flat = tmp_path / "fog.png"
    cv2.imwrite(str(flat), np.full((720, 1280, 3), 128, np.uint8))
    good = {"reference": str(ref), "water": [[[0, 870], [1920, 870], [1920, 1080], [0, 1080]]]}
    cfg = load_pipeline_config(None, {"sources": [{"id": "ptz", "url": "x.mp4", "models": ["vessel"], "water_views": [good]}]})
    assert cfg.sources[0].water_views[0].reference == str(ref)
    cases = [
        ({"water_views": [{**good, "reference": str(tmp_path / "nope.jpg")}]}, "cannot be read"),
        ({"water_views": [{**good, "reference": str(flat)}]}, "too little texture"),
        ({"water_views": [{**good, "water": [[[0, 0], [10, 0]]]}]}, "at least 3"),
        ({"water_views": [good], "water": [[[0, 0], [10, 0], [10, 10]]]}, "not both"),
    ]
    for extra, words in cases:
        with pytest.raises(ConfigError, match=words):
            load_pipeline_config(None, {"sources": [{"id": "ptz", "url": "x.mp4", "models": ["vessel"], **extra}]})


def test_pipeline_with_water_views_raises_events_only_for_the_boat_on_the_water(tmp_path, shared_media):
    cv2 = pytest.importorskip("cv2")
    from test_pipeline_geo import BoxDetector

    ref_img = _shore(shared_media, W4_DAY1)
    ref = tmp_path / "preset1.jpg"
    cv2.imwrite(str(ref), ref_img)
    frame = cv2.warpAffine(ref_img, np.float32([[1, 0, -80], [0, 1, 30]]), (1920, 1080))  # the camera panned
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "ptz", "url": "x.mp4", "models": ["boxes"],
                     "water_views": [{"reference": str(ref), "water": [[[0, 870], [1920, 870], [1920, 1080], [0, 1080]]]}]}],
        "zones": [{"id": "all", "source": "ptz", "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
    })
    det = BoxDetector()
    det.boxes = [(800, 950, 900, 990), (800, 400, 900, 440)]  # waterline on the water (y 990 -> 960 in the reference); in the sky
    pipe = Pipeline(cfg, [], detectors={"boxes": det})
    events = []
    for k in range(6):
        events += pipe.process("ptz", T0_NS + k * 500_000_000, frame)
    starts = [e for e in events if e.phase == "start"]
    assert len(starts) == 1 and pipe.view_water["ptz"].last_view == "preset1.jpg"


# ------------------------------------------------------------------- tiles with no water are not looked at


def _coco_boats(tmp_path, monkeypatch):
    """The COCO model registered as a user model with only its boat class (`seawatch models register
    model.onnx --name coco_boats --labels boat=vessel`), in a throwaway cache: a vessel-only detector that CI has
    (the trained `vessel` model is a GPU build artefact)."""
    import argparse

    from conftest import onnx_model
    from seawatch.vision import cmd_models_register
    from seawatch.vision.detector import load_detector

    coco = onnx_model("coco_yolov5n")
    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    p = argparse.ArgumentParser()
    cmd_models_register.add_arguments(p)
    assert cmd_models_register.run(p.parse_args([str(coco), "--name", "coco_boats", "--labels", "boat=vessel"])) == 0
    det = load_detector("coco_boats")
    assert det.labels == ("vessel",)
    return det


def test_vessel_tiles_without_water_are_skipped_and_the_kept_vessels_do_not_change(tmp_path, shared_media,
                                                                                    monkeypatch):
    """A real vessel-only model (COCO's boat class), tiled at 640 + 288 px on a real lake-harbour frame whose
    water is the band below y 870: with a fixed `water` mask, and with `water_views` on the same view panned, the
    pipeline runs only the tiles that touch the water (and the whole frame) and keeps exactly the vessels that
    running every tile and then masking keeps."""
    cv2 = pytest.importorskip("cv2")
    from seawatch.vision.tiling import detect_tiled, tile_for

    det = _coco_boats(tmp_path, monkeypatch)
    crops = [0]
    plain_detect = det.detect

    def counting(images):
        crops[0] += len(images)
        return plain_detect(images)

    det.detect = counting
    img = _shore(shared_media, W4_DAY1)
    water = [[[0, 870], [1920, 870], [1920, 1080], [0, 1080]]]
    ref = tmp_path / "preset1.jpg"
    cv2.imwrite(str(ref), img)
    panned = cv2.warpAffine(img, np.float32([[1, 0, -80], [0, 1, 30]]), (1920, 1080))
    for source, frame in (({"water": water}, img),
                          ({"water_views": [{"reference": str(ref), "water": water}]}, panned)):
        cfg = load_pipeline_config(None, {"sources": [{"id": "cam", "url": "x.mp4", "models": ["coco_boats"],
                                                       "tile": "auto,288", **source}]})
        pipe = Pipeline(cfg, [], detectors={"coco_boats": det})
        crops[0] = 0
        got = pipe.detect("cam", frame)
        skipped_run = crops[0]
        crops[0] = 0
        every = detect_tiled(det, [frame], tile_for("auto,288", det))[0]
        everything_run = crops[0]
        mask = pipe.water["cam"] if "water" in source else pipe.view_water["cam"].frame_mask(frame)
        assert mask is not None  # the panned view registers
        want = every[mask.keep(every)]
        assert len(want) >= 3  # boats on the lake
        assert skipped_run < everything_run / 2
        # the same boxes; scores to within 0.02 (a crop batched with other neighbours is padded differently)
        assert len(got) == len(want)
        np.testing.assert_allclose(np.sort(got.xyxy_px, axis=0), np.sort(want.xyxy_px, axis=0), atol=2.0)
        np.testing.assert_allclose(np.sort(got.confidence), np.sort(want.confidence), atol=0.02)


def test_geo_water_skips_the_tiles_of_land_only_and_keeps_the_same_vessels():
    """A calibrated camera over the basin (1280 x 720; the quay fills the bottom of the image): tiled at 288 px,
    the vessel tiles that see only the quay are not run, and the vessels kept are those that running every tile
    and masking keeps: the disc on the basin, not the small disc on the quay; a frame without a pose runs all."""
    cv2 = pytest.importorskip("cv2")
    from seawatch.vision.detector import DetectorSettings
    from seawatch.vision.tiling import TileSpec, detect_tiled, tile_grid
    from test_pipeline_geo import RedBlobDetector

    class Counting(RedBlobDetector):
        settings = DetectorSettings(conf=0.25, iou=0.45, imgsz=640, max_det=300)

        def __init__(self):
            self.crops = 0

        def detect(self, images):
            self.crops += len(images)
            return super().detect(images)

    cam, loc = _camera()
    mask = WaterAreasConfig(polygons_lonlat=(BASIN,)).build()
    keep_tile = mask.tile_filter(loc, (720, 1280))
    grid = tile_grid(720, 1280, 288, 0.2)
    kept = [bool(keep_tile(t)) for t in grid]
    assert not all(kept) and any(kept)
    # the 8 px grid decides as a 2 px one does here, and a refused tile holds no waterline the mask keeps
    fine = mask.tile_filter(loc, (720, 1280), step_px=2.0)
    assert kept == [bool(fine(t)) for t in grid]
    basin_px, quay_px = _pixel(cam, *_ahead(250, -30)), _pixel(cam, *_ahead(50, 0))
    assert any(k and t[0] <= basin_px[0] < t[2] and t[1] <= basin_px[1] < t[3] for k, t in zip(kept, grid))
    assert not any(k and t[1] > quay_px[1] - 100 and t[3] >= 720 for k, t in zip(kept, grid))
    assert mask.tile_filter(FrameLocator(None, "no pose", "drone_pose"), (720, 1280)) is None

    frame = np.full((720, 1280, 3), 90, np.uint8)
    for (x, y), r in ((basin_px, 6), (quay_px, 3)):  # a 3 px disc: too small for the whole-frame pass
        cv2.circle(frame, (int(x), int(y) - r), r, (0, 0, 255), -1)
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://x", "models": ["blobs"], "calibration": CALIB, "tile": "288"}],
        "water_areas": {"polygons_lonlat": [BASIN]},
    })
    det = Counting()
    pipe = Pipeline(cfg, [], detectors={"blobs": det})
    got = pipe.detect("quay", frame, pipe.locator_for("quay", T0_NS))
    skipped_crops, det.crops = det.crops, 0
    every = detect_tiled(det, [frame], TileSpec(288))[0]
    assert det.crops == len(grid) + 1 and skipped_crops == sum(kept) + 1
    assert len(every) == 2  # both discs are found when every tile runs ...
    want = every[mask.keep(every, loc)]
    assert len(want) == 1 and got.xyxy_px.tolist() == want.xyxy_px.tolist()  # ... and masking keeps the basin's
    # no pose for this frame: nothing is dropped, every tile runs
    det.crops = 0
    stale = pipe.detect("quay", frame, FrameLocator(None, "no pose", "calibration"))
    assert det.crops == len(grid) + 1 and len(stale) == 2


# ------------------------------------------------------------------- known false alarms of a fixed camera


def test_ignore_area_drops_a_real_detection_there_and_nothing_else(tmp_path, shared_media, monkeypatch):
    """A real vessel-only model (COCO's boat class) on the real lake-harbour frame: an ignore area around one boat's
    waterline drops that boat and only it; an area that names another label drops nothing."""
    det = _coco_boats(tmp_path, monkeypatch)
    img = _shore(shared_media, W4_DAY1)
    base = {"id": "cam", "url": "x.mp4", "models": ["coco_boats"], "tile": "auto",
            "water": [[[0, 870], [1920, 870], [1920, 1080], [0, 1080]]]}
    every = Pipeline(load_pipeline_config(None, {"sources": [base]}), [], detectors={"coco_boats": det}).detect("cam", img)
    assert len(every) >= 3
    x1, y1, x2, y2 = (float(v) for v in every.xyxy_px[int(np.argmax(every.confidence))])
    cx = (x1 + x2) / 2
    around = [[cx - 6, y2 - 6], [cx + 6, y2 - 6], [cx + 6, y2 + 6], [cx - 6, y2 + 6]]  # the waterline, 12 px square
    for labels, dropped in ((["vessel"], 1), (["person"], 0)):
        cfg = load_pipeline_config(None, {"sources": [{**base, "ignore": [
            {"polygon_px": around, "labels": labels, "note": "fairway buoy"}]}]})
        got = Pipeline(cfg, [], detectors={"coco_boats": det}).detect("cam", img)
        assert len(got) == len(every) - dropped
        if dropped:
            kept = {tuple(np.round(b, 1)) for b in got.xyxy_px}
            assert tuple(np.round(np.float32([x1, y1, x2, y2]), 1)) not in kept


def test_ignored_buoy_raises_no_event_and_the_boat_beside_it_does():
    from test_pipeline_geo import BoxDetector

    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "x.mp4", "models": ["boxes"],
                     "ignore": [{"polygon_px": [[580, 380], [660, 380], [660, 420], [580, 420]]}]}],
        "zones": [{"id": "all", "source": "quay", "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
    })
    det = BoxDetector()
    det.boxes = [(600, 370, 640, 400), (700, 370, 760, 400)]  # the buoy (waterline 620, 400), a boat beside it
    pipe = Pipeline(cfg, [], detectors={"boxes": det})
    events = []
    for k in range(8):
        events += pipe.process("quay", T0_NS + k * 500_000_000, np.zeros((720, 1280, 3), np.uint8))
    starts = [e for e in events if e.phase == "start"]
    assert len(starts) == 1 and starts[0].snapshot.xyxy_px[0] == pytest.approx(700, abs=1)


@pytest.mark.parametrize("source,message", [
    ({"ignore": [{"polygon_px": [[0, 0], [10, 0]]}]}, "at least 3"),
    ({"ignore": [{"polygon_px": [[0, 0], [10, 0], [10, 10]], "labels": []}]}, "at least 1"),
    ({"ignore": [{"polygon_px": [[0, 0], [10, 0], [0, 10], [10, 10]]}]}, "ignore"),  # self-intersecting
    ({"ignore": [{"polygon_px": [[0, 0], [10, 0], [10, 10]], "colour": "red"}]}, "colour"),
    ({"ignore": [{"polygon_px": [[0, 0], [10, 0], [10, 10]]}], "drone": "d1"}, "fixed camera"),
])
def test_ignore_area_config_errors(source, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline_config(None, {"sources": [{"id": "cam", "url": "x.mp4", **source}]})
