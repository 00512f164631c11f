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
import math
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


ENGINES = ("ultralytics", "yolov5")  # the training engines of `seawatch models train --engine`


def check_freeze(freeze: int, layers: int) -> None:
    """``--freeze`` against start weights of ``layers`` layers: the last one, the detection head, always trains."""
    if not 0 <= freeze < layers - 1:
        raise ModelError(f"--freeze {freeze}: 0 to {layers - 2} for these start weights ({layers} layers; the "
                         f"detection head, layer {layers - 1}, always trains; 10 = the backbone)")


def provisioned_weights(base: str):
    """The manifest of the registered model ``base`` and its provisioned weights file; ModelError if not fetched."""
    manifest = registry.get_manifest(base)
    lock = registry.read_lock(base) or {}
    if not lock.get("weights_path") or not Path(lock["weights_path"]).is_file():
        raise ModelError(f"base model {base!r} is not provisioned: run `seawatch models fetch {base}`")
    return manifest, Path(lock["weights_path"])


def base_checkpoint(base: str, work: Path) -> tuple[Path, dict]:
    """A ``.pt`` file ultralytics can train from, and facts about where it came from."""
    from seawatch.vision.export.loaders import load_checkpoint, prepare_ultralytics_env

    prepare_ultralytics_env()
    p = Path(base)
    if p.suffix in (".pt", ".yaml"):
        if p.suffix == ".pt" and not p.is_file():
            raise ModelError(f"base weights {p} not found")
        return p, {"base": str(p), "base_sha256": registry.sha256_file(p) if p.is_file() else None}
    manifest, weights = provisioned_weights(base)
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


def _layout_key(tile_px: int, empty_keep: float, seed: int, mining: dict | None, train_too: list[str],
                fraction: float = 1.0) -> str:
    """The layout folder's name: the default layout keeps its old name, any other choice of frames, tiles or mining
    gets its own."""
    if empty_keep >= 1.0 and not mining and not train_too and fraction >= 1.0:
        return f"data-tile{tile_px}"
    import hashlib

    miners = [trainsets.miner_sha256(w) for w in (mining or {}).get("weights", [])]  # a re-registered miner: anew
    key = json.dumps({"empty_keep": empty_keep, "seed": seed, "train_too": sorted(train_too), "fraction": fraction,
                      "mining": {k: str(v) for k, v in (mining or {}).items() if k != "device"}, "miners": miners},
                     sort_keys=True)
    return f"data-tile{tile_px}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def resolve_miners(names: list[str], start_pt: Path | None, base_model: str | None = None) -> list[str]:
    """``--hard-negatives`` entries as the miners :func:`trainsets.mine_hard_negatives` takes: ``base`` = the start
    weights (a vessel model to continue from; with the YOLOv5 engine, ``base_model``, the registered model training
    starts from, run through its ONNX), a ``.pt`` path, or a registered model's name (run through its ONNX, e.g.
    ``vessel`` or ``coco_yolov5n`` whose boat class is mapped to vessel)."""
    out = []
    for n in names:
        if n == "base" and base_model is not None:
            out.extend(resolve_miners([base_model], None))
        elif n == "base":
            if start_pt is None or start_pt.suffix != ".pt":
                raise ModelError("--hard-negatives base needs start weights in a .pt file, not an architecture")
            out.append(str(start_pt))
        elif n.endswith(".pt"):
            if not Path(n).is_file():
                raise ModelError(f"--hard-negatives {n}: no such file")
            out.append(n)
        else:
            labels = registry.get_manifest(n).labels  # ModelNotFound, then ModelNotProvisioned, name the problem
            registry.resolve_onnx(n, "fp32")
            if "vessel" not in labels.values():
                raise ModelError(f"--hard-negatives {n}: the model has no vessel label to mine with")
            out.append(n)
    return out


def train(dataset: str, out_name: str, *, base: str = "coco_yolov5n", epochs: int = 50, imgsz: int = 640,
          batch: int = 16, device: str = "cpu", seed: int = 0, tile_px: int = 640, fraction: float = 1.0,
          workers: int = 2, patience: int = 30, empty_keep: float = 1.0, hard_negatives: list[str] = (),
          hard_negative_conf: float = 0.25, train_too: list[str] = (), optimizer: str = "auto",
          lr0: float | None = None, lrf: float | None = None, warmup_epochs: float | None = None,
          time_h: float = 0.0, engine: str = "ultralytics", freeze: int = 0) -> dict:
    """Train, export to ONNX, register ``out_name`` in the user registry. Returns the training record.

    ``time_h`` > 0 time-boxes the run (ultralytics' ``time=``, hours): it re-plans the epoch count after the first
    epoch so the learning-rate schedule ends with the box, and ``epochs`` is ignored; the record says how many ran.
    ``engine="yolov5"`` trains the original YOLOv5 COCO model with its boat class as the starting head
    (:mod:`seawatch.vision.export.train_yolov5`): ``base`` must be a YOLOv5 COCO model or a vessel model that engine
    trained (``base`` among the miners is then that registered model), SGD only; the record's ``weights`` is then
    the exported ONNX file (``checkpoint``: the YOLOv5 ``.pt``).

    ``empty_keep`` keeps that seeded fraction of the empty tiles; ``hard_negatives`` (miners, see
    :func:`resolve_miners`) add every other empty tile one of them fires on at ``hard_negative_conf``;
    ``train_too`` moves held-out cameras (``*``: all) or frames matching a file-name pattern into training;
    ``optimizer``, ``lr0``, ``lrf``, ``warmup_epochs`` go to ultralytics when given (the gentle recipe that continues
    a trained model: SGD, 0.001, 1.0, 0). ``freeze`` keeps the first that many layers of the start weights as they
    are (10: the COCO backbone); the detection head always trains."""
    from seawatch.vision.export.loaders import prepare_ultralytics_env, use_cpu_threads

    if not 0.0 <= empty_keep <= 1.0:
        raise ModelError(f"--empty-keep {empty_keep}: a fraction in [0, 1]")
    schedule = {k: v for k, v in (("lr0", lr0), ("lrf", lrf), ("warmup_epochs", warmup_epochs)) if v is not None}
    if any(v < 0 for v in schedule.values()) or schedule.get("lr0", 1.0) == 0:
        raise ModelError(f"learning-rate schedule {schedule}: lr0 must be positive, lrf and warm-up not negative")
    if not (time_h >= 0.0 and math.isfinite(time_h)):
        raise ModelError(f"--time-h {time_h}: hours, 0 or more (0 = no time box)")
    if engine not in ENGINES:
        raise ModelError(f"--engine {engine!r}: {' or '.join(ENGINES)}")
    if freeze < 0:  # the upper bound (the head's index) is checked against the model
        raise ModelError(f"--freeze {freeze}: a layer count, 0 (train every layer) or more; 10 = the backbone")
    if engine == "yolov5":
        if device != "cpu":
            raise ModelError("--engine yolov5 trains on the CPU (--device cpu); on a GPU use the ultralytics engine")
        if optimizer not in ("auto", "SGD") or set(schedule) - {"lr0"}:
            raise ModelError("--engine yolov5 trains with SGD and a linear schedule to 1 %: of the schedule options "
                             "only --lr0 applies")
        from seawatch.vision.export.train_yolov5 import check_base

        check_base(base)  # before any data is tiled
    if "lr0" in schedule and optimizer == "auto" and engine == "ultralytics":
        raise ModelError("--lr0 needs --optimizer (SGD, AdamW, ...): ultralytics' auto optimizer chooses its own rate")
    manifest = trainsets.load_dataset_manifest(dataset)
    items = trainsets.scan(manifest)
    val_cameras = set(manifest.get("split", {}).get("val_cameras", []))
    tr, va = trainsets.split(items, val_cameras)
    too = set(train_too)
    if too:
        moved = [v for v in va if trainsets.in_train_too(v.camera, v.image.stem, too)]
        if not moved:
            raise ModelError(f"--train-too {','.join(sorted(too))}: matches no held-out frame")
        tr = tr + moved
        va = [v for v in va if v not in moved] or va  # nothing left held out: validation is a monitor only
    if not tr or not va:
        raise ModelError(f"dataset {dataset!r}: empty train or val split")
    if not 0.0 < fraction <= 1.0:
        raise ModelError(f"--fraction {fraction}: a fraction in (0, 1]")
    if fraction < 1.0:  # every k-th training frame (stable), before tiling: a smoke run cuts and mines only those
        tr = tr[::max(1, round(1 / fraction))]
    fp = trainsets.fingerprint(items)
    work = paths.cache_dir() / "train" / f"{out_name}-{fp[:12]}"
    if hard_negatives:  # option errors before any work
        if empty_keep >= 1.0:
            raise ModelError("--hard-negatives mines the empty tiles --empty-keep drops: give --empty-keep below 1 "
                             "(0.1 in the measured recipe)")
        resolve_miners([n for n in hard_negatives if n != "base" or engine == "yolov5"], Path("unused.pt"),
                       base if engine == "yolov5" else None)
    work.mkdir(parents=True, exist_ok=True)
    start_pt, base_facts = (None, {}) if engine == "yolov5" else base_checkpoint(base, work)
    mining = None
    if hard_negatives:
        miners = resolve_miners(list(hard_negatives), start_pt, base if engine == "yolov5" else None)
        mining = {"weights": miners, "imgsz": imgsz, "conf": hard_negative_conf, "device": device}
    layout = work / _layout_key(tile_px, empty_keep, seed, mining, sorted(too), fraction)
    prepare_ultralytics_env()
    if device == "cpu":
        use_cpu_threads()
    if not (layout / "data.yaml").is_file():
        trainsets.write_tiled_layout(layout, tr, va, list(manifest["classes"]), tile_px=tile_px,
                                     empty_keep=empty_keep, seed=seed, hard_negatives=mining)
    try:
        counts = json.loads((layout / "layout.json").read_text())
    except (OSError, ValueError):
        counts = {}
    record = {  # what both engines record; each adds its run
        "dataset": dataset, "dataset_manifest_sha256": registry.sha256_file(Path(manifest["_path"])),
        "dataset_fingerprint": fp, "split": trainsets.summary(tr, va), "seed": seed,
        **({"time_box_h": time_h} if time_h > 0 else {}), **({"freeze": freeze} if freeze else {}),
        "imgsz": imgsz, "batch": batch, "tile_px": tile_px,
        "fraction": fraction, "device": device, "workers": workers, "empty_keep": empty_keep, "layout": counts,
        **({"train_too": sorted(too), "val_cameras": sorted(val_cameras)} if too else {}),
        **({"hard_negatives": ",".join(Path(w).name if w.endswith(".pt") else w for w in mining["weights"])}
           if mining else {}),
    }
    if engine == "yolov5":
        from seawatch.vision.export.train_yolov5 import train_boat_headed

        rate = lr0 or 0.01
        run = train_boat_headed(base, layout, work / "run_yolov5", imgsz=imgsz, batch=batch, seed=seed,
                                workers=workers, epochs=epochs, time_s=time_h * 3600, lr0=rate, freeze=freeze)
        record.update(engine="yolov5", optimizer="SGD", lr0=rate, **run)
    else:
        from ultralytics import YOLO

        t0 = time.monotonic()
        yolo = YOLO(str(start_pt))
        check_freeze(freeze, len(yolo.model.model))
        yolo.train(data=str(layout / "data.yaml"), epochs=epochs, imgsz=imgsz, batch=batch, device=device, seed=seed,
                   deterministic=True, workers=workers, plots=False, project=str(work), name="run", exist_ok=True,
                   patience=patience, amp=device != "cpu", verbose=False, optimizer=optimizer, **schedule,
                   **({"time": time_h} if time_h > 0 else {}), **({"freeze": freeze} if freeze else {}))
        best = Path(yolo.trainer.best)
        if not best.is_file():
            raise ExportError(f"training produced no weights at {best}")
        record.update({
            "epochs": int(getattr(yolo.trainer, "epoch", epochs - 1)) + 1,  # done (a time box or early stop: fewer)
            "train_seconds": round(time.monotonic() - t0, 1), "weights": str(best),
            "weights_sha256": registry.sha256_file(best), "optimizer": optimizer, **schedule,
            **base_facts,
        })
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
                                     "best_by_map50", "train_too", "base", "hard_negatives", "refine") if k in run},
              "epochs": run.get("epochs_done"), "weights": str(target), "weights_sha256": sha,
              # the tiling and start weights the run actually used (run.json overrides the packed defaults)
              **({"tiles": run["tiles"]} if "tiles" in run else {}),
              **{k: run[k] for k in ("start_weights", "start_weights_sha256") if k in run},
              "onnx_sha256_trained": run.get("onnx_sha256"), "imported_from": str(run_dir.resolve())}
    (target.parent / "train_record.json").write_text(json.dumps(record, indent=2))
    return record
