"""`tansuo evaluate` end to end: on a bundled dataset, on the store, with tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_cli import run


@pytest.mark.realdata
@pytest.mark.slow
def test_evaluate_movielens_json_and_html(tmp_path):
    proc = run(tmp_path / "home", "evaluate", "--dataset", "movielens-small", "--models",
               "pop,itemknn,als", "--protocol", "loo", "--k", "10,20", "--json",
               str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"))
    assert "itemknn" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dataset"] == "movielens-small" and report["protocol"] == "loo"
    assert report["split"]["evaluated_users"] == 671
    for name in ("pop", "itemknn", "als"):
        r = report["models"][name]
        for m in ("ndcg@10", "hr@10", "mrr@10", "recall@10", "ndcg@20"):
            lo, hi = r["ci"][m]
            assert lo <= r["metrics"][m] <= hi
        assert {"train_seconds", "score_seconds", "peak_rss_mb"} <= set(r)
        assert {"coverage@10", "novelty@10", "ild_category@10", "ild_embedding@10",
                "arp@10", "gini@10"} <= set(r["beyond_accuracy"])
        assert set(r["segments"]) == {"cold (<5)", "mid (5-49)", "heavy (>=50)"}
    knn, pop = report["models"]["itemknn"], report["models"]["pop"]
    assert knn["metrics"]["ndcg@10"] > 1.5 * pop["metrics"]["ndcg@10"]
    assert report["paired"]["itemknn vs pop"]["p_value"] < 0.05
    # popularity is the most concentrated: highest Gini, lowest coverage
    assert pop["beyond_accuracy"]["gini@10"] > knn["beyond_accuracy"]["gini@10"]
    html = (tmp_path / "r.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "itemknn" in html


def _store_csv(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,type,timestamp"]
    for u in range(60):
        group = 0 if u < 30 else 1
        for t, i in enumerate(rng.choice(20, 10, replace=False)):
            lines.append(f"u{u},i{group * 20 + i},view,{1_700_000_000 + u * 1000 + t}")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluate_the_store_with_tuning(tmp_path):
    home = tmp_path / "home"
    run(home, "import", "events", str(_store_csv(tmp_path)))
    proc = run(home, "evaluate", "--models", "recent-pop,itemknn", "--k", "5", "--tune",
               "--json", str(tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dataset"] == "store" and report["split"]["evaluated_users"] == 60
    tuning = report["models"]["itemknn"]["tuning"]
    assert len(tuning) == 18  # 2 neighbours × 3 shrinks × 3 history lengths
    best = max(tuning, key=lambda t: t["ndcg@10"])
    assert report["models"]["itemknn"]["config"] == best["config"]
    assert "recent-pop" in proc.stdout


def test_evaluate_model_variants_over_seeds(tmp_path):
    home = tmp_path / "home"
    run(home, "import", "events", str(_store_csv(tmp_path)))
    proc = run(home, "evaluate", "--models", "itemknn,itemknn:neighbors=2:last_n=3", "--k", "5",
               "--seeds", "0,1,2", "--json", str(tmp_path / "r.json"))
    assert "itemknn:neighbors=2:last_n=3" in proc.stdout and "3 seeds" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    variant = report["models"]["itemknn:neighbors=2:last_n=3"]
    assert variant["config"]["neighbors"] == 2 and variant["config"]["last_n"] == 3
    assert [s["seed"] for s in variant["seeds"]] == [0, 1, 2]
    mean = np.mean([s["metrics"]["ndcg@5"] for s in variant["seeds"]])
    assert variant["metrics"]["ndcg@5"] == pytest.approx(mean, abs=1e-6)
    assert report["models"]["itemknn"]["config"]["neighbors"] == 200


def test_evaluate_errors(tmp_path):
    home = tmp_path / "home"
    proc = run(home, "evaluate", check=False)
    assert proc.returncode == 1 and "no events to evaluate" in proc.stderr
    proc = run(home, "evaluate", "--dataset", "movielens-small", "--models", "pop,magic",
               check=False)
    assert proc.returncode == 2 and "unknown model 'magic'" in proc.stderr
    proc = run(home, "evaluate", "--dataset", "movielens-small", "--models",
               "itemknn:neighbours=5", check=False)
    assert proc.returncode == 2 and "has no field 'neighbours'" in proc.stderr
    proc = run(home, "evaluate", "--dataset", "movielens-small", "--models",
               "itemknn:neighbors=many", check=False)
    assert proc.returncode == 2 and "field 'neighbors': expected int, got 'many'" in proc.stderr
    for bad in ("x", "1,1", ","):
        proc = run(home, "evaluate", "--dataset", "movielens-small", "--seeds", bad,
                   check=False)
        assert proc.returncode == 2 and "--seeds" in proc.stderr, bad
    proc = run(home, "evaluate", "--dataset", "nope", check=False)
    assert proc.returncode == 2 and "cannot evaluate on dataset 'nope'" in proc.stderr
    proc = run(home, "evaluate", "--dataset", "movielens-small", "--protocol", "random",
               check=False)
    assert proc.returncode == 2 and "expected loo, temporal or cold-items" in proc.stderr
