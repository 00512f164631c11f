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


@pytest.mark.parametrize("tied", [[True, False, False], [False, False, True], [False, True, False]])
def test_recall_at_precision_cuts_only_where_a_threshold_can(tied):
    """Boxes of one confidence are kept or dropped together: two sure hits, then a hit and two false boxes tied at
    0.5. At precision 0.75 the answer is the two hits at 0.9 (3/5 = 0.6 at 0.5), whatever the order of the tie."""
    s = LabelStats()
    s.add(np.array([0.9, 0.9, 0.5, 0.5, 0.5]), np.array([True, True, *tied]), 5)
    assert s.recall_at_precision(0.75) == (pytest.approx(0.4), pytest.approx(0.9))
    assert s.recall_at_precision(0.6) == (pytest.approx(0.6), pytest.approx(0.5))


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


def _entry(tmp_path, name: str, label_text: str | None, w: int = 100, h: int = 50, **gt) -> dict:
    """A manifest entry for a blank image of w x h with a YOLO label file holding ``label_text``."""
    import cv2

    cv2.imwrite(str(tmp_path / f"{name}.png"), np.zeros((h, w, 3), np.uint8))
    if label_text is not None:
        (tmp_path / f"{name}.txt").write_text(label_text)
        gt.setdefault("label_file", f"{name}.txt")
    return {"file": f"{name}.png", "category": "c", "ground_truth": gt}


def test_manifest_class_tables_negatives_and_unreadable_labels(tmp_path):
    """Unfamiliar manifests: a class list, a class table only in the description, a class of the table with no
    line (a known negative), zero counts, a YOLO file without any table, a broken line, a VOC fallback."""
    import json

    (tmp_path / "v.xml").write_text("<annotation><object><name>ship</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
                                    "<xmax>11</xmax><ymax>12</ymax></bndbox></object></annotation>")
    entries = [
        _entry(tmp_path, "listed", "0 0.5 0.5 0.2 0.2\n", label_classes=["boat", "person"]),
        dict(_entry(tmp_path, "described", "2 0.5 0.5 0.2 0.2\n"), description="boats (0=human, 1=land, 2=sea)"),
        _entry(tmp_path, "empty", "", label_classes={"0": "vessel"}),
        _entry(tmp_path, "counted", None, boats=0, persons=2, negative_for=["Smoke", "nothing"]),
        _entry(tmp_path, "tableless", "0 0.5 0.5 0.2 0.2\n", boats=1),
        _entry(tmp_path, "flagged", "1 0.5 0.5 1 1\n", fire=False),
        _entry(tmp_path, "broken", "0 0.5 half 0.2 0.2\n", label_classes=["boat"]),
        _entry(tmp_path, "voc", None, label_file_voc="v.xml"),
    ]
    (tmp_path / "M.json").write_text(json.dumps(entries))
    s = {x.path.stem: x for x in load_manifest(tmp_path / "M.json")}
    np.testing.assert_allclose(s["listed"].gt("vessel"), [[40, 20, 60, 30]])
    assert len(s["listed"].boxes["person"]) == 0  # in the table, no line: a known negative for this image
    np.testing.assert_allclose(s["described"].gt("vessel"), [[40, 20, 60, 30]])
    assert set(s["described"].boxes) == {"vessel", "person", "vehicle"}
    assert "vessel" in s["empty"].boxes and len(s["empty"].boxes["vessel"]) == 0 and s["empty"].label_error is None
    assert s["counted"].negative_for == {"vessel", "smoke"} and s["counted"].count("person") == 2
    assert s["counted"].count("vessel") == 0 and s["listed"].count("vessel") is None
    assert "class table" in s["tableless"].label_error
    # the flag still says what the image is not: scored as a fire negative, not an error
    assert s["flagged"].label_error is None and "fire" in s["flagged"].negative_for
    assert "non-number" in s["broken"].label_error
    np.testing.assert_allclose(s["voc"].gt("vessel"), [[1, 2, 11, 12]])


def test_evaluate_reports_labelled_images_it_cannot_score(tmp_path):
    import json

    from seawatch.vision.evaluate import Evaluator, evaluate_images

    (tmp_path / "M.json").write_text(json.dumps([_entry(tmp_path, "tableless", "0 0.5 0.5 0.2 0.2\n")]))
    report = evaluate_images(load_manifest(tmp_path / "M.json"), Evaluator())
    assert report["unscored_images"] == [{"file": "tableless.png", "reason": report["unscored_images"][0]["reason"]}]
    assert "class table" in report["unscored_images"][0]["reason"] and report["labels"] == {}


def test_match_gt_and_recall_by_size():
    from seawatch.vision.metrics import SizeStats, match_gt

    gt = np.array([[0, 0, 10, 10], [100, 100, 120, 110], [200, 200, 300, 260], [400, 0, 410, 40]], np.float32)
    pred = np.array([[1, 1, 10, 10], [100, 100, 121, 110], [0, 0, 9, 9]], np.float32)
    found = match_gt(pred, np.array([0.9, 0.8, 0.7]), gt)
    # the third prediction repeats the first box: one ground-truth box is found once
    assert found.tolist() == [True, True, False, False]
    st = SizeStats()
    st.add(gt, found)
    st.add(np.zeros((0, 4)), np.zeros(0, bool))
    assert st.summary() == {"0-16px": {"gt": 1, "found": 1, "recall": 1.0},
                            "16-32px": {"gt": 1, "found": 1, "recall": 1.0},
                            "32-96px": {"gt": 1, "found": 0, "recall": 0.0},
                            ">=96px": {"gt": 1, "found": 0, "recall": 0.0}}
