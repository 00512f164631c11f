"""Event value: validation, JSON round trip, review audit trail, JSON-lines sink with snapshots."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from seawatch.errors import InputError
from seawatch.vision.events import ClipRef, Event, GeoPosition, JsonLinesSink, MemorySink, Sink, Snapshot, read_json_lines


def make(**kw) -> Event:
    base = dict(id=Event.new_id(), type="fire", severity="high", phase="start", source_id="cam-1", start_ns=10**18,
                at_ns=10**18 + 3 * 10**9)
    base.update(kw)
    return Event(**base)


def test_round_trip_full_event():
    img = np.zeros((48, 64, 3), np.uint8)
    img[10:20, 10:30] = (0, 0, 255)
    ev = make(
        phase="end", seq=3, zone_id="yard", end_ns=10**18 + 9 * 10**9, track_ids=(4, 2), labels=("fire", "smoke"),
        scores=(0.9, np.float32(0.5)), attributes={"area_frac": np.float64(0.02), "boxes": np.array([1, 2]), "bad": float("nan")},
        snapshot=Snapshot("cam-1", 10**18, (1.0, 2.0, 30.0, 40.0), 12.5, image=img),
        clip=ClipRef("cam-1", 10**18 - 5 * 10**9, 10**18 + 14 * 10**9, 5 * 10**9, 5 * 10**9),
        geo=GeoPosition(54.1, 7.2, 12.0, 4.0, 200.0),
    )
    assert ev.track_ids == (4, 2) and ev.geo_reason is None and ev.geo.orientation_deg == pytest.approx(20.0)
    d = ev.to_dict()
    text = json.dumps(d)  # JSON-able, numpy scalars included
    back = Event.from_dict(json.loads(text))
    assert back == ev  # snapshot pixels are not part of equality
    assert back.attributes == {"area_frac": 0.02, "boxes": [1, 2], "bad": None}
    assert ev.duration_s == pytest.approx(9.0)
    # pixels travel only on request
    assert "jpeg_b64" not in d["snapshot"]
    with_img = Event.from_dict(json.loads(ev.to_json(include_jpeg=True)))
    assert with_img.snapshot.jpeg[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"phase": "begin"}, "phase"),
        ({"severity": "urgent"}, "severity"),
        ({"review_status": "maybe"}, "review_status"),
        ({"labels": ("fire",), "scores": ()}, "labels"),
        ({"phase": "end"}, "end_ns"),
        ({"end_ns": 5}, "before"),
        ({"geo_reason": None}, "geo_reason"),
    ],
)
def test_invalid_events_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        make(**kw)


def test_geo_position_validation():
    with pytest.raises(ValueError):
        GeoPosition(91.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        GeoPosition(0.0, 0.0, 1.0, 2.0)
    with pytest.raises(ValueError):
        GeoPosition(float("nan"), 0.0, 1.0, 1.0)


def test_review_status_audit_trail_is_appended_not_overwritten():
    ev = make()
    acked = ev.with_review("acknowledged", 10**18 + 10**10, by="op1")
    done = acked.with_review("confirmed", 10**18 + 2 * 10**10, by="op2", note="real fire, brigade called")
    assert ev.review_status == "new" and ev.review_history == ()
    assert done.review_status == "confirmed"
    assert [(r.status, r.by) for r in done.review_history] == [("acknowledged", "op1"), ("confirmed", "op2")]
    assert Event.from_dict(done.to_dict()).review_history == done.review_history
    with pytest.raises(InputError):
        ev.with_review("ignored", 0)


def test_from_dict_errors_name_the_field():
    d = make().to_dict()
    del d["source_id"]
    with pytest.raises(InputError, match="source_id"):
        Event.from_dict(d)
    d = make().to_dict()
    d["start_ns"] = "soon"
    with pytest.raises(InputError):
        Event.from_dict(d)


def test_json_lines_sink_stream_file_and_snapshot_folder(tmp_path):
    buf = io.StringIO()
    sink = JsonLinesSink(buf)
    assert isinstance(sink, Sink) and isinstance(MemorySink(), Sink)
    a, b = make(), make(type="smoke", seq=1, phase="update")
    sink.emit(a)
    sink.emit(b)
    lines = buf.getvalue().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["fire", "smoke"] and sink.count == 2

    img = np.full((32, 32, 3), 128, np.uint8)
    ev = make(snapshot=Snapshot("cam-1", 1, (0.0, 0.0, 10.0, 10.0), 1.0, image=img))
    path = tmp_path / "out" / "events.jsonl"
    fs = JsonLinesSink(path, snapshot_dir=tmp_path / "snaps")
    fs.emit(ev)
    fs.emit(a)
    fs.close()
    back = read_json_lines(path)
    assert [e.id for e in back] == [ev.id, a.id]
    snap_path = back[0].snapshot.uri
    assert snap_path.endswith(f"{ev.id}_0.jpg") and open(snap_path, "rb").read(2) == b"\xff\xd8"


def test_read_json_lines_reports_the_bad_line(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text(make().to_json() + "\n\n{not json\n")
    with pytest.raises(InputError, match=r"e\.jsonl:3"):
        read_json_lines(p)
    with pytest.raises(InputError, match="cannot read"):
        read_json_lines(tmp_path / "missing.jsonl")
