"""`tansuo ope`: off-policy estimates on the Open Bandit Dataset or on the service's logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tansuo.cli.main import _emit_json, _fail, _JsonOpt, _state, app, out

_OBD_ESTIMATORS = ("ipw", "snips", "dm", "dr", "switch-dr")


@app.command("ope")
def ope_cmd(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="obd: estimate the Bernoulli-TS policy's CTR from the random log.")
    ] = None,
    campaign: Annotated[str, typer.Option(help="obd campaign: all, men or women.")] = "all",
    log: Annotated[Path | None, typer.Option(
        "--log", help="The service's served-slate log (default <home>/logs/served.jsonl).")
    ] = None,
    policy: Annotated[str, typer.Option(
        help="With --log: greedy (explore = 0) or logged (the serving policy).")] = "greedy",
    estimators: Annotated[str | None, typer.Option(
        help="Comma-separated: ipw, snips, dm, dr, switch-dr (obd); ipw, snips (--log).")
    ] = None,
    draws: Annotated[int, typer.Option(
        min=1000, help="Monte-Carlo draws of the BTS policy's action distribution.")] = 100_000,
    n_boot: Annotated[int, typer.Option("--n-boot", min=10)] = 1000,
    as_json: _JsonOpt = False,
) -> None:
    """Off-policy evaluation with bootstrap 95% intervals."""
    if dataset is not None and log is not None:
        _fail("pass either --dataset obd or --log PATH, not both", 2)
    if dataset is not None and dataset != "obd":
        _fail(f"--dataset {dataset!r}: only obd has logged bandit data", 2)
    if dataset == "obd":
        names = tuple(x.strip() for x in (estimators or ",".join(_OBD_ESTIMATORS)).split(",")
                      if x.strip())
        bad = sorted(set(names) - set(_OBD_ESTIMATORS))
        if bad or not names:
            _fail(f"--estimators {bad or names}: expected some of {', '.join(_OBD_ESTIMATORS)}",
                  2)
        if campaign not in ("all", "men", "women"):
            _fail(f"--campaign {campaign!r}: expected all, men or women", 2)
        rows = _obd(campaign, names, draws, n_boot)
        title = (f"OBD {campaign}: Bernoulli-TS CTR estimated from the random log "
                 f"(on-policy truth V = {rows[0]['truth']:.5f})")
    else:
        rows, title = _served(ctx, log, policy, estimators, n_boot)
    if as_json:
        _emit_json(rows)
        return
    table = Table(title=title)
    for c in ("estimator", "estimate", "95% interval", "relative error"):
        table.add_column(c)
    for r in rows:
        err_ = "—" if r.get("relative_error") is None else f"{r['relative_error']:.3f}"
        table.add_row(r["estimator"], f"{r['estimate']:.5f}",
                      f"{r['ci'][0]:.5f} – {r['ci'][1]:.5f}", err_)
    out.print(table)


def _obd(campaign: str, names: tuple[str, ...], draws: int, n_boot: int) -> list[dict]:
    from tansuo.data.bundled import load_obd
    from tansuo.evaluation import ope
    from tansuo.exploration import obd_policies as pol

    random_log, bts_log = load_obd("random", campaign), load_obd("bts", campaign)
    alpha, beta = pol.bts_prior(campaign)
    dist = pol.tile_rounds(pol.bts_action_dist(alpha, beta, random_log.n_positions, draws,
                                               seed=0), random_log.n_rounds)
    q = pol.cross_fit_rewards(random_log, n_folds=3, seed=0) if {"dm", "dr", "switch-dr"} \
        & set(names) else None
    est = ope.estimate_all(reward=random_log.reward, action=random_log.action,
                           position=random_log.position, pscore=random_log.propensity,
                           action_dist=dist, estimated_rewards=q,
                           switch_tau=10.0 if q is not None else None,
                           n_boot=n_boot, seed=0)
    truth = float(bts_log.reward.mean())
    out_rows = []
    for name in names:
        key = next((k for k in est if k.replace("_", "-").startswith(name)), None)
        if key is None:
            continue
        e = est[key]
        out_rows.append({"estimator": name, "estimate": e.value, "ci": [e.ci_low, e.ci_high],
                         "truth": truth, "relative_error": abs(e.value - truth) / truth})
    return out_rows


def _served(ctx: typer.Context, log: Path | None, policy: str, estimators: str | None,
            n_boot: int) -> tuple[list[dict], str]:
    from tansuo.exploration.served import evaluate_served, load_served

    state = _state(ctx)
    path = log or state.settings.home / "logs" / "served.jsonl"
    names = tuple(x.strip() for x in (estimators or "ipw,snips").split(",") if x.strip())
    with state.store() as store:
        clicks = store.events(["request_id", "position", "type"])
    try:
        logged = load_served(path, clicks)
        est = evaluate_served(logged, policy, names, n_boot)
    except FileNotFoundError as exc:
        _fail(f"--log: {exc} (the service writes it as it serves)", 2)
    except ValueError as exc:
        _fail(str(exc), 2)
    rows = [{"estimator": k, "estimate": e.value, "ci": [e.ci_low, e.ci_high],
             "rounds": logged.rounds, "requests": logged.requests,
             "observed_ctr": float(logged.reward.mean())} for k, e in est.items()]
    return rows, (f"policy {policy!r} from {logged.requests:,} served slates "
                  f"({logged.rounds:,} slots, observed CTR {logged.reward.mean():.4f})")
