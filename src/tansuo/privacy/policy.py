"""What ingestion keeps: the privacy policy applied to every imported event.

One object, built from the settings, carried by :class:`tansuo.data.importer.ImportOptions`
and applied to each raw chunk before any rule sees it — so pseudonyms, not raw ids, are what
the bot rule counts, what quarantine and import reports record, and what the store holds:

- ``pseudonymizer`` — user ids become keyed pseudonyms (:mod:`tansuo.privacy.pseudonym`);
  unparseable rows (which may hold a raw id anywhere) are quarantined without their text;
- ``stored_fields`` — an allow-list of optional event fields; the others are dropped;
- ``text_storage`` — free text (``query``, ``text``): kept, dropped (``none``), or kept only
  as an embedding (``embedding``: the text is encoded at once, its vector stored under a keyed
  reference ``emb:<ref>`` in the data directory's embedding cache, the words themselves never
  stored).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tansuo.config import Settings
from tansuo.data.schema import EVENT_COLUMNS
from tansuo.errors import ConfigError, TansuoError
from tansuo.privacy.pseudonym import Pseudonymizer, load_ring

__all__ = ["PrivacyPolicy", "PrivacyError", "check_store_key", "ALWAYS_STORED"]

ALWAYS_STORED = ("event_id", "user_id", "item_id", "type", "timestamp")
TEXT_FIELDS = ("query", "text")
WITHHELD = "(withheld: pseudonymisation is on and this row could not be parsed)"


class PrivacyError(TansuoError):
    """The store and the configured privacy settings disagree."""


@dataclass
class PrivacyPolicy:
    pseudonymizer: Pseudonymizer | None = None
    stored_fields: tuple[str, ...] | None = None
    text_storage: str = "plain"
    home: Path | None = None
    text_model: str | None = None
    _encoder: Any = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> PrivacyPolicy:
        ring = load_ring(settings.pseudonym_key.get_secret_value()
                         if settings.pseudonym_key else None, settings.pseudonym_key_file)
        fields = None
        if settings.stored_fields is not None:
            unknown = sorted(set(settings.stored_fields) - set(EVENT_COLUMNS))
            if unknown:
                raise ConfigError(f"TANSUO_STORED_FIELDS has unknown fields {unknown}; expected "
                                  f"some of {list(EVENT_COLUMNS)}")
            fields = tuple(settings.stored_fields)
        return cls(ring, fields, settings.text_storage, Path(settings.home),
                   settings.text_model)

    @property
    def active(self) -> bool:
        return (self.pseudonymizer is not None or self.stored_fields is not None
                or self.text_storage != "plain")

    def lookup(self, user_id: str) -> str:
        """The stored id of an id given by a caller (API path, CLI argument)."""
        return self.pseudonymizer.lookup(user_id) if self.pseudonymizer else user_id

    def kept(self, name: str) -> bool:
        if name in ALWAYS_STORED:
            return True
        if self.stored_fields is not None and name not in self.stored_fields:
            return False
        return not (name in TEXT_FIELDS and self.text_storage == "none")

    def protect(self, frame: pd.DataFrame, sources: dict[str, str]) -> pd.DataFrame:
        """The raw chunk as ingestion may see it. ``sources`` maps each Tansuo field to the
        source column that feeds it."""
        out = frame.copy()
        user = sources.get("user_id")
        if self.pseudonymizer is not None and user in out.columns:
            p = self.pseudonymizer
            out[user] = [v if _missing(v) or str(v).strip() == "" else p(str(v))
                         for v in out[user]]
        for name, col in sources.items():
            if col not in out.columns or name in ALWAYS_STORED:
                continue
            if not self.kept(name):
                out[col] = None
            elif name in TEXT_FIELDS and self.text_storage == "embedding":
                out[col] = self._embed(out[col])
        return out

    def _ref(self, text: str) -> str:
        key = self.pseudonymizer.ring[-1].encode() if self.pseudonymizer else b"tansuo-text"
        return "emb:" + hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def _embed(self, values: pd.Series) -> list[Any]:
        """Encode the texts, keep their vectors under keyed references, return the refs."""
        from tansuo.text.encoder import EmbeddingCache, cache_path, open_encoder

        texts = {str(v) for v in values if isinstance(v, str) and v.strip()
                 and not v.startswith("emb:")}
        refs = {t: self._ref(t) for t in texts}
        if texts:
            if self.home is None:
                raise ConfigError("text_storage=embedding needs the data directory")
            if self._encoder is None:
                self._encoder = open_encoder(self.text_model)
            ordered = sorted(texts)
            vectors = np.asarray(self._encoder.encode(ordered, progress=False),
                                 dtype=np.float32)
            with EmbeddingCache(cache_path(self.home)) as cache:
                cache.put(self._encoder.name,
                          {refs[t]: v for t, v in zip(ordered, vectors, strict=True)})
        return [refs.get(v, v) if isinstance(v, str) else v for v in values]


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def check_store_key(store: Any, pseudonymizer: Pseudonymizer | None) -> None:
    """Refuse to mix pseudonymised and raw ids, or pseudonyms of two key rings."""
    stored = store.get_meta("pseudonym_key_id")
    if stored is None and pseudonymizer is None:
        return
    if stored is not None and pseudonymizer is None:
        raise PrivacyError(
            f"this store's user ids are pseudonymised (key id {stored}) but no key is "
            "configured: set TANSUO_PSEUDONYM_KEY (or TANSUO_PSEUDONYM_KEY_FILE) to its ring")
    assert pseudonymizer is not None
    if stored is None:
        if store.count_events() > 0:
            raise PrivacyError(
                "this store already holds user ids that were not pseudonymised; "
                "`tansuo keys rotate-pseudonym` pseudonymises them in place")
        store.set_meta("pseudonym_key_id", pseudonymizer.key_id)
        return
    if stored != pseudonymizer.key_id:
        raise PrivacyError(
            f"the configured pseudonymisation ring (key id {pseudonymizer.key_id}) is not the "
            f"one this store uses (key id {stored}); after `tansuo keys rotate-pseudonym` set "
            "TANSUO_PSEUDONYM_KEY to the ring it printed")
