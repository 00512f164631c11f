"""Parity: the ONNX Runtime path reproduces each model's own framework predictions on real images.

Same classes, boxes matched at IoU >= 0.9, confidence within 0.02. A box whose confidence lies within 0.02 of the
threshold may legitimately appear on one side only; every other box must be matched.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from conftest import missing, onnx_model
from seawatch.vision.metrics import box_iou

MODELS = ["coco_yolov5n", "fire_smoke", "helmet", "fall", "ship_published"]
CONF = 0.25
TOL_CONF = 0.02


def parity_images(name: str, media: Path) -> list[tuple[str, np.ndarray]]:
    import ultralytics

    from seawatch.vision import registry
    from seawatch.vision.media import read_image

    m = registry.get_manifest(name)
    files: list[str] = []
    for g in m.export.check_media:
        files += sorted(glob.glob(str(media / g)))[:3]
    assets = Path(ultralytics.__file__).parent / "assets"
    files += [str(assets / "bus.jpg"), str(assets / "zidane.jpg")]
    return [(Path(f).name, read_image(f)) for f in files[:8]]


def compare(a, b, conf: float) -> list[str]:
    """Problems found matching Detections ``a`` (ONNX) against ``b`` (reference); empty when they agree."""
    problems = []
    iou = box_iou(a.xyxy_px, b.xyxy_px)
    same_cls = a.class_id[:, None] == b.class_id[None, :]
    score = np.where(same_cls, iou, 0.0)
    used_b = np.zeros(len(b), bool)
    for i in np.argsort(-a.confidence):
        j = int(np.argmax(np.where(used_b, -1.0, score[i]))) if len(b) else -1
        if j >= 0 and score[i, j] >= 0.9 and not used_b[j]:
            used_b[j] = True
            if abs(float(a.confidence[i]) - float(b.confidence[j])) > TOL_CONF:
                problems.append(f"conf {a.confidence[i]:.4f} vs {b.confidence[j]:.4f}")
        elif a.confidence[i] > conf + TOL_CONF:
            problems.append(f"ONNX box {a.label[i]} {a.confidence[i]:.3f} {a.xyxy_px[i].round(1)} unmatched")
    for j in np.where(~used_b)[0]:
        if b.confidence[j] > conf + TOL_CONF:
            problems.append(f"reference box {b.label[j]} {b.confidence[j]:.3f} {b.xyxy_px[j].round(1)} unmatched")
    return problems


@pytest.mark.export
@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_onnx_matches_framework_predictions(name, shared_media):
    onnx_model(name)
    try:
        from seawatch.vision.export.reference import load_reference
    except ImportError as exc:  # pragma: no cover - torch missing
        missing(f"reference needs the export toolchain: {exc}")
    from seawatch.vision.detector import load_detector

    ref = load_reference(name)
    det = load_detector(name, conf=CONF)
    imgsz = det.settings.imgsz
    total = 0
    for fname, img in parity_images(name, shared_media):
        ours = det.detect([img])[0]
        theirs = ref.predict([img], CONF, det.settings.iou, imgsz)[0]
        assert ours.labels == theirs.labels
        problems = compare(ours, theirs, CONF)
        assert not problems, f"{name} on {fname}: {problems}"
        total += len(theirs)
    assert total > 0, f"{name}: the reference found nothing on any parity image, so nothing was compared"


def test_compare_flags_real_differences():
    from seawatch.vision.detections import Detections

    a = Detections([[0, 0, 100, 100], [200, 200, 300, 300]], [0.9, 0.5], [0, 1], ("vessel", "person"))
    assert compare(a, a, CONF) == []
    shifted = Detections([[0, 0, 100, 100], [215, 200, 315, 300]], [0.9, 0.5], [0, 1], ("vessel", "person"))
    assert compare(a, shifted, CONF)  # IoU 0.74 < 0.9
    reclassed = Detections([[0, 0, 100, 100], [200, 200, 300, 300]], [0.9, 0.5], [0, 0], ("vessel", "person"))
    assert compare(a, reclassed, CONF)
    conf_off = Detections([[0, 0, 100, 100], [200, 200, 300, 300]], [0.9, 0.45], [0, 1], ("vessel", "person"))
    assert compare(a, conf_off, CONF)
    borderline = Detections([[0, 0, 100, 100]], [0.9], [0], ("vessel", "person"))
    near = Detections([[0, 0, 100, 100], [200, 200, 300, 300]], [0.9, 0.26], [0, 1], ("vessel", "person"))
    assert compare(borderline, near, CONF) == []  # a box at the threshold may fall on either side
