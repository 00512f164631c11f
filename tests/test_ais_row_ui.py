"""The sources table's AIS row in headless Chromium over the real service, while its two TCP feeds are down (one
silent, one never connected): the row's state reads ``down`` (in red), and each feed says its state and for how
long, the reason only where it adds something (not "silent for 8 s: silent since 2026-12-01T11:49:12Z", a UTC time
beside the times of the display zone)."""

from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import free_port, serve_in_thread  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from test_ais_feed_down import NmeaServer, _position_line  # noqa: E402
from test_pipeline_identity import BOAT_A, MMSI_A  # noqa: E402
from test_service_ui import _browser, _playwright, _wait, open_page  # noqa: E402

pytest.importorskip("pyais")

KEY = "ais-row-ui-key-0123456789abcdef"
ROW = "document.querySelector('#sources tr[data-id=\"ais\"]')"


@pytest.mark.slow
def test_ui_ais_row_while_every_feed_is_down(tmp_path):
    from seawatch.service.runner import Service

    server = NmeaServer([_position_line(MMSI_A, BOAT_A)])
    dead = f"tcp://127.0.0.1:{free_port()}"
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "ops", "role": "viewer", "key_sha256": hash_api_key(KEY)}]},
        "ais": [server.url, dead], "identity": {"ais_down_after_s": 1.0, "ocr": {"enabled": False}}})
    svc = Service(cfg).start()
    try:
        with serve_in_thread(svc.app) as port, _playwright() as p:
            browser = _browser(p)
            page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}")
            _wait(page, f"{ROW} && {ROW}.cells[3].textContent.includes('{dead} down for')", 20)
            assert page.evaluate(f"{ROW}.cells[2].textContent") == "running"  # one feed heard
            server.sending.clear()
            _wait(page, f"{ROW}.cells[2].textContent === 'down'", 20)  # the sources refresh every few seconds
            assert page.evaluate(f"{ROW}.cells[2].className") == "st-down"
            assert page.evaluate(f"getComputedStyle({ROW}.cells[2]).color") == "rgb(176, 0, 32)"
            details = page.evaluate(f"{ROW}.cells[3].textContent")
            assert f"{server.url} silent for " in details and "silent since" not in details, details
            assert f"{dead} down for " in details and "never connected" in details, details  # that reason says why
            assert not errors, errors
            browser.close()
    finally:
        svc.stop()
        server.close()
