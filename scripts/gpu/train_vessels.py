"""One-shot vessel training from ``.gpu/`` (built by ``pack_vessels.sh``): tile, train, export, collect.

Meant for the GPU machine (Python 3.12, torch there, ultralytics from the carried wheels, no network), run by
``train_vessels.sh``; ``--smoke`` runs the same path on the CPU with a few frames and one epoch.

1. Tiles: each packed frame is cut with the tiled inference's own grid (``seawatch.vision.tiling.tile_starts``,
   ``trainsets._tile_labels``): every tile holding a vessel, a seeded sample (``empty_keep``) of the empty
   tiles, and the whole frame downscaled to the tile size. Both splits are treated alike, so ultralytics'
   validation (which picks ``best.pt``) sees held-out cameras the way the runtime's tiles do. With
   ``--hard-negatives WEIGHTS`` the training part also keeps every empty tile on which that vessel model fires
   (buoys, pilings, masts, houses: what a random sample of empty tiles mostly misses); only tiles that no
   labelled box touches qualify, so a boat cut by the tile edge is never taught as background.
2. Training with ultralytics, time-boxed with its ``time=`` argument (hours; it re-plans the epochs after the
   first one and always stops). No network: the AMP self-check (it would download a model) is skipped, and
   results.csv is read without polars (not carried: a 54 MB wheel).
3. ``best.pt`` exported to ONNX (no simplification; ``seawatch models register`` re-exports and verifies anyway).
4. ``--out`` receives best.pt, best.onnx, results.csv, args.yaml and run.json (provenance + what the run did).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("train_vessels")


def import_seawatch() -> None:
    """Make ``seawatch`` importable from this checkout (the repository root is the package) when not installed."""
    try:
        import seawatch.vision.trainsets  # noqa: F401

        return
    except ImportError:
        pass
    pkg = Path(os.environ.get("TMPDIR", "/tmp")) / "seawatch_pkg"
    pkg.mkdir(parents=True, exist_ok=True)
    link = pkg / "seawatch"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(pkg))
    import seawatch.vision.trainsets  # noqa: F401


def _cut_frame(job: tuple) -> dict:
    """Tiles (``trainsets.cut_tiles``) and the downscaled whole frame of one packed frame; returns counts."""
    import cv2

    from seawatch.vision.trainsets import cut_tiles

    img_path, img_dir, lab_dir, tile_px, overlap, min_keep, empty_keep, seed, frame_px = job[:9]
    cand_dir = job[9] if len(job) > 9 else None  # hard-negative candidates go here (mined later)
    img = cv2.imread(str(img_path))
    if img is None:
        raise RuntimeError(f"{img_path}: cannot read image")
    h, w = img.shape[:2]
    lines = tuple(x for x in img_path.with_suffix(".txt").read_text().splitlines() if x.strip())
    stem = img_path.stem
    scale = frame_px / max(h, w)  # the whole frame as the runtime's full-frame pass sees it
    cv2.imwrite(str(img_dir / f"{stem}.jpg"), cv2.resize(img, (round(w * scale), round(h * scale)),
                                                          interpolation=cv2.INTER_AREA) if scale < 1 else img,
                [cv2.IMWRITE_JPEG_QUALITY, 95])  # YOLO labels are normalised: the resize leaves them as they are
    (lab_dir / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    c = cut_tiles(img, lines, stem, img_dir, lab_dir, tile_px=tile_px, overlap=overlap, min_keep=min_keep,
                  empty_keep=empty_keep, seed=seed, cand_dir=cand_dir)
    c["boxes"] = len(lines) + c.pop("tile_boxes")
    return {"frames": 1, **c}


def frame_camera(path: Path, patterns: dict) -> str | None:
    """The camera id of a packed frame (``<source>__<file stem>``), by its dataset source's ``camera_from``
    (``patterns``: source name -> ``trainsets.camera_pattern``)."""
    source, _, stem = path.stem.partition("__")
    m = patterns[source].search(stem) if source in patterns else None
    return m.group(1) if m else None


def split_frames(frames: Path, train_too: set[str], patterns: dict | None = None) -> tuple[dict[str, list[Path]], bool]:
    """Packed frames per part; held-out cameras named in ``train_too`` (``*``: all) move to the training part.
    When none is left held out, validation keeps every held-out frame (a monitor only); the flag says whether
    the validation part is still held out."""
    parts = {p: sorted((frames / p).glob("*.webp")) for p in ("train", "val")}
    for part, imgs in parts.items():
        if not imgs:
            raise SystemExit(f"train_vessels: no frames in {frames / part}; run scripts/gpu/pack_vessels.sh first")
    from seawatch.vision.trainsets import in_train_too

    moved = [p for p in parts["val"]
             if in_train_too(frame_camera(p, patterns or {}), p.stem.partition("__")[2], train_too)]
    if not moved:
        return parts, True
    kept = [p for p in parts["val"] if p not in moved]
    return {"train": parts["train"] + moved, "val": kept or parts["val"]}, bool(kept)


def build_layout(frames: Path, out: Path, classes: list[str], tiles: dict, seed: int, limit: int | None,
                 procs: int, train_too: set[str] = frozenset(), patterns: dict | None = None,
                 hard_negatives: dict | None = None, keep_candidates: bool = False) -> dict:
    """The YOLO layout (tiles + frames) of both splits under ``out``; returns per-split counts (and whether the
    validation part is held out). ``hard_negatives``: ``{"weights", "imgsz", "conf", "device"}`` mines the training
    part's empty tiles with those models (``trainsets.mine_hard_negatives``). ``keep_candidates``: the candidate
    tiles no miner fired on stay in ``out/hard_negative_candidates`` for a later round (``--refine-epochs``)."""
    from multiprocessing import Pool

    if out.exists():
        shutil.rmtree(out)
    counts = {}
    parts, held_out = split_frames(frames, set(train_too), patterns)
    for part in ("train", "val"):
        imgs = parts[part]
        if limit:
            imgs = imgs[:: max(1, len(imgs) // limit)][:limit]
        img_dir, lab_dir = out / "images" / part, out / "labels" / part
        img_dir.mkdir(parents=True)
        lab_dir.mkdir(parents=True)
        cand_dir = out / "hard_negative_candidates" if (hard_negatives or keep_candidates) and part == "train" \
            else None
        if cand_dir is not None:
            cand_dir.mkdir(parents=True)
        jobs = [(p, img_dir, lab_dir, tiles["tile_px"], tiles["overlap"], tiles["min_keep"], tiles["empty_keep"],
                 seed, tiles.get("frame_px", tiles["tile_px"]), cand_dir) for p in imgs]
        if procs > 1:
            with Pool(procs) as pool:
                per_frame = pool.map(_cut_frame, jobs, chunksize=4)
        else:
            per_frame = [_cut_frame(j) for j in jobs]
        total = {k: sum(c[k] for c in per_frame) for k in per_frame[0]}
        if cand_dir is not None and hard_negatives:
            from seawatch.vision.trainsets import mine_hard_negatives

            total.update(mine_hard_negatives(cand_dir, img_dir, lab_dir, **hard_negatives,
                                             drop_rest=not keep_candidates))
        elif cand_dir is None:
            del total["hard_negative_candidates"]
        total["images"] = total["frames"] + total["vessel_tiles"] + total["empty_tiles"] + \
            total.get("hard_negative_tiles", 0)
        counts[part] = total
    counts["val_held_out"] = held_out
    (out / "data.yaml").write_text(json.dumps({"path": str(out.resolve()), "train": "images/train",
                                               "val": "images/val",
                                               "names": {i: c for i, c in enumerate(classes)}}, indent=1))
    return counts


def _number(text: str):
    try:
        v = float(text)
    except ValueError:
        return text.strip()
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def read_results(path: Path) -> dict[str, list]:
    """results.csv as {column: [values]} (what ultralytics reads with polars)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return {}
    out: dict[str, list] = {}
    for row in rows:
        for k, v in row.items():
            out.setdefault(k.strip(), []).append(_number(v or ""))
    return out


def patch_ultralytics_offline() -> list[str]:
    """What ultralytics would fetch or needs polars for, made to work offline. Returns what was patched."""
    import ultralytics.engine.trainer as trainer_mod

    done = []
    try:
        import polars  # noqa: F401
    except ImportError:
        trainer_mod.BaseTrainer.read_results_csv = lambda self: read_results(self.csv)
        done.append("read_results_csv without polars")

    def no_amp_download(model) -> bool:
        import torch

        on = next(model.parameters()).device.type == "cuda"
        log.info("AMP self-check skipped (it downloads yolo26n.pt; offline); AMP %s", "on" if on else "off")
        return on and torch.cuda.is_available()

    trainer_mod.check_amp = no_amp_download
    done.append("check_amp without download")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu-dir", default=str(REPO / ".gpu"), help="what pack_vessels.sh built")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="where the results go (default: $OUT)")
    ap.add_argument("--work", default=None, help="scratch folder (default: $TMPDIR/vessels_train)")
    ap.add_argument("--device", default=None, help="0 (default when CUDA is there) or cpu")
    ap.add_argument("--time-h", type=float, default=None,
                    help="training time box in hours (ultralytics time=; default 0.1, 0 = none)")
    ap.add_argument("--epochs", type=int, default=None, help="upper bound (default 300); time= re-plans it")
    ap.add_argument("--imgsz", type=int, default=None, help="default 640 (the tile size)")
    ap.add_argument("--batch", type=int, default=None, help="default 32")
    ap.add_argument("--workers", type=int, default=None, help="data loader workers (default: cores - 2, <= 12)")
    ap.add_argument("--patience", type=int, default=40)
    ap.add_argument("--optimizer", default="auto", help="ultralytics optimizer (auto, SGD, AdamW, ...)")
    ap.add_argument("--lr0", type=float, default=None, help="initial learning rate (needs --optimizer other than auto)")
    ap.add_argument("--lrf", type=float, default=None, help="final learning rate as a fraction of lr0")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: every core)")
    ap.add_argument("--warmup-epochs", type=float, default=None,
                    help="learning-rate warm-up in epochs (ultralytics' default 3; lower it for runs of a few epochs)")
    ap.add_argument("--empty-keep", type=float, default=None, help="override provenance's empty tile fraction")
    ap.add_argument("--tile-px", type=int, default=None,
                    help="override provenance's tile side (source pixels); a tile smaller than --imgsz is "
                         "upscaled, i.e. trained at zoom imgsz/tile-px (the runtime then tiles at the same size)")
    ap.add_argument("--base-weights", default=None,
                    help="start from these weights instead of provenance's base (path, or relative to --gpu-dir); "
                         "its sha256 is recorded in run.json")
    ap.add_argument("--base-name", default=None,
                    help="the registry name the start weights come from when not the packed base (e.g. fall); "
                         "recorded as the run's base")
    ap.add_argument("--train-too", default="",
                    help="held-out cameras to train on as well, comma-separated, or 'all' for the model to ship "
                         "(its validation numbers are then not held out); an entry with * or ? is a file-name "
                         "pattern (e.g. '*w4gnqsqx_*_2022-07-16_*': one day of a camera, its other days held out)")
    ap.add_argument("--hard-negatives", default=None, metavar="WEIGHTS",
                    help="vessel models (.pt files, comma-separated; 'base' = the start weights; where onnxruntime and "
                         "a model cache exist, registered names such as coco_yolov5n) run over the training part's "
                         "dropped empty tiles: every tile one of them fires on is kept as background (hard "
                         "negatives); an earlier round's model next to 'base' adds what that model still confuses")
    ap.add_argument("--hard-negative-conf", type=float, default=0.25, help="what counts as firing (default 0.25)")
    ap.add_argument("--seed", type=int, default=None,
                    help="training seed (and of the empty-tile sample) instead of the packed one: replicate runs "
                         "show how much of a difference is the data and how much chance")
    ap.add_argument("--refine-epochs", type=int, default=0,
                    help="after training, mine the dropped empty tiles with the trained model itself and train this "
                         "many more epochs from it on the layout plus those hard negatives (SGD, constant "
                         "--refine-lr0, no warm-up: the recipe measured on the CPU); one GPU run then needs no "
                         "earlier vessel model to mine with. Skipped when the first phase was interrupted")
    ap.add_argument("--refine-lr0", type=float, default=0.001, help="learning rate of the refine phase")
    ap.add_argument("--no-val", action="store_true",
                    help="no validation after each epoch (ultralytics val=False): best.pt is then the last epoch's, "
                         "not the one that scored best on the held-out cameras' tiles (a choice made on the "
                         "held-out frames flatters their numbers), and the loader's time goes to training")
    ap.add_argument("--no-export", action="store_true",
                    help="skip the ONNX export (seawatch models train --import / register export and verify anyway)")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU pipeline check: 6 train / 6 val frames, 1 epoch, 320 px, batch 4, no time box, polars "
                         "hidden (options given explicitly still win)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not args.out:
        print("train_vessels: no --out and no $OUT", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    gpu = Path(args.gpu_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(os.environ.get("TMPDIR", "/tmp")) / "vessels_train"
    try:
        prov = json.loads((gpu / "provenance.json").read_text())
        classes = json.loads((gpu / "frames" / "classes.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"train_vessels: {gpu} is not a packed training folder ({exc}); run scripts/gpu/pack_vessels.sh",
              file=sys.stderr)
        return 2
    tiles = dict(prov["tiles"])
    if args.empty_keep is not None:
        tiles["empty_keep"] = args.empty_keep
    if args.tile_px is not None:
        tiles["tile_px"] = args.tile_px
    if args.smoke:
        sys.modules["polars"] = None  # the GPU machine has no polars: the smoke run must not use it either
    defaults = dict(epochs=1, imgsz=320, batch=4, time_h=0.0) if args.smoke else \
        dict(epochs=300, imgsz=640, batch=32, time_h=0.1)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    tiles["frame_px"] = args.imgsz
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics_cfg"))
    import_seawatch()
    import torch

    device = args.device or ("0" if torch.cuda.is_available() else "cpu")
    cores = os.cpu_count() or 2
    workers = args.workers if args.workers is not None else max(1, min(12, cores - 2))
    seed = int(prov.get("seed", 0)) if args.seed is None else args.seed

    t0 = time.monotonic()
    train_too = {"*"} if args.train_too == "all" else {c for c in args.train_too.split(",") if c}
    patterns = {}
    if train_too - {"*"}:  # cameras by name: each dataset source's own camera_from
        from seawatch.vision.trainsets import camera_pattern, load_dataset_manifest

        dataset = load_dataset_manifest(REPO / prov.get("dataset_manifest", "datasets/vessels.yaml"))
        patterns = {src["name"]: camera_pattern(src) for src in dataset["sources"]}
    patched = patch_ultralytics_offline()  # before the layout: mining hard negatives runs a model too
    if device == "cpu":
        from seawatch.vision.export.loaders import use_cpu_threads

        use_cpu_threads(args.threads or cores)
    base = gpu / (args.base_weights or prov["base_weights"])
    mining = None
    if args.hard_negatives:
        # resolved here rather than by seawatch.vision.export.train.resolve_miners: the GPU machine has ultralytics
        # but not the registry's dependencies (pydantic, onnxruntime), and .pt paths are relative to --gpu-dir
        weights = []
        for w in (w.strip() for w in args.hard_negatives.split(",") if w.strip()):
            if w == "base" or w.endswith(".pt"):
                path = base if w == "base" else gpu / w
                if not path.is_file():
                    print(f"train_vessels: --hard-negatives {path}: no such file", file=sys.stderr)
                    return 2
                weights.append(path)
                continue
            try:  # a registered model's name: mined through its ONNX (needs onnxruntime and a provisioned cache)
                from seawatch.vision import registry

                registry.resolve_onnx(w, "fp32")
            except Exception as exc:  # noqa: BLE001 - no onnxruntime here (the GPU machine), or not provisioned
                print(f"train_vessels: --hard-negatives {w}: not a .pt file and not a usable registered model "
                      f"({exc})", file=sys.stderr)
                return 2
            weights.append(w)
        mining = {"weights": weights, "imgsz": args.imgsz, "conf": args.hard_negative_conf, "device": device}
    counts = build_layout(gpu / "frames", work / "data", classes, tiles, seed, 6 if args.smoke else None,
                          procs=max(1, min(cores, 16)), train_too=train_too, patterns=patterns,
                          hard_negatives=mining, keep_candidates=args.refine_epochs > 0)
    tile_s = time.monotonic() - t0
    log.info("layout in %.1f s: %s", tile_s, json.dumps(counts))

    import ultralytics
    from ultralytics import YOLO

    yolo = YOLO(str(base))
    train_kw = dict(data=str(work / "data" / "data.yaml"), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                    device=device, seed=seed, deterministic=False, workers=workers, plots=False,
                    project=str(work), name="run", exist_ok=True, patience=args.patience, amp=device != "cpu",
                    cache="ram" if device != "cpu" else False, verbose=True)
    if args.time_h > 0:
        train_kw["time"] = args.time_h
    if args.no_val:
        train_kw["val"] = False
    train_kw["optimizer"] = args.optimizer
    for k in ("warmup_epochs", "lr0", "lrf"):
        if getattr(args, k) is not None:
            train_kw[k] = getattr(args, k)
    interrupted = False
    t0 = time.monotonic()
    try:
        yolo.train(**train_kw)
    except KeyboardInterrupt:  # the shell's outer timeout: keep what was saved so far
        interrupted = True
        log.warning("training interrupted; collecting the last saved weights")
    train_s = time.monotonic() - t0
    run_dir = work / "run"
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        best = run_dir / "weights" / "last.pt"
    if not best.is_file():
        print(f"train_vessels: no weights under {run_dir / 'weights'}", file=sys.stderr)
        return 3
    refine = None
    if args.refine_epochs > 0 and interrupted:
        log.warning("first phase interrupted: no refine phase")
        refine = {"skipped": "first phase interrupted"}
    elif args.refine_epochs > 0:
        refine, best2, interrupted = _refine(args, best, work, train_kw, device)
        if best2 is not None:
            best = best2
            if (work / "refine" / "results.csv").is_file():
                shutil.copyfile(work / "refine" / "results.csv", out / "refine_results.csv")
    if interrupted:
        from ultralytics.utils.torch_utils import strip_optimizer

        strip_optimizer(best)  # drop the optimizer state: the file must fit what comes back from $OUT
    shutil.copyfile(best, out / "best.pt")
    for name in ("results.csv", "args.yaml"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)

    onnx_sha = None
    t0 = time.monotonic()
    if args.no_export:
        log.info("ONNX export skipped (--no-export)")
    else:
        try:
            onnx_path = YOLO(str(out / "best.pt")).export(format="onnx", imgsz=args.imgsz, simplify=False,
                                                          dynamic=False, device="cpu")
            if Path(onnx_path) != out / "best.onnx":
                shutil.move(str(onnx_path), out / "best.onnx")
            onnx_sha = _sha256(out / "best.onnx")
        except Exception as exc:  # noqa: BLE001 - the .pt is what matters; register re-exports it
            log.warning("ONNX export failed (%s: %s); best.pt is still usable", type(exc).__name__, exc)
    export_s = time.monotonic() - t0

    res = read_results(run_dir / "results.csv")
    epochs_done = len(res.get("epoch", []))
    best_row = {}
    key = "metrics/mAP50(B)"
    if res.get(key):
        i = max(range(epochs_done), key=lambda j: res[key][j])
        best_row = {k: v[i] for k, v in res.items()}
    last_row = {k: v[-1] for k, v in res.items()} if epochs_done else {}
    run = {
        "device": torch.cuda.get_device_name(0) if device != "cpu" and torch.cuda.is_available() else "cpu",
        "python": sys.version.split()[0], "torch": torch.__version__, "ultralytics": ultralytics.__version__,
        "smoke": args.smoke, "seed": seed, "deterministic": False, "time_box_h": args.time_h or None,
        "epochs_bound": args.epochs, "epochs_done": epochs_done, "imgsz": args.imgsz, "batch": args.batch,
        "workers": workers, "threads": (args.threads or cores) if device == "cpu" else None,
        "patience": args.patience, "val_each_epoch": not args.no_val, "tiles": tiles, "layout": counts,
        **{k: train_kw[k] for k in ("optimizer", "lr0", "lrf", "warmup_epochs") if k in train_kw},
        "train_too": sorted(train_too), **({"base": args.base_name} if args.base_name else {}),
        **({"hard_negatives": ",".join(_miner_name(w, gpu) for w in mining["weights"])} if mining else {}),
        "patched": patched,
        **({"refine": refine} if refine else {}),
        "interrupted": interrupted, "layout_seconds": round(tile_s, 1), "train_seconds": round(train_s, 1),
        "export_seconds": round(export_s, 1), "total_seconds": round(time.monotonic() - t_start, 1),
        "best_by_map50": best_row, "last_epoch": last_row,
        "weights": "best.pt", "weights_sha256": _sha256(out / "best.pt"), "onnx_sha256": onnx_sha,
        "start_weights": str(base.relative_to(gpu)) if base.is_relative_to(gpu) else base.name,
        "start_weights_sha256": _sha256(base),
    }
    (out / "run.json").write_text(json.dumps({**prov, "run": run}, indent=1) + "\n")
    summary = {k: run[k] for k in ("device", "epochs_done", "train_seconds", "total_seconds", "interrupted")}
    summary["best_map50"] = best_row.get(key)
    summary["best_epoch"] = best_row.get("epoch")
    summary["files"] = sorted(p.name for p in out.iterdir())
    print("SUMMARY " + json.dumps(summary))
    return 0


def _miner_name(weights: Path | str, gpu: Path) -> str:
    """How run.json names a miner: a registered model's name, a .pt file relative to the packed folder, or its name."""
    if isinstance(weights, str):
        return weights
    return str(weights.relative_to(gpu)) if weights.is_relative_to(gpu) else weights.name


def _refine(args, first_best: Path, work: Path, train_kw: dict, device: str) -> tuple[dict, Path | None, bool]:
    """The refine phase: the candidate tiles (dropped empty tiles no labelled box touches) that the first phase's
    model fires on join the training images as background, then ``--refine-epochs`` more epochs from that model.
    Returns what it did, the weights to keep (None: keep the first phase's) and whether it was interrupted."""
    from ultralytics import YOLO

    from seawatch.vision.trainsets import mine_hard_negatives

    data = work / "data"
    t0 = time.monotonic()
    mined = mine_hard_negatives(data / "hard_negative_candidates", data / "images" / "train", data / "labels" / "train",
                                [first_best], imgsz=args.imgsz, conf=args.hard_negative_conf, device=device)
    done = {"epochs": args.refine_epochs, "lr0": args.refine_lr0, "mining": mined,
            "mining_seconds": round(time.monotonic() - t0, 1)}
    log.info("refine: %d hard negatives mined by the first phase's model", mined["hard_negative_tiles"])
    kw = {**train_kw, "epochs": args.refine_epochs, "name": "refine", "optimizer": "SGD", "lr0": args.refine_lr0,
          "lrf": 1.0, "warmup_epochs": 0}
    kw.pop("time", None)
    t0 = time.monotonic()
    interrupted = False
    try:
        YOLO(str(first_best)).train(**kw)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("refine phase interrupted; collecting its last saved weights")
    done["train_seconds"] = round(time.monotonic() - t0, 1)
    res = read_results(work / "refine" / "results.csv")
    done["epochs_done"] = len(res.get("epoch", []))
    maps = res.get("metrics/mAP50(B)") or []
    done["best_map50"] = max(maps) if maps else None
    for name in ("best.pt", "last.pt"):
        if (work / "refine" / "weights" / name).is_file():
            return done, work / "refine" / "weights" / name, interrupted
    done["skipped"] = "the refine phase saved no weights; the first phase's are kept"
    return done, None, interrupted


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
