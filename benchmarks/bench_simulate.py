"""Exploration in the online simulation of the synthetic shop (issue 6), into docs/benchmarks.md
and docs/img/simulate-*.png.

    .venv/bin/python benchmarks/bench_simulate.py [--no-write] [--requests 20000]

The synthetic shop (default config, seed 0: 2,000 users, 3,000 items, 120 days) is generated
under benchmarks/out/simulate/home; events before day 60 fill the interest tracker (text
interest space), then :mod:`tansuo.exploration.simulate` serves the same 20,000 requests with
each setting (the rules, the click model and the metrics are in that module's docstring):

- explore 0 (the exploitation slate) against every strategy at the default explore setting;
- the explore knob swept (0, 0.05, 0.1, 0.2, 0.3) for the default strategy;
- a sensitivity run without organic traffic (the recommender is the users' only surface).

Checked claim: the default exploration setting (``PolicyConfig()``) raises long-run CTR or
discovery (95% interval above 0) while costing at most ``--max-short-cost`` (10%) of the
short-run CTR (first 2,000 requests).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from _docs import write_block

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "simulate"
IMG = ROOT / "docs" / "img"


def _row(result, run, max_cost: float) -> str:
    s = run.summary()
    vs = result.compare(run)
    claim = result.claim(run, max_cost)

    def ci(key: str, scale: float = 100.0, unit: str = "%") -> str:
        lo, hi = vs[f"{key}_ci"]
        return f"{vs[key] * scale:+.1f}{unit} ({lo * scale:+.1f} to {hi * scale:+.1f})"

    verdict = "baseline" if claim is None else ("**holds**" if claim["holds"] else "no")
    return (f"| {run.label} | {s['ctr_short']:.2%} | {s['ctr_long']:.2%} | {s['ctr']:.2%} | "
            f"{s['discovery']:.1%} ({s['discovered_users']:,}) | "
            + ("— | — | — |" if vs is None else
               f"{ci('short_cost')} | {ci('long_lift')} | {ci('discovery_gain', unit=' pt')} |")
            + f" {s['explored_share']:.1%}"
            + ("" if s["explored_new_share"] is None else f" ({s['explored_new_share']:.0%})")
            + f" | {verdict} | {s['seconds']:.0f} |")


def _table(result, max_cost: float) -> list[str]:
    n = result.runs[0].requests
    short = min(result.config.short_run, n)
    return [f"| setting | CTR first {short:,} | CTR last {n - n // 2:,} | CTR all | "
            "discovery (users) | short-run cost vs explore 0 | long-run CTR change | "
            "discovery gain | exploring slots (to new interests) | "
            f"claim (cost ≤ {max_cost:.0%}) | run s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *[_row(result, r, max_cost) for r in result.runs]]


def _holds(claim: dict) -> str:
    return "holds" if claim["holds"] else "does not hold"


def _holding(result, cost: float) -> str:
    names = [r.label for r in result.runs if (c := result.claim(r, cost)) and c["holds"]]
    return ", ".join(names) or "none"


def _lifting(result) -> str:
    names = [r.label for r in result.runs
             if (c := result.compare(r)) and c["long_lift_ci"][0] > 0]
    return ", ".join(names) or "no setting"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--max-short-cost", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tansuo.exploration.policy import STRATEGIES, PolicyConfig
    from tansuo.exploration.simulate import (
        SimConfig,
        SimulationResult,
        Simulator,
        plot_simulation,
        policy_grid,
        prepare_shop,
        warm_tracker,
    )

    started = time.perf_counter()
    home = OUT / "home"
    default = PolicyConfig(seed=args.seed)
    config = SimConfig(requests=args.requests, seed=args.seed)
    print("synthetic shop and warm-start tracker", file=sys.stderr)
    shop = prepare_shop(None, home)
    t0 = time.perf_counter()
    tracker = warm_tracker(shop, config.warm_days, home)
    tracker_s = time.perf_counter() - t0
    sim = Simulator(shop, tracker, config)
    setup_s = time.perf_counter() - started

    strategies = [s for s in STRATEGIES if s != "greedy"]
    sweep = [0.05, 0.1, 0.2, 0.3]
    grid = policy_grid(strategies, [default.explore], default)
    grid += [p for p in policy_grid([default.strategy], sweep, default)[1:]
             if p.explore != default.explore]
    runs = []
    for p in grid:
        print(f"  {p.strategy} explore={p.explore:g}", file=sys.stderr)
        runs.append(sim.run(p))
    result = SimulationResult(config, sim.describe(), runs, setup_s)
    base = result.baseline
    by_strategy = SimulationResult(config, result.shop, [
        r for r in runs if r is base or r.policy.explore == default.explore])
    by_explore = SimulationResult(config, result.shop, sorted(
        [r for r in runs if r is base or r.policy.strategy == default.strategy],
        key=lambda r: r.policy.explore))

    print("  without organic traffic", file=sys.stderr)
    quiet = Simulator(shop, tracker, replace(config, organic=False))
    alone = [default, replace(default, explore=0.3), replace(default, strategy="interest-ucb"),
             replace(default, strategy="epsilon")]
    no_organic = quiet.compare([replace(default, strategy="greedy", explore=0.0), *alone])

    IMG.mkdir(parents=True, exist_ok=True)
    plot_simulation(by_strategy, IMG / "simulate-strategies.png")
    plot_simulation(by_explore, IMG / "simulate-explore.png")
    plot_simulation(no_organic, IMG / "simulate-no-organic.png")
    total_s = time.perf_counter() - started
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(
        {"organic": result.to_dict(curve_step=500), "no_organic": no_organic.to_dict(500)},
        indent=1, default=str))

    cost = args.max_short_cost
    default_run = next(r for r in runs if r.policy == default)
    claim = result.claim(default_run, cost)
    vs = result.compare(default_run)
    holding = _holding(result, cost)
    quiet_default = next(r for r in no_organic.runs if r.policy == default)
    quiet_claim = no_organic.claim(quiet_default, cost)
    d = result.shop
    who = (", each holding a latent interest" if d["latent_users"] == d["users_served"] else
           f", {d['latent_users']:,} of them holding a latent interest")
    per_run = sum(r.seconds for r in runs) / len(runs)
    cmd = ".venv/bin/python benchmarks/bench_simulate.py" + (
        f" --requests {args.requests}" if args.requests != 20_000 else "") + (
        f" --seed {args.seed}" if args.seed else "")
    verdict = (
        f"**Claim** — *the default exploration setting (`PolicyConfig()`: {default.strategy}, "
        f"explore = {default.explore:g}) raises long-run clicks or discovery while costing at "
        f"most {cost:.0%} of short-run CTR*: **{'holds' if claim['holds'] else 'does not hold'}"
        f"** on this run. Its short-run cost is {vs['short_cost']:+.1%} "
        f"({'within' if claim['short_cost_ok'] else 'above'} the {cost:.0%} bound), its "
        f"long-run CTR change {vs['long_lift']:+.1%} (95% interval {vs['long_lift_ci'][0]:+.1%} "
        f"to {vs['long_lift_ci'][1]:+.1%}) and its discovery gain "
        f"{vs['discovery_gain'] * 100:+.1f} points ({vs['discovery_gain_ci'][0] * 100:+.1f} to "
        f"{vs['discovery_gain_ci'][1] * 100:+.1f}).")
    if claim["holds"]:
        advice = ""
    else:
        advice = (
            f" Settings for which the claim holds here: {holding}. Why the default does not: an "
            "exploring slot of interest-ts goes to the interest with the highest Thompson draw "
            "from Beta(clicks + 2·share, shows − clicks + 2·(1 − share)), and an interest the user "
            "has not shown gets the prior mean floor 0.02 — so only "
            f"{default_run.summary()['explored_new_share']:.0%} of its exploring slots go to an "
            "interest the profile does not hold (the rest re-show known ones), and a user's "
            "latent interest (often an unexplored neighbour unit) is rarely tried within the "
            f"~{args.requests / d['users_served']:.0f} requests a user gets. What we would "
            "change in `policy.py` (not changed here): give unexplored "
            "neighbour units an optimistic prior (e.g. the mean of the user's known shares, "
            "or a floor near 0.1 instead of 0.02), or make interest-ucb the default (its bonus "
            "tries every candidate unit once); failing that, a default explore of 0.3.")
    text = [
        "```", cmd, "```", "",
        f"Synthetic shop (default config, seed 0): {d['items']:,} items, {d['events']:,} "
        f"well-formed human events after dropping {sum(d['dropped'].values()):,} malformed and "
        f"bot rows; {d['warm_events']:,} events before day {config.warm_days:g} of 120 fill the "
        f"tracker ({d['interest_units']} interest units from the text space). Then "
        f"{args.requests:,} requests — the shop's own later view events drawn at random, so "
        f"users come in proportion to their activity at the times they were active — are "
        f"served by each setting: {d['users_served']:,} users{who}. Every setting meets the "
        "same requests and click draws "
        "(common random numbers). Candidate scores: cosine of the item vectors with the sum of "
        "the user's long- and short-term vectors (warm-start popularity for users not yet "
        "seen); items created later, the user's last 50 shown items and their recent items "
        "are excluded; k = 10. The user's own organic events before each request also reach "
        "the tracker (nothing after the request time).", "",
        "**Click model.** An item at position p (0-based) is clicked with probability "
        "1 − (1 − 0.01)(1 − e_p · r), e_p = 1 / log2(p + 2) (position bias), 0.01 a base rate "
        "for any item. r = 0.6 · w_c(t) / W(t) when the item's true category c is an "
        "interest the user holds at t (shifts included), w_c(t) = base · (1 + a sin(2π t / P + "
        "φ)) its drifting weight (a ~ U(0.2, 0.6), P ~ U(15, 60) days, as in the generator) and "
        "W(t) the sum over the user's held interests; the latent interest — never acted on in "
        "the log, but liked — gets r = 0.6 · w_latent / W(t) the same way; other items only the "
        "base rate. Discovery = share of those users whose latent interest got at least one "
        "click. Short run = first 2,000 requests; long run = the last half.", "",
        "Every strategy at the default explore setting against explore 0:", "",
        *_table(by_strategy, cost), "",
        f"The explore knob for the default strategy ({default.strategy}):", "",
        *_table(by_explore, cost), "",
        "Intervals: 95%, normal approximation over paired requests (CTR) and paired users "
        "(discovery); the policies' state links requests, so they are indicative.", "",
        verdict + advice, "",
        f"Long-run CTR rose (95% interval above 0) for: {_lifting(result)}. An exploring slot "
        "costs clicks now, and a discovered latent interest pays back little while the user's "
        "organic events keep feeding the profile: one click (weight 2) is a small share of "
        "it, so the exploitation ranking barely moves towards the new interest. Without "
        "organic traffic (the recommender is the users' only surface; the profile learns "
        "only from its clicks, so it goes stale as interests drift and shift):", "",
        *_table(no_organic, cost), "",
        f"There long-run CTR rose for: {_lifting(no_organic)}; the claim holds for: "
        f"{_holding(no_organic, cost)}; for the default setting it "
        f"**{_holds(quiet_claim)}**.", "",
        "![strategies](img/simulate-strategies.png)", "",
        "![explore knob](img/simulate-explore.png)", "",
        "![without organic traffic](img/simulate-no-organic.png)", "",
        f"Cost: {platform.machine()}, {os.cpu_count()} cores shared with other jobs; shop + "
        f"warm tracker {setup_s:.0f} s (of which the tracker, with the catalogue's text "
        f"encoding unless cached under benchmarks/out, {tracker_s:.0f} s), then {per_run:.0f} s "
        f"per {args.requests:,}-request run on average (about "
        f"{per_run / args.requests * 1000:.1f} ms per request: "
        "profile read, scoring all items, slate, clicks, feedback); the whole script "
        f"{total_s / 60:.1f} min. CLI: `tansuo simulate --explore 0,0.05,0.1 --requests 20000 "
        "--plot out.png`.",
    ]
    doc = "\n".join(text)
    print(doc)
    if not args.no_write:
        write_block("bench_simulate", "Exploration in simulation (issue 6)", doc)


if __name__ == "__main__":
    main()
