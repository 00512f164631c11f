"""A read-only role for wall displays and dashboards (security audit s24/sec, F4), log-out that ends the token on the
server (F5), and the page's CSP header (F6).

A wall display logs in with a key in its URL (``#key=``): whoever reads the URL (a screenshot, the kiosk's history)
holds that key. Given the ``viewer`` role it sees what an operator sees and changes nothing: every route that reads
answers it, every route that changes something answers 403, on the API and as the UI shows it.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("fastapi")
warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import Authenticator, hash_api_key, hash_password  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from test_service_api import PASSWORDS, ROLES, error_code, seed, token  # noqa: E402

WALL_KEY = "wall-display-key-0123456789abcdef"


@pytest.fixture(scope="module")
def hashes():
    return {u: hash_password(p) for u, p in {**PASSWORDS, "vera": "viewer-pw"}.items()}


def _config(tmp_path, hashes):
    """The test users (a viewer, vera, among them) and a viewer key for the wall display."""
    roles = {**ROLES, "vera": "viewer"}
    return load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"token_secret": "t" * 40,
                 "users": [{"name": u, "role": roles[u], "password_hash": h} for u, h in hashes.items()],
                 "api_keys": [{"name": "wall", "role": "viewer", "key_sha256": hash_api_key(WALL_KEY)}]}})


@pytest.fixture
def env(tmp_path, hashes):
    cfg = _config(tmp_path, hashes)
    app = create_app(cfg)
    with TestClient(app) as client:
        seed(app, app.state.media_dir)
        yield client, app


def _routes(app):
    for path, ops in app.openapi()["paths"].items():
        if path in ("/api/health", "/api/auth/login", "/api/auth/logout"):
            continue
        url = (path.replace("{event_id}", "ev00000").replace("{rel_path}", "snapshots/cam-1/ev00000_0.jpg")
               .replace("{source_id}", "cam-1").replace("{drone_id}", "drone-1").replace("{area_id}", "1"))
        for method in ops:
            yield method.upper(), url


def test_a_viewer_reads_everything_and_changes_nothing(env):
    client, app = env
    wall, olga = {"X-API-Key": WALL_KEY}, token(client, "olga")
    reads = writes = 0
    for method, url in _routes(app):
        r = client.request(method, url, headers=wall, json={} if method != "GET" else None)
        if method == "GET" and client.get(url, headers=olga).status_code != 403:  # what an operator reads
            assert r.status_code not in (401, 403), (method, url, r.status_code, r.text)
            reads += 1
        else:
            assert r.status_code == 403, (method, url, r.status_code, r.text)
            assert error_code(r) == "forbidden" and "has role viewer" in r.json()["error"]["message"]
            writes += 1
    assert reads >= 15 and writes >= 10
    assert client.get("/api/auth/me", headers=wall).json() == {"name": "wall", "role": "viewer", "kind": "key"}
    ev = client.get("/api/events/ev00000", headers=wall).json()
    assert ev["review_status"] == "new"  # nothing it sent changed the event
    # the operator above it still acts
    assert client.post("/api/events/ev00000/acknowledge", headers=token(client, "olga"), json={}).status_code == 200
    # the live feed answers a viewer too
    with client.websocket_connect("/api/live", headers=wall) as ws:
        assert ws.receive_json()["kind"] == "hello"


def test_a_viewer_user_logs_in_like_any_other(env):
    client, _ = env
    r = client.post("/api/auth/login", json={"username": "vera", "password": "viewer-pw"})
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    h = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.get("/api/events", headers=h).status_code == 200
    assert client.post("/api/events/ev00000/dismiss", headers=h, json={}).status_code == 403


def test_logout_ends_the_token_now_and_only_that_token(env):
    client, _ = env
    first, second = token(client, "olga"), token(client, "olga")
    assert client.get("/api/auth/me", headers=first).status_code == 200
    assert client.post("/api/auth/logout", headers=first).status_code == 204
    r = client.get("/api/events", headers=first)
    assert r.status_code == 401 and error_code(r) == "unauthorized"
    with pytest.raises(Exception):  # the live feed refuses it too
        with client.websocket_connect("/api/live", headers=first) as ws:
            ws.receive_json()
    assert client.get("/api/events", headers=second).status_code == 200  # another session of the same user goes on
    assert client.post("/api/auth/logout", headers=first).status_code == 401  # once is enough
    r = client.post("/api/auth/logout", headers={"X-API-Key": WALL_KEY})  # a key is ended in the configuration
    assert r.status_code == 422 and "auth.api_keys" in r.json()["error"]["message"]
    assert client.get("/api/events", headers={"X-API-Key": WALL_KEY}).status_code == 200


def test_revoked_tokens_are_forgotten_once_expired_and_bounded(monkeypatch, hashes):
    from seawatch.service import auth as auth_mod

    cfg = load_config(data={"auth": {"token_secret": "s" * 40, "token_ttl_s": 100,
                                     "users": [{"name": "olga", "role": "operator", "password_hash": hashes["olga"]}]}})
    a = Authenticator(cfg.auth)
    who = a.check_password("olga", PASSWORDS["olga"])
    old, _ = a.issue_token(who, now_s=1000.0)
    assert a.revoke(old, now_s=1001.0) and a.verify_token(old, now_s=1002.0) is None
    assert not a.revoke("junk.token", now_s=1001.0)
    new, _ = a.issue_token(who, now_s=1200.0)  # the old one expired at 1100: its entry goes with the next revoke
    assert a.revoke(new, now_s=1201.0) and len(a._revoked) == 1
    monkeypatch.setattr(auth_mod, "MAX_REVOKED", 3)
    toks = [a.issue_token(who, now_s=1300.0 + i)[0] for i in range(5)]
    for t in toks:
        assert a.revoke(t, now_s=1305.0)
    assert len(a._revoked) <= 3
    assert a.verify_token(toks[-1], now_s=1306.0) is None  # the newest stay ended


def test_the_page_header_allows_no_foreign_connections(env):
    client, _ = env
    csp = client.get("/").headers["content-security-policy"]
    parts = dict(p.strip().split(" ", 1) for p in csp.split(";"))
    assert parts["connect-src"] == "'self'"  # no WebSocket to any other host
    for name, want in (("object-src", "'none'"), ("base-uri", "'none'"), ("form-action", "'none'"),
                       ("frame-ancestors", "'none'"), ("script-src", "'self'")):
        assert parts[name] == want, name
    assert client.get("/ui/index.html").status_code == 404  # the page only as "/", with this header


@pytest.mark.slow
def test_the_ui_of_a_wall_display_offers_no_action(tmp_path, hashes):
    """In Chromium: with a viewer key the event detail has no note, no review buttons and no report form, and the
    Log-out button ends a logged-in user's token on the server; with the operator's token the buttons are there."""
    import json
    import shutil
    import urllib.error
    import urllib.request

    from conftest import missing, serve_in_thread
    from test_service_ui import ARGS, _playwright, _wait, open_page

    if shutil.which("chromium") is None:
        missing("Debian's chromium is not installed (bash scripts/setup.sh)")
    cfg = _config(tmp_path, hashes)
    app = create_app(cfg)
    shown = """() => ({
        buttons: [...document.querySelectorAll('#d-actions button[data-act]')].filter((b) => !b.hidden).map((b) => b.textContent),
        note: !document.getElementById('d-note').hidden, report: !document.getElementById('rec-report').hidden })"""
    with serve_in_thread(app) as port, _playwright() as p:
        seed(app, app.state.media_dir)
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=ARGS)
        try:
            login = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/login", method="POST",
                                           data=json.dumps({"username": "olga", "password": PASSWORDS["olga"]}).encode(),
                                           headers={"Content-Type": "application/json"})
            olga = json.loads(urllib.request.urlopen(login, timeout=10).read())["access_token"]
            for fragment, role in ((f"key={WALL_KEY}", "viewer"), (f"token={olga}", "operator")):
                page, errors = open_page(browser, f"http://127.0.0.1:{port}/#{fragment}")
                _wait(page, "window.seawatch && window.seawatch.state.events.length > 0", 15)
                page.evaluate("() => window.seawatch.select('ev00000')")
                _wait(page, "document.getElementById('d-title') && window.seawatch.state.detail", 10)
                got = page.evaluate(shown)
                if role == "viewer":
                    assert got == {"buttons": [], "note": False, "report": False}, got
                else:
                    assert {"Acknowledge", "Dismiss"} <= set(got["buttons"]) and got["note"] and got["report"], got
                assert not errors, errors
                page.close()
            # log in with the form, log out with the button: the token it had is refused afterwards
            page, errors = open_page(browser, f"http://127.0.0.1:{port}/")
            page.fill("#login-form input[name=username]", "vera")
            page.fill("#login-form input[name=password]", "viewer-pw")
            page.evaluate("() => document.getElementById('login-form').requestSubmit()")
            _wait(page, "!document.getElementById('main').hidden", 15)
            had = page.evaluate("() => sessionStorage.getItem('seawatch-token')")
            with page.expect_navigation():
                page.click("#logout")
            me = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/me", headers={"Authorization": f"Bearer {had}"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(me, timeout=10)
            assert refused.value.code == 401 and had
            page.close()
        finally:
            browser.close()


def test_a_failed_login_logs_a_configured_name_but_never_what_else_was_typed(env, caplog):
    """What is typed in the user field is sometimes a password typed in the wrong box: the log names configured
    users only (security audit s24/sec, F7)."""
    import logging

    client, _ = env
    with caplog.at_level(logging.WARNING, logger="seawatch.service.app"):
        assert client.post("/api/auth/login", json={"username": "olga", "password": "wrong"}).status_code == 401
        assert client.post("/api/auth/login", json={"username": "Tr0ub4dor&3", "password": "x"}).status_code == 401
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed login for 'olga'" in text and "failed login for an unknown user name" in text
    assert "Tr0ub4dor" not in text
