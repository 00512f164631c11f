"""Operator audit (night shift): an open incident whose severity the rules raise (a fire that spreads: medium at its
start, high, then critical as it grows; ``vision/rules.py`` only ever raises it) sets off the operator page's alarm
when its update reaches high or critical, once per level, as the camera wall frames it red. Before, only a start
phase alarmed, so a fire that began small stayed silent however far it spread.
Not for: an update at the level already alarmed, one of an incident this page never saw lower (open before the page
was loaded and first seen at that level now), one an operator dismissed meanwhile."""

from __future__ import annotations

import time

import pytest

from test_live_view import _settings, _ui


@pytest.mark.slow
def test_ui_alarm_sounds_when_an_open_incident_is_raised_to_high_or_critical(tmp_path):
    from conftest import serve_in_thread
    from test_service_store import make_event
    from test_service_ui import _playwright, _wait

    from seawatch.service.app import create_app
    from seawatch.service.live import LiveHub

    live = LiveHub()
    app = create_app(_settings(tmp_path), live=live)
    with serve_in_thread(app) as port, _playwright() as p:
        # two smoke incidents open before the page was loaded, listed at medium; one dismissed by someone
        app.state.store.put(make_event(7, severity="medium", type="smoke", source_id="gate"))
        app.state.store.put(make_event(8, severity="medium", type="smoke", source_id="gate"))
        app.state.store.review("ev00008", "dismissed", by="wall", by_kind="key", note="steam from the ferry")
        browser, page, errors = _ui(p, port)
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 2", 10)
        page.click("#status-bar")  # a click on the page: browsers allow sound from then on

        def update(i, severity, seq, **kw):
            live.publish_event(make_event(i, severity=severity, phase="update", seq=seq, source_id="quay", **kw))

        live.publish_event(make_event(0, severity="medium", source_id="quay"))  # a small fire: no alarm
        update(0, "medium", 1)
        update(0, "high", 2)  # it spreads: an alarm
        _wait(page, "window.__alarms.length === 1", 5)
        update(0, "high", 3)  # still high: nothing more
        update(0, "critical", 4)  # critical: two tones
        _wait(page, "window.__alarms.length === 2", 5)
        update(0, "critical", 5)
        update(9, "critical", 1)  # first seen now (open before this page was loaded): not new to anybody
        update(8, "high", 1, type="smoke")  # dismissed before it grew: the operator called it nothing
        update(7, "high", 1, type="smoke")  # listed at medium when the page loaded, now high: an alarm
        _wait(page, "window.__alarms.length === 3", 5)
        time.sleep(0.7)  # nothing more comes
        assert page.evaluate("window.__alarms") == [
            {"id": "ev00000", "severity": "high", "sound": True},
            {"id": "ev00000", "severity": "critical", "sound": True},
            {"id": "ev00007", "severity": "high", "sound": True}]
        # an ended incident's next start (a new incident reusing nothing) alarms as before
        live.publish_event(make_event(0, severity="critical", phase="end", seq=6, source_id="quay", end_ns=make_event(0).start_ns + 10**10))
        live.publish_event(make_event(3, severity="high", source_id="quay"))
        _wait(page, "window.__alarms.length === 4", 5)
        assert page.evaluate("window.__alarms[3].id") == "ev00003"
        assert not errors, errors
        browser.close()
