"""Ranking metrics on full rankings, beyond-accuracy measures, confidence intervals.

Per-user accuracy metrics take a user's ranked list (item indices, best first) and the set of
held-out target items:

- ``hr@K``      1 if any target is in the top K.
- ``recall@K``  targets in the top K / number of targets.
- ``ndcg@K``    Σ_hits 1/log2(rank+1) / Σ_{r≤min(K,|T|)} 1/log2(r+1)  (ranks from 1).
- ``mrr@K``     1/rank of the first target in the top K, else 0.

List-level measures over all users' top-K lists (train statistics from the training data):

- ``coverage@K``  distinct recommended items / catalogue size.
- ``novelty@K``   mean self-information −log2 p(i), p(i) = (users with i + 1)/(users + 1).
- ``ild_category@K``  mean share of pairs in a list whose top-level categories differ.
- ``ild_embedding@K`` mean pairwise cosine distance of item vectors in a list.
- ``arp@K``       average recommended popularity (train users per item), over lists.
- ``gini@K``      Gini coefficient of item exposure (count of lists containing each item,
                  over the whole catalogue; 0 = even exposure, 1 = one item gets all of it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["accuracy", "top_k", "coverage", "novelty", "ild_category", "ild_embedding",
           "average_popularity", "gini", "bootstrap_ci", "paired_test", "PairedTest"]


def top_k(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Indices of the k best items per row, best first. NaN scores (items a model cannot
    score) rank last; ``exclude`` gives per-row items removed from the ranking."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    scores[np.isnan(scores)] = -np.inf
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, items] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    # Where tied scores straddle the k-th place, argpartition picks among them arbitrarily:
    # rank those rows exactly (score, then item index).
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
    for row in np.flatnonzero((scores >= kth).sum(axis=1) > k):
        part[row] = np.lexsort((np.arange(scores.shape[1]), -scores[row]))[:k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    # Sort by score, ties by item index, so rankings are deterministic.
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1)


def accuracy(ranked: np.ndarray, targets: Sequence[np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Per-user hr, recall, ndcg and mrr at k (arrays aligned with ``targets``)."""
    n = len(targets)
    top = ranked[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    hr = np.zeros(n)
    recall = np.zeros(n)
    ndcg = np.zeros(n)
    mrr = np.zeros(n)
    for u, target in enumerate(targets):
        if not len(target):
            continue
        hit = np.isin(top[u], target)
        if not hit.any():
            continue
        positions = np.flatnonzero(hit)
        hr[u] = 1.0
        recall[u] = len(positions) / len(target)
        ndcg[u] = discounts[positions].sum() / discounts[: min(k, len(target))].sum()
        mrr[u] = 1.0 / (positions[0] + 1)
    return {f"hr@{k}": hr, f"recall@{k}": recall, f"ndcg@{k}": ndcg, f"mrr@{k}": mrr}


def coverage(ranked: np.ndarray, n_items: int) -> float:
    return len(np.unique(ranked)) / n_items if n_items else 0.0


def novelty(ranked: np.ndarray, item_users: np.ndarray, n_users: int) -> float:
    p = (item_users + 1.0) / (n_users + 1.0)
    return float(-np.log2(p[ranked]).mean()) if ranked.size else 0.0


def ild_category(ranked: np.ndarray, item_category: np.ndarray) -> float:
    """Mean over lists of the share of item pairs with different categories (codes; -1 =
    unknown counts as its own category per item)."""
    if ranked.shape[1] < 2:
        return 0.0
    cats = item_category[ranked]
    k = ranked.shape[1]
    same = (cats[:, :, None] == cats[:, None, :]) & (cats[:, :, None] >= 0)
    pairs = k * (k - 1)
    diff = (pairs - (same.sum(axis=(1, 2)) - np.sum(cats >= 0, axis=1))) / pairs
    return float(diff.mean())


def ild_embedding(ranked: np.ndarray, vectors: np.ndarray) -> float:
    """Mean over lists of the mean pairwise cosine distance of item vectors."""
    if ranked.shape[1] < 2:
        return 0.0
    norm = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    v = norm[ranked]  # users × k × d
    sims = np.einsum("ukd,ujd->ukj", v, v)
    k = ranked.shape[1]
    off_diag = (sims.sum(axis=(1, 2)) - np.trace(sims, axis1=1, axis2=2)) / (k * (k - 1))
    return float((1.0 - off_diag).mean())


def average_popularity(ranked: np.ndarray, item_users: np.ndarray) -> float:
    return float(item_users[ranked].mean()) if ranked.size else 0.0


def gini(ranked: np.ndarray, n_items: int) -> float:
    exposure = np.sort(np.bincount(ranked.ravel(), minlength=n_items).astype(np.float64))
    total = exposure.sum()
    if total == 0 or n_items == 0:
        return 0.0
    index = np.arange(1, n_items + 1)
    return float((2 * index - n_items - 1) @ exposure / (n_items * total))


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 100):  # blocks bound memory to 100 × users
        idx = rng.integers(0, len(values), size=(min(100, n_boot - start), len(values)))
        means[start:start + len(idx)] = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedTest:
    """Model A minus model B on the same users."""

    mean_difference: float
    ci: tuple[float, float]
    p_value: float  # Wilcoxon signed-rank, two-sided, zero differences dropped (1.0 if all 0)


def paired_test(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> PairedTest:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same users: {a.shape} vs {b.shape}")
    diff = a - b
    # Wilcoxon signed-rank on the non-zero differences (users where both models tie — often
    # both miss — carry no information about which is better).
    p = float(stats.wilcoxon(a, b).pvalue) if np.count_nonzero(diff) else 1.0
    return PairedTest(float(diff.mean()), bootstrap_ci(diff, n_boot, seed=seed), p)
