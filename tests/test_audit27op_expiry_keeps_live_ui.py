"""Operator audit (night shift): the session runs out (auth.token_ttl_s) while the operator watches a camera's live
view. The page asks for a log-in; before, it also dropped ``#live=CAMERA`` from the address, so after logging in again
the event open before (``#event=``, kept) came back but the camera did not. The link now stays and the live view
opens again after the log-in, as after a reload."""

from __future__ import annotations

import time

import pytest

from test_live_view import _settings

PASSWORD = "night-shift-pw-1"


@pytest.mark.slow
def test_ui_after_the_session_expires_and_a_new_log_in_the_live_view_comes_back(tmp_path, monkeypatch):
    from conftest import serve_in_thread
    from test_service_ui import _browser, _playwright, _wait

    import seawatch.service.app as app_mod
    from seawatch.service.app import create_app
    from seawatch.service.auth import Principal, hash_password

    monkeypatch.setattr(app_mod, "WS_STATUS_INTERVAL_S", 0.5)  # the feed checks the token this often
    cfg = _settings(tmp_path, auth={"users": [{"name": "olga", "role": "operator", "password_hash": hash_password(PASSWORD)}]})
    app = create_app(cfg)
    with serve_in_thread(app) as port, _playwright() as p:
        # olga's token, issued so that it runs out 4 s from now
        short, _ = app.state.auth.issue_token(Principal("olga", "operator", "user"),
                                              now_s=time.time() - cfg.auth.token_ttl_s + 4.0)
        browser = _browser(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 720})
        ctx.add_init_script("if (!sessionStorage.getItem('seeded')) { sessionStorage.setItem('seeded', '1'); "
                            f"sessionStorage.setItem('seawatch-token', '{short}'); }}")
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/#live=gate")
        _wait(page, "document.getElementById('lv-title').textContent === 'Live: gate' && "
                    "!document.getElementById('live-view').hidden", 10)
        _wait(page, "!document.getElementById('login').hidden", 15)  # expired: log in again
        assert page.is_hidden("#main") and page.is_hidden("#live-view")
        assert "live=gate" in page.evaluate("location.hash")
        page.fill("input[name=username]", "olga")
        page.fill("input[name=password]", PASSWORD)
        page.press("input[name=password]", "Enter")
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        _wait(page, "document.getElementById('lv-title').textContent === 'Live: gate' && "
                    "!document.getElementById('live-view').hidden", 5)
        page.click("#lv-close")  # closing it still takes it out of the address
        assert "live=" not in page.evaluate("location.hash")
        assert not errors, errors
        browser.close()
