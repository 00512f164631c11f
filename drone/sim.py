"""A MAVLink vehicle simulator (pymavlink) that behaves like ArduCopter for what Seawatch uses.

It speaks to a ground station the way ArduPilot SITL does (``--out udp:127.0.0.1:14550`` = send to a GCS
listening there), so the same :class:`seawatch.drone.link.MavlinkLink` code runs against it, against SITL and
against a real vehicle:

* HEARTBEAT (QUADROTOR, ARDUPILOTMEGA, ArduCopter custom modes, armed flag), SYS_STATUS, GPS_RAW_INT,
  GLOBAL_POSITION_INT, ATTITUDE, SYSTEM_TIME, MISSION_CURRENT, HOME_POSITION, STATUSTEXT, and
  GIMBAL_DEVICE_ATTITUDE_STATUS from component 154 (gimbal v2, roll/pitch to the horizon, yaw relative to
  the vehicle);
* parameters (list / read / set), COMMAND_LONG with COMMAND_ACK (arm/disarm with ArduCopter's refusals,
  DO_SET_MODE, NAV_TAKEOFF in GUIDED, MISSION_START, RTL, LAND, gimbal pitch/yaw, REQUEST_MESSAGE for
  CAMERA_INFORMATION / HOME_POSITION / AUTOPILOT_VERSION, SET_MESSAGE_INTERVAL), SET_MODE, TIMESYNC;
* the mission protocol (upload with MISSION_REQUEST_INT, download, clear, set current; item 0 = home) and
  flying it in AUTO with simple kinematics (WPNAV_SPEED horizontally, climb/descent rates, yaw toward the
  next waypoint, nose-down pitch with speed), MISSION_ITEM_REACHED, then RTL: climb to RTL_ALT, fly home,
  land, disarm.

It also renders synthetic camera frames from its true pose (``capture()``): a deterministic sea texture
fixed to the ground and known targets at known lat/lon with true perspective, so detection + geotagging can be
tested end to end against ground truth. A target is a flat disc by default (no media needed), or a
:class:`Sprite` (a real object image with an alpha mask, e.g. a boat cut from a labelled photo with
:func:`sprite_from_manifest`) laid on the water at its lat/lon, scaled by ``length_m`` and turned by
``heading_deg``, with a faint shadow.

Run it: ``python -m seawatch.drone.sim --out udp:127.0.0.1:14550`` (``--speed 5`` for 5x time).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from seawatch.drone.geometry import (
    CameraIntrinsics,
    CameraPose,
    earth_radius_m,
    latlon_to_offsets,
    offsets_to_latlon,
    quat_from_euler_zyx,
    ray_sphere_hit,
)
from seawatch.drone.link import COPTER_MODES, mavutil
from seawatch.errors import InputError

log = logging.getLogger(__name__)

NS = 1_000_000_000

DEFAULT_PARAMS: dict[str, float] = {
    "SYSID_THISMAV": 1, "FRAME_CLASS": 1, "FRAME_TYPE": 1, "WPNAV_SPEED": 500, "WPNAV_SPEED_UP": 250,
    "WPNAV_SPEED_DN": 150, "WPNAV_RADIUS": 200, "RTL_ALT": 1500, "LAND_SPEED": 50, "LAND_SPEED_HIGH": 150,
    "MIS_RESTART": 0, "DISARM_DELAY": 10, "ARMING_CHECK": 1, "FENCE_ENABLE": 0, "MNT1_TYPE": 6, "CAM1_TYPE": 1,
    "ANGLE_MAX": 3000, "BATT_CAPACITY": 5000, "FS_GCS_ENABLE": 0, "AUTO_OPTIONS": 0, "GPS_TYPE": 1,
}

ARMABLE_MODES = {"STABILIZE", "ALT_HOLD", "LOITER", "GUIDED", "POSHOLD", "ACRO", "SPORT", "BRAKE"}
CMD_ACK_ACCEPTED, CMD_ACK_TEMP_REJECTED, CMD_ACK_DENIED, CMD_ACK_UNSUPPORTED, CMD_ACK_FAILED = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True, eq=False)
class Sprite:
    """An object image to lay on the sea surface (a boat cut from a photo).

    Attributes:
        bgr: ``(H, W, 3) uint8`` colours.
        alpha: ``(H, W) float32`` opacity in [0, 1] (1 = object, 0 = background).
        source: where it was cut from (file and box), for messages and reports.

    The image's x axis (left to right) is the object's long axis: it is drawn ``length_m`` long along
    ``SimTarget.heading_deg``, and ``length_m * H / W`` wide across it.
    """

    bgr: np.ndarray
    alpha: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        bgr, alpha = self.bgr, self.alpha
        if not (isinstance(bgr, np.ndarray) and bgr.ndim == 3 and bgr.shape[2] == 3 and bgr.dtype == np.uint8):
            raise InputError(f"sprite {self.source!r}: bgr must be (H, W, 3) uint8, got "
                             f"{getattr(bgr, 'shape', type(bgr))} {getattr(bgr, 'dtype', '')}")
        if not (isinstance(alpha, np.ndarray) and alpha.shape == bgr.shape[:2]):
            raise InputError(f"sprite {self.source!r}: alpha must be (H, W) = {bgr.shape[:2]}, got "
                             f"{getattr(alpha, 'shape', type(alpha))}")
        if min(bgr.shape[:2]) < 2:
            raise InputError(f"sprite {self.source!r}: image is too small ({bgr.shape[1]}x{bgr.shape[0]} px)")
        a = np.asarray(alpha, np.float32)
        if not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0:
            raise InputError(f"sprite {self.source!r}: alpha must be finite and in [0, 1]")
        object.__setattr__(self, "alpha", a)

    @property
    def aspect(self) -> float:
        """Height / width of the image (the object's width across / length along its axis)."""
        return self.bgr.shape[0] / self.bgr.shape[1]

    @classmethod
    def from_box(cls, image_bgr: np.ndarray, box_xyxy_px, mask: str = "grabcut", source: str = "",
                 seed: int = 0) -> "Sprite":
        """Cut the object in ``box_xyxy_px`` out of a photo.

        ``mask="grabcut"`` separates the object from the water around it (OpenCV GrabCut started from the box,
        with the photo around the box as background, OpenCV's RNG seeded with ``seed`` so cuts repeat);
        where that finds too little (under 15 % of the box) it falls back to ``"box"``: the whole box with
        feathered edges.
        """
        import cv2

        img = np.asarray(image_bgr)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f"sprite {source!r}: photo must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        try:
            x0, y0, x1, y1 = (float(v) for v in box_xyxy_px)
        except (TypeError, ValueError):
            raise InputError(f"sprite {source!r}: box must be 4 numbers x0, y0, x1, y1, got {box_xyxy_px!r}") from None
        x0, y0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
        x1, y1 = min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))
        if x1 - x0 < 4 or y1 - y0 < 4:
            raise InputError(f"sprite {source!r}: box {box_xyxy_px!r} is smaller than 4x4 px inside the "
                             f"{w}x{h} photo")
        if mask not in ("grabcut", "box"):
            raise InputError(f"sprite {source!r}: mask must be 'grabcut' or 'box', got {mask!r}")
        bw, bh = x1 - x0, y1 - y0
        alpha = None
        if mask == "grabcut":
            # GrabCut needs background around the box: work on the box plus a margin of the photo
            mx, my = max(4, bw // 3), max(4, bh // 3)
            cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
            work = np.ascontiguousarray(img[cy0:cy1, cx0:cx1])
            gc = np.zeros(work.shape[:2], np.uint8)
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(int(seed))
            try:
                cv2.grabCut(work, gc, (x0 - cx0, y0 - cy0, bw, bh), bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
            except cv2.error as exc:
                log.warning("sprite %s: GrabCut failed (%s); using the whole box", source, exc)
            else:
                fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
                fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
                # drop specks GrabCut left apart from the object (a gull, a buoy): keep the big parts
                k, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
                if k > 2:
                    areas = stats[1:, cv2.CC_STAT_AREA]
                    fg = np.isin(lab, 1 + np.flatnonzero(areas >= 0.05 * areas.max())).astype(np.uint8)
                if fg.mean() >= 0.15:
                    alpha = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 0.8)
                else:
                    log.warning("sprite %s: GrabCut kept %.0f %% of the box; using the whole box", source, 100 * fg.mean())
        if alpha is None:
            # the whole box, opaque inside and fading over its outer 10 % (no hard rectangle on the sea)
            ry = np.minimum(np.arange(bh) + 0.5, bh - np.arange(bh) - 0.5) / max(1.0, 0.1 * bh)
            rx = np.minimum(np.arange(bw) + 0.5, bw - np.arange(bw) - 0.5) / max(1.0, 0.1 * bw)
            alpha = np.clip(np.minimum(ry[:, None], rx[None, :]), 0.0, 1.0).astype(np.float32)
        return cls(np.ascontiguousarray(img[y0:y1, x0:x1]), np.clip(alpha, 0.0, 1.0).astype(np.float32), source)


@dataclass(frozen=True, slots=True)
class SimTarget:
    """A known object on the surface at lat/lon.

    Without a sprite: a disc of ``radius_m`` drawn in ``color_bgr``. With a :class:`Sprite`: the image laid
    flat on the water, centred on lat/lon, ``length_m`` long along ``heading_deg`` (the compass direction of
    the sprite's left-to-right axis; 90 = east, so a north-up camera sees the photo upright) and
    ``length_m * sprite.aspect`` wide, with a faint shadow when ``shadow``.
    """

    name: str
    lat_deg: float
    lon_deg: float
    radius_m: float = 2.0
    color_bgr: tuple[int, int, int] = (20, 20, 235)
    sprite: Sprite | None = None
    length_m: float | None = None
    heading_deg: float = 90.0
    shadow: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat_deg) and -90 <= self.lat_deg <= 90 and math.isfinite(self.lon_deg)):
            raise InputError(f"target {self.name!r}: lat/lon ({self.lat_deg}, {self.lon_deg}) is not a position")
        if not math.isfinite(self.heading_deg):
            raise InputError(f"target {self.name!r}: heading_deg must be finite")
        if self.sprite is not None:
            if not isinstance(self.sprite, Sprite):
                raise InputError(f"target {self.name!r}: sprite must be a Sprite, got {type(self.sprite).__name__}")
            if self.length_m is None or not (math.isfinite(self.length_m) and self.length_m > 0):
                raise InputError(f"target {self.name!r}: a sprite needs length_m > 0 (got {self.length_m})")
        elif not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise InputError(f"target {self.name!r}: radius_m must be > 0 (got {self.radius_m})")

    @property
    def footprint_m(self) -> tuple[float, float]:
        """(along, across) extent on the water in metres (a disc: its diameter both ways)."""
        if self.sprite is None or self.length_m is None:
            return 2 * self.radius_m, 2 * self.radius_m
        return float(self.length_m), float(self.length_m) * self.sprite.aspect


def _yolo_rows(label_path, where: str) -> list[tuple[int, float, float, float, float]]:
    rows = []
    try:
        text = label_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{where}: cannot read label file {label_path}: {exc}") from None
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            c, x, y, bw, bh = int(parts[0]), *(float(v) for v in parts[1:5])
        except (ValueError, TypeError):
            raise InputError(f"{where}: {label_path.name} line {n} is not a YOLO row: {line!r}") from None
        rows.append((c, x, y, bw, bh))
    return rows


def sprite_from_manifest(media_dir, image_file: str, index: int = 0, *, mask: str = "grabcut",
                         class_names: Sequence[str] = ("sea", "watercraft", "boat", "vessel")) -> Sprite:
    """Cut the ``index``-th largest labelled watercraft out of a photo of a media manifest (read in place).

    Args:
        media_dir: the folder holding ``MANIFEST.json`` (e.g. ``../shared/media``).
        image_file: the image's ``file`` in the manifest (``A_boats/....jpg``).
        index: 0 = the largest labelled box of the watercraft class, 1 = the next, ...
        mask: ``"grabcut"`` or ``"box"`` (see :meth:`Sprite.from_box`).
        class_names: the watercraft class is the first of ``ground_truth.label_classes`` whose name contains
            one of these words (the shore live-cam labels call it ``sea (watercraft)``).

    Raises:
        InputError: the manifest, the entry, its label file or the box is missing or malformed (the message
        names which).
    """
    import json
    from pathlib import Path

    import cv2

    media = Path(media_dir)
    manifest = media / "MANIFEST.json"
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{manifest}: cannot read the media manifest: {exc}") from None
    if isinstance(entries, dict):
        entries = entries.get("files", entries.get("entries", []))
    entry = next((e for e in entries if isinstance(e, dict) and e.get("file") == image_file), None)
    where = f"{manifest}: {image_file}"
    if entry is None:
        raise InputError(f"{where}: no such entry in the manifest")
    gt = entry.get("ground_truth") or {}
    label_file = gt.get("label_file")
    if not label_file:
        raise InputError(f"{where}: the entry has no ground_truth.label_file (YOLO labels)")
    classes = gt.get("label_classes") or {}
    wanted = [int(k) for k, v in classes.items() if any(w in str(v).lower() for w in class_names)]
    if not wanted:
        raise InputError(f"{where}: no watercraft class in label_classes {classes}")
    cls_id = wanted[0]
    img = cv2.imread(str(media / image_file), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{where}: cannot read the image {media / image_file}")
    h, w = img.shape[:2]
    rows = [r for r in _yolo_rows(media / label_file, where) if r[0] == cls_id]
    rows.sort(key=lambda r: -r[3] * r[4])
    if not 0 <= index < len(rows):
        raise InputError(f"{where}: box index {index} out of range ({len(rows)} watercraft boxes in {label_file})")
    _, cx, cy, bw, bh = rows[index]
    box = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
    return Sprite.from_box(img, box, mask=mask, source=f"{image_file}#{index}")


@dataclass
class _Item:
    seq: int
    frame: int
    command: int
    params: tuple[float, float, float, float]
    lat_deg: float
    lon_deg: float
    alt_m: float
    autocontinue: int = 1


class SimVehicle:
    """A simulated ArduCopter with a gimbal camera.

    Args:
        out: where to send (``udpout:host:port``; ``udp:host:port`` is read as SITL's ``--out`` = udpout),
            or ``tcpin:host:port`` to serve a GCS over TCP.
        home: (lat_deg, lon_deg, amsl_m) of the home / launch point.
        speed: simulation time per wall-clock second (5 = five times faster).
        telemetry_hz: GLOBAL_POSITION_INT / ATTITUDE / gimbal rate.
        camera: intrinsics for rendered frames and CAMERA_INFORMATION.
        targets: objects drawn in rendered frames.
    """

    def __init__(
        self,
        out: str = "udpout:127.0.0.1:14550",
        home: tuple[float, float, float] = (54.0, 7.0, 0.0),
        speed: float = 1.0,
        telemetry_hz: float = 10.0,
        physics_hz: float = 50.0,
        camera: CameraIntrinsics | None = None,
        targets: Sequence[SimTarget] = (),
        system_id: int = 1,
        gimbal_pitch_deg: float = -90.0,
    ) -> None:
        if speed <= 0 or telemetry_hz <= 0 or physics_hz <= 0:
            raise InputError("simulator: speed, telemetry_hz and physics_hz must be positive")
        if out.startswith("udp:"):
            out = "udpout:" + out[4:]
        self.out = out
        self.home = home
        self.speed = speed
        self.telemetry_hz = telemetry_hz
        self.physics_hz = physics_hz
        self.camera = camera or CameraIntrinsics.from_fov(640, 480, 70.0)
        self.targets = list(targets)
        self.system_id = system_id
        self.params = dict(DEFAULT_PARAMS)
        self.params["SYSID_THISMAV"] = system_id
        # state (NED offsets from home in metres, down positive -> we keep height above home `h`)
        self.n = 0.0
        self.e = 0.0
        self.h = 0.0
        self.vn = self.ve = self.vd = 0.0
        self.yaw_deg = 0.0
        self.pitch_deg = 0.0
        self.roll_deg = 0.0
        self.yaw_rate_deg_s = 0.0
        self.gimbal_pitch_deg = gimbal_pitch_deg
        self.gimbal_yaw_deg = 0.0
        self.mode = "STABILIZE"
        self.armed = False
        # ArduPilot keeps home as mission item 0: an "empty" mission has one item
        self.mission: list[_Item] = [self._home_item()]
        # the item the mission goes on from, kept like ArduPilot's: an upload does not move it (MISSION_COUNT only
        # truncates), MISSION_SET_CURRENT and MISSION_CLEAR_ALL do, and MISSION_START / AUTO resume there unless
        # MIS_RESTART is 1 or the mission had completed
        self.current_seq = 0
        self.mission_complete = False
        self.mission_running = False
        self.hold_until_s: float | None = None
        self.guided_target: tuple[float, float, float] | None = None  # n, e, h
        self.rtl_phase: str | None = None
        self.speed_override_m_s: float | None = None
        self.reached: list[int] = []
        self.silent = False  # stop sending (link-loss tests); still receives
        self.battery_pct = 87  # SYS_STATUS.battery_remaining (-1 = no battery monitor)
        self.failsafe = False  # a failsafe is active: HEARTBEAT system_status CRITICAL, as ArduCopter reports it
        self._upload: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._t0_mono = 0.0
        self._sim_s = 0.0
        self._wall_ns = 0
        self._next_tel_s = 0.0
        self._next_slow_s = 0.0
        self._msg_rates: dict[int, float] = {}
        self.counters = {"received": 0, "bad": 0, "sent": 0}

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> "SimVehicle":
        mu = mavutil()
        self._conn = mu.mavlink_connection(self.out, source_system=self.system_id, source_component=1)
        self._t0_mono = time.monotonic()
        self._wall_ns = self._wall0_ns = time.time_ns()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-vehicle", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._thread = None
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing an already-dead socket
                pass
        self._conn = None

    def __enter__(self) -> "SimVehicle":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def boot_ms(self) -> int:
        return int(self._sim_s * 1000)

    def _run(self) -> None:
        dt_wall = 1.0 / self.physics_hz
        last = time.monotonic()
        while not self._stop.is_set():
            # drain incoming messages
            while True:
                try:
                    msg = self._conn.recv_match(blocking=False)
                except Exception as exc:
                    log.debug("sim: receive failed: %s", exc)
                    msg = None
                if msg is None:
                    break
                if msg.get_type() == "BAD_DATA":
                    self.counters["bad"] += 1
                    continue
                self.counters["received"] += 1
                try:
                    self._on_message(msg)
                except Exception:  # a malformed request must not stop the vehicle
                    log.exception("sim: handling %s failed", msg.get_type())
            now = time.monotonic()
            with self._lock:
                self._physics((now - last) * self.speed)
                self._sim_s += (now - last) * self.speed
                # the state's UTC time from the same monotonic reading as its boot time, so a thread
                # switch between two clock reads cannot put the truth and the telemetry apart
                self._wall_ns = self._wall0_ns + int((now - self._t0_mono) * NS)
                last = now
            if self._sim_s >= self._next_tel_s:
                self._next_tel_s = self._sim_s + 1.0 / self.telemetry_hz
                self._send_fast()
            if self._sim_s >= self._next_slow_s:
                self._next_slow_s = self._sim_s + 1.0
                self._send_slow()
            self._stop.wait(max(0.0, dt_wall - (time.monotonic() - now)))

    # -- sending --------------------------------------------------------------------------------------------

    def _send(self, fn: str, *args, component: int = 1) -> None:
        if self.silent or self._conn is None:
            return
        mav = self._conn.mav
        old = mav.srcComponent
        mav.srcComponent = component
        try:
            getattr(mav, fn)(*args)
            self.counters["sent"] += 1
        except OSError as exc:  # GCS not there yet (tcp) or port unreachable (udp)
            log.debug("sim: send %s failed: %s", fn, exc)
        finally:
            mav.srcComponent = old

    def send_garbage(self, n_bytes: int = 64, seed: int = 0) -> None:
        """Write random bytes on the link (malformed-MAVLink tests)."""
        rng = np.random.default_rng(seed)
        data = bytes(rng.integers(0, 256, n_bytes, dtype=np.uint8))
        data = data.replace(b"\xfd", b"\x00").replace(b"\xfe", b"\x00")
        # a plausible v2 start byte with a broken body and CRC
        self._conn.write(b"\xfd\x09\x00\x00\x07\x01\x01\x00\x00\x00" + data)

    def _lat_lon_amsl(self) -> tuple[float, float, float]:
        lat, lon = offsets_to_latlon(self.home[0], self.home[1], self.n, self.e)
        return float(lat[0]), float(lon[0]), self.home[2] + self.h

    def _base_mode(self) -> int:
        return 1 | 128 * int(self.armed) | 16 | 8 | 4  # custom mode, stabilize/guided/auto-capable flags

    def _send_fast(self) -> None:
        with self._lock:
            lat, lon, amsl = self._lat_lon_amsl()
            bms = self.boot_ms
            yaw = self.yaw_deg
            args_pos = (bms, int(round(lat * 1e7)), int(round(lon * 1e7)), int(round(amsl * 1000)),
                        int(round(self.h * 1000)), int(round(self.vn * 100)), int(round(self.ve * 100)),
                        int(round(self.vd * 100)), int(round((yaw % 360) * 100)))
            args_att = (bms, math.radians(self.roll_deg), math.radians(self.pitch_deg),
                        math.radians(((yaw + 180) % 360) - 180), 0.0, 0.0, math.radians(self.yaw_rate_deg_s))
            q = quat_from_euler_zyx(0.0, math.radians(self.gimbal_pitch_deg), math.radians(self.gimbal_yaw_deg))
        self._send("global_position_int_send", *args_pos)
        self._send("attitude_send", *args_att)
        # GIMBAL_DEVICE_FLAGS_ROLL_LOCK | PITCH_LOCK | YAW_IN_VEHICLE_FRAME: stabilised, yaw follows the vehicle
        self._send("gimbal_device_attitude_status_send", 0, 0, bms, 4 | 8 | 32, [float(v) for v in q],
                   math.nan, math.nan, math.nan, 0, math.nan, math.nan, 0, component=154)

    def _send_slow(self) -> None:
        with self._lock:
            lat, lon, amsl = self._lat_lon_amsl()
            custom = {v: k for k, v in COPTER_MODES.items()}[self.mode]
            status = 5 if self.failsafe else 4 if self.armed else 3  # CRITICAL / ACTIVE / STANDBY
            battery = int(self.battery_pct)
            bms = self.boot_ms
            seq = self.current_seq
            total = len(self.mission)
        self._send("heartbeat_send", 2, 3, self._base_mode(), custom, status)
        self._send("heartbeat_send", 26, 8, 0, 0, 4, component=154)  # the gimbal announces itself
        self._send("sys_status_send", 0, 0, 0, 500, 15800, 1200, battery, 0, 0, 0, 0, 0, 0)
        self._send("gps_raw_int_send", bms * 1000, 3, int(lat * 1e7), int(lon * 1e7), int(amsl * 1000), 80, 120,
                   0, 65535, 14)
        self._send("system_time_send", self._wall_ns // 1000, bms)
        self._send("mission_current_send", seq, total, 0, 0)

    def _statustext(self, text: str, severity: int = 6) -> None:
        self._send("statustext_send", severity, text.encode()[:50])

    def _ack(self, command: int, result: int) -> None:
        self._send("command_ack_send", command, result)

    # -- receiving ------------------------------------------------------------------------------------------

    def _on_message(self, msg) -> None:
        t = msg.get_type()
        if t == "HEARTBEAT":
            return
        # like ArduPilot: a command or mission message addressed to another vehicle is not for us (0 = broadcast)
        target = getattr(msg, "target_system", 0)
        if target not in (0, self.system_id):
            return
        handler = getattr(self, f"_rx_{t.lower()}", None)
        if handler is not None:
            with self._lock:
                handler(msg)

    def _rx_timesync(self, msg) -> None:
        if msg.tc1 == 0:
            self._send("timesync_send", int(self._sim_s * NS), msg.ts1)

    def _param_value(self, name: str, index: int) -> None:
        self._send("param_value_send", name.encode(), float(self.params[name]), 9, len(self.params), index)

    def _rx_param_request_list(self, msg) -> None:
        for i, name in enumerate(self.params):
            self._param_value(name, i)

    def _rx_param_request_read(self, msg) -> None:
        names = list(self.params)
        if 0 <= msg.param_index < len(names):
            name = names[msg.param_index]
        else:
            name = msg.param_id if isinstance(msg.param_id, str) else msg.param_id.decode(errors="replace")
            name = name.rstrip("\x00")
        if name in self.params:
            self._param_value(name, names.index(name))

    def _rx_param_set(self, msg) -> None:
        name = (msg.param_id if isinstance(msg.param_id, str) else msg.param_id.decode(errors="replace")).rstrip("\x00")
        if name in self.params and math.isfinite(msg.param_value):
            self.params[name] = float(msg.param_value)
            self._param_value(name, list(self.params).index(name))

    def _rx_request_data_stream(self, msg) -> None:
        # ArduPilot sets its SRx stream rates; streams ALL (0), POSITION (6) and EXTRA1 (10) carry what we send fast
        if msg.req_stream_id in (0, 6, 10) and msg.start_stop and msg.req_message_rate > 0:
            self.telemetry_hz = float(msg.req_message_rate)

    def _rx_set_mode(self, msg) -> None:
        self._set_mode(int(msg.custom_mode))

    def _set_mode(self, number: int) -> int:
        name = COPTER_MODES.get(number)
        if name is None or name not in {"STABILIZE", "ALT_HOLD", "AUTO", "GUIDED", "LOITER", "RTL", "LAND",
                                        "BRAKE", "POSHOLD", "SMART_RTL"}:
            return CMD_ACK_UNSUPPORTED
        if name == "AUTO" and not self.mission[1:]:
            self._statustext("Mode change to AUTO failed: no mission", 3)
            return CMD_ACK_FAILED
        self.mode = name
        self.hold_until_s = None
        if name == "AUTO":
            self.mission_running = self.armed and self.h > 0.5
            self._start_or_resume()
        elif name in ("RTL", "SMART_RTL"):
            self.mode = "RTL"
            self.rtl_phase = "climb"
        elif name in ("LOITER", "BRAKE", "POSHOLD", "GUIDED"):
            self.guided_target = (self.n, self.e, self.h)
        return CMD_ACK_ACCEPTED

    def _rx_command_long(self, msg) -> None:
        c = msg.command
        p = (msg.param1, msg.param2, msg.param3, msg.param4, msg.param5, msg.param6, msg.param7)
        if c == 400:  # COMPONENT_ARM_DISARM
            if p[0] == 1:
                if self.mode not in ARMABLE_MODES:
                    self._statustext(f"Arm: Mode not armable ({self.mode})", 3)
                    return self._ack(c, CMD_ACK_FAILED)
                self.armed = True
                return self._ack(c, CMD_ACK_ACCEPTED)
            if self.h > 0.5 and p[1] != 21196:
                return self._ack(c, CMD_ACK_FAILED)  # ArduCopter refuses to disarm in flight unless forced
            self.armed = False
            self.mission_running = False
            return self._ack(c, CMD_ACK_ACCEPTED)
        if c == 176:  # DO_SET_MODE: param2 = ArduPilot custom mode
            return self._ack(c, self._set_mode(int(p[1])))
        if c == 22:  # NAV_TAKEOFF (GUIDED, armed)
            if self.mode != "GUIDED" or not self.armed or not p[6] > 0:
                return self._ack(c, CMD_ACK_FAILED)
            self.guided_target = (self.n, self.e, float(p[6]))
            return self._ack(c, CMD_ACK_ACCEPTED)
        if c == 300:  # MISSION_START
            if not self.armed or not self.mission[1:]:
                return self._ack(c, CMD_ACK_FAILED)
            self.mode = "AUTO"
            if p[0] >= 1:
                self.current_seq = min(int(p[0]), len(self.mission) - 1)
                self.mission_complete = False
            else:
                self._start_or_resume()
            self.mission_running = True
            self.hold_until_s = None
            return self._ack(c, CMD_ACK_ACCEPTED)
        if c == 20:  # NAV_RETURN_TO_LAUNCH
            return self._ack(c, self._set_mode(6))
        if c == 21:  # NAV_LAND
            return self._ack(c, self._set_mode(9))
        if c in (1000, 205):  # DO_GIMBAL_MANAGER_PITCHYAW / DO_MOUNT_CONTROL
            pitch, yaw = (p[0], p[1]) if c == 1000 else (p[0], p[2])
            if math.isfinite(pitch):
                self.gimbal_pitch_deg = max(-90.0, min(30.0, pitch))
            if math.isfinite(yaw):
                self.gimbal_yaw_deg = yaw
            return self._ack(c, CMD_ACK_ACCEPTED)
        if c == 511:  # SET_MESSAGE_INTERVAL
            if int(p[0]) in (33, 30, 285) and p[1] > 0:
                self.telemetry_hz = 1e6 / p[1]
            return self._ack(c, CMD_ACK_ACCEPTED)
        if c == 512:  # REQUEST_MESSAGE
            self._ack(c, CMD_ACK_ACCEPTED)
            return self._send_requested(int(p[0]))
        if c == 520:  # REQUEST_AUTOPILOT_CAPABILITIES
            self._ack(c, CMD_ACK_ACCEPTED)
            return self._send_requested(148)
        return self._ack(c, CMD_ACK_UNSUPPORTED)

    def _send_requested(self, msg_id: int) -> None:
        if msg_id == 259:  # CAMERA_INFORMATION: a 1/2.3" sensor scaled to the rendered resolution
            k = self.camera
            sensor_w_mm = 6.17
            focal_mm = k.fx_px / k.width_px * sensor_w_mm
            sensor_h_mm = focal_mm / k.fy_px * k.height_px
            self._send("camera_information_send", self.boot_ms, b"Seawatch".ljust(32, b"\0"),
                       b"SimCam".ljust(32, b"\0"), 1, focal_mm, sensor_w_mm, sensor_h_mm, k.width_px, k.height_px,
                       0, 0, 0, b"", component=100)
        elif msg_id == 242:
            self._send("home_position_send", int(self.home[0] * 1e7), int(self.home[1] * 1e7),
                       int(self.home[2] * 1000), 0.0, 0.0, 0.0, [1.0, 0.0, 0.0, 0.0], 0.0, 0.0, 0.0)
        elif msg_id == 148:
            self._send("autopilot_version_send", 0xFFFF, 0x04050700, 0, 0, 0, b"\0" * 8, b"\0" * 8, b"\0" * 8,
                       0, 0, 0)

    # -- mission protocol (vehicle side) ---------------------------------------------------------------------

    def _start_or_resume(self) -> None:
        """ArduPilot's AP_Mission::start_or_resume: from the first item after home when MIS_RESTART is 1, the mission
        had completed or never ran; else from the current item (where it was stopped, or where MISSION_SET_CURRENT
        put it), which an upload since has not moved."""
        if self.params.get("MIS_RESTART", 0) or self.mission_complete or not 1 <= self.current_seq < len(self.mission):
            self.current_seq = 1 if len(self.mission) > 1 else 0
        self.mission_complete = False

    def _home_item(self) -> _Item:
        return _Item(0, 0, 16, (0.0, 0.0, 0.0, 0.0), self.home[0], self.home[1], self.home[2])

    def _rx_mission_clear_all(self, msg) -> None:
        self.mission = [self._home_item()]
        self.current_seq = 0
        self.mission_running = False
        self._send("mission_ack_send", msg.get_srcSystem(), msg.get_srcComponent(), 0, 0)

    def _rx_mission_count(self, msg) -> None:
        if getattr(msg, "mission_type", 0) != 0:
            return self._send("mission_ack_send", msg.get_srcSystem(), msg.get_srcComponent(), 4, msg.mission_type)
        if msg.count == 0:
            self.mission = [self._home_item()]
            return self._send("mission_ack_send", msg.get_srcSystem(), msg.get_srcComponent(), 0, 0)
        self._upload = {"count": msg.count, "items": {}, "src": (msg.get_srcSystem(), msg.get_srcComponent())}
        self._send("mission_request_int_send", msg.get_srcSystem(), msg.get_srcComponent(), 0, 0)

    def _rx_mission_item_int(self, msg) -> None:
        self._store_item(msg, msg.x / 1e7, msg.y / 1e7)

    def _rx_mission_item(self, msg) -> None:
        self._store_item(msg, msg.x, msg.y)

    def _store_item(self, msg, lat: float, lon: float) -> None:
        up = self._upload
        if up is None:
            return
        expected = len(up["items"])
        if msg.seq != expected:
            # out of sequence: ask again for the one we need (ArduPilot does the same)
            return self._send("mission_request_int_send", *up["src"], expected, 0)
        if msg.frame not in (0, 3, 5, 6, 2) or (msg.command < 100 and not (-90 <= lat <= 90)):
            self._upload = None
            return self._send("mission_ack_send", *up["src"], 5, 0)  # MAV_MISSION_UNSUPPORTED_FRAME / invalid
        up["items"][msg.seq] = _Item(msg.seq, msg.frame, msg.command, (msg.param1, msg.param2, msg.param3, msg.param4),
                                     lat, lon, float(msg.z), msg.autocontinue)
        if len(up["items"]) == up["count"]:
            # like ArduPilot, item 0 is always the vehicle's own home, whatever was uploaded there
            self.mission = [self._home_item()] + [up["items"][i] for i in range(1, up["count"])]
            self._upload = None
            self._send("mission_ack_send", *up["src"], 0, 0)
            self._statustext("Flight plan received")
        else:
            self._send("mission_request_int_send", *up["src"], len(up["items"]), 0)

    def _rx_mission_request_list(self, msg) -> None:
        self._send("mission_count_send", msg.get_srcSystem(), msg.get_srcComponent(), len(self.mission), 0)

    def _rx_mission_request_int(self, msg) -> None:
        if 0 <= msg.seq < len(self.mission):
            it = self.mission[msg.seq]
            self._send("mission_item_int_send", msg.get_srcSystem(), msg.get_srcComponent(), it.seq, it.frame,
                       it.command, int(it.seq == self.current_seq), it.autocontinue, *it.params,
                       int(round(it.lat_deg * 1e7)), int(round(it.lon_deg * 1e7)), it.alt_m, 0)

    _rx_mission_request = _rx_mission_request_int

    def _rx_mission_set_current(self, msg) -> None:
        if 0 <= msg.seq < len(self.mission):
            self.current_seq = max(1, msg.seq) if len(self.mission) > 1 else 0  # 0 means "from the start"
            self.mission_complete = False
            self.hold_until_s = None
            self._send("mission_current_send", msg.seq, len(self.mission), 0, 0)

    # -- physics --------------------------------------------------------------------------------------------

    def _horizontal_speed(self) -> float:
        return self.speed_override_m_s or self.params["WPNAV_SPEED"] / 100.0

    def _fly_towards(self, tn: float, te: float, th: float, dt: float) -> float:
        """Move toward a target (n, e, height above home); returns the remaining 3D distance."""
        dn, de, dh = tn - self.n, te - self.e, th - self.h
        dist_h = math.hypot(dn, de)
        v = self._horizontal_speed()
        step = min(dist_h, v * dt)
        if dist_h > 1e-6:
            self.vn, self.ve = dn / dist_h * step / dt, de / dist_h * step / dt
            self.n += dn / dist_h * step
            self.e += de / dist_h * step
            if dist_h > 1.0:
                target_yaw = math.degrees(math.atan2(de, dn))
                diff = ((target_yaw - self.yaw_deg + 180) % 360) - 180
                turn = max(-90 * dt, min(90 * dt, diff))
                self.yaw_deg = ((self.yaw_deg + turn + 180) % 360) - 180
                self.yaw_rate_deg_s = turn / dt
            else:
                self.yaw_rate_deg_s = 0.0
        else:
            self.vn = self.ve = 0.0
            self.yaw_rate_deg_s = 0.0
        climb = self.params["WPNAV_SPEED_UP"] / 100.0 if dh > 0 else self.params["WPNAV_SPEED_DN"] / 100.0
        vstep = max(-climb * dt, min(climb * dt, dh))
        self.h += vstep
        self.vd = -vstep / dt
        self.pitch_deg = -min(15.0, 2.0 * math.hypot(self.vn, self.ve))
        return math.sqrt((tn - self.n) ** 2 + (te - self.e) ** 2 + (th - self.h) ** 2)

    def _item_target(self, it: _Item) -> tuple[float, float, float]:
        if it.lat_deg == 0 and it.lon_deg == 0:
            n, e = self.n, self.e
        else:
            nn, ee = latlon_to_offsets(self.home[0], self.home[1], it.lat_deg, it.lon_deg)
            n, e = float(nn[0]), float(ee[0])
        h = it.alt_m - self.home[2] if it.frame in (0, 5) else it.alt_m
        return n, e, h

    def _land(self, dt: float) -> None:
        rate = self.params["LAND_SPEED_HIGH"] / 100.0 if self.h > 10 else self.params["LAND_SPEED"] / 100.0 * 3
        self.vn = self.ve = 0.0
        self.h = max(0.0, self.h - rate * dt)
        self.vd = rate if self.h > 0 else 0.0
        if self.h <= 0.0 and self.armed:
            self.armed = False
            self.mission_running = False
            self._statustext("Disarming motors")

    def _physics(self, dt: float) -> None:
        if dt <= 0:
            return
        if not self.armed:
            self.vn = self.ve = self.vd = 0.0
            self.pitch_deg = 0.0
            self.yaw_rate_deg_s = 0.0
            return
        if self.mode == "AUTO" and self.mission_running:
            self._auto(dt)
        elif self.mode == "RTL":
            self._rtl(dt)
        elif self.mode == "LAND":
            self._land(dt)
        elif self.mode in ("GUIDED", "LOITER", "BRAKE", "POSHOLD") and self.guided_target is not None:
            self._fly_towards(*self.guided_target, dt)
        else:
            self.vn = self.ve = self.vd = 0.0

    def _auto(self, dt: float) -> None:
        if self.current_seq >= len(self.mission):
            self.vn = self.ve = self.vd = 0.0  # mission complete: hold position
            return
        it = self.mission[self.current_seq]
        if it.command == 22:  # NAV_TAKEOFF
            remaining = self._fly_towards(self.n, self.e, it.alt_m, dt)
            done = remaining < 0.3
        elif it.command in (16, 17, 19):  # NAV_WAYPOINT / LOITER_UNLIM / LOITER_TIME
            remaining = self._fly_towards(*self._item_target(it), dt)
            radius = self.params["WPNAV_RADIUS"] / 100.0
            done = False
            if remaining < max(0.3, min(radius, 1.0)):
                hold = it.params[0] if it.command in (16, 19) else math.inf
                if self.hold_until_s is None:
                    self.hold_until_s = self._sim_s + hold
                done = self._sim_s >= self.hold_until_s
        elif it.command == 20:  # NAV_RETURN_TO_LAUNCH
            self.mode = "RTL"
            self.rtl_phase = "climb"
            self._reached(it.seq)
            self.mission_complete = True  # the mission's last act: a later start begins again
            return
        elif it.command == 21:  # NAV_LAND
            self._land(dt)
            done = self.h <= 0.0
        elif it.command == 178:  # DO_CHANGE_SPEED
            if it.params[1] > 0:
                self.speed_override_m_s = float(it.params[1])
            done = True
        elif it.command in (205, 1000):  # DO_MOUNT_CONTROL / DO_GIMBAL_MANAGER_PITCHYAW
            self.gimbal_pitch_deg = float(it.params[0])
            done = True
        else:  # other DO_/CONDITION_ commands are accepted and skipped
            done = True
        if done:
            self._reached(it.seq)
            self.hold_until_s = None
            self.current_seq += 1
            if self.current_seq >= len(self.mission):
                self.mission_complete = True
                self._statustext("Mission complete")

    def _reached(self, seq: int) -> None:
        self.reached.append(seq)
        self._send("mission_item_reached_send", seq)
        self._statustext(f"Reached command #{seq}")

    def _rtl(self, dt: float) -> None:
        rtl_alt = self.params["RTL_ALT"] / 100.0
        if self.rtl_phase == "climb":
            target_h = max(self.h, rtl_alt)
            if self._fly_towards(self.n, self.e, target_h, dt) < 0.3:
                self.rtl_phase = "return"
        elif self.rtl_phase == "return":
            if self._fly_towards(0.0, 0.0, max(self.h, rtl_alt), dt) < 0.5:
                self.rtl_phase = "land"
        else:
            self._land(dt)

    # -- ground truth and camera -----------------------------------------------------------------------------

    def true_pose(self) -> CameraPose:
        """The vehicle's exact camera pose now (``time_ns`` in the wall clock the telemetry is stamped with)."""
        with self._lock:
            lat, lon, _ = self._lat_lon_amsl()
            return CameraPose(
                lat, lon, self.h, self.roll_deg, self.pitch_deg, self.yaw_deg,
                0.0, self.gimbal_pitch_deg, self.gimbal_yaw_deg, "horizon", self._wall_ns,
                (self.vn, self.ve, self.vd),
            )

    def capture(self) -> tuple[int, np.ndarray, CameraPose]:
        """A camera frame rendered from the true pose: (capture_time_ns, BGR image, true pose)."""
        pose = self.true_pose()
        return int(pose.time_ns or 0), render_frame(pose, self.camera, self.targets, self.home[:2]), pose


def render_frame(
    pose: CameraPose,
    camera: CameraIntrinsics,
    targets: Sequence[SimTarget] = (),
    origin_latlon: tuple[float, float] | None = None,
) -> np.ndarray:
    """Render ``(H, W, 3) uint8`` BGR: sea texture fixed to the ground, sky above the horizon, target discs.

    Pose altitude is the camera height above the sea surface (surface at 0). The texture is a function of
    position relative to ``origin_latlon`` (default: the camera), so it moves correctly under the camera.
    """
    w, h = camera.width_px, camera.height_px
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    px = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
    xy = camera.undistort(px)
    rays = np.concatenate([xy, np.ones((xy.shape[0], 1))], axis=1) @ pose.rotation_ned_from_camera().T
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    # the same curved-sea intersection the geolocator uses
    gn, ge, _ = ray_sphere_hit(rays, pose.alt_m, 0.0, earth_radius_m(pose.lat_deg))
    sea = np.isfinite(gn)
    if origin_latlon is not None:
        on, oe = latlon_to_offsets(origin_latlon[0], origin_latlon[1], pose.lat_deg, pose.lon_deg)
        wn, we = gn + on[0], ge + oe[0]
    else:
        wn, we = gn, ge
    img = np.empty((px.shape[0], 3), np.float64)
    # sea: long swell + short chop + a 0.5 m hashed speckle, all fixed to the ground
    wn0, we0 = np.nan_to_num(wn), np.nan_to_num(we)
    cell = (np.floor(wn0 * 2).astype(np.int64) * 73856093) ^ (np.floor(we0 * 2).astype(np.int64) * 19349663)
    speckle = ((cell % 1000) / 1000.0 - 0.5) * 16
    wave = 12 * np.sin(0.21 * wn0 + 0.13 * we0) + 7 * np.sin(0.9 * we0 - 0.5 * wn0) + speckle
    img[:, 0] = 115 + wave
    img[:, 1] = 85 + 0.7 * wave
    img[:, 2] = 35 + 0.3 * wave
    elev = -np.degrees(np.arcsin(np.clip(rays[:, 2] / np.linalg.norm(rays, axis=1), -1, 1)))
    sky = ~sea
    img[sky, 0] = 235 - elev[sky]
    img[sky, 1] = 215 - elev[sky]
    img[sky, 2] = 190 - elev[sky]
    for tg in targets:
        tn, te = latlon_to_offsets(pose.lat_deg, pose.lon_deg, tg.lat_deg, tg.lon_deg)
        if tg.sprite is None:
            inside = sea & ((gn - tn[0]) ** 2 + (ge - te[0]) ** 2 <= tg.radius_m**2)
            img[inside] = tg.color_bgr
        else:
            _draw_sprite(img, sea, gn - tn[0], ge - te[0], tg, w)
    return np.clip(img, 0, 255).astype(np.uint8).reshape(h, w, 3)


# sun from the south-west, fairly high: shadows fall a little to the north-east of what casts them
_SHADOW_SHIFT_FRAC = (0.06, 0.06)  # (north, east) shift of the shadow, fraction of the target's length
_SHADOW_DARKEN = 0.35


def _draw_sprite(img: np.ndarray, sea: np.ndarray, dn_m: np.ndarray, de_m: np.ndarray, tg: SimTarget,
                 width_px: int) -> None:
    """Composite ``tg.sprite`` into ``img`` ``(N, 3) float64`` (one row per pixel), in place.

    ``dn_m, de_m`` ``(N,)``: each pixel's ground point north/east of the target (NaN off the sea), rows of
    ``width_px`` pixels. Every pixel is
    mapped back into the sprite (its ground point in the target's along/across axes), so the perspective is the
    camera's own; the sprite is first shrunk to about the image's ground resolution there (area averaging), so
    a far or small target is not aliased by point sampling.
    """
    import cv2

    sp = tg.sprite
    assert sp is not None and tg.length_m is not None
    length, width = tg.footprint_m
    hd = math.radians(tg.heading_deg)
    c, s_ = math.cos(hd), math.sin(hd)
    # a box around the footprint and its shadow: only those pixels are mapped
    reach = 0.5 * math.hypot(length, width) + length * math.hypot(*_SHADOW_SHIFT_FRAC) + 1.0
    near = sea & (np.abs(dn_m) <= reach) & (np.abs(de_m) <= reach)
    idx = np.flatnonzero(near)
    if idx.size == 0:
        return
    n, e = dn_m[idx], de_m[idx]
    along = n * c + e * s_  # toward the heading = the sprite's +x
    across = -n * s_ + e * c  # right of the heading = the sprite's +y (down in the photo)
    on = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
    if not on.any():
        return
    # image ground resolution at the target: ground distance between neighbouring pixels (the finer way)
    k = idx[on]
    res = []
    for step in (1, width_px):
        j = np.minimum(k + step, dn_m.size - 1)
        d = np.hypot(dn_m[j] - dn_m[k], de_m[j] - de_m[k])
        d = d[np.isfinite(d) & (d > 0)]
        if d.size:
            res.append(float(np.median(d)))
    m_per_px = min(res) if res else length / 2.0
    hs, ws = sp.bgr.shape[:2]
    scale = min(1.0, 2.0 * (length / m_per_px) / ws)  # keep ~2 sprite texels per image pixel
    rgba = np.dstack([sp.bgr.astype(np.float32), sp.alpha * 255.0])
    if scale < 1.0:
        size = (max(2, round(ws * scale)), max(2, round(hs * scale)))
        rgba = cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)
    hs, ws = rgba.shape[:2]

    def sample(a_m: np.ndarray, c_m: np.ndarray) -> np.ndarray:
        # remap wants a 2-D map with sides under 32767: fold the pixel list into rows of 1024
        cols = 1024
        pad = (-a_m.size) % cols
        mx = np.pad((a_m / length + 0.5) * ws - 0.5, (0, pad), constant_values=-10).astype(np.float32).reshape(-1, cols)
        my = np.pad((c_m / width + 0.5) * hs - 0.5, (0, pad), constant_values=-10).astype(np.float32).reshape(-1, cols)
        out = cv2.remap(rgba, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.reshape(-1, 4)[: a_m.size]

    if tg.shadow:
        sn, se = _SHADOW_SHIFT_FRAC[0] * length, _SHADOW_SHIFT_FRAC[1] * length
        sh = sample((n - sn) * c + (e - se) * s_, -(n - sn) * s_ + (e - se) * c)[:, 3] / 255.0
        img[idx] *= (1.0 - _SHADOW_DARKEN * sh)[:, None]
    px = sample(along, across)
    a = (px[:, 3] / 255.0)[:, None]
    img[idx] = img[idx] * (1.0 - a) + px[:, :3] * a


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seawatch.drone.sim", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="udp:127.0.0.1:14550", help="GCS address (udp:H:P sends there, tcpin:H:P serves)")
    ap.add_argument("--home", default="54.0,7.0,0.0", help="lat,lon,amsl of home")
    ap.add_argument("--speed", type=float, default=1.0, help="simulation speed factor")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many wall seconds (0 = never)")
    from seawatch.cli import join_coordinate_values

    args = ap.parse_args(join_coordinate_values(sys.argv[1:] if argv is None else list(argv)))  # a home at -35.36
    logging.basicConfig(level=logging.INFO)
    try:
        home = tuple(float(v) for v in args.home.split(","))
        if len(home) != 3:
            raise ValueError
    except ValueError:
        ap.error(f"--home must be lat,lon,amsl, got {args.home!r}")
    sim = SimVehicle(args.out, home=home, speed=args.speed).start()  # type: ignore[arg-type]
    log.info("simulated ArduCopter sending to %s (Ctrl-C to stop)", args.out)
    try:
        t_end = time.monotonic() + args.duration if args.duration > 0 else math.inf
        while time.monotonic() < t_end:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
