"""Camera-down incidents (``source_offline``), lost drone links (``drone_link_lost``), a full media disk
(``storage_low``) and AIS feeds down (``ais_feed_down``): the alarms about the watch itself.

A camera that has been down for ``source_alerts.offline_after_s`` (its reader offline and retrying, or failed for
good) becomes a ``source_offline`` incident, like any other event: stored and searchable, on the live feed and the
map (at the camera's surveyed position; a drone's camera where its drone last reported itself, with ``drone_id``),
on MQTT and the webhooks. Its start phase says since when the picture is
lost (``start_ns``: when the source went down, not when the alarm was raised), the reader's last error and its
attempts so far; the end phase comes when the source delivers frames again (``end_reason: back online``), or when it
stops (the service stops, a file source ends). A drop shorter than the delay (a reconnect, a camera reboot within
the minute) raises nothing: the source status and its log say it happened.

A broken camera is also what someone cutting a cable or covering a dome wants to look like: an operator sees the
alarm, not only a grey tile.

The media disk itself: when the retention's disk guard has deleted what it may and free space is still under its
threshold (only held evidence, open incidents' video and each camera's newest segment left), recordings and clips
are about to fail: a ``storage_low`` incident (``source_id`` ``storage``, severity ``critical``) says so until the
space is back above the threshold. Events keep being stored meanwhile as long as the database has room.

An AIS feed (``tcp://`` or ``udp://`` in ``ais``) that has decoded nothing for ``identity.ais_down_after_s`` (default
120 s) becomes an ``ais_feed_down`` incident (``source_id`` ``ais``, severity ``source_alerts.ais_severity``, one per
feed): ``feed`` (its URL, credentials redacted), ``state`` (``down``: never connected or disconnected; ``silent``:
connected, nothing decoded) and ``reason`` (never connected / disconnected: the error / silent since T);
``start_ns`` is its last message (or its start when none came). It ends when messages flow again (``end_reason:
messages flow again``, ``end_ns`` the first new message). While every feed is down the identity stage holds its
unidentified-vessel alerts (``vision/vessel_identity.py``): this incident is the one alarm that says why. A replayed
log file raises none: nobody can reconnect a recording; its state (``ended`` by its own clock) is in the status.

A drone whose MAVLink link is lost while it is armed (flying) for ``source_alerts.drone_link_lost_after_s`` becomes a
``drone_link_lost`` incident (``source_id``: the drone's id) placed at its last known position, with its last height,
battery, mode and patrol: where the crew must look for it, or wait for its failsafe to bring it home. It ends when
the link is back (``end_reason: link back``) or closed. A drone on the ground, disarmed, that goes silent (switched
off) raises nothing.

A fixed camera that is moved, covered or out of focus keeps sending pictures: its view is checked every
``view_check.interval_s`` (``source_alerts.view_check``, per camera ``sources[].view_check``) against its reference
view (``vision/view_check.py``, stored under ``media_dir/view_reference``), and a condition held for
``raise_after_s`` becomes a ``camera_moved``, ``camera_covered`` or ``camera_blurred`` incident (severity
``view_check.severity``) at the camera's surveyed position, with ``finding`` (moved by N px / pan, tilt, roll
degrees; covered; blurred), the measurements, and a snapshot of the view now beside the reference. It ends when the
condition was clear for ``clear_after_s`` (``end_reason``), or when the reference is reset (an administrator's
``POST /api/sources/{id}/view_reference``, or a calibration applied). While a calibrated camera is moved, its events
carry ``geo_warning``: their positions come from a pose that no longer holds. Drone cameras and cameras that pan
(``water_views``) are not checked: their view moves by design.

A camera whose recording fails (its segments cannot be started, written or finished: the recordings folder removed
or unwritable, the disk full, a mount gone; ``streams/recording.py``) is still read and analysed, but no video is kept
for its clips and evidence. Failing for ``source_alerts.recording_failed_after_s`` (default 30 s) while its picture
is up, it becomes a ``recording_failed`` incident (severity ``source_alerts.recording_failed_severity``, default
``high``) at the camera's position, with ``reason`` (short, no file path), ``failures`` (failed attempts so far) and
``start_ns`` the first failure. It ends when a complete segment is written again (``end_reason: segments written
again``, ``end_ns`` when that segment began), or when recording stops (``recording off``: the source stopped). A
camera that records nothing by configuration raises none, nor does a camera that is down (``source_offline`` says
that: no picture, nothing to record); the recorder retries at each keyframe, so a failure counts only once it was
seen again after the picture came back.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from seawatch.streams.source import State
from seawatch.vision.events import Event, GeoPosition

log = logging.getLogger(__name__)

SOURCE_OFFLINE = "source_offline"
DRONE_LINK_LOST = "drone_link_lost"
STORAGE_LOW = "storage_low"
STORAGE_SOURCE = "storage"
AIS_FEED_DOWN = "ais_feed_down"
AIS_SOURCE = "ais"  # the AIS side's id in the sources status
CAMERA_MOVED, CAMERA_COVERED, CAMERA_BLURRED = "camera_moved", "camera_covered", "camera_blurred"
RECORDING_FAILED = "recording_failed"
VIEW_TYPES = {"moved": CAMERA_MOVED, "covered": CAMERA_COVERED, "blurred": CAMERA_BLURRED}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
VIEW_CLIP_PRE_S, VIEW_CLIP_POST_S = 15.0, 10.0  # a view incident's clip: the moment it began (who moved, covered it)
_DOWN = (State.OFFLINE, State.FAILED)
_STOPPED = (State.ENDED, State.STOPPED)


def _camera_place(cal) -> tuple[GeoPosition | None, str]:
    """A fixed camera's own position (the surveyed pose of its calibration ``cal``), or None with the reason."""
    surveyed = getattr(cal, "surveyed", None) if cal is not None else None
    if surveyed is None:
        return None, "the camera's position is not surveyed (calibration.surveyed)"
    sigma_m = max(float(cal.sigmas.horizontal_m), 1.0)
    return GeoPosition(float(surveyed.lat_deg), float(surveyed.lon_deg), sigma_m, sigma_m), ""


class SourceWatch:
    """Turns the readers' statuses into ``source_offline`` incidents. Call :meth:`check` now and then (the pipeline
    thread does, once a second) and :meth:`close` at shutdown; both return the event phases to emit."""

    def __init__(self, settings: Any) -> None:
        cfg = settings.source_alerts
        self.after_ns = None if cfg.offline_after_s is None else int(cfg.offline_after_s * 1e9)
        self.severity = cfg.severity
        self.places = {s.id: _camera_place(getattr(s, "calibration", None)) for s in settings.sources}
        self._configured = {s.id: s for s in settings.sources}
        # a drone's camera (drone: ID, an inline drone, or a drone's video_source): placed where its drone last was
        self.drone_cameras: dict[str, str] = {}
        for s in settings.sources:
            drone = settings.drone_of(s.id) if hasattr(settings, "drone_of") else None
            if drone is not None:
                self.drone_cameras[s.id] = drone.id
                self.places[s.id] = (None, f"a drone's camera: drone {drone.id} has reported no position")
        # source id -> its drone's last known position (GeoPosition) or None; set by the service (pose timelines)
        self.drone_camera_position: Callable[[str], GeoPosition | None] | None = None
        self.open: dict[str, Event] = {}
        self.drone_after_ns = (None if cfg.drone_link_lost_after_s is None
                               else int(cfg.drone_link_lost_after_s * 1e9))
        self.drone_severity = cfg.drone_severity
        self.open_drones: dict[str, Event] = {}
        self.storage: Event | None = None
        self.ais_enabled = bool(getattr(cfg, "ais_feed_down", True)) and any(
            "://" in str(u) for u in getattr(settings, "ais", ()))  # socket feeds: the ones that can go down
        self.ais_severity = getattr(cfg, "ais_severity", "high")
        self.open_ais: dict[str, Event] = {}  # feed name -> its open ais_feed_down
        # the view check of fixed cameras: source id -> its ViewCheckConfig (monitors are made at the first picture)
        default_view = getattr(cfg, "view_check", None)
        self.view_configs = {}
        for s in settings.sources:
            vc = getattr(s, "view_check", None) or default_view
            if vc is not None and vc.enabled and s.id not in self.drone_cameras and getattr(s, "water_views", None) is None:
                self.view_configs[s.id] = vc
        storage = getattr(settings, "storage", None)
        self.view_dir: Path | None = storage.resolved_media_dir() / "view_reference" if storage is not None else None
        self.monitors: dict[str, Any] = {}  # source id -> vision.view_check.ViewMonitor
        self.calibrations = {s.id: getattr(s, "calibration", None) for s in settings.sources}
        self.open_views: dict[tuple[str, str], Event] = {}  # (source id, condition) -> its open incident
        self.view_lock = threading.Lock()  # the watch thread checks, an administrator resets
        # source id, geo warning or None: told to the pipeline while a calibrated camera is moved
        self.on_geo_warning: Callable[[str, str | None], None] | None = None
        rec_after_s = getattr(cfg, "recording_failed_after_s", None)
        self.recording_after_ns = None if rec_after_s is None else int(rec_after_s * 1e9)
        self.recording_severity = getattr(cfg, "recording_failed_severity", "high")
        self.open_recordings: dict[str, Event] = {}  # source id -> its open recording_failed

    @property
    def enabled(self) -> bool:
        return self.after_ns is not None or self.drone_after_ns is not None or self.ais_enabled

    def set_calibration(self, source_id: str, calibration) -> None:
        """A fixed camera's calibration applied while running (None: the configured one again): its camera-down
        incidents are placed at that calibration's surveyed position (a fit may have moved the camera)."""
        spec = self._configured.get(source_id)
        if spec is None or source_id in self.drone_cameras:
            return
        cal = calibration if calibration is not None else getattr(spec, "calibration", None)
        self.places[source_id] = _camera_place(cal)
        self.calibrations[source_id] = cal
        mon = self.monitors.get(source_id)
        if mon is not None:
            from seawatch.vision.view_check import intrinsics_of

            mon.intrinsics = intrinsics_of(cal)

    # ---- the view check of fixed cameras ---------------------------------------------------------------
    def _monitor(self, source_id: str):
        mon = self.monitors.get(source_id)
        if mon is None and source_id in self.view_configs:
            from seawatch.vision.view_check import ViewMonitor, intrinsics_of

            path = None if self.view_dir is None else self.view_dir / f"{_SAFE.sub('_', source_id)}.npz"
            mon = ViewMonitor(source_id, self.view_configs[source_id],
                              intrinsics_of(self.calibrations.get(source_id)), path)
            self.monitors[source_id] = mon
        return mon

    def check_views(self, frames: Mapping[str, Any], now_ns: int) -> list[Event]:
        """``frames``: source id -> its newest analysed frame ``(capture_time_ns, BGR image, ...)`` or None. Each
        checked camera's picture is checked when due (by its capture time; a picture already checked is not checked
        again); the ``camera_moved`` / ``camera_covered`` / ``camera_blurred`` phases that start or end now."""
        out: list[Event] = []
        for sid in self.view_configs:
            frame = frames.get(sid)
            if frame is None:
                continue
            capture_ns, image = int(frame[0]), frame[1]
            with self.view_lock:
                mon = self._monitor(sid)
                if capture_ns == mon.last_check_ns or not mon.due(capture_ns):
                    continue
                try:
                    changes = mon.check(image, capture_ns)
                except Exception:  # noqa: BLE001 - one odd picture must not stop the watch
                    log.exception("source %s: view check failed", sid)
                    continue
                out += self._view_events(sid, mon, changes, image, now_ns)
        return out

    def reset_view(self, source_id: str, frame: Any, now_ns: int, origin: str = "reset") -> tuple[list[Event], dict]:
        """A new reference view for ``source_id``: the picture of ``frame`` (``(capture_time_ns, image, ...)``), or,
        without one, learnt again from the next stable minute. Its open view incidents end. KeyError when the camera
        is not checked."""
        if source_id not in self.view_configs:
            raise KeyError(source_id)
        with self.view_lock:
            mon = self._monitor(source_id)
            changes = mon.set_reference(None if frame is None else frame[1], origin, int(now_ns))
            events = self._view_events(source_id, mon, changes, None if frame is None else frame[1], now_ns)
            return events, mon.status()

    def view_status(self, source_id: str) -> dict | None:
        """A checked camera's view check (``ViewMonitor.status``; ``learning`` before its first picture), else None."""
        if source_id not in self.view_configs:
            return None
        with self.view_lock:
            mon = self.monitors.get(source_id)
            if mon is None:  # no picture yet: a monitor's own status before it learnt anything (same fields)
                from seawatch.vision.view_check import ViewMonitor

                return ViewMonitor(source_id, self.view_configs[source_id]).status()
            return mon.status()

    def _view_events(self, sid: str, mon: Any, changes: list, image: Any, now_ns: int) -> list[Event]:
        from seawatch.vision.events import ClipRef, Snapshot
        from seawatch.vision.view_check import MOVED, snapshot_image

        out: list[Event] = []
        calibrated = self.calibrations.get(sid) is not None
        for ch in changes:
            key = (sid, ch.condition)
            attrs = {"condition": ch.condition, "reference_origin": mon.reference.origin if mon.reference else None,
                     "reference_ns": mon.reference.created_ns if mon.reference else None}
            if ch.measure is not None:
                attrs |= {"finding": ch.measure.finding(), "measure": ch.measure.as_dict()}
            if ch.phase == "start":
                if calibrated and ch.condition == MOVED:
                    attrs["geo_warning"] = _geo_warning(ch.measure)
                geo, why = self.places.get(sid, (None, "not a configured camera"))
                snap = None
                if image is not None:
                    pic = snapshot_image(image, mon.reference)
                    snap = Snapshot(sid, int(ch.at_ns), (0.0, 0.0, float(pic.shape[1]), float(pic.shape[0])), 1.0,
                                    image=pic)
                # the change happened after the last check that did not see it: the clip spans that moment
                pre_ns = int((mon.config.interval_s + VIEW_CLIP_PRE_S) * 1e9)
                post_ns = int(VIEW_CLIP_POST_S * 1e9)
                clip = ClipRef(sid, int(ch.since_ns) - pre_ns, int(ch.since_ns) + post_ns, pre_ns, post_ns)
                ev = Event(id=Event.new_id(), type=VIEW_TYPES[ch.condition], severity=mon.config.severity, phase="start",
                           source_id=sid, start_ns=int(ch.since_ns), at_ns=int(now_ns), attributes=attrs, geo=geo,
                           geo_reason=why or None, snapshot=snap, clip=clip)
                self.open_views[key] = ev
                out.append(ev)
                log.warning("source %s: %s for %.0f s: %s incident %s", sid, attrs.get("finding", ch.condition),
                            (ch.at_ns - ch.since_ns) / 1e9, ev.type, ev.id)
                if "geo_warning" in attrs and self.on_geo_warning is not None:
                    self.on_geo_warning(sid, attrs["geo_warning"])
            elif key in self.open_views:
                ev = self.open_views.pop(key)
                # the start's finding stays: the end phase adds what the last check saw
                end_attrs = {"end_measure": attrs["measure"]} if "measure" in attrs else {}
                out.append(_ended(ev, ch.reason or "the view matches its reference again", max(ev.start_ns, int(ch.since_ns)),
                                  now_ns, end_attrs))
                if ch.condition == MOVED and self.on_geo_warning is not None:
                    self.on_geo_warning(sid, None)
        return out

    def check(self, statuses: Mapping[str, Any], now_ns: int) -> list[Event]:
        """``statuses``: source id -> its reader's status (``SourceStatus``). The phases that start or end now."""
        if self.after_ns is None:
            return []
        out: list[Event] = []
        for sid, st in statuses.items():
            ev = self.open.get(sid)
            if st.state in _DOWN:
                since = st.down_since_ns if st.down_since_ns is not None else st.since_ns
                if ev is None and now_ns - since >= self.after_ns:
                    ev = self._start(sid, st, since, now_ns)
                    self.open[sid] = ev
                    out.append(ev)
                    log.warning("source %s: down for %.0f s: source_offline incident %s (%s)", sid,
                                (now_ns - since) / 1e9, ev.id, st.last_error or st.state.value)
                elif ev is not None:  # still down: what the incident will say at its end
                    self.open[sid] = replace(ev, attributes={**ev.attributes, "attempts": int(st.attempts),
                                                             "last_error": st.last_error or ""})
            elif ev is not None and (st.state is State.ONLINE or st.state in _STOPPED):
                back = st.state is State.ONLINE
                end_ns = max(ev.start_ns, int(st.since_ns)) if back else now_ns
                out.append(self._end(sid, "back online" if back else f"source {st.state.value}", end_ns, now_ns))
        return out

    def check_recording(self, cameras: Iterable[Mapping[str, Any]], now_ns: int) -> list[Event]:
        """``cameras``: the cameras' statuses as ``GET /api/sources`` has them (``source_id``, ``state``, ``since_ns``
        and ``recording``: :meth:`RecordingStatus.as_dict`). The ``recording_failed`` phases that start or end now.

        Raised only while the camera is online and its recorder failed again since the picture came back (at a
        keyframe of the present picture): a camera that is down has nothing to record. Recording disabled (``off``)
        raises nothing."""
        if self.recording_after_ns is None:
            return []
        out: list[Event] = []
        for cam in cameras:
            sid = str(cam.get("source_id"))
            rec = cam.get("recording") or {}
            state = rec.get("state")
            ev = self.open_recordings.get(sid)
            attrs = {"reason": rec.get("reason") or "", "failures": int(rec.get("failures") or 0),
                     "segments_written": int(rec.get("segments_written") or 0)}
            if state == "failing":
                since = int(rec.get("since_ns") or now_ns)
                seen_up = (cam.get("state") == State.ONLINE.value
                           and int(rec.get("last_failure_ns") or 0) >= int(cam.get("since_ns") or 0))
                if ev is None and seen_up and now_ns - since >= self.recording_after_ns:
                    geo, why, extra = self._place(sid)
                    ev = Event(id=Event.new_id(), type=RECORDING_FAILED, severity=self.recording_severity,
                               phase="start", source_id=sid, start_ns=since, at_ns=int(now_ns),
                               attributes=attrs | extra | {"failing_for_s": round((now_ns - since) / 1e9, 1)},
                               geo=geo, geo_reason=why or None)
                    self.open_recordings[sid] = ev
                    out.append(ev)
                    log.error("source %s: recording has failed for %.0f s (%s): no video is kept for its clips; "
                              "recording_failed incident %s", sid, (now_ns - since) / 1e9, attrs["reason"], ev.id)
                elif ev is not None:  # still failing: what the incident will say at its end
                    self.open_recordings[sid] = replace(ev, attributes={**ev.attributes, **attrs})
            elif ev is not None and state == "recording":
                end_ns = max(ev.start_ns, int(rec.get("recovered_ns") or now_ns))
                out.append(_ended(self.open_recordings.pop(sid), "segments written again", end_ns, now_ns,
                                  {"segments_written": attrs["segments_written"]}))
            elif ev is not None and state != "failing":  # off (the source stopped), or no longer reported
                out.append(_ended(self.open_recordings.pop(sid), "recording off", now_ns, now_ns))
        return out

    def check_drones(self, drones: Iterable[Mapping[str, Any]], now_ns: int) -> list[Event]:
        """``drones``: the fleet's drone statuses (``DroneRunner.status()``). The phases that start or end now."""
        if self.drone_after_ns is None:
            return []
        out: list[Event] = []
        for d in drones:
            did = str(d.get("drone_id") or d.get("source_id"))
            ev = self.open_drones.get(did)
            state = d.get("state")
            if state == "lost" and d.get("armed"):
                age_s = d.get("last_message_age_s")
                since = now_ns - int(float(age_s) * 1e9) if age_s is not None else now_ns
                if ev is None and now_ns - since >= self.drone_after_ns:
                    ev = self._drone_start(did, d, since, now_ns)
                    self.open_drones[did] = ev
                    out.append(ev)
                    log.warning("drone %s: link lost for %.0f s while armed, last seen at %s, %s: drone_link_lost "
                                "incident %s", did, (now_ns - since) / 1e9, d.get("lat_deg"), d.get("lon_deg"), ev.id)
            elif ev is not None and state in ("connected", "closed", "ended"):
                reason = "link back" if state == "connected" else f"link {state}"
                out.append(self._end_drone(did, reason, now_ns))
        return out

    def check_ais(self, feeds: Iterable[Any], now_ns: int) -> list[Event]:
        """``feeds``: each AIS feed's ``AisFeedState`` (``Fleet.ais_feeds()``; its own delay already applied: a
        state other than ``up`` is an outage). The ``ais_feed_down`` phases that start or end now."""
        if not self.ais_enabled:
            return []
        out: list[Event] = []
        for f in feeds:
            if f.kind == "file":
                continue  # a recording: nobody can reconnect it
            ev = self.open_ais.get(f.name)
            attrs = {"feed": f.name, "state": f.state, "reason": f.reason, "last_error": f.last_error or "",
                     "messages": int(f.messages), "last_message_ns": f.last_message_ns}
            if f.down:
                if ev is None:
                    since = int(f.since_ns) if f.since_ns is not None else int(now_ns)
                    ev = Event(id=Event.new_id(), type=AIS_FEED_DOWN, severity=self.ais_severity, phase="start",
                               source_id=AIS_SOURCE, start_ns=since, at_ns=int(now_ns),
                               attributes=attrs | {"down_for_s": round((now_ns - since) / 1e9, 1)},
                               geo_reason="an AIS receiver feed")
                    self.open_ais[f.name] = ev
                    out.append(ev)
                    log.warning("AIS feed %s: %s: ais_feed_down incident %s (while every AIS feed is down, vessels "
                                "without a registry match are held, not raised as unidentified)", f.name, f.reason, ev.id)
                else:  # still down: what the incident will say at its end
                    self.open_ais[f.name] = replace(ev, attributes={**ev.attributes, **attrs})
            elif ev is not None:
                end_ns = max(ev.start_ns, int(f.last_message_ns or now_ns))
                out.append(_ended(self.open_ais.pop(f.name), "messages flow again", end_ns, now_ns,
                                  {"messages": int(f.messages), "last_message_ns": f.last_message_ns}))
        return out

    def check_disk(self, report: Any, now_ns: int) -> list[Event]:
        """``report``: the disk guard's last ``DiskReport`` (``low``: still under the threshold after the guard ran),
        or None before its first run. The ``storage_low`` phase that starts or ends now."""
        if report is None:
            return []
        attrs = {"path": report.path, "free_bytes": int(report.free_bytes), "free_pct": float(report.free_pct),
                 "threshold_bytes": int(report.threshold_bytes), "total_bytes": int(report.total_bytes)}
        if report.low and self.storage is None:
            self.storage = Event(id=Event.new_id(), type=STORAGE_LOW, severity="critical", phase="start",
                                 source_id=STORAGE_SOURCE, start_ns=int(report.at_ns or now_ns), at_ns=int(now_ns),
                                 attributes=attrs, geo_reason="the service's media disk")
            log.error("media disk %s: %.1f GB free (%.1f %%) after the disk guard, under its threshold of %.1f GB: "
                      "recordings and clips will fail; storage_low incident %s", report.path, report.free_bytes / 1e9,
                      report.free_pct, report.threshold_bytes / 1e9, self.storage.id)
            return [self.storage]
        if not report.low and self.storage is not None:
            return [self._end_storage("space back above the threshold", now_ns, attrs)]
        return []

    def close(self, now_ns: int, reason: str = "service stopped") -> list[Event]:
        """End every open incident (shutdown)."""
        return ([self._end(sid, reason, now_ns, now_ns) for sid in list(self.open)]
                + [self._end_drone(did, reason, now_ns) for did in list(self.open_drones)]
                + [_ended(self.open_ais.pop(name), reason, now_ns, now_ns) for name in list(self.open_ais)]
                + [_ended(self.open_views.pop(key), reason, now_ns, now_ns) for key in list(self.open_views)]
                + [_ended(self.open_recordings.pop(sid), reason, now_ns, now_ns) for sid in list(self.open_recordings)]
                + ([self._end_storage(reason, now_ns, {})] if self.storage is not None else []))

    def _end_storage(self, reason: str, now_ns: int, attrs: Mapping[str, Any]) -> Event:
        ev, self.storage = self.storage, None
        assert ev is not None
        return _ended(ev, reason, now_ns, now_ns, attrs)

    def _drone_start(self, did: str, d: Mapping[str, Any], since_ns: int, now_ns: int) -> Event:
        lat, lon = d.get("lat_deg"), d.get("lon_deg")
        geo = None if lat is None or lon is None else GeoPosition(float(lat), float(lon), 10.0, 10.0)
        attrs = {k: d.get(k) for k in ("alt_rel_m", "battery_pct", "mode", "patrol", "patrol_state", "heading_deg",
                                       "last_error")}
        attrs["last_seen_s_ago"] = round((now_ns - since_ns) / 1e9, 1)
        return Event(id=Event.new_id(), type=DRONE_LINK_LOST, severity=self.drone_severity, phase="start",
                     source_id=did, start_ns=int(since_ns), at_ns=int(now_ns), attributes=attrs, geo=geo,
                     geo_reason=None if geo is not None else "the drone never reported a position")

    def _end_drone(self, did: str, reason: str, now_ns: int) -> Event:
        return _ended(self.open_drones.pop(did), reason, now_ns, now_ns)

    def _place(self, sid: str) -> tuple[GeoPosition | None, str, dict[str, Any]]:
        """Where a camera's incident is placed: its surveyed position, or its drone's last known one (with
        ``drone_id`` for the attributes); else None and why."""
        geo, why = self.places.get(sid, (None, "not a configured camera"))
        extra: dict[str, Any] = {}
        if sid in self.drone_cameras:
            extra["drone_id"] = self.drone_cameras[sid]
            where = self.drone_camera_position(sid) if self.drone_camera_position is not None else None
            if where is not None:
                geo, why = where, ""
        return geo, why, extra

    def _start(self, sid: str, st: Any, since_ns: int, now_ns: int) -> Event:
        geo, why, extra = self._place(sid)
        attrs = {"state": st.state.value, "last_error": st.last_error or "", "attempts": int(st.attempts),
                 "down_for_s": round((now_ns - since_ns) / 1e9, 1), **extra}
        return Event(id=Event.new_id(), type=SOURCE_OFFLINE, severity=self.severity, phase="start", source_id=sid,
                     start_ns=int(since_ns), at_ns=int(now_ns), attributes=attrs, geo=geo, geo_reason=why or None)

    def _end(self, sid: str, reason: str, end_ns: int, now_ns: int) -> Event:
        return _ended(self.open.pop(sid), reason, end_ns, now_ns)


def _geo_warning(measure: Any) -> str:
    """What a moved calibrated camera's events say about their positions."""
    what = measure.finding() if measure is not None else "moved"
    return (f"the camera {what} since its reference view: event positions come from a calibrated pose that no longer "
            "holds and are unreliable (re-calibrate, or re-aim the camera)")


def _ended(ev: Event, reason: str, end_ns: int, now_ns: int, attrs: Mapping[str, Any] | None = None) -> Event:
    """The end phase of an open incident: ended at ``end_ns`` (stamped ``now_ns``), with why and how long."""
    log.info("%s: %s incident %s ended after %.0f s (%s)", ev.source_id, ev.type, ev.id, (end_ns - ev.start_ns) / 1e9,
             reason)
    return replace(ev, phase="end", seq=ev.seq + 1, end_ns=int(end_ns), at_ns=max(int(now_ns), ev.at_ns),
                   attributes={**ev.attributes, **(attrs or {}), "end_reason": reason,
                               "duration_s": round((end_ns - ev.start_ns) / 1e9, 1)})
