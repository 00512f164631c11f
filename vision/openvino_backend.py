"""OpenVINO as an alternative runtime for the same ONNX files (bf16 on CPUs with AVX512_BF16 / AMX).

:class:`OpenVinoSession` offers the small part of ``onnxruntime.InferenceSession`` the detector uses
(``get_inputs``, ``get_outputs``, ``get_providers``, ``run``), so the detector's pre- and post-processing are
shared and only the engine differs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seawatch.errors import ModelError


@dataclass(frozen=True)
class _Arg:
    name: str
    shape: list
    type: str


class OpenVinoSession:
    """Compile an ONNX file with OpenVINO on the CPU.

    Args:
        path: the ONNX file.
        precision: ``"bf16"`` or ``"f32"`` (OpenVINO's INFERENCE_PRECISION_HINT).
        threads: inference threads (0 = OpenVINO's default).
        streams: CPU streams (parallel requests); 1 for latency.
    """

    def __init__(self, path: str | Path, precision: str = "bf16", threads: int = 0, streams: int = 1):
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelError("OpenVINO is not installed (pip install 'seawatch[openvino]')") from exc
        if precision not in ("bf16", "f32"):
            raise ModelError(f"OpenVINO precision must be bf16 or f32, not {precision!r}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ModelError("this CPU has no native bf16 (AVX512_BF16 / AMX); OpenVINO would emulate it")
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": str(streams)}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(int(threads))
        try:
            model = core.read_model(str(path))
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelError(f"OpenVINO cannot compile {path}: {exc}") from exc
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self.precision = precision

        def args(ports):
            out = []
            for p in ports:
                ps = p.get_partial_shape()
                shape = [d.get_length() if d.is_static else None for d in ps]
                out.append(_Arg(p.get_any_name(), shape, f"tensor({p.get_element_type().get_type_name()})"))
            return out

        self._inputs = args(self._compiled.inputs)
        self._outputs = args(self._compiled.outputs)

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def get_providers(self) -> list[str]:
        return [f"OpenVINO-CPU-{self.precision}"]

    def run(self, output_names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = output_names or [o.name for o in self._outputs]
        with self._lock:  # one infer request: analysis workers sharing this model take turns on it
            res = self._request.infer(feeds)
            by_name = {k.get_any_name(): v for k, v in res.items()}
            return [np.array(by_name[n], copy=True) for n in names]  # the request's buffers are reused by the next infer
