"""Differential privacy of released counts: the ε ledger, the OpenDP release, and the
contribution bounding that makes the stated sensitivity true. Tiny data, built here."""

from __future__ import annotations

import json
import math
import os
import stat
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tansuo.errors import TansuoError
from tansuo.privacy.dp import (
    MECHANISM,
    BudgetExhausted,
    BudgetLedgerError,
    DPRelease,
    PrivacyBudget,
    bounded_user_counts,
    dp_interest_counts,
    dp_popular_items,
    dp_segment_sizes,
    release_counts,
    segment_sizes,
)

# --- the ledger -----------------------------------------------------------------------------


def test_ledger_persists_across_instances(tmp_path):
    b = PrivacyBudget(tmp_path, total_epsilon=3.0)
    assert (b.spent, b.remaining, b.releases) == (0.0, 3.0, [])
    b.spend(1.0, "segment sizes", MECHANISM)
    b.spend(0.5, "popular items", MECHANISM)

    again = PrivacyBudget(tmp_path, total_epsilon=3.0)
    assert again.spent == pytest.approx(1.5)
    assert again.remaining == pytest.approx(1.5)
    assert [(r["label"], r["epsilon"], r["mechanism"]) for r in again.releases] == [
        ("segment sizes", 1.0, MECHANISM), ("popular items", 0.5, MECHANISM)]
    assert all(r["at"].endswith("+00:00") for r in again.releases)

    path = tmp_path / "privacy" / "dp-budget.json"
    assert json.loads(path.read_text())["releases"][0]["label"] == "segment sizes"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []


def test_over_budget_is_refused_with_a_clear_message_and_records_nothing(tmp_path):
    b = PrivacyBudget(tmp_path, total_epsilon=2.0)
    b.spend(1.5, "first", MECHANISM)
    with pytest.raises(BudgetExhausted) as e:
        b.spend(1.0, "trend counts", MECHANISM)
    msg = str(e.value)
    for part in ("'trend counts'", "ε = 1", "0.5", "total 2", "TANSUO_DP_TOTAL_EPSILON"):
        assert part in msg
    assert isinstance(e.value, TansuoError)
    assert [r["label"] for r in PrivacyBudget(tmp_path, 2.0).releases] == ["first"]

    with pytest.raises(BudgetExhausted):  # release_counts spends first: nothing released
        release_counts({"a": 3}, 1, 1.0, b, "late")
    assert b.spent == pytest.approx(1.5)


def test_budget_can_be_spent_exactly_despite_rounding(tmp_path):
    b = PrivacyBudget(tmp_path, total_epsilon=1.0)
    for i in range(10):
        release_counts({"a": 1}, 3, 0.1, b, f"r{i}")  # OpenDP's map may round up slightly
    assert b.remaining == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(BudgetExhausted):
        b.spend(0.01, "one more", MECHANISM)


def test_concurrent_spends_never_exceed_the_total(tmp_path):
    total, each, n_threads = 5.0, 0.25, 8
    budgets = [PrivacyBudget(tmp_path, total) for _ in range(n_threads)]  # separate objects
    ok, refused = [], []
    start = threading.Barrier(n_threads)

    def worker(b: PrivacyBudget, t: int) -> None:
        start.wait()
        for i in range(6):
            try:
                b.spend(each, f"t{t}-{i}", MECHANISM)
                ok.append(1)
            except BudgetExhausted:
                refused.append(1)

    threads = [threading.Thread(target=worker, args=(b, t)) for t, b in enumerate(budgets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == int(total / each) and len(refused) == n_threads * 6 - len(ok)
    assert PrivacyBudget(tmp_path, total).spent == pytest.approx(total)
    assert len(PrivacyBudget(tmp_path, total).releases) == len(ok)


def test_a_corrupt_ledger_refuses_releases(tmp_path):
    path = tmp_path / "privacy" / "dp-budget.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    b = PrivacyBudget(tmp_path, 10.0)
    with pytest.raises(BudgetLedgerError, match="cannot be read"):
        b.spend(1.0, "x", MECHANISM)
    with pytest.raises(BudgetLedgerError):
        release_counts({"a": 1}, 1, 1.0, b, "x")


# --- the release ----------------------------------------------------------------------------


def test_release_values_are_non_negative_ints_with_the_same_keys(tmp_path):
    b = PrivacyBudget(tmp_path, 20.0)
    counts = {"0": 0, "1": 3, "2": 100, "x": 1}
    rel = release_counts(counts, sensitivity=2, epsilon=0.5, budget=b, label="segments")
    assert isinstance(rel, DPRelease)
    assert list(rel.values) == list(counts)
    assert all(type(v) is int and v >= 0 for v in rel.values.values())
    assert (rel.epsilon, rel.sensitivity, rel.scale) == (pytest.approx(0.5), 2, 4.0)
    assert rel.mechanism == MECHANISM and "e^ε" in rel.guarantee and "0.5" in rel.guarantee
    d = rel.to_dict()
    assert d["values"] == rel.values and json.loads(json.dumps(d)) == d
    assert b.releases[0]["label"] == "segments" and b.spent == pytest.approx(0.5)


def test_empty_counts_give_an_empty_release_and_spend_nothing(tmp_path):
    b = PrivacyBudget(tmp_path, 1.0)
    rel = release_counts({}, 1, 1.0, b, "nothing")
    assert rel.values == {} and b.spent == 0.0 and b.releases == []


def test_noise_is_centred_with_discrete_laplace_variance():
    scale, n = 20.0, 4000  # sensitivity 20, ε 1: noise far above the clamp at 0
    true = 10_000
    draws = np.array([release_counts({"k": true}, 20, 1.0, None, "t").values["k"]
                      for _ in range(n)], dtype=float) - true
    sigma = math.sqrt(2) * scale
    assert abs(draws.mean()) < 5 * sigma / math.sqrt(n)
    # the sample variance of Laplace noise has sd ≈ σ²·√(5/n) (kurtosis 6): ±25 % is > 7 sd
    assert draws.var() == pytest.approx(2 * scale**2, rel=0.25)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"epsilon": 0}, "epsilon"), ({"epsilon": -1.0}, "epsilon"),
    ({"epsilon": float("nan")}, "epsilon"), ({"epsilon": float("inf")}, "epsilon"),
    ({"sensitivity": 0}, "sensitivity"), ({"sensitivity": 1.5}, "sensitivity"),
    ({"sensitivity": True}, "sensitivity"),
    ({"counts": {"a": -1}}, "count of 'a'"), ({"counts": {"a": 2.5}}, "count of 'a'"),
    ({"counts": {"a": 2**31}}, "count of 'a'"),
])
def test_release_validates_its_arguments(kwargs, match):
    args = {"counts": {"a": 1}, "sensitivity": 1, "epsilon": 1.0, "budget": None, "label": "t"}
    with pytest.raises(ValueError, match=match):
        release_counts(**{**args, **kwargs})


def test_budget_validates_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="total_epsilon"):
        PrivacyBudget(tmp_path, 0)
    b = PrivacyBudget(tmp_path, 1.0)
    with pytest.raises(ValueError, match="epsilon"):
        b.spend(-0.1, "x", MECHANISM)
    with pytest.raises(ValueError, match="label"):
        b.spend(0.1, " ", MECHANISM)


# --- contribution bounding ------------------------------------------------------------------


def test_segment_sizes_count_users_and_zero_fill_the_domain():
    assert segment_sizes([2, 0, 2, 2]) == {"0": 1, "2": 3}
    assert segment_sizes(np.array([2, 0, 2, 2]), domain=range(4)) == {
        "0": 1, "1": 0, "2": 3, "3": 0}
    with pytest.raises(ValueError, match="not in the domain"):
        segment_sizes([5], domain=range(3))
    with pytest.raises(ValueError, match="integer"):
        segment_sizes([0.5])


def test_bounded_counts_keep_each_users_most_frequent_keys_ties_by_key():
    users = ["u"] * 6 + ["v"] * 2
    keys = ["b", "b", "b", "a", "c", "d", "a", "a"]
    counts, sens = bounded_user_counts(users, keys, max_keys_per_user=2, max_per_key=2)
    # u: b (3 events → 2), then the tie a/c/d (1 each) → a; v: a (2)
    assert counts == {"a": 3, "b": 2} and sens == 4
    distinct, sens1 = bounded_user_counts(users, keys, max_keys_per_user=10)
    assert distinct == {"a": 2, "b": 1, "c": 1, "d": 1} and sens1 == 10
    in_domain, _ = bounded_user_counts(users, keys, 1, domain=["d", "z"])
    assert in_domain == {"d": 1, "z": 0}  # rows outside the domain dropped before capping
    with pytest.raises(ValueError, match="lengths"):
        bounded_user_counts(["u"], [], 1)
    with pytest.raises(ValueError, match="max_keys_per_user"):
        bounded_user_counts([], [], 0)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 5), st.sampled_from("abcdefg")), max_size=40),
       max_keys=st.integers(1, 4), max_per=st.integers(1, 3), victim=st.integers(0, 5))
def test_removing_one_user_changes_counts_by_at_most_the_sensitivity(rows, max_keys, max_per,
                                                                      victim):
    users = [u for u, _ in rows]
    keys = [k for _, k in rows]
    full, sens = bounded_user_counts(users, keys, max_keys, max_per)
    rest = [(u, k) for u, k in rows if u != victim]
    without, _ = bounded_user_counts([u for u, _ in rest], [k for _, k in rest], max_keys,
                                     max_per)
    l1 = sum(abs(full.get(k, 0) - without.get(k, 0)) for k in set(full) | set(without))
    assert l1 <= sens == max_keys * max_per


@settings(max_examples=30, deadline=None)
@given(labels=st.lists(st.integers(0, 4), min_size=1, max_size=30), data=st.data())
def test_removing_one_user_changes_segment_sizes_by_one(labels, data):
    i = data.draw(st.integers(0, len(labels) - 1))
    full = segment_sizes(labels, domain=range(5))
    without = segment_sizes(labels[:i] + labels[i + 1:], domain=range(5))
    assert sum(abs(full[k] - without[k]) for k in full) == 1


# --- releases used by reports ---------------------------------------------------------------


def test_report_releases_spend_their_epsilon_and_state_their_sensitivity(tmp_path):
    b = PrivacyBudget(tmp_path, 20.0)
    seg = dp_segment_sizes([0, 1, 1, 2], 1.0, b, domain=range(4))
    assert set(seg.values) == {"0", "1", "2", "3"} and seg.sensitivity == 1

    users = [f"u{i % 30}" for i in range(300)]
    items = [f"i{(i * 7) % 50}" for i in range(300)]
    pop = dp_popular_items(users, items, 2.0, b, max_items_per_user=5, top=10)
    assert pop.sensitivity == 5 and len(pop.values) <= 10
    noisy = list(pop.values.values())
    assert noisy == sorted(noisy, reverse=True) and all(v > 0 for v in noisy)

    trend = dp_interest_counts(users, [f"t{i % 3}" for i in range(300)], 1.0, b)
    assert trend.sensitivity == 50 and set(trend.values) == {"t0", "t1", "t2"}
    assert [r["label"] for r in b.releases] == ["segment sizes", "popular items",
                                                "interest counts"]
    assert b.spent == pytest.approx(4.0)
