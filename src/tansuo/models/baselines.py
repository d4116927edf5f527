"""Baselines every later model is measured against: popularity, recent popularity,
item-kNN, and matrix factorisation (ALS, BPR) through the ``implicit`` library."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from tansuo.models.base import (
    HistoryContext,
    ModelConfig,
    Recommender,
    TrainData,
    history_matrix,
)

__all__ = ["Popularity", "PopularityConfig", "RecentPopularity", "RecentPopularityConfig",
           "ItemKNN", "ItemKNNConfig", "ALS", "ALSConfig", "BPR", "BPRConfig", "BASELINES"]

_DAY_MS = 86_400_000


class _ItemScores(Recommender):
    """A model whose answer is one score per item, the same for every user."""

    scores: np.ndarray

    def _item_scores(self, data: TrainData) -> np.ndarray:
        raise NotImplementedError

    def fit(self, data: TrainData) -> Self:
        self.n_items = data.n_items
        self.scores = self._item_scores(data)
        return self

    def score(self, users: np.ndarray, history: Sequence[np.ndarray],
              context: HistoryContext | None = None) -> np.ndarray:
        return np.broadcast_to(self.scores.astype(np.float32), (len(users), self.n_items)).copy()

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.scores = arrays["scores"]


@dataclass(frozen=True)
class PopularityConfig(ModelConfig):
    """Most popular: no hyperparameters."""


class Popularity(_ItemScores):
    """Items ranked by how many training users interacted with them."""

    name = "pop"
    config_class = PopularityConfig

    def _item_scores(self, data: TrainData) -> np.ndarray:
        return data.item_users()


@dataclass(frozen=True)
class RecentPopularityConfig(ModelConfig):
    half_life_days: float = 30.0
    """An interaction this many days before the latest one counts half."""

    def __post_init__(self) -> None:
        if self.half_life_days <= 0:
            raise ValueError(f"half_life_days must be > 0, got {self.half_life_days}")


class RecentPopularity(_ItemScores):
    """Popularity with exponential time decay towards the end of the training data."""

    name = "recent-pop"
    config_class = RecentPopularityConfig
    search_space = {"half_life_days": [7.0, 30.0, 180.0, 720.0]}
    config: RecentPopularityConfig

    def _item_scores(self, data: TrainData) -> np.ndarray:
        inter = data.interactions
        age_days = (inter.timestamp.max() - inter.timestamp) / _DAY_MS if len(inter) else 0.0
        w = np.power(0.5, age_days / self.config.half_life_days)
        return np.bincount(inter.item, weights=w, minlength=data.n_items)


@dataclass(frozen=True)
class ItemKNNConfig(ModelConfig):
    neighbors: int = 200
    """Similar items kept per item."""
    shrink: float = 10.0
    """Shrinkage: sim(i, j) = co(i, j) / (sqrt(n_i n_j) + shrink), damping rare co-occurrences."""
    last_n: int = 20
    """Only the user's last N history items vote."""

    def __post_init__(self) -> None:
        if self.neighbors < 1 or self.last_n < 1 or self.shrink < 0:
            raise ValueError("neighbors and last_n must be ≥ 1 and shrink ≥ 0; got "
                             f"{self.neighbors}, {self.last_n}, {self.shrink}")


class ItemKNN(Recommender):
    """Item-based kNN: cosine similarity with shrinkage over the user's last N items."""

    name = "itemknn"
    config_class = ItemKNNConfig
    search_space = {"neighbors": [50, 200], "shrink": [0.0, 10.0, 100.0], "last_n": [5, 20, 100]}
    config: ItemKNNConfig

    def fit(self, data: TrainData) -> Self:
        x = data.matrix(binary=True).tocsc()
        self.n_items = data.n_items
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        xt = x.T.tocsr()
        k = min(self.config.neighbors, max(self.n_items - 1, 1))
        rows, cols, vals = [], [], []
        block = max(1, 2_000_000 // max(self.n_items, 1))
        for start in range(0, self.n_items, block):
            stop = min(start + block, self.n_items)
            co = (xt[start:stop] @ x).toarray()
            sim = co / (np.outer(norms[start:stop], norms) + self.config.shrink + 1e-12)
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            top_vals = np.take_along_axis(sim, top, axis=1)
            keep = top_vals > 0
            rows.append(np.repeat(np.arange(start, stop), k)[keep.ravel()])
            cols.append(top.ravel()[keep.ravel()])
            vals.append(top_vals.ravel()[keep.ravel()])
        self.similarity = sp.csr_matrix(
            (np.concatenate(vals).astype(np.float32) if vals else np.empty(0, np.float32),
             (np.concatenate(rows) if rows else np.empty(0, np.int64),
              np.concatenate(cols) if cols else np.empty(0, np.int64))),
            shape=(self.n_items, self.n_items))
        return self

    def score(self, users: np.ndarray, history: Sequence[np.ndarray],
              context: HistoryContext | None = None) -> np.ndarray:
        h = history_matrix(history, self.n_items, self.config.last_n)
        return np.asarray((h @ self.similarity).todense(), dtype=np.float32)

    def _arrays(self) -> dict[str, np.ndarray]:
        s = self.similarity
        return {"data": s.data, "indices": s.indices, "indptr": s.indptr}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.similarity = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                                        shape=(self.n_items, self.n_items))


@dataclass(frozen=True)
class ALSConfig(ModelConfig):
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    """Confidence of an interaction: alpha × weight (implicit's convention; binary weights)."""
    iterations: int = 15
    seed: int = 0
    threads: int = 0
    """Worker threads for implicit (0 = all cores)."""

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1 or self.regularization < 0 or self.alpha < 0:
            raise ValueError(f"invalid ALS config {self}")


class _Factors(Recommender):
    """A model stored as user and item factor matrices."""

    item_factors: np.ndarray
    user_factors: np.ndarray

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.item_factors, "user_factors": self.user_factors}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_factors = arrays["item_factors"]
        self.user_factors = arrays["user_factors"]


class ALS(_Factors):
    """Implicit-feedback ALS (Hu, Koren, Volinsky) via ``implicit``. At query time a user's
    factors are recomputed from the given history, so new interactions count at once."""

    name = "als"
    config_class = ALSConfig
    search_space = {"factors": [32, 64, 128], "regularization": [0.01, 0.1],
                    "alpha": [1.0, 10.0, 40.0]}
    config: ALSConfig

    def _model(self):  # noqa: ANN202 - implicit has no public type for it
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        with warnings.catch_warnings():  # we limit BLAS threads around every call instead
            warnings.filterwarnings("ignore", message=".*OpenBLAS is configured.*")
            return AlternatingLeastSquares(factors=c.factors, regularization=c.regularization,
                                           alpha=c.alpha, iterations=c.iterations,
                                           random_state=c.seed, num_threads=c.threads)

    def fit(self, data: TrainData) -> Self:
        self.n_items = data.n_items
        model = self._model()
        with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
            model.fit(data.matrix(binary=True), show_progress=False)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        return self

    def score(self, users: np.ndarray, history: Sequence[np.ndarray],
              context: HistoryContext | None = None) -> np.ndarray:
        model = self._model()
        model.item_factors = self.item_factors
        model.user_factors = self.user_factors
        h = history_matrix(history, self.n_items)
        if not h.shape[0]:
            return np.zeros((0, self.n_items), dtype=np.float32)
        with threadpool_limits(1, "blas"):
            factors = model.recalculate_user(np.arange(h.shape[0]), h)
        return np.asarray(factors, dtype=np.float32) @ self.item_factors.T


@dataclass(frozen=True)
class BPRConfig(ModelConfig):
    factors: int = 64
    learning_rate: float = 0.01
    regularization: float = 0.01
    iterations: int = 100
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1 or self.learning_rate <= 0:
            raise ValueError(f"invalid BPR config {self}")


class BPR(_Factors):
    """Bayesian Personalised Ranking via ``implicit``. Users are scored with their trained
    factors (BPR cannot fold in new history); an unknown user gets a NaN row."""

    name = "bpr"
    config_class = BPRConfig
    search_space = {"factors": [32, 64, 128], "learning_rate": [0.01, 0.05],
                    "regularization": [0.001, 0.01]}
    config: BPRConfig

    def fit(self, data: TrainData) -> Self:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        self.n_items = data.n_items
        model = BayesianPersonalizedRanking(
            factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization,
            iterations=c.iterations, random_state=c.seed, num_threads=c.threads)
        with threadpool_limits(1, "blas"):
            model.fit(data.matrix(binary=True), show_progress=False)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        return self

    def score(self, users: np.ndarray, history: Sequence[np.ndarray],
              context: HistoryContext | None = None) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        known = (users >= 0) & (users < len(self.user_factors))
        out = np.full((len(users), self.n_items), np.nan, dtype=np.float32)
        if known.any():
            out[known] = self.user_factors[users[known]] @ self.item_factors.T
        return out



BASELINES: dict[str, type[Recommender]] = {
    m.name: m for m in (Popularity, RecentPopularity, ItemKNN, ALS, BPR)
}
