"""MAVLink link to one vehicle: dronekit as the vehicle layer, pymavlink for what dronekit lacks; .tlog; replay.

One class, :class:`MavlinkLink`, serves a live connection (``udp:``/``udpin:``/``udpout:``/``tcp:``/
serial ``/dev/ttyUSB0`` with ``baud``) and the replay of a ``.tlog`` file: both feed every message through
the same ``_handle`` method, and message times come from ``msg._timestamp`` (wall clock when live, the log's
own timestamp in replay), so a replay exercises exactly the live code path from the message on.

What does what (drone/README.md has the reasons):

* dronekit (the maintained ``dronekit2`` fork, import name ``dronekit``; dronekit 2.9.2 works too, with its
  Python 3.11 shims applied here when a link is created) owns the connection: ``dronekit.connect(url,
  wait_ready=False, _initialize=False)`` opens UDP/TCP/serial and runs its reader and writer threads, sends the
  GCS heartbeat, downloads the parameter table in the background once the first PARAM_VALUE came in
  (``link.vehicle.parameters``), sets parameters (``set_param``), and hands every received message to
  ``Vehicle.add_message_listener('*')`` -> ``_handle``.
* dronekit's own ``initialize()`` (which ``connect`` runs even with ``wait_ready=False``) waits for a
  PARAM_VALUE forever; it is replaced by :meth:`MavlinkLink.open`'s guarded readiness wait (HEARTBEAT, a
  booted mode, the first PARAM_VALUE, each against one deadline; a TelemetryError names what never came).
* pymavlink messages, sent through the same dronekit connection, do the rest: HEARTBEAT / GLOBAL_POSITION_INT /
  ATTITUDE / GPS_RAW_INT are read per system id (dronekit's attributes mix every vehicle on the link), gimbal
  v2 (GIMBAL_DEVICE_ATTITUDE_STATUS), MOUNT_STATUS, CAMERA_INFORMATION, SYSTEM_TIME, TIMESYNC, mode changes /
  arming / takeoff / RTL as COMMAND_LONG with their COMMAND_ACK (dronekit's setters never report a refusal),
  the mission protocol in MISSION_ITEM_INT (``mission.py``), and the ``.tlog`` writer (every packet received
  and every packet dronekit writes).

Time: telemetry samples are stamped in the receiver's UTC clock. Vehicle ``time_boot_ms`` stamps are mapped
onto it with the smallest observed (receive time - boot time) offset, which removes the transport jitter;
SYSTEM_TIME gives the vehicle's own UTC clock (reported as ``vehicle_clock_offset_s``) and TIMESYNC the
round-trip time. Link loss (no vehicle HEARTBEAT for ``heartbeat_timeout_s``, or dronekit's connection died,
e.g. TCP closed) is a status change followed by reconnect attempts with backoff, never an exception.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from seawatch.drone.geometry import CameraIntrinsics, euler_zyx_from_quat
from seawatch.drone.pose import AttitudeSample, GimbalSample, PoseTimeline, PositionSample
from seawatch.errors import InputError, SeawatchError, TelemetryError

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
MAV_STATE_UNINIT, MAV_STATE_BOOT = 0, 1
GIMBAL_DEVICE_FLAGS_YAW_LOCK = 16
GIMBAL_DEVICE_FLAGS_YAW_IN_VEHICLE_FRAME = 32
GIMBAL_DEVICE_FLAGS_YAW_IN_EARTH_FRAME = 64
MAV_COMP_ID_GIMBAL = 154
MAV_COMP_ID_CAMERA = 100
MAV_DATA_STREAM_ALL = 0
MAV_RESULT_NAMES = {0: "ACCEPTED", 1: "TEMPORARILY_REJECTED", 2: "DENIED", 3: "UNSUPPORTED", 4: "FAILED",
                    5: "IN_PROGRESS", 6: "CANCELLED"}

# what a live connection string may look like (dronekit's own UDP class calls sys.exit() on a malformed one)
_NET_URL = re.compile(r"^(udp|udpin|udpout|udpbcast|tcp|tcpin):([^:]+):(\d{1,5})$", re.IGNORECASE)


def connection_problem(url: str) -> str | None:
    """Why a MAVLink connection string cannot be opened, or None: a network address must be SCHEME:HOST:PORT (port
    1-65535), HOST:PORT is read as udp: (dronekit's documented form), anything else must be a serial device (a path,
    COMn, or an existing file). The link applies it before opening, ``config check`` to every drone's connection."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("udp", "udpin", "udpout", "udpbcast", "tcp", "tcpin"):
        m = _NET_URL.match(url)
        if m is None or not 0 < int(m.group(3)) < 65536:
            return f"{url!r} is not a MAVLink connection: expected {scheme}:HOST:PORT (port 1-65535)"
        return None
    if re.match(r"^[\w.-]+:\d{1,5}$", url) or url.startswith(("/", "COM", "com")):
        return None  # HOST:PORT, or a serial device (may be plugged in later)
    if Path(url.split(",", 1)[0]).exists():
        return None
    return (f"{url!r} is not a MAVLink connection: give udp:HOST:PORT, udpin:/udpout:/tcp:/tcpin:HOST:PORT or a serial "
            "device (/dev/ttyUSB0,57600)")


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


def apply_dronekit_py311_shims() -> bool:
    """The aliases dronekit 2.9.2 needs on Python >= 3.10 (RECIPES.md section 3); True when any was added.

    ``collections.MutableMapping`` & co. moved to ``collections.abc`` (removed from ``collections`` in 3.10);
    dronekit 2.9.2 subclasses ``collections.MutableMapping``. Called only when importing dronekit failed on it.
    """
    import collections
    import collections.abc

    added = False
    for name in ("MutableMapping", "Mapping", "MutableSet", "MutableSequence", "Sequence", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
            added = True
    return added


def dronekit():
    """Import dronekit lazily (never at ``import seawatch``), MAVLink 2 dialect first, shims for 2.9.2 applied.

    ``dronekit2`` (3.x, the maintained fork) installs the import name ``dronekit`` and needs no shim. The original
    ``dronekit`` 2.9.2 fails on Python 3.11 with ``module 'collections' has no attribute 'MutableMapping'``: the
    aliases are added (:func:`apply_dronekit_py311_shims`) and the import is retried; without the ``future``
    package it cannot import at all. Raises TelemetryError with the install command when dronekit is unusable.
    """
    mavutil()  # pymavlink must load the MAVLink 2 dialect before dronekit imports it
    try:
        try:
            import dronekit as dk
        except AttributeError as exc:
            if "collections" not in str(exc):
                raise
            apply_dronekit_py311_shims()
            for name in [m for m in sys.modules if m == "dronekit" or m.startswith("dronekit.")]:
                del sys.modules[name]  # half-imported submodules
            import dronekit as dk

            log.info("dronekit %s: Python 3.11 collections shims applied", getattr(dk, "__version__", "?"))
    except ModuleNotFoundError as exc:
        if exc.name in ("past", "future"):
            raise TelemetryError("dronekit 2.9.2 needs the 'future' package on Python 3.11 (pip install future), "
                                 "or install the maintained fork: pip install dronekit2") from exc
        if exc.name == "dronekit":
            raise TelemetryError("dronekit is not installed: pip install dronekit2 (or pip install -e .)") from exc
        raise
    return dk


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


class _TeeWriter:
    """Sits in front of dronekit's packet writer: every packet dronekit sends is also given to ``on_packet``."""

    def __init__(self, inner: Any, on_packet: Callable[[bytes], None]) -> None:
        self._inner = inner
        self._on_packet = on_packet

    def write(self, buf: bytes) -> None:
        self._on_packet(bytes(buf))
        self._inner.write(buf)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class MavlinkLink:
    """Connection to one MAVLink vehicle (through dronekit), or the replay of a ``.tlog`` through the same code.

    Args:
        url: connection string (``udp:127.0.0.1:14550`` listens like a GCS for SITL's ``--out``,
            ``udpin:`` the same for several senders, ``udpout:host:port`` sends first, ``tcp:host:5760``,
            ``/dev/ttyACM0``) or a ``.tlog`` path for replay.
        vehicle_id: name used in logs, reasons and the pose timeline.
        timeline: pose timeline to feed (one is created when None).
        tlog_path: write every received and sent message here in .tlog format (8-byte big-endian UTC
            microseconds + the raw MAVLink packet).
        altitude: "relative" (GLOBAL_POSITION_INT.relative_alt, above home) or "amsl" for the pose altitude;
            it must match the geolocator's surface height datum.
        heartbeat_timeout_s: no vehicle HEARTBEAT for this long = link lost.
        target_system: the vehicle's system id; None = the first autopilot heard.
        gcs_heartbeat_hz: rate of our TIMESYNC requests (dronekit itself sends the GCS HEARTBEAT at 1 Hz).
        require_params: ``open`` also waits for the vehicle's first PARAM_VALUE (what dronekit needs).
        stream_rate_hz: when set, ``open`` asks for all data streams at this rate (REQUEST_DATA_STREAM, as
            dronekit's initialize does at 4 Hz); None leaves the vehicle's stream rates as configured.
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
        require_params: bool = True,
        stream_rate_hz: float | None = None,
    ) -> None:
        if altitude not in ("relative", "amsl"):
            raise InputError(f"drone {vehicle_id}: altitude must be 'relative' or 'amsl', got {altitude!r}")
        if target_system is not None and not 1 <= int(target_system) <= 255:
            raise InputError(f"drone {vehicle_id}: system id {target_system} is not a MAVLink system id (1..255)")
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
        self.require_params = require_params
        self.stream_rate_hz = stream_rate_hz
        self.counters = LinkCounters()
        self.params: dict[str, float] = {}
        self.statustext: deque[tuple[int, int, str]] = deque(maxlen=50)  # (time_ns, severity, text)
        # (time_ns, mode, armed) at every change of mode or armed state
        self.transitions: deque[tuple[int, str, bool]] = deque(maxlen=1000)
        self._status = LinkStatus.CLOSED
        self._state = VehicleState()
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._tlog_lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._vehicle: Any = None  # dronekit.Vehicle of a live link
        self._conn: Any = None  # pymavlink log reader of a replay
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._heartbeat_seen = threading.Event()
        self._last_hb_mono: float | None = None
        # per (system, component): each MAVLink component stamps time_boot_ms with its own boot clock
        self._boot_offset_ns: dict[tuple[int, int], int] = {}
        self._last_boot_ms: dict[tuple[int, int], int] = {}
        self._component_known = target_system is None  # an explicit system: its autopilot's component is learnt
        # newest GPS_RAW_INT of the vehicle: (fix_type, horizontal accuracy m or None), stamped on positions
        self._gps_quality: tuple[int | None, float | None] = (None, None)
        self._tlog_path = Path(tlog_path) if tlog_path else None
        self._tlog: Any = None
        self._listeners: list[Callable[[Any], None]] = []
        self._last_timesync = 0.0

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def status(self) -> LinkStatus:
        return self._status

    @property
    def state(self) -> VehicleState:
        with self._lock:
            return self._state

    @property
    def vehicle(self) -> Any:
        """The live ``dronekit.Vehicle`` (None for a replay or a closed link): dronekit's own API for extras.

        Its attributes (mode, armed, location, attitude, gps_0) are not filtered by system id; ``state`` is.
        """
        return self._vehicle

    def _set_status(self, s: LinkStatus, why: str = "") -> None:
        if s != self._status:
            log.info("drone %s link %s -> %s %s", self.vehicle_id, self._status.value, s.value, why)
            self._status = s

    def _check_url(self) -> None:
        """Reject malformed connection strings here: dronekit's UDP class calls ``sys.exit`` on them."""
        why = connection_problem(str(self.url))
        if why is not None:
            raise TelemetryError(f"drone {self.vehicle_id}: cannot open MAVLink connection: {why}")

    def _probe_tcp(self) -> None:
        """pymavlink's TCP client retries a refused connect with blocking sleeps and prints; try once first."""
        m = _NET_URL.match(str(self.url))
        if m is None or m.group(1).lower() != "tcp":
            return
        try:
            with socket.create_connection((m.group(2), int(m.group(3))), timeout=min(2.0, self.heartbeat_timeout_s)):
                pass
        except OSError as exc:
            raise TelemetryError(f"drone {self.vehicle_id}: cannot open MAVLink connection {self.url!r}: {exc}") from exc

    def _connect(self) -> None:
        """A new dronekit Vehicle on ``url`` with our listeners, its threads started (no waiting here)."""
        self._check_url()
        dk = dronekit()
        self._probe_tcp()
        try:
            vehicle = dk.connect(
                self.url,
                _initialize=False,  # initialize() waits for a PARAM_VALUE forever: open() waits with a deadline
                wait_ready=False,
                baud=self.baud,
                source_system=self.source_system,
                source_component=self.source_component,
                heartbeat_timeout=0,  # loss is detected here (a status), never by killing dronekit's reader
            )
        except TelemetryError:
            raise
        except ModuleNotFoundError as exc:  # pymavlink imports pyserial only when a serial link is opened
            missing = exc.name or str(exc)
            hint = "pyserial (pip install pyserial)" if missing.split(".")[0] == "serial" else f"the module {missing!r}"
            raise TelemetryError(f"drone {self.vehicle_id}: cannot open MAVLink connection {self.url!r}: a serial "
                                 f"link needs {hint}, which is not installed") from exc
        except (Exception, SystemExit) as exc:  # OSError, serial errors, ValueError, dronekit APIException
            raise TelemetryError(f"drone {self.vehicle_id}: cannot open MAVLink connection {self.url!r}: {exc}") from exc
        master = vehicle._master  # noqa: SLF001 - dronekit exposes no other handle on the pymavlink connection
        # bad bytes become BAD_DATA messages (counted) instead of exceptions inside dronekit's reader
        master.mav.robust_parsing = True
        if hasattr(master, "handle_eof"):
            # pymavlink's TCP client prints and returns b"" on EOF (a busy loop without autoreconnect): make a
            # closed peer an error, so dronekit's reader stops and this link reports the loss and reconnects
            def _closed(*_a, _url=self.url):
                raise ConnectionResetError(f"{_url}: peer closed the TCP connection")

            master.handle_eof = _closed
            master.handle_disconnect = _closed
        master.mav.file = _TeeWriter(master.mav.file, self._log_sent)
        if self.target_system is not None:
            vehicle._handler.target_system = self.target_system  # noqa: SLF001 - dronekit's target for sends
        vehicle.add_message_listener("*", self._on_dronekit_message)
        self._vehicle = vehicle
        vehicle._handler.start()  # noqa: SLF001 - what initialize() would have done first

    def _close_vehicle(self) -> None:
        v, self._vehicle = self._vehicle, None
        if v is None:
            return
        with contextlib.suppress(Exception):
            v.remove_message_listener("*", self._on_dronekit_message)
        h = v._handler  # noqa: SLF001
        writer = getattr(h, "mavlink_thread_out", None)
        # packets still queued (a MISSION_ACK, a stream request just before close) go out first, for at most 1 s
        flush_until = time.monotonic() + 1.0
        while (writer is not None and writer.is_alive() and not h.out_queue.empty()
               and time.monotonic() < flush_until):
            time.sleep(0.01)
        # MAVConnection.close() waits until its send queue is empty; when its writer thread is already gone (a
        # dead TCP peer) a packet queued after that would make it wait forever: stop the writer, drop the queue
        h._alive = False
        if writer is not None and writer.ident is not None and writer is not threading.current_thread():
            writer.join(timeout=2.0)
        h.out_queue = queue.Queue()
        try:
            v.close()  # joins dronekit's reader thread (dronekit2; 2.9.2 does not) and closes the socket / port
        except Exception as exc:  # an already-dead TCP socket
            log.debug("drone %s: closing dronekit connection: %s", self.vehicle_id, exc)
        reader = getattr(h, "mavlink_thread_in", None)
        if reader is not None and reader.ident is not None and reader is not threading.current_thread():
            reader.join(timeout=2.0)

    def _alive(self) -> bool:
        v = self._vehicle
        return v is not None and bool(getattr(v._handler, "_alive", False))  # noqa: SLF001

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    def _wait_ready(self, deadline: float, timeout_s: float) -> None:
        """dronekit's initialize() with a deadline: HEARTBEAT, a booted mode, then the first PARAM_VALUE."""
        if not self._heartbeat_seen.wait(self._remaining(deadline)):
            raise TelemetryError(
                f"drone {self.vehicle_id}: no vehicle HEARTBEAT on {self.url} within {timeout_s:.1f} s"
            )
        booted = lambda s: s.mode is not None and s.system_status not in (MAV_STATE_UNINIT, MAV_STATE_BOOT)  # noqa: E731
        while not booted(self.state) and self._remaining(deadline) > 0:
            self.wait_message(["HEARTBEAT"], None, min(0.2, self._remaining(deadline)))
        if not booted(self.state):
            raise TelemetryError(
                f"drone {self.vehicle_id}: vehicle {self.target_system} on {self.url} still booting (system "
                f"status {self.state.system_status}, mode {self.state.mode}) after {timeout_s:.1f} s"
            )
        if self.require_params and not self.params:
            tsys = self._require_target()
            with self.expect(["PARAM_VALUE"], lambda m: m.get_srcSystem() == tsys) as w:
                got = None
                while got is None and not self.params and self._remaining(deadline) > 0:
                    self.send("param_request_list_send", tsys, self.target_component)
                    got = w.get(min(1.0, self._remaining(deadline)))
            if got is None and not self.params:
                raise TelemetryError(
                    f"drone {self.vehicle_id}: vehicle {tsys} on {self.url} sends HEARTBEAT (mode "
                    f"{self.state.mode}) but no PARAM_VALUE within {timeout_s:.1f} s (PARAM_REQUEST_LIST "
                    "unanswered; dronekit's own connect() would wait forever here)"
                )
        if self._status == LinkStatus.CONNECTING:
            self._set_status(LinkStatus.CONNECTED, f"vehicle {self.target_system} ready")
        if self.stream_rate_hz:
            self.send("request_data_stream_send", self._require_target(), self.target_component,
                      MAV_DATA_STREAM_ALL, max(1, int(round(self.stream_rate_hz))), 1)

    def open(self, timeout_s: float = 10.0) -> "MavlinkLink":
        """Connect through dronekit and wait (bounded) until the vehicle is ready; start loss supervision.

        Ready = a vehicle HEARTBEAT, a mode past boot and (``require_params``) its first PARAM_VALUE, all within
        ``timeout_s``. Raises TelemetryError naming the URL and what never arrived; nothing is left running.
        """
        if self.is_replay:
            raise TelemetryError(f"drone {self.vehicle_id}: {self.url} is a log; use replay()")
        deadline = time.monotonic() + timeout_s
        self._stop.clear()
        self._heartbeat_seen.clear()
        if self._tlog_path is not None:  # before connecting: the log starts with the first packet received
            try:
                self._tlog_path.parent.mkdir(parents=True, exist_ok=True)
                self._tlog = open(self._tlog_path, "ab")
            except OSError as exc:
                raise TelemetryError(f"drone {self.vehicle_id}: cannot write telemetry log {self._tlog_path}: {exc}") from exc
        self._set_status(LinkStatus.CONNECTING)
        try:
            self._connect()
        except TelemetryError:
            self.close()
            raise
        try:
            self._send_timesync()
            self._wait_ready(deadline, timeout_s)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"mavlink-{self.vehicle_id}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)
        self._thread = None
        self._close_vehicle()
        with self._tlog_lock:
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

    # -- supervision: loss, reconnect, TIMESYNC ---------------------------------------------------------------

    def _on_dronekit_message(self, vehicle, _name: str, msg) -> None:
        if vehicle is self._vehicle:  # not a late message from a connection being closed (dronekit 2.9.2 does
            self._handle(msg)         # not join its reader thread on close)

    def _run(self) -> None:
        backoff = self.reconnect_backoff_s
        last_attempt = time.monotonic()
        while not self._stop.wait(0.05):
            now = time.monotonic()
            if self.gcs_heartbeat_hz > 0 and now - self._last_timesync >= 1.0 / self.gcs_heartbeat_hz:
                self._send_timesync()
            alive = self._alive()
            hb_age = None if self._last_hb_mono is None else now - self._last_hb_mono
            if self._status == LinkStatus.CONNECTED:
                if alive and (hb_age is None or hb_age <= self.heartbeat_timeout_s):
                    backoff = self.reconnect_backoff_s
                    continue
                if not alive:
                    err = getattr(getattr(self._vehicle, "_handler", None), "_death_error", None)
                    self._lose(f"connection closed ({err})" if err else "connection closed")
                else:
                    self._lose(f"no HEARTBEAT for {self.heartbeat_timeout_s:.1f} s")
            elif self._status == LinkStatus.LOST:
                # a fresh connection gets heartbeat_timeout_s (at least the backoff) to hear the vehicle
                if alive and now - last_attempt < max(self.heartbeat_timeout_s, backoff):
                    continue
            else:
                continue
            self._reconnect(backoff)
            last_attempt = time.monotonic()
            backoff = min(backoff * 2, 10.0)

    def _lose(self, why: str) -> None:
        if self._status != LinkStatus.LOST:
            self.counters.link_losses += 1
        self._set_status(LinkStatus.LOST, why)

    def _reconnect(self, backoff_s: float) -> None:
        self._close_vehicle()
        if self._stop.wait(backoff_s):
            return
        try:
            self._connect()
            self.counters.reconnects += 1
            self._send_timesync()
        except TelemetryError as exc:
            log.warning("%s", exc)

    # -- replay ---------------------------------------------------------------------------------------------

    def replay(self, speed: float | None = None, until_s: float | None = None) -> "MavlinkLink":
        """Feed the whole ``.tlog`` through the live code path (as fast as possible, or ``speed`` x real time).

        The log is read with pymavlink (no vehicle to talk to, so no dronekit); every message goes through the
        same ``_handle`` that dronekit's message listener calls on a live link.
        """
        if not self.is_replay:
            raise TelemetryError(f"drone {self.vehicle_id}: {self.url} is not a .tlog file")
        p = Path(self.url)
        if p.is_dir():
            raise TelemetryError(f"drone {self.vehicle_id}: telemetry log {p} is a directory, not a .tlog file")
        if not p.is_file():
            raise TelemetryError(f"drone {self.vehicle_id}: telemetry log {p} does not exist")
        try:
            with p.open("rb") as f:
                magic = f.read(7)
        except OSError as exc:
            raise TelemetryError(f"drone {self.vehicle_id}: cannot read telemetry log {p}: {exc}") from exc
        if magic.startswith(b"ULog"):
            raise TelemetryError(f"drone {self.vehicle_id}: {p} is a PX4 ULog flight log (.ulg), not a MAVLink "
                                 "telemetry log (.tlog, as QGroundControl or MAVProxy record it)")
        try:
            self._conn = mavutil().mavlink_connection(str(p), robust_parsing=True)
        except Exception as exc:  # noqa: BLE001 - pymavlink's fast (mmap) index gives up on a record it cannot decode
            log.info("drone %s: %s: indexed reader failed (%s); reading it record by record", self.vehicle_id, p, exc)
            try:
                self._conn = mavutil().mavlogfile(str(p), robust_parsing=True)
            except Exception as exc2:  # unreadable file
                raise TelemetryError(f"drone {self.vehicle_id}: cannot read telemetry log {p}: {exc2}") from exc2
        self._set_status(LinkStatus.CONNECTING)
        t_log0 = t_wall0 = None
        vehicles: set[int] = set()  # systems that sent a vehicle HEARTBEAT
        systems: set[int] = set()
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
                if msg.get_type() != "BAD_DATA":
                    systems.add(msg.get_srcSystem())
                    if (msg.get_type() == "HEARTBEAT" and msg.type not in NON_VEHICLE_TYPES
                            and msg.autopilot != MAV_AUTOPILOT_INVALID):
                        vehicles.add(msg.get_srcSystem())
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
        self._check_replayed(p, vehicles, systems)
        return self

    def _check_replayed(self, p: Path, vehicles: set[int], systems: set[int]) -> None:
        """A log that gave no vehicle is an error naming the file, not an empty summary."""
        n, bad = self.counters.messages, self.counters.bad_data
        where = f"drone {self.vehicle_id}: {p}"
        if n == 0:
            size = p.stat().st_size
            raise TelemetryError(f"{where}: no MAVLink messages ({'an empty file' if size == 0 else f'{size} bytes'}"
                                 f"{f', {bad} unreadable records' if bad else ''}): is this a .tlog?")
        if not vehicles:
            what = (f"mostly unreadable ({bad} unreadable records, {n} that decode)" if bad > n
                    else f"{n} MAVLink message(s) from system(s) {', '.join(map(str, sorted(systems)))}")
            raise TelemetryError(f"{where}: no vehicle HEARTBEAT: {what}: is this a .tlog of a vehicle?")
        if self.target_system is not None and self.target_system not in vehicles:
            others = sorted(systems - vehicles)
            raise TelemetryError(
                f"{where}: no vehicle with MAVLink system id {self.target_system} in this log; its vehicles: system(s) "
                f"{', '.join(map(str, sorted(vehicles)))}" + (f" (other systems: {', '.join(map(str, others))})"
                                                             if others else ""))

    # -- message handling (live and replay) ------------------------------------------------------------------

    def _is_vehicle_system(self, msg) -> bool:
        """From any component of the vehicle's system (its gimbal, camera, companion computer too)."""
        return self.target_system is not None and msg.get_srcSystem() == self.target_system

    def _is_vehicle(self, msg) -> bool:
        """From the vehicle's autopilot itself: the sender of vehicle state (position, attitude, GPS, mode).

        A gimbal or companion computer of the same system may send ATTITUDE (its own IMU) or other state
        messages; they must not enter the vehicle's timeline.
        """
        return (self.target_system is not None and self._component_known and msg.get_srcSystem() == self.target_system
                and msg.get_srcComponent() == self.target_component)

    def _sample_time_ns(self, msg, recv_ns: int) -> int:
        """The sender's boot time mapped to the receiver clock (minimum-latency offset), else receive time.

        Each component of the vehicle's system (autopilot, MAVLink gimbal, camera) stamps ``time_boot_ms`` with
        its own boot clock, so the offset (and the reboot check) is kept per (system, component).
        """
        boot_ms = getattr(msg, "time_boot_ms", None)
        if boot_ms is None or not self._is_vehicle_system(msg):
            return recv_ns
        key = (msg.get_srcSystem(), msg.get_srcComponent())
        boot_ns = int(boot_ms) * 1_000_000
        last = self._last_boot_ms.get(key)
        if last is not None and boot_ms + 5000 < last:
            log.info("drone %s: boot time of component %d went back (%d -> %d ms): rebooted", self.vehicle_id,
                     key[1], last, boot_ms)
            self._boot_offset_ns.pop(key, None)
            self._last_boot_ms[key] = boot_ms
        else:
            self._last_boot_ms[key] = max(boot_ms, last or 0)
        off = recv_ns - boot_ns
        best = self._boot_offset_ns.get(key)
        if best is None or off < best:
            self._boot_offset_ns[key] = best = off
        return boot_ns + best

    def _handle(self, msg) -> None:
        mtype = msg.get_type()
        if mtype == "BAD_DATA":
            self.counters.bad_data += 1
            return
        recv_ns = int(float(getattr(msg, "_timestamp", time.time())) * NS)
        self.counters.messages += 1
        self.counters.by_type[mtype] += 1
        if self._tlog is not None:
            self._log_tlog(msg.get_msgbuf(), recv_ns)
        try:
            handler = getattr(self, f"_on_{mtype.lower()}", None)
            if handler is not None:
                handler(msg, recv_ns)
        except (ValueError, TypeError, ZeroDivisionError, SeawatchError) as exc:
            # a message with impossible values (NaN quaternion, lat out of range, a camera with no image size)
            # is counted and skipped; it must not end a replay or starve the message's waiters
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
            v = self._vehicle
            if v is not None:
                v._handler.target_system = self.target_system  # noqa: SLF001 - dronekit's target for its sends
        if msg.get_srcSystem() != self.target_system:
            return
        if not self._component_known:  # target_system given: its first vehicle HEARTBEAT names the autopilot
            self.target_component = msg.get_srcComponent()
            self._component_known = True
        if msg.get_srcComponent() != self.target_component:
            return  # another vehicle-typed component of the same system is not the autopilot
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
        if not self.is_replay:
            self._last_hb_mono = time.monotonic()
            if self._status in (LinkStatus.CONNECTING, LinkStatus.LOST):
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
        if not (abs(lat) <= 90.0 and abs(lon) <= 180.0):  # int32 degE7 holds up to +-214.7 deg
            raise InputError(f"GLOBAL_POSITION_INT lat/lon ({lat}, {lon}) is not a valid position")
        amsl, rel = msg.alt / 1000.0, msg.relative_alt / 1000.0
        vel = (msg.vx / 100.0, msg.vy / 100.0, msg.vz / 100.0)
        t = self._sample_time_ns(msg, recv_ns)
        fix_type, h_acc_m = self._gps_quality
        self.timeline.add_position(PositionSample(t, lat, lon, rel if self.altitude == "relative" else amsl, vel,
                                                  fix_type=fix_type, h_acc_m=h_acc_m))
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
        h_acc_mm = getattr(msg, "h_acc", 0)  # MAVLink 2 extension; 0 = unknown
        self._gps_quality = (int(msg.fix_type), h_acc_mm / 1000.0 if h_acc_mm and h_acc_mm > 0 else None)
        self._update(gps_fix_type=msg.fix_type, gps_satellites=msg.satellites_visible,
                     gps_hdop=None if msg.eph == 65535 else msg.eph / 100.0)

    def _on_gimbal_device_attitude_status(self, msg, recv_ns: int) -> None:
        if not self._is_vehicle_system(msg):  # the gimbal is its own component
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
        if not self._is_vehicle_system(msg):
            return
        p, r, y = msg.pointing_a / 100.0, msg.pointing_b / 100.0, msg.pointing_c / 100.0
        self.timeline.add_gimbal(GimbalSample(recv_ns, r, p, y, "horizon"))
        self._update(gimbal_rpy_deg=(r, p, y), gimbal_frame="horizon")

    def _on_camera_information(self, msg, recv_ns: int) -> None:
        # 0 means unknown for each of these (a legal CAMERA_INFORMATION): no intrinsics from it then
        if (msg.focal_length > 0 and msg.sensor_size_h > 0 and msg.sensor_size_v > 0 and msg.resolution_h > 0
                and msg.resolution_v > 0):
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
        if not self._is_vehicle(msg):
            return
        lat, lon = msg.latitude / 1e7, msg.longitude / 1e7
        if lat == 0 and lon == 0:
            return  # no home yet, as GLOBAL_POSITION_INT's (0, 0)
        # int32 degE7 holds up to +-214.7 deg: an impossible home would pass every range check (a geodesic to it
        # is NaN), so it is bad data and the home known before (or none: tasks refused) stays
        if not (abs(lat) <= 90.0 and abs(lon) <= 180.0):
            raise InputError(f"HOME_POSITION lat/lon ({lat}, {lon}) is not a valid position")
        self._update(home=(lat, lon, msg.altitude / 1000.0))

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

    def _log_tlog(self, packet: bytes, t_ns: int) -> None:
        with self._tlog_lock:
            if self._tlog is None:
                return
            try:
                self._tlog.write(struct.pack(">Q", t_ns // 1000) + bytes(packet))
            except Exception as exc:  # disk full must not stop telemetry
                log.warning("drone %s: cannot write tlog %s: %s", self.vehicle_id, self._tlog_path, exc)

    def _log_sent(self, packet: bytes) -> None:
        """Every packet dronekit writes (its GCS heartbeats, our commands) goes into the tlog too."""
        if self._tlog is not None:
            self._log_tlog(packet, time.time_ns())

    @property
    def mav(self):
        """The pymavlink encoder of the live connection (dronekit's ``message_factory``); sends are logged."""
        v = self._vehicle
        if v is None:
            raise TelemetryError(f"drone {self.vehicle_id}: link {self.url} is not connected")
        return v.message_factory

    def send(self, fn_name: str, *args) -> None:
        """``link.send("command_long_send", ...)``: thread-safe send through dronekit's connection, logged."""
        with self._send_lock:
            v = self._vehicle
            if v is None or not self._alive():
                raise TelemetryError(f"drone {self.vehicle_id}: cannot send {fn_name}, link {self.url} is down")
            encode = getattr(v.message_factory, fn_name.removesuffix("_send") + "_encode")
            msg = encode(*args)
            try:
                v.send_mavlink(msg)
            except OSError as exc:
                raise TelemetryError(f"drone {self.vehicle_id}: send {fn_name} on {self.url} failed: {exc}") from exc

    def _send_timesync(self) -> None:
        self._last_timesync = time.monotonic()
        with contextlib.suppress(TelemetryError):
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
            # only the target's ACK: on a shared link another vehicle may acknowledge the same command number
            with self.expect(["COMMAND_ACK"], lambda m: m.command == command and m.get_srcSystem() == tsys) as w:
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
        """Set a parameter through dronekit's ``Vehicle.parameters`` (PARAM_SET re-sent each second until the
        vehicle's PARAM_VALUE echoes the value); returns the value the vehicle reports."""
        v = self._vehicle
        if v is None:
            raise TelemetryError(f"drone {self.vehicle_id}: cannot set {name}, link {self.url} is not open")
        key = name.upper()
        if not v.parameters.set(key, float(value), retries=max(1, math.ceil(timeout_s)), wait_ready=False):
            raise TelemetryError(f"drone {self.vehicle_id}: parameter {name} not confirmed within {timeout_s} s")
        return float(v.parameters.get(key, wait_ready=False))

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
