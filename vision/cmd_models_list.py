"""``seawatch models list [--json]``: the registry with what is provisioned in the cache."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "list registered models: labels, input size, provisioned or not, size on disk, provenance, licence"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    parser.add_argument("--verify", action="store_true", help="hash the ONNX files against their locks (slower)")


def _size_bytes(folder) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _provenance(m, lock: dict) -> str:
    """package==version for wheels; for files the path actually used (from the lock), else the expanded one."""
    from seawatch.vision import registry

    if m.source.kind == "pypi_wheel":
        return m.provenance
    used = (lock.get("source") or {}).get("path")
    if used:
        return used
    if m.source.paths:
        return str(registry.expand_path(m.source.paths[0]))
    return m.provenance


def collect(verify: bool = False) -> list[dict]:
    """One row per registered model (sorted by name)."""
    from seawatch.errors import ChecksumMismatch, ModelError
    from seawatch.vision import registry

    builtin = {p.stem for p in registry.paths.MANIFEST_DIR.glob("*.yaml")}
    rows = []
    for name, m in sorted(registry.load_manifests().items()):
        lock = registry.read_lock(name) or {}
        status = "no"
        try:
            registry.resolve_onnx(name, "fp32", verify=verify)
            status = "yes" if lock.get("manifest_digest") == m.digest() else "stale"
        except ChecksumMismatch:
            status = "corrupt"
        except ModelError:
            status = "no"
        rows.append({
            "name": name,
            "builtin": name in builtin,
            "labels": list(m.seawatch_labels),
            "input_size_px": list(m.input_size_px),
            "provisioned": status,
            "variants": sorted((lock.get("variants") or {}).keys()) if status != "no" else [],
            "size_bytes": _size_bytes(registry.model_dir(name)),
            "provenance": _provenance(m, lock),
            "licence": m.licence,
            "family": m.family,
            "output_format": m.output_format,
        })
    return rows


def run(args: argparse.Namespace) -> int:
    rows = collect(verify=args.verify)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models registered")
        return 0
    table = [("NAME", "LABELS", "INPUT", "PROVISIONED", "SIZE", "PROVENANCE", "LICENCE")]
    for r in rows:
        h, w = r["input_size_px"]
        prov = r["provisioned"] + (f" ({','.join(r['variants'])})" if r["variants"] else "")
        lic = r["licence"].split(" (")[0].split(";")[0]  # the headline; --json has the full text
        table.append((r["name"], ",".join(r["labels"]), f"{w}x{h}", prov,
                      _human(r["size_bytes"]) if r["size_bytes"] else "-", r["provenance"], lic))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    if not any(r["name"] == "vessel" and r["provisioned"] == "yes" for r in rows):
        print(VESSEL_HINT, file=sys.stderr)
    return 0


# No published weights find a shore camera's small boats, so the vessel model is trained on each installation (the
# weights are a build artefact, never in git); until it is, the COCO model's boat class is what finds vessels.
VESSEL_HINT = (
    "note: no `vessel` model on this machine yet (a source's default, coco_yolov5n, finds boats with its COCO boat "
    "class,\n  about a third of a shore camera's distant ones; `tile: 384` on the source finds more); train one:\n"
    "  with a GPU:  seawatch models train vessels --train-too all --device 0 --tile-px 384   (or scripts/gpu/README.md)\n"
    "  on a CPU (models/VESSEL.md): 90 minutes with --engine yolov5 --freeze 10 --time-h 1.5, then run it\n"
    "  fused with COCO as one model group, models: [coco_yolov5n+NAME] with tile: 384 (better than either alone);\n"
    "  --train-too all trains on every camera of datasets/vessels.yaml")
