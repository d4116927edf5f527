"""Online simulation: slate policies serving the synthetic shop's users, clicks from ground truth.

The synthetic shop (:mod:`tansuo.data.synthetic`) knows what every user truly likes and when:
the interests each user holds (with drifting weights and shifts) and a **latent** interest the
user would like but never acts on by themselves. The simulator replays the shop's second half
as an online loop in which a slate policy (:mod:`tansuo.exploration.policy`) chooses what is
shown and the ground truth decides what is clicked.

**Warm start.** Events before ``warm_days`` (default day 60 of 120) fill an
:class:`~tansuo.interests.profile.InterestTracker` (the text interest space, one unit per
level-2 category of the shop; the shift detector off). The shop's malformed rows (bad or future
timestamps, unknown types, missing user, negative dwell) and its bots are dropped first.

**Requests.** ``requests`` of the shop's own *view* events after the cut are drawn uniformly
(seeded, without replacement while there are enough) and each becomes one request of that
user at that time: users are served in proportion to their activity, at the hours and days they
were really active, only after they joined. The request sequence and the click draws are fixed
by ``seed`` alone, so every policy compared meets the same users at the same times with the
same random numbers (common random numbers): differences are the policy's.

**Serving a request** (user *u* at time *t*):

1. *organic traffic*: *u*'s own logged events before *t* are folded into the tracker (the rest
   of the shop still happens; ``organic=False`` turns this off). Nothing after *t* is read;
2. *candidate scores*: cosine of every item vector with the user vector — the normalised sum of
   the tracker's long-term and short-term vectors. Users the tracker does not know yet get the
   items' warm-start popularity (log of 1 + events) instead;
3. *excluded*: items created after *t*, the user's last ``recent_shown`` shown items and the
   items of the tracker's short-term view (recently seen);
4. the policy picks ``k`` = 10 items; its context is the tracker's interests (unit → share)
   and those whose trend is fading or gone;
5. clicks are drawn from the **click model** below; they go back to the policy
   (:meth:`SlatePolicy.feedback`) and to the tracker as ``click`` events, so profiles evolve.

**Click model** (:class:`ClickModel`). At time *t* each true interest span *i* of the user that
is active (start ≤ t < end, shifts included) has the weight
``w_i(t) = base_i · (1 + a_i sin(2π (t − t_0) / P_i + φ_i))`` — the generator's drift rule, with
``a_i ~ U(0.2, 0.6)``, ``P_i ~ U(15, 60)`` days, ``φ_i ~ U(0, 2π)`` drawn per span by the
simulator (the generator does not write its own draws). An item of interest *c* at position
*p* (0-based) is clicked with probability ``1 − (1 − ε)(1 − e_p · r_c(t))``, where
``e_p = 1 / log2(p + 2)^position_decay`` is the position bias (examination), ``ε`` = ``noise``
a base rate for any item, and ``r_c(t) = relevance · w_c(t) / W(t)`` with ``W(t)`` the sum of
the user's active shown-interest weights — the user's attention is split over their interests
in proportion to their weights. The latent interest is genuinely liked:
``r = relevance · latent_factor · w_latent(t) / W(t)`` (its base weight is in the truth file,
0.15–0.5 against shown weights summing to about 1). Items outside the user's interests get only
``ε``. The item's interest is its true category (first two levels), not the tracker's unit.

**Measured per request:** clicks, impressions, and **discovery** — the first click of a user on
an item of their latent interest. Discovery share = users whose latent interest got a click /
users served at least once who hold a latent interest. Short-run CTR = clicks per impression
over the first ``short_run`` requests (default 2,000); long-run CTR = over the last half of
the requests. Propensities are not needed, so the policy runs with ``propensity_draws = 1``
(its slates are drawn from a separate request-seeded stream: what is shown does not change),
and each user gets their own policy object sharing the item posteriors
(:class:`PolicyPerUser`: the same slates as one shared policy, at a cost per request that does
not grow with the number of users).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from tansuo.data.schema import EventType, split_category
from tansuo.exploration.policy import PolicyConfig, Slate, SlatePolicy, UserContext

if TYPE_CHECKING:
    from tansuo.interests.profile import InterestTracker

__all__ = [
    "ClickModel",
    "SimConfig",
    "Shop",
    "load_shop",
    "prepare_shop",
    "warm_tracker",
    "Simulator",
    "PolicyPerUser",
    "RunResult",
    "SimulationResult",
    "simulate",
    "policy_grid",
    "plot_simulation",
]

_MS_DAY = 86_400_000
_EVENT_COLUMNS = ("user_id", "item_id", "type", "timestamp", "dwell_seconds", "amount", "query")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClickModel:
    """How the ground truth turns a shown item into a click (module docstring)."""

    relevance: float = 0.6
    """Click probability of an examined item when the user's whole attention is on its
    interest; shared interests get their weight's share of it."""
    latent_factor: float = 1.0
    """Multiplies the latent interest's relevance (1: liked as much as its truth weight says)."""
    noise: float = 0.01
    """Base click rate of any shown item, in the user's interests or not."""
    position_decay: float = 1.0
    """Examination ``e_p = 1 / log2(p + 2) ** position_decay`` (0: no position bias)."""
    drift_amplitude: tuple[float, float] = (0.2, 0.6)
    """Range of the drift amplitude ``a`` of an interest's weight (the generator's)."""
    drift_period_days: tuple[float, float] = (15.0, 60.0)
    """Range of the drift period ``P`` in days (the generator's)."""

    def __post_init__(self) -> None:
        lo_a, hi_a = self.drift_amplitude
        lo_p, hi_p = self.drift_period_days
        checks = [(0.0 < self.relevance <= 1.0, f"relevance must be in (0, 1], got "
                   f"{self.relevance}"),
                  (self.latent_factor >= 0, f"latent_factor must be ≥ 0, got "
                   f"{self.latent_factor}"),
                  (0.0 <= self.noise < 1.0, f"noise must be in [0, 1), got {self.noise}"),
                  (self.position_decay >= 0, f"position_decay must be ≥ 0, got "
                   f"{self.position_decay}"),
                  (0.0 <= lo_a <= hi_a < 1.0, "drift_amplitude must be (lo, hi) with "
                   "0 ≤ lo ≤ hi < 1"),
                  (0.0 < lo_p <= hi_p, "drift_period_days must be (lo, hi) with 0 < lo ≤ hi")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def examination(self, k: int) -> np.ndarray:
        """Probability that each of ``k`` positions is looked at."""
        return 1.0 / np.log2(np.arange(k) + 2.0) ** self.position_decay


@dataclass(frozen=True)
class SimConfig:
    """The online loop: how many requests, how they are served, what is measured."""

    requests: int = 20_000
    """Requests served (each policy meets the same ones)."""
    k: int = 10
    """Slate size."""
    warm_days: float = 60.0
    """Events before this day of the shop fill the tracker; requests come after it."""
    short_run: int = 2_000
    """Short-run CTR: over the first this many requests (all of them when fewer)."""
    organic: bool = True
    """Fold the user's own logged events before each request into the tracker."""
    recent_shown: int = 50
    """A user's last this many shown items are not shown again."""
    seed: int = 0
    """Seeds the request sequence, the click draws and the drift parameters."""
    clicks: ClickModel = field(default_factory=ClickModel)

    def __post_init__(self) -> None:
        checks = [(self.requests >= 1, f"requests must be ≥ 1, got {self.requests}"),
                  (self.k >= 1, f"k must be ≥ 1, got {self.k}"),
                  (self.warm_days > 0, f"warm_days must be > 0, got {self.warm_days}"),
                  (self.short_run >= 1, f"short_run must be ≥ 1, got {self.short_run}"),
                  (self.recent_shown >= 0, f"recent_shown must be ≥ 0, got "
                   f"{self.recent_shown}"),
                  (self.seed >= 0, f"seed must be ≥ 0, got {self.seed}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# --------------------------------------------------------------------------------------------
# The shop
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    """A synthetic shop read back from its files, malformed rows and bots dropped."""

    directory: Path
    items: pd.DataFrame
    """Catalogue rows plus ``created_ms`` and ``interest`` (first two category levels)."""
    events: pd.DataFrame
    """Well-formed human events, time-ordered; ``timestamp`` in epoch ms."""
    truth: pd.DataFrame
    """``truth_interests.csv`` plus ``start_ms`` and ``end_ms`` (open spans end at the end)."""
    start_ms: int
    end_ms: int
    dropped: dict[str, int]
    """Rows dropped, per rule."""


def _to_ms(values: pd.Series) -> pd.Series:
    """ISO 8601 strings → epoch ms as float (NaN where unparseable)."""
    parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    out = pd.Series(np.nan, index=values.index)
    ok = parsed.notna()
    out[ok] = (parsed[ok] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    return out


def load_shop(directory: str | Path) -> Shop:
    """Read a shop written by :func:`tansuo.data.synthetic.generate` (module docstring)."""
    d = Path(directory)
    try:
        meta = json.loads((d / "meta.json").read_text())
        items = pd.read_csv(d / "items.csv", dtype={"item_id": str})
        raw = pd.read_csv(d / "events.csv", usecols=list(_EVENT_COLUMNS),
                          dtype={"user_id": str, "item_id": str, "type": str, "query": str,
                                 "timestamp": str})
        truth = pd.read_csv(d / "truth_interests.csv", dtype={"user_id": str, "start": str,
                                                              "end": str})
    except FileNotFoundError as exc:
        raise ValueError(f"{d} is not a synthetic shop ({exc.filename} missing): write one "
                         "with tansuo.data.synthetic.generate") from exc
    start_ms = int(_to_ms(pd.Series([meta["period"]["start"]])).iloc[0])
    end_ms = int(_to_ms(pd.Series([meta["period"]["end"]])).iloc[0])
    ts = _to_ms(raw["timestamp"])
    dwell = pd.to_numeric(raw["dwell_seconds"], errors="coerce")
    rules = {
        "bad_timestamp": ts.isna().to_numpy(),
        "future_timestamp": ((ts >= end_ms) | (ts < start_ms)).to_numpy(),
        "unknown_type": ~raw["type"].isin([t.value for t in EventType]).to_numpy(),
        "missing_user": (raw["user_id"].isna() | (raw["user_id"].str.strip() == "")).to_numpy(),
        "negative_dwell": (dwell < 0).to_numpy(),
    }
    bad = np.zeros(len(raw), dtype=bool)
    dropped: dict[str, int] = {}
    for name, mask in rules.items():
        dropped[name] = int((mask & ~bad).sum())
        bad |= mask
    bots = raw["user_id"].isin(meta.get("counts", {}).get("bots", [])).to_numpy() & ~bad
    dropped["bot_events"] = int(bots.sum())
    keep = ~(bad | bots)
    events = raw.loc[keep].copy()
    events["timestamp"] = ts[keep].astype(np.int64)
    events["dwell_seconds"] = dwell[keep]
    events = events.iloc[np.argsort(events["timestamp"].to_numpy(), kind="stable")]
    events = events.reset_index(drop=True)
    items = items.copy()
    created = _to_ms(items["created_at"]) if "created_at" in items.columns else None
    items["created_ms"] = (created.fillna(start_ms).astype(np.int64) if created is not None
                           else start_ms)
    items["interest"] = [" > ".join(split_category(c)[:2]) if isinstance(c, str) else ""
                         for c in items["category"]]
    truth = truth.copy()
    truth["start_ms"] = _to_ms(truth["start"]).astype(np.int64)
    truth["end_ms"] = _to_ms(truth["end"]).fillna(end_ms).astype(np.int64)
    return Shop(d, items, events, truth, start_ms, end_ms, dropped)


def prepare_shop(config: Any = None, home: str | Path = "tansuo-data",
                 progress: bool = False) -> Shop:
    """The shop of ``config`` (a :class:`~tansuo.data.synthetic.ShopConfig`, default the
    default shop) under ``home/simulate/shop-<config hash>``, generated when not there yet."""
    from tansuo.data.synthetic import GENERATOR_VERSION, ShopConfig, generate

    cfg = config or ShopConfig()
    doc = json.dumps(asdict(cfg), sort_keys=True)
    key = hashlib.sha256(f"{GENERATOR_VERSION}:{doc}".encode()).hexdigest()[:12]
    directory = Path(home) / "simulate" / f"shop-{key}"
    meta = directory / "meta.json"
    fresh = False
    if meta.exists():
        try:
            stored = json.loads(meta.read_text())
            fresh = (stored.get("version") == GENERATOR_VERSION
                     and stored.get("config") == json.loads(doc))
        except (OSError, ValueError):
            fresh = False
    if not fresh:
        generate(cfg, directory, progress=progress)
    return load_shop(directory)


def warm_tracker(shop: Shop, warm_days: float = 60.0, home: str | Path = "tansuo-data",
                 text_model: str | None = None, *, item_vectors: np.ndarray | None = None,
                 progress: bool = False) -> InterestTracker:
    """An InterestTracker over the shop's catalogue filled with its events before
    ``warm_days`` (the shift detector off: the loop does not use it).

    The interest space comes from the packaged text encoder (cached under ``home/cache``);
    ``item_vectors`` (one row per catalogue row) replace the text vectors, for tests and for
    spaces of your own."""
    from tansuo.interests.build import build_tracker
    from tansuo.interests.profile import InterestTracker, ProfileConfig
    from tansuo.interests.space import build_space

    cut = shop.start_ms + int(warm_days * _MS_DAY)
    if cut >= shop.end_ms:
        raise ValueError(f"warm_days {warm_days} leaves no time to simulate: the shop covers "
                         f"{(shop.end_ms - shop.start_ms) / _MS_DAY:g} days")
    warm = shop.events.loc[shop.events["timestamp"] < cut, list(_EVENT_COLUMNS)]
    profile = ProfileConfig(shifts=False)
    if item_vectors is None:
        return build_tracker(warm, shop.items, Path(home), text_model, profile_config=profile,
                             progress=progress)
    vectors = np.asarray(item_vectors, dtype=np.float32)
    if vectors.shape[0] != len(shop.items):
        raise ValueError(f"item_vectors has {vectors.shape[0]} rows for {len(shop.items)} items")
    space = build_space(shop.items["item_id"].astype(str).tolist(), vectors,
                        shop.items["category"].tolist())
    tracker = InterestTracker(space, profile)
    tracker.update_frame(warm, progress=progress)
    return tracker


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def _label(policy: PolicyConfig) -> str:
    if policy.strategy == "greedy" or policy.explore == 0:
        return "explore 0 (greedy)"
    return f"{policy.strategy} explore={policy.explore:g}"


@dataclass
class RunResult:
    """One policy's run: per-request outcomes and the summary figures."""

    label: str
    policy: PolicyConfig
    clicks: np.ndarray
    """Clicks per request."""
    shown: np.ndarray
    """Items shown per request."""
    latent_clicks: np.ndarray
    """Clicks per request on items of the user's latent interest."""
    explored: np.ndarray
    """Exploring slots per request."""
    explored_new: np.ndarray
    """Exploring slots per request that went to an interest unit the user's profile did not
    hold (interest strategies only)."""
    discovered: dict[str, int]
    """User → index of the request where their latent interest got its first click."""
    latent_users: int
    """Users served at least once who hold a latent interest (the discovery denominator)."""
    short_run: int
    seconds: float
    stream: str = ""
    """Digest of the (user, time) request sequence served: equal across compared runs."""

    @property
    def requests(self) -> int:
        return len(self.clicks)

    def ctr_curve(self) -> np.ndarray:
        """Cumulative click-through (clicks per impression) after each request."""
        return np.cumsum(self.clicks) / np.maximum(np.cumsum(self.shown), 1)

    def windowed_ctr(self, window: int) -> np.ndarray:
        """Click-through over the last ``window`` requests (fewer at the start)."""
        c, s = np.cumsum(self.clicks), np.cumsum(self.shown)
        lag = np.arange(len(c)) - window
        c0 = np.where(lag >= 0, c[np.maximum(lag, 0)], 0)
        s0 = np.where(lag >= 0, s[np.maximum(lag, 0)], 0)
        return (c - c0) / np.maximum(s - s0, 1)

    def discovery_curve(self) -> np.ndarray:
        """Share of latent-interest users discovered after each request."""
        hits = np.zeros(self.requests)
        np.add.at(hits, np.fromiter(self.discovered.values(), dtype=np.int64,
                                    count=len(self.discovered)), 1)
        return np.cumsum(hits) / max(self.latent_users, 1)

    def _ctr(self, sl: slice) -> float:
        return float(self.clicks[sl].sum() / max(self.shown[sl].sum(), 1))

    def summary(self) -> dict[str, Any]:
        n = self.requests
        short = min(self.short_run, n)
        return {"label": self.label, "strategy": self.policy.strategy,
                "explore": self.policy.explore, "requests": n,
                "ctr_short": self._ctr(slice(0, short)), "ctr_long": self._ctr(slice(n // 2, n)),
                "ctr": self._ctr(slice(0, n)),
                "discovery": len(self.discovered) / max(self.latent_users, 1),
                "discovered_users": len(self.discovered), "latent_users": self.latent_users,
                "latent_clicks": int(self.latent_clicks.sum()),
                "explored_share": float(self.explored.sum() / max(self.shown.sum(), 1)),
                "explored_new_share": float(self.explored_new.sum()
                                            / max(self.explored.sum(), 1))
                if self.policy.strategy.startswith("interest") else None,
                "seconds": round(self.seconds, 2)}


def _rel_ci(diff: np.ndarray, base: float) -> tuple[float, float, float]:
    """Mean of ``diff`` relative to ``base``, with a normal 95% interval."""
    if len(diff) == 0 or base <= 0:
        return 0.0, 0.0, 0.0
    m = float(diff.mean())
    half = 1.96 * float(diff.std(ddof=1)) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return m / base, (m - half) / base, (m + half) / base


@dataclass
class SimulationResult:
    """Several policies on the same request sequence; the first explore-0 run is the baseline."""

    config: SimConfig
    shop: dict[str, Any]
    runs: list[RunResult]
    setup_seconds: float = 0.0

    @property
    def baseline(self) -> RunResult | None:
        return next((r for r in self.runs
                     if r.policy.strategy == "greedy" or r.policy.explore == 0), None)

    def compare(self, run: RunResult) -> dict[str, Any] | None:
        """``run`` against the baseline, paired over the same requests and users.

        ``short_cost``: relative loss of short-run CTR (positive = fewer clicks);
        ``long_lift``: relative gain of long-run CTR; ``discovery_gain``: difference of
        discovery shares (absolute). Each with a normal 95% interval treating requests (users
        for discovery) as independent — an approximation, the policy's state links them."""
        base = self.baseline
        if base is None or run is base:
            return None
        n = min(run.requests, base.requests)
        short = min(self.config.short_run, n)
        s_rel, s_lo, s_hi = _rel_ci((run.clicks[:short] - base.clicks[:short]).astype(float),
                                    float(base.clicks[:short].mean()))
        half = slice(n // 2, n)
        l_rel, l_lo, l_hi = _rel_ci((run.clicks[half] - base.clicks[half]).astype(float),
                                    float(base.clicks[half].mean()))
        users = sorted(set(run.discovered) | set(base.discovered))
        d = np.array([(u in run.discovered) - (u in base.discovered) for u in users], float)
        d = np.concatenate([d, np.zeros(max(run.latent_users - len(users), 0))])
        g, g_lo, g_hi = _rel_ci(d, 1.0)
        return {"short_cost": -s_rel, "short_cost_ci": [-s_hi, -s_lo],
                "long_lift": l_rel, "long_lift_ci": [l_lo, l_hi],
                "discovery_gain": g, "discovery_gain_ci": [g_lo, g_hi]}

    def claim(self, run: RunResult, max_short_cost: float = 0.10) -> dict[str, Any] | None:
        """Does ``run`` raise long-run CTR or discovery (95% interval above 0) while costing at
        most ``max_short_cost`` of the baseline's short-run CTR (point estimate)?"""
        cmp = self.compare(run)
        if cmp is None:
            return None
        raises_long = cmp["long_lift_ci"][0] > 0
        raises_disc = cmp["discovery_gain_ci"][0] > 0
        cheap = cmp["short_cost"] <= max_short_cost
        return {"run": run.label, "max_short_cost": max_short_cost, "short_cost_ok": cheap,
                "raises_long_run_ctr": raises_long, "raises_discovery": raises_disc,
                "holds": bool(cheap and (raises_long or raises_disc))}

    def to_dict(self, curve_step: int = 0) -> dict[str, Any]:
        """Summary per run and against the baseline; ``curve_step`` > 0 adds the curves
        (cumulative CTR, discovery share) every ``curve_step`` requests."""
        runs = []
        for r in self.runs:
            doc = r.summary()
            doc["vs_baseline"] = self.compare(r)
            if curve_step > 0:
                at = np.unique(np.r_[np.arange(curve_step - 1, r.requests, curve_step),
                                     r.requests - 1])
                doc["curves"] = {"request": (at + 1).tolist(),
                                 "ctr": np.round(r.ctr_curve()[at], 5).tolist(),
                                 "discovery": np.round(r.discovery_curve()[at], 5).tolist()}
            runs.append(doc)
        cfg = asdict(self.config)
        return {"config": cfg, "shop": self.shop, "baseline": getattr(self.baseline, "label",
                                                                      None),
                "short_run_requests": min(self.config.short_run,
                                          self.runs[0].requests if self.runs else 0),
                "setup_seconds": round(self.setup_seconds, 2), "runs": runs}


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class PolicyPerUser:
    """One :class:`SlatePolicy` per user, all sharing the item posteriors: the same slates as
    a single policy serving everyone, at a cost that does not grow with the number of users.

    A single policy's :meth:`SlatePolicy.slate` sums the user's shows over the statistics of
    *all* (user, interest) pairs, so a request costs O(every user's statistics); here each
    user's policy holds only that user's pairs (the only ones it reads), and ``item_stats`` is
    one dict shared by all (item-level posteriors are shared across users)."""

    def __init__(self, config: PolicyConfig, unit_of: np.ndarray | None = None,
                 centroids: np.ndarray | None = None, item_vectors: np.ndarray | None = None
                 ) -> None:
        self._args = (config, unit_of, centroids, item_vectors)
        self.item_stats: dict[int, list[float]] = {}
        self.policies: dict[str, SlatePolicy] = {}
        SlatePolicy(*self._args)  # validates the configuration now, not at the first user

    def _of(self, user: str) -> SlatePolicy:
        pol = self.policies.get(user)
        if pol is None:
            pol = self.policies[user] = SlatePolicy(*self._args)
            pol.item_stats = self.item_stats
        return pol

    def slate(self, user: str, scores: np.ndarray, k: int = 10,
              context: UserContext | None = None, exclude: np.ndarray | None = None,
              request_id: str | None = None) -> Slate:
        return self._of(user).slate(user, scores, k, context, exclude, request_id)

    def feedback(self, user: str, slate: Slate, clicked: Sequence[int]) -> None:
        self._of(user).feedback(user, slate, clicked)


@dataclass
class _Truth:
    interest: np.ndarray  # interest code per span
    start: np.ndarray
    end: np.ndarray
    base: np.ndarray
    latent: np.ndarray
    amp: np.ndarray
    period: np.ndarray
    phase: np.ndarray


class Simulator:
    """The online loop of the module docstring over one shop and one warm tracker.

    ``tracker`` holds the shop's events before ``config.warm_days`` (:func:`warm_tracker`);
    every run works on its own copy, so runs do not see each other."""

    def __init__(self, shop: Shop, tracker: InterestTracker, config: SimConfig | None = None
                 ) -> None:
        self.shop = shop
        self.tracker = tracker
        self.config = config or SimConfig()
        c = self.config
        self.cut_ms = shop.start_ms + int(c.warm_days * _MS_DAY)
        if self.cut_ms >= shop.end_ms:
            raise ValueError(f"warm_days {c.warm_days} leaves no time to simulate: the shop "
                             f"covers {(shop.end_ms - shop.start_ms) / _MS_DAY:g} days")
        space = tracker.space
        self.space = space
        n = len(space.item_ids)
        rows = space.rows(shop.items["item_id"].astype(str).tolist())
        codes: dict[str, int] = {}
        self.interest_of = np.full(n, -1, dtype=np.int64)
        self.created = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        for r, name, created in zip(rows, shop.items["interest"], shop.items["created_ms"],
                                    strict=True):
            if r >= 0:
                self.interest_of[r] = codes.setdefault(str(name), len(codes)) if name else -1
                self.created[r] = int(created)
        self.interest_codes = codes
        ev = shop.events
        warm = ev["timestamp"].to_numpy() < self.cut_ms
        counts = np.zeros(n)
        wrows = space.rows(ev.loc[warm, "item_id"].tolist())
        np.add.at(counts, wrows[wrows >= 0], 1)
        pop = np.log1p(counts)
        self.popularity = pop / (pop.max() or 1.0)
        self.vectors = space.vectors.astype(np.float32)
        self._requests(ev, warm)
        self._truth(shop.truth, codes)
        self._organic(ev, warm)

    # -- fixed for every policy (common random numbers) ------------------------------------
    def _requests(self, ev: pd.DataFrame, warm: np.ndarray) -> None:
        c = self.config
        pool = np.flatnonzero(~warm & (ev["type"].to_numpy() == "view"))
        if len(pool) == 0:
            raise ValueError("the shop has no views after the warm-start cut: nothing to serve "
                             "(lower warm_days or use a larger shop)")
        rng = np.random.default_rng([c.seed, 1])
        pick = np.sort(rng.choice(pool, c.requests, replace=len(pool) < c.requests))
        self.req_user = ev["user_id"].to_numpy(dtype=object)[pick]
        self.req_time = ev["timestamp"].to_numpy(dtype=np.int64)[pick]
        self.uniforms = np.random.default_rng([c.seed, 2]).random((c.requests, c.k))
        h = hashlib.sha256("\n".join(self.req_user.tolist()).encode())
        h.update(self.req_time.tobytes())
        self.stream = h.hexdigest()[:16]

    def _truth(self, truth: pd.DataFrame, codes: dict[str, int]) -> None:
        cm = self.config.clicks
        rng = np.random.default_rng([self.config.seed, 3])
        m = len(truth)
        amp = rng.uniform(*cm.drift_amplitude, m)
        period = rng.uniform(*cm.drift_period_days, m) * _MS_DAY
        phase = rng.uniform(0.0, 2 * math.pi, m)
        code = np.array([codes.get(str(x), -1) for x in truth["category"]], dtype=np.int64)
        self.truth: dict[str, _Truth] = {}
        users = truth["user_id"].to_numpy(dtype=object)
        order = np.argsort(users, kind="stable")
        bounds = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1], True])
        cols = (code, truth["start_ms"].to_numpy(np.int64), truth["end_ms"].to_numpy(np.int64),
                truth["weight"].to_numpy(float), truth["latent"].to_numpy(np.int64) == 1,
                amp, period, phase)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            idx = order[a:b]
            self.truth[str(users[idx[0]])] = _Truth(*(col[idx] for col in cols))
        served = set(self.req_user.tolist())
        self.latent_users = sum(1 for u in served
                                if u in self.truth and self.truth[u].latent.any())

    def _organic(self, ev: pd.DataFrame, warm: np.ndarray) -> None:
        later = ev.loc[~warm]
        self.organic: dict[str, list[tuple[Any, ...]]] = {}
        if not self.config.organic:
            return
        for rec in zip(later["user_id"], later["timestamp"], later["item_id"], later["type"],
                       later["dwell_seconds"], later["amount"], later["query"], strict=True):
            self.organic.setdefault(rec[0], []).append(rec[1:])

    # -- the click model -------------------------------------------------------------------
    def relevance(self, user: str, t: int) -> dict[int, tuple[float, bool]]:
        """Interest code → (r_c(t), latent?) for ``user`` at time ``t`` (click model)."""
        tr = self.truth.get(user)
        if tr is None:
            return {}
        cm = self.config.clicks
        active = (tr.start <= t) & (t < tr.end)
        w = tr.base * (1 + tr.amp * np.sin(2 * math.pi * (t - self.shop.start_ms) / tr.period
                                           + tr.phase))
        total = float(w[active & ~tr.latent].sum())
        if total <= 0:
            return {}
        out = {}
        for j in np.flatnonzero(active):
            r = cm.relevance * float(w[j]) / total
            if tr.latent[j]:
                r *= cm.latent_factor
            out[int(tr.interest[j])] = (min(r, 1.0), bool(tr.latent[j]))
        return out

    def click_probabilities(self, user: str, t: int, items: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(click probability, latent?) of each item at its position in a slate."""
        cm = self.config.clicks
        rel = self.relevance(user, t)
        exam = cm.examination(len(items))
        got = [rel.get(int(self.interest_of[i]), (0.0, False)) for i in items]
        r = np.array([g[0] for g in got])
        latent = np.array([g[1] for g in got], dtype=bool)
        return 1 - (1 - cm.noise) * (1 - exam * r), latent

    # -- the loop --------------------------------------------------------------------------
    def _scores(self, tracker: InterestTracker, user: str) -> tuple[np.ndarray, np.ndarray]:
        """(scores, recently seen rows): cosine of every item with the normalised sum of the
        user's long-term and short-term vectors; warm-start popularity when the tracker has
        neither."""
        state = tracker.users.get(user)
        seen = np.array([] if state is None else [row for _, row, _, _ in state.recent
                                                  if row >= 0], dtype=np.int64)
        vecs = [v for v in tracker.user_vectors(user) if v is not None and np.any(v)]
        if not vecs:
            return self.popularity, seen
        return self.vectors @ _unit(np.sum(vecs, axis=0)).astype(np.float32), seen

    def run(self, policy: PolicyConfig | None = None, label: str | None = None,
            progress: bool = False) -> RunResult:
        """Serve every request with ``policy`` (default :class:`PolicyConfig`)."""
        c = self.config
        policy = policy or PolicyConfig()
        started = time.perf_counter()
        memo = {id(self.space): self.space}
        if getattr(self.tracker, "vocabulary", None) is not None:
            memo[id(self.tracker.vocabulary)] = self.tracker.vocabulary
        tracker = copy.deepcopy(self.tracker, memo)  # the space and tags are shared, read-only
        pol = PolicyPerUser(replace(policy, propensity_draws=1), self.space.unit_of,
                            self.space.centroids, self.vectors)
        n = c.requests
        clicks = np.zeros(n, dtype=np.int16)
        shown = np.zeros(n, dtype=np.int16)
        latent_clicks = np.zeros(n, dtype=np.int16)
        explored = np.zeros(n, dtype=np.int16)
        explored_new = np.zeros(n, dtype=np.int16)
        discovered: dict[str, int] = {}
        with threadpool_limits(1):  # one matrix-vector product per request: threads only cost
            self._loop(tracker, pol, policy, progress, clicks, shown, latent_clicks, explored,
                       explored_new, discovered)
        return RunResult(label or _label(policy), policy, clicks, shown, latent_clicks, explored,
                         explored_new, discovered, self.latent_users, c.short_run,
                         time.perf_counter() - started, self.stream)

    def _loop(self, tracker: Any, pol: PolicyPerUser, policy: PolicyConfig, progress: bool,
              clicks: np.ndarray, shown: np.ndarray, latent_clicks: np.ndarray,
              explored: np.ndarray, explored_new: np.ndarray, discovered: dict[str, int]
              ) -> None:
        c = self.config
        recent: dict[str, deque[int]] = {}
        pending = dict.fromkeys(self.organic, 0)
        item_ids = self.space.item_ids
        n_items = len(item_ids)
        for r in tqdm(range(c.requests), desc=_label(policy), unit="request",
                      disable=not progress, leave=False):
            user, t = str(self.req_user[r]), int(self.req_time[r])
            todo = self.organic.get(user)
            if todo is not None:
                i = pending[user]
                while i < len(todo) and todo[i][0] < t:
                    ts, item, typ, dwell, amount, query = todo[i]
                    tracker.update(user, int(ts), item if isinstance(item, str) else None,
                                   typ, _num(dwell), _num(amount),
                                   query if isinstance(query, str) else None)
                    i += 1
                pending[user] = i
            exclude = self.created > t
            scores, seen = self._scores(tracker, user)
            exclude[seen] = True
            interests = tracker.interests(user, text_tags=False)
            mine = recent.get(user)
            if mine:
                exclude[list(mine)] = True
            if exclude.all():
                continue
            ctx = UserContext({i.unit: i.weight for i in interests},
                              [i.unit for i in interests if i.trend in ("fading", "gone")])
            slate = pol.slate(user, scores, c.k, ctx, exclude, request_id=f"{c.seed}:{r}")
            items = slate.items
            p, latent = self.click_probabilities(user, t, items)
            hit = self.uniforms[r, :len(items)] < p
            positions = np.flatnonzero(hit).tolist()
            pol.feedback(user, slate, positions)
            for pos in positions:
                tracker.update(user, t, item_ids[int(items[pos])], "click")
            if c.recent_shown:
                recent.setdefault(user, deque(maxlen=c.recent_shown)).extend(
                    int(i) for i in items if 0 <= i < n_items)
            clicks[r], shown[r] = len(positions), len(items)
            latent_clicks[r] = int((hit & latent).sum())
            explored[r] = int((slate.explored != -1).sum())
            explored_new[r] = sum(1 for u in slate.explored.tolist()
                                  if u >= 0 and u not in ctx.interests)
            if latent_clicks[r] and user not in discovered:
                discovered[user] = r

    def compare(self, policies: Sequence[PolicyConfig], progress: bool = False,
                labels: Sequence[str] | None = None) -> SimulationResult:
        """Run every policy on the same requests (see :class:`SimulationResult`)."""
        runs = [self.run(p, None if labels is None else labels[j], progress)
                for j, p in enumerate(policies)]
        return SimulationResult(self.config, self.describe(), runs)

    def describe(self) -> dict[str, Any]:
        ev = self.shop.events
        return {"directory": str(self.shop.directory), "items": len(self.shop.items),
                "events": len(ev), "warm_events": int((ev["timestamp"] < self.cut_ms).sum()),
                "users_served": len(set(self.req_user.tolist())),
                "latent_users": self.latent_users, "interest_units": self.space.n_units,
                "dropped": self.shop.dropped}


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _num(x: object) -> float | None:
    if x is None or x is pd.NA:
        return None
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


# --------------------------------------------------------------------------------------------
# One call
# --------------------------------------------------------------------------------------------


def policy_grid(strategies: Sequence[str], explore: Sequence[float],
                base: PolicyConfig | None = None) -> list[PolicyConfig]:
    """Explore 0 (the baseline, once: every strategy is the exploitation slate there) and each
    strategy at each explore value above 0."""
    base = base or PolicyConfig()
    out = [replace(base, strategy="greedy", explore=0.0)]
    for s in strategies:
        for e in explore:
            if e > 0 and s != "greedy":
                out.append(replace(base, strategy=s, explore=float(e)))
    return out


def simulate(policies: Sequence[PolicyConfig], *, home: str | Path = "tansuo-data",
             shop: Any = None, config: SimConfig | None = None, text_model: str | None = None,
             progress: bool = False) -> SimulationResult:
    """Generate (or reuse) the shop of ``shop`` (a ShopConfig), warm a tracker, run each
    policy on the same requests."""
    config = config or SimConfig()
    started = time.perf_counter()
    s = prepare_shop(shop, home, progress)
    tracker = warm_tracker(s, config.warm_days, home, text_model, progress=progress)
    sim = Simulator(s, tracker, config)
    setup = time.perf_counter() - started
    result = sim.compare(policies, progress)
    result.setup_seconds = setup
    return result


def plot_simulation(result: SimulationResult, path: str | Path, window: int | None = None
                    ) -> Path:
    """Cumulative CTR, CTR over a moving window, and discovery share against requests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = result.runs[0].requests if result.runs else 0
    window = window or max(n // 10, 1)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    skip = max(n // 100, 1)  # the first requests' cumulative CTR is noise
    for r in result.runs:
        x = np.arange(1, r.requests + 1)
        style = {"lw": 2.2, "color": "black"} if r is result.baseline else {"lw": 1.4}
        axes[0].plot(x[skip - 1:], r.ctr_curve()[skip - 1:], label=r.label, **style)
        axes[1].plot(x[window - 1:], r.windowed_ctr(window)[window - 1:], **style)
        axes[2].plot(x, r.discovery_curve(), **style)
    short = min(result.config.short_run, n)
    for ax in axes[:2]:
        ax.axvline(short, color="grey", ls=":", lw=1)
    axes[0].set_title(f"cumulative CTR (clicks / impression), from request {skip:,}")
    axes[1].set_title(f"CTR over the previous {window:,} requests")
    axes[2].set_title("discovery: share of users whose latent interest got a click")
    for ax in axes:
        ax.set_xlabel("requests")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    organic = "" if result.config.organic else ", no organic traffic"
    fig.suptitle(f"online simulation on the synthetic shop: {n:,} requests, k = "
                 f"{result.config.k}, seed {result.config.seed}{organic} (dotted: end of the "
                 "short run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
