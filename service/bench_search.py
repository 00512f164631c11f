"""Event search benchmark: fill a store with N synthetic events, then time typical searches (p50 / p95 in ms).

    python -m seawatch.service.bench_search --events 1000000 [--db URL] [--repeat 30] [--match polygon] [--explain]

Without ``--db`` a temporary SQLite file is used. The synthetic events spread over a year, 50 sources, 10 types,
4 severities, a third of them with a position around the North Sea, some with vessel identity. Each query shape
runs ``--repeat`` times with random parameters through ``EventStore.search`` (SQL, JSON decoding of the page and
the audit-trail lookup included), so the numbers are what the API adds on top of HTTP.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from seawatch.service.store import BBox, EventQuery, EventStore, GeoCircle, GeoPolygon, events_table
from seawatch.vision.events import SEVERITIES

TYPES = ("fire", "smoke", "no_hard_hat", "fire_lane_blocked", "vessel_in_zone", "unidentified_vessel", "identity_mismatch",
         "registry_alert", "ais_dark", "source_offline")
T0_NS = 1_767_225_600_000_000_000  # 2026-01-01
YEAR_NS = 365 * 86400 * 1_000_000_000


def fill(store: EventStore, n: int, seed: int = 0, chunk: int = 20_000) -> float:
    """Insert n events in bulk (one transaction per chunk); returns seconds taken."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    rows = []
    with store.engine.begin() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one()
    for i in range(have, n):
        typ = TYPES[min(int(rng.expovariate(0.6)), len(TYPES) - 1)]  # skewed: fire/smoke common, ais_dark rare
        sev = SEVERITIES[rng.randrange(4)]
        start = T0_NS + rng.randrange(YEAR_NS)
        src = f"cam-{rng.randrange(50):02d}"
        geo = rng.random() < 0.33
        lat = 53.0 + rng.random() * 3.0 if geo else None
        lon = 3.0 + rng.random() * 5.0 if geo else None
        mmsi = f"{rng.randrange(200_000_000, 800_000_000)}" if typ in ("vessel_in_zone", "unidentified_vessel") else None
        doc = {"id": f"{i:032x}", "type": typ, "severity": sev, "phase": "end", "seq": 1, "source_id": src, "zone_id": "z1",
               "start_ns": start, "end_ns": start + 30_000_000_000, "at_ns": start + 30_000_000_000, "track_ids": [i % 1000],
               "labels": ["fire"], "scores": [0.8], "attributes": {"mmsi": mmsi} if mmsi else {"area_frac": 0.02},
               "snapshot": None, "clip": {"source_id": src, "start_ns": start - 5_000_000_000, "end_ns": start + 35_000_000_000,
                                          "pre_roll_ns": 5_000_000_000, "post_roll_ns": 5_000_000_000},
               "geo": {"lat_deg": lat, "lon_deg": lon, "semi_major_m": 20.0, "semi_minor_m": 10.0, "orientation_deg": 0.0} if geo else None,
               "geo_reason": None if geo else "source is not geo-referenced"}
        rows.append({"id": doc["id"], "type": typ, "severity": sev, "severity_rank": SEVERITIES.index(sev), "phase": "end", "seq": 1,
                     "source_id": src, "zone_id": "z1", "start_ns": start, "end_ns": doc["end_ns"], "at_ns": doc["at_ns"],
                     "lat_deg": lat, "lon_deg": lon, "mmsi": mmsi, "vessel_name": None, "hull_text": None,
                     "review_status": ("new", "new", "acknowledged", "dismissed", "confirmed")[rng.randrange(5)],
                     "search_text": f"{typ} {src} z1 fire", "data": json.dumps(doc, separators=(",", ":")), "stored_ns": time.time_ns()})
        if len(rows) >= chunk:
            with store.engine.begin() as conn:
                conn.execute(events_table.insert(), rows)
            rows = []
    if rows:
        with store.engine.begin() as conn:
            conn.execute(events_table.insert(), rows)
    with store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    return time.perf_counter() - t0


def shapes(rng: random.Random) -> dict[str, callable]:
    def t(days: float) -> tuple[int, int]:
        a = T0_NS + rng.randrange(YEAR_NS - int(days * 86400e9))
        return a, a + int(days * 86400e9)

    def box(size_deg: float) -> BBox:
        la, lo = 53.0 + rng.random() * (3.0 - size_deg), 3.0 + rng.random() * (5.0 - size_deg)
        return BBox(la, lo, la + size_deg, lo + size_deg)

    def polygon(size_deg: float) -> GeoPolygon:
        """An irregular hexagon about size_deg across (a wind farm / port outline), somewhere in the located area."""
        la, lo = 53.0 + size_deg / 2 + rng.random() * (3.0 - size_deg), 3.0 + size_deg / 2 + rng.random() * (5.0 - size_deg)
        pts = []
        for k in range(6):
            a = (k + rng.uniform(-0.3, 0.3)) * math.pi / 3
            r = size_deg / 2 * rng.uniform(0.6, 1.0)
            pts.append((lo + r * math.cos(a), la + r * math.sin(a)))
        return GeoPolygon(tuple(pts))

    def circle(radius_m: float) -> GeoCircle:
        return GeoCircle(53.2 + rng.random() * 2.6, 3.3 + rng.random() * 4.4, radius_m)

    return {
        "newest 50 (no filter)": lambda: EventQuery(),
        "type (common)": lambda: EventQuery(types=("fire",)),
        "type (rare)": lambda: EventQuery(types=("ais_dark",)),
        "status new + min severity high": lambda: EventQuery(statuses=("new",), min_severity="high"),
        "source + last 7 days": lambda: (lambda a: EventQuery(source_ids=(f"cam-{rng.randrange(50):02d}",), start_from_ns=a[0], start_to_ns=a[1]))(t(7)),
        "time range 1 day": lambda: (lambda a: EventQuery(start_from_ns=a[0], start_to_ns=a[1]))(t(1)),
        "bbox 0.2 deg": lambda: EventQuery(bbox=box(0.2)),
        "bbox 0.05 deg + 30 days": lambda: (lambda a: EventQuery(bbox=box(0.05), start_from_ns=a[0], start_to_ns=a[1]))(t(30)),
        "bbox 1 deg + type vessel": lambda: EventQuery(bbox=box(1.0), types=("vessel_in_zone",)),
        "bbox whole area + 1 day": lambda: (lambda a: EventQuery(bbox=BBox(50.0, 0.0, 60.0, 10.0), start_from_ns=a[0], start_to_ns=a[1]))(t(1)),
        "polygon 0.3 deg": lambda: EventQuery(polygon=polygon(0.3)),
        "polygon 2 deg + 30 days": lambda: (lambda a: EventQuery(polygon=polygon(2.0), start_from_ns=a[0], start_to_ns=a[1]))(t(30)),
        "polygon 1 deg + type vessel": lambda: EventQuery(polygon=polygon(1.0), types=("vessel_in_zone",)),
        "radius 5 km": lambda: EventQuery(near=circle(5_000)),
        "radius 50 km + 7 days": lambda: (lambda a: EventQuery(near=circle(50_000), start_from_ns=a[0], start_to_ns=a[1]))(t(7)),
        "radius 30 km + type vessel": lambda: EventQuery(near=circle(30_000), types=("vessel_in_zone",)),
        "mmsi": lambda: EventQuery(mmsi=f"{rng.randrange(200_000_000, 800_000_000)}"),
        "page 5 via cursor": None,  # filled in run()
        "free text, common word": lambda: EventQuery(text=f"cam-{rng.randrange(50):02d}"),
        "free text, absent word": lambda: EventQuery(text=f"nowhere{rng.randrange(1000)}"),
    }


def run(store: EventStore, repeat: int, seed: int = 1, match: str = "",
        plans: dict[str, str] | None = None) -> list[tuple[str, float, float, int]]:
    """p50 / p95 ms and rows per query shape (names containing ``match``); ``plans`` collects the first plan of each."""
    rng = random.Random(seed)
    out = []
    for name, make in shapes(rng).items():
        if match not in name:
            continue
        times = []
        n = 0
        for _ in range(repeat):
            if make is None:  # walk 5 pages of a common filter; time the 5th
                cur = None
                for _ in range(4):
                    cur = store.search(EventQuery(types=("smoke",), cursor=cur)).next_cursor
                q = EventQuery(types=("smoke",), cursor=cur)
            else:
                q = make()
            if plans is not None and name not in plans:
                plans[name] = store.explain(q)
            t0 = time.perf_counter()
            page = store.search(q)
            times.append((time.perf_counter() - t0) * 1000)
            n = len(page.events)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        out.append((name, statistics.median(times), p95, n))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--db", default=None, help="SQLAlchemy URL (default: a temporary SQLite file); an existing fill is reused")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--match", default="", help="only the query shapes whose name contains this text")
    ap.add_argument("--explain", action="store_true", help="print the database's plan of each query shape")
    args = ap.parse_args(argv)
    tmp = None
    url = args.db
    if url is None:
        tmp = tempfile.TemporaryDirectory(prefix="seawatch-bench-")
        url = f"sqlite:///{Path(tmp.name) / 'events.db'}"
    store = EventStore.open(url)
    try:
        fill_s = fill(store, args.events)
        total = store.count()
        print(f"{store.engine.dialect.name}: {total} events (fill {fill_s:.1f} s)")
        print(f"{'query':34s} {'p50 ms':>8s} {'p95 ms':>8s} {'rows':>5s}")
        worst = 0.0
        plans: dict[str, str] | None = {} if args.explain else None
        for name, p50, p95, n in run(store, args.repeat, match=args.match, plans=plans):
            print(f"{name:34s} {p50:8.1f} {p95:8.1f} {n:5d}")
            worst = max(worst, p95)
        print(f"worst p95: {worst:.1f} ms (target <= 200 ms)")
        for name, plan in (plans or {}).items():
            print(f"\n-- plan: {name}\n{plan}")
    finally:
        store.close()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
