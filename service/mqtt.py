"""MQTT publishing in the topic style Frigate users already automate against.

Topics (``P`` = ``mqtt.topic_prefix``, default ``seawatch``):

- ``P/available``: ``online`` / ``offline`` (retained; ``offline`` is also the broker's last will).
- ``P/events``: ``{"type": "new" | "update" | "end", "after": <event JSON as the API serves it>}``, QoS 1, for
  every stored phase of an incident.
- ``P/<source>/<label>``: number of open incidents on that source involving that label (retained), e.g.
  ``seawatch/quay-1/fire`` -> ``1`` while a fire is open, ``0`` after it ends.
- ``P/<source>/status``: the source reader's state (``online``, ``offline``, ``connecting``...; retained).
- ``P/reviews``: ``{"event_id", "status", "by", "note", "at_ns"}`` for acknowledge / dismiss / confirm.

Messages come from the ``LiveHub`` (so only after the store committed). paho's network thread reconnects by
itself; while the broker is down, QoS 1 messages wait in paho's queue (bounded by ``max_queued``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

from seawatch.service.config import MqttConfig

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[+#/\s]")
PHASE_TYPE = {"start": "new", "update": "update", "end": "end"}


def topic_part(text: str) -> str:
    """A source id or label made safe for one topic level (no wildcards, no separators)."""
    return _UNSAFE.sub("_", text) or "_"


class MqttPublisher:
    def __init__(self, config: MqttConfig, client_id: str = "seawatch", max_queued: int = 10_000) -> None:
        import paho.mqtt.client as mqtt

        self.config = config
        self.prefix = config.topic_prefix.rstrip("/")
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.max_queued_messages_set(max_queued)
        if config.username:
            self._client.username_pw_set(config.username, config.password.get_secret_value() if config.password else None)
        self._client.will_set(f"{self.prefix}/available", "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._open: dict[tuple[str, str], set[str]] = {}
        self._status: dict[str, str] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()

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
        log.info("mqtt: connected to %s:%s", self.config.host, self.config.port)
        client.publish(f"{self.prefix}/available", "online", qos=1, retain=True)
        with self._lock:  # retained state is re-asserted after every (re)connect
            for sid, state in self._status.items():
                client.publish(f"{self.prefix}/{topic_part(sid)}/status", state, qos=1, retain=True)
            for (sid, label), ids in self._open.items():
                client.publish(f"{self.prefix}/{topic_part(sid)}/{topic_part(label)}", str(len(ids)), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code != 0:
            log.warning("mqtt: disconnected from %s:%s (%s); reconnecting", self.config.host, self.config.port, reason_code)

    # ---- publishing --------------------------------------------------------------------------------------
    def _pub(self, topic: str, payload: str, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain)

    def on_live_message(self, message: dict[str, Any]) -> None:
        """A ``LiveHub`` listener: stored event phases and review changes."""
        kind = message.get("kind")
        ev = message.get("event") or {}
        if kind == "event":
            self._pub(f"{self.prefix}/events", json.dumps({"type": PHASE_TYPE.get(ev.get("phase"), "update"), "after": ev},
                                                            separators=(",", ":")))
            sid = ev.get("source_id", "")
            changed = []
            with self._lock:
                for label in ev.get("labels", []):
                    ids = self._open.setdefault((sid, label), set())
                    before = len(ids)
                    (ids.discard if ev.get("phase") == "end" else ids.add)(ev.get("id"))
                    if len(ids) != before or ev.get("phase") == "start":
                        changed.append((label, len(ids)))
            for label, n in changed:
                self._pub(f"{self.prefix}/{topic_part(sid)}/{topic_part(label)}", str(n), retain=True)
        elif kind == "review":
            last = (ev.get("review_history") or [{}])[-1]
            self._pub(f"{self.prefix}/reviews", json.dumps({"event_id": ev.get("id"), "status": ev.get("review_status"),
                                                             "by": last.get("by"), "note": last.get("note"),
                                                             "reason": last.get("reason", ""), "at_ns": last.get("at_ns")},
                                                            separators=(",", ":")))

    def source_states(self, statuses: list[dict[str, Any]]) -> None:
        """Publish each source's reader state when it changed (retained)."""
        for st in statuses:
            sid, state = st.get("source_id", ""), str(st.get("state", "unknown"))
            with self._lock:
                if self._status.get(sid) == state:
                    continue
                self._status[sid] = state
            self._pub(f"{self.prefix}/{topic_part(sid)}/status", state, retain=True)
