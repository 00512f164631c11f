"""``seawatch detect``: JSON lines, per-file errors and exit status, annotated output, real models on real media."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import onnx_model
from detector_models import LABELS8, NAMES8, env_for, make_constant_model, manifest_dict, register
from seawatch import cli

# letterbox-pixel box; for a 320x240 frame (scaled x2 to 640x480, no padding) it is (135, 83.5, 185, 108.5)
ROWS = np.zeros((2, 4 + 8), np.float32)
ROWS[0, :5] = [320, 192, 100, 50, 0.9]
ROWS[1, :4] = [500, 300, 40, 40]; ROWS[1, 4 + 3] = 0.8
BOX_320x240 = [135.0, 83.5, 185.0, 108.5]
FIELDS = {"source", "frame_index", "timestamp_ns", "model", "label", "confidence", "xyxy_px"}


def write_video(path: Path, n: int, fps: int = 10, size=(320, 240), faststart: bool = True) -> Path:
    import av

    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n):
            img = np.full((size[1], size[0], 3), 200 + (i % 50), np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_jpeg(path: Path, h=240, w=320, value=255) -> Path:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture
def models_env(tmp_path, monkeypatch):
    root = tmp_path / "reg"
    onnx = make_constant_model(root / "c.onnx", ROWS, "yolov8")
    register(root, onnx, manifest_dict("test_cli_a", NAMES8, LABELS8, "yolov8", conf=0.5))
    register(root, onnx, manifest_dict("test_cli_b", NAMES8, LABELS8, "yolov8", conf=0.85))
    for k, v in env_for(root).items():
        monkeypatch.setenv(k, v)
    return root


def detect(capsys, *args) -> tuple[int, list[dict], str]:
    rc = cli.main(["detect", "--no-progress", *map(str, args)])
    cap = capsys.readouterr()
    lines = [json.loads(line) for line in cap.out.splitlines() if line.strip()]
    return rc, lines, cap.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("seawatch: error:")]


def test_folder_and_video_to_json_lines(models_env, tmp_path, capsys):
    media = tmp_path / "media"
    write_jpeg(media / "b.jpg")
    write_jpeg(media / "sub" / "a.jpg")
    write_video(media / "clip.mp4", 20, fps=10)
    (media / "notes.txt").write_text("not media: ignored inside folders")
    rc, lines, err = detect(capsys, media, "--models", "test_cli_a", "--stride-frames", "5", "--batch", "3")
    assert rc == 0, err
    assert error_lines(err) == []
    assert all(set(rec) == FIELDS for rec in lines)
    # stable order: sorted paths inside the folder
    order = list(dict.fromkeys(Path(r["source"]).relative_to(media).as_posix() for r in lines))
    assert order == ["b.jpg", "clip.mp4", "sub/a.jpg"]
    img = [r for r in lines if r["source"].endswith("b.jpg")]
    assert [(r["label"], r["model"], r["frame_index"], r["timestamp_ns"]) for r in img] == \
        [("vessel", "test_cli_a", 0, None), ("person", "test_cli_a", 0, None)]
    assert img[0]["xyxy_px"] == pytest.approx(BOX_320x240)
    assert img[0]["confidence"] == pytest.approx(0.9)
    vid = [r for r in lines if r["source"].endswith("clip.mp4") and r["label"] == "vessel"]
    assert [r["frame_index"] for r in vid] == [0, 5, 10, 15]
    assert [r["timestamp_ns"] for r in vid] == [0, 500_000_000, 1_000_000_000, 1_500_000_000]


def test_default_models_are_all_provisioned_ones(models_env, tmp_path, capsys):
    rc, lines, err = detect(capsys, write_jpeg(tmp_path / "x.jpg"))
    assert rc == 0, err
    by_model = {m: [r["label"] for r in lines if r["model"] == m] for m in ("test_cli_a", "test_cli_b")}
    assert by_model == {"test_cli_a": ["vessel", "person"], "test_cli_b": ["vessel"]}  # b: conf 0.85


def test_bad_files_are_reported_and_the_run_continues(models_env, tmp_path, capsys):
    good = write_jpeg(tmp_path / "good.jpg")
    real = write_jpeg(tmp_path / "src.jpg", 480, 640).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(real[: len(real) // 2])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello, not a video\n")
    clip = write_video(tmp_path / "clip.mp4", 60).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(clip[: len(clip) // 2])  # moov first: frames are missing
    plain = write_video(tmp_path / "plain.mp4", 30, faststart=False).read_bytes()
    (tmp_path / "no_moov.mp4").write_bytes(plain[: len(plain) // 2])  # moov at the end: cut off
    bad = ["cut.jpg", "garbage.png", "empty.jpg", "text.mp4", "truncated.mp4", "no_moov.mp4", "missing.jpg"]
    rc, lines, err = detect(capsys, *(tmp_path / b for b in bad[:3]), good, *(tmp_path / b for b in bad[3:]),
                            "--models", "test_cli_a")
    assert rc == 1
    errs = error_lines(err)
    assert len(errs) == len(bad), err
    for name, line in zip(bad, errs):
        assert name in line
    assert "truncated" in errs[0] and "empty" in errs[2] and "truncated" in errs[4]
    assert "Traceback" not in err
    sources = {Path(r["source"]).name for r in lines}
    assert "good.jpg" in sources
    assert "truncated.mp4" in sources  # the frames before the cut are still analysed
    assert "of 8 files failed" in err


def test_out_file_and_annotations(models_env, tmp_path, capsys):
    import av

    img = write_jpeg(tmp_path / "in" / "frame.jpg")
    vid = write_video(tmp_path / "in" / "clip.mp4", 24, fps=12)
    out, ann = tmp_path / "dets.jsonl", tmp_path / "ann"
    rc, stdout_lines, err = detect(capsys, img, vid, "--models", "test_cli_a", "--out", out, "--annotate", ann,
                                   "--stride-frames", "4")
    assert rc == 0, err
    assert stdout_lines == []
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 2 + 2 * 6
    drawn = cv2.imread(str(ann / "frame.jpg"))
    assert drawn.shape == (240, 320, 3)
    assert (np.abs(drawn.astype(int) - 255).sum(axis=2) > 60).sum() > 200  # coloured box lines on white
    mp4 = ann / "clip.mp4"
    with av.open(str(mp4)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert (s.width, s.height) == (320, 240)
        assert s.average_rate == Fraction(3)  # 12 fps / stride 4
        assert sum(1 for _ in c.decode(s)) == 6
    head = mp4.read_bytes()
    assert 0 <= head.find(b"moov") < head.find(b"mdat")  # +faststart


def test_tiled_detection_option(models_env, tmp_path, capsys):
    big = write_jpeg(tmp_path / "big.jpg", 1080, 1920)
    rc, lines, err = detect(capsys, big, "--models", "test_cli_a", "--tile", "640:0.2")
    assert rc == 0, err
    assert lines and all(0 <= r["xyxy_px"][0] <= r["xyxy_px"][2] <= 1920 for r in lines)


@pytest.mark.parametrize("args,msg", [
    (["--tile", "big"], "--tile"),
    (["--batch", "0"], "--batch"),
    (["--conf", "2"], "--conf"),
    (["--models", "no_such_model"], "no_such_model"),
])
def test_bad_arguments_are_clear_errors(models_env, tmp_path, capsys, args, msg):
    rc, _, err = detect(capsys, write_jpeg(tmp_path / "x.jpg"), *args)
    assert rc == 1
    assert msg in err and "Traceback" not in err


def test_no_provisioned_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.delenv("SEAWATCH_MODELS_PATH", raising=False)
    rc, _, err = detect(capsys, write_jpeg(tmp_path / "x.jpg"))
    assert rc == 1 and "models fetch" in err


def test_entry_point_subprocess(models_env, tmp_path):
    img = write_jpeg(tmp_path / "x.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 broken")
    env = {**os.environ, **env_for(models_env)}
    p = subprocess.run([sys.executable, "-m", "seawatch", "detect", str(img), str(bad), "--models", "test_cli_a"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1, p.stderr
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["label"] for r in recs] == ["vessel", "person"]
    assert len(error_lines(p.stderr)) == 1 and "bad.jpg" in p.stderr


@pytest.mark.models
@pytest.mark.slow
def test_real_model_on_real_media_with_broken_files(shared_media, tmp_path, capsys):
    onnx_model("coco_yolov5n")
    good = shared_media / "D_parking_lanes" / "carpark_timelapse_md_t0s.jpg"
    jpg = good.read_bytes()
    (tmp_path / "corrupt.jpg").write_bytes(jpg[: len(jpg) // 3])
    mp4 = (shared_media / "D_parking_lanes" / "carpark_timelapse_md.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(mp4[: len(mp4) // 2])
    rc, lines, err = detect(capsys, good, tmp_path / "corrupt.jpg", tmp_path / "truncated.mp4",
                            "--models", "coco_yolov5n", "--stride-frames", "10", "--threads", "2")
    assert rc == 1
    errs = error_lines(err)
    assert len(errs) == 2 and "corrupt.jpg" in errs[0] and "truncated.mp4" in errs[1]
    cars = [r for r in lines if r["source"] == str(good) and r["label"] == "car"]
    assert len(cars) >= 4
    assert all(r["model"] == "coco_yolov5n" and 0 < r["confidence"] <= 1 for r in cars)


def test_yolo_labels_make_a_dataset_source(models_env, tmp_path, capsys, monkeypatch):
    """`--yolo-labels DIR` writes each analysed frame (images keep their bytes, video frames become JPEGs named by
    frame index, colliding names numbered) with its detections of the chosen classes as YOLO labels; the folder is a
    dataset manifest source (an absolute root needs no shared folder) whose boxes are the detections."""
    import yaml

    from seawatch.vision import trainsets

    media = tmp_path / "media"
    write_jpeg(media / "quaycam_a.jpg")
    write_jpeg(media / "sub" / "quaycam_a.jpg", value=128)
    write_video(media / "quaycam_clip.mp4", 20, fps=10)
    out = tmp_path / "prelabels"
    rc, lines, err = detect(capsys, media, "--models", "test_cli_a", "--stride-frames", "5", "--yolo-labels", out,
                            "--yolo-classes", "vessel")
    assert rc == 0, err
    assert "6 frames with 5 pre-labelled boxes (vessel)" in err  # the grey image: no box (a negative)
    assert (out / "classes.txt").read_text() == "vessel\n"
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["quaycam_a.jpg", "quaycam_a_2.jpg"] + [f"quaycam_clip_f{i:06d}.jpg" for i in (0, 5, 10, 15)]
    assert (out / "images" / "quaycam_a.jpg").read_bytes() == (media / "quaycam_a.jpg").read_bytes()
    x1, y1, x2, y2 = BOX_320x240  # the vessel box of every frame; the person box is not a chosen class
    want = f"0 {(x1 + x2) / 640:.6f} {(y1 + y2) / 480:.6f} {(x2 - x1) / 320:.6f} {(y2 - y1) / 240:.6f}\n"
    assert [(out / "labels" / f"{Path(n).stem}.txt").read_text() for n in names] == [want, ""] + [want] * 4
    assert sum(r["label"] == "vessel" for r in lines) == 5  # the JSON lines are written as before

    monkeypatch.setenv("SEAWATCH_SHARED", str(tmp_path / "no_shared_here"))
    manifest = tmp_path / "my_site.yaml"
    manifest.write_text(yaml.safe_dump({"name": "my_site", "classes": ["vessel"], "sources": [
        {"name": "quay", "root": str(out), "format": "yolo", "class_map": {"0": "vessel"},
         "camera_from": "^([a-z]+)_"}], "split": {"val_cameras": []}}))
    items = trainsets.scan(trainsets.load_dataset_manifest(manifest))
    assert len(items) == 6 and {i.camera for i in items} == {"quaycam"}
    assert sorted(i.lines for i in items) == [()] + [(want.strip(),)] * 5

    rc, _, err = detect(capsys, media / "quaycam_a.jpg", "--models", "test_cli_a", "--yolo-labels", tmp_path / "x",
                        "--yolo-classes", "boat")
    assert rc == 1 and "--yolo-classes: boat not among the models' labels" in err and "Traceback" not in err
