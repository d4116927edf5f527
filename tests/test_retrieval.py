"""Exact and approximate top-k retrieval."""

from __future__ import annotations

import numpy as np

from tansuo.models.retrieval import (
    ExactIndex,
    HNSWIndex,
    RetrievalConfig,
    build_index,
    recall_at_k,
)


def _vectors(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_matches_a_full_sort_and_excludes():
    items, queries = _vectors(500), _vectors(7, seed=1)
    idx, scores = ExactIndex(items, batch=3).search(queries, 10)
    full = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(idx, full)
    assert np.all(np.diff(scores, axis=1) <= 0)
    ex = [full[r, :2] for r in range(7)]
    idx2, _ = ExactIndex(items).search(queries, 10, ex)
    assert np.array_equal(idx2[:, :8], full[:, 2:10])


def test_hnsw_recall_and_exclusion():
    items, queries = _vectors(5000), _vectors(50, seed=2)
    exact, _ = ExactIndex(items).search(queries, 10)
    approx, scores = HNSWIndex(items).search(queries, 10)
    assert recall_at_k(approx, exact) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    ex = [exact[r, :3] for r in range(50)]
    approx_ex, _ = HNSWIndex(items).search(queries, 10, ex)
    assert not any(np.isin(approx_ex[r], ex[r]).any() for r in range(50))


def test_build_index_switches_by_catalogue_size():
    items = _vectors(300)
    assert isinstance(build_index(items), ExactIndex)
    assert isinstance(build_index(items, RetrievalConfig(exact_max_items=100)), HNSWIndex)


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, -1]]), np.array([[1, 2, 3]])) == 2 / 3
