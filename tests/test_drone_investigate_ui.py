""""Send drone" in the operator UI (headless Chromium against a real service with two simulated drones): an event
with a position offers the drones nearest first with their distance, one without a position offers nothing, a viewer
sees no control; sending one starts its task (checked through the API), and the sources table and the map show it
(the drone's line on the map runs from the drone to the event)."""

from __future__ import annotations

import socket

import pytest

from conftest import free_port, serve_in_thread
from seawatch.drone.geometry import offsets_to_latlon
from seawatch.service.auth import hash_api_key, hash_password
from seawatch.service.config import load_config
from seawatch.vision.events import GeoPosition
from test_service_store import make_event
from test_service_ui import PASSWORD, _api, _browser, _login, _playwright, _wait, open_page

OP_KEY = "investigate-ui-operator-0123456789"
VIEWER_KEY = "investigate-ui-viewer-0123456789"
HOME = (54.0, 7.0)


def _at(north_m: float, east_m: float) -> tuple[float, float]:
    la, lo = offsets_to_latlon(HOME[0], HOME[1], north_m, east_m)
    return float(la[0]), float(lo[0])


def _settings(tmp_path):
    cam = {"width_px": 160, "height_px": 120, "hfov_deg": 70}
    far = _at(0.0, 900.0)
    return load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"users": [{"name": "ops", "role": "operator", "password_hash": hash_password(PASSWORD)}],
                 "api_keys": [{"name": "crew", "role": "operator", "key_sha256": hash_api_key(OP_KEY)},
                              {"name": "wall", "role": "viewer", "key_sha256": hash_api_key(VIEWER_KEY)}]},
        "drones": [{"id": "near-1", "connection": f"udp:127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "camera": cam,
                    "routes": {"r": {"type": "points", "points_lonlat": [[7.0, 54.0], [7.0006, 54.0]], "alt_m": 10}}},
                   {"id": "far-2", "connection": f"udp:127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "camera": cam}],
        "fleet": [{"drone": "near-1", "sim": {"speed": 5.0}, "patrol": "r", "link_timeout_s": 5},
                  {"drone": "far-2", "sim": {"speed": 5.0, "home_lat_deg": far[0], "home_lon_deg": far[1]},
                   "link_timeout_s": 5}],
    })


DETAIL_OPEN = ("document.getElementById('detail').dataset.id === '{id}' && "
               "!document.getElementById('detail').hidden")
OPTIONS = "[...document.querySelectorAll('#d-drone option')].map(o => [o.value, o.textContent])"


@pytest.mark.slow
def test_send_drone_from_the_event_detail(tmp_path):
    from seawatch.service.runner import Service

    target = _at(-150.0, 100.0)
    svc = Service(_settings(tmp_path)).start()
    try:
        with serve_in_thread(svc.app) as port:
            base = f"http://127.0.0.1:{port}"
            svc.store.put(make_event(0, type="unidentified_vessel", source_id="quay-cam",
                                     geo=GeoPosition(target[0], target[1], 8.0, 5.0)))
            svc.store.put(make_event(1, type="smoke", source_id="quay-cam", geo_reason="camera not calibrated"))
            with _playwright() as p:
                browser = _browser(p)
                page, errors = open_page(browser, base + "/")
                _login(page)
                _wait(page, "window.seawatch.state.sources.filter(s => s.kind === 'drone' && s.lat_deg !== null)"
                            ".length === 2", 60)
                page.click('#events tr[data-id="ev00000"]')
                _wait(page, DETAIL_OPEN.format(id="ev00000"), 10)
                _wait(page, "!document.getElementById('d-send').hidden")
                opts = page.evaluate(OPTIONS)
                assert [v for v, _ in opts] == ["near-1", "far-2"], opts  # nearest first
                assert opts[0][1].startswith("near-1 · ") and " m away" in opts[0][1], opts  # a few hundred m
                assert opts[1][1].startswith("far-2 · 81") and opts[1][1].endswith(" m away"), opts  # 814 m, on the ground
                assert page.is_visible("#d-drone") and page.is_visible("#d-send-btn")

                page.click('#events tr[data-id="ev00001"]')  # no position: nothing to send a drone to
                _wait(page, DETAIL_OPEN.format(id="ev00001"), 10)
                assert page.evaluate("document.getElementById('d-send').hidden")

                page.click('#events tr[data-id="ev00000"]')
                _wait(page, DETAIL_OPEN.format(id="ev00000") + " && !document.getElementById('d-send').hidden", 10)
                page.select_option("#d-drone", "near-1")
                dialogs: list[str] = []
                page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
                page.click("#d-send-btn")
                _wait(page, "document.getElementById('d-send-note').textContent.startsWith('near-1: task')", 30)
                assert dialogs and "near-1" in dialogs[0] and "unidentified_vessel" in dialogs[0]
                status, drones = _api(base, "/api/drones", key=OP_KEY)
                d = next(x for x in drones if x["drone_id"] == "near-1")
                assert status == 200 and d["task"]["event_id"] == "ev00000" and d["patrol_state"] == "interrupted"
                assert d["task"]["requested_by"] == "user ops"
                assert (d["task"]["lat_deg"], d["task"]["lon_deg"]) == target
                # the sources table and the map show the task
                _wait(page, "[...document.querySelectorAll('#sources tr')].some(tr => tr.dataset.id === 'near-1' && "
                            "tr.textContent.includes('task investigate') && tr.textContent.includes('by user ops'))", 10)
                route = page.evaluate("window.seawatch.map.data.drones.find(d => d.drone_id === 'near-1').route")
                assert len(route) == 2 and route[1] == [target[0], target[1]], route
                far_route = page.evaluate("window.seawatch.map.data.drones.find(d => d.drone_id === 'far-2').route")
                assert far_route == []  # no task, no patrol: no line
                assert "on a task" in page.evaluate(OPTIONS)[0][1]
                assert errors == [], errors
                page.close()

                # a viewer (a wall display's key) sees the event but no "Send drone"
                page, errors = open_page(browser, base + f"/#key={VIEWER_KEY}")
                page.wait_for_selector("#main", state="visible")
                page.click('#events tr[data-id="ev00000"]')
                _wait(page, DETAIL_OPEN.format(id="ev00000"), 10)
                page.wait_for_timeout(500)
                assert page.evaluate("document.getElementById('d-send').hidden")
                assert errors == [], errors
                browser.close()
    finally:
        svc.stop()
