"""Operator audit (night shift): the live feed drops (a network blip, the service restarting) and comes back a few
seconds later. Nothing sent meanwhile is sent again, and the operator page neither searched again nor alarmed: the
list stayed as it was until the next event or review happened to arrive (at a quiet site, for hours), and a fire that
started during the drop never sounded. Now the list is searched as soon as the feed is back, and the high or
critical incidents that came meanwhile sound the alarm (not a low one, not one someone dismissed meanwhile, not one
the page had listed before the drop)."""

from __future__ import annotations

import time

import pytest

from test_live_view import _settings, _ui


@pytest.mark.slow
def test_ui_back_after_the_live_feed_dropped_the_list_is_searched_and_missed_alarms_sound(tmp_path):
    from conftest import serve_in_thread
    from test_service_store import make_event
    from test_service_ui import _playwright, _wait

    from seawatch.service.app import create_app
    from seawatch.service.live import LiveHub

    live = LiveHub()
    app = create_app(_settings(tmp_path), live=live)
    with serve_in_thread(app) as port, _playwright() as p:
        store = app.state.store
        t0 = time.time_ns()
        browser, page, errors = _ui(p, port)
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        page.click("#status-bar")  # a click on the page: browsers allow sound from then on
        first = make_event(0, severity="high", source_id="quay", start_ns=t0, at_ns=t0)
        store.put(first)
        live.publish_event(first)
        _wait(page, "window.__alarms.length === 1 && document.querySelectorAll('#events tbody tr').length === 1", 5)

        page.evaluate("window.seawatch.state.ws.close()")  # the feed drops (the page tries again after 3 s)
        _wait(page, "document.getElementById('live').textContent === 'live: off'", 5)
        # meanwhile, stored and sent to nobody
        fire = make_event(1, severity="critical", type="fire", source_id="gate", start_ns=t0 + 10**9, at_ns=t0 + 10**9)
        store.put(fire)
        store.put(make_event(2, severity="low", type="smoke", source_id="gate", start_ns=t0 + 2 * 10**9, at_ns=t0 + 2 * 10**9))
        store.put(make_event(3, severity="high", source_id="quay", start_ns=t0 + 3 * 10**9, at_ns=t0 + 3 * 10**9))
        store.review("ev00003", "dismissed", by="ops", note="welding under permit")
        store.put(make_event(0, severity="high", phase="update", seq=1, source_id="quay", start_ns=t0, at_ns=t0 + 4 * 10**9))

        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 4", 5)  # searched at once
        _wait(page, "window.__alarms.length === 2", 5)
        page.wait_for_timeout(500)  # nothing more comes
        assert page.evaluate("window.__alarms") == [{"id": "ev00000", "severity": "high", "sound": True},
                                                    {"id": "ev00001", "severity": "critical", "sound": True}]
        assert not errors, errors
        browser.close()
