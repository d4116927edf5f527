"""`tansuo simulate`: exploration settings in the online simulation of the synthetic shop
(registered on the main app; the rules are in :mod:`tansuo.exploration.simulate`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tansuo.cli.main import _emit_json, _fail, _JsonOpt, _state, app, out
from tansuo.errors import TansuoError


def _explore_values(text: str) -> list[float]:
    values = []
    for part in text.split(","):
        try:
            v = float(part.strip())
        except ValueError:
            v = float("nan")
        if not 0.0 <= v <= 1.0:  # also catches nan
            _fail(f"--explore {text!r}: expected comma-separated numbers in [0, 1], e.g. "
                  "--explore 0,0.05,0.1", 2)
        values.append(v)
    return sorted(set(values))


def _strategies(text: str) -> list[str]:
    from tansuo.exploration.policy import STRATEGIES

    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    if not names or bad:
        _fail(f"--strategy {text!r}: expected one or more of {', '.join(STRATEGIES)} "
              "(comma-separated)", 2)
    return list(dict.fromkeys(names))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1%}"


def _points(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.1f} pt"


@app.command("simulate")
def simulate_cmd(
    ctx: typer.Context,
    explore: Annotated[str, typer.Option(
        "--explore", help="Explore settings, comma-separated in [0, 1]; explore 0 (the "
                          "exploitation slate) always runs as the baseline.")] = "0,0.05,0.1",
    strategy: Annotated[str | None, typer.Option(
        "--strategy", help="Exploration strategies, comma-separated (default: the policy "
                           "default, interest-ts).")] = None,
    requests: Annotated[int, typer.Option(
        "--requests", min=1, help="Requests served per setting (the same ones for each).")
    ] = 20_000,
    seed: Annotated[int, typer.Option(
        "--seed", min=0, help="Seeds the requests, clicks, drift and the policies (the shop "
                               "itself is the seed-0 shop).")] = 0,
    k: Annotated[int, typer.Option("--k", min=1, help="Slate size.")] = 10,
    warm_days: Annotated[float, typer.Option(
        "--warm-days", help="Events before this day fill the profiles; requests come after.")
    ] = 60.0,
    short_run: Annotated[int, typer.Option(
        "--short-run", min=1, help="Short-run CTR: over the first N requests.")] = 2_000,
    max_short_cost: Annotated[float, typer.Option(
        "--max-short-cost", help="Claim: exploration may cost at most this share of the "
                                 "baseline's short-run CTR.")] = 0.10,
    organic: Annotated[bool, typer.Option(
        "--organic/--no-organic", help="Fold each user's own logged events before a request "
                                       "into their profile.")] = True,
    users: Annotated[int, typer.Option("--users", min=1, help="Synthetic shop: users.")
                     ] = 2000,
    items: Annotated[int, typer.Option("--items", min=1, help="Synthetic shop: items.")
                     ] = 3000,
    events_per_user: Annotated[float, typer.Option(
        "--events-per-user", help="Synthetic shop: mean events per user.")] = 150.0,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write the curves (cumulative CTR, windowed CTR, discovery) as PNG.")
    ] = None,
    as_json: _JsonOpt = False,
) -> None:
    """Explore 0 against exploration settings, online on the synthetic shop: click-through in
    the short and long run, and discovery of the users' latent interests."""
    from tansuo.data.synthetic import ShopConfig
    from tansuo.exploration.policy import PolicyConfig
    from tansuo.exploration.simulate import (
        SimConfig,
        plot_simulation,
        policy_grid,
        simulate,
    )

    values = _explore_values(explore)
    names = _strategies(strategy) if strategy is not None else [PolicyConfig().strategy]
    if not 0.0 <= max_short_cost <= 1.0:
        _fail(f"--max-short-cost {max_short_cost}: expected a share in [0, 1]", 2)
    if events_per_user < 0:
        _fail(f"--events-per-user {events_per_user}: expected a number ≥ 0", 2)
    shop = ShopConfig(users=users, items=items, events_per_user=events_per_user)
    if not 0 < warm_days < shop.days:
        _fail(f"--warm-days {warm_days}: expected a day inside the shop's {shop.days} days "
              "(0 < days < end), e.g. --warm-days 60", 2)
    if plot is not None and plot.suffix.lower() != ".png":
        _fail(f"--plot {plot}: expected a .png path", 2)
    config = SimConfig(requests=requests, k=k, warm_days=warm_days, short_run=short_run,
                       organic=organic, seed=seed)
    policies = policy_grid(names, values, PolicyConfig(seed=seed))
    state = _state(ctx)
    try:
        result = simulate(policies, home=state.settings.home, shop=shop, config=config,
                          text_model=state.settings.text_model,
                          progress=not as_json and sys.stderr.isatty())
    except (ValueError, TansuoError) as exc:
        _fail(str(exc), 1)
    if plot is not None:
        plot_simulation(result, plot)
    doc = result.to_dict(curve_step=max(requests // 40, 1))
    for run, r in zip(doc["runs"], result.runs, strict=True):
        run["claim"] = result.claim(r, max_short_cost)
    if as_json:
        _emit_json(doc)
        return
    short = doc["short_run_requests"]
    table = Table(title=f"online simulation: {requests:,} requests, k = {k}, seed {seed} — "
                        f"{doc['shop']['users_served']:,} users served, "
                        f"{doc['shop']['latent_users']:,} with a latent interest")
    for col in ("setting", f"CTR first {short:,}", "CTR last half", "discovery",
                "short-run cost", "long-run lift", "discovery gain", f"claim (≤ "
                f"{max_short_cost:.0%})", "seconds"):
        table.add_column(col, overflow="fold")
    for run in doc["runs"]:
        vs = run["vs_baseline"] or {}
        claim = run["claim"]
        table.add_row(run["label"], f"{run['ctr_short']:.2%}", f"{run['ctr_long']:.2%}",
                      f"{run['discovery']:.1%}", _pct(vs.get("short_cost")),
                      _pct(vs.get("long_lift")), _points(vs.get("discovery_gain")),
                      "baseline" if claim is None else ("holds" if claim["holds"] else "no"),
                      f"{run['seconds']:.0f}")
    out.print(table)
    out.print("short-run cost: relative loss of CTR over the first requests; long-run lift: "
              "relative CTR change over the last half; discovery gain: percentage points of "
              "users whose latent interest got a click. The claim holds when the cost is within "
              "the bound and long-run CTR or discovery rises (95% interval above 0).",
              highlight=False)
    if plot is not None:
        out.print(f"plot: {plot}")
