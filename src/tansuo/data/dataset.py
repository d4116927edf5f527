"""Training views of the store: per-user time-ordered sequences and the user×item matrix.

Both carry an id↔index :class:`Vocabulary` per entity, so models work on dense integer
indices and answers go back out as ids. Unknown ids are not errors: ``index`` returns -1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from tansuo.data.schema import DEFAULT_EVENT_WEIGHTS, EventType
from tansuo.data.store import EventStore

__all__ = ["Vocabulary", "UserSequences", "InteractionMatrix", "load_sequences",
           "load_interactions", "interactions_from_events"]


@dataclass(frozen=True)
class Vocabulary:
    """Sorted unique ids and their dense indices."""

    ids: np.ndarray  # object array of str, sorted

    @classmethod
    def from_ids(cls, ids: Iterable[str]) -> Vocabulary:
        return cls(np.array(sorted(set(ids)), dtype=object))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, key: object) -> bool:
        return key in self._lookup

    @property
    def _lookup(self) -> dict[str, int]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {k: i for i, k in enumerate(self.ids.tolist())}
            object.__setattr__(self, "_cache", cache)
        return cache

    def index(self, ids: str | Sequence[str]) -> int | np.ndarray:
        """Index of one id, or an array for many; -1 for an id not in the vocabulary."""
        if isinstance(ids, str):
            return self._lookup.get(ids, -1)
        lookup = self._lookup
        return np.fromiter((lookup.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))

    def id(self, index: int) -> str:
        return str(self.ids[index])


@dataclass(frozen=True)
class UserSequences:
    """Every user's events in time order, stored flat with offsets (CSR layout).

    ``items[offsets[u]:offsets[u + 1]]`` is user ``u``'s item-index sequence; ``types`` and
    ``timestamps`` are aligned with it. Search events (no item) are left out; item index -1
    never appears.
    """

    users: Vocabulary
    items: Vocabulary
    offsets: np.ndarray  # int64, len(users) + 1
    item_index: np.ndarray  # int32
    types: np.ndarray  # object array of event type strings
    timestamps: np.ndarray  # int64 epoch ms

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: str | int) -> np.ndarray:
        u = self.users.index(user) if isinstance(user, str) else user
        if u < 0:
            return np.empty(0, dtype=np.int32)
        return self.item_index[self.offsets[u]:self.offsets[u + 1]]

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for u, uid in enumerate(self.users.ids.tolist()):
            yield uid, self.item_index[self.offsets[u]:self.offsets[u + 1]]

    def to_arrow(self) -> pa.Table:
        """One row per user with list columns ``item_id``, ``type``, ``timestamp``."""
        offsets = pa.array(self.offsets, type=pa.int64())
        return pa.table({
            "user_id": pa.array(self.users.ids.tolist(), type=pa.string()),
            "item_id": pa.LargeListArray.from_arrays(
                offsets, pa.array(self.items.ids[self.item_index].tolist(), type=pa.string())),
            "type": pa.LargeListArray.from_arrays(offsets, pa.array(self.types.tolist(),
                                                                    type=pa.string())),
            "timestamp": pa.LargeListArray.from_arrays(
                offsets, pa.array(self.timestamps, type=pa.int64())),
        })


@dataclass(frozen=True)
class InteractionMatrix:
    """Users × items, each cell the summed weight of that user's events on that item.

    ``matrix`` may hold negative cells (dislikes outweighing positives); :meth:`positive`
    keeps only cells > 0 for models of implicit feedback.
    """

    users: Vocabulary
    items: Vocabulary
    matrix: sp.csr_matrix  # float32

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape  # type: ignore[return-value]

    def positive(self) -> sp.csr_matrix:
        m = self.matrix.copy()
        m.data[m.data < 0] = 0
        m.eliminate_zeros()
        return m

    def negative(self) -> sp.csr_matrix:
        """Cells whose total weight is negative (the user said "not interested")."""
        m = self.matrix.copy()
        m.data = np.where(m.data < 0, 1.0, 0.0).astype(np.float32)
        m.eliminate_zeros()
        return m

    def density(self) -> float:
        rows, cols = self.shape
        return self.matrix.nnz / (rows * cols) if rows and cols else 0.0


def load_sequences(store: EventStore) -> UserSequences:
    """All users' item events in time order (equal timestamps keep ingestion order)."""
    frame = store.events(["user_id", "item_id", "type", "timestamp"])
    return sequences_from_events(frame)


def sequences_from_events(frame: pd.DataFrame) -> UserSequences:
    """Build :class:`UserSequences` from events already sorted by user, time, ingestion."""
    frame = frame[frame["item_id"].notna()]
    users = Vocabulary.from_ids(frame["user_id"].unique())
    items = Vocabulary.from_ids(frame["item_id"].unique())
    user_codes = pd.Categorical(frame["user_id"], categories=users.ids).codes
    if len(user_codes) and np.any(np.diff(user_codes) < 0):
        order = np.argsort(user_codes, kind="stable")
        frame = frame.iloc[order]
        user_codes = user_codes[order]
    counts = np.bincount(user_codes, minlength=len(users)) if len(users) else np.zeros(0, int)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    item_codes = pd.Categorical(frame["item_id"], categories=items.ids).codes.astype(np.int32)
    return UserSequences(users, items, offsets, item_codes,
                         frame["type"].to_numpy(dtype=object),
                         frame["timestamp"].to_numpy(dtype=np.int64))


def interactions_from_events(
    frame: pd.DataFrame,
    weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
    items: Iterable[str] | None = None,
) -> InteractionMatrix:
    """Sum event weights per (user, item). ``items`` widens the item vocabulary (e.g. the whole
    catalogue, so items without events are still scoreable)."""
    frame = frame[frame["item_id"].notna()]
    unknown = set(frame["type"].unique()) - {t.value for t in EventType}
    if unknown:
        raise ValueError(f"events have unknown types {sorted(unknown)}")
    w = frame["type"].map({**DEFAULT_EVENT_WEIGHTS, **weights}).to_numpy(dtype=np.float32)
    users = Vocabulary.from_ids(frame["user_id"].unique())
    item_ids = set(frame["item_id"].unique())
    if items is not None:
        item_ids |= set(items)
    vocab = Vocabulary.from_ids(item_ids)
    rows = pd.Categorical(frame["user_id"], categories=users.ids).codes
    cols = pd.Categorical(frame["item_id"], categories=vocab.ids).codes
    matrix = sp.csr_matrix((w, (rows, cols)), shape=(len(users), len(vocab)), dtype=np.float32)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return InteractionMatrix(users, vocab, matrix)


def load_interactions(
    store: EventStore,
    weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
    include_catalogue: bool = True,
) -> InteractionMatrix:
    """The user×item matrix of the whole store, weighted per event type."""
    frame = store.events(["user_id", "item_id", "type"])
    items = store.item_ids() if include_catalogue else None
    return interactions_from_events(frame, weights, items)
