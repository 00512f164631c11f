"""The GPU training hand-off (scripts/gpu): results.csv without polars, tiling of packed frames, and the checks of
``seawatch models train --import``. Fast: no training, no model export."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

from seawatch import paths
from seawatch.errors import ChecksumMismatch, ConfigError, InputError
from seawatch.vision import registry
from seawatch.vision.export.train import import_run


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, paths.REPO_ROOT / "scripts" / "gpu" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_csv_read_without_polars(tmp_path):
    tv = _script("train_vessels")
    csv = tmp_path / "results.csv"
    csv.write_text("epoch,time,train/box_loss,metrics/mAP50(B)\n1,3.5,1.25,0.1\n2,7.0,1.1,0.25\n")
    got = tv.read_results(csv)
    assert got == {"epoch": [1, 2], "time": [3.5, 7.0], "train/box_loss": [1.25, 1.1], "metrics/mAP50(B)": [0.1, 0.25]}
    assert tv.read_results(tmp_path / "absent.csv") == {}


def test_tiles_of_a_packed_frame(tmp_path):
    cv2 = pytest.importorskip("cv2")
    tv = _script("train_vessels")
    frames = tmp_path / "frames"
    for part in ("train", "val"):
        (frames / part).mkdir(parents=True)
        img = np.full((1080, 1920, 3), 90, np.uint8)
        cv2.imwrite(str(frames / part / "f1.webp"), img)
        # one vessel well inside the top-left tile (0..640 px), 40 x 20 px at (100, 100)
        (frames / part / "f1.txt").write_text(f"0 {120 / 1920:.6f} {110 / 1080:.6f} {40 / 1920:.6f} {20 / 1080:.6f}\n")
    tiles = {"tile_px": 640, "overlap": 0.2, "min_keep": 0.5, "empty_keep": 0.0}
    counts = tv.build_layout(frames, tmp_path / "data", ["vessel"], tiles, seed=0, limit=None, procs=1)
    # 1920 x 1080 at 640 px / 20 %: 4 x 2 tiles; one holds the vessel, the 7 empty ones are all dropped
    assert counts["train"] == {"frames": 1, "vessel_tiles": 1, "empty_tiles": 0, "empty_tiles_dropped": 7,
                               "boxes": 2, "images": 2}
    lab = (tmp_path / "data" / "labels" / "train" / "f1__t0_0.txt").read_text().split()
    assert lab[0] == "0" and abs(float(lab[1]) * 640 - 120) < 0.5 and abs(float(lab[3]) * 640 - 40) < 0.5
    whole = cv2.imread(str(tmp_path / "data" / "images" / "train" / "f1.jpg"))
    assert whole.shape[:2] == (360, 640)
    data = json.loads((tmp_path / "data" / "data.yaml").read_text())
    assert data["names"] == {"0": "vessel"} and data["val"] == "images/val"


def test_hard_negative_candidates_are_tiles_no_labelled_box_touches(tmp_path):
    """--hard-negatives mines only the dropped empty tiles that no labelled box reaches: the neighbour of a tile
    holding a boat whole may hold a sliver of it, and must not be taught as background."""
    cv2 = pytest.importorskip("cv2")
    tv = _script("train_vessels")
    img_dir, lab_dir, cand = tmp_path / "img", tmp_path / "lab", tmp_path / "cand"
    for d in (img_dir, lab_dir, cand):
        d.mkdir()
    frame = tmp_path / "f1.webp"
    cv2.imwrite(str(frame), np.full((1080, 1920, 3), 90, np.uint8))
    # 40 x 20 px at x 600..640: whole in both the first tile column (0..640) and the second (427..1067)
    frame.with_suffix(".txt").write_text(f"0 {620 / 1920:.6f} {110 / 1080:.6f} {40 / 1920:.6f} {20 / 1080:.6f}\n")
    c = tv._cut_frame((frame, img_dir, lab_dir, 640, 0.2, 0.5, 0.0, 0, 640, cand))
    assert c["vessel_tiles"] == 2 and c["empty_tiles_dropped"] == 6  # 4 x 2 tiles, x at 0, 427, 853, 1280
    assert c["hard_negative_candidates"] == 6 == len(list(cand.glob("*.jpg")))
    frame.with_suffix(".txt").write_text(f"0 {650 / 1920:.6f} {110 / 1080:.6f} {100 / 1920:.6f} {20 / 1080:.6f}\n")
    for p in cand.glob("*"):
        p.unlink()
    c = tv._cut_frame((frame, img_dir, lab_dir, 640, 0.2, 0.5, 0.0, 0, 640, cand))
    # 600..700: the x 427 tile holds it whole; the x 0 tile holds 40 % (under min_keep: empty, yet touched)
    assert c["vessel_tiles"] == 1 and c["empty_tiles_dropped"] == 7 and c["hard_negative_candidates"] == 6
    assert not (cand / "f1__t0_0.jpg").exists() and (cand / "f1__t853_0.jpg").exists()
    c = tv._cut_frame((frame, img_dir, lab_dir, 640, 0.2, 0.5, 0.0, 0, 640))  # no mining: no candidates
    assert c["hard_negative_candidates"] == 0


def test_import_checks_weights_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError, match="run.json"):
        import_run(tmp_path, "vessels", "vessel_t")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(b"not really weights")
    sha = registry.sha256_file(run_dir / "best.pt")
    info = {"dataset_manifest_sha256": "0" * 64, "run": {"weights": "best.pt", "weights_sha256": "f" * 64}}
    (run_dir / "run.json").write_text(json.dumps(info))
    with pytest.raises(ChecksumMismatch):
        import_run(run_dir, "vessels", "vessel_t")
    info["run"]["weights_sha256"] = sha
    (run_dir / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="differs from the one the run was packed with"):
        import_run(run_dir, "vessels", "vessel_t")
    assert not (tmp_path / "cache" / "train").exists()  # nothing copied before the checks pass
    shutil.rmtree(run_dir)


def test_zoomed_tiles_keep_the_whole_frame_at_the_input_size(tmp_path):
    """--tile-px 384 cuts 384 px tiles (upscaled to 640 by the trainer); the whole frame stays at 640 as the
    runtime's full-frame pass sees it."""
    cv2 = pytest.importorskip("cv2")
    tv = _script("train_vessels")
    frames = tmp_path / "frames"
    for part in ("train", "val"):
        (frames / part).mkdir(parents=True)
        cv2.imwrite(str(frames / part / "f1.webp"), np.full((1080, 1920, 3), 90, np.uint8))
        (frames / part / "f1.txt").write_text(f"0 {120 / 1920:.6f} {110 / 1080:.6f} {20 / 1920:.6f} {10 / 1080:.6f}\n")
    tiles = {"tile_px": 384, "overlap": 0.2, "min_keep": 0.5, "empty_keep": 0.0, "frame_px": 640}
    counts = tv.build_layout(frames, tmp_path / "data", ["vessel"], tiles, seed=0, limit=None, procs=1)
    # 1920 x 1080 at 384 px / 20 %: 6 x 4 tiles, one with the vessel
    assert counts["train"]["vessel_tiles"] == 1 and counts["train"]["empty_tiles_dropped"] == 23
    tile = cv2.imread(str(tmp_path / "data" / "images" / "train" / "f1__t0_0.jpg"))
    assert tile.shape[:2] == (384, 384)
    assert cv2.imread(str(tmp_path / "data" / "images" / "train" / "f1.jpg")).shape[:2] == (360, 640)


def test_trained_tile_size_reaches_the_registered_manifest():
    from seawatch.vision.export.cmd_train import _trained_tile_px

    assert _trained_tile_px({"tiles": {"tile_px": 384}}, 640) == 384
    assert _trained_tile_px({"tiles": {"tile_px": 640}}, 640) == 0  # = imgsz: nothing to record
    assert _trained_tile_px({"tile_px": 320}, 640) == 320  # the CPU trainer's record
    assert _trained_tile_px({}, 640) == 0
    # a run at 320 px on 192 px tiles (zoom 1.67) registered for inference at 640: 384 px tiles keep that zoom
    assert _trained_tile_px({"tiles": {"tile_px": 192}, "imgsz": 320}, 640) == 384
    assert _trained_tile_px({"tiles": {"tile_px": 192}, "imgsz": 320}, 320) == 192
    assert _trained_tile_px({"tiles": {"tile_px": 320}, "imgsz": 320}, 640) == 0  # not zoomed: tiles = imgsz


def test_import_records_the_runs_own_tiles_and_start_weights(tmp_path, monkeypatch, shared_media):
    from seawatch.vision import trainsets

    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    manifest = trainsets.load_dataset_manifest("vessels")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(b"weights of a continued run")
    info = {"dataset_manifest_sha256": registry.sha256_file(paths.REPO_ROOT / "datasets" / "vessels.yaml"),
            "dataset_fingerprint": trainsets.fingerprint(trainsets.scan(manifest)),
            "tiles": {"tile_px": 640, "overlap": 0.2}, "base": "coco_yolov5n",
            "run": {"weights": "best.pt", "weights_sha256": registry.sha256_file(run_dir / "best.pt"),
                    "tiles": {"tile_px": 384, "overlap": 0.2, "frame_px": 640}, "imgsz": 640,
                    "start_weights": "base/vessel_run1.pt", "start_weights_sha256": "e" * 64}}
    (run_dir / "run.json").write_text(json.dumps(info))
    record = import_run(run_dir, "vessels", "vessel_t")
    assert record["tiles"]["tile_px"] == 384  # what the run trained on, not the packed default
    assert record["start_weights_sha256"] == "e" * 64 and record["base"] == "coco_yolov5n"
    assert (tmp_path / "cache" / "train").is_dir()
    # a run started from another registry model (--base-name fall): the packed base's facts are not its own
    info["base_sha256"] = "c" * 64
    info["run"].update(base="fall", train_too=["w4gnqsqx"])
    (run_dir / "run.json").write_text(json.dumps(info))
    record = import_run(run_dir, "vessels", "vessel_t")
    assert record["base"] == "fall" and "base_sha256" not in record and record["train_too"] == ["w4gnqsqx"]


def test_held_out_cameras_can_join_training(tmp_path):
    """--train-too moves named held-out cameras' frames into training (leave-one-camera-out, or 'all' for the model
    to ship); with none left, validation keeps every frame and says it is no longer held out. Cameras are named by
    each dataset source's own camera_from."""
    from seawatch.vision.trainsets import camera_pattern, load_dataset_manifest

    tv = _script("train_vessels")
    patterns = {s["name"]: camera_pattern(s) for s in load_dataset_manifest("vessels")["sources"]}
    frames = tmp_path / "frames"
    names = {"train": ["shore_livecams_train__shore_2ux5cw8z_1080_x", "shore_livecams_shared__shore_dlwkigk3_720_y"],
             "val": ["shore_livecams_train__shore_vgiy5566_720_a", "shore_livecams_shared__shore_vgiy5566_720_b",
                     "shore_livecams_train__shore_w4gnqsqx_1080_c"]}
    for part, stems in names.items():
        (frames / part).mkdir(parents=True)
        for stem in stems:
            (frames / part / f"{stem}.webp").write_bytes(b"")
    assert sorted(tv.frame_camera(p, patterns) for p in (frames / "val").glob("*.webp")) == [
        "vgiy5566", "vgiy5566", "w4gnqsqx"]
    assert tv.frame_camera(frames / "val" / "unknown_source__shore_vgiy5566_720_a.webp", patterns) is None
    parts, held_out = tv.split_frames(frames, set(), patterns)
    assert held_out and len(parts["train"]) == 2 and len(parts["val"]) == 3
    parts, held_out = tv.split_frames(frames, {"w4gnqsqx"}, patterns)
    assert held_out
    assert sorted(p.stem for p in parts["train"]) == sorted(names["train"] + [names["val"][2]])
    assert [tv.frame_camera(p, patterns) for p in parts["val"]] == ["vgiy5566", "vgiy5566"]
    parts, held_out = tv.split_frames(frames, {"*"})
    assert not held_out and len(parts["train"]) == 5 and len(parts["val"]) == 3
    parts, held_out = tv.split_frames(frames, {"shore_vgiy5566_*_b"}, patterns)  # a file-name pattern
    assert held_out and [p.stem for p in parts["train"]][-1] == names["val"][1] and len(parts["val"]) == 2


def test_registered_description_says_what_was_not_held_out():
    from seawatch.vision.export.cmd_train import _description

    assert _description("vessels", "coco_yolov5n", {}) == "fine-tuned on vessels from coco_yolov5n"
    assert "also trained on all held-out cameras" in _description("vessels", "vessel", {"train_too": ["*"]})
    assert "held-out cameras w4gnqsqx (scores" in _description("vessels", "fall", {"train_too": ["w4gnqsqx"]})
    both = _description("vessels", "vessel", {"train_too": ["vgiy5566", "*w4gnqsqx_*_2022-07-16_*"]})
    assert "held-out cameras vgiy5566 and held-out frames matching *w4gnqsqx_*_2022-07-16_* (scores" in both
