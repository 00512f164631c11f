"""Identity audit: an ``unidentified_vessel`` event must tell the operator why no AIS vessel matched: the nearest
one, how far it was and the gate, or that there was no AIS at all (a feed that is down makes every vessel in view
unidentified, and the event has to say so). Replayed on the real Lemmer harbour log."""

from __future__ import annotations

from seawatch.drone.geometry import geod
from seawatch.vision.identity.fusion import GeoTrack, IdentityFuser
from seawatch.vision.identity.rules import IdentityRules
from seawatch.vision.identity.vessels import VesselTable

S = 10**9


def _unidentified(table, lat, lon, t0):
    fuser, rules = IdentityFuser(), IdentityRules()
    for k in range(0, 70, 5):
        t = t0 + k * S
        tracks = [GeoTrack(3, t, lat, lon, pos_sigma_m=15.0)]
        for d in rules.update(t, tracks, fuser.update(tracks, table, t), table):
            if d.type == "unidentified_vessel" and d.phase == "start":
                return d
    raise AssertionError("no unidentified_vessel")


def test_unidentified_names_the_nearest_ais_vessel_and_the_gate(lemmer_ais):
    table = VesselTable()
    table.update_many(lemmer_ais)
    t_end = table.latest_ns
    # 1 km south of COASTAL ROAMER (244824000, a tug reporting every 10 s): south of every vessel of the log
    tug = table.get(244824000)
    lon, lat, _ = geod().fwd(tug.lon_deg, tug.lat_deg, 180.0, 1000.0)
    rows = {r.mmsi: r for r in table.snapshot(t_end, with_position=True)}
    _, _, d = geod().inv([lon] * len(rows), [lat] * len(rows), [r.lon_deg for r in rows.values()],
                         [r.lat_deg for r in rows.values()])
    dec = _unidentified(table, float(lat), float(lon), t_end)
    a = dec.attributes
    # the nearest in units of its own gate (a big ship with a stale report may be nearer than a small fresh one)
    nearest = rows[a["ais_nearest_mmsi"]]
    assert a["ais_nearest_name"] == nearest.name
    assert a["ais_nearest_distance_m"] >= min(d) - 150.0  # the hull centre may be up to half a hull nearer
    assert a["ais_nearest_distance_m"] > a["ais_nearest_gate_m"] > 0
    assert f"MMSI {nearest.mmsi}" in a["ais_unmatched_reason"] and "outside the" in a["ais_unmatched_reason"]
    assert a["ais_nearest_gate_m"] <= 500.0
    assert f"MMSI {nearest.mmsi}" in dec.reason


def test_unidentified_with_no_ais_says_so(lemmer_ais):
    dec = _unidentified(VesselTable(), 52.84, 5.70, 1586295800 * S)
    assert "AIS feed" in dec.attributes["ais_unmatched_reason"] and "AIS feed" in dec.reason
    assert "ais_nearest_mmsi" not in dec.attributes


def test_unidentified_with_only_stale_ais_says_how_old(lemmer_ais):
    table = VesselTable(max_age_s=3600)
    table.update_many(lemmer_ais)
    dec = _unidentified(table, 52.84, 5.70, table.latest_ns + 1200 * S)
    assert "no AIS position report within" in dec.attributes["ais_unmatched_reason"]
