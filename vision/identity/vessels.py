"""Vessel state table fed by decoded AIS messages: one row per MMSI, with ageing.

A row merges the newest position report (position, COG/SOG, heading, its time) with the newest static data
(name, callsign, IMO, type, dimensions). Rows age: :meth:`VesselTable.prune` removes vessels not heard for
``max_age_s``; :meth:`VesselTable.snapshot` lists the live ones at a given time. Times are int ns UTC from the
messages themselves (tag block, RMC or receive clock), so a replayed log ages by its own clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace

from seawatch.streams.ais import AisMessage, AisOther, AisPosition, AisStatic

log = logging.getLogger(__name__)


def utc_text(time_ns: int) -> str:
    """``2026-01-01T00:00:00Z``: a UTC time as the identity's reasons and logs show it (whole seconds)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(time_ns // 10**9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ITU-R M.1371 ship-and-cargo type, first digit (and the 30-37 specials), as short words for display
_TYPE_WORDS = {
    30: "fishing", 31: "towing", 32: "towing (large)", 33: "dredging", 34: "diving", 35: "military",
    36: "sailing", 37: "pleasure craft", 50: "pilot", 51: "search and rescue", 52: "tug", 53: "port tender",
    55: "law enforcement", 58: "medical",
}
_TYPE_TENS = {2: "wing in ground", 4: "high speed craft", 6: "passenger", 7: "cargo", 8: "tanker", 9: "other"}


def ship_type_text(code: int | None) -> str | None:
    if code is None:
        return None
    if code in _TYPE_WORDS:
        return _TYPE_WORDS[code]
    return _TYPE_TENS.get(code // 10)


# A vessel is quiet once it missed this many of its reports in a row (one lost on the air is common, two happen)
QUIET_REPORTS = 3


def report_interval_s(ais_class: str | None, sog_kn: float | None, nav_status: int | None) -> float | None:
    """Nominal time between a vessel's position reports, s (ITU-R M.1371-5 annex 1, tables 1 and 2), or None.

    Class A: 3 min at anchor or moored (nav status 1 / 5) and not faster than 3 kn, else 10 s up to 14 kn, 6 s up
    to 23 kn, 2 s above. Class B: 3 min at 2 kn or less, else 30 s (class B "CS"; "SO" reports faster, so this is
    the longer wait). Long-range (type 27): 3 min. SOTDMA puts each report within +-10 % of its nominal time.
    """
    if ais_class == "A":
        if nav_status in (1, 5) and (sog_kn is None or sog_kn <= 3.0):
            return 180.0
        if sog_kn is None or sog_kn <= 14.0:
            return 10.0
        return 6.0 if sog_kn <= 23.0 else 2.0
    if ais_class == "B":
        return 180.0 if sog_kn is None or sog_kn <= 2.0 else 30.0
    if ais_class == "LR":
        return 180.0
    return None


@dataclass(frozen=True, slots=True)
class VesselState:
    """What the AIS feed says about one vessel. Fields not yet received are ``None``."""

    mmsi: int
    last_seen_ns: int
    messages: int = 0
    name: str | None = None
    callsign: str | None = None
    imo: int | None = None
    ship_type: int | None = None
    length_m: float | None = None
    beam_m: float | None = None
    # where the GNSS antenna (the reported position) sits on the hull: metres to bow, stern, port, starboard
    to_bow_m: float | None = None
    to_stern_m: float | None = None
    to_port_m: float | None = None
    to_starboard_m: float | None = None
    destination: str | None = None
    ais_class: str | None = None
    lat_deg: float | None = None
    lon_deg: float | None = None
    sog_kn: float | None = None
    cog_deg: float | None = None
    heading_deg: float | None = None
    nav_status: int | None = None
    position_time_ns: int | None = None
    static_time_ns: int | None = None

    @property
    def ship_type_text(self) -> str | None:
        return ship_type_text(self.ship_type)

    @property
    def has_position(self) -> bool:
        return self.lat_deg is not None and self.lon_deg is not None

    @property
    def report_interval_s(self) -> float | None:
        """Nominal seconds between this vessel's position reports, from its class, speed and status (or None)."""
        return report_interval_s(self.ais_class, self.sog_kn, self.nav_status)

    def quiet_after_s(self, floor_s: float) -> float:
        """How long this vessel may go unheard before it counts as silent: ``floor_s``, or :data:`QUIET_REPORTS`
        of its reporting intervals when that is longer (a moored ship reports every 3 minutes)."""
        interval = self.report_interval_s
        return floor_s if interval is None else max(floor_s, QUIET_REPORTS * interval)

    def age_s(self, now_ns: int) -> float:
        """Seconds since anything was heard from this MMSI."""
        return (now_ns - self.last_seen_ns) / 1e9

    def position_age_s(self, now_ns: int) -> float | None:
        return None if self.position_time_ns is None else (now_ns - self.position_time_ns) / 1e9

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__} | {"ship_type_text": self.ship_type_text,
                                                                "report_interval_s": self.report_interval_s}


class VesselTable:
    """MMSI -> :class:`VesselState`, updated by :meth:`update` with decoded messages.

    ``max_age_s``: rows not heard from for longer are removed by :meth:`prune` and hidden by :meth:`snapshot`.
    Messages older than a row's newest position do not move the position back (out-of-order feeds), unless they
    are more than ``max_age_s`` older: that is a clock jump, and the newest arrival re-anchors the row.
    Invalid MMSIs (0 or more than 9 digits) are counted in ``rejected`` and ignored. Thread-safe: the AIS feed
    thread may :meth:`update` while the pipeline reads :meth:`snapshot`.
    """

    def __init__(self, *, max_age_s: float = 600.0) -> None:
        if max_age_s <= 0:
            raise ValueError("max_age_s must be > 0")
        self.max_age_ns = int(max_age_s * 1e9)
        self._rows: dict[int, VesselState] = {}
        self._lock = threading.Lock()
        self.rejected = 0
        self.latest_ns: int | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, mmsi: int) -> bool:
        return mmsi in self._rows

    def get(self, mmsi: int) -> VesselState | None:
        return self._rows.get(mmsi)

    def update_many(self, msgs: Iterable[AisMessage]) -> int:
        n = 0
        for m in msgs:
            n += self.update(m)
        return n

    def update(self, msg: AisMessage) -> bool:
        """Merge one message; returns False when it was rejected."""
        if not (0 < msg.mmsi <= 999_999_999):
            self.rejected += 1
            return False
        with self._lock:
            return self._update(msg)

    def _update(self, msg: AisMessage) -> bool:
        t = msg.time_ns
        self.latest_ns = t if self.latest_ns is None else max(self.latest_ns, t)
        row = self._rows.get(msg.mmsi) or VesselState(mmsi=msg.mmsi, last_seen_ns=t)
        # a time more than max_age before the row's is no out-of-order report but a clock jump: one of the two
        # stamps is wrong, and keeping the later one would pin the vessel to a moment that never comes (a report
        # stamped a year ahead froze its position and kept it "live" for that year); the newest arrival re-anchors
        seen = t if row.last_seen_ns - t > self.max_age_ns else max(row.last_seen_ns, t)
        row = replace(row, last_seen_ns=seen, messages=row.messages + 1)
        if isinstance(msg, AisPosition):
            newer = row.position_time_ns is None or t >= row.position_time_ns \
                or row.position_time_ns - t > self.max_age_ns
            if msg.has_position and newer:
                row = replace(
                    row,
                    lat_deg=msg.lat_deg,
                    lon_deg=msg.lon_deg,
                    sog_kn=msg.sog_kn,
                    cog_deg=msg.cog_deg,
                    heading_deg=msg.heading_deg,
                    nav_status=msg.nav_status if msg.nav_status is not None else row.nav_status,
                    position_time_ns=t,
                )
            row = replace(row, ais_class=msg.ais_class)
            if msg.static is not None:
                row = _merge_static(row, msg.static)
        elif isinstance(msg, AisStatic):
            row = _merge_static(row, msg)
        elif not isinstance(msg, AisOther):
            raise TypeError(f"not an AIS message: {type(msg).__name__}")
        self._rows[msg.mmsi] = row
        return True

    def prune(self, now_ns: int) -> list[VesselState]:
        """Remove and return the rows older than ``max_age_s`` at ``now_ns``."""
        with self._lock:
            old = [r for r in self._rows.values() if now_ns - r.last_seen_ns > self.max_age_ns]
            for r in old:
                del self._rows[r.mmsi]
        if old:
            log.debug("vessel table: %d rows aged out", len(old))
        return old

    def snapshot(self, now_ns: int | None = None, *, with_position: bool = False) -> list[VesselState]:
        """Live rows at ``now_ns`` (default: the newest message time), sorted by MMSI."""
        if now_ns is None:
            now_ns = self.latest_ns if self.latest_ns is not None else 0
        with self._lock:
            rows = [r for r in self._rows.values() if now_ns - r.last_seen_ns <= self.max_age_ns]
        if with_position:
            rows = [r for r in rows if r.has_position]
        return sorted(rows, key=lambda r: r.mmsi)


def _merge_static(row: VesselState, s: AisStatic) -> VesselState:
    upd: dict = {"static_time_ns": s.time_ns if row.static_time_ns is None else max(row.static_time_ns, s.time_ns)}
    for name in ("name", "callsign", "imo", "ship_type", "destination"):
        v = getattr(s, name)
        if v is not None:
            upd[name] = v
    if s.length_m is not None:
        upd["length_m"] = s.length_m
        upd["to_bow_m"], upd["to_stern_m"] = s.to_bow_m, s.to_stern_m
    if s.beam_m is not None:
        upd["beam_m"] = s.beam_m
        upd["to_port_m"], upd["to_starboard_m"] = s.to_port_m, s.to_starboard_m
    return replace(row, **upd)
