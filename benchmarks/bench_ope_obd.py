"""Off-policy evaluation on the Open Bandit Dataset sample (issue 6), into docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_ope_obd.py [--no-write] [--draws 1000000] [--n-boot 1000]
                                                 [--switch-tau 10] [--inputs-only]

1. **The OBP paper's experiment.** The Bernoulli Thompson sampling (BTS) policy's CTR is
   estimated from the uniform-random log of each campaign (all, men, women) with IPW, SNIPS, DM,
   DR and switch-DR, and compared with its on-policy CTR, the mean click of the BTS log of the
   same campaign (the ground truth V). BTS's ``action_dist`` is the Monte-Carlo frequency of
   (item, position) under ZOZOTOWN's Beta prior (:func:`tansuo.exploration.obd_policies.
   bts_action_dist`, ``--draws`` seeded draws). DM/DR's reward model is
   :class:`~tansuo.exploration.obd_policies.RewardModel` (additive logistic regression on user
   features, item features, log1p affinity and position; C by 3-fold CV log loss), 3-fold
   cross-fitted on the random log: each round's q̂ comes from a model fitted on the other
   two folds.
2. **Our own policies.** The random log is split in time: policies are trained on the first
   70 % of rounds and evaluated on the later 30 %, whose DM/DR reward model is cross-fitted on
   that later part alone (never on the data the policies were trained on).

Intervals: 95 % percentile bootstrap over rounds (``--n-boot`` resamples, seed 0), the reward
model held fixed. Writes ``benchmarks/out/ope_obd/inputs.npz`` (every estimator input and
Tansuo's values) for ``benchmarks/peers/ope_crosscheck.py``, which feeds them to obp 0.5.7; the
doc block reports that check when its JSON matches these inputs. ``--inputs-only`` writes the
npz and stops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from _docs import write_block

from tansuo.data.bundled import LoggedBandit, load_obd
from tansuo.evaluation import ope
from tansuo.evaluation.metrics import bootstrap_ci as mean_ci
from tansuo.exploration import obd_policies as pol

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "ope_obd"
INPUTS = OUT / "inputs.npz"
CROSSCHECK = ROOT / "benchmarks" / "peers" / "results" / "ope_crosscheck.json"
CAMPAIGNS = ("all", "men", "women")
NAMES = {"ipw": "IPW", "snips": "SNIPS", "dm": "DM", "dr": "DR", "switch-dr": "switch-DR"}
EPSILON = 0.1
TRAIN_FRACTION = 0.7


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def inputs_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Hash of the estimator inputs (not Tansuo's values), key by key in sorted order."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        if key.endswith("__tansuo"):
            continue
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def logged(log_: LoggedBandit) -> dict[str, np.ndarray]:
    return {"reward": log_.reward, "action": log_.action, "position": log_.position,
            "pscore": log_.propensity}


def ess(log_: LoggedBandit, dist: np.ndarray) -> float:
    """Kish effective sample size of the importance weights, (Σw)² / Σw²."""
    w = ope.importance_weights(action=log_.action, position=log_.position,
                               pscore=log_.propensity, action_dist=dist)
    return float(w.sum() ** 2 / (w ** 2).sum()) if w.any() else 0.0


def fmt(x: float) -> str:
    return f"{x:.5f}"


def fmt_ci(e: ope.Estimate) -> str:
    return f"{e.value:.5f} ({e.ci_low:.5f}–{e.ci_high:.5f})"


def rel_error(e: ope.Estimate, truth: float) -> str:
    """|V̂ − V| / V with the image of the value's interval under v ↦ |v − V| / V."""
    lo, hi = e.ci_low, e.ci_high
    ends = (abs(lo - truth) / truth, abs(hi - truth) / truth)
    low = 0.0 if lo <= truth <= hi else min(ends)
    return f"{abs(e.value - truth) / truth:.3f} ({low:.3f}–{max(ends):.3f})"


def estimate(store: dict[str, np.ndarray], prefix: str, log_: LoggedBandit, dist: np.ndarray,
             q: np.ndarray, args: argparse.Namespace) -> dict[str, ope.Estimate]:
    """All estimators; saves the inputs (a context-free dist as 2-D) and values for obp."""
    full = pol.tile_rounds(dist, log_.n_rounds) if dist.ndim == 2 else dist
    for key, value in logged(log_).items():
        store[f"{prefix}__{key}"] = value
    store[f"{prefix}__action_dist"] = dist
    store[f"{prefix}__estimated_rewards"] = q
    inputs = {**logged(log_), "action_dist": full}
    values = {"ipw": ope.ipw(**inputs), "dm": ope.dm(**inputs, estimated_rewards=q),
              "dr": ope.dr(**inputs, estimated_rewards=q),
              "switch-dr": ope.switch_dr(**inputs, estimated_rewards=q, tau=args.switch_tau)}
    try:
        values["snips"] = ope.snips(**inputs)
    except ValueError:  # no logged (item, position) has evaluation-policy mass: 0/0
        values["snips"] = float("nan")
    store[f"{prefix}__tansuo"] = np.array([values[k] for k in NAMES])
    if args.inputs_only:
        return {}
    out: dict[str, ope.Estimate] = {}
    for name, fn in ope.ESTIMATORS.items():
        extra = {"estimated_rewards": q} if name in ("dm", "dr", "switch-dr") else {}
        if name == "switch-dr":
            extra["tau"] = args.switch_tau
        if np.isnan(values[name]):
            out[name] = ope.Estimate(float("nan"), float("nan"), float("nan"))
            continue
        out[name] = ope.bootstrap_ci(fn, **inputs, **extra, n_boot=args.n_boot, seed=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument("--draws", type=int, default=pol.BTS_DRAWS,
                        help="Thompson draws behind the BTS action_dist")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--switch-tau", type=float, default=10.0)
    parser.add_argument("--inputs-only", action="store_true",
                        help="only write benchmarks/out/ope_obd/inputs.npz (for the obp check)")
    args = parser.parse_args()
    started = time.perf_counter()
    store: dict[str, np.ndarray] = {}
    paper_rows, log_rows, own_rows, diag_rows = [], [], [], []
    random_ctr: dict[str, float] = {}
    random_clicks: list[int] = []
    all_clicks: list[int] = []
    closer = 0  # campaigns where the BTS log's own frequencies bring IPW closer to V
    for campaign in CAMPAIGNS:
        random_log = load_obd("random", campaign)
        bts_log = load_obd("bts", campaign)
        alpha, beta = pol.bts_prior(campaign)
        log(f"{campaign}: BTS action_dist from {args.draws:,} Thompson draws")
        bts = pol.bts_action_dist(alpha, beta, random_log.n_positions, args.draws, seed=0)
        log(f"{campaign}: cross-fitting the reward model on the random log")
        q = pol.cross_fit_rewards(random_log, n_folds=3, seed=0)
        res = estimate(store, f"{campaign}__bts", random_log, bts, q, args)

        # Diagnostic: the slate frequencies BTS actually had in its own log, as π_e.
        seen = np.zeros((bts_log.n_actions, bts_log.n_positions))
        np.add.at(seen, (bts_log.action, bts_log.position), 1.0)
        seen /= seen.sum(axis=0, keepdims=True)
        tv = 0.5 * np.abs(seen - bts).sum(axis=0)

        log(f"{campaign}: our policies on the later {1 - TRAIN_FRACTION:.0%} of the random log")
        train, test = pol.time_split(random_log, TRAIN_FRACTION)
        q_test = pol.cross_fit_rewards(test, n_folds=3, seed=0)
        greedy = pol.greedy_slate(pol.ctr_table(train))
        model = pol.RewardModel.fit(train, seed=0)
        policies = {
            "uniform random (the logging policy)":
                pol.uniform_dist(test.n_actions, test.n_positions),
            "BTS, ZOZOTOWN prior": bts,
            "ctr-greedy": greedy,
            f"ctr-ε-greedy, ε = {EPSILON}": pol.epsilon_greedy(greedy, EPSILON),
            "features-lr (top 3 by predicted CTR)": pol.model_greedy_dist(model, test),
        }
        own = {}
        for i, (label, dist) in enumerate(policies.items()):
            own[label] = estimate(store, f"{campaign}__own{i}", test, dist, q_test, args)
        if args.inputs_only:
            continue

        truth = bts_log.ctr
        random_ctr[campaign] = random_log.ctr
        random_clicks.append(int(random_log.reward.sum()))
        all_clicks.extend([int(random_log.reward.sum()), int(bts_log.reward.sum())])
        t_lo, t_hi = mean_ci(bts_log.reward, n_boot=args.n_boot, seed=0)
        r_lo, r_hi = mean_ci(random_log.reward, n_boot=args.n_boot, seed=0)
        full_bts = pol.tile_rounds(bts, random_log.n_rounds)
        weights = ope.importance_weights(action=random_log.action, position=random_log.position,
                                         pscore=random_log.propensity, action_dist=full_bts)
        log_rows.append(
            f"| {campaign} | {random_log.n_actions} | {random_log.n_rounds:,} / "
            f"{bts_log.n_rounds:,} | {int(random_log.reward.sum())} / {int(bts_log.reward.sum())}"
            f" | {fmt(random_log.ctr)} ({fmt(r_lo)}–{fmt(r_hi)}) | **{fmt(truth)}** "
            f"({fmt(t_lo)}–{fmt(t_hi)}) | {weights.max():.1f} | {ess(random_log, full_bts):,.0f} "
            f"| {fmt(q.min())}–{fmt(q.max())} |")
        for name in NAMES:
            paper_rows.append((campaign, name, res[name], truth))
        oracle = ope.bootstrap_ci(ope.ipw, **logged(random_log),
                                  action_dist=pol.tile_rounds(seen, random_log.n_rounds),
                                  n_boot=args.n_boot, seed=0)
        closer += abs(oracle.value - truth) < abs(res["ipw"].value - truth)
        diag_rows.append(
            f"| {campaign} | {' / '.join(f'{x:.2f}' for x in tv)} | {fmt_ci(res['ipw'])} | "
            f"{fmt_ci(oracle)} | {fmt(truth)} |")
        for label, est in own.items():
            dist = policies[label]
            full = pol.tile_rounds(dist, test.n_rounds) if dist.ndim == 2 else dist
            cells = " | ".join("undefined (no matched rounds)" if np.isnan(est[n].value)
                               else fmt_ci(est[n]) for n in NAMES)
            own_rows.append(f"| {campaign} | {label} | {cells} | {ess(test, full):,.0f} |")
        own_rows.append(f"| {campaign} | *on-policy CTR of the later part* | "
                        f"{fmt(test.ctr)} ({int(test.reward.sum())} clicks in "
                        f"{test.n_rounds:,} rounds) | | | | | |")

    OUT.mkdir(parents=True, exist_ok=True)
    store_hash = inputs_sha256(store)
    np.savez_compressed(INPUTS, **store)
    (OUT / "inputs.json").write_text(json.dumps({
        "inputs_sha256": store_hash, "estimators": list(NAMES), "switch_tau": args.switch_tau,
        "draws": args.draws, "campaigns": list(CAMPAIGNS),
        "own_policies": list(policies)}, indent=2) + "\n")
    log(f"wrote {INPUTS.relative_to(ROOT)} (inputs sha256 {store_hash[:12]})")
    if args.inputs_only:
        return

    by_campaign = {c: {n: (e, t) for cc, n, e, t in paper_rows if cc == c} for c in CAMPAIGNS}
    paper_table = []
    for name, label in NAMES.items():
        cells = []
        for c in CAMPAIGNS:
            e, t = by_campaign[c][name]
            cells += [fmt_ci(e), rel_error(e, t)]
        if name == "switch-dr":
            label += f" (τ = {args.switch_tau:g})"
        paper_table.append(f"| {label} | " + " | ".join(cells) + " |")
    crosscheck = "Not yet cross-checked against obp on these inputs: run " \
                 "`python benchmarks/peers/ope_crosscheck.py`."
    if CROSSCHECK.exists():
        cc = json.loads(CROSSCHECK.read_text())
        if cc.get("inputs_sha256") == store_hash:
            crosscheck = (
                f"Cross-check: obp {cc['obp_version']}'s `InverseProbabilityWeighting`, "
                "`SelfNormalizedInverseProbabilityWeighting`, `DirectMethod`, `DoublyRobust` and "
                "`SwitchDoublyRobust` on these exact inputs (every row of both tables) agree "
                f"with Tansuo's to max |Δ| = {cc['max_abs_difference']:.1e} "
                "(`benchmarks/peers/ope_crosscheck.py`, "
                "`benchmarks/peers/results/ope_crosscheck.json`).")
    wall = time.perf_counter() - started
    command = " ".join([".venv/bin/python", "benchmarks/bench_ope_obd.py", *sys.argv[1:]])
    text = "\n".join([
        "```",
        command,
        "```",
        "",
        "Open Bandit Dataset **sample** bundled in the obp 0.5.7 wheel: 10,000 rounds (one row "
        "per impression, 3 positions) per campaign and logging policy, with "
        f"{min(all_clicks)}–{max(all_clicks)} clicks per log. Every interval below is "
        "therefore **wide**; the OBP paper's figures come from the "
        "full dataset (millions of rounds) and are not reproduced at this size.",
        "",
        "**Replication of the OBP paper's experiment**: the Bernoulli TS policy's CTR estimated "
        "from the uniform-random log, against its on-policy CTR V in the BTS log. π_e = "
        f"Monte-Carlo frequency of (item, position) over {args.draws:,} seeded Thompson draws "
        "from ZOZOTOWN's Beta prior (obp's `prior_bts.yaml`). DM/DR reward model: additive "
        "logistic regression (user features, item features, log1p user–item affinity, "
        "position; C ∈ {0.01, 0.1, 1, 10} by 3-fold CV log loss), 3-fold cross-fitted on the "
        "random log. 95 % percentile bootstrap over rounds, "
        f"{args.n_boot:,} resamples, reward model held fixed (so DM's interval leaves out "
        "the model's own uncertainty).",
        "",
        "| campaign | items | rounds random / BTS | clicks random / BTS | random-log CTR | "
        "BTS on-policy CTR V | max weight | ESS of weights | q̂ range |",
        "|---|---|---|---|---|---|---|---|---|",
        *log_rows,
        "",
        "| estimator | all: V̂ | all: rel. error | men: V̂ | men: rel. error | women: V̂ | "
        "women: rel. error |",
        "|---|---|---|---|---|---|---|",
        *paper_table,
        "",
        "Relative error = |V̂ − V| / V with, in brackets, the range it takes over V̂'s interval; "
        "V itself is uncertain (its own interval above), which this column does not include. "
        "ESS = (Σw)² / Σw², the effective number of rounds behind IPW. With "
        f"{min(random_clicks)}–{max(random_clicks)} clicks per random log the "
        "cross-validation picks strong regularisation (q̂ range above) and DM stays within "
        f"{max(abs(by_campaign[c]['dm'][0].value - ctr) for c, ctr in random_ctr.items()):.5f}"
        " of the random log's CTR; DM's narrow interval reflects only the resampling of "
        "rounds, not the model's error.",
        "",
        "The prior-based π_e is also **not** the policy that wrote the BTS log (ZOZOTOWN's BTS "
        "kept learning during the week): total variation distance per position (0 / 1 / 2) "
        "between π_e and the (item, position) frequencies observed in the BTS log, and IPW with "
        f"those observed frequencies as π_e. Swapping them in brings IPW closer to V in {closer} "
        f"of {len(CAMPAIGNS)} campaigns: at this size sampling noise dominates either way.",
        "",
        "| campaign | TV distance, positions 0 / 1 / 2 | IPW, π_e = prior BTS | "
        "IPW, π_e = BTS log's frequencies | V |",
        "|---|---|---|---|---|",
        *diag_rows,
        "",
        f"**Our policies**, trained on the first {TRAIN_FRACTION:.0%} of each random log (by "
        f"time) and evaluated on the later {1 - TRAIN_FRACTION:.0%}; DM/DR reward model "
        "cross-fitted (3 folds) on the later part only. ctr-greedy: per-(item, position) CTR "
        "shrunk toward the position's CTR with 100 pseudo-impressions, each position in turn "
        "takes its best remaining item; features-lr: per round the top 3 items by "
        "`RewardModel`'s predicted CTR (fitted on the earlier part). A deterministic slate "
        "matches the logged (item, position) in about one round in n_items, hence the tiny "
        "effective sample sizes (ESS) and intervals that cannot tell these policies apart; "
        f"its weights (= n_items) all exceed τ = {args.switch_tau:g}, so switch-DR falls back "
        "to DM for it.",
        "",
        "| campaign | policy | IPW | SNIPS | DM | DR | "
        f"switch-DR (τ = {args.switch_tau:g}) | ESS |",
        "|---|---|---|---|---|---|---|---|",
        *own_rows,
        "",
        crosscheck,
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {wall:.0f} s wall.",
    ])
    print(text)
    if not args.no_write:
        write_block("bench_ope_obd", "Off-policy evaluation on the Open Bandit Dataset (issue 6)",
                    text)


if __name__ == "__main__":
    main()
