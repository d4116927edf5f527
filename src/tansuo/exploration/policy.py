"""Slate policies: from model scores to the k items shown, balancing exploitation and exploration.

Every policy starts from the **exploitation slate**: candidates ranked by the model's score,
optionally boosted for novelty (items the user's interests have not covered yet) and re-ranked
for diversity with maximal marginal relevance (MMR) on item vectors. The one ``explore`` knob
(0 = pure exploitation, 1 = every slot explores) then means, for each strategy:

``greedy``
    the exploitation slate, always (``explore`` ignored).
``epsilon``
    with probability ``explore`` the whole slate is a uniformly random ordering of the top
    ``pool`` candidates, otherwise the exploitation slate. Propensities are **exact**:
    ``P(item i at position p) = (1 − ε)·[exploit_p = i] + ε / pool`` for pool items.
``interest-ts`` / ``interest-ucb``
    each slot independently explores with probability ``explore``; an exploring slot goes to an
    *interest*: one of the user's known interests, a fading one, or an unexplored neighbour of
    known ones (the interest units nearest to them), chosen by Thompson sampling from
    Beta(clicks + a, shows − clicks + b) per (user, interest) — the prior mean of a known
    interest is its share of the user's profile, of an unexplored one ``novel_prior`` (an
    optimistic start) — or by UCB1; the slot gets that interest's best remaining item.
    Non-exploring slots take the next exploitation item.
``item-ts``
    like ``interest-ts`` but an exploring slot goes to the remaining pool item with the highest
    draw from its own Beta(clicks + 1, shows − clicks + 1) posterior (one draw per item per
    slate; all users share item posteriors).

For the stochastic strategies (all but ``greedy`` and ``epsilon``) the marginal probability of
each shown item at its position is a **Monte-Carlo estimate**: the slate is redrawn
``propensity_draws`` times (default 200, seeded by the request) and the frequency is
recorded — a lower bound of ``1 / propensity_draws`` keeps it positive. Posteriors are
updated online with :meth:`SlatePolicy.feedback` from clicks on shown items.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tansuo.exploration.kernels import (
    NO_CHOICE,
    NO_THETA,
    NO_UNITS,
    fill_slots,
    first_per_unit,
    reachable,
)

__all__ = ["PolicyConfig", "UserContext", "Slate", "SlatePolicy", "STRATEGIES"]

STRATEGIES = ("greedy", "epsilon", "interest-ts", "interest-ucb", "item-ts")
_NO_UNIT = np.zeros(0, dtype=np.int64)  # no interest units to keep candidates for


@dataclass(frozen=True)
class PolicyConfig:
    strategy: str = "interest-ts"
    explore: float = 0.1
    """0 = pure exploitation; see the module docstring for each strategy's meaning."""
    diversity: float = 0.0
    """MMR trade-off: 0 = rank by score only, 1 = by dissimilarity only."""
    novelty: float = 0.0
    """Score boost (in standard deviations of the candidate scores) for items whose interest
    the user has not engaged with yet."""
    pool: int = 100
    """Candidates (top by score) that exploration may choose from."""
    neighbours: int = 3
    """Unexplored interest units considered per known interest (nearest centroids)."""
    prior_strength: float = 2.0
    """Pseudo-observations of the Beta prior of an interest (mean = its profile share)."""
    novel_prior: float = 0.15
    """Prior mean of an interest the user has not shown yet (an unexplored neighbour): an
    optimistic start, so exploring slots try new interests until clicks say otherwise."""
    ucb_c: float = 1.0
    propensity_draws: int = 200
    """Monte-Carlo slate redraws for the propensities of stochastic strategies (standard
    error ≤ 0.035 per propensity at 200 draws)."""
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [(self.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}, got "
                   f"{self.strategy!r}"),
                  (0.0 <= self.explore <= 1.0, f"explore must be in [0, 1], got {self.explore}"),
                  (0.0 <= self.diversity <= 1.0,
                   f"diversity must be in [0, 1], got {self.diversity}"),
                  (self.novelty >= 0, f"novelty must be ≥ 0, got {self.novelty}"),
                  (self.pool >= 1, f"pool must be ≥ 1, got {self.pool}"),
                  (self.neighbours >= 0, f"neighbours must be ≥ 0, got {self.neighbours}"),
                  (self.prior_strength > 0, "prior_strength must be > 0"),
                  (0.0 < self.novel_prior < 1.0, "novel_prior must be in (0, 1)"),
                  (self.ucb_c >= 0, "ucb_c must be ≥ 0"),
                  (self.propensity_draws >= 1, "propensity_draws must be ≥ 1")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class UserContext:
    """What the policy needs to know about the user (from the interest tracker)."""

    interests: Mapping[int, float] = field(default_factory=dict)
    """Known interest unit → share of the user's profile."""
    fading: Sequence[int] = ()
    """Known interests whose trend is fading or gone."""


@dataclass
class Slate:
    request_id: str
    items: np.ndarray
    """Item rows, in display order."""
    scores: np.ndarray
    propensities: np.ndarray
    """Probability the policy gave each shown item at its position."""
    explored: np.ndarray
    """Per position: the interest unit an exploring slot went to (-1: exploitation)."""
    strategy: str
    explore: float
    propensity_method: str
    exploit: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """The pure-exploitation slate for the same request (what explore = 0 would show), so
    logs support off-policy estimates of the greedy policy."""

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "items": self.items.tolist(),
                "scores": [round(float(s), 6) for s in self.scores],
                "propensities": [round(float(p), 6) for p in self.propensities],
                "explored": self.explored.tolist(), "strategy": self.strategy,
                "explore": self.explore, "propensity_method": self.propensity_method}


class SlatePolicy:
    """Turns a user's candidate scores into a slate with propensities (module docstring)."""

    def __init__(self, config: PolicyConfig | None = None, unit_of: np.ndarray | None = None,
                 centroids: np.ndarray | None = None, item_vectors: np.ndarray | None = None
                 ) -> None:
        self.config = config or PolicyConfig()
        self.unit_of = None if unit_of is None else np.asarray(unit_of, dtype=np.int64)
        self.centroids = centroids
        self.item_vectors = item_vectors
        #: (user, unit) → [clicks, shows] and item → [clicks, shows]
        self.interest_stats: dict[tuple[str, int], list[float]] = {}
        self.item_stats: dict[int, list[float]] = {}
        if self.config.strategy.startswith("interest") and self.unit_of is None:
            raise ValueError(f"strategy {self.config.strategy!r} needs the items' interest "
                             "units (unit_of)")
        if self.config.diversity > 0 and item_vectors is None:
            raise ValueError("diversity > 0 needs item_vectors")

    # -- the exploitation ranking ----------------------------------------------------------
    def _exploit_order(self, scores: np.ndarray, candidates: np.ndarray, ctx: UserContext,
                       k: int, units: Sequence[int] = ()) -> np.ndarray:
        """The exploitation ranking as far as a slate of ``k`` can use it: the top
        ``max(pool, k)`` candidates (MMR-reordered when ``diversity`` > 0) followed, in
        ranking order, by the best ``k`` candidates of each interest in ``units`` that are
        not among them. This is the full ranking with the candidates no slot can reach left
        out (their relative order is unchanged), so it costs a partial sort of the catalogue,
        not a full one."""
        c = self.config
        s = scores[candidates].astype(np.float64)
        if c.novelty > 0 and self.unit_of is not None:
            spread = float(s.std()) or 1.0
            new = ~np.isin(self.unit_of[candidates], list(ctx.interests))
            s = s + c.novelty * spread * new
        m = max(c.pool, k)
        if units and self.unit_of is not None:
            need = reachable(s, self.unit_of[candidates], _member(units), m, k)
        else:
            need = reachable(s, _NO_UNIT, _NO_UNIT.astype(bool), m, 0)
        order = candidates[need]
        if c.diversity <= 0 or self.item_vectors is None:
            return order
        # MMR over the top candidates: relevance scaled to [0, 1], cosine similarity
        head = order[:m]
        rel = scores[head].astype(np.float64)
        rel = (rel - rel.min()) / (np.ptp(rel) or 1.0)
        v = self.item_vectors[head]
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        sim = v @ v.T
        chosen: list[int] = []
        left = list(range(len(head)))
        max_sim = np.full(len(head), -np.inf)
        for _ in range(min(k, len(head))):
            penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
            value = (1 - c.diversity) * rel[left] - c.diversity * penalty[left]
            pick = left[int(np.argmax(value))]
            chosen.append(pick)
            left.remove(pick)
            max_sim = np.maximum(max_sim, sim[pick])
        rest = np.ones(len(order), dtype=bool)
        rest[chosen] = False
        return np.concatenate([head[chosen], order[rest]])

    # -- exploring slots -------------------------------------------------------------------
    def _candidate_units(self, ctx: UserContext) -> list[int]:
        units = set(ctx.interests) | set(ctx.fading)
        if self.centroids is not None and self.config.neighbours > 0 and ctx.interests:
            known = np.array(sorted(ctx.interests))
            sims = self.centroids[known] @ self.centroids.T
            sims[:, known] = -np.inf
            units.update(np.argsort(-sims, axis=1)[:, :self.config.neighbours].ravel().tolist())
        return sorted(units)

    def _unit_priors(self, user: str, units: list[int], ctx: UserContext
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Beta(a, b) per candidate unit and its number of shows."""
        c = self.config
        a, b, shows = np.empty(len(units)), np.empty(len(units)), np.empty(len(units))
        for j, u in enumerate(units):
            clicks, n = self.interest_stats.get((user, u), (0.0, 0.0))
            share = ctx.interests.get(u)
            mean = c.novel_prior if share is None else min(max(share, 0.02), 0.98)
            a[j] = clicks + c.prior_strength * mean
            b[j] = n - clicks + c.prior_strength * (1 - mean)
            shows[j] = n
        return a, b, shows

    def _draw(self, user: str, order: np.ndarray, k: int, ctx: UserContext,
              rng: np.random.Generator, units: list[int], total_shows: float, draws: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """``draws`` independent slates at once: (items, explored unit per slot), each
        ``draws × min(k, len(order))``. Slots are filled in order; every draw keeps its own
        set of used items, so the Monte-Carlo propensities come from the very same procedure
        that produced the served slate."""
        c = self.config
        kk = min(k, len(order))
        exploit = np.tile(order[:kk], (draws, 1))
        none = np.full((draws, kk), -1, dtype=np.int64)
        if c.strategy == "greedy" or c.explore == 0 or kk == 0:
            return exploit, none
        pool = order[:max(c.pool, k)]
        if c.strategy == "epsilon":
            flip = rng.random(draws) < c.explore
            perm = np.argsort(rng.random((int(flip.sum()), len(pool))), axis=1)[:, :kk]
            exploit[flip] = pool[perm]
            return exploit, np.where(flip[:, None], -2, -1) * np.ones((1, kk), dtype=np.int64)
        flags = rng.random((draws, kk)) < c.explore
        if c.strategy == "item-ts":
            cand = pool
            ab = np.array([self._item_ab(int(i)) for i in cand])
            theta = rng.beta(ab[:, 0], ab[:, 1], size=(draws, len(cand)))
        else:
            if not units:
                return exploit, none
            uo = self.unit_of[order]
            # the top kk and each unit's first kk: all that kk slots can need
            keep = np.zeros(len(order), dtype=bool)
            keep[:kk] = True
            keep |= first_per_unit(uo, _member(units), kk)
            cand = order[keep]
            unit_mask = uo[keep][None, :] == np.asarray(units)[:, None]
            a, b, shows = self._unit_priors(user, units, ctx)
            # an interest is drawn only for the slots that explore (the others never use it)
            choice = np.zeros((draws, kk), dtype=np.int64)
            n_go = int(flags.sum())
            if c.strategy == "interest-ucb":
                ucb = a / (a + b) + c.ucb_c * np.sqrt(np.log(total_shows + 2)
                                                      / (shows + c.prior_strength))
                noise = rng.random((n_go, len(units))) * 1e-9  # random tie-breaks
                choice[flags] = np.argmax(ucb[None, :] + noise, axis=1)
            else:
                choice[flags] = np.argmax(rng.beta(a, b, size=(n_go, len(units))), axis=1)
        if c.strategy == "item-ts":
            picks, went = fill_slots(kk, flags, theta, NO_UNITS, NO_CHOICE)
            return cand[picks], np.where(went, -2, -1)
        picks, went = fill_slots(kk, flags, NO_THETA, unit_mask, choice)
        return cand[picks], np.where(went, np.asarray(units)[choice], -1)

    def _item_ab(self, item: int) -> tuple[float, float]:
        clicks, shows = self.item_stats.get(item, (0.0, 0.0))
        return clicks + 1.0, shows - clicks + 1.0

    # -- public --------------------------------------------------------------------------------
    def slate(self, user: str, scores: np.ndarray, k: int = 10,
              context: UserContext | None = None, exclude: np.ndarray | None = None,
              request_id: str | None = None) -> Slate:
        """The slate for ``user`` from ``scores`` (one per item row); ``exclude`` masks rows."""
        c = self.config
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        scores = np.asarray(scores, dtype=np.float64)
        ctx = context or UserContext()
        allowed = np.isfinite(scores)
        if exclude is not None:
            allowed &= ~np.asarray(exclude, dtype=bool)
        candidates = np.flatnonzero(allowed)
        request_id = request_id or uuid.uuid4().hex
        if len(candidates) == 0:  # everything filtered out: an empty slate, not an error
            empty = np.zeros(0, dtype=np.int64)
            return Slate(request_id, empty, np.zeros(0), np.zeros(0), empty, c.strategy,
                         c.explore, "exact")
        units = self._candidate_units(ctx) if c.strategy.startswith("interest") else []
        order = self._exploit_order(scores, candidates, ctx, k, units)
        total = sum(self.interest_stats.get((user, u), (0.0, 0.0))[1] for u in units)
        seed = int.from_bytes(hashlib.blake2b(f"{c.seed}:{request_id}".encode(),
                                              digest_size=8).digest(), "little")
        rng = np.random.default_rng(seed)
        monte_carlo = c.strategy not in ("greedy", "epsilon") and c.explore > 0
        # one call draws the served slate (row 0) and, for sampling strategies, the
        # independent slates its Monte-Carlo propensities are counted from (rows 1..)
        many, explored_many = self._draw(user, order, k, ctx, rng, units, total,
                                         1 + c.propensity_draws if monte_carlo else 1)
        items, explored = many[0], explored_many[0]
        n = len(items)
        if c.strategy == "greedy" or c.explore == 0:
            prop, method = np.ones(n), "exact"
        elif c.strategy == "epsilon":
            pool = order[:max(c.pool, k)]
            greedy = order[:n]
            prop = (1 - c.explore) * (items == greedy) + c.explore * np.isin(items, pool) / len(
                pool)
            method = "exact"
        else:
            sims = many[1:]
            counts = (sims[:, :n] == items[None, :]).sum(axis=0)
            prop = np.maximum(counts, 1.0) / c.propensity_draws
            method = f"monte-carlo ({c.propensity_draws} draws)"
        return Slate(request_id, items, scores[items], prop, explored, c.strategy, c.explore,
                     method, order[:len(items)])

    def feedback(self, user: str, slate: Slate, clicked: Sequence[int]) -> None:
        """Update the posteriors: every shown item was seen once; ``clicked`` are positions."""
        hit = set(int(p) for p in clicked)
        for pos, item in enumerate(slate.items.tolist()):
            click = 1.0 if pos in hit else 0.0
            st = self.item_stats.setdefault(int(item), [0.0, 0.0])
            st[0] += click
            st[1] += 1.0
            if self.unit_of is not None and self.unit_of[item] >= 0:
                key = (user, int(self.unit_of[item]))
                s2 = self.interest_stats.setdefault(key, [0.0, 0.0])
                s2[0] += click
                s2[1] += 1.0


def _member(units: Sequence[int]) -> np.ndarray:
    """A mask over unit ids: True for ``units``."""
    member = np.zeros(max(units) + 1, dtype=bool)
    member[list(units)] = True
    return member
