"""Read labelled media described by a manifest in the shared media format.

A manifest is a JSON list of entries with ``file`` (relative to the manifest's folder), ``category`` and
``ground_truth``. Image entries name a ``label_file`` (YOLO txt, or Pascal VOC xml; ``label_file_voc`` is used when
there is no ``label_file``) and, for YOLO, the class table: ``label_classes`` (``{"0": "boat"}`` or ``["boat"]``),
else the ``id=name`` list in the entry's description (``(0=human, 1=land, 2=sea)``). Label entries (``label_for``)
are skipped. Class names are mapped onto Seawatch labels by :data:`SYNONYMS`; names that map to nothing
(``default``, ``high-vis``) are ignored.

A YOLO file with its class table labels every class of the table in that image: a class with no line there is a
known negative for the image (its detections are false positives), as in the usual detection benchmarks. Flags
such as ``"fire": false`` or a zero count (``"boats": 0``) mark a known negative too. An image whose labels cannot
be read (a YOLO file without any class table, a missing or malformed file) and that has no such flag is kept with
``label_error`` set, so that the evaluation reports it instead of silently scoring less.
"""

from __future__ import annotations

import json
import re
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
    "watercraft": "vessel", "boats": "vessel", "ships": "vessel", "vessels": "vessel", "sea vessel": "vessel",
    "persons": "person", "humans": "person", "vehicles": "vehicle", "land_vehicles": "vehicle", "cars": "vehicle",
    "fire": "fire", "flame": "fire", "smoke": "smoke",
    "hard hat": "helmet", "hardhat": "helmet", "helmet": "helmet", "with helmet": "helmet",
    "head": "no_helmet", "no helmet": "no_helmet", "no_helmet": "no_helmet", "without helmet": "no_helmet",
    "default": None, "high-vis": None, "vest": None,
}

# the labels Seawatch detects and scores
LABELS = {"vessel", "person", "vehicle", "fire", "smoke", "helmet", "no_helmet"}

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
    label_error: str | None = None  # why the labels of a labelled image could not be read

    @property
    def labelled(self) -> bool:
        return bool(self.boxes) or bool(self.negative_for)

    def count(self, label: str) -> int | None:
        """The ground truth's own count (or yes/no) for ``label`` (``"boats": 3``, ``"vessel": true``), if any."""
        for key, value in self.ground_truth.items():
            if isinstance(key, str) and canonical(key) == label and isinstance(value, (bool, int)):
                return int(value)
        return None

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


def read_yolo(label_path: Path, classes: dict[str, str], width: int, height: int,
              text: str | None = None) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    text = label_path.read_text() if text is None else text
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise InputError(f"{label_path}:{n}: YOLO line needs class cx cy w h")
        name = classes.get(parts[0], parts[0])
        label = canonical(name)
        if label is None:
            continue
        try:
            cx, cy, w, h = (float(v) for v in parts[1:5])
        except ValueError:
            raise InputError(f"{label_path}:{n}: YOLO line has a non-number: {line.strip()!r}") from None
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
        try:
            box = [float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise InputError(f"{label_path}: VOC box of {label!r} has a non-number") from None
        out.setdefault(label, []).append(box)
    return {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in out.items()}


def load_manifest(manifest_path: Path, categories: set[str] | None = None) -> list[Sample]:
    """Labelled images and clips of a manifest, in file order."""
    manifest_path = Path(manifest_path)
    try:
        entries = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8 (UnicodeDecodeError) or not JSON (JSONDecodeError)
        raise InputError(f"{manifest_path}: cannot read manifest: {exc}") from None
    except RecursionError:
        raise InputError(f"{manifest_path}: cannot read manifest: nested too deeply (lists or objects inside each "
                         "other hundreds of levels deep)") from None
    if not isinstance(entries, list):
        raise InputError(f"{manifest_path}: a manifest is a JSON list of entries")
    root = manifest_path.parent
    samples: list[Sample] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "file" not in e:
            raise InputError(f"{manifest_path}: entry {i} has no 'file'")
        if not isinstance(e["file"], str) or not e["file"].strip():
            raise InputError(f"{manifest_path}: entry {i}: 'file' must be a file name (text), got {e['file']!r:.60}")
        gt = e.get("ground_truth") or {}
        if not isinstance(gt, dict):
            raise InputError(f"{manifest_path}: entry {i} ({e['file']}): 'ground_truth' must be an object "
                             f"{{label: value, ...}}, got {type(gt).__name__}")
        hats = gt.get("without_helmet")
        if hats is not None and (isinstance(hats, bool) or not isinstance(hats, int) or hats < 0):
            raise InputError(f"{manifest_path}: entry {i} ({e['file']}): 'without_helmet' counts people without a "
                             f"hard hat (a whole number >= 0), got {hats!r:.60}")
        if categories and e.get("category") not in categories:
            continue
        path = root / e["file"]
        ext = path.suffix.lower()
        if "label_for" in gt or ext not in IMAGE_EXT | VIDEO_EXT:
            continue
        s = Sample(path, "image" if ext in IMAGE_EXT else "video", str(e.get("category", "")), ground_truth=gt)
        for key, value in gt.items():
            lab = canonical(key) if isinstance(key, str) else None
            # False, or a count of 0 ("boats": 0), for a Seawatch label: a known negative
            if lab in LABELS and (value is False or (type(value) is int and value == 0)):
                s.negative_for.add(lab)
        listed = gt.get("negative_for")
        for name in listed if isinstance(listed, list) else ():  # "negative_for": ["fire", "boats"]
            if (lab := canonical(str(name))) in LABELS:
                s.negative_for.add(lab)
        label_file = gt.get("label_file") or gt.get("label_file_voc")
        if s.kind == "image" and label_file:
            try:
                s.boxes = _read_labels(root / str(label_file), path, e)
            except InputError as exc:
                if not s.negative_for:  # flags (``"fire": false``) still say what the image is not; else nothing
                    s.label_error = str(exc)
        samples.append(s)
    return samples

_CLASS_LIST = re.compile(r"(?<![\w.])(\d+)\s*=\s*([^,;()\[\]=]+)")


def class_table(entry: dict) -> dict[str, str]:
    """A YOLO label's id -> class name table: ``label_classes`` (or ``classes``) as a dict or a list, else the
    ``0=human, 1=land`` list in the entry's description."""
    gt = entry.get("ground_truth") or {}
    table = gt.get("label_classes") or gt.get("classes") or entry.get("label_classes")
    if isinstance(table, dict):
        return {str(k): str(v) for k, v in table.items()}
    if isinstance(table, (list, tuple)):
        return {str(i): str(v) for i, v in enumerate(table)}
    found = _CLASS_LIST.findall(str(entry.get("description") or ""))
    return {k: v.strip() for k, v in found}


def _read_labels(label_path: Path, image_path: Path, entry: dict) -> dict[str, np.ndarray]:
    if not label_path.is_file():
        raise InputError(f"{label_path}: label file not found")
    if label_path.suffix.lower() == ".xml":
        return read_voc(label_path)
    classes = class_table(entry)
    if not classes:
        raise InputError(f"{label_path}: YOLO label without a class table (give ground_truth.label_classes)")
    try:
        text = label_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{label_path}: cannot read: {exc}") from exc
    w, h = _image_size(image_path, entry)
    boxes = read_yolo(label_path, classes, w, h, text)
    # every class of the table is labelled in this image: one without boxes is a known negative here
    for name in classes.values():
        lab = canonical(name)
        if lab is not None and lab in LABELS:
            boxes.setdefault(lab, np.zeros((0, 4), np.float32))
    return boxes
