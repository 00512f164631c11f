"""Regressions of the event-rule audit (s17/rules): dwell timing at a low analysis rate, track hand-over, geo-zone
anchors, frozen fire sources, helmet ownership, and the identity rules' hysteresis and track carry-over."""

from __future__ import annotations

import numpy as np
import pytest

from seawatch.vision.identity.fusion import GeoTrack, TrackIdentity
from seawatch.vision.identity.rules import UNIDENTIFIED_VESSEL, IdentityRules
from seawatch.vision.rules import HELD_BELOW, assign_heads
from seawatch.vision.zones import Zone, anchor_points, zone_anchor_points
from test_rules import FRAME, HAT, HAT_ZONE, NOHAT, PERSON, SRC, VESSEL, D, engine, grid, ns, phases, run, worker

# ------------------------------------------------------------------------------ #5 dwell vs analysis interval


@pytest.mark.parametrize("dt_s", [0.5, 1.9, 2.5, 4.0])
def test_hard_hat_dwell_does_not_restart_between_frames_further_apart_than_grace(dt_s):
    """grace_s is 2 s: frames 2.5 or 4 s apart that all show the bare head are one continuous violation."""
    times = [round(k * dt_s, 6) for k in range(int(30 / dt_s) + 1)]
    evs = run(engine(HAT_ZONE), times, lambda t: D(*worker(1, 200, hat=False)))
    assert phases(evs) == [("start", "no_hard_hat")]
    assert evs[0].start_ns == 0 and evs[0].at_ns == ns(min(t for t in times if t >= 5.0))


@pytest.mark.parametrize("dt_s", [5.0, 6.0, 12.0])
def test_vessel_dwell_at_a_low_analysis_rate(dt_s):
    evs = run(engine({"id": "fairway", "rules": [{"type": "vessel_in_zone"}]}),  # T 30 s, grace 5 s
              [k * dt_s for k in range(int(120 / dt_s) + 1)], lambda t: D((VESSEL, [100, 100, 300, 200], 0.9, 3)))
    assert phases(evs) == [("start", "vessel_in_zone")] and evs[0].start_ns == 0


def test_absence_is_measured_from_the_first_frame_that_lacked_the_violation():
    """At 2.5 s a frame: one frame without the bare head (2.5 s of evidence of absence > grace) restarts the dwell;
    the frame before it does not count as absence."""
    gone_at_5 = lambda t: D() if t == 5.0 else D(*worker(1, 200, hat=False))  # noqa: E731
    evs = run(engine(HAT_ZONE), [k * 2.5 for k in range(13)], gone_at_5)
    assert phases(evs) == [("start", "no_hard_hat")] and evs[0].start_ns == ns(7.5) and evs[0].at_ns == ns(12.5)


# -------------------------------------------------------------------------- #3 heir only for absent tracks


def test_a_new_track_does_not_inherit_the_cooldown_of_a_subject_still_in_view():
    def scene(t):
        items = worker(1, 200, hat=t >= 10.0)  # worker 1 puts the hat on at 10 s and stays in view
        if 15.0 <= t <= 40.0:
            items += worker(2, 320, hat=False)  # worker 2, a new track, bare-headed beside
        return D(*items)
    evs = run(engine(HAT_ZONE), grid(0, 50, 5), scene)
    starts = [e for e in evs if e.phase == "start"]
    assert [(e.track_ids, e.start_ns, e.at_ns) for e in starts] == [((1,), 0, ns(5)), ((2,), ns(15), ns(20))]


def test_a_new_track_does_not_continue_the_open_incident_of_a_subject_still_in_view():
    scene = lambda t: D(*worker(1, 200, hat=t >= 10.0), *(worker(2, 320, hat=False) if t >= 11.0 else ()))  # noqa: E731
    evs = run(engine(HAT_ZONE), grid(0, 30, 5), scene)
    by_id: dict = {}
    for e in evs:
        by_id.setdefault(e.id, []).append(e)
    first, second = sorted(by_id.values(), key=lambda es: es[0].at_ns)
    assert [e.phase for e in first] == ["start", "end"] and first[-1].track_ids == (1,) and first[-1].end_ns == ns(9.8)
    assert first[0].track_ids == (1,) and second[0].phase == "start" and second[0].track_ids == (2,)
    assert second[0].start_ns == ns(11) and second[0].at_ns == ns(16)


def test_a_vessel_still_tracked_outside_the_zone_keeps_its_subject():
    """Boat 1 leaves the zone (still tracked); boat 2 enters where boat 1 was: boat 2 is its own subject."""
    zone = {"id": "berth", "polygon_px": [[0, 0], [500, 0], [500, 800], [0, 800]],
            "rules": [{"type": "vessel_in_zone", "min_duration_s": 10, "grace_s": 5, "end_after_s": 5, "cooldown_s": 60}]}

    def frame(t):
        items = [(VESSEL, [260, 480, 340, 520], 0.8, 1) if t < 20 else (VESSEL, [560, 480, 640, 520], 0.8, 1)]
        if t >= 21:
            items.append((VESSEL, [262, 480, 342, 520], 0.8, 2))
        return D(*items)
    starts = [e for e in run(engine(zone), grid(0, 40, 1), frame) if e.phase == "start"]
    assert [(e.track_ids, e.start_ns) for e in starts] == [((1,), 0), ((2,), ns(21))]


# ---------------------------------------------------------------------------------- #6 anchors of vessels


class FlatSea:
    """Camera 20 m above the sea at (53.5 N, 8.5 E) looking north; horizon at image row 300, 0.05 deg per row."""

    def locate(self, xy):
        xy = np.asarray(xy, float).reshape(-1, 2)
        dep = np.radians((xy[:, 1] - 300.0) * 0.05)
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.where(dep > 0, 20.0 / np.tan(dep), np.nan)
        return np.stack([53.5 + dist / 111_320.0, 8.5 + (xy[:, 0] - 500.0) * 1e-6, np.full(len(xy), 5.0)], axis=1)


def test_geo_zone_tests_a_vessel_at_its_waterline_not_its_box_centre():
    lat0, lat1 = 53.5 + 1000 / 111_320, 53.5 + 3000 / 111_320  # a fairway 1 to 3 km out
    zone = {"id": "fairway", "polygon_lonlat": [[8.49, lat0], [8.51, lat0], [8.51, lat1], [8.49, lat1]],
            "rules": [{"type": "vessel_in_zone", "min_duration_s": 5}]}
    box = [420, 262, 580, 321]  # waterline at row 321 (1.09 km); the box centre is above the horizon
    eng = engine(zone)
    evs = []
    for t in grid(0, 20, 2):
        evs += eng.update(SRC, ns(t), D((VESSEL, box, 0.9, 5)), locator=FlatSea(), frame_size_px=FRAME)
    assert phases(evs) == [("start", "vessel_in_zone")] and evs[0].at_ns == ns(5)


def test_zone_anchor_points_per_zone_kind():
    d = D((VESSEL, [0, 0, 10, 20]), (PERSON, [0, 0, 10, 20]), (NOHAT, [0, 0, 10, 20]))
    geo = Zone.from_lonlat("g", [[0, 0], [1, 0], [1, 1]])
    pix = Zone.from_pixels("p", [[0, 0], [1, 0], [1, 1]])
    np.testing.assert_allclose(zone_anchor_points(pix, d), [[5, 20], [5, 20], [5, 10]])  # a vessel's waterline
    np.testing.assert_allclose(zone_anchor_points(geo, d), [[5, 20], [5, 20], [5, 20]])  # where it meets the ground
    np.testing.assert_allclose(zone_anchor_points(geo, d, {"vessel": "centre"})[0], [5, 10])  # the zone's override
    np.testing.assert_allclose(anchor_points(d), zone_anchor_points(pix, d))


def test_identity_watch_zone_tests_the_waterline():
    from seawatch.vision.config import load_rules_config
    from seawatch.vision.vessel_identity import VesselIdentityStage

    lat0, lat1 = 53.5 + 1000 / 111_320, 53.5 + 3000 / 111_320
    cfg = load_rules_config({"zones": [{"id": "fairway", "source": SRC, "rules": [{"type": "vessel_in_zone"}],
                                        "polygon_lonlat": [[8.49, lat0], [8.51, lat0], [8.51, lat1], [8.49, lat1]]}]})
    stage = VesselIdentityStage(zones=cfg.zones)
    assert stage._zones_of(SRC, D((VESSEL, [420, 262, 580, 321], 0.9, 5)), FlatSea(), 0) == (["fairway"], [True])


# ------------------------------------------------------------------------------------- #4 frozen fire source

LAMP = ("fire", [600, 100, 630, 140], 0.4)


def _lamp(t, extra_at=None):
    items = [(0, LAMP[1], LAMP[2])]
    if extra_at is not None and abs(t - extra_at) < 1e-6:
        items.append((0, [100, 600, 140, 660], 0.3))
    return D(*items)


def test_a_frozen_lamp_does_not_lend_its_votes_and_age_to_one_later_box():
    evs = run(engine({"id": "yard", "rules": [{"type": "fire_smoke"}]}), grid(0, 1830, 2), lambda t: _lamp(t, 1800.0))
    assert evs == []


def test_a_real_fire_next_to_a_frozen_lamp_is_dated_from_its_own_first_box():
    from test_rules import flame

    scene = lambda t: D(*((0, LAMP[1], LAMP[2]),), *((flame(t),) if t >= 600 else ()))  # noqa: E731
    evs = run(engine({"id": "yard", "rules": [{"type": "fire_smoke"}]}), grid(0, 620, 2), scene)
    assert phases(evs)[:1] == [("start", "fire")]
    assert evs[0].start_ns == ns(600) and ns(603) <= evs[0].at_ns <= ns(605)


def test_an_open_fire_incident_ends_when_its_evidence_freezes():
    from test_rules import FIRE_ZONE, flame

    # flickering flames 0-20 s, then a box frozen in place (the fire is out, a glowing sign remains) for a minute
    scene = lambda t: D(flame(t) if t < 20 else (0, [400, 420, 460, 500], 0.8))  # noqa: E731
    evs = run(engine(FIRE_ZONE), grid(0, 80, 5), scene)
    assert phases(evs) == [("start", "fire"), ("end", "fire")]
    end = evs[1]
    assert end.attributes["end_reason"] == "evidence static"
    assert ns(19) <= end.end_ns <= ns(21) and end.at_ns <= ns(23)


# ---------------------------------------------------------------------------- #1 #2 hard hat: who is who


def test_a_worker_whose_person_box_comes_and_goes_is_one_incident():
    def every_other(t):
        items = worker(1, 200, hat=False)
        return D(*(items[1:] if int(round(t * 10)) % 2 else items))  # person box missed on odd frames
    evs = run(engine(HAT_ZONE), grid(0, 20, 10), every_other)
    assert phases(evs) == [("start", "no_hard_hat")] and evs[0].track_ids == (1,) and evs[0].start_ns == 0
    # the person box lost for good at 8 s, the bare head still seen: still the same worker, one incident
    lost = lambda t: D(*(worker(1, 200, hat=False) if t < 8 else worker(1, 200, hat=False)[1:]))  # noqa: E731
    evs = run(engine(HAT_ZONE), grid(0, 25, 10), lost)
    assert phases(evs) == [("start", "no_hard_hat")] and evs[0].track_ids == (1,)


def test_a_bare_head_seen_before_its_person_box_is_the_same_worker():
    head_first = lambda t: D(*(worker(1, 200, hat=False)[1:] if t < 3 else worker(1, 200, hat=False)))  # noqa: E731
    evs = run(engine(HAT_ZONE), grid(0, 20, 10), head_first)
    assert phases(evs) == [("start", "no_hard_hat")] and evs[0].start_ns == 0


A = (PERSON, [100, 400, 200, 700], 0.9, 1)
A_HEAD = (NOHAT, [130, 400, 170, 445], 0.7, 101)
B = (PERSON, [170, 390, 272, 700], 0.9, 2)  # overlaps A; B's helmet crown lies on A's right edge
B_HAT = (HAT, [180, 390, 220, 436], 0.8, 102)


def test_each_person_gets_its_own_head_not_a_neighbours_helmet():
    d = D(A, A_HEAD, B, B_HAT)
    assert assign_heads(d.xyxy_px[[0, 2]], d.xyxy_px[[1, 3]], 0.4, d.confidence[[1, 3]]).tolist() == [0, 1]
    starts = [e for e in run(engine(HAT_ZONE), grid(0, 10, 5), lambda t: D(A, A_HEAD, B, B_HAT)) if e.phase == "start"]
    assert [(e.track_ids, e.attributes["evidence"]) for e in starts] == [((1,), "bare_head")]


def test_a_helmet_held_at_the_chest_is_not_worn():
    P = (PERSON, [300, 400, 400, 700], 0.9, 3)
    head = (NOHAT, [330, 400, 370, 445], 0.6, 103)
    held = (HAT, [325, 470, 375, 510], 0.75, 104)  # crown at 28 % of the body height
    d = D(P, head, held)
    assert assign_heads(d.xyxy_px[:1], d.xyxy_px[1:], 0.4, d.confidence[1:]).tolist() == [0, HELD_BELOW]
    evs = run(engine(HAT_ZONE), grid(0, 10, 5), lambda t: D(P, head, held))
    assert phases(evs) == [("start", "no_hard_hat")] and evs[0].track_ids == (3,)


def test_helmet_and_no_helmet_boxes_of_one_head_are_one_head():
    """The head detector may give one head both labels: the more confident decides, as before; the other box is
    neither a second head of that person nor a head of its own."""
    P = (PERSON, [300, 400, 400, 700], 0.9, 3)
    hat = (HAT, [330, 400, 370, 445], 0.8, 103)
    bare = (NOHAT, [331, 401, 371, 446], 0.5, 105)
    d = D(P, hat, bare)
    assert assign_heads(d.xyxy_px[:1], d.xyxy_px[1:], 0.4, d.confidence[1:]).tolist() == [0, 0]
    assert run(engine(HAT_ZONE), grid(0, 10, 5), lambda t: D(P, hat, bare)) == []


# ------------------------------------------------------------------------------------ #7 #8 identity rules


def _identity_run(rules, t_end, tid_at, kind_at, fps=2):
    out = []
    for k in range(int(t_end * fps) + 1):
        t = k / fps
        tid = tid_at(t)
        kind = kind_at(t)
        ident = TrackIdentity(tid, ns(t), kind, 0.6 if kind == "ais" else 0.0, mmsi=244000001 if kind == "ais" else None)
        out += rules.update(ns(t), [GeoTrack(tid, ns(t), 53.5, 8.5)], {tid: ident}, None)
    return out


def test_one_spurious_association_neither_ends_nor_restarts_unidentified_vessel():
    rules = IdentityRules(unidentified_after_s=60, clear_after_s=10)
    out = _identity_run(rules, 250, lambda t: 7, lambda t: "ais" if t == 100.0 else "none")
    assert [(d.type, d.phase, d.time_ns, d.started_ns) for d in out] == [(UNIDENTIFIED_VESSEL, "start", ns(60), 0)]
    # an association every 45 s for one frame does not keep the vessel from being unidentified
    rules = IdentityRules(unidentified_after_s=60, clear_after_s=10)
    out = _identity_run(rules, 200, lambda t: 7, lambda t: "ais" if t > 0 and t % 45 == 0 else "none")
    assert [(d.phase, d.time_ns) for d in out] == [("start", ns(60))]


def test_identification_lasting_clear_after_s_ends_and_resets():
    rules = IdentityRules(unidentified_after_s=60, clear_after_s=10)
    out = _identity_run(rules, 200, lambda t: 7, lambda t: "ais" if 100 <= t < 120 else "none")
    assert [(d.phase, d.time_ns, d.started_ns) for d in out] == [
        ("start", ns(60), 0), ("end", ns(110), 0), ("start", ns(180), ns(120))]


def test_unidentified_vessel_carries_over_a_tracker_id_change():
    rules = IdentityRules(unidentified_after_s=60, clear_after_s=10, track_lost_s=30)
    out = _identity_run(rules, 600, lambda t: 100 + int(t // 50), lambda t: "none")
    assert [(d.phase, d.track_id, d.time_ns, d.started_ns) for d in out] == [("start", 100, ns(60), 0)]
    rules = IdentityRules(unidentified_after_s=60, clear_after_s=10, track_lost_s=30)
    out = _identity_run(rules, 299.5, lambda t: 100 + int(t // 100), lambda t: "none")
    out += [d for d in rules.update(ns(400), [], {}, None)]  # lost for good
    assert [(d.phase, d.track_id) for d in out] == [("start", 100), ("end", 100)]
    assert out[-1].track_ids == (100, 101, 102)


def test_a_new_track_far_away_or_beside_a_visible_vessel_is_another_vessel():
    rules = IdentityRules(unidentified_after_s=60, clear_after_s=10, track_lost_s=30)
    out = []
    for k in range(0, 201):
        t = k * 0.5
        tracks = [GeoTrack(1, ns(t), 53.5, 8.5)]
        if t >= 40:
            tracks.append(GeoTrack(2, ns(t), 53.5, 8.5001))  # 7 m away, but track 1 is still in view
        if t >= 40:
            tracks.append(GeoTrack(3, ns(t), 53.6, 8.5))  # 11 km away
        out += rules.update(ns(t), tracks, {g.track_id: TrackIdentity(g.track_id, ns(t), "none", 0.0) for g in tracks}, None)
    starts = sorted((d.track_id, d.started_ns, d.track_ids) for d in out if d.phase == "start")
    assert starts == [(1, 0, (1,)), (2, ns(40), (2,)), (3, ns(40), (3,))]  # each its own vessel, own timer
