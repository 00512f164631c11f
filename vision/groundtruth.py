"""Read labelled media described by a manifest in the shared media format.

A manifest is a JSON list of entries with ``file`` (relative to the manifest's folder), ``category`` and
``ground_truth``. Image entries name a ``label_file`` (YOLO txt, or Pascal VOC xml) and, for YOLO, the
``label_classes`` id -> name table; label entries (``label_for``) are skipped. Class names are mapped onto
Seawatch labels by :data:`SYNONYMS`; names that map to nothing (``default``, ``high-vis``) are ignored. Boolean
flags such as ``"fire": false`` mark an image as a known negative for that label.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seawatch.errors import InputError

SYNONYMS: dict[str, str | None] = {
    "human": "person", "person": "person", "people": "person", "pedestrian": "person",
    "land": "vehicle", "land (vehicles)": "vehicle", "vehicle": "vehicle", "car": "vehicle", "truck": "vehicle",
    "bus": "vehicle", "van": "vehicle", "motorcycle": "vehicle",
    "sea": "vessel", "sea (watercraft)": "vessel", "boat": "vessel", "ship": "vessel", "vessel": "vessel",
    "watercraft": "vessel",
    "fire": "fire", "flame": "fire", "smoke": "smoke",
    "hard hat": "helmet", "hardhat": "helmet", "helmet": "helmet", "with helmet": "helmet",
    "head": "no_helmet", "no helmet": "no_helmet", "no_helmet": "no_helmet", "without helmet": "no_helmet",
    "default": None, "high-vis": None, "vest": None,
}

# What a detector label counts as when ground truth uses a coarser class.
PRED_GROUPS: dict[str, str] = {"car": "vehicle", "truck": "vehicle", "bus": "vehicle", "motorcycle": "vehicle",
                               "person_fallen": "person"}

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_EXT = {".mp4", ".mkv", ".avi", ".mov", ".ts"}


def canonical(name: str) -> str | None:
    key = name.strip().lower()
    if key in SYNONYMS:
        return SYNONYMS[key]
    return key.replace(" ", "_")


@dataclass
class Sample:
    """One labelled image or clip."""

    path: Path
    kind: str  # "image" | "video"
    category: str
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # label -> (M,4) float32 xyxy px
    negative_for: set[str] = field(default_factory=set)
    ground_truth: dict = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return bool(self.boxes) or bool(self.negative_for)

    def gt(self, label: str) -> np.ndarray:
        return self.boxes.get(label, np.zeros((0, 4), np.float32))


def _image_size(path: Path, entry: dict) -> tuple[int, int]:
    size = entry.get("image_size")
    if size and len(size) == 2:
        return int(size[0]), int(size[1])
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: cannot read image to get its size")
    return img.shape[1], img.shape[0]


def read_yolo(label_path: Path, classes: dict[str, str], width: int, height: int) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    for n, line in enumerate(label_path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise InputError(f"{label_path}:{n}: YOLO line needs class cx cy w h")
        name = classes.get(parts[0], parts[0])
        label = canonical(name)
        if label is None:
            continue
        cx, cy, w, h = (float(v) for v in parts[1:5])
        box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        out.setdefault(label, []).append(box)
    return {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in out.items()}


def read_voc(label_path: Path) -> dict[str, np.ndarray]:
    try:
        root = ET.parse(label_path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{label_path}: invalid VOC xml: {exc}") from exc
    out: dict[str, list] = {}
    for obj in root.iter("object"):
        label = canonical(obj.findtext("name", ""))
        bb = obj.find("bndbox")
        if label is None or bb is None:
            continue
        box = [float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")]
        out.setdefault(label, []).append(box)
    return {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in out.items()}


def load_manifest(manifest_path: Path, categories: set[str] | None = None) -> list[Sample]:
    """Labelled images and clips of a manifest, in file order."""
    manifest_path = Path(manifest_path)
    try:
        entries = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{manifest_path}: cannot read manifest: {exc}") from exc
    if not isinstance(entries, list):
        raise InputError(f"{manifest_path}: a manifest is a JSON list of entries")
    root = manifest_path.parent
    samples: list[Sample] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "file" not in e:
            raise InputError(f"{manifest_path}: entry {i} has no 'file'")
        if categories and e.get("category") not in categories:
            continue
        path = root / e["file"]
        ext = path.suffix.lower()
        gt = e.get("ground_truth") or {}
        if "label_for" in gt or ext not in IMAGE_EXT | VIDEO_EXT:
            continue
        s = Sample(path, "image" if ext in IMAGE_EXT else "video", str(e.get("category", "")), ground_truth=gt)
        for key, value in gt.items():
            lab = canonical(key) if isinstance(key, str) else None
            if value is False and lab:
                s.negative_for.add(lab)
        if s.kind == "image" and gt.get("label_file"):
            label_path = root / gt["label_file"]
            if label_path.suffix.lower() == ".xml":
                s.boxes = read_voc(label_path)
            else:
                classes = {str(k): v for k, v in (gt.get("label_classes") or {}).items()}
                w, h = _image_size(path, e)
                s.boxes = read_yolo(label_path, classes, w, h) if classes else {}
        samples.append(s)
    return samples
