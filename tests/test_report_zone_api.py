"""GET /api/report?tz=ZONE on SQLite and PostgreSQL: the hour-of-day and per-day buckets are the local hours and days
of an IANA zone, daylight saving time followed (Europe/Amsterdam's 23-hour day of 2026-03-29 and 25-hour day of
2026-10-25, the repeated autumn hour counted in its local hour, the edges of a change to the nanosecond), an offset of
a half hour (Asia/Kolkata, +05:30) too; every bucket agrees with zoneinfo asked event by event, in zones with odd
offsets and changes (+05:45, -03:30, a 30-minute daylight saving time); the period's bounds stay instants; an unknown
or hostile zone is a 422 that says why."""

from __future__ import annotations

import random
import warnings
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.store import EventStore  # noqa: E402
from test_report_api import ev, iso  # noqa: E402
import test_service_store  # noqa: E402
from test_service_store import S  # noqa: E402

# the store tests' database fixtures (a SQLite file, and a throwaway PostgreSQL server's database), used by name here
db_url, postgres_server = test_service_store.db_url, test_service_store.postgres_server

KEY = "report-zone-viewer-key-0123456789abcdef"
H = 3600 * S
M = 60 * S
SEVERITIES = ("low", "medium", "high", "critical")


def utc(text: str) -> int:
    """UTC ns of '2026-03-29T01:00:00' (read as UTC)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * S


SPRING = utc("2026-03-29T01:00:00")  # Amsterdam: 02:00 CET -> 03:00 CEST
AUTUMN = utc("2026-10-25T01:00:00")  # Amsterdam: 03:00 CEST -> 02:00 CET
SPRING_DAY = (utc("2026-03-28T23:00:00"), utc("2026-03-29T22:00:00"))  # 2026-03-29 00:00 CET to 2026-03-30 00:00 CEST
AUTUMN_DAY = (utc("2026-10-24T22:00:00"), utc("2026-10-25T23:00:00"))  # 2026-10-25 00:00 CEST to 2026-10-26 00:00 CET
KOLKATA_AT = utc("2026-09-21T00:00:00")  # 05:30 IST


def events() -> list[tuple[str, int, str]]:
    """Incidents (id, start_ns, severity) at half past every UTC hour of Amsterdam's two days the clocks change on,
    each a step further through the severities; two at the spring change's edges (1 ns before it, at it); six around
    Kolkata's hour and day edges."""
    out = []
    for tag, (a, b) in (("s", SPRING_DAY), ("a", AUTUMN_DAY)):
        out += [(f"{tag}{i:02d}", t, SEVERITIES[i % 4]) for i, t in enumerate(range(a + 30 * M, b, H))]
    out.append(("edge-before", SPRING - 1, "critical"))  # 01:59:59.999999999 CET: local hour 1
    out.append(("edge-at", SPRING, "critical"))  # 03:00:00 CEST: local hour 3
    for name, dt in (("k-0529", -1 * M), ("k-0530", 0), ("k-0559", 29 * M), ("k-0600", 30 * M),
                     ("k-2359", 18 * H + 29 * M), ("k-0000", 18 * H + 30 * M)):
        out.append((name, KOLKATA_AT + dt, "medium"))
    return out


EVENTS = events()


def fill(store: EventStore) -> None:
    for name, start_ns, severity in EVENTS:
        store.put(ev(name, start_ns, type="fire", severity=severity, source_id="cam-1"))


@pytest.fixture
def client(db_url, tmp_path):
    store = EventStore.open(db_url)
    fill(store)
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")},
                             "auth": {"api_keys": [{"name": "wall", "role": "viewer", "key_sha256": hash_api_key(KEY)}]}})
    try:
        with TestClient(create_app(cfg, store=store)) as c:
            yield c
    finally:
        store.close()


def get(client, start_ns: int, end_ns: int, **params):
    return client.get("/api/report", params={"start_from": iso(start_ns), "start_to": iso(end_ns), **params},
                      headers={"X-API-Key": KEY})


def report(client, start_ns: int, end_ns: int, **params):
    r = get(client, start_ns, end_ns, **params)
    assert r.status_code == 200, r.text
    return r.json()


def hours_of(rep) -> dict[int, int]:
    assert [h["hour"] for h in rep["by_hour_of_day"]] == list(range(24))
    return {h["hour"]: h["total"] for h in rep["by_hour_of_day"] if h["total"]}


def days_of(rep) -> list[tuple[str, float, int]]:
    return [(d["day"], d["hours"], d["total"]) for d in rep["per_day"]]


def test_amsterdam_spring_day_has_23_local_hours_and_no_2_oclock(client):
    """The local day 2026-03-29 in Amsterdam: 23 UTC hours, each incident at half past one of them, all in that day;
    the hours of day are 00, 01, 03 ... 23 (02:30 does not exist); the change's edges to the nanosecond."""
    rep = report(client, *SPRING_DAY, tz="Europe/Amsterdam")
    assert rep["tz"] == "Europe/Amsterdam" and rep["total"] == 25
    assert days_of(rep) == [("2026-03-29", 23, 25)]
    assert hours_of(rep) == {**{h: 1 for h in range(24) if h != 2}, 1: 2, 3: 2}  # 01:59:59.999999999 CET, 03:00 CEST
    # per severity: s00 (00:30 CET) low, s01 (01:30 CET) medium, s02 (03:30 CEST) high; and the edges, critical
    by_hour = rep["by_hour_of_day"]
    assert (by_hour[0]["low"], by_hour[1]["medium"], by_hour[1]["critical"]) == (1, 1, 1)
    assert (by_hour[3]["high"], by_hour[3]["critical"], by_hour[2]["total"]) == (1, 1, 0)
    # the period stays the instants asked, whatever the zone
    assert rep["period"] == {"start_from": "2026-03-28T23:00:00Z", "start_to": "2026-03-29T22:00:00Z",
                             "start_from_ns": SPRING_DAY[0], "start_to_ns": SPRING_DAY[1], "hours": 23.0}
    # the same instants in UTC: two UTC days (the first incident at 23:30 on the 28th), every UTC hour but 22
    utc_rep = report(client, *SPRING_DAY)
    assert utc_rep["tz"] == "UTC" and utc_rep["total"] == 25
    assert days_of(utc_rep) == [("2026-03-28", 24, 1), ("2026-03-29", 24, 24)]
    assert hours_of(utc_rep) == {**{h: 1 for h in range(24) if h != 22}, 0: 2, 1: 2}


def test_amsterdam_autumn_day_has_25_local_hours_and_2_oclock_twice(client):
    """The local day 2026-10-25: 25 UTC hours; 02:30 CEST (00:30 UTC) and 02:30 CET (01:30 UTC) both in hour 2."""
    rep = report(client, *AUTUMN_DAY, tz="Europe/Amsterdam")
    assert rep["tz"] == "Europe/Amsterdam" and rep["total"] == 25
    assert days_of(rep) == [("2026-10-25", 25, 25)]
    assert hours_of(rep) == {**{h: 1 for h in range(24)}, 2: 2}
    # a00 00:30 CEST low, a01 01:30 CEST medium, a02 02:30 CEST high, a03 02:30 CET critical, a04 03:30 CET low
    assert rep["by_hour_of_day"][2] == {"hour": 2, "total": 2, "low": 0, "medium": 0, "high": 1, "critical": 1}
    assert rep["by_hour_of_day"][3] == {"hour": 3, "total": 1, "low": 1, "medium": 0, "high": 0, "critical": 0}
    assert rep["period"]["hours"] == 25.0


def test_days_the_period_touches_are_local_days_with_their_lengths(client):
    """Three UTC days around the spring change seen from Amsterdam: four local days (the last from 00:00 to 01:00
    CEST on the 31st), the 29th 23 hours long; and a day's bucket ends where the local day ends, not at 00:00 UTC."""
    rep = report(client, utc("2026-03-28T00:00:00"), utc("2026-03-31T00:00:00"), tz="Europe/Amsterdam")
    assert days_of(rep) == [("2026-03-28", 24, 0), ("2026-03-29", 23, 25), ("2026-03-30", 24, 0), ("2026-03-31", 24, 0)]
    rep = report(client, utc("2026-10-24T00:00:00"), utc("2026-10-27T00:00:00"), tz="Europe/Amsterdam")
    assert days_of(rep) == [("2026-10-24", 24, 0), ("2026-10-25", 25, 25), ("2026-10-26", 24, 0), ("2026-10-27", 24, 0)]
    # half a local day: from 12:00 CET (11:00 UTC) on the 28th to 01:00 CET (00:00 UTC) on the 29th
    rep = report(client, utc("2026-03-28T11:00:00"), utc("2026-03-29T00:00:00"), tz="Europe/Amsterdam")
    assert days_of(rep) == [("2026-03-28", 24, 0), ("2026-03-29", 23, 1)] and hours_of(rep) == {0: 1}


def test_kolkata_half_hour_offset(client):
    """+05:30: 23:59 UTC is 05:29 IST (hour 5), 00:00 UTC 05:30 (hour 5), 00:29 05:59 (hour 5), 00:30 06:00 (hour 6);
    18:29 UTC 23:59 IST on the 21st, 18:30 UTC 00:00 IST on the 22nd."""
    rep = report(client, utc("2026-09-20T18:30:00"), utc("2026-09-22T18:30:00"), tz="Asia/Kolkata")
    assert rep["tz"] == "Asia/Kolkata" and rep["total"] == 6
    assert hours_of(rep) == {5: 3, 6: 1, 23: 1, 0: 1}
    assert days_of(rep) == [("2026-09-21", 24, 5), ("2026-09-22", 24, 1)]  # two whole IST days
    utc_rep = report(client, utc("2026-09-20T18:30:00"), utc("2026-09-22T18:30:00"), tz="UTC")
    assert hours_of(utc_rep) == {23: 1, 0: 3, 18: 2}
    assert days_of(utc_rep) == [("2026-09-20", 24, 1), ("2026-09-21", 24, 5), ("2026-09-22", 24, 0)]


def test_a_change_back_across_midnight_reads_the_day_before_again(client):
    """St. John's put its clocks back at 00:01 NDT on 1987-10-25 to 23:01 NST on the 24th: a period from 00:00:30 on
    the 25th holds an incident read 23:15 on the 24th, which is counted in that day (listed though the period starts
    on the 25th) and hour 23. The clocks read the 24th for 24 h 59 min, the 25th for 24 h 1 min."""
    change = utc("1987-10-25T02:31:00")
    store = client.app.state.store
    store.put(ev("nl-1", change - 15 * S, type="fire", severity="low", source_id="cam-1"))  # 00:00:45 NDT on the 25th
    store.put(ev("nl-2", change + 14 * M, type="fire", severity="high", source_id="cam-1"))  # 23:15 NST on the 24th
    rep = report(client, change - 30 * S, change + H, tz="America/St_Johns")
    assert rep["total"] == 2 and hours_of(rep) == {0: 1, 23: 1}
    assert days_of(rep) == [("1987-10-24", round(24 + 59 / 60, 6), 1), ("1987-10-25", round(24 + 1 / 60, 6), 1)]


def changes(z: ZoneInfo, a: int, b: int) -> list[int]:
    """The instants (ns) in [a, b) where the zone's offset changes: an hourly scan, then to the second."""
    def off(s: int):
        return datetime.fromtimestamp(s, z).utcoffset()
    out = []
    for s in range(a // S, b // S, 3600):
        if off(s) != off(s + 3600):
            lo, hi = s, s + 3600
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if off(mid) == off(s) else (lo, mid)
            out.append(hi * S)
    return out


@pytest.mark.parametrize("zone", ["Europe/Amsterdam", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns",
                                  "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago", "Etc/GMT+11", "UTC"])
def test_every_bucket_is_zoneinfos_reading_of_each_start(client, zone):
    """Incidents at random instants of 2026 and every 15 minutes (and 1 ns before each change) for two hours either
    side of the zone's changes that year: each one's local hour and date from zoneinfo, one by one, counted, equal
    the report's buckets over 2026 (in four periods of at most 92 days); every local day touched is listed, with its
    length from zoneinfo (its midnight to the next one's)."""
    z = ZoneInfo(zone)
    year = (utc("2026-01-01T00:00:00"), utc("2027-01-01T00:00:00"))
    rng = random.Random(zone)
    extra = [rng.randrange(*year) for _ in range(150)]
    for c in changes(z, *year):
        extra += [c - 1, *range(c - 2 * H, c + 2 * H, 15 * M)]
    store = client.app.state.store
    for i, t in enumerate(extra):
        store.put(ev(f"r{i}", t, type="smoke", severity="low", source_id="cam-2"))
    starts = [t for _, t, _ in EVENTS] + extra
    bounds = [utc("2026-01-01T00:00:00"), utc("2026-03-15T00:00:00"), utc("2026-06-01T00:00:00"),
              utc("2026-08-30T00:00:00"), utc("2026-11-20T00:00:00"), utc("2027-01-01T00:00:00")]
    for a, b in zip(bounds, bounds[1:]):
        rep = report(client, a, b, tz=zone)
        local = [datetime.fromtimestamp(t // S, timezone.utc).astimezone(z) for t in starts if a <= t < b]  # floor: 1 ns before a change
        assert rep["tz"] == zone and rep["total"] == len(local) > 0
        assert hours_of(rep) == dict(Counter(t.hour for t in local))
        assert {d["day"]: d["total"] for d in rep["per_day"] if d["total"]} == dict(Counter(t.date().isoformat() for t in local))
        first = datetime.fromtimestamp(a // S, timezone.utc).astimezone(z).date()
        last = datetime.fromtimestamp((b - 1) // S, timezone.utc).astimezone(z).date()
        assert [d["day"] for d in rep["per_day"]] == [(first + timedelta(days=i)).isoformat()
                                                      for i in range((last - first).days + 1)]
        for d in rep["per_day"]:
            day = datetime.fromisoformat(d["day"])
            length_s = (day + timedelta(days=1)).replace(tzinfo=z).timestamp() - day.replace(tzinfo=z).timestamp()
            assert d["hours"] == round(length_s / 3600, 6), d


@pytest.mark.parametrize("tz, needle", [
    ("Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons': give an IANA time zone name"),
    ("europe/amsterdam", "did you mean Europe/Amsterdam?"),
    ("CEST", "unknown time zone 'CEST'"),
    ("+02:00", "unknown time zone '+02:00'"),
    ("localtime", "unknown time zone 'localtime'"),
    ("../../../../etc/passwd", "unknown time zone '../../../../etc/passwd'"),
    ("/usr/share/zoneinfo/Europe/Amsterdam", "unknown time zone"),
    ("Europe", "unknown time zone 'Europe'"),
    ("Europe/Amsterdam\x00", "unknown time zone"),
    ("", "tz: String should have at least 1 character"),
    ("Europe/" + "A" * 5000, "tz: String should have at most 64 characters"),
])
def test_unknown_or_hostile_zone_is_a_422_saying_why(client, tz, needle):
    r = get(client, *SPRING_DAY, tz=tz)
    assert r.status_code == 422, r.text
    body = r.json()["error"]
    assert body["code"] == "invalid_request" and needle in body["message"], body["message"]
    assert len(body["message"]) < 400  # the hostile text is not echoed at length


@pytest.mark.parametrize("start, end", [("1969-12-31T00:00:00Z", "1970-01-02T00:00:00Z"),
                                        ("0001-01-01T00:00:00Z", "0001-02-01T00:00:00Z"),
                                        ("2300-01-01T00:00:00Z", "2300-02-01T00:00:00Z")])
def test_a_period_outside_1970_2200_is_a_422(client, start, end):
    r = client.get("/api/report", params={"start_from": start, "start_to": end, "tz": "Europe/Amsterdam"},
                   headers={"X-API-Key": KEY})
    assert r.status_code == 422, r.text
    assert "between 1970 and 2200" in r.json()["error"]["message"]
