"""Readers against a real RTSP server (GStreamer's gst-rtsp-server from Debian, run by ``tests/rtsp_server.py``).

The server is killed with SIGKILL, frozen with SIGSTOP (sockets stay open, nothing is sent: the case where PyAV
blocks forever without timeouts), resumed and restarted on the same port. Asserted: no read blocks past its timeout,
the source goes offline and comes back by itself within 5 s of the server's return, capture times stay monotonic,
other sources keep flowing, and a clip cut around a moment has its pre-roll and is H.264 with faststart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import kill_process, missing, start_until_ready
from seawatch.streams.packets import PacketRing
from seawatch.streams.recording import SegmentRecorder, cut_clip, ffprobe_summary, list_segments
from seawatch.streams.source import Source, SourceConfig, State
from conftest import free_port as _free_port

S = 1_000_000_000
SERVER = Path(__file__).with_name("rtsp_server.py")
DEBIAN_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.slow


def _require_tools() -> None:
    if shutil.which("ffmpeg") is None:
        missing("Debian's ffmpeg is not installed (bash scripts/setup.sh)")
    probe = subprocess.run(
        [DEBIAN_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                              "from gi.repository import GstRtspServer"],
        capture_output=True, text=True,
    ) if os.path.exists(DEBIAN_PYTHON) else None
    if probe is None or probe.returncode != 0:
        missing("gst-rtsp-server with python3-gi is not installed for /usr/bin/python3 (bash scripts/setup.sh)")


class RtspServer:
    """One gst-rtsp-server process serving ``clip`` at ``rtsp://127.0.0.1:<port>/<path>``."""

    def __init__(self, clip: Path, paths=("cam1",), live: bool = False) -> None:
        self.clip = clip
        self.paths = list(paths)
        self.live = live
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, path: str = "cam1", userinfo: str = "") -> str:
        return f"rtsp://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/{path}"

    def start(self, timeout_s: float = 10.0) -> float:
        """Start and wait until it listens; returns the monotonic time it became ready."""
        args = [DEBIAN_PYTHON, str(SERVER), "--port", str(self.port), "--file", str(self.clip)]
        for p in self.paths:
            args += ["--path", p]
        if self.live:
            args.append("--live")
        self.proc = start_until_ready(args, "RTSP server", timeout_s)
        return time.monotonic()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None:
            kill_process(self.proc)


@pytest.fixture(scope="module")
def server_clip(tmp_path_factory) -> Path:
    _require_tools()
    path = tmp_path_factory.mktemp("rtsp") / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=1280x720:rate=25", "-t", "10", "-c:v", "libx264", "-preset", "veryfast",
                    "-profile:v", "baseline", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", str(path)],
                   check=True, timeout=120)
    return path


@pytest.fixture()
def servers(server_clip):
    made: list[RtspServer] = []

    def make(paths=("cam1",), live: bool = False) -> RtspServer:
        srv = RtspServer(server_clip, paths, live)
        srv.start()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.kill()


class Consumer(threading.Thread):
    """Reads a source the way the pipeline does; records every frame and how long each read() took."""

    def __init__(self, source: Source, read_timeout_s: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.read_timeout_s = read_timeout_s
        self.frames: list[tuple[float, int, int]] = []  # (monotonic, seq, capture_ns)
        self.max_read_s = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            t = time.monotonic()
            try:
                f = self.source.read(self.read_timeout_s)
            except Exception:  # noqa: BLE001 - the queue closes on stop
                return
            self.max_read_s = max(self.max_read_s, time.monotonic() - t)
            if f is not None:
                self.frames.append((time.monotonic(), f.seq, f.capture_time_ns))

    def count_since(self, t_mono: float) -> int:
        return sum(1 for m, _, _ in self.frames if m >= t_mono)

    def stop(self) -> None:
        self.done.set()
        self.join(2)


def wait_for(pred, timeout_s: float, step_s: float = 0.02) -> float | None:
    """Seconds until pred() was true, or None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return time.monotonic() - t0
        time.sleep(step_s)
    return None


def test_kill9_restart_recovers_within_5s_and_other_sources_keep_flowing(servers, caplog):
    caplog.set_level("INFO", logger="seawatch.streams")
    a_srv = servers(["cam1"])
    b_srv = servers(["cam2"])
    cfg = dict(open_timeout_s=3.0, read_timeout_s=2.0, stall_timeout_s=3.0)
    a = Source(SourceConfig("a", a_srv.url("cam1", "admin:hunter2"), rtsp_transport="tcp", **cfg)).start()
    b = Source(SourceConfig("b", b_srv.url("cam2"), rtsp_transport="udp", **cfg)).start()
    ca, cb = Consumer(a), Consumer(b)
    ca.start(), cb.start()
    try:
        assert wait_for(lambda: a.status().state is State.ONLINE and b.status().state is State.ONLINE, 10) is not None
        assert wait_for(lambda: len(ca.frames) > 25 and len(cb.frames) > 25, 5) is not None

        a_srv.signal(signal.SIGKILL)
        a_srv.proc.wait(5)
        t_kill = time.monotonic()
        assert wait_for(lambda: a.status().state is not State.ONLINE, 3) is not None
        time.sleep(2.0)  # outage
        down = a.status()  # one stable state through the retries, saying since when
        assert down.state is State.OFFLINE and down.down_since_ns is not None and down.since_ns == down.down_since_ns
        assert down.attempts >= 1
        b_during = cb.count_since(t_kill + 0.2)
        assert b_during >= 35, f"other source stalled during the outage: {b_during} frames in 2 s"

        t_ready = a_srv.start()
        recovered = wait_for(lambda: a.status().state is State.ONLINE and ca.count_since(t_ready) > 0, 8)
        assert recovered is not None and recovered <= 5.0, f"recovery took {recovered} s"
        print(f"kill -9: other source got {b_during} frames in 2 s outage; recovered {recovered:.2f} s after restart")
        frames_after = ca.count_since(t_ready)
        time.sleep(1.0)
        assert ca.count_since(t_ready) > frames_after + 15  # flowing again at ~25 fps

        st = a.status()
        assert st.reconnects >= 1 and st.connects >= 2
        assert st.down_since_ns is None and st.attempts == 0
        assert "offline -> online: back after" in caplog.text and "-> connecting" not in caplog.text
        caps = [c for _, _, c in ca.frames]
        assert np.all(np.diff(caps) > 0), "capture times went backwards"
        seqs = [s for _, s, _ in ca.frames]
        assert np.all(np.diff(seqs) > 0)
        assert ca.max_read_s < 0.3 + 0.2 and cb.max_read_s < 0.3 + 0.2
        # credentials never reach logs or status
        assert "hunter2" not in caplog.text and "hunter2" not in str(st.as_dict())
        assert "rtsp://***@127.0.0.1" in caplog.text
    finally:
        ca.stop(), cb.stop()
        t = time.monotonic()
        assert a.stop(5) and b.stop(5)
        assert time.monotonic() - t < 5


def _serves(url: str, seconds: float = 4.0) -> bool:
    """Whether a fresh FFmpeg client gets packets from the server now: the fixture's own health, apart from Source."""
    import av

    try:
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(2.0, 1.5)) as c:
            end = time.monotonic() + seconds
            for n, _ in enumerate(c.demux(c.streams.video[0]), 1):
                if n >= 5:
                    return True
                if time.monotonic() > end:
                    break
    except Exception:  # noqa: BLE001 - any failure means "not serving"
        return False
    return False


def test_sigstop_hung_server_goes_offline_and_recovers(servers, caplog):
    caplog.set_level("DEBUG", logger="seawatch.streams.source")  # a source that stays down logs its retries at DEBUG
    # Rarely (about 2 runs in 100 here) gst-rtsp-server's shared media stops sending to every client after SIGCONT:
    # the sources retry as they should, and a fresh FFmpeg client gets nothing either. That is the fixture, not the
    # reader, so the scenario runs once more on a fresh server then; a reader that does not recover still fails.
    for attempt in (1, 2):
        if _sigstop_scenario(servers, caplog):
            return
        print(f"attempt {attempt}: the test RTSP server stopped serving every client after SIGCONT")
    pytest.fail("the test RTSP server stopped serving after SIGCONT twice running")


def _sigstop_scenario(servers, caplog) -> bool:
    """One SIGSTOP / SIGCONT of a server under two sources; False when the server itself stopped serving."""
    caplog.clear()

    def history(source: str) -> str:  # the source's state changes, for a failure message
        return "\n".join(f"{r.created:.3f} {r.getMessage()}" for r in caplog.records if f"source {source} " in
                          r.getMessage())

    srv = servers(["cam1"])
    src = Source(SourceConfig("h", srv.url(), open_timeout_s=2.0, read_timeout_s=1.5, stall_timeout_s=2.0)).start()
    con = Consumer(src)
    con.start()
    late: Source | None = None
    try:
        assert wait_for(lambda: src.status().state is State.ONLINE and len(con.frames) > 10, 10) is not None
        srv.signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        went = wait_for(lambda: src.status().state is not State.ONLINE, 8)
        # PyAV's read timeout (1.5 s; a buffered frame may come first) or the 2 s watchdog, whichever is first
        assert went is not None and went <= 4.5, f"a hung server was noticed after {went} s"
        # a source opened while the server is hung must not block either
        late = Source(SourceConfig("late", srv.url(), open_timeout_s=2.0, read_timeout_s=1.5,
                                   stall_timeout_s=2.0)).start()
        assert wait_for(lambda: late.status().state is State.OFFLINE, 7) is not None
        assert "stalled" in late.status().last_error or "cannot open" in late.status().last_error
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t_stop)))
        assert src.status().state is not State.ONLINE

        srv.signal(signal.SIGCONT)
        t_cont = time.monotonic()
        # The worst case by design, one failed attempt after the resume: the first retry waits its backoff
        # (0.5 s + 25 % jitter), opens (open timeout 2 s) and gets no data (read timeout 1.5 s; the resumed server
        # may first send nothing to a new client), the second waits its backoff (1 s + 25 %) and opens, and its
        # first frame follows within 1 s. Measured: 0.02-2.6 s mostly, 6.55 s once; 5.56 s on a loaded CI machine.
        cfg = src.config
        backoff_s = cfg.backoff_initial_s * (1 + cfg.backoff_jitter)
        limit_s = backoff_s + cfg.open_timeout_s + cfg.read_timeout_s + 2 * backoff_s + cfg.open_timeout_s + 1.0
        back = wait_for(lambda: src.status().state is State.ONLINE and con.count_since(t_cont) > 0, limit_s + 3)
        assert back is not None and back <= limit_s, (f"recovery after SIGCONT took {back} s (at most {limit_s} s by "
                                                      f"the source's timeouts)\n{history('h')}")
        print(f"kill -STOP: offline after {went:.2f} s; recovered {back:.2f} s after SIGCONT")
        late_back = wait_for(lambda: late.status().state is State.ONLINE, limit_s + 2)
        if late_back is None and not _serves(srv.url()):
            return False
        assert late_back is not None, (f"the source opened during the hang is not back {limit_s + 2} s after the "
                                       f"other one (SIGCONT "
                                       f"at {time.time() - (time.monotonic() - t_cont):.3f}): "
                                       f"{late.status().as_dict()}\n{history('late')}")
        assert con.max_read_s < 0.5
        caps = [c for _, _, c in con.frames]
        assert np.all(np.diff(caps) > 0)
        return True
    finally:
        con.stop()
        srv.signal(signal.SIGCONT)
        for s in (src, late):
            if s is not None:
                t = time.monotonic()
                s.stop(4)
                assert time.monotonic() - t < 4.5


def test_clip_around_a_moment_has_preroll_and_plays(servers, tmp_path):
    srv = servers(["cam1"])
    ring = PacketRing(max_age_s=20)
    rec = SegmentRecorder(tmp_path / "rec", "cam", segment_s=2.0)
    src = Source(SourceConfig("cam", srv.url()), ring=ring, recorder=rec).start()
    con = Consumer(src)
    con.start()
    try:
        assert wait_for(lambda: src.status().state is State.ONLINE, 10) is not None
        time.sleep(3.5)
        first, second = list(ring._packets)[:2]
        # the session's first packet (sent before RTP time was mapped) is one frame before the next, not "now"
        assert first.is_keyframe and first.pts is not None
        assert 0.5 * S / 25 <= second.capture_time_ns - first.capture_time_ns <= 1.5 * S / 25
        trigger_ns = time.time_ns()
        # the event: clip from 2 s before to 1 s after; wait for the post-roll to arrive
        assert ring.wait_until(trigger_ns + 1 * S, timeout_s=5)
        out = cut_clip(tmp_path / "event.mp4", trigger_ns - 2 * S, trigger_ns + 1 * S, ring=ring)
        info = ffprobe_summary(out)
        assert info["codec"] == "h264" and (info["width"], info["height"]) == (1280, 720)
        assert info["boxes"].index("moov") < info["boxes"].index("mdat"), info["boxes"]  # +faststart
        # 3 s window, starting at the keyframe at or before T-2 s (1 s GOP): 3.0-4.04 s
        assert 3.0 - 0.1 <= info["duration_s"] <= 4.1, info
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,profile",
                                "-of", "compact", str(out)], capture_output=True, text=True).stdout
        assert "codec_name=h264" in probe
        # passthrough: the test server stamps RTP times when its Python feeder hands a frame over, so they carry
        # a few ms of jitter; a constant-rate null output would complain about two frames in one 1/25 s slot
        dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-fps_mode", "passthrough", "-f", "null", "-"],
                             capture_output=True, text=True)
        # (ffmpeg's null sink may still round two such frames into one slot of its own time base and say so: that is
        # its output, not the clip; the clip's own decode timestamps are checked below)
        problems = [line for line in dec.stderr.splitlines() if line.strip() and not line.startswith("[null @")
                    and "Last message repeated" not in line]
        assert dec.returncode == 0 and problems == [], dec.stderr
        dts = [int(x) for x in subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                               "packet=dts", "-of", "csv=p=0", str(out)],
                                              capture_output=True, text=True).stdout.split()]
        assert len(dts) > 50 and all(b > a for a, b in zip(dts, dts[1:])), dts  # strictly increasing in the file
        # segment recording of the same stream, remuxed (same profile as sent, no re-encode)
        assert wait_for(lambda: len(list_segments(tmp_path / "rec", "cam")) >= 1, 5) is not None
        seg = list_segments(tmp_path / "rec", "cam")[0]
        seg_probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,profile",
                                    "-of", "compact", str(seg.path)], capture_output=True, text=True).stdout
        assert "Baseline" in seg_probe and 1.5 * S <= seg.end_ns - seg.start_ns <= 3 * S
    finally:
        con.stop()
        src.stop(5)


def _barcode_ms(image: np.ndarray) -> int:
    """The wall-clock ms the server's /live path burns into the top 32 rows as 48 black/white cells."""
    row = image[16, :, 1].astype(np.int32)
    cell = image.shape[1] // 48
    value = 0
    for i in range(48):
        value = (value << 1) | int(row[i * cell + cell // 4 : (i + 1) * cell - cell // 4].mean() > 128)
    return value


def test_multislice_keyframes_decode_whole_pictures_and_capture_time_is_close(servers):
    """/live is x264 with 2 slices per picture; gst's payloader repeats SPS/PPS before each IDR slice, so FFmpeg
    hands an IDR picture over as 2 packets. Decoded naively, only the last slice survives and the rest stays grey
    until the next keyframe, for ever (P-frames copy it). Every picture must carry the right barcode."""
    srv = servers([], live=True)
    src = Source(SourceConfig("live", srv.url("live"))).start()
    try:
        assert wait_for(lambda: src.status().state is State.ONLINE, 10) is not None
        time.sleep(1.0)
        errors, capture_err_ms, glass_ms = [], [], []
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            f = src.read(0.5)
            if f is None:
                continue
            true_ms = _barcode_ms(f.image)
            errors.append(abs(f.receive_time_ns / 1e6 - true_ms) > 1000)
            capture_err_ms.append(f.capture_time_ns / 1e6 - true_ms)
            glass_ms.append(time.time_ns() / 1e6 - true_ms)
        assert len(errors) >= 40 and not any(errors), f"{sum(errors)} of {len(errors)} pictures damaged"
        print(f"/live: capture time - true {np.median(capture_err_ms):.1f} ms median; "
              f"glass-to-frame {np.median(glass_ms):.1f} ms median")
        assert -5 <= np.median(capture_err_ms) <= 100
    finally:
        src.stop(5)


def test_first_frames_after_connect_follow_the_stream_clock(servers):
    """FFmpeg buffers the first ~0.3 s of packets while it probes the stream, and hands them over in one burst at
    connect; the session's first packet (the IDR) has no timestamp. Stamped on arrival, the first frames of every
    connection came out a millisecond apart, the first one ~0.3 s late. Their capture times must be as right as those
    of later frames (the server burns its wall clock into each picture), and the ring's first packet has a time."""
    srv = servers([], live=True)
    ring = PacketRing(max_age_s=20)
    src = Source(SourceConfig("live", srv.url("live"), queue_size=500), ring=ring).start()  # keep every frame
    try:
        frames = []
        deadline = time.monotonic() + 15
        while len(frames) < 40 and time.monotonic() < deadline:
            f = src.read(0.5)
            if f is not None:
                frames.append(f)
        assert len(frames) >= 40, f"{len(frames)} frames"
        err_ms = np.array([f.capture_time_ns / 1e6 - _barcode_ms(f.image) for f in frames])
        # against frames of the same connection that came in paced (after the burst, same clock offset estimate):
        # how far the camera clock is from ours does not matter here, only that the burst is stamped like the rest
        paced = float(np.median(err_ms[10:20]))
        first = err_ms[:6] - paced
        print(f"capture time - true, first 6 frames vs frames 10-20 ({paced:.1f} ms): {np.round(first, 1)}")
        assert np.all(np.abs(first) <= 25), np.round(err_ms, 1)
        packets = list(ring._packets)
        assert packets[0].is_keyframe and packets[0].pts is not None
        gaps_ms = np.diff([p.capture_time_ns for p in packets[:8]]) / 1e6
        assert np.all(gaps_ms > 0), gaps_ms
    finally:
        src.stop(5)


if __name__ == "__main__":  # pragma: no cover - manual run
    sys.exit(pytest.main([__file__, "-v"]))
