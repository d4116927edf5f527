"""Peer comparison on Tansuo's leave-one-out split of MovieLens latest-small.

Run with the MAIN virtualenv (it imports ``tansuo`` for the split and the metrics):

    .venv/bin/python benchmarks/peers/run_peers.py [--models sasrec,gru4rec,als,bpr]
                                                   [--background] [--force]

- RecBole (SASRec, GRU4Rec) runs in its own virtualenv, ``benchmarks/peers/.venv``, built here
  on first use (RecBole 1.2.1 with ``numpy<2``, ``setuptools<81``, ``pandas<2.3`` and the local
  CPU wheel of ``torch==2.13.0``; the install refuses to fetch torch from an index, so no CUDA
  wheels are ever pulled). The split is exported to RecBole benchmark files
  (:mod:`split_export`) and :mod:`recbole_runner` trains with RecBole's own early stopping and
  full-ranking evaluation, checking inside RecBole that the loaded split equals Tansuo's.
- ``implicit`` ALS and BPR run in this (main) virtualenv on the same training interactions.

Every model writes ``benchmarks/peers/results/<model>.json``; a model whose result exists is
skipped unless ``--force``. RecBole's raw outputs (its own metrics and the best model's test
scores) go to ``benchmarks/out/peers/`` (git-ignored); a model whose raw output exists is only
re-scored, not retrained. ``--background`` re-launches this script under nohup for the RecBole
models (log: ``results/run_peers.log``, one ``results/<model>.log`` per RecBole run) and runs the
implicit models in the foreground.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results"
OUT = ROOT / "benchmarks" / "out" / "peers"
DATA = OUT / "data"
VENV = HERE / ".venv"
VPY = VENV / "bin" / "python"
TORCH_WHEELS = Path("/opt/wheels")
PINS = ["recbole==1.2.1", "numpy<2", "setuptools<81", "pandas<2.3", "torch==2.13.0"]
TORCH_DEPS = ["filelock", "fsspec", "jinja2", "networkx", "sympy", "typing-extensions",
              "setuptools>=77.0.3,<81"]
RECBOLE_MODELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}
# glibc malloc returns PyTorch's large CPU tensors (tens of MB each) to the kernel on free and
# page-faults fresh zeroed memory on the next batch: on this 2-core VM that was about half of
# RecBole's training time. tcmalloc (Debian: libtcmalloc-minimal4) keeps and reuses them, as
# PyTorch's CPU performance tuning guide recommends. Used when present and LD_PRELOAD is unset.
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
IMPLICIT_MODELS = ("als", "bpr")
KS = (10, 20)
ALS_ALPHAS = (10.0, 20.0, 40.0)
DISPLAY = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "als": "ALS", "bpr": "BPR"}

sys.path.insert(0, str(HERE))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- environment

def ensure_venv() -> None:
    if VPY.exists():
        return
    log(f"building {VENV} (RecBole 1.2.1, CPU torch)")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VPY), "-m", "pip", "install", "--disable-pip-version-check"]
    # torch first, from local wheels only (an index would serve multi-GB CUDA builds); its own
    # dependencies are not among those wheels, so they come from the index by name.
    subprocess.run(pip + ["--no-index", "--no-deps", "--find-links", str(TORCH_WHEELS),
                          "torch==2.13.0"], check=True)
    subprocess.run(pip + TORCH_DEPS, check=True)
    constraints = OUT / "peers-constraints.txt"
    constraints.parent.mkdir(parents=True, exist_ok=True)
    constraints.write_text("\n".join(PINS[1:]) + "\n")
    subprocess.run(pip + ["-c", str(constraints)] + PINS, check=True)
    out = subprocess.run([str(VPY), "-c", "import torch; print(torch.__version__)"],
                         check=True, capture_output=True, text=True).stdout.strip()
    if not out.startswith("2.13.0"):
        raise SystemExit(f"peers venv got torch {out}, expected 2.13.0 (CPU)")


def ensure_export(force: bool) -> dict:
    from split_export import build_split, export_recbole

    manifest = DATA / "ml-tansuo" / "manifest.json"
    if manifest.exists() and not force:
        return json.loads(manifest.read_text())
    log("exporting Tansuo's loo split to RecBole benchmark files")
    return export_recbole(build_split(), DATA)


# --------------------------------------------------------------------------- metrics

def tansuo_metrics(scores: np.ndarray, history: list[np.ndarray],
                   targets: list[np.ndarray], n_boot: int = 1000) -> dict:
    """NDCG/HR/MRR/Recall @10/@20 with 95% bootstrap CIs, by tansuo.evaluation.metrics."""
    from tansuo.evaluation.metrics import accuracy, bootstrap_ci, top_k

    ranked = top_k(scores, max(KS), exclude=history)
    out: dict[str, dict] = {}
    for k in KS:
        for name, values in accuracy(ranked, targets, k).items():
            lo, hi = bootstrap_ci(values, n_boot=n_boot, level=0.95, seed=0)
            out[name] = {"mean": round(float(values.mean()), 6),
                         "ci95": [round(lo, 6), round(hi, 6)]}
    return out


def table_fields(key: str, test: dict, train_s: float, total_s: float | None) -> dict:
    """Flat fields read by benchmarks/peer_table.py (Tansuo's metrics, history excluded)."""
    import importlib.metadata as md

    lib = "implicit" if key in IMPLICIT_MODELS else "recbole"
    version = md.version("implicit") if lib == "implicit" else None
    return {
        "name": DISPLAY[key],
        "source": f"{'implicit' if lib == 'implicit' else 'RecBole'} {version or '1.2.1'}",
        "test": {m: v["mean"] for m, v in test.items()},
        "ci": {m: v["ci95"] for m, v in test.items()},
        "train_seconds": round(float(train_s), 2),
        "wall_seconds_total": None if total_s is None else round(float(total_s), 1),
    }


def versions_main() -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for pkg in ("tansuo", "implicit", "numpy", "scipy", "threadpoolctl"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = None
    return v


# --------------------------------------------------------------------------- implicit

def run_implicit(name: str, seed: int = 2020) -> dict:
    import implicit
    import scipy.sparse as sp
    from split_export import build_split
    from threadpoolctl import threadpool_limits

    ps = build_split()
    split = ps.split
    train = ps.train_matrix()  # binary user × item
    n_items = ps.n_items
    users = split.test.users
    assert np.array_equal(users, split.valid.users)

    def make(alpha: float):
        if name == "als":
            return implicit.cpu.als.AlternatingLeastSquares(
                factors=64, regularization=0.05, alpha=alpha, iterations=15,
                random_state=seed, num_threads=1, calculate_training_loss=False)
        return implicit.cpu.bpr.BayesianPersonalizedRanking(
            factors=64, learning_rate=0.01, regularization=0.01, iterations=100,
            random_state=seed, num_threads=1)

    def fit(alpha: float):
        model = make(alpha)
        t = time.time()
        model.fit(train, show_progress=False)
        fit_s = time.time() - t
        uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
        # Validation: history = training items, user vectors as trained.
        valid = tansuo_metrics(uf[users] @ itf.T, split.valid.history, split.valid.targets)
        return model, fit_s, valid

    with threadpool_limits(1, "blas"):
        selection = None
        if name == "als":
            # alpha (confidence scale) chosen on the validation target, NDCG@10.
            trials = {}
            for alpha in ALS_ALPHAS:
                trials[alpha] = fit(alpha)
            alpha = max(ALS_ALPHAS, key=lambda a: trials[a][2]["ndcg@10"]["mean"])
            model, fit_s, valid = trials[alpha]
            selection = {"alpha_grid": list(ALS_ALPHAS), "chosen_alpha": alpha,
                         "by": "valid ndcg@10",
                         "valid_ndcg@10": {str(a): trials[a][2]["ndcg@10"]["mean"]
                                           for a in ALS_ALPHAS}}
            params = {"factors": 64, "regularization": 0.05, "alpha": alpha,
                      "iterations": 15, "random_state": seed, "num_threads": 1}
        else:
            model, fit_s, valid = fit(1.0)
            params = {"factors": 64, "learning_rate": 0.01, "regularization": 0.01,
                      "iterations": 100, "random_state": seed, "num_threads": 1}
        uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
        # Test: history = training + validation items.
        rows = np.repeat(np.arange(len(users)), [len(h) for h in split.test.history])
        cols = np.concatenate(split.test.history)
        hist = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)),
                             shape=(len(users), n_items))
        if name == "als":
            test_uf = np.asarray(model.recalculate_user(np.arange(len(users)), hist))
            user_vectors = "recalculated from train + valid items (implicit recalculate_user)"
        else:
            test_uf = uf[users]
            user_vectors = "as trained (BPR has no recalculate_user)"
        test = tansuo_metrics(test_uf @ itf.T, split.test.history, split.test.targets)
    return {
        "library": "implicit",
        "model": DISPLAY[name],
        "model_class": {"als": "implicit.cpu.als.AlternatingLeastSquares",
                        "bpr": "implicit.cpu.bpr.BayesianPersonalizedRanking"}[name],
        "protocol": "Tansuo loo split of movielens-small (same split as the RecBole runs)",
        "evaluation": (f"full ranking over all {n_items} items, history items excluded; "
                       "metrics from tansuo.evaluation.metrics (accuracy, top_k, bootstrap_ci: "
                       "1000 resamples, 95%, seed 0)"),
        "environment": f"main virtualenv ({sys.prefix})",
        "train": "binary user x item matrix of the training interactions"
                 + (" (implicit 0.7 scales it by alpha as confidence)" if name == "als" else ""),
        "params": params,
        "selection": selection,
        "test_user_vectors": user_vectors,
        "users": int(len(users)), "items": int(n_items),
        "train_interactions": int(train.nnz),
        "fit_wall_s": round(fit_s, 2),
        "valid_tansuo": valid,
        "test_tansuo": test,
        "versions": versions_main(),
        **table_fields(name, test, fit_s, None),
    }


# --------------------------------------------------------------------------- RecBole

def recbole_paths(key: str) -> dict[str, Path]:
    return {"raw": OUT / f"{key}.recbole.json", "scores": OUT / f"{key}.scores.npz",
            "work": OUT / f"work-{key}", "log": RESULTS / f"{key}.log"}


def run_recbole(key: str, epochs: int, threads: int, max_minutes: float,
                resume: bool = False) -> None:
    p = recbole_paths(key)
    cmd = [str(VPY), str(HERE / "recbole_runner.py"), "--model", RECBOLE_MODELS[key],
           "--data-dir", str(DATA), "--work-dir", str(p["work"]), "--out", str(p["raw"]),
           "--scores", str(p["scores"]), "--epochs", str(epochs), "--threads", str(threads),
           "--max-minutes", str(max_minutes)] + (["--resume"] if resume else [])
    env = dict(os.environ)
    if TCMALLOC.exists() and not env.get("LD_PRELOAD"):
        env["LD_PRELOAD"] = str(TCMALLOC)
    log(f"training {RECBOLE_MODELS[key]} (log: {p['log']}, "
        f"LD_PRELOAD={env.get('LD_PRELOAD') or 'none: glibc malloc, slower'})")
    with open(p["log"], "a" if resume else "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise SystemExit(f"{RECBOLE_MODELS[key]} failed (exit {rc}); see {p['log']}")


def finalize_recbole(key: str) -> dict:
    """RecBole's own numbers + Tansuo's metrics on the best model's test scores."""
    from split_export import build_split

    p = recbole_paths(key)
    raw = json.loads(p["raw"].read_text())
    ps = build_split()
    split = ps.split
    z = np.load(p["scores"])
    user_pos = {u: i for i, u in enumerate(z["user_tokens"].tolist())}
    item_tokens = z["item_tokens"].tolist()
    col = {t: c for c, t in enumerate(item_tokens)}
    cols = np.array([col[str(i)] for i in ps.item_ids])  # RecBole column of each Tansuo item
    rows = np.array([user_pos[str(ps.user_ids[u])] for u in split.test.users])
    if len(set(rows.tolist())) != len(rows) or len(user_pos) != len(rows):
        raise SystemExit("RecBole test users do not match Tansuo's test users one-to-one")
    scores = z["scores"][rows][:, cols]
    excluded = tansuo_metrics(scores, split.test.history, split.test.targets)
    none = [np.empty(0, dtype=np.int64)] * len(rows)
    not_excluded = tansuo_metrics(scores, none, split.test.targets)
    raw["test_tansuo"] = excluded
    raw["test_tansuo_note"] = ("Tansuo's metrics on the best model's test scores with the "
                               "user's train + valid items excluded (comparable with Tansuo's "
                               "report and with the implicit runs)")
    raw["test_tansuo_history_not_excluded"] = not_excluded
    raw["test_tansuo_history_not_excluded_note"] = (
        "same scores without excluding history, i.e. RecBole's own sequential evaluation; "
        "should equal test_recbole up to tie-breaking and rounding")
    raw["scoring_versions"] = versions_main()
    raw.update(table_fields(key, excluded, raw["fit_wall_s"], raw["total_wall_s"]))
    return raw


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description="Tansuo vs RecBole / implicit on one split")
    ap.add_argument("--models", default="sasrec,gru4rec,als,bpr")
    ap.add_argument("--background", action="store_true",
                    help="run the RecBole models in a nohup'd background job")
    ap.add_argument("--force", action="store_true", help="redo models whose results exist")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-train", action="store_true",
                    help="RecBole models: only score existing raw outputs, never train")
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="per RecBole model training time cap (0 = RecBole's early stopping "
                         "alone decides)")
    ap.add_argument("--resume", action="store_true",
                    help="continue each RecBole model from its last finished epoch (a run "
                         "killed by a session end loses at most one epoch)")
    args = ap.parse_args()
    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(RECBOLE_MODELS) - set(IMPLICIT_MODELS)
    if unknown:
        raise SystemExit(f"unknown models: {sorted(unknown)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)

    todo = [m for m in models if args.force or not (RESULTS / f"{m}.json").exists()]
    for m in sorted(set(models) - set(todo)):
        log(f"{m}: {RESULTS / f'{m}.json'} exists, skipped (--force to redo)")
    seq = [m for m in todo if m in RECBOLE_MODELS]
    if seq and not args.no_train:
        ensure_venv()
        ensure_export(args.force)

    if args.background and seq:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--models", ",".join(seq),
               "--epochs", str(args.epochs), "--threads", str(args.threads),
               "--max-minutes", str(args.max_minutes)] + (["--force"] if args.force else []) \
            + (["--resume"] if args.resume else [])
        with open(RESULTS / "run_peers.log", "a") as fh:
            proc = subprocess.Popen(["nohup"] + cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=ROOT)
        log(f"RecBole models {seq} running in the background, pid {proc.pid}, "
            f"log {RESULTS / 'run_peers.log'}")
        seq = []

    for m in todo:
        if m in RECBOLE_MODELS:
            if m not in seq:
                continue
            p = recbole_paths(m)
            if args.force or not (p["raw"].exists() and p["scores"].exists()):
                if args.no_train:
                    log(f"{m}: no raw RecBole output in {OUT}, skipped (--no-train)")
                    continue
                run_recbole(m, args.epochs, args.threads, args.max_minutes, args.resume)
            result = finalize_recbole(m)
        else:
            log(f"fitting implicit {m}")
            result = run_implicit(m)
        (RESULTS / f"{m}.json").write_text(json.dumps(result, indent=2) + "\n")
        t = result["test_tansuo"]
        log(f"{m}: test ndcg@10 {t['ndcg@10']['mean']:.4f} hr@10 {t['hr@10']['mean']:.4f} "
            f"-> {RESULTS / f'{m}.json'}")


if __name__ == "__main__":
    main()
