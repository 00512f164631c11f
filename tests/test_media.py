"""Media reading for the CLI: images, videos, folders, and clear errors for broken files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from seawatch.errors import InputError
from seawatch.vision.media import MediaError, MediaFrame, decode_image, expand_paths, iter_media, iter_video, read_image
from test_detect_cli import write_video


def jpeg_bytes(h=120, w=160) -> bytes:
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def test_jpeg_with_trailing_data_is_fine():
    data = jpeg_bytes()
    assert decode_image(data + b"\0" * 1000 + b"camera trailer").shape == (120, 160, 3)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.95])
def test_truncated_jpeg_is_refused(cut):
    data = jpeg_bytes()
    with pytest.raises(InputError, match="truncated JPEG"):
        decode_image(data[: int(len(data) * cut)], "x.jpg")


@pytest.mark.parametrize("data,msg", [(b"", "empty"), (b"GIF89a" + b"\0" * 50, "not a decodable image"),
                                      (b"\x89PNG\r\n\x1a\n" + b"\1" * 100, "not a decodable image")])
def test_undecodable_bytes(data, msg):
    with pytest.raises(InputError, match=msg):
        decode_image(data, "x")


def test_real_jpegs_are_accepted(shared_media):
    files = sorted(shared_media.rglob("*.jpg"))[:40]
    assert files
    for f in files:
        assert read_image(f).ndim == 3


def test_unicode_path_and_missing_file(tmp_path):
    p = tmp_path / "Hafen_Überwachung_港口.jpg"
    p.write_bytes(jpeg_bytes())
    assert read_image(p).shape == (120, 160, 3)
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.jpg")


def test_video_frames_timestamps_and_stride(tmp_path):
    v = write_video(tmp_path / "v.mp4", 25, fps=25)
    frames = list(iter_video(v, stride_frames=10))
    assert [f.frame_index for f in frames] == [0, 10, 20]
    assert [f.timestamp_ns for f in frames] == [0, 400_000_000, 800_000_000]
    assert frames[0].image.shape == (240, 320, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].fps == pytest.approx(25)


def test_truncated_video_yields_its_frames_then_fails(tmp_path):
    data = write_video(tmp_path / "v.mp4", 60).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(InputError, match="truncated video"):
        for f in iter_video(cut):
            got.append(f.frame_index)
    assert 0 < len(got) < 60


def test_folders_expand_recursively_in_a_stable_order(tmp_path):
    for rel in ["b/2.jpg", "a.png", "b/1.mp4", "c/skip.txt", "b/x/0.jpg"]:
        p = tmp_path / "d" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    single = tmp_path / "single.dat"
    single.write_bytes(b"x")
    got = expand_paths([single, tmp_path / "d", tmp_path / "d" / "a.png"])
    rel = [p.relative_to(tmp_path).as_posix() for p in got]
    assert rel == ["single.dat", "d/a.png", "d/b/1.mp4", "d/b/2.jpg", "d/b/x/0.jpg"]  # no duplicates


def test_iter_media_reports_and_continues(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes())
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(jpeg_bytes()[:100])
    odd = tmp_path / "frame.raw"  # unknown extension, still an image
    odd.write_bytes(jpeg_bytes())
    items = list(iter_media([bad, tmp_path / "missing.mp4", good, odd]))
    assert [type(i) for i in items] == [MediaError, MediaError, MediaFrame, MediaFrame]
    assert "bad.jpg" in items[0].message and "missing.mp4" in items[1].message
    assert items[2].timestamp_ns is None and items[2].frame_index == 0
