"""Identity rules: turn tracks + identities + time into decision records for the event layer.

=======================  =====================================================================================
decision type            when
=======================  =====================================================================================
``unidentified_vessel``  a track inside a watch zone has had no AIS match and no valid registry match (identity
                         ``none``, or OCR text that matches nobody) for at least ``unidentified_after_s``; not
                         while it is too far to judge (``too_far_to_judge``: its position uncertainty along the
                         line of sight is longer than any gate), its timer starts once it is close enough
``identity_mismatch``    a track's identity carries a ``mismatch`` (hull text vs AIS name/MMSI vs registry) on
                         ``mismatch_confirm`` consecutive updates
``registry_alert``       a track's registry entry is blacklisted, or its licence expired/suspended/revoked
``ais_dark``             a track inside a zone that was associated with a (registered) AIS vessel is still seen
                         by the camera, but that MMSI has not reported for ``dark_after_s`` (or for three of its
                         nominal reporting intervals when longer: 540 s for a moored ship or slow class B)
=======================  =====================================================================================

Every condition gives a ``start`` record when it begins and an ``end`` record when it stops (the track
leaves the zone, is identified, is no longer seen for ``track_lost_s``, AIS resumes). Timers use the update
times (frame capture times, ns UTC), never counts of frames. A track whose AIS went dark gets ``ais_dark``,
not ``unidentified_vessel``: we know who it was.

While AIS cannot identify anyone (``update(..., ais_unavailable=why)``: every AIS feed down, or no fresh AIS
position at all), a track with no identity is **held**: its ``unidentified_vessel`` timer does not run (nor does a
new ``ais_dark`` start: the feed's silence is not the vessel's), and conditions raised before stay open. From the
first update with AIS back, the timer runs again from zero, so a vessel still unmatched against the fresh table
raises ``unidentified_vessel`` ``unidentified_after_s`` later, its reason saying since when it was held
(attributes ``held_since_ns``, ``ais_back_ns``); an MMSI's ``ais_dark`` silence counts from AIS's return.

One spurious association does not identify a vessel: the ``unidentified_vessel`` timer restarts only after
``clear_after_s`` of continuous identification, the same delay that ends an open condition. Conditions belong
to a vessel, not to a tracker id: a new track that appears, while no other track claims it, where a vessel with
a running timer or an open condition was last seen within ``track_lost_s`` (within its position uncertainty plus
``REACQUIRE_SPEED_MPS`` x the time since) continues that vessel — its timers and open conditions. Decisions carry
the vessel's first track id as ``track_id`` (a stable key) and every track id it was seen under, the current one
last, as ``track_ids``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from seawatch.drone.geometry import geod  # one shared WGS84 Geod (vision may use drone)
from seawatch.vision.identity.fusion import GeoTrack, TrackIdentity
from seawatch.vision.identity.registry import VesselRegistry
from seawatch.vision.identity.vessels import VesselTable, utc_text

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
    track_ids: tuple[int, ...] = ()  # every track id the vessel was seen under, the current one last


@dataclass
class _Open:
    started_ns: int
    reason: str
    attributes: dict


class IdentityRules:
    # a new track continues a lost vessel within its position uncertainty plus this speed x the time since (~20 kn)
    REACQUIRE_SPEED_MPS = 10.0
    REACQUIRE_SIGMAS = 3.0

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
        # every per-vessel memory below is keyed by the vessel's subject id: its first track id
        self._unident_since: dict[int, int] = {}
        self._ident_since: dict[int, int] = {}  # first update of the current run of not-unidentified updates
        self._mismatch_run: dict[int, tuple[str, int, int]] = {}  # subject -> (reason, count, first_ns)
        self._open: dict[tuple[str, int, str], _Open] = {}
        self._last_seen: dict[int, int] = {}
        self._alias: dict[int, int] = {}  # a later track id -> the subject id it continues
        self._tracks_of: dict[int, list[int]] = {}  # subject -> its track ids, the current one last
        self._last_pos: dict[int, tuple[float, float, float]] = {}  # subject -> lat_deg, lon_deg, sigma_m
        self._held_since: dict[int, int] = {}  # subject -> first update it was held (no identity, AIS unavailable)
        self._ais_back_ns: int | None = None  # the first update with AIS available after an outage
        self._ais_down = False

    @property
    def open_conditions(self) -> list[tuple[str, int, str]]:
        return sorted(self._open)

    def update(self, time_ns: int, tracks: Sequence[GeoTrack], identities: Mapping[int, TrackIdentity],
               table: VesselTable | None = None, ais_unavailable: str | None = None) -> list[IdentityDecision]:
        """Decisions at ``time_ns`` from the tracks seen now and their identities. ``ais_unavailable``: why AIS
        cannot identify anyone now (every feed down, no fresh position), or None: unidentified vessels are held
        meanwhile (module docstring)."""
        blind = ais_unavailable is not None
        if self._ais_down and not blind:
            self._ais_back_ns = time_ns
        self._ais_down = blind
        out: list[IdentityDecision] = []
        want: dict[tuple[str, int, str], tuple[int, str, dict]] = {}  # conditions that hold now
        day = dt.datetime.fromtimestamp(time_ns / 1e9, dt.timezone.utc).date()
        subject = self._subjects(time_ns, tracks)
        for t in tracks:
            sid = subject[t.track_id]
            self._last_seen[sid] = time_ns
            if math.isfinite(t.lat_deg) and math.isfinite(t.lon_deg):
                self._last_pos[sid] = (t.lat_deg, t.lon_deg, max(1.0, t.pos_sigma_m))
            ident = identities.get(t.track_id)
            if ident is None:
                continue
            attrs = ident.as_attributes()
            if math.isfinite(t.lat_deg) and math.isfinite(t.lon_deg):  # NaN: a track without position (OCR only)
                attrs |= {"lat_deg": t.lat_deg, "lon_deg": t.lon_deg}

            # ais_dark: the track's AIS vessel (current or last associated) is quiet, the camera still sees it
            dark_mmsi = None
            mmsi = ident.mmsi if ident.mmsi is not None else ident.last_mmsi
            if blind and mmsi is not None and (AIS_DARK, sid, str(mmsi)) in self._open:
                dark_mmsi = mmsi  # raised while AIS was heard: it stays, neither ended nor judged again
                op = self._open[(AIS_DARK, sid, str(mmsi))]
                want[(AIS_DARK, sid, str(mmsi))] = (op.started_ns, op.reason, op.attributes)
            elif t.in_zone and mmsi is not None and table is not None and not blind:
                registered = self.registry is None or self.registry.by_mmsi(mmsi) is not None
                row = table.get(mmsi)
                heard_ns = row.last_seen_ns if row is not None else None
                if self._ais_back_ns is not None:  # an AIS outage is not the vessel's silence
                    heard_ns = self._ais_back_ns if heard_ns is None else max(heard_ns, self._ais_back_ns)
                quiet_ns = time_ns - heard_ns if heard_ns is not None else None
                # a moored ship reports every 3 minutes: silent means missing several of its own reports
                dark_ns = self.dark_after_ns if row is None else int(row.quiet_after_s(self.dark_after_ns / 1e9) * 1e9)
                if (registered or not self.dark_requires_registry) and (quiet_ns is None or quiet_ns >= dark_ns):
                    dark_mmsi = mmsi
                    key = (AIS_DARK, sid, str(mmsi))
                    since = row.last_seen_ns if row is not None else (ident.last_mmsi_time_ns or time_ns)
                    name = row.name if row is not None and row.name else str(mmsi)
                    quiet_txt = f"{quiet_ns / 1e9:.0f} s" if quiet_ns is not None else "longer than the AIS table keeps"
                    want[key] = (since, f"MMSI {mmsi} ({name}) silent for {quiet_txt} while seen by camera",
                                 attrs | {"mmsi": mmsi, "ais_name": name})

            # unidentified_vessel
            unidentified = t.in_zone and dark_mmsi is None and ident.kind == "none"
            ukey = (UNIDENTIFIED_VESSEL, sid, "")
            if unidentified and ident.too_far_to_judge:
                # too far to judge (its position uncertainty along the line of sight is longer than any gate): not
                # evidence of an unregistered vessel; an open condition stays, a timer starts when it comes close
                if ukey in self._open:
                    op = self._open[ukey]
                    want[ukey] = (op.started_ns, op.reason, op.attributes)
                else:
                    self._unident_since.pop(sid, None)
                    self._ident_since.pop(sid, None)
            elif unidentified and blind:
                if ukey in self._open:  # judged while AIS was heard: it stays open through the outage
                    op = self._open[ukey]
                    want[ukey] = (op.started_ns, op.reason, op.attributes)
                else:  # held: no timer runs while AIS cannot tell; it starts again from zero once AIS is back
                    self._unident_since.pop(sid, None)
                    self._ident_since.pop(sid, None)
                    self._held_since.setdefault(sid, time_ns)
            elif unidentified:
                self._ident_since.pop(sid, None)
                since = self._unident_since.setdefault(sid, time_ns)
                if time_ns - since >= self.unidentified_after_ns:
                    reason = "no AIS match and no registry match"
                    if ident.hull_text:
                        reason += f" (hull reads {ident.hull_text}, not in the registry)"
                    if ident.unmatched_reason:
                        reason += f"; {ident.unmatched_reason}"
                    held = self._held_since.get(sid)
                    if held is not None:
                        back = self._ais_back_ns if self._ais_back_ns is not None else since
                        reason += (f"; seen since {utc_text(held)} while AIS was unavailable, held until AIS was back at "
                                   f"{utc_text(back)} and checked against it since")
                        attrs = attrs | {"held_since_ns": held, "ais_back_ns": back}
                    want[ukey] = (since, reason, attrs)
            elif time_ns - self._ident_since.setdefault(sid, time_ns) >= self.clear_after_ns:
                self._unident_since.pop(sid, None)  # identified for long enough: not a spurious association
                self._held_since.pop(sid, None)

            # identity_mismatch, debounced over consecutive updates
            if ident.mismatch:
                reason, n, first = self._mismatch_run.get(sid, (ident.mismatch, 0, time_ns))
                if reason != ident.mismatch:
                    reason, n, first = ident.mismatch, 0, time_ns
                self._mismatch_run[sid] = (reason, n + 1, first)
                if n + 1 >= self.mismatch_confirm:
                    want[(IDENTITY_MISMATCH, sid, "")] = (first, reason, attrs)
            else:
                self._mismatch_run.pop(sid, None)

            # registry_alert: for the identity's entry and for the entry the hull text matched, each on its own
            entries = [e for e in (ident.registry, ident.hull_registry) if e is not None]
            for e in dict.fromkeys(entries):
                alerts = e.alerts(day)
                if not alerts:
                    continue
                key = (REGISTRY_ALERT, sid, e.label)
                how = "hull text" if e is ident.hull_registry else "AIS"
                reason = f"{e.label}: {', '.join(alerts)} (matched by {how})"
                want[key] = (self._open[key].started_ns if key in self._open else time_ns, reason,
                             attrs | {"registry_alerts": list(alerts), "alert_hull_number": e.hull_number or e.name})

        seen_now = set(subject.values())
        for key, op in self._open.items():
            if key in want:
                self._absent_since.pop(key, None)
                continue
            if key[1] not in seen_now:
                # conditions of tracks not seen now persist until the track is lost
                if time_ns - self._last_seen.get(key[1], 0) < self.track_lost_ns:
                    want[key] = (op.started_ns, op.reason, op.attributes)
            elif key[0] != UNIDENTIFIED_VESSEL or not self._left_zone(key[1], tracks, subject):
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
        for sid in [k for k, v in self._last_seen.items() if time_ns - v >= self.track_lost_ns]:
            del self._last_seen[sid]
            for memo in (self._unident_since, self._ident_since, self._mismatch_run, self._tracks_of, self._last_pos,
                         self._held_since):
                memo.pop(sid, None)
            for tid in [k for k, v in self._alias.items() if v == sid]:
                del self._alias[tid]
        return out

    def _subjects(self, time_ns: int, tracks: Sequence[GeoTrack]) -> dict[int, int]:
        """Subject id of every track of this update: its own, the one it continues (``_alias``), or, for a new
        track, the lost vessel it takes the place of (``_heir``)."""
        out: dict[int, int] = {}
        claimed: set[int] = set()
        new: list[GeoTrack] = []
        # tracks that are their own subject first: a vessel's original track that reappears keeps its subject
        for t in sorted(tracks, key=lambda t: t.track_id in self._alias):
            tid = t.track_id
            if tid not in self._alias and tid not in self._last_seen:
                new.append(t)
                continue
            sid = self._alias.get(tid, tid)
            if sid in claimed:  # the vessel is seen twice at once: this track was another vessel all along
                self._alias.pop(tid, None)
                sid = tid
            out[tid] = sid
            claimed.add(sid)
        for t in new:
            sid = self._heir(t, claimed, time_ns)
            if sid is None:
                sid = t.track_id
            else:
                self._alias[t.track_id] = sid
                log.info("track %d continues vessel %d (its timers and open conditions)", t.track_id, sid)
            out[t.track_id] = sid
            claimed.add(sid)
        for tid, sid in out.items():
            seq = self._tracks_of.setdefault(sid, [sid])
            if seq[-1] != tid:
                if tid in seq:
                    seq.remove(tid)
                seq.append(tid)
        return out

    def _heir(self, t: GeoTrack, claimed: set[int], time_ns: int) -> int | None:
        """The lost vessel a new track continues: not seen in this update, seen within ``track_lost_s``, with a
        timer or a condition to carry on, its last position nearest the new track's within the gate."""
        if not (math.isfinite(t.lat_deg) and math.isfinite(t.lon_deg)):
            return None
        keep = set(self._unident_since) | set(self._mismatch_run) | set(self._held_since) | {k[1] for k in self._open}
        best, best_d = None, math.inf
        for sid in keep - claimed:
            seen, pos = self._last_seen.get(sid), self._last_pos.get(sid)
            if seen is None or pos is None or time_ns - seen >= self.track_lost_ns:
                continue
            _, _, dist = geod().inv(pos[1], pos[0], t.lon_deg, t.lat_deg)
            gate = self.REACQUIRE_SIGMAS * math.hypot(pos[2], max(1.0, t.pos_sigma_m)) \
                + self.REACQUIRE_SPEED_MPS * (time_ns - seen) / 1e9
            if dist <= gate and dist < best_d:
                best, best_d = sid, dist
        return best

    @staticmethod
    def _left_zone(sid: int, tracks: Sequence[GeoTrack], subject: Mapping[int, int]) -> bool:
        return any(subject[t.track_id] == sid and not t.in_zone for t in tracks)

    def _decision(self, key, phase, time_ns, since, reason, attrs, ended_ns=None) -> IdentityDecision:
        typ, sid, k = key
        return IdentityDecision(type=typ, phase=phase, track_id=sid, time_ns=time_ns, started_ns=since,
                                severity=_SEVERITY[typ], reason=reason, key=k, attributes=dict(attrs),
                                ended_ns=ended_ns, track_ids=tuple(self._tracks_of.get(sid, [sid])))
