"""Operator audit (night shift, the demo under load): a camera that dropped for a few seconds and came back kept its
reader's last error in the sources table as if it were failing now ("online ... · source drone-cam: read failed: no
data for 3 s (read timeout); retry in 0.5 s"). The reader keeps ``last_error`` after it is back (the API's record of
what happened); the row now says it is past ("back 42 s ago; its last error before: ..."), and an offline camera's
error still reads as the current one."""

from __future__ import annotations

import re
import time

import pytest

from test_live_view import _settings, _ui

S = 1_000_000_000
ERR = "source quay: read failed: no data for 3 s (read timeout); retry in 0.5 s"


@pytest.mark.slow
def test_ui_an_online_camera_s_last_error_reads_as_past(tmp_path):
    from conftest import serve_in_thread
    from test_service_ui import _playwright, _wait

    from seawatch.service.app import create_app
    from seawatch.service.live import LiveHub

    live = LiveHub()
    app = create_app(_settings(tmp_path), live=live)
    with serve_in_thread(app) as port, _playwright() as p:
        browser, page, errors = _ui(p, port)
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        now_ns = time.time_ns()
        live.publish({"kind": "sources", "sources": [
            {"source_id": "quay", "kind": "camera", "state": "online", "since_ns": now_ns - 42 * S, "last_error": ERR,
             "frames_decoded": 900},
            {"source_id": "gate", "kind": "camera", "state": "offline", "since_ns": now_ns - 70 * S, "last_error": ERR,
             "down_since_ns": now_ns - 70 * S, "attempts": 12, "frames_decoded": 10}]})
        cell = "document.querySelector('#sources tr[data-id=\"%s\"] td:last-child').textContent"
        _wait(page, f"{cell % 'quay'}.startsWith('900 frames')", 10)
        quay = page.evaluate(cell % "quay")
        assert re.match(r"900 frames · back 4[2-4] s ago; its last error before: " + re.escape(ERR), quay), quay
        gate = page.evaluate(cell % "gate")
        assert re.match(r"down for 7[0-2] s, 12 attempt\(s\) · 10 frames · " + re.escape(ERR), gate), gate
        assert not errors, errors
        browser.close()
