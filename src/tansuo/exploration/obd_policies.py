"""Policies evaluated off-line on the Open Bandit Dataset (OBD), as ``action_dist`` arrays.

Every policy here is expressed as what the off-policy estimators of
:mod:`tansuo.evaluation.ope` need: ``action_dist[i, a, k]``, the probability of showing item
``a`` at position ``k`` (0-based) in round ``i``. OBD slates have 3 positions.

ZOZOTOWN's Bernoulli Thompson sampling (:func:`bts_action_dist`)
    The OBP paper's evaluation policy. ``bts_prior(campaign)`` reads ZOZOTOWN's Beta(α_i, β_i)
    prior per item from obp's ``policy/conf/prior_bts.yaml`` (read as a file from the installed
    wheel; obp is not imported). One Thompson draw samples ``θ_i ~ Beta(α_i, β_i)`` for every
    item and shows the items with the largest draws at positions 0, 1, 2 (obp's
    ``BernoulliTS.select_action``: ``argsort()[::-1][:3]``). ``action_dist`` is the empirical
    frequency of each (item, position) over ``n_draws`` seeded draws (default
    :data:`BTS_DRAWS` = 1,000,000; obp's ``compute_batch_action_dist`` uses 100,000); its Monte
    Carlo standard error is at most ``0.5 / sqrt(n_draws)`` (5e-4 at the default). The policy is
    context-free, so every round gets the same distribution (:func:`tile_rounds`).

Our own simple policies, trained on the early part of the uniform-random log
(:func:`time_split`: the first 70 % of rounds by timestamp) and evaluated on the later part:

``ctr-greedy`` (:func:`ctr_table`, :func:`greedy_slate`)
    per-(item, position) CTR shrunk toward the position's CTR,
    ``(clicks_ak + m·ctr_k) / (shows_ak + m)`` with ``m = prior_shows`` (default 100
    impressions); position 0 shows its best item, position 1 the best remaining, and so on.
    The same slate every round.
``ctr-ε-greedy`` (:func:`epsilon_greedy`)
    that slate with probability ``1 − ε``, otherwise a uniformly random slate, so
    ``π(a, k) = (1 − ε)·[greedy_k = a] + ε / n_actions``.
``features-lr`` (:class:`RewardModel`, :func:`model_greedy_dist`)
    per round the top-3 items by a click model's predicted CTR, filled position by position.

:class:`RewardModel` is an L2-regularised logistic regression with additive effects,
``logit q(x, a, k) = b + u·onehot(user features of x) + v·[onehot(item categories of a),
standardised item_feature_0 of a] + c·log1p(affinity(x, a)) + d_k``; its regularisation
strength is chosen from ``cs`` by 3-fold cross-validated log loss on the rows it is fitted on.
Because the effects add up, predicting all ``n × n_actions × n_positions`` cells needs no
design matrix of that size. :func:`cross_fit_rewards` gives the reward model DM and DR need:
each row's predictions come from a model fitted on the other folds (K-fold cross-fitting).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tansuo.data.bundled import LoggedBandit, obd_directory

__all__ = ["BTS_DRAWS", "RewardModel", "bts_action_dist", "bts_prior", "bts_prior_path",
           "cross_fit_rewards", "ctr_table", "epsilon_greedy", "greedy_slate",
           "model_greedy_dist", "subset", "tile_rounds", "time_split", "uniform_dist"]

BTS_DRAWS = 1_000_000
"""Default number of Thompson draws behind :func:`bts_action_dist`."""

_DRAW_BLOCK = 50_000
_ITEM_CATEGORICAL = ("item_feature_1", "item_feature_2", "item_feature_3")
_ITEM_NUMERIC = "item_feature_0"


# --------------------------------------------------------------------------- log helpers

def subset(log: LoggedBandit, rows: np.ndarray) -> LoggedBandit:
    """The log restricted to ``rows`` (indices or a boolean mask), in that order."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    return dataclasses.replace(
        log, timestamp=log.timestamp[rows], action=log.action[rows],
        position=log.position[rows], reward=log.reward[rows], propensity=log.propensity[rows],
        user_features=log.user_features.iloc[rows].reset_index(drop=True),
        affinity=log.affinity[rows],
    )


def time_split(log: LoggedBandit, train_fraction: float = 0.7,
               ) -> tuple[LoggedBandit, LoggedBandit]:
    """(earlier, later) parts of the log by timestamp; the first ``train_fraction`` of rounds.

    Ties keep file order (stable sort), so the split is deterministic.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    order = np.argsort(log.timestamp, kind="stable")
    cut = int(round(train_fraction * log.n_rounds))
    if cut == 0 or cut == log.n_rounds:
        raise ValueError(f"train_fraction {train_fraction} leaves an empty part of "
                         f"{log.n_rounds} rounds")
    return subset(log, order[:cut]), subset(log, order[cut:])


def tile_rounds(dist: np.ndarray, n_rounds: int) -> np.ndarray:
    """A context-free ``(n_actions, n_positions)`` distribution as ``(n_rounds, …)``.

    A read-only broadcast view: no memory per round.
    """
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2:
        raise ValueError(f"dist must be (n_actions, n_positions), got shape {dist.shape}")
    return np.broadcast_to(dist[None], (n_rounds, *dist.shape))


def uniform_dist(n_actions: int, n_positions: int) -> np.ndarray:
    """The uniform-random slate policy: every item has probability 1/n_actions everywhere."""
    return np.full((n_actions, n_positions), 1.0 / n_actions)


# --------------------------------------------------------------------------- Bernoulli TS

def bts_prior_path() -> Path:
    """``prior_bts.yaml`` inside the installed obp wheel (the file, not the module)."""
    path = obd_directory().parents[1] / "policy" / "conf" / "prior_bts.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed obp wheel")
    return path


def bts_prior(campaign: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """ZOZOTOWN's Beta prior ``(alpha, beta)`` per item for ``campaign`` (all, men, women)."""
    import yaml

    with bts_prior_path().open("rb") as fh:
        prior = yaml.safe_load(fh)
    if campaign not in prior:
        raise ValueError(f"no BTS prior for campaign {campaign!r}; known: {sorted(prior)}")
    return (np.asarray(prior[campaign]["alpha"], dtype=np.float64),
            np.asarray(prior[campaign]["beta"], dtype=np.float64))


def bts_action_dist(alpha: np.ndarray, beta: np.ndarray, n_positions: int = 3,
                    n_draws: int = BTS_DRAWS, seed: int = 0) -> np.ndarray:
    """Monte-Carlo ``(n_actions, n_positions)`` distribution of Bernoulli Thompson sampling.

    Each draw samples ``θ ~ Beta(alpha, beta)`` and shows the ``n_positions`` largest, largest
    first; the result is the frequency of each (item, position) over ``n_draws`` draws from
    ``np.random.default_rng(seed)`` (in blocks of 50,000). Columns sum to 1 exactly.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if alpha.ndim != 1 or alpha.shape != beta.shape:
        raise ValueError(f"alpha and beta must be 1-D of equal length, got {alpha.shape} and "
                         f"{beta.shape}")
    if not (np.all(alpha > 0) and np.all(beta > 0)):
        raise ValueError("alpha and beta must be positive")
    n_actions = alpha.shape[0]
    if not 1 <= n_positions <= n_actions:
        raise ValueError(f"n_positions must be in [1, {n_actions}], got {n_positions}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be ≥ 1, got {n_draws}")
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_actions, n_positions), dtype=np.int64)
    for start in range(0, n_draws, _DRAW_BLOCK):
        size = min(_DRAW_BLOCK, n_draws - start)
        theta = rng.beta(alpha, beta, size=(size, n_actions))
        top = np.argpartition(-theta, n_positions - 1, axis=1)[:, :n_positions]
        order = np.argsort(-np.take_along_axis(theta, top, axis=1), axis=1)
        ranked = np.take_along_axis(top, order, axis=1)
        for k in range(n_positions):
            counts[:, k] += np.bincount(ranked[:, k], minlength=n_actions)
    return counts / n_draws


# --------------------------------------------------------------------------- our policies

def ctr_table(log: LoggedBandit, prior_shows: float = 100.0) -> np.ndarray:
    """Shrunk per-(item, position) CTR, shape (n_actions, n_positions).

    ``(clicks_ak + m·ctr_k) / (shows_ak + m)``, ``ctr_k`` the position's CTR in ``log`` and
    ``m = prior_shows``.
    """
    if prior_shows < 0:
        raise ValueError(f"prior_shows must be ≥ 0, got {prior_shows}")
    shape = (log.n_actions, log.n_positions)
    shows = np.zeros(shape)
    clicks = np.zeros(shape)
    np.add.at(shows, (log.action, log.position), 1.0)
    np.add.at(clicks, (log.action, log.position), log.reward.astype(np.float64))
    per_position = clicks.sum(axis=0) / np.maximum(shows.sum(axis=0), 1.0)
    with np.errstate(invalid="ignore"):
        table = (clicks + prior_shows * per_position) / (shows + prior_shows)
    return np.nan_to_num(table, nan=0.0)


def greedy_slate(scores: np.ndarray) -> np.ndarray:
    """One-hot ``(…, n_actions, n_positions)`` slate: each position in turn takes its best
    remaining item (ties: lowest index). Works on one score table or a batch of rounds."""
    scores = np.array(scores, dtype=np.float64)  # a copy: chosen items are masked in place
    if scores.ndim not in (2, 3):
        raise ValueError(f"scores must be (n_actions, n_positions) or (n_rounds, n_actions, "
                         f"n_positions), got shape {scores.shape}")
    batch = scores if scores.ndim == 3 else scores[None]
    n, n_actions, n_positions = batch.shape
    if n_positions > n_actions:
        raise ValueError(f"{n_positions} positions need at least as many items, got {n_actions}")
    out = np.zeros_like(batch)
    rows = np.arange(n)
    for k in range(n_positions):
        best = np.argmax(batch[:, :, k], axis=1)
        out[rows, best, k] = 1.0
        batch[rows, best, :] = -np.inf
    return out if scores.ndim == 3 else out[0]


def epsilon_greedy(slate: np.ndarray, epsilon: float) -> np.ndarray:
    """Mix a slate distribution with the uniform-random slate: ``(1 − ε)·slate + ε/n_actions``."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    slate = np.asarray(slate, dtype=np.float64)
    return (1.0 - epsilon) * slate + epsilon / slate.shape[-2]


@dataclass(frozen=True)
class RewardModel:
    """Fitted additive logistic click model on OBD features (see the module docstring).

    Holds coefficients only, never training rows.
    """

    intercept: float
    user_columns: tuple[tuple[str, str], ...]
    """(user feature, value) of each one-hot user coefficient."""
    user_coef: np.ndarray
    item_logit: np.ndarray
    """Item features' contribution to the logit, per item, shape (n_actions,)."""
    affinity_coef: float
    position_coef: np.ndarray
    """Per position, shape (n_positions,)."""
    c: float
    """The chosen inverse regularisation strength."""

    @classmethod
    def fit(cls, log: LoggedBandit, cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
            seed: int = 0) -> RewardModel:
        """Fit on every round of ``log``; ``C`` chosen from ``cs`` by 3-fold CV log loss."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss
        from sklearn.model_selection import StratifiedKFold

        if log.reward.sum() == 0 or log.reward.sum() == log.n_rounds:
            raise ValueError("RewardModel.fit needs both clicks and non-clicks in the log")
        if not cs or min(cs) <= 0:
            raise ValueError(f"cs must be positive inverse regularisation strengths, got {cs}")
        user_cols = _user_columns(log.user_features)
        users = _user_onehot(log.user_features, user_cols)
        items = _item_matrix(log.item_features)
        x = np.hstack([
            users,
            items[log.action],
            np.log1p(log.affinity[np.arange(log.n_rounds), log.action])[:, None],
            np.eye(log.n_positions)[log.position],
        ])
        y = log.reward.astype(int)
        c = float(cs[0])
        folds = min(3, int(y.sum()))
        if folds >= 2 and len(cs) > 1:
            losses = np.zeros(len(cs))
            split = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)
            for train, test in split:
                for j, c_try in enumerate(cs):
                    fitted = LogisticRegression(C=c_try, max_iter=2000).fit(x[train], y[train])
                    losses[j] += log_loss(y[test], fitted.predict_proba(x[test])[:, 1],
                                          labels=[0, 1])
            c = float(cs[int(np.argmin(losses))])
        model = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        coef = model.coef_[0]
        nu, ni = users.shape[1], items.shape[1]
        return cls(
            intercept=float(model.intercept_[0]),
            user_columns=tuple(user_cols),
            user_coef=coef[:nu].copy(),
            item_logit=items @ coef[nu:nu + ni],
            affinity_coef=float(coef[nu + ni]),
            position_coef=coef[nu + ni + 1:].copy(),
            c=c,
        )

    def predict(self, log: LoggedBandit) -> np.ndarray:
        """Predicted click probability for every (round, item, position) of ``log``."""
        if log.n_actions != self.item_logit.shape[0]:
            raise ValueError(f"model has {self.item_logit.shape[0]} items, log {log.n_actions}")
        if log.n_positions != self.position_coef.shape[0]:
            raise ValueError(f"model has {self.position_coef.shape[0]} positions, log "
                             f"{log.n_positions}")
        users = _user_onehot(log.user_features, list(self.user_columns)) @ self.user_coef
        logit = (self.intercept + users[:, None, None] + self.item_logit[None, :, None]
                 + self.affinity_coef * np.log1p(log.affinity)[:, :, None]
                 + self.position_coef[None, None, :])
        return 1.0 / (1.0 + np.exp(-logit))


def _user_columns(users: pd.DataFrame) -> list[tuple[str, str]]:
    return [(col, str(v)) for col in users.columns for v in sorted(users[col].astype(str).unique())]


def _user_onehot(users: pd.DataFrame, columns: list[tuple[str, str]]) -> np.ndarray:
    """One-hot user features; values unseen when fitting get all zeros."""
    out = np.zeros((len(users), len(columns)))
    values = {col: users[col].astype(str).to_numpy() for col in users.columns}
    for j, (col, v) in enumerate(columns):
        if col in values:
            out[:, j] = values[col] == v
    return out


def _item_matrix(items: pd.DataFrame) -> np.ndarray:
    """Item design: standardised item_feature_0 and one-hot categorical item features."""
    items = items.sort_values("item_id")
    parts = []
    if _ITEM_NUMERIC in items:
        num = items[_ITEM_NUMERIC].to_numpy(dtype=np.float64)
        sd = num.std()
        parts.append(((num - num.mean()) / (sd if sd > 0 else 1.0))[:, None])
    for col in _ITEM_CATEGORICAL:
        if col in items:
            parts.append(pd.get_dummies(items[col].astype(str)).to_numpy(dtype=np.float64))
    return np.hstack(parts) if parts else np.zeros((len(items), 0))


def cross_fit_rewards(log: LoggedBandit, n_folds: int = 3, seed: int = 0,
                      cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)) -> np.ndarray:
    """Reward model for DM/DR, shape (n_rounds, n_actions, n_positions), by cross-fitting.

    Rounds are shuffled (seeded) into ``n_folds`` folds; each fold's predictions come from a
    :class:`RewardModel` fitted on the other folds, so no round's own reward enters its
    prediction.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be ≥ 2, got {n_folds}")
    rng = np.random.default_rng(seed)
    fold = rng.permutation(np.arange(log.n_rounds) % n_folds)
    out = np.empty((log.n_rounds, log.n_actions, log.n_positions))
    for f in range(n_folds):
        model = RewardModel.fit(subset(log, fold != f), cs=cs, seed=seed)
        out[fold == f] = model.predict(subset(log, fold == f))
    return out


def model_greedy_dist(model: RewardModel, log: LoggedBandit) -> np.ndarray:
    """Deterministic top-``n_positions`` slate per round by ``model``'s predicted CTR."""
    return greedy_slate(model.predict(log))
