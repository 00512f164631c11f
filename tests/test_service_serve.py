"""``seawatch serve`` end to end: a video file source -> pipeline -> StoreSink -> store -> API; orderly start-up
and shutdown of the real command."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.runner import Service  # noqa: E402
from seawatch.service.sink import StoreSink  # noqa: E402
from seawatch.service.store import EventQuery, EventStore  # noqa: E402
from seawatch.vision.detections import Detections  # noqa: E402
from test_service_store import make_event  # noqa: E402
from conftest import free_port as _free_port  # noqa: E402

KEY = "serve-test-key-0123456789"


def write_video(path, seconds: float = 3.0, fps: int = 10, size=(160, 120)) -> None:
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
        for _ in range(int(seconds * fps)):
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)  # changing pixels: not a static source
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


class FireEverywhere:
    """A stand-in detector: one confident fire box in every frame (the service, not the model, is under test)."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, images):
        self.calls += len(images)
        return [Detections(np.array([[40, 30, 120, 100]], np.float32), np.array([0.9], np.float32), np.array([0], np.int32), ("fire",),
                           model="stub") for _ in images]


def serve_settings(tmp_path, video=None, **over):
    data = {
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "test", "role": "admin", "key_sha256": hash_api_key(KEY)}]},
    }
    if video is not None:
        data["sources"] = [{"id": "quay-1", "url": str(video), "models": ["stub"], "analysis_fps": 5}]
        data["zones"] = [{"id": "yard", "source": "quay-1", "rules": [
            {"type": "fire_smoke", "labels": ["fire"], "window_frames": 3, "min_hits": 2, "min_duration_s": 0.5, "static_min_iou": None}]}]
    data.update(over)
    return load_config(data=data)


@contextlib.contextmanager
def file_camera_service(tmp_path, seconds: float = 2.0, size=(160, 120), **over):
    """The real service on a generated video played as a live camera (``quay-1``, looped, at its own pace) with the
    stand-in fire detector; ``over`` goes to :func:`serve_settings`. Stopped on exit."""
    video = tmp_path / "quay.mp4"
    write_video(video, seconds=seconds, size=size)
    svc = Service(serve_settings(tmp_path, video, **over), detectors={"stub": FireEverywhere()}, file_pace="realtime",
                  loop_files=True).start()
    try:
        yield svc
    finally:
        svc.stop()


def test_video_events_reach_the_store_and_the_api(tmp_path):
    video = tmp_path / "quay.mp4"
    write_video(video)
    cfg = serve_settings(tmp_path, video)
    det = FireEverywhere()
    svc = Service(cfg, detectors={"stub": det}, file_pace="fast", loop_files=False).start()
    try:
        deadline = time.monotonic() + 30
        while svc._thread.is_alive() and time.monotonic() < deadline:  # the file ends, the pipeline thread ends
            time.sleep(0.05)
        assert not svc._thread.is_alive()
        assert 12 <= det.calls <= 18  # 3 s analysed at 5 fps
        with TestClient(svc.app) as client:
            h = {"X-API-Key": KEY}
            page = client.get("/api/events", params={"type": "fire", "source": "quay-1"}, headers=h).json()
            assert len(page["events"]) == 1
            ev = page["events"][0]
            assert ev["phase"] == "end" and ev["zone_id"] == "yard" and ev["labels"] == ["fire"]
            assert ev["end_ns"] - ev["start_ns"] >= 2_000_000_000
            snap = client.get(ev["snapshot_url"], headers=h)
            assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
            clip = client.get(ev["clip_url"], headers=h)  # cut from the recording ring / segments on request
            assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4", clip.text[:300]
            import av

            (tmp_path / "clip.mp4").write_bytes(clip.content)
            with av.open(str(tmp_path / "clip.mp4")) as c:
                n_frames = sum(1 for _ in c.decode(video=0))
            assert n_frames >= 20  # the whole 3 s incident window at 10 fps (clipped to what was recorded)
            part = client.get(ev["clip_url"], headers={**h, "Range": "bytes=0-99"})
            assert part.status_code == 206 and part.content == clip.content[:100]
            status = client.get("/api/sources", headers=h).json()
            assert status[0]["source_id"] == "quay-1" and status[0]["frames_decoded"] >= 30
        assert svc.sink.stored >= 2 and svc.sink.errors == 0  # start + end at least
        assert svc.live.published == svc.sink.stored  # every stored phase went to the live feed
        event_id = ev["id"]
    finally:
        svc.stop()
    store = EventStore.open(cfg.storage.resolved_database_url())  # durable after shutdown
    try:
        assert store.get(event_id).phase == "end"
    finally:
        store.close()


def test_sink_commits_before_publishing_and_survives_a_failing_publisher(tmp_path):
    store = EventStore.open(f"sqlite:///{tmp_path / 'e.db'}")
    seen = []

    def publisher(ev):
        seen.append(store.get(ev.id) is not None)  # the event is in the database when it is published

    def broken(ev):
        raise RuntimeError("broker down")

    sink = StoreSink(store, tmp_path / "media", [broken, publisher])
    ev = make_event(0)
    sink.emit(ev)
    sink.emit(ev)  # a replay is neither stored twice nor published twice
    assert seen == [True] and sink.stored == 1 and store.count() == 1
    store.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_command_starts_serves_and_stops_on_a_signal(tmp_path, sig):
    port = _free_port()
    cfg_path = tmp_path / "serve.yaml"
    cfg_path.write_text(
        f"storage: {{data_dir: {tmp_path / 'data'}}}\nservice: {{port: {port}}}\n"
        f"auth:\n  api_keys:\n    - {{name: t, role: operator, key_sha256: {hash_api_key(KEY)}}}\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "seawatch", "serve", "--config", str(cfg_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body is not None and '"database":"ok"' in body, proc.stderr.read() if proc.poll() is not None else "no answer"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/events", headers={"X-API-Key": KEY})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/events", timeout=5)
        assert info.value.code == 401
        proc.send_signal(sig)
        rc = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert rc == 0, err
    assert "serving on" in err and "stopped" in err and "Traceback" not in err
    assert (tmp_path / "data" / "seawatch.db").exists()


def test_serve_command_rejects_a_bad_config(tmp_path):
    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text("service: {port: 0}\n")
    r = subprocess.run([sys.executable, "-m", "seawatch", "serve", "--config", str(cfg_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "service.port" in r.stderr and "Traceback" not in r.stderr


def test_serve_command_reports_a_missing_model(tmp_path):
    cfg_path = tmp_path / "nomodel.yaml"
    cfg_path.write_text(f"storage: {{data_dir: {tmp_path / 'data'}}}\nservice: {{port: {_free_port()}}}\n"
                        f"sources: [{{id: cam, url: {tmp_path / 'x.mp4'}, models: [no_such_model_xyz]}}]\n")
    r = subprocess.run([sys.executable, "-m", "seawatch", "serve", "--config", str(cfg_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no_such_model_xyz" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_stopping_the_service_ends_open_incidents_in_the_store(tmp_path):
    video = tmp_path / "quay.mp4"
    write_video(video, seconds=2.0)
    cfg = serve_settings(tmp_path, video)
    svc = Service(cfg, detectors={"stub": FireEverywhere()}, file_pace="realtime", loop_files=True).start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            page = svc.store.search(EventQuery(types=("fire",)))
            if page.events:
                break
            time.sleep(0.1)
        assert page.events and page.events[0].phase in ("start", "update")
        event_id = page.events[0].id
    finally:
        svc.stop()
    store = EventStore.open(cfg.storage.resolved_database_url())
    try:
        ev = store.get(event_id)
        assert ev.phase == "end" and ev.end_ns is not None
    finally:
        store.close()


def test_command_line_overrides_are_validated_and_keep_secrets(tmp_path):
    import argparse

    from seawatch.errors import ConfigError
    from seawatch.service.cmd_serve import add_arguments, settings_from_args

    cfg_path = tmp_path / "s.yaml"
    cfg_path.write_text("auth: {token_secret: " + "k" * 40 + "}\nsources: [{id: quay-1, url: /a.mp4}]\n"
                        "zones: [{id: yard, source: quay-1, rules: [{type: fire_smoke}]}]\n")
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = settings_from_args(p.parse_args(["--config", str(cfg_path), "--source", "gate=/b.mp4", "--port", "9123", "--host", "0.0.0.0"]))
    assert [s.id for s in cfg.sources] == ["quay-1", "gate"] and cfg.sources[1].url == "/b.mp4"
    assert (cfg.service.host, cfg.service.port) == ("0.0.0.0", 9123)
    assert cfg.auth.token_secret.get_secret_value() == "k" * 40
    assert cfg.zones[0].rules[0].type == "fire_smoke"
    with pytest.raises(ConfigError, match="service.port"):
        settings_from_args(p.parse_args(["--config", str(cfg_path), "--port", "70000"]))
    with pytest.raises(ConfigError, match="unique"):
        settings_from_args(p.parse_args(["--config", str(cfg_path), "--source", "quay-1=/c.mp4"]))
