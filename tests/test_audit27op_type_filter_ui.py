"""Operator audit (night shift): every incident type the service raises can be chosen in the operator page's type
filter. The record of a camera snooze (``source_snoozed``: who silenced which camera, until when, why) is "searched
like any incident" (service/README.md) but was missing from the filter, so the shift could not list tonight's snoozes
there. The service's own incident types are checked to be offered too."""

from __future__ import annotations

import pytest

from test_snooze_ui import OP_KEY, _settings


@pytest.mark.slow
def test_ui_type_filter_offers_the_snooze_record_and_finds_it(tmp_path):
    from conftest import serve_in_thread
    from test_service_store import make_event
    from test_service_ui import _browser, _playwright, _wait, open_page

    from seawatch.service.app import create_app
    from seawatch.service.snooze import SNOOZE_TYPE

    app = create_app(_settings(tmp_path))
    with serve_in_thread(app) as port, _playwright() as p:
        app.state.store.put(make_event(0, type="fire_lane_blocked", source_id="gate"))
        app.state.store.put(make_event(1, type=SNOOZE_TYPE, severity="low", source_id="quay", clip=None,
                                       attributes={"by": "key:alice", "note": "crane maintenance"}))
        browser = _browser(p)
        page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={OP_KEY}")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 2", 10)
        offered = page.evaluate("[...document.querySelectorAll('#filters select[name=type] option')].map(o => o.value)")
        for t in (SNOOZE_TYPE, "source_offline", "camera_moved", "ais_feed_down", "drone_link_lost", "storage_low",
                  "manual_report"):
            assert t in offered, (t, offered)
        page.select_option("#filters select[name=type]", SNOOZE_TYPE)
        page.click("#filters button:has-text('Search')")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 1", 5)
        assert page.get_attribute("#events tbody tr", "data-id") == "ev00001"
        assert not errors, errors
        browser.close()
