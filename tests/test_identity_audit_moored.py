"""Identity audit: moored and anchored vessels report every 3 minutes (ITU-R M.1371-5, table 1: class A at anchor
or moored and not faster than 3 kn; table 2: class B under 2 kn). SOTDMA places each report within +-10 % of its
nominal time, and a receiver misses a report now and then. A rule that calls a vessel "dark" after 180 s, or a
fuser that forgets a report after 360 s, raises high-severity ``ais_dark`` (or ``unidentified_vessel``) on
moored ships whose transponder works.

The vessel is a real one from the Lemmer harbour log: MMSI 211129800, class A, nav status 5 (moored), SOG 0,
heard once in the log's 163 s. Its next report is the same sentence, re-stamped at the time it would come.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from seawatch.streams import ais as A
from seawatch.vision.identity.fusion import GeoTrack, IdentityFuser
from seawatch.vision.identity.registry import RegistryEntry, VesselRegistry
from seawatch.vision.identity.rules import IdentityRules
from seawatch.vision.identity.vessels import VesselTable

S = 10**9


def _report(msgs, mmsi):
    return next(m for m in msgs if isinstance(m, A.AisPosition) and m.mmsi == mmsi and m.has_position)


def _run(report, next_after_s: float | None, *, registered: bool, duration_s: float = 600.0, step_s: float = 5.0,
         sog_kn: float | None = None, nav_status: int | None = None):
    """A camera sees the vessel at its reported position every ``step_s``; its AIS reports again ``next_after_s``
    after the first report (None: never). Returns the decisions (type, phase, seconds after the first report)."""
    if sog_kn is not None or nav_status is not None:
        report = replace(report, sog_kn=sog_kn if sog_kn is not None else report.sog_kn,
                         nav_status=nav_status if nav_status is not None else report.nav_status)
    reg = VesselRegistry([RegistryEntry(name="MOORED ONE", hull_number="", mmsi=report.mmsi, licence_status="valid")]) if registered \
        else VesselRegistry()
    table = VesselTable()
    fuser, rules = IdentityFuser(reg), IdentityRules(registry=reg)
    t0 = report.time_ns
    pending = [report]
    if next_after_s is not None:
        pending.append(replace(report, time_ns=t0 + int(next_after_s * S)))
    out = []
    k = 0
    while k * step_s <= duration_s:
        t = t0 + int(k * step_s * S)
        while pending and pending[0].time_ns <= t:
            table.update(pending.pop(0))
        tracks = [GeoTrack(7, t, report.lat_deg, report.lon_deg, pos_sigma_m=15.0)]
        ids = fuser.update(tracks, table, t)
        out += [(d.type, d.phase, (d.time_ns - t0) / S) for d in rules.update(t, tracks, ids, table)]
        k += 1
    return out


def test_the_log_vessel_is_moored_class_a(lemmer_ais):
    r = _report(lemmer_ais, 211129800)
    assert (r.ais_class, r.nav_status, r.sog_kn) == ("A", 5, 0.0)


@pytest.mark.parametrize("next_after_s", [185.0, 198.0])
def test_moored_report_late_within_its_slot_window_raises_nothing(lemmer_ais, next_after_s):
    """The next report comes 185 / 198 s later (nominal 180 s, +10 %): no ais_dark."""
    assert _run(_report(lemmer_ais, 211129800), next_after_s, registered=True, duration_s=400.0) == []


def test_moored_one_missed_report_raises_nothing(lemmer_ais):
    """One report lost on the air: the next one heard comes 360 s + 10 s later."""
    assert _run(_report(lemmer_ais, 211129800), 370.0, registered=True, duration_s=500.0) == []


def test_moored_unregistered_one_missed_report_is_not_unidentified(lemmer_ais):
    """The same, for a vessel not in the registry: the association must outlive one missed 3-minute report, or
    the moored vessel becomes unidentified_vessel (it was, 60 s after its report passed 360 s)."""
    assert _run(_report(lemmer_ais, 211129800), 440.0, registered=False, duration_s=560.0) == []


def test_moored_vessel_that_really_goes_silent_still_goes_dark(lemmer_ais):
    """Three reporting intervals (540 s) without a word: ais_dark, and never unidentified_vessel first."""
    out = _run(_report(lemmer_ais, 211129800), None, registered=True, duration_s=700.0)
    starts = [(typ, t) for typ, ph, t in out if ph == "start"]
    assert starts and starts[0][0] == "ais_dark", out
    assert 540.0 <= starts[0][1] <= 560.0, out
    assert "unidentified_vessel" not in {typ for typ, _ in starts}, out


def test_underway_vessel_still_goes_dark_at_dark_after_s(lemmer_ais):
    """A class A vessel under way (nav status 0: it reports every 10 s even at rest, like 244170038 in the log)
    that falls silent: ais_dark at the configured 180 s, as before (only 3-minute reporters wait longer)."""
    out = _run(_report(lemmer_ais, 211129800), None, registered=True, duration_s=300.0, sog_kn=0.05, nav_status=0)
    starts = [(typ, t) for typ, ph, t in out if ph == "start"]
    assert starts and starts[0] == ("ais_dark", 180.0), out
