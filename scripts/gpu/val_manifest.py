"""Write a MANIFEST.json (the shared media format ``seawatch evaluate`` reads) for one split of a dataset manifest.

The held-out cameras of ``datasets/vessels.yaml`` are what a fine-tuned vessel model has never seen; scoring them
with ``seawatch evaluate`` puts the trained ``vessel`` model and the baselines (COCO boat class, the published
ship detector) side by side with the product's tiled inference. Images are referenced in place (absolute paths
into the shared folder); the mapped YOLO labels (class 0 = vessel) are written next to the manifest. Frames
without a vessel are marked ``"vessel": false`` (scored as negatives).

    .venv/bin/python scripts/gpu/val_manifest.py [--part val] [--out DIR]
    .venv/bin/seawatch evaluate DIR/MANIFEST.json --no-clips --out vessels_val_report.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def write_split_manifest(dataset: str, part: str, out_dir: Path) -> tuple[Path, dict]:
    from seawatch.vision import trainsets

    manifest = trainsets.load_dataset_manifest(dataset)
    items = trainsets.scan(manifest)
    tr, va = trainsets.split(items, set(manifest.get("split", {}).get("val_cameras", [])))
    chosen = va if part == "val" else tr
    classes = list(manifest["classes"])
    labels = out_dir / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    entries = []
    for it in chosen:
        name = f"{it.source}__{it.image.stem}.txt"
        (labels / name).write_text("\n".join(it.lines) + ("\n" if it.lines else ""))
        gt: dict = {"label_file": f"labels/{name}", "label_classes": {str(i): c for i, c in enumerate(classes)},
                    "camera": it.camera, "boxes": it.n_boxes}
        if not it.lines:
            gt.update({c: False for c in classes})
        entries.append({"file": str(it.image.resolve()), "category": f"{manifest['name']}_{part}",
                        "description": f"{manifest['name']} {part} split, camera {it.camera}, source {it.source}",
                        "ground_truth": gt})
    path = out_dir / "MANIFEST.json"
    path.write_text(json.dumps(entries, indent=1) + "\n")
    return path, trainsets.summary(tr, va)[part]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="vessels")
    ap.add_argument("--part", choices=("val", "train"), default="val")
    ap.add_argument("--out", default=None, help="folder (default: <cache>/eval/<dataset>_<part>)")
    args = ap.parse_args(argv)
    from seawatch import paths
    from seawatch.errors import SeawatchError

    out = Path(args.out) if args.out else paths.cache_dir() / "eval" / f"{args.dataset}_{args.part}"
    try:
        path, summary = write_split_manifest(args.dataset, args.part, out)
    except SeawatchError as exc:
        print(f"val_manifest: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {summary['images']} images, {summary['boxes']} vessel boxes, {summary['negatives']} negatives, "
          f"cameras {', '.join(summary['cameras'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
