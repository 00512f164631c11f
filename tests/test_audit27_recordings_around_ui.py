"""An event's "Recordings around" in headless Chromium opens a window of the camera's recording that holds the event:
from 2 minutes before its start, or, for a window shorter than 4 minutes (the 1-minute one), from half the window
before it. With "1 min" chosen (the length is kept from the last window shown) it opened 14:33:46-14:34:46 for a lane
blockage that started at 14:35:46: video of the minute before the minute before, the event not in it."""

from __future__ import annotations

import time
import warnings
from datetime import datetime, timezone

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.store import EventStore  # noqa: E402
from test_service_store import make_event  # noqa: E402
from test_service_ui import KEY, _browser, _playwright, _wait, open_page, settings  # noqa: E402

S = 1_000_000_000


@pytest.mark.parametrize("len_s, lead_s", [(60, 30), (300, 120), (900, 120), (1800, 120)])
def test_recordings_around_an_event_hold_the_event(tmp_path, len_s, lead_s):
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    start_ns = (time.time_ns() // S - 600) * S + 250_000_000  # ten minutes ago, not on a whole second
    store.put(make_event(0, id="lane1", type="fire_lane_blocked", source_id="yard-cam", start_ns=start_ns,
                         at_ns=start_ns))
    try:
        with serve_in_thread(create_app(settings(tmp_path), store=store)) as port, _playwright() as p:
            browser = _browser(p)
            page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}")
            page.wait_for_selector('#events tbody tr[data-id="lane1"]')
            page.evaluate(f"document.getElementById('rec-len').value = '{len_s}'")  # the length last chosen
            page.click('#events tbody tr[data-id="lane1"]')
            _wait(page, "document.getElementById('detail').dataset.id === 'lane1'", 10)
            page.evaluate("document.getElementById('d-recordings').click()")
            _wait(page, "!document.getElementById('recordings').hidden", 10)
            shown = page.evaluate("[document.getElementById('rec-from').value, document.getElementById('rec-len').value]")
            # a browser writes a time input's hh:mm:00 as "hh:mm" (1 run in 60 lands on the whole minute)
            fmt = "%Y-%m-%dT%H:%M:%S" if shown[0].count(":") == 2 else "%Y-%m-%dT%H:%M"
            from_ns = int(datetime.strptime(shown[0], fmt).replace(tzinfo=timezone.utc).timestamp()) * S
            assert shown[1] == str(len_s)
            assert from_ns == (start_ns // S - lead_s) * S, (shown, start_ns)
            assert from_ns < start_ns < from_ns + len_s * S  # the event is in the window
            assert not errors, errors
            browser.close()
    finally:
        store.close()
