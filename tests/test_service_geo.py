"""Geo search: polygon and radius filters on SQLite and PostgreSQL/PostGIS give the same answers (checked against a
reference computed here with shapely / pyproj), indexes are used, hostile geo inputs are 4xx, PostGIS is optional,
and drone events carry their pose into the evidence package."""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import replace

import pytest
import sqlalchemy as sa

from seawatch.errors import ConfigError, InputError
from seawatch.service.store import BBox, EventQuery, EventStore, GeoCircle, GeoPolygon, geodesic_m, MAX_POLYGON_VERTICES
from seawatch.vision.events import GeoPosition
from test_service_store import db_url, make_event, new_pg_database, postgres_server, store  # noqa: F401

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from test_service_api import KEY, app_env, error_code, hashes, seed, settings_for, token  # noqa: E402,F401


def ids(page) -> list[str]:
    return [e.id for e in page.events]


# ---- the typed filters ----------------------------------------------------------------------------------------
def test_polygon_parsing_and_validation():
    p = GeoPolygon.parse("6 53.5, 7 53.5,7 54.2 ,6 54.2,6 53.5")  # closing vertex optional, spaces tolerated
    assert p.vertices_lonlat == ((6.0, 53.5), (7.0, 53.5), (7.0, 54.2), (6.0, 54.2))
    assert p.wkt == "POLYGON((6.0 53.5,7.0 53.5,7.0 54.2,6.0 54.2,6.0 53.5))"
    assert p.box() == (53.5, 54.2, [(6.0, 7.0)])
    for bad, why in [
        ("6 53", "3 to"),
        ("6 53,7 53", "3 to"),
        ("6 53,7 53,6 53", "3 to"),  # closed 2-gon
        ("0 0,1 1,0 1,1 0", "simple ring"),  # bow tie
        ("0 0,1 1,2 2", "simple ring"),  # collinear: no area
        ("0 0,1 0,1 1,0 1,0.5 0", "simple ring"),  # touches itself
        ("nan 0,1 1,1 0", "finite"),
        ("0 inf,1 1,1 0", "finite"),
        ("0 0,1e400 1,1 0", "finite"),
        ("181 0,1 1,1 0", "outside"),
        ("0 -91,1 1,1 0", "outside"),
        ("a b,c d,e f", "not two numbers"),
        ("0 0 0,1 1,1 0", "lon lat"),
        ("0 0,1 1,1 0); DROP TABLE events; --", "lon lat"),
        ("", "lon lat"),
        (",,,", "lon lat"),
        (",".join(f"{math.cos(a / 600 * 6.283):.6f} {math.sin(a / 600 * 6.283):.6f}" for a in range(600)), "at most"),
        ("1 1," * 20000, "too long"),
    ]:
        with pytest.raises(InputError, match=why):
            GeoPolygon.parse(bad)
    with pytest.raises(InputError):
        GeoPolygon(((0.0, 0.0), (1.0, float("nan")), (1.0, 0.0)))
    ring = ",".join(f"{math.cos(a / MAX_POLYGON_VERTICES * 6.283):.6f} {math.sin(a / MAX_POLYGON_VERTICES * 6.283):.6f}"
                    for a in range(MAX_POLYGON_VERTICES))
    assert len(GeoPolygon.parse(ring).vertices_lonlat) == MAX_POLYGON_VERTICES


def test_circle_validation_and_its_box_contains_the_circle():
    for lat, lon, r in [(0, 0, 0), (0, 0, -5), (0, 0, 1e7), (float("nan"), 0, 10), (0, float("inf"), 10), (91, 0, 10),
                        (0, -181, 10), (0, 0, float("nan"))]:
        with pytest.raises(InputError):
            GeoCircle(lat, lon, r)
    from pyproj import Geod

    g = Geod(ellps="WGS84")
    rng = random.Random(4)
    for _ in range(400):
        c = GeoCircle(rng.uniform(-89.9, 89.9), rng.uniform(-180, 180), 10 ** rng.uniform(0, 6))
        lo, hi, lons = c.box()
        az = [rng.uniform(0, 360) for _ in range(64)] + [0, 90, 180, 270]
        lon2, lat2, _ = g.fwd([c.lon_deg] * len(az), [c.lat_deg] * len(az), az, [c.radius_m] * len(az))
        for la, lo_ in zip(lat2, lon2):
            assert lo <= la <= hi, (c, la)
            assert any(a <= lo_ <= b for a, b in lons), (c, lo_, lons)
    # across the antimeridian: two ranges; over a pole: every longitude
    assert len(GeoCircle(-16.5, 179.99, 5000).box()[2]) == 2
    assert GeoCircle(89.99, 0, 5000).box()[2] == [(-180.0, 180.0)]


# ---- both databases, same answers ------------------------------------------------------------------------------
PLACES = {  # id -> (lat, lon)
    "ev00000": (54.0, 6.5),  # wind farm
    "ev00001": (54.02, 6.55),
    "ev00002": (54.5, 6.5),  # 55.65 km north of ev00000
    "ev00003": (-16.5, 179.99),  # Fiji, both sides of the antimeridian
    "ev00004": (-16.5, -179.99),
    "ev00005": (89.995, 45.0),  # near the pole
    "ev00006": (89.995, -135.0),
    "ev00007": None,  # no position
}


@pytest.fixture
def placed(store):
    for i, (eid, pos) in enumerate(PLACES.items()):
        geo = GeoPosition(pos[0], pos[1], 20.0, 10.0) if pos else None
        store.put(make_event(i, type="vessel_in_zone" if i % 2 else "fire", geo=geo))
    return store


@pytest.mark.parametrize("query, expected", [
    (EventQuery(polygon=GeoPolygon.parse("6 53.5,7 53.5,7 54.2,6 54.2")), ["ev00001", "ev00000"]),
    (EventQuery(polygon=GeoPolygon.parse("6.5 54,7 53.5,7 54.3")), ["ev00001", "ev00000"]),  # a vertex on the point
    (EventQuery(polygon=GeoPolygon.parse("6 54,6.5 54,6.5 55,6 55")), ["ev00002", "ev00000"]),  # the boundary counts
    (EventQuery(polygon=GeoPolygon.parse("6.50001 53,8 53,8 56")), []),  # a triangle whose box holds them, not itself
    (EventQuery(polygon=GeoPolygon.parse("6 53.5,7 53.5,7 54.2,6 54.2"), types=("fire",)), ["ev00000"]),
    (EventQuery(polygon=GeoPolygon.parse("179 -17,180 -17,180 -16,179 -16")), ["ev00003"]),
    (EventQuery(polygon=GeoPolygon.parse("-180 90,180 90,180 89,-180 89")), ["ev00006", "ev00005"]),
    (EventQuery(near=GeoCircle(54.0, 6.5, 1000)), ["ev00000"]),
    (EventQuery(near=GeoCircle(54.0, 6.5, 4000)), ["ev00001", "ev00000"]),  # ev00001 is 4.0 km away
    (EventQuery(near=GeoCircle(54.0, 6.5, 55654)), ["ev00001", "ev00000"]),  # 55654.83 m to ev00002
    (EventQuery(near=GeoCircle(54.0, 6.5, 55655)), ["ev00002", "ev00001", "ev00000"]),
    (EventQuery(near=GeoCircle(-16.5, 180.0, 1100)), ["ev00004", "ev00003"]),  # across the antimeridian
    (EventQuery(near=GeoCircle(-16.5, 179.995, 600)), ["ev00003"]),
    (EventQuery(near=GeoCircle(90.0, 0.0, 600)), ["ev00006", "ev00005"]),  # around the pole
    (EventQuery(near=GeoCircle(54.0, 6.5, 4000), polygon=GeoPolygon.parse("6.52 53,8 53,8 56,6.52 56")), ["ev00001"]),
    (EventQuery(near=GeoCircle(54.0, 6.5, 4000), bbox=BBox(53.0, 6.0, 54.01, 7.0)), ["ev00000"]),
    (EventQuery(near=GeoCircle(54.0, 6.5, 4000), sort="start_ns"), ["ev00000", "ev00001"]),
    (EventQuery(near=GeoCircle(0.0, 0.0, 1_000_000)), []),
])
def test_polygon_and_radius_filters(placed, query, expected):
    assert ids(placed.search(query)) == expected


@pytest.mark.parametrize("geo_first_max_rows", [0, 20_000])
def test_random_shapes_match_the_reference_on_both_databases(store, monkeypatch, geo_first_max_rows):
    """300 events scattered over three areas (North Sea, antimeridian, pole); 40 random polygons and circles; each
    search equals the exact answer computed here, whichever access path the store picks. Run on both databases,
    the answers are therefore identical."""
    from shapely.geometry import Point, Polygon

    monkeypatch.setattr(EventStore, "GEO_FIRST_MAX_ROWS", geo_first_max_rows)
    rng = random.Random(7)
    centres = [(54.0, 6.0), (-16.5, 179.5), (88.5, 0.0)]
    pos = {}
    for i in range(300):
        la0, lo0 = centres[i % 3]
        la, lo = la0 + rng.uniform(-1.2, 1.2), lo0 + rng.uniform(-2.0, 2.0)
        lo = (lo + 180) % 360 - 180
        pos[f"ev{i:05d}"] = (min(la, 89.999), lo)
        store.put(make_event(i, geo=GeoPosition(min(la, 89.999), lo, 5.0, 5.0)))
    store.put(make_event(300))  # no position: never in a geo search
    for k in range(40):
        la0, lo0 = centres[k % 3]
        if k % 2:
            c = GeoCircle(la0 + rng.uniform(-1, 1), max(-180, min(180, lo0 + rng.uniform(-1, 1))), 10 ** rng.uniform(3.5, 5.3))
            want = {e for e, (la, lo) in pos.items() if geodesic_m(c.lat_deg, c.lon_deg, la, lo) <= c.radius_m}
            q = EventQuery(near=c, limit=1000)
        else:
            n = rng.randint(3, 12)
            ang = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
            rad = [rng.uniform(0.3, 1.5) for _ in range(n)]
            cl = min(lo0, 178.4)  # polygons stay on one side of the antimeridian
            ring = [(cl + r * math.cos(a), max(-89.9, min(90.0, la0 + r * math.sin(a)))) for a, r in zip(ang, rad)]
            try:
                poly = GeoPolygon(tuple(ring))
            except InputError:
                continue
            shape = Polygon(poly.vertices_lonlat)
            want = {e for e, (la, lo) in pos.items() if shape.covers(Point(lo, la))}
            q = EventQuery(polygon=poly, limit=1000)
        got = ids(store.search(q))
        assert set(got) == want, (k, q)
        assert len(got) == len(set(got))
        # paging through the same filter finds the same set
        seen, cursor = [], None
        while True:
            page = store.search(replace(q, limit=7, cursor=cursor))
            seen += ids(page)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == got


def test_spatial_indexes_are_used(store):
    """EXPLAIN of polygon / radius searches at 6 000 events: SQLite narrows through the lat/lon index, PostgreSQL
    through the GiST indexes (no sequential scan)."""
    from seawatch.service.bench_search import fill

    fill(store, 6000)
    poly = GeoPolygon.parse("4 54,4.3 54.1,4.2 54.3,3.9 54.2")
    for q in (EventQuery(polygon=poly), EventQuery(near=GeoCircle(54.5, 5.0, 5000)),
              EventQuery(polygon=poly, start_from_ns=0, types=("fire",))):
        plan = store.explain(q)
        if store.engine.dialect.name == "sqlite":
            assert "ix_events_lat_lon" in plan, plan
        else:
            assert ("ix_events_geom" in plan or "ix_events_geog" in plan) and "Seq Scan" not in plan, plan
        assert store.search(q).events is not None
    if store.engine.dialect.name == "sqlite":  # a box too full to read first: the type index, geo tested on its entries
        from unittest import mock

        with mock.patch.object(EventStore, "GEO_FIRST_MAX_ROWS", 0):
            plan = store.explain(EventQuery(polygon=GeoPolygon.parse("3 53,8 53,8 56,3 56"), types=("fire",)))
        assert "ix_events_type_start_geo" in plan and "ix_events_lat_lon" not in plan, plan


def test_migration_creates_the_postgis_column_and_indexes(store):
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar_one() == "0011"
        if store.engine.dialect.name == "sqlite":
            cols = {r[1] for r in conn.execute(sa.text("PRAGMA table_info(events)"))}
            assert "geom" not in cols
            return
        idx = {r[0]: r[1] for r in conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'"))}
        assert "gist (geom)" in idx["ix_events_geom"] and "geography" in idx["ix_events_geog"]
        typ = conn.execute(sa.text("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                   "WHERE attrelid = 'events'::regclass AND attname = 'geom'")).scalar_one()
        assert typ == "geometry(Point,4326)"
    # filled on insert and on update (a generated column)
    ev = make_event(0, geo=GeoPosition(54.0, 6.5, 1.0, 1.0))
    store.put(ev)
    store.put(replace(ev, seq=1, phase="update", geo=GeoPosition(55.0, 7.5, 1.0, 1.0)))
    store.put(make_event(1))
    with store.engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT id, ST_AsText(geom) FROM events ORDER BY id")).all())
    assert rows == {"ev00000": "POINT(7.5 55)", "ev00001": None}


def test_postgresql_without_postgis_still_works_and_says_why(postgres_server, caplog):
    """A role that may not create PostGIS: the store opens (warning), every other filter works, polygon / radius
    search is a clear error; once a superuser has created the extension, the next open adds the spatial column."""
    url = new_pg_database(postgres_server)
    dbname = url.rsplit("/", 1)[1]
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plain') THEN "
                             "CREATE ROLE plain LOGIN; END IF; END $$"))
        conn.execute(sa.text(f"ALTER DATABASE {dbname} OWNER TO plain"))
        conn.execute(sa.text("ALTER SCHEMA public OWNER TO plain"))
    plain_url = url.replace("postgres@", "plain@")
    with caplog.at_level("WARNING"):
        s = EventStore.open(plain_url)
    try:
        assert any("PostGIS is not available" in r.getMessage() for r in caplog.records)
        s.put(make_event(0, geo=GeoPosition(54.0, 6.5, 1.0, 1.0)))
        assert ids(s.search(EventQuery(bbox=BBox(53, 6, 55, 7)))) == ["ev00000"]
        with pytest.raises(ConfigError, match="PostGIS"):
            s.search(EventQuery(near=GeoCircle(54.0, 6.5, 100)))
    finally:
        s.close()
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE EXTENSION postgis"))
    admin.dispose()
    s = EventStore.open(plain_url)
    try:
        assert ids(s.search(EventQuery(near=GeoCircle(54.0, 6.5, 100)))) == ["ev00000"]
    finally:
        s.close()


# ---- HTTP ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, expected", [
    ({"polygon": "6 53.5,7 53.5,7 54.2,6 54.2"}, ["ev00002"]),
    ({"polygon": "6 53.5,7 53.5,7 54.2,6 54.2,6 53.5", "type": "fire"}, []),
    ({"near_lat": 54.0, "near_lon": 6.5, "radius_m": 4000}, ["ev00002"]),
    ({"near_lat": 54.0, "near_lon": 6.5, "radius_m": 3000}, []),
])
def test_geo_search_over_http(app_env, params, expected):
    client, app, _ = app_env
    seed(app, app.state.media_dir)  # ev00002 is at 54.02, 6.55
    r = client.get("/api/events", params=params, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()["events"]] == expected


@pytest.mark.parametrize("params, match", [
    ({"polygon": "6 53"}, "3 to 500"),
    ({"polygon": "0 0,1 1,0 1,1 0"}, "simple ring"),
    ({"polygon": "nan 0,1 1,1 0"}, "finite"),
    ({"polygon": "0 0,inf 1,1 0"}, "finite"),
    ({"polygon": "0 0,1 1,1 0' OR 1=1 --"}, "polygon"),
    ({"polygon": "'; DROP TABLE events; --"}, "polygon"),
    ({"polygon": "1 1," * 600}, "polygon"),
    ({"polygon": "0 0," * 6000}, "polygon"),
    ({"polygon": "200 0,1 1,1 0"}, "outside"),
    ({"polygon": ""}, "polygon"),
    ({"near_lat": 54, "near_lon": 6.5}, "all three"),
    ({"radius_m": 10}, "all three"),
    ({"near_lat": 54, "near_lon": 6.5, "radius_m": 0}, "radius_m"),
    ({"near_lat": 54, "near_lon": 6.5, "radius_m": -5}, "radius_m"),
    ({"near_lat": 54, "near_lon": 6.5, "radius_m": 1e12}, "radius_m"),
    ({"near_lat": 54, "near_lon": 6.5, "radius_m": "nan"}, "radius_m"),
    ({"near_lat": 54, "near_lon": 6.5, "radius_m": "inf"}, "radius_m"),
    ({"near_lat": "nan", "near_lon": 6.5, "radius_m": 10}, "near_lat"),
    ({"near_lat": 91, "near_lon": 6.5, "radius_m": 10}, "near_lat"),
    ({"near_lat": 54, "near_lon": "6.5; DROP TABLE events", "radius_m": 10}, "near_lon"),
])
def test_hostile_geo_inputs_are_422(app_env, params, match):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    for path in ("/api/events", "/api/export/events.geojson", "/api/export/events.kml"):
        r = client.get(path, params=params, headers={"X-API-Key": KEY})
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert error_code(r) == "invalid_request" and match in r.json()["error"]["message"], r.text
    assert app.state.store.count() == 4


def test_geo_filters_in_the_exports(app_env):
    client, app, _ = app_env
    seed(app, app.state.media_dir)
    app.state.store.put(make_event(9, geo=GeoPosition(54.3, 6.5, 5.0, 5.0)))
    h = {"X-API-Key": KEY}
    gj = client.get("/api/export/events.geojson", params={"near_lat": 54.0, "near_lon": 6.5, "radius_m": 40000}, headers=h).json()
    assert sorted(f["id"] for f in gj["features"]) == ["ev00002", "ev00009"]
    kml = client.get("/api/export/events.kml", params={"polygon": "6.4 54.2,6.6 54.2,6.6 54.4,6.4 54.4"}, headers=h).text
    assert 'id="ev00009"' in kml and 'id="ev00002"' not in kml


# ---- drone pose in the evidence package ---------------------------------------------------------------------------
def _drone_events():
    """Events of the simulated drone flight of test_pipeline_geo (10 Hz telemetry, a boat in a geo zone), with the
    timeline that geotagged them."""
    pytest.importorskip("cv2")
    from seawatch.drone.sim import SimTarget, render_frame
    from seawatch.drone.geometry import offsets_to_latlon
    from seawatch.vision.events import MemorySink
    from seawatch.vision.pipeline import Pipeline
    from test_pipeline_geo import CAMERA, HOME, T0_NS, RedBlobDetector, _drone_config, _drone_pose, _square_lonlat, _timeline

    tla, tlo = offsets_to_latlon(HOME[0], HOME[1], 8.0, 5.0)
    target = SimTarget("boat", float(tla[0]), float(tlo[0]), radius_m=2.0)
    cfg = _drone_config([{"id": "farm", "source": "drone-1-cam", "polygon_lonlat": _square_lonlat(target.lat_deg, target.lon_deg, 15.0),
                          "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0, "end_after_s": 1.0}]}])
    timeline = _timeline()
    sink = MemorySink()
    pipe = Pipeline(cfg, [sink], detectors={"redblob": RedBlobDetector()}, pose_timelines={"drone-1-cam": timeline})
    events = []
    for k in range(16):
        t_s = 0.1 + 0.25 * k
        events += pipe.process("drone-1-cam", T0_NS + int(t_s * 1e9), render_frame(_drone_pose(t_s), CAMERA, [target], HOME))
    events += pipe.close(T0_NS + int(4.0 * 1e9), "drone-1-cam")
    return events, timeline, _drone_pose, T0_NS


def test_drone_events_carry_the_pose_they_were_geotagged_with():
    events, _, drone_pose, t0_ns = _drone_events()
    located = [e for e in events if e.geo is not None]
    assert located and {e.phase for e in located} >= {"start", "end"}
    for e in located:
        pose = e.attributes["geo_pose"]
        assert pose["vehicle_id"] == "drone-1" and pose["gimbal_frame"] == "horizon"
        truth = drone_pose((pose["capture_time_ns"] - t0_ns) / 1e9)  # the simulator's pose at that frame
        assert geodesic_m(truth.lat_deg, truth.lon_deg, pose["lat_deg"], pose["lon_deg"]) < 0.01
        assert pose["alt_m"] == pytest.approx(40.0) and pose["gimbal_pitch_deg"] == pytest.approx(-90.0)
        assert pose["telemetry_time_ns"] == pose["capture_time_ns"]  # no latency offset configured
        assert 0 <= pose["position_age_s"] <= 0.05 and 0 <= pose["attitude_age_s"] <= 0.05  # 10 Hz telemetry
        # the frame the position came from is at most the event's own time
        assert pose["capture_time_ns"] <= e.at_ns
    # the pose numbers are not free-text noise
    from seawatch.service.store import _search_text

    assert str(located[0].attributes["geo_pose"]["alt_m"]) not in _search_text(located[0])


class _Fleet:
    def __init__(self, timelines):
        self.timelines = timelines

    def pose_timelines(self, settings):
        return self.timelines

    def drones(self):
        return []

    def ais(self):
        return []


@pytest.mark.parametrize("samples_from", ["live", "recorded", "none"])
def test_evidence_of_a_drone_event_has_its_telemetry(tmp_path, hashes, samples_from):
    """Samples come from the drone's live buffer, else from what TelemetryRecorder wrote when the event ended."""
    import hashlib
    import io
    import json
    import zipfile

    from seawatch.service.app import create_app

    from seawatch.service.export import TelemetryRecorder
    from seawatch.service.sink import StoreSink

    events, timeline, _, t0_ns = _drone_events()
    cfg = settings_for(tmp_path, hashes)
    app = create_app(cfg, fleet=_Fleet({"drone-1-cam": timeline} if samples_from == "live" else {}))
    with TestClient(app) as client:
        recorder = TelemetryRecorder(app.state.media_dir, {"drone-1-cam": timeline} if samples_from == "recorded" else {})
        sink = StoreSink(app.state.store, app.state.media_dir, [recorder])
        for e in events:
            sink.emit(e)
        assert recorder.written == (1 if samples_from == "recorded" else 0)  # one incident, one end phase
        app.state.store.put(make_event(0))  # a camera event
        ev = next(e for e in reversed(events) if e.geo is not None and e.phase == "end")
        rev = token(client, "rita")
        r = client.get(f"/api/events/{ev.id}/evidence.zip", headers=rev)
        assert r.status_code == 200, r.text
        z = zipfile.ZipFile(io.BytesIO(r.content))
        assert "telemetry.json" in z.namelist()
        manifest = json.loads(z.read("manifest.json"))
        assert "telemetry.json" in {f["name"] for f in manifest["files"]} and "telemetry.json" not in manifest["missing"]
        sums = dict(reversed(line.split("  ")) for line in z.read("SHA256SUMS").decode().splitlines())
        assert sums["telemetry.json"] == hashlib.sha256(z.read("telemetry.json")).hexdigest()
        tel = json.loads(z.read("telemetry.json"))
        assert tel["event_id"] == ev.id and tel["vehicle_id"] == "drone-1"
        assert tel["geotag_pose"] == json.loads(z.read("event.json"))["attributes"]["geo_pose"]
        w = tel["window"]
        assert w["from_ns"] == ev.clip.start_ns and w["to_ns"] == ev.clip.end_ns
        if samples_from != "none":
            pos = tel["samples"]["position"]
            assert tel["samples_missing"] is None and len(tel["samples"]["attitude"]) == len(pos)
            # 10 Hz telemetry from 0 to 6 s, clipped to the event's clip window
            times = [p["time_ns"] for p in pos]
            assert times == sorted(times) and w["from_ns"] <= times[0] and times[-1] <= w["to_ns"]
            assert len(pos) == len([i for i in range(61) if w["from_ns"] <= t0_ns + i * 100_000_000 <= w["to_ns"]])
            assert {"lat_deg", "lon_deg", "alt_m", "velocity_ned_m_s"} <= set(pos[0])
        else:
            assert tel["samples"] is None and "none recorded" in tel["samples_missing"]
        # a camera event: no telemetry, and the manifest says why
        z = zipfile.ZipFile(io.BytesIO(client.get("/api/events/ev00000/evidence.zip", headers=rev).content))
        assert "telemetry.json" not in z.namelist()
        assert "not from a drone" in json.loads(z.read("manifest.json"))["missing"]["telemetry.json"]


def test_times_beyond_the_bigint_range_are_clamped_not_a_database_error(store):
    """Found by the schemathesis run: start_from=7385-11-10 is a valid ISO time but not a BIGINT of ns."""
    store.put(make_event(0))
    far = 2**63 + 10**20
    assert ids(store.search(EventQuery(start_from_ns=far))) == []
    assert ids(store.search(EventQuery(start_to_ns=far))) == ["ev00000"]
    assert ids(store.search(EventQuery(start_from_ns=-far, start_to_ns=far))) == ["ev00000"]
    import base64
    import json

    huge = base64.urlsafe_b64encode(json.dumps(["-start_ns", far, "x"]).encode()).decode()
    with pytest.raises(InputError, match="cursor"):
        store.search(EventQuery(cursor=huge))
