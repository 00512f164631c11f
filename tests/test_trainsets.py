import pytest

from seawatch.vision import trainsets


@pytest.fixture(scope="module")
def vessel_items(shared_media):
    m = trainsets.load_dataset_manifest("vessels")
    return m, trainsets.scan(m, shared_media.parent)


def test_vessel_set_matches_its_readme(vessel_items):
    _, items = vessel_items
    train_set = [i for i in items if i.source == "shore_livecams_train"]
    # counts published in ../shared/media/train/vessels/README.md
    assert len(train_set) == 354
    assert sum(i.n_boxes for i in train_set) == 1896
    assert sum(1 for i in train_set if not i.lines) == 35
    assert {i.camera for i in train_set} == {"2ux5cw8z", "dlwkigk3", "f1q161no", "proylddb", "vgiy5566", "w4gnqsqx"}


def test_split_holds_out_whole_cameras(vessel_items):
    m, items = vessel_items
    train, val = trainsets.split(items, set(m["split"]["val_cameras"]))
    assert {i.camera for i in train}.isdisjoint({i.camera for i in val})
    assert len(train) + len(val) == len(items)
    assert 0.1 < len(val) / len(items) < 0.4


def test_shared_frames_map_sea_class_only(vessel_items):
    _, items = vessel_items
    shared = [i for i in items if i.source == "shore_livecams_shared"]
    assert shared and all(line.startswith("0 ") for i in shared for line in i.lines)


def test_layout_links_images_and_rewrites_labels(vessel_items, tmp_path):
    m, items = vessel_items
    train, val = trainsets.split(items[:20], {items[0].camera})
    data = trainsets.write_yolo_layout(tmp_path, train, val, m["classes"])
    imgs = list((tmp_path / "images").rglob("*.jpg"))
    assert len(imgs) == 20 and all(p.is_symlink() for p in imgs)
    labels = list((tmp_path / "labels").rglob("*.txt"))
    assert len(labels) == 20
    assert "names" in data.read_text()
    fp1 = trainsets.fingerprint(items)
    assert fp1 == trainsets.fingerprint(list(reversed(items))) and len(fp1) == 64


def test_tile_labels_clip_and_drop():
    # a 100x100 box at (50..150, 50..150) in a 1000x1000 frame
    line = "0 0.1 0.1 0.1 0.1"
    assert trainsets._tile_labels((line,), 1000, 1000, 0, 0, 640, 0.5) == ["0 0.156250 0.156250 0.156250 0.156250"]
    # tile starting at x=120 holds 30 % of it: dropped
    assert trainsets._tile_labels((line,), 1000, 1000, 120, 0, 640, 0.5) == []
    # tile starting at x=80 holds 70 %: kept, clipped to the tile
    kept = trainsets._tile_labels((line,), 1000, 1000, 80, 0, 640, 0.5)
    assert len(kept) == 1 and kept[0].split()[3] == f"{70 / 640:.6f}"


def test_trained_images_follow_the_training_record(vessel_items):
    """What `seawatch evaluate` warns about: the frames a model's training record says it was trained on."""
    m, items = vessel_items
    val_cams = set(m["split"]["val_cameras"])
    held = trainsets.trained_images({"dataset": "vessels", "val_cameras": sorted(val_cams)})
    assert held == {i.image.resolve() for i in items if i.camera not in val_cams}
    assert not held & {i.image.resolve() for i in items if i.camera in val_cams}
    one = trainsets.trained_images({"dataset": "vessels", "train_too": ["vgiy5566"]})  # cameras from the manifest
    assert one - held == {i.image.resolve() for i in items if i.camera == "vgiy5566"}
    assert trainsets.trained_images({"dataset": "vessels", "train_too": ["*"]}) == {i.image.resolve() for i in items}
    # a file-name pattern moves one day of a camera only; that camera's other days stay held out
    day = trainsets.trained_images({"dataset": "vessels", "train_too": ["*w4gnqsqx_*_2022-07-16_*"]})
    w4 = {i.image.resolve(): i.image.stem for i in items if i.camera == "w4gnqsqx"}
    moved = {p for p, stem in w4.items() if "_2022-07-16_" in stem}
    assert moved and len(moved) < len(w4) and day - held == moved


def test_train_too_names_cameras_or_file_patterns():
    too = {"vgiy5566", "*w4gnqsqx_*_2022-07-16_*"}
    assert trainsets.in_train_too("vgiy5566", "shore_vgiy5566_720_2022-07-17_10-00", too)
    assert trainsets.in_train_too("w4gnqsqx", "shore_w4gnqsqx_1440_2022-07-16_11-26_output_0", too)
    assert not trainsets.in_train_too("w4gnqsqx", "shore_w4gnqsqx_1440_2022-07-17_11-26_output_0", too)
    assert not trainsets.in_train_too(None, "whatever", {"w4gnqsqx"})  # a plain name is a camera, not a pattern
    assert trainsets.in_train_too(None, "whatever", {"*"})
    assert trainsets.trained_images({}) == set() and trainsets.trained_images({"dataset": "no_such_set"}) == set()


def test_evaluate_counts_scored_images_a_model_trained_on(vessel_items, monkeypatch):
    from seawatch.vision import evaluate, registry

    m, items = vessel_items
    val_cams = set(m["split"]["val_cameras"])
    seen = next(i.image for i in items if i.camera not in val_cams)
    unseen = next(i.image for i in items if i.camera in val_cams)
    locks = {"trained": {"training": {"dataset": "vessels", "val_cameras": sorted(val_cams)}}, "stock": {}}
    monkeypatch.setattr(registry, "read_lock", lambda name: locks.get(name))
    ev = evaluate.Evaluator()
    ev.models = {"trained+tiles": evaluate._ModelRun("trained+tiles", None, base="trained", paths={seen, unseen}),
                 "stock": evaluate._ModelRun("stock", None, base="stock", paths={seen, unseen})}
    assert evaluate._scored_training_images(ev) == {"trained+tiles": 1}
    ev.models["trained+tiles"].paths = {unseen}  # only the images a run scored count: a leave-one-camera-out
    assert evaluate._scored_training_images(ev) == {"trained+tiles": 0}  # model scored on its own camera is clean
    ev.models["trained+tiles"].paths = set()
    assert evaluate._scored_training_images(ev) == {}


def test_registered_model_mines_exactly_the_empty_tiles_it_fires_on(vessel_items, tmp_path):
    """Hard-negative mining through a registered model's ONNX (COCO's boat class, mapped to vessel): on a real
    frame of a training camera cut into 384 px tiles with no labels (every tile is a candidate), the tiles kept as
    background are exactly those where the detector, run directly, finds a vessel at the threshold; they get empty
    labels and the candidates folder goes. The frame has boats in some tiles and none in others, so a miner that
    kept all or nothing would fail."""
    cv2 = pytest.importorskip("cv2")
    from conftest import onnx_model
    from seawatch.vision.detector import load_detector

    onnx_model("coco_yolov5n")
    m, items = vessel_items
    it = next(i for i in items if i.image.name == "shore_dlwkigk3_720_2022-07-19_11-58_output_0.jpg")
    img = cv2.imread(str(it.image))
    img_dir, lab_dir, cand = tmp_path / "img", tmp_path / "lab", tmp_path / "cand"
    for d in (img_dir, lab_dir, cand):
        d.mkdir()
    c = trainsets.cut_tiles(img, (), "f", img_dir, lab_dir, tile_px=384, empty_keep=0.0, cand_dir=cand)
    assert c["empty_tiles_dropped"] == c["hard_negative_candidates"] == len(list(cand.glob("*.jpg"))) == 12
    det = load_detector("coco_yolov5n", "fp32", conf=0.1, imgsz=640)
    fires = {p.name for p in cand.glob("*.jpg")
             if len(det.detect([cv2.imread(str(p))])[0].with_label("vessel"))}
    assert 0 < len(fires) < 12
    got = trainsets.mine_hard_negatives(cand, img_dir, lab_dir, ["coco_yolov5n"], imgsz=640, conf=0.1, batch=5)
    assert got["hard_negative_tiles"] == len(fires) and not cand.exists()
    assert {p.name for p in img_dir.glob("*.jpg")} == fires
    assert all(p.read_text() == "" for p in lab_dir.glob("*.txt")) and len(list(lab_dir.glob("*.txt"))) == len(fires)
    assert got["hard_negative_weights_sha256"] == trainsets.miner_sha256("coco_yolov5n")


def test_tiles_with_labels_are_kept_and_only_untouched_empty_tiles_are_candidates(vessel_items, tmp_path):
    """The same frame with its 23 labelled boats: tiles holding a boat keep their labels, a seeded sample of the
    empty ones is kept, and of the dropped ones only tiles no labelled box reaches are mining candidates."""
    cv2 = pytest.importorskip("cv2")
    _, items = vessel_items
    it = next(i for i in items if i.image.name == "shore_dlwkigk3_720_2022-07-19_11-58_output_0.jpg")
    img = cv2.imread(str(it.image))
    h, w = img.shape[:2]
    img_dir, lab_dir, cand = tmp_path / "img", tmp_path / "lab", tmp_path / "cand"
    for d in (img_dir, lab_dir, cand):
        d.mkdir()
    c = trainsets.cut_tiles(img, it.lines, "f", img_dir, lab_dir, tile_px=384, empty_keep=0.0, cand_dir=cand)
    assert c["vessel_tiles"] + c["empty_tiles"] + c["empty_tiles_dropped"] == 12 and c["empty_tiles"] == 0
    assert c["vessel_tiles"] == len(list(img_dir.glob("*.jpg"))) > 0
    assert all(p.read_text().strip() for p in lab_dir.glob("*.txt"))  # every kept tile holds a boat
    boxes = [trainsets.line_xyxy_px(line, w, h) for line in it.lines]
    for p in cand.glob("*.jpg"):
        x0, y0 = (int(v) for v in p.stem.rsplit("__t", 1)[1].split("_"))
        assert not trainsets.touches(boxes, x0, y0, 384)
    assert c["hard_negative_candidates"] == len(list(cand.glob("*.jpg")))
    again = trainsets.cut_tiles(img, it.lines, "f", tmp_path, tmp_path, tile_px=384, empty_keep=0.5, seed=3)
    twice = trainsets.cut_tiles(img, it.lines, "f", tmp_path, tmp_path, tile_px=384, empty_keep=0.5, seed=3)
    assert again == twice  # the sample of empty tiles is seeded


def test_own_camera_example_manifest_reads_and_names_the_missing_folder(vessel_items, shared_media):
    """datasets/own_camera_example.yaml (README: your own cameras) is a valid manifest: its webcam source is the
    vessel set's, and its own-camera source, not there on this machine, is named in a clear error."""
    m = trainsets.load_dataset_manifest("own_camera_example")
    vessels = trainsets.load_dataset_manifest("vessels")
    assert m["sources"][0] == vessels["sources"][0] and m["split"]["val_cameras"] == ["quaycam"]
    with pytest.raises(trainsets.InputError, match="dataset source quaycam: /data/quaycam_labels is missing"):
        trainsets.scan(m, shared_media.parent)


@pytest.mark.parametrize("keep", [1.5, -0.1, "all", True])
def test_a_source_empty_keep_must_be_a_fraction(tmp_path, keep):
    (tmp_path / "images").mkdir()
    m = {"name": "x", "classes": ["vessel"], "_path": str(tmp_path / "x.yaml"),
         "sources": [{"name": "site", "root": str(tmp_path), "format": "yolo", "class_map": {"0": "vessel"},
                      "empty_keep": keep}]}
    with pytest.raises(trainsets.ConfigError, match="dataset source site: empty_keep must be a fraction"):
        trainsets.scan(m)
