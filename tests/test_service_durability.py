"""Durability of the service core: what is recorded is found, kept through store and broker outages, and made
consistent after a crash (audit s17/svc, findings 1-6).

SQLite always runs; PostgreSQL and mosquitto are started by the fixtures of test_service_store / test_service_mqtt
(skipped with the reason on a developer machine without them, a failure under CI).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest
import sqlalchemy as sa

import test_service_mqtt
import test_service_store
from conftest import missing
from seawatch.service.config import MqttConfig
from seawatch.service.live import LiveHub
from seawatch.service.sink import RESTART_END_REASON, StoreSink
from seawatch.service.store import BBox, EventQuery, EventStore, GeoPolygon
from seawatch.vision.events import GeoPosition
from test_service_mqtt import Listener
from test_service_store import S, T0, make_event
from conftest import free_port as _free_port

# the fixtures of the store and MQTT tests, reused here (PostgreSQL cluster per session, mosquitto per module)
postgres_server = test_service_store.postgres_server
db_url = test_service_store.db_url
store = test_service_store.store
broker = test_service_mqtt.broker


def ids(page) -> list[str]:
    return sorted(e.id for e in page.events)


def wait_for(pred, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


# ---- 1. name search beyond ASCII ----------------------------------------------------------------------------
@pytest.mark.parametrize("field, text", [
    ("vessel_name", "ÅLESUND"), ("vessel_name", "ålesund"), ("vessel_name", "Ålesund star"), ("vessel_name", "STAR"),
    ("hull_text", "ØRN"), ("hull_text", "ørn 7"),
])
def test_vessel_and_hull_search_ignore_case_beyond_ascii(store, field, text):
    store.put(make_event(0, attributes={"vessel_name": "ÅLESUND STAR", "hull_text": "ØRN 7"}))
    store.put(make_event(1, attributes={"vessel_name": "NORDSTJERNA", "hull_text": "N 12"}))
    assert ids(store.search(EventQuery(**{field: text}))) == ["ev00000"]
    assert ids(store.search(EventQuery(**{field: "ÆGIR"}))) == []


# ---- 2. start_to before the BIGINT range ----------------------------------------------------------------------
@pytest.mark.parametrize("start_to_ns", [-(2**63) - 1, -(2**63), -(10**30)])
def test_start_to_before_the_time_range_finds_nothing(store, start_to_ns):
    store.put(make_event(0))
    store.put(make_event(1, start_ns=-(2**63) + 5, at_ns=-(2**63) + 5))
    assert ids(store.search(EventQuery(start_to_ns=start_to_ns))) == []
    assert ids(store.search(EventQuery(start_to_ns=-(2**63) + 6))) == ["ev00001"]


# ---- 6. longitude -180 and +180 are one meridian ---------------------------------------------------------------
def _geo_event(i: int, lon: float):
    return make_event(i, geo=GeoPosition(0.0, lon, 10.0, 10.0), geo_reason=None)


@pytest.mark.parametrize("legacy", [False, True], ids=["new", "stored-before-the-fix"])
def test_points_on_the_antimeridian_match_from_either_side(store, legacy):
    store.put(_geo_event(0, 180.0))
    store.put(_geo_event(1, -180.0))
    store.put(_geo_event(2, 179.5))
    store.put(_geo_event(3, -179.5))
    store.put(_geo_event(4, 0.0))
    if legacy:  # a row written before -180 was normalised on write
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE events SET lon_deg = -180 WHERE id = 'ev00001'"))
    east, west = ["ev00000", "ev00001", "ev00002"], ["ev00000", "ev00001", "ev00003"]
    assert ids(store.search(EventQuery(bbox=BBox(-1, 179, 1, 180)))) == east
    assert ids(store.search(EventQuery(bbox=BBox(-1, -180, 1, -179)))) == west
    assert ids(store.search(EventQuery(bbox=BBox(-1, 179, 1, -179)))) == ["ev00000", "ev00001", "ev00002", "ev00003"]
    if store.engine.dialect.name == "postgresql" and not store._postgis():
        return  # polygon search needs PostGIS there (test_service_geo covers that message)
    east_poly = GeoPolygon(((179, -1), (180, -1), (180, 1), (179, 1)))
    west_poly = GeoPolygon(((-180, -1), (-179, -1), (-179, 1), (-180, 1)))
    assert ids(store.search(EventQuery(polygon=east_poly))) == east
    assert ids(store.search(EventQuery(polygon=west_poly))) == west


# ---- 4. store write failures are retried, not lost ------------------------------------------------------------
def _short_busy_timeout(st: EventStore, ms: int = 200) -> None:
    """The store's connections give up on a held lock after ``ms`` (not 5 s), so the test does not wait."""
    sa.event.listen(st.engine, "connect", lambda c, _r: c.execute(f"PRAGMA busy_timeout={ms}"))
    st.engine.dispose()


@contextmanager
def write_locked(path):
    """Another connection holds the SQLite write lock (a backup, a second writer) until the block ends."""
    hold = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    hold.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        hold.execute("COMMIT")
        hold.close()


@pytest.fixture
def sqlite_path(tmp_path):
    return tmp_path / "events.db"


def test_a_phase_written_while_the_database_is_locked_is_retried_in_order(sqlite_path, tmp_path):
    st = EventStore.open(f"sqlite:///{sqlite_path}")
    _short_busy_timeout(st)
    seen: list[tuple[str, str]] = []
    sink = StoreSink(st, tmp_path / "media", [lambda ev: seen.append((ev.id, ev.phase))], retry_interval_s=0.2)
    try:
        sink.emit(make_event(0))
        end = make_event(0, phase="end", seq=1, end_ns=T0 + 3 * S, at_ns=T0 + 3 * S)
        with write_locked(sqlite_path):
            t0 = time.monotonic()
            sink.emit(end)
            assert time.monotonic() - t0 < 2  # one busy wait, as before
            assert sink.pending == 1 and sink.errors >= 1 and sink.dropped == 0
            t0 = time.monotonic()
            sink.emit(make_event(1))  # behind the backlog: queued without a write, the pipeline does not wait
            assert time.monotonic() - t0 < 0.1
            assert sink.pending == 2
            time.sleep(0.5)  # the retry thread keeps trying while the lock is held
            assert st.get("ev00000").phase == "start"
        assert wait_for(lambda: sink.pending == 0)
        assert st.get("ev00000").phase == "end" and st.get("ev00000").end_ns == T0 + 3 * S
        assert ids(st.search(EventQuery(open_only=True))) == ["ev00001"]
        assert seen == [("ev00000", "start"), ("ev00000", "end"), ("ev00001", "start")]  # published once stored
        assert sink.stats() == {"stored": 3, "errors": sink.errors, "pending": 0, "dropped": 0}
    finally:
        st.close()


def test_a_phase_written_while_the_disk_is_full_is_kept_until_there_is_room(sqlite_path, tmp_path):
    st = EventStore.open(f"sqlite:///{sqlite_path}")
    max_pages = [1]  # max_page_count cannot go below the file's size: 1 means "no growth"
    sa.event.listen(st.engine, "checkout", lambda c, _r, _p: c.execute(f"PRAGMA max_page_count={max_pages[0]}"))
    sink = StoreSink(st, tmp_path / "media", retry_interval_s=0.1)
    try:
        sink.emit(make_event(5, attributes={"note": "x" * 200_000}))
        assert st.get("ev00005") is None and sink.pending == 1 and sink.errors >= 1
        max_pages[0] = 1_000_000  # room again
        assert wait_for(lambda: sink.pending == 0)
        assert st.get("ev00005").attributes["note"] == "x" * 200_000
        assert sink.dropped == 0
    finally:
        st.close()


def test_queued_phases_get_a_last_try_at_close_and_what_is_lost_is_counted(sqlite_path, tmp_path, caplog):
    st = EventStore.open(f"sqlite:///{sqlite_path}")
    _short_busy_timeout(st)
    sink = StoreSink(st, tmp_path / "media", retry_interval_s=3600)  # only close retries
    with write_locked(sqlite_path):
        sink.emit(make_event(0))
    assert sink.pending == 1
    st.close()  # the lock is gone: close writes it
    assert sink.pending == 0 and sink.dropped == 0
    st = EventStore.open(f"sqlite:///{sqlite_path}")
    assert st.get("ev00000") is not None
    _short_busy_timeout(st)
    sink = StoreSink(st, tmp_path / "media", retry_interval_s=3600)
    with write_locked(sqlite_path), caplog.at_level(logging.ERROR, "seawatch.service.sink"):
        sink.emit(make_event(1))
        st.close()  # still locked: the last try fails, the phase is lost and said so
    assert sink.pending == 0 and sink.dropped == 1
    assert any("lost" in r.getMessage() for r in caplog.records)


def test_the_retry_queue_is_bounded_and_a_rejected_phase_does_not_block_it(sqlite_path, tmp_path):
    st = EventStore.open(f"sqlite:///{sqlite_path}")
    _short_busy_timeout(st)
    sink = StoreSink(st, tmp_path / "media", max_pending=2, retry_interval_s=3600)
    try:
        with write_locked(sqlite_path):
            for i in range(4):
                sink.emit(make_event(i))
            assert sink.pending == 2 and sink.dropped == 2  # the oldest went first
        assert sink.flush()
        assert ids(st.search(EventQuery())) == ["ev00002", "ev00003"]
        real_put, calls = st.put, []

        def put(ev):  # the database rejects this one phase for good (not a passing OperationalError)
            calls.append(ev.id)
            if ev.id == "ev00010":
                raise sa.exc.IntegrityError("INSERT", {}, Exception("constraint"))
            return real_put(ev)

        st.put = put
        sink.emit(make_event(10))
        sink.emit(make_event(11))
        assert sink.pending == 0 and sink.dropped == 3 and calls == ["ev00010", "ev00011"]
        assert st.get("ev00011") is not None
    finally:
        st.close()


# ---- 3. MQTT: no silent loss while the broker is away ----------------------------------------------------------


@contextmanager
def mosquitto_on(port: int, d):
    """mosquitto on a given port (an outage test starts the broker after the publisher)."""
    exe = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)
    if exe is None:
        missing("mosquitto broker (apt-get install mosquitto)")
    conf = d / "mosq.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _connects(port), 10), "mosquitto did not start"
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_a_full_queue_during_an_outage_is_counted_logged_and_events_come_first(tmp_path, caplog):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (pip install paho-mqtt)")
    from seawatch.service.mqtt import MqttPublisher

    port = _free_port()  # nothing listens yet: the broker is down
    pub = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=port, topic_prefix="sw6"), client_id="pub6",
                        max_queued=4).start()
    hub = LiveHub()
    hub.add_listener(pub.on_live_message)
    try:
        with caplog.at_level(logging.WARNING, "seawatch.service.mqtt"):
            for i in range(4):  # each start also changes a retained count: those must not take the queue's room
                hub.publish_event(make_event(i, labels=(f"boat{i}",)))
            assert pub.dropped == 0
            for i in range(4, 7):
                hub.publish_event(make_event(i, labels=("boat0",)))
        assert pub.dropped == 3 and pub.stats() == {"connected": False, "dropped": 3, "dropped_retained": 0}
        drops = [r for r in caplog.records if "not published" in r.getMessage()]
        assert len(drops) == 1  # rate-limited: one line, not one per message
        with mosquitto_on(port, tmp_path):
            sub = Listener(port, "sw6/#")
            try:
                got = set()
                deadline = time.monotonic() + 20
                while len(got) < 4 and time.monotonic() < deadline:
                    try:
                        payload, _ = sub.until("sw6/events", timeout_s=1)
                        got.add(json.loads(payload)["after"]["id"])
                    except AssertionError:
                        pass
                assert got == {f"ev{i:05d}" for i in range(4)}  # every queued event reached the broker
                # the counts were re-asserted at the connect, retained for anyone subscribing later
                late = Listener(port, "sw6/cam-1/+")
                try:
                    assert late.until("sw6/cam-1/boat0", lambda p: p == "4")[1]
                    assert late.until("sw6/cam-1/boat3", lambda p: p == "1")[1]
                finally:
                    late.close()
            finally:
                sub.close()
    finally:
        pub.close(timeout_s=1)


# ---- 5. incidents left open by a crash are ended at the next start ----------------------------------------------
def test_incidents_open_at_a_crash_are_ended_at_start_in_store_and_broker(broker, tmp_path):
    from seawatch.service.mqtt import MqttPublisher
    from seawatch.service.runner import Service
    from test_service_serve import serve_settings

    mqtt = {"enabled": True, "host": "127.0.0.1", "port": broker, "topic_prefix": "sw7"}
    cfg = serve_settings(tmp_path, mqtt=mqtt)
    url = cfg.storage.resolved_database_url()
    # the run that crashes: an incident starts (stored, published, count retained), then nothing ends it
    st = EventStore.open(url)
    pub = MqttPublisher(MqttConfig(**mqtt), client_id="pub7-crashed").start()
    assert pub.connected.wait(5)
    hub = LiveHub()
    hub.add_listener(pub.on_live_message)
    sink = StoreSink(st, tmp_path / "media", [hub.publish_event])
    boat = make_event(0, type="vessel", labels=("boat",), at_ns=T0 + 7 * S)
    sink.emit(boat)
    sink.emit(replace(boat, phase="update", seq=1, at_ns=T0 + 9 * S))
    sink.emit(make_event(1, labels=("fire",)))
    sink.emit(make_event(1, phase="end", seq=1, end_ns=T0 + 2 * S, at_ns=T0 + 2 * S, labels=("fire",)))
    watch = Listener(broker, "sw7/#")
    try:
        assert watch.until("sw7/cam-1/boat", lambda p: p == "1")
        st.engine.dispose()  # as kill -9: no end phase, no count 0 (that process's publisher just stops talking)
        svc = Service(cfg).start()
        try:
            ev = svc.store.get("ev00000")
            assert (ev.phase, ev.seq, ev.end_ns, ev.attributes["end_reason"]) == ("end", 2, T0 + 9 * S, RESTART_END_REASON)
            assert svc.store.search(EventQuery(open_only=True)).events == []
            assert svc.store.get("ev00001").seq == 1  # ended properly before: untouched
            msg = json.loads(watch.until("sw7/events", lambda p: json.loads(p)["type"] == "end")[0])
            assert msg["after"]["id"] == "ev00000" and msg["after"]["attributes"]["end_reason"] == RESTART_END_REASON
            assert watch.until("sw7/cam-1/boat", lambda p: p == "0", timeout_s=10)
            late = Listener(broker, "sw7/cam-1/boat")
            try:
                assert late.until("sw7/cam-1/boat") == ("0", True)  # retained: a dashboard starting now sees 0
            finally:
                late.close()
        finally:
            svc.stop()
        # a second start finds nothing open: nothing is ended twice
        svc = Service(cfg).start()
        try:
            assert svc.store.get("ev00000").seq == 2
        finally:
            svc.stop()
    finally:
        watch.close()
        pub.close(timeout_s=1)
