"""A camera's zones (and ignore areas, water) drawn in pixels of another picture than the one it sends: a zone drawn
on the main stream's 1920x1080 snapshot while the camera's URL is its 640x360 substream lies mostly outside every
picture and never holds a detection, so its rules stay silent without a word. The pipeline judges each camera's pixel
geometry at its first picture (and whenever its size changes), logs it once, and the service shows it with the camera
(GET /api/sources ``geometry_problem``; in red in the operator page's sources table)."""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from test_service_serve import KEY, FireEverywhere, file_camera_service  # noqa: E402

FIRE = {"type": "fire_smoke", "labels": ["fire"], "window_frames": 3, "min_hits": 2, "min_duration_s": 0.5,
        "static_min_iou": None}
FULL_HD_YARD = [[100, 500], [1800, 500], [1800, 1050], [100, 1050]]  # drawn on a 1920x1080 picture
T0 = 1_700_000_000_000_000_000


def _pipeline(zone_px, ignore=(), water=None):
    from seawatch.vision.pipeline import Pipeline, load_pipeline_config

    source = {"id": "quay-1", "url": "x.mp4", "models": ["stub"]}
    if ignore:
        source["ignore"] = [{"polygon_px": p, "labels": ["fire"]} for p in ignore]
    if water is not None:
        source["water"] = water
    cfg = load_pipeline_config(None, data={"sources": [source], "zones": [
        {"id": "yard", "source": "quay-1", "polygon_px": zone_px, "rules": [FIRE]},
        {"id": "whole", "source": "quay-1", "rules": [FIRE]}]})  # no polygon: the whole frame, never judged
    return Pipeline(cfg, detectors={"stub": FireEverywhere()})


def test_a_zone_drawn_on_the_main_stream_is_named_at_the_substreams_first_picture(caplog):
    pipe = _pipeline(FULL_HD_YARD)
    sub = np.full((360, 640, 3), 90, np.uint8)
    with caplog.at_level(logging.WARNING, logger="seawatch.vision.pipeline"):
        for i in range(5):
            pipe.process("quay-1", T0 + i * 200_000_000, sub)
    size, problem = pipe.geometry_checks["quay-1"]
    assert size == (640, 360)
    assert "zone yard reaches x 1800, y 1050 px" in problem and "640x360" in problem, problem
    assert "whole" not in problem
    said = [r for r in caplog.records if "zone yard" in r.getMessage()]
    assert len(said) == 1  # once per picture size, not per frame
    # the camera switched to its main stream: judged again, and now it fits
    pipe.process("quay-1", T0 + 2_000_000_000, np.full((1080, 1920, 3), 90, np.uint8))
    assert pipe.geometry_checks["quay-1"] == ((1920, 1080), None)


def test_geometry_that_fits_or_reaches_just_past_the_edge_is_fine_and_ignore_areas_and_water_are_judged_too():
    pipe = _pipeline([[0, 200], [660, 200], [660, 370], [0, 370]])  # a few px past a 640x360 picture's edges
    pipe.process("quay-1", T0, np.full((360, 640, 3), 90, np.uint8))
    assert pipe.geometry_checks["quay-1"] == ((640, 360), None)

    pipe = _pipeline([[0, 0], [600, 0], [600, 300]], ignore=[[[1700, 900], [1900, 900], [1900, 1000]]],
                     water=[[[0, 700], [1900, 700], [1900, 1070], [0, 1070]]])
    pipe.process("quay-1", T0, np.full((360, 640, 3), 90, np.uint8))
    problem = pipe.geometry_checks["quay-1"][1]
    assert "ignore area 1 reaches" in problem and "water polygon 1 reaches" in problem and "zone yard" not in problem


@pytest.mark.slow
def test_the_service_and_the_sources_table_show_it(tmp_path):
    """The real service on a 160x120 camera whose zone was drawn on a Full HD picture: /api/sources names it, and
    the operator page says it in red in the camera's row."""
    from fastapi.testclient import TestClient

    from conftest import serve_in_thread
    from test_service_ui import _browser, _playwright, _wait, open_page

    zones = [{"id": "yard", "source": "quay-1", "polygon_px": FULL_HD_YARD, "rules": [FIRE]}]
    with file_camera_service(tmp_path, zones=zones) as svc:
        with TestClient(svc.app) as client:
            deadline = time.monotonic() + 20
            while True:
                (cam,) = client.get("/api/sources", headers={"X-API-Key": KEY}).json()
                if cam.get("geometry_problem") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert "zone yard reaches x 1800, y 1050 px" in cam["geometry_problem"] and "160x120" in cam["geometry_problem"]
        with serve_in_thread(svc.app) as port, _playwright() as p:
            browser = _browser(p)
            page, errors = open_page(browser, f"http://127.0.0.1:{port}/#key={KEY}")
            note = '#sources tr[data-id="quay-1"] .geometry-problem.error'
            _wait(page, f"(document.querySelector('{note}') || {{}}).textContent?.includes('zone yard')", 20)
            assert "zones off the picture" in page.text_content(note)
            assert page.eval_on_selector(note, "e => getComputedStyle(e).color") == "rgb(176, 0, 32)"
            assert not errors, errors
            browser.close()


def test_a_camera_whose_zones_fit_says_nothing(tmp_path):
    from fastapi.testclient import TestClient

    zones = [{"id": "yard", "source": "quay-1", "polygon_px": [[0, 0], [150, 0], [150, 110], [0, 110]], "rules": [FIRE]}]
    with file_camera_service(tmp_path, zones=zones) as svc, TestClient(svc.app) as client:
        deadline = time.monotonic() + 20
        while not svc.pipeline.geometry_checks.get("quay-1") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert svc.pipeline.geometry_checks["quay-1"] == ((160, 120), None)
        (cam,) = client.get("/api/sources", headers={"X-API-Key": KEY}).json()
        assert cam["geometry_problem"] is None
