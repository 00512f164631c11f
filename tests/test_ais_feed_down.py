"""AIS feed outages: the ``ais_feed_down`` incident (``service/source_watch.py``) and the identity stage holding its
``unidentified_vessel`` alerts while AIS cannot identify anyone (``vision/vessel_identity.py``).

Real NMEA over real sockets: a TCP server in the test sends position reports, stops (the feed stays connected and
silent), and sends again. Timers are short (``identity.ais_down_after_s`` 1 s) so nothing sleeps for long.
"""

from __future__ import annotations

import socket
import threading
import time
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import free_port  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.vision.identity.fusion import GeoTrack, TrackIdentity  # noqa: E402
from seawatch.vision.identity.rules import IdentityRules  # noqa: E402
from seawatch.vision.identity.vessels import VesselTable  # noqa: E402
from test_pipeline_identity import BOAT_A, BOAT_B, MMSI_A, BoxDetector, _ahead, _box_at, _config  # noqa: E402

pyais = pytest.importorskip("pyais")

KEY = "ais-down-test-key-0123456789"
S = 1_000_000_000
BOAT_C = _ahead(220.0, -60.0)  # no AIS, but its hull reads a registered name


def _position_line(mmsi: int, where: tuple[float, float]) -> bytes:
    """A class A position report without a tag block: the receiver's clock (now) is its time, as on a live feed."""
    (line,) = pyais.encode_dict({"msg_type": 1, "mmsi": mmsi, "lat": where[0], "lon": where[1], "speed": 0.0,
                                 "course": 0.0, "heading": 0, "status": 5}, talker_id="AI", radio_channel="A")
    return (line + "\r\n").encode()


class NmeaServer:
    """A TCP NMEA server: sends ``lines`` every ``every_s`` to whoever connects while :attr:`sending` is set; with it
    cleared the connection stays open and silent (a dispatcher whose receiver was unplugged)."""

    def __init__(self, lines: list[bytes], every_s: float = 0.1) -> None:
        self.lines, self.every_s = lines, every_s
        self.sending = threading.Event()
        self.sending.set()
        self.sent = 0
        self.last_sent_ns: int | None = None
        self._stop = threading.Event()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.2)
        self.url = f"tcp://127.0.0.1:{self._srv.getsockname()[1]}"
        self._th = threading.Thread(target=self._serve, daemon=True)
        self._th.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except OSError:
                continue
            with conn:
                while not self._stop.is_set():
                    if self.sending.is_set():
                        try:
                            conn.sendall(b"".join(self.lines))
                        except OSError:
                            break
                        self.sent += 1
                        self.last_sent_ns = time.time_ns()
                    self._stop.wait(self.every_s)

    def close(self) -> None:
        self._stop.set()
        self._th.join(5)
        self._srv.close()


def _wait(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_silent_tcp_feed_is_an_ais_feed_down_incident_after_the_delay_until_sentences_resume(tmp_path):
    """Through the whole service: the incident is stored, published like every event (the live feed, MQTT and the
    webhooks listen there), searchable by type and source, and the AIS status says silent since when. A second feed
    that nothing listens on is down from the start: never connected."""
    from seawatch.service.runner import Service

    server = NmeaServer([_position_line(MMSI_A, BOAT_A)])
    dead = f"tcp://127.0.0.1:{free_port()}"
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "test", "role": "admin", "key_sha256": hash_api_key(KEY)}]},
        "ais": [server.url, dead],
        "identity": {"ais_down_after_s": 1.0, "ocr": {"enabled": False}},
        "source_alerts": {"ais_severity": "critical"},
    })
    published = []
    svc = Service(cfg, publishers=[published.append]).start()
    h = {"X-API-Key": KEY}
    try:
        with TestClient(svc.app) as client:
            def incidents(**q):
                return client.get("/api/events", params={"type": "ais_feed_down", **q}, headers=h).json()["events"]

            def feeds():
                (ais,) = [s for s in client.get("/api/sources", headers=h).json() if s["source_id"] == "ais"]
                return {f["feed"]: f for f in ais["feed_states"]}

            _wait(lambda: feeds()[server.url]["state"] == "up" and feeds()[server.url]["messages"] > 0, 10, "messages")
            never = _wait(lambda: [e for e in incidents() if e["attributes"]["feed"] == dead], 10, "the dead feed")
            assert never[0]["attributes"]["state"] == "down"
            assert never[0]["attributes"]["reason"].startswith("never connected")
            time.sleep(1.2)  # flowing for longer than the delay: no incident for it
            assert [e["attributes"]["feed"] for e in incidents()] == [dead]

            server.sending.clear()  # the receiver behind the dispatcher is unplugged; the connection stays up
            time.sleep(0.15)
            stopped_ns = server.last_sent_ns
            (ev,) = _wait(lambda: [e for e in incidents() if e["attributes"]["feed"] == server.url], 10, "the incident")
            assert ev["at_ns"] - stopped_ns >= 1.0 * S  # not before the delay
            assert ev["at_ns"] - stopped_ns < 6.0 * S  # the watch checks every second
            assert (ev["severity"], ev["source_id"], ev["end_ns"]) == ("critical", "ais", None)
            assert ev["attributes"]["state"] == "silent" and ev["attributes"]["reason"].startswith("silent since ")
            assert abs(ev["start_ns"] - stopped_ns) < 0.5 * S  # the outage began with the last message
            st = feeds()[server.url]
            assert st["state"] == "silent" and st["since_ns"] == ev["start_ns"]
            assert [e["id"] for e in incidents(source="ais", q="silent")] == [ev["id"]]
            assert any(p.type == "ais_feed_down" and p.id == ev["id"] and p.phase == "start" for p in published)

            server.sending.set()  # sentences resume
            done = _wait(lambda: [e for e in incidents() if e["id"] == ev["id"] and e["end_ns"] is not None], 10,
                         "the end")[0]
            assert done["attributes"]["end_reason"] == "messages flow again"
            assert done["end_ns"] >= ev["start_ns"] + 1.0 * S
            assert feeds()[server.url]["state"] == "up"
            assert any(p.id == ev["id"] and p.phase == "end" for p in published)
            # the feed that never came up is still down, still one incident
            assert [e["end_ns"] for e in incidents() if e["attributes"]["feed"] == dead] == [None]
    finally:
        svc.stop()
        server.close()


class MovingBoxes(BoxDetector):
    """BoxDetector whose boxes the test changes between frames (a vessel that comes into view)."""


def _run_frames(pipe, seconds: float, events: list, step_s: float = 0.1) -> None:
    image = np.zeros((720, 1280, 3), np.uint8)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        events += pipe.process("quay", time.time_ns(), image)
        time.sleep(step_s)


def _track_at(pipe, box) -> int:
    _, _, tracked = pipe.latest["quay"]
    d = [float(np.abs(tracked.xyxy_px[i] - np.asarray(box, np.float32)).max()) for i in range(len(tracked))]
    return int(tracked.track_id[int(np.argmin(d))])


def test_vessels_seen_while_ais_is_down_are_held_and_raised_once_ais_is_back_if_still_unmatched(tmp_path):
    """A registered AIS boat (A) is in view; the feed goes silent; an unregistered boat without AIS (B) and a boat
    whose hull reads a registered name (C) come into view. While every feed is down: no unidentified_vessel for
    anyone (B's vessel event says identity unknown, and why), C is identified by its hull. When sentences resume, A
    is identified again and B, still unmatched against the fresh table, raises unidentified_vessel after the normal
    delay, counted from AIS's return, its reason saying it was held."""
    from seawatch.vision.identity.ocr import HullRead
    from seawatch.vision.pipeline import Pipeline

    server = NmeaServer([_position_line(MMSI_A, BOAT_A)])
    cfg = _config(tmp_path, "NORDWIND,211000001,valid,no\nSEEADLER,211000002,valid,no\n", ais=[server.url],
                  unidentified_after_s=1.0, ais_down_after_s=1.0, clear_after_s=0.5, ocr={"enabled": False})
    det = MovingBoxes([_box_at(BOAT_A)])
    pipe = Pipeline(cfg, [], detectors={"boxes": det})
    events: list = []
    try:
        pipe.start()
        _wait(lambda: MMSI_A in pipe.identity.table, 5, "the first report")
        _run_frames(pipe, 1.5, events)
        assert pipe.identity.ais_unavailable is None
        assert pipe.identity.identity_of("quay", _track_at(pipe, _box_at(BOAT_A))).mmsi == MMSI_A

        server.sending.clear()
        _wait(lambda: (_run_frames(pipe, 0.1, events), pipe.identity.ais_unavailable)[1], 5, "AIS down")
        down_at = len(events)
        assert "AIS feed down" in pipe.identity.ais_unavailable and server.url in pipe.identity.ais_unavailable
        det.boxes = [_box_at(BOAT_A), _box_at(BOAT_B), _box_at(BOAT_C)]
        _run_frames(pipe, 0.3, events)
        c_track = _track_at(pipe, _box_at(BOAT_C))
        b_track = _track_at(pipe, _box_at(BOAT_B))
        pipe.identity.set_hull_read("quay", c_track, HullRead("SEEADLER", 0.9, 1.0, 5, 5, False))
        _run_frames(pipe, 2.5, events)  # more than twice unidentified_after_s
        during = events[down_at:]
        assert pipe.identity.ais_unavailable is not None  # still down all along
        assert [e for e in during if e.type == "unidentified_vessel"] == []
        b_zone = [e for e in during if e.type == "vessel_in_zone" and b_track in e.track_ids]
        assert b_zone, "B's vessel_in_zone event"
        assert b_zone[0].attributes["identity"] == "unknown"
        assert b_zone[0].attributes["identity_reason"].startswith("AIS feed down: " + server.url + " silent since ")
        c_ident = pipe.identity.identity_of("quay", c_track)
        assert c_ident.kind == "ocr_only" and c_ident.name == "SEEADLER"  # the registry match stands

        server.sending.set()
        _wait(lambda: (_run_frames(pipe, 0.1, events), pipe.identity.ais_unavailable is None)[1], 5, "AIS back")
        back_ns = time.time_ns()
        back_at = len(events)
        _run_frames(pipe, 2.0, events)
        after = events[back_at:]
        (b_alert,) = [e for e in after if e.type == "unidentified_vessel"]
        assert b_track in b_alert.track_ids and b_alert.phase == "start"
        assert b_alert.at_ns - b_alert.attributes["ais_back_ns"] >= 1.0 * S  # the normal delay, from AIS's return
        assert b_alert.attributes["ais_back_ns"] <= back_ns < b_alert.at_ns
        assert b_alert.attributes["held_since_ns"] < b_alert.attributes["ais_back_ns"]
        assert "held until AIS was back" in b_alert.attributes["reason"]
        assert "no AIS match and no registry match" in b_alert.attributes["reason"]
        assert pipe.identity.identity_of("quay", _track_at(pipe, _box_at(BOAT_A))).mmsi == MMSI_A
        assert pipe.identity.identity_of("quay", c_track).kind == "ocr_only"
        assert not [e for e in events if e.type in ("unidentified_vessel", "ais_dark")
                    and ({_track_at(pipe, _box_at(BOAT_A)), c_track} & set(e.track_ids))]
    finally:
        pipe.stop()
        server.close()


def _ident(tid, t_ns, kind="none", mmsi=None, last_mmsi=None):
    return TrackIdentity(tid, t_ns, kind, 1.0, mmsi=mmsi, last_mmsi=last_mmsi)


def test_rules_an_alert_raised_before_the_outage_stays_open_and_ais_dark_waits_for_the_vessel_not_the_feed():
    """Rules alone: an unidentified_vessel raised while AIS was heard stays open through the outage; an MMSI the
    camera still sees is not ais_dark while the feed is down, nor right after it is back (its silence counts from
    AIS's return)."""
    from seawatch.streams.ais import AisPosition

    t0 = 1_767_225_600 * S
    table = VesselTable()
    table.update(AisPosition(mmsi=MMSI_A, time_ns=t0, time_source="tag_block", msg_type=1, lat_deg=BOAT_A[0],
                             lon_deg=BOAT_A[1], sog_kn=0.0, cog_deg=None, heading_deg=None, nav_status=0,
                             utc_second=None, ais_class="A"))
    rules = IdentityRules(unidentified_after_s=2.0, dark_after_s=5.0, clear_after_s=1.0, dark_requires_registry=False)
    a = GeoTrack(1, t0, *BOAT_A)
    b = GeoTrack(2, t0, *BOAT_B)
    out = []
    for k in range(0, 40):  # 0-3.9 s: AIS heard; B raised at 2 s
        t = t0 + k * S // 10
        out += rules.update(t, [a, b], {1: _ident(1, t, "ais_only", mmsi=MMSI_A), 2: _ident(2, t)}, table)
    assert [(d.type, d.track_id, d.phase) for d in out] == [("unidentified_vessel", 2, "start")]
    out = []
    for k in range(40, 200):  # 4-19.9 s: feed down; A's identity has gone (no fresh report), B still unmatched
        t = t0 + k * S // 10
        out += rules.update(t, [a, b], {1: _ident(1, t, last_mmsi=MMSI_A), 2: _ident(2, t)}, table,
                            ais_unavailable="AIS feed down: tcp://x:1 down")
    assert out == []  # B stays open, A is neither dark nor unidentified
    for k in range(200, 240):  # 20-23.9 s: back, A not heard yet: its silence counts from 20 s (dark after 25 s)
        t = t0 + k * S // 10
        out += rules.update(t, [a, b], {1: _ident(1, t, last_mmsi=MMSI_A), 2: _ident(2, t)}, table)
    assert [(d.type, d.track_id) for d in out] == [("unidentified_vessel", 1)]  # A: unmatched 2 s after the return
    assert "held until AIS was back" in out[0].reason and out[0].started_ns == t0 + 20 * S
    assert rules.open_conditions == [("unidentified_vessel", 1, ""), ("unidentified_vessel", 2, "")]


def test_config_check_explains_the_ais_outage_setting(tmp_path, capsys):
    from seawatch.cli import main

    cfg = tmp_path / "site.yaml"
    cfg.write_text("ais: [tcp://127.0.0.1:5631]\nidentity: {ais_down_after_s: 30}\nsource_alerts: {ais_severity: medium}\n"
                   "storage: {data_dir: " + str(tmp_path / "d") + "}\n")
    assert main(["config", "check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "AIS feeds silent 30 s -> ais_feed_down (medium)" in out
    assert "while every AIS feed is down, unidentified_vessel alerts are held until AIS is back" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("identity: {ais_down_after_s: 0}\nstorage: {data_dir: " + str(tmp_path / "d") + "}\n")
    assert main(["config", "check", str(bad)]) == 1
    assert "ais_down_after_s" in capsys.readouterr().err


def test_ui_sources_row_says_which_ais_feed_is_down_and_that_alerts_are_held(tmp_path):
    """The AIS row of the sources table (headless Chromium): a feed that never connected, since when and why, and
    that unidentified-vessel alerts are held meanwhile."""
    from conftest import serve_in_thread
    from seawatch.service.app import create_app
    from seawatch.service.fleet import Fleet
    from seawatch.vision.vessel_identity import IdentityConfig, VesselIdentityStage
    from test_service_ui import KEY as UI_KEY
    from test_service_ui import _browser, _playwright

    dead = f"tcp://127.0.0.1:{free_port()}"
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")}, "ais": [dead],
                            "auth": {"api_keys": [{"name": "wall", "role": "operator",
                                                   "key_sha256": hash_api_key(UI_KEY)}]}})
    fleet = Fleet(cfg)
    fleet.identity = VesselIdentityStage(IdentityConfig(ais_down_after_s=0.5, ocr={"enabled": False}), ais=[dead])
    fleet.identity.start()
    try:
        _wait(lambda: fleet.identity.check_ais(time.time_ns()), 5, "the feed down")  # what each frame does
        with serve_in_thread(create_app(cfg, fleet=fleet)) as port:
            with _playwright() as p:
                browser = _browser(p)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"http://127.0.0.1:{port}/#key={UI_KEY}")
                page.wait_for_selector('#sources tr[data-id="ais"]')
                row = page.text_content('#sources tr[data-id="ais"]')
                assert f"{dead} down for " in row and ": never connected" in row
                assert "unidentified-vessel alerts held (AIS unavailable)" in row
                browser.close()
    finally:
        fleet.identity.stop()
