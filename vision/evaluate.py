"""``seawatch evaluate``: detection and alert quality on any manifest in the shared media format.

Images are scored box by box (:mod:`seawatch.vision.metrics`) with each label routed to the model that emits it
(``LABEL_MODELS``; vessels also run the baselines side by side), plus image-level fire/smoke recall and false-alarm
rate, and the per-image count error of people without a hard hat. Clips run the full pipeline (tracking and
rules) and are scored by the events they raise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from seawatch.errors import InputError, ModelError
from seawatch.vision.config import HardHatRuleConfig
from seawatch.vision.detections import Detections
from seawatch.vision.groundtruth import PRED_GROUPS, Sample, load_manifest
from seawatch.vision.metrics import LabelStats, SizeStats, match, match_gt
from seawatch.vision.rules import bare_headed, fire_smoke_labels

log = logging.getLogger(__name__)

# Seawatch label -> models that are scored on it, first = the one the product runs; later = baselines.
LABEL_MODELS: dict[str, tuple[str, ...]] = {
    "vessel": ("vessel", "coco_yolov5n", "ship_published"),
    "fire": ("fire_smoke",),
    "smoke": ("fire_smoke",),
    "person": ("coco_yolov5n",),
    "vehicle": ("coco_yolov5n",),
    "helmet": ("helmet",),
    "no_helmet": ("helmet",),
}
# Labels scored with tiled inference by default (small, distant objects); --tile-labels chooses others too (a wide
# camera whose cars and people are a few pixels tall: a source with ``tile:`` tiles every model it runs).
TILED_LABELS = frozenset({"vessel"})


@dataclass
class _ModelRun:
    name: str
    detector: object
    base: str = ""  # the registry name (name without a variant or the tiling)
    seconds: float = 0.0
    tile: object | None = None  # TileSpec of a tiled run, resolved once per model
    frames: int = 0
    op_conf: float = 0.25  # the operating threshold: precision / recall and the rules' inputs are taken here
    paths: set = field(default_factory=set)  # the images it was scored on (its training record is checked on these)


@dataclass
class Evaluator:
    """Runs provisioned models on labelled samples and accumulates metrics."""

    conf: float | None = None
    # detections are taken down to this confidence so that AP50 and recall-at-precision see the whole ranking (a
    # curve cut at the operating threshold understates AP); precision, recall and the rules use ``op_conf``
    curve_floor: float = 0.05
    tile: str = "auto"  # tiling of tiled_labels, SIZES[:OVERLAP][+flip] (auto: each model's own; tiling.tile_for)
    tiled_labels: frozenset = TILED_LABELS
    models: dict[str, _ModelRun] = field(default_factory=dict)
    label_models: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(LABEL_MODELS))
    missing_models: set[str] = field(default_factory=set)
    errors: object | None = None  # an evaluate_errors.ErrorLog with --errors: false positives and misses at the operating threshold, kept
    feedback: object | None = None  # an evaluate_feedback.FeedbackLog with --operator-ignore: each frame's boxes, kept

    @cached_property
    def _tiles_key(self) -> str:
        """What a tiled run's key adds to the model name: +tiles, +tiles+288+flip for --tile auto,288+flip."""
        from seawatch.vision.tiling import parse_tile_text

        sizes, _, flip = parse_tile_text(self.tile)
        return "+tiles" + "".join(f"+{s or 'auto'}" for s in sizes[1:]) + ("+flip" if flip else "")

    def _model(self, name: str, tiled: bool) -> _ModelRun | None:
        key = name + self._tiles_key if tiled else name
        if key in self.models:
            return self.models[key]
        if name in self.missing_models:
            return None
        from seawatch.vision.detector import load_detector
        from seawatch.vision.ensemble import default_conf
        from seawatch.vision.tiling import tile_for

        base, _, variant = name.partition(":")  # "vessel:int8" scores that variant
        try:
            op = float(self.conf if self.conf is not None else default_conf(base))
            det = load_detector(base, variant or "fp32", conf=min(op, self.curve_floor))
        except ModelError as exc:
            log.warning("evaluate: model %s unavailable: %s", name, exc)
            self.missing_models.add(name)
            return None
        run = _ModelRun(key, det, base=base, tile=tile_for(self.tile, det) if tiled else None, op_conf=op)
        self.models[key] = run
        return run

    def detect(self, run: _ModelRun, image: np.ndarray) -> Detections:
        from seawatch.vision.tiling import detect_tiled

        t0 = time.perf_counter()
        if run.tile is not None:
            out = detect_tiled(run.detector, [image], run.tile)[0]
        else:
            out = run.detector.detect([image])[0]
        run.seconds += time.perf_counter() - t0
        run.frames += 1
        return out

    @staticmethod
    def operating(run: _ModelRun, det: Detections) -> Detections:
        """The detections a deployed model would report: those at or above its operating threshold."""
        return det[det.confidence >= run.op_conf]


def _grouped(det: Detections) -> np.ndarray:
    return np.array([PRED_GROUPS.get(lab, lab) for lab in det.label], dtype=object)


@lru_cache(maxsize=64)  # asked once per frame and entry: parsed once (callers never change the dict)
def parse_per_camera(entry: str) -> dict[str, str] | None:
    """A per-camera entry of ``--vessel-models`` (``CAM=MODEL/CAM=MODEL``: each frame scored by its camera's model,
    e.g. leave-one-camera-out models, each on the camera it never saw) as {camera: model}; None for a plain model
    name. Raises InputError for a malformed entry."""
    if "=" not in entry:
        return None
    out: dict[str, str] = {}
    for part in entry.split("/"):
        cam, eq, model = (x.strip() for x in part.partition("="))
        if not eq or not cam or not model or "=" in model:
            raise InputError(f"--vessel-models {entry!r}: a per-camera entry is CAMERA=MODEL/CAMERA=MODEL...")
        if cam in out:
            raise InputError(f"--vessel-models {entry!r}: camera {cam!r} is named twice")
        out[cam] = model
    return out


def _model_for(name: str, sample: Sample) -> str | None:
    """The model that scores ``sample`` for the entry ``name`` (a per-camera entry: the frame's camera's)."""
    cams = parse_per_camera(name)
    if cams is None:
        return name
    from seawatch.vision.evaluate_feedback import camera_session

    return cams.get(camera_session(sample)[0])


def _check_per_camera(samples: list[Sample], ev: Evaluator) -> None:
    """Every scored frame of a label needs a model from each of that label's per-camera entries: a row that silently
    left out a camera would not be the whole split. Raises InputError naming the cameras without one."""
    from seawatch.vision.evaluate_feedback import camera_session

    for label, names in ev.label_models.items():
        for name in names:
            cams = parse_per_camera(name)
            if cams is None:
                continue
            missing = sorted({camera_session(s)[0] for s in samples
                              if s.kind == "image" and (label in s.boxes or label in s.negative_for)} - set(cams))
            if missing:
                raise InputError(f"--vessel-models {name!r}: no model for camera(s) {', '.join(missing)} "
                                 f"(a frame's camera is its ground truth's 'camera', else its category)")


def _scored_training_images(ev: Evaluator) -> dict[str, int]:
    """Per model run: how many of the images it scored its training record says it was trained on (a trained
    model's numbers on its own training frames are not held out)."""
    from seawatch.vision import registry, trainsets
    from seawatch.vision.ensemble import members_of

    trained_by_base: dict[str, set | None] = {}  # a model's variants and tilings share its training record
    out: dict[str, int] = {}
    for key, run in ev.models.items():
        if run.base not in trained_by_base:
            # a group is as held out as its least held-out member: the union of its members' training images
            records = [(registry.read_lock(m) or {}).get("training") or {} for m in members_of(run.base) or (run.base,)]
            trained_by_base[run.base] = set().union(*(trainsets.trained_images(r) for r in records if r)) \
                if any(records) else None
        trained = trained_by_base[run.base]
        if trained is not None and run.paths:
            out[key] = len({p.resolve() for p in run.paths} & trained)
    return out


def evaluate_images(samples: list[Sample], ev: Evaluator) -> dict:
    """Box metrics per (label, model), image-level fire/smoke and hard-hat counts."""
    from seawatch.vision.media import read_image

    # per (label, model, manifest category): the label's row is their sum, and the categories show where a model fails
    by_cat: dict[tuple[str, str, str], LabelStats] = {}
    sizes: dict[tuple[str, str], SizeStats] = {}  # recall per ground-truth size at the operating threshold
    op_conf: dict[tuple[str, str], float] = {}
    fire_img = {"positives": 0, "detected": 0, "negatives": 0, "false_alarms": 0}
    hat = {"images": 0, "abs_error": 0, "gt_total": 0, "per_image": []}
    unscored: list[dict] = []  # labelled images left out, with the reason, so a report never silently scores less
    for s in samples:
        if s.kind != "image":
            continue
        if s.label_error:
            log.warning("evaluate: %s not scored: %s", s.path.name, s.label_error)
            unscored.append({"file": s.path.name, "reason": s.label_error})
            continue
        labels = set(s.boxes) | s.negative_for
        wants_fire = bool({"fire", "smoke"} & labels) or "fire" in s.ground_truth
        wants_hat = "without_helmet" in s.ground_truth
        if wants_hat:
            labels |= {"no_helmet"}
        if not labels:
            continue
        try:
            image = read_image(s.path)
        except InputError as exc:
            log.warning("evaluate: %s", exc)
            unscored.append({"file": s.path.name, "reason": str(exc)})
            continue
        cache: dict[str, Detections] = {}
        for label in sorted(labels):
            for name in ev.label_models.get(label, ()):
                tiled = label in ev.tiled_labels
                model = _model_for(name, s)
                run = ev._model(model, tiled) if model is not None else None
                if run is None:
                    continue
                # the report's row: the model's run, or a per-camera entry's (its models' runs pooled)
                row = run.name if model == name else name + (ev._tiles_key if tiled else "")
                if run.name not in cache:
                    cache[run.name] = ev.detect(run, image)
                det = cache[run.name]
                if label in s.boxes or label in s.negative_for:
                    run.paths.add(s.path)
                    keep = _grouped(det) == label
                    gt = s.gt(label)
                    tp = match(det.xyxy_px[keep], det.confidence[keep], gt)
                    by_cat.setdefault((label, row, s.category), LabelStats()).add(det.confidence[keep], tp, len(gt))
                    op = keep & (det.confidence >= run.op_conf)
                    found = match_gt(det.xyxy_px[op], det.confidence[op], gt)
                    sizes.setdefault((label, row), SizeStats()).add(gt, found)
                    if ev.errors is not None:
                        ev.errors.add(label, row, s.path, det.xyxy_px[op], det.confidence[op],
                                      match(det.xyxy_px[op], det.confidence[op], gt), gt, found)
                    # a per-camera row's models may differ in threshold: the row shows the last one used
                    op_conf[(label, row)] = run.op_conf
                    if ev.feedback is not None:
                        ev.feedback.add(label, row, s, det.xyxy_px[keep], det.confidence[keep], gt, run.op_conf)
        if wants_fire and (run := ev._model("fire_smoke", False)) is not None:
            det = ev.operating(run, cache[run.name] if run.name in cache else ev.detect(run, image))
            # an image "alarms" when a box clears the fire rule's own confidence floor
            has_fire = bool(fire_smoke_labels(det))
            positive = bool(len(s.gt("fire")) or len(s.gt("smoke")) or s.ground_truth.get("fire") is True
                            or s.ground_truth.get("smoke") is True)
            negative = {"fire", "smoke"} <= s.negative_for
            if positive:
                fire_img["positives"] += 1
                fire_img["detected"] += int(has_fire)
            elif negative:
                fire_img["negatives"] += 1
                fire_img["false_alarms"] += int(has_fire)
        if wants_hat and (run := ev._model("helmet", False)) is not None:
            parts = [ev.operating(run, cache[run.name] if run.name in cache else ev.detect(run, image))]
            if (people := ev._model("coco_yolov5n", False)) is not None:
                parts.append(ev.operating(people, cache[people.name] if people.name in cache else ev.detect(people, image)))
            # the rule's own still-image count: bare heads, and people whose head region holds no hard hat
            n_pred = len(bare_headed(Detections.merge(parts), HardHatRuleConfig()))
            n_gt = int(s.ground_truth["without_helmet"])
            hat["images"] += 1
            hat["abs_error"] += abs(n_pred - n_gt)
            hat["gt_total"] += n_gt
            hat["per_image"].append({"file": s.path.name, "gt": n_gt, "predicted": n_pred})
    report: dict = {"labels": {}}
    rows: dict[tuple[str, str], dict[str, LabelStats]] = {}
    for (label, model, cat), st_c in by_cat.items():
        rows.setdefault((label, model), {})[cat] = st_c
    for (label, model), cats in sorted(rows.items()):
        st = LabelStats.merged(cats.values())
        entry = {**st.summary(op_conf[(label, model)]), "conf": op_conf[(label, model)]}
        r80, thr80 = st.recall_at_precision(0.8)
        entry["recall_at_precision_0.8"] = round(r80, 4)
        entry["threshold_at_precision_0.8"] = round(thr80, 4)
        for p in (0.7, 0.6):  # the rest of the operating curve: where a model stands below the 0.8 target
            entry[f"recall_at_precision_{p}"] = round(st.recall_at_precision(p)[0], 4)
        entry["recall_by_size"] = sizes[(label, model)].summary()
        if len(cats) > 1:
            entry["by_category"] = {c: {**st_c.summary(op_conf[(label, model)]),
                                        "recall_at_precision_0.8": round(st_c.recall_at_precision(0.8)[0], 4)}
                                    for c, st_c in sorted(cats.items())}
        report["labels"].setdefault(label, {})[model] = entry
    if ev.feedback is not None:  # the same rows with the other sessions' "ignore this spot" areas (evaluate_feedback)
        for (label, model), entry in ev.feedback.report().items():
            report["labels"].setdefault(label, {}).setdefault(model, {})["with_operator_ignore"] = entry
    if fire_img["positives"] or fire_img["negatives"]:
        fire_img["image_recall"] = round(fire_img["detected"] / fire_img["positives"], 4) if fire_img["positives"] else None
        fire_img["false_alarm_rate"] = (round(fire_img["false_alarms"] / fire_img["negatives"], 4)
                                        if fire_img["negatives"] else None)
        report["fire_smoke_images"] = fire_img
    if hat["images"]:
        hat["count_error"] = round(hat["abs_error"] / max(hat["gt_total"], 1), 4)
        report["no_hard_hat_counts"] = hat
    seen = _scored_training_images(ev)
    report["models"] = {r.name: {"frames": r.frames, "ms_per_frame": round(1000 * r.seconds / max(r.frames, 1), 1),
                                 **({"scored_training_images": seen[r.name]} if seen.get(r.name) else {}),
                                 **({"tile_px": r.tile.size_px, "more_tile_px": list(r.tile.extra_sizes_px),
                                     "flip": r.tile.flip} if r.tile is not None else {})}
                        for r in ev.models.values()}
    if ev.missing_models:
        report["missing_models"] = sorted(ev.missing_models)
    if unscored:
        report["unscored_images"] = unscored
    return report


def evaluate_manifest(path, conf: float | None = None, categories: set[str] | None = None,
                      tile: str = "auto", clips: bool = True, vessel_models: tuple[str, ...] | None = None,
                      errors_dir: Path | None = None, operator_ignore: int | None = None,
                      tile_labels: set[str] | None = None) -> dict:
    """``operator_ignore``: also score each frame with the ignore areas a review desk would have made of the false
    alarms seen in at least that many frames of its camera's other sessions (``evaluate_feedback``).
    ``tile_labels``: the labels scored with tiled inference (default ``TILED_LABELS``); InputError for a label
    evaluate does not score."""
    if tile_labels is not None and (unknown := set(tile_labels) - set(LABEL_MODELS)):
        raise InputError(f"--tile-labels: {', '.join(sorted(unknown))} not scored by evaluate "
                         f"(labels: {', '.join(sorted(LABEL_MODELS))})")
    samples = load_manifest(path, categories)
    ev = Evaluator(conf=conf, tile=tile or "auto",
                   tiled_labels=frozenset(tile_labels) if tile_labels is not None else TILED_LABELS)
    if operator_ignore is not None:
        from seawatch.vision.evaluate_feedback import FeedbackLog

        ev.feedback = FeedbackLog(min_frames=operator_ignore)
    if errors_dir is not None:
        from seawatch.vision.evaluate_errors import ErrorLog

        ev.errors = ErrorLog()
    if vessel_models:
        ev.label_models["vessel"] = tuple(vessel_models)
    _check_per_camera(samples, ev)  # a malformed per-camera entry or a camera without a model: before any run
    t0 = time.monotonic()
    report = {"manifest": str(path), "images": sum(1 for s in samples if s.kind == "image"),
              "clips": sum(1 for s in samples if s.kind == "video")}
    report.update(evaluate_images(samples, ev))
    report["tiled_labels"] = sorted(ev.tiled_labels)
    if ev.errors is not None:
        written = ev.errors.write(errors_dir)
        report["errors"] = {"dir": str(errors_dir), "files": [p.name for p in written],
                            "counts": ev.errors.summary()}
    if clips:
        from seawatch.vision.evaluate_clips import evaluate_clips

        # a clip has no per-camera model: per-camera entries score images only
        report["clips_report"] = evaluate_clips([s for s in samples if s.kind == "video"],
                                                tuple(n for n in ev.label_models["vessel"] if parse_per_camera(n) is None))
    report["seconds"] = round(time.monotonic() - t0, 1)
    return report
