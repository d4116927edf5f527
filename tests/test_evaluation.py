"""Protocols, metrics and the runner: hand-computed cases, brute-force references, oracles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tansuo.evaluation import metrics as M
from tansuo.evaluation.protocols import interactions_from_events, leave_one_out, temporal_split
from tansuo.evaluation.runner import EvalConfig, evaluate, run_phase
from tansuo.models.base import ModelConfig, Recommender, TrainData

# -- metrics: hand-computed ------------------------------------------------------------------


def test_accuracy_hand_computed():
    ranked = np.array([[7, 3, 5, 1], [2, 4, 6, 8], [9, 8, 7, 6]])
    targets = [np.array([5]), np.array([1, 8]), np.array([0])]
    m = M.accuracy(ranked, targets, 4)
    assert m["hr@4"].tolist() == [1.0, 1.0, 0.0]
    assert m["mrr@4"].tolist() == [1 / 3, 1 / 4, 0.0]
    assert m["recall@4"].tolist() == [1.0, 0.5, 0.0]
    # user 1: target 8 at rank 4 → (1/log2 5) / (1/log2 2 + 1/log2 3)
    expected = (1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m["ndcg@4"][0] == pytest.approx(1 / math.log2(4))
    assert m["ndcg@4"][1] == pytest.approx(expected)
    m2 = M.accuracy(ranked, targets, 2)
    assert m2["hr@2"].tolist() == [0.0, 0.0, 0.0]


def test_top_k_excludes_and_breaks_ties_by_index():
    scores = np.array([[0.5, 0.9, 0.9, np.nan, 0.1]])
    assert M.top_k(scores, 3).tolist() == [[1, 2, 0]]
    assert M.top_k(scores, 3, [np.array([1])]).tolist() == [[2, 0, 4]]


def test_beyond_accuracy_hand_computed():
    ranked = np.array([[0, 1], [0, 2]])
    assert M.coverage(ranked, 4) == 0.75
    assert M.gini(np.array([[0, 1], [2, 3]]), 4) == pytest.approx(0.0)
    assert M.gini(np.array([[0], [0]]), 4) == pytest.approx(0.75)  # (n-1)/n: all on one item
    pop = np.array([3.0, 1.0, 0.0, 0.0])
    assert M.average_popularity(ranked, pop) == pytest.approx((3 + 1 + 3 + 0) / 4)
    expected_novelty = -np.mean(np.log2((pop[[0, 1, 0, 2]] + 1) / 5))
    assert M.novelty(ranked, pop, 4) == pytest.approx(expected_novelty)
    cats = np.array([0, 0, 1, -1])
    assert M.ild_category(ranked, cats) == pytest.approx(0.5)  # (0,1) same, (0,2) differ
    vecs = np.array([[1.0, 0], [1, 0], [0, 1], [1, 1]])
    assert M.ild_embedding(ranked, vecs) == pytest.approx(0.5)  # distances 0 and 1


def test_bootstrap_and_paired_test():
    values = np.array([0.0, 1.0] * 200)
    lo, hi = M.bootstrap_ci(values, 2000, seed=1)
    assert lo < 0.5 < hi and hi - lo < 0.15
    a = np.ones(100)
    b = np.zeros(100)
    t = M.paired_test(a, b)
    assert t.mean_difference == 1.0 and t.p_value < 1e-10
    assert M.paired_test(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="same users"):
        M.paired_test(a, np.ones(3))


def _brute(ranked: list[int], target: set[int], k: int) -> dict[str, float]:
    top = ranked[:k]
    hits = [r for r, item in enumerate(top, start=1) if item in target]
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, len(target)) + 1))
    return {"hr": float(bool(hits)), "recall": len(hits) / len(target),
            "ndcg": sum(1 / math.log2(r + 1) for r in hits) / idcg,
            "mrr": 1 / hits[0] if hits else 0.0}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_accuracy_matches_brute_force(data):
    n_items = data.draw(st.integers(2, 30))
    n_users = data.draw(st.integers(1, 8))
    k = data.draw(st.integers(1, n_items))
    ranked = np.array([data.draw(st.permutations(range(n_items))) for _ in range(n_users)])
    targets = [np.array(sorted(data.draw(st.sets(st.integers(0, n_items - 1), min_size=1,
                                                 max_size=n_items))))
               for _ in range(n_users)]
    got = M.accuracy(ranked, targets, k)
    for u in range(n_users):
        want = _brute(ranked[u].tolist(), set(targets[u].tolist()), k)
        for name, value in want.items():
            assert got[f"{name}@{k}"][u] == pytest.approx(value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.floats(-5, 5), min_size=6, max_size=6), min_size=1, max_size=5),
       st.integers(1, 6))
def test_top_k_matches_sorting(rows, k):
    scores = np.array(rows)
    got = M.top_k(scores, k)
    for r, row in enumerate(rows):
        want = sorted(range(6), key=lambda i: (-row[i], i))[:k]
        assert got[r].tolist() == want


# -- protocols ------------------------------------------------------------------------------

def _events(rows: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "type", "timestamp"])


def test_interactions_dedupe_order_ties_and_negatives():
    ev = _events([
        ("u1", "a", "view", 1), ("u1", "b", "view", 5), ("u1", "c", "view", 5),  # tie: b, c
        ("u1", "a", "purchase", 9), ("u1", "d", "dislike", 10), ("u1", None, "search", 11),
        ("u2", "a", "view", 3),
    ])
    inter = interactions_from_events(ev)
    items = inter.items.ids[inter.item].tolist()
    assert items == ["a", "b", "c", "a"]  # repeat of a dropped; dislike/search are no signal
    assert inter.users.ids[inter.user].tolist() == ["u1", "u1", "u1", "u2"]
    assert inter.weight[0] == 9.0  # view 1 + purchase 8
    assert inter.event_type.tolist() == ["purchase", "view", "view", "view"]


def test_leave_one_out_has_no_leakage():
    rows = []
    for u in range(5):
        for t in range(2 + u):  # users with 2..6 interactions
            rows.append((f"u{u}", f"i{(u + t) % 7}", "view", t * 10))
    inter = interactions_from_events(_events(rows))
    split = leave_one_out(inter)
    assert split.test.n_users == 4  # the user with 2 interactions is skipped
    train_pairs = set(zip(split.test.train.user.tolist(), split.test.train.item.tolist(),
                          strict=True))
    for u, hist, target, vt in zip(split.test.users, split.test.history, split.test.targets,
                                   split.valid.targets, strict=True):
        assert (u, int(target[0])) not in train_pairs
        assert (u, int(vt[0])) not in train_pairs
        assert hist[-1] == vt[0] and target[0] not in hist
    ts = dict(zip(zip(inter.user.tolist(), inter.item.tolist(), strict=True),
                  inter.timestamp.tolist(), strict=True))
    for u, target, hist in zip(split.test.users, split.test.targets, split.test.history,
                               strict=True):
        assert all(ts[(u, h)] <= ts[(u, int(target[0]))] for h in hist)


def test_temporal_split_uses_only_the_past():
    rng = np.random.default_rng(0)
    rows = [(f"u{rng.integers(20)}", f"i{rng.integers(50)}", "view", int(t))
            for t in rng.integers(0, 10_000, 600)]
    ev = _events(rows).sort_values(["user_id", "timestamp"], kind="stable")
    split = temporal_split(interactions_from_events(ev), 0.2, 0.2)
    cut_v, cut_t = split.info["valid_cutoff_ms"], split.info["test_cutoff_ms"]
    assert split.valid.train.timestamp.max() < cut_v
    assert split.test.train.timestamp.max() < cut_t
    assert split.test.n_users > 0 and split.valid.n_users > 0
    with pytest.raises(ValueError, match="sum below 1"):
        temporal_split(interactions_from_events(ev), 0.6, 0.5)


# -- the runner with oracle models ----------------------------------------------------------

@dataclass(frozen=True)
class _NoConfig(ModelConfig):
    seed: int = 0


class Memorizer(Recommender):
    """Knows every user's test target (the split is handed in): must score 1.0."""

    name = "memorizer"
    config_class = _NoConfig

    def __init__(self, targets: dict[int, np.ndarray], n_items: int) -> None:
        super().__init__()
        self.targets, self.n_items = targets, n_items

    def fit(self, data: TrainData) -> Self:
        return self

    def score(self, users: np.ndarray, history: Sequence[np.ndarray],
              context: object = None) -> np.ndarray:
        out = np.zeros((len(users), self.n_items), dtype=np.float32)
        for r, u in enumerate(users):
            out[r, self.targets[int(u)]] = 1.0
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        pass


class RandomScorer(Memorizer):
    name = "random"

    def score(self, users: np.ndarray, history: Sequence[np.ndarray],
              context: object = None) -> np.ndarray:
        rng = np.random.default_rng(int(users.sum()))
        return rng.random((len(users), self.n_items)).astype(np.float32)


def _random_split(n_users: int = 400, n_items: int = 200, length: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, length, replace=False)):
            rows.append((f"u{u:04d}", f"i{i:04d}", "view", t))
    return leave_one_out(interactions_from_events(_events(rows)))


def test_memorizing_model_scores_one():
    split = _random_split()
    targets = {int(u): t for u, t in zip(split.test.users, split.test.targets, strict=True)}
    report = evaluate(split, {"memorizer": lambda seed: Memorizer(targets, len(split.items))},
                      EvalConfig(ks=(1, 10), n_boot=50))
    metrics = report.models["memorizer"].metrics
    assert metrics["hr@1"] == metrics["ndcg@10"] == metrics["mrr@10"] == 1.0


def test_random_model_scores_k_over_items():
    split = _random_split(n_users=2000, n_items=100, length=8)
    cfg = EvalConfig(ks=(10,), n_boot=50, exclude_seen=False)
    _, per_user, *_ = run_phase(RandomScorer({}, len(split.items)), split.test, cfg)
    assert per_user["hr@10"].mean() == pytest.approx(10 / 100, abs=0.02)


def test_report_has_every_field():
    split = _random_split(n_users=60, n_items=40, length=8)
    targets = {int(u): t for u, t in zip(split.test.users, split.test.targets, strict=True)}
    report = evaluate(split, {"a": lambda seed: Memorizer(targets, len(split.items)),
                              "b": lambda seed: RandomScorer({}, len(split.items))},
                      EvalConfig(ks=(5, 10), n_boot=50), dataset="tiny").to_dict()
    assert report["dataset"] == "tiny" and report["protocol"] == "loo"
    for model in ("a", "b"):
        r = report["models"][model]
        assert {"ndcg@10", "hr@10", "mrr@10", "recall@10", "ndcg@5"} <= set(r["metrics"])
        assert set(r["ci"]) == set(r["metrics"])
        assert {"coverage@10", "novelty@10", "arp@10", "gini@10"} <= set(r["beyond_accuracy"])
        assert {"train_seconds", "score_seconds", "peak_rss_mb"} <= set(r)
        assert r["peak_rss_mb"] > 10
        assert sum(s["users"] for s in r["segments"].values()) == 60
    assert report["paired"]["a vs b"]["mean_difference"] > 0.5


def test_cold_item_split_keeps_held_out_items_out_of_training():
    from tansuo.evaluation.protocols import cold_item_split

    rng = np.random.default_rng(3)
    rows = [(f"u{u}", f"i{i}", "view", t) for u in range(200)
            for t, i in enumerate(rng.choice(60, 10, replace=False))]
    inter = interactions_from_events(_events(rows))
    split = cold_item_split(inter, 0.1, seed=1)
    assert split.info["held_out_items"] == 6
    held = set(np.unique(np.concatenate(split.test.targets)).tolist())
    trained = set(np.unique(split.test.train.item).tolist())
    assert held and not held & trained  # no held-out target item is ever trained on
    for hist, target in zip(split.test.history, split.test.targets, strict=True):
        assert not set(hist.tolist()) & held and len(target) == 1
    assert split.test.n_users > 10 and split.valid.n_users > 10
    # ID-only models cannot find these items: item-kNN scores them zero
    from tansuo.models.base import TrainData
    from tansuo.models.baselines import ItemKNN

    knn = ItemKNN().fit(TrainData(split.test.train))
    scores = knn.score(split.test.users, split.test.history)
    assert all(scores[r, t[0]] == 0 for r, t in enumerate(split.test.targets))


class SeededScorer(Memorizer):
    """Random scores that depend on the seed it was built with (and nothing else)."""

    name = "seeded"

    def __init__(self, n_items: int, seed: int) -> None:
        super().__init__({}, n_items)
        self.seed = seed

    def score(self, users: np.ndarray, history: Sequence[np.ndarray],
              context: object = None) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(users.sum())])
        return rng.random((len(users), self.n_items)).astype(np.float32)


def test_several_seeds_are_averaged_per_user():
    split = _random_split(n_users=300, n_items=50, length=8)
    cfg = EvalConfig(ks=(10,), n_boot=200)
    single = {s: evaluate(split, {"r": lambda seed: SeededScorer(len(split.items), seed)},
                          EvalConfig(ks=(10,), n_boot=200, seed=s)).models["r"]
              for s in (0, 1, 2)}
    merged = evaluate(split, {"r": lambda seed: SeededScorer(len(split.items), seed)}, cfg,
                      seeds=(0, 1, 2)).models["r"]
    for m in ("ndcg@10", "hr@10"):
        expected = np.mean([single[s].metrics[m] for s in (0, 1, 2)])
        assert merged.metrics[m] == pytest.approx(expected, abs=1e-9)
        lo, hi = merged.ci[m]
        assert lo <= merged.metrics[m] <= hi
        # averaging three seeds per user shrinks the spread across users
        assert hi - lo < single[0].ci[m][1] - single[0].ci[m][0]
    assert [s["seed"] for s in merged.seeds] == [0, 1, 2]
    assert merged.seeds[1]["metrics"]["ndcg@10"] == pytest.approx(single[1].metrics["ndcg@10"],
                                                                  abs=1e-6)
    assert merged.exposure is not None and merged.exposure.sum() == 3 * 10 * split.test.n_users
    assert sum(s["users"] for s in merged.segments.values()) == split.test.n_users
