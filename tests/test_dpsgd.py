"""SASRec with user-level DP-SGD (Opacus): runs, spends at most its ε, saves and loads, and
leaves the non-DP path and plain imports alone. Tiny data, one thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from tansuo.evaluation.protocols import interactions_from_events
from tansuo.models.base import TrainData
from tansuo.models.sasrec import SASRec, SASRecConfig

try:
    import opacus  # noqa: F401
    HAVE_OPACUS = True
except ImportError:  # pragma: no cover - CI installs the dp extra
    HAVE_OPACUS = False

needs_opacus = pytest.mark.skipif(
    not HAVE_OPACUS, reason="opacus is not installed (pip install 'tansuo[dp]'); DP-SGD "
    "training cannot run")

MINUTE = 60_000
TINY = dict(max_len=8, hidden=16, heads=2, inner=32, dropout=0.1, epochs=3, batch_size=8,
            lr=5e-3, threads=1)


def _data(n_users: int = 40, n_items: int = 24, seed: int = 0) -> TrainData:
    """Users walk a cycle of items from a random start; some walk long enough to span
    several windows of ``max_len``."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start, length = int(rng.integers(n_items)), int(rng.integers(3, 20))
        for t in range(length):
            rows.append((f"u{u:02d}", f"i{(start + t) % n_items:02d}", "view",
                         1_600_000_000_000 + t * MINUTE))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "type", "timestamp"])
    return TrainData(interactions_from_events(frame))


QUERIES = [np.array([0, 1, 2]), np.array([5]), np.array([], dtype=np.int64)]


def _scores(model: SASRec) -> np.ndarray:
    return model.score(np.full(len(QUERIES), -1), QUERIES)


@pytest.fixture(scope="module")
def data() -> TrainData:
    return _data()


@pytest.fixture(scope="module")
def private(data) -> SASRec:
    if not HAVE_OPACUS:
        pytest.skip("opacus is not installed (pip install 'tansuo[dp]')")
    return SASRec(SASRecConfig(**TINY, dp_epsilon=4.0)).fit(data)


@needs_opacus
def test_dp_fit_spends_at_most_its_epsilon(private, data):
    info = private.fit_info()["dp"]
    assert info["unit"] == "user"
    assert info["target_epsilon"] == 4.0
    assert 0 < info["epsilon"] <= 4.0 + 0.05
    assert info["delta"] == pytest.approx(1 / (10 * data.n_users))
    assert info["max_grad_norm"] == 1.0
    assert info["noise_multiplier"] > 0
    assert 0 < info["sample_rate"] <= 1
    assert info["epochs"] == 3 and private.best_epoch == 3
    assert info["steps"] == 3 * round(1 / info["sample_rate"])
    log = private.training_log
    assert [e["epoch"] for e in log] == [1, 2, 3]
    spent = [e["dp_epsilon_spent"] for e in log]
    assert spent == sorted(spent) and spent[-1] == pytest.approx(info["epsilon"], abs=1e-5)
    assert all(set(e) == {"phase", "epoch", "softmax", "dp_epsilon_spent", "seconds"}
               for e in log)  # nothing unnoised: no loss, no validation, no batch sizes


@needs_opacus
def test_dp_scores_finite_and_save_load_round_trip(private, tmp_path):
    before = _scores(private)
    assert before.shape == (len(QUERIES), private.n_items) and np.isfinite(before).all()
    loaded = SASRec.load(private.save(tmp_path / "dp"))
    np.testing.assert_array_equal(_scores(loaded), before)
    assert loaded.fit_info()["dp"] == private.fit_info()["dp"]
    assert set(loaded.net.state_dict()) == set(SASRec(SASRecConfig(**TINY)).fit(
        _data(12)).net.state_dict())  # same keys as a non-DP model
    with pytest.raises(ValueError, match="fine_tune"):
        loaded.fine_tune(_data(), epochs=1)


@needs_opacus
def test_dp_fit_is_seeded(private, data):
    again = SASRec(SASRecConfig(**TINY, dp_epsilon=4.0)).fit(data)
    np.testing.assert_array_equal(_scores(again), _scores(private))
    other = SASRec(SASRecConfig(**TINY, dp_epsilon=4.0, seed=1)).fit(data)
    assert not np.array_equal(_scores(other), _scores(private))


@needs_opacus
def test_smaller_epsilon_means_more_noise(data):
    loose = SASRec(SASRecConfig(**{**TINY, "epochs": 1}, dp_epsilon=16.0)).fit(data)
    tight = SASRec(SASRecConfig(**{**TINY, "epochs": 1}, dp_epsilon=1.0)).fit(data)
    assert tight.dp_info["noise_multiplier"] > loose.dp_info["noise_multiplier"]
    assert tight.dp_info["epsilon"] <= 1.0 + 0.05


@needs_opacus
def test_per_user_gradients_are_exact(data):
    """The vmap'd per-sample gradients equal each window's own autograd gradient."""
    from tansuo.models.sasrec import _call, _DPObjective, _tensors, _windows
    from tansuo.privacy.dpsgd import per_sample_grads

    model = SASRec(SASRecConfig(**{**TINY, "dropout": 0.0}))
    torch.manual_seed(0)
    model._build(data)
    net = model.net
    net.seen.fill_(True)
    net.id_mask.fill_(1.0)
    win = _windows(data.interactions, model.config.time_buckets, model.config.max_len)
    rows = np.array([0, 3, 7])
    batch = _tensors(win, rows, np.zeros(3, dtype=bool), torch.device("cpu"))
    objective = _DPObjective(net)
    _, grads = per_sample_grads(objective, _call, batch)
    for i in range(3):
        net.zero_grad()
        objective(*(t[i] for t in batch)).backward()
        for name, p in net.named_parameters():
            np.testing.assert_allclose(grads[f"net.{name}"][i].numpy(), p.grad.numpy(),
                                       rtol=1e-4, atol=1e-6, err_msg=name)


def test_non_dp_path_unchanged(data):
    """dp_epsilon=None is the plain model: same weights as a config that never mentions DP,
    whatever ran before (a DP fit does not disturb the global RNG or the result)."""
    plain = SASRec(SASRecConfig(**TINY, patience=3)).fit(data)
    if HAVE_OPACUS:
        SASRec(SASRecConfig(**{**TINY, "epochs": 1}, dp_epsilon=8.0)).fit(data)
    off = SASRec(SASRecConfig(**TINY, patience=3, dp_epsilon=None)).fit(data)
    np.testing.assert_array_equal(_scores(off), _scores(plain))
    assert off.dp_info is None and "dp" not in off.fit_info()
    assert "valid_ndcg@10" in off.training_log[0]


def test_dp_config_checks_and_spec_strings():
    assert SASRecConfig(dp_epsilon="4").dp_epsilon == 4.0  # type: ignore[arg-type]
    assert SASRecConfig(dp_epsilon="none").dp_epsilon is None  # type: ignore[arg-type]
    assert SASRecConfig(dp_epsilon="inf").dp_epsilon is None  # type: ignore[arg-type]
    for bad in (dict(dp_epsilon=0.0), dict(dp_delta=1.0), dict(dp_max_grad_norm=0.0),
                dict(dp_epsilon=1.0, refit_on_full=True), dict(dp_epsilon="abc")):
        with pytest.raises(ValueError):
            SASRecConfig(**bad)  # type: ignore[arg-type]
    cfg = SASRecConfig(dp_epsilon=2.0, dp_delta=1e-5)
    assert SASRecConfig.from_dict(cfg.to_dict()) == cfg


def test_import_does_not_load_opacus():
    code = textwrap.dedent("""
        import sys
        import tansuo, tansuo.models.sasrec, tansuo.privacy.dpsgd
        from tansuo.models.sasrec import SASRec, SASRecConfig
        SASRecConfig(dp_epsilon=1.0)
        print(sorted(m for m in sys.modules if m.split('.')[0] == 'opacus'))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_missing_opacus_is_a_clear_error(data, monkeypatch):
    from tansuo.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "opacus", None)  # import opacus → ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'tansuo\[dp\]'"):
        SASRec(SASRecConfig(**TINY, dp_epsilon=1.0)).fit(data)


@needs_opacus
def test_empty_poisson_batches_are_noise_steps():
    """10 users, 1 expected a step: several steps sample nobody, and still count."""
    model = SASRec(SASRecConfig(**{**TINY, "batch_size": 1, "epochs": 1},
                                dp_epsilon=8.0)).fit(_data(10))
    assert model.dp_info["steps"] == 10 and model.dp_info["epsilon"] <= 8.0 + 0.05
    assert np.isfinite(_scores(model)).all()
