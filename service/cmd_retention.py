"""``seawatch retention run``: one retention sweep and disk guard run now (what ``seawatch serve`` does every
``storage.retention.sweep_interval_s``); ``--dry-run`` counts what would go and deletes nothing. Both print the policy
in force (per severity, per camera, false detections) and the upgrade grace: on a store retention never ran on, a dry
run says what the first run will keep and until when (recording nothing); a real run records that first run.

The database must be a Seawatch event store: a missing one, an empty one or someone else's is refused, and a dry run
opens it read-only (a store of an older schema is reported, not upgraded; a real run upgrades it)."""

from __future__ import annotations

import argparse
import json

HELP = "delete expired events, their snapshots and clips, orphaned media (--dry-run: only count); check the disk"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="the `seawatch serve` configuration: database, media folder, retention")
    p.add_argument("--database", metavar="URL", help="database URL instead of the configuration's")
    p.add_argument("--media-dir", metavar="DIR", help="media folder instead of the configuration's")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from seawatch.service.config import load_config
    from seawatch.service.retention import Retention, utc_text
    from seawatch.errors import ConfigError
    from seawatch.service.store import EventStore, inspect_schema
    from seawatch.streams.recording import ClipStore

    cfg = load_config(args.config)  # no --config: the defaults (seawatch-data under the working directory)
    storage = cfg.storage
    url = args.database or storage.resolved_database_url()
    media = storage.resolved_media_dir() if args.media_dir is None else __import__("pathlib").Path(args.media_dir).resolve()
    # look first, without writing: a mistyped path must not become a new empty store reported as "0 to delete", nor
    # someone else's database get our tables; a dry run opens the store read-only and never migrates it
    problem = inspect_schema(url).problem(dry_run=args.dry_run)
    if problem is not None:
        raise ConfigError(problem)
    store = EventStore.open(url, read_only=args.dry_run)
    try:
        clips = ClipStore(media / "clips", media / "recordings")
        rep = Retention(store, media, storage.retention, recording=storage.recording, clips=clips).sweep(dry_run=args.dry_run)
    finally:
        store.close()
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2, sort_keys=True))
    else:
        verb = "would delete" if rep.dry_run else "deleted"
        o = rep.orphans
        print(f"{verb}: {rep.events} event(s), {rep.snapshots} snapshot(s), {rep.clips} clip(s), {rep.telemetry} "
              f"telemetry file(s); orphans: {o['snapshots']} snapshot(s), {o['clips']} clip(s), {o['telemetry']} "
              f"telemetry, {o['tmp']} leftover(s); {rep.bytes_freed / 1e6:.1f} MB; {rep.duration_s:.2f} s")
        if not rep.dry_run:
            print(f"clips of held events cut from recordings: {rep.clips_pinned}")
        print(f"policy: {storage.retention.summary()}")
        g = rep.grace
        if g is not None and not g["recorded"]:
            print(f"upgrade grace: retention never ran on this store; its first run (`seawatch serve` or `seawatch "
                  f"retention run`) keeps the {g['pending_events']} event(s) already older than the policy, and "
                  f"everything else stored before it, until {utc_text(g['until_ns'])} "
                  f"(storage.retention.upgrade_grace_days: {storage.retention.upgrade_grace_days:g})")
        elif g is not None:
            print(f"upgrade grace: {g['pending_events']} event(s) older than the policy, stored before retention was "
                  f"enabled on this store ({utc_text(g['protect_before_ns'])}), are kept until {utc_text(g['until_ns'])}; "
                  "nothing stored before then is deleted until that date")
        h = rep.held
        print(f"held (never deleted): {h.get('held', 0)} event(s): {h.get('confirmed', 0)} confirmed, "
              f"{h.get('holds', 0)} with an active hold (evidence export / reviewer); {h.get('open', 0)} open incident(s)")
        d = rep.disk
        if d is not None:
            print(f"disk {d.path}: {d.free_bytes / 1e9:.1f} GB free ({d.free_pct:.1f} %), threshold "
                  f"{d.threshold_bytes / 1e9:.1f} GB" + (f"; guard {verb} {d.deleted_recordings} recording(s), "
                                                          f"{d.deleted_clips} clip(s)" if d.freed_bytes else "")
                  + ("; STILL LOW" if d.low else ""))
        for e in rep.errors:
            print(f"error: {e}")
    return 1 if rep.errors else 0
