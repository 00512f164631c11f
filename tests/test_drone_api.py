"""Drone crews in the API: abort (RTL / LAND / LOITER) and restart a drone's patrol over HTTP against a real service
with a simulated drone flying its patrol (UDP on a free port); who did it in the service log; auth, unknown drones
(404), drones without a link or a patrol (409). Health: coarse fields for anyone, the store sink's and MQTT
publisher's delivery counters for authenticated callers."""

from __future__ import annotations

import logging
import time
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key, hash_password  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.runner import Service  # noqa: E402
from test_service_main import _until  # noqa: E402
from conftest import free_udp_port as _free_udp_port  # noqa: E402

KEY = "drone-api-key-0123456789abcdef"
PASSWORD = "crew-pw-0123"


def _settings(data_dir, **over):
    route = {"type": "points", "points_lonlat": [[7.0, 54.0], [7.0006, 54.0], [7.0006, 54.0004]], "alt_m": 8}
    cam = {"width_px": 160, "height_px": 120, "hfov_deg": 70}
    data = {
        "storage": {"data_dir": str(data_dir)},
        "auth": {"token_secret": "d" * 40,
                 "users": [{"name": "olga", "role": "operator", "password_hash": hash_password(PASSWORD)}],
                 "api_keys": [{"name": "crew-tablet", "role": "operator", "key_sha256": hash_api_key(KEY)}]},
        "drones": [{"id": "patrol-1", "connection": f"udp:127.0.0.1:{_free_udp_port()}", "camera": cam,
                    "routes": {"r": route}},
                   # nothing sends on this port: never linked
                   {"id": "ghost", "connection": f"udp:127.0.0.1:{_free_udp_port()}", "camera": cam}],
        "fleet": [{"drone": "patrol-1", "sim": {"speed": 10.0}, "patrol": "r", "link_timeout_s": 5}],
    }
    data.update(over)
    return load_config(data=data)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = Service(_settings(tmp_path_factory.mktemp("drone-api") / "data")).start()
    try:
        with TestClient(svc.app) as client:
            r = client.post("/api/auth/login", json={"username": "olga", "password": PASSWORD})
            assert r.status_code == 200, r.text
            yield svc, client, {"Authorization": f"Bearer {r.json()['access_token']}"}
    finally:
        svc.stop()


def _drone(client, drone_id: str) -> dict:
    return next(d for d in client.get("/api/drones", headers={"X-API-Key": KEY}).json() if d["drone_id"] == drone_id)


def _code(r) -> str:
    return r.json()["error"]["code"]


@pytest.mark.parametrize("action", ["abort", "restart"])
def test_drone_actions_need_auth_and_a_known_drone(service, action):
    _, client, op = service
    r = client.post(f"/api/drones/patrol-1/{action}")
    assert r.status_code == 401 and _code(r) == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    assert client.post(f"/api/drones/patrol-1/{action}", headers={"Authorization": "Bearer forged.token"}).status_code == 401
    for unknown in ("nope", "x" * 300, "patrol-1%20"):
        r = client.post(f"/api/drones/{unknown}/{action}", headers=op)
        assert r.status_code == 404 and _code(r) == "not_found", (unknown, r.text)


@pytest.mark.parametrize("body", [{"mode": "GUIDED"}, {"mode": "rtl"}, {"mode": "RTL", "alt_m": 5}, {"mode": None}])
def test_abort_takes_only_rtl_land_loiter(service, body):
    _, client, op = service
    r = client.post("/api/drones/patrol-1/abort", headers=op, json=body)
    assert r.status_code == 422 and _code(r) == "invalid_request", r.text


def test_a_drone_without_link_or_patrol_is_a_conflict(service, caplog):
    svc, client, op = service
    caplog.set_level(logging.WARNING, logger="seawatch.service.app")
    r = client.post("/api/drones/ghost/abort", headers={"X-API-Key": KEY}, json={"mode": "LAND"})
    assert r.status_code == 409 and _code(r) == "conflict" and "no link" in r.json()["error"]["message"]
    assert any("ghost" in m and "crew-tablet" in m and "LAND" in m for m in caplog.messages)
    r = client.post("/api/drones/ghost/restart", headers=op)
    assert r.status_code == 409 and "no patrol" in r.json()["error"]["message"]
    assert svc.fleet.runners["ghost"].patrol_state == "none"


def test_operator_aborts_and_restarts_the_patrol(service, caplog):
    svc, client, op = service
    caplog.set_level(logging.INFO, logger="seawatch.service.app")
    runner = svc.fleet.runners["patrol-1"]
    _until(lambda: _drone(client, "patrol-1")["patrol_state"] == "flying", 60, "the simulated drone flying its patrol")

    r = client.post("/api/drones/patrol-1/restart", headers=op)  # would start the mission over from its first item
    assert r.status_code == 409 and "abort it first" in r.json()["error"]["message"]
    assert runner.patrols_started == 1

    r = client.post("/api/drones/patrol-1/abort", headers=op)  # no body: RTL
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["drone_id"] == "patrol-1" and d["mode"] == "RTL"
    assert d["patrol_state"] == "aborted" and "RTL" in d["patrol_reason"] and d["patrol_repeat"] is True
    assert any("patrol-1" in m and "aborted" in m and "olga" in m for m in caplog.messages)
    # LOITER on top: the patrol stays aborted, the vehicle holds
    r = client.post("/api/drones/patrol-1/abort", headers=op, json={"mode": "LOITER"})
    assert r.status_code == 200 and r.json()["mode"] == "LOITER" and r.json()["patrol_state"] == "aborted"
    time.sleep(1.0)
    assert runner.patrols_started == 1 and _drone(client, "patrol-1")["patrol_state"] == "aborted"  # no re-launch

    r = client.post("/api/drones/patrol-1/restart", headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    assert r.json()["patrol_state"] in ("restart requested", "flying")
    assert any("patrol-1" in m and "restart" in m and "crew-tablet" in m for m in caplog.messages)
    _until(lambda: runner.patrols_started == 2 and _drone(client, "patrol-1")["patrol_state"] == "flying", 30,
           "the patrol flying again after the restart")


def test_health_is_coarse_for_anyone_and_has_delivery_counters_for_crews(service):
    svc, client, op = service
    r = client.get("/api/health")
    assert r.status_code == 200 and set(r.json()) == {"status", "version", "database"} and r.json()["status"] == "ok"
    # a refused credential is served as anonymous, not refused (health stays a public probe)
    assert set(client.get("/api/health", headers={"Authorization": "Bearer forged.token"}).json()) == {"status", "version", "database"}
    for headers in (op, {"X-API-Key": KEY}):
        h = client.get("/api/health", headers=headers).json()
        assert h["status"] == "ok" and h["database"] == "ok"
        assert set(h["delivery"]["store_sink"]) == {"stored", "errors", "pending", "dropped"}
        assert h["delivery"]["store_sink"]["pending"] == 0 and h["delivery"]["store_sink"]["dropped"] == 0
        assert "mqtt" not in h["delivery"]  # MQTT is off in this service
    assert svc.delivery_stats()["mqtt"] is None


def test_health_reports_queued_and_lost_events(tmp_path):
    """Events the store could not write yet make the service degraded (for anyone); the counts (and MQTT's lost
    messages) are for authenticated callers only."""
    stats = {"store_sink": {"stored": 40, "errors": 3, "pending": 2, "dropped": 1},
             "mqtt": {"connected": False, "dropped": 7, "dropped_retained": 1}}
    cfg = _settings(tmp_path / "data", drones=[], fleet=[])
    with TestClient(create_app(cfg, stats=lambda: stats)) as client:
        r = client.get("/api/health")
        assert r.json() == {"status": "degraded", "version": r.json()["version"], "database": "ok"}
        h = client.get("/api/health", headers={"X-API-Key": KEY}).json()
        assert h["status"] == "degraded" and h["delivery"] == stats
        stats["store_sink"]["pending"] = 0  # the store is back: lost counts stay visible, the status recovers
        h = client.get("/api/health", headers={"X-API-Key": KEY}).json()
        assert h["status"] == "ok" and h["delivery"]["store_sink"]["dropped"] == 1 and h["delivery"]["mqtt"]["dropped"] == 7

    def broken():
        raise RuntimeError("counter gone")

    with TestClient(create_app(cfg, stats=broken)) as client:  # the probe survives a failing counter
        h = client.get("/api/health", headers={"X-API-Key": KEY}).json()
        assert h["status"] == "ok" and h["delivery"] == {}
