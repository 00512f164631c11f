"""ONNX Runtime detector: one session per model, one ``run`` per batch, vectorised pre- and post-processing.

>>> det = load_detector("coco_yolov5n", conf=0.3)          # doctest: +SKIP
>>> dets = det.detect([frame_bgr_1, frame_bgr_2])          # doctest: +SKIP
>>> det.last_timing.infer_ns                               # doctest: +SKIP

A detector owns a reusable input buffer, so use one instance per worker thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from seawatch.errors import ModelError
from seawatch.vision.detections import Detections
from seawatch.vision.postprocess import LabelMap, postprocess
from seawatch.vision.preprocess import Preprocessor, check_imgsz

log = logging.getLogger(__name__)

# Short names accepted in configs and on the command line.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}

# "auto" order. TensorRT is left out on purpose: it builds an engine per input shape (minutes, and again for
# each new rectangular letterbox shape); ask for it explicitly (providers=["tensorrt", "cuda", "cpu"]).
AUTO_ORDER = ("CUDAExecutionProvider", "OpenVINOExecutionProvider", "CoreMLExecutionProvider",
              "DmlExecutionProvider", "CPUExecutionProvider")


def select_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """Execution providers to ask onnxruntime for, best first, limited to those this onnxruntime build has.

    ``"auto"`` picks CUDA / OpenVINO / CoreML / DirectML when available, else CPU. A list (or a comma-separated
    string) is used in that order; names may be short (``cuda``, ``tensorrt``, ``openvino``, ``cpu``) or full.
    Providers this build lacks are skipped with a warning; CPU is always appended as the last resort.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if isinstance(providers, str):
        if providers.strip().lower() == "auto":
            return [p for p in AUTO_ORDER if p in available] or ["CPUExecutionProvider"]
        providers = [p for p in providers.split(",") if p.strip()]
    chosen: list[str] = []
    for p in providers:
        full = PROVIDER_ALIASES.get(p.strip().lower(), p.strip())
        if full not in available:
            log.warning("execution provider %s is not available in this onnxruntime build (have: %s); skipped",
                        full, ", ".join(available))
            continue
        if full not in chosen:
            chosen.append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall time of one ``detect`` call, by stage, in nanoseconds (``time.perf_counter_ns``)."""

    frames: int = 0
    runs: int = 0
    pre_ns: int = 0
    infer_ns: int = 0
    post_ns: int = 0

    @property
    def total_ns(self) -> int:
        return self.pre_ns + self.infer_ns + self.post_ns

    def __add__(self, other: "Timing") -> "Timing":
        return Timing(self.frames + other.frames, self.runs + other.runs, self.pre_ns + other.pre_ns,
                      self.infer_ns + other.infer_ns, self.post_ns + other.post_ns)


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Thresholds of one detector (manifest defaults unless overridden)."""

    conf: float
    iou: float
    imgsz: int
    max_det: int
    agnostic: bool = False


def _openvino_precision(providers: str | Sequence[str]) -> str | None:
    """``"bf16"`` / ``"f32"`` when providers asks for the OpenVINO runtime (``openvino-bf16``), else None."""
    first = providers.split(",")[0] if isinstance(providers, str) else (providers[0] if providers else "")
    first = str(first).strip().lower()
    if first.startswith("openvino-"):
        precision = first.split("-", 1)[1]
        if precision not in ("bf16", "f32"):
            raise ModelError(f"unknown OpenVINO precision {precision!r} (use openvino-bf16 or openvino-f32)")
        return precision
    return None


def _dim(v) -> int | None:
    return v if isinstance(v, int) and v > 0 else None


SUPPORTED_INPUTS = "(B, 3, H, W) float32 / float16 (RGB / 255) or (B, H, W, 3) uint8 (BGR bytes)"
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(f32)": np.float32,  # onnxruntime / OpenVINO spellings
                "tensor(float16)": np.float16, "tensor(f16)": np.float16}


def input_layout(onnx_type: str, shape: Sequence) -> tuple[str, type] | None:
    """The preprocessor layout and dtype that feed a graph input of ``onnx_type`` (``"tensor(float)"``...) and
    ``shape`` (ints, names or None for free axes), or None when the detector cannot feed it.

    Only the two inputs :class:`seawatch.vision.preprocess.Preprocessor` produces are accepted: ``"nchw_f32"``
    for ``(B, 3, H, W)`` float32 / float16 and ``"nhwc_u8"`` for ``(B, H, W, 3)`` uint8; the channel axis must be
    a literal 3 (a free axis there could be H or W of an NHWC graph).
    """
    if len(shape) != 4:
        return None
    if onnx_type in ("tensor(uint8)", "tensor(u8)") and shape[3] == 3:
        return "nhwc_u8", np.uint8
    if onnx_type in _FLOAT_TYPES and shape[1] == 3:
        return "nchw_f32", _FLOAT_TYPES[onnx_type]
    return None


class OnnxDetector:
    """A YOLO-style ONNX model behind one ``onnxruntime.InferenceSession``.

    Args:
        manifest: the model's :class:`seawatch.vision.registry.ModelManifest` (classes, labels, output format,
            stride and default thresholds).
        onnx_path: the ONNX file.
        conf, iou, imgsz, max_det: override the manifest defaults (``imgsz`` is rounded up to the stride).
        agnostic: class-agnostic NMS.
        providers: ``"auto"`` or a list of execution providers (see :func:`select_providers`); a first entry
            ``openvino-bf16`` / ``openvino-f32`` runs the graph with the OpenVINO runtime instead.
        intra_op_threads, inter_op_threads: onnxruntime thread pools (0 = onnxruntime's default).
        warmup: run one dummy batch at construction so the first real call is not slow.
        session_config: extra onnxruntime session config entries, e.g.
            ``{"session.intra_op.allow_spinning": "0"}`` so idle worker threads do not spin on a shared CPU.
    """

    def __init__(self, manifest, onnx_path: str | os.PathLike, *, conf: float | None = None,
                 iou: float | None = None, imgsz: int | None = None, max_det: int | None = None,
                 agnostic: bool = False, providers: str | Sequence[str] = "auto", intra_op_threads: int = 0,
                 inter_op_threads: int = 0, warmup: bool = True, session_config: dict[str, str] | None = None):
        import onnxruntime as ort

        self.manifest = manifest
        self.name: str = manifest.name
        self.path = Path(onnx_path)
        self.output_format = manifest.output_format
        self.label_map = LabelMap.from_manifest(manifest)
        d = manifest.defaults
        self.settings = DetectorSettings(
            conf=float(d.conf if conf is None else conf),
            iou=float(d.iou if iou is None else iou),
            imgsz=check_imgsz(int(d.imgsz if imgsz is None else imgsz), manifest.stride_px),
            max_det=int(d.max_det if max_det is None else max_det),
            agnostic=bool(agnostic),
        )
        for key in ("conf", "iou"):
            v = getattr(self.settings, key)
            if not 0.0 <= v <= 1.0:
                raise ModelError(f"model {self.name!r}: {key}={v} is outside [0, 1]")
        if self.settings.max_det < 1:
            raise ModelError(f"model {self.name!r}: max_det must be >= 1")
        if not self.path.is_file():
            raise ModelError(f"model {self.name!r}: ONNX file {self.path} does not exist")

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = int(intra_op_threads)
        so.inter_op_num_threads = int(inter_op_threads)
        so.log_severity_level = 3
        for key, value in (session_config or {}).items():
            so.add_session_config_entry(str(key), str(value))
        engine = _openvino_precision(providers)
        wanted = ["OpenVINO"] if engine else select_providers(providers)
        try:
            if engine:  # same ONNX, same pre/post-processing; OpenVINO runs the graph (bf16 on capable CPUs)
                from seawatch.vision.openvino_backend import OpenVinoSession

                self.session = OpenVinoSession(self.path, engine, threads=int(intra_op_threads))
            else:
                self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=wanted)
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            if wanted not in (["CPUExecutionProvider"], ["OpenVINO"]):
                log.warning("model %s: session with %s failed (%s); falling back to CPU", self.name, wanted, exc)
                try:
                    self.session = ort.InferenceSession(str(self.path), sess_options=so,
                                                        providers=["CPUExecutionProvider"])
                except Exception as exc2:
                    raise ModelError(f"model {self.name!r}: cannot load {self.path}: {exc2}") from exc2
            else:
                raise ModelError(f"model {self.name!r}: cannot load {self.path}: {exc}") from exc
        self.providers: list[str] = list(self.session.get_providers())

        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        shape = list(inp.shape)
        # Graphs provisioned by `seawatch models fetch` take the letterboxed BGR bytes (B, H, W, 3) uint8 and
        # normalise inside the graph (vision/export/fuse.py); plain exports and user models take (B, 3, H, W) float.
        # Anything else is refused here, once, rather than failing on every frame (or, for a static NHWC float
        # input, being fed a wrongly shaped tensor).
        layout = input_layout(inp.type, shape)
        if layout is None:
            raise ModelError(f"model {self.name!r}: input {inp.name} is {inp.type} {inp.shape}; the detector feeds "
                             f"{SUPPORTED_INPUTS}")
        self.layout, self.input_dtype = layout
        self.static_batch = _dim(shape[0])
        fixed_h, fixed_w = (_dim(shape[1]), _dim(shape[2])) if self.layout == "nhwc_u8" else (_dim(shape[2]), _dim(shape[3]))
        self.fixed_hw = (fixed_h, fixed_w) if fixed_h and fixed_w else None
        if self.fixed_hw is not None and self.fixed_hw != (self.settings.imgsz,) * 2 and imgsz is not None:
            log.warning("model %s has a static input %s; imgsz=%s is ignored", self.name, self.fixed_hw, imgsz)
        self._pre = Preprocessor(self.settings.imgsz, manifest.stride_px, fixed_hw=self.fixed_hw, layout=self.layout)
        self.last_timing = Timing()
        self.total_timing = Timing()
        self._timing_lock = threading.Lock()
        log.info("model %s: %s on %s, input %s %s, imgsz %d", self.name, self.path.name, self.providers,
                 inp.shape, inp.type, self.settings.imgsz)
        if warmup:
            self.warmup()

    @property
    def labels(self) -> tuple[str, ...]:
        """Seawatch labels this detector emits (``Detections.labels``)."""
        return self.label_map.labels

    def warmup(self, shape_hw: tuple[int, int] | None = None) -> None:
        """One dummy inference (grey frame of ``shape_hw``, default imgsz square); not counted in timings."""
        s = self.settings.imgsz
        h, w = shape_hw or (s, s)
        last, total = self.last_timing, self.total_timing
        self.detect([np.full((h, w, 3), 114, np.uint8)])
        self.last_timing, self.total_timing = last, total

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        if tensor.dtype != self.input_dtype:
            tensor = tensor.astype(self.input_dtype)
        try:
            out = self.session.run([self.output_name], {self.input_name: tensor})[0]
        except Exception as exc:  # onnxruntime's pybind errors (InvalidArgument, Fail, RuntimeException...)
            raise ModelError(f"model {self.name!r}: inference failed on input {tuple(tensor.shape)}: {exc}") from exc
        return out

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Detections for each frame (``(H, W, 3) uint8`` BGR), boxes in that frame's pixels.

        All frames go through one ``session.run`` (frames of different sizes share a padded batch), unless the
        model has a static batch size, in which case the batch is cut into runs of that size.
        """
        if len(images) == 0:
            return []
        t0 = time.perf_counter_ns()
        step = self.static_batch or len(images)
        results: list[Detections] = []
        pre_ns = infer_ns = post_ns = runs = 0
        s = self.settings
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            batch = self._pre(chunk)
            tensor = batch.tensor
            if self.static_batch and len(chunk) < self.static_batch:  # pad a short last chunk
                tensor = np.concatenate([tensor, np.repeat(tensor[-1:], self.static_batch - len(chunk), 0)])
            t1 = time.perf_counter_ns()
            raw = self._run(tensor)[: len(chunk)]
            t2 = time.perf_counter_ns()
            results += postprocess(raw, batch, self.output_format, self.label_map, s.conf, s.iou, s.max_det,
                                   self.name, s.agnostic)
            t3 = time.perf_counter_ns()
            pre_ns += t1 - t0
            infer_ns += t2 - t1
            post_ns += t3 - t2
            runs += 1
            t0 = t3
        with self._timing_lock:  # analysis workers may share this detector
            self.last_timing = Timing(len(images), runs, pre_ns, infer_ns, post_ns)
            self.total_timing = self.total_timing + self.last_timing
        return results

    def __call__(self, images: list[np.ndarray]) -> list[Detections]:
        return self.detect(images)

    def __repr__(self) -> str:
        s = self.settings
        return (f"OnnxDetector({self.name!r}, conf={s.conf}, iou={s.iou}, imgsz={s.imgsz}, max_det={s.max_det}, "
                f"providers={self.providers})")


SIMILAR_COST = 1.5  # members whose estimated costs are within this ratio run side by side


def _similar_cost(members, variant: str, imgsz: int | None) -> bool:
    """Whether a group's members cost about the same a pass: the ONNX file's size (the weights) times the input
    area, within :data:`SIMILAR_COST` of each other."""
    from seawatch.vision import registry

    cost = []
    for m in members:
        size = imgsz or registry.get_manifest(m).defaults.imgsz
        # the size only: the member's own load right after verifies the file against its lock
        cost.append(registry.resolve_onnx(m, variant, verify=False).stat().st_size * float(size) ** 2)
    return max(cost) <= SIMILAR_COST * min(cost)


def load_detector(name: str, variant: str = "fp32", **overrides) -> OnnxDetector:
    """Detector for a registered, provisioned model (``seawatch.vision.registry``), or for a group of them
    written ``a+b`` (a :class:`seawatch.vision.ensemble.FusedDetector`, the variant and overrides applying to each).

    ``overrides`` are :class:`OnnxDetector` keyword arguments (conf, iou, imgsz, max_det, providers, threads...).
    Raises ModelNotFound / ModelNotProvisioned / ChecksumMismatch from the registry, ModelError otherwise.
    """
    from seawatch.vision import registry
    from seawatch.vision.ensemble import FusedDetector, members_of

    if (members := members_of(name)) is not None:  # a model group, a+b (seawatch.vision.ensemble)
        # members of about the same cost run side by side, each on its share of the threads: 1.26x faster than one
        # after the other with all of them for coco_yolov5n+v5_frz90c on 2 cores; unequal members one after the
        # other (side by side, coco_yolov5n+fall took 1.4x as long: the small one's core idles) (models/VESSEL.md,
        # "Model group speed"; `seawatch bench group`). Fewer threads than members: one after the other.
        threads = int(overrides.get("intra_op_threads") or os.cpu_count() or 1)
        each = threads // len(members) if _similar_cost(members, variant, overrides.get("imgsz")) else 0
        over = {**overrides, "intra_op_threads": each} if each else overrides
        return FusedDetector(name, [load_detector(m, variant, **over) for m in members], parallel=each > 0)
    manifest = registry.get_manifest(name)
    path = registry.resolve_onnx(name, variant)
    return OnnxDetector(manifest, path, **overrides)


__all__ = ["OnnxDetector", "Timing", "DetectorSettings", "load_detector", "select_providers", "input_layout",
           "SUPPORTED_INPUTS"]
