"""Rule timing on synthetic detections: exact start/end times on capture time, processing lag, flicker, people
in lanes, cooldown, one event per track / blockage, geo positions and enrichers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from seawatch.errors import ConfigError, InputError
from seawatch.vision.config import load_rules_config
from seawatch.vision.detections import Detections
from seawatch.vision.events import MemorySink
from seawatch.vision.rules import NOT_GEOREFERENCED, RuleEngine
from seawatch.vision.tracking import ByteTracker

LABELS = ("fire", "smoke", "person", "no_helmet", "helmet", "car", "truck", "vessel")
FIRE, SMOKE, PERSON, NOHAT, HAT, CAR, TRUCK, VESSEL = range(8)
SRC = "cam"
FRAME = (1000, 800)


def ns(t_s: float) -> int:
    return int(round(t_s * 1e9))


def D(*items) -> Detections:
    """items: (class, box, conf=0.9, track=-1)."""
    if not items:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int32), LABELS, np.zeros(0, np.int64))
    cls = [it[0] for it in items]
    box = [it[1] for it in items]
    conf = [it[2] if len(it) > 2 else 0.9 for it in items]
    tid = [it[3] if len(it) > 3 else -1 for it in items]
    return Detections(np.array(box, np.float32), np.array(conf, np.float32), np.array(cls, np.int32), LABELS, np.array(tid, np.int64))


def engine(zone: dict, events: dict | None = None, sink=None) -> RuleEngine:
    cfg = load_rules_config({"events": events or {"update_interval_s": 0}, "zones": [{"source": SRC, **zone}]})
    return RuleEngine(cfg, sinks=[sink] if sink else [])


def run(eng: RuleEngine, times_s, frame_fn, size=FRAME):
    out = []
    for t in times_s:
        out.extend(eng.update(SRC, ns(t), frame_fn(t), frame_size_px=size))
    return out


def phases(events):
    return [(e.phase, e.type) for e in events]


def grid(t0: float, t1: float, fps: float) -> list[float]:
    n = int(round((t1 - t0) * fps))
    return [round(t0 + k / fps, 6) for k in range(n + 1)]


def irregular(t0: float, t1: float, seed: int, lo=0.05, hi=0.9) -> list[float]:
    rng = np.random.default_rng(seed)
    ts, t = [], t0
    while t <= t1:
        ts.append(round(t, 6))
        t += float(rng.uniform(lo, hi))
    return ts


# ------------------------------------------------------------------------------------------------ fire/smoke

FIRE_ZONE = {"id": "yard", "rules": [{"type": "fire_smoke", "min_duration_s": 3, "window_frames": 10, "min_hits": 5,
                                      "clear_after_s": 5, "max_gap_s": 2, "cooldown_s": 0}]}


def flame(t: float, cls=FIRE, x=400.0, conf=0.8):
    """A flame whose box flickers in size as real flames do."""
    w = 60 + 25 * np.sin(7.3 * t) ** 2
    h = 80 + 30 * np.cos(5.1 * t) ** 2
    return (cls, [x, 500 - h, x + w, 500], conf)


def test_fire_starts_and_ends_at_exact_capture_times():
    eng = engine(FIRE_ZONE)
    evs = run(eng, grid(0, 20, 10), lambda t: D(flame(t)) if 2.0 <= t <= 10.0 else D())
    assert phases(evs) == [("start", "fire"), ("end", "fire")]
    start, end = evs
    assert start.start_ns == ns(2.0) and start.at_ns == ns(5.0)  # first evidence, then T = 3 s
    assert end.end_ns == ns(10.0) and end.at_ns == ns(15.0)  # last evidence + clear_after_s
    assert start.id == end.id and (start.seq, end.seq) == (0, 1)
    assert end.attributes["end_reason"] == "clear" and end.attributes["duration_s"] == pytest.approx(8.0)
    assert start.clip.start_ns == ns(2.0 - 5) and end.clip.end_ns == ns(10.0 + 5)  # default 5 s rolls
    assert start.geo is None and start.geo_reason == NOT_GEOREFERENCED
    assert start.snapshot is not None and start.snapshot.capture_time_ns <= start.at_ns


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fire_decisions_follow_capture_time_not_frame_rate(seed):
    """The same scene analysed at 10 fps and with a lagging, irregular pipeline: same wall-clock decisions."""
    zone = {"id": "yard", "rules": [{"type": "fire_smoke", "min_duration_s": 3, "window_frames": 5, "min_hits": 3,
                                     "clear_after_s": 5, "max_gap_s": 2, "cooldown_s": 0}]}
    scene = lambda t: D(flame(t)) if 2.0 <= t <= 12.0 else D()  # noqa: E731
    ts = irregular(0, 25, seed)
    evs = run(engine(zone), ts, scene)
    assert phases(evs) == [("start", "fire"), ("end", "fire")]
    first_hit = min(t for t in ts if t >= 2.0)
    last_hit = max(t for t in ts if t <= 12.0)
    start, end = evs
    assert start.start_ns == ns(first_hit)
    # the start is decided at the first analysed frame at least T after the first evidence
    assert start.at_ns == ns(min(t for t in ts if t >= first_hit + 3.0))
    assert end.end_ns == ns(last_hit)
    assert end.at_ns == ns(min(t for t in ts if t >= last_hit + 5.0))
    # and the 10 fps run decides within one irregular frame gap of the same capture times
    ref = run(engine(zone), grid(0, 25, 10), scene)
    assert abs(ref[0].at_ns - start.at_ns) <= ns(0.9) and abs(ref[1].at_ns - end.at_ns) <= ns(0.9)


def test_fire_flicker_tolerated_short_burst_ignored():
    eng = engine(FIRE_ZONE)
    # detector misses every third frame: still one incident, no premature end
    evs = run(eng, grid(0, 30, 10), lambda t: D(flame(t)) if 1.0 <= t <= 20.0 and round(t * 10) % 3 else D())
    assert phases(evs) == [("start", "fire"), ("end", "fire")]
    # a 2 s burst (shorter than T) never raises
    assert run(engine(FIRE_ZONE), grid(0, 30, 10), lambda t: D(flame(t)) if 5.0 <= t <= 7.0 else D()) == []
    # k of n: 2 frames in 10 with evidence over a long time is not enough
    assert run(engine(FIRE_ZONE), grid(0, 30, 10), lambda t: D(flame(t)) if round(t * 10) % 5 == 0 else D()) == []


def test_static_red_light_does_not_alarm_unless_check_disabled():
    lamp = lambda t: D((FIRE, [700, 100, 720, 125], 0.7))  # noqa: E731  (identical box: a lamp, a sign)
    assert run(engine(FIRE_ZONE), grid(0, 60, 5), lamp) == []
    no_check = {"id": "yard", "rules": [{**FIRE_ZONE["rules"][0], "static_min_iou": None}]}
    assert phases(run(engine(no_check), grid(0, 60, 5), lamp)) == [("start", "fire")]


def test_frozen_box_with_flickering_pixels_is_a_fire_frozen_pixels_are_a_lamp():
    """With frames, a box that never moves still alarms when the pixels inside change (a steady fire far away)."""
    rng = np.random.default_rng(1)
    scene = np.full((800, 1000, 3), 70, np.uint8)

    def frames(flicker: bool):
        for t in grid(0, 30, 2):
            img = scene.copy()
            if flicker:
                img[300:400, 500:600] = rng.integers(0, 256, (100, 100, 1), dtype=np.uint8) * np.array([0.2, 0.6, 1.0])
            else:
                img[300:400, 500:600] = (40, 60, 230)  # a red lamp
            yield t, img

    for flicker, expected in ((True, [("start", "fire")]), (False, [])):
        eng = engine(FIRE_ZONE)
        evs = []
        for t, img in frames(flicker):
            evs += eng.update(SRC, ns(t), D((FIRE, [500, 300, 600, 400], 0.7)), image=img)
        assert phases(evs) == expected, flicker


def test_fire_and_smoke_are_separate_incidents_and_zone_limits_evidence():
    zone = {**FIRE_ZONE, "polygon_px": [[0, 0], [600, 0], [600, 800], [0, 800]]}
    scene = lambda t: D(flame(t, FIRE, x=100), flame(t + 1, SMOKE, x=200), flame(t, FIRE, x=800))  # noqa: E731
    evs = run(engine(zone), grid(0, 10, 10), scene)
    assert sorted(phases(evs)) == [("start", "fire"), ("start", "smoke")]
    fire = next(e for e in evs if e.type == "fire")
    assert fire.snapshot.xyxy_px[0] == pytest.approx(100)  # the flame outside the zone (x=800) is not evidence
    # outside-only evidence raises nothing
    assert run(engine(zone), grid(0, 10, 10), lambda t: D(flame(t, FIRE, x=800))) == []


def test_fire_and_smoke_have_their_own_confidence_floors():
    """Defaults: fire counts from 0.2, smoke (the class night noise and haze imitate) only from 0.35."""
    weak = lambda t: D(flame(t, FIRE, x=100, conf=0.25), flame(t, SMOKE, x=300, conf=0.3))  # noqa: E731
    assert phases(run(engine(FIRE_ZONE), grid(0, 10, 10), weak)) == [("start", "fire")]
    zone = {**FIRE_ZONE, "rules": [{**FIRE_ZONE["rules"][0], "min_confidence_by_label": {"smoke": 0.25, "fire": 0.5}}]}
    assert phases(run(engine(zone), grid(0, 10, 10), weak)) == [("start", "smoke")]
    bad = {**FIRE_ZONE, "rules": [{**FIRE_ZONE["rules"][0], "min_confidence_by_label": {"vessel": 0.5}}]}
    with pytest.raises(ConfigError, match="min_confidence_by_label"):
        engine(bad)


def test_fire_severity_from_area_and_growth():
    eng = engine(FIRE_ZONE)
    # grows from ~0.3 % of the frame to ~10 %: low at start, escalates with update events
    def scene(t):
        s = 50 + 30 * t + 5 * np.sin(9 * t)
        return D((FIRE, [300, 600 - s, 300 + s, 600], 0.8))
    evs = run(eng, grid(0, 8, 10), scene)
    sev = [e.severity for e in evs]
    assert evs[0].phase == "start" and sev[0] != "critical" and len(evs) >= 2
    assert sev[-1] == "critical" and all(e.phase == "update" for e in evs[1:])
    assert evs[-1].attributes["area_frac"] > 0.05
    ranks = ["low", "medium", "high", "critical"]
    assert [ranks.index(s) for s in sev] == sorted(ranks.index(s) for s in sev)  # only escalates


def test_fire_cooldown_suppresses_a_quick_repeat():
    scene = lambda t: D(flame(t)) if 2.0 <= t <= 10.0 or 16.0 <= t <= 30.0 else D()  # noqa: E731
    no_cd = run(engine(FIRE_ZONE), grid(0, 40, 10), scene)
    assert phases(no_cd) == [("start", "fire"), ("end", "fire"), ("start", "fire"), ("end", "fire")]
    assert no_cd[2].start_ns == ns(16.0) and no_cd[2].at_ns == ns(19.0)
    cd = {"id": "yard", "rules": [{**FIRE_ZONE["rules"][0], "cooldown_s": 25}]}
    evs = run(engine(cd), grid(0, 40, 10), scene)
    assert phases(evs) == [("start", "fire"), ("end", "fire")]  # the end at 15 s blocks starts until 40 s


# ------------------------------------------------------------------------------------------------- hard hat

HAT_ZONE = {"id": "site", "polygon_px": [[0, 300], [1000, 300], [1000, 800], [0, 800]],
            "rules": [{"type": "no_hard_hat", "min_duration_s": 5, "grace_s": 2, "end_after_s": 3, "cooldown_s": 30}]}


def worker(tid: int, x: float, hat: bool | None, y_feet=700.0, h=300.0, head_conf=0.8):
    """A tracked person box plus (optionally) its head box, labelled helmet / no_helmet."""
    items = [(PERSON, [x, y_feet - h, x + 100, y_feet], 0.9, tid)]
    if hat is not None:
        items.append((HAT if hat else NOHAT, [x + 30, y_feet - h, x + 70, y_feet - h + 45], head_conf, 100 + tid))
    return items


def test_worker_putting_hat_on_ends_the_event():
    eng = engine(HAT_ZONE)
    evs = run(eng, grid(0, 20, 10), lambda t: D(*worker(1, 200, hat=t >= 10.0)))
    assert phases(evs) == [("start", "no_hard_hat"), ("end", "no_hard_hat")]
    start, end = evs
    assert start.start_ns == 0 and start.at_ns == ns(5.0)
    assert end.end_ns == ns(9.9) and end.at_ns == ns(12.9)  # last bare-headed frame + end_after_s
    assert start.track_ids == (1,) and start.attributes["evidence"] == "bare_head"
    assert set(start.labels) == {"no_helmet", "person"}
    assert start.snapshot.xyxy_px == pytest.approx((200, 400, 300, 700))  # the person, not just the head


def test_one_event_per_person_track_and_zone_and_hat_respected():
    scene = lambda t: D(*worker(1, 100, False), *worker(2, 500, False), *worker(3, 800, True),  # noqa: E731
                        *worker(4, 300, False, y_feet=250, h=200))  # 4 stands outside the zone (feet at y=250)
    evs = run(engine(HAT_ZONE), grid(0, 30, 5), scene)
    starts = [e for e in evs if e.phase == "start"]
    assert sorted(e.track_ids for e in starts) == [(1,), (2,)]
    assert len({e.id for e in evs}) == 2 and all(e.phase != "end" for e in evs)


def test_person_without_any_head_box_counts_only_when_configured_and_large_enough():
    big = lambda t: D(*worker(1, 100, None))  # noqa: E731
    small = lambda t: D(*worker(2, 100, None, h=60))  # noqa: E731
    assert phases(run(engine(HAT_ZONE), grid(0, 10, 5), big)) == [("start", "no_hard_hat")]
    assert run(engine(HAT_ZONE), grid(0, 10, 5), small) == []
    ignore = {**HAT_ZONE, "rules": [{**HAT_ZONE["rules"][0], "person_without_helmet_box": "ignore"}]}
    assert run(engine(ignore), grid(0, 10, 5), big) == []


def test_missed_head_box_keeps_the_last_seen_head_state_for_a_while():
    # hat seen until 4 s, then the head detector misses the head: the person is not a violation (memory 5 s)...
    hat_then_missed = lambda t: D(*worker(1, 100, hat=True if t < 4 else None))  # noqa: E731
    evs = run(engine(HAT_ZONE), grid(0, 20, 5), hat_then_missed)
    # ...until the memory (last hat at 3.8 s) runs out at 9 s; from then the large head-less person counts again (5 s dwell)
    assert phases(evs) == [("start", "no_hard_hat")] and evs[0].start_ns == ns(9.0) and evs[0].at_ns == ns(14.0)
    # a bare head seen moments ago keeps the violation going through missed head boxes
    bare_then_missed = lambda t: D(*worker(1, 100, hat=False if t < 3 else None))  # noqa: E731
    evs = run(engine(HAT_ZONE), grid(0, 8, 5), bare_then_missed)
    assert phases(evs) == [("start", "no_hard_hat")] and evs[0].start_ns == 0 and evs[0].at_ns == ns(5)
    assert evs[0].attributes["evidence"] == "bare_head_recent"


def test_bare_head_without_person_box_is_its_own_subject():
    evs = run(engine(HAT_ZONE), grid(0, 10, 5), lambda t: D((NOHAT, [300, 500, 340, 545], 0.8, 7)))
    assert phases(evs) == [("start", "no_hard_hat")] and evs[0].track_ids == (7,) and evs[0].attributes["subject"] == "head"


def test_hard_hat_grace_bridges_short_gaps_but_not_long_ones():
    # 1.5 s without evidence (< grace 2 s): the dwell timer keeps running -> start at 5 s
    gap_short = lambda t: D(*worker(1, 100, False)) if not 2.0 <= t < 3.5 else D()  # noqa: E731
    evs = run(engine(HAT_ZONE), grid(0, 10, 10), gap_short)
    assert evs[0].phase == "start" and evs[0].at_ns == ns(5.0) and evs[0].start_ns == 0
    # 2.5 s gap (> grace): the timer restarts at 4.5 s -> start at 9.5 s
    gap_long = lambda t: D(*worker(1, 100, False)) if not 2.0 <= t < 4.5 else D()  # noqa: E731
    evs = run(engine(HAT_ZONE), grid(0, 12, 10), gap_long)
    assert evs[0].phase == "start" and evs[0].start_ns == ns(4.5) and evs[0].at_ns == ns(9.5)


def test_hard_hat_cooldown_is_per_track():
    # both take the hat on and off; track 1's second violation falls inside its cooldown, track 2 is a new person
    def scene(t):
        items = worker(1, 100, hat=10.0 <= t < 15.0)
        if t >= 20.0:
            items += worker(2, 600, hat=False)
        return D(*items)
    evs = run(engine(HAT_ZONE), grid(0, 40, 5), scene)
    by_track = {}
    for e in evs:
        by_track.setdefault(e.track_ids, []).append(e.phase)
    assert by_track[(1,)] == ["start", "end"]  # second violation (from 15 s) suppressed: cooldown ends at 42.8 s
    assert by_track[(2,)] == ["start"]


def test_hard_hat_with_real_tracker_in_the_loop_and_lag():
    """Detections without ids -> ByteTracker -> rules, at an irregular frame rate."""
    eng = engine(HAT_ZONE)
    tr = ByteTracker()
    starts = []
    for t in irregular(0, 20, seed=5, hi=0.6):
        x = 100 + 10 * t
        raw = D((PERSON, [x, 400, x + 100, 700], 0.9), (NOHAT, [x + 30, 400, x + 70, 445], 0.8))
        raw = Detections(raw.xyxy_px, raw.confidence, raw.class_id, LABELS)  # untracked
        for e in eng.update(SRC, ns(t), tr.update(raw, ns(t)), frame_size_px=FRAME):
            starts.append(e)
    assert phases(starts) == [("start", "no_hard_hat")]
    assert 5.0 <= starts[0].at_ns / 1e9 <= 5.0 + 0.6 + 0.6  # T after the track got its id (second frame)


def test_untracked_detections_rejected_for_track_rules():
    eng = engine(HAT_ZONE)
    raw = Detections(np.array([[0, 400, 100, 700]], np.float32), np.array([0.9]), np.array([PERSON]), LABELS)
    with pytest.raises(InputError, match="tracked"):
        eng.update(SRC, 0, raw)
    eng.update(SRC, ns(2), D())
    with pytest.raises(InputError, match="older"):
        eng.update(SRC, ns(1), D())


# ------------------------------------------------------------------------------------------------ fire lane

LANE = {"id": "lane", "polygon_px": [[300, 300], [600, 300], [600, 800], [300, 800]],
        "rules": [{"type": "fire_lane_blocked", "min_duration_s": 60, "grace_s": 10, "clear_after_s": 10}]}


def car(tid, x, y=500.0, cls=CAR, conf=0.85):
    return (cls, [x, y, x + 200, y + 120], conf, tid)


def test_parked_car_blocks_after_T_and_ends_when_lane_clear():
    def scene(t):
        if t < 10:
            return D(car(1, -200 + 40 * t))  # drives in from the left, stops at x=200 (into the lane) at 10 s
        if t <= 200:
            return D(car(1, 200 + np.sin(t) * 2))  # parked, with detector jitter
        if t <= 205:
            return D(car(1, 200 + 60 * (t - 200)))  # drives off to the right
        return D()
    evs = run(engine(LANE), grid(0, 260, 1), scene)
    assert phases(evs) == [("start", "fire_lane_blocked"), ("end", "fire_lane_blocked")]
    start, end = evs
    assert start.start_ns == ns(10) and start.at_ns == ns(70)
    assert start.track_ids == (1,) and start.attributes["occupant_kinds"] == ["vehicle"]
    assert end.end_ns == ns(200) and end.at_ns == ns(210)  # blocked last at 200 s, clear_after 10 s
    assert end.attributes["end_reason"] == "lane clear"


def test_people_never_block_and_through_traffic_never_blocks():
    # a worker stands in the lane for 5 minutes; another walks back and forth; a slow truck crawls through
    def scene(t):
        return D((PERSON, [400, 400, 460, 600], 0.95, 1), (PERSON, [300 + (t * 20) % 300, 400, 360 + (t * 20) % 300, 600], 0.9, 2),
                 car(3, -200 + 3 * t, cls=TRUCK))
    assert run(engine(LANE), grid(0, 300, 1), scene) == []


def test_one_event_per_blockage_across_vehicles_and_missed_detections():
    def scene(t):
        items = []
        if 0 <= t <= 150 and not 80 <= t < 88:  # car 1 parked; detector misses it for 8 s (< grace 10 s)
            items.append(car(1, 250))
        if 100 <= t <= 250:
            items.append(car(2, 380, y=650))  # car 2 parks while car 1 is still there, stays after it leaves
        return D(*items)
    evs = run(engine(LANE), grid(0, 300, 1), scene)
    assert phases(evs)[0] == ("start", "fire_lane_blocked") and phases(evs)[-1] == ("end", "fire_lane_blocked")
    assert len({e.id for e in evs}) == 1  # one blockage -> one incident
    assert evs[0].at_ns == ns(60) and evs[0].start_ns == 0  # the gap did not reset car 1's timer
    assert evs[-1].track_ids == (1, 2) and evs[-1].end_ns == ns(250) and evs[-1].at_ns == ns(260)


def test_tracker_id_switch_on_a_parked_car_keeps_its_resting_timer():
    # the same parked car gets a new track id at 30 s and again at 45 s (re-acquired after missed detections)
    scene = lambda t: D(car(1 if t < 30 else 2 if t < 45 else 3, 250 + np.cos(t)))  # noqa: E731
    evs = run(engine(LANE), grid(0, 100, 1), scene)
    assert phases(evs) == [("start", "fire_lane_blocked")]
    assert evs[0].start_ns == 0 and evs[0].at_ns == ns(60) and evs[0].track_ids == (3,)
    # but a different car parking where another just left starts its own timer
    scene2 = lambda t: D(car(1, 250)) if t < 30 else D(car(2, 420)) if t >= 32 else D()  # noqa: E731
    evs = run(engine(LANE), grid(0, 120, 1), scene2)
    assert phases(evs) == [("start", "fire_lane_blocked")] and evs[0].start_ns == ns(32) and evs[0].at_ns == ns(92)


def test_remembered_but_unseen_vehicle_never_opens_a_blockage():
    # parked for 55 s, then detections stop: grace memory (10 s) must not open an event at 60 s on its own
    evs = run(engine(LANE), grid(0, 100, 1), lambda t: D(car(1, 250)) if t <= 55 else D())
    assert evs == []


def test_car_outside_the_lane_or_barely_touching_does_not_block():
    assert run(engine(LANE), grid(0, 200, 2), lambda t: D(car(1, 620))) == []
    assert run(engine(LANE), grid(0, 200, 2), lambda t: D(car(1, 120))) == []  # 30 px of 200 (15 %) in the lane
    assert phases(run(engine(LANE), grid(0, 200, 2), lambda t: D(car(1, 160)))) == [("start", "fire_lane_blocked")]  # 70 px


@pytest.mark.parametrize("seed", [7, 8])
def test_lane_timing_under_processing_lag(seed):
    ts = irregular(0, 200, seed, lo=0.2, hi=3.0)
    evs = run(engine(LANE), ts, lambda t: D(car(1, 250)) if 20.0 <= t <= 150.0 else D())
    first = min(t for t in ts if t >= 20.0)
    last = max(t for t in ts if t <= 150.0)
    assert phases(evs) == [("start", "fire_lane_blocked"), ("end", "fire_lane_blocked")]
    assert evs[0].start_ns == ns(first) and evs[0].at_ns == ns(min(t for t in ts if t >= first + 60))
    assert evs[1].end_ns == ns(last) and evs[1].at_ns == ns(min(t for t in ts if t >= last + 10))


def test_lane_stationary_foreground_catches_an_unknown_object():
    zone = {**LANE, "rules": [{**LANE["rules"][0], "min_duration_s": 20,
                               "stationary_foreground": {"short_tau_s": 2, "long_tau_s": 600}}]}
    eng = engine(zone)
    rng = np.random.default_rng(0)
    base = np.full((800, 1000, 3), 90, np.uint8)
    base[:, ::50] = 140  # some texture
    evs = []
    for t in grid(0, 120, 1):
        img = np.clip(base.astype(np.int16) + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
        if 30 <= t <= 80:
            img[500:650, 380:520] = (30, 160, 200)  # a pallet nobody has a detector for
        evs += eng.update(SRC, ns(t), D(), image=img)
    assert phases(evs) == [("start", "fire_lane_blocked"), ("end", "fire_lane_blocked")]
    start, end = evs
    assert start.attributes["occupant_kinds"] == ["unknown_object"]
    assert 50 <= start.at_ns / 1e9 <= 56  # 20 s after the short-term model settled on it
    assert 80 <= end.end_ns / 1e9 <= 81 and end.at_ns - end.end_ns == ns(10)
    x1, y1, x2, y2 = start.snapshot.xyxy_px
    assert x1 == pytest.approx(380, abs=12) and y2 == pytest.approx(650, abs=12)


# -------------------------------------------------------------------------------------------------- vessels


class FlatLocator:
    """Test locator: pixel -> lon/lat on a tiny local grid (0.00001 deg per pixel), 5 m uncertainty, sky above y<100."""

    def locate(self, xy_px):
        xy = np.asarray(xy_px, np.float64).reshape(-1, 2)
        out = np.stack([54.0 - xy[:, 1] * 1e-5, 6.5 + xy[:, 0] * 1e-5, np.full(len(xy), 5.0)], axis=1)
        out[xy[:, 1] < 100] = np.nan
        return out


GEO_ZONE = {"id": "windfarm", "polygon_lonlat": [[6.5040, 53.990], [6.5080, 53.990], [6.5080, 53.998], [6.5040, 53.998]],
            "rules": [{"type": "vessel_in_zone", "min_duration_s": 30, "grace_s": 5, "end_after_s": 10, "cooldown_s": 60}]}


def boat(tid, x, y=500.0):
    return (VESSEL, [x - 40, y - 20, x + 40, y + 20], 0.8, tid)


def test_vessel_in_geo_zone_with_locator_position_and_enricher():
    sink = MemorySink()
    cfg = load_rules_config({"events": {"update_interval_s": 0}, "zones": [{"source": SRC, **GEO_ZONE}]})

    def identity(ev):
        return replace(ev, attributes={**ev.attributes, "identified": False, "mmsi": None})

    eng = RuleEngine(cfg, sinks=[sink], enrichers=[identity])
    loc = FlatLocator()
    out = []
    for t in grid(0, 120, 1):
        x = 300 + 3 * t  # lon = 6.503 + 3e-5 t: inside [6.504, 6.508] from x=400 (t≈33.3) to x=800 (t≈166)
        out += eng.update(SRC, ns(t), D(boat(5, x)), locator=loc, frame_size_px=FRAME)
    out += eng.close()
    assert phases(out) == [("start", "vessel_in_zone"), ("end", "vessel_in_zone")]
    start = out[0]
    assert start.start_ns == ns(34) and start.at_ns == ns(64)
    assert start.geo is not None and start.geo.semi_major_m == 5.0 and start.geo_reason is None
    assert 6.504 <= start.geo.lon_deg <= 6.508 and start.attributes["identified"] is False
    assert out[1].attributes["end_reason"] == "stream ended"
    assert [e.id for e in sink.events] == [e.id for e in out]


def test_geo_zone_without_locator_is_inactive_and_pixel_zone_says_why_no_geo():
    cfg = load_rules_config({"zones": [{"source": SRC, **GEO_ZONE}]})
    eng = RuleEngine(cfg)
    assert run(eng, grid(0, 100, 1), lambda t: D(boat(5, 500))) == []
    pix = {**GEO_ZONE, "polygon_lonlat": None, "polygon_px": [[0, 0], [1000, 0], [1000, 800], [0, 800]]}
    evs = run(engine(pix), grid(0, 100, 1), lambda t: D(boat(5, 500)))
    assert phases(evs) == [("start", "vessel_in_zone")] and evs[0].geo is None and "geo-referenced" in evs[0].geo_reason


def test_vessel_leaving_briefly_within_grace_keeps_timer_and_update_interval_heartbeat():
    pix = {**GEO_ZONE, "polygon_lonlat": None, "polygon_px": [[0, 0], [600, 0], [600, 800], [0, 800]]}
    eng = engine(pix, events={"update_interval_s": 20})
    # inside, but crosses out for 3 s (< grace 5 s) at 10..13 s
    evs = run(eng, grid(0, 80, 1), lambda t: D(boat(9, 700 if 10 <= t < 13 else 500)))
    assert evs[0].phase == "start" and evs[0].start_ns == 0 and evs[0].at_ns == ns(30)
    assert [e.at_ns for e in evs[1:]] == [ns(50), ns(70)] and all(e.phase == "update" for e in evs[1:])


def test_a_vessel_reacquired_under_a_new_track_id_is_the_same_incident():
    """A moored boat whose track is lost (5 s without a detection: fog, a passing ship, a stream gap) and found
    again under a new id at the same place is one incident, not two; a boat at another place is its own, and
    the same place after the incident ended and its cooldown ran out raises a new one."""
    pix = {**GEO_ZONE, "polygon_lonlat": None, "polygon_px": [[0, 0], [1000, 0], [1000, 800], [0, 800]]}
    eng = engine(pix)  # T 30 s, grace 5 s, end after 10 s, cooldown 60 s

    def frame(t):
        if t < 40:
            return D(boat(1, 300))
        if t < 45:
            return D()  # lost
        if t < 60:
            return D(boat(2, 304), boat(3, 800))  # #2: #1 again (4 px off); #3: another boat elsewhere
        return D(boat(3, 800))

    evs = run(eng, grid(0, 200, 1), frame)
    starts = [e for e in evs if e.phase == "start"]
    assert [(e.start_ns, e.track_ids) for e in starts] == [(0, (1,)), (ns(45), (3,))]
    end = next(e for e in evs if e.phase == "end" and 1 in e.track_ids)
    assert end.track_ids == (1, 2) and end.at_ns == ns(69)  # last seen (as #2) at 59 s, ended 10 s later
    # a new boat at the moored place once the first incident's cooldown (60 s after its end) has passed
    later = run(eng, grid(201, 260, 1), lambda t: D(boat(4, 300), boat(3, 800)))
    assert [(e.phase, e.track_ids) for e in later if e.phase == "start"] == [("start", (4,))]


def test_a_new_track_does_not_take_over_a_subject_seen_in_the_same_frame():
    """Two boats moored side by side: the second one's track does not continue the first's incident."""
    pix = {**GEO_ZONE, "polygon_lonlat": None, "polygon_px": [[0, 0], [1000, 0], [1000, 800], [0, 800]]}
    eng = engine(pix)
    evs = run(eng, grid(0, 80, 1), lambda t: D(boat(1, 300), *((boat(2, 330),) if t >= 20 else ())))
    assert [e.track_ids for e in evs if e.phase == "start"] == [(1,), (2,)]


def test_config_errors_are_config_errors_with_paths():
    with pytest.raises(ConfigError, match=r"zones\.0\.rules\.0\.fire_smoke: .*min_hits"):
        load_rules_config({"zones": [{"id": "a", "source": "s", "rules": [{"type": "fire_smoke", "min_hits": 20, "window_frames": 10}]}]})
    with pytest.raises(ConfigError, match=r"vessel_in_zone\.min_duraton_s: unknown setting 'min_duraton_s' \(did you mean min_duration_s\?\)"):
        load_rules_config({"zones": [{"id": "a", "source": "s", "rules": [{"type": "vessel_in_zone", "min_duraton_s": 3}]}]})
    with pytest.raises(ConfigError, match="twice"):
        z = {"id": "a", "source": "s", "rules": [{"type": "vessel_in_zone"}]}
        load_rules_config({"zones": [z, z]})
    with pytest.raises(ConfigError, match="polygon_px lane"):
        load_rules_config({"zones": [{"id": "a", "source": "s", "rules": [{"type": "fire_lane_blocked", "stationary_foreground": {}}]}]})
    with pytest.raises(ConfigError, match="invalid"):  # self-intersecting bow tie
        load_rules_config({"zones": [{"id": "a", "source": "s", "polygon_px": [[0, 0], [10, 10], [10, 0], [0, 10]],
                                      "rules": [{"type": "vessel_in_zone"}]}]})


# ------------------------------------------------------------------------------------- stationary foreground

from seawatch.vision.config import StationaryForegroundConfig  # noqa: E402
from seawatch.vision.stationary import StationaryForeground  # noqa: E402
from seawatch.vision.zones import Zone  # noqa: E402

LANE_ZONE = Zone.from_pixels("lane", [[200, 200], [800, 200], [800, 700], [200, 700]])


def lane_frames(times, paint, seed=0, gain=lambda t: 1.0):
    """Noisy textured yard; ``paint(img, t)`` draws the objects of time t."""
    rng = np.random.default_rng(seed)
    base = np.full((800, 1000, 3), 100, np.uint8)
    base[::40] = 150
    base[:, ::60] = 60
    noise = [rng.normal(0, 3, base.shape).astype(np.float32) for _ in range(5)]  # sensor noise, cycled (speed)
    for k, t in enumerate(times):
        img = np.clip(base.astype(np.float32) * gain(t) + noise[k % 5], 0, 255).astype(np.uint8)
        paint(img, t)
        yield t, img


def first_blocked(sf, frames, ignore=lambda t: None):
    for t, img in frames:
        st = sf.update(img, ns(t), ignore(t))
        if st.blocked:
            return t, st
    return None, None


def crate(img, x, y, w=120, h=100):
    img[y:y + h, x:x + w] = (20, 60, 220)


def test_stationary_object_appears_and_stays():
    sf = StationaryForeground(LANE_ZONE, StationaryForegroundConfig(short_tau_s=2), min_duration_s=30)
    t, st = first_blocked(sf, lane_frames(grid(0, 120, 1), lambda im, t: crate(im, 400, 400) if t >= 20 else None))
    assert t is not None and 50 <= t <= 56  # arrives at 20 s, settles in the short-term model in a few s, + 30 s
    assert 20 <= st.since_ns / 1e9 <= 26
    x1, y1, x2, y2 = st.xyxy_px
    assert abs(x1 - 400) < 10 and abs(y1 - 400) < 10 and abs(x2 - 520) < 10 and abs(y2 - 500) < 10


@pytest.mark.parametrize("fps", [0.5, 1, 4])
def test_stationary_timing_does_not_depend_on_frame_rate(fps):
    sf = StationaryForeground(LANE_ZONE, StationaryForegroundConfig(short_tau_s=2), min_duration_s=30)
    t, _ = first_blocked(sf, lane_frames(grid(0, 100, fps), lambda im, t: crate(im, 400, 400) if t >= 20 else None))
    assert t is not None and 50 <= t <= 58


def test_object_passing_through_or_walking_person_never_blocks():
    sf = StationaryForeground(LANE_ZONE, StationaryForegroundConfig(short_tau_s=2), min_duration_s=20)
    # a cart crossing the lane at 8 px/s (slow!) and a person standing still, masked as a detected person
    def paint(im, t):
        crate(im, int(150 + 8 * t), 300, w=80, h=80)
        im[450:650, 600:650] = (200, 200, 200)
    t, _ = first_blocked(sf, lane_frames(grid(0, 120, 1), paint), ignore=lambda t: np.array([[590, 440, 660, 660]]))
    assert t is None


def test_daylight_change_is_not_an_object():
    sf = StationaryForeground(LANE_ZONE, StationaryForegroundConfig(short_tau_s=2), min_duration_s=20)
    t, _ = first_blocked(sf, lane_frames(grid(0, 200, 1), lambda im, t: None, gain=lambda t: 1.0 + 0.4 * min(1.0, t / 60)))
    assert t is None


def test_exposure_and_white_balance_jump_is_not_an_object():
    """An auto-exposure / white-balance step (seen on the real car-park time-lapse) changes every lane pixel at once."""
    jump = np.array([1.35, 1.1, 0.8], np.float32)
    sf = StationaryForeground(LANE_ZONE, StationaryForegroundConfig(short_tau_s=2), min_duration_s=20)
    cands = []
    for t, img in lane_frames(grid(0, 120, 1), lambda im, t: None):
        if t >= 30:
            img = np.clip(img * jump, 0, 255).astype(np.uint8)
        st = sf.update(img, ns(t))
        assert not st.blocked
        cands.append(st.candidate_fraction)
    assert max(cands) < 0.01


def test_reference_image_finds_an_object_present_from_the_start_and_old_foreground_is_absorbed(tmp_path):
    import cv2

    frames = list(lane_frames(grid(0, 100, 1), lambda im, t: crate(im, 300, 300)))
    empty = next(iter(lane_frames([0], lambda im, t: None)))[1]
    ref = tmp_path / "empty.png"
    cv2.imwrite(str(ref), empty)
    no_ref = StationaryForeground(LANE_ZONE, StationaryForegroundConfig(short_tau_s=2), min_duration_s=20)
    assert first_blocked(no_ref, iter(frames))[0] is None  # first frame taken as the empty lane
    with_ref = StationaryForeground(LANE_ZONE, StationaryForegroundConfig(short_tau_s=2, reference_image=str(ref)), min_duration_s=20)
    t, _ = first_blocked(with_ref, iter(frames))
    assert t is not None and 20 <= t <= 23
    absorbing = StationaryForeground(LANE_ZONE, StationaryForegroundConfig(short_tau_s=2, reference_image=str(ref), absorb_after_s=40),
                                     min_duration_s=20)
    states = [absorbing.update(img, ns(t)) for t, img in frames]
    assert states[30].blocked and not states[-1].blocked  # absorbed after 40 s of standing


def test_stationary_rejects_bad_input():
    sf = StationaryForeground(LANE_ZONE, StationaryForegroundConfig(), min_duration_s=10)
    with pytest.raises(InputError):
        sf.update(np.zeros((10, 10, 3), np.float32), 0)
    with pytest.raises(InputError, match="outside"):
        sf.update(np.zeros((100, 100, 3), np.uint8), 0)  # lane lies outside a 100x100 frame
    with pytest.raises(ConfigError):
        StationaryForeground(Zone.whole_frame("x"), StationaryForegroundConfig(), 10)


# ------------------------------------------------------------------------------ real footage (needs models)


def _replay(video, models, rules_cfg, analyse_fps=None, time_scale=1.0):
    """Decode ``video``, detect with the provisioned ``models``, track and run the rules on capture time
    (video time x ``time_scale``, for time-lapses). Returns (events, per-frame tracked detections)."""
    import cv2

    from conftest import onnx_model
    from seawatch.vision.detector import load_detector

    for m in models:
        onnx_model(m)  # skip (dev) or fail (CI) with the fetch command when absent
    detectors = [load_detector(m, intra_op_threads=2) for m in models]
    cfg = load_rules_config(rules_cfg)
    eng = RuleEngine(cfg)
    tr = ByteTracker(cfg.tracker)
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    step = 1 if analyse_fps is None else max(1, int(round(fps / analyse_fps)))
    events, frames, k = [], [], 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            if k % step == 0:
                t = int(k / fps * time_scale * 1e9)
                dets = tr.update(Detections.merge([d.detect([img])[0] for d in detectors]), t)
                frames.append((t, dets))
                events += eng.update("cam", t, dets, image=img)
            k += 1
    finally:
        cap.release()
    assert k > 0, f"could not decode {video}"
    return events + eng.close(), frames


@pytest.mark.slow
@pytest.mark.models
def test_real_hard_hat_clip_one_event_that_ends_when_the_hat_goes_on(shared_media):
    """industrial_worker_helmet_clip.mp4: bare-headed 0-10 s, hat on from ~10 s. Later the detector (trained on
    motorcycle helmets) calls two white hard hats "no_helmet" for ~2.5 s around 15 s: frame by frame that is a
    false alarm; the dwell time keeps it from becoming an event."""
    video = shared_media / "C_hardhat" / "industrial_worker_helmet_clip.mp4"
    cfg = {"zones": [{"id": "site", "source": "cam", "rules": [{"type": "no_hard_hat", "min_duration_s": 4, "end_after_s": 3}]}]}
    events, frames = _replay(video, ["helmet", "coco_yolov5n"], cfg, analyse_fps=2)
    starts = [e for e in events if e.phase == "start"]
    ends = [e for e in events if e.phase == "end"]
    assert len(starts) == 1, [(e.phase, e.at_ns / 1e9) for e in events]
    assert starts[0].start_ns <= 4e9 and starts[0].at_ns <= 10e9
    assert len(ends) == 1 and ends[0].id == starts[0].id
    assert ends[0].end_ns <= 11e9 and ends[0].at_ns <= 14e9 and ends[0].attributes["end_reason"] == "cleared"
    # frame by frame, "no_helmet" boxes do appear after the hat is on: the rule is what keeps precision
    late_bare = sum(1 for t, d in frames if t > 12e9 and len(d.with_label("no_helmet")))
    assert late_bare >= 1


@pytest.mark.slow
@pytest.mark.models
def test_real_fire_clip_confirms_within_seconds_and_stays_one_incident(shared_media):
    video = shared_media / "B_fire_smoke" / "flames_closeup.mp4"
    cfg = {"zones": [{"id": "all", "source": "cam", "rules": [{"type": "fire_smoke"}]}]}
    events, _ = _replay(video, ["fire_smoke"], cfg, analyse_fps=2)
    fire = [e for e in events if e.type == "fire"]
    assert [e.phase for e in fire if e.phase != "update"] == ["start", "end"]
    assert fire[0].start_ns <= 1e9 and fire[0].at_ns <= 5e9
    assert fire[-1].attributes["end_reason"] == "stream ended"  # never cleared while the flames burn
    assert fire[0].severity in ("high", "critical")  # a close-up covers most of the frame


CARPARK_BAYS = [[0, 340], [430, 298], [490, 340], [0, 412]]  # the front row of bays, 640x480 frame
CARPARK_DRIVE_LANE = [[0, 412], [490, 345], [560, 362], [515, 480], [0, 480]]


@pytest.mark.slow
@pytest.mark.models
def test_real_carpark_timelapse_parked_row_blocks_drive_lane_stays_clear(shared_media):
    """carpark_timelapse_nf.mp4 (8.1 s time-lapse of a day): the front row fills from ~2 s and is empty again by
    8 s; the drive lane only sees a van pass. One video second is taken as 10 minutes."""
    video = shared_media / "D_parking_lanes" / "carpark_timelapse_nf.mp4"
    rule = {"type": "fire_lane_blocked", "min_duration_s": 600, "grace_s": 300, "clear_after_s": 120}
    cfg = {"tracker": {"lost_buffer_s": 150},
           "zones": [{"id": "bays", "source": "cam", "polygon_px": CARPARK_BAYS, "rules": [rule]},
                     {"id": "drive", "source": "cam", "polygon_px": CARPARK_DRIVE_LANE, "rules": [rule]}]}
    events, _ = _replay(video, ["coco_yolov5n"], cfg, time_scale=600)
    assert [e for e in events if e.zone_id == "drive"] == []
    bays = [e for e in events if e.zone_id == "bays"]
    starts = [e for e in bays if e.phase == "start"]
    ends = [e for e in bays if e.phase == "end"]
    assert 1 <= len(starts) <= 3 and len(ends) == len(starts)
    minute = 60e9
    assert all(e.start_ns >= 18 * minute for e in starts)  # the row is empty for the first ~2 video seconds
    assert all(e.attributes["end_reason"] == "lane clear" and e.end_ns <= 79 * minute for e in ends)  # empty at the end
    assert all(e.attributes["occupant_kinds"] == ["vehicle"] for e in starts)


def test_the_documented_example_config_is_valid():
    import yaml

    from seawatch.vision import config as config_module

    doc = config_module.__doc__
    example = doc[doc.index("Example (YAML)::") + len("Example (YAML)::"):]
    cfg = load_rules_config(yaml.safe_load(example))
    assert [z.id for z in cfg.zones] == ["yard", "hard-hat-area", "lane-north", "wind-farm-safety"]
    eng = RuleEngine(cfg)
    assert set(eng.source_ids) == {"cam-quay-1", "cam-yard-2", "drone-1"}
    assert [type(r).__name__ for r in eng.rules_for("cam-quay-1")] == ["FireSmokeRule", "HardHatRule"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 8.0), st.lists(st.tuples(st.sampled_from([FIRE, SMOKE, PERSON, NOHAT, HAT, CAR, VESSEL]),
                                                                    st.integers(0, 3), st.floats(0.2, 1.0)), max_size=6)),
                min_size=1, max_size=60))
def test_event_sequences_are_well_formed_for_any_detection_stream(stream):
    """Whatever the detections: each incident is start, updates, end with seq 0, 1, 2..., times ordered."""
    zones = [
        {"source": SRC, "id": "all", "rules": [{**FIRE_ZONE["rules"][0], "min_duration_s": 1, "min_hits": 2},
                                                {**HAT_ZONE["rules"][0], "min_duration_s": 1, "cooldown_s": 5},
                                                {"type": "vessel_in_zone", "min_duration_s": 2, "end_after_s": 3}]},
        {"source": SRC, **{**LANE, "rules": [{**LANE["rules"][0], "min_duration_s": 3, "grace_s": 2, "clear_after_s": 2}]}},
    ]
    eng = RuleEngine(load_rules_config({"events": {"update_interval_s": 5}, "zones": zones}))
    t = 0.0
    events = []
    for gap, objs in stream:
        t += gap
        items = []
        for cls, slot, conf in objs:
            x = 100 + 220 * slot
            box = [x, 350, x + 100, 700] if cls in (PERSON, CAR) else [x + 30, 350, x + 70, 395]
            items.append((cls, box, conf, 10 * cls + slot))
        events += eng.update(SRC, ns(t), D(*items), frame_size_px=FRAME)
    events += eng.close()
    by_id: dict[str, list] = {}
    for e in events:
        by_id.setdefault(e.id, []).append(e)
    for evs in by_id.values():
        assert [e.seq for e in evs] == list(range(len(evs)))
        assert evs[0].phase == "start" and evs[-1].phase == "end" and all(e.phase == "update" for e in evs[1:-1])
        assert all(a.at_ns <= b.at_ns for a, b in zip(evs, evs[1:]))
        assert evs[-1].start_ns <= evs[-1].end_ns <= evs[-1].at_ns
        assert all(e.start_ns <= e.at_ns for e in evs)


def test_bare_headed_count_for_still_images():
    from seawatch.vision.config import HardHatRuleConfig
    from seawatch.vision.rules import assign_heads, bare_headed

    d = D(*worker(1, 100, False), *worker(2, 300, True), *worker(3, 500, None), *worker(4, 700, None, h=50),
          (NOHAT, [900, 100, 940, 145], 0.7))  # a bare head with no person box
    idx = bare_headed(d)
    assert d.label[idx].tolist() == ["person", "person", "no_helmet"]  # worker 1, tall head-less worker 3, the lone head
    assert len(bare_headed(d, HardHatRuleConfig(person_without_helmet_box="ignore"))) == 2
    # nested people: a head goes to the smaller (nearer) person box that holds it in its top part
    owner = assign_heads(np.array([[0, 0, 400, 800], [100, 50, 200, 300]]), np.array([[130, 50, 170, 90], [180, 700, 200, 720]]), 0.4)
    assert owner.tolist() == [1, -1]
    # a close-up (a portrait, a worker near the camera): the head fills half the person box, its centre below the
    # top 40 %, its crown inside it; a helmet there belongs to that person, who is then not counted bare
    close = D((PERSON, [66, 0, 179, 168], 0.62), (HAT, [51, 5, 185, 161], 0.6))
    assert assign_heads(close.xyxy_px[:1], close.xyxy_px[1:], 0.4).tolist() == [0]
    assert len(bare_headed(close)) == 0
    # a head on the person's chest level is not its head
    assert assign_heads(np.array([[0, 0, 100, 300]]), np.array([[30, 130, 70, 170]]), 0.4).tolist() == [-1]
