"""Search results as GeoJSON (RFC 7946) and KML 2.2, for GIS tools and Google Earth, and as CSV for spreadsheets."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from xml.sax.saxutils import escape

from seawatch.errors import SeawatchError
from seawatch.vision.events import Event

log = logging.getLogger(__name__)


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc).replace(microsecond=(ns // 1000) % 1_000_000).isoformat().replace("+00:00", "Z")


def _props(ev: Event) -> dict[str, Any]:
    p: dict[str, Any] = {
        "id": ev.id, "type": ev.type, "severity": ev.severity, "phase": ev.phase, "review_status": ev.review_status,
        "source_id": ev.source_id, "zone_id": ev.zone_id, "start": iso(ev.start_ns), "end": iso(ev.end_ns),
        "labels": list(ev.labels), "attributes": dict(ev.attributes),
    }
    if ev.geo is not None:
        p.update(semi_major_m=ev.geo.semi_major_m, semi_minor_m=ev.geo.semi_minor_m, orientation_deg=ev.geo.orientation_deg)
    else:
        p["geo_reason"] = ev.geo_reason
    return p


def to_geojson(events: Iterable[Event], truncated: bool = False) -> dict[str, Any]:
    """A FeatureCollection; events without a position have ``geometry: null`` (allowed by RFC 7946 §3.2)."""
    feats = []
    for ev in events:
        geom = None if ev.geo is None else {"type": "Point", "coordinates": [round(ev.geo.lon_deg, 7), round(ev.geo.lat_deg, 7)]}
        feats.append({"type": "Feature", "id": ev.id, "geometry": geom, "properties": _props(ev)})
    return {"type": "FeatureCollection", "features": feats, "truncated": truncated}


def to_kml(events: Iterable[Event]) -> str:
    """KML Placemarks of the events that have a position (KML cannot place the others)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<kml xmlns="http://www.opengis.net/kml/2.2"><Document>',
           "<name>Seawatch events</name>"]
    for ev in events:
        if ev.geo is None:
            continue
        desc = f"{ev.severity} {ev.type} on {ev.source_id} ({ev.review_status}); uncertainty {ev.geo.semi_major_m:.0f} m"
        out.append(
            f'<Placemark id="{escape(ev.id)}"><name>{escape(ev.type)}</name><description>{escape(desc)}</description>'
            f"<TimeSpan><begin>{iso(ev.start_ns)}</begin>" + (f"<end>{iso(ev.end_ns)}</end>" if ev.end_ns is not None else "")
            + f"</TimeSpan><Point><coordinates>{ev.geo.lon_deg:.7f},{ev.geo.lat_deg:.7f},0</coordinates></Point></Placemark>"
        )
    out.append("</Document></kml>")
    return "\n".join(out)


CSV_COLUMNS = ("id", "type", "severity", "state", "start_utc", "end_utc", "duration_s", "source_id", "zone_id", "labels",
               "best_score", "lat_deg", "lon_deg", "uncertainty_m", "geo_reason", "mmsi", "vessel_name", "hull_text",
               "review_status", "reviewed_by", "reviewed_utc", "review_note", "review_reason", "held")
# A cell a spreadsheet would run as a formula (=, +, -, @; a tab or CR before one): AIS names, hull text read by OCR,
# notes and registry rows come from outside, and "=HYPERLINK(...)" in a vessel's name must stay text (OWASP)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).replace("\x00", "")
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text  # shown as typed, never evaluated
    return text


def csv_rows(events: Iterable[Event], held: set[str] = frozenset()) -> Iterable[list[str]]:
    """The header, then one row per event (``CSV_COLUMNS``): times in UTC (ISO 8601), the newest review, whether it
    is held. Text from outside is neutralised against spreadsheet formulas (``_cell``)."""
    from seawatch.service.store import identity_columns

    yield list(CSV_COLUMNS)
    for ev in events:
        last = ev.review_history[-1] if ev.review_history else None
        end = ev.end_ns
        row = {
            "id": ev.id, "type": ev.type, "severity": ev.severity, "state": "ended" if ev.phase == "end" else "open",
            "start_utc": iso(ev.start_ns), "end_utc": iso(end),
            "duration_s": f"{(end - ev.start_ns) / 1e9:.1f}" if end is not None else "",
            "source_id": ev.source_id, "zone_id": ev.zone_id, "labels": ";".join(ev.labels),
            "best_score": f"{max(ev.scores):.3f}" if ev.scores else "",
            "lat_deg": f"{ev.geo.lat_deg:.7f}" if ev.geo else "", "lon_deg": f"{ev.geo.lon_deg:.7f}" if ev.geo else "",
            "uncertainty_m": f"{ev.geo.semi_major_m:.1f}" if ev.geo else "", "geo_reason": "" if ev.geo else ev.geo_reason,
            **identity_columns(ev), "review_status": ev.review_status,  # as the search's identity columns hold them
            "reviewed_by": last.by if last else "", "reviewed_utc": iso(last.at_ns) if last else "",
            "review_note": last.note if last else "", "review_reason": last.reason if last else "",
            "held": "yes" if ev.id in held else "no",
        }
        yield [_cell(row[c]) for c in CSV_COLUMNS]


def to_csv(events: Iterable[Event], held: set[str] = frozenset()) -> str:
    """RFC 4180 CSV (CRLF line ends, quoted where needed) with a UTF-8 byte order mark, so that a spreadsheet opens
    vessel names in any script correctly."""
    import csv
    import io

    buf = io.StringIO()
    buf.write("\ufeff")
    csv.writer(buf, lineterminator="\r\n").writerows(csv_rows(events, held))
    return buf.getvalue()


TELEMETRY_PAD_NS = 5_000_000_000  # telemetry before / after the incident when it has no clip window


def drone_timeline(fleet, settings, source_id: str):
    """The live ``PoseTimeline`` of the drone carrying ``source_id`` (from the service's fleet), or None."""
    if fleet is None:
        return None
    try:
        return fleet.pose_timelines(settings).get(source_id)
    except Exception:  # noqa: BLE001 - the package then says the samples are missing, it is still produced
        log.exception("evidence: cannot get the pose timeline of %s", source_id)
        return None


_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def recorded_telemetry_path(media_dir: Path, ev: Event) -> Path:
    """Where :class:`TelemetryRecorder` keeps the telemetry of an event (inside the media folder)."""
    return Path(media_dir) / "telemetry" / (_SAFE.sub("_", ev.source_id) or "source") / f"{_SAFE.sub('_', ev.id)}.json"


class TelemetryRecorder:
    """A ``StoreSink`` publisher: when a drone event ends, its ``telemetry.json`` (geotag pose and the samples of the
    clip window) is written to ``media_dir/telemetry/<source>/<event>.json``, so that the evidence package has the
    samples after the drone's live buffer has moved on or the service restarted.

    ``timelines``: source id -> the live ``PoseTimeline`` of the drone carrying it (``Fleet.pose_timelines``).
    Events of other sources, and drone events whose window the buffer does not hold, write nothing.
    """

    def __init__(self, media_dir: str | Path, timelines: dict[str, Any]) -> None:
        self.media_dir = Path(media_dir)
        self.timelines = timelines
        self.written = 0

    def __call__(self, ev: Event) -> None:
        timeline = self.timelines.get(ev.source_id)
        if ev.phase != "end" or timeline is None:
            return
        doc, _ = telemetry_json(ev, timeline, flight_log=self.media_dir / "flightlog")
        if doc is None or doc["samples"] is None:
            return
        import json

        path = recorded_telemetry_path(self.media_dir, ev)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True))
        tmp.replace(path)  # a reader never sees half a file
        self.written += 1


def evidence_telemetry(ev: Event, media_dir: Path, timeline=None) -> tuple[dict[str, Any] | None, str | None]:
    """``telemetry.json`` for the evidence package: what :class:`TelemetryRecorder` wrote when the event ended,
    else :func:`telemetry_json` from the live buffer."""
    import json

    path = recorded_telemetry_path(media_dir, ev)
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
            if isinstance(doc, dict) and doc.get("event_id") == ev.id:
                return doc, None
        except (OSError, ValueError):
            log.warning("evidence: recorded telemetry %s is unreadable; using the live buffer", path)
    return telemetry_json(ev, timeline, flight_log=Path(media_dir) / "flightlog")


def telemetry_json(ev: Event, timeline=None, flight_log: Path | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """``telemetry.json`` of a drone event, or ``(None, why not)``.

    It holds the pose the position was geotagged with (``geotag_pose``: the event's ``geo_pose`` attribute, or null
    with the reason when the pose was stale), and the drone telemetry samples (position, attitude, gimbal) of the
    event's clip window (else its span +- 5 s) on the telemetry clock (capture time minus the video latency), when
    ``timeline`` (the drone's ``PoseTimeline``) still buffers them, else from the drone's log under ``flight_log``
    (``samples_from: "flight_log"``); else ``samples`` is null with the reason.
    """
    pose = ev.attributes.get("geo_pose")
    from_drone = isinstance(pose, dict) or ev.attributes.get("geo_reference") == "drone_pose" or timeline is not None
    if not from_drone:
        return None, "the event is not from a drone (no pose telemetry)"
    latency_ns = int(getattr(timeline, "latency_ns", 0) or 0)
    if ev.clip is not None and ev.clip.end_ns is not None:
        t0, t1 = ev.clip.start_ns, ev.clip.end_ns
    else:
        t0, t1 = ev.start_ns - TELEMETRY_PAD_NS, (ev.end_ns if ev.end_ns is not None else ev.at_ns) + TELEMETRY_PAD_NS
    doc: dict[str, Any] = {
        "event_id": ev.id,
        "source_id": ev.source_id,
        "vehicle_id": (pose or {}).get("vehicle_id") if isinstance(pose, dict) else getattr(timeline, "vehicle_id", None),
        "geotag_pose": pose if isinstance(pose, dict) else None,
        "geotag_pose_missing": None if isinstance(pose, dict) else (ev.geo_reason or "no pose was recorded with the event"),
        "window": {"from_ns": t0 - latency_ns, "to_ns": t1 - latency_ns, "from": iso(t0 - latency_ns), "to": iso(t1 - latency_ns),
                   "clock": "telemetry (frame capture time minus the video latency)"},
        "samples": None,
        "samples_from": None,  # live_buffer / flight_log
        "samples_missing": None,
    }
    if timeline is None:
        doc["samples_missing"] = "no live link to this drone in this service and none recorded when the event ended"
    else:
        samples = timeline.samples_between(t0 - latency_ns, t1 - latency_ns)
        doc["samples_from"] = "live_buffer"
        if not any(samples.values()) and flight_log is not None and getattr(timeline, "vehicle_id", None):
            from seawatch.drone.flight_log import read_flight_log

            try:
                samples = read_flight_log(flight_log, timeline.vehicle_id, t0 - latency_ns, t1 - latency_ns)
                doc["samples_from"] = "flight_log"
            except SeawatchError as exc:
                log.warning("telemetry of event %s: flight log not read: %s", ev.id, exc)
        if any(samples.values()):
            doc["samples"] = samples
        else:
            doc["samples_from"] = None
            doc["samples_missing"] = "neither the drone's telemetry buffer nor its flight log holds this window"
    return doc, None


def _clip_coverage(clip: Path) -> dict[str, Any]:
    """What of its window a clip shows, from the coverage its cutter recorded (a reviewer must not take a clip with
    an outage in it for the whole incident); ``known`` false for a clip without that record (cut by an older
    version, or a file put there by hand)."""
    from seawatch.streams.recording import read_clip_coverage

    cov = read_clip_coverage(clip)
    if cov is None:
        return {"known": False}
    doc = {"known": True, "complete": not cov.partial, "window_start": iso(cov.start_ns), "window_end": iso(cov.end_ns),
           "covered": [[iso(a), iso(b)] for a, b in cov.spans],
           "covered_s": round(sum(b - a for a, b in cov.spans) / 1e9, 3),
           "window_s": round((cov.end_ns - cov.start_ns) / 1e9, 3),
           "reencoded": cov.reencoded}
    if cov.reencoded:
        # the camera's format (codec / size) changed inside the window: the clip's pictures were decoded and
        # re-encoded at one size, not copied as recorded; say from when each format is shown
        doc["reencoded_size_px"] = list(cov.reencoded_px)
        doc["formats"] = [{"from": iso(t), "codec": c, "width_px": w, "height_px": h} for t, c, w, h in cov.formats]
    return doc


def evidence_zip(path, event_json: dict[str, Any], audit: list[dict[str, Any]], *, snapshot: Path | None,
                 clip: Path | None, missing: dict[str, str], exported_by: str, version: str,
                 telemetry: dict[str, Any] | None = None, notes: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the evidence package of one event to ``path`` (a zip); returns its manifest.

    Members: ``event.json``, ``audit.json``, ``telemetry.json`` (drone events: see :func:`telemetry_json`),
    ``snapshot.jpg`` and ``clip.mp4`` when available, ``manifest.json``
    (what is in it, who exported it when, what is missing and why, ``notes`` on members that hold part of what they
    name, the SHA-256 of every other member, and for the
    clip what of its window it shows: ``clip_coverage`` with ``complete`` false when the camera was out for part of
    it, and ``reencoded`` true, with the ``formats`` shown, when its recordings changed size or codec inside the
    window and the clip was re-encoded at one size instead of copied) and ``SHA256SUMS`` (``sha256sum -c`` format,
    covering every member including the manifest).
    """
    import hashlib
    import json
    import time
    import zipfile

    files: list[tuple[str, bytes | Path]] = [
        ("event.json", json.dumps(event_json, indent=2, sort_keys=True).encode()),
        ("audit.json", json.dumps(audit, indent=2, sort_keys=True).encode()),
    ]
    if telemetry is not None:
        files.append(("telemetry.json", json.dumps(telemetry, indent=2, sort_keys=True).encode()))
    if snapshot is not None:
        files.append(("snapshot.jpg", snapshot))
    if clip is not None:
        files.append(("clip.mp4", clip))

    def digest(item: bytes | Path) -> tuple[str, int]:
        if isinstance(item, bytes):
            return hashlib.sha256(item).hexdigest(), len(item)
        h = hashlib.sha256()
        n = 0
        with open(item, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
                n += len(block)
        return h.hexdigest(), n

    entries = []
    for name, item in files:
        sha, size = digest(item)
        entries.append({"name": name, "sha256": sha, "bytes": size})
    manifest = {
        "event_id": event_json["id"],
        "exported_at": iso(time.time_ns()),
        "exported_by": exported_by,
        "seawatch_version": version,
        "files": entries,
        "missing": missing,
    }
    if notes:  # what a member holds when it is not the whole of what it names (an open incident's clip so far)
        manifest["notes"] = notes
    if clip is not None:
        manifest["clip_coverage"] = _clip_coverage(clip)
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    sums = [f"{e['sha256']}  {e['name']}" for e in entries] + [f"{hashlib.sha256(manifest_bytes).hexdigest()}  manifest.json"]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, item in files:
            if isinstance(item, bytes):
                z.writestr(name, item)
            else:
                z.write(item, name, compress_type=zipfile.ZIP_STORED)  # JPEG / MP4 are compressed already
        z.writestr("manifest.json", manifest_bytes)
        z.writestr("SHA256SUMS", "\n".join(sums) + "\n")
    return manifest
