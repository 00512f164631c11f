"""A camera's recording beyond its events: what is on record (spans of video across segments, split at outages), any
window played as a clip with the capture time of its first picture, the recorded picture at a given time, and an
event a person reports from the recording (snapshot from that picture, position from the spot marked in it)."""

from __future__ import annotations

import math
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from fastapi.testclient import TestClient  # noqa: E402

from seawatch.errors import StreamError  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.streams.packets import PacketRing  # noqa: E402
from seawatch.streams.recording import (  # noqa: E402
    ClipCoverage,
    ClipStore,
    list_segments,
    picture_at,
    read_clip_coverage,
    recorded_video,
)
from seawatch.streams.source import Source, SourceConfig  # noqa: E402
from test_recording_safety import _record  # noqa: E402

S = 1_000_000_000
T0 = 1_800_000_000 * S
FPS = 25
KEY = "recordings-key-0123456789abcdef"
CAMERA = {"lat_deg": 52.8420, "lon_deg": 5.7000, "alt_m": 12.0, "pan_deg": 150.0, "tilt_deg": -25.0}


def ramp_clip(path: Path, *, frames: int = 100, b_frames: int = 0, size=(160, 120)) -> Path:
    """H.264, 25 fps, a keyframe every second; picture i is grey with a white column at x = 20 + i, so a decoded
    picture says which one it is."""
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=FPS, options={"g": str(FPS), "bf": str(b_frames), "preset": "ultrafast",
                                                          "keyint_min": str(FPS), "sc_threshold": "0"})
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), 60, np.uint8)
            img[:, 20 + i] = 255
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> Path:
    return ramp_clip(tmp_path_factory.mktemp("media") / "ramp.mp4")


@pytest.fixture(scope="module")
def ramp_b(tmp_path_factory) -> Path:
    return ramp_clip(tmp_path_factory.mktemp("media") / "ramp_b.mp4", b_frames=2)


def _which(img: np.ndarray) -> int:
    """The ramp picture an image shows (its white column back to an index)."""
    return int(np.argmax(img.astype(np.float64).mean(axis=(0, 2)))) - 20


def test_recorded_video_joins_segments_and_splits_at_an_outage(tmp_path, ramp):
    root = tmp_path / "rec"
    _record(ramp, root, "cam", T0, segment_s=1.0)
    _record(ramp, root, "cam", T0 + 20 * S, segment_s=1.0)  # the camera was out from 4 s to 20 s
    rec = recorded_video(root, "cam")
    segs = list_segments(root, "cam")
    assert rec.segments == len(segs) >= 6
    assert rec.bytes == sum(s.size_bytes for s in segs) > 0
    assert len(rec.spans) == 2, rec.spans
    (a, b), (c, d) = rec.spans
    last = T0 + 99 * S // FPS  # the 100th picture
    assert a == T0 and abs(b - last) < S // 1000
    assert c == T0 + 20 * S and abs(d - (last + 20 * S)) < S // 1000
    assert (rec.oldest_ns, rec.newest_ns) == (a, d)
    assert rec.within(T0 + S, T0 + 21 * S) == ((T0 + S, b), (c, T0 + 21 * S))
    assert rec.within(T0 + 5 * S, T0 + 19 * S) == ()  # inside the outage
    nothing = recorded_video(root, "nobody")
    assert (nothing.spans, nothing.segments, nothing.oldest_ns) == ((), 0, None)


@pytest.mark.parametrize("b_frames", [0, 2])
def test_picture_at_decodes_the_recorded_picture_nearest_a_time(tmp_path, ramp, ramp_b, b_frames):
    root = tmp_path / "rec"
    _record(ramp_b if b_frames else ramp, root, "cam", T0, segment_s=1.0)
    for i in (0, 13, 24, 25, 37, 62, 99):
        for jitter_ns in (-15_000_000, 0, 15_000_000):  # a time between pictures gives the nearest
            at = T0 + i * S // FPS + jitter_ns
            if at < T0:
                continue
            t, img = picture_at(at, recordings=root, source_id="cam")
            assert abs(t - (T0 + i * S // FPS)) < S // 1000, (i, jitter_ns, t - T0)
            assert img.shape == (120, 160, 3)
            assert _which(img) == i, (i, jitter_ns, _which(img))
    t, img = picture_at(T0 + 5 * S, recordings=root, source_id="cam")  # 1 s after the last picture: that one
    assert _which(img) == 99
    for far in (T0 + 7 * S, T0 - 3 * S):  # nothing within 2 s: no older or newer picture stands in
        with pytest.raises(StreamError, match="no recorded picture"):
            picture_at(far, recordings=root, source_id="cam")


def test_picture_at_from_the_pre_event_ring(ramp_b):
    ring = PacketRing(max_age_s=60)
    with Source(SourceConfig("cam", str(ramp_b), pace="fast", start_time_ns=T0), ring=ring) as src:
        for _ in src:
            pass
    t, img = picture_at(T0 + 50 * S // FPS, ring=ring, source_id="cam")
    assert t == T0 + 50 * S // FPS and _which(img) == 50


def test_a_clip_records_the_capture_time_of_its_first_picture(tmp_path, ramp_b):
    root = tmp_path / "rec"
    _record(ramp_b, root, "cam", T0, segment_s=1.0)
    clips = ClipStore(tmp_path / "clips", root)
    path = clips.get("cam", T0 + 3 * S // 2, T0 + 5 * S // 2)  # 1.5 s - 2.5 s: from the keyframe at 1 s
    cov = read_clip_coverage(path)
    assert cov.first_ns == T0 + S
    assert ClipCoverage.parse(cov.comment()) == cov
    old = ClipCoverage.parse(f"seawatch window_ns={T0}-{T0 + S} covered_ns={T0}-{T0 + S} complete")  # older records
    assert old is not None and old.first_ns is None
    import av

    with av.open(str(path)) as c:  # video time t shows the picture captured at first_ns + t
        pics = [(float(f.time), _which(f.to_ndarray(format="bgr24"))) for f in c.decode(video=0)]
    t0 = pics[0][0]
    assert pics[0][1] == 25 and len(pics) >= 38
    for t, which in pics:
        assert which == 25 + round((t - t0) * FPS), (t, which)


def _settings(tmp_path, **storage):
    return load_config(data={
        "storage": {"data_dir": str(tmp_path / "data"), **storage},
        "auth": {"api_keys": [{"name": "desk", "role": "operator", "key_sha256": hash_api_key(KEY)}]},
        "sources": [{"id": "quay", "url": "rtsp://cam/quay",
                     "calibration": {"camera": {"width_px": 160, "height_px": 120, "hfov_deg": 60}, "surveyed": CAMERA}},
                    {"id": "gate", "url": "rtsp://cam/gate"}]})


def _metres(lat0, lon0, lat1, lon1) -> tuple[float, float]:
    """(distance m, bearing deg) on a local tangent plane (tens of metres)."""
    north = (lat1 - lat0) * 111_320.0
    east = (lon1 - lon0) * 111_320.0 * math.cos(math.radians(lat0))
    return math.hypot(north, east), math.degrees(math.atan2(east, north)) % 360


def test_recordings_api_lists_plays_and_reports(tmp_path, ramp_b):
    cfg = _settings(tmp_path)
    media = cfg.storage.resolved_media_dir()
    _record(ramp_b, media / "recordings", "quay", T0, segment_s=1.0)
    _record(ramp_b, media / "recordings", "quay", T0 + 20 * S, segment_s=1.0)
    h = {"X-API-Key": KEY}
    heard = []
    app = create_app(cfg)
    app.state.live.add_listener(heard.append)
    with TestClient(app) as client:
        r = client.get("/api/sources/quay/recordings", headers=h)
        assert r.status_code == 200, r.text
        rec = r.json()
        assert rec["recording"] is True and rec["max_clip_s"] == 1800 and rec["segments"] >= 6 and rec["bytes"] > 0
        assert [s["start_ns"] for s in rec["spans"]] == [T0, T0 + 20 * S]
        assert rec["oldest_ns"] == T0 and rec["newest_ns"] == rec["spans"][1]["end_ns"]
        part = client.get("/api/sources/quay/recordings", params={"start_ns": T0 + 2 * S, "end_ns": T0 + 21 * S}, headers=h).json()
        assert [(s["start_ns"], s["end_ns"]) for s in part["spans"]] == [(T0 + 2 * S, rec["spans"][0]["end_ns"]),
                                                                          (T0 + 20 * S, T0 + 21 * S)]
        assert client.get("/api/sources/gate/recordings", headers=h).json()["spans"] == []

        # any window plays: across the outage it is partial, and says where its pictures are
        r = client.get("/api/sources/quay/clip", params={"start_ns": T0 + 3 * S, "end_ns": T0 + 21 * S}, headers=h)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4", r.text
        assert r.headers["x-clip-coverage"] == "partial" and r.headers["x-clip-first-ns"] == str(T0 + 3 * S)
        assert r.headers["x-clip-covered-ns"].startswith(f"{T0 + 3 * S}-") and f",{T0 + 20 * S}-" in r.headers["x-clip-covered-ns"]
        assert "content-disposition" not in r.headers
        clip_file = tmp_path / "window.mp4"
        clip_file.write_bytes(r.content)
        import av

        with av.open(str(clip_file)) as c:
            assert sum(1 for _ in c.decode(video=0)) >= 25 + 25  # 3-4 s, then 20-21 s
        ranged = client.get("/api/sources/quay/clip", params={"start_ns": T0 + 3 * S, "end_ns": T0 + 21 * S},
                            headers={**h, "Range": "bytes=0-99"})
        assert ranged.status_code == 206 and len(ranged.content) == 100
        dl = client.get("/api/sources/quay/clip", params={"start_ns": T0 + S, "end_ns": T0 + 2 * S, "download": "true"}, headers=h)
        assert dl.status_code == 200 and 'filename="seawatch-quay-20270115T080001Z-1s.mp4"' in dl.headers["content-disposition"]
        assert dl.headers["x-clip-coverage"] == "complete"

        # what cannot be played says why
        gap = client.get("/api/sources/quay/clip", params={"start_ns": T0 + 8 * S, "end_ns": T0 + 12 * S}, headers=h)
        assert gap.status_code == 404 and "no recording of quay" in gap.json()["error"]["message"]
        for bad, why in (({"start_ns": T0 + 2 * S, "end_ns": T0 + S}, "empty"),
                         ({"start_ns": T0, "end_ns": T0 + 1801 * S}, "at most 1800 s"),
                         ({"start_ns": T0}, "end_ns"), ({"start_ns": "soon", "end_ns": T0}, "start_ns"),
                         ({"start_ns": -5, "end_ns": T0}, "start_ns")):
            r = client.get("/api/sources/quay/clip", params=bad, headers=h)
            assert r.status_code == 422 and why in r.json()["error"]["message"], (bad, r.text)
        assert client.get("/api/sources/nope/clip", params={"start_ns": T0, "end_ns": T0 + S}, headers=h).status_code == 404
        assert client.get("/api/sources/quay/clip", params={"start_ns": T0, "end_ns": T0 + S}).status_code == 401
        assert client.get("/api/sources/../clip", params={"start_ns": T0, "end_ns": T0 + S}, headers=h).status_code == 404

        # a person reports smoke seen at 2.4 s, marking the spot at the picture's centre
        at = T0 + 60 * S // FPS
        body = {"source": "quay", "start_ns": T0 + S, "end_ns": T0 + 3 * S, "at_ns": at + 7_000_000,
                "point_px": [80, 60], "type": "smoke", "severity": "high", "note": "smoke behind the crane"}
        r = client.post("/api/events", json=body, headers=h)
        assert r.status_code == 201, r.text
        ev = r.json()
        assert (ev["type"], ev["severity"], ev["phase"], ev["source_id"]) == ("smoke", "high", "end", "quay")
        assert (ev["start_ns"], ev["end_ns"], ev["at_ns"]) == (T0 + S, T0 + 3 * S, at)
        assert ev["attributes"]["reported_by"] == "key:desk" and ev["attributes"]["note"] == "smoke behind the crane"
        assert ev["attributes"]["point_px"] == [80.0, 60.0] and ev["attributes"]["geo_reference"] == "calibration"
        assert ev["review_status"] == "acknowledged"
        assert ev["review_history"][-1]["note"] == "reported: smoke behind the crane"
        # the centre ray of a camera 12 m up, looking 25 deg down on bearing 150 deg, meets the ground 12/tan(25) out
        dist, bearing = _metres(CAMERA["lat_deg"], CAMERA["lon_deg"], ev["geo"]["lat_deg"], ev["geo"]["lon_deg"])
        assert abs(dist - 12 / math.tan(math.radians(25))) < 1.0 and abs(bearing - 150) < 1.0, (dist, bearing)
        assert ev["geo"]["semi_major_m"] > 0
        import cv2

        snap = client.get(ev["snapshot_url"], headers=h)
        assert snap.status_code == 200
        img = cv2.imdecode(np.frombuffer(snap.content, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (120, 160, 3) and _which(img) == 60  # the picture at 2.4 s, not the window's middle
        x1, y1, x2, y2 = ev["snapshot"]["xyxy_px"]
        assert x1 < 80 < x2 and y1 < 60 < y2
        clip = client.get(ev["clip_url"], headers=h)
        assert clip.status_code == 200 and clip.headers["x-clip-coverage"] == "complete"
        found = client.get("/api/events", params={"type": "smoke", "source": "quay"}, headers=h).json()["events"]
        assert [e["id"] for e in found] == [ev["id"]]
        assert [m["event"]["id"] for m in heard if m.get("kind") == "event"] == [ev["id"]]  # published, once stored

        # without a spot: the whole picture, no position, and the default type
        r = client.post("/api/events", json={"source": "gate" if False else "quay", "start_ns": T0 + 20 * S,
                                             "end_ns": T0 + 22 * S}, headers=h)
        assert r.status_code == 201, r.text
        plain = r.json()
        assert plain["type"] == "manual_report" and plain["severity"] == "medium" and plain["geo"] is None
        assert plain["geo_reason"] == "reported without a spot in the picture"
        assert plain["snapshot"]["xyxy_px"] == [0.0, 0.0, 160.0, 120.0] and plain["at_ns"] == T0 + 21 * S

        # a boat with its box drawn: its label, the box as the subject, located where it meets the water
        # asked for at the window's very start, between two pictures: the picture nearest is just before the
        # window, and the event's window holds it (start <= at <= end), its clip too
        edge = T0 + 20 * S + 15_000_000  # 15 ms after the picture at 20.00 s, 25 ms before the next
        r = client.post("/api/events", json={"source": "quay", "start_ns": edge, "end_ns": edge + 2 * S, "at_ns": edge},
                        headers=h)
        assert r.status_code == 201, r.text
        edge_ev = r.json()
        assert edge_ev["at_ns"] == T0 + 20 * S and edge_ev["start_ns"] == edge_ev["at_ns"] <= edge_ev["end_ns"] == edge + 2 * S
        assert edge_ev["clip"]["start_ns"] == edge_ev["at_ns"]
        r = client.post("/api/events", json={"source": "quay", "start_ns": T0 + 20 * S, "end_ns": T0 + 22 * S,
                                             "box_px": [60, 40, 100, 70], "label": "vessel", "type": "vessel_in_zone"},
                        headers=h)
        assert r.status_code == 201, r.text
        boat = r.json()
        assert boat["labels"] == ["vessel"] and boat["scores"] == [1.0]
        assert boat["snapshot"]["xyxy_px"] == [60.0, 40.0, 100.0, 70.0]
        assert boat["attributes"]["box_drawn"] is True and boat["attributes"]["point_px"] == [80.0, 70.0]
        near, _ = _metres(CAMERA["lat_deg"], CAMERA["lon_deg"], boat["geo"]["lat_deg"], boat["geo"]["lon_deg"])
        assert near < dist  # 10 px below the centre: nearer the camera than the centre's spot
        assert "box_drawn" not in ev["attributes"] and ev["labels"] == []
        boat_id = boat["id"]

        # the incidents of a window (the recordings bar's ticks): started before its end, still going at its start
        iso = lambda ns: datetime.fromtimestamp(ns / S, tz=timezone.utc).isoformat()  # noqa: E731
        during = client.get("/api/events", params={"active_from": iso(T0 + 2 * S), "start_to": iso(T0 + 30 * S)}, headers=h)
        assert {e["id"] for e in during.json()["events"]} == {ev["id"], plain["id"], boat_id, edge_ev["id"]}
        later = client.get("/api/events", params={"active_from": iso(T0 + 4 * S), "start_to": iso(T0 + 30 * S)}, headers=h)
        assert {e["id"] for e in later.json()["events"]} == {plain["id"], boat_id, edge_ev["id"]}

        # refused reports: nothing recorded there, unknown camera, hostile bodies; nothing is stored for them
        n = client.get("/api/events", headers=h).json()["events"]
        for bad, code, why in (
                ({"source": "quay", "start_ns": T0 + 8 * S, "end_ns": T0 + 12 * S}, 404, "no recorded picture"),
                ({"source": "gate", "start_ns": T0, "end_ns": T0 + S}, 404, "no recorded picture"),
                ({"source": "nope", "start_ns": T0, "end_ns": T0 + S}, 404, "no source"),
                ({"source": "quay", "start_ns": T0 + S, "end_ns": T0}, 422, "end_ns must be after"),
                ({"source": "quay", "start_ns": T0, "end_ns": T0 + S, "at_ns": T0 + 2 * S}, 422, "at_ns must lie"),
                ({"source": "quay", "start_ns": T0, "end_ns": T0 + 3600 * S}, 422, "at most 1800 s"),
                ({"source": "quay", "start_ns": T0, "end_ns": T0 + S, "point_px": [500, 20]}, 422, "outside the 160x120"),
                ({"source": "quay", "start_ns": T0, "end_ns": T0 + S, "point_px": [1]}, 422, "point_px"),
                ({"source": "quay", "start_ns": T0, "end_ns": T0 + S, "box_px": [50, 50, 10, 60]}, 422, "box_px"),
                ({"source": "quay", "start_ns": T0, "end_ns": T0 + S, "type": "Fire!"}, 422, "type"),
                ({"source": "quay", "start_ns": T0, "end_ns": T0 + S, "label": "Boat 1"}, 422, "label"),
                ({"source": "quay", "start_ns": T0, "end_ns": T0 + S, "note": "x" * 2001}, 422, "note"),
                ({"source": "quay", "start_ns": T0, "end_ns": T0 + S, "review_status": "confirmed"}, 422, "review_status")):
            r = client.post("/api/events", json=bad, headers=h)
            assert r.status_code == code and why in r.json()["error"]["message"], (bad, r.text)
        assert client.post("/api/events", json=body).status_code == 401
        assert len(client.get("/api/events", headers=h).json()["events"]) == len(n)


def test_no_recording_is_said_so(tmp_path):
    app = create_app(_settings(tmp_path, recording={"enabled": False}))
    with TestClient(app) as client:
        r = client.get("/api/sources/quay/recordings", headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["recording"] is False and r.json()["spans"] == []


def test_the_service_plays_and_reports_from_a_live_cameras_recording(tmp_path):
    """The real service on a file played as a live camera: its recording grows (the segment being written and the
    ring count), the last seconds play, and a report from them goes through the service's sink (stored, published)."""
    from test_service_serve import KEY as SERVE_KEY
    from test_service_serve import file_camera_service

    with file_camera_service(tmp_path) as svc:
        with TestClient(svc.app) as client:
            h = {"X-API-Key": SERVE_KEY}
            deadline = time.monotonic() + 20
            while True:
                rec = client.get("/api/sources/quay-1/recordings", headers=h).json()
                if rec["spans"] and rec["newest_ns"] - rec["oldest_ns"] > 3 * S:
                    break
                assert time.monotonic() < deadline, rec
                time.sleep(0.3)
            assert abs(rec["newest_ns"] - time.time_ns()) < 3 * S  # a live camera: recorded up to now
            end = rec["newest_ns"]
            r = client.get("/api/sources/quay-1/clip", params={"start_ns": end - 2 * S, "end_ns": end}, headers=h)
            assert r.status_code == 200 and int(r.headers["x-clip-first-ns"]) <= end - 2 * S, r.text
            r = client.post("/api/events", json={"source": "quay-1", "start_ns": end - 2 * S, "end_ns": end,
                                                 "point_px": [10, 10], "note": "person on the quay"}, headers=h)
            assert r.status_code == 201, r.text
            ev = r.json()
            assert ev["geo"] is None and ev["geo_reason"] == "source is not geo-referenced"
            assert svc.store.get(ev["id"]).attributes["note"] == "person on the quay"
            assert client.get(ev["snapshot_url"], headers=h).status_code == 200


def test_evidence_of_an_open_incident_holds_its_video_so_far(tmp_path, ramp_b):
    """A fire burning for an hour is exported while still open: the package holds the clip from its pre-roll to the
    newest recorded picture, and its manifest says the clip ends there and why (it used to hold no video at all)."""
    import io
    import json
    import zipfile

    from seawatch.vision.events import ClipRef, Event

    review_key = "recordings-reviewer-key-0123456789"
    cfg = _settings(tmp_path)
    cfg = load_config(data={**cfg.model_dump(mode="json", exclude_none=True, exclude={"auth"}),
                            "auth": {"api_keys": [{"name": "rev", "role": "reviewer", "key_sha256": hash_api_key(review_key)}]}})
    media = cfg.storage.resolved_media_dir()
    _record(ramp_b, media / "recordings", "quay", T0, segment_s=1.0)  # 4 s of video from T0
    app = create_app(cfg)
    open_fire = Event(id="fire-open", type="fire", severity="critical", phase="start", source_id="quay", start_ns=T0 + 2 * S,
                      at_ns=T0 + 2 * S, labels=("fire",), scores=(0.9,), clip=ClipRef("quay", T0 + 1 * S, None, S, 5 * S))
    no_video = Event(id="fire-gate", type="fire", severity="high", phase="start", source_id="gate", start_ns=T0,
                     at_ns=T0, labels=("fire",), scores=(0.9,), clip=ClipRef("gate", T0 - S, None, S, 5 * S))
    h = {"X-API-Key": review_key}
    with TestClient(app) as client:
        app.state.store.put(open_fire)
        app.state.store.put(no_video)
        r = client.get("/api/events/fire-open/evidence.zip", headers=h)
        assert r.status_code == 200, r.text
        z = zipfile.ZipFile(io.BytesIO(r.content))
        assert "clip.mp4" in z.namelist()
        manifest = json.loads(z.read("manifest.json"))
        assert "clip.mp4" not in manifest["missing"]
        assert "still open" in manifest["notes"]["clip.mp4"] and "newest recorded picture" in manifest["notes"]["clip.mp4"]
        from seawatch.service.export import iso

        newest = recorded_video(media / "recordings", "quay").newest_ns
        cov = manifest["clip_coverage"]
        assert cov["window_end"] == iso(newest) and cov["complete"] and cov["window_s"] >= 2.0, cov
        clip_file = tmp_path / "so_far.mp4"
        clip_file.write_bytes(z.read("clip.mp4"))
        import av

        with av.open(str(clip_file)) as c:
            assert sum(1 for _ in c.decode(c.streams.video[0])) >= 2 * FPS  # seconds of video, not a stub
        # an open incident on a camera with nothing recorded: said so
        z = zipfile.ZipFile(io.BytesIO(client.get("/api/events/fire-gate/evidence.zip", headers=h).content))
        missing = json.loads(z.read("manifest.json"))["missing"]
        assert "clip.mp4" not in z.namelist() and "none of its video is recorded yet" in missing["clip.mp4"]
