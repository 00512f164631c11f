"""The AIS entry of /api/sources (``Fleet.ais``): a file feed that has been replayed to its end is ``ended``, a network
feed silent for longer than ``ais_stale_after_s`` is ``stale``; otherwise ``running``."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from seawatch.service.auth import hash_api_key
from seawatch.service.config import load_config
from seawatch.service.fleet import Fleet
from seawatch.vision.vessel_identity import IdentityConfig, VesselIdentityStage
from test_ais import T0_S, enc, tagged

pytest.importorskip("pyais")


def _settings(tmp_path, ais: list[str]):
    return load_config(data={"storage": {"data_dir": str(tmp_path / "data")}, "ais": ais,
                             "auth": {"api_keys": [{"name": "t", "role": "admin", "key_sha256": hash_api_key("k" * 24)}]}})


def _position(mmsi: int, t_s: int | None = None) -> str:
    (line,) = enc(msg_type=1, mmsi=mmsi, lat=52.85, lon=5.7, speed=5, course=10)
    return line if t_s is None else tagged(line, c_s=t_s)


def _stage(ais: list[str]) -> VesselIdentityStage:
    return VesselIdentityStage(IdentityConfig(ocr={"enabled": False}), ais=ais)


def _entry(fleet: Fleet) -> dict:
    (entry,) = fleet.ais()
    assert entry["source_id"] == "ais" and entry["kind"] == "ais"
    return entry


def test_a_file_feed_replayed_to_its_end_is_ended(tmp_path):
    log = tmp_path / "harbour.nmea"
    log.write_text("".join(_position(244000000 + i, T0_S + 10 * i) + "\r\n" for i in range(6)))
    fleet = Fleet(_settings(tmp_path, [str(log)]))
    assert _entry(fleet)["state"] == "not_running"
    fleet.identity = _stage([str(log)])
    assert _entry(fleet)["state"] == "running"  # nothing replayed yet
    fleet.identity.advance((T0_S + 25) * 10**9)  # what each analysed frame does
    assert _entry(fleet)["state"] == "running" and _entry(fleet)["messages"] == 3
    fleet.identity.advance((T0_S + 3600) * 10**9)
    e = _entry(fleet)
    assert e["state"] == "ended" and e["messages"] == 6 and e["vessels"] == 6 and e["feeds"] == ["harbour.nmea"]


def test_a_network_feed_without_messages_for_the_threshold_is_stale(tmp_path):
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    url = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    send = threading.Event()

    def serve():
        conn, _ = srv.accept()
        with conn:
            send.wait(10)
            conn.sendall((_position(244000001) + "\r\n").encode())
            time.sleep(5)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    fleet = Fleet(_settings(tmp_path, [url]))
    fleet.ais_stale_after_s = 0.8
    fleet.identity = _stage([url])
    fleet.start()
    fleet.identity.start()
    try:
        assert _entry(fleet)["state"] == "running"
        time.sleep(1.0)
        e = _entry(fleet)
        assert e["state"] == "stale" and e["messages"] == 0  # connected, but nothing came since the start
        send.set()
        deadline = time.monotonic() + 5
        while _entry(fleet)["messages"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        e = _entry(fleet)
        assert e["state"] == "running" and e["messages"] == 1 and e["feeds"] == [url]
        time.sleep(1.2)
        e = _entry(fleet)
        assert e["state"] == "stale" and e["last_message_age_s"] >= 0.8
    finally:
        fleet.identity.stop()
        fleet.stop()
        th.join(10)
        srv.close()


def test_the_stale_threshold_defaults_to_five_minutes(tmp_path):
    fleet = Fleet(_settings(tmp_path, ["tcp://127.0.0.1:9"]))
    fleet.identity = _stage(["tcp://127.0.0.1:9"])  # never started: no message
    fleet.start()
    try:
        assert fleet.ais_stale_after_s == 300.0 and _entry(fleet)["state"] == "running"
        fleet._ais_started_ns -= 301 * 10**9  # noqa: SLF001 - five minutes and a second later
        assert _entry(fleet)["state"] == "stale"
    finally:
        fleet.stop()
