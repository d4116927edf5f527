"""SASRec accuracy vs. user-level differential privacy (DP-SGD, Opacus; issue 9) into
docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_dpsgd.py [--epochs 10] [--batch-size 128] [--no-write]

MovieLens latest-small, leave-one-out, full ranking, one seed (0): SASRec trained for the same
``--epochs`` at ε ∈ {1, 4, 16} (δ = 1/(10·users), clipping norm 1, Poisson sampling of
``--batch-size`` users a step on average, one window of ≤ 50 interactions per sampled user)
and without DP (ε = ∞; the plain model: every window every epoch, keeps its best epoch on its
internal validation, patience = epochs so it runs as long). NDCG@10 and HR@10 with 95%
bootstrap CIs over users, training seconds, and the ε the accountant (RDP) reports as spent.
Every figure comes from a ``tansuo evaluate`` run started here, kept under
benchmarks/out/dpsgd/ so an interrupted run resumes (``--fresh`` reruns). Epochs and batch
are chosen to fit well under 25 minutes on 2 CPU cores (a DP epoch of ~670 users: ~7 s, a
plain epoch of all ~2,300 windows: ~15 s; the whole run ~5 min at 10 epochs).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from _docs import cached_evaluate, ci_cell, write_block

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "dpsgd"
EPSILONS = ("1", "4", "16", "inf")


def evaluate(*args: str, fresh: bool = False) -> tuple[dict[str, Any], str]:
    """One ``tansuo evaluate`` run, its report kept under benchmarks/out/dpsgd/."""
    return cached_evaluate(OUT, *args, fresh=fresh)


cell = ci_cell


def spec(eps: str, epochs: int, batch: int, threads: int) -> str:
    base = f"sasrec:epochs={epochs}:batch_size={batch}:threads={threads}"
    if eps == "inf":
        return f"{base}:patience={epochs}"
    return f"{base}:dp_epsilon={eps}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epsilons", default=",".join(EPSILONS))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows, commands, per_step = [], [], None
    for eps in args.epsilons.split(","):
        model = spec(eps, args.epochs, args.batch_size, args.threads)
        rep, cmd = evaluate("--dataset", "movielens-small", "--protocol", "loo", "--models",
                            model, "--seed", "0", fresh=args.fresh)
        commands.append(cmd)
        r = rep["models"][model]
        dp = (r.get("fit_info") or {}).get("dp")
        if dp:
            per_step = dp["expected_users_per_step"]
            privacy = (f"{dp['epsilon']:.2f} (δ = {dp['delta']:.1e}, σ = "
                       f"{dp['noise_multiplier']:.2f}, q = {dp['sample_rate']:.3f}, "
                       f"{dp['steps']} steps)")
        else:
            privacy = "∞ (no DP)"
        rows.append(f"| {'∞' if eps == 'inf' else eps} | {privacy} | {cell(r, 'ndcg@10')} | "
                    f"{cell(r, 'hr@10')} | {r['train_seconds']:.0f} |")
    pop, pop_cmd = evaluate("--dataset", "movielens-small", "--protocol", "loo", "--models",
                            "pop", "--seed", "0", fresh=args.fresh)
    commands.append(pop_cmd)
    r = pop["models"]["pop"]
    rows.append(f"| (most popular, for scale) | — | {cell(r, 'ndcg@10')} | {cell(r, 'hr@10')} "
                f"| {r['train_seconds']:.0f} |")
    users = rep["split"]["evaluated_users"]
    lines = ["```", f".venv/bin/python benchmarks/bench_dpsgd.py --epochs {args.epochs} "
             f"--batch-size {args.batch_size} --threads {args.threads}",
             "# which runs (with --home benchmarks/out/dpsgd/home):", *commands, "```", "",
             f"MovieLens latest-small, leave-one-out, full ranking, {users} users, seed 0, "
             f"{args.epochs} epochs. Unit of privacy: one user (all their interactions); "
             "each DP step Poisson-samples users (sample rate q = 1/⌈users/batch⌉: "
             f"{per_step} expected a step), uses one random window of ≤ 50 interactions of each, "
             "clips each user's gradient to norm 1 and adds Gaussian noise (Opacus, RDP "
             "accountant). ε = ∞ is the plain model (all windows, best epoch on its "
             "validation). 95% bootstrap CIs over users.", "",
             "| target ε | ε spent (accountant) | NDCG@10 (95% CI) | HR@10 (95% CI) | "
             "train s |", "|---|---|---|---|---|", *rows]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_block("bench_dpsgd", "DP-SGD SASRec: accuracy vs ε (issue 9)", text)


if __name__ == "__main__":
    main()
