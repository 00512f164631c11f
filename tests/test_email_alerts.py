"""E-mail notifications against a real SMTP server (aiosmtpd, in a thread, on 127.0.0.1) with STARTTLS (a
self-signed certificate made here with ``cryptography``) and AUTH: the parsed mails (headers, the text and HTML
parts, the inline snapshot's bytes), the recipients' filters, a hostile vessel name escaped, a server that is down
(nothing blocks, failures counted, the mails delivered in order once it is up), a mail refused for good, the rate
limit's summary mail, the configuration's errors and ``seawatch config check``, and ``seawatch serve`` mailing a
file camera's fire with the stored snapshot attached and ``delivery.email`` in ``/api/health``."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("aiosmtpd", reason="aiosmtpd (test extra) runs the SMTP server of these tests")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from conftest import free_port  # noqa: E402
from seawatch.cli import main  # noqa: E402
from seawatch.errors import ConfigError  # noqa: E402
from seawatch.service.config import EmailConfig, load_config  # noqa: E402
from seawatch.service.email_alerts import EmailNotifier  # noqa: E402
from seawatch.vision.events import GeoPosition, Snapshot  # noqa: E402
from test_service_serve import KEY, FireEverywhere, serve_settings  # noqa: E402
from test_service_store import S, T0, make_event  # noqa: E402

USER, PASSWORD = "seawatch", "s3cret-smtp-pw"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"  # bytes are compared, not decoded


# ---- a real SMTP server -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 / localhost and its key (PEM paths)."""
    pytest.importorskip("cryptography", reason="cryptography (test extra) makes the STARTTLS certificate")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


class MailServer:
    """aiosmtpd on 127.0.0.1: STARTTLS required and AUTH (``USER`` / ``PASSWORD``) required when ``tls_files`` are
    given, else plain and open. Keeps each accepted mail (envelope and parsed message); answers the codes in
    ``script`` to DATA first (one per mail), then 250."""

    def __init__(self, port: int | None = None, tls_files=None, script=()) -> None:
        self.port = port or free_port()
        self.mails: list[tuple[str, list[str], email.message.EmailMessage, bool]] = []
        self.script = list(script)
        self.logins: list[tuple[str, bool]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                with outer.lock:
                    code = outer.script.pop(0) if outer.script else "250 OK"
                    if code.startswith("250"):
                        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                        outer.mails.append((envelope.mail_from, list(envelope.rcpt_tos), msg,
                                            session.ssl is not None))
                return code

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() \
                and auth_data.password == PASSWORD.encode()
            with outer.lock:
                outer.logins.append((mechanism, ok))
            return AuthResult(success=ok, handled=False)  # a refusal answered 535 by aiosmtpd

        kw = {}
        if tls_files is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, tls_files))
            kw = dict(tls_context=ctx, require_starttls=True, authenticator=authenticator, auth_required=True,
                      auth_require_tls=True)
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kw)
        self.controller.start()

    def until(self, n: int, timeout_s: float = 10.0) -> list:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.mails) >= n:
                    break
            time.sleep(0.02)
        with self.lock:
            return list(self.mails)

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def tls_server(tls_files):
    s = MailServer(tls_files=tls_files)
    yield s
    s.stop()


@pytest.fixture
def plain_server():
    s = MailServer()
    yield s
    s.stop()


def _config(port: int, recipients, tls_files=None, **kw) -> EmailConfig:
    data = {"smtp_host": "127.0.0.1", "smtp_port": port, "from": "Seawatch <seawatch@port.example>",
            "recipients": recipients, "public_url": "https://seawatch.port.example/", "timeout_s": 3}
    if tls_files is not None:
        data.update(security="starttls", ca_file=str(tls_files[0]), username=USER, password_env="SW_TEST_SMTP_PW")
    else:
        data["security"] = "none"
    data.update(kw)
    return EmailConfig.model_validate(data)


def _notifier(cfg: EmailConfig, media_dir=None, **kw) -> EmailNotifier:
    return EmailNotifier(cfg, media_dir, sleep=lambda s: time.sleep(0.05), **kw).start()


def _stats_once(n: EmailNotifier, done, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while not done(st := n.stats()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return st


def _parts(msg):
    """(text body, html body, [(content-id, bytes, content-type)] of the inline images)."""
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    images = [(p["Content-ID"], p.get_content(), p.get_content_type()) for p in msg.walk()
              if p.get_content_maintype() == "image"]
    return text, html, images


def _with_snapshot(tmp_path: Path, ev):
    media = tmp_path / "media"
    (media / "snapshots" / "cam-1").mkdir(parents=True, exist_ok=True)
    rel = f"snapshots/cam-1/{ev.id}_0.jpg"
    (media / rel).write_bytes(JPEG)
    return media, replace(ev, snapshot=Snapshot("cam-1", ev.at_ns, (10.0, 10.0, 50.0, 40.0), 0.9, rel))


# ---- the mail itself ---------------------------------------------------------------------------------------------
def test_starttls_auth_mail_with_both_parts_and_the_snapshot_inline(tmp_path, tls_server, tls_files, monkeypatch):
    monkeypatch.setenv("SW_TEST_SMTP_PW", PASSWORD)
    cfg = _config(tls_server.port, [{"name": "duty", "to": ["duty@port.example", "Night desk <night@port.example>"]}],
                  tls_files)
    ev = make_event(0, type="unidentified_vessel", severity="high", source_id="harbour-cam", zone_id="fairway",
                    start_ns=T0 + 3 * 3600 * S, at_ns=T0 + 3 * 3600 * S,
                    geo=GeoPosition(52.838412, 5.700121, 35.0, 20.0, 0.0), geo_reason=None,
                    attributes={"vessel_name": "ZEEMEEUW", "mmsi": 244123456, "hull_text": "UK12",
                                "reason": "no AIS within 300 m"})
    media, ev = _with_snapshot(tmp_path, ev)
    n = _notifier(cfg, media)
    try:
        n.on_stored_event(ev)
        ((mail_from, rcpts, msg, over_tls),) = tls_server.until(1)
    finally:
        n.stop()
    assert over_tls and tls_server.logins == [("PLAIN", True)]
    assert mail_from == "seawatch@port.example" and rcpts == ["duty@port.example", "night@port.example"]
    at = dt.datetime.fromtimestamp((T0 + 3 * 3600 * S) / 1e9, dt.timezone.utc)
    hhmm = at.strftime("%H:%M")
    assert msg["Subject"] == f"[Seawatch] HIGH unidentified_vessel at harbour-cam {hhmm} UTC"
    assert msg["From"] == "Seawatch <seawatch@port.example>" and msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Seawatch-Event"] == "ev00000" and msg["Message-ID"] == "<seawatch.ev00000@port.example>"
    text, html, images = _parts(msg)
    for needle in ("HIGH unidentified vessel: new incident", "Camera", "harbour-cam", "Zone", "fairway",
                   at.strftime("%Y-%m-%d %H:%M:%S UTC"), "52.838412, 5.700121 (±35 m)", "ZEEMEEUW, MMSI 244123456, hull UK12",
                   "no AIS within 300 m", "https://seawatch.port.example/#event=ev00000"):
        assert needle in text and needle in html, needle
    assert '<a href="https://seawatch.port.example/#event=ev00000">' in html
    ((cid, data, ctype),) = images
    assert data == JPEG and ctype == "image/jpeg"
    assert f'src="cid:{cid[1:-1]}"' in html  # shown inline in the HTML part
    assert tls_server.until(1) and n.stats()["sent"] == 1 and n.stats()["failed"] == 0


def test_later_phases_thread_under_the_start_and_no_snapshot_when_not_wanted(tmp_path, plain_server):
    cfg = _config(plain_server.port, [{"name": "duty", "to": ["duty@port.example"], "phases": ["start", "end"],
                                       "include_snapshot": False}])
    media, ev = _with_snapshot(tmp_path, make_event(0))
    n = _notifier(cfg, media)
    try:
        n.on_stored_event(ev)
        n.on_stored_event(replace(ev, phase="end", seq=2, end_ns=ev.start_ns + 125 * S,
                                  attributes={"end_reason": "condition cleared"}))
        mails = plain_server.until(2)
    finally:
        n.stop()
    start, end = (m[2] for m in mails)
    assert end["Subject"].startswith("[Seawatch] ended: HIGH fire at cam-1 ")
    assert end["In-Reply-To"] == end["References"] == start["Message-ID"] == "<seawatch.ev00000@port.example>"
    text, _html, images = _parts(end)
    assert "(2 min 5 s)" in text and "condition cleared" in text and images == []


def test_filters_by_type_severity_source_and_phase_and_never_snoozed(plain_server):
    cfg = _config(plain_server.port, [
        {"name": "fire-desk", "to": ["fire@port.example"], "types": ["fire"], "min_severity": "high"},
        {"name": "quay", "to": ["quay@port.example"], "sources": ["quay-1"], "phases": ["start", "update", "end"]},
    ])
    n = _notifier(cfg)
    try:
        n.on_stored_event(make_event(0, severity="high"))                                 # fire-desk
        n.on_stored_event(make_event(1, severity="medium"))                               # below high
        n.on_stored_event(make_event(2, type="vessel_in_zone", severity="critical"))      # another type
        n.on_stored_event(make_event(0, severity="high", phase="update", seq=1))          # fire-desk: start only
        n.on_stored_event(make_event(3, source_id="quay-1", severity="low"))              # quay
        n.on_stored_event(make_event(3, source_id="quay-1", severity="low", phase="end", seq=1,
                                     end_ns=T0 + 9 * S))                                  # quay
        snoozed = {"snoozed": {"by": "alice", "until_ns": T0 + 3600 * S, "note": "crane"}}
        n.on_stored_event(make_event(4, severity="critical", attributes=snoozed))         # snoozed: nobody
        n.on_stored_event(make_event(5, source_id="quay-1", attributes=snoozed))          # snoozed: nobody
        mails = plain_server.until(3)
        time.sleep(0.5)  # and nothing more comes
        mails = plain_server.until(99, timeout_s=0)
    finally:
        n.stop()
    got = [(rcpts[0], m["X-Seawatch-Event"], m["Subject"].split(" ")[1]) for _f, rcpts, m, _tls in mails]
    assert got == [("fire@port.example", "ev00000", "HIGH"), ("quay@port.example", "ev00003", "LOW"),
                   ("quay@port.example", "ev00003", "ended:")]
    st = n.stats()
    assert (st["sent"], st["dropped"], st["pending"]) == (3, 0, 0)
    assert [(r["name"], r["sent"]) for r in st["recipients"]] == [("fire-desk", 1), ("quay", 2)]


def test_a_snoozed_cameras_incident_is_stored_but_never_mailed(tmp_path, plain_server):
    from seawatch.service.snooze import SnoozeBook, SnoozingSink
    from seawatch.service.store import EventStore

    n = _notifier(_config(plain_server.port, [{"name": "duty", "to": ["duty@port.example"], "types": ["fire"],
                                               "phases": ["start", "end"]}]))
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    book = SnoozeBook(3600.0)
    sink = SnoozingSink(book, store, tmp_path / "media", [n.on_stored_event])
    try:
        now = time.time_ns()
        book.snooze("cam-1", "alice", now + 600 * S, "crane maintenance", now_ns=now)
        sink.emit(make_event(0, start_ns=now, at_ns=now))                       # cam-1: snoozed
        sink.emit(make_event(0, start_ns=now, at_ns=now + S, phase="end", seq=1, end_ns=now + S))
        sink.emit(make_event(1, source_id="cam-2", start_ns=now, at_ns=now))   # another camera: mailed
        mails = plain_server.until(1)
        time.sleep(0.5)
        mails = plain_server.until(99, timeout_s=0)
        assert store.get("ev00000").attributes["snoozed"]["by"] == "alice"  # stored, marked
    finally:
        sink.close()
        store.close()
        n.stop()
    assert [m["X-Seawatch-Event"] for _f, _r, m, _t in mails] == ["ev00001"]


def test_hostile_vessel_name_and_note_are_escaped_and_kept_out_of_the_headers(plain_server):
    cfg = _config(plain_server.port, [{"name": "duty", "to": ["duty@port.example"]}])
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;\r\nBcc: victim@evil.example\u202eGNP'
    n = _notifier(cfg)
    try:
        n.on_stored_event(make_event(0, type="unidentified_vessel", attributes={"vessel_name": hostile,
                                                                                "note": "<b>bold</b>"}))
        ((_f, rcpts, msg, _tls),) = plain_server.until(1)
    finally:
        n.stop()
    assert rcpts == ["duty@port.example"] and msg["Bcc"] is None and "victim" not in str(msg["To"])
    text, html, _ = _parts(msg)
    assert "<script>" not in html and "<img src=x" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html and "&amp;amp;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    vessel_line = next(line for line in text.splitlines() if line.startswith("Vessel:"))
    assert "Bcc: victim@evil.example" in vessel_line  # the line break became a space: one line, no new header
    assert "\u202e" not in text and "\u202e" not in html


def test_a_linked_vessel_alert_names_the_first_alert_of_the_same_boat():
    from seawatch.service.email_alerts import build_message

    cfg = _config(25, [{"name": "duty", "to": ["duty@port.example"]}])
    ev = make_event(1, type="unidentified_vessel", source_id="pier",
                    attributes={"same_vessel_as": {"event_id": "ev00000", "source_id": "quay", "distance_m": 61.4},
                                "vessel_link": "ev00000"})
    text, html, _ = _parts(build_message(cfg, cfg.recipients[0], [ev]))
    line = "alert ev00000 of quay, 61 m apart: https://seawatch.port.example/#event=ev00000"
    assert f"Same vessel as: {line}" in text and line in html


# ---- delivery: a server down, a refusal, the rate limit ---------------------------------------------------------
def test_server_down_blocks_nothing_counts_failures_then_delivers_in_order(tmp_path):
    port = free_port()
    cfg = _config(port, [{"name": "duty", "to": ["duty@port.example"], "max_per_minute": 100}], max_queue=3)
    n = _notifier(cfg)
    server = None
    try:
        t0 = time.monotonic()
        for i in range(5):
            n.on_stored_event(make_event(i))
        assert time.monotonic() - t0 < 0.2  # the store sink's thread never waits for the mail server
        st = _stats_once(n, lambda st: st["failed"] >= 2)
        assert st["failed"] >= 2 and st["sent"] == 0 and st["pending"] == 3 and st["dropped"] == 2
        assert "ConnectionRefusedError" in st["last_error"]
        server = MailServer(port=port)  # the server comes back
        mails = server.until(3)
        assert [m["X-Seawatch-Event"] for _f, _r, m, _t in mails] == ["ev00002", "ev00003", "ev00004"]
        # the server holds a mail a moment before the notifier reads its 250 and counts it
        st = _stats_once(n, lambda st: st["sent"] == 3 and st["pending"] == 0)
        assert (st["sent"], st["pending"], st["last_error"]) == (3, 0, None)
    finally:
        n.stop()
        if server is not None:
            server.stop()


def test_a_mail_refused_for_good_is_dropped_and_counted_the_next_goes(caplog):
    server = MailServer(script=["554 5.7.1 message refused"])
    n = _notifier(_config(server.port, [{"name": "duty", "to": ["duty@port.example"]}]))
    try:
        n.on_stored_event(make_event(0))
        n.on_stored_event(make_event(1))
        mails = server.until(1)
        st = _stats_once(n, lambda st: st["sent"] == 1)
    finally:
        n.stop()
        server.stop()
    assert [m["X-Seawatch-Event"] for _f, _r, m, _t in mails] == ["ev00001"]
    assert (st["sent"], st["rejected"], st["failed"]) == (1, 1, 0)
    assert any("554" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


def test_a_wrong_password_is_retried_and_never_logged(tls_server, tls_files, monkeypatch, caplog):
    monkeypatch.setenv("SW_TEST_SMTP_PW", "wrong-password-123")
    n = _notifier(_config(tls_server.port, [{"name": "duty", "to": ["duty@port.example"]}], tls_files))
    try:
        n.on_stored_event(make_event(0))
        st = _stats_once(n, lambda st: st["failed"] >= 2)
    finally:
        n.stop(flush_s=0)
    assert st["sent"] == 0 and "login refused: 535" in st["last_error"] and tls_server.mails == []
    assert not any("wrong-password-123" in r.getMessage() for r in caplog.records)
    assert n.stats()["dropped"] == 1  # still waiting at shutdown: counted


def test_rate_limit_holds_a_burst_and_sends_one_summary_when_the_minute_allows(tmp_path, plain_server):
    now = [1000.0]
    cfg = _config(plain_server.port, [{"name": "duty", "to": ["duty@port.example"], "max_per_minute": 2},
                                      {"name": "chief", "to": ["chief@port.example"], "min_severity": "critical"}])
    media, crit = _with_snapshot(tmp_path, make_event(4, severity="critical", type="fire"))
    n = _notifier(cfg, media, clock=lambda: now[0])
    try:
        for i in range(4):
            n.on_stored_event(make_event(i, severity="medium"))
        n.on_stored_event(crit)
        n.on_stored_event(make_event(5, severity="low"))
        n.on_stored_event(make_event(2, severity="medium", phase="update", seq=1))  # not wanted (start only)
        first = plain_server.until(3)
        time.sleep(0.6)
        assert len(plain_server.until(99, timeout_s=0)) == 3  # duty: 2 (limit), chief: 1
        st = n.stats()
        assert st["held"] == 4 and [r["held"] for r in st["recipients"]] == [4, 0]
        now[0] += 61.0  # the minute has passed
        mails = plain_server.until(4)
    finally:
        n.stop()
    assert sorted((r[0], m["X-Seawatch-Event"]) for _f, r, m, _t in first) == [
        ("chief@port.example", "ev00004"), ("duty@port.example", "ev00000"), ("duty@port.example", "ev00001")]
    _f, rcpts, summary, _t = mails[3]
    hhmm = dt.datetime.fromtimestamp((T0 + 4 * S) / 1e9, dt.timezone.utc).strftime("%H:%M")
    assert rcpts == ["duty@port.example"]
    assert summary["Subject"] == f"[Seawatch] CRITICAL fire at cam-1 {hhmm} UTC and 3 more"  # the most severe first
    text, html, images = _parts(summary)
    assert "4 incidents while mails to duty were limited to 2 a minute" in text
    for i in (2, 3, 4, 5):
        assert f"ev0000{i}" in text and f"#event=ev0000{i}" in html
    assert [data for _cid, data, _t in images] == [JPEG]  # the most severe one's snapshot
    st = n.stats()
    assert (st["sent"], st["held"], st["dropped"]) == (4, 0, 0)


def test_stop_sends_what_waits_and_held_incidents_as_a_summary(plain_server):
    now = [0.0]
    n = EmailNotifier(_config(plain_server.port, [{"name": "duty", "to": ["duty@port.example"], "max_per_minute": 1}]),
                      clock=lambda: now[0])  # never started: only stop() sends
    for i in range(3):
        n.on_stored_event(make_event(i))
    assert n.pending == 1 and n.stats()["held"] == 2
    n.stop(flush_s=5)
    subjects = [m["Subject"] for _f, _r, m, _t in plain_server.until(2)]
    assert len(subjects) == 2 and subjects[1].endswith(" and 1 more")
    assert n.stats()["dropped"] == 0


# ---- configuration -----------------------------------------------------------------------------------------------
_BASE = {"smtp_host": "mail.port.example", "from": "seawatch@port.example",
         "recipients": [{"name": "duty", "to": ["duty@port.example"]}]}


@pytest.mark.parametrize("over, needle", [
    ({"security": "none"}, "email: security: none would send mail unencrypted to mail.port.example"),
    ({"smtp_port": 0}, "email.smtp_port"),
    ({"smtp_port": 70000}, "email.smtp_port"),
    ({"from": "not-an-address"}, "email.from: 'not-an-address' is not an e-mail address"),
    ({"from": "a@port.example\r\nBcc: x@evil.example"}, "email.from"),
    ({"recipients": [{"name": "duty", "to": ["duty@port.example", "duty.port.example"]}]},
     "email.recipients[0].to: to[1]: 'duty.port.example' is not an e-mail address"),
    ({"recipients": [{"name": "duty", "to": []}]}, "email.recipients[0].to"),
    ({"recipients": []}, "recipients: name at least one"),
    ({"recipients": [{"name": "duty", "to": ["a@b.example"]}, {"name": "duty", "to": ["c@b.example"]}]},
     "names must be unique"),
    ({"recipients": [{"name": "duty", "to": ["a@b.example"], "min_severity": "severe"}]},
     "email.recipients[0].min_severity"),
    ({"recipients": [{"name": "duty", "to": ["a@b.example"], "max_per_minute": 0}]}, "max_per_minute"),
    ({"username": "seawatch"}, "username and password_env go together"),
    ({"password": "in-the-file"}, "email.password: unknown setting 'password' (did you mean password_env?)"),
    ({"password_env": "NOT A NAME", "username": "u"}, "email.password_env"),
    ({"security": "starttls", "smtp_host": "mail server"}, "email.smtp_host"),
])
def test_invalid_email_config_is_refused_naming_the_field(over, needle):
    with pytest.raises(ConfigError) as info:
        load_config(data={"email": {**_BASE, **over}})
    assert needle in str(info.value)


def test_security_none_to_this_machine_or_explicitly_allowed_passes():
    for over in ({"smtp_host": "localhost", "security": "none"}, {"smtp_host": "127.0.0.1", "security": "none"},
                 {"security": "none", "allow_insecure": True}):
        cfg = load_config(data={"email": {**_BASE, **over}}).email
        assert cfg.port == 25
    assert load_config(data={"email": {**_BASE, "security": "tls"}}).email.port == 465
    assert load_config(data={"email": _BASE}).email.port == 587


def test_password_env_unset_refuses_to_start_and_config_check_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SW_TEST_SMTP_PW", raising=False)
    cfg = load_config(data={"email": {**_BASE, "username": "seawatch", "password_env": "SW_TEST_SMTP_PW"}})
    with pytest.raises(ConfigError, match="email.password_env: the environment variable SW_TEST_SMTP_PW is not set"):
        EmailNotifier(cfg.email)
    f = tmp_path / "site.yaml"
    f.write_text("email:\n  smtp_host: mail.port.example\n  username: seawatch\n  password_env: SW_TEST_SMTP_PW\n"
                 "  from: Seawatch <seawatch@port.example>\n"
                 "  recipients: [{name: duty, to: [duty@port.example], types: [fire], min_severity: high}]\n")
    # config check refuses what serve would refuse, naming the variable and who would get no mail
    assert main(["config", "check", str(f)]) == 1
    out, err = capsys.readouterr()
    assert "OK" not in out
    assert (f"{f}: email.password_env: the environment variable SW_TEST_SMTP_PW is not set (or empty); the SMTP "
            "password for seawatch@mail.port.example is read from it") in err
    assert "no mail reaches duty; seawatch serve would refuse to start" in err
    monkeypatch.setenv("SW_TEST_SMTP_PW", "")  # empty is as good as unset: the login would fail on every mail
    assert main(["config", "check", str(f)]) == 1
    assert "SW_TEST_SMTP_PW is not set (or empty)" in capsys.readouterr().err
    monkeypatch.setenv("SW_TEST_SMTP_PW", "x")
    assert main(["config", "check", str(f)]) == 0
    assert ("; e-mail via mail.port.example:587 (STARTTLS, login seawatch with the password from $SW_TEST_SMTP_PW "
            "(set)) from Seawatch <seawatch@port.example> to duty (1 address(es); fire; high+; start; at most 6/min)"
            ) in capsys.readouterr().out
    f.write_text(f.read_text() + f"  ca_file: {tmp_path / 'no-such-ca.pem'}\n")
    assert main(["config", "check", str(f)]) == 1  # serve's mail thread could not check the server's certificate
    assert f"email.ca_file: {tmp_path / 'no-such-ca.pem'} is not a file" in capsys.readouterr().err


def test_serve_refuses_to_start_without_the_smtp_password_naming_it_and_the_recipients(tmp_path, monkeypatch):
    from seawatch.service.runner import Service

    monkeypatch.delenv("SW_TEST_SMTP_PW", raising=False)
    settings = serve_settings(tmp_path, email={**_BASE, "username": "seawatch", "password_env": "SW_TEST_SMTP_PW",
                                               "recipients": [{"name": "duty", "to": ["duty@port.example"]},
                                                              {"name": "vts", "to": ["vts@port.example"]}]})
    with pytest.raises(ConfigError) as err:
        Service(settings).start()
    assert "the environment variable SW_TEST_SMTP_PW is not set (or empty)" in str(err.value)
    assert "no mail reaches duty, vts" in str(err.value)
    assert not (tmp_path / "data" / "seawatch.db").exists()  # refused before the store was opened


def test_health_reports_email_and_degrades_while_the_server_fails(tmp_path):
    from seawatch.service.app import create_app
    from seawatch.service.live import LiveHub

    n = EmailNotifier(_config(free_port(), [{"name": "duty", "to": ["duty@port.example"]}]))
    n.on_stored_event(make_event(0))
    n.last_error = "ConnectionRefusedError: [Errno 111] Connection refused"
    app = create_app(serve_settings(tmp_path), live=LiveHub(), stats=lambda: {"email": n.stats()})
    with TestClient(app) as client:
        assert client.get("/api/health").json()["status"] == "degraded"
        mail = client.get("/api/health", headers={"X-API-Key": KEY}).json()["delivery"]["email"]
    assert (mail["pending"], mail["sent"], mail["server"], mail["last_error"][:22]) == (
        1, 0, f"127.0.0.1:{n.config.port}", "ConnectionRefusedError")


# ---- the real service --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_serve_mails_a_file_cameras_fire_with_its_stored_snapshot(tmp_path, tls_server, tls_files, monkeypatch):
    from seawatch.service.runner import Service
    from test_service_serve import write_video

    monkeypatch.setenv("SW_TEST_SMTP_PW", PASSWORD)
    video = tmp_path / "quay.mp4"
    write_video(video, seconds=2.0, size=(160, 120))
    email_cfg = {"smtp_host": "127.0.0.1", "smtp_port": tls_server.port, "security": "starttls",
                 "ca_file": str(tls_files[0]), "username": USER, "password_env": "SW_TEST_SMTP_PW",
                 "from": "Seawatch <seawatch@port.example>", "public_url": "https://seawatch.port.example",
                 "recipients": [{"name": "duty", "to": ["duty@port.example"], "types": ["fire"]},
                                {"name": "vessels", "to": ["vts@port.example"], "types": ["unidentified_vessel"]}]}
    svc = Service(serve_settings(tmp_path, video, email=email_cfg), detectors={"stub": FireEverywhere()},
                  file_pace="realtime", loop_files=True).start()
    try:
        _f, rcpts, msg, over_tls = tls_server.until(1, timeout_s=30)[0]
        ev_id = msg["X-Seawatch-Event"]
        stored = svc.store.get(ev_id)
        with TestClient(svc.app) as client:
            from test_metrics_endpoint import scrape, value

            metrics = scrape(client, {"X-API-Key": KEY})  # the same counters for Prometheus (read just before)
            health = client.get("/api/health", headers={"X-API-Key": KEY}).json()
    finally:
        svc.stop()
    assert over_tls and rcpts == ["duty@port.example"]
    assert stored is not None and stored.type == "fire"
    assert msg["Subject"].startswith(f"[Seawatch] {stored.severity.upper()} fire at quay-1 ")
    text, html, images = _parts(msg)
    assert f"https://seawatch.port.example/#event={ev_id}" in text and "Zone:" in text and "yard" in text
    snap_file = svc.settings.storage.resolved_media_dir() / "snapshots" / "quay-1" / f"{ev_id}_0.jpg"
    ((_cid, data, ctype),) = images
    assert ctype == "image/jpeg" and data == snap_file.read_bytes()
    mail = health["delivery"]["email"]
    assert mail["sent"] >= 1 and mail["dropped"] == 0 and [r["name"] for r in mail["recipients"]] == ["duty", "vessels"]
    assert 1 <= value(metrics, "seawatch_email_sent_total") <= mail["sent"]
    assert value(metrics, "seawatch_email_dropped_total") == 0 and value(metrics, "seawatch_email_pending") is not None
    assert value(metrics, "seawatch_email_recipient_sent_total", recipient="duty") >= 1
    assert value(metrics, "seawatch_email_recipient_sent_total", recipient="vessels") == 0
    assert value(metrics, "seawatch_audit_write_failures_total") == 0  # the security audit log's, beside them
