"""Passwords (argon2), signed bearer tokens, API keys, the list of logged-out tokens and login throttling.

Tokens are ``<base64url payload>.<base64url HMAC-SHA256>``; the payload holds the subject, role, issue time and
expiry (UTC seconds). They are stateless: with a configured ``auth.token_secret`` they survive restarts, and so
does the list of tokens ended by a log-out before their expiry (:class:`RevocationFile`, in ``storage.data_dir``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from seawatch.errors import ConfigError
from seawatch.service.config import AuthConfig

log = logging.getLogger(__name__)

ROLE_RANK = {"viewer": -1, "operator": 0, "reviewer": 1, "admin": 2}
MAX_REVOKED = 100_000  # logged-out tokens remembered until they expire
REVOKED_FILE = "revoked-tokens.json"  # in storage.data_dir
_REVOKED_FORMAT = 1
_DIGEST = re.compile(r"[0-9a-f]{64}")


def hash_password(password: str) -> str:
    """Argon2id hash for ``auth.users[].password_hash``."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def hash_api_key(key: str) -> str:
    """Hex SHA-256 for ``auth.api_keys[].key_sha256`` (keys are long random strings, so a fast hash is enough)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (``kind='user'``) or an API key (``kind='key'``)."""

    name: str
    role: str
    kind: str

    def has(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_digest(token: str) -> str:
    """Hex SHA-256 of a whole token: what the revocation list keeps (never the token, nor its signature, which
    with a guessed payload would make one)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class CorruptRevocationFile(ValueError):
    """The revocation file was read but does not hold a revocation list."""


@dataclass(frozen=True, slots=True)
class RevocationState:
    """What :class:`RevocationFile` keeps: ``revoked`` maps :func:`token_digest` to the token's expiry (UTC s);
    ``not_before_s`` (UTC s, or None) refuses every token issued before it (set when a list was found corrupt)."""

    revoked: dict[str, float]
    not_before_s: float | None


class RevocationFile:
    """The logged-out tokens of a service with a configured ``auth.token_secret``, kept in one small JSON file.

    Every change rewrites the whole file atomically: a temporary file in the same folder, fsync'd, renamed over
    the old one, and the folder fsync'd, so a crash or a full disk mid-write leaves the previous list whole (the
    caller serialises writers; one service per data folder).

    A file next to the SQLite database rather than a table in the event store: the ``Authenticator`` exists before
    the store is opened (``create_app``) and the store may be handed in from outside; log-outs are not event data
    (retention, exports and the store's PostgreSQL/SQLite migrations have no business with them); and a list of at
    most ``MAX_REVOKED`` short entries, written at a log-out, is cheap to rewrite whole.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> RevocationState | None:
        """The stored state; None when there is no file. :class:`CorruptRevocationFile` when its content is not a
        list this version wrote; OSError when it cannot be read."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptRevocationFile(f"not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != _REVOKED_FORMAT:
            raise CorruptRevocationFile(f"not a format-{_REVOKED_FORMAT} revocation list")
        revoked, not_before = data.get("revoked"), data.get("not_before_s")
        if not isinstance(revoked, dict):
            raise CorruptRevocationFile("'revoked' is not a mapping")
        if not_before is not None and not _finite(not_before):
            raise CorruptRevocationFile("'not_before_s' is not a number")
        for digest, exp in revoked.items():
            if not _DIGEST.fullmatch(digest) or not _finite(exp):
                raise CorruptRevocationFile("an entry is not a SHA-256 digest with an expiry")
        return RevocationState({k: float(e) for k, e in revoked.items()},
                               None if not_before is None else float(not_before))

    def save(self, state: RevocationState) -> None:
        """Replace the file with ``state`` (creating the folder); OSError when it cannot be written, the old file
        then unchanged."""
        body = json.dumps({"format": _REVOKED_FORMAT, "not_before_s": state.not_before_s, "revoked": state.revoked},
                          separators=(",", ":")).encode("utf-8")
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # the rename itself survives a power cut (not on every platform)
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def copy_aside(self, now_s: float) -> Path:
        """Copy the file to ``<name>.corrupt-<UTC s>`` (kept for a look, never deleted); the copy's path. A copy,
        not a rename: until a new list replaces it the corrupt file stays where the next start finds it."""
        target = self.path.with_name(f"{self.path.name}.corrupt-{int(now_s)}")
        shutil.copyfile(self.path, target)
        return target


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Authenticator:
    """Checks passwords, issues and verifies tokens, ends tokens (log-out), checks API keys.

    ``state_dir`` (the service's ``storage.data_dir``) keeps the log-outs across restarts in ``REVOKED_FILE``
    when ``auth.token_secret`` is configured; without it they are kept in memory only. Raises ConfigError when
    that file exists but cannot be read (see ``_load_revoked``).
    """

    def __init__(self, config: AuthConfig, state_dir: str | Path | None = None) -> None:
        from argon2 import PasswordHasher

        self.config = config
        self._hasher = PasswordHasher()
        self._users = {u.name: u for u in config.users}
        self._keys = [(k.key_sha256.get_secret_value(), k) for k in config.api_keys]
        secret = config.token_secret.get_secret_value() if config.token_secret else secrets.token_urlsafe(48)
        self._secret = secret.encode("utf-8")
        self._dummy_hash: str | None = None
        # tokens ended by a logout before they expire: token_digest -> expiry; replaced whole under _lock, never
        # changed in place (verify_token reads it without the lock)
        self._revoked: dict[str, float] = {}
        self._not_before_s: float | None = None  # tokens issued before it are refused (a corrupt list was found)
        self._lock = threading.Lock()
        # Without a configured secret the secret is random per start: every token of an earlier run fails its
        # signature after a restart, so there is nothing to persist; no file is read or written (a list left by a
        # run with a secret stays as it is, for when the secret comes back).
        persist = state_dir is not None and config.token_secret is not None
        self._file = RevocationFile(Path(state_dir) / REVOKED_FILE) if persist else None
        if self._file is not None:
            self._load_revoked(time.time())

    def _load_revoked(self, now: float) -> None:
        """Read the log-outs of earlier runs.

        A file that cannot be read (permissions, a folder in its place, an I/O error) stops the start with a
        ConfigError: the list may be whole and the cause is the host's to fix, and starting without it would let
        logged-out tokens pass again. A file that was read but is corrupt (a disk fault, an edit) has lost which
        tokens were ended: failing closed, every token issued before this start is refused from now on (users log
        in again; cameras, recording and alarms go on), the decision is saved at once so that later restarts keep
        it, and the file is set aside for a look. Refusing to start there instead would stop the watch until
        someone deletes the file, which brings back every token it ended.
        """
        assert self._file is not None
        path = self._file.path
        try:
            state = self._file.load()
        except CorruptRevocationFile as exc:
            # issue times are rounded to the ms: none issued from now on falls below it
            not_before = math.floor(now * 1000) / 1000
            try:
                moved = self._file.copy_aside(now)
                self._file.save(RevocationState({}, not_before))  # atomic: the corrupt file stays if this fails
            except OSError as err:
                raise ConfigError(f"auth: the token revocation list {path} is corrupt ({exc}) and cannot be replaced "
                                  f"({err.strerror or err}): fix the folder's permissions or free space") from None
            self._not_before_s = not_before
            log.error("auth: the token revocation list %s is corrupt (%s); moved to %s. Which tokens were logged "
                      "out is lost, so every token issued before this start is refused: users log in again",
                      path, exc, moved.name)
            return
        except OSError as exc:
            raise ConfigError(f"auth: the token revocation list {path} cannot be read ({exc.strerror or exc}); not "
                              "starting, or tokens logged out before would pass again: fix its permissions (a lost "
                              "list: delete it and set a new auth.token_secret, which ends every token)") from None
        if state is None:
            return
        self._revoked = {k: e for k, e in state.revoked.items() if e >= now}  # expired ones: expiry refuses them
        self._not_before_s = state.not_before_s
        log.info("auth: %d logged-out token(s) still unexpired in %s", len(self._revoked), path)

    def check_password(self, name: str, password: str) -> Principal | None:
        from argon2.exceptions import InvalidHashError, VerificationError

        user = self._users.get(name)
        if user is None and self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        # an unknown user costs a verification too (no user enumeration by timing)
        stored = user.password_hash.get_secret_value() if user else self._dummy_hash
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return Principal(user.name, user.role, "user") if user else None

    def logged_name(self, name: str) -> str:
        """A login name as the log may show it: a configured user's, quoted; anything else is not repeated (what was
        typed in the user field is sometimes a password typed in the wrong box)."""
        return repr(name) if name in self._users else "an unknown user name"

    def issue_token(self, who: Principal, now_s: float | None = None) -> tuple[str, float]:
        """``(token, expires_at_s)``."""
        now = time.time() if now_s is None else now_s
        exp = now + self.config.token_ttl_s
        # jti: each log-in its own token, so logging out one session never ends another begun in the same millisecond
        body = {"sub": who.name, "role": who.role, "iat": round(now, 3), "exp": round(exp, 3), "jti": secrets.token_urlsafe(9)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())
        return f"{payload}.{sig}", exp

    def revoke(self, token: str, now_s: float | None = None) -> bool:
        """End a valid token before its expiry (a logout); False for a token that would not verify anyway."""
        now = time.time() if now_s is None else now_s
        if self.verify_token(token, now) is None:
            return False
        data = json.loads(_unb64(token.split(".")[0]))
        exp = float(data["exp"])
        with self._lock:  # concurrent log-outs: each sees the others' entries, and the file gets them all
            # expired ones need no entry: expiry refuses them; at the bound the soonest to expire go first
            kept = {k: e for k, e in self._revoked.items() if e >= now}
            if len(kept) >= MAX_REVOKED:
                for k in sorted(kept, key=kept.__getitem__)[:len(kept) - MAX_REVOKED + 1]:
                    del kept[k]
            kept[token_digest(token)] = exp
            self._revoked = kept
            if self._file is not None:
                try:
                    self._file.save(RevocationState(kept, self._not_before_s))
                except OSError as exc:  # the token is ended in this process all the same; the next save has it too
                    log.error("auth: a log-out of %r could not be saved to %s (%s): until a later log-out is saved, "
                              "a restart lets that token pass again", data["sub"], self._file.path,
                              exc.strerror or exc)
        return True

    def verify_token(self, token: str, now_s: float | None = None) -> Principal | None:
        try:
            payload, sig = token.split(".")
            want = hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest()
            if not hmac.compare_digest(want, _unb64(sig)):
                return None
            if token_digest(token) in self._revoked:
                return None
            data = json.loads(_unb64(payload))
            if float(data["exp"]) < (time.time() if now_s is None else now_s):
                return None
            # tokens from before a corrupt revocation list was found (those with no issue time are older still)
            if self._not_before_s is not None and float(data.get("iat", -math.inf)) < self._not_before_s:
                return None
            user = self._users.get(data["sub"])
        except (ValueError, KeyError, TypeError, UnicodeError):
            return None
        # a user removed from the config (or given another role) loses the old token's rights
        if user is None or user.role != data.get("role"):
            return None
        return Principal(user.name, user.role, "user")

    def check_api_key(self, key: str) -> Principal | None:
        digest = hash_api_key(key)
        found = None
        for want, cfg in self._keys:  # compare against every key so timing says nothing about which matched
            if hmac.compare_digest(want, digest):
                found = cfg
        return Principal(found.name, found.role, "key") if found else None


class LoginThrottle:
    """At most ``max_failures`` login attempts that were not successes per client key within ``window_s``;
    thread-safe.

    An attempt is reserved (``begin``) before the password is checked and counts as a failure from then on, so
    concurrent attempts cannot all pass the check before any failure is recorded; a success (``succeeded``)
    clears the key's count.
    """

    def __init__(self, max_failures: int, window_s: float, max_keys: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def begin(self, key: str, now_s: float | None = None) -> float:
        """Reserve one attempt for ``key``: 0 when it may check a password now (the attempt counts as failed until
        ``succeeded``), else the seconds to wait (nothing reserved)."""
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            q = self._fails.get(key)
            while q and q[0] <= now - self.window_s:
                q.popleft()
            if q is not None and len(q) >= self.max_failures:
                return max(0.0, q[0] + self.window_s - now)
            if q is None:
                if len(self._fails) >= self.max_keys:
                    self._shrink(now)
                q = self._fails[key] = deque()
            q.append(now)
            return 0.0

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)

    def _shrink(self, now: float) -> None:
        """Bound memory under a flood of keys (addresses, made-up user names) without forgetting the keys under
        attack: the expired ones go first, then those with the fewest recent failures, down to 3/4 of ``max_keys``
        (a flood of one-off keys cannot wipe the count of the one being guessed at)."""
        for k in [k for k, q in self._fails.items() if not q or q[-1] <= now - self.window_s]:
            del self._fails[k]
        keep = (3 * self.max_keys) // 4
        if len(self._fails) > keep:
            for k in sorted(self._fails, key=lambda k: len(self._fails[k]))[:len(self._fails) - keep]:
                del self._fails[k]
