"""Decode + NMS + un-letterbox: tables of raw outputs -> expected boxes, and NMS against a plain reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, example
from hypothesis import strategies as st

from seawatch.errors import ModelError
from seawatch.vision import postprocess as pp
from seawatch.vision.postprocess import LabelMap, nms, postprocess
from seawatch.vision.preprocess import Preprocessor

CLASSES = ("boat", "person", "dog", "ship")
# two source classes map to one Seawatch label; "dog" is dropped
LMAP = LabelMap(("vessel", "person"), np.array([0, 1, -1, 0], np.int32))
NAN = float("nan")


def batch_for(*shapes_hw, imgsz=640):
    return Preprocessor(imgsz, 32)([np.zeros((h, w, 3), np.uint8) for h, w in shapes_hw])


def raw_v8(rows):
    """rows of (cx, cy, w, h, s0..s3) -> (1, 8, N)."""
    a = np.asarray(rows, np.float32).reshape(-1, 4 + len(CLASSES))
    return a.T[None].copy()


def raw_v5(rows):
    """rows of (cx, cy, w, h, obj, p0..p3) -> (1, N, 9)."""
    return np.asarray(rows, np.float32).reshape(1, -1, 5 + len(CLASSES))


def b(cx, cy, w, h):
    return [cx, cy, w, h]


# name, rows (yolov8 layout), conf, iou, expected (label, score, xyxy) sorted by score
V8_TABLE = [
    ("one box", [b(100, 100, 20, 10) + [0.9, 0, 0, 0]], 0.25, 0.45, [("vessel", 0.9, (90, 95, 110, 105))]),
    ("empty output", [], 0.25, 0.45, []),
    ("all below conf", [b(100, 100, 20, 10) + [0.2, 0.1, 0, 0], b(300, 300, 20, 10) + [0, 0.25, 0, 0]], 0.25, 0.45, []),
    ("score equal to conf is dropped", [b(100, 100, 20, 10) + [0.5, 0, 0, 0]], 0.5, 0.45, []),
    ("NaN score dropped", [b(100, 100, 20, 10) + [NAN, 0.9, 0, 0], b(300, 300, 20, 10) + [0.8, 0, 0, 0]], 0.25, 0.45,
     [("vessel", 0.8, (290, 295, 310, 305))]),
    ("NaN coordinate dropped", [[NAN, 100, 20, 10, 0.9, 0, 0, 0], b(300, 300, 20, 10) + [0.8, 0, 0, 0]], 0.25, 0.45,
     [("vessel", 0.8, (290, 295, 310, 305))]),
    ("inf coordinate dropped", [[100, 100, float("inf"), 10, 0.9, 0, 0, 0]], 0.25, 0.45, []),
    ("zero-width box dropped", [b(100, 100, 0, 10) + [0.9, 0, 0, 0]], 0.25, 0.45, []),
    ("negative size dropped", [b(100, 100, -20, 10) + [0.9, 0, 0, 0]], 0.25, 0.45, []),
    ("box outside the frame dropped", [b(-50, 100, 20, 10) + [0.9, 0, 0, 0]], 0.25, 0.45, []),
    ("box partly outside is clipped", [b(5, 100, 20, 10) + [0.9, 0, 0, 0]], 0.25, 0.45,
     [("vessel", 0.9, (0, 95, 15, 105))]),
    ("same class overlap suppressed", [b(100, 100, 20, 20) + [0.9, 0, 0, 0], b(102, 100, 20, 20) + [0.8, 0, 0, 0]],
     0.25, 0.45, [("vessel", 0.9, (90, 90, 110, 110))]),
    ("different classes both kept", [b(100, 100, 20, 20) + [0.9, 0, 0, 0], b(102, 100, 20, 20) + [0, 0.8, 0, 0]],
     0.25, 0.45, [("vessel", 0.9, (90, 90, 110, 110)), ("person", 0.8, (92, 90, 112, 110))]),
    ("source classes stay apart in NMS even with one label",
     [b(100, 100, 20, 20) + [0.9, 0, 0, 0], b(102, 100, 20, 20) + [0, 0, 0, 0.8]],
     0.25, 0.45, [("vessel", 0.9, (90, 90, 110, 110)), ("vessel", 0.8, (92, 90, 112, 110))]),
    ("unmapped best class dropped, not relabelled", [b(100, 100, 20, 20) + [0, 0.7, 0.9, 0]], 0.25, 0.45, []),
    ("IoU equal to threshold is kept", [[100, 100, 20, 20, 0.9, 0, 0, 0], [100, 95, 20, 10, 0.8, 0, 0, 0]], 0.25, 0.5,
     [("vessel", 0.9, (90, 90, 110, 110)), ("vessel", 0.8, (90, 90, 110, 100))]),
    ("IoU above threshold suppressed", [[100, 100, 20, 20, 0.9, 0, 0, 0], [100, 95, 20, 10, 0.8, 0, 0, 0]], 0.25, 0.49,
     [("vessel", 0.9, (90, 90, 110, 110))]),
    # A suppresses B; B would suppress C but is gone, so C stays (greedy NMS; Fast-NMS would drop C)
    ("suppression chain", [b(100, 100, 20, 20) + [0.9, 0, 0, 0], b(106, 100, 20, 20) + [0.8, 0, 0, 0],
                           b(112, 100, 20, 20) + [0.7, 0, 0, 0]], 0.25, 0.45,
     [("vessel", 0.9, (90, 90, 110, 110)), ("vessel", 0.7, (102, 90, 122, 110))]),
]


@pytest.mark.parametrize("name,rows,conf,iou,expected", V8_TABLE, ids=[t[0] for t in V8_TABLE])
def test_yolov8_table(name, rows, conf, iou, expected):
    raw = raw_v8(rows) if rows else np.zeros((1, 8, 0), np.float32)
    (det,) = postprocess(raw, batch_for((640, 640)), "yolov8", LMAP, conf=conf, iou=iou, max_det=300, model="m")
    assert det.labels == ("vessel", "person") and det.model == "m"
    assert len(det) == len(expected)
    for i, (label, score, box) in enumerate(expected):
        assert det.label[i] == label
        assert det.confidence[i] == pytest.approx(score)
        assert det.xyxy_px[i] == pytest.approx(box)
    assert det.xyxy_px.dtype == np.float32 and det.class_id.dtype == np.int32


V5_TABLE = [
    ("score is obj * cls", [b(100, 100, 20, 10) + [0.9, 0.5, 0, 0, 0]], 0.4, [("vessel", 0.45)]),
    ("obj*cls below conf", [b(100, 100, 20, 10) + [0.9, 0.4, 0, 0, 0]], 0.4, []),
    ("objectness filter comes first", [b(100, 100, 20, 10) + [0.3, 1.0, 0, 0, 0]], 0.35, []),
    ("best of obj*cls", [b(100, 100, 20, 10) + [0.8, 0.5, 0.9, 0, 0]], 0.25, [("person", 0.72)]),
    ("NaN objectness dropped", [b(100, 100, 20, 10) + [NAN, 0.9, 0, 0, 0]], 0.25, []),
    ("dropped class", [b(100, 100, 20, 10) + [0.9, 0, 0, 0.9, 0]], 0.25, []),
    ("empty", [], 0.25, []),
]


@pytest.mark.parametrize("name,rows,conf,expected", V5_TABLE, ids=[t[0] for t in V5_TABLE])
def test_yolov5_table(name, rows, conf, expected):
    raw = raw_v5(rows) if rows else np.zeros((1, 0, 9), np.float32)
    (det,) = postprocess(raw, batch_for((640, 640)), "yolov5", LMAP, conf=conf)
    assert [(str(lab), round(float(c), 4)) for lab, c in zip(det.label, det.confidence)] == \
        [(lab, pytest.approx(c, abs=1e-4)) for lab, c in expected]


def test_unletterbox_1080p_both_formats():
    batch = batch_for((1080, 1920))  # 640x384 input, pad_y 12, gain 1/3
    v8 = raw_v8([b(320, 192, 60, 30) + [0.9, 0, 0, 0]])
    (d8,) = postprocess(v8, batch, "yolov8", LMAP)
    assert d8.xyxy_px[0] == pytest.approx([870, 495, 1050, 585], abs=1e-3)
    v5 = raw_v5([b(320, 192, 60, 30) + [0.9, 1.0, 0, 0, 0]])
    (d5,) = postprocess(v5, batch, "yolov5", LMAP)
    assert d5.xyxy_px[0] == pytest.approx([870, 495, 1050, 585], abs=1e-3)


def test_yolov5_uses_fractional_pad_like_yolov5():
    # 1079x1917: resized 360x640 inside 384x640, integer pad 12; YOLOv5's scale_boxes uses (384 - 1079*g) / 2
    batch = batch_for((1079, 1917))
    g = min(384 / 1079, 640 / 1917)
    pad_y = (384 - 1079 * g) / 2
    v5 = raw_v5([b(320, 200, 60, 40) + [0.9, 1.0, 0, 0, 0]])
    (d5,) = postprocess(v5, batch, "yolov5", LMAP)
    assert d5.xyxy_px[0] == pytest.approx([290 / g, (180 - pad_y) / g, 350 / g, (220 - pad_y) / g], abs=1e-2)
    v8 = raw_v8([b(320, 200, 60, 40) + [0.9, 0, 0, 0]])
    (d8,) = postprocess(v8, batch, "yolov8", LMAP)  # ultralytics: integer pad 12, per-axis gain
    gx, gy = 640 / 1917, 360 / 1079
    assert d8.xyxy_px[0] == pytest.approx([290 / gx, 168 / gy, 350 / gx, 208 / gy], abs=1e-2)


def test_batch_of_mixed_frames_maps_each_to_its_own_pixels():
    batch = batch_for((1080, 1920), (1920, 1080))  # 640x640 batch: pads (0,140) and (140,0)
    rows = [b(320, 320, 64, 64) + [0.9, 0, 0, 0]]
    raw = np.concatenate([raw_v8(rows), raw_v8(rows)])
    d0, d1 = postprocess(raw, batch, "yolov8", LMAP)
    assert d0.xyxy_px[0] == pytest.approx([864, 444, 1056, 636], abs=1e-3)
    assert d1.xyxy_px[0] == pytest.approx([444, 864, 636, 1056], abs=1e-3)


def test_max_det_keeps_highest():
    rows = [b(20 + 40 * i, 100, 20, 20) + [0.3 + 0.05 * i, 0, 0, 0] for i in range(10)]
    (det,) = postprocess(raw_v8(rows), batch_for((640, 640)), "yolov8", LMAP, max_det=3)
    assert det.confidence == pytest.approx([0.75, 0.70, 0.65])


def test_agnostic_nms():
    rows = [b(100, 100, 20, 20) + [0.9, 0, 0, 0], b(102, 100, 20, 20) + [0, 0.8, 0, 0]]
    (det,) = postprocess(raw_v8(rows), batch_for((640, 640)), "yolov8", LMAP, agnostic=True)
    assert list(det.label) == ["vessel"]


@pytest.mark.parametrize("fmt,shape", [("yolov8", (1, 9, 10)), ("yolov5", (1, 10, 8)), ("yolov8", (8, 10)),
                                       ("yolov9", (1, 8, 10))])
def test_wrong_output_shape_is_model_error(fmt, shape):
    with pytest.raises(ModelError, match="m"):
        postprocess(np.zeros(shape, np.float32), batch_for((64, 64)), fmt, LMAP, model="m")


def test_batch_size_mismatch_is_model_error():
    with pytest.raises(ModelError):
        postprocess(np.zeros((2, 8, 5), np.float32), batch_for((64, 64)), "yolov8", LMAP)


def test_label_map_from_manifest():
    from seawatch.vision.registry import ModelManifest

    m = ModelManifest.model_validate({
        "name": "t", "family": "onnx", "output_format": "yolov8", "licence": "x",
        "source": {"kind": "local_onnx", "paths": ["/x.onnx"]},
        "classes": ["boat", "person", "dog", "ship"], "labels": {"boat": "vessel", "person": "person", "ship": "vessel"},
    })
    lm = LabelMap.from_manifest(m)
    assert lm.labels == ("vessel", "person")
    assert lm.lut.tolist() == [0, 1, -1, 0]


# ----------------------------------------------------------------------------------------------------- NMS

def reference_nms(boxes, scores, iou_thr, classes):
    """Plain greedy NMS, one box at a time (torchvision semantics), for checking the vectorised one."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        ok = True
        for k in keep:
            if classes[k] != classes[i]:
                continue
            xx1, yy1 = max(boxes[i][0], boxes[k][0]), max(boxes[i][1], boxes[k][1])
            xx2, yy2 = min(boxes[i][2], boxes[k][2]), min(boxes[i][3], boxes[k][3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            a_i = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
            a_k = (boxes[k][2] - boxes[k][0]) * (boxes[k][3] - boxes[k][1])
            union = a_i + a_k - inter
            # the IoU in float32 compared with the threshold as a double, as torchvision's kernel does: integer
            # boxes can give an IoU of exactly 1/20, and float32(0.05) lies just above the double 0.05
            if union > 0 and float(np.float32(inter) / np.float32(union)) > iou_thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 60), seed=st.integers(0, 2**32 - 1), thr=st.floats(0.05, 0.95), ncls=st.integers(1, 3))
@example(n=45, seed=0, thr=0.05, ncls=1)  # an IoU of exactly 1/20 at the threshold
def test_nms_equals_greedy_reference(n, seed, thr, ncls):
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 200, (n, 2)).astype(np.float32)  # integer coordinates: no float-rounding ties
    wh = rng.integers(1, 80, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.permutation(n).astype(np.float32) / max(n, 1)  # distinct scores: a unique greedy order
    cls = rng.integers(0, ncls, n)
    got = nms(boxes, scores, thr, cls).tolist()
    want = reference_nms(boxes.astype(float).tolist(), scores.tolist(), thr, cls.tolist())
    assert got == want


def test_nms_over_several_blocks(monkeypatch):
    monkeypatch.setattr(pp, "NMS_BLOCK", 64)
    rng = np.random.default_rng(5)
    n = 300
    xy = rng.integers(0, 400, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.integers(5, 60, (n, 2))], 1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n
    cls = rng.integers(0, 2, n)
    assert nms(boxes, scores, 0.3, cls).tolist() == reference_nms(boxes.tolist(), scores.tolist(), 0.3, cls.tolist())


def test_nms_matches_torchvision():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(11)
    n = 2500
    xy = rng.uniform(0, 600, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 90, (n, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    cls = rng.integers(0, 4, n)
    offset = torch.from_numpy(boxes) + torch.from_numpy(cls.astype(np.float32))[:, None] * 7680
    want = torchvision.ops.nms(offset, torch.from_numpy(scores), 0.45).numpy()
    assert np.array_equal(nms(boxes, scores, 0.45, cls), want)


def test_nms_degenerate_boxes_do_not_crash():
    boxes = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [5, 5, 5, 9]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5, np.zeros(3, int))
    assert keep.tolist() == [0, 1, 2]  # 0/0 IoU is NaN, never "> iou": nothing is suppressed


def test_nms_empty():
    assert nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5).shape == (0,)


def test_postprocess_is_fast_for_many_candidates():
    """A dense, low-threshold output (evaluation settings) stays well under a frame's inference time."""
    import time

    rng = np.random.default_rng(0)
    n = 8400
    raw = np.zeros((1, 84, n), np.float32)
    raw[0, 0:2] = rng.uniform(0, 640, (2, n))
    raw[0, 2:4] = rng.uniform(4, 120, (2, n))
    raw[0, 4:] = rng.uniform(0, 0.02, (80, n))
    raw[0, 4 + rng.integers(0, 80, n), np.arange(n)] = rng.uniform(0, 1, n)
    lm = LabelMap(("x",), np.zeros(80, np.int32))
    batch = batch_for((640, 640))
    postprocess(raw, batch, "yolov8", lm, conf=0.25)
    t = time.perf_counter()
    (det,) = postprocess(raw, batch, "yolov8", lm, conf=0.25)
    dt = time.perf_counter() - t
    assert 0 < len(det) <= 300
    assert dt < 0.25, f"postprocess took {dt * 1e3:.0f} ms for {n} anchors"
    assert math.isfinite(float(det.confidence.sum()))


@pytest.mark.parametrize("max_det,ncls", [(5, 1), (40, 3), (150, 2)])
def test_nms_stopping_at_max_det_is_exact(monkeypatch, max_det, ncls):
    monkeypatch.setattr(pp, "EARLY_STOP_BLOCK", 32)
    rng = np.random.default_rng(max_det)
    n = 700
    xy = rng.integers(0, 300, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.integers(5, 60, (n, 2))], 1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n
    cls = rng.integers(0, ncls, n)
    want = reference_nms(boxes.tolist(), scores.tolist(), 0.5, cls.tolist())[:max_det]
    assert nms(boxes, scores, 0.5, cls, max_det=max_det).tolist() == want
