"""SASRec: the model contract (as in test_models.py) plus what a sequence model must learn.

Tiny data built here: users walk a cycle of items (i00 → i01 → … → i09 → i00, or the second
cycle i10 … i19) from a random start, one item a minute. Models run on one thread: fast on
tiny batches and immune to whatever else the machine is doing.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tansuo.data.dataset import Vocabulary
from tansuo.evaluation.metrics import accuracy, top_k
from tansuo.evaluation.protocols import interactions_from_events
from tansuo.models import MODELS
from tansuo.models.base import HistoryContext, TrainData
from tansuo.models.sasrec import SASRec, SASRecConfig, time_bucket

MINUTE = 60_000
SMALL = SASRecConfig(max_len=10, hidden=32, heads=2, inner=64, dropout=0.1, epochs=25,
                     patience=25, batch_size=32, lr=5e-3, threads=1)


def _item(cycle: int, step: int) -> str:
    return f"i{10 * cycle + step % 10:02d}"


def _cycles(n_users: int = 120, seed: int = 0, reverse: bool = False,
            items: Vocabulary | None = None, event: str = "view") -> TrainData:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start, length, cycle = int(rng.integers(10)), int(rng.integers(4, 10)), u % 2
        for t in range(length):
            rows.append((f"u{u:03d}", _item(cycle, start - t if reverse else start + t), event,
                         1_600_000_000_000 + t * MINUTE))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "type", "timestamp"])
    return TrainData(interactions_from_events(frame, items=items))


def _walks(data: TrainData, lengths: tuple[int, ...] = (1, 3, 5), reverse: bool = False
           ) -> tuple[list[np.ndarray], HistoryContext, np.ndarray]:
    """Query histories (new users) along the cycles, their context and the next item."""
    history, types, times, now, target = [], [], [], [], []
    step = -1 if reverse else 1
    for cycle in (0, 1):
        for start in range(10):
            for n in lengths:
                ids = [_item(cycle, start + step * t) for t in range(n + 1)]
                idx = np.asarray(data.items.index(ids), dtype=np.int64)
                history.append(idx[:-1])
                target.append(idx[-1])
                types.append(np.array(["view"] * n, dtype=object))
                times.append(1_700_000_000_000 + np.arange(n, dtype=np.int64) * MINUTE)
                now.append(1_700_000_000_000 + n * MINUTE)
    return history, HistoryContext(types, times, np.array(now)), np.array(target)


def _next_item_rate(model: SASRec, data: TrainData, reverse: bool = False,
                    with_context: bool = True) -> float:
    history, context, target = _walks(data, reverse=reverse)
    recs = model.recommend(np.full(len(history), -1), history, k=1,
                           context=context if with_context else None)
    return float(np.mean(recs[:, 0] == target))


@pytest.fixture(scope="module")
def data() -> TrainData:
    return _cycles()


@pytest.fixture(scope="module")
def fitted(data) -> SASRec:
    return SASRec(SMALL).fit(data)


# -- the contract --------------------------------------------------------------------------


def test_registered():
    assert MODELS["sasrec"] is SASRec


@pytest.mark.parametrize("config", [SASRecConfig(), SMALL.replace(item_repr="id+text")])
def test_config_round_trips_through_json(config):
    again = SASRecConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="no fields"):
        SASRecConfig.from_dict({"not_a_field": 1})


@pytest.mark.parametrize("bad", [
    {"item_repr": "image"}, {"hidden": 30, "heads": 4}, {"max_len": 0}, {"layers": 0},
    {"dropout": 1.0}, {"lr": 0.0}, {"epochs": 0}, {"patience": 0}, {"batch_size": 0},
    {"negative_sampling": "hard"}, {"negatives": 0}, {"time_buckets": 2},
    {"context_dropout": 1.5}, {"device": "tpu"}, {"threads": -1}, {"valid_users": -1},
    {"members": 0}, {"members": 2, "dp_epsilon": 4.0},
])
def test_invalid_configs_fail_early(bad):
    with pytest.raises(ValueError, match="invalid SASRec config"):
        SASRecConfig(**bad)


@pytest.mark.parametrize("repr_", ["text", "id+text"])
def test_text_modes_need_item_text(repr_, data):
    with pytest.raises(ValueError, match="item_text"):
        SASRec(SMALL.replace(item_repr=repr_, epochs=1)).fit(data)


def test_save_load_gives_equal_scores(fitted, data, tmp_path):
    history, context, _ = _walks(data)
    users = np.full(len(history), -1)
    before = fitted.score(users, history, context)
    before_plain = fitted.score(users, history)
    assert before.shape == (len(history), data.n_items) and before.dtype == np.float32
    fitted.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = SASRec.load(tmp_path / "m")
    assert loaded.config == fitted.config
    np.testing.assert_array_equal(loaded.score(users, history, context), before)
    np.testing.assert_array_equal(loaded.score(users, history), before_plain)
    np.testing.assert_array_equal(loaded.item_vectors(), fitted.item_vectors())
    assert loaded.best_epoch == fitted.best_epoch
    assert loaded.training_log == fitted.training_log


def test_batch_equals_single_and_seen_items_excluded(fitted, data):
    history, context, _ = _walks(data, lengths=(0, 2, 7))
    users = np.arange(len(history))
    batch = fitted.score(users, history, context)
    for r in (0, 1, 2, 17, len(history) - 1):
        single = fitted.score(users[r:r + 1], history[r:r + 1], context[r:r + 1])
        np.testing.assert_allclose(single[0], batch[r], rtol=1e-5, atol=1e-5)
    recs = fitted.recommend(users, history, k=5, context=context)
    for r in range(len(users)):
        assert not set(recs[r].tolist()) & set(history[r].tolist())


def test_unknown_user_and_empty_history(fitted, data):
    empty = [np.array([], dtype=np.int64)] * 2
    scores = fitted.score(np.array([-1, -1]), empty)
    assert np.isfinite(scores).all()  # a learned "empty" state, never NaN
    np.testing.assert_array_equal(scores[0], scores[1])
    # the user index plays no part: only the history does
    hist = [np.array([0, 1, 2])]
    np.testing.assert_array_equal(fitted.score(np.array([-1]), hist),
                                  fitted.score(np.array([3]), hist))
    # items outside the vocabulary in a history are ignored, not an error
    np.testing.assert_allclose(fitted.score(np.array([-1]), [np.array([0, 1, 2, 10_000])]),
                               fitted.score(np.array([-1]), hist), rtol=1e-6)


def test_score_is_user_vectors_dot_item_vectors(fitted, data):
    history, context, _ = _walks(data)
    users = np.full(len(history), -1)
    u = fitted.user_vectors(users, history, context)
    v = fitted.item_vectors()
    assert u.shape == (len(history), SMALL.hidden) and v.shape == (data.n_items, SMALL.hidden)
    np.testing.assert_allclose(fitted.score(users, history, context), u @ v.T, rtol=1e-5,
                               atol=1e-5)


# -- what it learns ------------------------------------------------------------------------

@pytest.mark.parametrize("lengths", [(0, 2, 7), (12, 15), (9,), (0,), (3, 30, 1)])
def test_query_path_equals_the_full_forward_pass(fitted, data, lengths):
    """``_Net.last`` (queries: padding-only columns dropped, no mask without padding, the last
    block on the last position only) gives the last position of the training forward pass,
    for batches with and without padding and histories longer than max_len (10)."""
    rng = np.random.default_rng(len(lengths))
    history = [rng.integers(0, data.n_items, size=n) for n in lengths]
    context = HistoryContext([np.array(["view", "click"] * 20, dtype=object)[:n]
                              for n in lengths],
                             [1_700_000_000_000 + np.arange(n, dtype=np.int64) * MINUTE
                              for n in lengths],
                             np.full(len(lengths), 1_800_000_000_000))
    net = fitted.net
    net.eval()
    for ctx in (context, None):
        arrays = [torch.as_tensor(a) for a in fitted._inputs(history, ctx)]
        with torch.inference_mode():
            full = net(*arrays)[:, -1]
            last = net.last(*arrays)
        assert last.shape == (len(lengths), SMALL.hidden)
        np.testing.assert_allclose(last.numpy(), full.numpy(), rtol=1e-5, atol=1e-5)
        # what the service calls: history rows from the cached item table
        np.testing.assert_allclose(fitted.user_vectors(np.zeros(len(lengths)), history, ctx),
                                   full.numpy(), rtol=1e-5, atol=1e-5)


def test_learns_the_cycle(fitted, data):
    assert _next_item_rate(fitted, data) >= 0.9
    assert _next_item_rate(fitted, data, with_context=False) >= 0.8
    log = fitted.training_log
    assert [e["epoch"] for e in log] == list(range(1, len(log) + 1))
    assert {"loss", "valid_ndcg@10", "seconds", "softmax"} <= set(log[0])
    assert log[-1]["loss"] < log[0]["loss"]
    assert fitted.best_epoch >= 1 and fitted.seconds_to_best > 0


def test_sampled_softmax_path_learns(data):
    model = SASRec(SMALL.replace(sampled_softmax_above=5, negatives=12)).fit(data)
    assert {e["softmax"] for e in model.training_log} == {"sampled"}
    assert _next_item_rate(model, data) >= 0.9
    uniform = SASRec(SMALL.replace(sampled_softmax_above=5, negatives=8, epochs=3,
                                   negative_sampling="uniform")).fit(data)
    assert np.isfinite([e["loss"] for e in uniform.training_log]).all()


def test_text_mode_scores_a_cold_item():
    """i99 has no interactions; its text is i03's. 'text' gives it i03's vector; 'id+text'
    gives it the text part alone."""
    ids = [_item(c, s) for c in (0, 1) for s in range(10)] + ["i99"]
    vocab = Vocabulary.from_ids(ids)
    data = _cycles(items=vocab)
    rng = np.random.default_rng(1)
    text = rng.normal(size=(len(vocab), 16)).astype(np.float32)
    cold, hot = vocab.index("i99"), vocab.index("i03")
    text[cold] = text[hot]
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    data = TrainData(data.interactions, item_text=text)
    history = [np.asarray(vocab.index(["i00", "i01", "i02"]), dtype=np.int64)]

    model = SASRec(SMALL.replace(item_repr="text")).fit(data)
    scores = model.score(np.array([-1]), history)[0]
    np.testing.assert_allclose(scores[cold], scores[hot], rtol=1e-5)
    assert set(model.recommend(np.array([-1]), history, k=2)[0].tolist()) == {cold, hot}

    both = SASRec(SMALL.replace(item_repr="id+text")).fit(data)
    vectors = both.item_vectors()
    with torch.inference_mode():
        text_part = both.net.text_proj(torch.as_tensor(text)).numpy()
    np.testing.assert_allclose(vectors[cold], text_part[cold], rtol=1e-6)
    assert not np.allclose(vectors[hot], text_part[hot])  # seen items learned an ID part
    scores = both.score(np.array([-1]), history)[0]
    others = np.delete(scores, [cold, hot, *history[0].tolist()])
    assert scores[cold] > np.median(others)
    assert _next_item_rate(both, data) >= 0.9


def test_event_types_and_time_gaps_change_scores(fitted, data):
    hist = [np.array([0, 1, 2])]
    times = [1_700_000_000_000 + np.arange(3) * MINUTE]

    def score(model: SASRec, last: str, now_gap_ms: int) -> np.ndarray:
        ctx = HistoryContext([np.array(["view", "view", last], dtype=object)], times,
                             np.array([times[0][-1] + now_gap_ms]))
        return model.score(np.array([-1]), hist, ctx)[0]

    view, purchase = score(fitted, "view", MINUTE), score(fitted, "purchase", MINUTE)
    assert not np.allclose(view, purchase)
    assert not np.allclose(view, score(fitted, "view", 30 * 86_400_000))
    unknown = score(fitted, "no-such-type", MINUTE)  # an unknown type has its own slot
    assert np.isfinite(unknown).all() and not np.allclose(unknown, view)
    plain = SASRec(SMALL.replace(event_types=False, time_gaps=False, epochs=2)).fit(data)
    np.testing.assert_array_equal(score(plain, "view", MINUTE),
                                  score(plain, "purchase", 30 * 86_400_000))


def test_time_buckets():
    b = time_bucket(np.array([-5, 0, 999, 1000, 60_000, 86_400_000, 10**15]), 64)
    assert b[0] == b[1] == 2 and b[2] == 3 and b[3] == 4  # 2 + ⌊2·log2(1 + s)⌋
    assert np.all(np.diff(b[1:]) >= 0) and b[-1] == 63


# -- training control ----------------------------------------------------------------------


def test_early_stopping_on_a_plateau(data):
    # a learning rate too small to change any ranking: validation NDCG never improves
    model = SASRec(SMALL.replace(lr=1e-12, epochs=20, patience=2)).fit(data)
    assert len(model.training_log) == 3 and model.best_epoch == 1


def test_early_stopping_restores_the_best_weights(data):
    model = SASRec(SMALL.replace(epochs=40, patience=3, lr=1e-2, dropout=0.0)).fit(data)
    log = model.training_log
    ndcgs = [e["valid_ndcg@10"] for e in log]
    assert len(log) < 40 and model.best_epoch == int(np.argmax(ndcgs)) + 1
    assert len(log) == model.best_epoch + 3
    # recompute the internal validation (each user's last training item) with the public API
    inter = data.interactions
    off = inter.offsets()
    users = np.flatnonzero(np.diff(off) >= 3)
    history = [inter.item[off[u]:off[u + 1] - 1] for u in users]
    targets = [inter.item[off[u + 1] - 1:off[u + 1]] for u in users]
    context = HistoryContext([inter.event_type[off[u]:off[u + 1] - 1] for u in users],
                             [inter.timestamp[off[u]:off[u + 1] - 1] for u in users],
                             np.array([inter.timestamp[off[u + 1] - 1] for u in users]))
    ranked = top_k(model.score(users, history, context), 10, history)
    ndcg = accuracy(ranked, targets, 10)["ndcg@10"].mean()
    assert ndcg == pytest.approx(max(ndcgs), abs=1e-6)


def test_same_seed_same_model(data):
    config = SMALL.replace(epochs=3)
    history, context, _ = _walks(data)
    users = np.full(len(history), -1)
    a = SASRec(config).fit(data).score(users, history, context)
    b = SASRec(config).fit(data).score(users, history, context)
    np.testing.assert_array_equal(a, b)
    c = SASRec(config.replace(seed=1)).fit(data).score(users, history, context)
    assert not np.allclose(a, c)


def test_threads_and_global_rng_are_left_alone(data):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model = SASRec(SMALL.replace(epochs=1, threads=1 if threads > 1 else 2)).fit(data)
    model.score(np.array([-1]), [np.array([0])])
    assert torch.get_num_threads() == threads
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


def test_ensemble_scores_the_mean_of_its_members(data, tmp_path):
    config = SMALL.replace(epochs=3, members=2)
    history, context, _ = _walks(data)
    users = np.full(len(history), -1)
    ensemble = SASRec(config).fit(data)
    alone = [SASRec(config.replace(members=1, seed=s)).fit(data) for s in (0, 1000)]
    assert [m.config.seed for m in ensemble.members] == [0, 1000]
    for member, single in zip(ensemble.members, alone, strict=True):
        np.testing.assert_array_equal(member.score(users, history, context),
                                      single.score(users, history, context))
    mean = np.mean([m.score(users, history, context) for m in alone], axis=0)
    np.testing.assert_allclose(ensemble.score(users, history, context), mean, rtol=1e-5,
                               atol=1e-5)
    assert ensemble.user_vectors(users, history, context).shape == (len(history), 64)
    assert ensemble.item_vectors().shape == (data.n_items, 64)
    info = ensemble.fit_info()
    assert info["members"] == 2 and len(info["best_epoch"]) == 2
    assert info["epochs_run"] == len(ensemble.training_log) == 6
    assert {e["member"] for e in ensemble.training_log} == {0, 1}
    assert ensemble.seconds_to_best == sum(m.seconds_to_best for m in ensemble.members) > 0
    ensemble.save(tmp_path / "m")
    loaded = SASRec.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(users, history, context),
                                  ensemble.score(users, history, context))
    assert loaded.training_log == ensemble.training_log
    loaded.fine_tune(data, epochs=1)  # every member continues
    assert [sum(e["phase"] == "fine_tune" for e in m.training_log) for m in loaded.members] \
        == [1, 1]
    assert not np.allclose(loaded.item_vectors(), ensemble.item_vectors())


@pytest.mark.parametrize("item_repr", ["id", "id+text"])
def test_ensemble_runs_its_members_in_one_pass(data, item_repr):
    """The stacked pass gives each member's own vectors (side by side, / members), with and
    without padding and context, and follows the members when their weights change."""
    rng = np.random.default_rng(3)
    text = rng.normal(size=(data.n_items, 16)).astype(np.float32)
    train = TrainData(data.interactions, item_text=text)
    ensemble = SASRec(SMALL.replace(epochs=2, members=3, item_repr=item_repr)).fit(train)
    history, context, _ = _walks(data, lengths=(0, 4, 12))
    users = np.full(len(history), -1)

    def side_by_side(ctx):
        return np.concatenate([m.user_vectors(users, history, ctx) for m in ensemble.members],
                              axis=1) / np.float32(3)

    for ctx in (context, None):
        np.testing.assert_allclose(ensemble.user_vectors(users, history, ctx),
                                   side_by_side(ctx), rtol=1e-5, atol=1e-6)
    one = ensemble.user_vectors(users[:1], history[-1:], None)  # a single full-length query
    np.testing.assert_allclose(one, side_by_side(None)[-1:], rtol=1e-5, atol=1e-6)
    many = ensemble.user_vectors(np.full(12 * len(history), -1), history * 12, None)
    assert len(many) > 1024 // 3  # in several chunks
    np.testing.assert_allclose(many, np.tile(side_by_side(None), (12, 1)), rtol=1e-5,
                               atol=1e-6)
    before = ensemble.user_vectors(users, history, context)
    ensemble.fine_tune(train, epochs=1)
    after = ensemble.user_vectors(users, history, context)
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, side_by_side(context), rtol=1e-5, atol=1e-6)


def test_refit_on_full(data):
    model = SASRec(SMALL.replace(epochs=4, refit_on_full=True)).fit(data)
    refit = [e for e in model.training_log if e["phase"] == "refit"]
    assert len(refit) == model.best_epoch and "valid_ndcg@10" not in refit[0]
    assert _next_item_rate(model, data) >= 0.5


def test_fine_tune_continues_on_new_data(fitted, data, tmp_path):
    fitted.save(tmp_path / "m")
    model = SASRec.load(tmp_path / "m")  # leave the shared fixture untouched
    backwards = _cycles(seed=7, reverse=True, items=data.items)
    before_rate = _next_item_rate(model, backwards, reverse=True)
    before = model.item_vectors()
    logged = len(model.training_log)
    model.fine_tune(backwards, epochs=15)
    assert not np.allclose(model.item_vectors(), before)
    assert _next_item_rate(model, backwards, reverse=True) >= max(0.8, before_rate + 0.3)
    tuned = model.training_log[logged:]
    assert len(tuned) == 15 and {e["phase"] for e in tuned} == {"fine_tune"}
    assert tuned[-1]["loss"] < tuned[0]["loss"]
    other = _cycles(items=Vocabulary.from_ids([*data.items.ids.tolist(), "i99"]))
    with pytest.raises(ValueError, match="vocabulary"):
        model.fine_tune(other)
    with pytest.raises(ValueError, match="fit"):
        SASRec(SMALL).fine_tune(data)


def test_text_modes_ask_for_item_text():
    from tansuo.models.sasrec import SASRec, SASRecConfig

    assert not SASRec(SASRecConfig(item_repr="id")).wants_text()
    assert SASRec(SASRecConfig(item_repr="text")).wants_text()
    assert SASRec(SASRecConfig(item_repr="id+text")).wants_text()


@pytest.mark.parametrize("members", [1, 2])
def test_one_shopper_queries_through_the_onnx_graph(data, tmp_path, monkeypatch, members):
    """attach_query_graph: one-row CPU queries run the exported graph (ONNX Runtime) and
    equal the torch path; the graph is saved and read back; batches, and any query after
    the weights change, keep the torch path."""
    from tansuo.models.query_graph import QueryGraph

    rng = np.random.default_rng(5)
    text = rng.normal(size=(data.n_items, 16)).astype(np.float32)
    train = TrainData(data.interactions, item_text=text)
    model = SASRec(SMALL.replace(epochs=2, members=members, item_repr="id+text")).fit(train)
    history, context, _ = _walks(data, lengths=(0, 1, 4, 12))
    users = np.full(len(history), -1)
    torch_path = model.user_vectors(users, history, context)
    ran = []
    original = QueryGraph.__call__
    monkeypatch.setattr(QueryGraph, "__call__",
                        lambda self, a: ran.append(1) or original(self, a))
    path = tmp_path / "query.onnx"
    model.attach_query_graph(path)
    assert path.stat().st_size > 0
    for ctx in (context, None):
        before = len(ran)
        want = model.user_vectors(users, history, ctx)  # a batch: torch, as before
        assert len(ran) == before
        if ctx is context:
            np.testing.assert_array_equal(want, torch_path)
        for r in range(len(history)):
            one_ctx = None if ctx is None else HistoryContext(
                [ctx.types[r]], [ctx.timestamps[r]], ctx.now[r:r + 1])
            got = model.user_vectors(users[:1], history[r:r + 1], one_ctx)
            np.testing.assert_allclose(got, want[r:r + 1], rtol=1e-5, atol=1e-5)
    assert len(ran) == 2 * len(history)
    # read back, not exported again
    monkeypatch.setattr(QueryGraph, "export", staticmethod(lambda *a, **k: 1 / 0))
    model.attach_query_graph(path)
    model.fine_tune(train, epochs=1)  # new weights: the graph no longer applies
    ran.clear()
    after = model.user_vectors(users[:1], history[-1:], None)
    assert not ran
    np.testing.assert_allclose(after, model.user_vectors(users, history, None)[-1:],
                               rtol=1e-5, atol=1e-6)
