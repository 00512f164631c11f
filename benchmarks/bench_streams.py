"""Stream ingest benchmarks: decode cost, glass-to-frame latency, idle CPU with motion gating, capacity, memory.

Usage (from the repository root, after ``bash scripts/setup.sh``)::

    .venv/bin/python benchmarks/bench_streams.py decode            # CPU per 25 fps stream, 720p/1080p, threads, modes
    .venv/bin/python benchmarks/bench_streams.py latency           # glass-to-frame on loopback RTSP (/live barcode)
    .venv/bin/python benchmarks/bench_streams.py reconnect         # kill -9 + restart: seconds to the next frame
    .venv/bin/python benchmarks/bench_streams.py idle --streams 8  # CPU per idle 1080p25 RTSP stream, gated
    .venv/bin/python benchmarks/bench_streams.py soak --streams 8 --seconds 120   # RSS growth, looping files
    .venv/bin/python benchmarks/bench_streams.py consume --streams 8  # CPU: BGR for every frame vs analysed ones
    .venv/bin/python benchmarks/bench_streams.py all

Each prints one JSON object per measurement on stdout. CPU is this process's user+system time (all threads)
divided by wall time, so 1.0 = one core busy. Test media are generated with Debian's ffmpeg into a temp folder.
The RTSP server (``tests/rtsp_server.py``) runs under /usr/bin/python3 and its CPU is not counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "rtsp_server.py"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def make_media(folder: Path, gop: int = 50) -> dict[str, Path]:
    """Camera-like clips: moving test pattern and a still scene with sensor noise, ``gop`` frames per keyframe
    (50 = 2 s, a common camera default), ~4 Mbit/s at 1080p."""
    out = {}
    specs = {
        "720p": ("testsrc2=size=1280x720:rate=25", "2M"),
        "1080p": ("testsrc2=size=1920x1080:rate=25", "4M"),
        "1080p_still": ("testsrc2=size=1920x1080:rate=25,trim=end_frame=1,loop=loop=-1:size=1,noise=alls=3:allf=t",
                        "4M"),
    }
    for name, (src, rate) in specs.items():
        path = folder / f"{name}_g{gop}.mp4"
        if not path.exists():
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src,
                            "-t", "20", "-c:v", "libx264", "-preset", "veryfast", "-b:v", rate, "-maxrate", rate,
                            "-bufsize", rate, "-g", str(gop), "-bf", "0", "-pix_fmt", "yuv420p", str(path)],
                           check=True, timeout=600)
        out[name] = path
    return out


class Server:
    def __init__(self, clip: Path | None, paths: list[str], live: bool = False) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = ["/usr/bin/python3", str(SERVER), "--port", str(self.port)]
        if clip is not None:
            args += ["--file", str(clip)]
            for p in paths:
                args += ["--path", p]
        if live:
            args.append("--live")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        if not ready or not self.proc.stdout.readline().startswith("READY"):
            self.close()
            raise RuntimeError("RTSP server did not start")

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------------------------------- decode
def bench_decode(media: dict[str, Path], seconds_of_video: float = 10.0) -> None:
    """CPU to decode one 25 fps stream (as a fraction of a core), per resolution, thread count and mode."""
    import av

    for name in ("720p", "1080p", "1080p_still"):
        for threads in (1, 2):
            for mode in ("all", "keyframes"):
                for convert in ((False, True) if mode == "all" else (False,)):
                    with av.open(str(media[name])) as c:
                        s = c.streams.video[0]
                        s.codec_context.thread_count = threads
                        s.codec_context.thread_type = "SLICE" if threads == 1 else "AUTO"
                        n_frames = 0
                        t0, c0 = time.perf_counter(), cpu_s()
                        for pkt in c.demux(s):
                            if pkt.pts is not None and float(pkt.pts * s.time_base) >= seconds_of_video:
                                break
                            if mode == "keyframes" and not pkt.is_keyframe:
                                continue
                            for f in s.codec_context.decode(pkt):
                                n_frames += 1
                                if convert:
                                    f.to_ndarray(format="bgr24")
                        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
                    emit(bench="decode", video=name, threads=threads, mode=mode, bgr_convert=convert,
                         frames=n_frames, cpu_s=round(cpu, 3), wall_s=round(wall, 3),
                         cores_per_25fps_stream=round(cpu / seconds_of_video, 4),
                         max_realtime_streams_per_2_cores=round(2 * seconds_of_video / cpu, 1))


# --------------------------------------------------------------------------------------------------- latency
def decode_barcode_ms(image: np.ndarray) -> int | None:
    row = image[16, :, 1].astype(np.int32)  # green channel, middle of the 32 barcode rows
    w = image.shape[1]
    cell = w // 48
    bits = [(row[i * cell + cell // 4 : (i + 1) * cell - cell // 4].mean() > 128) for i in range(48)]
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return value


def bench_latency(seconds: float = 10.0) -> None:
    """Glass-to-frame on loopback: the server burns wall time (ms) into the picture; the reader decodes it."""
    from seawatch.streams.source import Source, SourceConfig

    srv = Server(None, [], live=True)
    try:
        for transport in ("tcp", "udp"):
            src = Source(SourceConfig(f"live-{transport}", srv.url("live"), rtsp_transport=transport)).start()
            lat, cap_lat, recv_lat = [], [], []
            t_end = time.monotonic() + seconds + 2
            t_skip = time.monotonic() + 2  # skip the first 2 s (connect burst)
            while time.monotonic() < t_end:
                f = src.read(0.5)
                if f is None or time.monotonic() < t_skip:
                    continue
                ms = decode_barcode_ms(f.image)
                got_ms = time.time_ns() / 1e6
                if ms and abs(got_ms - ms) < 10_000:
                    lat.append(got_ms - ms)
                    cap_lat.append(f.capture_time_ns / 1e6 - ms)
                    recv_lat.append(f.receive_time_ns / 1e6 - ms)
            src.stop()
            a = np.array(lat)
            emit(bench="latency", transport=transport, frames=len(a),
                 glass_to_frame_ms_median=round(float(np.median(a)), 1) if len(a) else None,
                 glass_to_frame_ms_p95=round(float(np.percentile(a, 95)), 1) if len(a) else None,
                 capture_time_minus_true_ms_median=round(float(np.median(cap_lat)), 1) if cap_lat else None,
                 receive_time_minus_true_ms_median=round(float(np.median(recv_lat)), 1) if recv_lat else None)
    finally:
        srv.close()


# --------------------------------------------------------------------------------------------------- reconnect
def bench_reconnect(media: dict[str, Path], cycles: int = 5, outage_s: float = 2.0) -> None:
    """Server killed with SIGKILL and restarted on the same port: seconds from its restart to the next frame."""
    from seawatch.streams.source import Source, SourceConfig

    srv = Server(media["720p"], ["cam1"])
    port = srv.port
    src = Source(SourceConfig("r", srv.url("cam1"), read_timeout_s=2.0, open_timeout_s=3.0)).start()
    times = []
    try:
        while src.read(5.0) is None:
            pass
        for _ in range(cycles):
            srv.proc.kill()
            srv.proc.wait()
            time.sleep(outage_s)
            srv = _restart(media["720p"], port)
            t0, t0_ns = time.monotonic(), time.time_ns()
            while time.monotonic() - t0 < 30:
                f = src.read(0.1)
                if f is not None and f.receive_time_ns > t0_ns:  # not a frame queued before the kill
                    break
            times.append(time.monotonic() - t0)
            time.sleep(1.0)
    finally:
        src.stop()
        srv.close()
    emit(bench="reconnect", cycles=cycles, outage_s=outage_s, first_frame_after_restart_s=[round(t, 2) for t in times],
         max_s=round(max(times), 2), median_s=round(float(np.median(times)), 2))


def _restart(clip: Path, port: int) -> Server:
    srv = Server.__new__(Server)
    srv.port = port
    deadline = time.monotonic() + 10
    while True:
        srv.proc = subprocess.Popen(["/usr/bin/python3", str(SERVER), "--port", str(port), "--file", str(clip),
                                     "--path", "cam1"], stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([srv.proc.stdout], [], [], 5)
        if ready and srv.proc.stdout.readline().startswith("READY"):
            return srv
        srv.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"RTSP server did not restart on port {port}")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------------- idle
def bench_idle(media: dict[str, Path], streams: int = 8, seconds: float = 20.0,
               configs=(("all", False), ("all", True), ("auto", True)), gop: int = 50) -> None:
    """CPU per idle 1080p25 RTSP stream: full decode + gate vs keyframe-only decode while idle ("auto")."""
    from seawatch.streams.motion import MotionGate
    from seawatch.streams.source import Source, SourceConfig, SourceGroup

    paths = [f"cam{i}" for i in range(streams)]
    srv = Server(media["1080p_still"], paths)
    try:
        for decode, gated in configs:
            group = SourceGroup()
            for p in paths:
                gate = MotionGate(min_interval_s=1.0) if gated else None
                group.add(Source(SourceConfig(p, srv.url(p), decode=decode, idle_keyframes_after_s=2.0,
                                              queue_size=2), gate=gate))
            group.start()
            time.sleep(5)  # connect, and let "auto" settle into keyframe decoding
            before = {k: v.frames_queued for k, v in group.status().items()}
            t0, c0 = time.perf_counter(), cpu_s()
            deadline = t0 + seconds
            analysed = 0
            while time.perf_counter() < deadline:  # the consumer: takes the newest frame of each source
                frames = group.latest()
                analysed += len(frames)
                time.sleep(0.05)
            wall, cpu = time.perf_counter() - t0, cpu_s() - c0
            status = group.status()
            group.stop()
            delivered = sum(v.frames_queued - before[k] for k, v in status.items())
            emit(bench="idle", streams=streams, video=f"1080p25 still + sensor noise, GOP {gop}", decode=decode,
                 gated=gated,
                 cpu_cores=round(cpu / wall, 3), cores_per_stream=round(cpu / wall / streams, 4),
                 frames_to_consumer_per_stream_s=round(delivered / wall / streams, 2),
                 online=sum(v.state.value == "online" for v in status.values()),
                 decode_modes=sorted({v.decode_mode for v in status.values()}),
                 est_streams_per_2_cores=round(2 / (cpu / wall / streams), 1))
    finally:
        srv.close()


# --------------------------------------------------------------------------------------------------- soak
def bench_soak(media: dict[str, Path], streams: int = 8, seconds: float = 120.0) -> None:
    """RSS over time with N looping real-time file sources, each with a 30 s pre-event ring of packets."""
    from seawatch.streams.motion import MotionGate
    from seawatch.streams.packets import PacketRing
    from seawatch.streams.source import Source, SourceConfig, SourceGroup

    group = SourceGroup()
    rings = []
    for i in range(streams):
        ring = PacketRing(max_age_s=30)
        rings.append(ring)
        group.add(Source(SourceConfig(f"f{i}", str(media["720p"]), loop=True, pace="realtime", decode="auto",
                                      idle_keyframes_after_s=5.0), gate=MotionGate(min_interval_s=1.0), ring=ring))
    group.start()
    t0 = time.monotonic()
    samples = []
    warm_rss = None
    while time.monotonic() - t0 < seconds:
        group.latest()
        time.sleep(0.1)
        el = time.monotonic() - t0
        if warm_rss is None and el > 35:  # rings full after 30 s
            warm_rss = rss_mb()
        if not samples or el - samples[-1][0] >= 10:
            samples.append((el, rss_mb()))
    status = group.status()
    group.stop()
    emit(bench="soak", streams=streams, seconds=seconds, rss_mb=[(round(t), round(m, 1)) for t, m in samples],
         rss_growth_after_warmup_mb=round(samples[-1][1] - warm_rss, 1) if warm_rss else None,
         ring_mb=round(sum(r.size_bytes for r in rings) / 2**20, 1),
         frames_decoded=sum(v.frames_decoded for v in status.values()),
         drops=sum(v.drops for v in status.values()))


# --------------------------------------------------------------------------------------------------- consume
def bench_consume(media: dict[str, Path], streams: int = 8, seconds: float = 10.0, rounds: int = 2,
                  analysis_fps: float = 2.0) -> None:
    """CPU of N 1080p25 RTSP readers + one consumer at ``analysis_fps``, alternating in one run: every decoded frame
    converted to BGR (what readers did before frames were queued unconverted) vs only the frames taken for analysis
    (``FrameScheduler`` with ``AnalysisRate.due``, as the analysis workers take them). Prints cores for each and their ratio."""
    from types import SimpleNamespace

    from seawatch.streams.source import FrameScheduler, Source, SourceConfig, SourceGroup
    from seawatch.vision.pipeline import AnalysisRate

    paths = [f"cam{i}" for i in range(streams)]
    srv = Server(media["1080p"], paths)
    cores: dict[str, list[float]] = {"every_frame_bgr": [], "analysed_only": []}
    try:
        for _ in range(rounds):
            for mode in cores:
                group = SourceGroup()
                for p in paths:
                    group.add(Source(SourceConfig(p, srv.url(p))))
                group.start()
                time.sleep(3)  # connect
                rate = AnalysisRate([SimpleNamespace(id=p, analysis_fps=analysis_fps) for p in paths])
                scheduler = FrameScheduler(group.sources, group.wakeup, due=rate.due)
                t0, c0 = time.perf_counter(), cpu_s()
                analysed = 0
                while time.perf_counter() - t0 < seconds:
                    if mode == "every_frame_bgr":
                        for p, src in group.sources.items():
                            while (d := src.frames.get(0)) is not None:
                                f = d.to_frame()
                                analysed += rate.due(p, f.capture_time_ns)
                        time.sleep(0.01)
                    else:
                        if (item := scheduler.take(0.25)) is not None:
                            analysed += item[1] is not None
                            scheduler.release(item[0])
                wall, cpu = time.perf_counter() - t0, cpu_s() - c0
                group.stop()
                cores[mode].append(cpu / wall)
                emit(bench="consume", streams=streams, mode=mode, cpu_cores=round(cpu / wall, 3),
                     analysed_per_s=round(analysed / wall, 1))
        a, b = (float(np.median(v)) for v in cores.values())
        emit(bench="consume", streams=streams, video="1080p25 H.264 RTSP", analysis_fps=analysis_fps,
             every_frame_bgr_cores=round(a, 3), analysed_only_cores=round(b, 3), ratio=round(a / b, 2))
    finally:
        srv.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="decode", choices=["decode", "latency", "reconnect", "idle", "soak",
                                                               "consume", "all"])
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--gop", type=int, default=50, help="frames per keyframe in the generated clips")
    ap.add_argument("--gated-only", action="store_true", help="idle: skip the ungated full-decode run")
    ap.add_argument("--media", type=Path, default=Path(tempfile.gettempdir()) / "seawatch-bench-streams")
    args = ap.parse_args(argv)
    args.media.mkdir(parents=True, exist_ok=True)
    media = make_media(args.media, args.gop) if args.what != "latency" else {}
    if args.what in ("decode", "all"):
        bench_decode(media)
    if args.what in ("latency", "all"):
        bench_latency(args.seconds or 10)
    if args.what in ("reconnect", "all"):
        bench_reconnect(media)
    if args.what in ("idle", "all"):
        configs = (("all", True), ("auto", True)) if args.gated_only else (("all", False), ("all", True), ("auto", True))
        bench_idle(media, args.streams, args.seconds or 20, configs, args.gop)
    if args.what in ("soak", "all"):
        bench_soak(media, args.streams, args.seconds or 120)
    if args.what in ("consume", "all"):
        bench_consume(media, args.streams, args.seconds or 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
