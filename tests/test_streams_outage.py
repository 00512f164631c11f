"""A camera that is down for long: one stable ``offline`` state with ``down_since_ns`` and ``attempts``, a WARNING for
the first failure and a periodic summary (repeats at DEBUG), a backoff that stretches after a minute down, "back
after" when it returns; the watchdog's open guard by the open's own start time; MQTT and the API carry the fields.

No network server: ``open_input`` is replaced by a stub that fails (or opens a small local file as if it were the
camera). No assertion depends on how fast the machine is: the tests wait for counts, with generous deadlines.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from seawatch.errors import StreamError
from seawatch.streams import source as source_mod
from seawatch.streams.source import DOWN_SUMMARY_S, Source, SourceConfig, SourceStatus, State
from test_streams import make_clip

LOGGER = "seawatch.streams.source"


def _wait(cond, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def _records(caplog, sid: str, level: int | None = None) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.getMessage().startswith((f"source {sid} ", f"source {sid}:"))
            and (level is None or r.levelno == level)]


class StateLog:
    """Every state the source takes, in order (hooked into its status updates, so no change is missed by polling)."""

    def __init__(self, src: Source) -> None:
        self.states: list[State] = [src.status().state]
        original = src._set_state_locked

        def hooked(state, error=None, **counters):
            original(state, error, **counters)
            if src._status.state is not self.states[-1]:
                self.states.append(src._status.state)

        src._set_state_locked = hooked


# ---------------------------------------------------------------------------------------------- status and logs
def test_failures_keep_one_offline_state_count_attempts_and_log_once(caplog):
    """Driven step by step (no thread): the first failure WARNs and sets down_since_ns, the repeats are DEBUG and
    leave state, since_ns and down_since_ns alone, a summary WARNs once per DOWN_SUMMARY_S, and coming back is one
    INFO line "back after" that clears the outage fields."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    src = Source(SourceConfig("cam-3", "rtsp://admin:secret@10.0.0.3/live"))
    assert src.status().state is State.CONNECTING and src.status().down_since_ns is None
    with src._lock:
        src._failed_locked("cannot open: connection refused; retry in 0.5 s")
    first = src.status()
    assert first.state is State.OFFLINE and first.attempts == 1
    assert first.down_since_ns is not None and first.down_since_ns == first.since_ns
    warned = _records(caplog, "cam-3", logging.WARNING)
    assert len(warned) == 1 and "connecting -> offline" in warned[0].getMessage()

    for n in range(2, 12):
        with src._lock:
            src._failed_locked(f"cannot open: connection refused (try {n})")
    st = src.status()
    assert st.state is State.OFFLINE and st.attempts == 11
    assert (st.since_ns, st.down_since_ns) == (first.since_ns, first.down_since_ns)  # how long it has been down
    assert st.last_error.endswith("(try 11)")
    assert len(_records(caplog, "cam-3", logging.WARNING)) == 1  # the repeats are not warnings
    assert len(_records(caplog, "cam-3", logging.DEBUG)) == 10

    # DOWN_SUMMARY_S later (the clock it uses moved back instead of waiting): one summary, then quiet again
    src._down_mono -= 35 * 60
    src._summary_mono -= DOWN_SUMMARY_S
    for _ in range(3):
        with src._lock:
            src._failed_locked("cannot open: no route to host")
    summaries = [r.getMessage() for r in _records(caplog, "cam-3", logging.WARNING)][1:]
    assert len(summaries) == 1, summaries
    assert "still down for 35 min, 12 attempts, last error: cannot open: no route to host" in summaries[0]

    src._set_state(State.ONLINE)
    back = src.status()
    assert back.state is State.ONLINE and back.down_since_ns is None and back.attempts == 0
    infos = [r.getMessage() for r in _records(caplog, "cam-3", logging.INFO)]
    assert len(infos) == 1 and "offline -> online: back after 35 min (14 failed attempts)" in infos[0]
    assert "secret" not in caplog.text and "secret" not in str(back.as_dict())


def test_backoff_stretches_after_a_minute_down():
    cfg = SourceConfig("cam", "rtsp://cam/1", backoff_initial_s=0.5, backoff_max_s=2.0, backoff_jitter=0.25)
    assert (cfg.backoff_long_after_s, cfg.backoff_long_max_s) == (60.0, 15.0)
    src = Source(cfg, seed=1)
    with src._lock:
        for _ in range(20):
            src._failed_locked("down")
        short = [src._retry_delay_s() for _ in range(50)]
        src._down_mono = time.monotonic() - 61.0
        long = [src._retry_delay_s() for _ in range(50)]
    assert max(short) <= 2.0 * 1.25  # a short outage keeps the fast reconnect
    assert min(long) >= 15.0 * 0.75 and max(long) <= 15.0 * 1.25
    # a first failure always gets the shortest delay, however long the last outage was
    src._set_state(State.ONLINE)
    with src._lock:
        assert src._retry_delay_s() <= 0.5 * 1.25


# ---------------------------------------------------------------------------------------------- a running reader
@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("outage") / "clip.mp4", seconds=1, size="160x120", rate=10, gop=5)


def test_a_down_camera_stays_offline_while_it_retries_and_says_when_it_is_back(monkeypatch, small_clip, caplog):
    """A reader thread against a camera that refuses 6 connections, then serves a short stream once, then is gone
    again: the state goes connecting -> offline (one WARNING) -> online ("back after", attempts cleared) ->
    offline (a new outage), never flipping through connecting on a retry."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    real_open = source_mod.open_input
    calls: list[float] = []

    def fake_open(config):
        calls.append(time.monotonic())
        if len(calls) == 7:  # the camera is back for one short stream (a live source: ends = connection closed)
            return real_open(replace(config, url=str(small_clip), kind="file"))
        raise StreamError(f"source {config.source_id}: cannot open {config.redacted_url}: Connection refused")

    monkeypatch.setattr(source_mod, "open_input", fake_open)
    src = Source(SourceConfig("cam-3", "rtsp://u:pw@cam/3", backoff_initial_s=0.01, backoff_max_s=0.05), seed=3)
    states = StateLog(src)
    src.start()
    try:
        assert _wait(lambda: len(calls) >= 4)
        down = src.status()
        assert down.state is State.OFFLINE and down.attempts >= 3 and down.down_since_ns is not None
        assert _wait(lambda: len(calls) >= 10 and src.status().attempts >= 2 and src.status().frames_decoded > 0)
        st = src.status()
        assert st.state is State.OFFLINE and st.frames_decoded >= 5
        assert st.down_since_ns > down.down_since_ns  # a new outage, with its own start
        # the stream ending was the new outage's first failed attempt; the open in flight may not count yet
        assert st.attempts in (len(calls) - 6, len(calls) - 7)
    finally:
        src.stop(2.0)
    assert states.states == [State.CONNECTING, State.OFFLINE, State.ONLINE, State.OFFLINE, State.STOPPED]
    warnings = [r.getMessage() for r in _records(caplog, "cam-3", logging.WARNING)]
    assert len(warnings) == 2, warnings  # connecting -> offline, online -> offline
    infos = [r.getMessage() for r in _records(caplog, "cam-3", logging.INFO)]
    assert any("offline -> online: back after" in m and "(6 failed attempts)" in m for m in infos), infos
    assert "-> connecting" not in caplog.text


def test_stop_while_the_watchdog_spawns_a_worker(monkeypatch):
    """The watchdog lists a new worker just before it starts it; a stop() in between used to join the unstarted
    thread and raise RuntimeError (seen once in a full run). The listed worker then starts on an old generation and
    returns at once."""
    from seawatch.streams.source import Source, SourceConfig, State

    monkeypatch.setattr(source_mod, "open_input", lambda config: (_ for _ in ()).throw(StreamError("refused")))
    src = Source(SourceConfig("cam", "rtsp://cam/1", backoff_initial_s=5.0)).start()
    assert _wait(lambda: src.status().state is State.OFFLINE)  # the worker waits in its backoff now
    listed = threading.Thread(target=src._run, args=(0,), daemon=True)  # as _spawn_worker leaves it, not started
    src._workers.append(listed)
    t = time.monotonic()
    assert src.stop(2.0)  # no RuntimeError, and the worker in its backoff (2.5-5 s) stops at once
    assert time.monotonic() - t < 1.0
    listed.start()
    listed.join(2.0)
    assert not listed.is_alive() and src.status().state is State.STOPPED


def test_watchdog_guards_an_open_that_hangs_while_the_source_is_offline(monkeypatch):
    """The open guard uses the open's own start time: a retry that hangs inside FFmpeg's open (state offline, as
    the source already failed once) is abandoned after open_timeout_s + stall_timeout_s and retried."""
    release = threading.Event()
    calls: list[float] = []

    def fake_open(config):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise StreamError("source cam: cannot open: Connection refused")
        release.wait(30)  # a server that accepts and never answers, with PyAV's timeout restarting on each byte
        raise StreamError("source cam: cannot open: released")

    monkeypatch.setattr(source_mod, "open_input", fake_open)
    src = Source(SourceConfig("cam", "rtsp://cam/1", open_timeout_s=0.3, stall_timeout_s=0.3,
                              backoff_initial_s=0.01)).start()
    try:
        assert _wait(lambda: src.status().stalls >= 2)
        st = src.status()
        assert st.state is State.OFFLINE and "open did not finish" in st.last_error
        assert st.attempts >= 3 and len(calls) >= 3
        assert all(b - a >= 0.6 for a, b in zip(calls[1:], calls[2:]))  # each hung open got its full time
    finally:
        release.set()
        src.stop(2.0)


# ---------------------------------------------------------------------------------------------- MQTT (no broker)
def test_mqtt_publishes_the_outage_not_every_attempt(monkeypatch):
    pytest.importorskip("paho.mqtt.client")
    from seawatch.service import mqtt as mqtt_mod
    from seawatch.service.config import MqttConfig

    pub = mqtt_mod.MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=1, topic_prefix="sw"))
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(pub, "_pub", lambda topic, payload, retain=False: sent.append((topic, payload)) or True)
    pub.connected.set()
    t_down = 1_800_000_000_000_000_000

    def status(state, attempts, down=t_down):
        return SourceStatus("cam-3", "rtsp://***@cam/3", State(state), t_down, last_error=f"refused ({attempts})",
                            down_since_ns=down, attempts=attempts).as_dict()

    pub.source_states([status("offline", 1)])
    assert [t for t, _ in sent] == ["sw/cam-3/status", "sw/cam-3/status/detail"]
    assert sent[0][1] == "offline"
    assert json.loads(sent[1][1]) == {"state": "offline", "since_ns": t_down, "down_since_ns": t_down, "attempts": 1,
                                      "last_error": "refused (1)"}
    sent.clear()
    for n in range(2, 30):  # retries every 2 s for a minute: nothing new to say yet
        pub.source_states([status("offline", n)])
    assert sent == []
    payload, key, at = pub._detail["cam-3"]
    pub._detail["cam-3"] = (payload, key, at - mqtt_mod.DETAIL_INTERVAL_S)  # a minute later
    pub.source_states([status("offline", 31)])
    assert [(t, json.loads(p)["attempts"]) for t, p in sent] == [("sw/cam-3/status/detail", 31)]
    sent.clear()
    pub.source_states([status("online", 0, down=None)])
    assert [t for t, _ in sent] == ["sw/cam-3/status", "sw/cam-3/status/detail"]
    assert sent[0][1] == "online" and json.loads(sent[1][1])["down_since_ns"] is None


# ---------------------------------------------------------------------------------------------- after a connect
@pytest.mark.parametrize("pts_of", [lambda i: 0, lambda i: (1000 - i) * 3600, lambda i: None if i else 0],
                         ids=["stuck", "backwards", "then-none"])
def test_packets_held_at_connect_are_released_whatever_their_timestamps(monkeypatch, pts_of):
    """The first packets of a live session are held until they arrive paced (so the connect burst is stamped on
    the stream's clock); a stream whose timestamps never show pacing (stuck, going back, vanishing) must still
    get its frames after at most HOLD_MAX_S, not after hundreds of packets."""
    from fractions import Fraction
    from types import SimpleNamespace

    import numpy as np

    tb = Fraction(1, 90000)

    def decode(packet):
        if packet is None:
            return []
        return [SimpleNamespace(pts=packet.pts, time_base=tb, format=SimpleNamespace(name="rgb24"),
                                to_ndarray=lambda format: np.zeros((8, 8, 3), np.uint8))]

    sent = []

    class Container:
        def __init__(self):
            ctx = SimpleNamespace(name="mpeg4", width=8, height=8, extradata=b"", thread_count=0, thread_type=None,
                                  is_open=False, decode=decode)
            self.streams = SimpleNamespace(video=[SimpleNamespace(codec_context=ctx, average_rate=25, guessed_rate=25,
                                                                  time_base=tb, frames=0, start_time=0)])

        def demux(self, stream):
            for i in range(100_000):
                time.sleep(0.04)  # paced by the "network", but the timestamps do not show it
                sent.append(time.monotonic())
                yield SimpleNamespace(pts=pts_of(i), dts=None, size=100, is_keyframe=i % 25 == 0)

        def close(self):
            pass

    monkeypatch.setattr(source_mod, "open_input", lambda config: Container())
    src = Source(SourceConfig("odd", "rtsp://cam/1", queue_size=1000)).start()
    try:
        assert _wait(lambda: src.status().frames_decoded > 0, 20)
        n_sent = len(sent)
        assert src.status().state is State.ONLINE
        # released HOLD_MAX_S (1 s, 25 packets) after the first packet arrived, not after 256 packets (10 s)
        assert n_sent < 25 * (Source.HOLD_MAX_S + 3), n_sent
    finally:
        src.stop(2.0)
