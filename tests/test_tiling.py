"""Tiled inference: grid geometry, merging across tile edges, batching, and the gain on real small objects."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from conftest import onnx_model
from seawatch.vision.detections import Detections
from seawatch.vision.detector import DetectorSettings
from seawatch.vision.tiling import TileSpec, detect_tiled, merge_tiles, tile_grid, tile_starts


class BlobDetector:
    """Stands in for OnnxDetector: finds white blobs in each crop, like a model that needs ``min_side_px``
    pixels of an object after the crop is scaled to ``imgsz`` (small things vanish in a downscaled frame)."""

    def __init__(self, imgsz=640, min_side_px=6.0):
        self.name = "blob"
        self.labels = ("vessel",)
        self.settings = DetectorSettings(conf=0.25, iou=0.45, imgsz=imgsz, max_det=300)
        self.imgsz = imgsz
        self.min_side_px = min_side_px
        self.calls: list[int] = []

    def detect(self, images):
        self.calls.append(len(images))
        out = []
        for im in images:
            r = self.imgsz / max(im.shape[:2])
            n, _, stats, _ = cv2.connectedComponentsWithStats((im[:, :, 0] > 200).astype(np.uint8))
            s = stats[1:]
            ok = np.minimum(s[:, 2], s[:, 3]) * r >= self.min_side_px
            s = s[ok]
            xyxy = np.stack([s[:, 0], s[:, 1], s[:, 0] + s[:, 2], s[:, 1] + s[:, 3]], 1).astype(np.float32) \
                if len(s) else np.zeros((0, 4), np.float32)
            out.append(Detections(xyxy, np.full(len(s), 0.9, np.float32), np.zeros(len(s), np.int32), self.labels,
                                  None, self.name))
        return out


@pytest.mark.parametrize("length,size,overlap,want", [
    (1920, 640, 0.2, [0, 427, 853, 1280]),
    (1080, 640, 0.2, [0, 440]),
    (640, 640, 0.2, [0]),
    (500, 640, 0.2, [0]),
    (1280, 640, 0.0, [0, 640]),
])
def test_tile_starts(length, size, overlap, want):
    assert tile_starts(length, size, overlap).tolist() == want


@pytest.mark.parametrize("h,w,size,overlap", [(1080, 1920, 640, 0.2), (3000, 4000, 640, 0.3), (700, 641, 640, 0.1),
                                              (2160, 3840, 1024, 0.25)])
def test_tile_grid_covers_the_frame_with_overlap(h, w, size, overlap):
    grid = tile_grid(h, w, size, overlap)
    cover = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in grid:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 == min(size, w) and y1 - y0 == min(size, h)
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    xs = np.unique(grid[:, 0])
    if xs.size > 1:
        assert (np.diff(xs) <= size * (1 - overlap) + 1).all()  # neighbours share at least the overlap


def frame_with_blobs(h, w, boxes):
    img = np.zeros((h, w, 3), np.uint8)
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = 255
    return img


@pytest.mark.parametrize("full_frame", [True, False])
def test_object_across_a_tile_edge_is_one_whole_box(full_frame):
    # 1920x1080: tile x starts 0, 427, 853, 1280; a 100 px blob across the first tile's right edge (640)
    blob = (600, 300, 700, 360)
    img = frame_with_blobs(1080, 1920, [blob])
    det = BlobDetector(min_side_px=1)
    (out,) = detect_tiled(det, [img], TileSpec(640, 0.2, full_frame=full_frame))
    assert len(out) == 1
    assert out.xyxy_px[0] == pytest.approx(blob)
    assert out.labels == ("vessel",) and out.model == "blob"


def test_big_object_spanning_tiles_comes_from_the_full_frame():
    blob = (100, 100, 1800, 1000)  # no tile contains it whole
    img = frame_with_blobs(1080, 1920, [blob])
    (out,) = detect_tiled(BlobDetector(min_side_px=1), [img], TileSpec(640, 0.2, full_frame=True))
    assert len(out) == 1 and out.xyxy_px[0] == pytest.approx(blob)


def test_small_objects_found_only_with_tiles():
    blobs = [(200, 500, 212, 508), (1500, 200, 1512, 208), (900, 900, 912, 908)]  # 12x8 px: 2.7 px at 640
    img = frame_with_blobs(1080, 1920, blobs)
    det = BlobDetector(min_side_px=6)
    assert len(det.detect([img])[0]) == 0
    (out,) = detect_tiled(det, [img], TileSpec(640, 0.2))
    assert len(out) == 3
    got = out.xyxy_px[np.argsort(out.xyxy_px[:, 0])]
    assert got == pytest.approx(np.array(sorted(blobs), np.float32))


def test_crops_of_several_frames_go_in_batches():
    det = BlobDetector()
    frames = [frame_with_blobs(1080, 1920, [(10, 10, 50, 50)]), frame_with_blobs(720, 1280, [(700, 400, 760, 430)])]
    spec = TileSpec(640, 0.2, batch=5)
    out = detect_tiled(det, frames, spec)
    n_crops = (4 * 2 + 1) + (3 * 2 + 1)  # tiles + full frame, per frame
    assert sum(det.calls) == n_crops and max(det.calls) <= 5 and len(det.calls) == math.ceil(n_crops / 5)
    assert [len(d) for d in out] == [1, 1]
    assert out[1].xyxy_px[0] == pytest.approx([700, 400, 760, 430])


def test_small_frame_is_one_crop():
    det = BlobDetector()
    (out,) = detect_tiled(det, [frame_with_blobs(300, 400, [(10, 20, 30, 40)])], TileSpec(640))
    assert det.calls == [1] and out.xyxy_px[0] == pytest.approx([10, 20, 30, 40])


def test_merge_drops_cut_box_only_when_a_fuller_one_exists():
    labels = ("vessel", "person")
    whole = Detections(np.array([[600, 300, 700, 360]], np.float32), [0.8], [0], labels)
    part = Detections(np.array([[600, 300, 640, 360]], np.float32), [0.95], [0], labels)
    other_class = Detections(np.array([[600, 300, 640, 360]], np.float32), [0.9], [1], labels)
    merged = merge_tiles([part, whole], [np.array([True]), np.array([False])], 0.45, 300)
    assert len(merged) == 1 and merged.xyxy_px[0] == pytest.approx([600, 300, 700, 360])
    alone = merge_tiles([part], [np.array([True])], 0.45, 300)
    assert len(alone) == 1  # nothing fuller: the cut box is all there is
    mixed = merge_tiles([other_class, whole], [np.array([True]), np.array([False])], 0.45, 300)
    assert sorted(mixed.label.tolist()) == ["person", "vessel"]  # a cut box of another label stays
    assert len(merge_tiles([], [], 0.45, 300)) == 0


@pytest.mark.parametrize("text,size,overlap", [("640", 640, 0.2), ("1024:0.3", 1024, 0.3), ("320:0", 320, 0.0)])
def test_tile_spec_parse(text, size, overlap):
    s = TileSpec.parse(text)
    assert (s.size_px, s.overlap) == (size, overlap)


@pytest.mark.parametrize("text", ["abc", "640:x", "16", "640:0.95", "640:-0.1"])
def test_tile_spec_parse_rejects(text):
    with pytest.raises(ValueError):
        TileSpec.parse(text)


@pytest.mark.models
@pytest.mark.slow
def test_tiling_finds_more_real_vehicles_and_vessels(shared_media):
    """COCO YOLOv5n on real 1080p shore CCTV: tiles find far more of the small labelled vehicles and boats."""
    from seawatch.vision.detector import load_detector
    from test_detector import _iou, _yolo_boxes

    onnx_model("coco_yolov5n")
    det = load_detector("coco_yolov5n", intra_op_threads=2)
    spec = TileSpec(640, 0.2, batch=4)

    def found(dets, gt):
        return int((_iou(dets.xyxy_px, gt) > 0.3).any(axis=0).sum()) if len(dets) and len(gt) else 0

    f = sorted((shared_media / "D_parking_lanes").glob("shore_*.jpg"))[0]
    img = cv2.imread(str(f))
    gt = _yolo_boxes(f.with_suffix(".txt"), img.shape[1], img.shape[0], cls=1)  # land vehicles
    labs = ("car", "truck", "bus", "motorcycle")
    full = found(det.detect([img])[0].with_label(*labs), gt)
    (tiled_d,) = detect_tiled(det, [img], spec)
    tiled = found(tiled_d.with_label(*labs), gt)
    assert tiled >= max(3 * full, 15), (full, tiled, len(gt))  # measured 7 -> 38 of 97
    precision = (_iou(tiled_d.with_label(*labs).xyxy_px, gt) > 0.3).any(axis=1).mean()
    assert precision >= 0.7

    boats_full = boats_tiled = 0
    for f in sorted((shared_media / "A_boats").glob("shore_*1080*.jpg"))[:3]:
        img = cv2.imread(str(f))
        gt = _yolo_boxes(f.with_suffix(".txt"), img.shape[1], img.shape[0], cls=2)  # watercraft
        boats_full += found(det.detect([img])[0].with_label("vessel"), gt)
        boats_tiled += found(detect_tiled(det, [img], spec)[0].with_label("vessel"), gt)
    assert boats_tiled > boats_full, (boats_full, boats_tiled)  # measured 8 -> 19 on these frames


class _Man:
    """What ``model_tile`` reads of a manifest: ``defaults.tile_px``."""

    def __init__(self, tile_px):
        self.defaults = type("D", (), {"tile_px": tile_px})()


def test_auto_tiling_uses_the_models_trained_tile_size():
    from seawatch.vision.tiling import model_tile, tile_for

    zoomed = BlobDetector(imgsz=640)
    zoomed.manifest = _Man(384)  # fine-tuned on 384 px tiles upscaled to 640
    plain = BlobDetector(imgsz=512)
    plain.manifest = _Man(None)
    assert model_tile(zoomed).size_px == 384 and model_tile(plain).size_px == 512
    assert model_tile(BlobDetector(imgsz=320)).size_px == 320  # no manifest at all (a stand-in detector)
    s = tile_for("auto:0.3", zoomed, batch=2)
    assert (s.size_px, s.overlap, s.batch) == (384, 0.3, 2)
    assert tile_for("AUTO", plain).size_px == 512
    assert tile_for("800:0.1", zoomed).size_px == 800  # an explicit size wins over the model's
    assert tile_for(None, zoomed) is None and tile_for("", zoomed) is None


def test_auto_tiling_finds_what_the_models_input_size_misses():
    """A model that needs objects this big after scaling finds small blobs only when its tiles are zoomed."""
    from seawatch.vision.tiling import tile_for

    img = np.zeros((1080, 1920, 3), np.uint8)
    for x in range(100, 1800, 200):
        img[500:504, x:x + 4] = 255  # 4 px blobs: 4 px at zoom 1, 6.7 px at zoom 640/384
    det = BlobDetector(imgsz=640, min_side_px=6.0)
    det.manifest = _Man(None)
    assert len(detect_tiled(det, [img], tile_for("auto", det))[0]) == 0
    det.manifest = _Man(384)
    assert len(detect_tiled(det, [img], tile_for("auto", det))[0]) == 9


@pytest.mark.parametrize("text", ["auto:x", "auto:0.95", "big", "16", "auto+flop", "flip", "+flip"])
def test_bad_tile_text_is_rejected_before_any_model_loads(text):
    from seawatch.vision.tiling import check_tile_text

    with pytest.raises(ValueError):
        check_tile_text(text)


@pytest.mark.parametrize("text", [None, "auto", "auto:0.3", "640", "384:0.25", "auto+flip", "384:0.25+flip"])
def test_good_tile_text_passes(text):
    from seawatch.vision.tiling import check_tile_text

    assert check_tile_text(text) == text


class AsymmetricDetector(BlobDetector):
    """Finds a blob only when its left half is brighter than its right (a model with a left/right bias): the
    mirrored view sees the other blobs. Confidence 0.8."""

    def detect(self, images):
        out = []
        for d, im in zip(super().detect(images), images):
            keep = []
            for x0, y0, x1, y1 in d.xyxy_px.astype(int):
                mid = (x0 + x1) // 2
                keep.append(im[y0:y1, x0:mid, 1].mean() > im[y0:y1, mid:x1, 1].mean())
            k = np.asarray(keep, bool) if keep else np.zeros(0, bool)
            out.append(Detections(d.xyxy_px[k], np.full(int(k.sum()), 0.8, np.float32), d.class_id[k], d.labels,
                                  None, d.model))
        return out


def test_flip_view_finds_what_one_orientation_misses_and_scores_agreement_higher():
    from seawatch.vision.tiling import tile_for

    img = np.zeros((1080, 1920, 3), np.uint8)
    left_bright = (300, 400, 360, 430)
    right_bright = (1400, 600, 1460, 630)
    for x0, y0, x1, y1 in (left_bright, right_bright):
        img[y0:y1, x0:x1, 0] = 255
    img[400:430, 300:330, 1] = 200  # left half brighter in channel 1
    img[600:630, 1430:1460, 1] = 200  # right half brighter
    sym = (900, 200, 960, 230)
    img[200:230, 900:960, 0] = 255
    img[200:230, 900:960, 1] = 100  # even: neither half brighter -> no view finds it
    det = AsymmetricDetector(min_side_px=1)
    (plain,) = detect_tiled(det, [img], tile_for("640", det))
    assert plain.xyxy_px.tolist() == [list(left_bright)]
    spec = tile_for("640+flip", det)
    assert spec.flip and spec.size_px == 640
    (both,) = detect_tiled(det, [img], spec)
    got = sorted(map(tuple, both.xyxy_px.tolist()))
    assert got == sorted([left_bright, right_bright])  # the mirror found the other one, mapped back exactly
    assert both.confidence.tolist() == pytest.approx([0.4, 0.4])  # each seen by one view of two
    assert both.labels == ("vessel",) and both.model == "blob"
    # a blob both views see keeps its confidence (and its box) once, not twice
    plain_det = BlobDetector(min_side_px=1)
    (agree,) = detect_tiled(plain_det, [img], tile_for("auto:0.2+flip", plain_det))
    assert len(agree) == 3 and agree.confidence.tolist() == pytest.approx([0.9] * 3)
    assert sorted(map(tuple, agree.xyxy_px.tolist())) == sorted([left_bright, right_bright, sym])


def test_fuse_views_pairs_by_class_and_iou():
    from seawatch.vision.tiling import fuse_views

    labels = ("vessel", "person")
    a = Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), [0.8, 0.6], [0, 0], labels)
    b = Detections(np.array([[1, 0, 11, 10], [50, 50, 60, 60]], np.float32), [0.4, 0.6], [0, 1], labels)
    f = fuse_views([a, b])
    assert len(f) == 3  # the second pair differs in class: not fused
    top = f[0]
    assert top.confidence[0] == pytest.approx(0.6) and top.xyxy_px[0] == pytest.approx([1 / 3, 0, 31 / 3, 10])
    assert sorted(f.confidence.tolist()[1:]) == pytest.approx([0.3, 0.3])
    assert len(fuse_views([Detections.empty(labels), Detections.empty(labels)])) == 0
    assert fuse_views([a, Detections.empty(labels)]).confidence.tolist() == pytest.approx([0.4, 0.3])


def test_more_tile_sizes_are_views_of_their_own():
    """A model that needs 6 px after scaling: 4 px blobs need tiles zoomed past its own 384 px; with 240 px tiles as
    a second view they are found, at half confidence (one view of two), while blobs both sizes see keep theirs."""
    from seawatch.vision.tiling import parse_tile_text, tile_for

    img = np.zeros((1080, 1920, 3), np.uint8)
    for x in range(100, 1800, 400):
        img[500:503, x:x + 3] = 255  # 3 px: 5 px at zoom 640/384, 8 px at zoom 640/240
    img[800:840, 900:960] = 255  # a big one every view sees
    det = BlobDetector(imgsz=640, min_side_px=6.0)
    det.manifest = _Man(384)
    assert parse_tile_text("auto,240:0.25+flip") == ((None, 240), 0.25, True)
    one = detect_tiled(det, [img], tile_for("auto", det))[0]
    assert len(one) == 1
    spec = tile_for("auto,240", det)
    assert (spec.size_px, spec.extra_sizes_px, spec.flip) == (384, (240,), False)
    (two,) = detect_tiled(det, [img], spec)
    assert len(two) == 6
    conf = dict(zip(map(tuple, two.xyxy_px.astype(int).tolist()), two.confidence.tolist()))
    assert conf[(900, 800, 960, 840)] == pytest.approx(0.9)
    assert sorted(conf.values())[:5] == pytest.approx([0.45] * 5)
    assert tile_for("auto,384", det).extra_sizes_px == ()  # auto is 384 here: one view, not two
    (four,) = detect_tiled(det, [img], tile_for("auto,240+flip", det))  # 2 sizes x 2 orientations
    assert len(four) == 6 and sorted(four.confidence.tolist())[:5] == pytest.approx([0.45] * 5)
    with pytest.raises(ValueError, match="twice"):
        parse_tile_text("640,640")


def test_tiles_a_filter_refuses_are_not_run_and_the_mirror_asks_in_frame_pixels():
    """Blobs on the 'water' (below y 700 of 1080) and one on 'land' higher up: with a filter that refuses the tiles
    touching no water, those tiles are not run, the water blobs are found as before, the land blob (small, only
    tiles see it) is not; the mirrored view asks about the same frame regions, not mirrored ones."""
    from seawatch.vision.tiling import tile_for

    water_blobs = [(200, 900, 212, 908), (1500, 700, 1512, 708)]
    land = (900, 100, 912, 108)
    img = frame_with_blobs(1080, 1920, [*water_blobs, land])
    asked: list[tuple[float, ...]] = []

    def low_water(t, hw):  # the water is the frame below y 700: the top row of tiles (y 0-640) sees none
        asked.append(tuple(float(v) for v in t))
        return t[3] > 700

    everything = BlobDetector(min_side_px=6)
    (full,) = detect_tiled(everything, [img], TileSpec(640, 0.2))
    assert len(full) == 3 and sum(everything.calls) == 8 + 1
    det = BlobDetector(min_side_px=6)
    (out,) = detect_tiled(det, [img], TileSpec(640, 0.2), low_water)
    assert sum(det.calls) == 4 + 1  # the bottom row and the whole frame
    assert sorted(map(tuple, out.xyxy_px.tolist())) == sorted(water_blobs)
    # flip: the mirrored frame's tiles are asked about as the regions of the frame they show. Water only at the
    # bottom right: the left blob lies in tiles refused in both views (asked in mirrored pixels, the mirror's tile
    # over it would have been let through and found it)
    def right_water(t, hw):
        asked.append(tuple(float(v) for v in t))
        return t[3] > 700 and t[2] > 1000

    asked.clear()
    det = BlobDetector(min_side_px=6)
    (both,) = detect_tiled(det, [img], tile_for("640+flip", det), right_water)
    assert sum(det.calls) == 2 * (3 + 1)
    grid = {tuple(float(v) for v in t) for t in tile_grid(1080, 1920, 640, 0.2)}
    assert set(asked) == grid and len(asked) == 2 * len(grid)
    assert both.xyxy_px.tolist() == [list(water_blobs[1])] and both.confidence.tolist() == pytest.approx([0.9])


def test_tiles_benchmark_quick_run(shared_media, capsys):
    """`seawatch bench tiles` on the shared lake-harbour frame: fewer crops with the water filter, same vessels."""
    import importlib.util
    import json
    from pathlib import Path

    onnx_model("coco_yolov5n")  # in CI; the trained `vessel` model (the default) is a GPU build artefact
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_tiles.py"
    spec = importlib.util.spec_from_file_location("bench_tiles", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--rounds", "1", "--tiles", "auto,288", "--model", "coco_yolov5n", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["crops_water"] < row["crops_all"] / 2 and row["same_vessels"] and row["vessels_kept"] >= 3
    with pytest.raises(SystemExit, match="x,y"):
        bench.parse_polygon("0,0 10")
