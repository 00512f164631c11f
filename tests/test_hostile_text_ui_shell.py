"""The operator UI's page itself, in Chromium (security audit s24/sec): it keeps its content security policy when it
is served without the header (a copy), does not start inside another site's frame, and a
login form sent before the script has taken it puts no password into a URL.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from contextlib import contextmanager  # noqa: E402

from test_hostile_text_ui import _served  # noqa: E402


@contextmanager
def _decoy(html: str):
    """Another site: a plain HTTP server on 127.0.0.2 answering every GET with ``html``; yields its URL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.2", 0), Page)  # another origin, on this machine (no name to resolve)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.2:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


@pytest.mark.slow
def test_the_page_keeps_its_policy_and_does_not_start_in_a_frame(tmp_path):
    """The page is served only as "/" with its CSP header (/ui/index.html is not served: it came without the header).
    A copy without the header (simulated by stripping it in the browser) still refuses an inline handler by its own
    policy, and inside another page's iframe it does not start (nothing to click through a decoy); "/" itself is
    refused as a frame by the header."""
    import urllib.error
    import urllib.request

    from test_live_view import KEY
    from test_service_ui import _wait

    def headerless(route):
        resp = route.fetch()
        route.fulfill(response=resp, headers={k: v for k, v in resp.headers.items()
                                              if k.lower() != "content-security-policy"})

    with _served(tmp_path) as (_, port, browser):
        with pytest.raises(urllib.error.HTTPError) as no_copy:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/index.html", timeout=10)
        assert no_copy.value.code == 404
        for stripped in (False, True):
            page = browser.new_page()
            if stripped:
                page.route(f"http://127.0.0.1:{port}/", headerless)
            page.goto(f"http://127.0.0.1:{port}/#key={KEY}")
            _wait(page, "!document.getElementById('main').hidden", 15)
            page.evaluate("""() => { const d = document.createElement('div');
                d.innerHTML = '<img src="/nope.png" onerror="document.title = \\'pwned\\'">'; document.body.appendChild(d); }""")
            page.wait_for_timeout(500)
            assert page.title() != "pwned", stripped
            page.close()

        for stripped in (False, True):  # another site's page (another origin: 127.0.0.2), framing the UI
            page = browser.new_page()
            if stripped:
                page.route(f"http://127.0.0.1:{port}/", headerless)
            with _decoy(f'<iframe src="http://127.0.0.1:{port}/#key={KEY}" width="900" height="600"></iframe>') as url:
                page.goto(url)
                page.wait_for_timeout(2500)  # time enough to log in with the key and show the UI, were it to start
            shown = []
            for f in page.frames[1:]:
                try:
                    shown.append(f.evaluate("() => !!document.getElementById('main') && !document.getElementById('main').hidden"))
                except Exception:  # a frame the browser refused to load has no document to ask
                    shown.append(False)
            assert shown and not any(shown), (stripped, [f.url for f in page.frames])
            if stripped:
                frame = next(f for f in page.frames if f.url.startswith(f"http://127.0.0.1:{port}/"))
                assert "not shown inside another page" in frame.evaluate("() => document.body.textContent")
            page.close()


@pytest.mark.slow
def test_a_login_form_sent_before_the_script_takes_it_puts_no_password_in_a_url(tmp_path):
    """The script is slow or blocked and the form is sent by the browser itself: no request with the password in its
    URL (the server's access log, the browser history)."""
    with _served(tmp_path) as (_, port, browser):
        page = browser.new_page()
        page.route("**/ui/app.js", lambda route: route.abort())
        urls: list[str] = []
        page.on("request", lambda req: urls.append(req.url))
        page.goto(f"http://127.0.0.1:{port}/")
        page.evaluate("() => { document.getElementById('login').hidden = false; }")
        page.fill("#login-form input[name=username]", "admin")
        page.fill("#login-form input[name=password]", "secret-pw-123")
        page.evaluate("() => document.getElementById('login-form').requestSubmit()")
        page.wait_for_timeout(800)
        assert not [u for u in urls if "secret-pw-123" in u], urls
        assert "secret-pw-123" not in page.url
