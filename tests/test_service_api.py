"""The HTTP API: auth on every endpoint, roles, login throttling, search filters over HTTP, review audit trail,
snapshots and clips with HTTP Range, path traversal and hostile inputs (4xx, never 5xx), CORS closed by default."""

from __future__ import annotations

import contextlib
import os
import time
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import Authenticator, hash_api_key, hash_password  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.store import EventStore  # noqa: E402
from seawatch.vision.events import ClipRef, GeoPosition, Snapshot  # noqa: E402
from test_service_store import S, T0, make_event, new_pg_database, postgres_server  # noqa: E402,F401

PASSWORDS = {"olga": "operator-pw", "rita": "reviewer-pw", "adam": "admin-pw"}
ROLES = {"olga": "operator", "rita": "reviewer", "adam": "admin"}
KEY = "machine-key-0123456789abcdef"


@pytest.fixture(scope="module")
def hashes():
    return {u: hash_password(p) for u, p in PASSWORDS.items()}


def settings_for(tmp_path, hashes, **over):
    data = {
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {
            "token_secret": "t" * 40,
            "users": [{"name": u, "role": ROLES[u], "password_hash": h} for u, h in hashes.items()],
            "api_keys": [{"name": "exporter", "role": "operator", "key_sha256": hash_api_key(KEY)}],
            "login_max_failures": 3,
            "login_window_s": 60,
        },
        "service": {"max_page_size": 100},
    }
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v}
    return load_config(data=data)


@pytest.fixture
def app_env(tmp_path, hashes):
    cfg = settings_for(tmp_path, hashes)
    app = create_app(cfg, source_status=lambda: [{"source_id": "cam-1", "state": "online", "url": "rtsp://***@cam/1", "frames_decoded": 12}])
    with TestClient(app) as client:
        yield client, app, cfg


def token(client, user):
    r = client.post("/api/auth/login", json={"username": user, "password": PASSWORDS[user]})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def error_code(r) -> str:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    return body["error"]["code"]


def seed(app, media_dir):
    store: EventStore = app.state.store
    snap_rel = "snapshots/cam-1/ev00000_0.jpg"
    (media_dir / "snapshots" / "cam-1").mkdir(parents=True, exist_ok=True)
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"
    (media_dir / snap_rel).write_bytes(jpeg)
    store.put(make_event(0, snapshot=Snapshot("cam-1", T0, (1, 2, 3, 4), 0.5, uri=snap_rel),
                         clip=ClipRef("cam-1", T0 - 5 * S, T0 + 9 * S, 5 * S, 5 * S), end_ns=T0 + 4 * S, phase="end"))
    store.put(make_event(1, type="smoke", severity="low"))
    store.put(make_event(2, type="vessel_in_zone", severity="medium", source_id="drone-1", zone_id="wf",
                         geo=GeoPosition(54.02, 6.55, 30, 12), attributes={"mmsi": "244123456", "vessel_name": "Noordzee Express"}))
    # a hostile row: its snapshot uri points out of the media folder
    store.put(make_event(3, snapshot=Snapshot("cam-1", T0, (1, 2, 3, 4), 0.5, uri="../../../../etc/passwd")))
    return jpeg


# ---- auth ---------------------------------------------------------------------------------------------------
def test_health_needs_no_auth(app_env):
    client, _, _ = app_env
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json() == {"status": "ok", "version": r.json()["version"], "database": "ok"}


def test_every_other_route_needs_auth(app_env):
    client, app, _ = app_env
    checked = 0
    for path, ops in app.openapi()["paths"].items():  # every documented route (FastAPI nests included routers)
        if path in ("/api/health", "/api/auth/login"):
            continue
        url = path.replace("{event_id}", "ev00000").replace("{rel_path}", "x.jpg")
        for method in ops:
            r = client.request(method, url)
            assert r.status_code == 401, (method, url, r.status_code)
            assert error_code(r) == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
            r = client.request(method, url, headers={"Authorization": "Bearer not.a-token"})
            assert r.status_code == 401, (method, url)
            checked += 1
    assert checked >= 12
    # the schema is behind auth too, and documents the routes
    assert client.get("/api/openapi.json").status_code == 401
    assert client.get("/docs").status_code == 404
    schema = client.get("/api/openapi.json", headers=token(client, "olga")).json()
    assert {"/api/events", "/api/events/{event_id}/confirm", "/api/events/{event_id}/clip", "/api/sources"} <= set(schema["paths"])


def test_tokens_api_keys_and_their_failures(app_env, tmp_path, hashes):
    client, app, cfg = app_env
    h = token(client, "rita")
    assert client.get("/api/auth/me", headers=h).json() == {"name": "rita", "role": "reviewer", "kind": "user"}
    assert client.get("/api/auth/me", headers={"X-API-Key": KEY}).json() == {"name": "exporter", "role": "operator", "kind": "key"}
    assert client.get("/api/auth/me", headers={"X-API-Key": KEY + "x"}).status_code == 401
    assert client.get("/api/auth/me", headers={"X-API-Key": ""}).status_code == 401
    tok = h["Authorization"].split()[1]
    payload, sig = tok.split(".")
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + sig
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401
    # a token signed by another secret (another deployment / random per-start secret) is refused
    other = Authenticator(settings_for(tmp_path, hashes, auth={"token_secret": "u" * 40}).auth)
    forged, _ = other.issue_token(app.state.auth.verify_token(tok))
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    # expired
    old, _ = app.state.auth.issue_token(app.state.auth.verify_token(tok), now_s=time.time() - cfg.auth.token_ttl_s - 5)
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    # wrong password / unknown user: same answer
    for body in ({"username": "rita", "password": "nope"}, {"username": "nobody", "password": "nope"}):
        r = client.post("/api/auth/login", json=body)
        assert r.status_code == 401 and r.json()["error"]["message"] == "wrong user name or password"


def test_token_of_a_removed_user_or_changed_role_is_refused(tmp_path, hashes):
    cfg = settings_for(tmp_path, hashes)
    tok, _ = Authenticator(cfg.auth).issue_token(Authenticator(cfg.auth).check_password("adam", PASSWORDS["adam"]))
    demoted = settings_for(tmp_path, hashes, auth={"users": [{"name": "adam", "role": "operator", "password_hash": hashes["adam"]}]})
    assert Authenticator(demoted.auth).verify_token(tok) is None
    assert Authenticator(cfg.auth).verify_token(tok).role == "admin"


def test_login_is_rate_limited(app_env):
    client, _, cfg = app_env
    for _ in range(cfg.auth.login_max_failures):
        assert client.post("/api/auth/login", json={"username": "olga", "password": "wrong"}).status_code == 401
    r = client.post("/api/auth/login", json={"username": "olga", "password": PASSWORDS["olga"]})
    assert r.status_code == 429 and error_code(r) == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 61


def test_roles(app_env):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    op, rev, adm = token(client, "olga"), token(client, "rita"), token(client, "adam")
    assert client.post("/api/events/ev00001/acknowledge", headers=op, json={"note": "looking"}).status_code == 200
    r = client.post("/api/events/ev00001/confirm", headers=op, json={"note": "sure"})
    assert r.status_code == 403 and error_code(r) == "forbidden"
    assert client.post("/api/events/ev00001/confirm", headers={"X-API-Key": KEY}).status_code == 403
    assert client.post("/api/events/ev00001/confirm", headers=rev, json={"note": "real smoke"}).status_code == 200
    assert client.post("/api/events/ev00002/dismiss", headers=adm).status_code == 200
    assert client.post("/api/events/ev00002/dismiss", headers={"X-API-Key": KEY}, json={"note": "by script"}).status_code == 200
    assert client.get("/api/admin/principals", headers=rev).status_code == 403
    p = client.get("/api/admin/principals", headers=adm).json()
    assert {u["name"] for u in p["users"]} == set(PASSWORDS) and "hash" not in str(p)

    audit = client.get("/api/events/ev00001/audit", headers=op).json()
    assert [(a["status"], a["by"], a["by_kind"], a["note"]) for a in audit] == [
        ("acknowledged", "olga", "user", "looking"), ("confirmed", "rita", "user", "real smoke")]
    assert all(abs(a["at_ns"] - time.time_ns()) < 60 * S for a in audit)
    ev = client.get("/api/events/ev00002", headers=op).json()
    assert ev["review_status"] == "dismissed" and [h["by"] for h in ev["review_history"]] == ["adam", "exporter"]
    # review notes are searchable
    assert [e["id"] for e in client.get("/api/events", params={"q": "real smoke"}, headers=op).json()["events"]] == ["ev00001"]
    assert client.post("/api/events/nope/acknowledge", headers=op).status_code == 404
    assert client.post("/api/events/ev00001/acknowledge", headers=op, json={"note": "x" * 2001}).status_code == 422
    assert client.post("/api/events/ev00001/acknowledge", headers=op, json={"status": "confirmed"}).status_code == 422
    # why a dismissal: the detector was wrong (training exports teach only those boxes as background)
    r = client.post("/api/events/ev00003/dismiss", headers=op, json={"note": "a buoy", "reason": "false_detection"})
    assert r.status_code == 200 and r.json()["review_history"][-1]["reason"] == "false_detection"
    assert client.get("/api/events/ev00003/audit", headers=op).json()[-1]["reason"] == "false_detection"
    assert client.get("/api/events/ev00002/audit", headers=op).json()[-1]["reason"] == ""  # a plain dismissal
    for act in ("acknowledge", "confirm"):
        r = client.post(f"/api/events/ev00003/{act}", headers=rev, json={"reason": "false_detection"})
        assert r.status_code == 422 and "dismissal" in r.text
    assert client.post("/api/events/ev00003/dismiss", headers=op, json={"reason": "buoy"}).status_code == 422
    assert client.get("/api/events/ev00003", headers=op).json()["review_status"] == "dismissed"


# ---- search over HTTP -----------------------------------------------------------------------------------------
FILTER_CASES = [
        ({}, ["ev00003", "ev00002", "ev00001", "ev00000"]),
        ({"type": ["smoke", "vessel_in_zone"]}, ["ev00002", "ev00001"]),
        ({"severity": "low"}, ["ev00001"]),
        ({"min_severity": "medium"}, ["ev00003", "ev00002", "ev00000"]),
        ({"status": "new", "source": "cam-1"}, ["ev00003", "ev00001", "ev00000"]),
        ({"zone": "wf"}, ["ev00002"]),
        ({"start_from": "2026-09-21T14:13:21Z", "start_to": "2026-09-21T14:13:23Z"}, ["ev00002", "ev00001"]),
        ({"start_from": "2026-09-21T16:13:21+02:00"}, ["ev00003", "ev00002", "ev00001"]),
        ({"open": "false"}, ["ev00000"]),
        ({"has_geo": "true"}, ["ev00002"]),
        ({"min_lat": 54, "min_lon": 6.5, "max_lat": 54.1, "max_lon": 6.6}, ["ev00002"]),
        ({"min_lat": 50, "min_lon": 7, "max_lat": 54.1, "max_lon": 8}, []),
        ({"mmsi": "244123456"}, ["ev00002"]),
        ({"vessel_name": "express"}, ["ev00002"]),
        ({"q": "smoke CAM-1"}, ["ev00001"]),
        ({"sort": "start_ns", "limit": 2}, ["ev00000", "ev00001"]),
]


@pytest.mark.parametrize("params, expected", FILTER_CASES)
def test_search_filters_over_http(app_env, params, expected):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    assert T0 + 1 * S == 1_790_000_001_000_000_000  # 2026-09-21T14:13:21Z
    r = client.get("/api/events", params=params, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()["events"]] == expected


def test_event_page_shape_and_cursor(app_env):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    h = {"X-API-Key": KEY}
    first = client.get("/api/events", params={"limit": 3}, headers=h).json()
    assert len(first["events"]) == 3 and first["next_cursor"]
    second = client.get("/api/events", params={"limit": 3, "cursor": first["next_cursor"]}, headers=h).json()
    assert [e["id"] for e in second["events"]] == ["ev00000"] and second["next_cursor"] is None
    ev = client.get("/api/events/ev00000", headers=h).json()
    assert ev["snapshot_url"] == "/api/events/ev00000/snapshot" and ev["clip_url"] == "/api/events/ev00000/clip"
    assert ev["clip"] == {"source_id": "cam-1", "start_ns": T0 - 5 * S, "end_ns": T0 + 9 * S, "pre_roll_ns": 5 * S, "post_roll_ns": 5 * S}
    assert client.get("/api/events/ev00001", headers=h).json()["clip_url"] is None  # window still open
    assert client.get("/api/events/nope", headers=h).status_code == 404
    assert error_code(client.get("/api/events/" + "x" * 300, headers=h)) == "not_found"


@pytest.mark.parametrize(
    "params, status",
    [
        ({"limit": 101}, 400),  # over service.max_page_size
        ({"limit": 10**12}, 422),
        ({"limit": 0}, 422),
        ({"limit": "many"}, 422),
        ({"severity": "apocalyptic"}, 422),
        ({"status": "deleted"}, 422),
        ({"sort": "id; DROP TABLE events"}, 422),
        ({"cursor": "' OR '1'='1"}, 400),
        ({"cursor": "W10"}, 400),
        ({"min_lat": 91, "min_lon": 0, "max_lat": 92, "max_lon": 1}, 422),
        ({"min_lat": 1}, 422),
        ({"min_lat": 5, "min_lon": 0, "max_lat": 1, "max_lon": 1}, 422),
        ({"min_lat": "nan", "min_lon": 0, "max_lat": 1, "max_lon": 1}, 422),
        ({"start_from": "yesterday"}, 422),
        ({"start_from": "2026-01-02T00:00:00Z", "start_to": "2026-01-01T00:00:00Z"}, 422),
        ({"mmsi": "1 OR 1=1"}, 422),
        ({"q": "x" * 201}, 422),
        ({"type": ""}, 422),
        ({"unknown_filter": 1}, 422),
        ({"q": "\x00"}, 400),
        ({"type": "fire\x00"}, 400),
    ],
)
def test_hostile_search_inputs_are_4xx(app_env, params, status):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    r = client.get("/api/events", params=params, headers={"X-API-Key": KEY})
    assert r.status_code == status, r.text
    error_code(r)
    assert app.state.store.count() == 4


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["type", "severity", "min_severity", "status", "source", "zone", "start_from", "start_to",
                                        "open", "min_lat", "min_lon", "max_lat", "max_lon", "has_geo", "mmsi", "vessel_name",
                                        "hull_text", "q", "sort", "limit", "cursor", "zzz"]),
                       st.one_of(_text, st.integers(-10**20, 10**20), st.floats(allow_nan=True).map(str)), max_size=6))
def test_fuzzed_search_never_5xx(app_env, params):
    client, _, _ = app_env
    r = client.get("/api/events", params=params, headers={"X-API-Key": KEY})
    assert r.status_code in (200, 400, 422), (params, r.status_code, r.text)
    if r.status_code != 200:
        error_code(r)


# ---- media ------------------------------------------------------------------------------------------------------
def test_snapshot_with_range(app_env):
    client, app, _ = app_env
    jpeg = seed(app, app.state.media_dir)
    h = {"X-API-Key": KEY}
    r = client.get("/api/events/ev00000/snapshot", headers=h)
    assert r.status_code == 200 and r.content == jpeg and r.headers["content-type"] == "image/jpeg"
    assert r.headers["accept-ranges"] == "bytes"
    r = client.get("/api/events/ev00000/snapshot", headers={**h, "Range": "bytes=4-99"})
    assert r.status_code == 206 and r.content == jpeg[4:100]
    assert r.headers["content-range"] == f"bytes 4-99/{len(jpeg)}"
    r = client.get("/api/events/ev00000/snapshot", headers={**h, "Range": f"bytes={len(jpeg) + 10}-"})
    assert r.status_code == 416
    assert client.get("/api/events/ev00001/snapshot", headers=h).status_code == 404


def test_stored_uri_cannot_escape_the_media_dir(app_env):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    r = client.get("/api/events/ev00003/snapshot", headers={"X-API-Key": KEY})
    assert r.status_code == 404 and b"root:" not in r.content


def test_clip_served_with_range_or_404(app_env):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    h = {"X-API-Key": KEY}
    r = client.get("/api/events/ev00000/clip", headers=h)  # no recordings: cannot be cut
    assert r.status_code == 404 and error_code(r) == "not_found"
    path = app.state.clips.path_for("cam-1", T0 - 5 * S, T0 + 9 * S)  # a clip cut earlier is served as it is
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(5000)
    path.write_bytes(data)
    r = client.get("/api/events/ev00000/clip", headers={**h, "Range": "bytes=100-"})
    assert r.status_code == 206 and r.content == data[100:] and r.headers["content-type"] == "video/mp4"
    assert client.get("/api/events/ev00001/clip", headers=h).status_code == 404  # open window


@pytest.mark.parametrize(
    "rel",
    ["../secret.txt", "..%2Fsecret.txt", "%2e%2e/secret.txt", "%2e%2e%2fsecret.txt", "snapshots/../../secret.txt",
     "/etc/passwd", "%2Fetc%2Fpasswd", "..\\secret.txt", "snapshots/%00.jpg", "outside-link/secret.txt", "snapshots", ""],
)
def test_media_path_traversal(app_env, rel):
    client, app, _ = app_env
    media = app.state.media_dir
    (media.parent / "secret.txt").write_text("TOP SECRET")
    (media / "snapshots").mkdir(parents=True, exist_ok=True)
    link = media / "outside-link"
    if not link.exists():
        link.symlink_to(media.parent, target_is_directory=True)
    r = client.get("/api/media/" + rel, headers={"X-API-Key": KEY})
    assert r.status_code in (404, 400), (rel, r.status_code)
    assert b"TOP SECRET" not in r.content


def test_media_file_inside_is_served(app_env):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    r = client.get("/api/media/snapshots/cam-1/ev00000_0.jpg", headers={"X-API-Key": KEY, "Range": "bytes=0-3"})
    assert r.status_code == 206 and r.content == b"\xff\xd8\xff\xe0"


# ---- sources, CORS -----------------------------------------------------------------------------------------------
def test_sources_live_status_without_urls(tmp_path, hashes):
    cfg = settings_for(tmp_path, hashes)
    cfg = cfg.model_copy(update={"sources": load_config(data={"sources": [{"id": "cam-1", "url": "rtsp://u:p@h/1"},
                                                                          {"id": "cam-9", "url": "/x.mp4"}]}).sources})
    app = create_app(cfg, source_status=lambda: [{"source_id": "cam-1", "state": "online", "url": "rtsp://***@h/1", "frames_decoded": 12}])
    with TestClient(app) as client:
        got = client.get("/api/sources", headers={"X-API-Key": KEY}).json()
    assert [(s["source_id"], s["state"]) for s in got] == [("cam-1", "online"), ("cam-9", "not_running")]
    assert got[0]["frames_decoded"] == 12 and "url" not in got[0] and "p@" not in str(got)


def test_sources_say_how_long_a_camera_has_been_down(tmp_path, hashes):
    """A camera down for 35 minutes: GET /api/sources, the live feed's sources message and the schema carry
    down_since_ns and attempts (stable while it retries: state offline, since_ns = down_since_ns)."""
    from seawatch.streams.source import SourceStatus, State

    t_down = time.time_ns() - 35 * 60 * 1_000_000_000
    down = SourceStatus("cam-1", "rtsp://***@h/1", State.OFFLINE, t_down, last_error="cannot open: refused",
                        down_since_ns=t_down, attempts=412)
    up = SourceStatus("cam-9", "/x.mp4", State.ONLINE, t_down)
    cfg = settings_for(tmp_path, hashes)
    cfg = cfg.model_copy(update={"sources": load_config(data={"sources": [{"id": "cam-1", "url": "rtsp://u:p@h/1"},
                                                                          {"id": "cam-9", "url": "/x.mp4"}]}).sources})
    app = create_app(cfg, source_status=lambda: [down.as_dict(), up.as_dict()])
    with TestClient(app) as client:
        got = client.get("/api/sources", headers={"X-API-Key": KEY}).json()
        with client.websocket_connect("/api/live", headers={"X-API-Key": KEY}) as ws:
            ws.receive_json()  # hello
            live = ws.receive_json()
        fields = app.openapi()["components"]["schemas"]["SourceOut"]["properties"]
    for listing in (got, live["sources"]):
        cam1, cam9 = listing
        assert (cam1["state"], cam1["since_ns"], cam1["down_since_ns"], cam1["attempts"]) == ("offline", t_down, t_down, 412)
        assert cam1["last_error"] == "cannot open: refused"
        assert (cam9["state"], cam9["down_since_ns"], cam9["attempts"]) == ("online", None, 0)
    assert {"since_ns", "down_since_ns", "attempts", "last_error"} <= set(fields)


def test_cors_closed_by_default_and_open_when_configured(app_env, tmp_path, hashes):
    client, _, _ = app_env
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    r = client.options("/api/events", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    cfg = settings_for(tmp_path, hashes, service={"cors_origins": ["https://ops.example"]})
    with TestClient(create_app(cfg)) as c2:
        r = c2.options("/api/events", headers={**pre, "Origin": "https://ops.example"})
        assert r.headers["access-control-allow-origin"] == "https://ops.example"
        r = c2.get("/api/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_unexpected_errors_use_the_error_schema_without_internals(app_env):
    client, app, _ = app_env

    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    with TestClient(app, raise_server_exceptions=False) as c:
        c.app.state.store.search = boom
        r = c.get("/api/events", headers={"X-API-Key": KEY})
    assert r.status_code == 500 and error_code(r) == "internal" and "secret internal" not in r.text


def test_state_survives_an_app_restart(tmp_path, hashes):
    cfg = settings_for(tmp_path, hashes)
    with TestClient(create_app(cfg)) as c:
        c.app.state.store.put(make_event(7))
        h = token(c, "olga")
        c.post("/api/events/ev00007/acknowledge", headers=h, json={"note": "on it"})
    with TestClient(create_app(cfg)) as c:
        ev = c.get("/api/events/ev00007", headers=h).json()  # token survives: configured secret
    assert ev["review_status"] == "acknowledged" and ev["review_history"][0]["note"] == "on it"


# ---- export ------------------------------------------------------------------------------------------------------
def test_geojson_export_of_a_search(app_env):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    h = {"X-API-Key": KEY}
    r = client.get("/api/export/events.geojson", params={"has_geo": "true"}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and fc["truncated"] is False
    [f] = fc["features"]
    assert f["id"] == "ev00002" and f["geometry"] == {"type": "Point", "coordinates": [6.55, 54.02]}
    assert f["properties"]["semi_major_m"] == 30 and f["properties"]["start"] == "2026-09-21T14:13:22Z"
    everything = client.get("/api/export/events.geojson", params={"limit": 1}, headers=h).json()  # limit does not cut an export
    assert len(everything["features"]) == 4
    assert sum(f["geometry"] is None for f in everything["features"]) == 3
    assert all(f["properties"]["geo_reason"] for f in everything["features"] if f["geometry"] is None)


def test_export_is_capped(app_env, monkeypatch):
    import seawatch.service.app as app_module

    client, app, _ = app_env
    seed(app, app.state.media_dir)
    monkeypatch.setattr(app_module, "MAX_EXPORT", 3)
    fc = client.get("/api/export/events.geojson", headers={"X-API-Key": KEY}).json()
    assert len(fc["features"]) == 3 and fc["truncated"] is True


def test_kml_export_is_well_formed_with_hostile_text(app_env):
    import xml.etree.ElementTree as ET

    client, app, _ = app_env
    seed(app, app.state.media_dir)
    app.state.store.put(make_event(9, type='<script>&"x"', source_id="cam-1", geo=GeoPosition(-33.5, 151.25, 8, 4)))
    r = client.get("/api/export/events.kml", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and "kml" in r.headers["content-type"]
    root = ET.fromstring(r.content)
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    marks = root.findall(".//k:Placemark", ns)
    assert [m.get("id") for m in marks] == ["ev00009", "ev00002"]
    assert marks[0].find("k:name", ns).text == '<script>&"x"'
    assert marks[0].find(".//k:coordinates", ns).text == "151.2500000,-33.5000000,0"


# ---- live feed ---------------------------------------------------------------------------------------------------
def test_live_feed_sends_status_events_and_reviews(app_env):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    with client.websocket_connect("/api/live", headers={"X-API-Key": KEY}) as ws:
        assert ws.receive_json() == {"kind": "hello", "who": {"name": "exporter", "role": "operator", "kind": "key"}}
        msg = ws.receive_json()
        assert msg["kind"] == "sources" and msg["sources"] == []
        r = client.post("/api/events/ev00001/acknowledge", headers={"X-API-Key": KEY}, json={"note": "on my way"})
        assert r.status_code == 200
        msg = ws.receive_json()
        assert msg["kind"] == "review" and msg["event"]["id"] == "ev00001"
        assert msg["event"]["review_status"] == "acknowledged" and msg["event"]["review_history"][-1]["note"] == "on my way"
        app.state.live.publish_event(make_event(42, geo=GeoPosition(54.0, 6.5, 10, 5)))  # as StoreSink does, from another thread
        msg = ws.receive_json()
        assert msg["kind"] == "event" and msg["event"]["id"] == "ev00042" and msg["event"]["geo"]["lat_deg"] == 54.0
    deadline = time.monotonic() + 5
    while app.state.live.subscribers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.state.live.subscribers == 0  # a closed client is unsubscribed


def test_live_feed_auth_by_first_message_or_refused(app_env):
    from starlette.websockets import WebSocketDisconnect

    client, app, _ = app_env
    tok = token(client, "rita")["Authorization"].split()[1]
    with client.websocket_connect("/api/live") as ws:
        ws.send_json({"token": tok})
        assert ws.receive_json()["who"] == {"name": "rita", "role": "reviewer", "kind": "user"}
    for first in ({"token": tok + "x"}, {"api_key": "nope"}, {"hello": 1}, ["x"]):
        with client.websocket_connect("/api/live") as ws:
            ws.send_json(first)
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_json()
            assert info.value.code == 4401
    with client.websocket_connect("/api/live", headers={"Authorization": "Bearer forged.token"}) as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 4401
    with client.websocket_connect("/api/live") as ws:
        ws.send_text("not json")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 4401


def test_live_feed_closes_when_its_token_expires(app_env, monkeypatch):
    """A feed opened with a token lasts as long as the token: after it expires the next status check closes it with
    4401 (the UI then asks for a login), while a feed with a fresh token stays open."""
    from starlette.websockets import WebSocketDisconnect

    import seawatch.service.app as app_mod

    monkeypatch.setattr(app_mod, "WS_STATUS_INTERVAL_S", 0.2)
    client, app, _ = app_env
    auth = app.state.auth
    who = auth.verify_token(token(client, "rita")["Authorization"].split()[1])
    short, _ = auth.issue_token(who, now_s=time.time() - app.state.settings.auth.token_ttl_s + 1.5)
    fresh, _ = auth.issue_token(who)
    for tok, expires in ((short, True), (fresh, False)):
        with client.websocket_connect("/api/live") as ws:
            ws.send_json({"token": tok})
            assert ws.receive_json()["kind"] == "hello"
            kinds, t0 = [], time.monotonic()
            with pytest.raises(WebSocketDisconnect) if expires else contextlib.nullcontext() as info:
                while time.monotonic() - t0 < 4.0:
                    kinds.append(ws.receive_json()["kind"])
            if expires:
                assert info.value.code == 4401 and kinds and set(kinds) == {"sources"}
            else:
                assert kinds.count("sources") >= 10


def test_api_on_postgresql(postgres_server, tmp_path, hashes):
    """The same filters, review and audit trail over HTTP with PostgreSQL as the store."""
    url = new_pg_database(postgres_server)
    cfg = settings_for(tmp_path, hashes, storage={"database_url": url})
    with TestClient(create_app(cfg)) as client:
        app = client.app
        assert app.state.store.engine.dialect.name == "postgresql"
        seed(app, app.state.media_dir)
        h = {"X-API-Key": KEY}
        for params, expected in FILTER_CASES:
            r = client.get("/api/events", params=params, headers=h)
            assert r.status_code == 200, (params, r.text)
            assert [e["id"] for e in r.json()["events"]] == expected, params
        for params, status in [({"cursor": "' OR '1'='1"}, 400), ({"q": "'; DROP TABLE events; --"}, 200), ({"limit": 101}, 400),
                               ({"q": "a\x00b"}, 400), ({"source": "cam\x00"}, 400), ({"vessel_name": "\x00"}, 400)]:
            assert client.get("/api/events", params=params, headers=h).status_code == status
        rev = token(client, "rita")
        assert client.post("/api/events/ev00002/confirm", headers=rev, json={"note": "bad\x00note"}).status_code == 400
        assert client.post("/api/events/ev00002/confirm", headers=rev, json={"note": "boarded"}).status_code == 200
        audit = client.get("/api/events/ev00002/audit", headers=h).json()
        assert [(a["status"], a["by"], a["note"]) for a in audit] == [("confirmed", "rita", "boarded")]
        fc = client.get("/api/export/events.geojson", params={"status": "confirmed"}, headers=h).json()
        assert [f["id"] for f in fc["features"]] == ["ev00002"]
        assert app.state.store.count() == 4


# ---- evidence ----------------------------------------------------------------------------------------------------
def test_evidence_package(app_env, tmp_path):
    import hashlib
    import io
    import json
    import zipfile

    client, app, _ = app_env
    jpeg = seed(app, app.state.media_dir)
    clip_path = app.state.clips.path_for("cam-1", T0 - 5 * S, T0 + 9 * S)
    clip_path.parent.mkdir(parents=True, exist_ok=True)
    clip_bytes = os.urandom(3000)
    clip_path.write_bytes(clip_bytes)
    rev = token(client, "rita")
    client.post("/api/events/ev00000/confirm", headers=rev, json={"note": "fire brigade called"})
    assert client.get("/api/events/ev00000/evidence.zip", headers={"X-API-Key": KEY}).status_code == 403  # operator key
    r = client.get("/api/events/ev00000/evidence.zip", headers=rev)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "seawatch-evidence-ev00000.zip" in r.headers["content-disposition"]
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(z.namelist()) == ["SHA256SUMS", "audit.json", "clip.mp4", "event.json", "manifest.json", "snapshot.jpg"]
    assert z.read("snapshot.jpg") == jpeg and z.read("clip.mp4") == clip_bytes
    sums = dict(reversed(line.split("  ")) for line in z.read("SHA256SUMS").decode().splitlines())
    assert set(sums) == set(z.namelist()) - {"SHA256SUMS"}
    for name, sha in sums.items():
        assert hashlib.sha256(z.read(name)).hexdigest() == sha, name
    manifest = json.loads(z.read("manifest.json"))
    assert manifest["event_id"] == "ev00000" and manifest["exported_by"] == "user:rita"
    assert {f["name"]: f["bytes"] for f in manifest["files"]}["clip.mp4"] == 3000
    assert set(manifest["missing"]) == {"telemetry.json"}
    assert json.loads(z.read("event.json"))["review_status"] == "confirmed"
    assert json.loads(z.read("audit.json"))[0]["note"] == "fire brigade called"
    # an open incident with no snapshot: the package says what is missing and why
    z = zipfile.ZipFile(io.BytesIO(client.get("/api/events/ev00001/evidence.zip", headers=rev).content))
    missing = json.loads(z.read("manifest.json"))["missing"]
    assert sorted(z.namelist()) == ["SHA256SUMS", "audit.json", "event.json", "manifest.json"]
    assert "still open" in missing["clip.mp4"] and "no snapshot" in missing["snapshot.jpg"]
    # a hostile stored uri is reported missing, never packed
    z = zipfile.ZipFile(io.BytesIO(client.get("/api/events/ev00003/evidence.zip", headers=rev).content))
    assert "snapshot.jpg" not in z.namelist() and "gone" in json.loads(z.read("manifest.json"))["missing"]["snapshot.jpg"]
    assert client.get("/api/events/nope/evidence.zip", headers=rev).status_code == 404
    assert not list(__import__("pathlib").Path(__import__("tempfile").gettempdir()).glob("seawatch-evidence-*.zip"))


def test_search_by_drone_finds_its_own_incidents_and_its_cameras_events(tmp_path, hashes):
    from seawatch.drone.config import DroneConfig

    drone = DroneConfig.model_validate({"id": "patrol-1", "connection": "udp:127.0.0.1:14550", "video_source": "drone-1",
                                        "camera": {"width_px": 640, "height_px": 360, "hfov_deg": 70}})
    app = create_app(settings_for(tmp_path, hashes).model_copy(update={"drones": (drone,)}))
    with TestClient(app) as client:
        seed(app, app.state.media_dir)
        app.state.store.put(make_event(7, type="drone_link_lost", severity="critical", source_id="patrol-1",
                                       geo=GeoPosition(54.03, 6.56, 10, 10)))
        app.state.store.put(make_event(8, type="smoke", source_id="patrol-2"))  # another drone's
        h = token(client, "olga")

        def ids(**params):
            r = client.get("/api/events", params=params, headers=h)
            assert r.status_code == 200, r.text
            return sorted(e["id"] for e in r.json()["events"])

        assert ids(drone="patrol-1") == ["ev00002", "ev00007"]  # its camera's vessel event and its link-lost incident
        assert ids(drone="patrol-1", type="drone_link_lost") == ["ev00007"]
        assert ids(drone="patrol-1", source="cam-1") == ["ev00000", "ev00001", "ev00002", "ev00003", "ev00007"]
        assert ids(drone="nobody") == []
        geo = client.get("/api/export/events.geojson", params={"drone": "patrol-1"}, headers=h).json()
        assert sorted(f["properties"]["id"] for f in geo["features"]) == ["ev00002", "ev00007"]
