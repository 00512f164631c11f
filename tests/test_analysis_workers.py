"""Analysis workers (``analysis_workers``): several threads analyse the cameras' frames side by side, each camera on one
worker at a time, so a slow camera (a tiled harbour view) no longer holds up the others.

The scheduler and the worker loop are tested with stand-in queues and pipelines (claims, order, ended sources,
errors); the real detector and pipeline with threads against the same frames one after the other; ``seawatch run``
on real clips with one and two workers. Speed is measured by ``seawatch bench workers``, not here.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import onnx_model
from test_streams_scale import S, _item, _service, _StubSource

from seawatch.streams.frame_queue import FrameQueue, OverflowPolicy
from seawatch.vision.pipeline import AnalysisRate, analyse_sources, worker_count


class _Pipeline:
    """Records what it is given; ``hold(sid, frame_k)`` may block a frame; checks one frame per source at a time."""

    def __init__(self, hold=None) -> None:
        self.seen: list[tuple[str, int]] = []
        self.closed: list[str | None] = []
        self.busy: set[str] = set()
        self.overlaps: list[str] = []
        self.hold = hold
        self.lock = threading.Lock()

    def process(self, sid, capture_ns, image, locator=None):
        with self.lock:
            if sid in self.busy:
                self.overlaps.append(sid)
            self.busy.add(sid)
        try:
            if self.hold is not None:
                self.hold(sid, capture_ns)
            with self.lock:
                self.seen.append((sid, capture_ns))
            return [object()]
        finally:
            with self.lock:
                self.busy.discard(sid)

    def close(self, t=None, sid=None, reason=""):
        self.closed.append(sid)
        return []

    def stop(self) -> None:
        pass


def _rate(sids, fps=1000.0):
    return AnalysisRate([SimpleNamespace(id=s, analysis_fps=fps) for s in sids])


def _run(pipe, sources, workers, **kw):
    wakeup, stop = threading.Event(), threading.Event()
    for src in sources.values():
        src.frames.notify = wakeup
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(n=analyse_sources(pipe, sources, wakeup, stop, _rate(sources),
                                                                      workers, **kw)), daemon=True)
    t.start()
    return t, stop, out


def test_a_slow_camera_holds_up_only_its_own_worker():
    """The harbour camera's frame takes until the quay camera has had 5 frames analysed. With two workers the quay
    camera is served meanwhile; with one (the old single loop) nothing else is analysed while the harbour frame
    runs, so the quay camera waits (here: until the harbour frame gives up after 3 s)."""
    for workers, served in ((2, True), (1, False)):
        harbour, quay = _StubSource("harbour"), _StubSource("quay")
        quay_done = threading.Event()

        def hold(sid, capture_ns):
            if sid == "harbour":
                quay_done.wait(3.0)
            elif sum(1 for s, _ in pipe.seen if s == "quay") >= 4:
                quay_done.set()
            else:  # the quay camera's next frame, queued as soon as this one is analysed
                quay.frames.put(_item("quay", 0, capture_ns + S))

        pipe = _Pipeline(hold)
        harbour.frames.put(_item("harbour", 0, S))
        t, stop, _ = _run(pipe, {"harbour": harbour, "quay": quay}, workers)
        time.sleep(0.1)  # the harbour frame is taken first (round-robin starts there)
        quay.frames.put(_item("quay", 0, S))
        got = quay_done.wait(2.0)
        stop.set()
        harbour.stop(), quay.stop()
        t.join(5)
        assert not t.is_alive()
        assert got is served, f"{workers} worker(s): quay frames {[c for s, c in pipe.seen if s == 'quay']}"
        assert pipe.overlaps == []


def test_each_source_is_analysed_in_capture_order_one_frame_at_a_time():
    """Three file-like sources (every frame queued, none skipped), four workers and frames that take a random few
    milliseconds: every frame is analysed once, each source's in capture order, never two of one source at once."""
    rng = np.random.default_rng(1)
    sources = {}
    for sid in ("a", "b", "c"):
        src = _StubSource(sid)
        src.config.is_live = src.config.takes_newest = False  # a file read as fast as it decodes
        src.frames = FrameQueue(100, OverflowPolicy.BLOCK)
        for k in range(40):
            src.frames.put(_item(sid, k, (k + 1) * S))
        src.frames.close()  # ends after its 40 frames
        sources[sid] = src
    delays = iter(list(rng.uniform(0, 0.004, 200)))
    lock = threading.Lock()

    def hold(sid, capture_ns):
        with lock:
            d = next(delays)
        time.sleep(d)

    pipe = _Pipeline(hold)
    ended: list[str] = []
    t, stop, out = _run(pipe, sources, 4, on_ended=ended.append)
    t.join(20)
    assert not t.is_alive(), "the workers did not finish when every source had ended"
    assert pipe.overlaps == []
    for sid in sources:
        assert [c for s, c in pipe.seen if s == sid] == [(k + 1) * S for k in range(40)]
    assert sorted(ended) == ["a", "b", "c"] and sorted(pipe.closed) == ["a", "b", "c"]
    assert out["n"] == 120  # one event per frame from this pipeline


def test_a_failing_frame_is_reported_and_the_others_go_on():
    cams = {sid: _StubSource(sid) for sid in ("bad", "good")}
    for sid, cam in cams.items():
        for k in range(3):
            cam.frames.put(_item(sid, k, (k + 1) * S))

    def hold(sid, capture_ns):
        if sid == "bad":
            raise RuntimeError("broken model output")

    pipe = _Pipeline(hold)
    errors: list[tuple[str, str]] = []
    t, stop, _ = _run(pipe, cams, 2, on_error=lambda sid, exc: errors.append((sid, str(exc))))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(s == "good" for s, _ in pipe.seen):
        time.sleep(0.02)
    for c in cams.values():  # ends the live stand-ins: the workers return
        c.stop()
    t.join(5)
    assert not t.is_alive()
    assert ("bad", "broken model output") in errors
    assert any(s == "good" for s, _ in pipe.seen)
    assert sorted(pipe.closed) == ["bad", "good"]


def test_service_loop_runs_the_configured_workers():
    """``Service._run`` with ``analysis_workers: 2``: the slow camera's frame and the other camera's frames are
    analysed at the same time (both inside process at once)."""
    slow, fast = _StubSource("slow"), _StubSource("fast")
    both = threading.Event()
    inside: set[str] = set()
    lock = threading.Lock()

    def hold(sid, capture_ns):
        with lock:
            inside.add(sid)
            if inside == {"slow", "fast"}:
                both.set()
        both.wait(3.0)
        with lock:
            inside.discard(sid)

    pipe = _Pipeline(hold)
    svc = _service({"slow": slow, "fast": fast}, pipe, fps=2.0, workers=2)
    slow.frames.put(_item("slow", 0, S))
    fast.frames.put(_item("fast", 0, S))
    t = threading.Thread(target=svc._run, daemon=True)
    t.start()
    try:
        assert both.wait(5.0), f"never in two frames at once: {pipe.seen}"
    finally:
        svc._stop.set()
        slow.stop(), fast.stop()
        t.join(5)
    assert not t.is_alive()


@pytest.mark.parametrize("setting, sources, cores, expected", [
    (0, 4, 2, 2), (0, 4, 8, 4), (0, 2, 16, 2), (0, 3, 1, 1), (3, 4, 2, 3), (6, 2, 2, 2), (1, 8, 64, 1), (0, 0, 8, 1)])
def test_worker_count(setting, sources, cores, expected):
    assert worker_count(setting, sources, cores) == expected


def test_analysis_workers_is_validated():
    from seawatch.errors import ConfigError
    from seawatch.vision.pipeline import load_pipeline_config

    assert load_pipeline_config(None, data={"analysis_workers": 3}).analysis_workers == 3
    with pytest.raises(ConfigError, match="analysis_workers"):
        load_pipeline_config(None, data={"analysis_workers": -1})


def test_one_detector_shared_by_threads_gives_each_frame_its_own_boxes(shared_media):
    """Two workers run the same ONNX session on different frames at once (two cameras with one model). Each gets
    the boxes of its own frame, exactly as one thread would: the letterbox input buffer is per thread (it was one
    per detector, so one thread's frame could be overwritten by the other's before inference)."""
    from seawatch.vision.detector import load_detector
    from seawatch.vision.media import read_image

    onnx_model("coco_yolov5n")
    det = load_detector("coco_yolov5n")
    frames = [read_image(p) for p in sorted((shared_media / "A_boats").glob("*.jpg"))[:2]]
    frames.append(read_image(shared_media / "G_negatives" / "nofire_cctv_img_1.jpg"))
    expected = [det.detect([f])[0] for f in frames]
    assert len({len(e) for e in expected}) > 1 or any(len(e) for e in expected)  # frames that differ
    mismatches: list[str] = []
    barrier = threading.Barrier(len(frames))

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(12):
            got = det.detect([frames[i]])[0]
            if len(got) != len(expected[i]) or not np.allclose(got.xyxy_px, expected[i].xyxy_px, atol=1e-3):
                mismatches.append(f"frame {i}: {len(got)} boxes, expected {len(expected[i])}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert mismatches == []
    assert det.total_timing.frames >= 3 + 12 * len(frames)


@pytest.mark.slow
def test_run_gives_the_same_events_with_one_and_two_workers(shared_media, tmp_path):
    """``seawatch run`` on two real clips (a fire and a fire lane), as files (every analysed frame taken, none
    skipped): each camera's events are the same with ``analysis_workers`` 1 and 2, as each camera is analysed in
    order on one worker at a time whatever the count; two workers say so."""
    from test_pipeline import START, events_of, seawatch

    onnx_model("fire_smoke")
    onnx_model("coco_yolov5n")
    flames = shared_media / "B_fire_smoke" / "flames_closeup.mp4"
    yard = shared_media / "D_parking_lanes" / "carpark_timelapse_nf.mp4"
    results = {}
    for workers in (1, 2):
        cfg = tmp_path / f"w{workers}.yaml"
        cfg.write_text(f"""analysis_workers: {workers}
sources:
  - {{id: quay, url: "{flames}", models: [fire_smoke], analysis_fps: 2}}
  - {{id: yard, url: "{yard}", models: [coco_yolov5n], analysis_fps: 4}}
zones:
  - {{id: quay, source: quay, rules: [{{type: fire_smoke}}]}}
  - {{id: lane, source: yard, polygon_px: [[0, 300], [640, 300], [640, 480], [0, 480]],
     rules: [{{type: fire_lane_blocked, min_duration_s: 1.0, clear_after_s: 0.5, grace_s: 0.5}}]}}
""")
        res = seawatch("run", "--config", str(cfg), "--start-utc", START)
        assert res.returncode == 0, res.stderr
        assert f"{workers} worker(s)" in res.stderr
        results[workers] = sorted((e["source_id"], e["type"], e["phase"], e["start_ns"], e.get("end_ns"))
                                  for e in events_of(res.stdout))
    kinds = {(s, t) for s, t, *_ in results[1]}
    assert ("quay", "fire") in kinds and ("yard", "fire_lane_blocked") in kinds, kinds
    assert results[2] == results[1]


def test_analysis_stats_rate_lag_and_replays():
    from seawatch.vision.pipeline import AnalysisStats

    st = AnalysisStats(4.0)
    assert st.snapshot() == {"asked_fps": 4.0, "analysed_fps": 0.0, "delivered_fps": None, "behind": False,
                             "lag_ms": None, "process_ms": None, "detect_ms": None, "frames": 0}
    now = time.time_ns()
    for k in range(5):
        st.record(now - 200_000_000, process_s=0.050, detect_s=0.040)  # captured 0.2 s before its analysis ended
    snap = st.snapshot()
    assert snap["frames"] == 5 and snap["analysed_fps"] == 5.0  # 5 frames within the first second
    assert 190 <= snap["lag_ms"] <= 400 and snap["process_ms"] == 50.0 and snap["detect_ms"] == 40.0
    replay = AnalysisStats(2.0)
    replay.record(1_767_225_600 * S, 0.01, 0.01)  # a replay stamped on 2026-01-01: no lag to speak of
    assert replay.snapshot()["lag_ms"] is None and replay.snapshot()["frames"] == 1


def test_sources_api_says_how_each_camera_keeps_up(tmp_path):
    """GET /api/sources: each camera's ``analysis`` (asked and analysed rate, lag, time per frame), from the real
    service loop on a file played as a camera with a detector that takes 30 ms."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx.*")
        from fastapi.testclient import TestClient

    from test_service_serve import KEY, FireEverywhere, serve_settings, write_video

    from seawatch.service.runner import Service

    class Slow(FireEverywhere):
        def detect(self, images):
            time.sleep(0.03)
            return super().detect(images)

    video = tmp_path / "quay.mp4"
    write_video(video, seconds=2.0)
    svc = Service(serve_settings(tmp_path, video), detectors={"stub": Slow()}, file_pace="realtime",
                  loop_files=True).start()
    try:
        with TestClient(svc.app) as client:
            time.sleep(3.0)
            (cam,) = [s for s in client.get("/api/sources", headers={"X-API-Key": KEY}).json()
                      if s["source_id"] == "quay-1"]
    finally:
        svc.stop()
    a = cam["analysis"]
    assert a["asked_fps"] == 5.0 and a["frames"] >= 8
    assert 3.0 <= a["analysed_fps"] <= 6.0, a
    assert a["detect_ms"] >= 25 and a["process_ms"] >= a["detect_ms"]
    assert 0 <= a["lag_ms"] < 1500, a


@pytest.mark.parametrize("camera_fps, analysed_every_s, behind", [
    (25.0, 0.25, False),  # asked 4 fps, analysed 4 fps
    (25.0, 0.5, True),  # 2 of the 4 asked
    (2.0, 0.5, False),  # the camera gives 2 fps only (or motion gating passes 2): 2 analysed is all there is
    (2.0, 1.0, True),  # half of what the camera gives
    (0.0, 10.0, False),  # an idle camera behind its motion gate: nothing to analyse, nothing behind
])
def test_behind_means_under_80_percent_of_what_could_be_analysed(camera_fps, analysed_every_s, behind):
    from seawatch.vision.pipeline import AnalysisStats

    now = [1000.0]
    st = AnalysisStats(4.0, clock=lambda: now[0])
    queued, next_analysis, snap = 0.0, 0.0, None
    for _ in range(int(30 / 0.05)):  # 30 s in 50 ms steps; the service asks for the status every second
        now[0] += 0.05
        queued += camera_fps * 0.05
        if now[0] - 1000.0 >= next_analysis:
            st.record(time.time_ns(), 0.01, 0.01)
            next_analysis += analysed_every_s
        if round((now[0] - 1000.0) / 0.05) % 20 == 0:
            snap = st.snapshot(int(queued))
    assert snap["delivered_fps"] == pytest.approx(camera_fps, abs=0.15)
    assert snap["analysed_fps"] == pytest.approx(min(4.0, 1 / analysed_every_s), abs=0.15)
    assert snap["behind"] is behind, snap
