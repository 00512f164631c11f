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
from test_service_store import db_url, new_pg_database, postgres_server, store  # noqa: F401 - fixtures: both databases

S = 1_000_000_000
DAY = 86_400 * S
NOW = time.time_ns()


def cfg(**kw) -> RetentionConfig:
    base = dict(events_max_age_days=90, clips_max_age_days=30, orphan_min_age_s=3600, batch_size=2, batch_pause_s=0.0,
                min_free_disk_pct=0, min_free_disk_gb=0)
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
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar_one() == "0008"
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
                                  "batch_pause_s": 0, **retention}},
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

    def slow(ids):
        started.set()
        time.sleep(0.3)
        return real(ids)

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
    cfg_file.write_text(f"storage: {{data_dir: {tmp_path}, retention: {{min_free_disk_pct: 0, min_free_disk_gb: 0}}}}\n")
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
    ({"keep_forever": True}, "Extra inputs"),
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

