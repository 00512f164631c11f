"""Webhooks against a real HTTP server (the standard library's, in a thread): what is sent (filters, JSON or chat
text, signature, delivery id, headers), in order, retried through an outage and 5xx / 429 answers, dropped and
counted when the endpoint refuses or the queue overflows, flushed at shutdown, and wired into ``seawatch serve``
(health, incidents ended after a crash)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from conftest import free_port
from seawatch.errors import ConfigError
from seawatch.service.app import create_app
from seawatch.service.config import WebhookConfig, load_config
from seawatch.service.live import LiveHub
from seawatch.service.schemas import EventOut
from seawatch.service.webhooks import WebhookSender
from test_service_serve import KEY, serve_settings
from test_service_store import S, T0, make_event


class Receiver:
    """An HTTP endpoint on 127.0.0.1: records each POST (path, headers, body); answers the statuses in ``script``
    first (one per request), then 200."""

    def __init__(self, port: int = 0, script=()) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.script = list(script)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.requests.append((self.path, dict(self.headers), body))
                    status = outer.script.pop(0) if outer.script else 200
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[dict]:
        with self.lock:
            return [json.loads(b) for _p, _h, b in self.requests]

    def until(self, n: int, timeout_s: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.requests) < n:
            time.sleep(0.02)
        return self.bodies()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _msg(i: int, **kw) -> dict:
    return {"kind": "event", "event": EventOut.from_event(make_event(i, **kw)).model_dump(mode="json")}


def _sender(url: str, fast: bool = True, **kw) -> WebhookSender:
    cfg = WebhookConfig.model_validate({"url": url, **kw})
    return WebhookSender(cfg, sleep=(lambda s: time.sleep(0.02)) if fast else None).start()


def test_filters_order_signature_and_headers(receiver):
    w = _sender(receiver.url, types=["fire"], min_severity="high", secret="s3cret", headers={"Authorization": "Bearer abc"})
    try:
        w.on_live_message(_msg(0, severity="high"))                                  # sent
        w.on_live_message(_msg(1, severity="low"))                                   # below high
        w.on_live_message(_msg(2, type="vessel_in_zone", severity="critical"))       # another type
        w.on_live_message(_msg(0, severity="high", phase="update", seq=1))           # phase not asked for
        w.on_live_message({"kind": "review", "event": _msg(0, severity="high")["event"]})  # reviews not asked for
        w.on_live_message(_msg(0, severity="critical", phase="end", seq=2, end_ns=T0 + 9 * S))  # sent
        got = receiver.until(2)
        time.sleep(0.3)  # and nothing more comes
        assert [(b["kind"], b["phase"], b["event"]["id"]) for b in receiver.bodies()] == [
            ("event", "start", "ev00000"), ("event", "end", "ev00000")]
        for _path, headers, body in receiver.requests:
            want = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
            assert headers["X-Seawatch-Signature"] == want
            assert headers["Authorization"] == "Bearer abc" and headers["Content-Type"].startswith("application/json")
        ids = {h["X-Seawatch-Delivery"] for _p, h, _b in receiver.requests}
        assert len(ids) == 2
        assert got[0]["event"]["severity"] == "high"
        assert w.stats()["delivered"] == 2 and w.stats()["pending"] == 0
    finally:
        w.stop()


def test_chat_text_format(receiver):
    w = _sender(receiver.url, format="text", public_url="https://sw.example/")
    try:
        ev = make_event(0, type="unidentified_vessel", severity="high", zone_id="fairway",
                        attributes={"vessel_name": "ZEEMEEUW", "hull_text": "UK12"})
        w.on_live_message({"kind": "event", "event": EventOut.from_event(ev).model_dump(mode="json")})
        (body,) = receiver.until(1)
        assert set(body) == {"text"}
        text = body["text"]
        assert text.startswith("[HIGH] unidentified vessel (NEW) on cam-1")
        assert "zone fairway" in text and "ZEEMEEUW, UK12" in text and "id ev00000" in text
    finally:
        w.stop()


def _stats_once(w, done, timeout_s: float = 5.0) -> dict:
    """The sender's counters once ``done(stats)`` holds (or at the timeout): the receiver has a request before the
    sender has read its answer and counted it."""
    deadline = time.monotonic() + timeout_s
    while not done(st := w.stats()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return st


def test_retries_5xx_and_429_in_order_with_one_delivery_id():
    r = Receiver(script=[503, 429, 500])
    w = _sender(r.url)
    try:
        for i in range(3):
            w.on_live_message(_msg(i))
        got = r.until(6)
        # the first message was tried four times (3 failures), then the others followed, in order
        assert [b["event"]["id"] for b in got] == ["ev00000"] * 4 + ["ev00001", "ev00002"]
        first_ids = {h["X-Seawatch-Delivery"] for _p, h, _b in r.requests[:4]}
        assert len(first_ids) == 1
        st = _stats_once(w, lambda st: st["delivered"] >= 3)
        assert (st["delivered"], st["failed_attempts"], st["dropped"], st["rejected"], st["last_error"]) == (3, 3, 0, 0, None)
    finally:
        w.stop()
        r.close()


def test_refused_message_is_dropped_and_counted_not_retried(caplog):
    r = Receiver(script=[404])
    w = _sender(r.url)
    try:
        w.on_live_message(_msg(0))
        w.on_live_message(_msg(1))
        r.until(2)
        time.sleep(0.3)
        assert [b["event"]["id"] for b in r.bodies()] == ["ev00000", "ev00001"]  # ev00000 once: not retried
        st = w.stats()
        assert (st["delivered"], st["rejected"]) == (1, 1)
        assert any("HTTP 404" in rec.getMessage() for rec in caplog.records)
    finally:
        w.stop()
        r.close()


def test_endpoint_down_keeps_the_newest_within_the_bound_then_delivers_them_in_order():
    port = free_port()
    w = _sender(f"http://127.0.0.1:{port}/hook", max_queue=3, timeout_s=1)
    r = None
    try:
        for i in range(5):
            w.on_live_message(_msg(i))
        deadline = time.monotonic() + 5
        while w.stats()["failed_attempts"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        st = w.stats()
        assert st["dropped"] == 2 and st["pending"] == 3 and "URLError" in st["last_error"]
        r = Receiver(port=port)  # the endpoint comes back
        got = r.until(3)
        assert [b["event"]["id"] for b in got] == ["ev00002", "ev00003", "ev00004"]
        assert _stats_once(w, lambda st: st["last_error"] is None)["last_error"] is None
    finally:
        w.stop()
        if r is not None:
            r.close()


def test_stop_delivers_what_is_waiting(receiver):
    w = WebhookSender(WebhookConfig.model_validate({"url": receiver.url}))  # never started: only stop() delivers
    for i in range(3):
        w.on_live_message(_msg(i))
    assert w.pending == 3
    w.stop(flush_s=5)
    assert [b["event"]["id"] for b in receiver.bodies()] == ["ev00000", "ev00001", "ev00002"]
    assert w.stats()["dropped"] == 0


@pytest.mark.parametrize("over, needle", [
    ({"url": "ftp://x.example/h"}, "http:// or https://"),
    ({"url": "https:///nohost"}, "http:// or https://"),
    ({"url": "https://x.example/h", "headers": {"Content-Type": "text/plain"}}, "not allowed"),
    ({"url": "https://x.example/h", "min_severity": "severe"}, "min_severity"),
    ({"url": "https://x.example/h", "phases": []}, "phases"),
    ({"url": "https://x.example/h", "bogus": 1}, "bogus"),
])
def test_invalid_webhook_config_is_refused_with_the_field(over, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(data={"webhooks": [over]})


def test_secret_url_never_appears_in_errors_or_logs(caplog):
    with pytest.raises(ConfigError) as info:
        load_config(data={"webhooks": [{"url": "https://hooks.example/T0KEN123", "min_severity": "severe"}]})
    assert "T0KEN123" not in str(info.value)
    w = _sender("http://127.0.0.1:9/T0KEN123", timeout_s=0.5)  # port 9: nothing listens
    try:
        w.on_live_message(_msg(0))
        deadline = time.monotonic() + 5
        while not w.stats()["failed_attempts"] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        w.stop(flush_s=0)
    assert w.stats()["failed_attempts"] >= 1 and w.name == "127.0.0.1"
    assert not any("T0KEN123" in rec.getMessage() for rec in caplog.records)
    assert "T0KEN123" not in json.dumps(w.stats())


def test_health_reports_webhooks_and_degrades_while_one_fails(tmp_path):
    failing = WebhookSender(WebhookConfig.model_validate({"url": "http://127.0.0.1:9/h", "name": "control-room"}))
    failing.on_live_message(_msg(0))
    failing.last_error = "URLError: [Errno 111] Connection refused"
    cfg = serve_settings(tmp_path)
    app = create_app(cfg, live=LiveHub(), stats=lambda: {"webhooks": [failing.stats()]})
    with TestClient(app) as client:
        assert client.get("/api/health").json()["status"] == "degraded"
        hooks = client.get("/api/health", headers={"X-API-Key": KEY}).json()["delivery"]["webhooks"]
        assert [(h["name"], h["pending"], h["last_error"][:8]) for h in hooks] == [("control-room", 1, "URLError")]


@pytest.mark.slow
def test_serve_sends_incidents_including_those_a_crash_left_open(tmp_path, receiver):
    from seawatch.service.runner import Service
    from seawatch.service.store import EventStore

    cfg = serve_settings(tmp_path, webhooks=[{"url": receiver.url, "phases": ["start", "end"]}])
    st = EventStore.open(cfg.storage.resolved_database_url())
    st.put(make_event(0, type="vessel_in_zone", labels=("boat",), at_ns=T0 + 7 * S))  # open when the last run died
    st.close()
    svc = Service(cfg).start()
    try:
        got = receiver.until(1)
        assert [(b["phase"], b["event"]["id"], b["event"]["attributes"]["end_reason"]) for b in got] == [
            ("end", "ev00000", "service restarted")]
        svc.sink.emit(make_event(1, severity="critical"))
        got = receiver.until(2)
        assert [(b["phase"], b["event"]["id"]) for b in got][1] == ("start", "ev00001")
        with TestClient(svc.app) as client:
            hooks = client.get("/api/health", headers={"X-API-Key": KEY}).json()["delivery"]["webhooks"]
            assert hooks[0]["delivered"] == 2 and hooks[0]["name"] == "127.0.0.1"
    finally:
        svc.stop()
