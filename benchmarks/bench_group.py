"""A model group (``A+B``) with its members side by side and one after the other, on the same tiled frame.

Usage (from the repository root, after ``bash scripts/setup.sh`` and ``seawatch models fetch``)::

    seawatch bench group                                   # coco_yolov5n+fall (both find people), 384 px tiles
    seawatch bench group --args "--model coco_yolov5n+v5_frz90 --tile 384 --rounds 5 --image F.jpg"

Two ways to spend the CPU's threads on a group, measured alternately in one process on one frame tiled as a
source would tile it: ``after`` runs each member with every thread, one member after the other (the group before
2026-11-30); ``side`` gives each member its share of the threads and runs them at the same time. It prints the
median ms per frame, the speed-up, whether both ways find the same boxes (within a pixel; thread counts change
float summation order, not the model) and which way :func:`seawatch.vision.detector.load_detector` chooses for the
group (side by side when the members cost about the same a pass).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_FRAME = "A_boats/shore_w4gnqsqx_1440_2022-07-16_11-26_output_0.jpg"


def build(model: str, threads: int, side: bool):
    """The group ``model`` with ``threads`` onnxruntime threads in all: side by side (each member its share, run at
    the same time) or one after the other (each member all of them)."""
    from seawatch.vision.detector import load_detector
    from seawatch.vision.ensemble import FusedDetector, members_of

    members = members_of(model)
    if members is None:
        raise SystemExit(f"--model {model!r}: a group, written A+B")
    each = max(1, threads // len(members)) if side else threads
    return FusedDetector(model, [load_detector(m, intra_op_threads=each) for m in members], parallel=side)


def measure(model: str, frame: np.ndarray, tile_text: str, rounds: int, threads: int) -> dict:
    from seawatch.vision.detector import load_detector
    from seawatch.vision.tiling import detect_tiled, tile_for

    dets = {"after": build(model, threads, False), "side": build(model, threads, True)}
    spec = tile_for(tile_text, dets["after"])
    times: dict[str, list[float]] = {k: [] for k in dets}
    boxes: dict[str, np.ndarray] = {}
    for det in dets.values():  # warm-up (sessions, thread pools)
        detect_tiled(det, [frame], spec)
    for _ in range(rounds):
        for k, det in dets.items():  # alternately, so drift on the machine hits both alike
            t0 = time.perf_counter()
            out = detect_tiled(det, [frame], spec)[0]
            times[k].append((time.perf_counter() - t0) * 1000)
            boxes[k] = out.xyxy_px[np.lexsort(out.xyxy_px.T[::-1])]
    ms = {k: statistics.median(v) for k, v in times.items()}
    same = boxes["after"].shape == boxes["side"].shape and bool(np.allclose(boxes["after"], boxes["side"], atol=1.0))
    chosen = "side" if load_detector(model, intra_op_threads=threads)._pool is not None else "after"
    return {"model": model, "tile": tile_text, "tile_px": spec.size_px, "threads": threads, "chosen": chosen,
            "ms_after": round(ms["after"], 1), "ms_side": round(ms["side"], 1),
            "speedup": round(ms["after"] / ms["side"], 2) if ms["side"] else None,
            "boxes": int(len(boxes["after"])), "same_boxes": same}


def main(argv: list[str] | None = None) -> int:
    from seawatch import paths
    from seawatch.vision.media import read_image

    ap = argparse.ArgumentParser(prog="seawatch bench group", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="coco_yolov5n+fall", help="a model group, A+B (default: coco_yolov5n+fall)")
    ap.add_argument("--image", default=None, help=f"frame (default: ../shared/media/{DEFAULT_FRAME})")
    ap.add_argument("--tile", default="384", help="tile text as a source's `tile` (default 384)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="onnxruntime threads in all (default: the CPU count)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    path = Path(args.image) if args.image else paths.shared_media_file(DEFAULT_FRAME)
    if path is None:
        print("no --image and no shared media frame to default to", file=sys.stderr)
        return 2
    frame = read_image(path)
    row = measure(args.model, frame, args.tile, max(1, args.rounds), max(1, args.threads))
    if args.json:
        print(json.dumps({"frame": str(path), **row}, indent=1))
        return 0
    h, w = frame.shape[:2]
    print(f"frame: {path} ({w}x{h}), group {args.model}, tiles {args.tile} ({row['tile_px']} px), "
          f"{row['threads']} threads, median of {args.rounds} rounds")
    print(f"{'one after the other':>20s} {'side by side':>13s} {'speed-up':>9s} {'boxes':>6s} same  chosen")
    print(f"{row['ms_after']:17.1f} ms {row['ms_side']:10.1f} ms {row['speedup']:8.2f}x {row['boxes']:6d} "
          f"{'yes ' if row['same_boxes'] else 'NO  '}  {row['chosen']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
