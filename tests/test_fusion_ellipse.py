"""The association gate follows the track's error ellipse (long along a camera's line of sight, narrow across it).

A far boat seen by a fixed camera is ±hundreds of metres along the line of sight and metres across it. The gate
used to be a circle of the ellipse's long axis, cut at 500 m: a boat whose AIS vessel lay 2 km down its line of
sight (inside its own uncertainty) alarmed as unidentified, and an AIS vessel 300 m off its bearing, which the
camera rules out, was taken for it. AIS reports go through the real ingest path (pyais -> AisDecoder ->
VesselTable); the pipeline tests run a calibrated camera through ``Pipeline.process``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from seawatch.streams.ais import AisDecoder
from seawatch.vision.identity.fusion import FusionConfig, GeoTrack, IdentityFuser
from seawatch.vision.identity.rules import UNIDENTIFIED_VESSEL, IdentityRules
from seawatch.vision.identity.vessels import VesselTable

pyais = pytest.importorskip("pyais")
from pyproj import Geod  # noqa: E402

GEOD = Geod(ellps="WGS84")
TRACK = (53.60, 8.60)  # lat, lon of the far track
SIGHT_DEG = 30.0  # the camera's line of sight through the track (azimuth of the ellipse's major axis)
T0_NS = int(dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc).timestamp()) * 10**9
MMSI_ALONG = 244014164
MMSI_ACROSS = 244014165


def _tag(sentence: str, t_ns: int) -> str:
    body = f"c:{t_ns // 10**6}"
    cs = 0
    for ch in body.encode():
        cs ^= ch
    return f"\\{body}*{cs:02X}\\{sentence}"


def _from_track(along_m: float, across_m: float) -> tuple[float, float]:
    """(lat, lon) ``along_m`` down the line of sight and ``across_m`` to its right, from the track."""
    az = np.degrees(np.arctan2(across_m, along_m)) + SIGHT_DEG
    lon, lat, _ = GEOD.fwd(TRACK[1], TRACK[0], az, float(np.hypot(along_m, across_m)))
    return float(lat), float(lon)


def _table(*vessels: tuple[int, tuple[float, float]], t_ns: int = T0_NS) -> VesselTable:
    table = VesselTable()
    dec = AisDecoder(clock_ns=lambda: t_ns)
    for mmsi, (lat, lon) in vessels:
        (ln,) = pyais.encode_dict(dict(msg_type=1, mmsi=mmsi, lat=lat, lon=lon, speed=0.0, course=0.0,
                                       heading=0, status=5), talker_id="AI")
        table.update(dec.feed_line(_tag(ln, t_ns)))
    return table


def _far(track_id: int = 1, semi_major_m: float = 700.0, t_ns: int = T0_NS, **kw) -> GeoTrack:
    """A far track: ±``semi_major_m`` along the line of sight, ±6 m across it."""
    return GeoTrack(track_id, t_ns, TRACK[0], TRACK[1], pos_sigma_m=semi_major_m, semi_major_m=semi_major_m,
                    semi_minor_m=6.0, orientation_deg=SIGHT_DEG, **kw)


def test_far_track_matches_the_ais_vessel_2_km_down_its_line_of_sight():
    """±700 m along the line of sight: an AIS vessel 2000 m along it and 20 m across is the boat (2.9 sigma)."""
    table = _table((MMSI_ALONG, _from_track(2000.0, 20.0)))
    ident = IdentityFuser().update([_far()], table, T0_NS)[1]
    assert ident.kind == "ais_only" and ident.mmsi == MMSI_ALONG
    assert ident.distance_m == pytest.approx(2000.0, abs=5.0)
    assert not ident.too_far_to_judge and ident.ambiguous is None


def test_far_track_does_not_match_an_ais_vessel_300_m_across_its_line_of_sight_and_says_why():
    """The camera's bearing is good to metres: 300 m off it is not this boat, though 300 m is well inside the long
    axis. The reason speaks of along / across the line of sight and names the test that failed."""
    table = _table((MMSI_ACROSS, _from_track(100.0, 300.0)))
    ident = IdentityFuser().update([_far()], table, T0_NS)[1]
    assert ident.kind == "none" and ident.mmsi is None and not ident.too_far_to_judge
    why = ident.unmatched_reason
    assert why.startswith(f"nearest AIS vessel MMSI {MMSI_ACROSS} is 316 m away"), why
    assert "100 m along the line of sight (range uncertainty \u00b1700 m, gate 2450 m)" in why
    assert "300 m across it (gate 41 m): outside the gate across the line of sight" in why
    # the gate in the vessel's direction, for the API / UI
    assert 41.0 < ident.nearest_gate_m < 300.0 and ident.nearest_distance_m == pytest.approx(316.2, abs=1.0)
    a = ident.as_attributes()
    assert a["ais_unmatched_reason"] == why and "too_far_to_judge" not in a


def test_far_track_missing_along_the_line_of_sight_says_so():
    """An AIS vessel 2600 m down the line of sight of a ±700 m track: beyond the range uncertainty's gate."""
    table = _table((MMSI_ALONG, _from_track(2600.0, 5.0)))
    ident = IdentityFuser().update([_far()], table, T0_NS)[1]
    assert ident.kind == "none"
    assert ("2600 m along the line of sight (range uncertainty \u00b1700 m, gate 2450 m) and 5 m across "
            "it (gate 41 m): outside the gate along the line of sight") in ident.unmatched_reason


def test_near_track_with_a_small_ellipse_behaves_as_the_circle_did():
    """A near boat (±12 m, nearly round): the same identities, confidences and gate as the old circle of its long
    axis; a vessel 45 m away matches, one 100 m away does not, with the old plain-distance reason."""
    near = _table((MMSI_ALONG, _from_track(30.0, 33.0)), (MMSI_ACROSS, _from_track(-100.0, 0.0)))
    ell = GeoTrack(1, T0_NS, TRACK[0], TRACK[1], pos_sigma_m=12.0, semi_major_m=12.0, semi_minor_m=10.0,
                   orientation_deg=SIGHT_DEG)
    circle = GeoTrack(1, T0_NS, TRACK[0], TRACK[1], pos_sigma_m=12.0)
    got = IdentityFuser().update([ell], near, T0_NS)[1]
    assert got.kind == "ais_only" and got.mmsi == MMSI_ALONG
    old = IdentityFuser().update([circle], near, T0_NS)[1]
    assert (old.kind, old.mmsi) == (got.kind, got.mmsi) and old.confidence == pytest.approx(got.confidence, abs=0.05)
    alone = _table((MMSI_ACROSS, _from_track(-100.0, 0.0)))
    miss = IdentityFuser().update([ell], alone, T0_NS)[1]
    assert miss.kind == "none"
    assert miss.unmatched_reason.endswith("outside the 55 m gate"), miss.unmatched_reason  # 3.5 x hypot(12, 10)


def test_old_ais_report_does_not_open_the_gate_across_the_line_of_sight():
    """The 500 m cap still bounds what an old AIS report's grown sigma adds (across the line of sight here, where
    the track's own axis is 6 m); the track's own long axis is not cut by it."""
    cfg = FusionConfig(ais_sigma_growth_mps=5.0)  # a 300 s old report: sigma ~1510 m
    table = _table((MMSI_ACROSS, _from_track(0.0, 700.0)), t_ns=T0_NS - 300 * 10**9)
    ident = IdentityFuser(config=cfg).update([_far()], table, T0_NS)[1]
    assert ident.kind == "none" and ident.nearest_gate_m == pytest.approx(500.0, abs=1.0)
    assert "700 m across it (gate 500 m)" in ident.unmatched_reason


def test_two_ais_vessels_inside_one_ellipse_are_ambiguous_and_lower_the_confidence():
    """Two vessels 600 m and 900 m down the line of sight of a ±700 m track: the assignment picks the nearer, the
    identity says it is ambiguous and names the other, and its confidence is below the one-vessel case."""
    one = _table((MMSI_ALONG, _from_track(600.0, 0.0)))
    two = _table((MMSI_ALONG, _from_track(600.0, 0.0)), (MMSI_ACROSS, _from_track(900.0, 0.0)))
    alone = IdentityFuser().update([_far()], one, T0_NS)[1]
    both = IdentityFuser().update([_far()], two, T0_NS)[1]
    assert alone.mmsi == both.mmsi == MMSI_ALONG and alone.ambiguous is None
    assert both.ambiguous.startswith("ambiguous: 2 AIS vessels lie inside this track's position uncertainty")
    assert f"MMSI {MMSI_ACROSS} 900 m away" in both.ambiguous
    assert both.as_attributes()["ambiguous"] == both.ambiguous
    assert both.confidence < 0.7 * alone.confidence


def test_an_absurd_ellipse_near_the_horizon_claims_no_vessel_kilometres_away_and_is_too_far_to_judge():
    """±5 km along the line of sight (near the horizon): the gate stops at ``max_gate_along_m`` (3 km), so a vessel
    3.5 km down the line is not claimed; and the track is too far to judge, which the reason says first."""
    table = _table((MMSI_ALONG, _from_track(3500.0, 0.0)))
    ident = IdentityFuser().update([_far(semi_major_m=5000.0)], table, T0_NS)[1]
    assert ident.kind == "none" and ident.too_far_to_judge
    assert ident.unmatched_reason.startswith(
        "unknown: too far to judge (position \u00b15000 m along the line of sight, 3.5 sigma 17500 m is over the "
        "3000 m bound); nearest AIS vessel"), ident.unmatched_reason
    assert ident.as_attributes()["too_far_to_judge"] is True
    # a vessel inside the bound is still claimed (with its identity) even by a track too far to judge
    near = _table((MMSI_ALONG, _from_track(2500.0, 0.0)))
    assert IdentityFuser().update([_far(semi_major_m=5000.0)], near, T0_NS)[1].mmsi == MMSI_ALONG


def test_too_far_to_judge_raises_no_unidentified_vessel_until_it_comes_close():
    """Rules: a track too far to judge is not timed as unidentified; once its ellipse is short enough to judge,
    the timer starts and ``unidentified_vessel`` follows ``unidentified_after_s`` later."""
    other = _from_track(0.0, 800.0)  # some AIS vessel well off the bearing, so AIS is not blind
    fuser, rules = IdentityFuser(), IdentityRules(unidentified_after_s=5.0)
    decisions = []
    for k in range(40):  # 20 s far (±1000 m: 3.5 sigma 3500 m), then 20 s close enough (±300 m)
        t = T0_NS + k * 500_000_000
        table = _table((MMSI_ACROSS, other), t_ns=t)
        track = _far(semi_major_m=1000.0 if k < 40 // 2 else 300.0, t_ns=t)
        ids = fuser.update([track], table, t)
        assert ids[1].kind == "none" and ids[1].too_far_to_judge == (k < 20)
        decisions += [(k, d) for d in rules.update(t, [track], ids, table)]
    starts = [(k, d) for k, d in decisions if d.type == UNIDENTIFIED_VESSEL and d.phase == "start"]
    assert len(starts) == 1, decisions
    k, d = starts[0]
    assert k == 30  # timer from k=20 (close enough), 5 s = 10 updates later
    assert "too far" not in d.reason and "800 m across it" in d.reason


def test_fusion_config_rejects_an_outer_bound_below_the_cap():
    with pytest.raises(ValueError, match="max_gate_along_m"):
        FusionConfig(max_gate_along_m=100.0)
    with pytest.raises(ValueError, match="gate_sigmas"):
        FusionConfig(gate_sigmas=float("nan"))


def test_a_boat_approaching_from_the_horizon_alarms_only_once_it_is_close_enough_to_judge(tmp_path):
    """Through ``Pipeline.process`` with a calibrated camera (20 m up): an unregistered boat without AIS 2600 m
    out (±~1700 m along the line of sight) is "unknown: too far to judge" and raises no ``unidentified_vessel``;
    it comes in to 1200 m, and ``unidentified_after_s`` after it is close enough to judge (about 2000 m: 3.5 x
    ±850 m < 3000 m) it does, its reason placing the one AIS vessel around 400 m across its line of sight."""
    from test_pipeline_identity import CAM, CALIB, STEP_NS, T0_NS as P0_NS, _ahead, _box_at, _nmea, _square

    from seawatch.vision.pipeline import Pipeline, load_pipeline_config

    ais = tmp_path / "ais.nmea"
    _nmea(ais, 211000002, _ahead(1500.0, 400.0), "SEEADLER", -20.0, 60.0)
    reg = tmp_path / "registry.csv"
    reg.write_text("name,mmsi,licence_status,blacklisted\nSEEADLER,211000002,valid,no\n", encoding="utf-8")
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://cam/quay", "models": ["boxes"], "calibration": CALIB}],
        "zones": [{"id": "approach", "source": "quay", "polygon_lonlat": _square(CAM[0], CAM[1], 5000.0),
                   "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
        "ais": [str(ais)], "registry": str(reg), "identity": {"unidentified_after_s": 5.0},
    })

    class Approaching:
        name, labels = "boxes", ("vessel",)
        range_m = 2600.0

        def detect(self, images):
            from seawatch.vision.detections import Detections

            box = np.asarray([_box_at(_ahead(self.range_m, 0.0))], np.float32)
            return [Detections(box, np.full(1, 0.9, np.float32), np.zeros(1, np.int32), self.labels,
                               model=self.name) for _ in images]

    det = Approaching()
    pipe = Pipeline(cfg, [], detectors={"boxes": det})
    image = np.zeros((720, 1280, 3), np.uint8)
    events = []
    for k in range(100):  # 15 s at 2600 m, 20 s coming in to 1200 m, 15 s there
        det.range_m = 2600.0 - 1400.0 * min(1.0, max(0.0, (k - 30) / 40))
        events += pipe.process("quay", P0_NS + k * STEP_NS, image)
    events += pipe.close()
    zone = [e for e in events if e.type == "vessel_in_zone" and e.phase == "start"]
    assert len(zone) == 1 and zone[0].attributes["identity"] == "unknown"
    assert zone[0].attributes["identity_reason"].startswith("unknown: too far to judge (position \u00b1")
    unident = [e for e in events if e.type == "unidentified_vessel"]
    assert [e.phase for e in unident] == ["start", "end"], [(e.type, e.phase) for e in events]
    start = unident[0]
    assert 21.0 <= (start.start_ns - P0_NS) / 1e9 <= 26.0  # the timer ran from when it could be judged
    assert (start.at_ns - start.start_ns) / 1e9 == pytest.approx(5.0, abs=0.51)
    assert "MMSI 211000002 (SEEADLER)" in start.attributes["reason"] and "too far" not in start.attributes["reason"]
    assert "across it (gate" in start.attributes["reason"]
