"""Precision variants: INT8 QDQ export with a float head, recall-gated acceptance, bf16 via OpenVINO, and the bench."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import onnx_model
from seawatch.vision.export.quantize import head_prefix


@pytest.mark.parametrize("names,expected", [
    (["/model.0/conv/Conv", "/model.22/dfl/conv/Conv", "/model.22/Concat_3"], "/model.22/"),
    (["/model.24/m.0/Conv", "/model.9/cv1/conv/Conv"], "/model.24/"),
    (["conv1", "fc"], None),
])
def test_head_prefix(names, expected):
    assert head_prefix(names) == expected


@pytest.fixture
def private_coco(tmp_path, monkeypatch):
    """The provisioned coco_yolov5n copied into a private cache (fp32 only), so quantizing leaves the real one alone."""
    src = onnx_model("coco_yolov5n").parent
    dst = tmp_path / "cache" / "models" / "coco_yolov5n"
    dst.mkdir(parents=True)
    shutil.copy(src / "model.onnx", dst / "model.onnx")
    lock = json.loads((src / "lock.json").read_text())
    lock["variants"] = {"fp32": lock["variants"]["fp32"]}
    (dst / "lock.json").write_text(json.dumps(lock))
    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    return dst


@pytest.mark.slow
def test_int8_variant_is_qdq_keeps_head_float_and_is_gated_on_recall(private_coco, shared_media):
    import onnx

    from seawatch.vision import registry
    from seawatch.vision.detector import load_detector
    from seawatch.vision.export.cmd_quantize import quantize_model
    from seawatch.vision.export.quantize import head_nodes_to_exclude

    result = quantize_model("coco_yolov5n", int8=True, bf16=True, calib_frames=8, max_drop=0.02, method="minmax")
    r8 = result["int8"]
    assert r8["calibration_frames"] == 8 and r8["eval_images"] > 10
    lock = registry.read_lock("coco_yolov5n")
    # accepted exactly when recall held within 2 points, and only then recorded
    assert r8["accepted"] == (r8["recall"] >= r8["recall_fp32"] - 0.02)
    assert ("int8" in lock["variants"]) == r8["accepted"]
    if not r8["accepted"]:
        pytest.fail(f"INT8 coco_yolov5n lost recall: {r8}")
    path = registry.resolve_onnx("coco_yolov5n", "int8")
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # the head's decode (Sigmoid/Mul/Add/Concat...) is not quantized: none of its non-Conv nodes feed from DQ nodes
    head = set(head_nodes_to_exclude(private_coco / "model.onnx"))
    assert head
    # (constants such as a shared scalar may be stored quantized; activations must not be)
    produced_by_q = {o for n in graph.node if n.op_type == "QuantizeLinear" for o in n.output}
    activation_dq = {o for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in produced_by_q
                     for o in n.output}
    for n in graph.node:
        if n.name in head and n.op_type in ("Sigmoid", "Mul", "Add", "Pow"):
            assert not (set(n.input) & activation_dq), n.name
    assert path.stat().st_size < 0.5 * (private_coco / "model.onnx").stat().st_size
    # the variant runs through the same detector API
    det = load_detector("coco_yolov5n", variant="int8")
    assert det.detect([np.full((720, 1280, 3), 114, np.uint8)])[0].labels == det.labels
    if "bf16" in result and result["bf16"].get("recall") is not None:
        assert result["bf16"]["accepted"] == ("bf16" in lock["variants"])


def test_openvino_provider_runs_the_same_onnx():
    from seawatch.vision.export.quantize import openvino_bf16_supported

    if not openvino_bf16_supported():
        pytest.skip("OpenVINO missing or this CPU has no native bf16")
    from seawatch.vision.detector import load_detector

    onnx_model("fire_smoke")
    a = load_detector("fire_smoke", conf=0.05)
    b = load_detector("fire_smoke", conf=0.05, providers=["openvino-bf16"])
    assert b.providers == ["OpenVINO-CPU-bf16"]
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    ra, rb = a._run(a._pre([img]).tensor.copy()), b._run(b._pre([img]).tensor.copy())
    assert ra.shape == rb.shape
    # bf16 keeps 8 bits of mantissa: class scores agree to about 1e-2
    assert np.abs(ra[:, 4:] - rb[:, 4:]).max() < 0.05


def test_bad_openvino_precision_is_a_model_error():
    from seawatch.errors import ModelError
    from seawatch.vision.detector import load_detector

    onnx_model("fire_smoke")
    with pytest.raises(ModelError, match="precision"):
        load_detector("fire_smoke", providers=["openvino-int4"])


@pytest.mark.slow
def test_bench_prints_ratios_for_each_engine(shared_media):
    import subprocess
    import sys

    onnx_model("coco_yolov5n")
    res = subprocess.run([sys.executable, "-m", "seawatch", "bench", "detector", "--models", "coco_yolov5n",
                          "--rounds", "2", "--json"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    r = out["results"]["coco_yolov5n"]
    assert out["frame_hw"] == [1080, 1920]
    for key in ("stock", "stock_torch2t", "ort_fp32"):
        assert r[key] > 0
    assert 0 < r["pre_post_share_of_infer"] < 1
    assert r["input_hw"][1] == 640 and r["input_hw"][0] < 640  # rectangular letterbox of a 16:9 frame


def test_agreement_counts_confident_reference_boxes_reproduced():
    from seawatch.vision.detections import Detections
    from seawatch.vision.export.cmd_quantize import agreement

    labels = ("vessel", "person")
    ref = [Detections([[0, 0, 100, 100], [200, 200, 300, 300], [400, 400, 420, 420]], [0.9, 0.8, 0.3], [0, 1, 0], labels)]
    same = [Detections([[2, 0, 102, 100], [200, 200, 300, 300]], [0.85, 0.7], [0, 1], labels)]
    assert agreement(ref, same, threshold=0.25) == 1.0  # the 0.3 box is borderline and does not count
    wrong_label = [Detections([[2, 0, 102, 100], [200, 200, 300, 300]], [0.85, 0.7], [0, 0], labels)]
    assert agreement(ref, wrong_label, threshold=0.25) == 0.5
    assert agreement(ref, [Detections.empty(labels)], threshold=0.25) == 0.0
    assert agreement([Detections.empty(labels)], [Detections.empty(labels)], threshold=0.25) != agreement(
        [Detections.empty(labels)], [Detections.empty(labels)], threshold=0.25)  # nan: nothing to agree on
