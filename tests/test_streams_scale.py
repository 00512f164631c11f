"""Many cameras, one consumer: a dead camera costs the others nothing, and only analysed frames are converted.

The consumer is the service's own loop (``service.runner.Service._run``) or :class:`~seawatch.streams.source.FrameScheduler`; cameras are real
RTSP streams from ``tests/rtsp_server.py`` (gst-rtsp-server) or generated files. Speed is measured by
``benchmarks/bench_streams.py consume``; these tests assert behaviour (counts, which frames), not timings, except
one generous bound where the old behaviour needed at least twice as long by construction.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from seawatch.streams.frame import DecodedFrame
from seawatch.streams.frame_queue import FrameQueue, OverflowPolicy
from seawatch.streams.source import Source, SourceConfig, State

S = 1_000_000_000


class _Picture:
    """Stands in for a decoded PyAV frame."""

    def __init__(self) -> None:
        self.converted = 0

    def to_ndarray(self, format: str) -> np.ndarray:  # noqa: A002 - PyAV's name
        assert format == "bgr24"
        self.converted += 1
        return np.zeros((4, 4, 3), np.uint8)


def _item(sid: str, seq: int, capture_ns: int) -> DecodedFrame:
    """What a source queues: a decoded picture, converted to BGR on demand."""
    return DecodedFrame(sid, seq, _Picture(), capture_ns, capture_ns)


class _StubSource:
    """A live camera's queue without a reader thread (the service loop only uses frames, read, status, config)."""

    def __init__(self, sid: str) -> None:
        self.frames = FrameQueue(2, OverflowPolicy.DROP_OLDEST)
        self.config = SimpleNamespace(source_id=sid, is_live=True, takes_newest=True)
        self.sid = sid

    def read(self, timeout_s: float = 1.0):
        d = self.frames.get(timeout_s)
        return None if d is None else d.to_frame()

    def status(self):
        return SimpleNamespace(last_error="down", state=State.OFFLINE)

    def stop(self, timeout_s: float = 5.0) -> bool:
        self.frames.close()
        return True


class _RecordingPipeline:
    def __init__(self, on_frame=None) -> None:
        self.seen: list[tuple[str, int]] = []
        self.on_frame = on_frame
        self.closed: list[str | None] = []

    def process(self, sid, capture_ns, image, locator=None):
        self.seen.append((sid, capture_ns))
        if self.on_frame is not None:
            self.on_frame(sid, capture_ns)
        return []

    def close(self, t=None, sid=None, reason=""):
        self.closed.append(sid)
        return []

    def stop(self) -> None:
        pass


def _service(readers: dict, pipeline, fps: float = 2.0, workers: int = 1):
    """A real Service with only what its pipeline loop touches."""
    from seawatch.service.runner import Service

    svc = Service.__new__(Service)
    svc.settings = SimpleNamespace(sources=[SimpleNamespace(id=k, analysis_fps=fps) for k in readers])
    pipeline.workers = workers  # Pipeline.workers: analysis_workers resolved
    svc.readers = readers
    svc._stop = threading.Event()
    svc._wakeup = threading.Event()
    svc.mqtt = None
    svc.pipeline = pipeline
    svc._thread = None
    return svc


def test_dead_cameras_do_not_hold_up_a_live_one():
    """40 cameras are down (empty queues) and one is live; each of its frames is queued right after the previous
    one was analysed. The loop used to wait 50 ms on every empty queue in turn, 2 s per frame of the live camera
    here (so >= 10 s for 5 frames); now it waits on one wake-up event for all of them."""
    dead = {f"dead{i:02d}": _StubSource(f"dead{i:02d}") for i in range(40)}
    live = _StubSource("live")
    n = 5
    done = threading.Event()

    def next_frame(sid, capture_ns):
        k = len(pipe.seen)
        if k >= n:
            done.set()
        else:
            live.frames.put(_item("live", k, (k + 1) * S))  # 1 s of capture time apart: always due at 2 fps

    pipe = _RecordingPipeline(next_frame)
    svc = _service({**dead, "live": live}, pipe)
    live.frames.put(_item("live", 0, 0 * S + 1))
    t = threading.Thread(target=svc._run, daemon=True)
    t0 = time.monotonic()
    t.start()
    try:
        finished = done.wait(30)
        took_s = time.monotonic() - t0
    finally:
        svc._stop.set()
        for s in svc.readers.values():
            s.stop()
        t.join(5)
    assert finished, f"only {len(pipe.seen)} of {n} frames analysed in 30 s"
    assert [sid for sid, _ in pipe.seen] == ["live"] * n
    assert took_s < 5.0, f"{n} frames of the live camera took {took_s:.1f} s behind 40 dead ones"
    assert not t.is_alive()


def test_only_frames_due_for_analysis_are_converted_to_bgr():
    """A live camera queues 25 fps; the loop analyses 2 fps. Frames dropped from the queue or not due are never
    converted to BGR (before: every decoded frame was)."""
    cam = _StubSource("cam")
    pipe = _RecordingPipeline()
    svc = _service({"cam": cam}, pipe, fps=2.0)
    pictures = []
    t = threading.Thread(target=svc._run, daemon=True)
    t.start()
    try:
        for k in range(100):  # 4 s of video at 25 fps, as a reader would queue it
            item = _item("cam", k, k * S // 25 + 1)
            pictures.append(item.picture)
            cam.frames.put(item)
            time.sleep(0.002)
        time.sleep(0.3)
    finally:
        svc._stop.set()
        cam.stop()
        t.join(5)
    converted = sum(p.converted for p in pictures)
    assert 1 <= len(pipe.seen) <= 9  # 2 fps of 4 s of capture time (+1 for the first)
    assert converted == len(pipe.seen), f"{converted} conversions for {len(pipe.seen)} analysed frames"
    times = [c for _, c in pipe.seen]
    assert all(b - a >= S // 2 - 1_000_000 for a, b in zip(times, times[1:]))


def test_file_reader_with_analysis_fps_queues_exactly_the_frames_the_rate_takes(clip_25fps):
    """run_file's reader: one frame per 1/analysis_fps s of capture time is queued (and converted); the same frames
    AnalysisRate would take from all of them."""
    from seawatch.vision.pipeline import AnalysisRate

    start = 1_800_000_000 * S

    def frames(**kw):
        src = Source(SourceConfig("f", str(clip_25fps), kind="file", pace="fast", start_time_ns=start, **kw)).start()
        out = [(f.seq, f.capture_time_ns) for f in src]
        return out, src.status()

    every, st_all = frames()
    rate = AnalysisRate([SimpleNamespace(id="f", analysis_fps=5.0)])
    expected = [(seq, t) for seq, t in every if rate.due("f", t)]
    got, st = frames(analysis_fps=5.0)
    assert len(every) == 100 and st_all.frames_decoded == 100
    assert got == expected and len(got) == 20
    assert st.frames_decoded == 100 and st.frames_queued == 20 and st.frames_skipped_rate == 80


def test_a_file_played_as_a_camera_keeps_to_the_wall_clock_behind_a_slow_consumer(clip_25fps):
    """A file played in real time (``seawatch serve``'s cameras from files) with analysis slower than its frame rate
    (a frame taken every 0.3 s; 25 fps). It used to be held back: the reader waited on its full queue, so the frames
    analysed fell further behind the wall clock (lag over 1 s after 2 s here). Now the oldest frames are dropped, as
    a camera's, and each frame taken is the newest: its lag stays under one analysis step."""
    from seawatch.streams.source import FrameScheduler

    src = Source(SourceConfig("f", str(clip_25fps), pace="realtime", loop=True))
    wakeup = threading.Event()
    src.frames.notify = wakeup
    scheduler = FrameScheduler({"f": src}, wakeup)
    lags_s = []
    with src:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:
            item = scheduler.take(1.0)
            if item is None:
                continue
            sid, frame = item
            lags_s.append((time.time_ns() - frame.capture_time_ns) / 1e9)
            time.sleep(0.3)  # the analysis
            scheduler.release(sid)
        st = src.status()
    assert len(lags_s) >= 6
    assert max(lags_s[2:]) < 0.3, [round(v, 2) for v in lags_s]
    assert st.drops > 0 or src.frames.skipped > 0  # the frames it could not analyse were skipped, and counted


@pytest.fixture(scope="module")
def clip_25fps(tmp_path_factory):
    from test_streams import make_clip

    return make_clip(tmp_path_factory.mktemp("scale") / "clip.mp4", seconds=4, size="320x240", rate=25, gop=25)


def test_frame_queue_wakes_one_consumer_for_any_source():
    ev = threading.Event()
    q = FrameQueue(2, OverflowPolicy.DROP_OLDEST, notify=ev)
    assert not ev.is_set()
    q.put(1)
    assert ev.is_set()
    ev.clear()
    q.close()
    assert ev.is_set()  # an ending source wakes the consumer too


@pytest.mark.slow
def test_four_rtsp_cameras_and_a_dead_one_through_the_service_loop():
    """Real RTSP: 4 cameras from one gst-rtsp-server plus one where nothing listens, through the service loop at
    analysis_fps 2. Every live camera is analysed, the dead one is offline with its reason, frames the queue dropped
    are counted, and only analysed frames were converted to BGR."""
    import socket

    from test_streams_rtsp import RtspServer, _require_tools, wait_for

    from seawatch.streams.frame import DecodedFrame

    _require_tools()
    import subprocess
    import tempfile
    from pathlib import Path

    from test_streams import make_clip

    tmp = Path(tempfile.mkdtemp(prefix="seawatch-scale-"))
    clip = make_clip(tmp / "clip.mp4", seconds=4, size="640x360", rate=25, gop=25)
    paths = [f"cam{i}" for i in range(4)]
    srv = RtspServer(clip, paths)
    srv.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    converted = {"n": 0}
    real = DecodedFrame.to_frame

    def counting(self):
        converted["n"] += 1
        return real(self)

    DecodedFrame.to_frame = counting
    stop = threading.Event()
    readers = {p: Source(SourceConfig(p, srv.url(p), open_timeout_s=3, read_timeout_s=2, stall_timeout_s=3),
                         stop=stop) for p in paths}
    readers["dead"] = Source(SourceConfig("dead", f"rtsp://127.0.0.1:{dead_port}/x", open_timeout_s=2,
                                          backoff_initial_s=0.2, backoff_max_s=0.5), stop=stop)
    pipe = _RecordingPipeline()
    svc = _service(readers, pipe)
    svc._stop = stop
    t = threading.Thread(target=svc._run, daemon=True)
    try:
        for r in readers.values():
            r.start()
        t.start()
        assert wait_for(lambda: all(readers[p].status().state is State.ONLINE for p in paths), 15) is not None
        assert wait_for(lambda: all(sum(1 for s, _ in pipe.seen if s == p) >= 6 for p in paths), 20) is not None
        status = {k: r.status() for k, r in readers.items()}
    finally:
        stop.set()
        for r in readers.values():
            assert r.stop(6)
        t.join(5)
        DecodedFrame.to_frame = real
        srv.kill()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    assert not t.is_alive()
    assert status["dead"].state is not State.ONLINE and "Connection refused" in (status["dead"].last_error or "")
    assert status["dead"].frames_decoded == 0
    decoded = sum(status[p].frames_decoded for p in paths)
    analysed = len(pipe.seen)
    assert converted["n"] == analysed, f"{converted['n']} BGR conversions for {analysed} analysed frames"
    assert decoded >= 4 * analysed  # 25 fps decoded, 2 fps analysed
    # what was not analysed is accounted for: dropped by the queue or skipped by the consumer
    for p in paths:
        st = status[p]
        assert st.drops + st.frames_skipped_by_consumer > 0
    for p in paths:  # analysed frames of a camera in capture order, at least 0.5 s apart
        times = [c for s, c in pipe.seen if s == p]
        assert all(b - a >= S // 2 - 1_000_000 for a, b in zip(times, times[1:]))
