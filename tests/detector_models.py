"""Small ONNX models and temporary registry entries for detector tests.

- :func:`make_constant_model` writes a tiny hand-built ONNX graph whose raw output is a known table of boxes
  (in letterbox pixels) with the score channels multiplied by the brightest input value of each image. It
  checks the whole detector path (letterbox, one run per batch, decode, NMS, un-letterbox) against exact
  expectations, and batch order (a black frame scores lower than a white one).
- :func:`export_random_yolov8n` exports ``YOLO("yolov8n.yaml")`` (random weights, no download) with dynamic
  axes: the real architecture, for shapes, batching and timing.
- :func:`register` writes a manifest and a lock so ``registry.resolve_onnx`` / ``load_detector`` find them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

NAMES8 = ("boat", "fire", "smoke", "person", "helmet", "dog", "car", "cat")
LABELS8 = {"boat": "vessel", "fire": "fire", "smoke": "smoke", "person": "person", "helmet": "helmet", "car": "car"}


def make_constant_model(path: Path, table: np.ndarray, output_format: str, opset: int = 17,
                        input_shape: tuple = ("B", 3, "H", "W")) -> Path:
    """ONNX model: input ``x (B, 3, H, W)`` (all dynamic) -> raw output built from ``table``.

    ``table`` is ``(N, 4 + nc)`` for "yolov8" (cx, cy, w, h, class scores) or ``(N, 5 + nc)`` for "yolov5"
    (cx, cy, w, h, objectness, class probs). The output is ``(B, 4+nc, N)`` resp. ``(B, N, 5+nc)``; scores
    (yolov8) or objectness (yolov5) are multiplied by ``max(x[b])`` so a frame's brightness gates its boxes.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.asarray(table, np.float32)
    if output_format == "yolov8":
        const = table.T[None]  # (1, 4+nc, N)
        gated = np.zeros_like(const)
        gated[:, 4:] = const[:, 4:]
        fixed = const - gated
        out_shape = [input_shape[0], const.shape[1], const.shape[2]]
    else:
        const = table[None]  # (1, N, 5+nc)
        gated = np.zeros_like(const)
        gated[:, :, 4] = const[:, :, 4]
        fixed = const - gated
        out_shape = [input_shape[0], const.shape[1], const.shape[2]]
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("ReduceMax", ["flat"], ["mx"], axes=[1], keepdims=1),
        helper.make_node("Unsqueeze", ["mx", "ax2"], ["m"]),
        helper.make_node("Mul", ["gated", "m"], ["g"]),
        helper.make_node("Add", ["fixed", "g"], ["output0"]),
    ]
    inits = [numpy_helper.from_array(gated, "gated"), numpy_helper.from_array(fixed, "fixed"),
             numpy_helper.from_array(np.array([2], np.int64), "ax2")]
    graph = helper.make_graph(
        nodes, "const_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def export_random_yolov8n(out_dir: Path) -> Path:
    """Export ``YOLO("yolov8n.yaml")`` (random weights, 80 classes) to ONNX with dynamic batch/height/width."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(out_dir / "ultralytics_cfg"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    out_dir.mkdir(parents=True, exist_ok=True)
    model = YOLO("yolov8n.yaml")
    cwd = os.getcwd()
    os.chdir(out_dir)  # ultralytics writes next to the model name
    try:
        p = model.export(format="onnx", dynamic=True, imgsz=640, opset=17, simplify=False, verbose=False)
    finally:
        os.chdir(cwd)
    return Path(p) if Path(p).is_absolute() else out_dir / p


def manifest_dict(name: str, classes, labels: dict, output_format: str, **defaults) -> dict:
    d = {
        "name": name,
        "family": "onnx",
        "output_format": output_format,
        "source": {"kind": "local_onnx", "paths": ["/nonexistent/test.onnx"]},
        "licence": "test",
        "classes": list(classes),
        "labels": dict(labels),
        "stride_px": 32,
    }
    if defaults:
        d["defaults"] = defaults
    return d


def register(root: Path, onnx_path: Path, manifest: dict) -> None:
    """Write ``manifest`` to ``root/manifests`` and the model + lock into the cache ``root/cache``.

    Call with SEAWATCH_MODELS_PATH=root/manifests and SEAWATCH_CACHE=root/cache set (see :func:`env_for`).
    """
    from seawatch.vision import registry

    name = manifest["name"]
    mdir = root / "manifests"
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / f"{name}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    old = os.environ.get("SEAWATCH_CACHE")
    os.environ["SEAWATCH_CACHE"] = str(root / "cache")
    try:
        dest = registry.model_dir(name) / "model.onnx"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(Path(onnx_path).read_bytes())
        registry.write_lock(name, {"name": name, "variants": {"fp32": {"file": "model.onnx",
                                                                        "sha256": registry.sha256_file(dest)}}})
    finally:
        if old is None:
            os.environ.pop("SEAWATCH_CACHE", None)
        else:
            os.environ["SEAWATCH_CACHE"] = old


def env_for(root: Path) -> dict[str, str]:
    return {"SEAWATCH_MODELS_PATH": str(root / "manifests"), "SEAWATCH_CACHE": str(root / "cache")}


_CACHE: dict[str, Path] = {}


def cached_random_yolov8n() -> Path:
    """:func:`export_random_yolov8n` once per test session (into a temp dir removed at exit)."""
    if "y8" not in _CACHE:
        import atexit
        import shutil
        import tempfile

        d = Path(tempfile.mkdtemp(prefix="seawatch_y8_"))
        atexit.register(shutil.rmtree, d, True)
        _CACHE["y8"] = export_random_yolov8n(d)
    return _CACHE["y8"]


def coco_like_manifest(name: str = "test_y8", **defaults) -> dict:
    """Manifest for the random 80-class yolov8n: class c0 -> person, c2 -> car, c8 -> vessel, the rest dropped."""
    classes = [f"c{i}" for i in range(80)]
    return manifest_dict(name, classes, {"c0": "person", "c2": "car", "c8": "vessel"}, "yolov8", **defaults)
