"""``seawatch evaluate MANIFEST.json [--out report.json]``: detection and alert quality on labelled media."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from seawatch.errors import InputError

HELP = "precision / recall / AP50 per label, fire image recall and false alarms, hard-hat counts, clip events"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="MANIFEST.json in the shared media format")
    p.add_argument("--out", default=None, help="write the JSON report here (a summary is printed either way)")
    p.add_argument("--conf", type=float, default=None, help="confidence threshold (default: each model's own)")
    p.add_argument("--categories", default=None, help="only these categories (comma-separated)")
    p.add_argument("--tile", default=None, help="tiling for vessels SIZE[:OVERLAP] (default auto: each model's trained tile size, "
                                                   "else its input size; overlap 0.2); more sizes after commas (auto,288) and +flip (mirrored) add views")
    p.add_argument("--vessel-models", default=None, metavar="A,B,...",
                   help="models scored on vessel boxes, side by side (default: vessel,coco_yolov5n,ship_published); "
                        "NAME:int8 scores a variant, A+B a group of models with their boxes fused, "
                        "CAM=A/CAM2=B one row with each frame scored by its camera's model (leave-one-camera-out "
                        "models pooled; a frame's camera is its ground truth's 'camera', else its category)")
    p.add_argument("--tile-labels", default=None, metavar="A,B,...",
                   help="labels scored with the tiled inference (default: vessel); e.g. vessel,vehicle,person for wide "
                        "cameras whose cars and people are a few pixels tall (a source with `tile:` tiles every model "
                        "it runs)")
    p.add_argument("--no-clips", action="store_true", help="skip the clips (images only)")
    p.add_argument("--errors", default=None, metavar="DIR",
                   help="write contact sheets of each model's false positives (surest first) and misses (largest "
                        "first) at its operating threshold, and errors.json, into DIR")
    p.add_argument("--operator-ignore", nargs="?", type=int, const=2, default=None, metavar="MIN_FRAMES",
                   help="also score each frame as a fixed camera's review desk would see it: with 'ignore this spot' "
                        "areas made of the false alarms seen in at least MIN_FRAMES (default 2) frames of the same "
                        "camera's other sessions (days), never of the frame's own labels")


def _fmt(v) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def print_summary(report: dict, file=None) -> None:
    tiled = set(report.get("tiled_labels", ()))  # like the rest of the summary, a partial report prints what it has
    file = sys.stdout if file is None else file  # looked up at call time (a default bound at import goes stale)

    print(f"{report['manifest']}: {report['images']} images, {report['clips']} clips, {report['seconds']} s", file=file)
    print("precision / recall at each model's operating threshold (conf); AP50 and R@P over its whole ranking", file=file)
    # the model column fits the longest row name (a per-camera entry, "+ignore" rows), 28 at least
    names = [m + (" +ignore" if s.get("with_operator_ignore") else "")
             for models in report.get("labels", {}).values() for m, s in models.items()]
    w = max([28, *map(len, names)])
    print(f"{'label':10s} {'model':{w}s} {'gt':>5s} {'conf':>5s} {'tp':>5s} {'fp':>5s} {'prec':>6s} {'recall':>6s} {'AP50':>6s} "
          f"{'R@P.8':>6s} {'R@P.7':>6s} {'R@P.6':>6s}", file=file)
    for label, models in report.get("labels", {}).items():
        for model, s in models.items():
            conf = f"{s['conf']:.2f}" if s.get("conf") is not None else "-"
            print(f"{label:10s} {model:{w}s} {s['gt']:5d} {conf:>5s} {s['tp']:5d} {s['fp']:5d} {_fmt(s['precision']):>6s} "
                  f"{_fmt(s['recall']):>6s} {_fmt(s['ap50']):>6s} {_fmt(s['recall_at_precision_0.8']):>6s} "
                  f"{_fmt(s.get('recall_at_precision_0.7')):>6s} {_fmt(s.get('recall_at_precision_0.6')):>6s}", file=file)
        for model, s in models.items():
            o = s.get("with_operator_ignore")
            if o:
                print(f"{label:10s} {(model + ' +ignore'):{w}s} {o['gt']:5d} {o['conf']:5.2f} {o['tp']:5d} {o['fp']:5d} "
                      f"{_fmt(o['precision']):>6s} {_fmt(o['recall']):>6s} {_fmt(o['ap50']):>6s} "
                      f"{_fmt(o['recall_at_precision_0.8']):>6s} {_fmt(o['recall_at_precision_0.7']):>6s} "
                      f"{_fmt(o['recall_at_precision_0.6']):>6s}", file=file)
    ignored = [s["with_operator_ignore"] for models in report.get("labels", {}).values() for s in models.values()
               if s.get("with_operator_ignore")]
    if ignored:
        o = ignored[0]
        print(f"+ignore: each frame with the 'ignore this spot' areas of false alarms seen in >= {o['min_frames']} frames "
              f"of its camera's other sessions ({o['frames_without_feedback']} frame(s) had no other session)", file=file)
    for label, models in report.get("labels", {}).items():
        for model, s in models.items():
            if label in tiled and s.get("recall_by_size"):  # small, distant objects: where recall is lost
                bins = ", ".join(f"{k} {_fmt(v['recall'])} ({v['found']}/{v['gt']})" for k, v in s["recall_by_size"].items())
                print(f"{label} {model} recall by size at conf {s['conf']}: {bins}", file=file)
                for cat, c in (s.get("by_category") or {}).items():  # a manifest of several sources
                    print(f"  {cat}: gt {c['gt']} precision {_fmt(c['precision'])} recall {_fmt(c['recall'])} "
                          f"AP50 {_fmt(c['ap50'])} R@P.8 {_fmt(c['recall_at_precision_0.8'])}", file=file)
    f = report.get("fire_smoke_images")
    if f:
        print(f"fire/smoke images: recall {_fmt(f.get('image_recall'))} ({f['detected']}/{f['positives']}), "
              f"false alarms {_fmt(f.get('false_alarm_rate'))} ({f['false_alarms']}/{f['negatives']})", file=file)
    h = report.get("no_hard_hat_counts")
    if h:
        print(f"no-hard-hat counts: error {h['count_error']:.3f} ({h['abs_error']} off over {h['gt_total']} "
              f"people in {h['images']} images)", file=file)
    c = report.get("clips_report")
    if c:
        print(f"clips: {c['positives_detected']}/{c['positives']} positives raised their event, "
              f"{c['false_events']} false events, {c['negative_clips']} negative clips", file=file)
        if c.get("precision"):
            r, f = c["precision"]["rules"], c["precision"]["frame_by_frame"]
            print(f"  alert precision (mean over clip kinds): rules {r['precision']} vs frame by frame {f['precision']}; "
                  f"one alert per incident: rules {r['incident_precision']} vs frame by frame {f['incident_precision']}",
                  file=file)
            for kind, v in c["precision"].items():
                if kind in ("rules", "frame_by_frame"):
                    continue
                r, f = v["rules"], v["frame_by_frame"]
                print(f"    {kind}: rules {r['precision']} ({r['true']} true / {r['false']} false events, "
                      f"{r['incidents_alerted']} incidents), frame by frame {f['precision']} ({f['true']} true / "
                      f"{f['false']} false frame alerts, {f['incidents_alerted']} incidents)", file=file)
        for clip in c["clips"]:
            print(f"  {clip['file']}: {json.dumps({k: v for k, v in clip.items() if k != 'file'})}", file=file)
    for name, m in report.get("models", {}).items():
        if m.get("scored_training_images"):
            print(f"warning: {name} was trained on {m['scored_training_images']} of the scored images "
                  "(its training record): its numbers here are not held out", file=file)
    e = report.get("errors")
    if e:
        for label, models in e["counts"].items():
            for model, n in models.items():
                print(f"errors {label} {model}: {n['false_background']} false boxes on background, "
                      f"{n['false_near_labelled']} misplaced or duplicate, {n['missed']} missed", file=file)
        print(f"error sheets in {e['dir']}: {', '.join(e['files'])}", file=file)
    if report.get("missing_models"):
        print(f"models not provisioned (skipped): {', '.join(report['missing_models'])}", file=file)
    if report.get("unscored_images"):
        bad = report["unscored_images"]
        print(f"labelled images not scored: {len(bad)} (first: {bad[0]['file']}: {bad[0]['reason']})", file=file)


def run(args: argparse.Namespace) -> int:
    from seawatch.vision.evaluate import evaluate_manifest
    from seawatch.vision.tiling import check_tile_text

    path = Path(args.manifest)
    if not path.is_file():
        raise InputError(f"{path}: no such manifest")
    try:
        check_tile_text(args.tile)
    except ValueError as exc:
        raise InputError(f"--tile: {exc}") from None
    if args.operator_ignore is not None and args.operator_ignore < 1:
        raise InputError("--operator-ignore: MIN_FRAMES must be at least 1")
    if args.errors:  # before a long evaluation, not after it
        try:
            Path(args.errors).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--errors {args.errors}: cannot create the folder: {exc}") from None
    if args.out:  # the report's folder must exist before a long evaluation, not be found missing after it
        folder = Path(args.out).resolve().parent
        if not folder.is_dir():
            raise InputError(f"--out {args.out}: no such folder {folder}")
        if Path(args.out).is_dir():
            raise InputError(f"--out {args.out}: is a folder, give a file name")
        if not os.access(folder, os.W_OK):
            raise InputError(f"--out {args.out}: the folder {folder} is not writable")
    cats = set(args.categories.split(",")) if args.categories else None
    vessel_models = tuple(m.strip() for m in args.vessel_models.split(",") if m.strip()) if args.vessel_models else None
    report = evaluate_manifest(path, conf=args.conf, categories=cats, tile=args.tile or "auto",
                               clips=not args.no_clips, vessel_models=vessel_models,
                               errors_dir=Path(args.errors) if args.errors else None,
                               operator_ignore=args.operator_ignore,
                               tile_labels={x.strip() for x in args.tile_labels.split(",") if x.strip()}
                               if args.tile_labels else None)
    print_summary(report)  # first: the result is on screen even when the report cannot be written
    if args.out:
        try:
            Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--out {args.out}: cannot write the report (the summary above is the result): "
                             f"{exc.strerror or exc}") from None
    return 0
