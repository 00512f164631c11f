"""State a service running for weeks must not pile up: AIS rows of vessels long gone, the tracker ids of one long
incident, MQTT's open-incident sets when an incident ends under another label than it started with."""

from __future__ import annotations

import numpy as np

from seawatch.streams.ais import AisPosition
from seawatch.vision.config import load_rules_config
from seawatch.vision.detections import Detections
from seawatch.vision.rules import MAX_TRACK_IDS, RuleEngine
from seawatch.vision.vessel_identity import IdentityConfig, VesselIdentityStage

S = 10**9
T0 = 1_700_000_000 * S


class _Locator:
    def locate(self, px):
        px = np.asarray(px, float)
        return np.stack([53.5 + px[:, 1] * 1e-6, 8.5 + px[:, 0] * 1e-6, np.full(len(px), 5.0)], axis=1)


def _one_vessel(tid: int, labels=("vessel",), cls: int = 0, x: float = 100.0) -> Detections:
    return Detections(np.array([[x, 100, x + 100, 150]], np.float32), np.array([0.9], np.float32),
                      np.array([cls], np.int32), labels, np.array([tid], np.int64))


def test_ais_rows_of_vessels_long_gone_are_pruned_by_the_running_identity_stage():
    stage = VesselIdentityStage(IdentityConfig(ocr={"enabled": False}))  # ais_max_age_s 600
    n = 3000  # one new vessel every 60 s for 50 h, each heard 3 times and gone
    for k in range(n):
        t = T0 + k * 60 * S
        for j in range(3):
            stage.table.update(AisPosition(200_000_000 + k, 1, t + j * 20 * S, "tag_block", 53.5, 8.5, 0.0, 0.0,
                                           None, 0, None, "A"))
        if k % 5 == 0:  # an analysed frame every 5 min
            stage.update("cam", t, _one_vessel(k), _Locator())
    # what is kept: the vessels heard in the last ais_max_age_s (plus at most one pruning interval of frame time)
    assert len(stage.table) <= 600 / 60 + 5 + 2, len(stage.table)
    live = stage.table.snapshot()
    assert {r.mmsi for r in live} <= {200_000_000 + k for k in range(n - 12, n)} and len(live) >= 9


def test_one_long_incident_lists_its_first_and_latest_tracker_ids_only():
    zone = {"id": "quay", "source": "cam", "polygon_px": [[0, 0], [1000, 0], [1000, 800], [0, 800]],
            "rules": [{"type": "vessel_in_zone", "min_duration_s": 5, "grace_s": 5, "end_after_s": 60}]}
    eng = RuleEngine(load_rules_config({"zones": [zone]}))
    t, events = 0, []
    n_ids = 3 * MAX_TRACK_IDS  # a moored boat the tracker re-acquires under a new id again and again
    for tid in range(1, n_ids + 1):
        for _ in range(3):
            events += eng.update("cam", t, _one_vessel(tid, x=400.0))
            t += 10 * S
    starts = [e for e in events if e.type == "vessel_in_zone" and e.phase == "start"]
    assert len(starts) == 1  # one incident all along
    last = [e for e in events if e.id == starts[0].id][-1]
    assert len(last.track_ids) == MAX_TRACK_IDS
    assert last.track_ids[0] == 1 and set(range(n_ids - MAX_TRACK_IDS + 2, n_ids + 1)) <= set(last.track_ids)


def test_mqtt_forgets_an_incident_that_ends_under_another_label():
    from seawatch.service.config import MqttConfig
    from seawatch.service.mqtt import MqttPublisher

    mq = MqttPublisher(MqttConfig(enabled=True))  # never connected: nothing is sent, the counts are still kept
    for k in range(50):
        ev = {"id": f"ev{k}", "source_id": "cam", "labels": ["ship"], "phase": "start"}
        mq.on_live_message({"kind": "event", "event": ev})
        mq.on_live_message({"kind": "event", "event": {**ev, "labels": ["boat"], "phase": "update"}})
        mq.on_live_message({"kind": "event", "event": {**ev, "labels": ["boat"], "phase": "end"}})
    assert not mq._open.get(("cam", "ship")) and not mq._open.get(("cam", "boat"))
