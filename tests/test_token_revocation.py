"""Log-outs survive a restart of the service (with a configured ``auth.token_secret`` tokens do too).

The revocation list lives in ``storage.data_dir`` as a file holding SHA-256 digests of the ended tokens with their
expiry, never a token. A restart here is a new app object over the same settings (a new ``Authenticator``, the
real API through FastAPI's TestClient), as ``seawatch serve`` builds it at every start.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings

import pytest

pytest.importorskip("fastapi")
warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from seawatch.errors import ConfigError  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import Authenticator  # noqa: E402
from test_service_api import PASSWORDS, error_code, settings_for, token  # noqa: E402

REVOKED = "revoked-tokens.json"  # in storage.data_dir


@pytest.fixture(scope="module")
def hashes():
    from seawatch.service.auth import hash_password

    return {u: hash_password(p) for u, p in PASSWORDS.items()}


def _no_secret(tmp_path, hashes):
    cfg = settings_for(tmp_path, hashes)
    return cfg.model_copy(update={"auth": cfg.auth.model_copy(update={"token_secret": None})})


def _files(data_dir) -> list:
    """Everything under the data dir but the database (SQLite adds its journal files when it likes)."""
    return sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if not p.name.startswith("seawatch.db"))


def _bearer(h: dict) -> str:
    return h["Authorization"].split()[1]


def _status(client, h) -> int:
    return client.get("/api/auth/me", headers=h).status_code


def test_a_logout_is_still_in_force_after_a_restart(tmp_path, hashes):
    cfg = settings_for(tmp_path, hashes)
    with TestClient(create_app(cfg)) as client:
        ended, other = token(client, "olga"), token(client, "rita")
        assert client.post("/api/auth/logout", headers=ended).status_code == 204
        assert _status(client, ended) == 401
    with TestClient(create_app(cfg)) as client:  # the restart
        r = client.get("/api/events", headers=ended)
        assert r.status_code == 401 and error_code(r) == "unauthorized"
        assert _status(client, ended) == 401
        with pytest.raises(Exception):  # the live feed refuses it too
            with client.websocket_connect("/api/live", headers=ended) as ws:
                ws.receive_json()
        assert client.post("/api/auth/logout", headers=ended).status_code == 401
        assert _status(client, other) == 200  # a token that was not logged out survives the restart
        fresh = token(client, "olga")  # and the user logs in again
        assert client.get("/api/events", headers=fresh).status_code == 200
        assert client.post("/api/auth/logout", headers=other).status_code == 204
    # what is kept: digests and expiries, never a token or a part of one
    text = (tmp_path / "data" / REVOKED).read_text("utf-8")
    for tok in (_bearer(ended), _bearer(other)):
        assert tok not in text and tok.split(".")[0] not in text and tok.split(".")[1] not in text
    assert list(json.loads(text)["revoked"].values()) == [pytest.approx(time.time() + cfg.auth.token_ttl_s, abs=60)] * 2
    with TestClient(create_app(cfg)) as client:  # both ended now, across a second restart
        assert (_status(client, ended), _status(client, other), _status(client, fresh)) == (401, 401, 200)


def test_concurrent_logouts_all_survive_a_restart(tmp_path, hashes):
    import sys

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: a read-modify-write without a lock loses entries
    cfg = settings_for(tmp_path, hashes)
    data_dir = tmp_path / "data"
    a = Authenticator(cfg.auth, state_dir=data_dir)
    who = a.check_password("olga", PASSWORDS["olga"])
    toks = [a.issue_token(who, now_s=time.time() + i * 1e-3)[0] for i in range(200)]
    keep = a.issue_token(who, now_s=time.time() - 1)[0]  # another time: a token is its payload, signed
    start = threading.Barrier(8)

    def logout(part):
        start.wait()
        for t in part:
            assert a.revoke(t)

    threads = [threading.Thread(target=logout, args=(toks[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(30)
    finally:
        sys.setswitchinterval(old_interval)
    after = Authenticator(cfg.auth, state_dir=data_dir)
    assert [t for t in toks if after.verify_token(t) is not None] == []
    assert after.verify_token(keep) is not None
    assert len(json.loads((data_dir / REVOKED).read_text("utf-8"))["revoked"]) == len(toks)
    assert [p.name for p in data_dir.iterdir()] == [REVOKED]  # no temporary file left behind


def test_a_write_that_fails_midway_keeps_the_earlier_list(tmp_path, hashes, monkeypatch, caplog):
    import os

    from seawatch.service import auth as auth_mod

    cfg = settings_for(tmp_path, hashes)
    data_dir = tmp_path / "data"
    a = Authenticator(cfg.auth, state_dir=data_dir)
    who = a.check_password("olga", PASSWORDS["olga"])
    first, second, third = (a.issue_token(who, now_s=time.time() - i)[0] for i in range(3))
    assert a.revoke(first)
    saved = (data_dir / REVOKED).read_bytes()

    def no_space(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m, caplog.at_level(logging.ERROR, logger="seawatch.service.auth"):
        m.setattr(auth_mod.os, "replace", no_space)  # the new list is written, the switch to it fails
        assert a.revoke(second)
    assert a.verify_token(second) is None  # ended in this process all the same
    assert "could not be saved" in caplog.text and "No space left" in caplog.text
    assert (data_dir / REVOKED).read_bytes() == saved and [p.name for p in data_dir.iterdir()] == [REVOKED]
    assert Authenticator(cfg.auth, state_dir=data_dir).verify_token(first) is None  # nothing earlier lost
    assert a.revoke(third)  # the next save that works has the one that failed too
    after = Authenticator(cfg.auth, state_dir=data_dir)
    assert [after.verify_token(t) for t in (first, second, third)] == [None] * 3
    assert os.stat(data_dir / REVOKED).st_mode & 0o077 == 0  # digests only, but nobody else's business


def test_expired_entries_are_pruned_and_the_list_is_bounded(tmp_path, hashes, monkeypatch):
    from seawatch.service import auth as auth_mod

    cfg = settings_for(tmp_path, hashes, auth={"token_ttl_s": 100})
    data_dir, t0 = tmp_path / "data", time.time()
    a = Authenticator(cfg.auth, state_dir=data_dir)
    who = a.check_password("olga", PASSWORDS["olga"])
    old, _ = a.issue_token(who, now_s=t0 - 1000)
    assert a.revoke(old, now_s=t0 - 999)
    assert len(json.loads((data_dir / REVOKED).read_text("utf-8"))["revoked"]) == 1
    # at the restart the entry has expired (expiry refuses the token on its own): it is not kept
    b = Authenticator(cfg.auth, state_dir=data_dir)
    assert b._revoked == {} and b.verify_token(old) is None
    new, _ = b.issue_token(who)
    assert b.revoke(new)
    assert len(json.loads((data_dir / REVOKED).read_text("utf-8"))["revoked"]) == 1  # the old one left the file
    # bounded: at the bound the soonest to expire go first, in memory and in the file
    monkeypatch.setattr(auth_mod, "MAX_REVOKED", 3)
    toks = [b.issue_token(who, now_s=t0 + i)[0] for i in range(5)]
    for t in toks:
        assert b.revoke(t, now_s=t0 + 5)
    saved = json.loads((data_dir / REVOKED).read_text("utf-8"))["revoked"]
    assert len(saved) == len(b._revoked) == 3
    assert Authenticator(cfg.auth, state_dir=data_dir).verify_token(toks[-1], now_s=t0 + 6) is None


@pytest.mark.parametrize("content", [b"", b'{"format": 1, "revoked": {"ab', b"\x00\xff garbage",
                                     b'{"format": 1, "revoked": ["x"]}', b'{"format": 1, "revoked": {"zz": 1}}',
                                     b'{"format": 99, "revoked": {}}', b"[]"],
                         ids=["empty", "truncated", "binary", "list", "bad-digest", "unknown-format", "not-a-map"])
def test_a_corrupt_list_ends_every_token_issued_before_the_start(tmp_path, hashes, caplog, content):
    cfg = settings_for(tmp_path, hashes)
    path = tmp_path / "data" / REVOKED
    with TestClient(create_app(cfg)) as client:
        ended, other = token(client, "olga"), token(client, "rita")
        assert client.post("/api/auth/logout", headers=ended).status_code == 204
    path.write_bytes(content)  # what the logout wrote is lost
    with caplog.at_level(logging.ERROR, logger="seawatch.service.auth"):
        app = create_app(cfg)
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(msgs) == 1 and str(path) in msgs[0] and "log in again" in msgs[0], msgs
    kept = [p for p in path.parent.iterdir() if p.name.startswith(REVOKED + ".corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == content  # moved aside for a look, not deleted
    with TestClient(app) as client:
        # it cannot tell which tokens were logged out, so none from before the start passes
        assert (_status(client, ended), _status(client, other)) == (401, 401)
        fresh = token(client, "olga")
        assert _status(client, fresh) == 200
    caplog.clear()
    with TestClient(create_app(cfg)) as client:  # the next restart remembers that, with no logout in between
        assert (_status(client, ended), _status(client, other), _status(client, fresh)) == (401, 401, 200)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_corrupt_list_that_cannot_be_replaced_refuses_to_start(tmp_path, hashes, monkeypatch):
    from seawatch.service.auth import RevocationFile

    cfg = settings_for(tmp_path, hashes)
    path = tmp_path / "data" / REVOKED
    path.parent.mkdir()
    path.write_bytes(b"{")

    def no_space(self, state):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(RevocationFile, "save", no_space)
        with pytest.raises(ConfigError, match=r"revoked-tokens\.json is corrupt .* cannot be replaced .*No space"):
            create_app(cfg)
    assert path.read_bytes() == b"{"  # still there: the next start fails closed again
    with TestClient(create_app(cfg)) as client:  # room again: it starts, refusing every earlier token
        assert client.app.state.auth._not_before_s is not None


def test_an_unreadable_list_refuses_to_start(tmp_path, hashes):
    cfg = settings_for(tmp_path, hashes)
    (tmp_path / "data" / REVOKED).mkdir(parents=True)  # read fails (root reads files whatever their mode)
    with pytest.raises(ConfigError, match=r"revocation list .*revoked-tokens\.json.* cannot be read"):
        create_app(cfg)


def test_without_a_token_secret_nothing_is_read_or_written(tmp_path, hashes):
    cfg = _no_secret(tmp_path, hashes)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / REVOKED).write_bytes(b"left by a run with a secret, and corrupt")
    with TestClient(create_app(cfg)) as client:
        before = _files(data_dir)
        ended = token(client, "olga")
        assert client.post("/api/auth/logout", headers=ended).status_code == 204
        assert _status(client, ended) == 401  # ended in memory: the secret, and so the token, dies with the process
        assert _files(data_dir) == before
    assert (data_dir / REVOKED).read_bytes() == b"left by a run with a secret, and corrupt"
    a = Authenticator(cfg.auth, state_dir=data_dir)
    t, _ = a.issue_token(a.check_password("olga", PASSWORDS["olga"]))
    assert a.revoke(t) and a.verify_token(t) is None
    assert _files(data_dir) == before


def test_two_logins_in_one_millisecond_are_two_sessions(tmp_path, hashes):
    """Logging out one session (a phone) leaves another of the same user begun at the same instant (the desk) valid."""
    cfg = settings_for(tmp_path, hashes)
    a = Authenticator(cfg.auth, state_dir=tmp_path / "data")
    who = a.check_password("olga", PASSWORDS["olga"])
    t0 = time.time()
    t1, _ = a.issue_token(who, now_s=t0)
    t2, _ = a.issue_token(who, now_s=t0)
    assert t1 != t2
    assert a.revoke(t1, now_s=t0 + 1)
    assert a.verify_token(t1, now_s=t0 + 2) is None and a.verify_token(t2, now_s=t0 + 2) is not None
