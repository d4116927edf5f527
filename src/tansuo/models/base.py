"""The one protocol every recommender follows, and the training data it receives.

A model is fitted on :class:`TrainData` and then answers queries: for a batch of users (their
index in the training vocabulary, or -1 for a user it has never seen) and each user's
time-ordered item history, ``score`` returns a users × items array of scores (NaN where the
model cannot score an item; a model that cannot score an unknown user returns a NaN row, and
callers fill the slate with a fallback). ``recommend`` ranks on top of ``score``.

Models are saved as arrays (``arrays.npz``, loaded with ``allow_pickle=False``) plus their
typed config as JSON (``model.json``): no pickles.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from tansuo.data.dataset import Vocabulary
from tansuo.evaluation.metrics import top_k
from tansuo.evaluation.protocols import Interactions

__all__ = ["TrainData", "Recommender", "ModelConfig", "HistoryContext", "history_matrix"]


@dataclass(frozen=True)
class HistoryContext:
    """What a query knows besides its items: each history item's event type and time, and the
    time of the query itself. Sequence models use it; others ignore it."""

    types: Sequence[np.ndarray]  # per query: event type strings, aligned with the history
    timestamps: Sequence[np.ndarray]  # per query: epoch ms, aligned with the history
    now: np.ndarray  # per query: epoch ms at which the recommendation is asked for

    def __getitem__(self, rows: slice) -> HistoryContext:
        return HistoryContext(self.types[rows], self.timestamps[rows], self.now[rows])


@dataclass(frozen=True)
class TrainData:
    """What a model may learn from: interactions (time ordered per user) and item metadata."""

    interactions: Interactions
    item_category: np.ndarray | None = None  # per item: category code, -1 unknown
    #: Frozen text embeddings, one row per item of ``interactions.items`` (float32,
    #: L2-normalised; a zero row where an item has no text). From :mod:`tansuo.text`.
    item_text: np.ndarray | None = None

    @property
    def users(self) -> Vocabulary:
        return self.interactions.users

    @property
    def items(self) -> Vocabulary:
        return self.interactions.items

    @property
    def n_users(self) -> int:
        return len(self.interactions.users)

    @property
    def n_items(self) -> int:
        return len(self.interactions.items)

    def matrix(self, binary: bool = True) -> sp.csr_matrix:
        """users × items, 1 per interaction (or the summed event weight)."""
        inter = self.interactions
        values = (np.ones(len(inter), dtype=np.float32) if binary
                  else inter.weight.astype(np.float32))
        m = sp.csr_matrix((values, (inter.user, inter.item)),
                          shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sum_duplicates()
        return m

    def item_users(self) -> np.ndarray:
        """Distinct training users per item (popularity)."""
        return np.bincount(self.interactions.item, minlength=self.n_items).astype(np.float64)


def history_matrix(history: Sequence[np.ndarray], n_items: int, last: int | None = None
                   ) -> sp.csr_matrix:
    """Rows of 1s for each query's (last ``last``) history items."""
    rows, cols = [], []
    for r, items in enumerate(history):
        items = np.asarray(items, dtype=np.int64)
        if last is not None:
            items = items[-last:]
        rows.append(np.full(len(items), r))
        cols.append(items)
    row = np.concatenate(rows) if rows else np.empty(0, np.int64)
    col = np.concatenate(cols) if cols else np.empty(0, np.int64)
    m = sp.csr_matrix((np.ones(len(row), np.float32), (row, col)),
                      shape=(len(history), n_items))
    m.data[:] = 1.0  # an item listed twice still counts once
    return m


@dataclass(frozen=True)
class ModelConfig:
    """Base of every model's typed config: JSON round-trip and a validation hook."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {unknown}; expected {sorted(names)}")
        return cls(**data)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


class Recommender(ABC):
    """fit(data) → score(users, history) → recommend(users, history, k); save/load."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    #: hyperparameter grid searched by ``--tune`` (field → candidate values)
    search_space: ClassVar[dict[str, list[Any]]] = {}

    def wants_text(self) -> bool:
        """Whether ``fit`` needs ``TrainData.item_text`` (item text embeddings)."""
        return False

    def fit_info(self) -> dict[str, Any]:
        """What the last ``fit`` reports about itself (epochs, early stopping); JSON-ready."""
        return {}

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{self.name} needs a {self.config_class.__name__}, "
                            f"got {type(self.config).__name__}")
        self.n_items = 0

    @abstractmethod
    def fit(self, data: TrainData) -> Self: ...

    @abstractmethod
    def score(self, users: np.ndarray, history: Sequence[np.ndarray],
              context: HistoryContext | None = None) -> np.ndarray:
        """Scores, users × items (float32; NaN = cannot score)."""

    def recommend(self, users: np.ndarray, history: Sequence[np.ndarray], k: int = 10,
                  exclude_seen: bool = True, context: HistoryContext | None = None
                  ) -> np.ndarray:
        """Top-k item indices per user, best first (history items removed by default)."""
        scores = self.score(np.asarray(users), history, context)
        return top_k(scores, k, history if exclude_seen else None)

    # -- persistence: arrays + JSON, never pickle ------------------------------------------
    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None: ...

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {k: v for k, v in self._arrays().items()}
        np.savez(path / "arrays.npz", n_items=np.array(self.n_items), **arrays)
        (path / "model.json").write_text(json.dumps(
            {"model": self.name, "config": self.config.to_dict()}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        if meta["model"] != cls.name:
            raise ValueError(f"{path} holds a {meta['model']!r} model, not {cls.name!r}")
        model = cls(cls.config_class.from_dict(meta["config"]))
        with np.load(path / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        model.n_items = int(arrays.pop("n_items"))
        model._restore(arrays)
        return model
