"""``seawatch reviews export``: the review desk's verdicts as a training set of the site's own frames.

Every vessel event a reviewer confirmed, or dismissed as a false detection, has a snapshot: the full frame of its
camera with the event's subject box. This command writes those frames as a YOLO dataset (``images/``,
``labels/``, ``classes.txt``) with labels made by :func:`seawatch.vision.review_labels.site_labels`: confirmed
boxes are vessels, boxes dismissed as false detections stay unlabelled (background: the camera's own buoys and
piles), and whatever else the vessel model finds in the frame, undecided, is blurred away. It also writes
``dataset.yaml`` — the shipped training frames plus these, every tile of these kept — for
``seawatch models train OUT/dataset.yaml``, and ``export.json``, which says where each label came from.

Plain dismissals (a real vessel that needed nothing) and acknowledgements are not verdicts on the detector and are
not exported. A vessel the model missed is labelled when someone reported it from the camera's recording with its
box drawn (the UI's Recordings, ``POST /api/events`` with ``label: vessel`` and ``box_px``) and a reviewer confirmed
that report; other missed vessels are not labelled: check the labels before training, as with
``seawatch detect --yolo-labels``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from datetime import datetime, timezone
from pathlib import Path

HELP = "the review desk's confirmed / false-detection vessel events as a training set of your cameras"

log = logging.getLogger(__name__)

# unlike the snapshot sink's file names, underscores go too (runs collapse to one), so the "__" that ends the camera
# part of an exported frame's name cannot occur inside it
_SAFE = re.compile(r"[^A-Za-z0-9.-]+")
# the camera (source) of an exported frame is what precedes "__" in its file name
CAMERA_FROM = r"^(.+?)__\d{4}-\d{2}-\d{2}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="where the dataset goes (created; existing frames are replaced)")
    p.add_argument("--config", metavar="FILE", help="the `seawatch serve` configuration: its database and media folder")
    p.add_argument("--database", metavar="URL", help="database URL instead of --config (e.g. sqlite:////var/lib/seawatch/seawatch.db)")
    p.add_argument("--media-dir", metavar="DIR", help="media folder holding the snapshots (with --database)")
    p.add_argument("--label", default="vessel", help="the detector label the events are about (default: vessel)")
    p.add_argument("--source", action="append", default=[], metavar="ID", help="only these cameras (repeat)")
    p.add_argument("--since", metavar="TIME", help="only events started at or after this UTC time (2026-07-16 or 2026-07-16T12:00)")
    p.add_argument("--until", metavar="TIME", help="only events started before this UTC time")
    p.add_argument("--model", help="vessel model that finds the undecided boxes (default: vessel when provisioned, else coco_yolov5n)")
    p.add_argument("--tile", default="auto", help="tiled inference for that model, as in `seawatch detect` (default: auto)")
    p.add_argument("--mask-conf", type=float, default=0.1,
                   help="undecided detections from this confidence up are blurred away (default 0.1)")
    p.add_argument("--base-dataset", default="vessels",
                   help="dataset manifest whose frames dataset.yaml trains on next to these (default: vessels; 'none': only these)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")


def _utc_ns(text: str | None, what: str) -> int | None:
    from seawatch.streams.clock import parse_utc_ns

    return None if text is None else parse_utc_ns(text, f"--{what}")


def _verdict(ev) -> str | None:
    """``vessel`` (confirmed), ``background`` (dismissed as a false detection) or None (no verdict on the detector)."""
    if ev.review_status == "confirmed":
        return "vessel"
    if ev.review_status == "dismissed" and ev.review_reason == "false_detection":
        return "background"
    return None


def _store_and_media(args):
    from seawatch.errors import InputError
    from seawatch.service.store import EventStore

    if args.config:
        if args.database or args.media_dir:
            raise InputError("give --config, or --database with --media-dir, not both")
        from seawatch.service.config import load_config

        storage = load_config(args.config).storage
        url, media = storage.resolved_database_url(), storage.resolved_media_dir()
    else:
        if not (args.database and args.media_dir):
            raise InputError("give --config FILE, or --database URL and --media-dir DIR")
        url, media = args.database, Path(args.media_dir).expanduser().resolve()
    return EventStore.open(url), Path(media)


def reviewed_frames(store, label: str, source_ids=(), start_from_ns=None, start_to_ns=None):
    """``{(source_id, capture_time_ns): [(event, verdict), ...]}`` of the events about ``label`` with a verdict and a
    snapshot, and the count of those skipped (no verdict, no snapshot, a person's report without a drawn box). An
    event a person reported from a recording (``POST /api/events``) with the subject's box drawn counts like a
    detection: a boat the model missed, once a reviewer confirms it, becomes a vessel label."""
    from seawatch.service.store import EventQuery

    frames: dict[tuple[str, int], list] = {}
    skipped = {"no_verdict": 0, "no_snapshot": 0, "no_box": 0}
    cursor = None
    while True:
        page = store.search(EventQuery(statuses=("confirmed", "dismissed"), source_ids=tuple(source_ids),
                                       start_from_ns=start_from_ns, start_to_ns=start_to_ns, sort="start_ns",
                                       limit=500, cursor=cursor))
        for ev in page.events:
            if label not in ev.labels:
                continue
            verdict = _verdict(ev)
            if "reported_by" in ev.attributes and not ev.attributes.get("box_drawn"):
                skipped["no_box"] += 1  # a person's report marked with a point: its box is no outline of the subject
            elif verdict is None:
                skipped["no_verdict"] += 1
            elif ev.snapshot is None or not ev.snapshot.uri:
                skipped["no_snapshot"] += 1
            else:
                frames.setdefault((ev.source_id, int(ev.snapshot.capture_time_ns)), []).append((ev, verdict))
        cursor = page.next_cursor
        if cursor is None:
            return frames, skipped


def _frame_name(source_id: str, capture_time_ns: int) -> str:
    t = datetime.fromtimestamp(capture_time_ns / 1e9, tz=timezone.utc)
    return f"{_SAFE.sub('_', source_id) or 'source'}__{t:%Y-%m-%dT%H-%M-%S}-{capture_time_ns % 1_000_000_000 // 1_000_000:03d}Z"


def _dataset_yaml(out: Path, label: str, base: str) -> dict:
    from seawatch.vision import trainsets

    own = {"name": "review_export", "root": str(out.resolve()), "format": "yolo", "class_map": {"0": label},
           "camera_from": CAMERA_FROM, "empty_keep": 1.0}
    if base == "none":
        return {"name": "review_export", "task": "detect", "classes": [label], "sources": [own],
                "split": {"val_cameras": []}, "licence": "your cameras' frames: yours"}
    manifest = trainsets.load_dataset_manifest(base)
    if label not in manifest["classes"]:
        from seawatch.errors import InputError

        raise InputError(f"--base-dataset {base}: its classes {manifest['classes']} do not include {label!r}")
    sources = [{k: v for k, v in s.items() if not k.startswith("_")} for s in manifest["sources"]]
    return {"name": f"{manifest['name']}_plus_reviews", "task": "detect", "classes": list(manifest["classes"]),
            "sources": sources + [own], "split": manifest.get("split", {"val_cameras": []}),
            "licence": f"{manifest.get('licence', '')}; your cameras' frames: yours".strip("; ")}


def export(store, media_dir: Path, out: Path, detector, tile, label: str = "vessel", mask_conf: float = 0.1,
           source_ids=(), start_from_ns=None, start_to_ns=None) -> dict:
    """Writes the dataset (module docstring) and returns the report written to ``export.json``."""
    import cv2
    import numpy as np

    from seawatch.vision.review_labels import masked_image, site_labels
    from seawatch.vision.trainsets import yolo_lines
    from seawatch.vision.tiling import detect_tiled

    frames, skipped = reviewed_frames(store, label, source_ids, start_from_ns, start_to_ns)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text(label + "\n")
    report: dict = {"label": label, "mask_conf": mask_conf, "frames": [], "unreadable": [], "skipped_events": skipped,
                    "totals": {"frames": 0, "vessels": 0, "dismissed": 0, "masked": 0}}
    media_dir = media_dir.resolve()
    for (source_id, t_ns), evs in sorted(frames.items()):
        path = (media_dir / evs[0][0].snapshot.uri).resolve()
        inside = path.is_relative_to(media_dir)
        img = cv2.imread(str(path)) if inside and path.is_file() else None
        if img is None:
            why = "outside the media folder" if not inside else "missing" if not path.is_file() else "not a readable image"
            report["unreadable"].append({"events": [e.id for e, _ in evs], "snapshot": str(path), "why": why})
            continue
        dets = detect_tiled(detector, [img], tile)[0] if tile else detector.detect([img])[0]
        dets = dets.with_label(label)
        yes = np.array([e.snapshot.xyxy_px for e, v in evs if v == "vessel"], np.float32).reshape(-1, 4)
        no = np.array([e.snapshot.xyxy_px for e, v in evs if v == "background"], np.float32).reshape(-1, 4)
        labs = site_labels(dets.xyxy_px, dets.confidence, yes, no, mask_conf=mask_conf)
        stem = _frame_name(source_id, t_ns)
        h, w = img.shape[:2]
        if not cv2.imwrite(str(out / "images" / f"{stem}.jpg"), masked_image(img, labs), [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"cannot write {out / 'images' / (stem + '.jpg')}")
        lines = yolo_lines(labs.vessel_xyxy_px, w, h)
        (out / "labels" / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        counts = labs.counts()
        report["frames"].append({"image": f"images/{stem}.jpg", "source_id": source_id, "capture_time_ns": t_ns,
                                 "events": [{"id": e.id, "type": e.type, "verdict": v,
                                             "xyxy_px": [round(float(x), 1) for x in e.snapshot.xyxy_px]} for e, v in evs],
                                 **counts})
        report["totals"]["frames"] += 1
        for k, v in counts.items():
            report["totals"][k] += v
    return report


def run(args: argparse.Namespace) -> int:
    from seawatch.errors import InputError, ModelNotProvisioned
    from seawatch.vision.cmd_detect import provisioned_models
    from seawatch.vision.detector import load_detector
    from seawatch.vision.tiling import check_tile_text, tile_for

    if not 0.0 < args.mask_conf <= 1.0:
        raise InputError(f"--mask-conf must be in (0, 1], got {args.mask_conf}")
    try:
        check_tile_text(args.tile)
    except ValueError as exc:
        raise InputError(f"--tile: {exc}") from None
    t0, t1 = _utc_ns(args.since, "since"), _utc_ns(args.until, "until")
    out = Path(args.out).expanduser()
    dataset = _dataset_yaml(out, args.label, args.base_dataset)  # a bad --base-dataset fails before any work
    model = args.model
    if model is None:
        have = provisioned_models()
        model = next((m for m in ("vessel", "coco_yolov5n") if m in have), None)
        if model is None:
            raise ModelNotProvisioned("no vessel model is provisioned: run `seawatch models fetch` or pass --model")
    detector = load_detector(model, "fp32", conf=args.mask_conf, intra_op_threads=args.threads)
    if args.label not in set(detector.labels):
        raise InputError(f"model {model!r} does not detect {args.label!r} (its labels: {sorted(set(detector.labels))})")
    tile = tile_for(args.tile, detector)
    store, media = _store_and_media(args)
    try:
        started = time.time()
        report = export(store, media, out, detector, tile, args.label, args.mask_conf, args.source, t0, t1)
    finally:
        store.close()
    report["model"] = model
    report["exported_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (out / "export.json").write_text(json.dumps(report, indent=1))
    import yaml

    (out / "dataset.yaml").write_text(
        "# `seawatch models train` input: the base dataset's frames plus the review desk's (every tile of those kept).\n"
        "# Check labels/ first (any YOLO labelling tool). Held-out cameras stay held out; add `--train-too all` for\n"
        "# the model you deploy.\n" + yaml.safe_dump(dataset, sort_keys=False))
    tot = report["totals"]
    print(f"{tot['frames']} frames in {out}: {tot['vessels']} vessel labels (confirmed), {tot['dismissed']} false "
          f"detections as background, {tot['masked']} undecided boxes blurred; skipped events: "
          f"{report['skipped_events']['no_verdict']} without a verdict, {report['skipped_events']['no_snapshot']} "
          f"without a snapshot, {report['skipped_events']['no_box']} reports without a drawn box; "
          f"{len(report['unreadable'])} unreadable snapshots ({time.time() - started:.1f} s, "
          f"model {model})")
    print(f"next: check {out / 'labels'}, then: seawatch models train {out / 'dataset.yaml'} --name vessel_site "
          "--base <the model's weights.pt> --imgsz 640 --tile-px 384 --epochs 2 --empty-keep 0.1 --hard-negatives base")
    return 0
