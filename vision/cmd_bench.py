"""``seawatch bench``: benchmarks that print side-by-side ratios.

``detector``: per model, one real 1080p frame (a shore camera frame from the shared media, else a synthetic one)
at the model's input size, measured alternately in one process:

- stock: the same weights through their own framework's predict (ultralytics / YOLOv5), as shipped (ultralytics
  limits torch to ``min(8, cores - 1)`` threads), and again with torch allowed both cores (``torch2t``);
- ort fp32: Seawatch's ONNX Runtime path, one session, 2 intra-op threads;
- int8 2x1t: the INT8 variant as two single-thread sessions working on alternate frames (throughput per frame);
- bf16: the fp32 ONNX compiled by OpenVINO in bf16, 2 threads.
Pre- and post-processing time is reported as a share of inference time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import numpy as np

from seawatch import paths
from seawatch.errors import ModelError, SeawatchError

HELP = "benchmarks printing side-by-side ratios (detector, geo, streams, search, tiles, group, workers)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", default="detector", choices=["detector", "geo", "streams", "search", "tiles",
                                                                  "group", "workers"],
                   help="what to benchmark: detector (default), geo (drone geolocation), streams (decode, gating), "
                        "search (event store at scale), tiles (vessel tiles with and without water skipping), "
                        "group (a model group's members side by side and one after the other), workers (the demo's "
                        "cameras analysed by 1 and by more worker threads: rate and lag per camera)")
    p.add_argument("--args", dest="script_args", default="",
                   help='options for the geo / streams / tiles / group / workers benchmark scripts, e.g. --args "--trials 200"')
    p.add_argument("--models", default="", help="comma-separated model names (default: all provisioned)")
    p.add_argument("--rounds", type=int, default=8, help="measured rounds per engine (default 8)")
    p.add_argument("--imgsz", type=int, default=None, help="input size (default: each model's own)")
    p.add_argument("--image", default=None, help="benchmark frame (default: a 1080p shore frame)")
    p.add_argument("--no-stock", action="store_true", help="skip the PyTorch reference (no torch needed)")
    p.add_argument("--json", action="store_true", help="print results as JSON")


def bench_frame(path: str | None) -> tuple[np.ndarray, str]:
    from seawatch.vision.media import read_image

    if path:
        return read_image(path), path
    media = paths.shared_media_dir()
    if media is not None:
        cands = sorted(media.glob("A_boats/*_1080_*.jpg"))
        if cands:
            return read_image(cands[0]), str(cands[0])
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    return img, "synthetic 1920x1080 noise"


def _median_ms(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1e6 if samples_ns else float("nan")


def _two_session_ms(dets, frame: np.ndarray, frames_each: int) -> float:
    """Per-frame wall time of two detectors working in parallel threads on ``frames_each`` frames each."""
    barrier = threading.Barrier(len(dets) + 1)

    def work(d):
        barrier.wait()
        for _ in range(frames_each):
            d.detect([frame])

    threads = [threading.Thread(target=work, args=(d,)) for d in dets]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter_ns()
    for t in threads:
        t.join()
    return (time.perf_counter_ns() - t0) / 1e6 / (frames_each * len(dets))


def bench_model(name: str, frame: np.ndarray, rounds: int, imgsz: int | None, stock: bool) -> dict:
    from seawatch.vision import registry
    from seawatch.vision.detector import OnnxDetector

    m = registry.get_manifest(name)
    size = imgsz or m.defaults.imgsz
    lock = registry.read_lock(name) or {}
    variants = lock.get("variants", {})
    engines: dict[str, callable] = {}
    timings: dict[str, list[int]] = {}
    pre_post: list[float] = []

    fp32 = OnnxDetector(m, registry.resolve_onnx(name, "fp32"), imgsz=size, intra_op_threads=2)

    def run_fp32():
        fp32.detect([frame])
        t = fp32.last_timing
        pre_post.append((t.pre_ns + t.post_ns) / max(t.infer_ns, 1))
        return t.total_ns

    engines["ort_fp32"] = run_fp32
    ref = None
    if stock:
        from seawatch.vision.export.reference import load_reference

        ref = load_reference(name)
        def stock_default():
            t0 = time.perf_counter_ns()
            ref.predict([frame], m.defaults.conf, m.defaults.iou, size)
            return time.perf_counter_ns() - t0

        def stock_2t():
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(2)
            try:
                t0 = time.perf_counter_ns()
                ref.predict([frame], m.defaults.conf, m.defaults.iou, size)
                return time.perf_counter_ns() - t0
            finally:
                torch.set_num_threads(before)

        engines["stock"] = stock_default
        engines["stock_torch2t"] = stock_2t

    int8 = None
    if "int8" in variants:
        p = registry.resolve_onnx(name, "int8")
        int8 = [OnnxDetector(m, p, imgsz=size, intra_op_threads=1) for _ in range(2)]
        int8_lat = OnnxDetector(m, p, imgsz=size, intra_op_threads=2)

        def run_int8():
            int8_lat.detect([frame])
            return int8_lat.last_timing.total_ns

        engines["int8_1x2t"] = run_int8
    bf16 = None
    try:
        bf16 = OnnxDetector(m, registry.resolve_onnx(name, "fp32"), imgsz=size, providers=["openvino-bf16"],
                            intra_op_threads=2)
    except SeawatchError:
        bf16 = None
    if bf16 is not None:
        def run_bf16():
            bf16.detect([frame])
            return bf16.last_timing.total_ns

        engines["ov_bf16"] = run_bf16

    for fn in engines.values():  # warm-up
        fn()
    for _ in range(rounds):  # alternate engines so drift hits all of them alike
        for key, fn in engines.items():
            timings.setdefault(key, []).append(fn())
    res = {k: round(_median_ms(v), 1) for k, v in timings.items()}
    if int8 is not None:
        for d in int8:
            d.detect([frame])
        res["int8_2x1t"] = round(min(_two_session_ms(int8, frame, max(2, rounds // 2)) for _ in range(2)), 1)
    res["pre_post_share_of_infer"] = round(statistics.median(pre_post), 3)
    res["imgsz"] = size
    res["input_hw"] = list(fp32._pre([frame]).input_hw)  # the letterboxed shape actually run
    return res


def _ratio(base: float | None, x: float | None) -> str:
    if not base or not x or base != base or x != x:
        return "   -  "
    return f"{base / x:5.2f}x"


def _script(name: str, argv: list[str]) -> int:
    """Run ``benchmarks/<name>.py``'s ``main(argv)`` (the scripts live beside the package in a source checkout)."""
    import runpy

    path = paths.REPO_ROOT / "benchmarks" / f"{name}.py"
    if not path.is_file():
        raise SeawatchError(f"{path} is missing: the {name} benchmark needs a source checkout")
    return int(runpy.run_path(str(path), run_name="seawatch_bench")["main"](argv) or 0)


def run(args: argparse.Namespace) -> int:
    from seawatch.vision import registry

    import shlex

    if args.what in ("geo", "streams", "tiles", "group", "workers"):
        return _script(f"bench_{args.what}", shlex.split(args.script_args))
    if args.what == "search":
        from seawatch.service import bench_search

        return int(bench_search.main(shlex.split(args.script_args)) or 0)

    from seawatch.vision.cmd_detect import _positive, check_imgsz_arg

    check_imgsz_arg(args.imgsz)  # 100000 px would ask for tens of GiB before the first round
    _positive("rounds", args.rounds)
    names = [n for n in args.models.split(",") if n] or [n for n in registry.load_manifests()
                                                      if registry.is_provisioned(n)]
    if not names:
        raise ModelError("no provisioned models: run `seawatch models fetch` first")
    frame, src = bench_frame(args.image)
    results = {}
    for name in names:
        results[name] = bench_model(name, frame, args.rounds, args.imgsz, not args.no_stock)
    if args.json:
        print(json.dumps({"frame": src, "frame_hw": list(frame.shape[:2]), "results": results}, indent=1))
        return 0
    print(f"frame: {src} ({frame.shape[1]}x{frame.shape[0]}), median ms per frame, ratios vs stock predict")
    cols = ["stock", "stock_torch2t", "ort_fp32", "int8_1x2t", "int8_2x1t", "ov_bf16"]
    print(f"{'model':16s} {'input':>10s} " + " ".join(f"{c:>16s}" for c in cols) + "  pre+post/infer")
    for name, r in results.items():
        base = r.get("stock")
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:7.1f} {_ratio(base, v)}" if v else f"{'-':>16s}")
        hw = "x".join(str(v) for v in r["input_hw"][::-1])
        print(f"{name:16s} {hw:>10s} " + " ".join(f"{c:>16s}" for c in cells) + f"  {r['pre_post_share_of_infer']:.1%}")
    return 0
