"""Drone end to end with the REAL detector: MAVLink telemetry + rendered frames of real boat photos -> the
provisioned COCO model -> tracking -> geo zones -> vessel_in_zone events, checked against the known lat/lon.

The simulator flies a patrol leg (uploaded over MAVLink, gimbal pitch set by a mission item) over boats cut from
labelled real photos (``../shared/media/A_boats``, read in place) and laid on the rendered sea at known
positions; the pipeline opens the MAVLink link itself, as for a live drone. The first tests need neither media
nor models: they pin down where and how big the renderer draws a sprite.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest

from conftest import onnx_model
from seawatch.drone.geometry import CameraIntrinsics, CameraPose, GeoLocator, latlon_to_offsets, offsets_to_latlon
from seawatch.drone.sim import SimTarget, Sprite, render_frame, sprite_from_manifest
from seawatch.errors import InputError
from conftest import free_udp_port as _free_port

cv2 = pytest.importorskip("cv2")
log = logging.getLogger(__name__)

HOME = (54.0, 7.0, 0.0)


def _dist_m(lat0, lon0, lat1, lon1) -> float:
    n, e = latlon_to_offsets(lat0, lon0, lat1, lon1)
    return float(math.hypot(n[0], e[0]))


def _square_lonlat(lat, lon, half_m):
    la, lo = offsets_to_latlon(lat, lon, [-half_m, -half_m, half_m, half_m], [-half_m, half_m, half_m, -half_m])
    return [[float(a), float(b)] for a, b in zip(lo, la)]


def _arrow_sprite(w: int = 120, h: int = 40) -> Sprite:
    """A synthetic 'boat': white hull with a black bow (right end) on a transparent background."""
    bgr = np.zeros((h, w, 3), np.uint8)
    bgr[:] = (250, 250, 250)
    bgr[:, int(0.8 * w):] = (0, 0, 0)
    alpha = np.ones((h, w), np.float32)
    return Sprite(bgr, alpha, "synthetic")


def _white_mask(img: np.ndarray) -> np.ndarray:
    return (img.min(axis=2) > 200)


def _black_mask(img: np.ndarray) -> np.ndarray:
    return img.max(axis=2) < 25


# ----------------------------------------------------------------------------------- renderer (no media)


@pytest.mark.parametrize("heading_deg", [90.0, 0.0, 30.0])
def test_sprite_drawn_at_its_position_with_true_size_and_heading(heading_deg):
    """Nadir view, north up: the sprite's centre is where ``project`` puts the target, its length in pixels is
    ``length_m * f / altitude``, and its bow (black end) points along the heading."""
    k = CameraIntrinsics.from_fov(640, 480, 60.0)
    alt = 60.0
    la, lo = offsets_to_latlon(HOME[0], HOME[1], 6.0, -4.0)
    tg = SimTarget("b", float(la[0]), float(lo[0]), sprite=_arrow_sprite(), length_m=18.0, heading_deg=heading_deg,
                   shadow=False)
    pose = CameraPose(HOME[0], HOME[1], alt, gimbal_pitch_deg=-90.0, gimbal_frame="horizon")
    img = render_frame(pose, k, [tg], HOME[:2])
    obj = _white_mask(img) | _black_mask(img)
    ys, xs = np.nonzero(obj)
    px, inside = GeoLocator(k).project(tg.lat_deg, tg.lon_deg, 0.0, pose)
    assert inside[0]
    assert np.hypot(xs.mean() + 0.5 - px[0, 0], ys.mean() + 0.5 - px[0, 1]) < 1.5
    # extent along the heading (image: north = up, east = right)
    hd = math.radians(heading_deg)
    along = (xs + 0.5 - px[0, 0]) * math.sin(hd) - (ys + 0.5 - px[0, 1]) * math.cos(hd)
    across = (xs + 0.5 - px[0, 0]) * math.cos(hd) + (ys + 0.5 - px[0, 1]) * math.sin(hd)
    want_len_px = 18.0 * k.fx_px / alt
    assert along.max() - along.min() == pytest.approx(want_len_px, abs=2.5)
    assert across.max() - across.min() == pytest.approx(want_len_px * 40 / 120, abs=2.5)
    # the bow is at the heading end
    by, bx = np.nonzero(_black_mask(img))
    bow_along = (bx + 0.5 - px[0, 0]) * math.sin(hd) - (by + 0.5 - px[0, 1]) * math.cos(hd)
    assert bow_along.mean() > 0.3 * want_len_px


def test_sprite_shadow_alpha_and_oblique_perspective():
    k = CameraIntrinsics.from_fov(640, 480, 60.0)
    la, lo = offsets_to_latlon(HOME[0], HOME[1], 80.0, 0.0)
    sp = _arrow_sprite()
    # a transparent hole in the middle of the hull: the sea shows through
    alpha = sp.alpha.copy()
    alpha[15:25, 50:70] = 0.0
    holed = Sprite(sp.bgr, alpha, "holed")
    pose = CameraPose(HOME[0], HOME[1], 60.0, gimbal_pitch_deg=-36.87, gimbal_frame="horizon")  # looks at 80 m north
    with_shadow = render_frame(pose, k, [SimTarget("b", float(la[0]), float(lo[0]), sprite=holed, length_m=16.0)], HOME[:2])
    no_shadow = render_frame(pose, k, [SimTarget("b", float(la[0]), float(lo[0]), sprite=holed, length_m=16.0,
                                                 shadow=False)], HOME[:2])
    sea = render_frame(pose, k, [], HOME[:2])
    px, _ = GeoLocator(k).project(float(la[0]), float(lo[0]), 0.0, pose)
    cx, cy = int(px[0, 0]), int(px[0, 1])
    # the hole is sea (same as no target at all), the hull around it is white
    assert np.abs(no_shadow[cy, cx].astype(int) - sea[cy, cx].astype(int)).max() <= 1
    assert _white_mask(no_shadow).sum() > 200
    # the shadow only darkens the sea, a little, and only near the boat
    diff = sea.astype(int).sum(axis=2) - with_shadow.astype(int).sum(axis=2)
    darker = (diff > 5) & ~_white_mask(with_shadow) & ~_black_mask(with_shadow)
    assert darker.sum() > 20
    ys, xs = np.nonzero(darker)
    assert np.hypot(xs - cx, ys - cy).max() < 120
    # oblique view: 16 m along east-west at 100 m slant range; 16 * 40 / 120 m north-south, foreshortened by sin(36.87)
    obj = _white_mask(no_shadow) | _black_mask(no_shadow)
    ys, xs = np.nonzero(obj)
    slant = 100.0
    assert xs.max() - xs.min() + 1 == pytest.approx(16.0 * k.fx_px / slant, abs=2.5)
    assert ys.max() - ys.min() + 1 == pytest.approx(16.0 / 3 * 0.6 * k.fy_px / slant, abs=2.5)


def test_discs_stay_the_default_and_bad_targets_are_input_errors():
    tg = SimTarget("d", HOME[0], HOME[1])
    assert tg.sprite is None and tg.footprint_m == (4.0, 4.0)
    with pytest.raises(InputError, match="length_m"):
        SimTarget("b", HOME[0], HOME[1], sprite=_arrow_sprite())
    with pytest.raises(InputError, match="length_m"):
        SimTarget("b", HOME[0], HOME[1], sprite=_arrow_sprite(), length_m=-3.0)
    with pytest.raises(InputError, match="Sprite"):
        SimTarget("b", HOME[0], HOME[1], sprite=np.zeros((4, 4, 3), np.uint8), length_m=3.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="lat/lon"):
        SimTarget("b", 95.0, 7.0)
    with pytest.raises(InputError, match="alpha"):
        Sprite(np.zeros((10, 20, 3), np.uint8), np.ones((10, 21), np.float32))
    with pytest.raises(InputError, match="alpha"):
        Sprite(np.zeros((10, 20, 3), np.uint8), np.full((10, 20), 2.0, np.float32))
    with pytest.raises(InputError, match="uint8"):
        Sprite(np.zeros((10, 20, 3), np.float32), np.ones((10, 20), np.float32))
    photo = np.zeros((50, 80, 3), np.uint8)
    with pytest.raises(InputError, match="smaller than 4x4"):
        Sprite.from_box(photo, (10, 10, 12, 30))
    with pytest.raises(InputError, match="4 numbers"):
        Sprite.from_box(photo, (10, 10, 30))
    with pytest.raises(InputError, match="mask"):
        Sprite.from_box(photo, (10, 10, 40, 30), mask="magic")


def test_sprite_from_manifest_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="MANIFEST.json: cannot read"):
        sprite_from_manifest(tmp_path, "A_boats/x.jpg")
    (tmp_path / "MANIFEST.json").write_text(
        '[{"file": "A/x.jpg", "ground_truth": {"label_file": "A/x.txt", "label_classes": {"0": "human", "2": "sea (watercraft)"}}},'
        ' {"file": "A/y.jpg", "ground_truth": {}}]')
    (tmp_path / "A").mkdir()
    cv2.imwrite(str(tmp_path / "A" / "x.jpg"), np.full((60, 100, 3), 90, np.uint8))
    (tmp_path / "A" / "x.txt").write_text("2 0.5 0.5 0.4 0.3\n0 0.1 0.1 0.05 0.05\n")
    with pytest.raises(InputError, match="no such entry"):
        sprite_from_manifest(tmp_path, "A/z.jpg")
    with pytest.raises(InputError, match="label_file"):
        sprite_from_manifest(tmp_path, "A/y.jpg")
    with pytest.raises(InputError, match="box index 1 out of range \\(1 watercraft"):
        sprite_from_manifest(tmp_path, "A/x.jpg", 1)
    sp = sprite_from_manifest(tmp_path, "A/x.jpg", 0)  # a flat grey photo: GrabCut finds nothing, the box is used
    assert sp.bgr.shape == (18, 40, 3) and sp.alpha[9, 20] == 1.0 and sp.alpha[0, 0] < 0.5
    (tmp_path / "A" / "x.txt").write_text("2 0.5 oops 0.4 0.3\n")
    with pytest.raises(InputError, match="x.txt line 1 is not a YOLO row"):
        sprite_from_manifest(tmp_path, "A/x.jpg")


# ------------------------------------------------------------------------------- real photos + real model

# (manifest image, box index by size, length on the water m, north m, east m of home): boats the COCO model
# finds when drawn 90-190 px long and upright in the image (see drone/README.md for what fails)
BOATS = [
    ("A_boats/shore_dlwkigk3_720_2022-07-19_09-58_output_0.jpg", 0, 20.0, 35.0, -12.0),
    ("A_boats/shore_dlwkigk3_720_2022-07-19_06-28_output_0.jpg", 1, 18.0, 70.0, 10.0),
    ("A_boats/shore_proylddb_1080_2022-07-17_09-56_output_0.jpg", 0, 24.0, 105.0, -5.0),
]
EMPTY_NE = (52.0, 32.0)  # a patch of sea in view with no boat
ALT_M = 80.0
GIMBAL_PITCH_DEG = -70.0
SPEED_M_S = 8.0
START_N_M, END_N_M = -15.0, 140.0
HFOV_DEG = 60.0


def test_real_boat_sprites_are_cut_from_their_label_boxes(shared_media):
    for image_file, index, *_ in BOATS:
        sp = sprite_from_manifest(shared_media, image_file, index)
        photo = cv2.imread(str(shared_media / image_file))
        assert sp.bgr.shape[2] == 3 and 40 <= sp.bgr.shape[1] <= photo.shape[1]
        # GrabCut kept the boat (a good share of the box), not the whole box, and feathered nothing to NaN
        assert 0.25 < float(sp.alpha.mean()) < 0.8, (image_file, float(sp.alpha.mean()))
        h, w = sp.alpha.shape
        assert sp.alpha[h // 3:2 * h // 3 + 1, w // 3:2 * w // 3 + 1].mean() > sp.alpha.mean()
    # the same cut twice (seeded GrabCut)
    a = sprite_from_manifest(shared_media, BOATS[0][0], BOATS[0][1])
    b = sprite_from_manifest(shared_media, BOATS[0][0], BOATS[0][1])
    assert np.array_equal(a.alpha, b.alpha)


class _Recording:
    """A detector passed through, keeping the last frame's detections."""

    def __init__(self, det) -> None:
        self.det = det
        self.name, self.labels = det.name, det.labels
        self.last = None

    def detect(self, images):
        out = self.det.detect(images)
        self.last = out[-1]
        return out


@pytest.mark.slow
@pytest.mark.models
def test_patrol_over_real_boat_sprites_raises_geotagged_vessel_events(shared_media):
    pytest.importorskip("pymavlink")
    onnx_model("coco_yolov5n")
    from seawatch.drone import mission as M
    from seawatch.drone.sim import SimVehicle
    from seawatch.vision.detector import load_detector
    from seawatch.vision.events import MemorySink
    from seawatch.vision.pipeline import Pipeline, load_pipeline_config

    targets = []
    for i, (image_file, index, length_m, n, e) in enumerate(BOATS):
        la, lo = offsets_to_latlon(HOME[0], HOME[1], n, e)
        targets.append(SimTarget(f"boat{i}", float(la[0]), float(lo[0]),
                                 sprite=sprite_from_manifest(shared_media, image_file, index), length_m=length_m,
                                 heading_deg=90.0))
    ela, elo = offsets_to_latlon(HOME[0], HOME[1], *EMPTY_NE)
    port = _free_port()
    camera = CameraIntrinsics.from_fov(640, 480, HFOV_DEG)
    sim = SimVehicle(f"udpout:127.0.0.1:{port}", home=HOME, telemetry_hz=20.0, camera=camera, targets=targets,
                     gimbal_pitch_deg=-90.0)  # the patrol's mission item turns the gimbal to GIMBAL_PITCH_DEG
    sim.h, sim.armed, sim.mode, sim.n = ALT_M, True, "GUIDED", START_N_M  # airborne: only the patrol leg is flown
    sim.guided_target = (sim.n, 0.0, ALT_M)
    zone_rule = {"type": "vessel_in_zone", "min_duration_s": 1.0, "end_after_s": 2.0}
    zones = [{"id": t.name, "source": "d1-cam", "polygon_lonlat": _square_lonlat(t.lat_deg, t.lon_deg, 15.0),
              "rules": [zone_rule]} for t in targets]
    zones.append({"id": "empty", "source": "d1-cam", "polygon_lonlat": _square_lonlat(float(ela[0]), float(elo[0]), 10.0),
                  "rules": [zone_rule]})
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "d1-cam", "url": "udp://0.0.0.0:5600", "models": ["coco_yolov5n"]}],
        "drones": [{"id": "d1", "connection": f"udpin:127.0.0.1:{port}", "video_source": "d1-cam",
                    "camera": {"width_px": 640, "height_px": 480, "hfov_deg": HFOV_DEG}, "max_pose_age_s": 0.5,
                    "sigmas": {"attitude_deg": 0.3, "horizontal_m": 0.5, "vertical_m": 0.3, "timing_s": 0.01}}],
        "zones": zones,
    })
    sink = MemorySink()
    # the pipeline's own detector (the registry's model, loaded as the pipeline loads it), remembering its answers
    detector = _Recording(load_detector("coco_yolov5n", conf=cfg.tracker.low_confidence))
    sim.start()
    pipe = Pipeline(cfg, [sink], detectors={"coco_yolov5n": detector})
    t_start = time.monotonic()
    try:
        pipe.start(link_timeout_s=5.0)
        link = pipe.links["d1"]
        leg = M.points([tuple(np.ravel(offsets_to_latlon(HOME[0], HOME[1], END_N_M, 0.0)))], alt_m=ALT_M)
        mc = M.MissionClient(link)
        mc.upload(M.to_mission_items(leg, home=HOME, speed_m_s=SPEED_M_S, gimbal_pitch_deg=GIMBAL_PITCH_DEG,
                                     return_to_launch=False))
        mc.start()
        link.wait_until(lambda s: (s.velocity_ned_m_s or (0, 0, 0))[0] > SPEED_M_S - 1.0, 10.0, "cruise north")
        frames = []
        deadline = time.monotonic() + 1.5 * (END_N_M - START_N_M) / SPEED_M_S
        while time.monotonic() < deadline and sim.n < END_N_M - 5.0:
            t0 = time.monotonic()
            frames.append(sim.capture())
            time.sleep(max(0.0, 0.3 - (time.monotonic() - t0)))
        time.sleep(0.3)  # the telemetry after the last frame
        flown_s = time.monotonic() - t_start
        events = []
        located: list[tuple[float, int]] = []  # per detection: (error of its box centre to the nearest boat, boat)
        strays = []
        truth_lat = np.array([t.lat_deg for t in targets])
        truth_lon = np.array([t.lon_deg for t in targets])
        t_det = time.monotonic()
        for capture_ns, img, truth_pose in frames:
            assert abs(truth_pose.gimbal_pitch_deg - GIMBAL_PITCH_DEG) < 1e-6
            evs = pipe.process("d1-cam", capture_ns, img)
            events += evs
            loc = pipe.locator_for("d1-cam", capture_ns)
            assert not loc.stale, loc.reason
            dets = detector.last
            dets = dets[(dets.label == "vessel") & (dets.confidence >= 0.3)]
            if len(dets) == 0:
                continue
            b = dets.xyxy_px.astype(np.float64)
            res = loc.locate(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1))
            # a boat cut by the image border has a box centre off its own: kept for the stray check only
            whole = (b[:, 0] > 2) & (b[:, 1] > 2) & (b[:, 2] < camera.width_px - 2) & (b[:, 3] < camera.height_px - 2)
            for (lat, lon, _), in_view in zip(res, whole):
                dn, de = latlon_to_offsets(lat, lon, truth_lat, truth_lon)
                d = np.hypot(dn, de)
                j = int(np.argmin(d))
                if d[j] >= 15.0:
                    strays.append((float(d[j]), j))
                elif in_view:
                    located.append((float(d[j]), j))
        events += pipe.close()
        detect_s = time.monotonic() - t_det
    finally:
        pipe.stop()
        sim.stop()
    assert len(frames) >= 30, len(frames)
    assert sink.events == events

    # nothing seen where there is no boat: every vessel detection lies on one of the boats
    assert not strays, f"vessel detections away from every boat (m): {strays}"
    per_boat = np.bincount([j for _, j in located], minlength=len(targets))
    assert (per_boat >= 5).all(), per_boat
    centre_err = np.array([d for d, _ in located])

    # one incident per boat zone, none in the empty zone
    starts = [e for e in events if e.phase == "start"]
    assert sorted(e.zone_id for e in starts) == sorted(t.name for t in targets), [e.zone_id for e in starts]
    assert all(e.type == "vessel_in_zone" and "vessel" in e.labels for e in starts)
    # every event's position: the rules locate the box's bottom centre, which here (camera looking north, boats
    # lying east-west) is on the hull's southern half: up to half its width south of the true centre, and east-west
    # on it within the uncertainty and the detector's box error
    ev_err, ev_dn, ev_de = [], [], []
    for e in events:
        if e.zone_id not in {t.name for t in targets} or e.phase == "end" and e.geo is None:
            continue
        assert e.geo is not None, (e.zone_id, e.phase, e.geo_reason)
        t = next(t for t in targets if t.name == e.zone_id)
        err = _dist_m(t.lat_deg, t.lon_deg, e.geo.lat_deg, e.geo.lon_deg)
        dn, de = latlon_to_offsets(t.lat_deg, t.lon_deg, e.geo.lat_deg, e.geo.lon_deg)
        half_width = 0.5 * t.footprint_m[1]
        tol = 2.0 + 3 * e.geo.semi_major_m
        assert -half_width - tol <= dn[0] <= tol and abs(de[0]) <= tol, (e.zone_id, e.phase, float(dn[0]), float(de[0]),
                                                                       half_width, e.geo)
        assert 0 < e.geo.semi_major_m < 3.0
        assert e.attributes["geo_reference"] == "drone_pose"
        # the pose the position came from carries the gimbal pitch the mission set over MAVLink (end events too,
        # though their position was located in an earlier frame than their own)
        assert "geo_pose" in e.attributes, (e.zone_id, e.phase, e.attributes)
        assert abs(e.attributes["geo_pose"]["gimbal_pitch_deg"] - GIMBAL_PITCH_DEG) < 0.5
        ev_err.append(err)
        ev_dn.append(float(dn[0]))
        ev_de.append(float(de[0]))
    log.info("drone e2e: %d frames in %.1f s flight, detection+pipeline %.1f s; whole-boat detections per boat %s; "
             "box-centre geolocation error median %.2f m, max %.2f m; %d event positions (box bottom centre) vs boat "
             "centre median %.2f m, max %.2f m (north %.1f..%.1f m, east %.1f..%.1f m)",
             len(frames), flown_s, detect_s, per_boat.tolist(), np.median(centre_err), centre_err.max(),
             len(ev_err), np.median(ev_err), max(ev_err), min(ev_dn), max(ev_dn), min(ev_de), max(ev_de))
    # the geotag chain itself: a detected box's centre lands on the boat's true position within a few metres
    assert np.median(centre_err) < 1.5 and centre_err.max() < 4.0, centre_err
