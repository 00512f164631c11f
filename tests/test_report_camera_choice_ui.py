"""The report page's camera choice over the real service (a camera, a simulated drone, an AIS log): it offers the
cameras, not every entry of /api/sources (the drone has its own choice, the AIS feeds raise no camera's incidents; the
demo's report offered "patrol-1" and "ais" as cameras, each a report of nothing)."""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message=".*httpx.*")

import test_service_ui  # noqa: E402
from test_service_ui import KEY, _browser, _playwright, _wait, open_page  # noqa: E402

live_service = test_service_ui.live_service  # the fixture: the real service with a camera, a drone, an AIS log

OPTIONS = "[...document.querySelectorAll('#{} option')].map(o => o.value)"


def test_report_camera_choice_lists_cameras_only(live_service):
    _, _, base = live_service
    with _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"{base}/report#key={KEY}")
        _wait(page, "!document.getElementById('main').hidden && window.seawatchReport.state.report !== null")
        listed = page.evaluate("fetch('api/sources', {headers: {'X-API-Key': %r}}).then(r => r.json())"
                               ".then(l => l.map(s => [s.source_id, s.kind]))" % KEY)
        kinds = dict(listed)
        assert kinds.get("patrol-1") == "drone" and kinds.get("ais") == "ais", kinds  # what the page is given
        assert page.evaluate(OPTIONS.format("source")) == ["", "quay-cam"]
        assert "patrol-1" in page.evaluate(OPTIONS.format("drone"))
        assert not errors, errors
        browser.close()
