"""Report benchmark: fill a store with N synthetic events over a number of days (with review actions and holds), then
time ``build_report`` over typical periods and filters (p50 / p95 / max in ms).

    python -m seawatch.service.bench_report --events 100000 --days 30 [--db URL] [--repeat 5] [--tz Europe/Amsterdam]
        [--end 2026-11-10]

Without ``--db`` a temporary SQLite file is used. The events spread evenly over ``--days`` days up to today 00:00 UTC
(or ``--end``, a UTC date: a period over a daylight saving change, for ``--tz``), 50 cameras, 10 types, 4 severities,
a third with a position; 70 % have review actions (an acknowledgement 10 s-30 min after the start, then for most a
dismissal (a third of them as false detections) or a confirmation), 1 % a hold. Each shape runs ``--repeat`` times
through ``build_report`` (every SQL query and the lists), which is what ``GET /api/report`` adds on top of HTTP and
JSON; ``--tz`` buckets the hours and days in that zone (``GET /api/report?tz=``; default UTC).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from seawatch.service.bench_search import TYPES
from seawatch.service.report import DAY_NS, build_report, report_zone
from seawatch.service.store import EventQuery, EventStore, GeoPolygon, events_table, holds_table, review_table
from seawatch.vision.events import SEVERITIES

S = 1_000_000_000


def fill(store: EventStore, n: int, days: float, end_ns: int, seed: int = 0, chunk: int = 20_000) -> float:
    """Insert n events over ``days`` days before ``end_ns`` with their review actions and holds; seconds taken."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    span = int(days * DAY_NS)
    rows, reviews, holds = [], [], []

    def flush() -> None:
        with store.engine.begin() as conn:
            if rows:
                conn.execute(events_table.insert(), rows)
            if reviews:
                conn.execute(review_table.insert(), reviews)
            if holds:
                conn.execute(holds_table.insert(), holds)
        rows.clear(), reviews.clear(), holds.clear()

    for i in range(n):
        typ = TYPES[min(int(rng.expovariate(0.6)), len(TYPES) - 1)]
        sev = SEVERITIES[rng.randrange(4)]
        start = end_ns - span + rng.randrange(span)
        src = f"cam-{rng.randrange(50):02d}"
        geo = rng.random() < 0.33
        lat = 53.0 + rng.random() * 3.0 if geo else None
        lon = 3.0 + rng.random() * 5.0 if geo else None
        eid = f"{i:032x}"
        end = start + 30 * S if rng.random() < 0.98 else None
        status = "new"
        if rng.random() < 0.7:
            ack = start + rng.randrange(10 * S, 1800 * S)
            reviews.append({"event_id": eid, "status": "acknowledged", "at_ns": ack, "by": "ops", "by_kind": "user",
                            "note": "", "reason": ""})
            status = "acknowledged"
            if rng.random() < 0.8:
                status = "confirmed" if rng.random() < 0.2 else "dismissed"
                reason = "false_detection" if status == "dismissed" and rng.random() < 0.33 else ""
                reviews.append({"event_id": eid, "status": status, "at_ns": ack + rng.randrange(60 * S, 86400 * S),
                                "by": "rev", "by_kind": "user", "note": "checked", "reason": reason})
        doc = {"id": eid, "type": typ, "severity": sev, "phase": "end", "seq": 1, "source_id": src, "zone_id": "z1",
               "start_ns": start, "end_ns": end, "at_ns": end or start, "track_ids": [i % 1000], "labels": ["fire"],
               "scores": [0.8], "attributes": {"area_frac": 0.02}, "snapshot": None, "clip": None,
               "geo": {"lat_deg": lat, "lon_deg": lon, "semi_major_m": 20.0, "semi_minor_m": 10.0, "orientation_deg": 0.0} if geo else None,
               "geo_reason": None if geo else "source is not geo-referenced"}
        rows.append({"id": eid, "type": typ, "severity": sev, "severity_rank": SEVERITIES.index(sev), "phase": "end", "seq": 1,
                     "source_id": src, "zone_id": "z1", "start_ns": start, "end_ns": end, "at_ns": end or start,
                     "lat_deg": lat, "lon_deg": lon, "mmsi": None, "vessel_name": None, "hull_text": None,
                     "review_status": status, "search_text": f"{typ} {src} z1 fire",
                     "data": json.dumps(doc, separators=(",", ":")), "stored_ns": time.time_ns()})
        if rng.random() < 0.01:
            holds.append({"event_id": eid, "reason": "manual", "by": "rev", "at_ns": start + 3600 * S, "note": "keep"})
        if len(rows) >= chunk:
            flush()
    flush()
    with store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    return time.perf_counter() - t0


def shapes(end_ns: int, days: float) -> dict[str, tuple[EventQuery, int, int]]:
    full = (end_ns - int(days * DAY_NS), end_ns)
    week = (end_ns - 7 * DAY_NS, end_ns)
    shift = (end_ns - DAY_NS // 2, end_ns)
    poly = GeoPolygon(((4.0, 54.0), (6.0, 54.0), (6.5, 55.0), (5.0, 55.5), (3.5, 55.0)))
    return {
        f"{days:g} days, no filter": (EventQuery(), *full),
        f"{days:g} days, min severity high": (EventQuery(min_severity="high"), *full),
        f"{days:g} days, one camera": (EventQuery(source_ids=("cam-07",)), *full),
        f"{days:g} days, type fire": (EventQuery(types=("fire",)), *full),
        f"{days:g} days, polygon 2 deg": (EventQuery(polygon=poly), *full),
        "7 days, no filter": (EventQuery(), *week),
        "12 h shift, no filter": (EventQuery(), *shift),
    }


def run(store: EventStore, end_ns: int, days: float, repeat: int, out=sys.stdout,
        tz: str = "UTC") -> dict[str, dict[str, float]]:
    results = {}
    for name, (q, a, b) in shapes(end_ns, days).items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            rep = build_report(store, q, a, b, tz=tz)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        results[name] = {"p50_ms": statistics.median(times), "p95_ms": p95, "max_ms": times[-1], "events": rep["total"]}
        print(f"{name:34s} {rep['total']:7d} events  p50 {statistics.median(times):7.0f} ms  p95 {p95:7.0f} ms  "
              f"max {times[-1]:7.0f} ms", file=out, flush=True)
    return results


def _zone_name(name: str) -> str:
    try:
        report_zone(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tz", default="UTC", type=_zone_name, help="IANA time zone of the hour and day buckets (default UTC)")
    ap.add_argument("--end", type=date.fromisoformat, default=None, help="the last day's end (a UTC date; default today)")
    args = ap.parse_args(argv)
    end_ns = (time.time_ns() // DAY_NS) * DAY_NS if args.end is None else (args.end - date(1970, 1, 1)).days * DAY_NS
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = EventStore.open(url)
        try:
            have = store.count()
            if have:
                print(f"{url}: {have} events already there; filling nothing (a fresh database is needed)", file=sys.stderr)
            else:
                print(f"fill {args.events} events over {args.days:g} days: {fill(store, args.events, args.days, end_ns):.1f} s",
                      flush=True)
            print(f"buckets in {args.tz}", flush=True)
            run(store, end_ns, args.days, args.repeat, tz=args.tz)
        finally:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
