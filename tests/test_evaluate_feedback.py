"""``seawatch evaluate --operator-ignore``: each frame scored with the "ignore this spot" areas a review desk would
have made of the recurring false alarms of its camera's *other* sessions — never of its own labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seawatch.vision.evaluate_feedback import FeedbackLog, camera_session, recurring_false_alarm_areas
from seawatch.vision.groundtruth import Sample
from seawatch.vision.zones import ignore_area_around

BUOY = [600, 370, 640, 400]
BOAT = [100, 300, 160, 340]


def _sample(name: str, camera: str | None = None, category: str = "cam") -> Sample:
    gt = {"camera": camera} if camera else {}
    return Sample(Path(f"/x/{name}"), "image", category, ground_truth=gt)


def _frame(log: FeedbackLog, name: str, boxes: list, confs: list, gt: list, camera: str = "quay") -> None:
    log.add("vessel", "m", _sample(name, camera), np.array(boxes, np.float32).reshape(-1, 4), np.array(confs, np.float32),
            np.array(gt, np.float32).reshape(-1, 4), 0.25)


@pytest.mark.parametrize("name,gt,category,expected", [
    ("shore_w4gnqsqx_1440_2022-07-16_11-52_output_0.jpg", {"camera": "w4gnqsqx"}, "val", ("w4gnqsqx", "2022-07-16")),
    ("frame_0001.jpg", {"camera": "c1", "session": "night-2"}, "val", ("c1", "night-2")),
    ("frame_0001.jpg", {"date": "2026-01-02"}, "harbour", ("harbour", "2026-01-02")),  # the category is the camera
    ("frame_0001.jpg", {}, "harbour", ("harbour", None)),
])
def test_camera_and_session_of_a_frame(name, gt, category, expected):
    assert camera_session(Sample(Path(name), "image", category, ground_truth=gt)) == expected


def test_areas_come_from_the_other_sessions_only():
    log = FeedbackLog(min_frames=2)
    # day 1: the buoy is a false alarm in both frames (a few px apart), the boat is found
    _frame(log, "a_2026-01-01_1.jpg", [BUOY, BOAT], [0.9, 0.8], [BOAT])
    _frame(log, "a_2026-01-01_2.jpg", [[603, 372, 641, 402], BOAT], [0.85, 0.8], [BOAT])
    # day 2: the buoy again, the boat, and a one-off false box; a second false spot seen twice on this day only
    _frame(log, "a_2026-01-02_1.jpg", [BUOY, BOAT, [900, 500, 930, 520], [300, 600, 340, 630]], [0.9, 0.8, 0.7, 0.6], [BOAT])
    _frame(log, "a_2026-01-02_2.jpg", [BUOY, BOAT, [300, 600, 340, 630]], [0.9, 0.8, 0.6], [BOAT])
    # another camera with one day only: nothing to learn from, scored as is
    _frame(log, "b_2026-01-01_1.jpg", [BUOY], [0.9], [], camera="dock")
    got = log.report()[("vessel", "m")]
    # the buoy goes from every frame of camera quay (learnt on the other day); day 2's own spot at (320, 630) stays
    # in day 2 (seen only there) and the one-off box stays; dock keeps its buoy
    assert (got["tp"], got["fp"], got["gt"]) == (4, 4, 4)
    assert got["frames_without_feedback"] == 1
    # one area per dismissed box: day 2 learns the buoy (2 boxes) from day 1; day 1 the buoy and day 2's spot (2 + 2)
    assert got["ignore_areas"] == 2 + 4
    assert got["precision"] == 0.5 and got["recall"] == 1.0


def test_recurring_spots_need_min_frames_and_grow_with_each_box():
    log = FeedbackLog()
    _frame(log, "a_2026-01-01_1.jpg", [BUOY, [10, 10, 20, 20]], [0.9, 0.5], [])
    _frame(log, "a_2026-01-01_2.jpg", [[604, 372, 644, 403]], [0.8], [])
    frames = log.frames[("vessel", "m")]
    areas = recurring_false_alarm_areas(frames, "vessel", 0.25, min_frames=2)
    assert areas == [ignore_area_around(BUOY, "vessel"), ignore_area_around([604, 372, 644, 403], "vessel")]
    assert len(recurring_false_alarm_areas(frames, "vessel", 0.25, min_frames=1)) == 3  # the one-off box too
    assert recurring_false_alarm_areas(frames, "vessel", 0.95, min_frames=1) == []  # below the operating threshold


def test_evaluate_operator_ignore_on_real_frames(shared_media, tmp_path):
    """Three real frames of one harbour camera on two days, COCO's boat class: the +ignore row is reported beside the
    plain one, with the same ground truth, areas learnt from the other day and no more boxes of either kind."""
    from conftest import onnx_model
    from test_pipeline import _linked_manifest, seawatch

    onnx_model("coco_yolov5n")
    src = json.loads((shared_media / "MANIFEST.json").read_text())
    keep = [e for e in src if e["file"].startswith("A_boats/shore_w4gnqsqx") and e["file"].endswith(".jpg")]
    days = {camera_session(Sample(Path(e["file"]), "image", ""))[1] for e in keep}
    assert days == {"2022-07-16", "2022-07-17"}, "the shared media lost a day of w4gnqsqx"
    manifest = _linked_manifest(tmp_path, shared_media, keep)
    out = tmp_path / "report.json"
    res = seawatch("evaluate", str(manifest), "--out", str(out), "--no-clips", "--vessel-models", "coco_yolov5n",
                   "--operator-ignore", "1")
    assert res.returncode == 0, res.stderr
    row = json.loads(out.read_text())["labels"]["vessel"]["coco_yolov5n+tiles"]
    ign = row["with_operator_ignore"]
    assert ign["gt"] == row["gt"] > 0 and ign["frames_without_feedback"] == 0 and ign["min_frames"] == 1
    assert ign["ignore_areas"] >= 1  # COCO has false boxes at 0.25 on these frames
    # COCO's false boxes here do not come back at one spot (a trained vessel model's buoys do: models/VESSEL.md), so only
    # this holds: the areas never add a box
    assert ign["tp"] <= row["tp"] and ign["fp"] <= row["fp"]
    assert "coco_yolov5n+tiles +ignore" in res.stdout and "other sessions" in res.stdout
    bad = seawatch("evaluate", str(manifest), "--no-clips", "--operator-ignore", "0")
    assert bad.returncode != 0 and "MIN_FRAMES" in bad.stderr and "Traceback" not in bad.stderr


def test_evaluate_pools_per_camera_models_into_one_row(shared_media, tmp_path):
    """A per-camera entry (``CAM=MODEL/CAM=MODEL``, e.g. leave-one-camera-out models) scores each real frame with
    its camera's model and pools them into one row: its counts are exactly those of each model on its own camera."""
    from conftest import onnx_model
    from test_pipeline import _linked_manifest, seawatch

    onnx_model("coco_yolov5n")
    onnx_model("ship_published")
    src = json.loads((shared_media / "MANIFEST.json").read_text())
    keep = []
    for cam in ("vgiy5566", "w4gnqsqx"):
        e = next(e for e in src if e["file"].startswith(f"A_boats/shore_{cam}") and e["file"].endswith(".jpg"))
        keep.append({**e, "category": cam, "ground_truth": {**e["ground_truth"], "camera": cam}})
    manifest = _linked_manifest(tmp_path, shared_media, keep)
    out = tmp_path / "report.json"
    entry = "vgiy5566=coco_yolov5n/w4gnqsqx=ship_published"
    res = seawatch("evaluate", str(manifest), "--out", str(out), "--no-clips",
                   "--vessel-models", f"coco_yolov5n,ship_published,{entry}")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    rows = report["labels"]["vessel"]
    coco, ship, pooled = rows["coco_yolov5n+tiles"], rows["ship_published+tiles"], rows[f"{entry}+tiles"]
    part = (coco["by_category"]["vgiy5566"], ship["by_category"]["w4gnqsqx"])
    assert pooled["gt"] == coco["gt"] == sum(p["gt"] for p in part) > 0
    assert pooled["tp"] == sum(p["tp"] for p in part) and pooled["fp"] == sum(p["fp"] for p in part)
    assert coco["tp"] != pooled["tp"] or coco["fp"] != pooled["fp"], "the two models scored alike: no test"
    assert report["models"]["coco_yolov5n+tiles"]["frames"] == 2  # each frame detected once per model
    assert entry + "+tiles" in res.stdout
    # a camera without a model, a malformed entry: a clear error before anything runs
    bad = seawatch("evaluate", str(manifest), "--no-clips", "--vessel-models", "vgiy5566=coco_yolov5n")
    assert bad.returncode != 0 and "no model for camera(s) w4gnqsqx" in bad.stderr and "Traceback" not in bad.stderr
    bad = seawatch("evaluate", str(manifest), "--no-clips", "--vessel-models", "vgiy5566=")
    assert bad.returncode != 0 and "CAMERA=MODEL" in bad.stderr and "Traceback" not in bad.stderr
