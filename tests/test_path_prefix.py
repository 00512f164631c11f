"""Seawatch behind a reverse proxy that serves it under a path prefix and strips it (nginx's
``location /seawatch/ { proxy_pass http://127.0.0.1:8080/; }``): the web UI asks everything relative to where it was
loaded (no configuration needed), the API's ``snapshot_url`` / ``clip_url`` carry the prefix when the service knows it
(``service.root_path``, or ``X-Forwarded-Prefix`` from a trusted proxy only), and at the host's root nothing changed.

The proxy here is a real one on its own port (HTTP/1.1 over TCP, the WebSocket upgrade passed through), as nginx
behaves with the documented configuration: ``/seawatch`` is redirected to ``/seawatch/``, the prefix is stripped,
anything outside it is the proxy's own 404."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import free_port, missing, serve_in_thread  # noqa: E402
from seawatch.errors import ConfigError  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402

KEY = "prefix-test-key-0123456789abcdef"
PREFIX = "/seawatch"
S = 1_000_000_000


class StrippingProxy:
    """A reverse proxy on 127.0.0.1 serving ``upstream`` under ``prefix``: one request per connection (sent upstream
    with ``Connection: close``, so the answer's end is the connection's), a WebSocket upgrade piped both ways.
    ``forwarded_prefix``: also send ``X-Forwarded-Prefix: <prefix>``. ``seen``: (method, path asked, path sent on or
    None for the proxy's own answer) of every request."""

    def __init__(self, upstream_port: int, prefix: str = PREFIX, forwarded_prefix: bool = False,
                 strip: bool = True) -> None:
        self.upstream_port, self.prefix, self.forwarded_prefix, self.strip = upstream_port, prefix, forwarded_prefix, strip
        self.port = free_port()
        self.seen: list[tuple[str, str, str | None]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        path = target.split("?", 1)[0]
        if path == self.prefix:  # nginx: a location "/seawatch/" answers "/seawatch" with a 301 to "/seawatch/"
            self.seen.append((method, target, None))
            writer.write(f"HTTP/1.1 301 Moved Permanently\r\nLocation: {self.prefix}/{target[len(path):]}\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        elif not path.startswith(self.prefix + "/"):
            self.seen.append((method, target, None))
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n")
        else:
            await self._forward(reader, writer, method, target, version, lines[1:])
            return
        await writer.drain()
        writer.close()

    async def _forward(self, reader, writer, method, target, version, header_lines) -> None:
        sent = target[len(self.prefix):] if self.strip else target
        self.seen.append((method, target, sent))
        headers = [h for h in header_lines if h and h.split(":", 1)[0].strip().lower()
                   not in ("connection", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-prefix")]
        upgrade = any(h.split(":", 1)[0].strip().lower() == "upgrade" for h in headers)
        peer = writer.get_extra_info("peername")[0]
        headers += ["Connection: Upgrade" if upgrade else "Connection: close", f"X-Forwarded-For: {peer}",
                    "X-Forwarded-Proto: http"]
        if self.forwarded_prefix:
            headers.append(f"X-Forwarded-Prefix: {self.prefix}")
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(f"{method} {sent} {version}\r\n".encode("latin-1") + "\r\n".join(headers).encode("latin-1")
                        + b"\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass

        tasks = [asyncio.ensure_future(pipe(reader, up_writer)), asyncio.ensure_future(pipe(up_reader, writer))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)  # the answer is over or the client left
        for t in tasks:
            t.cancel()
        for w in (up_writer, writer):
            w.close()

    def __enter__(self) -> "StrippingProxy":
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}/"


class NginxProxy:
    """Debian's nginx with the service README's own ``location /seawatch/`` block (read from the README, the upstream
    port put in), so the documented configuration is what is tested; ``location /`` answers 404 as "outside".
    ``seen`` as StrippingProxy's, from nginx's access log (a request is logged when it ends: a WebSocket when it
    closes)."""

    def __init__(self, upstream_port: int, work_dir: Path, forwarded_prefix: bool = False, strip: bool = True) -> None:
        if shutil.which("nginx") is None:
            missing("Debian's nginx is not installed (bash scripts/setup.sh)")
        self.upstream_port, self.prefix, self.dir, self.strip = upstream_port, PREFIX, work_dir, strip
        self.port = free_port()
        readme = (Path(__file__).resolve().parents[1] / "service" / "README.md").read_text(encoding="utf-8")
        block = next(b for b in re.findall(r"```nginx\n(.*?)```", readme, re.S) if "location /seawatch/" in b)
        assert "127.0.0.1:8080" in block, block
        block = block.replace("127.0.0.1:8080", f"127.0.0.1:{upstream_port}")
        if not strip:  # the README's variant: proxy_pass without a path passes the prefix on
            assert f"proxy_pass http://127.0.0.1:{upstream_port}/;" in block, block
            block = block.replace(f"proxy_pass http://127.0.0.1:{upstream_port}/;", f"proxy_pass http://127.0.0.1:{upstream_port};")
        if not forwarded_prefix:
            block = "\n".join(line for line in block.splitlines() if "X-Forwarded-Prefix" not in line)
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        temps = " ".join(f"{k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (d / "nginx.conf").write_text(
            f"{'user root; ' if os.geteuid() == 0 else ''}worker_processes 1; daemon off; pid {d}/nginx.pid;\n"
            f"error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n  log_format seen '$request_method $request_uri $upstream_addr';\n"
            f"  access_log {d}/access.log seen;\n  {temps}\n"
            f"  server {{\n    listen 127.0.0.1:{self.port};\n{block}\n    location / {{ return 404; }}\n  }}\n}}\n")
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "NginxProxy":
        d = self.dir
        self._proc = subprocess.Popen(["nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        import socket

        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    err = self._proc.stderr.read().decode(errors="replace") if self._proc.poll() is not None else ""
                    self.__exit__()
                    raise AssertionError(f"nginx did not start: {err} {(d / 'error.log').read_text(errors='replace')}")
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)

    @property
    def seen(self) -> list[tuple[str, str, str | None]]:
        log = self.dir / "access.log"
        out = []
        for line in (log.read_text(errors="replace").splitlines() if log.exists() else []):
            method, target, upstream = line.split(" ", 2)
            sent = target[len(self.prefix):] if self.strip else target
            out.append((method, target, sent if upstream != "-" else None))
        return out

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}/"


def _proxy(kind: str, upstream_port: int, tmp_path: Path, forwarded_prefix: bool = False, strip: bool = True):
    """The proxy of a test: this file's own (``python``) or nginx with the README's block; ``strip=False``: the
    prefix passed on (nginx's ``proxy_pass`` without a path)."""
    if kind == "nginx":
        return NginxProxy(upstream_port, tmp_path / "nginx", forwarded_prefix, strip)
    return StrippingProxy(upstream_port, forwarded_prefix=forwarded_prefix, strip=strip)


PROXIES = pytest.mark.parametrize("proxy_kind", ["python", "nginx"])


def _settings(tmp_path, **service):
    return load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "service": service,
        "auth": {"token_secret": "p" * 40,
                 "api_keys": [{"name": "desk", "role": "reviewer", "key_sha256": hash_api_key(KEY)}]},
        "sources": [{"id": "quay", "url": "rtsp://cam/quay"}]})


def _seed(app) -> None:
    """A stored event with a real JPEG snapshot (the browser must decode it) and an open one."""
    import cv2

    from seawatch.vision.events import ClipRef, Snapshot
    from test_service_store import T0, make_event

    rel = "snapshots/quay/ev00000_0.jpg"
    (app.state.media_dir / "snapshots" / "quay").mkdir(parents=True, exist_ok=True)
    ok, jpg = cv2.imencode(".jpg", np.full((120, 160, 3), 70, np.uint8))
    (app.state.media_dir / rel).write_bytes(jpg.tobytes())
    app.state.store.put(make_event(0, type="fire", source_id="quay", snapshot=Snapshot("quay", T0, (10, 10, 60, 60), 0.9, uri=rel),
                                   clip=ClipRef("quay", T0 - 5 * S, T0 + 9 * S, 5 * S, 5 * S), end_ns=T0 + 4 * S, phase="end"))
    app.state.store.put(make_event(1, type="smoke", severity="low", source_id="quay"))


def _get(url: str, headers: dict | None = None, method: str = "GET"):
    req = urllib.request.Request(url, method=method, headers={"X-API-Key": KEY, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _wait_seen(proxy, request: tuple[str, str, str | None]) -> None:
    """Until the proxy has seen ``request`` (method, path asked, path sent on): nginx logs a request once it ended (a
    WebSocket once it closed), on a busy machine a moment after the answer."""
    deadline = time.monotonic() + 5
    while request not in proxy.seen:
        assert time.monotonic() < deadline, proxy.seen
        time.sleep(0.05)


def _prefixed_snapshot_through(proxy) -> None:
    """The seeded event through ``proxy``: its snapshot_url carries the prefix and that URL, fetched through the
    proxy as it is, is the JPEG."""
    status, _, body = _get(proxy.base + "api/events/ev00000")
    assert status == 200, body
    ev = json.loads(body)
    assert ev["snapshot_url"] == "/seawatch/api/events/ev00000/snapshot"
    status, headers, jpg = _get(f"http://127.0.0.1:{proxy.port}{ev['snapshot_url']}")
    assert status == 200 and headers["content-type"] == "image/jpeg" and jpg[:2] == b"\xff\xd8"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


# ---- the API's URLs ---------------------------------------------------------------------------------------------
def test_root_path_is_a_plain_path_prefix(tmp_path):
    assert _settings(tmp_path).service.root_path == ""
    assert _settings(tmp_path, root_path="/seawatch/").service.root_path == "/seawatch"  # the trailing slash dropped
    assert _settings(tmp_path, root_path="/tools/sea-watch").service.root_path == "/tools/sea-watch"
    assert _settings(tmp_path, root_path="/tools/api").service.root_path == "/tools/api"
    for bad in ("seawatch", "/a//b", "/../etc", "/sea watch", "/a?b", "https://ops.example/seawatch", "/a\r\nX: y",
                "/api", "/UI/x", "/wall"):  # (the service's own paths: a prefix cannot be one of them)
        with pytest.raises(ConfigError, match="root_path"):
            _settings(tmp_path, root_path=bad)


def test_at_the_root_the_api_hands_out_what_it_always_did(tmp_path):
    """No root_path, no proxy: ``/api/...`` as before; a client that is no trusted proxy cannot change it."""
    app = create_app(_settings(tmp_path))
    with TestClient(app) as client:
        _seed(app)
        h = {"X-API-Key": KEY}
        ev = client.get("/api/events/ev00000", headers=h).json()
        assert ev["snapshot_url"] == "/api/events/ev00000/snapshot"
        # TestClient's client ("testclient") is not an address in trusted_proxies: the header is not believed
        ev = client.get("/api/events/ev00000", headers={**h, "X-Forwarded-Prefix": "/evil"}).json()
        assert ev["snapshot_url"] == "/api/events/ev00000/snapshot"
        page = client.get("/")
        assert 'src="ui/app.js"' in page.text and 'href="ui/app.css"' in page.text  # relative: "/" finds /ui/app.js
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/ui/app.js").status_code == 200 and client.get("/ui/index.html").status_code == 404


def test_configured_root_path_prefixes_every_url_the_api_hands_out(tmp_path):
    app = create_app(_settings(tmp_path, root_path="/seawatch"))
    with TestClient(app) as client:
        _seed(app)
        h = {"X-API-Key": KEY}
        ev = client.get("/api/events/ev00000", headers=h).json()
        assert ev["snapshot_url"] == "/seawatch/api/events/ev00000/snapshot"
        assert ev["clip_url"] == "/seawatch/api/events/ev00000/clip"
        page = client.get("/api/events", headers=h, params={"type": "fire"}).json()["events"]
        assert [e["snapshot_url"] for e in page] == ["/seawatch/api/events/ev00000/snapshot"]
        acked = client.post("/api/events/ev00000/acknowledge", headers=h, json={"note": "seen"}).json()
        assert acked["snapshot_url"] == "/seawatch/api/events/ev00000/snapshot"
        # the routes themselves are where they were: the proxy strips the prefix
        assert client.get("/api/events/ev00000/snapshot", headers=h).status_code == 200


@PROXIES
def test_behind_the_proxy_api_urls_work_with_forwarded_prefix_from_a_trusted_proxy_only(tmp_path, proxy_kind):
    """Through the stripping proxy with ``X-Forwarded-Prefix``: snapshot_url is the prefixed path, which a script
    fetches through the proxy as it is; the live feed's WebSocket upgrade passes the proxy. The same header from an
    address not in trusted_proxies is ignored."""
    from websockets.sync.client import connect

    app = create_app(_settings(tmp_path))
    with serve_in_thread(app, **app.state.settings.service.uvicorn_options()) as port, \
            _proxy(proxy_kind, port, tmp_path, forwarded_prefix=True) as proxy:
        _seed(app)
        _prefixed_snapshot_through(proxy)
        _wait_seen(proxy, ("GET", "/seawatch/api/events/ev00000/snapshot", "/api/events/ev00000/snapshot"))
        # the proxy's own answers: /seawatch redirected, outside the prefix nothing
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as moved:
            opener.open(f"http://127.0.0.1:{proxy.port}/seawatch", timeout=10)
        assert moved.value.code == 301 and moved.value.headers["Location"] in ("/seawatch/", proxy.base)
        assert _get(f"http://127.0.0.1:{proxy.port}/api/events")[0] == 404
        # the live feed through the proxy
        with connect(f"ws://127.0.0.1:{proxy.port}/seawatch/api/live", additional_headers={"X-API-Key": KEY},
                     open_timeout=10) as ws:
            assert json.loads(ws.recv(10))["kind"] == "hello"
        _wait_seen(proxy, ("GET", "/seawatch/api/live", "/api/live"))
        # straight to the service (127.0.0.1 is a trusted proxy by default): its header is believed ...
        status, _, body = _get(f"http://127.0.0.1:{port}/api/events/ev00000", {"X-Forwarded-Prefix": "/other/place"})
        assert json.loads(body)["snapshot_url"] == "/other/place/api/events/ev00000/snapshot"
        # ... but not a value that is no path prefix
        status, _, body = _get(f"http://127.0.0.1:{port}/api/events/ev00000", {"X-Forwarded-Prefix": "https://evil.example"})
        assert json.loads(body)["snapshot_url"] == "/api/events/ev00000/snapshot"

    app = create_app(_settings(tmp_path / "b", trusted_proxies=["10.9.9.9"]))  # the proxy is elsewhere
    with serve_in_thread(app, **app.state.settings.service.uvicorn_options()) as port:
        _seed(app)
        status, _, body = _get(f"http://127.0.0.1:{port}/api/events/ev00000", {"X-Forwarded-Prefix": "/evil"})
        assert status == 200 and json.loads(body)["snapshot_url"] == "/api/events/ev00000/snapshot"

    app = create_app(_settings(tmp_path / "c", root_path="/seawatch"))  # configured: it wins over any header
    with serve_in_thread(app, **app.state.settings.service.uvicorn_options()) as port:
        _seed(app)
        status, _, body = _get(f"http://127.0.0.1:{port}/api/events/ev00000", {"X-Forwarded-Prefix": "/other"})
        assert json.loads(body)["snapshot_url"] == "/seawatch/api/events/ev00000/snapshot"


@PROXIES
def test_a_proxy_that_passes_the_prefix_on_works_once_root_path_names_it(tmp_path, proxy_kind):
    """nginx's ``proxy_pass http://127.0.0.1:8080;`` (no path) sends ``/seawatch/api/...`` on as it is. With
    ``service.root_path: /seawatch`` the service routes it without the prefix: the API, its prefixed snapshot_url
    fetched through the proxy, the page and its script, the live feed; the service reached directly still answers at
    its own root, and ``/seawatch`` without its slash is redirected to the page. Without root_path the service
    cannot know the prefix: such a request is a 404, not some other page."""
    from websockets.sync.client import connect

    app = create_app(_settings(tmp_path, root_path="/seawatch"))
    with serve_in_thread(app, **app.state.settings.service.uvicorn_options()) as port, \
            _proxy(proxy_kind, port, tmp_path, strip=False) as proxy:
        _seed(app)
        _prefixed_snapshot_through(proxy)
        status, headers, page = _get(proxy.base)
        assert status == 200 and b'src="ui/app.js"' in page, page[:200]
        status, headers, js = _get(proxy.base + "ui/app.js")
        assert status == 200 and "javascript" in headers["content-type"]
        assert _get(proxy.base + "api/events/nope")[0] == 404  # routed, and not found, in the API's own shape
        with connect(f"ws://127.0.0.1:{proxy.port}/seawatch/api/live", additional_headers={"X-API-Key": KEY},
                     open_timeout=10) as ws:
            assert json.loads(ws.recv(10))["kind"] == "hello"
        _wait_seen(proxy, ("GET", "/seawatch/api/events/ev00000/snapshot", "/seawatch/api/events/ev00000/snapshot"))
        # straight to the service: its own root as before, and the prefix itself redirected to the page
        status, _, body = _get(f"http://127.0.0.1:{port}/api/events/ev00000")
        assert status == 200 and json.loads(body)["snapshot_url"] == "/seawatch/api/events/ev00000/snapshot"
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as moved:
            opener.open(f"http://127.0.0.1:{port}/seawatch?x=1", timeout=10)
        assert moved.value.code == 307 and moved.value.headers["Location"] == "/seawatch/?x=1"

    app = create_app(_settings(tmp_path / "b"))  # the prefix not configured: nothing to route it by
    with serve_in_thread(app, **app.state.settings.service.uvicorn_options()) as port, \
            _proxy(proxy_kind, port, tmp_path / "b", strip=False) as proxy:
        status, _, body = _get(proxy.base + "api/events")
        assert status == 404, body


# ---- the web UI in Chromium ---------------------------------------------------------------------------------------
@contextmanager
def _chromium():
    from test_service_ui import ARGS, _playwright

    if shutil.which("chromium") is None:
        missing("Debian's chromium is not installed (bash scripts/setup.sh)")
    with _playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _frame():
    from seawatch.vision.detections import Detections

    tracked = Detections(np.array([[100, 80, 300, 200]], np.float32), np.array([0.87], np.float32),
                         np.array([0], np.int32), ("vessel",), track_id=np.array([7]))
    return time.time_ns(), np.full((360, 640, 3), 90, np.uint8), tracked


@pytest.mark.slow
@PROXIES
def test_the_ui_works_under_a_prefix_the_proxy_strips_with_no_configuration(tmp_path, proxy_kind):
    """Chromium at http://127.0.0.1:PROXY/seawatch/#key=...: the service has no root_path and the proxy sends no
    X-Forwarded-Prefix (the API's URLs are "/api/..."), and still: the page's script and style load, the event list
    loads, an event's snapshot shows, the live feed connects through the proxy and lists an event stored after the
    page loaded, the live view's pictures and the recordings come through the prefix, and the browser asks nothing
    outside it."""
    from test_service_store import make_event
    from test_service_ui import _wait, open_page

    app = create_app(_settings(tmp_path), latest_frame=lambda sid: _frame() if sid == "quay" else None,
                     source_status=lambda: [{"source_id": "quay", "state": "online", "frames_decoded": 10}])
    with serve_in_thread(app, **app.state.settings.service.uvicorn_options()) as port, \
            _proxy(proxy_kind, port, tmp_path) as proxy, _chromium() as browser:
        _seed(app)
        origin = f"http://127.0.0.1:{proxy.port}"
        page, errors = open_page(browser, f"{origin}/seawatch#key={KEY}")  # no slash: the proxy's redirect
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        assert page.url == f"{origin}/seawatch/#key={KEY}"
        _wait(page, "window.seawatch && window.seawatch.state.events.length === 2", 15)
        assert page.evaluate("window.seawatch.state.events.find((e) => e.id === 'ev00000').snapshot_url") \
            == "/api/events/ev00000/snapshot"  # the service does not know the prefix; the UI needs not
        # an event's snapshot
        page.evaluate("() => window.seawatch.select('ev00000')")
        _wait(page, "document.getElementById('d-snapshot').naturalWidth === 160", 10)
        # the live feed: connected through the proxy, and an event stored now is listed without a reload
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        late = make_event(2, type="vessel_in_zone", severity="medium", source_id="quay")
        app.state.store.put(late)
        app.state.live.publish_event(late)
        _wait(page, "window.seawatch.state.events.some((e) => e.id === 'ev00002')", 10)
        # the camera's live view (an <img> of blob: URLs fetched from latest.jpg)
        page.click('#sources tr[data-id="quay"] .live-act')
        _wait(page, "document.getElementById('lv-img').naturalWidth === 640", 10)
        page.click("#lv-close")
        # its recordings (nothing recorded: the bar says so, from the service's answer)
        page.evaluate(f"window.seawatch.openRecordings('quay', {time.time_ns() - 120 * S}, 60)")
        _wait(page, "!document.getElementById('recordings').hidden && "
                    "document.getElementById('rec-note').textContent !== ''", 10)
        assert "failed" not in page.text_content("#rec-error")

        mine = [u for u in asked if u.startswith(origin)]
        for want in ("/seawatch/api/events/ev00000/snapshot", "/seawatch/api/sources/quay/latest.jpg",
                     "/seawatch/api/sources/quay/recordings", "/seawatch/api/events?"):
            assert any(u.startswith(origin + want) for u in mine), (want, mine)
        assert all(u.startswith(origin + "/seawatch/") for u in mine), [u for u in mine if "/seawatch/" not in u]
        assert not errors, errors
        page.close()  # (nginx logs the live feed's WebSocket once it closed)
        deadline = time.monotonic() + 5
        while not any(s and s.startswith("/api/live") for _, _, s in proxy.seen):
            assert time.monotonic() < deadline, proxy.seen
            time.sleep(0.05)
        # and from the start (before the page's listener): the page, its script, style, map module, coastline, the
        # WebSocket; nothing reached the proxy outside the prefix but the one redirected "/seawatch"
        sent = {s for _, _, s in proxy.seen if s}
        for path in ("/", "/ui/app.js", "/ui/map.js", "/ui/app.css", "/ui/coastline.json", "/api/auth/me", "/api/live"):
            assert path in {s.split("?")[0] for s in sent}, (path, sorted(sent))
        assert [t for _, t, s in proxy.seen if s is None] == ["/seawatch"], proxy.seen
