"""``GET /api/metrics``: the service's numbers in the Prometheus text exposition format (version 0.0.4).

A port's IT team scrapes this with Prometheus and draws it in Grafana instead of scraping the JSON of ``/api/health``
and ``/api/sources``. Every number is one those endpoints already serve, read from the same place at scrape time
(the readers' and analysis stats, the store sink's, MQTT's and webhooks' counters, the retention worker's last
sweep, the fleet's drones and AIS), so the two can never disagree. Two things had no count before:

* incidents stored since start by type and severity (``seawatch_events_stored_total``), and
* open incidents by type and severity (``seawatch_open_incidents``).

Both come from :class:`IncidentCounts`, a listener on the live hub (it hears every phase the store committed, as
MQTT and the webhooks do). The open ones are read from the store once, when the app starts (one scan of the events
table: ``end_ns`` has no index, and the schema is not this module's to change), and followed from the live hub
after that, so a scrape never touches the database: it costs well under a few milliseconds whatever the store holds.

The exposition is written here (a page of code) rather than with ``prometheus_client``, which would be a runtime
dependency for ~100 lines of text formatting; the tests parse the output with ``prometheus_client``'s parser.
Label values (camera ids, AIS log file names, webhook names) are escaped as the format asks: ``\\``, ``"`` and the
line feed.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

CAMERA_STATES = ("connecting", "online", "offline", "ended", "failed", "stopped", "not_running")  # streams.source.State
DRONE_STATES = ("starting", "connecting", "connected", "lost", "ended", "closed")  # drone.link.LinkStatus + before it
AIS_STATES = ("running", "stale", "down", "ended", "not_running")  # service.fleet.Fleet._ais_state
AIS_FEED_STATES = ("up", "silent", "down", "ended")  # vision.vessel_identity.FEED_STATES

Labels = Mapping[str, str]
Sample = tuple[Labels, Any]


# ---- the text format ----------------------------------------------------------------------------------------
def escape_label_value(value: str) -> str:
    """A label value as the text format writes it between its double quotes: backslash, double quote and line feed
    escaped (``\\\\``, ``\\"``, ``\\n``); everything else, UTF-8 included, as it is."""
    v = str(value)
    if "\\" not in v and '"' not in v and "\n" not in v:
        return v  # (nearly every value: ids are letters, digits, _ . - :)
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Any) -> str:
    """A sample value: integers as integers, floats in Python's shortest round-trip form, ``NaN``, ``+Inf``, ``-Inf``;
    booleans as 1 / 0."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


class Exposition:
    """Families of samples in the text format: ``# HELP``, ``# TYPE``, then the family's samples, each family once.
    A sample whose value is None (not known yet: a lag before the first frame) is left out."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._names: set[str] = set()

    def add(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        """One family ``name`` (``counter`` names end in ``_total``) of ``kind`` counter / gauge / untyped."""
        if name in self._names:
            raise ValueError(f"metric family {name} written twice")
        self._names.add(name)
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            if labels:
                inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
                self._lines.append(f"{name}{{{inner}}} {format_value(value)}")
            else:
                self._lines.append(f"{name} {format_value(value)}")

    def gauge(self, name: str, help_text: str, samples: Iterable[Sample]) -> None:
        self.add(name, "gauge", help_text, samples)

    def counter(self, name: str, help_text: str, samples: Iterable[Sample]) -> None:
        self.add(name, "counter", help_text, samples)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


# ---- incidents by type and severity -------------------------------------------------------------------------
class IncidentCounts:
    """Incidents stored since start and open now, by ``(type, severity)``, from the live hub's ``event`` messages
    (:meth:`on_live_message`, a ``LiveHub`` listener: every phase the store committed, in order).

    An incident counts as stored at its first phase (``seq`` 0: a start, or a person's report stored already ended),
    with the severity it had then (a counter never goes down, so a later escalation is not moved over). It is open
    from a phase without ``end_ns`` until its end phase, under its newest type and severity. :meth:`seed` adds the
    incidents the store held open before the listener was there (read once at start); an incident that ended while
    the store was read is not added back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stored: dict[tuple[str, str], int] = {}
        self._open: dict[str, tuple[str, str]] = {}
        self._ended_before_seed: set[str] | None = set()  # None once seeded

    def on_live_message(self, message: Mapping[str, Any]) -> None:
        if message.get("kind") != "event":
            return  # reviews and holds do not change an incident's phase
        ev = message.get("event") or {}
        eid, key = ev.get("id"), (str(ev.get("type")), str(ev.get("severity")))
        if eid is None:
            return
        with self._lock:
            if ev.get("seq") == 0:
                self._stored[key] = self._stored.get(key, 0) + 1
            if ev.get("end_ns") is None and ev.get("phase") != "end":
                self._open[eid] = key
            else:
                self._open.pop(eid, None)
                if self._ended_before_seed is not None:
                    self._ended_before_seed.add(eid)

    @property
    def seeded(self) -> bool:
        return self._ended_before_seed is None

    def seed(self, store) -> int:
        """Add the incidents ``store`` holds open (one scan of its events table); how many were added."""
        import sqlalchemy as sa

        from seawatch.service.store import events_table as t

        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.id, t.c.type, t.c.severity).where(t.c.end_ns.is_(None))).all()
        added = 0
        with self._lock:
            gone = self._ended_before_seed or set()
            for eid, typ, sev in rows:
                if eid not in gone and eid not in self._open:
                    self._open[eid] = (str(typ), str(sev))
                    added += 1
            self._ended_before_seed = None
        return added

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """``(stored since start, open now)``, each ``{(type, severity): count}``."""
        with self._lock:
            stored = dict(self._stored)
            opened: dict[tuple[str, str], int] = {}
            for key in self._open.values():
                opened[key] = opened.get(key, 0) + 1
        return stored, opened


# ---- the process --------------------------------------------------------------------------------------------
def process_start_time_s() -> float | None:
    """When this process started (UTC seconds since the epoch), from Linux's /proc; None elsewhere."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
        start_ticks = int(fields[19])  # field 22 of the whole line: start time in clock ticks after boot
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return btime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


# ---- the scrape ---------------------------------------------------------------------------------------------
def _ms_to_s(v: Any) -> float | None:
    return None if v is None else float(v) / 1000.0


def _ns_to_s(v: Any) -> float | None:
    return None if v is None else int(v) / 1e9


def _states(label: str, key: str, current: str | None, known: tuple[str, ...]) -> list[Sample]:
    """The enum pattern: one sample per state, 1 for the current one (a state not in ``known`` gets its own)."""
    names = known if current is None or current in known else (*known, current)
    return [({label: key, "state": s}, int(s == current)) for s in names]


def render(state: Any, incidents: IncidentCounts, version: str, started_s: float | None) -> str:
    """The exposition of the app ``state`` (``app.state`` of ``create_app``); see service/README.md for the list."""
    out = Exposition()
    out.gauge("seawatch_build_info", "the running Seawatch's version (always 1)", [({"version": version}, 1)])
    if started_s is not None:
        out.gauge("process_start_time_seconds", "when the service process started (UTC seconds since the epoch)",
                  [({}, round(started_s, 2))])
    _cameras(out, state)
    _events(out, incidents)
    _delivery(out, state)
    _retention(out, state)
    _fleet(out, state)
    live = state.live
    out.gauge("seawatch_live_feed_clients", "WebSocket clients of /api/live now", [({}, live.subscribers)])
    out.gauge("seawatch_live_video_transcoding_cameras", "cameras whose live video is re-encoded to H.264 now (H.265, "
              "MJPEG...; at most service.live_video_transcode_max)", [({}, state.live_video.transcoding)])
    return out.text()


def _cameras(out: Exposition, state: Any) -> None:
    status = {d.get("source_id"): d for d in state.source_status()}  # what GET /api/sources joins with the config
    live_video = state.live_video
    rows = []
    for spec in state.settings.sources:
        d = status.get(spec.id, {})
        a = d.get("analysis") or {}
        muxer = live_video.muxer(spec.id)
        rows.append((spec.id, d, a, muxer.viewers if muxer is not None else 0))

    def per(fn) -> list[Sample]:
        return [({"source": sid}, fn(d, a, v)) for sid, d, a, v in rows]

    out.gauge("seawatch_camera_up", "1 while the camera's reader gets pictures (state online)",
              per(lambda d, a, v: int(d.get("state") == "online")))
    out.gauge("seawatch_camera_state", "the camera reader's state (1 for the current one; a camera down stays offline "
              "through its retries)",
              [s for sid, d, a, v in rows for s in _states("source", sid, d.get("state", "not_running"), CAMERA_STATES)])
    out.gauge("seawatch_camera_state_since_timestamp_seconds", "when the camera's state last changed (UTC seconds)",
              per(lambda d, a, v: _ns_to_s(d.get("since_ns"))))
    out.gauge("seawatch_camera_down_since_timestamp_seconds", "while the camera is down: its first failed attempt "
              "(UTC seconds); absent while up", per(lambda d, a, v: _ns_to_s(d.get("down_since_ns"))))
    out.gauge("seawatch_camera_failed_attempts", "connection attempts failed in a row while down (0 while up)",
              per(lambda d, a, v: d.get("attempts")))
    out.counter("seawatch_camera_reconnects_total", "times the camera's reader connected again after losing it",
                per(lambda d, a, v: d.get("reconnects")))
    out.counter("seawatch_camera_frames_decoded_total", "pictures the camera's reader decoded",
                per(lambda d, a, v: d.get("frames_decoded")))
    out.counter("seawatch_camera_frames_dropped_total", "pictures dropped because analysis had not taken the older ones",
                per(lambda d, a, v: d.get("drops")))
    out.gauge("seawatch_camera_asked_frames_per_second", "analysis rate configured (analysis_fps)",
              per(lambda d, a, v: a.get("asked_fps")))
    out.gauge("seawatch_camera_analysed_frames_per_second", "pictures analysed per second over the last 10 s",
              per(lambda d, a, v: a.get("analysed_fps")))
    out.gauge("seawatch_camera_delivered_frames_per_second", "pictures the camera gave for analysis per second "
              "(after motion gating; absent for its first 2 s)", per(lambda d, a, v: a.get("delivered_fps")))
    out.gauge("seawatch_camera_analysis_behind", "1 while analysis takes under 80 % of what it could",
              per(lambda d, a, v: None if "behind" not in a else int(bool(a["behind"]))))
    out.gauge("seawatch_camera_lag_seconds", "capture to the end of analysis (running mean; absent for a replay)",
              per(lambda d, a, v: _ms_to_s(a.get("lag_ms"))))
    out.gauge("seawatch_camera_process_seconds", "time one picture takes to analyse (running mean)",
              per(lambda d, a, v: _ms_to_s(a.get("process_ms"))))
    out.gauge("seawatch_camera_detect_seconds", "time the detectors take per picture (running mean)",
              per(lambda d, a, v: _ms_to_s(a.get("detect_ms"))))
    out.counter("seawatch_camera_frames_analysed_total", "pictures analysed since start",
                per(lambda d, a, v: a.get("frames")))
    out.gauge("seawatch_camera_live_video_viewers", "browsers watching the camera's live video now",
              per(lambda d, a, v: v))
    out.gauge("seawatch_camera_recording_failing", "1 while the camera's recording fails (no video kept for clips: "
              "health degraded, recording_failed after a while), 0 while it records; absent with recording off",
              per(lambda d, a, v: _recording_failing(d.get("recording"))))


def _recording_failing(rec: Any) -> int | None:
    """1 / 0 for a camera's ``recording`` status (``failing`` / ``recording``), None (no sample) when off or unknown."""
    state = (rec or {}).get("state")
    return None if state not in ("failing", "recording") else int(state == "failing")


def _events(out: Exposition, incidents: IncidentCounts) -> None:
    stored, opened = incidents.snapshot()
    out.counter("seawatch_events_stored_total", "incidents stored since the service started, by type and severity "
                "(at their first phase)",
                [({"type": t, "severity": s}, n) for (t, s), n in sorted(stored.items())])
    out.gauge("seawatch_open_incidents", "incidents open now (not ended), by type and severity",
              [({"type": t, "severity": s}, n) for (t, s), n in sorted(opened.items())])


def _delivery(out: Exposition, state: Any) -> None:
    try:
        stats = state.stats() or {}
    except Exception:  # noqa: BLE001 - as in health: a counter that fails must not take the scrape with it
        log.exception("metrics: delivery counters failed")
        stats = {}
    sink = stats.get("store_sink")
    one = (lambda k: [({}, sink[k])]) if sink else (lambda k: [])
    out.counter("seawatch_store_sink_stored_total", "event phases written to the store", one("stored"))
    out.counter("seawatch_store_sink_errors_total", "failed store writes (a phase retried three times counts three)",
                one("errors"))
    out.gauge("seawatch_store_sink_pending", "event phases waiting for a retry (the store could not be written)",
              one("pending"))
    out.counter("seawatch_store_sink_dropped_total", "event phases lost for good", one("dropped"))
    mqtt = stats.get("mqtt")
    out.gauge("seawatch_mqtt_connected", "1 while connected to the MQTT broker (absent: MQTT off)",
              [({}, int(bool(mqtt["connected"])))] if mqtt else [])
    out.counter("seawatch_mqtt_dropped_total", "MQTT messages not queued (queue full, client refused)",
                [({}, mqtt["dropped"])] if mqtt else [])
    out.counter("seawatch_mqtt_dropped_retained_total", "retained MQTT messages not queued",
                [({}, mqtt["dropped_retained"])] if mqtt else [])
    hooks = stats.get("webhooks") or []

    def per(key: str, fn=lambda x: x) -> list[Sample]:
        return [({"webhook": str(w.get("name"))}, fn(w.get(key))) for w in hooks]

    out.counter("seawatch_webhook_delivered_total", "messages the endpoint accepted", per("delivered"))
    out.gauge("seawatch_webhook_pending", "messages waiting for the endpoint", per("pending"))
    out.counter("seawatch_webhook_dropped_total", "messages dropped: the queue was full", per("dropped"))
    out.counter("seawatch_webhook_rejected_total", "messages the endpoint refused for good (not 2xx, not retried)",
                per("rejected"))
    out.counter("seawatch_webhook_failed_attempts_total", "attempts retried (connection error, timeout, 5xx, 429)",
                per("failed_attempts"))
    out.gauge("seawatch_webhook_failing", "1 while the endpoint fails with messages waiting (health says degraded)",
              [({"webhook": str(w.get("name"))}, int(bool(w.get("pending") and w.get("last_error")))) for w in hooks])
    out.gauge("seawatch_webhook_last_delivered_timestamp_seconds", "the last message the endpoint accepted (UTC seconds)",
              per("last_delivered_ns", _ns_to_s))
    mail = stats.get("email")  # None: no e-mail configured (no samples)
    one_mail = (lambda k, fn=lambda x: x: [({}, fn(mail[k]))] if mail and mail.get(k) is not None else [])
    out.counter("seawatch_email_sent_total", "incident mails the SMTP server accepted", one_mail("sent"))
    out.counter("seawatch_email_failed_attempts_total", "sending attempts retried (server down, 4xx, TLS, login)",
                one_mail("failed"))
    out.counter("seawatch_email_rejected_total", "mails the SMTP server refused for good (5xx)", one_mail("rejected"))
    out.counter("seawatch_email_dropped_total", "mails dropped: the queue was full", one_mail("dropped"))
    out.gauge("seawatch_email_pending", "mails waiting to be sent", one_mail("pending"))
    out.gauge("seawatch_email_held", "incidents held by a recipient's rate limit (sent as one summary)", one_mail("held"))
    out.gauge("seawatch_email_last_sent_timestamp_seconds", "the last mail the server accepted (UTC seconds)",
              one_mail("last_sent_ns", _ns_to_s))
    out.counter("seawatch_email_recipient_sent_total", "incident mails sent to each recipient",
                [({"recipient": str(r.get("name"))}, r.get("sent")) for r in (mail or {}).get("recipients") or []])
    trail = getattr(state, "audit", None)  # the security audit log
    out.counter("seawatch_audit_entries_written_total", "security audit log entries written since start",
                [({}, trail.written)] if trail is not None else [])
    out.counter("seawatch_audit_write_failures_total", "security audit log entries that could not be written (logged "
                "at ERROR with the whole entry; the action itself went on)", [({}, trail.failures)] if trail is not None else [])


def _retention(out: Exposition, state: Any) -> None:
    worker = getattr(state, "retention", None)
    st: dict[str, Any] = {}
    if worker is not None:
        try:
            st = worker.status()
        except Exception:  # noqa: BLE001 - as in health
            log.exception("metrics: retention status failed")
    out.gauge("seawatch_retention_enabled", "1 when the retention sweep and disk guard run in this service",
              [({}, int(worker is not None))])
    disk = st.get("disk") or {}
    if "error" in disk:
        disk = {}
    one = (lambda v: [({}, v)] if v is not None else [])
    out.gauge("seawatch_media_disk_free_bytes", "free space on the media disk, measured at the scrape",
              one(disk.get("free_bytes")))
    out.gauge("seawatch_media_disk_total_bytes", "size of the media disk", one(disk.get("total_bytes")))
    out.gauge("seawatch_media_disk_threshold_bytes", "free space the disk guard keeps (min_free_disk_pct / _gb)",
              one(disk.get("threshold_bytes")))
    out.gauge("seawatch_media_disk_low", "1 while the disk guard's last run left the disk below its threshold "
              "(storage_low; health says degraded)", one(None if worker is None else int(worker.disk_low)))
    last = st.get("last_sweep") or {}
    out.gauge("seawatch_retention_last_sweep_timestamp_seconds", "when the last retention sweep started (UTC seconds)",
              one(_ns_to_s(last.get("at_ns"))))
    out.gauge("seawatch_retention_last_sweep_duration_seconds", "how long the last retention sweep took",
              one(last.get("duration_s")))
    out.gauge("seawatch_retention_last_sweep_events_deleted", "events the last retention sweep deleted",
              one(last.get("events")))
    out.gauge("seawatch_retention_last_sweep_errors", "errors of the last retention sweep",
              one(None if not last else len(last.get("errors") or ())))
    totals = st.get("deleted_since_start") or {}
    for key, name, what in (("sweeps", "seawatch_retention_sweeps_total", "retention sweeps run"),
                            ("events", "seawatch_retention_events_deleted_total", "events deleted by retention"),
                            ("snapshots", "seawatch_retention_snapshots_deleted_total", "snapshot files deleted by retention"),
                            ("clips", "seawatch_retention_clips_deleted_total", "clip files deleted by retention"),
                            ("telemetry", "seawatch_retention_telemetry_deleted_total", "telemetry files deleted by retention"),
                            ("orphans", "seawatch_retention_orphans_deleted_total", "orphaned files deleted by retention"),
                            ("bytes_freed", "seawatch_retention_freed_bytes_total", "bytes freed by retention sweeps"),
                            ("guard_recordings", "seawatch_disk_guard_recordings_deleted_total",
                             "recording segments deleted by the disk guard"),
                            ("guard_clips", "seawatch_disk_guard_clips_deleted_total", "clips deleted by the disk guard"),
                            ("guard_bytes", "seawatch_disk_guard_freed_bytes_total", "bytes freed by the disk guard")):
        out.counter(name, what + " since start", one(totals.get(key)))


def _fleet(out: Exposition, state: Any) -> None:
    fleet = state.fleet
    drones = fleet.drones() if fleet is not None else []
    ais = (fleet.ais() if fleet is not None else []) or [{}]
    a = ais[0]

    def per(fn) -> list[Sample]:
        return [({"drone": str(d.get("drone_id"))}, fn(d)) for d in drones]

    out.gauge("seawatch_drone_up", "1 while the drone's MAVLink link is connected", per(lambda d: int(d.get("state") == "connected")))
    out.gauge("seawatch_drone_link_state", "the drone link's state (1 for the current one)",
              [s for d in drones for s in _states("drone", str(d.get("drone_id")), d.get("state"), DRONE_STATES)])
    out.gauge("seawatch_drone_armed", "1 while the drone is armed (absent before it reported)",
              per(lambda d: None if d.get("armed") is None else int(bool(d["armed"]))))
    out.gauge("seawatch_drone_battery_ratio", "the drone's battery left (0-1, as it reports it)",
              per(lambda d: None if d.get("battery_pct") is None else float(d["battery_pct"]) / 100.0))
    out.gauge("seawatch_drone_battery_volts", "the drone's battery voltage", per(lambda d: d.get("battery_v")))
    out.gauge("seawatch_drone_last_message_age_seconds", "since the drone's last MAVLink message",
              per(lambda d: d.get("last_message_age_s")))
    one = (lambda v: [({}, v)] if a and v is not None else [])
    out.gauge("seawatch_ais_state", "the AIS side's state (1 for the current one; absent without AIS feeds)",
              [({"state": s}, int(s == a.get("state"))) for s in
               (AIS_STATES if a.get("state") in AIS_STATES else (*AIS_STATES, a.get("state")))] if a else [])
    out.counter("seawatch_ais_messages_total", "AIS messages decoded since start", one(a.get("messages")))
    out.gauge("seawatch_ais_vessels", "vessels in the live AIS table", one(a.get("vessels")))
    out.gauge("seawatch_ais_vessels_with_position", "vessels in the live AIS table with a position",
              one(a.get("vessels_with_position")))
    out.gauge("seawatch_ais_last_message_age_seconds", "since the AIS message count last grew",
              one(a.get("last_message_age_s")))
    out.gauge("seawatch_ais_identity_held", "1 while unidentified-vessel alerts are held (every AIS feed down)",
              one(None if not a else int(a.get("identity_held") is not None)))
    feeds = a.get("feed_states") or []
    out.gauge("seawatch_ais_feed_state", "each AIS feed's state (1 for the current one)",
              [s for f in feeds for s in _states("feed", str(f.get("feed")), f.get("state"), AIS_FEED_STATES)])
    out.counter("seawatch_ais_feed_messages_total", "AIS messages decoded from the feed",
                [({"feed": str(f.get("feed"))}, f.get("messages")) for f in feeds])
