"""Off-policy estimators (tansuo.evaluation.ope) and the OBD policies feeding them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tansuo.data.bundled import LoggedBandit
from tansuo.evaluation import ope
from tansuo.exploration import obd_policies as pol

# --------------------------------------------------------------------------- hand-computed


def _one_position_case() -> dict:
    """4 rounds, 2 actions, 1 position; π_e = (0.8, 0.2) in every round.

    w = π_e(a_i) / p_i = [0.8/0.5, 0.2/0.5, 0.2/0.25, 0.8/0.5] = [1.6, 0.4, 0.8, 1.6]
    """
    dist = np.tile(np.array([[0.8], [0.2]]), (4, 1, 1))
    return {"reward": np.array([1.0, 0.0, 1.0, 0.0]), "action": np.array([0, 1, 1, 0]),
            "position": np.zeros(4, dtype=int), "pscore": np.array([0.5, 0.5, 0.25, 0.5]),
            "action_dist": dist}


def _rewards_model() -> np.ndarray:
    return np.tile(np.array([[0.5], [0.25]]), (4, 1, 1))  # q̂(0) = 0.5, q̂(1) = 0.25


def test_ipw_by_hand():
    # (1.6·1 + 0.4·0 + 0.8·1 + 1.6·0) / 4 = 2.4 / 4
    assert ope.ipw(**_one_position_case()) == pytest.approx(0.6, abs=1e-15)
    # weights clipped at 1: (1·1 + 0.8·1) / 4
    assert ope.ipw(**_one_position_case(), max_weight=1.0) == pytest.approx(0.45, abs=1e-15)


def test_snips_by_hand():
    # Σ w r / Σ w = 2.4 / 4.4 = 6/11
    assert ope.snips(**_one_position_case()) == pytest.approx(6 / 11, abs=1e-15)


def test_dm_by_hand():
    # every round: 0.8·0.5 + 0.2·0.25 = 0.45
    case = _one_position_case()
    assert ope.dm(position=case["position"], action_dist=case["action_dist"],
                  estimated_rewards=_rewards_model()) == pytest.approx(0.45, abs=1e-15)
    # extra logged arrays are accepted and ignored
    assert ope.dm(**case, estimated_rewards=_rewards_model()) == pytest.approx(0.45, abs=1e-15)


def test_dr_by_hand():
    # per round 0.45 + w_i (r_i − q̂(a_i)):
    #   0.45 + 1.6·0.5 = 1.25;  0.45 + 0.4·(−0.25) = 0.35;  0.45 + 0.8·0.75 = 1.05;
    #   0.45 + 1.6·(−0.5) = −0.35;  mean = 2.3 / 4
    case = _one_position_case()
    assert ope.dr(**case, estimated_rewards=_rewards_model()) == pytest.approx(0.575, abs=1e-15)


def test_switch_dr_by_hand():
    # tau = 0.5 keeps only round 1 (w = 0.4): (0.45 + 0.35 + 0.45 + 0.45) / 4 = 1.7 / 4
    case = _one_position_case()
    q = _rewards_model()
    assert ope.switch_dr(**case, estimated_rewards=q, tau=0.5) == pytest.approx(0.425,
                                                                                 abs=1e-15)
    assert ope.switch_dr(**case, estimated_rewards=q) == pytest.approx(0.575, abs=1e-15)


def test_positions_index_the_right_slice():
    # 3 actions, 2 positions. Position 0 always shows action 0; position 1 actions 1, 2 at 0.5.
    # Round 0: action 0 at position 0, p = 1/3 → w = 1 / (1/3) = 3, r = 1.
    # Round 1: action 2 at position 1, p = 1/4 → w = 0.5 / 0.25 = 2, r = 1.
    dist = np.zeros((2, 3, 2))
    dist[:, 0, 0] = 1.0
    dist[:, 1:, 1] = 0.5
    case = {"reward": np.array([1.0, 1.0]), "action": np.array([0, 2]),
            "position": np.array([0, 1]), "pscore": np.array([1 / 3, 0.25]),
            "action_dist": dist}
    assert ope.ipw(**case) == pytest.approx((3 + 2) / 2)
    assert ope.snips(**case) == pytest.approx(1.0)
    w = ope.importance_weights(action=case["action"], position=case["position"],
                               pscore=case["pscore"], action_dist=dist)
    np.testing.assert_allclose(w, [3.0, 2.0])
    # q̂ = 0.1 · (action + 1) + position: DM per round = q̂(0, k=0) = 0.1 and
    # 0.5·q̂(1, k=1) + 0.5·q̂(2, k=1) = 0.5·1.2 + 0.5·1.3 = 1.25
    q = np.zeros((2, 3, 2))
    q[:] = (0.1 * (np.arange(3) + 1))[:, None] + np.arange(2)[None, :]
    assert ope.dm(position=case["position"], action_dist=dist,
                  estimated_rewards=q) == pytest.approx((0.1 + 1.25) / 2)


def test_snips_undefined_when_no_logged_action_has_mass():
    case = _one_position_case()
    case["action_dist"] = np.tile(np.array([[0.0], [1.0]]), (4, 1, 1))
    case["action"] = np.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="SNIPS is undefined"):
        ope.snips(**case)


# --------------------------------------------------------------------------- properties


@st.composite
def logged_data(draw, min_rounds: int = 1):
    """Random logged data whose pscore is the logging policy's exact (action, position) mass."""
    n = draw(st.integers(min_rounds, 30))
    n_actions = draw(st.integers(1, 5))
    n_positions = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(n_actions), size=(n, n_positions)).transpose(0, 2, 1)
    logging = np.clip(logging, 1e-3, None)
    logging /= logging.sum(axis=1, keepdims=True)
    evaluation = rng.dirichlet(np.ones(n_actions), size=(n, n_positions)).transpose(0, 2, 1)
    position = rng.integers(0, n_positions, size=n)
    action = np.array([rng.choice(n_actions, p=logging[i, :, position[i]]) for i in range(n)])
    pscore = logging[np.arange(n), action, position]
    reward = rng.integers(0, 2, size=n).astype(float)
    q = rng.uniform(0, 1, size=(n, n_actions, n_positions))
    return {"reward": reward, "action": action, "position": position, "pscore": pscore,
            "evaluation": evaluation, "logging": logging, "q": q}


def _inputs(d: dict, dist_key: str = "evaluation") -> dict:
    return {"reward": d["reward"], "action": d["action"], "position": d["position"],
            "pscore": d["pscore"], "action_dist": d[dist_key]}


@settings(max_examples=60, deadline=None)
@given(logged_data(), st.floats(-3, 3))
def test_snips_of_a_constant_reward_is_that_constant(d, c):
    d["reward"] = np.full_like(d["reward"], c)
    assert ope.snips(**_inputs(d)) == pytest.approx(c, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(logged_data())
def test_ipw_of_the_logging_policy_is_the_mean_reward(d):
    # action_dist = logging policy, so every weight is exactly 1
    assert ope.ipw(**_inputs(d, "logging")) == pytest.approx(d["reward"].mean(), abs=1e-12)
    assert ope.snips(**_inputs(d, "logging")) == pytest.approx(d["reward"].mean(), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(logged_data())
def test_dr_with_a_perfect_reward_model_equals_dm(d):
    n = len(d["reward"])
    d["reward"] = d["q"][np.arange(n), d["action"], d["position"]]  # q̂ is right on every row
    inputs = _inputs(d)
    assert ope.dr(**inputs, estimated_rewards=d["q"]) == pytest.approx(
        ope.dm(**inputs, estimated_rewards=d["q"]), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(logged_data())
def test_switch_dr_spans_dm_to_dr(d):
    inputs = _inputs(d)
    q = d["q"]
    assert ope.switch_dr(**inputs, estimated_rewards=q, tau=math.inf) == pytest.approx(
        ope.dr(**inputs, estimated_rewards=q), abs=1e-12)
    # tau = 0 keeps only zero weights, whose correction is 0: DM
    assert ope.switch_dr(**inputs, estimated_rewards=q, tau=0.0) == pytest.approx(
        ope.dm(**inputs, estimated_rewards=q), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(logged_data(min_rounds=2), st.integers(0, 1000))
def test_bootstrap_fast_path_equals_refitting_each_resample(d, seed):
    inputs = _inputs(d)

    def generic(**kw):  # not in the registry: bootstrap calls it on every resample
        return ope.ipw(**kw)

    fast = ope.bootstrap_ci(ope.ipw, **inputs, n_boot=50, seed=seed)
    slow = ope.bootstrap_ci(generic, **inputs, n_boot=50, seed=seed)
    assert fast.value == slow.value
    assert fast.ci_low == pytest.approx(slow.ci_low, abs=1e-12)
    assert fast.ci_high == pytest.approx(slow.ci_high, abs=1e-12)
    assert fast.ci_low <= fast.ci_high


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    n = 400
    dist = np.full((n, 4, 2), 0.25)
    inputs = {"reward": rng.integers(0, 2, n).astype(float), "action": rng.integers(0, 4, n),
              "position": rng.integers(0, 2, n), "pscore": np.full(n, 0.25),
              "action_dist": dist}
    a = ope.bootstrap_ci("snips", **inputs, n_boot=300, seed=7)
    b = ope.bootstrap_ci(ope.snips, **inputs, n_boot=300, seed=7)
    assert a == b
    assert a.ci_low < a.value < a.ci_high
    assert a.value == pytest.approx(inputs["reward"].mean())
    # a per-round constant has a zero-width interval
    q = np.full((n, 4, 2), 0.3)
    c = ope.bootstrap_ci(ope.dm, position=inputs["position"], action_dist=dist,
                         estimated_rewards=q, n_boot=50)
    assert c.value == pytest.approx(0.3) and c.ci_low == pytest.approx(0.3)
    assert c.ci_high == pytest.approx(0.3)


def test_estimate_all_names_and_agreement():
    case = _one_position_case()
    q = _rewards_model()
    out = ope.estimate_all(**case, estimated_rewards=q, switch_tau=0.5, n_boot=20)
    assert list(out) == ["ipw", "snips", "dm", "dr", "switch-dr"]
    assert out["ipw"].value == pytest.approx(0.6)
    assert out["switch-dr"].value == pytest.approx(0.425)
    assert list(ope.estimate_all(**case, n_boot=20)) == ["ipw", "snips"]
    with pytest.raises(ValueError, match="switch_tau needs estimated_rewards"):
        ope.estimate_all(**case, switch_tau=1.0)


# --------------------------------------------------------------------------- validation


def _bad(**change):
    case = _one_position_case()
    case.update(change)
    return case


@pytest.mark.parametrize(("change", "message"), [
    ({"pscore": np.array([0.5, 0.0, 0.25, 0.5])}, r"pscore .* must be in \(0, 1\]"),
    ({"pscore": np.array([0.5, 1.5, 0.25, 0.5])}, r"pscore .* must be in \(0, 1\]"),
    ({"pscore": np.array([0.5, 0.5])}, r"pscore must have shape \(n_rounds,\) = \(4,\)"),
    ({"action": np.array([0, 1, 2, 0])}, r"action must lie in \[0, 2\)"),
    ({"action": np.array([0.0, 1.0, 1.0, 0.0])}, "action must hold integers"),
    ({"position": np.array([0, 0, 1, 0])}, r"position must lie in \[0, 1\)"),
    ({"position": np.array([-1, 0, 0, 0])}, r"position must lie in \[0, 1\)"),
    ({"reward": np.ones((4, 1))}, "reward must be a 1-D array"),
    ({"reward": np.array([1.0, np.nan, 0.0, 0.0])}, "reward must be finite"),
    ({"action_dist": np.full((4, 2, 1), 0.6)}, r"action_dist\[i, :, k\] must sum to 1"),
    ({"action_dist": np.full((4, 2), 0.5)}, "action_dist must be a 3-D array"),
    ({"action_dist": np.tile(np.array([[1.5], [-0.5]]), (4, 1, 1))},
     r"action_dist must hold probabilities in \[0, 1\]"),
    ({"action_dist": np.zeros((0, 2, 1))}, "action_dist has no rounds"),
])
def test_validation_names_the_argument(change, message):
    with pytest.raises(ValueError, match=message):
        ope.ipw(**_bad(**change))


def test_validation_of_the_rewards_model_and_options():
    case = _one_position_case()
    with pytest.raises(ValueError, match=r"estimated_rewards must have the shape of action_dist"):
        ope.dr(**case, estimated_rewards=np.zeros((4, 3, 1)))
    with pytest.raises(ValueError, match="estimated_rewards must be finite"):
        ope.dm(position=case["position"], action_dist=case["action_dist"],
               estimated_rewards=np.full((4, 2, 1), np.inf))
    with pytest.raises(ValueError, match="max_weight must be a number ≥ 0"):
        ope.ipw(**case, max_weight=-1.0)
    with pytest.raises(ValueError, match="tau must be a number ≥ 0"):
        ope.switch_dr(**case, estimated_rewards=_rewards_model(), tau=float("nan"))
    with pytest.raises(ValueError, match="unknown estimator 'ips'"):
        ope.bootstrap_ci("ips", **case)
    with pytest.raises(ValueError, match="n_boot must be an integer ≥ 1"):
        ope.bootstrap_ci(ope.ipw, **case, n_boot=0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        ope.bootstrap_ci(ope.ipw, **case, alpha=1.0)


# --------------------------------------------------------------------------- OBD policies


def test_bts_monte_carlo_is_a_seeded_distribution_per_position():
    alpha = np.array([5.0, 3.0, 8.0, 1.0, 2.0])
    beta = np.array([95.0, 97.0, 92.0, 99.0, 98.0])
    d = pol.bts_action_dist(alpha, beta, n_positions=3, n_draws=20_000, seed=3)
    assert d.shape == (5, 3)
    np.testing.assert_allclose(d.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(d, pol.bts_action_dist(alpha, beta, 3, 20_000, seed=3))
    assert not np.array_equal(d, pol.bts_action_dist(alpha, beta, 3, 20_000, seed=4))
    assert d[2, 0] == d[:, 0].max()  # the highest prior mean leads position 0 most often
    # a prior that leaves no doubt gives a deterministic slate in rank order
    sure = pol.bts_action_dist(np.array([1.0, 1e6, 1.0, 1e5]), np.array([1e6, 1.0, 1e6, 1e5]),
                               n_positions=2, n_draws=1000, seed=0)
    np.testing.assert_array_equal(sure, [[0, 0], [1, 0], [0, 0], [0, 1]])


def test_greedy_and_epsilon_greedy_slates():
    scores = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.8]])  # 3 items, 2 positions
    # position 0 takes item 1 (0.5); position 1 the best remaining: item 0 (0.9)
    slate = pol.greedy_slate(scores)
    np.testing.assert_array_equal(slate, [[0, 1], [1, 0], [0, 0]])
    mixed = pol.epsilon_greedy(slate, 0.3)
    np.testing.assert_allclose(mixed, 0.7 * slate + 0.1)
    np.testing.assert_allclose(mixed.sum(axis=0), 1.0)
    batch = pol.greedy_slate(np.stack([scores, scores[::-1]]))
    np.testing.assert_array_equal(batch[0], slate)
    np.testing.assert_array_equal(batch[1], slate[::-1])
    full = pol.tile_rounds(mixed, 5)
    assert full.shape == (5, 3, 2) and not full.flags.writeable


def _synthetic_log(n: int = 3000, seed: int = 0) -> LoggedBandit:
    """Uniform-random log over 4 items and 2 positions where item 2 is clicked far more."""
    rng = np.random.default_rng(seed)
    action = rng.integers(0, 4, n)
    position = rng.integers(0, 2, n)
    ctr = np.array([0.02, 0.02, 0.3, 0.05])[action] * np.array([1.0, 0.6])[position]
    return LoggedBandit(
        policy="random", campaign="toy", timestamp=np.arange(n, dtype=np.int64) * 1000,
        action=action, position=position, reward=(rng.random(n) < ctr).astype(np.int64),
        propensity=np.full(n, 0.25),
        user_features=pd.DataFrame({"user_feature_0": rng.choice(["a", "b"], n)}),
        affinity=np.zeros((n, 4)),
        item_features=pd.DataFrame({"item_id": range(4), "item_feature_0": [0.1, 0.2, 0.3, 0.4],
                                    "item_feature_1": ["x", "y", "z", "w"]}),
        n_actions=4, n_positions=2)


def test_time_split_and_ctr_table():
    log = _synthetic_log()
    train, test = pol.time_split(log, 0.7)
    assert (train.n_rounds, test.n_rounds) == (2100, 900)
    assert train.timestamp.max() < test.timestamp.min()
    table = pol.ctr_table(train)
    assert table.shape == (4, 2) and table[:, 0].argmax() == 2
    with pytest.raises(ValueError, match="train_fraction"):
        pol.time_split(log, 1.0)


def test_reward_model_cross_fit_and_greedy_policy():
    log = _synthetic_log()
    model = pol.RewardModel.fit(log, cs=(0.1, 10.0))
    assert model.c in (0.1, 10.0)
    q = model.predict(log)
    assert q.shape == (3000, 4, 2) and np.all((q > 0) & (q < 1))
    assert np.all(q.argmax(axis=1) == 2)  # item 2 is best everywhere
    assert np.all(q[:, :, 0] > q[:, :, 1])  # position 0 is clicked more
    dist = pol.model_greedy_dist(model, log)
    assert np.all(dist[:, 2, 0] == 1.0)
    crossed = pol.cross_fit_rewards(log, n_folds=3, seed=0, cs=(1.0,))
    assert crossed.shape == q.shape and np.all(np.isfinite(crossed))
    # every estimator accepts what the policies produce
    value = ope.dr(reward=log.reward, action=log.action, position=log.position,
                   pscore=log.propensity, action_dist=dist, estimated_rewards=crossed)
    assert 0.1 < value < 0.5


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_obd_random_log_and_bts_prior():
    from tansuo.data.bundled import load_obd

    log = load_obd("random", "men")
    uniform = pol.tile_rounds(pol.uniform_dist(log.n_actions, log.n_positions), log.n_rounds)
    inputs = {"reward": log.reward, "action": log.action, "position": log.position,
              "pscore": log.propensity, "action_dist": uniform}
    # the uniform policy is the logging policy: every weight is 1, IPW is the observed CTR
    assert ope.ipw(**inputs) == pytest.approx(log.ctr, abs=1e-12)
    assert ope.snips(**inputs) == pytest.approx(log.ctr, abs=1e-12)
    alpha, beta = pol.bts_prior("men")
    assert alpha.shape == beta.shape == (log.n_actions,)
    bts = pol.bts_action_dist(alpha, beta, log.n_positions, n_draws=20_000, seed=0)
    np.testing.assert_allclose(bts.sum(axis=0), 1.0)
    w = ope.importance_weights(action=log.action, position=log.position, pscore=log.propensity,
                               action_dist=pol.tile_rounds(bts, log.n_rounds))
    assert abs(w.mean() - 1.0) < 0.15  # E[w] = 1 under a uniform logger
    estimate = ope.bootstrap_ci(ope.ipw, **{**inputs, "action_dist": pol.tile_rounds(
        bts, log.n_rounds)}, n_boot=200)
    assert 0.0 < estimate.ci_low < estimate.value < estimate.ci_high < 0.05
    with pytest.raises(ValueError, match="no BTS prior for campaign 'kids'"):
        pol.bts_prior("kids")
