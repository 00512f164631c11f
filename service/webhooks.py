"""Webhooks: incidents POSTed to HTTP endpoints (a control-room system, a chat channel, a paging gateway).

Each configured endpoint (``webhooks`` in the serve config, :class:`~seawatch.service.config.WebhookConfig`) gets
its own :class:`WebhookSender`: a ``LiveHub`` listener (so only phases the store committed) that filters by type,
source, severity and phase, and a background thread that POSTs the messages one at a time, in order.

Delivery: a 2xx answer delivers a message. A connection error, a timeout, a 5xx or a 429 is retried with growing
waits (1 s, 2 s, 4 s ... ``max_backoff_s``; a 429's ``Retry-After`` is honoured within that bound), the messages
behind it waiting, so an endpoint that is down for an hour receives everything in order once it is back, as long as
at most ``max_queue`` messages are waiting: beyond that the oldest are dropped, counted and logged (rate-limited).
Any other 4xx is a refusal that no retry will change (a wrong URL, a revoked token): the message is dropped,
counted as ``rejected`` and logged with the status. :meth:`WebhookSender.stats` reports all of it in ``/api/health``.

Events of a camera whose alerts an operator snoozed (``attributes.snoozed``, ``service/snooze.py``) and their reviews
are not sent unless the endpoint says ``snoozed: true``.

Escalation (``service/escalation.py``): an incident that starts below ``min_severity`` and is raised to it later (a
fire that grows) is sent once, at the first phase that reaches it, as if it were the start, to an endpoint that takes
``start`` phases: ``"escalated": true`` and ``"escalated_from": "<the severity before>"`` in the JSON body (whose
``phase`` stays the real one), ``ESCALATED from ...`` in the chat line. An incident sent at its start is not sent
again by this rule; later phases go only where ``phases`` asks for them.

Body (``format: json``): ``{"kind": "event" | "review", "phase": ..., "escalated": false, "event": <the event as the
API serves it>}``
with ``Content-Type: application/json``; ``format: text``: ``{"text": "<one line>"}``, which Slack, Mattermost and
Rocket.Chat incoming webhooks post as a message. With ``secret``, ``X-Seawatch-Signature: sha256=<hex>`` is the
HMAC-SHA256 of the exact body bytes, so the receiver can check it came from this service. ``X-Seawatch-Delivery``
is a unique id per message (the same across its retries), for receivers that must not act twice.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any

from seawatch.service.config import WebhookConfig
from seawatch.service.escalation import NOT_SENT, EscalationMemory, Verdict
from seawatch.vision.events import severity_rank

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL_S = 60.0
USER_AGENT = "seawatch-webhook/1"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it is (a 3xx counts as a refusal): a POST must not be re-sent elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's hook
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _iso(ns: int | None) -> str:
    if ns is None:
        return "?"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def summary_line(kind: str, ev: dict[str, Any], public_url: str | None = None, escalated_from: str | None = None) -> str:
    """One line for a chat channel: what, where, when, how sure, who reviewed; ``escalated_from``: the incident's
    first line here, raised from that severity to the endpoint's ``min_severity`` (``ESCALATED from MEDIUM``)."""
    a = ev.get("attributes") or {}
    what = str(ev.get("type", "event")).replace("_", " ")
    if kind == "review":
        last = (ev.get("review_history") or [{}])[-1]
        head = f"{what} {ev.get('id')} {ev.get('review_status')} by {last.get('by', '?')}"
        note = last.get("note")
        return head + (f": {note}" if note else "")
    phase = {"start": "NEW", "update": "update", "end": "ended"}.get(ev.get("phase", ""), ev.get("phase", ""))
    if escalated_from is not None:
        phase = f"ESCALATED from {str(escalated_from).upper()}" + (", ended" if ev.get("phase") == "end" else "")
    parts = [f"[{str(ev.get('severity', '')).upper()}] {what} ({phase}) on {ev.get('source_id')}"]
    if ev.get("zone_id"):
        parts.append(f"zone {ev['zone_id']}")
    parts.append(f"since {_iso(ev.get('start_ns'))}")
    if ev.get("phase") == "end":
        parts.append(f"until {_iso(ev.get('end_ns'))}")
    ident = ", ".join(str(a[k]) for k in ("vessel_name", "mmsi", "hull_text") if a.get(k))
    if ident:
        parts.append(ident)
    geo = ev.get("geo")
    if geo:
        parts.append(f"at {geo['lat_deg']:.5f}, {geo['lon_deg']:.5f} (±{geo['semi_major_m']:.0f} m)")
    elif ev.get("geo_reason"):
        parts.append("no position")
    sn = a.get("snoozed")
    if isinstance(sn, dict):  # sent only to an endpoint that asked for snoozed events: say so
        parts.append(f"snoozed by {sn.get('by', '?')} until {_iso(sn.get('until_ns'))}: {sn.get('note', '')}")
    if public_url and ev.get("snapshot_url"):
        parts.append(public_url.rstrip("/") + ev["snapshot_url"])
    parts.append(f"id {ev.get('id')}")
    return "; ".join(parts)


class WebhookSender:
    """One endpoint: filter, queue, deliver in order with retries (see the module docstring). Thread-safe."""

    def __init__(self, config: WebhookConfig, *, sleep=None) -> None:
        self.config = config
        self.name = config.label
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wait = sleep or self._stop.wait  # tests shorten the backoff
        self.delivered = 0
        self.dropped = 0  # queue full: oldest dropped
        self.rejected = 0  # a 3xx / 4xx answer (not 429): the endpoint refuses it; retrying would not help
        self.failed_attempts = 0  # attempts retried (connection errors, timeouts, 5xx, 429)
        self.last_error: str | None = None
        self.last_delivered_ns: int | None = None
        self._dropped_logged = 0
        self._next_drop_log = 0.0
        self._escalations = EscalationMemory(f"webhook {self.name}")

    # ---- producer side (the LiveHub's publishing thread) ---------------------------------------------------
    def verdict(self, kind: str, ev: dict[str, Any]) -> Verdict:
        """Filter one message: type, source, snoozed, then phase and severity, an escalation counted as a start.
        Remembers incidents seen below ``min_severity``: call it once per message, in the order they come."""
        c = self.config
        if kind not in ("event", "review") or (kind == "review" and not c.reviews):
            return NOT_SENT
        if c.types and ev.get("type") not in c.types:
            return NOT_SENT
        if c.sources and ev.get("source_id") not in c.sources:
            return NOT_SENT
        # a camera an operator snoozed (maintenance): its events are stored, marked, and alarm nobody, this endpoint
        # included unless it asked for them (snoozed: true); their reviews likewise
        if not c.snoozed and (ev.get("attributes") or {}).get("snoozed"):
            return NOT_SENT
        if kind == "review":
            try:
                ok = severity_rank(ev.get("severity", "low")) >= severity_rank(c.min_severity)
            except ValueError:
                ok = False
            return Verdict(ok)
        return self._escalations.decide(str(ev.get("id") or ""), str(ev.get("phase")), str(ev.get("severity", "low")),
                                        phases=tuple(c.phases), min_severity=c.min_severity)

    def body(self, kind: str, ev: dict[str, Any], escalated_from: str | None = None) -> bytes:
        """The POST body of one message; ``escalated_from``: an escalation (see the module docstring)."""
        c = self.config
        if c.format == "text":
            doc: dict[str, Any] = {"text": summary_line(kind, ev, c.public_url, escalated_from)}
        else:
            ev = dict(ev)
            if c.public_url:
                for k in ("snapshot_url", "clip_url"):
                    if ev.get(k):
                        ev[k] = c.public_url.rstrip("/") + ev[k]
            doc = {"kind": kind, "phase": ev.get("phase"), "escalated": escalated_from is not None}
            if escalated_from is not None:
                doc["escalated_from"] = escalated_from
            doc["event"] = ev
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    def on_live_message(self, message: dict[str, Any]) -> None:
        """A ``LiveHub`` listener; never blocks (the queue drops its oldest message when full)."""
        kind = message.get("kind")
        ev = message.get("event") or {}
        verdict = self.verdict(kind, ev)
        if not verdict.send:
            return
        item = (uuid.uuid4().hex, self.body(kind, ev, verdict.escalated_from))
        with self._cond:
            if len(self._queue) >= self.config.max_queue:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(item)
            self._cond.notify()
        self._log_drops()

    def _log_drops(self) -> None:
        now = time.monotonic()
        with self._cond:
            new = self.dropped - self._dropped_logged
            if not new or now < self._next_drop_log:
                return
            self._dropped_logged, self._next_drop_log = self.dropped, now + DROP_LOG_INTERVAL_S
        log.warning("webhook %s: %d message(s) dropped: more than %d waiting (endpoint down or slow: %s)",
                    self.name, new, self.config.max_queue, self.last_error or "?")

    # ---- delivery thread -------------------------------------------------------------------------------------
    def start(self) -> "WebhookSender":
        self._thread = threading.Thread(target=self._run, name=f"webhook-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, flush_s: float = 5.0) -> None:
        """Deliver what is waiting for up to ``flush_s`` (one attempt each, no waits), then stop; what is left is
        counted as dropped and logged."""
        deadline = time.monotonic() + flush_s
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(self.config.timeout_s + 1.0)  # an attempt under way finishes (bounded by its timeout)
        while time.monotonic() < deadline:
            with self._cond:
                if not self._queue:
                    break
                msg_id, body = self._queue[0]
            ok, _ = self._post(msg_id, body)
            if ok is False:
                break
            with self._cond:
                if self._queue and self._queue[0][0] == msg_id:
                    self._queue.popleft()
        with self._cond:
            left = len(self._queue)
            self.dropped += left
            self._queue.clear()
        if left:
            log.warning("webhook %s: %d message(s) not delivered at shutdown", self.name, left)

    def _run(self) -> None:
        backoff_s = 0.0
        while not self._stop.is_set():
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(1.0)
                if self._stop.is_set():
                    return
                msg_id, body = self._queue[0]
            ok, retry_after_s = self._post(msg_id, body)
            if ok is not False:  # delivered, or refused for good (dropped, counted): on with the next
                with self._cond:
                    if self._queue and self._queue[0][0] == msg_id:  # not dropped meanwhile by a full queue
                        self._queue.popleft()
                backoff_s = 0.0
                continue
            backoff_s = min(self.config.max_backoff_s, max(1.0, backoff_s * 2))
            wait_s = min(self.config.max_backoff_s, max(backoff_s, retry_after_s or 0.0))
            self._wait(wait_s)

    def _post(self, msg_id: str, body: bytes) -> tuple[bool | None, float | None]:
        """One attempt: (True, None) delivered; (None, None) refused for good; (False, retry_after_s) retry."""
        c = self.config
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT,
                   "X-Seawatch-Delivery": msg_id}
        headers.update({k: v.get_secret_value() for k, v in c.headers.items()})
        if c.secret is not None:
            sig = hmac.new(c.secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
            headers["X-Seawatch-Signature"] = f"sha256={sig}"
        req = urllib.request.Request(c.url.get_secret_value(), data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(req, timeout=c.timeout_s) as r:
                r.read(65536)
                status = r.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            exc.close()
            if status == 429 or status >= 500:
                self._failed(f"HTTP {status}")
                try:
                    return False, float(retry_after) if retry_after else None
                except ValueError:
                    return False, None
            with self._cond:
                self.rejected += 1
                self.last_error = f"HTTP {status} (message dropped: the endpoint refuses it)"
            log.error("webhook %s: HTTP %d: message dropped (a wrong URL or credentials? retrying would not help)",
                      self.name, status)
            return None, None
        except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, unreachable, DNS, timeout, TLS
            reason = getattr(exc, "reason", exc)
            self._failed(f"{type(exc).__name__}: {reason}")
            return False, None
        if 200 <= status < 300:
            with self._cond:
                self.delivered += 1
                self.last_delivered_ns = time.time_ns()
                if self.failed_attempts and self.last_error:
                    log.info("webhook %s: delivering again", self.name)
                self.last_error = None
            return True, None
        with self._cond:  # 1xx / 3xx: not accepted
            self.rejected += 1
            self.last_error = f"HTTP {status} (message dropped)"
        log.error("webhook %s: HTTP %d: message dropped", self.name, status)
        return None, None

    def _failed(self, why: str) -> None:
        with self._cond:
            first = self.last_error is None
            self.failed_attempts += 1
            self.last_error = why
        (log.warning if first else log.debug)("webhook %s: %s; retrying (%d waiting)", self.name, why, self.pending)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"name": self.name, "delivered": self.delivered, "pending": len(self._queue),
                    "dropped": self.dropped, "rejected": self.rejected, "failed_attempts": self.failed_attempts,
                    "last_error": self.last_error, "last_delivered_ns": self.last_delivered_ns,
                    "escalated": self._escalations.escalated}


def start_senders(configs) -> list[WebhookSender]:
    return [WebhookSender(c).start() for c in configs]
