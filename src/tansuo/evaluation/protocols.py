"""Leak-free evaluation protocols over a user's interaction sequence.

An *interaction* is a user's first engagement with an item through an event whose weight is
positive (views, clicks, carts, purchases, reviews, favourites — not searches or dislikes).
Each user's interactions are ordered by ``(timestamp, seq)``: equal timestamps keep the order
in which events were ingested (for MovieLens, the order of its ratings file). Repeated events
on an item the user already engaged with do not create new interactions, so every target is
an item that is new to the user.

Two protocols:

``loo`` (leave-one-out by time)
    The last interaction of each user is the test target, the one before it the validation
    target, the rest is training data. Users with fewer than 3 interactions are left out of
    evaluation (their interactions stay in training). Models are fitted on training data;
    at validation time a user's history is their training interactions, at test time it is
    training + the validation item (as RecBole does), so no model ever sees its own target.

``temporal`` (global time split)
    Cut-off times at the ``1 - test_fraction`` and ``1 - test_fraction - valid_fraction``
    quantiles of interaction time. Training data is everything before the validation cut-off;
    validation targets are each user's new items between the two cut-offs; test targets their
    new items after the test cut-off, with the model refitted on everything before it. Only
    users with history before a period are evaluated in it. Nothing after a cut-off is ever
    used to predict something before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from tansuo.data.dataset import Vocabulary
from tansuo.data.schema import DEFAULT_EVENT_WEIGHTS

__all__ = ["Interactions", "Phase", "EvalSplit", "interactions_from_events", "leave_one_out",
           "temporal_split", "cold_item_split", "make_split"]

Protocol = Literal["loo", "temporal", "cold-items"]


@dataclass(frozen=True)
class Interactions:
    """Distinct (user, item) interactions in time order, as parallel index arrays."""

    users: Vocabulary
    items: Vocabulary
    user: np.ndarray  # int64 user index, grouped by user, time ordered inside
    item: np.ndarray  # int64 item index
    timestamp: np.ndarray  # int64 epoch ms
    weight: np.ndarray  # float32 summed event weight of the pair
    #: The strongest event type of the pair (the one with the largest weight), e.g. purchase.
    event_type: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.users, self.items, self.user[mask], self.item[mask],
                            self.timestamp[mask], self.weight[mask],
                            None if self.event_type is None else self.event_type[mask])

    def offsets(self) -> np.ndarray:
        """CSR offsets of each user's run (users with no rows have empty runs)."""
        counts = np.bincount(self.user, minlength=len(self.users))
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def interactions_from_events(
    events: pd.DataFrame,
    items: Vocabulary | None = None,
    weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
) -> Interactions:
    """Events (ordered by user, time, ingestion — as the store returns them) → interactions.

    ``items`` fixes the item vocabulary (e.g. the whole catalogue); by default it is the set of
    items with events.
    """
    w = events["type"].map({**DEFAULT_EVENT_WEIGHTS, **weights}).fillna(0.0).to_numpy()
    frame = events.loc[(w > 0) & events["item_id"].notna().to_numpy(),
                       ["user_id", "item_id", "timestamp"]].copy()
    frame["w"] = w[(w > 0) & events["item_id"].notna().to_numpy()]
    frame["type"] = events.loc[frame.index, "type"]
    # Stable sort keeps the store's (timestamp, seq) order inside each user.
    frame = frame.iloc[np.argsort(frame["user_id"].to_numpy(dtype=str), kind="stable")]
    totals = frame.groupby(["user_id", "item_id"], sort=False)["w"].sum()
    strongest = frame.loc[frame.groupby(["user_id", "item_id"], sort=False)["w"].idxmax(),
                          ["user_id", "item_id", "type"]].set_index(["user_id", "item_id"])["type"]
    first = frame.drop_duplicates(["user_id", "item_id"], keep="first")
    users = Vocabulary.from_ids(first["user_id"].unique())
    vocab = items if items is not None else Vocabulary.from_ids(first["item_id"].unique())
    u = np.asarray(users.index(first["user_id"].tolist()), dtype=np.int64)
    i = np.asarray(vocab.index(first["item_id"].tolist()), dtype=np.int64)
    keep = i >= 0  # items outside a fixed vocabulary cannot be ranked: dropped
    pairs = list(zip(first["user_id"], first["item_id"], strict=True))
    pair_w = totals.loc[pairs].to_numpy()
    pair_type = strongest.loc[pairs].to_numpy(dtype=object)
    ts = first["timestamp"].to_numpy(dtype=np.int64)
    order = np.lexsort((np.arange(len(u)), ts, u))  # user, then time, then original order
    order = order[keep[order]]
    return Interactions(users, vocab, u[order], i[order], ts[order],
                        pair_w[order].astype(np.float32), pair_type[order])


@dataclass(frozen=True)
class Phase:
    """One evaluation phase: what a model is fitted on, what each query user has seen, and
    the items it must find.

    ``history`` are per-user item lists (time ordered) given to the model at query time and
    excluded from its ranking; ``targets`` the held-out items per evaluated user.
    """

    name: str  # "valid" or "test"
    train: Interactions
    users: np.ndarray  # evaluated user indices
    history: list[np.ndarray]  # per evaluated user, item indices, time ordered
    targets: list[np.ndarray]  # per evaluated user, item indices
    #: per evaluated user: event types and times of the history, and the query time (the
    #: time of the first target: when the user came back for a recommendation)
    history_types: list[np.ndarray] = field(default_factory=list)
    history_times: list[np.ndarray] = field(default_factory=list)
    now: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_users(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class EvalSplit:
    """A protocol applied to one dataset: a validation and a test phase."""

    protocol: str
    interactions: Interactions
    valid: Phase
    test: Phase
    info: dict[str, object] = field(default_factory=dict)

    @property
    def users(self) -> Vocabulary:
        return self.interactions.users

    @property
    def items(self) -> Vocabulary:
        return self.interactions.items


def _runs(inter: Interactions) -> list[np.ndarray]:
    return _runs_of(inter, inter.item)


def _runs_of(inter: Interactions, values: np.ndarray | None) -> list[np.ndarray]:
    """Per user, the slice of an array aligned with the interactions."""
    off = inter.offsets()
    if values is None:
        values = np.full(len(inter), "view", dtype=object)
    return [values[off[u]:off[u + 1]] for u in range(len(inter.users))]


def leave_one_out(inter: Interactions) -> EvalSplit:
    off = inter.offsets()
    lengths = np.diff(off)
    evaluated = np.flatnonzero(lengths >= 3)
    train_mask = np.ones(len(inter), dtype=bool)
    train_mask[off[evaluated + 1] - 1] = False  # test
    train_mask[off[evaluated + 1] - 2] = False  # validation
    train = inter.subset(train_mask)
    train_valid_mask = train_mask.copy()
    train_valid_mask[off[evaluated + 1] - 2] = True
    runs = _runs(inter)
    types, times = _runs_of(inter, inter.event_type), _runs_of(inter, inter.timestamp)
    valid = Phase("valid", train, evaluated,
                  [runs[u][:-2] for u in evaluated], [runs[u][-2:-1] for u in evaluated],
                  [types[u][:-2] for u in evaluated], [times[u][:-2] for u in evaluated],
                  np.array([times[u][-2] for u in evaluated], dtype=np.int64))
    test = Phase("test", train, evaluated,
                 [runs[u][:-1] for u in evaluated], [runs[u][-1:] for u in evaluated],
                 [types[u][:-1] for u in evaluated], [times[u][:-1] for u in evaluated],
                 np.array([times[u][-1] for u in evaluated], dtype=np.int64))
    info = {"evaluated_users": int(len(evaluated)),
            "skipped_users": int(len(inter.users) - len(evaluated)),
            "train_interactions": int(train_mask.sum())}
    return EvalSplit("loo", inter, valid, test, info)


def temporal_split(inter: Interactions, test_fraction: float = 0.1,
                   valid_fraction: float = 0.1) -> EvalSplit:
    if not (0 < test_fraction < 1 and 0 < valid_fraction < 1
            and test_fraction + valid_fraction < 1):
        raise ValueError("test_fraction and valid_fraction must be in (0, 1) and sum below 1; "
                         f"got {test_fraction} and {valid_fraction}")
    t_test = float(np.quantile(inter.timestamp, 1 - test_fraction))
    t_valid = float(np.quantile(inter.timestamp, 1 - test_fraction - valid_fraction))
    before_valid = inter.timestamp < t_valid
    before_test = inter.timestamp < t_test
    runs = _runs(inter)
    off = inter.offsets()

    types, times = _runs_of(inter, inter.event_type), _runs_of(inter, inter.timestamp)

    def phase(name: str, cut_lo: np.ndarray, cut_hi: np.ndarray, fit_mask: np.ndarray,
              now: float) -> Phase:
        users, history, targets, h_types, h_times = [], [], [], [], []
        for u in range(len(inter.users)):
            lo, hi = off[u], off[u + 1]
            seen = runs[u][cut_lo[lo:hi]]
            future = runs[u][cut_hi[lo:hi]]
            if len(seen) and len(future):
                users.append(u)
                history.append(seen)
                targets.append(future)
                h_types.append(types[u][cut_lo[lo:hi]])
                h_times.append(times[u][cut_lo[lo:hi]])
        return Phase(name, inter.subset(fit_mask), np.asarray(users, dtype=np.int64), history,
                     targets, h_types, h_times, np.full(len(users), int(now), dtype=np.int64))

    valid = phase("valid", before_valid, before_test & ~before_valid, before_valid, t_valid)
    # Test: refitted on everything before the test cut-off (still nothing from the future).
    test = phase("test", before_test, ~before_test, before_test, t_test)
    info = {"valid_cutoff_ms": int(t_valid), "test_cutoff_ms": int(t_test),
            "train_interactions": int(before_valid.sum())}
    return EvalSplit("temporal", inter, valid, test, info)


def cold_item_split(inter: Interactions, fraction: float = 0.1, seed: int = 0) -> EvalSplit:
    """Leave-one-out where a random ``fraction`` of items never appears in training.

    Every interaction with a held-out item is removed from training and from query histories;
    a user is evaluated when their last (test) or second-last (validation) interaction is
    with a held-out item, and the target is that interaction. Only models that can place an
    item from its text alone (or from nothing) can score such a target.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    items_seen = np.unique(inter.item)
    held = np.zeros(len(inter.items), dtype=bool)
    held[rng.choice(items_seen, max(1, int(round(fraction * len(items_seen)))),
                    replace=False)] = True
    off = inter.offsets()
    lengths = np.diff(off)
    users = np.flatnonzero(lengths >= 3)
    test_pos, valid_pos = off[users + 1] - 1, off[users + 1] - 2
    train_mask = ~held[inter.item]
    train_mask[test_pos] = False
    train_mask[valid_pos] = False
    train = inter.subset(train_mask)
    runs = _runs(inter)
    types, times = _runs_of(inter, inter.event_type), _runs_of(inter, inter.timestamp)

    def phase(name: str, drop_last: int) -> Phase:
        chosen = [u for u in users if held[runs[u][-drop_last]]]
        hist, h_types, h_times = [], [], []
        for u in chosen:
            keep = ~held[runs[u][:-drop_last]]
            hist.append(runs[u][:-drop_last][keep])
            h_types.append(types[u][:-drop_last][keep])
            h_times.append(times[u][:-drop_last][keep])
        return Phase(name, train, np.asarray(chosen, dtype=np.int64), hist,
                     [runs[u][-drop_last:len(runs[u]) - drop_last + 1] for u in chosen],
                     h_types, h_times,
                     np.array([times[u][-drop_last] for u in chosen], dtype=np.int64))

    info = {"held_out_items": int(held.sum()), "fraction": fraction, "seed": seed,
            "train_interactions": int(train_mask.sum())}
    split = EvalSplit("cold-items", inter, phase("valid", 2), phase("test", 1), info)
    split.info.update(evaluated_users=split.test.n_users)
    return split


def make_split(inter: Interactions, protocol: Protocol = "loo", **kwargs: float) -> EvalSplit:
    if protocol == "loo":
        return leave_one_out(inter)
    if protocol == "temporal":
        return temporal_split(inter, **kwargs)
    if protocol == "cold-items":
        return cold_item_split(inter, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown protocol {protocol!r}; expected loo, temporal or cold-items")
