"""The operator page's sources table says when a fixed camera's view check finds its view moved (GET /api/sources
``view_check``, refreshed over the live feed): red, with the finding, while the incident is open, and nothing once
the view matches its reference again. Before, the state was only in the incident list."""

from __future__ import annotations

import re
import warnings

import cv2
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from test_view_check import KEY, PORT_STILL, _image, _settings, _write_turning_clip, turned  # noqa: E402

pytestmark = pytest.mark.slow


def test_the_sources_table_shows_a_moved_view_while_it_is_moved(tmp_path, shared_media):
    from conftest import serve_in_thread
    from seawatch.service.runner import Service
    from test_service_serve import FireEverywhere
    from test_service_ui import _browser, _playwright, _wait, open_page

    img = cv2.resize(_image(shared_media, PORT_STILL), (960, 540), interpolation=cv2.INTER_AREA)
    clip = _write_turning_clip(tmp_path / "quay.mp4", img, turned(img, pan_deg=2.0), before_s=4, after_s=10)
    cfg = _settings(tmp_path, url=clip, w=960, h=540, view={"interval_s": 0.5, "raise_after_s": 1.5,
                                                            "clear_after_s": 1.5, "reference_after_s": 1.0})
    cfg = cfg.model_copy(update={"sources": cfg.sources[:1], "drones": ()})
    svc = Service(cfg, detectors={"stub": FireEverywhere()}).start()
    try:
        with serve_in_thread(svc.app) as port, _playwright() as p:
            browser = _browser(p)
            page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}")
            row = '#sources tr[data-id="quay-1"]'
            page.wait_for_selector(row)
            # turned 2 deg after 4 s, raised 1.5 s later: the row says so in red, with the pan it turned
            _wait(page, f"(document.querySelector('{row} .view-check.error') || {{}}).textContent?.includes('view moved: moved by')", 40)
            text = page.text_content(f"{row} .view-check.error")
            pan = re.search(r"pan \+(\d+\.\d+) deg", text)
            assert pan and 1.8 < float(pan.group(1)) < 2.3, text
            # the file starts again where it was: the incident ends and the note goes
            _wait(page, f"!document.querySelector('{row} .view-check.error')", 40)
            assert not errors, errors
            browser.close()
    finally:
        svc.stop()
