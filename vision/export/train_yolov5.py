"""Fine-tuning the original, anchor-based COCO YOLOv5 into a one-class vessel model that starts as COCO's boat class.

The ultralytics path (:mod:`seawatch.vision.export.train`) moves the COCO backbone and neck into ultralytics'
anchor-free head, which starts from nothing: the boat knowledge of the COCO head is lost and a CPU needs many hours
to get it back. Here the model keeps its own Detect head, cut down to one class: for each anchor of each level the
rows x, y, w, h, objectness and the boat logit (COCO class 8), the boat logit folded into the objectness (YOLOv5
does not train the class score of a one-class model). Before any training it finds what COCO's boat class finds,
with the same boxes and the same ranking where scores are small. Training then adapts it to the dataset's cameras
with YOLOv5's own loss, loader (mosaic, HSV, flips, scale) and SGD, under a time box (or an epoch count) that drives
a linear learning-rate schedule. What it gives on a 2-core CPU, measured on cameras it never saw: models/VESSEL.md,
"CPU training"; in short, 20-40 minutes (a frozen backbone or not) do not beat COCO's boat class on 384 px
tiles.

Only the YOLOv5 pieces used here are imported (model, loss, loader, optimiser helpers, EMA) from the PyPI
``yolov5==7.0.14`` distribution that already loads the COCO checkpoint; its train.py is not used (it imports cloud
clients the project does not install).
"""

from __future__ import annotations

import json
import logging
import os
import time
from copy import deepcopy
from pathlib import Path

from seawatch.errors import ExportError, ModelError

log = logging.getLogger(__name__)

COCO_BOAT = 8  # COCO class index of "boat"


def boat_headed_model(checkpoint_model, class_index: int = COCO_BOAT):
    """A one-class copy of a YOLOv5 COCO ``DetectionModel`` whose head is the COCO class ``class_index``: its score
    is ``sigmoid(objectness + class logit)``, the class channel a constant 1.

    Returns ``(model, moved, total)``: every tensor is copied (the Detect convs row-sliced), so ``moved == total``."""
    from yolov5.models.yolo import Model

    src = checkpoint_model.float()
    nc_src = int(src.nc if hasattr(src, "nc") else src.model[-1].nc)
    if not 0 <= class_index < nc_src:
        raise ModelError(f"class {class_index} is not one of the checkpoint's {nc_src} classes")
    cfg = deepcopy(src.yaml)
    cfg["nc"] = 1
    model = Model(cfg, ch=3, nc=1)
    det = len(model.model) - 1
    no_src, na = nc_src + 5, int(src.model[-1].na)
    rows = [a * no_src + j for a in range(na) for j in (0, 1, 2, 3, 4, 5 + class_index)]
    ssd, msd = src.state_dict(), model.state_dict()
    moved = 0
    for k, v in msd.items():
        s = ssd.get(k)
        if s is None:
            continue
        if k.startswith(f"model.{det}.m.") and s.shape[0] == na * no_src:
            s = s[rows].clone()
            # YOLOv5 trains no class score for one class (its loss skips it), so a kept boat logit would drift with
            # the features underneath. Its evidence moves into the objectness logit (sigmoid(o + b) ~ sigmoid(o) *
            # sigmoid(b) where both are small, the same ranking) and the class channel becomes a constant 1.
            o, b = s.view(na, 6, *s.shape[1:])[:, 4], s.view(na, 6, *s.shape[1:])[:, 5]
            o += b
            b.zero_()
            if s.dim() == 1:
                b += 20.0  # sigmoid(20) = 1 - 2e-9
        if s.shape == v.shape:
            msd[k] = s.clone()
            moved += 1
    model.load_state_dict(msd)
    model.names = ["vessel"]
    return model, moved, len(msd)


def freeze_layers(model, n: int) -> int:
    """Freeze the first ``n`` modules of a YOLOv5 ``DetectionModel`` (10 = the backbone): their weights get no
    gradient and their batch-norm statistics stay COCO's (:func:`fit` keeps those modules in eval mode). Returns the
    number of frozen parameter tensors."""
    frozen = 0
    for name, p in model.named_parameters():
        if int(name.split(".")[1]) < n:
            p.requires_grad_(False)
            frozen += 1
    return frozen


def fit(model, layout: Path, *, imgsz: int, batch: int, time_s: float, epochs: int, seed: int, workers: int,
        lr0: float = 0.01, warmup_iters: int = 100, freeze: int = 0) -> dict:
    """Train ``model`` in place on ``layout`` (``images/train`` + ``labels/train``) until ``time_s`` (if > 0) or
    ``epochs`` is reached; the learning rate falls linearly to 1 % over whichever bounds the run; the first
    ``freeze`` modules stay as they are (:func:`freeze_layers`). Returns the EMA weights' model and a log of the
    epochs."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # its label-scan progress bar (a one-off command's process)
    import numpy as np
    import torch
    import yaml
    import yolov5
    from yolov5.utils.dataloaders import create_dataloader
    from yolov5.utils.loss import ComputeLoss
    from yolov5.utils.torch_utils import ModelEMA, smart_optimizer

    from seawatch.vision.export.train import check_freeze

    torch.manual_seed(seed)
    np.random.seed(seed)
    hyp = yaml.safe_load((Path(yolov5.__file__).parent / "data/hyps/hyp.scratch-low.yaml").read_text())
    nl = 3  # detection levels; YOLOv5 scales its loss gains by them, the classes and the image size
    hyp["box"] *= 3 / nl
    hyp["cls"] *= 1 / 80 * 3 / nl
    hyp["obj"] *= (imgsz / 640) ** 2 * 3 / nl
    hyp["label_smoothing"] = 0.0
    check_freeze(freeze, len(model.model))
    model.nc, model.hyp = 1, hyp
    frozen = freeze_layers(model, freeze) if freeze else 0
    loader, _ = create_dataloader(str(layout / "images" / "train"), imgsz, batch, 32, False, hyp=hyp, augment=True,
                                  cache=None, rect=False, rank=-1, workers=workers, prefix="", shuffle=True, seed=seed)
    nb = len(loader)
    if nb == 0:
        raise ExportError(f"{layout}: no training images")
    accumulate = max(round(64 / batch), 1)  # YOLOv5's nominal batch of 64
    hyp["weight_decay"] *= batch * accumulate / 64
    opt = smart_optimizer(model, "SGD", lr0, hyp["momentum"], hyp["weight_decay"])
    ema = ModelEMA(model)
    compute_loss = ComputeLoss(model)
    total_iters = epochs * nb
    t0 = time.monotonic()
    ni, epoch, stop, history = 0, 0, False, []

    def progress() -> float:  # share of the run done: of the time box, else of the epochs
        return (time.monotonic() - t0) / time_s if time_s > 0 else ni / total_iters

    while not stop:
        model.train()
        for m in model.model[:freeze]:
            m.eval()  # frozen layers keep COCO's batch-norm statistics too
        mean = torch.zeros(3)
        opt.zero_grad()
        for i, (imgs, targets, _, _) in enumerate(loader):
            lr = lr0 * ((1 - min(progress(), 1.0)) * 0.99 + 0.01)
            w = min(1.0, ni / warmup_iters) if warmup_iters else 1.0
            for j, g in enumerate(opt.param_groups):  # warm-up: biases come down from 0.1, the rest up from 0
                start = hyp["warmup_bias_lr"] if j == 0 else 0.0
                g["lr"] = start + (lr - start) * w
                g["momentum"] = hyp["warmup_momentum"] + (hyp["momentum"] - hyp["warmup_momentum"]) * w
            loss, items = compute_loss(model(imgs.float() / 255), targets)
            if not torch.isfinite(loss):
                raise ExportError(f"training diverged at iteration {ni} (loss {float(loss)})")
            loss.backward()
            ni += 1
            if ni % accumulate == 0:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_norm=10.0)
                opt.step()
                opt.zero_grad()
                ema.update(model)
            mean = (mean * i + items) / (i + 1)
            if progress() >= 1.0:
                stop = True
                break
        epoch += 1
        history.append({"epoch": epoch, "iterations": ni, "seconds": round(time.monotonic() - t0, 1),
                        "box_loss": round(float(mean[0]), 5), "obj_loss": round(float(mean[1]), 5)})
        log.info("epoch %d: %s", epoch, json.dumps(history[-1]))
    return {"model": deepcopy(ema.ema).float().eval(), "epochs": len(history), "iterations": ni,
            "batches_per_epoch": nb, **({"freeze": freeze, "frozen_tensors": frozen} if freeze else {}),
            "history": history, "train_seconds": round(time.monotonic() - t0, 1)}


def continued_run(name: str, lock: dict) -> dict | None:
    """What training the registered model ``name`` continues from, when this engine trained it (its lock's training
    record names a YOLOv5 checkpoint); None for any other model. The checkpoint must still be the file the record
    hashed: ModelError if it is gone or changed (a cache cleaned since, or another run under the same name).
    Returns the earlier run's facts a continued record keeps: its start, checkpoint, epochs and seconds."""
    from seawatch.vision import registry

    t = lock.get("training") or {}
    if t.get("engine") != "yolov5" or not t.get("checkpoint"):
        return None
    ckpt = Path(t["checkpoint"])
    if not ckpt.is_file():
        raise ModelError(f"base model {name!r}: its training checkpoint {ckpt} is gone (the training cache was "
                         "cleaned); train it again to continue from it")
    sha = registry.sha256_file(ckpt)
    if sha != t.get("checkpoint_sha256"):
        raise ModelError(f"base model {name!r}: {ckpt} is not the checkpoint its record names (sha256 {sha[:12]}..., "
                         f"recorded {str(t.get('checkpoint_sha256'))[:12]}...); train it again to continue from it")
    root = t.get("continued_from") or {}
    return {"name": name, "checkpoint": str(ckpt), "checkpoint_sha256": sha, "weights_sha256": t.get("weights_sha256"),
            "base": root.get("base", t.get("base")),  # the COCO model at the root of the chain
            "epochs": t.get("epochs"), "iterations": t.get("iterations"), "train_seconds": t.get("train_seconds"),
            "lr0": t.get("lr0"), "freeze": t.get("freeze", 0), "tile_px": t.get("tile_px"), "imgsz": t.get("imgsz"),
            "dataset_fingerprint": t.get("dataset_fingerprint"),
            "train_seconds_in_all": round(float(t.get("train_seconds") or 0)
                                          + float(root.get("train_seconds_in_all") or 0), 1)}


def check_base(base: str):
    """What ``base`` starts the YOLOv5 engine from: (the manifest of the architecture to train and export, the earlier
    run when ``base`` is a vessel model this engine trained, else None). Refuses anything else with a ModelError, so
    :func:`seawatch.vision.export.train.train` checks it before tiling any data."""
    from seawatch.vision import registry

    manifest = registry.get_manifest(base)
    earlier = continued_run(base, registry.read_lock(base) or {})
    if earlier is not None:
        return registry.get_manifest(earlier["base"]), earlier  # the architecture the earlier run exported with
    if manifest.family != "yolov5":
        raise ModelError(f"--engine yolov5 starts from a YOLOv5 COCO model such as coco_yolov5n, or from a "
                         f"vessel model this engine trained, not {base!r}")
    if "boat" not in manifest.classes:
        raise ModelError(f"base model {base!r} has no class 'boat' to start the vessel head from")
    return manifest, None


def coco_boat_start(base: str, manifest):
    """COCO's boat-headed model built from the registered YOLOv5 COCO model ``base`` (call inside
    :func:`yolov5_modules`): (model, tensors moved, tensors in all, the weights file, the boat class index)."""
    from seawatch.vision.export.loaders import load_checkpoint
    from seawatch.vision.export.train import provisioned_weights

    weights = provisioned_weights(base)[1]
    boat = list(manifest.classes).index("boat")
    model, moved, total = boat_headed_model(load_checkpoint(manifest, weights).module, boat)
    return model, moved, total, weights, boat


def save_vessel_model(model, manifest, out_dir: Path, **extra) -> dict:
    """Saves ``model`` (one class, vessel) as ``out_dir/best.pt`` (with ``extra`` entries) and its ONNX export
    ``out_dir/best.onnx`` in the layout of ``manifest``; returns the record's file entries and their sha256."""
    import torch

    from seawatch.vision import registry
    from seawatch.vision.export.fetch import export_yolov5
    from seawatch.vision.export.loaders import LoadedModel

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt, onnx_path = out_dir / "best.pt", out_dir / "best.onnx"
    torch.save({"model": model, "names": ["vessel"], **extra}, ckpt)
    export_yolov5(LoadedModel(module=model, names=("vessel",), stride_px=int(max(model.stride))),
                  manifest.model_copy(update={"classes": ("vessel",)}), onnx_path)
    return {"weights": str(onnx_path), "weights_sha256": registry.sha256_file(onnx_path), "checkpoint": str(ckpt),
            "checkpoint_sha256": registry.sha256_file(ckpt)}


def train_boat_headed(base: str, layout: Path, out_dir: Path, *, imgsz: int, batch: int, seed: int, workers: int,
                      epochs: int, time_s: float, lr0: float, freeze: int = 0) -> dict:
    """Build the boat-headed model from the registered YOLOv5 COCO model ``base``, train it on ``layout``, save the
    checkpoint and its ONNX export in ``out_dir``; returns the run's part of the training record."""
    import torch

    from seawatch.vision import registry
    from seawatch.vision.export.loaders import yolov5_modules

    manifest, earlier = check_base(base)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.environ.setdefault("PIN_MEMORY", "false")  # yolov5 reads it when its modules load; training runs on the CPU
    with yolov5_modules():
        if earlier is None:
            model, moved, total, weights, boat = coco_boat_start(base, manifest)
            start = {"base": base, "base_sha256": registry.sha256_file(weights),
                     "transferred_tensors": f"{moved}/{total}", "head_from": f"{base} class {boat} (boat)"}
        else:
            model = torch.load(earlier["checkpoint"], map_location="cpu", weights_only=False)["model"].float()
            for p in model.parameters():  # saved from the EMA copy, whose tensors take no gradient
                p.requires_grad_(True)
            start = {"base": base, "base_sha256": earlier["checkpoint_sha256"], "continued_from": earlier}
        run = fit(model, layout, imgsz=imgsz, batch=batch, time_s=time_s, epochs=epochs, seed=seed, workers=workers,
                  lr0=lr0, freeze=freeze)
        trained = run.pop("model")
        files = save_vessel_model(trained, manifest, out_dir, history=run["history"])
    return {**run, **files, **start}


def mix_with_start(name: str, out_dir: Path, keep: float, *, bn_tiles: int = 384, seed: int = 0) -> dict:
    """Weight-space mix of the vessel model ``name`` (trained by this engine) with the model its chain started from,
    COCO's boat-headed YOLOv5: ``keep`` x the trained weights + (1 - keep) x the start's (WiSE-FT, Wortsman et al.
    2022: fine-tuned and start weights interpolated hold up better on views unlike the training ones). The batch-norm
    statistics of the layers training moved (from ``freeze`` on) are estimated anew on ``bn_tiles`` of the model's
    own training tiles (interpolated statistics do not fit interpolated weights: the mix found nothing). Saves the
    checkpoint and its ONNX in ``out_dir``; returns the training record of the mix (a model this engine can continue)."""
    import random

    import cv2
    import numpy as np
    import torch

    from seawatch.vision import registry
    from seawatch.vision.export.loaders import yolov5_modules

    if not 0.0 < keep < 1.0:
        raise ModelError(f"--start {1 - keep:g}: the start's share of the mix, between 0 and 1")
    lock = registry.read_lock(name) or {}
    earlier = continued_run(name, lock)
    if earlier is None:
        raise ModelError(f"{name!r} was not trained by the YOLOv5 engine (--engine yolov5): no start to mix it with")
    rec = lock["training"]
    root = earlier["base"]
    manifest = registry.get_manifest(root)
    work = Path(earlier["checkpoint"]).parent.parent  # <cache>/train/<name>-<data>/, beside run_yolov5/
    tiles = sorted(work.glob(f"data-tile{rec.get('tile_px', '*')}-*/images/train/*.jpg"))
    if not tiles:
        raise ModelError(f"the training tiles of {name!r} are gone from {work}: train it again to mix it")
    random.Random(seed).shuffle(tiles)
    tiles = tiles[:bn_tiles]
    imgsz, freeze = int(rec.get("imgsz", 320)), int(rec.get("freeze") or 0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with yolov5_modules():
        start = coco_boat_start(root, manifest)[0].float().state_dict()
        model = torch.load(earlier["checkpoint"], map_location="cpu", weights_only=False)["model"].float()
        trained = model.state_dict()
        model.load_state_dict({k: keep * v + (1 - keep) * start[k] if v.is_floating_point() else v
                               for k, v in trained.items()})
        bns = [m for i, layer in enumerate(model.model) if i >= freeze for m in layer.modules()
               if isinstance(m, torch.nn.BatchNorm2d)]
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the batches
            bn.train()
        with torch.no_grad():
            for i in range(0, len(tiles), 32):
                ims = [cv2.resize(cv2.imread(str(p)), (imgsz, imgsz))[:, :, ::-1] for p in tiles[i:i + 32]]
                model(torch.from_numpy(np.stack(ims).copy()).permute(0, 3, 1, 2).float() / 255)
        model.eval()
        files = save_vessel_model(model, manifest, out_dir)
    keys = ("dataset", "dataset_manifest_sha256", "dataset_fingerprint", "split", "imgsz", "tile_px", "freeze",
            "train_too", "val_cameras")
    return {**{k: rec[k] for k in keys if k in rec}, "engine": "yolov5", "epochs": 0, "iterations": 0,
            "train_seconds": 0.0, "lr0": rec.get("lr0"),
            "mixed": {"model": name, "keep": keep, "start": f"{root} class boat", "bn_tiles": len(tiles),
                      "bn_layers_from": freeze, "seed": seed},
            **files, "base": name,
            "base_sha256": earlier["checkpoint_sha256"], "continued_from": earlier}
