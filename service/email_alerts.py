"""E-mail: incidents mailed to duty officers through the site's SMTP server (``email`` in the serve config).

Port and wind-farm safety teams without a chat system or an MQTT consumer still have a mailbox on a phone. Each
recipient (:class:`~seawatch.service.config.EmailRecipientConfig`) filters by type, source, severity and phase
(start only by default); every stored phase that passes becomes one mail: a plain-text and an HTML part saying what,
where, when, the position with its uncertainty and a link to the event in the UI, the vessel's identity or the
reason, and the snapshot JPEG attached inline. Text from outside (AIS vessel names, operators' notes) is escaped in
the HTML and stripped of control characters everywhere; headers carry only configured names.

Like the webhooks (``service/webhooks.py``) the notifier is fed after the store committed (a ``StoreSink``
publisher: it sees the stored ``Event`` and its snapshot file) and only queues there; one background thread
connects (TLS from the first byte, or STARTTLS, never falling back to clear text), logs in, and sends the waiting
mails in order over one connection. A server that is down or answers 4xx is retried with growing waits (1 s, 2 s,
... ``max_backoff_s``), the mails behind waiting; beyond ``max_queue`` waiting the oldest are dropped, counted and
logged. A 5xx answer to a mail (sender or every recipient refused, message refused) drops that mail, counted as
``rejected``; a refused login is retried (a password being changed), logged as an error. An SMTP server that is down
never holds up the pipeline or the API.

Rate limit: at most ``max_per_minute`` mails to a recipient in any 60 s. Incidents beyond that are held and go out
as one summary mail ("[Seawatch] HIGH fire at quay-1 14:02 UTC and 12 more") as soon as the minute allows, listing
them all (up to ``HELD_DETAIL_MAX``; the rest counted), with the most severe one's snapshot.

Escalation (``service/escalation.py``): an incident that starts below a recipient's ``min_severity`` and is raised to
it later (a fire that grows) is mailed once to a recipient that takes ``start`` phases, at the first phase that
reaches it, as if it were the start: ``[Seawatch] ESCALATED: HIGH fire at quay-1 14:02 UTC``, "escalated from MEDIUM"
in the mail, threaded with the incident's other mails. An incident mailed at its start is not mailed again by this
rule; later phases go only where ``phases`` asks for them.

Events of a camera whose alerts an operator snoozed (``attributes.snoozed``, ``service/snooze.py``) are never mailed.
:meth:`EmailNotifier.stats` is ``delivery.email`` in ``/api/health``.
"""

from __future__ import annotations

import collections
import html
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Callable

from seawatch.errors import ConfigError
from seawatch.service.config import EmailConfig, EmailRecipientConfig
from seawatch.service.escalation import NOT_SENT, EscalationMemory, Verdict
from seawatch.vision.events import Event, severity_rank

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0  # max_per_minute counts mails in this sliding window
HELD_DETAIL_MAX = 50  # incidents listed in one summary mail; beyond, only counted
SNAPSHOT_MAX_BYTES = 5 * 1024 * 1024  # a bigger snapshot is not attached (mail servers cap a message's size)
POLL_S = 0.5  # the sender thread's longest idle wait: held incidents are looked at this often
DROP_LOG_INTERVAL_S = 60.0
TEXT_MAX_CHARS = 500  # one value from outside (a vessel name, a note) in a mail
# control characters (line breaks included) and the bidirectional overrides that can make a name read backwards
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_PHASE_WORDS = {"start": "new incident", "update": "update", "end": "ended"}
_SUBJECT_PREFIX = {"start": "", "update": "update: ", "end": "ended: "}


def resolve_password(config: EmailConfig) -> str | None:
    """The SMTP password from the environment variable ``password_env`` names (None without a login); a
    ConfigError naming the field, the variable and the recipients who would get nothing when it is not set, so
    ``serve`` refuses to start (and ``config check`` fails) rather than every mail failing at the login."""
    if config.password_env is None:
        return None
    value = os.environ.get(config.password_env)
    if not value:
        who = ", ".join(r.name for r in config.recipients)
        raise ConfigError(f"email.password_env: the environment variable {config.password_env} is not set (or empty); "
                          f"the SMTP password for {config.username}@{config.smtp_host} is read from it (e.g. systemd's "
                          f"Environment= or EnvironmentFile=): without it no mail reaches {who}")
    return value


def clean(value: Any, limit: int = TEXT_MAX_CHARS) -> str:
    """``value`` as one line of text: control characters and direction overrides replaced by a space, cut to
    ``limit`` characters. Not HTML-escaped (see :func:`html.escape` where it goes into the HTML part)."""
    text = _UNSAFE.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utc(ns: int | None, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    if ns is None:
        return "?"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime(fmt)


def _duration(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return (f"{h} h {m} min" if h else f"{m} min {s} s" if m else f"{s} s")


def event_link(public_url: str | None, event_id: str) -> str | None:
    """The event in the operator UI (it opens the event named by ``#event=``), or None without ``public_url``."""
    return None if not public_url else f"{public_url.rstrip('/')}/#event={event_id}"


def headline(ev: Event) -> str:
    """``HIGH unidentified_vessel at harbour-cam 14:02 UTC`` (the end time for an ended incident)."""
    at = ev.end_ns if ev.phase == "end" and ev.end_ns is not None else ev.start_ns
    return f"{ev.severity.upper()} {ev.type} at {ev.source_id} {_utc(at, '%H:%M')} UTC"


def subject(events: list[Event], more: int = 0, escalated: dict[str, str] | None = None) -> str:
    """One incident: ``[Seawatch] HIGH fire at quay-1 14:02 UTC`` (``update:`` / ``ended:`` before a later phase,
    ``ESCALATED:`` before the first phase mailed of an incident raised to the recipient's min_severity); a summary: the
    most severe one's headline and ``and N more``."""
    if len(events) == 1 and not more:
        ev = events[0]
        if escalated and ev.id in escalated:
            return f"[Seawatch] ESCALATED{', ended' if ev.phase == 'end' else ''}: {headline(ev)}"
        return f"[Seawatch] {_SUBJECT_PREFIX.get(ev.phase, '')}{headline(ev)}"
    top = _most_severe(events)
    return f"[Seawatch] {headline(top)} and {len(events) + more - 1} more"


def _most_severe(events: list[Event]) -> Event:
    return max(events, key=lambda e: (severity_rank(e.severity), -events.index(e)))


def describe(ev: Event, public_url: str | None = None, drone_of: Callable[[str], str | None] | None = None,
             escalated_from: str | None = None) -> list[tuple[str, str]]:
    """The facts of one incident phase as (label, value) rows, plain text (cleaned, not escaped), for both parts;
    ``escalated_from``: the first phase mailed of an incident raised from that severity (says so first)."""
    a = dict(ev.attributes or {})
    phase = _PHASE_WORDS.get(ev.phase, ev.phase)
    if escalated_from is not None:
        phase = f"ESCALATED from {clean(escalated_from, 20).upper()} ({phase})"
    rows = [("Incident", f"{ev.severity.upper()} {ev.type.replace('_', ' ')}: {phase}")]
    drone = drone_of(ev.source_id) if drone_of is not None else None
    rows.append(("Drone camera", f"{ev.source_id} (drone {drone})") if drone else ("Camera", ev.source_id))
    if ev.zone_id:
        rows.append(("Zone", ev.zone_id))
    if ev.phase == "end" and ev.end_ns is not None:
        rows.append(("Time", f"{_utc(ev.start_ns)} to {_utc(ev.end_ns, '%H:%M:%S UTC')} "
                             f"({_duration((ev.end_ns - ev.start_ns) / 1e9)})"))
    else:
        rows.append(("Time", _utc(ev.start_ns)))
    if ev.geo is not None:
        g = ev.geo
        rows.append(("Position", f"{g.lat_deg:.6f}, {g.lon_deg:.6f} (±{g.semi_major_m:.0f} m)"))
    else:
        rows.append(("Position", f"unknown ({clean(ev.geo_reason or 'not located')})"))
    name = a.get("vessel_name") or a.get("ais_name")
    ident = [clean(name)] if name else []
    if a.get("mmsi"):
        ident.append(f"MMSI {clean(a['mmsi'])}")
    if a.get("hull_text"):
        ident.append(f"hull {clean(a['hull_text'])}")
    if ident:
        rows.append(("Vessel", ", ".join(ident)))
    same = a.get("same_vessel_as")  # a boat another camera or drone alerted on first (vision/identity/link.py)
    if isinstance(same, dict) and same.get("event_id"):
        first = clean(same["event_id"], 64)
        apart = same.get("distance_m")
        link = event_link(public_url, first)
        rows.append(("Same vessel as", f"alert {first} of {clean(same.get('source_id', '?'), 64)}"
                                       + (f", {apart:.0f} m apart" if isinstance(apart, (int, float)) else "")
                                       + (f": {link}" if link else "")))
    for key, label in (("reason", "Reason"), ("identity_reason", "Identity"), ("end_reason", "Ended because"),
                       ("note", "Note"), ("reported_by", "Reported by")):
        if a.get(key):
            rows.append((label, clean(a[key])))
    if ev.labels:
        scores = list(ev.scores) if len(ev.scores) == len(ev.labels) else [None] * len(ev.labels)
        rows.append(("Detected", ", ".join(clean(lbl, 40) + ("" if s is None else f" {s:.2f}")
                                           for lbl, s in zip(ev.labels, scores))))
    link = event_link(public_url, ev.id)
    if link:
        rows.append(("Open", link))
    rows.append(("Event id", ev.id))
    return rows


def _text_block(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {v}" for k, v in rows)


def _html_rows(rows: list[tuple[str, str]]) -> str:
    out = []
    for k, v in rows:
        value = html.escape(v)
        if k == "Open":
            value = f'<a href="{html.escape(v, quote=True)}">{value}</a>'
        out.append(f'<tr><th style="text-align:left;padding:2px 12px 2px 0;vertical-align:top">{html.escape(k)}</th>'
                   f'<td style="padding:2px 0">{value}</td></tr>')
    return "".join(out)


def _html_page(body: str) -> str:
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"></head>'
            f'<body style="font-family:sans-serif;font-size:14px">{body}'
            '<p style="color:#666;font-size:12px">Sent by Seawatch; do not reply.</p></body></html>')


def _snapshot(ev: Event, media_dir: Path | None) -> bytes | None:
    """The stored snapshot JPEG of ``ev``, or None (none stored, deleted meanwhile, unreadable, too big)."""
    snap = ev.snapshot
    if media_dir is None or snap is None or not snap.uri:
        return None
    try:
        root = media_dir.resolve()
        path = (root / snap.uri).resolve()
        if not path.is_relative_to(root):
            return None
        if path.stat().st_size > SNAPSHOT_MAX_BYTES:
            log.warning("email: snapshot of event %s not attached: over %d bytes", ev.id, SNAPSHOT_MAX_BYTES)
            return None
        return path.read_bytes()
    except OSError as exc:  # retention or the disk guard removed it: the mail goes without
        log.warning("email: snapshot of event %s unreadable: %s", ev.id, exc)
        return None


def build_message(config: EmailConfig, recipient: EmailRecipientConfig, events: list[Event], more: int = 0, *,
                  media_dir: Path | None = None, drone_of: Callable[[str], str | None] | None = None,
                  escalated: dict[str, str] | None = None) -> EmailMessage:
    """The mail for one incident phase (``events`` of one) or a summary of several held by the rate limit (``more``:
    held beyond those listed). multipart/alternative: text/plain, then text/html with the snapshot as a related
    inline image (``cid:``) when the recipient wants it and it is stored. ``escalated``: incident id -> the severity
    it was raised from, for the events that are the first mailed of an incident raised to the recipient's level."""
    escalated = escalated or {}
    domain = parseaddr(config.from_)[1].rpartition("@")[2] or "seawatch.invalid"
    msg = EmailMessage()
    msg["Subject"] = subject(events, more, escalated)
    msg["From"] = config.from_
    msg["To"] = ", ".join(recipient.to)
    msg["Date"] = formatdate(usegmt=True)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to the robot
    top = _most_severe(events)
    if len(events) == 1 and not more:
        ev = events[0]
        # the phases of one incident thread together in a mail client: the start is the thread's root
        root_id = f"<seawatch.{ev.id}@{domain}>"
        msg["Message-ID"] = root_id if ev.phase == "start" else make_msgid(f"seawatch.{ev.id}.{ev.seq}", domain)
        if ev.phase != "start":
            msg["In-Reply-To"] = root_id
            msg["References"] = root_id
        msg["X-Seawatch-Event"] = ev.id
        rows = describe(ev, config.public_url, drone_of, escalated.get(ev.id))
        text = _text_block(rows) + "\n"
        intro = html.escape(("ESCALATED: " if ev.id in escalated else "") + headline(ev))
        html_body = f"<h2 style=\"margin:0 0 8px\">{intro}</h2><table>{_html_rows(rows)}</table>"
    else:
        msg["Message-ID"] = make_msgid("seawatch.summary", domain)
        total = len(events) + more
        lead = (f"{total} incidents while mails to {recipient.name} were limited to {recipient.max_per_minute} a "
                "minute; the newest phase of each:")
        facts = [describe(ev, config.public_url, drone_of, escalated.get(ev.id)) for ev in events]
        text = lead + "\n\n" + "\n\n".join(_text_block(rows) for rows in facts) + "\n"
        tables = "".join(f'<table style="margin:0 0 14px">{_html_rows(rows)}</table>' for rows in facts)
        html_body = f"<h2 style=\"margin:0 0 8px\">{html.escape(headline(top))} and {total - 1} more</h2>" \
                    f"<p>{html.escape(lead)}</p>{tables}"
        if more:
            note = f"and {more} more not listed here: see the incident list in Seawatch"
            text += f"\n{note}\n"
            html_body += f"<p>{html.escape(note)}</p>"
    jpeg = _snapshot(top, media_dir) if recipient.include_snapshot else None
    cid = make_msgid("snapshot", domain) if jpeg is not None else None
    if cid is not None:
        html_body += f'<p><img src="cid:{cid[1:-1]}" alt="snapshot of {html.escape(top.id)}" style="max-width:100%"></p>'
    msg.set_content(text)
    msg.add_alternative(_html_page(html_body), subtype="html")
    if jpeg is not None:
        msg.get_payload()[1].add_related(jpeg, "image", "jpeg", cid=cid, filename=f"{top.id}.jpg", disposition="inline")
    return msg


@dataclass
class _Mail:
    recipient: int  # index in config.recipients
    events: list[Event]
    more: int = 0  # a summary's incidents beyond those listed
    escalated: dict[str, str] = field(default_factory=dict)  # incident id -> severity raised from (escalation.py)
    message: EmailMessage | None = None  # built at its first attempt, the same bytes on every retry


@dataclass
class _RecipientState:
    queued_s: collections.deque = field(default_factory=collections.deque)  # clock() of mails queued in the window
    held: dict[str, Event] = field(default_factory=dict)  # incident id -> its newest phase, waiting for a summary
    held_escalated: dict[str, str] = field(default_factory=dict)  # held incidents first told as escalations
    held_more: int = 0  # held beyond HELD_DETAIL_MAX: counted only
    sent: int = 0


class EmailNotifier:
    """Filter, rate-limit, queue and send (see the module docstring). Thread-safe; ``on_stored_event`` never blocks."""

    def __init__(self, config: EmailConfig, media_dir: str | Path | None = None, *,
                 drone_of: Callable[[str], str | None] | None = None, sleep: Callable[[float], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._password = resolve_password(config)
        if config.ca_file is not None and not Path(config.ca_file).is_file():
            raise ConfigError(f"email.ca_file: {config.ca_file} is not a file (the PEM the server's certificate is "
                              "checked against)")
        self.media_dir = Path(media_dir) if media_dir is not None else None
        self.drone_of = drone_of
        self._clock = clock  # the rate limit's clock (tests move it)
        self._queue: collections.deque[_Mail] = collections.deque()
        self._state = [_RecipientState() for _ in config.recipients]
        self._escalations = [EscalationMemory(f"email {r.name}") for r in config.recipients]
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wait = sleep or self._stop.wait  # tests shorten the backoff
        self._smtp: smtplib.SMTP | None = None
        self._helo: str | None = None
        self.sent = 0
        self.failed = 0  # attempts that failed and are retried (server down, 4xx, TLS, login)
        self.rejected = 0  # mails the server refused for good (5xx): dropped
        self.dropped = 0  # queue full (oldest dropped), or still waiting at shutdown
        self.last_error: str | None = None
        self.last_sent_ns: int | None = None
        self._dropped_logged = 0
        self._next_drop_log = 0.0

    # ---- producer side (the store sink's thread) -----------------------------------------------------------
    def verdict(self, i: int, ev: Event) -> Verdict:
        """Whether recipient ``i`` is mailed ``ev``: type, source, snoozed, then phase and severity, an escalation
        counted as a start (``service/escalation.py``). Remembers incidents seen below the recipient's min_severity:
        call it once per stored phase, in order."""
        recipient = self.config.recipients[i]
        if recipient.types and ev.type not in recipient.types:
            return NOT_SENT
        if recipient.sources and ev.source_id not in recipient.sources:
            return NOT_SENT
        if (ev.attributes or {}).get("snoozed"):  # a camera under maintenance alarms nobody (service/snooze.py)
            return NOT_SENT
        return self._escalations[i].decide(ev.id, ev.phase, ev.severity, phases=tuple(recipient.phases),
                                           min_severity=recipient.min_severity)

    def on_stored_event(self, event: Event) -> None:
        """A ``StoreSink`` publisher: queue a mail for each recipient that wants ``event`` (or hold it for a summary
        while the recipient's minute is full). Never blocks on the network."""
        now = self._clock()
        for i, r in enumerate(self.config.recipients):
            verdict = self.verdict(i, event)
            if not verdict.send:
                continue
            escalated = {event.id: verdict.escalated_from} if verdict.escalated_from is not None else {}
            with self._cond:
                st = self._state[i]
                self._expire(st, now)
                if st.held or len(st.queued_s) >= r.max_per_minute:
                    if event.id in st.held or len(st.held) < HELD_DETAIL_MAX:
                        st.held[event.id] = event  # an incident's newer phase replaces its older one
                        st.held_escalated.update(escalated)  # and it is still the first the recipient hears of it
                    else:
                        st.held_more += 1
                    continue
                st.queued_s.append(now)
                self._enqueue(_Mail(i, [event], escalated=escalated))
        self._log_drops()

    @staticmethod
    def _expire(st: _RecipientState, now: float) -> None:
        while st.queued_s and now - st.queued_s[0] >= RATE_WINDOW_S:
            st.queued_s.popleft()

    def _enqueue(self, mail: _Mail) -> None:  # under self._cond
        if len(self._queue) >= self.config.max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(mail)
        self._cond.notify()

    def _release_held(self, force: bool = False) -> None:
        """Held incidents of each recipient whose minute has room again (any, with ``force``) become one summary."""
        now = self._clock()
        with self._cond:
            for i, (r, st) in enumerate(zip(self.config.recipients, self._state)):
                if not st.held:
                    continue
                self._expire(st, now)
                if not force and len(st.queued_s) >= r.max_per_minute:
                    continue
                held, more, escalated = list(st.held.values()), st.held_more, st.held_escalated
                st.held, st.held_more, st.held_escalated = {}, 0, {}
                st.queued_s.append(now)
                self._enqueue(_Mail(i, held, more, escalated))

    def _log_drops(self) -> None:
        now = time.monotonic()
        with self._cond:
            new = self.dropped - self._dropped_logged
            if not new or now < self._next_drop_log:
                return
            self._dropped_logged, self._next_drop_log = self.dropped, now + DROP_LOG_INTERVAL_S
        log.warning("email: %d mail(s) dropped: more than %d waiting (SMTP server %s down or slow: %s)", new,
                    self.config.max_queue, self.config.smtp_host, self.last_error or "?")

    # ---- the sender thread ---------------------------------------------------------------------------------
    def start(self) -> "EmailNotifier":
        self._thread = threading.Thread(target=self._run, name="email-alerts", daemon=True)
        self._thread.start()
        return self

    def stop(self, flush_s: float = 5.0) -> None:
        """Send what is waiting (held incidents as summaries too) for up to ``flush_s``, one attempt each, then stop;
        what is left is counted as dropped and logged."""
        deadline = time.monotonic() + flush_s
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
        if self._thread is not None:
            # an attempt under way finishes: connect, TLS, login and the mail each bounded by timeout_s
            self._thread.join(4 * self.config.timeout_s + 1.0)
            if self._thread.is_alive():
                deadline = 0.0  # it still holds the connection: nothing more is sent from here
        self._release_held(force=True)
        while time.monotonic() < deadline:
            with self._cond:
                if not self._queue:
                    break
                mail = self._queue[0]
            if self._send(mail) is False:
                break
            self._done(mail)
        if deadline:
            self._close()
        with self._cond:
            left = len(self._queue)
            self.dropped += left
            self._queue.clear()
        if left:
            log.warning("email: %d mail(s) not sent at shutdown (%s)", left, self.last_error or "no time left")

    def _run(self) -> None:
        backoff_s = 0.0
        while not self._stop.is_set():
            self._release_held()
            with self._cond:
                mail = self._queue[0] if self._queue else None
            if mail is None:
                self._close()  # nothing waiting: the connection is let go
                with self._cond:
                    if not self._queue and not self._stop.is_set():
                        self._cond.wait(POLL_S)
                continue
            if self._send(mail) is not False:  # sent, or refused for good (counted): on with the next
                self._done(mail)
                backoff_s = 0.0
                continue
            self._close()
            backoff_s = min(self.config.max_backoff_s, max(1.0, backoff_s * 2))
            self._wait(backoff_s)

    def _done(self, mail: _Mail) -> None:
        with self._cond:
            if self._queue and self._queue[0] is mail:  # not dropped meanwhile by a full queue
                self._queue.popleft()

    def _send(self, mail: _Mail) -> bool | None:
        """One attempt: True sent; None refused for good (dropped, counted); False to be retried."""
        r = self.config.recipients[mail.recipient]
        try:
            if mail.message is None:
                mail.message = build_message(self.config, r, mail.events, mail.more, media_dir=self.media_dir,
                                             drone_of=self.drone_of, escalated=mail.escalated)
        except Exception:  # noqa: BLE001 - a mail that cannot be written must not stall the ones behind it
            log.exception("email %s: cannot write the mail for event %s; dropped", r.name, mail.events[0].id)
            self._rejected("cannot write the mail (logged)")
            return None
        for again in (True, False):
            reused = self._smtp is not None
            try:
                smtp = self._session()
            except smtplib.SMTPAuthenticationError as exc:
                self._failed(f"login refused: {exc.smtp_code} {_said(exc.smtp_error)}", error=True)
                return False
            except (smtplib.SMTPException, OSError, ValueError) as exc:  # down, refused, TLS, STARTTLS not offered
                self._failed(_why(exc))
                return False
            try:
                refused = smtp.send_message(mail.message)
            except smtplib.SMTPServerDisconnected as exc:
                self._close()
                if reused and again:  # the server let an idle connection go: once more on a new one
                    continue
                self._failed(_why(exc))
                return False
            except smtplib.SMTPRecipientsRefused as exc:
                self._close()
                codes = [code for code, _msg in exc.recipients.values()]
                if codes and all(500 <= c < 600 for c in codes):
                    self._rejected(f"every recipient refused: {_refusals(exc.recipients)}", r.name)
                    return None
                self._failed(f"recipients refused for now: {_refusals(exc.recipients)}")
                return False
            except smtplib.SMTPResponseException as exc:  # sender refused, message refused (size, content)
                self._close()
                if 500 <= exc.smtp_code < 600:
                    self._rejected(f"{exc.smtp_code} {_said(exc.smtp_error)}", r.name)
                    return None
                self._failed(f"{exc.smtp_code} {_said(exc.smtp_error)}")
                return False
            except (smtplib.SMTPException, OSError, ValueError) as exc:
                self._close()
                self._failed(_why(exc))
                return False
            break
        with self._cond:
            self.sent += 1
            self._state[mail.recipient].sent += 1
            self.last_sent_ns = time.time_ns()
            if self.failed and self.last_error:
                log.info("email: sending again (%s)", self.config.smtp_host)
            self.last_error = None
        if refused:  # some addresses refused, the others took it
            log.warning("email %s: some addresses refused: %s", r.name, _refusals(refused))
        return True

    def _session(self) -> smtplib.SMTP:
        """The open connection, else a new one: connected, TLS (implicit or STARTTLS, required), logged in."""
        if self._smtp is not None:
            return self._smtp
        c = self.config
        if self._helo is None:
            self._helo = socket.getfqdn()  # once, here in the sender thread (it may ask DNS)
        ctx = ssl.create_default_context(cafile=c.ca_file) if c.security != "none" else None
        if c.security == "tls":
            smtp = smtplib.SMTP_SSL(c.smtp_host, c.port, local_hostname=self._helo, timeout=c.timeout_s, context=ctx)
        else:
            smtp = smtplib.SMTP(c.smtp_host, c.port, local_hostname=self._helo, timeout=c.timeout_s)
        try:
            smtp.ehlo()
            if c.security == "starttls":
                smtp.starttls(context=ctx)  # not offered: SMTPNotSupportedError, never a fall back to clear text
                smtp.ehlo()
            if c.username is not None:
                smtp.login(c.username, self._password or "")
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        return smtp

    def _close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _failed(self, why: str, error: bool = False) -> None:
        with self._cond:
            first = self.last_error is None
            self.failed += 1
            self.last_error = why
            pending = len(self._queue)
        level = logging.ERROR if error and first else logging.WARNING if first else logging.DEBUG
        log.log(level, "email: SMTP %s:%d: %s; retrying (%d mail(s) waiting)", self.config.smtp_host,
                self.config.port, why, pending)

    def _rejected(self, why: str, name: str = "") -> None:
        with self._cond:
            self.rejected += 1
            self.last_error = f"{why} (mail dropped)"
        log.error("email %s: mail dropped, the server refuses it: %s", name, why)

    # ---- counters ------------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def stats(self) -> dict[str, Any]:
        """``delivery.email`` of /api/health."""
        with self._cond:
            return {"server": f"{self.config.smtp_host}:{self.config.port}", "sent": self.sent, "failed": self.failed,
                    "rejected": self.rejected, "dropped": self.dropped, "pending": len(self._queue),
                    "held": sum(len(s.held) + s.held_more for s in self._state), "last_error": self.last_error,
                    "last_sent_ns": self.last_sent_ns,
                    "recipients": [{"name": r.name, "sent": s.sent, "held": len(s.held) + s.held_more}
                                   for r, s in zip(self.config.recipients, self._state)]}


def _said(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return clean(text, 200)


def _refusals(recipients: dict) -> str:
    return ", ".join(f"{clean(addr, 100)}: {code} {_said(msg)}" for addr, (code, msg) in recipients.items())


def _why(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.smtp_code} {_said(exc.smtp_error)}"
    return clean(f"{type(exc).__name__}: {exc}", 300)
