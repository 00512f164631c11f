"""A camera that keeps falling behind its stream and catching up (several cameras analysed on 2 cores) logs one
WARNING, then at most one summary every 5 minutes with how often it fell behind between, not one per time (the
audit of the demo saw 70 such WARNINGs in 20 minutes for its drone camera)."""

from __future__ import annotations

import logging

from seawatch.streams import source as source_mod
from seawatch.streams.source import Source, SourceConfig


def test_falling_behind_again_and_again_is_one_warning_per_interval(monkeypatch, caplog):
    clock = [1000.0]
    monkeypatch.setattr(source_mod.time, "monotonic", lambda: clock[0])
    src = Source(SourceConfig("drone-cam", "udp://0.0.0.0:5600"))
    caplog.set_level(logging.DEBUG, logger="seawatch.streams.source")
    for _ in range(70):  # every ~17 s for 20 minutes
        src._log_behind(1.4)
        clock[0] += 17.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4, warnings  # at 0, ~5, ~10 and ~15 min
    assert warnings[0] == "source drone-cam: 1.4 s behind the stream; decoding keyframes only to catch up"
    assert "(fell behind 18 times in the last 5 min)" in warnings[1], warnings[1]
    assert sum("behind the stream" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG) == 66
