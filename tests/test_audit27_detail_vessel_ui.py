"""The event detail of the operator UI in headless Chromium names the vessel the way the search finds it: its name
(``vessel_name``, else the AIS name), MMSI and hull text, the store's identity columns (``identity_columns``), which
the CSV export and the report show too. The detail showed ``vessel_name`` only: in the demo a reviewer searching
MMSI 244014164 found the drone camera's boat (identified from AIS, no name broadcast), opened it and read no MMSI
anywhere; an ``ais_dark`` event (its name as ``ais_name``) showed no name though a name search finds it."""

from __future__ import annotations

import time
import warnings

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.store import EventStore  # noqa: E402
from test_service_store import make_event  # noqa: E402
from test_service_ui import KEY, _browser, _playwright, _wait, open_page, settings  # noqa: E402


def test_ui_event_detail_names_the_vessel_as_searched(tmp_path):
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    now_ns = time.time_ns()
    events = {  # id: (attributes, what the detail's meta line ends with)
        "aisonly": ({"identity": "ais_only", "mmsi": 244014164, "vessel_name": None, "ais_name": None},
                    ", vessel MMSI 244014164"),
        "dark": ({"mmsi": 244820279, "ais_name": "GERO-B"}, ", vessel GERO-B, MMSI 244820279"),
        "hull": ({"identity": "registry", "vessel_name": "ZEEMEEUW", "hull_text": "UK 12", "mmsi": None},
                 ", vessel ZEEMEEUW, hull text UK 12"),
        "nameonly": ({"vessel_name": "ZWALUW"}, ", vessel ZWALUW"),
    }
    for i, (eid, (attrs, _)) in enumerate(events.items()):
        store.put(make_event(i, id=eid, type="vessel_in_zone", severity="medium", source_id="harbour-cam",
                             labels=("vessel",), start_ns=now_ns - i * 10**9, at_ns=now_ns - i * 10**9, attributes=attrs))
    store.put(make_event(9, id="fire1", type="fire", source_id="quay-cam", start_ns=now_ns - 20 * 10**9,
                         at_ns=now_ns - 20 * 10**9))
    try:
        with serve_in_thread(create_app(settings(tmp_path), store=store)) as port, _playwright() as p:
            browser = _browser(p)
            page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}")
            page.wait_for_selector('#events tbody tr[data-id="fire1"]')
            for eid, (_, tail) in events.items():
                page.click(f'#events tbody tr[data-id="{eid}"]')
                _wait(page, f"document.getElementById('detail').dataset.id === '{eid}' && "
                            "document.getElementById('d-meta').textContent.includes('status: new')", 10)
                meta = page.text_content("#d-meta")
                assert meta.endswith(tail), (eid, meta)
            page.click('#events tbody tr[data-id="fire1"]')  # no vessel: nothing about one, nothing left from the last
            _wait(page, "document.getElementById('d-title').textContent.startsWith('fire')", 10)
            assert "vessel" not in page.text_content("#d-meta") and "MMSI" not in page.text_content("#d-meta")
            assert not errors, errors
            browser.close()
    finally:
        store.close()
