"""Build ``.gpu/``: everything a one-shot GPU training run of the vessel model needs, small enough to travel.

Runs here (CPU), with the project's venv. Writes, under ``--out`` (default ``<repo>/.gpu``):

- ``frames/{train,val}/``: every frame of ``datasets/vessels.yaml`` at full resolution, re-encoded as WebP at
  ``--quality``, with its YOLO label file (classes mapped by the manifest), split by the manifest's held-out
  cameras. Tiles are cut there, on the device, by ``train_vessels.py`` with the tiled inference's own grid (tiles
  overlap by 20 %, so carrying frames is about half the bytes of carrying tiles).
- ``base/coco_yolov5n_as_yolov5u.pt``: the COCO YOLOv5n checkpoint transferred into ultralytics' anchor-free
  YOLOv5n (``train.base_checkpoint``, as ``seawatch models train`` does).
- ``provenance.json``: dataset manifest sha256, data fingerprint, split summary, tile settings (applied on the
  device), seed, base weights sha256, the packed frames' sha256 and counts.

The wheels (``whl/``) are fetched by ``pack_vessels.sh`` (pip download) before this runs; their sha256 go into
``provenance.json`` too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("pack_vessels")


def pack_frames(items, part: str, out: Path, *, quality: int) -> dict:
    """Write one split's frames (full resolution, WebP at ``quality``) and their mapped YOLO labels."""
    import cv2

    from seawatch.errors import InputError

    d = out / part
    d.mkdir(parents=True, exist_ok=True)
    counts = {"frames": 0, "boxes": 0, "negatives": 0, "bytes": 0}
    for it in items:
        img = cv2.imread(str(it.image))
        if img is None:
            raise InputError(f"{it.image}: cannot read image")
        ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, quality])
        if not ok:
            raise InputError(f"{it.image}: WebP encoding failed")
        stem = f"{it.source}__{it.image.stem}"
        (d / f"{stem}.webp").write_bytes(buf.tobytes())
        (d / f"{stem}.txt").write_text("\n".join(it.lines) + ("\n" if it.lines else ""))
        counts["frames"] += 1
        counts["boxes"] += it.n_boxes
        counts["negatives"] += int(not it.lines)
        counts["bytes"] += len(buf)
    return counts


def tree_sha256(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order (identifies the packed data exactly)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix != ".cache":
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output folder (default: <repo>/.gpu)")
    ap.add_argument("--dataset", default="vessels", help="dataset manifest name or path (default: vessels)")
    ap.add_argument("--tile-px", type=int, default=640)
    ap.add_argument("--overlap", type=float, default=0.2, help="tile overlap (the tiled inference's default)")
    ap.add_argument("--min-keep", type=float, default=0.5, help="a box is kept in a tile holding this much of it")
    ap.add_argument("--empty-keep", type=float, default=0.25,
                    help="fraction of tiles without vessels kept (seeded per tile; applied on the device)")
    ap.add_argument("--quality", type=int, default=75, help="WebP quality of the re-encoded frames")
    ap.add_argument("--seed", type=int, default=0, help="seed of the empty-tile sample and of the training run")
    ap.add_argument("--base", default="coco_yolov5n", help="base weights (as `seawatch models train --base`)")
    ap.add_argument("--max-mib", type=float, default=55.0, help="fail when the whole output (wheels too) exceeds this")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from seawatch import paths
    from seawatch.errors import SeawatchError
    from seawatch.vision import registry, trainsets
    from seawatch.vision.export.train import base_checkpoint

    out = Path(args.out) if args.out else paths.REPO_ROOT / ".gpu"
    try:
        manifest = trainsets.load_dataset_manifest(args.dataset)
        items = trainsets.scan(manifest)
        val_cameras = set(manifest.get("split", {}).get("val_cameras", []))
        tr, va = trainsets.split(items, val_cameras)
        if not tr or not va:
            raise SeawatchError(f"dataset {args.dataset!r}: empty train or val split")
        t0 = time.monotonic()
        data = out / "frames"
        if data.exists():
            import shutil

            shutil.rmtree(data)
        counts = {"train": pack_frames(tr, "train", data, quality=args.quality),
                  "val": pack_frames(va, "val", data, quality=args.quality)}
        (data / "classes.json").write_text(json.dumps(list(manifest["classes"])) + "\n")
        base_dir = out / "base"
        base_dir.mkdir(parents=True, exist_ok=True)
        start_pt, base_facts = base_checkpoint(args.base, base_dir)
        if start_pt.parent != base_dir:  # a .pt / registry weights path: carry a copy
            import shutil

            target = base_dir / start_pt.name
            shutil.copyfile(start_pt, target)
            start_pt = target
        manifest_path = Path(manifest["_path"])
        prov = {
            "dataset": manifest["name"],
            "dataset_manifest": str(manifest_path.relative_to(paths.REPO_ROOT)) if manifest_path.is_relative_to(
                paths.REPO_ROOT) else str(manifest_path),
            "dataset_manifest_sha256": registry.sha256_file(manifest_path),
            "dataset_fingerprint": trainsets.fingerprint(items),
            "split": trainsets.summary(tr, va),
            "val_cameras": sorted(val_cameras),
            "tiles": {"tile_px": args.tile_px, "overlap": args.overlap, "min_keep": args.min_keep,
                      "empty_keep": args.empty_keep,
                      "full_frames": f"also trained on, long side downscaled to {args.tile_px} px"},
            "frames_webp_quality": args.quality,
            "packed": counts,
            "packed_sha256": tree_sha256(data),
            "seed": args.seed,
            "base_weights": f"base/{start_pt.name}",
            "base_weights_sha256_transferred": registry.sha256_file(start_pt),
            **base_facts,
            "wheels": {w.name: registry.sha256_file(w) for w in sorted((out / "whl").glob("*.whl"))},
            "packed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out / "provenance.json").write_text(json.dumps(prov, indent=1) + "\n")
    except SeawatchError as exc:
        print(f"pack_vessels: {exc}", file=sys.stderr)
        return 2
    size_mib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    log.info("packed %s in %.0f s: train %d frames (%d boxes), val %d frames (%d boxes); .gpu holds %.1f MiB",
             out, time.monotonic() - t0, counts["train"]["frames"], counts["train"]["boxes"],
             counts["val"]["frames"], counts["val"]["boxes"], size_mib)
    if size_mib > args.max_mib:
        print(f"pack_vessels: {out} holds {size_mib:.1f} MiB (> --max-mib {args.max_mib}); lower --quality",
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
