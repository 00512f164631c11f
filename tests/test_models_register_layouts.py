"""``seawatch models register``: model layouts the detector cannot decode or feed are refused at registration.

Each case is a tiny ONNX graph built here with ``onnx.helper`` (a constant output table, a 1x1 convolution, or a
graph that fails at run time), registered into a throwaway cache (SEAWATCH_CACHE / SEAWATCH_MODELS_PATH in tmp):

- end-to-end (NMS inside the graph) outputs, ``(B, max_det, 6)`` x1, y1, x2, y2, score, class id: refused by their
  ``end2end`` metadata, or for one class without metadata by a probe inference (the yolov5 layout has the same
  shape), instead of decoding as yolov5 into nothing;
- ultralytics YOLO26 checkpoints export the raw ``(B, 4 + nc, N)`` head, checked against the same PyTorch output;
- inputs other than ``(B, 3, H, W)`` float and ``(B, H, W, 3)`` uint8, graphs that fail at run time, and output
  formats that contradict the output dims are refused at registration; a broken provisioned model is skipped by
  ``seawatch detect``'s default (every model) run, not fatal to it;
- ``names`` metadata that is not ``{class id: name}`` with ids 0..N-1 asks for ``--classes``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import has_module
from seawatch import cli
from seawatch.errors import ExportError, InputError, ModelError
from seawatch.vision import cmd_models_register, registry
from seawatch.vision.cmd_models_register import _names_from_meta, infer_output_format
from seawatch.vision.export import fetch
from test_fetch import env  # noqa: F401  (a throwaway cache and manifest folder)


# ---------------------------------------------------------------------------------------------------- helpers
def const_onnx(path: Path, out: np.ndarray, *, in_shape=("B", 3, "H", "W"), in_type: str = "float",
               names=("vessel",), meta: dict | None = None, out_dims: list | None = None,
               fail_unless_hw: int | None = None) -> Path:
    """A graph whose output is the constant ``out`` (leading axis 1, broadcast over the batch); the input only
    feeds a zero. ``fail_unless_hw``: the graph also reshapes the input to (1, 3 * s * s), which fails at run time
    for any other input size (ONNX Runtime loads it: H, W are free axes)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    out = np.asarray(out, np.float32)
    src = "images"
    nodes = [h.make_node("Cast", ["images"], ["xf"], to=T.FLOAT)]
    inits = [nh.from_array(out, "c"), nh.from_array(np.zeros((), np.float32), "zero")]
    if fail_unless_hw:
        nodes.append(h.make_node("Reshape", ["xf", "flat"], ["xr"]))
        inits.append(nh.from_array(np.array([1, 3 * fail_unless_hw ** 2], np.int64), "flat"))
        src = "xr"
    else:
        src = "xf"
    nodes += [
        h.make_node("ReduceMax", [src], ["m"], keepdims=0),  # a scalar
        h.make_node("Mul", ["m", "zero"], ["z"]),
        h.make_node("Add", ["z", "c"], ["output0"]),
    ]
    dtype = {"float": T.FLOAT, "uint8": T.UINT8, "double": T.DOUBLE}[in_type]
    graph = h.make_graph(nodes, "const", [h.make_tensor_value_info("images", dtype, list(in_shape))],
                         [h.make_tensor_value_info("output0", T.FLOAT, out_dims or ["B", *out.shape[1:]])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    entries = dict(meta or {})
    if names is not None:
        entries.setdefault("names", repr(dict(enumerate(names))))
    for k, v in entries.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_onnx(path: Path, nc: int = 1, names=("vessel",), meta: dict | None = None) -> Path:
    """yolov8-like (B, 3, H, W) -> (batch, 4 + nc, anchors) by a 1x1 convolution (symbolic output axes, as in a
    dynamic ultralytics export); the scores are made positive so a grey frame gives some candidates."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    ch = 4 + nc
    w = np.random.default_rng(0).standard_normal((ch, 3, 1, 1)).astype(np.float32)
    nodes = [h.make_node("Conv", ["images", "w"], ["c"]), h.make_node("Reshape", ["c", "shape"], ["r"]),
             h.make_node("Abs", ["r"], ["output0"])]
    graph = h.make_graph(nodes, "conv", [h.make_tensor_value_info("images", T.FLOAT, ["batch", 3, "height", "width"])],
                         [h.make_tensor_value_info("output0", T.FLOAT, ["batch", ch, "anchors"])],
                         [nh.from_array(w, "w"), nh.from_array(np.array([0, ch, -1], np.int64), "shape")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in {"names": repr(dict(enumerate(names))), **(meta or {})}.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(path))
    return path


def e2e_table(n: int = 300) -> np.ndarray:
    """(1, n, 6) end-to-end output: x1, y1, x2, y2, score, class id 0 (one class)."""
    return np.tile(np.array([[100, 100, 300, 200, 0.9, 0]], np.float32), (1, n, 1))


def v8_table(nc: int = 1, n: int = 10) -> np.ndarray:
    """(1, 4 + nc, n) yolov8 output with one good box (cx, cy, w, h in letterbox pixels) at anchor 0."""
    a = np.zeros((1, 4 + nc, n), np.float32)
    a[0, :4, 0] = (200, 150, 200, 100)
    a[0, 4, 0] = 0.9
    return a


def run_register(*argv) -> int:
    p = argparse.ArgumentParser()
    cmd_models_register.add_arguments(p)
    return cmd_models_register.run(p.parse_args([str(a) for a in argv]))


def nothing_registered(name: str) -> bool:
    return not (registry.user_manifest_dir() / f"{name}.yaml").exists() and registry.read_lock(name) is None


# ------------------------------------------------------------------------------------ 1. end-to-end outputs
def test_end2end_metadata_is_refused_even_with_an_output_format(env):
    src = const_onnx(env / "e2e.onnx", e2e_table(), meta={"end2end": "True"})
    for extra in ([], ["--output-format", "yolov5"]):
        with pytest.raises(InputError, match=r"end-to-end export \(metadata end2end=True.*nms=None"):
            run_register(src, "--name", "e2e", *extra)
        assert nothing_registered("e2e")


def test_one_class_n_by_6_without_metadata_is_probed(env):
    # the class-id column is 0 everywhere: end-to-end, which would decode as yolov5 into no detections at all
    src = const_onnx(env / "e2e.onnx", e2e_table())
    with pytest.raises(InputError, match=r"look like an end-to-end export.*--output-format yolov5"):
        run_register(src, "--name", "e2e")
    assert nothing_registered("e2e")
    # the user's word is taken for it
    assert run_register(src, "--name", "e2e", "--output-format", "yolov5") == 0
    assert registry.get_manifest("e2e").output_format == "yolov5"


def test_one_class_raw_yolov5_is_proven_by_the_probe(env):
    raw = np.zeros((1, 10, 6), np.float32)
    raw[0, :, :4] = (320, 240, 100, 50)
    raw[0, :, 4], raw[0, :, 5] = 0.02, 0.97  # objectness, class probability
    src = const_onnx(env / "v5.onnx", raw)
    assert run_register(src, "--name", "v5") == 0
    assert registry.get_manifest("v5").output_format == "yolov5"


def test_one_class_n_by_6_that_cannot_be_probed_needs_the_output_format(env):
    src = const_onnx(env / "v5x.onnx", e2e_table(), fail_unless_hw=32)
    with pytest.raises(InputError, match=r"probe inference could not tell; pass --output-format yolov5"):
        run_register(src, "--name", "v5x")
    assert nothing_registered("v5x")


# ------------------------------------------------------------------------------------------ 2. YOLO26 .pt
needs_ultralytics = pytest.mark.skipif(not (has_module("torch") and has_module("ultralytics")),
                                       reason="export toolchain absent")


def _tiny_detection_model(cfg: str):
    from seawatch.vision.export.loaders import prepare_ultralytics_env

    prepare_ultralytics_env()
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=1, verbose=False)  # the packaged yaml: no download
    model.names = {0: "vessel"}
    return model


@pytest.mark.export
@needs_ultralytics
def test_yolo26_checkpoint_exports_the_raw_head_and_matches_torch(env):
    import onnx
    import onnxruntime as ort
    import torch

    model = _tiny_detection_model("yolo26n.yaml")
    assert getattr(model.model[-1], "one2one_cv2", None) is not None  # the NMS-free branch is there
    pt = env / "tiny26.pt"
    torch.save({"model": model.half(), "train_args": {"imgsz": 64}}, pt)
    assert run_register(pt, "--name", "tiny26") == 0  # with the PyTorch vs ONNX Runtime check
    lock = registry.read_lock("tiny26")
    c = lock["check"]
    assert c["max_abs_diff_boxes_px"] <= c["tol_boxes_px"] and c["max_abs_diff_scores"] <= c["tol_scores"]
    path = registry.resolve_onnx("tiny26")
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta.get("end2end") == "False"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: np.full((2, 64, 96, 3), 114, np.uint8)})[0]
    assert y.shape == (2, 4 + 1, (64 // 8) * (96 // 8) + (64 // 16) * (96 // 16) + (64 // 32) * (96 // 32))
    # the same raw head in PyTorch: decoded xywh boxes and sigmoid scores, not top-k rows
    m = model.float().eval()
    with torch.no_grad():
        ref = m(torch.full((1, 3, 64, 96), 114 / 255))[0].numpy()
    assert ref.shape == (1, 5, y.shape[2])
    assert np.abs(ref - y[:1]).max() < 1e-2


@needs_ultralytics
def test_raw_head_selects_the_one_to_many_branch_or_says_why_not():
    from types import SimpleNamespace

    m = SimpleNamespace(name="x")
    model = _tiny_detection_model("yolo26n.yaml")
    model.end2end = True  # what ultralytics' nms=False did
    fetch.raw_head(SimpleNamespace(module=model), m)
    assert model.end2end is False
    v8 = _tiny_detection_model("yolov8n.yaml")
    before = dict(vars(v8.model[-1]))
    fetch.raw_head(SimpleNamespace(module=v8), m)  # no end-to-end branch: left exactly as it was
    assert dict(vars(v8.model[-1])) == before
    model.model[-1].cv2 = None  # a fused end-to-end checkpoint: only the one-to-one branch is left
    with pytest.raises(ExportError, match="only the NMS-free"):
        fetch.raw_head(SimpleNamespace(module=model), m)


# ---------------------------------------------------------------------------- 3. inputs, outputs, warm-up
@pytest.mark.parametrize("in_shape, in_type", [
    ((1, 640, 640, 3), "float"),           # NHWC float, static
    (("B", "H", "W", 3), "float"),         # NHWC float, dynamic
    (("B", 3, "H", "W"), "uint8"),         # NCHW bytes
    (("B", 3, "H", "W"), "double"),        # a dtype the detector never feeds
    (("B", "C", "H", "W"), "float"),       # channels not stated
])
def test_inputs_the_detector_cannot_feed_are_refused(env, in_shape, in_type):
    src = const_onnx(env / "in.onnx", v8_table(), in_shape=in_shape, in_type=in_type)
    with pytest.raises(ExportError, match=r"expected one image input, \(B, 3, H, W\) float32 / float16"):
        run_register(src, "--name", "badin")
    assert nothing_registered("badin")


@pytest.mark.parametrize("in_shape, in_type, layout", [
    (("B", 3, "H", "W"), "float", "nchw_f32"),
    ((1, 3, 640, 640), "float", "nchw_f32"),
    (("B", "H", "W", 3), "uint8", "nhwc_u8"),
])
def test_supported_inputs_register_and_detect(env, in_shape, in_type, layout, capsys):
    src = const_onnx(env / "ok.onnx", v8_table(), in_shape=in_shape, in_type=in_type)
    assert run_register(src, "--name", "ok") == 0
    assert registry.read_lock("ok")["check"]["warm_up"]["layout"] == layout


def test_detector_refuses_an_input_it_cannot_feed(env):
    from seawatch.vision.detector import OnnxDetector
    from seawatch.vision.registry import ModelManifest

    src = const_onnx(env / "nhwc.onnx", v8_table(), in_shape=(1, 640, 640, 3))
    m = ModelManifest.model_validate({"name": "nhwc", "family": "onnx", "output_format": "yolov8",
                                      "licence": "test", "source": {"kind": "local_onnx", "paths": [str(src)]},
                                      "classes": ["vessel"], "labels": {"vessel": "vessel"}})
    with pytest.raises(ModelError, match=r"tensor\(float\) \[1, 640, 640, 3\]; the detector feeds"):
        OnnxDetector(m, src, warmup=False)


def test_a_graph_that_fails_at_run_time_is_refused_by_the_warm_up(env):
    src = const_onnx(env / "rt.onnx", v8_table(), fail_unless_hw=32)
    with pytest.raises(ExportError, match="warm-up inference through the detector failed.*inference failed"):
        run_register(src, "--name", "rt")
    assert nothing_registered("rt")


def test_output_format_contradicting_the_output_dims_is_refused(env):
    src = conv_onnx(env / "v8.onnx")  # (batch, 5, anchors): yolov8 for one class
    with pytest.raises(InputError, match=r"--output-format says yolov5, but the output dims .* are yolov8"):
        run_register(src, "--name", "wrong", "--output-format", "yolov5")
    meta = conv_onnx(env / "v8m.onnx", meta={"output_format": "yolov5"})
    with pytest.raises(InputError, match=r"output_format metadata says yolov5, but .* are yolov8"):
        run_register(meta, "--name", "wrong")
    assert nothing_registered("wrong")
    assert run_register(src, "--name", "right", "--output-format", "yolov8") == 0


def test_warm_up_catches_an_output_format_the_symbolic_dims_hide(env):
    # fetch_model directly (register refuses this earlier): axis 2 is symbolic, so only running it can tell
    src = conv_onnx(env / "v8.onnx")
    m = registry.ModelManifest.model_validate({
        "name": "hidden", "family": "onnx", "output_format": "yolov5", "licence": "test",
        "source": {"kind": "local_onnx", "paths": [str(src)]}, "classes": ["vessel"], "labels": {"vessel": "vessel"},
    })
    with pytest.raises(ExportError, match=r"warm-up.*yolov5 output \(1, 5, \d+\) should be \(B, N, 6\)"):
        fetch.fetch_model(m, force=True)
    assert registry.read_lock("hidden") is None


def test_infer_output_format_says_nothing_when_dims_fit_both():
    assert infer_output_format(["B", 5, "N"], 1) == "yolov8"
    assert infer_output_format(["B", "N", 6], 1) == "yolov5"
    assert infer_output_format(["B", 5, 6], 1) is None
    assert infer_output_format(["B", "C", "N"], 1) is None


def test_detect_skips_a_broken_provisioned_model_in_the_default_run(env, monkeypatch, capsys):
    import cv2

    from detector_models import register

    good = const_onnx(env / "good.onnx", v8_table())
    bad = const_onnx(env / "bad.onnx", v8_table(), in_shape=(1, 640, 640, 3))  # provisioned by an older seawatch
    for name, src in (("good", good), ("bad", bad)):
        register(env, src, {"name": name, "family": "onnx", "output_format": "yolov8", "licence": "test",
                            "source": {"kind": "local_onnx", "paths": [str(src)]}, "classes": ["vessel"],
                            "labels": {"vessel": "vessel"}})
    img = env / "img.jpg"
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:200, 100:300] = 255
    cv2.imwrite(str(img), frame)
    rc = cli.main(["detect", "--no-progress", str(img)])
    cap = capsys.readouterr()
    lines = [json.loads(line) for line in cap.out.splitlines() if line.strip()]
    assert rc == 1  # something failed, as with an unreadable file
    assert [d["model"] for d in lines] == ["good"] and lines[0]["label"] == "vessel"
    assert "model 'bad' skipped" in cap.err and "1 of 2 models skipped: bad" in cap.err
    # named explicitly, a broken model stops the run
    assert cli.main(["detect", "--no-progress", str(img), "--models", "good,bad"]) == 1
    cap = capsys.readouterr()
    assert cap.out == "" and "the detector feeds" in cap.err


# ---------------------------------------------------------------------------------------- 4. names metadata
@pytest.mark.parametrize("value, names", [
    ("{0: 'boat', 1: 'person'}", ("boat", "person")),
    ("{1: 'person', 0: 'boat'}", ("boat", "person")),
    ('{"0": "boat", "1": "person"}', ("boat", "person")),
    ("['boat', 'person']", ("boat", "person")),
    ("", ()),
])
def test_names_metadata_understood(value, names):
    assert _names_from_meta(value) == names


@pytest.mark.parametrize("value, reason", [
    ("{'vessel': 0}", "not integer class ids"),
    ("{0: 'boat', 5: 'person'}", r"class ids \[0, 5\] are not 0..1 without gaps"),
    ("{1: 'boat'}", "without gaps"),
    ("{0.5: 'boat'}", "not integer class ids"),
    ("'boat'", "not a dict"),
    ("{0: 'boat',", "neither a Python nor a JSON literal"),
])
def test_names_metadata_not_understood(value, reason):
    with pytest.raises(ValueError, match=reason):
        _names_from_meta(value)


def test_unreadable_names_metadata_asks_for_classes(env):
    src = const_onnx(env / "strkeys.onnx", v8_table(), names=None, meta={"names": "{'vessel': 0}"})
    with pytest.raises(InputError, match=r"names metadata .* not understood: its keys are not integer.*--classes"):
        run_register(src, "--name", "strkeys")
    assert nothing_registered("strkeys")
    gaps = const_onnx(env / "gaps.onnx", v8_table(), names=None, meta={"names": "{0: 'vessel', 2: 'person'}"})
    with pytest.raises(InputError, match=r"without gaps.*--classes"):
        run_register(gaps, "--name", "gaps")
    assert run_register(src, "--name", "strkeys", "--classes", "vessel") == 0
    assert yaml.safe_load((registry.user_manifest_dir() / "strkeys.yaml").read_text())["classes"] == ["vessel"]
