"""Off-policy estimates from the service's served-slate log, and `tansuo ope`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tansuo.exploration.served import evaluate_served, load_served
from test_cli import run


def _log(tmp_path, records):
    path = tmp_path / "served.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _clicks(pairs):
    return pd.DataFrame({"request_id": [r for r, _ in pairs], "position": [p for _, p in pairs],
                         "type": ["click"] * len(pairs)})


def test_hand_computed_greedy_and_logged_estimates(tmp_path):
    # r1: greedy would show A,B; the policy explored at position 1 (showed C with p = 0.2)
    # r2: the policy showed the greedy slate (propensities 0.9, 0.8)
    path = _log(tmp_path, [
        {"request_id": "r1", "items": ["A", "C"], "propensities": [0.9, 0.2],
         "exploit": ["A", "B"]},
        {"request_id": "r2", "items": ["A", "B"], "propensities": [0.9, 0.8],
         "exploit": ["A", "B"]},
    ])
    log = load_served(path, _clicks([("r1", 1), ("r2", 0), ("x", 0)]))
    assert log.rounds == 4 and log.requests == 2
    assert log.reward.tolist() == [0, 1, 1, 0] and log.greedy_match.tolist() == [1, 0, 1, 1]
    logged = evaluate_served(log, "logged", n_boot=50)
    assert logged["ipw"].value == pytest.approx(0.5)  # π_e = logging policy: observed CTR
    greedy = evaluate_served(log, "greedy", n_boot=50)
    # weights 1/0.9, 0, 1/0.9, 1/0.8; clicks at rounds 2 and 3 → IPW = (0 + 0 + 1/0.9 + 0) / 4
    assert greedy["ipw"].value == pytest.approx((1 / 0.9) / 4)
    w = np.array([1 / 0.9, 0, 1 / 0.9, 1 / 0.8])
    assert greedy["snips"].value == pytest.approx((1 / 0.9) / w.sum())


def test_bad_logs_and_options(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_served(tmp_path / "missing.jsonl", _clicks([]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"request_id": "r"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: not a served-slate record"):
        load_served(bad, _clicks([]))
    log = load_served(_log(tmp_path, [{"request_id": "r", "items": ["A"],
                                       "propensities": [1.0], "exploit": ["A"]}]), _clicks([]))
    with pytest.raises(ValueError, match="expected greedy or logged"):
        evaluate_served(log, "random")
    with pytest.raises(ValueError, match="need a reward model"):
        evaluate_served(log, "greedy", ("dr",))


@pytest.mark.realdata
def test_ope_cli_on_obd_and_errors(tmp_path):
    rows = json.loads(run(tmp_path, "ope", "--dataset", "obd", "--campaign", "women",
                          "--estimators", "ipw,snips", "--draws", "20000", "--n-boot", "50",
                          "--json").stdout)
    assert [r["estimator"] for r in rows] == ["ipw", "snips"]
    assert rows[0]["truth"] == pytest.approx(0.0046) and rows[0]["ci"][0] <= rows[0]["estimate"]
    for args, message in [(["--dataset", "movielens"], "only obd"),
                          (["--dataset", "obd", "--estimators", "magic"], "expected some of"),
                          (["--dataset", "obd", "--campaign", "kids"], "--campaign 'kids'"),
                          (["--log", str(tmp_path / "none.jsonl")], "no served-slate log")]:
        proc = run(tmp_path, "ope", *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
