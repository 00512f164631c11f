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
