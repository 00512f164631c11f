"""A review desk simulated on labelled frames, in a real event store: what `seawatch reviews export` is measured on.

Every alarm of a vessel model on the chosen frames (its boxes at the operating threshold, tiled as the runtime
tiles) becomes a stored ``vessel_in_zone`` event with the frame as its snapshot, and a simulated reviewer gives it
the verdict the labels give: confirmed when it matches a labelled vessel (IoU 0.3 under 32 px, 0.5 above, as
`seawatch evaluate` matches), else dismissed as a false detection. Vessels the model never alarmed on get no event,
as at a real desk. The store and its media folder are then what `seawatch reviews export --database ...
--media-dir ...` reads.

    python scripts/review_desk_sim.py MANIFEST.json --model lo_vgiy_hn --only 2022-07-16 --source harbour-cam \\
        --out /tmp/desk
    seawatch reviews export --database sqlite:////tmp/desk/seawatch.db --media-dir /tmp/desk/media \\
        --model lo_vgiy_hn --out /tmp/desk/export

Measured with it (models/VESSEL.md, "The review desk as labeller"): one simulated day of the harbour camera `w4gnqsqx`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

_STAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})_(\d{2})-(\d{2})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", help="labelled frames (the format `seawatch evaluate` reads)")
    ap.add_argument("--model", required=True, help="the camera's running vessel model (registered name)")
    ap.add_argument("--only", default="", help="only frames whose file name contains this (a day: 2022-07-16)")
    ap.add_argument("--source", default="harbour-cam", help="the camera's id in the store (not a held-out camera's id)")
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--out", required=True, help="folder for seawatch.db and media/ (created)")
    args = ap.parse_args(argv)

    import cv2

    from seawatch.service.store import EventStore
    from seawatch.vision.detector import load_detector
    from seawatch.vision.events import ClipRef, Event, Snapshot
    from seawatch.vision.groundtruth import load_manifest
    from seawatch.vision.metrics import match
    from seawatch.vision.tiling import detect_tiled, tile_for

    out = Path(args.out)
    (out / "media" / "snapshots").mkdir(parents=True, exist_ok=True)
    det = load_detector(args.model, "fp32")  # its own operating threshold: what raises alarms
    tile = tile_for(args.tile, det)
    store = EventStore.open(f"sqlite:///{(out / 'seawatch.db').resolve()}")
    counts = {"frames": 0, "confirmed": 0, "dismissed_false_detection": 0, "labelled_vessels": 0}
    try:
        for sample in load_manifest(args.manifest, None):
            if sample.kind != "image" or args.only not in sample.path.name:
                continue
            m = _STAMP.search(sample.path.name)
            when = datetime(*map(int, m.groups()), tzinfo=timezone.utc) if m else datetime.now(timezone.utc)
            t_ns = int(when.timestamp() * 1e9)
            img = cv2.imread(str(sample.path))
            if img is None:
                raise SystemExit(f"{sample.path}: cannot read")
            found = (detect_tiled(det, [img], tile) if tile else det.detect([img]))[0].with_label("vessel")
            gt = sample.gt("vessel")
            ok = match(found.xyxy_px, found.confidence, gt)
            shutil.copy(sample.path, out / "media" / "snapshots" / sample.path.name)
            counts["frames"] += 1
            counts["labelled_vessels"] += len(gt)
            for k, (box, conf, hit) in enumerate(zip(found.xyxy_px, found.confidence, ok)):
                ev = Event(id=f"{sample.path.stem}-{k}", type="vessel_in_zone", severity="medium", phase="end",
                           source_id=args.source, start_ns=t_ns, at_ns=t_ns, end_ns=t_ns + 10**9, labels=("vessel",),
                           scores=(float(conf),),
                           snapshot=Snapshot(args.source, t_ns, tuple(float(v) for v in box), float(conf),
                                             uri=f"snapshots/{sample.path.name}"),
                           clip=ClipRef(args.source, t_ns - 5 * 10**9, t_ns + 10**9, 5 * 10**9, 10**9))
                store.put(ev)
                if hit:
                    store.review(ev.id, "confirmed", "simulated-reviewer", at_ns=t_ns)
                    counts["confirmed"] += 1
                else:
                    store.review(ev.id, "dismissed", "simulated-reviewer", note="no labelled vessel there", at_ns=t_ns,
                                 reason="false_detection")
                    counts["dismissed_false_detection"] += 1
    finally:
        store.close()
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
