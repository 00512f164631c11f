"""Identity audit: the map's AIS table (``Fleet.vessels``) must say how old a vessel's *position* is. ``age_s``
counts any message (static data, binary messages), so a moored ship whose position is minutes old looked fresh."""

from __future__ import annotations

import pytest

from seawatch.service.fleet import Fleet
from seawatch.vision.identity.vessels import VesselTable


class _Stage:
    def __init__(self, table):
        self.table = table


def test_vessels_carry_the_position_age(lemmer_ais):
    table = VesselTable()
    table.update_many(lemmer_ais)
    fleet = Fleet.__new__(Fleet)  # only the AIS side: no drones, no settings
    fleet.identity = _Stage(table)
    rows = {v["mmsi"]: v for v in fleet.vessels()}
    tui = rows[215441000]  # TUI ISLA: position 138 s before the log ends, type 5 and type 8 at 91 and 90 s
    assert tui["age_s"] == pytest.approx(90.0, abs=0.5)
    assert tui["position_age_s"] == pytest.approx(138.0, abs=0.5)
    assert rows[244820267]["position_age_s"] is None  # PLEIADE: class B static data only, no position
