"""Contract tests every model inherits, plus a checkerboard oracle with known right answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tansuo.evaluation.protocols import interactions_from_events
from tansuo.models.base import TrainData
from tansuo.models.baselines import BASELINES as MODELS

PERSONAL = ["itemknn", "als", "bpr"]


def _checkerboard(seed: int = 0) -> tuple[TrainData, dict[int, np.ndarray]]:
    """Users 0-19 like items 0-19, users 20-39 like items 20-39; each saw 12 of their 20,
    with timestamps so the history order is known."""
    rng = np.random.default_rng(seed)
    rows, seen = [], {}
    for u in range(40):
        group = np.arange(20) + (20 if u >= 20 else 0)
        items = rng.choice(group, 12, replace=False)
        seen[u] = items
        rows += [(f"u{u:02d}", f"i{i:02d}", "view", t) for t, i in enumerate(items)]
    inter = interactions_from_events(pd.DataFrame(rows, columns=["user_id", "item_id", "type",
                                                                 "timestamp"]))
    history = {inter.users.index(f"u{u:02d}"): np.asarray(inter.items.index(
        [f"i{i:02d}" for i in items])) for u, items in seen.items()}
    return TrainData(inter), history


def _queries(history: dict[int, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    users = np.array(sorted(history))
    return users, [history[int(u)] for u in users]


@pytest.fixture(scope="module")
def board():
    return _checkerboard()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_round_trips_through_json(name):
    cls = MODELS[name]
    config = cls.config_class()
    again = cls.config_class.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="no fields"):
        cls.config_class.from_dict({"not_a_field": 1})


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_gives_equal_scores(name, board, tmp_path):
    data, history = board
    users, hist = _queries(history)
    model = MODELS[name]().fit(data)
    before = model.score(users, hist)
    assert before.shape == (len(users), data.n_items)
    model.save(tmp_path / name)
    assert not list((tmp_path / name).glob("*.pkl"))
    loaded = MODELS[name].load(tmp_path / name)
    np.testing.assert_allclose(loaded.score(users, hist), before, rtol=1e-6)
    assert loaded.config == model.config


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batch_equals_single_and_seen_items_excluded(name, board):
    data, history = board
    users, hist = _queries(history)
    model = MODELS[name]().fit(data)
    batch = model.score(users, hist)
    for r in (0, 17, 39):
        np.testing.assert_allclose(model.score(users[r:r + 1], hist[r:r + 1])[0], batch[r],
                                   rtol=1e-5, atol=1e-6)
    recs = model.recommend(users, hist, k=5)
    for r in range(len(users)):
        assert not set(recs[r].tolist()) & set(hist[r].tolist())


@pytest.mark.parametrize("name", PERSONAL)
def test_checkerboard_oracle(name, board):
    data, history = board
    users, hist = _queries(history)
    config = MODELS[name].config_class()
    if name == "als":  # a rank-2 problem: few factors, real regularisation (else it memorises)
        config = config.replace(factors=4, regularization=1.0, iterations=50)
    elif name == "bpr":
        config = config.replace(factors=8, iterations=300)
    recs = MODELS[name](config).fit(data).recommend(users, hist, k=5)
    own_group = [np.all((recs[r] >= 20) == (users[r] >= 20)) for r in range(len(users))]
    assert np.mean(own_group) >= 0.95, f"{name} recommends across groups: {recs[:3]}"


def test_popularity_orders_by_users(board):
    data, _ = board
    pop = MODELS["pop"]().fit(data)
    counts = data.item_users()
    scores = pop.score(np.array([0]), [np.array([], dtype=np.int64)])[0]
    assert np.argmax(scores) == np.argmax(counts)


def test_unknown_user_and_empty_history(board):
    data, _ = board
    empty = [np.array([], dtype=np.int64)]
    bpr = MODELS["bpr"]().fit(data)
    assert np.isnan(bpr.score(np.array([-1]), empty)).all()  # cannot score: caller falls back
    knn = MODELS["itemknn"]().fit(data)
    assert (knn.score(np.array([-1]), empty) == 0).all()
    als = MODELS["als"]().fit(data)
    assert np.isfinite(als.score(np.array([-1]), [np.array([0, 1])])).all()


@pytest.mark.parametrize("name,bad", [("itemknn", {"neighbors": 0}), ("als", {"factors": 0}),
                                      ("bpr", {"learning_rate": 0.0}),
                                      ("recent-pop", {"half_life_days": -1.0})])
def test_invalid_configs_fail_early(name, bad):
    cls = MODELS[name]
    with pytest.raises(ValueError):
        cls.config_class(**bad)


def test_load_refuses_another_models_files(board, tmp_path):
    data, _ = board
    MODELS["pop"]().fit(data).save(tmp_path / "m")
    with pytest.raises(ValueError, match="holds a 'pop' model"):
        MODELS["als"].load(tmp_path / "m")
