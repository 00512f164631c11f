"""A fire lane's pixel-change check under a schedule: what it learnt of the empty lane carries over the hours its
rule is off, so a crate put down in the lane while the rule was off is still a crate when the rule arms (judged from
then, with the rule's dwell); a model started afresh at arming learnt the crate as the empty lane and never saw it."""

from __future__ import annotations

import datetime as dt

import numpy as np

from test_rules import D, LANE, SRC, engine, phases

T0_S = int(dt.datetime(2026, 11, 30, 6, 50, tzinfo=dt.timezone.utc).timestamp())  # a Monday, 06:50 UTC
NS = 10**9


def _run(crate_from_s: float, crate_to_s: float = 1e9, until_s: float = 12 * 60, step_s: float = 5.0):
    zone = {**LANE, "rules": [{**LANE["rules"][0], "min_duration_s": 20,
                               "stationary_foreground": {"short_tau_s": 2, "long_tau_s": 600},
                               "schedule": [{"from": "07:00", "to": "19:00"}]}]}
    eng = engine(zone)
    rng = np.random.default_rng(0)
    base = np.full((800, 1000, 3), 90, np.uint8)
    base[:, ::50] = 140  # some texture
    evs = []
    for k in range(int(until_s / step_s) + 1):
        t = k * step_s
        img = np.clip(base.astype(np.int16) + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
        if crate_from_s <= t < crate_to_s:
            img[500:650, 380:520] = (30, 160, 200)  # a pallet nobody has a detector for
        evs += eng.update(SRC, (T0_S + int(t)) * NS + int((t % 1) * NS), D(), image=img)
    return evs


def test_a_crate_put_down_while_the_lane_rule_was_off_is_raised_once_it_is_armed():
    evs = _run(crate_from_s=3 * 60)  # 06:53, the rule arms at 07:00
    assert phases(evs) == [("start", "fire_lane_blocked")], [(e.phase, (e.at_ns // NS - T0_S) / 60) for e in evs]
    (start,) = evs
    armed_s = 10 * 60
    # judged from the arming frame: its dwell of 20 s (plus a frame or two for the short-term model)
    assert armed_s + 20 <= start.at_ns / NS - T0_S <= armed_s + 35
    assert start.attributes["occupant_kinds"] == ["unknown_object"]


def test_nothing_while_off_and_an_empty_lane_stays_quiet_when_armed():
    assert _run(crate_from_s=2 * 60, crate_to_s=8 * 60) == []  # came and went while the rule was off
