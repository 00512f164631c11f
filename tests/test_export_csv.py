"""Search results as CSV for a spreadsheet (``GET /api/export/events.csv``): the same filters as the search, every
match up to the export cap, times in UTC, the newest review and holds, and text from outside (AIS names, OCR'd hull
text, notes) kept as text, never run as a spreadsheet formula."""

from __future__ import annotations

import csv
import io

import pytest

pytest.importorskip("fastapi")

from seawatch.vision.events import GeoPosition  # noqa: E402
from test_service_api import KEY, app_env, hashes, token  # noqa: E402,F401
from test_service_store import S, T0, make_event  # noqa: E402


def _rows(r) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="seawatch-events.csv"'
    assert r.content.startswith("\ufeff".encode())  # a spreadsheet then reads UTF-8 names correctly
    return list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"), newline="")))


def test_csv_export_of_a_search_with_reviews_holds_and_hostile_text(app_env):
    client, app, _ = app_env
    store = app.state.store
    store.put(make_event(0, type="unidentified_vessel", source_id="quay-1", end_ns=T0 + 65 * S, phase="end",
                         labels=("vessel",), scores=(0.8123,), geo=GeoPosition(53.5123456, 8.1234567, 35, 20),
                         attributes={"mmsi": "244123456", "vessel_name": "=HYPERLINK(\"http://x.example\",\"ok\")",
                                     "hull_text": "+UK12"}))
    store.put(make_event(1, type="fire", severity="critical", source_id="yard", labels=("fire",), scores=(0.9,)))
    store.put(make_event(2, type="smoke", source_id="yard"))
    h = token(client, "rita")
    assert client.post("/api/events/ev00000/dismiss", headers=h, json={"note": "@boss: a buoy, see photo",
                                                                       "reason": "false_detection"}).status_code == 200
    assert client.post("/api/events/ev00001/hold", headers=h, json={"note": "case 7"}).status_code == 200

    rows = _rows(client.get("/api/export/events.csv", params={"sort": "start_ns"}, headers={"X-API-Key": KEY}))
    assert [r["id"] for r in rows] == ["ev00000", "ev00001", "ev00002"]
    boat, fire, _ = rows
    assert boat["type"] == "unidentified_vessel" and boat["state"] == "ended" and boat["duration_s"] == "65.0"
    assert boat["start_utc"].endswith("Z") and boat["lat_deg"] == "53.5123456" and boat["lon_deg"] == "8.1234567"
    assert boat["uncertainty_m"] == "35.0" and boat["mmsi"] == "244123456" and boat["best_score"] == "0.812"
    # what came from outside is text: a leading ' keeps a spreadsheet from running it
    assert boat["vessel_name"] == "'=HYPERLINK(\"http://x.example\",\"ok\")" and boat["hull_text"] == "'+UK12"
    assert boat["review_status"] == "dismissed" and boat["reviewed_by"] == "rita"
    assert boat["review_note"] == "'@boss: a buoy, see photo" and boat["review_reason"] == "false_detection"
    assert boat["held"] == "no" and fire["held"] == "yes" and fire["state"] == "open" and fire["end_utc"] == ""
    assert fire["lat_deg"] == "" and fire["geo_reason"]
    # the search's filters apply; limit does not cut an export
    only = _rows(client.get("/api/export/events.csv", params={"type": "fire", "limit": 1}, headers={"X-API-Key": KEY}))
    assert [r["id"] for r in only] == ["ev00001"]
    assert client.get("/api/export/events.csv", params={"min_severity": "nonsense"}, headers={"X-API-Key": KEY}).status_code == 422
    assert client.get("/api/export/events.csv").status_code == 401


def test_csv_export_is_capped_and_says_so(app_env, monkeypatch):
    import seawatch.service.app as app_mod

    client, app, _ = app_env
    for i in range(5):
        app.state.store.put(make_event(i))
    monkeypatch.setattr(app_mod, "MAX_EXPORT", 3)
    r = client.get("/api/export/events.csv", headers={"X-API-Key": KEY})
    assert len(_rows(r)) == 3 and r.headers["x-seawatch-truncated"] == "true"
    monkeypatch.setattr(app_mod, "MAX_EXPORT", 10)
    r = client.get("/api/export/events.csv", headers={"X-API-Key": KEY})
    assert len(_rows(r)) == 5 and r.headers["x-seawatch-truncated"] == "false"
