"""The live WebSockets (``/api/live``, ``/api/sources/{id}/video``) behind a real uvicorn, with clients that leave
before they send a credential (a tab closed while connecting, a scanner, a loop of connects): the server refuses
them quietly. Each one logged an ERROR "Exception in ASGI application" with a traceback (closing a connection the
client had already dropped), so a client in a loop could fill the log."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
import warnings

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from test_service_serve import serve_settings, write_video  # noqa: E402


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_clients_leaving_before_their_credential_are_no_errors(tmp_path):
    import websockets

    video = tmp_path / "quay.mp4"
    write_video(video, seconds=1.0)
    got = _Records()
    uv = logging.getLogger("uvicorn.error")  # where uvicorn logs an endpoint's exception (it does not propagate)
    with serve_in_thread(create_app(serve_settings(tmp_path, video))) as port:
        uv.addHandler(got)
        try:
            async def leave_at_once(path: str) -> None:
                for _ in range(5):
                    ws = await websockets.connect(f"ws://127.0.0.1:{port}{path}")
                    await ws.close()
                await asyncio.sleep(0.5)  # the server's side of each ends

            for path in ("/api/live", "/api/sources/quay-1/video"):
                asyncio.run(leave_at_once(path))
        finally:
            uv.removeHandler(got)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health") as r:
            assert r.status == 200
    assert not [r.getMessage() for r in got.records if r.levelno >= logging.ERROR]


def test_a_huge_websocket_message_is_refused_before_it_is_taken_in(tmp_path):
    """A client's first message on a live WebSocket is its credential (a few hundred bytes); the serve settings cap
    a message at 64 KiB, so a megabyte sent before any credential check is refused by uvicorn (1009, too big)
    instead of being read in whole (uvicorn's own cap is 16 MiB); a normal credential still works."""
    import websockets

    from seawatch.service.config import WS_MAX_MESSAGE_BYTES

    video = tmp_path / "quay.mp4"
    write_video(video, seconds=1.0)
    cfg = serve_settings(tmp_path, video)
    with serve_in_thread(create_app(cfg), **cfg.service.uvicorn_options()) as port:
        async def huge(path: str) -> tuple[int | None, str]:
            async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
                await ws.send("x" * (WS_MAX_MESSAGE_BYTES + 1))
                try:
                    await asyncio.wait_for(ws.recv(), 10)
                except websockets.ConnectionClosed as exc:
                    return exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""
            return None, "not closed"

        for path in ("/api/live", "/api/sources/quay-1/video"):
            code, _ = asyncio.run(huge(path))
            assert code == 1009, (path, code)  # message too big: refused as it came in, not after it was read

        async def small() -> str:
            async with websockets.connect(f"ws://127.0.0.1:{port}/api/live") as ws:
                await ws.send('{"token": "' + "y" * 3000 + '"}')  # well under the cap: judged, and refused as junk
                try:
                    await asyncio.wait_for(ws.recv(), 10)
                except websockets.ConnectionClosed as exc:
                    return str(exc.rcvd.code if exc.rcvd else None)
                return "open"

        assert asyncio.run(small()) == "4401"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health") as r:
            assert r.status == 200
