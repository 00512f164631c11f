"""ByteTracker on synthetic detections: id stability, occlusion, crossing, ids per instance, state dropping."""

from __future__ import annotations

import numpy as np
import pytest

from seawatch.errors import InputError
from seawatch.vision.config import TrackerConfig
from seawatch.vision.detections import Detections
from seawatch.vision.tracking import ByteTracker, iou_matrix, xyah_to_xyxy, xyxy_to_xyah

LABELS = ("person", "car", "truck", "helmet")
S = 1_000_000_000


def dets(boxes, conf=0.9, cls=0):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return Detections(boxes, np.broadcast_to(np.float32(conf), (n,)).copy() if np.isscalar(conf) else np.asarray(conf, np.float32),
                      np.broadcast_to(np.int32(cls), (n,)).copy() if np.isscalar(cls) else np.asarray(cls, np.int32), LABELS)


def box_at(x, y, w=40, h=100):
    return [x, y, x + w, y + h]


def test_box_conversions_round_trip():
    b = np.array([[10, 20, 50, 120], [0, 0, 1, 1]], np.float64)
    np.testing.assert_allclose(xyah_to_xyxy(xyxy_to_xyah(b)), b, atol=1e-9)
    iou = iou_matrix(b, b)
    np.testing.assert_allclose(np.diag(iou), 1.0)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 2)


def test_ids_stable_for_a_moving_object_and_input_not_mutated():
    tr = ByteTracker()
    ids = []
    for k in range(30):
        d = dets([box_at(100 + 5 * k, 200)])
        out = tr.update(d, k * S // 10)
        assert d.track_id is None  # input untouched
        ids.append(int(out.track_id[0]))
    assert ids[0] == 1 and set(ids) == {1}


def test_id_survives_short_occlusion_and_is_dropped_after_buffer():
    tr = ByteTracker(TrackerConfig(lost_buffer_s=1.0))
    t = 0
    for k in range(10):  # moving right 50 px/s at 10 fps
        out = tr.update(dets([box_at(100 + 5 * k, 200)]), t)
        t += S // 10
    assert out.track_id.tolist() == [1]
    for k in range(10, 17):  # 0.7 s occluded
        tr.update(Detections.empty(LABELS), t)
        t += S // 10
    out = tr.update(dets([box_at(100 + 5 * 17, 200)]), t)  # reappears where the motion model predicts
    assert out.track_id.tolist() == [1]
    # now vanish for longer than the buffer: the track state is dropped and a new object gets a new id
    for _ in range(15):
        t += S // 10
        tr.update(Detections.empty(LABELS), t)
    assert tr.live_track_count == 0
    t += S // 10
    out1 = tr.update(dets([box_at(100 + 5 * 17, 200)]), t)
    assert out1.track_id.tolist() == [-1]  # tentative until its second hit
    out2 = tr.update(dets([box_at(100 + 5 * 17, 200)]), t + S // 10)
    assert out2.track_id.tolist() == [2]


def test_two_crossing_objects_keep_their_ids():
    tr = ByteTracker()
    n = 40
    seen: dict[int, list[float]] = {}
    for k in range(n):
        xa = 100 + 10 * k  # moving right
        xb = 490 - 10 * k  # moving left; they overlap around k = 19..20
        out = tr.update(dets([box_at(xa, 200), box_at(xb, 210)]), k * S // 10)
        for i, tid in enumerate(out.track_id.tolist()):
            if tid >= 0:
                seen.setdefault(tid, []).append(float(out.xyxy_px[i, 0]))
    assert sorted(seen) == [1, 2]
    # id 1 was the right-mover throughout, id 2 the left-mover
    a, b = np.diff(seen[1]), np.diff(seen[2])
    assert (a > 0).all() and (b < 0).all()


def test_new_objects_get_new_ids_and_low_confidence_extends_but_never_starts():
    tr = ByteTracker()
    out = tr.update(dets([box_at(0, 0)]), 0)
    assert out.track_id.tolist() == [1]  # first frame: confirmed at once
    out = tr.update(dets([box_at(2, 0), box_at(400, 0)]), S // 10)
    assert out.track_id.tolist() == [1, -1]  # the newcomer is tentative
    out = tr.update(dets([box_at(4, 0), box_at(402, 0)]), 2 * S // 10)
    assert out.track_id.tolist() == [1, 2]
    # the first object's score drops (partial occlusion): the second stage keeps its id
    out = tr.update(dets([box_at(6, 0), box_at(404, 0)], conf=[0.2, 0.9]), 3 * S // 10)
    assert out.track_id.tolist() == [1, 2]
    # a low-confidence newcomer never starts a track
    for k in range(4, 8):
        out = tr.update(dets([box_at(800, 0)], conf=0.3), k * S // 10)
        assert out.track_id.tolist() == [-1]


def test_tracks_do_not_jump_across_labels_but_may_within_a_group():
    tr = ByteTracker()
    tr.update(dets([box_at(0, 0)], cls=0), 0)  # person
    out = tr.update(dets([box_at(0, 0)], cls=3), S // 10)  # same place, labelled helmet: a different object
    assert out.track_id.tolist() == [-1]
    tr2 = ByteTracker()
    tr2.update(dets([box_at(0, 0, 200, 100)], cls=1), 0)  # car
    out = tr2.update(dets([box_at(0, 0, 200, 100)], cls=2), S // 10)  # truck: same group
    assert out.track_id.tolist() == [1]


def test_two_instances_have_independent_counters():
    a, b = ByteTracker(), ByteTracker()
    for k in range(3):
        oa = a.update(dets([box_at(0, 0), box_at(300, 0)]), k * S)
    ob = b.update(dets([box_at(0, 0)]), 0)
    assert sorted(oa.track_id.tolist()) == [1, 2]
    assert ob.track_id.tolist() == [1]


def test_irregular_frame_times_keep_ids():
    """Processing lag: frames at irregular gaps; the Kalman step uses the real time so ids survive."""
    rng = np.random.default_rng(3)
    tr = ByteTracker(TrackerConfig(lost_buffer_s=3.0))
    t_s = 0.0
    ids = set()
    for _ in range(40):
        t_s += float(rng.uniform(0.05, 0.6))
        x = 100 + 60 * t_s  # 60 px/s
        out = tr.update(dets([box_at(x, 200, 60, 120)]), int(t_s * S))
        ids.update(out.track_id.tolist())
    assert ids == {1}


def test_empty_degenerate_and_nan_boxes_and_time_order():
    tr = ByteTracker()
    assert len(tr.update(Detections.empty(LABELS), 0)) == 0
    out = tr.update(dets([[10, 10, 10, 50], [np.nan, 0, 5, 5], box_at(50, 50)]), 1)
    assert out.track_id.tolist() == [-1, -1, -1]  # not the first frame any more: the valid box is tentative
    out = tr.update(dets([box_at(51, 50)]), 2)
    assert out.track_id.tolist() == [1]
    with pytest.raises(InputError):
        tr.update(Detections.empty(LABELS), 0)


def test_source_trackers_keep_sources_apart_and_drop_closed_ones():
    from seawatch.vision.tracking import SourceTrackers

    st = SourceTrackers()
    a = st.update("a", dets([box_at(0, 0)]), 0)
    b = st.update("b", dets([box_at(0, 0), box_at(200, 0)]), 0)
    assert a.track_id.tolist() == [1] and b.track_id.tolist() == [1, 2]
    st.close("a")
    assert "a" not in st and "b" in st
    assert st.update("a", dets([box_at(0, 0)]), 5).track_id.tolist() == [1]  # a fresh tracker


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_box = st.tuples(st.floats(-50, 600), st.floats(-50, 600), st.floats(-5, 200), st.floats(-5, 200), st.floats(0, 1), st.integers(0, 3))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 2.0), st.lists(_box, max_size=12)), min_size=1, max_size=15))
def test_random_streams_never_break_the_tracker(stream):
    """Any boxes (degenerate, overlapping, off-frame, any score) at any non-decreasing times: output aligned with
    the input and no track id given to two boxes of one frame."""
    tr = ByteTracker()
    t = 0
    for gap_s, boxes in stream:
        t += int(gap_s * S)
        if boxes:
            arr = np.array([[x, y, x + w, y + h] for x, y, w, h, _, _ in boxes], np.float32)
            d = Detections(arr, np.array([b[4] for b in boxes], np.float32), np.array([b[5] for b in boxes]), LABELS)
        else:
            d = Detections.empty(LABELS)
        out = tr.update(d, t)
        assert len(out) == len(d) and np.array_equal(out.xyxy_px, d.xyxy_px)
        ids = out.track_id[out.track_id >= 0]
        assert len(set(ids.tolist())) == len(ids)
