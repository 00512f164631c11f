"""Move the image normalisation into the ONNX graph: the model then takes the letterboxed frame as it is.

An exported YOLO graph takes ``(B, 3, H, W) float32`` RGB in [0, 1]. Producing that in numpy (BGR -> RGB, HWC ->
CHW, ``/ 255``) is a strided pass over every pixel of every frame, about half of the CPU-side cost per frame on
the smallest models. :func:`fuse_uint8_input` prepends four nodes so the graph takes ``(B, H, W, 3) uint8`` BGR
(the letterboxed OpenCV frame, no conversion) and does the same arithmetic inside the runtime, multithreaded:

    images_u8 (B, H, W, 3) uint8 BGR
      -> Transpose(0, 3, 1, 2)        on bytes: a quarter of the memory traffic of a float transpose
      -> Gather(axis=1, [2, 1, 0])    BGR -> RGB
      -> Cast(float32)
      -> Div(255)                     an IEEE division, bit-identical to numpy's ``x / 255`` in float32
      -> the original input tensor

Only here at export time is the ``onnx`` package needed; the runtime reads the input's dtype and layout
(:class:`seawatch.vision.detector.OnnxDetector`) and feeds either kind of graph.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from seawatch.errors import ExportError

log = logging.getLogger(__name__)

FUSED_INPUT_NAME = "images_u8"
NODE_PREFIX = "seawatch_input/"  # front-end node names: the INT8 quantizer leaves them alone
LAYOUT = {"layout": "NHWC", "dtype": "uint8", "channels": "BGR", "name": FUSED_INPUT_NAME}


def front_end_node_names() -> list[str]:
    return [NODE_PREFIX + n for n in ("transpose", "bgr_to_rgb", "cast", "scale")]


def is_fused(model_path: str | os.PathLike) -> bool:
    """True when the ONNX file already takes uint8 NHWC input (through onnxruntime; no onnx package needed)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    return inp.type == "tensor(uint8)" and len(inp.shape) == 4 and inp.shape[3] == 3


def fuse_uint8_input(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """Write ``src`` with a uint8 NHWC BGR front end to ``dst`` (atomically; ``dst`` may equal ``src``).

    Raises ExportError when the graph does not have exactly one ``(B, 3, H, W)`` float input.
    Returns the new input description for the lock record.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ExportError(f"{src}: expected one image input, found {[i.name for i in inputs]}")
    old = inputs[0]
    ttype = old.type.tensor_type
    if ttype.elem_type != TensorProto.FLOAT or len(ttype.shape.dim) != 4:
        raise ExportError(f"{src}: input {old.name} is not a 4-D float tensor; nothing to fuse")
    dims = list(ttype.shape.dim)
    if dims[1].HasField("dim_value") and dims[1].dim_value != 3:
        raise ExportError(f"{src}: input {old.name} has {dims[1].dim_value} channels, expected 3")
    if any(n.name.startswith(NODE_PREFIX) for n in graph.node):
        raise ExportError(f"{src}: already has a fused input")

    def dim(d, fallback: str):
        return d.dim_value if d.HasField("dim_value") else (d.dim_param or fallback)

    new_shape = [dim(dims[0], "batch"), dim(dims[2], "height"), dim(dims[3], "width"), 3]
    new_input = helper.make_tensor_value_info(FUSED_INPUT_NAME, TensorProto.UINT8, new_shape)
    t, g, c, s = front_end_node_names()
    rgb_idx = NODE_PREFIX + "rgb_index"
    scale = NODE_PREFIX + "255"
    graph.initializer.extend([
        numpy_helper.from_array(np.array([2, 1, 0], np.int64), rgb_idx),
        numpy_helper.from_array(np.array(255.0, np.float32), scale),
    ])
    front = [
        helper.make_node("Transpose", [FUSED_INPUT_NAME], [t + ":0"], name=t, perm=[0, 3, 1, 2]),
        helper.make_node("Gather", [t + ":0", rgb_idx], [g + ":0"], name=g, axis=1),
        helper.make_node("Cast", [g + ":0"], [c + ":0"], name=c, to=TensorProto.FLOAT),
        helper.make_node("Div", [c + ":0", scale], [old.name], name=s),
    ]
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    others = [i for i in graph.input if i.name != old.name]
    del graph.input[:]
    graph.input.extend([new_input, *others])
    meta = {p.key: p for p in model.metadata_props}
    if "seawatch_input" in meta:
        meta["seawatch_input"].value = "uint8 NHWC BGR"
    else:
        model.metadata_props.append(onnx.StringStringEntryProto(key="seawatch_input", value="uint8 NHWC BGR"))
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError(f"{src}: the fused graph does not validate: {exc}") from exc
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dict(LAYOUT)


def unfuse(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write ``src`` without the fused front end: the plain ``(B, 3, H, W) float32`` graph again (for tools such
    as ultralytics' predict that feed normalised tensors). Raises ExportError when ``src`` has no fused input."""
    import onnx
    from onnx import TensorProto, helper

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    graph = model.graph
    front = [n for n in graph.node if n.name.startswith(NODE_PREFIX)]
    if len(front) != 4 or graph.input[0].name != FUSED_INPUT_NAME:
        raise ExportError(f"{src}: has no fused uint8 input")
    dims = graph.input[0].type.tensor_type.shape.dim

    def dim(d):
        return d.dim_value if d.HasField("dim_value") else (d.dim_param or None)

    plain_name = front[-1].output[0]
    plain = helper.make_tensor_value_info(plain_name, TensorProto.FLOAT, [dim(dims[0]), 3, dim(dims[1]), dim(dims[2])])
    keep = [n for n in graph.node if not n.name.startswith(NODE_PREFIX)]
    del graph.node[:]
    graph.node.extend(keep)
    inits = [i for i in graph.initializer if not i.name.startswith(NODE_PREFIX)]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    others = list(graph.input)[1:]
    del graph.input[:]
    graph.input.extend([plain, *others])
    props = [p for p in model.metadata_props if p.key != "seawatch_input"]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def check_fused(float_model: str | os.PathLike, fused_model: str | os.PathLike, frames_bgr: list[np.ndarray],
                imgsz: int, stride_px: int, tol: float = 1e-3) -> dict:
    """Run both graphs on the same letterboxed frames; the outputs must agree within ``tol`` (max abs; boxes are
    in input pixels, scores in [0, 1]).

    The float graph gets the numpy-normalised tensor, the fused one the uint8 frame; the input tensors are
    bit-identical, so any difference comes from graph optimisation only.
    """
    import onnxruntime as ort

    from seawatch.vision.preprocess import Preprocessor

    a = ort.InferenceSession(str(float_model), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(fused_model), providers=["CPUExecutionProvider"])
    shape = a.get_inputs()[0].shape
    fixed = (shape[2], shape[3]) if all(isinstance(d, int) and d > 0 for d in shape[2:]) else None
    pre_f = Preprocessor(imgsz, stride_px, fixed_hw=fixed)
    pre_u = Preprocessor(imgsz, stride_px, fixed_hw=fixed, layout="nhwc_u8")
    worst = 0.0
    for frame in frames_bgr:
        ra = a.run(None, {a.get_inputs()[0].name: pre_f([frame]).tensor})[0]
        rb = b.run(None, {FUSED_INPUT_NAME: pre_u([frame]).tensor})[0]
        if ra.shape != rb.shape:
            raise ExportError(f"fused graph output {rb.shape} differs in shape from {ra.shape}")
        worst = max(worst, float(np.max(np.abs(ra - rb))) if ra.size else 0.0)
    if not worst <= tol:
        raise ExportError(f"fused-input graph differs from the float graph by {worst:.3g} (tolerance {tol})")
    return {"frames": len(frames_bgr), "max_abs_diff": worst}
