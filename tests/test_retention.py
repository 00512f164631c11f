"""Event and media retention: expired events go with their files, evidence (confirmed, exported, held) and open
incidents stay, orphans are cleaned, dry runs delete nothing, the disk guard deletes the oldest unheld media first,
health shows it; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from seawatch.errors import ConfigError
from seawatch.service.config import RetentionConfig, load_config
from seawatch.service.retention import Retention, RetentionWorker
from seawatch.service.store import EventStore, events_table
from seawatch.vision.events import ClipRef, Event, Snapshot
from test_service_store import db_url, new_pg_database, postgres_server, sqlite_store, store  # noqa: F401 - fixtures: both databases

S = 1_000_000_000
DAY = 86_400 * S
NOW = time.time_ns()


def cfg(**kw) -> RetentionConfig:
    """A retention policy for the tests: no upgrade grace unless ``upgrade_grace_days`` is given (the tests below it
    are about a store retention has run on for long)."""
    base = dict(events_max_age_days=90, clips_max_age_days=30, orphan_min_age_s=3600, batch_size=2, batch_pause_s=0.0,
                min_free_disk_pct=0, min_free_disk_gb=0, upgrade_grace_days=0)
    base.update(kw)
    return RetentionConfig.model_validate(base)


def put_event(store: EventStore, media: Path, eid: str, age_days: float, *, open_: bool = False, severity: str = "high",
              source: str = "cam-1", seqs: int = 1, clip_file: bool = True, telemetry: bool = True) -> Event:
    """A stored incident that ended ``age_days`` ago (stored then too), with its snapshot file(s) (one per phase
    seq, as the sink writes them; the last one referenced), its clip file and a telemetry file."""
    t = NOW - int(age_days * DAY)
    start = t - 10 * S
    snap_dir = media / "snapshots" / source
    snap_dir.mkdir(parents=True, exist_ok=True)
    for k in range(seqs):
        (snap_dir / f"{eid}_{k}.jpg").write_bytes(b"\xff\xd8" + bytes(1000) + b"\xff\xd9")
    uri = f"snapshots/{source}/{eid}_{seqs - 1}.jpg"
    clip = ClipRef(source, start - 5 * S, None if open_ else t + 5 * S, 5 * S, 5 * S)
    ev = Event(id=eid, type="fire", severity=severity, phase="update" if open_ else "end", seq=seqs - 1, source_id=source,
               start_ns=start, at_ns=t, end_ns=None if open_ else t, labels=("fire",), scores=(0.9,),
               snapshot=Snapshot(source, start, (1, 2, 3, 4), 0.5, uri=uri), clip=clip)
    store.put(ev)
    with store.engine.begin() as conn:  # stored when it happened (put stamps the wall clock)
        conn.execute(events_table.update().where(events_table.c.id == eid).values(stored_ns=t))
    if clip_file and not open_:
        p = media / "clips" / source / f"{clip.start_ns}_{clip.end_ns}.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes(2000))
    if telemetry:
        p = media / "telemetry" / source / f"{eid}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"event_id": eid}))
    return ev


def files_of(media: Path, ev: Event) -> list[Path]:
    c = ev.clip
    out = [media / ev.snapshot.uri, media / "telemetry" / ev.source_id / f"{ev.id}.json"]
    if c.end_ns is not None:
        out.append(media / "clips" / c.source_id / f"{c.start_ns}_{c.end_ns}.mp4")
    return out


def age_files(root: Path, seconds: float) -> None:
    """Every file under ``root`` last modified ``seconds`` ago (orphans must be older than the margin)."""
    t = time.time() - seconds
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (t, t))


@pytest.fixture
def site(store, tmp_path):
    """A year-old site: expired plain events, expired evidence (confirmed, exported, held), an open incident,
    recent events."""
    media = tmp_path / "media"
    evs = {
        "old1": put_event(store, media, "old1", 200),
        "old2": put_event(store, media, "old2", 150, seqs=3),
        "olddis": put_event(store, media, "olddis", 120),
        "conf": put_event(store, media, "conf", 300),
        "expo": put_event(store, media, "expo", 250),
        "manual": put_event(store, media, "manual", 400),
        "open": put_event(store, media, "open", 365, open_=True),
        "recent": put_event(store, media, "recent", 10),
        "recent2": put_event(store, media, "recent2", 60),
    }
    store.review("olddis", "dismissed", "olga", note="harmless")
    store.review("conf", "acknowledged", "olga")
    store.review("conf", "confirmed", "rita", note="real fire on the quay")
    store.hold("expo", "evidence_export", "user:rita")
    store.hold("manual", "manual", "user:rita", "insurance claim")
    age_files(media, 2 * 86400)
    return media, evs


def test_expired_events_go_with_their_files_evidence_and_open_incidents_stay(store, site):
    media, evs = site
    rep = Retention(store, media, cfg()).sweep()
    assert rep.errors == []
    assert sorted(rep.sample_event_ids) == ["old1", "old2", "olddis"] and rep.events == 3
    assert rep.batches == 2  # batch_size 2: two short transactions
    left = {r[0] for r in store.engine.connect().execute(sa.text("select id from events"))}
    assert left == {"conf", "expo", "manual", "open", "recent", "recent2"}
    for eid in ("old1", "old2", "olddis"):
        assert store.get(eid) is None and store.audit(eid) == []
        assert not any(p.exists() for p in files_of(media, evs[eid])), eid
    # their earlier-seq snapshots were orphans (nothing refers to them) older than the margin
    assert not list((media / "snapshots" / "cam-1").glob("old2_*"))
    with store.engine.connect() as conn:  # the audit trail went with the event (cascade on both databases)
        assert conn.execute(sa.text("select count(*) from review_actions where event_id = 'olddis'")).scalar_one() == 0
    for eid in ("conf", "expo", "manual", "open", "recent", "recent2"):
        assert store.get(eid) is not None
        for p in files_of(media, evs[eid]):
            if "clips" in p.parts and eid in ("recent2",):
                continue  # its clip is past clips_max_age_days (30): checked below
            assert p.exists(), (eid, p)
    # clips of unheld events older than 30 days go, the event row stays; the evidence's clips stay
    assert not files_of(media, evs["recent2"])[2].exists() and store.get("recent2") is not None
    assert files_of(media, evs["recent"])[2].exists()
    assert store.get("conf").review_status == "confirmed" and len(store.audit("conf")) == 2
    assert rep.held == {"confirmed": 1, "holds": 2, "held": 3, "open": 1}
    # a second sweep finds nothing more
    again = Retention(store, media, cfg()).sweep()
    assert again.events == 0 and again.clips == 0 and sum(again.orphans.values()) == 0


def test_dry_run_deletes_nothing_and_counts_what_a_real_run_deletes(store, site):
    media, _ = site
    before = sorted(str(p) for p in media.rglob("*") if p.is_file())
    n = store.count()
    dry = Retention(store, media, cfg()).sweep(dry_run=True)
    assert sorted(str(p) for p in media.rglob("*") if p.is_file()) == before and store.count() == n
    assert dry.events == 3 and dry.dry_run
    real = Retention(store, media, cfg()).sweep()
    assert (real.events, real.snapshots, real.clips, real.telemetry, real.orphans, real.bytes_freed) == \
        (dry.events, dry.snapshots, dry.clips, dry.telemetry, dry.orphans, dry.bytes_freed)
    assert store.count() == n - 3


def test_orphans_older_than_the_margin_are_removed_fresh_ones_and_referenced_files_kept(store, tmp_path):
    media = tmp_path / "media"
    keep = put_event(store, media, "keep", 1, seqs=4)  # recent, with 3 earlier-seq snapshots nobody refers to
    (media / "snapshots" / "cam-1" / "ghost_0.jpg").write_bytes(b"x")  # event never stored / deleted
    (media / "clips" / "cam-1" / "1000_2000.mp4").write_bytes(b"x")  # a clip of no event
    (media / "clips" / "cam-1" / "notes.mp4").write_bytes(b"x")  # not a name this service writes: left alone
    (media / "telemetry" / "cam-1" / "ghost.json").write_text("{}")
    (media / "snapshots" / "cam-1" / "keep_9.tmp").write_bytes(b"x")  # a write a crash cut short
    age_files(media, 7200)
    fresh = media / "snapshots" / "cam-1" / "ghost2_0.jpg"  # just written: its event may not be committed yet
    fresh.write_bytes(b"x")
    rep = Retention(store, media, cfg(orphan_min_age_s=3600)).sweep()
    assert rep.orphans == {"snapshots": 4, "clips": 1, "telemetry": 1, "tmp": 1}
    assert rep.events == 0 and store.get("keep") is not None
    assert all(p.exists() for p in files_of(media, keep))
    assert sorted(p.name for p in (media / "snapshots" / "cam-1").iterdir()) == ["ghost2_0.jpg", "keep_3.jpg"]
    assert (media / "clips" / "cam-1" / "notes.mp4").exists() and fresh.exists()


def test_per_severity_ages_and_snapshot_age(store, tmp_path):
    media = tmp_path / "media"
    crit = put_event(store, media, "crit", 200, severity="critical")
    low = put_event(store, media, "low", 40, severity="low")
    mid = put_event(store, media, "mid", 40, severity="medium")
    c = cfg(events_days_by_severity={"critical": 365, "low": 30}, snapshots_max_age_days=20, clips_max_age_days=None)
    rep = Retention(store, media, c).sweep()
    assert rep.sample_event_ids == ["low"]
    assert store.get("crit") is not None and store.get("mid") is not None and store.get("low") is None
    # low and mid ended at the same moment on one camera: one clip file, which stays while mid refers to it
    assert files_of(media, low)[2] == files_of(media, mid)[2]
    assert not files_of(media, low)[0].exists() and not files_of(media, low)[1].exists()
    # snapshots past 20 days go, the rows and the other files stay
    for ev in (crit, mid):
        snap, tel, clip = files_of(media, ev)
        assert not snap.exists() and tel.exists() and clip.exists()
    assert rep.snapshots == 3  # low's (with its event) + crit's + mid's


def test_a_review_between_selection_and_delete_keeps_the_event(store, tmp_path):
    media = tmp_path / "media"
    put_event(store, media, "a", 200)
    put_event(store, media, "b", 200)
    rows = store.expired_events({"high": NOW - 90 * DAY})
    assert [r.id for r in rows] == ["a", "b"] or [r.id for r in rows] == ["b", "a"]
    store.review("a", "confirmed", "rita")  # the reviewer was quicker than the sweep
    gone = store.delete_expired([r.id for r in rows])
    assert [r.id for r in gone] == ["b"] and store.get("a") is not None and store.get("b") is None


def test_age_counts_from_when_the_event_was_stored_too(store, tmp_path):
    """A camera whose clock is a year behind must not have its events deleted the moment they are stored."""
    media = tmp_path / "media"
    put_event(store, media, "skewed", 400)
    with store.engine.begin() as conn:
        conn.execute(events_table.update().where(events_table.c.id == "skewed").values(stored_ns=NOW - DAY))
    assert Retention(store, media, cfg()).sweep().events == 0 and store.get("skewed") is not None


def test_schema_has_the_holds_table_at_head(store):
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar_one() == "0011"
    assert sa.inspect(store.engine).has_table("event_holds")
    with pytest.raises(KeyError):
        store.hold("nope", "manual", "rita")


# ---- the disk guard -------------------------------------------------------------------------------------------
def _segment(media: Path, source: str, start_ns: int, end_ns: int, size: int = 100_000) -> Path:
    p = media / "recordings" / source / f"{start_ns}_{end_ns}.mp4"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(bytes(size))
    return p


def test_disk_guard_deletes_the_oldest_unheld_media_first(store, tmp_path, monkeypatch):
    media = tmp_path / "media"
    conf = put_event(store, media, "conf", 5)  # confirmed: its clip is evidence
    store.review("conf", "confirmed", "rita")
    plain = put_event(store, media, "plain", 4)
    for p in (media / "clips").rglob("*.mp4"):
        p.write_bytes(bytes(100_000))
    # recordings of cam-2: six one-minute segments 3 days ago (the newest is always kept)
    t0 = NOW - 3 * DAY
    segs = [_segment(media, "cam-2", t0 + i * 60 * S, t0 + (i + 1) * 60 * S) for i in range(6)]
    # cam-3, 2 days ago: an open incident whose clip starts in the second segment needs it and what follows
    o0 = NOW - 2 * DAY
    segs3 = [_segment(media, "cam-3", o0 + i * 60 * S, o0 + (i + 1) * 60 * S) for i in range(4)]
    store.put(Event(id="open3", type="fire", severity="high", phase="start", seq=0, source_id="cam-3",
                    start_ns=o0 + 80 * S, at_ns=o0 + 80 * S, clip=ClipRef("cam-3", o0 + 75 * S, None, 5 * S, 5 * S)))
    initial = sum(p.stat().st_size for p in media.rglob("*") if p.is_file())
    total, free0 = 40_000_000, [1_900_000]

    def usage(_path):  # a 40 MB disk with free0 bytes free, plus what the guard deleted
        now = sum(p.stat().st_size for p in media.rglob("*") if p.is_file())
        free = free0[0] + initial - now
        return type("U", (), {"total": total, "used": total - free, "free": free})()

    monkeypatch.setattr("seawatch.service.retention.shutil.disk_usage", usage)
    # threshold 5 % = 2 MB; it frees up to 1 % more (2.4 MB): 500 kB, five 100 kB files
    ret = Retention(store, media, cfg(min_free_disk_pct=5))
    d = ret.disk_guard(dry_run=True)
    assert d.freed_bytes == 500_000 and not d.low
    assert all(p.exists() for p in segs + segs3) and files_of(media, plain)[2].exists()  # counted only
    d = ret.disk_guard()
    assert (d.freed_bytes, d.deleted_clips, d.deleted_recordings, d.free_bytes, d.low) == (500_000, 1, 4, 2_400_000, False)
    # oldest first: the unheld clip (its window ended 4 days ago), then cam-2's four oldest segments
    assert not files_of(media, plain)[2].exists()
    assert [p.exists() for p in segs] == [False, False, False, False, True, True]
    assert all(p.exists() for p in segs3)
    assert files_of(media, conf)[2].exists()  # the confirmed event's clip is never a candidate
    # the disk stays full: everything deletable goes, then nothing more; evidence, newest and needed video stay
    free0[0] = -10_000_000
    d = ret.disk_guard()
    assert d.low and d.deleted_recordings == 2 and d.deleted_clips == 0  # cam-2's 5th, cam-3's first
    assert not segs[4].exists() and not segs3[0].exists()
    assert ret.disk_guard().freed_bytes == 0
    assert segs[5].exists() and all(p.exists() for p in segs3[1:]) and files_of(media, conf)[2].exists()


def test_disk_report_is_the_real_disk(store, tmp_path):
    import shutil

    ret = Retention(store, tmp_path / "media", cfg(min_free_disk_pct=1, min_free_disk_gb=0.5))
    d = ret.disk_usage()
    u = shutil.disk_usage(tmp_path)
    assert d.total_bytes == u.total and abs(d.free_bytes - u.free) < 50 * 1024**2
    assert d.threshold_bytes == int(max(u.total / 100, 0.5 * 1024**3)) and d.low == (d.free_bytes < d.threshold_bytes)


# ---- the service: lifespan thread, health, evidence hold, CLI ----------------------------------------------------
def _app_settings(tmp_path, db_url, **retention):
    from seawatch.service.auth import hash_api_key

    return load_config(data={
        "storage": {"data_dir": str(tmp_path), "database_url": db_url, "media_dir": str(tmp_path / "media"),
                    "retention": {"first_sweep_delay_s": 0, "min_free_disk_pct": 0, "min_free_disk_gb": 0,
                                  "batch_pause_s": 0, "upgrade_grace_days": 0, **retention}},
        "auth": {"api_keys": [{"name": "rev", "role": "reviewer", "key_sha256": hash_api_key("rev-key")}]},
    })


def test_service_sweeps_in_the_background_and_health_shows_it(store, db_url, tmp_path):
    from fastapi.testclient import TestClient

    from seawatch.service.app import create_app

    media = tmp_path / "media"
    put_event(store, media, "old", 200)
    put_event(store, media, "conf", 200)
    store.review("conf", "confirmed", "rita")
    put_event(store, media, "fresh", 1)
    app = create_app(_app_settings(tmp_path, db_url), store=store)
    key = {"X-API-Key": "rev-key"}
    with TestClient(app) as client:
        worker = app.state.retention
        assert isinstance(worker, RetentionWorker)
        deadline = time.monotonic() + 20
        while worker.last_sweep is None and time.monotonic() < deadline:
            time.sleep(0.05)
        anon = client.get("/api/health").json()
        assert set(anon) == {"status", "version", "database"} and anon["status"] == "ok"
        h = client.get("/api/health", headers=key).json()
        r = h["retention"]
        assert r["running"] and r["last_sweep"]["events"] == 1 and r["deleted_since_start"]["events"] == 1
        assert r["held"] == {"confirmed": 1, "holds": 0, "held": 1, "open": 0}
        assert r["disk"]["free_bytes"] > 0 and r["disk"]["low"] is False and r["last_error"] is None
        assert store.get("old") is None and store.get("conf") is not None
        # an evidence export holds the event for good; a reviewer's hold too
        z = client.get("/api/events/fresh/evidence.zip", headers=key)
        assert z.status_code == 200, z.text
        assert [h["reason"] for h in store.holds("fresh")] == ["evidence_export"]
        assert store.holds("fresh")[0]["by"] == "key:rev"
        with client.websocket_connect("/api/live", headers=key) as ws:  # other desks learn of a hold at once
            assert ws.receive_json()["kind"] == "hello"
            r2 = client.post("/api/events/fresh/hold", headers=key, json={"note": "claim 42"})
            msg = ws.receive_json()
            while msg["kind"] == "sources":
                msg = ws.receive_json()
            assert (msg["kind"], msg["event"]["id"]) == ("hold", "fresh")
        assert r2.status_code == 200 and [h["reason"] for h in r2.json()] == ["evidence_export", "manual"]
        # searches and single events say which events are held (confirmed ones show their review status)
        listed = {e["id"]: e["held"] for e in client.get("/api/events", headers=key).json()["events"]}
        assert listed == {"fresh": True, "conf": False}
        assert client.get("/api/events/fresh", headers=key).json()["held"] is True
        assert client.get("/api/events/conf", headers=key).json()["held"] is False
        assert client.post("/api/events/nope/hold", headers=key).status_code == 404
        assert client.get("/api/events/fresh/holds").status_code == 401
    assert not worker._thread  # stopped with the app (its thread joined)


def test_health_is_degraded_while_the_disk_stays_low(store, db_url, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from seawatch.service.app import create_app

    monkeypatch.setattr("seawatch.service.retention.shutil.disk_usage",
                        lambda _p: type("U", (), {"total": 10**9, "used": 10**9 - 10**6, "free": 10**6})())
    app = create_app(_app_settings(tmp_path, db_url, min_free_disk_pct=5, first_sweep_delay_s=3600), store=store)
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while app.state.retention.last_disk is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/api/health").json()["status"] == "degraded"
        r = client.get("/api/health", headers={"X-API-Key": "rev-key"}).json()["retention"]
        assert r["disk"]["low"] and r["disk_guard"]["low"] and r["last_sweep"] is None


def test_worker_stops_within_its_timeout_even_mid_sweep(store, tmp_path, monkeypatch):
    media = tmp_path / "media"
    for i in range(6):
        put_event(store, media, f"e{i}", 200)
    ret = Retention(store, media, cfg(batch_size=1, batch_pause_s=0.0))
    started = threading.Event()
    real = store.delete_expired

    def slow(ids, rules=None):
        started.set()
        time.sleep(0.3)
        return real(ids, rules)

    monkeypatch.setattr(store, "delete_expired", slow)
    w = RetentionWorker(replace_cfg(ret, first_sweep_delay_s=0)).start()
    assert started.wait(10)
    t = time.monotonic()
    assert w.stop(timeout_s=5) is True and time.monotonic() - t < 2
    assert 0 < 6 - store.count() < 6  # it stopped between batches, not after the whole sweep


def replace_cfg(ret: Retention, **kw) -> Retention:
    ret.cfg = ret.cfg.model_copy(update=kw)
    return ret


def test_cli_retention_run(store, db_url, tmp_path, capsys):
    from seawatch.cli import main

    media = tmp_path / "media"
    put_event(store, media, "old", 200)
    put_event(store, media, "new", 1)
    cfg_file = tmp_path / "site.yaml"
    cfg_file.write_text(f"storage: {{data_dir: {tmp_path}, retention: {{min_free_disk_pct: 0, min_free_disk_gb: 0, "
                        "upgrade_grace_days: 0}}\n")
    args = ["retention", "run", "--config", str(cfg_file), "--database", db_url, "--media-dir", str(media)]
    assert main([*args, "--dry-run", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["dry_run"] and rep["events"] == 1 and store.get("old") is not None
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "deleted: 1 event(s)" in out and "held (never deleted): 0" in out
    assert store.get("old") is None and store.get("new") is not None


# ---- configuration -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("retention, words", [
    ({"clips_max_age_days": 120}, "clips_max_age_days (120) is longer than events are kept (90 days)"),
    ({"snapshots_max_age_days": 400, "events_days_by_severity": {"critical": 365}}, "snapshots_max_age_days (400)"),
    ({"events_max_age_days": 0}, "greater than or equal to 1"),
    ({"events_days_by_severity": {"urgent": 10}}, "storage.retention.events_days_by_severity.urgent"),
    ({"events_days_by_severity": {"low": 0.5}}, "between 1 and 36500"),
    ({"min_free_disk_pct": 80}, "less than or equal to 50"),
    ({"orphan_min_age_s": 1}, "greater than or equal to 600"),
    ({"keep_forever": True}, "unknown setting 'keep_forever'"),
])
def test_invalid_retention_is_refused_naming_the_field(retention, words):
    with pytest.raises(ConfigError) as info:
        load_config("site.yaml", data={"storage": {"retention": retention}})
    msg = str(info.value)
    assert "site.yaml: storage.retention" in msg and words in msg, msg


def test_retention_defaults_keep_events_longer_than_clips():
    r = load_config().storage.retention
    assert r.enabled and r.events_max_age_days == 90 and r.clips_max_age_days == 30
    assert r.clips_max_age_days < r.events_max_age_days and r.snapshots_max_age_days is None
    assert r.event_days("critical") == 90
    assert load_config(data={"storage": {"retention": {"events_max_age_days": None, "clips_max_age_days": 400}}}) \
        .storage.retention.event_days("low") is None  # kept forever: any clip age is fine



# ---- held clips outlive the recordings they are cut from -----------------------------------------------------------
def test_a_held_events_clip_is_cut_before_its_recordings_expire(store, tmp_path):
    from seawatch.service.config import RecordingConfig
    from seawatch.streams.recording import ClipStore, enforce_retention, ffprobe_summary
    from test_recording_safety import _record
    from test_streams import make_clip

    media = tmp_path / "media"
    start = NOW - 2 * DAY
    _record(make_clip(tmp_path / "src.mp4", size="320x240"), media / "recordings", "cam-1", start)
    assert len(list((media / "recordings" / "cam-1").glob("*_*.mp4"))) >= 2

    def incident(eid: str, t_s: float) -> Event:
        t = start + int(t_s * S)
        ev = Event(id=eid, type="fire", severity="high", phase="end", seq=1, source_id="cam-1", start_ns=t,
                   at_ns=t + S, end_ns=t + S, labels=("fire",), scores=(0.9,),
                   clip=ClipRef("cam-1", t - 500_000_000, t + 2 * S, 500_000_000, S))
        store.put(ev)
        return ev

    held, plain = incident("held", 1.0), incident("plain", 1.5)
    store.review("held", "confirmed", "rita")
    clips = ClipStore(media / "clips", media / "recordings")
    ret = Retention(store, media, cfg(), recording=RecordingConfig(max_age_s=7 * 86400), clips=clips)
    rep = ret.sweep()
    assert rep.clips_pinned == 1 and rep.errors == []
    path = clips.path_for("cam-1", held.clip.start_ns, held.clip.end_ns)
    assert ffprobe_summary(path)["packets"] > 0
    assert not clips.path_for("cam-1", plain.clip.start_ns, plain.clip.end_ns).exists()  # only held clips are cut
    # the recordings expire; the confirmed incident keeps its video, and the next sweeps leave it alone
    assert enforce_retention(media / "recordings", "cam-1", max_age_s=60, max_total_bytes=None)
    assert not list((media / "recordings" / "cam-1").glob("*_*.mp4"))
    again = ret.sweep()
    assert again.clips_pinned == 0 and again.clips == 0 and path.exists()



# ---- per-source ages -----------------------------------------------------------------------------------------------
def test_per_source_ages_beat_the_site_wide_ones(store, tmp_path):
    """A quay camera kept a year (its clips 250 days), a car park 30 days (its clips a week), a gate camera's low
    events 10 days; the other cameras follow the site-wide ages (90 days, critical 730). A camera's own age beats the
    site's severity table."""
    media = tmp_path / "media"
    c = cfg(events_max_age_days=90, events_days_by_severity={"critical": 730}, clips_max_age_days=30, sources={
        "quay": {"events_max_age_days": 365, "clips_max_age_days": 250},
        "park": {"events_max_age_days": 30, "clips_max_age_days": 7},
        "gate": {"events_days_by_severity": {"low": 10}}})
    evs = {
        "quay200": put_event(store, media, "quay200", 200, source="quay"),  # the old code deleted it (90 days)
        "quay400": put_event(store, media, "quay400", 400, source="quay"),
        "quaycrit400": put_event(store, media, "quaycrit400", 400, source="quay", severity="critical"),
        "park40": put_event(store, media, "park40", 40, source="park"),  # the old code kept it (90 days)
        "parkcrit40": put_event(store, media, "parkcrit40", 40, source="park", severity="critical"),
        "park10": put_event(store, media, "park10", 10, source="park"),
        "gatelow20": put_event(store, media, "gatelow20", 20, source="gate", severity="low"),
        "gatehigh20": put_event(store, media, "gatehigh20", 20, source="gate"),
        "cam100": put_event(store, media, "cam100", 100),
        "camcrit100": put_event(store, media, "camcrit100", 100, severity="critical"),
    }
    age_files(media, 2 * 86400)
    dry = Retention(store, media, c).sweep(dry_run=True)
    rep = Retention(store, media, c).sweep()
    gone = {"quay400", "quaycrit400", "park40", "parkcrit40", "gatelow20", "cam100"}
    assert rep.errors == [] and sorted(rep.sample_event_ids) == sorted(gone) and rep.events == 6 == dry.events
    left = {r[0] for r in store.engine.connect().execute(sa.text("select id from events"))}
    assert left == set(evs) - gone
    # clips: park's go after 7 days (park10's, 10 days old), quay's are kept 250 days, the others' after 30 days
    clip = {k: files_of(media, ev)[2] for k, ev in evs.items()}
    assert not clip["park10"].exists() and store.get("park10") is not None
    assert clip["gatehigh20"].exists() and clip["quay200"].exists() and clip["camcrit100"].exists() is False
    assert rep.policy["sources"]["quay"]["events_days"] == {"low": 365, "medium": 365, "high": 365, "critical": 365}
    assert rep.policy["sources"]["gate"]["events_days"] == {"low": 10, "medium": 90, "high": 90, "critical": 730}
    assert rep.policy["sources"]["park"]["clips_days"] == 7 and rep.policy["clips_days"] == 30


def test_a_source_kept_forever_and_the_others_swept(store, tmp_path):
    media = tmp_path / "media"
    put_event(store, media, "evidence-cam", 5000, source="court")
    put_event(store, media, "other", 5000)
    rep = Retention(store, media, cfg(sources={"court": {"events_max_age_days": None, "clips_max_age_days": None}})).sweep()
    assert rep.sample_event_ids == ["other"] and store.get("evidence-cam") is not None
    assert all(p.exists() for p in files_of(media, store.get("evidence-cam")))


def test_the_per_source_sweep_stays_one_index_walk(sqlite_store):
    """The expiry query walks the (at_ns, id) index from the oldest event, whatever the number of sources and
    severities in the rules (no scan of the whole table, no temporary sort); on SQLite (PostgreSQL's plan depends on
    its statistics)."""
    store = sqlite_store
    from seawatch.service.store import _expiry_conds

    c = cfg(events_days_by_severity={"critical": 730}, sources={"quay": {"events_max_age_days": 365},
                                                                "park": {"events_days_by_severity": {"low": 10}}})
    rules = Retention(store, "/nonexistent", c).rules(NOW)
    assert set(rules.by_source) == {"quay", "park"}
    stmt = store._media_select().where(*_expiry_conds(rules)).order_by(events_table.c.at_ns, events_table.c.id).limit(500)
    compiled = stmt.compile(dialect=store.engine.dialect, compile_kwargs={"render_postcompile": True})
    with store.engine.connect() as conn:
        params = tuple(compiled.params[k] for k in compiled.positiontup or ())
        plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params))
    assert "SEARCH events USING INDEX ix_events_at (at_ns<?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


# ---- false detections: the training data of `seawatch reviews export` ------------------------------------------
def test_false_detections_are_kept_longer_with_their_snapshot(store, tmp_path):
    media = tmp_path / "media"
    c = cfg(snapshots_max_age_days=20, sources={"quay": {"events_max_age_days": 730}})
    evs = {eid: put_event(store, media, eid, age, source=src) for eid, age, src in [
        ("fd200", 200, "cam-1"), ("fd400", 400, "cam-1"), ("plain200", 200, "cam-1"), ("fd_then_ack", 200, "cam-1"),
        ("ack_then_fd", 200, "cam-1"), ("quayfd500", 500, "quay"), ("fd50", 50, "cam-1"), ("plain50", 50, "cam-1")]}
    for eid in ("fd200", "fd400", "fd_then_ack", "quayfd500", "fd50"):
        store.review(eid, "dismissed", "olga", note="a buoy", reason="false_detection")
    store.review("plain200", "dismissed", "olga", note="harmless")
    store.review("plain50", "dismissed", "olga", note="harmless")
    store.review("fd_then_ack", "acknowledged", "rita")  # the newest verdict is no longer "the detector was wrong"
    store.review("ack_then_fd", "acknowledged", "olga")
    store.review("ack_then_fd", "dismissed", "rita", reason="false_detection")
    age_files(media, 2 * 86400)
    # null: false detections are kept for good
    rep = Retention(store, media, cfg(snapshots_max_age_days=20, false_detections_max_age_days=None,
                                      sources={"quay": {"events_max_age_days": 730}})).sweep()
    assert sorted(rep.sample_event_ids) == ["fd_then_ack", "plain200"]
    # the default, 365 days: fd400 goes now; fd200 (the old code deleted it at 90 days) and ack_then_fd stay; the
    # quay keeps its events 730 days, its false detections as long (the longer of the two)
    assert c.false_detections_max_age_days == 365
    rep = Retention(store, media, c).sweep()
    assert rep.sample_event_ids == ["fd400"]
    left = {r[0] for r in store.engine.connect().execute(sa.text("select id from events"))}
    assert left == {"fd200", "ack_then_fd", "quayfd500", "fd50", "plain50"}
    # a false detection keeps its snapshot (the training frame) past snapshots_max_age_days; its clip goes as any
    assert files_of(media, evs["fd50"])[0].exists() and files_of(media, evs["fd200"])[0].exists()
    assert not files_of(media, evs["plain50"])[0].exists()
    assert not files_of(media, evs["fd50"])[2].exists()
    # what `seawatch reviews export` reads is still there
    from seawatch.service.cmd_reviews_export import _verdict

    assert _verdict(store.get("fd200")) == "background" and _verdict(store.get("ack_then_fd")) == "background"


def test_a_false_detection_verdict_between_selection_and_delete_keeps_the_event(store, tmp_path):
    media = tmp_path / "media"
    put_event(store, media, "a", 200)
    put_event(store, media, "b", 200)
    for eid in ("a", "b"):
        store.review(eid, "dismissed", "olga")
    ret = Retention(store, media, cfg())
    rules = ret.rules(NOW)
    rows = store.expired_events(rules)
    assert sorted(r.id for r in rows) == ["a", "b"]
    store.review("a", "dismissed", "rita", reason="false_detection")  # now training data: kept 365 days
    gone = store.delete_expired([r.id for r in rows], rules)
    assert [r.id for r in gone] == ["b"] and store.get("a") is not None and store.get("b") is None


# ---- upgrade safety: the first sweep of a store that held events before retention -----------------------------------
def _state(store) -> dict:
    return store.retention_state()


def test_an_upgraded_store_keeps_its_old_events_for_the_grace_period(store, tmp_path, caplog):
    """A site upgrading from a version without retention: a year of events, none ever swept. The first sweep
    records when retention started and deletes nothing that existed then (events, their clips and snapshots,
    orphans) for upgrade_grace_days, with one warning saying how many events wait and from when deletion starts;
    events stored after that follow the policy at once. After the grace, the old events go."""
    import logging

    media = tmp_path / "media"
    old = {eid: put_event(store, media, eid, age) for eid, age in [("y1", 300), ("y2", 200), ("m2", 60)]}
    orphan = media / "snapshots" / "cam-1" / "ghost_0.jpg"
    orphan.write_bytes(b"x")
    age_files(media, 2 * 86400)
    now = [NOW]
    c = cfg(events_max_age_days=30, clips_max_age_days=10, upgrade_grace_days=7)
    # a dry run first: what the first run will do, recording nothing
    dry = Retention(store, media, c, clock=lambda: now[0]).sweep(dry_run=True)
    assert dry.events == 0 and dry.grace["recorded"] is False and dry.grace["pending_events"] == 3
    assert dry.grace["until_ns"] == NOW + 7 * DAY and _state(store) == {}
    caplog.set_level(logging.WARNING, logger="seawatch.service.retention")
    ret = Retention(store, media, c, clock=lambda: now[0])
    rep = ret.sweep()
    assert rep.errors == [] and rep.events == rep.clips == rep.snapshots == 0 and sum(rep.orphans.values()) == 0
    assert rep.grace == {"enabled_ns": NOW, "protect_before_ns": NOW, "until_ns": NOW + 7 * DAY, "pending_events": 3,
                         "recorded": True, "active": True}
    assert _state(store) == {"enabled_ns": NOW, "protect_before_ns": NOW}
    warnings_ = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings_) == 1, warnings_
    from seawatch.service.retention import utc_text

    assert "3 event(s)" in warnings_[0] and f"until {utc_text(NOW + 7 * DAY)}" in warnings_[0]
    assert all(p.exists() for ev in old.values() for p in files_of(media, ev)) and orphan.exists()
    # three days on: an event stored a day after retention started, on a camera whose events are kept 1 day, goes
    # at once (the grace protects only what existed before); the old ones still wait
    c2 = cfg(events_max_age_days=30, clips_max_age_days=10, upgrade_grace_days=7,
             sources={"cam-9": {"events_max_age_days": 1, "clips_max_age_days": 1}})
    put_event(store, media, "fresh", -1, source="cam-9")  # stored a day after retention started
    now[0] = NOW + 3 * DAY
    rep = Retention(store, media, c2, clock=lambda: now[0]).sweep()  # another process: the store's record holds
    assert rep.sample_event_ids == ["fresh"] and rep.grace["pending_events"] == 3
    assert all(store.get(e) is not None for e in old) and orphan.exists()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # warned once, when it started
    # the grace is over: the old events, their files and the old orphan go
    now[0] = NOW + 7 * DAY + 1
    rep = ret.sweep()
    assert sorted(rep.sample_event_ids) == ["m2", "y1", "y2"] and rep.grace is None
    assert not orphan.exists() and not any(p.exists() for ev in old.values() for p in files_of(media, ev))


def test_a_new_store_does_not_wait(store, tmp_path):
    """Retention on from the start (nothing to delete when it first runs): no grace, later events go on time."""
    media = tmp_path / "media"
    now = [NOW]
    ret = Retention(store, media, cfg(events_max_age_days=1, clips_max_age_days=1, upgrade_grace_days=7),
                    clock=lambda: now[0])
    assert ret.sweep().grace is None
    assert _state(store) == {"enabled_ns": NOW, "protect_before_ns": 0}
    put_event(store, media, "e", -1)  # stored a day later
    now[0] = NOW + 3 * DAY
    rep = ret.sweep()
    assert rep.sample_event_ids == ["e"] and rep.grace is None


def test_grace_zero_deletes_at_once(store, tmp_path):
    media = tmp_path / "media"
    put_event(store, media, "old", 200)
    rep = Retention(store, media, cfg(upgrade_grace_days=0)).sweep()
    assert rep.sample_event_ids == ["old"] and rep.grace is None
    assert _state(store)["protect_before_ns"] > 0  # recorded: raising the grace later protects what was there


def test_schema_0009_keeps_old_holds_active_and_downgrades(db_url):
    """A database at revision 0008 with a hold: after the upgrade the hold still holds; a downgrade drops lifted
    holds (the old schema cannot say they were lifted) and keeps the active ones."""
    from alembic import command

    from seawatch.service.migrations import alembic_config, upgrade

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        upgrade(conn, "0008")
        conn.execute(sa.text("INSERT INTO events (id, type, severity, severity_rank, phase, seq, source_id, zone_id, "
                             "start_ns, end_ns, at_ns, review_status, search_text, data, stored_ns) VALUES "
                             "('e', 'fire', 'high', 2, 'end', 0, 'cam-1', '', 1, 2, 2, 'new', '', '{}', 2)"))
        conn.execute(sa.text("INSERT INTO event_holds (event_id, reason, by, at_ns, note) VALUES "
                             "('e', 'manual', 'user:rita', 5, 'claim'), ('e', 'manual', 'user:sam', 6, '')"))
    engine.dispose()
    store = EventStore.open(db_url)
    try:
        assert store.with_holds(["e"]) == {"e"} and [h["active"] for h in store.holds("e")] == [True, True]
        assert store.retention_state() == {}
        store.release_holds("e", "user:rita", "settled", hold_id=store.holds("e")[0]["id"])
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0008")
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT by FROM event_holds")).scalars().all()
            assert rows == ["user:sam"] and not sa.inspect(conn).has_table("retention_state")
    finally:
        store.close()


# ---- the service and the CLI show the policy and the grace ---------------------------------------------------------
def test_health_shows_the_upgrade_grace_and_the_policy(store, db_url, tmp_path):
    from fastapi.testclient import TestClient

    from seawatch.service.app import create_app

    media = tmp_path / "media"
    put_event(store, media, "old", 200)
    put_event(store, media, "fresh", 1)
    settings = _app_settings(tmp_path, db_url, upgrade_grace_days=7, false_detections_max_age_days=500,
                             sources={"quay": {"events_max_age_days": 365}})
    app = create_app(settings, store=store)
    with TestClient(app) as client:
        worker = app.state.retention
        deadline = time.monotonic() + 20
        while worker.last_sweep is None and time.monotonic() < deadline:
            time.sleep(0.05)
        r = client.get("/api/health", headers={"X-API-Key": "rev-key"}).json()["retention"]
        assert r["last_sweep"]["events"] == 0 and store.get("old") is not None  # the first sweep deleted nothing
        g = r["grace"]
        assert g["active"] and g["pending_events"] == 1 and g["until_ns"] - g["enabled_ns"] == 7 * DAY
        assert abs(g["enabled_ns"] - time.time_ns()) < 60 * S
        p = r["policy"]
        assert p["false_detections_days"] == 500 and p["upgrade_grace_days"] == 7
        assert p["sources"]["quay"]["events_days"]["low"] == 365 and p["events_days"]["low"] == 90


def test_cli_retention_dry_run_says_what_the_grace_keeps(store, db_url, tmp_path, capsys):
    from seawatch.cli import main
    from seawatch.service.retention import utc_text

    media = tmp_path / "media"
    put_event(store, media, "old", 200)
    cfg_file = tmp_path / "site.yaml"
    cfg_file.write_text(f"storage: {{data_dir: {tmp_path}, retention: {{min_free_disk_pct: 0, min_free_disk_gb: 0, "
                        "sources: {quay: {events_max_age_days: 365, clips_max_age_days: 60}}}}\n")
    args = ["retention", "run", "--config", str(cfg_file), "--database", db_url, "--media-dir", str(media)]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete: 0 event(s)" in out
    assert "policy: events kept 90 d, clips 30 d, false detections at least 365 d; quay: events 365 d, clips 60 d; " \
           "upgrade grace 7 d" in out
    assert "upgrade grace: retention never ran on this store; its first run" in out and "keeps the 1 event(s)" in out
    assert store.retention_state() == {}  # a dry run records nothing
    assert main([*args, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["events"] == 0 and rep["grace"]["pending_events"] == 1 and store.get("old") is not None
    assert rep["policy"]["sources"]["quay"]["clips_days"] == 60
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    until = utc_text(store.retention_state()["enabled_ns"] + 7 * DAY)
    assert "upgrade grace: 1 event(s) older than the policy" in out and f"are kept until {until}" in out


# ---- configuration of the new settings -----------------------------------------------------------------------------
@pytest.mark.parametrize("data, words", [
    ({"sources": [{"id": "quay", "url": "x.mp4"}], "storage": {"retention": {"sources": {"carpark": {"events_max_age_days": 30}}}}},
     "(top level): storage.retention.sources names sources that are not configured: ['carpark'] (configured: quay)"),
    ({"storage": {"retention": {"sources": {"quay": {"events_max_age_days": 20}}}}},
     "storage.retention: Value error, sources.quay: clips_max_age_days (30) is longer than quay's events are kept (20 days)"),
    ({"storage": {"retention": {"sources": {"quay": {"events_max_age_days": 0.5}}}}},
     "storage.retention.sources.quay.events_max_age_days: Input should be greater than or equal to 1"),
    ({"storage": {"retention": {"sources": {"quay": {"keep": True}}}}}, "storage.retention.sources.quay.keep: unknown setting 'keep'"),
    ({"storage": {"retention": {"sources": {"quay": {"events_days_by_severity": {"low": 0}}}}}}, "between 1 and 36500"),
    ({"storage": {"retention": {"false_detections_max_age_days": 0}}},
     "storage.retention.false_detections_max_age_days: Input should be greater than or equal to 1"),
    ({"storage": {"retention": {"upgrade_grace_days": -1}}}, "storage.retention.upgrade_grace_days"),
])
def test_invalid_per_source_retention_is_refused(data, words):
    with pytest.raises(ConfigError) as info:
        load_config("site.yaml", data=data)
    assert words.replace("Value error, ", "") in str(info.value), str(info.value)


def test_new_retention_settings_defaults_and_config_check(tmp_path, capsys):
    from seawatch.cli import main

    r = load_config().storage.retention
    assert r.false_detections_max_age_days == 365 and r.upgrade_grace_days == 7 and r.sources == {}
    assert r.false_detection_days("low") == 365 and r.event_days("low", "nowhere") == 90
    f = tmp_path / "site.yaml"
    f.write_text("sources: [{id: quay, url: q.mp4}, {id: park, url: p.mp4}]\n"
                 "storage: {retention: {false_detections_max_age_days: null, upgrade_grace_days: 0, sources: {"
                 "quay: {events_max_age_days: 365, events_days_by_severity: {critical: 730}}, park: {events_max_age_days: 30, "
                 "clips_max_age_days: 7}}}}\n")
    assert main(["config", "check", str(f)]) == 0
    out = capsys.readouterr().out
    assert ("events kept 90 d, clips 30 d, false detections at least forever; park: events 30 d, clips 7 d; "
            "quay: events 365 d (critical 730 d); upgrade grace 0 d (held ones for good)") in out
    c = load_config(f).storage.retention
    assert c.event_days("critical", "quay") == 730 and c.event_days("low", "quay") == 365
    assert c.event_days("critical", "park") == 30 and c.false_detection_days("low", "park") is None


# ---- the CLI only runs on a Seawatch store, and a dry run never writes to it ---------------------------------------
def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def foreign_db(db_url):
    """Someone else's database: one ``customers`` table, one row, no Seawatch schema."""
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(40))"))
        conn.execute(sa.text("INSERT INTO customers VALUES (1, 'Ada')"))
    engine.dispose()
    return db_url


@pytest.mark.parametrize("dry_run", [True, False])
def test_cli_retention_refuses_a_database_that_is_not_a_seawatch_store(foreign_db, tmp_path, capsys, dry_run):
    from seawatch.cli import main

    before = Path(foreign_db.removeprefix("sqlite:///")).read_bytes() if foreign_db.startswith("sqlite") else None
    args = ["retention", "run", "--database", foreign_db, "--media-dir", str(tmp_path / "m")] + (["--dry-run"] * dry_run)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "is not a Seawatch event store (no Seawatch schema; its tables: customers)" in err
    assert "Traceback" not in err
    assert _tables(foreign_db) == {"customers"}  # no alembic_version, events, events_fts ... created in it
    if before is not None:
        assert Path(foreign_db.removeprefix("sqlite:///")).read_bytes() == before  # not even switched to WAL


def test_the_store_itself_refuses_to_migrate_someone_elses_database(foreign_db):
    with pytest.raises(ConfigError, match="not a Seawatch event store .*customers.*refusing to create tables"):
        EventStore.open(foreign_db)
    assert _tables(foreign_db) == {"customers"}


@pytest.mark.parametrize("dry_run", [True, False])
def test_cli_retention_refuses_a_missing_sqlite_database_and_creates_nothing(tmp_path, capsys, dry_run):
    from seawatch.cli import main

    url = f"sqlite:///{tmp_path / 'typo' / 'seawatch.db'}"
    args = ["retention", "run", "--database", url, "--media-dir", str(tmp_path / "m")] + (["--dry-run"] * dry_run)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"no event store at {url}: the database does not exist" in err
    assert not (tmp_path / "typo").exists()
    assert main(["retention", "run", "--database", f"sqlite:///{tmp_path}", "--media-dir", str(tmp_path / "m")]) == 1
    assert "is a directory, not a database file" in capsys.readouterr().err


def test_cli_retention_refuses_a_missing_postgresql_database(postgres_server, tmp_path, capsys):
    from seawatch.cli import main

    url = f"{postgres_server}/nosuchdb"
    assert main(["retention", "run", "--dry-run", "--database", url, "--media-dir", str(tmp_path / "m")]) == 1
    assert f"no event store at {url}: the database does not exist" in capsys.readouterr().err


def test_cli_retention_refuses_an_empty_database(db_url, tmp_path, capsys):
    from seawatch.cli import main

    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()
    assert main(["retention", "run", "--database", db_url, "--media-dir", str(tmp_path / "m")]) == 1
    assert "is an empty database, not a Seawatch event store" in capsys.readouterr().err
    assert _tables(db_url) <= {"spatial_ref_sys"}


def test_cli_retention_dry_run_reports_an_old_schema_and_a_real_run_upgrades_it(db_url, tmp_path, capsys):
    from seawatch.cli import main
    from seawatch.service.migrations import upgrade

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        upgrade(conn, "0006")
    engine.dispose()
    args = ["retention", "run", "--database", db_url, "--media-dir", str(tmp_path / "m")]
    assert main([*args, "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "is a Seawatch event store at schema revision 0006, older than this version's 0011; a dry run does not " \
           "upgrade it: run without --dry-run" in err
    assert "event_holds" not in _tables(db_url)  # not migrated
    assert main(args) == 0
    assert "deleted: 0 event(s)" in capsys.readouterr().out
    assert {"event_holds", "retention_state"} <= _tables(db_url)


def test_cli_retention_dry_run_opens_the_store_read_only(store, db_url, tmp_path, capsys, monkeypatch):
    """The dry run's store refuses writes: a sweep that tried to record anything would fail, not write."""
    from seawatch.cli import main
    from seawatch.service import store as store_mod

    media = tmp_path / "media"
    put_event(store, media, "old", 200)
    opened: list[EventStore] = []
    real_open = store_mod.EventStore.open.__func__

    def spy(cls, url, **kw):
        s = real_open(cls, url, **kw)
        opened.append(s)
        return s

    monkeypatch.setattr(store_mod.EventStore, "open", classmethod(spy))
    args = ["retention", "run", "--database", db_url, "--media-dir", str(media), "--dry-run", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 0  # the upgrade grace keeps it on a first run
    (ro,) = opened
    with pytest.raises(sa.exc.DBAPIError, match="(?i)read.only|readonly"):
        ro.init_retention_state({"enabled_ns": 1, "protect_before_ns": 1})
    assert store.retention_state() == {} and store.get("old") is not None
