"""Model groups (``a+b``): members run on the same frames or tiles, boxes of a label they share fused."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from conftest import onnx_model
from seawatch.errors import ModelError
from seawatch.vision.detections import Detections
from seawatch.vision.detector import DetectorSettings, Timing
from seawatch.vision.ensemble import FusedDetector, members_of


class Stub:
    """Stands in for OnnxDetector: the same boxes for every frame it is given."""

    def __init__(self, name, labels, boxes, imgsz=640, max_det=300, conf=0.25):
        self.name, self.labels = name, tuple(labels)
        self.settings = DetectorSettings(conf=conf, iou=0.45, imgsz=imgsz, max_det=max_det)
        self.boxes = boxes  # [(label, x1, y1, x2, y2, conf)]
        self.last_timing = self.total_timing = Timing()
        self.threads = []  # the thread each call ran on

    def detect(self, images):
        self.threads.append(threading.get_ident())
        self.last_timing = Timing(len(images), 1, 1000, 2000, 3000)
        self.total_timing = self.total_timing + self.last_timing
        out = []
        for _ in images:
            b = self.boxes
            out.append(Detections(np.array([x[1:5] for x in b], np.float32).reshape(-1, 4),
                                  np.array([x[5] for x in b], np.float32),
                                  np.array([self.labels.index(x[0]) for x in b], np.int32), self.labels, None, self.name))
        return out


def test_group_names():
    assert members_of("coco_yolov5n") is None
    assert members_of("coco_yolov5n+vessel") == ("coco_yolov5n", "vessel")
    assert members_of("a + b+c") == ("a", "b", "c")
    for bad, needle in (("a+", "empty member"), ("+a", "empty member"), ("a+a", "twice"), ("a:int8+b", "variant")):
        with pytest.raises(ModelError, match=needle):
            members_of(bad)


def test_shared_labels_fuse_to_the_mean_and_the_rest_pass_through():
    coco = Stub("coco", ("person", "vessel"), [("vessel", 100, 100, 140, 120, 0.8), ("vessel", 400, 50, 420, 60, 0.6),
                                               ("person", 10, 10, 20, 40, 0.9)])
    boats = Stub("boats", ("vessel",), [("vessel", 102, 100, 142, 121, 0.6), ("vessel", 700, 300, 730, 310, 0.5)])
    group = FusedDetector("coco+boats", [coco, boats])
    assert group.labels == ("person", "vessel")
    (d,) = group.detect([np.zeros((480, 800, 3), np.uint8)])
    assert d.model == "coco+boats" and d.labels == group.labels
    got = sorted((lab, round(float(c), 3), round(float(x), 1)) for lab, c, x in zip(d.label, d.confidence, d.xyxy_px[:, 0]))
    # both found the boat at x~100: one box, mean 0.7, its corners the confidence-weighted mean; each model's boat
    # the other missed keeps half its score; the person only COCO can see passes through as COCO scored it
    assert got == [("person", 0.9, 10.0), ("vessel", 0.25, 700.0), ("vessel", 0.3, 400.0),
                   ("vessel", 0.7, round((100 * 0.8 + 102 * 0.6) / 1.4, 1))]
    assert list(d.confidence) == sorted(d.confidence, reverse=True)
    # stage times add up over the members, for the frames the group saw
    assert group.last_timing.frames == 1 and group.last_timing.total_ns == 2 * 6000
    assert group.total_timing.frames == 1


def test_group_keeps_at_most_max_det_and_tiles_at_its_members_smallest_size():
    from seawatch.vision.tiling import TileSpec, detect_tiled, tile_for

    many = [("vessel", 10 * i, 0, 10 * i + 8, 8, 0.5 + i / 100) for i in range(20)]
    a = Stub("a", ("vessel",), many, imgsz=640, max_det=5)
    b = Stub("b", ("vessel",), [], imgsz=320, max_det=8)
    group = FusedDetector("a+b", [a, b])
    assert len(group.detect([np.zeros((64, 256, 3), np.uint8)])[0]) == 8
    assert group.tile_px == 320 and tile_for("auto", group).size_px == 320
    # under tiling each crop goes to every member; the merged frame has one box per object
    (d,) = detect_tiled(FusedDetector("a+b", [Stub("a", ("vessel",), [("vessel", 5, 5, 25, 15, 0.9)]),
                                               Stub("b", ("vessel",), [("vessel", 5, 5, 25, 16, 0.7)])]),
                        [np.zeros((400, 900, 3), np.uint8)], TileSpec(size_px=400, overlap=0.2))
    # the stubs put the box at the same spot of every crop: one per tile (and the full frame), each fused
    assert len(d) == 3 and np.allclose(d.confidence, 0.8)  # three 400 px tiles across 900 px; the full frame's box is the first tile's


def test_members_side_by_side_give_what_they_give_one_after_the_other():
    """parallel=True: the first member runs in the caller's thread, the others in the group's pool beside it, and the
    fused result is the same as one after the other."""
    def members():
        return [Stub("a", ("person", "vessel"), [("vessel", 100, 100, 140, 120, 0.8), ("person", 1, 1, 9, 30, 0.9)]),
                Stub("b", ("vessel",), [("vessel", 102, 100, 142, 121, 0.6), ("vessel", 700, 300, 730, 310, 0.5)]),
                Stub("c", ("vessel",), [("vessel", 101, 99, 141, 120, 0.7)])]

    frames = [np.zeros((480, 800, 3), np.uint8)] * 2
    after, side = FusedDetector("a+b+c", members()), FusedDetector("a+b+c", members(), parallel=True)
    want, got = after.detect(frames), side.detect(frames)
    for w, g in zip(want, got):
        assert len(g) == 3 and np.array_equal(w.xyxy_px, g.xyxy_px) and np.array_equal(w.confidence, g.confidence)
        assert list(w.label) == list(g.label)
    assert side.members[0].threads == [threading.get_ident()]
    others = {side.members[1].threads[0], side.members[2].threads[0]}  # the pool's (a quick stub may free one)
    assert threading.get_ident() not in others
    assert {t for m in after.members for t in m.threads} == {threading.get_ident()}
    assert "parallel=True" in repr(side) and "parallel=False" in repr(after)


def test_a_group_needs_two_models():
    with pytest.raises(ModelError, match="at least two"):
        FusedDetector("a", [Stub("a", ("vessel",), [])])


@pytest.mark.models
def test_a_group_of_real_models_runs_in_the_pipeline_and_in_evaluate(shared_media, tmp_path):
    """COCO YOLOv5n with the published boat model, as a source's one model entry and in ``seawatch evaluate``."""
    import cv2

    from seawatch.vision import registry
    from seawatch.vision.pipeline import Pipeline, PipelineConfig
    from test_pipeline import _linked_manifest, seawatch

    onnx_model("coco_yolov5n")
    onnx_model("ship_published")
    group = "coco_yolov5n+ship_published"
    cfg = PipelineConfig.model_validate({"sources": [{"id": "quay", "url": "x.mp4", "models": [group], "tile": "auto"}]})
    pipe = Pipeline(cfg)
    det = pipe.detectors[group]
    assert isinstance(det, FusedDetector) and [m.name for m in det.members] == ["coco_yolov5n", "ship_published"]
    # the CPU's threads shared out: two threads, one each, side by side; one thread: one after the other, with it
    from seawatch.vision.detector import load_detector

    def threads(d):
        return [m.session.get_session_options().intra_op_num_threads for m in d.members]

    # members of unequal cost (a nano at 640 px, an 's' model at 1280 px) run one after the other, all threads each
    unequal = load_detector(group, intra_op_threads=2)
    assert threads(unequal) == [2, 2] and unequal._pool is None
    # two 's'-sized models at 640 px cost about the same: side by side, one thread each; one thread: in turn
    onnx_model("fall")
    onnx_model("fire_smoke")
    two, one = load_detector("fall+fire_smoke", intra_op_threads=2), load_detector("fall+fire_smoke", intra_op_threads=1)
    assert threads(two) == [1, 1] and two._pool is not None
    assert threads(one) == [1, 1] and one._pool is None
    f = sorted((shared_media / "A_boats").glob("shore_*.jpg"))[0]
    d = pipe.detect("quay", cv2.imread(str(f)))
    assert d.model == group and "vessel" in set(d.label)
    coco_only = pipe.detectors[group].members[0].detect([cv2.imread(str(f))])[0]
    assert {"vessel"} < set(coco_only.labels) <= set(d.labels)  # COCO's other labels stay available

    src = json.loads((shared_media / "MANIFEST.json").read_text())
    keep = [e for e in src if e["file"].startswith("A_boats/shore_vgiy5566") and e["file"].endswith(".jpg")][:1]
    manifest = _linked_manifest(tmp_path, shared_media, keep)
    out = tmp_path / "report.json"
    res = seawatch("evaluate", str(manifest), "--out", str(out), "--no-clips", "--vessel-models",
                   f"{group},coco_yolov5n", "--tile", "auto")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    rows = report["labels"]["vessel"]
    assert set(rows) == {f"{group}+tiles", "coco_yolov5n+tiles"}
    want = (registry.get_manifest("coco_yolov5n").defaults.conf + registry.get_manifest("ship_published").defaults.conf) / 2
    assert rows[f"{group}+tiles"]["conf"] == pytest.approx(want)
    assert rows[f"{group}+tiles"]["gt"] == rows["coco_yolov5n+tiles"]["gt"] > 0
    assert rows[f"{group}+tiles"]["tp"] > 0
    bad = seawatch("evaluate", str(manifest), "--no-clips", "--vessel-models", "coco_yolov5n+no_such_model")
    assert "no_such_model" in bad.stderr and "Traceback" not in bad.stderr


def test_group_benchmark_quick_run(shared_media, capsys):
    """`seawatch bench group`: the same group with its members one after the other and side by side, on one tiled
    shore frame; both ways find the same boxes (timing is printed, not asserted)."""
    import importlib.util
    from pathlib import Path

    onnx_model("coco_yolov5n")
    onnx_model("fall")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_group.py"
    spec = importlib.util.spec_from_file_location("bench_group", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--rounds", "1", "--tile", "640", "--threads", "2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["model"] == "coco_yolov5n+fall" and row["tile_px"] == 640 and row["chosen"] == "after"  # unequal
    assert row["same_boxes"] and row["boxes"] > 0 and row["ms_after"] > 0 and row["ms_side"] > 0
    with pytest.raises(SystemExit, match="a group"):
        bench.build("coco_yolov5n", 2, True)
