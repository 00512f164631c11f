"""Fine-tune a detector on a dataset manifest (``seawatch models train``), export it and register the result.

The trained weights are a build artefact kept in the model cache; what is recorded is how to reproduce them:
dataset manifest fingerprint, split, seed, epochs, image size, base weights and their sha256.

Base weights (``--base``):
- an ultralytics-family registry model (``fall``: YOLOv8s-sized people; ``ship_published``: YOLO11s boats): its
  provisioned ``weights.pt`` is the starting point; the head is rebuilt for the new classes.
- ``coco_yolov5n``: the original-layout COCO YOLOv5n checkpoint. Its tensors are copied by name and shape into
  ultralytics' anchor-free ``yolov5n.yaml`` (everything but the detection head transfers).
- a path to a ``.yaml`` architecture or ultralytics ``.pt``.
Training runs on full-resolution tiles plus whole frames (see ``trainsets.write_tiled_layout``), on the CPU or a
GPU (``--device 0``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from seawatch import paths
from seawatch.errors import ExportError, ModelError
from seawatch.vision import registry, trainsets

log = logging.getLogger(__name__)


def transfer_yolov5_to_ultralytics(ckpt_model, arch_yaml: str = "yolov5n.yaml"):
    """Build ultralytics' anchor-free YOLOv5 and copy every tensor whose name and shape match. Returns (YOLO, n, total)."""
    from seawatch.vision.export.loaders import prepare_ultralytics_env

    prepare_ultralytics_env()
    from ultralytics import YOLO

    yolo = YOLO(arch_yaml)
    src = {k: v.float() for k, v in ckpt_model.state_dict().items()}
    dst = yolo.model.state_dict()
    moved = {k: src[k] for k in dst if k in src and src[k].shape == dst[k].shape}
    dst.update(moved)
    yolo.model.load_state_dict(dst)
    return yolo, len(moved), len(dst)


def base_checkpoint(base: str, work: Path) -> tuple[Path, dict]:
    """A ``.pt`` file ultralytics can train from, and facts about where it came from."""
    from seawatch.vision.export.loaders import load_checkpoint, prepare_ultralytics_env

    prepare_ultralytics_env()
    p = Path(base)
    if p.suffix in (".pt", ".yaml"):
        if p.suffix == ".pt" and not p.is_file():
            raise ModelError(f"base weights {p} not found")
        return p, {"base": str(p), "base_sha256": registry.sha256_file(p) if p.is_file() else None}
    manifest = registry.get_manifest(base)
    lock = registry.read_lock(base)
    if not lock or not lock.get("weights_path"):
        raise ModelError(f"base model {base!r} is not provisioned: run `seawatch models fetch {base}`")
    weights = Path(lock["weights_path"])
    facts = {"base": base, "base_sha256": registry.sha256_file(weights)}
    if manifest.family == "yolov5":
        loaded = load_checkpoint(manifest, weights)
        yolo, n, total = transfer_yolov5_to_ultralytics(loaded.module)
        out = work / f"{base}_as_yolov5u.pt"
        yolo.save(str(out))
        facts["transferred_tensors"] = f"{n}/{total}"
        log.info("transferred %d of %d tensors from %s", n, total, base)
        return out, facts
    if manifest.export.loader != "ultralytics" or manifest.export.pickled_modules:
        raise ModelError(f"base model {base!r} uses custom modules ultralytics cannot rebuild for training; "
                         "use coco_yolov5n, fall, ship_published or a .yaml/.pt path")
    return weights, facts


def train(dataset: str, out_name: str, *, base: str = "coco_yolov5n", epochs: int = 50, imgsz: int = 640,
          batch: int = 16, device: str = "cpu", seed: int = 0, tile_px: int = 640, fraction: float = 1.0,
          workers: int = 2, patience: int = 30) -> dict:
    """Train, export to ONNX, register ``out_name`` in the user registry. Returns the training record."""
    from seawatch.vision.export.loaders import prepare_ultralytics_env, use_cpu_threads

    manifest = trainsets.load_dataset_manifest(dataset)
    items = trainsets.scan(manifest)
    tr, va = trainsets.split(items, set(manifest.get("split", {}).get("val_cameras", [])))
    if not tr or not va:
        raise ModelError(f"dataset {dataset!r}: empty train or val split")
    fp = trainsets.fingerprint(items)
    work = paths.cache_dir() / "train" / f"{out_name}-{fp[:12]}"
    layout = work / f"data-tile{tile_px}"
    if not (layout / "data.yaml").is_file():
        trainsets.write_tiled_layout(layout, tr, va, list(manifest["classes"]), tile_px=tile_px)
    start_pt, base_facts = base_checkpoint(base, work)
    prepare_ultralytics_env()
    from ultralytics import YOLO

    if device == "cpu":
        use_cpu_threads()
    t0 = time.monotonic()
    yolo = YOLO(str(start_pt))
    yolo.train(data=str(layout / "data.yaml"), epochs=epochs, imgsz=imgsz, batch=batch, device=device, seed=seed,
               deterministic=True, workers=workers, plots=False, project=str(work), name="run", exist_ok=True,
               fraction=fraction, patience=patience, amp=device != "cpu", verbose=False)
    best = Path(yolo.trainer.best)
    if not best.is_file():
        raise ExportError(f"training produced no weights at {best}")
    record = {
        "dataset": dataset, "dataset_manifest_sha256": registry.sha256_file(Path(manifest["_path"])),
        "dataset_fingerprint": fp, "split": trainsets.summary(tr, va), "seed": seed,
        "epochs": epochs, "imgsz": imgsz, "batch": batch, "tile_px": tile_px, "fraction": fraction,
        "device": device, "train_seconds": round(time.monotonic() - t0, 1), "weights": str(best),
        "weights_sha256": registry.sha256_file(best), **base_facts,
    }
    (work / "train_record.json").write_text(json.dumps(record, indent=2))
    return record


def import_run(run_dir: Path, dataset: str, out_name: str) -> dict:
    """The training record of a run made elsewhere (``scripts/gpu/train_vessels.sh``: ``best.pt`` + ``run.json``).

    The weights' sha256 must match the run's record and the run's data must be this checkout's data (dataset
    manifest sha256 and data fingerprint), so the record stays true. ``best.pt`` is copied into the model cache
    (the registered manifest points at it). Returns the record, ``weights`` being the copy.
    """
    import shutil

    from seawatch.errors import ChecksumMismatch, ConfigError, InputError

    run_dir = Path(run_dir)
    try:
        info = json.loads((run_dir / "run.json").read_text())
        run = info["run"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{run_dir}: not a training run folder (needs run.json from train_vessels.sh): {exc}") from exc
    weights = run_dir / str(run.get("weights", "best.pt"))
    if not weights.is_file():
        raise InputError(f"{run_dir}: no {weights.name}")
    sha = registry.sha256_file(weights)
    if sha != run.get("weights_sha256"):
        raise ChecksumMismatch(f"{weights}: sha256 {sha} is not the run's {run.get('weights_sha256')}")
    if run.get("smoke"):
        log.warning("importing a smoke run (%s): a pipeline check, not a usable model", run_dir)
    manifest = trainsets.load_dataset_manifest(dataset)
    man_sha = registry.sha256_file(Path(manifest["_path"]))
    if man_sha != info.get("dataset_manifest_sha256"):
        raise ConfigError(f"{manifest['_path']}: sha256 {man_sha[:12]} differs from the one the run was packed "
                          f"with ({str(info.get('dataset_manifest_sha256'))[:12]}): the record would not be true")
    fp = trainsets.fingerprint(trainsets.scan(manifest))
    if fp != info.get("dataset_fingerprint"):
        raise ConfigError(f"dataset {dataset!r}: data fingerprint {fp[:12]} differs from the run's "
                          f"({str(info.get('dataset_fingerprint'))[:12]}): the shared data changed since packing")
    target = paths.cache_dir() / "train" / f"{out_name}-import-{sha[:12]}" / "best.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, target)
    keep = ("dataset_manifest_sha256", "dataset_fingerprint", "split", "val_cameras", "tiles", "packed_sha256",
            "frames_webp_quality", "base", "base_sha256", "transferred_tensors", "base_weights_sha256_transferred")
    if run.get("base"):  # started from another registry model than the packed base: its facts do not apply
        keep = tuple(k for k in keep if k not in ("base_sha256", "transferred_tensors",
                                                  "base_weights_sha256_transferred"))
    record = {"dataset": dataset, **{k: info[k] for k in keep if k in info},
              **{k: run[k] for k in ("seed", "imgsz", "batch", "epochs_done", "time_box_h", "deterministic", "device",
                                     "torch", "ultralytics", "layout", "train_seconds", "interrupted", "smoke",
                                     "best_by_map50", "train_too", "base") if k in run},
              "epochs": run.get("epochs_done"), "weights": str(target), "weights_sha256": sha,
              # the tiling and start weights the run actually used (run.json overrides the packed defaults)
              **({"tiles": run["tiles"]} if "tiles" in run else {}),
              **{k: run[k] for k in ("start_weights", "start_weights_sha256") if k in run},
              "onnx_sha256_trained": run.get("onnx_sha256"), "imported_from": str(run_dir.resolve())}
    (target.parent / "train_record.json").write_text(json.dumps(record, indent=2))
    return record
