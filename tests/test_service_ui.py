"""The web UI in headless Chromium (Debian's, RECIPES.md section 7): the page logs in with a kiosk key, lists the
events, draws located events on the map in their severity colour; the screenshot is checked."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import missing  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.vision.events import GeoPosition  # noqa: E402
from test_service_store import make_event  # noqa: E402

KEY = "ui-test-key-0123456789abcdef"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--window-size=1280,900"]


@pytest.fixture
def server(tmp_path):
    import uvicorn

    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")},
                            "auth": {"api_keys": [{"name": "wall", "role": "operator", "key_sha256": hash_api_key(KEY)}]}})
    app = create_app(cfg)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    store = app.state.store
    store.put(make_event(0, type="vessel_in_zone", severity="critical", source_id="drone-1",
                         geo=GeoPosition(54.020, 6.550, 40.0, 20.0, 30.0), attributes={"vessel_name": "Noordzee Express"}))
    store.put(make_event(1, type="fire", severity="low", source_id="quay-1", geo=GeoPosition(54.010, 6.530, 15.0, 15.0)))
    store.put(make_event(2, type="no_hard_hat", severity="medium", source_id="quay-1"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        th.join(10)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        missing("Debian's chromium is not installed (bash scripts/setup.sh)")
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    return subprocess.run([exe, *ARGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def test_ui_shell_is_public_but_holds_no_data(tmp_path):
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "d")}})
    with TestClient(create_app(cfg)) as c:
        r = c.get("/")
        assert r.status_code == 200 and "<canvas" in r.text and "script-src 'self'" in r.headers["content-security-policy"]
        assert c.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
        for bad in ("/ui/../app.py", "/ui/%2e%2e%2fapp.py", "/ui/app.py", "/ui/secret"):
            assert c.get(bad).status_code == 404, bad
        assert c.get("/api/events").status_code == 401


def test_ui_lists_events_and_draws_them_on_the_map(server, tmp_path):
    url = f"{server}/#key={KEY}"
    dom = chromium(tmp_path, "--virtual-time-budget=8000", "--dump-dom", url)
    html = dom.stdout
    assert 'data-id="ev00000"' in html and 'data-id="ev00001"' in html and 'data-id="ev00002"' in html, dom.stderr[-2000:]
    assert "wall (operator)" in html  # /api/auth/me answered
    assert html.index('data-id="ev00002"') < html.index('data-id="ev00000"')  # newest first
    shot = tmp_path / "ui.png"
    r = chromium(tmp_path, "--virtual-time-budget=8000", f"--screenshot={shot}", url)
    assert shot.exists(), r.stderr[-2000:]
    import cv2

    img = cv2.imread(str(shot))[:, :, ::-1].astype(int)  # RGB
    canvas = img[60:560, 0:680]  # the map sits top left, under the header and the filter bar

    def count(rgb, tol=12):
        return int((np.abs(canvas - np.array(rgb)).max(axis=2) <= tol).sum())

    assert count((0xD7, 0x19, 0x1C)) > 40  # the critical vessel event, full-colour centre dot
    assert count((0x2C, 0x7B, 0xB6)) > 40  # the low fire event
    assert count((0xDF, 0xE9, 0xF2)) > 100_000  # the sea-coloured map background with its grid
    # the table text colours of the severities are drawn too (the event list is rendered)
    assert int((np.abs(img - np.array((0xB8, 0x86, 0x0B))).max(axis=2) <= 40).sum()) > 10
