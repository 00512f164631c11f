"""The drone link's dronekit vehicle layer (issue 5) against the project simulator, over UDP and TCP.

Whole flights: connect, status, mode change, arming, a patrol mission flown to completion, RTL, link loss (the
simulator process-equivalent is stopped) -> status "lost" -> reconnect when a vehicle is back, malformed bytes
counted, the .tlog read back by ``seawatch drone replay``. Plus the guarded readiness wait (a vehicle that never
sends PARAM_VALUE, where ``dronekit.connect`` itself would hang), the system-id filter that dronekit's
attributes lack, and the lazy dronekit import with its Python 3.11 shims.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from seawatch.drone import mission as M
from seawatch.drone.geometry import latlon_to_offsets, offsets_to_latlon
from seawatch.drone.link import LinkStatus, MavlinkLink, dronekit
from seawatch.drone.sim import DEFAULT_PARAMS, SimVehicle
from seawatch.errors import TelemetryError
from conftest import free_port as _free_port

HOME = (54.0, 7.0, 0.0)


def _endpoints(transport: str) -> tuple[str, str]:
    """(simulator address, link URL) for one transport: the vehicle sends to us on UDP, serves us on TCP."""
    if transport == "udp":
        port = _free_port(socket.SOCK_DGRAM)
        return f"udpout:127.0.0.1:{port}", f"udp:127.0.0.1:{port}"
    port = _free_port(socket.SOCK_STREAM)
    return f"tcpin:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"


def _until(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def _square(half_m: float) -> list[tuple[float, float]]:
    ne = [(half_m, -half_m), (half_m, half_m), (-half_m, half_m), (-half_m, -half_m)]
    la, lo = offsets_to_latlon(HOME[0], HOME[1], [p[0] for p in ne], [p[1] for p in ne])
    return list(zip(la.tolist(), lo.tolist()))


def _dronekit_threads() -> int:
    # dronekit's MAVConnection runs two unnamed threads on these functions
    return sum(1 for t in threading.enumerate() if "mavlink_thread" in t.name)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_flight_loss_reconnect_and_tlog_over(transport: str, tmp_path: Path, capsys):
    sim_out, url = _endpoints(transport)
    tlog = tmp_path / f"{transport}.tlog"
    threads_before = _dronekit_threads()
    sim = SimVehicle(sim_out, home=HOME, speed=10.0, telemetry_hz=10).start()
    link = MavlinkLink(url, tlog_path=tlog, heartbeat_timeout_s=2.0, reconnect_backoff_s=0.2)
    try:
        t0 = time.monotonic()
        link.open(5.0)
        open_s = time.monotonic() - t0
        assert open_s < 3.0
        # status: ours (per system id) and dronekit's vehicle layer agree on one vehicle
        assert link.status is LinkStatus.CONNECTED and isinstance(link.vehicle, dronekit().Vehicle)
        st = link.state
        assert (st.system_id, st.vehicle_type, st.autopilot, st.mode, st.armed) == (1, 2, 3, "STABILIZE", False)
        assert link.params and link.vehicle.mode.name == "STABILIZE"
        _until(lambda: len(link.vehicle.parameters) == len(sim.params), 5.0, "dronekit's parameter download")
        _until(lambda: link.state.lat_deg is not None and link.state.gps_fix_type == 3, 3.0, "position and GPS")
        assert link.state.lat_deg == pytest.approx(HOME[0], abs=1e-6)
        assert link.vehicle.location.global_relative_frame.lat == pytest.approx(HOME[0], abs=1e-6)

        # mode change and arming (COMMAND_LONG + COMMAND_ACK; refusals are errors)
        link.set_mode("RTL")
        with pytest.raises(TelemetryError, match="arm refused"):
            link.arm()
        link.set_mode("GUIDED")
        link.arm()
        assert link.state.armed is True and link.state.mode == "GUIDED"
        _until(lambda: link.vehicle.armed is True, 2.0, "dronekit's armed attribute")

        # a patrol flown to completion (no RTL item), then RTL by command: lands and disarms at home
        wps = M.perimeter(_square(25.0), alt_m=15.0)
        items = M.to_mission_items(wps, home=HOME, speed_m_s=10.0, return_to_launch=False)
        mc = M.MissionClient(link)
        mc.upload(items)
        assert [i.command for i in mc.download()] == [i.command for i in items]
        mc.start()
        assert link.state.mode == "AUTO"
        done = mc.wait_complete(60.0)
        assert done.complete and done.fraction == 1.0 and sim.reached == list(range(1, len(items)))
        mc.abort("RTL")
        assert link.state.mode == "RTL"
        link.wait_until(lambda s: s.armed is False, 60.0, "landed after RTL")
        n, e = latlon_to_offsets(HOME[0], HOME[1], link.state.lat_deg, link.state.lon_deg)
        assert math.hypot(n[0], e[0]) < 1.0 and abs(link.state.alt_rel_m) < 0.05

        # malformed bytes on the socket: counted, not fatal
        before, bad_before = link.counters.messages, link.counters.bad_data
        for seed in range(5):
            sim.send_garbage(80, seed)
        time.sleep(0.5)
        assert link.counters.bad_data > bad_before
        assert link.counters.messages > before + 5 and link.status is LinkStatus.CONNECTED

        # link loss: the vehicle goes away -> "lost" (a status, no exception), stale pose, then a new vehicle on
        # the same address -> reconnected (a new dronekit connection) and a fresh state
        sim.stop()
        _until(lambda: link.status is LinkStatus.LOST, 5.0, "status lost")
        assert link.counters.link_losses == 1
        time.sleep(0.6)
        assert link.timeline.pose_at(time.time_ns()).stale
        with pytest.raises(TelemetryError):
            link.set_mode("LOITER", timeout_s=0.5)
        sim = SimVehicle(sim_out, home=HOME, speed=10.0, telemetry_hz=10).start()
        _until(lambda: link.status is LinkStatus.CONNECTED, 15.0, "reconnected")
        assert link.counters.reconnects >= 1 and link.counters.link_losses == 1
        _until(lambda: not link.timeline.pose_at(time.time_ns() - 100_000_000).stale, 3.0, "fresh poses")
        link.set_mode("LOITER")  # commands work on the new connection
        assert sim.mode == "LOITER" and link.state.armed is False
    finally:
        link.close()
        sim.stop()
    assert link.status is LinkStatus.CLOSED and link.vehicle is None
    assert _dronekit_threads() == threads_before  # every dronekit connection of the flight (reconnects too) stopped
    live_samples = dict(link.timeline.counts)

    # the .tlog (received and sent packets) replays through `seawatch drone replay`
    from seawatch.cli import main

    capsys.readouterr()
    assert main(["drone", "replay", str(tlog)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["vehicle_system_id"] == 1 and summary["bad_data"] == 0
    assert summary["samples"] == live_samples and live_samples["position"] > 100
    assert summary["params"] == len(DEFAULT_PARAMS)
    changes = [(c["mode"], c["armed"]) for c in summary["mode_changes"]]
    for expected in [("STABILIZE", False), ("GUIDED", True), ("AUTO", True), ("RTL", True), ("RTL", False)]:
        assert expected in changes
    assert summary["alt_range_m"][1] == pytest.approx(15.0, abs=0.5)
    assert summary["max_position_gap_s"] > 0.6  # the outage is in the log too


def test_vehicle_without_param_value_fails_open_within_timeout():
    """dronekit's connect() retries PARAM_REQUEST_LIST forever here (RECIPES.md 3); open() names what is missing."""
    sim_out, url = _endpoints("udp")
    sim = SimVehicle(sim_out, home=HOME)
    sim.params = {}  # answers PARAM_REQUEST_LIST with nothing
    sim.start()
    threads_before = _dronekit_threads()
    link = MavlinkLink(url)
    try:
        t0 = time.monotonic()
        with pytest.raises(TelemetryError, match=r"sends HEARTBEAT \(mode STABILIZE\) but no PARAM_VALUE within 2\.0 s"):
            link.open(timeout_s=2.0)
        took = time.monotonic() - t0
    finally:
        sim.stop()
    assert 1.9 < took < 3.0
    assert link.status is LinkStatus.CLOSED and link.vehicle is None
    assert _dronekit_threads() == threads_before  # dronekit's reader and writer were stopped
    # the same vehicle is usable when the caller does not need parameters
    sim = SimVehicle(sim_out, home=HOME)
    sim.params = {}
    sim.start()
    try:
        with MavlinkLink(url, require_params=False).open(timeout_s=3.0) as link2:
            assert link2.status is LinkStatus.CONNECTED and link2.params == {}
    finally:
        sim.stop()


@pytest.mark.parametrize("url", ["udp:127.0.0.1", "udpin:nohost", "tcp:127.0.0.1:99999", "nonsense", "/dev/nope"])
def test_bad_connection_strings_are_telemetry_errors(url):
    # dronekit's UDP class would sys.exit() on "udpin:nohost"
    with pytest.raises(TelemetryError, match="cannot open MAVLink connection"):
        MavlinkLink(url).open(timeout_s=0.5)


def test_tcp_vehicle_absent_fails_fast_without_printing(capfd):
    port = _free_port(socket.SOCK_STREAM)
    t0 = time.monotonic()
    with pytest.raises(TelemetryError, match="cannot open MAVLink connection"):
        MavlinkLink(f"tcp:127.0.0.1:{port}").open(timeout_s=5.0)
    assert time.monotonic() - t0 < 1.0  # not pymavlink's retry loop with 1 s sleeps
    assert capfd.readouterr().out == ""  # nor its "sleeping" prints on stdout (CLI output is JSON)


def test_state_is_per_system_where_dronekit_attributes_mix_vehicles():
    """Two vehicles on one link: dronekit's location attribute follows both, the link's state and pose only one."""
    port = _free_port(socket.SOCK_DGRAM)
    far = (54.1, 7.1, 0.0)
    a = SimVehicle(f"udpout:127.0.0.1:{port}", home=HOME, system_id=1, telemetry_hz=20).start()
    b = SimVehicle(f"udpout:127.0.0.1:{port}", home=far, system_id=2, telemetry_hz=20).start()
    link = MavlinkLink(f"udpin:127.0.0.1:{port}", target_system=1)
    dk_lats: list[float] = []
    try:
        link.open(5.0)
        link.vehicle.add_attribute_listener("location.global_relative_frame", lambda _v, _n, loc: dk_lats.append(loc.lat))
        time.sleep(1.5)
    finally:
        link.close()
        a.stop()
        b.stop()
    lats = [s.lat_deg for s in link.timeline._pos.samples]  # noqa: SLF001
    assert len(lats) >= 20 and max(abs(x - HOME[0]) for x in lats) < 1e-6
    assert link.state.system_id == 1 and link.state.lat_deg == pytest.approx(HOME[0], abs=1e-6)
    # why the link reads these messages itself: dronekit took system 2's positions as the vehicle's too
    assert any(abs(x - far[0]) < 1e-6 for x in dk_lats) and any(abs(x - HOME[0]) < 1e-6 for x in dk_lats)


def _run_py(code: str, env_path: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_path is not None:
        env["PYTHONPATH"] = str(env_path) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env=env)


def test_importing_seawatch_drone_neither_imports_nor_patches():
    r = _run_py("""
        import collections, sys
        import seawatch.drone.link, seawatch.drone.mission, seawatch.drone.config, seawatch.drone.cmd_status
        bad = [m for m in sys.modules if m.split('.')[0] in ('dronekit', 'pymavlink')]
        assert not bad, bad
        assert not hasattr(collections, 'MutableMapping')
        link = seawatch.drone.link.MavlinkLink('udp:127.0.0.1:14550')  # creating it does not connect either
        assert 'dronekit' not in sys.modules
        import dronekit as first
        dk = seawatch.drone.link.dronekit()
        assert dk is first and not hasattr(collections, 'MutableMapping')  # dronekit2: no shim needed
        print('ok')
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_dronekit_2_9_2_style_import_gets_the_py311_shims(tmp_path: Path):
    """dronekit 2.9.2 fails at import on 3.11 (collections.MutableMapping); the loader shims and retries."""
    pkg = tmp_path / "dronekit"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        # what dronekit 2.9.2 does at import time (its Parameters subclass)
        import collections
        from dronekit import util
        class Parameters(collections.MutableMapping):
            pass
        __version__ = '2.9.2'
    """))
    (pkg / "util.py").write_text("LOADED = True\n")
    r = _run_py("""
        import collections
        from seawatch.drone.link import dronekit
        dk = dronekit()
        assert dk.__version__ == '2.9.2' and dk.util.LOADED
        assert collections.MutableMapping is __import__('collections.abc').abc.MutableMapping
        print('ok')
    """, env_path=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    (pkg / "__init__.py").write_text("import past.builtins\n")  # 2.9.2 without the `future` package
    r = _run_py("""
        from seawatch.drone.link import dronekit
        from seawatch.errors import TelemetryError
        try:
            dronekit()
        except TelemetryError as exc:
            print(exc)
    """, env_path=tmp_path)
    assert "needs the 'future' package" in r.stdout and "pip install dronekit2" in r.stdout, r.stdout + r.stderr


def test_stream_rate_request_from_config_reaches_the_vehicle():
    from seawatch.drone.config import load_drones

    sim_out, url = _endpoints("udp")
    cfg = load_drones({"drones": [{"id": "d1", "connection": url, "camera": {"width_px": 640, "height_px": 480,
                                   "hfov_deg": 70}, "stream_rate_hz": 10, "heartbeat_timeout_s": 2}]})
    sim = SimVehicle(sim_out, home=HOME, telemetry_hz=2.0).start()
    try:
        with cfg.drones[0].build_link().open(5.0) as link:
            assert link.stream_rate_hz == 10 and link.require_params is True
            _until(lambda: sim.telemetry_hz == 10.0, 2.0, "REQUEST_DATA_STREAM at 10 Hz")
            time.sleep(0.6)  # the sample already scheduled at the old 2 Hz
            n0 = link.counters.by_type["GLOBAL_POSITION_INT"]
            time.sleep(1.0)
            assert link.counters.by_type["GLOBAL_POSITION_INT"] - n0 >= 8
    finally:
        sim.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_killed_simulator_process_is_lost_then_reconnected(transport: str):
    """The vehicle as a separate process, killed with SIGKILL (the OS closes its sockets) and started again."""
    sim_out, url = _endpoints(transport)
    cmd = [sys.executable, "-m", "seawatch.drone.sim", "--out", sim_out, "--home", "54.0,7.0,0.0"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    proc = start()
    link = MavlinkLink(url, heartbeat_timeout_s=2.0, reconnect_backoff_s=0.2)
    try:
        deadline = time.monotonic() + 20.0
        while True:  # the child needs a moment to import and open its port
            try:
                link.open(3.0)
                break
            except TelemetryError:
                if time.monotonic() > deadline:
                    raise
        link.set_mode("GUIDED")
        proc.kill()
        proc.wait(5)
        _until(lambda: link.status is LinkStatus.LOST, 5.0, "status lost after kill -9")
        proc = start()
        _until(lambda: link.status is LinkStatus.CONNECTED, 20.0, "reconnected to the new process")
        assert link.counters.link_losses == 1 and link.counters.reconnects >= 1
        assert link.state.mode == "STABILIZE"  # the new vehicle, not the killed one's GUIDED
        link.set_mode("LOITER")
        assert link.state.mode == "LOITER"
    finally:
        link.close()
        proc.kill()
        proc.wait(5)
