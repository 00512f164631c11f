"""Video ingest: readers for RTSP, files and MJPEG, frame timing, reconnect, recording and clips.

Modules (nothing is imported here, so ``import seawatch.streams`` stays cheap):

* ``source``: :class:`~seawatch.streams.source.Source` (one reader thread per source: open/read timeouts, watchdog,
  reconnect with capped exponential backoff + jitter, status), ``SourceConfig``, ``SourceStatus``, ``SourceGroup``
  (one stop signal for many sources).
* ``frame`` (the ``Frame`` value), ``frame_queue`` (bounded queue, drop-oldest for live, block for files),
  ``clock`` (stream PTS -> UTC ns, monotonic), ``urls`` (``redact_url``).
* ``packets``: encoded packets, the pre-event ``PacketRing``; ``recording``: segment recording with retention,
  ``cut_clip`` (H.264 MP4, faststart), ``save_jpeg``.
* ``motion``: ``MotionGate`` (downscaled luma differencing, ignore masks, minimum analysis interval).
* ``ais``: AIS (NMEA) feeds.
"""
