"""Vessel registry CSV import and lookups; hull-number and name normalisation."""

from __future__ import annotations

import datetime as dt

import pytest

from seawatch.errors import InputError
from seawatch.paths import DATASET_DIR
from seawatch.vision.identity.hulltext import normalise_hull, parse_hull, similarity
from seawatch.vision.identity.registry import RegistryEntry, RegistryError, VesselRegistry

EXAMPLE = DATASET_DIR / "vessel_registry_example.csv"
HEADER = "name,name_latin,hull_number,mmsi,home_port,licence_status,licence_expiry,blacklisted,notes\n"


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("粵湛漁90135", "粤湛渔90135"),  # traditional glyphs (OCR reads 粤 as 粵)
        (" 粤湛渔 9O135 號", "粤湛渔90135"),  # spaces, letter O in the number, trailing 号
        ("浙岱渔０３８９１", "浙岱渔03891"),  # full-width digits
        ("冀黄港渔-05211", "冀黄港渔05211"),
        ("辽大渔1S372", "辽大渔15372"),
        ("ｍｉｎｇｚｈｏｕ　７", "MINGZHOU7"),  # full-width Latin, ideographic space; letters stay letters
        ("Hai Xun 168", "HAIXUN168"),
        ("BOSS", "BOSS"),  # no 渔: no digit repair
    ],
)
def test_normalise_hull(raw, norm):
    assert normalise_hull(raw) == norm


@pytest.mark.parametrize(
    "raw, parts",
    [
        ("浙岱渔03891", ("浙", "岱", "渔", "03891")),
        ("冀黄港渔05211", ("冀", "黄港", "渔", "05211")),
        ("閩獅漁 06688 號", ("闽", "狮", "渔", "06688")),
        ("浙普渔运01234", ("浙", "普", "渔运", "01234")),
        ("MINGZHOU 7", None),
        ("京渔12345", None),  # no port, and not a coastal province
        ("浙岱渔12", None),  # too few digits
    ],
)
def test_parse_hull(raw, parts):
    h = parse_hull(raw)
    if parts is None:
        assert h is None
    else:
        assert (h.province, h.port, h.kind, h.number) == parts and h.text == "".join(parts)


def test_similarity():
    assert similarity("浙岱渔03891", "浙岱漁 03891") == 1.0
    assert similarity("浙岱渔03891", "浙岱渔03861") == pytest.approx(1 - 1 / 8)
    assert similarity("HAI XUN 168", "hai xun 168") == 1.0
    assert similarity("", "") == 0.0


def test_example_registry_loads():
    reg = VesselRegistry.from_csv(EXAMPLE)
    assert len(reg) == 10
    e = reg.by_mmsi(412440001)
    assert e.hull_number == "闽狮渔06688" and e.name_latin == "MIN SHI YU 06688" and e.home_port == "石狮"
    assert reg.by_hull("閩獅漁 06688號") is e
    assert reg.by_hull("闽狮渔06689") is None
    assert reg.by_mmsi(999999999) is None and reg.by_mmsi(None) is None
    no_ais = reg.by_hull("苏连渔12345")
    assert no_ais.mmsi is None
    latin = reg.best("Hai Xun 168")
    assert latin.entry.mmsi == 412000010 and latin.score == 1.0 and latin.field == "name_latin"
    assert reg.by_mmsi(412000010).hull_number == ""


def test_licence_and_blacklist_alerts():
    reg = VesselRegistry.from_csv(EXAMPLE)
    day = dt.date(2026, 11, 28)
    assert reg.by_hull("闽狮渔06688").alerts(day) == ()
    assert reg.by_hull("粤湛渔90135").alerts(day) == ("licence_expired",)
    assert reg.by_hull("粤湛渔90135").alerts(dt.date(2025, 12, 31)) == ()
    assert reg.by_hull("鲁荣渔58216").alerts(day) == ("licence_suspended",)
    assert reg.by_hull("辽大渔15372").alerts(day) == ("blacklisted",)
    assert not reg.by_hull("粤湛渔90135").licence_valid_on(day)
    assert RegistryEntry(name="x", hull_number="", licence_status="none").alerts(day) == ("no_licence",)


def test_fuzzy_match_ranks_and_refuses_ties():
    reg = VesselRegistry.from_csv(EXAMPLE)
    ms = reg.match("浙岱渔03861")  # one digit misread
    assert ms[0].entry.hull_number == "浙岱渔03891" and ms[0].score == pytest.approx(0.875)
    assert reg.match("完全不同的船") == []
    assert reg.best("MIN SHI YU 6688").entry.mmsi == 412440001
    two = VesselRegistry.from_text(HEADER + "浙岱渔00001,,浙岱渔00001,,,valid,,no,\n浙岱渔00002,,浙岱渔00002,,,valid,,no,\n")
    assert len(two.match("浙岱渔00003")) == 2
    assert two.best("浙岱渔00003") is None  # equally close to both: no answer rather than a guess


def test_bad_rows_are_all_reported(tmp_path):
    p = tmp_path / "reg.csv"
    p.write_text(
        HEADER
        + "闽狮渔06688,,闽狮渔06688,41244000,,valid,2027-12-31,no,\n"  # 8-digit MMSI
        + "浙岱渔03891,,浙岱渔03891,412420002,,good,2027-02-30,maybe,\n"  # status, date, bool
        + ",,,412420003,,valid,,no,\n"  # no name, no hull
        + "\n"
        + "浙象渔42017,,浙象渔42017,412420008,,valid,,no,\n"
        + "浙象渔42018,,浙象漁42017,412420009,,valid,,no,\n"  # same hull after normalisation
        + "x,,,412420008,,valid,,no,\n"  # same MMSI
        + "y,,,,,valid,,no,,extra\n",
        encoding="utf-8",
    )
    with pytest.raises(RegistryError) as ei:
        VesselRegistry.from_csv(p)
    err = ei.value
    assert isinstance(err, InputError)
    probs = err.problems
    assert any(":2: mmsi: '41244000' is not 9 digits" in x for x in probs)
    assert any(":3: licence_status: 'good'" in x for x in probs)
    assert any(":3: licence_expiry: '2027-02-30'" in x for x in probs)
    assert any(":3: blacklisted: 'maybe'" in x for x in probs)
    assert any(":4: name/hull_number: both empty" in x for x in probs)
    assert any(":7: hull_number: 浙象渔42017 already on line 6" in x for x in probs)
    assert any(":8: mmsi: 412420008 already on line 6" in x for x in probs)
    assert any(":9: 1 more cell(s)" in x for x in probs)
    assert len(probs) == 8
    assert str(p) in str(err)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("", "empty file"),
        ("name,colour\nA,red\n", "unknown column"),
        ("mmsi,home_port\n412000001,x\n", "needs a 'name' or 'hull_number'"),
        ("name,name\nA,B\n", "repeated column"),
    ],
)
def test_bad_headers(text, msg):
    with pytest.raises(RegistryError, match=msg):
        VesselRegistry.from_text(text, source="t.csv")


def test_file_errors(tmp_path):
    with pytest.raises(RegistryError, match="cannot read"):
        VesselRegistry.from_csv(tmp_path / "absent.csv")
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes((HEADER + "闽狮渔06688,,闽狮渔06688,,,valid,,no,\n").encode("gbk"))
    with pytest.raises(RegistryError, match="not UTF-8"):
        VesselRegistry.from_csv(gbk)
    bom = tmp_path / "bom.csv"
    bom.write_bytes((HEADER + "闽狮渔06688,,闽狮渔06688,,,有效,,是,\n").encode("utf-8-sig"))
    e = list(VesselRegistry.from_csv(bom))[0]
    assert e.licence_status == "valid" and e.blacklisted is True


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.text(max_size=30))
def test_normalise_hull_is_idempotent_and_total(text):
    once = normalise_hull(text)
    assert normalise_hull(once) == once
    assert " " not in once
    h = parse_hull(text)
    assert h is None or h.text == once
