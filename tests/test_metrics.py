import numpy as np
import pytest

from seawatch.vision.groundtruth import canonical, load_manifest, read_yolo
from seawatch.vision.metrics import LabelStats, average_precision, box_iou, match


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 0, 10], [0, 0, 0, 10], 0.0),  # degenerate
    ],
)
def test_box_iou_table(a, b, expected):
    assert box_iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected, abs=1e-6)


def test_box_iou_empty_shapes():
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_small_boxes_match_at_lower_iou():
    gt = np.array([[0, 0, 20, 20]], np.float32)  # 20 px: small -> IoU 0.3 suffices
    pred = np.array([[6, 0, 26, 20]], np.float32)  # inter 280, union 520: IoU 0.54
    assert match(pred, [0.9], gt)[0]
    pred = np.array([[12, 0, 32, 20]], np.float32)  # inter 160, union 640 -> 0.25
    assert not match(pred, [0.9], gt)[0]
    big_gt = np.array([[0, 0, 100, 100]], np.float32)
    pred = np.array([[40, 0, 140, 100]], np.float32)  # IoU 0.43: below 0.5 for a big box
    assert not match(pred, [0.9], big_gt)[0]


def test_each_gt_matched_once_highest_confidence_first():
    gt = np.array([[0, 0, 100, 100]], np.float32)
    pred = np.array([[0, 0, 100, 100], [1, 1, 100, 100]], np.float32)
    tp = match(pred, np.array([0.5, 0.9]), gt)
    assert tp.tolist() == [False, True]


def test_average_precision_known_values():
    assert average_precision(np.array([True, True]), 2) == pytest.approx(1.0)
    assert average_precision(np.array([False, True]), 1) == pytest.approx(0.5)
    assert average_precision(np.array([True, False]), 2) == pytest.approx(0.5)
    assert average_precision(np.array([], bool), 3) == 0.0


def test_label_stats_summary_and_recall_at_precision():
    s = LabelStats()
    s.add(np.array([0.9, 0.8, 0.3]), np.array([True, False, True]), 4)
    out = s.summary(conf_threshold=0.5)
    assert (out["tp"], out["fp"], out["fn"], out["gt"]) == (1, 1, 3, 4)
    assert out["precision"] == 0.5 and out["recall"] == 0.25
    r, thr = s.recall_at_precision(0.6)  # precision 2/3 at the third box still clears 0.6
    assert r == 0.5 and thr == pytest.approx(0.3)
    r, thr = s.recall_at_precision(0.7)
    assert r == 0.25 and thr == pytest.approx(0.9)


def test_canonical_names():
    assert canonical("sea (watercraft)") == "vessel"
    assert canonical("Hard Hat") == "helmet"
    assert canonical("default") is None


def test_read_yolo_scales_to_pixels(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("2 0.5 0.5 0.2 0.1\n0 0.1 0.1 0.2 0.2\n9 0.5 0.5 0.1 0.1\n")
    out = read_yolo(p, {"0": "human", "2": "sea (watercraft)", "9": "default"}, 1000, 500)
    np.testing.assert_allclose(out["vessel"], [[400, 225, 600, 275]])
    assert set(out) == {"vessel", "person"}


def test_shared_manifest_reads(shared_media):
    samples = load_manifest(shared_media / "MANIFEST.json")
    boats = [s for s in samples if s.category == "A_boats"]
    assert len(boats) == 15
    # counts in the manifest's own ground-truth summary agree with the parsed label files
    for s in boats:
        assert len(s.gt("vessel")) == s.ground_truth["boats"], s.path
    negatives = [s for s in samples if "fire" in s.negative_for]
    assert len(negatives) >= 10
