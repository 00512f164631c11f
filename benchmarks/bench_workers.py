"""The main job's cameras analysed by one worker thread and by more, side by side (``analysis_workers``).

Usage (from the repository root, after ``bash scripts/setup.sh`` and ``seawatch models fetch``, with the shared media)::

    seawatch bench workers                                  # 1 vs 2 workers, 40 s each, twice, alternating
    seawatch bench workers --args "--workers 1,2,4 --seconds 60 --rounds 1"

It runs the real ``Service`` on the embedded demo's configuration (``seawatch serve`` without a config: the tiled
harbour camera, the quay fire camera, the yard fire-lane camera, the simulated drone with its video, the AIS log)
once per worker count, alternating, with recording on as in the demo. For every camera it measures the frames
analysed per second against the ``analysis_fps`` asked for, and the lag of each analysed frame: from its capture
time (live files are stamped on the wall clock as they play) to the end of its analysis (events emitted). The last
line prints, per camera, each worker count's median and 90th-percentile lag and rate and their ratios to one worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_streams import cpu_s, emit  # noqa: E402 - the benchmarks' process CPU time and JSON-line output


def settings(data_dir: Path, workers: int):
    import socket

    from seawatch.paths import shared_media_dir
    from seawatch.service.config import ServeConfig, default_settings_data
    from seawatch.service.demo import harbour_clip

    media = shared_media_dir()
    if media is None:
        raise SystemExit("bench workers: needs the shared media (../shared/media or $SEAWATCH_SHARED/media)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        drone_port = s.getsockname()[1]
    data = default_settings_data(media, data_dir=str(data_dir / f"w{workers}"), drone_port=drone_port,
                                 harbour_clip=harbour_clip(media, data_dir))
    data["analysis_workers"] = workers
    return ServeConfig.model_validate(data)


def measure(data_dir: Path, workers: int, seconds: float, warmup_s: float) -> dict:
    """One run of the service: per source, [(capture_ns, done_ns)] of the frames analysed after the warm-up."""
    from seawatch.service.runner import Service

    svc = Service(settings(data_dir, workers)).start()
    seen: dict[str, list[tuple[int, int]]] = {s.id: [] for s in svc.settings.sources}
    lock = threading.Lock()
    real = svc.pipeline.process
    t_start = time.monotonic()

    def timed(sid, capture_ns, image, locator=None):
        out = real(sid, capture_ns, image, locator)
        if time.monotonic() - t_start >= warmup_s:
            with lock:
                seen[sid].append((capture_ns, time.time_ns()))
        return out

    svc.pipeline.process = timed
    try:
        time.sleep(warmup_s)
        c0, t0 = cpu_s(), time.monotonic()
        time.sleep(seconds)
        cores = (cpu_s() - c0) / (time.monotonic() - t0)
    finally:
        svc.stop()
    wanted = {s.id: s.analysis_fps for s in svc.settings.sources}
    out = {"workers": workers, "cores": round(cores, 2), "sources": {}}
    for sid, rows in seen.items():
        lags = sorted((done - cap) / 1e6 for cap, done in rows)
        out["sources"][sid] = {
            "asked_fps": wanted[sid], "analysed_fps": round(len(rows) / seconds, 2),
            "lag_ms_p50": round(statistics.median(lags), 1) if lags else None,
            "lag_ms_p90": round(lags[int(0.9 * (len(lags) - 1))], 1) if lags else None}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, the first is the reference (1,2)")
    ap.add_argument("--seconds", type=float, default=40.0, help="measured seconds per run (40)")
    ap.add_argument("--warmup", type=float, default=12.0, help="seconds before measuring: models, drone take-off (12)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per worker count, alternating (2)")
    args = ap.parse_args(argv)
    counts = [int(v) for v in args.workers.split(",") if v.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit("--workers: give counts >= 1, e.g. 1,2")
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    runs: dict[int, list[dict]] = {w: [] for w in counts}
    with tempfile.TemporaryDirectory(prefix="seawatch-bench-workers-") as tmp:
        for _ in range(args.rounds):
            for w in counts:
                r = measure(Path(tmp), w, args.seconds, args.warmup)
                runs[w].append(r)
                emit(bench="workers", **r)
    ref = counts[0]

    def med(w: int, sid: str, key: str):
        vals = [r["sources"][sid][key] for r in runs[w] if r["sources"][sid][key] is not None]
        return round(statistics.median(vals), 2) if vals else None

    summary: dict = {"cpu_count": os.cpu_count(), "seconds": args.seconds, "rounds": args.rounds,
                     "cores": {w: round(statistics.median(r["cores"] for r in runs[w]), 2) for w in counts}, "sources": {}}
    for sid in runs[ref][0]["sources"]:
        row: dict = {"asked_fps": runs[ref][0]["sources"][sid]["asked_fps"]}
        for w in counts:
            for key in ("analysed_fps", "lag_ms_p50", "lag_ms_p90"):
                row[f"{key}_w{w}"] = med(w, sid, key)
            if w != ref:
                for key in ("lag_ms_p50", "lag_ms_p90", "analysed_fps"):
                    a, b = med(ref, sid, key), med(w, sid, key)
                    row[f"{key}_ratio_w{w}_to_w{ref}"] = round(b / a, 2) if a and b else None
        summary["sources"][sid] = row
    emit(bench="workers", summary=summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
