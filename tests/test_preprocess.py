"""Letterbox preprocessing: exact ultralytics maths, batching of mixed sizes, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawatch.errors import InputError
from seawatch.vision.preprocess import PAD_VALUE, Preprocessor, check_imgsz, letterbox, letterbox_params

PAD = np.float32(PAD_VALUE) / np.float32(255)


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# (source h, w), imgsz, stride -> (resized h, w), (padded h, w), (pad_x, pad_y)
TABLE = [
    ((1080, 1920), 640, 32, (360, 640), (384, 640), (0, 12)),
    ((720, 1280), 640, 32, (360, 640), (384, 640), (0, 12)),
    ((1920, 1080), 640, 32, (640, 360), (640, 384), (12, 0)),
    ((640, 640), 640, 32, (640, 640), (640, 640), (0, 0)),
    ((480, 640), 640, 32, (480, 640), (480, 640), (0, 0)),
    ((100, 200), 640, 32, (320, 640), (320, 640), (0, 0)),  # scaled up, like ultralytics predict
    ((1079, 1917), 640, 32, (360, 640), (384, 640), (0, 12)),
    ((1, 3000), 640, 32, (1, 640), (32, 640), (0, 15)),  # thin images keep one pixel; odd pad goes bottom
    ((500, 333), 640, 32, (640, 426), (640, 448), (11, 0)),
    ((1080, 1920), 1280, 64, (720, 1280), (768, 1280), (0, 24)),
]


@pytest.mark.parametrize("src_hw,imgsz,stride,resized,padded,pad_xy", TABLE)
def test_letterbox_table(src_hw, imgsz, stride, resized, padded, pad_xy):
    r, new_hw, pad_hw = letterbox_params(src_hw, imgsz, stride)
    assert new_hw == resized and pad_hw == padded
    b = letterbox([_img(*src_hw)], imgsz, stride)
    assert b.tensor.shape == (1, 3, *padded) and b.tensor.dtype == np.float32
    assert tuple(b.pad_xy[0]) == pad_xy
    assert tuple(b.resized_hw[0]) == resized
    assert b.scale[0] == pytest.approx(r)
    assert b.gain_xy[0] == pytest.approx([resized[1] / src_hw[1], resized[0] / src_hw[0]])
    # padding is exactly 114/255 around the picture
    t = b.tensor[0]
    px, py = pad_xy
    if py:
        assert np.all(t[:, :py] == PAD)
    if px:
        assert np.all(t[:, :, :px] == PAD)
    assert np.all(t[:, py + resized[0]:] == PAD)
    assert np.all(t[:, :, px + resized[1]:] == PAD)


@pytest.mark.parametrize("src_hw", [(1080, 1920), (481, 641), (33, 47), (2000, 20), (1079, 1917), (640, 640), (1, 3000)])
def test_matches_ultralytics_letterbox_exactly(src_hw):
    augment = pytest.importorskip("ultralytics.data.augment")
    img = _img(*src_hw, seed=3)
    ref = augment.LetterBox((640, 640), auto=True, stride=32)(image=img)
    ref = ref[..., ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    got = letterbox([img], 640, 32).tensor[0]
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)


def test_bgr_to_rgb_and_scaling():
    img = np.empty((64, 64, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 255  # B, G, R
    t = letterbox([img], 64, 32).tensor[0]
    assert np.all(t[0] == np.float32(1.0))  # R first
    assert np.all(t[1] == np.float32(20) / np.float32(255))
    assert np.all(t[2] == np.float32(10) / np.float32(255))


def test_mixed_sizes_share_one_centred_batch():
    pre = Preprocessor(640, 32)
    a, b = _img(1080, 1920, 1), _img(1920, 1080, 2)
    batch = pre([a, b])
    assert batch.tensor.shape == (2, 3, 640, 640)
    # each frame is centred in the common shape
    assert tuple(batch.pad_xy[0]) == (0, 140)
    assert tuple(batch.pad_xy[1]) == (140, 0)
    # the picture region equals the single-frame letterbox of the same frame
    single = letterbox([a], 640, 32).tensor[0]
    assert np.array_equal(batch.tensor[0, :, 140:500], single[:, 12:372])
    single_b = letterbox([b], 640, 32).tensor[0]
    assert np.array_equal(batch.tensor[1, :, :, 140:500], single_b[:, :, 12:372])
    assert np.all(batch.tensor[0, :, :140] == PAD) and np.all(batch.tensor[0, :, 500:] == PAD)


def test_equal_frames_batch_like_single():
    pre = Preprocessor(640, 32)
    frames = [_img(720, 1280, s) for s in range(3)]
    batch = pre(frames)
    for i, f in enumerate(frames):
        assert np.array_equal(batch.tensor[i], letterbox([f], 640, 32).tensor[0])


def test_buffer_is_reused_and_rewritten():
    pre = Preprocessor(320, 32)
    first = pre([_img(100, 100, 1), _img(100, 100, 2)]).tensor
    ptr = first.__array_interface__["data"][0]
    second = pre([np.zeros((50, 200, 3), np.uint8)])
    assert second.tensor.__array_interface__["data"][0] == ptr  # same memory, no new allocation
    t = second.tensor[0]
    assert t.shape == (3, 96, 320)
    assert np.all(t[:, 8:88] == 0) and np.all(t[:, :8] == PAD) and np.all(t[:, 88:] == PAD)


def test_check_imgsz_rounds_up_to_stride():
    assert check_imgsz(640, 32) == 640
    assert check_imgsz(650, 32) == 672
    assert Preprocessor(650, 32).imgsz == 672


def test_fixed_input_shape():
    pre = Preprocessor(640, 32, fixed_hw=(640, 640))
    b = pre([_img(1080, 1920)])
    assert b.tensor.shape == (1, 3, 640, 640)
    assert tuple(b.pad_xy[0]) == (0, 140)


@pytest.mark.parametrize("bad", [
    [],
    [np.zeros((10, 10), np.uint8)],
    [np.zeros((10, 10, 4), np.uint8)],
    [np.zeros((10, 10, 3), np.float32)],
    [np.zeros((0, 10, 3), np.uint8)],
    ["not an image"],
])
def test_bad_input_is_input_error(bad):
    with pytest.raises(InputError):
        letterbox(bad, 64, 32)


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 4000), w=st.integers(1, 4000), imgsz=st.sampled_from([320, 640, 1280]),
       stride=st.sampled_from([32, 64]), data=st.data())
def test_box_round_trip(h, w, imgsz, stride, data):
    """Source -> tensor -> source returns the same boxes; geometry invariants of the letterbox hold."""
    pre = Preprocessor(imgsz, stride)
    scale, resized, pad_xy, padded, (bh, bw) = pre.plan([(h, w)])
    assert bh % stride == 0 and bw % stride == 0
    assert max(bh, bw) == imgsz
    assert 0 <= pad_xy[0, 0] and pad_xy[0, 0] + resized[0, 1] <= bw
    assert 0 <= pad_xy[0, 1] and pad_xy[0, 1] + resized[0, 0] <= bh
    assert max(resized[0]) == imgsz or min(resized[0]) == 1
    x1 = data.draw(st.floats(0, w)); x2 = data.draw(st.floats(x1, w))
    y1 = data.draw(st.floats(0, h)); y2 = data.draw(st.floats(y1, h))
    from seawatch.vision.preprocess import LetterboxBatch

    gain = np.stack([resized[:, 1] / w, resized[:, 0] / h], 1)
    batch = LetterboxBatch(np.zeros((1, 3, bh, bw), np.float32), np.array([[h, w]]), scale, gain, pad_xy, resized)
    box = np.array([[x1, y1, x2, y2]])
    back = batch.to_source(batch.to_tensor(box, 0), 0)
    tol = max(1e-3, 1e-6 * max(h, w)) + 4e-7 * max(h, w) / float(min(gain[0]))
    assert np.allclose(back, box, atol=tol)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(40, 1500), w=st.integers(40, 1500), data=st.data())
def test_content_round_trip(h, w, data):
    """A white rectangle drawn in the source is found back at the same place after letterbox and undo."""
    x1 = data.draw(st.integers(0, w - 20)); x2 = data.draw(st.integers(x1 + 20, w))
    y1 = data.draw(st.integers(0, h - 20)); y2 = data.draw(st.integers(y1 + 20, h))
    img = np.zeros((h, w, 3), np.uint8)
    img[y1:y2, x1:x2] = 255
    b = letterbox([img], 320, 32)
    ys, xs = np.nonzero(b.tensor[0, 0] > 0.5)
    found = b.to_source(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32), 0)[0]
    tol = 1.5 / float(b.gain_xy[0].min()) + 1
    assert np.allclose(found, [x1, y1, x2, y2], atol=tol)
