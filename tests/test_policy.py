"""Slate policies: exploitation order, the explore knob, propensities, online posteriors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tansuo.exploration.policy import PolicyConfig, SlatePolicy, UserContext

N = 40
UNIT_OF = np.repeat(np.arange(4), 10)        # 4 interests × 10 items
CENTROIDS = np.eye(4, dtype=np.float32)
SCORES = np.linspace(1.0, 0.0, N)            # item 0 best; unit 0 holds the top 10


def _policy(**cfg) -> SlatePolicy:
    return SlatePolicy(PolicyConfig(**cfg), UNIT_OF, CENTROIDS)


def test_greedy_is_the_top_k_with_propensity_one():
    s = _policy(strategy="greedy").slate("u", SCORES, k=5, exclude=np.isin(np.arange(N), [1]))
    assert s.items.tolist() == [0, 2, 3, 4, 5] and s.propensities.tolist() == [1.0] * 5
    assert s.propensity_method == "exact" and (s.explored == -1).all()
    for strategy in ("epsilon", "interest-ts", "interest-ucb", "item-ts"):
        zero = _policy(strategy=strategy, explore=0.0).slate("u", SCORES, k=5)
        assert zero.items.tolist() == [0, 1, 2, 3, 4], strategy  # explore = 0: exploitation


def test_epsilon_propensities_are_exact_and_match_frequencies():
    policy = _policy(strategy="epsilon", explore=0.3, pool=8)
    slates = [policy.slate("u", SCORES, k=3, request_id=f"r{i}") for i in range(3000)]
    first = slates[0]
    # item 0 at position 0: exploit (0.7) or random ordering of 8 (0.3 / 8)
    p0 = [s.propensities[0] for s in slates if s.items[0] == 0][0]
    assert p0 == pytest.approx(0.7 + 0.3 / 8)
    freq = np.mean([s.items[0] == 0 for s in slates])
    assert freq == pytest.approx(p0, abs=0.03)
    assert all(set(s.items) <= set(range(8)) for s in slates)
    assert first.request_id == "r0"
    again = policy.slate("u", SCORES, k=3, request_id="r0")  # seeded by the request
    assert again.items.tolist() == first.items.tolist()


def test_interest_thompson_explores_units_and_estimates_propensities():
    policy = _policy(strategy="interest-ts", explore=1.0, propensity_draws=300)
    ctx = UserContext(interests={0: 0.7, 1: 0.3})
    s = policy.slate("u", SCORES, k=4, context=ctx, request_id="a")
    assert (s.explored >= 0).all() and set(UNIT_OF[s.items]) <= {0, 1, 2, 3}
    assert s.propensity_method == "monte-carlo (300 draws)"
    assert ((s.propensities >= 1 / 300) & (s.propensities <= 1)).all()
    # estimated propensity of the first slot ≈ its frequency over many requests
    slates = [policy.slate("u", SCORES, k=1, context=ctx, request_id=f"q{i}")
              for i in range(400)]
    top = slates[0].items[0]
    freq = np.mean([x.items[0] == top for x in slates])
    assert slates[0].propensities[0] == pytest.approx(freq, abs=0.08)
    # neighbours of known interests are candidates too (units 2 and 3 are unexplored)
    shown_units = {int(UNIT_OF[x.items[0]]) for x in slates}
    assert shown_units & {2, 3}


def test_feedback_moves_the_posteriors():
    policy = _policy(strategy="interest-ts", explore=1.0, propensity_draws=20, neighbours=0)
    ctx = UserContext(interests={0: 0.5, 1: 0.5})
    for i in range(60):  # unit 1 is always clicked, unit 0 never
        s = policy.slate("u", SCORES, k=2, context=ctx, request_id=f"t{i}")
        policy.feedback("u", s, [p for p, item in enumerate(s.items) if UNIT_OF[item] == 1])
    late = [policy.slate("u", SCORES, k=1, context=ctx, request_id=f"z{i}") for i in range(100)]
    assert np.mean([UNIT_OF[s.items[0]] == 1 for s in late]) > 0.85
    clicks, shows = policy.interest_stats[("u", 1)]
    assert clicks == shows > 0
    item_ts = _policy(strategy="item-ts", explore=1.0, pool=10, propensity_draws=20)
    for i in range(50):
        s = item_ts.slate("u", SCORES, k=1, request_id=f"i{i}")
        item_ts.feedback("u", s, [0] if s.items[0] == 7 else [])
    picks = [item_ts.slate("u", SCORES, k=1, request_id=f"j{i}").items[0] for i in range(50)]
    assert np.mean(np.array(picks) == 7) > 0.5


def test_ucb_prefers_the_least_shown_interest():
    policy = _policy(strategy="interest-ucb", explore=1.0, neighbours=0, propensity_draws=10)
    policy.interest_stats[("u", 0)] = [5.0, 50.0]
    policy.interest_stats[("u", 1)] = [0.0, 0.0]
    s = policy.slate("u", SCORES, k=1, context=UserContext({0: 0.5, 1: 0.5}), request_id="x")
    assert UNIT_OF[s.items[0]] == 1


def test_diversity_and_novelty_reorder_the_exploitation_slate():
    vectors = np.zeros((N, 4), dtype=np.float32)
    vectors[np.arange(N), UNIT_OF] = 1.0
    diverse = SlatePolicy(PolicyConfig(strategy="greedy", diversity=0.7, pool=40), UNIT_OF,
                          CENTROIDS, vectors).slate("u", SCORES, k=4)
    assert sorted(UNIT_OF[diverse.items].tolist()) == [0, 1, 2, 3]
    novel = _policy(strategy="greedy", novelty=5.0).slate(
        "u", SCORES, k=3, context=UserContext(interests={0: 1.0}))
    assert set(UNIT_OF[novel.items].tolist()) == {1}  # unit 0 is known: unit 1 is boosted


@pytest.mark.parametrize(("cfg", "message"), [
    ({"strategy": "random"}, "strategy must be one of"),
    ({"explore": 1.5}, "explore must be in"),
    ({"diversity": -0.1}, "diversity must be in"),
    ({"pool": 0}, "pool must be"),
    ({"propensity_draws": 0}, "propensity_draws"),
])
def test_bad_configs_are_refused(cfg, message):
    with pytest.raises(ValueError, match=message):
        PolicyConfig(**cfg)


def test_missing_inputs_are_refused():
    with pytest.raises(ValueError, match="unit_of"):
        SlatePolicy(PolicyConfig(strategy="interest-ts"))
    with pytest.raises(ValueError, match="item_vectors"):
        SlatePolicy(PolicyConfig(strategy="greedy", diversity=0.5))
    with pytest.raises(ValueError, match="k must be"):
        _policy().slate("u", SCORES, k=0)


def test_everything_filtered_out_gives_an_empty_slate():
    s = _policy(strategy="interest-ts", explore=0.5).slate("u", SCORES, k=3,
                                                          exclude=np.ones(N, dtype=bool))
    assert len(s.items) == 0 and len(s.propensities) == 0


def _fill_slots_by_draw(kk, flags, theta=None, unit_mask=None, choice=None):
    """The slot-filling rule in plain Python, one draw at a time (the reference)."""
    draws = len(flags)
    width = (theta if theta is not None else unit_mask).shape[1]
    picks = np.zeros((draws, kk), dtype=np.int64)
    went = np.zeros((draws, kk), dtype=bool)
    for r in range(draws):
        free = list(range(width))
        for j in range(kk):
            pick = free[0]
            if flags[r, j]:
                if theta is not None:
                    pick, went[r, j] = max(free, key=lambda i: (theta[r, i], -i)), True
                else:
                    own = [i for i in free if unit_mask[choice[r, j], i]]
                    if own:
                        pick, went[r, j] = own[0], True
            free.remove(pick)
            picks[r, j] = pick
    return picks, went


@given(st.integers(0, 2**32 - 1), st.booleans())
@settings(max_examples=150, deadline=None)
def test_slot_filling_matches_a_plain_loop_over_draws(seed, item_level):
    from tansuo.exploration.kernels import NO_CHOICE, NO_THETA, NO_UNITS, fill_slots

    rng = np.random.default_rng(seed)
    draws, width = int(rng.integers(1, 12)), int(rng.integers(1, 30))
    kk = int(rng.integers(1, width + 1))
    flags = rng.random((draws, kk)) < rng.choice([0.0, 0.1, 0.5, 1.0])
    if item_level:
        kwargs = {"theta": rng.random((draws, width))}
        picks, went = fill_slots(kk, flags, kwargs["theta"], NO_UNITS, NO_CHOICE)
    else:
        units = int(rng.integers(1, 5))
        kwargs = {"unit_mask": rng.random((units, width)) < 0.3,
                  "choice": rng.integers(0, units, (draws, kk))}
        picks, went = fill_slots(kk, flags, NO_THETA, kwargs["unit_mask"], kwargs["choice"])
    want_picks, want_went = _fill_slots_by_draw(kk, flags, **kwargs)
    np.testing.assert_array_equal(picks, want_picks)
    np.testing.assert_array_equal(went, want_went)
    assert all(len(set(row)) == kk for row in picks.tolist())  # no candidate twice in a draw


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_each_units_best_and_first_candidates_match_a_plain_loop(seed):
    """The compiled candidate picks: each unit's best and first k, and the top m with them in
    ranking order (stable: ties go to the earlier entry)."""
    from tansuo.exploration.kernels import best_per_unit, first_per_unit, reachable

    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(0, 60)), int(rng.integers(0, 6))
    unit = rng.integers(-1, 6, n)
    scores = rng.integers(0, 4, n).astype(float)  # many ties: earlier entries win them
    member = rng.random(int(rng.integers(1, 8))) < 0.6
    ok = [i for i in range(n) if 0 <= unit[i] < len(member) and member[unit[i]]]
    by_score = sorted(ok, key=lambda i: (-scores[i], i))
    want_best = [i for i in by_score if [j for j in by_score if unit[j] == unit[i]].index(i) < k]
    want_first = [i for i in ok if [j for j in ok if unit[j] == unit[i]].index(i) < k]
    assert np.flatnonzero(best_per_unit(scores, unit, member, k)).tolist() == sorted(want_best)
    assert np.flatnonzero(first_per_unit(unit, member, k)).tolist() == want_first
    m = int(rng.integers(1, 70))
    ranked = sorted(range(n), key=lambda i: (-scores[i], i))
    want = [i for i in ranked if i in set(ranked[:m]) | set(want_best)]
    assert reachable(scores, unit, member, m, k).tolist() == want


@given(st.integers(0, 2**32 - 1), st.sampled_from(["interest-ts", "interest-ucb"]))
@settings(max_examples=60, deadline=None)
def test_a_slate_needs_only_the_top_and_each_interests_best_candidates(seed, strategy):
    """The ranking is cut to the top ``pool`` and each candidate interest's best k (what any
    slot can reach): slates and propensities equal those over the full ranking (pool ≥ n)."""
    rng = np.random.default_rng(seed)
    n, units = int(rng.integers(5, 200)), int(rng.integers(1, 12))
    unit_of = rng.integers(-1, units, n)
    scores = rng.integers(0, 30, n).astype(float)  # ties across the cut
    exclude = rng.random(n) < 0.2
    ctx = UserContext({int(u): 0.5 for u in rng.choice(units, min(units, 3), replace=False)})
    centroids = rng.normal(size=(units, 4)).astype(np.float32)
    k = int(rng.integers(1, 12))
    slates = [SlatePolicy(PolicyConfig(strategy=strategy, explore=0.5, pool=pool,
                                       propensity_draws=30), unit_of, centroids)
              .slate("u", scores, k, ctx, exclude, request_id=f"r{seed}")
              for pool in (1, n)]
    cut, full = slates
    np.testing.assert_array_equal(cut.items, full.items)
    np.testing.assert_array_equal(cut.propensities, full.propensities)
    np.testing.assert_array_equal(cut.explored, full.explored)
    np.testing.assert_array_equal(cut.exploit, full.exploit)
