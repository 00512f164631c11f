"""MQTT publishing to a real mosquitto broker (started and stopped by a fixture, RECIPES.md section 4)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import replace

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import missing  # noqa: E402
from seawatch.service.config import MqttConfig  # noqa: E402
from seawatch.service.live import LiveHub  # noqa: E402
from seawatch.service.runner import Service  # noqa: E402
from test_service_serve import KEY, FireEverywhere, serve_settings, write_video  # noqa: E402
from test_service_store import S, T0, make_event  # noqa: E402


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    exe = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)
    if exe is None:
        missing("mosquitto broker (apt-get install mosquitto)")
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        missing("paho-mqtt (pip install paho-mqtt)")
    d = tmp_path_factory.mktemp("mosquitto")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = d / "mosq.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stdout\n")
    log = open(d / "mosq.log", "w")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"mosquitto did not start: {(d / 'mosq.log').read_text()}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


class Listener:
    """A subscriber collecting (topic, payload, retain) on a thread-safe queue."""

    def __init__(self, port: int, pattern: str) -> None:
        import paho.mqtt.client as mqtt

        self.q: queue.Queue = queue.Queue()
        self.raw: list[tuple[str, bytes, bool]] = []  # every message as sent (snapshots are JPEG bytes)
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{time.monotonic_ns()}")
        ready = __import__("threading").Event()

        def on_message(c, u, m):
            self.raw.append((m.topic, bytes(m.payload), m.retain))
            self.q.put((m.topic, m.payload.decode(errors="replace"), m.retain))

        self.c.on_message = on_message
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe(pattern, qos=1)
        assert ready.wait(5)

    def until(self, topic: str, pred=lambda payload: True, timeout_s: float = 5.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                t, p, r = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if t == topic and pred(p):
                return p, r
        raise AssertionError(f"no message on {topic} within {timeout_s} s")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_events_counts_reviews_and_availability(broker):
    from seawatch.service.mqtt import MqttPublisher

    pub = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=broker, topic_prefix="sw1"), client_id="pub1").start()
    sub = Listener(broker, "sw1/#")
    try:
        assert pub.connected.wait(5)
        sub.until("sw1/available", lambda p: p == "online")
        hub = LiveHub()
        hub.add_listener(pub.on_live_message)
        ev = make_event(0, source_id="quay-1", labels=("fire", "smoke"), scores=(0.9, 0.5))
        hub.publish_event(ev)
        payload, _ = sub.until("sw1/events")
        msg = json.loads(payload)
        assert msg["type"] == "new" and msg["after"]["id"] == "ev00000" and msg["after"]["source_id"] == "quay-1"
        assert sub.until("sw1/quay-1/fire")[0] == "1"
        assert sub.until("sw1/quay-1/smoke")[0] == "1"
        hub.publish_event(make_event(1, source_id="quay-1", labels=("fire",)))
        assert sub.until("sw1/quay-1/fire", lambda p: p == "2")
        hub.publish_event(replace(ev, phase="end", seq=1, end_ns=T0 + 5 * S, at_ns=T0 + 5 * S))
        assert json.loads(sub.until("sw1/events", lambda p: '"end"' in p)[0])["type"] == "end"
        assert sub.until("sw1/quay-1/fire", lambda p: p == "1")
        assert sub.until("sw1/quay-1/smoke", lambda p: p == "0")
        hub.publish_event(ev.with_review("acknowledged", T0 + 9 * S, "olga", "on it"), kind="review")
        assert json.loads(sub.until("sw1/reviews")[0]) == {"event_id": "ev00000", "source_id": "quay-1", "type": ev.type,
                                                            "severity": ev.severity, "labels": ["fire", "smoke"],
                                                            "status": "acknowledged", "by": "olga",
                                                            "note": "on it", "reason": "", "at_ns": T0 + 9 * S}
        hub.publish_event(ev.with_review("dismissed", T0 + 10 * S, "olga", "a buoy", "false_detection"), kind="review")
        assert json.loads(sub.until("sw1/reviews", lambda p: "buoy" in p)[0])["reason"] == "false_detection"
        pub.source_states([{"source_id": "quay-1", "state": "online"}, {"source_id": "cam/#2", "state": "offline"}])
        assert sub.until("sw1/quay-1/status")[0] == "online"
        assert sub.until("sw1/cam__2/status")[0] == "offline"  # wildcards and separators never reach a topic
        # a late subscriber gets the retained state
        late = Listener(broker, "sw1/+/fire")
        try:
            payload, retained = late.until("sw1/quay-1/fire")
            assert payload == "1" and retained
        finally:
            late.close()
    finally:
        pub.close()
    sub.until("sw1/available", lambda p: p == "offline")
    sub.close()


def test_service_publishes_after_commit_and_reviews(broker, tmp_path):
    """The service's events, counts, snapshots and reviews on MQTT, each after the store committed it."""
    video = tmp_path / "quay.mp4"
    write_video(video, seconds=3.0)
    cfg = serve_settings(tmp_path, video, mqtt={"enabled": True, "host": "127.0.0.1", "port": broker, "topic_prefix": "sw2"})
    sub = Listener(broker, "sw2/#")
    svc = Service(cfg, detectors={"stub": FireEverywhere()}, file_pace="fast", loop_files=False).start()
    try:
        payload, _ = sub.until("sw2/events", lambda p: json.loads(p)["type"] == "end", timeout_s=30)
        ev = json.loads(payload)["after"]
        assert svc.store.get(ev["id"]).phase == "end"  # what was published is in the store
        assert sub.until("sw2/quay-1/fire", lambda p: p == "0")
        # the incident's best view, as a JPEG on its source's and label's snapshot topic (retained)
        deadline = time.monotonic() + 5  # (until() above skipped it: read what came)
        while not (snaps := [(p, r) for t, p, r in sub.raw if t == "sw2/quay-1/fire/snapshot"]):
            assert time.monotonic() < deadline, sorted({t for t, _p, _r in sub.raw})
            time.sleep(0.05)
        jpeg, retained = snaps[0]
        import cv2
        import numpy as np

        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert jpeg[:2] == b"\xff\xd8" and img is not None and img.shape == (120, 160, 3) and not retained
        late = Listener(broker, "sw2/+/+/snapshot")  # a Home Assistant camera subscribing later gets it
        try:
            late.until("sw2/quay-1/fire/snapshot")
            assert late.raw[0][1] == [p for t, p, r in sub.raw if t == "sw2/quay-1/fire/snapshot"][-1] and late.raw[0][2]
        finally:
            late.close()
        with TestClient(svc.app) as client:
            r = client.post(f"/api/events/{ev['id']}/dismiss", headers={"X-API-Key": KEY}, json={"note": "welding, not a fire"})
            assert r.status_code == 200
        review = json.loads(sub.until("sw2/reviews")[0])
        assert review["event_id"] == ev["id"] and review["status"] == "dismissed" and review["by"] == "test"
        assert review["source_id"] == "quay-1" and review["type"] == ev["type"]
        # a hold put on and lifted (a reviewer's): whether the incident is kept as evidence, on P/holds
        with TestClient(svc.app) as client:
            rita = {"X-API-Key": KEY}  # an admin: reviewers and above put holds
            assert client.post(f"/api/events/{ev['id']}/hold", headers=rita, json={"note": "case 7"}).status_code == 200
            hold = json.loads(sub.until("sw2/holds")[0])
            assert hold == {"event_id": ev["id"], "source_id": "quay-1", "type": ev["type"], "severity": ev["severity"],
                            "labels": ev["labels"], "held": True}
            assert client.request("DELETE", f"/api/events/{ev['id']}/hold", headers=rita,
                                  json={"note": "case closed"}).status_code == 200
            assert json.loads(sub.until("sw2/holds", lambda p: '"held":false' in p)[0])["held"] is False
    finally:
        svc.stop()
        sub.until("sw2/available", lambda p: p == "offline")
        sub.close()


def test_service_starts_while_the_broker_is_down(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    cfg = serve_settings(tmp_path, mqtt={"enabled": True, "host": "127.0.0.1", "port": port})
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        missing("paho-mqtt")
    svc = Service(cfg).start()
    try:
        with TestClient(svc.app) as client:
            assert client.get("/api/health").json()["status"] == "ok"
        svc.sink.emit(make_event(0))  # stored even though it cannot be published yet
        assert svc.store.count() == 1
    finally:
        t0 = time.monotonic()
        svc.stop()
        assert time.monotonic() - t0 < 5


def test_snapshot_topics_follow_the_best_view_not_every_update(broker, tmp_path):
    """An incident's snapshot goes to P/<source>/<label>/snapshot for each of its labels when it starts and when its
    best view changes; an update with the same view, an end, an event without a snapshot file send nothing."""
    from seawatch.service.mqtt import MqttPublisher
    from seawatch.vision.events import Snapshot

    media = tmp_path / "media"
    (media / "snapshots").mkdir(parents=True)
    for name, data in (("a.jpg", b"\xff\xd8first"), ("b.jpg", b"\xff\xd8better")):
        (media / "snapshots" / name).write_bytes(data)
    pub = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=broker, topic_prefix="sw8"), client_id="pub8",
                        media_dir=media).start()
    sub = Listener(broker, "sw8/+/+/snapshot")
    try:
        assert pub.connected.wait(5)

        def snap(uri):
            return Snapshot("quay-1", T0, (1.0, 2.0, 3.0, 4.0), 0.9, uri=uri)

        ev = make_event(0, source_id="quay-1", labels=("vessel", "person"), scores=(0.9, 0.8),
                        snapshot=snap("snapshots/a.jpg"))
        pub.on_stored_event(ev)
        sub.until("sw8/quay-1/vessel/snapshot")
        sub.until("sw8/quay-1/person/snapshot")
        pub.on_stored_event(replace(ev, phase="update", seq=1))  # the same view
        pub.on_stored_event(replace(ev, phase="update", seq=2, snapshot=snap("snapshots/b.jpg")))  # a better one
        sub.until("sw8/quay-1/vessel/snapshot", lambda p: "better" in p)
        pub.on_stored_event(replace(ev, phase="end", seq=3, end_ns=T0 + 9 * S, snapshot=snap("snapshots/a.jpg")))
        pub.on_stored_event(replace(make_event(1, source_id="gate"), snapshot=snap("snapshots/gone.jpg")))  # no file
        pub.on_stored_event(make_event(2, source_id="gate"))  # no snapshot
        time.sleep(0.5)
        got = [(t, p) for t, p, _r in sub.raw]
        assert got == [("sw8/quay-1/vessel/snapshot", b"\xff\xd8first"), ("sw8/quay-1/person/snapshot", b"\xff\xd8first"),
                       ("sw8/quay-1/vessel/snapshot", b"\xff\xd8better"), ("sw8/quay-1/person/snapshot", b"\xff\xd8better")]
    finally:
        sub.close()
        pub.close()
