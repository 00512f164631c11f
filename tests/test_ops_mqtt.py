"""MQTT as a site runs it: two Seawatch services on one broker, and a broker that is not there when the service
starts (a real mosquitto, started by the fixtures of test_service_mqtt / test_service_durability)."""

from __future__ import annotations

import logging
import time

import pytest

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (pip install paho-mqtt)")

from seawatch.service.config import MqttConfig  # noqa: E402
from seawatch.service.live import LiveHub  # noqa: E402
from seawatch.service.mqtt import MqttPublisher  # noqa: E402
from test_service_durability import _free_port, mosquitto_on  # noqa: E402
from test_service_mqtt import Listener, broker  # noqa: E402,F401  (fixture)
from test_service_store import make_event  # noqa: E402


def test_two_services_on_one_broker_keep_their_sessions(broker):  # noqa: F811
    """Two sites (own topic prefixes) on one broker, each with the default client id: before, both used
    "seawatch", the broker dropped one for the other every second and each drop fired its last will (offline)."""
    sub = Listener(broker, "+/available")
    a = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=broker, topic_prefix="site-a")).start()
    b = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=broker, topic_prefix="site-b")).start()
    try:
        assert a.client_id != b.client_id and a.client_id.startswith("seawatch-")
        assert a.connected.wait(5) and b.connected.wait(5)
        time.sleep(3)  # paho's first reconnect after a takeover comes within 1 s
        seen = []
        while not sub.q.empty():
            seen.append(sub.q.get_nowait()[:2])
        assert ("site-a/available", "offline") not in seen and ("site-b/available", "offline") not in seen, seen
        assert a.connected.is_set() and b.connected.is_set()
    finally:
        a.close(timeout_s=1)
        b.close(timeout_s=1)
        sub.close()


def test_a_broker_down_at_start_is_logged_then_the_connection_is(tmp_path, caplog):
    port = _free_port()  # nothing listens: the broker is down when the service starts
    pub = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=port, topic_prefix="sw-down")).start()
    hub = LiveHub()
    hub.add_listener(pub.on_live_message)
    try:
        with caplog.at_level(logging.INFO, "seawatch.service.mqtt"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any("cannot reach the broker" in r.getMessage()
                                                           for r in caplog.records):
                time.sleep(0.1)
            warned = [r for r in caplog.records if "cannot reach the broker" in r.getMessage()]
            assert len(warned) == 1 and warned[0].levelno == logging.WARNING, caplog.text
            assert f"127.0.0.1:{port}" in warned[0].getMessage()
            hub.publish_event(make_event(0))  # queued meanwhile
            with mosquitto_on(port, tmp_path):
                sub = Listener(port, "sw-down/#")
                try:
                    assert pub.connected.wait(30)
                    assert sub.until("sw-down/events", timeout_s=10)
                finally:
                    sub.close()
            # rate-limited: still one warning however many retries there were
            assert len([r for r in caplog.records if "cannot reach the broker" in r.getMessage()]) == 1
            back = [r for r in caplog.records if "connected to" in r.getMessage()]
            assert back and "failed attempt" in back[0].getMessage() and back[0].levelno == logging.WARNING
    finally:
        pub.close(timeout_s=1)
