"""Alert schedules: when a rule is armed, by local time of day and weekday in an IANA time zone.

A schedule is a list of windows ``{days: [mon, ..., fri], from: "07:00", to: "19:00"}`` read on the site's wall
clock (``site.timezone``, or the schedule's own ``tz``; default UTC). A window starts on each of its ``days``
(every day when left out) at ``from`` and ends at ``to`` the same day, or the next day when ``to`` is not after
``from`` (``22:00``-``06:00`` is a night shift starting on the listed day); ``to: "24:00"`` is midnight at the end of
the day. Overlapping or touching windows are one armed span.

Daylight saving time is followed through ``zoneinfo``: 07:00 is 07:00 local on either side of a change, so a
night window is an hour shorter on the spring-forward night and an hour longer on the fall-back night. An edge is
the first instant the wall clock reads its time or later that day:

- an edge in the hour the clocks skip (02:30 on the spring-forward day in Europe/Amsterdam) falls when the clocks
  jump (03:00 CEST); a window wholly inside the skipped hour does not happen that day;
- an edge in the hour the clocks repeat (02:30 on the fall-back day) falls on its first reading (02:30 CEST, before
  the clocks go back), once.

Rules are gated by each frame's *capture time* (``RuleEngine``), never by the wall clock of the machine, so a replay
or a recorded file is judged by when it was filmed. Times are int ns UTC throughout.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Iterable

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = {"monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
              "saturday": "sat", "sunday": "sun"}
DAY_MINUTES = 24 * 60
ZONE_NAME_MAX = 64  # the longest IANA name is 32 characters
_NS = 1_000_000_000


# ------------------------------------------------------------------------------------------------ parsing


def _day(text: str) -> int:
    t = text.strip().lower()
    t = _FULL_DAYS.get(t, t)
    if t not in DAYS:
        raise ValueError(f"unknown day {text!r}: give mon, tue, wed, thu, fri, sat or sun (or a range such as mon-fri)")
    return DAYS.index(t)


def parse_days(value: Any) -> tuple[str, ...]:
    """Day names (``mon``..``sun``, full names, any case, ranges such as ``mon-fri`` or ``fri-mon``) -> the distinct
    three-letter names in week order. ValueError saying which item is wrong."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("days must be a non-empty list of day names, e.g. [mon, tue, wed, thu, fri] or [mon-fri]")
    out: set[int] = set()
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"days: {item!r} is not a day name: give mon, tue, wed, thu, fri, sat or sun")
        if "-" in item:
            a, _, b = item.partition("-")
            i, j = _day(a), _day(b)
            out.update((i + k) % 7 for k in range((j - i) % 7 + 1))
        else:
            out.add(_day(item))
    return tuple(DAYS[i] for i in sorted(out))


def parse_hhmm(value: Any, *, allow_24: bool = False) -> int:
    """``"HH:MM"`` -> minutes after midnight (0..1439; 1440 for ``"24:00"`` when ``allow_24``). ValueError saying
    what is wrong, including YAML's habit of reading an unquoted 07:00 as the number 420 (base 60)."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, int) and 0 <= value <= DAY_MINUTES:
            guess = f"{value // 60:02d}:{value % 60:02d}"
            raise ValueError(f"a time of day must be quoted text \"HH:MM\", got the number {value} (YAML reads an "
                             f"unquoted {guess} as {value}): write \"{guess}\"")
        raise ValueError(f"a time of day must be quoted text \"HH:MM\" (e.g. \"07:00\"), got {value!r}")
    text = value.strip()
    hh, sep, mm = text.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and 1 <= len(hh) <= 2 and len(mm) == 2):
        raise ValueError(f"{value!r} is not a time of day: give \"HH:MM\" on a 24-hour clock, e.g. \"07:00\"")
    h, m = int(hh), int(mm)
    if allow_24 and (h, m) == (24, 0):
        return DAY_MINUTES
    if h > 23 or m > 59:
        top = "23:59 (or \"24:00\" for the end of the day)" if allow_24 else "23:59"
        raise ValueError(f"{value!r} is not a time of day: hours 00-23, minutes 00-59 (00:00 to {top})")
    return h * 60 + m


@functools.cache
def _zone_names() -> dict[str, str]:
    """Lower-case IANA name -> the name, for the zones the tz database here holds."""
    names = {n.lower(): n for n in zoneinfo.available_timezones() if n != "localtime"}  # the machine's own: no name
    names["utc"] = "UTC"
    return names


def time_zone(name: Any) -> tzinfo:
    """The tzinfo of an IANA zone name (``Europe/Amsterdam``, ``UTC``). ValueError for any other text; only names
    the tz database lists are opened, so no text reaches the file system."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a time zone must be an IANA name such as Europe/Amsterdam or UTC, got {name!r}")
    if name == "UTC":
        return timezone.utc
    known = _zone_names()
    if len(name) > ZONE_NAME_MAX or known.get(name.lower()) != name:
        hint = known.get(name.lower()) if len(name) <= ZONE_NAME_MAX else None
        raise ValueError(f"unknown time zone {name[:ZONE_NAME_MAX]!r}: give an IANA time zone name such as "
                         "Europe/Amsterdam, Europe/London or UTC" + (f" (did you mean {hint}?)" if hint else ""))
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"time zone {name!r} could not be read from the tz database: {exc}") from None


# ------------------------------------------------------------------------------------------------ schedule


@dataclass(frozen=True, slots=True)
class Window:
    """One weekly window on the wall clock.

    Attributes:
        days: weekday numbers it starts on (0 = Monday).
        from_min: start, minutes after local midnight (0..1439).
        to_min: end, minutes after local midnight (1..1440); at or before ``from_min``: the next day.
    """

    days: frozenset[int]
    from_min: int
    to_min: int


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _days_text(days: Iterable[int]) -> str:
    d = sorted(set(days))
    if len(d) == 7:
        return "every day"
    runs: list[list[int]] = []
    for i in d:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = []
    for r in runs:
        name = [DAYS[i].capitalize() for i in r]
        parts.append(f"{name[0]}-{name[-1]}" if len(r) >= 3 else ", ".join(name))
    return ", ".join(parts)


@dataclass
class Schedule:
    """When one rule is armed: weekly windows on the wall clock of ``tz_name`` (see the module docstring).

    ``state(t_ns)`` -> ``(armed, next_change_ns)``: whether the rule is armed at ``t_ns`` and when that next changes
    (None: not within the coming week, e.g. windows covering every hour). The span around the last answer is kept,
    so a stream of frames costs one comparison each.
    """

    windows: tuple[Window, ...]
    tz_name: str = "UTC"
    tz: tzinfo = field(init=False, repr=False)
    _span: tuple[int, int, bool, int | None] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.tz = time_zone(self.tz_name)

    # ---- edges on the wall clock
    def _edge_ns(self, day: date, minutes: int) -> int:
        """The first instant the wall clock reads ``minutes`` after midnight of ``day`` or later (a time the clocks
        skip: the jump; a time they repeat: its first reading)."""
        wall = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
        first = wall.replace(tzinfo=self.tz, fold=0)
        s = int(first.timestamp())
        if datetime.fromtimestamp(s, self.tz).replace(tzinfo=None) == wall:
            return s * _NS  # exists (fold=0: the first of a repeated time)
        # skipped by the clocks: the edge is the jump, the first second whose wall time is at or after `wall`
        lo, hi = sorted((int(wall.replace(tzinfo=self.tz, fold=1).timestamp()), s))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz).replace(tzinfo=None) >= wall:
                hi = mid
            else:
                lo = mid
        return hi * _NS

    def _local_date(self, t_ns: int) -> date:
        return datetime.fromtimestamp(t_ns // _NS, self.tz).date()

    def spans(self, first: date, last: date) -> list[tuple[int, int]]:
        """Armed spans ``[start_ns, end_ns)`` of the windows starting on local dates ``first``..``last``, merged
        where they overlap or touch, in time order."""
        raw: list[tuple[int, int]] = []
        d = first
        while d <= last:
            for w in self.windows:
                if d.weekday() not in w.days:
                    continue
                start = self._edge_ns(d, w.from_min)
                end = self._edge_ns(d, w.to_min) if w.to_min > w.from_min else self._edge_ns(d + timedelta(days=1), w.to_min)
                if start < end:  # a window wholly inside a skipped hour does not happen that day
                    raw.append((start, end))
            d += timedelta(days=1)
        raw.sort()
        merged: list[list[int]] = []
        for s, e in raw:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        return [(s, e) for s, e in merged]

    def state(self, t_ns: int) -> tuple[bool, int | None]:
        """``(armed, next_change_ns)`` at capture time ``t_ns`` (int ns UTC)."""
        t_ns = int(t_ns)
        span = self._span
        if span is not None and span[0] <= t_ns < span[1]:
            return span[2], span[3]
        today = self._local_date(t_ns)
        # a window lasts at most a day (plus a DST hour), so one starting two days back cannot reach today; a week
        # ahead is enough to find the next change of any weekly schedule that has one
        horizon_ns = self._edge_ns(today + timedelta(days=8), 0)
        spans = self.spans(today - timedelta(days=2), today + timedelta(days=8))
        lo, armed, change = self._edge_ns(today - timedelta(days=1), 0), False, None
        for s, e in spans:
            if e <= t_ns:
                lo = max(lo, e)
                continue
            if s <= t_ns:
                lo, armed, change = s, True, e
            else:
                change = s
            break
        hi = horizon_ns if change is None else min(change, horizon_ns)
        if change is not None and change >= horizon_ns:
            change = None
        self._span = (min(lo, t_ns), hi, armed, change)
        return armed, change

    def armed(self, t_ns: int) -> bool:
        return self.state(t_ns)[0]

    # ---- words
    def describe(self) -> str:
        """``Mon-Fri 07:00-19:00 Europe/Amsterdam`` (windows of the same hours grouped, ``; `` between groups)."""
        groups: dict[tuple[int, int], set[int]] = {}
        for w in self.windows:
            groups.setdefault((w.from_min, w.to_min), set()).update(w.days)
        parts = [f"{_days_text(days)} {_hhmm(a)}-{_hhmm(b)}" for (a, b), days in groups.items()]
        return f"{'; '.join(parts)} {self.tz_name}"

    def local_text(self, t_ns: int, now_ns: int | None = None) -> str:
        """``t_ns`` on the schedule's wall clock: ``07:00``, or ``Mon 07:00`` when it is not within a day of
        ``now_ns``."""
        local = datetime.fromtimestamp(int(t_ns) // _NS, self.tz)
        if now_ns is not None and 0 <= int(t_ns) - int(now_ns) < 86400 * _NS:
            return local.strftime("%H:%M")
        return f"{DAYS[local.weekday()].capitalize()} {local.strftime('%H:%M')}"

    def disarm_reason(self, edge_ns: int) -> str:
        """The end reason of an incident its rule's schedule ended."""
        return f"schedule: disarmed at {self.local_text(edge_ns, edge_ns)} {self.tz_name}"

    def status(self, now_ns: int) -> dict[str, Any]:
        """What the API lists of a scheduled rule at ``now_ns``: armed, next change (ns and local text), the
        schedule in words."""
        armed, change = self.state(now_ns)
        return {"armed": armed, "next_change_ns": change,
                "next_change_text": None if change is None else self.local_text(change, now_ns),
                "schedule_text": self.describe()}


def build_schedule(windows: Iterable[Any], tz_name: str) -> Schedule:
    """A :class:`Schedule` of validated window configs (``days`` names, ``from_`` / ``to`` "HH:MM")."""
    built = []
    for w in windows:
        built.append(Window(frozenset(DAYS.index(d) for d in w.days), parse_hhmm(w.from_),
                            parse_hhmm(w.to, allow_24=True)))
    return Schedule(tuple(built), tz_name)


def rule_status(rule_cfg: Any, site_tz: str, now_ns: int) -> dict[str, Any]:
    """What the API lists of one configured rule at ``now_ns``: its type, its schedule as configured (null: always
    armed), ``schedule_text``, ``armed``, ``next_change_ns`` and ``next_change_text`` (local, the schedule's zone)."""
    out: dict[str, Any] = {"type": rule_cfg.type, "schedule": None, "schedule_text": None, "armed": True,
                           "next_change_ns": None, "next_change_text": None}
    cfg = getattr(rule_cfg, "schedule", None)
    if cfg is None:
        return out
    out.update(cfg.build(site_tz).status(now_ns))
    out["schedule"] = {"windows": [{"days": list(w.days), "from": w.from_, "to": w.to} for w in cfg.windows],
                       "tz": cfg.tz or site_tz}
    return out
