"""The main job and the drone/AIS side of ``seawatch serve``: the embedded default configuration end to end (real
sample footage, real fire model, simulated drone, the harbour's AIS log), drone links that come late or drop (a
status and a reconnect, never a crash), drone video geotagged through the pose timeline, and the config checks."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import onnx_model  # noqa: E402
from seawatch.errors import ConfigError  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.runner import Service  # noqa: E402
from seawatch.vision.detections import Detections  # noqa: E402
from test_service_serve import write_video  # noqa: E402
from conftest import free_port as _free_port  # noqa: E402

KEY = "main-test-key-0123456789"
H = {"X-API-Key": KEY}


def _get(url: str, token: str | None = None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def _until(fn, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s: {what} (last: {last!r})")


def _drone_cfg(port: int, **over):
    d = {"id": "patrol-1", "connection": f"udp:127.0.0.1:{port}", "camera": {"width_px": 160, "height_px": 120, "hfov_deg": 70},
         "routes": {"box": {"type": "perimeter", "alt_m": 30, "polygon_lonlat": [
             [5.699, 52.8385], [5.707, 52.8385], [5.707, 52.8425], [5.699, 52.8425]]}}}
    d.update(over)
    return d


def _settings(tmp_path, **data):
    base = {"storage": {"data_dir": str(tmp_path / "data")},
            "auth": {"api_keys": [{"name": "t", "role": "admin", "key_sha256": hash_api_key(KEY)}]}}
    base.update(data)
    return load_config(data=base)


# ---- the main job: `seawatch serve` with no --config -----------------------------------------------------------------
@pytest.mark.slow
def test_default_config_shows_a_flying_drone_ais_and_live_events(tmp_path, shared_media):
    onnx_model("fire_smoke")  # the default camera runs the fire model (scripts/main.sh provisions it)
    onnx_model("coco_yolov5n")  # and the yard and harbour cameras COCO's (the trained vessel model where present)
    port = _free_port()
    err_path = tmp_path / "serve.err"
    env = {k: v for k, v in os.environ.items() if k != "SEAWATCH_ADMIN_PASSWORD"}
    env["PYTHONUNBUFFERED"] = "1"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "seawatch", "serve", "--port", str(port), "--data-dir", str(tmp_path / "sw")],
                                stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=tmp_path)
    t0 = time.monotonic()
    try:
        m = _until(lambda: re.search(r"log in as admin with password (\S+)", err_path.read_text()), 60, "the printed password")
        password = m.group(1)

        def login():
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/login", method="POST",
                                             data=json.dumps({"username": "admin", "password": password}).encode(),
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    return json.loads(r.read())["access_token"]
            except OSError:
                return None

        token = _until(login, 90, "login with the printed password")
        base = f"http://127.0.0.1:{port}/api"

        def drone_flying():
            d = [s for s in _get(f"{base}/sources", token) if s.get("kind") == "drone"]
            return d and d[0]["state"] == "connected" and d[0]["armed"] and d[0]["lat_deg"] is not None and d[0]

        drone = _until(drone_flying, 60, "the simulated drone linked and flying its patrol")
        assert drone["patrol"] == "harbour" and len(drone["route"]) >= 4 and drone["battery_pct"] is not None
        assert abs(drone["lat_deg"] - 52.84) < 0.01 and abs(drone["lon_deg"] - 5.70) < 0.02  # over Lemmer harbour
        events = _until(lambda: _get(f"{base}/events?source=quay-cam", token)["events"], 60, "an event from the default camera")
        took_s = time.monotonic() - t0
        ev = events[0]
        assert ev["type"] in ("fire", "smoke") and ev["geo"] is not None  # the surveyed camera puts it on the map
        assert abs(ev["geo"]["lat_deg"] - 52.842) < 0.01
        ended = _until(lambda: [e for e in _get(f"{base}/events?source=yard-cam&sort=-at_ns", token)["events"] if e["clip_url"]],
                       60, "a closed incident (fire lane of the yard camera) with a clip")
        req = urllib.request.Request(f"http://127.0.0.1:{port}{ended[0]['clip_url']}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.headers["content-type"] == "video/mp4" and len(r.read()) > 10_000
        boats = _until(lambda: [e for e in _get(f"{base}/events?source=harbour-cam&type=vessel_in_zone", token)["events"]
                                if e["geo"] is not None], 60, "a located vessel event from the demo harbour camera")
        b = boats[0]  # the real webcam still, COCO's boat class (or the trained vessel model), placed west of Lemmer
        assert b["attributes"]["identity"] in ("none", "unknown") and b["snapshot_url"]
        assert 52.80 < b["geo"]["lat_deg"] < 52.85 and 5.60 < b["geo"]["lon_deg"] < 5.70
        assert (tmp_path / "sw" / "demo" / "harbour-cam.mp4").is_file()
        # the drone's simulated camera sees the boats on its first legs: vessel events placed from its pose
        flown = _until(lambda: [e for e in _get(f"{base}/events?source=drone-cam&has_geo=true", token)["events"]],
                       120, "a located vessel event from the drone's camera")
        d = flown[0]
        assert d["type"] == "vessel_in_zone" and d["snapshot_url"]
        lat0, lon0, dd = 52.8405, 5.7030, 0.004  # the demo's patrol box and the boats the sim camera draws
        drawn = [(lat0 - dd / 2, lon0 - dd / 2), (lat0 - dd / 2, lon0 + dd / 3), (lat0 - dd / 6, lon0 + dd),
                 (lat0 + dd / 4, lon0 + dd)]
        off_m = min(math.hypot((d["geo"]["lat_deg"] - la) * 111_320.0,
                               (d["geo"]["lon_deg"] - lo) * 111_320.0 * math.cos(math.radians(la))) for la, lo in drawn)
        print(f"default config: drone event {off_m:.0f} m from the nearest boat, uncertainty {d['geo']}")
        assert off_m < 25.0, f"the drone's vessel event is {off_m:.0f} m from every boat the camera drew: {d['geo']}"
        ais = _until(lambda: _get(f"{base}/ais/vessels", token)["vessels"], 30, "AIS vessels from the harbour log")
        assert sum(1 for v in ais if v["lat_deg"] is not None) >= 10
        cams = [s for s in _get(f"{base}/sources", token) if s.get("kind") == "camera"]
        assert cams[0]["view"]["hfov_deg"] == pytest.approx(60.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert b"<canvas" in r.read()
        print(f"default config: first event {took_s:.1f} s after start")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_path.read_text()
    assert rc == 0 and "Traceback" not in err, err[-3000:]
    assert "stopped" in err
    assert (tmp_path / "sw" / "seawatch.db").exists()


def test_default_config_with_a_user_source_replaces_the_sample_camera(tmp_path):
    import argparse

    from seawatch.service.cmd_serve import add_arguments, default_settings

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg, password = default_settings(p.parse_args(["--source", "gate=rtsp://u:p@cam/1", "--port", "9999", "--data-dir", str(tmp_path)]))
    assert [s.id for s in cfg.sources] == ["gate"] and cfg.sources[0].calibration is None
    assert {r.type for z in cfg.zones for r in z.rules} == {"fire_smoke", "vessel_in_zone"}
    assert cfg.service.port == 9999 and cfg.storage.data_dir == str(tmp_path)
    assert cfg.fleet[0].sim and cfg.fleet[0].patrol == "harbour"
    assert len(password) >= 12 and cfg.auth.users[0].name == "admin" and cfg.auth.users[0].role == "admin"
    from seawatch.service.auth import Authenticator

    assert Authenticator(cfg.auth).check_password("admin", password) is not None
    cfg2, password2 = default_settings(p.parse_args(["--data-dir", str(tmp_path / "demo")]))
    assert password2 != password  # one-time: a new one each start


def test_demo_harbour_clip_is_the_still_as_h264_made_once_and_left_out_when_unreadable(tmp_path, caplog):
    import av
    import cv2

    from seawatch.service.config import DEFAULT_HARBOUR_STILL
    from seawatch.service.demo import harbour_clip, still_clip

    still = tmp_path / "still.jpg"
    img = np.full((72, 128, 3), 90, np.uint8)
    cv2.rectangle(img, (40, 30), (70, 45), (255, 255, 255), -1)  # a white hull
    cv2.imwrite(str(still), img)
    out = still_clip(still, tmp_path / "demo" / "clip.mp4", seconds=3, fps=2)
    with av.open(str(out)) as c:
        st = c.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(st)]
        assert st.codec_context.name == "h264" and (st.width, st.height) == (128, 72)
    assert len(frames) == 6
    assert np.abs(frames[-1].astype(int) - img).mean() < 4  # the still itself, with a little sensor noise
    made = out.stat().st_mtime_ns
    assert still_clip(still, out).stat().st_mtime_ns == made  # made once, reused at the next start
    assert not list((tmp_path / "demo").glob("*.part.mp4"))

    media = tmp_path / "media"
    with caplog.at_level("WARNING"):
        assert harbour_clip(media, tmp_path / "data") is None  # no still: the demo runs without that camera
        (media / DEFAULT_HARBOUR_STILL).parent.mkdir(parents=True)
        (media / DEFAULT_HARBOUR_STILL).write_bytes(b"not a jpeg")
        assert harbour_clip(media, tmp_path / "data") is None
    assert "is missing" in caplog.text and "harbour camera left out" in caplog.text
    assert not (tmp_path / "data" / "demo" / "harbour-cam.mp4").exists()


def test_demo_yard_clip_is_the_shared_time_lapse_as_h264(tmp_path, caplog, shared_media):
    """The shared car-park time-lapse is MPEG-4 Part 2, which every clip of it would re-encode (minutes for a
    5-minute window on 2 cores); the demo plays an H.264 copy made once, so its clips are remuxed as an IP camera's."""
    import av

    from seawatch.service.config import DEFAULT_YARD_CLIP
    from seawatch.service.demo import yard_clip

    media = shared_media
    src = media / DEFAULT_YARD_CLIP
    out = yard_clip(media, tmp_path / "data")
    assert out == tmp_path / "data" / "demo" / "yard-cam.mp4"
    with av.open(str(src)) as a, av.open(str(out)) as b:
        sa, sb = a.streams.video[0], b.streams.video[0]
        assert sa.codec_context.name == "mpeg4" and sb.codec_context.name == "h264"
        assert (sb.width, sb.height) == (sa.width, sa.height) and abs(float(sb.average_rate) - float(sa.average_rate)) < 0.01
        n_a = sum(1 for _ in a.decode(sa))
        n_b = sum(1 for _ in b.decode(sb))
    assert n_b == n_a > 100
    made = out.stat().st_mtime_ns
    assert yard_clip(media, tmp_path / "data").stat().st_mtime_ns == made  # made once
    # an unreadable time-lapse: the demo plays the file as it is (None), with a warning, no half-made copy left
    bad = tmp_path / "media"
    (bad / DEFAULT_YARD_CLIP).parent.mkdir(parents=True)
    (bad / DEFAULT_YARD_CLIP).write_bytes(b"not a video")
    with caplog.at_level("WARNING"):
        assert yard_clip(bad, tmp_path / "data2") is None
    assert "demo yard camera plays" in caplog.text
    assert not list((tmp_path / "data2").rglob("*.mp4"))
    assert yard_clip(tmp_path / "nothing", tmp_path / "data3") is None  # no shared clip: no yard camera


# ---- drones in serve --------------------------------------------------------------------------------------------------
def test_a_drone_that_comes_late_and_drops_is_a_status_not_a_crash(tmp_path):
    from seawatch.drone.sim import SimVehicle

    port = _free_port(socket.SOCK_DGRAM)
    cfg = _settings(tmp_path, drones=[_drone_cfg(port)], fleet=[{"drone": "patrol-1", "link_timeout_s": 0.5}])
    svc = Service(cfg).start()
    sim = None
    try:
        with TestClient(svc.app) as client:
            d = _until(lambda: client.get("/api/drones", headers=H).json()[0]["last_error"], 15, "a link error")
            assert d and "HEARTBEAT" in d
            assert client.get("/api/drones", headers=H).json()[0]["state"] in ("connecting", "closed")
            sim = SimVehicle(f"udpout:127.0.0.1:{port}", home=(52.84, 5.70, 0.0)).start()
            _until(lambda: client.get("/api/drones", headers=H).json()[0]["state"] == "connected", 30, "the link up once the drone is there")
            got = client.get("/api/drones", headers=H).json()[0]
            assert got["lat_deg"] == pytest.approx(52.84, abs=1e-4) and got["mode"] and got["battery_pct"] == 87.0
            sim.silent = True  # the radio drops
            _until(lambda: client.get("/api/drones", headers=H).json()[0]["state"] == "lost", 15, "link lost")
            src = [s for s in client.get("/api/sources", headers=H).json() if s["kind"] == "drone"]
            assert src[0]["state"] == "lost"
            sim.silent = False
            _until(lambda: client.get("/api/drones", headers=H).json()[0]["state"] == "connected", 30, "link back")
            assert svc.fleet.runners["patrol-1"]._thread.is_alive()
    finally:
        svc.stop()
        if sim is not None:
            sim.stop()
    assert svc.fleet.runners["patrol-1"].link.status.value == "closed"


class FireWhenOn:
    """A stand-in detector: a fire box in every frame once ``on`` (switched on when the drone is at patrol height)."""

    on = False

    def detect(self, images):
        n = 1 if self.on else 0
        return [Detections(np.array([[60, 40, 100, 80]] * n, np.float32).reshape(n, 4), np.array([0.9] * n, np.float32),
                           np.zeros(n, np.int32), ("fire",), model="stub") for _ in images]


@pytest.mark.slow
def test_drone_video_is_geotagged_from_the_simulated_flight(tmp_path):
    """A source that is the drone's video: its events are placed under the flying drone (pose timeline from the
    link the service opened), not at the camera's home, and carry the drone as geo reference."""
    video = tmp_path / "drone.mp4"
    write_video(video, seconds=2.0)
    port = _free_port(socket.SOCK_DGRAM)
    cfg = _settings(
        tmp_path, drones=[_drone_cfg(port, video_source="drone-cam")],
        fleet=[{"drone": "patrol-1", "sim": {"speed": 4.0}, "patrol": "box"}],
        sources=[{"id": "drone-cam", "url": str(video), "models": ["stub"], "analysis_fps": 4}],
        zones=[{"id": "all", "source": "drone-cam", "rules": [{"type": "fire_smoke", "labels": ["fire"], "window_frames": 3,
                "min_hits": 2, "min_duration_s": 0.5, "static_min_iou": None}]}])
    det = FireWhenOn()
    svc = Service(cfg, detectors={"stub": det}, file_pace="realtime", loop_files=True).start()
    try:
        runner = svc.fleet.runners["patrol-1"]
        _until(lambda: runner.status()["armed"] and (runner.status()["alt_rel_m"] or 0) > 25, 60, "the drone at patrol height")
        det.on = True
        with TestClient(svc.app) as client:
            def located():
                evs = client.get("/api/events", params={"source": "drone-cam", "has_geo": "true", "sort": "-at_ns"}, headers=H).json()["events"]
                return [e for e in evs if e["at_ns"] > time.time_ns() - 3_000_000_000]
            ev = _until(located, 30, "a located event from the drone's video")[0]
            st = runner.status()
    finally:
        svc.stop()
    assert ev["attributes"]["geo_reference"] == "drone_pose"
    dn = (ev["geo"]["lat_deg"] - st["lat_deg"]) * 111_320
    de = (ev["geo"]["lon_deg"] - st["lon_deg"]) * 111_320 * math.cos(math.radians(st["lat_deg"]))
    assert math.hypot(dn, de) < 120  # under the drone (30 m up, camera down; the drone moves ~40 m between the two)
    # stopping ended the incident; its telemetry (geotag pose + samples of the clip window) was kept beside the media
    rec = tmp_path / "data" / "media" / "telemetry" / "drone-cam" / f"{ev['id']}.json"
    doc = json.loads(rec.read_text())
    assert doc["event_id"] == ev["id"] and any(doc["samples"].values()), doc.get("samples_missing")
    assert doc["geotag_pose"] is not None  # the pose the event was placed with


# ---- configuration ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, message", [
    ({"drones": [_drone_cfg(14550)], "fleet": [{"drone": "nope"}]}, "not in drones"),
    ({"drones": [_drone_cfg(14550)], "fleet": [{"drone": "patrol-1", "patrol": "square"}]}, "no route 'square'"),
    ({"drones": [_drone_cfg(14550, connection="/dev/ttyUSB0")], "fleet": [{"drone": "patrol-1", "sim": True, "patrol": "box"}]},
     "udp:HOST:PORT"),
    ({"drones": [_drone_cfg(14550)], "fleet": [{"drone": "patrol-1", "sim": True}]}, "home_lat_deg"),
    ({"drones": [_drone_cfg(14550)], "fleet": [{"drone": "patrol-1"}, {"drone": "patrol-1"}]}, "two fleet entries"),
    ({"drones": [_drone_cfg(14550)], "fleet": [{"drone": "patrol-1", "sim": {"speed": 500}, "patrol": "box"}]}, "fleet[0].sim"),
    ({"drones": [_drone_cfg(14550)], "fleet": [{"drone": "patrol-1", "fly": "box"}]}, "fleet[0].fly"),
    ({"drones": [_drone_cfg(14550)], "fleet": [{"drone": "patrol-1", "patrol": "box",
                                                "sim": {"camera": {"width_px": 640, "height_px": 360}}}]},
     "fleet[0].sim.camera is 640x360 but the camera of drone 'patrol-1' is 160x120"),
    ({"drones": [_drone_cfg(14550, camera={"width_px": 161, "height_px": 120, "hfov_deg": 70})],
      "fleet": [{"drone": "patrol-1", "patrol": "box", "sim": {"camera": {}}}]}, "renders even sizes up to 1920x1080"),
    ({"drones": [_drone_cfg(14550, camera={"width_px": 3840, "height_px": 2160, "hfov_deg": 70})],
      "fleet": [{"drone": "patrol-1", "patrol": "box", "sim": {"camera": {"port": 5600}}}]}, "renders even sizes"),
    ({"service": {"map_tiles_url": "https://tiles.example/{z}/{x}.png"}}, "{z}, {x} and {y}"),
    ({"service": {"map_tiles_url": "javascript:alert(1)//{z}{x}{y}"}}, "service.map_tiles_url"),
])
def test_fleet_and_map_config_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        load_config(data=data)
    assert message in str(info.value)


def test_api_without_drones_or_ais_answers_empty(tmp_path):
    from seawatch.service.app import create_app

    with TestClient(create_app(_settings(tmp_path))) as client:
        assert client.get("/api/drones", headers=H).json() == []
        assert client.get("/api/ais/vessels", headers=H).json() == {"vessels": [], "feeds": []}
        assert client.get("/api/map", headers=H).json() == {"tiles_url": None, "attribution": "", "coastline": True}
        assert client.get("/api/drones").status_code == 401
        assert client.get("/api/ais/vessels", params={"limit": 0}, headers=H).status_code == 422


# ---- AIS in serve -----------------------------------------------------------------------------------------------------
def test_ais_over_tcp_reaches_the_vessel_api_and_survives_a_dropped_connection(tmp_path, shared_media):
    lines = [ln for ln in (shared_media / "F_ais" / "ais_gpsd_lemmer_nl_ais-nmea.log").read_text(errors="replace").splitlines()
             if ln.startswith("!AIVDM")]
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(20)
    port = srv.getsockname()[1]
    svc = Service(_settings(tmp_path, ais=[f"tcp://127.0.0.1:{port}"])).start()
    try:
        conn, _ = srv.accept()
        conn.sendall(("\r\n".join(lines[: len(lines) // 2]) + "\r\n").encode())
        with TestClient(svc.app) as client:
            got = _until(lambda: [v for v in client.get("/api/ais/vessels", headers=H).json()["vessels"] if v["lat_deg"]], 20,
                         "vessels from the TCP feed")
            assert all(abs(v["lat_deg"] - 52.85) < 0.1 for v in got)  # Lemmer
            conn.close()  # the dispatcher drops us: the feed reconnects, the service carries on
            conn2, _ = srv.accept()
            conn2.sendall(("\r\n".join(lines[len(lines) // 2:]) + "\r\n").encode())
            before = len(got)
            after = _until(lambda: (n := len([v for v in client.get("/api/ais/vessels", headers=H).json()["vessels"] if v["lat_deg"]])) > before and n,
                           20, "more vessels after the reconnect")
            ais = [s for s in client.get("/api/sources", headers=H).json() if s["kind"] == "ais"][0]
            assert ais["state"] == "running" and ais["feeds"] == [f"tcp://127.0.0.1:{port}"] and ais["vessels"] >= after
            assert ais["last_message_age_s"] is not None and ais["last_message_age_s"] < 10
            conn2.close()
    finally:
        svc.stop()
        srv.close()


def test_an_inline_drone_of_a_source_is_linked_by_the_service_too(tmp_path):
    port = _free_port(socket.SOCK_DGRAM)
    drone = _drone_cfg(port, id="cam-drone")
    drone.pop("routes")
    cfg = _settings(tmp_path, sources=[{"id": "d-cam", "url": str(tmp_path / "none.mp4"), "models": ["stub"], "drone": drone}])
    from seawatch.service.fleet import Fleet

    fleet = Fleet(cfg)
    assert list(fleet.runners) == ["cam-drone"]
    assert fleet.pose_timelines(cfg) == {"d-cam": fleet.runners["cam-drone"].timeline}
