"""Search results as GeoJSON (RFC 7946) and KML 2.2, for GIS tools and Google Earth."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from xml.sax.saxutils import escape

from seawatch.vision.events import Event


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


def evidence_zip(path, event_json: dict[str, Any], audit: list[dict[str, Any]], *, snapshot: Path | None,
                 clip: Path | None, missing: dict[str, str], exported_by: str, version: str) -> dict[str, Any]:
    """Write the evidence package of one event to ``path`` (a zip); returns its manifest.

    Members: ``event.json``, ``audit.json``, ``snapshot.jpg`` and ``clip.mp4`` when available, ``manifest.json``
    (what is in it, who exported it when, what is missing and why, the SHA-256 of every other member) and
    ``SHA256SUMS`` (``sha256sum -c`` format, covering every member including the manifest).
    """
    import hashlib
    import json
    import time
    import zipfile

    files: list[tuple[str, bytes | Path]] = [
        ("event.json", json.dumps(event_json, indent=2, sort_keys=True).encode()),
        ("audit.json", json.dumps(audit, indent=2, sort_keys=True).encode()),
    ]
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
