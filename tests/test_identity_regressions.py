"""Regressions found by the vessel-identity audit (AIS clock outliers, sister hull numbers, Latin registrations).

Each test failed on the code before its fix.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from seawatch.streams import ais
from seawatch.streams.ais import AisPosition
from seawatch.vision.identity.hulltext import normalise_hull
from seawatch.vision.identity.registry import VesselRegistry
from seawatch.vision.identity.vessels import VesselTable

pyais = pytest.importorskip("pyais")

S = 10**9
YEAR_S = 365 * 86_400
LEMMER_NOW_NS = 1586295753 * S  # the Lemmer log's last RMC time (2020-04-07T21:42:33Z)


def _cs(body: bytes) -> bytes:
    c = 0
    for b in body:
        c ^= b
    return b"%02X" % c


def _lemmer(shared_media):
    path = shared_media / "F_ais" / "ais_gpsd_lemmer_nl_ais-nmea.log"
    if not path.is_file():
        from conftest import missing

        missing(f"{path} is absent")
    return path


def _show(path, *extra) -> dict:
    from seawatch.vision.identity import cmd_ais_show

    p = argparse.ArgumentParser()
    cmd_ais_show.add_arguments(p)
    rows, stats, now = cmd_ais_show.collect(p.parse_args([str(path), *extra]))
    return {"now": now, "mmsis": sorted(r.mmsi for r in rows), "stats": stats, "rows": rows}


# ------------------------------------------------------------------------- ais show: a wrong but past "now"
def test_ais_show_ignores_one_rmc_fix_with_a_date_a_year_off(shared_media, tmp_path):
    """One GNSS fix of the real Lemmer log dated 2021 instead of 2020 (still in the past, so plausible): the AIS
    lines it times used to become the table's "now" and hide 31 of the 33 vessels."""
    src = _lemmer(shared_media)
    lines = src.read_bytes().split(b"\n")
    k = next(i for i in range(len(lines) // 2, len(lines) - 1)
             if lines[i].startswith(b"$GPRMC") and lines[i + 1].startswith(b"!AIVDM"))
    body = lines[k][1:lines[k].rfind(b"*")].replace(b",070420,", b",070421,")
    assert b",070421," in body
    lines[k] = b"$" + body + b"*" + _cs(body)
    bad = tmp_path / "lemmer_rmc_year_off.log"
    bad.write_bytes(b"\n".join(lines))

    good, got = _show(src, "--rmc-time"), _show(bad, "--rmc-time")
    assert good["now"] == LEMMER_NOW_NS and len(good["mmsis"]) == 33
    assert got["now"] == LEMMER_NOW_NS
    assert got["mmsis"] == good["mmsis"]
    assert got["stats"]["malformed"]["time_outlier"] >= 1
    # and no vessel is pinned to the wrong year
    assert all(abs(r.last_seen_ns - LEMMER_NOW_NS) < 3600 * S for r in got["rows"])


def test_ais_show_ignores_a_tag_block_a_year_ahead_of_the_log(shared_media, tmp_path):
    """A line stamped a year after the log (but before today) at its end: 'now' stays the log's own end."""
    src = _lemmer(shared_media)
    sentence = b"!AIVDM,1,1,,A,13RlIW?04F1beOVEFLB9bRvH0L0L,0*6C"
    tag = b"c:%d" % (LEMMER_NOW_NS // S + YEAR_S)
    bad = tmp_path / "lemmer_tag_year_ahead.log"
    bad.write_bytes(src.read_bytes().rstrip(b"\n") + b"\n\\" + tag + b"*" + _cs(tag) + b"\\" + sentence + b"\n")
    got = _show(bad, "--rmc-time")
    assert got["now"] == LEMMER_NOW_NS and len(got["mmsis"]) == 33
    assert got["stats"]["malformed"]["time_outlier"] == 1


def test_ais_show_counts_invalid_mmsis(tmp_path, capsys):
    from seawatch.vision.identity import cmd_ais_show

    lines = pyais.encode_dict({"msg_type": 1, "mmsi": 0, "lat": 52.8, "lon": 5.7}, talker_id="AI")
    lines += pyais.encode_dict({"msg_type": 1, "mmsi": 244123456, "lat": 52.8, "lon": 5.7}, talker_id="AI")
    f = tmp_path / "mmsi0.nmea"
    f.write_text("\n".join(lines) + "\n")
    p = argparse.ArgumentParser()
    cmd_ais_show.add_arguments(p)
    assert cmd_ais_show.run(p.parse_args([str(f), "--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stats"]["invalid_mmsi"] == 1 and [v["mmsi"] for v in doc["vessels"]] == [244123456]


# ------------------------------------------------------------------------------------- drop_time_outliers
def _pos(mmsi: int, t_s: float, src: str = "tag_block") -> AisPosition:
    return AisPosition(mmsi, 1, int(t_s * S), src, 52.8, 5.7, 0.0, None, None, 0, None, "A")


@pytest.mark.parametrize(
    "times_s, dropped",
    [
        ([0, 1, 2, 3, 4, 5, 6, YEAR_S, 7, 8, 9, 10, 11, 12], [YEAR_S]),  # one stamp a year ahead
        ([-YEAR_S, 0, 1, 2, 3, 4, 5, 6], [-YEAR_S]),  # the very first line
        ([0, 1, 2, 3, 4, 5, 6, YEAR_S], [YEAR_S]),  # the very last line
        ([0, 1, 2, 3, 4, 7200, 7201, 7202, 7203, 7204], []),  # a real two-hour gap is kept
        ([0, 1, 2, YEAR_S, YEAR_S + 1, 3, 4, 5, 6, 7, 8], [YEAR_S, YEAR_S + 1]),  # a second's worth of bad fixes
        ([5], []),  # a lone message cannot be judged
        ([], []),
    ],
)
def test_drop_time_outliers(times_s, dropped):
    stats = ais.AisStats()
    msgs = [_pos(100_000_000 + i, t) for i, t in enumerate(times_s)]
    kept = list(ais.drop_time_outliers(msgs, max_jump_s=600, stats=stats))
    assert sorted(m.time_ns // S for m in msgs if m not in kept) == sorted(dropped)
    assert [m for m in msgs if m in kept] == kept  # order kept
    assert stats.malformed["time_outlier"] == len(dropped)


def test_drop_time_outliers_leaves_receiver_timed_messages_alone():
    msgs = [_pos(100_000_001, 0), _pos(100_000_002, 1), _pos(100_000_003, YEAR_S, "receiver"), _pos(100_000_004, 2)]
    assert len(list(ais.drop_time_outliers(msgs))) == 4


# --------------------------------------------------------------------------- vessel table: a clock jump
def test_a_report_stamped_a_year_ahead_does_not_freeze_its_vessel():
    """Out-of-order reports (seconds) still keep the newer position; a stored time more than max_age ahead is a
    wrong stamp, and the next real report re-anchors the row (it used to stay frozen and 'live' for a year)."""
    table = VesselTable(max_age_s=600)
    t0 = 1_700_000_000
    table.update(AisPosition(244000001, 1, (t0 + YEAR_S) * S, "tag_block", 52.80, 5.70, 0.0, None, None, 0, None, "A"))
    table.update(AisPosition(244000001, 1, t0 * S, "tag_block", 52.81, 5.71, 0.0, None, None, 0, None, "A"))
    r = table.get(244000001)
    assert (r.lat_deg, r.position_time_ns, r.last_seen_ns) == (52.81, t0 * S, t0 * S)
    assert [x.mmsi for x in table.snapshot(t0 * S + 60 * S)] == [244000001]
    # an ordinary late report (30 s) still does not move it back
    table.update(AisPosition(244000001, 1, (t0 - 30) * S, "tag_block", 52.0, 5.0, 0.0, None, None, 0, None, "A"))
    assert table.get(244000001).lat_deg == 52.81


# ------------------------------------------------------------------------ registry: sister hull numbers
REG = """name,name_latin,hull_number,mmsi,licence_status
浙岱渔03891,ZHE DAI YU 3891,浙岱渔03891,412420001,valid
HAI XUN 168,,HAI XUN 168,412000002,valid
ZEEHOND,,UK-12,244000001,valid
"""


@pytest.mark.parametrize("read", ["浙岱渔03892", "浙岱渔0389", "HAI XUN 169", "HAIXUN 186", "UK 13", "UK 2"])
def test_a_sister_hull_number_one_digit_off_is_not_the_registered_vessel(read):
    reg = VesselRegistry.from_text(REG)
    assert reg.best(read, min_score=0.85) is None
    # still offered as a candidate to a reviewer
    assert reg.match(read, min_score=0.75)


@pytest.mark.parametrize("read, hull", [("淅岱渔03891", "浙岱渔03891"), ("HAI XUM 168", "HAIXUN168"),
                                        ("MIN SHI YU 6688", None)])
def test_a_misread_prefix_still_matches(read, hull):
    reg = VesselRegistry.from_text(REG + "闽狮渔06688,MIN SHI YU 06688,闽狮渔06688,412440001,valid\n")
    m = reg.best(read, min_score=0.85)
    assert m is not None
    assert m.entry.hull_number == (hull or "闽狮渔06688")


def test_an_unregistered_sister_vessel_raises_unidentified_vessel():
    """The safety alert itself: a boat reading 浙岱渔03892 (not registered; its sister 03891 is) with no AIS."""
    from seawatch.vision.identity.fusion import GeoTrack, IdentityFuser
    from seawatch.vision.identity.ocr import HullRead
    from seawatch.vision.identity.rules import IdentityRules

    reg = VesselRegistry.from_text(REG)
    fuser, rules = IdentityFuser(reg), IdentityRules(registry=reg, unidentified_after_s=10.0)
    hull = HullRead("浙岱渔03892", 0.9, 1.0, 5, 5, True)
    t0 = 1_767_225_600 * S
    out = []
    for k in range(13):
        t = t0 + k * S
        tracks = [GeoTrack(7, t, 29.9, 122.1, 15.0, hull=hull)]
        ids = fuser.update(tracks, VesselTable(), t)
        assert ids[7].kind == "none" and ids[7].hull_registry is None
        out += rules.update(t, tracks, ids, None)
    starts = [d for d in out if d.type == "unidentified_vessel" and d.phase == "start"]
    assert len(starts) == 1 and "浙岱渔03892" in starts[0].reason


def test_ais_name_of_a_sister_vessel_is_no_registry_identity():
    """AIS broadcasting HAI XUN 169 (unregistered) is not 'HAI XUN 168 under the wrong MMSI'."""
    from seawatch.vision.identity.fusion import GeoTrack, IdentityFuser

    reg = VesselRegistry.from_text(REG)
    t = 1_767_225_600 * S
    table = VesselTable()
    table.update(AisPosition(412000099, 1, t, "tag_block", 29.9, 122.1, 0.0, None, None, 0, None, "A"))
    table.update(ais.AisStatic(412000099, 5, t, "tag_block", name="HAI XUN 169"))
    ident = IdentityFuser(reg).update([GeoTrack(1, t, 29.9, 122.1, 10.0)], table, t)[1]
    assert ident.kind == "ais_only" and ident.mismatch is None and ident.registry is None


# ---------------------------------------------------------------- Latin registrations: O/0, l/1 in the number
@pytest.mark.parametrize("a, b", [("SC 1O", "SC-10"), ("UK l2", "UK 12"), ("HAI XUN I68", "HAI XUN 168"),
                                  ("uk-I2", "UK12"), ("DE ZEE 1O", "DE ZEE 10")])
def test_latin_registration_number_confusions_normalise_alike(a, b):
    assert normalise_hull(a) == normalise_hull(b)


@pytest.mark.parametrize("text, norm", [("ORANJE B", "ORANJEB"), ("HAI XUN", "HAIXUN"), ("ST. JOHN", "STJOHN"),
                                        ("浙岱渔 O3891 号", "浙岱渔03891"), ("SCH 6", "SCH6")])
def test_latin_names_keep_their_letters(text, norm):
    assert normalise_hull(text) == norm


def test_an_ocr_read_with_o_for_zero_finds_the_latin_registration():
    reg = VesselRegistry.from_text(REG + "SC 10,,SC-10,244000002,valid\n")
    m = reg.best("SC 1O", min_score=0.85)
    assert m is not None and m.score == 1.0 and m.entry.mmsi == 244000002


# ----------------------------------------------------------------------- dead reckoning below 0.1 kn
def test_a_vessel_slower_than_a_tenth_of_a_knot_stays_where_it_reported():
    from seawatch.vision.identity.fusion import extrapolate

    t0 = 1_700_000_000 * S
    table = VesselTable()
    table.update(AisPosition(244000003, 1, t0, "tag_block", 52.8, 5.7, 0.05, 123.0, None, 1, None, "A"))
    (p,) = extrapolate(table.snapshot(t0 + 300 * S), t0 + 300 * S)
    assert (p.lat_deg, p.lon_deg) == (52.8, 5.7)
    table.update(AisPosition(244000004, 1, t0, "tag_block", 52.8, 5.7, 2.0, 90.0, None, 0, None, "A"))
    moved = [q for q in extrapolate(table.snapshot(t0 + 300 * S), t0 + 300 * S) if q.mmsi == 244000004][0]
    assert moved.lon_deg > 5.7 and np.isclose(moved.lat_deg, 52.8, atol=1e-4)
