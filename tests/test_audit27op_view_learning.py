"""Operator audit (night shift): a fixed camera whose picture never holds still (the demo's quay camera, a close-up of
flames filling the frame) never learns its view reference, so it is never checked for a moved, covered or blurred
view; its row in the sources table said "learning its reference view" for the whole shift, as if the check were a
minute from starting. ``view_check`` now says since when it learns and how often the picture moved under it, and
the row says in red, after 5 minutes of it, that the camera is not being checked. A steady picture still learns as
before, and its row says nothing more."""

from __future__ import annotations

import time

import pytest

from test_view_check import PORT_STILL, HARBOUR_STILL, S, T0, _image

from seawatch.vision.view_check import ViewCheckConfig, ViewMonitor


def test_a_picture_that_never_holds_still_says_since_when_it_learns_and_how_often_it_moved(shared_media):
    a, b = _image(shared_media, PORT_STILL), _image(shared_media, HARBOUR_STILL)
    mon = ViewMonitor("quay", ViewCheckConfig(interval_s=5, reference_after_s=20))
    st = mon.status()
    assert st["state"] == "learning" and st["learning_since_ns"] is None and st["learning_restarts"] == 0
    for i in range(12):  # a minute of pictures that never register on each other
        mon.check(a if i % 2 == 0 else b, T0 + i * 5 * S)
    st = mon.status()
    assert st["state"] == "learning" and st["learning_since_ns"] == T0
    assert st["learning_restarts"] == 11  # each check after the first dropped the candidate
    for i in range(12, 20):  # the picture settles: learnt after reference_after_s
        mon.check(a, T0 + i * 5 * S)
    st = mon.status()
    assert st["state"] == "ok" and st["learning_since_ns"] is None and st["learning_restarts"] == 0
    mon.set_reference(None, "reset", T0 + 200 * S)  # an administrator's reset: learning again, counted afresh
    mon.check(b, T0 + 205 * S)
    st = mon.status()
    assert st["learning_since_ns"] == T0 + 205 * S and st["learning_restarts"] == 0


@pytest.mark.slow
def test_ui_a_camera_learning_for_long_with_a_moving_picture_is_said_not_checked(tmp_path):
    from conftest import serve_in_thread
    from test_live_view import KEY, _settings
    from test_service_ui import _playwright, _wait
    from test_live_view import _ui

    from seawatch.service.app import create_app
    from seawatch.service.live import LiveHub

    live = LiveHub()
    app = create_app(_settings(tmp_path), live=live)
    now_ns = time.time_ns()

    def sources(quay_vc, gate_vc):
        return [{"source_id": "quay", "kind": "camera", "state": "online", "view_check": quay_vc},
                {"source_id": "gate", "kind": "camera", "state": "online", "view_check": gate_vc}]

    learning = {"state": "learning", "learning": True, "raised": [], "pending": {}, "finding": None}
    with serve_in_thread(app) as port, _playwright() as p:
        browser, page, errors = _ui(p, port)
        assert KEY in page.url
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        # quay: learning for 28 min, its picture moved 300 times; gate: learning for 40 s (a normal start)
        live.publish({"kind": "sources", "sources": sources(
            dict(learning, learning_since_ns=now_ns - 28 * 60 * S, learning_restarts=300),
            dict(learning, learning_since_ns=now_ns - 40 * S, learning_restarts=0))})
        row = "document.querySelector('#sources tr[data-id=\"%s\"] .view-check')"
        _wait(page, f"{row % 'quay'} && {row % 'gate'}", 10)
        quay = page.text_content('#sources tr[data-id="quay"] .view-check')
        assert quay == (" · learning its reference view for 28 min: no steady picture yet (it moved 300 time(s)), "
                        "so not checked for a moved, covered or blurred view"), quay
        assert page.evaluate(f"{row % 'quay'}.classList.contains('error')")
        assert page.text_content('#sources tr[data-id="gate"] .view-check') == " · learning its reference view"
        assert not page.evaluate(f"{row % 'gate'}.classList.contains('error')")
        # a long learning with a steady picture (a long reference_after_s) is not flagged either
        live.publish({"kind": "sources", "sources": sources(
            dict(learning, learning_since_ns=now_ns - 20 * 60 * S, learning_restarts=0), {"state": "ok"})})
        _wait(page, f"{row % 'quay'}.textContent === ' · learning its reference view'", 10)
        assert not errors, errors
        browser.close()
