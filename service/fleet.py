"""Drones and AIS inside ``seawatch serve``: one link per configured drone (with the built-in simulator and a
patrol when the ``fleet`` section asks for them) and the status the API, the live feed and the map show.

Patrols: a patrol counts as ``complete`` only once the vehicle reached the mission's last item; the only mode changes
the service accepts while it flies are its own (GUIDED, arming, AUTO) and the mission's own ending (its RTL / LAND
item). Any other mode change (an operator's RTL / LAND / LOITER / BRAKE, a failsafe's), a disarm before the end, a
failsafe status (HEARTBEAT system_status CRITICAL / EMERGENCY) or :meth:`DroneRunner.abort_patrol` puts the patrol in
``aborted``, which never starts again by itself: only :meth:`DroneRunner.restart_patrol` (``Fleet.restart_patrol``)
does. ``repeat`` flies a complete patrol again once the vehicle is disarmed, and every start (first, repeat,
restart) waits (``held``, with the reason) while a failsafe is active or the reported battery is below the drone's
``patrol_min_battery_pct`` or unknown. A vehicle that is already armed when the service would first upload or start
its patrol is someone else's flight: the service holds (no mission upload, no mode change) until it is disarmed, or
until the operator's restart takes it over.

Tasks ("send a drone to look", :meth:`DroneRunner.investigate`): one mission flown instead of the patrol: take off if
on the ground, fly to a point, hold over it (gimbal pitched down when the vehicle reports one), RTL. The patrol is
``interrupted`` and never starts again by itself (only a restart does; a restart during a task ends the task). A task
is refused (:class:`TaskRefused`) for a target out of range, outside the operating area or at a height outside the
drone's limits, and for a vehicle without a link, with a failsafe, a low or unknown battery, or flown by someone else.
Its state (``flying`` / ``holding`` / ``returning`` / ``complete`` / ``aborted``) follows the vehicle the way a
patrol's does: a mode change the service did not make, a disarm before the hold ended, a failsafe, or the operator's
abort makes it ``aborted``.

A drone that is not there yet, or whose link drops, is a status (``connecting`` / ``lost``) and a retry, never an
exception: :class:`DroneRunner` keeps trying to open the link until it is stopped, and the link itself reconnects
after a loss. Each drone's pose timeline is created here and handed to the pipeline, so frames of the drone's
``video_source`` are geotagged from the same telemetry the map shows.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from seawatch.errors import SeawatchError
from seawatch.streams.urls import redact_url

log = logging.getLogger(__name__)

NS = 1_000_000_000
HOME_POSITION = 242  # MAVLink message id
MAV_STATE_CRITICAL, MAV_STATE_EMERGENCY = 5, 6  # HEARTBEAT.system_status while a failsafe is active
MAV_CMD_NAV_RETURN_TO_LAUNCH, MAV_CMD_NAV_LAND = 20, 21
BATTERY_MAX_AGE_S = 10.0  # an older SYS_STATUS battery level counts as unknown
TASK_HOLD_RADIUS_M = 5.0  # a task is ``holding`` once the vehicle is this close to the target (horizontally) ...
TASK_HOLD_ALT_TOL_M = 3.0  # ... and this close to the task's height
TASK_ACTIVE = ("starting", "flying", "holding", "returning")


class TaskRefused(SeawatchError):
    """A task the drone must not fly now. ``kind``: ``target`` (the request: out of range, outside the operating area,
    height outside the limits; HTTP 422) or ``vehicle`` (its state: no link, failsafe, battery, someone else flying
    it, a start the vehicle refused; HTTP 409)."""

    def __init__(self, message: str, kind: Literal["target", "vehicle"]) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Task:
    """A task a drone flies instead of its patrol (mutable state of one runner, changed under its lock)."""

    kind: str
    lat_deg: float
    lon_deg: float
    alt_m: float
    hold_s: float
    event_id: str | None
    requested_by: str
    started_ns: int
    state: str = "starting"
    reason: str | None = None
    items: list = field(default_factory=list)  # the uploaded MissionItems
    wp_seq: int | None = None  # the target's NAV_WAYPOINT
    reached_seq: int | None = None
    holding_since_ns: int | None = None
    hold_ended_ns: int | None = None
    ended_ns: int | None = None

    def as_dict(self, now_ns: int) -> dict[str, Any]:
        held = None
        if self.holding_since_ns is not None:
            held = round(((self.hold_ended_ns or now_ns) - self.holding_since_ns) / NS, 1)
        return {"kind": self.kind, "lat_deg": self.lat_deg, "lon_deg": self.lon_deg, "alt_m": self.alt_m,
                "hold_s": self.hold_s, "event_id": self.event_id, "state": self.state, "reason": self.reason,
                "requested_by": self.requested_by, "started_ns": self.started_ns, "ended_ns": self.ended_ns,
                "held_s": held}


class DroneRunner:
    """Link (+ optional simulator and patrol) of one drone, in a thread of its own.

    Args:
        drone: the ``drones`` entry (``seawatch.drone.config.DroneConfig``).
        ops: its ``fleet`` entry (``FleetDroneConfig``) or None (link only).
        timeline: the pose timeline the link feeds (shared with the pipeline's geotagging).
    """

    def __init__(self, drone, ops=None, timeline=None) -> None:
        self.drone = drone
        self.ops = ops
        self.timeline = timeline if timeline is not None else drone.build_timeline()
        self.link = None
        self.sim = None
        self.camera = None  # the simulated camera's streamer (fleet sim.camera)
        self.camera_error: str | None = None
        self.vessel_table = None  # callable -> the pipeline's AIS vessel table (set by Fleet)
        self.mission = None
        self.route: list[tuple[float, float]] = []  # (lat_deg, lon_deg) of the patrol's waypoints
        self.patrol_state = "none" if ops is None or ops.patrol is None else "waiting for link"
        self.patrols_started = 0
        self.last_error: str | None = None
        self.link_attempts = 0
        self.battery: dict[str, float] = {}
        self.patrol_reason: str | None = None  # why the patrol is aborted or held
        self._battery_mono: float | None = None
        self._reached_seq: int | None = None  # MISSION_ITEM_REACHED of the patrol now flying
        self._we_armed = False  # the service armed the vehicle (cleared once it is seen disarmed)
        self._starting = False  # our own mode changes (GUIDED, arm, AUTO) are under way
        self._restart = False  # an explicit restart asked for (restart_patrol)
        self.task: Task | None = None  # the last task (investigate), kept after it ended for the status
        self._foreign: str | None = None  # the armed vehicle was taken over by another pilot / GCS (why)
        self._lock = threading.Lock()  # patrol state; never held across I/O
        self._start_lock = threading.Lock()  # one start or service abort at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if ops is not None and ops.patrol is not None:
            self.route = [(w.lat_deg, w.lon_deg) for w in drone.routes[ops.patrol].build()]

    @property
    def id(self) -> str:
        return self.drone.id

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> "DroneRunner":
        if self.ops is not None and self.ops.sim is not False:
            self._start_sim()
        self._thread = threading.Thread(target=self._run, name=f"drone-{self.id}", daemon=True)
        self._thread.start()
        return self

    def _start_sim(self) -> None:
        from seawatch.drone.sim import SimVehicle

        sim_cfg = self.ops.sim if not isinstance(self.ops.sim, bool) else None
        lat = getattr(sim_cfg, "home_lat_deg", None)
        lon = getattr(sim_cfg, "home_lon_deg", None)
        if lat is None or lon is None:
            lat, lon = self.route[0]
        scheme, rest = self.drone.connection.split(":", 1)
        out = ("udpout:" if scheme == "udp" else "tcpin:") + rest  # the link listens (udp) / connects (tcp)
        self.sim = SimVehicle(out, home=(lat, lon, getattr(sim_cfg, "home_alt_m", 0.0)),
                              speed=getattr(sim_cfg, "speed", 1.0)).start()
        log.info("drone %s: simulator started (home %.5f, %.5f; sending to %s)", self.id, lat, lon, out)
        cam_cfg = getattr(sim_cfg, "camera", None)
        if cam_cfg is not None:
            try:
                self._start_camera(cam_cfg)
            except Exception as exc:  # noqa: BLE001 - no video is a status, never a service that does not start
                self.camera_error = f"simulated camera not started: {exc}"
                log.error("drone %s: %s", self.id, self.camera_error)

    def _start_camera(self, cfg) -> None:
        from pathlib import Path

        from seawatch.drone.camera_stream import BoatSpec, CameraStreamer, SimPoses, boat_targets
        from seawatch.errors import ConfigError
        from seawatch.paths import shared_media_dir

        k = self.drone.camera.build()
        w = cfg.width_px or k.width_px
        h = cfg.height_px or k.height_px
        if (w, h) != (k.width_px, k.height_px):
            raise ConfigError(f"fleet sim.camera is {w}x{h} but drone {self.id}'s camera is {k.width_px}x{k.height_px}: "
                              "the pipeline geotags the video with the drone's camera, so the sizes must match")
        boats = [BoatSpec(b.lat_deg, b.lon_deg, b.length_m, b.heading_deg, sprite=i, name=f"boat{i}")
                 for i, b in enumerate(cfg.boats)]
        media = Path(cfg.media_dir) if cfg.media_dir else shared_media_dir()
        targets, bank = boat_targets(boats, media) if (boats or cfg.ais_vessels) else ([], None)
        self.sim.camera = k
        self.camera = CameraStreamer(SimPoses(self.sim), k, f"udp://127.0.0.1:{cfg.port}", fps=cfg.fps,
                                     targets=targets, bank=bank, origin_latlon=self.sim.home[:2],
                                     vessels=self._ais_vessels if cfg.ais_vessels else None).start()

    def _ais_vessels(self):
        """Positioned vessels of the live AIS table (set by the fleet once the pipeline exists), for the camera."""
        table = self.vessel_table() if self.vessel_table is not None else None
        return table.snapshot(with_position=True) if table is not None else ()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        if self.link is not None:
            try:
                self.link.close()
            except Exception as exc:  # noqa: BLE001 - shutting down: log and go on
                log.warning("drone %s: closing the link: %s", self.id, exc)
        if self.camera is not None:
            try:
                self.camera.stop()
            except Exception as exc:  # noqa: BLE001 - shutting down: log and go on
                log.warning("drone %s: stopping the simulated camera: %s", self.id, exc)
            self.camera = None
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    # ---- the drone's thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        timeout_s = self.ops.link_timeout_s if self.ops is not None else 5.0
        backoff_s = 1.0
        while not self._stop.is_set():
            link = self.drone.build_link(self.timeline)
            link.add_listener(lambda msg, _link=link: self._on_message(msg, _link))
            self.link_attempts += 1
            try:
                self.link = link.open(timeout_s)
                self.last_error = None
                log.info("drone %s: link up on %s", self.id, self.drone.connection)
                break
            except SeawatchError as exc:
                self.last_error = str(exc)
                log.warning("drone %s: %s; retrying in %.0f s", self.id, exc, backoff_s)
            except Exception as exc:  # noqa: BLE001 - a driver bug must not end the service
                self.last_error = f"link failed: {exc}"
                log.exception("drone %s: link failed", self.id)
            if self._stop.wait(backoff_s):
                return
            backoff_s = min(backoff_s * 2, 10.0)
        while not self._stop.is_set():
            try:
                self._task_tick()
            except Exception:  # noqa: BLE001 - watching must go on
                log.exception("drone %s: watching the task failed", self.id)
            if self.ops is not None and self.ops.patrol is not None:
                try:
                    self._patrol_step()
                except SeawatchError as exc:
                    self._patrol_failed(str(exc))
                    log.warning("drone %s: patrol: %s; retrying in 5 s", self.id, exc)
                    self._stop.wait(5.0)
                except Exception as exc:  # noqa: BLE001
                    self._patrol_failed(f"patrol failed: {exc}")
                    log.exception("drone %s: patrol failed", self.id)
                    self._stop.wait(5.0)
            self._stop.wait(0.5)

    def _patrol_step(self) -> None:
        from seawatch.drone.link import LinkStatus
        from seawatch.drone.mission import MissionClient

        link = self.link
        if link is None or link.status != LinkStatus.CONNECTED:
            return
        state = link.state
        with self._lock:
            if self._task_holds_patrol():
                return
            if self._airborne_hold(state):
                return
        if self.mission is None:
            with self._start_lock:  # never beside a task's upload (two mission transactions would interleave)
                with self._lock:
                    if self._task_holds_patrol():
                        return
                home = state.home
                if home is None:
                    link.request(HOME_POSITION, "HOME_POSITION")
                    home = link.state.home
                if home is None:
                    home = (self.route[0][0], self.route[0][1], 0.0)
                route = self.drone.routes[self.ops.patrol]
                mc = MissionClient(link)
                mc.upload(route.build_items(home))
                self.mission = mc
                with self._lock:
                    if self.patrol_state != "aborted":
                        self.patrol_state = "uploaded"
        with self._lock:
            self._watch(link.state)  # also when no HEARTBEAT came since the last step
            if not self._start_due(link.state):
                return
        with self._start_lock:
            with self._lock:
                state = link.state
                if not self._start_due(state):  # aborted while waiting for the lock
                    return
                why = self._start_problem(state)
                if why is not None:
                    if (self.patrol_state, self.patrol_reason) != ("held", why):
                        log.warning("drone %s: patrol %r not started: %s", self.id, self.ops.patrol, why)
                    self.patrol_state, self.patrol_reason = "held", why
                    return
                self._starting = True
                self._we_armed = True  # a start that fails after arming is not someone else's flight
            try:
                self.mission.start()
            finally:
                with self._lock:
                    self._starting = False
            with self._lock:
                self.patrols_started += 1
                self._restart = False
                self._reached_seq = None
                self.patrol_state, self.patrol_reason = "flying", None
                self._watch(link.state)  # a mode change made while we were starting
            log.info("drone %s: patrol %r started (%d)", self.id, self.ops.patrol, self.patrols_started)

    def _task_holds_patrol(self) -> bool:
        """The patrol waits: a task is under way, or it was interrupted by one and no restart was asked for."""
        if self.task is not None and self.task.state in TASK_ACTIVE:
            return True
        return self.patrol_state == "interrupted" and not self._restart

    def _patrol_failed(self, why: str) -> None:
        with self._lock:
            self.last_error = why
            if self.patrol_state != "aborted":  # a start that failed because the operator aborted stays aborted
                self.patrol_state = "error"

    def _start_due(self, state) -> bool:
        """Whether the patrol should be (re)started now (call with ``_lock`` held)."""
        if self._restart:
            return True
        if self.patrol_state == "aborted":
            return False  # only an explicit restart_patrol() flies again
        if self.patrols_started == 0:
            return self.patrol_state in ("uploaded", "held", "error")
        return bool(self.ops.repeat) and self.patrol_state in ("complete", "held") and state.armed is False

    def _airborne_hold(self, state) -> bool:
        """Hold (``held``, with the reason) instead of uploading or starting a patrol on a vehicle that is already
        armed before the service flew it: someone else is flying it (a pilot, another ground station's mission), and
        a new mission or a switch to AUTO would take it from them mid-flight. Only the operator's explicit restart
        takes such a vehicle over. Call with ``_lock`` held; True when held."""
        if state.armed is not True:
            self._we_armed = False
            return False
        if self._restart or self._we_armed or self.patrol_state in ("flying", "complete", "aborted"):
            return False
        if self.patrols_started and self.patrol_state != "held":
            return False
        why = ("vehicle already armed under another pilot's control; the service starts a patrol only on a "
               "disarmed vehicle (land and disarm it, or restart the patrol to take it over)")
        if (self.patrol_state, self.patrol_reason) != ("held", why):
            log.warning("drone %s: patrol %r not started: %s", self.id, self.ops.patrol, why)
        self.patrol_state, self.patrol_reason = "held", why
        return True

    def _start_problem(self, state, what: str = "a patrol") -> str | None:
        """Why the vehicle must not start ``what`` now (failsafe, battery low or unknown), or None."""
        if state.system_status in (MAV_STATE_CRITICAL, MAV_STATE_EMERGENCY):
            name = "CRITICAL" if state.system_status == MAV_STATE_CRITICAL else "EMERGENCY"
            return f"failsafe active (system status {name})"
        need = float(getattr(self.drone, "patrol_min_battery_pct", 0.0) or 0.0)
        if need <= 0:
            return None
        pct = self.battery.get("remaining_pct")
        fresh = self._battery_mono is not None and time.monotonic() - self._battery_mono <= BATTERY_MAX_AGE_S
        if pct is None or not fresh:
            return f"battery level unknown (no recent SYS_STATUS battery_remaining; {need:.0f} % needed)"
        if pct < need:
            return f"battery {pct:.0f} % is below the {need:.0f} % needed to start {what}"
        return None

    def _ending(self) -> tuple[int | None, set[str]]:
        """The mission's last item's seq and the modes its own ending may switch to (RTL / LAND item)."""
        items = self.mission.items if self.mission is not None else []
        if not items:
            return None, set()
        last = items[-1]
        if last.command == MAV_CMD_NAV_RETURN_TO_LAUNCH:
            return last.seq, {"RTL", "LAND"}  # RTL ends with its own landing
        if last.command == MAV_CMD_NAV_LAND:
            return last.seq, {"LAND"}
        return last.seq, set()

    def _abort(self, why: str) -> None:
        if self.patrol_state != "aborted":
            log.warning("drone %s: patrol %r aborted: %s; it will not start again until restarted", self.id,
                        self.ops.patrol if self.ops is not None else None, why)
        self.patrol_state, self.patrol_reason = "aborted", why
        self._restart = False

    def _watch(self, s) -> None:
        """Follow the flying patrol from the vehicle state: complete, or aborted by someone else (``_lock`` held)."""
        if self._starting or self.patrol_state not in ("flying", "complete"):
            return
        last_seq, ending_modes = self._ending()
        failsafe = s.system_status in (MAV_STATE_CRITICAL, MAV_STATE_EMERGENCY)
        if self.patrol_state == "flying":
            done = last_seq is not None and self._reached_seq is not None and self._reached_seq >= last_seq
            # a real ArduCopter flies the final RTL item in AUTO and may disarm before MISSION_ITEM_REACHED
            landed_by_mission = (s.armed is False and s.mode == "AUTO" and bool(ending_modes)
                                 and s.mission_seq == last_seq)
            if failsafe and s.armed:
                self._abort(f"failsafe (system status {s.system_status}) in mode {s.mode}")
            elif done or landed_by_mission:
                self.patrol_state, self.patrol_reason = "complete", None
                self._watch(s)  # e.g. already in a mode the mission's end does not explain
            elif s.armed is False:
                self._abort(f"disarmed in mode {s.mode} before the patrol's last item")
            elif s.mode != "AUTO":
                self._foreign = f"mode changed to {s.mode} (not by the service) during the patrol"
                self._abort(f"mode changed to {s.mode} (not by the service) before the patrol's last item")
        elif s.armed:  # complete, still in the air: only the mission's own ending
            if failsafe:
                self._abort(f"failsafe (system status {s.system_status}) in mode {s.mode} after the patrol")
            elif s.mode != "AUTO" and s.mode not in ending_modes:
                self._foreign = f"mode changed to {s.mode} (not by the service) after the patrol"
                self._abort(f"mode changed to {s.mode} (not by the service) after the patrol's last item")

    # ---- operator actions (API / CLI) -----------------------------------------------------------------------
    def abort_patrol(self, mode: str = "RTL") -> bool:
        """Stop the patrol for good (until :meth:`restart_patrol`): latch ``aborted``, then switch the vehicle to
        ``mode`` (RTL, SMART_RTL, LOITER, BRAKE, LAND) unless it reports itself disarmed (on the ground, nothing to
        fly home: the abort only keeps the patrol from being flown again, e.g. by ``repeat``). True when the mode was
        sent. Raises TelemetryError when the vehicle refuses or no link."""
        from seawatch.errors import TelemetryError

        with self._lock:
            if self.ops is not None and self.ops.patrol is not None:
                self._abort(f"aborted by the operator ({mode})")
            self._end_task("aborted", f"aborted by the operator ({mode})")
        with self._start_lock:  # a start under way finishes first, then the vehicle gets the abort mode
            link = self.link
            if link is None:
                raise TelemetryError(f"drone {self.id}: no link to send {mode}")
            if link.state.armed is False:  # checked after a start under way: that one may have armed it
                log.info("drone %s: abort on the ground (disarmed): patrol stopped, no %s sent", self.id, mode)
                return False
            link.set_mode(mode)
            return True

    def restart_patrol(self) -> None:
        """Fly the patrol again after an abort (explicit operator decision); the start checks still apply."""
        with self._lock:
            if self.ops is None or self.ops.patrol is None:
                from seawatch.errors import ConfigError

                raise ConfigError(f"drone {self.id}: no patrol configured")
            self._restart = True
            self._foreign = None  # the operator's restart takes the vehicle over
            self._end_task("aborted", "ended: the operator restarted the patrol")
            if self.patrol_state in ("aborted", "interrupted"):
                self.patrol_state, self.patrol_reason = "restart requested", None
        log.info("drone %s: patrol restart requested", self.id)

    # ---- tasks ("send a drone to look") --------------------------------------------------------------------------
    def investigate(self, lat_deg: float, lon_deg: float, *, alt_m: float | None = None, hold_s: float | None = None,
                    event_id: str | None = None, requested_by: str = "operator") -> Task:
        """Fly to a point, hold over it ``hold_s`` seconds at ``alt_m`` above home (the drone's ``task_alt_m`` /
        ``task_hold_s`` by default) with the gimbal pitched down, then RTL, instead of the patrol (``interrupted``
        until a restart). A task under way is replaced. Raises :class:`TaskRefused`: ``target`` for a target out of
        range, outside the operating area or at a height outside the limits; ``vehicle`` for no link, an unknown
        home, a failsafe, a low or unknown battery, a vehicle someone else flies, or a start the vehicle refused
        (the task is then ``aborted`` with the reason and the patrol stays ``interrupted``)."""
        from seawatch.drone import mission as M
        from seawatch.drone.link import LinkStatus

        d = self.drone
        lat, lon = float(lat_deg), float(lon_deg)
        alt = float(d.task_alt_m if alt_m is None else alt_m)
        hold = float(d.task_hold_s if hold_s is None else hold_s)
        if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
            raise TaskRefused(f"drone {self.id}: target ({lat}, {lon}) is not a valid latitude / longitude", "target")
        if not (math.isfinite(alt) and d.task_min_alt_m <= alt <= d.task_max_alt_m):
            raise TaskRefused(f"drone {self.id}: height {alt:g} m is outside the drone's task limits "
                              f"({d.task_min_alt_m:g} to {d.task_max_alt_m:g} m above home)", "target")
        if not (math.isfinite(hold) and 0.0 <= hold <= 3600.0):
            raise TaskRefused(f"drone {self.id}: hold {hold:g} s must be within 0 to 3600 s", "target")
        link = self.link
        if link is None or link.status != LinkStatus.CONNECTED:
            why = "never linked" if link is None else f"link {link.status.value}"
            raise TaskRefused(f"drone {self.id}: no link to the vehicle ({why})", "vehicle")
        home = link.state.home
        if home is None:
            try:
                link.request(HOME_POSITION, "HOME_POSITION")
            except SeawatchError as exc:
                log.info("drone %s: HOME_POSITION not received: %s", self.id, exc)
            home = link.state.home
        if home is None:
            raise TaskRefused(f"drone {self.id}: the vehicle's home position is not known (no HOME_POSITION), so the "
                              "target's range cannot be checked", "vehicle")
        why = self._target_problem(lat, lon, home, link.state)
        if why is not None:
            raise TaskRefused(f"drone {self.id}: {why}", "target")
        with self._start_lock:  # one start (patrol, task) or service abort at a time
            with self._lock:
                s = link.state
                why = self._start_problem(s, "a task") or self._flown_by_someone_else(s)
                if why is not None:
                    raise TaskRefused(f"drone {self.id}: {why}", "vehicle")
                self._end_task("aborted", f"replaced by a new task ({requested_by})")
                task = Task("investigate", lat, lon, alt, hold, event_id, requested_by, time.time_ns())
                self.task = task
                if self.patrol_state != "none":
                    self.patrol_state = "interrupted"
                    self.patrol_reason = (f"a task (investigate, {requested_by}) is flown instead; restart the patrol "
                                          "to fly it again")
                self._restart = False
                self.mission = None  # the vehicle's mission becomes the task's: a restart uploads the patrol again
                self._starting = True
                self._we_armed = True  # a start that fails after arming is not someone else's flight
                airborne = s.armed is True and (s.alt_rel_m or 0.0) > 1.0
                stop_auto = s.armed is True and s.mode == "AUTO"
                gimbal = d.task_gimbal_pitch_deg if s.gimbal_rpy_deg is not None else None
            try:
                items = M.investigate_items(lat, lon, alt, hold, home, airborne=airborne, speed_m_s=d.task_speed_m_s,
                                            gimbal_pitch_deg=gimbal)
                if stop_auto:  # stop the patrol's mission where the vehicle is before it is replaced
                    link.set_mode("GUIDED")
                mc = M.MissionClient(link)
                mc.upload(items)
                mc.start()  # arms in GUIDED when on the ground, then MISSION_START (AUTO)
            except SeawatchError as exc:
                with self._lock:
                    self._starting = False
                    self._end_task("aborted", f"not started: {exc}")
                raise TaskRefused(f"drone {self.id}: the task was not started: {exc}", "vehicle") from None
            with self._lock:
                self._starting = False
                task.items = items
                task.wp_seq = next(it.seq for it in items if it.seq > 0 and it.command == M.MAV_CMD_NAV_WAYPOINT)
                if task.state == "starting":  # not aborted while it was starting
                    task.state = "flying"
                    self._watch_task(link.state)
        log.info("drone %s: task investigate (%.6f, %.6f) at %g m, hold %g s started for %s (%d items)", self.id,
                 lat, lon, alt, hold, requested_by, len(items))
        return task

    def _target_problem(self, lat: float, lon: float, home: tuple[float, float, float], s) -> str | None:
        """Why a task must not fly to (lat, lon): farther than ``max_task_range_m`` from home, outside the operating
        area, or a straight leg to it (from the drone, from home) that leaves the area (a concave one)."""
        from seawatch.drone.geometry import geod

        d = self.drone
        _, _, dist_m = geod().inv(home[1], home[0], lon, lat)
        if not math.isfinite(dist_m):  # an impossible home: NaN would pass the range check below
            return f"the target's range from the drone's home {home[:2]} cannot be measured"
        if dist_m > d.max_task_range_m:
            return (f"target ({lat:.6f}, {lon:.6f}) is {dist_m:.0f} m from the drone's home, farther than its "
                    f"max_task_range_m ({d.max_task_range_m:.0f} m)")
        area = d.operating_area()
        if area is None:
            return None
        from shapely.geometry import LineString, Point

        if not area.covers(Point(lon, lat)):
            return f"target ({lat:.6f}, {lon:.6f}) is outside the drone's operating area (operating_area_lonlat)"
        starts = [("home", home[1], home[0])]
        if s.lat_deg is not None and s.lon_deg is not None:
            starts.append(("the drone's position", s.lon_deg, s.lat_deg))
        for name, lo, la in starts:  # a leg from outside the area (a launch pad on shore) is not judged
            if area.covers(Point(lo, la)) and not area.covers(LineString([(lo, la), (lon, lat)])):
                return (f"the straight leg between {name} and the target ({lat:.6f}, {lon:.6f}) leaves the drone's "
                        "operating area (operating_area_lonlat)")
        return None

    def _flown_by_someone_else(self, s) -> str | None:
        """Why an armed vehicle is not the service's to send (``_lock`` held), or None."""
        if s.armed is not True:
            return None
        if self._foreign is not None:
            return (f"the vehicle is flown by another pilot or ground station ({self._foreign}); a task starts only "
                    "on a vehicle the service flies or a disarmed one")
        if not self._we_armed:
            return ("vehicle armed under another pilot's control (the service did not arm it); a task starts only on "
                    "a vehicle the service flies or a disarmed one")
        return None

    def _end_task(self, state: str, reason: str | None) -> None:
        """End the task under way (``_lock`` held); nothing when none is."""
        t = self.task
        if t is None or t.state not in TASK_ACTIVE:
            return
        now = time.time_ns()
        if t.holding_since_ns is not None and t.hold_ended_ns is None:
            t.hold_ended_ns = now
        t.state, t.reason, t.ended_ns = state, reason, now
        if state == "complete":
            log.info("drone %s: task %s at (%.6f, %.6f) complete", self.id, t.kind, t.lat_deg, t.lon_deg)
        else:
            log.warning("drone %s: task %s at (%.6f, %.6f) %s: %s", self.id, t.kind, t.lat_deg, t.lon_deg, state, reason)

    def _watch_task(self, s) -> None:
        """Follow the task from the vehicle state (``_lock`` held): holding over the target, returning once the hold
        ended (its waypoint reached), complete when landed and disarmed; aborted by someone else's mode change, a
        disarm before the hold ended, or a failsafe."""
        t = self.task
        if t is None or t.state not in ("flying", "holding", "returning") or self._starting or not t.items:
            return
        failsafe = s.system_status in (MAV_STATE_CRITICAL, MAV_STATE_EMERGENCY)
        rtl_seq = t.items[-1].seq
        reached = t.reached_seq if t.reached_seq is not None else -1
        at_rtl = s.mission_seq == rtl_seq and (s.mode == "AUTO" or (s.mode in ("RTL", "LAND")
                                                                    and t.holding_since_ns is not None))
        if t.state in ("flying", "holding"):
            if failsafe and s.armed:
                self._end_task("aborted", f"failsafe (system status {s.system_status}) in mode {s.mode} before the "
                                          "hold ended")
                return
            if reached >= t.wp_seq or at_rtl:
                if t.holding_since_ns is not None:
                    t.hold_ended_ns = time.time_ns()
                t.state = "returning"
                log.info("drone %s: task %s: hold over (%.6f, %.6f) ended, returning", self.id, t.kind, t.lat_deg,
                         t.lon_deg)
            elif s.armed is False:
                self._end_task("aborted", f"disarmed in mode {s.mode} before the hold ended")
                return
            elif s.mode != "AUTO":
                self._foreign = f"mode changed to {s.mode} (not by the service) during a task"
                self._end_task("aborted", f"mode changed to {s.mode} (not by the service) before the hold ended")
                return
            elif t.state == "flying" and s.lat_deg is not None and s.alt_rel_m is not None:
                from seawatch.drone.geometry import latlon_to_offsets

                dn, de = latlon_to_offsets(t.lat_deg, t.lon_deg, s.lat_deg, s.lon_deg)
                if (math.hypot(float(dn[0]), float(de[0])) <= TASK_HOLD_RADIUS_M
                        and abs(s.alt_rel_m - t.alt_m) <= TASK_HOLD_ALT_TOL_M):
                    t.state, t.holding_since_ns = "holding", time.time_ns()
                    log.info("drone %s: task %s: holding over (%.6f, %.6f) for %g s", self.id, t.kind, t.lat_deg,
                             t.lon_deg, t.hold_s)
        if t.state == "returning":
            if s.armed is False:
                self._end_task("complete", None)
            elif failsafe:
                self._end_task("aborted", f"failsafe (system status {s.system_status}) in mode {s.mode} on the "
                                          "way home")
            elif s.mode not in ("AUTO", "RTL", "LAND"):
                self._foreign = f"mode changed to {s.mode} (not by the service) during a task"
                self._end_task("aborted", f"mode changed to {s.mode} (not by the service) on the way home")

    def _task_tick(self) -> None:
        """Every half second on the drone's thread: forget who flew a vehicle once it is disarmed, follow the task."""
        link = self.link
        if link is None:
            return
        with self._lock:
            s = link.state
            if s.armed is False and not self._starting:
                self._we_armed = False
                self._foreign = None
            self._watch_task(s)

    def _on_message(self, msg: Any, link: Any = None) -> None:
        link = link if link is not None else self.link
        if link is None or msg.get_srcSystem() != link.target_system or msg.get_srcComponent() != link.target_component:
            return  # another vehicle, or a gimbal / camera / GCS: not this vehicle's autopilot
        mtype = msg.get_type()
        if mtype == "SYS_STATUS":
            b: dict[str, float] = {}
            if getattr(msg, "battery_remaining", -1) >= 0:
                b["remaining_pct"] = float(msg.battery_remaining)
            if getattr(msg, "voltage_battery", 65535) not in (0, 65535):
                b["voltage_v"] = msg.voltage_battery / 1000.0
            self.battery = b
            self._battery_mono = time.monotonic()
        elif mtype == "MISSION_ITEM_REACHED":
            with self._lock:
                self._reached_seq = max(msg.seq, self._reached_seq if self._reached_seq is not None else -1)
                t = self.task
                if t is not None and t.state in ("flying", "holding", "returning"):
                    t.reached_seq = max(msg.seq, t.reached_seq if t.reached_seq is not None else -1)
                self._watch(link.state)
                self._watch_task(link.state)
        elif mtype == "HEARTBEAT":
            with self._lock:
                self._watch(link.state)  # the link has already taken this heartbeat into its state
                self._watch_task(link.state)

    # ---- status -------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What the map and the API show (no connection string: it may carry credentials)."""
        link = self.link
        s = link.state if link is not None else None
        now = time.time_ns()
        d: dict[str, Any] = {
            "source_id": self.id, "kind": "drone", "drone_id": self.id,
            "state": (link.status.value if link is not None else ("connecting" if self.link_attempts else "starting")),
            "simulated": self.ops is not None and self.ops.sim is not False,
            "video_source": self.drone.video_source,
            "mode": None, "armed": None, "lat_deg": None, "lon_deg": None, "alt_rel_m": None, "heading_deg": None,
            "battery_pct": self.battery.get("remaining_pct"), "battery_v": self.battery.get("voltage_v"),
            "last_message_age_s": None,
            "patrol": self.ops.patrol if self.ops is not None else None, "patrol_state": self.patrol_state,
            "patrol_reason": self.patrol_reason, "patrol_repeat": bool(self.ops.repeat) if self.ops is not None else None,
            "patrols_started": self.patrols_started,
            "route": [[round(la, 7), round(lo, 7)] for la, lo in self.route],
            "current_waypoint": None, "waypoints": None, "last_error": self.last_error,
            "task": None,
        }
        with self._lock:
            if self.task is not None:
                d["task"] = self.task.as_dict(now)
        if s is not None:
            d.update(mode=s.mode, armed=s.armed, lat_deg=s.lat_deg, lon_deg=s.lon_deg, alt_rel_m=s.alt_rel_m,
                     heading_deg=s.heading_deg if s.heading_deg is not None else s.yaw_deg,
                     current_waypoint=s.mission_seq, waypoints=s.mission_total,
                     last_message_age_s=None if s.last_message_ns is None else round((now - s.last_message_ns) / NS, 2))
        return d


class Fleet:
    """Every drone's runner plus the AIS side of the pipeline (its vessel table), for status and the map."""

    ais_stale_after_s = 300.0  # a network AIS feed silent this long is reported ``stale`` (a busy port hears one a second)

    def __init__(self, settings) -> None:
        ops = {f.drone: f for f in settings.fleet}
        drones = {d.id: d for d in settings.drones}
        for s in settings.sources:  # a drone given inline in its camera's source
            if s.drone is not None and not isinstance(s.drone, str) and s.drone.id not in drones:
                drones[s.drone.id] = s.drone
        self.runners = {d.id: DroneRunner(d, ops.get(d.id)) for d in drones.values()}
        for r in self.runners.values():
            r.vessel_table = self._table
        self.ais_urls = tuple(settings.ais)
        self.identity = None  # the pipeline's VesselIdentityStage, set by the service once the pipeline exists
        self._ais_count = 0
        self._ais_change_ns: int | None = None
        self._ais_started_ns: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ais_thread: threading.Thread | None = None

    def pose_timelines(self, settings) -> dict[str, Any]:
        """source id -> the pose timeline of the drone carrying that camera (given to the pipeline)."""
        out = {}
        for s in settings.sources:
            d = settings.drone_of(s.id)
            if d is not None and s.calibration is None and d.id in self.runners:
                out[s.id] = self.runners[d.id].timeline
        return out

    def start(self) -> "Fleet":
        for r in self.runners.values():
            r.start()
        if self.ais_urls:
            self._ais_started_ns = time.time_ns()
            self._ais_thread = threading.Thread(target=self._watch_ais, name="ais-watch", daemon=True)
            self._ais_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for r in self.runners.values():
            r.stop()
        if self._ais_thread is not None:
            self._ais_thread.join(5.0)
            self._ais_thread = None

    def _watch_ais(self, interval_s: float = 0.5) -> None:
        """Notes when the AIS message count last changed (the wall-clock age of the newest message)."""
        while not self._stop.wait(interval_s):
            self._ais_seen(time.time_ns())

    def _ais_seen(self, now_ns: int) -> int | None:
        counters = getattr(self.identity, "counters", None) or {}
        count = int(counters.get("ais_messages", 0))
        with self._lock:
            if count != self._ais_count:
                self._ais_count, self._ais_change_ns = count, now_ns
            return self._ais_change_ns

    def _runner(self, drone_id: str) -> DroneRunner:
        r = self.runners.get(drone_id)
        if r is None:
            from seawatch.errors import InputError

            raise InputError(f"no drone {drone_id!r}")
        return r

    def abort_patrol(self, drone_id: str, mode: str = "RTL") -> bool:
        """Operator abort: the drone's patrol stays ``aborted`` (no repeat) until :meth:`restart_patrol`; True when
        ``mode`` was sent (not to a drone on the ground)."""
        return self._runner(drone_id).abort_patrol(mode)

    def restart_patrol(self, drone_id: str) -> None:
        """The explicit restart after an abort."""
        self._runner(drone_id).restart_patrol()

    def investigate(self, drone_id: str, lat_deg: float, lon_deg: float, **kw: Any) -> Task:
        """Send the drone to look at a point (:meth:`DroneRunner.investigate`)."""
        return self._runner(drone_id).investigate(lat_deg, lon_deg, **kw)

    def drones(self) -> list[dict[str, Any]]:
        return [r.status() for r in self.runners.values()]

    def _table(self):
        return getattr(self.identity, "table", None)

    def _ais_state(self, now_ns: int, changed_ns: int | None, feeds: list[Any] = ()) -> str:
        """``running``; ``ended`` when every feed is a file and all of it has been replayed; ``down`` when every feed
        is down by ``identity.ais_down_after_s`` (``feeds``: their ``AisFeedState``; the moment ``ais_feed_down`` is
        raised and unidentified-vessel alerts are held, so the row does not say running beside that incident);
        ``stale`` when a network feed is configured and no message came for ``ais_stale_after_s`` (since the last
        one, or since the start)."""
        if self.identity is None:
            return "not_running"
        if not any("://" in u for u in self.ais_urls):
            pending = getattr(self.identity, "files_pending", None)
            if pending is not None and pending() == 0:
                return "ended"
        if feeds and all(f.down for f in feeds):
            return "down"
        if not any("://" in u for u in self.ais_urls):
            return "running"
        since = changed_ns if changed_ns is not None else self._ais_started_ns
        if since is not None and (now_ns - since) / NS > self.ais_stale_after_s:
            return "stale"
        return "running"

    def ais_feeds(self) -> list[Any]:
        """Each AIS feed's health (``AisFeedState``: up / silent / down / ended since when, and why), for the
        ``ais_feed_down`` incidents and the status; [] before the pipeline exists."""
        states = getattr(self.identity, "feed_states", None)
        return states() if states is not None else []

    def ais(self) -> list[dict[str, Any]]:
        """One status entry for the AIS side: feeds, messages, vessel count, and the wall-clock seconds since the
        message count last grew (watched every 0.5 s). ``state``: see :meth:`_ais_state`; ``feed_states``: per feed,
        ``AisFeedState.as_dict`` (``state`` up / silent / down / ended, ``since_ns``, ``reason``); ``identity_held``:
        why vessels without a registry / hull match are held rather than raised as unidentified (AIS unavailable),
        or null."""
        if not self.ais_urls:
            return []
        table = self._table()
        now = time.time_ns()
        changed = self._ais_seen(now)
        count = self._ais_count
        feeds = [redact_url(u) if "://" in u else u.replace("\\", "/").rsplit("/", 1)[-1]  # files: name only
                 for u in self.ais_urls]
        vessels = table.snapshot() if table is not None else []
        feed_states = self.ais_feeds()
        return [{"source_id": "ais", "kind": "ais", "state": self._ais_state(now, changed, feed_states),
                 "feeds": feeds, "messages": count, "vessels": len(vessels),
                 "vessels_with_position": sum(1 for v in vessels if v.has_position),
                 "last_message_age_s": None if changed is None else round((now - changed) / NS, 1),
                 "feed_states": [f.as_dict() for f in feed_states],
                 "identity_held": getattr(self.identity, "ais_unavailable", None)}]

    def vessels(self, limit: int = 5000) -> list[dict[str, Any]]:
        """Live vessels of the AIS table (by the feed's own clock), positioned ones first. ``age_s``: since anything
        was heard from the vessel; ``position_age_s``: since its position was reported (None without one)."""
        table = self._table()
        if table is None:
            return []
        latest = table.latest_ns
        rows = sorted(table.snapshot(), key=lambda v: (not v.has_position, v.mmsi))[:limit]
        out = []
        for v in rows:
            d = v.as_dict()
            d["age_s"] = None if latest is None else round(v.age_s(latest), 1)
            # the position's own age: a type 5 / 24 / 8 message keeps a vessel heard (age_s) while the position
            # it is drawn at may be minutes older
            pa = None if latest is None else v.position_age_s(latest)
            d["position_age_s"] = None if pa is None else round(pa, 1)
            out.append(d)
        return out
