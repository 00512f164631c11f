"""The view check of fixed cameras (``vision/view_check.py``, ``camera_moved`` / ``camera_covered`` /
``camera_blurred`` incidents in ``service/source_watch.py``), on real pictures from ../shared/media.

A real harbour still warped as the camera turning (the warp is computed through the project's own camera model: the
ground seen under the surveyed pose, projected under the pose turned by a known angle) must be measured to those
angles; the whole car-park time-lapse (a day and a night, cars coming and going, one camera that did not move) must
raise nothing; a covered, a hand-covered and a defocused picture raise their condition after the persistence time
and not before; a running service over an H.264 file whose view turns mid-way raises camera_moved and ends it, stores
the reference and reuses it after a restart, resets it by the API and on a calibration applied."""

from __future__ import annotations

import time
import warnings

import cv2
import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import missing  # noqa: E402
from seawatch.drone.config import CalibrationConfig  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.source_watch import SourceWatch  # noqa: E402
from seawatch.vision.view_check import (ViewCheckConfig, ViewMonitor, ViewReference, intrinsics_of,  # noqa: E402
                                        measure)

S = 1_000_000_000
T0 = 1_800_000_000 * S
KEY = "view-check-test-key-0123456789"
QUAY = {"lat_deg": 53.5461, "lon_deg": 9.9661, "alt_m": 18.0, "pan_deg": 200.0, "tilt_deg": -3.0}
PORT_STILL = "A_boats/shore_proylddb_1080_2022-07-17_09-56_output_0.jpg"  # port with cranes and quay, 1920x1080
HARBOUR_STILL = "A_boats/shore_dlwkigk3_720_2022-07-19_11-58_output_0.jpg"  # harbour entrance, much water and sky
TIMELAPSE = "D_parking_lanes/carpark_timelapse_nf.mp4"  # a car park over a day and a night, 640x480


def _image(shared_media, rel: str) -> np.ndarray:
    p = shared_media / rel
    if not p.is_file():
        missing(f"{rel} is absent from the shared media")
    return cv2.imread(str(p))


def _calibration(w: int, h: int, **pose) -> CalibrationConfig:
    return CalibrationConfig.model_validate({"camera": {"width_px": w, "height_px": h, "hfov_deg": 60},
                                             "surveyed": {**QUAY, **pose}})


def turned(image: np.ndarray, **delta_deg) -> np.ndarray:
    """``image`` as the camera would see it turned by ``delta_deg`` (pan_deg / tilt_deg / roll_deg): ground points
    seen under the surveyed pose, projected under the turned one (the project's own camera model and sign
    conventions), the homography between them applied (a rotation about the camera centre is one homography)."""
    h, w = image.shape[:2]
    base = _calibration(w, h).build()
    xs, ys = np.meshgrid(np.linspace(80, w - 80, 8), np.linspace(h * 0.62, h - 40, 5))
    px = np.c_[xs.ravel(), ys.ravel()]
    ground = base.locate(px)
    assert ground.valid.all()
    moved = _calibration(w, h, **{k: QUAY.get(k, 0.0) + v for k, v in delta_deg.items()}).build()
    u, v = moved.locator.project(ground.lat_deg, ground.lon_deg, np.zeros(len(px)), moved.pose)
    hom, _ = cv2.findHomography(px, np.c_[u, v])
    return cv2.warpPerspective(image, hom, (w, h))


# ---- what one check measures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("still", [PORT_STILL, HARBOUR_STILL])
@pytest.mark.parametrize("delta, tol_deg", [
    ({"pan_deg": 0.5}, 0.05), ({"pan_deg": -2.0}, 0.1), ({"tilt_deg": 0.5}, 0.05), ({"tilt_deg": -2.0}, 0.1),
    ({"roll_deg": 1.0}, 0.1),
])
def test_a_turned_camera_is_measured_in_pan_tilt_roll_degrees(shared_media, still, delta, tol_deg):
    img = _image(shared_media, still)
    h, w = img.shape[:2]
    ref = ViewReference.from_frame(img, 640, "test", T0)
    m = measure(ref, turned(img, **delta), ViewCheckConfig(), intrinsics_of(_calibration(w, h)))
    assert m.method == "features" and m.moved is True and not m.covered
    for axis in ("pan_deg", "tilt_deg", "roll_deg"):
        # a pan of a camera tilted 3 deg down turns the picture a little too (the pose's own geometry): roll is
        # only held tightly when it is what turned
        tol = tol_deg if axis in delta or axis != "roll_deg" else 0.35
        assert abs(getattr(m, axis) - delta.get(axis, 0.0)) <= tol, (axis, m.as_dict())
    assert f"pan {m.pan_deg:+.2f} deg" in m.finding()


def test_an_unmoved_picture_and_a_tiny_turn_are_not_moved(shared_media):
    img = _image(shared_media, PORT_STILL)
    h, w = img.shape[:2]
    k = intrinsics_of(_calibration(w, h))
    ref = ViewReference.from_frame(img, 640, "test", T0)
    same = measure(ref, img, ViewCheckConfig(), k)
    assert same.moved is False and same.shift_px < 0.5 and not same.covered and not same.blurred
    tiny = measure(ref, turned(img, pan_deg=0.03), ViewCheckConfig(), k)
    assert tiny.moved is False and abs(tiny.pan_deg - 0.03) < 0.03


def _timelapse(shared_media) -> list[np.ndarray]:
    p = shared_media / TIMELAPSE
    if not p.is_file():
        missing(f"{TIMELAPSE} is absent from the shared media")
    cap = cv2.VideoCapture(str(p))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) > 150
    return frames


def test_the_car_park_time_lapse_from_day_to_night_raises_nothing(shared_media):
    """162 real pictures of one camera that did not move: cars parking and leaving, dusk, an infrared night, day
    again. Checked one picture every 5 s (the default interval) with the default thresholds: nothing raised."""
    frames = _timelapse(shared_media)
    mon = ViewMonitor("car-park", ViewCheckConfig())
    changes = []
    for i, f in enumerate(frames):
        changes += mon.check(f, T0 + i * 5 * S)
    assert mon.reference is not None and mon.reference.origin == "learnt"  # the first stable minute
    assert 0 < mon.reference.static.sum() < len(mon.reference.points)  # only what stayed in place
    assert changes == [] and mon.raised == {} and mon.pending == {}
    # and each picture against the reference: registered (features, or by night the edges' phase), in place
    ms = [measure(mon.reference, f, ViewCheckConfig()) for f in frames[::2]]
    assert all(m.matched and m.shift_px < 3.0 and not m.covered and not m.blurred for m in ms)
    assert any(m.method == "phase" for m in ms)  # the night: features do not match the day, edges do


def _feed(mon, picture, t0_s, until_s, step_s=5):
    out = []
    for t in range(t0_s, until_s + 1, step_s):
        out += [(t, c) for c in mon.check(picture, T0 + t * S)]
    return out


def _hand(img):
    """A hand over the lens: a smooth, shaded, skin-dark blob over ~95 % of the picture."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    blob = ((xx - w * 0.45) / (w * 0.6)) ** 2 + ((yy - h * 0.55) / (h * 0.65)) ** 2 < 1
    shade = 60 + 40 * yy / h
    out = img.copy()
    out[blob] = np.stack([shade * 0.8, shade * 0.9, shade * 1.2], -1).clip(0, 255).astype(np.uint8)[blob]
    return out


@pytest.mark.parametrize("condition, spoil", [
    ("covered", lambda img: np.zeros_like(img)),
    ("covered", _hand),
    ("blurred", lambda img: cv2.GaussianBlur(img, (0, 0), 3.0)),
    ("moved", lambda img: turned(img, tilt_deg=0.5)),
])
def test_a_spoilt_view_is_raised_after_the_persistence_time_and_ends_when_clear(shared_media, condition, spoil):
    img = _image(shared_media, PORT_STILL)
    cfg = ViewCheckConfig(raise_after_s=30, clear_after_s=20, reference_after_s=0)
    mon = ViewMonitor("quay", cfg, intrinsics_of(_calibration(img.shape[1], img.shape[0])))
    assert _feed(mon, img, 0, 10) == [] and mon.reference is not None
    bad = spoil(img)
    got = _feed(mon, bad, 15, 45)
    assert [(t, c.condition, c.phase) for t, c in got] == [(45, condition, "start")]  # held 30 s at every check
    ch = got[0][1]
    assert ch.since_ns == T0 + 15 * S and ch.measure.conditions()[condition] is True
    assert _feed(mon, bad, 50, 60) == []  # raised once
    back = _feed(mon, img, 65, 90)
    assert [(t, c.condition, c.phase) for t, c in back] == [(85, condition, "end")]  # clear 20 s


def test_a_short_spell_raises_nothing_and_covered_in_the_dark_can_be_left_out(shared_media):
    img = _image(shared_media, PORT_STILL)
    mon = ViewMonitor("quay", ViewCheckConfig(raise_after_s=30, reference_after_s=0))
    _feed(mon, img, 0, 0)
    assert _feed(mon, np.zeros_like(img), 5, 30) == []  # 25 s covered (someone walking past the lens)
    assert _feed(mon, img, 35, 35) == [] and mon.pending == {}
    assert _feed(mon, np.zeros_like(img), 40, 65) == [] and mon.pending  # a new spell counts from 0 again...
    dark_ok = ViewMonitor("quay", ViewCheckConfig(raise_after_s=30, reference_after_s=0, covered_when_dark=False))
    _feed(dark_ok, img, 0, 0)
    assert _feed(dark_ok, np.zeros_like(img), 5, 100) == []  # ...and a black picture is "night" for this camera


def test_a_dusk_fading_into_the_dark_is_night_a_cap_put_on_at_once_is_a_cover(shared_media):
    """A camera without infrared over an unlit scene: its picture fades to black over minutes every evening, which
    must not raise camera_covered every night; a black cap put on from one check to the next does (the old rule
    raised the dusk at 7 min 40 s)."""
    img = _image(shared_media, PORT_STILL).astype(np.float32)
    rng = np.random.default_rng(1)

    def dim(f):
        return (img * f + rng.normal(0, 2, img.shape)).clip(0, 255).astype(np.uint8)

    mon = ViewMonitor("quay", ViewCheckConfig(raise_after_s=30, reference_after_s=0))
    _feed(mon, img.astype(np.uint8), 0, 0)
    got = []
    for k in range(1, 121):  # 10 minutes from daylight to black, a check every 5 s
        got += mon.check(dim(max(0.01, 1.0 - k / 100)), T0 + k * 5 * S)
    assert mon.last.covered and mon.last.brightness < 20  # it is dark and flat...
    assert got == [] and mon.pending == {}  # ...and nothing is raised or pending: night
    cap = ViewMonitor("quay", ViewCheckConfig(raise_after_s=30, reference_after_s=0))
    _feed(cap, img.astype(np.uint8), 0, 20)
    got = _feed(cap, dim(0.01), 25, 60)
    assert [(t, c.condition, c.phase) for t, c in got] == [(55, "covered", "start")]


# ---- the incidents (service/source_watch.py) ------------------------------------------------------------------
def _settings(tmp_path, url="quay.mp4", w=1920, h=1080, view=None, **more):
    drone = {"id": "patrol-1", "connection": "udp:127.0.0.1:9", "camera": {"width_px": 640, "height_px": 360,
                                                                            "hfov_deg": 70}}
    return load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "test", "role": "admin", "key_sha256": hash_api_key(KEY)}]},
        "drones": [{**drone, "video_source": "patrol-cam"}],
        "sources": [{"id": "quay-1", "url": str(url), "models": ["stub"], "analysis_fps": 4,
                     "calibration": {"camera": {"width_px": w, "height_px": h, "hfov_deg": 60}, "surveyed": QUAY}},
                    {"id": "gate", "url": "rtsp://127.0.0.1:9/gate", "models": ["stub"], "view_check": {"enabled": False}},
                    {"id": "patrol-cam", "url": "udp://127.0.0.1:5600", "models": ["stub"]},
                    {"id": "inline-cam", "url": "udp://127.0.0.1:5601", "models": ["stub"],
                     "drone": {**drone, "id": "survey-2", "connection": "udp:127.0.0.1:8"}}],
        "source_alerts": {"view_check": view or {"raise_after_s": 30, "clear_after_s": 30, "reference_after_s": 20}},
        **more,
    })


def test_the_incident_the_stored_reference_a_restart_and_drone_cameras(tmp_path, shared_media):
    img = _image(shared_media, PORT_STILL)
    cfg = _settings(tmp_path)
    w = SourceWatch(cfg)
    assert set(w.view_configs) == {"quay-1"}  # drone cameras (video_source, inline) and a disabled one: not checked
    warnings_seen = []
    w.on_geo_warning = lambda sid, text: warnings_seen.append((sid, text))
    frames = lambda pic, t: {sid: (T0 + t * S, pic, None) for sid in ("quay-1", "gate", "patrol-cam", "inline-cam")}  # noqa: E731
    # GET /api/sources' view_check: none for the cameras not checked, learning before the first picture
    assert [w.view_status(sid) for sid in ("gate", "patrol-cam", "inline-cam", "nope")] == [None] * 4
    assert w.view_status("quay-1")["state"] == "learning"
    for t in range(0, 30, 5):  # the first stable 20 s become the reference, stored
        assert w.check_views(frames(img, t), T0 + t * S) == []
    path = tmp_path / "data" / "media" / "view_reference" / "quay-1.npz"
    assert path.is_file() and path.with_suffix(".jpg").is_file() and set(w.monitors) == {"quay-1"}
    learnt_ns = w.monitors["quay-1"].reference.created_ns
    assert w.check_views(frames(img, 25), T0 + 26 * S) == []  # the same picture is not checked twice

    # a restart: the stored reference is the one compared with (no new learning), and a turned view is an incident
    w2 = SourceWatch(cfg)
    w2.on_geo_warning = lambda sid, text: warnings_seen.append((sid, text))
    bad = turned(img, pan_deg=1.0)
    got, states = [], []
    for t in range(100, 140, 5):
        got += w2.check_views(frames(bad, t), T0 + t * S)
        states.append(w2.view_status("quay-1")["state"])
    assert states == ["checking"] * 6 + ["moved"] * 2, states  # held from 100 s, raised at 130 s
    st = w2.view_status("quay-1")
    assert st["raised"] == ["moved"] and st["pending"] == {} and st["last_check_ns"] == T0 + 135 * S
    assert st["finding"].startswith("moved by ") and "pan +1.0" in st["finding"] and st["reference_origin"] == "learnt"
    assert w2.monitors["quay-1"].reference.created_ns == learnt_ns and w2.monitors["quay-1"].reference.origin == "learnt"
    (ev,) = got
    assert (ev.type, ev.phase, ev.source_id, ev.severity) == ("camera_moved", "start", "quay-1", "high")
    assert ev.start_ns == T0 + 100 * S and ev.at_ns == T0 + 130 * S
    assert ev.geo is not None and ev.geo.lat_deg == QUAY["lat_deg"]  # at the camera, like source_offline
    a = ev.attributes
    assert abs(a["measure"]["pan_deg"] - 1.0) < 0.1 and a["finding"].startswith("moved by ")
    assert "unreliable" in a["geo_warning"] and warnings_seen == [("quay-1", a["geo_warning"])]
    assert ev.snapshot is not None and ev.snapshot.image.shape[1] == 2 * 960  # the view now beside the reference
    assert ev.clip.start_ns < ev.start_ns - 5 * S < ev.clip.end_ns  # the moment it was turned: on video
    # an administrator re-aimed it on purpose: reset, the incident ends, the picture now is the reference
    ended, status = w2.reset_view("quay-1", (T0 + 141 * S, bad, None), T0 + 141 * S)
    (end,) = ended
    assert (end.id, end.phase, end.attributes["end_reason"]) == (ev.id, "end", "view reference reset")
    assert status["reference_origin"] == "reset" and not status["learning"]
    assert warnings_seen[-1] == ("quay-1", None)
    assert ViewReference.load(path).origin == "reset"  # stored: the next restart compares with it
    assert all(w2.check_views(frames(bad, t), T0 + t * S) == [] for t in range(145, 200, 5))
    with pytest.raises(KeyError):
        w2.reset_view("patrol-cam", None, T0)


def test_a_moved_calibrated_camera_s_events_carry_the_geo_warning(tmp_path):
    from seawatch.vision.pipeline import Pipeline, load_pipeline_config
    from test_service_serve import FireEverywhere

    cfg = load_pipeline_config(None, data={
        "sources": [{"id": "quay-1", "url": "x.mp4", "models": ["stub"],
                     "calibration": {"camera": {"width_px": 320, "height_px": 240, "hfov_deg": 60}, "surveyed": QUAY}}],
        "zones": [{"id": "yard", "source": "quay-1", "rules": [
            {"type": "fire_smoke", "labels": ["fire"], "window_frames": 3, "min_hits": 2, "min_duration_s": 0.5,
             "static_min_iou": None}]}]})
    pipe = Pipeline(cfg, detectors={"stub": FireEverywhere()})
    img = np.full((240, 320, 3), 90, np.uint8)
    pipe.set_geo_warning("quay-1", "moved: positions unreliable")
    events = [ev for i in range(8) for ev in pipe.process("quay-1", T0 + i * S // 2, img)]
    assert events and all(ev.attributes.get("geo_warning") == "moved: positions unreliable" for ev in events)
    pipe.set_geo_warning("quay-1", None)
    later = [ev for i in range(8, 40) for ev in pipe.process("quay-1", T0 + i * S // 2, img)] + pipe.close()
    assert later and all("geo_warning" not in ev.attributes for ev in later)


def _write_turning_clip(path, still, turned_still, fps=8, before_s=4, after_s=8):
    """An H.264 file: ``before_s`` of the real picture, then ``after_s`` of it turned (the camera knocked)."""
    import av

    h, w = still.shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": str(fps)})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range((before_s + after_s) * fps):
            pic = still if i < before_s * fps else turned_still
            for p in s.encode(av.VideoFrame.from_ndarray(pic, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_a_running_service_raises_camera_moved_ends_it_and_resets_the_reference(tmp_path, shared_media):
    """A file camera (looping) whose view turns 2 deg after 4 s and comes back when the file starts again: the
    incident (2 deg off the reference) starts (stored, searchable, with its snapshot and the geo warning) and ends;
    the reference is stored, an administrator resets it, and a calibration applied takes the view then as the
    reference."""
    from fastapi.testclient import TestClient

    from seawatch.service.runner import Service
    from test_service_serve import FireEverywhere

    img = cv2.resize(_image(shared_media, PORT_STILL), (960, 540), interpolation=cv2.INTER_AREA)
    clip = _write_turning_clip(tmp_path / "quay.mp4", img, turned(img, pan_deg=2.0))
    cfg = _settings(tmp_path, url=clip, w=960, h=540, view={"interval_s": 0.5, "raise_after_s": 1.5,
                                                            "clear_after_s": 1.5, "reference_after_s": 1.0})
    cfg = cfg.model_copy(update={"sources": cfg.sources[:1], "drones": ()})
    svc = Service(cfg, detectors={"stub": FireEverywhere()}).start()
    h = {"X-API-Key": KEY}
    try:
        with TestClient(svc.app) as client:
            def moved():
                return client.get("/api/events", params={"type": "camera_moved", "source": "quay-1"},
                                  headers=h).json()["events"]

            deadline = time.monotonic() + 45
            while not (moved() and moved()[0]["end_ns"] is not None) and time.monotonic() < deadline:
                time.sleep(0.3)
            (ev,) = moved()[:1]
            assert ev["phase"] == "end" and ev["attributes"]["end_reason"] == "the view matches its reference again", ev
            a = ev["attributes"]
            # The reference is the first view held steady for reference_after_s. Normally that is the picture before
            # the turn (+2 deg measured); on a loaded machine the service may see its first picture only after the
            # turn, learn the turned view, and raise when the file starts again (-2 deg): the same 2 deg either way.
            assert abs(abs(a["measure"]["pan_deg"]) - 2.0) < 0.25 and "unreliable" in a["geo_warning"], a["measure"]
            assert abs(a["end_measure"]["pan_deg"]) < 0.05  # back on the reference view
            assert ev["snapshot_url"] and ev["geo"]["lat_deg"] == QUAY["lat_deg"]
            assert client.get(ev["snapshot_url"], headers=h).status_code == 200
            assert (tmp_path / "data" / "media" / "view_reference" / "quay-1.npz").is_file()

            r = client.post("/api/sources/quay-1/view_reference", headers=h)
            assert r.status_code == 200, r.text
            assert r.json()["reference_origin"] == "reset" and r.json()["learning"] is False
            assert client.post("/api/sources/nope/view_reference", headers=h).status_code == 404
            body = {"calibration": {"camera": {"width_px": 960, "height_px": 540, "hfov_deg": 60},
                                    "surveyed": {**QUAY, "pan_deg": 202.0}}}
            assert client.put("/api/sources/quay-1/calibration", json=body, headers=h).status_code == 200
            assert svc.watch.view_status("quay-1")["reference_origin"] == "calibration"
    finally:
        svc.stop()


def test_a_mast_swaying_back_and_forth_raises_nothing(shared_media):
    """Wind sways the mast: every other check sees the view 0.3 deg off, the next one back in place. Never held for
    30 s at every check: nothing raised (a camera that slipped and stays off is, above)."""
    img = _image(shared_media, PORT_STILL)
    k = intrinsics_of(_calibration(img.shape[1], img.shape[0]))
    mon = ViewMonitor("quay", ViewCheckConfig(raise_after_s=30, reference_after_s=0), k)
    _feed(mon, img, 0, 0)
    off = turned(img, tilt_deg=0.3)
    got = [c for t in range(5, 125, 5) for c in mon.check(off if t % 10 == 5 else img, T0 + t * S)]
    assert got == [] and mon.raised == {}
    assert mon.last.moved is False and mon.check(off, T0 + 125 * S) == [] and mon.last.moved is True


def test_the_check_goes_on_when_the_stream_clock_goes_back(shared_media):
    """A camera's clock re-synchronised backwards (capture times jump back): checks go on, and a condition is timed
    afresh from there, not stalled until the clock catches up."""
    img = _image(shared_media, PORT_STILL)
    mon = ViewMonitor("quay", ViewCheckConfig(raise_after_s=30, reference_after_s=0))
    _feed(mon, img, 1000, 1000)
    black = np.zeros_like(img)
    assert _feed(mon, black, 1005, 1020) == []  # pending since 1005...
    assert mon.due(T0 + 10 * S)  # ...then the clock is 1000 s back
    got = _feed(mon, black, 10, 40)
    assert [(t, c.condition, c.phase, c.since_ns) for t, c in got] == [(40, "covered", "start", T0 + 10 * S)]
