"""The operator page's sources table says when a camera's recording fails (GET /api/sources ``recording``, refreshed
over the live feed): "not recording for ...: why" in red while it fails, nothing once segments are written again.
Before, the failure was only in the service log (``tests/test_recording_health.py`` has the API side)."""

from __future__ import annotations

import shutil
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from test_service_serve import KEY, file_camera_service  # noqa: E402

pytestmark = pytest.mark.slow


def test_the_sources_table_shows_a_failing_recording_in_red_until_it_records_again(tmp_path):
    from conftest import serve_in_thread
    from test_service_ui import _browser, _playwright, _wait, open_page

    storage = {"data_dir": str(tmp_path / "data"), "recording": {"segment_s": 2.0}}
    with file_camera_service(tmp_path, seconds=2.0, storage=storage) as svc:
        with serve_in_thread(svc.app) as port, _playwright() as p:
            browser = _browser(p)
            page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}")
            row = '#sources tr[data-id="quay-1"]'
            page.wait_for_selector(row)
            _wait(page, f"(document.querySelector('{row}') || {{}}).textContent?.includes('frames')", 20)
            assert page.query_selector(f"{row} .recording-failing") is None  # recording: nothing said

            folder = svc.app.state.media_dir / "recordings" / "quay-1"
            shutil.move(str(folder), str(tmp_path / "moved-away"))  # the folder lost, a file in its place
            folder.write_text("not a folder any more")
            _wait(page, f"(document.querySelector('{row} .recording-failing.error') || {{}}).textContent?.includes('not recording')", 30)
            text = page.text_content(f"{row} .recording-failing.error")
            assert ": " in text and str(tmp_path) not in text, text  # why, without the path
            assert page.eval_on_selector(f"{row} .recording-failing", "e => getComputedStyle(e).color") == "rgb(176, 0, 32)"

            folder.unlink()  # usable again: the next complete segment ends the note
            _wait(page, f"!document.querySelector('{row} .recording-failing')", 30)
            assert not errors, errors
            browser.close()
