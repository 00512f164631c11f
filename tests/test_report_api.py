"""GET /api/report, the shift / period report, on SQLite and PostgreSQL: a store filled with known incidents, reviews
and holds answers exact counts (type x severity, camera, drone, review status with false detections, hour of day, day,
open), the operators' response time and the time to a verdict (median, 90th percentile), the listed confirmed, high /
critical and held incidents; the period is half-open at its edges; filters narrow everything; junk is a 422 that says
why; a viewer may read it and nobody unauthenticated."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.report import quantile  # noqa: E402
from seawatch.service.store import EventStore  # noqa: E402
from seawatch.vision.events import GeoPosition  # noqa: E402
import test_service_store  # noqa: E402
from test_service_store import S, T0, make_event  # noqa: E402

# the store tests' database fixtures (a SQLite file, and a throwaway PostgreSQL server's database), used by name here
db_url, postgres_server = test_service_store.db_url, test_service_store.postgres_server

VIEWER_KEY = "report-viewer-key-0123456789abcdef"
DAY = 86400 * S
H = 3600 * S
D0 = (T0 // DAY) * DAY  # 2026-09-21 00:00 UTC
E5_GEO = GeoPosition(52.8400, 5.7060, 40.0, 20.0, 30.0)


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // S, tz=timezone.utc).isoformat().replace("+00:00", "Z") if ns % S == 0 else \
        datetime.fromtimestamp(ns / S, tz=timezone.utc).isoformat()


def ev(name: str, start_ns: int, *, ended: bool = True, **kw):
    return make_event(0, id=name, start_ns=start_ns, at_ns=start_ns + (10 * S if ended else 0),
                      end_ns=start_ns + 10 * S if ended else None, phase="end" if ended else "start", **kw)


def fill(store: EventStore) -> None:
    """Seven incidents in the two days from D0, two just outside, their reviews and holds (see each line)."""
    put = store.put
    put(ev("e1", D0 + 6 * H, type="fire", severity="high", source_id="cam-1"))
    store.review("e1", "acknowledged", "olga", at_ns=D0 + 6 * H + 60 * S)  # responded after 60 s
    store.review("e1", "confirmed", "rita", note="real fire on quay 3", at_ns=D0 + 6 * H + 600 * S)  # verdict 600 s
    store.hold("e1", "manual", "rita", at_ns=D0 + 7 * H)
    store.release_holds("e1", "rita", "done", at_ns=D0 + 8 * H)  # lifted: e1 is not held
    put(ev("e2", D0 + 6 * H + 30 * 60 * S, type="fire", severity="low", source_id="cam-1"))
    store.review("e2", "dismissed", "olga", reason="false_detection", at_ns=D0 + 6 * H + 30 * 60 * S + 120 * S)
    put(ev("e3", D0 + DAY - 1, ended=False, type="smoke", severity="critical", source_id="cam-2"))  # last ns of day 1
    store.review("e3", "acknowledged", "olga", at_ns=D0 + DAY - 1 + 30 * S)
    put(ev("e4", D0 + DAY, type="smoke", severity="medium", source_id="cam-2"))  # first ns of day 2
    store.review("e4", "dismissed", "olga", note="steam", at_ns=D0 + DAY + 300 * S)
    put(ev("e5", D0 + DAY + 12 * H, type="vessel_in_zone", severity="critical", source_id="drone-cam", geo=E5_GEO,
           attributes={"vessel_name": "Noordzee Express", "mmsi": "244123456"}))
    store.hold("e5", "manual", "rita", "evidence for the harbour master", at_ns=D0 + DAY + 13 * H)
    put(ev("e6", D0 + DAY + 13 * H, type="fire", severity="medium", source_id="cam-1"))
    store.review("e6", "acknowledged", "olga", at_ns=D0 + DAY + 13 * H + 240 * S)
    put(ev("e9", D0 + DAY + 12 * H + 30 * 60 * S, ended=False, type="drone_link_lost", severity="critical",
           source_id="patrol-1"))
    # outside the period [D0, D0 + 2 days): one ns before it, and at its end (half-open)
    put(ev("x-before", D0 - 1, type="fire", severity="critical", source_id="cam-1"))
    store.review("x-before", "confirmed", "rita", at_ns=D0 + 5 * S)
    put(ev("x-after", D0 + 2 * DAY, type="fire", severity="critical", source_id="cam-1"))


@pytest.fixture
def client(db_url, tmp_path):
    store = EventStore.open(db_url)
    fill(store)
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "wall", "role": "viewer", "key_sha256": hash_api_key(VIEWER_KEY)}]},
        "drones": [{"id": "patrol-1", "connection": "udp:127.0.0.1:14550", "video_source": "drone-cam",
                    "camera": {"width_px": 640, "height_px": 360, "hfov_deg": 70}}]})
    try:
        with TestClient(create_app(cfg, store=store)) as c:
            yield c
    finally:
        store.close()


def report(client, start_ns=D0, end_ns=D0 + 2 * DAY, **params):
    r = client.get("/api/report", params={"start_from": iso(start_ns), "start_to": iso(end_ns), **params},
                   headers={"X-API-Key": VIEWER_KEY})
    assert r.status_code == 200, r.text
    return r.json()


def zero(**kw):
    return {"total": sum(kw.values()), "low": 0, "medium": 0, "high": 0, "critical": 0, **kw}


def test_report_counts_times_and_lists(client):
    rep = report(client)
    assert rep["period"] == {"start_from": "2026-09-21T00:00:00Z", "start_to": "2026-09-23T00:00:00Z",
                             "start_from_ns": D0, "start_to_ns": D0 + 2 * DAY, "hours": 48.0}
    assert rep["generated_by"] == {"name": "wall", "role": "viewer", "kind": "key"} and rep["filters"] == {}
    assert rep["total"] == 7 and rep["open"] == 2  # e3 and e9 have no end
    assert rep["by_severity"] == {"low": 1, "medium": 2, "high": 1, "critical": 3}
    assert {c["type"]: c for c in rep["by_type_severity"]} == {
        "fire": {"type": "fire", **zero(low=1, medium=1, high=1)},
        "smoke": {"type": "smoke", **zero(medium=1, critical=1)},
        "vessel_in_zone": {"type": "vessel_in_zone", **zero(critical=1)},
        "drone_link_lost": {"type": "drone_link_lost", **zero(critical=1)}}
    assert rep["by_type_severity"][0]["type"] == "fire"  # the most frequent first
    assert rep["by_status"] == {"new": 2, "acknowledged": 2, "dismissed": 2, "confirmed": 1, "false_detection": 1}
    assert [(s["source_id"], s["total"], s["drone_id"]) for s in rep["by_source"]] == [
        ("cam-1", 3, None), ("cam-2", 2, None), ("drone-cam", 1, "patrol-1"), ("patrol-1", 1, "patrol-1")]
    cam1 = rep["by_source"][0]
    assert (cam1["confirmed"], cam1["dismissed"], cam1["acknowledged"], cam1["new"], cam1["open"]) == (1, 1, 1, 0, 0)
    assert rep["busiest_sources"] == rep["by_source"]  # fewer than 10 cameras
    assert rep["by_drone"] == [{"drone_id": "patrol-1", "sources": ["drone-cam", "patrol-1"], **zero(critical=2), "open": 1}]
    hours = {h["hour"]: h["total"] for h in rep["by_hour_of_day"] if h["total"]}
    assert [h["hour"] for h in rep["by_hour_of_day"]] == list(range(24))
    assert hours == {6: 2, 23: 1, 0: 1, 12: 2, 13: 1}  # e3 in hour 23 (its last ns), e4 in hour 0
    assert rep["by_hour_of_day"][23] == {"hour": 23, **zero(critical=1)}
    assert rep["tz"] == "UTC"  # the default zone of the hour and day buckets
    assert rep["per_day"] == [{"day": "2026-09-21", "hours": 24, **zero(low=1, high=1, critical=1)},
                              {"day": "2026-09-22", "hours": 24, **zero(medium=2, critical=2)}]
    # first action of any kind: e3 30, e1 60, e2 120, e6 240, e4 300 s; verdicts: e2 120, e4 300, e1 600 s
    assert rep["response"]["first_action"] == {"n": 5, "without": 2, "median_s": 120.0, "p90_s": 276.0, "max_s": 300.0}
    assert rep["response"]["verdict"] == {"n": 3, "without": 4, "median_s": 300.0, "p90_s": 540.0, "max_s": 600.0}
    assert rep["response"]["reported_by_people"] == 0
    conf = rep["confirmed"]
    assert conf["total"] == 1 and not conf["truncated"] and [e["id"] for e in conf["events"]] == ["e1"]
    e1 = conf["events"][0]
    assert (e1["type"], e1["severity"], e1["start_ns"], e1["source_id"], e1["review_status"]) == (
        "fire", "high", D0 + 6 * H, "cam-1", "confirmed")
    assert (e1["reviewed_by"], e1["review_note"], e1["reviewed_ns"]) == ("rita", "real fire on quay 3", D0 + 6 * H + 600 * S)
    sev = rep["high_severity"]
    assert sev["total"] == 4 and [e["id"] for e in sev["events"]] == ["e1", "e3", "e5", "e9"]  # by start
    e5 = sev["events"][2]
    assert (e5["vessel_name"], e5["mmsi"], e5["lat_deg"], e5["lon_deg"], e5["drone_id"]) == (
        "Noordzee Express", "244123456", 52.84, 5.706, "patrol-1")
    assert e5["reviewed_by"] is None and e5["review_status"] == "new"
    held = rep["held"]  # e1's hold was lifted: only e5 is held
    assert held["total"] == 1 and [e["id"] for e in held["events"]] == ["e5"]
    assert held["events"][0]["holds"] == [{"reason": "manual", "by": "rita", "at_ns": D0 + DAY + 13 * H,
                                           "note": "evidence for the harbour master"}]


def test_report_period_edges_are_half_open(client):
    """From e2's start exactly (taken) to e4's start exactly (left out): e2 and e3, one day bucket."""
    rep = report(client, D0 + 6 * H + 30 * 60 * S, D0 + DAY)
    assert rep["total"] == 2 and rep["by_status"]["dismissed"] == 1 and rep["by_status"]["acknowledged"] == 1
    assert [d["day"] for d in rep["per_day"]] == ["2026-09-21"] and rep["per_day"][0]["total"] == 2
    assert {h["hour"]: h["total"] for h in rep["by_hour_of_day"] if h["total"]} == {6: 1, 23: 1}
    assert rep["response"]["first_action"]["median_s"] == 75.0  # (30 + 120) / 2
    # a shift across midnight: both days listed, hours 23 and 0
    rep = report(client, D0 + 18 * H, D0 + DAY + 6 * H)
    assert [(d["day"], d["total"]) for d in rep["per_day"]] == [("2026-09-21", 1), ("2026-09-22", 1)]
    assert {h["hour"]: h["total"] for h in rep["by_hour_of_day"] if h["total"]} == {23: 1, 0: 1}
    # the day before: x-before only (its last ns); nothing of the period leaks in
    rep = report(client, D0 - DAY, D0)
    assert rep["total"] == 1 and rep["by_status"]["confirmed"] == 1 and rep["per_day"][0]["day"] == "2026-09-20"
    empty = report(client, D0 + 3 * DAY, D0 + 4 * DAY)
    assert empty["total"] == 0 and empty["response"]["first_action"] == {"n": 0, "without": 0, "median_s": None,
                                                                         "p90_s": None, "max_s": None}
    assert empty["confirmed"] == {"total": 0, "truncated": False, "events": []}


@pytest.mark.parametrize("params, total, extra", [
    ({"source": "cam-1"}, 3, {"first_median": 120.0, "statuses": (1, 1, 1, 0)}),
    ({"source": ["cam-2", "patrol-1"]}, 3, {"first_median": 165.0}),
    ({"drone": "patrol-1"}, 2, {"first_median": None, "statuses": (0, 0, 0, 2)}),
    ({"type": "smoke"}, 2, {"first_median": 165.0}),
    ({"min_severity": "critical"}, 3, {"first_median": 30.0}),
    ({"severity": ["low", "medium"]}, 3, {}),
    ({"min_lat": 52.8, "min_lon": 5.7, "max_lat": 52.9, "max_lon": 5.8}, 1, {"held": 1}),
    ({"near_lat": 52.8401, "near_lon": 5.7061, "radius_m": 500}, 1, {}),
    ({"polygon": "5.70 52.83,5.71 52.83,5.71 52.85,5.70 52.85"}, 1, {}),
    ({"has_geo": "false"}, 6, {"held": 0}),
    ({"zone": "elsewhere"}, 0, {}),
])
def test_report_filters(client, params, total, extra):
    rep = report(client, **params)
    assert rep["total"] == total
    assert sum(c["total"] for c in rep["by_type_severity"]) == total == sum(d["total"] for d in rep["per_day"])
    assert sum(h["total"] for h in rep["by_hour_of_day"]) == total
    assert sum(v for k, v in rep["by_status"].items() if k != "false_detection") == total
    if "first_median" in extra:
        assert rep["response"]["first_action"]["median_s"] == extra["first_median"]
    if "statuses" in extra:
        assert tuple(rep["by_status"][k] for k in ("confirmed", "dismissed", "acknowledged", "new")) == extra["statuses"]
    if "held" in extra:
        assert rep["held"]["total"] == extra["held"]
    assert rep["filters"]  # said in the answer, for the printed page


def test_report_list_limit_truncates_lists_not_counts(client):
    rep = report(client, list_limit=2)
    assert rep["high_severity"]["total"] == 4 and rep["high_severity"]["truncated"] is True
    assert [e["id"] for e in rep["high_severity"]["events"]] == ["e1", "e3"]
    assert rep["confirmed"]["truncated"] is False and rep["total"] == 7


@pytest.mark.parametrize("params, needle", [
    ({"start_from": "2026-09-21T00:00:00Z"}, "start_to: Field required"),
    ({"start_to": "2026-09-21T00:00:00Z"}, "start_from: Field required"),
    ({"start_from": "2026-09-22T00:00:00Z", "start_to": "2026-09-21T00:00:00Z"}, "start_to must be after start_from"),
    ({"start_from": "2026-09-21T00:00:00Z", "start_to": "2026-09-21T00:00:00Z"}, "start_to must be after start_from"),
    ({"start_from": "2026-01-01T00:00:00Z", "start_to": "2026-04-03T00:00:01Z"}, "at most 92 days"),
    ({"start_from": "yesterday", "start_to": "2026-09-21T00:00:00Z"}, "start_from"),
    ({"min_severity": "urgent"}, "min_severity"),
    ({"polygon": "5 52,6 52"}, "polygon"),
    ({"near_lat": 52.8, "radius_m": 100}, "near_lat, near_lon, radius_m"),
    ({"min_lat": 52.8}, "a bbox needs all four"),
    ({"list_limit": 0}, "list_limit"),
    ({"limit": 10}, "limit: Extra inputs are not permitted"),
    ({"q": "fire"}, "q: Extra inputs are not permitted"),
])
def test_report_bad_input_is_a_422_saying_why(client, params, needle):
    period = {"start_from": "2026-09-21T00:00:00Z", "start_to": "2026-09-23T00:00:00Z"}
    full = params if {"start_from", "start_to"} & set(params) else {**period, **params}
    r = client.get("/api/report", params=full, headers={"X-API-Key": VIEWER_KEY})
    assert r.status_code == 422, r.text
    body = r.json()["error"]
    assert body["code"] == "invalid_request" and needle in body["message"], body["message"]


def test_report_92_days_is_allowed_and_auth_is_needed(client):
    ok = client.get("/api/report", params={"start_from": "2026-07-01T00:00:00Z", "start_to": "2026-10-01T00:00:00Z"},
                    headers={"X-API-Key": VIEWER_KEY})
    assert ok.status_code == 200 and ok.json()["total"] == 9  # x-before and x-after too
    r = client.get("/api/report", params={"start_from": "2026-09-21T00:00:00Z", "start_to": "2026-09-23T00:00:00Z"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = client.get("/api/report", params={"start_from": "2026-09-21T00:00:00Z", "start_to": "2026-09-23T00:00:00Z"},
                   headers={"X-API-Key": "not-a-key-0123456789abcdef"})
    assert r.status_code == 401


def test_quantile_is_percentile_cont():
    assert quantile([], 0.5) is None and quantile([7.0], 0.9) == 7.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5 and quantile([0.0, 10.0], 0.9) == 9.0
    assert quantile([30.0, 60.0, 120.0, 240.0, 300.0], 0.9) == 276.0


def test_a_report_made_from_a_recording_is_not_an_operator_response(client, tmp_path):
    """An incident a person reports from yesterday's recording (POST /events) is acknowledged by its reporter as it
    is made, a day after its start: counted as an incident, left out of the response times (which it would have
    turned into a day)."""
    store = client.app.state.store
    store.put(ev("r1", D0 + 2 * H, type="fire", severity="high", source_id="cam-1",
                 attributes={"reported_by": "user:olga", "note": "flames on the old footage", "vessel_name": '"reported_by":x'}))
    store.review("r1", "acknowledged", "olga", note="reported", at_ns=D0 + DAY + 2 * H)
    # a vessel whose name is the marker text is not a report (a JSON value cannot hold it unescaped)
    store.put(ev("v1", D0 + 3 * H, type="vessel_in_zone", severity="low", source_id="cam-2",
                 attributes={"vessel_name": '"reported_by":'}))
    store.review("v1", "acknowledged", "olga", at_ns=D0 + 3 * H + 10 * S)
    rep = report(client)
    assert rep["total"] == 9 and rep["response"]["reported_by_people"] == 1
    # the seven of the other test and v1 (10 s); r1 (a day) left out
    assert rep["response"]["first_action"] == {"n": 6, "without": 2, "median_s": 90.0, "p90_s": 270.0, "max_s": 300.0}
