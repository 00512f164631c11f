"""Passwords (argon2), signed bearer tokens, API keys and login throttling.

Tokens are ``<base64url payload>.<base64url HMAC-SHA256>``; the payload holds the subject, role and expiry (UTC
seconds). They are stateless: with a configured ``auth.token_secret`` they survive restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from seawatch.service.config import AuthConfig

ROLE_RANK = {"viewer": -1, "operator": 0, "reviewer": 1, "admin": 2}
MAX_REVOKED = 100_000  # logged-out tokens remembered until they expire


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


class Authenticator:
    """Checks passwords, issues and verifies tokens, checks API keys."""

    def __init__(self, config: AuthConfig) -> None:
        from argon2 import PasswordHasher

        self.config = config
        self._hasher = PasswordHasher()
        self._users = {u.name: u for u in config.users}
        self._keys = [(k.key_sha256.get_secret_value(), k) for k in config.api_keys]
        secret = config.token_secret.get_secret_value() if config.token_secret else secrets.token_urlsafe(48)
        self._secret = secret.encode("utf-8")
        self._dummy_hash: str | None = None
        # tokens ended by a logout before they expire: signature -> expiry (in memory: a restart forgets them, and
        # with a configured token_secret an ended token would pass again until its expiry)
        self._revoked: dict[str, float] = {}

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
        exp = (time.time() if now_s is None else now_s) + self.config.token_ttl_s
        payload = _b64(json.dumps({"sub": who.name, "role": who.role, "exp": round(exp, 3)}, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())
        return f"{payload}.{sig}", exp

    def revoke(self, token: str, now_s: float | None = None) -> bool:
        """End a valid token before its expiry (a logout); False for a token that would not verify anyway."""
        now = time.time() if now_s is None else now_s
        if self.verify_token(token, now) is None:
            return False
        payload, sig = token.split(".")
        exp = float(json.loads(_unb64(payload))["exp"])
        # expired ones need no entry: expiry refuses them; at the bound the soonest to expire go first
        self._revoked = {k: e for k, e in self._revoked.items() if e >= now}
        while len(self._revoked) >= MAX_REVOKED:
            self._revoked.pop(min(self._revoked, key=self._revoked.__getitem__))
        self._revoked[sig] = exp
        return True

    def verify_token(self, token: str, now_s: float | None = None) -> Principal | None:
        try:
            payload, sig = token.split(".")
            if sig in self._revoked:
                return None
            want = hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest()
            if not hmac.compare_digest(want, _unb64(sig)):
                return None
            data = json.loads(_unb64(payload))
            if float(data["exp"]) < (time.time() if now_s is None else now_s):
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
