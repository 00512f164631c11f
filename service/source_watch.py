"""Camera-down incidents (``source_offline``): the video-loss alarm of the operators' desk.

A camera that has been down for ``source_alerts.offline_after_s`` (its reader offline and retrying, or failed for
good) becomes a ``source_offline`` incident, like any other event: stored and searchable, on the live feed and the
map (at the camera's surveyed position), on MQTT and the webhooks. Its start phase says since when the picture is
lost (``start_ns``: when the source went down, not when the alarm was raised), the reader's last error and its
attempts so far; the end phase comes when the source delivers frames again (``end_reason: back online``), or when it
stops (the service stops, a file source ends). A drop shorter than the delay (a reconnect, a camera reboot within
the minute) raises nothing: the source status and its log say it happened.

A broken camera is also what someone cutting a cable or covering a dome wants to look like: an operator sees the
alarm, not only a grey tile.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping

from seawatch.streams.source import State
from seawatch.vision.events import Event, GeoPosition

log = logging.getLogger(__name__)

SOURCE_OFFLINE = "source_offline"
_DOWN = (State.OFFLINE, State.FAILED)
_STOPPED = (State.ENDED, State.STOPPED)


def _camera_place(source) -> tuple[GeoPosition | None, str]:
    """A fixed camera's own position (its surveyed pose), or None with the reason."""
    cal = getattr(source, "calibration", None)
    surveyed = getattr(cal, "surveyed", None) if cal is not None else None
    if surveyed is None:
        return None, "the camera's position is not surveyed (calibration.surveyed)"
    sigma_m = max(float(cal.sigmas.horizontal_m), 1.0)
    return GeoPosition(float(surveyed.lat_deg), float(surveyed.lon_deg), sigma_m, sigma_m), ""


class SourceWatch:
    """Turns the readers' statuses into ``source_offline`` incidents. Call :meth:`check` now and then (the pipeline
    thread does, once a second) and :meth:`close` at shutdown; both return the event phases to emit."""

    def __init__(self, settings: Any) -> None:
        cfg = settings.source_alerts
        self.after_ns = None if cfg.offline_after_s is None else int(cfg.offline_after_s * 1e9)
        self.severity = cfg.severity
        self.places = {s.id: _camera_place(s) for s in settings.sources}
        drones = {d.video_source for d in getattr(settings, "drones", ()) if getattr(d, "video_source", None)}
        for sid in drones:
            self.places[sid] = (None, "a drone's camera: the drone's own position is on the map")
        self.open: dict[str, Event] = {}

    @property
    def enabled(self) -> bool:
        return self.after_ns is not None

    def check(self, statuses: Mapping[str, Any], now_ns: int) -> list[Event]:
        """``statuses``: source id -> its reader's status (``SourceStatus``). The phases that start or end now."""
        if self.after_ns is None:
            return []
        out: list[Event] = []
        for sid, st in statuses.items():
            ev = self.open.get(sid)
            if st.state in _DOWN:
                since = st.down_since_ns if st.down_since_ns is not None else st.since_ns
                if ev is None and now_ns - since >= self.after_ns:
                    ev = self._start(sid, st, since, now_ns)
                    self.open[sid] = ev
                    out.append(ev)
                    log.warning("source %s: down for %.0f s: source_offline incident %s (%s)", sid,
                                (now_ns - since) / 1e9, ev.id, st.last_error or st.state.value)
                elif ev is not None:  # still down: what the incident will say at its end
                    self.open[sid] = replace(ev, attributes={**ev.attributes, "attempts": int(st.attempts),
                                                             "last_error": st.last_error or ""})
            elif ev is not None and (st.state is State.ONLINE or st.state in _STOPPED):
                back = st.state is State.ONLINE
                end_ns = max(ev.start_ns, int(st.since_ns)) if back else now_ns
                out.append(self._end(sid, "back online" if back else f"source {st.state.value}", end_ns, now_ns))
        return out

    def close(self, now_ns: int, reason: str = "service stopped") -> list[Event]:
        """End every open incident (shutdown)."""
        return [self._end(sid, reason, now_ns, now_ns) for sid in list(self.open)]

    def _start(self, sid: str, st: Any, since_ns: int, now_ns: int) -> Event:
        geo, why = self.places.get(sid, (None, "not a configured camera"))
        attrs = {"state": st.state.value, "last_error": st.last_error or "", "attempts": int(st.attempts),
                 "down_for_s": round((now_ns - since_ns) / 1e9, 1)}
        return Event(id=Event.new_id(), type=SOURCE_OFFLINE, severity=self.severity, phase="start", source_id=sid,
                     start_ns=int(since_ns), at_ns=int(now_ns), attributes=attrs, geo=geo, geo_reason=why or None)

    def _end(self, sid: str, reason: str, end_ns: int, now_ns: int) -> Event:
        ev = self.open.pop(sid)
        attrs = {**ev.attributes, "end_reason": reason, "duration_s": round((end_ns - ev.start_ns) / 1e9, 1)}
        log.info("source %s: source_offline incident %s ended after %.0f s (%s)", sid, ev.id,
                 (end_ns - ev.start_ns) / 1e9, reason)
        return replace(ev, phase="end", seq=ev.seq + 1, end_ns=int(end_ns), at_ns=max(int(now_ns), ev.at_ns),
                       attributes=attrs)
