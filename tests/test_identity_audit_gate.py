"""Identity audit: the association gate against real AIS reports of the Lemmer harbour log (F_ais).

An AIS position is where the vessel's GNSS antenna is, given in the static data as distances to bow, stern, port
and starboard (ITU-R M.1371 type 5 / 24B). A camera's waterline point lies on the hull, which for a large ship can
be more than 100 m from the antenna: TUI ISLA (135 m) has hers 5 m from the bow. The gate has to take the hull
into account, or a moored passenger ship seen by a well-calibrated camera is an ``unidentified_vessel``.
"""

from __future__ import annotations

from seawatch.drone.geometry import geod
from seawatch.streams import ais as A
from seawatch.vision.identity.fusion import GeoTrack, IdentityFuser
from seawatch.vision.identity.vessels import VesselTable


def _table_for(msgs, mmsi: int) -> tuple[VesselTable, A.AisPosition]:
    """A table holding one vessel: its static data (from an earlier broadcast) and its first position report."""
    static = next(m for m in msgs if isinstance(m, A.AisStatic) and m.mmsi == mmsi)
    pos = next(m for m in msgs if isinstance(m, A.AisPosition) and m.mmsi == mmsi and m.has_position)
    table = VesselTable()
    table.update(static)
    table.update(pos)
    return table, pos


def _offset(lat, lon, az_deg, dist_m):
    lo, la, _ = geod().fwd(lon, lat, az_deg, dist_m)
    return float(la), float(lo)


def test_real_dimensions_reach_the_table(lemmer_ais):
    table, _ = _table_for(lemmer_ais, 215441000)
    row = table.get(215441000)
    assert (row.to_bow_m, row.to_stern_m, row.to_port_m, row.to_starboard_m) == (5.0, 130.0, 3.0, 8.0)
    assert row.length_m == 135.0 and row.heading_deg == 19.0


def test_large_moored_ship_is_matched_at_its_hull_centre(lemmer_ais):
    """TUI ISLA, moored (nav status 5), heading 19 deg, antenna 5 m from the bow of 135 m: the hull centre is
    62.5 m astern of the antenna. A camera with 10 m 1-sigma sees her there 2 s after her report."""
    table, pos = _table_for(lemmer_ais, 215441000)
    t = pos.time_ns + 2 * 10**9
    # centre of the hull: (130 - 5) / 2 = 62.5 m astern (heading + 180) and (8 - 3) / 2 = 2.5 m to starboard
    lat, lon = _offset(pos.lat_deg, pos.lon_deg, 19.0 + 180.0, 62.5)
    lat, lon = _offset(lat, lon, 19.0 + 90.0, 2.5)
    ids = IdentityFuser().update([GeoTrack(1, t, lat, lon, pos_sigma_m=10.0)], table, t)
    assert ids[1].kind == "ais_only", ids[1]
    assert ids[1].mmsi == 215441000 and ids[1].ais_name == "TUI ISLA"


def test_large_ship_matched_near_her_stern(lemmer_ais):
    """The bottom centre of a box on a ship seen from astern is near her stern: 120 m from the antenna."""
    table, pos = _table_for(lemmer_ais, 215441000)
    t = pos.time_ns + 2 * 10**9
    lat, lon = _offset(pos.lat_deg, pos.lon_deg, 19.0 + 180.0, 120.0)
    ids = IdentityFuser().update([GeoTrack(1, t, lat, lon, pos_sigma_m=10.0)], table, t)
    assert ids[1].mmsi == 215441000, ids[1]


def test_boat_beyond_the_bow_is_not_the_ship(lemmer_ais):
    """The hull is slack along the ship only: a boat 150 m ahead of TUI ISLA's bow is someone else."""
    table, pos = _table_for(lemmer_ais, 215441000)
    t = pos.time_ns + 2 * 10**9
    lat, lon = _offset(pos.lat_deg, pos.lon_deg, 19.0, 150.0)
    ids = IdentityFuser().update([GeoTrack(1, t, lat, lon, pos_sigma_m=10.0)], table, t)
    assert ids[1].kind == "none", ids[1]


def test_heading_unknown_uses_the_antenna_radius(lemmer_ais):
    """GERO-B (77 m, antenna 61 m from the bow) reports no heading and COG 304.5 at SOG 0 (noise): where the hull
    lies is unknown, so a waterline point anywhere within the antenna's reach of the hull still matches."""
    table, pos = _table_for(lemmer_ais, 244820279)
    assert pos.heading_deg is None and pos.sog_kn == 0.0
    t = pos.time_ns + 2 * 10**9
    lat, lon = _offset(pos.lat_deg, pos.lon_deg, 123.0, 55.0)
    ids = IdentityFuser().update([GeoTrack(1, t, lat, lon, pos_sigma_m=10.0)], table, t)
    assert ids[1].mmsi == 244820279, ids[1]


def test_small_boat_without_dimensions_keeps_the_point_gate(lemmer_ais):
    """A vessel whose static data never came (no dimensions) keeps the plain point gate: 244660492 (class A,
    no type 5 in the log) is not matched 120 m away."""
    pos = next(m for m in lemmer_ais if isinstance(m, A.AisPosition) and m.mmsi == 244660492)
    table = VesselTable()
    table.update(pos)
    t = pos.time_ns + 2 * 10**9
    lat, lon = _offset(pos.lat_deg, pos.lon_deg, 90.0, 120.0)
    ids = IdentityFuser().update([GeoTrack(1, t, lat, lon, pos_sigma_m=10.0)], table, t)
    assert ids[1].kind == "none"
    lat, lon = _offset(pos.lat_deg, pos.lon_deg, 90.0, 20.0)
    ids = IdentityFuser().update([GeoTrack(2, t, lat, lon, pos_sigma_m=10.0)], table, t)
    assert ids[2].mmsi == 244660492


def test_speed_without_course_widens_the_gate(lemmer_ais):
    """A report with a SOG but COG "not available" (class B sets are known for it): the vessel was left where it
    was reported, with the uncertainty of a vessel at rest, so 30 s later at 8 kn (123 m on) it matched nothing.
    The real report of LIBERTAS (211736530, class B, COG not available) with the speed she would have under way."""
    from dataclasses import replace

    pos = next(m for m in lemmer_ais if isinstance(m, A.AisPosition) and m.mmsi == 211736530)
    assert pos.cog_deg is None and pos.ais_class == "B"
    table = VesselTable()
    table.update(replace(pos, sog_kn=8.0))
    t = pos.time_ns + 30 * 10**9
    lat, lon = _offset(pos.lat_deg, pos.lon_deg, 250.0, 8.0 * 1852 / 3600 * 30)
    ids = IdentityFuser().update([GeoTrack(1, t, lat, lon, pos_sigma_m=15.0)], table, t)
    assert ids[1].mmsi == 211736530, ids[1]
