"""The fused uint8 input: same letterbox bytes as the float path, same graph outputs, detector picks it up."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawatch.vision.preprocess import Preprocessor

onnx = pytest.importorskip("onnx", reason="onnx (export extra) builds the test graphs")


def _tiny_yolo_like(path, nc: int = 2, fixed_hw: tuple[int, int] | None = None) -> None:
    """A float (B, 3, H, W) graph: 1x1 conv to 4 + nc channels, flattened to a yolov8-like (B, 4 + nc, N) output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (4 + nc, 3, 1, 1)).astype(np.float32)
    h, wd = fixed_hw or ("height", "width")
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, h, wd])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + nc, "anchors"])
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], name="/model.0/conv"),
        helper.make_node("Sigmoid", ["c"], ["s"], name="/model.1/act"),
        helper.make_node("Mul", ["s", "gain"], ["g"], name="/model.1/gain"),  # boxes in pixels, scores in [0, 1]
        helper.make_node("Reshape", ["g", "shape"], ["output0"], name="/model.1/reshape"),
    ]
    gain = np.array([64, 64, 24, 24] + [1] * nc, np.float32).reshape(1, 4 + nc, 1, 1)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(gain, "gain"), numpy_helper.from_array(np.array([0, 4 + nc, -1], np.int64), "shape")]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), imgsz=st.sampled_from([64, 160, 320]), seed=st.integers(0, 9))
def test_uint8_layout_is_the_float_layout_before_normalising(h, w, imgsz, seed):
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    f = Preprocessor(imgsz, 32)([frame])
    u = Preprocessor(imgsz, 32, layout="nhwc_u8")([frame])
    assert u.tensor.dtype == np.uint8 and u.tensor.shape[3] == 3
    assert u.input_hw == f.input_hw
    for name in ("src_hw", "gain_xy", "pad_xy", "resized_hw", "scale"):
        np.testing.assert_array_equal(getattr(u, name), getattr(f, name))
    as_float = u.tensor[:, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(as_float, f.tensor)  # bit-identical, padding included


def test_uint8_layout_mixed_batch_matches_float():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((120, 200, 3), (200, 90, 3), (64, 64, 3))]
    f = Preprocessor(128, 32)(frames)
    u = Preprocessor(128, 32, layout="nhwc_u8")(frames)
    np.testing.assert_array_equal(u.tensor[..., ::-1].transpose(0, 3, 1, 2) / np.float32(255), f.tensor)


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="layout"):
        Preprocessor(64, 32, layout="nchw_u8")


@pytest.mark.parametrize("fixed", [None, (64, 96)])
def test_fused_graph_matches_the_float_graph(tmp_path, fixed):
    import onnxruntime as ort

    from seawatch.vision.export.fuse import FUSED_INPUT_NAME, check_fused, fuse_uint8_input, is_fused, unfuse

    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    _tiny_yolo_like(plain, fixed_hw=fixed)
    assert not is_fused(plain)
    desc = fuse_uint8_input(plain, fused)
    assert desc["dtype"] == "uint8" and is_fused(fused)
    inp = ort.InferenceSession(str(fused), providers=["CPUExecutionProvider"]).get_inputs()[0]
    assert inp.name == FUSED_INPUT_NAME and inp.type == "tensor(uint8)"
    if fixed:
        assert inp.shape[1:] == [64, 96, 3]
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (90, 40, 3), dtype=np.uint8)]
    res = check_fused(plain, fused, frames, 96 if fixed else 64, 32)
    assert res["frames"] == 2 and res["max_abs_diff"] <= 1e-6
    back = tmp_path / "back.onnx"
    unfuse(fused, back)  # and back: the plain graph's input, same outputs
    assert not is_fused(back)
    assert check_fused(back, fused, frames, 96 if fixed else 64, 32)["max_abs_diff"] <= 1e-6


def test_fusing_twice_or_a_non_image_graph_is_refused(tmp_path):
    from onnx import TensorProto, helper

    from seawatch.errors import ExportError
    from seawatch.vision.export.fuse import fuse_uint8_input

    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    _tiny_yolo_like(plain)
    fuse_uint8_input(plain, fused)
    with pytest.raises(ExportError):
        fuse_uint8_input(fused, tmp_path / "again.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["n"])
    m = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(tmp_path / "ints.onnx"))
    with pytest.raises(ExportError, match="not a 4-D float"):
        fuse_uint8_input(tmp_path / "ints.onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_detector_gives_the_same_detections_on_either_graph(tmp_path):
    from seawatch.vision.detector import OnnxDetector
    from seawatch.vision.export.fuse import fuse_uint8_input
    from seawatch.vision.registry import ModelManifest

    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    _tiny_yolo_like(plain)
    fuse_uint8_input(plain, fused)
    m = ModelManifest.model_validate({
        "name": "tiny", "task": "detect", "family": "onnx", "output_format": "yolov8",
        "classes": ["a", "b"], "labels": {"a": "vessel", "b": "person"}, "input_size_px": [64, 64],
        "source": {"kind": "local_onnx", "paths": [str(plain)]}, "licence": "AGPL-3.0",
        "defaults": {"conf": 0.2, "iou": 0.45, "imgsz": 64, "max_det": 50},
    })
    a = OnnxDetector(m, plain, providers="cpu")
    b = OnnxDetector(m, fused, providers="cpu")
    assert (a.layout, b.layout) == ("nchw_f32", "nhwc_u8")
    frame = np.random.default_rng(3).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    da, db = a.detect([frame])[0], b.detect([frame])[0]
    assert len(da) > 0
    np.testing.assert_array_equal(da.class_id, db.class_id)
    np.testing.assert_allclose(da.xyxy_px, db.xyxy_px, atol=1e-4)
    np.testing.assert_allclose(da.confidence, db.confidence, atol=1e-6)
