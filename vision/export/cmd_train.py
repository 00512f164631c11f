"""``seawatch models train DATASET``: fine-tune, export, verify and register a detector (e.g. ``vessel``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

HELP = "fine-tune a detector on a dataset manifest (datasets/NAME.yaml), export ONNX and register it"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from seawatch.vision.export.train import ENGINES

    p.add_argument("dataset", help="dataset manifest name in datasets/ (e.g. vessels) or a path to one")
    p.add_argument("--name", default="vessel", help="registry name of the result (default: vessel)")
    p.add_argument("--base", default="coco_yolov5n",
                   help="starting weights: coco_yolov5n, fall, ship_published, or a .pt / .yaml path; with "
                        "--engine yolov5, coco_yolov5n or a vessel model that engine trained (training goes on from "
                        "its checkpoint: a CPU run in several sittings)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--time-h", type=float, default=0.0,
                   help="time box in hours instead of an epoch count (ultralytics re-plans the epochs after the first so "
                        "the schedule ends in time; the record keeps the epochs done): --time-h 1 on a CPU, see models/VESSEL.md")
    p.add_argument("--engine", default="ultralytics", choices=ENGINES,
                   help="ultralytics (default; GPU or CPU): the COCO backbone in an anchor-free head trained from zero. "
                        "yolov5 (CPU): the original COCO YOLOv5 keeps its head, cut to the boat class, so training "
                        "starts from COCO's boat detector (measured: models/VESSEL.md)")
    p.add_argument("--register-imgsz", type=int, default=None,
                   help="inference input size to register (default: the training size); the tile side scales with "
                        "it so the trained zoom is kept (trained at 320 px on 192 px tiles, registered at 640: 384 px tiles)")
    p.add_argument("--freeze", type=int, default=0, metavar="N",
                   help="keep the first N layers of the start weights as they are (10 = the COCO backbone); fewer "
                        "weights move, so a short CPU run forgets less and each step is cheaper (measured: models/VESSEL.md)")
    p.add_argument("--workers", type=int, default=2, help="data-loader processes (1 on a 2-core CPU leaves both "
                                                          "cores to the model)")
    p.add_argument("--imgsz", type=int, default=None,
                   help="training input size (tiles are this big; default 640). With --import: the inference input "
                        "size to register (default: the run's); the tile side scales with it, so the zoom the model "
                        "was trained at is kept (a run at 320 px on 192 px tiles, registered at 640, tiles at 384)")
    p.add_argument("--tile-px", type=int, default=0,
                   help="training tile side in source pixels (default: imgsz); smaller tiles are upscaled to imgsz, "
                        "so small vessels are learned larger; the model then tiles at this size (tiling auto)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA device index such as 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fraction", type=float, default=1.0, help="fraction of the training frames, every k-th (smoke runs)")
    p.add_argument("--empty-keep", type=float, default=1.0,
                   help="fraction of the tiles without a vessel kept as background (seeded; default 1 = all)")
    p.add_argument("--hard-negatives", default="", metavar="MODELS",
                   help="comma-separated vessel models (registered names such as vessel, .pt files, or base = the "
                        "start weights; with --engine yolov5 the registered model --base names) run over the empty "
                        "tiles --empty-keep drops: every tile one of them fires on is kept as background (buoys, "
                        "piles, cranes); needs --empty-keep below 1. COCO's boat class (coco_yolov5n) works but "
                        "measured worse than no mining (models/VESSEL.md)")
    p.add_argument("--hard-negative-conf", type=float, default=0.25, help="what counts as firing (default 0.25)")
    p.add_argument("--optimizer", default="auto",
                   help="ultralytics optimizer (auto, SGD, AdamW, ...); continuing a trained vessel model, the measured "
                        "recipe is SGD at a constant 0.001 without warm-up (--optimizer SGD --lr0 0.001 --lrf 1 --warmup-epochs 0)")
    p.add_argument("--lr0", type=float, default=None, help="initial learning rate (needs --optimizer other than auto)")
    p.add_argument("--lrf", type=float, default=None, help="final learning rate as a fraction of lr0")
    p.add_argument("--warmup-epochs", type=float, default=None, help="learning-rate warm-up in epochs (ultralytics: 3)")
    p.add_argument("--train-too", default="",
                   help="held-out cameras to train on as well, comma-separated, or 'all' for the model to ship "
                        "(its validation numbers are then not held out); an entry with * or ? is a file-name pattern")
    p.add_argument("--import", dest="import_dir", default=None, metavar="DIR",
                   help="register a run trained elsewhere instead of training (DIR holds best.pt + run.json from "
                        "scripts/gpu/train_vessels.sh); checks its weights and data against this checkout")
    p.add_argument("--smoke", action="store_true",
                   help="CI-sized run: 1 epoch, 5%% of the training frames, 320 px tiles; proves the pipeline, not the model")


def _trained_tile_px(record: dict, imgsz: int) -> int:
    """The tile side for inference at ``imgsz`` that keeps the zoom the run trained at (its tile side over its input
    size), when the tiles were zoomed; else 0 (= imgsz)."""
    tile = int((record.get("tiles") or {}).get("tile_px") or record.get("tile_px") or 0)
    trained = int(record.get("imgsz") or imgsz)
    if not tile or tile == trained:
        return 0
    return round(tile * imgsz / trained)


def _description(dataset: str, base: str, record: dict) -> str:
    text = f"fine-tuned on {dataset} from {base}"
    if record.get("continued_from"):
        first = record["continued_from"]
        text = (f"fine-tuned on {dataset}, continued from {base} ({first.get('train_seconds_in_all', 0) / 3600:.1f} h "
                f"of training before this run)")
    if record.get("engine") == "yolov5":
        text += " (YOLOv5 engine: its COCO boat class was the start of the vessel head)"
    too = record.get("train_too")
    if too:
        from seawatch.vision.trainsets import is_frame_pattern

        pats = [t for t in too if is_frame_pattern(t)]
        named = [t for t in too if t not in pats]
        cams = "all held-out cameras" if "*" in too else " and ".join(
            ([f"held-out cameras {', '.join(named)}"] if named else []) +
            ([f"held-out frames matching {', '.join(pats)}"] if pats else []))
        text += f", also trained on {cams} (scores on them are not held out)"
    return text


def run(args: argparse.Namespace) -> int:
    from seawatch.vision.export.train import import_run, train

    if args.import_dir:
        record = import_run(args.import_dir, args.dataset, args.name)
        args.imgsz, args.base = int(args.imgsz or record.get("imgsz") or 640), str(record.get("base", args.base))
    else:
        args.imgsz = args.imgsz or 640
        if args.smoke:
            args.epochs, args.fraction, args.imgsz, args.batch = 1, 0.05, 320, 8  # --time-h still applies
        record = train(args.dataset, args.name, base=args.base, epochs=args.epochs, imgsz=args.imgsz,
                       batch=args.batch, device=args.device, seed=args.seed, tile_px=args.tile_px or args.imgsz,
                       time_h=args.time_h, workers=args.workers, engine=args.engine, freeze=args.freeze,
                       fraction=args.fraction, empty_keep=args.empty_keep,
                       hard_negatives=[m.strip() for m in args.hard_negatives.split(",") if m.strip()],
                       hard_negative_conf=args.hard_negative_conf,
                       optimizer=args.optimizer, lr0=args.lr0, lrf=args.lrf, warmup_epochs=args.warmup_epochs,
                       train_too=["*"] if args.train_too == "all" else
                       [c.strip() for c in args.train_too.split(",") if c.strip()])
        args.imgsz = args.register_imgsz or args.imgsz
    data_file = args.dataset if Path(args.dataset).suffix else f"datasets/{args.dataset}.yaml"  # a name, or a path
    register_trained(args.name, record, licence="AGPL-3.0 (fine-tuned from AGPL-3.0 YOLO weights); training data: see "
                                                 f"{data_file}",
                     description=_description(args.dataset, args.base, record), imgsz=args.imgsz,
                     tile_px=_trained_tile_px(record, args.imgsz))
    return 0


def register_trained(name: str, record: dict, *, licence: str, description: str, imgsz: int, tile_px: int) -> None:
    """Registers ``record["weights"]`` as ``name`` (export, verification, provisioning) and keeps ``record`` as the
    lock's training record; prints the record."""
    from seawatch.vision import cmd_models_register, registry

    reg = argparse.Namespace(file=record["weights"], name=name, labels="", classes="", output_format=None,
                             licence=licence, description=description, imgsz=imgsz, tile_px=tile_px, replace=True,
                             check=True)
    cmd_models_register.run(reg)
    lock = registry.read_lock(name)
    lock["training"] = record
    registry.write_lock(name, lock)
    print(json.dumps(record, indent=1))
