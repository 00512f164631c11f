"""``loop:PATH`` AIS feeds: a recorded NMEA log replayed *live* (re-timed from the first frame, looped).

A log recorded years ago replayed by its own clock is "ended" against today's frames, so vessel identity holds every
``unidentified_vessel`` alert (an AIS outage). Replayed live, its first timed message is applied at the first frame,
the others as the frames pass their shifted times, and the whole log again and again, each loop a period later
(the log's span plus its median interval): positions are fresh and move, the feed is ``up``, and the loop seam is
one ordinary interval (no out-of-order report, no identity artefact). The logs here are generated (pyais), stamped
in 2020 like the demo's Lemmer log; frames run in 2026.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from seawatch.drone.geometry import latlon_to_offsets, offsets_to_latlon
from seawatch.vision.pipeline import Pipeline, load_pipeline_config
from seawatch.vision.vessel_identity import IdentityConfig, VesselIdentityStage

from test_pipeline_identity import CALIB, CAM, T0_NS, _ahead, _box_at, _cs, _square

pyais = pytest.importorskip("pyais")

S = 10**9
LOG_T0_S = 1_586_295_590  # 2020-04-07T21:39:50Z, the first RMC fix of the Lemmer log
MMSI_MOORED = 244000001
MMSI_MOVING = 244000002
MMSI_LATE = 244000003  # heard only in the second half of the log, far away
NO_OCR = {"ocr": {"enabled": False}}


def _line(sentence: str, t_s: float) -> str:
    body = f"s:rx,c:{t_s:.3f}"
    return f"\\{body}*{_cs(body)}\\{sentence}"


def _pos(mmsi: int, lat: float, lon: float, sog_kn: float, cog_deg: float, t_s: float) -> list[str]:
    return [_line(s, t_s) for s in pyais.encode_dict(
        {"msg_type": 1, "mmsi": mmsi, "lat": lat, "lon": lon, "speed": sog_kn, "course": cog_deg,
         "heading": int(cog_deg) % 360, "status": 0 if sog_kn else 5}, talker_id="AI", radio_channel="A")]


def _static(mmsi: int, name: str, t_s: float) -> list[str]:
    return [_line(s, t_s) for s in pyais.encode_dict({"msg_type": 5, "mmsi": mmsi, "shipname": name, "callsign": "PDAB",
                                                      "ship_type": 37}, talker_id="AI", radio_channel="A")]


MOORED = _ahead(180.0, -10.0)
MOVING_FROM = _ahead(220.0, 10.0)
SPEED_MPS = 2.0
MOVING_BEARING_DEG = 30.0 + 90.0  # to the camera's right (the camera pans 30 deg)
LOG_S = 20.0  # the log's span: it loops every 22 s (20 s + its 2 s interval)


def _moving_at(t_s: float) -> tuple[float, float]:
    """Where the moving vessel is ``t_s`` into the log (2 m/s along MOVING_BEARING_DEG)."""
    run = SPEED_MPS * t_s
    b = math.radians(MOVING_BEARING_DEG)
    la, lo = offsets_to_latlon(MOVING_FROM[0], MOVING_FROM[1], run * math.cos(b), run * math.sin(b))
    return float(la[0]), float(lo[0])


def _write_log(path, span_s: float = LOG_S, every_s: float = 2.0) -> None:
    """A receiver log of ``span_s`` s stamped in 2020: a moored vessel every 10 s, one moving at 2 m/s every
    ``every_s``, one far away heard in the second half only; type 5 static data for the first two."""
    lines = []
    t = 0.0
    while t <= span_s + 1e-9:
        if abs(t % 10.0) < 1e-9:
            lines += _pos(MMSI_MOORED, *MOORED, 0.0, 0.0, LOG_T0_S + t) + _static(MMSI_MOORED, "AMELAND", LOG_T0_S + t)
        lines += _pos(MMSI_MOVING, *_moving_at(t), SPEED_MPS * 3600 / 1852, MOVING_BEARING_DEG, LOG_T0_S + t)
        if t == 0.0:
            lines += _static(MMSI_MOVING, "URK 12", LOG_T0_S + t)
        if t >= span_s / 2:
            lines += _pos(MMSI_LATE, *_ahead(4000.0, 0.0), 0.0, 0.0, LOG_T0_S + t)
        t += every_s
    path.write_text("\r\n".join(lines) + "\r\n", encoding="ascii")


def _dist_m(a, b) -> float:
    n, e = latlon_to_offsets(a[0], a[1], b[0], b[1])
    return float(math.hypot(n[0], e[0]))


def test_a_live_replay_is_fresh_at_the_frame_time_moves_and_is_up(tmp_path):
    """Frames in 2026 over a log of 2020: each position in the table is at most one interval old at the frame time,
    the moving vessel is where the log puts it that far into its loop, and the feed is up with nothing held; the
    same file as a plain path keeps its own clock (ended, AIS down)."""
    log = tmp_path / "harbour.nmea"
    _write_log(log)
    stage = VesselIdentityStage(IdentityConfig(**NO_OCR), ais=[f"loop:{log}"])
    assert [s.state for s in stage.feed_states()] == ["up"]  # before the first frame: waiting for it
    t0 = time.time_ns()
    seen = []
    for k in range(0, 81):  # 40 s: the 20 s log and most of its second loop
        t = t0 + k * S // 2
        stage.advance(t)
        row = stage.table.get(MMSI_MOVING)
        assert row is not None and 0 <= t - row.position_time_ns <= 2 * S, k  # fresh: at most one interval old
        assert stage.check_ais(t) is None
        (st,) = stage.feed_states(frame_ns=t)
        assert st.state == "up" and st.name == f"loop:{log.name}" and st.last_message_ns <= t
        assert st.replay == "loop" and st.as_dict()["replay"] == "loop"  # the UI says: a recorded log, not live AIS
        seen.append((t, (row.lat_deg, row.lon_deg), row.position_time_ns))
    # it moves: at 10 s into the log the vessel is 20 m along, as the log says
    t10, pos10, when10 = seen[20]
    assert when10 == t0 + 10 * S and _dist_m(pos10, _moving_at(10.0)) < 1.0
    assert _dist_m(seen[0][1], pos10) == pytest.approx(20.0, abs=1.0)
    moored = stage.table.get(MMSI_MOORED)
    assert moored.name == "AMELAND" and stage.table.get(MMSI_MOVING).name == "URK 12"
    # the second loop: 22 s after the first frame (20 s + the 2 s interval) the log starts again, times shifted
    t22, pos22, when22 = seen[44]
    assert when22 == t0 + 22 * S and _dist_m(pos22, _moving_at(0.0)) < 1.0
    # a frame 10 minutes on (a paused pipeline): the loops in between are skipped, the table is fresh again
    late = t0 + 600 * S + S // 2
    stage.advance(late)
    row = stage.table.get(MMSI_MOVING)
    assert 0 <= late - row.position_time_ns <= 2 * S
    assert stage.feed_states(frame_ns=late)[0].state == "up" and stage.files_pending() > 0
    # the same log as a plain path is replayed by its own 2020 clock, as before: against 2026 frames every message is
    # applied at once, none is fresh, and AIS counts as down
    own = VesselIdentityStage(IdentityConfig(**NO_OCR), ais=[str(log)])
    own.advance(t0)
    assert own.table.get(MMSI_MOVING).position_time_ns == (LOG_T0_S + int(LOG_S)) * S
    assert own.feed_states(frame_ns=t0)[0].state == "ended" and "AIS feed down" in own.check_ais(t0)
    assert own.feed_states(frame_ns=t0)[0].replay == "log"


def _pipeline_config(tmp_path, ais: str, registry: str = "", **identity):
    reg = tmp_path / "registry.csv"
    reg.write_text("name,mmsi,licence_status,blacklisted\n" + registry, encoding="utf-8")
    return load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://cam/quay", "models": ["boxes"], "calibration": CALIB}],
        "zones": [{"id": "harbour", "source": "quay", "polygon_lonlat": _square(CAM[0], CAM[1], 600.0),
                   "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
        "ais": [ais], "registry": str(reg),
        "identity": {"unidentified_after_s": 5.0, "mismatch_confirm": 3, "dark_after_s": 6.0,
                     "dark_requires_registry": False} | NO_OCR | identity,
    })


class MovingBoxes:
    """A detector whose boxes the test sets before each frame."""

    name = "boxes"
    labels = ("vessel",)

    def __init__(self) -> None:
        self.boxes: list = []

    def detect(self, images):
        from seawatch.vision.detections import Detections

        n = len(self.boxes)
        return [Detections(np.asarray(self.boxes, np.float32).reshape(n, 4), np.full(n, 0.9, np.float32),
                           np.zeros(n, np.int32), self.labels, model=self.name) for _ in images]


def test_the_loop_seam_restarts_the_log_shifted_and_raises_no_identity_events(tmp_path):
    """A camera sees what the replay says, over five loops of a 20 s log: the moored vessel where it reports, the
    moving one where the log puts it at that point of its loop (so it jumps back 40 m at every seam, as the replay
    does). At each seam the table restarts the log with times one period later (a newer report, not an out-of-order
    one); both vessels stay identified through it, and nothing is raised: no unidentified_vessel, no ais_dark (the
    far vessel that is silent for half of each loop is not seen by the camera, and the seen ones report throughout),
    no identity_mismatch."""
    log = tmp_path / "short.nmea"
    _write_log(log)
    cfg = _pipeline_config(tmp_path, f"loop:{log}", "AMELAND,244000001,valid,no\nURK 12,244000002,valid,no\n")
    det = MovingBoxes()
    pipe = Pipeline(cfg, [], detectors={"boxes": det})
    stage = pipe.identity
    image = np.zeros((720, 1280, 3), np.uint8)
    period_s = LOG_S + 2.0
    events, seam_rows, kinds = [], [], {MMSI_MOORED: set(), MMSI_MOVING: set()}
    step_ns = S // 2
    for k in range(int(5 * period_s * S / step_ns)):
        t = T0_NS + k * step_ns
        into_s = ((t - T0_NS) / S) % period_s
        det.boxes = [_box_at(MOORED), _box_at(_moving_at(min(into_s, LOG_S)))]
        events += pipe.process("quay", t, image)
        if k and into_s == 0.0:  # the first frame of a new loop
            row = stage.table.get(MMSI_MOVING)
            seam_rows.append((t, row.position_time_ns, (row.lat_deg, row.lon_deg)))
        assert [s.state for s in stage.feed_states(frame_ns=t)] == ["up"] and stage.ais_unavailable is None
        if into_s >= 1.0:  # a frame after a seam may see the jumped box on a new track first
            for tid in range(1, 20):
                ident = stage.identity_of("quay", tid)
                if ident is not None and ident.time_ns == t and ident.mmsi in kinds:
                    kinds[ident.mmsi].add(ident.kind)
    events += pipe.close()
    assert len(seam_rows) == 4
    for t, when, pos in seam_rows:  # the log's first report, applied at the seam with its shifted time
        assert when == t and _dist_m(pos, _moving_at(0.0)) < 1.0
    assert kinds == {MMSI_MOORED: {"ais+registry"}, MMSI_MOVING: {"ais+registry"}}
    bad = [(e.type, e.phase, e.attributes.get("reason")) for e in events
           if e.type in ("unidentified_vessel", "ais_dark", "identity_mismatch")]
    assert not bad
    zone = [e for e in events if e.type == "vessel_in_zone" and e.phase == "start"]
    assert zone and {e.attributes.get("mmsi") for e in zone} <= {MMSI_MOORED, MMSI_MOVING}


def test_an_unmatched_boat_is_unidentified_against_a_live_replay_but_held_by_the_logs_own_clock(tmp_path):
    """The point of the live replay: a boat that matches no AIS vessel raises unidentified_vessel after the normal
    delay against a 2020 log replayed live (and the AIS boat beside it is identified), while the same log by its
    own clock holds the alert (AIS counts as down)."""
    log = tmp_path / "harbour.nmea"
    _write_log(log)
    stranger = _ahead(260.0, -100.0)  # over 100 m from every AIS vessel
    out = {}
    for how in ("loop", "own clock"):
        cfg = _pipeline_config(tmp_path, f"loop:{log}" if how == "loop" else str(log), "AMELAND,244000001,valid,no\n")
        det = MovingBoxes()
        det.boxes = [_box_at(MOORED), _box_at(stranger)]
        pipe = Pipeline(cfg, [], detectors={"boxes": det})
        image = np.zeros((720, 1280, 3), np.uint8)
        events = []
        for k in range(20):
            events += pipe.process("quay", T0_NS + k * S // 2, image)
        out[how] = (events, pipe.identity)
    events, _ = out["loop"]
    starts = [e for e in events if e.type == "unidentified_vessel" and e.phase == "start"]
    assert len(starts) == 1 and _dist_m((starts[0].geo.lat_deg, starts[0].geo.lon_deg), stranger) < 10.0
    assert (starts[0].at_ns - starts[0].start_ns) / 1e9 == pytest.approx(5.0, abs=0.5)
    assert "held" not in starts[0].attributes["reason"]
    moored = [e for e in events if e.type == "vessel_in_zone" and e.attributes.get("mmsi") == MMSI_MOORED]
    assert moored and moored[0].attributes["identity"] == "ais+registry"
    events, stage = out["own clock"]
    assert not [e for e in events if e.type == "unidentified_vessel"]
    assert stage.ais_unavailable is not None and "ended" in stage.ais_unavailable


@pytest.mark.parametrize("entry, message", [
    ("loop:", "loop: names no log file"),
    ("loop:tcp://127.0.0.1:5631", "a tcp:// or udp:// feed is live already"),
    ("loop:/nonexistent/ais.nmea", "no such NMEA log file '/nonexistent/ais.nmea'"),
])
def test_bad_loop_entries_are_refused_by_config_check_naming_the_entry(tmp_path, capsys, entry, message):
    from seawatch.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(f"sources: [{{id: cam1, url: a.mp4}}]\nais: ['{entry}']\n")
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "ais" in err and message in err, err


def test_a_log_without_times_cannot_loop(tmp_path):
    log = tmp_path / "untimed.nmea"
    log.write_text("\r\n".join(s for s in pyais.encode_dict({"msg_type": 1, "mmsi": MMSI_MOORED, "lat": 53.5, "lon": 8.5},
                                                            talker_id="AI", radio_channel="A")) + "\r\n")
    from seawatch.errors import InputError

    with pytest.raises(InputError, match="no time of its own"):
        VesselIdentityStage(IdentityConfig(**NO_OCR), ais=[f"loop:{log}"])


def test_config_check_and_ais_show_take_the_loop_form(tmp_path, capsys):
    from seawatch.cli import main

    log = tmp_path / "harbour.nmea"
    _write_log(log)
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"ais: ['loop:{log}', '{log}']\nstorage: {{data_dir: {tmp_path / 'd'}}}\n")
    assert main(["config", "check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "1 log(s) replayed live in a loop (loop:" in out and "1 log file(s) replayed by their own clock" in out
    assert "no AIS-feed incidents (log files only)" in out
    assert main(["ais", "show", f"loop:{log}", "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert {v["mmsi"] for v in doc["vessels"]} == {MMSI_MOORED, MMSI_MOVING, MMSI_LATE}


def test_the_demo_replays_its_harbour_log_live_and_its_harbour_camera_raises_unidentified_again(tmp_path, shared_media):
    """The embedded demo's AIS is the Lemmer log replayed live in a loop; its harbour camera, fed a boat on the
    water at today's times, gets fresh AIS positions (feed up, nothing held) and raises unidentified_vessel after the
    default minute. By the log's own clock (what the demo did before) the same boat is held."""
    from seawatch.service.config import DEFAULT_AIS_LOG, default_settings_data, load_config

    if not (shared_media / DEFAULT_AIS_LOG).is_file():
        pytest.skip(f"{DEFAULT_AIS_LOG} is absent from the shared media")
    data = default_settings_data(shared_media, harbour_clip=tmp_path / "harbour.mp4", data_dir=str(tmp_path / "d"))
    assert data["ais"] == [f"loop:{shared_media / DEFAULT_AIS_LOG}"]
    (tmp_path / "harbour.mp4").write_bytes(b"")
    assert load_config(data=data).ais == (f"loop:{shared_media / DEFAULT_AIS_LOG}",)
    (cam,) = [s for s in data["sources"] if s["id"] == "harbour-cam"]
    (zone,) = [z for z in data["zones"] if z["source"] == "harbour-cam"]
    got = {}
    for ais in (data["ais"][0], str(shared_media / DEFAULT_AIS_LOG)):
        cfg = load_pipeline_config(None, {
            "sources": [{"id": "harbour-cam", "url": "rtsp://demo/harbour", "models": ["boxes"],
                         "calibration": cam["calibration"], "water": cam["water"]}],
            "zones": [zone], "ais": [ais], "identity": NO_OCR})
        det = MovingBoxes()
        det.boxes = [(600.0, 560.0, 680.0, 600.0)]  # a boat on the lake, bottom centre on the water
        pipe = Pipeline(cfg, [], detectors={"boxes": det})
        image = np.zeros((720, 1280, 3), np.uint8)
        t0 = time.time_ns()
        events = []
        for k in range(66):  # the demo camera analyses 1 frame a second
            events += pipe.process("harbour-cam", t0 + k * S, image)
        got[ais] = (events, pipe.identity)
    events, stage = got[data["ais"][0]]
    assert [s.state for s in stage.feed_states()] == ["up"] and stage.ais_unavailable is None
    assert sum(1 for v in stage.table.snapshot(t0 + 65 * S, with_position=True)) >= 10
    starts = [e for e in events if e.type == "unidentified_vessel" and e.phase == "start"]
    assert len(starts) == 1 and 60.0 <= (starts[0].at_ns - starts[0].start_ns) / 1e9 <= 61.0
    assert 52.80 < starts[0].geo.lat_deg < 52.85 and 5.60 < starts[0].geo.lon_deg < 5.70
    events, stage = got[str(shared_media / DEFAULT_AIS_LOG)]
    assert not [e for e in events if e.type == "unidentified_vessel"] and stage.ais_unavailable is not None
