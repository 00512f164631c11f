"""``seawatch drone ...`` commands, against the real log and the simulator."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from seawatch.cli import main
from seawatch.drone.sim import SimVehicle
from conftest import free_udp_port as _port

REAL_LOG = "E_drone_telemetry/ardupilot_real_2018-09-25_15-36-53.tlog"
SQUARE = "54.0003,6.9995;54.0003,7.0005;53.9997,7.0005;53.9997,6.9995"


def test_replay_command_summary_and_poses(shared_media: Path, capsys):
    log = shared_media / REAL_LOG
    assert main(["drone", "replay", str(log), "--every", "60"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    poses = [json.loads(x) for x in lines[:-1]]
    assert summary["samples"]["position"] == 1616 and summary["start"].startswith("2018-09-25T22:36:5")
    assert summary["lat_range"] == pytest.approx([49.2569063, 49.2573976])
    assert summary["max_position_gap_s"] == pytest.approx(3.8, abs=0.1)
    assert len(poses) == 24  # 1392 s / 60 s
    good = [p for p in poses if not p["stale"]]
    assert good and all(49.2568 < p["lat_deg"] < 49.2575 for p in good)


def test_patrol_plan_only(capsys):
    assert main(["drone", "patrol", "--lawnmower", SQUARE, "--spacing", "20", "--alt", "25"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["waypoints"]) == 8 and all(w["alt_m"] == 25 for w in plan["waypoints"])


def test_bad_polygon_is_a_clean_error(capsys):
    assert main(["drone", "patrol", "--perimeter", "54,7;oops", "--alt", "25"]) == 1
    err = capsys.readouterr().err
    assert "--perimeter" in err and "Traceback" not in err


def test_status_without_vehicle_fails_cleanly(capsys):
    assert main(["drone", "status", f"udpin:127.0.0.1:{_port()}", "--timeout", "0.5"]) == 1
    assert "no vehicle HEARTBEAT" in capsys.readouterr().err


def test_patrol_status_abort_against_simulator(capsys):
    port = _port()
    with SimVehicle(f"udpout:127.0.0.1:{port}", speed=10.0) as sim:
        url = f"udpin:127.0.0.1:{port}"
        assert main(["drone", "patrol", url, "--perimeter", SQUARE, "--alt", "20", "--speed", "10",
                     "--start", "--wait", "30"]) == 0
        out = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
        assert out[0]["uploaded_items"] == 1 + 1 + 1 + 5 + 1  # home, takeoff, speed, 5 waypoints, RTL
        assert out[-1]["complete"] is True
        assert main(["drone", "status", url, "--seconds", "0", "--stream-rate", "10"]) == 0
        state = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert state["link"] == "connected" and state["mode"] == "RTL" and state["params"] >= 1
        deadline = time.monotonic() + 2.0
        while sim.telemetry_hz != 10.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.telemetry_hz == 10.0  # REQUEST_DATA_STREAM reached the vehicle (sent before the link closed)
        sim.mode = "LOITER"
        assert main(["drone", "abort", url, "--mode", "LAND"]) == 0
        assert sim.mode == "LAND"


def test_status_and_replay_pick_one_vehicle_of_a_shared_link(tmp_path, capsys):
    """Two vehicles on one link (a relay or a multi-vehicle radio): ``--system`` picks one; the recorded log of
    both replays as either."""
    port = _port()
    tlog = tmp_path / "both.tlog"
    with SimVehicle(f"udpout:127.0.0.1:{port}", home=(54.0, 7.0, 0.0), system_id=3), \
            SimVehicle(f"udpout:127.0.0.1:{port}", home=(55.0, 8.0, 0.0), system_id=7):
        assert main(["drone", "status", f"udpin:127.0.0.1:{port}", "--system", "7", "--seconds", "3",
                     "--interval", "0.5", "--tlog", str(tlog)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert rows and all(r["system"] == 7 for r in rows)
    assert all(r["lat_deg"] == pytest.approx(55.0, abs=1e-3) for r in rows if r["lat_deg"] is not None)
    assert any(r["lat_deg"] is not None for r in rows)
    for system, lat in [(3, 54.0), (7, 55.0)]:
        assert main(["drone", "replay", str(tlog), "--system", str(system)]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["vehicle_system_id"] == system and "lat_range" in summary, summary
        assert summary["lat_range"] == pytest.approx([lat, lat], abs=1e-3)


class _SerialVehicle:
    """A vehicle on the master side of a pty pair: HEARTBEAT (ArduCopter, GUIDED) and GLOBAL_POSITION_INT at 10 Hz,
    one PARAM_VALUE for each PARAM_REQUEST_LIST it reads; the slave side is the ground station's serial port."""

    def __init__(self) -> None:
        import os
        import pty
        import threading
        import tty

        from seawatch.drone.link import mavutil

        self._os = os
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)  # bytes pass unchanged (pyserial does the same when it opens the port)
        self.port = os.ttyname(self.slave)
        self._m = mavutil().mavlink
        self._mav = self._m.MAVLink(None, srcSystem=1, srcComponent=1)
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "_SerialVehicle":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._os.close(self.master)
        self._os.close(self.slave)

    def _send(self, msg) -> None:
        self._os.write(self.master, msg.pack(self._mav))

    def _run(self) -> None:
        import select

        m = self._m
        while not self._stop.is_set():
            self._send(m.MAVLink_heartbeat_message(2, 3, 81 | 128, 4, 4, 3))  # quadrotor, ArduPilot, armed GUIDED
            self._send(m.MAVLink_global_position_int_message(1000, 540_123_400, 70_045_600, 25_000, 5_000, 0, 0, 0, 9000))
            if select.select([self.master], [], [], 0.1)[0]:
                for msg in self._mav.parse_buffer(self._os.read(self.master, 4096)) or []:
                    if msg.get_type() == "PARAM_REQUEST_LIST":
                        self.requests += 1
                        self._send(m.MAVLink_param_value_message(b"SYSID_THISMAV", 1.0, 9, 1, 0))


def test_status_over_a_serial_port(capsys):
    with _SerialVehicle() as vehicle:
        assert main(["drone", "status", vehicle.port, "--timeout", "5", "--seconds", "0", "--baud", "115200"]) == 0
        state = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert state["link"] == "connected" and state["mode"] == "GUIDED" and state["armed"] is True
    assert state["system"] == 1 and state["params"] == 1 and vehicle.requests >= 1  # our PARAM_REQUEST_LIST got there
    assert state["lat_deg"] == pytest.approx(54.01234) and state["lon_deg"] == pytest.approx(7.00456)


def test_a_serial_link_without_pyserial_says_what_to_install(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "serial", None)  # `import serial` fails as it would without pyserial
    with _SerialVehicle() as vehicle:
        assert main(["drone", "status", vehicle.port, "--timeout", "2", "--seconds", "0"]) == 1
    err = capsys.readouterr().err
    assert "a serial link needs pyserial (pip install pyserial), which is not installed" in err and vehicle.port in err


# ---- replay refuses what is not a vehicle's .tlog -------------------------------------------------------------------
def _write_tlog(path: Path, seconds: int = 20) -> int:
    """A small .tlog: vehicle system 1 (HEARTBEAT at 1 Hz, GLOBAL_POSITION_INT at 5 Hz) and a ground station (255);
    returns the number of messages."""
    import struct

    from seawatch.drone.link import mavutil

    m = mavutil().mavlink
    vehicle, gcs = m.MAVLink(None, srcSystem=1, srcComponent=1), m.MAVLink(None, srcSystem=255, srcComponent=190)
    t0_us, out, n = 1_700_000_000_000_000, bytearray(), 0
    for i in range(seconds * 5):
        t_us = t0_us + i * 200_000
        msgs = [(vehicle, m.MAVLink_heartbeat_message(2, 3, 81 | 128, 4, 4, 3)),
                (gcs, m.MAVLink_heartbeat_message(6, 8, 0, 0, 0, 3))] if i % 5 == 0 else []
        msgs.append((vehicle, m.MAVLink_global_position_int_message(i * 200, 540_000_000 + i * 10, 70_000_000, 20_000,
                                                                     20_000, 0, 0, 0, 9000)))
        for mav, msg in msgs:
            out += struct.pack(">Q", t_us) + msg.pack(mav)
            n += 1
    path.write_bytes(bytes(out))
    return n


def _replay_error(args: list[str], capsys) -> str:
    assert main(["drone", "replay", "--speed", "0", *args]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err


def test_replay_of_a_good_log_and_one_with_flipped_bytes(tmp_path, capsys):
    good = tmp_path / "good.tlog"
    n = _write_tlog(good)
    assert main(["drone", "replay", str(good)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["messages"] == n and summary["vehicle_system_id"] == 1 and summary["samples"]["position"] == 100
    data = bytearray(good.read_bytes())
    for k in range(1, 6):  # five flipped bytes cost a few messages, never the replay
        data[k * len(data) // 6] ^= 0xFF
    flipped = tmp_path / "flipped.tlog"
    flipped.write_bytes(bytes(data))
    assert main(["drone", "replay", str(flipped)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert n - 15 <= summary["messages"] < n and summary["vehicle_system_id"] == 1


@pytest.mark.parametrize("content, words", [
    (b"", "empty.tlog: no MAVLink messages (an empty file): is this a .tlog?"),
    (b"hello\n", "empty.tlog: no MAVLink messages (6 bytes): is this a .tlog?"),
    (b"ULog\x01\x12\x35\x01" + bytes(2000), "empty.tlog is a PX4 ULog flight log (.ulg), not a MAVLink telemetry log"),
])
def test_replay_of_a_log_without_mavlink_is_an_error_naming_the_file(tmp_path, capsys, content, words):
    (tmp_path / "empty.tlog").write_bytes(content)
    assert words in _replay_error([str(tmp_path / "empty.tlog")], capsys)


def test_replay_of_random_bytes_is_a_clear_error(tmp_path, capsys):
    import numpy as np

    noise = {seed: np.random.default_rng(seed).integers(0, 256, 20_000, dtype=np.uint8).tobytes() for seed in range(4)}
    for seed, data in noise.items():  # seed 3 stops pymavlink's indexed (mmap) reader; the others decode as noise
        garbage = tmp_path / f"garbage{seed}.tlog"
        garbage.write_bytes(data)
        err = _replay_error([str(garbage)], capsys)
        assert f"garbage{seed}.tlog: no " in err and "is this a .tlog" in err and "_instance_field" not in err
    # the same noise before a good log: read record by record, the log's messages all come through
    good = tmp_path / "good.tlog"
    n = _write_tlog(good)
    prefixed = tmp_path / "prefixed.tlog"
    prefixed.write_bytes(noise[3] + good.read_bytes())
    assert main(["drone", "replay", str(prefixed)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["messages"] >= n and summary["vehicle_system_id"] == 1 and summary["samples"]["position"] == 100


def test_replay_of_a_directory_says_so(tmp_path, capsys):
    (tmp_path / "dir.tlog").mkdir()
    assert "dir.tlog is a directory, not a .tlog file" in _replay_error([str(tmp_path / "dir.tlog")], capsys)


def test_replay_system_must_be_a_mavlink_id_present_in_the_log(tmp_path, capsys):
    good = tmp_path / "good.tlog"
    _write_tlog(good)
    for bad in ("999", "0", "-1"):
        assert f"system id {bad} is not a MAVLink system id (1..255)" in _replay_error([str(good), "--system", bad],
                                                                                      capsys)
    err = _replay_error([str(good), "--system", "7"], capsys)
    assert "no vehicle with MAVLink system id 7 in this log; its vehicles: system(s) 1 (other systems: 255)" in err
    assert main(["drone", "replay", str(good), "--system", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["vehicle_system_id"] == 1
