"""Off-policy evaluation (OPE) of slate policies from logged propensities.

Position-based slates under the **independent-position assumption** (as in the Open Bandit
Pipeline paper and obp 0.5.7's ``OffPolicyEvaluation`` with ``position``): every logged row is
one impression — round ``i`` showed action ``a_i`` at position ``k_i`` and got reward ``r_i``;
the logging policy chose ``a_i`` at ``k_i`` with probability ``p_i = π_b(a_i | x_i, k_i)``
(``pscore``). The evaluation policy is given as ``action_dist[i, a, k] = π_e(a | x_i, k)``, its
probability of showing action ``a`` at position ``k`` in round ``i`` (each ``action_dist[i, :, k]``
sums to 1). The policy value is the expected reward per impression (the CTR for clicks).

With the importance weight ``w_i = π_e(a_i | x_i, k_i) / p_i`` and a reward model
``q̂(x_i, a, k)`` (``estimated_rewards[i, a, k]``):

- IPW (IPS):  ``V̂ = 1/n Σ_i min(w_i, λ) r_i``                       (λ = ``max_weight``, ∞ = none)
- SNIPS:      ``V̂ = Σ_i w_i r_i / Σ_i w_i``
- DM:         ``V̂ = 1/n Σ_i Σ_a π_e(a|x_i,k_i) q̂(x_i,a,k_i) / Σ_a π_e(a|x_i,k_i)``
- DR:         ``V̂ = DM + 1/n Σ_i min(w_i, λ) (r_i − q̂(x_i,a_i,k_i))``
- switch-DR:  ``V̂ = DM + 1/n Σ_i 1[w_i ≤ τ] w_i (r_i − q̂(x_i,a_i,k_i))``

These are exactly obp 0.5.7's ``InverseProbabilityWeighting(lambda_=λ)``,
``SelfNormalizedInverseProbabilityWeighting``, ``DirectMethod``, ``DoublyRobust(lambda_=λ)`` and
``SwitchDoublyRobust(lambda_=τ)`` (``benchmarks/peers/ope_crosscheck.py`` checks agreement to
1e-9 on the Open Bandit Dataset). DM's inner division by ``Σ_a π_e`` is 1 for valid inputs; it is
kept because obp computes DM as ``np.average(q̂, weights=π_e)``.

Confidence intervals (:func:`bootstrap_ci`) resample **rounds** with replacement and recompute
the estimator on each resample (SNIPS is re-normalised per resample, unlike obp's
``estimate_interval``, which resamples the already-normalised per-round terms); the interval is
the percentile interval, the point value is the full-sample estimate.

This module depends on numpy only, so another virtualenv can load it by file path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ESTIMATORS", "Estimate", "bootstrap_ci", "dm", "dr", "estimate_all",
           "importance_weights", "ipw", "snips", "switch_dr"]

SUM_TOLERANCE = 1e-6
"""How far ``action_dist[i, :, k].sum()`` may be from 1."""

_BLOCK = 100  # bootstrap replicates drawn at once (memory: _BLOCK × n indices)

Estimator = Callable[..., float]


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate with its bootstrap percentile interval."""

    value: float
    """The estimate on all rounds."""
    ci_low: float
    """Lower end of the (1 − alpha) percentile bootstrap interval."""
    ci_high: float
    """Upper end of the (1 − alpha) percentile bootstrap interval."""


# --------------------------------------------------------------------------- validation

def _vector(x: Any, name: str, n: int | None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of shape (n_rounds,), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have shape (n_rounds,) = ({n},) like action_dist's first "
                         f"axis, got shape {arr.shape}")
    return arr


def _indices(x: Any, name: str, n: int, upper: int, axis: int) -> np.ndarray:
    arr = _vector(x, name, n)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers (0-based indices), got dtype {arr.dtype}; "
                         f"convert with .astype(int) if the values are whole numbers")
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        raise ValueError(f"{name} must lie in [0, {upper}) (action_dist.shape[{axis}]), got "
                         f"values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.intp, copy=False)


def _action_dist(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError("action_dist must be a 3-D array of shape (n_rounds, n_actions, "
                         f"n_positions), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("action_dist has no rounds (shape[0] == 0); OPE needs at least one")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0 + SUM_TOLERANCE:
        raise ValueError("action_dist must hold probabilities in [0, 1], got values in "
                         f"[{np.nanmin(arr)}, {np.nanmax(arr)}]")
    sums = arr.sum(axis=1)
    bad = np.abs(sums - 1.0) > SUM_TOLERANCE
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise ValueError(f"action_dist[i, :, k] must sum to 1 over actions for every round i and "
                         f"position k (tolerance {SUM_TOLERANCE}); {int(bad.sum())} (round, "
                         f"position) pairs do not, e.g. round {i}, position {k} sums to "
                         f"{sums[i, k]!r}")
    return arr


def _logged(reward: Any, action: Any, position: Any, pscore: Any | None,
            action_dist: Any) -> tuple[np.ndarray, ...]:
    dist = _action_dist(action_dist)
    n, n_actions, n_positions = dist.shape
    r = _vector(reward, "reward", n).astype(np.float64, copy=False)
    if not np.all(np.isfinite(r)):
        raise ValueError("reward must be finite")
    a = _indices(action, "action", n, n_actions, 1)
    k = _indices(position, "position", n, n_positions, 2)
    if pscore is None:
        return r, a, k, None, dist
    p = _vector(pscore, "pscore", n).astype(np.float64, copy=False)
    if not np.all(np.isfinite(p)) or p.min() <= 0.0 or p.max() > 1.0:
        raise ValueError("pscore (the logging policy's probability of the logged action at its "
                         f"position) must be in (0, 1], got values in [{np.nanmin(p)}, "
                         f"{np.nanmax(p)}]")
    return r, a, k, p, dist


def _rewards_model(estimated_rewards: Any, dist: np.ndarray) -> np.ndarray:
    q = np.asarray(estimated_rewards, dtype=np.float64)
    if q.shape != dist.shape:
        raise ValueError("estimated_rewards must have the shape of action_dist, (n_rounds, "
                         f"n_actions, n_positions) = {dist.shape}, got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("estimated_rewards must be finite")
    return q


def _check_threshold(value: float, name: str) -> float:
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number ≥ 0 (math.inf = no threshold), got {value}")
    return value


# --------------------------------------------------------------------------- per-round terms
# Every estimator is Σ num_i / Σ den_i over rounds; bootstrap resamples (num_i, den_i) pairs.

def _weights(a: np.ndarray, k: np.ndarray, p: np.ndarray, dist: np.ndarray) -> np.ndarray:
    return dist[np.arange(a.shape[0]), a, k] / p


def _dm_rounds(k: np.ndarray, dist: np.ndarray, q: np.ndarray) -> np.ndarray:
    rows = np.arange(k.shape[0])
    return np.average(q[rows, :, k], weights=dist[rows, :, k], axis=1)


def _ipw_terms(*, reward: Any, action: Any, position: Any, pscore: Any, action_dist: Any,
               max_weight: float = math.inf) -> tuple[np.ndarray, np.ndarray | None]:
    r, a, k, p, dist = _logged(reward, action, position, pscore, action_dist)
    w = np.minimum(_weights(a, k, p, dist), _check_threshold(max_weight, "max_weight"))
    return r * w, None


def _snips_terms(*, reward: Any, action: Any, position: Any, pscore: Any,
                 action_dist: Any) -> tuple[np.ndarray, np.ndarray | None]:
    r, a, k, p, dist = _logged(reward, action, position, pscore, action_dist)
    w = _weights(a, k, p, dist)
    return r * w, w


def _dm_terms(*, position: Any, action_dist: Any, estimated_rewards: Any,
              **_: Any) -> tuple[np.ndarray, np.ndarray | None]:
    dist = _action_dist(action_dist)
    k = _indices(position, "position", dist.shape[0], dist.shape[2], 2)
    return _dm_rounds(k, dist, _rewards_model(estimated_rewards, dist)), None


def _dr_terms(*, reward: Any, action: Any, position: Any, pscore: Any, action_dist: Any,
              estimated_rewards: Any, max_weight: float = math.inf,
              ) -> tuple[np.ndarray, np.ndarray | None]:
    r, a, k, p, dist = _logged(reward, action, position, pscore, action_dist)
    q = _rewards_model(estimated_rewards, dist)
    w = np.minimum(_weights(a, k, p, dist), _check_threshold(max_weight, "max_weight"))
    q_logged = q[np.arange(a.shape[0]), a, k]
    return _dm_rounds(k, dist, q) + w * (r - q_logged), None


def _switch_dr_terms(*, reward: Any, action: Any, position: Any, pscore: Any, action_dist: Any,
                     estimated_rewards: Any, tau: float = math.inf,
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    r, a, k, p, dist = _logged(reward, action, position, pscore, action_dist)
    q = _rewards_model(estimated_rewards, dist)
    w = _weights(a, k, p, dist)
    keep = (w <= _check_threshold(tau, "tau")).astype(np.float64)
    q_logged = q[np.arange(a.shape[0]), a, k]
    return _dm_rounds(k, dist, q) + keep * w * (r - q_logged), None


def _ratio(num: np.ndarray, den: np.ndarray | None, name: str) -> float:
    if den is None:
        return float(num.mean())
    total = float(den.mean())
    if total == 0.0:
        raise ValueError(f"{name} is undefined: the evaluation policy gives probability 0 to "
                         "every logged (action, position), so all importance weights are 0")
    return float(num.mean() / total)


# --------------------------------------------------------------------------- estimators

def importance_weights(*, action: Any, position: Any, pscore: Any,
                       action_dist: Any) -> np.ndarray:
    """``w_i = action_dist[i, a_i, k_i] / pscore_i``, shape (n_rounds,)."""
    dist = _action_dist(action_dist)
    n = dist.shape[0]
    _, a, k, p, dist = _logged(np.zeros(n), action, position, pscore, dist)
    return _weights(a, k, p, dist)


def ipw(*, reward: Any, action: Any, position: Any, pscore: Any, action_dist: Any,
        max_weight: float = math.inf) -> float:
    """Inverse probability weighting: ``1/n Σ_i min(w_i, max_weight) r_i``.

    Unbiased when ``pscore`` is the true logging propensity, every (action, position) the
    evaluation policy can choose has ``pscore > 0``, and ``max_weight`` is ∞ (the default).
    """
    num, den = _ipw_terms(reward=reward, action=action, position=position, pscore=pscore,
                          action_dist=action_dist, max_weight=max_weight)
    return _ratio(num, den, "IPW")


def snips(*, reward: Any, action: Any, position: Any, pscore: Any, action_dist: Any) -> float:
    """Self-normalised IPW: ``Σ_i w_i r_i / Σ_i w_i`` (consistent, slightly biased).

    Raises ValueError when every importance weight is 0 (the estimate is 0/0).
    """
    num, den = _snips_terms(reward=reward, action=action, position=position, pscore=pscore,
                            action_dist=action_dist)
    return _ratio(num, den, "SNIPS")


def dm(*, position: Any, action_dist: Any, estimated_rewards: Any, **_: Any) -> float:
    """Direct method: ``1/n Σ_i Σ_a π_e(a|x_i,k_i) q̂(x_i,a,k_i)`` at each round's logged position.

    Extra keyword arguments (``reward``, ``action``, ``pscore``) are accepted and ignored, so all
    estimators can be called with the same inputs.
    """
    num, den = _dm_terms(position=position, action_dist=action_dist,
                         estimated_rewards=estimated_rewards)
    return _ratio(num, den, "DM")


def dr(*, reward: Any, action: Any, position: Any, pscore: Any, action_dist: Any,
       estimated_rewards: Any, max_weight: float = math.inf) -> float:
    """Doubly robust: DM plus ``1/n Σ_i min(w_i, max_weight) (r_i − q̂(x_i,a_i,k_i))``.

    Unbiased when either the propensities or the reward model is correct.
    """
    num, den = _dr_terms(reward=reward, action=action, position=position, pscore=pscore,
                         action_dist=action_dist, estimated_rewards=estimated_rewards,
                         max_weight=max_weight)
    return _ratio(num, den, "DR")


def switch_dr(*, reward: Any, action: Any, position: Any, pscore: Any, action_dist: Any,
              estimated_rewards: Any, tau: float = math.inf) -> float:
    """Switch-DR: DM plus ``1/n Σ_i 1[w_i ≤ tau] w_i (r_i − q̂(x_i,a_i,k_i))``.

    Rounds whose importance weight exceeds ``tau`` fall back to the reward model alone;
    ``tau = ∞`` is DR, ``tau = 0`` is DM (obp's ``SwitchDoublyRobust(lambda_=tau)``).
    """
    num, den = _switch_dr_terms(reward=reward, action=action, position=position, pscore=pscore,
                                action_dist=action_dist, estimated_rewards=estimated_rewards,
                                tau=tau)
    return _ratio(num, den, "switch-DR")


ESTIMATORS: dict[str, Estimator] = {
    "ipw": ipw, "snips": snips, "dm": dm, "dr": dr, "switch-dr": switch_dr,
}
"""The estimators by name, in the order :func:`estimate_all` reports them."""

_TERMS: dict[Estimator, Callable[..., tuple[np.ndarray, np.ndarray | None]]] = {
    ipw: _ipw_terms, snips: _snips_terms, dm: _dm_terms, dr: _dr_terms,
    switch_dr: _switch_dr_terms,
}


# --------------------------------------------------------------------------- intervals

def _resample_blocks(rng: np.random.Generator, n: int, n_boot: int):
    for start in range(0, n_boot, _BLOCK):
        yield rng.integers(0, n, size=(min(_BLOCK, n_boot - start), n))


def bootstrap_ci(estimator: Estimator | str, *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0, **inputs: Any) -> Estimate:
    """Estimate and (1 − alpha) percentile bootstrap interval, resampling rounds.

    ``estimator`` is one of this module's estimators (or its name in :data:`ESTIMATORS`), or any
    callable taking the same keyword arguments; ``inputs`` are its keyword arguments. Every
    array among them is resampled along its first axis (rounds), other values pass unchanged.
    Replicate ``b`` uses the indices ``rng.integers(0, n, n)`` drawn in order from
    ``np.random.default_rng(seed)`` whatever the estimator, so two estimators with one seed
    see the same resamples. This module's estimators are resampled through their per-round
    terms (fast); other callables are called once per replicate. Replicates where SNIPS is 0/0
    are dropped from the percentiles.
    """
    if isinstance(estimator, str):
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
        estimator = ESTIMATORS[estimator]
    if not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer ≥ 1, got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    value = float(estimator(**inputs))
    arrays = {key: np.asarray(v) for key, v in inputs.items() if isinstance(v, np.ndarray)
              or (isinstance(v, list | tuple) and len(v) > 0)}
    sizes = {key: (a.shape[0] if a.ndim else None) for key, a in arrays.items()}
    n_values = {s for s in sizes.values() if s is not None}
    if len(n_values) != 1:
        raise ValueError(f"every array input must have the same number of rounds (first axis); "
                         f"got {sizes}")
    n = n_values.pop()
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    terms = _TERMS.get(estimator)
    done = 0
    if terms is not None:
        num, den = terms(**inputs)
        for idx in _resample_blocks(rng, n, n_boot):
            top = num[idx].mean(axis=1)
            if den is None:
                reps[done:done + len(idx)] = top
            else:
                bottom = den[idx].mean(axis=1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    reps[done:done + len(idx)] = np.where(bottom > 0, top / bottom, np.nan)
            done += len(idx)
    else:
        for idx in _resample_blocks(rng, n, n_boot):
            for row in idx:
                sample = {key: (np.asarray(v)[row] if key in arrays else v)
                          for key, v in inputs.items()}
                try:
                    reps[done] = float(estimator(**sample))
                except ValueError:
                    reps[done] = np.nan
                done += 1
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        raise ValueError("every bootstrap replicate was undefined")
    low, high = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Estimate(value, float(low), float(high))


def estimate_all(*, reward: Any, action: Any, position: Any, pscore: Any, action_dist: Any,
                 estimated_rewards: Any | None = None, switch_tau: float | None = None,
                 n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                 ) -> dict[str, Estimate]:
    """Every applicable estimator with its bootstrap interval, by name.

    IPW and SNIPS always; DM and DR when ``estimated_rewards`` is given; switch-DR when
    ``switch_tau`` is given too. All use the same ``seed``, hence the same resamples.
    """
    logged = {"reward": reward, "action": action, "position": position, "pscore": pscore,
              "action_dist": action_dist}
    boot = {"n_boot": n_boot, "alpha": alpha, "seed": seed}
    out = {"ipw": bootstrap_ci(ipw, **logged, **boot),
           "snips": bootstrap_ci(snips, **logged, **boot)}
    if estimated_rewards is not None:
        out["dm"] = bootstrap_ci(dm, position=position, action_dist=action_dist,
                                 estimated_rewards=estimated_rewards, **boot)
        out["dr"] = bootstrap_ci(dr, **logged, estimated_rewards=estimated_rewards, **boot)
        if switch_tau is not None:
            out["switch-dr"] = bootstrap_ci(switch_dr, **logged,
                                            estimated_rewards=estimated_rewards,
                                            tau=switch_tau, **boot)
    elif switch_tau is not None:
        raise ValueError("switch_tau needs estimated_rewards (switch-DR uses a reward model)")
    return out
