"""Robustness audit s27: the PostgreSQL server of the event store goes down and comes back (a restart, maintenance, a
fail-over). While it was down every request that reads or writes the store answered 500 "internal error" with a
traceback in the log, as if the service were broken; it now answers 503 saying the event store is unavailable (as
``GET /api/health`` says ``database: error``). Once the server was back, the first request failed again on a
pooled connection the restart had cut; connections are now checked before use (``pool_pre_ping``).

A real PostgreSQL cluster of its own (the session one of test_service_store cannot be stopped), stopped and started
with pg_ctl."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_password  # noqa: E402
from test_service_api import KEY, PASSWORDS, seed, settings_for  # noqa: E402
from test_service_store import _pg_bin, missing, new_pg_database  # noqa: E402


@pytest.fixture(scope="module")
def hashes():
    return {u: hash_password(p) for u, p in PASSWORDS.items()}


@pytest.fixture
def pg_cluster():
    """A throwaway cluster: yields (server URL, pg_ctl(action)) so the test can stop and start it."""
    pgbin = _pg_bin()
    if pgbin is None:
        missing("PostgreSQL server binaries (apt-get install postgresql-15-postgis-3)")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    d = Path(tempfile.mkdtemp(prefix="seawatch-pg27-"))
    if as_pg:
        shutil.chown(d, "postgres", "postgres")
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    subprocess.run([*as_pg, str(pgbin / "initdb"), "-D", str(d / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--locale=C.UTF-8", "--no-sync"], check=True, capture_output=True, timeout=120)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {d} -c fsync=off -c synchronous_commit=off"

    def pg_ctl(action: str) -> None:
        extra = ["-o", opts, "-l", str(d / "server.log")] if action == "start" else ["-m", "fast"]
        subprocess.run([*as_pg, str(pgbin / "pg_ctl"), "-D", str(d / "data"), "-w", "-t", "30", *extra, action],
                       check=True, capture_output=True, timeout=60)

    pg_ctl("start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}", pg_ctl
    finally:
        subprocess.run([*as_pg, str(pgbin / "pg_ctl"), "-D", str(d / "data"), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def test_a_database_server_down_is_a_503_and_back_is_served_at_once(pg_cluster, tmp_path, hashes):
    server, pg_ctl = pg_cluster
    cfg = settings_for(tmp_path, hashes, storage={"database_url": new_pg_database(server)})
    with TestClient(create_app(cfg), raise_server_exceptions=False) as client:
        seed(client.app, client.app.state.media_dir)
        h = {"X-API-Key": KEY}
        assert client.get("/api/events", headers=h).status_code == 200

        pg_ctl("stop")
        for method, path, body in [("GET", "/api/events", None), ("GET", "/api/events/ev00001", None),
                                   ("POST", "/api/events/ev00001/acknowledge", {"note": "seen"})]:
            r = client.request(method, path, headers=h, json=body)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert "event store is unavailable" in r.json()["error"]["message"], r.text
        health = client.get("/api/health").json()
        assert health["database"] == "error" and health["status"] == "degraded"

        pg_ctl("start")
        r = client.get("/api/events", headers=h)  # the first request after the restart, on the pooled connection
        assert r.status_code == 200, r.text
        r = client.post("/api/events/ev00001/acknowledge", headers=h, json={"note": "seen"})
        assert r.status_code == 200, r.text

        # a quick restart with no request meanwhile: the pooled connections are dead, none is handed out
        pg_ctl("stop")
        pg_ctl("start")
        for _ in range(3):
            r = client.get("/api/events", headers=h)
            assert r.status_code == 200, r.text
