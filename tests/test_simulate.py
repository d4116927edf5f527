"""The online simulator on a tiny synthetic shop: determinism, common random numbers, the click
model, discovery, no look-ahead, and `tansuo simulate` (one run on the real text path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tansuo.data.synthetic import ShopConfig, generate
from tansuo.exploration.policy import PolicyConfig, SlatePolicy, UserContext
from tansuo.exploration.simulate import (
    ClickModel,
    PolicyPerUser,
    SimConfig,
    Simulator,
    load_shop,
    plot_simulation,
    policy_grid,
    warm_tracker,
)

TINY = ShopConfig(users=60, items=200, events_per_user=60)
GREEDY = PolicyConfig(strategy="greedy", explore=0.0)
SIM = SimConfig(requests=400, short_run=100)
CLI = [sys.executable, "-c",
       "import tansuo.cli.simulate; from tansuo.cli.main import app; app(prog_name='tansuo')"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory):
    return load_shop(generate(TINY, tmp_path_factory.mktemp("shop"), progress=False).directory)


@pytest.fixture(scope="module")
def tracker(shop):
    """The cheap path: one direction per true interest (plus noise) instead of MiniLM text."""
    codes = {c: j for j, c in enumerate(sorted(set(shop.items["interest"])))}
    rng = np.random.default_rng(0)
    vecs = rng.normal(0, 0.2, (len(shop.items), len(codes) + 4))
    vecs[np.arange(len(vecs)), [codes[c] for c in shop.items["interest"]]] += 1.0
    return warm_tracker(shop, SIM.warm_days, item_vectors=vecs)


def _sim(shop, tracker, **cfg) -> Simulator:
    return Simulator(shop, tracker, replace(SIM, **cfg))


def test_shop_is_read_without_malformed_rows_or_bots(shop):
    meta = json.loads((shop.directory / "meta.json").read_text())
    for kind, n in meta["counts"]["malformed"].items():
        assert shop.dropped[kind] == n, kind
    ev = shop.events
    assert not ev["user_id"].isin(meta["counts"]["bots"]).any()
    assert ev["timestamp"].between(shop.start_ms, shop.end_ms - 1).all()
    assert (np.diff(ev["timestamp"].to_numpy()) >= 0).all()
    assert not (ev["dwell_seconds"] < 0).any()
    assert len(ev) == meta["counts"]["well_formed_events"] - shop.dropped["bot_events"]
    assert set(shop.items["interest"]) >= set(shop.truth["category"])


def test_same_seed_gives_the_same_result_and_another_seed_does_not(shop, tracker):
    a = _sim(shop, tracker).run(PolicyConfig())
    b = _sim(shop, tracker).run(PolicyConfig())
    assert a.clicks.tolist() == b.clicks.tolist() and a.discovered == b.discovered
    assert a.summary() | {"seconds": 0} == b.summary() | {"seconds": 0}
    other = _sim(shop, tracker, seed=1)
    assert other.req_user.tolist() != _sim(shop, tracker).req_user.tolist()


def test_every_policy_meets_the_same_requests_and_runs_do_not_leak(shop, tracker):
    sim = _sim(shop, tracker)
    users, times, draws = sim.req_user.copy(), sim.req_time.copy(), sim.uniforms.copy()
    assert len(users) == SIM.requests and (np.diff(times) >= 0).all()
    assert (times >= sim.cut_ms).all()
    first = sim.run(GREEDY)
    explored = sim.run(PolicyConfig(strategy="epsilon", explore=1.0))
    again = sim.run(GREEDY)
    assert sim.req_user.tolist() == users.tolist() and (sim.req_time == times).all()
    assert (sim.uniforms == draws).all()
    assert first.stream == explored.stream == again.stream
    assert first.clicks.tolist() == again.clicks.tolist()  # each run on its own tracker copy
    assert explored.explored.sum() > 0 and first.explored.sum() == 0
    assert first.clicks.tolist() != explored.clicks.tolist()


def test_click_model_prefers_the_users_top_interest_and_position(shop, tracker):
    sim = _sim(shop, tracker)
    t = int(sim.req_time[len(sim.req_time) // 2])
    rng = np.random.default_rng(0)
    checked = 0
    for user in sorted(set(sim.req_user.tolist())):
        rel = sim.relevance(user, t)
        shown = {c: r for c, (r, latent) in rel.items() if not latent}
        if not shown:
            continue
        top = max(shown, key=shown.get)
        members = np.flatnonzero(sim.interest_of == top)
        if len(members) < 4:  # about 5 items per interest in this tiny shop
            continue
        mine = rng.choice(members, 4, replace=False)
        other = rng.choice(np.flatnonzero(~np.isin(sim.interest_of, list(rel))), 4,
                           replace=False)
        p_top, _ = sim.click_probabilities(user, t, mine)
        rand = np.mean([sim.click_probabilities(user, t, rng.choice(len(sim.interest_of), 4))
                        [0].sum() for _ in range(200)])  # expected clicks of random slates
        p_none, _ = sim.click_probabilities(user, t, other)
        assert p_top.sum() > rand > p_none.sum()
        assert p_none == pytest.approx(np.full(4, ClickModel().noise))  # base rate only
        assert (np.diff(p_top) < 0).all()  # same interest: lower positions, fewer clicks
        # with the same uniforms, the top interest's slate gets at least as many clicks
        u = sim.uniforms[:200, :4]
        assert (u < p_top).sum() > (u < p_none).sum()
        checked += 1
    assert checked >= 5


def test_drift_and_shifts_move_the_relevance(shop, tracker):
    sim = _sim(shop, tracker)
    shifts = pd.read_csv(shop.directory / "truth_shifts.csv", dtype={"user_id": str})
    row = shifts.iloc[0]
    t = int(pd.Timestamp(row["timestamp"]).value // 1_000_000)
    codes = sim.interest_codes
    left = shop.truth.loc[(shop.truth["user_id"] == row["user_id"])
                          & (shop.truth["interest"] == row["left"]), "category"].iloc[0]
    arrived = shop.truth.loc[(shop.truth["user_id"] == row["user_id"])
                             & (shop.truth["interest"] == row["arrived"]), "category"].iloc[0]
    before = sim.relevance(row["user_id"], t - 1)
    after = sim.relevance(row["user_id"], t)
    assert codes[left] in before and codes[left] not in after
    assert codes[arrived] not in before and codes[arrived] in after
    user = next(u for u in sim.truth if not sim.truth[u].latent.all())
    r1 = sim.relevance(user, shop.start_ms + 70 * 86_400_000)
    r2 = sim.relevance(user, shop.start_ms + 85 * 86_400_000)
    assert r1 != r2  # the weights drift between days 70 and 85


def test_discovery_counts_only_clicks_on_latent_interests(shop, tracker):
    sim = _sim(shop, tracker)
    user = next(u for u in sim.truth if sim.truth[u].latent.any())
    tr = sim.truth[user]
    t = int(sim.req_time[0])
    latent_code = int(tr.interest[tr.latent][0])
    held = [int(c) for c in tr.interest[~tr.latent & (tr.start <= t) & (t < tr.end)]]
    items = np.r_[np.flatnonzero(sim.interest_of == latent_code)[:3],
                  np.flatnonzero(np.isin(sim.interest_of, held))[:3]]
    p, latent = sim.click_probabilities(user, t, items)
    assert latent.tolist() == [True] * 3 + [False] * 3 and (p > ClickModel().noise).all()
    # a latent interest nobody clicks on, and no noise: nothing is discovered
    blind = _sim(shop, tracker, clicks=ClickModel(latent_factor=0.0, noise=0.0))
    run = blind.run(PolicyConfig(strategy="epsilon", explore=1.0))
    assert run.discovered == {} and run.latent_clicks.sum() == 0 and run.clicks.sum() > 0
    # whenever a user counts as discovered, that request clicked an item of their latent one
    open_ = _sim(shop, tracker, clicks=ClickModel(latent_factor=3.0))
    run = open_.run(PolicyConfig(strategy="epsilon", explore=1.0))
    assert run.discovered
    for u, r in run.discovered.items():
        assert open_.req_user[r] == u and run.latent_clicks[r] > 0
        assert open_.truth[u].latent.any()
    s = run.summary()
    assert s["discovery"] == pytest.approx(len(run.discovered) / open_.latent_users)
    assert run.discovery_curve()[-1] == pytest.approx(s["discovery"])
    assert run.ctr_curve()[-1] == pytest.approx(s["ctr"])


def test_profiles_never_see_the_future(shop, tracker):
    seen: list[tuple[int, int]] = []

    class Watching(Simulator):
        def _scores(self, tracker, user):
            state = tracker.users.get(user)
            self._last = None if state is None else state.last_ts
            return super()._scores(tracker, user)

        def click_probabilities(self, user, t, items):
            if getattr(self, "_last", None) is not None:
                seen.append((self._last, t))
                self._last = None
            return super().click_probabilities(user, t, items)

    Watching(shop, tracker, SIM).run(GREEDY)
    assert seen and all(last <= t for last, t in seen)


def test_results_compare_against_explore_zero_and_plot(shop, tracker, tmp_path):
    sim = _sim(shop, tracker)
    result = sim.compare(policy_grid(["interest-ts", "epsilon"], [0.0, 0.5]))
    assert [r.label for r in result.runs] == ["explore 0 (greedy)", "interest-ts explore=0.5",
                                             "epsilon explore=0.5"]
    assert result.compare(result.runs[0]) is None
    cmp = result.compare(result.runs[2])
    assert cmp["short_cost_ci"][0] <= cmp["short_cost"] <= cmp["short_cost_ci"][1]
    claim = result.claim(result.runs[2], 0.1)
    assert claim["holds"] == (claim["short_cost_ok"] and (claim["raises_long_run_ctr"]
                                                          or claim["raises_discovery"]))
    doc = result.to_dict(curve_step=100)
    assert doc["runs"][1]["curves"]["request"][-1] == SIM.requests
    json.dumps(doc)
    png = plot_simulation(result, tmp_path / "sim.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="requests"):
        SimConfig(requests=0)
    with pytest.raises(ValueError, match="noise"):
        ClickModel(noise=1.0)
    with pytest.raises(ValueError, match="relevance"):
        ClickModel(relevance=0.0)


def test_warm_days_beyond_the_shop_are_refused(shop, tracker):
    with pytest.raises(ValueError, match="warm_days"):
        _sim(shop, tracker, warm_days=500)


# -- CLI -----------------------------------------------------------------------------------------
def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TANSUO_HOME": str(home), "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    env.pop("TANSUO_DATABASE_URL", None)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_cli_simulates_the_real_path_small(tmp_path):
    png = tmp_path / "out.png"
    args = ("simulate", "--explore", "0,0.2", "--strategy", "interest-ts,epsilon",
            "--requests", "300", "--short-run", "100", "--users", "60", "--items", "200",
            "--events-per-user", "60", "--plot", str(png))
    proc = _cli(tmp_path / "home", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["label"] for r in doc["runs"]] == ["explore 0 (greedy)", "interest-ts explore=0.2",
                                                "epsilon explore=0.2"]
    assert doc["short_run_requests"] == 100 and doc["runs"][0]["requests"] == 300
    assert doc["runs"][0]["claim"] is None and "holds" in doc["runs"][1]["claim"]
    assert png.exists() and (tmp_path / "home" / "cache").exists()
    table = _cli(tmp_path / "home", *args)  # the shop and the text vectors are reused
    assert table.returncode == 0, table.stderr
    assert "interest-ts explore=0.2" in table.stdout and "CTR first 100" in table.stdout


@pytest.mark.parametrize(("args", "option"), [
    (["--explore", "0,1.5"], "--explore"),
    (["--explore", "abc"], "--explore"),
    (["--strategy", "nope"], "--strategy"),
    (["--requests", "0"], "--requests"),
    (["--warm-days", "200"], "--warm-days"),
    (["--max-short-cost", "2"], "--max-short-cost"),
    (["--plot", "out.jpg"], "--plot"),
])
def test_cli_bad_options_name_the_option(tmp_path, args, option):
    proc = _cli(tmp_path, "simulate", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert option in proc.stderr


@pytest.mark.parametrize("strategy", ["interest-ts", "interest-ucb", "item-ts", "epsilon"])
def test_one_policy_per_user_shows_what_one_shared_policy_shows(strategy):
    rng = np.random.default_rng(1)
    unit_of = np.repeat(np.arange(5), 12)
    centroids = np.eye(5, dtype=np.float32)
    cfg = PolicyConfig(strategy=strategy, explore=0.5, pool=30, propensity_draws=5)
    one = SlatePolicy(cfg, unit_of, centroids)
    many = PolicyPerUser(cfg, unit_of, centroids)
    for r in range(300):
        user = f"u{rng.integers(6)}"
        scores = rng.random(len(unit_of))
        ctx = UserContext({int(rng.integers(5)): 0.6, 4: 0.4}, [4] if r % 3 else [])
        a = one.slate(user, scores, 4, ctx, request_id=f"r{r}")
        b = many.slate(user, scores, 4, ctx, request_id=f"r{r}")
        assert a.items.tolist() == b.items.tolist()
        assert a.propensities.tolist() == b.propensities.tolist()
        clicked = [p for p in range(len(a.items)) if rng.random() < 0.3]
        one.feedback(user, a, clicked)
        many.feedback(user, b, clicked)
    assert one.item_stats == many.item_stats
    merged = {k: v for p in many.policies.values() for k, v in p.interest_stats.items()}
    assert merged == one.interest_stats
