"""Top-k retrieval of items for query vectors (user representations, search queries).

Up to ``exact_max_items`` items (default 200,000) retrieval is exact: one matrix multiply per
batch of queries and a partial sort. Beyond that an approximate HNSW index (faiss) answers,
and :func:`recall_at_k` measures how much of the exact top-k it finds (reported in
``docs/benchmarks.md`` by ``benchmarks/bench_retrieval.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tansuo.evaluation.metrics import top_k

__all__ = ["ItemIndex", "ExactIndex", "HNSWIndex", "RetrievalConfig", "build_index",
           "recall_at_k"]


class ItemIndex(Protocol):
    n_items: int

    def search(self, queries: np.ndarray, k: int,
               exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores), each queries × k, best first (inner product)."""
        ...


@dataclass(frozen=True)
class RetrievalConfig:
    exact_max_items: int = 200_000
    """Exact search up to this catalogue size; an HNSW index beyond."""
    hnsw_m: int = 32
    """HNSW graph degree."""
    ef_construction: int = 200
    ef_search: int = 128
    """Search breadth: higher is slower and closer to exact."""
    batch: int = 1024
    """Queries per matrix multiply in exact search."""


class ExactIndex:
    """Brute-force inner product: exact, fast up to a few hundred thousand items."""

    def __init__(self, items: np.ndarray, batch: int = 1024) -> None:
        self.items = np.ascontiguousarray(items, dtype=np.float32)
        self.n_items = len(self.items)
        self.batch = batch

    def search(self, queries: np.ndarray, k: int,
               exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, dtype=np.float32)
        idx_parts, score_parts = [], []
        for start in range(0, len(queries), self.batch):
            scores = queries[start:start + self.batch] @ self.items.T
            ex = exclude[start:start + self.batch] if exclude is not None else None
            idx = top_k(scores, k, ex)
            idx_parts.append(idx)
            picked = np.take_along_axis(scores, idx, axis=1)
            if ex is not None:  # excluded items that still fill a short list score -inf
                for r, items in enumerate(ex):
                    picked[r, np.isin(idx[r], items)] = -np.inf
            score_parts.append(picked)
        if not idx_parts:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.vstack(idx_parts), np.vstack(score_parts)


class HNSWIndex:
    """Approximate inner-product search with faiss' HNSW graph."""

    def __init__(self, items: np.ndarray, config: RetrievalConfig | None = None) -> None:
        import faiss

        cfg = config or RetrievalConfig()
        self.items = np.ascontiguousarray(items, dtype=np.float32)
        self.n_items = len(self.items)
        self.index = faiss.IndexHNSWFlat(self.items.shape[1], cfg.hnsw_m,
                                         faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = cfg.ef_construction
        self.index.hnsw.efSearch = cfg.ef_search
        self.index.add(self.items)

    def search(self, queries: np.ndarray, k: int,
               exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        want = min(k + extra, self.n_items)
        scores, idx = self.index.search(queries, want)
        out_idx = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for r in range(len(queries)):
            keep = idx[r] >= 0
            if exclude is not None and len(exclude[r]):
                keep &= ~np.isin(idx[r], exclude[r])
            found = idx[r][keep][:k]
            out_idx[r, :len(found)] = found
            out_scores[r, :len(found)] = scores[r][keep][:k]
        return out_idx, out_scores


def build_index(items: np.ndarray, config: RetrievalConfig | None = None) -> ItemIndex:
    """Exact search for catalogues up to ``exact_max_items``, HNSW beyond."""
    cfg = config or RetrievalConfig()
    if len(items) <= cfg.exact_max_items:
        return ExactIndex(items, cfg.batch)
    return HNSWIndex(items, cfg)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k that the approximate top-k found, averaged over queries."""
    k = exact.shape[1]
    hits = [len(np.intersect1d(a[a >= 0], e)) / k for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) if hits else 0.0
