"""The dashboard's insight API (``/v1/insights/...``, ``/v1/users/{id}/events``,
``/v1/items/{id}``) on a tiny hand-built shop behind a real uvicorn server, and the daily
activity counts on both stores."""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest

from tansuo.config import Settings
from tansuo.data.importer import import_frame
from tansuo.data.stats import daily_activity
from tansuo.service.app import create_app
from tansuo.service.auth import KeyStore
from tansuo.service.engine import Engine
from tansuo.service.insights import latest_evaluation_path
from test_cli import run
from test_service import T0, _data, _Server


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("insights")
    _data(tmp)
    home = tmp / "home"
    run(home, "import", "items", str(tmp / "items.csv"))
    run(home, "import", "events", str(tmp / "events.csv"))
    engine = Engine(Settings(home=home, rate_limit_per_minute=100_000))
    keys = KeyStore(home)
    tokens = {s: keys.create([s])[0] for s in ("read", "ingest")}
    app = create_app(engine)
    with _Server(app) as url:
        yield {"url": url, "home": home, "engine": engine, "insights": app.state.insights,
               "tokens": tokens}
    engine.close()


def _get(shop, path, scope="read", **params):
    return httpx.get(shop["url"] + path, params=params,
                     headers={"Authorization": f"Bearer {shop['tokens'][scope]}"})


def test_overview_counts_every_event_by_day_and_type(shop):
    doc = _get(shop, "/v1/insights/overview").json()
    act = doc["activity"]
    total = sum(n for by_day in act["events_by_type"].values() for n in by_day.values())
    assert total == 20 * 12  # every event of the fixture (all within one day of T0)
    assert set(act["events_by_type"]) == {"view", "purchase"}
    assert sum(act["active_users"].values()) >= 20
    assert doc["health"]["users"] == 20 and doc["model"]["version"] is None
    assert doc["evaluation"] is None  # no `tansuo evaluate` run on this home
    assert doc["segments"]["k"] >= 2  # runners and audio buyers
    names = {t["name"] for s in doc["segments"]["segments"] for t in s["top_interests"]}
    assert any("Running" in n for n in names) and any("Audio" in n for n in names)


def test_user_search_and_recent_events(shop):
    doc = _get(shop, "/v1/insights/users", prefix="u1", limit=5).json()
    assert doc["total"] == 11  # u1, u10..u19
    assert [u["user_id"] for u in doc["users"]] == ["u1", "u10", "u11", "u12", "u13"]
    ev = _get(shop, "/v1/users/u1/events", limit=3).json()["events"]
    assert len(ev) == 3 and ev[0]["timestamp"] >= ev[1]["timestamp"] >= ev[2]["timestamp"]
    assert all(e["title"].startswith("trail running shoe") for e in ev)
    missing = _get(shop, "/v1/users/nobody/events")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "user_id"
    bad = _get(shop, "/v1/insights/users", limit=0)
    assert bad.status_code == 422 and "limit" in bad.json()["error"]["message"]


def test_item_view(shop):
    doc = _get(shop, "/v1/items/R1", k=3).json()
    assert doc["item"]["title"] == "trail running shoe 1" and doc["item"]["brand"] == "brand1"
    assert len(doc["similar"]) == 3 and all(s["title"] for s in doc["similar"])
    assert doc["similar"][0]["item_id"].startswith("R")
    assert doc["events"] > 0
    segs = doc["segments"]
    assert segs and sum(s["users"] for s in segs) <= 12  # only runners had R items
    missing = _get(shop, "/v1/items/NOPE")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "item_id"


def test_exploration_joins_served_slates_with_clicks(shop):
    shop["insights"].invalidate()
    rid = []
    for user, explore in (("u2", None), ("u3", 0.0), ("u14", 0.0)):
        params = {"k": 4} if explore is None else {"k": 4, "explore": explore}
        rid.append(_get(shop, f"/v1/users/{user}/recommendations", **params).json())
    first = rid[1]["items"][2]
    click = [{"user_id": "u3", "item_id": first["item_id"], "type": "click",
              "timestamp": T0 + 500_000, "request_id": rid[1]["request_id"], "position": 2}]
    r = httpx.post(shop["url"] + "/v1/events", json=click,
                   headers={"Authorization": f"Bearer {shop['tokens']['ingest']}"})
    assert r.json()["accepted"] == 1
    shop["insights"].invalidate()
    doc = _get(shop, "/v1/insights/exploration").json()
    by_policy = {s["policy"]: s for s in doc["series"]}
    greedy = by_policy["interest-ts (explore 0)"]
    assert sum(greedy["shown"]) >= 8 and sum(greedy["clicks"]) == 1
    assert doc["bucket"] == "hour" and doc["clicks"] == 1
    logged = doc["estimates"]["logged"]["ipw"]
    assert logged["low"] <= logged["value"] <= logged["high"] and logged["value"] > 0


def test_exploration_skips_empty_slates(shop):
    # a filter nothing matches serves (and logs) an empty slate; its policy shows nothing
    r = _get(shop, "/v1/users/u2/recommendations", category="Nowhere", strategy="item-ts",
             explore=0.35)
    assert r.status_code == 200 and r.json()["items"] == []
    shop["insights"].invalidate()
    doc = _get(shop, "/v1/insights/exploration")
    assert doc.status_code == 200, doc.text
    assert "item-ts (explore 0.35)" not in {s["policy"] for s in doc.json()["series"]}
    assert all(0 <= c <= 1 for s in doc.json()["series"] for c in s["ctr"])


def test_evaluation_report_is_served_once_written(shop):
    assert _get(shop, "/v1/insights/evaluation").json() == {"report": None}
    run(shop["home"], "evaluate", "--models", "pop", "--k", "5")
    report = json.loads(latest_evaluation_path(shop["home"]).read_text())
    assert "pop" in report["models"]
    got = _get(shop, "/v1/insights/evaluation").json()["report"]
    assert got["models"]["pop"]["metrics"] == report["models"]["pop"]["metrics"]
    shop["insights"].invalidate()
    summary = _get(shop, "/v1/insights/overview").json()["evaluation"]
    assert summary["models"]["pop"]["ndcg@10"] is None  # --k 5 only: no @10 figure
    assert "ndcg@5" in got["models"]["pop"]["metrics"]


def test_insights_need_the_read_scope(shop):
    for path in ("/v1/insights/overview", "/v1/insights/exploration", "/v1/items/R1",
                 "/v1/users/u1/events"):
        assert _get(shop, path, scope="ingest").status_code == 403
        assert httpx.get(shop["url"] + path).status_code == 401


def test_daily_activity_counts(store):
    day = 86_400_000
    rows = [("a", "view", 0), ("a", "view", 1000), ("b", "click", 2000), ("a", "view", day),
            ("c", "purchase", day + 5), ("c", "view", 3 * day)]
    frame = pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": ["i1"] * len(rows),
                          "type": [r[1] for r in rows],
                          "timestamp": [T0 * 1000 + r[2] for r in rows]})
    import_frame(store, frame, "events", source="test")
    act = daily_activity(store)
    d0, d1, d3 = act["days"]
    assert act["events_by_type"]["view"] == {d0: 2, d1: 1, d3: 1}
    assert act["events_by_type"]["click"] == {d0: 1}
    assert act["active_users"] == {d0: 2, d1: 2, d3: 1}
    assert daily_activity(store, days=1)["days"] == [d3]


def test_evaluate_attaches_peers_of_the_same_dataset_only(tmp_path, shop):
    peers = tmp_path / "peers"
    peers.mkdir()
    doc = {"name": "implicit-als", "library": "implicit", "protocol": "store loo",
           "test": {"ndcg@5": 0.1}, "ci": {"ndcg@5": [0.05, 0.15]}}
    (peers / "als.json").write_text(json.dumps(doc))
    (peers / "crosscheck.json").write_text(json.dumps({"rows": []}))  # not a peer result
    run(shop["home"], "evaluate", "--models", "pop", "--k", "5", "--peers", str(peers))
    report = json.loads(latest_evaluation_path(shop["home"]).read_text())
    assert report["peers"]["implicit-als"]["metrics"] == {"ndcg@5": 0.1}
    (peers / "als.json").write_text(json.dumps({**doc, "protocol": "movielens-small loo"}))
    bad = run(shop["home"], "evaluate", "--models", "pop", "--peers", str(peers), check=False)
    assert bad.returncode == 2 and "not run on store" in bad.stderr
    missing = run(shop["home"], "evaluate", "--models", "pop", "--peers",
                  str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "not a directory" in missing.stderr


def test_population_counts_are_released_with_differential_privacy(tmp_path):
    from tansuo.privacy.dp import PrivacyBudget
    from tansuo.service.insights import Insights

    _data(tmp_path)
    home = tmp_path / "home"
    run(home, "import", "items", str(tmp_path / "items.csv"))
    run(home, "import", "events", str(tmp_path / "events.csv"))
    settings = Settings(home=home, dp_epsilon=1.0, dp_total_epsilon=2.5)
    engine = Engine(settings)
    try:
        dp = Insights(engine).private()
        # segment sizes and trends fit the budget (2 × 1.0); popular items would exceed it
        assert dp["budget"]["spent"] == pytest.approx(2.0)
        sizes = dp["segments"]["values"]
        k = Insights(engine).segments()["k"]
        assert set(sizes) == {str(s) for s in range(k)} and all(v >= 0 for v in sizes.values())
        assert dp["segments"]["epsilon"] == pytest.approx(1.0)
        assert dp["segments"]["sensitivity"] == 1 and "e^" in dp["segments"]["guarantee"]
        assert dp["trends"]["sensitivity"] == 100 and dp["trends"]["rows"]
        assert "budget" in dp["popular"]["note"].lower() and dp["popular"]["values"] == {}
        # shown again from the stored releases: nothing more is spent
        again = Insights(engine).private()
        assert again["budget"]["spent"] == pytest.approx(2.0)
        assert again["segments"]["values"] == sizes
        ledger = PrivacyBudget(home, 2.5).releases
        assert [r["label"] for r in ledger] == ["segment sizes", "interest trend counts"]
    finally:
        engine.close()
