"""Keyed pseudonymisation of user ids: HMAC-SHA256 under a secret key ring.

A raw user id never reaches the store, the logs or the models: on ingestion (file import and
HTTP alike) it is replaced by ``p_`` + 26 base32 characters (130 bits) of
HMAC-SHA256(key, id). Plain hashing would not do: user ids are guessable (e-mail addresses,
sequential numbers), and anyone could hash a list of candidates and match them; without the
key they cannot.

Rotation without re-importing: the ring holds every key ever used, oldest first, and the
pseudonym of an id is the chain f_n(...f_1(id)), f_k(x) = ``p_`` + HMAC(K_k, x). Rotating to
K_n therefore re-keys the stored pseudonyms directly (p' = f_n(p)): no raw id is needed, and
after rotation a leaked old key alone no longer links anything stored. The ring's
fingerprint (its *key id*) is recorded in the store and on every event row; a service or
import configured with a different ring is refused instead of silently splitting users.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from pathlib import Path

from tansuo.errors import ConfigError

__all__ = ["Pseudonymizer", "PSEUDONYM_RE", "is_pseudonym", "load_ring", "new_key"]

PSEUDONYM_RE = re.compile(r"^p_[a-z2-7]{26}$")
MIN_KEY_CHARS = 16


def is_pseudonym(value: str) -> bool:
    return bool(PSEUDONYM_RE.match(value))


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe text)."""
    import secrets

    return secrets.token_urlsafe(32)


def _step(key: bytes, value: str) -> str:
    digest = hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest()
    return "p_" + base64.b32encode(digest).decode("ascii").lower()[:26]


class Pseudonymizer:
    """HMAC-SHA256 pseudonyms under a key ring (oldest key first)."""

    def __init__(self, ring: Sequence[str]) -> None:
        keys = [k.strip() for k in ring if k and k.strip()]
        if not keys:
            raise ConfigError("the pseudonymisation key ring is empty")
        short = [i for i, k in enumerate(keys) if len(k) < MIN_KEY_CHARS]
        if short:
            raise ConfigError(f"pseudonymisation key #{short[0] + 1} has fewer than "
                              f"{MIN_KEY_CHARS} characters; use `tansuo keys rotate-pseudonym` "
                              "to generate a strong one")
        self._keys = [k.encode("utf-8") for k in keys]
        self.ring = list(keys)
        self.key_id = hashlib.sha256(b"tansuo-pseudonym-ring\0" + b"\0".join(self._keys)
                                     ).hexdigest()[:12]
        self._cache: dict[str, str] = {}

    def __call__(self, user_id: str) -> str:
        """The pseudonym of a raw id (memoised: an import sees each user many times)."""
        hit = self._cache.get(user_id)
        if hit is None:
            value = user_id
            for key in self._keys:
                value = _step(key, value)
            hit = value
            if len(self._cache) > 1_000_000:
                self._cache.clear()
            self._cache[user_id] = hit
        return hit

    def lookup(self, user_id: str) -> str:
        """The stored id for an id from a request: pseudonymised, unless it already is a
        pseudonym (the dashboard links users by their pseudonym)."""
        return user_id if is_pseudonym(user_id) else self(user_id)

    def rotated(self, key: str) -> Pseudonymizer:
        """The ring with ``key`` appended."""
        return Pseudonymizer([*self.ring, key])

    def rekey(self, stored: str) -> str:
        """What a pseudonym under the ring minus its last key becomes under the whole ring
        (the step a rotation applies to stored ids)."""
        return _step(self._keys[-1], stored)

    def ring_text(self) -> str:
        return ",".join(self.ring)


def load_ring(key: str | None, key_file: Path | None) -> Pseudonymizer | None:
    """The configured ring (``TANSUO_PSEUDONYM_KEY``, comma-separated, or a file with one key
    per line or comma-separated), or None when pseudonymisation is off."""
    text = key
    if key_file is not None:
        try:
            text = Path(key_file).read_text()
        except OSError as exc:
            raise ConfigError(f"TANSUO_PSEUDONYM_KEY_FILE {key_file}: cannot read it ({exc})"
                              ) from exc
    if text is None or not text.strip():
        return None
    return Pseudonymizer(re.split(r"[,\n]", text))
