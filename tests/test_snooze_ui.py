"""Snoozing a camera's alerts in the operator UI and on the camera wall, in headless Chromium against a real service
(the API, its live feed, and the service's marking sink): an operator snoozes a camera from the sources table with a
duration and a note, sees "snoozed until ... by ...: note", its incident arrives marked, listed and stored but with no
alarm, no desktop notification and no red tile, another camera's incident still alarms; a viewer sees the state with
no control; "End snooze" ends it and the camera alarms again."""

from __future__ import annotations

import re
import time
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.snooze import SnoozingSink  # noqa: E402
from test_live_view import _FAKE_NOTIFICATIONS  # noqa: E402
from test_service_store import make_event  # noqa: E402
from test_service_ui import _browser, _playwright, _wait, open_page  # noqa: E402

OP_KEY = "snooze-ui-operator-0123456789"
VIEW_KEY = "snooze-ui-viewer-0123456789"
ROW = "document.querySelector('#sources tbody tr[data-id=\"%s\"]')"


def _settings(tmp_path):
    return load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "alice", "role": "operator", "key_sha256": hash_api_key(OP_KEY)},
                              {"name": "wall", "role": "viewer", "key_sha256": hash_api_key(VIEW_KEY)}]},
        "sources": [{"id": "quay", "url": "rtsp://cam/quay"}, {"id": "gate", "url": "rtsp://cam/gate"}]})


@pytest.mark.slow
def test_ui_snooze_a_camera_its_incidents_raise_no_alarm_then_end_it(tmp_path):
    cfg = _settings(tmp_path)
    app = create_app(cfg)
    with serve_in_thread(app) as port, _playwright() as p:
        # the service's own path for events: marked by the snoozes, stored, then published on the live feed
        sink = SnoozingSink(app.state.snoozes, app.state.store, cfg.storage.resolved_media_dir(),
                            [app.state.live.publish_event])
        browser = _browser(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        # desktop notifications allowed and on (a stand-in Notification records them), the tab not looked at
        ctx.add_init_script("localStorage.setItem('test-permission', 'granted'); "
                            "localStorage.setItem('seawatch-notify', 'on');" + _FAKE_NOTIFICATIONS)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/#key={OP_KEY}")
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        page.click("#status-bar")  # a click on the page: browsers allow sound from then on
        _wait(page, "window.seawatch.alarm.ctx && window.seawatch.alarm.ctx.state === 'running'", 5)
        _wait(page, f"{ROW % 'quay'} && {ROW % 'quay'}.querySelector('.snooze-act')", 10)
        assert page.text_content('#sources tr[data-id="quay"] .snooze-act') == "Snooze"
        assert page.is_hidden("#snooze-box")

        # ---- snooze quay for 2 h: the note is required
        page.click('#sources tr[data-id="quay"] .snooze-act')
        assert page.is_visible("#snooze-box") and "quay" in page.text_content("#sz-title")
        page.select_option("#sz-len", "120")
        page.click("#sz-go")
        assert "note" in page.text_content("#sz-msg") and page.is_visible("#snooze-box")
        assert app.state.snoozes.get("quay") is None  # nothing sent
        page.fill("#sz-note", "crane maintenance")
        page.click("#sz-go")
        _wait(page, "document.getElementById('snooze-box').hidden", 5)
        sn = app.state.snoozes.get("quay")
        assert sn is not None and sn.by == "key:alice" and sn.note == "crane maintenance"
        assert abs(sn.until_ns - sn.since_ns - 120 * 60 * 10**9) < 2 * 10**9
        _wait(page, f"{ROW % 'quay'}.querySelector('.snooze-state')", 5)
        until = time.strftime("%H:%M", time.gmtime(sn.until_ns / 1e9))
        state = page.text_content('#sources tr[data-id="quay"] .snooze-state')
        assert state == f" · snoozed until {until} UTC by key:alice: crane maintenance", state
        assert page.text_content('#sources tr[data-id="quay"] .snooze-act') == "End snooze"
        assert page.evaluate(f"{ROW % 'gate'}.querySelector('.snooze-state')") is None

        # ---- a viewer sees it, with no control
        viewer, verrors = open_page(browser, f"http://127.0.0.1:{port}/#key={VIEW_KEY}")
        _wait(viewer, f"{ROW % 'quay'} && {ROW % 'quay'}.querySelector('.snooze-state')", 10)
        assert "crane maintenance" in viewer.text_content('#sources tr[data-id="quay"] .snooze-state')
        assert viewer.evaluate("document.querySelectorAll('#sources .snooze-act').length") == 0
        # ---- the wall: the snoozed camera's incident leaves its tile calm, another camera's turns red
        wall, werrors = open_page(browser, f"http://127.0.0.1:{port}/wall#key={VIEW_KEY}")
        tile = "document.querySelector('#wall .tile[data-id=\"%s\"]')"
        _wait(wall, f"{tile % 'quay'} && {tile % 'gate'}", 10)
        _wait(wall, f"{tile % 'quay'}.querySelector('.state').textContent.includes('alerts snoozed until {until}')", 10)

        # ---- incidents arrive: quay's is stored and listed, marked, with no alarm and no notification; gate's alarms
        page.evaluate("window.__focused = false")  # the operator looks at another window
        sink.emit(make_event(0, severity="critical", type="no_hard_hat", source_id="quay", clip=None))
        sink.emit(make_event(1, severity="high", type="fire_lane_blocked", source_id="gate", clip=None))
        _wait(page, "window.__alarms.length >= 1", 5)
        # listed, beside the snooze's own record (a source_snoozed incident of the camera)
        _wait(page, "document.querySelector('#events tr[data-id=\"ev00000\"]') && "
                    "document.querySelector('#events tr[data-id=\"ev00001\"]')", 5)
        assert page.evaluate(f"[...document.querySelectorAll('#events tbody tr')].some(tr => tr.dataset.id === '{sn.id}')")
        time.sleep(0.5)  # nothing more comes
        assert page.evaluate("window.__alarms.map(a => a.id)") == ["ev00001"]
        assert page.evaluate("window.__notes.map(n => n.opts.tag)") == ["ev00001"]
        assert app.state.store.get("ev00000").attributes["snoozed"]["note"] == "crane maintenance"
        assert page.evaluate("document.querySelector('#events tr[data-id=\"ev00000\"]').classList.contains('snoozed')")
        assert page.text_content('#events tr[data-id="ev00000"] .snoozed-tag') == "snoozed"
        assert page.evaluate("document.querySelector('#events tr[data-id=\"ev00001\"] .snoozed-tag')") is None
        page.click('#events tr[data-id="ev00000"]')
        _wait(page, "document.getElementById('d-snoozed')", 5)
        assert re.fullmatch(rf"no alarm: snoozed until {until} UTC by key:alice: crane maintenance",
                            page.text_content("#d-snoozed")), page.text_content("#d-snoozed")
        _wait(wall, f"{tile % 'gate'}.classList.contains('incident')", 10)
        assert not wall.evaluate(f"{tile % 'quay'}.classList.contains('incident')")

        # ---- end it early, with a note: the camera's next incident alarms again
        page.click('#sources tr[data-id="quay"] .snooze-act')
        assert page.is_hidden("#sz-len-bar") and page.text_content("#sz-go") == "End snooze"
        page.fill("#sz-note", "crane back in service")
        page.click("#sz-go")
        _wait(page, "document.getElementById('snooze-box').hidden", 5)
        assert app.state.snoozes.get("quay") is None
        rec = app.state.store.get(sn.id)
        assert rec.attributes["end_reason"] == "ended early" and rec.attributes["end_note"] == "crane back in service"
        _wait(page, f"!{ROW % 'quay'}.querySelector('.snooze-state')", 5)
        assert page.text_content('#sources tr[data-id="quay"] .snooze-act') == "Snooze"
        sink.emit(make_event(2, severity="high", type="no_hard_hat", source_id="quay", clip=None))
        _wait(page, "window.__alarms.length === 2", 5)
        assert page.evaluate("window.__alarms[1].id") == "ev00002"
        _wait(wall, f"{tile % 'quay'}.classList.contains('incident')", 10)
        assert not errors and not verrors and not werrors, (errors, verrors, werrors)
        sink.close()
        browser.close()
