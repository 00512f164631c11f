"""Build ``service/static/coastline.json`` (the UI map's offline coastline) from Natural Earth land polygons.

Input: ``land-10m.json`` of the npm package ``world-atlas`` 2.0.2 (Natural Earth 4.1.0 1:10m land as TopoJSON;
Natural Earth is public domain, world-atlas is ISC): ``npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz``.
Output: ``{"source": ..., "bbox": [...], "lines": [[[lon, lat], ...], ...]}``: the land boundary arcs inside the
bounding box, rounded to 1e-4 degrees (~10 m) with points closer than ``--min-step-deg`` dropped.

Usage: python scripts/make_coastline.py package/land-10m.json [--bbox=W,S,E,N] [--out service/static/coastline.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def decode_arcs(topo: dict) -> list[list[tuple[float, float]]]:
    """TopoJSON arcs (quantized, delta-encoded) -> lists of (lon, lat)."""
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        out.append(pts)
    return out


def clip_lines(arcs, bbox, min_step_deg: float):
    w, s, e, n = bbox
    lines = []
    for arc in arcs:
        cur: list[list[float]] = []
        for lon, lat in arc:
            if w <= lon <= e and s <= lat <= n:
                p = [round(lon, 4), round(lat, 4)]
                if not cur or abs(p[0] - cur[-1][0]) + abs(p[1] - cur[-1][1]) >= min_step_deg:
                    cur.append(p)
            else:
                if len(cur) >= 2:
                    lines.append(cur)
                cur = []
        if len(cur) >= 2:
            lines.append(cur)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("land_json")
    ap.add_argument("--bbox", default="-6,48,16,62", help="W,S,E,N degrees (default: North Sea, Channel, western Baltic)")
    ap.add_argument("--min-step-deg", type=float, default=0.002)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "service" / "static" / "coastline.json"))
    a = ap.parse_args(argv)
    bbox = [float(v) for v in a.bbox.split(",")]
    topo = json.loads(Path(a.land_json).read_text())
    lines = clip_lines(decode_arcs(topo), bbox, a.min_step_deg)
    doc = {"source": "Natural Earth 4.1.0 1:10m land (public domain), via world-atlas 2.0.2 land-10m.json",
           "bbox": bbox, "lines": lines}
    Path(a.out).write_text(json.dumps(doc, separators=(",", ":")))
    print(f"{a.out}: {len(lines)} lines, {sum(len(x) for x in lines)} points, {Path(a.out).stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
