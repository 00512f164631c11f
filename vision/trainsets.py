"""Training sets for fine-tuning: scan labelled image folders, split by camera, lay them out for YOLO training.

Described by a dataset manifest (``datasets/*.yaml``). Images are linked, never copied; labels are rewritten
with the manifest's class map (only mapped classes survive). The split holds out whole cameras, so frames of one
scene never sit on both sides.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from seawatch import paths
from seawatch.errors import ConfigError, InputError

IMAGE_EXT = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Item:
    image: Path
    camera: str
    lines: tuple[str, ...]  # YOLO label lines after class mapping (class ids index the manifest's classes)
    source: str
    empty_keep: float | None = None  # the source's own share of empty tiles to keep (a review export: all), else the run's

    @property
    def n_boxes(self) -> int:
        return len(self.lines)


def load_dataset_manifest(name_or_path: str | Path) -> dict:
    p = Path(name_or_path)
    if not p.suffix:
        p = paths.DATASET_DIR / f"{name_or_path}.yaml"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read dataset manifest: {exc}") from exc
    for key in ("name", "classes", "sources"):
        if key not in data:
            raise ConfigError(f"{p}: dataset manifest needs {key!r}")
    data["_path"] = str(p)
    return data


def _map_lines(label_path: Path, class_map: dict[str, str], classes: list[str]) -> tuple[str, ...]:
    out = []
    if not label_path.is_file():
        return ()
    for n, line in enumerate(label_path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise InputError(f"{label_path}:{n}: YOLO line needs class cx cy w h")
        target = class_map.get(parts[0])
        if target is None:
            continue
        vals = [min(max(float(v), 0.0), 1.0) for v in parts[1:5]]
        if vals[2] <= 0 or vals[3] <= 0:
            continue
        out.append(" ".join([str(classes.index(target))] + [f"{v:.6f}" for v in vals]))
    return tuple(out)


def camera_pattern(source: dict) -> re.Pattern:
    """How a dataset source names its camera: group 1 of ``camera_from`` searched in the file name."""
    return re.compile(source.get("camera_from", r"^([^_]+)_"))


def scan(manifest: dict, shared: Path | None = None) -> list[Item]:
    """All items of a dataset manifest, in a stable order. A source's ``root`` is relative to the shared data folder
    or absolute (your own frames, e.g. from ``seawatch detect --yolo-labels``). Raises InputError when the data is
    absent."""
    shared = shared or paths.shared_dir()
    classes = list(manifest["classes"])
    items: list[Item] = []
    for src in manifest["sources"]:
        root = Path(str(src["root"])).expanduser()
        if not root.is_absolute():
            if shared is None:
                raise InputError(f"dataset source {src['name']}: the shared data folder is absent "
                                 "(set SEAWATCH_SHARED)")
            root = shared / root
        if not root.is_dir():
            raise InputError(f"dataset source {src['name']}: {root} is missing")
        cam_re = camera_pattern(src)
        keep = src.get("empty_keep")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 <= keep <= 1.0):
            raise ConfigError(f"dataset source {src['name']}: empty_keep must be a fraction in [0, 1], not {keep!r}")
        if src.get("globs"):
            images = sorted({p for g in src["globs"] for p in root.glob(g)})
        else:
            images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_EXT)
        for img in images:
            label = img.with_suffix(".txt") if src.get("globs") else root / "labels" / (img.stem + ".txt")
            m = cam_re.search(img.name)
            camera = m.group(1) if m else img.parent.name
            items.append(Item(img, camera, _map_lines(label, {str(k): v for k, v in src["class_map"].items()}, classes), src["name"],
                              None if keep is None else float(keep)))
    return items


def split(items: list[Item], val_cameras: set[str]) -> tuple[list[Item], list[Item]]:
    train = [i for i in items if i.camera not in val_cameras]
    val = [i for i in items if i.camera in val_cameras]
    return train, val


def trained_images(record: dict) -> set[Path]:
    """The images (resolved paths) a model's training record says it trained on: its dataset's frames outside the
    validation cameras, plus the validation cameras it was also trained on (``train_too``; ``*`` = all). The
    dataset as its manifest lists it now; empty when the record names no dataset or the data is absent."""
    name = record.get("dataset")
    if not name:
        return set()
    try:
        manifest = load_dataset_manifest(name)
        items = scan(manifest)
    except (ConfigError, InputError, OSError, ValueError, KeyError):
        return set()
    train, val = split(items, set(record.get("val_cameras") or manifest.get("split", {}).get("val_cameras", [])))
    too = set(record.get("train_too") or ())
    return {i.image.resolve() for i in train + [v for v in val if in_train_too(v.camera, v.image.stem, too)]}


def in_train_too(camera: str | None, stem: str, train_too: set[str]) -> bool:
    """Whether a held-out frame moves into training: ``*`` (all), its camera id, or a file-name pattern
    (``*w4gnqsqx_*_2022-07-16_*``: some days of a camera, the rest staying held out) matching its file stem."""
    if "*" in train_too or (camera is not None and camera in train_too):
        return True
    return any(fnmatch.fnmatchcase(stem, t) for t in train_too if is_frame_pattern(t))


def is_frame_pattern(entry: str) -> bool:
    """A ``train_too`` entry that is a file-name pattern rather than a camera id (``*`` alone means all)."""
    return entry != "*" and any(ch in entry for ch in "*?[")


def fingerprint(items: list[Item]) -> str:
    """sha256 over image names, sizes and mapped labels: identifies the exact data a model was trained on."""
    h = hashlib.sha256()
    for it in sorted(items, key=lambda i: (i.source, i.image.name)):
        h.update(f"{it.source}/{it.image.name}:{it.image.stat().st_size}\n".encode())
        h.update("\n".join(it.lines).encode())
        if it.empty_keep is not None:
            h.update(f"\nempty_keep={it.empty_keep}".encode())
    return h.hexdigest()


def write_yolo_layout(out_dir: Path, train: list[Item], val: list[Item], classes: list[str]) -> Path:
    """``out_dir/{images,labels}/{train,val}`` with symlinked images and rewritten labels, plus ``data.yaml``."""
    out_dir = Path(out_dir)
    for part, items in (("train", train), ("val", val)):
        img_dir, lab_dir = out_dir / "images" / part, out_dir / "labels" / part
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        for it in items:
            stem = f"{it.source}__{it.image.stem}"
            link = img_dir / f"{stem}{it.image.suffix.lower()}"
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(it.image.resolve(), link)
            (lab_dir / f"{stem}.txt").write_text("\n".join(it.lines) + ("\n" if it.lines else ""))
    data = {"path": str(out_dir.resolve()), "train": "images/train", "val": "images/val",
            "names": {i: c for i, c in enumerate(classes)}}
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out_dir / "data.yaml"


def summary(train: list[Item], val: list[Item]) -> dict:
    def part(items):
        cams: dict[str, int] = {}
        for i in items:
            cams[i.camera] = cams.get(i.camera, 0) + 1
        return {"images": len(items), "boxes": sum(i.n_boxes for i in items),
                "negatives": sum(1 for i in items if not i.lines), "cameras": dict(sorted(cams.items()))}
    return {"train": part(train), "val": part(val)}


def line_xyxy_px(line: str, w: int, h: int) -> tuple[float, float, float, float]:
    """A YOLO label line's box in pixels of a ``w`` x ``h`` image."""
    _, cx, cy, bw, bh = (float(v) for v in line.split()[:5])
    return (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h


def yolo_lines(xyxy_px, width_px: int, height_px: int, class_id: int = 0) -> list[str]:
    """YOLO label lines (``class cx cy w h``, normalised, clipped to the frame) for pixel boxes; boxes with nothing
    left inside the frame are skipped. The inverse of :func:`line_xyxy_px`."""
    import numpy as np

    lines = []
    for x0, y0, x1, y1 in np.asarray(xyxy_px, np.float64).reshape(-1, 4).tolist():
        x0, x1 = min(max(x0, 0.0), width_px), min(max(x1, 0.0), width_px)
        y0, y1 = min(max(y0, 0.0), height_px), min(max(y1, 0.0), height_px)
        if x1 <= x0 or y1 <= y0:
            continue
        lines.append(f"{class_id} {(x0 + x1) / 2 / width_px:.6f} {(y0 + y1) / 2 / height_px:.6f} "
                     f"{(x1 - x0) / width_px:.6f} {(y1 - y0) / height_px:.6f}")
    return lines


def _tile_labels(lines: tuple[str, ...], w: int, h: int, x0: int, y0: int, tile: int, min_keep: float) -> list[str]:
    out = []
    for line in lines:
        c = line.split()[0]
        x1, y1, x2, y2 = line_xyxy_px(line, w, h)
        ix1, iy1 = max(x1, x0), max(y1, y0)
        ix2, iy2 = min(x2, x0 + tile), min(y2, y0 + tile)
        if ix2 <= ix1 or iy2 <= iy1:
            continue
        if (ix2 - ix1) * (iy2 - iy1) < min_keep * (x2 - x1) * (y2 - y1):
            continue  # mostly outside this tile: another tile holds it whole
        tw = th = float(tile)
        out.append(f"{c} {((ix1 + ix2) / 2 - x0) / tw:.6f} {((iy1 + iy2) / 2 - y0) / th:.6f} "
                   f"{(ix2 - ix1) / tw:.6f} {(iy2 - iy1) / th:.6f}")
    return out


def touches(boxes_px: list, x0: int, y0: int, tile_px: int) -> bool:
    """Whether any labelled box overlaps the tile at all (a tile "empty" by the min_keep rule may still hold the
    part of a boat that its neighbour holds whole)."""
    return any(x1 < x0 + tile_px and x2 > x0 and y1 < y0 + tile_px and y2 > y0 for x1, y1, x2, y2 in boxes_px)


def cut_tiles(img, lines: tuple[str, ...], stem: str, img_dir: Path, lab_dir: Path, *, tile_px: int,
              overlap: float = 0.2, min_keep: float = 0.5, empty_keep: float = 1.0, seed: int = 0,
              cand_dir: Path | None = None, jpeg_quality: int = 95) -> dict:
    """Cuts one frame into full-resolution training tiles on the tiled inference's own grid
    (:func:`seawatch.vision.tiling.tile_starts`), so training sees what the runtime's tiles see.

    Every tile holding a labelled box (at least ``min_keep`` of it) is kept with its labels; of the empty tiles a
    seeded sample (``empty_keep``, per frame stem and tile origin, so reruns cut the same set) is kept as background.
    With ``cand_dir`` the dropped empty tiles that no labelled box touches at all are written there as
    hard-negative candidates (:func:`mine_hard_negatives`). Returns counts."""
    import random

    import cv2

    from seawatch.vision.tiling import tile_starts

    h, w = img.shape[:2]
    boxes_px = [line_xyxy_px(line, w, h) for line in lines]
    c = {"vessel_tiles": 0, "tile_boxes": 0, "empty_tiles": 0, "empty_tiles_dropped": 0,
         "hard_negative_candidates": 0}
    quality = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    for y0 in tile_starts(h, tile_px, overlap).tolist():
        for x0 in tile_starts(w, tile_px, overlap).tolist():
            crop = img[y0:y0 + tile_px, x0:x0 + tile_px]
            labs = _tile_labels(lines, w, h, x0, y0, tile_px, min_keep)
            if labs:
                c["vessel_tiles"] += 1
                c["tile_boxes"] += len(labs)
            elif empty_keep >= 1.0 or random.Random(f"{seed}:{stem}:{x0}:{y0}").random() < empty_keep:
                c["empty_tiles"] += 1
            else:
                c["empty_tiles_dropped"] += 1
                if cand_dir is not None and not touches(boxes_px, x0, y0, tile_px):
                    c["hard_negative_candidates"] += 1
                    cv2.imwrite(str(cand_dir / f"{stem}__t{x0}_{y0}.jpg"), crop, quality)
                continue
            cv2.imwrite(str(img_dir / f"{stem}__t{x0}_{y0}.jpg"), crop, quality)
            (lab_dir / f"{stem}__t{x0}_{y0}.txt").write_text("\n".join(labs) + ("\n" if labs else ""))
    return c


def _miner(weights: str | Path, imgsz: int, conf: float, device: str, labels: tuple[str, ...]):
    """A function from tile paths to each tile's top score among ``labels`` (0 when nothing fires at ``conf``):
    an ultralytics ``.pt`` through ultralytics (the GPU machine has no onnxruntime), any other name a registered
    model through Seawatch's own ONNX detector (so COCO's boat class, mapped to ``vessel``, can mine too)."""
    if str(weights).endswith(".pt"):
        from ultralytics import YOLO

        model = YOLO(str(weights))

        def top_pt(paths_: list[Path]) -> list[float]:
            out = model.predict([str(p) for p in paths_], imgsz=imgsz, conf=conf, device=device, verbose=False)
            return [float(r.boxes.conf.max()) if len(r.boxes) else 0.0 for r in out]
        return top_pt
    import cv2

    from seawatch.vision.detector import load_detector

    det = load_detector(str(weights), "fp32", conf=conf, imgsz=imgsz)

    def top_onnx(paths_: list[Path]) -> list[float]:
        out = det.detect([cv2.imread(str(p)) for p in paths_])
        return [float(d.with_label(*labels).confidence.max(initial=0.0)) for d in out]
    return top_onnx


def miner_sha256(weights: str | Path) -> str:
    """The sha256 of a miner's weights: the ``.pt`` file, or a registered model's provisioned ONNX."""
    if str(weights).endswith(".pt"):
        return hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    from seawatch.vision import registry

    return registry.sha256_file(registry.resolve_onnx(str(weights), "fp32"))


def mine_hard_negatives(cand_dir: Path, img_dir: Path, lab_dir: Path, weights: str | Path | list, imgsz: int,
                        conf: float, device: str = "cpu", batch: int = 16, labels: tuple[str, ...] = ("vessel",),
                        drop_rest: bool = True) -> dict:
    """Moves the candidate tiles on which any of ``weights`` (vessel models: ultralytics ``.pt`` files or registered
    model names; the start weights, an earlier round's model) finds one of ``labels`` at ``conf`` or above into the
    training images with an empty label file (hard negatives: buoys, piles, masts, cranes that a random sample of
    empty tiles rarely shows); drops the rest and the candidates folder (``drop_rest``; else the tiles no miner fired
    on stay there for a later round). Returns counts (per miner when several) and the median top score."""
    import shutil

    miners = [weights] if isinstance(weights, (str, Path)) else list(weights)
    cands = sorted(Path(cand_dir).glob("*.jpg"))
    fired: dict[Path, float] = {}
    per_miner = []
    for w in miners:
        top, n = _miner(w, imgsz, conf, device, labels), 0
        for i in range(0, len(cands), batch):
            chunk = cands[i:i + batch]
            for path, score in zip(chunk, top(chunk)):
                if score > 0:
                    n += 1
                    fired[path] = max(fired.get(path, 0.0), score)
        per_miner.append(n)
    for path in cands:
        if path in fired:
            path.rename(Path(img_dir) / path.name)
            (Path(lab_dir) / f"{path.stem}.txt").write_text("")
    if drop_rest:
        shutil.rmtree(cand_dir, ignore_errors=True)
    scores = sorted(fired.values())
    shas = [miner_sha256(w) for w in miners]
    out = {"hard_negative_tiles": len(fired), "hard_negative_conf": conf,
           "hard_negative_weights_sha256": shas if len(shas) > 1 else shas[0],
           "hard_negative_top_conf_median": round(scores[len(scores) // 2], 3) if scores else None}
    if len(miners) > 1:
        out["hard_negative_tiles_per_miner"] = per_miner
    return out


def write_tiled_layout(out_dir: Path, train: list[Item], val: list[Item], classes: list[str],
                       tile_px: int = 640, overlap: float = 0.2, min_keep: float = 0.5,
                       full_frame: bool = True, empty_keep: float = 1.0, seed: int = 0,
                       hard_negatives: dict | None = None) -> Path:
    """Like :func:`write_yolo_layout`, but training images are full-resolution tiles (small vessels stay small
    objects of a few pixels only if the frame is shrunk; tiles keep them at their native size). The whole frame is
    kept too (``full_frame``) so large, close vessels are learned. Validation keeps whole frames: it is scored
    with the same tiled inference the product runs. ``empty_keep`` (below 1) keeps a seeded sample of the empty
    tiles (a source's own ``empty_keep`` overrides it for its frames: a review export keeps every tile, its dismissed
    spots included); ``hard_negatives`` (``{"weights", "imgsz", "conf", "device"}``) then mines the dropped ones with those
    models (:func:`mine_hard_negatives`). The counts go to ``layout.json`` beside ``data.yaml``.
    """
    import cv2

    out_dir = Path(out_dir)
    write_yolo_layout(out_dir, [], val, classes)
    img_dir, lab_dir = out_dir / "images" / "train", out_dir / "labels" / "train"
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    cand_dir = out_dir / "hard_negative_candidates" if hard_negatives else None
    if cand_dir is not None:
        cand_dir.mkdir(parents=True, exist_ok=True)
    total = {"frames": 0}
    for it in train:
        img = cv2.imread(str(it.image))
        if img is None:
            raise InputError(f"{it.image}: cannot read image")
        stem = f"{it.source}__{it.image.stem}"
        if full_frame:
            link = img_dir / f"{stem}{it.image.suffix.lower()}"
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(it.image.resolve(), link)
            (lab_dir / f"{stem}.txt").write_text("\n".join(it.lines) + ("\n" if it.lines else ""))
            total["frames"] += 1
        c = cut_tiles(img, it.lines, stem, img_dir, lab_dir, tile_px=tile_px, overlap=overlap, min_keep=min_keep,
                      empty_keep=empty_keep if it.empty_keep is None else it.empty_keep, seed=seed, cand_dir=cand_dir,
                      jpeg_quality=92)
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    if cand_dir is not None:
        total.update(mine_hard_negatives(cand_dir, img_dir, lab_dir, **hard_negatives))
    else:
        total.pop("hard_negative_candidates", None)
    (out_dir / "layout.json").write_text(json.dumps(total, indent=1))
    return out_dir / "data.yaml"


if __name__ == "__main__":  # pragma: no cover - quick look: python -m seawatch.vision.trainsets
    m = load_dataset_manifest("vessels")
    items = scan(m)
    tr, va = split(items, set(m["split"]["val_cameras"]))
    print(json.dumps(summary(tr, va), indent=1))
