"""`seawatch models train` end to end on the CPU: a smoke run (1 epoch, 5 % of the vessel frames, 320 px tiles)
from the COCO YOLOv5n transfer, exported, verified and registered with its training record. It proves the pipeline,
not the model (about 1.5 min on 2 cores)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from seawatch import paths
from conftest import has_module, missing, onnx_model


@pytest.mark.parametrize("extra, why", [
    (["--lr0", "0.001"], "--lr0 needs --optimizer"),
    (["--optimizer", "SGD", "--lr0", "0"], "lr0 must be positive"),
    (["--optimizer", "SGD", "--warmup-epochs", "-1"], "not negative"),
    (["--time-h", "-1"], "--time-h -1.0: hours"),
    (["--time-h", "nan"], "--time-h nan: hours"),
    (["--freeze", "-1"], "--freeze -1: a layer count"),
])
def test_train_refuses_a_bad_learning_rate_schedule_before_any_work(extra, why, capsys):
    from seawatch.cli import main

    assert main(["models", "train", "vessels", "--name", "never_made", *extra]) == 1
    assert why in capsys.readouterr().err


def test_smoke_training_registers_a_model_with_its_record(shared_media):
    if not (has_module("torch") and has_module("ultralytics")):
        missing("torch and ultralytics are needed to train (pip install -e '.[export]')")
    onnx_model("coco_yolov5n")  # the base weights must be provisioned
    from seawatch.vision import registry, trainsets
    from seawatch.vision.detector import load_detector
    from seawatch.vision.evaluate import Evaluator, _ModelRun, _scored_training_images

    name = "vessel_smoke_test"
    env = dict(os.environ, SEAWATCH_SHARED=str(shared_media.parent))
    try:
        # the smoke run keeps a fifth of the empty tiles and mines the rest with COCO's boat class (hard negatives)
        proc = subprocess.run([sys.executable, "-m", "seawatch", "models", "train", "vessels", "--smoke", "--name", name,
                               "--empty-keep", "0.2", "--hard-negatives", "coco_yolov5n",
                               "--optimizer", "SGD", "--lr0", "0.002", "--lrf", "1", "--warmup-epochs", "0",
                               "--time-h", "0.0003", "--workers", "1", "--freeze", "10"],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]

        lock = registry.read_lock(name)
        record = lock["training"]
        assert record["dataset"] == "vessels" and record["epochs"] == 1 and record["imgsz"] == 320
        assert record["base"] == "coco_yolov5n" and record["transferred_tensors"].startswith("342/")
        assert record["dataset_fingerprint"] == trainsets.fingerprint(
            trainsets.scan(trainsets.load_dataset_manifest("vessels")))
        assert registry.sha256_file(Path(record["weights"])) == record["weights_sha256"]
        lay = record["layout"]  # 5 % of the training frames (every 20th), each tiled; the dropped empty tiles mined
        m = trainsets.load_dataset_manifest("vessels")
        n_train = len(trainsets.split(trainsets.scan(m), set(m["split"]["val_cameras"]))[0])
        assert lay["frames"] == record["split"]["train"]["images"] == len(range(0, n_train, 20))
        assert record["empty_keep"] == 0.2 and record["hard_negatives"] == "coco_yolov5n"
        # the learning-rate schedule reached ultralytics and the record
        assert (record["optimizer"], record["lr0"], record["lrf"], record["warmup_epochs"]) == ("SGD", 0.002, 1.0, 0.0)
        used = yaml.safe_load((Path(record["weights"]).parents[1] / "args.yaml").read_text())
        assert (used["optimizer"], used["lr0"], used["lrf"], used["warmup_epochs"]) == ("SGD", 0.002, 1.0, 0.0)
        # the time box (about 1 s: the first epoch is cut short, and no second one starts) reached it too
        assert used["time"] == 0.0003 and record["time_box_h"] == 0.0003 and used["workers"] == record["workers"] == 1
        assert used["freeze"] == record["freeze"] == 10  # the COCO backbone kept as it is
        assert 0 < lay["hard_negative_tiles"] <= lay["empty_tiles_dropped"] and lay["vessel_tiles"] > 0
        assert lay["hard_negative_weights_sha256"] == trainsets.miner_sha256("coco_yolov5n")
        assert registry.get_manifest(name).labels == {"vessel": "vessel"}
        det = load_detector(name, "fp32", conf=0.01)
        out = det.detect([np.full((720, 1280, 3), 100, np.uint8)])[0]  # runs through ONNX Runtime; boxes in the frame
        assert out.xyxy_px.shape[1] == 4 and (out.xyxy_px[:, 2] <= 1280 + 1e-3).all()
        # evaluate knows which frames the model trained on: a training camera's frame yes, a held-out one no
        items = trainsets.scan(m)
        val = set(m["split"]["val_cameras"])
        seen = next(i.image for i in items if i.camera not in val)
        unseen = next(i.image for i in items if i.camera in val)
        ev = Evaluator()
        ev.models = {name: _ModelRun(name, det, base=name, paths={seen, unseen})}
        assert _scored_training_images(ev) == {name: 1}
        _mine_with(Path(record["weights"]), seen, paths.cache_dir() / "train" / f"{name}-mine")
    finally:  # leave the cache as it was: the manifest, the provisioned files and the training folder go
        (registry.user_manifest_dir() / f"{name}.yaml").unlink(missing_ok=True)
        shutil.rmtree(registry.model_dir(name), ignore_errors=True)
        for d in (paths.cache_dir() / "train").glob(f"{name}-*"):
            shutil.rmtree(d, ignore_errors=True)


def _mine_with(weights: Path, frame: Path, work: Path) -> None:
    """Hard-negative mining (the GPU script's too) with real ultralytics weights (the smoke model): tiles the model fires on at the
    threshold move into the training images with an empty label, the others are deleted, the candidates folder goes.
    At conf 0 every tile holds some box; at conf 1 none does."""
    import cv2

    from seawatch.vision import trainsets

    img = cv2.imread(str(frame))
    for conf, kept in ((0.0, 3), (1.0, 0)):
        cand, img_dir, lab_dir = work / "cand", work / "images", work / "labels"
        for d in (cand, img_dir, lab_dir):
            d.mkdir(parents=True, exist_ok=True)
        for k in range(3):
            cv2.imwrite(str(cand / f"f__t{k * 100}_0.jpg"), img[:320, k * 100:k * 100 + 320])
        got = trainsets.mine_hard_negatives(cand, img_dir, lab_dir, weights, imgsz=320, conf=conf, device="cpu",
                                            batch=2)
        assert got["hard_negative_tiles"] == kept and not cand.exists()
        assert len(list(img_dir.glob("*.jpg"))) == kept
        assert [p.read_text() for p in lab_dir.glob("*.txt")] == [""] * kept
        shutil.rmtree(work)


def test_gpu_script_packs_trains_refines_and_is_imported(shared_media, tmp_path):
    """The one-shot GPU hand-off end to end on the CPU (about 3 min on 2 cores): `pack_vessels.py` packs the real
    frames, `train_vessels.py --smoke --refine-epochs 1` trains, mines the dropped empty tiles with the model it just
    trained and trains one more epoch on them, and `seawatch models train --import` accepts the result (weights and
    data checked against this checkout) with the refine phase in its record."""
    if not (has_module("torch") and has_module("ultralytics")):
        missing("torch and ultralytics are needed to train (pip install -e '.[export]')")
    onnx_model("coco_yolov5n")
    import json

    from seawatch.vision import registry

    env = dict(os.environ, SEAWATCH_SHARED=str(shared_media.parent), TMPDIR=str(tmp_path))
    gpu, out, name = tmp_path / "gpu", tmp_path / "out", "vessel_refine_test"
    scripts = paths.REPO_ROOT / "scripts" / "gpu"
    proc = subprocess.run([sys.executable, str(scripts / "pack_vessels.py"), "--out", str(gpu)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # at conf 0.01 a one-epoch model fires on most tiles: the refine phase surely has hard negatives to learn from
    proc = subprocess.run([sys.executable, str(scripts / "train_vessels.py"), "--gpu-dir", str(gpu), "--out", str(out),
                           "--work", str(tmp_path / "work"), "--smoke", "--refine-epochs", "1",
                           "--hard-negative-conf", "0.01"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run = json.loads((out / "run.json").read_text())["run"]
    ref, lay = run["refine"], run["layout"]["train"]
    assert ref["epochs_done"] == 1 and ref["lr0"] == 0.001
    assert 0 < ref["mining"]["hard_negative_tiles"] <= lay["hard_negative_candidates"] <= lay["empty_tiles_dropped"]
    assert (out / "refine_results.csv").is_file() and (out / "results.csv").is_file()
    refined = tmp_path / "work" / "refine" / "weights" / "best.pt"
    assert registry.sha256_file(out / "best.pt") == run["weights_sha256"] != registry.sha256_file(
        tmp_path / "work" / "run" / "weights" / "best.pt")  # the refined weights are the ones kept
    assert refined.is_file()
    try:
        proc = subprocess.run([sys.executable, "-m", "seawatch", "models", "train", "vessels", "--import", str(out),
                               "--name", name, "--imgsz", "320"], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        record = registry.read_lock(name)["training"]
        assert record["weights_sha256"] == run["weights_sha256"] and record["refine"]["epochs_done"] == 1
    finally:
        (registry.user_manifest_dir() / f"{name}.yaml").unlink(missing_ok=True)
        shutil.rmtree(registry.model_dir(name), ignore_errors=True)
        for d in (paths.cache_dir() / "train").glob(f"{name}-*"):
            shutil.rmtree(d, ignore_errors=True)
