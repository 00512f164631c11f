"""MQTT publishing in the topic style Frigate users already automate against.

Topics (``P`` = ``mqtt.topic_prefix``, default ``seawatch``):

- ``P/available``: ``online`` / ``offline`` (retained; ``offline`` is also the broker's last will).
- ``P/events``: ``{"type": "new" | "update" | "end", "after": <event JSON as the API serves it>}``, QoS 1, for
  every stored phase of an incident. An event of a camera whose alerts an operator snoozed is published all the same,
  with ``after.attributes.snoozed`` (by, since_ns, until_ns, note: ``service/snooze.py``): the consumer decides.
- ``P/<source>/<label>``: number of open incidents on that source involving that label (retained), e.g.
  ``seawatch/quay-1/fire`` -> ``1`` while a fire is open, ``0`` after it ends. An incident of a camera whose alerts
  an operator snoozed (its phases carry ``attributes.snoozed``) is not counted, so a Home Assistant binary sensor (and
  the siren automation on it) stays OFF through the maintenance the snooze is for; its events are still on
  ``P/events``, flagged, and its end leaves the count as it is (it was never counted).
- ``P/<source>/status``: the source reader's state (``online``, ``offline``, ``connecting``...; retained). A camera
  that is down stays ``offline`` through its reconnect attempts, so this changes only when it goes down or comes back.
- ``P/<source>/status/detail``: ``{"state", "since_ns", "down_since_ns", "attempts", "last_error"}`` (retained):
  published with each state change; while a source stays down, its ``attempts`` and ``last_error`` are refreshed
  at most once per ``DETAIL_INTERVAL_S``.
- ``P/reviews``: ``{"event_id", "status", "by", "note", "at_ns"}`` for acknowledge / dismiss / confirm.
- ``P/<source>/<label>/snapshot``: the JPEG of the newest incident's best view on that source with that label
  (retained; as Frigate's ``<camera>/<object>/snapshot``, for a Home Assistant MQTT camera), published when an
  incident starts or its best view changes. Snapshots over ``SNAPSHOT_MAX_BYTES`` are not sent.

Home Assistant discovery (``mqtt.home_assistant.enabled``; ``D`` = its ``discovery_prefix``, ``N`` = :func:`ha_node_id`
of ``P``): at every (re)connect, before the state, retained JSON configurations on ``D/<component>/N/<object_id>/config``
for what is published above (:meth:`MqttPublisher.discovery_messages`): a ``Seawatch`` device (connectivity from
``P/available``); per camera a device with a ``binary_sensor`` per label it can raise (``P/<source>/<label>`` > 0 is
ON), a connectivity ``binary_sensor`` (``P/<source>/status``, ``status/detail`` as its attributes) and, with snapshots,
a ``camera`` per label (``P/<source>/<label>/snapshot``); per drone a device with its link's connectivity. The labels
are the ones the camera's zone rules watch (:func:`ha_sources`), narrowed to what its models can detect when their
manifests say; their counts start at ``0`` so the entities are OFF, not unknown, before the first incident. A label a
rule raises on a camera that was not announced is announced with its first incident. Every entity's availability is
``P/available``; unique ids and device identifiers start with ``seawatch_N_``, so two sites on one broker keep apart.
After announcing, the publisher subscribes to ``D/+/N/+/config``: a retained configuration there that it did not
announce this time (a camera or label since removed from the configuration) is cleared (empty retained payload), which
removes the entity from Home Assistant. Turning discovery off clears nothing.

The client id is ``seawatch-<host name>-<process id>-<n>`` unless given: unique per publisher, so two services on one
broker (two sites with their own ``topic_prefix``, a second instance) do not take each other's session (a broker
disconnects the older client of an id, and both would reconnect every second, each time firing the other's last
will). Sessions are clean, so nothing depends on the id staying the same across restarts.

Messages come from the ``LiveHub`` (so only after the store committed). paho's network thread reconnects by
itself; while the broker is down, QoS 1 messages wait in paho's queue: at most ``max_queued`` event and review
messages not yet acknowledged. Beyond that a message is not queued: it is counted in ``dropped`` and logged
(rate-limited); :meth:`MqttPublisher.stats` reports it. Retained state (counts, source status) takes no room in that
bound while disconnected: it is not queued then, and ``_on_connect`` re-asserts all of it (outside the bound), so an
outage never costs the latest counts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seawatch.service.config import MqttConfig

if TYPE_CHECKING:
    from seawatch.service.config import ServeConfig

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[+#/\s]")
PHASE_TYPE = {"start": "new", "update": "update", "end": "end"}
DETAIL_INTERVAL_S = 60.0  # a down source's attempts / last error are republished at most this often
DETAIL_FIELDS = ("state", "since_ns", "down_since_ns", "attempts", "last_error")
DROP_LOG_INTERVAL_S = 60.0  # at most one warning per interval about refused messages (with the count since the last)
CONNECT_FAIL_LOG_INTERVAL_S = 300.0  # an unreachable broker: one warning at once, then at most one per interval
SNAPSHOT_MAX_BYTES = 2 * 1024 * 1024  # a larger snapshot JPEG is not published (brokers' default limits are near)


def topic_part(text: str) -> str:
    """A source id or label made safe for one topic level (no wildcards, no separators)."""
    return _UNSAFE.sub("_", text) or "_"


# ---- Home Assistant discovery -----------------------------------------------------------------------------------
_HA_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # node and object ids of discovery topics are [a-zA-Z0-9_-]
HA_ONLINE_STATES = ("online", "connected")  # a camera reader's / a drone link's state that means "connected"
# binary sensor device class per label: alarms where the label is the hazard, occupancy where it is a presence
HA_DEVICE_CLASS = {"fire": "smoke", "smoke": "smoke", "no_helmet": "safety", "person_fallen": "safety",
                   "person": "occupancy", "helmet": "occupancy", "vessel": "occupancy", "boat": "occupancy",
                   "ship": "occupancy", "car": "occupancy", "truck": "occupancy", "bus": "occupancy",
                   "motorcycle": "occupancy", "bicycle": "occupancy"}


def ha_id(text: str) -> str:
    """``text`` as a discovery node / object id (``[a-zA-Z0-9_-]``); when characters had to be replaced, a short hash
    of the original follows, so ``cam.1`` and ``cam_1`` stay two ids."""
    safe = _HA_UNSAFE.sub("_", text) or "_"
    return safe if safe == text else f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def ha_node_id(topic_prefix: str) -> str:
    """The discovery node id of a publisher with this topic prefix: its entities' ids and their cleanup all hang on
    it, so it changes only with the prefix."""
    return ha_id(topic_prefix.strip("/"))


@dataclass(frozen=True, slots=True)
class HaSources:
    """What Home Assistant discovery announces: ``cameras`` as ``(source id, labels its count topics can carry)``,
    ``drones`` as ``(drone id, its video source or None)``."""

    cameras: tuple[tuple[str, tuple[str, ...]], ...] = ()
    drones: tuple[tuple[str, str | None], ...] = ()


def _model_labels(models: tuple[str, ...]) -> set[str] | None:
    """The Seawatch labels a source's registry models can emit; None when one of them is not a registered model (a
    detector given in code, a manifest not installed): then nothing is narrowed."""
    from seawatch.errors import SeawatchError
    from seawatch.vision.ensemble import members_of
    from seawatch.vision.registry import get_manifest

    out: set[str] = set()
    for name in models:
        base = name.partition(":")[0]  # NAME:VARIANT
        try:
            for member in members_of(base) or (base,):
                out.update(get_manifest(member).seawatch_labels)
        except SeawatchError:
            return None
    return out


def _rule_labels(rule) -> tuple[str, ...]:
    """The detection labels whose boxes a zone rule puts into its incidents (their ``labels``)."""
    kind = getattr(rule, "type", "")
    if kind == "no_hard_hat":
        return (*rule.person_labels, rule.no_helmet_label)
    if kind == "fire_lane_blocked":
        return tuple(rule.vehicle_labels)
    return tuple(getattr(rule, "labels", ()))  # fire_smoke, vessel_in_zone


def ha_sources(settings: "ServeConfig") -> HaSources:
    """The cameras, their labels and the drones of a service configuration, for discovery.

    A camera's labels: those its zones' rules watch, plus the identity stage's vessel labels when AIS or a registry is
    on (its incidents carry the vessel's label), each kept only if the camera's models can detect it (when their
    manifests are known). Events without labels (camera down, drone link lost) have no count topic.
    """
    identity = None
    if settings.identity_enabled:
        from seawatch.vision.vessel_identity import IdentityConfig

        identity = settings.identity or IdentityConfig()
    cameras = []
    for spec in settings.sources:
        labels: dict[str, None] = {}
        for zone in settings.zones:
            if zone.source == spec.id:
                for rule in zone.rules:
                    labels.update(dict.fromkeys(_rule_labels(rule)))
        can = _model_labels(spec.models)
        if identity is not None and can is not None:  # without manifests: only what the rules name
            labels.update(dict.fromkeys(identity.labels))
        cameras.append((spec.id, tuple(lab for lab in labels if can is None or lab in can)))
    # the drones the fleet links (configured ones and those given inline in their camera's source), with the
    # camera they carry
    drones: dict[str, str | None] = {d.id: d.video_source for d in settings.drones}
    for spec in settings.sources:
        drone = settings.drone_of(spec.id)
        if drone is not None and drones.get(drone.id) is None:
            drones[drone.id] = spec.id
    return HaSources(tuple(cameras), tuple(drones.items()))


def drone_telemetry(status: dict[str, Any]) -> str:
    """A drone's ``P/<drone>/telemetry`` payload (JSON) from its status (``Fleet.drones()``): link state, mode, armed,
    battery, position (``latitude`` / ``longitude``: the names Home Assistant's device tracker reads), height above
    home, heading, patrol and task. Rounded (position to ~0.1 m, the rest to what is shown), so an unchanged drone
    is an unchanged payload and nothing is sent."""
    def num(key: str, nd: int) -> float | None:
        v = status.get(key)
        return round(float(v), nd) if isinstance(v, (int, float)) and v == v else None

    task = status.get("task") or {}
    return json.dumps({
        "state": status.get("state"), "mode": status.get("mode"), "armed": status.get("armed"),
        "battery_pct": num("battery_pct", 0), "battery_v": num("battery_v", 2),
        "latitude": num("lat_deg", 6), "longitude": num("lon_deg", 6), "alt_rel_m": num("alt_rel_m", 1),
        "heading_deg": num("heading_deg", 0), "patrol": status.get("patrol"), "patrol_state": status.get("patrol_state"),
        "task_state": task.get("state"), "task_event_id": task.get("event_id"),
    }, separators=(",", ":"))


_client_numbers = itertools.count(1)


def _about(ev: dict[str, Any]) -> dict[str, Any]:
    """Which incident a review or hold message is about, so a subscriber can route it without asking the API."""
    return {"event_id": ev.get("id"), "source_id": ev.get("source_id"), "type": ev.get("type"),
            "severity": ev.get("severity"), "labels": ev.get("labels", [])}


def default_client_id() -> str:
    """``seawatch-<host>-<pid>-<n>``: unique per publisher (see the module docstring), readable in the broker's log."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:40] or "host"
    return f"seawatch-{host}-{os.getpid()}-{next(_client_numbers)}"


def _acknowledged(info) -> bool:
    """paho's ``MQTTMessageInfo`` was acknowledged by the broker. ``is_published()`` raises for a message queued while
    disconnected (its ``rc`` stays NO_CONN after it was sent), so the flag it guards is read directly."""
    return bool(getattr(info, "_published", False))


class MqttPublisher:
    def __init__(self, config: MqttConfig, client_id: str | None = None, max_queued: int = 10_000,
                 media_dir: str | Path | None = None, announce: HaSources | None = None) -> None:
        """``media_dir``: where the store sink writes snapshots (their ``uri`` is relative to it); without it no
        snapshot topics. ``announce``: the cameras (with their labels) and drones Home Assistant discovery announces
        (:func:`ha_sources`), used only with ``config.home_assistant.enabled``."""
        import paho.mqtt.client as mqtt

        self.config = config
        self.media_dir = Path(media_dir) if media_dir is not None else None
        self._snapshots: dict[tuple[str, str], tuple[str, bytes]] = {}  # (source, label) -> (uri, JPEG), retained
        self.prefix = config.topic_prefix.rstrip("/")
        self.client_id = client_id or default_client_id()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        self._client.max_queued_messages_set(0)  # unbounded in paho: the bound is ours (_admit), for events only
        self.max_queued = max_queued
        if config.username:
            self._client.username_pw_set(config.username, config.password.get_secret_value() if config.password else None)
        self._client.will_set(f"{self.prefix}/available", "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._connect_fails = 0  # failed attempts since the last connection (or start)
        self._connect_fail_log_s = -float("inf")
        self._open: dict[tuple[str, str], set[str]] = {}
        ha = config.home_assistant
        self._ha = ha if ha.enabled else None
        self.node_id = ha_node_id(self.prefix)
        self._ha_cameras: dict[str, list[str]] = {}  # camera -> labels announced (a label first raised is added)
        self._ha_drones: dict[str, str | None] = {}  # drone -> the camera it carries (fixed)
        self._ha_topics: set[str] = set()  # the discovery topics announced on this connection (the rest are cleared)
        if self._ha is not None and announce is not None:
            self._ha_drones = dict(announce.drones)
            for sid, labels in announce.cameras:
                self._ha_cameras[sid] = list(dict.fromkeys(labels))
                for label in labels:  # counts start at 0: the entities are OFF from the start, not unknown
                    self._open.setdefault((sid, label), set())
        self._client.on_message = self._on_message
        self._status: dict[str, str] = {}
        self._detail: dict[str, tuple[str, tuple, float]] = {}  # sid -> (payload, (state, down_since_ns), monotonic)
        self._telemetry: dict[str, str] = {}  # drone -> its last P/<drone>/telemetry payload
        self._lock = threading.Lock()
        self.connected = threading.Event()  # set and cleared under _lock (see _on_connect)
        self.dropped = 0  # messages not queued (max_queued not yet acknowledged, or a publish error): never delivered
        self.dropped_retained = 0  # of which retained state (re-asserted at the next connect, so not lost for good)
        self._queued: dict[bool, list] = {False: [], True: []}  # retain -> MQTTMessageInfo not yet acknowledged
        self._dropped_logged = 0
        self._drop_log_s = -float("inf")

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> "MqttPublisher":
        """Connect in the background (the service starts even while the broker is down) and start paho's thread."""
        self._client.connect_async(self.config.host, self.config.port, keepalive=30)
        self._client.loop_start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            info = self._client.publish(f"{self.prefix}/available", "offline", qos=1, retain=True)
            if self.connected.is_set():
                info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:
            log.warning("mqtt: could not publish offline state: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt: broker %s:%s refused the connection: %s", self.config.host, self.config.port, reason_code)
            return
        with self._lock:
            fails, self._connect_fails, self._connect_fail_log_s = self._connect_fails, 0, -float("inf")
        log.log(logging.WARNING if fails else logging.INFO, "mqtt: connected to %s:%s as %s%s", self.config.host,
                self.config.port, self.client_id, f" after {fails} failed attempt(s)" if fails else "")
        client.publish(f"{self.prefix}/available", "online", qos=1, retain=True)
        if self._ha is not None:  # the entities before their state; then what is left of earlier runs is cleared
            messages = self.discovery_messages()
            with self._lock:
                self._ha_topics = {topic for topic, _payload in messages}
            for topic, payload in messages:
                client.publish(topic, payload, qos=1, retain=True)
            client.subscribe(f"{self._ha.discovery_prefix}/+/{self.node_id}/+/config", qos=1)
        with self._lock:  # retained state is re-asserted after every (re)connect
            for sid, state in self._status.items():
                client.publish(f"{self.prefix}/{topic_part(sid)}/status", state, qos=1, retain=True)
            for sid, (payload, _key, _at) in self._detail.items():
                client.publish(f"{self.prefix}/{topic_part(sid)}/status/detail", payload, qos=1, retain=True)
            for did, payload in self._telemetry.items():
                client.publish(f"{self.prefix}/{topic_part(did)}/telemetry", payload, qos=1, retain=True)
            for (sid, label), ids in self._open.items():
                client.publish(f"{self.prefix}/{topic_part(sid)}/{topic_part(label)}", str(len(ids)), qos=1, retain=True)
            for (sid, label), (_uri, jpeg) in self._snapshots.items():
                client.publish(f"{self.prefix}/{topic_part(sid)}/{topic_part(label)}/snapshot", jpeg, qos=1, retain=True)
            # set under the lock: a count changed after the loop above is published by its caller, one changed
            # before it was in the loop
            self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        """A retained discovery configuration of this node (``D/+/N/+/config``, sent by the broker on subscribing) that
        was not announced on this connection: an entity of a camera, drone or label no longer configured, cleared so
        Home Assistant removes it. Live copies of this publisher's own messages are not retained: left alone."""
        if self._ha is None or not msg.retain or not msg.payload:
            return
        with self._lock:
            if msg.topic in self._ha_topics:
                return
        log.info("mqtt: Home Assistant discovery %s is no longer announced (its camera, drone or label left the "
                 "configuration): cleared", msg.topic)
        client.publish(msg.topic, b"", qos=1, retain=True)

    # ---- Home Assistant discovery ------------------------------------------------------------------------
    def discovery_messages(self) -> list[tuple[str, str]]:
        """Every discovery configuration to announce now as ``(topic, JSON)``: the service's device first, then the
        drones, then the cameras (a device is announced before the devices that name it as ``via_device``)."""
        with self._lock:
            cameras = {sid: list(labels) for sid, labels in self._ha_cameras.items()}
        out = [self._ha_service()]
        for did in self._ha_drones:
            out += self._ha_drone(did)
        for sid, labels in cameras.items():
            out.append(self._ha_status(sid))
            for label in labels:
                out += self._ha_label(sid, label)
        return out

    def _ha_config(self, component: str, object_id: str, name: str, device: dict[str, Any],
                   available: bool = True, **fields: Any) -> tuple[str, str]:
        from seawatch import __version__

        assert self._ha is not None
        cfg: dict[str, Any] = {"name": name, "unique_id": f"seawatch_{self.node_id}_{object_id}", **fields}
        if available:  # unavailable while Seawatch is down (its last will), rather than the last retained value
            cfg.update(availability_topic=f"{self.prefix}/available", payload_available="online",
                       payload_not_available="offline")
        cfg.update(device=device, origin={"name": "Seawatch", "sw_version": __version__}, qos=1)
        topic = f"{self._ha.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"
        return topic, json.dumps(cfg, separators=(",", ":"))

    def _ha_device(self, kind: str | None = None, ident: str | None = None, via: dict[str, Any] | None = None) -> dict[str, Any]:
        """The device block of the service (no ``kind``), of a ``camera`` or of a ``drone``."""
        from seawatch import __version__

        if kind is None:
            return {"identifiers": [f"seawatch_{self.node_id}"], "manufacturer": "Seawatch", "model": "Seawatch service",
                    "name": "Seawatch" if self.prefix == "seawatch" else f"Seawatch {self.prefix}", "sw_version": __version__}
        assert ident is not None
        return {"identifiers": [f"seawatch_{self.node_id}_{kind}_{ha_id(ident)}"], "manufacturer": "Seawatch",
                "model": kind.capitalize(), "name": ident, "via_device": (via or self._ha_device())["identifiers"][0]}

    def _ha_service(self) -> tuple[str, str]:
        return self._ha_config("binary_sensor", "service", "Service", self._ha_device(), available=False,
                               state_topic=f"{self.prefix}/available", payload_on="online", payload_off="offline",
                               device_class="connectivity", entity_category="diagnostic")

    def _ha_drone(self, did: str) -> list[tuple[str, str]]:
        """A drone: its link (connectivity), and from ``P/<drone>/telemetry`` its place on Home Assistant's map (a
        GPS device tracker), battery, height, flight mode, armed, patrol and task."""
        t = f"{self.prefix}/{topic_part(did)}/status"
        tele = f"{self.prefix}/{topic_part(did)}/telemetry"
        device, obj = self._ha_device("drone", did), f"drone_{ha_id(did)}"
        out = [self._ha_config("binary_sensor", f"{obj}_link", "Link", device,
                               state_topic=t, json_attributes_topic=f"{t}/detail", device_class="connectivity",
                               value_template="{{ 'ON' if value in %r else 'OFF' }}" % (HA_ONLINE_STATES,),
                               entity_category="diagnostic"),
               self._ha_config("device_tracker", f"{obj}_position", "Position", device, json_attributes_topic=tele,
                               source_type="gps"),
               self._ha_config("sensor", f"{obj}_battery", "Battery", device, state_topic=tele, device_class="battery",
                               unit_of_measurement="%", state_class="measurement",
                               value_template="{{ value_json.battery_pct }}"),
               self._ha_config("sensor", f"{obj}_height", "Height above home", device, state_topic=tele,
                               device_class="distance", unit_of_measurement="m", state_class="measurement",
                               value_template="{{ value_json.alt_rel_m }}"),
               self._ha_config("binary_sensor", f"{obj}_armed", "Armed", device, state_topic=tele,
                               value_template="{{ 'ON' if value_json.armed else 'OFF' }}"),
               self._ha_config("sensor", f"{obj}_mode", "Flight mode", device, state_topic=tele,
                               value_template="{{ value_json.mode or 'unknown' }}"),
               self._ha_config("sensor", f"{obj}_patrol", "Patrol", device, state_topic=tele,
                               value_template="{{ value_json.patrol_state or 'none' }}"),
               self._ha_config("sensor", f"{obj}_task", "Task", device, state_topic=tele,
                               value_template="{{ value_json.task_state or 'none' }}")]
        return out

    def _ha_camera_device(self, sid: str) -> dict[str, Any]:
        """A camera's device block: via its drone when it flies on one, else via the service."""
        carrier = next((did for did, cam in self._ha_drones.items() if cam == sid), None)
        return self._ha_device("camera", sid, self._ha_device("drone", carrier) if carrier is not None else None)

    def _ha_status(self, sid: str) -> tuple[str, str]:
        t = f"{self.prefix}/{topic_part(sid)}/status"
        return self._ha_config("binary_sensor", f"{ha_id(sid)}_status", "Connection", self._ha_camera_device(sid),
                               state_topic=t, json_attributes_topic=f"{t}/detail", device_class="connectivity",
                               value_template="{{ 'ON' if value in %r else 'OFF' }}" % (HA_ONLINE_STATES,),
                               entity_category="diagnostic")

    def _ha_label(self, sid: str, label: str) -> list[tuple[str, str]]:
        """A camera's label: a binary sensor on its count (ON while an incident with that label is open) and, when
        snapshots are published, a camera showing the newest incident's best view."""
        device, obj = self._ha_camera_device(sid), f"{ha_id(sid)}_{ha_id(label)}"
        t = f"{self.prefix}/{topic_part(sid)}/{topic_part(label)}"
        name = label.replace("_", " ").capitalize()
        extra = {"device_class": HA_DEVICE_CLASS[label]} if label in HA_DEVICE_CLASS else {}
        out = [self._ha_config("binary_sensor", obj, name, device, state_topic=t,
                               value_template="{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}", **extra)]
        if self.media_dir is not None:
            out.append(self._ha_config("camera", f"{obj}_snapshot", f"{name} snapshot", device, topic=f"{t}/snapshot"))
        return out

    def _on_connect_fail(self, client, userdata) -> None:
        """paho could not reach the broker (down at start, wrong host or port, refused TCP): it retries with
        backoff by itself; say so at once, then at most every ``CONNECT_FAIL_LOG_INTERVAL_S`` (without this an
        unreachable broker was silent in the log)."""
        now = time.monotonic()
        with self._lock:
            self._connect_fails += 1
            if now - self._connect_fail_log_s < CONNECT_FAIL_LOG_INTERVAL_S:
                return
            self._connect_fail_log_s, fails = now, self._connect_fails
        log.warning("mqtt: cannot reach the broker %s:%s (%d failed attempt(s)); retrying in the background, events "
                    "queue meanwhile (health: delivery.mqtt.connected false)", self.config.host, self.config.port, fails)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self.connected.clear()
        if reason_code != 0:
            log.warning("mqtt: disconnected from %s:%s (%s); reconnecting", self.config.host, self.config.port, reason_code)

    # ---- publishing --------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Connection state and refused-message counts (for a health or status report)."""
        return {"connected": self.connected.is_set(), "dropped": self.dropped, "dropped_retained": self.dropped_retained}

    def _admit(self, retain: bool) -> bool:
        """Room for one more message of this kind (under ``_lock``): fewer than ``max_queued`` unacknowledged."""
        queued = self._queued[retain]
        if len(queued) >= self.max_queued:
            queued[:] = [info for info in queued if not _acknowledged(info)]
        return len(queued) < self.max_queued

    def _pub(self, topic: str, payload: str | bytes, retain: bool = False) -> bool:
        """Queue one QoS 1 message; False (counted, logged) when it was not queued."""
        import paho.mqtt.client as mqtt

        with self._lock:
            room = self._admit(retain)
        why = "queue full"
        if room:
            try:
                info = self._client.publish(topic, payload, qos=1, retain=retain)
            except (ValueError, RuntimeError) as exc:  # paho's own checks (payload too large, bad topic)
                why = str(exc)
            else:
                # NO_CONN: queued, sent after the reconnect
                if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    with self._lock:
                        self._queued[retain].append(info)
                    return True
                why = mqtt.error_string(info.rc)
        with self._lock:
            self.dropped += 1
            self.dropped_retained += bool(retain)
            now = time.monotonic()
            if now - self._drop_log_s < DROP_LOG_INTERVAL_S:
                return False
            n, self._dropped_logged, self._drop_log_s = self.dropped - self._dropped_logged, self.dropped, now
        log.warning("mqtt: %d message(s) not published (%s, %d waiting; broker %s:%s %s), e.g. on %s; %d in all", n, why,
                    self.max_queued, self.config.host, self.config.port,
                    "connected" if self.connected.is_set() else "unreachable", topic, self.dropped)
        return False

    def on_live_message(self, message: dict[str, Any]) -> None:
        """A ``LiveHub`` listener: stored event phases, review changes and holds."""
        kind = message.get("kind")
        ev = message.get("event") or {}
        if kind == "event":
            self._pub(f"{self.prefix}/events", json.dumps({"type": PHASE_TYPE.get(ev.get("phase"), "update"), "after": ev},
                                                            separators=(",", ":")))
            sid = ev.get("source_id", "")
            changed = []
            end = ev.get("phase") == "end"
            # a snoozed camera's incident alarms nobody: never counted (the mark is decided at its start and kept on
            # every later phase, service/snooze.py); an end still takes its id out wherever it was counted
            snoozed = bool((ev.get("attributes") or {}).get("snoozed"))
            with self._lock:
                # an end closes the incident under every label it was counted for, not only its last phase's (an
                # identity condition follows its vessel onto a track of another label)
                labels = set(ev.get("labels", []))
                if end:
                    labels |= {label for (s, label), ids in self._open.items() if s == sid and ev.get("id") in ids}
                announce = []  # a label not announced for this camera, raised now: its entities come first
                if self._ha is not None and not end and sid in self._ha_cameras:
                    announce = sorted(labels - set(self._ha_cameras[sid]))
                    self._ha_cameras[sid] += announce
                for label in sorted(labels):
                    ids = self._open.setdefault((sid, label), set())
                    before = len(ids)
                    if end:
                        ids.discard(ev.get("id"))
                    elif not snoozed:
                        ids.add(ev.get("id"))
                    # an end is always published: it may close an incident this process never saw start (one open
                    # at a crash, ended at the next start), whose count the broker still retains
                    if len(ids) != before or ev.get("phase") in ("start", "end"):
                        changed.append((label, len(ids)))
                online = self.connected.is_set()
            if online:  # else _on_connect publishes the counts (retained state must not crowd events out of the queue)
                for label in announce:
                    for topic, payload in self._ha_label(sid, label):
                        with self._lock:
                            self._ha_topics.add(topic)
                        self._pub(topic, payload, retain=True)
                for label, n in changed:
                    self._pub(f"{self.prefix}/{topic_part(sid)}/{topic_part(label)}", str(n), retain=True)
        elif kind == "review":
            last = (ev.get("review_history") or [{}])[-1]
            self._pub(f"{self.prefix}/reviews", json.dumps({**_about(ev), "status": ev.get("review_status"),
                                                             "by": last.get("by"), "note": last.get("note"),
                                                             "reason": last.get("reason", ""), "at_ns": last.get("at_ns")},
                                                            separators=(",", ":")))
        elif kind == "hold":  # a hold put on or lifted: whether the event is kept as evidence now
            self._pub(f"{self.prefix}/holds", json.dumps({**_about(ev), "held": bool(ev.get("held"))}, separators=(",", ":")))

    def on_stored_event(self, event) -> None:
        """A ``StoreSink`` publisher (it sees the stored ``Event`` with its snapshot file's ``uri``): the snapshot of an
        incident that starts, or whose best view changed, to ``P/<source>/<label>/snapshot`` for each of its labels."""
        snap = getattr(event, "snapshot", None)
        if self.media_dir is None or snap is None or not snap.uri or event.phase == "end" or not event.labels:
            return
        keys = [(event.source_id, label) for label in dict.fromkeys(event.labels)]
        with self._lock:
            if all(self._snapshots.get(k, ("",))[0] == snap.uri for k in keys):
                return  # the same best view as already published (an update phase)
        try:
            path = self.media_dir / snap.uri
            size = path.stat().st_size
            if size > SNAPSHOT_MAX_BYTES:
                log.warning("mqtt: snapshot of event %s not published: %d bytes (max %d)", event.id, size,
                            SNAPSHOT_MAX_BYTES)
                return
            jpeg = path.read_bytes()
        except OSError as exc:  # retention or the disk guard removed it meanwhile: nothing to publish
            log.warning("mqtt: snapshot of event %s unreadable: %s", event.id, exc)
            return
        with self._lock:
            for k in keys:
                self._snapshots[k] = (snap.uri, jpeg)
            online = self.connected.is_set()
        if online:  # else _on_connect publishes them, like the counts
            for sid, label in keys:
                self._pub(f"{self.prefix}/{topic_part(sid)}/{topic_part(label)}/snapshot", jpeg, retain=True)

    def source_states(self, statuses: list[dict[str, Any]]) -> None:
        """Publish each source's reader state when it changed, and its detail (down since, attempts, last error)
        when the state or the outage changed, or at most every ``DETAIL_INTERVAL_S`` while its attempts go up
        (both retained)."""
        now = time.monotonic()
        for st in statuses:
            sid, state = st.get("source_id", ""), str(st.get("state", "unknown"))
            detail = {k: st.get(k) for k in DETAIL_FIELDS}
            detail["state"] = state
            payload = json.dumps(detail, separators=(",", ":"))
            key = (state, st.get("down_since_ns"))
            with self._lock:
                state_changed = self._status.get(sid) != state
                self._status[sid] = state
                old = self._detail.get(sid)
                detail_due = old is None or (old[1] != key or (old[0] != payload and now - old[2] >= DETAIL_INTERVAL_S))
                if detail_due:
                    self._detail[sid] = (payload, key, now)
                online = self.connected.is_set()
            tele = drone_telemetry(st) if st.get("kind") == "drone" else None
            if tele is not None:
                with self._lock:
                    tele_changed = self._telemetry.get(sid) != tele
                    self._telemetry[sid] = tele
                if online and tele_changed:
                    self._pub(f"{self.prefix}/{topic_part(sid)}/telemetry", tele, retain=True)
            if online:  # else _on_connect publishes them
                if state_changed:
                    self._pub(f"{self.prefix}/{topic_part(sid)}/status", state, retain=True)
                if detail_due:
                    self._pub(f"{self.prefix}/{topic_part(sid)}/status/detail", payload, retain=True)
