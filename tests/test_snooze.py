"""Snoozing a camera's alerts (``service/snooze.py``, ``/api/sources/{id}/snooze``): who may, what is refused, the
record (a ``source_snoozed`` incident) over a restart and at its end, and what a snoozed camera's events become:
stored with their mark, not sent to webhooks (unless asked), published on MQTT with the mark."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from seawatch.service.app import create_app
from seawatch.service.auth import hash_api_key
from seawatch.service.config import load_config
from seawatch.service.snooze import SNOOZE_TYPE, SnoozeBook
from seawatch.service.store import EventQuery, EventStore
import test_service_mqtt
from test_service_mqtt import Listener
from test_service_serve import KEY, FireEverywhere, write_video
from test_service_store import S, T0, make_event
from test_webhooks import Receiver, _msg, _sender

broker = test_service_mqtt.broker  # the module's own mosquitto (a fixture), started and stopped with this module

OP, VIEW = "snooze-operator-key-0123456789", "snooze-viewer-key-0123456789"
AUTH = {"api_keys": [{"name": "admin", "role": "admin", "key_sha256": hash_api_key(KEY)},
                     {"name": "alice", "role": "operator", "key_sha256": hash_api_key(OP)},
                     {"name": "wall", "role": "viewer", "key_sha256": hash_api_key(VIEW)}]}
H_OP, H_VIEW, H_ADMIN = {"X-API-Key": OP}, {"X-API-Key": VIEW}, {"X-API-Key": KEY}
MIN = 60 * S


def _settings(tmp_path, video=None, drone: bool = True, **over):
    """quay-1 (the stand-in fire detector on ``video`` when given), gate, and a drone's camera cam-d."""
    none = str(tmp_path / "none.mp4")  # a camera that never sends (no reader runs without the service)
    quay = {"id": "quay-1", "url": str(video) if video else none, "models": ["stub"], "analysis_fps": 5}
    data = {"storage": {"data_dir": str(tmp_path / "data")}, "auth": AUTH,
            "sources": [quay, {"id": "gate", "url": none, "models": ["stub"]}],
            "zones": [{"id": "yard", "source": "quay-1", "rules": [
                {"type": "fire_smoke", "labels": ["fire"], "window_frames": 3, "min_hits": 2, "min_duration_s": 0.5,
                 "static_min_iou": None}]}]}
    if drone:
        data["sources"].append({"id": "cam-d", "url": "udp://127.0.0.1:9", "models": ["stub"]})
        data["drones"] = [{"id": "patrol-1", "connection": "udp:127.0.0.1:9", "video_source": "cam-d",
                           "camera": {"width_px": 640, "height_px": 360, "hfov_deg": 70}}]
    data.update(over)
    return load_config(data=data)


def _records(store, source_id="quay-1"):
    return store.search(EventQuery(types=(SNOOZE_TYPE,), source_ids=(source_id,), sort="start_ns", limit=50)).events


# ---- the API ---------------------------------------------------------------------------------------------------
def test_operators_snooze_viewers_see_it_and_junk_is_refused(tmp_path):
    cfg = _settings(tmp_path)
    with TestClient(create_app(cfg)) as c:
        ok = {"minutes": 120, "note": "crane maintenance"}
        assert c.post("/api/sources/quay-1/snooze", json=ok).status_code == 401
        assert c.post("/api/sources/quay-1/snooze", json=ok, headers=H_VIEW).status_code == 403
        assert c.get("/api/sources/quay-1/snooze", headers=H_VIEW).json()["snooze"] is None
        assert c.post("/api/sources/nope/snooze", json=ok, headers=H_OP).status_code == 404
        assert c.get("/api/sources/nope/snooze", headers=H_VIEW).status_code == 404
        now = time.time_ns()
        for junk in [{}, {"minutes": 30}, {"minutes": 30, "note": "   "}, {"note": "x"},
                     {"minutes": 30, "until_ns": now + 10 * MIN, "note": "both"}, {"minutes": -5, "note": "x"},
                     {"minutes": 0, "note": "x"}, {"minutes": "soon", "note": "x"}, {"minutes": 12 * 60 + 2, "note": "x"},
                     {"until_ns": now - S, "note": "past"}, {"until_ns": now + 13 * 60 * MIN, "note": "too far"},
                     {"minutes": 30, "note": "x", "types": ["Fire!"]}, {"minutes": 30, "note": "x", "types": []},
                     {"minutes": 30, "note": "x", "who": "me"}, {"minutes": 30, "note": "x" * 501},
                     {"minutes": 30, "note": "line\nbreak"}, {"minutes": 1e308, "note": "x"},
                     {"until_ns": 10**30, "note": "x"}, [1, 2], "minutes"]:
            r = c.post("/api/sources/quay-1/snooze", json=junk, headers=H_OP)
            assert r.status_code == 422, (junk, r.status_code, r.text)
            assert set(r.json()["error"]) == {"code", "message", "details"}
        assert "at most 12 h" in c.post("/api/sources/quay-1/snooze", json={"minutes": 721, "note": "x"},
                                        headers=H_OP).json()["error"]["message"]
        assert c.get("/api/sources/quay-1/snooze", headers=H_VIEW).json()["snooze"] is None  # nothing refused stuck

        r = c.post("/api/sources/quay-1/snooze", json=ok, headers=H_OP)
        assert r.status_code == 200, r.text
        sn = r.json()["snooze"]
        assert sn["by"] == "key:alice" and sn["note"] == "crane maintenance" and sn["types"] == []
        assert abs(sn["until_ns"] - (sn["since_ns"] + 120 * MIN)) < S
        # a drone's camera too, for some types only
        r = c.post("/api/sources/cam-d/snooze", json={"until_ns": time.time_ns() + 30 * MIN, "note": "lens cleaning",
                                                      "types": ["fire", "source_offline"]}, headers=H_OP)
        assert r.status_code == 200 and r.json()["snooze"]["types"] == ["fire", "source_offline"]
        listed = {s["source_id"]: s.get("snooze") for s in c.get("/api/sources", headers=H_VIEW).json()}
        assert listed["quay-1"]["id"] == sn["id"] and listed["quay-1"]["by"] == "key:alice"
        assert listed["cam-d"]["note"] == "lens cleaning" and listed["gate"] is None
        # on record: an open source_snoozed incident of the camera, low severity, who / why / until
        store = c.app.state.store
        (rec,) = _records(store)
        assert (rec.id, rec.type, rec.severity, rec.end_ns, rec.labels) == (sn["id"], SNOOZE_TYPE, "low", None, ())
        assert rec.attributes["by"] == "key:alice" and rec.attributes["until_ns"] == sn["until_ns"]
        assert rec.attributes["note"] == "crane maintenance"
        # found by a search like any incident
        found = c.get("/api/events", params={"type": SNOOZE_TYPE, "source": "quay-1"}, headers=H_VIEW).json()["events"]
        assert [e["id"] for e in found] == [sn["id"]]

        # a new snooze replaces it (the old record ends: replaced)
        r = c.post("/api/sources/quay-1/snooze", json={"minutes": 60, "note": "longer crane job"}, headers=H_OP)
        sn2 = r.json()["snooze"]
        assert sn2["id"] != sn["id"] and sn2["note"] == "longer crane job"
        old = store.get(sn["id"])
        assert old.phase == "end" and old.attributes["end_reason"] == "replaced" and old.end_ns is not None

        # ended early, with a note; a viewer may not; nothing to end then is a 409
        assert c.request("DELETE", "/api/sources/quay-1/snooze", headers=H_VIEW).status_code == 403
        r = c.request("DELETE", "/api/sources/quay-1/snooze", json={"note": "crane back in service"}, headers=H_OP)
        assert r.status_code == 200 and r.json()["snooze"] is None
        hist = r.json()["history"]
        assert [h["id"] for h in hist] == [sn2["id"], sn["id"]]
        assert (hist[0]["end_reason"], hist[0]["ended_by"], hist[0]["end_note"]) == (
            "ended early", "key:alice", "crane back in service")
        assert hist[0]["end_ns"] < sn2["until_ns"]
        assert c.request("DELETE", "/api/sources/quay-1/snooze", headers=H_OP).status_code == 409
        assert c.request("DELETE", "/api/sources/quay-1/snooze", json={"bad": 1}, headers=H_OP).status_code == 422
        assert c.request("DELETE", "/api/sources/nope/snooze", headers=H_OP).status_code == 404
        listed = {s["source_id"]: s.get("snooze") for s in c.get("/api/sources", headers=H_VIEW).json()}
        assert listed["quay-1"] is None and listed["cam-d"] is not None


def test_a_snooze_holds_over_a_restart_and_ends_by_itself(tmp_path):
    cfg = _settings(tmp_path)
    with TestClient(create_app(cfg)) as c:
        sn = c.post("/api/sources/quay-1/snooze", json={"minutes": 120, "note": "crane"}, headers=H_OP).json()["snooze"]
        short = c.post("/api/sources/gate/snooze", json={"until_ns": time.time_ns() + int(1.5 * S), "note": "van"},
                       headers=H_OP).json()["snooze"]
    with TestClient(create_app(cfg)) as c:  # a restart (the store closed and opened again)
        got = c.get("/api/sources/quay-1/snooze", headers=H_VIEW).json()["snooze"]
        assert got == sn
        deadline = time.monotonic() + 5
        while c.get("/api/sources/gate/snooze", headers=H_VIEW).json()["snooze"] is not None:
            assert time.monotonic() < deadline, "the snooze did not end at its end"
            time.sleep(0.1)
        while (rec := c.app.state.store.get(short["id"])).phase != "end":  # the timer ends its record (0.5 s)
            assert time.monotonic() < deadline, "the snooze's record did not end"
            time.sleep(0.1)
        assert rec.end_ns == short["until_ns"] and rec.attributes["end_reason"] == "expired"
        # one that ends while the service is down is ended at its end at the next start
        late = c.post("/api/sources/gate/snooze", json={"until_ns": time.time_ns() + S, "note": "cleaning"},
                      headers=H_OP).json()["snooze"]
    time.sleep(1.2)
    with TestClient(create_app(cfg)) as c:
        assert c.get("/api/sources/gate/snooze", headers=H_VIEW).json()["snooze"] is None
        rec = c.app.state.store.get(late["id"])
        assert rec.end_ns == late["until_ns"] and rec.attributes["end_reason"] == "expired"
        assert c.get("/api/sources/quay-1/snooze", headers=H_VIEW).json()["snooze"]["id"] == sn["id"]


# ---- which events are marked ---------------------------------------------------------------------------------
def test_marking_is_decided_at_an_incident_start_and_kept_for_its_phases():
    emitted = []

    class Sink:
        def emit(self, ev):
            emitted.append(ev)

        def flush(self, timeout_s=None):
            return True

    now = [T0]
    book = SnoozeBook(3600, Sink(), clock=lambda: now[0])
    before = book.stamp(make_event(0, source_id="quay-1"))  # raised before the snooze
    book.snooze("quay-1", "user:alice", T0 + 10 * MIN, "crane", types=("fire", "no_hard_hat"))
    assert [e.type for e in emitted] == [SNOOZE_TYPE]
    now[0] = T0 + MIN
    during = book.stamp(make_event(1, source_id="quay-1"))
    assert during.attributes["snoozed"] == {"by": "user:alice", "since_ns": T0, "until_ns": T0 + 10 * MIN,
                                            "note": "crane", "snooze_id": emitted[0].id, "types": ["fire", "no_hard_hat"]}
    assert "snoozed" not in before.attributes
    assert "snoozed" not in book.stamp(make_event(0, source_id="quay-1", phase="update", seq=1)).attributes
    assert "snoozed" not in book.stamp(make_event(2, source_id="gate")).attributes  # another camera
    assert "snoozed" not in book.stamp(make_event(3, source_id="quay-1", type="vessel_in_zone")).attributes  # other type
    reported = make_event(4, source_id="quay-1", attributes={"reported_by": "user:bob"})
    assert "snoozed" not in book.stamp(reported).attributes  # a person chose to raise it
    now[0] = T0 + 11 * MIN  # the snooze is over: the incident raised during it still does not alarm as it ends
    assert book.get("quay-1") is None
    assert book.stamp(make_event(1, source_id="quay-1", phase="end", seq=2, end_ns=T0 + 11 * MIN)).attributes["snoozed"]
    assert "snoozed" not in book.stamp(make_event(5, source_id="quay-1")).attributes  # a new one alarms again
    assert [sn.source_id for sn in book.expire()] == ["quay-1"] and emitted[-1].phase == "end"
    assert emitted[-1].end_ns == T0 + 10 * MIN and emitted[-1].attributes["end_reason"] == "expired"


def test_webhooks_skip_snoozed_events_unless_asked(tmp_path):
    r1, r2 = Receiver(), Receiver()
    w1, w2 = _sender(r1.url), _sender(r2.url, snoozed=True, format="text")
    mark = {"by": "user:alice", "since_ns": T0, "until_ns": T0 + 3600 * S, "note": "crane maintenance", "snooze_id": "x"}
    try:
        for w in (w1, w2):
            w.on_live_message(_msg(0, attributes={"snoozed": mark}))
            w.on_live_message({"kind": "review", "event": _msg(0, attributes={"snoozed": mark})["event"]})
            w.on_live_message(_msg(1))
        assert [b["event"]["id"] for b in r1.until(1)] == ["ev00001"]
        texts = [b["text"] for b in r2.until(2)]
        assert "snoozed by user:alice until" in texts[0] and "crane maintenance" in texts[0] and "ev00001" in texts[1]
        time.sleep(0.3)
        assert len(r1.requests) == 1 and len(r2.requests) == 2
    finally:
        w1.stop(), w2.stop(), r1.close(), r2.close()


# ---- the whole service ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_snoozed_camera_events_are_stored_marked_sent_on_mqtt_and_not_to_webhooks(tmp_path, broker):
    from seawatch.service.runner import Service

    video = tmp_path / "quay.mp4"
    write_video(video, seconds=3.0)
    r1, r2 = Receiver(), Receiver()
    cfg = _settings(tmp_path, video, drone=False, webhooks=[{"url": r1.url, "name": "ops"}, {"url": r2.url, "name": "log", "snoozed": True}],
                    mqtt={"enabled": True, "host": "127.0.0.1", "port": broker, "topic_prefix": "snz"})
    # the operator snoozed the camera, then the service restarted: the snooze holds (the start-up's "end what the
    # last run left open" leaves its record open)
    with TestClient(create_app(cfg)) as c:
        sn = c.post("/api/sources/quay-1/snooze", json={"minutes": 60, "note": "crane maintenance"}, headers=H_OP).json()["snooze"]
    sub = Listener(broker, "snz/events")
    svc = Service(cfg, detectors={"stub": FireEverywhere()}, file_pace="fast", loop_files=False).start()
    try:
        payload, _ = sub.until("snz/events", lambda p: json.loads(p)["after"]["type"] == "fire", timeout_s=30)
        after = json.loads(payload)["after"]
        assert after["attributes"]["snoozed"]["snooze_id"] == sn["id"]
        assert after["attributes"]["snoozed"]["note"] == "crane maintenance"
        fire = svc.store.get(after["id"])  # stored, with its mark and its snapshot
        assert fire.attributes["snoozed"]["by"] == "key:alice" and fire.snapshot is not None and fire.clip is not None
        assert svc.store.get(sn["id"]).end_ns is None  # the record is still open
        got = r2.until(1, timeout_s=10)  # the endpoint that asked for snoozed events has it
        assert [b["event"]["attributes"]["snoozed"]["snooze_id"] for b in got if b["event"]["type"] == "fire"]
        with TestClient(svc.app) as c:
            cam = next(s for s in c.get("/api/sources", headers=H_VIEW).json() if s["source_id"] == "quay-1")
            assert cam["snooze"]["id"] == sn["id"]
            assert c.request("DELETE", "/api/sources/quay-1/snooze", json={"note": "done"}, headers=H_OP).status_code == 200
        svc.sink.emit(make_event(9, source_id="quay-1", clip=None))  # after the snooze: it alarms again
        got = r1.until(2, timeout_s=10)
        assert [(b["event"]["type"], b["phase"]) for b in got] == [(SNOOZE_TYPE, "end"), ("fire", "start")]
        assert got[1]["event"]["id"] == "ev00009" and "snoozed" not in got[1]["event"]["attributes"]
        assert svc.store.get("ev00009").attributes.get("snoozed") is None
    finally:
        svc.stop()
        sub.close()
        r1.close(), r2.close()
    st = EventStore.open(cfg.storage.resolved_database_url())
    try:
        marked = [e for e in st.search(EventQuery(types=("fire",), source_ids=("quay-1",), limit=50)).events
                  if e.id != "ev00009"]
        assert marked and all(e.attributes["snoozed"]["snooze_id"] == sn["id"] for e in marked)
    finally:
        st.close()
