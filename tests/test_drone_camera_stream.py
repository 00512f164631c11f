"""The simulated drone camera (``drone/camera_stream.py``): rendered frames sent as H.264 / MPEG-TS over real UDP,
read back through the project's own ``Source`` (capture times from the stream clock), checked against the poses the
simulator flew; a rendered boat found by the real detector and geotagged; the CLI over MAVLink; ``serve``."""

from __future__ import annotations

import json
import logging
import math
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import onnx_model
from seawatch.drone.geometry import CameraIntrinsics, latlon_to_offsets, offsets_to_latlon
from seawatch.errors import InputError

pytest.importorskip("av")
pytest.importorskip("pymavlink")
log = logging.getLogger(__name__)
HOME = (54.0, 7.0, 0.0)


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flying_sim(port, camera, alt_m=40.0, north_m_s=None, targets=()):
    from seawatch.drone.sim import SimVehicle

    sim = SimVehicle(f"udpout:127.0.0.1:{port}", home=HOME, camera=camera, targets=targets, telemetry_hz=20.0)
    sim.h, sim.armed, sim.mode = alt_m, True, "GUIDED"  # airborne
    sim.guided_target = (5000.0, 0.0, alt_m)  # north at WPNAV_SPEED (5 m/s)
    return sim


def _read(src, seconds):
    frames = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        f = src.read(0.5)
        if f is not None:
            frames.append(f)
    return frames


def test_stream_decodes_through_source_with_capture_times_of_the_rendered_poses():
    """Every decoded frame is stamped (by the reader's stream clock alone) within a few ms of the time whose pose it
    shows: its picture equals the re-rendered pose at its stamp, not the pose one frame before or after (the
    demuxer's one-frame hold-back is what the repeated picture after each frame removes)."""
    from seawatch.drone.camera_stream import CameraStreamer, SimPoses
    from seawatch.streams.source import Source, SourceConfig

    cam = CameraIntrinsics.from_fov(320, 240, 60.0)
    sim = _flying_sim(_free_udp(), cam, alt_m=25.0).start()
    vport = _free_udp()
    src = Source(SourceConfig("drone-cam", f"udp://127.0.0.1:{vport}")).start()
    st = CameraStreamer(SimPoses(sim), cam, f"udp://127.0.0.1:{vport}", fps=4.0).start()
    try:
        frames = _read(src, 6.0)
    finally:
        st.stop()
        src.stop()
        sim.stop()
    sent = list(st.history)
    assert len(sent) >= 18 and st.counters["send_errors"] == 0, st.stats()
    assert len(frames) >= 20, len(frames)
    assert all(f.image.shape == (240, 320, 3) for f in frames)
    times = np.array([s.time_ns for s in sent])
    # speed of the drone (5 m/s at 25 m: 0.12 m per px at 320 px): one frame apart is 1.25 m = 10 px of texture
    checked = 0
    offsets_ms = []
    for f in frames[-12:]:
        j = int(np.argmin(np.abs(times - f.capture_time_ns)))
        off_ms = (f.capture_time_ns - times[j]) / 1e6
        offsets_ms.append(off_ms)
        assert abs(off_ms) < 10.0, off_ms
        if not 0 < j < len(sent) - 1:
            continue
        diff = [float(np.abs(st.render(sent[i].pose).astype(int) - f.image.astype(int)).mean()) for i in (j - 1, j, j + 1)]
        assert diff[1] < 0.6 * min(diff[0], diff[2]), diff  # the stamped pose's picture, not a neighbour's
        checked += 1
    assert checked >= 6
    # the true pose at the stamped time is the pose rendered (the simulator's own record of where it was)
    assert all(s.pose is not None and s.pose.time_ns == s.time_ns for s in sent)
    log.info("drone camera: %s; capture - send offsets %.2f..%.2f ms", st.stats(), min(offsets_ms), max(offsets_ms))


def test_plain_hulls_without_media_and_argument_errors(tmp_path, caplog):
    from seawatch.drone.camera_stream import BoatSpec, CameraStreamer, SimPoses, boat_targets, parse_udp_out

    with caplog.at_level(logging.WARNING):
        targets, bank = boat_targets([BoatSpec(54.0, 7.0, 15.0)], tmp_path / "no-media")
    assert "drawing plain hulls" in caplog.text and targets[0].sprite.source == "plain hull"
    assert parse_udp_out("udp://127.0.0.1:5600")[0] == "udp://127.0.0.1:5600?pkt_size=1316"
    for bad, msg in [("rtsp://x:1", "udp://HOST:PORT"), ("udp://0.0.0.0:5600", "where a receiver listens"),
                     ("udp://127.0.0.1", "needs a host and a port"), ("udp://127.0.0.1:99999", "out of range")]:
        with pytest.raises(InputError, match=msg):
            parse_udp_out(bad)
    with pytest.raises(InputError, match="lat,lon"):
        BoatSpec.parse("54.0")
    with pytest.raises(InputError, match="length_m"):
        BoatSpec.parse("54.0,7.0,0.1")
    cam = CameraIntrinsics.from_fov(320, 240, 60.0)
    with pytest.raises(InputError, match="fps"):
        CameraStreamer(SimPoses(None), cam, fps=100)
    with pytest.raises(InputError, match="even"):
        CameraStreamer(SimPoses(None), CameraIntrinsics.from_fov(321, 240, 60.0))


@pytest.mark.parametrize("argv, message", [
    (["--out", "udp://0.0.0.0:5600"], "where a receiver listens"),
    (["--out", "tcp://127.0.0.1:5600"], "udp://HOST:PORT"),
    (["--size", "640x481"], "must be even"),
    (["--size", "big"], "expected WxH"),
    (["--fps", "0"], "--fps 0: must be 0.2-30"),
    (["--boat", "54.0,7.0,x"], "lat,lon"),
    (["--hfov", "200"], "--hfov"),
])
def test_cli_bad_arguments_are_clear_errors(argv, message, capsys):
    from seawatch.cli import main

    t0 = time.monotonic()
    assert main(["drone", "camera", "udp:127.0.0.1:1", *argv]) == 1
    assert message in capsys.readouterr().err
    assert time.monotonic() - t0 < 2.0  # refused before any connection is tried


@pytest.mark.slow
def test_cli_streams_the_simulator_over_mavlink(tmp_path):
    """``seawatch drone camera`` follows the simulator over MAVLink (its own link, like SITL) and the pipeline's
    ``Source`` decodes the video; the picture follows the vehicle (a boat under the drone shows, then moves)."""
    from seawatch.streams.source import Source, SourceConfig

    mport, vport = _free_udp(), _free_udp()
    sim = _flying_sim(mport, CameraIntrinsics.from_fov(320, 240, 60.0), alt_m=40.0).start()
    src = Source(SourceConfig("drone-cam", f"udp://127.0.0.1:{vport}")).start()
    boat = f"{HOME[0] + 0.0002:.6f},{HOME[1]:.6f},15,90"
    proc = subprocess.Popen([sys.executable, "-m", "seawatch", "drone", "camera", f"udp:127.0.0.1:{mport}",
                             "--out", f"udp://127.0.0.1:{vport}", "--fps", "4", "--size", "320x240",
                             "--media", str(tmp_path / "none"), "--boat", boat, "--seconds", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        frames = _read(src, 9.0)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        src.stop()
        sim.stop()
    assert proc.returncode == 0, err[-2000:]
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[0]["streaming"] == f"udp://127.0.0.1:{vport}" and lines[0]["boats"] == 1
    assert lines[-1]["frames"] >= 20 and lines[-1]["send_errors"] == 0, lines[-1]
    assert "plain hulls" in err
    assert len(frames) >= 20 and frames[-1].image.shape == (240, 320, 3)
    # not a grey "no pose" frame: the sea texture, and it changes as the drone flies north at 5 m/s
    assert frames[-1].image.std() > 5
    assert np.abs(frames[-1].image.astype(int) - frames[-9].image.astype(int)).mean() > 3


@pytest.mark.slow
@pytest.mark.models
def test_streamed_boat_is_detected_and_geotagged_near_its_true_position(shared_media):
    """Boat photos on the rendered sea -> H.264 over UDP -> ``Source`` -> the pipeline (MAVLink link of its own,
    real COCO model) -> the box centre located within a few metres of where the boat was put."""
    from seawatch.drone.camera_stream import BoatSpec, CameraStreamer, SimPoses, boat_targets
    from seawatch.streams.source import Source, SourceConfig
    from seawatch.vision.detector import load_detector
    from seawatch.vision.events import MemorySink
    from seawatch.vision.pipeline import Pipeline, load_pipeline_config

    onnx_model("coco_yolov5n")
    hfov, alt = 60.0, 80.0
    cam = CameraIntrinsics.from_fov(640, 480, hfov)
    boats = []
    for i, (n, e, length) in enumerate([(60.0, -12.0, 20.0), (110.0, 10.0, 18.0)]):
        la, lo = offsets_to_latlon(HOME[0], HOME[1], n, e)
        boats.append(BoatSpec(float(la[0]), float(lo[0]), length, 90.0, sprite=i, name=f"boat{i}"))
    targets, bank = boat_targets(boats, shared_media)
    assert all(t.sprite.source != "plain hull" for t in targets)
    mport, vport = _free_udp(), _free_udp()
    sim = _flying_sim(mport, cam, alt_m=alt)
    sim.n = -20.0
    sim.start()
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "d1-cam", "url": f"udp://127.0.0.1:{vport}", "models": ["coco_yolov5n"]}],
        "drones": [{"id": "d1", "connection": f"udpin:127.0.0.1:{mport}", "video_source": "d1-cam",
                    "camera": {"width_px": 640, "height_px": 480, "hfov_deg": hfov}, "gimbal_default": [0, -90, 0],
                    "sigmas": {"attitude_deg": 0.3, "horizontal_m": 0.5, "vertical_m": 0.3, "timing_s": 0.01}}],
        "zones": [{"id": "all", "source": "d1-cam", "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
    })
    det = load_detector("coco_yolov5n", conf=0.3)
    pipe = Pipeline(cfg, [MemorySink()], detectors={"coco_yolov5n": det})
    src = Source(SourceConfig("d1-cam", f"udp://127.0.0.1:{vport}")).start()
    st = CameraStreamer(SimPoses(sim), cam, f"udp://127.0.0.1:{vport}", fps=3.0, targets=targets, bank=bank)
    errors, events, frames = [], [], 0
    truth_lat = np.array([b.lat_deg for b in boats])
    truth_lon = np.array([b.lon_deg for b in boats])
    try:
        pipe.start(link_timeout_s=5.0)
        st.start()
        end = time.monotonic() + 40.0
        while time.monotonic() < end and sim.n < 150.0:
            f = src.read(0.5)
            if f is None:
                continue
            frames += 1
            evs = pipe.process("d1-cam", f.capture_time_ns, f.image)
            events += evs
            loc = pipe.locator_for("d1-cam", f.capture_time_ns)
            assert not loc.stale, loc.reason
            d = det.detect([f.image])[0]
            d = d[(d.label == "vessel") & (d.confidence >= 0.3)]
            if len(d) == 0:
                continue
            b = d.xyxy_px.astype(np.float64)
            whole = (b[:, 0] > 2) & (b[:, 1] > 2) & (b[:, 2] < 638) & (b[:, 3] < 478)
            res = loc.locate(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1))
            for (lat, lon, _), ok in zip(res, whole):
                dn, de = latlon_to_offsets(lat, lon, truth_lat, truth_lon)
                dist = np.hypot(dn, de)
                assert dist.min() < 15.0, f"a vessel detected {dist.min():.1f} m from every boat"
                if ok:
                    errors.append(float(dist.min()))
        events += pipe.close()
    finally:
        st.stop()
        src.stop()
        pipe.stop()
        sim.stop()
    errors = np.array(errors)
    log.info("streamed boats: %d frames, %d whole-boat detections, geotag error median %.2f m max %.2f m; %s",
             frames, len(errors), np.median(errors) if len(errors) else math.nan,
             errors.max() if len(errors) else math.nan, st.stats())
    assert frames >= 30 and len(errors) >= 8, (frames, len(errors))
    assert np.median(errors) < 2.0 and errors.max() < 5.0, errors
    starts = [e for e in events if e.phase == "start" and e.type == "vessel_in_zone"]
    assert starts and all(e.geo is not None and e.attributes["geo_reference"] == "drone_pose" for e in starts)


class _VesselAtCentre:
    """A stand-in detector: one vessel box in the middle of every non-grey frame (the stream is what is tested)."""

    def detect(self, images):
        from seawatch.vision.detections import Detections

        out = []
        for im in images:
            n = int(im.std() > 5)  # grey = no pose yet
            out.append(Detections(np.array([[130, 90, 190, 150]] * n, np.float32).reshape(n, 4),
                                  np.array([0.9] * n, np.float32), np.zeros(n, np.int32), ("vessel",), model="stub"))
        return out


@pytest.mark.slow
def test_serve_starts_the_simulated_camera_and_its_video_makes_located_events(tmp_path):
    """``fleet[].sim.camera``: ``serve`` starts the streamer with the simulator; the drone's ``video_source`` (a
    plain udp:// source) is decoded, geotagged from the drone's telemetry and gives a located vessel event under the
    drone; stopping the service stops the camera."""
    from fastapi.testclient import TestClient

    from seawatch.service.auth import hash_api_key
    from seawatch.service.config import load_config
    from seawatch.service.runner import Service

    mport, vport = _free_udp(), _free_udp()
    drone = {"id": "patrol-1", "connection": f"udp:127.0.0.1:{mport}", "video_source": "drone-cam",
             "camera": {"width_px": 320, "height_px": 240, "hfov_deg": 70},
             "routes": {"box": {"type": "perimeter", "alt_m": 30, "polygon_lonlat": [
                 [5.699, 52.8385], [5.707, 52.8385], [5.707, 52.8425], [5.699, 52.8425]]}}}
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "t", "role": "admin", "key_sha256": hash_api_key("k" * 24)}]},
        "drones": [drone],
        "fleet": [{"drone": "patrol-1", "patrol": "box",
                   "sim": {"speed": 4.0, "camera": {"port": vport, "fps": 3, "boats": [
                       {"lat_deg": 52.8385, "lon_deg": 5.700, "length_m": 15}]}}}],
        "sources": [{"id": "drone-cam", "url": f"udp://127.0.0.1:{vport}", "models": ["stub"], "analysis_fps": 2}],
        "zones": [{"id": "all", "source": "drone-cam", "rules": [{"type": "vessel_in_zone", "min_duration_s": 0.5}]}],
    })
    events = []
    svc = Service(cfg, detectors={"stub": _VesselAtCentre()}).start()
    try:
        runner = svc.fleet.runners["patrol-1"]
        assert runner.camera is not None and runner.camera.running, runner.camera_error
        deadline = time.monotonic() + 60
        with TestClient(svc.app) as client:
            while time.monotonic() < deadline and not events:
                time.sleep(1.0)
                events = client.get("/api/events", params={"source": "drone-cam", "has_geo": "true"},
                                    headers={"X-API-Key": "k" * 24}).json()["events"]
        st = runner.status()
        cam = runner.camera
    finally:
        svc.stop()
    assert events, "no located event from the drone's video"
    ev = events[0]
    assert ev["attributes"]["geo_reference"] == "drone_pose"
    dn = (ev["geo"]["lat_deg"] - st["lat_deg"]) * 111_320
    de = (ev["geo"]["lon_deg"] - st["lon_deg"]) * 111_320 * math.cos(math.radians(st["lat_deg"]))
    assert math.hypot(dn, de) < 150
    assert cam.counters["frames"] > 5 and not cam.running and runner.camera is None


def test_ais_vessels_are_drawn_where_the_geolocator_puts_them_at_their_length_and_heading():
    """``ais_vessels``: the live AIS table's positioned vessels near the drone appear as boats in its video, at the
    pixel the pipeline's geolocator maps back to their reported position, as long as their AIS length and along
    their heading (COG when no heading); vessels without a position or beyond reach are not drawn."""
    from seawatch.drone.camera_stream import CameraStreamer, SimPoses
    from seawatch.drone.geometry import CameraPose, GeoLocator, offsets_to_latlon
    from seawatch.vision.identity.vessels import VesselState

    cam = CameraIntrinsics.from_fov(640, 360, 70.0)
    lat0, lon0 = 53.0, 5.0
    pose = CameraPose(lat0, lon0, 60.0, gimbal_pitch_deg=-90.0, gimbal_frame="horizon", time_ns=1)
    footprint_m = 2 * 60.0 * np.tan(np.radians(35.0))  # 84 m across 640 px
    (lat_a,), (lon_a,) = offsets_to_latlon(lat0, lon0, np.array([10.0]), np.array([-15.0]))
    (lat_b,), (lon_b,) = offsets_to_latlon(lat0, lon0, np.array([-8.0]), np.array([20.0]))
    (lat_far,), (lon_far,) = offsets_to_latlon(lat0, lon0, np.array([900.0]), np.array([0.0]))
    vessels = [
        VesselState(mmsi=244000001, last_seen_ns=0, lat_deg=lat_a, lon_deg=lon_a, length_m=30.0, heading_deg=90.0),
        VesselState(mmsi=244000002, last_seen_ns=0, lat_deg=lat_b, lon_deg=lon_b, length_m=20.0, cog_deg=0.0),
        VesselState(mmsi=244000003, last_seen_ns=0, lat_deg=lat_far, lon_deg=lon_far, length_m=50.0),
        VesselState(mmsi=244000004, last_seen_ns=0, name="NO FIX YET"),
    ]
    sea_only = CameraStreamer(SimPoses(None), cam, vessels=lambda: []).render(pose)
    with_ais = CameraStreamer(SimPoses(None), cam, vessels=lambda: vessels).render(pose)
    changed = np.abs(with_ais.astype(int) - sea_only.astype(int)).max(axis=2) > 40
    loc = GeoLocator(cam)
    boats = np.zeros_like(changed)
    for lat, lon, length_m, along_east in [(lat_a, lon_a, 30.0, True), (lat_b, lon_b, 20.0, False)]:
        px, inside = loc.project(lat, lon, 0.0, pose)
        assert inside[0], px
        cu, cv = int(round(float(px[0, 0]))), int(round(float(px[0, 1])))
        win = changed[max(0, cv - 80):cv + 80, max(0, cu - 160):cu + 160]
        boats[max(0, cv - 80):cv + 80, max(0, cu - 160):cu + 160] = True
        ys, xs = np.nonzero(win)
        assert len(xs) > 100, f"no boat drawn at ({cu}, {cv})"
        # the boat is centred on the projected position and as long as AIS says, along its heading
        cx, cy = xs.mean() + max(0, cu - 160), ys.mean() + max(0, cv - 80)
        assert abs(cx - cu) < 12 and abs(cy - cv) < 12, ((cx, cy), (cu, cv))
        along = (xs.max() - xs.min() + 1) if along_east else (ys.max() - ys.min() + 1)
        across = (ys.max() - ys.min() + 1) if along_east else (xs.max() - xs.min() + 1)
        want_px = length_m / footprint_m * 640
        assert 0.8 * want_px < along < 1.15 * want_px and across < 0.6 * along, (along, across, want_px)
    assert not (changed & ~boats).any()  # nothing else drawn: not the vessel without a fix, nor one 900 m away
    # a table that fails mid-update does not stop the video: the frame is the sea alone
    broken = CameraStreamer(SimPoses(None), cam, vessels=lambda: 1 / 0).render(pose)
    assert np.array_equal(broken, sea_only)
