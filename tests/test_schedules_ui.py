"""The operator UI in headless Chromium says when a camera's scheduled rules are armed: its row in the sources table
reads e.g. "no_hard_hat in hard-hat-area armed every day 09:00-10:00 Europe/Amsterdam (now off, arms 09:00)", a
rule that is on says when it disarms, and rules with no schedule (armed 24/7) add nothing."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from test_service_ui import _browser, _playwright, _wait, open_page  # noqa: E402

KEY = "schedules-ui-key-0123456789abcdef"
ROW = "document.querySelector('#sources tr[data-id=\"yard-cam\"]')"


def test_ui_sources_row_says_when_scheduled_rules_are_armed(tmp_path):
    now = datetime.now(ZoneInfo("Europe/Amsterdam"))
    hm = lambda hours: (now + timedelta(hours=hours)).strftime("%H:%M")  # noqa: E731
    off_from, off_to, on_to = hm(2), hm(3), hm(1)
    on_from = hm(-1)
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "wall", "role": "viewer", "key_sha256": hash_api_key(KEY)}]},
        "site": {"timezone": "Europe/Amsterdam"},
        "sources": [{"id": "yard-cam", "url": "yard.mp4"}],
        "zones": [
            {"id": "hard-hat-area", "source": "yard-cam", "polygon_px": [[0, 0], [100, 0], [100, 100], [0, 100]],
             "rules": [{"type": "no_hard_hat", "schedule": [{"from": off_from, "to": off_to}]}, {"type": "fire_smoke"}]},
            {"id": "yard", "source": "yard-cam",
             "rules": [{"type": "vessel_in_zone", "schedule": [{"from": on_from, "to": on_to}]}]}]})
    with serve_in_thread(create_app(cfg)) as port, _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}")
        _wait(page, f"{ROW} && {ROW}.cells[3].textContent.includes('armed')", 20)
        details = page.evaluate(f"{ROW}.cells[3].textContent")
        assert (f"no_hard_hat in hard-hat-area armed every day {off_from}-{off_to} Europe/Amsterdam "
                f"(now off, arms {off_from})") in details, details
        assert (f"vessel_in_zone in yard armed every day {on_from}-{on_to} Europe/Amsterdam "
                f"(now on, disarms {on_to})") in details, details
        assert "fire_smoke" not in details  # armed 24/7: nothing to say
        assert not errors, errors
        browser.close()
