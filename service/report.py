"""A shift / period report over the event store: what a shift leader hands over and a reviewer files each week.

``build_report(store, query, ...)`` counts the incidents that started in a period (the same filters as a search,
``EventQuery``) by type x severity, camera / drone, review status, hour of day and day, how many are still open, the
operators' response time and the time to a verdict, and lists the confirmed, the high / critical and the held ones.
The counts are SQL ``GROUP BY`` on SQLite and PostgreSQL alike (a few thousand groups at most come back, never the
events); only the per-event response times (one integer pair per reviewed event) and the listed events are read out.

Times are UTC ns; the hour-of-day and per-day buckets are the local hours and days of the incident's start in a time
zone the caller names (IANA, default UTC), daylight saving time followed: a local day of 23 or 25 hours, the autumn
hour that the clocks repeat counted (twice as long) in its local hour. They stay exact and in SQL: the zone's offsets
over the period (a few segments, a change at most every few months) are found with ``zoneinfo`` first, and the query
groups by the local wall-clock hour ``(start_ns + the offset in force at start_ns) // 1 h``, the offset picked by a
``CASE`` on ``start_ns`` (see ``zone_offsets``). So any offset works, +05:30 and +05:45 included, with no more groups
than UTC hours.
"""

from __future__ import annotations

import functools
import math
import zoneinfo
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seawatch.service.schemas import Name, SearchParams, Severity, to_ns
from seawatch.service.store import EventQuery, EventStore, events_table, holds_table, review_table
from seawatch.vision.events import REVIEW_STATUSES, SEVERITIES, severity_rank

HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS
MAX_PERIOD_DAYS = 92
BUSIEST = 10  # cameras in busiest_sources
VERDICTS = ("dismissed", "confirmed")
# a period lies within these years: its ns (and a day either side) fit in 64 bits, and zoneinfo knows the offsets
PERIOD_YEARS = (1970, 2200)
ZONE_NAME_MAX = 64  # the longest IANA name is 32 characters (America/Argentina/ComodRivadavia)


@functools.cache
def _zone_names() -> dict[str, str]:
    """Lower-case IANA name -> the name, for the zones the tz database here holds (read once: ~15 ms)."""
    names = {n.lower(): n for n in zoneinfo.available_timezones() if n != "localtime"}  # the server's own: no name
    names["utc"] = "UTC"
    return names


def report_zone(name: str) -> tzinfo:
    """The tzinfo of an IANA zone name ("Europe/Amsterdam", "UTC"); ValueError saying why for any other text (only
    the names the tz database lists are opened, so no text reaches the file system)."""
    if name == "UTC":
        return timezone.utc
    known = _zone_names()
    if len(name) > ZONE_NAME_MAX or known.get(name.lower()) != name:
        hint = known.get(name.lower()) if len(name) <= ZONE_NAME_MAX else None
        raise ValueError(f"unknown time zone {name[:ZONE_NAME_MAX]!r}: give an IANA time zone name such as "
                         f"Europe/Amsterdam, Asia/Kolkata or UTC" + (f" (did you mean {hint}?)" if hint else ""))
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"time zone {name!r} could not be read from the tz database: {exc}") from None


class ReportParams(BaseModel):
    """The period (required, at most MAX_PERIOD_DAYS) and the search filters a report takes."""

    model_config = ConfigDict(extra="forbid")

    start_from: datetime = Field(description="incidents that started at or after (ISO 8601, UTC if no zone)")
    start_to: datetime = Field(description="... and before (ISO 8601); at most 92 days after start_from")
    type: list[Name] = Field(default_factory=list, max_length=50, description="event types (any of)")
    severity: list[Severity] = Field(default_factory=list, max_length=4, description="severities (any of)")
    min_severity: Severity | None = Field(None, description="this severity or worse")
    source: list[Name] = Field(default_factory=list, max_length=200, description="source ids (any of)")
    drone: list[Name] = Field(default_factory=list, max_length=50,
                              description="drone ids (any of): the drone's own incidents and its cameras' events")
    zone: list[Name] = Field(default_factory=list, max_length=200, description="zone ids (any of)")
    min_lat: float | None = Field(None, ge=-90, le=90, description="bbox south edge (give all four bbox edges)")
    min_lon: float | None = Field(None, ge=-180, le=180, description="bbox west edge; west > east crosses the antimeridian")
    max_lat: float | None = Field(None, ge=-90, le=90, description="bbox north edge")
    max_lon: float | None = Field(None, ge=-180, le=180, description="bbox east edge")
    polygon: str | None = Field(None, min_length=1, max_length=20000, description="WGS84 polygon 'lon lat,lon lat,...'")
    near_lat: float | None = Field(None, ge=-90, le=90, description="radius search centre latitude")
    near_lon: float | None = Field(None, ge=-180, le=180, description="radius search centre longitude")
    radius_m: float | None = Field(None, gt=0, le=1_000_000, description="radius: geodesic metres on WGS84")
    has_geo: bool | None = Field(None, description="true: only events with a position; false: only without")
    list_limit: int = Field(200, ge=1, le=1000, description="at most this many events in each list (confirmed, "
                                                            "high / critical, held); the totals count them all")
    tz: str = Field("UTC", min_length=1, max_length=ZONE_NAME_MAX,
                    description="the IANA time zone of the hour-of-day and per-day buckets (Europe/Amsterdam; default "
                                "UTC); the period's bounds are instants whatever it is")

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        report_zone(v)
        return v

    @model_validator(mode="after")
    def _check(self) -> "ReportParams":
        a, b = to_ns(self.start_from), to_ns(self.start_to)
        if b <= a:
            raise ValueError("start_to must be after start_from")
        lo, hi = (to_ns(datetime(y, 1, 1, tzinfo=timezone.utc)) for y in PERIOD_YEARS)
        if a < lo or b > hi:
            raise ValueError(f"a report's period lies between {PERIOD_YEARS[0]} and {PERIOD_YEARS[1]}")
        if b - a > MAX_PERIOD_DAYS * DAY_NS:
            raise ValueError(f"a report covers at most {MAX_PERIOD_DAYS} days; this period is "
                             f"{(b - a) / DAY_NS:.1f} days (split it, or export the events as CSV)")
        try:
            self.search_params()  # the geo filters and the rest validated as a search validates them
        except ValidationError as exc:
            raise ValueError("; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())) from None
        return self

    def search_params(self) -> SearchParams:
        return SearchParams(**self.model_dump(exclude={"list_limit", "tz"}, exclude_none=True))

    def filters(self) -> dict[str, Any]:
        """The filters given (not the period, nor the zone: the report says that on its own), as the report states them."""
        return {k: v for k, v in self.model_dump(exclude={"start_from", "start_to", "list_limit", "tz"}).items()
                if v not in (None, [], "")}


def quantile(sorted_values: Sequence[float], p: float) -> float | None:
    """Linear interpolation between the closest ranks (PostgreSQL's percentile_cont, numpy's default); None when empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    pos = p * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _stats(deltas_ns: list[int], of: int) -> dict[str, Any]:
    values = sorted(max(0, d) / 1e9 for d in deltas_ns)  # a camera clock ahead of the server's: no negative times
    return {"n": len(values), "without": of - len(values), "median_s": quantile(values, 0.5),
            "p90_s": quantile(values, 0.9), "max_s": values[-1] if values else None}


def _zero() -> dict[str, int]:
    return {"total": 0, **{s: 0 for s in SEVERITIES}}


def _iso(ns: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)).isoformat().replace("+00:00", "Z")


def zone_offsets(zone: tzinfo, start_ns: int, end_ns: int) -> list[tuple[int, int]]:
    """The zone's offsets from UTC over ``[start_ns, end_ns)`` as segments ``[(from_ns, offset_ns), ...]``: the first
    from ``start_ns``, each in force until the next one's ``from_ns``. The offset is asked at every whole hour (a zone
    never changes twice within an hour) and each change is bisected to its second (the tz database's changes fall on
    whole seconds): about 2 300 look-ups for 92 days, a few milliseconds."""
    def off_ns(s: int) -> int:
        return round(datetime.fromtimestamp(s, zone).utcoffset().total_seconds()) * 1_000_000_000

    s0, s_end = start_ns // 1_000_000_000, -(-end_ns // 1_000_000_000)
    segments = [(start_ns, off_ns(s0))]
    lo = s0
    while lo < s_end:
        hi = min(lo + 3600, s_end)
        if off_ns(hi) != segments[-1][1]:
            a, b = lo, hi  # the offset changes in (a, b]: the first second of the new one
            while b - a > 1:
                m = (a + b) // 2
                a, b = (m, b) if off_ns(m) == segments[-1][1] else (a, m)
            if b * 1_000_000_000 < end_ns:
                segments.append((b * 1_000_000_000, off_ns(b)))
        lo = hi
    return segments


def _wall_hour(col: Any, segments: list[tuple[int, int]], base_ns: int) -> Any:
    """SQL: the local wall-clock hour of ``col`` (UTC ns) counted from the local wall time ``base_ns`` (a local
    midnight at or before every instant asked: the count is never negative, so SQL's integer division, which rounds
    toward zero, is a floor): ``(col + offset in force - base_ns) // 1 h``, the offset chosen by a CASE on ``col``."""
    if len(segments) == 1:
        return (col + (segments[0][1] - base_ns)) // HOUR_NS
    whens = [(col < nxt, sa.literal(off - base_ns, sa.BigInteger)) for (_, off), (nxt, _) in zip(segments, segments[1:])]
    return (col + sa.case(*whens, else_=sa.literal(segments[-1][1] - base_ns, sa.BigInteger))) // HOUR_NS


def _wall_days(segments: list[tuple[int, int]], start_ns: int, end_ns: int) -> tuple[int, int]:
    """The first and last local dates (days since 1970-01-01 on the local calendar) the instants of ``[start_ns,
    end_ns)`` have: the wall clock runs forward within a segment, so the least and greatest readings are at a
    segment's ends (not always the period's: an autumn change just after midnight reads the day before again)."""
    ends = [frm for frm, _ in segments[1:]] + [end_ns]
    spans = [(max(frm, start_ns) + off, min(end, end_ns) - 1 + off)
             for (frm, off), end in zip(segments, ends) if min(end, end_ns) > max(frm, start_ns)]
    return min(a for a, _ in spans) // DAY_NS, max(b for _, b in spans) // DAY_NS


def _day_hours(segments: list[tuple[int, int]], day: int) -> float:
    """How long the local day ``day`` (days since 1970-01-01 on the local calendar) is, in hours (23, 24, 25, 23.5; to
    the microhour): the UTC time over which the wall clock reads that date, from the segments (which cover it)."""
    total = 0
    ends = [frm for frm, _ in segments[1:]] + [None]
    for i, ((frm, off), end) in enumerate(zip(segments, ends)):
        a, b = day * DAY_NS - off, (day + 1) * DAY_NS - off
        if i:
            a = max(a, frm)
        if end is not None:
            b = min(b, end)
        total += max(0, b - a)
    return round(total / HOUR_NS, 6)


def source_drones(settings: Any) -> dict[str, str]:
    """Source id -> the drone it belongs to: each drone's own id (its link-lost incidents) and its cameras."""
    out: dict[str, str] = {}
    for d in getattr(settings, "drones", ()) or ():
        out[d.id] = d.id
        if getattr(d, "video_source", None):
            out[d.video_source] = d.id
    for s in getattr(settings, "sources", ()) or ():
        d = settings.drone_of(s.id)
        if d is not None:
            out[s.id] = d.id
    return out


def build_report(store: EventStore, q: EventQuery, start_ns: int, end_ns: int, *, list_limit: int = 200,
                 drones: Mapping[str, str] | None = None, tz: str = "UTC") -> dict[str, Any]:
    """The report of the incidents ``q`` finds that started in ``[start_ns, end_ns)`` (UTC ns; ``q``'s own time
    range is replaced), its hour-of-day and per-day buckets in the IANA zone ``tz`` (ValueError for an unknown one).
    ``drones`` maps a source id to its drone (``source_drones``)."""
    from dataclasses import replace

    drones = dict(drones or {})
    # the offsets from two days before the period to two after it: the whole of its first and last local days
    segments = zone_offsets(report_zone(tz), start_ns - 2 * DAY_NS, end_ns + 2 * DAY_NS)
    first_day, last_day = _wall_days(segments, start_ns, end_ns)
    q = replace(q, start_from_ns=start_ns, start_to_ns=end_ns, cursor=None, limit=50)
    t, r, h = events_table, review_table, holds_table
    where = store.where_clause(q)

    newest_reason = (sa.select(r.c.reason).where(r.c.event_id == t.c.id).order_by(r.c.id.desc()).limit(1)
                     .correlate(t).scalar_subquery())
    # the newest review's reason, asked only of dismissed rows (a CASE evaluates its branch only when it applies)
    fd = sa.case((t.c.review_status == "dismissed", sa.func.coalesce(newest_reason, "")), else_="").label("fd")
    is_open = sa.case((t.c.end_ns.is_(None), 1), else_=0).label("is_open")
    n = sa.func.count().label("n")
    groups = sa.select(t.c.type, t.c.severity, t.c.source_id, t.c.review_status, is_open, fd, n).where(where).group_by(
        t.c.type, t.c.severity, t.c.source_id, t.c.review_status, is_open, fd)
    hour = _wall_hour(t.c.start_ns, segments, first_day * DAY_NS).label("hour")  # local hours from first_day
    hours = sa.select(hour, t.c.severity, n).where(where).group_by(hour, t.c.severity)
    # per reviewed event: its start, its first review action of any kind (the operators' response), its first
    # dismissal or confirmation (the verdict)
    first_any = sa.func.min(r.c.at_ns)
    first_verdict = sa.func.min(sa.case((r.c.status.in_(VERDICTS), r.c.at_ns), else_=None))
    # an incident a person reported from a recording (POST /events) is acknowledged by its reporter as it is made,
    # hours after its start perhaps: not a response to anything the system raised, so not counted in the response
    # times (its stored document carries "reported_by"; a JSON string value cannot hold that unescaped text)
    reported = t.c.data.like('%"reported_by":%')
    responses = (sa.select(t.c.start_ns, first_any.label("first_ns"), first_verdict.label("verdict_ns"))
                 .select_from(t.join(r, r.c.event_id == t.c.id)).where(where, ~reported).group_by(t.c.id, t.c.start_ns))
    active_hold = sa.exists().where(h.c.event_id == t.c.id, h.c.released_ns.is_(None))

    with store.engine.connect() as conn:
        group_rows = conn.execute(groups).all()
        hour_rows = conn.execute(hours).all()
        resp_rows = conn.execute(responses).all()
        reports_n = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(where, reported)).scalar_one())
        confirmed = _listed(conn, where, t.c.review_status == "confirmed", list_limit)
        severe = _listed(conn, where, t.c.severity_rank >= severity_rank("high"), list_limit)
        held_total = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(where, active_hold)).scalar_one())
        held = _listed(conn, where, active_hold, list_limit)
        reviews = _newest_reviews(conn, {e["id"] for e in (*confirmed, *severe, *held)})
        hold_rows = _holds(conn, [e["id"] for e in held])

    total = 0
    open_n = 0
    by_type: dict[str, dict[str, int]] = {}
    by_severity = {s: 0 for s in SEVERITIES}
    by_status = {s: 0 for s in REVIEW_STATUSES}
    false_detections = 0
    by_source: dict[str, dict[str, Any]] = {}
    for row in group_rows:
        k = int(row.n)
        total += k
        open_n += k if int(row.is_open) else 0
        cell = by_type.setdefault(row.type, _zero())
        cell[row.severity] += k
        cell["total"] += k
        by_severity[row.severity] += k
        by_status[row.review_status] += k
        false_detections += k if row.fd == "false_detection" else 0
        src = by_source.setdefault(row.source_id, {"source_id": row.source_id, "drone_id": drones.get(row.source_id),
                                                   **_zero(), "open": 0, **{s: 0 for s in REVIEW_STATUSES}})
        src["total"] += k
        src[row.severity] += k
        src["open"] += k if int(row.is_open) else 0
        src[row.review_status] += k
    sources = sorted(by_source.values(), key=lambda s: (-s["total"], s["source_id"]))
    by_drone: dict[str, dict[str, Any]] = {}
    for s in sources:
        if s["drone_id"] is None:
            continue
        d = by_drone.setdefault(s["drone_id"], {"drone_id": s["drone_id"], "sources": [], **_zero(), "open": 0})
        d["sources"].append(s["source_id"])
        for key in ("total", "open", *SEVERITIES):
            d[key] += s[key]

    hour_of_day = [{"hour": i, **_zero()} for i in range(24)]
    days = [{"day": (date(1970, 1, 1) + timedelta(days=d)).isoformat(), "hours": _day_hours(segments, d), **_zero()}
            for d in range(first_day, last_day + 1)]
    for row in hour_rows:
        k, hr = int(row.n), int(row.hour)
        for cell in (hour_of_day[hr % 24], days[hr // 24]):
            cell[row.severity] += k
            cell["total"] += k

    return {
        "period": {"start_from": _iso(start_ns), "start_to": _iso(end_ns), "start_from_ns": start_ns,
                   "start_to_ns": end_ns, "hours": (end_ns - start_ns) / HOUR_NS},
        "tz": tz,
        "total": total,
        "open": open_n,
        "by_severity": by_severity,
        "by_type_severity": sorted(({"type": k, **v} for k, v in by_type.items()), key=lambda c: (-c["total"], c["type"])),
        "by_status": {**by_status, "false_detection": false_detections},
        "by_source": sources,
        "busiest_sources": sources[:BUSIEST],
        "by_drone": sorted(by_drone.values(), key=lambda d: (-d["total"], d["drone_id"])),
        "by_hour_of_day": hour_of_day,
        "per_day": days,
        "response": {
            "first_action": _stats([int(x.first_ns) - int(x.start_ns) for x in resp_rows], total - reports_n),
            "verdict": _stats([int(x.verdict_ns) - int(x.start_ns) for x in resp_rows if x.verdict_ns is not None],
                              total - reports_n),
            "reported_by_people": reports_n,  # left out of both
        },
        "confirmed": _list_out(confirmed, by_status["confirmed"], list_limit, reviews, drones),
        "high_severity": _list_out(severe, by_severity["high"] + by_severity["critical"], list_limit, reviews, drones),
        "held": _list_out(held, held_total, list_limit, reviews, drones, hold_rows),
    }


_LIST_COLS = (events_table.c.id, events_table.c.type, events_table.c.severity, events_table.c.start_ns,
              events_table.c.end_ns, events_table.c.source_id, events_table.c.zone_id, events_table.c.lat_deg,
              events_table.c.lon_deg, events_table.c.mmsi, events_table.c.vessel_name, events_table.c.review_status)


def _listed(conn, where: Any, cond: Any, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` + 1 events (by start, then id) matching the report's filters and ``cond``."""
    t = events_table
    rows = conn.execute(sa.select(*_LIST_COLS).where(where, cond).order_by(t.c.start_ns, t.c.id).limit(limit + 1))
    return [dict(row._mapping) for row in rows]


def _newest_reviews(conn, ids: set[str]) -> dict[str, Any]:
    """Event id -> its newest review action row (who, when, status, note, reason)."""
    r = review_table
    out: dict[str, Any] = {}
    ids_list = sorted(ids)
    for i in range(0, len(ids_list), 900):  # SQLite bounds the parameters of one statement
        newest = (sa.select(sa.func.max(r.c.id)).where(r.c.event_id.in_(ids_list[i:i + 900]))
                  .group_by(r.c.event_id).scalar_subquery())
        for row in conn.execute(sa.select(r).where(r.c.id.in_(newest))):
            out[row.event_id] = row
    return out


def _holds(conn, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    h = holds_table
    out: dict[str, list[dict[str, Any]]] = {}
    for i in range(0, len(ids), 900):
        rows = conn.execute(sa.select(h).where(h.c.event_id.in_(ids[i:i + 900]), h.c.released_ns.is_(None)).order_by(h.c.id))
        for row in rows:
            out.setdefault(row.event_id, []).append({"reason": row.reason, "by": row.by, "at_ns": int(row.at_ns),
                                                     "note": row.note})
    return out


def _list_out(rows: list[dict[str, Any]], total: int, limit: int, reviews: Mapping[str, Any], drones: Mapping[str, str],
              holds: Mapping[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    events = []
    for row in rows[:limit]:
        rv = reviews.get(row["id"])
        item = {**row, "drone_id": drones.get(row["source_id"]),
                "reviewed_by": rv.by if rv is not None else None, "reviewed_ns": int(rv.at_ns) if rv is not None else None,
                "review_note": rv.note if rv is not None else None, "review_reason": rv.reason if rv is not None else None}
        if holds is not None:
            item["holds"] = holds.get(row["id"], [])
        events.append(item)
    return {"total": total, "truncated": len(rows) > limit, "events": events}
