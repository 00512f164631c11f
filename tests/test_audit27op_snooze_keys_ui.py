"""Operator audit (night shift): the sources table's snooze form works from the keyboard like the page's other forms.
Enter in its note (or its custom minutes) sends it, and Esc cancels it. Before, the form was a plain box: Enter did
nothing and Esc left it open, so an operator who typed "crane maintenance" and pressed Enter had snoozed nothing."""

from __future__ import annotations

import pytest

from test_snooze_ui import OP_KEY, ROW, _settings


@pytest.mark.slow
def test_ui_snooze_form_enter_sends_it_and_escape_cancels_it(tmp_path):
    from conftest import serve_in_thread
    from test_service_ui import _browser, _playwright, _wait, open_page

    from seawatch.service.app import create_app

    app = create_app(_settings(tmp_path))
    with serve_in_thread(app) as port, _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={OP_KEY}")
        _wait(page, f"{ROW % 'quay'} && {ROW % 'quay'}.querySelector('.snooze-act')", 10)

        # Esc cancels: the form closes, nothing is sent
        page.click('#sources tr[data-id="quay"] .snooze-act')
        assert page.is_visible("#snooze-box")
        page.fill("#sz-note", "lens cleaning")
        page.keyboard.press("Escape")
        _wait(page, "document.getElementById('snooze-box').hidden", 5)
        assert app.state.snoozes.get("quay") is None

        # Enter without a note: refused as the button refuses it, the form stays
        page.click('#sources tr[data-id="quay"] .snooze-act')
        page.press("#sz-note", "Enter")
        _wait(page, "document.getElementById('sz-msg').textContent.includes('note')", 5)
        assert page.is_visible("#snooze-box") and app.state.snoozes.get("quay") is None

        # Enter in the custom minutes, with the note typed: sent
        page.select_option("#sz-len", "custom")
        page.fill("#sz-min", "45")
        page.fill("#sz-note", "crane maintenance")
        page.press("#sz-min", "Enter")
        _wait(page, "document.getElementById('snooze-box').hidden", 5)
        sn = app.state.snoozes.get("quay")
        assert sn is not None and sn.note == "crane maintenance"
        assert abs(sn.until_ns - sn.since_ns - 45 * 60 * 10**9) < 2 * 10**9

        # ending it: Enter in its (optional) note ends it
        _wait(page, f"{ROW % 'quay'}.querySelector('.snooze-act').textContent === 'End snooze'", 10)
        page.click('#sources tr[data-id="quay"] .snooze-act')
        page.fill("#sz-note", "done early")
        page.press("#sz-note", "Enter")
        _wait(page, "document.getElementById('snooze-box').hidden", 5)
        assert app.state.snoozes.get("quay") is None
        assert not errors, errors
        browser.close()
