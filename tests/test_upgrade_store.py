"""Upgrades: an event store written by an older Seawatch opens with this one (SQLite and PostgreSQL), and a store
written by a newer one is refused with a message that says so, leaving it untouched.

The old rows below are verbatim from a store made by commit d08efac (schema revision 0001, 2026-11-28): its
``seawatch serve`` on shared media with a stub fire detector, then reviews through its API (see
/work/exp/s24/ops/FINDINGS.md for the whole upgrade check over three old releases and both databases).
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from seawatch.errors import ConfigError
from seawatch.service.migrations import upgrade
from seawatch.service.store import EventQuery, EventStore, GeoCircle
from test_service_store import db_url, make_event, postgres_server  # noqa: F401  (fixtures)

OLD_EVENTS = [{'id': 'd4ba49b0f52341099dcce0b4b3f29446',
  'type': 'fire',
  'severity': 'high',
  'severity_rank': 2,
  'phase': 'end',
  'seq': 1,
  'source_id': 'quay-1',
  'zone_id': 'yard1',
  'start_ns': 1796103393733228696,
  'end_ns': 1796103419733228696,
  'at_ns': 1796103419733228696,
  'lat_deg': None,
  'lon_deg': None,
  'mmsi': None,
  'vessel_name': None,
  'hull_text': None,
  'review_status': 'confirmed',
  'search_text': 'fire quay-1 yard1 fire 0.05477 0.05477 2 2 source ended 26.0 real fire, old version',
  'data': '{"id":"d4ba49b0f52341099dcce0b4b3f29446","type":"fire","severity":"high","phase":"end","seq":1,"source_id":"quay-1","zone_id":"yard1","start_ns":1796103393733228696,"end_ns":1796103419733228696,"at_ns":1796103419733228696,"track_ids":[1],"labels":["fire"],"scores":[0.9],"attributes":{"area_frac":0.05477,"max_area_frac":0.05477,"confirm_hits":2,"confirm_window":2,"end_reason":"source '
          'ended","duration_s":26.0},"snapshot":{"source_id":"quay-1","capture_time_ns":1796103394233228696,"xyxy_px":[40.0,30.0,120.0,100.0],"score":67.3498,"uri":"snapshots/quay-1/d4ba49b0f52341099dcce0b4b3f29446_1.jpg"},"clip":{"source_id":"quay-1","start_ns":1796103388733228696,"end_ns":1796103424733228696,"pre_roll_ns":5000000000,"post_roll_ns":5000000000},"geo":null,"geo_reason":"source '
          'is not geo-referenced (no calibration or pose for this frame)"}',
  'stored_ns': 1796103394676707262},
 {'id': 'old001',
  'type': 'unidentified_vessel',
  'severity': 'high',
  'severity_rank': 2,
  'phase': 'end',
  'seq': 0,
  'source_id': 'quay-1',
  'zone_id': 'yard1',
  'start_ns': 1790000001000000000,
  'end_ns': 1790000006000000000,
  'at_ns': 1790000001000000000,
  'lat_deg': 52.841,
  'lon_deg': 5.7,
  'mmsi': '244000001',
  'vessel_name': 'ZEEMEEUW1',
  'hull_text': None,
  'review_status': 'acknowledged',
  'search_text': 'unidentified_vessel quay-1 yard1 vessel zeemeeuw1 244000001 seen by old version',
  'data': '{"id":"old001","type":"unidentified_vessel","severity":"high","phase":"end","seq":0,"source_id":"quay-1","zone_id":"yard1","start_ns":1790000001000000000,"end_ns":1790000006000000000,"at_ns":1790000001000000000,"track_ids":[],"labels":["vessel"],"scores":[0.7],"attributes":{"vessel_name":"ZEEMEEUW1","mmsi":244000001},"snapshot":null,"clip":null,"geo":{"lat_deg":52.841,"lon_deg":5.7,"semi_major_m":30.0,"semi_minor_m":20.0,"orientation_deg":0.0},"geo_reason":null}',
  'stored_ns': 1796103395088981842},
 {'id': 'old003',
  'type': 'unidentified_vessel',
  'severity': 'high',
  'severity_rank': 2,
  'phase': 'end',
  'seq': 0,
  'source_id': 'quay-1',
  'zone_id': 'yard1',
  'start_ns': 1790000003000000000,
  'end_ns': 1790000008000000000,
  'at_ns': 1790000003000000000,
  'lat_deg': 52.843,
  'lon_deg': 5.7,
  'mmsi': '244000003',
  'vessel_name': 'ZEEMEEUW3',
  'hull_text': None,
  'review_status': 'new',
  'search_text': 'unidentified_vessel quay-1 yard1 vessel zeemeeuw3 244000003',
  'data': '{"id":"old003","type":"unidentified_vessel","severity":"high","phase":"end","seq":0,"source_id":"quay-1","zone_id":"yard1","start_ns":1790000003000000000,"end_ns":1790000008000000000,"at_ns":1790000003000000000,"track_ids":[],"labels":["vessel"],"scores":[0.7],"attributes":{"vessel_name":"ZEEMEEUW3","mmsi":244000003},"snapshot":null,"clip":null,"geo":{"lat_deg":52.843,"lon_deg":5.7,"semi_major_m":30.0,"semi_minor_m":20.0,"orientation_deg":0.0},"geo_reason":null}',
  'stored_ns': 1796103395092398671}]
OLD_REVIEWS = [{'event_id': 'd4ba49b0f52341099dcce0b4b3f29446',
  'status': 'confirmed',
  'at_ns': 1796103395166034773,
  'by': 'test',
  'by_kind': 'key',
  'note': 'real fire, old version'},
 {'event_id': 'old001',
  'status': 'acknowledged',
  'at_ns': 1796103395172944418,
  'by': 'test',
  'by_kind': 'key',
  'note': 'seen by old version'}]


def _old_store(url: str) -> None:
    """A store at schema revision 0001 holding the old release's rows (its review ids left to the database)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            upgrade(conn, "0001")
            md = sa.MetaData()
            events = sa.Table("events", md, autoload_with=conn)
            reviews = sa.Table("review_actions", md, autoload_with=conn)
            conn.execute(events.insert(), OLD_EVENTS)
            conn.execute(reviews.insert(), OLD_REVIEWS)
    finally:
        engine.dispose()


def _revision(store: EventStore) -> str:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()


def test_a_store_from_an_old_release_opens_with_everything_kept(db_url, caplog):  # noqa: F811
    _old_store(db_url)
    with caplog.at_level(logging.WARNING, logger="seawatch.service.store"):
        store = EventStore.open(db_url)
    try:
        # the upgrade is announced at the default log level (WARNING): it is one way
        assert any("upgrading the event store" in r.getMessage() and "from schema revision 0001" in r.getMessage()
                   for r in caplog.records), caplog.text
        assert _revision(store) != "0001"
        assert {e.id for e in store.search(EventQuery(limit=50)).events} == {e["id"] for e in OLD_EVENTS}
        fire = store.get("d4ba49b0f52341099dcce0b4b3f29446")
        assert fire.phase == "end" and fire.snapshot.uri.endswith("_1.jpg") and fire.clip.end_ns is not None
        assert [a.status for a in store.audit(fire.id)] == ["confirmed"]
        assert [e.id for e in store.search(EventQuery(text="zeemeeuw3")).events] == ["old003"]
        assert [e.id for e in store.search(EventQuery(mmsi="244000001")).events] == ["old001"]
        near = store.search(EventQuery(near=GeoCircle(52.841, 5.70, 500.0))).events
        assert {e.id for e in near} == {"old001", "old003"}
        # the upgraded store takes new writes: a hold, a review and a new event
        store.hold("old003", "manual", "key:test", note="kept after the upgrade")
        store.review("old001", "dismissed", "test", note="after the upgrade")
        assert store.put(make_event(1))
        assert store.with_holds(["old003"]) == {"old003"}
    finally:
        store.close()
    EventStore.open(db_url).close()  # and opens again without another upgrade


def test_a_store_from_a_newer_release_is_refused_and_left_untouched(db_url, caplog):  # noqa: F811
    store = EventStore.open(db_url)
    store.put(make_event(0))
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    store.close()
    with pytest.raises(ConfigError) as err:
        EventStore.open(db_url)
    msg = str(err.value)
    assert "0999" in msg and "newer than this Seawatch" in msg and "restore the backup" in msg
    assert "Can't locate revision" not in msg
    ro = EventStore.open(db_url, read_only=True)
    try:
        assert _revision(ro) == "0999" and ro.count() == 1
    finally:
        ro.close()
