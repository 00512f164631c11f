"""Vessel identity through ``Pipeline.process``: AIS NMEA (generated here) + a registry CSV + a calibrated camera.

Two boats are seen by a calibrated fixed camera (injected detections at the pixels where their known positions
project). Boat A broadcasts AIS at its position; boat B does not and is in no registry. A's ``vessel_in_zone``
events carry its AIS/registry identity; B becomes ``unidentified_vessel`` after ``unidentified_after_s``.
"""

from __future__ import annotations

import math
import socket
import time

import numpy as np
import pytest

from seawatch.drone.config import CalibrationConfig
from seawatch.drone.geometry import latlon_to_offsets, offsets_to_latlon
from seawatch.errors import ConfigError, InputError
from seawatch.vision.detections import Detections
from seawatch.vision.events import MemorySink, read_json_lines, JsonLinesSink
from seawatch.vision.pipeline import Pipeline, load_pipeline_config

pyais = pytest.importorskip("pyais")

T0_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
T0_S = T0_NS // 10**9
CAM = (53.55, 8.58)
PAN_DEG = 30.0
CALIB = {
    "camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 60.0},
    "surveyed": {"lat_deg": CAM[0], "lon_deg": CAM[1], "alt_m": 20.0, "pan_deg": PAN_DEG, "tilt_deg": -10.0},
}
MMSI_A = 211000001
MMSI_OTHER = 211000999  # far away, must not be associated with anything
STEP_NS = 500_000_000


def _cs(body: str) -> str:
    c = 0
    for ch in body.encode():
        c ^= ch
    return f"{c:02X}"


def _tagged(sentence: str, t_s: float) -> str:
    body = f"s:test,c:{t_s:.3f}"
    return f"\\{body}*{_cs(body)}\\{sentence}"


def _ahead(fwd_m: float, right_m: float) -> tuple[float, float]:
    c, s = math.cos(math.radians(PAN_DEG)), math.sin(math.radians(PAN_DEG))
    la, lo = offsets_to_latlon(CAM[0], CAM[1], fwd_m * c - right_m * s, fwd_m * s + right_m * c)
    return float(la[0]), float(lo[0])


BOAT_A = _ahead(180.0, -10.0)
BOAT_B = _ahead(260.0, 45.0)


def _nmea(path, mmsi: int, where: tuple[float, float], name: str, t_from_s: float, t_to_s: float, every_s: float = 2.0):
    lines = []
    t = t_from_s
    while t <= t_to_s:
        pos = pyais.encode_dict({"msg_type": 1, "mmsi": mmsi, "lat": where[0], "lon": where[1], "speed": 0.0,
                                 "course": 0.0, "heading": 0, "status": 5}, talker_id="AI", radio_channel="A")
        lines += [_tagged(s, T0_S + t) for s in pos]
        if abs((t - t_from_s) % 10.0) < 1e-9:
            static = pyais.encode_dict({"msg_type": 5, "mmsi": mmsi, "shipname": name, "callsign": "DABC",
                                        "ship_type": 30}, talker_id="AI", radio_channel="A")
            lines += [_tagged(s, T0_S + t) for s in static]
        t += every_s
    with open(path, "a", encoding="ascii") as fh:
        fh.write("\r\n".join(lines) + "\r\n")


class BoxDetector:
    name = "boxes"
    labels = ("vessel",)

    def __init__(self, boxes) -> None:
        self.boxes = list(boxes)

    def detect(self, images):
        n = len(self.boxes)
        return [Detections(np.asarray(self.boxes, np.float32).reshape(n, 4), np.full(n, 0.9, np.float32),
                           np.zeros(n, np.int32), self.labels, model=self.name) for _ in images]


def _box_at(lat_lon) -> tuple[float, float, float, float]:
    cam = CalibrationConfig.model_validate(CALIB).build()
    px, ok = cam.locator.project(lat_lon[0], lat_lon[1], 0.0, cam.pose)
    assert ok[0]
    x, y = px[0]
    return (float(x) - 30, float(y) - 20, float(x) + 30, float(y))  # waterline (bottom centre) at the point


def _square(lat, lon, half_m):
    la, lo = offsets_to_latlon(lat, lon, [-half_m, -half_m, half_m, half_m], [-half_m, half_m, half_m, -half_m])
    return [[float(b), float(a)] for a, b in zip(la, lo)]


def _config(tmp_path, registry_rows: str, ais=None, **identity):
    reg = tmp_path / "registry.csv"
    reg.write_text("name,mmsi,licence_status,blacklisted\n" + registry_rows, encoding="utf-8")
    if ais is None:
        ais = tmp_path / "ais.nmea"
        _nmea(ais, MMSI_A, BOAT_A, "NORDWIND", -20.0, 40.0)
        _nmea(ais, MMSI_OTHER, _ahead(3000.0, 0.0), "FARAWAY", -20.0, 40.0)
        ais = [str(ais)]
    return load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://cam/quay", "models": ["boxes"], "calibration": CALIB}],
        "zones": [{"id": "harbour", "source": "quay", "polygon_lonlat": _square(CAM[0], CAM[1], 600.0),
                   "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
        "ais": ais,
        "registry": str(reg),
        "identity": {"unidentified_after_s": 5.0, "mismatch_confirm": 3} | identity,
    })


def _run(cfg, boxes, seconds: float, sink=None):
    pipe = Pipeline(cfg, [sink] if sink is not None else [], detectors={"boxes": BoxDetector(boxes)})
    image = np.zeros((720, 1280, 3), np.uint8)
    events = []
    n = int(seconds * 1e9 / STEP_NS)
    for k in range(n):
        events += pipe.process("quay", T0_NS + k * STEP_NS, image)
    events += pipe.close()
    return pipe, events


def _dist_m(a, lat, lon) -> float:
    n, e = latlon_to_offsets(a[0], a[1], lat, lon)
    return float(math.hypot(n[0], e[0]))


def test_unregistered_boat_is_unidentified_after_T_and_the_ais_boat_is_identified(tmp_path):
    cfg = _config(tmp_path, "NORDWIND,211000001,valid,no\n")
    sink = MemorySink()
    pipe, events = _run(cfg, [_box_at(BOAT_A), _box_at(BOAT_B)], 12.0, sink)
    assert sink.events == events  # identity events go through the same sinks as the rules' events
    zone_starts = [e for e in events if e.type == "vessel_in_zone" and e.phase == "start"]
    assert len(zone_starts) == 2
    by_place = {("A" if _dist_m(BOAT_A, e.geo.lat_deg, e.geo.lon_deg) < 5 else "B"): e for e in zone_starts}
    assert set(by_place) == {"A", "B"}
    a, b = by_place["A"], by_place["B"]
    assert a.attributes["mmsi"] == MMSI_A and a.attributes["vessel_name"] == "NORDWIND"
    assert a.attributes["identity"] == "ais+registry" and 0 < a.attributes["identity_confidence"] <= 1
    assert a.attributes["ais_name"] == "NORDWIND"
    assert b.attributes["identity"] == "none" and "mmsi" not in b.attributes

    unident = [e for e in events if e.type == "unidentified_vessel"]
    assert [e.phase for e in unident] == ["start", "end"]
    start, end = unident
    assert start.track_ids == b.track_ids and end.id == start.id and end.seq == 1
    waited_s = (start.at_ns - start.start_ns) / 1e9
    assert 5.0 <= waited_s <= 5.0 + STEP_NS / 1e9
    assert start.start_ns - T0_NS <= 1.5e9  # B was tracked within the first frames
    assert start.geo is not None and _dist_m(BOAT_B, start.geo.lat_deg, start.geo.lon_deg) <= max(1.0, 3 * start.geo.semi_major_m)
    assert start.geo.semi_major_m > start.geo.semi_minor_m  # the full ellipse, not a radius
    assert start.severity == "medium" and "no AIS match" in start.attributes["reason"]
    assert start.zone_id == "harbour" and start.clip is not None and start.clip.source_id == "quay"
    assert end.attributes["end_reason"] == "end of input"
    assert not [e for e in events if e.type in ("identity_mismatch", "registry_alert", "ais_dark")]
    # the JSON-lines form survives a round trip
    out = tmp_path / "events.jsonl"
    js = JsonLinesSink(out)
    for e in events:
        js.emit(e)
    js.close()
    assert [e.type for e in read_json_lines(out)] == [e.type for e in events]


def test_identity_needs_the_AIS_in_time_a_late_AIS_boat_is_unidentified_first(tmp_path):
    """The AIS file is replayed by its own clock: A starts broadcasting only at 8 s, so it is unidentified
    from 5 s until AIS identifies it (the condition then ends). Nothing is heard before 8 s, but the log is not
    down (ais_down_after_s): an empty sea is judged, not held."""
    ais = tmp_path / "late.nmea"
    _nmea(ais, MMSI_A, BOAT_A, "NORDWIND", 8.0, 40.0)
    cfg = _config(tmp_path, "NORDWIND,211000001,valid,no\n", ais=[str(ais)], clear_after_s=1.0)
    _, events = _run(cfg, [_box_at(BOAT_A)], 14.0)
    unident = [e for e in events if e.type == "unidentified_vessel"]
    assert [e.phase for e in unident] == ["start", "end"]
    assert 5.0 <= (unident[0].at_ns - T0_NS) / 1e9 <= 6.5
    assert 8.0 <= (unident[1].end_ns - T0_NS) / 1e9 <= 9.5 and unident[1].attributes["end_reason"] == "condition cleared"


@pytest.mark.parametrize("rows,expect", [
    ("NORDWIND,211000001,valid,yes\n", "registry_alert"),    # blacklisted
    ("SEESTERN,211000001,valid,no\n", "identity_mismatch"),  # AIS name differs from the registered name
])
def test_registry_alert_and_identity_mismatch_become_events(tmp_path, rows, expect):
    cfg = _config(tmp_path, rows)
    _, events = _run(cfg, [_box_at(BOAT_A)], 4.0)
    got = [e for e in events if e.type == expect]
    assert [e.phase for e in got] == ["start", "end"], [(e.type, e.phase) for e in events]
    assert got[0].severity == "high" and got[0].attributes["mmsi"] == MMSI_A
    assert got[0].geo is not None and _dist_m(BOAT_A, got[0].geo.lat_deg, got[0].geo.lon_deg) < 5
    assert not [e for e in events if e.type == "unidentified_vessel"]


def test_udp_ais_feed_reaches_the_vessel_table(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _config(tmp_path, "NORDWIND,211000001,valid,no\n", ais=[f"udp://127.0.0.1:{port}"])
    pipe = Pipeline(cfg, [], detectors={"boxes": BoxDetector([_box_at(BOAT_A)])})
    pipe.start()
    try:
        src = tmp_path / "one.nmea"
        _nmea(src, MMSI_A, BOAT_A, "NORDWIND", 0.0, 0.0)
        data = src.read_bytes()
        deadline = time.monotonic() + 5.0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            while MMSI_A not in pipe.identity.table and time.monotonic() < deadline:
                tx.sendto(data, ("127.0.0.1", port))
                time.sleep(0.05)
        row = pipe.identity.table.get(MMSI_A)
        assert row is not None and row.name == "NORDWIND" and row.lat_deg == pytest.approx(BOAT_A[0], abs=1e-4)
        ev = []
        for k in range(6):
            ev += pipe.process("quay", T0_NS + k * STEP_NS, np.zeros((720, 1280, 3), np.uint8))
        start = [e for e in ev if e.type == "vessel_in_zone"][0]
        assert start.attributes["mmsi"] == MMSI_A
    finally:
        pipe.stop()
    assert not pipe.identity._threads


def test_identity_config_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no-such.nmea"):
        Pipeline(load_pipeline_config(None, {"ais": [str(tmp_path / "no-such.nmea")]}), [])
    bad = tmp_path / "reg.csv"
    bad.write_text("name,mmsi,colour\nX,1,red\n", encoding="utf-8")
    with pytest.raises(InputError, match="colour"):
        Pipeline(load_pipeline_config(None, {"registry": str(bad)}), [])
    with pytest.raises(ConfigError, match="unidentified_after_s"):
        load_pipeline_config(None, {"identity": {"unidentified_after_s": -1}})


def test_sinks_see_rule_and_identity_events_of_one_frame_in_the_returned_order(tmp_path):
    cfg = _config(tmp_path, "NORDWIND,211000001,valid,no\n", unidentified_after_s=1.0)
    sink = MemorySink()
    _, events = _run(cfg, [_box_at(BOAT_B)], 3.0, sink)
    assert sink.events == events
    same_frame = [(e.type, e.at_ns) for e in events if e.phase == "start"]
    assert {t for t, _ in same_frame} == {"vessel_in_zone", "unidentified_vessel"}
    assert len({at for _, at in same_frame}) == 1  # both decided on the same frame


def test_a_hull_read_matching_the_registry_identifies_a_boat_without_ais(tmp_path):
    from seawatch.vision.identity.ocr import HullRead

    cfg = _config(tmp_path, "NORDWIND,211000001,valid,no\nSEEADLER,211000002,valid,no\n")
    pipe = Pipeline(cfg, [], detectors={"boxes": BoxDetector([_box_at(BOAT_B)])})
    image = np.zeros((720, 1280, 3), np.uint8)
    events = []
    for k in range(16):
        t = T0_NS + k * STEP_NS
        events += pipe.process("quay", t, image)
        for tid in (1, 2, 3):  # whatever id the tracker gave B: an OCR worker reads its hull
            pipe.identity.set_hull_read("quay", tid, HullRead("SEEADLER", 0.9, 1.0, 5, 5, False))
    events += pipe.close()
    zone = [e for e in events if e.type == "vessel_in_zone" and e.phase == "end"][0]
    assert zone.attributes["identity"] == "ocr_only" and zone.attributes["vessel_name"] == "SEEADLER"
    assert not [e for e in events if e.type == "unidentified_vessel"]


def test_a_source_without_geo_reference_gets_no_identity_events_and_says_why(tmp_path):
    cfg = _config(tmp_path, "NORDWIND,211000001,valid,no\n", unidentified_after_s=1.0)
    cfg = cfg.model_copy(update={
        "sources": (cfg.sources[0].model_copy(update={"calibration": None}),),
        "zones": (cfg.zones[0].model_copy(update={"polygon_lonlat": None}),),  # whole frame
    })
    _, events = _run(cfg, [_box_at(BOAT_A)], 4.0)
    assert {e.type for e in events} == {"vessel_in_zone"}
    assert all(e.geo is None and "not geo-referenced" in e.geo_reason for e in events)
    assert all(e.attributes["identity"] == "unknown" and "geo position" in e.attributes["identity_reason"] for e in events)


@pytest.mark.slow
def test_real_detector_on_a_real_shore_frame_gives_located_vessel_and_identity_events(shared_media):
    """coco_yolov5n on a real harbour live-cam frame (23 labelled boats), a GCP calibration of its water plane and
    an empty registry: the vessels it finds get positions from the calibration and, unknown to AIS and registry,
    become unidentified_vessel after T."""
    from conftest import onnx_model

    from seawatch.vision.geo import SourceGeo
    from seawatch.vision.media import read_image

    onnx_model("coco_yolov5n")
    image = read_image(shared_media / "A_boats" / "shore_dlwkigk3_720_2022-07-19_11-58_output_0.jpg")
    near = [_ahead(50.0, -40.0), _ahead(50.0, 40.0), _ahead(400.0, -300.0), _ahead(400.0, 300.0)]
    gcps = [{"x_px": x, "y_px": y, "lat_deg": la, "lon_deg": lo}
            for (x, y), (la, lo) in zip([(100, 700), (1180, 700), (300, 420), (980, 420)], near)]
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "harbour", "url": "x.jpg", "models": ["coco_yolov5n"], "calibration": {"gcps": gcps}}],
        "zones": [{"id": "all", "source": "harbour", "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
        "identity": {"unidentified_after_s": 1.0},
    })
    pipe = Pipeline(cfg, [])
    events = []
    for k in range(6):
        events += pipe.process("harbour", T0_NS + k * STEP_NS, image)
    zone = [e for e in events if e.type == "vessel_in_zone" and e.phase == "start"]
    located = [e for e in zone if e.geo is not None]
    assert located, f"{len(zone)} vessel events, none located"
    loc = SourceGeo.from_calibration("harbour", cfg.sources[0].calibration).frame_locator(0)
    for e in located:  # a still frame: the located box is the snapshot box; its waterline is the event position
        x1, _, x2, y2 = e.snapshot.xyxy_px
        want = loc.locate(np.array([[(x1 + x2) / 2, y2]]))[0]
        assert abs(want[0] - e.geo.lat_deg) < 1e-5 and abs(want[1] - e.geo.lon_deg) < 1e-5
        assert e.attributes["identity"] == "none"
    unident = [e for e in events if e.type == "unidentified_vessel" and e.phase == "start"]
    assert {e.track_ids for e in unident} == {e.track_ids for e in located}


def test_real_ais_receiver_log_replayed_by_its_gnss_clock_identifies_two_moored_vessels(shared_media, tmp_path):
    """The real Lemmer harbour log (AIS + own-ship $GPRMC, no tag blocks) as an ``ais`` file feed: replayed by its
    RMC clock, it identifies two moored vessels 40 m apart, each track with its own MMSI."""
    path = shared_media / "F_ais" / "ais_gpsd_lemmer_nl_ais-nmea.log"
    if not path.is_file():
        from conftest import missing

        missing(f"{path} is absent")
    log_t0_ns = 1586295590 * 10**9  # first RMC fix of the log, 2020-04-07T21:39:50Z
    dorothea = (235084466, 52.838103, 5.70402)  # VOS DOROTHEA, 16 position reports, SOG 0
    roamer = (244824000, 52.838328, 5.704465)  # COASTAL ROAMER, 15 reports, SOG 0
    cam_ll = offsets_to_latlon(dorothea[1], dorothea[2], -120.0, 0.0)
    calib = {"camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 60.0},
             "surveyed": {"lat_deg": float(cam_ll[0][0]), "lon_deg": float(cam_ll[1][0]), "alt_m": 15.0,
                          "pan_deg": 0.0, "tilt_deg": -7.0}}
    cam = CalibrationConfig.model_validate(calib).build()
    boxes = []
    for _, la, lo in (dorothea, roamer):
        px, ok = cam.locator.project(la, lo, 0.0, cam.pose)
        assert ok[0]
        boxes.append((float(px[0, 0]) - 25, float(px[0, 1]) - 15, float(px[0, 0]) + 25, float(px[0, 1])))
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "lemmer", "url": "rtsp://x", "models": ["boxes"], "calibration": calib}],
        "zones": [{"id": "harbour", "source": "lemmer", "rules": [{"type": "vessel_in_zone", "min_duration_s": 2.0}]}],
        "ais": [str(path)],
        "identity": {"unidentified_after_s": 5.0},
    })
    pipe = Pipeline(cfg, [], detectors={"boxes": BoxDetector(boxes)})
    image = np.zeros((720, 1280, 3), np.uint8)
    events = []
    for k in range(20):  # 60 .. 69.5 s into the log
        events += pipe.process("lemmer", log_t0_ns + 60 * 10**9 + k * STEP_NS, image)
    assert pipe.identity.table.latest_ns <= log_t0_ns + 70 * 10**9  # replayed by its clock, not read in one go
    for k in range(75):  # 70 .. 144 s: COASTAL ROAMER's static report (its name) arrives at 139 s
        events += pipe.process("lemmer", log_t0_ns + (70 + k) * 10**9, image)
    events += pipe.close()
    zone = [e for e in events if e.type == "vessel_in_zone"]
    starts = [e for e in zone if e.phase == "start"]
    assert len(starts) == 2 and len([e for e in zone if e.phase == "end"]) == 2

    def who(e):
        return min((dorothea, roamer), key=lambda v: _dist_m((v[1], v[2]), e.geo.lat_deg, e.geo.lon_deg))[0]

    first = {who(e): e.attributes for e in starts}
    last = {who(e): e.attributes for e in zone if e.phase == "end"}
    assert first[dorothea[0]]["mmsi"] == dorothea[0] and first[dorothea[0]]["ais_name"] == "VOS DOROTHEA"
    assert first[roamer[0]]["mmsi"] == roamer[0] and "ais_name" not in first[roamer[0]]  # not broadcast yet at 62 s
    assert last[roamer[0]]["mmsi"] == roamer[0] and last[roamer[0]]["ais_name"] == "COASTAL ROAMER"
    assert all(a["identity"] == "ais_only" for a in (*first.values(), *last.values()))  # no registry given
    assert not [e for e in events if e.type == "unidentified_vessel"]


def test_tcp_ais_feed_reaches_the_vessel_table(tmp_path):
    import threading

    src = tmp_path / "one.nmea"
    _nmea(src, MMSI_A, BOAT_A, "NORDWIND", 0.0, 0.0)
    data = src.read_bytes()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    done = threading.Event()

    def serve():
        server.settimeout(5.0)
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.sendall(data)
            done.wait(5.0)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    cfg = _config(tmp_path, "NORDWIND,211000001,valid,no\n", ais=[f"tcp://127.0.0.1:{port}"])
    pipe = Pipeline(cfg, [], detectors={"boxes": BoxDetector([_box_at(BOAT_A)])})
    try:
        pipe.start()
        deadline = time.monotonic() + 5.0
        while MMSI_A not in pipe.identity.table and time.monotonic() < deadline:
            time.sleep(0.05)
        row = pipe.identity.table.get(MMSI_A)
        assert row is not None and row.name == "NORDWIND" and row.last_seen_ns == T0_NS
    finally:
        done.set()
        pipe.stop()
        server.close()
        th.join(5.0)
    assert not pipe.identity._threads
