"""API keys with scopes, and per-key rate limits.

A key looks like ``tsk_<id>_<secret>``. Only the SHA-256 of the secret is stored (in
``<home>/auth/keys.json``, written atomically, mode 0600), the key is printed once at creation,
compared in constant time (:func:`hmac.compare_digest`) and never logged. Scopes: ``ingest``
(send events and items), ``read`` (recommendations, interests, items, the dashboard), ``admin``
(reload, erasure, everything). A 256-bit random secret makes an unsalted SHA-256 safe here: it
cannot be guessed or looked up, unlike a password.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["SCOPES", "ApiKey", "KeyStore", "AuthError", "RateLimiter"]

SCOPES = ("ingest", "read", "admin")


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class ApiKey:
    key_id: str
    secret_sha256: str
    scopes: list[str]
    name: str
    created_at: str
    revoked_at: str | None = None

    def public(self) -> dict[str, object]:
        return {"key_id": self.key_id, "name": self.name, "scopes": self.scopes,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "auth" / "keys.json"
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, ApiKey]] | None = None

    def _read(self) -> dict[str, ApiKey]:
        """The key file, re-read whenever it changes on disk (so `tansuo keys revoke` takes
        effect in a running service at once) and otherwise served from memory."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._cache is None or self._cache[0] != stamp:
            data = json.loads(self.path.read_text())
            self._cache = (stamp, {k["key_id"]: ApiKey(**k) for k in data.get("keys", [])})
        return dict(self._cache[1])

    def _write(self, keys: dict[str, ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)

    def create(self, scopes: list[str], name: str = "") -> tuple[str, ApiKey]:
        """A new key: (the full key — shown once, never stored — and its record)."""
        bad = sorted(set(scopes) - set(SCOPES))
        if bad or not scopes:
            raise ValueError(f"scopes {bad or scopes}: expected some of {', '.join(SCOPES)}")
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        record = ApiKey(key_id, _digest(secret), sorted(set(scopes)), name,
                        datetime.now(UTC).isoformat(timespec="seconds"))
        with self._lock:
            keys = self._read()
            keys[key_id] = record
            self._write(keys)
        return f"tsk_{key_id}_{secret}", record

    def revoke(self, key_id: str) -> ApiKey:
        with self._lock:
            keys = self._read()
            if key_id not in keys:
                raise KeyError(key_id)
            keys[key_id].revoked_at = datetime.now(UTC).isoformat(timespec="seconds")
            self._write(keys)
            return keys[key_id]

    def list(self) -> list[ApiKey]:
        return list(self._read().values())

    def verify(self, authorization: str | None, scope: str) -> ApiKey:
        """The key behind an ``Authorization: Bearer tsk_...`` header, if it has ``scope``."""
        if not authorization:
            raise AuthError(401, "missing Authorization header: send 'Authorization: Bearer "
                                 "<key>' (create a key with `tansuo keys create`)")
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise AuthError(401, "Authorization header must be 'Bearer <key>'")
        parts = token.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != "tsk":
            raise AuthError(401, "malformed API key: expected tsk_<id>_<secret>")
        record = self._read().get(parts[1])
        expected = record.secret_sha256 if record else _digest("x")  # same work either way
        if not hmac.compare_digest(_digest(parts[2]), expected) or record is None:
            raise AuthError(401, "invalid API key")
        if record.revoked_at:
            raise AuthError(401, f"API key {record.key_id} was revoked at {record.revoked_at}")
        if scope not in record.scopes and "admin" not in record.scopes:
            raise AuthError(403, f"API key {record.key_id} lacks the {scope!r} scope (it has "
                                 f"{', '.join(record.scopes)})")
        return record


class RateLimiter:
    """Token bucket per key: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait = (1.0 - tokens) / rate
                raise AuthError(429, f"rate limit of {self.per_minute} requests per minute "
                                     f"exceeded for key {key_id}; retry in {wait:.1f} s")
            self._buckets[key_id] = (tokens - 1.0, now)
