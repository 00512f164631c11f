"""``seawatch models soup A B [C...] --name N``: average registered detectors fine-tuned from the same start.
``seawatch models soup A --start 0.25 --name N``: mix one model the YOLOv5 engine trained with the weights it started
from (:func:`seawatch.vision.export.train_yolov5.mix_with_start`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "average the weights of models fine-tuned from the same start (seeds of one recipe) and register the result"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="registered ultralytics-family models (e.g. two seeds of one training recipe) or .pt files")
    p.add_argument("--name", required=True, help="registry name of the soup")
    p.add_argument("--start", type=float, default=None, metavar="F",
                   help="one model the YOLOv5 engine trained (--engine yolov5), mixed with the COCO boat-headed "
                        "weights its training started from: (1 - F) x the model + F x the start, batch-norm "
                        "statistics estimated anew on its training tiles (measured: 0.25, models/VESSEL.md)")


def _weights(model: str) -> tuple[Path, dict | None]:
    """A model's ultralytics weights and its training record (None for a plain .pt path)."""
    from seawatch.errors import ModelError
    from seawatch.vision import registry

    if model.endswith(".pt"):
        if not Path(model).is_file():
            raise ModelError(f"{model}: no such file")
        return Path(model), None
    registry.get_manifest(model)  # ModelNotFound names the registered ones
    lock = registry.read_lock(model) or {}
    path = lock.get("weights_path")
    if not path or not str(path).endswith(".pt") or not Path(path).is_file():
        raise ModelError(f"{model}: no ultralytics .pt weights in the cache (provision it, or give the .pt file)")
    return Path(path), lock.get("training")


def run(args: argparse.Namespace) -> int:
    from seawatch import paths
    from seawatch.errors import ModelError
    from seawatch.vision import registry
    from seawatch.vision.export.cmd_train import register_trained
    from seawatch.vision.export.soup import average_checkpoints

    if args.start is not None:
        if len(args.models) != 1:
            raise ModelError("--start mixes one model with its start weights: give one model")
        from seawatch.vision.export.train_yolov5 import mix_with_start

        name = args.models[0]
        record = mix_with_start(name, paths.cache_dir() / "train" / f"{args.name}-mix", 1.0 - args.start)
        m = registry.get_manifest(name)
        register_trained(args.name, record, licence=m.licence, imgsz=m.defaults.imgsz, tile_px=m.defaults.tile_px or 0,
                         description=f"{name} mixed with the COCO boat head it started from ({args.start:g} of the "
                                     "start's weights, batch-norm statistics estimated anew)")
        return 0
    if len(args.models) < 2:
        raise ModelError("a soup needs two or more models")
    found = [_weights(m) for m in args.models]
    first = args.models[0]
    manifest = None if first.endswith(".pt") else registry.get_manifest(first)
    out = paths.cache_dir() / "train" / f"{args.name}-soup" / "best.pt"
    facts = average_checkpoints([w for w, _ in found], out)
    record: dict = {**facts, "weights": str(out), "weights_sha256": registry.sha256_file(out)}
    records = [r for _, r in found if r]
    if records and len(records) == len(found) and len({r.get("dataset") for r in records}) == 1:
        # what the ingredients trained on, together (so `seawatch evaluate` warns about scored training frames)
        too = sorted({t for r in records for t in (r.get("train_too") or ())})
        record.update({"dataset": records[0]["dataset"], **({"train_too": too} if too else {}),
                       **({"val_cameras": records[0]["val_cameras"]} if records[0].get("val_cameras") else {})})
    imgsz = manifest.defaults.imgsz if manifest else 640
    tile_px = getattr(manifest.defaults, "tile_px", None) if manifest else None
    register_trained(args.name, record, licence=manifest.licence if manifest else "unknown (user-registered)",
                     description=f"weight average (model soup) of {', '.join(args.models)}", imgsz=imgsz,
                     tile_px=tile_px or 0)
    return 0
