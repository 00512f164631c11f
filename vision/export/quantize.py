"""Precision variants of a provisioned model: static INT8 (QDQ, calibrated on real frames) and OpenVINO bf16.

INT8: ONNX Runtime's static quantizer with QDQ nodes, per-channel symmetric weights and asymmetric uint8
activations calibrated on letterboxed real frames of the model's own domain. The detection head's decode
(distribution focal loss, sigmoid, box arithmetic, concatenations) stays in float: quantizing box coordinates
and class scores to 8 bits costs far more recall than it saves time. Only its convolutions are quantized.

bf16: no file is written; OpenVINO compiles the fp32 ONNX with ``INFERENCE_PRECISION_HINT=bf16`` on CPUs that
have bf16 instructions (AVX512_BF16 / AMX). A variant is only recorded in the lock after the caller has checked
that its recall on evaluation frames stays within 2 points of fp32.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from seawatch.errors import ExportError

from seawatch.vision.export.fuse import NODE_PREFIX

log = logging.getLogger(__name__)

_LAYER = re.compile(r"/model\.(\d+)/")


def head_prefix(node_names: Iterable[str]) -> str | None:
    """The name prefix of the last layer (the detection head) in an ultralytics/YOLOv5 export, e.g. ``/model.22/``."""
    idx = [int(m.group(1)) for n in node_names if (m := _LAYER.search(n))]
    return f"/model.{max(idx)}/" if idx else None


def head_nodes_to_exclude(model_path: Path) -> list[str]:
    """Nodes of the detection head other than its convolutions (kept in float)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    prefix = head_prefix(n.name for n in graph.node)
    if prefix is None:
        return []
    head = [n.name for n in graph.node if prefix in n.name and n.op_type != "Conv"]
    front = [n.name for n in graph.node if n.name.startswith(NODE_PREFIX)]  # fused uint8 input: stays as is
    return front + head


class _Batches:
    """Adapts an iterable of input batches (``(1, 3, H, W) float32`` or, for graphs with a fused input,
    ``(1, H, W, 3) uint8``) to ORT's CalibrationDataReader protocol."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(batches)
        self.count = 0

    def get_next(self):
        arr = next(self._it, None)
        if arr is None:
            return None
        self.count += 1
        return {self.input_name: np.ascontiguousarray(arr)}

    def rewind(self):  # the quantizer calls this on some versions; one pass is all we need
        pass


def quantize_int8(src: Path, dst: Path, calibration: Iterable[np.ndarray], *, exclude_head: bool = True,
                  method: str = "minmax", per_channel: bool = True) -> dict:
    """Write a static INT8 QDQ model to ``dst`` (atomically). Returns facts for the lock record.

    ``calibration`` yields preprocessed input tensors in the model's input layout (``(1, 3, H, W) float32`` in
    [0, 1], or ``(1, H, W, 3) uint8`` BGR for fused-input graphs); shapes may differ between items (dynamic
    models). The fused front end (uint8 -> float) and the head's decode stay in float.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ExportError(f"unknown calibration method {method!r} (use {', '.join(methods)})")
    src, dst = Path(src), Path(dst)
    input_name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory(prefix="seawatch-q-", dir=dst.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimisation; quantize the original if it fails
            log.warning("quant_pre_process failed on %s (%s); quantizing the model as exported", src, exc)
            shutil.copyfile(src, pre)
        exclude = head_nodes_to_exclude(pre) if exclude_head else []
        reader = _Batches(input_name, calibration)
        out = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                str(pre), str(out), reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                calibrate_method=methods[method],
                nodes_to_exclude=exclude,
                # The calibrator keeps every intermediate tensor of every frame until the end (about 0.5 GB per
                # 640 px frame on the 44 MB `fall` model; 48 frames were OOM-killed at 24 GB), so callers keep the
                # frame count modest. CalibMaxIntermediateOutputs would bound it, but this onnxruntime's MinMax
                # calibrator discards each chunk without folding it into the ranges, so it is not used.
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        except Exception as exc:
            raise ExportError(f"INT8 quantization of {src} failed: {exc}") from exc
        if reader.count == 0:
            raise ExportError("INT8 quantization needs calibration frames; none were given")
        onnx.checker.check_model(str(out))
        tmp_dst = dst.with_name(f".{dst.name}.tmp")
        shutil.move(str(out), tmp_dst)
        tmp_dst.replace(dst)
    return {"calibration_frames": reader.count, "method": method, "per_channel": per_channel,
            "excluded_head_nodes": len(exclude)}


def openvino_bf16_supported() -> bool:
    """Whether OpenVINO is installed and the CPU runs bf16 natively."""
    try:
        import openvino as ov
    except ImportError:
        return False
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in caps
