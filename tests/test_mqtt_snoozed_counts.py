"""MQTT counts leave snoozed incidents out (``service/mqtt.py``): an incident of a camera whose alerts an operator
snoozed is published on ``P/events`` with ``attributes.snoozed`` but never turns ``P/<source>/<label>`` (a Home
Assistant binary sensor, a siren automation) on; its end does not take the count down (it was never counted), while
an incident raised before the snooze counts and ends as usual. Against a real mosquitto broker, fed by the service's
own ``SnoozingSink`` and ``LiveHub``."""

from __future__ import annotations

import json
import time

from seawatch.service.config import MqttConfig
from seawatch.service.live import LiveHub
import test_service_mqtt
from test_service_mqtt import Listener
from test_service_store import S, make_event

broker = test_service_mqtt.broker  # the mosquitto fixture


def _counts(sub: Listener, topic: str, n: int, timeout_s: float = 5.0) -> list[str]:
    """Every payload on ``topic`` so far, in order, once there are ``n`` (or the timeout passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = [p.decode() for t, p, _r in list(sub.raw) if t == topic]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def test_a_snoozed_cameras_incident_never_turns_its_count_on(broker, tmp_path):
    from seawatch.service.mqtt import MqttPublisher
    from seawatch.service.snooze import SnoozeBook, SnoozingSink
    from seawatch.service.store import EventStore

    pub = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=broker, topic_prefix="swz"),
                        client_id="pub-snoozed").start()
    sub = Listener(broker, "swz/#")
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    book = SnoozeBook(3600.0)
    hub = LiveHub()
    hub.add_listener(pub.on_live_message)
    sink = SnoozingSink(book, store, tmp_path / "media", [hub.publish_event])
    try:
        assert pub.connected.wait(5)
        sub.until("swz/available", lambda p: p == "online")
        now = time.time_ns()
        fire = dict(source_id="quay-1", labels=("fire",), scores=(0.9,))
        sink.emit(make_event(0, start_ns=now, at_ns=now, **fire))                    # before the snooze: counted
        assert _counts(sub, "swz/quay-1/fire", 1) == ["1"]
        book.snooze("quay-1", "alice", now + 600 * S, "crane maintenance", now_ns=now)
        sink.emit(make_event(1, start_ns=now + 2 * S, at_ns=now + 2 * S, **fire))     # snoozed: not counted
        sink.emit(make_event(1, start_ns=now + 2 * S, at_ns=now + 3 * S, phase="update", seq=1, severity="critical",
                             **fire))
        sink.emit(make_event(1, start_ns=now + 2 * S, at_ns=now + 4 * S, phase="end", seq=2, end_ns=now + 4 * S,
                             **fire))                                                  # ends: the count stays
        # the events themselves are published, flagged (the consumer decides)
        events = [json.loads(sub.until("swz/events", lambda p: '"ev00001"' in p)[0]) for _ in range(3)]
        assert [e["type"] for e in events] == ["new", "update", "end"]
        assert all(e["after"]["attributes"]["snoozed"]["by"] == "alice" for e in events)
        time.sleep(0.2)  # and no other count comes
        assert _counts(sub, "swz/quay-1/fire", 3) == ["1", "1", "1"]  # its start and its end: the count as it was
        late = Listener(broker, "swz/quay-1/fire")  # what the broker retains (what Home Assistant reads at start)
        try:
            assert late.until("swz/quay-1/fire") == ("1", True)
        finally:
            late.close()
        sink.emit(make_event(0, start_ns=now, at_ns=now + 5 * S, phase="end", seq=1, end_ns=now + 5 * S, **fire))
        assert _counts(sub, "swz/quay-1/fire", 4) == ["1", "1", "1", "0"]  # never below 0, never stuck at 1
        assert store.get("ev00001").attributes["snoozed"]["note"] == "crane maintenance"
    finally:
        sink.close()
        store.close()
        pub.close()
        sub.close()


def test_a_snoozed_incident_alone_leaves_the_count_at_zero(broker):
    """Directly on the LiveHub: a snoozed start publishes the count (0: the sensor is OFF, not unknown) and an end of
    an incident never counted does not go below 0."""
    from seawatch.service.mqtt import MqttPublisher

    pub = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=broker, topic_prefix="swz2"),
                        client_id="pub-snoozed-2").start()
    sub = Listener(broker, "swz2/#")
    try:
        assert pub.connected.wait(5)
        sub.until("swz2/available", lambda p: p == "online")
        hub = LiveHub()
        hub.add_listener(pub.on_live_message)
        mark = {"snoozed": {"by": "bob", "since_ns": 0, "until_ns": 2**62, "note": "lens cleaning"}}
        ev = make_event(0, source_id="quay-2", labels=("fire", "smoke"), scores=(0.9, 0.6), attributes=mark)
        hub.publish_event(ev)
        assert _counts(sub, "swz2/quay-2/fire", 1) == ["0"] and _counts(sub, "swz2/quay-2/smoke", 1) == ["0"]
        assert json.loads(sub.until("swz2/events")[0])["after"]["attributes"]["snoozed"]["note"] == "lens cleaning"
        hub.publish_event(make_event(0, source_id="quay-2", labels=("fire", "smoke"), scores=(0.9, 0.6),
                                     attributes=mark, phase="end", seq=1, end_ns=ev.start_ns + 5 * S))
        time.sleep(0.2)
        assert _counts(sub, "swz2/quay-2/fire", 2) == ["0", "0"] and _counts(sub, "swz2/quay-2/smoke", 2) == ["0", "0"]
    finally:
        pub.close()
        sub.close()
