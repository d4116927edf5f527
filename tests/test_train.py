"""`tansuo train` and the versioned model registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tansuo.errors import TansuoError
from tansuo.models.registry import ModelRegistry
from test_cli import run
from test_evaluate_cli import _store_csv


def test_train_saves_versions_and_latest(tmp_path):
    home = tmp_path / "home"
    run(home, "import", "events", str(_store_csv(tmp_path)))
    first = json.loads(run(home, "train", "--json").stdout)
    assert first["model"] == "sasrec" and first["latest"] and first["users"] == 60
    second = json.loads(run(home, "train", "--model", "als:factors=8", "--config",
                            '{"iterations": 3}', "--no-promote", "--json").stdout)
    assert not second["latest"]
    listing = json.loads(run(home, "models", "--json").stdout)
    assert listing["latest"] == first["version"] and len(listing["versions"]) == 2
    registry = ModelRegistry(home)
    trained = registry.load()
    assert trained.version == first["version"] and trained.model.name == "sasrec"
    als = registry.load(second["version"])
    assert als.model.config.factors == 8 and als.model.config.iterations == 3
    user = als.users.index("u0")
    history = np.asarray(als.items.index(["i1", "i2"]))
    recs = als.model.recommend(np.array([user]), [history], k=3)
    assert recs.shape == (1, 3) and not set(recs[0]) & set(history)
    registry.promote(second["version"])
    assert registry.load().version == second["version"]


def test_train_errors(tmp_path):
    home = tmp_path / "home"
    proc = run(home, "train", check=False)
    assert proc.returncode == 1 and "no events to train on" in proc.stderr
    proc = run(home, "train", "--model", "magic", check=False)
    assert proc.returncode == 2 and "unknown model 'magic'; available:" in proc.stderr
    proc = run(home, "train", "--model", "als:factors=lots", check=False)
    assert proc.returncode == 2 and "field 'factors': expected int" in proc.stderr
    proc = run(home, "train", "--model", "als", "--config", '{"factorz": 2}', check=False)
    assert proc.returncode == 2 and "no fields ['factorz']" in proc.stderr
    with pytest.raises(TansuoError, match="run `tansuo train` first"):
        ModelRegistry(home).load()
    # --evaluate needs users with three interactions (train, validation, test)
    (tmp_path / "two.csv").write_text("user_id,item_id,type,timestamp\n" + "".join(
        f"u{u},i{(u + k) % 5},view,{1_767_225_600 + 60 * k}\n" for u in range(4)
        for k in range(2)))
    run(home, "import", "events", str(tmp_path / "two.csv"))
    proc = run(home, "train", "--model", "pop", "--evaluate", check=False)
    assert proc.returncode == 1 and "no user has the 3 interactions" in proc.stderr
    assert not ModelRegistry(home).versions()
    with pytest.raises(TansuoError, match="no trained model 'nope'"):
        ModelRegistry(home).promote("nope")
