"""``GET /api/metrics`` (service/metrics.py): Prometheus' text exposition format 0.0.4, parsed with
``prometheus_client``'s own parser so a malformed line fails; auth like the rest of the API (a viewer is enough); the
numbers of a running service (a file camera, a simulated drone and one never linked, a webhook that cannot be reached,
MQTT to a real broker, a replayed AIS log with a hostile file name) against ``/api/health`` and ``/api/sources``; counters that follow the
incidents stored; label values escaped; the cost of a scrape over a store of 100 000 events (printed, not asserted:
``pytest tests/test_metrics_endpoint.py -k cost -s``)."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from conftest import LEMMER_AIS_LOG, free_port, free_udp_port  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key, hash_password  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.metrics import CONTENT_TYPE, Exposition, escape_label_value  # noqa: E402
from seawatch.service.store import EventQuery, EventStore  # noqa: E402
import test_service_mqtt  # noqa: E402
from test_service_serve import KEY as ADMIN_KEY, FireEverywhere, serve_settings, write_video  # noqa: E402
from test_service_store import S, T0, make_event  # noqa: E402

broker = test_service_mqtt.broker  # the real mosquitto the MQTT tests start (module-scoped fixture)
VIEWER_KEY = "metrics-viewer-key-0123456789"
ADMIN = {"api_keys": [{"name": "test", "role": "admin", "key_sha256": hash_api_key(ADMIN_KEY)},
                      {"name": "prometheus", "role": "viewer", "key_sha256": hash_api_key(VIEWER_KEY)}]}
VIEW = {"X-API-Key": VIEWER_KEY}


def scrape(client, headers=VIEW) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, frozenset of label pairs): value}`` of one scrape, through the real parser."""
    r = client.get("/api/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"sample {key} twice"
            out[key] = s.value
    return out


def value(m, name, **labels):
    return m.get((name, frozenset(labels.items())))


def total(m, name) -> float:
    return sum(v for (n, _), v in m.items() if n == name)


def by_label(m, name, label) -> dict[str, float]:
    return {dict(k)[label]: v for (n, k), v in m.items() if n == name}


# ---- the format and auth ------------------------------------------------------------------------------------
@pytest.fixture
def plain_app(tmp_path):
    """The API alone over a new store (no pipeline): a viewer user and key, an operator key."""
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"token_secret": "m" * 40,
                 "users": [{"name": "vera", "role": "viewer", "password_hash": hash_password("viewer-pw")}],
                 "api_keys": ADMIN["api_keys"]},
    })
    app = create_app(cfg)
    with TestClient(app) as client:
        yield client, app


def test_metrics_need_a_viewer_and_are_the_text_format(plain_app):
    client, _ = plain_app
    r = client.get("/api/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/metrics", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
    assert client.get("/api/metrics", headers={"Authorization": "Bearer not.a-token"}).status_code == 401
    m = scrape(client)  # a viewer API key
    token = client.post("/api/auth/login", json={"username": "vera", "password": "viewer-pw"}).json()["access_token"]
    assert scrape(client, {"Authorization": f"Bearer {token}"}).keys() == m.keys()  # a viewer's bearer token
    text = client.get("/api/metrics", headers=VIEW).text
    fams = list(text_string_to_metric_families(text))
    names = [f.name for f in fams]
    assert len(names) == len(set(names)) >= 60
    assert all(n.startswith("seawatch_") or n == "process_start_time_seconds" for n in names), names
    assert all(f.documentation for f in fams)
    types = {f.name: f.type for f in fams}
    assert types["seawatch_events_stored"] == "counter" and types["seawatch_open_incidents"] == "gauge"
    assert types["seawatch_camera_frames_analysed"] == "counter" and types["seawatch_store_sink_pending"] == "gauge"
    assert value(m, "seawatch_build_info", version=client.get("/api/health").json()["version"]) == 1
    assert abs(value(m, "process_start_time_seconds") - time.time()) < 24 * 3600
    assert value(m, "seawatch_retention_enabled") == 1 and value(m, "seawatch_media_disk_total_bytes") > 0
    assert value(m, "seawatch_live_feed_clients") == 0
    assert value(m, "seawatch_mqtt_connected") is None and value(m, "seawatch_store_sink_pending") is None  # not here
    assert total(m, "seawatch_drone_up") == 0 and value(m, "seawatch_ais_messages_total") is None  # no fleet
    # every line is HELP, TYPE or a sample; the format ends in a line feed
    assert text.endswith("\n") and all(line.startswith(("# HELP ", "# TYPE ", "seawatch_", "process_"))
                                       for line in text.splitlines())


@pytest.mark.parametrize("hostile", ['quay "north"', "back\\slash", "two\nlines", 'all \\ " \n of them\\n', "ümlaut-ø"])
def test_label_values_are_escaped_and_read_back_by_the_real_parser(hostile):
    out = Exposition()
    out.gauge("seawatch_x", "help with a \\ and a\nline feed", [({"feed": hostile, "state": "up"}, 1)])
    out.counter("seawatch_y_total", "a counter", [({"source": hostile}, 3)])
    text = out.text()
    assert len(text.splitlines()) == 6  # a line feed in a value never splits a sample
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["seawatch_x"].samples[0].labels == {"feed": hostile, "state": "up"}
    assert fams["seawatch_x"].documentation == "help with a \\ and a\nline feed"
    assert fams["seawatch_y"].samples[0].labels == {"source": hostile} and fams["seawatch_y"].samples[0].value == 3
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_camera_ids_cannot_hold_what_needs_escaping():
    """The configuration allows camera (and drone) ids of letters, digits and ``_ . -`` only; what can carry a quote,
    a backslash or a line feed into a label is a file name (an AIS log), tested through the service below."""
    from seawatch.errors import ConfigError

    for bad in ('quay"1', "quay\\1", "quay\n1"):
        with pytest.raises(ConfigError):
            load_config(data={"sources": [{"id": bad, "url": "x.mp4", "models": ["stub"]}]})


# ---- the counters follow the incidents stored ---------------------------------------------------------------
def test_counters_follow_the_incidents_stored_and_an_incident_left_open_counts(tmp_path):
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")}, "auth": ADMIN})
    store = EventStore.open(cfg.storage.resolved_database_url())
    store.put(make_event(90, type="smoke", severity="low"))  # open before the service started
    store.put(make_event(91, type="smoke", severity="low", phase="end", seq=1, end_ns=T0 + 95 * S))  # over
    store.close()
    app = create_app(cfg)
    with TestClient(app) as client:
        m0 = scrape(client)
        assert by_label(m0, "seawatch_events_stored_total", "type") == {}  # since start: none yet
        assert value(m0, "seawatch_open_incidents", type="smoke", severity="low") == 1  # read from the store at start
        report = app.state.report  # the lifespan's StoreSink: the store, then the live hub
        report(make_event(1))  # fire, high: start
        report(make_event(1, phase="update", seq=1, at_ns=T0 + 3 * S))
        report(make_event(2, severity="critical"))
        m1 = scrape(client)
        assert value(m1, "seawatch_events_stored_total", type="fire", severity="high") == 1  # an update is no new one
        assert value(m1, "seawatch_events_stored_total", type="fire", severity="critical") == 1
        assert value(m1, "seawatch_open_incidents", type="fire", severity="high") == 1
        # a review changes no phase; the end closes it; the old smoke incident ends too
        assert client.post("/api/events/ev00001/acknowledge", headers={"X-API-Key": ADMIN_KEY}, json={}).status_code == 200
        report(make_event(1, phase="end", seq=2, at_ns=T0 + 5 * S, end_ns=T0 + 5 * S))
        report(make_event(90, type="smoke", severity="low", phase="end", seq=1, end_ns=T0 + 99 * S))
        report(make_event(3, type="manual_report", severity="medium", phase="end", end_ns=T0 + 4 * S))  # reported: seq 0, ended
        m2 = scrape(client)
        assert value(m2, "seawatch_events_stored_total", type="fire", severity="high") == 1
        assert value(m2, "seawatch_events_stored_total", type="manual_report", severity="medium") == 1
        assert value(m2, "seawatch_events_stored_total", type="smoke", severity="low") is None  # started before us
        assert value(m2, "seawatch_open_incidents", type="fire", severity="high") is None
        assert value(m2, "seawatch_open_incidents", type="smoke", severity="low") is None
        assert value(m2, "seawatch_open_incidents", type="fire", severity="critical") == 1
        # the gauge is what the store holds open
        assert total(m2, "seawatch_open_incidents") == len(
            app.state.store.search(EventQuery(open_only=True, limit=100)).events)


# ---- a running service --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _service(tmp_path, shared_media, mqtt_port):
    from seawatch.service.runner import Service

    hostile = 'harbour "east" \\ log\nnight.nmea'  # a file name can hold all three
    log_path = tmp_path / hostile
    shutil.copyfile(shared_media / LEMMER_AIS_LOG, log_path)
    video = tmp_path / "quay.mp4"
    write_video(video, seconds=2.0)
    cam = {"width_px": 160, "height_px": 120, "hfov_deg": 70}
    cfg = serve_settings(
        tmp_path, video, auth=ADMIN,
        webhooks=[{"name": "control-room", "url": f"http://127.0.0.1:{free_port()}/hook", "max_backoff_s": 1}],
        ais=[f"loop:{log_path}"],
        mqtt={"enabled": True, "host": "127.0.0.1", "port": mqtt_port},
        drones=[{"id": "patrol-1", "connection": f"udp:127.0.0.1:{free_udp_port()}", "camera": cam},
                {"id": "ghost", "connection": f"udp:127.0.0.1:{free_udp_port()}", "camera": cam}],
        fleet=[{"drone": "patrol-1", "sim": {"home_lat_deg": 52.84, "home_lon_deg": 5.71, "speed": 5.0}}],
    )
    svc = Service(cfg, detectors={"stub": FireEverywhere()}, file_pace="realtime", loop_files=True).start()
    try:
        with TestClient(svc.app) as client:
            yield svc, client, "loop:" + hostile
    finally:
        svc.stop()


def _until(fn, timeout_s=30.0, every_s=0.3):
    deadline = time.monotonic() + timeout_s
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(every_s)


def test_a_running_service_scrapes_what_health_and_sources_say(tmp_path, shared_media, broker):
    with _service(tmp_path, shared_media, broker) as (svc, client, feed):
        admin = {"X-API-Key": ADMIN_KEY}

        def sources():
            return {s["source_id"]: s for s in client.get("/api/sources", headers=VIEW).json()}

        def drone_up():
            return sources()["patrol-1"]["state"] == "connected" and sources()["patrol-1"]["battery_pct"] is not None

        assert _until(lambda: (sources()["quay-1"].get("analysis") or {}).get("frames", 0) >= 5), sources()["quay-1"]
        assert _until(lambda: client.get("/api/health", headers=admin).json()["delivery"]["webhooks"][0]["failed_attempts"] >= 1)
        assert _until(lambda: sources()["ais"]["messages"] > 0 and sources()["ais"]["vessels"] > 0)
        assert _until(drone_up), sources()["patrol-1"]
        assert _until(lambda: client.get("/api/health", headers=admin).json()["delivery"]["mqtt"]["connected"])

        h0, s0 = client.get("/api/health", headers=admin).json(), sources()
        m = scrape(client)
        h1, s1 = client.get("/api/health", headers=admin).json(), sources()

        def between(name, get, **labels):
            got = value(m, name, **labels)
            assert got is not None, (name, labels)
            assert get(h0, s0) <= got <= get(h1, s1), (name, get(h0, s0), got, get(h1, s1))

        # the camera
        cam0, cam1 = s0["quay-1"], s1["quay-1"]
        assert cam0["state"] == cam1["state"] == "online"
        assert value(m, "seawatch_camera_up", source="quay-1") == 1
        assert by_label(m, "seawatch_camera_state", "state")["online"] == 1
        assert sum(by_label(m, "seawatch_camera_state", "state").values()) == 1
        assert value(m, "seawatch_camera_asked_frames_per_second", source="quay-1") == cam0["analysis"]["asked_fps"] == 5.0
        between("seawatch_camera_frames_analysed_total", lambda h, s: s["quay-1"]["analysis"]["frames"], source="quay-1")
        between("seawatch_camera_frames_decoded_total", lambda h, s: s["quay-1"]["frames_decoded"], source="quay-1")
        assert value(m, "seawatch_camera_reconnects_total", source="quay-1") == cam1["reconnects"]
        assert value(m, "seawatch_camera_failed_attempts", source="quay-1") == 0
        assert value(m, "seawatch_camera_down_since_timestamp_seconds", source="quay-1") is None  # up
        assert value(m, "seawatch_camera_state_since_timestamp_seconds", source="quay-1") == cam1["since_ns"] / 1e9
        for key, name in (("analysed_fps", "analysed_frames_per_second"), ("lag_ms", "lag_seconds"),
                          ("process_ms", "process_seconds"), ("detect_ms", "detect_seconds")):
            lo, hi = sorted((cam0["analysis"][key], cam1["analysis"][key]))
            scale = 1000.0 if key.endswith("_ms") else 1.0
            got = value(m, f"seawatch_camera_{name}", source="quay-1") * scale
            assert lo * 0.5 - 1 <= got <= hi * 2 + 1, (key, lo, got, hi)  # running means: close, not equal
        assert value(m, "seawatch_camera_live_video_viewers", source="quay-1") == 0
        # delivery: the store sink and the webhook nobody answers
        between("seawatch_store_sink_stored_total", lambda h, s: h["delivery"]["store_sink"]["stored"])
        assert value(m, "seawatch_store_sink_dropped_total") == h1["delivery"]["store_sink"]["dropped"] == 0
        between("seawatch_webhook_failed_attempts_total", lambda h, s: h["delivery"]["webhooks"][0]["failed_attempts"],
                webhook="control-room")
        assert value(m, "seawatch_webhook_delivered_total", webhook="control-room") == 0
        assert value(m, "seawatch_webhook_failing", webhook="control-room") == 1 and h1["status"] == "degraded"
        mq = h1["delivery"]["mqtt"]
        assert value(m, "seawatch_mqtt_connected") == int(mq["connected"]) == 1
        assert value(m, "seawatch_mqtt_dropped_total") == mq["dropped"] and value(m, "seawatch_mqtt_dropped_retained_total") == mq["dropped_retained"]
        # the media disk and retention
        disk = h1["retention"]["disk"]
        assert value(m, "seawatch_media_disk_total_bytes") == disk["total_bytes"]
        assert value(m, "seawatch_media_disk_threshold_bytes") == disk["threshold_bytes"]
        assert abs(value(m, "seawatch_media_disk_free_bytes") - disk["free_bytes"]) < 0.05 * disk["total_bytes"]
        assert value(m, "seawatch_media_disk_low") == 0
        assert value(m, "seawatch_retention_sweeps_total") == h1["retention"]["deleted_since_start"]["sweeps"]
        # drones: the simulated one linked, the other never
        d0 = s0["patrol-1"]
        assert value(m, "seawatch_drone_up", drone="patrol-1") == 1 and value(m, "seawatch_drone_up", drone="ghost") == 0
        assert value(m, "seawatch_drone_link_state", drone="patrol-1", state="connected") == 1
        assert value(m, "seawatch_drone_link_state", drone="ghost", state=s1["ghost"]["state"]) == 1
        assert value(m, "seawatch_drone_armed", drone="patrol-1") == int(d0["armed"]) == 0
        assert value(m, "seawatch_drone_battery_ratio", drone="patrol-1") == pytest.approx(d0["battery_pct"] / 100, abs=0.02)
        assert value(m, "seawatch_drone_armed", drone="ghost") is None  # never reported
        # AIS, its feed named by a file name with a quote, a backslash and a line feed
        between("seawatch_ais_messages_total", lambda h, s: s["ais"]["messages"])
        lo, hi = sorted((s0["ais"]["vessels"], s1["ais"]["vessels"]))
        assert lo <= value(m, "seawatch_ais_vessels") <= hi
        assert value(m, "seawatch_ais_state", state=s1["ais"]["state"]) == 1
        (fs,) = s1["ais"]["feed_states"]
        assert fs["feed"] == feed
        assert {dict(k)["feed"] for (n, k) in m if n == "seawatch_ais_feed_state"} == {feed}
        assert value(m, "seawatch_ais_feed_state", feed=feed, state=fs["state"]) == 1
        assert value(m, "seawatch_ais_feed_messages_total", feed=feed) is not None

        # incidents: the stand-in detector sees fire in every picture
        assert _until(lambda: client.get("/api/events", headers=VIEW, params={"type": "fire"}).json()["events"])

        def open_agree():
            store_open = svc.store.search(EventQuery(open_only=True, limit=100)).events
            mm = scrape(client)
            again = svc.store.search(EventQuery(open_only=True, limit=100)).events
            if [e.id for e in store_open] != [e.id for e in again]:
                return False  # an incident began or ended meanwhile: look again
            want: dict[tuple[str, str], int] = {}
            for e in store_open:
                want[(e.type, e.severity)] = want.get((e.type, e.severity), 0) + 1
            got = {(dict(k)["type"], dict(k)["severity"]): v for (n, k), v in mm.items() if n == "seawatch_open_incidents"}
            return got == want and sum(want.values()) > 0

        assert _until(open_agree)

        def fire_stored_agree():  # this store is new: every fire incident in it was stored since start
            def in_store():
                evs = svc.store.search(EventQuery(types=("fire",), limit=100)).events
                return sorted(e.id for e in evs)
            before = in_store()
            got = sum(v for (n, k), v in scrape(client).items()
                      if n == "seawatch_events_stored_total" and dict(k)["type"] == "fire")
            return before == in_store() and got == len(before) > 0

        assert _until(fire_stored_agree)


# ---- the cost of a scrape -----------------------------------------------------------------------------------
def test_scrape_cost_with_100000_events_in_the_store(tmp_path):
    """Fill a SQLite store with 100 000 incidents (2 % open) as the report benchmark does, start the API over it with
    50 cameras running (their status and analysis stats as the service gives them), and time scrapes. Printed, not asserted (2 shared cores here); the open-incident gauge must equal the store's count."""
    import sqlalchemy as sa

    from seawatch.service.bench_report import fill
    from seawatch.service.metrics import IncidentCounts
    from seawatch.service.store import events_table

    from seawatch.streams.source import SourceStatus, State
    from seawatch.vision.pipeline import AnalysisStats

    cams = [f"cam-{i:02d}" for i in range(50)]  # the cameras the filled events name
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")}, "auth": ADMIN,
                            "sources": [{"id": c, "url": f"rtsp://10.0.0.{i}/live", "models": ["stub"]}
                                        for i, c in enumerate(cams)]})
    stats = {c: AnalysisStats(5.0) for c in cams}
    for st in stats.values():
        st.record(time.time_ns() - 200_000_000, 0.05, 0.04)

    def source_status():  # what Service.source_status gives for 50 cameras that run
        return [{**SourceStatus(c, "rtsp://10.0.0.1/live", State.ONLINE, time.time_ns(), frames_queued=100).as_dict(),
                 "analysis": stats[c].snapshot(100)} for c in cams]

    store = EventStore.open(cfg.storage.resolved_database_url())
    try:
        fill_s = fill(store, 100_000, 30, time.time_ns())
        with store.engine.connect() as conn:
            n_open = conn.execute(sa.select(sa.func.count()).select_from(events_table)
                                  .where(events_table.c.end_ns.is_(None))).scalar_one()
        t = time.perf_counter()
        IncidentCounts().seed(store)
        seed_ms = (time.perf_counter() - t) * 1e3
        app = create_app(cfg, store=store, source_status=source_status)
        with TestClient(app) as client:
            m = scrape(client)
            assert total(m, "seawatch_camera_up") == 50
            assert total(m, "seawatch_open_incidents") == n_open > 1000
            times = []
            for _ in range(200):
                t = time.perf_counter()
                r = client.get("/api/metrics", headers=VIEW)
                times.append((time.perf_counter() - t) * 1e3)
                assert r.status_code == 200
            render_times = []
            from seawatch.service.metrics import render

            for _ in range(200):
                t = time.perf_counter()
                render(app.state, app.state.incidents, "x", None)
                render_times.append((time.perf_counter() - t) * 1e3)
    finally:
        store.close()
    q = statistics.quantiles(times, n=20)
    rq = statistics.quantiles(render_times, n=20)
    print(f"\nmetrics scrape, 50 cameras, 100 000 events ({n_open} open; filled in {fill_s:.1f} s): "
          f"HTTP p50 {statistics.median(times):.2f} ms, p95 {q[18]:.2f} ms, max {max(times):.2f} ms; "
          f"render alone p50 {statistics.median(render_times):.2f} ms, p95 {rq[18]:.2f} ms; "
          f"open incidents read at start {seed_ms:.1f} ms; {len(r.content)} bytes")
