"""Identity rules: turn tracks + identities + time into decision records for the event layer.

=======================  =====================================================================================
decision type            when
=======================  =====================================================================================
``unidentified_vessel``  a track inside a watch zone has had no AIS match and no valid registry match (identity
                         ``none``, or OCR text that matches nobody) for at least ``unidentified_after_s``
``identity_mismatch``    a track's identity carries a ``mismatch`` (hull text vs AIS name/MMSI vs registry) on
                         ``mismatch_confirm`` consecutive updates
``registry_alert``       a track's registry entry is blacklisted, or its licence expired/suspended/revoked
``ais_dark``             a track inside a zone that was associated with a (registered) AIS vessel is still seen
                         by the camera, but that MMSI has not reported for ``dark_after_s``
=======================  =====================================================================================

Every condition gives a ``start`` record when it begins and an ``end`` record when it stops (the track
leaves the zone, is identified, is no longer seen for ``track_lost_s``, AIS resumes). Timers use the update
times (frame capture times, ns UTC), never counts of frames. A track whose AIS went dark gets ``ais_dark``,
not ``unidentified_vessel``: we know who it was.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from seawatch.vision.identity.fusion import GeoTrack, TrackIdentity
from seawatch.vision.identity.registry import VesselRegistry
from seawatch.vision.identity.vessels import VesselTable

log = logging.getLogger(__name__)

UNIDENTIFIED_VESSEL = "unidentified_vessel"
IDENTITY_MISMATCH = "identity_mismatch"
REGISTRY_ALERT = "registry_alert"
AIS_DARK = "ais_dark"
DECISION_TYPES = (UNIDENTIFIED_VESSEL, IDENTITY_MISMATCH, REGISTRY_ALERT, AIS_DARK)

_SEVERITY = {UNIDENTIFIED_VESSEL: "medium", IDENTITY_MISMATCH: "high", REGISTRY_ALERT: "high", AIS_DARK: "high"}


@dataclass(frozen=True, slots=True)
class IdentityDecision:
    """One start/end of one condition on one track. ``key`` tells conditions of the same type apart on a track
    (e.g. the MMSI for ``ais_dark``, the entry for ``registry_alert``); ``started_ns`` is when the condition
    began (for ``unidentified_vessel``, when the track was first unidentified, not when the timer ran out)."""

    type: str
    phase: str  # "start" | "end"
    track_id: int
    time_ns: int
    started_ns: int
    severity: str
    reason: str
    key: str = ""
    attributes: dict = field(default_factory=dict)
    ended_ns: int | None = None  # end records: when the condition stopped holding (before the clear delay)


@dataclass
class _Open:
    started_ns: int
    reason: str
    attributes: dict


class IdentityRules:
    def __init__(
        self,
        *,
        unidentified_after_s: float = 60.0,
        dark_after_s: float = 180.0,
        mismatch_confirm: int = 3,
        track_lost_s: float = 30.0,
        clear_after_s: float = 10.0,
        dark_requires_registry: bool = True,
        registry: VesselRegistry | None = None,
    ) -> None:
        self.unidentified_after_ns = int(unidentified_after_s * 1e9)
        self.dark_after_ns = int(dark_after_s * 1e9)
        self.mismatch_confirm = mismatch_confirm
        self.track_lost_ns = int(track_lost_s * 1e9)
        self.clear_after_ns = int(clear_after_s * 1e9)
        self._absent_since: dict[tuple[str, int, str], int] = {}
        self.dark_requires_registry = dark_requires_registry
        self.registry = registry
        self._unident_since: dict[int, int] = {}
        self._mismatch_run: dict[int, tuple[str, int, int]] = {}  # track -> (reason, count, first_ns)
        self._open: dict[tuple[str, int, str], _Open] = {}
        self._last_seen: dict[int, int] = {}

    @property
    def open_conditions(self) -> list[tuple[str, int, str]]:
        return sorted(self._open)

    def update(self, time_ns: int, tracks: Sequence[GeoTrack], identities: Mapping[int, TrackIdentity],
               table: VesselTable | None = None) -> list[IdentityDecision]:
        """Decisions at ``time_ns`` from the tracks seen now and their identities."""
        out: list[IdentityDecision] = []
        want: dict[tuple[str, int, str], tuple[int, str, dict]] = {}  # conditions that hold now
        day = dt.datetime.fromtimestamp(time_ns / 1e9, dt.timezone.utc).date()
        for t in tracks:
            self._last_seen[t.track_id] = time_ns
            ident = identities.get(t.track_id)
            if ident is None:
                continue
            attrs = ident.as_attributes()
            if math.isfinite(t.lat_deg) and math.isfinite(t.lon_deg):  # NaN: a track without position (OCR only)
                attrs |= {"lat_deg": t.lat_deg, "lon_deg": t.lon_deg}

            # ais_dark: the track's AIS vessel (current or last associated) is quiet, the camera still sees it
            dark_mmsi = None
            mmsi = ident.mmsi if ident.mmsi is not None else ident.last_mmsi
            if t.in_zone and mmsi is not None and table is not None:
                registered = self.registry is None or self.registry.by_mmsi(mmsi) is not None
                row = table.get(mmsi)
                quiet_ns = time_ns - row.last_seen_ns if row is not None else None
                if (registered or not self.dark_requires_registry) and (quiet_ns is None or quiet_ns >= self.dark_after_ns):
                    dark_mmsi = mmsi
                    key = (AIS_DARK, t.track_id, str(mmsi))
                    since = row.last_seen_ns if row is not None else (ident.last_mmsi_time_ns or time_ns)
                    name = row.name if row is not None and row.name else str(mmsi)
                    quiet_txt = f"{quiet_ns / 1e9:.0f} s" if quiet_ns is not None else "longer than the AIS table keeps"
                    want[key] = (since, f"MMSI {mmsi} ({name}) silent for {quiet_txt} while seen by camera",
                                 attrs | {"mmsi": mmsi, "ais_name": name})

            # unidentified_vessel
            unidentified = t.in_zone and dark_mmsi is None and ident.kind == "none"
            if unidentified:
                since = self._unident_since.setdefault(t.track_id, time_ns)
                if time_ns - since >= self.unidentified_after_ns:
                    reason = "no AIS match and no registry match"
                    if ident.hull_text:
                        reason += f" (hull reads {ident.hull_text}, not in the registry)"
                    want[(UNIDENTIFIED_VESSEL, t.track_id, "")] = (since, reason, attrs)
            else:
                self._unident_since.pop(t.track_id, None)

            # identity_mismatch, debounced over consecutive updates
            if ident.mismatch:
                reason, n, first = self._mismatch_run.get(t.track_id, (ident.mismatch, 0, time_ns))
                if reason != ident.mismatch:
                    reason, n, first = ident.mismatch, 0, time_ns
                self._mismatch_run[t.track_id] = (reason, n + 1, first)
                if n + 1 >= self.mismatch_confirm:
                    want[(IDENTITY_MISMATCH, t.track_id, "")] = (first, reason, attrs)
            else:
                self._mismatch_run.pop(t.track_id, None)

            # registry_alert: for the identity's entry and for the entry the hull text matched, each on its own
            entries = [e for e in (ident.registry, ident.hull_registry) if e is not None]
            for e in dict.fromkeys(entries):
                alerts = e.alerts(day)
                if not alerts:
                    continue
                key = (REGISTRY_ALERT, t.track_id, e.label)
                how = "hull text" if e is ident.hull_registry else "AIS"
                reason = f"{e.label}: {', '.join(alerts)} (matched by {how})"
                want[key] = (self._open[key].started_ns if key in self._open else time_ns, reason,
                             attrs | {"registry_alerts": list(alerts), "alert_hull_number": e.hull_number or e.name})

        seen_now = {t.track_id for t in tracks}
        for key, op in self._open.items():
            if key in want:
                self._absent_since.pop(key, None)
                continue
            if key[1] not in seen_now:
                # conditions of tracks not seen now persist until the track is lost
                if time_ns - self._last_seen.get(key[1], 0) < self.track_lost_ns:
                    want[key] = (op.started_ns, op.reason, op.attributes)
            elif key[0] != UNIDENTIFIED_VESSEL or not self._left_zone(key[1], tracks):
                # one frame without the condition (a missed association, one bad read) does not end it
                since = self._absent_since.setdefault(key, time_ns)
                if time_ns - since < self.clear_after_ns:
                    want[key] = (op.started_ns, op.reason, op.attributes)
        for key, (since, reason, attrs) in sorted(want.items()):
            if key not in self._open:
                self._open[key] = _Open(since, reason, attrs)
                out.append(self._decision(key, "start", time_ns, since, reason, attrs))
            else:
                self._open[key].attributes = attrs
        for key in sorted(set(self._open) - set(want)):
            op = self._open.pop(key)
            ended = self._absent_since.pop(key, None)
            if ended is None:
                ended = self._last_seen.get(key[1], time_ns) if key[1] not in seen_now else time_ns
            out.append(self._decision(key, "end", time_ns, op.started_ns, op.reason, op.attributes, ended))
        for tid in [k for k, v in self._last_seen.items() if time_ns - v >= self.track_lost_ns]:
            del self._last_seen[tid]
            self._unident_since.pop(tid, None)
            self._mismatch_run.pop(tid, None)
        return out

    @staticmethod
    def _left_zone(track_id: int, tracks: Sequence[GeoTrack]) -> bool:
        return any(t.track_id == track_id and not t.in_zone for t in tracks)

    @staticmethod
    def _decision(key, phase, time_ns, since, reason, attrs, ended_ns=None) -> IdentityDecision:
        typ, tid, k = key
        return IdentityDecision(type=typ, phase=phase, track_id=tid, time_ns=time_ns, started_ns=since,
                                severity=_SEVERITY[typ], reason=reason, key=k, attributes=dict(attrs),
                                ended_ns=ended_ns)
