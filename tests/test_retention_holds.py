"""Lifting holds: a reviewer lifts reviewers' holds, only an admin an evidence export's (with a note); a lifted hold
stays in the audit trail (who, when, why) and no longer keeps the event from retention; searches, single events and
the live feed follow. On SQLite and PostgreSQL."""

from __future__ import annotations

import time
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.errors import InputError  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.retention import Retention  # noqa: E402
from test_retention import cfg, files_of, put_event  # noqa: E402
from test_service_api import KEY, error_code, hashes, settings_for, token  # noqa: E402,F401 - hashes: a fixture
from test_service_store import S, db_url, new_pg_database, postgres_server, store  # noqa: E402,F401 - fixtures


def test_a_lifted_hold_is_kept_in_the_trail_and_no_longer_holds(store, tmp_path):
    media = tmp_path / "media"
    ev = put_event(store, media, "claim", 200)
    put_event(store, media, "other", 200, source="cam-2")  # its own clip file (one window on one camera is one file)
    first = store.hold("claim", "manual", "user:rita", "insurance claim 42", at_ns=1_000)
    store.hold("claim", "manual", "user:sam", "", at_ns=2_000)
    store.hold("other", "manual", "user:rita")
    assert store.with_holds(["claim", "other"]) == {"claim", "other"}
    lifted = store.release_holds("claim", "user:rita", "claim settled", reasons=("manual",), at_ns=5_000)
    assert [(h["id"], h["by"], h["released_by"], h["released_ns"], h["release_note"], h["active"]) for h in lifted] == [
        (first, "user:rita", "user:rita", 5_000, "claim settled", False),
        (first + 1, "user:sam", "user:rita", 5_000, "claim settled", False)]
    # the trail keeps both, lifted; the event is no longer held (searches, counts, the sweep)
    holds = store.holds("claim")
    assert [(h["reason"], h["note"], h["active"]) for h in holds] == [("manual", "insurance claim 42", False),
                                                                      ("manual", "", False)]
    assert store.with_holds(["claim", "other"]) == {"other"}
    assert store.held_counts() == {"confirmed": 0, "holds": 1, "held": 1, "open": 0}
    assert store.release_holds("claim", "user:sam", "again") == []  # nothing active is left: nothing lifted
    rep = Retention(store, media, cfg()).sweep()
    assert rep.sample_event_ids == ["claim"] and store.get("claim") is None and store.get("other") is not None
    assert not any(p.exists() for p in files_of(media, ev))
    assert store.holds("claim") == []  # the trail goes with the event (cascade), as its review trail does
    with pytest.raises(KeyError):
        store.release_holds("nope", "user:rita")


def test_an_evidence_exports_hold_is_lifted_only_with_a_note(store, tmp_path):
    media = tmp_path / "media"
    put_event(store, media, "e", 200)
    hid = store.hold("e", "evidence_export", "user:rita")
    store.hold("e", "manual", "user:rita")
    with pytest.raises(InputError, match="needs a note"):
        store.release_holds("e", "user:adam", "  ", hold_id=hid)
    assert [h["reason"] for h in store.release_holds("e", "user:rita", reasons=("manual",))] == ["manual"]
    assert store.with_holds(["e"]) == {"e"}  # the export's hold still holds
    assert Retention(store, media, cfg()).sweep().events == 0
    assert [h["id"] for h in store.release_holds("e", "user:adam", "package superseded by case 7", hold_id=hid)] == [hid]
    assert store.with_holds(["e"]) == set()


@pytest.fixture
def api(db_url, tmp_path, hashes):  # noqa: F811 - the fixture imported above
    """The API on both databases, with olga (operator), rita (reviewer), adam (admin) and the operator key."""
    cfg_ = settings_for(tmp_path, hashes, storage={"database_url": db_url,
                                                   "retention": {"first_sweep_delay_s": 3600, "upgrade_grace_days": 0}})
    with TestClient(create_app(cfg_)) as client:
        yield client, client.app


def test_reviewers_lift_holds_over_the_api_and_every_desk_follows(api, tmp_path):
    client, app = api
    store = app.state.store
    media = app.state.media_dir
    put_event(store, media, "ev1", 1)
    put_event(store, media, "ev2", 1)
    op, rev, adm = token(client, "olga"), token(client, "rita"), token(client, "adam")
    assert client.post("/api/events/ev1/hold", headers=rev, json={"note": "claim 42"}).status_code == 200
    assert client.post("/api/events/ev1/hold", headers=adm, json={"note": "police case"}).status_code == 200
    assert client.get("/api/events/ev1", headers=op).json()["held"] is True
    # operators cannot lift a hold (nor put one)
    r = client.request("DELETE", "/api/events/ev1/hold", headers=op)
    assert r.status_code == 403 and error_code(r) == "forbidden"
    assert client.request("DELETE", "/api/events/ev1/hold", headers={"X-API-Key": KEY}).status_code == 403
    with client.websocket_connect("/api/live", headers={"X-API-Key": KEY}) as ws:
        assert ws.receive_json()["kind"] == "hello"
        r = client.request("DELETE", "/api/events/ev1/hold", headers=rev, json={"note": "claim settled"})
        assert r.status_code == 200, r.text
        msg = ws.receive_json()
        while msg["kind"] == "sources":
            msg = ws.receive_json()
        assert (msg["kind"], msg["event"]["id"], msg["event"]["held"]) == ("hold", "ev1", False)
        # a hold put on says so too
        assert client.post("/api/events/ev2/hold", headers=rev).status_code == 200
        msg = ws.receive_json()
        while msg["kind"] == "sources":
            msg = ws.receive_json()
        assert (msg["kind"], msg["event"]["id"], msg["event"]["held"]) == ("hold", "ev2", True)
    holds = r.json()
    assert [(h["reason"], h["by"], h["note"], h["active"], h["released_by"], h["release_note"]) for h in holds] == [
        ("manual", "user:rita", "claim 42", False, "user:rita", "claim settled"),
        ("manual", "user:adam", "police case", False, "user:rita", "claim settled")]
    assert all(abs(h["released_ns"] - time.time_ns()) < 60 * S for h in holds)
    assert client.get("/api/events/ev1/holds", headers=op).json() == holds  # the audit trail, for every role
    assert client.get("/api/events/ev1", headers=op).json()["held"] is False
    listed = {e["id"]: e["held"] for e in client.get("/api/events", headers=op).json()["events"]}
    assert listed == {"ev1": False, "ev2": True}
    # nothing left to lift: 409; unknown event or hold: 404; junk: 422
    r = client.request("DELETE", "/api/events/ev1/hold", headers=rev)
    assert r.status_code == 409 and "no active reviewer's hold" in r.json()["error"]["message"]
    r = client.request("DELETE", "/api/events/ev1/hold", headers=rev, json={"hold_id": holds[0]["id"]})
    assert r.status_code == 409 and "lifted already" in r.json()["error"]["message"]
    assert client.request("DELETE", "/api/events/nope/hold", headers=rev).status_code == 404
    other = client.get("/api/events/ev2/holds", headers=op).json()[0]["id"]
    assert client.request("DELETE", "/api/events/ev1/hold", headers=rev, json={"hold_id": other}).status_code == 404
    assert client.request("DELETE", "/api/events/ev1/hold", headers=rev, json={"hold_id": "x"}).status_code == 422
    assert client.request("DELETE", "/api/events/ev1/hold", headers=rev, json={"bogus": 1}).status_code == 422
    assert store.held_counts()["holds"] == 1  # ev2 only


def test_only_an_admin_lifts_an_evidence_exports_hold_and_says_why(api):
    client, app = api
    store = app.state.store
    put_event(store, app.state.media_dir, "ev1", 1)
    rev, adm = token(client, "rita"), token(client, "adam")
    assert client.get("/api/events/ev1/evidence.zip", headers=rev).status_code == 200
    [export] = client.get("/api/events/ev1/holds", headers=rev).json()
    assert (export["reason"], export["by"], export["active"]) == ("evidence_export", "user:rita", True)
    # without hold_id only reviewers' holds are lifted: there is none
    r = client.request("DELETE", "/api/events/ev1/hold", headers=adm, json={"note": "x"})
    assert r.status_code == 409 and "evidence export hold(s) are lifted by an admin" in r.json()["error"]["message"]
    r = client.request("DELETE", "/api/events/ev1/hold", headers=rev, json={"hold_id": export["id"], "note": "done"})
    assert r.status_code == 403 and "only an admin" in r.json()["error"]["message"]
    r = client.request("DELETE", "/api/events/ev1/hold", headers=adm, json={"hold_id": export["id"]})
    assert r.status_code == 422 and "needs a note" in r.json()["error"]["message"]
    assert store.with_holds(["ev1"]) == {"ev1"}
    r = client.request("DELETE", "/api/events/ev1/hold", headers=adm,
                       json={"hold_id": export["id"], "note": "package superseded by case 7"})
    assert r.status_code == 200
    [h] = r.json()
    assert (h["active"], h["released_by"], h["release_note"]) == (False, "user:adam", "package superseded by case 7")
    assert client.get("/api/events/ev1", headers=rev).json()["held"] is False
