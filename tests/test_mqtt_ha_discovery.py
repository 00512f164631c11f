"""Home Assistant MQTT discovery against a real mosquitto broker (the fixtures of test_service_mqtt and
test_service_durability): the configurations announced, that the state topics they name are the ones Seawatch
publishes (an incident flips them), unique ids per site, cleanup of removed cameras, and nothing when it is off."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace

import pytest

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (pip install paho-mqtt)")
jinja2 = pytest.importorskip("jinja2", reason="jinja2 (renders the value templates as Home Assistant would)")

from seawatch.errors import ConfigError  # noqa: E402
from seawatch.service.config import MqttConfig, load_config  # noqa: E402
from seawatch.service.live import LiveHub  # noqa: E402
from seawatch.service.mqtt import HaSources, MqttPublisher, ha_sources  # noqa: E402
from seawatch.service.runner import Service  # noqa: E402
from seawatch.vision.events import Snapshot  # noqa: E402
from test_service_durability import _free_port, mosquitto_on  # noqa: E402
import test_service_mqtt  # noqa: E402
from test_service_mqtt import Listener  # noqa: E402
from test_service_serve import FireEverywhere, serve_settings, write_video  # noqa: E402
from test_service_store import S, T0, make_event  # noqa: E402

broker = test_service_mqtt.broker  # the module's own mosquitto (a fixture), started and stopped with this module
TOPIC = re.compile(r"^homeassistant/(binary_sensor|sensor|camera|device_tracker)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config$")
DRONE_ENTITIES = 8  # link, position, battery, height, armed, flight mode, patrol, task


def wait_for(pred, timeout_s: float = 5.0, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def configs(sub: Listener, node: str) -> dict[str, tuple[dict, bool]]:
    """The latest non-empty discovery configuration per topic of ``node`` seen by ``sub``: {topic: (JSON, retained)}."""
    out: dict[str, tuple[dict, bool]] = {}
    for topic, payload, retained in list(sub.raw):
        m = TOPIC.match(topic)
        if m and m.group(2) == node:
            if payload:
                out[topic] = (json.loads(payload), retained)
            else:
                out.pop(topic, None)
    return out


def latest(sub: Listener, topic: str) -> bytes | None:
    got = [p for t, p, _r in list(sub.raw) if t == topic]
    return got[-1] if got else None


def ha_state(cfg: dict, payload: bytes) -> str:
    """A binary sensor's state from a payload on its state topic, as Home Assistant works it out."""
    text = payload.decode()
    if "value_template" in cfg:
        text = jinja2.Environment().from_string(cfg["value_template"]).render(value=text).strip()
    return {cfg.get("payload_on", "ON"): "on", cfg.get("payload_off", "OFF"): "off"}.get(text, f"? {text!r}")


def by_uid(found: dict[str, tuple[dict, bool]], suffix: str) -> dict:
    hits = [c for c, _r in found.values() if c["unique_id"].endswith(suffix)]
    assert len(hits) == 1, (suffix, sorted(c["unique_id"] for c, _r in found.values()))
    return hits[0]


SITE = HaSources(cameras=(("quay-1", ("fire", "smoke")), ("cam.2", ("person",))), drones=(("patrol-1", "cam.2"),))


def ha_config(prefix: str, port: int, enabled: bool = True) -> MqttConfig:
    return MqttConfig(enabled=True, host="127.0.0.1", port=port, topic_prefix=prefix, home_assistant={"enabled": enabled})


def test_config_switch_is_off_by_default_and_validated():
    assert MqttConfig().home_assistant.enabled is False
    assert MqttConfig().home_assistant.discovery_prefix == "homeassistant"
    for bad in ({"discovery_prefix": "home/#"}, {"discovery_prefix": ""}, {"discovery_prefix": "/ha"}, {"nope": 1}):
        with pytest.raises(ConfigError):
            load_config(data={"mqtt": {"home_assistant": bad}})
    # Seawatch's own topics under the discovery prefix (or the other way round) would be read as discovery
    for prefix, dp in (("homeassistant", "homeassistant"), ("homeassistant/seawatch", "homeassistant"), ("ha", "ha/disc")):
        with pytest.raises(ConfigError, match="overlap"):
            load_config(data={"mqtt": {"enabled": True, "topic_prefix": prefix,
                                       "home_assistant": {"enabled": True, "discovery_prefix": dp}}})
    load_config(data={"mqtt": {"topic_prefix": "homeassistant", "home_assistant": {"enabled": False}}})  # off: no clash
    # discovery switched on with MQTT off would announce nothing, silently: refused, naming the fix
    with pytest.raises(ConfigError, match="needs mqtt.enabled: true"):
        load_config(data={"mqtt": {"home_assistant": {"enabled": True}}})


def test_ha_sources_from_a_configuration(tmp_path):
    """The labels announced per camera are those its zone rules can raise; drones with the camera they carry."""
    cfg = load_config(data={
        "sources": [{"id": "quay-1", "url": "a.mp4", "models": ["stub"]},
                    {"id": "yard", "url": "b.mp4", "models": ["stub"]},
                    {"id": "drone-cam", "url": "udp://127.0.0.1:5600", "models": ["stub"]}],
        "zones": [{"id": "z1", "source": "quay-1", "rules": [{"type": "fire_smoke"}, {"type": "vessel_in_zone"}]},
                  {"id": "z2", "source": "yard", "rules": [{"type": "fire_lane_blocked", "vehicle_labels": ["car"]},
                                                            {"type": "no_hard_hat"}]}],
        "drones": [{"id": "patrol-1", "connection": "udp:127.0.0.1:14550", "video_source": "drone-cam",
                    "camera": {"width_px": 640, "height_px": 360, "hfov_deg": 70.0}}]})
    got = ha_sources(cfg)
    assert dict(got.cameras) == {"quay-1": ("fire", "smoke", "vessel"), "yard": ("car", "person", "no_helmet"),
                                 "drone-cam": ()}
    assert got.drones == (("patrol-1", "drone-cam"),)


def test_discovery_names_the_topics_seawatch_publishes(broker, tmp_path):
    media = tmp_path / "media"
    (media / "snapshots").mkdir(parents=True)
    (media / "snapshots" / "a.jpg").write_bytes(b"\xff\xd8fire")
    sub = Listener(broker, "homeassistant/#")
    state = Listener(broker, "ha1/#")
    pub = MqttPublisher(ha_config("ha1", broker), client_id="ha-pub1", media_dir=media, announce=SITE).start()
    try:
        assert pub.connected.wait(5)
        # service + the drone's 8 + 2 camera connections + 3 labels x (binary sensor, snapshot camera)
        n = 1 + DRONE_ENTITIES + 2 + 3 * 2
        found = wait_for(lambda: len(c := configs(sub, "ha1")) >= n and c, what=f"{n} discovery configs")
        assert len(found) == n, sorted(found)
        uids = [c["unique_id"] for c, _r in found.values()]
        assert len(set(uids)) == len(uids) and all("ha1" in u for u in uids)
        service_ids = by_uid(found, "_service")["device"]["identifiers"]
        for topic, (cfg, _retained) in found.items():  # (retained: checked by a late subscriber below)
            assert {"name", "unique_id", "device", "origin"} <= set(cfg), topic
            assert (cfg.get("state_topic") or cfg.get("topic") or cfg["json_attributes_topic"]).startswith("ha1/"), topic
            assert cfg["device"]["manufacturer"] == "Seawatch" and cfg["device"]["identifiers"], topic
            if not cfg["unique_id"].endswith("_service"):
                assert cfg["availability_topic"] == "ha1/available", topic
                assert (cfg["payload_available"], cfg["payload_not_available"]) == ("online", "offline")
        fire, smoke, person = (by_uid(found, s) for s in ("quay-1_fire", "quay-1_smoke", "_person"))
        assert fire["device_class"] == "smoke" and person["device_class"] == "occupancy"
        assert fire["device"] == smoke["device"] and fire["device"]["name"] == "quay-1"
        assert fire["device"]["via_device"] == service_ids[0]
        # a drone's camera hangs under its drone, the drone under the service
        link = by_uid(found, "drone_patrol-1_link")
        assert person["device"]["name"] == "cam.2" and person["device"]["via_device"] == link["device"]["identifiers"][0]
        assert link["device"]["via_device"] == service_ids[0]
        # "cam.2": the dot is not allowed in a discovery object id; replaced, with a hash of the id after it
        person_topic = next(t for t, (c, _r) in found.items() if c is person)
        assert re.fullmatch(r"cam_2-[0-9a-f]{6}_person", TOPIC.match(person_topic).group(3)), person_topic

        # the entities exist before the first incident, OFF (not unknown): their count topics start at 0
        assert wait_for(lambda: latest(state, fire["state_topic"]), what="fire count") == b"0"
        assert ha_state(fire, latest(state, fire["state_topic"])) == "off"
        # an incident flips the state topic the configuration names, and its end flips it back
        hub = LiveHub()
        hub.add_listener(pub.on_live_message)
        ev = make_event(0, source_id="quay-1", labels=("fire",))
        hub.publish_event(ev)
        wait_for(lambda: latest(state, fire["state_topic"]) == b"1", what="fire count 1")
        assert ha_state(fire, latest(state, fire["state_topic"])) == "on"
        assert ha_state(smoke, wait_for(lambda: latest(state, smoke["state_topic"]))) == "off"
        hub.publish_event(replace(ev, phase="end", seq=1, end_ns=T0 + 5 * S, at_ns=T0 + 5 * S))
        wait_for(lambda: latest(state, fire["state_topic"]) == b"0", what="fire count back to 0")
        assert ha_state(fire, latest(state, fire["state_topic"])) == "off"
        # the snapshot camera's topic gets the incident's best view
        cam = by_uid(found, "quay-1_fire_snapshot")
        pub.on_stored_event(replace(ev, snapshot=Snapshot("quay-1", T0, (1.0, 2.0, 3.0, 4.0), 0.9, uri="snapshots/a.jpg")))
        assert wait_for(lambda: latest(state, cam["topic"]), what="snapshot") == b"\xff\xd8fire"
        # connectivity from the reader's state (a camera) and the link's (a drone)
        conn = by_uid(found, "quay-1_status")
        assert conn["device_class"] == "connectivity"
        pub.source_states([{"source_id": "quay-1", "state": "online"}, {"source_id": "patrol-1", "state": "connected"}])
        assert ha_state(conn, wait_for(lambda: latest(state, conn["state_topic"]), what="status")) == "on"
        assert ha_state(link, wait_for(lambda: latest(state, link["state_topic"]), what="link")) == "on"
        assert json.loads(wait_for(lambda: latest(state, conn["json_attributes_topic"])))["state"] == "online"
        pub.source_states([{"source_id": "quay-1", "state": "offline"}, {"source_id": "patrol-1", "state": "lost"}])
        wait_for(lambda: latest(state, conn["state_topic"]) == b"offline", what="offline")
        assert ha_state(conn, latest(state, conn["state_topic"])) == "off"
        wait_for(lambda: latest(state, link["state_topic"]) == b"lost", what="lost")
        assert ha_state(link, latest(state, link["state_topic"])) == "off"
        # the drone's telemetry: Home Assistant's map (a GPS device tracker), battery, height, mode, armed, task
        pub.source_states([{"source_id": "patrol-1", "kind": "drone", "state": "connected", "mode": "AUTO",
                            "armed": True, "battery_pct": 76.0, "battery_v": 15.21, "lat_deg": 52.8401234567,
                            "lon_deg": 5.7012345678, "alt_rel_m": 39.96, "heading_deg": 181.4, "patrol": "harbour",
                            "patrol_state": "interrupted", "task": {"state": "holding", "event_id": "ev7"}}])
        tracker = by_uid(found, "drone_patrol-1_position")
        assert tracker["source_type"] == "gps" and "state_topic" not in tracker
        tele = json.loads(wait_for(lambda: latest(state, tracker["json_attributes_topic"]), what="telemetry"))
        assert (tele["latitude"], tele["longitude"]) == (52.840123, 5.701235)

        def render(suffix):
            cfg = by_uid(found, suffix)
            assert cfg["state_topic"] == tracker["json_attributes_topic"]
            return jinja2.Environment().from_string(cfg["value_template"]).render(value_json=tele).strip()

        assert render("drone_patrol-1_battery") == "76.0" and by_uid(found, "drone_patrol-1_battery")["device_class"] == "battery"
        assert render("drone_patrol-1_height") == "40.0"
        assert (render("drone_patrol-1_mode"), render("drone_patrol-1_armed")) == ("AUTO", "ON")
        assert (render("drone_patrol-1_patrol"), render("drone_patrol-1_task")) == ("interrupted", "holding")
        # an unchanged drone sends nothing again
        before = sum(1 for t, _p, _r in list(state.raw) if t == tracker["json_attributes_topic"])
        pub.source_states([{"source_id": "patrol-1", "kind": "drone", "state": "connected", "mode": "AUTO",
                            "armed": True, "battery_pct": 76.0, "battery_v": 15.21, "lat_deg": 52.8401234567,
                            "lon_deg": 5.7012345678, "alt_rel_m": 39.96, "heading_deg": 181.4, "patrol": "harbour",
                            "patrol_state": "interrupted", "task": {"state": "holding", "event_id": "ev7"}}])
        time.sleep(0.3)
        assert sum(1 for t, _p, _r in list(state.raw) if t == tracker["json_attributes_topic"]) == before
        # a label the rules were not known to raise is announced with its first incident, before its count
        hub.publish_event(make_event(1, source_id="quay-1", labels=("vessel",)))
        wait_for(lambda: latest(state, "ha1/quay-1/vessel") == b"1", what="vessel count")
        vessel = by_uid(wait_for(lambda: (c := configs(sub, "ha1")) and len(c) == n + 2 and c, what="vessel configs"),
                        "quay-1_vessel")
        assert vessel["state_topic"] == "ha1/quay-1/vessel" and ha_state(vessel, b"1") == "on"
        # a late subscriber (Home Assistant starting after Seawatch) gets every configuration, retained
        late = Listener(broker, "homeassistant/+/ha1/+/config")
        try:
            wait_for(lambda: len(configs(late, "ha1")) == n + 2, what="all configs retained")
            assert all(r for _t, _p, r in late.raw)
        finally:
            late.close()
    finally:
        pub.close()
        sub.close()
        state.close()


def test_two_sites_on_one_broker_have_their_own_unique_ids(broker):
    sub = Listener(broker, "homeassistant/#")
    a = MqttPublisher(ha_config("site-a", broker), announce=SITE).start()
    b = MqttPublisher(ha_config("site/b", broker), announce=SITE).start()
    try:
        assert a.node_id != b.node_id
        n = 6 + DRONE_ENTITIES  # service, 2 connections, 3 labels (no media: no snapshot cameras), the drone's
        ca = wait_for(lambda: len(c := configs(sub, a.node_id)) == n and c, what="site a")
        cb = wait_for(lambda: len(c := configs(sub, b.node_id)) == n and c, what="site b")
        ua, ub = {c["unique_id"] for c, _r in ca.values()}, {c["unique_id"] for c, _r in cb.values()}
        assert len(ua) == len(ub) == n and not ua & ub
        da = {c["device"]["identifiers"][0] for c, _r in ca.values()}
        db = {c["device"]["identifiers"][0] for c, _r in cb.values()}
        assert len(da) == 4 and not da & db  # service, drone, two cameras each
        assert all((c.get("state_topic") or c["json_attributes_topic"]).startswith("site/b/") for c, _r in cb.values())
    finally:
        a.close(timeout_s=1)
        b.close(timeout_s=1)
        sub.close()


def test_a_camera_removed_from_the_configuration_loses_its_entities(broker):
    sub = Listener(broker, "homeassistant/+/ha-rm/#")
    old = MqttPublisher(ha_config("ha-rm", broker), announce=HaSources(cameras=(("quay-1", ("fire",)), ("gone", ("fire",)))))
    old.start()
    try:
        wait_for(lambda: len(configs(sub, "ha-rm")) == 5, what="first run's configs")
    finally:
        old.close(timeout_s=1)
    gone = sorted(t for t in configs(sub, "ha-rm") if "/gone_" in t)
    assert len(gone) == 2
    new = MqttPublisher(ha_config("ha-rm", broker), announce=HaSources(cameras=(("quay-1", ("fire",)),))).start()
    try:
        # an empty retained payload on each of the removed camera's topics: Home Assistant deletes those entities
        wait_for(lambda: all(any(t == g and not p for t, p, _r in sub.raw) for g in gone), what="cleared")
        late = Listener(broker, "homeassistant/+/ha-rm/#")
        try:
            time.sleep(0.5)
            left = configs(late, "ha-rm")
            assert len(left) == 3 and not any("/gone_" in t for t in left), sorted(left)
        finally:
            late.close()
    finally:
        new.close(timeout_s=1)
        sub.close()


def test_disabled_sends_nothing_under_the_discovery_prefix(tmp_path):
    """A broker of its own (nothing retained from the other tests): with discovery off, nothing under homeassistant/,
    and no count topic before the first incident (as before discovery existed)."""
    port = _free_port()
    with mosquitto_on(port, tmp_path):
        sub = Listener(port, "#")
        pub = MqttPublisher(ha_config("ha-off", port, enabled=False), announce=SITE).start()
        try:
            assert pub.connected.wait(5)
            hub = LiveHub()
            hub.add_listener(pub.on_live_message)
            hub.publish_event(make_event(0, source_id="quay-1", labels=("fire", "vessel"), scores=(0.9, 0.8)))
            sub.until("ha-off/quay-1/fire", lambda p: p == "1")
            time.sleep(0.5)
            topics = {t for t, _p, _r in sub.raw}
            assert not [t for t in topics if t.startswith("homeassistant/")], sorted(topics)
            assert "ha-off/quay-1/smoke" not in topics
        finally:
            pub.close(timeout_s=1)
            sub.close()


def test_the_service_announces_its_camera_and_its_incident_flips_the_sensor(broker, tmp_path):
    """Through the real service: the configured camera's fire sensor is announced at start, OFF, turns ON with the
    incident the stand-in detector raises and OFF at its end; its snapshot camera gets the JPEG."""
    video = tmp_path / "quay.mp4"
    write_video(video, seconds=3.0)
    cfg = serve_settings(tmp_path, video, mqtt={"enabled": True, "host": "127.0.0.1", "port": broker,
                                                "topic_prefix": "sw-ha", "home_assistant": {"enabled": True}})
    sub = Listener(broker, "homeassistant/+/sw-ha/#")
    state = Listener(broker, "sw-ha/#")
    svc = Service(cfg, detectors={"stub": FireEverywhere()}, file_pace="fast", loop_files=False).start()
    try:
        found = wait_for(lambda: len(c := configs(sub, "sw-ha")) == 4 and c, timeout_s=10, what="service, status, fire")
        fire, cam = by_uid(found, "quay-1_fire"), by_uid(found, "quay-1_fire_snapshot")
        assert fire["state_topic"] == "sw-ha/quay-1/fire" and cam["topic"] == "sw-ha/quay-1/fire/snapshot"
        def fire_states():
            return [ha_state(fire, p) for t, p, _r in list(state.raw) if t == fire["state_topic"]]

        wait_for(lambda: "on" in (s := fire_states()) and s[-1] == "off", timeout_s=30, what="the sensor on, then off")
        assert set(fire_states()) == {"on", "off"}, fire_states()
        assert (latest(state, cam["topic"]) or b"")[:2] == b"\xff\xd8"
        conn = by_uid(found, "quay-1_status")
        assert wait_for(lambda: latest(state, conn["state_topic"]), what="camera status")
    finally:
        svc.stop()
        sub.close()
        state.close()
