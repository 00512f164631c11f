"""A drone camera for vehicles that have none: the simulator's (or ArduPilot SITL's) view rendered from its pose and
sent as live H.264 in MPEG-TS over UDP, what a real drone's video link sends (``udp://0.0.0.0:5600``).

The pose comes from one of two places (:class:`PoseProvider`):

* :class:`SimPoses`: the in-process :class:`~seawatch.drone.sim.SimVehicle`'s true pose;
* :class:`LinkPoses`: any MAVLink vehicle through :class:`~seawatch.drone.link.MavlinkLink` (its pose timeline:
  position, attitude, gimbal), so it works against SITL (``seawatch drone camera URL``).

What the sea shows (:func:`~seawatch.drone.sim.render_frame`): configured boats (:class:`BoatSpec`, real boat
sprites cut from ``../shared/media`` with :func:`~seawatch.drone.sim.sprite_from_manifest`, plain hulls when the
media is absent) and, optionally, the positioned vessels of a live AIS table.

Timing (why the rendered pose is the pose at the frame's capture time): frame ``k`` is due at send time
``t_k = t_0 + k / fps`` (UTC ns). ``lead`` before it the pose is taken *for* ``t_k`` (the simulator's true pose, or
the timeline's, moved on along its velocity and yaw rate for the few tens of milliseconds to ``t_k``), rendered and
encoded (x264 ultrafast / zerolatency: one packet out per frame in, no B-frames, no look-ahead); the packet is
written at ``t_k`` with ``pts = t_k - t_0``. The MPEG-TS muxer writes the PES length and flushes every packet, so
the receiver's demuxer has the frame as soon as its last datagram arrives (without the length it waits for the next
frame's start: one frame interval of delay). The project's stream clock (``streams/clock.py``) maps ``pts`` to UTC
with the smallest ``receive - pts`` it sees, i.e. ``capture = t_k + d_min`` where ``d_min`` is the fastest
send-to-demux delay (under a millisecond on one host): the pose rendered is the pose at the stamped time. A frame
whose rendering overran its slot is still sent (late) with its own ``pts`` and is stamped at ``t_k`` all the same;
the clock's minimum ignores late arrivals. ``lead`` adapts to the measured render + encode time (1.5 x the slowest
of the last 20 frames + 10 ms).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from seawatch.drone.geometry import CameraIntrinsics, CameraPose, latlon_to_offsets, offsets_to_latlon
from seawatch.drone.sim import SimTarget, Sprite, render_frame, sprite_from_manifest
from seawatch.errors import InputError, SeawatchError, StreamError

log = logging.getLogger(__name__)

NS = 1_000_000_000
PTS_HZ = 90_000  # MPEG-TS clock

# labelled boats of ../shared/media the COCO model finds when drawn 90-190 px long and upright (drone/README.md)
DEFAULT_SPRITES: tuple[tuple[str, int], ...] = (
    ("A_boats/shore_dlwkigk3_720_2022-07-19_09-58_output_0.jpg", 0),
    ("A_boats/shore_dlwkigk3_720_2022-07-19_06-28_output_0.jpg", 1),
    ("A_boats/shore_proylddb_1080_2022-07-17_09-56_output_0.jpg", 0),
)


# ---- what is on the water ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BoatSpec:
    """A boat to draw: centre lat/lon (deg), ``length_m`` on the water, ``heading_deg`` (compass direction of the
    photo's left-to-right axis; 90 = upright for a north-up camera), and which labelled photo to cut it from
    (``sprite``: index into :data:`DEFAULT_SPRITES`, cycled)."""

    lat_deg: float
    lon_deg: float
    length_m: float = 20.0
    heading_deg: float = 90.0
    sprite: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat_deg) and -90 <= self.lat_deg <= 90
                and math.isfinite(self.lon_deg) and -180 <= self.lon_deg <= 180):
            raise InputError(f"boat {self.name or '?'}: lat/lon ({self.lat_deg}, {self.lon_deg}) is not a position")
        if not (math.isfinite(self.length_m) and 1.0 <= self.length_m <= 400.0):
            raise InputError(f"boat {self.name or '?'}: length_m must be 1..400, got {self.length_m}")
        if not math.isfinite(self.heading_deg):
            raise InputError(f"boat {self.name or '?'}: heading_deg must be finite")

    @classmethod
    def parse(cls, text: str, index: int = 0) -> "BoatSpec":
        """``lat,lon[,length_m[,heading_deg]]`` (the CLI's ``--boat``)."""
        parts = [p.strip() for p in str(text).split(",")]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            vals = []
        if not 2 <= len(vals) <= 4:
            raise InputError(f"--boat {text!r}: expected lat,lon[,length_m[,heading_deg]] (numbers), "
                             "e.g. 54.0006,7.0,20,90")
        return cls(*vals[:2], *(vals[2:3] or [20.0]), *(vals[3:4] or [90.0]), sprite=index, name=f"boat{index}")


class SpriteBank:
    """Boat sprites cut once from the shared media (``None`` media or a missing photo: plain hulls, logged once)."""

    def __init__(self, media_dir: str | Path | None, photos: Sequence[tuple[str, int]] = DEFAULT_SPRITES) -> None:
        self.sprites: list[Sprite] = []
        self.missing: str | None = None
        if media_dir is None:
            self.missing = "no media folder given"
        else:
            for image_file, index in photos:
                try:
                    self.sprites.append(sprite_from_manifest(media_dir, image_file, index))
                except InputError as exc:
                    self.missing = str(exc)
        if not self.sprites:
            log.warning("drone camera: boat photos unavailable (%s); drawing plain hulls instead", self.missing)
            self.sprites = [plain_hull()]
        elif self.missing:
            log.warning("drone camera: %d of %d boat photos cut; %s", len(self.sprites), len(photos), self.missing)

    def target(self, b: BoatSpec) -> SimTarget:
        sp = self.sprites[b.sprite % len(self.sprites)]
        return SimTarget(b.name or f"boat-{b.lat_deg:.5f},{b.lon_deg:.5f}", b.lat_deg, b.lon_deg, sprite=sp,
                         length_m=b.length_m, heading_deg=b.heading_deg)


def plain_hull(w: int = 120, h: int = 36) -> Sprite:
    """A white hull with a darker deckhouse, pointed at the right end: a boat when no photo is available."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    half = h / 2.0
    bow = np.clip((w - xs) / (0.25 * w), 0.0, 1.0)  # the hull narrows over its front quarter
    alpha = (np.abs(ys + 0.5 - half) <= half * bow).astype(np.float32)
    bgr = np.full((h, w, 3), 235, np.uint8)
    bgr[int(0.3 * h):int(0.7 * h), int(0.3 * w):int(0.6 * w)] = (90, 80, 70)
    return Sprite(bgr, alpha, "plain hull")


def ais_targets(vessels: Iterable[Any], bank: SpriteBank, near_latlon: tuple[float, float], radius_m: float,
                default_length_m: float = 20.0) -> list[SimTarget]:
    """SimTargets for AIS vessels (``VesselState``-like: ``mmsi``, ``lat_deg``, ``lon_deg``, optional ``length_m``,
    ``heading_deg``, ``cog_deg``) within ``radius_m`` of ``near_latlon``; vessels without a position are left out."""
    rows = [v for v in vessels if getattr(v, "lat_deg", None) is not None and getattr(v, "lon_deg", None) is not None]
    if not rows:
        return []
    lat = np.array([float(v.lat_deg) for v in rows])
    lon = np.array([float(v.lon_deg) for v in rows])
    dn, de = latlon_to_offsets(near_latlon[0], near_latlon[1], lat, lon)
    out = []
    for i in np.flatnonzero(np.hypot(dn, de) <= radius_m):
        v = rows[int(i)]
        length = float(v.length_m) if getattr(v, "length_m", None) and 1 <= float(v.length_m) <= 400 else default_length_m
        course = getattr(v, "heading_deg", None)
        if course is None:
            course = getattr(v, "cog_deg", None)
        # the bow of the photo is not known; the photo's long axis lies along the vessel's heading
        heading = float(course) if course is not None else 90.0
        mmsi = int(getattr(v, "mmsi", 0) or 0)
        try:
            out.append(bank.target(BoatSpec(float(lat[i]), float(lon[i]), length, heading, sprite=mmsi,
                                            name=f"ais-{mmsi}")))
        except InputError:
            continue
    return out


# ---- where the camera is ---------------------------------------------------------------------------------------
class PoseProvider(Protocol):
    def pose_at(self, t_ns: int) -> CameraPose | None:
        """The camera pose at UTC ns ``t_ns`` (now or a few tens of ms ahead), or None when not known."""


def advance_pose(pose: CameraPose, t_ns: int, yaw_rate_deg_s: float = 0.0, time_scale: float = 1.0) -> CameraPose:
    """``pose`` moved on to ``t_ns`` along its NED velocity (and yaw rate); ``time_scale``: simulated seconds per
    wall second (a simulator running faster than real time)."""
    from dataclasses import replace

    if pose.time_ns is None:
        return replace(pose, time_ns=int(t_ns))
    dt = (int(t_ns) - int(pose.time_ns)) / NS * time_scale
    vn, ve, vd = pose.velocity_ned_m_s or (0.0, 0.0, 0.0)
    lat, lon = pose.lat_deg, pose.lon_deg
    if vn or ve:
        la, lo = offsets_to_latlon(pose.lat_deg, pose.lon_deg, vn * dt, ve * dt)
        lat, lon = float(la[0]), float(lo[0])
    yaw = ((pose.yaw_deg + yaw_rate_deg_s * dt + 180.0) % 360.0) - 180.0
    return replace(pose, lat_deg=lat, lon_deg=lon, alt_m=pose.alt_m - vd * dt, yaw_deg=yaw, time_ns=int(t_ns))


class SimPoses:
    """The in-process simulator's true pose, moved on to the asked time (its physics runs at 50 Hz)."""

    def __init__(self, sim) -> None:
        self.sim = sim

    def pose_at(self, t_ns: int) -> CameraPose | None:
        pose = self.sim.true_pose()
        if not pose.time_ns:
            return None  # not started
        return advance_pose(pose, t_ns, float(getattr(self.sim, "yaw_rate_deg_s", 0.0)),
                            float(getattr(self.sim, "speed", 1.0)))


class LinkPoses:
    """A MAVLink vehicle's pose from its link's timeline (interpolated; past the newest sample moved on along the
    reported velocity, attitude held, for up to ``max_ahead_s``)."""

    def __init__(self, link, max_ahead_s: float = 1.0) -> None:
        from seawatch.drone.pose import PoseTimeline

        self.link = link
        tl = link.timeline
        # a view of the same buffers with a tolerance that suits rendering "now" (the pipeline keeps its own limits)
        self.timeline = tl if tl.max_age_s >= max_ahead_s else _with_max_age(tl, max_ahead_s, PoseTimeline)
        self.reason: str | None = None

    def pose_at(self, t_ns: int) -> CameraPose | None:
        # the pose the pipeline will look up for a frame stamped t_ns (the timeline applies the drone's latency_s)
        fix = self.timeline.pose_at(t_ns)
        if fix.pose is None:
            if fix.reason != self.reason:
                log.warning("drone camera: no pose to render from: %s", fix.reason)
            self.reason = fix.reason
            return None
        self.reason = None
        return fix.pose


def _with_max_age(tl, max_age_s: float, cls):
    view = cls.__new__(cls)
    for name in ("vehicle_id", "latency_ns", "max_gap_s", "gimbal_max_age_s", "default_gimbal", "_lock", "_pos",
                 "_att", "_gim"):
        setattr(view, name, getattr(tl, name))
    view.max_age_s = max_age_s
    return view


# ---- the streamer --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SentFrame:
    """One frame sent: its send time (= the capture time the receiver's stream clock gives it), the pose rendered
    (None: no pose, a grey frame), and how long rendering + encoding took."""

    seq: int
    time_ns: int
    pose: CameraPose | None
    work_s: float
    late_s: float


def parse_udp_out(url: str) -> tuple[str, str]:
    """``udp://HOST:PORT[?opts]`` -> (FFmpeg URL with ``pkt_size=1316``, ``HOST:PORT``). Raises InputError."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or not url.startswith("udp://"):
        raise InputError(f"--out {url!r}: the drone camera sends to udp://HOST:PORT (e.g. udp://127.0.0.1:5600)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"--out {url!r}: {exc}") from None
    if not parts.hostname or port is None or not 1 <= port <= 65535:
        raise InputError(f"--out {url!r}: needs a host and a port 1-65535, e.g. udp://127.0.0.1:5600")
    if parts.hostname in ("0.0.0.0", "::"):
        raise InputError(f"--out {url!r}: {parts.hostname} is where a receiver listens; send to an address "
                         "(udp://127.0.0.1:5600)")
    query = parts.query
    if "pkt_size" not in query:
        query = "&".join(q for q in (query, "pkt_size=1316") if q)  # 7 TS packets per datagram
    return f"udp://{parts.hostname}:{port}?{query}", f"{parts.hostname}:{port}"


class CameraStreamer:
    """Renders a drone camera's view at ``fps`` and sends it as H.264 / MPEG-TS to ``out`` (``udp://HOST:PORT``).

    Args:
        poses: where the camera is (:class:`SimPoses`, :class:`LinkPoses`, or anything with ``pose_at(t_ns)``).
        camera: intrinsics of the rendered frames (the pipeline must geotag with the same).
        out: ``udp://HOST:PORT``; the receiver reads ``udp://0.0.0.0:PORT`` (or the same address).
        fps: frames per second (0.2-30).
        targets: fixed :class:`~seawatch.drone.sim.SimTarget` s on the water.
        vessels: optional callable returning AIS vessels (``VesselState``-like) drawn as boats when in view.
        bank: sprites for the AIS vessels (default: plain hulls).
        origin_latlon: anchor of the sea texture (default: the first pose).
        keyframe_s: a keyframe at least this often (a receiver that joins late waits at most this long).
        bitrate_kbps: x264 VBV cap (keeps a keyframe under the 64 KiB a PES with a length can hold).

    ``history`` keeps the last 600 :class:`SentFrame` (tests, and ``stats()`` for the CLI). Errors writing to the
    socket are counted and logged, the output is reopened; the streamer's thread never dies of them.
    """

    def __init__(self, poses: PoseProvider, camera: CameraIntrinsics, out: str = "udp://127.0.0.1:5600", *,
                 fps: float = 3.0, targets: Sequence[SimTarget] = (), vessels: Callable[[], Iterable[Any]] | None = None,
                 bank: SpriteBank | None = None, origin_latlon: tuple[float, float] | None = None,
                 keyframe_s: float = 1.0, bitrate_kbps: int = 1200) -> None:
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0.2 <= fps <= 30):
            raise InputError(f"drone camera: fps must be 0.2-30, got {fps!r}")
        if not (math.isfinite(keyframe_s) and keyframe_s > 0):
            raise InputError(f"drone camera: keyframe_s must be > 0, got {keyframe_s!r}")
        if camera.width_px % 2 or camera.height_px % 2 or not (16 <= camera.width_px <= 4096 and 16 <= camera.height_px <= 4096):
            raise InputError(f"drone camera: frame size {camera.width_px}x{camera.height_px} must be even, 16-4096 px")
        if not 100 <= int(bitrate_kbps) <= 50_000:
            raise InputError(f"drone camera: bitrate_kbps must be 100-50000, got {bitrate_kbps!r}")
        self.url, self.address = parse_udp_out(out)
        self.poses = poses
        self.camera = camera
        self.fps = float(fps)
        self.targets = list(targets)
        self.vessels = vessels
        self.bank = bank
        self.origin = origin_latlon
        self.keyframe_s = float(keyframe_s)
        self.bitrate_kbps = int(bitrate_kbps)
        self.history: collections.deque[SentFrame] = collections.deque(maxlen=600)
        self.counters = {"frames": 0, "late": 0, "skipped": 0, "no_pose": 0, "send_errors": 0, "bytes": 0}
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container = None
        self._stream = None
        self._work: collections.deque[float] = collections.deque(maxlen=20)
        self._last_frame = None
        self._started: tuple[float, float] | None = None
        self._cpu: tuple[float, float] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> "CameraStreamer":
        self._open()  # a broken encoder is an error now, not in the thread
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="drone-camera", daemon=True)
        self._thread.start()
        log.info("drone camera: %dx%d at %.1f fps (H.264 / MPEG-TS) to udp://%s", self.camera.width_px,
                 self.camera.height_px, self.fps, self.address)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._close()

    def __enter__(self) -> "CameraStreamer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """Counters plus the render + encode time (median, max of the last 20 frames), the lead used and the
        streamer thread's CPU use (percent of one core, render + encode + send)."""
        work = sorted(self._work)
        cpu = None
        if self._started is not None and self._cpu is not None and self._cpu[0] > self._started[0]:
            cpu = round(100 * (self._cpu[1] - self._started[1]) / (self._cpu[0] - self._started[0]), 1)
        return {**self.counters, "cpu_pct": cpu, "work_ms_median": round(1000 * work[len(work) // 2], 1) if work else None,
                "work_ms_max": round(1000 * work[-1], 1) if work else None, "lead_ms": round(1000 * self._lead_s(), 1),
                "last_error": self.last_error}

    # -- encoder ------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        import av

        try:
            container = av.open(self.url, mode="w", format="mpegts",
                                options={"flush_packets": "1", "omit_video_pes_length": "0"}, timeout=5.0)
        except (av.FFmpegError, OSError) as exc:
            raise StreamError(f"drone camera: cannot open udp://{self.address}: {exc}") from exc
        try:
            stream = container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
            stream.width, stream.height, stream.pix_fmt = self.camera.width_px, self.camera.height_px, "yuv420p"
            stream.codec_context.time_base = Fraction(1, PTS_HZ)
            gop = max(1, round(self.keyframe_s * self.fps))
            kb = self.bitrate_kbps
            stream.codec_context.options = {
                "preset": "ultrafast", "tune": "zerolatency",
                # a keyframe every gop frames (no scene-cut ones); VBV keeps every frame well under 64 KiB
                "x264-params": f"keyint={2 * gop}:min-keyint={2 * gop}:scenecut=0:force-cfr=1:bframes=0:vbv-maxrate={kb}:"
                               f"vbv-bufsize={min(kb, 400)}:threads=1",
            }
            stream.codec_context.open()
        except Exception as exc:  # noqa: BLE001 - the codec's own error types differ between PyAV versions
            container.close()
            raise StreamError(f"drone camera: cannot start the H.264 encoder (libx264): {exc}") from exc
        self._container, self._stream = container, stream

    def _close(self) -> None:
        c, self._container, self._stream = self._container, None, None
        if c is not None:
            try:
                c.close()
            except Exception as exc:  # noqa: BLE001 - closing a socket the receiver went away from
                log.debug("drone camera: closing the output: %s", exc)

    def _lead_s(self) -> float:
        period = 1.0 / self.fps
        worst = max(self._work) if self._work else 0.15
        return min(period, max(0.02, 1.5 * worst + 0.01))

    # -- frames ---------------------------------------------------------------------------------------------------
    def render(self, pose: CameraPose | None) -> np.ndarray:
        """The frame for ``pose`` (``(H, W, 3) uint8`` BGR); a grey frame when there is no pose."""
        k = self.camera
        if pose is None:
            return np.full((k.height_px, k.width_px, 3), 96, np.uint8)
        if self.origin is None:
            self.origin = (pose.lat_deg, pose.lon_deg)
        targets = list(self.targets)
        if self.vessels is not None:
            # everything the camera could see from here: the horizon of a 60 m drone is farther, but a boat more
            # than a few hundred metres away is a few pixels, not worth drawing
            reach = max(300.0, 8.0 * max(pose.alt_m, 1.0))
            try:
                targets += ais_targets(self.vessels() or (), self.bank or _plain_bank(), (pose.lat_deg, pose.lon_deg), reach)
            except Exception as exc:  # noqa: BLE001 - a vessel table mid-update must not stop the video
                log.debug("drone camera: AIS vessels: %s", exc)
        return render_frame(pose, k, targets, self.origin)

    def _run(self) -> None:
        import av

        period_ns = int(round(NS / self.fps))
        t0 = time.time_ns() + period_ns
        self._started = (time.monotonic(), time.thread_time())
        k = 0
        warned_no_pose = False
        while not self._stop.is_set():
            due = t0 + k * period_ns
            wait_s = (due - int(self._lead_s() * NS) - time.time_ns()) / NS
            if wait_s > 0 and self._stop.wait(wait_s):
                break
            w0 = time.perf_counter()
            try:
                pose = self.poses.pose_at(due)
            except Exception as exc:  # noqa: BLE001 - a provider's bug: a grey frame, not a dead thread
                log.warning("drone camera: pose lookup failed: %s", exc)
                pose = None
            if pose is None:
                self.counters["no_pose"] += 1
                if not warned_no_pose:
                    log.warning("drone camera: no vehicle pose yet; sending grey frames")
                    warned_no_pose = True
            else:
                warned_no_pose = False
            try:
                img = self.render(pose)
                packets = self._encode(img, due - t0)
            except Exception as exc:  # noqa: BLE001
                self.last_error = f"render/encode failed: {exc}"
                log.exception("drone camera: frame %d failed", k)
                k += 1
                continue
            work_s = time.perf_counter() - w0
            self._work.append(work_s)
            wait_s = (due - time.time_ns()) / NS
            if wait_s > 0 and self._stop.wait(wait_s):
                break
            late_s = max(0.0, (time.time_ns() - due) / NS)
            if late_s > 0.5 / self.fps:
                self.counters["late"] += 1
            try:
                for p in packets:
                    self.counters["bytes"] += p.size
                    self._container.mux(p)
                # the same picture again, one tick later: its PES start is what makes the receiver's demuxer and
                # H.264 parser hand the real frame over now instead of when the next frame comes (see the module
                # docstring); x264 codes it as a P-frame of skipped macroblocks (tens of bytes)
                for p in self._encode(None, due - t0):
                    self.counters["bytes"] += p.size
                    self._container.mux(p)
            except (av.FFmpegError, OSError) as exc:
                self.counters["send_errors"] += 1
                self.last_error = f"send failed: {exc}"
                log.warning("drone camera: sending to udp://%s failed: %s; reopening", self.address, exc)
                self._close()
                if self._stop.wait(1.0):
                    break
                try:
                    self._open()
                except SeawatchError as exc2:
                    self.last_error = str(exc2)
                    log.warning("%s", exc2)
                t0, k = time.time_ns() + period_ns, 0  # a new stream clock
                continue
            self.counters["frames"] += 1
            self._cpu = (time.monotonic(), time.thread_time())
            self.history.append(SentFrame(k, due, pose, work_s, late_s))
            k += 1
            behind = (time.time_ns() - (t0 + k * period_ns)) // period_ns
            if behind > 0:  # rendering cannot keep up: skip slots rather than fall further behind
                self.counters["skipped"] += int(behind)
                k += int(behind)

    def _encode(self, img: np.ndarray | None, pts_ns: int) -> list:
        """Encode ``img`` at ``pts_ns`` (stream clock); ``img`` None: the previous picture again, one tick later."""
        import av

        if img is None:
            frame = self._last_frame
            frame.pts = int(round(pts_ns * PTS_HZ / NS)) + 1
        else:
            frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
            frame.pts = int(round(pts_ns * PTS_HZ / NS))
            frame.time_base = Fraction(1, PTS_HZ)
            self._last_frame = frame
        return list(self._stream.encode(frame))


_PLAIN: SpriteBank | None = None


def _plain_bank() -> SpriteBank:
    global _PLAIN
    if _PLAIN is None:
        bank = SpriteBank.__new__(SpriteBank)
        bank.sprites, bank.missing = [plain_hull()], "plain hulls"
        _PLAIN = bank
    return _PLAIN


def boat_targets(boats: Sequence[BoatSpec], media_dir: str | Path | None) -> tuple[list[SimTarget], SpriteBank]:
    """SimTargets of the configured boats, cut from the shared media (plain hulls when it is absent)."""
    bank = SpriteBank(media_dir)
    return [bank.target(b) for b in boats], bank
