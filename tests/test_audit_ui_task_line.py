"""The line a drone on a task gets on the operator UI's map: from the drone to the target while it starts, flies
there and holds over it; once it is flying home (task "returning") the line must not keep running back from the
drone to the target it has left (it read as "heading there"): the target stays marked, without the leg."""

from __future__ import annotations

import time

import pytest

from conftest import serve_in_thread
from seawatch.service.app import create_app
from seawatch.service.auth import hash_api_key
from seawatch.service.config import load_config
from test_service_ui import _browser, _playwright, _wait, open_page  # noqa: F401

KEY = "audit-task-line-operator-0123456789"
DRONE_AT = (52.8350, 5.6900)
TARGET = (52.8320, 5.6777)
PATROL = [[52.8385, 5.699], [52.8385, 5.707], [52.8425, 5.707], [52.8425, 5.699], [52.8385, 5.699]]


class FakeFleet:
    """The fleet side of an API-only app: one drone whose task state the test sets."""

    def __init__(self) -> None:
        self.task_state = "flying"

    def drones(self):
        now = time.time_ns()
        return [{"source_id": "patrol-1", "drone_id": "patrol-1", "kind": "drone", "state": "connected", "mode": "AUTO",
                 "armed": True, "lat_deg": DRONE_AT[0], "lon_deg": DRONE_AT[1], "alt_rel_m": 40.0, "heading_deg": 60.0,
                 "battery_pct": 80, "patrol": "harbour", "patrol_state": "interrupted", "patrol_reason": "by a task",
                 "current_waypoint": 2, "waypoints": 4, "route": PATROL, "simulated": True,
                 "task": {"kind": "investigate", "lat_deg": TARGET[0], "lon_deg": TARGET[1], "alt_m": 40.0,
                          "hold_s": 60.0, "event_id": None, "state": self.task_state, "reason": None,
                          "requested_by": "user op", "started_ns": now - 60_000_000_000, "ended_ns": None,
                          "held_s": 60.0 if self.task_state == "returning" else None}}]

    def ais(self):
        return []

    def vessels(self, limit):
        return []


def _route(page):
    return page.evaluate("window.seawatch.map.data.drones[0].route")


@pytest.mark.parametrize("task_state, line", [("flying", True), ("holding", True), ("returning", False)])
def test_task_line_only_while_the_drone_goes_to_the_target(tmp_path, task_state, line):
    fleet = FakeFleet()
    fleet.task_state = task_state
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")},
                            "auth": {"api_keys": [{"name": "crew", "role": "operator", "key_sha256": hash_api_key(KEY)}]}})
    with serve_in_thread(create_app(cfg, fleet=fleet)) as port, _playwright() as p:
        page, errors = open_page(_browser(p), f"http://127.0.0.1:{port}/#key={KEY}")
        _wait(page, "window.seawatch && window.seawatch.map && window.seawatch.map.data.drones.length === 1")
        route = _route(page)
        leg = [list(DRONE_AT), list(TARGET)]
        if line:
            assert route == leg
        else:
            assert route != leg and list(DRONE_AT) not in route, route  # no leg from the drone back to the target
            assert route == [list(TARGET)]  # the target stays marked
            assert route != PATROL  # the interrupted patrol's route is not what it flies either
        assert errors == []
