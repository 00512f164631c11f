""""Ignore this spot" from the review desk: a dismissed event's subject becomes an ignore area of its fixed camera,
stored, applied to the running pipeline at once and again after a restart; refused for drones, panning cameras and
events without a box; removable; roles enforced; the same on PostgreSQL."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.errors import ConfigError  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.runner import Service  # noqa: E402
from seawatch.vision.events import Snapshot  # noqa: E402
from seawatch.vision.pipeline import Pipeline  # noqa: E402
from seawatch.vision.zones import ignore_area_around  # noqa: E402
from test_pipeline_geo import T0_NS, BoxDetector  # noqa: E402
from test_service_api import KEY, error_code, hashes, settings_for, token  # noqa: E402,F401
from test_service_store import make_event, new_pg_database, postgres_server  # noqa: E402,F401

BUOY = (600.0, 370.0, 640.0, 400.0)  # waterline (620, 400)
BOAT = (700.0, 370.0, 760.0, 400.0)  # waterline (730, 400), 90 px to the right
FRAME = np.zeros((720, 1280, 3), np.uint8)


@pytest.mark.parametrize("box,label,kw,expected", [
    # a vessel is anchored at its waterline: 10 % of 40 x 30 px is below the 6 px minimum each way
    (BUOY, "vessel", {}, [[614.0, 394.0], [626.0, 394.0], [626.0, 406.0], [614.0, 406.0]]),
    (BUOY, "vessel", {"margin_frac": 0.3}, [[608.0, 391.0], [632.0, 391.0], [632.0, 409.0], [608.0, 409.0]]),
    # fire at its centre; a small box gets the minimum margin
    ((100, 100, 110, 104), "fire", {}, [[99.0, 96.0], [111.0, 96.0], [111.0, 108.0], [99.0, 108.0]]),
    ((100, 100, 110, 104), "fire", {"min_margin_px": 0.0, "margin_frac": 0.25}, [[102.5, 101.0], [107.5, 101.0], [107.5, 103.0], [102.5, 103.0]]),
    # clipped to the frame
    ((0, 690, 40, 720), "vessel", {"frame_wh_px": (1280, 720)}, [[14.0, 714.0], [26.0, 714.0], [26.0, 720.0], [14.0, 720.0]]),
])
def test_ignore_area_around_the_anchor(box, label, kw, expected):
    assert ignore_area_around(box, label, **kw) == expected


@pytest.mark.parametrize("box", [(10, 10, 10, 20), (10, 10, 5, 20), (0, 0, float("nan"), 5)])
def test_ignore_area_around_refuses_non_boxes(box):
    with pytest.raises(ValueError, match="not a box"):
        ignore_area_around(box, "vessel")


def _config(tmp_path, hashes, **over):
    return settings_for(tmp_path, hashes, **over).model_copy(update=_sources_update(tmp_path))


def _sources_update(tmp_path) -> dict:
    from seawatch.service.config import load_config

    data = {
        "sources": [
            {"id": "quay", "url": "x.mp4", "models": ["boxes"],
             "ignore": [{"polygon_px": [[0, 0], [50, 0], [50, 50], [0, 50]], "note": "logo"}]},
            {"id": "dome", "url": "y.mp4", "models": ["boxes"],
             "water_views": [{"reference": str(tmp_path / "view.jpg"), "water": [[[0, 0], [10, 0], [10, 10]]]}]},
            {"id": "drone-1-cam", "url": "z.mp4", "models": ["boxes"]},
        ],
        "drones": [{"id": "drone-1", "connection": "udp:127.0.0.1:14599", "video_source": "drone-1-cam",
                    "camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 80}}],
        "zones": [{"id": "harbour", "source": "quay", "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
    }
    import cv2

    rng = np.random.default_rng(0)  # texture, so the view can be registered against
    cv2.imwrite(str(tmp_path / "view.jpg"), cv2.resize(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (320, 240)))
    cfg = load_config(data=data)
    return {"sources": cfg.sources, "drones": cfg.drones, "zones": cfg.zones}


def _run(pipe, det, boxes, n, t0_ns):
    det.boxes = list(boxes)
    events = []
    for k in range(n):
        events += pipe.process("quay", t0_ns + k * 500_000_000, FRAME)
    return events


def test_ignore_spot_end_to_end(tmp_path, hashes):
    cfg = _config(tmp_path, hashes)
    det = BoxDetector()
    pipe = Pipeline(cfg.pipeline, [], detectors={"boxes": det})

    def apply(source_id, areas):
        pipe.set_added_ignore(source_id, [(a.polygon_px, a.labels) for a in areas])

    app = create_app(cfg, apply_ignore=apply)
    with TestClient(app) as client:
        store = app.state.store
        starts = [e for e in _run(pipe, det, [BUOY, BOAT], 6, T0_NS) if e.phase == "start"]
        assert len(starts) == 2
        for e in starts:
            store.put(e)
        buoy = next(e for e in starts if e.snapshot.xyxy_px[0] < 650)
        boat = next(e for e in starts if e.snapshot.xyxy_px[0] > 650)
        op, rev = token(client, "olga"), token(client, "rita")
        url = f"/api/events/{buoy.id}/ignore-spot"

        r = client.post(url, headers=op, json={"note": "fairway buoy"})
        assert r.status_code == 403 and error_code(r) == "forbidden"
        assert client.post(url, headers=rev, json={"labels": ["person"]}).status_code == 422
        assert client.post(url, headers=rev, json={"margin_frac": 5}).status_code == 422
        assert client.post(url, headers=rev, json={"colour": "red"}).status_code == 422
        assert client.post("/api/events/nope/ignore-spot", headers=rev).status_code == 404
        assert store.ignore_areas() == []

        r = client.post(url, headers=rev, json={"note": "fairway buoy"})
        assert r.status_code == 201, r.text
        area, ev = r.json()["area"], r.json()["event"]
        assert area["source_id"] == "quay" and area["labels"] == ["vessel"] and area["event_id"] == buoy.id
        assert area["polygon_px"] == ignore_area_around(buoy.snapshot.xyxy_px, "vessel") and area["created_by"] == "rita"
        assert ev["review_status"] == "dismissed"
        assert ev["review_history"][-1]["note"] == f"ignore area {area['id']} added: fairway buoy"
        # listed with the camera's areas, beside the configured one
        quay = next(s for s in client.get("/api/sources", headers=op).json() if s["source_id"] == "quay")
        ignores = [(a["id"], a["origin"]) for a in quay["areas"] if a["kind"] == "ignore"]
        assert ignores == [("ignore-1", "config"), (f"op-{area['id']}", "operator")]
        mine = next(a for a in quay["areas"] if a.get("origin") == "operator")
        assert (mine["area_id"], mine["event_id"], mine["created_by"], mine["note"], mine["labels"], mine["polygon_px"]) \
            == (area["id"], buoy.id, "rita", "fairway buoy", ["vessel"], area["polygon_px"])
        assert [a["id"] for a in client.get("/api/sources/quay/ignore-areas", headers=op).json()] == [area["id"]]

        # the running pipeline drops the buoy from the next frame on, keeps the boat and the configured area
        got = pipe.detect("quay", FRAME)
        assert got.xyxy_px.tolist() == [list(BOAT)]
        det.boxes = [(10, 10, 30, 40)]
        assert len(pipe.detect("quay", FRAME)) == 0  # inside the configured area
        # the buoy's incident ends, the boat's goes on, no new incident starts
        later = _run(pipe, det, [BUOY, BOAT], 30, T0_NS + 10 * 10**9)
        assert not [e for e in later if e.phase == "start"]
        assert {e.id for e in later if e.phase == "end"} == {buoy.id}

        # refused where pixels have no fixed place (or no camera any more), or there is no box
        for sid in ("drone-1-cam", "dome", "old-cam"):
            other = make_event(50 + len(sid), source_id=sid, snapshot=Snapshot(sid, T0_NS, BUOY, 0.5))
            store.put(other)
            r = client.post(f"/api/events/{other.id}/ignore-spot", headers=rev)
            assert r.status_code == 409 and error_code(r) == "conflict", r.text
        boxless = make_event(60, source_id="quay", snapshot=None)
        flat = make_event(61, source_id="quay", snapshot=Snapshot("quay", T0_NS, (5.0, 5.0, 5.0, 9.0), 0.5))
        for e in (boxless, flat):
            store.put(e)
            r = client.post(f"/api/events/{e.id}/ignore-spot", headers=rev)
            assert r.status_code == 409 and error_code(r) == "conflict", r.text
        assert [a.id for a in store.ignore_areas()] == [area["id"]]

        # removal: reviewers only, the right camera only, once
        rm = f"/api/sources/quay/ignore-areas/{area['id']}"
        assert client.delete(rm, headers=op).status_code == 403
        assert client.delete(f"/api/sources/dome/ignore-areas/{area['id']}", headers=rev).status_code == 404
        r = client.delete(rm, headers=rev)
        assert r.status_code == 200 and r.json()["id"] == area["id"]
        assert client.delete(rm, headers=rev).status_code == 404
        audit = client.get(f"/api/events/{buoy.id}/audit", headers=op).json()
        assert [(a["status"], a["by"], a["note"], a["reason"]) for a in audit] == [
            ("dismissed", "rita", f"ignore area {area['id']} added: fairway buoy", "false_detection"),
            ("dismissed", "rita", f"ignore area {area['id']} removed", "false_detection")]  # the box was still wrong
        assert client.get("/api/sources/nope/ignore-areas", headers=op).status_code == 404
        det.boxes = [BUOY, BOAT]
        assert len(pipe.detect("quay", FRAME)) == 2  # the buoy counts again
        assert boat.id != buoy.id


def test_pipeline_refuses_added_areas_where_pixels_move(tmp_path, hashes):
    cfg = _config(tmp_path, hashes)
    pipe = Pipeline(cfg.pipeline, [], detectors={"boxes": BoxDetector()})
    square = ([[0, 0], [10, 0], [10, 10], [0, 10]], ("vessel",))
    for sid, why in (("drone-1-cam", "drone"), ("dome", "water_views"), ("nope", "no source")):
        with pytest.raises(ConfigError, match=why):
            pipe.set_added_ignore(sid, [square])
    with pytest.raises(ConfigError, match="at least 3"):
        pipe.set_added_ignore("quay", [([[0, 0], [10, 0]], ("vessel",))])
    pipe.set_added_ignore("quay", [square])
    pipe.set_added_ignore("quay", ())  # back to the configured area alone
    det = pipe.detectors["boxes"]
    det.boxes = [(2, 2, 8, 8), (20, 60, 30, 70)]
    assert pipe.detect("quay", FRAME).xyxy_px.tolist() == [[20, 60, 30, 70]]


def test_stored_areas_are_applied_when_the_service_starts(tmp_path, hashes):
    """What the review desk added outlives a restart; areas of a source that is gone stay stored, unused."""
    cfg = _config(tmp_path, hashes)
    svc = Service(cfg, detectors={"boxes": BoxDetector()})
    from seawatch.service.store import EventStore

    svc.store = EventStore.open(cfg.storage.resolved_database_url())
    try:
        kept = svc.store.add_ignore_area("quay", ignore_area_around(BUOY, "vessel"), ["vessel"], "rita", "buoy")
        svc.store.add_ignore_area("old-cam", [[0, 0], [9, 0], [9, 9]], ["vessel"], "rita")
        svc.store.add_ignore_area("drone-1-cam", [[0, 0], [9, 0], [9, 9]], ["vessel"], "rita")
        svc.pipeline = Pipeline(cfg.pipeline, [], detectors={"boxes": BoxDetector()})
        svc._apply_stored_ignore()
        det = svc.pipeline.detectors["boxes"]
        det.boxes = [BUOY, BOAT]
        assert svc.pipeline.detect("quay", FRAME).xyxy_px.tolist() == [list(BOAT)]
        assert len(svc.store.ignore_areas()) == 3 and svc.store.ignore_areas("quay")[0].id == kept.id
    finally:
        svc.store.close()


def test_ignore_areas_on_postgresql(postgres_server, tmp_path, hashes):
    url = new_pg_database(postgres_server)
    cfg = _config(tmp_path, hashes, storage={"database_url": url})
    with TestClient(create_app(cfg)) as client:
        store = client.app.state.store
        assert store.engine.dialect.name == "postgresql"
        ev = make_event(1, type="vessel_in_zone", source_id="quay", labels=("vessel",), snapshot=Snapshot("quay", T0_NS, BUOY, 0.5))
        store.put(ev)
        rev = token(client, "rita")
        r = client.post(f"/api/events/{ev.id}/ignore-spot", headers=rev, json={"note": "pile \u00e9"})
        assert r.status_code == 201, r.text
        assert client.post(f"/api/events/{ev.id}/ignore-spot", headers=rev, json={"note": "a\x00b"}).status_code == 400
        got = client.get("/api/sources/quay/ignore-areas", headers={"X-API-Key": KEY}).json()
        assert [(a["note"], a["polygon_px"]) for a in got] == [("pile \u00e9", ignore_area_around(BUOY, "vessel"))]
        assert client.delete(f"/api/sources/quay/ignore-areas/{got[0]['id']}", headers=rev).status_code == 200
        assert store.ignore_areas() == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_make_one_area_per_event(backend, request, tmp_path):
    """Two service processes share one database; both answer "ignore this spot" for the same events at the same
    moment: each event makes exactly one area, and the other caller is told which (AreaExists)."""
    import threading

    from seawatch.service.store import AreaExists, EventStore

    url = (f"sqlite:///{tmp_path / 'events.db'}" if backend == "sqlite"
           else new_pg_database(request.getfixturevalue("postgres_server")))
    a, b = EventStore.open(url), EventStore.open(url)  # two engines and write locks: two processes
    try:
        events = [f"ev{i:05d}" for i in range(12)]
        results: dict[str, list] = {e: [] for e in events}
        for ev in events:
            gate = threading.Barrier(2)

            def make(store, ev=ev, gate=gate):
                gate.wait()
                try:
                    results[ev].append(store.add_ignore_area("quay", [(0, 0), (9, 0), (9, 9)], ["vessel"], "rita",
                                                             event_id=ev))
                except AreaExists as exc:
                    results[ev].append(exc)

            ts = [threading.Thread(target=make, args=(s,)) for s in (a, b)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(30)
        assert sorted(x.event_id for x in a.ignore_areas()) == events  # one each
        for ev, got in results.items():
            assert len(got) == 2 and sum(isinstance(x, AreaExists) for x in got) == 1, (ev, got)
    finally:
        a.close()
        b.close()


def test_migration_keeps_areas_made_twice_before_the_unique_index(tmp_path):
    """A database from before revision 0008 holding two areas from one event (the old race) upgrades: both areas
    are kept, the later one without its event link, and the event cannot make a third."""
    import sqlalchemy as sa

    from seawatch.service.migrations import upgrade
    from seawatch.service.store import AreaExists, EventStore

    url = f"sqlite:///{tmp_path / 'events.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        upgrade(conn, "0007")
        for note in ("first", "second"):
            conn.execute(sa.text("INSERT INTO ignore_areas (source_id, labels, polygon_px, note, event_id, created_by, "
                                 "created_ns) VALUES ('quay', '[\"vessel\"]', '[[0,0],[9,0],[9,9]]', :n, 'ev1', 'rita', 1)"),
                         {"n": note})
    engine.dispose()
    store = EventStore.open(url)
    try:
        got = [(x.note, x.event_id) for x in store.ignore_areas()]
        assert got == [("first", "ev1"), ("second", None)]
        with pytest.raises(AreaExists):
            store.add_ignore_area("quay", [(0, 0), (9, 0), (9, 9)], ["vessel"], "rita", event_id="ev1")
    finally:
        store.close()
