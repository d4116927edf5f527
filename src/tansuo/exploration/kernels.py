"""Compiled loops of the slate policy (numba).

Why hand-written loops: a slate's Monte-Carlo propensities redraw it a few hundred times, and
each draw fills its slots one after the other, every slot depending on what the earlier ones
took. As numpy array operations that is a dozen calls per slot, whose per-call overhead made
up a fifth of a recommendation request; compiled, the same plain loop (the one
tests/test_policy.py checks against) takes microseconds. The same holds for picking each
interest's best candidates, a grouped top-k that numpy can only do with full sorts.

Compiled on first use and cached beside this file (numba ``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["fill_slots", "best_per_unit", "reachable", "first_per_unit", "warm_up",
           "NO_THETA", "NO_UNITS", "NO_CHOICE"]

#: the arguments of :func:`fill_slots` that one mode leaves unused
NO_THETA = np.zeros((0, 0))
NO_UNITS = np.zeros((0, 0), dtype=np.bool_)
NO_CHOICE = np.zeros((0, 0), dtype=np.int64)


@njit(cache=True, nogil=True)
def fill_slots(kk: int, flags: np.ndarray, theta: np.ndarray, unit_mask: np.ndarray,
               choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Fill ``kk`` slots of every draw (rows of ``flags``) from candidates in score order: a
    slot takes the draw's next free candidate, unless it explores (``flags``). Item-level
    sampling (``theta`` has a column per candidate): an exploring slot takes the free
    candidate with the highest ``theta`` of its draw (the first of equal ones). Otherwise
    (``theta`` empty): the best free candidate of interest ``choice`` (a row of
    ``unit_mask``, a column per candidate), when that interest has one left. Returns
    (candidate per slot, whether the slot explored), each ``draws × kk``."""
    by_theta = theta.shape[1] > 0
    draws, width = flags.shape[0], theta.shape[1] if by_theta else unit_mask.shape[1]
    picks = np.empty((draws, kk), np.int64)
    went = np.zeros((draws, kk), np.bool_)
    free = np.empty(width, np.bool_)
    for r in range(draws):
        free[:] = True
        nxt = 0
        for j in range(kk):
            while not free[nxt]:
                nxt += 1
            pick = nxt
            if flags[r, j] and by_theta:
                best = -np.inf
                for i in range(nxt, width):
                    if free[i] and theta[r, i] > best:
                        best = theta[r, i]
                        pick = i
                went[r, j] = True
            elif flags[r, j]:
                row = unit_mask[choice[r, j]]
                for i in range(nxt, width):
                    if free[i] and row[i]:
                        pick = i
                        went[r, j] = True
                        break
            free[pick] = False
            picks[r, j] = pick
    return picks, went


@njit(cache=True, nogil=True)
def best_per_unit(scores: np.ndarray, unit: np.ndarray, member: np.ndarray, k: int
                  ) -> np.ndarray:  # pragma: no cover - compiled
    """Mask of each member unit's ``k`` best entries (highest ``scores``, earlier entries
    first among equal ones); ``unit`` -1 or not in ``member`` (a mask over unit ids): never.
    One pass, keeping a sorted top-k per unit."""
    n_units = member.shape[0]
    out = np.zeros(scores.shape[0], np.bool_)
    if n_units == 0 or k == 0:  # (``unit`` may then be empty)
        return out
    top = np.empty((n_units, k), np.int64)
    count = np.zeros(n_units, np.int64)
    for i in range(scores.shape[0]):
        u = unit[i]
        if u < 0 or u >= n_units or not member[u]:
            continue
        c = count[u]
        if c == k and not scores[i] > scores[top[u, c - 1]]:
            continue
        pos = c if c < k else k - 1
        while pos > 0 and scores[i] > scores[top[u, pos - 1]]:
            top[u, pos] = top[u, pos - 1]
            pos -= 1
        top[u, pos] = i
        if c < k:
            count[u] = c + 1
    for u in range(n_units):
        for j in range(count[u]):
            out[top[u, j]] = True
    return out


@njit(cache=True, nogil=True)
def reachable(scores: np.ndarray, unit: np.ndarray, member: np.ndarray, m: int, k: int
              ) -> np.ndarray:  # pragma: no cover - compiled
    """Positions of the ``m`` best entries and of each member unit's ``k`` best (see
    :func:`best_per_unit`), best first; ties go to the earlier entry, as a stable sort of
    ``-scores`` would order them."""
    n = scores.shape[0]
    size = min(m, n)
    top = np.empty(max(size, 1), np.int64)
    count = 0
    for i in range(n):  # a sorted buffer of the m best so far
        if count == size and not scores[i] > scores[top[size - 1]]:
            continue
        pos = count if count < size else size - 1
        while pos > 0 and scores[i] > scores[top[pos - 1]]:
            top[pos] = top[pos - 1]
            pos -= 1
        top[pos] = i
        if count < size:
            count += 1
    keep = best_per_unit(scores, unit, member, k)
    for j in range(count):
        keep[top[j]] = True
    chosen = np.flatnonzero(keep)
    return chosen[np.argsort(-scores[chosen], kind="mergesort")]


@njit(cache=True, nogil=True)
def first_per_unit(unit: np.ndarray, member: np.ndarray, k: int
                   ) -> np.ndarray:  # pragma: no cover - compiled
    """Mask of the first ``k`` entries of each member unit, in the given order."""
    seen = np.zeros(member.shape[0], np.int64)
    out = np.zeros(unit.shape[0], np.bool_)
    for i in range(unit.shape[0]):
        u = unit[i]
        if 0 <= u < member.shape[0] and member[u] and seen[u] < k:
            seen[u] += 1
            out[i] = True
    return out


def warm_up() -> None:
    """Compile (or load from the cache) every kernel for the argument types the policy uses,
    so that a service's first request does not pay for it."""
    flags = np.zeros((1, 1), dtype=bool)
    fill_slots(1, flags, NO_THETA, np.ones((1, 1), dtype=bool), np.zeros((1, 1), dtype=np.int64))
    fill_slots(1, flags, np.zeros((1, 1)), NO_UNITS, NO_CHOICE)
    unit = np.zeros(1, dtype=np.int64)
    member = np.ones(1, dtype=bool)
    best_per_unit(np.zeros(1), unit, member, 1)
    reachable(np.zeros(1), unit, member, 1, 1)
    first_per_unit(unit, member, 1)
