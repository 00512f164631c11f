"""Training labels from the review desk: ``vision.review_labels`` and ``seawatch reviews export``."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from seawatch.vision.review_labels import masked_image, site_labels
from seawatch.vision.trainsets import yolo_lines
from conftest import onnx_model
from test_service_store import make_event

S = 10**9


# ---- labels of one frame --------------------------------------------------------------------------------------
def test_site_labels_decided_undecided_and_disputed():
    det = np.array([[10, 10, 30, 20],  # the confirmed boat, as the model boxes it now
                    [100, 10, 120, 22],  # the dismissed buoy
                    [200, 10, 230, 25],  # a moored boat nobody alarmed on
                    [300, 10, 310, 15],  # below mask_conf
                    [400, 10, 420, 20]], np.float32)  # both confirmed and dismissed (two events, two verdicts)
    conf = np.array([0.9, 0.6, 0.3, 0.05, 0.5], np.float32)
    yes = [[11, 10, 31, 21], [401, 10, 421, 20]]
    no = [[100, 11, 120, 22], [400, 10, 420, 21]]
    lab = site_labels(det, conf, yes, no, mask_conf=0.1)
    assert lab.vessel_xyxy_px.tolist() == [[11, 10, 31, 21]]
    assert lab.background_xyxy_px.tolist() == [[100, 11, 120, 22]]
    # the unalarmed boat is blurred away, not taught as background; the disputed object is masked too
    # (the model's own box of it counts as decided: the two verdicts' boxes are masked instead)
    assert sorted(lab.masked_xyxy_px.tolist()) == [[200, 10, 230, 25], [400, 10, 420, 21], [401, 10, 421, 20]]
    assert lab.counts() == {"vessels": 1, "dismissed": 1, "masked": 3}
    # non-boxes are dropped, lengths must agree
    bad = site_labels([[0, 0, 0, 5], [np.nan, 0, 4, 4]], [0.9, 0.9], [[5, 5, 5, 9]], [])
    assert bad.counts() == {"vessels": 0, "dismissed": 0, "masked": 0}
    with pytest.raises(ValueError):
        site_labels(det, conf[:2], yes, no)


def test_masked_image_blurs_undecided_boxes_and_keeps_confirmed_pixels():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    lab = site_labels([[50, 40, 70, 60], [62, 45, 90, 70]], [0.3, 0.3], [[62, 45, 90, 70]], [])
    out = masked_image(img, lab)
    assert lab.masked_xyxy_px.tolist() == [[50, 40, 70, 60]]
    grown = (slice(37, 63), slice(47, 73))  # 15 % of 20 px = 3 px each way
    untouched = np.ones(img.shape[:2], bool)
    untouched[grown] = False
    untouched[45:70, 62:90] = True  # the confirmed boat keeps its pixels even where the margin reaches it
    assert np.array_equal(out[untouched], img[untouched])
    blurred = ~untouched
    assert np.abs(out[blurred].astype(int) - img[blurred]).mean() > 40  # noise replaced by its local mean
    assert out[blurred].std() < img[blurred].std() / 4


def test_yolo_lines_normalise_and_clip():
    assert yolo_lines(np.array([[0, 0, 100, 50], [-10, 40, 10, 60], [5, 5, 5, 9]]), 200, 100) == [
        "0 0.250000 0.250000 0.500000 0.500000", "0 0.025000 0.500000 0.050000 0.200000"]


# ---- the export from an event store ---------------------------------------------------------------------------
DAY1 = "shore_w4gnqsqx_1440_2022-07-16_11-26_output_0.jpg"
DAY2 = "shore_w4gnqsqx_1440_2022-07-17_09-50_output_0.jpg"


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * S)


@pytest.fixture(scope="module")
def coco_vessels():
    onnx_model("coco_yolov5n")
    from seawatch.vision.detector import load_detector
    from seawatch.vision.tiling import tile_for

    det = load_detector("coco_yolov5n", "fp32", conf=0.1)
    return det, tile_for("auto", det)


def _vessels(coco_vessels, img):
    from seawatch.vision.tiling import detect_tiled

    det, tile = coco_vessels
    return detect_tiled(det, [img], tile)[0].with_label("vessel")


def test_reviews_export_end_to_end(tmp_path, shared_media, coco_vessels):
    """A store with the review desk's verdicts on two real frames of the harbour webcam: the export labels the
    confirmed boats, leaves the false detection as background, blurs every other vessel COCO finds there, skips
    events without a verdict on the detector, lists a lost snapshot, and writes a dataset `seawatch models train`
    reads with every tile of these frames kept."""
    cv2 = pytest.importorskip("cv2")
    from seawatch.cli import main
    from seawatch.service.store import EventStore
    from seawatch.vision import trainsets
    from seawatch.vision.events import Snapshot
    from seawatch.vision.metrics import box_iou

    media = tmp_path / "media"
    (media / "snapshots").mkdir(parents=True)
    for name in (DAY1, DAY2):
        shutil.copy(shared_media / "A_boats" / name, media / "snapshots" / name)
    img1 = cv2.imread(str(media / "snapshots" / DAY1))
    found = _vessels(coco_vessels, img1)
    assert len(found) >= 6, "COCO finds the harbour's boats at conf 0.1"
    order = np.argsort(-found.confidence)
    boat, buoy = found.xyxy_px[order[0]], found.xyxy_px[order[3]]
    t1, t2 = _ns("2022-07-16T11:26:00"), _ns("2022-07-17T09:50:00")
    img2 = cv2.imread(str(media / "snapshots" / DAY2))
    found2 = _vessels(coco_vessels, img2).xyxy_px
    boat2 = found2[0]
    # a boat someone reported from the recording with its box drawn (one the model found only weakly here)
    missed = next(b for b in found2[1:] if box_iou(b[None], boat2[None])[0, 0] < 0.05)

    def vessel_event(i, t, box, uri, **kw):
        snap = Snapshot("quay", t, tuple(float(v) for v in box), 0.5, uri=uri)
        return make_event(i, type="vessel_in_zone", source_id="quay", labels=("vessel",), scores=(0.5,), snapshot=snap,
                          start_ns=t, at_ns=t, **kw)

    url = f"sqlite:///{tmp_path / 'seawatch.db'}"
    store = EventStore.open(url)
    events = {
        "boat": vessel_event(1, t1, boat, f"snapshots/{DAY1}"),
        "buoy": vessel_event(2, t1, buoy, f"snapshots/{DAY1}"),
        "boat2": vessel_event(3, t2, boat2, f"snapshots/{DAY2}"),
        "harmless": vessel_event(4, t2, found.xyxy_px[order[1]], f"snapshots/{DAY1}"),  # dismissed, no reason
        "handled": vessel_event(5, t2, boat2, f"snapshots/{DAY2}"),  # acknowledged only
        "lost": vessel_event(6, t2 + S, boat2, "snapshots/gone.jpg"),
        "escape": vessel_event(9, t2 + 2 * S, boat2, "../../etc/hostname"),
        "garbled": vessel_event(10, t2 + 3 * S, boat2, "snapshots/garbled.jpg"),
        "boxless": vessel_event(7, t2, boat2, None),
        "fire": replace(vessel_event(8, t1, boat, f"snapshots/{DAY1}"), type="fire", labels=("fire",)),
        "reported": vessel_event(11, t2, missed, f"snapshots/{DAY2}", attributes={"reported_by": "user:olga", "box_drawn": True}),
        "pointed": vessel_event(12, t2, boat2, f"snapshots/{DAY2}", attributes={"reported_by": "user:olga"}),  # a point only
    }
    for e in events.values():
        store.put(e)
    (media / "snapshots" / "garbled.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    for key in ("boat", "boat2", "lost", "escape", "garbled", "boxless", "fire", "reported", "pointed"):
        store.review(events[key].id, "confirmed", "rita")
    store.review(events["buoy"].id, "dismissed", "olga", note="fairway buoy", reason="false_detection")
    store.review(events["harmless"].id, "dismissed", "olga", note="pilot boat")
    store.review(events["handled"].id, "acknowledged", "olga")
    with pytest.raises(Exception, match="dismissal"):
        store.review(events["boat"].id, "confirmed", "rita", reason="false_detection")
    with pytest.raises(Exception, match="reason"):
        store.review(events["boat"].id, "dismissed", "rita", reason="looks odd")
    store.close()

    out = tmp_path / "export"
    rc = main(["reviews", "export", "--database", url, "--media-dir", str(media), "--out", str(out),
               "--model", "coco_yolov5n", "--threads", "2"])
    assert rc == 0
    report = json.loads((out / "export.json").read_text())
    assert report["skipped_events"] == {"no_verdict": 1, "no_snapshot": 1, "no_box": 1}
    assert [(u["events"], u["why"]) for u in report["unreadable"]] == [
        ([events["lost"].id], "missing"), ([events["escape"].id], "outside the media folder"),
        ([events["garbled"].id], "not a readable image")]
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["quay__2022-07-16T11-26-00-000Z.jpg", "quay__2022-07-17T09-50-00-000Z.jpg"]
    assert (out / "classes.txt").read_text() == "vessel\n"

    h, w = img1.shape[:2]
    lab1 = (out / "labels" / "quay__2022-07-16T11-26-00-000Z.txt").read_text().splitlines()
    assert lab1 == yolo_lines(np.round(boat.astype(float), 1)[None], w, h)  # the confirmed boat only (as stored, to
    # 0.1 px); the buoy is background
    frame1 = next(f for f in report["frames"] if f["capture_time_ns"] == t1)
    assert sorted(e["verdict"] for e in frame1["events"]) == ["background", "vessel"]
    undecided = found.xyxy_px[(box_iou(found.xyxy_px, np.stack([boat, buoy])) < 0.3).all(axis=1)]
    assert frame1["masked"] == len(undecided) and frame1["vessels"] == 1 and frame1["dismissed"] == 1

    exported = cv2.imread(str(out / "images" / "quay__2022-07-16T11-26-00-000Z.jpg")).astype(int)

    def change(box):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        return np.abs(exported[y0:y1, x0:x1] - img1[y0:y1, x0:x1]).mean()

    assert change(boat) < 2.0  # JPEG re-encoding only
    assert np.median([change(b) for b in undecided]) > 3 * max(change(boat), 0.5)  # blurred away
    lab2 = (out / "labels" / "quay__2022-07-17T09-50-00-000Z.txt").read_text().splitlines()
    assert sorted(lab2) == sorted(yolo_lines(np.round(np.stack([boat2, missed]).astype(float), 1), w, h))
    assert report["totals"] == {"frames": 2, "vessels": 3, "dismissed": 1,
                                "masked": sum(f["masked"] for f in report["frames"])}

    # dataset.yaml: the shipped frames plus these; the export's frames keep every tile (the buoy's included)
    manifest = trainsets.load_dataset_manifest(out / "dataset.yaml")
    items = trainsets.scan(manifest)
    own = [i for i in items if i.source == "review_export"]
    assert {i.camera for i in own} == {"quay"} and all(i.empty_keep == 1.0 for i in own)
    assert sorted(len(i.lines) for i in own) == [1, 2]
    assert {i.source for i in items} > {"review_export"}  # and the base dataset's sources
    (tmp_path / "ti").mkdir()
    (tmp_path / "tl").mkdir()
    c = trainsets.cut_tiles(img1, own[0].lines, "x", tmp_path / "ti", tmp_path / "tl", tile_px=384, empty_keep=0.0)
    assert c["empty_tiles"] == 0 and c["empty_tiles_dropped"] > 0  # the run's own share would drop them all ...
    layout = trainsets.write_tiled_layout(tmp_path / "layout", own[:1], [], ["vessel"], tile_px=384, empty_keep=0.0)
    counts = json.loads((layout.parent / "layout.json").read_text())
    assert counts["empty_tiles_dropped"] == 0 and counts["empty_tiles"] == c["empty_tiles_dropped"]  # ... the export's keeps them


def test_reviews_export_refuses_bad_input(tmp_path, capsys, coco_vessels):
    from seawatch.cli import main

    url = f"sqlite:///{tmp_path / 'seawatch.db'}"
    out = str(tmp_path / "out")
    cases = [
        (["--out", out], "--config FILE, or --database URL and --media-dir DIR"),
        (["--out", out, "--database", url, "--media-dir", str(tmp_path), "--mask-conf", "0"], "--mask-conf"),
        (["--out", out, "--database", url, "--media-dir", str(tmp_path), "--since", "yesterday"], "--since"),
        (["--out", out, "--database", url, "--media-dir", str(tmp_path), "--tile", "huge"], "--tile"),
        (["--out", out, "--database", url, "--media-dir", str(tmp_path), "--model", "coco_yolov5n", "--label", "fire",
          "--base-dataset", "none"],
         "does not detect 'fire'"),
        (["--out", out, "--database", url, "--media-dir", str(tmp_path), "--base-dataset", "nope"], "nope"),
    ]
    for extra, why in cases:
        assert main(["reviews", "export", *extra]) == 1
        assert why in capsys.readouterr().err
    # an empty store is an empty dataset, not an error
    assert main(["reviews", "export", "--out", out, "--database", url, "--media-dir", str(tmp_path),
                 "--model", "coco_yolov5n", "--base-dataset", "none"]) == 0
    assert "0 frames" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "export.json").read_text())["totals"]["frames"] == 0


def test_simulated_review_desk_gives_the_labels_verdicts(tmp_path, shared_media, coco_vessels):
    """scripts/review_desk_sim.py (how the export was measured): every alarm of the model on the day's real frames is
    an event whose verdict is what the labels say; the export then labels exactly the confirmed boxes."""
    import subprocess
    import sys

    from seawatch.service.store import EventQuery, EventStore
    from seawatch.vision.groundtruth import load_manifest
    from seawatch.vision.metrics import box_iou

    manifest = shared_media / "MANIFEST.json"
    out = tmp_path / "desk"
    script = Path(__file__).resolve().parents[1] / "scripts" / "review_desk_sim.py"
    proc = subprocess.run([sys.executable, str(script), str(manifest), "--model", "coco_yolov5n",
                           "--only", "w4gnqsqx_1440_2022-07-16", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["frames"] == 2 and counts["labelled_vessels"] == 67 + 52
    store = EventStore.open(f"sqlite:///{out / 'seawatch.db'}")
    events = store.search(EventQuery(limit=1000)).events
    store.close()
    assert len(events) == counts["confirmed"] + counts["dismissed_false_detection"] and counts["confirmed"] >= 10
    gt = {s.path.name: s.gt("vessel") for s in load_manifest(manifest, None) if s.kind == "image"}
    for ev in events:
        best = box_iou(np.array([ev.snapshot.xyxy_px], np.float32), gt[ev.snapshot.uri.split("/")[-1]]).max()
        if ev.review_status == "confirmed":
            assert best >= 0.3
        else:
            assert ev.review_status == "dismissed" and ev.review_reason == "false_detection"
    from seawatch.cli import main

    assert main(["reviews", "export", "--database", f"sqlite:///{out / 'seawatch.db'}", "--media-dir", str(out / "media"),
                 "--out", str(out / "export"), "--model", "coco_yolov5n", "--base-dataset", "none"]) == 0
    report = json.loads((out / "export" / "export.json").read_text())
    # a confirmed box and a dismissed one over the same object (IoU >= 0.3) are neither: masked instead
    assert report["totals"]["vessels"] <= counts["confirmed"] and report["totals"]["frames"] == 2
    assert report["totals"]["vessels"] + report["totals"]["dismissed"] >= 0.8 * len(events)
