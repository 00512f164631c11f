"""Flight logs: each drone's telemetry kept on disk beside its video, for as long as the video.

A drone's live :class:`~seawatch.drone.pose.PoseTimeline` holds a few minutes (``history_s``); what its camera
recorded is kept for days. :class:`FlightLogWriter` appends every position, attitude and gimbal sample the timelines
receive to ``<root>/<drone_id>/<hour_start_ns>.jsonl`` (one file per UTC hour of telemetry time, one JSON object per
line: ``{"kind": "position", "time_ns": ..., ...}``), flushed at each poll, so a crash loses at most the last poll's
samples; a kind's samples closer than 90 ms are thinned. Two minutes after its hour ends a file is gzipped
(``.jsonl.gz``); files whose hour ended more than ``max_age_s`` ago are deleted.

Readers: :func:`read_flight_log` (the samples of a window), :func:`timeline_from_log` (a timeline over a past window,
to geotag a picture of the recording: an event reported from yesterday's patrol video) and :func:`flight_track`
(where the drone flew, thinned, for the map).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from seawatch.drone.pose import AttitudeSample, GimbalSample, PoseTimeline, PositionSample
from seawatch.errors import InputError

log = logging.getLogger(__name__)

NS = 1_000_000_000
HOUR_NS = 3600 * NS
KINDS = ("position", "attitude", "gimbal")
# samples of one kind closer than this are thinned (a 10 Hz stream with jitter is kept whole, a 50 Hz ATTITUDE stream
# is logged at about 10 Hz: a pose is interpolated between samples, and the live buffer keeps every sample for the
# last minutes, what live geotagging uses)
MIN_INTERVAL_NS = 90_000_000
GZIP_AFTER_NS = 120 * NS  # an hour's file is compressed this long after the hour ended (late samples have come)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.%\-]{1,200}$")


def _dir(root: str | Path, drone_id: str) -> Path:
    """The drone's folder: its id, with ``:`` (allowed in drone ids) written ``%3A``."""
    name = drone_id.replace("%", "%25").replace(":", "%3A")
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise InputError(f"drone id {drone_id!r} cannot name a flight log folder (letters, digits, _ . - : only)")
    return Path(root) / name


class FlightLogWriter:
    """Appends what the drones' timelines receive to their flight logs; call :meth:`poll` every second or so.

    ``timelines``: drone id -> its live ``PoseTimeline``. Samples that arrive later than ones already written (out of
    order by more than a poll) are not logged; the live timeline still has them.
    """

    def __init__(self, root: str | Path, timelines: dict[str, PoseTimeline], max_age_s: float | None = None) -> None:
        self.root = Path(root)
        self.timelines = {d: t for d, t in timelines.items() if t is not None}
        for d in self.timelines:
            _dir(self.root, d)
        self.max_age_s = max_age_s
        self._last: dict[tuple[str, str], int] = {}
        self._pruned_hour: int | None = None
        self._lock = threading.Lock()
        self.written = 0
        self.errors = 0

    def poll(self, now_ns: int | None = None) -> int:
        """Write the samples received since the last poll; returns how many were written."""
        now_ns = time.time_ns() if now_ns is None else int(now_ns)
        n = 0
        with self._lock:
            for drone_id, timeline in self.timelines.items():
                try:
                    n += self._write(drone_id, timeline)
                except OSError as exc:  # a full or read-only disk: said once per poll, the next poll tries again
                    self.errors += 1
                    log.error("flight log of %s: cannot write: %s", drone_id, exc)
            hour = (now_ns - GZIP_AFTER_NS) // HOUR_NS
            if hour != self._pruned_hour:
                self._pruned_hour = hour
                self.prune(now_ns)
                self.compress(now_ns)
        self.written += n
        return n

    def _write(self, drone_id: str, timeline: PoseTimeline) -> int:
        lasts = [self._last.get((drone_id, k), -1) for k in KINDS]
        seen = [t for t in lasts if t >= 0]  # a kind that never came (no gimbal) must not make each poll read it all
        got = timeline.samples_between(min(seen) + 1 if seen else 0, 2**62)
        lines: dict[int, list[str]] = {}
        for kind, last in zip(KINDS, lasts):
            newest = last
            for s in got.get(kind, ()):
                t = int(s["time_ns"])
                if t <= last or t - newest < MIN_INTERVAL_NS:  # not written yet; at most ~25 a second
                    continue
                lines.setdefault(t // HOUR_NS, []).append(json.dumps({"kind": kind, **s}, separators=(",", ":")))
                newest = max(newest, t)
            self._last[(drone_id, kind)] = newest
        if not lines:
            return 0
        d = _dir(self.root, drone_id)
        d.mkdir(parents=True, exist_ok=True)
        for hour, rows in sorted(lines.items()):
            with open(d / f"{hour * HOUR_NS}.jsonl", "a", encoding="utf-8") as f:
                f.write("\n".join(rows) + "\n")
        return sum(len(rows) for rows in lines.values())

    def prune(self, now_ns: int | None = None) -> list[Path]:
        """Delete log files whose hour ended more than ``max_age_s`` before ``now_ns`` (both forms of one hour)."""
        if self.max_age_s is None:
            return []
        now_ns = time.time_ns() if now_ns is None else int(now_ns)
        deleted = []
        for drone_id in self.timelines:
            for f, hour_ns in _files(self.root, drone_id):
                if now_ns - (hour_ns + HOUR_NS) > self.max_age_s * NS:
                    for g in (f.with_name(f"{hour_ns}.jsonl"), f.with_name(f"{hour_ns}.jsonl.gz")):
                        if g.exists():
                            g.unlink(missing_ok=True)
                            deleted.append(g)
        if deleted:
            log.info("flight logs: deleted %d hour file(s) older than %.0f s", len(deleted), self.max_age_s)
        return deleted


    def compress(self, now_ns: int | None = None) -> list[Path]:
        """Gzip the hour files that ended more than ``GZIP_AFTER_NS`` ago (about a tenth of the size); the
        ``.jsonl`` goes once its ``.jsonl.gz`` is complete."""
        import gzip
        import os
        import shutil

        now_ns = time.time_ns() if now_ns is None else int(now_ns)
        done = []
        for drone_id in self.timelines:
            for f, hour_ns in _files(self.root, drone_id):
                if f.suffix != ".jsonl" or now_ns - (hour_ns + HOUR_NS) < GZIP_AFTER_NS:
                    continue
                gz = f.with_name(f.name + ".gz")
                tmp = f.with_name(f.name + ".gz.tmp")
                try:
                    with open(f, "rb") as src, gzip.open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    os.replace(tmp, gz)
                    f.unlink()
                    done.append(gz)
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    log.warning("flight log %s: not compressed: %s", f, exc)
        return done


def _files(root: str | Path, drone_id: str) -> list[tuple[Path, int]]:
    """The drone's hour files ``(path, hour start ns)``, oldest first (``.jsonl``, or ``.jsonl.gz`` once compressed;
    while both exist, the plain one: a compression cut short)."""
    d = _dir(root, drone_id)
    found: dict[int, Path] = {}
    if d.is_dir():
        for f in [*d.glob("*.jsonl.gz"), *d.glob("*.jsonl")]:  # the plain file wins
            try:
                found[int(f.name.split(".", 1)[0])] = f
            except ValueError:
                continue
    return sorted(((f, h) for h, f in found.items()), key=lambda x: x[1])


def read_flight_log(root: str | Path, drone_id: str, t0_ns: int, t1_ns: int) -> dict[str, list[dict[str, Any]]]:
    """The logged samples with ``t0_ns <= time_ns <= t1_ns`` per kind, in time order. A damaged line (a crash in the
    middle of a write) is skipped."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for f, hour_ns in _files(root, drone_id):
        if hour_ns + HOUR_NS <= t0_ns or hour_ns > t1_ns:
            continue
        try:
            if f.name.endswith(".gz"):
                import gzip

                with gzip.open(f, "rt", encoding="utf-8", errors="replace") as z:
                    text = z.read()
            else:
                text = f.read_text(encoding="utf-8", errors="replace")
        except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged compressed hour (not an OSError)
            log.warning("flight log %s: unreadable: %s", f, exc)
            continue
        for line in text.splitlines():
            try:
                row = json.loads(line)
                kind, t = row.pop("kind"), int(row["time_ns"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if kind in out and t0_ns <= t <= t1_ns:
                out[kind].append(row)
    for rows in out.values():
        rows.sort(key=lambda r: r["time_ns"])
    return out


def _sample(kind: str, row: dict[str, Any]):
    if kind == "position":
        return PositionSample(int(row["time_ns"]), float(row["lat_deg"]), float(row["lon_deg"]), float(row["alt_m"]),
                              tuple(float(v) for v in row.get("velocity_ned_m_s", (0.0, 0.0, 0.0))),
                              row.get("fix_type"), row.get("h_acc_m"))
    if kind == "attitude":
        return AttitudeSample(int(row["time_ns"]), float(row["roll_deg"]), float(row["pitch_deg"]), float(row["yaw_deg"]),
                              tuple(float(v) for v in row.get("rates_deg_s", (0.0, 0.0, 0.0))))
    return GimbalSample(int(row["time_ns"]), float(row["roll_deg"]), float(row["pitch_deg"]), float(row["yaw_deg"]),
                        row.get("frame", "horizon"))


def timeline_from_log(root: str | Path, drone_id: str, t0_ns: int, t1_ns: int, like: PoseTimeline) -> PoseTimeline | None:
    """A timeline holding the logged samples of ``[t0_ns, t1_ns]``, with ``like``'s latency, staleness limits and
    default gimbal; None when the log has no position there."""
    rows = read_flight_log(root, drone_id, t0_ns, t1_ns)
    if not rows["position"]:
        return None
    span_s = max(1.0, (t1_ns - t0_ns) / NS + 60.0)
    tl = PoseTimeline(like.vehicle_id, latency_s=like.latency_ns / NS, max_age_s=like.max_age_s,
                      max_gap_s=like.max_gap_s, history_s=span_s, default_gimbal=like.default_gimbal,
                      gimbal_max_age_s=like.gimbal_max_age_s)
    adders = {"position": tl.add_position, "attitude": tl.add_attitude, "gimbal": tl.add_gimbal}
    for kind, kind_rows in rows.items():
        for row in kind_rows:
            try:
                adders[kind](_sample(kind, row))
            except (InputError, KeyError, TypeError, ValueError):
                continue
    return tl


def flight_track(root: str | Path, drone_id: str, t0_ns: int, t1_ns: int, max_points: int = 2000) -> list[list[float]]:
    """Where the drone flew in ``[t0_ns, t1_ns]``: ``[time_ns, lat_deg, lon_deg, alt_m]`` per logged position,
    evenly thinned to ``max_points`` (the first and last kept)."""
    pos = [r for r in read_flight_log(root, drone_id, t0_ns, t1_ns)["position"]
           if all(math.isfinite(float(r.get(k, math.nan))) for k in ("lat_deg", "lon_deg", "alt_m"))]
    if len(pos) > max_points >= 2:
        step = (len(pos) - 1) / (max_points - 1)
        pos = [pos[round(i * step)] for i in range(max_points)]
    return [[int(r["time_ns"]), float(r["lat_deg"]), float(r["lon_deg"]), float(r["alt_m"])] for r in pos]
