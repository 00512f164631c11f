"""Clip scoring for ``seawatch evaluate``: run the whole pipeline on each labelled clip and judge its events.

Each clip gets a whole-frame zone with the rule its ground truth speaks about:

- ``fire: true`` -> fire_smoke rule; the clip must raise a fire (or smoke) event.
- ``without_helmet_interval_s`` / ``with_helmet_from_s`` -> no_hard_hat rule (helmet + person models); an event
  must start inside the bare-headed interval, and none may start once everyone wears a hat.
- ``fire: false`` / ``smoke: false`` (negatives) -> fire_smoke rule; every event is a false alarm
  (reported per hour of video).
Clips whose ground truth names none of these are listed as not scored, with the reason.
"""

from __future__ import annotations

import logging
import time

from seawatch.vision.groundtruth import Sample

log = logging.getLogger(__name__)

CLIP_START_NS = 1_700_000_000 * 10**9  # arbitrary fixed UTC origin so reports are reproducible


def clip_config(sample: Sample) -> tuple[dict, str] | None:
    gt = sample.ground_truth
    sid = "clip"
    if "without_helmet_interval_s" in gt or "with_helmet_from_s" in gt:
        return ({"sources": [{"id": sid, "url": str(sample.path), "models": ["helmet", "coco_yolov5n"],
                              "analysis_fps": 3.0}],
                 "zones": [{"id": "site", "source": sid, "rules": [{"type": "no_hard_hat", "min_duration_s": 2.0}]}]},
                "hard_hat")
    if gt.get("fire") is True or gt.get("smoke") is True:
        return ({"sources": [{"id": sid, "url": str(sample.path), "models": ["fire_smoke"], "analysis_fps": 2.0}],
                 "zones": [{"id": "all", "source": sid, "rules": [{"type": "fire_smoke"}]}]}, "fire_positive")
    if gt.get("fire") is False or gt.get("smoke") is False:
        return ({"sources": [{"id": sid, "url": str(sample.path), "models": ["fire_smoke"], "analysis_fps": 2.0}],
                 "zones": [{"id": "all", "source": sid, "rules": [{"type": "fire_smoke"}]}]}, "fire_negative")
    return None


def evaluate_clip(sample: Sample) -> dict:
    from seawatch.vision.pipeline import Pipeline, load_pipeline_config, run_file

    found = clip_config(sample)
    if found is None:
        return {"file": sample.path.name, "scored": False, "reason": "ground truth names no rule this evaluator scores"}
    data, kind = found
    cfg = load_pipeline_config(None, data)
    t0 = time.monotonic()
    pipeline = Pipeline(cfg)
    events = run_file(pipeline, "clip", sample.path, CLIP_START_NS)
    starts = [e for e in events if e.phase == "start"]
    rel = lambda ns: round((ns - CLIP_START_NS) / 1e9, 2)
    duration_s = float(sample.ground_truth.get("video_seconds") or 0.0)
    out = {"file": sample.path.name, "scored": True, "kind": kind, "frames_analysed": pipeline.frames,
           "events": [{"type": e.type, "start_s": rel(e.start_ns), "track_ids": list(e.track_ids)} for e in starts],
           "seconds": round(time.monotonic() - t0, 1)}
    gt = sample.ground_truth
    if kind == "fire_positive":
        hits = [e for e in starts if e.type in ("fire", "smoke")]
        out["detected"] = bool(hits)
        out["first_event_s"] = rel(hits[0].start_ns) if hits else None
    elif kind == "hard_hat":
        lo, hi = gt.get("without_helmet_interval_s", [0, duration_s])
        hat_from = gt.get("with_helmet_from_s")
        slack_s = 3.0  # the ground-truth times are approximate (visual inspection every few seconds)
        hh = [e for e in starts if e.type == "no_hard_hat"]
        out["detected"] = any(lo <= rel(e.start_ns) <= hi + slack_s for e in hh)
        late = [e for e in hh if hat_from is not None and rel(e.start_ns) > hat_from + slack_s]
        out["false_events"] = len(late)
    elif kind == "fire_negative":
        out["false_events"] = len(starts)
        out["false_events_per_hour"] = round(len(starts) / max(duration_s, 1e-9) * 3600, 1) if duration_s else None
    return out


def evaluate_clips(samples: list[Sample]) -> dict:
    clips = [evaluate_clip(s) for s in samples]
    scored = [c for c in clips if c.get("scored")]
    neg = [c for c in scored if c["kind"] == "fire_negative"]
    return {
        "clips": clips,
        "positives_detected": sum(1 for c in scored if c.get("detected")),
        "positives": sum(1 for c in scored if c["kind"] in ("fire_positive", "hard_hat")),
        "false_events": sum(c.get("false_events", 0) for c in scored),
        "negative_clips": len(neg),
    }
