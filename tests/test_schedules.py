"""Alert schedules (``vision/schedule.py``): a rule armed only in weekly windows on the site's wall clock, judged by
each frame's capture time.

Window logic against zoneinfo (midnight crossing, the spring-forward and fall-back days of Europe/Amsterdam), the
pipeline itself (stub detector -> real ByteTracker -> real rules) fed frames before, inside and after a window,
the engine ending an open incident at the edge with its reason and judging a worker already there from the arming
edge, config errors naming the field from ``load_config`` / ``seawatch config check``, and ``GET /api/sources``.
"""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from seawatch.errors import ConfigError  # noqa: E402
from seawatch.vision.config import ScheduleConfig, load_rules_config  # noqa: E402
from seawatch.vision.detections import Detections  # noqa: E402
from seawatch.vision.rules import RuleEngine  # noqa: E402

AMS = ZoneInfo("Europe/Amsterdam")
S = 10**9
SHIFT = [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "19:00"}]


def local_ns(text: str, tz=AMS, fold: int = 0) -> int:
    """``2026-12-07T07:00`` on the wall clock of ``tz`` -> UTC ns."""
    return int(datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold).timestamp()) * S


def utc_ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * S


def sched(windows, tz: str | None = "Europe/Amsterdam"):
    return ScheduleConfig.model_validate({"windows": windows, "tz": tz}).build()


# ------------------------------------------------------------------------------------------------ window logic

# 2026-12-07 is a Monday; 2026-12-11 a Friday
@pytest.mark.parametrize("local, armed, change", [
    ("2026-12-07T06:59:59", False, "2026-12-07T07:00:00"),
    ("2026-12-07T07:00:00", True, "2026-12-07T19:00:00"),   # the edge itself is armed: [from, to)
    ("2026-12-07T18:59:59", True, "2026-12-07T19:00:00"),
    ("2026-12-07T19:00:00", False, "2026-12-08T07:00:00"),
    ("2026-12-11T19:30:00", False, "2026-12-14T07:00:00"),  # Friday evening: next Monday
    ("2026-12-12T12:00:00", False, "2026-12-14T07:00:00"),  # Saturday: not a listed day
])
def test_weekday_window(local, armed, change):
    s = sched(SHIFT)
    assert s.state(local_ns(local)) == (armed, local_ns(change))
    assert s.describe() == "Mon-Fri 07:00-19:00 Europe/Amsterdam"


@pytest.mark.parametrize("local, armed, change", [
    ("2026-12-11T21:59:00", False, "2026-12-11T22:00:00"),
    ("2026-12-11T23:30:00", True, "2026-12-12T06:00:00"),   # Friday's night runs into Saturday
    ("2026-12-12T05:59:59", True, "2026-12-12T06:00:00"),
    ("2026-12-12T06:00:00", False, "2026-12-14T22:00:00"),  # Saturday and Sunday nights are not listed
    ("2026-12-14T00:30:00", False, "2026-12-14T22:00:00"),  # Monday 00:30: Sunday started no window
])
def test_window_past_midnight_belongs_to_the_day_it_starts(local, armed, change):
    s = sched([{"days": ["mon-fri"], "from": "22:00", "to": "06:00"}])
    assert s.state(local_ns(local)) == (armed, local_ns(change))


def test_night_window_on_the_dst_days_follows_the_wall_clock():
    """Every night 22:00-06:00 Amsterdam: 7 h on the spring-forward night, 9 h on the fall-back night, 8 h else."""
    night = sched([{"from": "22:00", "to": "06:00"}])
    for eve, hours in (("2026-03-28", 7), ("2026-03-27", 8), ("2026-10-24", 9), ("2026-10-25", 8)):
        start = local_ns(f"{eve}T22:00:00")
        armed, end = night.state(start)
        assert armed and end - start == hours * 3600 * S, (eve, (end - start) / 3600e9)
        nxt = (datetime.fromisoformat(eve) + timedelta(days=1)).date().isoformat()
        assert end == local_ns(f"{nxt}T06:00:00")
        assert datetime.fromtimestamp(end / S, AMS).strftime("%H:%M") == "06:00"


def test_day_window_keeps_local_hours_across_the_change():
    """07:00-19:00 local is 06:00-18:00 UTC in winter and 05:00-17:00 UTC in summer, both sides of each change."""
    s = sched([{"from": "07:00", "to": "19:00"}])
    assert s.state(utc_ns("2026-03-28T05:59:59")) == (False, utc_ns("2026-03-28T06:00:00"))  # Saturday, CET
    assert s.state(utc_ns("2026-03-29T05:00:00")) == (True, utc_ns("2026-03-29T17:00:00"))   # Sunday, CEST
    assert s.state(utc_ns("2026-10-25T05:30:00")) == (False, utc_ns("2026-10-25T06:00:00"))  # Sunday, CET again


def test_edge_in_the_skipped_hour_falls_when_the_clocks_jump():
    """2026-03-29 Amsterdam: 02:00 CET jumps to 03:00 CEST (01:00 UTC). A window 02:30-05:00 arms at the jump; a
    window 02:10-02:50, wholly inside the skipped hour, does not happen that day."""
    s = sched([{"from": "02:30", "to": "05:00"}])
    assert s.state(utc_ns("2026-03-29T00:59:59")) == (False, utc_ns("2026-03-29T01:00:00"))
    assert s.state(utc_ns("2026-03-29T01:00:00")) == (True, utc_ns("2026-03-29T03:00:00"))  # ends 05:00 CEST
    assert datetime.fromtimestamp(utc_ns("2026-03-29T01:00:00") / S, AMS).strftime("%H:%M %Z") == "03:00 CEST"
    inside = sched([{"from": "02:10", "to": "02:50"}])
    assert inside.state(utc_ns("2026-03-29T00:00:00")) == (False, local_ns("2026-03-30T02:10:00"))
    ends_in_gap = sched([{"from": "01:00", "to": "02:30"}])  # ends when the clocks jump
    assert ends_in_gap.state(utc_ns("2026-03-29T00:30:00")) == (True, utc_ns("2026-03-29T01:00:00"))


def test_edge_in_the_repeated_hour_is_its_first_reading():
    """2026-10-25 Amsterdam: 03:00 CEST goes back to 02:00 CET, so 02:00-02:59 is read twice. A window 02:30-05:00
    arms at the first 02:30 (00:30 UTC), once, and is an hour longer than on other days."""
    s = sched([{"from": "02:30", "to": "05:00"}])
    assert s.state(utc_ns("2026-10-25T00:29:59")) == (False, utc_ns("2026-10-25T00:30:00"))
    armed, end = s.state(utc_ns("2026-10-25T00:30:00"))
    assert armed and end == utc_ns("2026-10-25T04:00:00")  # 05:00 CET
    assert s.state(utc_ns("2026-10-25T01:30:00")) == (True, end)  # the second 02:30 changes nothing
    short = sched([{"from": "01:00", "to": "02:30"}])  # ends at the first 02:30
    assert short.state(utc_ns("2026-10-25T00:00:00")) == (True, utc_ns("2026-10-25T00:30:00"))
    assert short.state(utc_ns("2026-10-25T00:30:00"))[0] is False


def test_touching_windows_are_one_span_and_an_all_day_schedule_never_changes():
    s = sched([{"days": ["mon"], "from": "20:00", "to": "24:00"}, {"days": ["tue"], "from": "00:00", "to": "04:00"}])
    assert s.state(local_ns("2026-12-07T21:00:00")) == (True, local_ns("2026-12-08T04:00:00"))
    always = sched([{"from": "00:00", "to": "24:00"}], tz=None)
    assert always.state(utc_ns("2026-10-25T00:30:00")) == (True, None)
    assert always.describe() == "every day 00:00-24:00 UTC"


def test_site_timezone_applies_unless_the_schedule_names_its_own():
    cfg = load_rules_config({"site": {"timezone": "Europe/Amsterdam"}, "zones": [{"id": "z", "source": "cam", "rules": [
        {"type": "vessel_in_zone", "schedule": SHIFT},
        {"type": "vessel_in_zone", "schedule": {"tz": "Asia/Kolkata", "windows": SHIFT}}]}]})
    ams, kol = (r.schedule.build(cfg.site.timezone) for r in cfg.zones[0].rules)
    assert ams.state(local_ns("2026-12-07T07:00:00"))[0] is True
    assert kol.state(local_ns("2026-12-07T07:00:00", ZoneInfo("Asia/Kolkata")))[0] is True
    assert kol.state(local_ns("2026-12-07T07:00:00"))[0] is True  # 11:30 in Kolkata
    assert kol.state(local_ns("2026-12-07T15:00:00"))[0] is False  # 19:30 in Kolkata
    assert kol.describe() == "Mon-Fri 07:00-19:00 Asia/Kolkata"


# ------------------------------------------------------------------------------------------------ config errors

@pytest.mark.parametrize("schedule, site, needle", [
    ([{"days": ["mon", "funday"], "from": "07:00", "to": "19:00"}], None,
     "zones[0].rules[0].no_hard_hat.schedule.windows[0].days: unknown day 'funday'"),
    ([{"from": "25:00", "to": "19:00"}], None,
     "zones[0].rules[0].no_hard_hat.schedule.windows[0].from: '25:00' is not a time of day"),
    ([{"from": "07:00", "to": "19:60"}], None, "schedule.windows[0].to: '19:60' is not a time of day"),
    ([{"from": 420, "to": "19:00"}], None, "YAML reads an unquoted 07:00 as 420): write \"07:00\""),
    ([{"from": "07:00", "to": "07:00"}], None, "schedule.windows[0]: from and to are both 07:00"),
    ({"tz": "Europe/Amsterdm", "windows": SHIFT}, None, "schedule.tz: unknown time zone 'Europe/Amsterdm'"),
    ([], None, "schedule.windows: "),
    (SHIFT, {"timezone": "europe/amsterdam"}, "site.timezone: unknown time zone 'europe/amsterdam'"),
    (SHIFT, {"timezone": "../../etc/passwd"}, "site.timezone: unknown time zone"),
])
def test_invalid_schedules_are_config_errors_naming_the_field(schedule, site, needle):
    from seawatch.service.config import load_config

    data = {"sources": [{"id": "cam", "url": "cam.mp4"}],
            "zones": [{"id": "z", "source": "cam", "rules": [{"type": "no_hard_hat", "schedule": schedule}]}]}
    if site is not None:
        data["site"] = site
    with pytest.raises(ConfigError) as err:
        load_config(data=data)
    assert needle in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match="schedule|site"):  # `seawatch run`'s loader reports it too
        load_rules_config({k: v for k, v in data.items() if k != "sources"})


def test_config_check_names_the_bad_schedule_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{id: cam, url: cam.mp4}]\nsite: {timezone: Europe/Amsterdam}\nzones:\n"
                   "  - id: hard-hat-area\n    source: cam\n    rules:\n      - type: no_hard_hat\n"
                   "        schedule: [{days: [mon, tue, wed, thu, fri], from: \"07:00\", to: \"25:00\"}]\n")
    r = subprocess.run([sys.executable, "-m", "seawatch", "config", "check", str(bad)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{bad}: zones[0].rules[0].no_hard_hat.schedule.windows[0].to: '25:00' is not a time of day" in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text(bad.read_text().replace("25:00", "19:00"))
    r = subprocess.run([sys.executable, "-m", "seawatch", "config", "check", str(good)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------------ the pipeline

LABELS = ("person", "no_helmet", "vessel")
PERSON_XYXY = [400.0, 300.0, 480.0, 560.0]
HEAD_XYXY = [425.0, 300.0, 455.0, 335.0]


class BareHeadedWorker:
    """A detector that sees one worker without a hard hat standing in the yard in every frame."""

    def __init__(self) -> None:
        from seawatch.vision.detector import DetectorSettings

        self.settings = DetectorSettings(conf=0.25, iou=0.45, imgsz=640, max_det=300)

    def detect(self, images):
        xyxy = np.array([PERSON_XYXY, HEAD_XYXY], np.float32)
        return [Detections(xyxy, np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int32), LABELS, None, "stub")
                for _ in images]


def test_pipeline_raises_only_inside_the_window_and_ends_the_open_incident_at_the_edge():
    """A bare-headed worker in the hard-hat area from Monday 06:59 to 07:03 Amsterdam, frames every 0.5 s through the
    pipeline (stub detector, real tracker, real rules), the rule armed 07:00-07:02: nothing before 07:00 although
    the worker has been there a minute, one incident from 07:00 starting after the rule's 5 s dwell, ended at 07:02
    with the schedule's reason, nothing after."""
    from seawatch.vision.pipeline import Pipeline, load_pipeline_config

    cfg = load_pipeline_config(None, {
        "sources": [{"id": "yard-cam", "url": "yard.mp4", "models": ["stub"]}],
        "site": {"timezone": "Europe/Amsterdam"},
        "events": {"update_interval_s": 0},
        "zones": [{"id": "hard-hat-area", "source": "yard-cam",
                   "polygon_px": [[100, 200], [900, 200], [900, 700], [100, 700]],
                   "rules": [{"type": "no_hard_hat", "min_duration_s": 5, "end_after_s": 5, "grace_s": 2,
                              "schedule": [{"days": ["mon-fri"], "from": "07:00", "to": "07:02"}]}]}]})
    pipe = Pipeline(cfg, detectors={"stub": BareHeadedWorker()})
    image = np.zeros((720, 1000, 3), np.uint8)
    t0, arm, disarm, t1 = (local_ns(f"2026-12-07T{hm}:00") for hm in ("06:59", "07:00", "07:02", "07:03"))
    events = []
    for t in range(t0, t1 + 1, S // 2):
        events += [(t, ev) for ev in pipe.process("yard-cam", t, image)]
    assert [(ev.phase, ev.type) for _, ev in events] == [("start", "no_hard_hat"), ("end", "no_hard_hat")], events
    (t_start, start), (t_end, end) = events
    # judged from 07:00 with the normal 5 s dwell: no burst at the arming edge from the minute before
    assert start.start_ns == arm and t_start == start.at_ns == arm + 5 * S
    assert end.id == start.id and end.at_ns == disarm and t_end == disarm  # the first frame at the edge ends it
    assert end.attributes["end_reason"] == "schedule: disarmed at 07:02 Europe/Amsterdam"
    assert end.end_ns == disarm - S // 2  # the worker was last seen violating in the frame before the edge
    # the same morning on a Saturday: not a listed day, nothing at all
    pipe = Pipeline(cfg, detectors={"stub": BareHeadedWorker()})
    sat = local_ns("2026-12-12T06:59:00")
    assert not [ev for t in range(sat, sat + 240 * S + 1, S // 2) for ev in pipe.process("yard-cam", t, image)]


def D(*items) -> Detections:
    """items: (label index, box, track id)."""
    return Detections(np.array([it[1] for it in items], np.float32), np.full(len(items), 0.9, np.float32),
                      np.array([it[0] for it in items], np.int32), LABELS, np.array([it[2] for it in items], np.int64))


def vessel_engine(windows, tz="Europe/Amsterdam"):
    cfg = load_rules_config({"site": {"timezone": tz}, "events": {"update_interval_s": 0}, "zones": [
        {"id": "berth", "source": "cam", "rules": [
            {"type": "vessel_in_zone", "min_duration_s": 30, "end_after_s": 15, "grace_s": 5, "cooldown_s": 0,
             "schedule": windows}]}]})
    return RuleEngine(cfg)


def test_night_rule_over_the_fall_back_night_and_a_frame_gap_across_the_edge():
    """A vessel at the berth all night; the rule armed 22:00-06:00. On the fall-back night the incident runs 9 hours
    of wall time (22:00 CEST to 06:00 CET); frames stop at 05:50 and come back at 06:20: the incident ends at the
    06:00 edge (not at the frame time), stamped with the edge, and nothing restarts while disarmed."""
    eng = vessel_engine([{"from": "22:00", "to": "06:00"}])
    boat = D((2, [100, 100, 300, 200], 7))
    times = list(range(local_ns("2026-10-24T21:59:00"), local_ns("2026-10-24T22:02:00"), 10 * S))
    times += list(range(local_ns("2026-10-25T05:49:00"), local_ns("2026-10-25T05:50:01"), 10 * S))
    times += [local_ns("2026-10-25T06:20:00"), local_ns("2026-10-25T06:20:10")]
    events = [ev for t in times for ev in eng.update("cam", t, boat)]
    assert [ev.phase for ev in events] == ["start", "end"], events
    start, end = events
    assert start.start_ns == local_ns("2026-10-24T22:00:00") and start.at_ns == start.start_ns + 30 * S
    assert end.at_ns == local_ns("2026-10-25T06:00:00") == utc_ns("2026-10-25T05:00:00")
    assert end.attributes["end_reason"] == "schedule: disarmed at 06:00 Europe/Amsterdam"
    assert end.end_ns == local_ns("2026-10-25T05:50:00")
    assert end.attributes["duration_s"] == pytest.approx((end.end_ns - start.start_ns) / S)


def test_a_subject_already_there_when_the_rule_arms_is_judged_from_the_edge_each_time():
    """Re-armed after a night off, a moored boat seen all along raises once, 30 s after the arming edge, every day;
    the rule's timers do not run while it is off."""
    eng = vessel_engine([{"from": "07:00", "to": "07:05"}], tz="UTC")
    boat = D((2, [100, 100, 300, 200], 7))
    starts = []
    for day in ("2026-12-07", "2026-12-08"):
        t0 = utc_ns(f"{day}T06:50:00")
        for t in range(t0, t0 + 20 * 60 * S, 5 * S):
            starts += [ev for ev in eng.update("cam", t, boat) if ev.phase == "start"]
    assert [ev.at_ns for ev in starts] == [utc_ns("2026-12-07T07:00:30"), utc_ns("2026-12-08T07:00:30")]


def test_unscheduled_rules_are_unaffected_beside_a_scheduled_one():
    """Fire/smoke stays armed 24/7 in the same zone as a rule that is off."""
    cfg = load_rules_config({"events": {"update_interval_s": 0}, "zones": [{"id": "berth", "source": "cam", "rules": [
        {"type": "vessel_in_zone", "min_duration_s": 1, "schedule": [{"from": "07:00", "to": "19:00"}]},
        {"type": "fire_smoke", "labels": ["vessel"], "min_confidence_by_label": {}, "min_duration_s": 1, "window_frames": 3,
         "min_hits": 2,
         "static_min_iou": None}]}]})
    eng = RuleEngine(cfg)
    t0 = utc_ns("2026-12-07T23:00:00")
    events = [ev for k in range(10) for ev in eng.update("cam", t0 + k * S, D((2, [100, 100, 300, 200], 3)))]
    assert [(ev.phase, ev.type) for ev in events] == [("start", "vessel")]  # the fire_smoke rule watching "vessel"


# ------------------------------------------------------------------------------------------------ the API

def test_api_sources_list_each_rules_schedule_and_whether_it_is_armed_now(tmp_path):
    from fastapi.testclient import TestClient

    from seawatch.service.app import create_app
    from seawatch.service.auth import hash_api_key
    from seawatch.service.config import load_config

    key = "schedules-api-key-0123456789abcdef"
    now = datetime.now(AMS)
    later = (now + timedelta(hours=2)).strftime("%H:%M")
    to = (now + timedelta(hours=3)).strftime("%H:%M")
    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "ops", "role": "viewer", "key_sha256": hash_api_key(key)}]},
        "site": {"timezone": "Europe/Amsterdam"},
        "sources": [{"id": "yard-cam", "url": "yard.mp4"}],
        "zones": [
            {"id": "hard-hat-area", "source": "yard-cam", "polygon_px": [[0, 0], [100, 0], [100, 100], [0, 100]],
             "rules": [{"type": "no_hard_hat", "schedule": [{"from": later, "to": to}]}, {"type": "fire_smoke"}]},
            {"id": "yard", "source": "yard-cam",
             "rules": [{"type": "vessel_in_zone", "schedule": {"tz": "UTC", "windows": [{"from": "00:00", "to": "24:00"}]}}]}]})
    with TestClient(create_app(cfg)) as client:
        before = time.time_ns()
        src = client.get("/api/sources", headers={"X-API-Key": key}).json()[0]
    zone = next(a for a in src["areas"] if a["kind"] == "zone")
    assert zone["rules"] == ["no_hard_hat", "fire_smoke"]
    hat, fire = zone["rule_states"]
    assert (hat["armed"], hat["next_change_text"]) == (False, later)
    assert hat["schedule_text"] == f"every day {later}-{to} Europe/Amsterdam"
    assert hat["schedule"] == {"windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": later,
                                            "to": to}], "tz": "Europe/Amsterdam"}
    assert 0 < hat["next_change_ns"] - before <= 2 * 3600 * S
    assert datetime.fromtimestamp(hat["next_change_ns"] / S, AMS).strftime("%H:%M") == later
    assert (fire["armed"], fire["schedule"], fire["next_change_ns"]) == (True, None, None)
    # every zone's rules, the whole-frame zone (not drawn in the areas) too
    assert [(r["zone_id"], r["type"], r["armed"]) for r in src["zone_rules"]] == [
        ("hard-hat-area", "no_hard_hat", False), ("hard-hat-area", "fire_smoke", True), ("yard", "vessel_in_zone", True)]
    assert src["zone_rules"][2]["schedule_text"] == "every day 00:00-24:00 UTC"
