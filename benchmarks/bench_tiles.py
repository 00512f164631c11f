"""Tiled vessel detection with and without skipping the tiles that touch no water, side by side.

Usage (from the repository root, after ``bash scripts/setup.sh`` and ``seawatch models fetch vessel``)::

    seawatch bench tiles                                   # the shared lake-harbour frame, water below y 870
    seawatch bench tiles --args "--image F.jpg --water '0,600 1920,580 1920,1080 0,1080' --tiles auto,auto+flip"

For each tile text it runs the model over every tile and then masks, and with the water mask's tile filter (what
the pipeline does for a source with ``water``), alternately, and prints the crops run, the median ms per frame,
the speed-up and whether the vessels kept are the same boxes. 2 ONNX Runtime threads, as the pipeline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_FRAME = "A_boats/shore_w4gnqsqx_1440_2022-07-16_11-26_output_0.jpg"
DEFAULT_WATER_Y = 870  # that frame's lake: everything below this row


def parse_polygon(text: str) -> list[list[float]]:
    """``"x,y x,y x,y ..."`` -> ``[[x, y], ...]`` (at least 3 points)."""
    try:
        pts = [[float(v) for v in p.split(",")] for p in text.split()]
    except ValueError:
        raise SystemExit(f"--water {text!r}: give points as 'x,y x,y x,y ...'") from None
    if len(pts) < 3 or any(len(p) != 2 for p in pts):
        raise SystemExit(f"--water {text!r}: a polygon needs at least 3 'x,y' points")
    return pts


def measure(det, frame: np.ndarray, tile_text: str, mask, rounds: int) -> dict:
    from seawatch.vision.tiling import detect_tiled, tile_for

    spec = tile_for(tile_text, det)
    crops = [0]
    plain = det.detect

    def counting(images):
        crops[0] += len(images)
        return plain(images)

    det.detect = counting
    times: dict[str, list[float]] = {"all": [], "water": []}
    kept: dict[str, np.ndarray] = {}
    n_crops: dict[str, int] = {}
    try:
        for _ in range(rounds):
            for mode, keep_tile in (("all", None), ("water", mask.covers_tile)):
                crops[0] = 0
                t0 = time.perf_counter()
                out = detect_tiled(det, [frame], spec, keep_tile)[0]
                out = out[mask.keep(out) & (out.label == "vessel")]  # other labels are not the mask's business
                times[mode].append((time.perf_counter() - t0) * 1000)
                n_crops[mode] = crops[0]
                kept[mode] = out.xyxy_px[np.lexsort(out.xyxy_px.T[::-1])]
    finally:
        det.detect = plain
    ms = {k: statistics.median(v) for k, v in times.items()}
    # the same boxes (a crop batched with other neighbours is padded differently: allow a pixel)
    same = kept["all"].shape == kept["water"].shape and bool(np.allclose(kept["all"], kept["water"], atol=1.0))
    return {"tile": tile_text, "crops_all": n_crops["all"], "crops_water": n_crops["water"],
            "ms_all": round(ms["all"], 1), "ms_water": round(ms["water"], 1),
            "speedup": round(ms["all"] / ms["water"], 2) if ms["water"] else None,
            "vessels_kept": int(len(kept["all"])), "same_vessels": same}


def main(argv: list[str] | None = None) -> int:
    from seawatch import paths
    from seawatch.vision.detector import load_detector
    from seawatch.vision.media import read_image
    from seawatch.vision.zones import WaterMask

    ap = argparse.ArgumentParser(prog="seawatch bench tiles", description=__doc__.split("\n")[0])
    ap.add_argument("--image", default=None, help=f"frame (default: ../shared/media/{DEFAULT_FRAME})")
    ap.add_argument("--water", default=None, help="the frame's water as a pixel polygon 'x,y x,y x,y ...' "
                                                  f"(default for the default frame: below y {DEFAULT_WATER_Y})")
    ap.add_argument("--tiles", default="auto;auto,288;auto,288+flip", help="tile texts separated by ';'")
    ap.add_argument("--model", default="vessel", help="a vessel model (default: the trained `vessel`)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    path = Path(args.image) if args.image else paths.shared_media_file(DEFAULT_FRAME)
    if path is None:
        print("no --image and no shared media frame to default to", file=sys.stderr)
        return 2
    frame = read_image(path)
    h, w = frame.shape[:2]
    if args.water:
        water = parse_polygon(args.water)
    elif not args.image:
        water = [[0, DEFAULT_WATER_Y], [w, DEFAULT_WATER_Y], [w, h], [0, h]]
    else:
        print("--water is needed with --image", file=sys.stderr)
        return 2
    mask = WaterMask.from_pixels([water])
    det = load_detector(args.model)
    det.detect([frame])  # warm-up
    rows = [measure(det, frame, t.strip(), mask, max(1, args.rounds)) for t in args.tiles.split(";") if t.strip()]
    if args.json:
        print(json.dumps({"frame": str(path), "water": water, "model": args.model, "results": rows}, indent=1))
        return 0
    print(f"frame: {path} ({w}x{h}), model {args.model}, median of {args.rounds} rounds; water {water}")
    print(f"{'tiles':18s} {'crops':>11s} {'ms all':>9s} {'ms water':>9s} {'speed-up':>9s} {'vessels':>8s} same")
    for r in rows:
        print(f"{r['tile']:18s} {r['crops_all']:4d} -> {r['crops_water']:3d} {r['ms_all']:9.1f} {r['ms_water']:9.1f} "
              f"{r['speedup']:8.2f}x {r['vessels_kept']:8d} {'yes' if r['same_vessels'] else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
