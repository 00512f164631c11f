"""The AIS entry of ``/api/sources`` (the sources table's AIS row) while its feeds are down: its ``state`` is ``down``
as soon as every feed is down by ``identity.ais_down_after_s`` (when ``ais_feed_down`` is raised and unidentified
vessels are held), not ``running`` in green beside that incident until the 5-minute ``stale``; one feed of two up
keeps it running (nothing is held), and it is running again once a feed is heard."""

from __future__ import annotations

import time

import pytest

from conftest import free_port
from seawatch.service.fleet import Fleet
from seawatch.vision.vessel_identity import IdentityConfig, VesselIdentityStage
from test_ais_feed_down import NmeaServer, _position_line
from test_ais_feed_status import _settings
from test_pipeline_identity import BOAT_A, MMSI_A

pytest.importorskip("pyais")


def _state(fleet: Fleet) -> tuple[str, list[str]]:
    (entry,) = fleet.ais()
    return entry["state"], [f["state"] for f in entry["feed_states"]]


def _until(fleet: Fleet, want: str, timeout_s: float = 6.0) -> tuple[str, list[str]]:
    deadline = time.monotonic() + timeout_s
    while (got := _state(fleet))[0] != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_the_ais_row_is_down_while_every_feed_is_down(tmp_path):
    server = NmeaServer([_position_line(MMSI_A, BOAT_A)])
    dead = f"tcp://127.0.0.1:{free_port()}"  # nothing listens: never connected
    urls = [server.url, dead]
    fleet = Fleet(_settings(tmp_path, urls))
    fleet.identity = VesselIdentityStage(IdentityConfig(ocr={"enabled": False}, ais_down_after_s=0.5), ais=urls)
    fleet.start()
    fleet.identity.start()
    try:
        time.sleep(1.0)
        assert _until(fleet, "running") == ("running", ["up", "down"])  # one feed heard: AIS identifies, not held
        server.sending.clear()  # the dispatcher's receiver unplugged: connected and silent
        state, feeds = _until(fleet, "down")
        assert (state, feeds) == ("down", ["silent", "down"])  # was "running" (stale only after 300 s)
        server.sending.set()
        assert _until(fleet, "running")[0] == "running"
    finally:
        fleet.identity.stop()
        fleet.stop()
        server.close()
