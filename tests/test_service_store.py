"""The event store: upsert by incident id, every search filter, cursor pagination, audit trail, durability."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from seawatch.errors import ConfigError, InputError
from seawatch.service.store import BBox, EventQuery, EventStore
from seawatch.vision.events import ClipRef, Event, GeoPosition, Snapshot
from conftest import missing

T0 = 1_790_000_000_000_000_000  # 2026-09-21, UTC ns
S = 1_000_000_000


def make_event(i: int = 0, **kw) -> Event:
    """A start-phase event; ``i`` spaces start times one second apart."""
    base = dict(
        id=f"ev{i:05d}",
        type="fire",
        severity="high",
        phase="start",
        source_id="cam-1",
        start_ns=T0 + i * S,
        at_ns=T0 + i * S,
        zone_id="yard",
        labels=("fire",),
        scores=(0.8,),
        clip=ClipRef("cam-1", T0 + i * S - 5 * S, None, 5 * S, 5 * S),
    )
    base.update(kw)
    return Event(**base)


def _pg_bin() -> Path | None:
    for d in [os.environ.get("SEAWATCH_PGBIN", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if d and (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster on a free port (RECIPES.md section 5); yields a server URL without database."""
    pgbin = _pg_bin()
    if pgbin is None:
        missing("PostgreSQL server binaries (apt-get install postgresql-15-postgis-3)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg (pip install 'psycopg[binary]')")
    root = os.geteuid() == 0
    as_pg = ["runuser", "-u", "postgres", "--"] if root else []
    d = Path(tempfile.mkdtemp(prefix="seawatch-pg-"))
    if root:
        shutil.chown(d, "postgres", "postgres")
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    subprocess.run([*as_pg, str(pgbin / "initdb"), "-D", str(d / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--locale=C.UTF-8", "--no-sync"], check=True, capture_output=True, timeout=120)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {d} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run([*as_pg, str(pgbin / "pg_ctl"), "-D", str(d / "data"), "-l", str(d / "server.log"), "-w", "-t", "30",
                    "-o", opts, "start"], check=True, capture_output=True, timeout=60)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_pg, str(pgbin / "pg_ctl"), "-D", str(d / "data"), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def new_pg_database(server_url: str) -> str:
    """A fresh, empty database on the test cluster; its SQLAlchemy URL."""
    name = f"t{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{server_url}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return new_pg_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def store(db_url):
    s = EventStore.open(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    yield s
    s.close()


def ids(page) -> list[str]:
    return [e.id for e in page.events]


def test_schema_is_migrated_to_head_with_wal(tmp_path, sqlite_store):
    store = sqlite_store
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar_one() == "0011"
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"
        idx = {r[1] for r in conn.execute(sa.text("PRAGMA index_list(events)"))}
    assert {"ix_events_start_geo", "ix_events_type_start_geo", "ix_events_source_start", "ix_events_lat_lon"} <= idx
    # reopening an up-to-date database is a no-op
    EventStore.open(f"sqlite:///{tmp_path / 'events.db'}").close()


def test_search_uses_indexes_not_table_scans(sqlite_store):
    store = sqlite_store
    for i in range(20):
        store.put(make_event(i))
    t = sa.table("events")
    with store.engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.execute(sa.text(
            "EXPLAIN QUERY PLAN SELECT id FROM events WHERE type = 'fire' AND start_ns >= 0 ORDER BY start_ns DESC LIMIT 10")))
        assert "USING INDEX" in plan, plan
        plan = " ".join(str(r[-1]) for r in conn.execute(sa.text(
            "EXPLAIN QUERY PLAN SELECT id FROM events WHERE lat_deg BETWEEN 1 AND 2 AND lon_deg BETWEEN 1 AND 2")))
        assert "ix_events_lat_lon" in plan, plan
    del t


def test_upsert_by_id_applies_newer_phases_only(store):
    ev = make_event(0)
    assert store.put(ev) is True
    assert store.put(ev) is False  # replay: idempotent
    upd = replace(ev, phase="update", seq=1, severity="critical", at_ns=ev.at_ns + 3 * S)
    end = replace(ev, phase="end", seq=2, end_ns=ev.start_ns + 9 * S, at_ns=ev.start_ns + 9 * S)
    assert store.put(end) is True
    assert store.put(upd) is False  # late, older phase does not overwrite the end
    got = store.get(ev.id)
    assert got.phase == "end" and got.end_ns == ev.start_ns + 9 * S and got.severity == "high"
    assert store.count() == 1


def test_review_survives_later_phases_and_keeps_the_audit_trail(store):
    ev = make_event(0)
    store.put(ev)
    store.review(ev.id, "acknowledged", "olga", "user", "crew on the way", at_ns=T0 + 5 * S)
    store.put(replace(ev, phase="update", seq=1, at_ns=T0 + 6 * S))
    store.review(ev.id, "confirmed", "rita", "user", "real fire", at_ns=T0 + 7 * S)
    got = store.get(ev.id)
    assert got.review_status == "confirmed" and got.phase == "update"
    assert [(r.status, r.by, r.note, r.at_ns) for r in got.review_history] == [
        ("acknowledged", "olga", "crew on the way", T0 + 5 * S),
        ("confirmed", "rita", "real fire", T0 + 7 * S),
    ]
    assert [a.by_kind for a in store.audit(ev.id)] == ["user", "user"]
    with pytest.raises(KeyError):
        store.review("nope", "acknowledged", "olga")
    with pytest.raises(InputError):
        store.review(ev.id, "new", "olga")


@pytest.fixture
def populated(store):
    evs = [
        make_event(0, type="fire", severity="high", source_id="cam-1", zone_id="yard"),
        make_event(1, type="smoke", severity="low", source_id="cam-1", zone_id="yard"),
        make_event(2, type="no_hard_hat", severity="medium", source_id="cam-2", zone_id="gate", labels=("person",), scores=(0.7,)),
        make_event(3, type="vessel_in_zone", severity="medium", source_id="drone-1", zone_id="wind-farm",
                   labels=("vessel",), scores=(0.6,), geo=GeoPosition(54.02, 6.55, 30.0, 12.0, 45.0),
                   attributes={"mmsi": "244123456", "vessel_name": "Noordzee Express", "hull_text": "UK 123"}),
        make_event(4, type="vessel_in_zone", severity="critical", source_id="drone-1", zone_id="wind-farm",
                   labels=("vessel",), scores=(0.9,), geo=GeoPosition(-16.5, 179.9, 50.0, 50.0),
                   attributes={"mmsi": "512000001", "vessel_name": "Fiji Star", "hull_text": "FJ-7"}),
        make_event(5, type="vessel_in_zone", severity="low", source_id="drone-1", zone_id="wind-farm",
                   labels=("vessel",), scores=(0.5,), geo=GeoPosition(-16.4, -179.8, 50.0, 50.0), attributes={"mmsi": "512000002"}),
        make_event(6, type="fire_lane_blocked", severity="medium", source_id="cam-3", zone_id="lane-north", labels=("truck",),
                   scores=(0.6,), attributes={"dwell_s": 190.0, "note": "100% blocked_lane"}),
    ]
    for e in evs:
        store.put(e)
    store.put(replace(evs[1], phase="end", seq=1, end_ns=evs[1].start_ns + 4 * S, at_ns=evs[1].start_ns + 4 * S))
    store.review("ev00000", "acknowledged", "olga", note="Harbour master informed")
    store.review("ev00002", "dismissed", "olga", note="it is a statue")
    store.review("ev00003", "confirmed", "rita")
    return store


@pytest.mark.parametrize(
    "query, expected",
    [
        (EventQuery(), ["ev00006", "ev00005", "ev00004", "ev00003", "ev00002", "ev00001", "ev00000"]),
        (EventQuery(types=("fire", "smoke")), ["ev00001", "ev00000"]),
        (EventQuery(severities=("medium",)), ["ev00006", "ev00003", "ev00002"]),
        (EventQuery(min_severity="high"), ["ev00004", "ev00000"]),
        (EventQuery(statuses=("new",)), ["ev00006", "ev00005", "ev00004", "ev00001"]),
        (EventQuery(statuses=("acknowledged", "dismissed")), ["ev00002", "ev00000"]),
        (EventQuery(source_ids=("cam-2", "cam-3")), ["ev00006", "ev00002"]),
        (EventQuery(zone_ids=("wind-farm",)), ["ev00005", "ev00004", "ev00003"]),
        (EventQuery(start_from_ns=T0 + 2 * S, start_to_ns=T0 + 4 * S), ["ev00003", "ev00002"]),  # half-open
        # the incidents of a time window: started before its end, still going at its start (ev00001 ended at T0+5 s)
        (EventQuery(active_from_ns=T0 + 6 * S), ["ev00006", "ev00005", "ev00004", "ev00003", "ev00002", "ev00000"]),
        (EventQuery(active_from_ns=T0 + 5 * S, start_to_ns=T0 + 2 * S), ["ev00001", "ev00000"]),
        (EventQuery(open_only=False), ["ev00001"]),
        (EventQuery(open_only=True, types=("fire", "smoke")), ["ev00000"]),
        (EventQuery(has_geo=True), ["ev00005", "ev00004", "ev00003"]),
        (EventQuery(has_geo=False, source_ids=("drone-1",)), []),
        (EventQuery(bbox=BBox(53.9, 6.5, 54.1, 6.6)), ["ev00003"]),
        (EventQuery(bbox=BBox(-17.0, 179.0, -16.0, -179.0)), ["ev00005", "ev00004"]),  # across the antimeridian
        (EventQuery(bbox=BBox(-17.0, 179.95, -16.0, 180.0)), []),
        (EventQuery(mmsi="244123456"), ["ev00003"]),
        (EventQuery(mmsi="24412345"), []),  # exact, not prefix
        (EventQuery(vessel_name="noordZEE"), ["ev00003"]),
        (EventQuery(hull_text="fj-"), ["ev00004"]),
        (EventQuery(text="harbour MASTER"), ["ev00000"]),  # review note
        (EventQuery(text="statue"), ["ev00002"]),
        (EventQuery(text="truck"), ["ev00006"]),  # label
        (EventQuery(text="express"), ["ev00003"]),  # attribute
        (EventQuery(text="100%"), ["ev00006"]),  # LIKE wildcards are literal
        (EventQuery(text="%"), ["ev00006"]),
        (EventQuery(text="_"), ["ev00006", "ev00005", "ev00004", "ev00003", "ev00002"]),  # types with _, not every event
        (EventQuery(text="' OR 1=1 --"), []),
        (EventQuery(sort="start_ns", limit=3), ["ev00000", "ev00001", "ev00002"]),
        (EventQuery(sort="-at_ns", limit=2), ["ev00006", "ev00005"]),
        (EventQuery(types=("fire'; DROP TABLE events; --",)), []),
    ],
)
def test_filters(populated, query, expected):
    assert ids(populated.search(query)) == expected
    assert populated.count() == 7


@pytest.mark.parametrize("geo_first_max_rows", [0, 20_000])
def test_bbox_results_do_not_depend_on_the_access_path(populated, monkeypatch, geo_first_max_rows):
    """Small boxes are read through the lat/lon index, large ones along the time index: same answers."""
    monkeypatch.setattr(EventStore, "GEO_FIRST_MAX_ROWS", geo_first_max_rows)
    assert ids(populated.search(EventQuery(bbox=BBox(-90, -180, 90, 180)))) == ["ev00005", "ev00004", "ev00003"]
    assert ids(populated.search(EventQuery(bbox=BBox(-17.0, 179.0, -16.0, -179.0), sort="start_ns"))) == ["ev00004", "ev00005"]
    page = populated.search(EventQuery(bbox=BBox(-90, -180, 90, 180), limit=2, sort="-at_ns"))
    assert ids(page) == ["ev00005", "ev00004"]
    assert ids(populated.search(EventQuery(bbox=BBox(-90, -180, 90, 180), limit=2, sort="-at_ns", cursor=page.next_cursor))) == ["ev00003"]


@pytest.mark.parametrize("common", [False, True])
def test_free_text_results_do_not_depend_on_the_access_path(populated, monkeypatch, common):
    """A rare word is read through the trigram index (SQLite), a common one by walking the sort index: same answers."""
    if common:  # every word counts as common: no trigram candidates, the LIKE test on each row decides
        monkeypatch.setattr(EventStore, "_rare_in_fts", lambda self, phrase, limit: False)
    assert ids(populated.search(EventQuery(text="harbour MASTER"))) == ["ev00000"]
    assert ids(populated.search(EventQuery(text="express", types=("vessel_in_zone", "unidentified_vessel")))) == ["ev00003"]
    page = populated.search(EventQuery(text="_", limit=2))
    assert ids(page) == ["ev00006", "ev00005"]
    assert ids(populated.search(EventQuery(text="_", limit=2, cursor=page.next_cursor))) == ["ev00004", "ev00003"]


def test_sort_by_last_update(populated):
    # the smoke event ended at T0+5s, after event 4 started (T0+4s): it sorts above 4 by at_ns
    assert ids(populated.search(EventQuery(sort="-at_ns")))[:4] == ["ev00006", "ev00005", "ev00001", "ev00004"]


@pytest.mark.parametrize("sort", ["-start_ns", "start_ns", "-at_ns", "at_ns"])
def test_cursor_pages_cover_everything_once_with_ties(store, sort):
    # 25 events, many sharing a start time: the id breaks ties
    for i in range(25):
        store.put(make_event(i, start_ns=T0 + (i % 4) * S, at_ns=T0 + (i % 3) * S))
    seen, cursor, pages = [], None, 0
    while True:
        page = store.search(EventQuery(sort=sort, limit=4, cursor=cursor))
        seen += ids(page)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 7
    assert sorted(seen) == sorted(f"ev{i:05d}" for i in range(25)) and len(set(seen)) == 25
    everything = ids(store.search(EventQuery(sort=sort, limit=100)))
    assert seen == everything


def test_bad_cursors_and_queries_are_input_errors(store):
    store.put(make_event(0))
    store.put(make_event(1))
    page = store.search(EventQuery(limit=1))
    with pytest.raises(InputError, match="belongs to sort"):
        store.search(EventQuery(limit=1, sort="start_ns", cursor=page.next_cursor))
    for bad in ("garbage", "!!!", "WyJ4Il0", "' OR 1=1 --"):
        with pytest.raises(InputError, match="cursor"):
            store.search(EventQuery(cursor=bad))
    with pytest.raises(InputError):
        EventQuery(severities=("huge",))
    with pytest.raises(InputError):
        EventQuery(sort="id; drop table events")
    with pytest.raises(InputError):
        BBox(10, 0, 5, 1)
    with pytest.raises(InputError):
        BBox(0, -181, 1, 1)


def test_reopened_store_keeps_everything(db_url):
    url = db_url
    s = EventStore.open(url)
    ev = make_event(0, snapshot=Snapshot("cam-1", T0, (1.0, 2.0, 30.0, 40.0), 0.7, uri="snapshots/cam-1/ev00000_0.jpg"),
                    geo=GeoPosition(54.0, 6.5, 20.0, 10.0, 30.0), attributes={"area_frac": 0.02})
    s.put(ev)
    s.review(ev.id, "acknowledged", "olga", note="seen")
    s.close()
    s2 = EventStore.open(url)
    got = s2.get(ev.id)
    s2.close()
    assert got.to_dict()["review_history"][0]["note"] == "seen"
    assert replace(got, review_status="new", review_history=()) == ev


def test_committed_events_survive_a_killed_process(tmp_path):
    """A writer killed with SIGKILL right after put() returned loses nothing (WAL, synchronous=FULL)."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_service_store import make_event
        from seawatch.service.store import EventStore
        s = EventStore.open({url!r})
        for i in range(50):
            s.put(make_event(i))
        print("stored", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "stored"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    s = EventStore.open(url)
    try:
        assert s.count() == 50
        assert ids(s.search(EventQuery(limit=1))) == ["ev00049"]
    finally:
        s.close()


def test_search_benchmark_runs(tmp_path, capsys):
    from seawatch.service.bench_search import main as bench

    assert bench(["--events", "3000", "--repeat", "2", "--db", f"sqlite:///{tmp_path / 'b.db'}"]) == 0
    out = capsys.readouterr().out
    assert "sqlite: 3000 events" in out and "bbox 0.05 deg + 30 days" in out and "free text, absent word" in out and "worst p95" in out


def test_bad_database_urls_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="database_url"):
        EventStore.open("not a url")
    with pytest.raises(ConfigError):
        EventStore.open("nosuchdialect://x/y")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="storage"):
        EventStore.open(f"sqlite:///{tmp_path / 'file' / 'sub' / 'events.db'}")


def test_migrations_match_the_table_definitions(store):
    """The Alembic revision creates exactly the tables and indexes store.py declares (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from seawatch.service.store import metadata

    from seawatch.service.migrations import include_object  # the free-text and PostGIS objects live outside them

    with store.engine.connect() as conn, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Did not recognize type 'geometry'")
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_object": include_object}), metadata)
    assert diff == []


def test_free_text_index_follows_inserts_updates_and_notes(store):
    """The trigram index (SQLite FTS5 / PostgreSQL pg_trgm) stays in step with the rows it indexes."""
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            assert conn.execute(sa.text("SELECT count(*) FROM sqlite_master WHERE name LIKE 'events_fts%'")).scalar_one() >= 1
        else:
            assert conn.execute(sa.text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_events_search_trgm'")).scalar_one() == 1
    ev = make_event(0, attributes={"hull_text": "ZX-991"})
    store.put(ev)
    assert ids(store.search(EventQuery(text="zx-99"))) == ["ev00000"]
    store.put(replace(ev, phase="update", seq=1, attributes={"hull_text": "QW-123"}))
    assert ids(store.search(EventQuery(text="zx-99"))) == []
    assert ids(store.search(EventQuery(text="qw-12"))) == ["ev00000"]
    store.review(ev.id, "dismissed", "olga", note="Reflection on the quay wall")
    assert ids(store.search(EventQuery(text="quay wall reflect"))) == ["ev00000"]
    assert ids(store.search(EventQuery(text='"quay" wall'))) == []  # quotes are literal text, not FTS syntax
    assert ids(store.search(EventQuery(text="qw-12 nowhere"))) == []


def test_any_free_text_is_a_plain_substring_search(sqlite_store):
    """Whatever the text (FTS5 operators, quotes, NUL, emoji), the search runs and means substring match."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    sqlite_store.put(make_event(0, attributes={"note": 'say "hi" AND NOT (x*) NEAR/2 ^col: ü😀'}))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=30))
    def check(text):
        got = ids(sqlite_store.search(EventQuery(text=text)))
        words = text.lower().split()
        hay = sqlite_store.get("ev00000")
        expected = all(w in _search_text_of(hay) for w in words)
        assert got == (["ev00000"] if expected else []), text

    check()
    for name in ("text", "vessel_name", "hull_text", "mmsi"):  # NUL means nothing here, and PostgreSQL refuses it
        with pytest.raises(InputError, match="NUL"):
            EventQuery(**{name: "a\x00b"})
    with pytest.raises(InputError, match="NUL"):
        EventQuery(types=("fire\x00",))
    with pytest.raises(InputError, match="NUL"):
        sqlite_store.review("ev00000", "acknowledged", "olga", note="x\x00")
    for text in ['"hi" and', "not (x*)", "near/2", "^col:", "ü😀", 'y "hi"', "AND", "*"]:
        got = ids(sqlite_store.search(EventQuery(text=text)))
        assert got == (["ev00000"] if all(w in _search_text_of(sqlite_store.get("ev00000")) for w in text.lower().split()) else []), text


def _search_text_of(ev):
    from seawatch.service.store import _search_text

    return _search_text(ev)


@pytest.mark.parametrize("query, want", [
    ("SC 10", ["ev00001"]), ("sc-1o", ["ev00001"]),              # as painted, with a separator, O for 0
    ("浙岱渔 03891", ["ev00002"]), ("浙岱漁03891", ["ev00002"]),    # a space; the traditional 漁
    ("0389", ["ev00002"]), ("SC1", ["ev00001"]),                 # fragments still match
    ("SC 11", []),
])
def test_hull_search_matches_the_text_as_painted(store, query, want):
    """The pipeline stores hull text normalised (``SC10``, ``浙岱渔03891``); a reviewer types what is painted."""
    from seawatch.vision.identity.hulltext import normalise_hull

    for i, text in [(1, "SC 10"), (2, "浙岱渔 03891")]:
        store.put(make_event(i, type="unidentified_vessel", attributes={"hull_text": normalise_hull(text)}))
    assert ids(store.search(EventQuery(hull_text=query))) == want
