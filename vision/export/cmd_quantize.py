"""``seawatch models quantize NAME...``: INT8 (static QDQ) and OpenVINO bf16 variants, accepted on recall."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from seawatch import paths
from seawatch.errors import ModelError
from seawatch.vision import registry

HELP = "make INT8 / bf16 variants of provisioned models; keep each only if its recall stays within 2 points"
log = logging.getLogger(__name__)

# Calibration frames come from the model's own domain and never from the labelled evaluation images:
# frames of the domain's videos and the vessel training set. Keys are Seawatch labels.
CALIBRATION_SOURCES: dict[str, tuple[str, ...]] = {
    "fire": ("B_fire_smoke/*.mp4",),
    "smoke": ("B_fire_smoke/*.mp4",),
    "helmet": ("C_hardhat/*.mp4",),
    "no_helmet": ("C_hardhat/*.mp4",),
    "vessel": ("train/vessels/images/*.jpg",),
    "person": ("C_hardhat/*.mp4", "train/vessels/images/*.jpg"),
    "car": ("D_parking_lanes/*.mp4",),
    "truck": ("D_parking_lanes/*.mp4",),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="models to quantize (default: all provisioned)")
    p.add_argument("--int8", action="store_true", help="static INT8 QDQ variant (default when no kind is given)")
    p.add_argument("--bf16", action="store_true", help="check the OpenVINO bf16 variant")
    p.add_argument("--calib-frames", type=int, default=16,
                   help="calibration frames (default 16; each costs about 0.5 GB of memory on mid-size models)")
    p.add_argument("--max-drop", type=float, default=0.02, help="largest accepted recall drop (default 0.02)")
    p.add_argument("--min-agreement", type=float, default=0.8,
                   help="least share of fp32's confident boxes the variant must reproduce (default 0.8)")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"])
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def calibration_frames(labels: tuple[str, ...], imgsz: int, count: int) -> list[np.ndarray]:
    """Up to ``count`` BGR frames from the label domain's calibration sources, spread over the files."""
    from seawatch.vision.media import iter_video, read_image

    media = paths.shared_media_dir()
    if media is None:
        raise ModelError("calibration needs the shared media folder (set SEAWATCH_SHARED)")
    globs: list[str] = []
    for lab in labels:
        for g in CALIBRATION_SOURCES.get(lab, ()):
            if g not in globs:
                globs.append(g)
    if not globs:
        globs = ["train/vessels/images/*.jpg"]
    files = sorted({f for g in globs for f in media.glob(g)})
    if not files:
        raise ModelError(f"no calibration media for labels {labels} under {media}")
    per_file = max(1, count // len(files))
    frames: list[np.ndarray] = []
    for f in files:
        if f.suffix.lower() == ".mp4":
            from seawatch.vision.media import probe_video

            n, _ = probe_video(f)
            stride = max(1, (n or 300) // per_file)
            for i, fr in enumerate(iter_video(f, stride_frames=stride)):
                frames.append(fr.image)
                if i + 1 >= per_file:
                    break
        else:
            frames.append(read_image(f))
        if len(frames) >= count:
            break
    # spread image sets: when there are more images than needed take every k-th
    if len(frames) > count:
        idx = np.linspace(0, len(frames) - 1, count).round().astype(int)
        frames = [frames[i] for i in idx]
    return frames


def agreement(reference: list, candidate: list, threshold: float, margin: float = 0.1) -> float:
    """Share of the reference detector's confident boxes (conf >= ``threshold + margin``, so borderline boxes do
    not count) that the candidate reproduces with the same label at IoU >= 0.5; nan when there are none."""
    from seawatch.vision.metrics import match

    found = total = 0
    for ref, cand in zip(reference, candidate):
        for lab in set(ref.label.tolist()):
            r = ref.with_label(lab)
            r = r[r.confidence >= threshold + margin]
            if not len(r):
                continue
            c = cand.with_label(lab)
            # each confident reference box must be claimed by one candidate box (match() with roles swapped)
            tp = match(r.xyxy_px, r.confidence, c.xyxy_px, iou=0.5, iou_small=0.5)
            found += int(tp.sum())
            total += len(r)
    return found / total if total else float("nan")


def eval_recall(detector, samples, collect: list | None = None) -> dict:
    """Recall and precision of a detector at its default threshold on labelled samples, per label.

    ``collect``, when given, receives each sample's detections (for :func:`agreement`)."""
    from seawatch.vision.groundtruth import PRED_GROUPS
    from seawatch.vision.media import read_image
    from seawatch.vision.metrics import LabelStats, match

    from seawatch.vision.tiling import detect_tiled, model_tile

    stats: dict[str, LabelStats] = {}
    size = detector.settings.imgsz
    for s in samples:
        image = read_image(s.path)
        # frames much larger than the input run tiled, as the product runs them: untiled, a 1080p shore frame
        # shrinks people and boats below what any model resolves and recall says nothing about precision loss
        if max(image.shape[:2]) > 1.5 * size:
            det = detect_tiled(detector, [image], model_tile(detector))[0]  # the model's own tile size
        else:
            det = detector.detect([image])[0]
        if collect is not None:
            collect.append(det)
        pred_labels = np.array([PRED_GROUPS.get(l, l) for l in det.label], dtype=object)
        for lab, gt in s.boxes.items():
            keep = pred_labels == lab
            tp = match(det.xyxy_px[keep], det.confidence[keep], gt)
            stats.setdefault(lab, LabelStats()).add(det.confidence[keep], tp, len(gt))
    return {lab: st.summary() for lab, st in sorted(stats.items())}


def _pooled_recall(summary: dict) -> float:
    tp = sum(v["tp"] for v in summary.values())
    gt = sum(v["gt"] for v in summary.values())
    return tp / gt if gt else float("nan")


def eval_samples(manifest) -> list:
    from seawatch.vision.groundtruth import PRED_GROUPS, load_manifest

    media = paths.shared_media_dir()
    if media is None:
        raise ModelError("the recall check needs the shared media folder (set SEAWATCH_SHARED)")
    wanted = {PRED_GROUPS.get(l, l) for l in manifest.seawatch_labels}
    out = []
    for s in load_manifest(media / "MANIFEST.json"):
        if s.kind != "image":
            continue
        s.boxes = {k: v for k, v in s.boxes.items() if k in wanted}
        if s.boxes:
            out.append(s)
    return out


def quantize_model(name: str, int8: bool, bf16: bool, calib_frames: int, max_drop: float, method: str,
                   min_agreement: float = 0.8) -> dict:
    from seawatch.vision.detector import OnnxDetector
    from seawatch.vision.export.quantize import openvino_bf16_supported, quantize_int8
    from seawatch.vision.preprocess import Preprocessor

    m = registry.get_manifest(name)
    fp32_path = registry.resolve_onnx(name, "fp32")
    samples = eval_samples(m)
    if not samples:
        raise ModelError(f"model {name!r}: no labelled evaluation images for {m.seawatch_labels}; cannot check recall")
    base = OnnxDetector(m, fp32_path)
    ref_dets: list = []
    ref = eval_recall(base, samples, ref_dets)
    ref_recall = _pooled_recall(ref)
    result = {"model": name, "eval_images": len(samples), "fp32": {"recall": round(ref_recall, 4), "per_label": ref}}
    lock = registry.read_lock(name)
    variants = dict(lock.get("variants", {}))
    if int8:
        t0 = time.monotonic()
        frames = calibration_frames(m.seawatch_labels, m.defaults.imgsz, calib_frames)
        # one square shape for every calibration frame: histogram calibrators need equal shapes
        size = m.defaults.imgsz
        pre = Preprocessor(size, m.stride_px, fixed_hw=(size, size), layout=base.layout)
        batches = (pre([f]).tensor.copy() for f in frames)
        out = registry.model_dir(name) / "model.int8.onnx"
        facts = quantize_int8(fp32_path, out, batches, method=method)
        det = OnnxDetector(m, out)
        dets: list = []
        summ = eval_recall(det, samples, dets)
        rec = _pooled_recall(summ)
        agree = agreement(ref_dets, dets, base.settings.conf)
        # labelled recall is the criterion; agreement with fp32 guards models whose labelled recall is near zero
        accepted = rec >= ref_recall - max_drop and not agree < min_agreement
        entry = {"file": out.name, "sha256": registry.sha256_file(out), "recall": round(rec, 4),
                 "agreement_with_fp32": None if agree != agree else round(agree, 4),
                 "recall_fp32": round(ref_recall, 4), "accepted": accepted, "eval_images": len(samples),
                 "seconds": round(time.monotonic() - t0, 1), **facts}
        result["int8"] = {**entry, "per_label": summ}
        if accepted:
            variants["int8"] = entry
        else:
            variants.pop("int8", None)
            out.unlink(missing_ok=True)
            log.warning("%s int8 rejected: recall %.3f vs fp32 %.3f", name, rec, ref_recall)
    if bf16:
        if not openvino_bf16_supported():
            result["bf16"] = {"accepted": False, "reason": "OpenVINO missing or CPU without native bf16"}
        else:
            det = OnnxDetector(m, fp32_path, providers=["openvino-bf16"])
            dets = []
            summ = eval_recall(det, samples, dets)
            rec = _pooled_recall(summ)
            agree = agreement(ref_dets, dets, base.settings.conf)
            accepted = rec >= ref_recall - max_drop and not agree < min_agreement
            entry = {"file": Path(fp32_path).name, "sha256": registry.sha256_file(fp32_path), "engine": "openvino",
                     "precision": "bf16", "recall": round(rec, 4), "recall_fp32": round(ref_recall, 4),
                     "agreement_with_fp32": None if agree != agree else round(agree, 4),
                     "accepted": accepted, "eval_images": len(samples)}
            result["bf16"] = {**entry, "per_label": summ}
            if accepted:
                variants["bf16"] = entry
            else:
                variants.pop("bf16", None)
    lock["variants"] = variants
    registry.write_lock(name, lock)
    return result


def run(args: argparse.Namespace) -> int:
    names = args.names or [n for n in registry.load_manifests() if registry.is_provisioned(n)]
    if not names:
        raise ModelError("no provisioned models: run `seawatch models fetch` first")
    int8 = args.int8 or not args.bf16
    failed = 0
    results = []
    for name in names:
        try:
            r = quantize_model(name, int8, args.bf16, args.calib_frames, args.max_drop, args.method,
                               args.min_agreement)
        except ModelError as exc:
            print(f"seawatch: {name}: {exc}", file=__import__("sys").stderr)
            failed += 1
            continue
        results.append(r)
        if not args.json:
            line = f"{name:16s} fp32 recall {r['fp32']['recall']:.3f} on {r['eval_images']} images"
            for k in ("int8", "bf16"):
                if k in r:
                    v = r[k]
                    line += (f" | {k} recall {v['recall']:.3f} agree {v['agreement_with_fp32']} "
                             f"{'accepted' if v['accepted'] else 'REJECTED'}"
                             if "recall" in v else f" | {k} {v['reason']}")
            print(line)
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if failed else 0
