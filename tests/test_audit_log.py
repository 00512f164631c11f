"""The security audit log (``service/audit.py``, table ``audit_log`` of migration 0011, ``GET /api/admin/audit``).

A real HTTP server (``serve_in_thread``) on SQLite and on the PostgreSQL fixture's server, reached as if through a
reverse proxy on this machine (``X-Forwarded-For``: the default ``service.trusted_proxies`` believe 127.0.0.1): every
recorded action — log-ins, failed ones (the password nowhere in the database), log-outs, exports, holds, ignore areas,
calibrations, view reference resets, drone commands, reported events, reviews, refusals for want of a role, reads of
the log — is listed with its actor, role, the forwarded client address, target, outcome and status. An admin reads it
with filters and a cursor, or as CSV (formula cells neutralised); anyone else gets 403. A failing audit write does not
fail the action (it is logged at ERROR instead). Retention deletes rows past ``audit_days``. The migration from 0010
keeps existing data.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings

import httpx
import pytest
import sqlalchemy as sa

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import serve_in_thread  # noqa: E402
from seawatch.errors import InputError, TelemetryError  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key, hash_password  # noqa: E402
from seawatch.service.config import RetentionConfig, load_config  # noqa: E402
from seawatch.service.retention import DAY_NS, Retention  # noqa: E402
from seawatch.service.store import AuditEntry, AuditQuery, EventStore  # noqa: E402
import test_service_store  # noqa: E402
from test_service_store import make_event, new_pg_database  # noqa: E402

postgres_server = test_service_store.postgres_server  # the session's PostgreSQL server fixture (skip / CI failure)

ADMIN_KEY = "audit-admin-key-0123456789abcdef"
REVIEWER_KEY = "audit-reviewer-key-0123456789abc"
OPERATOR_KEY = "audit-operator-key-0123456789abc"
VIEWER_KEY = "audit-viewer-key-0123456789abcde"
PASSWORD = "correct horse battery staple 7"
WRONG = "S3cret-typed-wrong!"
CLIENT = "203.0.113.7"  # the client behind the proxy (X-Forwarded-For)
CAM = "quay-cam"
CAL = {"camera": {"width_px": 160, "height_px": 120, "hfov_deg": 60.0}, "surface_alt_m": 0.0,
       "surveyed": {"lat_deg": 52.842, "lon_deg": 5.7, "alt_m": 30.0, "pan_deg": 150.0, "tilt_deg": -4.0}}


class FakeFleet:
    """The fleet the drone routes talk to: one linked drone that takes every command."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def drones(self) -> list[dict]:
        return [{"drone_id": "patrol-1", "kind": "drone", "state": "connected", "patrol": "r", "patrol_state": "aborted"}]

    def ais(self) -> list[dict]:
        return []

    def abort_patrol(self, drone_id: str, mode: str) -> bool:
        self.calls.append(("abort", drone_id, mode))
        return True

    def restart_patrol(self, drone_id: str) -> None:
        self.calls.append(("restart", drone_id))

    def investigate(self, drone_id, lat, lon, **kw) -> None:
        if lat > 60:
            raise TelemetryError("no link")
        self.calls.append(("investigate", drone_id, lat, lon))


def _settings(tmp_path, database_url: str | None = None):
    storage = {"data_dir": str(tmp_path / "data")}
    if database_url:
        storage["database_url"] = database_url
    return load_config(data={
        "storage": storage,
        "auth": {"token_secret": "t" * 40,
                 "users": [{"name": "ada", "role": "admin", "password_hash": hash_password(PASSWORD)}],
                 "api_keys": [{"name": "installer", "role": "admin", "key_sha256": hash_api_key(ADMIN_KEY)},
                              {"name": "rita", "role": "reviewer", "key_sha256": hash_api_key(REVIEWER_KEY)},
                              {"name": "desk", "role": "operator", "key_sha256": hash_api_key(OPERATOR_KEY)},
                              {"name": "wall", "role": "viewer", "key_sha256": hash_api_key(VIEWER_KEY)}]},
        "sources": [{"id": CAM, "url": "rtsp://127.0.0.1:1/none", "calibration": CAL}],
        "drones": [{"id": "patrol-1", "connection": "udp:127.0.0.1:14999",
                    "camera": {"width_px": 640, "height_px": 480, "hfov_deg": 70}}],
    })


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return new_pg_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def served(tmp_path, db_url):
    """(base URL, store) of a served API over a store holding events ev00000-ev00002 of camera quay-cam."""
    store = EventStore.open(db_url)
    for i in range(3):
        assert store.put(make_event(i, source_id=CAM))
    try:
        with serve_in_thread(create_app(_settings(tmp_path), store=store, fleet=FakeFleet())) as port:
            yield f"http://127.0.0.1:{port}", store
    finally:
        store.close()


def _client(base: str, key: str | None = None, **headers) -> httpx.Client:
    h = {"X-Forwarded-For": CLIENT, **headers}
    if key:
        h["X-API-Key"] = key
    return httpx.Client(base_url=base, headers=h, timeout=30)


def _all(store: EventStore) -> list[AuditEntry]:
    return store.audit_log(AuditQuery(limit=1000))[0]


def _raw_rows(store: EventStore) -> str:
    """Every audit row as the database holds it, as one text (to look for what must never be in it)."""
    with store.engine.connect() as conn:
        return repr(conn.execute(sa.text("SELECT * FROM audit_log")).all())


def test_every_recorded_action_names_its_actor_client_target_and_outcome(served):
    base, store = served
    with _client(base) as anon:
        ok = anon.post("/api/auth/login", json={"username": "ada", "password": PASSWORD})
        assert ok.status_code == 200
        token = ok.json()["access_token"]
        assert anon.post("/api/auth/login", json={"username": "ada", "password": WRONG}).status_code == 401
        # a password typed in the user field: an unknown name is not repeated in the log
        assert anon.post("/api/auth/login", json={"username": WRONG, "password": "x"}).status_code == 401
    with _client(base, Authorization=f"Bearer {token}") as ada:
        assert ada.post("/api/auth/logout").status_code == 204
    with _client(base, OPERATOR_KEY) as desk:
        assert desk.post("/api/events/ev00000/acknowledge", json={"note": "looking"}).status_code == 200
        assert desk.post("/api/events/ev00001/dismiss", json={"note": "a gull", "reason": "false_detection"}).status_code == 200
        assert desk.post("/api/drones/patrol-1/abort", json={"mode": "LAND"}).status_code == 200
        assert desk.post("/api/drones/patrol-1/restart").status_code == 200
        assert desk.post("/api/drones/patrol-1/investigate", json={"lat_deg": 52.84, "lon_deg": 5.70}).status_code == 200
        assert desk.post("/api/drones/patrol-1/investigate", json={"lat_deg": 61.0, "lon_deg": 5.70}).status_code == 409
        # a report from a recording that holds nothing there: refused, recorded as such
        r = desk.post("/api/events", json={"source": CAM, "start_ns": 10**18, "end_ns": 10**18 + 10**10, "note": "boat"})
        assert r.status_code == 404, r.text
        assert desk.get(f"/api/sources/{CAM}/clip", params={"start_ns": 10**18, "end_ns": 10**18 + 10**10}).status_code == 404
        assert desk.get(f"/api/sources/{CAM}/clip", params={"start_ns": 10**18, "end_ns": 10**18 + 10**10,
                                                             "download": "true"}).status_code == 404
        assert desk.get("/api/export/events.csv", params={"source": CAM}).status_code == 200
        assert desk.get("/api/export/events.geojson").status_code == 200
        assert desk.get("/api/export/events.kml").status_code == 200
        assert desk.post("/api/events/ev00000/confirm").status_code == 403  # an operator: not a reviewer's verdict
        assert desk.post(f"/api/sources/{CAM}/snooze", json={"minutes": 30, "note": "crane maintenance"}).status_code == 200
        assert desk.request("DELETE", f"/api/sources/{CAM}/snooze", json={"note": "done early"}).status_code == 200
    with _client(base, REVIEWER_KEY) as rita:
        assert rita.post("/api/events/ev00000/confirm", json={"note": "real"}).status_code == 200
        assert rita.post("/api/events/ev00002/hold", json={"note": "claim 12"}).status_code == 200
        assert rita.request("DELETE", "/api/events/ev00002/hold", json={"note": "claim settled"}).status_code == 200
        assert rita.get("/api/events/ev00002/evidence.zip").status_code == 200
        assert rita.post("/api/events/ev00002/ignore-spot").status_code == 409  # no subject box to ignore
        assert rita.delete(f"/api/sources/{CAM}/ignore-areas/99").status_code == 404
    with _client(base, ADMIN_KEY) as admin:
        assert admin.put(f"/api/sources/{CAM}/calibration", json={"calibration": CAL, "note": "re-fit"}).status_code == 200
        assert admin.delete(f"/api/sources/{CAM}/calibration").status_code == 200
        assert admin.post(f"/api/sources/{CAM}/view_reference").status_code == 422  # no running pipeline
    with _client(base, VIEWER_KEY) as wall:
        assert wall.get("/api/events").status_code == 200  # reads are not recorded
        assert wall.get("/api/admin/audit").status_code == 403

    entries = _all(store)
    got = {(e.action, e.outcome, e.status, e.actor, e.role, e.target) for e in entries}
    want = {
        ("auth.login", "ok", 200, "ada", "admin", "ada"),
        ("auth.login_failed", "refused", 401, "ada", "", "ada"),
        ("auth.login_failed", "refused", 401, "", "", ""),
        ("auth.logout", "ok", 204, "ada", "admin", "ada"),
        ("review.acknowledge", "ok", 200, "desk", "operator", "ev00000"),
        ("review.dismiss", "ok", 200, "desk", "operator", "ev00001"),
        ("drone.abort", "ok", 200, "desk", "operator", "patrol-1"),
        ("drone.restart", "ok", 200, "desk", "operator", "patrol-1"),
        ("drone.investigate", "ok", 200, "desk", "operator", "patrol-1"),
        ("drone.investigate", "refused", 409, "desk", "operator", "patrol-1"),
        ("event.report", "refused", 404, "desk", "operator", CAM),
        ("export.recording", "refused", 404, "desk", "operator", CAM),
        ("export.csv", "ok", 200, "desk", "operator", ""),
        ("export.geojson", "ok", 200, "desk", "operator", ""),
        ("export.kml", "ok", 200, "desk", "operator", ""),
        ("auth.forbidden", "refused", 403, "desk", "operator", "/api/events/ev00000/confirm"),
        ("camera.snooze", "ok", 200, "desk", "operator", CAM),
        ("camera.snooze_end", "ok", 200, "desk", "operator", CAM),
        ("review.confirm", "ok", 200, "rita", "reviewer", "ev00000"),
        ("hold.add", "ok", 200, "rita", "reviewer", "ev00002"),
        ("hold.release", "ok", 200, "rita", "reviewer", "ev00002"),
        ("export.evidence", "ok", 200, "rita", "reviewer", "ev00002"),
        ("ignore_area.add", "refused", 409, "rita", "reviewer", "ev00002"),
        ("ignore_area.remove", "refused", 404, "rita", "reviewer", CAM),
        ("calibration.apply", "ok", 200, "installer", "admin", CAM),
        ("calibration.revert", "ok", 200, "installer", "admin", CAM),
        ("view_reference.reset", "refused", 422, "installer", "admin", CAM),
        ("auth.forbidden", "refused", 403, "wall", "viewer", "/api/admin/audit"),
    }
    assert want <= got, sorted(want - got)
    assert len(entries) == len(want) + 0, sorted(got - want)  # nothing else: a played clip, searches, reads
    assert {e.client for e in entries} == {CLIENT}  # the client behind the proxy, not the proxy
    by = {(e.action, e.status, e.target): e for e in entries}
    assert by[("review.dismiss", 200, "ev00001")].details == {"note": "a gull", "reason": "false_detection"}
    assert by[("drone.abort", 200, "patrol-1")].details == {"mode": "LAND"}
    assert by[("camera.snooze", 200, CAM)].details == {"minutes": 30, "until_ns": None, "note": "crane maintenance",
                                                       "types": None}
    assert by[("hold.release", 200, "ev00002")].details["lifted"][0]["reason"] == "manual"
    assert by[("export.csv", 200, "")].details == {"filters": {"source": [CAM]}, "events": 3, "truncated": False}
    assert by[("export.recording", 404, CAM)].details["start_ns"] == 10**18
    assert "calibration_id" in by[("calibration.apply", 200, CAM)].details
    assert by[("auth.login_failed", 401, "")].details == {"reason": "wrong user name or password", "user_known": False}
    assert by[("auth.forbidden", 403, "/api/admin/audit")].details == {"method": "GET", "needs": "admin"}
    assert {e.actor_kind for e in entries if e.actor == "desk"} == {"key"}
    raw = _raw_rows(store)
    assert WRONG not in raw and PASSWORD not in raw and token not in raw and OPERATOR_KEY not in raw

    # the admin's read: newest first, and itself recorded (after it was answered)
    with _client(base, ADMIN_KEY) as admin:
        page = admin.get("/api/admin/audit", params={"limit": 1000}).json()
        times = [e["time_ns"] for e in page["entries"]]
        assert times == sorted(times, reverse=True) and len(page["entries"]) == len(entries)
        assert page["entries"][0]["action"] == "auth.forbidden" and page["next_cursor"] is None
        latest = admin.get("/api/admin/audit", params={"limit": 1}).json()["entries"][0]
    assert latest["action"] == "audit.read" and latest["actor"] == "installer" and latest["client"] == CLIENT
    assert latest["details"] == {"filters": {}, "entries": len(entries)}


def test_a_failing_audit_write_does_not_fail_the_action(tmp_path, caplog):
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    store.put(make_event(0, source_id=CAM))
    fleet = FakeFleet()

    def broken(entry):
        raise sa.exc.OperationalError("INSERT INTO audit_log", {}, Exception("disk I/O error"))

    store.add_audit = broken
    try:
        with TestClient(create_app(_settings(tmp_path), store=store, fleet=fleet)) as c, \
                caplog.at_level(logging.ERROR, logger="seawatch.service.audit"):
            op = {"X-API-Key": OPERATOR_KEY}
            assert c.post("/api/drones/patrol-1/abort", headers=op).status_code == 200
            assert fleet.calls == [("abort", "patrol-1", "RTL")]
            assert c.post("/api/events/ev00000/acknowledge", headers=op, json={"note": "seen"}).status_code == 200
            assert store.get("ev00000").review_status == "acknowledged"
            assert c.post("/api/auth/login", json={"username": "ada", "password": PASSWORD}).status_code == 200
            assert c.post("/api/events/ev00000/confirm", headers=op).status_code == 403  # still refused, not a 500
            assert c.app.state.audit.failures == 4
            health = c.get("/api/health", headers=op).json()
            assert health["audit"] == {"written": 0, "failures": 4}  # an admin can see entries were lost
    finally:
        store.close()
    lost = [r for r in caplog.records if "could NOT be recorded" in r.getMessage()]
    assert len(lost) == 4 and all(r.levelno == logging.ERROR for r in lost)
    assert '"action": "drone.abort"' in lost[0].getMessage() and '"actor": "desk"' in lost[0].getMessage()
    assert "disk I/O error" in lost[0].getMessage()


def _fill(store: EventStore, t0: int) -> None:
    rows = [("auth.login", "ada", "ada"), ("export.evidence", "rita", "ev1"), ("export.csv", "desk", ""),
            ("drone.abort", "desk", "patrol-1"), ("auth.login_failed", "", ""), ("review.dismiss", "desk", "ev1"),
            ("export.evidence", "rita", "ev2"), ("auth.logout", "ada", "ada")]
    for i, (action, actor, target) in enumerate(rows):
        store.add_audit(AuditEntry(time_ns=t0 + i * 60 * 10**9, action=action, outcome="ok", status=200, actor=actor,
                                   target=target, client="198.51.100.1", details={"i": i}))


def test_store_filters_pages_and_deletes_on_both_databases(db_url):
    store = EventStore.open(db_url)
    try:
        t0 = 1_790_000_000 * 10**9
        _fill(store, t0)
        # two rows in the same nanosecond: the cursor still gives each once (time, then id)
        store.add_audit(AuditEntry(time_ns=t0, action="export.kml", outcome="ok", status=200, actor="desk"))

        def actions(**kw) -> list[str]:
            return [e.action for e in store.audit_log(AuditQuery(limit=100, **kw))[0]]

        assert actions(action="export") == ["export.evidence", "export.csv", "export.evidence", "export.kml"]
        assert actions(action="auth.login") == ["auth.login_failed", "auth.login"]  # a prefix of the name
        assert actions(action="export.evidence", target="ev1") == ["export.evidence"]
        assert actions(actor="ada") == ["auth.logout", "auth.login"]
        assert actions(action="auth_") == [] and actions(action="%") == []  # not LIKE patterns
        assert actions(from_ns=t0 + 60 * 10**9, to_ns=t0 + 3 * 60 * 10**9) == ["export.csv", "export.evidence"]
        seen, cursor = [], None
        while True:
            page, cursor = store.audit_log(AuditQuery(limit=2, cursor=cursor))
            seen += [(e.time_ns, e.id) for e in page]
            if cursor is None:
                break
        assert len(seen) == 9 and len(set(seen)) == 9 and seen == sorted(seen, reverse=True)
        from seawatch.service.store import EventQuery

        events_cursor = store.search(EventQuery(limit=1)).next_cursor or "W10"
        for bad in ("junk", events_cursor):
            with pytest.raises(InputError):
                store.audit_log(AuditQuery(cursor=bad))
        got = store.audit_log(AuditQuery(limit=1, actor="rita"))[0][0]
        assert got.client == "198.51.100.1" and got.details == {"i": 6} and got.id > 0
        # retention's batches: the oldest first, nothing after the cut
        assert store.count_audit_before(t0 + 2 * 60 * 10**9) == 3
        assert store.delete_audit_before(t0 + 2 * 60 * 10**9, limit=2) == 2
        assert store.delete_audit_before(t0 + 2 * 60 * 10**9, limit=2) == 1
        assert store.delete_audit_before(t0 + 2 * 60 * 10**9, limit=2) == 0
        assert len(_all(store)) == 6
        # long text is cut to its column, NUL characters dropped, details must be JSON
        store.add_audit(AuditEntry(time_ns=t0, action="auth.login", outcome="ok", status=200, actor="x\x00" * 200,
                                   details={"note": "a\x00b"}))
        odd = store.audit_log(AuditQuery(limit=1, action="auth.login", to_ns=t0 + 1))[0][0]
        assert odd.actor == "x" * 128 and odd.details == {"note": "a\x00b"}
        with pytest.raises(InputError):
            store.add_audit(AuditEntry(time_ns=t0, action="x", outcome="maybe", status=200))
    finally:
        store.close()


def test_admin_reads_with_filters_cursor_and_csv(tmp_path):
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    t0 = 1_790_000_000 * 10**9
    _fill(store, t0)
    # text from anyone (a user name typed at the log-in, a note) that a spreadsheet would run
    store.add_audit(AuditEntry(time_ns=t0 + 3600 * 10**9, action="hold.add", outcome="ok", status=200,
                               actor="=HYPERLINK(\"http://x\",\"y\")", target="@ev9", client="::1",
                               details={"note": "+1 more, \"quoted\"\nline"}))
    try:
        with TestClient(create_app(_settings(tmp_path), store=store)) as c:
            admin = {"X-API-Key": ADMIN_KEY}
            for key in (REVIEWER_KEY, OPERATOR_KEY, VIEWER_KEY):
                r = c.get("/api/admin/audit", headers={"X-API-Key": key})
                assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
                assert c.get("/api/admin/audit", headers={"X-API-Key": key}, params={"format": "csv"}).status_code == 403
            assert c.get("/api/admin/audit").status_code == 401

            def get(**params):
                r = c.get("/api/admin/audit", headers=admin, params=params)
                assert r.status_code == 200, r.text
                return r.json()

            until = "2026-09-21T16:00:00Z"  # before the reads below are recorded
            p = get(action="export", to=until)
            assert [e["action"] for e in p["entries"]] == ["export.evidence", "export.csv", "export.evidence"]
            assert [e["target"] for e in get(actor="rita", to=until)["entries"]] == ["ev2", "ev1"]
            assert [e["action"] for e in get(target="ev1", to=until)["entries"]] == ["review.dismiss", "export.evidence"]
            assert len(get(**{"from": "2026-09-21T14:15:00Z", "to": "2026-09-21T14:17:00+00:00"})["entries"]) == 2
            pages, cursor = [], None
            while True:
                p = get(limit=3, to=until, **({"cursor": cursor} if cursor else {}))
                pages.append([e["id"] for e in p["entries"]])
                cursor = p["next_cursor"]
                if cursor is None:
                    break
            ids = [i for page in pages for i in page]
            assert [len(x) for x in pages] == [3, 3, 3] and len(set(ids)) == 9
            for bad in ({"cursor": "junk"}, {"from": "yesterday"}, {"limit": 0}, {"limit": 5000}, {"bogus": 1},
                        {"from": "2026-09-22", "to": "2026-09-21"}, {"format": "xml"}):
                r = c.get("/api/admin/audit", headers=admin, params=bad)
                assert r.status_code in (400, 422), (bad, r.text)

            r = c.get("/api/admin/audit", headers=admin, params={"format": "csv", "to": until})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
            assert 'filename="seawatch-audit.csv"' in r.headers["content-disposition"]
            assert r.headers["x-seawatch-truncated"] == "false"
            text = r.content.decode("utf-8")
            assert text.startswith("\ufeff")
            rows = list(csv.reader(io.StringIO(text[1:])))
            assert rows[0] == ["time_utc", "time_ns", "actor", "actor_kind", "role", "client", "action", "target",
                               "outcome", "status", "details"]
            assert len(rows) == 10
            hostile = rows[1]
            assert hostile[2] == "'=HYPERLINK(\"http://x\",\"y\")" and hostile[7] == "'@ev9" and hostile[5] == "::1"
            assert hostile[10] == '{"note":"+1 more, \\"quoted\\"\\nline"}'
            assert rows[-1][0] == "2026-09-21T14:13:20Z" and rows[-1][6] == "auth.login"

            reads = [e for e in get(action="audit", limit=50)["entries"]]
            kinds = [e["action"] for e in reads]
            assert kinds.count("audit.export") == 1 and kinds.count("audit.read") >= 8
            export = next(e for e in reads if e["action"] == "audit.export")
            assert export["details"] == {"filters": {"to": "2026-09-21T16:00:00Z"}, "rows": 9, "truncated": False}
            assert export["actor"] == "installer" and export["role"] == "admin"
            # a cursor the store refuses is a refused read; junk the schema refuses never reaches the route
            refused = [(e["action"], e["status"]) for e in reads if e["outcome"] == "refused"]
            assert refused == [("audit.read", 400)]
    finally:
        store.close()


def test_details_never_keep_a_secret():
    from seawatch.service.audit import clean_details

    got = clean_details({"note": "n" * 5000, "password": "pw", "token": "t", "api_key": "k", "X-API-Key": "k",
                         "nested": {"Authorization": "Bearer x", "new_password": "p", "ok": [1, 2.5, float("nan")]},
                         "key": "k", "user_known": True})
    assert got == {"note": "n" * 2000, "nested": {"ok": [1, 2.5, "nan"]}, "user_known": True}


def test_retention_deletes_audit_rows_past_audit_days(tmp_path):
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    now = 1_800_000_000 * 10**9
    try:
        for days in (500, 401, 399, 10):
            store.add_audit(AuditEntry(time_ns=now - days * DAY_NS, action="auth.login", outcome="ok", status=200,
                                       actor=f"d{days}"))
        assert RetentionConfig().audit_days == 400
        ret = Retention(store, tmp_path / "media", RetentionConfig(batch_size=1, batch_pause_s=0), clock=lambda: now)
        dry = ret.sweep(dry_run=True)
        assert dry.audit_rows == 2 and len(_all(store)) == 4 and dry.policy["audit_days"] == 400
        rep = ret.sweep()
        assert rep.audit_rows == 2 and not rep.errors
        assert sorted(e.actor for e in _all(store)) == ["d10", "d399"]
        forever = Retention(store, tmp_path / "media", RetentionConfig(audit_days=None), clock=lambda: now + 10**6 * DAY_NS)
        assert forever.sweep().audit_rows == 0 and len(_all(store)) == 2
        with pytest.raises(ValueError):
            RetentionConfig(audit_days=7)  # the record: at least 30 days
    finally:
        store.close()


def test_a_store_at_0010_gains_the_table_and_keeps_its_data(db_url):
    from seawatch.service.migrations import upgrade

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        upgrade(conn, "0010")
        assert "audit_log" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    store = EventStore.open(db_url, migrate=False)
    try:
        assert store.put(make_event(1))
        store.review("ev00001", "confirmed", "rita", note="before the upgrade")
        store.hold("ev00001", "manual", "key:rita")
        store.add_calibration(CAM, CAL, "key:installer")
    finally:
        store.close()
    store = EventStore.open(db_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0011"
        ev = store.get("ev00001")
        assert ev.review_status == "confirmed" and [a.note for a in store.audit("ev00001")] == ["before the upgrade"]
        assert store.with_holds(["ev00001"]) == {"ev00001"} and store.calibration_in_force(CAM) is not None
        assert _all(store) == []
        store.add_audit(AuditEntry(time_ns=1, action="auth.login", outcome="ok", status=200, actor="ada"))
        assert [e.actor for e in _all(store)] == ["ada"]
    finally:
        store.close()


def test_a_throttled_login_is_recorded_once_per_window_not_per_request(tmp_path):
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        with TestClient(create_app(_settings(tmp_path), store=store)) as c:
            codes = [c.post("/api/auth/login", json={"username": "ada", "password": f"guess {i}"}).status_code
                     for i in range(12)]
            assert codes == [401] * 5 + [429] * 7  # auth.login_max_failures: 5 a minute from one address
        got = [(e.action, e.status, e.actor, e.details.get("reason")) for e in reversed(_all(store))]
        assert got == [("auth.login_failed", 401, "ada", "wrong user name or password")] * 5 + [
            ("auth.login_failed", 429, "ada", "too many failed logins from this address")]
        assert "guess" not in _raw_rows(store)
    finally:
        store.close()
