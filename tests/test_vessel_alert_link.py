"""One vessel, one alert: the same boat's identity alerts on two sources are linked (``vision/identity/link.py``).

Two calibrated fixed cameras look at the same water: ``quay`` (20 m up, looking 30 deg, the camera of
``test_pipeline_identity``) and ``pier``, 300 m along the quay, looking 10 deg with a wider lens. Stand-in detectors
put each camera's box where a boat's known position projects in its picture; an AIS log is heard (one vessel far
away), so a boat that matches nothing is ``unidentified_vessel`` on each camera that sees it, through
``Pipeline.process``. The second camera's alert is linked to the first (``same_vessel_as``, ``vessel_link``), the
first gets an ``update`` with ``also_seen_by``; a boat 400 m across the line of sight is another boat; a far boat (its
ellipse hundreds of metres long) is not linked; one boat fitting two others is linked to the likelier and names the
other; ``ais_dark`` links only for the same MMSI.
"""

from __future__ import annotations

import numpy as np
import pytest

from seawatch.drone.config import CalibrationConfig
from seawatch.drone.geometry import geod
from seawatch.vision.detections import Detections
from seawatch.vision.events import Event, GeoPosition
from seawatch.vision.identity.link import IdentityLinkConfig, VesselAlertLinker, compare
from test_pipeline_identity import CALIB, CAM, STEP_NS, T0_NS, _ahead, _nmea, _square

pytest.importorskip("pyais")

S = 10**9
PIER = _ahead(0.0, 300.0)  # 300 m to the right of the quay camera, along the quay
CALIB_PIER = {"camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 90.0},
              "surveyed": {"lat_deg": PIER[0], "lon_deg": PIER[1], "alt_m": 20.0, "pan_deg": 10.0, "tilt_deg": -10.0}}


def _box_in(calib: dict, lat_lon) -> tuple[float, float, float, float]:
    """A 60 x 20 px box whose bottom centre (the waterline the stage locates) is where ``lat_lon`` projects."""
    cam = CalibrationConfig.model_validate(calib).build()
    px, ok = cam.locator.project(lat_lon[0], lat_lon[1], 0.0, cam.pose)
    assert ok[0], f"{lat_lon} is not in the picture"
    x, y = px[0]
    assert 30 <= x <= 1250 and 20 <= y <= 720, (x, y)
    return (float(x) - 30, float(y) - 20, float(x) + 30, float(y))


def _beyond(origin, target, extra_m: float) -> tuple[float, float]:
    """``extra_m`` farther than ``target`` on the line of sight from ``origin`` (lat, lon)."""
    az, _, dist = geod().inv(origin[1], origin[0], target[1], target[0])
    lon, lat, _ = geod().fwd(origin[1], origin[0], az, dist + extra_m)
    return float(lat), float(lon)


def _apart_m(a: GeoPosition, b: GeoPosition) -> float:
    return float(geod().inv(a.lon_deg, a.lat_deg, b.lon_deg, b.lat_deg)[2])


class _Boxes:
    """A stand-in detector: the same boxes in every frame, each from its first frame on (``(box, first_frame)``)."""

    labels = ("vessel",)

    def __init__(self, name: str, boxes) -> None:
        self.name, self.boxes, self.frames = name, list(boxes), 0

    def detect(self, images):
        out = []
        for _ in images:
            boxes = [b for b, first in self.boxes if self.frames >= first]
            self.frames += 1
            n = len(boxes)
            out.append(Detections(np.asarray(boxes, np.float32).reshape(n, 4), np.full(n, 0.9, np.float32),
                                  np.zeros(n, np.int32), self.labels, model=self.name))
        return out


def _run(tmp_path, quay_sees, pier_sees, seconds: float = 12.0, link: dict | None = None,
         pier_from_s: dict[int, float] | None = None) -> list[Event]:
    """Both cameras' frames, interleaved (quay first at each time), through one pipeline; every event returned.
    ``pier_from_s``: the pier camera sees its boat number i only from that second on."""
    from seawatch.vision.pipeline import Pipeline, load_pipeline_config

    ais = tmp_path / "ais.nmea"  # AIS is heard: one vessel, 3 km out, not any of these boats
    _nmea(ais, 211000999, _ahead(3000.0, -800.0), "FARAWAY", -20.0, 200.0)
    rule = [{"type": "vessel_in_zone", "min_duration_s": 1.0}]
    identity = {"unidentified_after_s": 5.0} | ({"link": link} if link is not None else {})
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://cam/quay", "models": ["quay_boxes"], "calibration": CALIB},
                    {"id": "pier", "url": "rtsp://cam/pier", "models": ["pier_boxes"], "calibration": CALIB_PIER}],
        "zones": [{"id": "fairway", "source": "quay", "polygon_lonlat": _square(CAM[0], CAM[1], 3000.0), "rules": rule},
                  {"id": "fairway", "source": "pier", "polygon_lonlat": _square(CAM[0], CAM[1], 3000.0), "rules": rule}],
        "ais": [str(ais)], "identity": identity,
    })
    late = {i: int(v * S / STEP_NS) for i, v in (pier_from_s or {}).items()}
    detectors = {"quay_boxes": _Boxes("quay_boxes", [(_box_in(CALIB, p), 0) for p in quay_sees]),
                 "pier_boxes": _Boxes("pier_boxes", [(_box_in(CALIB_PIER, p), late.get(i, 0))
                                                     for i, p in enumerate(pier_sees)])}
    pipe = Pipeline(cfg, [], detectors=detectors)
    image = np.zeros((720, 1280, 3), np.uint8)
    events: list[Event] = []
    for k in range(int(seconds * S / STEP_NS)):
        for source in ("quay", "pier"):
            events += pipe.process(source, T0_NS + k * STEP_NS, image)
    return events + pipe.close()


def _alerts(events, source: str, phase: str | None = None) -> list[Event]:
    return [e for e in events if e.type == "unidentified_vessel" and e.source_id == source
            and (phase is None or e.phase == phase)]


def test_the_same_boat_seen_by_two_cameras_is_one_vessel_the_second_alert_is_linked(tmp_path):
    """The pier camera places the boat 60 m farther down its line of sight than the quay camera does (its range is
    uncertain by ±66 m there): both raise unidentified_vessel, the pier's is linked to the quay's with the distance
    between the two positions, and the quay's alert gets an update saying the pier saw it too; the ends keep it."""
    boat = _ahead(500.0, 0.0)
    events = _run(tmp_path, [boat], [_beyond(PIER, boat, 60.0)])
    quay, pier = _alerts(events, "quay"), _alerts(events, "pier")
    assert [e.phase for e in quay] == ["start", "update", "end"], [(e.source_id, e.phase) for e in quay + pier]
    assert [e.phase for e in pier] == ["start", "end"]
    first, update, first_end = quay
    second, second_end = pier
    assert (second.at_ns - T0_NS) / S == pytest.approx(5.0, abs=0.51) and second.at_ns == first.at_ns
    link = second.attributes["same_vessel_as"]
    assert link["event_id"] == first.id and link["source_id"] == "quay" and link["type"] == "unidentified_vessel"
    assert link["start_ns"] == first.start_ns
    assert link["distance_m"] == pytest.approx(60.0, abs=1.0)
    assert link["distance_m"] == pytest.approx(_apart_m(first.geo, second.geo), abs=0.1)
    # the combined sigma along the displacement: the pier's ±66 m range and the quay's ±46 m at 31 deg to it
    assert 60.0 < link["sigma_m"] < 90.0 and link["sigmas"] < 1.0 and link["seen_ago_s"] == 0.0
    assert "others" not in link
    assert second.attributes["vessel_link"] == first.id
    assert "same_vessel_as" not in first.attributes
    # the first alert, still open, says who else saw it: an update right after the linked start, then its end
    assert events.index(update) == events.index(second) + 1
    assert update.id == first.id and update.seq == 1 and update.at_ns == second.at_ns
    assert update.attributes["also_seen_by"] == [{"event_id": second.id, "source_id": "pier",
                                                  "distance_m": link["distance_m"], "sigma_m": link["sigma_m"],
                                                  "at_ns": second.at_ns}]
    assert update.attributes["vessel_link"] == first.id
    assert first_end.seq == 2 and first_end.attributes["also_seen_by"] == update.attributes["also_seen_by"]
    assert second_end.seq == 1 and second_end.attributes["same_vessel_as"] == link
    # searching for the first alert's id finds both (the store searches every attribute's text)
    assert all(first.id in str(e.attributes) for e in (update, second, second_end))


def test_two_boats_400_m_apart_across_the_line_of_sight_are_two_alerts(tmp_path):
    """The pier camera's first boat lies at the quay's boat's range from the quay, 400 m across the quay camera's line
    of sight: both bearings rule that out (the combined sigma in that direction is about 10 m), so its alert stands
    alone. From 2 s on the pier camera also sees the quay's boat (30 m beyond it): that later alert is the one linked."""
    boat, other = _ahead(500.0, 0.0), _ahead(500.0, 400.0)
    events = _run(tmp_path, [boat], [other, _beyond(PIER, boat, 30.0)], pier_from_s={1: 2.0})
    quay, pier = _alerts(events, "quay", "start"), _alerts(events, "pier", "start")
    assert len(quay) == 1 and len(pier) == 2
    alone, same = sorted(pier, key=lambda e: e.at_ns)
    assert (alone.at_ns - T0_NS) / S == pytest.approx(5.0, abs=0.51)  # raised first: judged by the gate alone
    assert _apart_m(quay[0].geo, alone.geo) == pytest.approx(400.0, abs=2.0)
    assert not any(k in e.attributes for e in events if e.id == alone.id
                   for k in ("same_vessel_as", "also_seen_by", "vessel_link"))
    assert same.attributes["same_vessel_as"]["event_id"] == quay[0].id
    assert same.attributes["same_vessel_as"]["distance_m"] == pytest.approx(30.0, abs=1.0)
    (update,) = _alerts(events, "quay", "update")
    assert [s["event_id"] for s in update.attributes["also_seen_by"]] == [same.id]


def test_a_far_boat_is_not_linked_though_its_positions_agree(tmp_path):
    """1.5 km out both cameras place the boat within ±440-480 m along their lines of sight: close enough to raise
    unidentified_vessel on each, too long an ellipse to tell this boat from another on the same bearing, so no link
    (``max_semi_major_m`` 250 m). The same run with the bound lifted links them: the bound is what says no."""
    boat = _ahead(1500.0, 0.0)
    events = _run(tmp_path, [boat], [boat])
    quay, pier = _alerts(events, "quay", "start"), _alerts(events, "pier", "start")
    assert len(quay) == len(pier) == 1
    assert quay[0].geo.semi_major_m > 250.0 and pier[0].geo.semi_major_m > 250.0
    assert not any(k in e.attributes for e in _alerts(events, "quay") + _alerts(events, "pier")
                   for k in ("same_vessel_as", "also_seen_by", "vessel_link"))
    lifted = _run(tmp_path, [boat], [boat], link={"max_semi_major_m": 2000.0})
    pier = _alerts(lifted, "pier", "start")
    assert pier[0].attributes["same_vessel_as"]["source_id"] == "quay"


def test_one_boat_fitting_two_alerts_is_linked_to_the_likelier_and_names_the_other(tmp_path):
    """The quay camera sees two boats 50 m apart on the pier camera's line of sight; the pier camera sees one boat
    (the other hidden behind it) 10 m from the nearer: both quay alerts fit it, the nearer is linked, the farther
    named in ``others``; only the linked one gets the update."""
    near = _ahead(500.0, 0.0)
    far = _beyond(PIER, near, 50.0)
    events = _run(tmp_path, [near, far], [_beyond(PIER, near, 10.0)])
    quay = [e for e in _alerts(events, "quay", "start")]
    (second,) = _alerts(events, "pier", "start")
    assert len(quay) == 2
    by_dist = sorted(quay, key=lambda e: _apart_m(e.geo, second.geo))
    link = second.attributes["same_vessel_as"]
    assert link["event_id"] == by_dist[0].id and link["distance_m"] == pytest.approx(10.0, abs=1.0)
    (other,) = link["others"]
    assert other["event_id"] == by_dist[1].id and other["source_id"] == "quay"
    assert other["distance_m"] == pytest.approx(40.0, abs=1.5) and other["sigmas"] >= link["sigmas"]
    updates = _alerts(events, "quay", "update")
    assert [u.id for u in updates] == [by_dist[0].id]


# -- the linker alone: ais_dark, the time slack, ended alerts ---------------------------------------------------
def _ev(eid: str, source: str, typ: str, at_s: float, pos: GeoPosition, mmsi: str = "", phase: str = "start",
        track: int = 1) -> Event:
    attrs = {"condition_key": mmsi} if mmsi else {}
    t = T0_NS + int(at_s * S)
    return Event(id=eid, type=typ, severity="high", phase=phase, source_id=source, start_ns=t, at_ns=t,
                 end_ns=t if phase == "end" else None, track_ids=(track,), attributes=attrs, geo=pos)


def _pos(fwd_m: float, right_m: float = 0.0, major_m: float = 20.0) -> GeoPosition:
    lat, lon = _ahead(fwd_m, right_m)
    return GeoPosition(lat, lon, major_m, 3.0, 30.0)


def test_ais_dark_links_only_the_same_mmsi():
    linker = VesselAlertLinker()
    assert linker.link(_ev("a", "quay", "ais_dark", 0, _pos(500), mmsi="211000001")) is None
    assert linker.link(_ev("b", "pier", "ais_dark", 1, _pos(505), mmsi="211000002")) is None  # another transponder
    assert linker.link(_ev("c", "drone", "unidentified_vessel", 1, _pos(505))) is None  # another kind of alert
    got = linker.link(_ev("d", "drone", "ais_dark", 2, _pos(510), mmsi="211000001"))
    assert got is not None and got.first_id == "a" and got.first_open and got.vessel_link == "a"


def test_time_between_the_positions_is_slack_at_the_maximum_speed_and_an_ended_alert_links_for_a_while():
    """A boat the quay camera lost 20 s ago, 200 m farther across its line of sight (±3 m): 10 m/s x 20 s + 15 m
    hull slack cover it; 60 s after the quay's alert ended, the window (120 s) still holds; after it, nothing."""
    cfg = IdentityLinkConfig()
    linker = VesselAlertLinker(cfg)
    linker.link(_ev("a", "quay", "unidentified_vessel", 0, _pos(500)))
    linker.observe("quay", T0_NS + 10 * S, {1: _pos(500)})
    linker.ended("a", T0_NS + 10 * S)
    got = linker.link(_ev("b", "pier", "unidentified_vessel", 30, _pos(500, 200)))
    assert got is not None and got.first_id == "a" and not got.first_open
    assert got.attributes["same_vessel_as"]["seen_ago_s"] == 20.0
    assert compare(_pos(500), _pos(500, 230), 20.0, cfg)[2] > cfg.sigmas  # 15 m beyond the slack: 5 sigma across
    linker.ended("b", T0_NS + 30 * S)
    linker.observe("quay", T0_NS + 200 * S, {})  # the window is over: the ended alerts are forgotten
    assert linker.link(_ev("c", "drone", "unidentified_vessel", 200, _pos(500))) is None
