"""The YOLOv5 engine of `seawatch models train` (--engine yolov5): the COCO model cut to a one-class head that starts
as its boat class, trained with YOLOv5's loss and loader, exported and registered."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from seawatch import paths
from conftest import has_module, missing, onnx_model


def _coco_checkpoint():
    if not (has_module("torch") and has_module("yolov5")):
        missing("torch and the yolov5 distribution are needed (scripts/setup.sh)")
    onnx_model("coco_yolov5n")
    from seawatch.vision import registry
    from seawatch.vision.export.loaders import load_checkpoint

    m = registry.get_manifest("coco_yolov5n")
    return m, load_checkpoint(m, Path(registry.read_lock("coco_yolov5n")["weights_path"])).module


def test_boat_headed_model_is_cocos_boat_detector_before_training(shared_media):
    """Every tensor moves; on a real harbour frame the one-class model gives COCO's boxes, and its one score is
    COCO's objectness and boat logits added, so COCO's surest boats are its surest ones."""
    import cv2
    import torch

    from seawatch.vision.export.loaders import yolov5_modules
    from seawatch.vision.export.train_yolov5 import COCO_BOAT, boat_headed_model

    m, coco = _coco_checkpoint()
    assert m.classes[COCO_BOAT] == "boat"
    img = cv2.imread(str(sorted((shared_media / "A_boats").glob("*.jpg"))[0]))
    x = torch.from_numpy(cv2.resize(img, (320, 192))[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    with yolov5_modules(), torch.no_grad():
        one, moved, total = boat_headed_model(coco, COCO_BOAT)
        ref = coco.float().eval()(x)[0]
        got = one.eval()(x)[0]
        with pytest.raises(Exception, match="not one of the checkpoint's 80 classes"):
            boat_headed_model(coco, 80)
    assert moved == total and got.shape == (*ref.shape[:2], 6)
    assert torch.allclose(got[..., :4], ref[..., :4], atol=1e-3)  # the same boxes
    # one score: objectness and boat evidence added as logits (YOLOv5 trains no class score for one class)
    assert torch.allclose(got[..., 5], torch.ones(()), atol=1e-6)
    lg = torch.logit(got[..., 4].double(), eps=1e-12)
    ok = (ref[..., 4] > 1e-6) & (ref[..., 4] < 1 - 1e-6) & (got[..., 4] > 1e-6) & (got[..., 4] < 1 - 1e-6)
    want = torch.logit(ref[..., 4].double()) + torch.logit(ref[..., 5 + COCO_BOAT].double(), eps=1e-12)
    assert ok.float().mean() > 0.5 and torch.allclose(lg[ok], want[ok], atol=1e-2)
    # sigmoid(o + b) >= sigmoid(o) * sigmoid(b): every box COCO's boat class keeps at a threshold is kept too
    coco_boat = ref[..., 4] * ref[..., 5 + COCO_BOAT]
    assert int((coco_boat > 0.25).sum()) > 0 and bool((got[..., 4] >= coco_boat - 1e-6).all())


def test_freeze_keeps_the_backbone_out_of_training_and_refuses_the_head():
    """--freeze N: the first N modules get no gradient; N reaching the detection head is refused before any data is
    read (the layout path does not exist)."""
    from seawatch.errors import ModelError
    from seawatch.vision.export.loaders import yolov5_modules
    from seawatch.vision.export.train_yolov5 import COCO_BOAT, boat_headed_model, fit, freeze_layers

    _, coco = _coco_checkpoint()
    with yolov5_modules():
        one, _, _ = boat_headed_model(coco, COCO_BOAT)
        n_backbone = sum(1 for k, _ in one.named_parameters() if int(k.split(".")[1]) < 10)
        assert freeze_layers(one, 10) == n_backbone > 0
        for k, p in one.named_parameters():
            assert p.requires_grad is (int(k.split(".")[1]) >= 10), k
        head = len(one.model) - 1
        for bad in (head, head + 5):
            with pytest.raises(ModelError, match=f"--freeze {bad}: 0 to {head - 1}"):
                fit(one, Path("/nonexistent/layout"), imgsz=320, batch=2, time_s=1, epochs=1, seed=0, workers=0,
                    freeze=bad)


@pytest.mark.parametrize("extra, why", [
    (["--hard-negatives", "base"], "give --empty-keep below 1"),
    (["--hard-negatives", "fall", "--empty-keep", "0.1"], "no vessel label to mine with"),
    (["--device", "0"], "trains on the CPU"),
    (["--optimizer", "AdamW"], "SGD"),
    (["--optimizer", "SGD", "--lrf", "0.5"], "only --lr0 applies"),
    (["--base", "fall"], "starts from a YOLOv5 COCO model"),
    (["--base", "ship_published"], "or from a vessel model this engine trained"),
])
def test_yolov5_engine_refuses_what_it_cannot_do(extra, why, capsys):
    from seawatch.cli import main

    name = f"never_made_{uuid.uuid4().hex[:8]}"  # the cache outlives a run (CI keeps it): a fixed name may be an old run's
    assert main(["models", "train", "vessels", "--engine", "yolov5", "--name", name, "--smoke", *extra]) == 1
    assert why in capsys.readouterr().err
    assert not list((paths.cache_dir() / "train").glob(f"{name}-*"))  # refused before any data was tiled


@pytest.mark.parametrize("args, why", [
    (["coco_yolov5n", "--start", "0.25"], "not trained by the YOLOv5 engine"),
    (["coco_yolov5n", "--start", "1.5"], "--start 1.5: the start's share"),
    (["coco_yolov5n", "fall", "--start", "0.25"], "give one model"),
])
def test_mix_with_start_refuses_what_it_cannot_mix(args, why, capsys):
    from seawatch.cli import main

    onnx_model("coco_yolov5n")
    name = f"never_mixed_{uuid.uuid4().hex[:8]}"
    assert main(["models", "soup", *args, "--name", name]) == 1
    assert why in capsys.readouterr().err
    assert not list((paths.cache_dir() / "train").glob(f"{name}-*"))


def test_continued_run_reads_the_chain_and_refuses_a_lost_or_changed_checkpoint(tmp_path):
    """Only a model this engine trained can be continued; its checkpoint must be the file its record hashed; a chain
    of continuations keeps the COCO model at its root and adds up the training time."""
    from seawatch.errors import ModelError
    from seawatch.vision import registry
    from seawatch.vision.export.train_yolov5 import continued_run

    assert continued_run("coco_yolov5n", {}) is None
    assert continued_run("vessel", {"training": {"engine": "ultralytics", "weights": "best.pt"}}) is None
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"checkpoint bytes")
    first = {"engine": "yolov5", "checkpoint": str(ckpt), "checkpoint_sha256": registry.sha256_file(ckpt),
             "base": "coco_yolov5n", "epochs": 46, "iterations": 20586, "train_seconds": 5400.0, "lr0": 0.01,
             "freeze": 10, "tile_px": 192, "imgsz": 320, "weights_sha256": "ab" * 32}
    got = continued_run("a", {"training": first})
    assert got["name"] == "a" and got["base"] == "coco_yolov5n" and got["checkpoint_sha256"] == first["checkpoint_sha256"]
    assert got["epochs"] == 46 and got["train_seconds_in_all"] == 5400.0 and got["freeze"] == 10
    second = {**first, "base": "a", "train_seconds": 7200.0, "continued_from": got}  # b continued a
    again = continued_run("b", {"training": second})
    assert again["base"] == "coco_yolov5n" and again["train_seconds_in_all"] == 12600.0
    ckpt.write_bytes(b"another run under the same name")
    with pytest.raises(ModelError, match="not the checkpoint its record names"):
        continued_run("a", {"training": first})
    ckpt.unlink()
    with pytest.raises(ModelError, match="checkpoint .* is gone"):
        continued_run("a", {"training": first})


def test_yolov5_engine_smoke_run_registers_a_vessel_model(shared_media):
    """A CI-sized run (5 % of the frames, a 20 s time box, the backbone frozen) trains, exports and registers; the
    record says what ran; the frozen backbone is COCO's, weights and batch-norm statistics, the rest moved."""
    _, coco = _coco_checkpoint()
    from seawatch.vision import registry
    from seawatch.vision.detector import load_detector

    name, then, mix = "vessel_v5_smoke_test", "vessel_v5_smoke_test2", "vessel_v5_smoke_mix"
    env = dict(os.environ, SEAWATCH_SHARED=str(shared_media.parent))
    try:
        proc = subprocess.run([sys.executable, "-m", "seawatch", "models", "train", "vessels", "--engine", "yolov5",
                               "--smoke", "--name", name, "--time-h", "0.006", "--workers", "1", "--tile-px", "192",
                               "--register-imgsz", "640", "--freeze", "10"],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        record = registry.read_lock(name)["training"]
        assert record["engine"] == "yolov5" and record["head_from"] == "coco_yolov5n class 8 (boat)"
        moved, total = record["transferred_tensors"].split("/")
        assert moved == total and record["time_box_h"] == 0.006 and record["epochs"] >= 1
        assert record["iterations"] >= 1 and 15 <= record["train_seconds"] < 120
        assert registry.sha256_file(Path(record["checkpoint"])) == record["checkpoint_sha256"]
        assert record["freeze"] == 10 and record["frozen_tensors"] > 0
        import torch

        from seawatch.vision.export.loaders import yolov5_modules
        from seawatch.vision.export.train_yolov5 import COCO_BOAT, boat_headed_model

        with yolov5_modules():
            start = boat_headed_model(coco, COCO_BOAT)[0].state_dict()
            trained = torch.load(record["checkpoint"], map_location="cpu", weights_only=False)["model"].state_dict()
        layer = {k: int(k.split(".")[1]) for k in start}
        frozen = [k for k in start if layer[k] < 10 and start[k].is_floating_point()]
        assert any("running_mean" in k for k in frozen)
        for k in frozen:
            assert torch.allclose(trained[k], start[k], atol=1e-6), k
        # moved at all (a 20 s box on a busy machine may run only a few warm-up iterations, at a tiny rate)
        assert any(not torch.equal(trained[k], start[k]) for k in start
                   if layer[k] >= 10 and start[k].is_floating_point())
        assert registry.sha256_file(Path(record["weights"])) == record["weights_sha256"]
        m = registry.get_manifest(name)
        assert m.labels == {"vessel": "vessel"} and m.output_format == "yolov5"
        assert tuple(m.input_size_px) == (640, 640) and m.defaults.tile_px == 384  # the trained zoom: 192 px tiles at 320
        assert "COCO boat class" in m.description
        det = load_detector(name, "fp32", conf=0.01)
        import cv2

        frame = cv2.imread(str(sorted((shared_media / "A_boats").glob("*.jpg"))[0]))
        out = det.detect([frame])[0]
        assert len(out) > 0 and (out.xyxy_px[:, 2] <= frame.shape[1] + 1e-3).all()
        assert set(np.asarray(out.labels)[out.class_id]) == {"vessel"}

        # mixed with the COCO boat head it started from: the moved weights interpolated, the backbone still COCO's,
        # the moved layers' batch-norm statistics estimated anew (not interpolated)
        from seawatch.cli import main

        assert main(["models", "soup", name, "--start", "0.25", "--name", mix]) == 0
        mixed_rec = registry.read_lock(mix)["training"]
        assert mixed_rec["mixed"]["keep"] == 0.75 and mixed_rec["mixed"]["bn_tiles"] > 0
        assert mixed_rec["base"] == name and mixed_rec["continued_from"]["base"] == "coco_yolov5n"
        with yolov5_modules():
            mixed = torch.load(mixed_rec["checkpoint"], map_location="cpu", weights_only=False)["model"].state_dict()
        for k in frozen:
            assert torch.allclose(mixed[k], start[k], atol=1e-6), k
        moved_w = [k for k in start if layer[k] >= 10 and k.endswith("conv.weight")
                   and not torch.equal(trained[k], start[k])]
        assert moved_w
        for k in moved_w:
            assert torch.allclose(mixed[k], 0.75 * trained[k].float() + 0.25 * start[k].float(), atol=1e-5), k
        stats = [k for k in start if layer[k] >= 10 and k.endswith("running_var")]
        assert any(not torch.allclose(mixed[k], 0.75 * trained[k].float() + 0.25 * start[k].float(), rtol=1e-3)
                   for k in stats)
        assert "mixed with the COCO boat head" in registry.get_manifest(mix).description
        assert registry.get_manifest(mix).defaults.tile_px == 384
        assert len(load_detector(mix, "fp32", conf=0.01).detect([frame])[0]) > 0

        # a second sitting: --base the model just trained goes on from its checkpoint, not from COCO's boat class,
        # against the empty tiles that model fires on (hard negatives: --hard-negatives base is its registered ONNX)
        proc = subprocess.run([sys.executable, "-m", "seawatch", "models", "train", "vessels", "--engine", "yolov5",
                               "--smoke", "--name", then, "--base", name, "--time-h", "0.003", "--workers", "1",
                               "--tile-px", "192", "--register-imgsz", "640", "--freeze", "10", "--lr0", "0.005",
                               "--empty-keep", "0.1", "--hard-negatives", "base", "--hard-negative-conf", "0.05"],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        second = registry.read_lock(then)["training"]
        assert second["hard_negatives"] == name and second["empty_keep"] == 0.1
        mined = second["layout"]
        assert mined["hard_negative_weights_sha256"] == registry.sha256_file(registry.resolve_onnx(name, "fp32"))
        assert mined["hard_negative_tiles"] > 0 and mined["hard_negative_conf"] == 0.05
        assert second["base"] == name and second["base_sha256"] == record["checkpoint_sha256"]
        assert "head_from" not in second and "transferred_tensors" not in second and second["lr0"] == 0.005
        first = second["continued_from"]
        assert first["name"] == name and first["base"] == "coco_yolov5n" and first["epochs"] == record["epochs"]
        assert first["train_seconds_in_all"] == record["train_seconds"] and second["iterations"] >= 1
        with yolov5_modules():
            after = torch.load(second["checkpoint"], map_location="cpu", weights_only=False)["model"].state_dict()
        for k in frozen:  # still COCO's backbone
            assert torch.allclose(after[k], start[k], atol=1e-6), k
        moved_on = [k for k in trained if layer[k] >= 10 and trained[k].is_floating_point()
                    and not torch.allclose(after[k], trained[k], atol=1e-5)]
        assert moved_on  # trained further from the first sitting's weights
        assert f"continued from {name}" in registry.get_manifest(then).description
        assert len(load_detector(then, "fp32", conf=0.01).detect([frame])[0]) > 0
    finally:
        for n in (name, then, mix):
            (registry.user_manifest_dir() / f"{n}.yaml").unlink(missing_ok=True)
            shutil.rmtree(registry.model_dir(n), ignore_errors=True)
            for d in (paths.cache_dir() / "train").glob(f"{n}-*"):
                shutil.rmtree(d, ignore_errors=True)
