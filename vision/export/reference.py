"""Reference detections: the SAME provisioned weights run through their own framework (PyTorch).

For parity tests and benchmarks against the ONNX Runtime detector; never used on the runtime path.

- ultralytics family (incl. helmet through the YOLOv12 compat loader): ``YOLO.predict``;
- yolov5 family: the ``yolov5`` distribution's own ``letterbox`` (rect, minimal padding, as its detect.py does
  for PyTorch weights) + ``non_max_suppression`` + ``scale_boxes``, on the fused model.

Boxes come back in source-image pixels (not rounded), labels mapped as the manifest says: ``class_id`` indexes
the model's Seawatch labels (``manifest.seawatch_labels``) and classes without a Seawatch label are dropped.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seawatch.errors import ChecksumMismatch, InputError, ModelNotProvisioned
from seawatch.vision import registry
from seawatch.vision.detections import Detections
from seawatch.vision.registry import ModelManifest, sha256_file

log = logging.getLogger(__name__)


@dataclass
class ReferenceModel:
    """A manifest's PyTorch model ready for ``predict``."""

    manifest: ModelManifest
    loaded: Any  # seawatch.vision.export.loaders.LoadedModel
    weights: Path

    def predict(self, images_bgr: list[np.ndarray], conf: float, iou: float, imgsz: int) -> list[Detections]:
        """Detections per image (BGR uint8, HxWx3); boxes ``xyxy_px`` in each image's own pixels."""
        for i, img in enumerate(images_bgr):
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                shape = getattr(img, "shape", None)
                raise InputError(f"image {i}: expected an HxWx3 uint8 BGR array, got {type(img).__name__} {shape}")
        if not images_bgr:
            return []
        if self.manifest.family == "yolov5":
            raw = [self._predict_yolov5(img, conf, iou, imgsz) for img in images_bgr]
        else:
            raw = self._predict_ultralytics(images_bgr, conf, iou, imgsz)
        return [self._to_detections(*r) for r in raw]

    def _to_detections(self, xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray) -> Detections:
        m = self.manifest
        lut = np.asarray(m.class_to_label_index, dtype=np.int64)
        cls = cls.astype(np.int64)
        valid = (cls >= 0) & (cls < lut.shape[0])
        mapped = np.where(valid, lut[np.clip(cls, 0, lut.shape[0] - 1)], -1)
        keep = mapped >= 0
        return Detections(
            xyxy[keep].astype(np.float32), score[keep].astype(np.float32), mapped[keep].astype(np.int32),
            m.seawatch_labels, None, m.name,
        )

    def _predict_ultralytics(self, images: list[np.ndarray], conf: float, iou: float, imgsz: int) -> list[tuple]:
        results = self.loaded.yolo.predict(
            images, conf=conf, iou=iou, imgsz=imgsz, max_det=self.manifest.defaults.max_det, device="cpu",
            verbose=False, half=False,
        )
        out = []
        for r in results:
            b = r.boxes
            out.append((b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy()))
        return out

    def _predict_yolov5(self, img: np.ndarray, conf: float, iou: float, imgsz: int) -> tuple:
        import torch
        from yolov5.utils.augmentations import letterbox
        from yolov5.utils.general import non_max_suppression, scale_boxes

        stride = self.loaded.stride_px
        im = letterbox(img, imgsz, stride=stride, auto=True)[0]
        im = np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))
        x = torch.from_numpy(im).float().div_(255.0)[None]
        with torch.no_grad():
            pred = self.loaded.module(x)
            det = non_max_suppression(pred, conf, iou, max_det=self.manifest.defaults.max_det)[0]
        if len(det):
            det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], img.shape)
        d = det.cpu().numpy()
        return d[:, :4], d[:, 4], d[:, 5]


_CACHE: dict[tuple[str, str], ReferenceModel] = {}
_LOCK = threading.Lock()


def load_reference(name: str) -> ReferenceModel:
    """Load (once per process) the provisioned weights of ``name`` with their own framework."""
    m = registry.get_manifest(name)
    lock = registry.read_lock(name)
    weights_entry = (lock or {}).get("weights") or {}
    if not weights_entry.get("file"):
        raise ModelNotProvisioned(
            f"model {name!r} has no PyTorch weights in the cache (family {m.family}); run `seawatch models fetch {name}`"
        )
    weights = registry.model_dir(name) / weights_entry["file"]
    if not weights.is_file():
        raise ModelNotProvisioned(f"model {name!r}: {weights} is missing; run `seawatch models fetch {name} --force`")
    key = (name, weights_entry.get("sha256", ""))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        got = sha256_file(weights)
        if got != weights_entry.get("sha256") or (m.weights_sha256 and got != m.weights_sha256):
            raise ChecksumMismatch(f"model {name!r}: {weights} does not match its lock / manifest sha256")
        from seawatch.vision.export.loaders import check_names, load_checkpoint

        wheel = _wheel_for(m, lock or {})
        loaded = load_checkpoint(m, weights, wheel)
        check_names(m, loaded, weights)
        if m.family == "yolov5" and hasattr(loaded.module, "fuse"):
            from seawatch.vision.export.loaders import yolov5_modules

            with yolov5_modules():
                loaded.module = loaded.module.fuse().eval()  # as the yolov5 package's own inference does
        ref = ReferenceModel(m, loaded, weights)
        _CACHE[key] = ref
        return ref


def _wheel_for(m: ModelManifest, lock: dict) -> Path | None:
    if not m.export.pickled_modules:
        return None
    p = (lock.get("source") or {}).get("wheel_file")
    if p and Path(p).is_file():
        return Path(p)
    from seawatch.vision.export.fetch import _find_wheel

    s = m.source
    found = _find_wheel(registry.downloads_dir(), s.package or "", s.version or "") if s.package else None
    if found is None:
        raise ModelNotProvisioned(f"model {m.name!r}: its source wheel is not in {registry.downloads_dir()}; fetch again")
    return found


def reference_predict(name: str, images_bgr: list[np.ndarray], conf: float, iou: float, imgsz: int) -> list[Detections]:
    """Detections of model ``name`` on each image, through the weights' own framework (see module docstring)."""
    return load_reference(name).predict(images_bgr, conf, iou, imgsz)
