"""One table — Tansuo's baselines and the peers, same split, same metrics — into
docs/benchmarks.md.

    .venv/bin/python benchmarks/peer_table.py [--no-tune] [--no-write]

Runs ``tansuo evaluate --dataset movielens-small --protocol loo --k 10,20 --tune`` (our
numbers, in this run) and reads the peers' result files written by
``benchmarks/peers/run_peers.py`` (RecBole SASRec/GRU4Rec, implicit ALS/BPR on the exported
split; rerun only when the split changes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _docs import write_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "peers" / "results"
METRICS = ("ndcg@10", "hr@10", "mrr@10", "ndcg@20", "hr@20")


def _ours(tune: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "tansuo.cli", "--home", tmp, "evaluate", "--dataset",
               "movielens-small", "--models", "pop,recent-pop,itemknn,als,bpr", "--protocol",
               "loo", "--k", "10,20", "--json", str(out)]
        if tune:
            cmd.append("--tune")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def _cell(metrics: dict, ci: dict | None, name: str) -> str:
    value = metrics.get(name)
    if value is None:
        return "—"
    if ci and name in ci:
        lo, hi = ci[name]
        return f"{value:.4f} ({lo:.4f}–{hi:.4f})"
    return f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-tune", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    ours = _ours(not args.no_tune)
    lines = [
        "MovieLens latest-small, leave-one-out by time (671 test users, 9,066 items), full "
        "ranking, history excluded; mean (95% bootstrap CI over users). Peers read the same "
        "split from exported files.",
        "",
        "| model | source | " + " | ".join(METRICS) + " | train s |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for name, r in ours["models"].items():
        cells = " | ".join(_cell(r["metrics"], r["ci"], m) for m in METRICS)
        lines.append(f"| {name} | Tansuo{' (tuned)' if r.get('tuning') else ''} | {cells} | "
                     f"{r['train_seconds']:.1f} |")
    peers = sorted(RESULTS.glob("*.json")) if RESULTS.exists() else []
    for path in peers:
        r = json.loads(path.read_text())
        metrics = r.get("test") or r.get("metrics") or {}
        ci = r.get("ci")
        cells = " | ".join(_cell(metrics, ci, m) for m in METRICS)
        seconds = r.get("train_seconds") or r.get("wall_seconds_total")
        source = r.get("source") or r.get("library") or "peer"
        if r.get("stopped_by_time_budget"):
            source += f" — time-capped after {r.get('epochs_run')} epochs, not converged"
        lines.append(f"| {r.get('model', path.stem)} | {source} | {cells} | "
                     f"{seconds:.1f} |" if seconds is not None else
                     f"| {r.get('model', path.stem)} | {source} | {cells} | — |")
    if not peers:
        lines.append("| (peers not run yet: `python benchmarks/peers/run_peers.py`) | | |")
    lines += ["", "Command: `.venv/bin/python benchmarks/peer_table.py` (ours, with `--tune` on "
              "the validation target) after `python benchmarks/peers/run_peers.py` (peers)."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_block("peer_table", "Evaluation yardstick: Tansuo baselines and peers", text)

if __name__ == "__main__":
    main()
