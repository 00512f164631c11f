"""``Service``: sources -> pipeline -> store (+ publishers), and the API, with orderly start-up and shutdown.

Start-up: open and migrate the store, build the pipeline (loads the detectors: fails early on missing models), start
the source readers and the analysis workers, then serve HTTP. Shutdown reverses it: stop serving, stop readers,
end every open incident (their ``end`` phases are stored), join the workers, close the store.

Drones (``drones``, with ``fleet`` for the simulator and patrols) are linked by :class:`~seawatch.service.fleet.Fleet`
before the cameras start; their pose timelines geotag the frames of their video sources. AIS feeds run in the
pipeline's identity stage. Shutdown stops the cameras, the pipeline (AIS), then the drones.

File sources are played like cameras: at their frame rate, looping, with capture times from the file's clock
mapped to UTC from the moment the service started; analysis that falls behind skips frames, as with a camera,
rather than holding the file back behind the wall clock.

Frames are analysed by ``analysis_workers`` threads (:func:`seawatch.vision.pipeline.analyse_sources`), each camera
on one of them at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from seawatch.errors import SeawatchError
from seawatch.service.config import ServeConfig
from seawatch.service.export import TelemetryRecorder
from seawatch.service.live import LiveHub
from seawatch.service.sink import Publisher, StoreSink
from seawatch.service.store import EventStore
from seawatch.streams.recording import RECORDING_OFF

log = logging.getLogger(__name__)
STATUS_INTERVAL_S = 2.0  # how often source states are checked for MQTT
WATCH_INTERVAL_S = 1.0  # how often they are checked for camera-down incidents
LIVE_RING_S, LIVE_RING_BYTES = 10.0, 16 * 1024 * 1024  # a camera's packet ring when nothing is recorded (live video)


class Service:
    """The whole ``seawatch serve`` process minus the HTTP server loop (``app`` is handed to uvicorn)."""

    def __init__(self, settings: ServeConfig, *, detectors: dict[str, Any] | None = None,
                 publishers: list[Publisher] | None = None, file_pace: str = "realtime", loop_files: bool = True) -> None:
        self.settings = settings
        self._detectors = detectors
        self._publishers = publishers or []
        self._file_pace = file_pace
        self._loop_files = loop_files
        self.store: EventStore | None = None
        self.sink: StoreSink | None = None
        self.snoozes = None  # service.snooze.SnoozeBook: cameras whose alerts an operator snoozed
        self.pipeline = None
        self.live: LiveHub | None = None
        self.mqtt = None
        self.webhooks: list = []  # service.webhooks.WebhookSender, one per configured endpoint
        self.email = None  # service.email_alerts.EmailNotifier, with an `email` section
        self.fleet = None
        self.flight_log = None  # drone.flight_log.FlightLogWriter, when there are drones
        self.readers: dict[str, Any] = {}
        self._stop = threading.Event()
        self._wakeup = threading.Event()  # set by every reader's queue: "a frame is waiting somewhere"
        self._thread: threading.Thread | None = None
        self._watch_thread: threading.Thread | None = None
        self.app = None
        from seawatch.service.source_watch import SourceWatch

        self.watch = SourceWatch(settings)  # camera-down incidents

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> "Service":
        from seawatch.service.app import create_app
        from seawatch.service.fleet import Fleet
        from seawatch.service.sink import RESTART_END_REASON
        from seawatch.streams.packets import PacketRing
        from seawatch.streams.recording import SegmentRecorder
        from seawatch.streams.source import Source, SourceConfig
        from seawatch.vision.pipeline import Pipeline

        media_dir = self.settings.storage.resolved_media_dir()
        try:
            media_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a data_dir that is a file, a read-only or virtual file system (/proc)
            from seawatch.errors import ConfigError

            what = "is a file, not a folder" if media_dir.exists() else f"cannot be created: {exc.strerror or exc}"
            raise ConfigError(f"storage: media folder {media_dir} (from data_dir / media_dir) {what}") from None
        if self.settings.email is not None:  # before the store: a password missing from the environment stops us here
            from seawatch.service.email_alerts import EmailNotifier

            self.email = EmailNotifier(self.settings.email, media_dir,
                                       drone_of=lambda sid: getattr(self.settings.drone_of(sid), "id", None))
        self.store = EventStore.open(self.settings.storage.resolved_database_url())
        try:
            self.live = LiveHub()
            if self.settings.mqtt.enabled:
                from seawatch.service.mqtt import MqttPublisher, ha_sources

                announce = ha_sources(self.settings) if self.settings.mqtt.home_assistant.enabled else None
                self.mqtt = MqttPublisher(self.settings.mqtt, media_dir=media_dir, announce=announce).start()
                self.live.add_listener(self.mqtt.on_live_message)
            if self.settings.webhooks:
                from seawatch.service.webhooks import start_senders

                self.webhooks = start_senders(self.settings.webhooks)
                for w in self.webhooks:
                    self.live.add_listener(w.on_live_message)
            from seawatch.service.snooze import SnoozeBook, SnoozingSink

            self.snoozes = SnoozeBook(self.settings.source_alerts.snooze_max_s)
            # events of a snoozed camera are marked before they are stored and published (service/snooze.py)
            self.sink = SnoozingSink(self.snoozes, self.store, media_dir, [self.live.publish_event, *self._publishers])
            if self.mqtt is not None:  # snapshots by topic: the stored event knows its snapshot file
                self.sink.publishers.append(self.mqtt.on_stored_event)
            if self.email is not None:  # mails attach the stored snapshot file; snoozed events are not mailed
                self.sink.publishers.append(self.email.start().on_stored_event)
            self.fleet = Fleet(self.settings)
            # drone events keep the telemetry of their clip window beside the media (evidence after restarts)
            self.sink.publishers.append(TelemetryRecorder(media_dir, self.fleet.pose_timelines(self.settings)))
            # incidents a crash or kill -9 left open are ended (stored, and published: MQTT counts go back to 0)
            # before anything new comes in; their ids were this dead run's, so nothing else would ever end them
            self.sink.end_open(RESTART_END_REASON)  # snooze records stay open: restored here, ended by their timer
            self.snoozes.restore(self.store).start()
            self.pipeline = Pipeline(self.settings.pipeline, [self.sink], detectors=self._detectors,
                                     pose_timelines=self.fleet.pose_timelines(self.settings))
            self.fleet.identity = self.pipeline.identity
            self.flight_log = self._flight_log(media_dir)
            self.watch.drone_camera_position = self._drone_camera_position
            self.watch.on_geo_warning = self.pipeline.set_geo_warning  # a moved calibrated camera's events say so
            self.fleet.start()  # drone links (and simulators, patrols) in their own threads: a missing drone is a status
            self.pipeline.start()  # AIS feeds (drone links are the fleet's: their timelines were given)
            self._apply_stored_ignore()
            self._apply_stored_calibrations()  # before the first frame: no event is placed with the configured one
            self.app = create_app(self.settings, store=self.store, source_status=self.source_status, live=self.live,
                                  fleet=self.fleet, apply_ignore=self._apply_ignore, stats=self.delivery_stats,
                                  latest_frame=self.pipeline.latest_frame, report=self._report,
                                  locate=self._locate, apply_calibration=self._apply_calibration_now,
                                  snoozes=self.snoozes)
            self.app.state.reset_view_reference = self._reset_view_reference  # POST /api/sources/{id}/view_reference
            rec = self.settings.storage.recording
            for s in self.settings.sources:
                sc = SourceConfig(source_id=s.id, url=s.url, pace=self._file_pace, loop=self._loop_files)
                recorder = None
                if rec.enabled:
                    ring = PacketRing(max_age_s=rec.ring_s)
                    recorder = SegmentRecorder(media_dir / "recordings", s.id, segment_s=rec.segment_s, max_age_s=rec.max_age_s,
                                               max_total_bytes=int(rec.max_gb_per_source * 1024**3))
                    self.app.state.clips.add_ring(s.id, ring)
                else:  # the live video's alone: its newest GOP, for a viewer's first picture
                    ring = PacketRing(max_age_s=LIVE_RING_S, max_bytes=LIVE_RING_BYTES)
                self.app.state.live_video.add_source(s.id, ring)  # the Live view's video taps the ring
                self.readers[s.id] = Source(sc, ring=ring, recorder=recorder, stop=self._stop,
                                            wakeup=self._wakeup).start()
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._run, name="seawatch-pipeline", daemon=True)
        self._thread.start()
        self._watch_thread = threading.Thread(target=self._watch_sources, name="seawatch-source-watch", daemon=True)
        self._watch_thread.start()
        log.info("service started: %d source(s), %d drone(s), %d AIS feed(s), %d event(s) stored", len(self.readers),
                 len(self.fleet.runners), len(self.settings.ais), self.store.count())
        return self

    def _flight_log(self, media_dir):
        """The drones' flight logs (``media_dir/flightlog``), kept as long as the video; None without drones."""
        from seawatch.drone.flight_log import FlightLogWriter

        timelines = {r.drone.id: r.timeline for r in self.fleet.runners.values()}
        for s in self.settings.sources:  # drones the pipeline links itself (not in the fleet)
            drone, geo = self.settings.drone_of(s.id), self.pipeline.geo.get(s.id)
            if drone is not None and getattr(geo, "timeline", None) is not None:
                timelines.setdefault(drone.id, geo.timeline)
        if not timelines:
            return None
        return FlightLogWriter(media_dir / "flightlog", timelines, max_age_s=self.settings.storage.recording.max_age_s)

    def _locate(self, source_id: str, capture_ns: int):
        """The locator of a picture of ``source_id`` at ``capture_ns``: the pipeline's (calibration, the drone's live
        pose buffer), else, for a drone's camera beyond that buffer, the drone's flight log around that time."""
        from seawatch.drone.flight_log import timeline_from_log
        from seawatch.vision.geo import SourceGeo

        loc = self.pipeline.locator_for(source_id, capture_ns)
        geo, drone = self.pipeline.geo.get(source_id), self.settings.drone_of(source_id)
        if loc is None or not loc.stale or drone is None or getattr(geo, "timeline", None) is None:
            return loc
        pad = 30 * 1_000_000_000
        timeline = timeline_from_log(self.settings.storage.resolved_media_dir() / "flightlog", drone.id,
                                     capture_ns - pad, capture_ns + pad, like=geo.timeline)
        if timeline is None:
            return loc
        logged = SourceGeo.from_drone(source_id, timeline, geo.geolocator).frame_locator(capture_ns)
        return logged if not logged.stale else loc

    def _report(self, event) -> None:
        """An event a person reported (``POST /api/events``): stored and published like the pipeline's events."""
        from seawatch.service.app import REPORT_STORE_WAIT_S

        self.sink.emit(event)
        self.sink.flush(REPORT_STORE_WAIT_S)

    def _drone_camera_position(self, source_id: str):
        """Where the drone carrying camera ``source_id`` last reported itself (its pose timeline; fleet drones and
        inline ones alike), as a ``GeoPosition`` (1-sigma: its reported GPS accuracy, else 10 m), or None."""
        from seawatch.vision.events import GeoPosition

        geo = self.pipeline.geo.get(source_id) if self.pipeline is not None else None
        timeline = getattr(geo, "timeline", None)
        last = timeline.last_position() if timeline is not None else None
        if last is None:
            return None
        sigma_m = max(float(last.h_acc_m), 1.0) if last.h_acc_m is not None else 10.0
        return GeoPosition(float(last.lat_deg), float(last.lon_deg), sigma_m, sigma_m)

    def _apply_ignore(self, source_id: str, areas: list) -> None:
        """A camera's review-desk ignore areas (``store.IgnoreArea`` rows) to the running pipeline."""
        self.pipeline.set_added_ignore(source_id, [(a.polygon_px, a.labels) for a in areas])

    def _apply_stored_ignore(self) -> None:
        """At start: the ignore areas stored for each configured camera. Those of a source no longer configured, or
        one that now pans or flies, stay stored but unused (logged), so nothing an operator did is lost."""
        by_source: dict[str, list] = {}
        for a in self.store.ignore_areas():
            by_source.setdefault(a.source_id, []).append(a)
        for sid, areas in by_source.items():
            try:
                self._apply_ignore(sid, areas)
                log.info("source %s: %d ignore area(s) from the review desk", sid, len(areas))
            except SeawatchError as exc:
                log.warning("%d stored ignore area(s) not applied: %s", len(areas), exc)

    def _apply_calibration(self, source_id: str, calibration) -> None:
        """A fixed camera's calibration applied by an administrator (a ``CalibrationConfig``; None: the configured
        one again) to the running pipeline: its next analysed frame is located with it."""
        self.pipeline.set_calibration(source_id, calibration)
        self.watch.set_calibration(source_id, calibration)  # where its camera-down incidents are placed

    def _apply_calibration_now(self, source_id: str, calibration) -> None:
        """A calibration an administrator applies now (``PUT /api/sources/{id}/calibration``): applied, and, unless it
        is a revert to the configured one (None), the camera's view as it is now becomes its reference view (the
        calibration was fitted to this picture; what the view check measures from now on is movement since then)."""
        self._apply_calibration(source_id, calibration)
        if calibration is not None and source_id in self.watch.view_configs:
            self._reset_view_reference(source_id, origin="calibration")

    def _reset_view_reference(self, source_id: str, origin: str = "reset") -> dict[str, Any]:
        """The camera's newest analysed picture becomes its reference view (none yet: one is learnt from the next
        stable minute); its open camera_moved / covered / blurred incidents end. KeyError: the camera is not checked."""
        frame = self.pipeline.latest_frame(source_id) if self.pipeline is not None else None
        events, status = self.watch.reset_view(source_id, frame, time.time_ns(), origin)
        for ev in events:
            self.sink.emit(ev)
        log.warning("source %s: view reference %s (%s)", source_id, origin,
                    "the picture now" if frame is not None else "no picture yet: learnt from the next stable minute")
        return {"source_id": source_id, **status, "ended": [ev.id for ev in events]}

    def _apply_stored_calibrations(self) -> None:
        """At start: each camera's operator calibration in force (``PUT /api/sources/{id}/calibration``) overrides its
        configured one, with a WARNING saying so (and how to make it permanent or drop it), and saying clearly when the
        configured section was edited since it was applied: the operator one stays in force all the same (it was
        fitted to what the camera sees; see service/calibration.py). One stored for a source no longer configured, or
        now a drone's camera, stays stored but unused (logged)."""
        from seawatch.drone.config import CalibrationConfig
        from seawatch.service.calibration import config_section_sha256, same_calibration, yaml_section

        for sid, row in sorted(self.store.calibrations_in_force().items()):
            spec = next((s for s in self.settings.sources if s.id == sid), None)
            try:
                cal = CalibrationConfig.model_validate(row.calibration)
                self._apply_calibration(sid, cal)
            except (SeawatchError, ValueError) as exc:
                log.warning("source %s: the calibration applied by %s is stored but not used: %s", sid, row.created_by, exc)
                continue
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(row.created_ns / 1e9))
            changed = bool(row.config_sha256) and row.config_sha256 != config_section_sha256(spec.calibration)
            if same_calibration(cal, spec.calibration):
                advice = ("the configuration now holds the same calibration: revert the operator one (DELETE "
                          f"/api/sources/{sid}/calibration, or the calibration page) and nothing changes")
            else:
                advice = (f"to make it permanent, put this under the source in the configuration, then revert the "
                          f"operator one (DELETE /api/sources/{sid}/calibration, or the calibration page):\n"
                          f"{yaml_section(cal)}\nor revert it to go back to the configured one")
            log.warning("source %s: events are located with the calibration applied by %s on %s%s, not the configured "
                        "one%s; %s", sid, row.created_by, when, f" (note {row.note!r})" if row.note else "",
                        "; NOTE: the configured calibration was CHANGED in the configuration since then, and the "
                        "operator one is still in force over it" if changed else "", advice)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        for src in self.readers.values():
            src.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("analysis workers did not stop within %.0f s", timeout_s)
        if self._watch_thread is not None:
            self._watch_thread.join(timeout_s)
            self._watch_thread = None
            if self.sink is not None:
                for ev in self.watch.close(time.time_ns()):  # cameras still down, links still lost: ended with us
                    self.sink.emit(ev)
        if self.pipeline is not None and (self._thread is None or not self._thread.is_alive()):
            try:
                self.pipeline.close(None, None, "service stopped")  # end phases go to the store
            except Exception:  # noqa: BLE001
                log.exception("closing open incidents failed")
                self.pipeline.stop()
        elif self.pipeline is not None:
            self.pipeline.stop()
        if self.fleet is not None:
            self.fleet.stop()
        if self.snoozes is not None:  # its timer; snoozes in force stay open in the store for the next start
            self.snoozes.stop()
        if self.flight_log is not None:  # what came in since the watch's last poll
            try:
                self.flight_log.poll()
            except Exception:  # noqa: BLE001
                log.exception("flight log: last poll failed")
        if self.mqtt is not None:
            self.mqtt.source_states(self._all_states())
            self.mqtt.close()
            self.mqtt = None
        for w in self.webhooks:  # the end phases above were queued: delivered now, for a few seconds at most
            w.stop()
        self.webhooks = []
        if self.email is not None:  # likewise the mails waiting (and held incidents, as summaries)
            self.email.stop()
            self.email = None
        if self.store is not None:
            self.store.close()
        self._thread = None

    def _watch_sources(self) -> None:
        """Camera-down, drone-link-lost and media-disk-full incidents, in a thread of their own (a drone-only site has
        no pipeline loop): started and ended as the readers', links' and disk guard's statuses say, stored like every
        event."""
        next_status_s = 0.0
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                cameras = self.source_status()  # also the analysis stats' samples of what each camera delivers
                if self.mqtt is not None and time.monotonic() >= next_status_s:  # retained P/<id>/status topics
                    next_status_s = time.monotonic() + STATUS_INTERVAL_S
                    self.mqtt.source_states(self._all_states(cameras))
                now = time.time_ns()
                events = self.watch.check({sid: src.status() for sid, src in self.readers.items()}, now)
                if self.fleet is not None:
                    events += self.watch.check_drones(self.fleet.drones(), now)
                    events += self.watch.check_ais(self.fleet.ais_feeds(), now)  # ais_feed_down
                if self.watch.view_configs and self.pipeline is not None:  # fixed cameras moved, covered, blurred
                    events += self.watch.check_views({sid: self.pipeline.latest_frame(sid) for sid in self.watch.view_configs},
                                                     now)
                events += self.watch.check_recording(cameras, now)  # recording_failed
                worker = getattr(getattr(self.app, "state", None), "retention", None)
                if worker is not None:  # the disk guard's last word on the media disk
                    events += self.watch.check_disk(worker.last_disk, now)
                for ev in events:
                    self.sink.emit(ev)
            except Exception:  # noqa: BLE001 - the watch must not die of one bad status
                log.exception("camera-down / drone-link incidents: check failed")
            if self.flight_log is not None:
                try:
                    self.flight_log.poll()
                except Exception:  # noqa: BLE001
                    log.exception("flight log: poll failed")

    def delivery_stats(self) -> dict[str, Any]:
        """The store sink's, the MQTT publisher's and the e-mail notifier's (None for one not in use) and each
        webhook's counters, for the health report."""
        sink, mqtt, email = self.sink, self.mqtt, self.email
        return {"store_sink": sink.stats() if sink is not None else None, "mqtt": mqtt.stats() if mqtt is not None else None,
                "webhooks": [w.stats() for w in self.webhooks], "email": email.stats() if email is not None else None}

    def _all_states(self, cameras: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Cameras (``source_status()`` unless given) and drones (link state) for MQTT's retained P/<id>/status
        topics."""
        return (self.source_status() if cameras is None else cameras) + (self.fleet.drones() if self.fleet is not None else [])

    def source_status(self) -> list[dict[str, Any]]:
        """Each camera's reader status, with ``analysis``: how its analysis keeps up (``AnalysisStats.snapshot``)."""
        stats = self.pipeline.stats if self.pipeline is not None else {}
        out = []
        for sid, src in self.readers.items():
            st = src.status().as_dict()
            if sid in stats:
                st["analysis"] = stats[sid].snapshot(st["frames_queued"])
            st["view_check"] = self.watch.view_status(sid)  # None: its view is not checked
            # zones / ignore areas / water in pixels of another picture than it sends (Pipeline._check_geometry)
            checked = self.pipeline.geometry_checks.get(sid) if self.pipeline is not None else None
            st["geometry_problem"] = checked[1] if checked is not None else None
            # whether its video is kept: recording / failing (why, since when) / off (streams.recording.RecordingStatus)
            rec = getattr(src, "recorder", None)
            st["recording"] = (rec.status() if hasattr(rec, "status") else RECORDING_OFF).as_dict()
            out.append(st)
        return out

    # ---- the pipeline threads ----------------------------------------------------------------------------
    def _run(self) -> None:
        """The analysis workers (``analysis_workers``): each camera's newest frame due for analysis taken just before
        it is analysed, so a camera that is down (empty queue) is never waited on, a slow round analyses the freshest
        picture, not a queued older one, and only the frames analysed are converted to BGR."""
        from seawatch.vision.pipeline import AnalysisRate, analyse_sources

        for src in self.readers.values():
            src.frames.notify = self._wakeup  # readers made elsewhere (tests) wake the workers too

        def ended(sid: str) -> None:
            st = self.readers[sid].status()
            log.warning("source %s ended: %s", sid, st.last_error or st.state.value)

        workers = self.pipeline.workers  # analysis_workers, resolved with the models' threads
        if self.readers:
            log.info("analysing %d source(s) with %d worker(s)", len(self.readers), workers)
        analyse_sources(self.pipeline, self.readers, self._wakeup, self._stop, AnalysisRate(self.settings.sources),
                        workers, on_ended=ended)
