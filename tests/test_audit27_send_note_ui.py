""""Send drone" in the event detail (headless Chromium, a real service with a simulated drone): the line under the
button follows the drone's task for this event as it is flown (flying, holding, returning, complete), the way the
sources table does. It said what the send's answer said ("patrol-1: task flying, patrol interrupted") for as long as
the detail stayed open: in the demo, still "task flying" three minutes after the drone had held over the event, flown
home and landed."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import free_port, serve_in_thread
from seawatch.drone.geometry import offsets_to_latlon
from seawatch.service.auth import hash_api_key, hash_password
from seawatch.service.config import load_config
from seawatch.vision.events import GeoPosition
from test_service_store import make_event
from test_service_ui import KEY, PASSWORD, _api, _browser, _login, _playwright, _wait, open_page

HOME = (54.0, 7.0)
NOTE = "document.getElementById('d-send-note').textContent"


@pytest.mark.slow
def test_the_send_note_follows_the_task_to_its_end(tmp_path):
    from seawatch.service.runner import Service

    la, lo = offsets_to_latlon(HOME[0], HOME[1], 30.0, 0.0)
    target = (float(la[0]), float(lo[0]))
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"users": [{"name": "ops", "role": "operator", "password_hash": hash_password(PASSWORD)}],
                 "api_keys": [{"name": "wall", "role": "viewer", "key_sha256": hash_api_key(KEY)}]},
        "drones": [{"id": "near-1", "connection": f"udp:127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
                    "camera": {"width_px": 160, "height_px": 120, "hfov_deg": 70},
                    "task_alt_m": 10, "task_hold_s": 3}],
        "fleet": [{"drone": "near-1", "sim": {"speed": 10.0, "home_lat_deg": HOME[0], "home_lon_deg": HOME[1]},
                   "link_timeout_s": 5}],
    })
    svc = Service(cfg).start()
    try:
        with serve_in_thread(svc.app) as port:
            base = f"http://127.0.0.1:{port}"
            svc.store.put(make_event(0, type="fire", source_id="quay-cam", geo=GeoPosition(*target, 5.0, 5.0)))
            with _playwright() as p:
                browser = _browser(p)
                page, errors = open_page(browser, base + "/")
                _login(page)
                _wait(page, "window.seawatch.state.sources.some(s => s.kind === 'drone' && s.lat_deg !== null)", 60)
                page.click('#events tr[data-id="ev00000"]')
                _wait(page, "!document.getElementById('d-send').hidden", 10)
                page.once("dialog", lambda d: d.accept())
                page.click("#d-send-btn")
                _wait(page, f"{NOTE}.startsWith('near-1: task')", 30)
                # the drone holds, flies home and lands; the note says so without reopening the event
                deadline = time.monotonic() + 90
                while (task := _api(base, "/api/drones")[1][0]["task"])["state"] != "complete":
                    assert time.monotonic() < deadline, task
                    time.sleep(0.5)
                _wait(page, f"{NOTE}.startsWith('near-1: task complete')", 10)  # the sources feed: every 2 s
                assert page.evaluate(NOTE).startswith("near-1: task complete, held ")  # how long it held, too
                assert errors == [], errors
                browser.close()
    finally:
        svc.stop()
