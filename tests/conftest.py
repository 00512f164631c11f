"""Shared fixtures.

Real data (../shared/media) and provisioned models are needed by many tests. Where they are absent a test
skips with the reason; under CI (``CI=true``) or ``SEAWATCH_REQUIRE_REAL=1`` the absence is a failure instead,
so a green CI run cannot hide a skipped real-data test.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest

from seawatch import paths

STRICT = os.environ.get("CI", "").lower() == "true" or os.environ.get("SEAWATCH_REQUIRE_REAL") == "1"

# CI replays a fixed set of property-test examples so a run is reproducible; developer runs keep exploring new ones
# (a counterexample found there becomes a fixed test case).
try:
    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("ci", derandomize=True, deadline=None)
    if os.environ.get("CI", "").lower() == "true":
        _hyp_settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass


def missing(reason: str):
    """Skip (developer machine) or fail (CI) because real data or a model is absent."""
    if STRICT:
        pytest.fail(f"required for CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_media() -> Path:
    d = paths.shared_media_dir()
    if d is None:
        missing("../shared/media is absent (set SEAWATCH_SHARED to the shared folder)")
    return d


LEMMER_AIS_LOG = "F_ais/ais_gpsd_lemmer_nl_ais-nmea.log"  # a real receiver log of Lemmer harbour (the demo's AIS)


@pytest.fixture(scope="session")
def lemmer_ais(shared_media) -> list:
    """The decoded messages of the shared Lemmer AIS log, timed by its receiver's RMC sentences."""
    from seawatch.streams import ais

    p = shared_media / LEMMER_AIS_LOG
    if not p.is_file():
        missing(f"{LEMMER_AIS_LOG} is absent from the shared media")
    return list(ais.read_file(p, ais.AisDecoder(use_rmc_time=True)))


def onnx_model(name: str, variant: str = "fp32") -> Path:
    """Path of a provisioned model, or skip/fail with the command that provisions it."""
    from seawatch.errors import ModelError
    from seawatch.vision import registry

    try:
        return registry.resolve_onnx(name, variant)
    except ModelError as exc:
        missing(f"{exc}")


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@contextlib.contextmanager
def serve_in_thread(app, timeout_s: float = 15.0, **options):
    """``app`` behind a real uvicorn on a free local port, in a thread, for as long as the block runs: yields the port.
    ``options``: more ``uvicorn.Config`` settings (e.g. the proxy headers of ``HttpConfig.uvicorn_options()``)."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not srv.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.started, "uvicorn did not start"
        yield port
    finally:
        srv.should_exit = True
        th.join(10)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 free right now (TCP by default; ``socket.SOCK_DGRAM`` for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def wait_until(pred, timeout_s: float, what: str, step_s: float = 0.1):
    """``pred()``'s first truthy value, asked every ``step_s``; an AssertionError naming ``what`` after ``timeout_s``."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step_s)


def start_until_ready(args: list[str], what: str, timeout_s: float = 10.0):
    """Start a test server process that prints ``READY`` once it listens, and wait for it; retried while its port
    is still held by a killed one. The process (stdout and stderr piped), or RuntimeError after ``timeout_s``."""
    import select
    import subprocess
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([proc.stdout], [], [], max(0.1, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""
        if line.startswith("READY"):
            return proc
        kill_process(proc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {line!r}")
        time.sleep(0.2)


def kill_process(proc) -> None:
    """SIGKILL a test server (continued first, should a test have stopped it) and reap it, its pipes closed."""
    import signal

    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.wait(5)
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


class H265RtspCamera:
    """An H.265 camera over real RTSP: ``tests/rtsp_server.py --h265`` (gst-rtsp-server, x265 zerolatency, no
    B-frames, a keyframe a second, VPS/SPS/PPS before every keyframe) at ``rtsp://127.0.0.1:<port>/h265``.
    ``stop`` kills it (SIGKILL: the camera gone at once), ``start`` brings it back on the same port."""

    def __init__(self, fps: int = 10) -> None:
        self.fps = fps
        self.port = free_port()
        self.proc = None
        self.url = f"rtsp://127.0.0.1:{self.port}/h265"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it listens (retried while the port is still held by a killed one)."""
        args = ["/usr/bin/python3", str(Path(__file__).with_name("rtsp_server.py")), "--port", str(self.port),
                "--h265", "--h265-fps", str(self.fps)]
        self.proc = start_until_ready(args, "the H.265 RTSP server", timeout_s)

    def stop(self) -> None:
        if self.proc is not None:
            kill_process(self.proc)
            self.proc = None


@pytest.fixture()
def rtsp_h265_camera():
    """A started :class:`H265RtspCamera` (320x240, 10 fps), always stopped afterwards. Needs Debian's
    gst-rtsp-server, python3-gi and x265enc (gstreamer1.0-plugins-bad), as ``scripts/setup.sh`` installs."""
    import shutil
    import subprocess

    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
         "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
         "assert Gst.ElementFactory.find('x265enc') and Gst.ElementFactory.find('rtph265pay')"],
        capture_output=True, text=True) if os.path.exists("/usr/bin/python3") else None
    if probe is None or probe.returncode != 0 or shutil.which("ffmpeg") is None:
        missing("gst-rtsp-server, python3-gi, x265enc or ffmpeg is not installed (bash scripts/setup.sh)")
    cam = H265RtspCamera()
    cam.start()
    try:
        yield cam
    finally:
        cam.stop()
