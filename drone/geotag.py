"""Geotag detections in one frame: the pose at the frame's capture time, then pixel -> WGS84.

This is the call vision makes for a drone source: ``geotag(locator, timeline, pixels_px, capture_time_ns)``.
When the pose is stale (no telemetry, a gap, telemetry too old) every point comes back invalid with the
timeline's reason, so the event still goes out, without a position, saying why.
"""

from __future__ import annotations

import numpy as np

from seawatch.drone.geometry import GeoLocator, GroundPoints, _as_pixels, _empty
from seawatch.drone.pose import PoseFix, PoseTimeline


def geotag(
    locator: GeoLocator, timeline: PoseTimeline, pixels_px, capture_time_ns: int
) -> tuple[GroundPoints, PoseFix]:
    """Ground points for pixels ``(N, 2)`` of a frame captured at ``capture_time_ns`` (UTC ns), and the pose fix."""
    px = _as_pixels(pixels_px)
    fix = timeline.pose_at(capture_time_ns)
    if fix.stale or fix.pose is None:
        return _empty(px.shape[0], f"no pose: {fix.reason}"), fix
    return locator.locate(px, fix.pose), fix


def box_ground_points(xyxy_px) -> np.ndarray:
    """The pixel to geolocate for each box ``(N, 4)``: the bottom centre (where an object meets the surface)."""
    b = np.asarray(xyxy_px, float).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, b[:, 3]], axis=1)
