"""MAVLink link to one vehicle (pymavlink): telemetry into a pose timeline, commands, .tlog logging, replay.

One class, :class:`MavlinkLink`, serves a live connection (``udp:``/``udpin:``/``udpout:``/``tcp:``/``tcpin:``/
serial ``/dev/ttyUSB0`` with ``baud``) and the replay of a ``.tlog`` file: both feed every message through
the same ``_handle`` method, and message times come from ``msg._timestamp`` (wall clock when live, the log's
own timestamp in replay), so a replay exercises exactly the live code path.

Why pymavlink and not dronekit: dronekit's ``connect()`` blocks forever when the vehicle never sends a
PARAM_VALUE (RECIPES.md section 3) and it understands neither gimbal v2 nor CAMERA_INFORMATION; the few
things Seawatch needs from it (mode, arming, missions, parameters) are done here with a timeout on every wait.

Time: telemetry samples are stamped in the receiver's UTC clock. Vehicle ``time_boot_ms`` stamps are mapped
onto it with the smallest observed (receive time - boot time) offset, which removes the transport jitter;
SYSTEM_TIME gives the vehicle's own UTC clock (reported as ``vehicle_clock_offset_s``) and TIMESYNC the
round-trip time. Link loss (no vehicle HEARTBEAT for ``heartbeat_timeout_s``) is a status change followed by
reconnect attempts, never an exception in the reader thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from seawatch.drone.geometry import CameraIntrinsics, euler_zyx_from_quat
from seawatch.drone.pose import AttitudeSample, GimbalSample, PoseTimeline, PositionSample
from seawatch.errors import InputError, TelemetryError

log = logging.getLogger(__name__)

NS = 1_000_000_000

# ArduCopter flight modes (ArduCopter/mode.h, enum class Mode::Number)
COPTER_MODES: dict[int, str] = {
    0: "STABILIZE", 1: "ACRO", 2: "ALT_HOLD", 3: "AUTO", 4: "GUIDED", 5: "LOITER", 6: "RTL", 7: "CIRCLE",
    9: "LAND", 11: "DRIFT", 13: "SPORT", 14: "FLIP", 15: "AUTOTUNE", 16: "POSHOLD", 17: "BRAKE", 18: "THROW",
    19: "AVOID_ADSB", 20: "GUIDED_NOGPS", 21: "SMART_RTL", 22: "FLOWHOLD", 23: "FOLLOW", 24: "ZIGZAG",
    25: "SYSTEMID", 26: "AUTOROTATE", 27: "AUTO_RTL", 28: "TURTLE",
}
COPTER_MODE_NUMBERS = {v: k for k, v in COPTER_MODES.items()}

# MAV_TYPE values flown by ArduCopter
COPTER_TYPES = {2, 3, 4, 13, 14, 15, 29}
# MAV_TYPEs that are never the vehicle (GCS, onboard computer, gimbal, ADSB, camera, ...)
NON_VEHICLE_TYPES = {6, 18, 26, 27, 30}
MAV_AUTOPILOT_INVALID = 8
MAV_MODE_FLAG_SAFETY_ARMED = 128
MAV_MODE_FLAG_CUSTOM_MODE_ENABLED = 1
GIMBAL_DEVICE_FLAGS_YAW_LOCK = 16
GIMBAL_DEVICE_FLAGS_YAW_IN_VEHICLE_FRAME = 32
GIMBAL_DEVICE_FLAGS_YAW_IN_EARTH_FRAME = 64
MAV_COMP_ID_GIMBAL = 154
MAV_COMP_ID_CAMERA = 100
MAV_RESULT_NAMES = {0: "ACCEPTED", 1: "TEMPORARILY_REJECTED", 2: "DENIED", 3: "UNSUPPORTED", 4: "FAILED",
                    5: "IN_PROGRESS", 6: "CANCELLED"}


def mavutil():
    """pymavlink's mavutil with the MAVLink 2 ardupilotmega dialect (gimbal v2 only exists in MAVLink 2).

    Imported lazily; MAVLink 2 parsing also reads MAVLink 1 packets (e.g. old Mission Planner logs).
    """
    os.environ.setdefault("MAVLINK20", "1")
    from pymavlink import mavutil as mu

    if getattr(mu.mavlink, "WIRE_PROTOCOL_VERSION", "1.0") != "2.0":
        os.environ["MAVLINK20"] = "1"
        mu.set_dialect("ardupilotmega")
    return mu


class LinkStatus(str, Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    LOST = "lost"
    ENDED = "ended"  # replay reached the end of the log
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class VehicleState:
    """Snapshot of what the link knows about the vehicle (all None until received)."""

    system_id: int | None = None
    component_id: int | None = None
    vehicle_type: int | None = None
    autopilot: int | None = None
    mode: str | None = None
    custom_mode: int | None = None
    armed: bool | None = None
    system_status: int | None = None
    lat_deg: float | None = None
    lon_deg: float | None = None
    alt_amsl_m: float | None = None
    alt_rel_m: float | None = None
    velocity_ned_m_s: tuple[float, float, float] | None = None
    heading_deg: float | None = None
    roll_deg: float | None = None
    pitch_deg: float | None = None
    yaw_deg: float | None = None
    gps_fix_type: int | None = None
    gps_satellites: int | None = None
    gps_hdop: float | None = None
    gimbal_rpy_deg: tuple[float, float, float] | None = None
    gimbal_frame: str | None = None
    camera: CameraIntrinsics | None = None
    home: tuple[float, float, float] | None = None
    mission_seq: int | None = None
    mission_total: int | None = None
    last_reached_seq: int | None = None
    vehicle_clock_offset_s: float | None = None
    timesync_rtt_s: float | None = None
    last_heartbeat_ns: int | None = None
    last_message_ns: int | None = None


@dataclass
class LinkCounters:
    messages: int = 0
    bad_data: int = 0
    reconnects: int = 0
    link_losses: int = 0
    by_type: Counter = field(default_factory=Counter)


class _Waiter:
    def __init__(self, types: set[str], predicate: Callable[[Any], bool] | None) -> None:
        self.types = types
        self.predicate = predicate
        self.q: queue.Queue = queue.Queue()

    def get(self, timeout_s: float) -> Any | None:
        try:
            return self.q.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None


class MavlinkLink:
    """Connection to one MAVLink vehicle, or the replay of a ``.tlog`` through the same code.

    Args:
        url: pymavlink connection string (``udp:127.0.0.1:14550`` listens like a GCS for SITL's ``--out``,
            ``tcp:host:5760``, ``/dev/ttyACM0``) or a ``.tlog`` path for replay.
        vehicle_id: name used in logs, reasons and the pose timeline.
        timeline: pose timeline to feed (one is created when None).
        tlog_path: write every received and sent message here in .tlog format (8-byte big-endian UTC
            microseconds + the raw MAVLink packet).
        altitude: "relative" (GLOBAL_POSITION_INT.relative_alt, above home) or "amsl" for the pose altitude;
            it must match the geolocator's surface height datum.
        heartbeat_timeout_s: no vehicle HEARTBEAT for this long = link lost.
        target_system: the vehicle's system id; None = the first autopilot heard.
    """

    def __init__(
        self,
        url: str,
        *,
        vehicle_id: str = "drone",
        timeline: PoseTimeline | None = None,
        tlog_path: str | os.PathLike | None = None,
        altitude: str = "relative",
        baud: int = 57600,
        source_system: int = 255,
        source_component: int = 190,
        heartbeat_timeout_s: float = 3.0,
        reconnect_backoff_s: float = 1.0,
        target_system: int | None = None,
        gcs_heartbeat_hz: float = 1.0,
    ) -> None:
        if altitude not in ("relative", "amsl"):
            raise InputError(f"drone {vehicle_id}: altitude must be 'relative' or 'amsl', got {altitude!r}")
        self.url = url
        self.vehicle_id = vehicle_id
        self.is_replay = str(url).lower().endswith((".tlog", ".tlog.raw"))
        if timeline is None:
            # a replay keeps the whole log; a live link the last five minutes
            timeline = PoseTimeline(vehicle_id=vehicle_id, history_s=1e7 if self.is_replay else 300.0)
        self.timeline = timeline
        self.altitude = altitude
        self.baud = baud
        self.source_system = source_system
        self.source_component = source_component
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.reconnect_backoff_s = reconnect_backoff_s
        self.target_system = target_system
        self.target_component = 1
        self.gcs_heartbeat_hz = gcs_heartbeat_hz
        self.counters = LinkCounters()
        self.params: dict[str, float] = {}
        self.statustext: deque[tuple[int, int, str]] = deque(maxlen=50)  # (time_ns, severity, text)
        # (time_ns, mode, armed) at every change of mode or armed state
        self.transitions: deque[tuple[int, str, bool]] = deque(maxlen=1000)
        self._status = LinkStatus.CLOSED
        self._state = VehicleState()
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._heartbeat_seen = threading.Event()
        self._boot_offset_ns: int | None = None
        self._last_boot_ms: int | None = None
        self._tlog_path = Path(tlog_path) if tlog_path else None
        self._tlog: Any = None
        self._listeners: list[Callable[[Any], None]] = []
        self._last_gcs_hb = 0.0

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def status(self) -> LinkStatus:
        return self._status

    @property
    def state(self) -> VehicleState:
        with self._lock:
            return self._state

    def _set_status(self, s: LinkStatus, why: str = "") -> None:
        if s != self._status:
            log.info("drone %s link %s -> %s %s", self.vehicle_id, self._status.value, s.value, why)
            self._status = s

    def _open_conn(self) -> None:
        mu = mavutil()
        try:
            if self.is_replay:
                p = Path(self.url)
                if not p.is_file():
                    raise TelemetryError(f"drone {self.vehicle_id}: telemetry log {p} does not exist")
                conn = mu.mavlink_connection(str(p), robust_parsing=True)
            else:
                conn = mu.mavlink_connection(
                    self.url,
                    baud=self.baud,
                    source_system=self.source_system,
                    source_component=self.source_component,
                    robust_parsing=True,
                    autoreconnect=False,
                    retries=0,  # one attempt; the reader's backoff loop does the retrying (and can be stopped)
                )
        except TelemetryError:
            raise
        except Exception as exc:  # pymavlink raises OSError, serial errors, ValueError for bad strings
            raise TelemetryError(f"drone {self.vehicle_id}: cannot open MAVLink connection {self.url!r}: {exc}") from exc
        if hasattr(conn, "handle_eof"):
            # pymavlink's TCP client prints and returns b"" on EOF (a busy loop without autoreconnect): make
            # a closed peer an error, so the reader marks the link lost and reconnects with backoff
            def _closed(*_a, _url=self.url):
                raise ConnectionResetError(f"{_url}: peer closed the TCP connection")

            conn.handle_eof = _closed
            conn.handle_disconnect = _closed
        self._conn = conn

    def open(self, timeout_s: float = 10.0) -> "MavlinkLink":
        """Open the connection, start the reader thread and wait for the vehicle's first HEARTBEAT.

        Raises TelemetryError (with the URL) when nothing is heard within ``timeout_s``.
        """
        if self.is_replay:
            raise TelemetryError(f"drone {self.vehicle_id}: {self.url} is a log; use replay()")
        self._open_conn()
        if self._tlog_path is not None:
            self._tlog_path.parent.mkdir(parents=True, exist_ok=True)
            self._tlog = open(self._tlog_path, "ab")
        self._stop.clear()
        self._set_status(LinkStatus.CONNECTING)
        self._thread = threading.Thread(target=self._run, name=f"mavlink-{self.vehicle_id}", daemon=True)
        self._thread.start()
        # a GCS heartbeat first: udpout/tcp vehicles (and SITL on udpin) start talking once they hear one
        self._send_gcs_heartbeat()
        if not self._heartbeat_seen.wait(timeout_s):
            self.close()
            raise TelemetryError(
                f"drone {self.vehicle_id}: no vehicle HEARTBEAT on {self.url} within {timeout_s:.1f} s"
            )
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None
        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        self._conn = None
        if self._tlog is not None:
            with contextlib.suppress(Exception):
                self._tlog.close()
            self._tlog = None
        self._set_status(LinkStatus.CLOSED)

    def __enter__(self) -> "MavlinkLink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_listener(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(msg)`` for every valid message (from the reader thread; keep it quick)."""
        self._listeners.append(fn)

    # -- reader ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.reconnect_backoff_s
        while not self._stop.is_set():
            conn = self._conn
            if conn is None:  # the last reconnect attempt failed: try again after the backoff
                self._reconnect(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            try:
                msg = conn.recv_match(blocking=True, timeout=0.1)
            except Exception as exc:  # socket errors, serial unplugged, parser bugs
                msg = None
                log.warning("drone %s: read failed on %s: %s", self.vehicle_id, self.url, exc)
                self._lose(f"read error: {exc}")
                self._reconnect(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if msg is not None:
                self._handle(msg)
                if self._status == LinkStatus.CONNECTED:
                    backoff = self.reconnect_backoff_s
            now = time.monotonic()
            if self.gcs_heartbeat_hz > 0 and now - self._last_gcs_hb >= 1.0 / self.gcs_heartbeat_hz:
                self._send_gcs_heartbeat()
            hb = self._state.last_heartbeat_ns
            if self._status == LinkStatus.CONNECTED and hb is not None:
                if time.time_ns() - hb > self.heartbeat_timeout_s * NS:
                    self._lose(f"no HEARTBEAT for {self.heartbeat_timeout_s:.1f} s")
                    self._reconnect(backoff)
                    backoff = min(backoff * 2, 10.0)

    def _lose(self, why: str) -> None:
        if self._status != LinkStatus.LOST:
            self.counters.link_losses += 1
        self._set_status(LinkStatus.LOST, why)

    def _reconnect(self, backoff_s: float) -> None:
        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        self._conn = None
        if self._stop.wait(backoff_s):
            return
        try:
            self._open_conn()
            self.counters.reconnects += 1
            self._send_gcs_heartbeat()
        except TelemetryError as exc:
            log.warning("%s", exc)

    # -- replay ---------------------------------------------------------------------------------------------

    def replay(self, speed: float | None = None, until_s: float | None = None) -> "MavlinkLink":
        """Feed the whole ``.tlog`` through the live code path (as fast as possible, or ``speed`` x real time)."""
        if not self.is_replay:
            raise TelemetryError(f"drone {self.vehicle_id}: {self.url} is not a .tlog file")
        self._open_conn()
        self._set_status(LinkStatus.CONNECTING)
        t_log0 = t_wall0 = None
        try:
            while True:
                try:
                    msg = self._conn.recv_match(blocking=False)
                except Exception as exc:  # a corrupt log is counted, not fatal
                    self.counters.bad_data += 1
                    log.debug("drone %s: unreadable record in %s: %s", self.vehicle_id, self.url, exc)
                    continue
                if msg is None:
                    break
                ts = float(getattr(msg, "_timestamp", 0.0))
                if t_log0 is None:
                    t_log0, t_wall0 = ts, time.monotonic()
                if until_s is not None and ts - t_log0 > until_s:
                    break
                if speed:
                    delay = (ts - t_log0) / speed - (time.monotonic() - t_wall0)
                    if delay > 0:
                        time.sleep(delay)
                self._handle(msg)
        finally:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._set_status(LinkStatus.ENDED, f"end of {self.url}")
        return self

    # -- message handling (live and replay) ------------------------------------------------------------------

    def _is_vehicle(self, msg) -> bool:
        src = msg.get_srcSystem()
        if self.target_system is None:
            return False
        return src == self.target_system

    def _sample_time_ns(self, msg, recv_ns: int) -> int:
        """Vehicle boot time mapped to the receiver clock (minimum-latency offset), else receive time."""
        boot_ms = getattr(msg, "time_boot_ms", None)
        if boot_ms is None or not self._is_vehicle(msg):
            return recv_ns
        boot_ns = int(boot_ms) * 1_000_000
        if self._last_boot_ms is not None and boot_ms + 5000 < self._last_boot_ms:
            log.info("drone %s: vehicle boot time went back (%d -> %d ms): rebooted", self.vehicle_id,
                     self._last_boot_ms, boot_ms)
            self._boot_offset_ns = None
            self._last_boot_ms = boot_ms
        else:
            self._last_boot_ms = max(boot_ms, self._last_boot_ms or 0)
        off = recv_ns - boot_ns
        if self._boot_offset_ns is None or off < self._boot_offset_ns:
            self._boot_offset_ns = off
        return boot_ns + self._boot_offset_ns

    def _handle(self, msg) -> None:
        mtype = msg.get_type()
        if mtype == "BAD_DATA":
            self.counters.bad_data += 1
            return
        recv_ns = int(float(getattr(msg, "_timestamp", time.time())) * NS)
        self.counters.messages += 1
        self.counters.by_type[mtype] += 1
        if self._tlog is not None:
            self._log_tlog(msg, recv_ns)
        try:
            handler = getattr(self, f"_on_{mtype.lower()}", None)
            if handler is not None:
                handler(msg, recv_ns)
        except (ValueError, TypeError, InputError, ZeroDivisionError) as exc:
            # a message with impossible values (NaN quaternion, lat out of range) is counted and skipped
            self.counters.bad_data += 1
            log.debug("drone %s: skipped %s: %s", self.vehicle_id, mtype, exc)
        with self._lock:
            if self._is_vehicle(msg):
                self._state = replace(self._state, last_message_ns=recv_ns)
            waiters = list(self._waiters)
        for w in waiters:
            if mtype in w.types and (w.predicate is None or w.predicate(msg)):
                w.q.put(msg)
        for fn in self._listeners:
            try:
                fn(msg)
            except Exception:  # a listener must not kill the reader
                log.exception("drone %s: listener failed on %s", self.vehicle_id, mtype)

    def _update(self, **kw) -> None:
        with self._lock:
            self._state = replace(self._state, **kw)

    def _on_heartbeat(self, msg, recv_ns: int) -> None:
        if msg.type in NON_VEHICLE_TYPES or msg.autopilot == MAV_AUTOPILOT_INVALID:
            return
        if self.target_system is None:
            self.target_system = msg.get_srcSystem()
            self.target_component = msg.get_srcComponent()
            log.info("drone %s: vehicle is system %d component %d (type %d, autopilot %d)", self.vehicle_id,
                     self.target_system, self.target_component, msg.type, msg.autopilot)
        if msg.get_srcSystem() != self.target_system:
            return
        if msg.type in COPTER_TYPES and msg.autopilot == 3:  # ARDUPILOTMEGA
            mode = COPTER_MODES.get(msg.custom_mode, f"MODE_{msg.custom_mode}")
        else:
            mode = mavutil().mode_string_v10(msg)
        armed = bool(msg.base_mode & MAV_MODE_FLAG_SAFETY_ARMED)
        if (mode, armed) != (self._state.mode, self._state.armed):
            self.transitions.append((recv_ns, mode, armed))
        self._update(
            system_id=msg.get_srcSystem(),
            component_id=msg.get_srcComponent(),
            vehicle_type=msg.type,
            autopilot=msg.autopilot,
            mode=mode,
            custom_mode=msg.custom_mode,
            armed=armed,
            system_status=msg.system_status,
            last_heartbeat_ns=time.time_ns() if not self.is_replay else recv_ns,
        )
        if self._status != LinkStatus.CONNECTED and not self.is_replay:
            self._set_status(LinkStatus.CONNECTED, f"heartbeat from system {self.target_system}")
        elif self.is_replay and self._status == LinkStatus.CONNECTING:
            self._set_status(LinkStatus.CONNECTED, "log has a vehicle heartbeat")
        self._heartbeat_seen.set()

    def _on_global_position_int(self, msg, recv_ns: int) -> None:
        if not self._is_vehicle(msg):
            return
        lat, lon = msg.lat / 1e7, msg.lon / 1e7
        if lat == 0 and lon == 0:
            return  # no position yet (EKF not initialised)
        amsl, rel = msg.alt / 1000.0, msg.relative_alt / 1000.0
        vel = (msg.vx / 100.0, msg.vy / 100.0, msg.vz / 100.0)
        t = self._sample_time_ns(msg, recv_ns)
        self.timeline.add_position(PositionSample(t, lat, lon, rel if self.altitude == "relative" else amsl, vel))
        self._update(lat_deg=lat, lon_deg=lon, alt_amsl_m=amsl, alt_rel_m=rel, velocity_ned_m_s=vel,
                     heading_deg=None if msg.hdg == 65535 else msg.hdg / 100.0)

    def _on_attitude(self, msg, recv_ns: int) -> None:
        if not self._is_vehicle(msg):
            return
        r, p, y = (math.degrees(v) for v in (msg.roll, msg.pitch, msg.yaw))
        rates = tuple(math.degrees(v) for v in (msg.rollspeed, msg.pitchspeed, msg.yawspeed))
        t = self._sample_time_ns(msg, recv_ns)
        self.timeline.add_attitude(AttitudeSample(t, r, p, y, rates))  # type: ignore[arg-type]
        self._update(roll_deg=r, pitch_deg=p, yaw_deg=y)

    def _on_gps_raw_int(self, msg, recv_ns: int) -> None:
        if not self._is_vehicle(msg):
            return
        self._update(gps_fix_type=msg.fix_type, gps_satellites=msg.satellites_visible,
                     gps_hdop=None if msg.eph == 65535 else msg.eph / 100.0)

    def _on_gimbal_device_attitude_status(self, msg, recv_ns: int) -> None:
        if msg.get_srcSystem() != self.target_system:
            return
        r, p, y = (math.degrees(v) for v in euler_zyx_from_quat(msg.q))
        # yaw frame: the explicit IN_VEHICLE / IN_EARTH flags win; older devices only say YAW_LOCK (= earth)
        if msg.flags & GIMBAL_DEVICE_FLAGS_YAW_IN_VEHICLE_FRAME:
            frame = "horizon"
        elif msg.flags & (GIMBAL_DEVICE_FLAGS_YAW_IN_EARTH_FRAME | GIMBAL_DEVICE_FLAGS_YAW_LOCK):
            frame = "earth"
        else:
            frame = "horizon"
        t = self._sample_time_ns(msg, recv_ns)
        self.timeline.add_gimbal(GimbalSample(t, r, p, y, frame))
        self._update(gimbal_rpy_deg=(r, p, y), gimbal_frame=frame)

    def _on_mount_status(self, msg, recv_ns: int) -> None:
        # ArduPilot: pointing_a = pitch, pointing_b = roll, pointing_c = yaw (centidegrees), roll/pitch
        # earth-frame, yaw relative to the vehicle
        if msg.get_srcSystem() != self.target_system:
            return
        p, r, y = msg.pointing_a / 100.0, msg.pointing_b / 100.0, msg.pointing_c / 100.0
        self.timeline.add_gimbal(GimbalSample(recv_ns, r, p, y, "horizon"))
        self._update(gimbal_rpy_deg=(r, p, y), gimbal_frame="horizon")

    def _on_camera_information(self, msg, recv_ns: int) -> None:
        if msg.focal_length > 0 and msg.sensor_size_h > 0 and msg.sensor_size_v > 0 and msg.resolution_h > 0:
            k = CameraIntrinsics.from_sensor(msg.resolution_h, msg.resolution_v, msg.focal_length,
                                             msg.sensor_size_h, msg.sensor_size_v)
            self._update(camera=k)

    def _on_system_time(self, msg, recv_ns: int) -> None:
        if not self._is_vehicle(msg) or msg.time_unix_usec == 0:
            return
        t_local = self._sample_time_ns(msg, recv_ns)
        self._update(vehicle_clock_offset_s=(msg.time_unix_usec * 1000 - t_local) / NS)

    def _on_timesync(self, msg, recv_ns: int) -> None:
        # our request carried ts1 = our time in ns and tc1 = 0; the vehicle answers with tc1 = its time
        if msg.tc1 != 0 and self._is_vehicle(msg) and not self.is_replay:
            now = time.time_ns()
            rtt = now - msg.ts1
            if 0 <= rtt < 10 * NS:
                self._update(timesync_rtt_s=rtt / NS)

    def _on_home_position(self, msg, recv_ns: int) -> None:
        if self._is_vehicle(msg):
            self._update(home=(msg.latitude / 1e7, msg.longitude / 1e7, msg.altitude / 1000.0))

    def _on_mission_current(self, msg, recv_ns: int) -> None:
        if self._is_vehicle(msg):
            total = getattr(msg, "total", 0)
            self._update(mission_seq=msg.seq, mission_total=total if total not in (0, 65535) else None)

    def _on_mission_item_reached(self, msg, recv_ns: int) -> None:
        if self._is_vehicle(msg):
            self._update(last_reached_seq=msg.seq)

    def _on_param_value(self, msg, recv_ns: int) -> None:
        if self._is_vehicle(msg):
            name = msg.param_id if isinstance(msg.param_id, str) else msg.param_id.decode(errors="replace")
            self.params[name.rstrip("\x00")] = float(msg.param_value)

    def _on_statustext(self, msg, recv_ns: int) -> None:
        text = msg.text if isinstance(msg.text, str) else msg.text.decode(errors="replace")
        self.statustext.append((recv_ns, msg.severity, text.rstrip("\x00")))

    # -- sending --------------------------------------------------------------------------------------------

    def _log_tlog(self, msg, t_ns: int) -> None:
        try:
            self._tlog.write(struct.pack(">Q", t_ns // 1000) + bytes(msg.get_msgbuf()))
        except Exception as exc:  # disk full must not stop telemetry
            log.warning("drone %s: cannot write tlog %s: %s", self.vehicle_id, self._tlog_path, exc)

    @property
    def mav(self):
        """The pymavlink encoder (for messages without a helper here). Sends are logged to the tlog."""
        if self._conn is None:
            raise TelemetryError(f"drone {self.vehicle_id}: link {self.url} is not connected")
        return self._conn.mav

    def send(self, fn_name: str, *args) -> None:
        """``link.send("command_long_send", ...)``: thread-safe send through pymavlink, logged to the tlog."""
        with self._send_lock:
            conn = self._conn
            if conn is None:
                raise TelemetryError(f"drone {self.vehicle_id}: cannot send {fn_name}, link {self.url} is down")
            encode = getattr(conn.mav, fn_name.removesuffix("_send") + "_encode")
            msg = encode(*args)
            try:
                conn.mav.send(msg)
            except OSError as exc:
                raise TelemetryError(f"drone {self.vehicle_id}: send {fn_name} on {self.url} failed: {exc}") from exc
            if self._tlog is not None:
                self._log_tlog(msg, time.time_ns())

    def _send_gcs_heartbeat(self) -> None:
        self._last_gcs_hb = time.monotonic()
        with contextlib.suppress(TelemetryError):
            self.send("heartbeat_send", 6, MAV_AUTOPILOT_INVALID, 0, 0, 4)  # GCS, ACTIVE
            self.send("timesync_send", 0, time.time_ns())

    @contextlib.contextmanager
    def expect(self, types: Iterable[str], predicate: Callable[[Any], bool] | None = None) -> Iterator[_Waiter]:
        """Register interest in messages *before* sending the request that triggers them."""
        w = _Waiter(set(types), predicate)
        with self._lock:
            self._waiters.append(w)
        try:
            yield w
        finally:
            with self._lock:
                self._waiters.remove(w)

    def wait_message(self, types: Iterable[str], predicate=None, timeout_s: float = 5.0):
        """The next matching message, or None after ``timeout_s``."""
        with self.expect(types, predicate) as w:
            return w.get(timeout_s)

    def _require_target(self) -> int:
        if self.target_system is None:
            raise TelemetryError(f"drone {self.vehicle_id}: no vehicle heard on {self.url} yet")
        return self.target_system

    def command_long(self, command: int, params: Iterable[float] = (), timeout_s: float = 3.0, retries: int = 2,
                     target_component: int | None = None) -> int:
        """Send COMMAND_LONG and wait for its COMMAND_ACK; returns the MAV_RESULT. Raises on timeout."""
        tsys = self._require_target()
        tcomp = self.target_component if target_component is None else target_component
        p = list(params)
        p += [0.0] * (7 - len(p))
        for attempt in range(retries + 1):
            with self.expect(["COMMAND_ACK"], lambda m: m.command == command) as w:
                self.send("command_long_send", tsys, tcomp, command, attempt, *p[:7])
                ack = w.get(timeout_s)
            if ack is not None:
                return int(ack.result)
        raise TelemetryError(
            f"drone {self.vehicle_id}: no COMMAND_ACK for command {command} after {retries + 1} tries of {timeout_s} s"
        )

    def _check(self, what: str, result: int) -> None:
        if result != 0:
            raise TelemetryError(f"drone {self.vehicle_id}: {what} refused ({MAV_RESULT_NAMES.get(result, result)})")

    def set_mode(self, mode: str, timeout_s: float = 3.0) -> None:
        """Change flight mode by ArduCopter name (``GUIDED``, ``AUTO``, ``RTL``, ...) and wait for the heartbeat."""
        number = COPTER_MODE_NUMBERS.get(mode.upper())
        if number is None:
            raise TelemetryError(f"drone {self.vehicle_id}: unknown ArduCopter mode {mode!r}")
        self._check(f"mode {mode}", self.command_long(176, [MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, number], timeout_s))
        self._wait_state(lambda s: s.custom_mode == number, timeout_s, f"mode {mode}")

    def arm(self, arm: bool = True, timeout_s: float = 5.0) -> None:
        self._check("arm" if arm else "disarm", self.command_long(400, [1.0 if arm else 0.0], timeout_s))
        self._wait_state(lambda s: s.armed is arm, timeout_s, "armed" if arm else "disarmed")

    def takeoff(self, alt_m: float, timeout_s: float = 3.0) -> None:
        self._check("takeoff", self.command_long(22, [0, 0, 0, math.nan, 0, 0, alt_m], timeout_s))

    def set_gimbal(self, pitch_deg: float, yaw_deg: float = 0.0, timeout_s: float = 3.0) -> None:
        """MAV_CMD_DO_GIMBAL_MANAGER_PITCHYAW (yaw relative to the vehicle)."""
        self._check("gimbal pitch/yaw", self.command_long(1000, [pitch_deg, yaw_deg, math.nan, math.nan, 0, 0, 0], timeout_s))

    def request_message(self, message_id: int, timeout_s: float = 3.0, target_component: int | None = None) -> int:
        return self.command_long(512, [message_id], timeout_s, target_component=target_component)

    def request(self, message_id: int, reply_type: str, timeout_s: float = 3.0, target_component: int | None = None):
        """REQUEST_MESSAGE and wait for the reply message itself (e.g. 259 -> CAMERA_INFORMATION); None on timeout."""
        with self.expect([reply_type]) as w:
            self._check(f"request of message {message_id}",
                        self.command_long(512, [message_id], timeout_s, target_component=target_component))
            return w.get(timeout_s)

    def set_message_interval(self, message_id: int, rate_hz: float, timeout_s: float = 3.0) -> int:
        return self.command_long(511, [message_id, 1e6 / rate_hz if rate_hz > 0 else -1], timeout_s)

    def fetch_params(self, timeout_s: float = 20.0, idle_s: float = 1.0) -> dict[str, float]:
        """PARAM_REQUEST_LIST with a bounded wait (never dronekit's endless wait); re-requests missing indices."""
        tsys = self._require_target()
        seen: dict[int, tuple[str, float]] = {}
        count = None
        deadline = time.monotonic() + timeout_s
        with self.expect(["PARAM_VALUE"], lambda m: m.get_srcSystem() == tsys) as w:
            self.send("param_request_list_send", tsys, self.target_component)
            while time.monotonic() < deadline:
                m = w.get(min(idle_s, deadline - time.monotonic()))
                if m is None:
                    if count is None:
                        self.send("param_request_list_send", tsys, self.target_component)
                        continue
                    for i in [i for i in range(count) if i not in seen][:10]:
                        self.send("param_request_read_send", tsys, self.target_component, b"", i)
                    continue
                count = m.param_count
                name = m.param_id if isinstance(m.param_id, str) else m.param_id.decode(errors="replace")
                if 0 <= m.param_index < 65535:
                    seen[m.param_index] = (name.rstrip("\x00"), float(m.param_value))
                if count is not None and len(seen) >= count:
                    break
        if count is None or len(seen) < count:
            raise TelemetryError(
                f"drone {self.vehicle_id}: parameter download incomplete ({len(seen)} of {count}) after {timeout_s} s"
            )
        return dict(seen.values())

    def set_param(self, name: str, value: float, timeout_s: float = 3.0) -> float:
        tsys = self._require_target()
        with self.expect(["PARAM_VALUE"], lambda m: (m.param_id if isinstance(m.param_id, str) else m.param_id.decode()).rstrip("\x00") == name) as w:
            self.send("param_set_send", tsys, self.target_component, name.encode(), float(value), 9)
            m = w.get(timeout_s)
        if m is None:
            raise TelemetryError(f"drone {self.vehicle_id}: parameter {name} not confirmed within {timeout_s} s")
        return float(m.param_value)

    def _wait_state(self, pred: Callable[[VehicleState], bool], timeout_s: float, what: str) -> VehicleState:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            s = self.state
            if pred(s):
                return s
            self.wait_message(["HEARTBEAT"], None, min(0.2, max(0.0, deadline - time.monotonic())))
        s = self.state
        if pred(s):
            return s
        raise TelemetryError(f"drone {self.vehicle_id}: vehicle did not report {what} within {timeout_s} s")

    def wait_until(self, pred: Callable[[VehicleState], bool], timeout_s: float, what: str) -> VehicleState:
        """Wait (bounded) for a condition on the vehicle state; raises TelemetryError naming ``what``."""
        return self._wait_state(pred, timeout_s, what)
