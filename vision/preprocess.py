"""Letterbox frames into one NCHW float32 batch for a YOLO-style ONNX model.

The maths follows ultralytics' ``LetterBox(auto=True, center=True, scaleup=True)`` (and YOLOv5's ``letterbox``,
which computes the same numbers):

- ``r = min(imgsz / h, imgsz / w)``: the long side is scaled to ``imgsz`` (small frames are scaled up too);
- the resized size is ``(max(round(w * r), 1), max(round(h * r), 1))`` with Python's round-half-even;
- each side is padded up to a multiple of the model stride, the padding split in two with
  ``left = round(dw / 2 - 0.1)`` so an odd pixel goes right / bottom; the pad value is 114;
- resize with ``cv2.INTER_LINEAR`` (skipped when the size already matches), BGR -> RGB, HWC -> CHW, ``/ 255``
  in float32 (layout ``"nchw_f32"``) — or, for graphs that do that themselves (``seawatch models fetch`` fuses it
  into the exported graph, see :mod:`seawatch.vision.export.fuse`), the letterboxed BGR bytes as they are,
  ``(B, H, W, 3) uint8`` (layout ``"nhwc_u8"``): no per-pixel work in numpy at all.

Frames of different sizes share one batch: each is letterboxed as above, then the batch takes the largest padded
height and width and every frame is centred in it the same way (for a batch of equal frames this is exactly
``LetterBox(auto=True)``). The returned :class:`LetterboxBatch` carries per frame the numbers that undo it with
array operations (``(x - pad_x) / gain_x``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from seawatch.errors import InputError

PAD_VALUE = 114


def round_half_even(x: float) -> int:
    """Python's ``round`` (banker's rounding), spelled out because ultralytics' rounding is exactly this."""
    return int(round(x))


def check_imgsz(imgsz: int, stride_px: int) -> int:
    """``imgsz`` rounded up to a multiple of the stride (as ultralytics' ``check_imgsz`` does)."""
    if imgsz <= 0:
        raise ValueError(f"imgsz must be positive, got {imgsz}")
    return int(math.ceil(imgsz / stride_px) * stride_px)


@dataclass(frozen=True, slots=True)
class LetterboxBatch:
    """A preprocessed batch and how to map its pixels back to each source frame.

    Attributes:
        tensor: ``(B, 3, H, W) float32`` RGB in [0, 1] (layout ``"nchw_f32"``) or ``(B, H, W, 3) uint8`` BGR
            (layout ``"nhwc_u8"``). It is a view into the preprocessor's reusable buffer: it is overwritten by the
            next call, so copy it if you keep it.
        src_hw: ``(B, 2) int64`` source height and width, pixels.
        scale: ``(B,) float64`` the ratio ``r`` (resized / source) used for the long side.
        gain_xy: ``(B, 2) float64`` the actual per-axis ratios ``new_w / w``, ``new_h / h`` after rounding.
        pad_xy: ``(B, 2) int64`` left and top padding inside the batch tensor, pixels.
        resized_hw: ``(B, 2) int64`` height and width of the resized frame inside the tensor.
    """

    tensor: np.ndarray
    src_hw: np.ndarray
    scale: np.ndarray
    gain_xy: np.ndarray
    pad_xy: np.ndarray
    resized_hw: np.ndarray
    layout: str = "nchw_f32"

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    @property
    def input_hw(self) -> tuple[int, int]:
        """Height and width of the model input, pixels."""
        if self.layout == "nhwc_u8":
            return int(self.tensor.shape[1]), int(self.tensor.shape[2])
        return int(self.tensor.shape[2]), int(self.tensor.shape[3])

    def to_source(self, xyxy: np.ndarray, index: int, clip: bool = True) -> np.ndarray:
        """Map ``(N, 4)`` xyxy boxes in tensor pixels of frame ``index`` back to its source pixels (new array)."""
        out = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4).copy()
        pad = self.pad_xy[index].astype(np.float32)
        gain = self.gain_xy[index].astype(np.float32)
        out[:, 0::2] = (out[:, 0::2] - pad[0]) / gain[0]
        out[:, 1::2] = (out[:, 1::2] - pad[1]) / gain[1]
        if clip:
            h, w = self.src_hw[index]
            np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
            np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
        return out

    def to_tensor(self, xyxy: np.ndarray, index: int) -> np.ndarray:
        """Inverse of :meth:`to_source` (without clipping): source pixels -> tensor pixels."""
        out = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).copy()
        out[:, 0::2] = out[:, 0::2] * self.gain_xy[index, 0] + self.pad_xy[index, 0]
        out[:, 1::2] = out[:, 1::2] * self.gain_xy[index, 1] + self.pad_xy[index, 1]
        return out


def letterbox_params(src_hw: tuple[int, int], imgsz: int, stride_px: int) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Scale ratio, resized (h, w) and minimal padded (h, w) for one frame (ultralytics ``LetterBox(auto=True)``).

    ``imgsz`` should already be a multiple of ``stride_px`` (see :func:`check_imgsz`).
    """
    h, w = int(src_hw[0]), int(src_hw[1])
    r = min(imgsz / h, imgsz / w)
    new_w, new_h = max(round_half_even(w * r), 1), max(round_half_even(h * r), 1)
    dw, dh = (imgsz - new_w) % stride_px, (imgsz - new_h) % stride_px
    return r, (new_h, new_w), (new_h + dh, new_w + dw)


def _split_pad(total: int) -> int:
    """Padding before the image when ``total`` pixels of padding are split around it (ultralytics' centring)."""
    return round_half_even(total / 2 - 0.1)


LAYOUTS = ("nchw_f32", "nhwc_u8")


class Preprocessor:
    """Letterboxes lists of BGR frames into a reusable buffer (float32 NCHW RGB, or uint8 NHWC BGR).

    One instance per detector (per worker thread): the buffer is reused, so it is not thread-safe.

    Args:
        imgsz: long side of the model input, pixels (rounded up to a multiple of ``stride_px``).
        stride_px: model stride; padded sides are multiples of it.
        fixed_hw: a static model input (height, width): frames are letterboxed into exactly this size
            (``auto=False``) instead of the minimal rectangle.
        layout: ``"nchw_f32"`` (RGB / 255, the exported graphs' input) or ``"nhwc_u8"`` (BGR bytes, for graphs
            with the normalisation fused in).
    """

    def __init__(self, imgsz: int = 640, stride_px: int = 32, fixed_hw: tuple[int, int] | None = None,
                 layout: str = "nchw_f32"):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.stride_px = int(stride_px)
        self.fixed_hw = None if fixed_hw is None else (int(fixed_hw[0]), int(fixed_hw[1]))
        self.imgsz = check_imgsz(imgsz, self.stride_px) if fixed_hw is None else max(self.fixed_hw)
        self.layout = layout
        self._dtype = np.uint8 if layout == "nhwc_u8" else np.float32
        self._local = threading.local()  # the reused input buffer, one per thread: analysis workers share detectors
        self._pad_f32 = np.float32(PAD_VALUE) / np.float32(255)

    def _buffer(self, shape: tuple[int, int, int, int]) -> np.ndarray:
        n = shape[0] * shape[1] * shape[2] * shape[3]
        flat = getattr(self._local, "flat", None)
        if flat is None or flat.size < n:
            flat = self._local.flat = np.empty((n,), self._dtype)
        return flat[:n].reshape(shape)

    def plan(self, shapes: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """Per-frame scale, resized (h, w), padding (x, y) and the batch (H, W) for frames of ``shapes`` (h, w)."""
        b = len(shapes)
        scale = np.empty((b,), np.float64)
        resized = np.empty((b, 2), np.int64)
        padded = np.empty((b, 2), np.int64)
        for i, hw in enumerate(shapes):  # per frame, not per pixel or box: a handful of scalar ops
            if self.fixed_hw is None:
                r, new_hw, pad_hw = letterbox_params(hw, self.imgsz, self.stride_px)
            else:
                fh, fw = self.fixed_hw
                r = min(fh / hw[0], fw / hw[1])
                new_hw = (max(round_half_even(hw[0] * r), 1), max(round_half_even(hw[1] * r), 1))
                pad_hw = (fh, fw)
            scale[i] = r
            resized[i] = new_hw
            padded[i] = pad_hw
        batch_hw = (int(padded[:, 0].max()), int(padded[:, 1].max()))
        pad_xy = np.empty((b, 2), np.int64)
        for i in range(b):
            pad_xy[i, 0] = _split_pad(batch_hw[1] - int(resized[i, 1]))
            pad_xy[i, 1] = _split_pad(batch_hw[0] - int(resized[i, 0]))
        return scale, resized, pad_xy, padded, batch_hw

    def __call__(self, images: list[np.ndarray]) -> LetterboxBatch:
        """Letterbox ``images`` (each ``(H, W, 3) uint8`` BGR) into one batch of this preprocessor's layout."""
        if not images:
            raise InputError("cannot preprocess an empty list of frames")
        shapes = []
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                desc = f"{getattr(im, 'shape', None)} {getattr(im, 'dtype', type(im).__name__)}"
                raise InputError(f"frame {i}: expected an (H, W, 3) uint8 BGR image, got {desc}")
            if im.shape[0] == 0 or im.shape[1] == 0:
                raise InputError(f"frame {i}: empty image {im.shape}")
            shapes.append((im.shape[0], im.shape[1]))
        scale, resized, pad_xy, _, (bh, bw) = self.plan(shapes)
        src_hw = np.asarray(shapes, dtype=np.int64)
        gain_xy = np.stack([resized[:, 1] / src_hw[:, 1], resized[:, 0] / src_hw[:, 0]], axis=1)
        if self.layout == "nhwc_u8":
            buf = self._buffer((len(images), bh, bw, 3))
            for i, im in enumerate(images):
                nh, nw = int(resized[i, 0]), int(resized[i, 1])
                px, py = int(pad_xy[i, 0]), int(pad_xy[i, 1])
                dst = buf[i]
                if py:
                    dst[:py] = PAD_VALUE
                if py + nh < bh:
                    dst[py + nh :] = PAD_VALUE
                if px:
                    dst[py : py + nh, :px] = PAD_VALUE
                if px + nw < bw:
                    dst[py : py + nh, px + nw :] = PAD_VALUE
                if (nh, nw) != im.shape[:2]:
                    region = dst[py : py + nh, px : px + nw]
                    if region.flags.c_contiguous:  # resize straight into the batch (no padding columns)
                        cv2.resize(im, (nw, nh), dst=region, interpolation=cv2.INTER_LINEAR)
                    else:
                        region[...] = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
                else:
                    dst[py : py + nh, px : px + nw] = im
            return LetterboxBatch(buf, src_hw, scale, gain_xy, pad_xy, resized, self.layout)
        buf = self._buffer((len(images), 3, bh, bw))
        inv255 = np.float32(255)
        for i, im in enumerate(images):
            nh, nw = int(resized[i, 0]), int(resized[i, 1])
            px, py = int(pad_xy[i, 0]), int(pad_xy[i, 1])
            if (nh, nw) != im.shape[:2]:
                im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
            dst = buf[i]
            # Only the borders get the pad value: the image region is overwritten right after.
            if py:
                dst[:, :py].fill(self._pad_f32)
            if py + nh < bh:
                dst[:, py + nh :].fill(self._pad_f32)
            if px:
                dst[:, py : py + nh, :px].fill(self._pad_f32)
            if px + nw < bw:
                dst[:, py : py + nh, px + nw :].fill(self._pad_f32)
            # BGR -> RGB and HWC -> CHW as a strided view; one float32 division pass writes the buffer.
            np.divide(im[:, :, ::-1].transpose(2, 0, 1), inv255, out=dst[:, py : py + nh, px : px + nw], casting="unsafe")
        return LetterboxBatch(buf, src_hw, scale, gain_xy, pad_xy, resized, self.layout)


def letterbox(images: list[np.ndarray], imgsz: int = 640, stride_px: int = 32) -> LetterboxBatch:
    """One-shot :class:`Preprocessor` call (allocates a fresh buffer; use a Preprocessor on the hot path)."""
    return Preprocessor(imgsz, stride_px)(images)
