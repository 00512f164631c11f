"""The event detail of the operator UI in headless Chromium shows why the system raised the event (its
``attributes.reason``): an unidentified vessel's nearest AIS report and the gate it missed, or that it was held while
AIS was down and since when. The reason was in the API only; a reviewer saw "unidentified_vessel" and no why."""

from __future__ import annotations

import time
import warnings

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.store import EventStore  # noqa: E402
from test_service_store import make_event  # noqa: E402
from test_service_ui import KEY, _browser, _playwright, _wait, open_page, settings  # noqa: E402

WHY = ("no AIS match and no registry match; nearest AIS vessel MMSI 235084466 (VOS DOROTHEA) is 2066 m away (report 6 s "
       "old), outside the 500 m gate; seen since 2026-12-01T11:20:00Z while AIS was unavailable, held until AIS was back "
       "at 2026-12-01T11:25:00Z and checked against it since")


def test_ui_event_detail_says_why(tmp_path):
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    now_ns = time.time_ns()
    store.put(make_event(0, id="unident1", type="unidentified_vessel", severity="medium", source_id="harbour-cam",
                         labels=("vessel",), start_ns=now_ns, at_ns=now_ns,
                         attributes={"identity": "none", "reason": WHY, "held_since_ns": now_ns - 300 * 10**9}))
    store.put(make_event(1, id="fire1", type="fire", source_id="quay-cam", start_ns=now_ns - 10**9, at_ns=now_ns - 10**9))
    try:
        with serve_in_thread(create_app(settings(tmp_path), store=store)) as port, _playwright() as p:
            browser = _browser(p)
            page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}")
            page.wait_for_selector('#events tbody tr[data-id="unident1"]')
            page.click('#events tbody tr[data-id="unident1"]')
            _wait(page, "document.getElementById('d-title').textContent.startsWith('unidentified_vessel')", 10)
            assert page.text_content("#d-why") == "why: " + WHY
            assert page.is_visible("#d-why")
            page.click('#events tbody tr[data-id="fire1"]')  # an event without a reason: no stale why of the last one
            _wait(page, "document.getElementById('d-title').textContent.startsWith('fire')", 10)
            assert page.query_selector("#d-why") is None
            assert not errors, errors
            browser.close()
    finally:
        store.close()
