"""Hull OCR inside the pipeline: a rendered clip (sea frames, one boat-shaped region carrying a painted hull
number, moving and degraded per frame) goes through ``Pipeline.process`` with a calibrated fixed camera; the
vessel identity stage chooses crops, reads them with the real offline OCR engine (tiny PP-OCRv6) and the
events carry the read and its registry match. The vessel detector is a stand-in that reports the boat's
rendered box (no real detector is trained on these drawings).

Also: the identity rules raise ``registry_alert`` and ``identity_mismatch`` on OCR evidence alone, the OCR
worker never stalls the frame loop (a slow engine makes it drop, with a counter), bad crops are skipped, and
``identity.ocr.enabled: false`` turns reading off.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from seawatch.errors import InputError
from seawatch.vision.detections import Detections
from seawatch.vision.events import MemorySink
from seawatch.vision.pipeline import Pipeline, load_pipeline_config

pytest.importorskip("rapidocr")
pytest.importorskip("tinyocr")
pytest.importorskip("PIL")

from seawatch.vision.identity import render as R  # noqa: E402
from seawatch.vision.identity.ocr import FrameRead  # noqa: E402
from seawatch.vision.identity.track_ocr import TrackOcr, crop_quality  # noqa: E402

T0_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
STEP_NS = 500_000_000
CALIB = {
    "camera": {"width_px": 1280, "height_px": 720, "hfov_deg": 60.0},
    "surveyed": {"lat_deg": 53.55, "lon_deg": 8.58, "alt_m": 20.0, "pan_deg": 30.0, "tilt_deg": -10.0},
}
HULL = "浙岱渔03891"
MMSI_REGISTERED = 412345678  # the MMSI the registry gives 浙岱渔03891
MMSI_AIS = 412000111  # what the boat broadcasts in the mismatch test (registered to another vessel)


@pytest.fixture(scope="module")
def font():
    try:
        return R.find_cjk_font()
    except InputError as exc:
        from conftest import missing

        missing(str(exc))


class StandInDetector:
    """Reports the boxes the clip renderer drew (per frame, looked up by the frame's identity)."""

    name = "boxes"
    labels = ("vessel",)

    def __init__(self) -> None:
        self.boxes: dict[int, list[tuple[float, float, float, float]]] = {}

    def detect(self, images):
        out = []
        for img in images:
            b = self.boxes.get(id(img), [])
            n = len(b)
            out.append(Detections(np.asarray(b, np.float32).reshape(n, 4), np.full(n, 0.85, np.float32),
                                  np.zeros(n, np.int32), self.labels, model=self.name))
        return out


def _clip(text: str, n: int, seed: int = 0, crop_h_px: int = 110):
    """``n`` frames of one boat crossing the view, each crop rendered afresh (noise, blur, JPEG, tilt)."""
    rng = np.random.default_rng(seed)
    sea = R.sea_frame(rng)
    background = R.hull_texture(rng, 480, 200)
    canvas = R.paint_text(background, text, rng)
    frames = []
    for k in range(n):
        deg = R.Degradation(yaw_deg=float(rng.uniform(-20, 20)), roll_deg=float(rng.uniform(-3, 3)),
                            blur_sigma_px=float(rng.uniform(0, 0.8)), noise=float(rng.uniform(2, 8)),
                            jpeg_q=int(rng.integers(50, 90)))
        crop = R.degrade(canvas, crop_h_px, deg, rng)
        frame, box = R.place_boat(sea, crop, 200 + 12 * k, 330)
        frames.append((frame, box))
    return frames


def _config(tmp_path, registry_rows: str, **ocr):
    reg = tmp_path / "registry.csv"
    reg.write_text("name,hull_number,mmsi,licence_status,blacklisted\n" + registry_rows, encoding="utf-8")
    return load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://cam/quay", "models": ["boxes"], "calibration": CALIB}],
        "zones": [{"id": "harbour", "source": "quay", "polygon_px": [[0, 200], [1280, 200], [1280, 720], [0, 720]],
                   "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
        "registry": str(reg),
        "identity": {"unidentified_after_s": 30.0, "mismatch_confirm": 2, "ocr": {"min_interval_s": 0.5} | ocr},
    })


def _run(pipe: Pipeline, det: StandInDetector, frames, *, wait: bool = True):
    events = []
    for k, (frame, box) in enumerate(frames):
        det.boxes = {id(frame): [box]}
        events += pipe.process("quay", T0_NS + k * STEP_NS, frame)
        if wait and pipe.identity.ocr is not None:
            # thread mode: let the worker finish this crop, so the run is the same on a loaded machine
            assert pipe.identity.ocr.wait_idle(20.0)
    events += pipe.close()
    return events


def test_pipeline_reads_the_hull_number_and_events_carry_read_and_registry_match(tmp_path, font):
    cfg = _config(tmp_path, f"ZHE DAI YU 03891,{HULL},{MMSI_REGISTERED},valid,no\n")
    det = StandInDetector()
    sink = MemorySink()
    pipe = Pipeline(cfg, [sink], detectors={"boxes": det})
    assert pipe.identity.ocr is not None and pipe.identity.ocr.mode == "thread"
    events = _run(pipe, det, _clip(HULL, 10))
    ocr = pipe.identity.ocr
    zone = [e for e in events if e.type == "vessel_in_zone"]
    assert zone and zone[-1].phase == "end"
    a = zone[-1].attributes
    assert a["hull_text"] == HULL and a["hull_registry_match"] == HULL and a["hull_registry_score"] >= 0.85
    assert a["hull_frames_agreeing"] >= 3 and a["hull_frames_read"] >= a["hull_frames_agreeing"]
    assert 0.3 <= a["hull_confidence"] <= 1.0 and a["hull_pattern_ok"] is True
    # the read is the identity: no AIS here, so the boat is known by its hull number alone
    assert a["identity"] == "ocr_only" and a["vessel_name"] == "ZHE DAI YU 03891"
    assert a["hull_registry_hull_number"] == HULL
    assert not [e for e in events if e.type in ("unidentified_vessel", "identity_mismatch", "registry_alert")]
    # crops were spaced in time (one per 0.5 s window out of frames every 0.5 s) and the track settled
    assert 5 <= ocr.counters["submitted"] <= 10 and ocr.counters["dropped"] == 0
    assert ocr.counters["settled_skips"] >= 1
    pipe.stop()
    assert ocr._thread is None


def test_ocr_only_evidence_raises_registry_alert(tmp_path, font):
    cfg = _config(tmp_path, f"ZHE DAI YU 03891,{HULL},,revoked,yes\n", mode="inline")
    det = StandInDetector()
    pipe = Pipeline(cfg, [], detectors={"boxes": det})
    events = _run(pipe, det, _clip(HULL, 6, seed=1))
    alerts = [e for e in events if e.type == "registry_alert"]
    assert [e.phase for e in alerts] == ["start", "end"], [(e.type, e.phase) for e in events]
    a = alerts[0].attributes
    assert alerts[0].severity == "high" and a["alert_hull_number"] == HULL
    assert set(a["registry_alerts"]) >= {"blacklisted"} and "matched by hull text" in a["reason"]
    assert a["hull_text"] == HULL and a["hull_registry_match"] == HULL and a["identity"] == "ocr_only"
    assert "mmsi" not in a  # no AIS at all: the alert rests on the hull read
    assert alerts[0].geo is not None and alerts[0].snapshot is not None


def test_ocr_evidence_against_ais_raises_identity_mismatch(tmp_path, font):
    from seawatch.streams.ais import AisPosition, AisStatic
    from seawatch.vision.identity.vessels import VesselTable

    cfg = _config(tmp_path, f"ZHE DAI YU 03891,{HULL},{MMSI_REGISTERED},valid,no\n"
                            f"MIN SHI YU 06688,闽狮渔06688,{MMSI_AIS},valid,no\n", mode="inline")
    frames = _clip(HULL, 8, seed=2)
    # the AIS vessel sits where the boat's waterline (bottom centre of its box) meets the water
    x0, _, x1, y1 = frames[len(frames) // 2][1]
    pipe = Pipeline(cfg, [], detectors={"boxes": StandInDetector()}, vessel_table=VesselTable())
    pos, why = pipe.locator_for("quay", T0_NS).geo_positions(np.array([[0.5 * (x0 + x1), y1]]))[0]
    assert pos is not None, why
    table = pipe.identity.table
    for k in range(-4, 10):
        t = T0_NS + k * 10**9
        table.update(AisPosition(MMSI_AIS, 1, t, "tag", pos.lat_deg, pos.lon_deg, 0.0, 0.0, 0.0, 5, None, "A"))
    # the name the AIS broadcasts fits its MMSI's registry entry: only the hull read contradicts it
    table.update(AisStatic(MMSI_AIS, 5, T0_NS, "tag", name="MIN SHI YU 06688"))
    det = pipe.detectors["boxes"]
    events = _run(pipe, det, frames)
    mism = [e for e in events if e.type == "identity_mismatch"]
    assert [e.phase for e in mism] == ["start", "end"], [(e.type, e.phase) for e in events]
    a = mism[0].attributes
    assert a["mmsi"] == MMSI_AIS and a["hull_text"] == HULL and a["hull_registry_match"] == HULL
    assert f"hull reads {HULL}" in a["reason"] and "闽狮渔06688" in a["reason"]
    assert a["identity"] == "ais+registry" and a["registry_hull_number"] == "闽狮渔06688"


class SlowEngine:
    """An OCR engine that takes ``delay_s`` per crop and reads a fixed text."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.threads: set[str] = set()

    def read_hull(self, image):
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        return FrameRead(HULL, HULL, 0.9)


def test_busy_worker_drops_crops_with_a_counter_and_never_stalls_the_frame_loop(font):
    engine = SlowEngine(0.3)
    results = []
    tocr = TrackOcr(engine, on_result=lambda s, t, th: results.append((s, t, th)), queue_size=1,
                    min_interval_s=0.0, crops_per_track=50)
    frame = R.sea_frame(np.random.default_rng(3))
    crop = R.render_crop(HULL, 100, np.random.default_rng(4))
    boxes = []
    for i in range(6):  # six boats
        frame, box = R.place_boat(frame, crop, 20 + 200 * i, 300)
        boxes.append(box)
    xyxy = np.array(boxes, np.float32)
    worst = 0.0
    for k in range(10):
        t0 = time.perf_counter()
        tocr.offer("cam", T0_NS + k * STEP_NS, frame, list(range(6)), xyxy, [0.9] * 6)
        worst = max(worst, time.perf_counter() - t0)
    assert worst < 0.1, f"offer took {worst:.3f} s with a 0.3 s engine"
    assert tocr.counters["dropped"] >= 40 and tocr.counters["submitted"] <= 4
    assert tocr.wait_idle(5.0)
    assert engine.threads == {"hull-ocr"} and results and results[0][2].read.text == HULL
    tocr.close()


def test_bad_crops_are_skipped_not_raised(font):
    engine = SlowEngine(0.0)
    tocr = TrackOcr(engine, mode="inline", min_interval_s=0.0)
    frame = np.zeros((200, 300, 3), np.uint8)  # black: no texture
    boxes = np.array([[10, 10, 100, 100],  # blank
                      [50, 50, 40, 60],  # degenerate (x1 < x0)
                      [np.nan, 0, 10, 10],  # not finite
                      [290, 190, 400, 300],  # outside the frame: 10x10 left
                      [0, 0, 12, 12]], np.float32)  # tiny
    assert tocr.offer("cam", T0_NS, frame, [1, 2, 3, 4, 5], boxes, [0.9] * 5) == 0
    assert engine.calls == 0 and tocr.counters["blank"] == 1 and tocr.counters["too_small"] == 4
    assert tocr.offer("cam", T0_NS, frame, [], np.zeros((0, 4)), []) == 0
    assert tocr.offer("cam", T0_NS, None, [1], boxes[:1], [0.9]) == 0
    with pytest.raises(InputError, match="cam"):
        tocr.offer("cam", T0_NS, np.zeros((200, 300), np.uint8), [1], boxes[:1], [0.9])


def test_crop_quality_prefers_sharp_large_confident(font):
    rng = np.random.default_rng(5)
    sharp = R.render_crop(HULL, 120, rng)
    blurred = R.degrade(sharp, 120, R.Degradation(blur_sigma_px=3.0), rng)
    small = R.render_crop(HULL, 40, rng)
    q = lambda c, conf=0.9: crop_quality(c, conf)[0]  # noqa: E731
    assert q(sharp) > q(blurred) and q(sharp) > q(small) and q(sharp, 0.9) > q(sharp, 0.4)


def test_ocr_off_by_config(tmp_path):
    cfg = _config(tmp_path, f"ZHE DAI YU 03891,{HULL},,valid,no\n", enabled=False)
    pipe = Pipeline(cfg, [], detectors={"boxes": StandInDetector()})
    assert pipe.identity.ocr is None
    from seawatch.errors import ConfigError

    with pytest.raises(ConfigError, match="identity.ocr.mode"):
        _config(tmp_path, "", mode="sometimes")


# ------------------------------------------------------------------------------------ evaluation (small runs)
def test_association_evaluation_scores_a_small_scenario():
    from seawatch.vision.identity.evaluate import evaluate_association

    r = evaluate_association(sigma_m=10.0, dense=False, seed=0, duration_s=40.0, in_view=10, dark=3, decoys=4,
                             spoofers=2)
    assert (r["tracks"], r["with_ais"], r["dark"]) == (10, 7, 3)
    assert r["tp"] + r["fn"] > 0 and r["precision"] >= 0.95 and r["recall"] >= 0.9
    assert r["decoy_assignments"] == 0
    assert r["spoofers_flagged"] == "2/2" and r["honest_flagged"] == "0/5"


def test_ocr_evaluation_reads_large_crops_and_fails_tiny_ones(font):
    from seawatch.vision.identity.evaluate import evaluate_ocr

    res = evaluate_ocr(vessels=3, heights=(32, 128), frames=3, use_media=False)
    rows = {r["crop_height_px"]: r for r in res["rows"] if r["background"] == "all"}
    assert rows[128]["n"] == 3 and rows[128]["voted_exact"] >= 0.66 and rows[128]["voted_registry_wrong"] == 0
    assert rows[32]["cer"] > rows[128]["cer"] + 0.3  # 7-px text is beyond the engine
    assert res["registry_size"] >= 3 + 2 + 150  # truths, twins, unrelated vessels


def test_evaluation_cli_rejects_bad_arguments(capsys):
    from seawatch.vision.identity.evaluate import main

    assert main(["--heights", "4,x"]) == 2
    assert "--heights" in capsys.readouterr().err
    assert main(["--only", "ais", "--seeds", "0"]) == 2


def test_per_track_memory_of_the_identity_stage_is_forgotten_after_ten_minutes(tmp_path):
    cfg = _config(tmp_path, f"ZHE DAI YU 03891,{HULL},,valid,no\n", enabled=False)
    det = StandInDetector()
    pipe = Pipeline(cfg, [], detectors={"boxes": det})
    frame = np.zeros((720, 1280, 3), np.uint8)
    det.boxes = {id(frame): [(300.0, 330.0, 500.0, 440.0)]}
    pipe.process("quay", T0_NS, frame)
    (key,) = pipe.identity._track_label
    pipe.identity.set_hull_read("quay", key[1], None)
    det.boxes = {}
    pipe.process("quay", T0_NS + 300 * 10**9, frame)
    assert key in pipe.identity._track_label and key in pipe.identity._hull  # 5 min: kept
    pipe.process("quay", T0_NS + 700 * 10**9, frame)
    assert key not in pipe.identity._track_label and key not in pipe.identity._hull
    assert key not in pipe.identity._geo and key not in pipe.identity._identity


def test_hull_number_painted_on_a_real_ship_in_a_real_frame_is_read_on_a_source_without_geo(shared_media, font,
                                                                                             tmp_path):
    """A real harbour live-cam frame: 浙岱渔03891 painted (white, 30 px) on the black hull of the moored
    bulk carrier, each frame re-compressed with its own noise. The COCO detector does not fire on this ship
    (it finds only a small boat at 0.27), so the stand-in reports the ship's labelled box. The source has no
    calibration: no AIS association, but the read identifies the ship and ``vessel_in_zone`` carries it."""
    import cv2
    from PIL import Image, ImageDraw, ImageFont

    from seawatch.vision.media import read_image

    img = read_image(shared_media / "A_boats" / "shore_proylddb_1080_2022-07-17_13-56_output_0.jpg")
    pil = Image.fromarray(img[:, :, ::-1].copy())
    ImageDraw.Draw(pil).text((80, 705), HULL, font=ImageFont.truetype(str(font), 30), fill=(235, 235, 230))
    painted = np.asarray(pil)[:, :, ::-1]
    ship = (0.0, 395.0, 668.0, 819.0)  # the label's box (YOLO 0.174 0.562 0.347 0.393 of 1920x1080)
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(5):
        noisy = np.clip(painted + rng.normal(0, 4, painted.shape), 0, 255).astype(np.uint8)
        frames.append((cv2.imdecode(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR),
                       ship))
    reg = tmp_path / "registry.csv"
    reg.write_text(f"name,hull_number,licence_status\nZHE DAI YU 03891,{HULL},valid\nMIN SHI YU 06688,闽狮渔06688,valid\n",
                   encoding="utf-8")
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "x.jpg", "models": ["boxes"]}],
        "zones": [{"id": "all", "source": "quay", "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
        "registry": str(reg), "identity": {"ocr": {"mode": "inline", "min_interval_s": 0.5}},
    })
    det = StandInDetector()
    pipe = Pipeline(cfg, [], detectors={"boxes": det})
    events = _run(pipe, det, frames)
    zone = [e for e in events if e.type == "vessel_in_zone"]
    assert zone and all(e.geo is None for e in zone)
    a = zone[-1].attributes
    assert a["identity"] == "ocr_only" and a["vessel_name"] == "ZHE DAI YU 03891" and "lat_deg" not in a
    assert a["hull_text"] == HULL and a["hull_registry_match"] == HULL and a["hull_frames_agreeing"] >= 3
    assert not [e for e in events if e.type != "vessel_in_zone"]


class BackgroundDifferenceDetector:
    """Stand-in vessel detector for the rendered clip: the box around pixels that differ from the empty sea."""

    name = "boxes"
    labels = ("vessel",)

    def __init__(self, sea: np.ndarray, threshold: int = 45) -> None:
        self.sea = sea.astype(np.int16)
        self.threshold = threshold

    def detect(self, images):
        out = []
        for img in images:
            changed = np.abs(img.astype(np.int16) - self.sea).max(axis=2) > self.threshold
            rows, cols = np.flatnonzero(changed.sum(1) > 3), np.flatnonzero(changed.sum(0) > 3)
            boxes = [[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]] if rows.size and cols.size else []
            n = len(boxes)
            out.append(Detections(np.asarray(boxes, np.float32).reshape(n, 4), np.full(n, 0.8, np.float32),
                                  np.zeros(n, np.int32), self.labels, model=self.name))
        return out


def test_rendered_video_clip_through_run_file_gives_events_with_the_hull_read(tmp_path, font):
    """The clip is an MP4 file read by the streams reader (``run_file``, as ``seawatch run`` does), with OCR
    inline as advised for replays; a background-difference stand-in finds the boat."""
    import cv2

    from seawatch.vision.pipeline import run_file

    clip = _clip(HULL, 12, seed=11)
    sea = R.sea_frame(np.random.default_rng(11))
    path = tmp_path / "boat.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 4, (1280, 720))
    assert vw.isOpened()
    for frame, _ in clip:
        vw.write(frame)
    vw.release()
    reg = tmp_path / "registry.csv"
    reg.write_text(f"name,hull_number\nZHE DAI YU 03891,{HULL}\n", encoding="utf-8")
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": str(path), "models": ["boxes"], "analysis_fps": 4, "calibration": CALIB}],
        "zones": [{"id": "all", "source": "quay", "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
        "registry": str(reg), "identity": {"ocr": {"mode": "inline", "min_interval_s": 0.5}},
    })
    pipe = Pipeline(cfg, [], detectors={"boxes": BackgroundDifferenceDetector(sea)})
    events = run_file(pipe, "quay", path, T0_NS)
    zone = [e for e in events if e.type == "vessel_in_zone"]
    assert zone and zone[-1].phase == "end", [(e.type, e.phase) for e in events]
    a = zone[-1].attributes
    assert a["hull_text"] == HULL and a["hull_registry_match"] == HULL and a["identity"] == "ocr_only"
    assert a["hull_frames_agreeing"] >= 3
    box = zone[-1].snapshot.xyxy_px  # the stand-in found the drawn boat (within the codec's smear)
    assert any(abs(box[0] - b[0]) <= 6 and abs(box[3] - b[3]) <= 6 for _, b in clip)


def test_without_geo_reference_a_hull_read_still_raises_registry_alert_but_never_unidentified(tmp_path, font):
    reg = tmp_path / "registry.csv"
    reg.write_text(f"name,hull_number,licence_status,blacklisted\nZHE DAI YU 03891,{HULL},expired,no\n",
                   encoding="utf-8")
    cfg = load_pipeline_config(None, {
        "sources": [{"id": "quay", "url": "rtsp://cam/quay", "models": ["boxes"]}],
        "zones": [{"id": "all", "source": "quay", "rules": [{"type": "vessel_in_zone", "min_duration_s": 1.0}]}],
        "registry": str(reg),
        "identity": {"unidentified_after_s": 0.5, "ocr": {"mode": "inline", "min_interval_s": 0.5}},
    })
    det = StandInDetector()
    pipe = Pipeline(cfg, [], detectors={"boxes": det})
    known = _clip(HULL, 6, seed=12)
    stranger = _clip("闽狮渔06688", 6, seed=13)  # not in the registry
    frames = []
    for (fa, ba), (fb, bb) in zip(known, stranger):
        both = fa.copy()
        y0, y1, x0, x1 = int(bb[1]), int(bb[3]), int(bb[0]), int(bb[2])
        both[y0 + 200:y1 + 200, x0 + 500:x1 + 500] = fb[y0:y1, x0:x1]  # the second boat, lower right
        frames.append((both, [ba, (bb[0] + 500, bb[1] + 200, bb[2] + 500, bb[3] + 200)]))
    events = []
    for k, (frame, boxes) in enumerate(frames):
        det.boxes = {id(frame): boxes}
        events += pipe.process("quay", T0_NS + k * STEP_NS, frame)
    events += pipe.close()
    alerts = [e for e in events if e.type == "registry_alert"]
    assert [e.phase for e in alerts] == ["start", "end"], [(e.type, e.phase) for e in events]
    assert alerts[0].geo is None and "not geo-referenced" in alerts[0].geo_reason
    a = alerts[0].attributes
    assert "licence_expired" in a["registry_alerts"] and a["alert_hull_number"] == HULL and "lat_deg" not in a
    # the stranger's read matches nobody; without a position the stage cannot tell it has no AIS either
    assert not [e for e in events if e.type == "unidentified_vessel"]
    zone = {e.track_ids: e for e in events if e.type == "vessel_in_zone" and e.phase == "end"}
    assert len(zone) == 2
    reads = sorted(e.attributes.get("hull_text", "") for e in zone.values())
    assert reads == sorted([HULL, "闽狮渔06688"])
    ids = sorted(e.attributes["identity"] for e in zone.values())
    assert ids == ["ocr_only", "unknown"]
