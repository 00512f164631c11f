"""Recording and clip safety: a clip never shows video from another time, a clip is never stored cut short while
its post-roll is still coming, a crash loses at most one fragment of recording, retention never deletes the last
segment, and clips of MPEG-4 Part 2 cameras cut from their segments."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from seawatch.errors import StreamError
from seawatch.streams.packets import EncodedPacket, PacketRing, coverage_spans, select_window
from seawatch.streams.recording import (
    ClipNotReady,
    ClipStore,
    SegmentRecorder,
    cut_clip,
    enforce_retention,
    ffprobe_summary,
    list_segments,
    mp4_top_boxes,
    read_clip_coverage,
    write_mp4,
)
from seawatch.streams.source import Source, SourceConfig
from test_streams import S, _ffmpeg, ffprobe, make_clip

T0 = 1_800_000_000 * S


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    """4 s, 320x240, 25 fps, H.264 baseline, 1 s GOP (100 frames)."""
    return make_clip(tmp_path_factory.mktemp("media") / "small.mp4", size="320x240")


def _record(clip: Path, root: Path, source_id: str, start_ns: int, segment_s: float = 2.0, **kw) -> SegmentRecorder:
    rec = SegmentRecorder(root, source_id, segment_s=segment_s, max_age_s=None, max_total_bytes=None, **kw)
    with Source(SourceConfig(source_id, str(clip), pace="fast", start_time_ns=start_ns), recorder=rec) as src:
        for _ in src:
            pass
    return rec


def _decodes_cleanly(path: Path) -> bool:
    err = subprocess.run([_ffmpeg(), "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True)
    return err.returncode == 0 and err.stderr.strip() == ""


# ------------------------------------------------------------------------------------------- 1: windows with no video
def _run(t0_s: float, t1_s: float, fps: int = 10, gop: int = 10) -> list[EncodedPacket]:
    n = round((t1_s - t0_s) * fps)
    tb = Fraction(1, 90000)
    return [EncodedPacket(b"x", round((t0_s + i / fps) * 90000), round((t0_s + i / fps) * 90000), tb, i % gop == 0,
                          round((t0_s + i / fps) * S)) for i in range(n)]


# two runs of 10 fps video, 0..5.9 s and 10..15.9 s: the camera was out from 6 s to 10 s
_OUTAGE = _run(0, 6) + _run(10, 16)


@pytest.mark.parametrize("start_s, end_s, first_s, last_s", [
    (7, 9, None, None),          # inside the outage: nothing, not 5.0-5.9 s
    (17, 19, None, None),        # after the newest packet: nothing, not 15.0-15.9 s
    (-5, -3, None, None),        # before the first packet
    (7, 12, 10.0, 12.0),         # starts in the outage: from the first keyframe after it, not from 5.0 s
    (5.5, 8, 5.0, 5.9),          # ends in the outage: what there is, from the keyframe before the start
    (1.5, 2.5, 1.0, 2.5),        # covered: from the keyframe before
    (5.5, 11.5, 5.0, 11.5),      # an outage inside: both sides
])
def test_select_window_never_returns_video_from_outside_the_window(start_s, end_s, first_s, last_s):
    win = select_window(_OUTAGE, round(start_s * S), round(end_s * S))
    if first_s is None:
        assert win == []
    else:
        assert win[0].is_keyframe
        assert (win[0].capture_time_ns, win[-1].capture_time_ns) == (round(first_s * S), round(last_s * S))


def test_a_slow_camera_is_not_an_outage_between_its_pictures():
    slow = _run(0, 60, fps=1, gop=1)[::5]  # one picture every 5 s (a snapshot camera), each a keyframe
    win = select_window(slow, 6 * S, 12 * S)
    assert (win[0].capture_time_ns, win[-1].capture_time_ns) == (5 * S, 10 * S)  # the picture on screen at 6 s
    assert coverage_spans(slow, 6 * S, 22 * S) == [(10 * S, 20 * S)]
    out = slow[:4] + slow[8:]  # 15 s .. 40 s missing: still an outage
    assert select_window(out, 22 * S, 38 * S) == []


def test_clip_of_an_outage_is_an_error_and_a_partial_clip_says_so(small_clip, tmp_path):
    rec = tmp_path / "rec"
    _record(small_clip, rec, "cam", T0)                 # 0 .. 3.96 s
    _record(small_clip, rec, "cam", T0 + 10 * S)        # 10 .. 13.96 s: out for 6 s in between
    for a, b in [(5, 8), (15, 17)]:
        with pytest.raises(StreamError, match="no recorded video"):
            cut_clip(tmp_path / f"none_{a}.mp4", T0 + a * S, T0 + b * S, recordings=rec, source_id="cam")
    full = cut_clip(tmp_path / "full.mp4", T0 + S, T0 + 3 * S, recordings=rec, source_id="cam")
    cov = read_clip_coverage(full)
    assert not cov.partial and cov.spans == ((T0 + S, T0 + 3 * S),)
    part = cut_clip(tmp_path / "part.mp4", T0 + 2 * S, T0 + 11 * S, recordings=rec, source_id="cam")
    cov = read_clip_coverage(part)
    assert cov.partial and [(a - T0) / S for a, _ in cov.spans] == [2.0, 10.0]
    assert (cov.spans[0][1] - T0) / S == pytest.approx(3.96) and cov.spans[1][1] == T0 + 11 * S
    info = ffprobe_summary(part)
    assert info["codec"] == "h264" and info["packets"] == 50 + 26  # 2.0..3.96 s and 10.0..11.0 s
    assert mp4_top_boxes(part).index("moov") < mp4_top_boxes(part).index("mdat")
    assert "partial" in ffprobe(part, "format_tags=comment")


def test_evidence_manifest_says_what_of_its_window_a_clip_shows(small_clip, tmp_path):
    import json
    import zipfile

    from seawatch.service.export import evidence_zip

    rec = tmp_path / "rec"
    _record(small_clip, rec, "cam", T0)                 # 0 .. 3.96 s
    _record(small_clip, rec, "cam", T0 + 10 * S)        # 10 .. 13.96 s: out for 6 s in between
    full = cut_clip(tmp_path / "full.mp4", T0 + S, T0 + 3 * S, recordings=rec, source_id="cam")
    part = cut_clip(tmp_path / "part.mp4", T0 + 2 * S, T0 + 11 * S, recordings=rec, source_id="cam")
    other = tmp_path / "other.mp4"
    other.write_bytes(small_clip.read_bytes())  # no coverage record: an older clip
    got = {}
    for name, clip in [("full", full), ("part", part), ("other", other)]:
        zpath = tmp_path / f"{name}.zip"
        evidence_zip(zpath, {"id": "ev1"}, [], snapshot=None, clip=clip, missing={}, exported_by="user:r", version="t")
        got[name] = json.loads(zipfile.ZipFile(zpath).read("manifest.json"))["clip_coverage"]
    assert got["full"]["known"] and got["full"]["complete"] and got["full"]["covered_s"] == pytest.approx(2.0)
    assert got["part"]["known"] and not got["part"]["complete"]
    assert got["part"]["window_s"] == pytest.approx(9.0) and got["part"]["covered_s"] == pytest.approx(2.96, abs=0.01)
    assert len(got["part"]["covered"]) == 2 and got["part"]["covered"][1][0].endswith("10Z")
    assert got["other"] == {"known": False}


# ------------------------------------------------------------------------------------------- 2: post-roll to come
def test_clip_asked_for_before_its_post_roll_is_not_stored_short(small_clip, tmp_path):
    t0 = time.time_ns()  # a live source: capture times are wall-clock times
    ring = PacketRing(max_age_s=60)
    store = ClipStore(tmp_path / "clips", tmp_path / "rec")
    store.add_ring("cam", ring)
    store.LIVE_MARGIN_S = 1.0
    a, b = t0 + S // 2, t0 + int(3.5 * S)
    late = (t0 + 3 * S, t0 + 6 * S)  # runs past the end of the video
    with Source(SourceConfig("cam", str(small_clip), pace="realtime", start_time_ns=t0), ring=ring) as src:
        reader = threading.Thread(target=lambda: [None for _ in src], daemon=True)  # a file source waits for its reader
        reader.start()
        deadline = time.monotonic() + 30
        while (ring.newest_ns is None or ring.newest_ns < t0 + int(1.5 * S)) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ClipNotReady, match="not complete yet") as err:
            store.get("cam", a, b)
        assert 1 < err.value.retry_after_s < 4
        assert not store.path_for("cam", a, b).exists()  # nothing stored under the final name
        p = store.get("cam", a, b, wait_s=10)  # waits for the post-roll
        assert ffprobe_summary(p)["packets"] == 88  # 0 .. 3.48 s, all of it
        assert not read_clip_coverage(p).partial
        with pytest.raises(ClipNotReady):
            store.get("cam", *late)
        reader.join(30)
    while time.time_ns() < late[1] + S:
        time.sleep(0.1)
    p = store.get("cam", *late)
    assert read_clip_coverage(p).partial and ffprobe_summary(p)["packets"] == 25


def test_a_slow_clip_cut_holds_up_only_requests_for_that_clip(tmp_path, monkeypatch):
    """Cutting one clip (a re-encode across a format change takes seconds) used to hold one lock for every clip of
    every camera. Now a second request for the same clip waits for it and gets the same file (cut once), while a
    clip of another window is cut meanwhile."""
    import seawatch.streams.recording as recording

    store = ClipStore(tmp_path / "clips", tmp_path / "rec")
    slow_started, release = threading.Event(), threading.Event()
    cuts: list[tuple[int, int]] = []

    def fake_cut(path, start_ns, end_ns, **kw):
        cuts.append((start_ns, end_ns))
        if start_ns == 1 * S:
            slow_started.set()
            assert release.wait(10)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"mp4")
        return path

    monkeypatch.setattr(recording, "cut_clip", fake_cut)
    got: dict[str, object] = {}
    slow = [threading.Thread(target=lambda k=k: got.__setitem__(k, store.get("cam", 1 * S, 2 * S))) for k in ("a", "b")]
    slow[0].start()
    assert slow_started.wait(5)
    slow[1].start()  # the same clip: waits for the first request's cut
    other = store.get("cam2", 5 * S, 6 * S)  # returns while the slow cut is still running
    assert other.read_bytes() == b"mp4" and not release.is_set()
    release.set()
    for t in slow:
        t.join(10)
    assert got["a"] == got["b"] == store.path_for("cam", 1 * S, 2 * S)
    assert sorted(cuts) == [(1 * S, 2 * S), (5 * S, 6 * S)]  # the slow clip cut once
    assert store._cutting == {}  # nothing left behind per clip


def test_api_answers_409_with_retry_after_while_the_clip_is_not_ready(tmp_path, monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx.*")  # starlette's notice about its test client's transport
        from fastapi.testclient import TestClient

    from seawatch.service.app import create_app
    from seawatch.service.auth import hash_password
    from test_service_api import KEY, PASSWORDS, error_code, seed, settings_for, token

    cfg = settings_for(tmp_path, {u: hash_password(p) for u, p in PASSWORDS.items()})
    app = create_app(cfg)
    waits = []

    retry_after_s = [6.4]

    def not_ready(source_id, start_ns, end_ns, *, wait_s=0.0):
        waits.append(wait_s)
        raise ClipNotReady("the clip is not complete yet: the source 'cam-1' has video up to 4.0 s before its end; "
                           f"try again in {round(retry_after_s[0])} s", retry_after_s=retry_after_s[0])

    import seawatch.service.app as app_mod

    monkeypatch.setattr(app_mod, "CLIP_WAIT_S", 1.0)
    with TestClient(app) as client:
        seed(app, app.state.media_dir)
        monkeypatch.setattr(app.state.clips, "get", not_ready)
        # the end comes later than the wait (1 s here): answered at once
        r = client.get("/api/events/ev00000/clip", headers={"X-API-Key": KEY})
        assert r.status_code == 409 and r.headers["retry-after"] == "6" and error_code(r) == "conflict"
        assert "not complete yet" in r.json()["error"]["message"]  # the UI shows this text under the player
        assert len(waits) == 1
        r = client.get("/api/events/ev00000/evidence.zip", headers=token(client, "rita"))
        assert r.status_code == 409 and "not complete yet" in r.json()["error"]["message"]
        # the end is due within the wait: the API waits for the post-roll before giving up, looking again and again
        # (in the event loop: no worker thread held meanwhile)
        retry_after_s[0] = 0.2
        waits.clear()
        t0 = time.monotonic()
        r = client.get("/api/events/ev00000/clip", headers={"X-API-Key": KEY})
        assert r.status_code == 409 and r.headers["retry-after"] == "1"
        assert time.monotonic() - t0 >= 0.9 and len(waits) > 2
        waits.clear()
        r = client.get("/api/events/ev00000/evidence.zip", headers=token(client, "rita"))
        assert r.status_code == 409 and len(waits) > 2


def test_clip_requests_for_future_windows_cannot_tie_up_the_api(tmp_path, monkeypatch):
    """A window whose end cannot be recorded within the wait is answered at once (409), one ending over an hour
    ahead is refused (422), and clients waiting for a post-roll hold no worker thread: 60 of them at once leave
    the rest of the API answering at once (an operator asking for far-future clips froze it for 13 s)."""
    import threading
    import urllib.error
    import urllib.request

    from conftest import serve_in_thread
    from seawatch.service.app import create_app
    from test_service_api import KEY

    import seawatch.service.app as app_mod

    monkeypatch.setattr(app_mod, "CLIP_WAIT_S", 3.0)
    from seawatch.service.auth import hash_api_key
    from seawatch.service.config import load_config

    app = create_app(load_config(data={"storage": {"data_dir": str(tmp_path / "data")},
                                       "auth": {"api_keys": [{"name": "desk", "role": "operator", "key_sha256": hash_api_key(KEY)}]},
                                       "sources": [{"id": "cam-1", "url": "rtsp://cam/1"}]}))
    calls = []

    # the stand-in recorder times "how far ahead is the window's end" on the monotonic clock the wait is timed by:
    # on the wall clock, a CI machine whose clock was stepped or slewed under load ended a 3 s wait after 0.89 s
    wall_to_mono_ns = time.monotonic_ns() - time.time_ns()

    def not_ready(source_id, start_ns, end_ns, *, wait_s=0.0):
        calls.append(end_ns)
        ahead_s = (end_ns + wall_to_mono_ns - time.monotonic_ns()) / 1e9
        raise ClipNotReady("the clip is not complete yet", retry_after_s=max(1.0, ahead_s + 2.0))

    monkeypatch.setattr(app.state.clips, "get", not_ready)

    def get(path):
        req = urllib.request.Request(f"{base}{path}", headers={"X-API-Key": KEY})
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, time.monotonic() - t0, dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, time.monotonic() - t0, dict(e.headers)

    with serve_in_thread(app) as port:
        base = f"http://127.0.0.1:{port}"
        now = time.time_ns()
        # ends in 10 min: cannot be complete within the 3 s wait, answered at once with when to ask again
        status, took_s, headers = get(f"/api/sources/cam-1/clip?start_ns={now}&end_ns={now + 600 * S}")
        assert status == 409 and took_s < 1.5 and 590 <= int(headers["retry-after"]) <= 610, (status, took_s, headers)
        # a live camera's window ending beyond an hour from now (the audit's year 2262): refused at once
        far = 9_223_372_036_854_775_000
        status, took_s, _ = get(f"/api/sources/cam-1/clip?start_ns={far - 60 * S}&end_ns={far}")
        assert status == 422 and took_s < 1.5
        # 60 clients waiting for a post-roll 2 s ahead (each waits up to 3 s): the API still answers at once
        results = []
        end = time.time_ns() + 1 * S
        waiting = [threading.Thread(target=lambda: results.append(
            get(f"/api/sources/cam-1/clip?start_ns={end - 30 * S}&end_ns={end}"))) for _ in range(60)]
        for t in waiting:
            t.start()
        time.sleep(0.5)
        status, took_s, _ = get("/api/health")
        assert status == 200 and took_s < 1.0, took_s
        for t in waiting:
            t.join(30)
        assert len(results) == 60 and all(r[0] == 409 for r in results)
        # they did wait for the post-roll (at least until its Retry-After fell under the wait left: 2.25 s)
        assert min(r[1] for r in results) >= 1.0


# ------------------------------------------------------------------------------------------- 3: kill -9
_CHILD = """
import sys
from seawatch.streams.recording import SegmentRecorder
from seawatch.streams.source import Source, SourceConfig
rec = SegmentRecorder(sys.argv[1], "cam", segment_s=60.0)
src = Source(SourceConfig("cam", sys.argv[2], pace="realtime", loop=True, start_time_ns=int(sys.argv[3])), recorder=rec)
for f in src.start():
    pass
"""


def test_segment_left_by_kill_9_is_recovered_and_loses_at_most_a_fragment(small_clip, tmp_path):
    rec = tmp_path / "rec"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(rec), str(small_clip), str(T0)])
    try:
        part = rec / "cam" / f"{T0}.part.mp4"
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.5)  # about 3.5 s recorded: 3 whole 1 s fragments
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert part.exists() and list_segments(rec, "cam") == []
    (rec / "cam" / f"{T0 + 99 * S}.part.mkv").write_bytes(b"")  # killed before anything reached the disk
    total = part.stat().st_size
    # retention counts the leftover: over the cap with nothing finished to delete, but it is not forgotten
    assert enforce_retention(rec, "cam", max_age_s=None, max_total_bytes=total - 1) == []

    recorder = SegmentRecorder(rec, "cam", segment_s=60.0)  # a recorder starting for the source finishes it
    segs = list_segments(rec, "cam")
    assert [s.path for s in segs] == recorder.recovered and len(segs) == 1 and segs[0].start_ns == T0
    assert sorted(f.name for f in (rec / "cam").iterdir()) == [segs[0].path.name]  # the empty one is gone
    assert (segs[0].end_ns - T0) / S >= 2.0  # all but the fragment being written when it was killed
    clip = cut_clip(tmp_path / "c.mp4", T0 + S // 2, T0 + 2 * S, recordings=rec, source_id="cam")
    assert ffprobe_summary(clip)["packets"] == 51 and _decodes_cleanly(clip)


# ------------------------------------------------------------------------------------------- 4: retention cap
def test_size_cap_below_one_segment_keeps_the_newest_and_warns_once(small_clip, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="seawatch.streams.recording"):
        rec = SegmentRecorder(tmp_path / "rec", "cam", segment_s=1.0, max_age_s=None, max_total_bytes=1000)
        with Source(SourceConfig("cam", str(small_clip), pace="fast", start_time_ns=T0), recorder=rec) as src:
            for _ in src:
                pass
    segs = list_segments(tmp_path / "rec", "cam")
    assert rec.segments_written == 4 and [s.start_ns for s in segs] == [T0 + 3 * S]  # the newest, not nothing
    assert sum("smaller than one segment" in r.message for r in caplog.records) == 1
    # the age rule still deletes it once it is too old
    assert enforce_retention(tmp_path / "rec", "cam", max_age_s=1, max_total_bytes=1000, now_ns=T0 + 60 * S)


# ------------------------------------------------------------------------------------------- 5: MPEG-4 Part 2 cameras
@pytest.fixture(scope="module")
def mpeg4_mp4(tmp_path_factory) -> Path:
    """4 s, 320x240, 25 fps MPEG-4 Part 2 in MP4 (its VOL header only in the container, like the yard camera's)."""
    path = tmp_path_factory.mktemp("m4") / "m4.mp4"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-t", "4", "-c:v", "mpeg4", "-q:v", "5", "-g", "25",
                    str(path)], check=True, timeout=60)
    return path


def test_mpeg4_clips_cut_from_segments(mpeg4_mp4, tmp_path):
    rec = tmp_path / "rec"
    _record(mpeg4_mp4, rec, "m4", T0, segment_s=1.0)
    assert [s.path.suffix for s in list_segments(rec, "m4")] == [".mkv"] * 4
    for a10 in range(0, 40, 3):
        out = cut_clip(tmp_path / f"c{a10}.mp4", T0 + a10 * S // 10, T0 + (a10 + 15) * S // 10, recordings=rec,
                       source_id="m4")
        assert ffprobe_summary(out)["codec"] == "h264" and _decodes_cleanly(out), a10


def test_transcode_skips_packets_the_decoder_refuses(mpeg4_mp4, tmp_path, caplog):
    ring = PacketRing(30)
    with Source(SourceConfig("m4", str(mpeg4_mp4), pace="fast", start_time_ns=0), ring=ring) as src:
        for _ in src:
            pass
    packets = ring.window(0, 2 * S)
    headers = ring.info.extradata
    assert headers.startswith(b"\0\0\x01") and not packets[0].data.startswith(headers)
    no_headers = replace(ring.info, extradata=b"")
    # the first second cannot be decoded (no VOL header anywhere before it); the second can
    second = [replace(p, data=headers + p.data) if p.is_keyframe else p for p in packets[25:]]
    with caplog.at_level(logging.WARNING, logger="seawatch.streams.recording"):
        out = write_mp4(packets[:25] + second, no_headers, tmp_path / "skip.mp4")
    assert ffprobe_summary(out)["packets"] == len(second) and _decodes_cleanly(out)
    assert any("could not be decoded and were skipped" in r.message for r in caplog.records)
    with pytest.raises(StreamError, match="could be decoded"):
        write_mp4(packets[:25], no_headers, tmp_path / "none.mp4")
    assert not (tmp_path / "none.mp4").exists() and not list(tmp_path.glob("*.tmp"))


def test_yard_camera_clips_cut_at_every_window(shared_media, tmp_path):
    from conftest import missing

    video = shared_media / "D_parking_lanes" / "carpark_timelapse_nf.mp4"
    if not video.exists():
        missing(f"{video} is absent from the shared media")
    rec = tmp_path / "rec"
    _record(video, rec, "yard", T0, segment_s=2.0)  # 8.1 s of MPEG-4 Part 2, 20 fps
    ring = PacketRing(60)
    with Source(SourceConfig("yard", str(video), pace="fast", start_time_ns=T0), ring=ring) as src:
        for _ in src:
            pass
    for a10 in range(0, 80, 7):
        for kw in ({"recordings": rec, "source_id": "yard"}, {"ring": ring},
                   {"recordings": rec, "source_id": "yard", "ring": ring}):
            out = cut_clip(tmp_path / "y.mp4", T0 + a10 * S // 10, T0 + (a10 + 20) * S // 10, **kw)
            assert ffprobe_summary(out)["codec"] == "h264", (a10, kw)
