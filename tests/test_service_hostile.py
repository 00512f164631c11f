"""Hostile and malformed requests found by the API audit (s17/api): concurrent login guesses stay within the
throttle, oversized bodies get 413 before anything holds them (declared or streamed, public or protected route),
hand-made cursors with non-finite numbers, overlong media paths and deeply nested first live-feed messages are
refused like other bad input (4xx / 4401, never 5xx or a logged traceback), and an event makes one ignore area."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import MAX_BODY_BYTES, create_app  # noqa: E402
from seawatch.service.auth import LoginThrottle  # noqa: E402
from seawatch.vision.events import Snapshot  # noqa: E402
from test_ignore_spot import BUOY, _config  # noqa: E402
from test_service_api import KEY, PASSWORDS, ROLES, app_env, error_code, hashes, seed, settings_for, token  # noqa: E402,F401
from test_service_store import T0, make_event  # noqa: E402


# ---- login throttle ---------------------------------------------------------------------------------------------
def test_concurrent_wrong_logins_check_at_most_the_limit(app_env):
    """Guesses sent at once: only ``login_max_failures`` passwords are checked, the rest get 429 at once."""
    client, app, cfg = app_env
    limit, n = cfg.auth.login_max_failures, 4 * cfg.auth.login_max_failures
    auth = app.state.auth
    real_check = auth.check_password
    checked: list[str] = []

    def slow_check(name, password):  # argon2 on a loaded server: every guess is in flight before the first fails
        checked.append(name)
        time.sleep(0.3)
        return real_check(name, password)

    auth.check_password = slow_check
    barrier = threading.Barrier(n)

    def guess(k):
        barrier.wait()
        return client.post("/api/auth/login", json={"username": "adam", "password": f"guess-{k}"})

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(guess, range(n)))
    codes = sorted(r.status_code for r in answers)
    assert len(checked) == limit, (len(checked), codes)
    assert codes == [401] * limit + [429] * (n - limit)
    assert all(error_code(r) == "rate_limited" and int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 429)
    # the window is spent: even the right password waits, unchecked
    assert client.post("/api/auth/login", json={"username": "adam", "password": PASSWORDS["adam"]}).status_code == 429
    assert len(checked) == limit


def test_login_throttle_reserves_attempts():
    t = LoginThrottle(max_failures=2, window_s=60.0)
    assert t.begin("a", now_s=0.0) == 0.0 and t.begin("a", now_s=1.0) == 0.0  # two attempts in flight
    assert t.begin("a", now_s=2.0) == pytest.approx(58.0)  # a third waits for the oldest to leave the window
    assert t.begin("b", now_s=2.0) == 0.0  # per client
    assert t.begin("a", now_s=60.0) == 0.0  # the first left the window
    assert t.begin("a", now_s=60.5) == pytest.approx(0.5)
    t.succeeded("a")  # a success clears the client's count
    assert t.begin("a", now_s=61.0) == 0.0



def test_login_guesses_spread_over_many_addresses_are_throttled_per_user_name(tmp_path, hashes):
    """Every address stays under its own limit (3 a minute), yet the account gets no more than
    ``login_user_max_failures`` guesses a window from all of them together; another account is not affected, and
    the right password from a fresh address waits the same window (a delay, not a lockout)."""
    cfg = settings_for(tmp_path, hashes, auth={"login_user_max_failures": 5})
    app = create_app(cfg)
    statuses = []
    for i in range(12):  # twelve addresses, two guesses each: 24 guesses, all under the per-address limit
        with TestClient(app, client=(f"203.0.113.{i + 1}", 40000)) as c:
            for _ in range(2):
                statuses.append(c.post("/api/auth/login", json={"username": "olga", "password": "wrong"}).status_code)
    assert statuses.count(401) == 5 and statuses.count(429) == 19, statuses
    with TestClient(app, client=("198.51.100.7", 40000)) as c:
        r = c.post("/api/auth/login", json={"username": "olga", "password": PASSWORDS["olga"]})
        assert r.status_code == 429 and error_code(r) == "rate_limited" and "for this user" in r.json()["error"]["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 61
        assert c.post("/api/auth/login", json={"username": "rita", "password": PASSWORDS["rita"]}).status_code == 200


def test_login_throttle_keeps_the_key_under_attack_through_a_flood_of_others():
    t = LoginThrottle(max_failures=3, window_s=60.0, max_keys=100)
    for k in range(3):
        assert t.begin("admin", now_s=float(k)) == 0.0
    for i in range(1000):  # made-up names, one guess each, fill the table again and again
        t.begin(f"name-{i}", now_s=10.0)
    assert t.begin("admin", now_s=11.0) > 0, "a flood of other keys wiped the count of the one under attack"
    assert len(t._fails) <= 100
    assert t.begin("admin", now_s=61.0) == 0.0  # the window still ends


@pytest.mark.parametrize("trusted, per_forwarded_client", [
    (None, True),  # the default: a proxy on this machine (127.0.0.1) is believed
    ([], False),  # no proxies: the header is ignored, every request is 127.0.0.1's
    (["10.9.9.9"], False),  # only that proxy: a header from 127.0.0.1 is not believed
    (["127.0.0.0/8"], True),
])
def test_login_throttle_keys_on_the_forwarded_client_only_behind_a_trusted_proxy(tmp_path, hashes, trusted,
                                                                                   per_forwarded_client):
    import urllib.error
    import urllib.request

    service = {} if trusted is None else {"trusted_proxies": trusted}
    cfg = settings_for(tmp_path, hashes, service=service)
    app = create_app(cfg)

    def login(port: int, forwarded_for: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/login", method="POST",
                                     data=json.dumps({"username": "olga", "password": "wrong"}).encode(),
                                     headers={"Content-Type": "application/json", "X-Forwarded-For": forwarded_for})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    with serve_in_thread(app, **cfg.service.uvicorn_options()) as port:
        # a client behind the proxy guesses until throttled; the proxy appends what it saw after what the client sent
        codes = [login(port, "198.51.100.1, 203.0.113.5") for _ in range(cfg.auth.login_max_failures + 1)]
        assert codes == [401] * cfg.auth.login_max_failures + [429]
        # another client behind the same proxy
        assert login(port, "203.0.113.6") == (401 if per_forwarded_client else 429)


def test_trusted_proxies_must_be_addresses(tmp_path, hashes):
    from seawatch.errors import ConfigError

    with pytest.raises(ConfigError, match="trusted_proxies: 'proxy.local' is not an IP address"):
        settings_for(tmp_path, hashes, service={"trusted_proxies": ["proxy.local"]})

# ---- request body size --------------------------------------------------------------------------------------------
ROUTES = ["/api/auth/login", "/api/events/ev00001/acknowledge"]  # public, and one that needs auth


def _chunks(total: int, size: int = 16 * 1024):
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


@pytest.mark.parametrize("path", ROUTES)
def test_oversized_body_is_413_in_the_error_shape(app_env, path):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    big = b'{"note": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = client.post(path, content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and error_code(r) == "too_large", r.text
    assert f"larger than {MAX_BODY_BYTES} bytes" in r.json()["error"]["message"]
    r = client.post(path, content=_chunks(4 * MAX_BODY_BYTES), headers={"Content-Type": "application/json"})  # chunked
    assert r.status_code == 413 and error_code(r) == "too_large", r.text
    # the same route still takes a normal body: 401/422/200 as before
    if path == "/api/auth/login":
        assert client.post(path, json={"username": "olga", "password": PASSWORDS["olga"]}).status_code == 200
    else:
        assert client.post(path, json={"note": "x" * 400}, headers=token(client, "olga")).status_code == 200
        assert client.post(path, json={"note": "x"}).status_code == 401


@pytest.fixture
def served(tmp_path, hashes):
    """The app behind a real uvicorn on a free port: (app, port)."""
    app = create_app(settings_for(tmp_path, hashes))
    with serve_in_thread(app) as port:
        yield app, port


def _exchange(port: int, head: str, body: bytes) -> tuple[int, dict]:
    """Send a request head and (part of) its body, never the rest; the status and JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode("latin-1") + body)
        data = b""
        while b"\r\n\r\n" not in data:
            got = s.recv(65536)  # a server that waits for the rest of the body times out here
            assert got, data
            data += got
        raw_head, rest = data.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        length = next(int(v) for k, _, v in (h.partition(": ") for h in lines[1:]) if k.lower() == "content-length")
        while len(rest) < length:
            got = s.recv(65536)
            assert got
            rest += got
    return int(lines[0].split()[1]), json.loads(rest[:length])


@pytest.mark.parametrize("path", ROUTES)
def test_oversized_body_is_refused_before_it_is_all_sent(served, path):
    """A real server answers 413 while the client is still sending: for a declared Content-Length of 500 MB
    before any of the body, for a chunked body on the chunk past the limit."""
    _, port = served
    common = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    status, body = _exchange(port, common + "Content-Length: 500000000\r\n\r\n", b"")
    assert status == 413 and body["error"]["code"] == "too_large"
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in _chunks(MAX_BODY_BYTES + 1024))  # no last chunk
    status, body = _exchange(port, common + "Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert status == 413 and body["error"]["code"] == "too_large"


# ---- cursor, media path, live feed ------------------------------------------------------------------------------
def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("key", ["Infinity", "-Infinity", "NaN", "1e999", "-1e999", "1.5", "true"])
def test_cursor_with_a_non_integer_key_is_400(app_env, key):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    r = client.get("/api/events", params={"cursor": _cursor(f'["-start_ns",{key},"ev00001"]')}, headers=token(client, "olga"))
    assert r.status_code == 400 and error_code(r) == "bad_request", r.text
    assert r.json()["error"]["message"] == "cursor is not one this server issued"


@pytest.mark.parametrize("rel", ["a" * 300, "a/" * 3000, "snapshots/" + "b" * 5000 + ".jpg"])
def test_overlong_media_path_is_404(app_env, rel):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    r = client.get(f"/api/media/{rel}", headers=token(client, "olga"))
    assert r.status_code == 404 and error_code(r) == "not_found" and r.json()["error"]["message"] == "no such media file"


@pytest.mark.parametrize("first", [
    "[" * 100_000 + "]" * 100_000,  # the audit's message
    "[" * 2000 + "]" * 2000,  # short, yet nested past the JSON parser's recursion limit
    '{"token": ' * 5000 + '"x"' + "}" * 5000,
    json.dumps({"token": "x" * 10_000}),
])
def test_live_feed_refuses_a_deep_or_huge_first_message_quietly(app_env, caplog, first):
    from starlette.websockets import WebSocketDisconnect

    client, _, _ = app_env
    with caplog.at_level(logging.WARNING):
        with client.websocket_connect("/api/live") as ws:
            ws.send_text(first)
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_json()
            assert info.value.code == 4401
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


# ---- ignore-spot: one area per event, each label once ----------------------------------------------------------
def test_ignore_spot_makes_one_area_per_event_with_each_label_once(tmp_path, hashes):
    applied: list[int] = []
    app = create_app(_config(tmp_path, hashes), apply_ignore=lambda source_id, areas: applied.append(len(areas)))
    with TestClient(app) as client:
        store = app.state.store
        ev = make_event(1, type="vessel_in_zone", source_id="quay", labels=("vessel", "buoy"), scores=(0.8, 0.7),
                        snapshot=Snapshot("quay", T0, BUOY, 0.5))
        store.put(ev)
        rev = token(client, "rita")
        url = f"/api/events/{ev.id}/ignore-spot"
        r = client.post(url, headers=rev, json={"labels": ["vessel", "buoy", "vessel", "vessel"], "note": "pile"})
        assert r.status_code == 201, r.text
        area = r.json()["area"]
        assert area["labels"] == ["vessel", "buoy"]
        assert [a.labels for a in store.ignore_areas()] == [("vessel", "buoy")]
        audit = client.get(f"/api/events/{ev.id}/audit", headers=rev).json()
        assert len(audit) == 1 and applied == [1]

        # again, with or without labels: 409, and nothing stored, applied, dismissed or audited again
        for body in ({"labels": ["vessel"]}, None, {"labels": ["buoy", "buoy"]}):
            r = client.post(url, headers=rev, json=body)
            assert r.status_code == 409 and error_code(r) == "conflict", r.text
            assert f"already made ignore area {area['id']}" in r.json()["error"]["message"]
        assert [a.id for a in store.ignore_areas()] == [area["id"]]
        assert client.get(f"/api/events/{ev.id}/audit", headers=rev).json() == audit and applied == [1]

        # once the area is removed the event may make a new one
        assert client.delete(f"/api/sources/quay/ignore-areas/{area['id']}", headers=rev).status_code == 200
        r = client.post(url, headers=rev, json={"labels": ["buoy"]})
        assert r.status_code == 201 and r.json()["area"]["labels"] == ["buoy"], r.text
        assert [a.labels for a in store.ignore_areas()] == [("buoy",)]


def test_an_operator_cannot_undo_a_reviewers_confirmation(app_env, tmp_path):
    """A reviewer's verdict is evidence and training data (`seawatch reviews export`): an operator's acknowledge or
    dismissal (even as a false detection) of a confirmed event is refused; a reviewer may still change it."""
    client, app, cfg = app_env
    seed(app, cfg.storage.resolved_media_dir())
    reviewer = next(u for u, r in ROLES.items() if r == "reviewer")
    assert client.post("/api/events/ev00001/confirm", json={"note": "real smoke"}, headers=token(client, reviewer)).status_code == 200
    for action, body in (("acknowledge", {}), ("dismiss", {"reason": "false_detection"})):
        r = client.post(f"/api/events/ev00001/{action}", json=body, headers={"X-API-Key": KEY})
        assert r.status_code == 409 and error_code(r) == "conflict" and "confirmed by a reviewer" in r.json()["error"]["message"]
    got = client.get("/api/events/ev00001", headers={"X-API-Key": KEY}).json()
    assert got["review_status"] == "confirmed" and len(got["review_history"]) == 1
    r = client.post("/api/events/ev00001/dismiss", json={"note": "it was steam"}, headers=token(client, reviewer))
    assert r.status_code == 200 and r.json()["review_status"] == "dismissed"
    # an operator still reviews what nobody confirmed
    assert client.post("/api/events/ev00002/acknowledge", json={}, headers={"X-API-Key": KEY}).status_code == 200
