"""Event and media retention, and the media disk's free-space guard.

What grows without it: every event row (and its audit trail), one snapshot JPEG per stored phase of an incident
(``media_dir/snapshots/<source>/<id>_<seq>.jpg``; only the newest is referred to), every clip cut on demand
(``media_dir/clips/<source>/<start_ns>_<end_ns>.mp4``) and drone telemetry (``media_dir/telemetry/<source>/<id>.json``).
Recorded segments have their own age / size rule (``streams.recording.enforce_retention``).

A sweep (:meth:`Retention.sweep`):

1. cuts the clips of held events whose window is still in the recordings (a confirmed incident keeps its video after
   the segments it comes from are gone);
2. deletes closed, unheld events older than their age (their source's ``sources.<id>.events_max_age_days``, else
   their severity's; a false detection at least ``false_detections_max_age_days``), in batches of ``batch_size`` (one
   short write transaction each, a pause between), then their snapshot, clip and telemetry files;
3. walks the media folders: files no stored event refers to (older seq snapshots, clips and telemetry of deleted
   events, ``.tmp`` leftovers) older than ``orphan_min_age_s`` go; so do snapshots and clips of unheld, closed events
   older than ``snapshots_max_age_days`` / their source's ``clips_max_age_days`` (the event row stays; a false
   detection keeps its snapshot, the training frame, as long as the event);
4. deletes rows of the security audit log (``service/audit.py``) older than ``audit_days`` (400 by default: it is
   the record of who did what, so kept long; the upgrade grace does not apply, the table is new with migration 0011);
5. runs the disk guard.

Held, whatever the age: events a reviewer confirmed, events with an active hold (an evidence export, a reviewer's
hold; a lifted hold no longer holds), open incidents; their snapshot, clip and telemetry too.

Upgrade grace: the first time retention runs on a store (``retention_state`` has no ``enabled_ns``) it records when,
and, if the store already holds events the policy would delete (an upgrade from a version without retention), that
events stored before then are protected: for ``upgrade_grace_days`` the sweeps delete nothing that existed before
(events, their files, orphans), with one warning saying how many events wait and from when deletion starts. A store
with nothing to delete then (a new one) records ``protect_before_ns = 0`` and never waits.

The disk guard (:meth:`Retention.disk_guard`, every ``disk_check_interval_s``) deletes the oldest recordings (never
the newest segment of a source, nor video an open incident or an uncut held clip still needs) and unheld clips when
free space falls below the threshold.

:class:`RetentionWorker` runs both in a thread the app's lifespan starts and stops; ``seawatch retention run`` runs
one sweep from the command line (``--dry-run`` counts without deleting).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from seawatch.errors import InputError, StreamError
from seawatch.service.store import ExpiryRules, MediaRow
from seawatch.vision.events import SEVERITIES

log = logging.getLogger(__name__)

DAY_NS = 86_400 * 1_000_000_000
FILE_BATCH = 500  # files looked up in the store per query
MAX_PINS_PER_SWEEP = 50  # clips of held events cut per sweep (each is a remux of recorded segments)
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass
class DiskReport:
    """Free space on the media disk and what the guard did about it (bytes; ``low``: still below the threshold)."""

    path: str
    total_bytes: int
    free_bytes: int
    free_pct: float
    threshold_bytes: int
    low: bool
    freed_bytes: int = 0
    deleted_recordings: int = 0
    deleted_clips: int = 0
    at_ns: int = 0


def utc_text(ns: int) -> str:
    """``2026-12-07 15:08 UTC``."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class GraceState:
    """The upgrade grace of a store (UTC ns): events stored before ``protect_before_ns`` (0: none) are kept until
    ``until_ns``; ``pending_events``: those among them the policy would delete now. ``recorded`` False: retention never
    ran on the store, and this is what its first run would record (a dry run records nothing)."""

    enabled_ns: int
    protect_before_ns: int
    until_ns: int
    pending_events: int = 0
    recorded: bool = True

    def active(self, now_ns: int) -> bool:
        return self.protect_before_ns > 0 and self.enabled_ns < self.until_ns and now_ns < self.until_ns

    def as_dict(self, now_ns: int) -> dict[str, Any]:
        return {**asdict(self), "active": self.active(now_ns)}


@dataclass
class SweepReport:
    """What one sweep deleted (or, ``dry_run``, would delete)."""

    dry_run: bool
    started_ns: int
    duration_s: float = 0.0
    events: int = 0
    snapshots: int = 0  # files of deleted events and snapshots past their own age
    clips: int = 0
    telemetry: int = 0
    orphans: dict[str, int] = field(default_factory=lambda: {"snapshots": 0, "clips": 0, "telemetry": 0, "tmp": 0})
    bytes_freed: int = 0
    clips_pinned: int = 0
    audit_rows: int = 0  # rows of the audit log past audit_days
    batches: int = 0
    max_batch_s: float = 0.0  # longest delete transaction (the write lock is held that long)
    held: dict[str, int] = field(default_factory=dict)
    disk: DiskReport | None = None
    errors: list[str] = field(default_factory=list)
    sample_event_ids: list[str] = field(default_factory=list)  # the first events deleted (or that would be)
    grace: dict[str, Any] | None = None  # GraceState.as_dict while (or, dry run, if) the upgrade grace protects events
    policy: dict[str, Any] = field(default_factory=dict)  # Retention.policy(): the ages this sweep applied

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retention:
    """Retention of one store and media folder under a :class:`~seawatch.service.config.RetentionConfig`.

    ``clips``: the service's ``ClipStore`` (to cut the clips of held events; None: no cutting);
    ``recording``: the ``RecordingConfig`` (how far back recordings reach); ``clock``: UTC ns now.
    """

    def __init__(self, store, media_dir: str | Path, cfg, *, recording=None, clips=None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.media_dir = Path(media_dir)
        self.cfg = cfg
        self.recording = recording
        self.clips = clips
        self.clock = clock
        self._lock = threading.Lock()  # one sweep / guard at a time
        self._counted: set[Path] = set()  # files a dry run has counted already
        self._gone: set[str] = set()
        self._state: GraceState | None = None  # the store's recorded grace (it never changes once recorded)
        self._protect_ns: int | None = None  # this sweep: events stored before this, and older files, are kept

    # ---- policy and the upgrade grace -----------------------------------------------------------------------
    def policy(self) -> dict[str, Any]:
        """The ages in force, in days (null: kept): per severity, per configured source (its effective ages), false
        detections, clips, snapshots, the upgrade grace (``/api/health`` and ``retention run`` show it)."""
        c = self.cfg
        return {"events_days": {sev: c.event_days(sev) for sev in SEVERITIES},
                "clips_days": c.clips_max_age_days, "snapshots_days": c.snapshots_max_age_days,
                "false_detections_days": c.false_detections_max_age_days, "audit_days": c.audit_days,
                "sources": {sid: {"events_days": {sev: c.event_days(sev, sid) for sev in SEVERITIES},
                                  "clips_days": c.clip_days(sid)} for sid in sorted(c.sources)},
                "upgrade_grace_days": c.upgrade_grace_days}

    def rules(self, now: int) -> ExpiryRules:
        """The policy's :class:`ExpiryRules` at ``now`` (the sweep adds the grace's protection while it lasts)."""
        c = self.cfg

        def cut(days: float | None) -> int | None:
            return None if days is None else now - int(days * DAY_NS)

        by_severity = {sev: cut(c.event_days(sev)) for sev in SEVERITIES}
        # only the sources whose ages differ from the site-wide ones need their own SQL
        by_source = {sid: {sev: cut(c.event_days(sev, sid)) for sev in SEVERITIES} for sid, src in c.sources.items()
                     if src.given("events_max_age_days") or src.events_days_by_severity}
        fd = c.false_detections_max_age_days
        return ExpiryRules({k: v for k, v in by_severity.items() if v is not None}, by_source,
                           false_detection_ns=cut(fd), keep_false_detections=fd is None)

    def grace(self, dry_run: bool = False) -> GraceState:
        """The store's upgrade grace, recorded on the first call that is not a dry run (see the module docstring)."""
        if self._state is not None:
            return self._state
        days_ns = int(self.cfg.upgrade_grace_days * DAY_NS)
        st = self.store.retention_state()
        if "enabled_ns" not in st:
            now = self.clock()
            pending = self.store.count_expired(self.rules(now), stored_before_ns=now)
            values = {"enabled_ns": now, "protect_before_ns": now if pending else 0}
            if dry_run:
                return GraceState(now, values["protect_before_ns"], now + days_ns, pending, recorded=False)
            st = self.store.init_retention_state(values)
            if st.get("enabled_ns") == now and pending:
                if days_ns > 0:
                    log.warning(
                        "retention: first run on this store, which already holds %d event(s) older than the retention "
                        "policy (stored before retention was enabled here): nothing stored before %s is deleted until "
                        "%s (storage.retention.upgrade_grace_days: %g). Confirm or hold what must be kept; "
                        "`seawatch retention run --dry-run` counts what will go; upgrade_grace_days: 0 starts now",
                        pending, utc_text(now), utc_text(now + days_ns), self.cfg.upgrade_grace_days)
                else:
                    log.info("retention: first run on this store: %d event(s) older than the policy go now "
                             "(storage.retention.upgrade_grace_days: 0)", pending)
        enabled, protect = int(st["enabled_ns"]), int(st.get("protect_before_ns", 0))
        self._state = GraceState(enabled, protect, enabled + days_ns)
        return self._state

    # ---- the sweep --------------------------------------------------------------------------------------------
    def sweep(self, dry_run: bool = False, stop: threading.Event | None = None) -> SweepReport:
        with self._lock:
            t0 = time.monotonic()
            rep = SweepReport(dry_run=dry_run, started_ns=self.clock(), policy=self.policy())
            self._counted = set()
            self._gone = set()  # events deleted (or, dry run, that would be) by this sweep
            steps = [] if dry_run else [("pin held clips", self._pin_held_clips)]
            try:
                self._grace_step(rep, dry_run)
                steps += [("expire events", self._expire_events), ("media files", self._media_files)]
            except Exception as exc:  # noqa: BLE001 - without the grace state nothing is deleted (database away)
                log.exception("retention: upgrade grace state unavailable")
                rep.errors.append(f"upgrade grace: {exc}")
            steps.append(("audit log", self._expire_audit))  # no grace for it (a table new with migration 0011)
            for name, step in steps:
                if stop is not None and stop.is_set():
                    break
                try:
                    step(rep, dry_run, stop)
                except Exception as exc:  # noqa: BLE001 - one failing step (database away) must not end the worker
                    log.exception("retention: %s failed", name)
                    rep.errors.append(f"{name}: {exc}")
            try:
                rep.disk = self._guard(dry_run)
            except Exception as exc:  # noqa: BLE001
                log.exception("retention: disk guard failed")
                rep.errors.append(f"disk guard: {exc}")
            try:
                rep.held = self.store.held_counts()
            except Exception as exc:  # noqa: BLE001
                rep.errors.append(f"held counts: {exc}")
            rep.duration_s = round(time.monotonic() - t0, 3)
        verb = "would delete" if dry_run else "deleted"
        if rep.events or rep.snapshots or rep.clips or rep.telemetry or any(rep.orphans.values()):
            log.info("retention: %s %d event(s), %d snapshot(s), %d clip(s), %d telemetry file(s), orphans %s "
                     "(%.1f MB) in %.1f s; %d held", verb, rep.events, rep.snapshots, rep.clips, rep.telemetry,
                     rep.orphans, rep.bytes_freed / 1e6, rep.duration_s, rep.held.get("held", 0))
        return rep

    def _grace_step(self, rep: SweepReport, dry_run: bool) -> None:
        """Sets what this sweep protects; the report says how many events the grace keeps and until when."""
        g = self.grace(dry_run)
        now = self.clock()
        self._protect_ns = g.protect_before_ns if g.active(now) else None
        if self._protect_ns is None:
            return
        if g.recorded:  # the events past the policy that only the grace keeps now
            pending = self.store.count_expired(self.rules(now), stored_before_ns=g.protect_before_ns)
            g = replace(g, pending_events=pending)
        rep.grace = g.as_dict(now)

    def _protected(self, row: MediaRow) -> bool:
        return self._protect_ns is not None and row.stored_ns < self._protect_ns

    def _orphan_ok(self, mtime_s: float, orphan_before_s: float) -> bool:
        """A file no event refers to may go: older than the margin, and not from before the upgrade grace's start."""
        return mtime_s < orphan_before_s and (self._protect_ns is None or mtime_s >= self._protect_ns / 1e9)

    def _pin_held_clips(self, rep: SweepReport, dry_run: bool, stop) -> None:
        """Cut the clip of each held, closed event while its recordings still exist."""
        if self.clips is None or self.recording is None or not self.recording.enabled:
            return
        since = self.clock() - int(self.recording.max_age_s * 1e9)
        for row in self.store.held_since(since):
            if rep.clips_pinned >= MAX_PINS_PER_SWEEP or (stop is not None and stop.is_set()):
                return
            if row.clip is None:
                continue
            src, a, b = row.clip
            try:
                if self.clips.path_for(src, a, b).exists():
                    continue
                self.clips.get(src, a, b)
                rep.clips_pinned += 1
            except (StreamError, InputError) as exc:  # not recorded (camera out), or post-roll still coming
                log.debug("retention: clip of held event %s not cut: %s", row.id, exc)

    def _expire_events(self, rep: SweepReport, dry_run: bool, stop) -> None:
        now = self.clock()
        rules = self.rules(now)
        if self._protect_ns is not None:
            rules = replace(rules, protect_stored_before_ns=self._protect_ns)
        after = None
        while not (stop is not None and stop.is_set()):
            rows = self.store.expired_events(rules, after=after, limit=self.cfg.batch_size)
            if not rows:
                return
            after = (rows[-1].at_ns, rows[-1].id)
            if dry_run:
                gone = rows
            else:
                t = time.monotonic()
                gone = self.store.delete_expired([r.id for r in rows], rules)
                rep.max_batch_s = max(rep.max_batch_s, round(time.monotonic() - t, 4))
            rep.batches += 1
            rep.events += len(gone)
            rep.sample_event_ids += [r.id for r in gone[: max(0, 20 - len(rep.sample_event_ids))]]
            self._gone.update(r.id for r in gone)
            shared = self._clips_in_use(gone)
            for r in gone:
                self._remove_event_files(r, rep, dry_run, shared)
            if len(rows) < self.cfg.batch_size:
                return
            if not dry_run and self.cfg.batch_pause_s:
                time.sleep(self.cfg.batch_pause_s)  # the sink's writes get the lock between batches

    def _expire_audit(self, rep: SweepReport, dry_run: bool, stop) -> None:
        """Audit rows older than ``audit_days`` go, in batches of ``batch_size`` (a short transaction each)."""
        days = self.cfg.audit_days
        if days is None:
            return
        cut = self.clock() - int(days * DAY_NS)
        if dry_run:
            rep.audit_rows = self.store.count_audit_before(cut)
            return
        while not (stop is not None and stop.is_set()):
            n = self.store.delete_audit_before(cut, self.cfg.batch_size)
            rep.audit_rows += n
            if n < self.cfg.batch_size:
                break
            if self.cfg.batch_pause_s:
                time.sleep(self.cfg.batch_pause_s)
        if rep.audit_rows:
            log.info("retention: %d audit log row(s) older than %g days deleted", rep.audit_rows, days)

    def _clips_in_use(self, gone: list) -> set[tuple[str, int, int]]:
        """Clip windows of ``gone`` that an event not deleted still refers to (two incidents of one camera with the
        same window, fire and smoke from the same frames, share one file); one query per source and batch."""
        by_src: dict[str, list[tuple[int, int]]] = {}
        for r in gone:
            if r.clip is not None:
                by_src.setdefault(r.clip[0], []).append(r.clip[1:])
        used: set[tuple[str, int, int]] = set()
        for src, wins in by_src.items():
            lo, hi = min(a for a, _ in wins), max(b for _, b in wins)
            used.update(r.clip for r in self.store.clip_owners(src, lo, hi) if r.clip is not None and r.id not in self._gone)
        return used

    def _remove_event_files(self, row, rep: SweepReport, dry_run: bool, shared: set) -> None:
        if row.snapshot_uri:
            path = self._inside(row.snapshot_uri)
            if path is not None and self._unlink(path, rep, dry_run):
                rep.snapshots += 1
        if row.clip is not None and self._clip_path(*row.clip) is not None:
            if row.clip not in shared and self._unlink(self._clip_path(*row.clip), rep, dry_run):
                rep.clips += 1
        tel = self.media_dir / "telemetry" / (_SAFE.sub("_", row.source_id) or "source") / f"{_SAFE.sub('_', row.id)}.json"
        if self._unlink(tel, rep, dry_run):
            rep.telemetry += 1

    def _clip_path(self, source_id: str, start_ns: int, end_ns: int) -> Path | None:
        if self.clips is not None:
            try:
                return self.clips.path_for(source_id, start_ns, end_ns)
            except InputError:
                return None
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$", source_id):
            return None
        return self.media_dir / "clips" / source_id / f"{int(start_ns)}_{int(end_ns)}.mp4"

    def _inside(self, rel: str) -> Path | None:
        """``media_dir / rel`` when it stays inside the media folder (a stored uri is never trusted further)."""
        if not rel or "\x00" in rel or rel.startswith(("/", "\\")) or ".." in Path(rel).parts:
            return None
        return self.media_dir / rel

    def _unlink(self, path: Path, rep: SweepReport | None, dry_run: bool) -> bool:
        if dry_run and path in self._counted:  # a dry run counts a file once (its event's, then its own age)
            return False
        try:
            size = path.stat().st_size
            if dry_run:
                self._counted.add(path)
            else:
                path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("retention: cannot delete %s: %s", path, exc)
            if rep is not None:
                rep.errors.append(f"{path}: {exc.strerror or exc}")
            return False
        if rep is not None:
            rep.bytes_freed += size
        return True

    # ---- media folders ---------------------------------------------------------------------------------------
    def _media_files(self, rep: SweepReport, dry_run: bool, stop) -> None:
        now = self.clock()
        orphan_before_s = time.time() - self.cfg.orphan_min_age_s  # file times are the file system's (wall clock)
        snap_days = self.cfg.snapshots_max_age_days
        snap_cut = None if snap_days is None else now - int(snap_days * DAY_NS)
        for kind, suffix in (("snapshots", ".jpg"), ("telemetry", ".json"), ("clips", ".mp4")):
            for files in self._batches(self.media_dir / kind, suffix, rep, dry_run, orphan_before_s):
                if stop is not None and stop.is_set():
                    return
                if kind == "clips":
                    self._check_clips(files, rep, dry_run, orphan_before_s, now)
                else:
                    self._check_by_id(kind, files, rep, dry_run, orphan_before_s, snap_cut)

    def _batches(self, root: Path, suffix: str, rep: SweepReport, dry_run: bool, orphan_before_s: float):
        """Lists of (path, mtime_s) of ``root/<source>/*suffix``; stale ``.tmp`` leftovers are deleted on the way."""
        if not root.is_dir():
            return
        for src in sorted(p for p in root.iterdir() if p.is_dir()):
            batch: list[tuple[Path, float]] = []
            try:
                entries = list(os.scandir(src))
            except OSError as exc:
                rep.errors.append(f"{src}: {exc.strerror or exc}")
                continue
            for e in entries:
                try:
                    mtime = e.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                if not e.is_file(follow_symlinks=False):
                    continue
                if e.name.endswith(".tmp"):  # a write a crash interrupted
                    if self._orphan_ok(mtime, orphan_before_s) and self._unlink(Path(e.path), rep, dry_run):
                        rep.orphans["tmp"] += 1
                    continue
                if not e.name.endswith(suffix):
                    continue
                batch.append((Path(e.path), mtime))
                if len(batch) >= FILE_BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch

    def _owner_rows(self, stems: list[str]) -> dict[str, Any]:
        rows = self.store.media_rows(stems)
        for stem in stems:
            if stem not in rows and "_" in stem:  # the id may have held characters the file name replaced by "_"
                for r in self.store.media_rows_like(stem.replace("%", "")):
                    if _SAFE.sub("_", r.id) == stem:
                        rows[stem] = r
                        break
        return rows

    def _check_by_id(self, kind: str, files: list[tuple[Path, float]], rep: SweepReport, dry_run: bool,
                     orphan_before_s: float, snap_cut: int | None) -> None:
        """Snapshots (``<id>_<seq>.jpg``) and telemetry (``<id>.json``)."""
        stems = {}
        for path, _m in files:
            stem = path.stem.rsplit("_", 1)[0] if kind == "snapshots" else path.stem
            stems[path] = stem
        rows = self._owner_rows(sorted(set(stems.values())))
        for path, mtime in files:
            row = rows.get(stems[path])
            rel = path.relative_to(self.media_dir).as_posix()
            referenced = row is not None and (kind == "telemetry" or row.snapshot_uri == rel)
            if not referenced:
                if self._orphan_ok(mtime, orphan_before_s) and self._unlink(path, rep, dry_run):
                    rep.orphans[kind] += 1
            elif (kind == "snapshots" and snap_cut is not None and not row.held and not row.open
                  and not row.false_detection and not self._protected(row)  # a false detection's frame: training data
                  and row.age_ns < snap_cut and self._unlink(path, rep, dry_run)):
                rep.snapshots += 1

    def _check_clips(self, files: list[tuple[Path, float]], rep: SweepReport, dry_run: bool, orphan_before_s: float,
                     now: int) -> None:
        for path, mtime in files:
            try:
                a, b = (int(x) for x in path.stem.split("_", 1))
            except ValueError:
                continue  # not a clip this service names: left alone
            src = path.parent.name
            owners = [r for r in self.store.clip_owners(src, a, b) if r.clip == (src, a, b)]
            if not owners:
                if self._orphan_ok(mtime, orphan_before_s) and self._unlink(path, rep, dry_run):
                    rep.orphans["clips"] += 1
                continue
            # each owner's own source age (a clip shared by two incidents goes when both may lose it)
            days = [self.cfg.clip_days(r.source_id) for r in owners]
            if any(d is None for d in days) or any(r.held or r.open or self._protected(r) for r in owners):
                continue
            cuts = [now - int(d * DAY_NS) for d in days]
            if (b < min(cuts) and all(r.age_ns < c for r, c in zip(owners, cuts))
                    and self._unlink(path, rep, dry_run)):
                rep.clips += 1

    # ---- disk guard ------------------------------------------------------------------------------------------
    def threshold_bytes(self, total_bytes: int) -> int:
        return int(max(self.cfg.min_free_disk_pct / 100.0 * total_bytes, self.cfg.min_free_disk_gb * 1024**3))

    def disk_usage(self) -> DiskReport:
        self.media_dir.mkdir(parents=True, exist_ok=True)
        u = shutil.disk_usage(self.media_dir)
        thr = self.threshold_bytes(u.total)
        return DiskReport(str(self.media_dir), u.total, u.free, round(100.0 * u.free / u.total, 2) if u.total else 0.0,
                          thr, u.free < thr, at_ns=self.clock())

    def disk_guard(self, dry_run: bool = False) -> DiskReport:
        with self._lock:
            return self._guard(dry_run)

    def _guard(self, dry_run: bool) -> DiskReport:
        rep = self.disk_usage()
        if not rep.low:
            return rep
        # free a little more than the threshold, so that the guard does not run again at the next segment
        need = rep.threshold_bytes + rep.total_bytes // 100 - rep.free_bytes  # 1 % of the disk above it
        candidates = sorted(self._guard_candidates(), key=lambda c: c[0])
        freed = 0
        for _end_ns, kind, path in candidates:
            if freed >= need:
                break
            try:
                size = path.stat().st_size
                if not dry_run:
                    path.unlink()
            except OSError:
                continue
            freed += size
            if kind == "recording":
                rep.deleted_recordings += 1
            else:
                rep.deleted_clips += 1
        rep.freed_bytes = freed
        before = rep.free_bytes
        if dry_run:
            rep.free_bytes = before + freed
            rep.free_pct = round(100.0 * rep.free_bytes / rep.total_bytes, 2)
        else:
            after = self.disk_usage()
            rep.free_bytes, rep.free_pct = after.free_bytes, after.free_pct
        rep.low = rep.free_bytes < rep.threshold_bytes
        log.warning("disk guard: free space on %s was below %.1f MB (%.1f MB free before): %s %d recording segment(s) "
                    "and %d clip(s), %.1f MB%s", self.media_dir, rep.threshold_bytes / 1e6, before / 1e6,
                    "would delete" if dry_run else "deleted", rep.deleted_recordings, rep.deleted_clips, freed / 1e6,
                    "; STILL LOW: what is left is held evidence, the newest recordings and the database"
                    if rep.low else "")
        return rep

    def _guard_candidates(self) -> list[tuple[int, str, Path]]:
        """(end time ns, kind, path) of what the guard may delete: finished recording segments but each source's
        newest and those an open incident or an uncut held clip still needs, and clips of no held or open event."""
        from seawatch.streams.recording import list_segments

        out: list[tuple[int, str, Path]] = []
        keep_from: dict[str, int] = {}  # source -> recordings from this time on are needed by an open incident
        for src, start in self.store.open_windows():
            keep_from[src] = min(start, keep_from.get(src, start))
        held_windows: dict[str, list[tuple[int, int]]] = {}
        if self.recording is not None:
            since = self.clock() - int(self.recording.max_age_s * 1e9)
            for row in self.store.held_since(since):
                if row.clip is not None:
                    p = self._clip_path(*row.clip)
                    if p is None or not p.exists():
                        held_windows.setdefault(row.clip[0], []).append(row.clip[1:])
        rec_root = self.media_dir / "recordings"
        if rec_root.is_dir():
            for src_dir in rec_root.iterdir():
                if not src_dir.is_dir():
                    continue
                src = src_dir.name
                segs = list_segments(rec_root, src)[:-1]  # never the newest finished segment
                for s in segs:
                    if src in keep_from and s.end_ns >= keep_from[src] - 10 * 10**9:
                        continue
                    if any(s.start_ns - 10 * 10**9 <= b and s.end_ns >= a - 10 * 10**9 for a, b in held_windows.get(src, ())):
                        continue
                    out.append((s.end_ns, "recording", s.path))
        clip_root = self.media_dir / "clips"
        if clip_root.is_dir():
            for src_dir in clip_root.iterdir():
                if not src_dir.is_dir():
                    continue
                for f in src_dir.glob("*_*.mp4"):
                    try:
                        a, b = (int(x) for x in f.stem.split("_", 1))
                    except ValueError:
                        continue
                    owners = [r for r in self.store.clip_owners(src_dir.name, a, b) if r.clip == (src_dir.name, a, b)]
                    if any(r.held or r.open for r in owners):
                        continue
                    out.append((b, "clip", f))
        return out


class RetentionWorker:
    """The retention thread of the service: the disk guard every ``disk_check_interval_s``, a sweep every
    ``sweep_interval_s`` (the first ``first_sweep_delay_s`` after start). :meth:`status` is what health shows."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self.cfg = retention.cfg
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status_lock = threading.Lock()
        self.last_sweep: SweepReport | None = None
        self.last_disk: DiskReport | None = None
        self.totals = {"events": 0, "snapshots": 0, "clips": 0, "telemetry": 0, "orphans": 0, "bytes_freed": 0,
                       "guard_recordings": 0, "guard_clips": 0, "guard_bytes": 0, "sweeps": 0, "audit_rows": 0}
        self.last_error: str | None = None
        self.grace: dict[str, Any] | None = None  # the upgrade grace while it protects events (health shows it)

    def start(self) -> "RetentionWorker":
        self._thread = threading.Thread(target=self._run, name="seawatch-retention", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Ask the thread to stop (a sweep stops between batches) and wait up to ``timeout_s``; True when stopped."""
        self._stop.set()
        t = self._thread
        if t is None:
            return True
        t.join(timeout_s)
        if t.is_alive():
            log.error("retention thread did not stop within %.0f s", timeout_s)
            return False
        self._thread = None
        return True

    def _check_grace(self) -> None:
        """At start: record when retention first ran on the store (and warn when an upgraded store's old events wait
        out the grace), so that health says so before the first sweep."""
        try:
            g = self.retention.grace()
            now = self.retention.clock()
            if g.active(now):
                g = replace(g, pending_events=self.retention.store.count_expired(
                    self.retention.rules(now), stored_before_ns=g.protect_before_ns))
                with self._status_lock:
                    self.grace = g.as_dict(now)
                log.info("retention: upgrade grace until %s: %d event(s) stored before %s are kept until then",
                         utc_text(g.until_ns), g.pending_events, utc_text(g.protect_before_ns))
        except Exception as exc:  # noqa: BLE001 - the first sweep tries again (and deletes nothing without it)
            log.exception("retention: upgrade grace state unavailable")
            with self._status_lock:
                self.last_error = f"upgrade grace: {exc}"

    def _run(self) -> None:
        self._check_grace()
        next_sweep = time.monotonic() + self.cfg.first_sweep_delay_s
        next_disk = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_sweep:
                    self._record_sweep(self.retention.sweep(stop=self._stop))
                    next_sweep = time.monotonic() + self.cfg.sweep_interval_s
                    next_disk = time.monotonic() + self.cfg.disk_check_interval_s  # the sweep ran the guard
                elif now >= next_disk:
                    self._record_disk(self.retention.disk_guard())
                    next_disk = time.monotonic() + self.cfg.disk_check_interval_s
            except Exception as exc:  # noqa: BLE001 - the worker lives on; health shows the error
                log.exception("retention worker")
                with self._status_lock:
                    self.last_error = str(exc)
                next_disk = time.monotonic() + self.cfg.disk_check_interval_s
                next_sweep = max(next_sweep, next_disk)
            self._stop.wait(max(0.05, min(next_sweep, next_disk) - time.monotonic()))

    def _record_disk(self, d: DiskReport) -> None:
        with self._status_lock:
            self.last_disk = d
            self.totals["guard_recordings"] += d.deleted_recordings
            self.totals["guard_clips"] += d.deleted_clips
            self.totals["guard_bytes"] += d.freed_bytes

    def _record_sweep(self, rep: SweepReport) -> None:
        if rep.disk is not None:
            self._record_disk(rep.disk)
        with self._status_lock:
            self.last_sweep = rep
            self.grace = rep.grace
            self.last_error = "; ".join(rep.errors) or None
            t = self.totals
            t["sweeps"] += 1
            for k in ("events", "snapshots", "clips", "telemetry", "bytes_freed", "audit_rows"):
                t[k] += getattr(rep, k)
            t["orphans"] += sum(rep.orphans.values())

    @property
    def disk_low(self) -> bool:
        d = self.last_disk
        return d is not None and d.low

    def status(self) -> dict[str, Any]:
        """For ``GET /api/health``: disk (measured now), the last sweep, totals since start, held counts."""
        try:
            disk = asdict(self.retention.disk_usage())
        except OSError as exc:
            disk = {"error": str(exc)}
        with self._status_lock:
            last = self.last_sweep
            guard = self.last_disk
            grace = self.grace if self.grace is not None and self.retention.clock() < self.grace["until_ns"] else None
            out = {
                "enabled": True,
                "running": self._thread is not None and self._thread.is_alive(),
                # the policy, so a reviewer can be told when an unheld event goes (days after its last phase)
                "policy": self.retention.policy(),
                # an upgraded store's old events waiting out the grace: how many, until when (null: none wait)
                "grace": None if grace is None else dict(grace),
                "disk": disk,
                "disk_guard": None if guard is None else {"at_ns": guard.at_ns, "low": guard.low,
                                                          "freed_bytes": guard.freed_bytes,
                                                          "deleted_recordings": guard.deleted_recordings,
                                                          "deleted_clips": guard.deleted_clips},
                "last_sweep": None if last is None else {
                    "at_ns": last.started_ns, "duration_s": last.duration_s, "events": last.events,
                    "snapshots": last.snapshots, "clips": last.clips, "telemetry": last.telemetry,
                    "orphans": dict(last.orphans), "bytes_freed": last.bytes_freed, "clips_pinned": last.clips_pinned,
                    "audit_rows": last.audit_rows,
                    "errors": list(last.errors)},
                "deleted_since_start": dict(self.totals),
                "held": dict(last.held) if last is not None else None,
                "last_error": self.last_error,
            }
        return out
