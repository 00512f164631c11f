"""A schedule on a ``vessel_in_zone`` rule also gates the identity stage's alerts in that zone.

"Unidentified vessels only at night" is the schedule a port asks for first: the identity stage's
``unidentified_vessel`` (and ``ais_dark``) watch the zones of ``vessel_in_zone`` rules, and a zone whose every such
rule has a schedule is watched only while one of them is armed, by the frame's capture time. An alert open when the
zone disarms ends at the edge with the schedule's reason; a boat already there when it arms is judged from the arming
edge with the usual delay. Through ``Pipeline.process`` with a calibrated camera, a stub detector and a real AIS log.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_pipeline_identity import CAM, CALIB, STEP_NS, T0_NS, _ahead, _box_at, _nmea, _square

S = 10**9


class _Boat:
    name, labels = "boxes", ("vessel",)

    def detect(self, images):
        from seawatch.vision.detections import Detections

        box = np.asarray([_box_at(_ahead(800.0, 0.0))], np.float32)
        return [Detections(box, np.full(1, 0.9, np.float32), np.zeros(1, np.int32), self.labels, model=self.name)
                for _ in images]


def _run(tmp_path, schedule, **identity):
    from seawatch.vision.pipeline import Pipeline, load_pipeline_config

    ais = tmp_path / "ais.nmea"  # the one AIS vessel is 600 m across the boat's line of sight: not this boat
    _nmea(ais, 211000002, _ahead(800.0, 600.0), "SEEADLER", -20.0, 200.0)
    rule = {"type": "vessel_in_zone", "min_duration_s": 1.0}
    if schedule is not None:
        rule["schedule"] = schedule
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://cam/quay", "models": ["boxes"], "calibration": CALIB}],
        "zones": [{"id": "fairway", "source": "quay", "polygon_lonlat": _square(CAM[0], CAM[1], 3000.0),
                   "rules": [rule]}],
        "ais": [str(ais)], "identity": {"unidentified_after_s": 5.0, **identity},
    })
    pipe = Pipeline(cfg, [], detectors={"boxes": _Boat()})
    image = np.zeros((720, 1280, 3), np.uint8)
    events = []
    for k in range(int(150 * S / STEP_NS)):  # 00:00:00 to 00:02:30 UTC, the boat in the zone throughout
        events += pipe.process("quay", T0_NS + k * STEP_NS, image)
    return events + pipe.close()


def test_unidentified_vessel_only_while_its_zone_is_armed(tmp_path):
    events = _run(tmp_path, {"windows": [{"from": "00:01", "to": "00:02"}]})  # armed 00:01-00:02 UTC
    unident = [e for e in events if e.type == "unidentified_vessel"]
    assert [e.phase for e in unident] == ["start", "end"], [(e.type, e.phase, (e.at_ns - T0_NS) / S) for e in events]
    start, end = unident
    # judged from the arming edge (the boat was there all along): raised unidentified_after_s after 00:01
    assert start.start_ns == T0_NS + 60 * S and (start.at_ns - T0_NS) / S == pytest.approx(65.0, abs=0.51)
    assert end.end_ns == T0_NS + 120 * S  # at the edge, though the boat stays
    assert end.attributes["end_reason"] == "schedule: disarmed at 00:02 UTC"
    # the rule's own events follow the same schedule
    zone = [e for e in events if e.type == "vessel_in_zone"]
    assert zone and all(60 * S <= e.start_ns - T0_NS < 120 * S for e in zone)


def test_without_a_schedule_the_zone_is_watched_all_the_time(tmp_path):
    events = _run(tmp_path, None)
    unident = [e for e in events if e.type == "unidentified_vessel"]
    assert unident and unident[0].phase == "start" and (unident[0].at_ns - T0_NS) / S == pytest.approx(5.0, abs=0.51)
    assert not any(e.phase == "end" and e.attributes.get("end_reason", "").startswith("schedule") for e in unident)


def test_a_site_raises_unidentified_vessels_at_its_own_severity(tmp_path):
    """``identity.severity``: a wind farm where any boat without AIS matters makes it high (the operator page sounds
    its alarm for high and critical); an unknown type or severity is a config error naming the field."""
    from seawatch.vision.config import ConfigError
    from seawatch.vision.pipeline import load_pipeline_config

    events = _run(tmp_path, None, severity={"unidentified_vessel": "high"})
    unident = [e for e in events if e.type == "unidentified_vessel"]
    assert unident and {e.severity for e in unident} == {"high"}
    (tmp_path / "default").mkdir()
    assert all(e.severity == "medium" for e in _run(tmp_path / "default", None) if e.type == "unidentified_vessel")
    for bad, field in (({"unidentified_vessel": "urgent"}, "identity.severity.unidentified_vessel"),
                       ({"fire": "high"}, "identity.severity.fire")):
        with pytest.raises(ConfigError) as err:
            load_pipeline_config(None, {"identity": {"severity": bad}})
        assert field in str(err.value), str(err.value)
