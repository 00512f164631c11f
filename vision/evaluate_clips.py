"""Clip scoring for ``seawatch evaluate``: run the whole pipeline on each labelled clip and judge its events.

Each clip gets a whole-frame zone with the rule its ground truth speaks about:

- ``fire: true`` -> fire_smoke rule; the clip must raise a fire (or smoke) event.
- ``without_helmet_interval_s`` / ``with_helmet_from_s`` -> no_hard_hat rule (helmet + person models); an event
  must start inside the bare-headed interval, and none may start once everyone wears a hat.
- ``fire: false`` / ``smoke: false`` or ``negative_for: [fire, smoke]`` (negatives) -> fire_smoke rule; every
  event is a false alarm (reported per hour of video).
- ``without_helmet: 0`` with people in view, or ``negative_for: [no_helmet]`` -> no_hard_hat rule; every event
  is a false alarm.
- vessels present (``"boats": 3``, ``"ships": 1``, ``"vessel": true``) -> vessel_in_zone over the whole frame with
  the first provisioned of the vessel models (``vessel``, else the COCO baseline; ``--vessel-models`` chooses),
  tiled as a source would be (``tile: auto``); the clip must raise a vessel event.
- no vessels (``"boats": 0``, ``"vessel": false``, ``negative_for: [vessel]``) -> the same; every event is a false
  alarm.
Clips whose ground truth names none of these are listed as not scored, with the reason.

Each scored clip also reports what the same weights would have raised frame by frame (an alert on every analysed
frame whose detections break the rule, the way a per-frame detector is usually wired to alarms), judged against
the same ground truth, so the report shows the rules' precision next to the per-frame precision at equal recall:
``precision`` counts every alert inside the true interval as true; ``incident_precision`` counts one alert per
real incident (the clip's people for hard hats, one fire) and treats repeats for the same incident as noise.
"""

from __future__ import annotations

import logging
import time

from seawatch.vision.events import VESSEL_IN_ZONE
from seawatch.vision.groundtruth import Sample

log = logging.getLogger(__name__)

CLIP_START_NS = 1_700_000_000 * 10**9  # arbitrary fixed UTC origin so reports are reproducible
VESSEL_DWELL_S = 2.0  # a vessel track seen this long raises its event (a clip is short; a site sets its own T)


VESSEL_MODELS = ("vessel", "coco_yolov5n")  # the product's model first, then the baseline CI always has


def vessel_model(candidates: tuple[str, ...]) -> str | None:
    """The first provisioned model of ``candidates`` (vessel clips need one; the trained ``vessel`` model is a
    build artefact a machine may not have). A variant (``vessel:int8``) counts as its model: sources run fp32."""
    from seawatch.errors import ModelError
    from seawatch.vision import registry

    for name in dict.fromkeys(c.partition(":")[0] for c in candidates):
        try:
            registry.resolve_onnx(name)
            return name
        except ModelError:
            continue
    return None


def clip_config(sample: Sample, vessel_models: tuple[str, ...] = VESSEL_MODELS) -> tuple[dict | None, str] | None:
    """(pipeline config, kind of clip), or None when the ground truth names no rule scored here; the config is
    None for a vessel clip when no vessel model is provisioned."""
    gt = sample.ground_truth
    sid = "clip"
    negative_for = {str(x).lower() for x in (gt.get("negative_for") or ())} | set(sample.negative_for)

    def hat(kind: str):
        return ({"sources": [{"id": sid, "url": str(sample.path), "models": ["helmet", "coco_yolov5n"],
                              "analysis_fps": 3.0}],
                 "zones": [{"id": "site", "source": sid, "rules": [{"type": "no_hard_hat", "min_duration_s": 2.0}]}]},
                kind)

    def fire(kind: str):
        return ({"sources": [{"id": sid, "url": str(sample.path), "models": ["fire_smoke"], "analysis_fps": 2.0}],
                 "zones": [{"id": "all", "source": sid, "rules": [{"type": "fire_smoke"}]}]}, kind)

    def vessel(kind: str):
        model = vessel_model(vessel_models)
        if model is None:
            return None, kind  # a vessel clip, but nothing to run it with
        return ({"sources": [{"id": sid, "url": str(sample.path), "models": [model], "tile": "auto",
                              "analysis_fps": 1.0}],
                 "zones": [{"id": "water", "source": sid,
                            "rules": [{"type": "vessel_in_zone", "min_duration_s": VESSEL_DWELL_S}]}]}, kind)

    vessels = sample.count("vessel")
    if "without_helmet_interval_s" in gt or "with_helmet_from_s" in gt:
        return hat("hard_hat")
    if gt.get("fire") is True or gt.get("smoke") is True:
        return fire("fire_positive")
    if vessels:
        return vessel("vessel_positive")
    if gt.get("fire") is False or gt.get("smoke") is False or {"fire", "smoke"} & negative_for:
        return fire("fire_negative")
    if (gt.get("without_helmet") == 0 and gt.get("persons")) or {"no_helmet", "without_helmet"} & negative_for:
        return hat("hard_hat_negative")
    if vessels == 0 or "vessel" in negative_for:
        return vessel("vessel_negative")
    return None


def _frame_alert(kind: str, det) -> bool:
    """Would this frame's raw detections alarm if every frame were an alert (the rule's floors, no timers)?"""
    from seawatch.vision.config import VesselZoneRuleConfig
    from seawatch.vision.rules import bare_headed, fire_smoke_labels

    if kind.startswith("fire"):
        return bool(fire_smoke_labels(det))
    if kind.startswith("vessel"):
        return bool(len(det) and (det.confidence[det.label == "vessel"] >= VesselZoneRuleConfig().min_confidence).any())
    return len(bare_headed(det)) > 0


def _precision(true: int, false: int) -> float | None:
    return round(true / (true + false), 4) if true + false else None


def evaluate_clip(sample: Sample, vessel_models: tuple[str, ...] = VESSEL_MODELS) -> dict:
    from seawatch.vision.pipeline import Pipeline, load_pipeline_config, run_file

    found = clip_config(sample, vessel_models)
    if found is None:
        return {"file": sample.path.name, "scored": False, "reason": "ground truth names no rule this evaluator scores"}
    data, kind = found
    if data is None:
        return {"file": sample.path.name, "scored": False,
                "reason": f"no vessel model provisioned (tried {', '.join(vessel_models)})"}
    cfg = load_pipeline_config(None, data)
    t0 = time.monotonic()
    pipeline = Pipeline(cfg)
    alert_s: list[float] = []  # clip seconds of analysed frames whose raw detections break the rule
    now_ns = [CLIP_START_NS]
    detect, process = pipeline.detect, pipeline.process

    def recording_process(source_id, capture_time_ns, image, locator=None):
        now_ns[0] = capture_time_ns
        return process(source_id, capture_time_ns, image, locator)

    def recording_detect(source_id, image, locator=None):
        det = detect(source_id, image, locator)
        if _frame_alert(kind, det):
            alert_s.append((now_ns[0] - CLIP_START_NS) / 1e9)
        return det

    pipeline.process, pipeline.detect = recording_process, recording_detect
    events = run_file(pipeline, "clip", sample.path, CLIP_START_NS)
    starts = [e for e in events if e.phase == "start"]
    rel = lambda ns: round((ns - CLIP_START_NS) / 1e9, 2)
    duration_s = float(sample.ground_truth.get("video_seconds") or 0.0)
    out = {"file": sample.path.name, "scored": True, "kind": kind, "models": list(data["sources"][0]["models"]),
           "frames_analysed": pipeline.frames,
           "events": [{"type": e.type, "start_s": rel(e.start_ns), "track_ids": list(e.track_ids)} for e in starts],
           "seconds": round(time.monotonic() - t0, 1)}
    gt = sample.ground_truth
    if kind == "fire_positive":
        hits = [e for e in starts if e.type in ("fire", "smoke")]
        out["detected"] = bool(hits)
        out["first_event_s"] = rel(hits[0].start_ns) if hits else None
        true_ev, false_ev = len(hits), len(starts) - len(hits)
        true_fr, false_fr = len(alert_s), 0
    elif kind == "vessel_positive":
        hits = [e for e in starts if e.type == VESSEL_IN_ZONE]
        out["detected"] = bool(hits)
        out["first_event_s"] = rel(hits[0].start_ns) if hits else None
        out["vessels"] = sample.count("vessel")
        true_ev, false_ev = len(hits), len(starts) - len(hits)
        true_fr, false_fr = len(alert_s), 0
    elif kind == "hard_hat":
        lo, hi = gt.get("without_helmet_interval_s", [0, duration_s])
        hat_from = gt.get("with_helmet_from_s")
        slack_s = 3.0  # the ground-truth times are approximate (visual inspection every few seconds)
        hh = [e for e in starts if e.type == "no_hard_hat"]
        out["detected"] = any(lo <= rel(e.start_ns) <= hi + slack_s for e in hh)
        late = [e for e in hh if hat_from is not None and rel(e.start_ns) > hat_from + slack_s]
        out["false_events"] = len(late)
        true_ev, false_ev = sum(1 for e in hh if lo <= rel(e.start_ns) <= hi + slack_s), len(late)
        true_fr = sum(1 for t in alert_s if lo <= t <= hi + slack_s)
        false_fr = sum(1 for t in alert_s if hat_from is not None and t > hat_from + slack_s)
    else:  # negatives: every event and every alerting frame is false
        out["false_events"] = len(starts)
        out["false_events_per_hour"] = round(len(starts) / max(duration_s, 1e-9) * 3600, 1) if duration_s else None
        true_ev, false_ev, true_fr, false_fr = 0, len(starts), 0, len(alert_s)
    # incidents in the clip: an operator needs one alert per incident; repeats for the same incident are noise
    incidents = (0 if kind.endswith("_negative") else int(gt.get("persons") or 1) if kind == "hard_hat"
                 else max(int(sample.count("vessel") or 1), 1) if kind == "vessel_positive" else 1)
    for key, (t, f) in (("rules", (true_ev, false_ev)), ("frame_by_frame", (true_fr, false_fr))):
        useful = min(t, incidents)
        out[key] = {"alerts": t + f, "true": t, "false": f, "precision": _precision(t, f),
                    "incidents_alerted": useful, "repeats": t - useful,
                    "incident_precision": round(useful / (t + f), 4) if t + f else None}
    return out


def evaluate_clips(samples: list[Sample], vessel_models: tuple[str, ...] = VESSEL_MODELS) -> dict:
    clips = [evaluate_clip(s, vessel_models) for s in samples]
    scored = [c for c in clips if c.get("scored")]
    neg = [c for c in scored if c["kind"].endswith("_negative")]
    # per kind of clip: a fire clip yields dozens of (true) frame alerts and a hard-hat clip a few, so pooling them
    # would weigh the comparison by frame counts; macro = the mean over kinds that raised any alert
    tot: dict = {}
    for kind in sorted({c["kind"] for c in scored}):
        mine = [c for c in scored if c["kind"] == kind]
        tot[kind] = {}
        for k in ("rules", "frame_by_frame"):
            t, f = sum(c[k]["true"] for c in mine), sum(c[k]["false"] for c in mine)
            u = sum(c[k]["incidents_alerted"] for c in mine)
            tot[kind][k] = {"true": t, "false": f, "precision": _precision(t, f), "incidents_alerted": u,
                            "incident_precision": round(u / (t + f), 4) if t + f else None}
    kinds = list(tot.values())

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return round(sum(vals) / len(vals), 4) if vals else None

    for k in ("rules", "frame_by_frame"):
        t, f = sum(v[k]["true"] for v in kinds), sum(v[k]["false"] for v in kinds)
        tot[k] = {"true": t, "false": f, "precision": mean(v[k]["precision"] for v in kinds),
                  "incident_precision": mean(v[k]["incident_precision"] for v in kinds)}
    return {
        "precision": tot,
        "clips": clips,
        "positives_detected": sum(1 for c in scored if c.get("detected")),
        "positives": sum(1 for c in scored if c["kind"] in ("fire_positive", "hard_hat", "vessel_positive")),
        "negative_false_events": sum(c.get("false_events", 0) for c in neg),
        "false_events": sum(c.get("false_events", 0) for c in scored),
        "negative_clips": len(neg),
    }
