"""The calibration page's "Apply to the running service" and "Revert to the configured calibration" in headless
Chromium against a real service (the API behind uvicorn, its store in a temporary folder, the pipeline's hook
recorded).

The camera runs with a pose 3 degrees off in pan (test_calibrate_ui's). An administrator fits six marked points and
applies the fit with a note (a second click confirms): the hook gets the fitted calibration, the service stores it,
the page says it is in force (by whom, the note shown as text, never markup) and the map's camera turns to the fitted
pan; after a reload the page still says so; a viewer sees it but has no buttons; "Revert" (confirmed the same way)
hands the configured calibration back and the page says the configured one is in force, with the reverted one in the
history."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import serve_in_thread
from seawatch.service.app import create_app
from seawatch.service.auth import hash_api_key
from seawatch.service.config import load_config
from test_calibrate_ui import ADMIN_KEY, CAM, H, SOURCE, TRUE, VIEWER_KEY, W, _marks
from test_service_ui import _browser, _playwright, _wait, open_page

HOSTILE_NOTE = 'mast re-aimed <img src=x id="pwn"> after the storm'
IN_FORCE = "window.seawatchCalibration.state.inForce"


@pytest.fixture
def apply_app(tmp_path):
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "sources": [SOURCE],
        "auth": {"api_keys": [{"name": "installer", "role": "admin", "key_sha256": hash_api_key(ADMIN_KEY)},
                              {"name": "wall", "role": "viewer", "key_sha256": hash_api_key(VIEWER_KEY)}]}})
    picture = np.full((H, W, 3), 90, np.uint8)
    calls: list = []
    app = create_app(cfg, latest_frame=lambda sid: (1_900_000_000_000_000_000, picture, None),
                     apply_calibration=lambda sid, cal: calls.append((sid, cal)))
    with serve_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}", calls


def _kept_marks() -> str:
    """What the page keeps in localStorage for the camera: the six points, two horizon pixels, the camera."""
    marks, horizon = _marks()
    return json.dumps({"points": [{"x_px": x, "y_px": y, "lat_deg": lat, "lon_deg": lon, "alt_m": None, "name": f"p{i}"}
                                  for i, ((x, y), (lat, lon)) in enumerate(marks)],
                       "horizon": [list(h) for h in horizon],
                       "camera": {"lat": str(CAM[0]), "lon": str(CAM[1]), "alt": str(CAM[2]), "surface": "0", "hfov": "60",
                                  "fitHfov": True, "fitPosition": False}})


def _get(base, key=ADMIN_KEY):
    import urllib.request

    req = urllib.request.Request(f"{base}/api/sources/quay-west/calibration", headers={"X-API-Key": key})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_an_administrator_applies_a_fit_and_reverts_it_in_the_browser(apply_app):
    base, calls = apply_app
    with _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"{base}/calibrate#key={ADMIN_KEY}", width=1500, height=1000)
        _wait(page, f"{IN_FORCE} && {IN_FORCE}.origin === 'config'")
        assert "In force: the configured calibration (pan 121.00°" in page.text_content("#in-force-text")
        assert page.is_hidden("#revert") and page.is_hidden("#history") and page.is_hidden("#apply-box")
        page.evaluate(f"localStorage.setItem('seawatch-calibration-quay-west', {json.dumps(_kept_marks())})")
        page.reload()
        _wait(page, "window.seawatchCalibration.state.points.length === 6 && window.seawatchCalibration.state.size !== null")
        page.click("#fit")
        page.wait_for_selector("#apply-box", state="visible", timeout=30000)
        fitted = page.evaluate("window.seawatchCalibration.state.result.calibration")
        assert abs(fitted["surveyed"]["pan_deg"] - TRUE["pan"]) < 0.3
        page.fill("#apply-note", HOSTILE_NOTE)
        page.click("#apply")
        assert page.text_content("#apply") == "click again to apply it now" and calls == []  # one click does nothing
        page.click("#apply")
        _wait(page, f"{IN_FORCE}.origin === 'operator'")
        # the running service got it, and the store has it
        assert [c[0] for c in calls] == ["quay-west"]
        assert calls[0][1].surveyed.pan_deg == fitted["surveyed"]["pan_deg"]
        got = _get(base, VIEWER_KEY)
        assert got["origin"] == "operator" and got["note"] == HOSTILE_NOTE and got["applied_by"] == "key:installer"
        assert got["fit"]["points"] == 6 and got["fit"]["median_left_out_ground_error_m"] is not None
        assert got["fit"]["median_current_ground_error_m"] > got["fit"]["median_ground_error_m"]
        # the page says so (once the sources asked again are in: the state is set before); the note is text, not markup
        _wait(page, "document.getElementById('in-force-text').textContent.includes('applied by key:installer')")
        text = page.text_content("#in-force-text")
        assert "applied by key:installer" in text and HOSTILE_NOTE in text and "overrides the configured one" in text
        assert page.locator("#pwn").count() == 0 and page.locator("#in-force img").count() == 0
        assert "applied: the camera's next events are placed with it" in page.text_content("#apply-status")
        assert "with the calibration before it was applied: median" in page.text_content("#summary")
        assert page.is_visible("#revert")
        # the map's camera is the calibration in force now
        _wait(page, f"Math.abs(window.seawatchCalibration.state.source.view.pan_deg - {fitted['surveyed']['pan_deg']}) < 1e-6")
        assert page.evaluate("window.seawatchCalibration.state.source.calibration_origin") == "operator"
        assert page.evaluate("window.seawatchCalibration.state.map.data.cameras[0].view.pan_deg") == fitted["surveyed"]["pan_deg"]

        # a reload: still in force, said on the page
        page.reload()
        _wait(page, f"{IN_FORCE} && {IN_FORCE}.origin === 'operator'")
        assert "applied by key:installer" in page.text_content("#in-force-text")
        assert page.locator("#history-list li").count() == 1 and "(in force)" in page.text_content("#history-list")

        # a viewer sees which calibration is in force, but has no buttons to change it
        viewer, verrors = open_page(browser, f"{base}/calibrate#key={VIEWER_KEY}")
        _wait(viewer, f"{IN_FORCE} && {IN_FORCE}.origin === 'operator'")
        assert "applied by key:installer" in viewer.text_content("#in-force-text")
        assert viewer.is_hidden("#revert") and viewer.is_hidden("#apply-box")
        assert verrors == []

        # revert, confirmed by a second click
        page.click("#revert")
        assert page.text_content("#revert") == "click again to revert" and len(calls) == 1
        page.click("#revert")
        _wait(page, f"{IN_FORCE}.origin === 'config'")
        assert calls[1] == ("quay-west", None)
        assert _get(base)["origin"] == "config"
        # the state is set before the page asks for the sources again; the text follows once that answer is in
        _wait(page, "document.getElementById('in-force-text').textContent.includes("
                    "'In force: the configured calibration (pan 121.00°')")
        assert page.is_hidden("#revert")
        assert "(reverted by key:installer" in page.text_content("#history-list")
        _wait(page, "window.seawatchCalibration.state.source.view.pan_deg === 121")
        assert errors == []
        browser.close()


def test_a_refused_apply_is_shown_and_changes_nothing(apply_app):
    """The service refuses a calibration for another picture size: the page shows why; the configured one stays."""
    base, calls = apply_app
    with _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"{base}/calibrate#key={ADMIN_KEY}", width=1500, height=1000)
        page.evaluate(f"localStorage.setItem('seawatch-calibration-quay-west', {json.dumps(_kept_marks())})")
        page.reload()
        _wait(page, "window.seawatchCalibration.state.points.length === 6 && window.seawatchCalibration.state.size !== null")
        page.click("#fit")
        page.wait_for_selector("#apply-box", state="visible", timeout=30000)
        # as if the fit had been made on a picture of another size (a camera reconfigured meanwhile)
        page.evaluate("window.seawatchCalibration.state.result.calibration.camera.width_px = 1920")
        page.click("#apply")
        page.click("#apply")
        _wait(page, "document.getElementById('apply-error').textContent.length > 0")
        assert "sends 1280x720" in page.text_content("#apply-error")
        assert calls == [] and _get(base)["origin"] == "config" and _get(base)["history"] == []
        assert page.evaluate(f"{IN_FORCE}.origin") == "config"
        assert errors == []
        browser.close()
