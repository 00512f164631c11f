"""The frame value that flows from readers into vision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame.

    Attributes:
        source_id: the configured source id.
        seq: per-source sequence number, starting at 0, counting decoded frames (gaps = drops).
        image: ``(H, W, 3) uint8`` BGR pixels.
        capture_time_ns: UTC nanoseconds from the stream's own clock (RTP/PTS mapped to wall clock).
        receive_time_ns: UTC nanoseconds when the reader got the frame.
        pose: the source pose at capture time when known (drone or calibrated camera), else None.
        motion: the motion gate's verdict for this frame (``seawatch.streams.motion.MotionResult``: changed
            fraction and changed regions ``boxes_xyxy_px``) when the source is gated, else None.
    """

    source_id: str
    seq: int
    image: np.ndarray
    capture_time_ns: int
    receive_time_ns: int
    pose: Any | None = None
    motion: Any | None = None

    @property
    def height_px(self) -> int:
        return int(self.image.shape[0])

    @property
    def width_px(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """A decoded picture as a source's queue holds it: still in the decoder's format (YUV), converted to a BGR
    :class:`Frame` only when a consumer takes it (:meth:`to_frame`). A live camera decodes every frame (H.264 needs
    them), but most are dropped from the queue or not due for analysis; their conversion (as costly as the decoding
    itself at 720p) is never paid.

    Attributes: as :class:`Frame`, with ``picture`` (a PyAV ``VideoFrame``, or anything with
    ``to_ndarray(format="bgr24")``) instead of ``image``.
    """

    source_id: str
    seq: int
    picture: Any
    capture_time_ns: int
    receive_time_ns: int
    pose: Any | None = None
    motion: Any | None = None

    def to_frame(self) -> Frame:
        image = self.picture.to_ndarray(format="bgr24")
        return Frame(self.source_id, self.seq, image, self.capture_time_ns, self.receive_time_ns, self.pose,
                     self.motion)
