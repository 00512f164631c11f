"""Escalations (``service/escalation.py``): an incident that starts below a recipient's ``min_severity`` and is raised
to it by a later phase reaches that recipient once, marked as an escalation: webhooks (a real HTTP receiver, JSON and
chat text) and e-mail (a real SMTP server, aiosmtpd), including a mail held by the rate limit; an incident told at
its start is not told again, one this process never saw start (a crash's leftovers) is never an escalation, snoozed
incidents stay silent, and the memory is bounded."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from seawatch.service.escalation import EscalationMemory, Verdict
from test_service_store import S, T0, make_event
from test_webhooks import Receiver, _msg, _sender

START_ONLY, START_END, START_UPDATE, END_ONLY = ("start",), ("start", "end"), ("start", "update"), ("end",)


# ---- the rule, one recipient ------------------------------------------------------------------------------------
@pytest.mark.parametrize("phases, steps", [
    # (phase, severity) -> expected verdict, for one incident, in order
    (START_ONLY, [(("start", "medium"), Verdict(False)), (("update", "high"), Verdict(True, "medium")),
                  (("update", "critical"), Verdict(False)), (("end", "critical"), Verdict(False))]),
    (START_ONLY, [(("start", "high"), Verdict(True)), (("update", "critical"), Verdict(False)),
                  (("end", "critical"), Verdict(False))]),
    (START_ONLY, [(("start", "low"), Verdict(False)), (("update", "medium"), Verdict(False)),
                  (("end", "high"), Verdict(True, "medium"))]),  # raised at its very end: still told, once
    (START_ONLY, [(("start", "low"), Verdict(False)), (("end", "low"), Verdict(False)),
                  (("update", "high"), Verdict(False))]),  # ended: forgotten (a stray late phase is no escalation)
    (START_END, [(("start", "medium"), Verdict(False)), (("update", "high"), Verdict(True, "medium")),
                 (("end", "high"), Verdict(True))]),
    (START_UPDATE, [(("start", "medium"), Verdict(False)), (("update", "high"), Verdict(True, "medium")),
                    (("update", "high"), Verdict(True)), (("end", "high"), Verdict(False))]),
    (END_ONLY, [(("start", "medium"), Verdict(False)), (("update", "high"), Verdict(False)),
                (("end", "high"), Verdict(True))]),  # takes no starts: nothing is told as one
    (START_END, [(("end", "high"), Verdict(True))]),  # never seen start (a crash left it open): a plain end
    (START_ONLY, [(("update", "high"), Verdict(False)), (("end", "high"), Verdict(False))]),  # likewise: nothing
    (START_ONLY, [(("start", "bogus"), Verdict(False)), (("update", "high"), Verdict(False))]),
])
def test_first_phase_reaching_min_severity_is_told_once(phases, steps):
    mem = EscalationMemory("duty")
    got = [mem.decide("inc-1", phase, sev, phases=phases, min_severity="high") for (phase, sev), _want in steps]
    assert got == [want for _step, want in steps]
    assert len(mem) == 0 or steps[-1][0][0] != "end"  # an ended incident is not remembered


def test_the_memory_is_bounded_and_forgets_the_longest_unheard_of(caplog):
    mem = EscalationMemory("duty", max_incidents=3)
    for i in range(5):
        assert mem.decide(f"inc-{i}", "start", "low", phases=START_ONLY, min_severity="high") == Verdict(False)
    assert len(mem) == 3 and mem.forgotten == 2 and "oldest forgotten" in caplog.text  # inc-0, inc-1
    mem.decide("inc-2", "update", "medium", phases=START_ONLY, min_severity="high")  # heard of again: kept longest
    mem.decide("inc-5", "start", "low", phases=START_ONLY, min_severity="high")  # inc-3 goes, not inc-2
    assert len(mem) == 3 and mem.forgotten == 3
    high = dict(phases=START_ONLY, min_severity="high")
    assert [mem.decide(f"inc-{i}", "update", "high", **high) for i in range(6)] == [
        Verdict(False), Verdict(False), Verdict(True, "medium"), Verdict(False), Verdict(True, "low"),
        Verdict(True, "low")]
    assert mem.escalated == 3 and len(mem) == 0


# ---- webhooks ---------------------------------------------------------------------------------------------------
@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_webhook_json_and_text_say_escalated_once_with_the_real_phase(receiver):
    hook = _sender(receiver.url, min_severity="high")  # phases: start, end (the default)
    chat = _sender(receiver.url.replace("/hook", "/chat"), format="text", min_severity="high")
    try:
        for w in (hook, chat):
            w.on_live_message(_msg(0, severity="medium"))                                # below: nothing
            w.on_live_message(_msg(0, severity="high", phase="update", seq=1))           # raised: told as its start
            w.on_live_message(_msg(0, severity="critical", phase="update", seq=2))       # updates not asked for
            w.on_live_message(_msg(1, severity="high"))                                  # high from the start
            w.on_live_message(_msg(1, severity="critical", phase="update", seq=1))       # not told again
            w.on_live_message(_msg(0, severity="critical", phase="end", seq=3, end_ns=T0 + 9 * S))  # the end: asked for
            w.on_live_message(_msg(7, severity="high", phase="end", seq=4, end_ns=T0 + 9 * S))  # never seen start
        receiver.until(8)
        time.sleep(0.3)  # and nothing more comes
        reqs = list(receiver.requests)
    finally:
        hook.stop()
        chat.stop()
    import json

    bodies = [json.loads(b) for path, _h, b in reqs if path == "/hook"]
    assert [(b["event"]["id"], b["phase"], b["event"]["severity"], b["escalated"], b.get("escalated_from"))
            for b in bodies] == [("ev00000", "update", "high", True, "medium"), ("ev00001", "start", "high", False, None),
                                 ("ev00000", "end", "critical", False, None), ("ev00007", "end", "high", False, None)]
    texts = [json.loads(b)["text"] for path, _h, b in reqs if path == "/chat"]
    assert len(texts) == 4
    assert texts[0].startswith("[HIGH] fire (ESCALATED from MEDIUM) on cam-1") and "id ev00000" in texts[0]
    assert texts[1].startswith("[HIGH] fire (NEW) on cam-1") and texts[2].startswith("[CRITICAL] fire (ended)")
    assert hook.stats()["escalated"] == 1 and hook.stats()["delivered"] == 4


def test_webhook_escalation_leaves_snoozed_and_other_types_alone(receiver):
    w = _sender(receiver.url, types=["fire"], min_severity="high", phases=["start", "update"])
    snoozed = {"snoozed": {"by": "alice", "until_ns": T0 + 3600 * S, "note": "crane"}}
    try:
        w.on_live_message(_msg(0, severity="medium", attributes=snoozed))
        w.on_live_message(_msg(0, severity="critical", phase="update", seq=1, attributes=snoozed))  # snoozed: silent
        w.on_live_message(_msg(1, type="vessel_in_zone", severity="low"))
        w.on_live_message(_msg(1, type="vessel_in_zone", severity="high", phase="update", seq=1))   # not a fire
        w.on_live_message(_msg(2, severity="low"))
        w.on_live_message(_msg(2, severity="high", phase="update", seq=1))  # told, as an escalation
        w.on_live_message(_msg(2, severity="high", phase="update", seq=2))  # updates asked for: told, plainly
        got = receiver.until(2)
        time.sleep(0.3)
        got = receiver.bodies()
    finally:
        w.stop()
    assert [(b["event"]["id"], b["event"]["seq"], b["escalated"]) for b in got] == [("ev00002", 1, True),
                                                                                  ("ev00002", 2, False)]


# ---- e-mail -------------------------------------------------------------------------------------------------------
aiosmtpd = pytest.importorskip("aiosmtpd", reason="aiosmtpd (test extra) runs the SMTP server of these tests")
from test_email_alerts import MailServer, _config, _notifier, _parts  # noqa: E402


@pytest.fixture
def plain_server():
    s = MailServer()
    yield s
    s.stop()


def test_mail_escalation_goes_once_threaded_with_the_incident(plain_server):
    cfg = _config(plain_server.port, [
        {"name": "duty-officer", "to": ["duty@port.example"], "min_severity": "high"},   # start only (the default)
        {"name": "harbour", "to": ["harbour@port.example"], "min_severity": "medium"},
    ])
    n = _notifier(cfg)
    try:
        n.on_stored_event(make_event(0, severity="medium"))                            # harbour only
        n.on_stored_event(make_event(0, severity="high", phase="update", seq=1))       # duty: escalated
        n.on_stored_event(make_event(0, severity="critical", phase="update", seq=2))   # nobody
        n.on_stored_event(make_event(1, severity="high"))                              # both, at the start
        n.on_stored_event(make_event(1, severity="critical", phase="update", seq=1))   # nobody: told at its start
        n.on_stored_event(make_event(0, severity="critical", phase="end", seq=3, end_ns=T0 + 60 * S))  # nobody
        mails = plain_server.until(4)
        time.sleep(0.5)  # and nothing more comes
        mails = plain_server.until(99, timeout_s=0)
    finally:
        n.stop()
    got = [(rcpts[0], m["X-Seawatch-Event"]) for _f, rcpts, m, _tls in mails]
    assert got == [("harbour@port.example", "ev00000"), ("duty@port.example", "ev00000"),
                   ("duty@port.example", "ev00001"), ("harbour@port.example", "ev00001")]
    first, esc = mails[0][2], mails[1][2]
    assert first["Subject"].startswith("[Seawatch] MEDIUM fire at cam-1 ")
    assert esc["Subject"].startswith("[Seawatch] ESCALATED: HIGH fire at cam-1 ")
    # threads with the incident: the same root as the start mail the others got
    assert esc["In-Reply-To"] == esc["References"] == first["Message-ID"] == "<seawatch.ev00000@port.example>"
    text, html, _images = _parts(esc)
    assert "Incident: HIGH fire: ESCALATED from MEDIUM (update)" in text
    assert "ESCALATED: HIGH fire at cam-1" in html and "ESCALATED from MEDIUM (update)" in html
    assert mails[2][2]["Subject"].startswith("[Seawatch] HIGH fire at cam-1 ")  # a plain start: no mark
    assert [(r["name"], r["sent"]) for r in n.stats()["recipients"]] == [("duty-officer", 2), ("harbour", 2)]


def test_a_mail_escalation_held_by_the_rate_limit_keeps_its_mark(plain_server):
    now = [1000.0]
    cfg = _config(plain_server.port, [{"name": "duty", "to": ["duty@port.example"], "min_severity": "high",
                                       "max_per_minute": 1}])
    n = _notifier(cfg, clock=lambda: now[0])
    try:
        n.on_stored_event(make_event(0, severity="high"))                          # sent: the minute is full
        n.on_stored_event(make_event(1, severity="medium"))
        n.on_stored_event(make_event(1, severity="high", phase="update", seq=1))   # escalated, held
        plain_server.until(1)
        time.sleep(0.6)
        assert len(plain_server.until(99, timeout_s=0)) == 1 and n.stats()["held"] == 1
        now[0] += 61.0
        mails = plain_server.until(2)
    finally:
        n.stop()
    held = mails[1][2]
    assert held["X-Seawatch-Event"] == "ev00001" and held["Subject"].startswith("[Seawatch] ESCALATED: HIGH fire ")
    assert "ESCALATED from MEDIUM (update)" in _parts(held)[0]


def test_a_snoozed_incident_raised_later_is_never_mailed(plain_server):
    cfg = _config(plain_server.port, [{"name": "duty", "to": ["duty@port.example"], "min_severity": "high"}])
    snoozed = {"snoozed": {"by": "alice", "until_ns": T0 + 3600 * S, "note": "crane"}}
    ev = make_event(0, severity="medium", attributes=snoozed)
    n = _notifier(cfg)
    try:
        n.on_stored_event(ev)
        n.on_stored_event(replace(ev, severity="critical", phase="update", seq=1))
        n.on_stored_event(make_event(1, severity="high"))  # a marker: once it is here, the others would be too
        mails = plain_server.until(1)
        time.sleep(0.4)
        mails = plain_server.until(99, timeout_s=0)
    finally:
        n.stop()
    assert [m["X-Seawatch-Event"] for _f, _r, m, _t in mails] == ["ev00001"]
