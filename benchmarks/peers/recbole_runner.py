"""Train and evaluate one RecBole sequential model on Tansuo's exported split.

Runs INSIDE the peers virtualenv (benchmarks/peers/.venv, RecBole 1.2.1); it never imports
``tansuo``. Writes ``<out>.json`` (RecBole's own metrics, timings, checks, versions) and
``<scores>.npz`` (the best model's full test-phase scores, so the orchestrator can compute
Tansuo's metrics on exactly the same rankings with history items excluded).

Usage: python recbole_runner.py --model SASRec --data-dir DIR --work-dir DIR --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


class TimeBudgetExceeded(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=["SASRec", "GRU4Rec"])
    ap.add_argument("--data-dir", type=Path, required=True, help="folder holding ml-tansuo/")
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scores", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop training after this much wall time (0 = no limit); the best "
                         "checkpoint so far is evaluated and the result is marked")
    ap.add_argument("--resume", action="store_true",
                    help="continue from <work-dir>/resume.pth (written after every epoch) when "
                         "it exists: a long run may span several sessions on a shared machine")
    args = ap.parse_args()
    # resolve before the chdir below: relative --out/--scores must not land in the work dir
    args.out, args.scores = args.out.resolve(), args.scores.resolve()

    # RecBole 1.2.1 reloads its own checkpoints (which hold its Config object) with torch.load;
    # torch >= 2.6 defaults to weights_only=True, which cannot read them.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    import pandas
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    data_dir = args.data_dir.resolve()
    manifest = json.loads((data_dir / "ml-tansuo" / "manifest.json").read_text())
    exp = manifest["expected_recbole"]
    max_len = int(manifest["max_item_list_length"])
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # RecBole writes ./log/ and ./log_tensorboard/ relative to the cwd

    config_dict = {
        "data_path": str(data_dir),
        "checkpoint_dir": str(work / "saved"),
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp", "item_id_list"]},
        # item_id_list must share item_id's token remapping (RecBole issue #1813).
        "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": max_len,
        "seq_len": {"item_id_list": max_len},
        # Nothing may be dropped or altered (filters are skipped with benchmark files anyway).
        "val_interval": None,
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
        "rm_dup_inter": None,
        "filter_inter_by_user_or_item": False,
        "normalize_all": False,
        "eval_args": {"mode": "full", "order": "TO", "group_by": "user"},
        "metrics": ["NDCG", "Hit", "MRR", "Recall"],
        "topk": [10, 20],
        "valid_metric": "NDCG@10",
        "stopping_step": 10,
        "epochs": args.epochs,
        "seed": 2020,
        "reproducibility": True,
        "train_neg_sample_args": None,  # CE loss (the models' default) needs no negatives
        "use_gpu": False,
        "device": "cpu",
        "show_progress": False,
        "worker": 0,
    }
    config = Config(model=args.model, dataset="ml-tansuo", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    import logging

    logger = logging.getLogger()
    logger.info(config)

    t0 = time.time()
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    checks = check_counts(dataset, train_data, valid_data, test_data, exp, max_len)
    logger.info("split checks passed: %s", json.dumps(checks))

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    # Importing any RecBole sequential model imports recbole/model/sequential_recommender/
    # sine.py, which calls torch.autograd.set_detect_anomaly(True) at module level: autograd's
    # debugging mode (a Python traceback per forward op, a NaN scan of every backward output)
    # is then on for every model. It changes no result, only speed (~1.5x per batch here), so
    # it is switched off again, as any RecBole user who notices it would do.
    anomaly_was_on = torch.is_anomaly_enabled()
    torch.autograd.set_detect_anomaly(False)
    logger.info("autograd anomaly detection was %s (set by RecBole's sine.py import); now off; "
                "LD_PRELOAD=%s", anomaly_was_on, os.environ.get("LD_PRELOAD", ""))
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    epochs: list[dict] = []
    resume_file = work / "resume.pth"
    # Wall and process-CPU seconds already spent by earlier (resumed) legs of this run.
    wall_offset = cpu_offset = 0.0
    resumed_legs = 0
    if args.resume and resume_file.exists():
        state = torch.load(resume_file, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.start_epoch = state["epoch"] + 1
        trainer.cur_step = state["cur_step"]
        trainer.best_valid_score = state["best_valid_score"]
        trainer.best_valid_result = state["best_valid_result"]
        trainer.saved_model_file = state["saved_model_file"]
        torch.set_rng_state(state["torch_rng"])
        epochs = state["epochs"]
        wall_offset, cpu_offset = state["wall_s"], state["cpu_s"]
        resumed_legs = state["legs"] + 1
        logger.info("resumed after epoch %d (%.0f s of training so far)", state["epoch"],
                    wall_offset)
    t_fit, c_fit = time.time(), time.process_time()
    budget = args.max_minutes * 60

    def callback(epoch_idx: int, valid_score: float) -> None:
        wall = wall_offset + time.time() - t_fit
        cpu = cpu_offset + time.process_time() - c_fit
        epochs.append({"epoch": int(epoch_idx), "valid_ndcg@10": float(valid_score),
                       "elapsed_s": round(wall, 2), "cpu_s": round(cpu, 2)})
        tmp = resume_file.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                    "epoch": int(epoch_idx), "cur_step": trainer.cur_step,
                    "best_valid_score": trainer.best_valid_score,
                    "best_valid_result": trainer.best_valid_result,
                    "saved_model_file": trainer.saved_model_file,
                    "torch_rng": torch.get_rng_state(), "epochs": epochs,
                    "wall_s": wall, "cpu_s": cpu, "legs": resumed_legs}, tmp)
        os.replace(tmp, resume_file)
        if budget and time.time() - t_fit > budget:
            raise TimeBudgetExceeded

    stopped_by_budget = False
    try:
        _best_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=True, show_progress=False, callback_fn=callback)
    except TimeBudgetExceeded:
        stopped_by_budget = True
        best_valid_result = trainer.best_valid_result
        logger.info("stopped: time budget of %.1f min exceeded", args.max_minutes)
    fit_s = wall_offset + time.time() - t_fit
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    logger.info("best valid: %s", best_valid_result)
    logger.info("test result: %s", test_result)

    best = max(epochs, key=lambda e: e["valid_ndcg@10"]) if epochs else None
    # First epoch reaching the best score (RecBole keeps the first best: strict improvement).
    if best is not None:
        best = next(e for e in epochs if e["valid_ndcg@10"] == best["valid_ndcg@10"])

    # Full test-phase scores of the best model (rows = test users, cols = RecBole item ids).
    model = trainer.model
    model.eval()
    users, rows = [], []
    with torch.no_grad():
        for interaction, _hist, _pu, _pi in test_data:
            scores = model.full_sort_predict(interaction.to(config["device"]))
            rows.append(scores.view(len(interaction), -1).cpu().numpy().astype(np.float32))
            users.append(interaction["user_id"].cpu().numpy())
    uid = np.concatenate(users)
    score_mat = np.concatenate(rows)
    args.scores.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.scores,
        user_tokens=np.asarray(dataset.id2token("user_id", uid), dtype=str),
        item_tokens=np.asarray(dataset.field2id_token["item_id"], dtype=str),  # [0] = [PAD]
        scores=score_mat,
    )

    result = {
        "library": "recbole",
        "model": args.model,
        "protocol": "Tansuo loo split of movielens-small exported as RecBole benchmark files",
        "evaluation": ("RecBole full ranking over all items; for sequential models RecBole does "
                       "NOT exclude the user's history items (only the padding item)"),
        "valid_metric": "NDCG@10",
        "best_valid_epoch": None if best is None else best["epoch"],
        "epochs_run": len(epochs),
        "stopped_by_time_budget": stopped_by_budget,
        "time_to_best_valid_s": None if best is None else best["elapsed_s"],
        # process CPU seconds (all threads) to the best epoch: unlike wall time, it is not
        # inflated when other work shares the cores
        "cpu_to_best_valid_s": None if best is None else best.get("cpu_s"),
        "resumed_legs": resumed_legs,
        "fit_wall_s": round(fit_s, 1),
        "total_wall_s": round(time.time() - t0, 1),
        "best_valid_recbole": {k: float(v) for k, v in (best_valid_result or {}).items()},
        "test_recbole": {k: float(v) for k, v in test_result.items()},
        "valid_curve": epochs,
        "checks": checks,
        "config": {k: _plain(config[k]) for k in [
            "epochs", "train_batch_size", "learning_rate", "stopping_step", "eval_step",
            "MAX_ITEM_LIST_LENGTH", "loss_type", "seed", "eval_args", "topk", "metrics",
            "hidden_size", "n_layers", "n_heads", "inner_size", "hidden_dropout_prob",
            "attn_dropout_prob", "embedding_size", "num_layers", "dropout_prob",
            "train_neg_sample_args"] if k in config},
        "threads": args.threads,
        "autograd_anomaly_detection": {"set_by_recbole_import": anomaly_was_on,
                                       "during_training": False},
        "ld_preload": os.environ.get("LD_PRELOAD") or None,
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "pandas": pandas.__version__,
                     "python": platform.python_version()},
        "command": " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    logger.info("wrote %s", args.out)


def _plain(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def check_counts(dataset, train_data, valid_data, test_data, exp: dict, max_len: int) -> dict:
    """Fail loudly unless RecBole holds exactly Tansuo's split."""
    import torch

    train, valid, test = train_data._dataset, valid_data._dataset, test_data._dataset
    got = {
        "user_num_incl_pad": int(dataset.user_num),
        "item_num_incl_pad": int(dataset.item_num),
        "train_rows": len(train),
        # training (user, item) pairs = targets + the first item of each length-1 sequence
        # (RecBole's SequentialDataset.inter_matrix does exactly this)
        "train_interactions": int(train.inter_matrix(form="csr").nnz),
        "valid_rows": len(valid),
        "test_rows": len(test),
    }
    if got != exp:
        raise SystemExit(f"RecBole's view of the split differs from Tansuo's: {got} vs {exp}")

    # Rebuild each user's sequence from RecBole's internal tensors and check the inputs:
    # valid input = train items (last max_len), test input = train + valid items.
    def per_user(ds):
        u = ds.inter_feat["user_id"].numpy()
        i = ds.inter_feat["item_id"].numpy()
        lst = ds.inter_feat["item_id_list"].numpy()
        ln = ds.inter_feat["item_length"].numpy()
        return u, i, lst, ln

    tu, ti, tl, tn = per_user(train)
    seqs: dict[int, list[int]] = {}
    for u, i, lst, n in zip(tu, ti, tl, tn, strict=True):
        s = seqs.setdefault(int(u), [])
        if not s:
            if n != 1:
                raise SystemExit(f"user {u}: first train row has a history of {n}, expected 1")
            s.append(int(lst[0]))
        if list(lst[:n]) != s[-max_len:]:
            raise SystemExit(f"user {u}: train input sequence differs from its prefix")
        s.append(int(i))
    n_train_pairs = sum(len(s) for s in seqs.values())
    vu, vi, vl, vn = per_user(valid)
    su, si, sl, sn = per_user(test)
    if set(vu.tolist()) != set(seqs) or set(su.tolist()) != set(seqs):
        raise SystemExit("valid/test users differ from train users")
    valid_item = {}
    for u, i, lst, n in zip(vu, vi, vl, vn, strict=True):
        if list(lst[:n]) != seqs[int(u)][-max_len:]:
            raise SystemExit(f"user {u}: valid input is not the user's train items")
        valid_item[int(u)] = int(i)
    for u, i, lst, n in zip(su, si, sl, sn, strict=True):
        full = seqs[int(u)] + [valid_item[int(u)]]
        if list(lst[:n]) != full[-max_len:]:
            raise SystemExit(f"user {u}: test input is not the user's train + valid items")
        if int(i) in full:
            raise SystemExit(f"user {u}: test target already in history")
    if n_train_pairs != exp["train_interactions"]:
        raise SystemExit(f"rebuilt train pairs {n_train_pairs} != {exp['train_interactions']}")
    got["sequences_verified"] = True
    got["padding_zero"] = bool((torch.as_tensor(sl)[:, :][sn[:, None] <= np.arange(sl.shape[1])]
                                == 0).all())
    return got


if __name__ == "__main__":
    main()
